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
//!
//! Files, one idea each:
//! - `mod.rs`: the public API: [`RuleSet`], [`Facts`], [`Classification`],
//!   [`RuleAction`], [`RuleError`], the embedded default rules.
//! - `schema.rs`: the rule file as written (the TOML structures).
//! - `compile.rs`: rule files → [`RuleSet`], with errors naming file and line.
//! - `rule.rs`: one compiled rule and its group.
//! - `patterns.rs`: one field's patterns compiled into regex sets (folded,
//!   plain, guards, the steady-state set).
//! - `fold.rs`: Unicode case folding of the text and of the patterns.
//! - `matching.rs`: [`RuleSet::classify`]: a message against the rules.
//! - `explain.rs`: [`RuleSet::explain`]: why the rules decided as they did.
//! - `text.rs`: what of a body the rules read ([`own_text`], [`truncate`]).
//! - `test_support.rs` (tests only): the mails and rules the tests share.

mod compile;
mod explain;
mod fold;
mod matching;
mod patterns;
mod rule;
mod schema;
#[cfg(test)]
mod test_support;
mod text;

pub use fold::{fold_pattern, fold_text};
pub use text::{own_text, truncate};

use super::alerts::{Alert, AlertSource};
use crate::domain::Severity;
use patterns::FieldSet;
use rule::Group;

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

/// How a group picks among its matching rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The first matching rule in file order decides.
    First,
    /// The most severe matching rule decides (ties: the first).
    Highest,
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
        include_str!("../../../rules/acknowledgement.toml"),
    ),
    ("routing.toml", include_str!("../../../rules/routing.toml")),
    (
        "severity.toml",
        include_str!("../../../rules/severity.toml"),
    ),
];

impl RuleSet {
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
}
