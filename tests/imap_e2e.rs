//! `ticketd run` against a real Dovecot and Postfix on loopback (the harness
//! in `tests/support/mailstack.rs`): IMAP intake with IDLE, SMTP delivery of
//! the confirmations, TLS, outages of either server, and a crash in the
//! middle of a burst. Every test starts a stack and a daemon of its own.

#[path = "support/kept_logs.rs"]
mod kept_logs;
#[path = "support/mailstack.rs"]
mod mailstack;

use mailstack::{MailStack, ALERTS, ALICE, SUPPORT};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ticketd");
const PASSWORD_ENV: &str = "TICKETD_TEST_IMAP_PASSWORD";

/// How the daemon reaches the servers.
#[derive(Clone, Copy, PartialEq)]
enum Tls {
    /// Plain IMAP and SMTP on loopback.
    Plain,
    /// IMAPS (implicit TLS) and SMTP with STARTTLS, checked against the
    /// stack's test CA.
    Secure,
}

/// A data directory, a configuration and the daemon running on them.
struct Desk {
    dir: tempfile::TempDir,
    config: PathBuf,
    daemon: Option<Child>,
}

impl Desk {
    fn new(stack: &MailStack, tls: Tls, smtp: bool, extra: &str) -> Desk {
        let dir = tempfile::tempdir().expect("temp dir");
        let (imap_tls, imap_port, smtp_tls) = match tls {
            Tls::Plain => ("plain", stack.imap_port(), "none"),
            Tls::Secure => ("implicit", stack.imaps_port(), "starttls"),
        };
        let ca = stack.ca_cert_path();
        let outbound = if smtp {
            format!(
                "[outbound]\ntransport = \"smtp\"\nretry_base_seconds = 0.5\npoll_seconds = 0.2\n\
                 [outbound.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"{smtp_tls}\"\nca_file = \"{}\"\n",
                stack.smtp_port(),
                ca.display()
            )
        } else {
            "[outbound]\ntransport = \"file\"\n".to_string()
        };
        let text = format!(
            "[desk]\naddresses = [\"{SUPPORT}\"]\nlanguage = \"en\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             {outbound}\n\
             [[imap]]\nname = \"support\"\nhost = \"127.0.0.1\"\nport = {imap_port}\ntls = \"{imap_tls}\"\n\
             ca_file = \"{}\"\nuser = \"{SUPPORT}\"\npassword_env = \"{PASSWORD_ENV}\"\n{extra}\n",
            ca.display()
        );
        let config = dir.path().join("ticketd.toml");
        std::fs::write(&config, text).expect("write config");
        Desk {
            dir,
            config,
            daemon: None,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Replaces `from` with `to` in the configuration (before `start`).
    fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).expect("config");
        assert!(text.contains(from), "{from:?} not in\n{text}");
        std::fs::write(&self.config, text.replace(from, to)).expect("config");
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(self.data())
            .env(PASSWORD_ENV, mailstack::PASSWORD)
            .env_remove("TICKETD_CONFIG");
        c
    }

    fn start(&mut self) {
        self.start_logging("info,ticketd=debug");
    }

    /// Starts the daemon with `TICKETD_LOG=filter`.
    fn start_logging(&mut self, filter: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .expect("daemon log");
        let child = self
            .cmd()
            .arg("run")
            .env("TICKETD_LOG", filter)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ticketd run");
        self.daemon = Some(child);
    }

