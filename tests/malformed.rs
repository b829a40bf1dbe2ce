//! Malformed and hostile input, generated here: every message must get a
//! clear decision (an `Ok` outcome), keep its raw bytes in `messages.raw`,
//! and finish. Sizes follow the configured limits (25 MB of attachments,
//! 1000 attachments per message).
//!
//! Times are printed (`--nocapture`), not asserted; a watchdog only turns a
//! hang into a failure that names the case.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ticketd::domain::Action;
use ticketd::service::{Incoming, Intake, Outcome};
use ticketd::store::{Store, TicketView};

/// Far above any sane time for one message, even in a debug build: only a
/// hang (a loop, a quadratic blow-up) reaches it.
const WATCHDOG: Duration = Duration::from_secs(600);

/// A small deterministic generator (xorshift64*), so garbage is the same on
/// every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

/// Base64 with 76-character lines and CRLF, as a mail client writes it.
fn base64_lines(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len() * 4 / 3 + data.len() / 57 * 2 + 4);
    for line in data.chunks(57) {
        for c in line.chunks(3) {
            let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            out.push(T[(n >> 18) as usize & 63] as char);
            out.push(T[(n >> 12) as usize & 63] as char);
            out.push(if c.len() > 1 {
                T[(n >> 6) as usize & 63] as char
            } else {
                '='
            });
            out.push(if c.len() > 2 {
                T[n as usize & 63] as char
            } else {
                '='
            });
        }
        out.push_str("\r\n");
    }
    out
}

fn head(id: &str, subject: &str) -> String {
    format!(
        "From: Anna Kunde <anna@kunde.example>\r\nTo: support@example.com\r\nSubject: {subject}\r\nMessage-ID: <{id}@kunde.example>\r\nDate: Mon, 2 Mar 2026 09:15:00 +0100\r\nMIME-Version: 1.0\r\n"
    )
}

/// A multipart/mixed mail whose last base64 part is cut mid-line and whose
/// closing boundary never comes.
fn truncated_mime() -> Vec<u8> {
    let pdf = Rng(7).bytes(6000);
    let b64 = base64_lines(&pdf);
    let cut = &b64[..b64.len() / 2 + 13];
    format!(
        "{}Content-Type: multipart/mixed; boundary=\"BOUND\"\r\n\r\n--BOUND\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHallo, der Bericht hängt an.\r\n--BOUND\r\nContent-Type: application/pdf; name=\"bericht.pdf\"\r\nContent-Disposition: attachment; filename=\"bericht.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{cut}",
        head("truncated", "Bericht (abgeschnitten)")
    )
    .into_bytes()
}

/// One header line of `size` bytes; `name` decides which one.
fn long_header(name: &str, size: usize) -> Vec<u8> {
    let value: String = match name {
        // Many ids: what threading reads.
        "References" => {
            let mut v = String::with_capacity(size + 64);
            let mut i = 0;
            while v.len() < size {
                v.push_str(&format!("<id{i}.x@kunde.example> "));
                i += 1;
            }
            v
        }
        _ => "a".repeat(size),
    };
    let subject = if name == "Subject" {
        value.clone()
    } else {
        "Langer Header".into()
    };
    let mut m = format!(
        "From: Anna Kunde <anna@kunde.example>\r\nTo: support@example.com\r\nSubject: {subject}\r\nMessage-ID: <long-{name}@kunde.example>\r\n"
    );
    if name != "Subject" {
        m.push_str(&format!("{name}: {value}\r\n"));
    }
    m.push_str("\r\nDer Header ist lang.\r\n");
    m.into_bytes()
}

/// A text part and `n` small attachments.
fn many_parts(n: usize) -> Vec<u8> {
    let mut m = head("many-parts", &format!("{n} Teile"));
    m.push_str("Content-Type: multipart/mixed; boundary=\"P\"\r\n\r\n--P\r\nContent-Type: text/plain\r\n\r\nSehr viele Anhänge.\r\n");
    for i in 0..n {
        m.push_str(&format!(
            "--P\r\nContent-Type: application/octet-stream; name=\"f{i:05}.bin\"\r\nContent-Disposition: attachment; filename=\"f{i:05}.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQF\r\n"
        ));
    }
    m.push_str("--P--\r\n");
    m.into_bytes()
}

