//! Firing timers and keeping SLA rows current, as read → decide → write:
//! the store reads the rows (what is due, a ticket's SLA input), the pure
//! [`crate::sla::evaluate`] decides, the desk renders the mails and chat
//! posts from its templates, and the store writes the resulting plan —
//! all in one transaction, with no callback into the desk while a
//! statement is open.

use super::staff::SlaHooks;
use crate::domain::{Status, TicketNumber};
use crate::ingest::decide::{Decision, Target};
use crate::sla::evaluate::{
    digest_outcome, evaluate_with, fires_due, history_of, late_by, settle, Evaluated, SlaContext,
    SlaTicket, NOTHING_TO_EVALUATE,
};
use crate::sla::policy::Policies;
use crate::store::sla::{
    self as store_sla, Digest, Notification, PendingReminder, SlaInput, SlaRows, SlaStatus,
};
use crate::store::timers::{self, DueTimer, HoldState, PlannedArticle, TimerPlan};
use crate::store::{ts, FiredTimer, ResolvedTicket, Store, StoreError};
use jiff::Timestamp;
use sqlx::SqliteConnection;

/// Evaluates a ticket's SLA from what the store read of it.
pub(super) fn evaluated(input: SlaInput, ctx: &SlaContext<'_>, now: Timestamp) -> Evaluated {
    let history = history_of(input.received, &input.events);
    let ticket = SlaTicket {
        id: input.id,
        number: input.number,
        subject: input.subject,
        status: input.status,
        severity: input.severity,
        organisation: input.organisation,
        requester: input.requester,
        received: input.received,
    };
    let mut e = evaluate_with(ticket, history, ctx, now);
    e.fired = input.fired;
    e
}

/// The rows an evaluation writes: the ticket's SLA columns and its one
/// pending reminder row, the stage that goes out next.
pub(super) fn sla_rows(e: &Evaluated, policies: &Policies) -> SlaRows {
    SlaRows {
        state: e.state.to_string(),
        due_at: e.next_due.as_ref().map(|(d, _)| ts(*d)),
        target: e.next_due.as_ref().map(|(_, t)| t.clone()),
        pending: e.next_row(policies).map(|(c, due)| PendingReminder {
            key: c.key.clone(),
            due_at: ts(due),
            planned_at: ts(c.at),
            audiences: c.to.clone(),
        }),
        now: ts(e.now),
    }
}

/// Reads a ticket and evaluates its SLA at `now` (`None`: no such ticket).
pub(super) async fn evaluate_ticket(
    conn: &mut SqliteConnection,
    ticket_id: i64,
    ctx: &SlaContext<'_>,
    now: Timestamp,
) -> Result<Option<Evaluated>, StoreError> {
    Ok(store_sla::sla_input(conn, ticket_id)
        .await?
        .map(|input| evaluated(input, ctx, now)))
}

/// Brings a ticket's SLA up to date after something changed it, in the
/// caller's transaction. Returns the evaluation (`None`: no such ticket).
pub(super) async fn sync(
    conn: &mut SqliteConnection,
    ticket_id: i64,
    ctx: &SlaContext<'_>,
    now: Timestamp,
) -> Result<Option<Evaluated>, StoreError> {
    let Some(e) = evaluate_ticket(conn, ticket_id, ctx, now).await? else {
        return Ok(None);
    };
    store_sla::write_rows(conn, ticket_id, &sla_rows(&e, ctx.policies)).await?;
    Ok(Some(e))
}

/// The SLA rows of the ticket a decision opens, if it opens one and SLA
/// clocks run: its clock starts at the message's arrival (`arrived`, `ts`
/// form) with nothing in its history, evaluated at `now` (`ts` form).
pub(super) fn new_ticket_sla(
    ctx: Option<&SlaContext<'_>>,
    d: &Decision,
    arrived: &str,
    now: &str,
) -> Option<SlaRows> {
    let (Some(ctx), Target::New(t)) = (ctx, &d.target) else {
        return None;
    };
    let (Ok(received), Ok(at)) = (arrived.parse::<Timestamp>(), now.parse::<Timestamp>()) else {
        return None;
    };
    let input = SlaInput {
        id: 0,
        number: TicketNumber(String::new()),
        subject: t.subject.clone(),
        status: Status::New,
        severity: t.severity,
        organisation: t.organisation.clone(),
        requester: t.requester.key(),
        received,
        events: Vec::new(),
        fired: Vec::new(),
    };
    let e = evaluated(input, ctx, at);
    Some(sla_rows(&e, ctx.policies))
}

