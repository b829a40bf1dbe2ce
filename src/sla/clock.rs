//! SLA clocks: from what happened to a ticket, where each target of its
//! policy stands — due when, how much used, met or breached — and when each
//! reminder stage falls due. Pure: `now` is an argument.
//!
//! Semantics:
//! - Every target counts on its own calendar from receipt (the update
//!   target from each staff reply). After a severity change the caller
//!   passes the new severity's policy, so every due time is recomputed from
//!   receipt; the change only shows up in the explanation.
//! - Paused time does not count, whatever the calendar: from
//!   [`Happening::Waiting`] to the next [`Happening::Resumed`] or
//!   [`Happening::Reopened`] (or now, while still waiting), and from
//!   [`Happening::Resolved`] to the next [`Happening::Reopened`].
//! - First response: met by the first [`Happening::StaffReply`] if its
//!   counted time is within the amount, else breached ("answered late").
//!   Waiting before the reply pauses it. A ticket resolved before any reply
//!   stops it ([`SlaState::Stopped`]; breached if it had run out already);
//!   reopened, it runs on with the resolved time paused.
//! - Resolution: ends at [`Happening::Resolved`] (met or breached); a
//!   reopened ticket's clock runs again with the resolved time paused, and
//!   the final resolve decides.
//! - Update: only once there is a staff reply (before it the target is not
//!   listed). Each reply starts a cycle (numbered 1, 2, … by reply) that the
//!   next reply ends; the clock shows the current cycle, late earlier
//!   cycles are named in its explanation. Resolving stops it.
//! - A target whose due time has passed without being met is
//!   [`SlaState::Breached`]; while paused its due time is unknown (`None`)
//!   and `remaining` says what is left.
//! - Happenings after `now` are ignored, those before receipt count as at
//!   receipt, and happenings are taken in time order.

use super::calendar::Calendar;
use super::policy::{format_duration, Policies, Policy, TargetKind};
use crate::domain::Severity;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// What happened to a ticket, in time order: the input of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// When the ticket was received: every target but update counts from
    /// here.
    pub received: Timestamp,
    /// The happenings since, with their instants.
    pub happenings: Vec<(Timestamp, Happening)>,
}

/// Something that moves SLA clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Happening {
    /// A staff reply reached the customer (mail or chat).
    StaffReply,
    /// Status set to pending: waiting for the customer; clocks pause.
    Waiting,
    /// The customer replied, or the status was set back to open; clocks
    /// resume.
    Resumed,
    /// Resolved or closed; clocks stop.
    Resolved,
    /// A resolved or closed ticket was reopened; clocks run again.
    Reopened,
    /// The severity changed (for the explanation: the caller passes the
    /// policy of the current severity).
    SeverityChanged {
        /// The severity before.
        from: Severity,
        /// The severity after.
        to: Severity,
    },
}

/// Where a target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlaState {
    /// Counting; due in the future.
    Running,
    /// Not counting now (waiting for the customer); not yet due.
    Paused,
    /// Met in time.
    Met,
    /// Due passed without being met, or met late.
    Breached,
    /// Ended without being needed (first response or update of a ticket
    /// resolved in time).
    Stopped,
}

impl SlaState {
    /// The lower-case name: `running`, `paused`, `met`, `breached`,
    /// `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlaState::Running => "running",
            SlaState::Paused => "paused",
            SlaState::Met => "met",
            SlaState::Breached => "breached",
            SlaState::Stopped => "stopped",
        }
    }
}

/// Every target of a ticket's policy, evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    /// In the policy's order: first response, resolution, update (the
    /// latter only once there is a staff reply).
    pub targets: Vec<TargetClock>,
}

