//! Where ticketd's mails on a ticket go and how answers to them are filed
//! (issue 14, items 2, 3, 4 and 6): every mail to the customer goes to the
//! address the customer asked answers to go to, carries the ticket's thread
//! and tag; an answer to a mail of ours to staff never opens a ticket; a
//! closed ticket stays closed. Real SQLite, the real intake, the clock
//! passed in.

use jiff::{SignedDuration, Timestamp};
use std::path::Path;
use ticketd::config::Config;
use ticketd::domain::{Action, Severity, Status};
use ticketd::keys::MacKey;
use ticketd::service::{FireTimers as _, Incoming, Intake, Outcome, StaffAction};
use ticketd::store::{OutboxView, Store};

const CONFIG: &str = r#"
[desk]
addresses = ["support@desk.example"]
staff = ["@desk.example"]

[sla.audiences]
team = ["mail:team@desk.example"]

[[sla.digest]]
name = "morning"
cron = "0 8 * * Mon-Fri"
to = ["team"]
"#;

const CUSTOMERS: &str = r#"
[[plan]]
name = "Premium"

[[organisation]]
id = "prem"
name = "Premium GmbH"
plan = "Premium"
domains = ["prem.example"]

[[organisation]]
id = "watch"
name = "Watch AG"
plan = "Premium"
domains = ["watch.example"]
notify_new = ["it@watch.example"]
notify_status = ["it@watch.example"]

[[plan]]
name = "Mini"
cases_per_quarter = 1

[[organisation]]
id = "mini"
name = "Mini KG"
plan = "Mini"
domains = ["mini.example"]
account_manager = "am@desk.example"
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

/// Ingests one raw mail at `t`.
async fn ingest(intake: &Intake, store: &Store, raw: String, t: Timestamp) -> Outcome {
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
    r.pop().unwrap().unwrap()
}

/// Ingests a mail that must land on a ticket; its number.
async fn on_ticket(intake: &Intake, store: &Store, raw: String, t: Timestamp) -> String {
    let o = ingest(intake, store, raw, t).await;
    assert!(
        matches!(o.action, Action::Created | Action::Appended),
        "{o:?}"
    );
    o.ticket.unwrap().to_string()
}

async fn act(intake: &Intake, store: &Store, n: &str, a: StaffAction, t: Timestamp) {
    intake.act(store, n, &a, "cli:tester", t).await.unwrap();
}

async fn outbox(store: &Store) -> Vec<OutboxView> {
    store.list_outbox().await.unwrap()
}

async fn outbox_of(store: &Store, kind: &str) -> Vec<OutboxView> {
    outbox(store)
        .await
        .into_iter()
        .filter(|o| o.kind == kind)
        .collect()
}

/// A header's value in a raw mail (unfolded), if present.
fn header(raw: &str, name: &str) -> Option<String> {
    let head = raw.split("\r\n\r\n").next().unwrap_or("");
    let mut out: Option<String> = None;
    for line in head.split("\r\n") {
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(v) = out.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if out.is_some() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            if n.eq_ignore_ascii_case(name) {
                out = Some(v.trim().to_string());
            }
        }
    }
    out
}

fn tickets_count(list: &[ticketd::store::TicketSummary]) -> usize {
    list.len()
}

