//! SLA clocks over time with the example policies: reminders fire once to
//! their audiences through the outbox, a daemon that was down fires each
//! target's highest due stage once and marks it late, business-hours
//! reminders wait for the opening, a pause moves due times by the counted
//! time only, staff replies (command or mail) meet the first response, a
//! severity change recomputes from receipt, digests run on their cron
//! schedule. Real SQLite, the real intake, the clock passed in.

use jiff::{SignedDuration, Timestamp};
use std::path::Path;
use ticketd::config::Config;
use ticketd::domain::{Action, Severity, Status};
use ticketd::keys::MacKey;
use ticketd::service::{FireTimers as _, Incoming, Intake, StaffAction};
use ticketd::store::{ts, Store};

const CONFIG: &str = r#"
[desk]
addresses = ["support@desk.example"]
staff = ["@desk.example"]

[sla.audiences]
team = ["mail:team@desk.example", "chat:staff"]
lead = ["mail:lead@desk.example"]
oncall = ["mail:oncall@desk.example", "chat:oncall"]

[[sla.digest]]
name = "morning"
cron = "0 8 * * Mon-Fri"
to = ["team", "lead"]
"#;

const CUSTOMERS: &str = r#"
[[plan]]
name = "Basic"
[[plan]]
name = "Premium"

[[organisation]]
id = "prem"
name = "Premium GmbH"
plan = "Premium"
domains = ["prem.example"]

[[organisation]]
id = "basic"
name = "Basic KG"
plan = "Basic"
domains = ["basic.example"]
"#;

