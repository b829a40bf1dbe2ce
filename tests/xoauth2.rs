//! IMAP and SMTP login with OAuth 2.0 access tokens (issue 15, the SASL
//! side) against a real Dovecot with its `oauth2` passdb and a real Postfix
//! doing SMTP AUTH through Dovecot's SASL. Tokens are checked by a minimal
//! RFC 7662 introspection endpoint (`tests/support/introspect.rs`) the
//! tests grant and revoke tokens at; the token manager is played by
//! [`Tokens`], which hands out one token until it is invalidated.
//!
//! Tokens from Entra ID certificate credentials (a client assertion) and
//! from a Google service account with domain-wide delegation come from the
//! fake identity provider (tests/support/fake_idp.rs), whose introspection
//! names the user a token is for, and log in to the real Dovecot.
//!
//! Every test captures the whole tracing output of the process (the
//! daemon's caps on async-imap and lettre, everything else at trace) and
//! checks that no token it used appears in it, in clear or as the base64
//! of the SASL response.

#[path = "support/fake_idp.rs"]
mod fake_idp;
#[path = "support/introspect.rs"]
mod introspect;
#[path = "support/kept_logs.rs"]
mod kept_logs;
#[path = "support/mailstack.rs"]
mod mailstack;
#[path = "support/test_keys.rs"]
mod test_keys;

use introspect::Introspection;
use mailstack::{MailStack, ALICE, HOST, SUPPORT};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use ticketd::credential::{Credential, OAuthMechanism, TokenError, TokenFuture, TokenProvider};
use ticketd::sources::imap::{authenticate_bearer, log_in, ImapSource};
use tokio::net::TcpStream;

// --- the token manager's stand-in ----------------------------------------

/// Hands out its current token until that is invalidated, then the next
/// one queued (an empty queue: no token, as when the grant is gone).
#[derive(Default)]
struct Tokens {
    state: Mutex<(Option<String>, VecDeque<String>)>,
    invalidated: Mutex<Vec<String>>,
}

impl Tokens {
    fn new(first: &str) -> Arc<Tokens> {
        let t = Tokens::default();
        t.state.lock().unwrap().0 = Some(first.to_string());
        Arc::new(t)
    }
    /// `token` is handed out once the current one has been invalidated.
    fn queue(&self, token: &str) {
        self.state.lock().unwrap().1.push_back(token.to_string());
    }
    /// The manager refreshed ahead of expiry: `token` from now on.
    fn replace(&self, token: &str) {
        self.state.lock().unwrap().0 = Some(token.to_string());
    }
    fn invalidated(&self) -> Vec<String> {
        self.invalidated.lock().unwrap().clone()
    }
}

impl TokenProvider for Tokens {
    fn access_token(&self) -> TokenFuture<'_> {
        Box::pin(async move {
            let mut s = self.state.lock().unwrap();
            if s.0.is_none() {
                s.0 = s.1.pop_front();
            }
            s.0.clone()
                .ok_or_else(|| TokenError("the test has no token left".into()))
        })
    }
    fn invalidate(&self, token: &str) {
        let mut s = self.state.lock().unwrap();
        if s.0.as_deref() == Some(token) {
            s.0 = None;
        }
        self.invalidated.lock().unwrap().push(token.to_string());
    }
}

/// A token no other test uses, looking like a real one.
fn token(what: &str) -> String {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).unwrap();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("ya29.{}-{what}-{hex}", kept_logs::MARKER)
}

fn bearer(token: &str) -> Credential {
    Credential::Bearer {
        user: SUPPORT.into(),
        token: token.into(),
    }
}

// --- log capture -----------------------------------------------------------

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'w self) -> Buffer {
        self.clone()
    }
}

/// The process's log from now on: everything at trace except what the
/// daemon caps (async-imap above debug, lettre above info), also the `log`
/// records of async-imap.
fn capture() -> Buffer {
    static LOG: OnceLock<Buffer> = OnceLock::new();
    LOG.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let buf = Buffer::default();
        tracing_subscriber::registry()
            .with(ticketd::credential::log_caps())
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(buf.clone())
                    .with_ansi(false),
            )
            .try_init()
            .expect("install the capturing subscriber");
        buf
    })
    .clone()
}

/// Standard base64, to look for a SASL response in the log.
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Asserts the log holds no token of `tokens`, nor the base64 of a SASL
/// response carrying it; and that it is not empty (the capture works).
fn assert_no_token_logged(log: &Buffer, tokens: &[&str]) {
    let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    kept_logs::keep("xoauth2-captured", &text);
    kept_logs::assert_no_secret("the captured log", &text);
    assert!(
        !text.is_empty(),
        "nothing was logged: the capture is broken"
    );
    for t in tokens {
        let xoauth2 = OAuthMechanism::XOAuth2.initial_response(SUPPORT, t, HOST, 0);
        let secret = base64(&xoauth2);
        for needle in [*t, secret.as_str()] {
            let lines: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
            assert!(
                lines.is_empty(),
                "{needle:?} in the log:\n{}",
                lines.join("\n")
            );
        }
    }
}

// --- helpers -------------------------------------------------------------------

