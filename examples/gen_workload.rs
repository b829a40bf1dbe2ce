//! Writes the benchmark workload as files.
//!
//! ```text
//! cargo run --release --example gen_workload -- OUT_DIR NEW REPLIES [SEED]
//! ```
//!
//! OUT_DIR gets `0000001.eml`, `0000002.eml`, … (file-name order is
//! workload order: every reply comes after the mail it answers) and
//! `manifest.tsv` (file, new|reply, Message-ID, answered Message-ID), which
//! `mta_bench` and `scripts/bench.sh` use to check that every reply landed
//! on its ticket. The same arguments always give the same bytes.

#[path = "../benches/workload.rs"]
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 || args.len() > 4 {
        eprintln!("usage: gen_workload OUT_DIR NEW REPLIES [SEED]");
        return ExitCode::from(2);
    }
    let dir = PathBuf::from(&args[0]);
    let num = |s: &str, what: &str| -> Result<u64, String> {
        s.parse::<u64>()
            .map_err(|_| format!("gen_workload: {what} must be a number, not {s:?}"))
    };
    let parsed = (|| -> Result<(usize, usize, u64), String> {
        let new = num(&args[1], "NEW")? as usize;
        let replies = num(&args[2], "REPLIES")? as usize;
        let seed = match args.get(3) {
            Some(s) => num(s, "SEED")?,
            None => workload::DEFAULT_SEED,
        };
        if new == 0 && replies > 0 {
            return Err("gen_workload: replies need at least one new mail".into());
        }
        Ok((new, replies, seed))
    })();
    let (new, replies, seed) = match parsed {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mails = workload::generate_seeded(new, replies, seed);
    if let Err(e) = workload::write_dir(&dir, &mails) {
        eprintln!("gen_workload: cannot write {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    let sizes: Vec<usize> = mails.iter().map(|m| m.raw.len()).collect();
    let total: usize = sizes.iter().sum();
    let count = |f: &dyn Fn(&workload::Mail) -> bool| mails.iter().filter(|m| f(m)).count();
    eprintln!(
        "gen_workload: {} files in {} ({} new, {} replies), {:.1} MB, size min {} / avg {} / max {} bytes",
        mails.len(),
        dir.display(),
        new,
        replies,
        total as f64 / 1e6,
        sizes.iter().min().unwrap_or(&0),
        total / mails.len().max(1),
        sizes.iter().max().unwrap_or(&0),
    );
    eprintln!(
        "gen_workload: new mails: {} text/plain, {} multipart/alternative, {} multipart/mixed; {} German; {} with RFC 2047 subject",
        count(&|m| !m.is_reply() && m.shape == workload::Shape::Plain),
        count(&|m| !m.is_reply() && m.shape == workload::Shape::Alternative),
        count(&|m| !m.is_reply() && m.shape == workload::Shape::Mixed),
        count(&|m| !m.is_reply() && m.german),
        count(&|m| !m.is_reply() && m.encoded_subject),
    );
    ExitCode::SUCCESS
}
