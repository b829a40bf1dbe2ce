//! SLA clocks in the database. A ticket's clock is not stored: it is
//! computed (the pure [`crate::sla::clock`]) from the ticket's receipt and
//! its events — staff replies, waits, resumptions, resolutions, severity
//! changes — whenever one of them changes. What is stored is what follows
//! from it: the ticket's SLA state and nearest due time (for lists,
//! metrics, the digest) and one timer row per reminder stage still to come,
//! with its due instant. The scheduler asks for due rows through the
//! `timers_due` index and records each as fired, so a restart neither
//! repeats nor skips one.

use super::{events, queue_chat, queue_outgoing, ts, Script, StoreError};
use crate::domain::{Severity, Status, TicketNumber};
use crate::outbound::mail::Outgoing;
use crate::sla::clock::{deliver_at, evaluate, Clock, Happening, History, SlaState, StagePlan};
use crate::sla::policy::{Policies, TargetKind};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use sqlx::{Row, SqliteConnection};

/// The event kinds the clock reads, in the order they happened.
const CLOCK_EVENTS: &str =
    "('staff-reply', 'waiting', 'resumed', 'reopened', 'resolved', 'closed', 'severity')";

/// A reminder this much after its instant is marked late (the daemon was
/// not running, or the database was unavailable).
pub const LATE_AFTER: SignedDuration = SignedDuration::from_mins(5);

/// The plan of an organisation (directory id), if it has one.
pub type PlanOf = dyn Fn(&str) -> Option<String> + Send + Sync;

/// What SLA work needs besides the database: the policies and each
/// organisation's plan.
pub struct SlaContext<'a> {
    /// The policies in force.
    pub policies: &'a Policies,
    /// The plan of an organisation.
    pub plan_of: &'a PlanOf,
}

/// The ticket row the clock needs.
#[derive(Debug, Clone)]
pub struct SlaTicket {
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
}

/// A ticket's SLA, evaluated now.
#[derive(Debug, Clone)]
pub struct Evaluated {
    /// The ticket.
    pub ticket: SlaTicket,
    /// The plan it was looked up with.
    pub plan: Option<String>,
    /// The policy chosen (plan and severity as written) and why; `None`
    /// when no policy applies.
    pub policy: Option<(String, String)>,
    /// The clock; `None` without a policy.
    pub clock: Option<Clock>,
    /// The ticket's overall SLA state: breached, running, paused, met or
    /// none.
    pub state: &'static str,
    /// The nearest due instant of a running target, and that target.
    pub next_due: Option<(Timestamp, String)>,
    /// The reminder stages not yet fired that have an instant (past or
    /// future), of open tickets only.
    pub stages: Vec<Candidate>,
    /// Keys of the ticket's stages that fired (or were superseded).
    pub fired: Vec<String>,
    /// When it was evaluated.
    pub now: Timestamp,
}

/// A reminder stage still to fire.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The row key: `s<severity>:<target>[:<cycle>]:<percent>`.
    pub key: String,
    /// `first-response`, `resolution`, `update:<cycle>`.
    pub target: String,
    /// Percent of the target; 100 is the breach.
    pub percent: u8,
    /// When the SLA arithmetic puts it.
    pub at: Timestamp,
    /// Audience names; empty: recorded only (the breach of a policy
    /// without a 100 % stage).
    pub to: Vec<String>,
    /// The target's calendar.
    pub calendar: String,
}

impl Candidate {
    /// When it may go out if it falls due at `when`: a business-hours
    /// reminder waits for the opening, unless it goes to on-call or to
    /// nobody (a breach is recorded when it happens). A stage that falls
    /// due exactly at closing time goes out then, not the next morning.
    pub fn deliver(&self, policies: &Policies, when: Timestamp) -> Timestamp {
        if self.to.is_empty() {
            return when;
        }
        let just_before = when
            .checked_sub(SignedDuration::from_secs(1))
            .unwrap_or(when);
        if when == self.at
            && policies
                .calendar(&self.calendar)
                .is_some_and(|c| c.is_open(just_before))
        {
            return when;
        }
        let stage = StagePlan {
            percent: self.percent,
            to: self.to.clone(),
            key: self.key.clone(),
            at: Some(self.at),
        };
        match policies.calendar(&self.calendar) {
            Some(cal) => deliver_at(&stage, cal, when),
            None => when,
        }
    }
}