async fn desk(dir: &Path) -> (Intake, Store) {
    let cfg = Config::parse_str(CONFIG, &dir.join("ticketd.toml")).unwrap();
    cfg.validate(&dir.join("ticketd.toml")).unwrap();
    let store = Store::open_sqlite(&dir.join("t.db"), 2).await.unwrap();
    store.migrate().await.unwrap();
    let customers = dir.join("customers");
    std::fs::create_dir_all(&customers).unwrap();
    std::fs::write(customers.join("c.toml"), CUSTOMERS).unwrap();
    let intake = Intake::new(&cfg, MacKey(vec![7; 32]))
        .with_customers(customers)
        .unwrap();
    intake.verify().unwrap();
    (intake, store)
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn mins(t: Timestamp, m: i64) -> Timestamp {
    t + SignedDuration::from_mins(m)
}

async fn mail(intake: &Intake, store: &Store, raw: String, t: Timestamp) -> String {
    let mut r = intake
        .ingest_batch(
            store,
            &[Incoming {
                raw: raw.into_bytes(),
                source: "test".into(),
                arrived: None,
            }],
            t,
        )
        .await;
    let o = r.pop().unwrap().unwrap();
    assert!(
        matches!(o.action, Action::Created | Action::Appended),
        "{o:?}"
    );
    o.ticket.unwrap().to_string()
}

/// A malfunction report (severity 3 by the embedded rules).
fn question(from: &str, id: &str) -> String {
    format!(
        "From: {from}\r\nTo: support@desk.example\r\nSubject: Drucker defekt\r\nMessage-ID: <{id}>\r\n\r\nDer Drucker geht nicht.\r\n"
    )
}

async fn fire(intake: &Intake, store: &Store, t: Timestamp) -> Vec<ticketd::store::FiredTimer> {
    store
        .fire_due_timers(t, &mut intake.hooks(t))
        .await
        .unwrap()
}

/// The reminder mails queued so far: (recipient, subject).
async fn reminder_mails(store: &Store) -> Vec<(String, String)> {
    store
        .list_outbox()
        .await
        .unwrap()
        .into_iter()
        .filter(|o| o.kind == "reminder")
        .map(|o| (o.to.join(","), o.subject))
        .collect()
}

async fn chat_posts(store: &Store) -> Vec<(String, String)> {
    sqlx::query_as("SELECT channel, body FROM chat_outbox ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

async fn act(intake: &Intake, store: &Store, n: &str, a: StaffAction, t: Timestamp) {
    intake.act(store, n, &a, "cli:tester", t).await.unwrap();
}

async fn view(intake: &Intake, store: &Store, n: &str, t: Timestamp) -> ticketd::service::SlaView {
    intake.sla_view(store, n, t).await.unwrap().unwrap()
}

fn target<'a>(v: &'a ticketd::service::SlaView, name: &str) -> &'a ticketd::service::TargetView {
    v.targets
        .iter()
        .find(|t| t.target == name)
        .unwrap_or_else(|| panic!("no {name} in {v:?}"))
}

#[tokio::test]
async fn premium_critical_reminders_fire_once_and_a_reply_meets_the_first_response() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk(dir.path()).await;
    let t0 = at("2026-12-02T10:00:00Z"); // a Wednesday
    let n = mail(
        &intake,
        &store,
        question("kim@prem.example", "q1@prem.example"),
        t0,
    )
    .await;
    let v = view(&intake, &store, &n, t0).await;
    assert_eq!(v.policy.as_deref(), Some("Premium severity 3"), "{v:?}");
    // The severity goes up a minute later: due times from receipt, 30 min.
    act(
        &intake,
        &store,
        &n,
        StaffAction::Severity(Severity::Critical),
        mins(t0, 1),
    )
    .await;
    let v = view(&intake, &store, &n, mins(t0, 1)).await;
    assert_eq!(v.policy.as_deref(), Some("Premium severity 1"));
    assert_eq!(
        target(&v, "first-response").due.as_deref(),
        Some(ts(mins(t0, 30)).as_str())
    );
    assert_eq!(
        target(&v, "resolution").due.as_deref(),
        Some(ts(mins(t0, 240)).as_str())
    );

    assert!(fire(&intake, &store, mins(t0, 10)).await.is_empty());
    // 15 min: the 50 % stage of the first response, to the team (mail + chat).
    let fired = fire(&intake, &store, mins(t0, 16)).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(
        reminder_mails(&store).await,
        vec![(
            "team@desk.example".to_string(),
            format!("SLA 50 %: Reaktionszeit {n} (Schweregrad 1) – Drucker defekt")
        )]
    );
    let posts = chat_posts(&store).await;
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].0, "staff");
    let body: serde_json::Value = serde_json::from_str(&posts[0].1).unwrap();
    assert_eq!(body["ticket"], n.as_str());
    assert_eq!(body["percent"], 50);
    assert_eq!(body["target"], "first-response");
    // Fired once: asking again sends nothing.
    assert!(fire(&intake, &store, mins(t0, 17)).await.is_empty());
    assert_eq!(reminder_mails(&store).await.len(), 1);
    // A team member answers the reminder mail: that is no reply to the
    // customer (the reminder's Message-ID is a staff id, not a ticket id)
    // but a note on the ticket (issue 14, item 4).
    let reminder_id = store
        .list_outbox()
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.kind == "reminder")
        .unwrap()
        .message_id;
    let aside = format!(
        "From: tom@desk.example\r\nTo: support@desk.example\r\nSubject: Re: SLA 50 %\r\nIn-Reply-To: <{reminder_id}>\r\nMessage-ID: <aside@desk.example>\r\n\r\nWer macht das?\r\n"
    );
    assert_eq!(mail(&intake, &store, aside, mins(t0, 18)).await, n);
    assert!(!store
        .list_outbox()
        .await
        .unwrap()
        .iter()
        .any(|o| o.kind == "relay"));

    // A staff reply at 20 min meets the first response; its later stages
    // are gone, the update cycle (1 h) starts.
    act(
        &intake,
        &store,
        &n,
        StaffAction::Reply {
            text: "Wir sind dran.".into(),
            then_pending: false,
            cc: Vec::new(),
            staff_name: None,
        },
        mins(t0, 20),
    )
    .await;
    let v = view(&intake, &store, &n, mins(t0, 21)).await;
    assert_eq!(target(&v, "first-response").state, "met");
    assert_eq!(
        target(&v, "update").due.as_deref(),
        Some(ts(mins(t0, 80)).as_str())
    );
    assert!(v
        .reminders
        .iter()
        .all(|r| r.fired_at.is_some() || !r.key.contains("first-response")));
    // The 75 % first-response stage never comes.
    let fired = fire(&intake, &store, mins(t0, 25)).await;
    assert!(fired.is_empty(), "{fired:?}");
    // The reply went to the customer, threaded, written by a person.
    let reply = store
        .list_outbox()
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.kind == "reply")
        .unwrap();
    assert_eq!(reply.to, ["kim@prem.example"]);
    assert!(
        reply.raw.contains("In-Reply-To: <q1@prem.example>"),
        "{}",
        reply.raw
    );
    assert!(!reply.raw.contains("Auto-Submitted"), "{}", reply.raw);
    assert!(reply.raw.contains("Wir sind dran."));

    // Resolving stops every clock: nothing left to fire but the digest.
    act(
        &intake,
        &store,
        &n,
        StaffAction::Status(Status::Resolved),
        mins(t0, 30),
    )
    .await;
    let v = view(&intake, &store, &n, mins(t0, 31)).await;
    assert_eq!(target(&v, "resolution").state, "met");
    assert!(v.reminders.iter().all(|r| r.fired_at.is_some()), "{v:?}");
    let show = store.show_ticket(&n).await.unwrap().unwrap();
    let kinds: Vec<&str> = show.events.iter().map(|e| e.kind.as_str()).collect();
    for k in [
        "created",
        "severity",
        "sla-reminder",
        "staff-reply",
        "resolved",
    ] {
        assert!(kinds.contains(&k), "{k} missing in {kinds:?}");
    }
    assert!(show
        .events
        .iter()
        .any(|e| e.kind == "severity" && e.detail.contains("cli:tester")));
}

