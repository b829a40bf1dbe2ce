//! Mail templates (minijinja). The defaults are compiled into the binary; a
//! configured directory overrides them file by file.

use minijinja::Environment;
use std::path::Path;

/// The template files every installation has, with their embedded text.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "confirmation.de.subject",
        include_str!("../../templates/confirmation.de.subject"),
    ),
    (
        "confirmation.de.txt",
        include_str!("../../templates/confirmation.de.txt"),
    ),
    (
        "confirmation.en.subject",
        include_str!("../../templates/confirmation.en.subject"),
    ),
    (
        "confirmation.en.txt",
        include_str!("../../templates/confirmation.en.txt"),
    ),
    (
        "registration.de.subject",
        include_str!("../../templates/registration.de.subject"),
    ),
    (
        "registration.de.txt",
        include_str!("../../templates/registration.de.txt"),
    ),
    (
        "registration.en.subject",
        include_str!("../../templates/registration.en.subject"),
    ),
    (
        "registration.en.txt",
        include_str!("../../templates/registration.en.txt"),
    ),
    (
        "over-quota.de.subject",
        include_str!("../../templates/over-quota.de.subject"),
    ),
    (
        "over-quota.de.txt",
        include_str!("../../templates/over-quota.de.txt"),
    ),
    (
        "over-quota.en.subject",
        include_str!("../../templates/over-quota.en.subject"),
    ),
    (
        "over-quota.en.txt",
        include_str!("../../templates/over-quota.en.txt"),
    ),
    (
        "new-ticket.de.subject",
        include_str!("../../templates/new-ticket.de.subject"),
    ),
    (
        "new-ticket.de.txt",
        include_str!("../../templates/new-ticket.de.txt"),
    ),
    (
        "new-ticket.en.subject",
        include_str!("../../templates/new-ticket.en.subject"),
    ),
    (
        "new-ticket.en.txt",
        include_str!("../../templates/new-ticket.en.txt"),
    ),
    (
        "status.de.subject",
        include_str!("../../templates/status.de.subject"),
    ),
    (
        "status.de.txt",
        include_str!("../../templates/status.de.txt"),
    ),
    (
        "status.en.subject",
        include_str!("../../templates/status.en.subject"),
    ),
    (
        "status.en.txt",
        include_str!("../../templates/status.en.txt"),
    ),
    (
        "forward.de.subject",
        include_str!("../../templates/forward.de.subject"),
    ),
    (
        "forward.de.txt",
        include_str!("../../templates/forward.de.txt"),
    ),
    (
        "forward.en.subject",
        include_str!("../../templates/forward.en.subject"),
    ),
    (
        "forward.en.txt",
        include_str!("../../templates/forward.en.txt"),
    ),
    (
        "not-support.de.subject",
        include_str!("../../templates/not-support.de.subject"),
    ),
    (
        "not-support.de.txt",
        include_str!("../../templates/not-support.de.txt"),
    ),
    (
        "not-support.en.subject",
        include_str!("../../templates/not-support.en.subject"),
    ),
    (
        "not-support.en.txt",
        include_str!("../../templates/not-support.en.txt"),
    ),
    (
        "reply.de.subject",
        include_str!("../../templates/reply.de.subject"),
    ),
    ("reply.de.txt", include_str!("../../templates/reply.de.txt")),
    (
        "reply.en.subject",
        include_str!("../../templates/reply.en.subject"),
    ),
    ("reply.en.txt", include_str!("../../templates/reply.en.txt")),
    (
        "reminder.de.subject",
        include_str!("../../templates/reminder.de.subject"),
    ),
    (
        "reminder.de.txt",
        include_str!("../../templates/reminder.de.txt"),
    ),
    (
        "reminder.en.subject",
        include_str!("../../templates/reminder.en.subject"),
    ),
    (
        "reminder.en.txt",
        include_str!("../../templates/reminder.en.txt"),
    ),
    (
        "digest.de.subject",
        include_str!("../../templates/digest.de.subject"),
    ),
    (
        "digest.de.txt",
        include_str!("../../templates/digest.de.txt"),
    ),
    (
        "digest.en.subject",
        include_str!("../../templates/digest.en.subject"),
    ),
    (
        "digest.en.txt",
        include_str!("../../templates/digest.en.txt"),
    ),
    (
        "digest-answer.de.subject",
        include_str!("../../templates/digest-answer.de.subject"),
    ),
    (
        "digest-answer.de.txt",
        include_str!("../../templates/digest-answer.de.txt"),
    ),
    (
        "digest-answer.en.subject",
        include_str!("../../templates/digest-answer.en.subject"),
    ),
    (
        "digest-answer.en.txt",
        include_str!("../../templates/digest-answer.en.txt"),
    ),
    (
        "grant-refused.de.subject",
        include_str!("../../templates/grant-refused.de.subject"),
    ),
    (
        "grant-refused.de.txt",
        include_str!("../../templates/grant-refused.de.txt"),
    ),
    (
        "grant-refused.en.subject",
        include_str!("../../templates/grant-refused.en.subject"),
    ),
    (
        "grant-refused.en.txt",
        include_str!("../../templates/grant-refused.en.txt"),
    ),
];

