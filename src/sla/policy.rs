//! SLA policies: which targets (first response, resolution, update) a
//! ticket has, on which calendar they count, and when reminders go out.
//!
//! The policy file (`sla/policies.toml`, embedded as the default) is TOML,
//! read into raw structs that reject unknown fields and then compiled into
//! [`Policies`]: every calendar a policy names exists, every duration and
//! percentage is valid, no plan has two policies for one severity. Whatever
//! is wrong comes back as a [`PolicyError`] naming the policy, calendar or
//! field, never as a panic.
//!
//! Durations are text: `30m`, `4h`, `1h30m`, `2d`. A day is 24 hours *of the
//! target's calendar*: `2d` on a business calendar is 48 business hours
//! (more than a working week), so hours are the clearer unit there.

use super::calendar::{BusinessHours, Calendar, HolidayRule};
use super::holidays::State;
use crate::domain::Severity;
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::SignedDuration;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// The policy file shipped with ticketd, compiled in.
const EMBEDDED: &str = include_str!("../../sla/policies.toml");

/// The name of the built-in 24/7 calendar.
pub const ALWAYS: &str = "always";

/// The audience that may be reminded at any hour, even while a business
/// calendar is closed.
pub const ON_CALL: &str = "oncall";

/// Zone of a business calendar without `timezone`, and of explanations.
const DEFAULT_ZONE: &str = "Europe/Berlin";

/// Why a policy file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SLA policies{}: {reason}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
pub struct PolicyError {
    /// The 1-based line of the file where the TOML is wrong, when known.
    pub line: Option<usize>,
    /// What is wrong, naming the policy, calendar or field.
    pub reason: String,
}

fn err<T>(reason: impl Into<String>) -> Result<T, PolicyError> {
    Err(PolicyError {
        line: None,
        reason: reason.into(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    default_plan: Option<String>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    calendar: BTreeMap<String, RawCalendar>,
    #[serde(default)]
    reminder: Option<Vec<RawStage>>,
    #[serde(default)]
    policy: Vec<RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendar {
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    days: Option<Vec<String>>,
    #[serde(default)]
    hours: Option<String>,
    #[serde(default)]
    holidays: Option<String>,
    #[serde(default)]
    closed: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    at: i64,
    to: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    plan: String,
    #[serde(default)]
    severity: Option<i64>,
    first_response: String,
    #[serde(default)]
    resolution: Option<String>,
    #[serde(default)]
    update: Option<String>,
    #[serde(default)]
    calendar: Option<String>,
    #[serde(default)]
    first_response_calendar: Option<String>,
    #[serde(default)]
    resolution_calendar: Option<String>,
    #[serde(default)]
    update_calendar: Option<String>,
    #[serde(default)]
    reminder: Option<Vec<RawStage>>,
}

/// What a target measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TargetKind {
    /// Receipt until the first staff reply reaches the customer.
    FirstResponse,
    /// Receipt until the ticket is resolved.
    Resolution,
    /// From each staff reply until the next one.
    Update,
}

impl TargetKind {
    /// The stable machine name: `first-response`, `resolution`, `update`
    /// (used in reminder keys and the database).
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::FirstResponse => "first-response",
            TargetKind::Resolution => "resolution",
            TargetKind::Update => "update",
        }
    }

    /// A label for people: "first response", "resolution", "update".
    pub fn label(self) -> &'static str {
        match self {
            TargetKind::FirstResponse => "first response",
            TargetKind::Resolution => "resolution",
            TargetKind::Update => "update",
        }
    }
}

/// One target of a policy: how much counted time the desk has for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// What it measures.
    pub kind: TargetKind,
    /// The counted time allowed (positive).
    pub amount: SignedDuration,
    /// The name of the calendar it counts on (look it up with
    /// [`Policies::calendar`]).
    pub calendar: String,
}

/// A reminder stage: at `percent` of a target's time, remind `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Percent of the target used, 1–100; 100 is the breach.
    pub percent: u8,
    /// Audience names (their recipients are daemon configuration).
    pub to: Vec<String>,
}