#[tokio::test]
async fn staff_replies_and_relayed_staff_mail_go_to_the_customers_reply_to() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk(dir.path()).await;
    let t0 = at("2026-12-02T10:00:00Z");
    let n = on_ticket(
        &intake,
        &store,
        "From: Kim <kim@prem.example>\r\nReply-To: IT <it-desk@prem.example>\r\nTo: support@desk.example\r\nSubject: Drucker defekt\r\nMessage-ID: <r1@prem.example>\r\n\r\nDer Drucker geht nicht.\r\n".into(),
        t0,
    )
    .await;
    // The confirmation honoured Reply-To already.
    assert_eq!(
        outbox_of(&store, "confirmation").await[0].to,
        ["it-desk@prem.example"]
    );

    // `tickets reply`.
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
        mins(t0, 5),
    )
    .await;
    let replies = outbox_of(&store, "reply").await;
    assert_eq!(replies.len(), 1);
    assert_eq!(
        replies[0].to,
        ["it-desk@prem.example"],
        "{}",
        replies[0].raw
    );

    // A staff member's mail on the ticket, relayed.
    let staff = format!(
        "From: Tom <tom@desk.example>\r\nTo: support@desk.example\r\nSubject: Re: [Ticket#{n}] Drucker defekt\r\nMessage-ID: <s1@desk.example>\r\n\r\nToner ist bestellt.\r\n"
    );
    assert_eq!(on_ticket(&intake, &store, staff, mins(t0, 10)).await, n);
    let relays = outbox_of(&store, "relay").await;
    assert_eq!(relays.len(), 1);
    assert_eq!(relays[0].to, ["it-desk@prem.example"]);

    // The requester's next mail names another Reply-To: answers follow it.
    let again = format!(
        "From: Kim <kim@prem.example>\r\nReply-To: kim.mobil@prem.example\r\nTo: support@desk.example\r\nSubject: Re: [Ticket#{n}] Drucker defekt\r\nMessage-ID: <r2@prem.example>\r\n\r\nIch bin unterwegs.\r\n"
    );
    assert_eq!(on_ticket(&intake, &store, again, mins(t0, 15)).await, n);
    act(
        &intake,
        &store,
        &n,
        StaffAction::Reply {
            text: "Gut.".into(),
            then_pending: false,
            cc: Vec::new(),
            staff_name: None,
        },
        mins(t0, 20),
    )
    .await;
    assert_eq!(
        outbox_of(&store, "reply").await[1].to,
        ["kim.mobil@prem.example"]
    );

    // Someone else of the customer's writing with a Reply-To changes nothing.
    let colleague = format!(
        "From: bob@prem.example\r\nReply-To: bob.privat@prem.example\r\nTo: support@desk.example\r\nSubject: Re: [Ticket#{n}] Drucker defekt\r\nMessage-ID: <r3@prem.example>\r\n\r\nBei mir auch.\r\n"
    );
    assert_eq!(on_ticket(&intake, &store, colleague, mins(t0, 25)).await, n);
    // The requester writes without Reply-To: answers go to the requester.
    let plain = format!(
        "From: Kim <kim@prem.example>\r\nTo: support@desk.example\r\nSubject: Re: [Ticket#{n}] Drucker defekt\r\nMessage-ID: <r4@prem.example>\r\n\r\nWieder im Büro.\r\n"
    );
    assert_eq!(on_ticket(&intake, &store, plain, mins(t0, 30)).await, n);
    act(
        &intake,
        &store,
        &n,
        StaffAction::Reply {
            text: "Schön.".into(),
            then_pending: false,
            cc: Vec::new(),
            staff_name: None,
        },
        mins(t0, 35),
    )
    .await;
    assert_eq!(outbox_of(&store, "reply").await[2].to, ["kim@prem.example"]);
}

