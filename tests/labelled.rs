//! The labelled set: realistic German and English support mails
//! (`tests/fixtures/labelled/*.eml`) with the severity and action a support
//! desk would give them (`labels.tsv`; where a desk would accept more than
//! one severity they are listed as `2|3`), run through `ticketd ingest` with
//! the embedded default rules, the set's per-customer overrides
//! (`rules/10-customers.toml`) and its customer directory. Reports the
//! accuracy and fails below 100 %.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ticketd");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/labelled")
}

#[derive(Debug)]
struct Label {
    file: String,
    /// The severities a desk would accept (empty for route/ignore).
    severities: Vec<i64>,
    action: String,
    note: String,
}

fn labels() -> Vec<Label> {
    let text = std::fs::read_to_string(fixtures().join("labels.tsv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "labels.tsv: {l}");
            Label {
                file: f[0].to_string(),
                severities: f[1].split('|').filter_map(|s| s.parse().ok()).collect(),
                action: f[2].to_string(),
                note: f[3].to_string(),
            }
        })
        .collect()
}

#[test]
fn labelled_set_is_classified_as_labelled() {
    let labels = labels();
    assert!(labels.len() >= 150, "the set needs at least 150 mails");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ticketd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[desk]\naddresses = [\"support@desk.example\"]\n\
             [rules]\ndir = {:?}\ndefaults = true\n\
             [customers]\ndir = {:?}\ndefault_account_manager = \"vertrieb@desk.example\"\n",
            fixtures().join("rules"),
            fixtures().join("customers"),
        ),
    )
    .unwrap();
    let files: Vec<PathBuf> = labels.iter().map(|l| fixtures().join(&l.file)).collect();
    let out = Command::new(BIN)
        .env_remove("TICKETD_CONFIG")
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("ingest")
        .arg("--direct")
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), labels.len());
    let mut wrong = Vec::new();
    for (l, r) in labels.iter().zip(&results) {
        let action = match r["action"].as_str().unwrap_or("") {
            "created" => "ticket",
            "routed" => "route",
            "ignored" => "ignore",
            other => other,
        };
        let severity = r["severity"].as_i64();
        let ok = action == l.action
            && (l.action != "ticket" || severity.is_some_and(|s| l.severities.contains(&s)));
        if !ok {
            wrong.push(format!(
                "  {}: expected {} {:?}, got {} {:?} ({})\n      label note: {}",
                l.file,
                l.action,
                l.severities,
                action,
                severity,
                r["reason"].as_str().unwrap_or(""),
                l.note
            ));
        }
    }
    let right = labels.len() - wrong.len();
    println!(
        "labelled set: {right}/{} correct ({:.1} %)",
        labels.len(),
        100.0 * right as f64 / labels.len() as f64
    );
    assert!(
        wrong.is_empty(),
        "{} of {} mails misclassified:\n{}",
        wrong.len(),
        labels.len(),
        wrong.join("\n")
    );
}
