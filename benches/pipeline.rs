//! Benchmarks of the pure intake pipeline (no database, no I/O):
//! parse → guard → lookup keys → classify → decide, per mail.
//!
//! ```text
//! cargo bench --bench pipeline              # everything, about a minute
//! cargo bench --bench pipeline -- pipeline  # only the whole pipeline
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

mod workload;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;
use ticketd::config::Config;
use ticketd::domain::{Action, Severity, Status, TicketNumber};
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

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
