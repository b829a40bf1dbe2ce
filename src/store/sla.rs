//! SLA rows in the database. A ticket's clock is not stored: it is
//! computed by the pure SLA module from what [`sla_input`] reads (the
//! ticket's receipt and its events — staff replies, waits, resumptions,
//! resolutions, severity changes) whenever one of them changes. What is
//! stored is what follows from it, written as given ([`SlaRows`]): the
//! ticket's SLA state and nearest due time (for lists, metrics, the
//! digest) and one timer row for the reminder stage that goes out next,
//! with its due instant. The scheduler asks for due rows through the
//! `timers_due` index and records each as fired, so a restart neither
//! repeats nor skips one.

use super::{queue_chat, queue_outgoing, ts, Script, StoreError};
use crate::domain::{Severity, Status, TicketNumber};
use crate::plan::Outgoing;
pub use crate::plan::{PendingReminder, SlaRows};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use sqlx::{Row, SqliteConnection};

/// The event kinds the clock reads, in the order they happened.
const CLOCK_EVENTS: &str =
    "('staff-reply', 'waiting', 'resumed', 'reopened', 'resolved', 'closed', 'severity')";

/// Reads a stored instant.
fn instant(text: &str) -> Result<Timestamp, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("instant {text:?}: {e}")))
}

/// What a ticket's SLA is evaluated from: its row, its clock events and
/// the keys of its reminder stages that fired.
#[derive(Debug, Clone)]
pub struct SlaInput {
    /// Row id.
    pub id: i64,
    /// Public number.
    pub number: TicketNumber,
    /// Subject.
    pub subject: String,
    /// Status.
    pub status: Status,
    /// Current severity.
    pub severity: Severity,
    /// Organisation (directory id).
    pub organisation: Option<String>,
    /// Requester address.
    pub requester: String,
    /// Receipt: the arrival of the message that opened the ticket.
    pub received: Timestamp,
    /// The clock events (kind, detail, instant), oldest first.
    pub events: Vec<(String, String, Timestamp)>,
    /// Keys of the reminder stages that fired (or were superseded).
    pub fired: Vec<String>,
}

