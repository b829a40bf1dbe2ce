//! What staff do to a ticket — a reply to the requester, a status or
//! severity change, an internal note — each recorded on the ticket with who
//! did it. The command line uses these now, the chat adapter will too; the
//! caller brings the ticket's SLA clock up to date (`service::timers::sync`)
//! in the same transaction.

use super::{articles, events, queue_outgoing, ticket_texts, Article, Script, StoreError};
use crate::domain::{Mailbox, MessageId, Severity, Status, TicketNumber};
use crate::outbound::mail::Outgoing;
use sqlx::{Row, SqliteConnection};

/// A ticket as an action needs it: who to answer and how to thread it.
#[derive(Debug, Clone)]
pub struct ActionTicket {
    /// Row id.
    pub id: i64,
    /// Public number.
    pub number: TicketNumber,
    /// Subject as first received.
    pub subject: String,
    /// Where it stands.
    pub status: Status,
    /// Current severity.
    pub severity: Severity,
    /// The customer who opened it.
    pub requester: Mailbox,
    /// Where the customer asked answers to go (the Reply-To of the
    /// requester's latest mail), when not to the requester.
    pub reply_to: Option<String>,
    /// The customer's organisation (directory id), if known.
    pub organisation: Option<String>,
    /// The newest customer mail's Message-ID: what a reply answers.
    pub last_inbound: Option<MessageId>,
    /// Message-IDs of the ticket's mails, oldest first: a reply's
    /// References.
    pub references: Vec<MessageId>,
}

/// Why an action was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No ticket has this number.
    #[error("no ticket {0}")]
    NoTicket(String),
    /// The change makes no sense from where the ticket stands.
    #[error("{0}")]
    Refused(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ActionError {
    fn from(e: sqlx::Error) -> Self {
        ActionError::Store(StoreError::Db(e))
    }
}

/// Reads the ticket numbered `number` for an action.
pub async fn action_ticket(
    conn: &mut SqliteConnection,
    number: &str,
) -> Result<ActionTicket, ActionError> {
    let row = sqlx::query(
        "SELECT id, number, subject, status, severity, requester, requester_name, organisation, reply_to FROM tickets WHERE number = $1",
    )
    .bind(number.trim())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ActionError::NoTicket(number.trim().to_string()))?;
    let id: i64 = row.try_get("id")?;
    let severity: i64 = row.try_get("severity")?;
    let mids: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT direction, kind, message_id FROM articles WHERE ticket_id = $1 AND message_id IS NOT NULL ORDER BY id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    // A customer's mail, not a staff member's or a robot's on the ticket.
    let last_inbound = mids
        .iter()
        .rev()
        .find(|(d, k, _)| d == "in" && k == "mail")
        .and_then(|(_, _, m)| MessageId::parse(m));
    Ok(ActionTicket {
        id,
        number: TicketNumber(row.try_get("number")?),
        subject: row.try_get("subject")?,
        status: Status::parse(row.try_get::<&str, _>("status")?),
        severity: Severity::try_from(severity).map_err(StoreError::Corrupt)?,
        requester: Mailbox {
            address: row.try_get("requester")?,
            name: row.try_get("requester_name")?,
        },
        reply_to: row.try_get("reply_to")?,
        organisation: row.try_get("organisation")?,
        last_inbound,
        // The customer's mails and ours; staff members' own are internal.
        references: mids
            .iter()
            .filter(|(d, k, _)| d == "out" || k == "mail")
            .filter_map(|(_, _, m)| MessageId::parse(m))
            .collect(),
    })
}

impl ActionTicket {
    /// Where mail to the customer goes: the reply address the customer
    /// asked for (with no name: it may be another person's), else the
    /// requester.
    pub fn customer(&self) -> Mailbox {
        match &self.reply_to {
            Some(a) => Mailbox {
                address: a.clone(),
                name: None,
            },
            None => self.requester.clone(),
        }
    }
}

/// The event kind a status change is recorded as; the SLA clock reads
/// these (waiting pauses it, resumed/reopened resume it, resolved/closed
/// stop it).
pub fn status_event(from: Status, to: Status) -> &'static str {
    match (from, to) {
        (_, Status::Pending) => "waiting",
        (Status::Pending, Status::Open | Status::New) => "resumed",
        (Status::Resolved | Status::Closed, Status::Open | Status::New) => "reopened",
        (_, Status::Resolved) => "resolved",
        (_, Status::Closed) => "closed",
        _ => "status",
    }
}

/// Queues a staff member's reply to the requester (`out`, built and
/// threaded by the caller) and records it: an outgoing article by
/// `author`, the event `staff-reply` the SLA clock counts as a response,
/// the Message-ID for threading. A new ticket becomes open; with
/// `then_pending` it waits for the customer.
pub async fn reply(
    conn: &mut SqliteConnection,
    t: &ActionTicket,
    out: &Outgoing,
    author: &str,
    then_pending: bool,
    now: &str,
) -> Result<i64, ActionError> {
    let outbox_id = super::next_outbox_id(conn).await?;
    let mut s = Script::default();
    queue_outgoing(&mut s, outbox_id, Some(t.id), "reply", out, now);
    let mut art = Article::outgoing("reply", out, outbox_id);
    art.from_addr = Some(&out.sender);
    art.from_name = Some(author);
    articles(&mut s, t.id, None, &[art], now);
    ticket_texts(
        &mut s,
        "INSERT INTO thread_ids (ticket_id, message_id) VALUES ",
        t.id,
        &[out.message_id.as_str()],
    );
    let by = format!("by {author}, to {}", out.to.join(", "));
    let mut list = vec![("staff-reply", by.as_str())];
    let to = if then_pending {
        Status::Pending
    } else if matches!(t.status, Status::New) {
        Status::Open
    } else {
        t.status
    };
    let change = format!("{} → {} by {author}", t.status.as_str(), to.as_str());
    if to != t.status {
        list.push((status_event(t.status, to), change.as_str()));
    }
    status_row(&mut s, t.id, to, now);
    events(&mut s, Some(t.id), None, &list, now);
    s.run(conn).await?;
    Ok(outbox_id)
}