/// A template that cannot be loaded or rendered. The file is the override's
/// path, or the name with "(embedded)" for a compiled-in default.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The configured directory is missing or unreadable.
    #[error("templates.dir {0}: {1}")]
    Dir(String, std::io::Error),
    /// The override file could not be read.
    #[error("cannot read template {0}: {1}")]
    Read(String, std::io::Error),
    /// The template has a syntax error: file (and line), reason.
    #[error("{0}: {1}")]
    Syntax(String, String),
    /// Rendering failed (e.g. an unknown filter): file (and line), reason.
    #[error("rendering {0}: {1}")]
    Render(String, String),
}

/// The values every mail gives its templates (see
/// [`super::mail::confirmation`]), with a sample value each: the first for a
/// full mail, the second for a sparse one (no ticket, no name, empty text).
const COMMON: &[(&str, &str, &str)] = &[
    ("tag", "[Ticket#10001]", ""),
    ("ticket", "10001", ""),
    ("customer", "anna@kunde.example", ""),
    ("subject", "Drucker druckt nicht", ""),
    ("body", "Hallo,\nder Drucker druckt nicht.", ""),
    ("excerpt", "> Hallo,\n> der Drucker druckt nicht.", ""),
    ("received_at", "22.11.2026 22:15:01 MEZ", ""),
    ("severity_label", "Systemstörung", "Frage"),
    ("requester", "anna@kunde.example", ""),
    ("desk_name", "Support", "Support"),
];

/// The further values ("facts") each kind of mail gives its templates, by
/// the templates' base name, and those given only sometimes (`reply`:
/// `staff` for a staff member's mail relayed, none for `tickets reply`).
/// They are set in `ingest::decide` (notices) and `service::staff`
/// (reminders, digests); keep the lists in step. A base name not listed is
/// a route rule's answer (`reply = "NAME"`).
const KIND_FACTS: &[(&str, &[&str], &[&str])] = &[
    ("confirmation", &[], &[]),
    ("registration", &[], &[]),
    ("over-quota", &["organisation", "cases", "quota"], &[]),
    ("new-ticket", &[], &[]),
    ("status", &["status", "why"], &[]),
    ("forward", &["rule", "sender", "forwarded_to"], &[]),
    ("reply", &[], &["staff"]),
    (
        "reminder",
        &[
            "percent",
            "target",
            "amount",
            "due",
            "late",
            "policy",
            "customer",
            "requester",
        ],
        &[],
    ),
    (
        "digest",
        &["open", "running", "paused", "breached", "other", "late"],
        &[],
    ),
    ("digest-answer", &[], &[]),
    ("grant-refused", &["account", "name", "reason"], &[]),
];

/// The facts of a route rule's answer (`not-support` and any template of
/// the directory that is no other kind's).
const ANSWER_FACTS: &[&str] = &["rule", "sender", "forwarded_to"];

/// A sample value of fact `name`: full, or sparse (empty where a mail can
/// have it empty).
fn sample_fact(name: &str, full: bool) -> &'static str {
    match (name, full) {
        ("percent", true) => "80",
        ("percent", false) => "100",
        ("cases", _) | ("open", _) => "11",
        ("quota", _) | ("running", _) => "10",
        ("paused", _) | ("breached", _) | ("other", _) => "1",
        ("status", _) => "resolved",
        ("amount", _) => "4 h",
        ("late", true) => "planned for 2026-12-01 14:00 CET, sent 2026-12-01 15:00 CET",
        (_, false) => "",
        ("organisation", _) => "stadtwerke",
        ("why", _) => "recovery held 10 min",
        ("rule", _) => "billing",
        ("sender" | "forwarded_to" | "staff", _) => "someone@provider.example",
        ("target", _) => "Reaktionszeit",
        ("due", _) => "2026-12-01 14:00 CET",
        ("policy", _) => "standard/3",
        ("customer" | "requester", _) => "anna@kunde.example",
        _ => "x",
    }
}

/// The facts template `name` gets only for some mails of its kind.
fn sometimes_given(name: &str) -> &'static [&'static str] {
    let base = name.split('.').next().unwrap_or(name);
    KIND_FACTS
        .iter()
        .find(|(b, _, _)| *b == base)
        .map(|(_, _, s)| *s)
        .unwrap_or(&[])
}

