//! Timers are rows: a monitoring recovery under a hold-down resolves its
//! ticket only when the hold-down passes without the problem coming back.
//! Real SQLite, the real intake, and the clock passed in.

use std::path::Path;
use ticketd::config::Config;
use ticketd::domain::Action;
use ticketd::keys::MacKey;
use ticketd::service::{Incoming, Intake};
use ticketd::store::Store;

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/alerts/nagios")
        .join(name);
    std::fs::read(p).unwrap()
}

/// The fixture with a Message-ID of its own, so that a second copy is a new
/// notification, not a duplicate delivery.
fn again(name: &str, n: u32) -> Vec<u8> {
    let text = String::from_utf8(fixture(name)).unwrap();
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        if line.to_ascii_lowercase().starts_with("message-id:") {
            out.push_str(&format!("Message-ID: <again-{n}-{name}@mon.example>\r\n"));
        } else {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

async fn desk(dir: &Path) -> (Intake, Store) {
    let cfg = Config::parse_str(
        "[alerts]\nrecovery_hold_minutes = 10\n",
        &dir.join("ticketd.toml"),
    )
    .unwrap();
    let store = Store::open_sqlite(&dir.join("t.db"), 2).await.unwrap();
    store.migrate().await.unwrap();
    (Intake::new(&cfg, MacKey(vec![7; 32])), store)
}

async fn take(
    intake: &Intake,
    store: &Store,
    raw: Vec<u8>,
    at: jiff::Timestamp,
) -> ticketd::service::Outcome {
    let mut r = intake
        .ingest_batch(
            store,
            &[Incoming {
                raw,
                source: "test".into(),
            }],
            at,
        )
        .await;
    r.pop().unwrap().unwrap()
}

async fn status(store: &Store, number: &str) -> String {
    store
        .show_ticket(number)
        .await
        .unwrap()
        .unwrap()
        .summary
        .status
}

#[tokio::test]
async fn a_recovery_resolves_only_after_its_hold_down() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk(dir.path()).await;
    let t0: jiff::Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
    let min = |m: i64| t0 + jiff::SignedDuration::from_mins(m);
    let ts = |t: jiff::Timestamp| ticketd::store::ts(t);

    let p = take(&intake, &store, fixture("01-service-problem.eml"), t0).await;
    assert_eq!(p.action, Action::Created);
    let n = p.ticket.unwrap().to_string();
    let r = take(&intake, &store, fixture("03-service-recovery.eml"), min(1)).await;
    assert_eq!(r.action, Action::Appended);
    assert!(r.reason.contains("after the hold-down"), "{}", r.reason);
    assert_ne!(
        status(&store, &n).await,
        "resolved",
        "held, not resolved yet"
    );
    assert_eq!(store.next_timer().await.unwrap(), Some(ts(min(11))));
    // Not due yet: nothing happens.
    assert!(store
        .fire_due_timers(&ts(min(10)))
        .await
        .unwrap()
        .is_empty());
    // Due: resolved, with a note.
    let fired = store.fire_due_timers(&ts(min(11))).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert!(fired[0].resolved);
    assert_eq!(status(&store, &n).await, "resolved");
    let view = store.show_ticket(&n).await.unwrap().unwrap();
    assert!(
        view.articles.iter().any(|a| a.body.contains("hold-down")),
        "{:?}",
        view.articles
    );
    assert_eq!(store.next_timer().await.unwrap(), None, "fired once");
}

#[tokio::test]
async fn a_problem_back_within_the_hold_down_keeps_the_ticket_open() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk(dir.path()).await;
    let t0: jiff::Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
    let min = |m: i64| t0 + jiff::SignedDuration::from_mins(m);

    let p = take(&intake, &store, fixture("01-service-problem.eml"), t0).await;
    let n = p.ticket.unwrap().to_string();
    take(&intake, &store, fixture("03-service-recovery.eml"), min(1)).await;
    let back = take(&intake, &store, again("01-service-problem.eml", 1), min(5)).await;
    assert_eq!(back.action, Action::Appended);
    assert!(back.reason.contains("stays open"), "{}", back.reason);
    assert_eq!(
        back.ticket.as_ref().map(|t| t.to_string()),
        Some(n.clone()),
        "same ticket"
    );
    let fired = store
        .fire_due_timers(&ticketd::store::ts(min(30)))
        .await
        .unwrap();
    assert_eq!(fired.len(), 1);
    assert!(
        !fired[0].resolved,
        "the problem came back: the timer lapses"
    );
    assert_ne!(status(&store, &n).await, "resolved");
    // The next recovery holds again, and then resolves.
    take(
        &intake,
        &store,
        again("03-service-recovery.eml", 2),
        min(31),
    )
    .await;
    let fired = store
        .fire_due_timers(&ticketd::store::ts(min(41)))
        .await
        .unwrap();
    assert!(fired[0].resolved);
    assert_eq!(status(&store, &n).await, "resolved");
}
