//! `ticketd classify [--explain] FILE`: the severity, action, queue and
//! tags the rules give a message, and with `--explain` why.

use super::{customers_dir, unusable};
use anyhow::{anyhow, Context};
use std::path::Path;
use std::process::ExitCode;
use ticketd::config::Config;
use ticketd::keys::MacKey;
use ticketd::service::{DataDir, Intake};

/// `ticketd classify`.
pub async fn classify(
    cfg: &Config,
    data_dir: &Path,
    explain: bool,
    mailbox: Option<String>,
    file: &Path,
) -> anyhow::Result<ExitCode> {
    let raw = ticketd::sources::read_file(file, cfg.intake.max_message_bytes)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let mail = ticketd::ingest::parse::parse(&raw)
        .map_err(|e| anyhow!("{}: cannot be parsed: {e}", file.display()))?;
    let data = DataDir {
        root: data_dir.to_path_buf(),
    };
    let key = MacKey(vec![0; 32]);
    let intake = Intake::new(cfg, key)
        .with_customers(customers_dir(cfg, &data.root))
        .map_err(|e| unusable(format!("customers: {e}")))?;
    let rules = intake
        .rules()
        .map_err(|e| unusable(format!("rules: {e}")))?;
    let directory = intake.customers();
    let (alert, org) = intake.context(&directory, &mail);
    let facts = ticketd::ingest::classify::Facts {
        customer: org.map(|o| o.id.as_str()),
        plan: org.and_then(|o| o.plan.as_deref()),
        mailbox: mailbox.as_deref(),
        alert: alert.as_ref(),
    };
    if explain {
        print!(
            "{}",
            rules.explain(&mail, &facts, intake.default_severity())
        );
    } else {
        let c = rules.classify(&mail, &facts);
        let sev = match (c.severity, &alert) {
            (Some(s), _) => format!("severity {} ({})", s.level(), s.label_en()),
            (None, Some(_)) => "severity by the alert's state".into(),
            (None, None) => {
                let s = intake.default_severity();
                format!("severity {} ({})", s.level(), s.label_en())
            }
        };
        let mut line = format!(
            "{sev} — {}; action {}",
            c.rule
                .map(|r| format!("rule {r}"))
                .unwrap_or_else(|| "default".into()),
            c.action.describe()
        );
        if let Some(q) = &c.queue {
            line.push_str(&format!("; queue {q}"));
        }
        if !c.tags.is_empty() {
            line.push_str(&format!("; tags {}", c.tags.join(", ")));
        }
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
