//! The Discord adapter against a fake Discord on loopback (REST and the
//! gateway WebSocket, `support/fake_discord.rs`): the real serenity
//! client, the real intake, SQLite and the outbox worker writing mail to
//! files. Covers: notifications into the ticket's thread (and severity 1
//! to the on-call channel with its role mention), commands typed and
//! given as slash commands changing a ticket, the refusal for members
//! without a staff role, a Discord outage delaying posts without losing
//! them, a gateway disconnect followed by a resume, and the intake
//! channel (a customer's message opens a ticket, the confirmation lands in
//! their thread, replies there become articles, staff replies count).

#[path = "support/fake_discord.rs"]
mod fake_discord;

use fake_discord::{FakeConfig, FakeDiscord, InteractionSpec, MessageSpec, Posted};
use std::sync::Arc;
use std::time::Duration;
use ticketd::config::Config;
use ticketd::keys::MacKey;
use ticketd::outbound::worker::{Sender, Worker};
use ticketd::outbound::Wake;
use ticketd::service::{Incoming, Intake, StaffAction};
use ticketd::store::Store;
use tokio::sync::watch;

const GUILD: u64 = 4000;
const STAFF_ROLE: u64 = 500;
const ONCALL_ROLE: u64 = 900;
const STAFF: u64 = 100;
const ONCALL: u64 = 101;
const COMMUNITY: u64 = 102;
const ANNA: u64 = 7001; // staff
const MAX: u64 = 7002; // a community member, no staff role
const WAIT: Duration = Duration::from_secs(10);

struct Desk {
    dir: tempfile::TempDir,
    fake: FakeDiscord,
    store: Store,
    intake: Arc<Intake>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Desk {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn desk() -> Desk {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "ticketd=info".into()),
        )
        .with_test_writer()
        .try_init();
    let fake = FakeDiscord::start(FakeConfig {
        bot_user_id: 1,
        application_id: 2,
        guild_id: GUILD,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("discord.token"), "test-token\n").unwrap();
    let text = format!(
        r#"
[desk]
addresses = ["support@desk.example"]

[sla.audiences]
team = ["chat:staff"]
lead = ["chat:oncall"]

[discord]
enabled = true
token_file = "discord.token"
guild = {GUILD}
staff_roles = [{STAFF_ROLE}]
notify = "staff"
intake = "community"
api_base = "{base}"
retry_base_seconds = 0.2

[discord.severity]
"1" = "oncall"

[discord.channels.staff]
id = {STAFF}

[discord.channels.oncall]
id = {ONCALL}
mention = {ONCALL_ROLE}

[discord.channels.community]
id = {COMMUNITY}
"#,
        base = fake.base_url()
    );
    let path = dir.path().join("ticketd.toml");
    std::fs::write(&path, &text).unwrap();
    let cfg = Config::load(&path).unwrap();
    let store = Store::open_sqlite(&dir.path().join("t.db"), 2)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let intake = Arc::new(Intake::new(&cfg, MacKey(vec![7; 32])));
    intake.verify().unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let wake = Arc::new(Wake::new());
    let sender = Sender::from_config(&cfg, &dir.path().join("sent")).unwrap();
    let worker = Worker::new(store.clone(), sender, &cfg, wake.clone());
    let mut tasks = vec![tokio::spawn(worker.run(stop_rx.clone()))];
    tasks.push(tokio::spawn(ticketd::chat::discord::run(
        cfg,
        intake.clone(),
        store.clone(),
        wake,
        stop_rx,
    )));
    fake.wait_ready(WAIT).await;
    Desk {
        dir,
        fake,
        store,
        intake,
        stop,
        tasks,
    }
}

fn mail(from: &str, subject: &str, id: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: support@desk.example\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: Wed, 02 Dec 2026 09:00:00 +0100\r\n{extra}\r\n{body}\r\n"
    )
    .into_bytes()
}