/// A plain IMAP client on the stack, greeting read.
async fn client(stack: &MailStack) -> async_imap::Client<TcpStream> {
    let tcp = TcpStream::connect((HOST, stack.imap_port())).await.unwrap();
    let mut c = async_imap::Client::new(tcp);
    let greeting = tokio::time::timeout(Duration::from_secs(10), c.read_response())
        .await
        .expect("greeting in time")
        .expect("greeting");
    assert!(greeting.is_some(), "no greeting");
    c
}

/// A ticketd configuration for the stack, written into `dir`: the IMAP
/// mailbox SUPPORT (plain IMAP, IDLE) and submission with STARTTLS as
/// SUPPORT. The password variables named are never set: only tokens log
/// in.
fn config(dir: &std::path::Path, stack: &MailStack) -> ticketd::config::Config {
    let text = format!(
        "[desk]\naddresses = [\"{SUPPORT}\"]\nlanguage = \"en\"\n\
         [outbound]\ntransport = \"smtp\"\n\
         [outbound.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\n\
         user = \"{SUPPORT}\"\npassword_env = \"TICKETD_XOAUTH2_NO_PASSWORD\"\n\
         [[imap]]\nname = \"support\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"plain\"\n\
         user = \"{SUPPORT}\"\npassword_env = \"TICKETD_XOAUTH2_NO_PASSWORD\"\nidle_seconds = 60\n",
        stack.submission_port(),
        stack.ca_cert_path().display(),
        stack.imap_port(),
    );
    let path = dir.join("ticketd.toml");
    std::fs::write(&path, text).unwrap();
    ticketd::config::Config::load(&path).expect("load the test configuration")
}

fn customer_mail(subject: &str) -> Vec<u8> {
    format!(
        "From: Alice <{ALICE}>\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}.{}@customer.test>\r\n\r\nThe server {subject} is down.\r\n",
        token("mid").replace(kept_logs::MARKER, "id")
    )
    .into_bytes()
}

// --- IMAP ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_xoauth2_and_oauthbearer_log_in_and_a_refused_token_is_an_auth_error() {
    let log = capture();
    let idp = Introspection::start().await;
    let stack = MailStack::start_with_oauth2(&idp.url());
    stack.append(SUPPORT, "INBOX", customer_mail("first")).await;
    let good = token("good");
    let revoked = token("revoked");
    let unknown = token("unknown");
    idp.grant(&good, SUPPORT);
    idp.grant(&revoked, SUPPORT);
    idp.revoke(&revoked);
    let port = stack.imap_port();

    // XOAUTH2 (what the server is asked for first) fetches the mail.
    let mut s = match log_in(client(&stack).await, &bearer(&good), HOST, port).await {
        Ok(s) => s,
        Err((e, _)) => panic!("XOAUTH2 with a granted token: {e}"),
    };
    let all = mailstack::fetch_all_in(&mut s, "INBOX").await.unwrap();
    assert_eq!(all.len(), 1);
    assert!(String::from_utf8_lossy(&all[0]).contains("Subject: first"));
    s.logout().await.unwrap();
    assert_eq!(idp.asked(), vec![good.clone()]);

    // OAUTHBEARER works too.
    let c = client(&stack).await;
    let r = authenticate_bearer(c, OAuthMechanism::OAuthBearer, SUPPORT, &good, HOST, port).await;
    match r {
        Ok(mut s) => {
            assert_eq!(mailstack::count_in(&mut s, "INBOX").await.unwrap(), 1);
            s.logout().await.unwrap();
        }
        Err((e, _)) => panic!("OAUTHBEARER with a granted token: {e}"),
    }

    // A revoked and an unknown token, and the mailbox password posing as a
    // token: each an authentication error at once (the error challenge
    // answered, no hang), the connection still there; a good token then
    // logs in on the same connection.
    for (mechanism, bad) in [
        (OAuthMechanism::XOAuth2, revoked.as_str()),
        (OAuthMechanism::XOAuth2, unknown.as_str()),
        (OAuthMechanism::XOAuth2, mailstack::PASSWORD),
        (OAuthMechanism::OAuthBearer, revoked.as_str()),
    ] {
        let started = Instant::now();
        let c = client(&stack).await;
        let (e, c) = match authenticate_bearer(c, mechanism, SUPPORT, bad, HOST, port).await {
            Ok(_) => panic!("{mechanism:?} logged in with a bad token"),
            Err((e, c)) => (e, c),
        };
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(
            e.is_auth(),
            "{mechanism:?}: not an authentication error: {e}"
        );
        let shown = e.to_string();
        assert!(shown.starts_with("authentication failed"), "{shown}");
        assert!(shown.contains(mechanism.name()), "{shown}");
        assert!(shown.contains("AUTHENTICATIONFAILED"), "{shown}");
        // Dovecot's error challenge, reported: XOAUTH2's carries 401.
        let status = match mechanism {
            OAuthMechanism::XOAuth2 => r#""status":"401""#,
            OAuthMechanism::OAuthBearer => r#""status":"invalid_token""#,
        };
        assert!(shown.contains(status), "{shown}");
        assert!(!shown.contains(bad), "{shown}");
        let c = c.expect("the connection survives a refused token");
        match log_in(c, &bearer(&good), HOST, port).await {
            Ok(mut s) => {
                s.select("INBOX").await.unwrap();
                s.logout().await.unwrap();
            }
            Err((e, _)) => panic!("a good token after a bad one on the same connection: {e}"),
        }
    }

    // The provider down is not the token's fault: no authentication error.
    idp.set_down(true);
    let e = match log_in(client(&stack).await, &bearer(&good), HOST, port).await {
        Ok(_) => panic!("logged in while the identity provider is down"),
        Err((e, _)) => e,
    };
    assert!(!e.is_auth(), "{e}");
    assert!(e.to_string().contains("UNAVAILABLE"), "{e}");
    idp.set_down(false);

    // Passwords still work beside the tokens.
    assert_eq!(stack.count(SUPPORT, "INBOX").await, 1);
    assert_no_token_logged(&log, &[&good, &revoked, &unknown]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_with_a_refused_token_gets_a_fresh_one_once_then_says_authentication_failed() {
    let log = capture();
    let idp = Introspection::start().await;
    let stack = MailStack::start_with_oauth2(&idp.url());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &stack);
    let expired = token("expired");
    let fresh = token("fresh");
    idp.grant(&fresh, SUPPORT);

    // The cached token is refused: invalidated, the fresh one logs in.
    let tokens = Tokens::new(&expired);
    tokens.queue(&fresh);
    let src = ImapSource::new(&cfg, &cfg.imap[0])
        .unwrap()
        .with_tokens(tokens.clone());
    let said = src.check().await.expect("log in with the fresh token");
    assert!(said.starts_with("logged in to"), "{said}");
    assert_eq!(tokens.invalidated(), vec![expired.clone()]);
    assert_eq!(idp.asked(), vec![expired.clone(), fresh.clone()]);

    // Both refused: one retry, then the authentication error.
    let first = token("bad1");
    let second = token("bad2");
    let tokens = Tokens::new(&first);
    tokens.queue(&second);
    let src = ImapSource::new(&cfg, &cfg.imap[0])
        .unwrap()
        .with_tokens(tokens.clone());
    let e = src.check().await.expect_err("two bad tokens");
    assert!(e.contains("authentication failed (XOAUTH2)"), "{e}");
    assert_eq!(tokens.invalidated(), vec![first.clone(), second.clone()]);
    assert_no_token_logged(&log, &[&expired, &fresh, &first, &second]);
}

