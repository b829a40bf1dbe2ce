//! Stage 5: severity by rules.
//!
//! Rules live in TOML files (`rules/*.toml`, embedded defaults compiled into
//! the binary). A file is a group with a `mode`: `first` (the first matching
//! rule decides) or `highest` (the most severe matching rule decides). Groups
//! are tried in file-name order; the first group with a match decides. All
//! patterns of one field across all rules are compiled into one `RegexSet`,
//! so a message is scanned once per field however many rules there are.
//! Subject and body share one set (`subject`, `body`, `text` and `unless`
//! patterns, each distinct pattern once), run over the subject and over the
//! body.
//!
//! A rule lists conditions; every listed field must match (AND), any one
//! pattern of a field is enough (OR), and no `unless` pattern may match.
//!
//! Speed: `ticketd ingest` runs once per mail from an MTA, so compiling the
//! rules is paid for every new ticket. Unicode case-insensitive patterns are
//! what makes that expensive (every `k` becomes `[kK\u{212A}]`, every `s`
//! `[sS\u{17F}]`: multi-byte alternatives that defeat literal prefilters
//! and bloat the automata, costing ~30 ms to compile and ~7 ms for the first
//! search). So case-insensitivity is moved from the patterns to the text:
//! the text is folded once ([`fold_text`]: upper-case letters to lower case,
//! each within its Unicode simple case-folding orbit) and each pattern is
//! compiled in its folded form ([`fold_pattern`]), which matches the folded
//! text exactly where the original pattern matches the original text.
//! Patterns where that cannot be proven (case-sensitive parts, ASCII-only
//! word boundaries, byte classes) keep their original form and run on the
//! original text.

use super::alerts::{Alert, AlertSource, AlertState};
use super::parse::ParsedMail;
use crate::domain::Severity;
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use regex_syntax::hir::{Capture, Class, ClassUnicode, ClassUnicodeRange, Hir, HirKind, Look};
use serde::Deserialize;
use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use toml::Spanned;

/// Only this much of a body is read by the rules: enough for any real
/// problem report, bounded for a pasted log file.
pub const BODY_SCAN_LIMIT: usize = 64 * 1024;

/// A rule file that cannot be used: file, line and reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {reason}", if *line > 0 { format!(":{line}") } else { String::new() })]
pub struct RuleError {
    /// The rule file.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    case_sensitive: bool,
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RuleSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    severity: Option<Spanned<i64>>,
    #[serde(default)]
    action: Option<Spanned<String>>,
    #[serde(default)]
    forward: Vec<Spanned<String>>,
    #[serde(default)]
    reply: Option<Spanned<String>>,
    #[serde(default)]
    queue: Option<Spanned<String>>,
    #[serde(default)]
    tags: Vec<Spanned<String>>,
    #[serde(default)]
    customer: Vec<Spanned<String>>,
    #[serde(default)]
    plan: Vec<Spanned<String>>,
    #[serde(default)]
    mailbox: Vec<Spanned<String>>,
    #[serde(default)]
    alert: Option<Spanned<AlertSpec>>,
    #[serde(default)]
    subject: Vec<Spanned<String>>,
    #[serde(default)]
    body: Vec<Spanned<String>>,
    #[serde(default)]
    text: Vec<Spanned<String>>,
    #[serde(default)]
    from: Vec<Spanned<String>>,
    #[serde(default)]
    to: Vec<Spanned<String>>,
    #[serde(default)]
    header: BTreeMap<String, Vec<Spanned<String>>>,
    #[serde(default)]
    unless: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertSpec {
    #[serde(default)]
    source: Vec<Spanned<String>>,
    #[serde(default)]
    state: Vec<Spanned<String>>,
    #[serde(default)]
    host: Vec<Spanned<String>>,
    #[serde(default)]
    service: Vec<Spanned<String>>,
}

/// What becomes of a message a rule decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RuleAction {
    /// A ticket (the default).
    #[default]
    Ticket,
    /// Not a support request: forward it and/or answer it with a template
    /// instead of opening a ticket.
    Route {
        /// Forward to these: addresses, or `account-manager` (the sender's
        /// organisation's account manager).
        forward: Vec<String>,
        /// Answer the sender with this template (base name).
        reply: Option<String>,
    },
    /// Stored, no ticket, no mail.
    Ignore,
}

impl RuleAction {
    /// The action with its destinations, for explanations.
    pub fn describe(&self) -> String {
        match self {
            RuleAction::Route { forward, reply } => {
                let mut parts = Vec::new();
                if !forward.is_empty() {
                    parts.push(format!("forward to {}", forward.join(", ")));
                }
                if let Some(r) = reply {
                    parts.push(format!("reply {r}"));
                }
                format!("route ({})", parts.join("; "))
            }
            a => a.as_str().to_string(),
        }
    }

    /// The action's name as written in rule files.
    pub fn as_str(&self) -> &'static str {
        match self {
            RuleAction::Ticket => "ticket",
            RuleAction::Route { .. } => "route",
            RuleAction::Ignore => "ignore",
        }
    }
}

/// The `forward` entry that means the sender's account manager.
pub const ACCOUNT_MANAGER: &str = "account-manager";

/// What a rule may match besides the mail itself: who the sender is to the
/// desk, where the mail came in, and the monitoring alert it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    /// The sender's (or the alert host's) organisation id.
    pub customer: Option<&'a str>,
    /// That organisation's plan.
    pub plan: Option<&'a str>,
    /// The mailbox the mail came in by (an IMAP mailbox's name, `pipe`,
    /// `maildir`, `stdin`, `file`).
    pub mailbox: Option<&'a str>,
    /// The alert, when the mail is a monitoring notification.
    pub alert: Option<&'a Alert>,
}

/// The name of an alert's source in rules (`nagios`, `zabbix`, …; a
/// generic parser by its configured name).
pub fn alert_source_name(a: &Alert) -> String {
    match &a.source {
        AlertSource::Generic(n) => n.to_lowercase(),
        s => format!("{s:?}").to_lowercase(),
    }
}

/// The name of an alert's state in rules (`critical`, `down`, `ok`, …).
pub fn alert_state_name(a: &Alert) -> String {
    format!("{:?}", a.state).to_lowercase()
}

/// The alert conditions of a rule.
#[derive(Debug, Clone, Default)]
struct AlertCond {
    source: Vec<String>,
    state: Vec<String>,
    host: Vec<Regex>,
    service: Vec<Regex>,
}

/// Whether `value` (lower case) is in `list`; with `any`, `*` in the list
/// takes every value.
fn listed(list: &[String], value: Option<&str>, any: bool) -> bool {
    value.is_some_and(|v| list.iter().any(|x| x == v || (any && x == "*")))
}

impl AlertCond {
    fn host_holds(&self, host: &str) -> bool {
        self.host.iter().any(|re| re.is_match(host))
    }

    /// A host alert (no service) never matches a service condition.
    fn service_holds(&self, service: Option<&str>) -> bool {
        service.is_some_and(|s| self.service.iter().any(|re| re.is_match(s)))
    }
}

/// How a group picks among its matching rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The first matching rule in file order decides.
    First,
    /// The most severe matching rule decides (ties: the first).
    Highest,
}