    /// SIGKILL: no chance to finish anything.
    fn kill9(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and the exit status.
    fn stop(&mut self) -> Option<i32> {
        let mut c = self.daemon.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(s)) = c.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    fn json(&self, args: &[&str]) -> Value {
        let o = self.cmd().args(args).output().expect("run ticketd");
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("JSON")
    }

    fn tickets(&self) -> Vec<Value> {
        self.json(&["tickets", "list", "--json"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn outbox(&self) -> Vec<Value> {
        self.json(&["outbox", "list", "--json"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// `GET path` on the daemon's HTTP endpoint (its port from the log):
    /// the status code and the body.
    fn get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let log = self.log();
        let line = log
            .lines()
            .rfind(|l| l.contains("serving /healthz and /metrics"))
            .expect("the daemon logged its HTTP address");
        let at = line.rfind("127.0.0.1:").expect("an address in the line") + "127.0.0.1:".len();
        let port: u16 = line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .expect("a port");
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut reply = String::new();
        s.read_to_string(&mut reply).expect("reply");
        let code = reply
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = reply
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }
}

impl Drop for Desk {
    fn drop(&mut self) {
        kept_logs::keep("imap_e2e-daemon", &self.log());
        if std::thread::panicking() {
            eprintln!("--- daemon log\n{}", self.log());
        }
        self.kill9();
    }
}

/// Polls `f` until it is true or `limit` passes.
async fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the mailbox until `folder` holds exactly `n` messages.
async fn count_until(stack: &MailStack, user: &str, folder: &str, n: u32, limit: Duration) {
    let start = Instant::now();
    loop {
        let got = stack.count(user, folder).await;
        if got == n {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{user} {folder}: {got} messages after {limit:?}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls the mailbox until `folder` holds `n` different messages (by
/// Message-ID). Where a server is stopped in the middle of a delivery,
/// Postfix delivers that message again (at-least-once between Postfix and
/// Dovecot's LMTP), so a copy may arrive twice; what ticketd sent is what
/// counts.
async fn distinct_until(stack: &MailStack, user: &str, folder: &str, n: usize, limit: Duration) {
    let start = Instant::now();
    loop {
        let mut ids: Vec<String> = stack
            .fetch_all(user, folder)
            .await
            .iter()
            .filter_map(|m| header(&String::from_utf8_lossy(m), "Message-ID").map(str::to_string))
            .collect();
        ids.sort();
        ids.dedup();
        if ids.len() == n {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{user} {folder}: {} different messages after {limit:?}, expected {n}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn header<'a>(raw: &'a str, name: &str) -> Option<&'a str> {
    raw.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A customer's mail from `from`; `i` makes it unique.
fn customer_mail(from: &str, i: usize, subject: &str) -> Vec<u8> {
    format!(
        "From: Customer <{from}>\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\n\
         Message-ID: <burst-{i}@customer.test>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0100\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Hello support,\r\n\r\nour printer number {i} does not print any more since this morning.\r\n\
         {}\r\nRegards, Alice\r\n",
        "Details follow. ".repeat(200)
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_by_smtp_becomes_a_ticket_the_confirmation_arrives_and_the_reply_threads() {
    let stack = MailStack::start();
    let mut desk = Desk::new(&stack, Tls::Plain, true, "");
    desk.start();

    stack
        .send(
            ALICE,
            SUPPORT,
            (
                "ERP system is down",
                "Since 8:00 nobody can book anything. Please help.",
            ),
        )
        .await;
    until(Duration::from_secs(30), "a ticket for alice's mail", || {
        desk.tickets().len() == 1
    })
    .await;
    let ticket = desk.tickets()[0].clone();
    let number = ticket["number"].as_str().expect("number").to_string();

    // The confirmation goes out over SMTP through Postfix into alice's INBOX.
    count_until(&stack, ALICE, "INBOX", 1, Duration::from_secs(30)).await;
    let inbox = stack.fetch_all(ALICE, "INBOX").await;
    let confirmation = String::from_utf8_lossy(&inbox[0]).into_owned();
    let subject = header(&confirmation, "Subject").expect("subject");
    assert!(
        subject.contains(&number),
        "subject {subject:?} names {number}"
    );
    assert_eq!(
        header(&confirmation, "Auto-Submitted"),
        Some("auto-replied")
    );
    let their_id = header(&confirmation, "Message-ID").expect("our Message-ID");

    // The support INBOX is empty: the mail was moved after the commit.
    count_until(&stack, SUPPORT, "INBOX", 0, Duration::from_secs(10)).await;
    count_until(&stack, SUPPORT, "Processed", 1, Duration::from_secs(10)).await;

    // alice answers the confirmation from her mail program: only the
    // references tie it to the ticket (the subject has no tag here).
    let reply = format!(
        "From: Alice Example <{ALICE}>\r\nTo: {SUPPORT}\r\nSubject: Re: your mail\r\n\
         Message-ID: <reply-1@customer.test>\r\nIn-Reply-To: {their_id}\r\nReferences: {their_id}\r\n\
         Date: Tue, 01 Dec 2026 10:05:00 +0100\r\n\r\nIt works again after a restart, thanks.\r\n"
    );
    stack.send(ALICE, SUPPORT, reply.into_bytes()).await;
    until(Duration::from_secs(30), "the reply on the ticket", || {
        let t = desk.json(&["tickets", "show", &number, "--json"]);
        t["articles"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["message_id"] == "reply-1@customer.test"))
    })
    .await;
    assert_eq!(desk.tickets().len(), 1, "the reply opened no ticket");
    // Only the new ticket was confirmed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stack.count(ALICE, "INBOX").await, 1);

    // What operations sees.
    let (code, metrics) = desk.get("/metrics");
    assert_eq!(code, 200);
    for line in [
        "ticketd_messages_total{action=\"created\",source=\"imap\"} 1",
        "ticketd_messages_total{action=\"appended\",source=\"imap\"} 1",
        "ticketd_mailbox_up{mailbox=\"support\"} 1",
        "ticketd_ingest_latency_seconds_count{source=\"imap\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert_eq!(desk.get("/healthz").0, 200);
    assert_eq!(desk.stop(), Some(0), "SIGTERM ends the daemon with 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_imap_password_is_not_in_the_log_even_at_trace() {
    let stack = MailStack::start();
    let mut desk = Desk::new(&stack, Tls::Plain, false, "");
    desk.start_logging("trace");
    stack
        .send(ALICE, SUPPORT, ("Printer offline", "It does not print."))
        .await;
    until(Duration::from_secs(30), "a ticket for alice's mail", || {
        desk.tickets().len() == 1
    })
    .await;
    assert_eq!(desk.stop(), Some(0));
    let log = desk.log();
    assert!(log.contains("IMAP connected"), "{log}");
    // The password as LOGIN quotes it, and AUTHENTICATE PLAIN's response:
    // base64 of "\0support@example.test\0secret".
    for needle in [
        format!("\"{}\"", mailstack::PASSWORD),
        "AHN1cHBvcnRAZXhhbXBsZS50ZXN0AHNlY3JldA==".to_string(),
    ] {
        assert!(
            !log.contains(&needle),
            "{needle} in the log:\n{}",
            log.lines()
                .filter(|l| l.contains(&needle))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imaps_and_smtp_starttls_with_the_test_certificate() {
    let stack = MailStack::start();
    let mut desk = Desk::new(&stack, Tls::Secure, true, "");
    desk.start();
    stack
        .send(
            ALICE,
            SUPPORT,
            ("VPN gateway unreachable", "No tunnel since noon."),
        )
        .await;
    until(Duration::from_secs(30), "a ticket over IMAPS", || {
        desk.tickets().len() == 1
    })
    .await;
    count_until(&stack, ALICE, "INBOX", 1, Duration::from_secs(30)).await;
    let log = desk.log();
    assert!(log.contains("IMAP connected"), "{log}");
    assert_eq!(desk.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_certificate_authority_is_refused_and_nothing_is_taken() {
    let stack = MailStack::start();
    // Trust only the public roots: the test certificate must not pass.
    let mut desk = Desk::new(&stack, Tls::Secure, false, "");
    desk.edit_config(
        &format!("ca_file = \"{}\"\n", stack.ca_cert_path().display()),
        "",
    );
    stack
        .append(SUPPORT, "INBOX", customer_mail(ALICE, 1, "Printer"))
        .await;
    desk.start();
    until(
        Duration::from_secs(20),
        "a certificate error in the log",
        || desk.log().contains("IMAP session ended"),
    )
    .await;
    assert!(desk.tickets().is_empty());
    assert_eq!(
        stack.count(SUPPORT, "INBOX").await,
        1,
        "the mail stays on the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_down_for_30_s_and_postfix_down_lose_nothing() {
    let stack = MailStack::start();
    // IDLE re-issued every 10 s; health fails after 20 s without a sync.
    let mut desk = Desk::new(&stack, Tls::Plain, true, "idle_seconds = 10\n");
    desk.edit_config(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nmax_sync_age_seconds = 20",
    );
    desk.start();
    stack
        .append(SUPPORT, "INBOX", customer_mail(ALICE, 1, "First"))
        .await;
    until(Duration::from_secs(30), "the first ticket", || {
        desk.tickets().len() == 1
    })
    .await;

    // Dovecot goes away for 30 s; Postfix queues what arrives meanwhile.
    stack.stop_imap();
    let down = Instant::now();
    stack
        .send(
            ALICE,
            SUPPORT,
            ("Second", "Sent while the IMAP server was down."),
        )
        .await;
    until(
        Duration::from_secs(40),
        "/healthz failing while Dovecot is down",
        || desk.get("/healthz").0 == 503,
    )
    .await;
    let (_, why) = desk.get("/healthz");
    assert!(why.contains("support"), "names the mailbox: {why}");
    // Down for 30 s in all.
    if let Some(rest) = Duration::from_secs(30).checked_sub(down.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    stack.start_imap();
    until(
        Duration::from_secs(90),
        "the second ticket after the outage",
        || desk.tickets().len() == 2,
    )
    .await;
    assert!(
        desk.log().contains("IMAP session ended"),
        "the outage was noticed"
    );
    until(Duration::from_secs(10), "/healthz ok again", || {
        desk.get("/healthz").0 == 200
    })
    .await;

    // Postfix goes away: the confirmation stays queued and goes out after.
    // First let Postfix finish the two confirmations it has (stopped in the
    // middle of an LMTP delivery, Postfix itself delivers again).
    distinct_until(&stack, ALICE, "INBOX", 2, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.stop_smtp();
    stack
        .append(SUPPORT, "INBOX", customer_mail(ALICE, 3, "Third"))
        .await;
    until(Duration::from_secs(30), "the third ticket", || {
        desk.tickets().len() == 3
    })
    .await;
    until(Duration::from_secs(20), "a failed attempt recorded", || {
        desk.outbox()
            .iter()
            .any(|m| m["status"] == "queued" && m["attempts"].as_i64() > Some(0))
    })
    .await;
    stack.start_smtp();
    until(Duration::from_secs(60), "every confirmation sent", || {
        let o = desk.outbox();
        o.len() == 3 && o.iter().all(|m| m["status"] == "sent")
    })
    .await;
    distinct_until(&stack, ALICE, "INBOX", 3, Duration::from_secs(30)).await;
    let mut ids: Vec<String> = stack
        .fetch_all(ALICE, "INBOX")
        .await
        .iter()
        .filter_map(|m| header(&String::from_utf8_lossy(m), "Message-ID").map(str::to_string))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three different confirmations");
    assert_eq!(desk.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_2000_with_kill_9_in_the_middle_is_stored_exactly_once() {
    const N: usize = 2000;
    let stack = MailStack::start();
    let appended = stack
        .append_many(
            SUPPORT,
            "INBOX",
            // Senders differ (the hourly limit of confirmations is per
            // recipient): two mails each.
            (0..N).map(|i| {
                customer_mail(
                    &format!("customer{}@customer.test", i % 1000),
                    i,
                    &format!("Printer {i} broken"),
                )
            }),
        )
        .await;
    assert_eq!(appended, N);
    let mut desk = Desk::new(&stack, Tls::Plain, false, "batch_size = 100\n");
    desk.start();
    let db = desk.data().join("ticketd.db");
    until(
        Duration::from_secs(60),
        "some tickets before the kill",
        || db.exists() && desk.tickets().len() >= 300,
    )
    .await;
    desk.kill9();
    let at_kill = desk.tickets().len();
    assert!(
        at_kill < N,
        "the kill came in the middle ({at_kill} of {N})"
    );

    desk.start();
    until(Duration::from_secs(120), "every mail a ticket", || {
        desk.tickets().len() >= N
    })
    .await;
    count_until(&stack, SUPPORT, "INBOX", 0, Duration::from_secs(30)).await;
    let tickets = desk.tickets();
    assert_eq!(tickets.len(), N, "exactly one ticket per mail");
    let mut subjects: Vec<&str> = tickets
        .iter()
        .filter_map(|t| t["subject"].as_str())
        .collect();
    subjects.sort_unstable();
    subjects.dedup();
    assert_eq!(subjects.len(), N, "no mail twice");
    assert_eq!(stack.count(SUPPORT, "Processed").await, N as u32);

    // One confirmation row per ticket; files written at most twice for the mails whose
    // delivery was in flight at the kill.
    until(Duration::from_secs(60), "every confirmation sent", || {
        let o = desk.outbox();
        o.len() == N && o.iter().all(|m| m["status"] == "sent")
    })
    .await;
    let files = std::fs::read_dir(desk.data().join("sent"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert!(
        (N..=N + 50).contains(&files),
        "{files} confirmation files for {N} tickets"
    );
    assert_eq!(desk.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_refused_with_5xx_fails_at_once_with_a_note_on_the_ticket() {
    let stack = MailStack::start();
    let mut desk = Desk::new(&stack, Tls::Plain, true, "");
    desk.start();
    // Postfix delivers only to its own domains: RCPT to elsewhere is a 5xx.
    stack
        .append(
            SUPPORT,
            "INBOX",
            customer_mail("bob@elsewhere.test", 7, "Backup failed"),
        )
        .await;
    until(Duration::from_secs(30), "the ticket", || {
        desk.tickets().len() == 1
    })
    .await;
    until(Duration::from_secs(30), "the confirmation failed", || {
        desk.outbox().iter().any(|m| m["status"] == "failed")
    })
    .await;
    let o = desk.outbox();
    assert_eq!(o[0]["attempts"], 1, "a 5xx is not retried: {o:?}");
    let number = desk.tickets()[0]["number"]
        .as_str()
        .expect("number")
        .to_string();
    let t = desk.json(&["tickets", "show", &number, "--json"]);
    let notes: Vec<&str> = t["articles"]
        .as_array()
        .expect("articles")
        .iter()
        .filter(|a| a["direction"] == "note")
        .filter_map(|a| a["body"].as_str())
        .collect();
    assert!(
        notes.iter().any(|n| n.contains("could not be delivered")),
        "a note on the ticket: {notes:?}"
    );
    assert_eq!(desk.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtps_with_auth_delivers_the_confirmation() {
    let stack = MailStack::start();
    let mut desk = Desk::new(&stack, Tls::Secure, true, "");
    // Implicit TLS on the SMTPS port, AUTH as the support account.
    desk.edit_config(
        &format!("port = {}\ntls = \"starttls\"", stack.smtp_port()),
        &format!(
            "port = {}\ntls = \"tls\"\nuser = \"{SUPPORT}\"\npassword_env = \"{PASSWORD_ENV}\"",
            stack.smtps_port()
        ),
    );
    desk.start();
    stack
        .append(
            SUPPORT,
            "INBOX",
            customer_mail(ALICE, 1, "Mail server slow"),
        )
        .await;
    count_until(&stack, ALICE, "INBOX", 1, Duration::from_secs(30)).await;
    assert_eq!(desk.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_without_idle_a_bad_message_is_quarantined_and_does_not_block() {
    let stack = MailStack::start();
    let mut desk = Desk::new(
        &stack,
        Tls::Plain,
        false,
        "idle = false\npoll_seconds = 1\n",
    );
    desk.start();
    // No header at all: cannot be parsed. The good mail behind it must
    // still become a ticket.
    stack
        .append(
            SUPPORT,
            "INBOX",
            b"\x00\x01 this is not a mail \xff\r\n".to_vec(),
        )
        .await;
    stack
        .append(SUPPORT, "INBOX", customer_mail(ALICE, 2, "Scanner broken"))
        .await;
    until(Duration::from_secs(30), "the good mail's ticket", || {
        desk.tickets().len() == 1
    })
    .await;
    count_until(&stack, SUPPORT, "Quarantine", 1, Duration::from_secs(10)).await;
    count_until(&stack, SUPPORT, "Processed", 1, Duration::from_secs(10)).await;
    count_until(&stack, SUPPORT, "INBOX", 0, Duration::from_secs(10)).await;
    let q = desk.json(&["quarantine", "list", "--json"]);
    assert_eq!(q.as_array().map(Vec::len), Some(1), "{q}");
    assert!(desk.log().contains("idle=false"), "polled, not IDLE");
    assert_eq!(desk.stop(), Some(0));
}

/// A message over `[intake] max_message_bytes` stays in the INBOX, untaken
/// and unflagged, is told once, and the mail after it is taken as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_stays_in_the_folder() {
    let stack = MailStack::start();
    let mut desk = Desk::new(
        &stack,
        Tls::Plain,
        false,
        "idle = false\npoll_seconds = 1\n[intake]\nmax_message_bytes = 65536\n",
    );
    desk.start();
    let mut big = customer_mail(ALICE, 1, "Logs");
    big.extend(std::iter::repeat_n(b'x', 70_000));
    big.extend_from_slice(b"\r\n");
    stack.append(SUPPORT, "INBOX", big).await;
    stack
        .append(SUPPORT, "INBOX", customer_mail(ALICE, 2, "Scanner broken"))
        .await;
    until(Duration::from_secs(30), "the small mail's ticket", || {
        desk.tickets().len() == 1
    })
    .await;
    count_until(&stack, SUPPORT, "Processed", 1, Duration::from_secs(10)).await;
    // Two more polls: the big one is neither taken nor moved.
    tokio::time::sleep(Duration::from_secs(2)).await;
    count_until(&stack, SUPPORT, "INBOX", 1, Duration::from_secs(10)).await;
    assert_eq!(desk.tickets().len(), 1);
    let log = desk.log();
    assert_eq!(
        log.matches("not taken, left in the folder").count(),
        1,
        "{log}"
    );
    assert_eq!(desk.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_uidvalidity_rereads_the_folder_and_seen_flags_hide_nothing() {
    let stack = MailStack::start();
    // A folder other than INBOX can be deleted and made again: new UIDs.
    stack.create_folder(SUPPORT, "Support").await;
    let mut desk = Desk::new(
        &stack,
        Tls::Plain,
        false,
        "folder = \"Support\"\nprocessed_folder = \"\"\n",
    );
    desk.start();
    stack
        .append(SUPPORT, "Support", customer_mail(ALICE, 1, "Laptop"))
        .await;
    until(Duration::from_secs(30), "the first ticket", || {
        desk.tickets().len() == 1
    })
    .await;
    assert_eq!(desk.stop(), Some(0));

    // Another client flags everything \Seen, the folder is renumbered, the
    // old mail comes back with a new one, both already \Seen.
    {
        let mut s = stack.imap(SUPPORT).await;
        s.delete("Support").await.expect("DELETE");
        s.create("Support").await.expect("CREATE");
        let _ = s.logout().await;
    }
    stack
        .append_many(
            SUPPORT,
            "Support",
            [
                customer_mail(ALICE, 1, "Laptop"),
                customer_mail(ALICE, 2, "Docking station"),
            ],
        )
        .await;
    {
        use futures_util::TryStreamExt;
        let mut s = stack.imap(SUPPORT).await;
        s.select("Support").await.expect("SELECT");
        let _: Vec<_> = s
            .store("1:*", "+FLAGS (\\Seen)")
            .await
            .expect("STORE")
            .try_collect()
            .await
            .expect("STORE");
        let _ = s.logout().await;
    }
    desk.start();
    until(Duration::from_secs(30), "the second ticket", || {
        desk.tickets().len() == 2
    })
    .await;
    assert!(desk.log().contains("UIDVALIDITY changed"), "{}", desk.log());
    // The old mail was recognised, not opened again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(desk.tickets().len(), 2);
    assert_eq!(desk.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_give_up_after_retry_hours_with_a_note() {
    let stack = MailStack::start();
    let mut desk = Desk::new(&stack, Tls::Plain, true, "");
    // Give up after ~2 s of temporary failures.
    desk.edit_config(
        "retry_base_seconds = 0.5",
        "retry_base_seconds = 0.5\nretry_hours = 0.0006",
    );
    stack.stop_smtp();
    desk.start();
    stack
        .append(SUPPORT, "INBOX", customer_mail(ALICE, 1, "Firewall"))
        .await;
    until(Duration::from_secs(30), "the confirmation given up", || {
        desk.outbox().iter().any(|m| m["status"] == "failed")
    })
    .await;
    let o = desk.outbox();
    assert!(o[0]["attempts"].as_i64() > Some(1), "retried first: {o:?}");
    assert!(
        o[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("gave up")),
        "{o:?}"
    );
    let number = desk.tickets()[0]["number"]
        .as_str()
        .expect("number")
        .to_string();
    let t = desk.json(&["tickets", "show", &number, "--json"]);
    assert!(
        t["articles"]
            .as_array()
            .expect("articles")
            .iter()
            .any(|a| a["direction"] == "note"
                && a["body"]
                    .as_str()
                    .is_some_and(|b| b.contains("could not be delivered"))),
        "{t}"
    );
    stack.start_smtp();
    assert_eq!(desk.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mailboxes_the_monitoring_one_sends_no_confirmations() {
    let stack = MailStack::start();
    let mut desk = Desk::new(&stack, Tls::Plain, false, "");
    // A second mailbox, alerts@, whose senders are machines: no
    // confirmations, severity 2 when no rule matches.
    let mut text = std::fs::read_to_string(&desk.config).expect("config");
    text.push_str(&format!(
        "\n[[imap]]\nname = \"alerts\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"plain\"\n\
         user = \"{ALERTS}\"\npassword_env = \"{PASSWORD_ENV}\"\n\
         [imap.defaults]\nconfirm = false\ndefault_severity = 2\n",
        stack.imap_port()
    ));
    std::fs::write(&desk.config, text).expect("config");
    desk.start();
    stack
        .append(
            SUPPORT,
            "INBOX",
            customer_mail(ALICE, 1, "Question about invoices"),
        )
        .await;
    stack
        .append(
            ALERTS,
            "INBOX",
            customer_mail("monitor@customer.test", 2, "Disk /var almost full"),
        )
        .await;
    until(
        Duration::from_secs(30),
        "a ticket from each mailbox",
        || desk.tickets().len() == 2,
    )
    .await;
    let tickets = desk.tickets();
    let alert = tickets
        .iter()
        .find(|t| t["requester"] == "monitor@customer.test")
        .expect("the alert's ticket");
    assert_eq!(alert["severity"], 2, "the mailbox's default severity");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let to: Vec<String> = desk
        .outbox()
        .iter()
        .flat_map(|m| m["to"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    assert_eq!(
        to,
        vec![ALICE.to_string()],
        "only the customer is confirmed"
    );
    count_until(&stack, ALERTS, "INBOX", 0, Duration::from_secs(10)).await;
    count_until(&stack, ALERTS, "Processed", 1, Duration::from_secs(10)).await;
    let (_, metrics) = desk.get("/metrics");
    assert!(
        metrics.contains("ticketd_mailbox_up{mailbox=\"alerts\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ticketd_mailbox_up{mailbox=\"support\"} 1"),
        "{metrics}"
    );
    assert_eq!(desk.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_move_and_idle_gets_copy_expunge_and_polling() {
    // Dovecot's own list without MOVE and IDLE (UIDPLUS stays).
    let stack = MailStack::start_with(&[(
        "IMAP_CAPABILITY",
        "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE LITERAL+ UIDPLUS NAMESPACE CHILDREN UNSELECT MULTIAPPEND",
    )]);
    let mut desk = Desk::new(&stack, Tls::Plain, false, "poll_seconds = 1\n");
    desk.start();
    stack
        .append_many(
            SUPPORT,
            "INBOX",
            [
                customer_mail(ALICE, 1, "Printer"),
                customer_mail(ALICE, 2, "Scanner"),
            ],
        )
        .await;
    until(Duration::from_secs(30), "two tickets", || {
        desk.tickets().len() == 2
    })
    .await;
    count_until(&stack, SUPPORT, "Processed", 2, Duration::from_secs(10)).await;
    count_until(&stack, SUPPORT, "INBOX", 0, Duration::from_secs(10)).await;
    assert!(desk.log().contains("idle=false"), "polled: {}", desk.log());
    assert_eq!(desk.stop(), Some(0));
}

/// Issue 14, item 1: a mail that reached the INBOX while ticketd was not
/// running keeps its arrival (the server's INTERNALDATE) as the receipt
/// timestamp in the confirmation and as the start of its SLA clocks;
/// `tickets show` tells arrival and commit apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_that_waited_in_the_inbox_keeps_its_arrival_for_receipt_and_sla() {
    let stack = MailStack::start();
    let mut desk = Desk::new(&stack, Tls::Plain, false, "");
    // alice's organisation has the Premium plan: 24/7 clocks.
    let customers = desk.data().join("customers");
    std::fs::create_dir_all(&customers).expect("customers dir");
    std::fs::write(
        customers.join("customers.toml"),
        "[[plan]]\nname = \"Premium\"\n\n[[organisation]]\nid = \"cust\"\nname = \"Customer Ltd\"\n\
         plan = \"Premium\"\ndomains = [\"customer.test\"]\n",
    )
    .expect("customers file");
    // Delivered 40 minutes ago, while ticketd was stopped; the sender's
    // Date header says something else again and must not count.
    let arrived = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - 40 * 60)
        .expect("an instant");
    let internaldate = arrived
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("\"%d-%b-%Y %H:%M:%S +0000\"")
        .to_string();
    let mut imap = stack.imap(SUPPORT).await;
    imap.append(
        "INBOX",
        None,
        Some(&internaldate),
        customer_mail(ALICE, 1, "Printer broken"),
    )
    .await
    .expect("APPEND with INTERNALDATE");
    let _ = imap.logout().await;

    desk.start();
    until(Duration::from_secs(30), "the ticket", || {
        desk.tickets().len() == 1
    })
    .await;
    let number = desk.tickets()[0]["number"]
        .as_str()
        .expect("number")
        .to_string();
    let t = desk.json(&["tickets", "show", &number, "--json"]);
    let ts = |v: &Value| -> jiff::Timestamp {
        v.as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("an instant: {v}"))
    };
    // The SLA clock counts from the arrival.
    assert_eq!(t["sla"]["plan"], "Premium", "{t}");
    let first = t["sla"]["targets"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["target"] == "first-response"))
        .unwrap_or_else(|| panic!("a first-response target: {t}"))
        .clone();
    let allowed: jiff::SignedDuration = first["amount"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("an amount: {first}"));
    assert_eq!(ts(&first["due"]), arrived + allowed, "{first}");

    // The confirmation tells the arrival as the receipt timestamp.
    let sent = desk.data().join("sent");
    let mut eml = None;
    until(Duration::from_secs(20), "the confirmation file", || {
        eml = std::fs::read_dir(&sent).ok().and_then(|r| {
            r.filter_map(|e| e.ok())
                .find(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .and_then(|e| std::fs::read(e.path()).ok())
        });
        eml.is_some()
    })
    .await;
    let eml = eml.expect("confirmation");
    let body = ticketd::ingest::parse::parse(&eml).expect("parse").body;
    let local = arrived
        .to_zoned(jiff::tz::TimeZone::get("Europe/Berlin").expect("zone"))
        .strftime("%d.%m.%Y %H:%M:%S %Z")
        .to_string();
    assert!(
        body.contains(&format!("Received at:     {local}")),
        "receipt {local} in\n{body}"
    );
    // Both instants: arrival (the receipt) and the commit 40 minutes later.
    assert_eq!(ts(&t["arrived_at"]), arrived, "{t}");
    let stored = ts(&t["created_at"]);
    assert!(
        stored.duration_since(arrived) >= jiff::SignedDuration::from_mins(39),
        "stored {stored}, arrived {arrived}"
    );
    assert_eq!(ts(&t["articles"][0]["arrived_at"]), arrived, "{t}");
    assert_eq!(desk.stop(), Some(0));
}

/// Issue 14, item 10: an IMAP outage shows at once in
/// `ticketd_mailbox_connected`, and `/healthz` fails once the mailbox has
/// been disconnected longer than `disconnected_grace_seconds` — long before
/// `max_sync_age_seconds` (900 s by default) would notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imap_outage_shows_at_once_in_the_connected_gauge_and_in_healthz_after_the_grace() {
    let stack = MailStack::start();
    let mut desk = Desk::new(&stack, Tls::Plain, false, "idle_seconds = 10\n");
    desk.edit_config(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\ndisconnected_grace_seconds = 4",
    );
    desk.start();
    let connected = |desk: &Desk| {
        let (_, m) = desk.get("/metrics");
        m.lines()
            .find(|l| l.starts_with("ticketd_mailbox_connected{mailbox=\"support\"}"))
            .map(|l| l.ends_with(" 1"))
    };
    until(Duration::from_secs(30), "the mailbox connected", || {
        desk.log().contains("serving /healthz") && connected(&desk) == Some(true)
    })
    .await;
    until(Duration::from_secs(10), "/healthz ok once synced", || {
        desk.get("/healthz").0 == 200
    })
    .await;

    // The server goes away as in a crash or a reboot: the master stops and
    // the session process ticketd is logged in to (which outlives a
    // stopped master here) dies with it. Its pid is the `mpid` of the
    // last login Dovecot logged.
    let dovecot_log = stack.state_dir().join("dovecot").join("dovecot.log");
    let session = std::fs::read_to_string(&dovecot_log)
        .expect("dovecot log")
        .lines()
        .filter(|l| l.contains("Login: user=<") && l.contains(SUPPORT))
        .filter_map(|l| l.split("mpid=").nth(1))
        .filter_map(|rest| rest.split(',').next()?.parse::<u32>().ok())
        .next_back()
        .expect("the session's pid in the dovecot log");
    stack.stop_imap();
    let _ = Command::new("kill")
        .args(["-KILL", &session.to_string()])
        .status();
    until(Duration::from_secs(15), "the gauge at 0", || {
        connected(&desk) == Some(false)
    })
    .await;
    let lost = Instant::now();
    assert_eq!(desk.get("/healthz").0, 200, "healthy within the grace");
    until(
        Duration::from_secs(20),
        "/healthz failing after the grace",
        || desk.get("/healthz").0 == 503,
    )
    .await;
    assert!(
        lost.elapsed() >= Duration::from_secs(3),
        "not before the grace: {:?}",
        lost.elapsed()
    );
    let (_, why) = desk.get("/healthz");
    assert!(
        why.contains("support: disconnected for") && why.contains("grace 4 s"),
        "{why}"
    );

    stack.start_imap();
    until(Duration::from_secs(60), "connected again", || {
        connected(&desk) == Some(true)
    })
    .await;
    until(Duration::from_secs(10), "/healthz ok again", || {
        desk.get("/healthz").0 == 200
    })
    .await;
    assert_eq!(desk.stop(), Some(0));
}

/// Issue 14, item 11: SIGHUP rereads the whole file; an IMAP mailbox added
/// there starts syncing without a restart, one taken out stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_added_on_sighup_starts_syncing_and_a_removed_one_stops() {
    let stack = MailStack::start();
    let mut desk = Desk::new(&stack, Tls::Plain, false, "");
    desk.start();
    until(Duration::from_secs(30), "the first mailbox in sync", || {
        desk.log().contains("mailbox in sync")
    })
    .await;
    let before = std::fs::read_to_string(&desk.config).expect("config");
    let alerts = format!(
        "\n[[imap]]\nname = \"alerts\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"plain\"\n\
         user = \"{ALERTS}\"\npassword_env = \"{PASSWORD_ENV}\"\n",
        stack.imap_port()
    );
    std::fs::write(&desk.config, format!("{before}{alerts}")).expect("config");
    let hup = |desk: &Desk| {
        let pid = desk.daemon.as_ref().expect("running").id();
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill -HUP");
    };
    hup(&desk);
    until(Duration::from_secs(10), "the reload logged", || {
        desk.log().contains("SIGHUP")
    })
    .await;
    stack
        .append(
            ALERTS,
            "INBOX",
            customer_mail(ALICE, 1, "Into the mailbox added by SIGHUP"),
        )
        .await;
    until(
        Duration::from_secs(30),
        "a ticket from the new mailbox",
        || desk.tickets().len() == 1,
    )
    .await;
    // Taken out again: it stops, and mail there stays where it is.
    std::fs::write(&desk.config, &before).expect("config");
    hup(&desk);
    until(Duration::from_secs(20), "the mailbox stopped", || {
        desk.log().contains("mailbox removed")
    })
    .await;
    stack
        .append(
            ALERTS,
            "INBOX",
            customer_mail(ALICE, 2, "After its removal"),
        )
        .await;
    stack
        .append(SUPPORT, "INBOX", customer_mail(ALICE, 3, "Still watched"))
        .await;
    until(
        Duration::from_secs(30),
        "the remaining mailbox's ticket",
        || desk.tickets().len() == 2,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(desk.tickets().len(), 2, "the removed mailbox took nothing");
    assert_eq!(desk.stop(), Some(0));
}

/// Issue 14, item 9: `check-config --connect` logs in to the IMAP mailbox
/// (and selects its folder) and to the SMTP relay (STARTTLS, AUTH) of a
/// real Dovecot and Postfix, one line per check; each way of getting them
/// wrong fails with a clear line and a non-zero exit, and no password is
/// printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_connect_logs_in_to_imap_and_smtp_and_names_what_fails() {
    const SMTP_ENV: &str = "TICKETD_TEST_SMTP_PASSWORD";
    let stack = MailStack::start();
    let desk = Desk::new(&stack, Tls::Secure, true, "");
    desk.edit_config(
        &format!("port = {}\ntls = \"starttls\"", stack.smtp_port()),
        &format!(
            "port = {}\ntls = \"starttls\"\nuser = \"{SUPPORT}\"\npassword_env = \"{SMTP_ENV}\"",
            stack.submission_port()
        ),
    );
    let good = std::fs::read_to_string(&desk.config).expect("config");
    let check = |text: &str, imap_pw: &str, smtp_pw: &str| {
        std::fs::write(&desk.config, text).expect("config");
        let o = desk
            .cmd()
            .args(["check-config", "--connect"])
            .env(PASSWORD_ENV, imap_pw)
            .env(SMTP_ENV, smtp_pw)
            .output()
            .expect("check-config");
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            !out.contains("wrong-pw-123") && !out.contains(mailstack::PASSWORD),
            "no password in the output: {out}"
        );
        (o.status.code(), out)
    };
    let line = |out: &str, start: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?} in {out}"))
            .to_string()
    };

    // All good: one ok line per check.
    let (code, out) = check(&good, mailstack::PASSWORD, mailstack::PASSWORD);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        line(&out, "ok    imap support:").contains("folder \"INBOX\" selected"),
        "{out}"
    );
    line(
        &out,
        &format!("ok    smtp 127.0.0.1:{}:", stack.submission_port()),
    );

    // A wrong SMTP password.
    let (code, out) = check(&good, mailstack::PASSWORD, "wrong-pw-123");
    assert_eq!(code, Some(1), "{out}");
    let l = line(&out, "FAIL  smtp");
    assert!(
        l.contains("535") || l.to_lowercase().contains("auth"),
        "{l}"
    );
    line(&out, "ok    imap support:");

    // A closed SMTP port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let text = good.replace(
        &format!(
            "port = {}\ntls = \"starttls\"\nuser",
            stack.submission_port()
        ),
        &format!("port = {closed}\ntls = \"starttls\"\nuser"),
    );
    let (code, out) = check(&text, mailstack::PASSWORD, mailstack::PASSWORD);
    assert_eq!(code, Some(1), "{out}");
    let l = line(&out, &format!("FAIL  smtp 127.0.0.1:{closed}:"));
    assert!(l.to_lowercase().contains("refused"), "{l}");

    // A wrong IMAP password.
    let (code, out) = check(&good, "wrong-pw-123", mailstack::PASSWORD);
    assert_eq!(code, Some(1), "{out}");
    let l = line(&out, "FAIL  imap support:");
    assert!(l.contains("log in as") && l.contains(SUPPORT), "{l}");

    // A folder that does not exist.
    let text = good.replace(
        &format!("user = \"{SUPPORT}\"\npassword_env = \"{PASSWORD_ENV}\""),
        &format!(
            "user = \"{SUPPORT}\"\npassword_env = \"{PASSWORD_ENV}\"\nfolder = \"NoSuchFolder\""
        ),
    );
    assert_ne!(text, good);
    let (code, out) = check(&text, mailstack::PASSWORD, mailstack::PASSWORD);
    assert_eq!(code, Some(1), "{out}");
    let l = line(&out, "FAIL  imap support:");
    assert!(l.contains("\"NoSuchFolder\" cannot be selected"), "{l}");
}