impl Stage {
    /// Whether the stage goes to on-call, who may be reminded at any hour.
    pub fn on_call(&self) -> bool {
        self.to.iter().any(|a| a == ON_CALL)
    }
}

/// The targets and reminder stages of one plan (and severity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The plan as written in the policy file.
    pub plan: String,
    /// The severity it is for; `None`: every severity of the plan without a
    /// policy of its own.
    pub severity: Option<Severity>,
    /// The targets set, in the order first response, resolution, update.
    pub targets: Vec<Target>,
    stages: Vec<Stage>,
    own_stages: bool,
}

impl Policy {
    /// The reminder stages, by percent: the policy's own or the file's
    /// default stages.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Whether [`Policy::stages`] are the policy's own rather than the
    /// default stages.
    pub fn has_own_stages(&self) -> bool {
        self.own_stages
    }

    /// The target of `kind`, if the policy sets one.
    pub fn target(&self, kind: TargetKind) -> Option<&Target> {
        self.targets.iter().find(|t| t.kind == kind)
    }
}

/// The policy chosen for a ticket, and why (for explanations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied<'a> {
    /// The policy that applies.
    pub policy: &'a Policy,
    /// How it was chosen, e.g. "plan Basic has no severity 2 policy:
    /// severity 3's targets".
    pub why: String,
}

/// All SLA policies, compiled and validated: calendars by name, policies,
/// default reminder stages, the default plan.
#[derive(Debug, Clone)]
pub struct Policies {
    calendars: BTreeMap<String, Calendar>,
    policies: Vec<Policy>,
    default_stages: Vec<Stage>,
    default_plan: Option<String>,
    plans: Vec<String>,
    tz: TimeZone,
}

impl Policies {
    /// Reads and validates a policy file.
    pub fn parse(toml_text: &str) -> Result<Policies, PolicyError> {
        // One line naming where: toml's own text spans several lines.
        let raw: RawFile = toml::from_str(toml_text).map_err(|e| PolicyError {
            line: e
                .span()
                .map(|s| crate::config::line_col(toml_text, s.start).0),
            reason: e.message().trim_end().to_string(),
        })?;
        compile(raw)
    }

    /// The policies shipped with ticketd (`sla/policies.toml`). A unit test
    /// proves they compile; were they ever broken, no ticket would get an
    /// SLA rather than the daemon panicking.
    pub fn embedded() -> Policies {
        Policies::parse(EMBEDDED).unwrap_or_else(|_| Policies::none())
    }

    /// No policies at all: no ticket has an SLA.
    pub fn none() -> Policies {
        let mut calendars = BTreeMap::new();
        calendars.insert(ALWAYS.to_string(), Calendar::Always);
        Policies {
            calendars,
            policies: Vec::new(),
            default_stages: Vec::new(),
            default_plan: None,
            plans: Vec::new(),
            tz: TimeZone::get(DEFAULT_ZONE).unwrap_or(TimeZone::UTC),
        }
    }