/// One compiled rule: indices into the field sets.
#[derive(Debug, Clone)]
struct Rule {
    name: String,
    description: Option<String>,
    file: String,
    line: usize,
    severity: Option<Severity>,
    action: Option<RuleAction>,
    queue: Option<String>,
    tags: Vec<String>,
    /// Organisation ids (lower case); `*`: any registered one.
    customer: Vec<String>,
    /// Plan names (lower case).
    plan: Vec<String>,
    /// Mailbox names (lower case).
    mailbox: Vec<String>,
    /// Set: the rule applies to monitoring alerts only.
    alert: Option<AlertCond>,
    /// Indices into the content set, matched against the subject.
    subject: Vec<usize>,
    /// Indices into the content set, matched against the body.
    body: Vec<usize>,
    /// Indices into the content set, matched against subject or body.
    text: Vec<usize>,
    from: Vec<usize>,
    to: Vec<usize>,
    header: Vec<(String, Vec<usize>)>,
    /// Indices into the content set, matched against subject or body.
    unless: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Group {
    file: String,
    mode: Mode,
    rules: Vec<Rule>,
}

/// A pattern collection for one field; compiled into one set. A pattern
/// that occurs more than once gets one index.
#[derive(Debug, Default, Clone)]
struct PatternList {
    /// The patterns as written (with the file's flags).
    patterns: Vec<String>,
    /// For each pattern its folded form (see [`fold_pattern`]), if it has
    /// one: (guard, exact). The guard is the exact form with long bounded
    /// repetitions unbounded (`[^.\n]{0,60}` → `[^.\n]*`): it matches
    /// wherever the exact form does and compiles far faster; `exact` is
    /// `None` when the guard is exact already.
    folded: Vec<Option<(String, Option<String>)>>,
    index: HashMap<String, usize>,
}

impl PatternList {
    fn push(&mut self, p: String, hir: &Hir) -> usize {
        if let Some(&i) = self.index.get(&p) {
            return i;
        }
        self.patterns.push(p.clone());
        self.folded.push(fold_hir(hir).map(|exact| {
            let guard = relax(&exact);
            if guard == exact {
                (exact.to_string(), None)
            } else {
                (guard.to_string(), Some(exact.to_string()))
            }
        }));
        self.index.insert(p, self.patterns.len() - 1);
        self.patterns.len() - 1
    }
}

/// A pattern compiled on first use.
#[derive(Debug, Clone)]
struct LazyRegex {
    pattern: String,
    regex: OnceLock<Option<Regex>>,
}

impl LazyRegex {
    /// Whether it matches; `None` if it cannot be compiled.
    fn is_match(&self, hay: &str) -> Option<bool> {
        self.regex
            .get_or_init(|| {
                RegexBuilder::new(&self.pattern)
                    .size_limit(64 << 20)
                    .dfa_size_limit(16 << 20)
                    .build()
                    .map_err(|e| {
                        tracing::warn!(
                            pattern = %self.pattern,
                            error = %e,
                            "rule pattern too large to compile; its unbounded form is used"
                        )
                    })
                    .ok()
            })
            .as_ref()
            .map(|r| r.is_match(hay))
    }
}

/// After this many searches a field set builds its steady-state set (see
/// [`FieldSet::steady`]): the extra build (~5 ms) pays off after some 500
/// mails, so a process that handles one mail never builds it.
const STEADY_AFTER: usize = 1000;

/// Added to the steady-state set only: it can never match, and since it
/// may start with any character no literal prefilter can serve the set.
const NO_PREFILTER: &str = "[^\\n]\\z\\A";

/// How often a field set has been searched (cloning copies the count).
#[derive(Debug, Default)]
struct Uses(AtomicUsize);

impl Clone for Uses {
    fn clone(&self) -> Self {
        Uses(AtomicUsize::new(self.0.load(Ordering::Relaxed)))
    }
}

/// The compiled patterns of one field: the folded ones run over the folded
/// text, the others over the text as it is.
///
/// Two sets serve the folded patterns. `folded` is built with the rules: the
/// regex engine puts a literal prefilter in front of it, which makes it
/// quick to build and quick on the first mails (little of the lazy DFA has
/// to be built), but twice as slow on every later mail. `steady` is the
/// same set without a prefilter, built after [`STEADY_AFTER`] searches for
/// processes that classify many mails.
#[derive(Debug, Clone)]
struct FieldSet {
    folded: RegexSet,
    /// Guards (or exact folded patterns), as given to `folded`.
    folded_patterns: Vec<String>,
    /// Pattern index of each member of `folded`.
    folded_ids: Vec<usize>,
    /// For a member of `folded` that is a guard: the exact pattern.
    exact: Vec<Option<LazyRegex>>,
    steady: OnceLock<Option<RegexSet>>,
    uses: Uses,
    plain: RegexSet,
    /// Pattern index of each member of `plain`.
    plain_ids: Vec<usize>,
    len: usize,
}

fn regex_set<I: IntoIterator<Item = S>, S: AsRef<str>>(
    patterns: I,
) -> Result<RegexSet, regex::Error> {
    RegexSetBuilder::new(patterns)
        .size_limit(64 << 20)
        .dfa_size_limit(16 << 20)
        .build()
}

impl FieldSet {
    fn build(list: &PatternList) -> Result<FieldSet, regex::Error> {
        let mut fs = FieldSet {
            folded: RegexSet::empty(),
            folded_patterns: Vec::new(),
            folded_ids: Vec::new(),
            exact: Vec::new(),
            steady: OnceLock::new(),
            uses: Uses::default(),
            plain: RegexSet::empty(),
            plain_ids: Vec::new(),
            len: list.patterns.len(),
        };
        let mut plain = Vec::new();
        for (i, (p, f)) in list.patterns.iter().zip(&list.folded).enumerate() {
            match f {
                Some((guard, exact)) => {
                    fs.folded_patterns.push(guard.clone());
                    fs.folded_ids.push(i);
                    fs.exact.push(exact.as_ref().map(|e| LazyRegex {
                        pattern: e.clone(),
                        regex: OnceLock::new(),
                    }));
                }
                None => {
                    plain.push(p.as_str());
                    fs.plain_ids.push(i);
                }
            }
        }
        match regex_set(&fs.folded_patterns) {
            Ok(set) => fs.folded = set,
            Err(_) if !fs.folded_ids.is_empty() => {
                // Not expected (the folded forms are no larger than the
                // originals), but then the originals decide, as they did
                // before folding existed.
                let all = PatternList {
                    folded: vec![None; list.patterns.len()],
                    ..list.clone()
                };
                return FieldSet::build(&all);
            }
            Err(e) => return Err(e),
        }
        fs.plain = regex_set(&plain)?;
        Ok(fs)
    }

    /// The set to search the folded text with: `folded`, or after enough
    /// searches the steady-state set (if it builds, which it does whenever
    /// `folded` did).
    fn folded_set(&self) -> &RegexSet {
        if self.uses.0.fetch_add(1, Ordering::Relaxed) < STEADY_AFTER {
            return &self.folded;
        }
        self.steady
            .get_or_init(|| {
                regex_set(
                    self.folded_patterns
                        .iter()
                        .map(String::as_str)
                        .chain([NO_PREFILTER]),
                )
                .ok()
            })
            .as_ref()
            .unwrap_or(&self.folded)
    }

    /// Which patterns match `hay`, by pattern index.
    fn matches(&self, hay: &str) -> Vec<bool> {
        let mut hits = vec![false; self.len];
        if !self.folded_ids.is_empty() {
            let text = fold_text(hay);
            for i in self.folded_set().matches(&text).iter() {
                // The steady-state set's extra member never matches.
                let Some(&id) = self.folded_ids.get(i) else {
                    continue;
                };
                // A guard matched: the exact pattern decides (if it cannot
                // be compiled, the guard's answer stands).
                hits[id] = match &self.exact[i] {
                    Some(exact) => exact.is_match(&text).unwrap_or(true),
                    None => true,
                };
            }
        }
        if !self.plain_ids.is_empty() {
            for i in self.plain.matches(hay).iter() {
                hits[self.plain_ids[i]] = true;
            }
        }
        hits
    }
}

/// The compiled rules.
#[derive(Debug, Clone)]
pub struct RuleSet {
    groups: Vec<Group>,
    /// Whether any rule applies to monitoring alerts / to other mail: a
    /// message no rule can apply to is not scanned.
    for_alerts: bool,
    for_mail: bool,
    /// Subject, body, text and unless patterns.
    content: FieldSet,
    from: FieldSet,
    to: FieldSet,
    header: FieldSet,
    sources: Sources,
}

/// The pattern texts, kept to explain a decision.
#[derive(Debug, Clone, Default)]
struct Sources {
    content: Vec<String>,
    from: Vec<String>,
    to: Vec<String>,
    header: Vec<String>,
}

/// What the rules said about one message. Each setting comes from the
/// first group with a matching rule that sets it; tags from every matching
/// rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classification {
    /// The deciding severity; `None` when no rule set one.
    pub severity: Option<Severity>,
    /// The rule that decided the severity.
    pub rule: Option<String>,
    /// What becomes of the message (default: a ticket).
    pub action: RuleAction,
    /// The rule that decided the action (`None`: the default).
    pub action_rule: Option<String>,
    /// The ticket's queue, if a rule set one.
    pub queue: Option<String>,
    /// The rule that decided the queue.
    pub queue_rule: Option<String>,
    /// Tags of every matching rule, in order, each once.
    pub tags: Vec<String>,
    /// Every matching rule, `file:line name (settings)`, in evaluation order.
    pub matched: Vec<String>,
}

/// The default rules compiled into the binary: (file name, text), in file
/// name order (the order a rules directory's files are tried in).
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "acknowledgement.toml",
        include_str!("../../rules/acknowledgement.toml"),
    ),
    ("routing.toml", include_str!("../../rules/routing.toml")),
    ("severity.toml", include_str!("../../rules/severity.toml")),
];

impl RuleSet {
    /// Compiles the embedded default rules.
    pub fn embedded() -> Result<RuleSet, RuleError> {
        let files: Vec<(String, String)> = EMBEDDED
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        RuleSet::compile(&files)
    }