/// The sample contexts template `name` (`BASE.LANG.PART`) is checked
/// with: a full mail with every fact its kind may have, and a sparse one
/// with only the facts it always has, mostly empty.
fn samples(name: &str) -> [serde_json::Value; 2] {
    let base = name.split('.').next().unwrap_or(name);
    let always = KIND_FACTS
        .iter()
        .find(|(b, _, _)| *b == base)
        .map(|(_, a, _)| *a)
        .unwrap_or(ANSWER_FACTS);
    let sometimes = sometimes_given(name);
    let build = |full: bool| {
        let mut m = serde_json::Map::new();
        for (k, f, s) in COMMON {
            m.insert(k.to_string(), (if full { *f } else { *s }).into());
        }
        m.insert("severity".into(), (if full { 3 } else { 4 }).into());
        m.insert(
            "requester_name".into(),
            if full {
                "Anna Beispiel".into()
            } else {
                serde_json::Value::Null
            },
        );
        let facts = always.iter().chain(sometimes.iter().filter(|_| full));
        for f in facts {
            m.insert(f.to_string(), sample_fact(f, full).into());
        }
        serde_json::Value::Object(m)
    };
    [build(true), build(false)]
}

/// The loaded templates.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    /// Each template's file, for error messages.
    origin: std::collections::HashMap<String, String>,
}

impl Templates {
    /// The embedded templates, overridden by files of the same name in
    /// `dir`, and the further templates of `dir` (`NAME.LANG.subject`,
    /// `NAME.LANG.txt`: a route rule's `reply = "NAME"`, or another
    /// language of a kind). Every template is rendered with sample values
    /// of its kind, so an unknown filter or variable is an error here, not
    /// a missing mail later. A configured `dir` must exist.
    pub fn load(dir: Option<&Path>) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let mut origin = std::collections::HashMap::new();
        let mut extra: Vec<(String, std::path::PathBuf)> = Vec::new();
        if let Some(dir) = dir {
            let entries = std::fs::read_dir(dir)
                .map_err(|e| TemplateError::Dir(dir.display().to_string(), e))?;
            extra = entries
                .filter_map(Result::ok)
                .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
                .filter(|(n, _)| {
                    (n.ends_with(".subject") || n.ends_with(".txt")) && !n.starts_with('.')
                })
                .collect();
            extra.sort();
        }
        for (name, text) in EMBEDDED {
            let (file, source) = match extra.iter().position(|(n, _)| n == name) {
                Some(i) => {
                    let (_, p) = extra.remove(i);
                    let source = std::fs::read_to_string(&p)
                        .map_err(|e| TemplateError::Read(p.display().to_string(), e))?;
                    (p.display().to_string(), source)
                }
                None => (format!("{name} (embedded)"), text.to_string()),
            };
            env.add_template_owned(name.to_string(), source)
                .map_err(|e| TemplateError::Syntax(located(&file, &e), reason(&e)))?;
            origin.insert(name.to_string(), file);
        }
        for (name, path) in extra {
            let file = path.display().to_string();
            let source =
                std::fs::read_to_string(&path).map_err(|e| TemplateError::Read(file.clone(), e))?;
            env.add_template_owned(name.clone(), source)
                .map_err(|e| TemplateError::Syntax(located(&file, &e), reason(&e)))?;
            origin.insert(name, file);
        }
        let t = Templates { env, origin };
        t.check()?;
        Ok(t)
    }

    /// Renders every template with the sample values of its kind.
    fn check(&self) -> Result<(), TemplateError> {
        let mut names: Vec<&String> = self.origin.keys().collect();
        names.sort();
        for name in names {
            for ctx in samples(name) {
                self.render(name, &ctx).map_err(|e| match e {
                    TemplateError::Render(at, why) => {
                        let given: Vec<&str> = ctx
                            .as_object()
                            .map(|m| m.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        let sometimes = sometimes_given(name);
                        let sometimes = if sometimes.is_empty() {
                            String::new()
                        } else {
                            format!(
                                "; only sometimes: {} (test with `is defined`)",
                                sometimes.join(", ")
                            )
                        };
                        TemplateError::Render(
                            at,
                            format!(
                                "{why} (this template gets: {}{sometimes})",
                                given.join(", ")
                            ),
                        )
                    }
                    e => e,
                })?;
            }
        }
        Ok(())
    }

    /// Whether template `name` (e.g. `billing.de.txt`) exists.
    pub fn has(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }

    /// Renders template `name` with `ctx`.
    pub fn render(&self, name: &str, ctx: &serde_json::Value) -> Result<String, TemplateError> {
        let failed = |e: minijinja::Error| {
            // The error may lie in a template this one includes.
            let at = e.name().unwrap_or(name);
            let file = self.origin.get(at).map(String::as_str).unwrap_or(at);
            TemplateError::Render(located(file, &e), reason(&e))
        };
        let t = self.env.get_template(name).map_err(failed)?;
        t.render(minijinja::value::Serde(ctx)).map_err(failed)
    }
}

