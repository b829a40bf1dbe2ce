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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sla::policy::Policies;

    use crate::sla::calendar::tests::{at, hours};

    fn mins(m: i64) -> SignedDuration {
        SignedDuration::from_mins(m)
    }

    /// One policy "P" with these target lines, calendars "business"
    /// (national holidays) and "bavaria" (DE-BY).
    fn policies(targets: &str) -> Policies {
        Policies::parse(&format!(
            "[calendar.business]\n[calendar.bavaria]\nholidays = \"DE-BY\"\n\
             [[policy]]\nplan = \"P\"\n{targets}\n"
        ))
        .unwrap()
    }

    fn run(p: &Policies, received: &str, happenings: &[(&str, Happening)], now: &str) -> Clock {
        let history = History {
            received: at(received),
            happenings: happenings.iter().map(|(t, h)| (at(t), *h)).collect(),
        };
        evaluate(&p.policies()[0], p, &history, at(now))
    }

    fn target(c: &Clock, kind: TargetKind) -> &TargetClock {
        c.targets.iter().find(|t| t.kind == kind).unwrap()
    }

    fn explains(t: &TargetClock, needle: &str) -> bool {
        t.explain.iter().any(|l| l.contains(needle))
    }

    use Happening::*;

    #[test]
    fn business_time_skips_the_weekend() {
        let p = policies("first_response = \"2h\"\ncalendar = \"business\"");
        let c = run(&p, "2026-12-04 17:00", &[], "2026-12-05 12:00");
        let fr = target(&c, TargetKind::FirstResponse);
        assert_eq!(fr.due, Some(at("2026-12-07 10:00")));
        assert_eq!(fr.state, SlaState::Running);
        assert_eq!(fr.used, hours(1));
        assert_eq!(fr.remaining, hours(1));
        assert_eq!(fr.cycle, 0);
        assert_eq!(fr.calendar, "business");
        assert!(explains(fr, "nights, weekends"), "{:?}", fr.explain);
        assert!(explains(fr, "Mon–Fri 09:00–18:00 Europe/Berlin"));
        assert!(explains(fr, "running: due 2026-12-07 10:00 CET, 1h left"));
    }

    #[test]
    fn public_holidays_are_skipped_and_named() {
        let p = policies("first_response = \"36h\"\ncalendar = \"business\"");
        // Easter 2026: Karfreitag 3 April and Ostermontag 6 April.
        let c = run(&p, "2026-04-01 12:00", &[], "2026-04-01 12:00");
        let fr = target(&c, TargetKind::FirstResponse);
        assert_eq!(fr.due, Some(at("2026-04-09 12:00")));
        assert!(explains(fr, "2026-04-03 Karfreitag"), "{:?}", fr.explain);
        assert!(explains(fr, "2026-04-06 Ostermontag"));
        // 1 May 2026 is a Friday: Thursday 17:00 + 2 h is Monday 10:00.
        let c = run(&p, "2026-04-30 09:00", &[], "2026-04-30 09:00");
        let p2 = policies("first_response = \"11h\"\ncalendar = \"business\"");
        let c2 = run(&p2, "2026-04-30 09:00", &[], "2026-04-30 09:00");
        let fr2 = target(&c2, TargetKind::FirstResponse);
        assert_eq!(fr2.due, Some(at("2026-05-04 11:00")));
        assert!(
            explains(fr2, "2026-05-01 Tag der Arbeit"),
            "{:?}",
            fr2.explain
        );
        assert!(explains(
            target(&c, TargetKind::FirstResponse),
            "Tag der Arbeit"
        ));
        // 3 October 2025 is a Friday.
        let c = run(&p2, "2025-10-02 09:00", &[], "2025-10-02 09:00");
        let fr = target(&c, TargetKind::FirstResponse);
        assert_eq!(fr.due, Some(at("2025-10-06 11:00")));
        assert!(explains(fr, "2025-10-03 Tag der Deutschen Einheit"));
    }

    #[test]
    fn state_holidays_count_only_on_their_states_calendar() {
        // 6 January 2026 is a Tuesday: a holiday in Bavaria, not nationwide.
        let p = policies(
            "first_response = \"2h\"\ncalendar = \"business\"\nresolution = \"2h\"\nresolution_calendar = \"bavaria\"",
        );
        let c = run(&p, "2026-01-05 17:00", &[], "2026-01-05 17:00");
        assert_eq!(
            target(&c, TargetKind::FirstResponse).due,
            Some(at("2026-01-06 10:00"))
        );
        let r = target(&c, TargetKind::Resolution);
        assert_eq!(r.due, Some(at("2026-01-07 10:00")));
        assert!(
            explains(r, "2026-01-06 Heilige Drei Könige"),
            "{:?}",
            r.explain
        );
        assert!(explains(r, "holidays DE-BY"));
    }

    #[test]
    fn daylight_saving_changes() {
        // 24/7: 36 h across the spring change are 36 real hours.
        let p = policies("first_response = \"36h\"");
        let c = run(&p, "2026-03-28 12:00", &[], "2026-03-28 12:00");
        let fr = target(&c, TargetKind::FirstResponse);
        assert_eq!(fr.due, Some(at("2026-03-28 12:00") + hours(36)));
        assert_eq!(fr.due, Some(at("2026-03-30 01:00")));
        assert!(explains(fr, "UTC+01 → UTC+02"), "{:?}", fr.explain);
        assert!(explains(fr, "24/7 counts real hours"));
        // And across the autumn change.
        let c = run(&p, "2026-10-24 12:00", &[], "2026-10-24 12:00");
        let fr = target(&c, TargetKind::FirstResponse);
        assert_eq!(fr.due, Some(at("2026-10-25 23:00")));
        // Business: 09:00 stays 09:00 local.
        let p = policies("first_response = \"2h\"\ncalendar = \"business\"");
        for (from, due) in [
            ("2026-03-27 17:00", "2026-03-30 10:00"),
            ("2026-10-23 17:00", "2026-10-26 10:00"),
        ] {
            let c = run(&p, from, &[], from);
            let fr = target(&c, TargetKind::FirstResponse);
            assert_eq!(fr.due, Some(at(due)));
            assert!(
                explains(fr, "opening hours stay at local time"),
                "{:?}",
                fr.explain
            );
        }
        // No change, no note.
        let c = run(&p, "2026-12-04 17:00", &[], "2026-12-04 17:00");
        assert!(!explains(target(&c, TargetKind::FirstResponse), "daylight"));
    }

    #[test]
    fn a_pause_across_the_night_moves_the_due_by_the_open_time_only() {
        let p = policies("first_response = \"4h\"\ncalendar = \"business\"");
        // Without the pause: 3 h Tuesday, 1 h Wednesday.
        let c = run(&p, "2026-12-01 15:00", &[], "2026-12-01 15:00");
        assert_eq!(
            target(&c, TargetKind::FirstResponse).due,
            Some(at("2026-12-02 10:00"))
        );
        // Pending 17:00 Tuesday, customer reply 10:00 Wednesday: 2 open
        // hours (17–18, 9–10) paused, so due 12:00.
        let h = [("2026-12-01 17:00", Waiting), ("2026-12-02 10:00", Resumed)];
        let c = run(&p, "2026-12-01 15:00", &h, "2026-12-02 10:30");
        let fr = target(&c, TargetKind::FirstResponse);
        assert_eq!(fr.due, Some(at("2026-12-02 12:00")));
        assert_eq!(fr.used, mins(150));
        assert_eq!(fr.state, SlaState::Running);
        assert!(
            explains(fr, "paused 2026-12-01 17:00 CET – 2026-12-02 10:00 CET (waiting for the customer): 2h of calendar time not counted"),
            "{:?}",
            fr.explain
        );
        // Still waiting: paused, no due, the rest remains.
        let c = run(&p, "2026-12-01 15:00", &h[..1], "2026-12-02 10:30");
        let fr = target(&c, TargetKind::FirstResponse);
        assert_eq!(fr.state, SlaState::Paused);
        assert_eq!(fr.due, None);
        assert_eq!(fr.remaining, hours(2));
        assert!(fr.stages.iter().all(|s| s.at.is_none()));
        assert!(
            explains(fr, "– now (waiting for the customer)"),
            "{:?}",
            fr.explain
        );
    }

    #[test]
    fn due_exactly_at_closing_time_and_delivery_hours() {
        let p = policies("first_response = \"1h\"\ncalendar = \"business\"");
        let c = run(&p, "2026-12-01 17:00", &[], "2026-12-01 17:00");
        let fr = target(&c, TargetKind::FirstResponse);
        assert_eq!(fr.due, Some(at("2026-12-01 18:00")));
        let breach = fr.stages.iter().find(|s| s.percent == 100).unwrap();
        assert_eq!(breach.at, Some(at("2026-12-01 18:00")));
        let cal = p.calendar("business").unwrap();
        // The team hears of it when the desk opens; on-call at once.
        assert_eq!(
            deliver_at(breach, cal, at("2026-12-01 18:00")),
            at("2026-12-02 09:00")
        );
        let mut oncall = breach.clone();
        oncall.to.push("oncall".into());
        assert!(oncall.on_call());
        assert_eq!(
            deliver_at(&oncall, cal, at("2026-12-01 23:00")),
            at("2026-12-01 23:00")
        );
        // Friday night waits for Monday; open hours and 24/7 go at once.
        assert_eq!(
            deliver_at(breach, cal, at("2026-12-04 22:00")),
            at("2026-12-07 09:00")
        );
        assert_eq!(
            deliver_at(breach, cal, at("2026-12-04 12:00")),
            at("2026-12-04 12:00")
        );
        assert_eq!(
            deliver_at(breach, &Calendar::Always, at("2026-12-04 22:00")),
            at("2026-12-04 22:00")
        );
    }

    #[test]
    fn resolution_runs_again_after_a_reopen() {
        let p = policies("first_response = \"1h\"\nresolution = \"8h\"");
        let resolved = [
            ("2026-12-01 00:30", StaffReply),
            ("2026-12-01 02:00", Resolved),
        ];
        let c = run(&p, "2026-12-01 00:00", &resolved, "2026-12-01 09:00");
        let r = target(&c, TargetKind::Resolution);
        assert_eq!(
            (r.state, r.ended, r.used),
            (SlaState::Met, Some(at("2026-12-01 02:00")), hours(2))
        );
        assert!(r.stages.iter().all(|s| s.at.is_none()));
        let mut h = resolved.to_vec();
        h.push(("2026-12-01 10:00", Reopened));
        let c = run(&p, "2026-12-01 00:00", &h, "2026-12-01 12:00");
        let r = target(&c, TargetKind::Resolution);
        assert_eq!(r.state, SlaState::Running);
        assert_eq!(r.used, hours(4));
        assert_eq!(r.due, Some(at("2026-12-01 16:00")));
        assert_eq!(r.ended, None);
        assert!(
            explains(r, "(resolved): 8h of calendar time not counted"),
            "{:?}",
            r.explain
        );
        // The first response stays met.
        let fr = target(&c, TargetKind::FirstResponse);
        assert_eq!(fr.state, SlaState::Met);
        // The final resolve decides: late this time.
        h.push(("2026-12-01 17:00", Resolved));
        let c = run(&p, "2026-12-01 00:00", &h, "2026-12-01 18:00");
        let r = target(&c, TargetKind::Resolution);
        assert_eq!(r.state, SlaState::Breached);
        assert_eq!(r.used, hours(9));
        assert_eq!(r.due, Some(at("2026-12-01 16:00")));
        assert!(
            explains(r, "resolved late at 2026-12-01 17:00 CET"),
            "{:?}",
            r.explain
        );
    }

    #[test]
    fn a_severity_change_counts_the_new_targets_from_receipt() {
        let p = Policies::embedded();
        let history = History {
            received: at("2026-12-01 10:00"),
            happenings: vec![(
                at("2026-12-01 12:00"),
                SeverityChanged {
                    from: Severity::Malfunction,
                    to: Severity::Production,
                },
            )],
        };
        let now = at("2026-12-01 12:00");
        let sev3 = p
            .lookup(Some("Premium"), Severity::Malfunction)
            .unwrap()
            .policy;
        let sev2 = p
            .lookup(Some("Premium"), Severity::Production)
            .unwrap()
            .policy;
        let before = evaluate(sev3, &p, &history, now);
        assert_eq!(
            target(&before, TargetKind::FirstResponse).due,
            Some(at("2026-12-01 22:00"))
        );
        let after = evaluate(sev2, &p, &history, now);
        let fr = target(&after, TargetKind::FirstResponse);
        assert_eq!(fr.due, Some(at("2026-12-01 11:00")));
        assert_eq!(fr.state, SlaState::Breached);
        assert!(
            explains(fr, "severity changed from 3 to 2 at 2026-12-01 12:00 CET"),
            "{:?}",
            fr.explain
        );
        assert_eq!(
            target(&after, TargetKind::Resolution).due,
            Some(at("2026-12-01 18:00"))
        );
    }

    #[test]
    fn first_response_met_late_or_stopped() {
        let p = policies("first_response = \"2h\"\ncalendar = \"business\"");
        let c = run(
            &p,
            "2026-12-01 10:00",
            &[("2026-12-01 11:30", StaffReply)],
            "2026-12-01 15:00",
        );
        let fr = target(&c, TargetKind::FirstResponse);
        assert_eq!(fr.state, SlaState::Met);
        assert_eq!(fr.ended, Some(at("2026-12-01 11:30")));
        assert_eq!(fr.used, mins(90));
        assert_eq!(fr.remaining, mins(30));
        assert_eq!(fr.due, Some(at("2026-12-01 12:00")));
        assert!(fr.stages.iter().all(|s| s.at.is_none()));
        // Exactly at the due instant is still in time.
        let c = run(
            &p,
            "2026-12-01 10:00",
            &[("2026-12-01 12:00", StaffReply)],
            "2026-12-01 15:00",
        );
        assert_eq!(target(&c, TargetKind::FirstResponse).state, SlaState::Met);
        // Late.
        let c = run(
            &p,
            "2026-12-01 17:00",
            &[("2026-12-02 11:00", StaffReply)],
            "2026-12-02 15:00",
        );
        let fr = target(&c, TargetKind::FirstResponse);
        assert_eq!(fr.state, SlaState::Breached);
        assert_eq!(fr.due, Some(at("2026-12-02 10:00")));
        assert_eq!(fr.used, hours(3));
        assert_eq!(fr.remaining, SignedDuration::ZERO);
        assert!(
            explains(fr, "answered late at 2026-12-02 11:00 CET"),
            "{:?}",
            fr.explain
        );
        // Pending before any answer pauses the first response.
        let h = [("2026-12-01 10:30", Waiting), ("2026-12-01 14:00", Resumed)];
        let c = run(&p, "2026-12-01 10:00", &h, "2026-12-01 14:00");
        assert_eq!(
            target(&c, TargetKind::FirstResponse).due,
            Some(at("2026-12-01 15:30"))
        );
        // Resolved without any answer: stopped.
        let c = run(
            &p,
            "2026-12-01 10:00",
            &[("2026-12-01 11:00", Resolved)],
            "2026-12-01 15:00",
        );
        let fr = target(&c, TargetKind::FirstResponse);
        assert_eq!(fr.state, SlaState::Stopped);
        assert_eq!((fr.due, fr.ended), (None, Some(at("2026-12-01 11:00"))));
        assert!(explains(fr, "stopped: the ticket was resolved"));
        // ... unless it had run out already.
        let c = run(
            &p,
            "2026-12-01 10:00",
            &[("2026-12-01 13:00", Resolved)],
            "2026-12-01 15:00",
        );
        let fr = target(&c, TargetKind::FirstResponse);
        assert_eq!(fr.state, SlaState::Breached);
        assert!(explains(fr, "without an answer"), "{:?}", fr.explain);
    }

    #[test]
    fn running_past_due_is_breached_with_only_the_breach_stage_pending() {
        let p = policies("first_response = \"1h\"");
        let c = run(&p, "2026-12-01 10:00", &[], "2026-12-01 12:00");
        let fr = target(&c, TargetKind::FirstResponse);
        assert_eq!(fr.state, SlaState::Breached);
        assert_eq!(fr.ended, None);
        assert_eq!(fr.used, hours(2));
        assert_eq!(fr.remaining, SignedDuration::ZERO);
        let pending: Vec<(u8, Option<Timestamp>)> =
            fr.stages.iter().map(|s| (s.percent, s.at)).collect();
        assert_eq!(
            pending,
            [
                (50, None),
                (75, None),
                (90, None),
                (100, Some(at("2026-12-01 11:00")))
            ]
        );
        // Waiting after the breach does not hide it.
        let c = run(
            &p,
            "2026-12-01 10:00",
            &[("2026-12-01 11:30", Waiting)],
            "2026-12-01 12:00",
        );
        assert_eq!(
            target(&c, TargetKind::FirstResponse).state,
            SlaState::Breached
        );
    }

    #[test]
    fn update_cycles_start_at_each_staff_reply() {
        let p = Policies::embedded();
        let sev2 = p
            .lookup(Some("Premium"), Severity::Production)
            .unwrap()
            .policy;
        let ev = |h: &[(&str, Happening)], now: &str| {
            let history = History {
                received: at("2026-12-01 10:00"),
                happenings: h.iter().map(|(t, x)| (at(t), *x)).collect(),
            };
            evaluate(sev2, &p, &history, at(now))
        };
        // No reply yet: no update clock.
        let c = ev(&[], "2026-12-01 10:10");
        assert!(c.targets.iter().all(|t| t.kind != TargetKind::Update));
        assert_eq!(c.targets.len(), 2);
        let replies = [
            ("2026-12-01 10:30", StaffReply),
            ("2026-12-01 14:30", StaffReply),
        ];
        let c = ev(&replies[..1], "2026-12-01 11:00");
        let u = target(&c, TargetKind::Update);
        assert_eq!((u.cycle, u.started), (1, at("2026-12-01 10:30")));
        assert_eq!(u.due, Some(at("2026-12-01 12:30")));
        assert_eq!(u.stages[0].key, "update:1:50");
        // The second reply came 4 h later: cycle 1 was late, cycle 2 runs.
        let c = ev(&replies, "2026-12-01 15:00");
        let u = target(&c, TargetKind::Update);
        assert_eq!((u.cycle, u.state), (2, SlaState::Running));
        assert_eq!(u.due, Some(at("2026-12-01 16:30")));
        assert_eq!(u.used, mins(30));
        let keys: Vec<&str> = u.stages.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(
            keys,
            ["update:2:50", "update:2:75", "update:2:90", "update:2:100"]
        );
        assert!(explains(u, "update cycle 1 was late"), "{:?}", u.explain);
        assert!(explains(u, "counted from staff reply 2"));
        // Waiting for the customer pauses the update too.
        let mut h = replies.to_vec();
        h.push(("2026-12-01 15:00", Waiting));
        let c = ev(&h, "2026-12-01 20:00");
        let u = target(&c, TargetKind::Update);
        assert_eq!(
            (u.state, u.due, u.remaining),
            (SlaState::Paused, None, mins(90))
        );
        // Resolved: stopped.
        h.push(("2026-12-01 21:00", Resolved));
        let c = ev(&h, "2026-12-01 22:00");
        let u = target(&c, TargetKind::Update);
        assert_eq!(
            (u.state, u.ended),
            (SlaState::Stopped, Some(at("2026-12-01 21:00")))
        );
        assert!(u.stages.iter().all(|s| s.at.is_none()));
    }

    #[test]
    fn stage_instants_fall_at_their_percentages() {
        let p = Policies::embedded();
        let sev1 = p
            .lookup(Some("Premium"), Severity::Critical)
            .unwrap()
            .policy;
        let history = History {
            received: at("2026-12-01 10:00"),
            happenings: vec![],
        };
        let c = evaluate(sev1, &p, &history, at("2026-12-01 10:05"));
        let fr = target(&c, TargetKind::FirstResponse);
        let got: Vec<(&str, Option<Timestamp>, bool)> = fr
            .stages
            .iter()
            .map(|s| (s.key.as_str(), s.at, s.on_call()))
            .collect();
        let t = |s: &str| Some(at(s));
        assert_eq!(
            got,
            [
                ("first-response:50", t("2026-12-01 10:15"), false),
                ("first-response:75", t("2026-12-01 10:22:30"), true),
                ("first-response:90", t("2026-12-01 10:27"), true),
                ("first-response:100", t("2026-12-01 10:30"), true),
            ]
        );
        let r = target(&c, TargetKind::Resolution);
        assert_eq!(r.stages[3].key, "resolution:100");
        assert_eq!(r.stages[0].at, t("2026-12-01 12:00"));
        // On a business calendar the stages count business time.
        let p = policies("first_response = \"4h\"\ncalendar = \"business\"");
        let c = run(&p, "2026-12-04 16:00", &[], "2026-12-04 16:00");
        let at_: Vec<Option<Timestamp>> = target(&c, TargetKind::FirstResponse)
            .stages
            .iter()
            .map(|s| s.at)
            .collect();
        assert_eq!(
            at_,
            [
                t("2026-12-04 18:00"),
                t("2026-12-07 10:00"),
                t("2026-12-07 10:36"),
                t("2026-12-07 11:00")
            ]
        );
    }

    #[test]
    fn odd_histories_do_not_confuse_the_clock() {
        let p = policies("first_response = \"2h\"\nresolution = \"4h\"");
        // Out of order, before receipt, in the future, doubled.
        let h = [
            ("2026-12-01 12:00", Resumed),
            ("2026-12-01 09:00", Waiting),
            ("2026-12-01 11:00", Resumed),
            ("2026-12-01 11:30", Waiting),
            ("2026-12-01 18:00", StaffReply),
        ];
        let c = run(&p, "2026-12-01 10:00", &h, "2026-12-01 13:00");
        let fr = target(&c, TargetKind::FirstResponse);
        // Paused 10–11 (waiting since before receipt) and 11:30–12:00.
        assert_eq!(fr.used, mins(90));
        assert_eq!(fr.due, Some(at("2026-12-01 13:30")));
        assert_eq!(fr.state, SlaState::Running);
        // A policy naming a calendar another file defines counts 24/7.
        let other = policies("first_response = \"2h\"\ncalendar = \"business\"");
        let history = History {
            received: at("2026-12-05 10:00"),
            happenings: vec![],
        };
        let c = evaluate(
            &other.policies()[0],
            &Policies::none(),
            &history,
            at("2026-12-05 10:00"),
        );
        let fr = target(&c, TargetKind::FirstResponse);
        assert_eq!(fr.due, Some(at("2026-12-05 12:00")));
        assert!(explains(fr, "is not defined: counted 24/7"));
        assert_eq!(SlaState::Breached.as_str(), "breached");
    }

    fn business() -> Calendar {
        policies("first_response = \"1h\"")
            .calendar("business")
            .unwrap()
            .clone()
    }

    fn pauses_from(spec: &[(i64, i64)], base: Timestamp) -> Vec<Pause> {
        // Non-overlapping pauses: each (gap, length) in minutes after the last.
        let mut out = Vec::new();
        let mut t = base;
        for (gap, len) in spec {
            let from = t + mins(*gap);
            let to = from + mins(*len);
            out.push(Pause {
                from,
                to,
                ongoing: false,
                kind: PauseKind::Waiting,
            });
            t = to;
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// With pauses, a due time is still never strictly inside a closed
        /// gap of a business calendar, and the counted time up to it is
        /// the amount.
        #[test]
        fn due_is_never_inside_a_closed_gap(
            start in 0i64..(2 * 365 * 86_400),
            amount in 1i64..(60 * 60),
            spec in proptest::collection::vec((0i64..3000, 1i64..3000), 0..4),
        ) {
            let c = business();
            let s = at("2026-01-01 00:00") + SignedDuration::from_secs(start);
            let pauses = pauses_from(&spec, s);
            let amount = mins(amount);
            let Due::At(due) = due_after(&c, s, amount, &pauses) else {
                return Err(proptest::test_runner::TestCaseError::fail("no due"));
            };
            let before = due - SignedDuration::from_nanos(1);
            proptest::prop_assert!(c.is_open(due) || c.is_open(before), "due {due}");
            proptest::prop_assert_eq!(counted(&c, s, due, &pauses), amount);
        }

        /// A later start or more time is never due earlier, and pauses
        /// never make a due earlier.
        #[test]
        fn due_times_are_monotonic_and_pauses_only_delay(
            start in 0i64..(2 * 365 * 86_400),
            later in 0i64..(5 * 86_400),
            a in 1i64..(40 * 60),
            b in 0i64..(40 * 60),
            spec in proptest::collection::vec((0i64..3000, 1i64..3000), 0..4),
            always in proptest::bool::ANY,
        ) {
            let c = if always { Calendar::Always } else { business() };
            let s1 = at("2026-01-01 00:00") + SignedDuration::from_secs(start);
            let s2 = s1 + SignedDuration::from_secs(later);
            let pauses = pauses_from(&spec, s1);
            let (a1, a2) = (mins(a), mins(a + b));
            let due = |s, amount, p: &[Pause]| match due_after(&c, s, amount, p) {
                Due::At(d) => d,
                _ => Timestamp::MAX,
            };
            proptest::prop_assert!(due(s1, a1, &pauses) <= due(s2, a1, &pauses));
            proptest::prop_assert!(due(s1, a1, &pauses) <= due(s1, a2, &pauses));
            proptest::prop_assert!(due(s1, a1, &[]) <= due(s1, a1, &pauses));
        }
    }
}