    /// The policy for a ticket of `plan` (`None`: no plan or no
    /// organisation) at its current `severity`, with how it was chosen.
    ///
    /// Lookup order, within a plan: the policy for exactly that severity;
    /// else the plan's policy without a severity; else the policy of the
    /// nearest *less* urgent severity the plan has (Basic without severity
    /// 2 gives severity 3's targets). A plan the policies do not know, or no
    /// plan, is looked up the same way under `default_plan`. `None` when
    /// nothing applies.
    pub fn lookup(&self, plan: Option<&str>, severity: Severity) -> Option<Applied<'_>> {
        let plan = plan.map(str::trim).filter(|p| !p.is_empty());
        if let Some(p) = plan {
            if self.knows_plan(p) {
                return self.lookup_in(p, severity, String::new());
            }
        }
        let default = self.default_plan.as_deref()?;
        let prefix = match plan {
            Some(p) => format!("plan {p} has no SLA policy: default plan {default}; "),
            None => format!("no plan: default plan {default}; "),
        };
        self.lookup_in(default, severity, prefix)
    }

    fn knows_plan(&self, plan: &str) -> bool {
        self.plans.iter().any(|p| p.eq_ignore_ascii_case(plan))
    }

    fn lookup_in(&self, plan: &str, severity: Severity, prefix: String) -> Option<Applied<'_>> {
        let of_plan = || {
            self.policies
                .iter()
                .filter(move |p| p.plan.eq_ignore_ascii_case(plan))
        };
        let level = severity.level();
        if let Some(p) = of_plan().find(|p| p.severity == Some(severity)) {
            let why = format!("{prefix}plan {}, severity {level}", p.plan);
            return Some(Applied { policy: p, why });
        }
        if let Some(p) = of_plan().find(|p| p.severity.is_none()) {
            let why = format!("{prefix}plan {}, all severities", p.plan);
            return Some(Applied { policy: p, why });
        }
        let nearest = of_plan()
            .filter_map(|p| p.severity.map(|s| (s, p)))
            .filter(|(s, _)| s.level() > level)
            .min_by_key(|(s, _)| s.level())?;
        let (s, p) = nearest;
        let why = format!(
            "{prefix}plan {} has no severity {level} policy: severity {}'s targets",
            p.plan,
            s.level()
        );
        Some(Applied { policy: p, why })
    }

    /// The calendar called `name` (`always` is built in).
    pub fn calendar(&self, name: &str) -> Option<&Calendar> {
        self.calendars.get(name)
    }

    /// The plans the policies name, as first written, each once: for
    /// checking them against the customer directory's plans.
    pub fn plans(&self) -> impl Iterator<Item = &str> + '_ {
        self.plans.iter().map(String::as_str)
    }

    /// Every policy, in file order.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The stages of policies without their own `[[policy.reminder]]`.
    pub fn default_stages(&self) -> &[Stage] {
        &self.default_stages
    }

    /// The plan of tickets without a (known) plan, if any.
    pub fn default_plan(&self) -> Option<&str> {
        self.default_plan.as_deref()
    }

    /// The zone explanations show times in (top-level `timezone`, default
    /// Europe/Berlin); also the zone 24/7 targets note DST changes in.
    pub fn timezone(&self) -> &TimeZone {
        &self.tz
    }
}

/// Parses a duration such as `30m`, `4h`, `1h30m`, `2d` (a day is 24 hours
/// of whatever calendar the target counts on). Units d, h, m, s, each at
/// most once, largest first; the total must be positive.
pub fn parse_duration(text: &str) -> Option<SignedDuration> {
    let s = text.trim();
    if s.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut last_rank = 0u8;
    let mut digits = String::new();
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let (rank, secs) = match ch.to_ascii_lowercase() {
            'd' => (1, 86_400),
            'h' => (2, 3_600),
            'm' => (3, 60),
            's' => (4, 1),
            _ => return None,
        };
        if digits.is_empty() || rank <= last_rank {
            return None;
        }
        let n: i64 = digits.parse().ok()?;
        total = total.checked_add(n.checked_mul(secs)?)?;
        digits.clear();
        last_rank = rank;
    }
    if !digits.is_empty() || total <= 0 {
        return None;
    }
    // Keep far from overflow when due times are computed.
    if total > 100 * 365 * 86_400 {
        return None;
    }
    Some(SignedDuration::from_secs(total))
}

