//! The TOML configuration: every key has a default, so `ticketd` runs with no
//! file at all. Unknown keys are errors (a typo must not silently fall back to
//! a default), reported with line and column.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file named.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown or mistyped key.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file named.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{path}: {message}")]
    Invalid {
        /// The file named (or `<defaults>`).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A configuration that was read but cannot be used: rules, templates, SLA
/// policies, the customer directory, a source or a transport it names.
/// The command line exits with EX_CONFIG (78) for it, as for a
/// [`ConfigError`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unusable(pub String);

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Data directory (database, outbox files, MAC key); `--data-dir` wins.
    pub data_dir: Option<PathBuf>,
    /// The support desk's identity and own addresses.
    pub desk: DeskConfig,
    /// Ticket numbers and the subject tag.
    pub tickets: TicketsConfig,
    /// Limits and switches of the intake pipeline.
    pub intake: IntakeConfig,
    /// Automatic mails (confirmations).
    pub autoreply: AutoReplyConfig,
    /// Where to find classification rules other than the embedded ones.
    pub rules: RulesConfig,
    /// Where to find templates other than the embedded ones.
    pub templates: DirConfig,
    /// How queued mail leaves.
    pub outbound: OutboundConfig,
    /// Maildirs watched by `ticketd run`.
    pub maildir: Vec<MaildirConfig>,
    /// IMAP mailboxes watched by `ticketd run` (IDLE, else polling).
    pub imap: Vec<ImapConfig>,
    /// Microsoft 365 mailboxes read through Microsoft Graph (delta query,
    /// polled), for tenants with IMAP and SMTP turned off.
    pub graph: Vec<GraphConfig>,
    /// The customer directory.
    pub customers: CustomersConfig,
    /// Monitoring alerts: severities, flap window, generic parsers.
    pub alerts: AlertsConfig,
    /// Logging.
    pub log: LogConfig,
    /// The database.
    pub database: DatabaseConfig,
    /// The `/healthz` and `/metrics` endpoint of `ticketd run`.
    pub http: HttpConfig,
    /// Service levels: the policy file, who is reminded, periodic digests.
    pub sla: SlaConfig,
    /// Staff in Discord: notifications, threads, commands, intake channel.
    pub discord: DiscordConfig,
    /// Directory of the config file; relative paths in it are resolved
    /// against this.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
    /// The file this was read from (`None`: all defaults); SIGHUP reads it
    /// again.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// The desk's identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeskConfig {
    /// Display name used as sender of automatic mails.
    pub name: String,
    /// Our own addresses: the first is the sender of automatic mails; mail
    /// from any of them is a loop and never answered.
    pub addresses: Vec<String>,
    /// Right-hand side of our Message-IDs; default: domain of the first address.
    pub message_id_domain: Option<String>,
    /// Language of customer mails: `de` or `en`.
    pub language: String,
    /// Time zone for timestamps shown to customers.
    pub timezone: String,
    /// Staff: addresses (`anna@provider.de`) or whole domains
    /// (`@provider.de`). A staff member's mail on a ticket is a staff
    /// reply (it meets the first response); it is relayed to the requester
    /// unless the requester is already among its recipients.
    pub staff: Vec<String>,
}

impl Default for DeskConfig {
    fn default() -> Self {
        DeskConfig {
            name: "Support".into(),
            addresses: vec!["support@example.com".into()],
            message_id_domain: None,
            language: "de".into(),
            timezone: "Europe/Berlin".into(),
            staff: Vec::new(),
        }
    }
}

impl DeskConfig {
    /// The sender address of automatic mails.
    pub fn from_address(&self) -> &str {
        self.addresses
            .first()
            .map(String::as_str)
            .unwrap_or("support@example.com")
    }
    /// The domain used in our Message-IDs.
    pub fn id_domain(&self) -> String {
        self.message_id_domain
            .clone()
            .unwrap_or_else(|| crate::domain::domain_of(self.from_address()))
    }
}

/// Ticket numbering.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TicketsConfig {
    /// Text before the digits of every ticket number (letters, digits, `-`).
    pub number_prefix: String,
    /// The first ticket gets this number + 1.
    pub number_start: i64,
    /// The word of the subject tag: `[Ticket#10001]`.
    pub tag: String,
    /// Severity of mail no rule matched (1–4).
    pub default_severity: u8,
}

impl Default for TicketsConfig {
    fn default() -> Self {
        TicketsConfig {
            number_prefix: String::new(),
            number_start: 10000,
            tag: "Ticket".into(),
            default_severity: 3,
        }
    }
}

/// Limits of intake.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeConfig {
    /// Attachments of one message beyond this many bytes in total are dropped
    /// (with a note on the ticket); the raw message is kept whole.
    pub max_attachment_bytes: u64,
    /// Attachments of one message beyond this count are dropped with a note.
    pub max_attachments: usize,
    /// Article bodies beyond this many bytes are cut (the raw message keeps all).
    pub max_body_bytes: usize,
    /// Messages larger than this are not taken: the MTA pipe answers a
    /// permanent 5.3.4 (the sender gets a bounce), a Maildir file or an IMAP
    /// message stays in its mailbox, `ingest FILE` reports it (exit 66).
    /// Default 50 MiB, about what common MTAs and mail providers accept.
    pub max_message_bytes: u64,
    /// Domains shared by unrelated people: a follow-up by subject tag from the
    /// same free-mail domain as the requester is not trusted.
    pub freemail_domains: Vec<String>,
    /// Messages per transaction when one process ingests many files.
    pub batch_size: usize,
    /// Mail from a sender of no known organisation: `accept` (default),
    /// `unverified` (a ticket marked so) or `reject` (no ticket; a
    /// registration notice). Per IMAP mailbox in `[imap.defaults]`.
    pub unknown_senders: crate::domain::UnknownSenders,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            max_attachment_bytes: 25 * 1024 * 1024,
            max_attachments: 1000,
            max_body_bytes: 512 * 1024,
            max_message_bytes: 50 * 1024 * 1024,
            freemail_domains: [
                "gmail.com",
                "googlemail.com",
                "outlook.com",
                "hotmail.com",
                "live.com",
                "yahoo.com",
                "icloud.com",
                "me.com",
                "aol.com",
                "gmx.de",
                "gmx.net",
                "gmx.at",
                "web.de",
                "t-online.de",
                "freenet.de",
                "posteo.de",
                "mailbox.org",
                "proton.me",
                "protonmail.com",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            batch_size: 256,
            unknown_senders: crate::domain::UnknownSenders::Accept,
        }
    }
}

/// Automatic mails.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoReplyConfig {
    /// Send a confirmation for every new ticket.
    pub confirm: bool,
    /// At most this many automatic mails per recipient address and hour.
    pub max_per_recipient_per_hour: u32,
}

impl Default for AutoReplyConfig {
    fn default() -> Self {
        AutoReplyConfig {
            confirm: true,
            max_per_recipient_per_hour: 10,
        }
    }
}

/// `[rules]`: the desk's rule files.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// The directory of `*.toml` rule files; relative to the config file.
    pub dir: Option<PathBuf>,
    /// Keep the embedded default files besides the directory's (a file of
    /// the same name in the directory replaces the default one); without
    /// it the directory replaces the defaults completely.
    pub defaults: bool,
}

/// A directory that overrides embedded files.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DirConfig {
    /// The directory; relative to the config file.
    pub dir: Option<PathBuf>,
}

/// How mail leaves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// `file` (default: `.eml` files in the data directory) or `smtp`.
    pub transport: Transport,
    /// Directory of the file transport; default `<data_dir>/sent`.
    pub file_dir: Option<PathBuf>,
    /// SMTP settings, used when `transport = "smtp"`.
    pub smtp: SmtpConfig,
    /// Microsoft Graph settings, used when `transport = "graph"`.
    pub graph: OutboundGraphConfig,
    /// Seconds between outbox polls when nothing woke the worker.
    pub poll_seconds: f64,
    /// Give up on a message after this many hours of temporary failures.
    pub retry_hours: f64,
    /// First delay after a temporary failure; it doubles up to one hour.
    pub retry_base_seconds: f64,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            transport: Transport::File,
            file_dir: None,
            smtp: SmtpConfig::default(),
            graph: OutboundGraphConfig::default(),
            poll_seconds: 0.5,
            retry_hours: 72.0,
            retry_base_seconds: 30.0,
        }
    }
}

/// The outbound transport.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Write `.eml` files.
    File,
    /// Deliver over SMTP.
    Smtp,
    /// Send through Microsoft Graph (`sendMail` with the MIME), as the
    /// `[[graph]]` mailbox `[outbound.graph] mailbox` names.
    Graph,
}

/// `[outbound.graph]`: which `[[graph]]` mailbox sends.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundGraphConfig {
    /// The `name` of a `[[graph]]` entry: mail is sent as that mailbox,
    /// with its token source.
    pub mailbox: Option<String>,
}

/// A Microsoft 365 mailbox read through Microsoft Graph (`[[graph]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    /// Name in logs, metrics, the cursor table and `ticketd auth`.
    pub name: toml::Spanned<String>,
    /// The mailbox: its user principal name (support@contoso.com) or its
    /// object id.
    pub mailbox: toml::Spanned<String>,
    /// The folder read: a well-known name (`Inbox`, `JunkEmail`, …) or the
    /// display name of a folder at the top of the mailbox.
    #[serde(default = "default_graph_folder")]
    pub folder: String,
    /// Where stored messages are moved (a top-level folder, created if
    /// missing).
    #[serde(default = "default_processed")]
    pub processed_folder: String,
    /// Seconds between delta rounds (Graph has no IDLE).
    #[serde(default = "default_graph_poll")]
    pub poll_seconds: u64,
    /// The Graph endpoint; plain http only on loopback (tests).
    #[serde(default = "default_graph_base")]
    pub base_url: toml::Spanned<String>,
    /// Per-mailbox defaults for the pipeline.
    #[serde(default)]
    pub defaults: SourceDefaultsConfig,
    /// The OAuth 2.0 client (app registration) the tokens come from.
    pub oauth: OAuthConfig,
}

fn default_graph_folder() -> String {
    "Inbox".into()
}
fn default_graph_poll() -> u64 {
    30
}
fn default_graph_base() -> toml::Spanned<String> {
    toml::Spanned::new(0..0, GRAPH_BASE_URL.to_string())
}