#[tokio::test]
async fn after_a_day_down_each_target_fires_its_breach_once_marked_late() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk(dir.path()).await;
    let t0 = at("2026-12-02T10:00:00Z");
    let n = mail(
        &intake,
        &store,
        question("kim@prem.example", "q2@prem.example"),
        t0,
    )
    .await;
    act(
        &intake,
        &store,
        &n,
        StaffAction::Severity(Severity::Production),
        t0,
    )
    .await;
    // Premium severity 2: first response 1 h, resolution 8 h. Nobody looks
    // for a day: every stage of both targets is due.
    let day = mins(t0, 24 * 60);
    let fired = fire(&intake, &store, day).await;
    let sent: Vec<_> = fired.iter().filter(|f| f.queued).collect();
    assert_eq!(sent.len(), 2, "one breach per target: {fired:?}");
    let mails = reminder_mails(&store).await;
    // Premium severity 2's breach goes to team, lead and on-call: one mail
    // each, per target.
    assert_eq!(mails.len(), 6, "{mails:?}");
    assert!(
        mails.iter().all(|(_, s)| s.starts_with("SLA verletzt")),
        "{mails:?}"
    );
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT key, outcome FROM timers WHERE kind = 'sla-reminder' AND fired_at IS NOT NULL ORDER BY key",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    for (key, outcome) in &rows {
        if key.ends_with(":100") {
            assert!(outcome.starts_with("sent late"), "{key}: {outcome}");
        } else {
            assert!(outcome.starts_with("superseded"), "{key}: {outcome}");
        }
    }
    // The breaches, and the one pending row (first response at 50 %) that
    // fell due: superseded. The stages between never had a row.
    assert_eq!(rows.len(), 3, "{rows:?}");
    // A second round, a restart: nothing again.
    assert!(fire(&intake, &store, mins(day, 1)).await.is_empty());
    assert_eq!(reminder_mails(&store).await.len(), 6);
    let stats = store.sla_stats().await.unwrap();
    assert_eq!(stats.breaches, 2);
    assert_eq!(
        stats.open_by_state,
        vec![("breached".to_string(), 1)],
        "{stats:?}"
    );
    let raw = store
        .list_outbox()
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.kind == "reminder")
        .unwrap()
        .raw;
    assert!(raw.contains("Diese Erinnerung kommt versp"), "{raw}");
}

