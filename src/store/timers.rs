//! Timers in the database: what is due, the state a due timer is decided
//! on, and the writing of what was decided. The decision and the mails
//! and posts it sends are made by the caller between the read and the
//! write ([`TimerPlan`]); here nothing is evaluated or rendered.

use super::sla::{self, Notification, SlaRows};
use super::{articles, events, queue_chat, queue_outgoing, ticket_texts, ts, Article};
use super::{Script, Store, StoreError};
use crate::domain::{Severity, TicketNumber};
use jiff::Timestamp;
use sqlx::SqliteConnection;

/// A ticket a timer resolved, for the mails that tell its organisation.
#[derive(Debug, Clone)]
pub struct ResolvedTicket {
    /// Its number.
    pub number: TicketNumber,
    /// Its subject.
    pub subject: String,
    /// Its organisation (directory id).
    pub organisation: Option<String>,
    /// Its severity.
    pub severity: Severity,
    /// Why it was resolved.
    pub why: String,
}

/// What a fired timer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredTimer {
    /// The timer's kind (`recovery-hold`, `sla-reminder`, `digest`).
    pub kind: String,
    /// The ticket it concerned.
    pub ticket: Option<String>,
    /// Whether it resolved the ticket.
    pub resolved: bool,
    /// Whether it queued mail or chat posts (the outbox worker should look).
    pub queued: bool,
}

/// A timer that fell due, as its rows say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DueTimer {
    /// A digest job's run.
    Digest {
        /// Row id.
        id: i64,
        /// The job's name.
        name: String,
        /// When it was planned (`ts` form).
        planned: Option<String>,
    },
    /// A monitoring recovery's hold-down has passed.
    RecoveryHold {
        /// Row id.
        id: i64,
        /// The incident's ticket.
        ticket_id: i64,
        /// The incident's key.
        key: Option<String>,
    },
    /// A ticket's reminder rows that fell due together.
    Reminders {
        /// The ticket.
        ticket_id: i64,
        /// (row id, key) of each, in due order.
        rows: Vec<(i64, String)>,
    },
    /// A row of a kind this version does not know.
    Unknown {
        /// Row id.
        id: i64,
        /// Its kind.
        kind: String,
    },
}

/// The timers due at `now` (at most 100 rows), in the order they fire:
/// digests, recovery holds and unknown rows as they fell due, then the
/// reminder rows grouped per ticket (of several stages due at once only
/// the highest fires).
pub async fn due_timers(
    conn: &mut SqliteConnection,
    now: Timestamp,
) -> Result<Vec<DueTimer>, StoreError> {
    type Row = (i64, String, Option<i64>, Option<String>, Option<String>);
    let due: Vec<Row> = sqlx::query_as(
        "SELECT id, kind, ticket_id, key, planned_at FROM timers WHERE fired_at IS NULL AND due_at <= $1 ORDER BY due_at, id LIMIT 100",
    )
    .bind(ts(now))
    .fetch_all(&mut *conn)
    .await?;
    let mut list = Vec::with_capacity(due.len());
    let mut reminders: Vec<(i64, Vec<(i64, String)>)> = Vec::new();
    for (id, kind, ticket, key, planned) in due {
        match (kind.as_str(), ticket) {
            ("sla-reminder", Some(tid)) => {
                let r = (id, key.unwrap_or_default());
                match reminders.iter_mut().find(|(t, _)| *t == tid) {
                    Some((_, rows)) => rows.push(r),
                    None => reminders.push((tid, vec![r])),
                }
            }
            ("digest", _) => list.push(DueTimer::Digest {
                id,
                name: key.unwrap_or_default(),
                planned,
            }),
            ("recovery-hold", Some(ticket_id)) => {
                list.push(DueTimer::RecoveryHold { id, ticket_id, key })
            }
            _ => list.push(DueTimer::Unknown { id, kind }),
        }
    }
    list.extend(
        reminders
            .into_iter()
            .map(|(ticket_id, rows)| DueTimer::Reminders { ticket_id, rows }),
    );
    Ok(list)
}

