//! `ticketd auth status|login`: the OAuth 2.0 grants of the mailboxes and
//! the SMTP relay.

use super::{open, unusable};
use crate::cli::args::AuthCmd;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use ticketd::config::Config;

/// `ticketd auth status` and `ticketd auth login NAME`.
pub async fn auth(cfg: &Config, data_dir: &Path, cmd: AuthCmd) -> anyhow::Result<ExitCode> {
    let accounts = cfg.oauth_accounts();
    let (_, store) = open(cfg, data_dir, 1).await?;
    match cmd {
        AuthCmd::Status => {
            if accounts.is_empty() {
                println!("no mailbox or relay uses auth = \"oauth2\"");
                return Ok(ExitCode::SUCCESS);
            }
            let mut all_ok = true;
            for a in &accounts {
                let g = store.oauth_grant(&a.key).await?;
                let flow = a.oauth.flow();
                let grant = match (&g, flow) {
                    (Some(g), _) if g.refresh_token.is_some() => "stored",
                    (_, ticketd::config::OAuthFlow::ClientCredentials) => "not needed (app-only)",
                    (_, ticketd::config::OAuthFlow::ServiceAccount) => {
                        "not needed (service account)"
                    }
                    _ => "none",
                };
                let dash = || "-".to_string();
                let expires = g
                    .as_ref()
                    .and_then(|g| g.access_expires_at.clone())
                    .unwrap_or_else(dash);
                let last = g
                    .as_ref()
                    .and_then(|g| g.last_refresh_at.clone())
                    .unwrap_or_else(dash);
                let error = g
                    .as_ref()
                    .and_then(|g| {
                        g.last_error.as_ref().map(|e| {
                            format!("{} ({})", e, g.last_error_kind.as_deref().unwrap_or("?"))
                        })
                    })
                    .unwrap_or_else(dash);
                let needs_login = grant == "none"
                    || g.as_ref().and_then(|g| g.last_error_kind.as_deref()) == Some("permanent");
                if needs_login {
                    all_ok = false;
                }
                println!(
                    "{}: flow {}, grant {grant}, access token expires {expires}, last refresh {last}, refreshes {}, last error {error}{}",
                    a.name,
                    flow.as_str(),
                    g.as_ref().map_or(0, |g| g.refresh_count),
                    if needs_login {
                        format!(" -- run `ticketd auth login {}`", a.name)
                    } else {
                        String::new()
                    }
                );
            }
            Ok(if all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        AuthCmd::Login { name } => {
            let Some(a) = accounts.iter().find(|a| a.name == name) else {
                let names: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
                return Err(unusable(format!(
                    "no OAuth account {name:?}; configured: {}",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                )));
            };
            let client = ticketd::oauth::Client::new(cfg, a).map_err(unusable)?;
            let outcome = ticketd::oauth::login::login(&client, &store, |text| {
                println!("{text}");
                let _ = std::io::stdout().flush();
            })
            .await?;
            println!(
                "{name}: signed in; access token valid until {}{}",
                outcome.expires_at,
                if outcome.refresh_token {
                    ", refresh token stored"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