/// Writes a duration the way the policy file does: `1h30m`, `36h`, `45m`,
/// `0m`; seconds only when there are some. Negative durations get a `-`.
pub fn format_duration(d: SignedDuration) -> String {
    let neg = d.is_negative();
    let secs = d.as_secs().unsigned_abs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 || (h == 0 && s == 0) {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

fn compile(raw: RawFile) -> Result<Policies, PolicyError> {
    let tz_name = raw.timezone.as_deref().unwrap_or(DEFAULT_ZONE);
    let tz = TimeZone::get(tz_name).or_else(|_| err(format!("unknown timezone {tz_name:?}")))?;

    let mut calendars = BTreeMap::new();
    calendars.insert(ALWAYS.to_string(), Calendar::Always);
    for (name, rc) in raw.calendar {
        if name.trim().eq_ignore_ascii_case(ALWAYS) {
            return err(format!(
                "calendar {name:?}: \"always\" is built in (24/7) and cannot be redefined"
            ));
        }
        let cal = compile_calendar(&rc).map_err(|reason| PolicyError {
            line: None,
            reason: format!("calendar {name:?}: {reason}"),
        })?;
        calendars.insert(name, Calendar::Business(cal));
    }

    let default_stages = match raw.reminder {
        Some(list) => compile_stages(&list).map_err(|reason| PolicyError {
            line: None,
            reason: format!("[[reminder]]: {reason}"),
        })?,
        None => builtin_stages(),
    };

    let mut policies = Vec::new();
    let mut plans: Vec<String> = Vec::new();
    let mut seen: BTreeSet<(String, Option<u8>)> = BTreeSet::new();
    for (i, rp) in raw.policy.iter().enumerate() {
        let label = match rp.severity {
            Some(s) => format!("policy #{} (plan {:?}, severity {s})", i + 1, rp.plan),
            None => format!("policy #{} (plan {:?})", i + 1, rp.plan),
        };
        let p = compile_policy(rp, &calendars, &default_stages).map_err(|reason| PolicyError {
            line: None,
            reason: format!("{label}: {reason}"),
        })?;
        let key = (p.plan.to_lowercase(), p.severity.map(Severity::level));
        if !seen.insert(key) {
            return err(format!(
                "{label}: a policy for this plan and severity is already defined"
            ));
        }
        if !plans.iter().any(|q| q.eq_ignore_ascii_case(&p.plan)) {
            plans.push(p.plan.clone());
        }
        policies.push(p);
    }

    let default_plan = match raw.default_plan.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(d) => match plans.iter().find(|p| p.eq_ignore_ascii_case(d)) {
            Some(p) => Some(p.clone()),
            None => return err(format!("default_plan {d:?}: no policy has this plan")),
        },
    };

    Ok(Policies {
        calendars,
        policies,
        default_stages,
        default_plan,
        plans,
        tz,
    })
}

fn compile_policy(
    rp: &RawPolicy,
    calendars: &BTreeMap<String, Calendar>,
    default_stages: &[Stage],
) -> Result<Policy, String> {
    let plan = rp.plan.trim().to_string();
    if plan.is_empty() {
        return Err("plan is empty".into());
    }
    let severity = match rp.severity {
        None => None,
        Some(n) => Some(Severity::try_from(n).map_err(|e| format!("severity: {e}"))?),
    };
    let base = rp.calendar.as_deref().unwrap_or(ALWAYS);
    let mut targets = Vec::new();
    let specs = [
        (
            TargetKind::FirstResponse,
            "first_response",
            Some(&rp.first_response),
            &rp.first_response_calendar,
        ),
        (
            TargetKind::Resolution,
            "resolution",
            rp.resolution.as_ref(),
            &rp.resolution_calendar,
        ),
        (
            TargetKind::Update,
            "update",
            rp.update.as_ref(),
            &rp.update_calendar,
        ),
    ];
    for (kind, field, amount, cal) in specs {
        let cal_field = format!("{field}_calendar");
        let Some(text) = amount else {
            if cal.is_some() {
                return Err(format!("{cal_field} is set but {field} is not"));
            }
            continue;
        };
        let amount = parse_duration(text).ok_or_else(|| {
            format!("{field} = {text:?}: not a duration (like \"30m\", \"4h\", \"1h30m\", \"2d\")")
        })?;
        let (calendar, which) = match cal {
            Some(c) => (c.as_str(), cal_field.as_str()),
            None => (base, "calendar"),
        };
        if !calendars.contains_key(calendar) {
            return Err(format!("{which} = {calendar:?}: no such calendar"));
        }
        targets.push(Target {
            kind,
            amount,
            calendar: calendar.to_string(),
        });
    }
    let (stages, own_stages) = match &rp.reminder {
        Some(list) => (
            compile_stages(list).map_err(|e| format!("[[policy.reminder]]: {e}"))?,
            true,
        ),
        None => (default_stages.to_vec(), false),
    };
    Ok(Policy {
        plan,
        severity,
        targets,
        stages,
        own_stages,
    })
}

fn compile_stages(list: &[RawStage]) -> Result<Vec<Stage>, String> {
    let mut out: Vec<Stage> = Vec::new();
    for s in list {
        let percent = u8::try_from(s.at)
            .ok()
            .filter(|p| (1..=100).contains(p))
            .ok_or_else(|| format!("at = {}: must be a percentage 1..=100", s.at))?;
        if out.iter().any(|o| o.percent == percent) {
            return Err(format!("at = {percent} appears twice"));
        }
        let to: Vec<String> = s.to.iter().map(|a| a.trim().to_string()).collect();
        if to.is_empty() || to.iter().any(String::is_empty) {
            return Err(format!("at = {percent}: `to` needs audience names"));
        }
        out.push(Stage { percent, to });
    }
    out.sort_by_key(|s| s.percent);
    Ok(out)
}

/// The stages of a file without `[[reminder]]`: 50 % and 75 % to the team,
/// 90 % and the breach to team and lead.
fn builtin_stages() -> Vec<Stage> {
    let st = |percent, to: &[&str]| Stage {
        percent,
        to: to.iter().map(|s| s.to_string()).collect(),
    };
    vec![
        st(50, &["team"]),
        st(75, &["team"]),
        st(90, &["team", "lead"]),
        st(100, &["team", "lead"]),
    ]
}

fn compile_calendar(rc: &RawCalendar) -> Result<BusinessHours, String> {
    let tz_name = rc.timezone.as_deref().unwrap_or(DEFAULT_ZONE);
    let tz = TimeZone::get(tz_name).map_err(|_| format!("timezone {tz_name:?}: unknown zone"))?;
    let hours_text = rc.hours.as_deref().unwrap_or("09:00-18:00");
    let (open, close) = parse_hours(hours_text).ok_or_else(|| {
        format!("hours = {hours_text:?}: expected \"HH:MM-HH:MM\" with closing after opening")
    })?;
    let mut hours = [None; 7];
    match &rc.days {
        None => hours[..5].fill(Some((open, close))),
        Some(days) => {
            for d in days {
                let i = parse_weekday(d)
                    .ok_or_else(|| format!("days: {d:?} is not a weekday (Mon..Sun)"))?;
                hours[i] = Some((open, close));
            }
        }
    }
    let holidays_text = rc.holidays.as_deref().unwrap_or("DE");
    let holidays = parse_holidays(holidays_text).ok_or_else(|| {
        format!("holidays = {holidays_text:?}: expected \"DE\", \"DE-<state>\" (like \"DE-BY\") or \"none\"")
    })?;
    let mut closed = BTreeSet::new();
    for c in &rc.closed {
        let d: Date = c
            .trim()
            .parse()
            .map_err(|_| format!("closed: {c:?} is not a date (YYYY-MM-DD)"))?;
        closed.insert(d);
    }
    Ok(BusinessHours {
        tz,
        hours,
        holidays,
        closed,
    })
}

fn parse_hours(s: &str) -> Option<(Time, Time)> {
    let (a, b) = s.split_once('-')?;
    let open: Time = a.trim().parse().ok()?;
    let close: Time = b.trim().parse().ok()?;
    (open < close).then_some((open, close))
}

fn parse_weekday(s: &str) -> Option<usize> {
    let names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let s = s.trim().to_lowercase();
    names.iter().position(|n| *n == s)
}

fn parse_holidays(s: &str) -> Option<Option<HolidayRule>> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("none") {
        return Some(None);
    }
    if t.eq_ignore_ascii_case("de") {
        return Some(Some(HolidayRule { state: None }));
    }
    let (country, state) = t.split_once('-')?;
    if !country.eq_ignore_ascii_case("de") {
        return None;
    }
    let state = State::parse(state)?;
    Some(Some(HolidayRule { state: Some(state) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(h: i64) -> SignedDuration {
        SignedDuration::from_hours(h)
    }

    fn reason(text: &str) -> String {
        match Policies::parse(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.reason,
        }
    }

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("30m"), Some(SignedDuration::from_mins(30)));
        assert_eq!(parse_duration("4h"), Some(hours(4)));
        assert_eq!(parse_duration("36h"), Some(hours(36)));
        assert_eq!(parse_duration("2d"), Some(hours(48)));
        assert_eq!(parse_duration("1h30m"), Some(SignedDuration::from_mins(90)));
        assert_eq!(parse_duration(" 1D2H "), Some(hours(26)));
        for bad in [
            "", "h", "4", "30m1h", "1h1h", "-4h", "0h", "4 h", "4x", "1.5h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        assert_eq!(format_duration(SignedDuration::from_mins(90)), "1h30m");
        assert_eq!(format_duration(hours(36)), "36h");
        assert_eq!(format_duration(SignedDuration::ZERO), "0m");
        assert_eq!(format_duration(SignedDuration::from_secs(65)), "1m5s");
    }

    #[test]
    fn the_embedded_policies_compile() {
        let p = Policies::parse(EMBEDDED).unwrap();
        let plans: Vec<&str> = p.plans().collect();
        assert_eq!(plans, ["Basic", "Advanced", "Premium", "Standard"]);
        assert_eq!(p.default_plan(), Some("Standard"));
        assert!(matches!(
            p.calendar("business"),
            Some(Calendar::Business(_))
        ));
        assert!(matches!(p.calendar("always"), Some(Calendar::Always)));
        assert_eq!(Policies::embedded().policies().len(), p.policies().len());

        let basic4 = p.lookup(Some("basic"), Severity::Question).unwrap().policy;
        assert_eq!(basic4.targets[0].amount, hours(36));
        assert_eq!(basic4.targets[0].calendar, "business");
        assert_eq!(basic4.targets[1].amount, hours(108));

        let prem1 = p
            .lookup(Some("Premium"), Severity::Critical)
            .unwrap()
            .policy;
        let kinds: Vec<_> = prem1.targets.iter().map(|t| (t.kind, t.amount)).collect();
        assert_eq!(
            kinds,
            [
                (TargetKind::FirstResponse, SignedDuration::from_mins(30)),
                (TargetKind::Resolution, hours(4)),
                (TargetKind::Update, hours(1)),
            ]
        );
        assert!(prem1.has_own_stages());
        let s: Vec<(u8, bool)> = prem1
            .stages()
            .iter()
            .map(|s| (s.percent, s.on_call()))
            .collect();
        assert_eq!(s, [(50, false), (75, true), (90, true), (100, true)]);
        let prem3 = p.lookup(Some("Premium"), Severity::Malfunction).unwrap();
        assert!(!prem3.policy.has_own_stages());
        assert!(prem3.policy.stages().iter().all(|s| !s.on_call()));

        let std = p
            .lookup(Some("Standard"), Severity::Critical)
            .unwrap()
            .policy;
        assert_eq!(std.severity, None);
        assert_eq!(std.targets[0].amount, hours(48));
        assert_eq!(std.targets[1].amount, hours(48));
        assert_eq!(std.targets[0].calendar, "always");
    }

    #[test]
    fn lookup_falls_back_in_the_documented_order() {
        let p = Policies::embedded();
        let a = p.lookup(Some("Basic"), Severity::Malfunction).unwrap();
        assert_eq!(a.why, "plan Basic, severity 3");
        // Basic has no severity 1 or 2: the nearest less urgent is 3.
        let a = p.lookup(Some("Basic"), Severity::Production).unwrap();
        assert_eq!(a.policy.severity, Some(Severity::Malfunction));
        assert_eq!(
            a.why,
            "plan Basic has no severity 2 policy: severity 3's targets"
        );
        let a = p.lookup(Some("BASIC"), Severity::Critical).unwrap();
        assert_eq!(a.policy.severity, Some(Severity::Malfunction));
        // Advanced has no severity 1: severity 2's 4 h.
        let a = p.lookup(Some("Advanced"), Severity::Critical).unwrap();
        assert_eq!(a.policy.targets[0].amount, hours(4));
        // No plan, unknown plan: the default plan.
        let a = p.lookup(None, Severity::Critical).unwrap();
        assert_eq!(a.policy.plan, "Standard");
        assert_eq!(
            a.why,
            "no plan: default plan Standard; plan Standard, all severities"
        );
        let a = p.lookup(Some("Gold"), Severity::Question).unwrap();
        assert!(a
            .why
            .starts_with("plan Gold has no SLA policy: default plan Standard"));

        // A policy without severity beats the nearest less urgent one.
        let p = Policies::parse(
            r#"
            [[policy]]
            plan = "X"
            severity = 4
            first_response = "4h"
            [[policy]]
            plan = "X"
            first_response = "1h"
            [[policy]]
            plan = "Y"
            severity = 1
            first_response = "1h"
            "#,
        )
        .unwrap();
        let a = p.lookup(Some("x"), Severity::Production).unwrap();
        assert_eq!(a.policy.targets[0].amount, hours(1));
        assert_eq!(a.why, "plan X, all severities");
        assert_eq!(
            p.lookup(Some("x"), Severity::Question)
                .unwrap()
                .policy
                .targets[0]
                .amount,
            hours(4)
        );
        // Nothing less urgent, no default plan: no SLA.
        assert!(p.lookup(Some("Y"), Severity::Question).is_none());
        assert!(p.lookup(None, Severity::Question).is_none());
        assert!(p.lookup(Some("Z"), Severity::Question).is_none());
        // Without [[reminder]] the built-in stages apply.
        let st: Vec<u8> = p.policies()[0].stages().iter().map(|s| s.percent).collect();
        assert_eq!(st, [50, 75, 90, 100]);
    }

    #[test]
    fn calendars_compile_with_defaults_and_options() {
        let p = Policies::parse(
            r#"
            [calendar.weekend]
            timezone = "Europe/Vienna"
            days = ["sat", "SUN"]
            hours = "10:00-14:30"
            holidays = "none"
            closed = ["2026-12-27"]
            [calendar.bavaria]
            holidays = "DE-BY"
            [[policy]]
            plan = "P"
            first_response = "1h"
            calendar = "weekend"
            resolution = "8h"
            resolution_calendar = "bavaria"
            update = "1d"
            update_calendar = "always"
            "#,
        )
        .unwrap();
        let Some(Calendar::Business(w)) = p.calendar("weekend") else {
            panic!("weekend")
        };
        assert_eq!(w.tz.iana_name(), Some("Europe/Vienna"));
        assert!(w.hours[..5].iter().all(Option::is_none));
        assert_eq!(
            w.hours[5],
            Some((
                jiff::civil::time(10, 0, 0, 0),
                jiff::civil::time(14, 30, 0, 0)
            ))
        );
        assert_eq!(w.holidays, None);
        assert_eq!(w.closed.len(), 1);
        let Some(Calendar::Business(b)) = p.calendar("bavaria") else {
            panic!("bavaria")
        };
        assert_eq!(b.tz.iana_name(), Some("Europe/Berlin"));
        assert_eq!(
            b.holidays,
            Some(HolidayRule {
                state: Some(State::BY)
            })
        );
        assert!(b.hours[..5].iter().all(Option::is_some) && b.hours[5].is_none());
        let cals: Vec<&str> = p.policies()[0]
            .targets
            .iter()
            .map(|t| t.calendar.as_str())
            .collect();
        assert_eq!(cals, ["weekend", "bavaria", "always"]);
    }

    #[test]
    fn parse_errors_name_what_is_wrong() {
        let policy = |extra: &str| format!("[[policy]]\nplan = \"Basic\"\nseverity = 4\n{extra}\n");
        let r = reason(&policy("first_response = \"4h\"\ncalendar = \"office\""));
        assert!(
            r.contains("plan \"Basic\", severity 4") && r.contains("\"office\": no such calendar"),
            "{r}"
        );
        let r = reason(&policy(
            "first_response = \"4h\"\nresolution_calendar = \"always\"",
        ));
        assert!(
            r.contains("resolution_calendar is set but resolution is not"),
            "{r}"
        );
        let r = reason(&policy("first_response = \"4 hours\""));
        assert!(
            r.contains("first_response = \"4 hours\": not a duration"),
            "{r}"
        );
        let r = reason(&policy("first_response = \"4h\"\nupdate = \"0m\""));
        assert!(r.contains("update = \"0m\""), "{r}");
        let r = reason(&format!(
            "[calendar.office]\nhours = \"18:00-09:00\"\n{}",
            policy("first_response = \"4h\"")
        ));
        assert!(
            r.contains("calendar \"office\": hours = \"18:00-09:00\""),
            "{r}"
        );
        let r = reason("[calendar.office]\nhours = \"9-17\"");
        assert!(r.contains("hours = \"9-17\""), "{r}");
        let r = reason("[calendar.office]\ndays = [\"Monday\"]");
        assert!(r.contains("days: \"Monday\""), "{r}");
        let r = reason("[calendar.office]\nholidays = \"DE-XX\"");
        assert!(r.contains("holidays = \"DE-XX\""), "{r}");
        let r = reason("[calendar.office]\ntimezone = \"Mars/Olympus\"");
        assert!(r.contains("Mars/Olympus"), "{r}");
        let r = reason("[calendar.office]\nclosed = [\"24.12.2026\"]");
        assert!(r.contains("closed: \"24.12.2026\""), "{r}");
        for at in [0, 101, -5] {
            let r = reason(&format!("[[reminder]]\nat = {at}\nto = [\"team\"]"));
            assert!(
                r.contains(&format!("at = {at}: must be a percentage")),
                "{r}"
            );
        }
        let r = reason(&policy(
            "first_response = \"4h\"\n[[policy.reminder]]\nat = 101\nto = [\"team\"]",
        ));
        assert!(r.contains("[[policy.reminder]]: at = 101"), "{r}");
        let r = reason("[[reminder]]\nat = 50\nto = []");
        assert!(r.contains("needs audience names"), "{r}");
        let r = reason(
            "[[reminder]]\nat = 50\nto = [\"team\"]\n[[reminder]]\nat = 50\nto = [\"lead\"]",
        );
        assert!(r.contains("at = 50 appears twice"), "{r}");
        let dup = format!(
            "{}{}",
            policy("first_response = \"4h\""),
            policy("first_response = \"8h\"").replace("Basic", "BASIC")
        );
        let r = reason(&dup);
        assert!(
            r.contains("policy #2") && r.contains("already defined"),
            "{r}"
        );
        let r = reason("[calendar.always]\nhours = \"00:00-23:59\"");
        assert!(r.contains("cannot be redefined"), "{r}");
        let r = reason(&policy("first_response = \"4h\"\nseverity_x = 1"));
        assert!(r.contains("severity_x"), "{r}");
        let r = reason(&policy("first_response = \"4h\"").replace("severity = 4", "severity = 5"));
        assert!(r.contains("severity: severity must be 1–4, not 5"), "{r}");
        let r = reason(&format!(
            "default_plan = \"Gold\"\n{}",
            policy("first_response = \"4h\"")
        ));
        assert!(r.contains("default_plan \"Gold\""), "{r}");
        let r = reason("[[policy]]\nplan = \"X\"\nresolution = \"4h\"");
        assert!(r.contains("first_response"), "{r}");
        // An empty default plan means no SLA for tickets without a plan.
        let p = Policies::parse(&format!(
            "default_plan = \"\"\n{}",
            policy("first_response = \"4h\"")
        ))
        .unwrap();
        assert_eq!(p.default_plan(), None);
    }
}