    /// Compiles rule files given as (name, text), in the given order.
    pub fn compile(files: &[(String, String)]) -> Result<RuleSet, RuleError> {
        // content (subject, body, text, unless), from, to, header
        let mut lists: [PatternList; 4] = Default::default();
        let mut groups = Vec::new();
        for (file, text) in files {
            let spec: FileSpec = toml::from_str(text).map_err(|e| RuleError {
                file: file.clone(),
                line: e
                    .span()
                    .map(|s| crate::config::line_col(text, s.start).0)
                    .unwrap_or(0),
                reason: e.message().to_string(),
            })?;
            let line = |span: std::ops::Range<usize>| crate::config::line_col(text, span.start).0;
            let err = |span: std::ops::Range<usize>, reason: String| RuleError {
                file: file.clone(),
                line: line(span),
                reason,
            };
            let mode = match spec.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
                None | Some(("highest", _)) => Mode::Highest,
                Some(("first", _)) => Mode::First,
                Some((other, span)) => {
                    return Err(err(
                        span,
                        format!("mode must be \"first\" or \"highest\", not {other:?}"),
                    ))
                }
            };
            let flags = if spec.case_sensitive { "" } else { "(?i)" };
            // The last line of the engine's message says what is wrong.
            let bad_regex = |p: &Spanned<String>, e: &dyn std::fmt::Display| {
                err(
                    p.span(),
                    format!(
                        "invalid regular expression {:?}: {}",
                        p.get_ref(),
                        e.to_string().lines().last().unwrap_or("")
                    ),
                )
            };
            let mut add = |field: usize, p: &Spanned<String>| -> Result<usize, RuleError> {
                let pat = format!("{flags}{}", p.get_ref());
                let hir = regex_syntax::ParserBuilder::new()
                    .build()
                    .parse(&pat)
                    .map_err(|e| bad_regex(p, &e))?;
                Ok(lists[field].push(pat, &hir))
            };
            let mut rules = Vec::new();
            let mut names = std::collections::HashSet::new();
            for r in &spec.rules {
                let rspan = r.span();
                let r = r.get_ref();
                let name = r.name.get_ref().trim().to_string();
                if name.is_empty() {
                    return Err(err(r.name.span(), "rule name is empty".into()));
                }
                if !names.insert(name.clone()) {
                    return Err(err(r.name.span(), format!("rule name {name:?} used twice")));
                }
                let severity = match &r.severity {
                    Some(s) => {
                        Some(Severity::try_from(*s.get_ref()).map_err(|e| err(s.span(), e))?)
                    }
                    None => None,
                };
                let action = rule_action(r, &err)?;
                if severity.is_none() && action.is_none() && r.queue.is_none() && r.tags.is_empty()
                {
                    return Err(err(
                        rspan,
                        format!("rule {name:?} sets nothing (severity, action, queue or tags)"),
                    ));
                }
                let words =
                    |list: &[Spanned<String>], what: &str| -> Result<Vec<String>, RuleError> {
                        list.iter()
                            .map(|v| {
                                let w = v.get_ref().trim().to_lowercase();
                                if w.is_empty() {
                                    Err(err(v.span(), format!("empty {what}")))
                                } else {
                                    Ok(w)
                                }
                            })
                            .collect()
                    };
                let alert = match &r.alert {
                    None => None,
                    Some(a) => {
                        let a = a.get_ref();
                        let states = words(&a.state, "alert state")?;
                        for (s, w) in a.state.iter().zip(&states) {
                            if AlertState::from_word(w).is_none() {
                                return Err(err(
                                    s.span(),
                                    format!("unknown alert state {w:?} (ok, up, warning, critical, unknown, down, unreachable)"),
                                ));
                            }
                        }
                        let states = states
                            .iter()
                            .filter_map(|w| AlertState::from_word(w))
                            .map(|s| format!("{s:?}").to_lowercase())
                            .collect();
                        let regexes = |list: &[Spanned<String>]| -> Result<Vec<Regex>, RuleError> {
                            list.iter()
                                .map(|p| {
                                    RegexBuilder::new(p.get_ref())
                                        .case_insensitive(!spec.case_sensitive)
                                        .build()
                                        .map_err(|e| bad_regex(p, &e))
                                })
                                .collect()
                        };
                        Some(AlertCond {
                            source: words(&a.source, "alert source")?,
                            state: states,
                            host: regexes(&a.host)?,
                            service: regexes(&a.service)?,
                        })
                    }
                };
                let mut rule = Rule {
                    name,
                    description: r.description.clone(),
                    file: file.clone(),
                    line: line(rspan.clone()),
                    severity,
                    action,
                    queue: r
                        .queue
                        .as_ref()
                        .map(|q| q.get_ref().trim().to_string())
                        .filter(|q| !q.is_empty()),
                    tags: r
                        .tags
                        .iter()
                        .map(|t| t.get_ref().trim().to_lowercase())
                        .filter(|t| !t.is_empty())
                        .collect(),
                    customer: words(&r.customer, "customer")?,
                    plan: words(&r.plan, "plan")?,
                    mailbox: words(&r.mailbox, "mailbox")?,
                    alert,
                    subject: Vec::new(),
                    body: Vec::new(),
                    text: Vec::new(),
                    from: Vec::new(),
                    to: Vec::new(),
                    header: Vec::new(),
                    unless: Vec::new(),
                };
                for p in &r.subject {
                    rule.subject.push(add(0, p)?);
                }
                for p in &r.body {
                    rule.body.push(add(0, p)?);
                }
                for p in &r.text {
                    rule.text.push(add(0, p)?);
                }
                for p in &r.from {
                    rule.from.push(add(1, p)?);
                }
                for p in &r.to {
                    rule.to.push(add(2, p)?);
                }
                for (h, ps) in &r.header {
                    let mut idx = Vec::new();
                    for p in ps {
                        idx.push(add(3, p)?);
                    }
                    rule.header.push((h.to_ascii_lowercase(), idx));
                }
                for p in &r.unless {
                    rule.unless.push(add(0, p)?);
                }
                if rule.subject.is_empty()
                    && rule.body.is_empty()
                    && rule.text.is_empty()
                    && rule.from.is_empty()
                    && rule.to.is_empty()
                    && rule.header.is_empty()
                    && rule.customer.is_empty()
                    && rule.plan.is_empty()
                    && rule.mailbox.is_empty()
                    && rule.alert.is_none()
                {
                    return Err(err(
                        rspan,
                        format!(
                            "rule {:?} has no condition (subject, body, text, from, to, header, customer, plan, mailbox or alert)",
                            rule.name
                        ),
                    ));
                }
                rules.push(rule);
            }
            groups.push(Group {
                file: file.clone(),
                mode,
                rules,
            });
        }
        let build = |l: &PatternList| -> Result<FieldSet, RuleError> {
            FieldSet::build(l).map_err(|e| RuleError {
                file: files
                    .iter()
                    .map(|(f, _)| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                line: 0,
                reason: format!("rules cannot be compiled together: {e}"),
            })
        };
        let [c, f, t, h] = &lists;
        let all = || groups.iter().flat_map(|g: &Group| &g.rules);
        let for_alerts = all().any(|r| r.alert.is_some());
        let for_mail = all().any(|r| r.alert.is_none());
        Ok(RuleSet {
            for_alerts,
            for_mail,
            groups,
            content: build(c)?,
            from: build(f)?,
            to: build(t)?,
            header: build(h)?,
            sources: Sources {
                content: c.patterns.clone(),
                from: f.patterns.clone(),
                to: t.patterns.clone(),
                header: h.patterns.clone(),
            },
        })
    }

    /// Every `reply` template the rules name: (rule as `file:line name`,
    /// template base name).
    pub fn replies(&self) -> Vec<(String, &str)> {
        self.groups
            .iter()
            .flat_map(|g| &g.rules)
            .filter_map(|r| match &r.action {
                Some(RuleAction::Route { reply: Some(t), .. }) => {
                    Some((format!("{}:{} {}", r.file, r.line, r.name), t.as_str()))
                }
                _ => None,
            })
            .collect()
    }