/// A mail that forwards a mail that forwards … `depth` levels of
/// message/rfc822.
fn nested_rfc822(depth: usize) -> Vec<u8> {
    let mut inner = String::from(
        "From: innen@kunde.example\r\nSubject: Ebene 0\r\nMessage-ID: <nest-0@kunde.example>\r\n\r\nDer innerste Text.\r\n",
    );
    for level in 1..=depth {
        let b = format!("N{level}");
        let headers = if level == depth {
            head(
                &format!("nest-{depth}-top"),
                &format!("Fwd: {depth} Ebenen"),
            )
        } else {
            format!(
                "From: ebene{level}@kunde.example\r\nSubject: Fwd: Ebene {level}\r\nMessage-ID: <nest-{level}@kunde.example>\r\nMIME-Version: 1.0\r\n"
            )
        };
        inner = format!(
            "{headers}Content-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\n--{b}\r\nContent-Type: text/plain\r\n\r\nEbene {level} leitet weiter.\r\n--{b}\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"ebene{}.eml\"\r\n\r\n{inner}\r\n--{b}--\r\n",
            level - 1
        );
    }
    inner.into_bytes()
}

/// multipart inside multipart, `depth` times.
fn nested_multipart(depth: usize) -> Vec<u8> {
    let mut m = head("deep-multipart", "Tief verschachtelt");
    m.push_str("Content-Type: multipart/mixed; boundary=\"D0\"\r\n\r\n");
    for i in 0..depth {
        m.push_str(&format!(
            "--D{i}\r\nContent-Type: multipart/mixed; boundary=\"D{}\"\r\n\r\n",
            i + 1
        ));
    }
    m.push_str(&format!(
        "--D{depth}\r\nContent-Type: text/plain\r\n\r\nganz unten\r\n"
    ));
    for i in (0..=depth).rev() {
        m.push_str(&format!("--D{i}--\r\n"));
    }
    m.into_bytes()
}

fn thirty_mb_attachment() -> Vec<u8> {
    let data = Rng(30).bytes(30 * 1024 * 1024);
    let mut m = head("thirty-mb", "Großer Anhang");
    m.push_str("Content-Type: multipart/mixed; boundary=\"BIG\"\r\n\r\n--BIG\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nDas Abbild hängt an.\r\n--BIG\r\nContent-Type: application/octet-stream; name=\"disk.img\"\r\nContent-Disposition: attachment; filename=\"disk.img\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    m.push_str(&base64_lines(&data));
    m.push_str("--BIG--\r\n");
    m.into_bytes()
}

/// What a case must end as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Quarantined,
    Created,
    Suppressed,
    /// Any of the five actions (garbage may or may not look like a header).
    Any,
}

struct Case {
    name: &'static str,
    raw: Vec<u8>,
    expect: Expect,
}