/// One target's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetClock {
    /// What it measures.
    pub kind: TargetKind,
    /// The counted time allowed.
    pub amount: SignedDuration,
    /// The calendar's name.
    pub calendar: String,
    /// 0 for first response and resolution; for update the number of the
    /// staff reply that started the current cycle (1, 2, …).
    pub cycle: u32,
    /// When it started counting (receipt, or the staff reply).
    pub started: Timestamp,
    /// When the counted time reaches the amount; `None` while paused, when
    /// stopped, or on a calendar that never opens.
    pub due: Option<Timestamp>,
    /// Where it stands.
    pub state: SlaState,
    /// When it was met, breached by a late answer, or stopped.
    pub ended: Option<Timestamp>,
    /// Counted time used up to `ended` or now.
    pub used: SignedDuration,
    /// `amount - used`, never negative.
    pub remaining: SignedDuration,
    /// When each reminder stage falls due.
    pub stages: Vec<StagePlan>,
    /// Lines for people: the calendar, each pause, closed days skipped, a
    /// daylight-saving change, the outcome.
    pub explain: Vec<String>,
}

/// When one reminder stage of one target falls due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagePlan {
    /// Percent of the target, 1–100.
    pub percent: u8,
    /// Audience names.
    pub to: Vec<String>,
    /// Stable and unique per ticket, for "sent once": `first-response:50`,
    /// `resolution:100`, `update:3:75`.
    pub key: String,
    /// When it falls due (possibly already past); `None` while the target
    /// is paused or ended, and for stages before 100 of a breached target.
    pub at: Option<Timestamp>,
}

impl StagePlan {
    /// Whether the stage goes to on-call, who may be reminded at any hour.
    pub fn on_call(&self) -> bool {
        self.to.iter().any(|a| a == super::policy::ON_CALL)
    }
}

/// When a reminder that falls due `at` may go out: reminders of a
/// business-hours calendar wait for it to open (nights, weekends,
/// holidays), unless the stage goes to on-call; 24/7 reminders go at once.
pub fn deliver_at(stage: &StagePlan, calendar: &Calendar, at: Timestamp) -> Timestamp {
    if stage.on_call() {
        return at;
    }
    calendar.next_open(at).unwrap_or(at)
}

/// Why time did not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PauseKind {
    Waiting,
    Resolved,
}

/// A stretch of time that does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pause {
    from: Timestamp,
    /// The end, or now while it lasts.
    to: Timestamp,
    /// Still paused now.
    ongoing: bool,
    kind: PauseKind,
}

/// The history boiled down.
#[derive(Debug, Default)]
struct Timeline {
    pauses: Vec<Pause>,
    replies: Vec<Timestamp>,
    /// Resolved now, since then.
    resolved: Option<Timestamp>,
    severity_changes: Vec<(Timestamp, Severity, Severity)>,
}

fn timeline(history: &History, now: Timestamp) -> Timeline {
    let mut events: Vec<(Timestamp, Happening)> = history
        .happenings
        .iter()
        .filter(|(t, _)| *t <= now)
        .map(|(t, h)| ((*t).max(history.received), *h))
        .collect();
    events.sort_by_key(|(t, _)| *t);
    let mut tl = Timeline::default();
    let mut waiting: Option<Timestamp> = None;
    let mut resolved: Option<Timestamp> = None;
    let close = |tl: &mut Timeline, from: Timestamp, to: Timestamp, kind| {
        if to > from {
            tl.pauses.push(Pause {
                from,
                to,
                ongoing: false,
                kind,
            });
        }
    };
    for (t, h) in events {
        match h {
            Happening::StaffReply => tl.replies.push(t),
            Happening::Waiting => {
                if resolved.is_none() && waiting.is_none() {
                    waiting = Some(t);
                }
            }
            Happening::Resumed => {
                if let Some(w) = waiting.take() {
                    close(&mut tl, w, t, PauseKind::Waiting);
                }
            }
            Happening::Resolved => {
                if let Some(w) = waiting.take() {
                    close(&mut tl, w, t, PauseKind::Waiting);
                }
                resolved = resolved.or(Some(t));
            }
            Happening::Reopened => {
                if let Some(w) = waiting.take() {
                    close(&mut tl, w, t, PauseKind::Waiting);
                }
                if let Some(r) = resolved.take() {
                    close(&mut tl, r, t, PauseKind::Resolved);
                }
            }
            Happening::SeverityChanged { from, to } => tl.severity_changes.push((t, from, to)),
        }
    }
    for (since, kind) in [
        (waiting, PauseKind::Waiting),
        (resolved, PauseKind::Resolved),
    ] {
        if let Some(from) = since {
            tl.pauses.push(Pause {
                from,
                to: now.max(from),
                ongoing: true,
                kind,
            });
        }
    }
    tl.resolved = resolved;
    tl
}