/// Microsoft Graph's v1.0 endpoint.
pub const GRAPH_BASE_URL: &str = "https://graph.microsoft.com/v1.0";
/// Microsoft's app-only scope for Microsoft Graph (the application
/// permissions the app was granted, e.g. Mail.ReadWrite and Mail.Send).
pub const GRAPH_APP_SCOPE: &str = "https://graph.microsoft.com/.default";
/// Microsoft's delegated scopes for Graph mail of a shared mailbox, with a
/// refresh token.
pub const GRAPH_DELEGATED_SCOPE: &str = "https://graph.microsoft.com/Mail.ReadWrite.Shared https://graph.microsoft.com/Mail.Send.Shared offline_access";

impl GraphConfig {
    /// The mailbox's name in logs, metrics and the database.
    pub fn label(&self) -> &str {
        self.name.get_ref()
    }

    /// The base URL without a trailing slash.
    pub fn base(&self) -> &str {
        self.base_url.get_ref().trim_end_matches('/')
    }
}

/// SMTP relay settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Relay host.
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// `none` (loopback only), `starttls` or `tls`.
    pub tls: SmtpTls,
    /// AUTH user, if any.
    pub user: Option<String>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (e.g. a systemd credential).
    pub password_file: Option<PathBuf>,
    /// A PEM file of extra trust anchors (a private CA) for `starttls` and
    /// `tls`; the public web roots are trusted as well.
    pub ca_file: Option<PathBuf>,
    /// `password` (default) or `oauth2` (SASL XOAUTH2 with a token from
    /// `[outbound.smtp.oauth]`).
    pub auth: MailAuth,
    /// The OAuth 2.0 client, for `auth = "oauth2"`.
    pub oauth: Option<OAuthConfig>,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: "127.0.0.1".into(),
            port: 25,
            tls: SmtpTls::None,
            user: None,
            password_env: None,
            password_file: None,
            ca_file: None,
            auth: MailAuth::Password,
            oauth: None,
        }
    }
}

/// TLS mode of the SMTP relay.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text; only for loopback relays.
    None,
    /// STARTTLS upgrade (port 587).
    Starttls,
    /// Implicit TLS (port 465).
    Tls,
}

/// A Maildir to watch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaildirConfig {
    /// The Maildir (containing `new/`, `cur/`, `tmp/`).
    pub path: PathBuf,
}

/// Monitoring alerts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// A problem this soon after its incident's recovery re-opens the ticket.
    pub flap_window_minutes: u64,
    /// A recovery resolves its ticket only after this long without the
    /// problem coming back (0: at once).
    pub recovery_hold_minutes: u64,
    /// While a host is DOWN (its ticket open), its services' problems join
    /// the host's ticket instead of opening their own.
    pub join_host_down: bool,
    /// Severity of CRITICAL/DOWN on a host the customer marks critical.
    pub critical_host_severity: u8,
    /// Severity of CRITICAL/DOWN elsewhere.
    pub critical_severity: u8,
    /// Severity of WARNING/UNKNOWN.
    pub warning_severity: u8,
    /// Parsers for systems without a built-in one (regexes with named
    /// groups `host`, `service`, `state`).
    pub generic: Vec<crate::ingest::alerts::GenericAlertConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            flap_window_minutes: 30,
            recovery_hold_minutes: 0,
            join_host_down: true,
            critical_host_severity: 1,
            critical_severity: 2,
            warning_severity: 3,
            generic: Vec::new(),
        }
    }
}

/// Service levels: which policies apply, and who hears of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaConfig {
    /// Whether SLA clocks run at all.
    pub enabled: bool,
    /// The policy file (plans × severities, calendars, reminder stages);
    /// default: the embedded `sla/policies.toml`.
    pub policies: Option<PathBuf>,
    /// Who each audience a reminder stage names is: `mail:ADDRESS` or
    /// `chat:CHANNEL` entries. An audience without entries is only recorded
    /// on the ticket.
    pub audiences: std::collections::BTreeMap<String, Vec<String>>,
    /// Periodic digests of open tickets and breaches.
    pub digest: Vec<DigestConfig>,
    /// The time zone cron expressions are read in (default: the desk's).
    pub timezone: Option<String>,
}

impl Default for SlaConfig {
    fn default() -> Self {
        SlaConfig {
            enabled: true,
            policies: None,
            audiences: std::collections::BTreeMap::new(),
            digest: Vec::new(),
            timezone: None,
        }
    }
}

/// A periodic digest: when, and to whom.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestConfig {
    /// Name in logs and on the timer row; default `digest`.
    #[serde(default)]
    pub name: Option<String>,
    /// A crontab line (5 fields, or cron's 6 with seconds first), e.g.
    /// `0 8 * * Mon-Fri`; numeric weekdays count as in Unix cron (1 = Monday).
    pub cron: String,
    /// Audiences (of `[sla.audiences]`) that get it.
    pub to: Vec<String>,
}

impl DigestConfig {
    /// The digest's name.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| "digest".to_string())
    }
}

/// The Discord bot: where ticket notifications go, who may act, and the
/// optional intake channel. Channels are named here and referred to by
/// name (`chat:NAME` in `[sla.audiences]`, `notify`, `intake`, the
/// severity routes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscordConfig {
    /// Whether `ticketd run` connects to Discord.
    pub enabled: bool,
    /// The environment variable holding the bot token (default
    /// `TICKETD_DISCORD_TOKEN`, used when `token_file` is unset).
    pub token_env: Option<String>,
    /// A file holding the bot token (mode 0600).
    pub token_file: Option<PathBuf>,
    /// The guild (server) id the desk's channels are in.
    pub guild: u64,
    /// Role ids whose members may act on tickets. Empty: nobody may.
    pub staff_roles: Vec<u64>,
    /// What starts a typed command, e.g. `!t reply …`.
    pub prefix: String,
    /// Register the `/ticket` slash command in the guild at start.
    pub slash_commands: bool,
    /// The channel (by name) ticket notifications go to by default.
    pub notify: Option<String>,
    /// Severity ("1" … "4") → channel name, overriding `notify`.
    pub severity: std::collections::BTreeMap<String, String>,
    /// The channel (by name) where customers' top-level messages open
    /// tickets; unset: no intake from Discord.
    pub intake: Option<String>,
    /// The named channels.
    pub channels: std::collections::BTreeMap<String, DiscordChannel>,
    /// The Discord API's base address. Only for tests against a local fake
    /// Discord (`http://127.0.0.1:PORT`); it turns serenity's rate limiter
    /// off, which a proxy needs.
    pub api_base: Option<String>,
    /// How long a chat post is retried before it is marked failed.
    pub retry_hours: u64,
    /// The first retry's delay in seconds; each further one doubles it
    /// (at most an hour).
    pub retry_base_seconds: f64,
}

impl Default for DiscordConfig {
    fn default() -> Self {
        DiscordConfig {
            enabled: false,
            token_env: None,
            token_file: None,
            guild: 0,
            staff_roles: Vec::new(),
            prefix: "!t".to_string(),
            slash_commands: true,
            notify: None,
            severity: std::collections::BTreeMap::new(),
            intake: None,
            channels: std::collections::BTreeMap::new(),
            api_base: None,
            retry_hours: 24,
            retry_base_seconds: 2.0,
        }
    }
}

/// A Discord channel the desk posts to or reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordChannel {
    /// The channel's id (Developer Mode → Copy Channel ID).
    pub id: u64,
    /// A role mentioned in this channel's new-ticket posts and breach
    /// reminders (e.g. the on-call role).
    #[serde(default)]
    pub mention: Option<u64>,
}

impl DiscordConfig {
    /// The channel a ticket of severity `level` is announced in.
    pub fn channel_for(&self, level: u8) -> Option<&str> {
        self.severity
            .get(&level.to_string())
            .or(self.notify.as_ref())
            .map(String::as_str)
    }

    /// The bot token, from `token_file` or the environment.
    pub fn token(&self, resolve: impl Fn(&Path) -> PathBuf) -> Result<String, String> {
        let env = if self.token_file.is_some() {
            None
        } else {
            Some(
                self.token_env
                    .clone()
                    .unwrap_or_else(|| "TICKETD_DISCORD_TOKEN".to_string()),
            )
        };
        let file = self.token_file.as_ref().map(|f| resolve(f));
        let token = read_secret(env.as_deref(), file.as_deref(), "discord token")?;
        if token.trim().is_empty() {
            return Err("discord token is empty".into());
        }
        Ok(token.trim().to_string())
    }

    fn validate(&self) -> Result<(), String> {
        let known = |what: &str, name: &str| {
            if self.channels.contains_key(name) {
                Ok(())
            } else {
                Err(format!(
                    "discord.{what}: channel {name:?} is not defined in [discord.channels]"
                ))
            }
        };
        if let Some(n) = &self.notify {
            known("notify", n)?;
        }
        if let Some(n) = &self.intake {
            known("intake", n)?;
        }
        for (level, name) in &self.severity {
            if !matches!(level.as_str(), "1" | "2" | "3" | "4") {
                return Err(format!(
                    "discord.severity: {level:?} is not a severity (1–4)"
                ));
            }
            known(&format!("severity.{level}"), name)?;
        }
        for (name, c) in &self.channels {
            if c.id == 0 {
                return Err(format!("discord.channels.{name}: id must be a channel id"));
            }
        }
        if self.prefix.trim().is_empty() || self.prefix.chars().any(char::is_whitespace) {
            return Err("discord.prefix must be a word without blanks, e.g. \"!t\"".into());
        }
        if self.enabled {
            if self.guild == 0 {
                return Err("discord.guild must be the guild (server) id".into());
            }
            if self.notify.is_none() && self.severity.is_empty() {
                return Err("discord: set notify (the channel ticket notifications go to)".into());
            }
        }
        if !(self.retry_base_seconds > 0.0 && self.retry_base_seconds <= 3600.0) {
            return Err("discord.retry_base_seconds must be between 0 and 3600".into());
        }
        if let Some(b) = &self.api_base {
            if !(b.starts_with("http://") || b.starts_with("https://")) {
                return Err(format!("discord.api_base {b:?} is not an http(s) address"));
            }
        }
        Ok(())
    }
}

/// Where the customer directory lives.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CustomersConfig {
    /// Directory of `*.toml` files; default `<data_dir>/customers`.
    pub dir: Option<PathBuf>,
    /// The account manager of senders of no registered organisation
    /// (prospects): where a route rule's `account-manager` forwards their
    /// mail. Unset: such mail is handled as a support request.
    pub default_account_manager: Option<String>,
}

