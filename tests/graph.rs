//! Microsoft Graph as a mail source and transport (issue 15): `ticketd
//! run` as a process against the fake Graph (`tests/support/fake_graph.rs`)
//! with tokens by client credentials from the fake identity provider.
//!
//! - a burst of 500 mails is stored once each (500 tickets), every message
//!   moved to Processed, also when the daemon is killed with SIGKILL in
//!   the middle and started again; the confirmations leave through
//!   sendMail with In-Reply-To naming the customer's Message-ID;
//! - the delta link survives a restart: with nothing new, no message's
//!   MIME is fetched again;
//! - a 429 with Retry-After is waited out (no request early) and the mail
//!   still arrives;
//! - a mailbox whose grant the provider refuses fails /healthz by name
//!   while a second mailbox goes on.

#[path = "support/fake_graph.rs"]
mod fake_graph;
#[path = "support/fake_idp.rs"]
mod fake_idp;
#[path = "support/kept_logs.rs"]
mod kept_logs;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ticketd");
const DESK: &str = "support@contoso.test";

/// A customer's mail number `n`.
fn customer_mail(n: usize, tag: &str) -> Vec<u8> {
    format!(
        "From: Customer {n} <customer{n}@example.org>\r\nTo: {DESK}\r\n\
         Subject: {tag} printer {n} is broken\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n\
         Message-ID: <{tag}.{n}@example.org>\r\n\r\nPrinter {n} prints nothing.\r\n"
    )
    .into_bytes()
}

struct Setup {
    idp: Arc<fake_idp::FakeIdp>,
    graph: fake_graph::FakeGraph,
    dir: tempfile::TempDir,
    config: PathBuf,
    data: PathBuf,
}