impl Candidate {
    /// When it goes out, seen at `now`: its own delivery time, or — when
    /// that has passed by more than [`LATE_AFTER`] without it firing — the
    /// first hour from `now` that allows it.
    pub fn when(&self, policies: &Policies, now: Timestamp) -> Timestamp {
        let own = self.deliver(policies, self.at);
        if own >= now || now.duration_since(own) <= LATE_AFTER {
            own
        } else {
            self.deliver(policies, now)
        }
    }
}

impl Evaluated {
    /// The next reminder row: the stage that goes out first (a past one
    /// not yet fired goes out now, or at the next opening).
    ///
    /// Per target, the stage that fires next is its highest one already
    /// due (what firing sends), else its earliest one to come; the row is
    /// the earliest of those.
    fn next_row(&self, policies: &Policies) -> Option<(&Candidate, Timestamp)> {
        let open: Vec<&Candidate> = self
            .stages
            .iter()
            .filter(|c| !self.fired.contains(&c.key))
            .collect();
        let mut best: Option<(&Candidate, Timestamp)> = None;
        for c in &open {
            let same = open.iter().filter(|o| o.target == c.target);
            let pick = same
                .clone()
                .filter(|o| o.at <= self.now)
                .max_by_key(|o| o.percent)
                .or_else(|| same.min_by_key(|o| o.at));
            if pick.is_some_and(|p| p.key == c.key) {
                let due = c.when(policies, self.now);
                if best.is_none_or(|(_, b)| due < b) {
                    best = Some((c, due));
                }
            }
        }
        best
    }

    /// The stages still to come, for people: key, instant, when it goes
    /// out, audiences.
    pub fn upcoming(&self, policies: &Policies) -> Vec<ReminderRow> {
        let mut list: Vec<ReminderRow> = self
            .stages
            .iter()
            .filter(|c| !self.fired.contains(&c.key))
            .map(|c| ReminderRow {
                key: c.key.clone(),
                planned_at: Some(ts(c.at)),
                due_at: ts(c.when(policies, self.now)),
                fired_at: None,
                outcome: None,
                audiences: c.to.clone(),
                local: None,
            })
            .collect();
        list.sort_by(|a, b| a.due_at.cmp(&b.due_at));
        list
    }
}

/// Reads a stored instant.
fn instant(text: &str) -> Result<Timestamp, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("instant {text:?}: {e}")))
}

/// Turns a ticket's clock events (kind, detail, instant), oldest first,
/// into the clock's history. A second resolution without a reopening (a
/// resolved ticket being closed) is no new happening; a reopening of a
/// ticket that was not resolved ends a wait.
pub fn history_of(received: Timestamp, list: &[(String, String, Timestamp)]) -> History {
    let mut resolved = false;
    let mut happenings = Vec::with_capacity(list.len());
    for (kind, detail, at) in list {
        let h = match kind.as_str() {
            "staff-reply" => Happening::StaffReply,
            "waiting" => Happening::Waiting,
            "resumed" => Happening::Resumed,
            "reopened" if resolved => Happening::Reopened,
            "reopened" => Happening::Resumed,
            "resolved" | "closed" if resolved => continue,
            "resolved" | "closed" => Happening::Resolved,
            "severity" => match crate::domain::severity_change(detail) {
                Some((from, to)) => Happening::SeverityChanged { from, to },
                None => continue,
            },
            _ => continue,
        };
        match h {
            Happening::Resolved => resolved = true,
            Happening::Reopened => resolved = false,
            _ => {}
        }
        happenings.push((*at, h));
    }
    History {
        received,
        happenings,
    }
}

/// The ticket's overall state from its targets: breached wins, then
/// running, paused, met.
fn overall(clock: &Clock, now: Timestamp) -> (&'static str, Option<(Timestamp, String)>) {
    let mut next: Option<(Timestamp, String)> = None;
    let (mut breached, mut running, mut paused) = (false, false, false);
    for t in &clock.targets {
        match t.state {
            SlaState::Breached => breached = true,
            SlaState::Running => {
                running = true;
                if let Some(due) = t.due {
                    if due <= now {
                        breached = true;
                    }
                    if next.as_ref().is_none_or(|(d, _)| due < *d) {
                        next = Some((due, t.kind.as_str().to_string()));
                    }
                }
            }
            SlaState::Paused => paused = true,
            SlaState::Met | SlaState::Stopped => {}
        }
    }
    let state = if breached {
        "breached"
    } else if running {
        "running"
    } else if paused {
        "paused"
    } else if clock.targets.is_empty() {
        "none"
    } else {
        "met"
    };
    (state, next)
}

