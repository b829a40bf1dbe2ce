//! The commands of the `ticketd` binary, one file per command group;
//! `main.rs` parses the arguments and calls one function here.
//!
//! - `args.rs`: the command line as clap reads it.
//! - `ingest.rs`: `ingest`: messages from stdin (the MTA) or files.
//! - `tickets.rs`: `tickets list|show|attachment|raw|reply|status|severity|note|assign`.
//! - `sla.rs`: `sla explain|status`.
//! - `outbox.rs`: `outbox list|retry|cancel`.
//! - `quarantine.rs`: `quarantine list|show|release`.
//! - `classify.rs`: `classify [--explain]`.
//! - `customers.rs`: `customers list|import`.
//! - `auth.rs`: `auth status|login`.
//! - `check_config.rs`: `check-config [--connect]`.
//! - `run.rs`: `run` (the daemon) and `migrate`.
//! - `logging.rs`: the log subscriber and its credential caps.
//! - `output.rs`: tables, JSON, times in the desk's zone, raw bytes.
//!
//! This file holds what the commands share: exit codes, error texts, and
//! opening the data directory, the store and the intake.

pub mod args;
mod auth;
mod check_config;
mod classify;
mod customers;
mod ingest;
mod logging;
mod outbox;
mod output;
mod quarantine;
mod run;
mod sla;
mod tickets;

pub use auth::auth;
pub use check_config::check_config;
pub use classify::classify;
pub use customers::customers;
pub use ingest::{ingest, read_pipe};
pub use logging::init_logging;
pub use outbox::outbox;
pub use quarantine::quarantine;
pub use run::{migrate, run};
pub use sla::sla;
pub use tickets::tickets;

use anyhow::anyhow;
use std::path::{Path, PathBuf};
use ticketd::config::Config;
use ticketd::keys::MacKey;
use ticketd::service::{open_store, DataDir, Intake};

/// EX_TEMPFAIL: the MTA keeps the message and tries again.
pub const EX_TEMPFAIL: u8 = 75;
/// EX_DATAERR: the message can never be taken (too big); the MTA bounces.
pub const EX_DATAERR: u8 = 65;
/// EX_NOINPUT: a named input file cannot be read.
pub const EX_NOINPUT: u8 = 66;
/// EX_CONFIG: the configuration is unusable.
pub const EX_CONFIG: u8 = 78;

/// Whether an error is the configuration's (the file, rules, templates,
/// policies, customers, a source or transport it names): those all exit
/// EX_CONFIG, so a unit manager or script can tell them from a failure at
/// run time.
pub fn is_config_problem(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<ticketd::config::Unusable>()
            || c.is::<ticketd::config::ConfigError>()
            || c.is::<ticketd::ingest::classify::RuleError>()
            || c.is::<ticketd::customers::DirectoryError>()
            || c.is::<ticketd::sla::policy::PolicyError>()
    })
}

/// An error and its causes on one line, each cause only when the text
/// before does not already say it (most errors here put their source's
/// text into their own).
pub fn said_once_all(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for c in e.chain() {
        let part = c.to_string();
        if text.is_empty() {
            text = part;
        } else if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
    }
    text
}

/// Marks a configuration problem found after the file was read (exit 78).
fn unusable(message: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(ticketd::config::Unusable(message.to_string()))
}

pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

async fn open(
    cfg: &Config,
    data_dir: &Path,
    conns: u32,
) -> anyhow::Result<(DataDir, ticketd::store::Store)> {
    let data = DataDir::open(data_dir)?;
    let store = open_store(cfg, &data, conns).await.map_err(|e| {
        let db = match &cfg.database.url {
            None => data.database().display().to_string(),
            Some(u) if u.starts_with("sqlite:") => u.clone(),
            // A URL of another kind may hold a password.
            Some(_) => "of [database] url".to_string(),
        };
        let why = said_once(&e);
        let hint = if why.contains("unable to open") || why.contains("readonly") {
            " — it and its -wal and -shm files must be writable by the user ticketd runs as"
        } else {
            ""
        };
        anyhow!("cannot open the database {db}: {why}{hint}")
    })?;
    Ok((data, store))
}

/// A store error's text without the repetition of its sources: sqlx's
/// errors repeat the text of the error they wrap, so the innermost says it
/// best.
fn said_once(e: &ticketd::store::StoreError) -> String {
    match e {
        ticketd::store::StoreError::Db(db) => {
            let mut inner: &dyn std::error::Error = db;
            while let Some(s) = inner.source() {
                inner = s;
            }
            inner.to_string()
        }
        other => other.to_string(),
    }
}

async fn intake(
    cfg: &Config,
    data: &DataDir,
    store: &ticketd::store::Store,
) -> anyhow::Result<Intake> {
    let key = MacKey::load(store, &data.root)
        .await
        .map_err(|e| anyhow!("Message-ID key: {e}"))?;
    Intake::new(cfg, key)
        .with_customers(customers_dir(cfg, &data.root))
        .map_err(|e| unusable(format!("customers: {e}")))
}

/// `[customers] dir`, else `<data_dir>/customers`.
fn customers_dir(cfg: &Config, data_dir: &Path) -> PathBuf {
    cfg.customers
        .dir
        .as_ref()
        .map(|d| cfg.resolve(d))
        .unwrap_or_else(|| data_dir.join("customers"))
}

/// Who does a command-line action: `cli:NAME`.
fn author_of(author: Option<String>) -> String {
    let name = author
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    format!("cli:{}", ticketd::domain::header_safe(&name))
}
