//! A bounded, reproducible fuzz run over every parser entry point (stable
//! Rust has no cargo-fuzz, so this is a mutation fuzzer of its own).
//!
//! Seeds: the real-world corpus (`../shared/corpus` or `$TICKETD_CORPUS`,
//! read in place; when it is missing the run says SKIPPED for it and goes
//! on with the rest), the project's fixtures (`tests/fixtures`,
//! `examples/mail`) and small hostile mails (`tests/support/hostile.rs`).
//! Each round takes a seed and mutates it: byte flips, truncation,
//! splicing two mails, duplicated header lines, huge repetition, broken
//! MIME boundaries, charset garbage, nesting (multipart, message/rfc822,
//! HTML), line-end changes, exploded address and References headers.
//!
//! Every mutant goes through `parse`, `parse_delivery_status`, the alert
//! parser (built-in formats and a generic rule), the guard, the thread
//! keys, the rules and `decide` (as a new mail and as a follow-up). The
//! properties: no panic; each mutant done within a time bound (1 s in a
//! release build, 10 s in a debug one; `TICKETD_FUZZ_CASE_MS` sets it);
//! what is kept of it bounded by its size (subject, recipients,
//! references, body); and every tenth mutant (and every seed)
//! also goes through `Intake::ingest_batch` into a temporary SQLite store,
//! where each must get a decision and keep its raw bytes exactly.
//!
//! ```text
//! cargo test --test fuzz -- --nocapture                  # ~20 s, new seed
//! TICKETD_FUZZ_SECS=180 cargo test --release --test fuzz # what CI runs
//! TICKETD_FUZZ_SEED=1234 cargo test --test fuzz          # the same rounds again
//! TICKETD_FUZZ_ITERS=5000 …                              # stop after n rounds
//! TICKETD_FUZZ_REPLAY=path/to/mail.eml cargo test --test fuzz  # one input
//! ```
//!
//! A failure names the seed and round, and writes the input to
//! `target/tmp/fuzz-failure-<seed>-<round>.eml` for `TICKETD_FUZZ_REPLAY`.

#[path = "support/hostile.rs"]
mod hostile;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ticketd::config::Config;
use ticketd::domain::{Action, Severity, Status, TicketNumber};
use ticketd::ingest::alerts::{parse_alert, GenericAlertConfig, GenericAlertRule};
use ticketd::ingest::classify::{Facts, RuleSet};
use ticketd::ingest::decide::{decide, DecideConfig, Lookups, TicketInfo};
use ticketd::ingest::parse::{
    parse, parse_delivery_status, sha256_hex, ParsedMail, MAX_RECIPIENTS, MAX_REFERENCES,
    MAX_SUBJECT_CHARS,
};
use ticketd::ingest::thread::{IdSigner, SubjectTag};
use ticketd::ingest::{dedupe_key, guard, lookup_keys};
use ticketd::keys::MacKey;
use ticketd::service::{Incoming, Intake};
use ticketd::store::Store;

/// Largest mutant; the configured attachment limit is 25 MB, but a fuzz
/// round should be cheap and the hostile benchmark covers size.
const MAX_MUTANT: usize = 2 * 1024 * 1024;

/// Mutants stored per store batch.
const BATCH: usize = 16;

/// Settings from the environment, with their defaults.
struct Settings {
    secs: u64,
    iters: Option<u64>,
    seed: u64,
    case_limit: Duration,
    replay: Option<PathBuf>,
}

impl Settings {
    fn from_env() -> Settings {
        let num = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse().ok());
        let seed = num("TICKETD_FUZZ_SEED").unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            t.as_nanos() as u64 ^ u64::from(std::process::id())
        });
        // A debug build is 10–30 times slower than the release build the
        // 1 s target is for.
        let default_limit_ms = if cfg!(debug_assertions) {
            10_000
        } else {
            1_000
        };
        Settings {
            secs: num("TICKETD_FUZZ_SECS").unwrap_or(20),
            iters: num("TICKETD_FUZZ_ITERS"),
            seed,
            case_limit: Duration::from_millis(
                num("TICKETD_FUZZ_CASE_MS").unwrap_or(default_limit_ms),
            ),
            replay: std::env::var_os("TICKETD_FUZZ_REPLAY")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        }
    }
}

