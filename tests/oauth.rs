//! OAuth 2.0 tokens for IMAP/SMTP logins against a fake identity provider
//! on loopback (tests/support/fake_idp.rs): caching, single-flight refresh,
//! rotation stored and used after a restart, invalidation, revoked grants,
//! and `ticketd auth login` / `auth status` through the real binary;
//! Entra ID certificate credentials (client assertions) and Google service
//! accounts with domain-wide delegation (JWT bearer grant), with keys made
//! by `openssl` in the test's directory.

#[path = "support/fake_idp.rs"]
mod fake_idp;
#[path = "support/kept_logs.rs"]
mod kept_logs;
#[path = "support/test_keys.rs"]
mod test_keys;

use fake_idp::{FakeIdp, IdpConfig};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticketd::config::Config;
use ticketd::oauth::{OAuthError, TokenSource};
use ticketd::store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_ticketd");
const SECRET: &str = "tdsecret-client-value-42";

/// A config with one mailbox `support` and the SMTP relay, both OAuth
/// against the fake, with `flow`.
fn config_text(idp: &FakeIdp, flow: &str, secret_file: &Path) -> String {
    format!(
        r#"[outbound]
transport = "file"
[outbound.smtp]
host = "127.0.0.1"
port = 25
user = "support@example.test"
auth = "oauth2"
[outbound.smtp.oauth]
provider = "generic"
client_id = "ticketd-test-client"
client_secret_file = "{secret}"
flow = "client_credentials"
token_url = "{token}"
scope = "https://outlook.office365.com/.default"

[[imap]]
name = "support"
host = "imap.example.test"
user = "support@example.test"
auth = "oauth2"
[imap.oauth]
provider = "generic"
client_id = "ticketd-test-client"
client_secret_file = "{secret}"
flow = "{flow}"
token_url = "{token}"
device_authorization_url = "{device}"
authorization_url = "{authorize}"
scope = "https://outlook.office365.com/IMAP.AccessAsUser.All offline_access"
"#,
        secret = secret_file.display(),
        token = idp.token_url(),
        device = idp.device_url(),
        authorize = idp.authorization_url(),
    )
}

struct Setup {
    dir: tempfile::TempDir,
    cfg: Config,
    store: Store,
}

async fn setup(idp: &FakeIdp, flow: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let path = dir.path().join("ticketd.toml");
    std::fs::write(&path, config_text(idp, flow, &secret)).unwrap();
    let cfg = Config::load(&path).unwrap();
    let store = open_store(dir.path()).await;
    Setup { dir, cfg, store }
}

async fn open_store(dir: &Path) -> Store {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let store = Store::open_sqlite(&dir.join("data").join("ticketd.db"), 4)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
}

/// The token source of `imap:support` (or `smtp`).
fn source(s: &Setup, account: &str) -> Arc<TokenSource> {
    TokenSource::for_config(&s.cfg, &s.store, None)
        .unwrap()
        .into_iter()
        .find(|t| t.account() == account)
        .unwrap()
}