/// An IMAP mailbox to take mail from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    /// Name in logs, metrics and the cursor table; default `user@host`.
    #[serde(default)]
    pub name: Option<String>,
    /// Server host name (also the name its certificate must carry).
    pub host: String,
    /// Port; default 993 for `tls = "implicit"`, else 143.
    #[serde(default)]
    pub port: Option<u16>,
    /// `implicit` (IMAPS, default), `starttls`, or `plain` (loopback only).
    #[serde(default)]
    pub tls: ImapTls,
    /// A PEM file of extra trust anchors (a private CA); the public web
    /// roots are trusted as well.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Login name.
    pub user: String,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (e.g. a systemd credential).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Folder to take mail from.
    #[serde(default = "default_inbox")]
    pub folder: String,
    /// Where a stored message is moved (created if missing); empty: leave
    /// it in `folder`, flagged \Seen (the UID cursor keeps it from being
    /// taken twice).
    #[serde(default = "default_processed")]
    pub processed_folder: String,
    /// Where a quarantined message is moved (created if missing); empty:
    /// like `processed_folder`.
    #[serde(default = "default_quarantine")]
    pub quarantine_folder: String,
    /// Use IDLE when the server offers it (else poll).
    #[serde(default = "default_true")]
    pub idle: bool,
    /// Seconds before an IDLE is re-issued (at most 1,500: RFC 2177 servers
    /// may drop an idle client after 30 minutes).
    #[serde(default = "default_idle_seconds")]
    pub idle_seconds: u64,
    /// Seconds between polls when the server has no IDLE.
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: u64,
    /// Messages fetched and stored per round (memory stays bounded in a
    /// burst).
    #[serde(default = "default_imap_batch")]
    pub batch_size: usize,
    /// Per-mailbox defaults for the pipeline.
    #[serde(default)]
    pub defaults: SourceDefaultsConfig,
    /// `password` (default) or `oauth2` (SASL XOAUTH2 with a token from
    /// `[imap.oauth]`).
    #[serde(default)]
    pub auth: MailAuth,
    /// The OAuth 2.0 client, for `auth = "oauth2"`.
    #[serde(default)]
    pub oauth: Option<OAuthConfig>,
}

fn default_inbox() -> String {
    "INBOX".into()
}
fn default_processed() -> String {
    "Processed".into()
}
fn default_quarantine() -> String {
    "Quarantine".into()
}
fn default_true() -> bool {
    true
}
fn default_idle_seconds() -> u64 {
    300
}
fn default_poll_seconds() -> u64 {
    60
}
fn default_imap_batch() -> usize {
    100
}

impl ImapConfig {
    /// The mailbox's name in logs, metrics and the database.
    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}@{}", self.user, self.host))
    }

    /// The port, defaulted by the TLS mode.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            ImapTls::Implicit => 993,
            ImapTls::Starttls | ImapTls::Plain => 143,
        })
    }
}

/// TLS mode of an IMAP connection.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImapTls {
    /// TLS from the first byte (IMAPS, port 993).
    #[default]
    Implicit,
    /// Plain connection upgraded with STARTTLS (port 143).
    Starttls,
    /// No TLS: only for a server on loopback.
    Plain,
}

/// Defaults a source gives the messages it delivers, e.g. a monitoring
/// mailbox whose senders must never get a confirmation.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SourceDefaultsConfig {
    /// Send confirmations for new tickets from this source (default: as
    /// `autoreply.confirm`).
    pub confirm: Option<bool>,
    /// Severity when no rule matches (default: `tickets.default_severity`).
    pub default_severity: Option<u8>,
    /// Mail from unknown senders (default: `intake.unknown_senders`).
    pub unknown_senders: Option<crate::domain::UnknownSenders>,
    /// Language of mails to this mailbox's customers (`de`, `en`) when the
    /// customer directory names none; before detection from the mail.
    pub language: Option<String>,
}

/// How a mailbox or the SMTP relay logs in.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MailAuth {
    /// A password from `password_env` / `password_file`.
    #[default]
    Password,
    /// An OAuth 2.0 access token (SASL XOAUTH2), from the `oauth` table.
    Oauth2,
}

/// Whose identity platform issues the tokens.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OAuthProvider {
    /// Microsoft Entra ID (Exchange Online): endpoints from `tenant`.
    Microsoft365,
    /// Google Workspace / Gmail.
    Google,
    /// Any RFC 6749 server: `token_url`, `scope` and the flow's URL given.
    Generic,
}

/// The OAuth 2.0 grant that gets the first token.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OAuthFlow {
    /// RFC 6749 §4.4, app-only: no person signs in; a fresh token whenever
    /// the last one expires, no refresh token.
    ClientCredentials,
    /// RFC 8628: `ticketd auth login NAME` shows a code to enter in a
    /// browser anywhere; the refresh token is stored.
    DeviceCode,
    /// RFC 6749 §4.1 with PKCE on a loopback redirect.
    AuthorizationCode,
    /// RFC 7523 §2.1, a Google service account with domain-wide
    /// delegation acting as `subject`: a JWT signed with the account's key
    /// for each token, no refresh token, no login.
    ServiceAccount,
}

impl OAuthFlow {
    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthFlow::ClientCredentials => "client_credentials",
            OAuthFlow::DeviceCode => "device_code",
            OAuthFlow::AuthorizationCode => "authorization_code",
            OAuthFlow::ServiceAccount => "service_account",
        }
    }

    /// Whether the flow lives on a stored refresh token (device code,
    /// authorization code); client credentials and service accounts get
    /// each token afresh from configured credentials.
    pub fn has_refresh_token(self) -> bool {
        matches!(self, OAuthFlow::DeviceCode | OAuthFlow::AuthorizationCode)
    }
}

/// The `[imap.oauth]` / `[outbound.smtp.oauth]` table. The client secret
/// itself is never here, only where to read it; this is what `Debug`
/// shows.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// `microsoft365`, `google` or `generic`.
    pub provider: toml::Spanned<OAuthProvider>,
    /// Microsoft: the directory (tenant) id or a verified domain; for
    /// device code also `organizations`.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The application (client) id; not needed with `flow =
    /// "service_account"` (the key file names it).
    #[serde(default)]
    pub client_id: String,
    /// File holding the client secret (e.g. a systemd credential).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Entra ID certificate credentials instead of a secret: the PEM
    /// certificate uploaded to the app registration (and its private key,
    /// when `client_key_file` is not given).
    #[serde(default)]
    pub client_certificate_file: Option<toml::Spanned<PathBuf>>,
    /// The certificate's RSA private key (PEM, unencrypted).
    #[serde(default)]
    pub client_key_file: Option<toml::Spanned<PathBuf>>,
    /// `flow = "service_account"`: the JSON key Google gives for the
    /// service account.
    #[serde(default)]
    pub service_account_key_file: Option<toml::Spanned<PathBuf>>,
    /// `flow = "service_account"`: the Workspace user the service account
    /// acts as (the mailbox's address).
    #[serde(default)]
    pub subject: Option<toml::Spanned<String>>,
    /// `client_credentials`, `device_code`, `authorization_code` or
    /// `service_account`.
    pub flow: toml::Spanned<OAuthFlow>,
    /// Token endpoint (generic; overrides a preset).
    #[serde(default)]
    pub token_url: Option<String>,
    /// Device authorization endpoint (generic; overrides a preset).
    #[serde(default)]
    pub device_authorization_url: Option<String>,
    /// Authorization endpoint (generic; overrides a preset).
    #[serde(default)]
    pub authorization_url: Option<String>,
    /// Space-separated scopes (generic; overrides a preset).
    #[serde(default)]
    pub scope: Option<String>,
    /// Authorization code flow: the loopback port `ticketd auth login`
    /// listens on for the browser's redirect (default: any free port); a
    /// fixed one suits SSH port forwarding.
    #[serde(default)]
    pub redirect_port: Option<u16>,
}

/// Microsoft's app-only scope for IMAP and SMTP (Exchange Online).
pub const MS_APP_SCOPE: &str = "https://outlook.office365.com/.default";
/// Microsoft's delegated scopes for IMAP and SMTP, with a refresh token
/// (`offline_access`); the resource as Microsoft's "Authenticate an IMAP,
/// POP or SMTP connection using OAuth" page writes it.
pub const MS_DELEGATED_SCOPE: &str = "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send offline_access";
/// Google's scope for IMAP and SMTP (the only one Gmail's IMAP accepts).
pub const GOOGLE_MAIL_SCOPE: &str = "https://mail.google.com/";

/// The endpoints and scope an [`OAuthConfig`] resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthEndpoints {
    /// Token endpoint.
    pub token_url: String,
    /// Device authorization endpoint (device code flow).
    pub device_authorization_url: Option<String>,
    /// Authorization endpoint (authorization code flow).
    pub authorization_url: Option<String>,
    /// Space-separated scopes ("" for none).
    pub scope: String,
}

impl OAuthConfig {
    /// The flow.
    pub fn flow(&self) -> OAuthFlow {
        *self.flow.get_ref()
    }

    /// The provider.
    pub fn provider(&self) -> OAuthProvider {
        *self.provider.get_ref()
    }

