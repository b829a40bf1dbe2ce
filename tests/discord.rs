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

#[path = "support/discord_desk.rs"]
mod discord_desk;
#[path = "support/fake_discord.rs"]
mod fake_discord;

use discord_desk::*;
use fake_discord::MessageSpec;
use std::time::Duration;
use ticketd::service::{FireTimers as _, StaffAction};

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
    let (n, thread) = d.first_ticket("VPN bricht ab", "v1@kunde.example").await;

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
    let answer = d
        .fake
        .message_json(&member_says(first, "Fehlermeldung: 403"));
    d.fake.dispatch("MESSAGE_CREATE", answer.clone()).await;
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

    // Another member writing into the thread does not write into the
    // customer's ticket: the guard gives them a ticket of their own.
    d.fake
        .message_create(MessageSpec {
            channel_id: first,
            author_id: 7003,
            author_name: "mallory".into(),
            roles: vec![],
            content: "Ich habe auch ein Problem".into(),
        })
        .await;
    let theirs = until("the stranger's own ticket", async || {
        sqlx::query_scalar::<_, String>(
            "SELECT number FROM tickets WHERE requester = 'u7003@discord.invalid'",
        )
        .fetch_optional(d.store.pool())
        .await
        .unwrap()
    })
    .await;
    assert_ne!(theirs, number);
    let inbound: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM articles WHERE ticket_id = $1 AND direction = 'in'",
    )
    .bind(t.id)
    .fetch_one(d.store.pool())
    .await
    .unwrap();
    // The customer's two messages and the staff reply; nothing of theirs.
    assert_eq!(
        inbound, 3,
        "nothing of the stranger's on the customer's ticket"
    );

    // A reply given with the command in the staff thread reaches the
    // customer in their thread.
    let staff_thread = d
        .fake
        .threads()
        .into_iter()
        .find(|t| t.parent_id == STAFF && t.name.starts_with(&number))
        .unwrap()
        .thread_id;
    d.known_thread(staff_thread).await;
    d.fake
        .message_create(staff_says(
            staff_thread,
            "!t reply Bitte melden Sie sich neu an.",
        ))
        .await;
    until("the reply in the customer's thread", async || {
        d.fake
            .posts()
            .into_iter()
            .find(|p| p.channel_id == first && content(p).contains("Bitte melden Sie sich neu an."))
    })
    .await;
    assert!(
        d.sent_mails().is_empty(),
        "still no mail to a Discord member"
    );

    // Each Discord message is taken once, even if the gateway sends it
    // again (as after a resume).
    d.fake.dispatch("MESSAGE_CREATE", answer).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let raw: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE source LIKE 'discord:%'")
            .fetch_one(d.store.pool())
            .await
            .unwrap();
    assert_eq!(raw, 4);
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
    let (n, thread) = d
        .first_ticket("Backup meldet Fehler", "b1@kunde.example")
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

fn nagios(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/alerts/nagios")
            .join(name),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_alert_is_counted_not_posted() {
    let d = desk().await;
    let n = d.ingest(nagios("01-service-problem.eml")).await;
    let first = d.posts_after(0, 1).await;
    assert!(title(&first[0]).contains(&n), "{}", title(&first[0]));
    let again = d.ingest(nagios("02-service-problem-repeat.eml")).await;
    assert_eq!(again, n, "the repeat is on the incident's ticket");
    // The repeat wrote its event; the feed has passed it by and posted
    // nothing for it.
    let last: i64 = sqlx::query_scalar("SELECT MAX(id) FROM events")
        .fetch_one(d.store.pool())
        .await
        .unwrap();
    until("the feed past the repeat", async || {
        (d.store.chat_cursor().await.unwrap() >= last).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(d.fake.posts().len(), 1, "{:?}", d.fake.posts());
}

/// Issue 14, item 9: `check-config --connect` asks Discord (here the fake,
/// through `api_base`) who the token belongs to; a Discord it cannot reach
/// fails with a line of its own and a non-zero exit, the token unprinted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_connect_asks_discord_who_the_token_is() {
    let fake = fake_discord::FakeDiscord::start(fake_discord::FakeConfig {
        bot_user_id: 77,
        application_id: 2,
        guild_id: GUILD,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("discord.token"), "check-token-xyz\n").unwrap();
    let config = |api_base: &str| {
        let text = format!(
            "[discord]\nenabled = true\ntoken_file = \"discord.token\"\nguild = {GUILD}\n\
             staff_roles = [5]\nnotify = \"staff\"\napi_base = \"{api_base}\"\n\
             [discord.channels.staff]\nid = 10\n"
        );
        let p = dir.path().join("ticketd.toml");
        std::fs::write(&p, text).unwrap();
        p
    };
    let run = |cfg: std::path::PathBuf| {
        let data = dir.path().join("data");
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_ticketd"))
                .arg("--config")
                .arg(cfg)
                .arg("--data-dir")
                .arg(data)
                .args(["check-config", "--connect"])
                .env_remove("TICKETD_CONFIG")
                .output()
                .unwrap()
        })
    };
    let o = run(config(&fake.base_url())).await.unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("ok    discord:"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("(77)"), "{line}");
    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = run(config(&format!("http://127.0.0.1:{closed}")))
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("FAIL  discord:")),
        "{out}"
    );
    assert!(!out.contains("check-token-xyz"), "{out}");
}