/// Reads what a ticket's SLA is evaluated from (`None`: no such ticket).
pub async fn sla_input(
    conn: &mut SqliteConnection,
    ticket_id: i64,
) -> Result<Option<SlaInput>, StoreError> {
    let Some(r) = sqlx::query(
        "SELECT id, number, subject, status, severity, organisation, requester, COALESCE(arrived_at, created_at) AS arrived_at FROM tickets WHERE id = $1",
    )
    .bind(ticket_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let severity: i64 = r.try_get("severity")?;
    let rows: Vec<(String, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT kind, detail, created_at FROM events WHERE ticket_id = $1 AND kind IN {CLOCK_EVENTS} ORDER BY id"
    )))
    .bind(ticket_id)
    .fetch_all(&mut *conn)
    .await?;
    let events = rows
        .into_iter()
        .map(|(k, d, at)| Ok((k, d, instant(&at)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let fired: Vec<String> = sqlx::query_scalar(
        "SELECT key FROM timers WHERE ticket_id = $1 AND kind = 'sla-reminder' AND fired_at IS NOT NULL",
    )
    .bind(ticket_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(SlaInput {
        id: r.try_get("id")?,
        number: TicketNumber(r.try_get("number")?),
        subject: r.try_get("subject")?,
        status: Status::parse(r.try_get::<&str, _>("status")?),
        severity: Severity::try_from(severity).map_err(StoreError::Corrupt)?,
        organisation: r.try_get("organisation")?,
        requester: r.try_get("requester")?,
        // The clock starts at the arrival of the first message.
        received: instant(r.try_get::<&str, _>("arrived_at")?)?,
        events,
        fired,
    }))
}

/// Writes a ticket's SLA rows into `s`: its SLA columns, and its pending
/// reminder row in place of the one before. `fresh`: a ticket created in
/// this script, without a row to replace.
pub(super) fn write(s: &mut Script, ticket_id: i64, rows: &SlaRows, fresh: bool) {
    let (st, due, target, id) = (
        s.arg(rows.state.as_str()),
        s.arg(rows.due_at.as_deref()),
        s.arg(rows.target.as_deref()),
        s.arg(ticket_id),
    );
    s.push(format_args!(
        "UPDATE tickets SET sla_state = {st}, sla_due_at = {due}, sla_target = {target} WHERE id = {id}"
    ));
    s.end();
    if !fresh {
        let id = s.arg(ticket_id);
        s.push(format_args!(
            "DELETE FROM timers WHERE ticket_id = {id} AND kind = 'sla-reminder' AND fired_at IS NULL"
        ));
        s.end();
    }
    if let Some(p) = &rows.pending {
        let ps = [
            s.arg(ticket_id),
            s.arg(p.key.as_str()),
            s.arg(p.due_at.as_str()),
            s.arg(p.planned_at.as_str()),
            s.arg(p.audiences.join(",")),
            s.arg(rows.now.as_str()),
        ];
        s.push(format_args!(
            "INSERT INTO timers (kind, ticket_id, key, due_at, planned_at, audiences, created_at)
             VALUES ('sla-reminder', {}, {}, {}, {}, {}, {}) ON CONFLICT DO NOTHING",
            ps[0], ps[1], ps[2], ps[3], ps[4], ps[5]
        ));
        s.end();
    }
}

/// Writes a ticket's SLA rows (after something changed its clock), in the
/// caller's transaction.
pub async fn write_rows(
    conn: &mut SqliteConnection,
    ticket_id: i64,
    rows: &SlaRows,
) -> Result<(), StoreError> {
    let mut s = Script::default();
    write(&mut s, ticket_id, rows, false);
    s.run(conn).await?;
    Ok(())
}

/// A digest run: the job, when it was due, and what it reports.
#[derive(Debug, Clone, Serialize)]
pub struct Digest {
    /// The job's name.
    pub name: String,
    /// When it was due.
    pub planned: Timestamp,
    /// How late it runs, when it runs late.
    pub late: Option<SignedDuration>,
    /// Open tickets by SLA state, and the urgent ones.
    pub status: SlaStatus,
}

/// Open tickets by SLA state and the tickets that need attention.
#[derive(Debug, Clone, Serialize)]
pub struct SlaStatus {
    /// Open tickets (not resolved or closed).
    pub open: i64,
    /// Of those, by SLA state.
    pub running: i64,
    /// Paused: waiting for the customer.
    pub paused: i64,
    /// Breached (or due by now).
    pub breached: i64,
    /// Met, or without SLA.
    pub other: i64,
    /// Breached tickets and those due within a day, most urgent first (at
    /// most 50).
    pub tickets: Vec<DigestTicket>,
}

/// One ticket of a digest.
#[derive(Debug, Clone, Serialize)]
pub struct DigestTicket {
    /// Number.
    pub number: String,
    /// Subject.
    pub subject: String,
    /// Severity 1–4.
    pub severity: i64,
    /// Organisation.
    pub organisation: Option<String>,
    /// SLA state (breached when due has passed).
    pub state: String,
    /// Nearest due instant.
    pub due: Option<String>,
    /// Which target is due.
    pub target: Option<String>,
}

/// Something to deliver about a timer: a mail through the outbox, or a
/// chat post through the chat outbox.
#[derive(Debug, Clone)]
pub enum Notification {
    /// A built mail.
    Mail(Outgoing),
    /// A post for a configured chat channel (JSON the chat adapter reads).
    Chat {
        /// The channel's configured name.
        channel: String,
        /// What to post.
        body: serde_json::Value,
    },
}

impl Notification {
    /// What it is, for outcomes and the log: `mail <addresses>` or
    /// `chat <channel>`.
    pub fn describe(&self) -> String {
        match self {
            Notification::Mail(out) => format!("mail {}", out.to.join(", ")),
            Notification::Chat { channel, .. } => format!("chat {channel}"),
        }
    }
}

/// Queues notifications in `s`: mails in the outbox, chat posts in the
/// chat outbox. `last_outbox` is the last outbox id `s` has used (`None`:
/// read it); the script runs later, so ids are counted here. Returns a
/// description per entry.
pub(super) async fn queue_notifications(
    conn: &mut SqliteConnection,
    s: &mut Script,
    last_outbox: &mut Option<i64>,
    ticket: Option<i64>,
    kind: &str,
    list: &[Notification],
    now: &str,
) -> Result<Vec<String>, StoreError> {
    let next = last_outbox;
    let mut said = Vec::with_capacity(list.len());
    for n in list {
        match n {
            Notification::Mail(out) => {
                let id = match *next {
                    Some(i) => i + 1,
                    None => super::next_outbox_id(conn).await?,
                };
                *next = Some(id);
                queue_outgoing(s, id, ticket, kind, out, now);
            }
            Notification::Chat { channel, body } => {
                queue_chat(s, ticket, channel, kind, body, now);
            }
        }
        said.push(n.describe());
    }
    Ok(said)
}

/// Counts of open tickets by SLA state, a breached state being one whose
/// due time has passed even before its breach timer fired.
pub async fn state_counts(
    conn: &mut SqliteConnection,
    now: &str,
) -> Result<Vec<(String, i64)>, StoreError> {
    // Both counts come from the (status, sla_state, sla_due_at) index
    // alone; a running ticket past its due is breached before its breach
    // timer has fired.
    let mut counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT COALESCE(sla_state, 'none'), COUNT(*) FROM tickets
         WHERE status IN ('new', 'open', 'pending') GROUP BY status, sla_state",
    )
    .fetch_all(&mut *conn)
    .await?;
    let overdue: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM tickets WHERE status IN ('new', 'open', 'pending')
         AND sla_state = 'running' AND sla_due_at <= $1",
    )
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    let mut merged: Vec<(String, i64)> = Vec::new();
    counts.push(("breached".into(), overdue));
    for (state, n) in counts {
        match merged.iter_mut().find(|(s, _)| *s == state) {
            Some((_, m)) => *m += n,
            None => merged.push((state, n)),
        }
    }
    if let Some((_, r)) = merged.iter_mut().find(|(s, _)| s == "running") {
        *r -= overdue;
    }
    merged.sort();
    Ok(merged)
}

