//! What staff do to a ticket — a reply to the requester, a status or
//! severity change, an internal note, an assignment: the ticket read for an
//! action ([`action_ticket`]) and the write of what the service planned
//! ([`write_action`]: the rows and audit texts of a [`ActionPlan`]). The
//! caller brings the ticket's SLA clock up to date
//! (`service::timers::sync`) in the same transaction.

use super::{articles, events, queue_outgoing, ticket_texts, Article, Script, StoreError};
pub use crate::domain::{severity_change, status_event};
use crate::domain::{Mailbox, MessageId, Severity, Status, TicketNumber};
use crate::plan::ActionPlan;
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
    /// Who has it (a key such as `discord:123`), if anyone.
    pub assignee: Option<String>,
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
        "SELECT id, number, subject, status, severity, requester, requester_name, organisation, reply_to, assignee FROM tickets WHERE number = $1",
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
        assignee: row.try_get("assignee")?,
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

/// Writes a staff action as planned: the ticket's changed columns, the
/// reply in the outbox with its outgoing article and Message-ID, the note,
/// the audit events. Returns the reply's outbox id, if there is one.
pub async fn write_action(
    conn: &mut SqliteConnection,
    plan: &ActionPlan,
    now: &str,
) -> Result<Option<i64>, ActionError> {
    let id = plan.ticket_id;
    let mut s = Script::default();
    let outbox_id = match &plan.reply {
        Some(r) => {
            let outbox_id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM outbox")
                .fetch_one(&mut *conn)
                .await?;
            queue_outgoing(&mut s, outbox_id, Some(id), "reply", &r.mail, now);
            let mut art = Article::outgoing("reply", &r.mail, outbox_id);
            art.from_addr = Some(&r.mail.sender);
            art.from_name = Some(&r.author);
            articles(&mut s, id, None, &[art], now);
            ticket_texts(
                &mut s,
                "INSERT INTO thread_ids (ticket_id, message_id) VALUES ",
                id,
                &[r.mail.message_id.as_str()],
            );
            Some(outbox_id)
        }
        None => None,
    };
    let mut sets = Vec::new();
    if let Some(st) = plan.status {
        sets.push(format!("status = {}", s.arg(st.as_str())));
    }
    if let Some((sev, rule)) = &plan.severity {
        sets.push(format!("severity = {}", s.arg(i64::from(sev.level()))));
        sets.push(format!("severity_rule = {}", s.arg(rule.as_str())));
    }
    if let Some((key, name)) = &plan.assignee {
        sets.push(format!("assignee = {}", s.arg(key.as_str())));
        sets.push(format!("assignee_name = {}", s.arg(name.as_str())));
    }
    if !sets.is_empty() {
        let (at, tid) = (s.arg(now), s.arg(id));
        sets.push(format!("updated_at = {at}"));
        s.push(format_args!(
            "UPDATE tickets SET {} WHERE id = {tid}",
            sets.join(", ")
        ));
        s.end();
    }
    if let Some((text, author)) = &plan.note {
        let mut art = Article::note(text);
        art.from_name = Some(author);
        articles(&mut s, id, None, &[art], now);
    }
    let list: Vec<(&str, &str)> = plan.events.iter().map(|(k, d)| (*k, d.as_str())).collect();
    events(&mut s, Some(id), None, &list, now);
    s.run(conn).await?;
    Ok(outbox_id)
}
