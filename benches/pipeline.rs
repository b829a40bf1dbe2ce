//! Benchmarks of the pure intake pipeline (no database, no I/O):
//! parse → guard → lookup keys → classify → decide, per mail.
//!
//! ```text
//! cargo bench --bench pipeline              # everything, about a minute
//! cargo bench --bench pipeline -- pipeline  # only the whole pipeline
//! cargo bench --bench pipeline -- hostile   # the hostile mails, time per mail
//! ```
//!
//! The workload (see `benches/workload.rs`) is generated in memory:
//! 2,000 new mails and 500 replies. New mails are decided with empty
//! `Lookups` (so they open tickets and run the rules); replies get the
//! `Lookups` a store would return for them — the ticket their
//! In-Reply-To/References names, found by the customer's own Message-ID —
//! and the setup checks that each one is appended to exactly that ticket.
//! Throughput is reported in mails (criterion `Throughput::Elements`); the
//! issue's target is ≥ 20,000 mails/s on one core for the whole pipeline.
//!
//! The `hostile` group runs single mails built to cost time rather than
//! break anything (`tests/support/hostile.rs`: HTML nested or unclosed
//! thousands of levels deep, 100,000 Cc addresses, thousands of References,
//! Received lines or MIME parts), each about `TICKETD_HOSTILE_BYTES` bytes
//! (default 2 MB). Before measuring, it prints the time of each stage for
//! each mail once, so a slow mail shows where its time goes; with
//! `TICKETD_HOSTILE_ONCE=1` it prints only that (for code on which one mail
//! takes minutes). The target is ≤ 1 s per mail for the whole pipeline.

mod workload;

#[path = "../tests/support/hostile.rs"]
mod hostile;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Once;
use std::time::Duration;
use std::time::Instant;
use ticketd::config::Config;
use ticketd::domain::{Action, Severity, Status, TicketNumber};
use ticketd::ingest::alerts::parse_alert;
use ticketd::ingest::classify::{Facts, RuleSet};
use ticketd::ingest::decide::{decide, DecideConfig, Decision, Lookups, Target, TicketInfo};
use ticketd::ingest::parse::{parse, ParsedMail};
use ticketd::ingest::thread::{IdSigner, SubjectTag};
use ticketd::ingest::{guard, lookup_keys};
use ticketd::keys::MacKey;

const NEW: usize = 2_000;
const REPLIES: usize = 500;

/// What `Intake` holds, built the same way from the default configuration.
struct Desk {
    cfg: DecideConfig,
    tag: SubjectTag,
    signer: IdSigner,
    rules: RuleSet,
}

impl Desk {
    fn new() -> Desk {
        let c = Config::default();
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
                staff: Vec::new(),
            },
            tag: SubjectTag::new(&c.tickets.tag, &c.tickets.number_prefix),
            signer: IdSigner::new(MacKey(vec![0x5a; 32]), &c.desk.id_domain()),
            rules: RuleSet::embedded().expect("embedded rules compile"),
        }
    }

    /// The whole pure pipeline for one raw mail.
    fn run(&self, raw: &[u8], look: &Lookups) -> Decision {
        let mail = parse(raw).expect("workload mails parse");
        let verdict = guard::check(&mail, &self.cfg.own_addresses);
        let keys = lookup_keys(&mail, &self.tag, &self.signer);
        black_box(&keys);
        let mut classify = |m: &ParsedMail, f: &Facts<'_>| self.rules.classify(m, f);
        decide(&mail, &verdict, look, &self.cfg, &mut classify)
    }

    /// [`Desk::run`] once, stage by stage, with what each stage took; the
    /// alert parser runs too (the intake asks it before deciding).
    fn stage_times(&self, raw: &[u8]) -> String {
        let mut out = Vec::new();
        let mut lap = {
            let mut t = Instant::now();
            move |name: &str, out: &mut Vec<String>| {
                out.push(format!("{name} {:.1?}", t.elapsed()));
                t = Instant::now();
            }
        };
        let mail = match parse(raw) {
            Ok(m) => m,
            Err(e) => return format!("parse failed: {e}"),
        };
        lap("parse", &mut out);
        let verdict = guard::check(&mail, &self.cfg.own_addresses);
        lap("guard", &mut out);
        black_box(lookup_keys(&mail, &self.tag, &self.signer));
        lap("thread", &mut out);
        black_box(parse_alert(&mail, &[]));
        lap("alerts", &mut out);
        black_box(self.rules.classify(&mail, &Facts::default()));
        lap("classify", &mut out);
        let mut classify = |m: &ParsedMail, f: &Facts<'_>| self.rules.classify(m, f);
        let d = decide(
            &mail,
            &verdict,
            &Lookups::default(),
            &self.cfg,
            &mut classify,
        );
        lap("decide", &mut out);
        format!(
            "{} -> {} ({} body chars)",
            out.join(", "),
            d.action.as_str(),
            mail.body.chars().count()
        )
    }
}

