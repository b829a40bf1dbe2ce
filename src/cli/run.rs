//! `ticketd run` (the daemon until a signal) and `ticketd migrate` (the
//! database brought up to date).

use super::{intake, open};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use ticketd::config::Config;

/// `ticketd run`.
pub async fn run(cfg: Config, data_dir: &Path) -> anyhow::Result<ExitCode> {
    if let Some(w) = cfg.http.exposure_warning() {
        tracing::warn!("{w}");
    }
    let (data, store) = open(&cfg, data_dir, 4).await?;
    let intake = Arc::new(intake(&cfg, &data, &store).await?);
    ticketd::daemon::run(cfg, data, store, intake).await?;
    Ok(ExitCode::SUCCESS)
}

/// `ticketd migrate`.
pub async fn migrate(cfg: &Config, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let (data, _store) = open(cfg, data_dir, 1).await?;
    println!("database {} is up to date", data.database().display());
    Ok(ExitCode::SUCCESS)
}
