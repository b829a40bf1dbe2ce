//! One compiled rule: its settings, its facts and the indices of its
//! patterns in the field sets; and the group (rule file) it belongs to.

use super::{Mode, RuleAction};
use crate::domain::Severity;
use regex::Regex;

/// The alert conditions of a rule.
#[derive(Debug, Clone, Default)]
pub(super) struct AlertCond {
    pub(super) source: Vec<String>,
    pub(super) state: Vec<String>,
    pub(super) host: Vec<Regex>,
    pub(super) service: Vec<Regex>,
}

/// Whether `value` (lower case) is in `list`; with `any`, `*` in the list
/// takes every value.
pub(super) fn listed(list: &[String], value: Option<&str>, any: bool) -> bool {
    value.is_some_and(|v| list.iter().any(|x| x == v || (any && x == "*")))
}

impl AlertCond {
    pub(super) fn host_holds(&self, host: &str) -> bool {
        self.host.iter().any(|re| re.is_match(host))
    }

    /// A host alert (no service) never matches a service condition.
    pub(super) fn service_holds(&self, service: Option<&str>) -> bool {
        service.is_some_and(|s| self.service.iter().any(|re| re.is_match(s)))
    }
}

/// One compiled rule: indices into the field sets.
#[derive(Debug, Clone)]
pub(super) struct Rule {
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) file: String,
    pub(super) line: usize,
    pub(super) severity: Option<Severity>,
    pub(super) action: Option<RuleAction>,
    pub(super) queue: Option<String>,
    pub(super) tags: Vec<String>,
    /// Organisation ids (lower case); `*`: any registered one.
    pub(super) customer: Vec<String>,
    /// Plan names (lower case).
    pub(super) plan: Vec<String>,
    /// Mailbox names (lower case).
    pub(super) mailbox: Vec<String>,
    /// Set: the rule applies to monitoring alerts only.
    pub(super) alert: Option<AlertCond>,
    /// Indices into the content set, matched against the subject.
    pub(super) subject: Vec<usize>,
    /// Indices into the content set, matched against the body.
    pub(super) body: Vec<usize>,
    /// Indices into the content set, matched against subject or body.
    pub(super) text: Vec<usize>,
    pub(super) from: Vec<usize>,
    pub(super) to: Vec<usize>,
    pub(super) header: Vec<(String, Vec<usize>)>,
    /// Indices into the content set, matched against subject or body.
    pub(super) unless: Vec<usize>,
}

#[derive(Debug, Clone)]
pub(super) struct Group {
    pub(super) file: String,
    pub(super) mode: Mode,
    pub(super) rules: Vec<Rule>,
}

impl Rule {
    /// `file:line name (what it sets)`, as listed in [`Classification::matched`](super::Classification::matched).
    pub(super) fn label(&self) -> String {
        format!(
            "{}:{} {} ({})",
            self.file,
            self.line,
            self.name,
            self.settings()
        )
    }

    /// What the rule sets, e.g. `severity 1, queue erp, tags erp`.
    pub(super) fn settings(&self) -> String {
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