/// Counts what the source reports.
#[derive(Default)]
struct Observed {
    logins: std::sync::atomic::AtomicUsize,
}

impl ticketd::sources::imap::SyncObserver for Observed {
    fn synced(&self, _mailbox: &str) {}
    fn decided(&self, _action: ticketd::domain::Action, _latency: Duration) {}
    fn connected(&self, _mailbox: &str, up: bool) {
        if up {
            self.logins
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_while_idle_is_replaced_at_the_reconnect_and_no_mail_is_lost() {
    let log = capture();
    let idp = Introspection::start().await;
    let stack = MailStack::start_with_oauth2(&idp.url());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &stack);
    let store = ticketd::store::Store::open_sqlite(&dir.path().join("t.db"), 2)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let intake = Arc::new(ticketd::service::Intake::new(
        &cfg,
        ticketd::keys::MacKey(vec![7; 32]),
    ));
    intake.verify().unwrap();
    let first = token("first");
    let second = token("second");
    idp.grant(&first, SUPPORT);
    let tokens = Tokens::new(&first);
    let src = ImapSource::new(&cfg, &cfg.imap[0])
        .unwrap()
        .with_tokens(tokens.clone());
    let observed = Arc::new(Observed::default());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(src.run(
        intake,
        store.clone(),
        Arc::new(ticketd::outbound::Wake::new()),
        observed.clone(),
        stop_rx,
    ));
    let tickets = |n: usize| {
        let store = store.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let have = store.list_tickets().await.unwrap().len();
                if have >= n {
                    return have;
                }
                assert!(
                    Instant::now() < deadline,
                    "{have} of {n} tickets after 30 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    stack.send(ALICE, SUPPORT, customer_mail("before")).await;
    assert_eq!(tickets(1).await, 1);

    // The token expires while the session IDLEs (Dovecot checks a token
    // only at login, so the session goes on); the manager still holds it.
    idp.revoke(&first);
    idp.grant(&second, SUPPORT);
    tokens.queue(&second);
    // A mail arrives, and the server drops the session (as Microsoft's
    // does when the token expires; Dovecot has to be told to).
    stack.send(ALICE, SUPPORT, customer_mail("during")).await;
    stack.kick(SUPPORT);
    stack.send(ALICE, SUPPORT, customer_mail("after")).await;

    // The reconnect: the old token refused, invalidated, the fresh one in.
    assert_eq!(tickets(3).await, 3);
    stack
        .wait_for_count(SUPPORT, "Processed", 3, Duration::from_secs(20))
        .await;
    assert_eq!(stack.count(SUPPORT, "INBOX").await, 0);
    assert_eq!(
        tokens.invalidated(),
        vec![first.clone()],
        "asked: {:?}, logins: {:?}",
        idp.asked(),
        observed.logins
    );
    assert!(idp.asked().contains(&second));
    assert!(
        observed.logins.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "logged in again"
    );
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("the source stops")
        .unwrap();
    assert_no_token_logged(&log, &[&first, &second]);
}

// --- SMTP ----------------------------------------------------------------------

fn due(id: i64, subject: &str) -> ticketd::store::DueMail {
    ticketd::store::DueMail {
        id,
        ticket_id: None,
        sender: SUPPORT.into(),
        recipients: vec![ALICE.into()],
        raw: format!(
            "From: {SUPPORT}\r\nTo: {ALICE}\r\nSubject: {subject}\r\n\
             Message-ID: <{subject}@example.test>\r\n\r\nYour ticket.\r\n"
        )
        .into_bytes(),
        attempts: 0,
        created_at: "2026-12-03T00:00:00Z".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_xoauth2_through_postfix_submission_delivers_and_a_bad_token_is_an_auth_failure() {
    use ticketd::outbound::worker::{SendError, Sender};
    let log = capture();
    let idp = Introspection::start().await;
    let stack = MailStack::start_with_oauth2(&idp.url());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &stack);
    let first = token("smtp-first");
    let rotated = token("smtp-rotated");
    idp.grant(&first, SUPPORT);
    idp.grant(&rotated, SUPPORT);
    let tokens = Tokens::new(&first);
    let sender =
        Sender::from_config_with_tokens(&cfg, &dir.path().join("sent"), Some(tokens.clone()))
            .unwrap();
    assert!(matches!(sender, Sender::SmtpOAuth2(_)), "{sender:?}");
    let said = sender.check().await.expect("check-config --connect");
    assert!(said.contains("XOAUTH2"), "{said}");

    sender
        .send(&due(1, "one"))
        .await
        .expect("sent with XOAUTH2");
    stack
        .wait_for_count(ALICE, "INBOX", 1, Duration::from_secs(20))
        .await;
    assert!(idp.asked().contains(&first));

    // The manager refreshed: the next mail goes over a transport logged in
    // with the new token (the old pool is dropped).
    tokens.replace(&rotated);
    sender
        .send(&due(2, "two"))
        .await
        .expect("sent after rotation");
    stack
        .wait_for_count(ALICE, "INBOX", 2, Duration::from_secs(20))
        .await;
    assert!(idp.asked().contains(&rotated), "{:?}", idp.asked());
    assert!(tokens.invalidated().is_empty());

    // Tokens the provider does not know: refused, one retry with a fresh
    // token, then a clear authentication failure (the mail stays queued).
    let bad = token("smtp-bad");
    let worse = token("smtp-worse");
    let tokens = Tokens::new(&bad);
    tokens.queue(&worse);
    let refused =
        Sender::from_config_with_tokens(&cfg, &dir.path().join("sent"), Some(tokens.clone()))
            .unwrap();
    let started = Instant::now();
    match refused.send(&due(3, "three")).await {
        Err(SendError::Auth(e)) => {
            assert!(e.contains("XOAUTH2 as support@example.test"), "{e}");
            assert!(!e.contains(&bad) && !e.contains(&worse), "{e}");
        }
        other => panic!("not an authentication failure: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(tokens.invalidated(), vec![bad.clone(), worse.clone()]);
    let e = refused.check().await.expect_err("check with no token left");
    assert!(e.contains("no OAuth 2.0 access token"), "{e}");
    assert_eq!(stack.count(ALICE, "INBOX").await, 2);
    assert_no_token_logged(&log, &[&first, &rotated, &bad, &worse]);
}

#[test]
fn the_test_base64_is_standard() {
    assert_eq!(base64(b"user=u\x01"), "dXNlcj11AQ==");
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(base64(b"abc"), "YWJj");
}

// --- the daemon, end to end ----------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_ticketd");

/// `ticketd run` with the mailbox and the relay on `auth = "oauth2"`
/// (client credentials at the fake identity provider, whose RFC 7662
/// introspection is what Dovecot's oauth2 passdb asks): a customer's mail
/// becomes a ticket, the confirmation goes out through Postfix submission
/// with AUTH XOAUTH2, each account asks the provider once (the token is
/// reused, not fetched per poll or per mail), `auth status` shows both
/// grants, and neither the client secret nor a token is in the daemon's
/// log at debug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reads_the_mailbox_and_sends_through_the_relay_with_tokens_from_the_provider() {
    let idp = fake_idp::FakeIdp::start(fake_idp::IdpConfig::default()).await;
    let client_secret = fake_idp::IdpConfig::default()
        .client_secret
        .expect("the fake's client has a secret");
    let stack = MailStack::start_with_oauth2(&idp.introspection_url());
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, format!("{client_secret}\n")).unwrap();
    let oauth = format!(
        "provider = \"generic\"\nclient_id = \"ticketd-test-client\"\nclient_secret_file = \"{}\"\n\
         flow = \"client_credentials\"\ntoken_url = \"{}\"\nscope = \"https://outlook.office365.com/.default\"\n",
        secret_file.display(),
        idp.token_url()
    );
    let config = dir.path().join("ticketd.toml");
    std::fs::write(
        &config,
        format!(
            "[desk]\naddresses = [\"{SUPPORT}\"]\nlanguage = \"en\"\n[http]\nlisten = \"\"\n\
             [outbound]\ntransport = \"smtp\"\npoll_seconds = 0.2\n\
             [outbound.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\n\
             user = \"{SUPPORT}\"\nauth = \"oauth2\"\n[outbound.smtp.oauth]\n{oauth}\
             [[imap]]\nname = \"support\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"plain\"\n\
             user = \"{SUPPORT}\"\nidle_seconds = 60\nauth = \"oauth2\"\n[imap.oauth]\n{oauth}",
            stack.submission_port(),
            stack.ca_cert_path().display(),
            stack.imap_port(),
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let cmd = |args: &[&str]| {
        let mut c = std::process::Command::new(BIN);
        c.arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .env_remove("TICKETD_CONFIG");
        c
    };
    let log_path = dir.path().join("daemon.log");
    let daemon = Daemon(
        cmd(&["run"])
            .env("TICKETD_LOG", "debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("start ticketd run"),
    );

    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // Waits until `user`'s `folder` holds `n` mails; the daemon's log on failure.
    let until = |user: &'static str, folder: &'static str, n: u32| {
        let stack = &stack;
        let log = &log;
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if stack.count(user, folder).await >= n {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{user}/{folder}: not {n} mails after 60 s; daemon log:\n{}",
                    log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    stack.send(ALICE, SUPPORT, customer_mail("oauth-run")).await;
    // The confirmation reaches alice: read with a token, sent with one.
    until(ALICE, "INBOX", 1).await;
    let confirmation =
        String::from_utf8_lossy(&stack.fetch_all(ALICE, "INBOX").await[0]).into_owned();
    assert!(
        confirmation.contains("Auto-Submitted: auto-replied"),
        "{confirmation}"
    );
    until(SUPPORT, "Processed", 1).await;
    assert_eq!(stack.count(SUPPORT, "INBOX").await, 0);
    // A second mail: the tokens are reused.
    stack
        .send(ALICE, SUPPORT, customer_mail("oauth-run-2"))
        .await;
    until(ALICE, "INBOX", 2).await;
    assert_eq!(
        idp.count("client_credentials"),
        2,
        "one token per account (mailbox, relay) for both mails"
    );

    let status = cmd(&["auth", "status"]).output().unwrap();
    let status_text = format!(
        "{}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(status.status.success(), "{status_text}");
    assert!(
        status_text.contains("support: flow client_credentials")
            && status_text.contains("smtp: flow client_credentials")
            && status_text.matches("refreshes 1,").count() == 2,
        "{status_text}"
    );

    drop(daemon);
    let text = log();
    kept_logs::keep("xoauth2-daemon", &text);
    kept_logs::assert_no_secret("the daemon's log", &text);
    assert!(
        text.contains("IMAP mailbox"),
        "the log is the daemon's:\n{text}"
    );
    let issued = idp.issued();
    assert!(!issued.is_empty());
    for secret in issued
        .iter()
        .map(String::as_str)
        .chain([client_secret.as_str()])
    {
        assert!(
            !text.contains(secret),
            "a secret in the daemon's log:\n{text}"
        );
        assert!(
            !status_text.contains(secret),
            "a secret in auth status:\n{status_text}"
        );
    }
}

/// `ticketd run`, stopped with SIGTERM (and waited for) when dropped, also
/// when an assertion failed.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// --- certificate credentials and service accounts, end to end ------------------

/// Logs in to the stack's IMAP as `user` with `token` by XOAUTH2 and counts
/// INBOX; the error text when refused.
async fn imap_count(stack: &MailStack, user: &str, token: &str) -> Result<u32, String> {
    let credential = Credential::Bearer {
        user: user.into(),
        token: token.into(),
    };
    match log_in(client(stack).await, &credential, HOST, stack.imap_port()).await {
        Ok(mut s) => {
            let n = mailstack::count_in(&mut s, "INBOX").await.unwrap();
            s.logout().await.unwrap();
            Ok(n)
        }
        Err((e, _)) => Err(e.to_string()),
    }
}

/// A mailbox on Entra ID certificate credentials (client credentials with
/// a client assertion, no secret) and one on a Google service account
/// acting as SUPPORT: the library's token sources get tokens from the fake
/// identity provider, and Dovecot (introspecting at the fake) lets each log
/// in by XOAUTH2 as SUPPORT — three logins each, one token request each.
/// The service account's token is SUPPORT's: it does not log in as ALICE.
/// A certificate the app registration does not hold is a permanent error
/// naming AADSTS700027. Neither key, nor a token, is in the captured log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_and_service_account_tokens_log_in_to_dovecot() {
    let log = capture();
    let dir = tempfile::tempdir().unwrap();
    let cert = test_keys::certificate(dir.path(), "app");
    let unregistered = test_keys::certificate(dir.path(), "unregistered");
    let idp = fake_idp::FakeIdp::start(fake_idp::IdpConfig {
        certificates: vec![cert.der.clone()],
        username: SUPPORT.into(),
        ..fake_idp::IdpConfig::default()
    })
    .await;
    let sa_email = "ticketd@ticketd-test.iam.gserviceaccount.com";
    let (sa_key, sa_cert) = test_keys::service_account_key(
        dir.path(),
        sa_email,
        "113456789012345678901",
        "k1d",
        &idp.token_url(),
    );
    idp.set_service_account(fake_idp::ServiceAccount {
        client_email: sa_email.into(),
        key_id: "k1d".into(),
        certificate: sa_cert.der.clone(),
        delegated_scopes: vec!["https://mail.google.com/".into()],
        users: vec![SUPPORT.into(), ALICE.into()],
    });
    let stack = MailStack::start_with_oauth2(&idp.introspection_url());
    stack
        .append(SUPPORT, "INBOX", customer_mail("certificate"))
        .await;
    let mailbox = |name: &str, oauth: String| {
        format!(
            "[[imap]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"plain\"\nuser = \"{SUPPORT}\"\nauth = \"oauth2\"\n[imap.oauth]\n{oauth}",
            stack.imap_port()
        )
    };
    let entra = |cert_file: &std::path::Path, key_file: &std::path::Path| {
        format!(
            "provider = \"generic\"\nclient_id = \"ticketd-test-client\"\nclient_certificate_file = \"{}\"\nclient_key_file = \"{}\"\nflow = \"client_credentials\"\ntoken_url = \"{}\"\nscope = \"https://outlook.office365.com/.default\"\n",
            cert_file.display(),
            key_file.display(),
            idp.token_url()
        )
    };
    let text = format!(
        "{}{}{}",
        mailbox("entra", entra(&cert.cert, &cert.key)),
        mailbox(
            "gmail",
            format!(
                "provider = \"google\"\nflow = \"service_account\"\nservice_account_key_file = \"{}\"\nsubject = \"{SUPPORT}\"\n",
                sa_key.display()
            )
        ),
        mailbox("wrong", entra(&unregistered.cert, &unregistered.key)),
    );
    let path = dir.path().join("ticketd.toml");
    std::fs::write(&path, text).unwrap();
    let cfg = ticketd::config::Config::load(&path).expect("load the configuration");
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let store = ticketd::store::Store::open_sqlite(&dir.path().join("data").join("t.db"), 2)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let sources = ticketd::oauth::TokenSource::for_config(&cfg, &store, None).unwrap();
    let src = |key: &str| sources.iter().find(|s| s.account() == key).unwrap().clone();

    let mut used = Vec::new();
    for key in ["imap:entra", "imap:gmail"] {
        for _ in 0..3 {
            let token = src(key).access_token().await.unwrap();
            let n = imap_count(&stack, SUPPORT, token.secret())
                .await
                .unwrap_or_else(|e| panic!("{key}: XOAUTH2 as {SUPPORT}: {e}"));
            assert_eq!(n, 1, "{key}");
            used.push(token.secret().clone());
        }
    }
    assert_eq!(idp.count("client_assertion"), 1, "{:?}", idp.last_error());
    assert_eq!(idp.count("client_credentials"), 1);
    assert_eq!(idp.count("jwt_bearer"), 1, "{:?}", idp.last_error());
    let sa_token = used.last().unwrap().clone();
    assert_eq!(idp.user_of(&sa_token).as_deref(), Some(SUPPORT));
    let refused = imap_count(&stack, ALICE, &sa_token).await;
    assert!(
        refused.is_err(),
        "SUPPORT's token logged in as {ALICE}: {refused:?}"
    );

    let e = src("imap:wrong").access_token().await.unwrap_err();
    assert!(e.is_permanent(), "{e}");
    assert!(e.to_string().contains("AADSTS700027"), "{e}");

    let tokens: Vec<&str> = used.iter().map(String::as_str).collect();
    assert_no_token_logged(&log, &tokens);
    let logged = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    for key in [&cert.key, &unregistered.key, &sa_cert.key] {
        for line in test_keys::pem_body_lines(key) {
            assert!(!logged.contains(&line), "key material in the log");
        }
    }
    let shown = format!("{e} {e:?} {:?}", sources);
    for line in test_keys::pem_body_lines(&cert.key) {
        assert!(!shown.contains(&line), "key material in {shown}");
    }
}

/// `ticketd run` with the mailbox on a Google service account (acting as
/// SUPPORT) and the relay on Entra ID certificate credentials: a customer's
/// mail becomes a ticket and the confirmation goes out through Postfix
/// submission, both logins with tokens from the fake identity provider;
/// one token request per account for two mails; the daemon's log at debug
/// holds neither key nor token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_a_service_account_mailbox_and_a_certificate_relay() {
    let dir = tempfile::tempdir().unwrap();
    let cert = test_keys::certificate(dir.path(), "relay");
    let idp = fake_idp::FakeIdp::start(fake_idp::IdpConfig {
        certificates: vec![cert.der.clone()],
        username: SUPPORT.into(),
        ..fake_idp::IdpConfig::default()
    })
    .await;
    let sa_email = "ticketd@ticketd-test.iam.gserviceaccount.com";
    let (sa_key, sa_cert) = test_keys::service_account_key(
        dir.path(),
        sa_email,
        "113456789012345678901",
        "k1d",
        &idp.token_url(),
    );
    idp.set_service_account(fake_idp::ServiceAccount {
        client_email: sa_email.into(),
        key_id: "k1d".into(),
        certificate: sa_cert.der.clone(),
        delegated_scopes: vec!["https://mail.google.com/".into()],
        users: vec![SUPPORT.into()],
    });
    let stack = MailStack::start_with_oauth2(&idp.introspection_url());
    let config = dir.path().join("ticketd.toml");
    std::fs::write(
        &config,
        format!(
            "[desk]\naddresses = [\"{SUPPORT}\"]\nlanguage = \"en\"\n[http]\nlisten = \"\"\n\
             [outbound]\ntransport = \"smtp\"\npoll_seconds = 0.2\n\
             [outbound.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\n\
             user = \"{SUPPORT}\"\nauth = \"oauth2\"\n[outbound.smtp.oauth]\n\
             provider = \"generic\"\nclient_id = \"ticketd-test-client\"\nclient_certificate_file = \"{}\"\n\
             flow = \"client_credentials\"\ntoken_url = \"{}\"\nscope = \"https://outlook.office365.com/.default\"\n\
             [[imap]]\nname = \"support\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"plain\"\n\
             user = \"{SUPPORT}\"\nidle_seconds = 60\nauth = \"oauth2\"\n[imap.oauth]\n\
             provider = \"google\"\nflow = \"service_account\"\nservice_account_key_file = \"{}\"\nsubject = \"{SUPPORT}\"\n",
            stack.submission_port(),
            stack.ca_cert_path().display(),
            cert.combined.display(),
            idp.token_url(),
            stack.imap_port(),
            sa_key.display(),
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let log_path = dir.path().join("daemon.log");
    let daemon = Daemon(
        std::process::Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .arg("run")
            .env_remove("TICKETD_CONFIG")
            .env("TICKETD_LOG", "debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("start ticketd run"),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let until = |user: &'static str, folder: &'static str, n: u32| {
        let stack = &stack;
        let log = &log;
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while stack.count(user, folder).await < n {
                assert!(
                    Instant::now() < deadline,
                    "{user}/{folder}: not {n} mails after 60 s; daemon log:\n{}",
                    log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    stack.send(ALICE, SUPPORT, customer_mail("sa-run")).await;
    until(ALICE, "INBOX", 1).await;
    until(SUPPORT, "Processed", 1).await;
    stack.send(ALICE, SUPPORT, customer_mail("sa-run-2")).await;
    until(ALICE, "INBOX", 2).await;
    assert_eq!(idp.count("jwt_bearer"), 1, "the mailbox's token is reused");
    assert_eq!(
        idp.count("client_assertion"),
        1,
        "the relay's token is reused"
    );
    assert_eq!(idp.count("refused"), 0, "{:?}", idp.last_error());
    drop(daemon);
    let text = log();
    kept_logs::keep("xoauth2-daemon", &text);
    kept_logs::assert_no_secret("the daemon's log", &text);
    assert!(
        text.contains("IMAP mailbox"),
        "the log is the daemon's:\n{text}"
    );
    for token in idp.issued() {
        assert!(!text.contains(&token), "a token in the daemon's log");
    }
    for key in [&cert.key, &sa_cert.key] {
        for line in test_keys::pem_body_lines(key) {
            assert!(!text.contains(&line), "key material in the daemon's log");
        }
    }
}

/// `GET path` on loopback `port`: the status code and the body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = conn.read_to_string(&mut text);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
}

/// `ticketd auth login NAME` (device code) through the binary, approved at
/// the fake once it has polled; panics with its output unless it exits 0.
async fn device_login_through_the_binary(idp: &fake_idp::FakeIdp, cmd: std::process::Command) {
    let mut cmd = cmd;
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ticketd auth login");
    let polls = idp.count("device_code");
    let deadline = Instant::now() + Duration::from_secs(30);
    while idp.count("device_code") < polls + 1 {
        assert!(Instant::now() < deadline, "auth login never polled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    idp.approve();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "auth login failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A revoked grant with `ticketd run` up, two mailboxes on Dovecot's
/// oauth2 passdb: `support` (a person's grant, device code) and `second`
/// (app-only, client credentials). After the user's sessions are revoked
/// and the connections dropped: `second` goes on storing mail; `support`
/// acknowledges nothing (its mail stays in the INBOX); `/healthz` fails
/// naming it with the repair; the `lead` audience gets exactly one notice
/// however often the mailbox retries. `ticketd auth login support` with
/// `run` still up repairs it: the waiting mail is stored at once (no
/// restart, no SIGHUP, no five-minute backoff) and health passes again. No
/// token or client secret is in the daemon's log at trace level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_stops_one_mailbox_loudly_and_auth_login_repairs_it_while_running() {
    let idp = fake_idp::FakeIdp::start(fake_idp::IdpConfig::default()).await;
    let client_secret = fake_idp::IdpConfig::default()
        .client_secret
        .expect("the fake's client has a secret");
    let stack = MailStack::start_with_oauth2(&idp.introspection_url());
    stack.create_folder(SUPPORT, "Second").await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, format!("{client_secret}\n")).unwrap();
    let oauth = |flow: &str, scope: &str| {
        format!(
            "provider = \"generic\"\nclient_id = \"ticketd-test-client\"\nclient_secret_file = \"{}\"\n\
             flow = \"{flow}\"\ntoken_url = \"{}\"\ndevice_authorization_url = \"{}\"\nscope = \"{scope}\"\n",
            secret_file.display(),
            idp.token_url(),
            idp.device_url(),
        )
    };
    let http_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dir.path().join("ticketd.toml");
    std::fs::write(
        &config,
        format!(
            "[desk]\naddresses = [\"{SUPPORT}\"]\nlanguage = \"en\"\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\n\
             [outbound]\ntransport = \"file\"\npoll_seconds = 0.2\n\
             [sla.audiences]\nlead = [\"mail:lead@desk.example\"]\n\
             [[imap]]\nname = \"support\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"plain\"\n\
             user = \"{SUPPORT}\"\nidle_seconds = 60\nauth = \"oauth2\"\n[imap.oauth]\n{delegated}\
             [[imap]]\nname = \"second\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"plain\"\n\
             user = \"{SUPPORT}\"\nfolder = \"Second\"\nidle_seconds = 60\nauth = \"oauth2\"\n[imap.oauth]\n{app}",
            port = stack.imap_port(),
            delegated = oauth(
                "device_code",
                "https://outlook.office365.com/IMAP.AccessAsUser.All offline_access"
            ),
            app = oauth("client_credentials", "https://outlook.office365.com/.default"),
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let cmd = |args: &[&str]| {
        let mut c = std::process::Command::new(BIN);
        c.arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .env_remove("TICKETD_CONFIG")
            .env("TICKETD_LOG", "trace");
        c
    };
    device_login_through_the_binary(&idp, cmd(&["auth", "login", "support"])).await;
    let log_path = dir.path().join("daemon.log");
    let daemon = Daemon(
        cmd(&["run"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("start ticketd run"),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ok() {
            assert!(
                Instant::now() < deadline,
                "{what}: not after 60 s; daemon log:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let notices = || -> Vec<String> {
        std::fs::read_dir(data.join("sent"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .filter(|m| m.contains("ticketd auth login support"))
            .collect()
    };
    wait("healthy", &|| http_get(http_port, "/healthz").0 == 200);

    stack
        .append(SUPPORT, "INBOX", customer_mail("before"))
        .await;
    stack
        .wait_for_count(SUPPORT, "Processed", 1, Duration::from_secs(60))
        .await;

    // The person's sessions are revoked; the server drops the connections.
    idp.revoke_user_grants();
    stack.kick(SUPPORT);
    stack
        .append(SUPPORT, "INBOX", customer_mail("waiting"))
        .await;
    stack
        .append(SUPPORT, "Second", customer_mail("second"))
        .await;
    // The app-only mailbox goes on.
    assert_eq!(
        stack
            .wait_for_count(SUPPORT, "Processed", 2, Duration::from_secs(60))
            .await,
        2,
        "the second mailbox stopped too; log:\n{}",
        log()
    );
    wait("health names the refused grant", &|| {
        let (code, body) = http_get(http_port, "/healthz");
        code == 503
            && body.contains(
                "support: the OAuth 2.0 grant was refused; run `ticketd auth login support`",
            )
    });
    wait("the lead's notice", &|| !notices().is_empty());
    // Several reconnects later (1 s, 2 s, 4 s backoff): still one notice,
    // and the waiting mail is untouched in the INBOX.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let n = notices();
    assert_eq!(n.len(), 1, "one notice per refusal, not per retry");
    assert!(n[0].contains("lead@desk.example"), "{}", n[0]);
    assert!(n[0].contains("invalid_grant"), "{}", n[0]);
    assert!(n[0].contains("Auto-Submitted: auto-generated"), "{}", n[0]);
    assert_eq!(
        stack.count(SUPPORT, "INBOX").await,
        1,
        "nothing acknowledged"
    );
    assert_eq!(stack.count(SUPPORT, "Second").await, 0);

    // The repair, with run up.
    let repaired_at = Instant::now();
    device_login_through_the_binary(&idp, cmd(&["auth", "login", "support"])).await;
    assert_eq!(
        stack
            .wait_for_count(SUPPORT, "Processed", 3, Duration::from_secs(30))
            .await,
        3,
        "the waiting mail was not stored after the login; log:\n{}",
        log()
    );
    assert!(
        repaired_at.elapsed() < Duration::from_secs(20),
        "picked up after {:?}",
        repaired_at.elapsed()
    );
    assert_eq!(stack.count(SUPPORT, "INBOX").await, 0);
    wait("healthy again", &|| {
        http_get(http_port, "/healthz").0 == 200
    });
    assert_eq!(notices().len(), 1);

    drop(daemon);
    let text = log();
    kept_logs::keep("xoauth2-daemon", &text);
    kept_logs::assert_no_secret("the daemon's log", &text);
    assert!(text.contains("IMAP mailbox"), "the daemon's log:\n{text}");
    let issued = idp.issued();
    assert!(issued.len() >= 3);
    for secret in issued
        .iter()
        .map(String::as_str)
        .chain([client_secret.as_str()])
    {
        assert!(!text.contains(secret), "a secret in the daemon's log");
        for m in notices() {
            assert!(!m.contains(secret), "a secret in the notice");
        }
    }
}