/// The fakes, a client secret file and a configuration with one Graph
/// mailbox `desk` (and `extra`, appended as given).
async fn setup(extra: &str, http: &str) -> Setup {
    let idp = Arc::new(fake_idp::FakeIdp::start(fake_idp::IdpConfig::default()).await);
    let check = idp.clone();
    let graph = fake_graph::FakeGraph::start(move |t| check.is_active(t)).await;
    graph.add_mailbox(DESK);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(
        &secret,
        fake_idp::IdpConfig::default().client_secret.unwrap() + "\n",
    )
    .unwrap();
    let config = dir.path().join("ticketd.toml");
    std::fs::write(
        &config,
        format!(
            "[desk]\naddresses = [\"{DESK}\"]\nlanguage = \"en\"\n[http]\n{http}\n\
             [outbound]\ntransport = \"graph\"\npoll_seconds = 0.2\n[outbound.graph]\nmailbox = \"desk\"\n\
             {}{extra}",
            graph_table("desk", DESK, &graph.base_url(), &idp.token_url(), &secret)
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    Setup {
        idp,
        graph,
        dir,
        config,
        data,
    }
}

/// A `[[graph]]` table with client credentials at the fake IdP.
fn graph_table(name: &str, mailbox: &str, base: &str, token_url: &str, secret: &Path) -> String {
    format!(
        "[[graph]]\nname = \"{name}\"\nmailbox = \"{mailbox}\"\npoll_seconds = 1\nbase_url = \"{base}\"\n\
         [graph.oauth]\nprovider = \"generic\"\nclient_id = \"ticketd-test-client\"\n\
         client_secret_file = \"{}\"\nflow = \"client_credentials\"\ntoken_url = \"{token_url}\"\n\
         scope = \"https://graph.microsoft.com/.default\"\n",
        secret.display()
    )
}

impl Setup {
    fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(BIN);
        c.arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .env_remove("TICKETD_CONFIG");
        c
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("daemon{n}.log"))
    }

    /// `ticketd run`, its log in `daemon{n}.log`.
    fn start(&self, n: usize) -> Daemon {
        Daemon(
            self.cmd(&["run"])
                .env("TICKETD_LOG", "debug,sqlx=info")
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(self.log_path(n)).unwrap())
                .spawn()
                .expect("start ticketd run"),
        )
    }

    fn log(&self, n: usize) -> String {
        std::fs::read_to_string(self.log_path(n)).unwrap_or_default()
    }

    /// Waits (at most `secs`) until `cond` holds; panics with the log.
    async fn until(&self, what: &str, secs: u64, n: usize, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {secs} s; daemon log:\n{}",
                self.log(n)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Tickets in the database.
    async fn tickets(&self) -> i64 {
        let url = format!(
            "sqlite://{}?mode=ro",
            self.data.join("ticketd.db").display()
        );
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tickets")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    }
}

/// The daemons' logs go to the suite-wide secret check.
impl Drop for Setup {
    fn drop(&mut self) {
        for n in 1..=4 {
            let log = self.log(n);
            if !log.is_empty() {
                kept_logs::keep("graph-daemon", &log);
            }
        }
    }
}

/// `ticketd run`, stopped with SIGTERM (and waited for) when dropped.
struct Daemon(std::process::Child);

impl Daemon {
    /// SIGKILL: no clean-up at all.
    fn kill9(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        std::mem::forget(self);
    }
}

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

/// 500 mails at once; the daemon is killed with SIGKILL after some of them
/// were stored and started again: exactly 500 tickets, every message in
/// Processed, none left in the Inbox; the confirmations go out through
/// sendMail answering the customers' Message-IDs; no token or client
/// secret in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_500_survives_a_kill_and_is_stored_once_each() {
    let s = setup("", "listen = \"\"").await;
    for n in 0..500 {
        s.graph.deliver(DESK, customer_mail(n, "burst"));
    }
    let first = s.start(1);
    s.until("some mails stored", 120, 1, || {
        s.graph.folder_count(DESK, "Processed") >= 60
    })
    .await;
    first.kill9();
    let at_kill = s.graph.folder_count(DESK, "Processed");
    assert!(
        at_kill < 500,
        "all 500 were stored before the kill: no test"
    );
    let _second = s.start(2);
    s.until("all 500 in Processed", 180, 2, || {
        s.graph.folder_count(DESK, "Processed") == 500
    })
    .await;
    assert_eq!(s.graph.folder_count(DESK, "Inbox"), 0);
    assert_eq!(s.tickets().await, 500, "one ticket per mail");
    // The confirmations: one per ticket (a mail in flight at the kill may
    // go twice, never none).
    s.until("500 confirmations sent", 120, 2, || {
        let sent = s.graph.sent();
        let mut answered: Vec<String> = sent
            .iter()
            .filter_map(|(_, m)| {
                let text = String::from_utf8_lossy(m);
                text.lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("in-reply-to:"))
                    .map(|l| l[12..].trim().to_string())
            })
            .collect();
        answered.sort();
        answered.dedup();
        answered.len() == 500
    })
    .await;
    let (from, one) = s
        .graph
        .sent()
        .into_iter()
        .find(|(_, m)| String::from_utf8_lossy(m).contains("<burst.7@example.org>"))
        .expect("the confirmation of mail 7");
    assert_eq!(from, DESK);
    let text = String::from_utf8_lossy(&one);
    assert!(
        text.contains("In-Reply-To: <burst.7@example.org>")
            && text.contains("References: <burst.7@example.org>")
            && text.contains("<customer7@example.org>")
            && text.contains("Message-ID: <td."),
        "{text}"
    );
    assert_eq!(s.graph.early_retries(), 0);
    let log = s.log(1) + &s.log(2);
    for secret in s
        .idp
        .issued()
        .iter()
        .map(String::as_str)
        .chain([fake_idp::IdpConfig::default()
            .client_secret
            .unwrap()
            .as_str()])
    {
        assert!(!log.contains(secret), "a secret in the log:\n{log}");
    }
    kept_logs::assert_no_secret("the daemons' logs", &log);
}

