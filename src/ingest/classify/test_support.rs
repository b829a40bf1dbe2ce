//! Mails, rules and texts the tests of the classifier share.

use super::{Facts, RuleSet};
use crate::ingest::alerts::{Alert, AlertSource, AlertState};
use crate::ingest::parse::{parse, ParsedMail};

pub(super) fn mail(subject: &str, body: &str) -> ParsedMail {
    let raw = format!(
        "From: kunde@firma.de\r\nTo: support@example.com\r\nSubject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    );
    parse(raw.as_bytes()).unwrap()
}

pub(super) fn sev(subject: &str, body: &str) -> Option<u8> {
    RuleSet::embedded()
        .unwrap()
        .classify(&mail(subject, body), &Facts::default())
        .severity
        .map(|s| s.level())
}

/// Pieces of text the rules care about, in every case, with the
/// characters that fold from outside ASCII.
pub(super) const PIECES: &[&str] = &[
    "ausgefallen",
    "AUSGEFALLEN",
    "Ausgefallen",
    "server",
    "SERVER",
    "Server",
    " ist ",
    " IST ",
    " down",
    " DOWN",
    "Störung",
    "STÖRUNG",
    "störung",
    "straße",
    "STRASSE",
    "STRAẞE",
    "\u{212A}omplett",
    "komplett",
    "KOMPLETT",
    "ſtillſtand",
    "Stillstand",
    "steht still",
    "STEHT STILL",
    "Prio 1 ",
    "prio1x",
    "sev 2 ",
    "Fehler",
    "FEHLER",
    "Problem",
    "drucker",
    "DRUCKER",
    "kein Ausfall",
    "Notfall",
    "NOTFALL",
    "Lösegeld",
    "verschlüsselt",
    "VERSCHLÜSSELT",
    "Trojaner",
    "ÄÖÜ",
    "äöü",
    "Å",
    "\u{212B}",
    "å",
    "frage",
    "Frage",
    "How do I",
    "HOW CAN WE",
    "isn't working",
    "ISN'T WORKING",
    "datenbank",
    "Datenbank ",
    "nicht erreichbar",
    "NICHT ERREICHBAR",
    "sehr langsam",
    "SEHR LANGSAM",
    "seit Montag",
    ". ",
    "\n",
    " ",
    "x",
    "SAP",
    "sap",
    "Kunde",
    "KUNDE",
    "_",
    "1",
    "9",
    "Produktivsystem",
    "backup",
    "Datensicherung",
    "fehlgeschlagen",
    " mit ein paar wirklich sehr langen Füllwörtern ohne jeden Punkt ",
    " und noch mehr Text ohne Satzende dazwischen ",
    "Live-Umgebung",
    "langsam",
];

pub(super) fn alert(host: &str, service: Option<&str>, state: AlertState) -> Alert {
    Alert {
        source: AlertSource::Zabbix,
        host: host.into(),
        service: service.map(str::to_string),
        state,
        kind: crate::ingest::alerts::AlertKind::Problem,
        event_id: None,
        summary: String::new(),
    }
}

pub(super) const DESK: &str = r#"
mode = "first"

[[rule]]
name = "premium-erp"
customer = ["stadtwerke"]
plan = ["premium"]
text = ["erp steht"]
severity = 1
queue = "erp"
tags = ["erp", "premium"]

[[rule]]
name = "invoices"
subject = ["rechnung"]
action = "route"
forward = ["account-manager", "billing@desk.example"]
reply = "not-support"
tags = ["billing"]

[[rule]]
name = "monitoring-box"
mailbox = ["monitoring"]
tags = ["via-monitoring"]

[[rule]]
name = "test-hosts"
action = "ignore"
[rule.alert]
host = ["^test-"]

[[rule]]
name = "db-critical"
severity = 1
queue = "dba"
[rule.alert]
source = ["zabbix"]
service = ["mysql|postgres"]
state = ["critical", "DOWN"]
"#;