/// A device code login through the library, approved by the fake once the
/// client has polled.
async fn device_login(idp: &FakeIdp, s: &Setup) {
    let accounts = s.cfg.oauth_accounts();
    let a = accounts.iter().find(|a| a.key == "imap:support").unwrap();
    let client = ticketd::oauth::Client::new(&s.cfg, a).unwrap();
    let login = ticketd::oauth::login::login(&client, &s.store, |_| {});
    let polls = idp.count("device_code");
    let approve = async {
        while idp.count("device_code") <= polls {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        idp.approve();
    };
    let (outcome, ()) = tokio::join!(login, approve);
    let outcome = outcome.unwrap();
    assert!(outcome.refresh_token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_serves_many_calls_with_one_request() {
    let idp = FakeIdp::start(IdpConfig::default()).await;
    let s = setup(&idp, "client_credentials").await;
    let src = source(&s, "smtp");
    // 50 callers at once: one request (single flight) …
    let calls = (0..50).map(|_| {
        let src = src.clone();
        tokio::spawn(async move { src.access_token().await.unwrap() })
    });
    let tokens: Vec<_> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().secret().clone())
        .collect();
    assert!(tokens.iter().all(|t| t == &tokens[0]));
    // … and 200 more in a row: still one.
    for _ in 0..200 {
        assert_eq!(src.access_token().await.unwrap().secret(), &tokens[0]);
    }
    assert_eq!(idp.count("client_credentials"), 1);
    assert!(idp.is_active(&tokens[0]));
    // The Debug form of the token source and of the token hold no secret.
    let debug = format!("{src:?} {:?}", src.access_token().await.unwrap());
    assert!(
        !debug.contains(&tokens[0]) && !debug.contains(SECRET),
        "{debug}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_token_is_replaced_before_it_expires() {
    let idp = FakeIdp::start(IdpConfig {
        lifetime: Duration::from_secs(2),
        ..IdpConfig::default()
    })
    .await;
    let s = setup(&idp, "client_credentials").await;
    let src = source(&s, "smtp");
    let started = Instant::now();
    let mut seen = std::collections::HashSet::new();
    // Poll every 100 ms for 3.5 s: each token is used until 90 % of its
    // 2 s life (1.8 s), so two or three tokens, never one per call, and
    // never an expired one.
    while started.elapsed() < Duration::from_millis(3500) {
        let t = src.access_token().await.unwrap();
        assert!(idp.is_active(t.secret()), "an expired token was handed out");
        seen.insert(t.secret().clone());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n = idp.count("client_credentials");
    assert!((2..=3).contains(&n), "{n} requests");
    assert_eq!(seen.len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_is_stored_and_used_after_a_restart() {
    let idp = FakeIdp::start(IdpConfig::default()).await;
    let s = setup(&idp, "device_code").await;
    device_login(&idp, &s).await;
    let first = s.store.oauth_grant("imap:support").await.unwrap().unwrap();
    let r1 = first.refresh_token.clone().unwrap();

    // The login's token is still fresh: no refresh.
    let src = source(&s, "imap:support");
    let t1 = src.access_token().await.unwrap();
    assert_eq!(Some(t1.secret()), first.access_token.as_ref());
    assert_eq!(idp.count("refresh_token"), 0);

    // Short-lived tokens from now on; the server refuses t1.
    idp.set_lifetime(Duration::from_secs(1));
    src.invalidate();
    let t2 = src.access_token().await.unwrap();
    assert_ne!(t1.secret(), t2.secret());
    assert_eq!(idp.count("refresh_token"), 1);
    let g = s.store.oauth_grant("imap:support").await.unwrap().unwrap();
    let r2 = g.refresh_token.clone().unwrap();
    assert_ne!(r1, r2, "the rotated refresh token was not stored");
    assert_eq!(g.access_token.as_deref(), Some(t2.secret().as_str()));

    // "Restart": a new token source on a newly opened database. Once t2
    // has expired it must refresh with r2 (r1 is dead at the fake).
    drop(src);
    s.store.close().await;
    let store = open_store(s.dir.path()).await;
    let src = TokenSource::for_config(&s.cfg, &store, None)
        .unwrap()
        .into_iter()
        .find(|t| t.account() == "imap:support")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t3 = src.access_token().await.unwrap();
    assert_ne!(t3.secret(), t2.secret());
    assert!(idp.is_active(t3.secret()));
    assert_eq!(idp.count("refresh_token"), 2);
    let g = store.oauth_grant("imap:support").await.unwrap().unwrap();
    assert_ne!(g.refresh_token.as_deref(), Some(r2.as_str()));
    assert_eq!(g.last_error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_by_many_callers_refreshes_exactly_once() {
    let idp = FakeIdp::start(IdpConfig::default()).await;
    let s = setup(&idp, "device_code").await;
    device_login(&idp, &s).await;
    let src = source(&s, "imap:support");
    let old = src.access_token().await.unwrap();
    // Ten sessions were refused with the same token and each asks again.
    let calls = (0..10).map(|_| {
        let src = src.clone();
        let old = old.clone();
        tokio::spawn(async move {
            src.invalidate_token(&old);
            src.access_token().await.unwrap()
        })
    });
    let new: Vec<_> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(new.iter().all(|t| t.secret() != old.secret()));
    assert_eq!(idp.count("refresh_token"), 1);
    // And the next call reuses it.
    src.access_token().await.unwrap();
    assert_eq!(idp.count("refresh_token"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_is_permanent_and_names_the_login_command() {
    let idp = FakeIdp::start(IdpConfig::default()).await;
    let s = setup(&idp, "device_code").await;
    device_login(&idp, &s).await;
    let src = source(&s, "imap:support");
    src.access_token().await.unwrap();
    idp.revoke_all();
    src.invalidate();
    let e = src.access_token().await.unwrap_err();
    assert!(e.is_permanent(), "{e}");
    assert!(matches!(e, OAuthError::Permanent { .. }));
    let text = e.to_string();
    assert!(text.contains("invalid_grant"), "{text}");
    assert!(text.contains("ticketd auth login support"), "{text}");
    let g = s.store.oauth_grant("imap:support").await.unwrap().unwrap();
    assert_eq!(g.last_error_kind.as_deref(), Some("permanent"));
    assert_eq!(g.access_token, None, "a revoked grant's token is kept");
    for t in idp.issued() {
        assert!(!text.contains(&t));
    }
    // Asking again does not hammer the provider with the dead grant …
    let refreshes = idp.count("refresh_token");
    for _ in 0..5 {
        assert!(src.access_token().await.unwrap_err().is_permanent());
    }
    assert_eq!(idp.count("refresh_token"), refreshes);
    // … and a new login repairs it for the running token source.
    device_login(&idp, &s).await;
    let t = src.access_token().await.unwrap();
    assert!(idp.is_active(t.secret()));
    assert_eq!(idp.count("refresh_token"), refreshes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_the_provider_is_temporary_and_recovers() {
    let idp = FakeIdp::start(IdpConfig::default()).await;
    let s = setup(&idp, "client_credentials").await;
    let src = source(&s, "smtp");
    idp.fail_next(503);
    let e = src.access_token().await.unwrap_err();
    assert!(!e.is_permanent(), "{e}");
    assert!(matches!(e, OAuthError::Temporary { .. }), "{e}");
    let g = s.store.oauth_grant("smtp").await.unwrap().unwrap();
    assert_eq!(g.last_error_kind.as_deref(), Some("temporary"));
    src.access_token().await.unwrap();
    let g = s.store.oauth_grant("smtp").await.unwrap().unwrap();
    assert_eq!(g.last_error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_is_permanent() {
    let idp = FakeIdp::start(IdpConfig {
        client_secret: Some("another-secret".into()),
        ..IdpConfig::default()
    })
    .await;
    let s = setup(&idp, "client_credentials").await;
    let e = source(&s, "smtp").access_token().await.unwrap_err();
    assert!(e.is_permanent(), "{e}");
    assert!(e.to_string().contains("invalid_client"), "{e}");
    assert!(!e.to_string().contains(SECRET));
}

/// `ticketd auth login support` with the device code flow, through the
/// binary: the fake approves after the client has polled; then
/// `auth status` shows the grant. No output holds the client secret or a
/// token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_login_and_status_through_the_binary() {
    let idp = FakeIdp::start(IdpConfig::default()).await;
    let s = setup(&idp, "device_code").await;
    s.store.close().await;
    let config = s.dir.path().join("ticketd.toml");
    let data = s.dir.path().join("data");
    let run = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .env("TICKETD_LOG", "trace")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };

    // Before the login: no grant, exit 1, and the way out.
    let before = run(&["auth", "status"]).output().unwrap();
    let text = String::from_utf8_lossy(&before.stdout).to_string();
    assert_eq!(before.status.code(), Some(1), "{text}");
    assert!(
        text.contains("support: flow device_code, grant none"),
        "{text}"
    );
    assert!(text.contains("ticketd auth login support"), "{text}");

    let child = run(&["auth", "login", "support"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while idp.count("device_code") < 2 {
        assert!(Instant::now() < deadline, "the binary never polled twice");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(idp.pending_user_codes().len(), 1);
    let user_code = idp.pending_user_codes()[0].clone();
    idp.approve();
    let login = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let login_out = String::from_utf8_lossy(&login.stdout).to_string();
    let login_err = String::from_utf8_lossy(&login.stderr).to_string();
    assert_eq!(login.status.code(), Some(0), "{login_out}\n{login_err}");
    assert!(
        login_out.contains("https://microsoft.com/devicelogin"),
        "{login_out}"
    );
    assert!(login_out.contains(&user_code), "{login_out}");
    assert!(login_out.contains("refresh token stored"), "{login_out}");

    let status = run(&["auth", "status"]).output().unwrap();
    let status_out = String::from_utf8_lossy(&status.stdout).to_string();
    let status_err = String::from_utf8_lossy(&status.stderr).to_string();
    assert_eq!(status.status.code(), Some(0), "{status_out}\n{status_err}");
    assert!(
        status_out.contains("support: flow device_code, grant stored"),
        "{status_out}"
    );
    assert!(status_out.contains("last error -"), "{status_out}");
    assert!(
        status_out.contains("smtp: flow client_credentials"),
        "{status_out}"
    );

    let check = run(&["check-config"]).output().unwrap();
    let check_out = String::from_utf8_lossy(&check.stdout).to_string();
    let check_err = String::from_utf8_lossy(&check.stderr).to_string();
    assert_eq!(check.status.code(), Some(0), "{check_out}\n{check_err}");

    let issued = idp.issued();
    assert!(issued.len() >= 2, "{issued:?}");
    for text in [
        &login_out,
        &login_err,
        &status_out,
        &status_err,
        &check_out,
        &check_err,
    ] {
        kept_logs::keep("oauth-cli", text);
        kept_logs::assert_no_secret("auth login/status, check-config", text);
        assert!(!text.contains(SECRET), "the client secret leaked: {text}");
        for t in &issued {
            assert!(!text.contains(t.as_str()), "a token leaked: {text}");
        }
    }
}

/// A denied sign-in ends `auth login` with exit 1 and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_device_login_fails_clearly() {
    let idp = FakeIdp::start(IdpConfig::default()).await;
    let s = setup(&idp, "device_code").await;
    s.store.close().await;
    let child = Command::new(BIN)
        .arg("--config")
        .arg(s.dir.path().join("ticketd.toml"))
        .arg("--data-dir")
        .arg(s.dir.path().join("data"))
        .args(["auth", "login", "support"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while idp.count("device_code") < 1 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    idp.deny();
    let o = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("the sign-in was declined"), "{err}");
    assert!(err.contains("access_denied"), "{err}");
}

/// Provider and flow combinations that cannot work are refused before
/// anything runs: exit 78, the file and line of the offending key.
#[test]
fn impossible_provider_and_flow_combinations_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "provider = \"google\"\nclient_id = \"x\"\nclient_secret_env = \"S\"\nflow = \"device_code\"\n",
            "does not allow the Gmail scope https://mail.google.com/",
            4,
        ),
        (
            "provider = \"google\"\nclient_id = \"x\"\nclient_secret_env = \"S\"\nflow = \"client_credentials\"\n",
            "Google has no client credentials grant",
            4,
        ),
        (
            "provider = \"microsoft365\"\nclient_id = \"x\"\nclient_secret_env = \"S\"\nflow = \"client_credentials\"\n",
            "needs tenant",
            1,
        ),
        (
            "provider = \"microsoft365\"\ntenant = \"organizations\"\nclient_id = \"x\"\nclient_secret_env = \"S\"\nflow = \"client_credentials\"\n",
            "needs the tenant's directory id or domain",
            5,
        ),
        (
            "provider = \"microsoft365\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"x\"\nflow = \"client_credentials\"\n",
            "needs client_secret_file, client_secret_env or client_certificate_file",
            4,
        ),
        (
            "provider = \"generic\"\nclient_id = \"x\"\nflow = \"device_code\"\ntoken_url = \"https://idp.example/token\"\n",
            "needs device_authorization_url",
            3,
        ),
        (
            "provider = \"generic\"\nclient_id = \"x\"\nflow = \"device_code\"\ntoken_url = \"http://idp.example/token\"\ndevice_authorization_url = \"https://idp.example/device\"\n",
            "plain http is only allowed on loopback",
            1,
        ),
        (
            "provider = \"yahoo\"\nclient_id = \"x\"\nflow = \"device_code\"\n",
            "unknown variant",
            1,
        ),
    ];
    for (k, (oauth, want, line)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{k}.toml"));
        let text = format!(
            "[[imap]]\nname = \"m\"\nhost = \"imap.example.test\"\nuser = \"u\"\nauth = \"oauth2\"\n[imap.oauth]\n{oauth}"
        );
        std::fs::write(&path, &text).unwrap();
        let o = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("check-config")
            .env("S", "x")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(78), "case {k}: {err}");
        assert!(err.contains(want), "case {k}: {err}");
        let at = format!("{}:{}:", path.display(), line + 6);
        assert!(err.contains(&at), "case {k}: want {at} in {err}");
    }
}

/// A plain HTTP/1.1 GET (the test plays the browser): status line and the
/// `Location` header, if any, and the body.
fn http_get(url: &str) -> (String, Option<String>, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut conn = std::net::TcpStream::connect(host).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or("").to_string();
    let location = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("location: ")
                .or_else(|| l.strip_prefix("Location: "))
        })
        .map(str::to_string);
    (status, location, body.to_string())
}

/// Starts `auth login support` and returns the child, the authorization
/// URL it printed and a receiver of the rest of its output.
fn start_code_login(
    s: &Setup,
    stdin: Stdio,
) -> (
    std::process::Child,
    String,
    std::sync::mpsc::Receiver<String>,
) {
    use std::io::BufRead;
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(s.dir.path().join("ticketd.toml"))
        .arg("--data-dir")
        .arg(s.dir.path().join("data"))
        .args(["auth", "login", "support"])
        .env("TICKETD_LOG", "trace")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) if line.contains("/authorize?") => {
                return (child, line.trim().to_string(), rx);
            }
            Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.kill();
    let o = child.wait_with_output().unwrap();
    panic!(
        "no authorization URL printed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Authorization code with PKCE on the loopback redirect, through the
/// binary: the browser (this test) is sent back to ticketd's listener; a
/// second login gets the code pasted on stdin instead. Both store a grant
/// the token source then refreshes; no output holds a secret or token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_code_login_by_redirect_or_pasted_address() {
    use std::io::Write;
    let idp = FakeIdp::start(IdpConfig::default()).await;
    let s = setup(&idp, "authorization_code").await;
    let mut outputs = Vec::new();

    // 1. The browser reaches the loopback listener.
    let (child, url, rx) = start_code_login(&s, Stdio::null());
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(
        url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
        "{url}"
    );
    let (status, location, _) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || http_get(&url)
    })
    .await
    .unwrap();
    assert!(status.contains("302"), "{status}");
    let location = location.unwrap();
    let (status, _, body) = tokio::task::spawn_blocking(move || http_get(&location))
        .await
        .unwrap();
    assert!(
        status.contains("200") && body.contains("Signed in"),
        "{status} {body}"
    );
    let o = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(0), "{rest:?} {err}");
    assert!(rest.join("\n").contains("refresh token stored"), "{rest:?}");
    outputs.push(format!("{url}\n{}\n{err}", rest.join("\n")));
    assert_eq!(idp.count("authorization_code"), 1);
    let g1 = s.store.oauth_grant("imap:support").await.unwrap().unwrap();
    assert!(g1.refresh_token.is_some());

    // 2. The browser is elsewhere: its address bar is pasted on stdin.
    let (mut child, url, rx) = start_code_login(&s, Stdio::piped());
    let (_, location, _) = tokio::task::spawn_blocking(move || http_get(&url))
        .await
        .unwrap();
    let location = location.unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{location}").unwrap();
    drop(stdin);
    let o = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(0), "{rest:?} {err}");
    outputs.push(format!("{}\n{err}", rest.join("\n")));
    assert_eq!(idp.count("authorization_code"), 2);
    let g2 = s.store.oauth_grant("imap:support").await.unwrap().unwrap();
    assert_ne!(
        g1.refresh_token, g2.refresh_token,
        "the new grant replaced the old"
    );

    // The grant works for the token source: a refresh with rotation.
    let src = source(&s, "imap:support");
    src.invalidate_token(&ticketd::oauth::AccessToken::new(
        g2.access_token.clone().unwrap(),
    ));
    let t = src.access_token().await.unwrap();
    assert!(idp.is_active(t.secret()));
    assert_eq!(idp.count("refresh_token"), 1);

    for text in &outputs {
        assert!(!text.contains(SECRET), "the client secret leaked: {text}");
        for t in idp.issued() {
            assert!(!text.contains(t.as_str()), "a token leaked: {text}");
        }
    }
}

/// A declined consent comes back as `error=access_denied` on the redirect:
/// `auth login` exits 1 and says so; nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_authorization_code_login_fails_clearly() {
    let idp = FakeIdp::start(IdpConfig::default()).await;
    let s = setup(&idp, "authorization_code").await;
    idp.deny_next_authorization();
    let (child, url, _rx) = start_code_login(&s, Stdio::null());
    let (_, location, _) = tokio::task::spawn_blocking(move || http_get(&url))
        .await
        .unwrap();
    let location = location.unwrap();
    assert!(location.contains("error=access_denied"), "{location}");
    tokio::task::spawn_blocking(move || http_get(&location))
        .await
        .unwrap();
    let o = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("the sign-in was declined"), "{err}");
    assert!(s.store.oauth_grant("imap:support").await.unwrap().is_none());
    assert_eq!(idp.count("authorization_code"), 0);
}

/// Two token sources of one account (a reload builds new ones while the
/// old still run), both refused with the same token: one refresh, and the
/// second uses its result instead of sending the already rotated refresh
/// token (which the provider would refuse as a revoked grant).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_token_sources_of_one_account_share_one_refresh() {
    let idp = FakeIdp::start(IdpConfig::default()).await;
    let s = setup(&idp, "device_code").await;
    device_login(&idp, &s).await;
    let a = source(&s, "imap:support");
    let b = source(&s, "imap:support");
    let old = a.access_token().await.unwrap();
    assert_eq!(b.access_token().await.unwrap().secret(), old.secret());
    a.invalidate_token(&old);
    b.invalidate_token(&old);
    let (ta, tb) = tokio::join!(a.access_token(), b.access_token());
    let (ta, tb) = (ta.unwrap(), tb.unwrap());
    assert_eq!(ta.secret(), tb.secret());
    assert_ne!(ta.secret(), old.secret());
    assert_eq!(idp.count("refresh_token"), 1);
    assert_eq!(idp.count("refused"), 0);
}

/// `check-config` reads the client secret as `run` will: a missing file is
/// a configuration problem (exit 78) named by its account, and an empty
/// secret too; the message never holds the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_reads_the_client_secret_without_showing_it() {
    let idp = FakeIdp::start(IdpConfig::default()).await;
    let s = setup(&idp, "device_code").await;
    let check = || {
        Command::new(BIN)
            .arg("--config")
            .arg(s.dir.path().join("ticketd.toml"))
            .arg("--data-dir")
            .arg(s.dir.path().join("data"))
            .arg("check-config")
            .output()
            .unwrap()
    };
    let secret = s.dir.path().join("client-secret");
    let o = check();
    assert_eq!(o.status.code(), Some(0));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    kept_logs::keep("oauth-check-config", &all);
    kept_logs::assert_no_secret("check-config", &all);
    assert!(!all.contains(SECRET), "{all}");
    std::fs::write(&secret, "\n").unwrap();
    let o = check();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert!(
        err.contains("support: oauth: the client secret is empty"),
        "{err}"
    );
    std::fs::remove_file(&secret).unwrap();
    let o = check();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert!(
        err.contains("support: oauth client secret: cannot read"),
        "{err}"
    );
}

/// The notice a token source queues when its grant is refused for good:
/// a chat post to the `ops` channel saying which account.
fn counting_notice() -> ticketd::oauth::RefusalNotice {
    Arc::new(|r: &ticketd::oauth::Refusal<'_>| {
        vec![ticketd::store::sla::Notification::Chat {
            channel: "ops".into(),
            body: serde_json::json!({"kind": "grant-refused", "account": r.account, "detail": r.message}),
        }]
    })
}

async fn notices(store: &Store) -> Vec<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT body FROM chat_outbox WHERE kind = 'grant-refused' ORDER BY id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
}