/// The delta link is kept in the database: a daemon started again with
/// nothing new fetches no message again (no `$value`), and a mail that
/// comes later is taken; a 429 with Retry-After is waited out with no
/// request before it, and the mail arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delta_link_survives_a_restart_and_throttling_is_waited_out() {
    let s = setup("", "listen = \"\"").await;
    for n in 0..3 {
        s.graph.deliver(DESK, customer_mail(n, "delta"));
    }
    {
        let _d = s.start(1);
        s.until("3 stored", 60, 1, || {
            s.graph.folder_count(DESK, "Processed") == 3
        })
        .await;
        s.until("3 confirmations", 60, 1, || s.graph.sent().len() >= 3)
            .await;
    }
    let fetched = s.graph.count("value");
    assert_eq!(fetched, 3);
    let rounds = s.graph.count("delta");
    let _d = s.start(2);
    s.until("two delta rounds after the restart", 30, 2, || {
        s.graph.count("delta") >= rounds + 2
    })
    .await;
    assert_eq!(
        s.graph.count("value"),
        fetched,
        "a message fetched again after the restart"
    );
    assert_eq!(s.graph.count("createFolder"), 1, "Processed made once");
    // Throttled: the next 3 requests get 429 with Retry-After: 2.
    s.graph.throttle_next(3, 2);
    let throttled_at = Instant::now();
    s.graph.deliver(DESK, customer_mail(9, "delta"));
    s.until("the throttled mail stored", 60, 2, || {
        s.graph.folder_count(DESK, "Processed") == 4
    })
    .await;
    assert!(s.graph.count("throttled") >= 3);
    assert_eq!(s.graph.early_retries(), 0, "a request before Retry-After");
    assert!(
        throttled_at.elapsed() >= Duration::from_secs(2),
        "stored before the Retry-After passed"
    );
    assert_eq!(s.tickets().await, 4);
    assert_eq!(s.graph.count("value"), fetched + 1);
}

/// A second mailbox whose client the provider refuses (a wrong secret:
/// `invalid_client`): /healthz fails naming it, the first mailbox goes on
/// taking mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_grant_fails_health_for_its_mailbox_only() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let other = "sales@contoso.test";
    let s = setup_two(other, port).await;
    let _d = s.start(1);
    s.graph.deliver(DESK, customer_mail(1, "health"));
    s.until("the desk's mail stored", 60, 1, || {
        s.graph.folder_count(DESK, "Processed") == 1
    })
    .await;
    let http = oauth2::reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        if let Ok(r) = http.get(&url).send().await {
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            if status == 503 && body.contains("sales") {
                break (status, body);
            }
        }
        assert!(
            Instant::now() < deadline,
            "health never failed for sales:\n{}",
            s.log(1)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 503);
    assert!(
        body.contains("ticketd auth login sales") && !body.contains("auth login desk"),
        "{body}"
    );
    // The desk goes on.
    s.graph.deliver(DESK, customer_mail(2, "health"));
    s.until("the desk's second mail stored", 60, 1, || {
        s.graph.folder_count(DESK, "Processed") == 2
    })
    .await;
    let metrics = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ticketd_mailbox_auth_ok{mailbox=\"sales\"} 0"),
        "{metrics}"
    );
}

/// [`setup`] with a second mailbox `sales` whose client secret is wrong,
/// and /healthz on `port`.
async fn setup_two(other: &str, port: u16) -> Setup {
    let s = setup("", &format!("listen = \"127.0.0.1:{port}\"")).await;
    s.graph.add_mailbox(other);
    let wrong = s.dir.path().join("wrong-secret");
    std::fs::write(&wrong, "not-the-secret\n").unwrap();
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str(&graph_table(
        "sales",
        other,
        &s.graph.base_url(),
        &s.idp.token_url(),
        &wrong,
    ));
    std::fs::write(&s.config, text).unwrap();
    s
}

