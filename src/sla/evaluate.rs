//! A ticket's SLA evaluated at an instant, and what firing its due
//! reminder stages decides. The clock ([`crate::sla::clock`]) is not
//! stored: it is computed from the ticket's receipt and its events
//! whenever one of them changes. This module turns that clock into what
//! follows from it — the ticket's overall state and nearest due time, the
//! reminder stages still to come, which of the stages due now fires
//! (per target only the highest; the lower ones are superseded; a
//! business-hours stage waits for the opening; a late one is marked late)
//! and the audit texts of it all. Pure: the caller reads the rows and
//! writes what comes out.

use crate::domain::{severity_change, Severity, Status, TicketNumber};
use crate::sla::clock::{
    deliver_at, evaluate, Clock, Happening, History, SlaState, StagePlan, TargetClock,
};
use crate::sla::policy::{format_duration, Policies, TargetKind};
use jiff::{SignedDuration, Timestamp};

/// A reminder this much after its instant is marked late (the daemon was
/// not running, or the database was unavailable).
pub const LATE_AFTER: SignedDuration = SignedDuration::from_mins(5);

/// The plan of an organisation (directory id), if it has one.
pub type PlanOf = dyn Fn(&str) -> Option<String> + Send + Sync;

/// What SLA evaluation needs besides the ticket: the policies and each
/// organisation's plan.
pub struct SlaContext<'a> {
    /// The policies in force.
    pub policies: &'a Policies,
    /// The plan of an organisation.
    pub plan_of: &'a PlanOf,
}

/// The ticket facts the clock needs.
#[derive(Debug, Clone)]
pub struct SlaTicket {
    /// Row id (0 for a ticket not stored yet).
    pub id: i64,
    /// Public number (empty for a ticket not numbered yet).
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

/// A reminder stage still to come, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upcoming {
    /// `s<severity>:<target>[:<cycle>]:<percent>`.
    pub key: String,
    /// When the SLA arithmetic puts it.
    pub planned: Timestamp,
    /// When it goes out (later than planned in quiet hours).
    pub due: Timestamp,
    /// Audience names.
    pub audiences: Vec<String>,
}