/// `FILE:LINE` where minijinja knows the line, else `FILE`.
fn located(file: &str, e: &minijinja::Error) -> String {
    match e.line() {
        Some(l) if l > 0 => format!("{file}:{l}"),
        _ => file.to_string(),
    }
}

/// What is wrong, without minijinja's own "(in NAME:LINE)".
fn reason(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_templates_render() {
        let t = Templates::load(None).unwrap();
        let ctx = serde_json::json!({
            "tag": "[Ticket#10001]", "ticket": "10001", "subject": "Drucker",
            "received_at": "22.11.2026 22:15:01 MEZ", "severity": 3,
            "severity_label": "Systemstörung", "excerpt": "> Hallo",
            "requester_name": "Anna", "desk_name": "Support",
        });
        for lang in ["de", "en"] {
            let s = t
                .render(&format!("confirmation.{lang}.subject"), &ctx)
                .unwrap();
            assert!(s.contains("[Ticket#10001]"));
            let b = t.render(&format!("confirmation.{lang}.txt"), &ctx).unwrap();
            assert!(b.contains("10001") && b.contains("22.11.2026"));
        }
    }

    /// Loads the embedded templates with `files` in a directory of
    /// overrides; the error message, if any.
    fn load_with(files: &[(&str, &str)]) -> Result<Templates, String> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        Templates::load(Some(dir.path())).map_err(|e| e.to_string())
    }

    #[test]
    fn every_template_is_rendered_at_load() {
        // An unknown filter: minijinja finds it only when rendering.
        let e = load_with(&[(
            "confirmation.de.txt",
            "Guten Tag,\n\nTicket {{ ticket|bogus }}\n",
        )])
        .unwrap_err();
        assert!(
            e.contains("confirmation.de.txt:3:") && e.contains("bogus"),
            "{e}"
        );
        assert!(
            e.contains(std::path::MAIN_SEPARATOR),
            "the file's path: {e}"
        );
        // A value the kind does not give (strict undefined).
        let e =
            load_with(&[("over-quota.en.txt", "{{ organisation }} {{ invoice }}")]).unwrap_err();
        assert!(e.contains("over-quota.en.txt:1:"), "{e}");
        assert!(e.contains("undefined"), "{e}");
        // Only in a branch a sparse mail takes (no requester name).
        let e = load_with(&[(
            "registration.en.txt",
            "{% if requester_name %}Hi {{ requester_name }}{% else %}{{ 1 + subject }}{% endif %}",
        )])
        .unwrap_err();
        assert!(e.contains("registration.en.txt:1:"), "{e}");
        // `staff` is there for a relayed mail, not for `tickets reply`.
        let e = load_with(&[("reply.de.txt", "{{ body }}\n{{ staff }}")]).unwrap_err();
        assert!(e.contains("reply.de.txt:2:"), "{e}");
        assert!(load_with(&[(
            "reply.de.txt",
            "{{ body }}{% if staff is defined %} {{ staff }}{% endif %}"
        )])
        .is_ok());
    }

    #[test]
    fn route_answers_and_kinds_get_their_own_values() {
        let t = load_with(&[
            ("billing.de.subject", "Ihre Rechnung: {{ subject }}"),
            (
                "billing.de.txt",
                "Regel {{ rule }}, weitergeleitet an {{ forwarded_to }}",
            ),
            ("reminder.fr.txt", "{{ percent }} % de {{ target }}"),
        ])
        .unwrap();
        assert!(t.has("billing.de.txt") && t.has("reminder.fr.txt"));
        let e = load_with(&[("billing.de.txt", "{{ quota }}")]).unwrap_err();
        assert!(e.contains("billing.de.txt:1:"), "{e}");
    }

    #[test]
    fn a_configured_directory_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("templates");
        let e = Templates::load(Some(&missing)).unwrap_err().to_string();
        assert!(
            e.contains(&missing.display().to_string()) && e.contains("No such file"),
            "{e}"
        );
    }

    #[test]
    fn override_with_syntax_error_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("confirmation.de.txt"), "{% if %}").unwrap();
        let e = Templates::load(Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("confirmation.de.txt"), "{e}");
    }
}