/// A revoked grant tells the desk's lead once per refusal, not once per
/// retry: asking five more times queues nothing more; after `auth login`
/// repaired it and the grant was revoked again, a second notice. The
/// notice is queued in the transaction that records the refusal, and holds
/// the provider's reason but no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_grant_tells_the_lead_once_per_refusal() {
    let idp = FakeIdp::start(IdpConfig::default()).await;
    let s = setup(&idp, "device_code").await;
    device_login(&idp, &s).await;
    let src = source(&s, "imap:support");
    src.set_notice(counting_notice(), Arc::new(ticketd::outbound::Wake::new()));
    src.access_token().await.unwrap();
    assert!(notices(&s.store).await.is_empty());
    idp.revoke_all();
    src.invalidate();
    for _ in 0..6 {
        assert!(src.access_token().await.unwrap_err().is_permanent());
    }
    let n = notices(&s.store).await;
    assert_eq!(n.len(), 1, "{n:?}");
    assert!(
        n[0].contains("imap:support") && n[0].contains("invalid_grant"),
        "{}",
        n[0]
    );
    for t in idp.issued() {
        assert!(!n[0].contains(&t), "a token in the notice");
    }
    device_login(&idp, &s).await;
    src.access_token().await.unwrap();
    assert_eq!(notices(&s.store).await.len(), 1);
    idp.revoke_all();
    src.invalidate();
    assert!(src.access_token().await.unwrap_err().is_permanent());
    assert_eq!(
        notices(&s.store).await.len(),
        2,
        "a new refusal, a new notice"
    );
}

