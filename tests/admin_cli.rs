//! The admin's command line (issue 14, "What the admin looked for"): a
//! ticket's attachments and original mails byte for byte, outbox retry and
//! cancel, the quarantine shown and released, filtered ticket lists, a
//! staff reply with copies and the staff member's name, and every time in
//! the desk's zone — through the real binary, a real SQLite database in a
//! temporary data directory and a real `ticketd run`.

use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
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
    /// A command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let o = self.run(args, None);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    }
    fn text(&self, args: &[&str]) -> String {
        String::from_utf8(self.ok(args)).unwrap()
    }
    /// A command that must fail; its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args, None);
        assert!(
            !o.status.success(),
            "{args:?} succeeded: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_slice(&self.ok(args)).unwrap()
    }
    /// `ingest --direct` of raw bytes on stdin; the JSON line.
    fn ingest_bytes(&self, raw: &[u8]) -> Value {
        let o = self.run(&["ingest", "--direct"], Some(raw));
        assert_eq!(
            o.status.code(),
            Some(0),
            "stderr: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }
    fn ingest(&self, raw: &str) -> Value {
        self.ingest_bytes(raw.as_bytes())
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
    fn config(&self, text: &str) -> String {
        let p = self.dir.path().join("ticketd.toml");
        std::fs::write(&p, format!("{text}\n[http]\nlisten = \"127.0.0.1:0\"\n")).unwrap();
        p.to_str().unwrap().to_string()
    }
    /// The `.eml` files the file transport wrote.
    fn sent(&self) -> Vec<String> {
        std::fs::read_dir(self.data().join("sent"))
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                    .map(|e| std::fs::read_to_string(e.path()).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }
    /// `ticketd run` with `cfg`, killed when dropped.
    fn daemon(&self, cfg: &str) -> Daemon {
        Daemon(
            self.cmd(&["--config", cfg, "run"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

/// A `ticketd run` that is stopped (SIGTERM, then killed) when dropped.
struct Daemon(std::process::Child);

impl Daemon {
    fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(s)) = self.0.try_wait() {
                assert_eq!(s.code(), Some(0));
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not stop");
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

fn mail(from: &str, subject: &str, id: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: support@example.com\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0100\r\n\r\n{body}\r\n"
    )
}

/// Bytes that are no text: every byte value, in an order no encoder could
/// tidy up.
fn binary(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, c) in bytes.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n");
        }
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn with_attachment(id: &str, name: &str, content: &[u8]) -> String {
    format!(
        "From: Anna <anna@kunde.de>\r\nTo: support@example.com\r\nSubject: Dokument als PDF\r\n\
         Message-ID: <{id}>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n\
         Frage zum Dokument im Anhang.\r\n--b1\r\nContent-Type: application/pdf\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         {}\r\n--b1--\r\n",
        base64(content)
    )
}

#[test]
fn tickets_attachment_writes_the_exact_bytes_of_an_attachment_that_show_lists() {
    let d = Desk::new();
    // Over 1 MiB: stored in pieces.
    let pdf = binary(1_300_000);
    let small = binary(777);
    let n = d.ingest(&with_attachment("att1@kunde.de", "vertrag.pdf", &pdf))["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let other = d.ingest(&with_attachment("att2@kunde.de", "klein.pdf", &small))["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let t = d.ticket(&n);
    let att = &t["articles"][0]["attachments"][0];
    assert_eq!(att["filename"], "vertrag.pdf");
    assert_eq!(att["size"], pdf.len());
    let id = att["id"].as_i64().expect("attachment id in show --json");
    let show = d.text(&["tickets", "show", &n]);
    assert!(
        show.contains(&format!(
            "Attachment {id}: vertrag.pdf (1300000 bytes, application/pdf)"
        )),
        "{show}"
    );

    // To stdout (a pipe): the exact bytes.
    let out = d.ok(&["tickets", "attachment", &n, &id.to_string()]);
    assert!(out == pdf, "stdout differs: {} bytes", out.len());
    // To a file; never over an existing one without --force.
    let file = d.dir.path().join("out.pdf");
    let f = file.to_str().unwrap();
    d.ok(&["tickets", "attachment", &n, &id.to_string(), "-o", f]);
    assert!(std::fs::read(&file).unwrap() == pdf);
    let other_id = d.ticket(&other)["articles"][0]["attachments"][0]["id"]
        .as_i64()
        .unwrap();
    let err = d.fails(&[
        "tickets",
        "attachment",
        &other,
        &other_id.to_string(),
        "-o",
        f,
    ]);
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert!(std::fs::read(&file).unwrap() == pdf, "file left as it was");
    d.ok(&[
        "tickets",
        "attachment",
        &other,
        &other_id.to_string(),
        "-o",
        f,
        "--force",
    ]);
    assert!(std::fs::read(&file).unwrap() == small);
    // An attachment of another ticket is not this ticket's.
    let err = d.fails(&["tickets", "attachment", &n, &other_id.to_string()]);
    assert!(err.contains("no attachment"), "{err}");

    // Binary bytes are not written to a terminal (script(1) gives the
    // command one); with -o they are.
    let line = format!(
        "{BIN} --data-dir {} tickets attachment {n} {id}",
        d.data().display()
    );
    let tty = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!tty.status.success(), "binary written to a terminal");
    let said = String::from_utf8_lossy(&tty.stdout);
    assert!(said.contains("-o FILE"), "{said}");
    assert!(tty.stdout.len() < 1000, "no bytes on the terminal");
}

#[test]
fn tickets_raw_gives_each_articles_mail_byte_for_byte() {
    let d = Desk::new();
    // Odd but legal bytes: 8-bit Latin-1, trailing blanks, a bare LF line.
    let first: Vec<u8> = b"From: Anna <anna@kunde.de>\r\nTo: support@example.com\r\nSubject: Drucker \xe4rger  \r\nMessage-ID: <raw1@kunde.de>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0100\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nDer Drucker druckt nicht. Gr\xfc\xdfe   \r\nzweite Zeile\n\r\n"
        .to_vec();
    let n = d.ingest_bytes(&first)["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = format!(
        "From: anna@kunde.de\r\nTo: support@example.com\r\nSubject: Re: [Ticket#{n}] Drucker\r\nMessage-ID: <raw2@kunde.de>\r\nIn-Reply-To: <raw1@kunde.de>\r\nDate: Sun, 22 Nov 2026 11:00:00 +0100\r\n\r\nImmer noch.\r\n"
    );
    assert_eq!(d.ingest(&reply)["action"], "appended");
    d.ok(&["tickets", "note", &n, "intern: Toner bestellt"]);

    assert!(d.ok(&["tickets", "raw", &n]) == first, "first article");
    let t = d.ticket(&n);
    let arts = t["articles"].as_array().unwrap();
    let id_of = |pred: &dyn Fn(&Value) -> bool| {
        arts.iter()
            .find(|a| pred(a))
            .unwrap_or_else(|| panic!("{arts:?}"))["id"]
            .as_i64()
            .unwrap()
            .to_string()
    };
    let second = id_of(&|a| a["message_id"] == "raw2@kunde.de");
    assert!(d.ok(&["tickets", "raw", &n, &second]) == reply.as_bytes());
    // The confirmation as it was queued.
    let conf = id_of(&|a| a["direction"] == "out");
    let queued = d.outbox()[0]["raw"].as_str().unwrap().to_string();
    assert_eq!(
        String::from_utf8(d.ok(&["tickets", "raw", &n, &conf])).unwrap(),
        queued
    );
    // To a file.
    let file = d.dir.path().join("orig.eml");
    d.ok(&["tickets", "raw", &n, "-o", file.to_str().unwrap()]);
    assert!(std::fs::read(&file).unwrap() == first);
    // A note has no mail; unknown articles and tickets are named.
    let note = id_of(&|a| a["direction"] == "note");
    let err = d.fails(&["tickets", "raw", &n, &note]);
    assert!(err.contains("no mail"), "{err}");
    let err = d.fails(&["tickets", "raw", &n, "99999"]);
    assert!(err.contains("no article 99999"), "{err}");
    let err = d.fails(&["tickets", "raw", "99999"]);
    assert!(err.contains("no ticket 99999"), "{err}");
}

/// A TCP port on loopback where nothing listens.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn outbox_retry_makes_failed_and_waiting_mail_due_and_run_sends_it() {
    let d = Desk::new();
    let port = closed_port();
    let smtp = |retry: &str| {
        d.config(&format!(
            "[desk]\ntimezone = \"Asia/Tokyo\"\n[outbound]\ntransport = \"smtp\"\npoll_seconds = 0.1\n{retry}\n\
             [outbound.smtp]\nhost = \"127.0.0.1\"\nport = {port}\n"
        ))
    };
    // 1. The SMTP server is down and retries are over at once: failed.
    let a = d.ingest(&mail("anna@kunde.de", "Drucker", "r1@kunde.de", "x"))["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let cfg = smtp("retry_hours = 0.0");
    let run = d.daemon(&cfg);
    let failed = wait_for(20, || {
        d.outbox()
            .into_iter()
            .find(|o| o["status"] == "failed")
            .and_then(|o| o["id"].as_i64())
    })
    .expect("the mail failed");
    run.stop();
    // 2. Down again, retries for days from 1 h on: waiting.
    d.ingest(&mail("bert@kunde.de", "VPN", "r2@kunde.de", "y"));
    let cfg = smtp("retry_base_seconds = 3600.0");
    let run = d.daemon(&cfg);
    let waiting = wait_for(20, || {
        d.outbox()
            .into_iter()
            .find(|o| o["status"] == "queued" && o["attempts"] == 1)
    })
    .expect("the mail waits for its next attempt");
    run.stop();
    let waiting_id = waiting["id"].as_i64().unwrap();
    let next: jiff::Timestamp = waiting["next_attempt_at"]
        .as_str()
        .expect("next attempt in outbox list --json")
        .parse()
        .unwrap();
    assert!(next > jiff::Timestamp::now() + jiff::SignedDuration::from_mins(50));
    let list = d.text(&["--config", &cfg, "outbox", "list"]);
    let row = list
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{waiting_id} ")))
        .unwrap_or_else(|| panic!("{list}"));
    let local = next
        .to_zoned(jiff::tz::TimeZone::get("Asia/Tokyo").unwrap())
        .strftime("%Y-%m-%d %H:%M:%S JST")
        .to_string();
    assert!(
        row.contains(&local),
        "next attempt in the desk's zone: {list}"
    );

    // Sent or unknown rows are refused; nothing changes.
    let err = d.fails(&["outbox", "retry", "9999"]);
    assert!(err.contains("no outbox row 9999"), "{err}");

    // 3. Retry one, then all: the file transport delivers both.
    let out = d.text(&["outbox", "retry", &failed.to_string(), "--as", "anna"]);
    assert!(out.contains(&failed.to_string()), "{out}");
    let out = d.text(&["outbox", "retry", "--all"]);
    assert!(out.contains(&waiting_id.to_string()), "{out}");
    for o in d.outbox() {
        assert_eq!(o["status"], "queued", "{o}");
        let due: jiff::Timestamp = o["next_attempt_at"].as_str().unwrap().parse().unwrap();
        assert!(due <= jiff::Timestamp::now());
    }
    let file_cfg = d.config("[outbound]\npoll_seconds = 0.1\n");
    let run = d.daemon(&file_cfg);
    let sent = wait_for(20, || {
        let s = d.sent();
        (s.len() == 2).then_some(s)
    })
    .expect("both mails delivered after the retry");
    run.stop();
    assert!(sent.iter().any(|m| m.contains("To: anna@kunde.de")));
    assert!(sent.iter().any(|m| m.contains("To: bert@kunde.de")));
    assert!(d.outbox().iter().all(|o| o["status"] == "sent"));
    let err = d.fails(&["outbox", "retry", &failed.to_string()]);
    assert!(err.contains("was sent"), "{err}");
    // Recorded on the ticket.
    let t = d.ticket(&a);
    assert!(
        t["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "outbox-retry"
                && e["detail"].as_str().unwrap().contains("cli:anna")),
        "{t}"
    );
}

#[test]
fn outbox_cancel_means_never_sent_even_by_a_late_worker() {
    let d = Desk::new();
    let a = d.ingest(&mail("anna@kunde.de", "Drucker", "c1@kunde.de", "x"))["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let id = d.outbox()[0]["id"].as_i64().unwrap();
    let out = d.text(&["outbox", "cancel", &id.to_string(), "--as", "anna"]);
    assert!(out.contains("cancelled"), "{out}");
    let row = &d.outbox()[0];
    assert_eq!(row["status"], "cancelled");
    assert!(row["last_error"].as_str().unwrap().contains("cli:anna"));
    assert!(d.ticket(&a)["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "outbox-cancelled"));
    assert!(d.text(&["outbox", "list"]).contains("cancelled"));

    // The daemon sends the next mail but never the cancelled one.
    let cfg = d.config("[outbound]\npoll_seconds = 0.1\n");
    let run = d.daemon(&cfg);
    d.ingest(&mail("bert@kunde.de", "VPN", "c2@kunde.de", "y"));
    let sent = wait_for(20, || {
        let s = d.sent();
        (!s.is_empty()).then_some(s)
    })
    .expect("the other mail is sent");
    std::thread::sleep(Duration::from_millis(500));
    run.stop();
    assert_eq!(d.sent().len(), 1, "{sent:?}");
    assert!(sent[0].contains("To: bert@kunde.de"));
    assert_eq!(d.outbox()[0]["status"], "cancelled");
    // A sent mail cannot be cancelled.
    let sent_id = d.outbox()[1]["id"].as_i64().unwrap().to_string();
    let err = d.fails(&["outbox", "cancel", &sent_id]);
    assert!(err.contains("was sent"), "{err}");

    // A mail being sent right now (claimed by a worker, as the worker
    // claims) cannot be cancelled; once its claim has run out (its worker
    // died) it can, and a late outcome of that worker does not bring it
    // back.
    d.ingest(&mail("carl@kunde.de", "Mail", "c3@kunde.de", "z"));
    let third = d.outbox()[2]["id"].as_i64().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use ticketd::store::{ts, Delivery, Store};
        let store = Store::open_sqlite(&d.data().join("ticketd.db"), 1)
            .await
            .unwrap();
        let now = jiff::Timestamp::now();
        let lease = now + jiff::SignedDuration::from_mins(5);
        let claimed = store.claim_due(&ts(now), &ts(lease), 50).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id, third);
        let err = d.fails(&["outbox", "cancel", &third.to_string()]);
        assert!(err.contains("being sent right now"), "{err}");
        assert_eq!(d.outbox()[2]["status"], "sending");
        // The attempt fails: queued again, and cancellable.
        let retry = Delivery::Retry {
            error: "451 try later".into(),
            next: ts(now + jiff::SignedDuration::from_mins(1)),
        };
        store
            .record_deliveries(&[(&claimed[0], retry.clone())], &ts(now))
            .await
            .unwrap();
        assert_eq!(d.outbox()[2]["status"], "queued");
        // Claimed again with a claim that has run out: a dead worker's.
        let later = now + jiff::SignedDuration::from_mins(2);
        let claimed = store
            .claim_due(
                &ts(later),
                &ts(now - jiff::SignedDuration::from_secs(1)),
                50,
            )
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        d.ok(&["outbox", "cancel", &third.to_string()]);
        for late in [
            retry,
            Delivery::Failed {
                error: "550 no".into(),
            },
        ] {
            store
                .record_deliveries(&[(&claimed[0], late)], &ts(later))
                .await
                .unwrap();
            assert_eq!(d.outbox()[2]["status"], "cancelled");
        }
        store.close().await;
    });
    // And no daemon sends it.
    let run = d.daemon(&cfg);
    std::thread::sleep(Duration::from_millis(1500));
    run.stop();
    assert_eq!(d.sent().len(), 1);
}

#[test]
fn quarantine_lists_shows_and_releases_without_losing_a_byte() {
    let d = Desk::new();
    let garbage: &[u8] = b"\x00\x01 this is no mail at all\r\n\r\nnor is this\xff\r\n";
    let o = d.ingest_bytes(garbage);
    assert_eq!(o["action"], "quarantined");
    let q = d.json(&["quarantine", "list", "--json"]);
    let id = q[0]["id"].as_i64().unwrap();
    let list = d.text(&["quarantine", "list"]);
    assert!(
        list.contains("REASON") && list.contains("no RFC 5322 header"),
        "{list}"
    );
    let show = d.text(&["quarantine", "show", &id.to_string()]);
    assert!(
        show.contains("Reason:    no RFC 5322 header found"),
        "{show}"
    );
    assert!(show.contains("this is no mail at all"), "{show}");
    assert!(d.ok(&["quarantine", "show", &id.to_string(), "--raw"]) == garbage);

    // Released while its cause stands: quarantined again, as a new row
    // with the same bytes; the old row is released, its bytes kept.
    let again: Value =
        serde_json::from_slice(&d.ok(&["quarantine", "release", &id.to_string(), "--as", "anna"]))
            .unwrap();
    assert_eq!(again["action"], "quarantined");
    let q = d.json(&["quarantine", "list", "--json"]);
    assert_eq!(q.as_array().unwrap().len(), 1);
    let new_id = q[0]["id"].as_i64().unwrap();
    assert_ne!(new_id, id);
    assert!(d.ok(&["quarantine", "show", &new_id.to_string(), "--raw"]) == garbage);
    let err = d.fails(&["quarantine", "release", &id.to_string()]);
    assert!(err.contains("not quarantined"), "{err}");

    // A message an earlier ticketd could not parse (its row as that
    // version stored it): released now, it becomes a ticket, with the
    // release on its history and its original bytes on the first article.
    let good = mail(
        "Anna <anna@kunde.de>",
        "Server ausgefallen",
        "q1@kunde.de",
        "Unser Server ist ausgefallen.",
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let old = rt.block_on(async {
        let store = ticketd::store::Store::open_sqlite(&d.data().join("ticketd.db"), 1)
            .await
            .unwrap();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO messages (dedupe_key, message_id, sha256, size, raw, source, received_at, action, reason)
             VALUES ('sha:old', NULL, 'old', $1, $2, 'pipe', '2026-12-01T08:00:00.000Z', 'quarantined', 'no RFC 5322 header found')
             RETURNING id",
        )
        .bind(good.len() as i64)
        .bind(good.as_bytes())
        .fetch_one(store.pool())
        .await
        .unwrap();
        store.close().await;
        id
    });
    let o: Value =
        serde_json::from_slice(&d.ok(&["quarantine", "release", &old.to_string()])).unwrap();
    assert_eq!(o["action"], "created", "{o}");
    let n = o["ticket"].as_str().unwrap();
    assert_eq!(o["severity"], 1);
    let t = d.ticket(n);
    assert!(
        t["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "released"
                && e["detail"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("quarantined message {old} released"))),
        "{t}"
    );
    assert!(d.ok(&["tickets", "raw", n]) == good.as_bytes());
    // Its confirmation is queued like any new ticket's.
    assert!(d
        .outbox()
        .iter()
        .any(|m| m["ticket"] == n && m["to"][0] == "anna@kunde.de"));
    let q = d.json(&["quarantine", "list", "--json"]);
    assert_eq!(q.as_array().unwrap().len(), 1, "only the garbage is left");

    // A message of an IMAP mailbox is released with that mailbox's
    // defaults: the monitoring mailbox confirms nothing.
    let alert = mail(
        "nagios@kunde.de",
        "Festplatte voll auf fs01",
        "q2@kunde.de",
        "Die Festplatte ist voll.",
    );
    let old = rt.block_on(async {
        let store = ticketd::store::Store::open_sqlite(&d.data().join("ticketd.db"), 1)
            .await
            .unwrap();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO messages (dedupe_key, message_id, sha256, size, raw, source, received_at, action, reason)
             VALUES ('sha:old2', NULL, 'old2', $1, $2, 'imap:monitoring/INBOX/1/7', '2026-12-01T08:00:00.000Z', 'quarantined', 'no RFC 5322 header found')
             RETURNING id",
        )
        .bind(alert.len() as i64)
        .bind(alert.as_bytes())
        .fetch_one(store.pool())
        .await
        .unwrap();
        store.close().await;
        id
    });
    let cfg = d.config(
        "[[imap]]\nname = \"monitoring\"\nhost = \"127.0.0.1\"\ntls = \"plain\"\nuser = \"mon\"\n\
         password_env = \"TICKETD_TEST_UNSET\"\n[imap.defaults]\nconfirm = false\n",
    );
    let before = d.outbox().len();
    let o: Value = serde_json::from_slice(&d.ok(&[
        "--config",
        &cfg,
        "quarantine",
        "release",
        &old.to_string(),
    ]))
    .unwrap();
    assert_eq!(o["action"], "created", "{o}");
    assert_eq!(
        d.outbox().len(),
        before,
        "no confirmation from the monitoring mailbox"
    );
}

#[test]
fn tickets_list_filters_by_status_severity_organisation_and_time_with_a_limit() {
    let d = Desk::new();
    let customers = d.data().join("customers");
    std::fs::create_dir_all(&customers).unwrap();
    std::fs::write(
        customers.join("main.toml"),
        "[[organisation]]\nid = \"stadtwerke\"\nname = \"Stadtwerke\"\ndomains = [\"kunde.de\"]\n",
    )
    .unwrap();
    let num = |v: Value| v["ticket"].as_str().unwrap().to_string();
    let down = num(d.ingest(&mail(
        "anna@kunde.de",
        "Server ausgefallen",
        "l1@kunde.de",
        "Unser Server ist ausgefallen.",
    )));
    let question = num(d.ingest(&mail(
        "max@andere.example",
        "Frage zur Lizenz",
        "l2@andere.example",
        "Wie kann ich die Lizenz verlängern?",
    )));
    let third = num(d.ingest(&mail(
        "bert@kunde.de",
        "Drucker",
        "l3@kunde.de",
        "Der Drucker im 2. Stock druckt nicht.",
    )));
    d.ok(&["tickets", "status", &question, "closed"]);
    let numbers = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["tickets", "list", "--json"];
        a.extend_from_slice(args);
        d.json(&a)
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["number"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        numbers(&[]),
        [third.clone(), question.clone(), down.clone()]
    );
    assert_eq!(numbers(&["--status", "closed"]), [question.as_str()]);
    assert_eq!(
        numbers(&["--status", "new,closed", "--organisation", "stadtwerke"]),
        [third.clone(), down.clone()]
    );
    assert_eq!(numbers(&["--severity", "1"]), [down.as_str()]);
    assert_eq!(numbers(&["--since", "1h"]).len(), 3);
    assert!(numbers(&["--since", "2099-01-01"]).is_empty());
    assert_eq!(numbers(&["--since", "2026-01-01T00:00"]).len(), 3);
    assert_eq!(
        numbers(&["--limit", "2"]),
        [third.clone(), question.clone()]
    );
    for bad in [
        &["--limit", "0"][..],
        &["--limit", "1000001"],
        &["--status", "done"],
        &["--severity", "5"],
        &["--since", "yesterday"],
    ] {
        let mut a = vec!["tickets", "list"];
        a.extend_from_slice(bad);
        let err = d.fails(&a);
        assert!(err.contains(bad[0]), "{bad:?}: {err}");
    }
    // The table's columns, in their documented order.
    let table = d.text(&["tickets", "list", "--organisation", "stadtwerke"]);
    let mut lines = table.lines();
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        head,
        [
            "NUMBER",
            "STATUS",
            "SEV",
            "ORGANISATION",
            "QUEUE",
            "REQUESTER",
            "CREATED",
            "ART",
            "SUBJECT"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[0], third.as_str());
    assert_eq!(row[1], "new");
    assert_eq!(row[3], "stadtwerke");

    // The table shows the newest 100 without --limit and says so; --json
    // lists all (scripts count on it).
    let dir = d.dir.path().join("more");
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for i in 0..98 {
        let f = dir.join(format!("{i}.eml"));
        std::fs::write(
            &f,
            mail(
                "kim@kunde.de",
                &format!("Frage {i}"),
                &format!("m{i}@kunde.de"),
                "?",
            ),
        )
        .unwrap();
        files.push(f.to_str().unwrap().to_string());
    }
    let mut a = vec!["ingest", "--direct"];
    a.extend(files.iter().map(String::as_str));
    d.ok(&a);
    assert_eq!(numbers(&[]).len(), 101);
    let o = d.run(&["tickets", "list"], None);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1 + 100);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--limit"));
    let all = d.text(&["tickets", "list", "--limit", "101"]);
    assert_eq!(all.lines().count(), 1 + 101);
}

#[test]
fn tickets_reply_copies_cc_and_names_the_staff_member() {
    let d = Desk::new();
    let n = d.ingest(&mail("Anna <anna@kunde.de>", "Drucker", "p1@kunde.de", "x"))["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    for bad in ["not an address", "x@y.de\r\nBcc: evil@example.org"] {
        let err = d.fails(&["tickets", "reply", &n, "--text", "Hallo", "--cc", bad]);
        assert!(err.contains("--cc"), "{err}");
    }
    assert_eq!(d.outbox().len(), 1, "nothing queued by a refused reply");
    d.ok(&[
        "tickets",
        "reply",
        &n,
        "--text",
        "Der Toner ist unterwegs.",
        "--cc",
        "chef@kunde.de",
        "--cc",
        "it@partner.example",
        "--cc",
        "Chef@Kunde.de",
        "--from-name",
        "Jörg Müller",
    ]);
    let out = d.outbox();
    let r = &out[1];
    assert_eq!(
        r["to"],
        serde_json::json!(["anna@kunde.de", "chef@kunde.de", "it@partner.example"])
    );
    let raw = r["raw"].as_str().unwrap();
    let parsed = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .unwrap();
    let cc: Vec<&str> = parsed
        .cc()
        .unwrap()
        .iter()
        .filter_map(|a| a.address())
        .collect();
    assert_eq!(cc, ["chef@kunde.de", "it@partner.example"]);
    let from = parsed.from().unwrap().first().unwrap();
    assert_eq!(from.name(), Some("Jörg Müller (Support)"));
    assert_eq!(from.address(), Some("support@example.com"));
    assert!(parsed
        .body_text(0)
        .unwrap()
        .contains("Jörg Müller (Support)"));
    // Without --from-name: the desk's name alone.
    d.ok(&["tickets", "reply", &n, "--text", "Noch etwas."]);
    let raw = d.outbox()[2]["raw"].as_str().unwrap().to_string();
    let parsed = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .unwrap();
    assert_eq!(
        parsed.from().unwrap().first().unwrap().name(),
        Some("Support")
    );
    assert!(parsed.cc().is_none());
}

/// Every instant a person reads is in the desk's zone, named; JSON keeps
/// ISO 8601 with its offset.
#[test]
fn human_output_shows_every_time_in_the_desks_zone_and_json_iso_8601() {
    let d = Desk::new();
    let cfg = d.config("[desk]\ntimezone = \"Asia/Tokyo\"\n");
    let n = d.ingest(&mail("anna@kunde.de", "Drucker", "z1@kunde.de", "x"))["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    d.ingest_bytes(b"garbage without a header\r\n");
    let q = d.json(&["quarantine", "list", "--json"])[0]["id"].to_string();
    d.ok(&["tickets", "note", &n, "intern"]);
    let first = d.outbox()[0]["id"].to_string();
    d.ok(&["outbox", "cancel", &first]);
    let iso_utc = regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d").unwrap();
    let local = regex::Regex::new(r"\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)? JST").unwrap();
    for args in [
        &["tickets", "list"][..],
        &["tickets", "show", &n],
        &["outbox", "list"],
        &["quarantine", "list"],
        &["quarantine", "show", &q],
        &["sla", "status"],
    ] {
        let mut a = vec!["--config", cfg.as_str()];
        a.extend_from_slice(args);
        let out = d.text(&a);
        assert!(
            !iso_utc.is_match(&out),
            "{args:?} shows a UTC instant: {out}"
        );
        // (`sla status` lists only tickets due within a day: none here.)
        assert!(
            local.is_match(&out) || args[0] == "sla",
            "{args:?} shows no desk time: {out}"
        );
    }
    let t = d.json(&["--config", &cfg, "tickets", "show", &n, "--json"]);
    for v in [
        &t["created_at"],
        &t["updated_at"],
        &t["articles"][0]["created_at"],
        &t["events"][0]["created_at"],
    ] {
        v.as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap_or_else(|e| panic!("{v}: {e}"));
    }
}