/// Fires due timers on a store: the timer task's one call.
pub trait FireTimers {
    /// Fires the timers due at `now` (at most 100 per call), each once,
    /// recorded with its outcome: a recovery-hold resolves its ticket when
    /// the incident is still recovered and the ticket still open (else it
    /// lapses); an SLA reminder stage notifies its audiences (per ticket
    /// and target only the highest stage due, marked late when the daemon
    /// was down); a digest reports the open tickets and plans its next
    /// run. `hooks` renders the mails and chat posts, queued in the same
    /// transaction. Returns what each did, for the log.
    fn fire_due_timers(
        &self,
        now: Timestamp,
        hooks: &mut SlaHooks<'_>,
    ) -> impl std::future::Future<Output = Result<Vec<FiredTimer>, StoreError>> + Send;
}

impl FireTimers for Store {
    async fn fire_due_timers(
        &self,
        now: Timestamp,
        hooks: &mut SlaHooks<'_>,
    ) -> Result<Vec<FiredTimer>, StoreError> {
        let mut tx = self.begin().await?;
        let due = timers::due_timers(&mut tx, now).await?;
        let mut fired = Vec::with_capacity(due.len());
        // Each timer's state is read after the one before it was written:
        // a recovery hold that resolves a ticket makes that ticket's
        // reminders due with it obsolete, and a digest counts it resolved.
        for timer in due {
            let plan = match timer {
                DueTimer::Digest { id, name, planned } => {
                    let next = hooks.next_digest(&name, now);
                    let status = match next {
                        Some(_) => Some(store_sla::sla_status(&mut tx, now, 50).await?),
                        None => None,
                    };
                    hooks.plan_digest(id, &name, planned.as_deref(), next.zip(status), now)
                }
                DueTimer::RecoveryHold { id, ticket_id, key } => {
                    let state = timers::hold_state(&mut tx, ticket_id, key.as_deref()).await?;
                    let input = match (&state, hooks.context()) {
                        (Some(s), Some(_)) if resolves(s) => {
                            store_sla::sla_input(&mut tx, ticket_id).await?
                        }
                        _ => None,
                    };
                    hooks.plan_hold(id, ticket_id, state, input, now)
                }
                DueTimer::Reminders { ticket_id, rows } => {
                    let input = match hooks.context() {
                        Some(_) => store_sla::sla_input(&mut tx, ticket_id).await?,
                        None => None,
                    };
                    hooks.plan_reminders(ticket_id, &rows, input, now)
                }
                DueTimer::Unknown { id, kind } => TimerPlan {
                    timer: Some((id, "unknown kind: left alone".into())),
                    fired: vec![FiredTimer {
                        kind,
                        ticket: None,
                        resolved: false,
                        queued: false,
                    }],
                    ..TimerPlan::default()
                },
            };
            timers::write_timer_plan(&mut tx, &plan, now).await?;
            fired.extend(plan.fired);
        }
        tx.commit().await?;
        Ok(fired)
    }
}

/// Whether a recovery hold resolves its ticket: the problem stayed away
/// and the ticket is still open.
fn resolves(s: &HoldState) -> bool {
    !s.problem && s.status != "resolved" && s.status != "closed"
}

/// Why a recovery hold resolves a ticket (its audit event).
const HOLD_WHY: &str = "the monitoring recovery held through its hold-down time";