/// Client credentials ask the provider on every attempt (a fixed secret
/// must be picked up): a wrong secret refused on each of five attempts is
/// still one notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_is_one_notice_however_often_it_is_retried() {
    let idp = FakeIdp::start(IdpConfig {
        client_secret: Some("another-secret".into()),
        ..IdpConfig::default()
    })
    .await;
    let s = setup(&idp, "client_credentials").await;
    let src = source(&s, "smtp");
    src.set_notice(counting_notice(), Arc::new(ticketd::outbound::Wake::new()));
    for _ in 0..5 {
        assert!(src.access_token().await.unwrap_err().is_permanent());
    }
    assert_eq!(idp.count("refused"), 5, "each attempt asks the provider");
    let n = notices(&s.store).await;
    assert_eq!(n.len(), 1, "{n:?}");
    assert!(!n[0].contains(SECRET));
}

/// `repaired()` is what lets a mailbox waiting out its backoff log in as
/// soon as `auth login` stored a new grant: pending while the grant works
/// and while it stays refused, resolved once a login replaced it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repaired_resolves_when_a_refused_grant_is_replaced() {
    let idp = FakeIdp::start(IdpConfig::default()).await;
    let s = setup(&idp, "device_code").await;
    device_login(&idp, &s).await;
    let src = source(&s, "imap:support");
    src.access_token().await.unwrap();
    let short = Duration::from_millis(300);
    assert!(
        tokio::time::timeout(short, src.repaired()).await.is_err(),
        "a working grant is not 'repaired'"
    );
    idp.revoke_all();
    src.invalidate();
    assert!(src.access_token().await.unwrap_err().is_permanent());
    let waiting = {
        let src = src.clone();
        tokio::spawn(async move { src.repaired().await })
    };
    tokio::time::sleep(ticketd::oauth::REPAIR_POLL + short).await;
    assert!(!waiting.is_finished(), "still refused: still waiting");
    device_login(&idp, &s).await;
    tokio::time::timeout(ticketd::oauth::REPAIR_POLL * 3, waiting)
        .await
        .expect("repaired within a poll or two after the login")
        .unwrap();
    src.access_token().await.unwrap();
}