/// An incident's ticket as a recovery hold decides on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldState {
    /// Whether the incident has a problem again.
    pub problem: bool,
    /// The ticket's status.
    pub status: String,
    /// Its number.
    pub number: TicketNumber,
    /// Its subject.
    pub subject: String,
    /// Its organisation (directory id).
    pub organisation: Option<String>,
    /// Its severity.
    pub severity: Severity,
}

/// The incident `key` and its ticket, when `ticket_id` is still the
/// incident's ticket.
pub async fn hold_state(
    conn: &mut SqliteConnection,
    ticket_id: i64,
    key: Option<&str>,
) -> Result<Option<HoldState>, StoreError> {
    let state: Option<(i64, String, String, String, Option<String>, i64)> = sqlx::query_as(
        "SELECT i.problem, t.status, t.number, t.subject, t.organisation, t.severity FROM incidents i
         JOIN tickets t ON t.id = i.ticket_id WHERE i.key = $1 AND i.ticket_id = $2",
    )
    .bind(key.unwrap_or(""))
    .bind(ticket_id)
    .fetch_optional(conn)
    .await?;
    Ok(state.map(
        |(problem, status, number, subject, organisation, severity)| HoldState {
            problem: problem != 0,
            status,
            number: TicketNumber(number),
            subject,
            organisation,
            severity: Severity::try_from(severity).unwrap_or(Severity::Malfunction),
        },
    ))
}

/// An article a timer adds to its ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannedArticle {
    /// An internal note.
    Note(String),
    /// The mail at this index of the plan's notifications, as sent; its
    /// Message-ID joins the ticket's thread.
    Mail(usize),
}

/// Everything one due timer changes, decided and rendered before it is
/// written: [`write_timer_plan`] writes it as given.
#[derive(Debug, Clone, Default)]
pub struct TimerPlan {
    /// The ticket it concerns.
    pub ticket: Option<i64>,
    /// The due row itself and its outcome (reminder rows are in
    /// `reminder_outcomes`).
    pub timer: Option<(i64, String)>,
    /// The ticket's new status (`updated_at` follows).
    pub status: Option<String>,
    /// Audit events on the ticket: (kind, detail).
    pub events: Vec<(String, String)>,
    /// The outbox and chat outbox kind of the notifications.
    pub kind: String,
    /// Mails and chat posts to queue, in order.
    pub notifications: Vec<Notification>,
    /// Articles on the ticket, in order.
    pub articles: Vec<PlannedArticle>,
    /// Counters to count up by one.
    pub counters: Vec<String>,
    /// Due reminder rows decided: (row id, outcome).
    pub reminder_outcomes: Vec<(i64, String)>,
    /// Reminder stages decided without a row of their own, recorded as
    /// fired rows: (key, planned instant, outcome).
    pub reminder_records: Vec<(String, String, String)>,
    /// The ticket's SLA rows afterwards.
    pub sla: Option<SlaRows>,
    /// The digest's next run: (job name, instant).
    pub next_digest: Option<(String, String)>,
    /// What it fired, for the log and metrics.
    pub fired: Vec<FiredTimer>,
}