/// SplitMix64: small, fast, and the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (0 when n is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    /// A number in `lo..=hi`, small ones more likely (log-uniform).
    fn size(&mut self, lo: usize, hi: usize) -> usize {
        let bits = usize::BITS - hi.max(1).leading_zeros();
        let cap = 1usize << self.below(bits as usize + 1);
        (lo + self.below(cap)).min(hi)
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn corpus_dir() -> PathBuf {
    match std::env::var_os("TICKETD_CORPUS") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"),
    }
}

/// Every regular file below `dir`, sorted (so seeds have stable numbers).
fn files(dir: &Path) -> Vec<PathBuf> {
    fn go(d: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                go(&p, out);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    go(dir, &mut out);
    out.sort();
    out
}

/// The seeds: corpus mails (read in place), fixtures, examples and small
/// hostile mails.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let corpus = corpus_dir();
    if corpus.join("MANIFEST.tsv").is_file() {
        for p in files(&corpus) {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name == "MANIFEST.tsv" || name.ends_with(".md") {
                continue;
            }
            if let Ok(raw) = std::fs::read(&p) {
                out.push((format!("corpus:{}", p.display()), raw));
            }
        }
    } else {
        println!(
            "fuzz: corpus seeds SKIPPED: {} not found (set TICKETD_CORPUS); fuzzing the project's own fixtures only",
            corpus.display()
        );
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["tests/fixtures", "examples/mail"] {
        for p in files(&root.join(dir)) {
            if p.extension().is_some_and(|e| e == "eml") {
                if let Ok(raw) = std::fs::read(&p) {
                    out.push((format!("fixture:{}", p.display()), raw));
                }
            }
        }
    }
    for (name, raw) in hostile::all(20_000) {
        out.push((format!("hostile:{name}"), raw));
    }
    out
}

/// Where the header of a mail ends (the blank line), or its length.
fn header_end(raw: &[u8]) -> usize {
    let crlf = raw.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = raw.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(raw.len()),
    }
}

/// Positions where lines start, below `end`.
fn line_starts(raw: &[u8], end: usize) -> Vec<usize> {
    let mut v = vec![0];
    v.extend(
        raw[..end.min(raw.len())]
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .map(|(i, _)| i + 1),
    );
    v
}