// --- certificate credentials (Entra ID) and service accounts (Google) ------

/// The fake's client with `certificates` registered instead of using its
/// secret.
fn idp_with_certificates(certificates: Vec<Vec<u8>>) -> IdpConfig {
    IdpConfig {
        certificates,
        ..IdpConfig::default()
    }
}

/// A config whose relay authenticates with the certificate in separate
/// files (`cert`, `key`) and whose mailbox with one file holding both.
fn certificate_config(idp: &FakeIdp, c: &test_keys::TestCert) -> String {
    format!(
        r#"[outbound]
transport = "file"
[outbound.smtp]
host = "127.0.0.1"
port = 25
user = "support@example.test"
auth = "oauth2"
[outbound.smtp.oauth]
provider = "generic"
client_id = "ticketd-test-client"
client_certificate_file = "{cert}"
client_key_file = "{key}"
flow = "client_credentials"
token_url = "{token}"
scope = "https://outlook.office365.com/.default"

[[imap]]
name = "support"
host = "imap.example.test"
user = "support@example.test"
auth = "oauth2"
[imap.oauth]
provider = "generic"
client_id = "ticketd-test-client"
client_certificate_file = "{combined}"
flow = "client_credentials"
token_url = "{token}"
scope = "https://outlook.office365.com/.default"
"#,
        cert = c.cert.display(),
        key = c.key.display(),
        combined = c.combined.display(),
        token = idp.token_url(),
    )
}

async fn setup_text(text: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ticketd.toml");
    std::fs::write(&path, text).unwrap();
    let cfg = Config::load(&path).unwrap();
    let store = open_store(dir.path()).await;
    Setup { dir, cfg, store }
}

/// Client credentials with a certificate: each token request carries a
/// fresh client assertion the fake verifies as Entra ID does (signature with
/// the registered certificate, x5t#S256, aud, iss = sub = client id, time
/// range, jti not reused) and no client secret; both key layouts (key file
/// apart, or certificate and key in one file) work; nothing shows the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_client_assertion_gets_tokens_without_a_secret() {
    let keys = tempfile::tempdir().unwrap();
    let c = test_keys::certificate(keys.path(), "app");
    let idp = FakeIdp::start(idp_with_certificates(vec![c.der.clone()])).await;
    let s = setup_text(&certificate_config(&idp, &c)).await;
    let smtp = source(&s, "smtp");
    let imap = source(&s, "imap:support");
    let t1 = smtp.access_token().await.unwrap();
    let t2 = imap.access_token().await.unwrap();
    assert!(idp.is_active(t1.secret()) && idp.is_active(t2.secret()));
    assert_eq!(idp.count("client_assertion"), 2, "{:?}", idp.last_error());
    assert_eq!(idp.count("client_credentials"), 2);
    // Cached: no further request.
    for _ in 0..20 {
        assert_eq!(smtp.access_token().await.unwrap().secret(), t1.secret());
    }
    assert_eq!(idp.count("client_assertion"), 2);
    // A refused token: a new request with a new assertion (the fake
    // refuses a jti it has seen).
    smtp.invalidate();
    let t3 = smtp.access_token().await.unwrap();
    assert_ne!(t3.secret(), t1.secret());
    assert_eq!(idp.count("client_assertion"), 3);
    assert_eq!(idp.count("refused"), 0, "{:?}", idp.last_error());
    let debug = format!("{smtp:?} {imap:?} {:?}", s.cfg);
    for line in test_keys::pem_body_lines(&c.key) {
        assert!(!debug.contains(&line), "key material in Debug: {debug}");
    }
}