#[tokio::test]
async fn business_hours_reminders_wait_for_the_opening_and_pauses_count_open_time_only() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk(dir.path()).await;
    // Friday 4 December 2026, 16:00 CET. Basic severity 3: 12 business
    // hours on Mon–Fri 09:00–18:00 = Friday 2 h + Monday 9 h + Tuesday 1 h.
    let t0 = at("2026-12-04T15:00:00Z");
    let n = mail(
        &intake,
        &store,
        question("bo@basic.example", "q3@basic.example"),
        t0,
    )
    .await;
    let v = view(&intake, &store, &n, t0).await;
    assert_eq!(v.policy.as_deref(), Some("Basic severity 3"));
    let fr = target(&v, "first-response");
    assert_eq!(
        fr.due.as_deref(),
        Some("2026-12-08T09:00:00.000Z"),
        "{fr:?}"
    );
    assert!(fr.explain.iter().any(|l| l.contains("closed")), "{fr:?}");
    // 50 % = 6 business hours: Monday 13:00 CET.
    let planned = |key: &str| {
        v.reminders
            .iter()
            .find(|r| r.key == key)
            .map(|r| r.due_at.clone())
            .unwrap_or_else(|| panic!("no {key} in {:?}", v.reminders))
    };
    assert_eq!(planned("s3:first-response:50"), "2026-12-07T12:00:00.000Z");
    // Nothing fires over the weekend.
    assert!(fire(&intake, &store, at("2026-12-06T12:00:00Z"))
        .await
        .is_empty());
    // The daemon comes back on Tuesday at 02:00 CET: 50, 75 and 90 % are
    // due, but it is night: they wait for 09:00.
    let night = at("2026-12-08T01:00:00Z");
    let fired = fire(&intake, &store, night).await;
    assert!(fired.iter().all(|f| !f.queued), "{fired:?}");
    assert!(reminder_mails(&store).await.is_empty());
    // …and the timer task is not asked again before then.
    let next = store.next_timer().await.unwrap().unwrap();
    assert_eq!(
        next, "2026-12-08T08:00:00.000Z",
        "the opening, Tuesday 09:00 CET"
    );
    // At 09:00 they go out: the 90 % stage alone (to team and lead), the
    // 50 and 75 % stages are superseded by it.
    let fired = fire(&intake, &store, at("2026-12-08T08:00:01Z")).await;
    let mails = reminder_mails(&store).await;
    assert_eq!(mails.len(), 2, "team and lead: {mails:?} {fired:?}");
    assert!(
        mails
            .iter()
            .all(|(_, s)| s.starts_with("SLA 90 %: Reaktionszeit")),
        "{mails:?}"
    );
    // 10:00 CET: the breach.
    fire(&intake, &store, at("2026-12-08T09:00:00Z")).await;
    let mails = reminder_mails(&store).await;
    assert_eq!(mails.len(), 4, "{mails:?}");
    assert!(mails[2..]
        .iter()
        .all(|(_, s)| s.starts_with("SLA verletzt: Reaktionszeit")));

    // A second Basic ticket: waiting for the customer from Friday 17:00 to
    // Monday 10:00 holds the resolution clock for 2 open hours only.
    let t1 = at("2026-12-04T15:00:00Z");
    let m = mail(
        &intake,
        &store,
        question("bo@basic.example", "q4@basic.example"),
        t1,
    )
    .await;
    let before = target(&view(&intake, &store, &m, t1).await, "resolution")
        .due
        .clone()
        .unwrap();
    act(
        &intake,
        &store,
        &m,
        StaffAction::Status(Status::Pending),
        at("2026-12-04T16:00:00Z"),
    )
    .await;
    let v = view(&intake, &store, &m, at("2026-12-05T12:00:00Z")).await;
    assert_eq!(v.state, "paused");
    assert_eq!(target(&v, "resolution").state, "paused");
    // The customer answers on Monday at 10:00 CET, by mail.
    let answer = "From: bo@basic.example\r\nTo: support@desk.example\r\nSubject: Re: Drucker defekt\r\nIn-Reply-To: <q4@basic.example>\r\nMessage-ID: <a4@basic.example>\r\n\r\nHier die Details.\r\n".to_string();
    assert_eq!(
        mail(&intake, &store, answer, at("2026-12-07T09:00:00Z")).await,
        m
    );
    let v = view(&intake, &store, &m, at("2026-12-07T09:00:00Z")).await;
    assert_eq!(target(&v, "resolution").state, "running");
    let after = target(&v, "resolution").due.clone().unwrap();
    let shift = after
        .parse::<Timestamp>()
        .unwrap()
        .duration_since(before.parse().unwrap());
    // 2 open hours (Fri 17–18, Mon 9–10) of pause; across the night the
    // due time moves by open time only — onto a later business day.
    let cal = ticketd::sla::policy::Policies::embedded();
    let business = cal.calendar("business").unwrap();
    assert_eq!(
        business.between(before.parse().unwrap(), after.parse().unwrap()),
        SignedDuration::from_hours(2),
        "shift {shift:?}"
    );
    let show = store.show_ticket(&m).await.unwrap().unwrap();
    assert!(
        show.events.iter().any(|e| e.kind == "resumed"),
        "{:?}",
        show.events
    );
    assert_eq!(show.summary.status, "open");
}

#[tokio::test]
async fn a_staff_mail_meets_the_first_response_and_reaches_the_requester() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk(dir.path()).await;
    let t0 = at("2026-12-02T10:00:00Z");
    let n = mail(
        &intake,
        &store,
        question("kim@prem.example", "q5@prem.example"),
        t0,
    )
    .await;
    let staff = format!(
        "From: Tom <tom@desk.example>\r\nTo: support@desk.example\r\nSubject: Re: [Ticket#{n}] Drucker defekt\r\nMessage-ID: <s5@desk.example>\r\n\r\nDie Rechnung ist korrigiert.\r\n"
    );
    assert_eq!(mail(&intake, &store, staff, mins(t0, 5)).await, n);
    let v = view(&intake, &store, &n, mins(t0, 6)).await;
    assert_eq!(target(&v, "first-response").state, "met", "{v:?}");
    let relay = store
        .list_outbox()
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.kind == "relay")
        .expect("relayed to the requester");
    assert_eq!(relay.to, ["kim@prem.example"]);
    assert!(relay.raw.contains("Die Rechnung ist korrigiert."));
    assert!(!relay.raw.contains("Auto-Submitted"), "{}", relay.raw);
    assert!(
        relay.subject.contains(&format!("[Ticket#{n}]")),
        "{}",
        relay.subject
    );
    assert!(!relay.subject.contains("Re: Re:"), "{}", relay.subject);
}

