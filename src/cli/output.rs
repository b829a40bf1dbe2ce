//! What the commands print: JSON, table cells, times in the desk's time
//! zone, and raw bytes to a file or stdout.

use anyhow::{anyhow, Context};
use std::io::Write;
use std::path::Path;
use ticketd::config::Config;

pub(super) fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// The desk's time zone (`[desk] timezone`): every time the command
/// line prints for people is in it, with the zone named.
pub(super) fn desk_tz(cfg: &Config) -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get(&cfg.desk.timezone).unwrap_or(jiff::tz::TimeZone::UTC)
}

/// A stored instant (UTC, `2026-12-01T13:00:00.000Z`) in the desk's time
/// zone: `2026-12-01 14:00:00 CET`; text that is no instant as it is.
pub(super) fn local(tz: &jiff::tz::TimeZone, stored: &str) -> String {
    match stored.parse::<jiff::Timestamp>() {
        Ok(t) => t
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string(),
        Err(_) => stored.to_string(),
    }
}

/// `text` cut to `width` characters, the cut marked with `…`.
pub(super) fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut t: String = text.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Writes `bytes` exactly: to `output` (a new file; an existing one only
/// with `force`), else to stdout — but not to a terminal when they are
/// not text (`what` names them in the refusal).
pub(super) fn write_bytes(
    bytes: &[u8],
    output: Option<&Path>,
    force: bool,
    what: &str,
) -> anyhow::Result<()> {
    match output {
        Some(path) => {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true);
            if force {
                opts.create(true).truncate(true);
            } else {
                opts.create_new(true);
            }
            let mut f = opts.open(path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    anyhow!("{} exists; --force to overwrite it", path.display())
                } else {
                    anyhow!("cannot write {}: {e}", path.display())
                }
            })?;
            f.write_all(bytes)
                .and_then(|_| f.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => {
            let text = std::str::from_utf8(bytes).is_ok_and(|t| {
                !t.chars()
                    .any(|c| c.is_control() && !"\t\r\n\x0c".contains(c))
            });
            if !text && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                return Err(anyhow!(
                    "{what} is binary; not written to a terminal: use -o FILE or a pipe"
                ));
            }
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)?;
            out.flush()?;
        }
    }
    Ok(())
}
