//! The `ticketd` command line: parse arguments, run one command. The
//! arguments are declared in `cli/args.rs`, each command group is a file
//! of [`cli`].
#![forbid(unsafe_code)]

mod cli;

use clap::Parser;
use cli::args::{Cli, Command};
use cli::{init_logging, is_config_problem, load_config, read_pipe, said_once_all};
use cli::{EX_CONFIG, EX_TEMPFAIL};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use ticketd::config::Config;

fn main() -> ExitCode {
    // What ticketd writes (the database and its WAL, sent mail, the data
    // directory itself) is for its user and group only, whoever starts it
    // (systemd sets the same; an MTA's pipe may not).
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o027));
    let cli = Cli::parse();
    let is_ingest = matches!(cli.command, Command::Ingest { .. });
    // A panic must never look like success or like a permanent failure to
    // an MTA: report it on one line and ask for a retry.
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        let at = info
            .location()
            .map(|l| format!(" at {l}"))
            .unwrap_or_default();
        let _ = writeln!(std::io::stderr(), "ticketd: internal error: {msg}{at}");
        std::process::exit(if is_ingest { EX_TEMPFAIL as i32 } else { 70 });
    }));
    let cfg = match load_config(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ticketd: {}", said_once_all(&e));
            return ExitCode::from(if is_ingest { EX_TEMPFAIL } else { EX_CONFIG });
        }
    };
    let data_dir = cli
        .data_dir
        .clone()
        .or_else(|| cfg.data_dir.as_ref().map(|d| cfg.resolve(d)))
        .unwrap_or_else(|| PathBuf::from("./data"));
    // The MTA path: one message on stdin. Hand it to the running daemon when
    // there is one (it has the database open and the rules compiled); the
    // runtime, the database and the rules are then never touched here.
    let mut stdin_raw = None;
    if let Command::Ingest {
        direct: false,
        files,
    } = &cli.command
    {
        if files.is_empty() {
            // The message arrives when the MTA starts handing it over.
            let started = jiff::Timestamp::now();
            let raw = match read_pipe(&cfg) {
                Ok(raw) => raw,
                Err(code) => return code,
            };
            use ticketd::sources::socket::{hand_over, Handed};
            match hand_over(
                &data_dir,
                &raw,
                started,
                std::time::Duration::from_secs(120),
            ) {
                Handed::Stored(line) => {
                    println!("{line}");
                    return ExitCode::SUCCESS;
                }
                Handed::Failed(e) => {
                    eprintln!("ticketd: not stored: {e}");
                    return ExitCode::from(EX_TEMPFAIL);
                }
                Handed::NoDaemon => stdin_raw = Some((raw, started)),
            }
        }
    }
    // Logging is set up only for work done here (the hand-over logs nothing).
    init_logging(&cfg, &cli.command);
    let rt = if matches!(cli.command, Command::Run) {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ticketd: cannot start runtime: {e}");
            return ExitCode::from(if is_ingest { EX_TEMPFAIL } else { 70 });
        }
    };
    match rt.block_on(dispatch(cli.command, cfg, &data_dir, stdin_raw)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ticketd: {}", said_once_all(&e));
            ExitCode::from(if is_ingest {
                EX_TEMPFAIL
            } else if is_config_problem(&e) {
                EX_CONFIG
            } else {
                1
            })
        }
    }
}

/// Runs one command: one function per command (group).
async fn dispatch(
    cmd: Command,
    cfg: Config,
    data_dir: &Path,
    stdin_raw: Option<(Vec<u8>, jiff::Timestamp)>,
) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Ingest { files, .. } => cli::ingest(&cfg, data_dir, files, stdin_raw).await,
        Command::Tickets { cmd } => cli::tickets(&cfg, data_dir, cmd).await,
        Command::Sla { cmd } => cli::sla(&cfg, data_dir, cmd).await,
        Command::Outbox { cmd } => cli::outbox(&cfg, data_dir, cmd).await,
        Command::Quarantine { cmd } => cli::quarantine(&cfg, data_dir, cmd).await,
        Command::Classify {
            explain,
            mailbox,
            file,
        } => cli::classify(&cfg, data_dir, explain, mailbox, &file).await,
        Command::Run => cli::run(cfg, data_dir).await,
        Command::Auth { cmd } => cli::auth(&cfg, data_dir, cmd).await,
        Command::Migrate => cli::migrate(&cfg, data_dir).await,
        Command::Customers { cmd } => cli::customers(&cfg, data_dir, cmd).await,
        Command::CheckConfig { connect } => cli::check_config(&cfg, data_dir, connect).await,
    }
}