/// Replaces every occurrence of `from` by `to`.
fn replace_all(raw: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.is_empty() {
        return raw.to_vec();
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    out
}

/// The value of the first `boundary=` parameter, if any.
fn boundary(raw: &[u8]) -> Option<Vec<u8>> {
    let at = raw
        .windows(9)
        .position(|w| w.eq_ignore_ascii_case(b"boundary="))?
        + 9;
    let rest = &raw[at..];
    let (start, quote) = match rest.first() {
        Some(b'"') => (1, true),
        _ => (0, false),
    };
    let len = rest[start..]
        .iter()
        .position(|&b| {
            if quote {
                b == b'"'
            } else {
                b == b';' || b.is_ascii_whitespace()
            }
        })
        .unwrap_or(rest.len() - start);
    (len > 0).then(|| rest[start..start + len].to_vec())
}

/// One mutation of `raw` (using `other` for splicing); returns its name.
fn mutate_once(rng: &mut Rng, raw: &mut Vec<u8>, other: &[u8]) -> &'static str {
    let len = raw.len();
    match rng.below(13) {
        0 => {
            for _ in 0..rng.size(1, 64) {
                if !raw.is_empty() {
                    let i = rng.below(raw.len());
                    raw[i] = rng.next() as u8;
                }
            }
            "byte flips"
        }
        1 => {
            raw.truncate(rng.below(len + 1));
            "truncation"
        }
        2 => {
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            raw.truncate(cut);
            raw.extend_from_slice(&other[from..]);
            "splice"
        }
        3 => {
            let starts = line_starts(raw, header_end(raw));
            let i = starts[rng.below(starts.len())];
            let end = raw[i..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(raw.len(), |p| i + p + 1);
            let line = raw[i..end].to_vec();
            // Bounded by the mutant size: a long line repeated 20,000
            // times would be gigabytes of the fuzzer's own making.
            let times = rng.size(1, 20_000).min(MAX_MUTANT / line.len().max(1) + 1);
            let mut rep = Vec::with_capacity(line.len() * times);
            for _ in 0..times {
                rep.extend_from_slice(&line);
            }
            raw.splice(i..i, rep);
            "header line duplicated"
        }
        4 => {
            if len == 0 {
                raw.extend_from_slice(b"From: a@b.de\r\n\r\n");
            }
            let i = rng.below(raw.len());
            let n = rng.size(1, 200).min(raw.len() - i);
            let piece = raw[i..i + n].to_vec();
            let total = rng.size(1024, MAX_MUTANT / 2);
            let mut rep = Vec::with_capacity(total + n);
            while rep.len() < total {
                rep.extend_from_slice(&piece);
            }
            raw.splice(i..i, rep);
            "huge repetition"
        }
        5 => {
            let Some(b) = boundary(raw) else {
                return "boundary breakage (none)";
            };
            let mut dashed = b"--".to_vec();
            dashed.extend_from_slice(&b);
            *raw = match rng.below(4) {
                // The closing delimiter goes.
                0 => {
                    let mut closing = dashed.clone();
                    closing.extend_from_slice(b"--");
                    replace_all(raw, &closing, b"")
                }
                // Delimiters no longer match the parameter.
                1 => replace_all(raw, &dashed, b"--XXX"),
                // Each delimiter becomes a closing one.
                2 => {
                    let mut closing = dashed.clone();
                    closing.extend_from_slice(b"--");
                    replace_all(raw, &dashed, &closing)
                }
                // The boundary becomes empty.
                _ => replace_all(raw, &b, b""),
            };
            "boundary breakage"
        }
        6 => {
            let garbage: &[&[u8]] = &[
                b"x-no-such-charset-\xff",
                b"utf-7",
                b"\"\"",
                b"iso-2022-jp",
                b"utf-16le",
                b"gb18030",
                b"=?=?",
            ];
            let pick = garbage[rng.below(garbage.len())];
            let mut with = b"charset=".to_vec();
            with.extend_from_slice(pick);
            if raw.windows(8).any(|w| w.eq_ignore_ascii_case(b"charset=")) {
                *raw = replace_all(raw, b"charset=", &with);
            }
            // Encoded words with bad charsets and bytes, and raw high bytes.
            let h = header_end(raw).min(raw.len());
            let mut words =
                b"Subject: =?x-unknown?Q?=FF=FE?= =?utf-8?B?////?= =?iso-8859-1?q?caf=E9?="
                    .to_vec();
            for _ in 0..rng.size(1, 64) {
                words.push(0x80 | rng.next() as u8);
            }
            words.extend_from_slice(b"\r\n");
            raw.splice(
                h.min(raw.len())..h.min(raw.len()),
                [b"\r\n".as_slice(), &words].concat(),
            );
            "charset garbage"
        }
        7 => {
            let depth = rng.size(1, 300);
            let inner = std::mem::take(raw);
            let rfc822 = rng.chance(50);
            let mut out = Vec::new();
            for d in 0..depth {
                out.extend_from_slice(
                    format!(
                        "From: n{d}@kunde.example\r\nSubject: Ebene {d}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"N{d}\"\r\n\r\n--N{d}\r\nContent-Type: {}\r\n\r\n",
                        if rfc822 { "message/rfc822" } else { "text/plain" }
                    )
                    .as_bytes(),
                );
                if !rfc822 {
                    // multipart inside multipart: the next level is a part.
                    out.extend_from_slice(format!("Ebene {d}\r\n--N{d}\r\n").as_bytes());
                }
            }
            out.extend_from_slice(&inner);
            for d in (0..depth).rev() {
                out.extend_from_slice(format!("\r\n--N{d}--\r\n").as_bytes());
            }
            *raw = out;
            "MIME nesting"
        }
        8 => {
            let tags: &[(&str, &str)] = &[
                ("<div>", "</div>"),
                ("<table><tr><td>", "</td></tr></table>"),
                ("<b><i><font>", ""),
                ("<p><b id=x>", "</p>"),
                ("<blockquote>", "</blockquote>"),
                ("<ul><li>", ""),
                ("<svg><g>", "</g></svg>"),
                ("<a href=\"", "\">"),
                ("<!--", ""),
                ("<script>", ""),
            ];
            let (open, close) = tags[rng.below(tags.len())];
            let n = rng.size(1, 100_000);
            let h = header_end(raw).min(raw.len());
            let body = format!(
                "\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{}x{}",
                open.repeat(n),
                close.repeat(n)
            );
            raw.truncate(h);
            raw.extend_from_slice(body.as_bytes());
            "HTML nesting"
        }
        9 => {
            *raw = match rng.below(3) {
                0 => replace_all(raw, b"\r\n", b"\n"),
                1 => replace_all(raw, b"\n", b"\r"),
                _ => replace_all(raw, b"\r\n", b"\n\r"),
            };
            "line ends"
        }
        10 => {
            let name = ["To", "Cc", "From", "Reply-To", "References", "In-Reply-To"][rng.below(6)];
            let n = rng.size(1, 60_000);
            let value = if name.starts_with("Re") || name.starts_with("In") {
                (0..n)
                    .map(|i| format!("<r{i}@x.example>"))
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                hostile::address_list(n)
            };
            let line = format!("{name}: {value}\r\n");
            raw.splice(0..0, line.into_bytes());
            "exploded header"
        }
        11 => {
            // A long header line without any break.
            let n = rng.size(1, MAX_MUTANT / 2);
            let mut line = b"X-Long: ".to_vec();
            line.extend(std::iter::repeat_n(b'a' + rng.below(26) as u8, n));
            line.extend_from_slice(b"\r\n");
            raw.splice(0..0, line);
            "long header line"
        }
        _ => {
            // Delete a random range.
            let a = rng.below(len + 1);
            let b = (a + rng.size(1, 4096)).min(len);
            raw.drain(a..b);
            "deletion"
        }
    }
}

/// A mutant of one seed: one to three mutations.
fn mutant(rng: &mut Rng, seeds: &[(String, Vec<u8>)]) -> (String, Vec<u8>) {
    let (name, raw) = &seeds[rng.below(seeds.len())];
    let other = &seeds[rng.below(seeds.len())].1;
    let mut raw = raw.clone();
    let mut how = Vec::new();
    for _ in 0..1 + rng.below(3) {
        how.push(mutate_once(rng, &mut raw, other));
        raw.truncate(MAX_MUTANT);
    }
    (format!("{name} ({})", how.join(", ")), raw)
}

/// What the intake holds, from the default configuration, plus a generic
/// alert rule so that path is fuzzed too.
struct Desk {
    cfg: DecideConfig,
    tag: SubjectTag,
    signer: IdSigner,
    rules: RuleSet,
    generic: Vec<GenericAlertRule>,
}

impl Desk {
    fn new() -> Desk {
        let c = Config::default();
        let generic: GenericAlertConfig = toml::from_str(
            r#"
            name = "fuzzmon"
            subject = '(?i)alert'
            host = '(?m)^Host:\s*(?P<host>\S+)'
            service = '(?m)^Service:\s*(?P<service>.+)$'
            state = '(?m)^State:\s*(?P<state>\w+)'
            "#,
        )
        .expect("generic alert rule");
        Desk {
            cfg: DecideConfig {
                own_addresses: c
                    .desk
                    .addresses
                    .iter()
                    .map(|a| a.trim().to_ascii_lowercase())
                    .collect(),
                freemail_domains: c
                    .intake
                    .freemail_domains
                    .iter()
                    .map(|d| d.to_ascii_lowercase())
                    .collect(),
                confirm: c.autoreply.confirm,
                max_auto_per_hour: c.autoreply.max_per_recipient_per_hour,
                default_severity: Severity::try_from(c.tickets.default_severity)
                    .unwrap_or(Severity::Malfunction),
                tag: SubjectTag::new(&c.tickets.tag, &c.tickets.number_prefix),
                unknown_senders: c.intake.unknown_senders,
                alert_severity: Default::default(),
                default_account_manager: None,
                staff: vec!["staff@example.com".into()],
            },
            tag: SubjectTag::new(&c.tickets.tag, &c.tickets.number_prefix),
            signer: IdSigner::new(MacKey(vec![0x5a; 32]), &c.desk.id_domain()),
            rules: RuleSet::embedded().expect("embedded rules compile"),
            generic: vec![GenericAlertRule::compile("fuzzmon", &generic).expect("compiles")],
        }
    }

    /// Every pure entry point on one input; an error names a broken
    /// property.
    fn check(&self, raw: &[u8]) -> Result<(), String> {
        parse_delivery_status(&String::from_utf8_lossy(raw));
        let Ok(mail) = parse(raw) else {
            return Ok(());
        };
        bounded(&mail, raw)?;
        parse_delivery_status(&mail.body);
        let verdict = guard::check(&mail, &self.cfg.own_addresses);
        let keys = lookup_keys(&mail, &self.tag, &self.signer);
        dedupe_key(Some(&mail), &mail.sha256);
        let alert = parse_alert(&mail, &self.generic);
        let facts = Facts {
            alert: alert.as_ref(),
            ..Default::default()
        };
        self.rules.classify(&mail, &facts);
        let mut classify = |m: &ParsedMail, f: &Facts<'_>| self.rules.classify(m, f);
        // As a new mail, then as a follow-up of a ticket its ids and tag
        // name (so the append, reopen and participant paths run too).
        decide(
            &mail,
            &verdict,
            &Lookups {
                alert: alert.clone(),
                ..Default::default()
            },
            &self.cfg,
            &mut classify,
        );
        let ticket = TicketInfo {
            id: 1,
            number: TicketNumber("10001".into()),
            requester: mail
                .from
                .as_ref()
                .map(|m| m.key())
                .unwrap_or_else(|| "anna@kunde.example".into()),
            participants: vec!["anna@kunde.example".into()],
            status: Status::Resolved,
            reply_to: None,
            last_inbound: None,
            thread: Vec::new(),
            language: None,
        };
        decide(
            &mail,
            &verdict,
            &Lookups {
                by_reference: Some(ticket.clone()),
                tag_number: keys.tag_number.clone(),
                by_tag: keys.tag_number.as_ref().map(|_| ticket.clone()),
                bounced_ticket: mail.bounced.as_ref().map(|_| ticket),
                ..Default::default()
            },
            &self.cfg,
            &mut classify,
        );
        Ok(())
    }
}

/// What a parsed mail keeps is bounded: the caps hold, and the copy is not
/// out of proportion to the input (memory must not explode).
fn bounded(mail: &ParsedMail, raw: &[u8]) -> Result<(), String> {
    if mail.size != raw.len() || mail.sha256 != sha256_hex(raw) {
        return Err("size or hash is not that of the input".into());
    }
    if mail.subject.chars().count() > MAX_SUBJECT_CHARS + 1 {
        return Err(format!("subject of {} chars", mail.subject.chars().count()));
    }
    if mail.to.len() > MAX_RECIPIENTS || mail.cc.len() > MAX_RECIPIENTS {
        return Err(format!("{} To, {} Cc kept", mail.to.len(), mail.cc.len()));
    }
    if mail.references.len() > MAX_REFERENCES {
        return Err(format!("{} references kept", mail.references.len()));
    }
    let kept = mail.body.len()
        + mail.subject.len()
        + mail
            .attachments
            .iter()
            .map(|a| a.content.len())
            .sum::<usize>()
        + mail
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>();
    // An HTML table drawn as text is the widest expansion (borders around
    // every cell); 16 times the input is far above anything real.
    if kept > 16 * raw.len() + (4 << 20) {
        return Err(format!("{kept} bytes kept of a {} byte message", raw.len()));
    }
    Ok(())
}

/// A store on a temporary SQLite file and the intake, as the daemon has.
struct Env {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    store: Store,
    intake: Intake,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let cfg = Config::default();
        let data = ticketd::service::DataDir::open(dir.path()).expect("data dir");
        let store = rt
            .block_on(ticketd::service::open_store(&cfg, &data, 1))
            .expect("store");
        let key = rt.block_on(MacKey::load(&store, &data.root)).expect("key");
        let intake = Intake::new(&cfg, key);
        Env {
            _dir: dir,
            rt,
            store,
            intake,
        }
    }

    /// Ingests a batch; every input must be stored (or be a duplicate of a
    /// stored one) with its raw bytes exactly.
    fn ingest(&self, batch: &[(String, Vec<u8>)]) -> Vec<String> {
        let items: Vec<Incoming> = batch
            .iter()
            .map(|(_, raw)| Incoming {
                raw: raw.clone(),
                source: "fuzz".into(),
                arrived: None,
            })
            .collect();
        let results = self.rt.block_on(self.intake.ingest_batch(
            &self.store,
            &items,
            jiff::Timestamp::now(),
        ));
        let mut failures = Vec::new();
        for ((name, raw), r) in batch.iter().zip(results) {
            let o = match r {
                Ok(o) => o,
                Err(e) => {
                    failures.push(format!("{name}: not stored: {e}"));
                    continue;
                }
            };
            if o.action == Action::Duplicate {
                // Stored before under the same Message-ID (and Date, From,
                // Subject) or the same bytes: that row keeps them.
                continue;
            }
            let kept = match self.rt.block_on(self.store.raw_by_sha256(&o.sha256)) {
                Ok(k) => k,
                Err(e) => {
                    failures.push(format!("{name}: raw bytes cannot be read: {e}"));
                    continue;
                }
            };
            match kept {
                Some(k) if &k == raw => {}
                Some(k) => failures.push(format!(
                    "{name}: raw bytes differ ({} stored, {} received)",
                    k.len(),
                    raw.len()
                )),
                None => failures.push(format!("{name}: no stored row ({})", o.action.as_str())),
            }
        }
        failures
    }
}