impl Desk {
    async fn ingest(&self, raw: Vec<u8>) -> String {
        let r = self
            .intake
            .ingest_batch(
                &self.store,
                &[Incoming {
                    raw,
                    source: "test".into(),
                }],
                jiff::Timestamp::now(),
            )
            .await;
        r.into_iter()
            .next()
            .unwrap()
            .unwrap()
            .ticket
            .unwrap()
            .as_str()
            .to_string()
    }

    async fn ticket(&self, number: &str) -> ticketd::store::chat::ChatTicket {
        self.store.chat_ticket(number).await.unwrap().unwrap()
    }

    async fn events(&self, number: &str) -> Vec<(String, String)> {
        let t = self.ticket(number).await;
        sqlx::query_as(
            "SELECT kind, COALESCE(detail, '') FROM events WHERE ticket_id = $1 ORDER BY id",
        )
        .bind(t.id)
        .fetch_all(self.store.pool())
        .await
        .unwrap()
    }

    /// Posts after the first `skip`, until there are `n` of them.
    async fn posts_after(&self, skip: usize, n: usize) -> Vec<Posted> {
        let all = self.fake.wait_posts(skip + n, WAIT).await;
        all[skip..].to_vec()
    }

    fn sent_mails(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.dir.path().join("sent")) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect()
    }
}

