//! How fast staff hear of a ticket in Discord, and how fast a command is
//! answered: the real serenity adapter against the fake Discord on
//! loopback (`tests/support/fake_discord.rs`), SQLite in a temp dir.
//!
//! - notify: a mail's commit → its "new ticket" post reaches the Discord
//!   API (p50/p99 over BENCH_CHAT_NOTIFY mails, one at a time);
//! - command: a staff member's `!t note …` in the thread reaches the
//!   gateway → ticketd's answer reaches the API (p50/p99);
//! - burst: BENCH_CHAT_BURST mails stored at once → every ticket's post
//!   and thread made (tickets per second).
//!
//! Run: `cargo bench --bench chat` (also step (c) of scripts/bench.sh).
//! Latencies are wall-clock on loopback: Discord's own latency (tens of
//! milliseconds from Europe) comes on top.

#[path = "../tests/support/discord_desk.rs"]
mod discord_desk;
#[path = "../tests/support/fake_discord.rs"]
mod fake_discord;

use discord_desk::*;
use std::time::{Duration, Instant};
use ticketd::service::Incoming;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "chat {what}: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        v.len(),
        quantile(&v, 0.5).as_secs_f64() * 1000.0,
        quantile(&v, 0.99).as_secs_f64() * 1000.0,
        v.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
}

/// Waits (spinning on the fake's record) until it holds `n` posts.
async fn posts_reach(d: &Desk, n: usize) -> Instant {
    let start = Instant::now();
    loop {
        if d.fake.posts().len() >= n {
            return Instant::now();
        }
        if start.elapsed() > Duration::from_secs(60) {
            panic!("only {} of {n} posts within 60 s", d.fake.posts().len());
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

async fn notify(d: &Desk, n: usize) {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let before = d.fake.posts().len();
        let raw = mail(
            "erika@kunde.example",
            &format!("Drucker {i} druckt nicht"),
            &format!("bench-n{i}@kunde.example"),
            "",
            "Seit heute früh.",
        );
        // What ingest_batch returns after is the commit.
        d.ingest(raw).await;
        let committed = Instant::now();
        let arrived = posts_reach(d, before + 1).await;
        lat.push(arrived - committed);
    }
    report("notify (commit → post)", lat);
}

async fn command(d: &Desk, n: usize) {
    let thread = d.fake.threads().last().expect("a thread").thread_id;
    d.known_thread(thread).await;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let before = d.fake.posts().len();
        let sent = Instant::now();
        d.fake
            .message_create(staff_says(thread, &format!("!t note Messung {i}")))
            .await;
        let answered = posts_reach(d, before + 1).await;
        lat.push(answered - sent);
    }
    report("command (gateway → answer)", lat);
}

async fn burst(d: &Desk, n: usize) {
    let before = d.fake.posts().len();
    let threads = d.fake.threads().len();
    let items: Vec<Incoming> = (0..n)
        .map(|i| Incoming {
            raw: mail(
                "it@kunde.example",
                &format!("Monitoring {i}"),
                &format!("bench-b{i}@kunde.example"),
                "",
                "Bitte prüfen.",
            ),
            source: "bench".into(),
            arrived: None,
        })
        .collect();
    let start = Instant::now();
    for chunk in items.chunks(100) {
        d.ingest_many(chunk).await;
    }
    let stored = start.elapsed();
    posts_reach(d, before + n).await;
    while d.fake.threads().len() < threads + n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let all = start.elapsed();
    println!(
        "chat burst: {n} tickets stored in {:.2} s, all posted with threads after {:.2} s = {:.0} tickets/s to Discord",
        stored.as_secs_f64(),
        all.as_secs_f64(),
        n as f64 / all.as_secs_f64()
    );
}

fn main() {
    // `cargo test --benches` runs this with --bench absent: do little then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "warn");
    }
    rt.block_on(async {
        let d = desk().await;
        let scale = |name, full| if quick { 5 } else { env(name, full) };
        notify(&d, scale("BENCH_CHAT_NOTIFY", 300)).await;
        command(&d, scale("BENCH_CHAT_COMMAND", 200)).await;
        burst(&d, scale("BENCH_CHAT_BURST", 1000)).await;
    });
}