    /// Number of rules over all groups.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.rules.len()).sum()
    }

    /// True when there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Classifies a message with what the desk knows of it. A rule with an
    /// `alert` table applies to monitoring alerts only, any other rule to
    /// every other message.
    pub fn classify(&self, mail: &ParsedMail, facts: &Facts<'_>) -> Classification {
        let mut out = Classification::default();
        let for_alert = facts.alert.is_some();
        if !(if for_alert {
            self.for_alerts
        } else {
            self.for_mail
        }) {
            return out;
        }
        let scan = Scan::new(self, mail, facts);
        for g in &self.groups {
            let matching: Vec<&Rule> = g
                .rules
                .iter()
                .filter(|r| r.alert.is_some() == for_alert && scan.holds(r))
                .collect();
            for r in &matching {
                out.matched.push(r.label());
                for t in &r.tags {
                    if !out.tags.contains(t) {
                        out.tags.push(t.clone());
                    }
                }
            }
            if out.rule.is_none() {
                if let Some(r) = pick(g.mode, matching.iter().filter(|r| r.severity.is_some())) {
                    out.severity = r.severity;
                    out.rule = Some(r.name.clone());
                }
            }
            if out.action_rule.is_none() {
                if let Some(r) = pick(g.mode, matching.iter().filter(|r| r.action.is_some())) {
                    out.action = r.action.clone().unwrap_or_default();
                    out.action_rule = Some(r.name.clone());
                }
            }
            if out.queue_rule.is_none() {
                if let Some(r) = pick(g.mode, matching.iter().filter(|r| r.queue.is_some())) {
                    out.queue = r.queue.clone();
                    out.queue_rule = Some(r.name.clone());
                }
            }
        }
        out
    }

    /// A human explanation of how a message was classified: the facts, each
    /// group, each matching rule and the text each of its patterns matched,
    /// and which rule decided severity, action and queue.
    pub fn explain(&self, mail: &ParsedMail, facts: &Facts<'_>, default: Severity) -> String {
        use std::fmt::Write;
        let c = self.classify(mail, facts);
        let for_alert = facts.alert.is_some();
        let scan = Scan::new(self, mail, facts);
        let mut s = String::new();
        let _ = writeln!(s, "subject:  {}", mail.subject);
        let _ = writeln!(
            s,
            "from:     {}",
            mail.from.as_ref().map(|m| m.address.as_str()).unwrap_or("")
        );
        let _ = writeln!(
            s,
            "customer: {}{}",
            facts
                .customer
                .unwrap_or("(none: no registered organisation)"),
            facts
                .plan
                .map(|p| format!(", plan {p}"))
                .unwrap_or_default()
        );
        if let Some(m) = facts.mailbox {
            let _ = writeln!(s, "mailbox:  {m}");
        }
        if let Some(a) = facts.alert {
            let _ = writeln!(
                s,
                "alert:    source {}, host {}, service {}, state {}",
                alert_source_name(a),
                a.host,
                a.service.as_deref().unwrap_or("(none: host alert)"),
                alert_state_name(a)
            );
        }
        let body = own_text(&mail.subject, truncate(&mail.body, BODY_SCAN_LIMIT));
        for g in &self.groups {
            let applicable = g
                .rules
                .iter()
                .filter(|r| r.alert.is_some() == for_alert)
                .count();
            let _ = writeln!(
                s,
                "\nrule file {} (mode {}, {} rules{})",
                g.file,
                if g.mode == Mode::First {
                    "first"
                } else {
                    "highest"
                },
                g.rules.len(),
                if applicable == g.rules.len() {
                    String::new()
                } else if for_alert {
                    format!(", {applicable} for alerts")
                } else {
                    format!(", {} for alerts only", g.rules.len() - applicable)
                }
            );
            for r in g.rules.iter().filter(|r| r.alert.is_some() == for_alert) {
                let matched = scan.holds(r);
                let hits = self.rule_hits(r, mail, body, facts);
                if hits.is_empty() && !matched {
                    continue;
                }
                let mut decides = Vec::new();
                if matched {
                    let me = Some(r.name.as_str());
                    if r.severity.is_some() && c.rule.as_deref() == me {
                        decides.push("severity");
                    }
                    if r.action.is_some() && c.action_rule.as_deref() == me {
                        decides.push("action");
                    }
                    if r.queue.is_some() && c.queue_rule.as_deref() == me {
                        decides.push("queue");
                    }
                }
                let _ = writeln!(
                    s,
                    "  {} {}:{} {} → {}{}{}",
                    if !decides.is_empty() {
                        "=>"
                    } else if matched {
                        " +"
                    } else {
                        " -"
                    },
                    r.file,
                    r.line,
                    r.name,
                    r.settings(),
                    r.description
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default(),
                    if decides.is_empty() {
                        String::new()
                    } else {
                        format!(" [decides {}]", decides.join(", "))
                    }
                );
                if !matched {
                    let _ = writeln!(
                        s,
                        "      (not every condition held, or an unless pattern vetoed it)"
                    );
                }
                for h in hits {
                    let _ = writeln!(s, "      {h}");
                }
            }
        }
        let sev_default = || {
            if for_alert {
                "by the alert's state (no rule set it)".to_string()
            } else {
                format!(
                    "{} ({}): no rule set it, the default",
                    default.level(),
                    default.label_en()
                )
            }
        };
        let _ = writeln!(s);
        match (&c.rule, c.severity) {
            (Some(rule), Some(sev)) => {
                let _ = writeln!(
                    s,
                    "decision: severity {} ({}) by rule {rule}",
                    sev.level(),
                    sev.label_en()
                );
            }
            _ => {
                let _ = writeln!(s, "decision: severity {}", sev_default());
            }
        }
        let _ = writeln!(
            s,
            "          action {}{}",
            c.action.describe(),
            c.action_rule
                .as_deref()
                .map(|r| format!(" by rule {r}"))
                .unwrap_or_else(|| " (default)".into())
        );
        if let (Some(q), Some(r)) = (&c.queue, &c.queue_rule) {
            let _ = writeln!(s, "          queue {q} by rule {r}");
        }
        if !c.tags.is_empty() {
            let _ = writeln!(s, "          tags {}", c.tags.join(", "));
        }
        s
    }

    /// The pattern matches of one rule, for `explain`; compiles the few
    /// patterns involved one by one (only ever on demand).
    fn rule_hits(&self, r: &Rule, mail: &ParsedMail, body: &str, facts: &Facts<'_>) -> Vec<String> {
        let mut out = Vec::new();
        let lower = |v: Option<&str>| v.map(str::to_lowercase);
        for (field, list, value) in [
            ("customer", &r.customer, lower(facts.customer)),
            ("plan", &r.plan, lower(facts.plan)),
            ("mailbox", &r.mailbox, lower(facts.mailbox)),
        ] {
            if list.is_empty() {
                continue;
            }
            let shown = value.clone().unwrap_or_else(|| "(none)".into());
            let held = listed(list, value.as_deref(), field == "customer");
            out.push(format!(
                "{field} {shown} {} [{}]",
                if held { "in" } else { "not in" },
                list.join(", ")
            ));
        }
        if let (Some(c), Some(a)) = (&r.alert, facts.alert) {
            let mut fact = |field: &str, value: &str, held: bool, list: String| {
                out.push(format!(
                    "alert {field} {value} {} [{list}]",
                    if held { "in" } else { "not in" }
                ));
            };
            if !c.source.is_empty() {
                let v = alert_source_name(a);
                fact(
                    "source",
                    &v,
                    listed(&c.source, Some(&v), false),
                    c.source.join(", "),
                );
            }
            if !c.state.is_empty() {
                let v = alert_state_name(a);
                fact(
                    "state",
                    &v,
                    listed(&c.state, Some(&v), false),
                    c.state.join(", "),
                );
            }
            let show = |res: &[Regex]| {
                res.iter()
                    .map(|r| format!("/{}/", r.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if !c.host.is_empty() {
                fact("host", &a.host, c.host_holds(&a.host), show(&c.host));
            }
            if !c.service.is_empty() {
                let v = a.service.as_deref().unwrap_or("(none)");
                fact(
                    "service",
                    v,
                    c.service_holds(a.service.as_deref()),
                    show(&c.service),
                );
            }
        }
        let mut probe = |field: &str, pat: &str, hay: &str| {
            if let Ok(re) = Regex::new(pat) {
                if let Some(m) = re.find(hay) {
                    out.push(format!(
                        "{field} ~ /{pat}/ matched {:?}",
                        excerpt(hay, m.start(), m.end())
                    ));
                }
            }
        };
        let from = mail.from.as_ref().map(|m| m.address.as_str()).unwrap_or("");
        for &i in &r.subject {
            probe("subject", &self.sources.content[i], &mail.subject);
        }
        for &i in &r.body {
            probe("body", &self.sources.content[i], body);
        }
        for &i in &r.text {
            probe("subject", &self.sources.content[i], &mail.subject);
            probe("body", &self.sources.content[i], body);
        }
        for &i in &r.from {
            probe("from", &self.sources.from[i], from);
        }
        for &i in &r.to {
            for rc in mail.to.iter().chain(mail.cc.iter()) {
                probe("to", &self.sources.to[i], &rc.address);
            }
        }
        for (h, idx) in &r.header {
            for &i in idx {
                for (_, v) in mail.headers.iter().filter(|(n, _)| n == h) {
                    probe(h, &self.sources.header[i], v);
                }
            }
        }
        for &i in &r.unless {
            probe("unless/subject", &self.sources.content[i], &mail.subject);
            probe("unless/body", &self.sources.content[i], body);
        }
        out
    }
}

/// Picks a group's deciding rule among `candidates` (matching rules that
/// set the thing decided): the first, or the most severe (rules without a
/// severity count as less severe than 4; ties: the first).
fn pick<'r>(mode: Mode, candidates: impl Iterator<Item = &'r &'r Rule>) -> Option<&'r Rule> {
    let rank = |r: &Rule| r.severity.map(|s| s.level()).unwrap_or(u8::MAX);
    match mode {
        Mode::First => candidates.into_iter().next().copied(),
        Mode::Highest => candidates.min_by_key(|r| rank(r)).copied(),
    }
}

/// The checks of one message against the rules: facts lower-cased once,
/// each pattern set run at most once and only when a rule needs it (an
/// alert with only host/state rules never scans the body).
struct Scan<'a> {
    rules: &'a RuleSet,
    mail: &'a ParsedMail,
    body: &'a str,
    customer: Option<String>,
    plan: Option<String>,
    mailbox: Option<String>,
    alert: Option<&'a Alert>,
    alert_source: String,
    alert_state: String,
    subject_hits: OnceCell<Vec<bool>>,
    body_hits: OnceCell<Vec<bool>>,
    from_hits: OnceCell<Vec<bool>>,
    to_hits: OnceCell<Vec<bool>>,
}

impl<'a> Scan<'a> {
    fn new(rules: &'a RuleSet, mail: &'a ParsedMail, facts: &Facts<'a>) -> Scan<'a> {
        Scan {
            rules,
            mail,
            body: own_text(&mail.subject, truncate(&mail.body, BODY_SCAN_LIMIT)),
            customer: facts.customer.map(str::to_lowercase),
            plan: facts.plan.map(str::to_lowercase),
            mailbox: facts.mailbox.map(str::to_lowercase),
            alert: facts.alert,
            alert_source: facts.alert.map(alert_source_name).unwrap_or_default(),
            alert_state: facts.alert.map(alert_state_name).unwrap_or_default(),
            subject_hits: OnceCell::new(),
            body_hits: OnceCell::new(),
            from_hits: OnceCell::new(),
            to_hits: OnceCell::new(),
        }
    }

    fn subject(&self, i: usize) -> bool {
        self.subject_hits
            .get_or_init(|| self.rules.content.matches(&self.mail.subject))[i]
    }

    fn body(&self, i: usize) -> bool {
        self.body_hits
            .get_or_init(|| self.rules.content.matches(self.body))[i]
    }

    fn from(&self, i: usize) -> bool {
        self.from_hits.get_or_init(|| {
            let from = self
                .mail
                .from
                .as_ref()
                .map(|m| m.address.as_str())
                .unwrap_or("");
            self.rules.from.matches(from)
        })[i]
    }

    fn to(&self, i: usize) -> bool {
        self.to_hits.get_or_init(|| {
            let mut hits = vec![false; self.rules.to.len];
            for rcpt in self.mail.to.iter().chain(self.mail.cc.iter()) {
                for (hit, m) in hits.iter_mut().zip(self.rules.to.matches(&rcpt.address)) {
                    *hit |= m;
                }
            }
            hits
        })[i]
    }

    fn header(&self, name: &str, idx: &[usize]) -> bool {
        self.mail
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .any(|(_, v)| {
                let m = self.rules.header.matches(v);
                idx.iter().any(|&i| m[i])
            })
    }

    /// Whether every condition of `r` holds: facts first (cheap), then
    /// the patterns.
    fn holds(&self, r: &Rule) -> bool {
        let fact = |list: &[String], v: &Option<String>, any: bool| {
            list.is_empty() || listed(list, v.as_deref(), any)
        };
        if !(fact(&r.customer, &self.customer, true)
            && fact(&r.plan, &self.plan, false)
            && fact(&r.mailbox, &self.mailbox, false))
        {
            return false;
        }
        if let Some(c) = &r.alert {
            let Some(a) = self.alert else {
                return false;
            };
            let ok = (c.source.is_empty() || listed(&c.source, Some(&self.alert_source), false))
                && (c.state.is_empty() || listed(&c.state, Some(&self.alert_state), false))
                && (c.host.is_empty() || c.host_holds(&a.host))
                && (c.service.is_empty() || c.service_holds(a.service.as_deref()));
            if !ok {
                return false;
            }
        }
        (r.subject.is_empty() || r.subject.iter().any(|&i| self.subject(i)))
            && (r.body.is_empty() || r.body.iter().any(|&i| self.body(i)))
            && (r.text.is_empty() || r.text.iter().any(|&i| self.subject(i) || self.body(i)))
            && (r.from.is_empty() || r.from.iter().any(|&i| self.from(i)))
            && (r.to.is_empty() || r.to.iter().any(|&i| self.to(i)))
            && r.header.iter().all(|(h, idx)| self.header(h, idx))
            && !r.unless.iter().any(|&i| self.subject(i) || self.body(i))
    }
}

impl Rule {
    /// `file:line name (what it sets)`, as listed in [`Classification::matched`].
    fn label(&self) -> String {
        format!(
            "{}:{} {} ({})",
            self.file,
            self.line,
            self.name,
            self.settings()
        )
    }

    /// What the rule sets, e.g. `severity 1, queue erp, tags erp`.
    fn settings(&self) -> String {
        let mut v = Vec::new();
        if let Some(s) = self.severity {
            v.push(format!("severity {}", s.level()));
        }
        if let Some(a) = &self.action {
            v.push(format!("action {}", a.describe()));
        }
        if let Some(q) = &self.queue {
            v.push(format!("queue {q}"));
        }
        if !self.tags.is_empty() {
            v.push(format!("tags {}", self.tags.join(" ")));
        }
        v.join(", ")
    }
}

/// Reads a rule's `action`, `forward` and `reply`.
fn rule_action<E>(r: &RuleSpec, err: &E) -> Result<Option<RuleAction>, RuleError>
where
    E: Fn(std::ops::Range<usize>, String) -> RuleError,
{
    let mut forward = Vec::new();
    for f in &r.forward {
        let v = f.get_ref().trim();
        let address = v.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !v.contains(char::is_whitespace)
        });
        if v != ACCOUNT_MANAGER && !address {
            return Err(err(
                f.span(),
                format!("forward must be an address or \"{ACCOUNT_MANAGER}\", not {v:?}"),
            ));
        }
        forward.push(v.to_ascii_lowercase());
    }
    let reply = match &r.reply {
        None => None,
        Some(t) => {
            let v = t.get_ref().trim();
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(err(
                    t.span(),
                    format!("reply must name a template (letters, digits, - and _), not {v:?}"),
                ));
            }
            Some(v.to_string())
        }
    };
    let routing_span = r
        .forward
        .first()
        .map(|f| f.span())
        .or_else(|| r.reply.as_ref().map(|t| t.span()));
    match r.action.as_ref().map(|a| (a.get_ref().as_str(), a.span())) {
        None => match routing_span {
            Some(span) => Err(err(
                span,
                "forward and reply need action = \"route\"".into(),
            )),
            None => Ok(None),
        },
        Some((a @ ("ticket" | "ignore"), _)) => match routing_span {
            Some(span) => Err(err(
                span,
                format!("forward and reply belong to action = \"route\", not {a:?}"),
            )),
            None => Ok(Some(if a == "ticket" {
                RuleAction::Ticket
            } else {
                RuleAction::Ignore
            })),
        },
        Some(("route", span)) => {
            if forward.is_empty() && reply.is_none() {
                return Err(err(
                    span,
                    "action \"route\" needs forward (addresses or \"account-manager\"), reply (a template) or both".into(),
                ));
            }
            Ok(Some(RuleAction::Route { forward, reply }))
        }
        Some((other, span)) => Err(err(
            span,
            format!("action must be \"ticket\", \"route\" or \"ignore\", not {other:?}"),
        )),
    }
}

