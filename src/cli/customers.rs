//! `ticketd customers list|import`: the customer directory.

use super::customers_dir;
use super::output::print_json;
use crate::cli::args::CustomersCmd;
use anyhow::{anyhow, Context};
use std::path::Path;
use std::process::ExitCode;
use ticketd::config::Config;

/// `ticketd customers …`.
pub async fn customers(
    cfg: &Config,
    data_dir: &Path,
    cmd: CustomersCmd,
) -> anyhow::Result<ExitCode> {
    let dir = customers_dir(cfg, data_dir);
    match cmd {
        CustomersCmd::List { json } => {
            let d = ticketd::customers::Directory::load(&dir)?;
            if json {
                print_json(&d.organisations())?;
            } else {
                println!("{:<16} {:<10} {:<30} NAME", "ID", "PLAN", "DOMAINS");
                for o in d.organisations() {
                    println!(
                        "{:<16} {:<10} {:<30} {}",
                        o.id,
                        o.plan.as_deref().unwrap_or("-"),
                        o.domains.join(","),
                        o.name
                    );
                }
            }
        }
        CustomersCmd::Import {
            file,
            name,
            replace,
        } => import_customers(&dir, &file, name, replace)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `customers import`: writes NAME.toml, then checks the whole directory;
/// a file that makes it invalid is taken back out.
fn import_customers(
    dir: &Path,
    file: &Path,
    name: Option<String>,
    replace: bool,
) -> anyhow::Result<()> {
    use ticketd::customers::{from_csv, Directory, DirectoryFile};
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let organisations = from_csv(&text, &file.display().to_string())?;
    let name = name.unwrap_or_else(|| {
        file.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "imported".into())
    });
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(anyhow!(
            "--name {name:?}: use letters, digits, '-', '_' and '.'"
        ));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let target = dir.join(format!("{name}.toml"));
    let before = std::fs::read(&target).ok();
    if before.is_some() && !replace {
        return Err(anyhow!(
            "{} exists; --replace to overwrite it",
            target.display()
        ));
    }
    let n = organisations.len();
    let body = toml::to_string(&DirectoryFile {
        plans: Vec::new(),
        organisations,
    })?;
    let header = format!(
        "# Imported by `ticketd customers import` from {}.\n",
        file.display()
    );
    std::fs::write(&target, header + &body)
        .with_context(|| format!("cannot write {}", target.display()))?;
    if let Err(e) = Directory::load(dir) {
        match before {
            Some(old) => std::fs::write(&target, old)?,
            None => std::fs::remove_file(&target)?,
        }
        return Err(anyhow!("not imported: {e}"));
    }
    println!(
        "imported {n} organisations into {} (a running daemon reads them on SIGHUP)",
        target.display()
    );
    Ok(())
}