fn cases() -> Vec<Case> {
    let mut rng = Rng(0x005E_ED0F_7E57);
    let mut garbage = rng.bytes(64 * 1024);
    // Make sure there are NULs and line ends among the noise.
    for i in (0..garbage.len()).step_by(97) {
        garbage[i] = 0;
    }
    for i in (5..garbage.len()).step_by(131) {
        garbage[i] = b'\n';
    }
    let mut garbage_colon = b"X".to_vec();
    garbage_colon.extend(rng.bytes(4096));
    garbage_colon.extend(b": \0\0\r\n\r\n");
    garbage_colon.extend(rng.bytes(4096));

    vec![
        Case {
            name: "empty input",
            raw: Vec::new(),
            expect: Expect::Quarantined,
        },
        Case {
            name: "only whitespace",
            raw: b" \r\n\t\r\n  \n\n\r\n".to_vec(),
            expect: Expect::Quarantined,
        },
        Case {
            name: "truncated MIME (no closing boundary, cut base64)",
            raw: truncated_mime(),
            expect: Expect::Created,
        },
        Case {
            name: "binary garbage with NULs (64 KiB)",
            raw: garbage,
            expect: Expect::Any,
        },
        Case {
            name: "binary garbage around a colon",
            raw: garbage_colon,
            expect: Expect::Any,
        },
        Case {
            name: "2 MB Subject line",
            raw: long_header("Subject", 2 * 1024 * 1024),
            expect: Expect::Created,
        },
        Case {
            name: "2 MB X-header line",
            raw: long_header("X-Long", 2 * 1024 * 1024),
            expect: Expect::Created,
        },
        Case {
            name: "2 MB References line (~80,000 ids)",
            raw: long_header("References", 2 * 1024 * 1024),
            expect: Expect::Created,
        },
        Case {
            name: "10,000 MIME parts",
            raw: many_parts(10_000),
            expect: Expect::Created,
        },
        Case {
            name: "5-level nested message/rfc822",
            raw: nested_rfc822(5),
            expect: Expect::Created,
        },
        Case {
            name: "50-level nested message/rfc822",
            raw: nested_rfc822(50),
            expect: Expect::Created,
        },
        Case {
            name: "2,000-level nested multipart",
            raw: nested_multipart(2000),
            expect: Expect::Created,
        },
        Case {
            name: "header only, no body",
            raw: b"From: anna@kunde.example\r\nTo: support@example.com\r\nSubject: Nur Kopf\r\nMessage-ID: <header-only@kunde.example>".to_vec(),
            expect: Expect::Created,
        },
        Case {
            name: "no From at all",
            raw: b"To: support@example.com\r\nSubject: Wer bin ich\r\nMessage-ID: <no-from@kunde.example>\r\n\r\nOhne Absender.\r\n".to_vec(),
            expect: Expect::Suppressed,
        },
        Case {
            name: "invalid charset name",
            raw: [
                head("bad-charset", "Zeichensatz").as_bytes(),
                b"Content-Type: text/plain; charset=\"x-no-such-charset-42\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xfc\xdfe, der Drucker \xe4chzt.\r\n",
            ]
            .concat(),
            expect: Expect::Created,
        },
        Case {
            name: "invalid base64",
            raw: [
                head("bad-base64", "Kaputtes Base64").as_bytes(),
                b"Content-Type: multipart/mixed; boundary=\"Q\"\r\n\r\n--Q\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!das ist kein base64 @@@ ===\r\nSGFsbG8=====WVs\r\n--Q\r\nContent-Type: application/pdf; name=\"x.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n%%%%\x00\x01\xff====\r\n--Q--\r\n",
            ]
            .concat(),
            expect: Expect::Created,
        },
        Case {
            name: "NULs and control bytes in header and body",
            raw: b"From: Anna\x00 <anna@kunde.example>\r\nTo: support@example.com\r\nSubject: Null\x00byte\x07 \x1b[31mrot\r\nMessage-ID: <nul\x00@kunde.example>\r\n\r\nText\x00mit NUL\r\n".to_vec(),
            expect: Expect::Created,
        },
        Case {
            name: "30 MB attachment (over the 25 MB limit)",
            raw: thirty_mb_attachment(),
            expect: Expect::Created,
        },
    ]
}

struct Env {
    _dir: tempfile::TempDir,
    store: Store,
    intake: Arc<Intake>,
    cfg: ticketd::config::Config,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ticketd::config::Config::default();
    let data = ticketd::service::DataDir::open(dir.path()).unwrap();
    let store = ticketd::service::open_store(&cfg, &data, 1).await.unwrap();
    let key = ticketd::keys::MacKey::load(&store, &data.root)
        .await
        .unwrap();
    let intake = Arc::new(Intake::new(&cfg, key));
    Env {
        _dir: dir,
        store,
        intake,
        cfg,
    }
}