impl SlaHooks<'_> {
    /// The plan of a digest run that fell due (`planned`): its counts and
    /// urgent tickets (`run`: its next run and the status read for it;
    /// `None` when the job is no longer configured) to its audiences.
    pub(super) fn plan_digest(
        &self,
        id: i64,
        name: &str,
        planned: Option<&str>,
        run: Option<(Timestamp, SlaStatus)>,
        now: Timestamp,
    ) -> TimerPlan {
        let fired = |queued| FiredTimer {
            kind: "digest".into(),
            ticket: None,
            resolved: false,
            queued,
        };
        let Some((next, status)) = run else {
            return TimerPlan {
                timer: Some((id, "obsolete: the digest is no longer configured".into())),
                fired: vec![fired(false)],
                ..TimerPlan::default()
            };
        };
        let planned = planned
            .and_then(|p| p.parse::<Timestamp>().ok())
            .unwrap_or(now);
        let d = Digest {
            name: name.to_string(),
            planned,
            late: late_by(planned, now),
            status,
        };
        let list = self.digest_notices(&d);
        let said: Vec<String> = list.iter().map(Notification::describe).collect();
        let outcome = digest_outcome(d.status.open, d.status.breached, &said, d.late);
        TimerPlan {
            timer: Some((id, outcome)),
            kind: "digest".into(),
            fired: vec![fired(!list.is_empty())],
            notifications: list,
            next_digest: Some((name.to_string(), ts(next))),
            ..TimerPlan::default()
        }
    }

    /// The plan of a monitoring recovery's hold-down that passed: resolve
    /// the ticket when the problem stayed away (tell the organisation,
    /// stop its SLA clock from `input`, read before), else lapse.
    pub(super) fn plan_hold(
        &self,
        id: i64,
        ticket_id: i64,
        state: Option<HoldState>,
        input: Option<SlaInput>,
        now: Timestamp,
    ) -> TimerPlan {
        let lapse = |why: &str, ticket: Option<String>| TimerPlan {
            timer: Some((id, why.to_string())),
            fired: vec![FiredTimer {
                kind: "recovery-hold".into(),
                ticket,
                resolved: false,
                queued: false,
            }],
            ..TimerPlan::default()
        };
        let Some(state) = state else {
            return lapse("lapsed: the incident has another ticket now", None);
        };
        if !resolves(&state) {
            return lapse(
                "lapsed: the problem came back or the ticket was closed",
                Some(state.number.0),
            );
        }
        let resolved = ResolvedTicket {
            number: state.number.clone(),
            subject: state.subject,
            organisation: state.organisation,
            severity: state.severity,
            why: HOLD_WHY.to_string(),
        };
        let mails = self.intake.status_mails(&resolved, self.now);
        let mut articles = vec![PlannedArticle::Note(
            "Resolved: no new problem during the recovery hold-down.".into(),
        )];
        articles.extend((0..mails.len()).map(PlannedArticle::Mail));
        // The clock as it stands once this is written: resolved, with its
        // event (stored to the millisecond) last in the history.
        let sla = match (self.context(), input) {
            (Some(ctx), Some(mut input)) => {
                let at = ts(now).parse::<Timestamp>().unwrap_or(now);
                input.status = Status::Resolved;
                input.events.push(("resolved".into(), HOLD_WHY.into(), at));
                let e = evaluated(input, &ctx, now);
                Some(sla_rows(&e, ctx.policies))
            }
            _ => None,
        };
        TimerPlan {
            ticket: Some(ticket_id),
            timer: Some((id, "resolved".into())),
            status: Some("resolved".into()),
            events: vec![("resolved".into(), HOLD_WHY.into())],
            kind: "status".into(),
            notifications: mails.into_iter().map(Notification::Mail).collect(),
            articles,
            sla,
            fired: vec![FiredTimer {
                kind: "recovery-hold".into(),
                ticket: Some(state.number.0),
                resolved: true,
                queued: true,
            }],
            ..TimerPlan::default()
        }
    }

    /// The plan of a ticket's reminder rows that fell due (`rows`: id and
    /// key), decided on its SLA as read (`input`): what fires, what its
    /// audiences get, what is superseded or obsolete, and the next row.
    pub(super) fn plan_reminders(
        &self,
        ticket_id: i64,
        rows: &[(i64, String)],
        input: Option<SlaInput>,
        now: Timestamp,
    ) -> TimerPlan {
        let fired = |ticket: Option<String>, outcomes: &[String]| {
            outcomes
                .iter()
                .map(|o| FiredTimer {
                    kind: "sla-reminder".into(),
                    ticket: ticket.clone(),
                    resolved: false,
                    queued: o.starts_with("sent") && !o.contains("recorded only"),
                })
                .collect::<Vec<_>>()
        };
        let ctx = self.context();
        let (Some(ctx), Some(input)) = (ctx, input) else {
            let outcomes: Vec<(i64, String)> = rows
                .iter()
                .map(|(id, _)| (*id, NOTHING_TO_EVALUATE.to_string()))
                .collect();
            let said: Vec<String> = outcomes.iter().map(|(_, o)| o.clone()).collect();
            return TimerPlan {
                ticket: Some(ticket_id),
                fired: fired(None, &said),
                reminder_outcomes: outcomes,
                ..TimerPlan::default()
            };
        };
        let mut e = evaluated(input, &ctx, now);
        let mut notifications = Vec::new();
        let mut rendered = Vec::new();
        for f in fires_due(&e, ctx.policies, now) {
            let list = if f.reminder.audiences.is_empty() {
                Vec::new()
            } else {
                self.reminder_notices(&f.reminder)
            };
            let said: Vec<String> = list.iter().map(Notification::describe).collect();
            notifications.extend(list);
            rendered.push((f, said));
        }
        let settled = settle(&mut e, rows, &rendered);
        TimerPlan {
            ticket: Some(ticket_id),
            events: settled.events,
            kind: "reminder".into(),
            notifications,
            counters: settled.counters,
            reminder_outcomes: settled.outcomes,
            reminder_records: settled
                .records
                .into_iter()
                .map(|(k, at, o)| (k, ts(at), o))
                .collect(),
            sla: Some(sla_rows(&e, ctx.policies)),
            fired: fired(Some(e.ticket.number.0.clone()), &settled.said),
            ..TimerPlan::default()
        }
    }
}
