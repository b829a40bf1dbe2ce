//! The MTA path benchmark and the result checks of `scripts/bench.sh`.
//!
//! ```text
//! mta_bench run    TICKETD DATA_DIR WORKLOAD_DIR COUNT [--hold-db]
//! mta_bench verify TICKETD DATA_DIR WORKLOAD_DIR RESULTS.jsonl
//! ```
//!
//! `run` delivers the first COUNT mails of a workload (written by
//! `gen_workload`) the way an MTA pipe does: one `TICKETD --data-dir DATA_DIR
//! ingest` process per mail, the message on stdin, strictly one after the
//! other. Each delivery is timed from spawn to exit; it prints mails/s and
//! p50/p90/p99/max, for all mails and for new mails and replies apart, and
//! the floor of a bare process start (`TICKETD --version`).
//!
//! With `--hold-db` the benchmark keeps a connection to the database open
//! meanwhile, as `ticketd run` (the outbox worker) does in production: then
//! no `ingest` process is the last one to close the database, so none pays
//! SQLite's checkpoint-on-close and the re-creation of the WAL file.
//!
//! Both modes then check the results against the workload's manifest: every
//! new mail `created` with a ticket of its own, every reply `appended` to
//! the ticket of the mail it answers, `tickets list --json` has one ticket
//! per new mail and `outbox list --json` one queued confirmation per new
//! mail. Any failed check exits 1.

#[path = "../benches/workload.rs"]
mod workload;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

type Outcome = (String, Option<String>, Option<String>);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") if args.len() == 5 || (args.len() == 6 && args[5] == "--hold-db") => {
            match args[4].parse::<usize>() {
                Ok(n) => run(
                    Path::new(&args[1]),
                    Path::new(&args[2]),
                    Path::new(&args[3]),
                    n,
                    args.len() == 6,
                ),
                Err(_) => Err(format!("COUNT must be a number, not {:?}", args[4])),
            }
        }
        Some("verify") if args.len() == 5 => verify_file(
            Path::new(&args[1]),
            Path::new(&args[2]),
            Path::new(&args[3]),
            Path::new(&args[4]),
        ),
        _ => {
            eprintln!(
                "usage: mta_bench run TICKETD DATA_DIR WORKLOAD_DIR COUNT [--hold-db]\n       mta_bench verify TICKETD DATA_DIR WORKLOAD_DIR RESULTS.jsonl"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mta_bench: {e}");
            ExitCode::from(1)
        }
    }
}

/// Percentile of sorted durations (nearest rank).
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn stats_line(label: &str, times: &[Duration]) -> String {
    let mut s = times.to_vec();
    s.sort();
    let total: Duration = s.iter().sum();
    format!(
        "{label:<10} {:>6} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        s.len(),
        if total.is_zero() {
            0.0
        } else {
            s.len() as f64 / total.as_secs_f64()
        },
        ms(total) / s.len().max(1) as f64,
        ms(pct(&s, 50.0)),
        ms(pct(&s, 90.0)),
        ms(pct(&s, 99.0)),
        ms(*s.last().unwrap_or(&Duration::ZERO)),
    )
}

/// Opens the data directory's database and keeps one connection open.
fn hold_db(data: &Path) -> Result<(tokio::runtime::Runtime, ticketd::store::Store), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let db = ticketd::service::DataDir::open(data)
        .map_err(|e| format!("{}: {e}", data.display()))?
        .database();
    let store = rt
        .block_on(async {
            let store = ticketd::store::Store::open_sqlite(&db, 1).await?;
            store.migrate().await?;
            Ok::<_, ticketd::store::StoreError>(store)
        })
        .map_err(|e| format!("{}: {e}", db.display()))?;
    Ok((rt, store))
}