/// Ingests one message in a task of its own (a panic names the case) under
/// the watchdog.
async fn ingest(env: &Env, name: &str, raw: &[u8]) -> (Outcome, Duration) {
    let item = Incoming {
        raw: raw.to_vec(),
        source: format!("malformed:{name}"),
        arrived: None,
    };
    let (intake, store) = (env.intake.clone(), env.store.clone());
    let t0 = Instant::now();
    let task = tokio::spawn(async move {
        intake
            .ingest_batch(&store, &[item], jiff::Timestamp::now())
            .await
            .pop()
    });
    let joined = tokio::time::timeout(WATCHDOG, task)
        .await
        .unwrap_or_else(|_| panic!("{name}: no decision after {WATCHDOG:?}"));
    let elapsed = t0.elapsed();
    let outcome = match joined {
        Err(e) => panic!("{name}: the pipeline panicked: {e}"),
        Ok(None) => panic!("{name}: no result"),
        Ok(Some(Err(e))) => panic!("{name}: store error: {e}"),
        Ok(Some(Ok(o))) => o,
    };
    (outcome, elapsed)
}

async fn raw_kept(store: &Store, sha256: &str) -> Option<Vec<u8>> {
    store.raw_by_sha256(sha256).await.expect("raw message")
}

async fn ticket(store: &Store, o: &Outcome, name: &str) -> TicketView {
    let n = o
        .ticket
        .as_ref()
        .unwrap_or_else(|| panic!("{name}: no ticket number"));
    store
        .show_ticket(n.as_str())
        .await
        .expect("show_ticket")
        .unwrap_or_else(|| panic!("{name}: ticket {} not found", n.as_str()))
}