/// A certificate the app registration does not hold: a permanent error
/// naming Entra's AADSTS700027, without key material; the provider is asked
/// once per attempt, not in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_certificate_is_a_permanent_error_naming_aadsts700027() {
    let keys = tempfile::tempdir().unwrap();
    let registered = test_keys::certificate(keys.path(), "registered");
    let used = test_keys::certificate(keys.path(), "used");
    let idp = FakeIdp::start(idp_with_certificates(vec![registered.der.clone()])).await;
    let s = setup_text(&certificate_config(&idp, &used)).await;
    let e = source(&s, "smtp").access_token().await.unwrap_err();
    assert!(e.is_permanent(), "{e}");
    let text = e.to_string();
    assert!(text.contains("AADSTS700027"), "{text}");
    assert!(text.contains("invalid_client"), "{text}");
    for line in test_keys::pem_body_lines(&used.key)
        .into_iter()
        .chain(test_keys::pem_body_lines(&used.cert))
    {
        assert!(!text.contains(&line), "key material in {text}");
    }
    let g = s.store.oauth_grant("smtp").await.unwrap().unwrap();
    assert_eq!(g.last_error_kind.as_deref(), Some("permanent"));
    assert_eq!(idp.count("refused"), 1);
    assert_eq!(idp.count("client_credentials"), 0);
}

const SA_EMAIL: &str = "ticketd@ticketd-test.iam.gserviceaccount.com";
const SA_CLIENT_ID: &str = "113456789012345678901";
const SUBJECT: &str = "support@example.test";

/// A fake with a service account whose delegation covers Gmail's scope, a
/// key file for it (its token_uri the fake's) and a config using it for
/// the mailbox `support` with `subject`.
async fn service_account_setup(subject: &str) -> (FakeIdp, Setup, test_keys::TestCert) {
    let idp = FakeIdp::start(IdpConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (key_file, cert) =
        test_keys::service_account_key(dir.path(), SA_EMAIL, SA_CLIENT_ID, "k1d", &idp.token_url());
    idp.set_service_account(fake_idp::ServiceAccount {
        client_email: SA_EMAIL.into(),
        key_id: "k1d".into(),
        certificate: cert.der.clone(),
        delegated_scopes: vec!["https://mail.google.com/".into()],
        users: vec![SUBJECT.into(), "other@example.test".into()],
    });
    let path = dir.path().join("ticketd.toml");
    std::fs::write(
        &path,
        format!(
            r#"[[imap]]
name = "support"
host = "imap.gmail.com"
user = "{subject}"
auth = "oauth2"
[imap.oauth]
provider = "google"
flow = "service_account"
service_account_key_file = "{key}"
subject = "{subject}"
"#,
            key = key_file.display(),
        ),
    )
    .unwrap();
    let cfg = Config::load(&path).unwrap();
    let store = open_store(dir.path()).await;
    (idp, Setup { dir, cfg, store }, cert)
}

/// The service account gets a token for the configured subject (the
/// introspected user is the subject, not the service account), Gmail's
/// scope, one request however many logins ask (cached like client
/// credentials), no refresh token stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_gets_one_token_for_its_subject() {
    let (idp, s, _cert) = service_account_setup(SUBJECT).await;
    let src = source(&s, "imap:support");
    let calls = (0..20).map(|_| {
        let src = src.clone();
        tokio::spawn(async move { src.access_token().await })
    });
    let tokens: Vec<String> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap().secret().clone())
        .collect();
    assert!(tokens.iter().all(|t| t == &tokens[0]));
    assert_eq!(idp.count("jwt_bearer"), 1, "{:?}", idp.last_error());
    assert_eq!(idp.user_of(&tokens[0]).as_deref(), Some(SUBJECT));
    let g = s.store.oauth_grant("imap:support").await.unwrap().unwrap();
    assert!(g.refresh_token.is_none());
    assert_eq!(g.access_token.as_deref(), Some(tokens[0].as_str()));
}

/// Delegation not granted in the Admin console: `unauthorized_client` with
/// Google's description, permanent; granted without Gmail's scope:
/// `access_denied`, permanent; an unknown user: `invalid_grant` "Invalid
/// email or User ID", permanent; once granted, a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_without_delegation_is_a_permanent_error() {
    let (idp, s, cert) = service_account_setup(SUBJECT).await;
    idp.set_delegation(&[]);
    let src = source(&s, "imap:support");
    let e = src.access_token().await.unwrap_err();
    assert!(e.is_permanent(), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("unauthorized_client: Unauthorized client or scope in request."),
        "{text}"
    );
    for line in test_keys::pem_body_lines(&cert.key) {
        assert!(!text.contains(&line), "key material in {text}");
    }
    // Delegated, but not for Gmail's scope.
    idp.set_delegation(&["https://www.googleapis.com/auth/gmail.readonly"]);
    let e = src.access_token().await.unwrap_err();
    assert!(e.is_permanent(), "{e}");
    assert!(
        e.to_string()
            .contains("access_denied: Requested client not authorized."),
        "{e}"
    );
    idp.set_delegation(&["https://mail.google.com/"]);
    let t = src.access_token().await.unwrap();
    assert_eq!(idp.user_of(t.secret()).as_deref(), Some(SUBJECT));

    let (idp, s, _) = service_account_setup("nobody@example.test").await;
    let e = source(&s, "imap:support").access_token().await.unwrap_err();
    assert!(e.is_permanent(), "{e}");
    assert!(
        e.to_string()
            .contains("invalid_grant: Invalid email or User ID"),
        "{e}"
    );
    assert_eq!(idp.count("jwt_bearer"), 0);
}