/// Runs [`Desk::check`] on inputs in a worker thread, so a hang becomes a
/// failure (the thread is left behind) and a panic a report.
struct Worker {
    jobs: mpsc::Sender<Vec<u8>>,
    done: mpsc::Receiver<Result<(), String>>,
}

impl Worker {
    fn start() -> Worker {
        let (jobs, rx) = mpsc::channel::<Vec<u8>>();
        let (tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("fuzz-worker".into())
            // Deeply nested input must not need a deep stack; 8 MB is what
            // the daemon's threads have.
            .stack_size(8 << 20)
            .spawn(move || {
                let desk = Desk::new();
                for raw in rx {
                    let r =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| desk.check(&raw)))
                            .unwrap_or_else(|p| {
                                Err(format!(
                                    "panic: {}",
                                    p.downcast_ref::<String>()
                                        .map(String::as_str)
                                        .or_else(|| p.downcast_ref::<&str>().copied())
                                        .unwrap_or("(no message)")
                                ))
                            });
                    if tx.send(r).is_err() {
                        break;
                    }
                }
            })
            .expect("worker thread");
        Worker { jobs, done }
    }

    /// Checks one input within `limit`.
    fn check(&self, raw: &[u8], limit: Duration) -> Result<Duration, String> {
        let t0 = Instant::now();
        self.jobs
            .send(raw.to_vec())
            .map_err(|_| "worker gone".to_string())?;
        match self.done.recv_timeout(limit) {
            Ok(Ok(())) => {
                let took = t0.elapsed();
                if took > limit {
                    Err(format!("took {took:.1?} (limit {limit:?})"))
                } else {
                    Ok(took)
                }
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no result within {limit:?} (a hang)")),
        }
    }
}

