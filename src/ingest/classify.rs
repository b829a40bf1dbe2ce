//! Stage 5: severity by rules.
//!
//! Rules live in TOML files (`rules/*.toml`, embedded defaults compiled into
//! the binary). A file is a group with a `mode`: `first` (the first matching
//! rule decides) or `highest` (the most severe matching rule decides). Groups
//! are tried in file-name order; the first group with a match decides. All
//! patterns of one field across all rules are compiled into one `RegexSet`,
//! so a message is scanned once per field however many rules there are.
//!
//! A rule lists conditions; every listed field must match (AND), any one
//! pattern of a field is enough (OR), and no `unless` pattern may match.

use super::parse::ParsedMail;
use crate::domain::Severity;
use regex::{Regex, RegexSet, RegexSetBuilder};
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// Only this much of a body is read by the rules: enough for any real
/// problem report, bounded for a pasted log file.
pub const BODY_SCAN_LIMIT: usize = 64 * 1024;

/// A rule file that cannot be used: file, line and reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
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
    severity: Spanned<i64>,
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
    severity: Severity,
    subject: Vec<usize>,
    body: Vec<usize>,
    /// Patterns over subject or body: (index in subject set, index in body set).
    text: Vec<(usize, usize)>,
    from: Vec<usize>,
    to: Vec<usize>,
    header: Vec<(String, Vec<usize>)>,
    unless: Vec<(usize, usize)>,
}

#[derive(Debug, Clone)]
struct Group {
    file: String,
    mode: Mode,
    rules: Vec<Rule>,
}

/// A pattern collection for one field; compiled into one set.
#[derive(Debug, Default, Clone)]
struct PatternList {
    patterns: Vec<String>,
}

impl PatternList {
    fn push(&mut self, p: String) -> usize {
        self.patterns.push(p);
        self.patterns.len() - 1
    }
}

/// The compiled rules.
#[derive(Debug, Clone)]
pub struct RuleSet {
    groups: Vec<Group>,
    subject: RegexSet,
    body: RegexSet,
    from: RegexSet,
    to: RegexSet,
    header: RegexSet,
    sources: Sources,
}

/// The pattern texts, kept to explain a decision.
#[derive(Debug, Clone, Default)]
struct Sources {
    subject: Vec<String>,
    body: Vec<String>,
    from: Vec<String>,
    to: Vec<String>,
    header: Vec<String>,
}

/// What the rules said about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// The deciding severity; `None` when no rule matched.
    pub severity: Option<Severity>,
    /// The deciding rule's name.
    pub rule: Option<String>,
    /// Every matching rule, `file:line name (severity)`, in evaluation order.
    pub matched: Vec<String>,
}

