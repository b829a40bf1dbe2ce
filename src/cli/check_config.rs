//! `ticketd check-config [--connect]`: the configuration, rules,
//! templates, policies and customers checked offline; with `--connect`
//! every mailbox, the relay and Discord reached, one line per check.

use super::{customers_dir, open, unusable};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use ticketd::config::Config;
use ticketd::credential::TokenProvider;
use ticketd::keys::MacKey;
use ticketd::service::Intake;

/// `ticketd check-config`.
pub async fn check_config(
    cfg: &Config,
    data_dir: &Path,
    connect: bool,
) -> anyhow::Result<ExitCode> {
    cfg.check_sources().map_err(unusable)?;
    let intake = Intake::new(cfg, MacKey(vec![0; 32]));
    intake.verify().map_err(unusable)?;
    let rules = intake
        .rules()
        .map_err(|e| unusable(format!("rules: {e}")))?;
    // OAuth accounts: `--connect` gets real tokens with the grants
    // in the database; the offline check fetches none.
    let store = if connect && !cfg.oauth_accounts().is_empty() {
        Some(open(cfg, data_dir, 1).await?.1)
    } else {
        None
    };
    let tokens = |key: &str| -> Result<Option<Arc<dyn TokenProvider>>, String> {
        Ok(match &store {
            Some(store) => ticketd::oauth::source_for(cfg, key, store, None)
                .map_err(|e| e.to_string())?
                .map(|t| t as Arc<dyn TokenProvider>),
            None => cfg
                .oauth_accounts()
                .iter()
                .any(|a| a.key == key)
                .then(|| Arc::new(OfflineCheck) as Arc<dyn TokenProvider>),
        })
    };
    // The graph transport is its [[graph]] mailbox's client, made
    // (with a real token) only for --connect.
    let graph_clients = match &store {
        Some(store) => cfg
            .graph
            .iter()
            .map(|g| {
                ticketd::sources::graph::GraphClient::new(cfg, g, store, None)
                    .map(|c| (g.label().to_string(), Arc::new(c)))
            })
            .collect::<Result<std::collections::BTreeMap<_, _>, _>>()
            .map_err(unusable)?,
        None => Default::default(),
    };
    let sender = match (&cfg.outbound.transport, &cfg.outbound.graph.mailbox) {
        (ticketd::config::Transport::Graph, Some(name)) => graph_clients.get(name).map(|c| {
            ticketd::outbound::worker::Sender::Graph(ticketd::outbound::graph::GraphSender::new(
                c.clone(),
            ))
        }),
        _ => Some(
            ticketd::outbound::worker::Sender::from_config_with_tokens(
                cfg,
                &Path::new(data_dir).join("sent"),
                tokens("smtp").map_err(|e| unusable(format!("outbound: {e}")))?,
            )
            .map_err(|e| unusable(format!("outbound: {e}")))?,
        ),
    };
    let customers = ticketd::customers::Directory::load(&customers_dir(cfg, data_dir))
        .map_err(|e| unusable(format!("customers: {e}")))?;
    let sla = if cfg.sla.enabled {
        let p = intake
            .policies()
            .map_err(|e| unusable(format!("sla: {e}")))?;
        format!(
            "{} SLA policies, {} digests",
            p.policies().len(),
            cfg.sla.digest.len()
        )
    } else {
        "SLA off".into()
    };
    let discord = if cfg.discord.enabled {
        cfg.discord
            .token(|p| cfg.resolve(p))
            .map_err(|e| unusable(format!("discord: {e}")))?;
        format!(
            "Discord on ({} channels, {} staff roles{})",
            cfg.discord.channels.len(),
            cfg.discord.staff_roles.len(),
            match &cfg.discord.intake {
                Some(i) => format!(", intake in {i}"),
                None => String::new(),
            }
        )
    } else {
        "Discord off".into()
    };
    if let Some(w) = cfg.http.exposure_warning() {
        eprintln!("warning: {w}");
    }
    if cfg.discord.enabled && cfg.discord.staff_roles.is_empty() {
        eprintln!("warning: discord.staff_roles is empty: nobody can act on tickets in Discord");
    }
    println!(
        "configuration ok: {} rules, {sla}, {discord}, {} customer organisations, desk {} <{}>, language {}, time zone {}",
        rules.len(),
        customers.organisations().len(),
        cfg.desk.name,
        cfg.desk.from_address(),
        cfg.desk.language,
        cfg.desk.timezone
    );
    if connect && !connect_checks(cfg, sender.as_ref(), &tokens, &graph_clients).await {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `check-config --connect`: logs in to each IMAP mailbox and selects its
/// folder, connects to the SMTP relay (TLS, AUTH), asks Discord who the
/// token is; prints one line per check. Whether all passed.
async fn connect_checks(
    cfg: &Config,
    sender: Option<&ticketd::outbound::worker::Sender>,
    tokens: &TokensFor<'_>,
    graph: &std::collections::BTreeMap<String, Arc<ticketd::sources::graph::GraphClient>>,
) -> bool {
    let mut all = true;
    let mut report = |what: String, r: Result<String, String>| match r {
        Ok(s) => println!("ok    {what}: {s}"),
        Err(e) => {
            all = false;
            println!("FAIL  {what}: {e}");
        }
    };
    for m in &cfg.imap {
        let src = ticketd::sources::imap::ImapSource::new(cfg, m).and_then(|src| {
            Ok(match tokens(&format!("imap:{}", m.label()))? {
                Some(t) => src.with_tokens(t),
                None => src,
            })
        });
        let r = match src {
            Ok(src) => src.check().await,
            Err(e) => Err(e),
        };
        report(format!("imap {}", m.label()), r);
    }
    for g in &cfg.graph {
        let r = match graph.get(g.label()) {
            Some(c) => {
                ticketd::sources::graph::GraphSource::new(cfg, g, c.clone())
                    .check()
                    .await
            }
            None => Err("no client".into()),
        };
        report(format!("graph {}", g.label()), r);
    }
    if let Some(sender) = sender {
        match cfg.outbound.transport {
            ticketd::config::Transport::Smtp => {
                let s = &cfg.outbound.smtp;
                report(format!("smtp {}:{}", s.host, s.port), sender.check().await);
            }
            ticketd::config::Transport::Graph => {
                report("outbound graph".into(), sender.check().await);
            }
            ticketd::config::Transport::File => {}
        }
    }
    if cfg.discord.enabled {
        let r = match cfg.discord.token(|p| cfg.resolve(p)) {
            Ok(token) => {
                let http = ticketd::chat::discord::http(&token, cfg.discord.api_base.as_deref());
                match tokio::time::timeout(
                    std::time::Duration::from_secs(30),
                    http.get_current_user(),
                )
                .await
                {
                    Ok(Ok(u)) => Ok(format!("the token is bot {} ({})", u.name, u.id)),
                    Ok(Err(e)) => Err(format!("the token is not accepted: {e}")),
                    Err(_) => Err("no answer within 30 s".into()),
                }
            }
            Err(e) => Err(e),
        };
        report("discord".into(), r);
    }
    all
}

/// The token source of account `key` (`imap:NAME`, `smtp`), if it logs in
/// with OAuth.
type TokensFor<'a> = dyn Fn(&str) -> Result<Option<Arc<dyn TokenProvider>>, String> + 'a;

/// The token source of an OAuth account in the offline `check-config`,
/// which builds the transports but connects nowhere: it fetches no token.
struct OfflineCheck;

impl TokenProvider for OfflineCheck {
    fn access_token(&self) -> ticketd::credential::TokenFuture<'_> {
        Box::pin(async {
            Err(ticketd::credential::TokenError(
                "the offline check fetches no token".into(),
            ))
        })
    }

    fn invalidate(&self, _token: &str) {}
}