/// The transport by itself: the MIME arrives byte for byte (202); a token
/// Graph refuses (revoked at the provider) is replaced once and the mail
/// sent; a 400 is permanent with Graph's code; a mail over Graph's 4 MB
/// request limit is permanent before anything is sent; a 429 is a
/// deferral by its Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_mail_keeps_the_mime_and_maps_graphs_answers() {
    use ticketd::outbound::graph::GraphSender;
    use ticketd::outbound::worker::SendError;
    let s = setup("", "listen = \"\"").await;
    let cfg = ticketd::config::Config::load(&s.config).unwrap();
    let store = ticketd::store::Store::open_sqlite(&s.dir.path().join("t.db"), 2)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let client =
        ticketd::sources::graph::GraphClient::new(&cfg, &cfg.graph[0], &store, None).unwrap();
    let sender = GraphSender::new(Arc::new(client));
    let mime = customer_mail(1, "send");
    sender.send(&mime).await.unwrap();
    assert_eq!(s.graph.sent(), vec![(DESK.to_string(), mime.clone())]);

    s.idp.revoke_all();
    sender.send(&mime).await.unwrap();
    assert_eq!(s.graph.count("unauthorized"), 1);
    assert_eq!(s.idp.count("client_credentials"), 2, "one fresh token");
    assert_eq!(s.graph.sent().len(), 2);

    let e = sender.send(b"no header at all").await.unwrap_err();
    assert!(
        matches!(&e, SendError::Permanent(t) if t.contains("400") && t.contains("ErrorMimeContentInvalid")),
        "{e}"
    );
    let mut big = customer_mail(2, "send");
    big.extend(std::iter::repeat_n(b'x', 3 * 1024 * 1024 + 200));
    let calls = s.graph.count("sendMail");
    let e = sender.send(&big).await.unwrap_err();
    assert!(
        matches!(&e, SendError::Permanent(t) if t.contains("4 MB")),
        "{e}"
    );
    assert_eq!(s.graph.count("sendMail"), calls, "nothing sent");

    s.graph.throttle_next(1, 3);
    let e = sender.send(&mime).await.unwrap_err();
    assert!(
        matches!(&e, SendError::Throttled { retry_after, .. } if *retry_after == Duration::from_secs(3)),
        "{e}"
    );
    // The client holds the next request until the Retry-After passed.
    let t = Instant::now();
    sender.send(&mime).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(2900));
    assert_eq!(s.graph.early_retries(), 0);
}

/// `check-config` takes the [[graph]] table offline; `--connect` gets a
/// token and lists the folder; a Graph that no longer knows the delta
/// link (410 Gone) makes the daemon read the folder afresh without a
/// second ticket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_lists_the_folder_and_an_expired_delta_link_starts_over() {
    let s = setup("", "listen = \"\"").await;
    let out = s.cmd(&["check-config"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.graph.deliver(DESK, customer_mail(1, "check"));
    let out = s.cmd(&["check-config", "--connect"]).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("ok    graph desk:")
            && text.contains("folder \"Inbox\" listed (1 messages)")
            && text.contains("ok    outbound graph"),
        "{text}"
    );
    let status = s.cmd(&["auth", "status"]).output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains("desk: flow client_credentials"), "{status}");

    let _d = s.start(1);
    s.until("the mail stored", 60, 1, || {
        s.graph.folder_count(DESK, "Processed") == 1
    })
    .await;
    s.graph.expire_delta_tokens();
    s.graph.deliver(DESK, customer_mail(2, "check"));
    s.until("the mail after the expiry stored", 60, 1, || {
        s.graph.folder_count(DESK, "Processed") == 2
    })
    .await;
    assert_eq!(s.tickets().await, 2);
    assert!(s.log(1).contains("no longer knows the delta link"));
}

/// A message larger than `[intake] max_message_bytes` stays in the Inbox
/// (its `$value` is not taken), the others are stored and moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_stays_in_the_inbox() {
    let s = setup("[intake]\nmax_message_bytes = 65536\n", "listen = \"\"").await;
    let mut big = customer_mail(1, "size");
    big.extend(std::iter::repeat_n(b'y', 70_000));
    s.graph.deliver(DESK, big);
    s.graph.deliver(DESK, customer_mail(2, "size"));
    let _d = s.start(1);
    s.until("the small mail stored", 60, 1, || {
        s.graph.folder_count(DESK, "Processed") == 1
    })
    .await;
    let rounds = s.graph.count("delta");
    s.until("another round", 30, 1, || s.graph.count("delta") > rounds)
        .await;
    assert_eq!(s.graph.folder_count(DESK, "Inbox"), 1);
    assert_eq!(s.tickets().await, 1);
    assert_eq!(
        s.log(1)
            .matches("larger than [intake] max_message_bytes")
            .count(),
        1,
        "told once"
    );
}
