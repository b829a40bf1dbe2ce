//! Monitoring incidents over time: a recovery under a hold-down resolves
//! its ticket only when the hold-down passes without the problem coming
//! back (timers are rows); a service's problems join its DOWN host's
//! ticket. Real SQLite, the real intake, and the clock passed in.

use std::path::Path;
use ticketd::config::Config;
use ticketd::domain::Action;
use ticketd::keys::MacKey;
use ticketd::service::{FireTimers as _, Incoming, Intake};
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
    desk_with(dir, "[alerts]\nrecovery_hold_minutes = 10\n").await
}

async fn desk_with(dir: &Path, config: &str) -> (Intake, Store) {
    let cfg = Config::parse_str(config, &dir.join("ticketd.toml")).unwrap();
    let store = Store::open_sqlite(&dir.join("t.db"), 2).await.unwrap();
    store.migrate().await.unwrap();
    // The organisation owning the fixtures' host wants status mails.
    let customers = dir.join("customers");
    std::fs::create_dir_all(&customers).unwrap();
    std::fs::write(
        customers.join("c.toml"),
        "[[organisation]]\nid = \"webshop\"\nname = \"Webshop\"\nhosts = [\"web01\"]\nnotify_status = [\"ops@webshop.example\"]\n",
    )
    .unwrap();
    let intake = Intake::new(&cfg, MacKey(vec![7; 32]))
        .with_customers(customers)
        .unwrap();
    (intake, store)
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
                arrived: None,
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
        .fire_due_timers(min(10), &mut intake.hooks(min(10)))
        .await
        .unwrap()
        .is_empty());
    // Due: resolved, with a note.
    let fired = store
        .fire_due_timers(min(11), &mut intake.hooks(min(11)))
        .await
        .unwrap();
    assert_eq!(fired.len(), 1);
    assert!(fired[0].resolved);
    assert_eq!(status(&store, &n).await, "resolved");
    let view = store.show_ticket(&n).await.unwrap().unwrap();
    assert!(
        view.articles.iter().any(|a| a.body.contains("hold-down")),
        "{:?}",
        view.articles
    );
    // The organisation's status recipient is told, through the outbox.
    let status_mails: Vec<_> = store
        .list_outbox()
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.kind == "status")
        .collect();
    assert_eq!(status_mails.len(), 1, "{status_mails:?}");
    assert_eq!(status_mails[0].to, ["ops@webshop.example"]);
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
        .fire_due_timers(min(30), &mut intake.hooks(min(30)))
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
        .fire_due_timers(min(41), &mut intake.hooks(min(41)))
        .await
        .unwrap();
    assert!(fired[0].resolved);
    assert_eq!(status(&store, &n).await, "resolved");
}

/// The service problem fixture on the host of the host fixtures.
fn service_on_host(n: u32) -> Vec<u8> {
    String::from_utf8(again("01-service-problem.eml", n))
        .unwrap()
        .replace("web01", "web01.example.com")
        .into_bytes()
}

#[tokio::test]
async fn service_problems_join_the_ticket_of_their_down_host() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk_with(dir.path(), "").await;
    let t0: jiff::Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
    let min = |m: i64| t0 + jiff::SignedDuration::from_mins(m);

    let down = take(&intake, &store, fixture("06-host-down.eml"), t0).await;
    assert_eq!(down.action, Action::Created);
    let host_ticket = down.ticket.unwrap().to_string();
    let svc = take(&intake, &store, service_on_host(1), min(1)).await;
    assert_eq!(svc.action, Action::Appended, "{}", svc.reason);
    assert_eq!(svc.ticket.map(|t| t.to_string()), Some(host_ticket.clone()));
    assert!(
        svc.reason.contains("while its host is down"),
        "{}",
        svc.reason
    );
    // The host is back: a service problem now is an incident of its own.
    let up = take(&intake, &store, fixture("07-host-up.eml"), min(5)).await;
    assert_eq!(
        status(&store, &host_ticket).await,
        "resolved",
        "{}",
        up.reason
    );
    let own = take(&intake, &store, service_on_host(2), min(6)).await;
    assert_eq!(own.action, Action::Created, "{}", own.reason);
    assert_ne!(own.ticket.map(|t| t.to_string()), Some(host_ticket));
}

#[tokio::test]
async fn joining_the_host_ticket_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk_with(dir.path(), "[alerts]\njoin_host_down = false\n").await;
    let t0: jiff::Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
    take(&intake, &store, fixture("06-host-down.eml"), t0).await;
    let svc = take(&intake, &store, service_on_host(1), t0).await;
    assert_eq!(svc.action, Action::Created, "{}", svc.reason);
}
