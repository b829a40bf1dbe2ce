//! What a chat post looks like: a chat outbox row's JSON body turned into
//! a message with an embed (ticket number, severity as its colour,
//! customer, subject, requester, SLA due time). Pure: the adapter only
//! sends what [`render`] gives.
//!
//! Bodies come from three places: ticket events the chat feed picked up
//! (`new`, `reply`, `staff-reply`, `status`, `severity`, `assigned`,
//! `delivery-failed`), SLA timers (`reminder`, `breach`, `digest`) and
//! mail to a Discord customer diverted into their thread (`customer`).

use serde_json::Value;

/// A message to post.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Post {
    /// Plain text above the embed (mentions go here: Discord does not
    /// notify for mentions inside embeds).
    pub content: String,
    /// The embed, if any.
    pub embed: Option<Embed>,
    /// The role this post mentions (and may ping).
    pub mention_role: Option<u64>,
}

/// A Discord embed, within Discord's limits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Embed {
    /// Title (≤ 256 characters).
    pub title: String,
    /// Text (≤ 4096 characters).
    pub description: String,
    /// Side colour, 0xRRGGBB.
    pub colour: u32,
    /// Name/value pairs shown side by side when `inline`.
    pub fields: Vec<(String, String, bool)>,
    /// Small print at the bottom.
    pub footer: String,
}

/// The colour of a severity: 1 red, 2 orange, 3 yellow, 4 blue; grey for
/// anything else.
pub fn severity_colour(level: i64) -> u32 {
    match level {
        1 => 0xE0_3A_3E,
        2 => 0xF2_8C_28,
        3 => 0xF1_C4_0F,
        4 => 0x34_98_DB,
        _ => 0x95_A5_A6,
    }
}

/// The name of the severity.
fn severity_name(level: i64) -> String {
    u8::try_from(level)
        .ok()
        .and_then(|l| crate::domain::Severity::try_from(l).ok())
        .map(|s| format!("{level} – {}", s.label_en()))
        .unwrap_or_else(|| "?".to_string())
}

/// At most `max` characters of `s`, with `…` where it was cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A thread's name for a ticket: `10001 – subject`, within Discord's 100
/// characters.
pub fn thread_name(number: &str, subject: &str) -> String {
    let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    if subject.is_empty() {
        return clip(number, 100);
    }
    clip(&format!("{number} – {subject}"), 100)
}

/// An instant as Discord timestamp markup: every reader sees it in their
/// own time zone, with "in 3 hours" on hover.
fn when(v: &Value) -> Option<String> {
    let t: jiff::Timestamp = v.as_str()?.parse().ok()?;
    Some(format!("<t:{0}:f> (<t:{0}:R>)", t.as_second()))
}