    /// Checks the combination of provider, flow and keys, and resolves the
    /// presets. The message does not name a secret, only keys.
    pub fn endpoints(&self) -> Result<OAuthEndpoints, String> {
        let flow = self.flow();
        if self.client_id.trim().is_empty() && flow != OAuthFlow::ServiceAccount {
            return Err("oauth.client_id is empty".into());
        }
        if self.client_secret_env.is_some() && self.client_secret_file.is_some() {
            return Err("oauth: give client_secret_env or client_secret_file, not both".into());
        }
        let has_secret = self.client_secret_env.is_some() || self.client_secret_file.is_some();
        let has_certificate = self.client_certificate_file.is_some();
        if has_secret && has_certificate {
            return Err("oauth.client_certificate_file: give a client secret or a certificate, not both (remove client_secret_file / client_secret_env)".into());
        }
        if self.client_key_file.is_some() && !has_certificate {
            return Err("oauth.client_key_file: needs client_certificate_file (the certificate uploaded to the app registration)".into());
        }
        if has_certificate && flow == OAuthFlow::DeviceCode {
            return Err("oauth.client_certificate_file: the device code flow polls the token endpoint with one request body, so a per-request client assertion cannot be sent; use flow = \"authorization_code\" or \"client_credentials\" with a certificate".into());
        }
        if flow == OAuthFlow::ClientCredentials && !has_secret && !has_certificate {
            return Err(
                "oauth: flow = \"client_credentials\" needs client_secret_file, client_secret_env or client_certificate_file"
                    .into(),
            );
        }
        if flow == OAuthFlow::ServiceAccount {
            if has_secret || has_certificate {
                return Err("oauth: flow = \"service_account\" signs with the service account's key: it takes no client secret or certificate".into());
            }
            if self.service_account_key_file.is_none() {
                return Err("oauth: flow = \"service_account\" needs service_account_key_file (the JSON key of the service account)".into());
            }
            match self.subject.as_ref().map(|s| s.get_ref().trim()) {
                None | Some("") => return Err("oauth: flow = \"service_account\" needs subject (the Workspace user whose mailbox is read, e.g. \"support@example.com\")".into()),
                Some(s) if !s.contains('@') => return Err(format!("oauth.subject {s:?} is not an email address")),
                Some(_) => {}
            }
        } else {
            if self.service_account_key_file.is_some() {
                return Err(
                    "oauth.service_account_key_file: only for flow = \"service_account\"".into(),
                );
            }
            if self.subject.is_some() {
                return Err("oauth.subject: only for flow = \"service_account\"".into());
            }
        }
        let (token, device, authorize, scope) = match self.provider() {
            OAuthProvider::Microsoft365 => {
                let tenant = match self.tenant.as_deref().map(str::trim) {
                    Some(t) if !t.is_empty() => t,
                    _ => {
                        return Err("oauth: provider = \"microsoft365\" needs tenant (the directory id or a verified domain, e.g. \"contoso.onmicrosoft.com\")".into())
                    }
                };
                if !tenant
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
                {
                    return Err(format!(
                        "oauth.tenant {tenant:?} is neither a directory id nor a domain"
                    ));
                }
                if flow == OAuthFlow::ServiceAccount {
                    return Err("oauth: flow = \"service_account\" is Google's; for Microsoft 365 app-only use flow = \"client_credentials\" (with a secret or client_certificate_file)".into());
                }
                if flow == OAuthFlow::ClientCredentials
                    && matches!(tenant, "common" | "organizations" | "consumers")
                {
                    return Err(format!(
                        "oauth.tenant = {tenant:?}: the client credentials flow needs the tenant's directory id or domain"
                    ));
                }
                let base = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0");
                (
                    format!("{base}/token"),
                    Some(format!("{base}/devicecode")),
                    Some(format!("{base}/authorize")),
                    match flow {
                        OAuthFlow::ClientCredentials => MS_APP_SCOPE,
                        _ => MS_DELEGATED_SCOPE,
                    }
                    .to_string(),
                )
            }
            OAuthProvider::Google => {
                match flow {
                    OAuthFlow::ClientCredentials => return Err("oauth: Google has no client credentials grant for Gmail; use flow = \"service_account\" (a service account with domain-wide delegation) or \"authorization_code\"".into()),
                    OAuthFlow::DeviceCode => return Err(format!("oauth: Google's device flow does not allow the Gmail scope {GOOGLE_MAIL_SCOPE} (IMAP and SMTP need it): use flow = \"authorization_code\"")),
                    OAuthFlow::AuthorizationCode | OAuthFlow::ServiceAccount => {}
                }
                if has_certificate {
                    return Err("oauth.client_certificate_file: certificate credentials are Entra ID's; for Google use flow = \"service_account\" with service_account_key_file".into());
                }
                (
                    "https://oauth2.googleapis.com/token".to_string(),
                    None,
                    Some("https://accounts.google.com/o/oauth2/v2/auth".to_string()),
                    GOOGLE_MAIL_SCOPE.to_string(),
                )
            }
            OAuthProvider::Generic => {
                if self.tenant.is_some() {
                    return Err("oauth.tenant is only for provider = \"microsoft365\"".into());
                }
                let Some(token) = self.token_url.clone() else {
                    return Err("oauth: provider = \"generic\" needs token_url".into());
                };
                if flow == OAuthFlow::DeviceCode && self.device_authorization_url.is_none() {
                    return Err("oauth: flow = \"device_code\" with provider = \"generic\" needs device_authorization_url".into());
                }
                if flow == OAuthFlow::AuthorizationCode && self.authorization_url.is_none() {
                    return Err("oauth: flow = \"authorization_code\" with provider = \"generic\" needs authorization_url".into());
                }
                (token, None, None, String::new())
            }
        };
        if self.redirect_port.is_some() && flow != OAuthFlow::AuthorizationCode {
            return Err("oauth.redirect_port is only for flow = \"authorization_code\"".into());
        }
        if self.provider() != OAuthProvider::Microsoft365
            && self.provider() != OAuthProvider::Generic
            && self.tenant.is_some()
        {
            return Err("oauth.tenant is only for provider = \"microsoft365\"".into());
        }
        let ep = OAuthEndpoints {
            token_url: self.token_url.clone().unwrap_or(token),
            device_authorization_url: self.device_authorization_url.clone().or(device),
            authorization_url: self.authorization_url.clone().or(authorize),
            scope: self.scope.clone().unwrap_or(scope),
        };
        for (key, url) in [
            ("token_url", Some(&ep.token_url)),
            (
                "device_authorization_url",
                ep.device_authorization_url.as_ref(),
            ),
            ("authorization_url", ep.authorization_url.as_ref()),
        ] {
            if let Some(url) = url {
                check_endpoint_url(key, url).map_err(|e| format!("oauth.{e}"))?;
            }
        }
        Ok(ep)
    }

    /// The certificate credential (`client_certificate_file`, with
    /// `client_key_file` or the key in the same file), read and checked
    /// (the key is the certificate's); `None` when not configured. The
    /// message names the key and the file, never key material.
    pub fn client_certificate(
        &self,
        resolve: impl Fn(&Path) -> PathBuf,
    ) -> Result<Option<crate::oauth::assertion::CertificateCredential>, String> {
        let Some(cert) = &self.client_certificate_file else {
            return Ok(None);
        };
        let key = self.client_key_file.as_ref().map(|k| resolve(k.get_ref()));
        crate::oauth::assertion::CertificateCredential::load(
            &resolve(cert.get_ref()),
            key.as_deref(),
        )
        .map(Some)
    }

    /// The service account key and the user it acts as, for `flow =
    /// "service_account"`; `None` for other flows. When `client_id` is
    /// given it must be the key's (what delegation was granted to).
    pub fn service_account(
        &self,
        resolve: impl Fn(&Path) -> PathBuf,
    ) -> Result<Option<(crate::oauth::assertion::ServiceAccountKey, String)>, String> {
        let (Some(file), Some(subject)) = (&self.service_account_key_file, &self.subject) else {
            return Ok(None);
        };
        let key = crate::oauth::assertion::ServiceAccountKey::load(&resolve(file.get_ref()))?;
        let configured = self.client_id.trim();
        if !configured.is_empty() && key.client_id.as_deref() != Some(configured) {
            return Err(format!(
                "service_account_key_file {}: its client_id is not oauth.client_id {configured:?} (the id domain-wide delegation was granted to)",
                resolve(file.get_ref()).display()
            ));
        }
        Ok(Some((key, subject.get_ref().trim().to_string())))
    }

    /// Where in the configuration text an error about this table is best
    /// shown: the key its message names, else `flow` or `provider`.
    fn span_for(&self, message: &str) -> std::ops::Range<usize> {
        let keyed = [
            (
                "client_certificate_file",
                self.client_certificate_file.as_ref().map(|s| s.span()),
            ),
            (
                "client_key_file",
                self.client_key_file.as_ref().map(|s| s.span()),
            ),
            (
                "service_account_key_file",
                self.service_account_key_file.as_ref().map(|s| s.span()),
            ),
            ("subject", self.subject.as_ref().map(|s| s.span())),
        ];
        for (key, span) in keyed {
            if let Some(span) = span {
                if message.contains(&format!("oauth.{key}")) {
                    return span;
                }
            }
        }
        if message.contains("flow") {
            self.flow.span()
        } else {
            self.provider.span()
        }
    }

    /// The client secret, from the file (resolved by `resolve`) or the
    /// environment; `None` when neither is configured (a public client).
    pub fn client_secret(
        &self,
        resolve: impl Fn(&Path) -> PathBuf,
    ) -> Result<Option<String>, String> {
        if self.client_secret_env.is_none() && self.client_secret_file.is_none() {
            return Ok(None);
        }
        let file = self.client_secret_file.as_deref().map(resolve);
        let secret = read_secret(
            self.client_secret_env.as_deref(),
            file.as_deref(),
            "oauth client secret",
        )?;
        if secret.is_empty() {
            return Err("oauth: the client secret is empty".into());
        }
        Ok(Some(secret))
    }
}

/// Checks an endpoint's URL: http(s), and plain http only on loopback
/// (client secrets, assertions and tokens would otherwise cross the network
/// in clear text). The message starts with `key`.
pub fn check_endpoint_url(key: &str, url: &str) -> Result<(), String> {
    let host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .map(|r| r.split(['/', '?']).next().unwrap_or(""));
    match host {
        None | Some("") => Err(format!("{key} {url:?} is not an http(s) URL")),
        Some(h)
            if url.starts_with("http://")
                && !is_loopback(h.rsplit_once(':').map_or(h, |(a, _)| a)) =>
        {
            Err(format!(
                "{key}: plain http is only allowed on loopback, use https"
            ))
        }
        _ => Ok(()),
    }
}

/// One configured OAuth account: its key in the grant table
/// (`imap:NAME`, `smtp`), the name `ticketd auth login` takes and its
/// table.
#[derive(Debug, Clone)]
pub struct OAuthAccount<'a> {
    /// Key in the `oauth_grants` table.
    pub key: String,
    /// Name for `ticketd auth login` (the mailbox name, or `smtp`).
    pub name: String,
    /// The login user (the mailbox address for XOAUTH2).
    pub user: Option<String>,
    /// The settings.
    pub oauth: &'a OAuthConfig,
}

/// Reads a password from the environment variable or the file named, for
/// `what` (a config section, in messages). A file's trailing newline is not
/// part of the password.
pub fn read_secret(env: Option<&str>, file: Option<&Path>, what: &str) -> Result<String, String> {
    if let Some(var) = env {
        std::env::var(var).map_err(|_| format!("{what}: environment variable {var} is not set"))
    } else if let Some(file) = file {
        Ok(std::fs::read_to_string(file)
            .map_err(|e| format!("{what}: cannot read {}: {e}", file.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_string())
    } else {
        Err(format!("{what} needs password_env or password_file"))
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` for JSON lines; otherwise human-readable.
    pub format: Option<String>,
}

/// The database.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite:` URL; default `<data_dir>/ticketd.db`.
    pub url: Option<String>,
}

/// The HTTP endpoint of `ticketd run` (`GET /healthz`, `GET /metrics`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `IP:port` to listen on; `""` disables the endpoint. It has no
    /// authentication: keep it on loopback or behind a proxy.
    pub listen: String,
    /// `/healthz` fails (503) when a configured mailbox has not synced
    /// successfully for longer than this.
    pub max_sync_age_seconds: u64,
    /// `/healthz` fails (503) while an IMAP mailbox has had no connection
    /// for longer than this (a reconnect after a server restart fits in
    /// it); `ticketd_mailbox_connected` drops to 0 at once regardless.
    pub disconnected_grace_seconds: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9187".into(),
            max_sync_age_seconds: 900,
            disconnected_grace_seconds: 60,
        }
    }
}

