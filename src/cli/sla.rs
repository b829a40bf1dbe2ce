//! `ticketd sla explain|status`, and the SLA section of a ticket.

use super::output::print_json;
use super::{intake, open};
use crate::cli::args::SlaCmd;
use anyhow::anyhow;
use std::path::Path;
use std::process::ExitCode;
use ticketd::config::Config;

/// `ticketd sla …`.
pub async fn sla(cfg: &Config, data_dir: &Path, cmd: SlaCmd) -> anyhow::Result<ExitCode> {
    let (data, store) = open(cfg, data_dir, 1).await?;
    let intake = intake(cfg, &data, &store).await?;
    let now = jiff::Timestamp::now();
    match cmd {
        SlaCmd::Explain { number } => {
            if store.show_ticket(&number).await?.is_none() {
                return Err(anyhow!("no ticket {number}"));
            }
            match intake.sla_view(&store, &number, now).await? {
                Some(s) => print_sla(&s, true),
                None => println!("SLA clocks are off ([sla] enabled = false)."),
            }
        }
        SlaCmd::Status { json } => {
            let st = intake.sla_status(&store, now).await?;
            if json {
                print_json(&st)?;
            } else {
                println!(
                    "open {}: running {}, paused {}, breached {}, met or no SLA {}",
                    st.open, st.running, st.paused, st.breached, st.other
                );
                for t in &st.tickets {
                    println!(
                        "{:<12} sev {} {:<8} {:<15} {:<22} {}",
                        t.number,
                        t.severity,
                        t.state,
                        t.target.as_deref().unwrap_or("-"),
                        t.due
                            .as_deref()
                            .and_then(|d| d.parse::<jiff::Timestamp>().ok())
                            .map(|d| intake.staff_time(d))
                            .unwrap_or_default(),
                        t.subject
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The SLA section of a ticket; with `explain`, how each due time came
/// about.
pub(super) fn print_sla(s: &ticketd::service::SlaView, explain: bool) {
    match &s.policy {
        Some(p) => println!("SLA:       {}  (policy {p})", s.state),
        None => println!("SLA:       none"),
    }
    if explain || s.policy.is_none() {
        println!("Policy:    {}", s.why);
    }
    for t in &s.targets {
        let label = if t.cycle > 0 {
            format!("{} #{}", t.target, t.cycle)
        } else {
            t.target.clone()
        };
        let when = match (&t.due_local, &t.ended_local) {
            (_, Some(end)) => format!("ended {end}"),
            (Some(due), None) => format!("due {due}"),
            (None, None) => format!("{} left", t.remaining),
        };
        println!(
            "  {:<16} {:>6}  {:<9} {}  (used {}, {} left)",
            label, t.amount, t.state, when, t.used, t.remaining
        );
        if explain {
            println!("      calendar: {}", t.calendar);
            for line in &t.explain {
                println!("      {line}");
            }
        }
    }
    let sent: Vec<_> = s
        .reminders
        .iter()
        .filter(|r| r.fired_at.is_some())
        .collect();
    let planned: Vec<_> = s
        .reminders
        .iter()
        .filter(|r| r.fired_at.is_none())
        .collect();
    for r in sent {
        println!(
            "  reminder {:<26} fired {}  {}",
            r.key,
            r.local.as_deref().unwrap_or(""),
            r.outcome.as_deref().unwrap_or("")
        );
    }
    for r in planned {
        println!(
            "  reminder {:<26} due   {}  to {}",
            r.key,
            r.local.as_deref().unwrap_or(&r.due_at),
            if r.audiences.is_empty() {
                "(record only)".to_string()
            } else {
                r.audiences.join(", ")
            }
        );
    }
}
