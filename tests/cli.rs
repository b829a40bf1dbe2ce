//! The command-line contract, end to end through the real binary and a real
//! SQLite database in a temporary data directory.

#[path = "support/kept_logs.rs"]
mod kept_logs;

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ticketd");

struct Desk {
    dir: tempfile::TempDir,
}

impl Desk {
    fn new() -> Desk {
        Desk {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--data-dir").arg(self.data()).args(args);
        c.env_remove("TICKETD_CONFIG");
        // Only the tests of the systemd notices talk to a notify socket.
        for v in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            c.env_remove(v);
        }
        c
    }
    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut c = self.cmd(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        {
            let mut si = child.stdin.take().unwrap();
            if let Some(b) = stdin {
                si.write_all(b).unwrap();
            }
        }
        child.wait_with_output().unwrap()
    }
    /// `ingest` of one message on stdin; returns the JSON line.
    fn ingest(&self, raw: &str) -> Value {
        let o = self.run(&["ingest"], Some(raw.as_bytes()));
        assert_eq!(
            o.status.code(),
            Some(0),
            "stderr: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }
    fn json(&self, args: &[&str]) -> Value {
        let o = self.run(args, None);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }
    fn ticket(&self, n: &str) -> Value {
        self.json(&["tickets", "show", n, "--json"])
    }
    fn outbox(&self) -> Vec<Value> {
        self.json(&["outbox", "list", "--json"])
            .as_array()
            .unwrap()
            .clone()
    }
}

fn mail(from: &str, subject: &str, id: &str, extra: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: support@example.com\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0100\r\n{extra}\r\n{body}\r\n"
    )
}

#[test]
fn new_mail_creates_ticket_and_queues_confirmation() {
    let d = Desk::new();
    let o = d.ingest(&mail(
        "Anna <anna@kunde.de>",
        "Server ausgefallen",
        "a1@kunde.de",
        "",
        "Unser Server ist ausgefallen.",
    ));
    assert_eq!(o["action"], "created");
    assert_eq!(o["severity"], 1);
    assert_eq!(o["message_id"], "a1@kunde.de");
    let n = o["ticket"].as_str().unwrap().to_string();

    let list = d.json(&["tickets", "list", "--json"]);
    let t = &list[0];
    for k in [
        "number",
        "subject",
        "status",
        "severity",
        "requester",
        "created_at",
        "article_count",
    ] {
        assert!(t.get(k).is_some(), "missing {k}");
    }
    assert_eq!(t["number"], n.as_str());
    assert_eq!(t["requester"], "anna@kunde.de");

    let out = d.outbox();
    assert_eq!(out.len(), 1);
    let raw = out[0]["raw"].as_str().unwrap();
    assert_eq!(out[0]["to"][0], "anna@kunde.de");
    assert_eq!(out[0]["status"], "queued");
    assert!(raw.contains("Auto-Submitted: auto-replied\r\n"));
    assert!(raw.contains("In-Reply-To: <a1@kunde.de>\r\n"));
    assert!(raw.contains(&format!("[Ticket#{n}]")));
    let mid = out[0]["message_id"].as_str().unwrap();
    assert!(raw.contains(&format!("Message-ID: <{mid}>")));
    // The body names the ticket number and the receipt timestamp.
    let show = d.ticket(&n);
    let conf = show["articles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["direction"] == "out")
        .unwrap();
    let body = conf["body"].as_str().unwrap();
    assert!(
        body.contains(&n) && body.contains("Eingangszeitstempel"),
        "{body}"
    );
}

#[test]
fn duplicate_delivery_is_recognised() {
    let d = Desk::new();
    let m = mail("anna@kunde.de", "Frage", "dup@kunde.de", "", "Hallo");
    assert_eq!(d.ingest(&m)["action"], "created");
    let again = d.ingest(&m);
    assert_eq!(again["action"], "duplicate");
    // Same Message-ID, different bytes (another relay added a header).
    let relayed = format!("Received: from relay2\r\n{m}");
    assert_eq!(d.ingest(&relayed)["action"], "duplicate");
    // Without a Message-ID the raw bytes decide.
    let noid = "From: b@kunde.de\r\nSubject: ohne id\r\n\r\nText\r\n";
    assert_eq!(d.ingest(noid)["action"], "created");
    assert_eq!(d.ingest(noid)["action"], "duplicate");
    assert_eq!(
        d.json(&["tickets", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(d.outbox().len(), 2);
}

#[test]
fn concurrent_deliveries_of_one_message_make_one_ticket() {
    let d = Desk::new();
    // No `migrate` first: the racers also race on creating the database.
    let m = mail("anna@kunde.de", "Race", "race@kunde.de", "", "x");
    let children: Vec<_> = (0..8)
        .map(|_| {
            let mut c = d.cmd(&["ingest"]);
            c.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut ch = c.spawn().unwrap();
            ch.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
            ch
        })
        .collect();
    let mut actions = Vec::new();
    for ch in children {
        let o = ch.wait_with_output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        actions.push(v["action"].as_str().unwrap().to_string());
    }
    assert_eq!(
        actions.iter().filter(|a| *a == "created").count(),
        1,
        "{actions:?}"
    );
    assert_eq!(
        actions.iter().filter(|a| *a == "duplicate").count(),
        7,
        "{actions:?}"
    );
}

#[test]
fn reply_by_reference_and_by_tag_land_on_the_ticket() {
    let d = Desk::new();
    let n = d.ingest(&mail(
        "anna@kunde.de",
        "Drucker",
        "p1@kunde.de",
        "",
        "Geht nicht.",
    ))["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let ours = d.outbox()[0]["message_id"].as_str().unwrap().to_string();
    // Reply to our confirmation: only In-Reply-To/References, no tag.
    let r = d.ingest(&mail(
        "anna@kunde.de",
        "AW: Eingangsbestätigung",
        "p2@kunde.de",
        &format!("In-Reply-To: <{ours}>\r\nReferences: <p1@kunde.de> <{ours}>\r\n"),
        "Danke",
    ));
    assert_eq!(
        (r["action"].as_str(), r["ticket"].as_str()),
        (Some("appended"), Some(n.as_str()))
    );
    // A colleague's reply to the customer's own first mail (References
    // only): the colleague shares the requester's domain. (A stranger with
    // that Message-ID gets a ticket of his own: tests/faults.rs.)
    let r = d.ingest(&mail(
        "chef@kunde.de",
        "Re: Drucker",
        "p3@kunde.de",
        "References: <p1@kunde.de>\r\n",
        "Ich auch",
    ));
    assert_eq!(r["ticket"].as_str(), Some(n.as_str()));
    // A colleague at the requester's domain, by subject tag behind prefixes.
    for (i, subj) in [
        "RE:RE: [Ticket#N] x",
        "AW: WG: [Ticket#N] x",
        "SV: VS: Antw: [Ticket#N] x",
    ]
    .iter()
    .enumerate()
    {
        let s = subj.replace('N', &n);
        let r = d.ingest(&mail(
            "bob@kunde.de",
            &s,
            &format!("t{i}@kunde.de"),
            "",
            "mehr",
        ));
        assert_eq!(
            (r["action"].as_str(), r["ticket"].as_str()),
            (Some("appended"), Some(n.as_str())),
            "{s}"
        );
    }
    // No confirmations for follow-ups.
    assert_eq!(d.outbox().len(), 1);
    let t = d.ticket(&n);
    assert_eq!(t["article_count"], 7);
}

#[test]
fn stranger_with_a_tag_gets_a_new_linked_ticket() {
    let d = Desk::new();
    let n = d.ingest(&mail("anna@kunde.de", "Drucker", "h1@kunde.de", "", "x"))["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let r = d.ingest(&mail(
        "mallory@evil.example",
        &format!("Re: [Ticket#{n}] Drucker"),
        "h2@evil.example",
        "",
        "let me in",
    ));
    assert_eq!(r["action"], "created");
    let m = r["ticket"].as_str().unwrap();
    assert_ne!(m, n);
    let t = d.ticket(m);
    assert_eq!(t["linked_ticket"], n.as_str());
    assert_eq!(t["subject"], "Re: Drucker");
    let o = d.run(&["tickets", "show", m], None);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(&format!("refers to ticket {n}")), "{text}");
    // The original ticket is untouched.
    assert_eq!(d.ticket(&n)["article_count"], 2);
}

#[test]
fn auto_replies_and_bounces_never_open_tickets_or_get_answers() {
    let d = Desk::new();
    let n = d.ingest(&mail(
        "anna@kunde.de",
        "VPN",
        "v1@kunde.de",
        "",
        "VPN geht nicht",
    ))["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let ours = d.outbox()[0]["message_id"].as_str().unwrap().to_string();
    // Vacation notice referring to our confirmation: kept on the ticket.
    let r = d.ingest(&mail(
        "anna@kunde.de",
        "Abwesenheitsnotiz: Eingangsbestätigung",
        "v2@kunde.de",
        &format!("Auto-Submitted: auto-replied\r\nIn-Reply-To: <{ours}>\r\n"),
        "Ich bin bis Montag nicht im Haus.",
    ));
    assert_eq!(
        (r["action"].as_str(), r["kind"].as_str()),
        (Some("appended"), Some("auto-reply"))
    );
    assert_eq!(r["ticket"].as_str(), Some(n.as_str()));
    // An Exchange out-of-office without reference: stored, nothing else.
    let r = d.ingest(&mail(
        "carl@kunde.de",
        "Automatische Antwort: Hallo",
        "v3@kunde.de",
        "X-Auto-Response-Suppress: All\r\n",
        "Abwesend",
    ));
    assert_eq!(r["action"], "suppressed");
    // A person whose subject merely says out of office is a person.
    let r = d.ingest(&mail(
        "dora@kunde.de",
        "Out of office replies broken",
        "v4@kunde.de",
        "",
        "Our autoresponder fails",
    ));
    assert_eq!(r["action"], "created");
    // A DSN for our confirmation: attached to the ticket, recorded against the recipient.
    let dsn = format!(
        "From: MAILER-DAEMON@mx.kunde.de (Mail Delivery System)\r\nTo: support@example.com\r\nSubject: Undelivered Mail Returned to Sender\r\nMessage-ID: <bounce1@mx.kunde.de>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"BB\"\r\n\r\n--BB\r\nContent-Type: text/plain\r\n\r\nThis is the mail system. Your message could not be delivered.\r\n\r\n--BB\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.kunde.de\r\n\r\nFinal-Recipient: rfc822; anna@kunde.de\r\nAction: failed\r\nStatus: 5.2.2\r\nDiagnostic-Code: smtp; 552 5.2.2 mailbox full\r\n\r\n--BB\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: Support <support@example.com>\r\nTo: anna@kunde.de\r\nSubject: [Ticket#{n}] Eingangsbestätigung: VPN\r\nMessage-ID: <{ours}>\r\n\r\n--BB--\r\n"
    );
    let r = d.ingest(&dsn);
    assert_eq!(
        (r["action"].as_str(), r["kind"].as_str()),
        (Some("appended"), Some("bounce"))
    );
    assert_eq!(r["ticket"].as_str(), Some(n.as_str()));
    let t = d.ticket(&n);
    assert_eq!(t["bounces"][0]["recipient"], "anna@kunde.de");
    assert_eq!(t["bounces"][0]["status"], "5.2.2");
    // One confirmation for anna's ticket, one for dora's; none for machines.
    assert_eq!(d.outbox().len(), 2);
    // Mail from our own address is a loop: stored, not a ticket.
    let r = d.ingest(&mail(
        "support@example.com",
        "Test",
        "loop@example.com",
        "",
        "x",
    ));
    assert_eq!(r["action"], "suppressed");
}

#[test]
fn hourly_limit_skips_confirmations_not_tickets() {
    let d = Desk::new();
    let mut created = 0;
    for i in 0..12 {
        let r = d.ingest(&mail(
            "spam@kunde.de",
            &format!("Nr {i}"),
            &format!("rl{i}@kunde.de"),
            "",
            "x",
        ));
        if r["action"] == "created" {
            created += 1;
        }
    }
    assert_eq!(created, 12);
    assert_eq!(d.outbox().len(), 10);
    let list = d.json(&["tickets", "list", "--json"]);
    let last = list[0]["number"].as_str().unwrap();
    let t = d.ticket(last);
    let notes: Vec<&str> = t["articles"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["direction"] == "note")
        .map(|a| a["body"].as_str().unwrap())
        .collect();
    assert!(notes.iter().any(|n| n.contains("limit 10")), "{notes:?}");
}

#[test]
fn header_injection_through_subject_and_name_is_impossible() {
    let d = Desk::new();
    let m = "From: =?UTF-8?Q?Eve=0D=0ABcc:_victim@x.de?= <eve@kunde.de>\r\nTo: support@example.com\r\nSubject: =?UTF-8?Q?Hallo=0D=0ABcc:_victim@x.de?=\r\nMessage-ID: <inj@kunde.de>\r\n\r\nx\r\n";
    d.ingest(m);
    let raw = d.outbox()[0]["raw"].as_str().unwrap().to_string();
    assert!(
        !raw.lines()
            .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
        "{raw}"
    );
}

#[test]
fn html_only_mail_and_attachments_are_readable() {
    let d = Desk::new();
    let m = "From: a@kunde.de\r\nTo: support@example.com\r\nSubject: Bild\r\nMessage-ID: <html1@kunde.de>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><head><style>body{color:red}</style></head><body><p>Der <b>Scanner</b> zeigt Fehler.</p></body></html>\r\n--XX\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename*=UTF-8''Fehlerbild%20%C3%BC.png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--XX--\r\n";
    let r = d.ingest(m);
    let t = d.ticket(r["ticket"].as_str().unwrap());
    let a = &t["articles"][0];
    let body = a["body"].as_str().unwrap();
    assert!(
        body.contains("Scanner") && body.contains("Fehler"),
        "{body}"
    );
    assert!(!body.contains('<') && !body.contains("color"), "{body}");
    assert_eq!(a["attachments"][0]["filename"], "Fehlerbild ü.png");
    assert_eq!(a["attachments"][0]["size"], 8);
    assert_eq!(a["attachments"][0]["content_type"], "image/png");
}

#[test]
fn unstorable_message_exits_75_and_prints_nothing_on_stdout() {
    let d = Desk::new();
    // The data directory cannot be created: its parent is a file.
    std::fs::write(d.dir.path().join("file"), "x").unwrap();
    let mut c = Command::new(BIN);
    c.arg("--data-dir")
        .arg(d.dir.path().join("file").join("data"))
        .arg("ingest")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut ch = c.spawn().unwrap();
    ch.stdin
        .take()
        .unwrap()
        .write_all(b"From: a@b.de\r\n\r\nx\r\n")
        .unwrap();
    let o = ch.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(75));
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    // A corrupt database file: also 75, never 0.
    let d2 = Desk::new();
    std::fs::create_dir_all(d2.data()).unwrap();
    std::fs::write(d2.data().join("ticketd.db"), vec![0x42u8; 8192]).unwrap();
    let o = d2.run(
        &["ingest"],
        Some(b"From: a@b.de\r\nSubject: x\r\n\r\nx\r\n"),
    );
    assert_eq!(
        o.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn garbage_is_quarantined_with_raw_bytes_kept() {
    let d = Desk::new();
    let o = d.run(
        &["ingest"],
        Some(&[0u8, 159, 146, 150, 0xff, 0xfe, 1, 2, 3]),
    );
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["action"], "quarantined");
    assert!(v["ticket"].is_null());
    let q = d.json(&["quarantine", "list", "--json"]);
    assert_eq!(q[0]["size"], 9);
    let o = d.run(&["ingest"], Some(b""));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["action"], "quarantined");
}

#[test]
fn ingest_many_files_reports_each() {
    let d = Desk::new();
    let dir = d.dir.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for i in 0..5 {
        let p = dir.join(format!("{i}.eml"));
        std::fs::write(
            &p,
            mail(
                "a@kunde.de",
                &format!("M{i}"),
                &format!("f{i}@kunde.de"),
                "",
                "x",
            ),
        )
        .unwrap();
        files.push(p.display().to_string());
    }
    files.push(dir.join("missing.eml").display().to_string());
    let mut args = vec!["ingest"];
    args.extend(files.iter().map(String::as_str));
    let o = d.run(&args, None);
    // 66: an input file could not be read; the others are stored.
    assert_eq!(o.status.code(), Some(66));
    let lines: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    let numbers: Vec<u64> = lines
        .iter()
        .map(|l| l["ticket"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "monotonic: {numbers:?}"
    );
}

#[test]
fn classify_explain_names_the_rule() {
    let d = Desk::new();
    let f = d.dir.path().join("m.eml");
    std::fs::write(
        &f,
        mail(
            "a@kunde.de",
            "Produktion steht still",
            "c@kunde.de",
            "",
            "Bitte sofort.",
        ),
    )
    .unwrap();
    let o = d.run(&["classify", "--explain", f.to_str().unwrap()], None);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("outage-de"), "{text}");
    assert!(text.contains("decision: severity 1"), "{text}");
    assert!(text.contains("steht still"), "{text}");
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("ticketd.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// A config for `ticketd run`: `extra`, and the HTTP endpoint on a port the
/// kernel picks (the default 127.0.0.1:9187 would collide between the
/// daemons of tests running in parallel).
fn daemon_config(dir: &Path, extra: &str) -> String {
    write_config(dir, &format!("{extra}\n[http]\nlisten = \"127.0.0.1:0\"\n"))
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn bad_rule_file_is_rejected_with_file_line_and_reason() {
    let d = Desk::new();
    let rules = d.dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("10-local.toml"),
        "[[rule]]\nname = \"x\"\nseverity = 2\nsubject = [\"(broken\"]\n",
    )
    .unwrap();
    let cfg = write_config(d.dir.path(), "[rules]\ndir = \"rules\"\n");
    let o = d.run(&["--config", cfg.to_str().unwrap(), "check-config"], None);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("10-local.toml:4:") && err.contains("invalid regular expression"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Intake does not stop for it: the mail is stored with the default severity and a note.
    let o = d.run(
        &["--config", cfg.to_str().unwrap(), "ingest"],
        Some(mail("a@kunde.de", "Server down", "br@kunde.de", "", "x").as_bytes()),
    );
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["severity"], 3);
}

#[test]
fn config_errors_are_one_clear_line() {
    let d = Desk::new();
    let cfg = write_config(d.dir.path(), "[tickets]\nnumber_prefx = \"T\"\n");
    let o = d.run(&["--config", cfg.to_str().unwrap(), "check-config"], None);
    assert_eq!(o.status.code(), Some(78));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("ticketd.toml:2:") && err.contains("number_prefx"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1);
    let o = d.run(
        &["--config", "/nonexistent/x.toml", "tickets", "list"],
        None,
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read config"));
}

#[test]
fn check_config_renders_every_template_and_names_file_line_and_reason() {
    let d = Desk::new();
    let templates = d.dir.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let cfg = write_config(d.dir.path(), "[templates]\ndir = \"templates\"\n");
    let check = || {
        let o = d.run(&["--config", cfg.to_str().unwrap(), "check-config"], None);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        (
            o.status.success(),
            err,
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (ok, err, out) = check();
    assert!(ok && out.contains("configuration ok"), "{err}");
    // An unknown filter, and a value no confirmation has: both only show
    // when the template is rendered.
    let file = templates.join("confirmation.de.txt");
    for (text, line, why) in [
        (
            "Guten Tag,\n\nTicket {{ ticket|shout }}\n",
            3,
            "unknown filter",
        ),
        ("Guten Tag {{ vorname }},\n", 1, "`vorname` is undefined"),
    ] {
        std::fs::write(&file, text).unwrap();
        let (ok, err, out) = check();
        assert!(!ok, "{out}");
        assert!(
            err.contains(&format!("{}:{line}:", file.display())) && err.contains(why),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // Another language and a route rule's answer are rendered too.
    std::fs::remove_file(&file).unwrap();
    std::fs::write(templates.join("status.fr.txt"), "{{ statut }}").unwrap();
    let (ok, err, _) = check();
    assert!(!ok && err.contains("status.fr.txt:1:"), "{err}");
    std::fs::remove_file(templates.join("status.fr.txt")).unwrap();
    // A configured directory that is not there is an error, not the defaults.
    std::fs::remove_dir(&templates).unwrap();
    let (ok, err, _) = check();
    assert!(
        !ok && err.contains(&templates.display().to_string()) && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn run_refuses_broken_templates_and_sighup_keeps_the_old_set() {
    let d = Desk::new();
    let templates = d.dir.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let file = templates.join("confirmation.de.txt");
    std::fs::write(&file, "Ticket {{ ticket|bogus }}\n").unwrap();
    let c = daemon_config(d.dir.path(), "[templates]\ndir = \"templates\"\n");
    // At start: refused, with the file, line and reason.
    let mut starting = d
        .cmd(&["--config", &c, "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_for(20, || starting.try_wait().unwrap());
    if exited.is_none() {
        let _ = starting.kill();
        let _ = starting.wait();
        panic!("run started with a broken template");
    }
    let o = starting.wait_with_output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{}:1:", file.display())) && err.contains("unknown filter"),
        "{err}"
    );
    std::fs::write(&file, "Ihr Ticket {{ ticket }} (Vorlage eins)\n").unwrap();
    let stderr_path = d.dir.path().join("stderr.log");
    let mut child = d
        .cmd(&["--config", &c, "run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let new = d.data().join("Maildir").join("new");
    wait_for(20, || new.exists().then_some(())).expect("maildir");
    let deliver = |i: u32| {
        let tmp = d.data().join("Maildir").join("tmp").join(format!("{i}.x"));
        std::fs::write(
            &tmp,
            mail("a@kunde.de", "Drucker", &format!("t{i}@kunde.de"), "", "x"),
        )
        .unwrap();
        std::fs::rename(&tmp, new.join(format!("{i}.x"))).unwrap();
    };
    let confirmations = |n: usize| {
        let out = d.outbox();
        (out.len() == n).then(|| {
            out.iter()
                .map(|m| m["raw"].as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        })
    };
    deliver(1);
    let first = wait_for(20, || confirmations(1)).expect("first confirmation");
    assert!(first[0].contains("Vorlage eins"), "{first:?}");
    // A broken template on SIGHUP: not reloaded, the old set stays.
    std::fs::write(&file, "Ihr Ticket {{ ticket|bogus }}\n").unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let log = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    wait_for(10, || log().contains("not reloaded").then_some(())).expect("error logged");
    assert!(log().contains("confirmation.de.txt:1"), "{}", log());
    deliver(2);
    let both = wait_for(20, || confirmations(2)).expect("second confirmation");
    assert!(
        both.iter().all(|raw| raw.contains("Vorlage eins")),
        "old templates kept: {both:?}"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn check_config_refuses_plain_smtp_abroad_and_warns_of_open_http() {
    let d = Desk::new();
    let cfg = write_config(
        d.dir.path(),
        "[outbound]\ntransport = \"smtp\"\n[outbound.smtp]\nhost = \"mail.example.com\"\nport = 25\ntls = \"none\"\n",
    );
    let o = d.run(&["--config", cfg.to_str().unwrap(), "check-config"], None);
    assert_eq!(o.status.code(), Some(78));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("outbound.smtp.tls") && err.contains("loopback"),
        "{err}"
    );
    let cfg = write_config(d.dir.path(), "[http]\nlisten = \"0.0.0.0:9187\"\n");
    let o = d.run(&["--config", cfg.to_str().unwrap(), "check-config"], None);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("warning: http.listen") && l.contains("no authentication")),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("configuration ok"));
}

#[test]
fn an_unusable_data_dir_is_named_once_with_its_cause() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    let d = Desk::new();
    let data = d.data();
    std::fs::create_dir_all(&data).unwrap();
    let one_line = |o: &Output, path: &Path, cause: &str| {
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("data directory {}:", path.display()))
                && err.contains("writable by the user ticketd runs as"),
            "{err}"
        );
        assert_eq!(err.matches(cause).count(), 1, "{err}");
    };
    // A data dir below a regular file (fails for root too).
    let file = d.dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let below = file.join("data");
    let o = Command::new(BIN)
        .arg("--data-dir")
        .arg(&below)
        .args(["tickets", "list"])
        .env_remove("TICKETD_CONFIG")
        .output()
        .unwrap();
    one_line(&o, &below, "Not a directory");
    // A directory this process cannot write: read-only for an ordinary
    // user; for root (as in CI), where mode 0555 changes nothing, one
    // owned by root and the binary run as nobody (a foreign-owned dir).
    let root = std::fs::metadata(d.dir.path()).unwrap().uid() == 0;
    let mut cmd = d.cmd(&["tickets", "list"]);
    if root {
        std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        cmd.uid(65534).gid(65534);
    } else {
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let o = match cmd.output() {
        Ok(o) => o,
        Err(e) if root => {
            println!("skipped the foreign-owned case: cannot run {BIN} as nobody: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    one_line(&o, &data, "Permission denied");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A minimal IMAP server on loopback that refuses every login; it sends
/// each credential line it gets (LOGIN, or AUTHENTICATE PLAIN's response)
/// to `seen`.
fn refusing_imap_server(seen: std::sync::mpsc::Sender<String>) -> u16 {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut out) = conn else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut lines = BufReader::new(out.try_clone().unwrap()).lines();
                let _ = out.write_all(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n");
                let mut plain_tag = None;
                while let Some(Ok(line)) = lines.next() {
                    let tag = line.split(' ').next().unwrap_or("*").to_string();
                    let reply = if let Some(t) = plain_tag.take() {
                        let _ = seen.send(line.clone());
                        format!("{t} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
                    } else if line.ends_with(" CAPABILITY") {
                        format!("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{tag} OK done\r\n")
                    } else if line.ends_with(" AUTHENTICATE PLAIN") {
                        plain_tag = Some(tag);
                        "+ \r\n".to_string()
                    } else if line.contains(" LOGIN ") {
                        let _ = seen.send(line.clone());
                        format!("{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
                    } else {
                        format!("{tag} BAD unknown\r\n")
                    };
                    if out.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn the_imap_password_is_not_logged_even_at_trace() {
    const PASSWORD: &str = "tdsecret-pw-Xq7-never-in-a-log";
    let (tx, rx) = std::sync::mpsc::channel();
    let port = refusing_imap_server(tx);
    let d = Desk::new();
    let c = daemon_config(
        d.dir.path(),
        &format!(
            "[[imap]]\nname = \"support\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"plain\"\n\
             user = \"support@example.test\"\npassword_env = \"TICKETD_TEST_IMAP_PW\"\n"
        ),
    );
    let log_path = d.dir.path().join("trace.log");
    let mut child = d
        .cmd(&["--config", &c, "run"])
        .env("TICKETD_TEST_IMAP_PW", PASSWORD)
        .env("TICKETD_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let sent = rx.recv_timeout(Duration::from_secs(30));
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // The refusal is logged (so the log is written), then the daemon stops.
    wait_for(10, || log().contains("IMAP session ended").then_some(()));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    let sent = sent.expect("the daemon tried to log in");
    let log = log();
    kept_logs::keep("cli-imap-password-trace", &log);
    assert!(log.contains("IMAP session ended"), "{log}");
    // The password as sent (LOGIN's quoted string, or PLAIN's base64).
    let secret = sent
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_matches('"')
        .to_string();
    assert!(!secret.is_empty());
    for needle in [PASSWORD, secret.as_str()] {
        assert!(
            !log.contains(needle),
            "{needle:?} in the log:\n{}",
            log.lines()
                .filter(|l| l.contains(needle))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn english_desk_with_prefix_and_own_tag() {
    let d = Desk::new();
    let cfg = write_config(
        d.dir.path(),
        "[desk]\nlanguage = \"en\"\naddresses = [\"help@desk.test\"]\ntimezone = \"UTC\"\n[tickets]\nnumber_prefix = \"SD-\"\ntag = \"SD\"\nnumber_start = 500\n",
    );
    let c = cfg.to_str().unwrap();
    let o = d.run(
        &["--config", c, "ingest"],
        Some(
            mail(
                "a@kunde.de",
                "How do I add a user?",
                "en1@kunde.de",
                "",
                "Thanks",
            )
            .as_bytes(),
        ),
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ticket"], "SD-501");
    assert_eq!(v["severity"], 4);
    let out = d.run(&["--config", c, "outbox", "list", "--json"], None);
    let out: Value = serde_json::from_slice(&out.stdout).unwrap();
    let raw = out[0]["raw"].as_str().unwrap();
    assert!(
        raw.contains("[SD#SD-501]") && raw.contains("Received at") && raw.contains("UTC"),
        "{raw}"
    );
    assert!(raw.contains("From: Support <help@desk.test>"), "{raw}");
}

#[test]
fn run_takes_maildir_mail_and_delivers_to_files_then_stops_on_sigterm() {
    let d = Desk::new();
    let maildir = d.data().join("Maildir");
    let cfg = daemon_config(d.dir.path(), "");
    let mut child = d
        .cmd(&["--config", &cfg, "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the daemon created its Maildir.
    let start = Instant::now();
    while !maildir.join("new").exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Deliver the Maildir way: write into tmp/, rename into new/.
    let tmp = maildir.join("tmp").join("1700000000.M1.host");
    std::fs::write(
        &tmp,
        mail(
            "anna@kunde.de",
            "Mail ausgefallen",
            "md1@kunde.de",
            "",
            "Exchange steht still",
        ),
    )
    .unwrap();
    std::fs::rename(&tmp, maildir.join("new").join("1700000000.M1.host")).unwrap();
    let sent = d.data().join("sent");
    let start = Instant::now();
    let mut delivered = Vec::new();
    while start.elapsed() < Duration::from_secs(20) {
        delivered = std::fs::read_dir(&sent)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        if !delivered.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(delivered.len(), 1, "confirmation file written");
    let eml = std::fs::read_to_string(delivered[0].path()).unwrap();
    assert!(eml.contains("Auto-Submitted: auto-replied"));
    assert!(
        std::fs::read_dir(maildir.join("new"))
            .unwrap()
            .next()
            .is_none(),
        "new/ is empty"
    );
    let cur: Vec<_> = std::fs::read_dir(maildir.join("cur"))
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(cur.len(), 1);
    assert!(cur[0].file_name().to_string_lossy().ends_with(":2,S"));

    let term = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            term.elapsed() < Duration::from_secs(10),
            "did not stop within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    // The outbox row is marked sent.
    let out = d.outbox();
    assert_eq!(out[0]["status"], "sent");
}

/// Polls until `f` returns Some or the time is up.
fn wait_for<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn sighup_reloads_rules_and_keeps_the_old_set_on_error() {
    let d = Desk::new();
    let rules = d.dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    let rule =
        |sev: u8| format!("[[rule]]\nname = \"zebra\"\nseverity = {sev}\nsubject = [\"zebra\"]\n");
    std::fs::write(rules.join("local.toml"), rule(2)).unwrap();
    let c = daemon_config(d.dir.path(), "[rules]\ndir = \"rules\"\n");
    let stderr_path = d.dir.path().join("stderr.log");
    let mut child = d
        .cmd(&["--config", &c, "run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let new = d.data().join("Maildir").join("new");
    wait_for(20, || new.exists().then_some(())).expect("maildir");
    let deliver = |i: u32| {
        let tmp = d.data().join("Maildir").join("tmp").join(format!("{i}.x"));
        std::fs::write(
            &tmp,
            mail("a@kunde.de", "Zebra", &format!("z{i}@kunde.de"), "", "x"),
        )
        .unwrap();
        std::fs::rename(&tmp, new.join(format!("{i}.x"))).unwrap();
    };
    let severity_of = |i: usize| -> Option<i64> {
        let o = d.run(&["--config", &c, "tickets", "list", "--json"], None);
        let v: Value = serde_json::from_slice(&o.stdout).ok()?;
        let list = v.as_array()?;
        (list.len() == i)
            .then(|| list[0]["severity"].as_i64())
            .flatten()
    };
    let hup = |child: &std::process::Child| {
        Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
    };
    deliver(1);
    assert_eq!(wait_for(20, || severity_of(1)), Some(2));
    std::fs::write(rules.join("local.toml"), rule(1)).unwrap();
    hup(&child);
    let log = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    wait_for(10, || log().contains("reloaded").then_some(())).expect("reload logged");
    deliver(2);
    assert_eq!(wait_for(20, || severity_of(2)), Some(1));
    std::fs::write(
        rules.join("local.toml"),
        "[[rule]]\nname = \"zebra\"\nseverity = 7\n",
    )
    .unwrap();
    hup(&child);
    wait_for(10, || log().contains("not reloaded").then_some(())).expect("error logged");
    deliver(3);
    assert_eq!(wait_for(20, || severity_of(3)), Some(1), "old rules kept");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn ingest_hands_over_to_a_running_daemon_and_falls_back_without_one() {
    let d = Desk::new();
    let cfg = daemon_config(d.dir.path(), "");
    let mut child = d
        .cmd(&["--config", &cfg, "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = d.data().join("ingest.sock");
    wait_for(20, || sock.exists().then_some(())).expect("socket");
    let r = d.ingest(&mail(
        "anna@kunde.de",
        "Über Socket",
        "s1@kunde.de",
        "",
        "x",
    ));
    assert_eq!(r["action"], "created");
    assert_eq!(
        d.ingest(&mail(
            "anna@kunde.de",
            "Über Socket",
            "s1@kunde.de",
            "",
            "x"
        ))["action"],
        "duplicate"
    );
    // A second run is refused, and its probe of the socket is no message:
    // nothing quarantined (issue 14, item 8: an empty message was).
    let o = d.run(&["--config", &cfg, "run"], None);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("another ticketd run"),
        "{o:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let q = d.json(&["quarantine", "list", "--json"]);
    assert_eq!(q.as_array().map(Vec::len), Some(0), "{q}");
    // Empty input is no probe either: stored (quarantined) by ingest itself.
    let o = d.run(&["ingest"], Some(b""));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["action"], "quarantined");
    // Garbage through the socket is quarantined by the daemon, exit 0.
    let o = d.run(&["ingest"], Some(&[0xffu8, 0, 1]));
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["action"], "quarantined");
    // --direct stores in-process even with the daemon up.
    let o = d.run(
        &["ingest", "--direct"],
        Some(mail("b@kunde.de", "Direkt", "s2@kunde.de", "", "x").as_bytes()),
    );
    assert_eq!(o.status.code(), Some(0));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(!sock.exists(), "socket removed on stop");
    // Which path each message took.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sources: Vec<String> = rt.block_on(async {
        let pool =
            sqlx::SqlitePool::connect(&format!("sqlite:{}", d.data().join("ticketd.db").display()))
                .await
                .unwrap();
        sqlx::query_scalar("SELECT source FROM messages ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap()
    });
    // The first mail and the garbage by the daemon; the empty input and
    // --direct in-process.
    assert_eq!(sources, vec!["pipe", "stdin", "pipe", "stdin"]);
    // Without a daemon (a stale socket file left behind): stored in-process.
    std::fs::write(&sock, "").unwrap();
    let r = d.ingest(&mail("c@kunde.de", "Ohne Daemon", "s3@kunde.de", "", "x"));
    assert_eq!(r["action"], "created");
}

/// A plain HTTP/1.1 GET against the daemon's endpoint: status, headers, body.
fn http_get(addr: &str, path: &str) -> (u16, String, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// Sample lines (no comments) of a Prometheus exposition.
fn has_sample(metrics: &str, line: &str) -> bool {
    metrics.lines().any(|l| l == line)
}

/// Starts `run` with JSON logs into a file and waits for the address of
/// its HTTP endpoint (port 0 in the config: the log says which it got).
fn start_with_http(d: &Desk, cfg: &str) -> (Daemon, String, PathBuf) {
    let log = d.dir.path().join("run.log");
    let child = Daemon(
        d.cmd(&["--config", cfg, "run"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let addr = wait_for(20, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["fields"]["message"] == "serving /healthz and /metrics")
            .and_then(|v| v["fields"]["addr"].as_str().map(str::to_string))
    })
    .unwrap_or_else(|| panic!("no endpoint: {}", std::fs::read_to_string(&log).unwrap()));
    (child, addr, log)
}

/// A `ticketd run` that is killed when a failing test unwinds past it.
struct Daemon(std::process::Child);

impl Daemon {
    fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// SIGTERM, and a clean exit within 10 s.
fn stop(child: &mut Daemon) {
    child.signal("-TERM");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn run_serves_metrics_and_health_on_loopback() {
    let d = Desk::new();
    let cfg = daemon_config(d.dir.path(), "[log]\nformat = \"json\"\n");
    let (mut child, addr, _log) = start_with_http(&d, &cfg);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    // No IMAP mailbox configured: healthy.
    let (status, _, body) = http_get(&addr, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, head, body) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(has_sample(
        &body,
        "ticketd_messages_total{action=\"created\",source=\"maildir\"} 0"
    ));
    assert!(has_sample(
        &body,
        "ticketd_outbox_mails{status=\"queued\"} 0"
    ));

    // One mail the Maildir way, one through the MTA pipe (handed over).
    let maildir = d.data().join("Maildir");
    let tmp = maildir.join("tmp").join("1700000001.M1.host");
    std::fs::write(
        &tmp,
        mail("anna@kunde.de", "Drucker", "m1@kunde.de", "", "x"),
    )
    .unwrap();
    std::fs::rename(&tmp, maildir.join("new").join("1700000001.M1.host")).unwrap();
    let r = d.ingest(&mail("bob@kunde.de", "VPN", "m2@kunde.de", "", "y"));
    assert_eq!(r["action"], "created");

    // Both confirmations delivered by the file transport and marked sent.
    let body = wait_for(20, || {
        let (_, _, body) = http_get(&addr, "/metrics");
        has_sample(&body, "ticketd_outbox_mails{status=\"sent\"} 2").then_some(body)
    })
    .expect("two confirmations sent");
    for line in [
        "ticketd_messages_total{action=\"created\",source=\"maildir\"} 1",
        "ticketd_messages_total{action=\"created\",source=\"pipe\"} 1",
        "ticketd_messages_total{action=\"duplicate\",source=\"pipe\"} 0",
        "ticketd_ingest_latency_seconds_count{source=\"maildir\"} 1",
        "ticketd_ingest_latency_seconds_count{source=\"pipe\"} 1",
        "ticketd_ingest_latency_seconds_bucket{source=\"pipe\",le=\"+Inf\"} 1",
        "ticketd_outbox_mails{status=\"queued\"} 0",
        "ticketd_outbox_mails{status=\"sending\"} 0",
        "ticketd_outbox_mails{status=\"failed\"} 0",
        "ticketd_outbox_failed_total 0",
    ] {
        assert!(has_sample(&body, line), "{line} in\n{body}");
    }
    // A hand-over takes milliseconds, not seconds.
    assert!(has_sample(
        &body,
        "ticketd_ingest_latency_seconds_bucket{source=\"pipe\",le=\"1\"} 1"
    ));
    // The same mail again through the pipe is a counted duplicate.
    let r = d.ingest(&mail("bob@kunde.de", "VPN", "m2@kunde.de", "", "y"));
    assert_eq!(r["action"], "duplicate");
    let (_, _, body) = http_get(&addr, "/metrics");
    assert!(has_sample(
        &body,
        "ticketd_messages_total{action=\"duplicate\",source=\"pipe\"} 1"
    ));

    assert_eq!(http_get(&addr, "/nothing").0, 404);
    let (status, _, body) = http_get(&addr, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    stop(&mut child);
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "endpoint closed on stop"
    );
}

#[test]
fn run_refuses_to_start_when_the_http_port_is_taken() {
    let d = Desk::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let cfg = write_config(d.dir.path(), &format!("[http]\nlisten = \"{addr}\"\n"));
    let o = d.run(&["--config", cfg.to_str().unwrap(), "run"], None);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "ticketd: cannot listen on {addr} for /healthz and /metrics"
        )),
        "{err}"
    );
    // It stopped before any source started.
    assert!(!d.data().join("ingest.sock").exists());
    assert!(!d.data().join("Maildir").exists());
    // `listen = ""` disables the endpoint: then it starts.
    let cfg = write_config(d.dir.path(), "[http]\nlisten = \"\"\n");
    let mut child = Daemon(
        d.cmd(&["--config", cfg.to_str().unwrap(), "run"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sock = d.data().join("ingest.sock");
    wait_for(20, || sock.exists().then_some(())).expect("started");
    stop(&mut child);
}

/// Reads notices from a notify socket until `want` arrives; returns all
/// lines seen so far.
fn notices_until(sock: &std::os::unix::net::UnixDatagram, seen: &mut Vec<String>, want: &str) {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while !seen.iter().any(|l| l == want) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no {want} in {seen:?}"
        );
        match sock.recv(&mut buf) {
            Ok(n) => seen.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_string),
            ),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// Every notice that arrives within `window`.
fn notices_for(sock: &std::os::unix::net::UnixDatagram, window: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < window {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_string),
            );
        }
    }
    seen
}

#[test]
fn run_tells_systemd_ready_watchdog_and_stopping() {
    let d = Desk::new();
    let cfg = daemon_config(d.dir.path(), "");
    let path = d.dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = Daemon(
        d.cmd(&["--config", &cfg, "run"])
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "400000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut seen = Vec::new();
    notices_until(&sock, &mut seen, "READY=1");
    // Ready means taking mail: the hand-over socket and the Maildir exist.
    assert!(d.data().join("ingest.sock").exists());
    assert!(d.data().join("Maildir").join("new").is_dir());
    assert!(
        seen.iter().any(|l| l.starts_with("STATUS=taking mail")),
        "{seen:?}"
    );
    // WATCHDOG=1 every 200 ms (half of WATCHDOG_USEC): 6 in 1.2 s, give
    // or take a tick on a busy machine.
    let seen = notices_for(&sock, Duration::from_millis(1200));
    let dogs = seen.iter().filter(|l| *l == "WATCHDOG=1").count();
    assert!((4..=8).contains(&dogs), "{dogs} watchdog notices in 1.2 s");
    let mut seen = Vec::new();
    child.signal("-TERM");
    notices_until(&sock, &mut seen, "STOPPING=1");
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
}

#[test]
fn run_without_watchdog_sends_none_and_reload_is_announced() {
    let d = Desk::new();
    let cfg = daemon_config(d.dir.path(), "");
    let path = d.dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = Daemon(
        d.cmd(&["--config", &cfg, "run"])
            .env("NOTIFY_SOCKET", &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut seen = Vec::new();
    notices_until(&sock, &mut seen, "READY=1");
    seen.clear();
    child.signal("-HUP");
    notices_until(&sock, &mut seen, "RELOADING=1");
    notices_until(&sock, &mut seen, "READY=1");
    assert!(
        seen.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{seen:?}"
    );
    seen.extend(notices_for(&sock, Duration::from_millis(800)));
    assert!(!seen.iter().any(|l| l == "WATCHDOG=1"), "{seen:?}");
    stop(&mut child);
}

#[test]
fn tickets_belong_to_the_organisation_of_their_sender() {
    let d = Desk::new();
    let customers = d.data().join("customers");
    std::fs::create_dir_all(&customers).unwrap();
    std::fs::write(
        customers.join("main.toml"),
        "[[plan]]\nname = \"Premium\"\n\n[[organisation]]\nid = \"stadtwerke\"\nname = \"Stadtwerke Beispiel\"\n\
         plan = \"Premium\"\ndomains = [\"kunde.de\"]\ncontacts = [\"it@partner.example\"]\n\
         notify_new = [\"leitung@kunde.de\"]\n",
    )
    .unwrap();
    let by_domain = d.ingest(&mail(
        "anna@mail.kunde.de",
        "VPN down",
        "o1@kunde.de",
        "",
        "x",
    ));
    let by_contact = d.ingest(&mail(
        "it@partner.example",
        "Printer",
        "o2@partner.example",
        "",
        "x",
    ));
    let stranger = d.ingest(&mail("someone@gmail.com", "Hello", "o3@gmail.com", "", "x"));
    let org = |o: &Value| {
        d.ticket(o["ticket"].as_str().unwrap())["organisation"]
            .as_str()
            .map(str::to_string)
    };
    assert_eq!(org(&by_domain).as_deref(), Some("stadtwerke"));
    assert_eq!(org(&by_contact).as_deref(), Some("stadtwerke"));
    assert_eq!(org(&stranger), None);
    // The organisation's chosen recipient hears of both its new tickets.
    let told: Vec<Value> = d
        .outbox()
        .into_iter()
        .filter(|m| m["kind"] == "new-ticket")
        .collect();
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(told.iter().all(|m| m["to"][0] == "leitung@kunde.de"));
    let raw = told[0]["raw"].as_str().unwrap();
    assert!(raw.contains("Auto-Submitted: auto-generated"), "{raw}");
    let list = d.json(&["tickets", "list", "--json"]);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["organisation"] == "stadtwerke"));
}

#[test]
fn customers_import_adds_a_csv_and_refuses_conflicts() {
    let d = Desk::new();
    let csv = d.dir.path().join("kunden.csv");
    std::fs::write(
        &csv,
        "id,name,plan,domains,contacts,account_manager\n\
         korn,\"Bäckerei Korn, Inh. Meier\",Basic,korn.example,,am@provider.example\n\
         stadtwerke,Stadtwerke Beispiel,Premium,\"kunde.de;sw.example\",anna@kunde.de,\n",
    )
    .unwrap();
    let o = d.run(&["customers", "import", csv.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(d.data().join("customers").join("kunden.toml").exists());
    let list = d.json(&["customers", "list", "--json"]);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["id"].as_str())
        .collect();
    assert_eq!(ids, ["korn", "stadtwerke"]);
    // Mail from an imported domain is the organisation's.
    let m = d.ingest(&mail("hans@sw.example", "Backup", "i1@sw.example", "", "x"));
    assert_eq!(
        d.ticket(m["ticket"].as_str().unwrap())["organisation"],
        "stadtwerke"
    );

    // A second file that claims a domain already taken is refused whole.
    let again = d.dir.path().join("more.csv");
    std::fs::write(&again, "id,name,domains\nother,Other,korn.example\n").unwrap();
    let o = d.run(&["customers", "import", again.to_str().unwrap()], None);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("korn.example") && err.contains("not imported"),
        "{err}"
    );
    assert!(!d.data().join("customers").join("more.toml").exists());
    // The same file twice needs --replace.
    let o = d.run(&["customers", "import", csv.to_str().unwrap()], None);
    assert!(!o.status.success());
    let o = d.run(
        &["customers", "import", "--replace", csv.to_str().unwrap()],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A broken directory stops check-config with file and line.
    std::fs::write(
        d.data().join("customers").join("zz.toml"),
        "[[organisation]]\nid = \"x\"\n",
    )
    .unwrap();
    let o = d.run(&["check-config"], None);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("zz.toml"));
}

#[test]
fn unknown_senders_get_a_registration_notice_and_cases_over_quota_are_reported() {
    let d = Desk::new();
    let customers = d.data().join("customers");
    std::fs::create_dir_all(&customers).unwrap();
    std::fs::write(
        customers.join("c.toml"),
        "[[plan]]\nname = \"Basic\"\ncases_per_quarter = 1\n\n[[organisation]]\nid = \"korn\"\n\
         name = \"Bäckerei Korn\"\nplan = \"Basic\"\ndomains = [\"korn.example\"]\n\
         account_manager = \"vertrieb@provider.example\"\n",
    )
    .unwrap();
    let cfg = d.dir.path().join("reject.toml");
    std::fs::write(&cfg, "[intake]\nunknown_senders = \"reject\"\n").unwrap();
    let ingest = |raw: &str| -> Value {
        let o = d.run(
            &["--config", cfg.to_str().unwrap(), "ingest"],
            Some(raw.as_bytes()),
        );
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    };
    // A stranger: stored, no ticket, told how to register.
    let o = ingest(&mail(
        "eve@unbekannt.example",
        "Frage",
        "u1@unbekannt.example",
        "",
        "Hallo",
    ));
    assert_eq!(o["action"], "suppressed");
    assert!(o["ticket"].is_null());
    assert!(o["reason"]
        .as_str()
        .unwrap()
        .contains("no registered customer"));
    let out = d.outbox();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["to"][0], "eve@unbekannt.example");
    assert_eq!(out[0]["kind"], "registration");
    let raw = out[0]["raw"].as_str().unwrap();
    assert!(raw.contains("Auto-Submitted: auto-replied"), "{raw}");
    assert!(raw.contains("In-Reply-To: <u1@unbekannt.example>"), "{raw}");
    // The customer's first case of the quarter is within the plan …
    let first = ingest(&mail(
        "hans@korn.example",
        "Kasse",
        "k1@korn.example",
        "",
        "x",
    ));
    assert_eq!(first["action"], "created");
    assert_eq!(
        d.ticket(first["ticket"].as_str().unwrap())["flags"],
        serde_json::json!([])
    );
    // … the second is over it: a ticket all the same, flagged, and the
    // account manager hears of it.
    let second = ingest(&mail(
        "hans@korn.example",
        "Waage",
        "k2@korn.example",
        "",
        "x",
    ));
    assert_eq!(second["action"], "created");
    let t = d.ticket(second["ticket"].as_str().unwrap());
    assert_eq!(t["flags"], serde_json::json!(["over-quota"]));
    let am: Vec<Value> = d
        .outbox()
        .into_iter()
        .filter(|m| m["kind"] == "over-quota")
        .collect();
    assert_eq!(am.len(), 1);
    assert_eq!(am[0]["to"][0], "vertrieb@provider.example");
    let raw = am[0]["raw"].as_str().unwrap();
    assert!(raw.contains("Auto-Submitted: auto-generated"), "{raw}");
    assert!(raw.contains("korn"), "{raw}");
    // Both tickets still got their confirmations.
    let confirmations = d
        .outbox()
        .into_iter()
        .filter(|m| m["kind"] == "confirmation")
        .count();
    assert_eq!(confirmations, 2);
}

#[test]
fn monitoring_alerts_make_one_ticket_per_incident_and_recoveries_resolve_it() {
    let d = Desk::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/alerts/nagios");
    let run = |name: &str| -> Value {
        let raw = std::fs::read(dir.join(name)).unwrap();
        let o = d.run(&["ingest"], Some(&raw));
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let problem = run("01-service-problem.eml");
    assert_eq!(problem["action"], "created");
    assert_eq!(problem["kind"], "alert");
    assert_eq!(problem["severity"], 3, "WARNING");
    let number = problem["ticket"].as_str().unwrap().to_string();
    let repeat = run("02-service-problem-repeat.eml");
    assert_eq!(repeat["action"], "appended");
    assert_eq!(repeat["ticket"], number.as_str());
    let t = d.ticket(&number);
    assert_eq!(t["incident"]["occurrences"], 2, "{t}");
    assert_eq!(
        t["articles"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["direction"] == "in")
            .count(),
        1,
        "a repeat only counts"
    );
    let recovery = run("03-service-recovery.eml");
    assert_eq!(recovery["action"], "appended");
    assert_eq!(d.ticket(&number)["status"], "resolved");
    // A problem within the flap window re-opens the same ticket.
    let again = run("04-service-problem-again.eml");
    assert_eq!(again["ticket"], number.as_str(), "{again}");
    assert_eq!(d.ticket(&number)["status"], "open");
    // A host alert is an incident of its own; its recovery resolves it.
    let down = run("06-host-down.eml");
    assert_eq!(down["action"], "created");
    assert_eq!(down["severity"], 2, "DOWN on a host nobody marked critical");
    assert_ne!(down["ticket"], number.as_str());
    let up = run("07-host-up.eml");
    assert_eq!(
        d.ticket(up["ticket"].as_str().unwrap())["status"],
        "resolved"
    );
    // A recovery with nothing open is stored and ignored.
    let raw = std::fs::read_to_string(dir.join("03-service-recovery.eml"))
        .unwrap()
        .replace("Disk /", "Swap")
        .replace("Message-Id: <", "Message-Id: <stray.");
    let o = d.run(&["ingest"], Some(raw.as_bytes()));
    let stray: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(stray["action"], "suppressed", "{stray}");
    assert!(stray["ticket"].is_null());
    // Alerts are never answered.
    assert!(d.outbox().is_empty(), "{:?}", d.outbox());
    assert_eq!(
        d.json(&["tickets", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn an_alert_belongs_to_the_owner_of_its_host_and_a_critical_host_is_severity_1() {
    let d = Desk::new();
    let customers = d.data().join("customers");
    std::fs::create_dir_all(&customers).unwrap();
    // The provider's own Nagios sends; the host says whose incident it is.
    std::fs::write(
        customers.join("c.toml"),
        "[[organisation]]\nid = \"shop\"\nname = \"Webshop GmbH\"\ndomains = [\"shop.example\"]\n\
         critical_hosts = [\"WEB01.example.com\"]\nnotify_new = [\"ops@shop.example\"]\n",
    )
    .unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/alerts/nagios");
    let raw = std::fs::read(dir.join("06-host-down.eml")).unwrap();
    let o = d.run(&["ingest"], Some(&raw));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["action"], "created", "{v}");
    assert_eq!(v["severity"], 1, "DOWN on a critical host");
    let t = d.ticket(v["ticket"].as_str().unwrap());
    assert_eq!(t["organisation"], "shop");
    // No confirmation to the monitoring system; the customer's ops are told.
    let to: Vec<String> = d
        .outbox()
        .iter()
        .map(|m| {
            format!(
                "{} {}",
                m["kind"].as_str().unwrap(),
                m["to"][0].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(to, ["new-ticket ops@shop.example"]);
}

#[test]
fn route_rules_forward_and_answer_and_ignore_rules_only_store() {
    let d = Desk::new();
    let customers = d.data().join("customers");
    std::fs::create_dir_all(&customers).unwrap();
    std::fs::write(
        customers.join("main.toml"),
        "[[organisation]]\nid = \"stadtwerke\"\nname = \"Stadtwerke Beispiel\"\n\
         domains = [\"kunde.de\"]\naccount_manager = \"vertrieb@desk.example\"\n",
    )
    .unwrap();
    // The embedded routing rules: an invoice question goes to the account
    // manager, and the sender is told so; nothing is a ticket.
    let o = d.ingest(&mail(
        "Birgit Haake <haake@kunde.de>",
        "Rechnung 2026-10-4471 – Position doppelt",
        "inv1@kunde.de",
        "",
        "Bitte korrigieren Sie die Rechnung.",
    ));
    assert_eq!(o["action"], "routed", "{o}");
    assert_eq!(o["ticket"], Value::Null);
    let out = d.outbox();
    let forward = out
        .iter()
        .find(|m| m["kind"] == "forward")
        .expect("forward");
    assert_eq!(forward["to"][0], "vertrieb@desk.example");
    let raw = forward["raw"].as_str().unwrap();
    assert!(raw.contains("Content-Type: message/rfc822"), "{raw}");
    assert!(
        raw.contains("Message-ID: <inv1@kunde.de>"),
        "the message whole: {raw}"
    );
    assert!(
        raw.contains("Reply-To: \"Birgit Haake\" <haake@kunde.de>")
            || raw.contains("Reply-To: Birgit Haake <haake@kunde.de>"),
        "{raw}"
    );
    assert!(raw.contains("Auto-Submitted: auto-generated"), "{raw}");
    let answer = out.iter().find(|m| m["kind"] == "answer").expect("answer");
    assert_eq!(answer["to"][0], "haake@kunde.de");
    let raw = answer["raw"].as_str().unwrap();
    assert!(raw.contains("In-Reply-To: <inv1@kunde.de>"), "{raw}");
    assert!(raw.contains("Auto-Submitted: auto-replied"), "{raw}");
    assert_eq!(out.len(), 2, "no confirmation: {out:?}");
    assert!(d
        .json(&["tickets", "list", "--json"])
        .as_array()
        .unwrap()
        .is_empty());

    // Spam-flagged mail: stored, nothing else.
    let o = d.ingest(&mail(
        "win@lottery.example",
        "You won",
        "spam1@lottery.example",
        "X-Spam-Flag: YES\r\n",
        "Claim now",
    ));
    assert_eq!(o["action"], "ignored", "{o}");
    assert_eq!(d.outbox().len(), 2);
    // Kept whole: a second delivery is a duplicate of the stored message.
    let again = d.ingest(&mail(
        "win@lottery.example",
        "You won",
        "spam1@lottery.example",
        "X-Spam-Flag: YES\r\n",
        "Claim now",
    ));
    assert_eq!(again["action"], "duplicate");

    // A stranger's invoice question has no account manager to go to: a
    // ticket, with a note saying why.
    let o = d.ingest(&mail(
        "eve@elsewhere.example",
        "Invoice INV-1 missing PO",
        "inv2@elsewhere.example",
        "",
        "Please reissue.",
    ));
    assert_eq!(o["action"], "created", "{o}");
    let t = d.ticket(o["ticket"].as_str().unwrap());
    assert!(
        t.to_string().contains("handled as a support request"),
        "{t}"
    );
}

#[test]
fn queues_tags_and_customer_overrides_reach_the_ticket_and_explain() {
    let d = Desk::new();
    let customers = d.data().join("customers");
    std::fs::create_dir_all(&customers).unwrap();
    std::fs::write(
        customers.join("main.toml"),
        "[[plan]]\nname = \"Premium\"\n\n[[organisation]]\nid = \"stadtwerke\"\nname = \"Stadtwerke\"\n\
         plan = \"Premium\"\ndomains = [\"kunde.de\"]\n",
    )
    .unwrap();
    let rules = d.dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("10-customers.toml"),
        "mode = \"first\"\n[[rule]]\nname = \"premium-erp\"\ncustomer = [\"stadtwerke\"]\nplan = [\"premium\"]\n\
         text = [\"erp (steht|hängt)\"]\nseverity = 1\nqueue = \"erp\"\ntags = [\"erp\", \"premium\"]\n",
    )
    .unwrap();
    let cfg = write_config(
        d.dir.path(),
        &format!("[rules]\ndir = {:?}\ndefaults = true\n", rules),
    );
    let c = cfg.to_str().unwrap();
    let raw = mail(
        "anna@kunde.de",
        "ERP hängt",
        "erp1@kunde.de",
        "",
        "Seit 8 Uhr.",
    );
    let o = d.run(&["--config", c, "ingest"], Some(raw.as_bytes()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o["severity"], 1, "{o}");
    let t = d.run(
        &[
            "--config",
            c,
            "tickets",
            "show",
            o["ticket"].as_str().unwrap(),
            "--json",
        ],
        None,
    );
    let t: Value = serde_json::from_slice(&t.stdout).unwrap();
    assert_eq!(t["queue"], "erp", "{t}");
    assert_eq!(t["tags"], serde_json::json!(["erp", "premium"]), "{t}");
    // The same words from a stranger: the defaults decide.
    let f = d.dir.path().join("erp.eml");
    std::fs::write(
        &f,
        mail(
            "x@gmail.com",
            "ERP hängt",
            "erp2@gmail.com",
            "",
            "Seit 8 Uhr.",
        ),
    )
    .unwrap();
    let o = d.run(
        &["--config", c, "classify", "--explain", f.to_str().unwrap()],
        None,
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("customer: (none"), "{text}");
    assert!(
        !text.contains("=> ") || !text.contains("premium-erp ["),
        "{text}"
    );
    let f2 = d.dir.path().join("erp-kunde.eml");
    std::fs::write(&f2, &raw).unwrap();
    let o = d.run(
        &["--config", c, "classify", "--explain", f2.to_str().unwrap()],
        None,
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("customer: stadtwerke, plan Premium"),
        "{text}"
    );
    assert!(
        text.contains(
            "premium-erp → severity 1, queue erp, tags erp premium [decides severity, queue]"
        ),
        "{text}"
    );
    // A route rule naming a template that does not exist is a config error.
    std::fs::write(
        rules.join("20-route.toml"),
        "[[rule]]\nname = \"sales\"\nsubject = [\"angebot\"]\naction = \"route\"\nreply = \"sales-answer\"\n",
    )
    .unwrap();
    let o = d.run(&["--config", c, "check-config"], None);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("reply template sales-answer.de.subject does not exist"),
        "{e}"
    );
}

#[test]
fn staff_act_on_a_ticket_from_the_command_line_and_see_its_sla() {
    let d = Desk::new();
    let r = d.ingest(&mail(
        "Anna <anna@kunde.de>",
        "Drucker defekt",
        "p1@kunde.de",
        "",
        "Der Drucker geht nicht.",
    ));
    let n = r["ticket"].as_str().unwrap().to_string();
    let t = d.ticket(&n);
    assert_eq!(t["sla"]["policy"], "Standard", "{t}");
    assert_eq!(t["sla"]["state"], "running");

    // A reply read from stdin, then waiting for the customer.
    let o = d.run(
        &["tickets", "reply", &n, "--pending", "--as", "tom"],
        Some("Bitte starten Sie den Drucker neu.\n".as_bytes()),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("reply queued; ticket pending; SLA paused"),
        "{out}"
    );
    let t = d.ticket(&n);
    assert_eq!(t["status"], "pending");
    assert_eq!(t["sla"]["targets"][0]["state"], "met");
    assert_eq!(t["sla"]["targets"][1]["state"], "paused");
    let reply = d
        .outbox()
        .into_iter()
        .find(|o| o["kind"] == "reply")
        .expect("the reply is queued");
    assert_eq!(reply["to"][0], "anna@kunde.de");
    let kinds: Vec<&str> = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"staff-reply") && kinds.contains(&"waiting"),
        "{kinds:?}"
    );
    assert!(t["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["detail"].as_str().unwrap().contains("cli:tom")));

    // Severity, note, status; nonsense is refused with a clear message.
    for args in [
        vec!["tickets", "severity", &n, "1"],
        vec!["tickets", "note", &n, "rief an"],
        vec!["tickets", "status", &n, "open"],
    ] {
        let o = d.run(&args, None);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let o = d.run(&["tickets", "status", &n, "sleeping"], None);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("use open, pending, resolved or closed"));
    let o = d.run(&["tickets", "severity", &n, "7"], None);
    assert!(String::from_utf8_lossy(&o.stderr).contains("severity must be 1–4"));
    let o = d.run(&["tickets", "reply", "99999", "--text", "x"], None);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no ticket 99999"));

    let o = d.run(&["sla", "explain", &n], None);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("Policy:    no plan: default plan Standard"),
        "{text}"
    );
    assert!(text.contains("calendar: always (24/7)"), "{text}");
    let s = d.json(&["sla", "status", "--json"]);
    assert_eq!(s["open"], 1, "{s}");
    assert_eq!(s["running"], 1, "{s}");
}

#[test]
fn sla_configuration_errors_are_clear() {
    let d = Desk::new();
    let cfg = write_config(
        d.dir.path(),
        "[[sla.digest]]\ncron = \"0 8 * *\"\nto = [\"team\"]\n[sla.audiences]\nteam = [\"mail:team@desk.example\"]\n",
    );
    let o = d.run(&["--config", cfg.to_str().unwrap(), "check-config"], None);
    assert_eq!(o.status.code(), Some(78));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("sla.digest") && err.contains("0 8 * *"),
        "{err}"
    );
    let cfg = write_config(
        d.dir.path(),
        "[sla.audiences]\nteam = [\"team@desk.example\"]\n",
    );
    let o = d.run(&["--config", cfg.to_str().unwrap(), "check-config"], None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("neither \"mail:ADDRESS\" nor \"chat:CHANNEL\""),
        "{err}"
    );
    let policies = d.dir.path().join("policies.toml");
    std::fs::write(
        &policies,
        "[[policy]]\nplan = \"Basic\"\nfirst_response = \"soon\"\n",
    )
    .unwrap();
    let cfg = write_config(
        d.dir.path(),
        &format!("[sla]\npolicies = {:?}\n", policies.to_str().unwrap()),
    );
    let o = d.run(&["--config", cfg.to_str().unwrap(), "check-config"], None);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("policies.toml") && err.contains("soon"),
        "{err}"
    );
}

#[test]
fn run_fires_sla_reminders_through_the_outbox_and_counts_the_breach() {
    let d = Desk::new();
    // A policy of seconds, so that the daemon's own timer task fires the
    // stages while the test watches.
    let policies = d.dir.path().join("policies.toml");
    std::fs::write(
        &policies,
        "default_plan = \"Fast\"\n[[reminder]]\nat = 50\nto = [\"team\"]\n[[reminder]]\nat = 100\nto = [\"team\"]\n\
         [[policy]]\nplan = \"Fast\"\nfirst_response = \"4s\"\n",
    )
    .unwrap();
    let cfg = daemon_config(
        d.dir.path(),
        &format!(
            "[log]\nformat = \"json\"\n[sla]\npolicies = {:?}\n[sla.audiences]\nteam = [\"mail:team@desk.example\"]\n",
            policies.to_str().unwrap()
        ),
    );
    let (mut child, addr, _log) = start_with_http(&d, &cfg);
    let r = d.ingest(&mail(
        "anna@kunde.de",
        "Drucker defekt",
        "f1@kunde.de",
        "",
        "Geht nicht.",
    ));
    let n = r["ticket"].as_str().unwrap().to_string();
    let sent = d.data().join("sent");
    let start = Instant::now();
    let mut reminders: Vec<String> = Vec::new();
    while start.elapsed() < Duration::from_secs(20) {
        reminders = std::fs::read_dir(&sent)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .filter(|t| t.contains("To: team@desk.example"))
                    .collect()
            })
            .unwrap_or_default();
        if reminders.len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        reminders.len(),
        2,
        "50 % and breach delivered: {reminders:?}"
    );
    assert!(reminders
        .iter()
        .all(|t| t.contains("Auto-Submitted: auto-generated")));
    let (_, _, body) = http_get(&addr, "/metrics");
    assert!(body.contains("ticketd_sla_breaches_total 1"), "{body}");
    assert!(body.contains("ticketd_sla_reminders_total 1"), "{body}");
    assert!(
        body.contains("ticketd_sla_open_tickets{state=\"breached\"} 1"),
        "{body}"
    );
    stop(&mut child);
    let t = d.json(&["--config", &cfg, "tickets", "show", &n, "--json"]);
    assert_eq!(t["sla"]["state"], "breached", "{t}");
    let fired = t["sla"]["reminders"].as_array().unwrap();
    assert_eq!(fired.len(), 2, "{fired:?}");
    assert!(fired
        .iter()
        .all(|r| r["outcome"].as_str().unwrap().starts_with("sent")));
}

#[test]
fn check_config_names_the_discord_setup_and_its_missing_token() {
    let d = Desk::new();
    let discord = "[discord]\nenabled = true\nguild = 1\nstaff_roles = [2]\nnotify = \"staff\"\ntoken_file = \"discord.token\"\n[discord.channels.staff]\nid = 3\n";
    let cfg = write_config(d.dir.path(), discord);
    let o = d.run(&["--config", cfg.to_str().unwrap(), "check-config"], None);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("discord") && err.contains("discord.token"),
        "{err}"
    );
    std::fs::write(d.dir.path().join("discord.token"), "abc\n").unwrap();
    let o = d.run(&["--config", cfg.to_str().unwrap(), "check-config"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Discord on (1 channels, 1 staff roles)"),
        "{out}"
    );
    let cfg = write_config(
        d.dir.path(),
        &format!("{discord}[sla.audiences]\nteam = [\"chat:oncall\"]\n"),
    );
    let o = d.run(&["--config", cfg.to_str().unwrap(), "check-config"], None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("chat channel \"oncall\" is not defined"),
        "{err}"
    );
}

/// An instant as the JSON output gives it.
fn instant(v: &Value) -> jiff::Timestamp {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an instant: {v}"))
}

/// The parsed body of the first `.eml` the file transport wrote, waiting
/// for it.
fn first_sent_body(d: &Desk) -> String {
    let sent = d.data().join("sent");
    let raw = wait_for(20, || {
        std::fs::read_dir(&sent).ok().and_then(|r| {
            r.filter_map(|e| e.ok())
                .find(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .and_then(|e| std::fs::read(e.path()).ok())
        })
    })
    .expect("a mail written by the file transport");
    ticketd::ingest::parse::parse(&raw).expect("parse").body
}

/// Issue 14, item 1: a Maildir file delivered 40 minutes before `run` took
/// it arrived then: that is its receipt timestamp in the confirmation and
/// on the ticket, and the commit is told apart.
#[test]
fn a_maildir_file_arrives_at_its_delivery_time_not_at_the_commit() {
    let d = Desk::new();
    let maildir = d.data().join("Maildir");
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    // Delivered the Maildir way, 40 minutes ago, while nothing ran.
    let delivered =
        jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - 40 * 60).unwrap();
    let tmp = maildir.join("tmp").join("1700000000.M2.host");
    std::fs::write(
        &tmp,
        mail(
            "anna@kunde.de",
            "Drucker defekt",
            "arrival-md@kunde.de",
            "",
            "Der Drucker geht nicht.",
        ),
    )
    .unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(std::time::SystemTime::from(delivered))
        .unwrap();
    std::fs::rename(&tmp, maildir.join("new").join("1700000000.M2.host")).unwrap();

    let cfg = daemon_config(d.dir.path(), "");
    let mut child = Daemon(
        d.cmd(&["--config", &cfg, "run"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let body = first_sent_body(&d);
    stop(&mut child);
    let local = delivered
        .to_zoned(jiff::tz::TimeZone::get("Europe/Berlin").unwrap())
        .strftime("%d.%m.%Y %H:%M:%S %Z")
        .to_string();
    assert!(
        body.contains(&format!("Eingangszeitstempel:   {local}")),
        "receipt {local} in\n{body}"
    );
    let list = d.json(&["tickets", "list", "--json"]);
    let n = list[0]["number"].as_str().unwrap().to_string();
    let t = d.ticket(&n);
    assert_eq!(instant(&t["arrived_at"]), delivered, "{t}");
    assert!(instant(&t["created_at"]) > delivered + jiff::SignedDuration::from_mins(39));
}

/// Issue 14, item 1: `ingest` handing a message to the running daemon
/// passes the instant it started reading stdin (the MTA's hand-over), not
/// the instant the daemon got it.
#[test]
fn ingest_hands_its_start_time_to_the_daemon_as_the_arrival() {
    let d = Desk::new();
    let cfg = daemon_config(d.dir.path(), "");
    let mut child = Daemon(
        d.cmd(&["--config", &cfg, "run"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sock = d.data().join("ingest.sock");
    wait_for(20, || sock.exists().then_some(())).expect("socket");
    let before = jiff::Timestamp::now();
    let mut ingest = d
        .cmd(&["ingest"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A slow MTA: the message takes 3 s to come through the pipe (ingest
    // itself may take a second to start on a loaded machine; its arrival
    // is when it starts reading).
    std::thread::sleep(Duration::from_millis(3000));
    let written = jiff::Timestamp::now();
    {
        let mut si = ingest.stdin.take().unwrap();
        si.write_all(
            mail(
                "anna@kunde.de",
                "Über Socket",
                "arrival-pipe@kunde.de",
                "",
                "x",
            )
            .as_bytes(),
        )
        .unwrap();
    }
    let o = ingest.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["action"], "created");
    // The confirmation's receipt timestamp is the start of ingest, more
    // than a second before the daemon had the message.
    let body = first_sent_body(&d);
    stop(&mut child);
    let receipt = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("Eingangszeitstempel:"))
        .and_then(|v| v.trim().rsplit_once(' '))
        .and_then(|(local, _zone)| jiff::civil::DateTime::strptime("%d.%m.%Y %H:%M:%S", local).ok())
        .and_then(|dt| dt.in_tz("Europe/Berlin").ok())
        .map(|z| z.timestamp())
        .unwrap_or_else(|| panic!("a receipt timestamp in\n{body}"));
    assert!(
        receipt + jiff::SignedDuration::from_secs(1) < written,
        "receipt {receipt} is before the message was written at {written}"
    );
    let t = d.ticket(r["ticket"].as_str().unwrap());
    let arrived = instant(&t["arrived_at"]);
    assert!(
        before <= arrived && arrived + jiff::SignedDuration::from_secs(1) < written,
        "arrival {arrived} is the start of ingest (between {before} and {written})"
    );
    // Stored times keep milliseconds: the daemon may commit within the
    // millisecond the test wrote the message in.
    assert!(
        instant(&t["created_at"]) + jiff::SignedDuration::from_millis(1) > written,
        "{t}"
    );
    // Through the socket (source `pipe`), not stored in-process.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows: Vec<(String, String)> = rt.block_on(async {
        let pool =
            sqlx::SqlitePool::connect(&format!("sqlite:{}", d.data().join("ticketd.db").display()))
                .await
                .unwrap();
        sqlx::query_as("SELECT source, arrived_at FROM messages ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap()
    });
    assert_eq!(
        rows,
        vec![("pipe".to_string(), ticketd::store::ts(arrived))]
    );
}

/// Issue 14, item 12: every configuration problem (the file, rules, the
/// policy file, the customer directory) exits 78 (EX_CONFIG) with one line
/// that names the file and, where there is one, a real line.
#[test]
fn every_configuration_problem_exits_78_with_file_and_line_once() {
    let d = Desk::new();
    let dir = d.dir.path();
    let check = |cfg: &Path| d.run(&["--config", cfg.to_str().unwrap(), "check-config"], None);
    let one_line = |o: &Output, wants: &[&str]| {
        // Warnings (of the embedded policies' audiences) aside.
        let err: String = String::from_utf8_lossy(&o.stderr)
            .lines()
            .filter(|l| !l.contains(" WARN "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(o.status.code(), Some(78), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!err.contains(":0:"), "names no line 0: {err}");
        for w in wants {
            assert!(err.contains(w), "{w:?} in {err}");
        }
        err
    };
    // A rule file with a wrong value: its file and line.
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("10-local.toml"),
        "[[rule]]\nname = \"x\"\nseverity = 9\nsubject = [\"x\"]\n",
    )
    .unwrap();
    let cfg = write_config(dir, "[rules]\ndir = \"rules\"\n");
    one_line(&check(&cfg), &["10-local.toml:3:", "severity"]);
    // The same for `classify`, which compiles the rules too.
    let msg = dir.join("m.eml");
    std::fs::write(&msg, mail("a@kunde.de", "x", "c@kunde.de", "", "x")).unwrap();
    let o = d.run(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "classify",
            msg.to_str().unwrap(),
        ],
        None,
    );
    one_line(&o, &["10-local.toml:3:"]);
    // A rules directory that does not exist: the directory, no line 0.
    let cfg = write_config(dir, "[rules]\ndir = \"no-such-rules\"\n");
    one_line(&check(&cfg), &["no-such-rules", "No such file"]);
    // A policy file with broken TOML: its file and line, one line (toml's
    // own text spans several).
    std::fs::write(
        dir.join("sla-policies.toml"),
        "# policies\n\n[[policy\nname = \"x\"\n",
    )
    .unwrap();
    let cfg = write_config(dir, "[sla]\npolicies = \"sla-policies.toml\"\n");
    one_line(&check(&cfg), &["sla-policies.toml:3:"]);
    // A customer directory with broken TOML.
    let customers = dir.join("customers");
    std::fs::create_dir_all(&customers).unwrap();
    std::fs::write(customers.join("a.toml"), "[[organisation]]\nid = \n").unwrap();
    let cfg = write_config(dir, "[customers]\ndir = \"customers\"\n");
    one_line(&check(&cfg), &["a.toml:2:"]);
    // `run` refuses the same directory with the same code.
    let o = d.run(&["--config", cfg.to_str().unwrap(), "run"], None);
    one_line(&o, &["a.toml:2:"]);
    // A config file that cannot be read: its cause once.
    let o = d.run(&["--config", "/nonexistent/x.toml", "check-config"], None);
    let err = one_line(&o, &["/nonexistent/x.toml"]);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

/// Issue 14, item 9: the offline check refuses what `run` cannot use: an
/// IMAP password variable that is not set, a password file or CA file
/// that does not exist, an own address no one can write to.
#[test]
fn check_config_refuses_missing_imap_credentials_ca_files_and_bad_addresses() {
    let d = Desk::new();
    let dir = d.dir.path();
    let imap = |extra: &str| {
        format!(
            "[[imap]]\nname = \"support\"\nhost = \"imap.example.com\"\nuser = \"support@example.com\"\n{extra}\n"
        )
    };
    let check = |text: &str, env: Option<(&str, &str)>| {
        let cfg = write_config(dir, text);
        let mut c = d.cmd(&["--config", cfg.to_str().unwrap(), "check-config"]);
        c.env_remove("TICKETD_TEST_CHECK_PASSWORD");
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let refused = |o: &Output, wants: &[&str]| {
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(78), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        for w in wants {
            assert!(err.contains(w), "{w:?} in {err}");
        }
    };
    refused(
        &check(
            &imap("password_env = \"TICKETD_TEST_CHECK_PASSWORD\""),
            None,
        ),
        &["imap \"support\"", "TICKETD_TEST_CHECK_PASSWORD is not set"],
    );
    refused(
        &check(&imap("password_file = \"no-such-secret\""), None),
        &["imap \"support\"", "no-such-secret"],
    );
    let secret = ("TICKETD_TEST_CHECK_PASSWORD", "tdsecret-value");
    refused(
        &check(
            &imap("password_env = \"TICKETD_TEST_CHECK_PASSWORD\"\nca_file = \"no-such-ca.pem\""),
            Some(secret),
        ),
        &["imap \"support\"", "ca_file", "no-such-ca.pem"],
    );
    std::fs::write(dir.join("not-a-cert.pem"), "hello\n").unwrap();
    refused(
        &check(
            &imap("password_env = \"TICKETD_TEST_CHECK_PASSWORD\"\nca_file = \"not-a-cert.pem\""),
            Some(secret),
        ),
        &["not-a-cert.pem", "no PEM certificate"],
    );
    refused(
        &check("[desk]\naddresses = [\"support@example\"]\n", None),
        &["desk.addresses", "support@example"],
    );
    // Everything there: it passes, and the password is not printed.
    std::fs::write(
        dir.join("ca.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(dir.join("imap-secret"), "tdsecret-file\n").unwrap();
    for (text, env) in [
        (
            imap("password_env = \"TICKETD_TEST_CHECK_PASSWORD\"\nca_file = \"ca.pem\""),
            Some(secret),
        ),
        (imap("password_file = \"imap-secret\""), None),
    ] {
        let o = check(&text, env);
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{out}");
        kept_logs::keep("cli-check-config-password", &out);
        kept_logs::assert_no_secret("check-config", &out);
    }
}

/// The sample configuration of the repository passes `check-config` as
/// shipped, and README's configuration block is that file verbatim.
#[test]
fn the_example_config_passes_check_config_and_is_readmes_block() {
    let d = Desk::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sample = root.join("ticketd.example.toml");
    let o = d.run(
        &["--config", sample.to_str().unwrap(), "check-config"],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = &readme[readme.find("## Configuration reference").unwrap()..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let end = start + section[start..].find("```\n").unwrap();
    let block = &section[start..end];
    assert_eq!(
        block,
        std::fs::read_to_string(&sample).unwrap(),
        "README's configuration block differs from ticketd.example.toml"
    );
    // Copied from README as it stands, it passes too.
    let copied = write_config(d.dir.path(), block);
    let o = d.run(
        &["--config", copied.to_str().unwrap(), "check-config"],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Issue 14, item 11: SIGHUP rereads the whole configuration file: a
/// `[rules]` section added there changes the next mail's severity; a file
/// that does not load keeps the old configuration; a change that needs a
/// restart is named.
#[test]
fn sighup_rereads_the_config_file_and_keeps_the_old_one_when_it_is_broken() {
    let d = Desk::new();
    let rules = d.dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("local.toml"),
        "[[rule]]\nname = \"zebra\"\nseverity = 1\nsubject = [\"zebra\"]\n",
    )
    .unwrap();
    // No [rules] at start: the embedded rules, which know no zebras.
    let c = daemon_config(d.dir.path(), "[log]\nformat = \"json\"\n");
    let stderr_path = d.dir.path().join("stderr.log");
    let child = Daemon(
        d.cmd(&["--config", &c, "run"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let new = d.data().join("Maildir").join("new");
    wait_for(20, || new.exists().then_some(())).expect("maildir");
    let deliver = |i: u32| {
        let tmp = d.data().join("Maildir").join("tmp").join(format!("{i}.x"));
        std::fs::write(
            &tmp,
            mail("a@kunde.de", "Zebra", &format!("z{i}@kunde.de"), "", "x"),
        )
        .unwrap();
        std::fs::rename(&tmp, new.join(format!("{i}.x"))).unwrap();
    };
    let severity_of = |i: usize| -> Option<i64> {
        // Without --config: the file is broken for a while.
        let o = d.run(&["tickets", "list", "--json"], None);
        let v: Value = serde_json::from_slice(&o.stdout).ok()?;
        let list = v.as_array()?;
        (list.len() == i)
            .then(|| list[0]["severity"].as_i64())
            .flatten()
    };
    let log = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let count = |what: &str| log().matches(what).count();
    deliver(1);
    assert_eq!(wait_for(20, || severity_of(1)), Some(3), "default severity");

    // A [rules] section added to the file.
    std::fs::write(
        &c,
        "[log]\nformat = \"json\"\n[rules]\ndir = \"rules\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    child.signal("-HUP");
    wait_for(10, || (count("SIGHUP") == 1).then_some(())).expect("reload logged");
    deliver(2);
    assert_eq!(wait_for(20, || severity_of(2)), Some(1), "the added rules");

    // A file that does not load: the old configuration stays, and says why.
    std::fs::write(&c, "[rules\ndir = \"rules\"\n").unwrap();
    child.signal("-HUP");
    wait_for(10, || (count("SIGHUP") == 2).then_some(())).expect("reload logged");
    assert_eq!(count("configuration not reloaded"), 1, "{}", log());
    assert!(log().contains("ticketd.toml:1:"), "{}", log());
    deliver(3);
    assert_eq!(wait_for(20, || severity_of(3)), Some(1), "old config kept");

    // A change that needs a restart is named, and the rest still applies.
    std::fs::write(
        &c,
        "[log]\nformat = \"json\"\n[desk]\nname = \"Helpdesk\"\n[rules]\ndir = \"rules\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    child.signal("-HUP");
    wait_for(10, || (count("configuration reloaded") == 2).then_some(())).expect("reloaded");
    wait_for(10, || {
        log()
            .lines()
            .any(|l| l.contains("only after a restart") && l.contains("[desk]"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("restart named: {}", log()));
    let mut child = child;
    stop(&mut child);
}