/// The default rules compiled into the binary: (file name, text).
pub const EMBEDDED: &[(&str, &str)] =
    &[("severity.toml", include_str!("../../rules/severity.toml"))];

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
        let mut lists: [PatternList; 5] = Default::default();
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
            let mut add = |field: usize, p: &Spanned<String>| -> Result<usize, RuleError> {
                let pat = format!("{flags}{}", p.get_ref());
                regex_syntax::ParserBuilder::new()
                    .build()
                    .parse(&pat)
                    .map_err(|e| {
                        err(
                            p.span(),
                            format!(
                                "invalid regular expression {:?}: {}",
                                p.get_ref(),
                                e.to_string().lines().last().unwrap_or("")
                            ),
                        )
                    })?;
                Ok(lists[field].push(pat))
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
                let severity = Severity::try_from(*r.severity.get_ref())
                    .map_err(|e| err(r.severity.span(), e))?;
                let mut rule = Rule {
                    name,
                    description: r.description.clone(),
                    file: file.clone(),
                    line: line(rspan.clone()),
                    severity,
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
                    rule.body.push(add(1, p)?);
                }
                for p in &r.text {
                    rule.text.push((add(0, p)?, add(1, p)?));
                }
                for p in &r.from {
                    rule.from.push(add(2, p)?);
                }
                for p in &r.to {
                    rule.to.push(add(3, p)?);
                }
                for (h, ps) in &r.header {
                    let mut idx = Vec::new();
                    for p in ps {
                        idx.push(add(4, p)?);
                    }
                    rule.header.push((h.to_ascii_lowercase(), idx));
                }
                for p in &r.unless {
                    rule.unless.push((add(0, p)?, add(1, p)?));
                }
                if rule.subject.is_empty()
                    && rule.body.is_empty()
                    && rule.text.is_empty()
                    && rule.from.is_empty()
                    && rule.to.is_empty()
                    && rule.header.is_empty()
                {
                    return Err(err(
                        rspan,
                        format!(
                            "rule {:?} has no condition (subject, body, text, from, to or header)",
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
        let build = |l: &PatternList| -> Result<RegexSet, RuleError> {
            RegexSetBuilder::new(&l.patterns)
                .size_limit(64 << 20)
                .dfa_size_limit(16 << 20)
                .build()
                .map_err(|e| RuleError {
                    file: files
                        .iter()
                        .map(|(f, _)| f.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    line: 0,
                    reason: format!("rules cannot be compiled together: {e}"),
                })
        };
        let [s, b, f, t, h] = &lists;
        Ok(RuleSet {
            groups,
            subject: build(s)?,
            body: build(b)?,
            from: build(f)?,
            to: build(t)?,
            header: build(h)?,
            sources: Sources {
                subject: s.patterns.clone(),
                body: b.patterns.clone(),
                from: f.patterns.clone(),
                to: t.patterns.clone(),
                header: h.patterns.clone(),
            },
        })
    }

    /// Number of rules over all groups.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.rules.len()).sum()
    }

    /// True when there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Classifies a message. `recipients` are the addresses it was sent to.
    pub fn classify(&self, mail: &ParsedMail) -> Classification {
        let body = truncate(&mail.body, BODY_SCAN_LIMIT);
        let subj = self.subject.matches(&mail.subject);
        let bod = self.body.matches(body);
        let from = mail.from.as_ref().map(|m| m.address.as_str()).unwrap_or("");
        let frm = self.from.matches(from);
        let mut to_hits = vec![false; self.to.len()];
        for rcpt in mail.to.iter().chain(mail.cc.iter()) {
            for i in self.to.matches(&rcpt.address).iter() {
                to_hits[i] = true;
            }
        }
        let mut out = Classification {
            severity: None,
            rule: None,
            matched: Vec::new(),
        };
        // Header patterns are few; evaluate them lazily per rule.
        let header_match = |name: &str, idx: &[usize]| -> bool {
            mail.headers
                .iter()
                .filter(|(n, _)| n == name)
                .any(|(_, v)| {
                    let m = self.header.matches(v);
                    idx.iter().any(|&i| m.matched(i))
                })
        };
        for g in &self.groups {
            let mut best: Option<&Rule> = None;
            for r in &g.rules {
                let ok = (r.subject.is_empty() || r.subject.iter().any(|&i| subj.matched(i)))
                    && (r.body.is_empty() || r.body.iter().any(|&i| bod.matched(i)))
                    && (r.text.is_empty()
                        || r.text
                            .iter()
                            .any(|&(s, b)| subj.matched(s) || bod.matched(b)))
                    && (r.from.is_empty() || r.from.iter().any(|&i| frm.matched(i)))
                    && (r.to.is_empty() || r.to.iter().any(|&i| to_hits[i]))
                    && r.header.iter().all(|(h, idx)| header_match(h, idx))
                    && !r
                        .unless
                        .iter()
                        .any(|&(s, b)| subj.matched(s) || bod.matched(b));
                if !ok {
                    continue;
                }
                out.matched.push(format!(
                    "{}:{} {} (severity {})",
                    r.file,
                    r.line,
                    r.name,
                    r.severity.level()
                ));
                match (g.mode, best) {
                    (Mode::First, None) => best = Some(r),
                    (Mode::Highest, None) => best = Some(r),
                    (Mode::Highest, Some(b)) if r.severity < b.severity => best = Some(r),
                    _ => {}
                }
            }
            if let Some(b) = best {
                if out.rule.is_none() {
                    out.severity = Some(b.severity);
                    out.rule = Some(b.name.clone());
                }
            }
        }
        out
    }

    /// A human explanation of how a message was classified: each group, each
    /// matching rule, and the text each of its patterns matched.
    pub fn explain(&self, mail: &ParsedMail, default: Severity) -> String {
        use std::fmt::Write;
        let c = self.classify(mail);
        let mut s = String::new();
        let _ = writeln!(s, "subject: {}", mail.subject);
        let _ = writeln!(
            s,
            "from:    {}",
            mail.from.as_ref().map(|m| m.address.as_str()).unwrap_or("")
        );
        let body = truncate(&mail.body, BODY_SCAN_LIMIT);
        for g in &self.groups {
            let _ = writeln!(
                s,
                "\nrule file {} (mode {}, {} rules)",
                g.file,
                if g.mode == Mode::First {
                    "first"
                } else {
                    "highest"
                },
                g.rules.len()
            );
            for r in &g.rules {
                let hits = self.rule_hits(r, mail, body);
                if hits.is_empty() {
                    continue;
                }
                let decided = c.rule.as_deref() == Some(r.name.as_str())
                    && c.matched
                        .iter()
                        .any(|m| m.starts_with(&format!("{}:{} ", r.file, r.line)));
                let matched = c.matched.iter().any(|m| {
                    m == &format!(
                        "{}:{} {} (severity {})",
                        r.file,
                        r.line,
                        r.name,
                        r.severity.level()
                    )
                });
                let _ = writeln!(
                    s,
                    "  {} {}:{} {} → severity {}{}",
                    if decided {
                        "=>"
                    } else if matched {
                        " +"
                    } else {
                        " -"
                    },
                    r.file,
                    r.line,
                    r.name,
                    r.severity.level(),
                    r.description
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                );
                if !matched {
                    let _ = writeln!(
                        s,
                        "      (some patterns matched, but not every condition held)"
                    );
                }
                for h in hits {
                    let _ = writeln!(s, "      {h}");
                }
            }
        }
        match (&c.rule, c.severity) {
            (Some(rule), Some(sev)) => {
                let _ = writeln!(
                    s,
                    "\ndecision: severity {} ({}) by rule {rule}",
                    sev.level(),
                    sev.label_en()
                );
            }
            _ => {
                let _ = writeln!(
                    s,
                    "\ndecision: no rule matched; default severity {} ({})",
                    default.level(),
                    default.label_en()
                );
            }
        }
        s
    }

    /// The pattern matches of one rule, for `explain`; compiles the few
    /// patterns involved one by one (only ever on demand).
    fn rule_hits(&self, r: &Rule, mail: &ParsedMail, body: &str) -> Vec<String> {
        let mut out = Vec::new();
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
            probe("subject", &self.sources.subject[i], &mail.subject);
        }
        for &i in &r.body {
            probe("body", &self.sources.body[i], body);
        }
        for &(si, bi) in &r.text {
            probe("subject", &self.sources.subject[si], &mail.subject);
            probe("body", &self.sources.body[bi], body);
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
        for &(si, bi) in &r.unless {
            probe("unless/subject", &self.sources.subject[si], &mail.subject);
            probe("unless/body", &self.sources.body[bi], body);
        }
        out
    }
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
            .classify(&mail(subject, body))
            .severity
            .map(|s| s.level())
    }

    #[test]
    fn embedded_rules_compile() {
        let r = RuleSet::embedded().unwrap();
        assert!(r.len() >= 8);
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
        assert_eq!(first.classify(&m).rule.as_deref(), Some("low"));
        let highest = RuleSet::compile(&[("a.toml".into(), text("highest"))]).unwrap();
        assert_eq!(highest.classify(&m).rule.as_deref(), Some("high"));
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
    fn unless_and_header_conditions() {
        let t = "[[rule]]\nname = \"prio\"\nseverity = 2\nheader = { \"X-Priority\" = [\"^1\"] }\nunless = [\"test\"]\n";
        let rs = RuleSet::compile(&[("h.toml".into(), t.into())]).unwrap();
        let raw = b"From: a@b.de\r\nX-Priority: 1 (Highest)\r\nSubject: hallo\r\n\r\nx\r\n";
        assert_eq!(
            rs.classify(&parse(raw).unwrap()).severity,
            Some(Severity::Production)
        );
        let raw = b"From: a@b.de\r\nX-Priority: 1 (Highest)\r\nSubject: nur ein test\r\n\r\nx\r\n";
        assert_eq!(rs.classify(&parse(raw).unwrap()).severity, None);
    }
}