#[tokio::test]
async fn a_relayed_staff_mail_without_threading_headers_threads_onto_the_customers_mail() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk(dir.path()).await;
    let t0 = at("2026-12-02T10:00:00Z");
    let n = on_ticket(
        &intake,
        &store,
        "From: kim@prem.example\r\nTo: support@desk.example\r\nSubject: Drucker defekt\r\nMessage-ID: <c1@prem.example>\r\n\r\nDer Drucker geht nicht.\r\n".into(),
        t0,
    )
    .await;
    let confirmation_id = outbox_of(&store, "confirmation").await[0]
        .message_id
        .clone();
    // The staff member's own mail has no In-Reply-To or References: only
    // the tag.
    let staff = format!(
        "From: Tom <tom@desk.example>\r\nTo: support@desk.example\r\nSubject: [Ticket#{n}] Drucker\r\nMessage-ID: <s2@desk.example>\r\n\r\nToner ist bestellt.\r\n"
    );
    assert_eq!(on_ticket(&intake, &store, staff, mins(t0, 5)).await, n);
    let relay = &outbox_of(&store, "relay").await[0];
    assert_eq!(
        header(&relay.raw, "In-Reply-To").as_deref(),
        Some("<c1@prem.example>"),
        "{}",
        relay.raw
    );
    let refs = header(&relay.raw, "References").unwrap_or_default();
    assert!(refs.contains("<c1@prem.example>"), "{refs}");
    assert!(refs.contains(&format!("<{confirmation_id}>")), "{refs}");
    assert!(
        !refs.contains("s2@desk.example"),
        "the staff mail is internal: {refs}"
    );
    assert!(
        relay.subject.contains(&format!("[Ticket#{n}]")),
        "{}",
        relay.subject
    );

    // A second customer mail: the next relay answers that one.
    let again = format!(
        "From: kim@prem.example\r\nTo: support@desk.example\r\nSubject: Re: [Ticket#{n}] Drucker defekt\r\nMessage-ID: <c2@prem.example>\r\nIn-Reply-To: <{confirmation_id}>\r\n\r\nDanke.\r\n"
    );
    assert_eq!(on_ticket(&intake, &store, again, mins(t0, 10)).await, n);
    let staff = format!(
        "From: Tom <tom@desk.example>\r\nTo: support@desk.example\r\nSubject: [Ticket#{n}] Drucker\r\nMessage-ID: <s3@desk.example>\r\n\r\nToner ist da.\r\n"
    );
    assert_eq!(on_ticket(&intake, &store, staff, mins(t0, 15)).await, n);
    let relay = &outbox_of(&store, "relay").await[1];
    assert_eq!(
        header(&relay.raw, "In-Reply-To").as_deref(),
        Some("<c2@prem.example>")
    );
    let refs = header(&relay.raw, "References").unwrap_or_default();
    for id in [
        "c1@prem.example",
        "c2@prem.example",
        confirmation_id.as_str(),
    ] {
        assert!(refs.contains(&format!("<{id}>")), "{id} in {refs}");
    }
    // Our earlier relay is in the thread, the staff members' own mails not.
    let first_relay = outbox_of(&store, "relay").await[0].message_id.clone();
    assert!(refs.contains(&format!("<{first_relay}>")), "{refs}");
    for internal in ["s2@desk.example", "s3@desk.example"] {
        assert!(!refs.contains(internal), "{internal} in {refs}");
    }
}