/// Open tickets by SLA state, and at most `limit` urgent ones.
pub async fn sla_status(
    conn: &mut SqliteConnection,
    now: Timestamp,
    limit: i64,
) -> Result<SlaStatus, StoreError> {
    let counts = state_counts(conn, &ts(now)).await?;
    let count = |st: &str| {
        counts
            .iter()
            .filter(|(s, _)| s == st)
            .map(|(_, n)| *n)
            .sum::<i64>()
    };
    let open: i64 = counts.iter().map(|(_, n)| *n).sum();
    Ok(SlaStatus {
        open,
        running: count("running"),
        paused: count("paused"),
        breached: count("breached"),
        other: open - count("running") - count("paused") - count("breached"),
        tickets: urgent_tickets(conn, now, limit).await?,
    })
}

/// The tickets a digest lists: breached, then due within a day, most
/// urgent first, at most `limit`.
pub async fn urgent_tickets(
    conn: &mut SqliteConnection,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<DigestTicket>, StoreError> {
    let now_s = ts(now);
    let soon = ts(now
        .checked_add(SignedDuration::from_hours(24))
        .unwrap_or(now));
    // Two index range reads (tickets_sla): the breached, then the running
    // ones due within a day (those already past due first).
    let mut rows = sqlx::query(
        "SELECT number, subject, severity, organisation, sla_state, sla_due_at, sla_target FROM tickets
         WHERE sla_state = 'breached' AND status IN ('new', 'open', 'pending')
         ORDER BY sla_due_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.extend(
        sqlx::query(
            "SELECT number, subject, severity, organisation, sla_state, sla_due_at, sla_target FROM tickets
             WHERE sla_state = 'running' AND sla_due_at <= $1 AND status IN ('new', 'open', 'pending')
             ORDER BY sla_due_at LIMIT $2",
        )
        .bind(&soon)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?,
    );
    let mut list = rows
        .iter()
        .map(|r| {
            let state: Option<String> = r.try_get("sla_state")?;
            let due: Option<String> = r.try_get("sla_due_at")?;
            let breached = state.as_deref() == Some("breached")
                || due.as_deref().is_some_and(|d| d <= now_s.as_str());
            Ok(DigestTicket {
                number: r.try_get("number")?,
                subject: r.try_get("subject")?,
                severity: r.try_get("severity")?,
                organisation: r.try_get("organisation")?,
                state: if breached {
                    "breached".into()
                } else {
                    state.unwrap_or_default()
                },
                due,
                target: r.try_get("sla_target")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    // Breached first, then by due.
    list.sort_by(|a, b| {
        (a.state != "breached", &a.due, a.severity).cmp(&(
            b.state != "breached",
            &b.due,
            b.severity,
        ))
    });
    list.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(list)
}

/// Plans a digest's next run in `s`.
pub(super) fn schedule_digest(s: &mut Script, name: &str, at: &str, now: &str) {
    let (k, due, now) = (s.arg(name), s.arg(at), s.arg(now));
    s.push(format_args!(
        "INSERT INTO timers (kind, key, due_at, planned_at, created_at) VALUES ('digest', {k}, {due}, {due}, {now})"
    ));
    s.end();
}

/// Makes the digest timers match the configured jobs (`next` gives each
/// job's next run): a job without a pending row gets one; a row that is
/// already due stays (it fires once, late); a pending row of a job whose
/// schedule changed is planned afresh; rows of jobs no longer configured
/// are dropped.
pub async fn plan_digests(
    conn: &mut SqliteConnection,
    jobs: &[(String, Timestamp)],
    now: Timestamp,
) -> Result<(), StoreError> {
    let now_s = ts(now);
    let pending: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT id, key, due_at FROM timers WHERE kind = 'digest' AND fired_at IS NULL",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut s = Script::default();
    for (id, key, due) in &pending {
        let keep = jobs
            .iter()
            .any(|(n, next)| n == key && (due.as_str() <= now_s.as_str() || *due == ts(*next)));
        if !keep {
            let id = s.arg(*id);
            s.push(format_args!("DELETE FROM timers WHERE id = {id}"));
            s.end();
        }
    }
    for (name, next) in jobs {
        let kept = pending
            .iter()
            .any(|(_, k, due)| k == name && (due.as_str() <= now_s.as_str() || *due == ts(*next)));
        if !kept {
            schedule_digest(&mut s, name, &ts(*next), &now_s);
        }
    }
    s.run(conn).await?;
    Ok(())
}

/// A reminder row of a ticket, planned or fired.
#[derive(Debug, Clone, Serialize)]
pub struct ReminderRow {
    /// `s<severity>:<target>[:<cycle>]:<percent>`.
    pub key: String,
    /// When the SLA arithmetic put the stage.
    pub planned_at: Option<String>,
    /// When it fires (later than planned in quiet hours).
    pub due_at: String,
    /// When it fired; `None` while planned.
    pub fired_at: Option<String>,
    /// What firing did.
    pub outcome: Option<String>,
    /// Audience names.
    pub audiences: Vec<String>,
    /// `due_at` or `fired_at` for people (the desk's time zone), filled
    /// in by whoever shows it.
    pub local: Option<String>,
}

/// A ticket's reminder rows, by due time.
pub async fn reminder_rows(
    conn: &mut SqliteConnection,
    ticket_id: i64,
) -> Result<Vec<ReminderRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT key, planned_at, due_at, fired_at, outcome, audiences FROM timers
         WHERE ticket_id = $1 AND kind = 'sla-reminder' ORDER BY COALESCE(fired_at, due_at), id",
    )
    .bind(ticket_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ReminderRow {
                key: r.try_get::<Option<String>, _>("key")?.unwrap_or_default(),
                planned_at: r.try_get("planned_at")?,
                due_at: r.try_get("due_at")?,
                fired_at: r.try_get("fired_at")?,
                outcome: r.try_get("outcome")?,
                audiences: r
                    .try_get::<Option<String>, _>("audiences")?
                    .unwrap_or_default()
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .collect(),
                local: None,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::Db)
}
