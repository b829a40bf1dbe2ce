//! Rule files → [`RuleSet`]: reads each file, checks every rule (errors
//! name the file and line) and collects the patterns of each field into
//! its set.

use super::patterns::{FieldSet, PatternList};
use super::rule::{AlertCond, Group, Rule};
use super::schema::{FileSpec, RuleSpec};
use super::{Mode, RuleAction, RuleError, RuleSet, Sources, ACCOUNT_MANAGER, EMBEDDED};
use crate::domain::Severity;
use crate::ingest::alerts::AlertState;
use regex::{Regex, RegexBuilder};
use toml::Spanned;

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
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_rules_compile() {
        let r = RuleSet::embedded().unwrap();
        assert!(r.len() >= 8);
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
}