/// What [`fold_text`] replaces: upper-case ASCII and Latin-1 letters and
/// the few other characters whose simple case-folding orbit holds a
/// lower-case ASCII or Latin-1 letter (KELVIN SIGN, ANGSTROM SIGN, LONG S,
/// CAPITAL SHARP S). Folded text never contains these.
const FOLDED_AWAY: &[(char, char)] = &[
    ('A', 'Z'),
    ('\u{C0}', '\u{D6}'),
    ('\u{D8}', '\u{DE}'),
    ('\u{17F}', '\u{17F}'),
    ('\u{1E9E}', '\u{1E9E}'),
    ('\u{212A}', '\u{212B}'),
];

/// One character of [`fold_text`]: always a member of `c`'s simple
/// case-folding orbit (so every case-insensitive pattern treats both alike).
fn fold_char(c: char) -> char {
    match c {
        'A'..='Z' => c.to_ascii_lowercase(),
        '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{DE}' => char::from_u32(c as u32 + 0x20).unwrap_or(c),
        '\u{17F}' => 's',
        '\u{1E9E}' => '\u{DF}',
        '\u{212A}' => 'k',
        '\u{212B}' => '\u{E5}',
        _ => c,
    }
}

/// The text the folded patterns run over: each character replaced by a
/// member of its case-folding orbit (see [`FOLDED_AWAY`]). Same number of
/// characters, same lines.
pub fn fold_text(s: &str) -> Cow<'_, str> {
    // Nothing to do without upper-case ASCII or a lead byte of a character
    // that may fold.
    let folds = |b: &u8| b.is_ascii_uppercase() || matches!(b, 0xC3 | 0xC5 | 0xE1 | 0xE2);
    if !s.as_bytes().iter().any(folds) {
        return Cow::Borrowed(s);
    }
    // This runs over every body, so: ASCII in one vectorised pass, then a
    // scan that skips ASCII 16 bytes at a time for the characters that fold
    // outside ASCII (Latin-1 capitals C3 80..=C3 9E but C3 97 (×), and the
    // four of FOLDED_AWAY beyond), rebuilding only around those.
    let lower = s.to_ascii_lowercase();
    let b = lower.as_bytes();
    let mut out: Option<String> = None;
    let (mut i, mut done) = (0, 0);
    while i < b.len() {
        if b.len() - i >= 16 && b[i..i + 16].is_ascii() {
            i += 16;
            continue;
        }
        let special = match b[i] {
            0xC3 => b
                .get(i + 1)
                .is_some_and(|&c| (0x80..=0x9E).contains(&c) && c != 0x97),
            0xC5 => b.get(i + 1) == Some(&0xBF),
            0xE1 => b.get(i + 1..i + 3) == Some(&[0xBA, 0x9E][..]),
            0xE2 => b.get(i + 1) == Some(&0x84) && matches!(b.get(i + 2), Some(0xAA | 0xAB)),
            _ => false,
        };
        if !special {
            i += 1;
            continue;
        }
        // `i` is at a lead byte, so a character boundary.
        let Some(c) = lower[i..].chars().next() else {
            break;
        };
        let o = out.get_or_insert_with(|| String::with_capacity(lower.len()));
        o.push_str(&lower[done..i]);
        o.push(fold_char(c));
        i += c.len_utf8();
        done = i;
    }
    Cow::Owned(match out {
        Some(mut o) => {
            o.push_str(&lower[done..]);
            o
        }
        None => lower,
    })
}

/// The folded form of a pattern: matches `fold_text(t)` exactly where the
/// pattern matches `t`. `None` when that cannot be shown.
pub fn fold_pattern(pattern: &str) -> Option<String> {
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern)
        .ok()?;
    fold_hir(&hir).map(|h| h.to_string())
}

/// Folds a pattern's HIR. Sound because folding replaces characters within
/// their case-folding orbit: a class closed under case folding contains
/// either all of an orbit or none of it, so it accepts `fold_char(c)` iff
/// it accepts `c`; Unicode word boundaries see the same word characters.
/// Literals with cased letters (a case-sensitive pattern or part), byte
/// classes and ASCII word boundaries are not closed that way: `None`.
/// Small classes lose the characters folded text never contains, which
/// turns `[kK\u{212A}]` back into the literal `k` the prefilters like.
fn fold_hir(h: &Hir) -> Option<Hir> {
    Some(match h.kind() {
        HirKind::Empty => h.clone(),
        HirKind::Literal(lit) => {
            let s = std::str::from_utf8(&lit.0).ok()?;
            if !s.chars().all(caseless) {
                return None;
            }
            h.clone()
        }
        HirKind::Class(Class::Unicode(c)) => {
            let size: u32 = c
                .ranges()
                .iter()
                .map(|r| r.end() as u32 - r.start() as u32 + 1)
                .sum();
            // A class is closed under case folding iff its complement is;
            // fold the smaller one (folding [^.\n] whole takes milliseconds).
            let mut probe = c.clone();
            if size > 0x8_0000 {
                probe.negate();
            }
            let before = probe.clone();
            probe.case_fold_simple();
            if probe != before {
                return None;
            }
            if size > 256 {
                // Large classes ([^.\n], \w, …) stay as they are: removing
                // characters would only split their ranges.
                return Some(h.clone());
            }
            let mut small = c.clone();
            small.difference(&ClassUnicode::new(
                FOLDED_AWAY
                    .iter()
                    .map(|&(a, b)| ClassUnicodeRange::new(a, b)),
            ));
            Hir::class(Class::Unicode(small))
        }
        HirKind::Class(Class::Bytes(_)) => return None,
        HirKind::Look(look) => match look {
            Look::Start
            | Look::End
            | Look::StartLF
            | Look::EndLF
            | Look::StartCRLF
            | Look::EndCRLF
            | Look::WordUnicode
            | Look::WordUnicodeNegate
            | Look::WordStartUnicode
            | Look::WordEndUnicode
            | Look::WordStartHalfUnicode
            | Look::WordEndHalfUnicode => h.clone(),
            _ => return None,
        },
        HirKind::Repetition(r) => {
            let mut r = r.clone();
            r.sub = Box::new(fold_hir(&r.sub)?);
            Hir::repetition(r)
        }
        HirKind::Capture(c) => Hir::capture(Capture {
            index: c.index,
            name: c.name.clone(),
            sub: Box::new(fold_hir(&c.sub)?),
        }),
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(fold_hir).collect::<Option<_>>()?),
        HirKind::Alternation(subs) => {
            Hir::alternation(subs.iter().map(fold_hir).collect::<Option<_>>()?)
        }
    })
}

