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
];

/// A template that cannot be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The override file could not be read.
    #[error("cannot read template {0}: {1}")]
    Read(String, std::io::Error),
    /// The template has a syntax error.
    #[error("template {0}: {1}")]
    Syntax(String, String),
    /// Rendering failed (e.g. an undefined filter).
    #[error("rendering {0}: {1}")]
    Render(String, String),
}

/// The loaded templates.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The embedded templates, overridden by files of the same name in
    /// `dir`, and the further templates of `dir` (`NAME.LANG.subject`,
    /// `NAME.LANG.txt`: a route rule's `reply = "NAME"`).
    pub fn load(dir: Option<&Path>) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, text) in EMBEDDED {
            let source = match dir.map(|d| d.join(name)) {
                Some(p) if p.exists() => std::fs::read_to_string(&p)
                    .map_err(|e| TemplateError::Read(p.display().to_string(), e))?,
                _ => text.to_string(),
            };
            env.add_template_owned(name.to_string(), source)
                .map_err(|e| TemplateError::Syntax(name.to_string(), detail(&e)))?;
        }
        if let Some(dir) = dir {
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Templates { env }),
                Err(e) => return Err(TemplateError::Read(dir.display().to_string(), e)),
            };
            let mut extra: Vec<(String, std::path::PathBuf)> = entries
                .filter_map(Result::ok)
                .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
                .filter(|(n, _)| {
                    (n.ends_with(".subject") || n.ends_with(".txt"))
                        && !n.starts_with('.')
                        && !EMBEDDED.iter().any(|(e, _)| e == n)
                })
                .collect();
            extra.sort();
            for (name, path) in extra {
                let source = std::fs::read_to_string(&path)
                    .map_err(|e| TemplateError::Read(path.display().to_string(), e))?;
                env.add_template_owned(name.clone(), source)
                    .map_err(|e| TemplateError::Syntax(name, detail(&e)))?;
            }
        }
        Ok(Templates { env })
    }

    /// Whether template `name` (e.g. `billing.de.txt`) exists.
    pub fn has(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }

    /// Renders template `name` with `ctx`.
    pub fn render(&self, name: &str, ctx: &serde_json::Value) -> Result<String, TemplateError> {
        let t = self
            .env
            .get_template(name)
            .map_err(|e| TemplateError::Render(name.to_string(), detail(&e)))?;
        t.render(minijinja::value::Serde(ctx))
            .map_err(|e| TemplateError::Render(name.to_string(), detail(&e)))
    }
}

fn detail(e: &minijinja::Error) -> String {
    match e.line() {
        Some(l) => format!("line {l}: {e}"),
        None => e.to_string(),
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

    #[test]
    fn override_with_syntax_error_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("confirmation.de.txt"), "{% if %}").unwrap();
        let e = Templates::load(Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("confirmation.de.txt"), "{e}");
    }
}