fn notes(t: &TicketView) -> Vec<&str> {
    t.articles
        .iter()
        .filter(|a| a.direction == "note")
        .map(|a| a.body.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_message_gets_a_decision() {
    let env = env().await;
    let started = Instant::now();
    let mut failures = Vec::new();
    for case in cases() {
        let (o, elapsed) = ingest(&env, case.name, &case.raw).await;
        println!(
            "{:>10.1?}  {:<50} {:>9} bytes -> {} ({}) {}",
            elapsed,
            case.name,
            case.raw.len(),
            o.action.as_str(),
            o.kind.as_deref().unwrap_or("-"),
            truncate(&o.reason, 100)
        );
        match raw_kept(&env.store, &o.sha256).await {
            Some(kept) if kept == case.raw => {}
            Some(kept) => failures.push(format!(
                "{}: raw bytes differ ({} stored, {} received)",
                case.name,
                kept.len(),
                case.raw.len()
            )),
            None => failures.push(format!("{}: raw message not stored", case.name)),
        }
        let ok = match case.expect {
            Expect::Any => true,
            Expect::Quarantined => o.action == Action::Quarantined,
            Expect::Created => o.action == Action::Created,
            Expect::Suppressed => o.action == Action::Suppressed,
        };
        if !ok {
            failures.push(format!(
                "{}: expected {:?}, got {} ({})",
                case.name,
                case.expect,
                o.action.as_str(),
                o.reason
            ));
            continue;
        }
        if o.action == Action::Created {
            let t = ticket(&env.store, &o, case.name).await;
            let attachments: usize = t.articles.iter().map(|a| a.attachments.len()).sum();
            println!(
                "{:>12}ticket {}: {} attachment(s), notes {:?}",
                "",
                t.summary.number,
                attachments,
                notes(&t)
                    .iter()
                    .map(|n| truncate(n, 90))
                    .collect::<Vec<_>>()
            );
            check_ticket(&env, case.name, &t, &mut failures);
        }
    }
    println!("all cases in {:.1?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// Case-specific checks on the ticket a message opened.
fn check_ticket(env: &Env, name: &str, t: &TicketView, failures: &mut Vec<String>) {
    let inbound: Vec<_> = t.articles.iter().filter(|a| a.direction == "in").collect();
    if inbound.len() != 1 {
        failures.push(format!(
            "{name}: {} inbound articles on the new ticket",
            inbound.len()
        ));
        return;
    }
    let article = inbound[0];
    let notes = notes(t);
    let limits = &env.cfg.intake;
    let is = |prefix: &str| name.starts_with(prefix);
    if is("10,000 MIME parts") {
        if article.attachments.len() != limits.max_attachments {
            failures.push(format!(
                "{name}: {} attachments stored, expected the limit {}",
                article.attachments.len(),
                limits.max_attachments
            ));
        }
        if !notes
            .iter()
            .any(|n| n.contains("further attachments dropped"))
        {
            failures.push(format!(
                "{name}: no note about dropped attachments: {notes:?}"
            ));
        }
    } else if is("30 MB attachment") {
        if article.attachments.iter().any(|a| a.filename == "disk.img") {
            failures.push(format!("{name}: the 30 MB attachment was stored"));
        }
        if !notes
            .iter()
            .any(|n| n.contains("disk.img") && n.contains("dropped"))
        {
            failures.push(format!(
                "{name}: no note about the dropped attachment: {notes:?}"
            ));
        }
        if !article.body.contains("Das Abbild hängt an.") {
            failures.push(format!("{name}: body lost: {:?}", article.body));
        }
    } else if is("5-level nested") {
        let total: i64 = article.attachments.iter().map(|a| a.size).sum();
        if article.attachments.is_empty() || total == 0 {
            failures.push(format!(
                "{name}: the forwarded message is not attached: {:?}",
                article.attachments
            ));
        }
        if !article.body.contains("Ebene 5 leitet weiter.") {
            failures.push(format!("{name}: body lost: {:?}", article.body));
        }
    } else if is("truncated MIME") && !article.body.contains("Hallo, der Bericht") {
        failures.push(format!("{name}: body lost: {:?}", article.body));
    } else if is("2 MB Subject") {
        // The subject is kept, cut to a sane length (the raw message
        // keeps all of it).
        let len = t.summary.subject.chars().count();
        if len == 0 || len > ticketd::ingest::parse::MAX_SUBJECT_CHARS + 1 {
            failures.push(format!("{name}: ticket subject of {len} characters"));
        }
    } else if is("invalid charset") && !article.body.contains("der Drucker") {
        failures.push(format!("{name}: body lost: {:?}", article.body));
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// A message with more than `max_attachments` parts and one over the byte
/// limit, with a configuration that lowers both: the limits come from the
/// configuration, not from constants.
#[tokio::test]
async fn limits_follow_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ticketd::config::Config::default();
    cfg.intake.max_attachments = 3;
    cfg.intake.max_attachment_bytes = 20;
    let data = ticketd::service::DataDir::open(dir.path()).unwrap();
    let store = ticketd::service::open_store(&cfg, &data, 1).await.unwrap();
    let key = ticketd::keys::MacKey::load(&store, &data.root)
        .await
        .unwrap();
    let intake = Intake::new(&cfg, key);
    let raw = many_parts(5);
    let o = intake
        .ingest_batch(
            &store,
            &[Incoming {
                raw: raw.clone(),
                source: "test".into(),
                arrived: None,
            }],
            jiff::Timestamp::now(),
        )
        .await
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!(o.action, Action::Created, "{}", o.reason);
    let t = store
        .show_ticket(o.ticket.as_ref().unwrap().as_str())
        .await
        .unwrap()
        .unwrap();
    let a = t.articles.iter().find(|a| a.direction == "in").unwrap();
    // Each attachment is 6 bytes: three fit the count, 18 bytes fit the size.
    assert_eq!(a.attachments.len(), 3, "{:?}", a.attachments);
    let notes = notes(&t);
    assert!(
        notes
            .iter()
            .any(|n| n.contains("2 further attachments dropped")),
        "{notes:?}"
    );
    assert_eq!(raw_kept(&store, &o.sha256).await.as_deref(), Some(&raw[..]));
}
