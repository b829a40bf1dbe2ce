//! A message against the rules: each field's set run at most once, the
//! deciding rule of each group picked by its mode.

use super::rule::{listed, Rule};
use super::{alert_source_name, alert_state_name, own_text, truncate};
use super::{Classification, Facts, Mode, RuleSet, BODY_SCAN_LIMIT};
use crate::ingest::alerts::Alert;
use crate::ingest::parse::ParsedMail;
use std::cell::OnceCell;

impl RuleSet {
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
pub(super) struct Scan<'a> {
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
    pub(super) fn new(rules: &'a RuleSet, mail: &'a ParsedMail, facts: &Facts<'a>) -> Scan<'a> {
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
    pub(super) fn holds(&self, r: &Rule) -> bool {
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
#[cfg(test)]
mod tests {
    use super::super::test_support::{alert, mail, sev, DESK};
    use super::*;
    use crate::domain::Severity;
    use crate::ingest::alerts::AlertState;
    use crate::ingest::classify::RuleAction;
    use crate::ingest::parse::parse;

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