/// The key prefix of a ticket's reminder rows at a severity: a severity
/// change plans the stages afresh.
fn key_of(severity: Severity, stage_key: &str) -> String {
    format!("s{}:{stage_key}", severity.level())
}

/// Reads the ticket and its clock events and evaluates its SLA at `now`.
pub async fn evaluate_ticket(
    conn: &mut SqliteConnection,
    ticket_id: i64,
    ctx: &SlaContext<'_>,
    now: Timestamp,
) -> Result<Option<Evaluated>, StoreError> {
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
    let ticket = SlaTicket {
        id: r.try_get("id")?,
        number: TicketNumber(r.try_get("number")?),
        subject: r.try_get("subject")?,
        status: Status::parse(r.try_get::<&str, _>("status")?),
        severity: Severity::try_from(severity).map_err(StoreError::Corrupt)?,
        organisation: r.try_get("organisation")?,
        requester: r.try_get("requester")?,
        // The clock starts at the arrival of the first message.
        received: instant(r.try_get::<&str, _>("arrived_at")?)?,
    };
    let rows: Vec<(String, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT kind, detail, created_at FROM events WHERE ticket_id = $1 AND kind IN {CLOCK_EVENTS} ORDER BY id"
    )))
    .bind(ticket_id)
    .fetch_all(&mut *conn)
    .await?;
    let list = rows
        .into_iter()
        .map(|(k, d, at)| Ok((k, d, instant(&at)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let history = history_of(ticket.received, &list);
    let fired: Vec<String> = sqlx::query_scalar(
        "SELECT key FROM timers WHERE ticket_id = $1 AND kind = 'sla-reminder' AND fired_at IS NOT NULL",
    )
    .bind(ticket_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut e = evaluate_with(ticket, history, ctx, now);
    e.fired = fired;
    Ok(Some(e))
}

/// Evaluates a ticket whose row and history are known.
pub fn evaluate_with(
    ticket: SlaTicket,
    history: History,
    ctx: &SlaContext<'_>,
    now: Timestamp,
) -> Evaluated {
    let plan = ticket.organisation.as_deref().and_then(ctx.plan_of);
    let Some(applied) = ctx.policies.lookup(plan.as_deref(), ticket.severity) else {
        return Evaluated {
            ticket,
            plan,
            policy: None,
            clock: None,
            state: "none",
            next_due: None,
            stages: Vec::new(),
            fired: Vec::new(),
            now,
        };
    };
    let clock = evaluate(applied.policy, ctx.policies, &history, now);
    let (state, next_due) = overall(&clock, now);
    let mut stages = Vec::new();
    let open = !matches!(ticket.status, Status::Resolved | Status::Closed);
    for t in clock.targets.iter().filter(|_| open) {
        let target = target_name(t);
        for st in &t.stages {
            if let Some(at) = st.at {
                stages.push(Candidate {
                    key: key_of(ticket.severity, &st.key),
                    target: target.clone(),
                    percent: st.percent,
                    at,
                    to: st.to.clone(),
                    calendar: t.calendar.clone(),
                });
            }
        }
        // The breach is always planned, with or without an audience: it
        // records the breach on the ticket.
        let unended =
            t.ended.is_none() && matches!(t.state, SlaState::Running | SlaState::Breached);
        if let (false, Some(due), true) =
            (t.stages.iter().any(|s| s.percent == 100), t.due, unended)
        {
            stages.push(Candidate {
                key: key_of(ticket.severity, &format!("{target}:100")),
                target,
                percent: 100,
                at: due,
                to: Vec::new(),
                calendar: t.calendar.clone(),
            });
        }
    }
    let why = applied.why.clone();
    let label = match applied.policy.severity {
        Some(s) => format!("{} severity {}", applied.policy.plan, s.level()),
        None => applied.policy.plan.clone(),
    };
    Evaluated {
        ticket,
        plan,
        policy: Some((label, why)),
        clock: Some(clock),
        state,
        next_due,
        stages,
        fired: Vec::new(),
        now,
    }
}

/// Writes an evaluation: the ticket's SLA columns, and its one pending
/// reminder row: the stage that goes out next (it fires, the firing plans
/// the one after). `fresh`: a ticket created in this script, without a
/// row to replace.
pub(super) fn write(s: &mut Script, e: &Evaluated, policies: &Policies, fresh: bool) {
    let (st, due, target, id) = (
        s.arg(e.state),
        s.arg(e.next_due.as_ref().map(|(d, _)| ts(*d))),
        s.arg(e.next_due.as_ref().map(|(_, t)| t.as_str())),
        s.arg(e.ticket.id),
    );
    s.push(format_args!(
        "UPDATE tickets SET sla_state = {st}, sla_due_at = {due}, sla_target = {target} WHERE id = {id}"
    ));
    s.end();
    if !fresh {
        let id = s.arg(e.ticket.id);
        s.push(format_args!(
            "DELETE FROM timers WHERE ticket_id = {id} AND kind = 'sla-reminder' AND fired_at IS NULL"
        ));
        s.end();
    }
    if let Some((c, due)) = e.next_row(policies) {
        let ps = [
            s.arg(e.ticket.id),
            s.arg(c.key.as_str()),
            s.arg(ts(due)),
            s.arg(ts(c.at)),
            s.arg(c.to.join(",")),
            s.arg(ts(e.now)),
        ];
        s.push(format_args!(
            "INSERT INTO timers (kind, ticket_id, key, due_at, planned_at, audiences, created_at)
             VALUES ('sla-reminder', {}, {}, {}, {}, {}, {}) ON CONFLICT DO NOTHING",
            ps[0], ps[1], ps[2], ps[3], ps[4], ps[5]
        ));
        s.end();
    }
}

/// Brings a ticket's SLA up to date after something changed it, in the
/// caller's transaction. Returns the evaluation (`None`: no such ticket).
pub async fn sync(
    conn: &mut SqliteConnection,
    ticket_id: i64,
    ctx: &SlaContext<'_>,
    now: Timestamp,
) -> Result<Option<Evaluated>, StoreError> {
    let Some(e) = evaluate_ticket(conn, ticket_id, ctx, now).await? else {
        return Ok(None);
    };
    let mut s = Script::default();
    write(&mut s, &e, ctx.policies, false);
    s.run(conn).await?;
    Ok(Some(e))
}

/// A reminder stage that fired, for the mails and chat posts about it.
#[derive(Debug, Clone)]
pub struct Reminder {
    /// The ticket.
    pub number: TicketNumber,
    /// Its subject.
    pub subject: String,
    /// Its severity.
    pub severity: Severity,
    /// Its organisation (directory id).
    pub organisation: Option<String>,
    /// Its requester.
    pub requester: String,
    /// The policy (plan, severity).
    pub policy: String,
    /// Which target: `first-response`, `resolution`, `update`.
    pub target: String,
    /// The same, typed (for labels); `None` for a target the clock no
    /// longer has.
    pub kind: Option<TargetKind>,
    /// The target's amount, e.g. `4h`.
    pub amount: String,
    /// Percent reached; 100 is the breach.
    pub percent: u8,
    /// The target's due instant.
    pub due: Option<Timestamp>,
    /// The instant the stage fell due.
    pub planned: Timestamp,
    /// How late it fires (the daemon was down), if later than
    /// [`LATE_AFTER`].
    pub late: Option<SignedDuration>,
    /// Audience names.
    pub audiences: Vec<String>,
}

/// A digest run: the job, when it was due, and what it reports.
#[derive(Debug, Clone, Serialize)]
pub struct Digest {
    /// The job's name.
    pub name: String,
    /// When it was due.
    pub planned: Timestamp,
    /// How late it runs, when later than [`LATE_AFTER`].
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

/// What firing timers needs from the daemon: policies and plans, and the
/// mails and chat posts each kind of timer sends.
pub trait TimerHooks: Send {
    /// The SLA policies and plans, if SLA clocks run.
    fn sla(&self) -> Option<SlaContext<'_>>;
    /// The mails telling an organisation of a resolution by a timer.
    fn status_mails(&mut self, t: &super::ResolvedTicket) -> Vec<Outgoing>;
    /// What a reminder stage sends to its audiences.
    fn reminder(&mut self, r: &Reminder) -> Vec<Notification>;
    /// What a digest sends to its audiences.
    fn digest(&mut self, d: &Digest) -> Vec<Notification>;
    /// The next run of the digest `name` after `after`; `None` when the
    /// job is no longer configured.
    fn next_digest(&self, name: &str, after: Timestamp) -> Option<Timestamp>;
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
                said.push(format!("mail {}", out.to.join(", ")));
            }
            Notification::Chat { channel, body } => {
                queue_chat(s, ticket, channel, kind, body, now);
                said.push(format!("chat {channel}"));
            }
        }
    }
    Ok(said)
}

/// A due reminder row.
#[derive(Debug, Clone)]
pub(super) struct DueReminder {
    pub id: i64,
    pub key: String,
}

/// `s<severity>:<target>[:<cycle>]:<percent>` → (severity, stage key,
/// target-and-cycle, percent).
fn split_key(key: &str) -> Option<(u8, &str, &str, u8)> {
    let rest = key.strip_prefix('s')?;
    let (sev, stage) = rest.split_once(':')?;
    let (target, pct) = stage.rsplit_once(':')?;
    Some((sev.parse().ok()?, stage, target, pct.parse().ok()?))
}

/// Fires what is due of one ticket (its pending row fell due): per target
/// only the highest stage due — after a long stop the breach, not 50, 75
/// and 90 % as well; the lower ones are recorded as superseded — each
/// checked against the clock as it stands now. A business-hours stage due
/// while the calendar is closed waits for the opening. Every stage fires
/// once: its row is the record. Then the next row is planned.
pub(super) async fn fire_ticket(
    conn: &mut SqliteConnection,
    ticket_id: i64,
    due: &[DueReminder],
    hooks: &mut dyn TimerHooks,
    now: Timestamp,
) -> Result<(Option<String>, Vec<String>), StoreError> {
    let now_s = ts(now);
    let evaluated = match hooks.sla() {
        Some(ctx) => evaluate_ticket(conn, ticket_id, &ctx, now).await?,
        None => None,
    };
    let Some(mut e) = evaluated else {
        let outcomes: Vec<(i64, String)> = due
            .iter()
            .map(|d| {
                (
                    d.id,
                    "obsolete: SLA clocks are off or the ticket is gone".into(),
                )
            })
            .collect();
        let mut s = Script::default();
        mark_fired(&mut s, &outcomes, &now_s);
        s.run(conn).await?;
        return Ok((None, outcomes.into_iter().map(|(_, o)| o).collect()));
    };
    // The stages due now, by target.
    let mut targets: Vec<&str> = Vec::new();
    for c in e
        .stages
        .iter()
        .filter(|c| c.at <= now && !e.fired.contains(&c.key))
    {
        if !targets.contains(&c.target.as_str()) {
            targets.push(&c.target);
        }
    }
    // (key, outcome, planned) of every stage decided now.
    let mut decided: Vec<(String, String, Timestamp)> = Vec::new();
    let mut fired_target: Vec<(String, u8)> = Vec::new();
    let mut s = Script::default();
    let mut last_outbox = None;
    for target in targets {
        let mut group: Vec<&Candidate> = e
            .stages
            .iter()
            .filter(|c| c.target == target && c.at <= now && !e.fired.contains(&c.key))
            .collect();
        group.sort_by_key(|c| std::cmp::Reverse(c.percent));
        let Some(top) = group.first().copied() else {
            continue;
        };
        // Quiet hours: the stage waits for the opening (the next row says
        // when).
        let Some(ctx) = hooks.sla() else { break };
        if top.when(ctx.policies, now) > now {
            continue;
        }
        let tc = e
            .clock
            .iter()
            .flat_map(|c| c.targets.iter())
            .find(|t| target_name(t) == target);
        let late = Some(now.duration_since(top.at)).filter(|l| *l > LATE_AFTER);
        let r = Reminder {
            number: e.ticket.number.clone(),
            subject: e.ticket.subject.clone(),
            severity: e.ticket.severity,
            organisation: e.ticket.organisation.clone(),
            requester: e.ticket.requester.clone(),
            policy: e.policy.as_ref().map(|p| p.0.clone()).unwrap_or_default(),
            target: tc
                .map(|t| t.kind.as_str().to_string())
                .unwrap_or_else(|| target.to_string()),
            kind: tc.map(|t| t.kind),
            amount: tc
                .map(|t| crate::sla::policy::format_duration(t.amount))
                .unwrap_or_default(),
            percent: top.percent,
            due: tc.and_then(|t| t.due),
            planned: top.at,
            late,
            audiences: top.to.clone(),
        };
        let list = if top.to.is_empty() {
            Vec::new()
        } else {
            hooks.reminder(&r)
        };
        let said = queue_notifications(
            conn,
            &mut s,
            &mut last_outbox,
            Some(ticket_id),
            "reminder",
            &list,
            &now_s,
        )
        .await?;
        let what = if top.percent == 100 {
            format!("{} breached", r.target)
        } else {
            format!("{} at {} %", r.target, top.percent)
        };
        let to = if said.is_empty() {
            "recorded only (no audience configured)".to_string()
        } else {
            said.join("; ")
        };
        let late_note = late
            .map(|l| format!(", late by {}", crate::sla::policy::format_duration(l)))
            .unwrap_or_default();
        let detail = format!("{what}: {to}{late_note}");
        let (kind, counter) = if top.percent == 100 {
            ("sla-breached", "sla-breaches")
        } else {
            ("sla-reminder", "sla-reminders")
        };
        events(
            &mut s,
            Some(ticket_id),
            None,
            &[(kind, detail.as_str())],
            &now_s,
        );
        let counter = s.arg(counter);
        s.push(format_args!(
            "INSERT INTO counters (name, value) VALUES ({counter}, 1)
             ON CONFLICT (name) DO UPDATE SET value = value + 1"
        ));
        s.end();
        let sent = if late.is_some() { "sent late" } else { "sent" };
        decided.push((top.key.clone(), format!("{sent}: {to}{late_note}"), top.at));
        for c in &group[1..] {
            decided.push((
                c.key.clone(),
                format!("superseded by the {} % stage", top.percent),
                c.at,
            ));
        }
        fired_target.push((target.to_string(), top.percent));
    }
    // The rows that fell due: decided now, or superseded by what fired for
    // their target, or no longer applying (met, paused, resolved, another
    // severity). A row left alone waits for its opening (replanned below).
    let mut outcomes: Vec<(i64, String)> = Vec::new();
    for d in due {
        if let Some((_, o, _)) = decided.iter().find(|(k, _, _)| *k == d.key) {
            outcomes.push((d.id, o.clone()));
            continue;
        }
        let target = split_key(&d.key).map(|(_, _, t, _)| t).unwrap_or("");
        if let Some((_, pct)) = fired_target.iter().find(|(t, _)| t == target) {
            outcomes.push((d.id, format!("superseded by the {pct} % stage")));
        } else if !e.stages.iter().any(|c| c.key == d.key) {
            outcomes.push((
                d.id,
                "obsolete: the target is met, paused, resolved or of another severity".into(),
            ));
        }
    }
    mark_fired(&mut s, &outcomes, &now_s);
    // Stages decided without a row of their own get one, as the record.
    for (key, outcome, at) in &decided {
        if due.iter().any(|d| d.key == *key) {
            continue;
        }
        let ps = [
            s.arg(ticket_id),
            s.arg(key.as_str()),
            s.arg(ts(*at)),
            s.arg(now_s.as_str()),
            s.arg(outcome.as_str()),
        ];
        s.push(format_args!(
            "INSERT INTO timers (kind, ticket_id, key, due_at, planned_at, created_at, fired_at, outcome)
             VALUES ('sla-reminder', {}, {}, {}, {}, {}, {}, {}) ON CONFLICT DO NOTHING",
            ps[0], ps[1], ps[2], ps[2], ps[3], ps[3], ps[4]
        ));
        s.end();
    }
    s.run(&mut *conn).await?;
    // What happened, for the log: each row that fell due, each stage
    // recorded besides.
    let mut said: Vec<String> = outcomes.iter().map(|(_, o)| o.clone()).collect();
    said.extend(
        decided
            .iter()
            .filter(|(k, _, _)| !due.iter().any(|d| d.key == *k))
            .map(|(_, o, _)| o.clone()),
    );
    e.fired.extend(decided.into_iter().map(|(k, _, _)| k));
    e.fired.extend(
        due.iter()
            .filter(|d| outcomes.iter().any(|(id, _)| *id == d.id))
            .map(|d| d.key.clone()),
    );
    let mut s = Script::default();
    if let Some(ctx) = hooks.sla() {
        write(&mut s, &e, ctx.policies, false);
    }
    s.run(conn).await?;
    Ok((Some(e.ticket.number.0.clone()), said))
}

fn mark_fired(s: &mut Script, outcomes: &[(i64, String)], now: &str) {
    for (id, outcome) in outcomes {
        let (at, o, id) = (s.arg(now), s.arg(outcome.as_str()), s.arg(*id));
        s.push(format_args!(
            "UPDATE timers SET fired_at = {at}, outcome = {o} WHERE id = {id}"
        ));
        s.end();
    }
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

/// Runs the digest `name` that fell due (`planned`): counts and urgent
/// tickets to its audiences, then plans its next run. Returns the outcome
/// and whether anything was queued.
pub(super) async fn fire_digest(
    conn: &mut SqliteConnection,
    name: &str,
    planned: Option<&str>,
    hooks: &mut dyn TimerHooks,
    now: Timestamp,
) -> Result<(String, bool), StoreError> {
    let now_s = ts(now);
    let planned = planned
        .and_then(|p| p.parse::<Timestamp>().ok())
        .unwrap_or(now);
    let late = Some(now.duration_since(planned)).filter(|l| *l > LATE_AFTER);
    let Some(next) = hooks.next_digest(name, now) else {
        return Ok(("obsolete: the digest is no longer configured".into(), false));
    };
    let d = Digest {
        name: name.to_string(),
        planned,
        late,
        status: sla_status(conn, now, 50).await?,
    };
    let list = hooks.digest(&d);
    let mut s = Script::default();
    let said = queue_notifications(conn, &mut s, &mut None, None, "digest", &list, &now_s).await?;
    schedule_digest(&mut s, name, next, &now_s);
    s.run(conn).await?;
    let late_note = late
        .map(|l| format!(", late by {}", crate::sla::policy::format_duration(l)))
        .unwrap_or_default();
    let to = if said.is_empty() {
        "nobody (no audience entries)".to_string()
    } else {
        said.join("; ")
    };
    Ok((
        format!(
            "{} open, {} breached: {to}{late_note}",
            d.status.open, d.status.breached
        ),
        !list.is_empty(),
    ))
}

fn schedule_digest(s: &mut Script, name: &str, at: Timestamp, now: &str) {
    let (k, due, now) = (s.arg(name), s.arg(ts(at)), s.arg(now));
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
            schedule_digest(&mut s, name, *next, &now_s);
        }
    }
    s.run(conn).await?;
    Ok(())
}

