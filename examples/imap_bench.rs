//! The end-to-end IMAP benchmark: a real Dovecot (the test harness's
//! stack), `ticketd run` IDLE-ing on the support mailbox, and mail arriving.
//!
//! ```text
//! cargo run --release --example imap_bench -- TICKETD [N] [SINGLES]
//! ```
//!
//! 1. **Burst**: N mails (default 5,000, about 4 KB each, distinct senders)
//!    are appended to the support INBOX in chunks of 100 while the daemon
//!    runs. A mail counts as delivered when its chunk's APPEND completed,
//!    and as committed when its row is visible to a reader of the database
//!    (readers see only committed transactions), polled every 2 ms.
//!    Reports mails/s from the first APPEND to the last commit, and the
//!    latency per mail (p50, p99, max); then waits until every
//!    confirmation is queued.
//! 2. **Single mails at an idle daemon**: SINGLES times (default 200), one
//!    mail is appended after a pause of `IMAP_BENCH_PAUSE_MS` (default
//!    1,000 ms: the daemon has finished the one before and sits in IDLE),
//!    polled every 1 ms; p50, p99, max. Dovecot itself announces a new
//!    message to an IDLE client 500 ms after it arrived (its fixed
//!    notification delay), which is the floor of this figure.
//! 3. **The server's floor**: the same wait for a plain IMAP client in IDLE
//!    (10 times), i.e. Dovecot's own notification delay.
//! 4. **Peak RSS** of the daemon (VmHWM).
//!
//! Targets (issue 3): ≥ 1,000 mails/s, single-mail p99 ≤ 500 ms, peak RSS
//! ≤ 64 MB. Prints `IMAP_RESULT key=value …`; exits 1 when a check fails
//! (a mail not stored exactly once, confirmations missing).

#[path = "../tests/support/mailstack.rs"]
mod mailstack;

use mailstack::{MailStack, SUPPORT};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const PASSWORD_ENV: &str = "TICKETD_BENCH_IMAP_PASSWORD";