impl HttpConfig {
    /// The address to listen on, or `None` when the endpoint is disabled.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        let text = self.listen.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            format!(
                "http.listen: {:?} is not an IP address with a port like \"127.0.0.1:9187\" (\"\" disables the endpoint)",
                self.listen
            )
        })
    }

    /// A warning when the endpoint listens beyond loopback: it has no
    /// authentication, so anyone who reaches the port sees the metrics
    /// (mailbox names, queue sizes). `None` for loopback or disabled.
    pub fn exposure_warning(&self) -> Option<String> {
        let addr = self.listen_addr().ok().flatten()?;
        (!addr.ip().is_loopback()).then(|| {
            format!(
                "http.listen = {:?} is not a loopback address: /healthz and /metrics have no authentication and answer anyone who reaches {addr}; keep it on 127.0.0.1 or put a firewall or an authenticating proxy in front",
                self.listen
            )
        })
    }

    /// How long a mailbox may go without a successful sync.
    pub fn max_sync_age(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.max_sync_age_seconds)
    }

    /// How long a mailbox may be disconnected before `/healthz` fails.
    pub fn disconnected_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.disconnected_grace_seconds)
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Config::parse_str(&text, path)?;
        cfg.base_dir = path.parent().map(Path::to_path_buf);
        cfg.path = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().to_string(),
            }
        })?;
        let mut cfg = cfg;
        cfg.graph_scopes();
        cfg.validate(path)?;
        cfg.validate_graph(text, path)?;
        cfg.validate_oauth(text, path)?;
        Ok(cfg)
    }

    /// A `[graph.oauth]` table without `scope` asks Microsoft for Graph's
    /// scope, not the Exchange (IMAP/SMTP) one the preset gives.
    fn graph_scopes(&mut self) {
        for g in &mut self.graph {
            if g.oauth.scope.is_none() && g.oauth.provider() == OAuthProvider::Microsoft365 {
                g.oauth.scope = Some(
                    match g.oauth.flow() {
                        OAuthFlow::ClientCredentials => GRAPH_APP_SCOPE,
                        _ => GRAPH_DELEGATED_SCOPE,
                    }
                    .to_string(),
                );
            }
        }
    }

    /// Checks the `[[graph]]` mailboxes and `[outbound.graph]`; an error
    /// names the line of the entry's `name` (or of the key at fault).
    fn validate_graph(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let at = |span: std::ops::Range<usize>, message: String| {
            let (line, column) = line_col(text, span.start);
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let imap: std::collections::HashSet<String> = self.imap.iter().map(|m| m.label()).collect();
        let mut names = std::collections::HashSet::new();
        for g in &self.graph {
            let name = g.label();
            let bad = |what: &str| at(g.name.span(), format!("graph {name:?}: {what}"));
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
            {
                return Err(bad(
                    "name must be a non-empty word of letters, digits, '-', '_', '.', '@'",
                ));
            }
            if !names.insert(name) || imap.contains(name) {
                return Err(bad(
                    "another [[graph]] or [[imap]] mailbox has this name; give each a distinct name",
                ));
            }
            let mailbox = g.mailbox.get_ref();
            if mailbox.is_empty()
                || mailbox
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#'))
            {
                return Err(at(
                    g.mailbox.span(),
                    format!("graph {name:?}: mailbox {mailbox:?} is neither a user principal name (support@contoso.com) nor an object id"),
                ));
            }
            if g.folder.trim().is_empty() || g.processed_folder.trim().is_empty() {
                return Err(bad("folder and processed_folder must not be empty"));
            }
            if g.folder.eq_ignore_ascii_case(&g.processed_folder) {
                return Err(bad("processed_folder must differ from folder"));
            }
            if g.poll_seconds == 0 {
                return Err(bad("poll_seconds must be at least 1"));
            }
            if g.poll_seconds >= self.http.max_sync_age_seconds {
                return Err(bad(&format!(
                    "poll_seconds ({}) must be shorter than http.max_sync_age_seconds ({})",
                    g.poll_seconds, self.http.max_sync_age_seconds
                )));
            }
            let base = g.base();
            let host = base
                .strip_prefix("https://")
                .or_else(|| base.strip_prefix("http://"))
                .map(|r| r.split(['/', '?']).next().unwrap_or(""));
            let span = if g.base_url.span().is_empty() {
                g.name.span()
            } else {
                g.base_url.span()
            };
            match host {
                None | Some("") => {
                    return Err(at(
                        span,
                        format!("graph {name:?}: base_url {base:?} is not an http(s) URL"),
                    ))
                }
                Some(h)
                    if base.starts_with("http://")
                        && !is_loopback(h.rsplit_once(':').map_or(h, |(a, _)| a)) =>
                {
                    return Err(at(
                        span,
                        format!("graph {name:?}: base_url: plain http is only allowed on loopback, use https"),
                    ))
                }
                _ => {}
            }
            if g.oauth.provider() == OAuthProvider::Google {
                return Err(at(
                    g.oauth.provider.span(),
                    format!("graph {name:?}: Microsoft Graph takes tokens from Microsoft's identity platform: provider = \"microsoft365\" (or \"generic\" with token_url and scope)"),
                ));
            }
            if let Some(d) = &g.defaults.default_severity {
                if !(1..=4).contains(d) {
                    return Err(bad("defaults.default_severity must be 1–4"));
                }
            }
            if let Some(l) = &g.defaults.language {
                if !matches!(l.as_str(), "de" | "en") {
                    return Err(bad(&format!(
                        "defaults.language must be \"de\" or \"en\", not {l:?}"
                    )));
                }
            }
        }
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        match (&self.outbound.transport, &self.outbound.graph.mailbox) {
            (Transport::Graph, None) => {
                return Err(invalid(
                    "outbound: transport = \"graph\" needs [outbound.graph] mailbox = \"NAME\" (the name of a [[graph]] mailbox)".into(),
                ))
            }
            (Transport::Graph, Some(m)) if !self.graph.iter().any(|g| g.label() == m) => {
                return Err(invalid(format!(
                    "outbound.graph.mailbox = {m:?}: no [[graph]] mailbox has this name"
                )))
            }
            (Transport::File | Transport::Smtp, Some(_)) => {
                return Err(invalid(
                    "outbound: [outbound.graph] is only used with transport = \"graph\"".into(),
                ))
            }
            _ => {}
        }
        Ok(())
    }

    /// Every configured OAuth account: IMAP mailboxes, Graph mailboxes
    /// (`graph:NAME`), then SMTP.
    pub fn oauth_accounts(&self) -> Vec<OAuthAccount<'_>> {
        let mut out = Vec::new();
        for m in &self.imap {
            if let (MailAuth::Oauth2, Some(o)) = (m.auth, &m.oauth) {
                let name = m.label();
                out.push(OAuthAccount {
                    key: format!("imap:{name}"),
                    name,
                    user: Some(m.user.clone()),
                    oauth: o,
                });
            }
        }
        for g in &self.graph {
            out.push(OAuthAccount {
                key: format!("graph:{}", g.label()),
                name: g.label().to_string(),
                user: Some(g.mailbox.get_ref().clone()),
                oauth: &g.oauth,
            });
        }
        let smtp = &self.outbound.smtp;
        if let (MailAuth::Oauth2, Some(o)) = (smtp.auth, &smtp.oauth) {
            out.push(OAuthAccount {
                key: "smtp".into(),
                name: "smtp".into(),
                user: smtp.user.clone(),
                oauth: o,
            });
        }
        out
    }

    /// Checks each `oauth` table; an error names the line of its
    /// `provider` (or `flow`) key.
    fn validate_oauth(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        for a in self.oauth_accounts() {
            let mut checked = a.oauth.endpoints().map(|_| ());
            // Gmail's XOAUTH2 login names the user the token was issued
            // for: a service account acting as someone else cannot log in.
            if let (Ok(()), Some(subject), Some(user)) = (&checked, &a.oauth.subject, &a.user) {
                if !subject.get_ref().trim().eq_ignore_ascii_case(user.trim()) {
                    checked = Err(format!(
                        "oauth.subject {:?} is not the login user {user:?}: the token only logs in as its subject",
                        subject.get_ref()
                    ));
                }
            }
            if let Err(message) = checked {
                let span = a.oauth.span_for(&message);
                let (line, column) = line_col(text, span.start);
                let what = if a.key == "smtp" {
                    "outbound.smtp".to_string()
                } else if a.key.starts_with("graph:") {
                    format!("graph {:?}", a.name)
                } else {
                    format!("imap {:?}", a.name)
                };
                return Err(ConfigError::Parse {
                    path: path.to_path_buf(),
                    line,
                    column,
                    message: format!("{what}: {message}"),
                });
            }
        }
        Ok(())
    }

    /// Checks values that TOML types cannot express.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if !(1..=4).contains(&self.tickets.default_severity) {
            return Err(bad(format!(
                "tickets.default_severity must be 1–4, not {}",
                self.tickets.default_severity
            )));
        }
        if !self
            .tickets
            .number_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(bad(
                "tickets.number_prefix may hold only ASCII letters, digits and '-'".into(),
            ));
        }
        if self.tickets.tag.is_empty()
            || !self.tickets.tag.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(bad(
                "tickets.tag must be a non-empty word of ASCII letters and digits".into(),
            ));
        }
        if self.tickets.number_start < 0 {
            return Err(bad("tickets.number_start must not be negative".into()));
        }
        if self.desk.addresses.is_empty() {
            return Err(bad("desk.addresses needs at least one address".into()));
        }
        for a in &self.desk.addresses {
            if !deliverable(a) {
                return Err(bad(format!(
                    "desk.addresses: {a:?} is not a mail address others can write to (local@domain.tld)"
                )));
            }
        }
        for a in &self.desk.staff {
            if !mail_like(a) {
                return Err(bad(format!(
                    "desk.staff: {a:?} is neither an address nor \"@domain\""
                )));
            }
        }
        if !matches!(self.desk.language.as_str(), "de" | "en") {
            return Err(bad(format!(
                "desk.language must be \"de\" or \"en\", not {:?}",
                self.desk.language
            )));
        }
        if jiff::tz::TimeZone::get(&self.desk.timezone).is_err() {
            return Err(bad(format!(
                "desk.timezone: unknown time zone {:?}",
                self.desk.timezone
            )));
        }
        if !(64 * 1024..=crate::sources::MAX_MESSAGE_BYTES).contains(&self.intake.max_message_bytes)
        {
            return Err(bad(format!(
                "intake.max_message_bytes must be between 65536 and {} (SQLite's largest value)",
                crate::sources::MAX_MESSAGE_BYTES
            )));
        }
        if self.intake.max_body_bytes > crate::ingest::parse::MAX_TEXT_BYTES {
            return Err(bad(format!(
                "intake.max_body_bytes must be at most {} (the text taken from a mail)",
                crate::ingest::parse::MAX_TEXT_BYTES
            )));
        }
        if self.intake.batch_size == 0 {
            return Err(bad("intake.batch_size must be at least 1".into()));
        }
        if self.outbound.poll_seconds.is_nan() || self.outbound.poll_seconds <= 0.0 {
            return Err(bad("outbound.poll_seconds must be positive".into()));
        }
        if !(0.1..=3600.0).contains(&self.outbound.retry_base_seconds) {
            return Err(bad("outbound.retry_base_seconds must be 0.1–3600".into()));
        }
        if self.outbound.retry_hours.is_nan() || self.outbound.retry_hours < 0.0 {
            return Err(bad("outbound.retry_hours must not be negative".into()));
        }
        if self.outbound.transport == Transport::Smtp && self.outbound.smtp.host.is_empty() {
            return Err(bad("outbound.smtp.host is empty".into()));
        }
        // Mail and the AUTH password would cross the network in clear text.
        if self.outbound.smtp.tls == SmtpTls::None && !is_loopback(&self.outbound.smtp.host) {
            return Err(bad(format!(
                "outbound.smtp.tls = \"none\" is only allowed for a relay on loopback (127.0.0.1, ::1, localhost), not {:?}: use tls = \"starttls\" or \"tls\"",
                self.outbound.smtp.host
            )));
        }
        let smtp = &self.outbound.smtp;
        if smtp.auth == MailAuth::Oauth2 {
            if smtp.oauth.is_none() {
                return Err(bad(
                    "outbound.smtp: auth = \"oauth2\" needs an [outbound.smtp.oauth] table".into(),
                ));
            }
            if smtp.user.is_none() {
                return Err(bad(
                    "outbound.smtp: auth = \"oauth2\" needs user (the mailbox the token sends as)"
                        .into(),
                ));
            }
            if smtp.password_env.is_some() || smtp.password_file.is_some() {
                return Err(bad(
                    "outbound.smtp: auth = \"oauth2\" takes no password_env or password_file"
                        .into(),
                ));
            }
        } else if smtp.oauth.is_some() {
            return Err(bad(
                "outbound.smtp: [outbound.smtp.oauth] is only used with auth = \"oauth2\"".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for m in &self.imap {
            let label = m.label();
            let at = |what: &str| bad(format!("imap {label:?}: {what}"));
            if m.host.is_empty() {
                return Err(at("host is empty"));
            }
            if m.auth == MailAuth::Oauth2 {
                if m.oauth.is_none() {
                    return Err(at("auth = \"oauth2\" needs an [imap.oauth] table"));
                }
                if m.password_env.is_some() || m.password_file.is_some() {
                    return Err(at(
                        "auth = \"oauth2\" takes no password_env or password_file",
                    ));
                }
            } else if m.oauth.is_some() {
                return Err(at("[imap.oauth] is only used with auth = \"oauth2\""));
            } else if m.password_env.is_none() && m.password_file.is_none() {
                return Err(at("needs password_env or password_file"));
            }
            if m.password_env.is_some() && m.password_file.is_some() {
                return Err(at("give password_env or password_file, not both"));
            }
            if m.tls == ImapTls::Plain && !is_loopback(&m.host) {
                return Err(at(
                    "tls = \"plain\" is only allowed for a server on loopback (127.0.0.1, ::1, localhost)",
                ));
            }
            if m.folder.is_empty() {
                return Err(at("folder is empty"));
            }
            if m.processed_folder == m.folder || m.quarantine_folder == m.folder {
                return Err(at(
                    "processed_folder and quarantine_folder must differ from folder",
                ));
            }
            if !(10..=1500).contains(&m.idle_seconds) {
                return Err(at("idle_seconds must be 10–1500"));
            }
            if m.poll_seconds == 0 {
                return Err(at("poll_seconds must be at least 1"));
            }
            if m.batch_size == 0 {
                return Err(at("batch_size must be at least 1"));
            }
            if let Some(s) = m.defaults.default_severity {
                if !(1..=4).contains(&s) {
                    return Err(at("defaults.default_severity must be 1–4"));
                }
            }
            if let Some(l) = &m.defaults.language {
                if !matches!(l.as_str(), "de" | "en") {
                    return Err(at(&format!(
                        "defaults.language must be \"de\" or \"en\", not {l:?}"
                    )));
                }
            }
            if !names.insert(label.clone()) {
                return Err(at(
                    "two mailboxes have this name; give each a distinct name",
                ));
            }
        }
        for s in [
            self.alerts.critical_host_severity,
            self.alerts.critical_severity,
            self.alerts.warning_severity,
        ] {
            if !(1..=4).contains(&s) {
                return Err(bad("alerts: severities must be 1–4".into()));
            }
        }
        for g in &self.alerts.generic {
            crate::ingest::alerts::GenericAlertRule::compile(&g.name, g)
                .map_err(|e| bad(format!("alerts.generic {:?}: {e}", g.name)))?;
        }
        for (name, list) in &self.sla.audiences {
            for entry in list {
                audience_entry(entry).map_err(|e| bad(format!("sla.audiences.{name}: {e}")))?;
            }
        }
        let sla_tz = self.sla.timezone.as_deref().unwrap_or(&self.desk.timezone);
        for d in &self.sla.digest {
            crate::sla::cron::CronSchedule::parse(&d.cron, sla_tz)
                .map_err(|e| bad(format!("sla.digest {:?}: {e}", d.label())))?;
            for a in &d.to {
                if !self.sla.audiences.contains_key(a) {
                    return Err(bad(format!(
                        "sla.digest {:?}: audience {a:?} is not defined in [sla.audiences]",
                        d.label()
                    )));
                }
            }
        }
        if let Some(tz) = &self.sla.timezone {
            if jiff::tz::TimeZone::get(tz).is_err() {
                return Err(bad(format!("sla.timezone: unknown time zone {tz:?}")));
            }
        }
        self.discord.validate().map_err(&bad)?;
        for (name, list) in &self.sla.audiences {
            for entry in list {
                if let Ok(AudienceEntry::Chat(c)) = audience_entry(entry) {
                    if self.discord.enabled && !self.discord.channels.contains_key(&c) {
                        return Err(bad(format!(
                            "sla.audiences.{name}: chat channel {c:?} is not defined in [discord.channels]"
                        )));
                    }
                }
            }
        }
        self.http.listen_addr().map_err(bad)?;
        if self.http.max_sync_age_seconds == 0 {
            return Err(bad("http.max_sync_age_seconds must be at least 1".into()));
        }
        // A mailbox in IDLE syncs once per idle_seconds (and at once on new
        // mail): a shorter health limit would report healthy mailboxes.
        for m in &self.imap {
            let cycle = if m.idle {
                m.idle_seconds
            } else {
                m.poll_seconds
            };
            if cycle >= self.http.max_sync_age_seconds {
                return Err(bad(format!(
                    "imap {:?}: its sync cycle ({cycle} s, idle_seconds or poll_seconds) must be shorter than http.max_sync_age_seconds ({} s)",
                    m.label(),
                    self.http.max_sync_age_seconds
                )));
            }
        }
        Ok(())
    }

    /// Checks what the configuration names outside itself that `run` will
    /// need, without any network: each IMAP mailbox's password (its
    /// variable set, its file readable, not empty) and its `ca_file` (a
    /// readable PEM file with a certificate). For `check-config`; the
    /// outbound transport and the Discord token are checked where they are
    /// built.
    pub fn check_sources(&self) -> Result<(), String> {
        for a in self.oauth_accounts() {
            a.oauth
                .client_secret(|p| self.resolve(p))
                .map_err(|e| format!("{}: {e}", a.name))?;
            // The certificate, its key and a service account's key are read
            // as `run` reads them; the message names the file and the
            // configuration line, never key material.
            let keys = a
                .oauth
                .client_certificate(|p| self.resolve(p))
                .map(|_| ())
                .and_then(|()| a.oauth.service_account(|p| self.resolve(p)).map(|_| ()));
            if let Err(e) = keys {
                let message = format!("oauth.{e}");
                let at = self
                    .path
                    .as_ref()
                    .and_then(|p| Some((p, std::fs::read_to_string(p).ok()?)))
                    .map(|(p, text)| {
                        let (line, _) = line_col(&text, a.oauth.span_for(&message).start);
                        format!("{}:{line}: ", p.display())
                    })
                    .unwrap_or_default();
                let what = if a.key == "smtp" {
                    "outbound.smtp".to_string()
                } else {
                    format!("imap {:?}", a.name)
                };
                return Err(format!("{at}{what}: {message}"));
            }
        }
        for m in &self.imap {
            let what = format!("imap {:?}", m.label());
            if m.auth == MailAuth::Password {
                let password = read_secret(
                    m.password_env.as_deref(),
                    m.password_file.as_ref().map(|f| self.resolve(f)).as_deref(),
                    &what,
                )?;
                if password.is_empty() {
                    return Err(format!("{what}: the password is empty"));
                }
            }
            if let Some(ca) = &m.ca_file {
                let path = self.resolve(ca);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{what}: ca_file {}: {e}", path.display()))?;
                if !text.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(format!(
                        "{what}: ca_file {}: no PEM certificate in it",
                        path.display()
                    ));
                }
            }
        }
        Ok(())
    }

    /// The sections of `other` that differ from this one's and take a
    /// restart to apply: everything but rules, templates, customers, SLA
    /// policies, audiences and digests, and the IMAP mailboxes, which a
    /// reload puts in force. Names only, never values (they may hold
    /// secrets' locations).
    pub fn needs_restart(&self, other: &Config) -> Vec<&'static str> {
        let differs =
            |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
        let mut out = Vec::new();
        let mut check = |name: &'static str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
            if differs(a, b) {
                out.push(name);
            }
        };
        check("data_dir", &self.data_dir, &other.data_dir);
        check("[desk]", &self.desk, &other.desk);
        check("[tickets]", &self.tickets, &other.tickets);
        check("[intake]", &self.intake, &other.intake);
        check("[autoreply]", &self.autoreply, &other.autoreply);
        check("[outbound]", &self.outbound, &other.outbound);
        check("[[maildir]]", &self.maildir, &other.maildir);
        check(
            "[customers] default_account_manager",
            &self.customers.default_account_manager,
            &other.customers.default_account_manager,
        );
        check("[alerts]", &self.alerts, &other.alerts);
        check("[log]", &self.log, &other.log);
        check("[database]", &self.database, &other.database);
        check("[http]", &self.http, &other.http);
        check("[discord]", &self.discord, &other.discord);
        out
    }

    /// Resolves a path from the config file against the file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        match &self.base_dir {
            Some(base) if p.is_relative() => base.join(p),
            _ => p.to_path_buf(),
        }
    }
}