/// The pauses as they stood at `end`: later ones dropped, the one running
/// then cut off (so none is ongoing).
fn clip(pauses: &[Pause], end: Timestamp) -> Vec<Pause> {
    pauses
        .iter()
        .filter(|p| p.from < end)
        .map(|p| Pause {
            to: p.to.min(end),
            ongoing: false,
            ..*p
        })
        .collect()
}

/// Counted time from `start` to `end` on `cal`, pauses left out.
fn counted(cal: &Calendar, start: Timestamp, end: Timestamp, pauses: &[Pause]) -> SignedDuration {
    let mut total = SignedDuration::ZERO;
    let mut cursor = start;
    for p in pauses {
        if cursor >= end {
            break;
        }
        if p.to <= cursor {
            continue;
        }
        if p.from >= end {
            break;
        }
        if p.from > cursor {
            total += cal.between(cursor, p.from);
        }
        cursor = cursor.max(p.to);
    }
    if cursor < end {
        total += cal.between(cursor, end);
    }
    total
}

/// When a due time is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    At(Timestamp),
    /// Paused now before the amount is used up.
    Paused,
    /// The calendar never opens enough.
    Never,
}

/// The instant `amount` of counted time after `start`, walking past the
/// pauses (sorted by start): from the cursor to each pause's start, then on
/// after it.
fn due_after(cal: &Calendar, start: Timestamp, amount: SignedDuration, pauses: &[Pause]) -> Due {
    let mut cursor = start;
    let mut left = amount;
    for p in pauses {
        if p.to <= cursor && !p.ongoing {
            continue;
        }
        if p.from > cursor {
            match cal.add(cursor, left) {
                None => return Due::Never,
                Some(d) if d <= p.from => return Due::At(d),
                Some(_) => left -= cal.between(cursor, p.from),
            }
        }
        if p.ongoing {
            return Due::Paused;
        }
        cursor = cursor.max(p.to);
    }
    cal.add(cursor, left).map_or(Due::Never, Due::At)
}

fn pct(amount: SignedDuration, percent: u8) -> SignedDuration {
    amount
        .checked_mul(i32::from(percent))
        .and_then(|d| d.checked_div(100))
        .unwrap_or(amount)
}

struct Ctx<'a> {
    policy: &'a Policy,
    tz: &'a TimeZone,
    now: Timestamp,
    tl: &'a Timeline,
}

impl Ctx<'_> {
    fn ts(&self, t: Timestamp) -> String {
        t.to_zoned(self.tz.clone())
            .strftime("%Y-%m-%d %H:%M %Z")
            .to_string()
    }
}

/// Where each target of `policy` stands for a ticket with `history`, now.
/// `policies` supplies the calendars the targets name (an unknown name
/// counts 24/7 and says so).
pub fn evaluate(policy: &Policy, policies: &Policies, history: &History, now: Timestamp) -> Clock {
    let tl = timeline(history, now);
    let mut targets = Vec::new();
    for target in &policy.targets {
        let (cal, mut explain) = match policies.calendar(&target.calendar) {
            Some(c) => (c.clone(), Vec::new()),
            None => (
                Calendar::Always,
                vec![format!(
                    "calendar \"{}\" is not defined: counted 24/7",
                    target.calendar
                )],
            ),
        };
        let tz = cal.timezone().unwrap_or(policies.timezone()).clone();
        let ctx = Ctx {
            policy,
            tz: &tz,
            now,
            tl: &tl,
        };
        let (start, cycle, end) = match target.kind {
            TargetKind::FirstResponse => (history.received, 0, End::reply(tl.replies.first())),
            TargetKind::Resolution => (history.received, 0, End::resolved(tl.resolved)),
            TargetKind::Update => {
                let Some(&last) = tl.replies.last() else {
                    continue;
                };
                let n = u32::try_from(tl.replies.len()).unwrap_or(u32::MAX);
                (last, n, End::resolved(tl.resolved.map(|r| r.max(last))))
            }
        };
        // First response: a reply ends it, else resolving stops it.
        let end = match (target.kind, end) {
            (TargetKind::FirstResponse, End::Open) => match tl.resolved {
                Some(r) => End::Stopped(r),
                None => End::Open,
            },
            (TargetKind::Update, End::Met(r)) => End::Stopped(r),
            (_, e) => e,
        };
        let mut tc = clock_of(&ctx, &cal, target.kind, target.amount, start, cycle, end);
        tc.calendar.clone_from(&target.calendar);
        explain.append(&mut tc.explain);
        tc.explain = explain;
        if target.kind == TargetKind::Update {
            late_cycles(&ctx, &cal, target.amount, &mut tc.explain);
        } else {
            for (t, from, to) in &tl.severity_changes {
                tc.explain.push(format!(
                    "severity changed from {} to {} at {}: the targets of severity {} count from receipt",
                    from.level(),
                    to.level(),
                    ctx.ts(*t),
                    to.level()
                ));
            }
        }
        targets.push(tc);
    }
    Clock { targets }
}

