//! `ticketd quarantine list|show|release`: messages that could not be
//! parsed, kept raw with the reason.

use super::output::{desk_tz, local, print_json, write_bytes};
use super::{author_of, intake, open};
use crate::cli::args::QuarantineCmd;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use ticketd::config::Config;

/// `ticketd quarantine …`.
pub async fn quarantine(
    cfg: &Config,
    data_dir: &Path,
    cmd: QuarantineCmd,
) -> anyhow::Result<ExitCode> {
    let (data, store) = open(cfg, data_dir, 1).await?;
    let tz = desk_tz(cfg);
    match cmd {
        QuarantineCmd::List { json } => {
            let list = store.list_quarantine().await?;
            if json {
                print_json(&list)?;
            } else {
                println!(
                    "{:>6}  {:<23}  {:>10}  {:<24}  REASON",
                    "ID", "RECEIVED", "BYTES", "SOURCE"
                );
                for q in list {
                    println!(
                        "{:>6}  {:<23}  {:>10}  {:<24}  {}",
                        q.id,
                        local(&tz, &q.received_at),
                        q.size,
                        q.source,
                        q.reason.unwrap_or_default()
                    );
                }
            }
        }
        QuarantineCmd::Show { id, raw } => {
            let (q, bytes, _) = store.quarantined(id).await?;
            if raw {
                write_bytes(&bytes, None, false, &format!("message {id}"))?;
            } else {
                println!("Message:   {}", q.id);
                println!("Received:  {}", local(&tz, &q.received_at));
                println!("Source:    {}", q.source);
                println!("Size:      {} bytes, SHA-256 {}", q.size, q.sha256);
                println!("Reason:    {}", q.reason.as_deref().unwrap_or("-"));
                println!();
                print!("{}", header_part(&bytes));
            }
        }
        QuarantineCmd::Release { id, author } => {
            let intake = intake(cfg, &data, &store).await?;
            // An IMAP or Graph mailbox's message is released with
            // that mailbox's defaults, as it came in.
            let defaults_of = |source: &str| {
                use ticketd::service::{mailbox_of, SourceDefaults};
                let imap = cfg
                    .imap
                    .iter()
                    .filter(|_| source.starts_with("imap:"))
                    .find(|m| m.label() == mailbox_of(source))
                    .map(|m| SourceDefaults::from(&m.defaults));
                let graph = || {
                    cfg.graph
                        .iter()
                        .filter(|_| source.starts_with("graph:"))
                        .find(|g| g.label() == mailbox_of(source))
                        .map(|g| SourceDefaults::from(&g.defaults))
                };
                imap.or_else(graph).unwrap_or_default()
            };
            let o = intake
                .release(
                    &store,
                    id,
                    &author_of(author),
                    jiff::Timestamp::now(),
                    defaults_of,
                )
                .await?;
            let mut out = std::io::stdout().lock();
            serde_json::to_writer(&mut out, &o)?;
            writeln!(out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The header of a raw message: everything before the first empty line
/// (all of it when there is none), as text.
fn header_part(raw: &[u8]) -> String {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2)
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| i + 1))
        .unwrap_or(raw.len());
    // For a terminal: at most 64 KiB, control characters shown as U+FFFD
    // (`--raw` gives the bytes).
    const SHOWN: usize = 64 * 1024;
    let mut text: String = String::from_utf8_lossy(&raw[..end.min(SHOWN)])
        .chars()
        .filter(|c| *c != '\r')
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    if end > SHOWN {
        text.push_str("[… header cut at 64 KiB; --raw for all of it]\n");
    }
    text
}