/// The workload with the lookups a store would give each mail, checked:
/// every new mail creates a ticket, every reply is appended to the ticket of
/// the mail it answers, found only through its In-Reply-To/References.
fn prepare(desk: &Desk) -> (Vec<workload::Mail>, Vec<Lookups>) {
    let mails = workload::generate(NEW, REPLIES);
    // A stand-in for the store's thread_ids table: customer Message-ID → ticket.
    let mut by_message_id: HashMap<String, TicketInfo> = HashMap::new();
    let mut looks = Vec::with_capacity(mails.len());
    let mut next = 10_000;
    for (i, m) in mails.iter().enumerate() {
        let parsed = parse(&m.raw).expect("workload mails parse");
        let keys = lookup_keys(&parsed, &desk.tag, &desk.signer);
        let look = Lookups {
            by_reference: keys
                .thread_ids
                .iter()
                .find_map(|id| by_message_id.get(id.as_str()).cloned()),
            tag_number: keys.tag_number.clone(),
            ..Default::default()
        };
        let d = desk.run(&m.raw, &look);
        match (m.reply_to, &d.target) {
            (None, Target::New(t)) => {
                assert_eq!(d.action, Action::Created, "mail {i}: {}", d.reason);
                next += 1;
                let info = TicketInfo {
                    id: next,
                    number: TicketNumber(next.to_string()),
                    requester: t.requester.key(),
                    participants: t.participants.clone(),
                    status: Status::New,
                    reply_to: None,
                    last_inbound: None,
                    thread: Vec::new(),
                    language: None,
                };
                by_message_id.insert(m.message_id.clone(), info);
            }
            (Some(orig), Target::Existing { ticket, .. }) => {
                assert_eq!(d.action, Action::Appended, "mail {i}: {}", d.reason);
                let want = &by_message_id[&mails[orig].message_id].number;
                assert_eq!(&ticket.number, want, "reply {i} on the wrong ticket");
            }
            (kind, target) => panic!("mail {i} (reply to {kind:?}) decided {target:?}"),
        }
        looks.push(look);
    }
    (mails, looks)
}

fn benches(c: &mut Criterion) {
    let desk = Desk::new();
    // First: they need no workload.
    hostile_mails(c, &desk);
    let (mails, looks) = prepare(&desk);
    let bytes: usize = mails.iter().map(|m| m.raw.len()).sum();
    eprintln!(
        "workload: {} mails ({NEW} new, {REPLIES} replies), {:.1} MB, avg {} bytes",
        mails.len(),
        bytes as f64 / 1e6,
        bytes / mails.len()
    );
    let subset = |replies: Option<bool>| -> Vec<(&[u8], &Lookups)> {
        mails
            .iter()
            .zip(&looks)
            .filter(|(m, _)| replies.is_none_or(|r| m.is_reply() == r))
            .map(|(m, l)| (m.raw.as_slice(), l))
            .collect()
    };

    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (name, set) in [
        ("mixed", subset(None)),
        ("new", subset(Some(false))),
        ("replies", subset(Some(true))),
    ] {
        g.throughput(Throughput::Elements(set.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                for (raw, look) in &set {
                    black_box(desk.run(black_box(raw), look));
                }
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("stages");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(mails.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| {
            for m in &mails {
                black_box(parse(black_box(&m.raw)).ok());
            }
        })
    });
    let parsed: Vec<ParsedMail> = mails
        .iter()
        .filter(|m| !m.is_reply())
        .map(|m| parse(&m.raw).expect("workload mails parse"))
        .collect();
    g.throughput(Throughput::Elements(parsed.len() as u64));
    g.bench_function("classify", |b| {
        b.iter(|| {
            for p in &parsed {
                black_box(desk.rules.classify(black_box(p), &Facts::default()));
            }
        })
    });
    // The language of a new ticket's customer mails, when neither the
    // directory nor the mailbox names one: detected from its own text.
    g.bench_function("language", |b| {
        b.iter(|| {
            for p in &parsed {
                black_box(ticketd::ingest::language::detect(black_box(p)));
            }
        })
    });
    g.finish();

    // What every `ticketd ingest` process that opens a ticket pays once.
    let mut g = c.benchmark_group("startup");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("rules_compile", |b| {
        b.iter(|| black_box(RuleSet::embedded().expect("embedded rules compile")))
    });
    g.finish();
}

/// Single hostile mails through the whole pure pipeline (see the module
/// documentation); criterion reports the time per mail.
fn hostile_mails(c: &mut Criterion, desk: &Desk) {
    let size = std::env::var("TICKETD_HOSTILE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let mails = hostile::all(size);
    if std::env::var_os("TICKETD_HOSTILE_ONCE").is_some() {
        // Each mail once, stage by stage, and no measurement: for code on
        // which one mail takes minutes.
        for (name, raw) in &mails {
            eprintln!(
                "hostile/{name}: {} bytes: {}",
                raw.len(),
                desk.stage_times(raw)
            );
        }
        std::process::exit(0);
    }
    let mut g = c.benchmark_group("hostile");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, raw) in &mails {
        let once = Once::new();
        g.bench_function(*name, |b| {
            once.call_once(|| {
                eprintln!(
                    "hostile/{name}: {} bytes: {}",
                    raw.len(),
                    desk.stage_times(raw)
                )
            });
            b.iter(|| black_box(desk.run(black_box(raw), &Lookups::default())))
        });
    }
    g.finish();
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
