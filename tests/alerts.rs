//! The monitoring alert parsers against hand-written fixtures in each
//! system's default format (`tests/fixtures/alerts/<system>/`), against the
//! real-world corpus (`../shared/corpus` or `$TICKETD_CORPUS`, skipped when
//! absent), and against arbitrary text (never a panic).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use ticketd::ingest::alerts::{parse_alert, Alert, AlertKind, AlertSource, AlertState};
use ticketd::ingest::parse::{parse, ParsedMail};

use AlertKind::{Acknowledgement as Ack, Other, Problem, Recovery};
use AlertState::{Critical, Down, Ok as OkS, Unknown, Up, Warning};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/alerts")
}

fn load(path: &Path) -> ParsedMail {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse(&raw).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (file, source, host, service, state, kind, incident): files with the same
/// incident label must get the same key, different labels different keys.
type Row = (
    &'static str,
    AlertSource,
    &'static str,
    Option<&'static str>,
    AlertState,
    AlertKind,
    &'static str,
);

fn expectations() -> Vec<Row> {
    use AlertSource::*;
    let mut rows: Vec<Row> = Vec::new();
    for (dir, src) in [("nagios", Nagios), ("icinga", Icinga)] {
        let d = |f: &str| -> &'static str { Box::leak(format!("{dir}/{f}").into_boxed_str()) };
        let svc = Some("Disk /");
        let inc: &'static str = Box::leak(format!("{dir}-disk").into_boxed_str());
        let hinc: &'static str = Box::leak(format!("{dir}-host").into_boxed_str());
        rows.extend([
            (
                d("01-service-problem.eml"),
                src.clone(),
                "web01",
                svc,
                Warning,
                Problem,
                inc,
            ),
            (
                d("02-service-problem-repeat.eml"),
                src.clone(),
                "web01",
                svc,
                Warning,
                Problem,
                inc,
            ),
            (
                d("03-service-recovery.eml"),
                src.clone(),
                "web01",
                svc,
                OkS,
                Recovery,
                inc,
            ),
            (
                d("04-service-problem-again.eml"),
                src.clone(),
                "web01",
                svc,
                Critical,
                Problem,
                inc,
            ),
            (
                d("05-service-recovery-problem-subject.eml"),
                src.clone(),
                "web01",
                svc,
                OkS,
                Recovery,
                inc,
            ),
            (
                d("06-host-down.eml"),
                src.clone(),
                "web01.example.com",
                None,
                Down,
                Problem,
                hinc,
            ),
            (
                d("07-host-up.eml"),
                src.clone(),
                "web01.example.com",
                None,
                Up,
                Recovery,
                hinc,
            ),
            (
                d("08-service-acknowledgement.eml"),
                src.clone(),
                "web01",
                svc,
                Critical,
                Ack,
                inc,
            ),
        ]);
    }
    let h = "web01.example.com";
    rows.extend([
        (
            "icinga2/01-service-problem.eml",
            Icinga2,
            h,
            Some("disk"),
            Warning,
            Problem,
            "i2-disk",
        ),
        (
            "icinga2/02-service-problem-repeat.eml",
            Icinga2,
            h,
            Some("disk"),
            Warning,
            Problem,
            "i2-disk",
        ),
        (
            "icinga2/03-service-recovery.eml",
            Icinga2,
            h,
            Some("disk"),
            OkS,
            Recovery,
            "i2-disk",
        ),
        (
            "icinga2/04-service-problem-again.eml",
            Icinga2,
            h,
            Some("disk"),
            Critical,
            Problem,
            "i2-disk",
        ),
        (
            "icinga2/05-service-acknowledgement.eml",
            Icinga2,
            h,
            Some("disk"),
            Critical,
            Ack,
            "i2-disk",
        ),
        (
            "icinga2/06-host-down.eml",
            Icinga2,
            h,
            None,
            Down,
            Problem,
            "i2-host",
        ),
        (
            "icinga2/07-host-up.eml",
            Icinga2,
            h,
            None,
            Up,
            Recovery,
            "i2-host",
        ),
        (
            "checkmk/01-service-problem.eml",
            Checkmk,
            "web01",
            Some("Filesystem /"),
            Warning,
            Problem,
            "cmk-fs",
        ),
        (
            "checkmk/02-service-problem-repeat.eml",
            Checkmk,
            "web01",
            Some("Filesystem /"),
            Warning,
            Problem,
            "cmk-fs",
        ),
        (
            "checkmk/03-service-recovery.eml",
            Checkmk,
            "web01",
            Some("Filesystem /"),
            OkS,
            Recovery,
            "cmk-fs",
        ),
        (
            "checkmk/04-service-problem-again.eml",
            Checkmk,
            "web01",
            Some("Filesystem /"),
            Critical,
            Problem,
            "cmk-fs",
        ),
        (
            "checkmk/05-service-acknowledgement.eml",
            Checkmk,
            "web01",
            Some("Filesystem /"),
            Critical,
            Ack,
            "cmk-fs",
        ),
        (
            "checkmk/06-host-down.eml",
            Checkmk,
            "web01",
            None,
            Down,
            Problem,
            "cmk-host",
        ),
        (
            "checkmk/07-host-up.eml",
            Checkmk,
            "web01",
            None,
            Up,
            Recovery,
            "cmk-host",
        ),
        // The HTML mail (mail.py, the default plugin): multipart/related with
        // multipart/alternative, "Host: name (alias)", "Summary:" for the output.
        (
            "checkmk/08-html-service-problem.eml",
            Checkmk,
            "db01",
            Some("Filesystem /var"),
            Critical,
            Problem,
            "cmk-html-fs",
        ),
        (
            "checkmk/09-html-service-recovery.eml",
            Checkmk,
            "db01",
            Some("Filesystem /var"),
            OkS,
            Recovery,
            "cmk-html-fs",
        ),
        (
            "checkmk/10-html-host-down.eml",
            Checkmk,
            "db01",
            None,
            Down,
            Problem,
            "cmk-html-host",
        ),
        (
            "zabbix/01-problem.eml",
            Zabbix,
            "web01",
            Some("/: Disk space is low (used > 90%)"),
            Warning,
            Problem,
            "zbx",
        ),
        (
            "zabbix/02-problem-repeat.eml",
            Zabbix,
            "web01",
            Some("/: Disk space is low (used > 90%)"),
            Warning,
            Problem,
            "zbx",
        ),
        (
            "zabbix/03-resolved.eml",
            Zabbix,
            "web01",
            Some("/: Disk space is low (used > 90%)"),
            OkS,
            Recovery,
            "zbx",
        ),
        (
            "zabbix/04-problem-again.eml",
            Zabbix,
            "web01",
            Some("/: Disk space is low (used > 90%)"),
            Critical,
            Problem,
            "zbx",
        ),
        (
            "zabbix/05-resolved-5-0.eml",
            Zabbix,
            "web01",
            Some("/: Disk space is low (used > 90%)"),
            OkS,
            Recovery,
            "zbx",
        ),
        (
            "prtg/01-sensor-down.eml",
            Prtg,
            h,
            Some("Ping"),
            Critical,
            Problem,
            "prtg",
        ),
        (
            "prtg/02-sensor-down-repeat.eml",
            Prtg,
            h,
            Some("Ping"),
            Critical,
            Problem,
            "prtg",
        ),
        (
            "prtg/03-sensor-down-ended.eml",
            Prtg,
            h,
            Some("Ping"),
            OkS,
            Recovery,
            "prtg",
        ),
        (
            "prtg/04-sensor-warning-again.eml",
            Prtg,
            h,
            Some("Ping"),
            Warning,
            Problem,
            "prtg",
        ),
        (
            "prtg/05-sensor-down-acknowledged.eml",
            Prtg,
            h,
            Some("Ping"),
            Critical,
            Ack,
            "prtg",
        ),
        (
            "prtg/06-html-sensor-down.eml",
            Prtg,
            "web02.example.com",
            Some("Ping"),
            Critical,
            Problem,
            "prtg-html",
        ),
        (
            "prtg/07-disk-warning.eml",
            Prtg,
            h,
            Some("Disk Free: C:\\ Label:System"),
            Warning,
            Problem,
            "prtg-disk",
        ),
        (
            "prtg/08-disk-warning-ended-now-down.eml",
            Prtg,
            h,
            Some("Disk Free: C:\\ Label:System"),
            Critical,
            Problem,
            "prtg-disk",
        ),
        (
            "prtg/09-disk-down-ended-now-warning.eml",
            Prtg,
            h,
            Some("Disk Free: C:\\ Label:System"),
            Warning,
            Problem,
            "prtg-disk",
        ),
        (
            "prtg/10-disk-down-ended-now-paused.eml",
            Prtg,
            h,
            Some("Disk Free: C:\\ Label:System"),
            Unknown,
            Other,
            "prtg-disk",
        ),
        (
            "monit/01-service-problem.eml",
            Monit,
            h,
            Some("php-fpm"),
            Critical,
            Problem,
            "monit-fpm",
        ),
        (
            "monit/02-service-problem-repeat.eml",
            Monit,
            h,
            Some("php-fpm"),
            Critical,
            Problem,
            "monit-fpm",
        ),
        (
            "monit/03-service-recovery.eml",
            Monit,
            h,
            Some("php-fpm"),
            OkS,
            Recovery,
            "monit-fpm",
        ),
        (
            "monit/04-service-problem-again.eml",
            Monit,
            h,
            Some("php-fpm"),
            Critical,
            Problem,
            "monit-fpm",
        ),
        (
            "monit/05-host-connection-failed.eml",
            Monit,
            h,
            Some("db01.example.com"),
            Critical,
            Problem,
            "monit-db",
        ),
        (
            "monit/06-host-connection-succeeded.eml",
            Monit,
            h,
            Some("db01.example.com"),
            OkS,
            Recovery,
            "monit-db",
        ),
        (
            "monit/07-resource-limit-matched.eml",
            Monit,
            h,
            Some("web01.example.com"),
            Critical,
            Problem,
            "monit-sys",
        ),
        (
            "monit/08-resource-limit-succeeded.eml",
            Monit,
            h,
            Some("web01.example.com"),
            OkS,
            Recovery,
            "monit-sys",
        ),
        (
            "monit/09-instance-changed.eml",
            Monit,
            h,
            Some("web01.example.com"),
            Unknown,
            Other,
            "monit-sys",
        ),
        (
            "monit/10-load-average-matched-limit.eml",
            Monit,
            h,
            Some("web01.example.com"),
            Critical,
            Problem,
            "monit-sys",
        ),
        (
            "monit/11-load-average-ok.eml",
            Monit,
            h,
            Some("web01.example.com"),
            OkS,
            Recovery,
            "monit-sys",
        ),
        (
            "monit/12-content-match.eml",
            Monit,
            h,
            Some("app-log"),
            Warning,
            Problem,
            "monit-log",
        ),
    ]);
    rows
}

#[test]
fn every_fixture_parses_to_its_alert() {
    let rows = expectations();
    let mut keys: BTreeMap<&str, String> = BTreeMap::new();
    let mut failures = Vec::new();
    for (file, source, host, service, state, kind, incident) in &rows {
        let mail = load(&fixture_dir().join(file));
        let Some(a) = parse_alert(&mail, &[]) else {
            failures.push(format!("{file}: not recognised"));
            continue;
        };
        let want = (source, *host, *service, *state, *kind);
        let got = (
            &a.source,
            a.host.as_str(),
            a.service.as_deref(),
            a.state,
            a.kind,
        );
        if want != got {
            failures.push(format!("{file}: want {want:?}, got {got:?}"));
        }
        assert!(!a.summary.contains('\n'), "{file}: summary is one line");
        assert!(
            !a.summary.is_empty() || *kind == Recovery,
            "{file}: summary"
        );
        match keys.get(incident) {
            Some(k) if *k != a.key() => {
                failures.push(format!("{file}: key {:?} != {k:?}", a.key()))
            }
            Some(_) => {}
            None => {
                // Keys are source-independent: only one system's incidents must differ.
                let dir = file.split('/').next().unwrap_or("");
                let same_dir = |inc: &str| {
                    rows.iter()
                        .any(|r| r.6 == inc && r.0.starts_with(&format!("{dir}/")))
                };
                if let Some((other, _)) =
                    keys.iter().find(|(inc, k)| **k == a.key() && same_dir(inc))
                {
                    failures.push(format!(
                        "{file}: incident {incident} shares a key with {other}"
                    ));
                }
                keys.insert(incident, a.key());
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every fixture file is in the table.
    let listed: Vec<&str> = rows.iter().map(|r| r.0).collect();
    for sys in std::fs::read_dir(fixture_dir()).unwrap().flatten() {
        for f in std::fs::read_dir(sys.path()).unwrap().flatten() {
            let name = format!(
                "{}/{}",
                sys.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            );
            if name.ends_with(".eml") {
                assert!(listed.contains(&name.as_str()), "{name} has no expectation");
            }
        }
    }
}

#[test]
fn zabbix_event_ids_and_checkmk_flapping() {
    let a = parse_alert(
        &load(&fixture_dir().join("zabbix/04-problem-again.eml")),
        &[],
    )
    .unwrap();
    assert_eq!(a.event_id.as_deref(), Some("4802"));
    assert!(a.summary.contains("Space used"), "{}", a.summary);
    let m = parse(b"From: site@cmk\r\nSubject: Check_MK: web01/CPU load Started Flapping\r\n\r\nHost:     web01\r\nAlias:    web01\r\nAddress:  192.0.2.10\r\nService:  CPU load\r\nEvent:    Started Flapping\r\nOutput:   WARN - 15 min load: 4.2\r\n").unwrap();
    let a: Alert = parse_alert(&m, &[]).unwrap();
    assert_eq!((a.kind, a.state), (Other, Warning));
}

// ---------------------------------------------------------------- corpus

struct Entry {
    path: String,
    category: String,
    note: String,
}

fn corpus_dir() -> PathBuf {
    match std::env::var_os("TICKETD_CORPUS") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"),
    }
}

fn read_manifest(dir: &Path) -> Vec<Entry> {
    let text = std::fs::read_to_string(dir.join("MANIFEST.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split('\t').collect();
    let col = |name: &str| header.iter().position(|h| h.trim() == name).unwrap();
    let (c_path, c_cat, c_note) = (col("path"), col("category"), col("note"));
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let get = |i: usize| f.get(i).map(|s| s.trim().to_string()).unwrap_or_default();
            Entry {
                path: get(c_path),
                category: get(c_cat),
                note: get(c_note),
            }
        })
        .collect()
}

/// `key=value` from a manifest note; values run to the next ` key=` or ` ->`.
fn note_value(note: &str, key: &str) -> Option<String> {
    let start = note.find(&format!("{key}="))? + key.len() + 1;
    let rest = &note[start..];
    let mut end = rest.len();
    for stop in [
        " host=",
        " service=",
        " state=",
        " action=",
        " ->",
        ",",
        ";",
        "\"",
    ] {
        if let Some(i) = rest.find(stop) {
            end = end.min(i);
        }
    }
    Some(rest[..end].trim().to_string())
}

/// What the note says the state is; a recovery note names no state but
/// says OK/UP/closes.
fn note_state(note: &str) -> Option<String> {
    if let Some(s) = note_value(note, "state") {
        return Some(s.to_ascii_uppercase());
    }
    let n = note.to_ascii_uppercase();
    for st in ["WARNING", "CRITICAL", "UNKNOWN", "DOWN", "UNREACHABLE"] {
        if n.contains(&format!("IS {st}")) {
            return Some(st.into());
        }
    }
    for (word, st) in [
        ("STATE: OK", "OK"),
        (" IS OK", "OK"),
        (" IS UP", "UP"),
        ("HOST UP", "UP"),
        ("-> OK", "OK"),
        ("SUCCEEDED", "OK"),
        ("ACTION DONE", "OK"),
    ] {
        if n.contains(word) {
            return Some(st.into());
        }
    }
    None
}

fn state_name(s: AlertState) -> &'static str {
    match s {
        AlertState::Ok => "OK",
        AlertState::Up => "UP",
        AlertState::Warning => "WARNING",
        AlertState::Critical => "CRITICAL",
        AlertState::Unknown => "UNKNOWN",
        AlertState::Down => "DOWN",
        AlertState::Unreachable => "UNREACHABLE",
    }
}

#[test]
fn corpus_monitoring_mails_parse_and_nothing_else_does() {
    let dir = corpus_dir();
    if !dir.join("MANIFEST.tsv").is_file() {
        println!(
            "SKIPPED: no corpus at {} (set TICKETD_CORPUS)",
            dir.display()
        );
        return;
    }
    let mut failures = Vec::new();
    let (mut monitoring, mut matched, mut others) = (0, 0, 0);
    for e in read_manifest(&dir) {
        let Ok(raw) = std::fs::read(dir.join(&e.path)) else {
            failures.push(format!("{}: unreadable", e.path));
            continue;
        };
        let Ok(mail) = parse(&raw) else {
            if e.category == "monitoring" {
                failures.push(format!("{}: does not parse as mail", e.path));
            }
            continue;
        };
        let alert = parse_alert(&mail, &[]);
        if e.category != "monitoring" {
            others += 1;
            if let Some(a) = alert {
                failures.push(format!(
                    "{} ({}): became an alert {a:?}",
                    e.path, e.category
                ));
            }
            continue;
        }
        monitoring += 1;
        let Some(a) = alert else {
            failures.push(format!("{}: monitoring mail not recognised", e.path));
            continue;
        };
        let mut ok = true;
        if let Some(h) = note_value(&e.note, "host") {
            ok &= a.host == h;
        }
        if let Some(s) = note_value(&e.note, "service") {
            ok &= a.service.as_deref() == Some(s.as_str());
        } else if e.note.contains("no service") {
            ok &= a.service.is_none();
        }
        match note_state(&e.note) {
            Some(s) => ok &= state_name(a.state) == s,
            None => {
                ok = false;
                failures.push(format!("{}: the note names no state: {}", e.path, e.note));
            }
        }
        if ok {
            matched += 1;
        } else {
            failures.push(format!("{}: got {a:?}; note: {}", e.path, e.note));
        }
    }
    println!("corpus: {matched}/{monitoring} monitoring mails matched their note; {others} other files, none an alert");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(monitoring > 0);
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_text(subject in ".{0,120}", body in "(?s).{0,600}") {
        let mail = ParsedMail { subject, body, ..Default::default() };
        let _ = parse_alert(&mail, &[]);
    }

    #[test]
    fn never_panics_on_template_like_text(
        subject in prop::sample::select(vec![
            "** PROBLEM Service Alert: ", "[PROBLEM] ", "Check_MK: ", "Problem: ",
            "Resolved in 5m: ", "[PRTG] ", "monit alert -- ", "PROBLEM - ",
        ]),
        tail in ".{0,60}",
        lines in prop::collection::vec(
            (prop::sample::select(vec![
                "***** Nagios *****", "***** Service Monitoring on x *****", "Host:", "Service:",
                "State:", "Notification Type:", "Event:", "Output:", "Problem started at 1 on 2",
                "Problem name:", "Severity:", "Sensor:", "Status:", "Device:", "Probe:",
                "Action:", "x Service y", "Info:", "When:", "=", "=3D", "Additional Info:",
            ]), ".{0,40}"),
            0..14,
        ),
    ) {
        let body: String = lines.iter().map(|(a, b)| format!("{a} {b}\n")).collect();
        let mail = ParsedMail { subject: format!("{subject}{tail}"), body, ..Default::default() };
        let _ = parse_alert(&mail, &[]);
    }
}