/// How a target ended, if it did.
#[derive(Debug, Clone, Copy)]
enum End {
    Open,
    /// Met (in time or late) at this instant.
    Met(Timestamp),
    /// Ended without being needed at this instant.
    Stopped(Timestamp),
}

impl End {
    fn reply(t: Option<&Timestamp>) -> End {
        t.map_or(End::Open, |t| End::Met(*t))
    }
    fn resolved(t: Option<Timestamp>) -> End {
        t.map_or(End::Open, End::Met)
    }
}

fn clock_of(
    ctx: &Ctx<'_>,
    cal: &Calendar,
    kind: TargetKind,
    amount: SignedDuration,
    start: Timestamp,
    cycle: u32,
    end: End,
) -> TargetClock {
    let now = ctx.now;
    let all = &ctx.tl.pauses;
    let (state, due, ended, used, pauses) = match end {
        End::Met(t) | End::Stopped(t) => {
            let pauses = clip(all, t);
            let used = counted(cal, start, t, &pauses);
            let due = match due_after(cal, start, amount, &pauses) {
                Due::At(d) => Some(d),
                _ => None,
            };
            let state = match (end, used > amount) {
                (_, true) => SlaState::Breached,
                (End::Met(_), false) => SlaState::Met,
                _ => SlaState::Stopped,
            };
            let due = if state == SlaState::Stopped {
                None
            } else {
                due
            };
            (state, due, Some(t), used, pauses)
        }
        End::Open => {
            let used = counted(cal, start, now, all);
            let (state, due) = match due_after(cal, start, amount, all) {
                Due::At(d) if d <= now => (SlaState::Breached, Some(d)),
                Due::At(d) => (SlaState::Running, Some(d)),
                Due::Paused => (SlaState::Paused, None),
                Due::Never => (SlaState::Running, None),
            };
            (state, due, None, used, all.clone())
        }
    };
    let remaining = (amount - used).max(SignedDuration::ZERO);
    let prefix = match kind {
        TargetKind::Update => format!("{}:{cycle}", kind.as_str()),
        _ => kind.as_str().to_string(),
    };
    let stages = ctx
        .policy
        .stages()
        .iter()
        .map(|s| {
            let at = match state {
                SlaState::Running => match due_after(cal, start, pct(amount, s.percent), &pauses) {
                    Due::At(d) => Some(d),
                    _ => None,
                },
                SlaState::Breached if ended.is_none() && s.percent == 100 => due,
                _ => None,
            };
            StagePlan {
                percent: s.percent,
                to: s.to.clone(),
                key: format!("{prefix}:{}", s.percent),
                at,
            }
        })
        .collect();
    let horizon = ended.or(due).unwrap_or(now).max(start);
    let mut explain = Vec::new();
    let from_what = match kind {
        TargetKind::Update => format!("staff reply {cycle} at {}", ctx.ts(start)),
        _ => format!("receipt at {}", ctx.ts(start)),
    };
    explain.push(format!(
        "{}: {} on calendar {}, counted from {from_what}",
        kind.label(),
        format_duration(amount),
        cal.describe()
    ));
    for p in pauses
        .iter()
        .filter(|p| p.to > start && p.from < horizon.max(now))
    {
        let why = match p.kind {
            PauseKind::Waiting => "waiting for the customer",
            PauseKind::Resolved => "resolved",
        };
        let until = if p.ongoing {
            "now".to_string()
        } else {
            ctx.ts(p.to)
        };
        let lost = cal.between(p.from.max(start), p.to);
        explain.push(format!(
            "paused {} – {until} ({why}): {} of calendar time not counted",
            ctx.ts(p.from.max(start)),
            format_duration(lost)
        ));
    }
    if let Calendar::Business(_) = cal {
        let real = horizon.duration_since(start);
        if cal.between(start, horizon) < real {
            explain.push("not counted: the hours the calendar is closed (nights, weekends)".into());
        }
        for (d, name) in cal.holidays_between(start, horizon) {
            explain.push(format!("not counted: {d} {name}"));
        }
    }
    let (o1, o2) = (ctx.tz.to_offset(start), ctx.tz.to_offset(horizon));
    if o1 != o2 {
        let rule = match cal {
            Calendar::Always => "24/7 counts real hours, the local clock shifts",
            Calendar::Business(_) => "opening hours stay at local time",
        };
        explain.push(format!(
            "daylight saving time changes in between (UTC{o1} → UTC{o2}): {rule}"
        ));
    }
    explain.push(outcome(ctx, kind, state, due, ended, used, remaining));
    TargetClock {
        kind,
        amount,
        calendar: String::new(),
        cycle,
        started: start,
        due,
        state,
        ended,
        used,
        remaining,
        stages,
        explain,
    }
}

