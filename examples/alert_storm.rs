//! The alert storm benchmark: 10,000 Nagios problem notifications over 50
//! host/service keys, ingested by one `ticketd ingest` process, must end as
//! exactly 50 tickets whose incidents count 200 problems each.
//!
//! ```text
//! cargo build --release --bin ticketd --example alert_storm
//! target/release/examples/alert_storm target/release/ticketd [ALERTS] [KEYS]
//! ```
//!
//! Prints the time of the ingest and `STORM_RESULT seconds=… alerts_per_s=…`;
//! exits 1 when the tickets or counts are wrong. Target (issue 4): ≤ 5 s.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

fn alert(i: usize, keys: usize) -> String {
    let k = i % keys;
    let host = format!("srv{:02}.kunde.example", k / 5);
    let service = ["Disk /", "Load", "Swap", "Backup", "HTTP"][k % 5];
    let state = if i.is_multiple_of(3) {
        "CRITICAL"
    } else {
        "WARNING"
    };
    format!(
        "From: nagios@monitor.example.com (Nagios)\r\nTo: support@example.com\r\n\
         Subject: ** PROBLEM Service Alert: {host}/{service} is {state} **\r\n\
         Date: Tue, 01 Dec 2026 10:00:00 +0100\r\nMessage-Id: <storm.{i}@monitor.example.com>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
         ***** Nagios *****\r\n\r\nNotification Type: PROBLEM\r\n\r\nService: {service}\r\nHost: {host}\r\n\
         Address: 192.0.2.{}\r\nState: {state}\r\n\r\nDate/Time: Tue Dec 1 10:00:00 CET 2026\r\n\r\n\
         Additional Info:\r\n\r\n{service} {state} - check {i}\r\n",
        k % 250
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(bin) = args.first() else {
        eprintln!("usage: alert_storm TICKETD [ALERTS] [KEYS]");
        return ExitCode::from(2);
    };
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let keys: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(50);
    match run(Path::new(bin), n, keys) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alert_storm: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(bin: &Path, n: usize, keys: usize) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mail = dir.path().join("mail");
    std::fs::create_dir(&mail).map_err(|e| e.to_string())?;
    for i in 0..n {
        std::fs::write(mail.join(format!("{i:06}.eml")), alert(i, keys))
            .map_err(|e| e.to_string())?;
    }
    let data = dir.path().join("data");
    let mut files: Vec<String> = std::fs::read_dir(&mail)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path().display().to_string()))
        .collect();
    files.sort();
    let t = Instant::now();
    let out = Command::new(bin)
        .arg("--data-dir")
        .arg(&data)
        .arg("ingest")
        .args(&files)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!("ingest exited {}", out.status));
    }
    let lines = String::from_utf8_lossy(&out.stdout);
    let created = lines.matches("\"action\":\"created\"").count();
    let appended = lines.matches("\"action\":\"appended\"").count();
    println!(
        "storm: {n} alerts over {keys} keys ingested in {secs:.2} s = {:.0} alerts/s ({created} created, {appended} counted)",
        n as f64 / secs
    );
    let list = Command::new(bin)
        .arg("--data-dir")
        .arg(&data)
        .args(["tickets", "list", "--json"])
        .output()
        .map_err(|e| e.to_string())?;
    let tickets: serde_json::Value =
        serde_json::from_slice(&list.stdout).map_err(|e| e.to_string())?;
    let tickets = tickets.as_array().cloned().unwrap_or_default();
    if tickets.len() != keys {
        return Err(format!("{} tickets for {keys} incidents", tickets.len()));
    }
    let mut total = 0i64;
    for t in &tickets {
        let number = t["number"].as_str().unwrap_or_default();
        let show = Command::new(bin)
            .arg("--data-dir")
            .arg(&data)
            .args(["tickets", "show", number, "--json"])
            .output()
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value =
            serde_json::from_slice(&show.stdout).map_err(|e| e.to_string())?;
        total += v["incident"]["occurrences"].as_i64().unwrap_or(0);
    }
    if total != n as i64 {
        return Err(format!("occurrences add up to {total}, not {n}"));
    }
    println!("check: {keys} tickets, occurrences add up to {n}: OK");
    println!(
        "STORM_RESULT seconds={secs:.2} alerts_per_s={:.0}",
        n as f64 / secs
    );
    Ok(())
}
