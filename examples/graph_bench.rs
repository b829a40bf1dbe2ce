//! The Microsoft Graph benchmark: `ticketd run` reading a mailbox through
//! the fake Graph of the tests (`tests/support/fake_graph.rs`, axum on
//! loopback) with client-credentials tokens from the fake identity
//! provider, and sending its confirmations through sendMail.
//!
//! ```text
//! cargo build --release && cargo run --release --example graph_bench -- target/release/ticketd [N] [SINGLES]
//! ```
//!
//! 1. **Burst**: N mails (default 500) are put into the desk's Inbox at
//!    once, while the daemon polls every second. Reports mails/s from the
//!    delivery to the last message moved to Processed (a message is moved
//!    only after its commit), which includes up to one poll interval of
//!    waiting, and the rate from the first to the last move.
//! 2. **sendMail to stored**: SINGLES times (default 20), a customer's
//!    mailbox sends a mail to the desk with sendMail (the fake delivers it
//!    into the desk's Inbox when it accepts it, 202) at a random point of
//!    the daemon's poll cycle; the time until the next delta round has
//!    stored and moved it: p50, p90, max. Its floor is the poll interval
//!    (`poll_seconds = 1` here; Graph has no IDLE).
//!
//! Prints `GRAPH_RESULT key=value …`; exits 1 when a mail is not stored
//! exactly once.

#[path = "../tests/support/fake_graph.rs"]
mod fake_graph;
#[path = "../tests/support/fake_idp.rs"]
mod fake_idp;

use std::sync::Arc;
use std::time::{Duration, Instant};

const DESK: &str = "support@contoso.test";
const CUSTOMER: &str = "customer@example.org";

fn mail(n: usize, tag: &str) -> Vec<u8> {
    format!(
        "From: Customer {n} <customer{n}@example.org>\r\nTo: {DESK}\r\n\
         Subject: {tag} printer {n} is broken\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n\
         Message-ID: <{tag}.{n}@example.org>\r\n\r\nPrinter {n} prints nothing at all since this morning; \
         the display shows error 0x{n:04x}.\r\n"
    )
    .into_bytes()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let k = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[k.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args
        .next()
        .expect("usage: graph_bench TICKETD [N] [SINGLES]");
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    let singles: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);

    let idp = Arc::new(fake_idp::FakeIdp::start(fake_idp::IdpConfig::default()).await);
    let check = idp.clone();
    let graph = fake_graph::FakeGraph::start(move |t| check.is_active(t)).await;
    graph.add_mailbox(DESK);
    graph.add_mailbox(CUSTOMER);
    graph.deliver_sent(CUSTOMER, DESK);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    let client_secret = fake_idp::IdpConfig::default().client_secret.unwrap();
    std::fs::write(&secret, format!("{client_secret}\n")).unwrap();
    let config = dir.path().join("ticketd.toml");
    std::fs::write(
        &config,
        format!(
            "[desk]\naddresses = [\"{DESK}\"]\nlanguage = \"en\"\n[http]\nlisten = \"\"\n\
             [outbound]\ntransport = \"graph\"\npoll_seconds = 0.2\n[outbound.graph]\nmailbox = \"desk\"\n\
             [[graph]]\nname = \"desk\"\nmailbox = \"{DESK}\"\npoll_seconds = 1\nbase_url = \"{}\"\n\
             [graph.oauth]\nprovider = \"generic\"\nclient_id = \"ticketd-test-client\"\n\
             client_secret_file = \"{}\"\nflow = \"client_credentials\"\ntoken_url = \"{}\"\n\
             scope = \"https://graph.microsoft.com/.default\"\n",
            graph.base_url(),
            secret.display(),
            idp.token_url()
        ),
    )
    .unwrap();
    let mut daemon = std::process::Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("run")
        .env("TICKETD_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start ticketd run");
    let wait = |cond: &dyn Fn() -> bool, secs: u64, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond() {
            if Instant::now() > deadline {
                eprintln!("{what}: not within {secs} s");
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    };
    let mut ok = wait(&|| graph.count("delta") >= 1, 30, "first delta round");

    // 1. Burst.
    let t0 = Instant::now();
    for k in 0..n {
        graph.deliver(DESK, mail(k, "burst"));
    }
    ok &= wait(
        &|| graph.folder_count(DESK, "Processed") >= n,
        600,
        "burst stored",
    );
    let burst = t0.elapsed();
    // The first message stored: its wait from delivery to its move.
    let first_move = graph.delivery_to_move().into_iter().min();
    let spread = burst.saturating_sub(first_move.unwrap_or_default());
    println!(
        "GRAPH_RESULT burst_mails={n} burst_seconds={:.2} mails_per_s={:.0} first_stored_after_ms={} rate_first_to_last_per_s={:.0}",
        burst.as_secs_f64(),
        n as f64 / burst.as_secs_f64(),
        first_move.unwrap_or_default().as_millis(),
        n as f64 / spread.as_secs_f64().max(0.001)
    );
    ok &= graph.folder_count(DESK, "Inbox") == 0;

    // 2. sendMail → stored.
    let http = oauth2::reqwest::Client::new();
    let token_text = http
        .post(idp.token_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_id=ticketd-test-client&client_secret={client_secret}&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token: serde_json::Value = serde_json::from_str(&token_text).unwrap();
    let bearer = token["access_token"].as_str().unwrap().to_string();
    let before = graph.delivery_to_move().len();
    let mut lat = Vec::new();
    for k in 0..singles {
        let mut r = [0u8; 2];
        getrandom::fill(&mut r).unwrap();
        tokio::time::sleep(Duration::from_millis(
            200 + u64::from(u16::from_le_bytes(r)) % 1000,
        ))
        .await;
        use base64::Engine;
        let body = base64::engine::general_purpose::STANDARD.encode(mail(10_000 + k, "single"));
        let sent = Instant::now();
        let status = http
            .post(format!("{}/users/{CUSTOMER}/sendMail", graph.base_url()))
            .bearer_auth(&bearer)
            .header("content-type", "text/plain")
            .body(body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 202);
        let want = before + k + 1;
        ok &= wait(
            &|| graph.delivery_to_move().len() >= want,
            30,
            "single stored",
        );
        lat.push(sent.elapsed());
    }
    lat.sort();
    println!(
        "GRAPH_RESULT singles={singles} sendmail_to_stored_p50_ms={} p90_ms={} max_ms={} poll_seconds=1",
        pct(&lat, 0.5).as_millis(),
        pct(&lat, 0.9).as_millis(),
        lat.last().copied().unwrap_or_default().as_millis()
    );
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string())
        .status();
    let _ = daemon.wait();
    let db = format!(
        "sqlite://{}?mode=ro",
        dir.path().join("data/ticketd.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let (tickets,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tickets")
        .fetch_one(&pool)
        .await
        .unwrap();
    let want = (n + singles) as i64;
    println!("GRAPH_RESULT tickets={tickets} expected={want}");
    ok &= tickets == want;
    std::process::exit(if ok { 0 } else { 1 });
}
