//! The `ticketd` command line: parse arguments, run one command.
#![forbid(unsafe_code)]

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use ticketd::config::Config;
use ticketd::credential::TokenProvider;
use ticketd::domain::{Severity, Status};
use ticketd::keys::MacKey;
use ticketd::service::{open_store, DataDir, Incoming, Intake, StaffAction};

/// EX_TEMPFAIL: the MTA keeps the message and tries again.
const EX_TEMPFAIL: u8 = 75;
/// EX_DATAERR: the message can never be taken (too big); the MTA bounces.
const EX_DATAERR: u8 = 65;
/// EX_NOINPUT: a named input file cannot be read.
const EX_NOINPUT: u8 = 66;
/// EX_CONFIG: the configuration is unusable.
const EX_CONFIG: u8 = 78;

#[derive(Parser, Debug)]
#[command(
    name = "ticketd",
    version,
    about = "Support-desk daemon: mail in, tickets and confirmations out"
)]
struct Cli {
    /// Configuration file (TOML); without one every default applies.
    #[arg(long, global = true, env = "TICKETD_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory: database, outbox files, Message-ID key.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Store one message from stdin, or each FILE; prints one JSON line per
    /// message. Exit 0 when all are stored, 75 when one could not be.
    Ingest {
        /// Store in this process even when `ticketd run` is listening on
        /// the data directory's hand-over socket.
        #[arg(long)]
        direct: bool,
        /// Message files; stdin when none.
        files: Vec<PathBuf>,
    },
    /// Tickets.
    Tickets {
        #[command(subcommand)]
        cmd: TicketsCmd,
    },
    /// Outgoing mail.
    Outbox {
        #[command(subcommand)]
        cmd: OutboxCmd,
    },
    /// Messages that could not be parsed.
    Quarantine {
        #[command(subcommand)]
        cmd: QuarantineCmd,
    },
    /// Show the severity the rules give a message.
    Classify {
        /// Print every matching rule and the text that matched.
        #[arg(long)]
        explain: bool,
        /// The mailbox the message came in by, for rules that match on it
        /// (an `[[imap]]` mailbox's name, `pipe`, `maildir`, `stdin`).
        #[arg(long)]
        mailbox: Option<String>,
        /// The message file.
        file: PathBuf,
    },
    /// Run the daemon: Maildir intake and outbox delivery until SIGTERM.
    Run,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration, rules and templates (offline); with
    /// --connect also log in to every IMAP mailbox, list every Graph
    /// mailbox's folder, reach the SMTP relay and Discord, one line per
    /// check.
    CheckConfig {
        /// Also log in to every IMAP mailbox (and select its folder), list
        /// every Graph mailbox's folder, reach the SMTP relay and Discord;
        /// exit 1 when one fails.
        #[arg(long)]
        connect: bool,
    },
    /// The customer directory.
    Customers {
        #[command(subcommand)]
        cmd: CustomersCmd,
    },
    /// Service levels.
    Sla {
        #[command(subcommand)]
        cmd: SlaCmd,
    },
    /// OAuth 2.0 grants of the mailboxes and the SMTP relay
    /// (`auth = "oauth2"`).
    Auth {
        #[command(subcommand)]
        cmd: AuthCmd,
    },
}