#[tokio::test]
async fn an_answer_to_an_sla_reminder_is_a_note_on_its_ticket_not_a_new_ticket() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk(dir.path()).await;
    let t0 = at("2026-12-02T10:00:00Z"); // a Wednesday
    let n = on_ticket(
        &intake,
        &store,
        "From: kim@prem.example\r\nTo: support@desk.example\r\nSubject: Drucker defekt\r\nMessage-ID: <q1@prem.example>\r\n\r\nDer Drucker geht nicht.\r\n".into(),
        t0,
    )
    .await;
    act(
        &intake,
        &store,
        &n,
        StaffAction::Severity(Severity::Critical),
        mins(t0, 1),
    )
    .await;
    let fired = store
        .fire_due_timers(mins(t0, 16), &mut intake.hooks(mins(t0, 16)))
        .await
        .unwrap();
    assert_eq!(fired.len(), 1, "{fired:?}");
    let reminder = outbox_of(&store, "reminder").await.remove(0);
    assert!(
        reminder.subject.starts_with("SLA 50 %"),
        "{}",
        reminder.subject
    );
    let before = outbox(&store).await.len();

    // The team member answers the reminder as mail clients do.
    let answer = format!(
        "From: Team <team@desk.example>\r\nTo: support@desk.example\r\nSubject: Re: {}\r\nMessage-ID: <a1@desk.example>\r\nIn-Reply-To: <{}>\r\nReferences: <{}>\r\n\r\nIch übernehme das, bin in 10 Minuten vor Ort.\r\n",
        reminder.subject, reminder.message_id, reminder.message_id
    );
    let o = ingest(&intake, &store, answer, mins(t0, 18)).await;
    assert_eq!(o.action, Action::Appended, "{o:?}");
    assert_eq!(o.ticket.as_ref().map(|t| t.to_string()), Some(n.clone()));
    assert_eq!(o.kind.as_deref(), Some("staff-note"), "{o:?}");
    assert_eq!(
        tickets_count(&store.list_tickets().await.unwrap()),
        1,
        "no new ticket"
    );
    // Nothing is mailed: no confirmation to staff, nothing to the customer.
    assert_eq!(
        outbox(&store).await.len(),
        before,
        "{:?}",
        outbox(&store).await
    );
    let show = store.show_ticket(&n).await.unwrap().unwrap();
    let note = show
        .articles
        .iter()
        .find(|a| a.body.contains("bin in 10 Minuten"))
        .expect("the answer is on the ticket");
    assert_eq!(note.kind, "staff-note");
    // It is no answer to the customer: the first response is not met.
    assert_eq!(show.summary.status, "new");
}

#[tokio::test]
async fn an_answer_to_a_digest_is_refused_once_and_the_refusal_is_never_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk(dir.path()).await;
    let mon = at("2026-12-07T07:00:00Z"); // Monday 08:00 CET
    on_ticket(
        &intake,
        &store,
        "From: kim@prem.example\r\nTo: support@desk.example\r\nSubject: Drucker defekt\r\nMessage-ID: <q2@prem.example>\r\n\r\nDer Drucker geht nicht.\r\n".into(),
        mins(mon, -60),
    )
    .await;
    intake.plan_digests(&store, mins(mon, -1)).await.unwrap();
    store
        .fire_due_timers(mon, &mut intake.hooks(mon))
        .await
        .unwrap();
    let digest = outbox_of(&store, "digest").await.remove(0);

    let answer = format!(
        "From: Team <team@desk.example>\r\nTo: support@desk.example\r\nSubject: Re: {}\r\nMessage-ID: <d1@desk.example>\r\nIn-Reply-To: <{}>\r\nReferences: <{}>\r\n\r\nWer nimmt den Drucker?\r\n",
        digest.subject, digest.message_id, digest.message_id
    );
    let o = ingest(&intake, &store, answer, mins(mon, 5)).await;
    assert_eq!(o.action, Action::Suppressed, "{o:?}");
    assert!(o.ticket.is_none(), "{o:?}");
    assert_eq!(
        store.list_tickets().await.unwrap().len(),
        1,
        "no new ticket"
    );
    assert!(
        outbox_of(&store, "confirmation").await.len() == 1,
        "only the customer's"
    );
    let refusals = outbox_of(&store, "digest-answer").await;
    assert_eq!(refusals.len(), 1);
    let refusal = &refusals[0];
    assert_eq!(refusal.to, ["team@desk.example"]);
    assert_eq!(
        header(&refusal.raw, "Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    assert_eq!(
        header(&refusal.raw, "In-Reply-To").as_deref(),
        Some("<d1@desk.example>")
    );

    // Someone answers the refusal: stored, no ticket, no further mail.
    let total = outbox(&store).await.len();
    let again = format!(
        "From: Team <team@desk.example>\r\nTo: support@desk.example\r\nSubject: Re: {}\r\nMessage-ID: <d2@desk.example>\r\nIn-Reply-To: <{}>\r\nReferences: <{}> <d1@desk.example> <{}>\r\n\r\nAch so.\r\n",
        refusal.subject, refusal.message_id, digest.message_id, refusal.message_id
    );
    let o = ingest(&intake, &store, again, mins(mon, 6)).await;
    assert_eq!(o.action, Action::Suppressed, "{o:?}");
    assert_eq!(store.list_tickets().await.unwrap().len(), 1);
    assert_eq!(
        outbox(&store).await.len(),
        total,
        "the refusal is not answered"
    );
}