/// The guard of a folded pattern: every bounded repetition whose bounds are
/// more than 3 (and at most 1000) apart loses its upper bound. It accepts a
/// superset of what the pattern accepts; `[^.\n]{0,60}` costs 60 copies of
/// a Unicode class in the automata, `[^.\n]*` one. (Larger bounds stay, so
/// that a pattern too large to compile is still an error of the rules.)
fn relax(h: &Hir) -> Hir {
    match h.kind() {
        HirKind::Repetition(r) => {
            let mut r = r.clone();
            if r.max.is_some_and(|max| max - r.min > 3 && max <= 1000) {
                r.max = None;
            }
            r.sub = Box::new(relax(&r.sub));
            Hir::repetition(r)
        }
        HirKind::Capture(c) => Hir::capture(Capture {
            index: c.index,
            name: c.name.clone(),
            sub: Box::new(relax(&c.sub)),
        }),
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(relax).collect()),
        HirKind::Alternation(subs) => Hir::alternation(subs.iter().map(relax).collect()),
        _ => h.clone(),
    }
}

/// True when no other character folds to or from `c`.
fn caseless(c: char) -> bool {
    let mut class = ClassUnicode::new([ClassUnicodeRange::new(c, c)]);
    class.case_fold_simple();
    class.ranges().len() == 1 && class.ranges()[0].start() == class.ranges()[0].end()
}

/// Up to `max` bytes of `s`, cut at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The writer's own text of a body: everything before the quoted history
/// of a reply (the first `>` line, or a client's reply header such as
/// "On … wrote:", "Am … schrieb …:", "-----Original Message-----",
/// "-----Ursprüngliche Nachricht-----", or Outlook's "From:"/"Von:" block
/// followed by "Sent:"/"Gesendet:"/"Date:"/"Datum:"). What a customer quotes
/// is the history, not the request: a thank-you note quoting "the server is
/// down" is not an outage. A body that is all quote (or starts with one) is
/// returned whole, and so is a forward's (its subject says `Fwd:`/`WG:`),
/// whose quoted part is the request.
pub fn own_text<'a>(subject: &str, body: &'a str) -> &'a str {
    if is_forward(subject) {
        return body;
    }
    let mut offset = 0;
    let mut lines = body.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        let t = line.trim();
        let cut = t.starts_with('>')
            || is_reply_header(t)
            || ((starts_with_ci(t, "from:") || starts_with_ci(t, "von:"))
                && lines.peek().is_some_and(|next| {
                    let n = next.trim();
                    ["sent:", "gesendet:", "date:", "datum:"]
                        .iter()
                        .any(|p| starts_with_ci(n, p))
                }));
        if cut {
            let own = &body[..offset];
            return if own.trim().is_empty() { body } else { own };
        }
        offset += line.len();
    }
    body
}

/// Whether a subject is a forward's (`Fwd:`, `FW:`, `WG:`, `TR:` first).
fn is_forward(subject: &str) -> bool {
    let s = subject.trim_start();
    ["fwd:", "fw:", "wg:", "tr:", "weitergeleitet:"]
        .iter()
        .any(|p| starts_with_ci(s, p))
}