/// Writes a failing input where `TICKETD_FUZZ_REPLAY` can take it.
fn save_failure(seed: u64, round: u64, raw: &[u8]) -> String {
    let path =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-failure-{seed}-{round}.eml"));
    match std::fs::write(&path, raw) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("(not written: {e})"),
    }
}

/// How far one round may raise the peak memory of the process, in MiB:
/// the pipeline keeps a few copies of a message (raw, parsed, decoded
/// parts, the text of its HTML), never dozens.
fn memory_allowance_mib(bytes: usize) -> u64 {
    ((16 * bytes as u64) >> 20) + 128
}

/// Peak resident memory of this process, from /proc (Linux), in MiB.
fn peak_rss_mib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[test]
fn fuzz_every_parser_entry_point() {
    let s = Settings::from_env();
    let worker = Worker::start();
    let env = Env::new();
    if let Some(path) = &s.replay {
        let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let took = worker.check(&raw, s.case_limit);
        let stored = env.ingest(&[(path.display().to_string(), raw)]);
        println!(
            "fuzz replay {}: pure pipeline {took:?}, store {stored:?}",
            path.display()
        );
        assert!(took.is_ok() && stored.is_empty(), "{took:?} {stored:?}");
        return;
    }
    let seeds = seeds();
    println!(
        "fuzz: seed {} (TICKETD_FUZZ_SEED={} to repeat), {} seed mails, {} s{}",
        s.seed,
        s.seed,
        seeds.len(),
        s.secs,
        s.iters
            .map(|n| format!(", at most {n} rounds"))
            .unwrap_or_default()
    );
    let started = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    // Every seed as it is, first: through the pure stages and the store.
    for chunk in seeds.chunks(BATCH) {
        for (name, raw) in chunk {
            let peak_before = peak_rss_mib().unwrap_or(0);
            if let Err(e) = worker.check(raw, s.case_limit) {
                failures.push(format!("seed {name}: {e}"));
            }
            let rise = peak_rss_mib().unwrap_or(0).saturating_sub(peak_before);
            if rise > memory_allowance_mib(raw.len()) {
                failures.push(format!(
                    "seed {name}: peak memory rose by {rise} MiB for {} bytes",
                    raw.len()
                ));
            }
        }
        let peak_before = peak_rss_mib().unwrap_or(0);
        failures.extend(env.ingest(chunk));
        let rise = peak_rss_mib().unwrap_or(0).saturating_sub(peak_before);
        let bytes: usize = chunk.iter().map(|(_, r)| r.len()).sum();
        if rise > memory_allowance_mib(bytes) {
            failures.push(format!(
                "store batch of seeds from {}: peak memory rose by {rise} MiB for {bytes} bytes",
                chunk[0].0
            ));
        }
    }
    println!(
        "fuzz: seeds done in {:.1?}, peak RSS {} MiB",
        started.elapsed(),
        peak_rss_mib().map_or("?".into(), |p| p.to_string())
    );
    let mut rng = Rng(s.seed);
    let deadline = started + Duration::from_secs(s.secs);
    let (mut round, mut stored, mut slowest) = (0u64, 0usize, Duration::ZERO);
    let mut slowest_name = String::new();
    let mut pending: Vec<(String, Vec<u8>)> = Vec::new();
    while Instant::now() < deadline && s.iters.is_none_or(|n| round < n) && failures.len() < 5 {
        let (name, raw) = mutant(&mut rng, &seeds);
        let peak_before = peak_rss_mib().unwrap_or(0);
        match worker.check(&raw, s.case_limit) {
            Ok(took) => {
                if took > slowest {
                    slowest = took;
                    slowest_name = format!("{name}, {} bytes", raw.len());
                }
                // The peak rises only when a round needs more than any
                // before it: a rise far beyond the mail's size is a copy
                // too many (or a blow-up).
                let rise = peak_rss_mib().unwrap_or(0).saturating_sub(peak_before);
                if rise > memory_allowance_mib(raw.len()) {
                    let file = save_failure(s.seed, round, &raw);
                    failures.push(format!(
                        "round {round} (TICKETD_FUZZ_SEED={}), {name}: peak memory rose by {rise} MiB for {} bytes; input in {file}",
                        s.seed,
                        raw.len()
                    ));
                }
            }
            Err(e) => {
                let file = save_failure(s.seed, round, &raw);
                failures.push(format!(
                    "round {round} (TICKETD_FUZZ_SEED={}), {name}: {e}; input in {file}",
                    s.seed
                ));
                if e.contains("a hang") {
                    // The worker is stuck on it: no later round can run.
                    break;
                }
            }
        }
        if round % 10 == 0 {
            pending.push((format!("round {round}, {name}"), raw));
            if pending.len() == BATCH {
                stored += pending.len();
                let peak_before = peak_rss_mib().unwrap_or(0);
                failures.extend(env.ingest(&pending));
                let rise = peak_rss_mib().unwrap_or(0).saturating_sub(peak_before);
                let bytes: usize = pending.iter().map(|(_, r)| r.len()).sum();
                if rise > memory_allowance_mib(bytes) {
                    failures.push(format!(
                        "store batch up to round {round}: peak memory rose by {rise} MiB for {bytes} bytes"
                    ));
                }
                pending.clear();
            }
        }
        round += 1;
    }
    stored += pending.len();
    failures.extend(env.ingest(&pending));
    let peak = peak_rss_mib();
    println!(
        "fuzz: {round} mutants in {:.1?} ({stored} of them and {} seeds stored), slowest {slowest:.1?} ({slowest_name}), peak RSS {} MiB",
        started.elapsed(),
        seeds.len(),
        peak.map_or("?".into(), |p| p.to_string())
    );
    // Inputs are at most 2 MB: a pipeline that keeps copies in proportion
    // stays far below this.
    if let Some(p) = peak.filter(|&p| p > 2048) {
        failures.push(format!("peak RSS {p} MiB"));
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}