#[tokio::test]
async fn a_mail_on_a_closed_ticket_opens_a_new_linked_ticket_and_resolved_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk(dir.path()).await;
    let t0 = at("2026-12-02T10:00:00Z");
    let n = on_ticket(
        &intake,
        &store,
        "From: kim@prem.example\r\nTo: support@desk.example\r\nSubject: Drucker defekt\r\nMessage-ID: <k1@prem.example>\r\n\r\nDer Drucker geht nicht.\r\n".into(),
        t0,
    )
    .await;
    let conf = outbox_of(&store, "confirmation").await[0]
        .message_id
        .clone();
    act(
        &intake,
        &store,
        &n,
        StaffAction::Status(Status::Closed),
        mins(t0, 5),
    )
    .await;

    // The customer answers our confirmation weeks later.
    let reply = format!(
        "From: kim@prem.example\r\nTo: support@desk.example\r\nSubject: Re: [Ticket#{n}] Drucker defekt\r\nMessage-ID: <k2@prem.example>\r\nIn-Reply-To: <{conf}>\r\nReferences: <k1@prem.example> <{conf}>\r\n\r\nJetzt geht der Scanner nicht.\r\n"
    );
    let o = ingest(&intake, &store, reply, mins(t0, 60 * 24 * 20)).await;
    assert_eq!(o.action, Action::Created, "{o:?}");
    let m = o.ticket.unwrap().to_string();
    assert_ne!(m, n);
    // Its own confirmation, tagged with the new number.
    let confs = outbox_of(&store, "confirmation").await;
    assert_eq!(confs.len(), 2);
    assert!(
        confs[1].subject.contains(&format!("[Ticket#{m}]")),
        "{}",
        confs[1].subject
    );
    assert!(
        !confs[1].subject.contains(&format!("[Ticket#{n}]")),
        "{}",
        confs[1].subject
    );
    // The old ticket stays closed and shows the link; the new one names it.
    let old = store.show_ticket(&n).await.unwrap().unwrap();
    assert_eq!(old.summary.status, "closed");
    let old_json = serde_json::to_value(&old).unwrap();
    assert_eq!(
        old_json["linked_from"],
        serde_json::json!([m.clone()]),
        "{old_json}"
    );
    let new = store.show_ticket(&m).await.unwrap().unwrap();
    assert_eq!(new.summary.linked_ticket.as_deref(), Some(n.as_str()));

    // A resolved ticket is re-opened by the customer's mail.
    let r = on_ticket(
        &intake,
        &store,
        "From: kim@prem.example\r\nTo: support@desk.example\r\nSubject: VPN langsam\r\nMessage-ID: <k3@prem.example>\r\n\r\nDas VPN ist langsam.\r\n".into(),
        mins(t0, 60 * 24 * 21),
    )
    .await;
    act(
        &intake,
        &store,
        &r,
        StaffAction::Status(Status::Resolved),
        mins(t0, 60 * 24 * 21 + 5),
    )
    .await;
    let again = format!(
        "From: kim@prem.example\r\nTo: support@desk.example\r\nSubject: Re: [Ticket#{r}] VPN langsam\r\nMessage-ID: <k4@prem.example>\r\nIn-Reply-To: <k3@prem.example>\r\n\r\nImmer noch langsam.\r\n"
    );
    let o = ingest(&intake, &store, again, mins(t0, 60 * 24 * 21 + 30)).await;
    assert_eq!(o.action, Action::Appended, "{o:?}");
    assert_eq!(o.ticket.map(|t| t.to_string()), Some(r.clone()));
    assert_eq!(
        store.show_ticket(&r).await.unwrap().unwrap().summary.status,
        "open"
    );
}