impl Evaluated {
    /// The next reminder row: the stage that goes out first (a past one
    /// not yet fired goes out now, or at the next opening), and when.
    ///
    /// Per target, the stage that fires next is its highest one already
    /// due (what firing sends), else its earliest one to come; the row is
    /// the earliest of those.
    pub fn next_row(&self, policies: &Policies) -> Option<(&Candidate, Timestamp)> {
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

    /// The stages still to come, for people, by when they go out.
    pub fn upcoming(&self, policies: &Policies) -> Vec<Upcoming> {
        let mut list: Vec<Upcoming> = self
            .stages
            .iter()
            .filter(|c| !self.fired.contains(&c.key))
            .map(|c| Upcoming {
                key: c.key.clone(),
                planned: c.at,
                due: c.when(policies, self.now),
                audiences: c.to.clone(),
            })
            .collect();
        list.sort_by_key(|u| u.due);
        list
    }
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
            "severity" => match severity_change(detail) {
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

/// `s<severity>:<target>[:<cycle>]:<percent>` → (severity, stage key,
/// target-and-cycle, percent).
fn split_key(key: &str) -> Option<(u8, &str, &str, u8)> {
    let rest = key.strip_prefix('s')?;
    let (sev, stage) = rest.split_once(':')?;
    let (target, pct) = stage.rsplit_once(':')?;
    Some((sev.parse().ok()?, stage, target, pct.parse().ok()?))
}

/// `first-response`, `resolution`, `update:<cycle>`: how a key names a
/// target.
fn target_name(t: &TargetClock) -> String {
    match t.kind {
        TargetKind::Update => format!("update:{}", t.cycle),
        k => k.as_str().to_string(),
    }
}

/// Evaluates a ticket whose row and history are known; `fired` of the
/// result is empty (the caller fills in what its rows say fired).
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

/// A reminder stage that fires, for the mails and chat posts about it.
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

/// A stage that fires now: the highest one due of its target, with the
/// lower ones due with it that it supersedes.
#[derive(Debug, Clone)]
pub struct Fire {
    /// The stage's row key.
    pub key: String,
    /// Its target: `first-response`, `resolution`, `update:<cycle>`.
    pub target: String,
    /// What the mails and posts about it say.
    pub reminder: Reminder,
    /// The lower stages of its target due with it: (key, instant).
    pub superseded: Vec<(String, Timestamp)>,
}

/// How late something due at `planned` runs at `now`, when later than
/// [`LATE_AFTER`].
pub fn late_by(planned: Timestamp, now: Timestamp) -> Option<SignedDuration> {
    Some(now.duration_since(planned)).filter(|l| *l > LATE_AFTER)
}

/// The stages of an evaluated ticket that fire at `now`: per target only
/// the highest stage due — after a long stop the breach, not 50, 75 and
/// 90 % as well — unless it is a business-hours stage due while its
/// calendar is closed (it waits for the opening; the next row says when).
pub fn fires_due(e: &Evaluated, policies: &Policies, now: Timestamp) -> Vec<Fire> {
    let due = |c: &&Candidate| c.at <= now && !e.fired.contains(&c.key);
    let mut targets: Vec<&str> = Vec::new();
    for c in e.stages.iter().filter(due) {
        if !targets.contains(&c.target.as_str()) {
            targets.push(&c.target);
        }
    }
    let mut fires = Vec::new();
    for target in targets {
        let mut group: Vec<&Candidate> = e
            .stages
            .iter()
            .filter(due)
            .filter(|c| c.target == target)
            .collect();
        group.sort_by_key(|c| std::cmp::Reverse(c.percent));
        let Some(top) = group.first().copied() else {
            continue;
        };
        if top.when(policies, now) > now {
            continue;
        }
        let tc = e
            .clock
            .iter()
            .flat_map(|c| c.targets.iter())
            .find(|t| target_name(t) == target);
        let reminder = Reminder {
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
            amount: tc.map(|t| format_duration(t.amount)).unwrap_or_default(),
            percent: top.percent,
            due: tc.and_then(|t| t.due),
            planned: top.at,
            late: late_by(top.at, now),
            audiences: top.to.clone(),
        };
        fires.push(Fire {
            key: top.key.clone(),
            target: target.to_string(),
            reminder,
            superseded: group[1..].iter().map(|c| (c.key.clone(), c.at)).collect(),
        });
    }
    fires
}

/// What firing a ticket's due reminder rows records, once the stages that
/// fire are rendered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Audit events on the ticket: (`sla-reminder` or `sla-breached`,
    /// detail), one per stage that fired.
    pub events: Vec<(String, String)>,
    /// Counters to count up by one, one per stage that fired.
    pub counters: Vec<String>,
    /// The due rows decided now: (row id, outcome). A due row not listed
    /// waits for its opening.
    pub outcomes: Vec<(i64, String)>,
    /// Stages decided without a row of their own, recorded as fired rows:
    /// (key, planned instant, outcome).
    pub records: Vec<(String, Timestamp, String)>,
    /// What happened, for the log: each row's outcome, then each record's.
    pub said: Vec<String>,
}

/// Records what firing decided: for each stage that fired (with the
/// description of each mail and post it sends, possibly none) its event,
/// counter and outcome, the stages it superseded, and every due row
/// (`due`: row id and key) that no longer applies. The keys decided are
/// added to `e.fired`, so `e` plans the next row afterwards.
pub fn settle(e: &mut Evaluated, due: &[(i64, String)], fired: &[(Fire, Vec<String>)]) -> Settled {
    let mut out = Settled::default();
    // (key, outcome, planned) of every stage decided now.
    let mut decided: Vec<(String, String, Timestamp)> = Vec::new();
    let mut fired_target: Vec<(String, u8)> = Vec::new();
    for (f, said) in fired {
        let r = &f.reminder;
        let percent = r.percent;
        let what = if percent == 100 {
            format!("{} breached", r.target)
        } else {
            format!("{} at {} %", r.target, percent)
        };
        let to = if said.is_empty() {
            "recorded only (no audience configured)".to_string()
        } else {
            said.join("; ")
        };
        let late_note = r
            .late
            .map(|l| format!(", late by {}", format_duration(l)))
            .unwrap_or_default();
        let (kind, counter) = if percent == 100 {
            ("sla-breached", "sla-breaches")
        } else {
            ("sla-reminder", "sla-reminders")
        };
        out.events
            .push((kind.to_string(), format!("{what}: {to}{late_note}")));
        out.counters.push(counter.to_string());
        let sent = if r.late.is_some() {
            "sent late"
        } else {
            "sent"
        };
        decided.push((f.key.clone(), format!("{sent}: {to}{late_note}"), r.planned));
        for (key, at) in &f.superseded {
            decided.push((
                key.clone(),
                format!("superseded by the {percent} % stage"),
                *at,
            ));
        }
        fired_target.push((f.target.clone(), percent));
    }
    // The rows that fell due: decided now, or superseded by what fired for
    // their target, or no longer applying (met, paused, resolved, another
    // severity). A row left alone waits for its opening (replanned).
    for (id, key) in due {
        if let Some((_, o, _)) = decided.iter().find(|(k, _, _)| k == key) {
            out.outcomes.push((*id, o.clone()));
            continue;
        }
        let target = split_key(key).map(|(_, _, t, _)| t).unwrap_or("");
        if let Some((_, pct)) = fired_target.iter().find(|(t, _)| t == target) {
            out.outcomes
                .push((*id, format!("superseded by the {pct} % stage")));
        } else if !e.stages.iter().any(|c| c.key == *key) {
            out.outcomes.push((
                *id,
                "obsolete: the target is met, paused, resolved or of another severity".into(),
            ));
        }
    }
    for (key, outcome, at) in &decided {
        if !due.iter().any(|(_, k)| k == key) {
            out.records.push((key.clone(), *at, outcome.clone()));
        }
    }
    out.said = out.outcomes.iter().map(|(_, o)| o.clone()).collect();
    out.said
        .extend(out.records.iter().map(|(_, _, o)| o.clone()));
    e.fired.extend(decided.into_iter().map(|(k, _, _)| k));
    e.fired.extend(
        due.iter()
            .filter(|(id, _)| out.outcomes.iter().any(|(o, _)| o == id))
            .map(|(_, k)| k.clone()),
    );
    out
}

/// The outcome of due reminder rows when there is nothing to evaluate.
pub const NOTHING_TO_EVALUATE: &str = "obsolete: SLA clocks are off or the ticket is gone";

/// The outcome of a digest run: the counts, whom it went to (each mail
/// and post described), and how late it ran.
pub fn digest_outcome(
    open: i64,
    breached: i64,
    said: &[String],
    late: Option<SignedDuration>,
) -> String {
    let late_note = late
        .map(|l| format!(", late by {}", format_duration(l)))
        .unwrap_or_default();
    let to = if said.is_empty() {
        "nobody (no audience entries)".to_string()
    } else {
        said.join("; ")
    };
    format!("{open} open, {breached} breached: {to}{late_note}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sla::calendar::tests::at as local;

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

    /// Policies with one plan "P": a first response within `amount` on
    /// `calendar` (empty: 24/7), reminders at 50, 75 and 100 % to "team".
    fn policies(amount: &str, calendar: &str) -> Policies {
        let calendar = if calendar.is_empty() {
            String::new()
        } else {
            format!("calendar = \"{calendar}\"\n")
        };
        Policies::parse(&format!(
            "[calendar.business]\n\
             [[reminder]]\nat = 50\nto = [\"team\"]\n\
             [[reminder]]\nat = 75\nto = [\"team\"]\n\
             [[reminder]]\nat = 100\nto = [\"team\"]\n\
             [[policy]]\nplan = \"P\"\nfirst_response = \"{amount}\"\n{calendar}"
        ))
        .unwrap()
    }

    fn ticket(received: Timestamp) -> SlaTicket {
        SlaTicket {
            id: 7,
            number: TicketNumber("T-7".into()),
            subject: "disk full".into(),
            status: Status::Open,
            severity: Severity::Malfunction,
            organisation: Some("acme".into()),
            requester: "it@acme.example".into(),
            received,
        }
    }

    fn evaluated(p: &Policies, received: Timestamp, now: Timestamp) -> Evaluated {
        let plan_of = |_: &str| Some("P".to_string());
        let ctx = SlaContext {
            policies: p,
            plan_of: &plan_of,
        };
        let history = History {
            received,
            happenings: Vec::new(),
        };
        evaluate_with(ticket(received), history, &ctx, now)
    }

    #[test]
    fn a_due_50_75_100_set_fires_the_breach_once_and_supersedes_the_rest() {
        let p = policies("4h", "");
        let received = at("2026-12-01T08:00:00Z");
        // Just before the breach the 50 and 75 % stages are due: the 75 %
        // one fires and supersedes the 50 % one.
        let before = at("2026-12-01T11:59:00Z");
        let e = evaluated(&p, received, before);
        let fires = fires_due(&e, &p, before);
        assert_eq!(fires.len(), 1);
        assert_eq!(fires[0].key, "s3:first-response:75");
        assert_eq!(
            fires[0].superseded,
            vec![(
                "s3:first-response:50".to_string(),
                at("2026-12-01T10:00:00Z")
            )]
        );
        // One minute past the breach, with all three rows due (none
        // fired, none late): the breach fires once, the other two are
        // superseded by it.
        let now = at("2026-12-01T12:01:00Z");
        let mut e = evaluated(&p, received, now);
        let fires = fires_due(&e, &p, now);
        assert_eq!(fires.len(), 1);
        let f = &fires[0];
        assert_eq!(f.key, "s3:first-response:100");
        assert_eq!(f.reminder.percent, 100);
        assert_eq!(f.reminder.target, "first-response");
        assert_eq!(f.reminder.amount, "4h");
        assert_eq!(f.reminder.audiences, ["team"]);
        assert_eq!(f.reminder.late, None);
        let due: Vec<(i64, String)> = [50, 75, 100]
            .iter()
            .enumerate()
            .map(|(i, pct)| (i as i64 + 1, format!("s3:first-response:{pct}")))
            .collect();
        let rendered = vec![(f.clone(), vec!["mail team@desk.example".to_string()])];
        let s = settle(&mut e, &due, &rendered);
        assert_eq!(
            s.outcomes,
            vec![
                (1, "superseded by the 100 % stage".to_string()),
                (2, "superseded by the 100 % stage".to_string()),
                (3, "sent: mail team@desk.example".to_string()),
            ]
        );
        assert!(s.records.is_empty());
        assert_eq!(
            s.events,
            vec![(
                "sla-breached".to_string(),
                "first-response breached: mail team@desk.example".to_string()
            )]
        );
        assert_eq!(s.counters, vec!["sla-breaches".to_string()]);
        // Everything of the target is decided: no row is left to plan.
        assert!(due.iter().all(|(_, k)| e.fired.contains(k)));
        assert!(e.next_row(&p).is_none());
    }

    #[test]
    fn a_stage_without_a_row_of_its_own_is_recorded_and_lateness_noted() {
        let p = policies("4h", "");
        let received = at("2026-12-01T08:00:00Z");
        // The daemon was down: an hour past the breach, only the 50 % row
        // (the pending one) exists.
        let now = at("2026-12-01T13:00:00Z");
        let mut e = evaluated(&p, received, now);
        let fires = fires_due(&e, &p, now);
        assert_eq!(fires.len(), 1);
        assert_eq!(fires[0].reminder.late, Some(SignedDuration::from_hours(1)));
        let rendered = vec![(fires[0].clone(), Vec::new())];
        let s = settle(&mut e, &[(1, "s3:first-response:50".into())], &rendered);
        assert_eq!(
            s.outcomes,
            vec![(1, "superseded by the 100 % stage".to_string())]
        );
        assert_eq!(
            s.records,
            vec![(
                "s3:first-response:100".to_string(),
                at("2026-12-01T12:00:00Z"),
                "sent late: recorded only (no audience configured), late by 1h".to_string()
            )]
        );
        assert_eq!(s.said.len(), 2);
    }

    #[test]
    fn a_business_hours_stage_due_while_closed_waits_for_the_opening() {
        let p = policies("4h", "business");
        // Friday 15:58: the 50 % stage is at 17:58, two counted hours on.
        let received = local("2026-12-04 15:58");
        let now = local("2026-12-04 18:10");
        let mut e = evaluated(&p, received, now);
        let fifty = e.stages.iter().find(|c| c.percent == 50).unwrap().clone();
        assert_eq!(fifty.at, local("2026-12-04 17:58"));
        // Twelve minutes late and the calendar closed: nothing fires.
        assert!(fires_due(&e, &p, now).is_empty());
        let s = settle(&mut e, &[(1, fifty.key.clone())], &[]);
        assert!(s.outcomes.is_empty(), "{:?}", s.outcomes);
        assert!(s.records.is_empty());
        // Its row is planned again for Monday's opening.
        let (next, due) = e.next_row(&p).unwrap();
        assert_eq!(next.key, fifty.key);
        assert_eq!(due, local("2026-12-07 09:00"));
    }

    #[test]
    fn a_digest_outcome_names_its_audiences_and_lateness() {
        assert_eq!(
            digest_outcome(4, 1, &[], None),
            "4 open, 1 breached: nobody (no audience entries)"
        );
        assert_eq!(
            digest_outcome(
                4,
                1,
                &["mail a@x".into(), "chat ops".into()],
                Some(SignedDuration::from_mins(90))
            ),
            "4 open, 1 breached: mail a@x; chat ops, late by 1h30m"
        );
    }
}