fn outcome(
    ctx: &Ctx<'_>,
    kind: TargetKind,
    state: SlaState,
    due: Option<Timestamp>,
    ended: Option<Timestamp>,
    used: SignedDuration,
    remaining: SignedDuration,
) -> String {
    let did = match kind {
        TargetKind::FirstResponse => "answered",
        TargetKind::Resolution => "resolved",
        TargetKind::Update => "updated",
    };
    let used = format_duration(used);
    let due_s = due.map_or_else(
        || "never (the calendar does not open)".into(),
        |d| ctx.ts(d),
    );
    match (state, ended) {
        (SlaState::Met, Some(e)) => format!("met: {did} at {} after {used}", ctx.ts(e)),
        (SlaState::Breached, Some(e)) if kind == TargetKind::Update => format!(
            "breached: due {due_s}, resolved at {} without an update ({used} used)",
            ctx.ts(e)
        ),
        (SlaState::Breached, Some(e))
            if kind == TargetKind::FirstResponse && ctx.tl.replies.is_empty() =>
        {
            format!(
                "breached: due {due_s}, resolved at {} without an answer ({used} used)",
                ctx.ts(e)
            )
        }
        (SlaState::Breached, Some(e)) => format!(
            "breached: {did} late at {} ({used} used), due {due_s}",
            ctx.ts(e)
        ),
        (SlaState::Breached, None) => format!("breached: due {due_s}, {used} used so far"),
        (SlaState::Stopped, e) => format!(
            "stopped: the ticket was resolved{} ({used} used)",
            e.map(|e| format!(" at {}", ctx.ts(e))).unwrap_or_default()
        ),
        (SlaState::Paused, _) => format!(
            "paused now: {} left, due once the clock runs again",
            format_duration(remaining)
        ),
        _ => format!("running: due {due_s}, {} left", format_duration(remaining)),
    }
}

/// Names the earlier update cycles whose next reply came late.
fn late_cycles(ctx: &Ctx<'_>, cal: &Calendar, amount: SignedDuration, explain: &mut Vec<String>) {
    for (i, w) in ctx.tl.replies.windows(2).enumerate() {
        let used = counted(cal, w[0], w[1], &clip(&ctx.tl.pauses, w[1]));
        if used > amount {
            explain.push(format!(
                "update cycle {} was late: the next reply came at {} after {}",
                i + 1,
                ctx.ts(w[1]),
                format_duration(used)
            ));
        }
    }
}