fn run(bin: &Path, data: &Path, dir: &Path, count: usize, hold: bool) -> Result<(), String> {
    let entries = workload::read_manifest(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let entries = &entries[..count.min(entries.len())];
    let _held = if hold { Some(hold_db(data)?) } else { None };

    // The floor: what a process start costs without any work.
    let mut floor = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let st = Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        floor.push(t.elapsed());
        if !st.success() {
            return Err(format!("{} --version failed", bin.display()));
        }
    }

    let mut outcomes: Vec<Outcome> = Vec::with_capacity(entries.len());
    let mut all = Vec::with_capacity(entries.len());
    let mut new = Vec::new();
    let mut replies = Vec::new();
    let started = Instant::now();
    for e in entries {
        let path: PathBuf = dir.join(&e.file);
        let file =
            std::fs::File::open(&path).map_err(|err| format!("{}: {err}", path.display()))?;
        let t = Instant::now();
        let out = Command::new(bin)
            .arg("--data-dir")
            .arg(data)
            .arg("ingest")
            .stdin(Stdio::from(file))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|err| format!("cannot start {}: {err}", bin.display()))?;
        let dt = t.elapsed();
        if !out.status.success() {
            return Err(format!(
                "{}: ingest exited with {}: {}",
                e.file,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().next().unwrap_or("");
        let o = workload::parse_outcome(line)
            .ok_or_else(|| format!("{}: unexpected output {line:?}", e.file))?;
        outcomes.push(o);
        all.push(dt);
        if e.original.is_some() {
            replies.push(dt);
        } else {
            new.push(dt);
        }
    }
    let wall = started.elapsed();

    println!(
        "MTA path{}: {} sequential `ticketd ingest < file` processes in {:.2} s = {:.1} mails/s",
        if hold { " (database held open)" } else { "" },
        entries.len(),
        wall.as_secs_f64(),
        entries.len() as f64 / wall.as_secs_f64()
    );
    println!(
        "{:<10} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "per mail", "n", "mails/s", "mean ms", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    println!("{}", stats_line("all", &all));
    println!("{}", stats_line("new", &new));
    println!("{}", stats_line("replies", &replies));
    println!("{}", stats_line("--version", &floor));
    let mut sorted = all.clone();
    sorted.sort();
    println!(
        "MTA_RESULT{} mails_per_s={:.1} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        if hold { "_HELD" } else { "" },
        entries.len() as f64 / wall.as_secs_f64(),
        ms(pct(&sorted, 50.0)),
        ms(pct(&sorted, 99.0)),
        ms(*sorted.last().unwrap_or(&Duration::ZERO))
    );
    check(bin, data, entries, &outcomes)
}

fn verify_file(bin: &Path, data: &Path, dir: &Path, results: &Path) -> Result<(), String> {
    let entries = workload::read_manifest(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let text =
        std::fs::read_to_string(results).map_err(|e| format!("{}: {e}", results.display()))?;
    let mut outcomes = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        outcomes.push(
            workload::parse_outcome(line)
                .ok_or_else(|| format!("{}:{}: not an ingest result", results.display(), n + 1))?,
        );
    }
    check(bin, data, &entries, &outcomes)
}

/// Length of the JSON array a `--json` listing prints.
fn listed(bin: &Path, data: &Path, what: &str) -> Result<usize, String> {
    let out = Command::new(bin)
        .arg("--data-dir")
        .arg(data)
        .args([what, "list", "--json"])
        .output()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{what} list failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{what} list --json: not JSON: {e}"))?;
    v.as_array()
        .map(Vec::len)
        .ok_or_else(|| format!("{what} list --json: not an array"))
}

fn check(
    bin: &Path,
    data: &Path,
    entries: &[workload::Entry],
    outcomes: &[Outcome],
) -> Result<(), String> {
    let mut problems = workload::verify(entries, outcomes);
    let n_new = entries.iter().filter(|e| e.original.is_none()).count();
    let n_rep = entries.len() - n_new;
    let appended = outcomes.iter().filter(|o| o.0 == "appended").count();
    let tickets = listed(bin, data, "tickets")?;
    let outbox = listed(bin, data, "outbox")?;
    if tickets != n_new {
        problems.push(format!(
            "tickets list: {tickets} tickets, expected {n_new} (one per new mail)"
        ));
    }
    if outbox != n_new {
        problems.push(format!(
            "outbox list: {outbox} mails, expected {n_new} confirmations"
        ));
    }
    println!(
        "check: {} results; {n_new} new mails -> {tickets} tickets, {outbox} confirmations queued; {n_rep} replies, {appended} appended to the ticket of their original",
        outcomes.len()
    );
    if problems.is_empty() {
        println!("check: OK");
        Ok(())
    } else {
        for p in &problems {
            println!("check: FAILED: {p}");
        }
        Err(format!("{} problems", problems.len()))
    }
}