/// `check-config` (offline) refuses what cannot work, with the file and
/// line of the key at fault and without key material: a secret and a
/// certificate at once, a service account without subject, a subject that
/// is not the login user, an unreadable key, a file that is no PEM key, a
/// key that is not the certificate's, an unreadable service account key;
/// the right files pass, the key in either PEM form.
#[test]
fn check_config_names_key_and_certificate_problems_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let c = test_keys::certificate(dir.path(), "app");
    let other = test_keys::certificate(dir.path(), "other");
    let (sa, sa_cert) = test_keys::service_account_key(
        dir.path(),
        SA_EMAIL,
        SA_CLIENT_ID,
        "k1d",
        "https://oauth2.googleapis.com/token",
    );
    let not_pem = dir.path().join("not-a-key.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let missing = dir.path().join("missing.key");
    let ms = "provider = \"microsoft365\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"x\"\nflow = \"client_credentials\"\n";
    let d = |p: &Path| p.display().to_string();
    // (the [imap.oauth] keys, the wanted text and the key whose line is
    // named; None: passes); the login user is SUBJECT.
    let cases: Vec<(String, Option<(&str, &str)>)> = vec![
        (
            format!("{ms}client_secret_env = \"S\"\nclient_certificate_file = \"{}\"\n", d(&c.cert)),
            Some(("give a client secret or a certificate, not both", "client_certificate_file")),
        ),
        (
            format!("provider = \"google\"\nflow = \"service_account\"\nservice_account_key_file = \"{}\"\n", d(&sa)),
            Some(("needs subject", "flow")),
        ),
        (
            format!("provider = \"google\"\nflow = \"service_account\"\nservice_account_key_file = \"{}\"\nsubject = \"other@example.test\"\n", d(&sa)),
            Some(("is not the login user", "subject")),
        ),
        (
            format!("{ms}client_certificate_file = \"{}\"\nclient_key_file = \"{}\"\n", d(&c.cert), d(&missing)),
            Some(("cannot read it", "client_key_file")),
        ),
        (
            format!("{ms}client_certificate_file = \"{}\"\nclient_key_file = \"{}\"\n", d(&c.cert), d(&not_pem)),
            Some(("no PEM private key", "client_key_file")),
        ),
        (
            format!("{ms}client_certificate_file = \"{}\"\nclient_key_file = \"{}\"\n", d(&c.cert), d(&other.key)),
            Some(("does not belong to the certificate", "client_key_file")),
        ),
        (
            format!("{ms}client_certificate_file = \"{}\"\n", d(&c.cert)),
            Some(("no PEM private key", "client_certificate_file")),
        ),
        (
            format!("provider = \"google\"\nflow = \"service_account\"\nservice_account_key_file = \"{}\"\nsubject = \"{SUBJECT}\"\n", d(&missing)),
            Some(("cannot read it", "service_account_key_file")),
        ),
        (
            format!("{ms}client_certificate_file = \"{}\"\nclient_key_file = \"{}\"\n", d(&c.cert), d(&c.key_pkcs1)),
            None,
        ),
        (
            format!("{ms}client_certificate_file = \"{}\"\n", d(&c.combined)),
            None,
        ),
        (
            format!("provider = \"google\"\nflow = \"service_account\"\nservice_account_key_file = \"{}\"\nsubject = \"{SUBJECT}\"\n", d(&sa)),
            None,
        ),
    ];
    let secrets: Vec<String> = [&c.key, &other.key, &sa_cert.key]
        .iter()
        .flat_map(|k| test_keys::pem_body_lines(k))
        .collect();
    for (k, (oauth, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{k}.toml"));
        let text = format!(
            "[[imap]]\nname = \"m\"\nhost = \"imap.example.test\"\nuser = \"{SUBJECT}\"\nauth = \"oauth2\"\n[imap.oauth]\n{oauth}"
        );
        std::fs::write(&path, &text).unwrap();
        let o = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("check-config")
            .env("S", "x")
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        kept_logs::keep("oauth-check-config-keys", &all);
        for line in &secrets {
            assert!(
                !all.contains(line.as_str()),
                "case {k}: key material in {all}"
            );
        }
        let Some((want, key)) = want else {
            assert_eq!(o.status.code(), Some(0), "case {k}: {all}");
            continue;
        };
        assert_eq!(o.status.code(), Some(78), "case {k}: {all}");
        assert!(all.contains(want), "case {k}: want {want:?} in {all}");
        let line = text
            .lines()
            .position(|l| l.starts_with(&format!("{key} =")))
            .unwrap()
            + 1;
        let at = format!("{}:{line}:", path.display());
        assert!(all.contains(&at), "case {k}: want {at} in {all}");
    }
}

/// POSTs `form` to the fake's token endpoint: status and JSON answer.
async fn post_token(idp: &FakeIdp, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let r = ticketd::oauth::http_client()
        .unwrap()
        .post(idp.token_url())
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

fn description(v: &serde_json::Value) -> String {
    format!("{}: {}", v["error"], v["error_description"])
}

/// The fake is as strict as the providers' documentation: what ticketd
/// sends passes, and each documented refusal is what a wrong assertion
/// gets — Entra ID: a replayed jti, an expired assertion (AADSTS700024), a
/// wrong audience (AADSTS700023) or issuer (AADSTS700021), a malformed JWT
/// (AADSTS50027), a signature not made with the
/// registered certificate's key (AADSTS700027), a secret beside the
/// assertion; Google: a grant JWT older than an hour, a wrong audience, a
/// signature by another key, a missing scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_refuses_assertions_as_entra_id_and_google_document() {
    use ticketd::oauth::assertion::{
        unix_now, CertificateCredential, ServiceAccountKey, CLIENT_ASSERTION_TYPE, JWT_BEARER_GRANT,
    };
    let dir = tempfile::tempdir().unwrap();
    let a = test_keys::certificate(dir.path(), "a");
    let b = test_keys::certificate(dir.path(), "b");
    let idp = FakeIdp::start(idp_with_certificates(vec![a.der.clone()])).await;
    let client = "ticketd-test-client";
    let ca = CertificateCredential::load(&a.cert, Some(&a.key)).unwrap();
    let cb = CertificateCredential::load(&b.combined, None).unwrap();
    let aud = idp.token_url();
    let now = unix_now();
    let ask = |jwt: String, extra: Option<(&'static str, &'static str)>| {
        let idp = &idp;
        async move {
            let mut form = vec![
                ("grant_type", "client_credentials"),
                ("client_id", client),
                ("scope", "https://outlook.office365.com/.default"),
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", jwt.as_str()),
            ];
            form.extend(extra);
            post_token(idp, &form).await
        }
    };
    let good = ca.assertion(client, &aud, now).unwrap();
    let (status, v) = ask(good.clone(), None).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["access_token"].is_string() && v.get("refresh_token").is_none());
    let (status, v) = ask(good, None).await;
    assert_eq!(status, 401);
    assert!(description(&v).contains("used before"), "{v}");
    let (_, v) = ask(ca.assertion(client, &aud, now - 3600).unwrap(), None).await;
    assert!(description(&v).contains("AADSTS700024"), "{v}");
    let (_, v) = ask(
        ca.assertion(
            client,
            "https://login.microsoftonline.com/x/oauth2/v2.0/token",
            now,
        )
        .unwrap(),
        None,
    )
    .await;
    assert!(description(&v).contains("AADSTS700023"), "{v}");
    let (_, v) = ask(ca.assertion("someone-else", &aud, now).unwrap(), None).await;
    assert!(description(&v).contains("AADSTS700021"), "{v}");
    let (_, v) = ask("not.a.jwt".into(), None).await;
    assert!(description(&v).contains("AADSTS50027"), "{v}");
    let (_, v) = ask(cb.assertion(client, &aud, now).unwrap(), None).await;
    assert!(description(&v).contains("AADSTS700027"), "{v}");
    // A's header and claims with B's signature.
    let signed_a = ca.assertion(client, &aud, now).unwrap();
    let signed_b = cb.assertion(client, &aud, now).unwrap();
    let forged = format!(
        "{}.{}",
        signed_a.rsplit_once('.').unwrap().0,
        signed_b.rsplit_once('.').unwrap().1
    );
    let (status, v) = ask(forged, None).await;
    assert_eq!(status, 401);
    assert!(
        description(&v).contains("AADSTS700027: Client assertion failed signature validation"),
        "{v}"
    );
    let (_, v) = ask(
        ca.assertion(client, &aud, now).unwrap(),
        Some(("client_secret", "tdsecret-client-value-42")),
    )
    .await;
    assert_eq!(v["error"], "invalid_request", "{v}");

    let (key_file, sa_cert) =
        test_keys::service_account_key(dir.path(), SA_EMAIL, SA_CLIENT_ID, "k1d", &aud);
    idp.set_service_account(fake_idp::ServiceAccount {
        client_email: SA_EMAIL.into(),
        key_id: "k1d".into(),
        certificate: sa_cert.der.clone(),
        delegated_scopes: vec!["https://mail.google.com/".into()],
        users: vec![SUBJECT.into()],
    });
    let sa = ServiceAccountKey::load(&key_file).unwrap();
    let grant = |jwt: String| {
        let idp = &idp;
        async move {
            post_token(
                idp,
                &[
                    ("grant_type", JWT_BEARER_GRANT),
                    ("assertion", jwt.as_str()),
                ],
            )
            .await
        }
    };
    let mail = "https://mail.google.com/";
    let (status, v) = grant(sa.assertion(mail, &aud, SUBJECT, now).unwrap()).await;
    assert_eq!(status, 200, "{v}");
    assert!(v.get("refresh_token").is_none(), "{v}");
    let (_, v) = grant(sa.assertion(mail, &aud, SUBJECT, now - 7200).unwrap()).await;
    assert!(
        description(&v).contains("Invalid JWT: Token must be a short-lived token (60 minutes)"),
        "{v}"
    );
    let (_, v) = grant(
        sa.assertion(mail, "https://oauth2.googleapis.com/token", SUBJECT, now)
            .unwrap(),
    )
    .await;
    assert!(description(&v).contains("Failed audience check"), "{v}");
    let (_, v) = grant(sa.assertion("", &aud, SUBJECT, now).unwrap()).await;
    assert_eq!(v["error"], "invalid_scope", "{v}");
    // The same account and key id, another key (a deleted or foreign key).
    let other_dir = tempfile::tempdir().unwrap();
    let (other_file, _) =
        test_keys::service_account_key(other_dir.path(), SA_EMAIL, SA_CLIENT_ID, "k1d", &aud);
    let other = ServiceAccountKey::load(&other_file).unwrap();
    let (_, v) = grant(other.assertion(mail, &aud, SUBJECT, now).unwrap()).await;
    assert_eq!(
        description(&v),
        "\"invalid_grant\": \"Invalid JWT Signature.\"",
        "{v}"
    );
}