/// A mail client's line introducing the quoted message of a reply.
fn is_reply_header(t: &str) -> bool {
    let dashed = t.starts_with("-----") && t.ends_with("-----");
    (dashed
        && (t.to_ascii_lowercase().contains("original message")
            || t.contains("Ursprüngliche Nachricht")
            || t.contains("Originalnachricht")))
        || (starts_with_ci(t, "on ") && t.ends_with("wrote:"))
        || (starts_with_ci(t, "am ") && t.contains(" schrieb") && t.ends_with(':'))
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The matched text with a little context, on one line.
fn excerpt(hay: &str, start: usize, end: usize) -> String {
    let mut a = start.saturating_sub(30);
    while !hay.is_char_boundary(a) {
        a -= 1;
    }
    let mut b = (end + 30).min(hay.len());
    while !hay.is_char_boundary(b) {
        b += 1;
    }
    crate::domain::header_safe(&hay[a..b])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::parse::parse;

    fn mail(subject: &str, body: &str) -> ParsedMail {
        let raw = format!(
            "From: kunde@firma.de\r\nTo: support@example.com\r\nSubject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
        );
        parse(raw.as_bytes()).unwrap()
    }

    fn sev(subject: &str, body: &str) -> Option<u8> {
        RuleSet::embedded()
            .unwrap()
            .classify(&mail(subject, body), &Facts::default())
            .severity
            .map(|s| s.level())
    }

    #[test]
    fn embedded_rules_compile() {
        let r = RuleSet::embedded().unwrap();
        assert!(r.len() >= 8);
    }

    #[test]
    fn quoted_history_is_not_read_but_a_forward_is() {
        let quoted = "Danke, alles wieder gut.\n\nAm 03.12.2026 um 08:05 schrieb Anna:\n> Unser Server ist ausgefallen.";
        assert_eq!(
            own_text("Re: Server", quoted),
            "Danke, alles wieder gut.\n\n"
        );
        let outlook =
            "Thanks!\n\nFrom: Support <support@desk.example>\nSent: Monday\nSubject: outage";
        assert_eq!(own_text("RE: x", outlook), "Thanks!\n\n");
        // A forward's quoted part is the request; a body that is all quote is kept.
        assert_eq!(own_text("Fwd: Server", quoted), quoted);
        assert_eq!(own_text("x", "> all quote"), "> all quote");
        // A thank-you quoting the outage it answers is no outage.
        assert_eq!(
            sev(
                "Re: Server ausgefallen",
                "Läuft wieder, vielen Dank!\n\n> Der Server ist ausgefallen, niemand kann arbeiten."
            ),
            Some(4)
        );
        // Something still broken is not an acknowledgement.
        assert_eq!(
            sev(
                "Re: VPN",
                "The VPN works again, thanks, but Outlook is still not working."
            ),
            Some(3)
        );
    }

    #[test]
    fn german_and_english_defaults() {
        assert_eq!(
            sev("ERP komplett ausgefallen", "Niemand kann arbeiten."),
            Some(1)
        );
        assert_eq!(sev("Produktion steht still", ""), Some(1));
        assert_eq!(
            sev("Total outage", "Our shop is down for all customers"),
            Some(1)
        );
        assert_eq!(sev("Drucker geht nicht mehr", "Seit heute früh."), Some(3));
        assert_eq!(
            sev("Frage zur Rechnungsstellung", "Wie kann ich ...?"),
            Some(4)
        );
        assert_eq!(sev("How do I add a user?", "Thanks"), Some(4));
        assert_eq!(
            sev("Datenbank sehr langsam", "Produktivsystem reagiert kaum"),
            Some(2)
        );
    }

    #[test]
    fn modes_first_and_highest() {
        let text = |mode: &str| {
            format!(
                "mode = \"{mode}\"\n[[rule]]\nname = \"low\"\nseverity = 4\nsubject = [\"x\"]\n[[rule]]\nname = \"high\"\nseverity = 1\nsubject = [\"x\"]\n"
            )
        };
        let m = mail("x", "");
        let first = RuleSet::compile(&[("a.toml".into(), text("first"))]).unwrap();
        assert_eq!(
            first.classify(&m, &Facts::default()).rule.as_deref(),
            Some("low")
        );
        let highest = RuleSet::compile(&[("a.toml".into(), text("highest"))]).unwrap();
        assert_eq!(
            highest.classify(&m, &Facts::default()).rule.as_deref(),
            Some("high")
        );
    }

    #[test]
    fn errors_name_file_line_and_reason() {
        let bad_regex = "[[rule]]\nname = \"r\"\nseverity = 2\nsubject = [\n  \"(unclosed\",\n]\n";
        let e = RuleSet::compile(&[("bad.toml".into(), bad_regex.into())]).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("bad.toml", 5), "{e}");
        assert!(e.reason.contains("invalid regular expression"), "{e}");

        let bad_sev = "[[rule]]\nname = \"r\"\nseverity = 9\nsubject = [\"x\"]\n";
        let e = RuleSet::compile(&[("s.toml".into(), bad_sev.into())]).unwrap_err();
        assert_eq!(e.line, 3, "{e}");

        let bad_key = "[[rule]]\nname = \"r\"\nseverity = 2\nsubjekt = [\"x\"]\n";
        let e = RuleSet::compile(&[("k.toml".into(), bad_key.into())]).unwrap_err();
        assert_eq!(e.line, 4, "{e}");

        let no_cond = "[[rule]]\nname = \"r\"\nseverity = 2\n";
        assert!(RuleSet::compile(&[("n.toml".into(), no_cond.into())]).is_err());
    }

    #[test]
    fn folding_stays_within_case_orbits() {
        let away = |c: char| FOLDED_AWAY.iter().any(|&(a, b)| a <= c && c <= b);
        for c in (0u32..0x3_0000).filter_map(char::from_u32) {
            let f = fold_char(c);
            assert!(!away(f), "{c:?} folds to {f:?}, which is folded away");
            if f == c {
                assert!(!away(c), "{c:?} is folded away but not changed");
                continue;
            }
            let mut orbit = ClassUnicode::new([ClassUnicodeRange::new(c, c)]);
            orbit.case_fold_simple();
            assert!(
                orbit
                    .ranges()
                    .iter()
                    .any(|r| r.start() <= f && f <= r.end()),
                "{c:?} folds to {f:?}, outside its case-folding orbit"
            );
        }
        assert_eq!(
            fold_text("ÄRGER mit ẞ, \u{212A} und ſ"),
            "ärger mit ß, k und s"
        );
        // The byte-wise fast path agrees with folding char by char.
        let all: String = (0u32..0x600)
            .chain([0x1E9E, 0x212A, 0x212B, 0x2013, 0x20AC, 0x1F600])
            .filter_map(char::from_u32)
            .collect();
        for t in [all.as_str(), "Grüße × ÷ Ä\u{212B}", "\u{E2}\u{84}"] {
            assert_eq!(fold_text(t), t.chars().map(fold_char).collect::<String>());
        }
        assert!(matches!(fold_text("nur klein, 1.2.3"), Cow::Borrowed(_)));
    }

    #[test]
    fn embedded_patterns_are_all_folded() {
        // A pattern without a folded form costs the slow case-insensitive
        // search again; the defaults must not have one.
        let rs = RuleSet::embedded().unwrap();
        assert!(
            rs.content.plain_ids.is_empty(),
            "{:?}",
            rs.content.plain_ids
        );
        assert!(!rs.content.folded_ids.is_empty());
    }

    #[test]
    fn patterns_that_cannot_be_folded_are_kept() {
        for p in [
            "(?i)(?-i:SAP) system",
            "SAP",
            "(?i)(?-u:\\b)kunde",
            "(?i)(?-u:[a-z])x",
        ] {
            assert_eq!(fold_pattern(p), None, "{p}");
        }
        // Case-insensitivity is gone from the folded form: plain literals.
        let k = fold_pattern("(?i)Kunde").unwrap();
        assert!(
            k.contains("kunde") && !k.contains('K') && !k.contains('['),
            "{k}"
        );
        // Case-sensitive, but nothing in it has a case: folds as it is.
        assert!(fold_pattern("4711-[0-9]+").is_some());
        // A case-sensitive rule file keeps its meaning.
        let t =
            "case_sensitive = true\n[[rule]]\nname = \"sap\"\nseverity = 2\nsubject = [\"SAP\"]\n";
        let rs = RuleSet::compile(&[("c.toml".into(), t.into())]).unwrap();
        assert_eq!(
            rs.classify(&mail("SAP hängt", ""), &Facts::default())
                .severity,
            Some(Severity::Production)
        );
        assert_eq!(
            rs.classify(&mail("sap hängt", ""), &Facts::default())
                .severity,
            None
        );
    }

    /// Pieces of text the rules care about, in every case, with the
    /// characters that fold from outside ASCII.
    const PIECES: &[&str] = &[
        "ausgefallen",
        "AUSGEFALLEN",
        "Ausgefallen",
        "server",
        "SERVER",
        "Server",
        " ist ",
        " IST ",
        " down",
        " DOWN",
        "Störung",
        "STÖRUNG",
        "störung",
        "straße",
        "STRASSE",
        "STRAẞE",
        "\u{212A}omplett",
        "komplett",
        "KOMPLETT",
        "ſtillſtand",
        "Stillstand",
        "steht still",
        "STEHT STILL",
        "Prio 1 ",
        "prio1x",
        "sev 2 ",
        "Fehler",
        "FEHLER",
        "Problem",
        "drucker",
        "DRUCKER",
        "kein Ausfall",
        "Notfall",
        "NOTFALL",
        "Lösegeld",
        "verschlüsselt",
        "VERSCHLÜSSELT",
        "Trojaner",
        "ÄÖÜ",
        "äöü",
        "Å",
        "\u{212B}",
        "å",
        "frage",
        "Frage",
        "How do I",
        "HOW CAN WE",
        "isn't working",
        "ISN'T WORKING",
        "datenbank",
        "Datenbank ",
        "nicht erreichbar",
        "NICHT ERREICHBAR",
        "sehr langsam",
        "SEHR LANGSAM",
        "seit Montag",
        ". ",
        "\n",
        " ",
        "x",
        "SAP",
        "sap",
        "Kunde",
        "KUNDE",
        "_",
        "1",
        "9",
        "Produktivsystem",
        "backup",
        "Datensicherung",
        "fehlgeschlagen",
        " mit ein paar wirklich sehr langen Füllwörtern ohne jeden Punkt ",
        " und noch mehr Text ohne Satzende dazwischen ",
        "Live-Umgebung",
        "langsam",
    ];

    fn folded_regexes() -> &'static [(String, Regex, Option<Regex>)] {
        static CELL: std::sync::OnceLock<Vec<(String, Regex, Option<Regex>)>> =
            std::sync::OnceLock::new();
        CELL.get_or_init(|| {
            let rs = RuleSet::embedded().unwrap();
            let mut pats = rs.sources.content.clone();
            pats.extend(
                [
                    "(?i)\\bkunde\\b",
                    "(?i)[a-z]+ist",
                    "(?i)\\p{Lu}{3}",
                    "(?i)\\W\\w{2}\\W",
                    "(?i)[^a-zäöüß ]{2}",
                    "(?i)k.{0,3}plett",
                    "(?i)^stra(ß|ss)e$",
                    "(?im)^(frage|notfall)",
                    "(?i)(?-i:SAP)|kunde",
                    "(?i)å|ÿ",
                ]
                .map(String::from),
            );
            pats.into_iter()
                .map(|p| {
                    let orig = Regex::new(&p).unwrap();
                    let folded = fold_pattern(&p).map(|f| Regex::new(&f).unwrap());
                    (p, orig, folded)
                })
                .collect()
        })
    }

    /// The embedded rules, and each of their content patterns compiled alone.
    fn embedded_with_originals() -> &'static (RuleSet, Vec<Regex>) {
        static CELL: std::sync::OnceLock<(RuleSet, Vec<Regex>)> = std::sync::OnceLock::new();
        CELL.get_or_init(|| {
            let rs = RuleSet::embedded().unwrap();
            let originals = rs
                .sources
                .content
                .iter()
                .map(|p| Regex::new(p).unwrap())
                .collect();
            (rs, originals)
        })
    }

    #[test]
    fn guards_and_steady_set_agree_with_the_patterns() {
        let (rs, originals) = embedded_with_originals();
        let texts = [
            "Das Produktivsystem ist seit dem Update am Wochenende extrem langsam.",
            "Das Produktivsystem hat mit ein paar wirklich sehr langen Füllwörtern ohne jeden Punkt einen Fehler",
            "Die DATENSICHERUNG ist letzte Nacht FEHLGESCHLAGEN",
            "Die Datensicherung ist mit ein paar wirklich sehr langen Füllwörtern ohne Punkt fehlgeschlagen",
            "Seit Montag sehr langsam. Der Server ist nicht erreichbar!",
            "",
        ];
        let fresh = RuleSet::embedded().unwrap();
        for round in 0..2 {
            for t in texts {
                let want: Vec<bool> = originals.iter().map(|r| r.is_match(t)).collect();
                assert_eq!(fresh.content.matches(t), want, "round {round}: {t:?}");
            }
            // Second round: past the switch to the steady-state set.
            for _ in 0..STEADY_AFTER {
                fresh.content.matches("x");
            }
        }
        assert!(fresh.content.steady.get().is_some_and(Option::is_some));
        // Some patterns of the defaults are guarded (else the test is moot).
        assert!(rs.content.exact.iter().any(Option::is_some));
    }

    proptest::proptest! {
        #[test]
        fn rule_sets_match_like_the_patterns(
            parts in proptest::collection::vec(proptest::sample::select(PIECES), 0..10)
        ) {
            let text = parts.concat();
            let (rs, originals) = embedded_with_originals();
            let want: Vec<bool> = originals.iter().map(|r| r.is_match(&text)).collect();
            proptest::prop_assert_eq!(rs.content.matches(&text), want, "{:?}", text);
        }

        #[test]
        fn folded_patterns_match_like_the_originals(
            parts in proptest::collection::vec(proptest::sample::select(PIECES), 0..10)
        ) {
            let text = parts.concat();
            let folded_text = fold_text(&text);
            for (p, orig, folded) in folded_regexes() {
                if let Some(f) = folded {
                    proptest::prop_assert_eq!(
                        orig.is_match(&text),
                        f.is_match(&folded_text),
                        "pattern {} on {:?}", p, text
                    );
                }
            }
        }
    }

    #[test]
    fn unless_and_header_conditions() {
        let t = "[[rule]]\nname = \"prio\"\nseverity = 2\nheader = { \"X-Priority\" = [\"^1\"] }\nunless = [\"test\"]\n";
        let rs = RuleSet::compile(&[("h.toml".into(), t.into())]).unwrap();
        let raw = b"From: a@b.de\r\nX-Priority: 1 (Highest)\r\nSubject: hallo\r\n\r\nx\r\n";
        assert_eq!(
            rs.classify(&parse(raw).unwrap(), &Facts::default())
                .severity,
            Some(Severity::Production)
        );
        let raw = b"From: a@b.de\r\nX-Priority: 1 (Highest)\r\nSubject: nur ein test\r\n\r\nx\r\n";
        assert_eq!(
            rs.classify(&parse(raw).unwrap(), &Facts::default())
                .severity,
            None
        );
    }

    fn alert(host: &str, service: Option<&str>, state: AlertState) -> Alert {
        Alert {
            source: AlertSource::Zabbix,
            host: host.into(),
            service: service.map(str::to_string),
            state,
            kind: crate::ingest::alerts::AlertKind::Problem,
            event_id: None,
            summary: String::new(),
        }
    }

    const DESK: &str = r#"