fn text(body: &Value, key: &str) -> String {
    match body.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The post for a chat outbox body. `mention`: the channel's role, used
/// where the post should reach people at once (a new ticket posted at the
/// top of a channel, a breach).
pub fn render(body: &Value, mention: Option<u64>) -> Post {
    let kind = text(body, "kind");
    let number = text(body, "ticket");
    let subject = text(body, "subject");
    let level = body.get("severity").and_then(Value::as_i64).unwrap_or(0);
    let mut e = Embed {
        colour: severity_colour(level),
        ..Embed::default()
    };
    let mut content = String::new();
    let mut ping = false;
    let ticket_title = |what: &str| clip(&format!("{what} {number}: {subject}"), 256);
    match kind.as_str() {
        "customer" => {
            // Said to the customer in their thread: the mail's text, no embed.
            return Post {
                content: clip(text(body, "text").trim(), 2000),
                embed: None,
                mention_role: None,
            };
        }
        "digest" => {
            e.title = clip(&format!("Digest: {}", text(body, "name")), 256);
            e.colour = if body.get("breached").and_then(Value::as_i64).unwrap_or(0) > 0 {
                severity_colour(1)
            } else {
                severity_colour(4)
            };
            for k in ["open", "running", "paused", "breached"] {
                e.fields.push((k.to_string(), text(body, k), true));
            }
            let mut lines = String::new();
            for t in body
                .get("tickets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let due = t.get("due").and_then(when).unwrap_or_default();
                lines.push_str(&format!(
                    "**{}** sev {} {} {} {} – {}\n",
                    text(t, "number"),
                    text(t, "severity"),
                    text(t, "state"),
                    text(t, "target"),
                    due,
                    clip(&text(t, "subject"), 80)
                ));
            }
            if lines.is_empty() {
                lines.push_str("No ticket breached or due within 24 h.");
            }
            e.description = clip(&lines, 4000);
        }
        "grant-refused" => {
            // A mailbox or the relay can no longer log in: loud, once.
            e.title = clip(&format!("🔑 Login refused: {}", text(body, "account")), 256);
            e.colour = severity_colour(1);
            e.description = clip(
                &format!(
                    "{}\nMail stays on the server until an administrator runs `ticketd auth login {}`.",
                    text(body, "detail").trim(),
                    text(body, "name")
                ),
                1000,
            );
            ping = true;
        }
        kind => {
            // The title, and which text of the body it shows.
            let label = text(body, "target_label");
            let (what, key, max) = match kind {
                "reminder" => (
                    format!("⏰ {label} at {} %:", text(body, "percent")),
                    "late",
                    1000,
                ),
                "breach" => (format!("⛔ {label} missed:"), "late", 1000),
                "new" => ("🆕 New ticket".into(), "text", 1500),
                "reply" => ("✉️ Customer replied on".into(), "text", 1500),
                "alert" => ("📟 Monitoring update on".into(), "text", 1500),
                "bounce" => ("⚠️ Bounce on".into(), "text", 1000),
                "staff-reply" => ("↩️ Staff replied on".into(), "detail", 1000),
                "status" => (format!("Status {}:", text(body, "status")), "detail", 1000),
                "severity" => (
                    format!("Severity {}:", severity_name(level)),
                    "detail",
                    1000,
                ),
                "assigned" => ("👤 Assigned".into(), "detail", 1000),
                "delivery-failed" => ("⚠️ Mail not delivered on".into(), "detail", 1000),
                // `show`: the ticket as it stands.
                "show" => ("Ticket".into(), "", 0),
                other => (other.to_string(), "detail", 1000),
            };
            e.title = ticket_title(&what);
            e.description = clip(text(body, key).trim(), max);
            ping = matches!(kind, "new" | "breach");
        }
    }
    if kind != "digest" && kind != "grant-refused" {
        e.fields
            .push(("Severity".into(), severity_name(level), true));
        let customer = text(body, "customer");
        if !customer.is_empty() {
            e.fields
                .push(("Customer".into(), clip(&customer, 200), true));
        }
        let requester = match (text(body, "requester_name"), text(body, "requester")) {
            (n, a) if !n.is_empty() && !a.is_empty() => format!("{n} <{a}>"),
            (_, a) => a,
        };
        if !requester.is_empty() {
            e.fields
                .push(("Requester".into(), clip(&requester, 300), true));
        }
        let status = text(body, "status");
        if !status.is_empty() && kind != "status" {
            e.fields.push(("Status".into(), status, true));
        }
        if let Some(due) = body.get("due").and_then(when) {
            let target = text(body, "target");
            let name = if target.is_empty() {
                "SLA due".to_string()
            } else {
                format!("SLA due ({target})")
            };
            e.fields.push((name, due, true));
        }
        let assignee = text(body, "assignee");
        if !assignee.is_empty() {
            e.fields
                .push(("Assignee".into(), clip(&assignee, 200), true));
        }
        e.footer = format!("ticket {number}");
    }
    let mention_role = if ping { mention } else { None };
    if let Some(r) = mention_role {
        content = format!("<@&{r}>");
    }
    Post {
        content,
        embed: Some(e),
        mention_role,
    }
}

/// The chat post kind of a ticket event the chat feed picks up, or `None`
/// for events staff need not see in chat. Changes made in Discord are not
/// echoed: the command's answer already says what was done. An appended
/// message is posted by what it was (`message`: its kind), and only when
/// it made an article (`article`): a repeated alert is only counted, an
/// auto-reply tells staff nothing.
pub fn feed_kind(
    event: &str,
    detail: &str,
    staff_in_message: bool,
    message: Option<&str>,
    article: bool,
) -> Option<&'static str> {
    if detail.contains("by discord:") {
        return None;
    }
    Some(match event {
        "created" => "new",
        "appended" if staff_in_message || !article => return None,
        "appended" => match message {
            Some("alert") => "alert",
            Some("bounce") => "bounce",
            // A staff member's answer to a reminder is an internal note,
            // like a note made in chat: no post, least of all as a reply.
            Some("auto-reply" | "loop" | "staff-note") => return None,
            _ => "reply",
        },
        "staff-reply" => "staff-reply",
        "waiting" | "resumed" | "reopened" | "resolved" | "closed" | "status" => "status",
        "severity" => "severity",
        "assigned" => "assigned",
        "delivery-failed" => "delivery-failed",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_new_ticket_is_an_embed_in_its_severity_colour_with_a_mention() {
        let p = render(
            &json!({"kind": "new", "ticket": "10001", "subject": "Mail down", "severity": 1,
                    "customer": "Muster GmbH", "requester": "anna@muster.de", "requester_name": "Anna",
                    "status": "new", "due": "2026-12-02T10:00:00Z", "target": "first-response",
                    "text": "Nothing arrives."}),
            Some(42),
        );
        assert_eq!(p.content, "<@&42>");
        assert_eq!(p.mention_role, Some(42));
        let e = p.embed.unwrap();
        assert_eq!(e.colour, 0xE03A3E);
        assert_eq!(e.title, "🆕 New ticket 10001: Mail down");
        assert_eq!(e.description, "Nothing arrives.");
        let field = |n: &str| {
            e.fields
                .iter()
                .find(|f| f.0.starts_with(n))
                .map(|f| f.1.clone())
        };
        assert_eq!(field("Customer").as_deref(), Some("Muster GmbH"));
        assert_eq!(field("Requester").as_deref(), Some("Anna <anna@muster.de>"));
        let due = field("SLA due").unwrap();
        assert!(due.starts_with("<t:1796205600:f>"), "{due}");
    }

    #[test]
    fn a_reply_pings_nobody_and_a_breach_does() {
        let reply = render(
            &json!({"kind": "reply", "ticket": "1", "severity": 3}),
            Some(7),
        );
        assert_eq!(reply.mention_role, None);
        assert!(reply.content.is_empty());
        assert_eq!(reply.embed.unwrap().colour, severity_colour(3));
        let breach = render(
            &json!({"kind": "breach", "ticket": "1", "severity": 2, "target_label": "first response", "percent": 100}),
            Some(7),
        );
        assert_eq!(breach.mention_role, Some(7));
        assert!(breach
            .embed
            .unwrap()
            .title
            .contains("first response missed"));
    }

    #[test]
    fn customer_posts_are_plain_text_and_digests_list_tickets() {
        let c = render(
            &json!({"kind": "customer", "text": "Ihr Ticket 10001\n"}),
            Some(1),
        );
        assert_eq!(c.content, "Ihr Ticket 10001");
        assert!(c.embed.is_none());
        let d = render(
            &json!({"kind": "digest", "name": "morning", "open": 3, "running": 2, "paused": 0, "breached": 1,
                    "tickets": [{"number": "10001", "severity": 1, "state": "breached", "subject": "x"}]}),
            None,
        );
        let e = d.embed.unwrap();
        assert!(e.description.contains("**10001**"));
        assert_eq!(e.colour, severity_colour(1));
    }

    #[test]
    fn a_refused_grant_is_loud_and_names_the_repair() {
        let p = render(
            &json!({"kind": "grant-refused", "account": "imap:support", "name": "support",
                    "detail": "invalid_grant: AADSTS70000: revoked"}),
            Some(77),
        );
        let e = p.embed.unwrap();
        assert_eq!(e.title, "🔑 Login refused: imap:support");
        assert!(e.description.contains("AADSTS70000"));
        assert!(e.description.contains("`ticketd auth login support`"));
        assert_eq!(e.colour, severity_colour(1));
        assert_eq!(p.mention_role, Some(77));
        assert!(e.fields.iter().all(|(k, _, _)| k != "Severity"));
    }

    #[test]
    fn odd_bodies_render_without_panicking() {
        for b in [
            json!(null),
            json!([]),
            json!({"kind": 5}),
            json!({"kind": "new", "severity": "x", "due": "nonsense"}),
        ] {
            let p = render(&b, None);
            assert!(p.embed.is_some());
        }
        let long = "x".repeat(10_000);
        let p = render(
            &json!({"kind": "new", "ticket": "1", "subject": long, "text": long}),
            None,
        );
        let e = p.embed.unwrap();
        assert!(e.title.chars().count() <= 256 && e.description.chars().count() <= 4096);
    }

    #[test]
    fn thread_names_fit() {
        assert_eq!(thread_name("10001", "  Mail\n down "), "10001 – Mail down");
        assert_eq!(thread_name("10001", ""), "10001");
        assert_eq!(thread_name("1", &"ä".repeat(300)).chars().count(), 100);
    }

    #[test]
    fn the_feed_skips_what_discord_did_itself_and_what_tells_nothing() {
        let mail = Some("mail");
        assert_eq!(
            feed_kind("created", "created from mail", false, mail, true),
            Some("new")
        );
        assert_eq!(
            feed_kind("appended", "threaded", false, mail, true),
            Some("reply")
        );
        assert_eq!(feed_kind("appended", "threaded", true, mail, true), None);
        assert_eq!(
            feed_kind(
                "resolved",
                "open → resolved by cli:anna",
                false,
                None,
                false
            ),
            Some("status")
        );
        assert_eq!(
            feed_kind(
                "resolved",
                "open → resolved by discord:anna",
                false,
                None,
                false
            ),
            None
        );
        assert_eq!(feed_kind("note", "by cli:anna", false, None, false), None);
        assert_eq!(
            feed_kind("appended", "note", false, Some("staff-note"), true),
            None
        );
        assert_eq!(feed_kind("duplicate", "", false, mail, false), None);
        // A repeated alert is only counted; a state change is posted.
        assert_eq!(
            feed_kind("appended", "repeat", false, Some("alert"), false),
            None
        );
        assert_eq!(
            feed_kind("appended", "critical", false, Some("alert"), true),
            Some("alert")
        );
        assert_eq!(
            feed_kind("appended", "b", false, Some("bounce"), true),
            Some("bounce")
        );
        assert_eq!(
            feed_kind("appended", "ooo", false, Some("auto-reply"), true),
            None
        );
    }
}