/// `ticketd auth login` with a service account gets one token (proving the
/// key and the delegation) and stores no refresh token; `auth status`
/// names the flow and needs no login; with the delegation removed the
/// login fails with Google's text. Nothing the
/// binary prints, at trace, holds the key or a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_login_and_status_through_the_binary() {
    let (idp, s, cert) = service_account_setup(SUBJECT).await;
    s.store.close().await;
    let config = s.dir.path().join("ticketd.toml");
    let data = s.dir.path().join("data");
    let run = |args: &[&str]| {
        let o = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .env("TICKETD_LOG", "trace")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        kept_logs::keep("oauth-service-account-cli", &text);
        kept_logs::assert_no_secret("auth with a service account", &text);
        (o.status.code(), text)
    };
    let (code, login) = run(&["auth", "login", "support"]);
    assert_eq!(code, Some(0), "{login}");
    assert!(login.contains("support: signed in"), "{login}");
    assert!(!login.contains("refresh token stored"), "{login}");
    assert_eq!(idp.count("jwt_bearer"), 1);
    let (code, status) = run(&["auth", "status"]);
    assert_eq!(code, Some(0), "{status}");
    assert!(
        status.contains("support: flow service_account, grant not needed (service account)"),
        "{status}"
    );

    idp.set_delegation(&[]);
    let (code, refused) = run(&["auth", "login", "support"]);
    assert_ne!(code, Some(0), "{refused}");
    assert!(
        refused.contains("unauthorized_client: Unauthorized client or scope in request."),
        "{refused}"
    );
    let all = format!("{login}{status}{refused}");
    for line in test_keys::pem_body_lines(&cert.key) {
        assert!(!all.contains(&line), "key material in {all}");
    }
    for token in idp.issued() {
        assert!(!all.contains(&token), "a token in {all}");
    }
}