#[tokio::test]
async fn notices_to_the_customers_people_thread_with_the_ticket() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk(dir.path()).await;
    let t0 = at("2026-12-02T10:00:00Z");
    let n = on_ticket(
        &intake,
        &store,
        "From: ina@watch.example\r\nTo: support@desk.example\r\nSubject: VPN langsam\r\nMessage-ID: <w1@watch.example>\r\n\r\nDas VPN ist langsam.\r\n".into(),
        t0,
    )
    .await;
    let new = &outbox_of(&store, "new-ticket").await[0];
    assert_eq!(new.to, ["it@watch.example"]);
    assert!(
        new.subject.contains(&format!("[Ticket#{n}]")),
        "{}",
        new.subject
    );
    assert_eq!(
        header(&new.raw, "In-Reply-To").as_deref(),
        Some("<w1@watch.example>"),
        "{}",
        new.raw
    );
    let conf = outbox_of(&store, "confirmation").await[0]
        .message_id
        .clone();
    act(
        &intake,
        &store,
        &n,
        StaffAction::Status(Status::Resolved),
        mins(t0, 5),
    )
    .await;
    let again = format!(
        "From: ina@watch.example\r\nTo: support@desk.example\r\nSubject: Re: [Ticket#{n}] VPN langsam\r\nMessage-ID: <w2@watch.example>\r\nIn-Reply-To: <{conf}>\r\n\r\nImmer noch.\r\n"
    );
    assert_eq!(on_ticket(&intake, &store, again, mins(t0, 10)).await, n);
    let status = &outbox_of(&store, "status").await[0];
    assert!(
        status.subject.contains(&format!("[Ticket#{n}]")),
        "{}",
        status.subject
    );
    assert_eq!(
        header(&status.raw, "In-Reply-To").as_deref(),
        Some("<w2@watch.example>"),
        "{}",
        status.raw
    );
    let refs = header(&status.raw, "References").unwrap_or_default();
    for id in ["w1@watch.example", "w2@watch.example", conf.as_str()] {
        assert!(refs.contains(&format!("<{id}>")), "{id} in {refs}");
    }
}

#[tokio::test]
async fn the_account_managers_answer_to_an_over_quota_notice_is_a_note_not_a_reply() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk(dir.path()).await;
    let t0 = at("2026-12-02T10:00:00Z");
    let first = "From: max@mini.example\r\nTo: support@desk.example\r\nSubject: Drucker\r\nMessage-ID: <m1@mini.example>\r\n\r\nDer Drucker geht nicht.\r\n";
    on_ticket(&intake, &store, first.into(), t0).await;
    let second = "From: max@mini.example\r\nTo: support@desk.example\r\nSubject: Scanner\r\nMessage-ID: <m2@mini.example>\r\n\r\nDer Scanner geht nicht.\r\n";
    let n = on_ticket(&intake, &store, second.into(), mins(t0, 1)).await;
    let notice = outbox_of(&store, "over-quota").await.remove(0);
    assert_eq!(notice.to, ["am@desk.example"]);
    let before = outbox(&store).await.len();
    let answer = format!(
        "From: am@desk.example\r\nTo: support@desk.example\r\nSubject: Re: {}\r\nMessage-ID: <am1@desk.example>\r\nIn-Reply-To: <{}>\r\n\r\nIch rufe Mini KG wegen des Vertrags an.\r\n",
        notice.subject, notice.message_id
    );
    let o = ingest(&intake, &store, answer, mins(t0, 5)).await;
    assert_eq!(
        o.ticket.as_ref().map(|t| t.to_string()),
        Some(n.clone()),
        "{o:?}"
    );
    assert_eq!(o.kind.as_deref(), Some("staff-note"), "{o:?}");
    // The account manager's words about the contract never reach the customer.
    assert_eq!(
        outbox(&store).await.len(),
        before,
        "{:?}",
        outbox_of(&store, "relay").await
    );
}