fn title(p: &Posted) -> String {
    p.body["embeds"][0]["title"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn content(p: &Posted) -> String {
    p.body["content"].as_str().unwrap_or("").to_string()
}

async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > WAIT {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/ticket SUB options…` as Discord sends it: a subcommand option
/// holding the string options.
async fn slash(
    d: &Desk,
    (user, name, roles): (u64, &str, Vec<u64>),
    channel: u64,
    sub: &str,
    options: &[(&str, &str)],
) -> u64 {
    let mut v = d.fake.interaction_json(&InteractionSpec {
        channel_id: channel,
        user_id: user,
        user_name: name.into(),
        roles,
        command: "ticket".into(),
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    });
    let inner = v["data"]["options"].take();
    v["data"]["options"] = serde_json::json!([{"name": sub, "type": 1, "options": inner}]);
    let id = v["id"].as_str().unwrap().parse().unwrap();
    d.fake.dispatch("INTERACTION_CREATE", v).await;
    id
}

fn staff_says(channel: u64, content: &str) -> MessageSpec {
    MessageSpec {
        channel_id: channel,
        author_id: ANNA,
        author_name: "anna".into(),
        roles: vec![STAFF_ROLE],
        content: content.into(),
    }
}

fn member_says(channel: u64, content: &str) -> MessageSpec {
    MessageSpec {
        channel_id: channel,
        author_id: MAX,
        author_name: "max".into(),
        roles: vec![],
        content: content.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_start_the_tickets_thread_and_follow_into_it() {
    let d = desk().await;
    let n = d
        .ingest(mail(
            "Erika Muster <erika@kunde.example>",
            "Drucker im 2. OG druckt nicht",
            "m1@kunde.example",
            "",
            "Seit heute früh kommt nichts aus dem Drucker.",
        ))
        .await;
    let first = d.posts_after(0, 1).await;
    let p = &first[0];
    assert_eq!(
        p.channel_id, STAFF,
        "a severity 3 ticket goes to the staff channel"
    );
    assert!(
        title(p).contains(&n) && title(p).contains("New ticket"),
        "{}",
        title(p)
    );
    let embed = &p.body["embeds"][0];
    let severity = d.ticket(&n).await.severity;
    assert_eq!(
        embed["color"].as_u64(),
        Some(u64::from(ticketd::chat::notify::severity_colour(severity)))
    );
    let fields = embed["fields"].to_string();
    assert!(fields.contains("erika@kunde.example"), "{fields}");
    assert!(embed["description"]
        .as_str()
        .unwrap()
        .contains("nichts aus dem Drucker"));
    let thread = until("the ticket's thread", async || {
        d.fake
            .threads()
            .into_iter()
            .find(|t| t.message_id == Some(p.message_id))
    })
    .await;
    assert_eq!(thread.parent_id, STAFF);
    assert!(thread.name.starts_with(&n), "{}", thread.name);

    // The customer answers by mail: into the thread, not the channel.
    d.ingest(mail(
        "Erika Muster <erika@kunde.example>",
        "Re: Drucker im 2. OG druckt nicht",
        "m2@kunde.example",
        "In-Reply-To: <m1@kunde.example>\r\nReferences: <m1@kunde.example>\r\n",
        "Jetzt blinkt er orange.",
    ))
    .await;
    let next = d.posts_after(1, 1).await;
    assert_eq!(next[0].channel_id, thread.thread_id);
    assert!(
        title(&next[0]).contains("Customer replied"),
        "{}",
        title(&next[0])
    );
    assert!(next[0].body.to_string().contains("blinkt er orange"));

    // A status change from the command line, also into the thread.
    d.intake
        .act(
            &d.store,
            &n,
            &StaffAction::Status(ticketd::domain::Status::Pending),
            "cli:bernd",
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
    let next = d.posts_after(2, 1).await;
    assert_eq!(next[0].channel_id, thread.thread_id);
    assert!(
        title(&next[0]).contains("Status pending"),
        "{}",
        title(&next[0])
    );
    assert_eq!(d.fake.threads().len(), 1, "one thread per ticket");

    // Severity 1 goes to the on-call channel, mentioning its role.
    let urgent = d
        .ingest(mail(
            "it@kunde.example",
            "Serverausfall",
            "m3@kunde.example",
            "",
            "Serverausfall, niemand kann arbeiten.",
        ))
        .await;
    let next = d.posts_after(3, 1).await;
    assert_eq!(next[0].channel_id, ONCALL);
    assert!(title(&next[0]).contains(&urgent));
    assert_eq!(content(&next[0]), format!("<@&{ONCALL_ROLE}>"));
    assert_eq!(
        next[0].body["allowed_mentions"]["roles"][0]
            .as_str()
            .map(str::to_string),
        Some(ONCALL_ROLE.to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_commands_change_the_ticket_and_are_recorded_with_the_discord_user() {
    let d = desk().await;
    let n = d
        .ingest(mail(
            "erika@kunde.example",
            "VPN bricht ab",
            "v1@kunde.example",
            "",
            "Alle paar Minuten.",
        ))
        .await;
    d.posts_after(0, 1).await;
    let thread = until("the thread", async || d.fake.threads().into_iter().next()).await;
    until("the thread known to the desk", async || {
        d.store.thread_ticket(thread.thread_id).await.unwrap()
    })
    .await;

    // Typed in the ticket's thread: no number needed.
    d.fake
        .message_create(staff_says(thread.thread_id, "!t status pending"))
        .await;
    let answer = d.posts_after(1, 1).await;
    assert_eq!(answer[0].channel_id, thread.thread_id);
    assert!(
        content(&answer[0]).contains("status pending"),
        "{}",
        content(&answer[0])
    );
    assert_eq!(d.ticket(&n).await.status, "pending");

    // A reply is mailed to the requester, threaded on the ticket.
    d.fake
        .message_create(staff_says(
            thread.thread_id,
            "!t reply Bitte starten Sie den Client neu.",
        ))
        .await;
    d.posts_after(2, 1).await;
    let reply = until("the reply mail", async || {
        d.sent_mails()
            .into_iter()
            .find(|m| m.contains("Bitte starten Sie den Client neu."))
    })
    .await;
    assert!(reply.contains("erika@kunde.example"));
    assert!(reply.contains("In-Reply-To: <v1@kunde.example>"), "{reply}");
    assert!(
        !reply.contains("Auto-Submitted"),
        "a staff reply is a personal mail"
    );

    // A slash command in the channel, naming the ticket.
    let i = slash(
        &d,
        (ANNA, "anna", vec![STAFF_ROLE]),
        STAFF,
        "severity",
        &[("number", &n), ("severity", "2")],
    )
    .await;
    let r = d.fake.wait_interaction_responses(1, WAIT).await;
    assert_eq!(r[0].interaction_id, i);
    assert_eq!(r[0].body["type"].as_u64(), Some(4));
    assert!(r[0].body["data"]["content"]
        .as_str()
        .unwrap()
        .contains("severity 2"));
    assert_eq!(
        r[0].body["data"]["flags"].as_u64().unwrap_or(0) & 64,
        0,
        "staff answers are public"
    );
    assert_eq!(d.ticket(&n).await.severity, 2);

    // Claim, then list mine.
    d.fake
        .message_create(staff_says(thread.thread_id, "!t claim"))
        .await;
    d.posts_after(3, 1).await;
    d.fake
        .message_create(staff_says(STAFF, "!t list mine"))
        .await;
    let list = d.posts_after(4, 1).await;
    assert!(content(&list[0]).contains(&n), "{}", content(&list[0]));
    assert_eq!(d.ticket(&n).await.assignee_name.as_deref(), Some("anna"));

    let events = d.events(&n).await;
    for kind in ["waiting", "staff-reply", "severity", "assigned"] {
        let e = events
            .iter()
            .find(|(k, _)| k == kind)
            .unwrap_or_else(|| panic!("no {kind} in {events:?}"));
        assert!(e.1.contains("discord:anna"), "{kind}: {}", e.1);
    }
    // Nothing done in Discord is echoed back as a notification.
    assert_eq!(d.fake.posts().len(), 5);

    // Malformed input gets the usage, never silence.
    d.fake
        .message_create(staff_says(thread.thread_id, "!t severity 9"))
        .await;
    let usage = d.posts_after(5, 1).await;
    assert!(
        content(&usage[0]).contains("severity [NUMBER] 1-4"),
        "{}",
        content(&usage[0])
    );

    // Show, in the thread.
    d.fake
        .message_create(staff_says(thread.thread_id, "!t show"))
        .await;
    let shown = d.posts_after(6, 1).await;
    assert!(title(&shown[0]).starts_with(&format!("Ticket {n}: VPN bricht ab")));

    // A ticket opened from chat after a phone call: in the customer's
    // name, with the severity given; the customer gets the confirmation.
    d.fake
        .message_create(staff_says(
            STAFF,
            "!t new jan@neu.example 2 Telefon: Telefonanlage stumm\nRuft von der Zentrale an, kein Freizeichen.",
        ))
        .await;
    let opened = until("the answer to new", async || {
        d.fake
            .posts()
            .into_iter()
            .find(|p| content(p).contains("opened for jan@neu.example"))
    })
    .await;
    let number = content(&opened).split("**").nth(1).unwrap().to_string();
    let t = d.ticket(&number).await;
    assert_eq!(t.requester, "jan@neu.example");
    assert_eq!(t.severity, 2);
    assert_eq!(t.subject, "Telefon: Telefonanlage stumm");
    until("the confirmation to the caller", async || {
        d.sent_mails()
            .into_iter()
            .find(|m| m.contains("To: jan@neu.example") && m.contains(&number))
    })
    .await;
    let events = d.events(&number).await;
    assert!(
        events
            .iter()
            .any(|(k, e)| k == "severity" && e.contains("discord:anna")),
        "{events:?}"
    );
    until("staff hear of the new ticket", async || {
        d.fake
            .posts()
            .into_iter()
            .find(|p| title(p).contains(&format!("New ticket {number}")))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_without_a_staff_role_get_a_private_refusal_and_change_nothing() {
    let d = desk().await;
    let n = d
        .ingest(mail(
            "erika@kunde.example",
            "Frage zur Rechnung",
            "r1@kunde.example",
            "",
            "Hallo",
        ))
        .await;
    d.posts_after(0, 1).await;
    let before = d.events(&n).await.len();
    d.fake
        .message_create(member_says(STAFF, &format!("!t status {n} closed")))
        .await;
    until("the refusal by direct message", async || {
        let dms = d.fake.dm_channels();
        let (_, ch) = dms.iter().find(|(u, _)| *u == MAX)?;
        d.fake
            .posts()
            .into_iter()
            .find(|p| p.channel_id == *ch && content(p).contains("Only the support team"))
    })
    .await;
    let i = slash(
        &d,
        (MAX, "max", vec![]),
        STAFF,
        "status",
        &[("number", &n), ("status", "closed")],
    )
    .await;
    let r = d.fake.wait_interaction_responses(1, WAIT).await;
    assert_eq!(r[0].interaction_id, i);
    assert_eq!(
        r[0].body["data"]["flags"].as_u64().unwrap_or(0) & 64,
        64,
        "ephemeral"
    );
    assert!(r[0].body["data"]["content"]
        .as_str()
        .unwrap()
        .contains("Only the support team"));
    assert_eq!(d.ticket(&n).await.status, "new");
    assert_eq!(d.events(&n).await.len(), before);
    // Nothing was posted in the channel for everyone.
    assert!(d
        .fake
        .posts()
        .iter()
        .all(|p| p.channel_id != STAFF || !content(p).contains("closed")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_delays_posts_and_a_dropped_gateway_resumes() {
    let d = desk().await;
    // Discord fails twice (500, then a rate limit): the post still arrives.
    d.fake.fail_next_posts(1, 500);
    let n = d
        .ingest(mail(
            "erika@kunde.example",
            "Kein WLAN",
            "w1@kunde.example",
            "",
            "Im Besprechungsraum.",
        ))
        .await;
    let p = d.posts_after(0, 1).await;
    assert!(title(&p[0]).contains(&n));
    d.fake.fail_next_posts(1, 429);
    d.ingest(mail(
        "erika@kunde.example",
        "Re: Kein WLAN",
        "w2@kunde.example",
        "In-Reply-To: <w1@kunde.example>\r\n",
        "Immer noch.",
    ))
    .await;
    let p = d.posts_after(1, 1).await;
    assert!(title(&p[0]).contains("Customer replied"));
    // Two posts, each once failed and once sent.
    until("both posts marked sent after two attempts", async || {
        let (sent, attempts): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE status = 'sent'), COALESCE(SUM(attempts), 0) FROM chat_outbox",
        )
        .fetch_one(d.store.pool())
        .await
        .unwrap();
        (sent == 2 && attempts == 4).then_some(())
    })
    .await;

    // The gateway connection breaks: serenity resumes the session, and
    // commands work again.
    assert_eq!(d.fake.identifies(), 1);
    d.fake.drop_connection().await;
    until("the resume", async || (d.fake.resumes() == 1).then_some(())).await;
    d.fake.wait_ready(WAIT).await;
    assert_eq!(d.fake.identifies(), 1, "resumed, not identified anew");
    let thread = d.fake.threads()[0].thread_id;
    d.fake
        .message_create(staff_says(thread, "!t status resolved"))
        .await;
    d.posts_after(2, 1).await;
    assert_eq!(d.ticket(&n).await.status, "resolved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intake_channel_opens_tickets_and_keeps_the_conversation_in_its_thread() {
    let d = desk().await;
    let first = d
        .fake
        .message_create(member_says(
            COMMUNITY,
            "Mein Login geht nicht\nSeit dem Update.",
        ))
        .await;
    // The confirmation is posted into the customer's thread, started from
    // their message; staff hear of the ticket in their channel.
    let thread = until("the customer's thread", async || {
        d.fake
            .threads()
            .into_iter()
            .find(|t| t.parent_id == COMMUNITY && t.message_id == Some(first))
    })
    .await;
    assert_eq!(thread.thread_id, first);
    let confirmation = until("the confirmation", async || {
        d.fake.posts().into_iter().find(|p| p.channel_id == first)
    })
    .await;
    let number: String = {
        let (n,): (String,) = sqlx::query_as("SELECT number FROM tickets ORDER BY id DESC LIMIT 1")
            .fetch_one(d.store.pool())
            .await
            .unwrap();
        n
    };
    assert!(
        content(&confirmation).contains(&number),
        "{}",
        content(&confirmation)
    );
    let t = d.ticket(&number).await;
    assert_eq!(t.subject, "Mein Login geht nicht");
    assert_eq!(t.requester, format!("u{MAX}@discord.invalid"));
    assert!(d.sent_mails().is_empty(), "no mail to a Discord member");
    until("the staff notification", async || {
        d.fake
            .posts()
            .into_iter()
            .find(|p| p.channel_id == STAFF && title(p).contains(&number))
    })
    .await;

    // The customer answers in the thread: an article on the ticket.
    d.fake
        .message_create(member_says(first, "Fehlermeldung: 403"))
        .await;
    until("the customer's article", async || {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM articles WHERE ticket_id = $1 AND direction = 'in'",
        )
        .bind(t.id)
        .fetch_one(d.store.pool())
        .await
        .unwrap();
        (n == 2).then_some(())
    })
    .await;

    // Staff answer in the thread: a staff reply (first response met),
    // not relayed back into the thread a second time.
    let posts_before = d.fake.posts().len();
    d.fake
        .message_create(staff_says(first, "Wir haben Ihr Konto entsperrt."))
        .await;
    until("the staff reply event", async || {
        d.events(&number)
            .await
            .into_iter()
            .find(|(k, _)| k == "staff-reply")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let echoed = d.fake.posts()[posts_before..]
        .iter()
        .any(|p| p.channel_id == first && content(p).contains("entsperrt"));
    assert!(!echoed, "the staff message is not posted again");

    // Each Discord message is taken once, even if the gateway replays it.
    let raw: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE source LIKE 'discord:%'")
            .fetch_one(d.store.pool())
            .await
            .unwrap();
    assert_eq!(raw, 3);
}

/// A Wednesday 10:00 in Berlin weeks from now, away from the holidays
/// around new year: every business-hours target of a ticket opened today
/// has run out, and the desk is open.
fn a_working_morning_weeks_ahead() -> jiff::Timestamp {
    let tz = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
    let mut day = jiff::Timestamp::now().to_zoned(tz.clone()).date() + jiff::Span::new().days(40);
    while day.weekday() != jiff::civil::Weekday::Wednesday
        || (day.month() == 12 && day.day() > 20)
        || (day.month() == 1 && day.day() < 8)
    {
        day = day.tomorrow().unwrap();
    }
    day.at(10, 0, 0, 0).to_zoned(tz).unwrap().timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sla_reminders_reach_the_thread_and_the_on_call_channel() {
    let d = desk().await;
    let n = d
        .ingest(mail(
            "erika@kunde.example",
            "Backup meldet Fehler",
            "b1@kunde.example",
            "",
            "Seit drei Tagen.",
        ))
        .await;
    d.posts_after(0, 1).await;
    let thread = until("the thread", async || d.fake.threads().into_iter().next()).await;
    until("the thread known to the desk", async || {
        d.store.thread_ticket(thread.thread_id).await.unwrap()
    })
    .await;
    let at = a_working_morning_weeks_ahead();
    let fired = d
        .store
        .fire_due_timers(at, &mut d.intake.hooks(at))
        .await
        .unwrap();
    assert!(
        fired
            .iter()
            .any(|f| f.ticket.as_deref() == Some(n.as_str())),
        "{fired:?}"
    );
    // The timers ran at a simulated instant weeks ahead, so their posts
    // are queued for then: make them due on the real clock.
    sqlx::query(
        "UPDATE chat_outbox SET next_attempt_at = '2000-01-01T00:00:00Z' WHERE status = 'queued'",
    )
    .execute(d.store.pool())
    .await
    .unwrap();
    // The breach of the team's target goes into the ticket's thread; the
    // lead's copy to the on-call channel, linking the thread and pinging
    // its role.
    let posts = d.posts_after(1, 2).await;
    let in_thread = posts
        .iter()
        .find(|p| p.channel_id == thread.thread_id)
        .expect("a reminder in the thread");
    assert!(title(in_thread).contains("missed"), "{}", title(in_thread));
    assert!(title(in_thread).contains(&n));
    let on_call = posts
        .iter()
        .find(|p| p.channel_id == ONCALL)
        .expect("a reminder in the on-call channel");
    assert!(content(on_call).contains(&format!("<@&{ONCALL_ROLE}>")));
    assert!(content(on_call).contains(&format!("<#{}>", thread.thread_id)));
    assert_eq!(d.fake.threads().len(), 1, "no second thread for the ticket");
}
