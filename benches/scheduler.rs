//! The SLA scheduler's check against a desk with 100,000 open tickets.
//!
//! ```text
//! cargo bench --bench scheduler
//! ```
//!
//! Setup (not measured): a SQLite data directory with 100,000 open tickets,
//! each with its SLA columns set and four unfired reminder rows (50, 75,
//! 90, 100 % of a target, spread over the next 30 days — ticketd itself
//! keeps one pending row per ticket, so this is four times the real
//! load), plus 100,000 fired rows as the record of earlier reminders —
//! 500,000 timer rows in all.
//! Rows are written with SQL (the ingest path would take minutes); the
//! queries measured are the daemon's own:
//!
//! - `check/next_timer`: what the timer task asks every second (the next
//!   due instant) — an index lookup, target ≤ 50 ms;
//! - `check/fire_nothing_due`: a whole `fire_due_timers` call when nothing
//!   is due (transaction, due query, commit);
//! - `check/sla_status`: open tickets by SLA state and the 100 most urgent
//!   (the metrics scrape, `ticketd sla status` and the digest).
//!
//! The setup also checks with `EXPLAIN QUERY PLAN` that the due query
//! uses the `timers_due` index and does not scan the table.

use criterion::{criterion_group, criterion_main, Criterion};
use jiff::{SignedDuration, Timestamp};
use std::time::Duration;
use ticketd::config::Config;
use ticketd::keys::MacKey;
use ticketd::service::{FireTimers as _, Intake};
use ticketd::store::{ts, Store};

const TICKETS: i64 = 100_000;

async fn desk(dir: &std::path::Path) -> Store {
    let store = Store::open_sqlite(&dir.join("ticketd.db"), 2)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let now = Timestamp::now();
    let start = ts(now - SignedDuration::from_hours(1));
    // Recursive CTEs generate the rows inside SQLite.
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
         INSERT INTO tickets (id, number, subject, status, severity, requester, created_at, updated_at, sla_state, sla_due_at, sla_target)
         SELECT i, 'K' || (100000 + i), 'ticket ' || i, 'open', 1 + i % 4, 'c' || i || '@kunde.de', $2, $2,
                CASE WHEN i % 10 = 0 THEN 'paused' ELSE 'running' END,
                strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+' || (i % 43200) || ' minutes'), 'resolution'
         FROM n",
    )
    .bind(TICKETS)
    .bind(&start)
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1),
              p(pct) AS (VALUES (50), (75), (90), (100))
         INSERT INTO timers (kind, ticket_id, key, due_at, planned_at, audiences, created_at)
         SELECT 'sla-reminder', i, 's' || (1 + i % 4) || ':resolution:' || pct,
                strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+' || ((i % 43200) * pct / 100 + 1) || ' minutes'),
                strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+' || ((i % 43200) * pct / 100 + 1) || ' minutes'),
                'team', $2
         FROM n, p",
    )
    .bind(TICKETS)
    .bind(&start)
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
         INSERT INTO timers (kind, ticket_id, key, due_at, planned_at, audiences, created_at, fired_at, outcome)
         SELECT 'sla-reminder', i, 's' || (1 + i % 4) || ':first-response:50', $2, $2, 'team', $2, $2, 'sent: mail team@desk'
         FROM n",
    )
    .bind(TICKETS)
    .bind(&start)
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(store.pool()).await.unwrap();
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "EXPLAIN QUERY PLAN SELECT id, kind, ticket_id, key, planned_at FROM timers WHERE fired_at IS NULL AND due_at <= $1 ORDER BY due_at, id LIMIT 100",
    )
    .bind(ts(now))
    .fetch_all(store.pool())
    .await
    .unwrap();
    let plan: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
    assert!(
        plan.iter().any(|p| p.contains("timers_due"))
            && !plan.iter().any(|p| p.starts_with("SCAN timers")),
        "the due query must use the timers_due index: {plan:?}"
    );
    eprintln!(
        "scheduler bench: {TICKETS} open tickets, {} timer rows; due query plan: {plan:?}",
        TICKETS * 5
    );
    store
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(desk(dir.path()));
    let intake = Intake::new(&Config::default(), MacKey(vec![7; 32]));
    let mut g = c.benchmark_group("check");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("next_timer", |b| {
        b.iter(|| rt.block_on(store.next_timer()).unwrap())
    });
    g.bench_function("fire_nothing_due", |b| {
        b.iter(|| {
            let now = Timestamp::now();
            let fired = rt
                .block_on(store.fire_due_timers(now, &mut intake.hooks(now)))
                .unwrap();
            assert!(fired.is_empty());
        })
    });
    g.sample_size(20);
    g.bench_function("sla_status", |b| {
        b.iter(|| {
            rt.block_on(intake.sla_status(&store, Timestamp::now()))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(scheduler, benches);
criterion_main!(scheduler);