/// Writes what one due timer decided, at `now`, in the caller's
/// transaction; mails get the next outbox ids.
pub async fn write_timer_plan(
    conn: &mut SqliteConnection,
    plan: &TimerPlan,
    now: Timestamp,
) -> Result<(), StoreError> {
    let now_s = ts(now);
    let now = now_s.as_str();
    let mut s = Script::default();
    if let (Some(status), Some(tid)) = (&plan.status, plan.ticket) {
        let (st, at, t) = (s.arg(status.as_str()), s.arg(now), s.arg(tid));
        s.push(format_args!(
            "UPDATE tickets SET status = {st}, updated_at = {at} WHERE id = {t}"
        ));
        s.end();
    }
    let list: Vec<(&str, &str)> = plan
        .events
        .iter()
        .map(|(k, d)| (k.as_str(), d.as_str()))
        .collect();
    events(&mut s, plan.ticket, None, &list, now);
    let mut ids: Vec<Option<i64>> = Vec::with_capacity(plan.notifications.len());
    let mut next: Option<i64> = None;
    for n in &plan.notifications {
        match n {
            Notification::Mail(out) => {
                let id = match next {
                    Some(i) => i + 1,
                    None => super::next_outbox_id(conn).await?,
                };
                next = Some(id);
                ids.push(Some(id));
                queue_outgoing(&mut s, id, plan.ticket, &plan.kind, out, now);
            }
            Notification::Chat { channel, body } => {
                ids.push(None);
                queue_chat(&mut s, plan.ticket, channel, &plan.kind, body, now);
            }
        }
    }
    if let Some(tid) = plan.ticket {
        let mut list = Vec::with_capacity(plan.articles.len());
        let mut thread = Vec::new();
        for a in &plan.articles {
            match a {
                PlannedArticle::Note(text) => list.push(Article::note(text)),
                PlannedArticle::Mail(i) => {
                    if let (Some(Notification::Mail(out)), Some(Some(id))) =
                        (plan.notifications.get(*i), ids.get(*i))
                    {
                        list.push(Article::outgoing(&plan.kind, out, *id));
                        thread.push(out.message_id.as_str());
                    }
                }
            }
        }
        articles(&mut s, tid, None, &list, now);
        ticket_texts(
            &mut s,
            "INSERT INTO thread_ids (ticket_id, message_id) VALUES ",
            tid,
            &thread,
        );
    }
    for counter in &plan.counters {
        let counter = s.arg(counter.as_str());
        s.push(format_args!(
            "INSERT INTO counters (name, value) VALUES ({counter}, 1)
             ON CONFLICT (name) DO UPDATE SET value = value + 1"
        ));
        s.end();
    }
    for (id, outcome) in &plan.reminder_outcomes {
        mark_fired(&mut s, *id, outcome, now);
    }
    for (key, planned, outcome) in &plan.reminder_records {
        let ps = [
            s.arg(plan.ticket),
            s.arg(key.as_str()),
            s.arg(planned.as_str()),
            s.arg(now),
            s.arg(outcome.as_str()),
        ];
        s.push(format_args!(
            "INSERT INTO timers (kind, ticket_id, key, due_at, planned_at, created_at, fired_at, outcome)
             VALUES ('sla-reminder', {}, {}, {}, {}, {}, {}, {}) ON CONFLICT DO NOTHING",
            ps[0], ps[1], ps[2], ps[2], ps[3], ps[3], ps[4]
        ));
        s.end();
    }
    if let (Some(rows), Some(tid)) = (&plan.sla, plan.ticket) {
        sla::write(&mut s, tid, rows, false);
    }
    if let Some((name, at)) = &plan.next_digest {
        sla::schedule_digest(&mut s, name, at, now);
    }
    if let Some((id, outcome)) = &plan.timer {
        mark_fired(&mut s, *id, outcome, now);
    }
    s.run(conn).await?;
    Ok(())
}

/// Records in `s` that timer row `id` fired at `now` with `outcome`.
fn mark_fired(s: &mut Script, id: i64, outcome: &str, now: &str) {
    let (at, o, id) = (s.arg(now), s.arg(outcome), s.arg(id));
    s.push(format_args!(
        "UPDATE timers SET fired_at = {at}, outcome = {o} WHERE id = {id}"
    ));
    s.end();
}

impl Store {
    /// When the next timer is due, if any is pending.
    pub async fn next_timer(&self) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT MIN(due_at) FROM timers WHERE fired_at IS NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