/// Where one entry of an SLA audience goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudienceEntry {
    /// A mail to this address, through the outbox.
    Mail(String),
    /// A post to this named chat channel, through the chat outbox.
    Chat(String),
}

/// Whether `a` is an address mail can be sent to from elsewhere:
/// `local@domain.tld`, a domain of at least two labels of letters, digits
/// and `-` (`support@example` is not: no MTA delivers to it).
fn deliverable(a: &str) -> bool {
    let Some((local, domain)) = a.trim().rsplit_once('@') else {
        return false;
    };
    let labels: Vec<&str> = domain.split('.').collect();
    !local.is_empty()
        && !local
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '@')
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

/// Whether `a` can be a mail address (or `@domain`) in the configuration:
/// an `@`, no blanks or control characters.
fn mail_like(a: &str) -> bool {
    a.contains('@') && !a.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Reads `mail:ADDRESS` or `chat:CHANNEL`.
pub fn audience_entry(entry: &str) -> Result<AudienceEntry, String> {
    match entry.trim().split_once(':') {
        Some(("mail", a)) if mail_like(a) => Ok(AudienceEntry::Mail(a.to_ascii_lowercase())),
        Some(("chat", c)) if !c.trim().is_empty() => Ok(AudienceEntry::Chat(c.trim().to_string())),
        _ => Err(format!(
            "{entry:?} is neither \"mail:ADDRESS\" nor \"chat:CHANNEL\""
        )),
    }
}

/// Whether `host` names this machine's loopback interface.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// 1-based line and column of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_all_defaults() {
        let c = Config::parse_str("", Path::new("x.toml")).unwrap();
        assert_eq!(c.tickets.default_severity, 3);
        assert_eq!(c.autoreply.max_per_recipient_per_hour, 10);
        assert_eq!(c.intake.max_attachment_bytes, 25 * 1024 * 1024);
        assert_eq!(c.desk.language, "de");
    }

    #[test]
    fn http_endpoint_defaults_to_loopback_and_can_be_disabled() {
        let c = Config::parse_str("", Path::new("x.toml")).unwrap();
        assert_eq!(
            c.http.listen_addr().unwrap(),
            Some("127.0.0.1:9187".parse().unwrap())
        );
        assert_eq!(c.http.max_sync_age(), std::time::Duration::from_secs(900));
        let c = Config::parse_str("[http]\nlisten = \"\"\n", Path::new("x.toml")).unwrap();
        assert_eq!(c.http.listen_addr().unwrap(), None);
        let c = Config::parse_str(
            "[http]\nlisten = \"[::1]:9200\"\nmax_sync_age_seconds = 60\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(
            c.http.listen_addr().unwrap(),
            Some("[::1]:9200".parse().unwrap())
        );
        let err = Config::parse_str("[http]\nlisten = \"localhost:9187\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml: http.listen:"), "{err}");
    }

    #[test]
    fn plain_smtp_is_refused_beyond_loopback() {
        for host in ["127.0.0.1", "::1", "[::1]", "localhost"] {
            let text = format!("[outbound.smtp]\nhost = \"{host}\"\ntls = \"none\"\n");
            assert!(
                Config::parse_str(&text, Path::new("c.toml")).is_ok(),
                "{host}"
            );
        }
        for host in ["mail.example.com", "192.0.2.7", "0.0.0.0"] {
            let text = format!(
                "[outbound]\ntransport = \"smtp\"\n[outbound.smtp]\nhost = \"{host}\"\ntls = \"none\"\n"
            );
            let err = Config::parse_str(&text, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("c.toml: outbound.smtp.tls = \"none\"") && err.contains(host),
                "{err}"
            );
        }
        // The default relay is 127.0.0.1 without TLS, and TLS to anywhere is fine.
        assert!(Config::parse_str("", Path::new("c.toml")).is_ok());
        assert!(Config::parse_str(
            "[outbound.smtp]\nhost = \"mail.example.com\"\ntls = \"starttls\"\n",
            Path::new("c.toml")
        )
        .is_ok());
    }

    #[test]
    fn http_beyond_loopback_is_warned_about() {
        let warning = |listen: &str| {
            Config::parse_str(
                &format!("[http]\nlisten = \"{listen}\"\n"),
                Path::new("c.toml"),
            )
            .unwrap()
            .http
            .exposure_warning()
        };
        assert_eq!(warning("127.0.0.1:9187"), None);
        assert_eq!(warning("[::1]:9187"), None);
        assert_eq!(warning(""), None);
        for listen in ["0.0.0.0:9187", "[::]:9187", "192.0.2.7:9187"] {
            let w = warning(listen).expect(listen);
            assert!(
                w.contains("http.listen") && w.contains("no authentication"),
                "{w}"
            );
        }
    }

    #[test]
    fn oauth_presets_fill_endpoints_and_scopes() {
        let imap = |oauth: &str| {
            format!("[[imap]]\nname = \"m\"\nhost = \"outlook.office365.com\"\nuser = \"support@contoso.com\"\nauth = \"oauth2\"\n[imap.oauth]\n{oauth}")
        };
        let cfg = Config::parse_str(
            &imap("provider = \"microsoft365\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"id\"\nclient_secret_env = \"S\"\nflow = \"client_credentials\"\n"),
            Path::new("t.toml"),
        )
        .unwrap();
        let a = cfg.oauth_accounts();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].key, "imap:m");
        let ep = a[0].oauth.endpoints().unwrap();
        assert_eq!(
            ep.token_url,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(ep.scope, MS_APP_SCOPE);
        let cfg = Config::parse_str(
            &imap("provider = \"microsoft365\"\ntenant = \"organizations\"\nclient_id = \"id\"\nflow = \"device_code\"\n"),
            Path::new("t.toml"),
        )
        .unwrap();
        let ep = cfg.oauth_accounts()[0].oauth.endpoints().unwrap();
        assert_eq!(
            ep.device_authorization_url.as_deref(),
            Some("https://login.microsoftonline.com/organizations/oauth2/v2.0/devicecode")
        );
        assert_eq!(ep.scope, MS_DELEGATED_SCOPE);
        assert!(ep.scope.contains("offline_access"));
        // Password mailboxes are unchanged, and take no oauth table.
        let e = Config::parse_str(
            "[[imap]]\nhost = \"h\"\nuser = \"u\"\npassword_env = \"P\"\n[imap.oauth]\nprovider = \"google\"\nclient_id = \"x\"\nflow = \"authorization_code\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("only used with auth = \"oauth2\""),
            "{e}"
        );
        let e = Config::parse_str(
            "[[imap]]\nhost = \"h\"\nuser = \"u\"\nauth = \"oauth2\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("needs an [imap.oauth] table"), "{e}");
        // The client secret's location may be shown, never a secret.
        let dbg = format!("{:?}", cfg.imap[0]);
        assert!(dbg.contains("client_id"));
    }

    #[test]
    fn google_takes_the_authorization_code_flow_with_the_gmail_scope() {
        let cfg = Config::parse_str(
            "[[imap]]\nname = \"g\"\nhost = \"imap.gmail.com\"\nuser = \"support@example.com\"\nauth = \"oauth2\"\n[imap.oauth]\nprovider = \"google\"\nclient_id = \"x.apps.googleusercontent.com\"\nclient_secret_env = \"S\"\nflow = \"authorization_code\"\nredirect_port = 8765\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let a = &cfg.oauth_accounts()[0];
        let ep = a.oauth.endpoints().unwrap();
        assert_eq!(ep.token_url, "https://oauth2.googleapis.com/token");
        assert_eq!(
            ep.authorization_url.as_deref(),
            Some("https://accounts.google.com/o/oauth2/v2/auth")
        );
        assert_eq!(ep.scope, GOOGLE_MAIL_SCOPE);
        assert_eq!(a.oauth.redirect_port, Some(8765));
    }

    const GRAPH: &str = "[[graph]]\nname = \"desk\"\nmailbox = \"support@contoso.com\"\n[graph.oauth]\nprovider = \"microsoft365\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"id\"\nclient_secret_env = \"S\"\nflow = \"client_credentials\"\n";

    #[test]
    fn a_graph_mailbox_is_an_oauth_account_with_graphs_scope() {
        let cfg = Config::parse_str(GRAPH, Path::new("c.toml")).unwrap();
        let g = &cfg.graph[0];
        assert_eq!(g.folder, "Inbox");
        assert_eq!(g.processed_folder, "Processed");
        assert_eq!(g.poll_seconds, 30);
        assert_eq!(g.base(), GRAPH_BASE_URL);
        let a = cfg.oauth_accounts();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].key, "graph:desk");
        assert_eq!(a[0].name, "desk");
        let ep = a[0].oauth.endpoints().unwrap();
        assert_eq!(ep.scope, GRAPH_APP_SCOPE);
        assert_eq!(
            ep.token_url,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        // An IMAP mailbox of the same tenant keeps Exchange's scope.
        let both = format!(
            "{GRAPH}[[imap]]\nname = \"m\"\nhost = \"outlook.office365.com\"\nuser = \"u@contoso.com\"\nauth = \"oauth2\"\n[imap.oauth]\nprovider = \"microsoft365\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"id\"\nclient_secret_env = \"S\"\nflow = \"client_credentials\"\n"
        );
        let cfg = Config::parse_str(&both, Path::new("c.toml")).unwrap();
        let scopes: Vec<(String, String)> = cfg
            .oauth_accounts()
            .iter()
            .map(|a| (a.key.clone(), a.oauth.endpoints().unwrap().scope))
            .collect();
        assert!(scopes.contains(&("imap:m".into(), MS_APP_SCOPE.into())));
        assert!(scopes.contains(&("graph:desk".into(), GRAPH_APP_SCOPE.into())));
    }

    #[test]
    fn graph_errors_name_their_line() {
        let e = Config::parse_str(
            &GRAPH.replace("name = \"desk\"", "name = \"desk\"\npoll_seconds = 0"),
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("c.toml:2:") && e.contains("poll_seconds must be at least 1"),
            "{e}"
        );
        let e = Config::parse_str(
            &GRAPH.replace(
                "mailbox = \"support@contoso.com\"",
                "mailbox = \"support@contoso.com\"\nbase_url = \"http://graph.example.com/v1.0\"",
            ),
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("c.toml:4:") && e.contains("plain http is only allowed on loopback"),
            "{e}"
        );
        let loopback = GRAPH.replace(
            "mailbox = \"support@contoso.com\"",
            "mailbox = \"support@contoso.com\"\nbase_url = \"http://127.0.0.1:8080/v1.0/\"",
        );
        let cfg = Config::parse_str(&loopback, Path::new("c.toml")).unwrap();
        assert_eq!(cfg.graph[0].base(), "http://127.0.0.1:8080/v1.0");
        let e = Config::parse_str(
            &GRAPH.replace("provider = \"microsoft365\"", "provider = \"google\""),
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("c.toml:5:") && e.contains("microsoft365"), "{e}");
        let two = format!("{GRAPH}{GRAPH}");
        let e = Config::parse_str(&two, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.toml:11:") && e.contains("distinct name"),
            "{e}"
        );
    }

    #[test]
    fn the_graph_transport_names_a_graph_mailbox() {
        let ok = format!(
            "[outbound]\ntransport = \"graph\"\n[outbound.graph]\nmailbox = \"desk\"\n{GRAPH}"
        );
        let cfg = Config::parse_str(&ok, Path::new("c.toml")).unwrap();
        assert_eq!(cfg.outbound.transport, Transport::Graph);
        let e = Config::parse_str(
            &ok.replace(
                "mailbox = \"desk\"\n[[graph]]",
                "mailbox = \"sales\"\n[[graph]]",
            ),
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no [[graph]] mailbox has this name"), "{e}");
        let e = Config::parse_str(
            &format!("[outbound]\ntransport = \"graph\"\n{GRAPH}"),
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("needs [outbound.graph] mailbox"), "{e}");
    }

    #[test]
    fn a_google_service_account_takes_the_gmail_scope_and_needs_key_and_subject() {
        let imap = |oauth: &str| {
            format!("[[imap]]\nname = \"g\"\nhost = \"imap.gmail.com\"\nuser = \"support@example.com\"\nauth = \"oauth2\"\n[imap.oauth]\nprovider = \"google\"\n{oauth}")
        };
        let cfg = Config::parse_str(
            &imap("flow = \"service_account\"\nservice_account_key_file = \"sa.json\"\nsubject = \"support@example.com\"\n"),
            Path::new("t.toml"),
        )
        .unwrap();
        let a = &cfg.oauth_accounts()[0];
        assert_eq!(a.oauth.flow(), OAuthFlow::ServiceAccount);
        assert!(!a.oauth.flow().has_refresh_token());
        let ep = a.oauth.endpoints().unwrap();
        assert_eq!(ep.token_url, "https://oauth2.googleapis.com/token");
        assert_eq!(ep.scope, GOOGLE_MAIL_SCOPE);
        for (oauth, want) in [
            ("flow = \"service_account\"\nsubject = \"support@example.com\"\n", "needs service_account_key_file"),
            ("flow = \"service_account\"\nservice_account_key_file = \"sa.json\"\nsubject = \"support\"\n", "is not an email address"),
            ("flow = \"service_account\"\nservice_account_key_file = \"sa.json\"\nsubject = \"support@example.com\"\nclient_secret_env = \"S\"\n", "takes no client secret or certificate"),
            ("client_id = \"x\"\nflow = \"authorization_code\"\nsubject = \"support@example.com\"\n", "oauth.subject: only for flow"),
            ("client_id = \"x\"\nflow = \"authorization_code\"\nclient_certificate_file = \"c.pem\"\n", "certificate credentials are Entra ID's"),
        ] {
            let e = Config::parse_str(&imap(oauth), Path::new("t.toml")).unwrap_err();
            assert!(e.to_string().contains(want), "{oauth}: {e}");
        }
    }

    #[test]
    fn a_certificate_replaces_the_secret_but_not_beside_it_nor_for_device_code() {
        let ms = |rest: &str| {
            format!("[[imap]]\nname = \"m\"\nhost = \"outlook.office365.com\"\nuser = \"support@contoso.com\"\nauth = \"oauth2\"\n[imap.oauth]\nprovider = \"microsoft365\"\ntenant = \"contoso.com\"\nclient_id = \"x\"\n{rest}")
        };
        Config::parse_str(
            &ms("flow = \"client_credentials\"\nclient_certificate_file = \"c.pem\"\n"),
            Path::new("t.toml"),
        )
        .unwrap();
        for (rest, want, line) in [
            ("flow = \"client_credentials\"\nclient_certificate_file = \"c.pem\"\nclient_secret_env = \"S\"\n", "not both", 11),
            ("flow = \"client_credentials\"\nclient_key_file = \"k.pem\"\n", "needs client_certificate_file", 11),
            ("flow = \"device_code\"\nclient_certificate_file = \"c.pem\"\n", "device code flow", 11),
            ("flow = \"service_account\"\nservice_account_key_file = \"sa.json\"\nsubject = \"support@contoso.com\"\n", "is Google's", 10),
        ] {
            let e = Config::parse_str(&ms(rest), Path::new("t.toml")).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(want), "{rest}: {text}");
            assert!(text.contains(&format!("t.toml:{line}:")), "{rest}: {text}");
        }
    }

    #[test]
    fn smtp_oauth_needs_the_user_it_sends_as() {
        let e = Config::parse_str(
            "[outbound.smtp]\nauth = \"oauth2\"\n[outbound.smtp.oauth]\nprovider = \"microsoft365\"\ntenant = \"contoso.com\"\nclient_id = \"x\"\nclient_secret_env = \"S\"\nflow = \"client_credentials\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("needs user"), "{e}");
        let cfg = Config::parse_str(
            "[outbound.smtp]\nuser = \"support@contoso.com\"\nauth = \"oauth2\"\n[outbound.smtp.oauth]\nprovider = \"microsoft365\"\ntenant = \"contoso.com\"\nclient_id = \"x\"\nclient_secret_env = \"S\"\nflow = \"client_credentials\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(cfg.oauth_accounts()[0].key, "smtp");
    }

    #[test]
    fn unknown_key_is_reported_with_line() {
        let err = Config::parse_str("[tickets]\nprefixx = \"T\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml:2:"), "{err}");
        assert!(err.contains("prefixx"), "{err}");
    }

    #[test]
    fn a_mailbox_may_name_the_language_of_its_customers_mails() {
        let imap = "[[imap]]\nhost = \"imap.example.com\"\nuser = \"u\"\npassword_env = \"P\"\n[imap.defaults]\n";
        let c =
            Config::parse_str(&format!("{imap}language = \"en\"\n"), Path::new("c.toml")).unwrap();
        assert_eq!(c.imap[0].defaults.language.as_deref(), Some("en"));
        let e = Config::parse_str(&format!("{imap}language = \"fr\"\n"), Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("defaults.language"), "{e}");
    }

    #[test]
    fn bad_values_are_rejected() {
        for text in [
            "[tickets]\ndefault_severity = 7",
            "[desk]\nlanguage = \"fr\"",
            "[desk]\ntimezone = \"Mars/Olympus\"",
            "[tickets]\ntag = \"Ti cket\"",
            "[http]\nlisten = \"localhost\"",
            "[http]\nlisten = \"127.0.0.1\"",
            "[http]\nmax_sync_age_seconds = 0",
            "[desk]\naddresses = [\"support@example\"]",
            "[desk]\naddresses = [\"support@.example.com\"]",
            "[desk]\naddresses = [\"@example.com\"]",
        ] {
            assert!(
                Config::parse_str(text, Path::new("c.toml")).is_err(),
                "{text}"
            );
        }
    }

    #[test]
    fn a_reload_names_the_sections_that_need_a_restart() {
        let old = Config::parse_str("[rules]\ndir = \"r\"\n", Path::new("c.toml")).unwrap();
        let live = Config::parse_str(
            "[rules]\ndir = \"other\"\n[sla.audiences]\nteam = [\"mail:a@b.example\"]\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert!(old.needs_restart(&live).is_empty());
        let restart = Config::parse_str(
            "[desk]\nname = \"Helpdesk\"\n[http]\nlisten = \"127.0.0.1:9999\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(old.needs_restart(&restart), vec!["[desk]", "[http]"]);
    }

    const DISCORD: &str = "[discord]\nenabled = true\nguild = 1\nstaff_roles = [2]\nnotify = \"staff\"\n[discord.channels.staff]\nid = 3\n";

    #[test]
    fn discord_settings_name_defined_channels() {
        let cfg = Config::parse_str(DISCORD, Path::new("c.toml")).unwrap();
        assert_eq!(cfg.discord.channel_for(1), Some("staff"));
        assert_eq!(cfg.discord.prefix, "!t");
        for (extra, wants) in [
            (
                "[discord.severity]\n\"1\" = \"oncall\"\n",
                "channel \"oncall\" is not defined",
            ),
            ("[discord.severity]\n\"7\" = \"staff\"\n", "not a severity"),
            (
                "[sla.audiences]\nteam = [\"chat:oncall\"]\n",
                "chat channel \"oncall\"",
            ),
            ("[discord.channels.zero]\nid = 0\n", "must be a channel id"),
        ] {
            let e = Config::parse_str(&format!("{DISCORD}{extra}"), Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(wants), "{extra}: {e}");
        }
        let e = Config::parse_str(
            &DISCORD.replace("guild = 1", "guild = 0"),
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("discord.guild"), "{e}");
        let e = Config::parse_str(
            &DISCORD.replace("notify = \"staff\"\n", ""),
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("set notify"), "{e}");
        // The severity route wins over notify.
        let cfg = Config::parse_str(
            &format!("{DISCORD}[discord.severity]\n\"1\" = \"oncall\"\n[discord.channels.oncall]\nid = 4\nmention = 5\n"),
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(cfg.discord.channel_for(1), Some("oncall"));
        assert_eq!(cfg.discord.channel_for(2), Some("staff"));
    }

    #[test]
    fn the_discord_token_comes_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = DiscordConfig {
            token_file: Some(dir.path().join("t")),
            ..DiscordConfig::default()
        };
        std::fs::write(dir.path().join("t"), "abc.def\n").unwrap();
        assert_eq!(d.token(|p| p.to_path_buf()).unwrap(), "abc.def");
        std::fs::write(dir.path().join("t"), "\n").unwrap();
        assert!(d.token(|p| p.to_path_buf()).unwrap_err().contains("empty"));
        d.token_file = None;
        d.token_env = Some("TICKETD_TEST_NO_SUCH_TOKEN_VAR".into());
        assert!(d
            .token(|p| p.to_path_buf())
            .unwrap_err()
            .contains("TICKETD_TEST_NO_SUCH_TOKEN_VAR"));
    }
}
