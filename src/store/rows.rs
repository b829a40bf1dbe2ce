//! The rows several writers share: audit events, a ticket's text rows
//! (participants, thread ids, tags), articles, and queued mails and chat
//! posts — each appended to a [`Script`].

use super::*;

/// Appends audit events of one ticket and message, in the order given.
pub(super) fn events(
    s: &mut Script,
    ticket: Option<i64>,
    message: Option<i64>,
    list: &[(&str, &str)],
    now: &str,
) {
    s.rows(
        "INSERT INTO events (ticket_id, message_ref, kind, detail, created_at) VALUES ",
        list,
        "",
        |s, (kind, detail)| {
            let (t, m, k, d, at) = (
                s.arg(ticket),
                s.arg(message),
                s.arg(*kind),
                s.arg(*detail),
                s.arg(now),
            );
            format!("({t}, {m}, {k}, {d}, {at})")
        },
    );
}

/// Appends rows of a ticket's table that has only the ticket and one text:
/// participants, thread ids, with `ON CONFLICT DO NOTHING`.
pub(super) fn ticket_texts(s: &mut Script, head: &str, ticket: i64, texts: &[&str]) {
    s.rows(head, texts, " ON CONFLICT DO NOTHING", |s, text| {
        let (t, x) = (s.arg(ticket), s.arg(*text));
        format!("({t}, {x})")
    });
}

/// One row of `articles`; a column left `None` is stored NULL.
#[derive(Debug, Default)]
pub(super) struct Article<'a> {
    pub(super) direction: &'a str,
    pub(super) kind: &'a str,
    pub(super) from_addr: Option<&'a str>,
    pub(super) from_name: Option<&'a str>,
    pub(super) to_addrs: Option<String>,
    pub(super) cc_addrs: Option<String>,
    pub(super) subject: Option<&'a str>,
    pub(super) message_id: Option<&'a str>,
    pub(super) body: &'a str,
    pub(super) message_ref: Option<i64>,
    pub(super) outbox_ref: Option<i64>,
}

impl<'a> Article<'a> {
    pub(super) fn note(text: &'a str) -> Article<'a> {
        Article {
            direction: "note",
            kind: "note",
            body: text,
            ..Article::default()
        }
    }

    /// The ticket's outgoing article for a queued mail.
    pub(super) fn outgoing(kind: &'a str, out: &'a Outgoing, outbox_id: i64) -> Article<'a> {
        Article {
            direction: "out",
            kind,
            to_addrs: Some(out.to.join(", ")),
            subject: Some(&out.subject),
            message_id: Some(out.message_id.as_str()),
            body: &out.body,
            outbox_ref: Some(outbox_id),
            ..Article::default()
        }
    }
}

/// Queues a chat post in `s`: a `chat_outbox` row for the channel named
/// `channel`, due at once.
pub(super) fn queue_chat(
    s: &mut Script,
    ticket: Option<i64>,
    channel: &str,
    kind: &str,
    body: &serde_json::Value,
    now: &str,
) {
    let ps = [
        s.arg(ticket),
        s.arg(channel),
        s.arg(kind),
        s.arg(body.to_string()),
        s.arg(now),
    ];
    s.push(format_args!(
        "INSERT INTO chat_outbox (ticket_id, channel, kind, body, status, next_attempt_at, created_at)
         VALUES ({}, {}, {}, {}, 'queued', {}, {})",
        ps[0], ps[1], ps[2], ps[3], ps[4], ps[4]
    ));
    s.end();
}

/// The id the next outbox row of this transaction gets when none was
/// counted yet: one more than the highest so far (the write lock keeps it
/// free until the commit). The one place outbox ids are allocated outside
/// the intake, so a backend with sequences can replace it.
pub(super) async fn next_outbox_id(conn: &mut SqliteConnection) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(id), 0) + 1 FROM outbox")
            .fetch_one(conn)
            .await?,
    )
}

/// Queues one built mail in the outbox as row `id`, due at once.
pub(super) fn queue_outgoing(
    s: &mut Script,
    id: i64,
    ticket: Option<i64>,
    kind: &str,
    out: &Outgoing,
    now: &str,
) {
    let recipients = serde_json::to_string(&out.to).unwrap_or_else(|_| "[]".into());
    let ps = [
        s.arg(id),
        s.arg(ticket),
        s.arg(kind),
        s.arg(recipients),
        s.arg(out.sender.as_str()),
        s.arg(out.subject.as_str()),
        s.arg(out.message_id.as_str()),
        s.arg(out.raw.as_slice()),
        s.arg(now),
    ];
    s.push(format_args!(
        "INSERT INTO outbox (id, ticket_id, kind, recipients, sender, subject, message_id, raw, status, next_attempt_at, created_at)
         VALUES ({}, {}, {}, {}, {}, {}, {}, {}, 'queued', {}, {})",
        ps[0], ps[1], ps[2], ps[3], ps[4], ps[5], ps[6], ps[7], ps[8], ps[8]
    ));
    s.end();
}

/// Appends articles of one ticket with ids `first`, `first + 1`, … in the
/// order given (`None`: ids as SQLite picks them).
pub(super) fn articles(
    s: &mut Script,
    ticket: i64,
    first: Option<i64>,
    list: &[Article<'_>],
    now: &str,
) {
    let mut id = first;
    s.rows(
        "INSERT INTO articles (id, ticket_id, direction, kind, from_addr, from_name, to_addrs, cc_addrs, subject, message_id, body, message_ref, outbox_ref, created_at) VALUES ",
        list,
        "",
        |s, a| {
            let ps = [
                s.arg(id),
                s.arg(ticket),
                s.arg(a.direction),
                s.arg(a.kind),
                s.arg(a.from_addr),
                s.arg(a.from_name),
                s.arg(a.to_addrs.as_deref()),
                s.arg(a.cc_addrs.as_deref()),
                s.arg(a.subject),
                s.arg(a.message_id),
                s.arg(a.body),
                s.arg(a.message_ref),
                s.arg(a.outbox_ref),
                s.arg(now),
            ];
            id = id.map(|i| i + 1);
            let ps: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
            format!("({})", ps.join(", "))
        },
    );
}
