//! `ticketd ingest`: one message from stdin (the MTA's pipe) or each
//! file, stored; the exit code tells the MTA what became of it.

use super::{intake, open, EX_DATAERR, EX_NOINPUT, EX_TEMPFAIL};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use ticketd::config::Config;
use ticketd::service::Incoming;

/// `ingest`: every message is stored, or the exit code says so (75).
/// `stdin_raw` is the message already read from stdin with the instant its
/// reading started (its arrival).
pub async fn ingest(
    cfg: &Config,
    data_dir: &Path,
    files: Vec<PathBuf>,
    stdin_raw: Option<(Vec<u8>, jiff::Timestamp)>,
) -> anyhow::Result<ExitCode> {
    let (data, store) = open(cfg, data_dir, 1).await?;
    let intake = intake(cfg, &data, &store).await?;
    let mut failed_store = false;
    let mut failed_read = false;
    let mut out = std::io::stdout().lock();
    let mut emit = |items: &[Incoming],
                    results: Vec<Result<ticketd::service::Outcome, ticketd::store::StoreError>>|
     -> anyhow::Result<()> {
        for (item, r) in items.iter().zip(results) {
            match r {
                Ok(o) => {
                    serde_json::to_writer(&mut out, &o)?;
                    writeln!(out)?;
                }
                Err(e) => {
                    failed_store = true;
                    eprintln!("ticketd: {}: not stored: {e}", item.source);
                }
            }
        }
        Ok(())
    };
    if files.is_empty() {
        let (raw, started) = match stdin_raw {
            Some(read) => read,
            None => {
                let started = jiff::Timestamp::now();
                match read_pipe(cfg) {
                    Ok(raw) => (raw, started),
                    Err(code) => return Ok(code),
                }
            }
        };
        let items = [Incoming {
            raw,
            source: "stdin".into(),
            arrived: Some(started),
        }];
        let results = intake
            .ingest_batch(&store, &items, jiff::Timestamp::now())
            .await;
        emit(&items, results)?;
    } else {
        for chunk in files.chunks(cfg.intake.batch_size) {
            let mut items = Vec::with_capacity(chunk.len());
            for f in chunk {
                match ticketd::sources::read_file(f, cfg.intake.max_message_bytes) {
                    // A file knows no arrival of its own (it may be
                    // a copy made at any time): its Received header
                    // tells, else the commit.
                    Ok(raw) => items.push(Incoming {
                        raw,
                        source: format!("file:{}", f.display()),
                        arrived: None,
                    }),
                    Err(e) => {
                        failed_read = true;
                        eprintln!("ticketd: {}: cannot read: {e}", f.display());
                    }
                }
            }
            let results = intake
                .ingest_batch(&store, &items, jiff::Timestamp::now())
                .await;
            emit(&items, results)?;
        }
    }
    out.flush()?;
    store.close().await;
    Ok(if failed_store {
        ExitCode::from(EX_TEMPFAIL)
    } else if failed_read {
        ExitCode::from(EX_NOINPUT)
    } else {
        ExitCode::SUCCESS
    })
}

/// Reads the MTA's message from stdin. Too big is permanent: the output
/// starts with the enhanced status code 5.3.4, which Postfix's pipe(8)
/// takes for the bounce, and the exit is EX_DATAERR (a bounce, not a retry
/// for days of a mail that can never be taken). A read error asks for a
/// retry (EX_TEMPFAIL).
pub fn read_pipe(cfg: &Config) -> Result<Vec<u8>, ExitCode> {
    use ticketd::sources::ReadError;
    match ticketd::sources::read_stdin(cfg.intake.max_message_bytes) {
        Ok(raw) => Ok(raw),
        Err(ReadError::TooBig { limit }) => {
            eprintln!("5.3.4 message too big for the support desk (over {limit} bytes)");
            Err(ExitCode::from(EX_DATAERR))
        }
        Err(e) => {
            eprintln!("ticketd: cannot read stdin: {e}");
            Err(ExitCode::from(EX_TEMPFAIL))
        }
    }
}