mode = "first"

[[rule]]
name = "premium-erp"
customer = ["stadtwerke"]
plan = ["premium"]
text = ["erp steht"]
severity = 1
queue = "erp"
tags = ["erp", "premium"]

[[rule]]
name = "invoices"
subject = ["rechnung"]
action = "route"
forward = ["account-manager", "billing@desk.example"]
reply = "not-support"
tags = ["billing"]

[[rule]]
name = "monitoring-box"
mailbox = ["monitoring"]
tags = ["via-monitoring"]

[[rule]]
name = "test-hosts"
action = "ignore"
[rule.alert]
host = ["^test-"]

[[rule]]
name = "db-critical"
severity = 1
queue = "dba"
[rule.alert]
source = ["zabbix"]
service = ["mysql|postgres"]
state = ["critical", "DOWN"]
"#;

    #[test]
    fn rules_match_on_customer_plan_and_mailbox() {
        let rs = RuleSet::compile(&[("desk.toml".into(), DESK.into())]).unwrap();
        let m = mail("ERP steht", "seit 8 Uhr");
        let premium = Facts {
            customer: Some("Stadtwerke"),
            plan: Some("Premium"),
            mailbox: Some("support"),
            alert: None,
        };
        let c = rs.classify(&m, &premium);
        assert_eq!(c.severity, Some(Severity::Critical));
        assert_eq!(c.rule.as_deref(), Some("premium-erp"));
        assert_eq!(c.queue.as_deref(), Some("erp"));
        assert_eq!(c.tags, ["erp", "premium"]);
        assert_eq!(c.action, RuleAction::Ticket);
        // Another customer, or the same one on another plan: not the override.
        for f in [
            Facts {
                customer: Some("andere"),
                ..premium
            },
            Facts {
                plan: Some("Basic"),
                ..premium
            },
            Facts::default(),
        ] {
            assert_eq!(rs.classify(&m, &f).rule, None);
        }
        let c = rs.classify(
            &m,
            &Facts {
                mailbox: Some("Monitoring"),
                ..Facts::default()
            },
        );
        assert_eq!(c.tags, ["via-monitoring"]);
        assert_eq!(c.severity, None);
    }

    #[test]
    fn route_rules_carry_their_destinations_and_tags_add_up() {
        let rs = RuleSet::compile(&[("desk.toml".into(), DESK.into())]).unwrap();
        let c = rs.classify(&mail("Rechnung 4711", ""), &Facts::default());
        assert_eq!(
            c.action,
            RuleAction::Route {
                forward: vec!["account-manager".into(), "billing@desk.example".into()],
                reply: Some("not-support".into()),
            }
        );
        assert_eq!(c.action_rule.as_deref(), Some("invoices"));
        assert_eq!(
            rs.replies(),
            [("desk.toml:13 invoices".to_string(), "not-support")]
        );
        // Each setting from the first group that sets it: a later group
        // still gives the severity, tags come from both.
        let later = "[[rule]]\nname = \"sev\"\nsubject = [\"rechnung\"]\nseverity = 4\ntags = [\"later\"]\n";
        let rs = RuleSet::compile(&[
            ("10.toml".into(), DESK.into()),
            ("20.toml".into(), later.into()),
        ])
        .unwrap();
        let c = rs.classify(&mail("Rechnung 4711", ""), &Facts::default());
        assert_eq!(c.action_rule.as_deref(), Some("invoices"));
        assert_eq!(c.severity, Some(Severity::Question));
        assert_eq!(c.tags, ["billing", "later"]);
    }

    #[test]
    fn alert_rules_apply_to_alerts_only() {
        let rs = RuleSet::compile(&[("desk.toml".into(), DESK.into())]).unwrap();
        let m = mail("PROBLEM", "");
        let facts = |a| Facts {
            alert: Some(a),
            ..Facts::default()
        };
        let test = alert("test-web01", Some("http"), AlertState::Critical);
        assert_eq!(rs.classify(&m, &facts(&test)).action, RuleAction::Ignore);
        let db = alert("db01", Some("MySQL replication"), AlertState::Critical);
        let c = rs.classify(&m, &facts(&db));
        assert_eq!(
            (c.severity, c.queue.as_deref()),
            (Some(Severity::Critical), Some("dba"))
        );
        let warn = alert("db01", Some("MySQL replication"), AlertState::Warning);
        assert_eq!(rs.classify(&m, &facts(&warn)).rule, None);
        let host = alert("db01", None, AlertState::Down);
        assert_eq!(
            rs.classify(&m, &facts(&host)).rule,
            None,
            "no service: no match"
        );
        // An alert rule never decides a person's mail, nor a mail rule an alert.
        assert_eq!(
            rs.classify(&mail("test-web01", ""), &Facts::default())
                .action_rule,
            None
        );
        let erp = mail("ERP steht", "");
        let premium = Facts {
            customer: Some("stadtwerke"),
            plan: Some("premium"),
            mailbox: None,
            alert: Some(&db),
        };
        assert_eq!(
            rs.classify(&erp, &premium).rule.as_deref(),
            Some("db-critical")
        );
    }

    #[test]
    fn bad_actions_are_refused_with_their_line() {
        let cases = [
            ("[[rule]]\nname = \"a\"\nsubject = [\"x\"]\naction = \"drop\"\n", "action must be"),
            ("[[rule]]\nname = \"a\"\nsubject = [\"x\"]\naction = \"route\"\n", "needs forward"),
            ("[[rule]]\nname = \"a\"\nsubject = [\"x\"]\nforward = [\"x@y.de\"]\n", "need action = \"route\""),
            ("[[rule]]\nname = \"a\"\nsubject = [\"x\"]\naction = \"ignore\"\nreply = \"t\"\n", "belong to action"),
            ("[[rule]]\nname = \"a\"\nsubject = [\"x\"]\naction = \"route\"\nforward = [\"boss\"]\n", "forward must be"),
            ("[[rule]]\nname = \"a\"\nsubject = [\"x\"]\naction = \"route\"\nreply = \"../etc\"\n", "reply must name"),
            ("[[rule]]\nname = \"a\"\nsubject = [\"x\"]\n", "sets nothing"),
            ("[[rule]]\nname = \"a\"\nseverity = 2\n[rule.alert]\nstate = [\"purple\"]\n", "unknown alert state"),
            ("[[rule]]\nname = \"a\"\nseverity = 2\n[rule.alert]\nhost = [\"(\"]\n", "invalid regular expression"),
        ];
        for (text, want) in cases {
            let e = RuleSet::compile(&[("r.toml".into(), text.into())]).unwrap_err();
            assert!(e.reason.contains(want), "{text}: {e}");
            assert!(e.line >= 1, "{text}: {e}");
        }
    }

    #[test]
    fn explain_names_the_facts_and_what_each_rule_decided() {
        let rs = RuleSet::compile(&[("desk.toml".into(), DESK.into())]).unwrap();
        let f = Facts {
            customer: Some("stadtwerke"),
            plan: Some("Premium"),
            mailbox: Some("support"),
            alert: None,
        };
        let text = rs.explain(&mail("ERP steht", ""), &f, Severity::Malfunction);
        assert!(
            text.contains("customer: stadtwerke, plan Premium"),
            "{text}"
        );
        assert!(text.contains("=> desk.toml:4 premium-erp"), "{text}");
        assert!(text.contains("[decides severity, queue]"), "{text}");
        assert!(
            text.contains("customer stadtwerke in [stadtwerke]"),
            "{text}"
        );
        assert!(text.contains("decision: severity 1"), "{text}");
        assert!(text.contains("action ticket (default)"), "{text}");
        assert!(text.contains("queue erp by rule premium-erp"), "{text}");
        assert!(text.contains("tags erp, premium"), "{text}");
    }

    #[test]
    fn default_routing_sends_commercial_mail_away_but_not_incidents() {
        let rs = RuleSet::embedded().unwrap();
        let action = |subject: &str| rs.classify(&mail(subject, ""), &Facts::default()).action;
        for routed in [
            "Rechnung 2026-10-4471 – Position doppelt",
            "Kündigung Wartungsvertrag zum 31.12.",
            "Angebot für zwei Arbeitsplätze",
            "Invoice INV-88231 - PO number missing",
            "Quote for 25 additional licences",
        ] {
            assert!(
                matches!(action(routed), RuleAction::Route { .. }),
                "{routed}"
            );
        }
        for incident in [
            "Rechnungsdruck fällt aus",
            "Rechnungen werden nicht gedruckt",
            "Invoices not printing since this morning",
            "Invoice run failed",
            "Lohnabrechnung steht",
        ] {
            assert_eq!(action(incident), RuleAction::Ticket, "{incident}");
        }
        let spam =
            parse(b"From: x@y.example\r\nSubject: Win\r\nX-Spam-Flag: YES\r\n\r\nx\r\n").unwrap();
        assert_eq!(
            rs.classify(&spam, &Facts::default()).action,
            RuleAction::Ignore
        );
    }
}
