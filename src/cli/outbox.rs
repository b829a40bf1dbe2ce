//! `ticketd outbox list|retry|cancel`: the outgoing mail.

use super::output::{cut, desk_tz, local, print_json};
use super::{author_of, open};
use crate::cli::args::OutboxCmd;
use anyhow::anyhow;
use std::path::Path;
use std::process::ExitCode;
use ticketd::config::Config;

/// `ticketd outbox …`.
pub async fn outbox(cfg: &Config, data_dir: &Path, cmd: OutboxCmd) -> anyhow::Result<ExitCode> {
    let (_, store) = open(cfg, data_dir, 1).await?;
    let now = jiff::Timestamp::now();
    match cmd {
        OutboxCmd::List { json } => {
            let list = store.list_outbox().await?;
            if json {
                print_json(&list)?;
            } else {
                print_outbox(&desk_tz(cfg), &list);
            }
        }
        OutboxCmd::Retry { id, all, author } => {
            use ticketd::store::admin::RetryWhich;
            let which = match (id, all) {
                (Some(id), false) => RetryWhich::One(id),
                (None, true) => RetryWhich::All,
                _ => return Err(anyhow!("give one outbox id or --all")),
            };
            let ids = store.outbox_retry(which, &author_of(author), now).await?;
            if ids.is_empty() {
                println!("nothing to retry: no failed or waiting mail");
            } else {
                let list: Vec<String> = ids.iter().map(i64::to_string).collect();
                println!(
                    "due now: {} (a running `ticketd run` sends {} within its poll interval)",
                    list.join(", "),
                    if ids.len() == 1 { "it" } else { "them" }
                );
            }
        }
        OutboxCmd::Cancel { id, author } => {
            store.outbox_cancel(id, &author_of(author), now).await?;
            println!("outbox row {id} cancelled: it is never sent");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `outbox list` as a table: when each mail was queued, the next attempt
/// of a queued one, the last error of one not sent, times in the desk's
/// time zone.
fn print_outbox(tz: &jiff::tz::TimeZone, list: &[ticketd::store::OutboxView]) {
    println!(
        "{:>6} {:<10} {:<9} {:>3} {:<23} {:<23} {:<28} SUBJECT",
        "ID", "TICKET", "STATUS", "TRY", "QUEUED", "NEXT ATTEMPT", "TO"
    );
    for o in list {
        println!(
            "{:>6} {:<10} {:<9} {:>3} {:<23} {:<23} {:<28} {}",
            o.id,
            o.ticket.as_deref().unwrap_or("-"),
            o.status,
            o.attempts,
            local(tz, &o.created_at),
            o.next_attempt_at
                .as_deref()
                .map(|t| local(tz, t))
                .unwrap_or_else(|| "-".into()),
            cut(&o.to.join(","), 28),
            o.subject
        );
        if let Some(e) = o.last_error.as_deref().filter(|_| o.status != "sent") {
            println!("{:>6} {e}", "");
        }
    }
}