#[derive(Subcommand, Debug)]
enum AuthCmd {
    /// Each OAuth account: flow, whether a grant is stored, the access
    /// token's expiry, the last refresh and the last error (never a token).
    Status,
    /// Get a grant for NAME (an IMAP mailbox's name, or `smtp`): device
    /// code flow: shows a URL and a code to enter in any browser, then
    /// waits; client credentials: fetches one token to prove the setup.
    /// Safe while `run` is running: it picks the new grant up.
    Login {
        /// The mailbox's name (as in `auth status`) or `smtp`.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum SlaCmd {
    /// How each due time of a ticket was computed: the policy and why,
    /// the calendar, pauses, holidays and closed periods skipped.
    Explain {
        /// The ticket number.
        number: String,
    },
    /// Open tickets by SLA state, and the breached or soon due ones.
    Status {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum CustomersCmd {
    /// Organisations with plan, domains and contacts.
    List {
        /// JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Adds the organisations of a CSV file (header row: id, name, plan,
    /// domains, contacts, …) to the directory as NAME.toml.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Name of the TOML file written (default: the CSV file's name).
        #[arg(long)]
        name: Option<String>,
        /// Replace an existing NAME.toml.
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Subcommand, Debug)]
enum TicketsCmd {
    /// Tickets, newest first (at most --limit).
    List {
        /// JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// Only tickets with this status (new, open, pending, resolved,
        /// closed); repeat or separate by commas for several.
        #[arg(long, value_delimiter = ',')]
        status: Vec<String>,
        /// Only tickets of this severity (1–4); repeat or separate by
        /// commas for several.
        #[arg(long, value_delimiter = ',')]
        severity: Vec<u8>,
        /// Only tickets of this organisation (its directory id).
        #[arg(long)]
        organisation: Option<String>,
        /// Only tickets created since: a date (`2026-12-01`, midnight in
        /// the desk's time zone), a date and time (`2026-12-01T14:00`,
        /// desk time zone, or with an offset), or a duration back from
        /// now (`90m`, `24h`, `7d`, `2w`).
        #[arg(long)]
        since: Option<String>,
        /// At most this many tickets, 1 to 1,000,000 (default: 100 in
        /// the table, all with --json).
        #[arg(long)]
        limit: Option<i64>,
    },
    /// Writes an attachment's exact bytes to stdout or FILE.
    Attachment {
        /// The ticket number.
        number: String,
        /// The attachment's id, as `tickets show` lists it.
        id: i64,
        /// Write to FILE instead of stdout (never over an existing file
        /// without --force).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite FILE when it exists.
        #[arg(long)]
        force: bool,
    },
    /// Writes the original mail of the ticket's first article (or of
    /// ARTICLE), byte for byte, to stdout or FILE.
    Raw {
        /// The ticket number.
        number: String,
        /// The article's id, as `tickets show` lists it (default: the
        /// message that opened the ticket).
        article: Option<i64>,
        /// Write to FILE instead of stdout (never over an existing file
        /// without --force).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite FILE when it exists.
        #[arg(long)]
        force: bool,
    },
    /// One ticket with its articles and SLA.
    Show {
        /// The ticket number.
        number: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Mail a reply to the requester (text from --text, else stdin),
    /// threaded on the ticket; it counts as the staff response.
    Reply {
        /// The ticket number.
        number: String,
        /// The reply's text (default: read from stdin).
        #[arg(long)]
        text: Option<String>,
        /// Then wait for the customer (status pending: the SLA clock
        /// pauses).
        #[arg(long)]
        pending: bool,
        /// Copy the reply to this address too (repeatable).
        #[arg(long, value_name = "ADDR")]
        cc: Vec<String>,
        /// The staff member's name: the reply is sent as `NAME (desk
        /// name)` and signed so (default: the desk's name alone).
        #[arg(long, value_name = "NAME")]
        from_name: Option<String>,
        /// Who replies, as recorded on the ticket (default: $USER).
        #[arg(long = "as")]
        author: Option<String>,
    },
    /// Set the status: open, pending (waiting for the customer), resolved,
    /// closed.
    Status {
        /// The ticket number.
        number: String,
        /// The new status.
        status: String,
        /// Who does it (default: $USER).
        #[arg(long = "as")]
        author: Option<String>,
    },
    /// Set the severity, 1–4 (SLA due times are recomputed from receipt).
    Severity {
        /// The ticket number.
        number: String,
        /// The new severity.
        severity: u8,
        /// Who does it (default: $USER).
        #[arg(long = "as")]
        author: Option<String>,
    },
    /// Add an internal note (never mailed).
    Note {
        /// The ticket number.
        number: String,
        /// The note.
        text: String,
        /// Who writes it (default: $USER).
        #[arg(long = "as")]
        author: Option<String>,
    },
    /// Give a ticket to a staff member (shown in `list mine` in Discord
    /// when it is `discord:USER_ID`).
    Assign {
        /// The ticket number.
        number: String,
        /// Who gets it: a name, or `discord:USER_ID`.
        assignee: String,
        /// Who does it (default: $USER).
        #[arg(long = "as")]
        author: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum OutboxCmd {
    /// Outgoing mail, oldest first, with its state and next attempt.
    List {
        /// JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Makes a failed, cancelled or waiting mail due now (a running
    /// daemon sends it within its poll interval).
    Retry {
        /// The outbox row's id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every failed mail and every mail waiting for a later attempt.
        #[arg(long)]
        all: bool,
        /// Who does it (default: $USER).
        #[arg(long = "as")]
        author: Option<String>,
    },
    /// Cancels a queued or failed mail: it is never sent and stays listed
    /// as cancelled.
    Cancel {
        /// The outbox row's id.
        id: i64,
        /// Who does it (default: $USER).
        #[arg(long = "as")]
        author: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum QuarantineCmd {
    /// Quarantined messages, newest first: id, time, size, source, reason.
    List {
        /// JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One quarantined message: why, and its header (or its raw bytes).
    Show {
        /// The message's id.
        id: i64,
        /// Write the raw bytes, exactly as received, instead.
        #[arg(long)]
        raw: bool,
    },
    /// Runs a quarantined message through the intake again (after a fix);
    /// prints the outcome like `ingest`.
    Release {
        /// The message's id.
        id: i64,
        /// Who does it (default: $USER).
        #[arg(long = "as")]
        author: Option<String>,
    },
}

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

/// Whether an error is the configuration's (the file, rules, templates,
/// policies, customers, a source or transport it names): those all exit
/// EX_CONFIG, so a unit manager or script can tell them from a failure at
/// run time.
fn is_config_problem(e: &anyhow::Error) -> bool {
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
fn said_once_all(e: &anyhow::Error) -> String {
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

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

fn init_logging(cfg: &Config, cmd: &Command) {
    let default = match cmd {
        Command::Run => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TICKETD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal, not in journald or files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = cfg.log.format.as_deref() == Some("json");
    // Also takes the `log` records of async-imap and rustls (tracing-log).
    tracing_subscriber::util::SubscriberInitExt::init(subscriber(
        filter,
        json,
        ansi,
        std::io::stderr,
    ));
}

/// The subscriber: `filter` (from `TICKETD_LOG`), and on top of it the
/// caps of [`ticketd::credential::log_caps`], which no directive can lift
/// (both must let an event through).
fn subscriber<W>(
    filter: tracing_subscriber::EnvFilter,
    json: bool,
    ansi: bool,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;
    let caps = ticketd::credential::log_caps();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(caps)
        .with(fmt)
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

fn intake(cfg: &Config, data: &DataDir) -> anyhow::Result<Intake> {
    let key = MacKey::load_or_create(&data.root).context("Message-ID key")?;
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

/// `ticketd auth status` and `ticketd auth login NAME`.
async fn auth(cfg: &Config, data_dir: &Path, cmd: AuthCmd) -> anyhow::Result<ExitCode> {
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

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

async fn dispatch(
    cmd: Command,
    cfg: Config,
    data_dir: &Path,
    stdin_raw: Option<(Vec<u8>, jiff::Timestamp)>,
) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Ingest { files, .. } => ingest(&cfg, data_dir, files, stdin_raw).await,
        Command::Tickets { cmd } => {
            let (_, store) = open(&cfg, data_dir, 1).await?;
            match cmd {
                TicketsCmd::List {
                    json,
                    status,
                    severity,
                    organisation,
                    since,
                    limit,
                } => {
                    let tz = desk_tz(&cfg);
                    let filter = ticket_filter(
                        &tz,
                        status,
                        severity,
                        organisation,
                        since,
                        limit,
                        json,
                        jiff::Timestamp::now(),
                    )?;
                    let mut list = store.list_tickets_by(&filter).await?;
                    if json {
                        print_json(&list)?;
                    } else {
                        let more = limit.is_none() && list.len() as i64 > LIST_DEFAULT;
                        if more {
                            list.truncate(LIST_DEFAULT as usize);
                        }
                        print_ticket_list(&tz, &list);
                        if more {
                            eprintln!(
                                "(the newest {LIST_DEFAULT} shown; --limit N for more, --json for all)"
                            );
                        }
                    }
                }
                TicketsCmd::Attachment {
                    number,
                    id,
                    output,
                    force,
                } => {
                    let (info, content) = store.ticket_attachment(&number, id).await?;
                    write_bytes(&content, output.as_deref(), force, &info.filename)?;
                }
                TicketsCmd::Raw {
                    number,
                    article,
                    output,
                    force,
                } => {
                    let m = store.article_mail(&number, article).await?;
                    let what = format!("article {} of ticket {number}", m.article);
                    write_bytes(&m.raw, output.as_deref(), force, &what)?;
                }
                TicketsCmd::Show { number, json } => {
                    let Some(t) = store.show_ticket(&number).await? else {
                        return Err(anyhow!("no ticket {number}"));
                    };
                    let data = DataDir::open(data_dir)?;
                    let intake = intake(&cfg, &data)?;
                    let sla = intake
                        .sla_view(&store, &number, jiff::Timestamp::now())
                        .await?;
                    if json {
                        let mut v = serde_json::to_value(&t)?;
                        if let Some(map) = v.as_object_mut() {
                            map.insert("sla".into(), serde_json::to_value(&sla)?);
                        }
                        print_json(&v)?;
                    } else {
                        print_ticket(&desk_tz(&cfg), &t);
                        if let Some(s) = &sla {
                            println!();
                            print_sla(s, false);
                        }
                    }
                }
                TicketsCmd::Reply {
                    number,
                    text,
                    pending,
                    cc,
                    from_name,
                    author,
                } => {
                    let mut copies: Vec<ticketd::domain::Mailbox> = Vec::new();
                    for a in &cc {
                        let m = cc_address(a)?;
                        if !copies
                            .iter()
                            .any(|c| c.address.eq_ignore_ascii_case(&m.address))
                        {
                            copies.push(m);
                        }
                    }
                    let cc = copies;
                    let text = match text {
                        Some(t) => t,
                        None => {
                            let raw = ticketd::sources::read_stdin(cfg.intake.max_message_bytes)
                                .context("cannot read the reply from stdin")?;
                            String::from_utf8(raw)
                                .map_err(|_| anyhow!("the reply on stdin is not UTF-8"))?
                        }
                    };
                    let action = StaffAction::Reply {
                        text,
                        then_pending: pending,
                        cc,
                        staff_name: from_name,
                    };
                    act(&cfg, data_dir, &store, &number, &action, author).await?;
                }
                TicketsCmd::Status {
                    number,
                    status,
                    author,
                } => {
                    let to = match status.trim().to_ascii_lowercase().as_str() {
                        "open" => Status::Open,
                        "pending" => Status::Pending,
                        "resolved" => Status::Resolved,
                        "closed" => Status::Closed,
                        other => {
                            return Err(anyhow!(
                                "status {other:?}: use open, pending, resolved or closed"
                            ))
                        }
                    };
                    act(
                        &cfg,
                        data_dir,
                        &store,
                        &number,
                        &StaffAction::Status(to),
                        author,
                    )
                    .await?;
                }
                TicketsCmd::Severity {
                    number,
                    severity,
                    author,
                } => {
                    let sev = Severity::try_from(severity).map_err(|e| anyhow!(e))?;
                    act(
                        &cfg,
                        data_dir,
                        &store,
                        &number,
                        &StaffAction::Severity(sev),
                        author,
                    )
                    .await?;
                }
                TicketsCmd::Note {
                    number,
                    text,
                    author,
                } => {
                    act(
                        &cfg,
                        data_dir,
                        &store,
                        &number,
                        &StaffAction::Note(text),
                        author,
                    )
                    .await?;
                }
                TicketsCmd::Assign {
                    number,
                    assignee,
                    author,
                } => {
                    let key = if assignee.contains(':') {
                        assignee.clone()
                    } else {
                        format!("cli:{assignee}")
                    };
                    act(
                        &cfg,
                        data_dir,
                        &store,
                        &number,
                        &StaffAction::Assign {
                            key,
                            name: assignee,
                        },
                        author,
                    )
                    .await?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sla { cmd } => {
            let (data, store) = open(&cfg, data_dir, 1).await?;
            let intake = intake(&cfg, &data)?;
            let now = jiff::Timestamp::now();
            match cmd {
                SlaCmd::Explain { number } => {
                    if store.show_ticket(&number).await?.is_none() {
                        return Err(anyhow!("no ticket {number}"));
                    }
                    match intake.sla_view(&store, &number, now).await? {
                        Some(s) => print_sla(&s, true),
                        None => println!("SLA clocks are off ([sla] enabled = false)."),
                    }
                }
                SlaCmd::Status { json } => {
                    let st = intake.sla_status(&store, now).await?;
                    if json {
                        print_json(&st)?;
                    } else {
                        println!(
                            "open {}: running {}, paused {}, breached {}, met or no SLA {}",
                            st.open, st.running, st.paused, st.breached, st.other
                        );
                        for t in &st.tickets {
                            println!(
                                "{:<12} sev {} {:<8} {:<15} {:<22} {}",
                                t.number,
                                t.severity,
                                t.state,
                                t.target.as_deref().unwrap_or("-"),
                                t.due
                                    .as_deref()
                                    .and_then(|d| d.parse::<jiff::Timestamp>().ok())
                                    .map(|d| intake.staff_time(d))
                                    .unwrap_or_default(),
                                t.subject
                            );
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Outbox { cmd } => {
            let (_, store) = open(&cfg, data_dir, 1).await?;
            let now = jiff::Timestamp::now();
            match cmd {
                OutboxCmd::List { json } => {
                    let list = store.list_outbox().await?;
                    if json {
                        print_json(&list)?;
                    } else {
                        print_outbox(&desk_tz(&cfg), &list);
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
        Command::Quarantine { cmd } => {
            let (data, store) = open(&cfg, data_dir, 1).await?;
            let tz = desk_tz(&cfg);
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
                    let intake = intake(&cfg, &data)?;
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
        Command::Classify {
            explain,
            mailbox,
            file,
        } => {
            let raw = ticketd::sources::read_file(&file, cfg.intake.max_message_bytes)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let mail = ticketd::ingest::parse::parse(&raw)
                .map_err(|e| anyhow!("{}: cannot be parsed: {e}", file.display()))?;
            let data = DataDir {
                root: data_dir.to_path_buf(),
            };
            let key = MacKey(vec![0; 32]);
            let intake = Intake::new(&cfg, key)
                .with_customers(customers_dir(&cfg, &data.root))
                .map_err(|e| unusable(format!("customers: {e}")))?;
            let rules = intake
                .rules()
                .map_err(|e| unusable(format!("rules: {e}")))?;
            let directory = intake.customers();
            let (alert, org) = intake.context(&directory, &mail);
            let facts = ticketd::ingest::classify::Facts {
                customer: org.map(|o| o.id.as_str()),
                plan: org.and_then(|o| o.plan.as_deref()),
                mailbox: mailbox.as_deref(),
                alert: alert.as_ref(),
            };
            if explain {
                print!(
                    "{}",
                    rules.explain(&mail, &facts, intake.default_severity())
                );
            } else {
                let c = rules.classify(&mail, &facts);
                let sev = match (c.severity, &alert) {
                    (Some(s), _) => format!("severity {} ({})", s.level(), s.label_en()),
                    (None, Some(_)) => "severity by the alert's state".into(),
                    (None, None) => {
                        let s = intake.default_severity();
                        format!("severity {} ({})", s.level(), s.label_en())
                    }
                };
                let mut line = format!(
                    "{sev} — {}; action {}",
                    c.rule
                        .map(|r| format!("rule {r}"))
                        .unwrap_or_else(|| "default".into()),
                    c.action.describe()
                );
                if let Some(q) = &c.queue {
                    line.push_str(&format!("; queue {q}"));
                }
                if !c.tags.is_empty() {
                    line.push_str(&format!("; tags {}", c.tags.join(", ")));
                }
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            if let Some(w) = cfg.http.exposure_warning() {
                tracing::warn!("{w}");
            }
            let (data, store) = open(&cfg, data_dir, 4).await?;
            let intake = Arc::new(intake(&cfg, &data)?);
            ticketd::daemon::run(cfg, data, store, intake).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Auth { cmd } => auth(&cfg, data_dir, cmd).await,
        Command::Migrate => {
            let (data, _store) = open(&cfg, data_dir, 1).await?;
            println!("database {} is up to date", data.database().display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Customers { cmd } => {
            let dir = customers_dir(&cfg, data_dir);
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
        Command::CheckConfig { connect } => {
            cfg.check_sources().map_err(unusable)?;
            let intake = Intake::new(&cfg, MacKey(vec![0; 32]));
            intake.verify().map_err(unusable)?;
            let rules = intake
                .rules()
                .map_err(|e| unusable(format!("rules: {e}")))?;
            // OAuth accounts: `--connect` gets real tokens with the grants
            // in the database; the offline check fetches none.
            let store = if connect && !cfg.oauth_accounts().is_empty() {
                Some(open(&cfg, data_dir, 1).await?.1)
            } else {
                None
            };
            let tokens = |key: &str| -> Result<Option<Arc<dyn TokenProvider>>, String> {
                Ok(match &store {
                    Some(store) => ticketd::oauth::source_for(&cfg, key, store, None)
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
                        ticketd::sources::graph::GraphClient::new(&cfg, g, store, None)
                            .map(|c| (g.label().to_string(), Arc::new(c)))
                    })
                    .collect::<Result<std::collections::BTreeMap<_, _>, _>>()
                    .map_err(unusable)?,
                None => Default::default(),
            };
            let sender = match (&cfg.outbound.transport, &cfg.outbound.graph.mailbox) {
                (ticketd::config::Transport::Graph, Some(name)) => {
                    graph_clients.get(name).map(|c| {
                        ticketd::outbound::worker::Sender::Graph(
                            ticketd::outbound::graph::GraphSender::new(c.clone()),
                        )
                    })
                }
                _ => Some(
                    ticketd::outbound::worker::Sender::from_config_with_tokens(
                        &cfg,
                        &Path::new(data_dir).join("sent"),
                        tokens("smtp").map_err(|e| unusable(format!("outbound: {e}")))?,
                    )
                    .map_err(|e| unusable(format!("outbound: {e}")))?,
                ),
            };
            let customers = ticketd::customers::Directory::load(&customers_dir(&cfg, data_dir))
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
                eprintln!(
                    "warning: discord.staff_roles is empty: nobody can act on tickets in Discord"
                );
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
            if connect && !connect_checks(&cfg, sender.as_ref(), &tokens, &graph_clients).await {
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
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

/// `ingest`: every message is stored, or the exit code says so (75).
/// `stdin_raw` is the message already read from stdin with the instant its
/// reading started (its arrival).
async fn ingest(
    cfg: &Config,
    data_dir: &Path,
    files: Vec<PathBuf>,
    stdin_raw: Option<(Vec<u8>, jiff::Timestamp)>,
) -> anyhow::Result<ExitCode> {
    let (data, store) = open(cfg, data_dir, 1).await?;
    let intake = intake(cfg, &data)?;
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
fn read_pipe(cfg: &Config) -> Result<Vec<u8>, ExitCode> {
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

/// Who does a command-line action: `cli:NAME`.
fn author_of(author: Option<String>) -> String {
    let name = author
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    format!("cli:{}", ticketd::domain::header_safe(&name))
}

/// Does a staff action and says what changed.
async fn act(
    cfg: &Config,
    data_dir: &Path,
    store: &ticketd::store::Store,
    number: &str,
    action: &StaffAction,
    author: Option<String>,
) -> anyhow::Result<()> {
    let data = DataDir::open(data_dir)?;
    let intake = intake(cfg, &data)?;
    let now = jiff::Timestamp::now();
    let done = intake
        .act(store, number, action, &author_of(author), now)
        .await?;
    let what = match action {
        StaffAction::Reply { then_pending, .. } => format!(
            "reply queued{}",
            if *then_pending {
                "; ticket pending"
            } else {
                ""
            }
        ),
        StaffAction::Status(s) if done.changed => format!("status {}", s.as_str()),
        StaffAction::Status(s) => format!("already {}", s.as_str()),
        StaffAction::Severity(s) if done.changed => format!("severity {}", s.level()),
        StaffAction::Severity(s) => format!("already severity {}", s.level()),
        StaffAction::Note(_) => "note added".into(),
        StaffAction::Assign { name, .. } if done.changed => format!("assigned to {name}"),
        StaffAction::Assign { name, .. } => format!("already assigned to {name}"),
    };
    let sla = match &done.sla {
        Some(e) => match &e.next_due {
            Some((due, target)) => format!(
                "; SLA {} ({target} due {})",
                e.state,
                intake.staff_time(*due)
            ),
            None => format!("; SLA {}", e.state),
        },
        None => String::new(),
    };
    println!("ticket {}: {what}{sla}", done.number);
    Ok(())
}

/// The SLA section of a ticket; with `explain`, how each due time came
/// about.
fn print_sla(s: &ticketd::service::SlaView, explain: bool) {
    match &s.policy {
        Some(p) => println!("SLA:       {}  (policy {p})", s.state),
        None => println!("SLA:       none"),
    }
    if explain || s.policy.is_none() {
        println!("Policy:    {}", s.why);
    }
    for t in &s.targets {
        let label = if t.cycle > 0 {
            format!("{} #{}", t.target, t.cycle)
        } else {
            t.target.clone()
        };
        let when = match (&t.due_local, &t.ended_local) {
            (_, Some(end)) => format!("ended {end}"),
            (Some(due), None) => format!("due {due}"),
            (None, None) => format!("{} left", t.remaining),
        };
        println!(
            "  {:<16} {:>6}  {:<9} {}  (used {}, {} left)",
            label, t.amount, t.state, when, t.used, t.remaining
        );
        if explain {
            println!("      calendar: {}", t.calendar);
            for line in &t.explain {
                println!("      {line}");
            }
        }
    }
    let sent: Vec<_> = s
        .reminders
        .iter()
        .filter(|r| r.fired_at.is_some())
        .collect();
    let planned: Vec<_> = s
        .reminders
        .iter()
        .filter(|r| r.fired_at.is_none())
        .collect();
    for r in sent {
        println!(
            "  reminder {:<26} fired {}  {}",
            r.key,
            r.local.as_deref().unwrap_or(""),
            r.outcome.as_deref().unwrap_or("")
        );
    }
    for r in planned {
        println!(
            "  reminder {:<26} due   {}  to {}",
            r.key,
            r.local.as_deref().unwrap_or(&r.due_at),
            if r.audiences.is_empty() {
                "(record only)".to_string()
            } else {
                r.audiences.join(", ")
            }
        );
    }
}

fn print_ticket(tz: &jiff::tz::TimeZone, t: &ticketd::store::TicketView) {
    let s = &t.summary;
    println!(
        "Ticket {}  [{}]  severity {}",
        s.number, s.status, s.severity
    );
    println!("Subject:   {}", s.subject);
    println!("Requester: {}", s.requester);
    if let Some(r) = &t.reply_to {
        println!("Reply-To:  {r} (mail to the customer goes there)");
    }
    if let Some(o) = &s.organisation {
        println!("Customer:  {o}");
    }
    if !s.flags.is_empty() {
        println!("Flags:     {}", s.flags.join(", "));
    }
    if let Some(q) = &s.queue {
        println!("Queue:     {q}");
    }
    if !s.tags.is_empty() {
        println!("Tags:      {}", s.tags.join(", "));
    }
    // The receipt timestamp the customer was told and the SLA counts
    // from; `Created` is when ticketd stored that message.
    println!(
        "Received:  {}   (arrival: receipt timestamp, SLA start)",
        local(tz, &t.arrived_at)
    );
    println!(
        "Created:   {}   updated {}",
        local(tz, &s.created_at),
        local(tz, &s.updated_at)
    );
    if let Some(r) = &t.severity_rule {
        println!("Rule:      {r}");
    }
    if let Some(a) = &t.assignee {
        println!("Assignee:  {a}");
    }
    if let Some(l) = &s.linked_ticket {
        println!("Linked:    refers to ticket {l}");
    }
    for l in &t.linked_from {
        println!("Linked:    ticket {l} refers to this one");
    }
    println!("Participants: {}", t.participants.join(", "));
    if let Some(i) = &t.incident {
        println!(
            "Incident:  {} {} ({} problem alerts, last {}: {})",
            i.key,
            i.state,
            i.occurrences,
            local(tz, &i.last_at),
            i.last_text
        );
    }
    for b in &t.bounces {
        println!(
            "Bounce:    {} {} {}",
            b.recipient,
            b.status.as_deref().unwrap_or(""),
            b.diagnostic.as_deref().unwrap_or("")
        );
    }
    if !t.events.is_empty() {
        println!("History:");
        for e in &t.events {
            println!(
                "  {}  {:<14} {}",
                local(tz, &e.created_at),
                e.kind,
                e.detail
            );
        }
    }
    for a in &t.articles {
        println!();
        println!(
            "--- article {}  {} {} {} {}",
            a.id,
            local(tz, &a.created_at),
            a.direction,
            a.kind,
            a.from.as_deref().unwrap_or("")
        );
        if let Some(s) = &a.subject {
            println!("Subject: {s}");
        }
        if let Some(r) = a.arrived_at.as_ref().filter(|r| **r != a.created_at) {
            println!("Arrived: {}", local(tz, r));
        }
        for at in &a.attachments {
            println!(
                "Attachment {}: {} ({} bytes, {})",
                at.id, at.filename, at.size, at.content_type
            );
        }
        println!("{}", a.body.trim_end());
    }
}

/// The desk's time zone (`[desk] timezone`): every time the command
/// line prints for people is in it, with the zone named.
fn desk_tz(cfg: &Config) -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get(&cfg.desk.timezone).unwrap_or(jiff::tz::TimeZone::UTC)
}

/// A stored instant (UTC, `2026-12-01T13:00:00.000Z`) in the desk's time
/// zone: `2026-12-01 14:00:00 CET`; text that is no instant as it is.
fn local(tz: &jiff::tz::TimeZone, stored: &str) -> String {
    match stored.parse::<jiff::Timestamp>() {
        Ok(t) => t
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string(),
        Err(_) => stored.to_string(),
    }
}

/// The most tickets `--limit` asks for.
const LIST_MAX: i64 = 1_000_000;
/// The tickets the table shows without `--limit` (a person reads it; a
/// script uses `--json`, which lists all of them by default).
const LIST_DEFAULT: i64 = 100;

/// The filter of `tickets list` from its options, checked.
#[allow(clippy::too_many_arguments)]
fn ticket_filter(
    tz: &jiff::tz::TimeZone,
    status: Vec<String>,
    severity: Vec<u8>,
    organisation: Option<String>,
    since: Option<String>,
    limit: Option<i64>,
    json: bool,
    now: jiff::Timestamp,
) -> anyhow::Result<ticketd::store::admin::TicketFilter> {
    let mut statuses = Vec::new();
    for st in status {
        let st = st.trim().to_ascii_lowercase();
        if !["new", "open", "pending", "resolved", "closed"].contains(&st.as_str()) {
            return Err(anyhow!(
                "--status {st:?}: use new, open, pending, resolved or closed"
            ));
        }
        statuses.push(st);
    }
    let mut severities = Vec::new();
    for sev in severity {
        let s = Severity::try_from(sev).map_err(|e| anyhow!("--severity: {e}"))?;
        severities.push(i64::from(s.level()));
    }
    let limit = match limit {
        Some(l) if !(1..=LIST_MAX).contains(&l) => {
            return Err(anyhow!("--limit {l}: use 1 to {LIST_MAX}"))
        }
        Some(l) => l,
        None if json => i64::MAX,
        // One more than shown, to tell whether there are more.
        None => LIST_DEFAULT + 1,
    };
    let since = since
        .map(|s| parse_since(tz, s.trim(), now).map(ticketd::store::ts))
        .transpose()?;
    Ok(ticketd::store::admin::TicketFilter {
        statuses,
        severities,
        organisation,
        since,
        limit,
    })
}

/// `--since`: a duration back from `now` (`90m`, `24h`, `7d`, `2w`), a
/// date (midnight in the desk's time zone), a date and time in the desk's
/// time zone, or an instant with an offset.
fn parse_since(
    tz: &jiff::tz::TimeZone,
    s: &str,
    now: jiff::Timestamp,
) -> anyhow::Result<jiff::Timestamp> {
    let bad = || {
        anyhow!(
            "--since {s:?}: use a duration (90m, 24h, 7d, 2w), a date (2026-12-01) or a date and time (2026-12-01T14:00, or with an offset)"
        )
    };
    if let Some(unit) = s.chars().last().filter(|c| "smhdw".contains(*c)) {
        if let Ok(n) = s[..s.len() - 1].parse::<i64>() {
            let secs = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => 604_800,
            };
            let back = n.checked_mul(secs).filter(|v| *v >= 0).ok_or_else(bad)?;
            return now
                .checked_sub(jiff::SignedDuration::from_secs(back))
                .map_err(|_| bad());
        }
    }
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        return d
            .to_zoned(tz.clone())
            .map(|z| z.timestamp())
            .map_err(|_| bad());
    }
    if let Ok(dt) = s.replacen(' ', "T", 1).parse::<jiff::civil::DateTime>() {
        return dt
            .to_zoned(tz.clone())
            .map(|z| z.timestamp())
            .map_err(|_| bad());
    }
    Err(bad())
}

/// `text` cut to `width` characters, the cut marked with `…`.
fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut t: String = text.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// `tickets list` as a table. The columns are fixed (README): NUMBER,
/// STATUS, SEV, ORGANISATION, QUEUE, REQUESTER, CREATED (desk time zone),
/// ART, SUBJECT; a value wider than its column is cut with `…`, the
/// subject last and whole.
fn print_ticket_list(tz: &jiff::tz::TimeZone, list: &[ticketd::store::TicketSummary]) {
    println!(
        "{:<12} {:<8} {:>3} {:<16} {:<10} {:<28} {:<23} {:>4}  SUBJECT",
        "NUMBER", "STATUS", "SEV", "ORGANISATION", "QUEUE", "REQUESTER", "CREATED", "ART"
    );
    for t in list {
        println!(
            "{:<12} {:<8} {:>3} {:<16} {:<10} {:<28} {:<23} {:>4}  {}",
            t.number,
            t.status,
            t.severity,
            cut(t.organisation.as_deref().unwrap_or("-"), 16),
            cut(t.queue.as_deref().unwrap_or("-"), 10),
            cut(&t.requester, 28),
            local(tz, &t.created_at),
            t.article_count,
            t.subject
        );
    }
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

/// Writes `bytes` exactly: to `output` (a new file; an existing one only
/// with `force`), else to stdout — but not to a terminal when they are
/// not text (`what` names them in the refusal).
fn write_bytes(bytes: &[u8], output: Option<&Path>, force: bool, what: &str) -> anyhow::Result<()> {
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

/// A `--cc` address, checked the way the reply's header will need it.
fn cc_address(a: &str) -> anyhow::Result<ticketd::domain::Mailbox> {
    let a = a.trim();
    a.parse::<lettre::Address>()
        .map_err(|e| anyhow!("--cc {a:?} is not a mail address: {e}"))?;
    Ok(ticketd::domain::Mailbox {
        address: a.to_string(),
        name: None,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    #[test]
    fn no_directive_lets_the_imap_and_smtp_credentials_into_the_log() {
        for directives in [
            "trace",
            "ticketd=trace,async_imap=trace,lettre=trace",
            "ticketd=trace,async_imap::imap_stream=trace,lettre::transport=trace",
            "[session]=trace",
        ] {
            for json in [false, true] {
                let buf = Buffer::default();
                let sub = subscriber(
                    tracing_subscriber::EnvFilter::new(directives),
                    json,
                    false,
                    buf.clone(),
                );
                tracing::subscriber::with_default(sub, || {
                    let span = tracing::info_span!("session");
                    let _in = span.enter();
                    // What async-imap (through tracing-log) and lettre write.
                    tracing::trace!(
                        target: "async_imap::imap_stream",
                        "encode: input: Some(\"A0001\"), Ok(\"LOGIN \\\"u\\\" \\\"hunter2\\\"\")"
                    );
                    tracing::debug!(
                        target: "lettre::transport::smtp::client::async_connection",
                        "Wrote: AUTH PLAIN AHUAaHVudGVyMg==\\r\\n"
                    );
                    tracing::warn!(target: "lettre::transport::smtp", "pool: no connection");
                    tracing::trace!(target: "ticketd::sources::imap", "IMAP round");
                });
                let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
                assert!(
                    !out.contains("hunter2") && !out.contains("AHUAaHVudGVyMg"),
                    "{directives}: {out}"
                );
                // The rest is as asked.
                assert!(out.contains("IMAP round"), "{directives}: {out}");
                assert!(out.contains("no connection"), "{directives}: {out}");
            }
        }
    }
}