fn mail(i: usize, tag: &str) -> Vec<u8> {
    let sender = format!("customer{}@customer.test", i % 1000);
    let text = "Unser Drucker im zweiten Stock zeigt seit heute morgen einen Papierstau an, \
                obwohl kein Papier im Schacht ist. Wir haben das Geraet neu gestartet. ";
    let mut body = String::new();
    while body.len() < 3800 {
        body.push_str(text);
        body.push_str("\r\n");
    }
    format!(
        "From: Kunde {i} <{sender}>\r\nTo: {SUPPORT}\r\nSubject: Drucker {i} defekt\r\n\
         Message-ID: <{tag}-{i}@customer.test>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0100\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    )
    .into_bytes()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Message-IDs visible in the database with the id they have, from `after`.
async fn new_rows(
    db: &mut sqlx::SqliteConnection,
    after: i64,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT id, COALESCE(message_id, '') FROM messages WHERE id > $1 ORDER BY id")
            .bind(after)
            .fetch_all(&mut *db)
            .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

async fn count(db: &mut sqlx::SqliteConnection, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&mut *db)
        .await
        .unwrap_or(-1)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(bin) = args.first() else {
        eprintln!("usage: imap_bench TICKETD [N] [SINGLES]");
        return ExitCode::from(2);
    };
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5000);
    let singles: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    match run(Path::new(bin), n, singles).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imap_bench: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(bin: &Path, n: usize, singles: usize) -> Result<(), String> {
    let t = Instant::now();
    let stack = MailStack::start();
    eprintln!("mail stack up in {:?}", t.elapsed());
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data = dir.path().join("data");
    let config = dir.path().join("ticketd.toml");
    std::fs::write(
        &config,
        format!(
            "[desk]\naddresses = [\"{SUPPORT}\"]\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [outbound]\ntransport = \"file\"\n\
             [[imap]]\nname = \"support\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"plain\"\n\
             user = \"{SUPPORT}\"\npassword_env = \"{PASSWORD_ENV}\"\n",
            stack.imap_port()
        ),
    )
    .map_err(|e| e.to_string())?;
    stack.create_folder(SUPPORT, "INBOX").await;
    let mut daemon = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .arg("run")
        .env(PASSWORD_ENV, mailstack::PASSWORD)
        .env("TICKETD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let pid = daemon.id();
    let result = measure(&stack, &data, pid, n, singles).await;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let _ = daemon.wait();
    result
}

async fn measure(
    stack: &MailStack,
    data: &Path,
    pid: u32,
    n: usize,
    singles: usize,
) -> Result<(), String> {
    // The daemon is up and IDLE-ing once the cursor row exists (written
    // after its first, empty, round) — or after a few seconds.
    let db_path = data.join("ticketd.db");
    let start = Instant::now();
    let mut db = loop {
        if db_path.exists() {
            let opts = SqliteConnectOptions::new()
                .filename(&db_path)
                .read_only(true);
            if let Ok(c) = opts.connect().await {
                break c;
            }
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err("the daemon did not create its database".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 1. Burst.
    let mails: Vec<Vec<u8>> = (0..n).map(|i| mail(i, "burst")).collect();
    let bytes: usize = mails.iter().map(Vec::len).sum();
    eprintln!(
        "burst: {n} mails, {} KB on average",
        bytes / n.max(1) / 1024
    );
    let mut delivered: HashMap<String, Instant> = HashMap::new();
    let mut committed: HashMap<String, Instant> = HashMap::new();
    let t0 = Instant::now();
    let mut last_id = 0i64;
    {
        let appends = async {
            let mut times = Vec::new();
            for (k, chunk) in mails.chunks(100).enumerate() {
                stack.append_many(SUPPORT, "INBOX", chunk).await;
                let at = Instant::now();
                for i in 0..chunk.len() {
                    times.push((format!("burst-{}@customer.test", k * 100 + i), at));
                }
            }
            times
        };
        let polls = async {
            let deadline = Instant::now() + Duration::from_secs(600);
            while committed.len() < n && Instant::now() < deadline {
                match new_rows(&mut db, last_id).await {
                    Ok(rows) => {
                        let at = Instant::now();
                        for (id, mid) in rows {
                            last_id = id;
                            committed.entry(mid).or_insert(at);
                        }
                    }
                    Err(e) => eprintln!("poll: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        let (times, ()) = tokio::join!(appends, polls);
        delivered.extend(times);
    }
    let t_append_done = delivered.values().max().copied().unwrap_or(t0);
    let t_last = committed.values().max().copied().unwrap_or(t0);
    if committed.len() != n {
        return Err(format!("only {} of {n} mails stored", committed.len()));
    }
    let mut lat: Vec<Duration> = delivered
        .iter()
        .filter_map(|(id, d)| committed.get(id).map(|c| c.saturating_duration_since(*d)))
        .collect();
    lat.sort();
    let rate = n as f64 / t_last.duration_since(t0).as_secs_f64();
    println!(
        "burst: {n} mails appended in {:.2} s, all committed after {:.2} s = {rate:.0} mails/s; \
         latency delivery->commit p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        t_append_done.duration_since(t0).as_secs_f64(),
        t_last.duration_since(t0).as_secs_f64(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default())
    );
    let start = Instant::now();
    loop {
        let queued = count(
            &mut db,
            "SELECT COUNT(*) FROM outbox WHERE kind = 'confirmation'",
        )
        .await;
        if queued == n as i64 {
            println!(
                "burst: {n} confirmations queued {:.2} s after the last commit",
                start.elapsed().as_secs_f64()
            );
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err(format!("{queued} of {n} confirmations queued"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tickets = count(&mut db, "SELECT COUNT(*) FROM tickets").await;
    if tickets != n as i64 {
        return Err(format!("{tickets} tickets for {n} mails"));
    }
    let left = stack.count(SUPPORT, "INBOX").await;
    if left != 0 {
        // Moved after the commit: give the last batch a moment.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // 2. Single mails at an idle daemon: first let it deliver the burst's
    // confirmations.
    let start = Instant::now();
    while count(
        &mut db,
        "SELECT COUNT(*) FROM outbox WHERE status IN ('queued', 'sending')",
    )
    .await
        > 0
    {
        if start.elapsed() > Duration::from_secs(120) {
            return Err("the burst's confirmations were not delivered within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "burst: confirmations delivered (file transport) {:.2} s after the last commit",
        t_last.elapsed().as_secs_f64()
    );
    let pause = std::env::var("IMAP_BENCH_PAUSE_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000u64);
    let mut single = Vec::with_capacity(singles);
    for k in 0..singles {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let id = format!("single-{k}@customer.test");
        let raw = mail(k, "single");
        stack.append_many(SUPPORT, "INBOX", [raw]).await;
        let at = Instant::now();
        let deadline = at + Duration::from_secs(30);
        loop {
            let seen: Option<i64> =
                sqlx::query_scalar("SELECT id FROM messages WHERE message_id = $1")
                    .bind(&id)
                    .fetch_optional(&mut db)
                    .await
                    .map_err(|e| e.to_string())?;
            if seen.is_some() {
                single.push(at.elapsed());
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{id} not stored within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    single.sort();
    let rss = peak_rss_kb(pid).unwrap_or(0);

    // 3. The server's own share: how long Dovecot takes to tell an IDLE
    // client (a plain one, not ticketd) about an APPEND from elsewhere.
    stack.create_folder(SUPPORT, "Floor").await;
    let mut floor = Vec::new();
    for k in 0..10 {
        let mut s = stack.imap(SUPPORT).await;
        s.select("Floor").await.map_err(|e| e.to_string())?;
        let mut idle = s.idle();
        idle.init().await.map_err(|e| e.to_string())?;
        let (wait, _stop) = idle.wait_with_timeout(Duration::from_secs(30));
        let append = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stack
                .append_many(SUPPORT, "Floor", [mail(k, "floor")])
                .await;
            Instant::now()
        };
        let (r, at) = tokio::join!(wait, append);
        r.map_err(|e| e.to_string())?;
        floor.push(at.elapsed());
        drop(_stop);
        if let Ok(s) = idle.done().await {
            let mut s = s;
            let _ = s.logout().await;
        }
    }
    floor.sort();
    println!(
        "Dovecot's IDLE notification of an APPEND (plain IMAP client, 10 times): p50 {:.1} ms, max {:.1} ms",
        ms(percentile(&floor, 0.5)),
        ms(floor.last().copied().unwrap_or_default())
    );
    println!(
        "single mails at an idle daemon: {singles}, latency delivery->commit p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(&single, 0.5)),
        ms(percentile(&single, 0.99)),
        ms(single.last().copied().unwrap_or_default())
    );
    println!("peak RSS of ticketd run: {:.1} MB", rss as f64 / 1024.0);
    println!(
        "IMAP_RESULT mails_per_s={rate:.0} burst_p50_ms={:.1} burst_p99_ms={:.1} single_p50_ms={:.1} single_p99_ms={:.1} server_idle_delay_ms={:.1} peak_rss_mb={:.1}",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(percentile(&single, 0.5)),
        ms(percentile(&single, 0.99)),
        ms(percentile(&floor, 0.5)),
        rss as f64 / 1024.0
    );
    let _ = db.close().await;
    Ok(())
}
