//! [`RuleSet::explain`]: the facts, every rule that applies with what each
//! of its conditions matched, and which rule decided what.

use super::matching::Scan;
use super::rule::{listed, Rule};
use super::{alert_source_name, alert_state_name, own_text, truncate};
use super::{Facts, Mode, RuleSet, BODY_SCAN_LIMIT};
use crate::domain::Severity;
use crate::ingest::parse::ParsedMail;
use regex::Regex;

impl RuleSet {
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
    use super::super::test_support::{mail, DESK};
    use super::*;

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
}