fn status_row(s: &mut Script, id: i64, to: Status, now: &str) {
    let (st, at, id) = (s.arg(to.as_str()), s.arg(now), s.arg(id));
    s.push(format_args!(
        "UPDATE tickets SET status = {st}, updated_at = {at} WHERE id = {id}"
    ));
    s.end();
}

/// Sets the ticket's status. Returns `false` when it already had it.
pub async fn set_status(
    conn: &mut SqliteConnection,
    t: &ActionTicket,
    to: Status,
    author: &str,
    now: &str,
) -> Result<bool, ActionError> {
    if to == t.status {
        return Ok(false);
    }
    if to == Status::New {
        return Err(ActionError::Refused(
            "a ticket cannot be set back to new; use open".into(),
        ));
    }
    let mut s = Script::default();
    status_row(&mut s, t.id, to, now);
    let detail = format!("{} → {} by {author}", t.status.as_str(), to.as_str());
    events(
        &mut s,
        Some(t.id),
        None,
        &[(status_event(t.status, to), detail.as_str())],
        now,
    );
    s.run(conn).await?;
    Ok(true)
}

/// The detail of a `severity` event: `from N to M by WHO`, read back by
/// [`crate::domain::severity_change`].
fn severity_detail(from: Severity, to: Severity, author: &str) -> String {
    format!("from {} to {} by {author}", from.level(), to.level())
}

/// Sets the ticket's severity (the SLA due times follow from receipt).
/// Returns `false` when it already had it.
pub async fn set_severity(
    conn: &mut SqliteConnection,
    t: &ActionTicket,
    to: Severity,
    author: &str,
    now: &str,
) -> Result<bool, ActionError> {
    if to == t.severity {
        return Ok(false);
    }
    let mut s = Script::default();
    let (sev, rule, at, id) = (
        s.arg(i64::from(to.level())),
        s.arg(format!("set by {author}")),
        s.arg(now),
        s.arg(t.id),
    );
    s.push(format_args!(
        "UPDATE tickets SET severity = {sev}, severity_rule = {rule}, updated_at = {at} WHERE id = {id}"
    ));
    s.end();
    let detail = severity_detail(t.severity, to, author);
    events(
        &mut s,
        Some(t.id),
        None,
        &[("severity", detail.as_str())],
        now,
    );
    s.run(conn).await?;
    Ok(true)
}

/// Gives the ticket to `key` (e.g. `discord:123`), shown as `name`.
/// Returns `false` when it already had that assignee.
pub async fn assign(
    conn: &mut SqliteConnection,
    t: &ActionTicket,
    key: &str,
    name: &str,
    author: &str,
    now: &str,
) -> Result<bool, ActionError> {
    let had: Option<String> = sqlx::query_scalar("SELECT assignee FROM tickets WHERE id = $1")
        .bind(t.id)
        .fetch_one(&mut *conn)
        .await?;
    if had.as_deref() == Some(key) {
        return Ok(false);
    }
    let mut s = Script::default();
    let (k, n, at, id) = (s.arg(key), s.arg(name), s.arg(now), s.arg(t.id));
    s.push(format_args!(
        "UPDATE tickets SET assignee = {k}, assignee_name = {n}, updated_at = {at} WHERE id = {id}"
    ));
    s.end();
    let detail = format!("to {name} by {author}");
    events(
        &mut s,
        Some(t.id),
        None,
        &[("assigned", detail.as_str())],
        now,
    );
    s.run(conn).await?;
    Ok(true)
}

/// Adds an internal note by `author` (never mailed).
pub async fn note(
    conn: &mut SqliteConnection,
    t: &ActionTicket,
    text: &str,
    author: &str,
    now: &str,
) -> Result<(), ActionError> {
    if text.trim().is_empty() {
        return Err(ActionError::Refused("the note is empty".into()));
    }
    let mut s = Script::default();
    let mut art = Article::note(text);
    art.from_name = Some(author);
    articles(&mut s, t.id, None, &[art], now);
    let detail = format!("by {author}");
    events(&mut s, Some(t.id), None, &[("note", detail.as_str())], now);
    s.run(conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::severity_change;

    #[test]
    fn severity_details_read_back() {
        let d = severity_detail(Severity::Malfunction, Severity::Critical, "cli:anna");
        assert_eq!(
            severity_change(&d),
            Some((Severity::Malfunction, Severity::Critical))
        );
        assert_eq!(severity_change("from 9 to 1"), None);
        assert_eq!(severity_change("garbage"), None);
    }

    #[test]
    fn status_changes_have_clock_events() {
        assert_eq!(status_event(Status::Open, Status::Pending), "waiting");
        assert_eq!(status_event(Status::Pending, Status::Open), "resumed");
        assert_eq!(status_event(Status::Resolved, Status::Open), "reopened");
        assert_eq!(status_event(Status::Closed, Status::Open), "reopened");
        assert_eq!(status_event(Status::Open, Status::Resolved), "resolved");
        assert_eq!(status_event(Status::Resolved, Status::Closed), "closed");
    }
}