#[tokio::test]
async fn the_digest_runs_on_workdays_and_once_after_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk(dir.path()).await;
    let fri = at("2026-12-04T08:00:00Z"); // Friday 09:00 CET
    mail(
        &intake,
        &store,
        question("kim@prem.example", "q6@prem.example"),
        fri,
    )
    .await;
    intake.plan_digests(&store, fri).await.unwrap();
    let due: Vec<String> =
        sqlx::query_scalar("SELECT due_at FROM timers WHERE kind = 'digest' AND fired_at IS NULL")
            .fetch_all(store.pool())
            .await
            .unwrap();
    // Next workday 08:00 CET: Monday 07:00Z.
    assert_eq!(due, ["2026-12-07T07:00:00.000Z"]);
    // Planning again (a restart, SIGHUP) keeps the one row.
    intake.plan_digests(&store, mins(fri, 1)).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM timers WHERE kind = 'digest'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
    // The daemon was down from Sunday to Thursday noon: one digest, late.
    let thu = at("2026-12-10T11:00:00Z");
    intake.plan_digests(&store, thu).await.unwrap();
    let fired = fire(&intake, &store, thu).await;
    let digests: Vec<_> = fired.iter().filter(|f| f.kind == "digest").collect();
    let rows: Vec<(String, String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT key, due_at, fired_at, outcome FROM timers WHERE kind = 'digest'")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(digests.len(), 1, "{fired:?} {rows:?}");
    let mails: Vec<_> = store
        .list_outbox()
        .await
        .unwrap()
        .into_iter()
        .filter(|o| o.kind == "digest")
        .collect();
    assert_eq!(mails.len(), 2, "team and lead");
    assert!(
        mails[0].subject.contains("1 offene Tickets"),
        "{}",
        mails[0].subject
    );
    assert!(mails[0].raw.contains("(versp"), "{}", mails[0].raw);
    let next: Vec<String> =
        sqlx::query_scalar("SELECT due_at FROM timers WHERE kind = 'digest' AND fired_at IS NULL")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(next, ["2026-12-11T07:00:00.000Z"], "Friday 08:00 CET");
    let digest_posts = chat_posts(&store)
        .await
        .into_iter()
        .filter(|(c, b)| c == "staff" && b.contains("\"kind\":\"digest\""))
        .count();
    assert_eq!(digest_posts, 1);
}

#[tokio::test]
async fn the_due_query_reads_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = desk(dir.path()).await;
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "EXPLAIN QUERY PLAN SELECT id, kind, ticket_id, key, planned_at FROM timers WHERE fired_at IS NULL AND due_at <= $1 ORDER BY due_at, id LIMIT 100",
    )
    .bind("2026-12-02T00:00:00.000Z")
    .fetch_all(store.pool())
    .await
    .unwrap();
    let plan: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
    assert!(
        plan.iter().any(|p| p.contains("USING INDEX timers_due")),
        "{plan:?}"
    );
}

#[tokio::test]
async fn a_stage_due_at_closing_time_goes_out_then_not_next_morning() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk(dir.path()).await;
    // Wednesday 09:00 CET; Basic severity 3: 75 % of 12 business hours is
    // 9 h, exactly the closing at 18:00 CET.
    let t0 = at("2026-12-02T08:00:00Z");
    mail(
        &intake,
        &store,
        question("bo@basic.example", "q7@basic.example"),
        t0,
    )
    .await;
    fire(&intake, &store, at("2026-12-02T14:00:01Z")).await; // 50 % at 15:00 CET
    assert_eq!(reminder_mails(&store).await.len(), 1);
    let fired = fire(&intake, &store, at("2026-12-02T17:00:00.500Z")).await;
    let mails = reminder_mails(&store).await;
    assert_eq!(mails.len(), 2, "{mails:?} {fired:?}");
    assert!(mails[1].1.starts_with("SLA 75 %"), "{mails:?}");
}