/// `first-response`, `resolution`, `update:<cycle>`: how a key names a
/// target.
fn target_name(t: &crate::sla::clock::TargetClock) -> String {
    match t.kind {
        TargetKind::Update => format!("update:{}", t.cycle),
        k => k.as_str().to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn events_become_the_clock_history() {
        let list = vec![
            (
                "staff-reply".into(),
                "by x".into(),
                at("2026-12-01T10:00:00Z"),
            ),
            ("waiting".into(), "".into(), at("2026-12-01T10:00:01Z")),
            ("resumed".into(), "".into(), at("2026-12-01T12:00:00Z")),
            ("resolved".into(), "".into(), at("2026-12-01T13:00:00Z")),
            ("closed".into(), "".into(), at("2026-12-01T14:00:00Z")),
            ("reopened".into(), "".into(), at("2026-12-02T09:00:00Z")),
            ("reopened".into(), "".into(), at("2026-12-02T09:30:00Z")),
            (
                "severity".into(),
                "from 3 to 1 by cli:anna".into(),
                at("2026-12-02T10:00:00Z"),
            ),
            ("appended".into(), "".into(), at("2026-12-02T11:00:00Z")),
        ];
        let h = history_of(at("2026-12-01T09:00:00Z"), &list);
        let kinds: Vec<Happening> = h.happenings.iter().map(|(_, h)| *h).collect();
        assert_eq!(
            kinds,
            vec![
                Happening::StaffReply,
                Happening::Waiting,
                Happening::Resumed,
                Happening::Resolved,
                Happening::Reopened,
                Happening::Resumed,
                Happening::SeverityChanged {
                    from: Severity::Malfunction,
                    to: Severity::Critical
                },
            ]
        );
    }

    #[test]
    fn reminder_keys_split() {
        assert_eq!(
            split_key("s3:resolution:75"),
            Some((3, "resolution:75", "resolution", 75))
        );
        assert_eq!(
            split_key("s1:update:2:100"),
            Some((1, "update:2:100", "update:2", 100))
        );
        assert_eq!(split_key("nonsense"), None);
    }
}
