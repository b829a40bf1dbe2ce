//! What the commands do: open the data directory, build the intake from the
//! configuration, and run messages through parse → store → decide → apply.
//!
//! The CPU work of a message (parsing) happens outside the write
//! transaction; lookups, the pure decision and the writes happen inside a
//! batch transaction, so a batch of files costs one commit; should one
//! message fail, the batch is stored again one message per transaction, so
//! each message still succeeds or fails on its own.

use crate::config::Config;
use crate::customers::{Directory, DirectoryError, Organisation};
use crate::domain::{Action, Mailbox, MessageId, Severity, TicketNumber};
use crate::ingest::alerts::{parse_alert, Alert, GenericAlertRule};
use crate::ingest::classify::{Classification, Facts, RuleError, RuleSet};
use crate::ingest::decide::{
    decide, host_incident_key, incident_key, AlertSeverity, DecideConfig, Decision, Lookups,
    Notice, NoticeKind, OrgFacts, Target,
};
use crate::ingest::parse::{parse, sha256_hex, ParsedMail};
use crate::ingest::thread::{IdSigner, SubjectTag};
use crate::ingest::{arrival, guard};
use crate::ingest::{lookup_keys, parse::ParseFailure};
use crate::keys::MacKey;
use crate::outbound::mail::{confirmation, Confirmation, Outgoing};
use crate::outbound::templates::{TemplateError, Templates};
use crate::plan::TicketWrite;
use crate::store::{self, Claim, NewMessage, Store, StoreError};
pub use intake::ApplyLimits;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;
use tracing::Instrument;

pub mod intake;
mod staff;
mod timers;
pub use staff::{ActionOutcome, SlaHooks, SlaView, StaffAction, TargetView, GRANT_AUDIENCE};
pub use timers::FireTimers;

/// The files and directories inside the data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// The directory itself.
    pub root: PathBuf,
}

/// Why the data directory cannot be used: the path and the cause, said
/// once (the cause is not chained as a source, so `{:#}` does not repeat it).
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot {what} the data directory {}: {error} — it must be a directory writable by the user ticketd runs as",
    path.display()
)]
pub struct DataDirError {
    /// `create` or `write`.
    what: &'static str,
    /// The directory.
    path: PathBuf,
    /// The cause.
    error: std::io::Error,
}

impl DataDir {
    /// Creates the directory if needed and checks that this process can
    /// write in it (a read-only or foreign-owned directory would otherwise
    /// fail later, in SQLite, with no path named).
    pub fn open(root: &Path) -> Result<DataDir, DataDirError> {
        let failed = |what, error| DataDirError {
            what,
            path: root.to_path_buf(),
            error,
        };
        std::fs::create_dir_all(root).map_err(|e| failed("create", e))?;
        let probe = root.join(format!(".ticketd-write-probe-{}", std::process::id()));
        std::fs::File::create(&probe)
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| failed("write", e))?;
        Ok(DataDir {
            root: root.to_path_buf(),
        })
    }
    /// The SQLite database file.
    pub fn database(&self) -> PathBuf {
        self.root.join("ticketd.db")
    }
    /// Where the file transport writes `.eml` files.
    pub fn sent(&self) -> PathBuf {
        self.root.join("sent")
    }
    /// The Maildir `run` watches when none is configured.
    pub fn maildir(&self) -> PathBuf {
        self.root.join("Maildir")
    }
}

/// One message handed to the intake.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The raw bytes, exactly as received.
    pub raw: Vec<u8>,
    /// Where it came from, for the record.
    pub source: String,
    /// When it arrived, as far as the source knows (IMAP INTERNALDATE, the
    /// Maildir file's delivery time, the start of `ingest`, the Discord
    /// message's time); `None` when it knows nothing. The arrival recorded
    /// is chosen from this by [`crate::ingest::arrival::arrival`].
    pub arrived: Option<jiff::Timestamp>,
}

/// What happened to one message: the JSON line `ingest` prints.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Outcome {
    /// created, appended, duplicate, suppressed or quarantined.
    pub action: Action,
    /// The ticket the message is on.
    pub ticket: Option<TicketNumber>,
    /// That ticket's severity.
    pub severity: Option<Severity>,
    /// The message's Message-ID.
    pub message_id: Option<String>,
    /// SHA-256 of the raw bytes.
    pub sha256: String,
    /// mail, auto-reply, bounce or loop (none for quarantined/duplicate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Why.
    pub reason: String,
}

/// Defaults a source gives its messages (`[imap.defaults]`); `None`
/// keeps the desk-wide setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceDefaults {
    /// Confirm new tickets.
    pub confirm: Option<bool>,
    /// Severity when no rule matches.
    pub default_severity: Option<Severity>,
    /// Mail from unknown senders.
    pub unknown_senders: Option<crate::domain::UnknownSenders>,
    /// Language of customer mails when the directory names none.
    pub language: Option<String>,
}

impl From<&crate::config::SourceDefaultsConfig> for SourceDefaults {
    fn from(c: &crate::config::SourceDefaultsConfig) -> Self {
        SourceDefaults {
            confirm: c.confirm,
            default_severity: c.default_severity.and_then(|s| Severity::try_from(s).ok()),
            unknown_senders: c.unknown_senders,
            language: c.language.clone(),
        }
    }
}

/// Where the rules come from.
#[derive(Debug, Clone)]
pub enum RuleSource {
    /// The defaults compiled into the binary.
    Embedded,
    /// Every `*.toml` file in this directory, in name order; with `true`
    /// merged with the embedded defaults by file name.
    Dir(PathBuf, bool),
}

impl RuleSource {
    /// Where `[rules]` of `cfg` says the rules are.
    pub fn of(cfg: &Config) -> RuleSource {
        match &cfg.rules.dir {
            Some(d) => RuleSource::Dir(cfg.resolve(d), cfg.rules.defaults),
            None => RuleSource::Embedded,
        }
    }

    /// Reads and compiles the rules.
    pub fn load(&self) -> Result<RuleSet, RuleError> {
        match self {
            RuleSource::Embedded => RuleSet::embedded(),
            RuleSource::Dir(dir, with_defaults) => {
                let io = |e: std::io::Error| RuleError {
                    file: dir.display().to_string(),
                    line: 0,
                    reason: e.to_string(),
                };
                let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                    .map_err(io)?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .collect();
                files.sort();
                let mut texts = Vec::new();
                for f in files {
                    let text = std::fs::read_to_string(&f).map_err(|e| RuleError {
                        file: f.display().to_string(),
                        line: 0,
                        reason: e.to_string(),
                    })?;
                    texts.push((f.display().to_string(), text));
                }
                if *with_defaults {
                    // By file name: a file of the directory replaces the
                    // default of the same name.
                    let name = |p: &str| {
                        std::path::Path::new(p)
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    };
                    for (n, t) in crate::ingest::classify::EMBEDDED {
                        if !texts.iter().any(|(f, _)| name(f) == *n) {
                            texts.push((n.to_string(), t.to_string()));
                        }
                    }
                    texts.sort_by_key(|(f, _)| name(f));
                }
                if texts.is_empty() {
                    return Err(RuleError {
                        file: dir.display().to_string(),
                        line: 0,
                        reason: "no *.toml rule files in this directory".into(),
                    });
                }
                RuleSet::compile(&texts)
            }
        }
    }
}

/// The intake: configuration, rules and templates, ready to take messages.
/// Rules and templates are loaded on first use, so a reply (which needs
/// neither) costs nothing for them.
#[derive(Debug)]
pub struct Intake {
    decide_cfg: DecideConfig,
    tag: SubjectTag,
    signer: IdSigner,
    limits: ApplyLimits,
    tz: jiff::tz::TimeZone,
    language: String,
    desk_name: String,
    from: String,
    rule_source: RwLock<RuleSource>,
    template_dir: RwLock<Option<PathBuf>>,
    rules: RwLock<Option<Arc<RuleSet>>>,
    templates: RwLock<Option<Arc<Templates>>>,
    customers_dir: RwLock<Option<PathBuf>>,
    customers: RwLock<Arc<Directory>>,
    alert_rules: Vec<GenericAlertRule>,
    flap_window: jiff::SignedDuration,
    /// How long a recovery waits before it resolves (zero: at once).
    recovery_hold: jiff::SignedDuration,
    /// A service's problems join its DOWN host's ticket.
    join_host_down: bool,
    /// SLA policies, audiences and digests (replaced whole on a reload).
    sla: RwLock<Arc<staff::SlaSetup>>,
}

/// A copy of what a lock holds, even if a panicking thread held it (the
/// values behind these locks are replaced whole, never half-written).
fn read<T: Clone>(lock: &RwLock<T>) -> T {
    match lock.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

fn sev(level: u8, fallback: Severity) -> Severity {
    Severity::try_from(i64::from(level)).unwrap_or(fallback)
}

impl Intake {
    /// Builds the intake from a configuration and the data directory's key.
    pub fn new(cfg: &Config, key: MacKey) -> Intake {
        let own: Vec<String> = cfg
            .desk
            .addresses
            .iter()
            .map(|a| a.trim().to_ascii_lowercase())
            .collect();
        let tz = jiff::tz::TimeZone::get(&cfg.desk.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
        Intake {
            decide_cfg: DecideConfig {
                own_addresses: own,
                freemail_domains: cfg
                    .intake
                    .freemail_domains
                    .iter()
                    .map(|d| d.to_ascii_lowercase())
                    .collect(),
                confirm: cfg.autoreply.confirm,
                max_auto_per_hour: cfg.autoreply.max_per_recipient_per_hour,
                default_severity: Severity::try_from(cfg.tickets.default_severity)
                    .unwrap_or(Severity::Malfunction),
                tag: SubjectTag::new(&cfg.tickets.tag, &cfg.tickets.number_prefix),
                unknown_senders: cfg.intake.unknown_senders,
                alert_severity: AlertSeverity {
                    critical_host: sev(cfg.alerts.critical_host_severity, Severity::Critical),
                    critical: sev(cfg.alerts.critical_severity, Severity::Production),
                    warning: sev(cfg.alerts.warning_severity, Severity::Malfunction),
                },
                default_account_manager: cfg
                    .customers
                    .default_account_manager
                    .as_ref()
                    .map(|a| a.trim().to_ascii_lowercase())
                    .filter(|a| !a.is_empty()),
                // Staff members answering in the Discord intake channel
                // write from the staff domain of Discord addresses.
                staff: cfg
                    .desk
                    .staff
                    .iter()
                    .map(|a| a.trim().to_ascii_lowercase())
                    .chain(
                        (cfg.discord.enabled && cfg.discord.intake.is_some())
                            .then(|| format!("@{}", crate::sources::discord::STAFF_DOMAIN)),
                    )
                    .collect(),
            },
            alert_rules: cfg
                .alerts
                .generic
                .iter()
                .filter_map(|g| GenericAlertRule::compile(&g.name, g).ok())
                .collect(),
            join_host_down: cfg.alerts.join_host_down,
            recovery_hold: jiff::SignedDuration::from_mins(
                i64::try_from(cfg.alerts.recovery_hold_minutes).unwrap_or(i64::MAX / 120),
            ),
            flap_window: jiff::SignedDuration::from_mins(
                i64::try_from(cfg.alerts.flap_window_minutes).unwrap_or(i64::MAX / 120),
            ),
            tag: SubjectTag::new(&cfg.tickets.tag, &cfg.tickets.number_prefix),
            signer: IdSigner::new(key, &cfg.desk.id_domain()),
            limits: ApplyLimits {
                max_attachment_bytes: cfg.intake.max_attachment_bytes,
                max_attachments: cfg.intake.max_attachments,
                max_body_bytes: cfg.intake.max_body_bytes,
                number_prefix: cfg.tickets.number_prefix.clone(),
                number_start: cfg.tickets.number_start,
            },
            tz,
            language: cfg.desk.language.clone(),
            desk_name: cfg.desk.name.clone(),
            from: cfg.desk.from_address().to_string(),
            rule_source: RwLock::new(RuleSource::of(cfg)),
            template_dir: RwLock::new(cfg.templates.dir.as_ref().map(|d| cfg.resolve(d))),
            rules: RwLock::new(None),
            templates: RwLock::new(None),
            customers_dir: RwLock::new(None),
            customers: RwLock::new(Arc::new(Directory::default())),
            sla: RwLock::new(Arc::new(staff::SlaSetup::new(cfg))),
        }
    }

    /// Reads the customer directory from `dir` (reloaded with the rules on
    /// SIGHUP); without it no sender belongs to an organisation.
    pub fn with_customers(mut self, dir: PathBuf) -> Result<Intake, DirectoryError> {
        let d = Directory::load(&dir)?;
        self.customers = RwLock::new(Arc::new(d));
        self.customers_dir = RwLock::new(Some(dir));
        Ok(self)
    }

    /// The customer directory as loaded.
    pub fn customers(&self) -> Arc<Directory> {
        self.customers
            .read()
            .map(|d| d.clone())
            .unwrap_or_else(|_| Arc::new(Directory::default()))
    }

    /// What the rules see of a message besides the mail itself: the
    /// monitoring alert it is, and its organisation — an alert's belongs to
    /// the owner of its host, whoever sent it (the provider's own
    /// monitoring), other mail to the sender's.
    pub fn context<'d>(
        &self,
        directory: &'d Directory,
        mail: &ParsedMail,
    ) -> (Option<Alert>, Option<&'d Organisation>) {
        let alert = parse_alert(mail, &self.alert_rules);
        let org = alert
            .as_ref()
            .and_then(|a| directory.lookup_host(&a.host))
            .or_else(|| {
                mail.from
                    .as_ref()
                    .and_then(|f| directory.lookup(&f.address))
            });
        (alert, org)
    }

    /// The compiled rules, compiling them on first use.
    pub fn rules(&self) -> Result<Arc<RuleSet>, RuleError> {
        if let Some(r) = self.rules.read().ok().and_then(|g| g.clone()) {
            return Ok(r);
        }
        let r = Arc::new(read(&self.rule_source).load()?);
        if let Ok(mut g) = self.rules.write() {
            *g = Some(r.clone());
        }
        Ok(r)
    }

    /// Rules and templates for a write about to open (see [`Loaded`]).
    fn loaded(&self) -> Loaded {
        Loaded {
            rules: self.rules().map_err(|e| e.to_string()),
            templates: self.templates(),
        }
    }

    /// The templates, loaded on first use.
    pub fn templates(&self) -> Result<Arc<Templates>, String> {
        if let Some(t) = self.templates.read().ok().and_then(|g| g.clone()) {
            return Ok(t);
        }
        let t = Arc::new(
            Templates::load(read(&self.template_dir).as_deref())
                .map_err(|e: TemplateError| e.to_string())?,
        );
        if let Ok(mut g) = self.templates.write() {
            *g = Some(t.clone());
        }
        Ok(t)
    }

    /// Loads rules and templates and checks that they fit together (every
    /// template a route rule answers with exists in the desk's language);
    /// returns the number of rules. For start-up and `check-config`.
    pub fn verify(&self) -> Result<usize, String> {
        let rules = self.rules().map_err(|e| format!("rules: {e}"))?;
        let templates = self.templates().map_err(|e| format!("templates: {e}"))?;
        self.check_replies(&rules, &templates)?;
        for w in self.verify_sla()? {
            tracing::warn!("{w}");
        }
        Ok(rules.len())
    }

    fn check_replies(&self, rules: &RuleSet, templates: &Templates) -> Result<(), String> {
        for (rule, t) in rules.replies() {
            for part in ["subject", "txt"] {
                let name = format!("{t}.{}.{part}", self.language);
                if !templates.has(&name) {
                    return Err(format!(
                        "rules: {rule}: reply template {name} does not exist (put it in the templates directory)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The language of the mails about a message, in this order: the
    /// ticket's recorded one (a follow-up stays in its ticket's language),
    /// the directory's for the sender (contact, then organisation), the
    /// mailbox's (`[imap.defaults] language`), the one detected from the
    /// mail's own text, the desk's.
    fn choose_language(
        &self,
        decision: &Decision,
        mail: &ParsedMail,
        org: Option<&Organisation>,
        mailbox: Option<&str>,
    ) -> String {
        if let Target::Existing { ticket, .. } = &decision.target {
            if let Some(l) = &ticket.language {
                return l.clone();
            }
        }
        let sender = mail.from.as_ref().map(|f| f.address.as_str()).unwrap_or("");
        org.and_then(|o| o.language_of(sender))
            .or(mailbox)
            .or_else(|| crate::ingest::language::detect(mail))
            .unwrap_or(&self.language)
            .to_string()
    }

    /// `wanted` when the template exists in that language, else the desk's.
    fn language_in<'a>(
        &'a self,
        wanted: Option<&'a str>,
        templates: &Templates,
        template: &str,
    ) -> &'a str {
        match wanted {
            Some(l)
                if templates.has(&format!("{template}.{l}.txt"))
                    && templates.has(&format!("{template}.{l}.subject")) =>
            {
                l
            }
            _ => &self.language,
        }
    }

    /// A fresh signed Message-ID for an automatic mail: one that names the
    /// ticket, or (none) a notice's of its own.
    fn new_message_id(&self, n: Option<&TicketNumber>) -> Result<crate::domain::MessageId, String> {
        let mut nonce = [0u8; 6];
        getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
        let nonce = hex::encode(nonce);
        Ok(match n {
            Some(n) => self.signer.message_id(n, &nonce),
            None => self.signer.notice_id(&nonce),
        })
    }

    /// A fresh signed Message-ID for a mail to staff: a staff id naming the
    /// ticket it is about, or (none) a digest id.
    fn new_staff_id(&self, n: Option<&TicketNumber>) -> Result<crate::domain::MessageId, String> {
        let mut nonce = [0u8; 6];
        getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
        let nonce = hex::encode(nonce);
        Ok(match n {
            Some(n) => self.signer.staff_id(n, &nonce),
            None => self.signer.digest_id(&nonce),
        })
    }

    /// The mails telling an organisation's `notify_status` recipients that
    /// a ticket was resolved by a timer (a monitoring recovery's
    /// hold-down); a mail that cannot be built is logged and left out.
    pub fn status_mails(&self, t: &store::ResolvedTicket, now: jiff::Timestamp) -> Vec<Outgoing> {
        let directory = self.customers();
        let Some(org) = t.organisation.as_deref().and_then(|id| directory.get(id)) else {
            return Vec::new();
        };
        let templates = match self.templates() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "templates cannot be loaded; no status mail");
                return Vec::new();
            }
        };
        let tag = self.tag.render(&t.number);
        let facts = [
            ("status".to_string(), "resolved".to_string()),
            ("why".to_string(), t.why.clone()),
        ];
        let mut out = Vec::new();
        for a in &org.notify_status {
            // Each recipient in the language the directory gives them.
            let mail = staff::OwnMail {
                template: "status",
                number: Some(&t.number),
                names_ticket: true,
                to_staff: false,
                tag: &tag,
                subject: &t.subject,
                severity: t.severity,
                facts: &facts,
                body: "",
                language: Some(self.language_in(org.language_of(a), &templates, "status")),
            };
            let to = Mailbox {
                address: a.clone(),
                name: None,
            };
            let built = self.own_mail(&mail, &to, now);
            match built {
                Ok(m) => out.push(m),
                Err(e) => {
                    tracing::error!(ticket = %t.number, to = %a, error = %e, "no status mail")
                }
            }
        }
        out
    }

    /// Re-reads rules, templates, SLA policies and the customer directory
    /// together; when one has an error none is replaced, and the error is
    /// returned.
    pub fn reload(&self) -> Result<usize, String> {
        let rule_source = read(&self.rule_source);
        let template_dir = read(&self.template_dir);
        let customers_dir = read(&self.customers_dir);
        let sla = self.sla();
        let policies = sla.load().map_err(|e| format!("sla: {e}"))?;
        self.put_in_force(rule_source, template_dir, customers_dir, None, policies)
    }

    /// Puts what a re-read configuration file names in force: its rules
    /// (`[rules]`), templates (`[templates]`), SLA policies, audiences and
    /// digests (`[sla]`) and the customer directory `customers_dir`, all
    /// read and checked first; when one has an error none is replaced,
    /// and the error is returned. Returns the number of rules. What else
    /// the file says needs a restart (the daemon tells which).
    pub fn reload_from(&self, cfg: &Config, customers_dir: PathBuf) -> Result<usize, String> {
        let sla = staff::SlaSetup::new(cfg);
        let policies = sla.load().map_err(|e| format!("sla: {e}"))?;
        self.put_in_force(
            RuleSource::of(cfg),
            cfg.templates.dir.as_ref().map(|d| cfg.resolve(d)),
            Some(customers_dir),
            Some(sla),
            policies,
        )
    }

    /// Loads rules, templates and customers from these sources, checks
    /// them together, and only then replaces the ones in force.
    fn put_in_force(
        &self,
        rule_source: RuleSource,
        template_dir: Option<PathBuf>,
        customers_dir: Option<PathBuf>,
        sla: Option<staff::SlaSetup>,
        policies: crate::sla::policy::Policies,
    ) -> Result<usize, String> {
        let rules = Arc::new(rule_source.load().map_err(|e| format!("rules: {e}"))?);
        let templates = Arc::new(
            Templates::load(template_dir.as_deref()).map_err(|e| format!("templates: {e}"))?,
        );
        self.check_replies(&rules, &templates)?;
        let customers = match &customers_dir {
            Some(dir) => Some(Arc::new(
                Directory::load(dir).map_err(|e| format!("customers: {e}"))?,
            )),
            None => None,
        };
        let n = rules.len();
        if let (Ok(mut r), Ok(mut t), Ok(mut c)) = (
            self.rules.write(),
            self.templates.write(),
            self.customers.write(),
        ) {
            *r = Some(rules);
            *t = Some(templates);
            match sla {
                Some(setup) => {
                    if let Ok(mut s) = self.sla.write() {
                        *s = Arc::new(setup.with_policies(policies));
                    }
                }
                None => self.set_policies(policies),
            }
            if let Some(d) = customers {
                *c = d;
            }
            if let Ok(mut g) = self.rule_source.write() {
                *g = rule_source;
            }
            if let Ok(mut g) = self.template_dir.write() {
                *g = template_dir;
            }
            if let Ok(mut g) = self.customers_dir.write() {
                *g = customers_dir;
            }
        }
        Ok(n)
    }

    /// The default severity.
    pub fn default_severity(&self) -> Severity {
        self.decide_cfg.default_severity
    }

    /// Stores and decides a batch of messages in one transaction. Each
    /// message gets its own result: an error means that message is not
    /// stored (and must be retried by whoever handed it over).
    pub async fn ingest_batch(
        &self,
        store: &Store,
        items: &[Incoming],
        now: jiff::Timestamp,
    ) -> Vec<Result<Outcome, StoreError>> {
        self.ingest_batch_from(store, items, now, &SourceDefaults::default())
            .await
    }

    /// [`Intake::ingest_batch`] for a source with defaults of its own (a
    /// monitoring mailbox that gets no confirmations, say).
    pub async fn ingest_batch_from(
        &self,
        store: &Store,
        items: &[Incoming],
        now: jiff::Timestamp,
        defaults: &SourceDefaults,
    ) -> Vec<Result<Outcome, StoreError>> {
        let parsed: Vec<Result<ParsedMail, ParseFailure>> =
            items.iter().map(|i| parse(&i.raw)).collect();
        let cfg_for_source;
        let cfg = if defaults.confirm.is_none()
            && defaults.default_severity.is_none()
            && defaults.unknown_senders.is_none()
        {
            &self.decide_cfg
        } else {
            cfg_for_source = DecideConfig {
                confirm: defaults.confirm.unwrap_or(self.decide_cfg.confirm),
                default_severity: defaults
                    .default_severity
                    .unwrap_or(self.decide_cfg.default_severity),
                unknown_senders: defaults
                    .unknown_senders
                    .unwrap_or(self.decide_cfg.unknown_senders),
                ..self.decide_cfg.clone()
            };
            &cfg_for_source
        };
        let instants = self.instants(now);
        // Rules and templates are loaded (from their files on first use)
        // before the write opens: nothing is read while it holds the lock.
        let loaded = self.loaded();
        match self
            .store_batch(
                store,
                items,
                &parsed,
                &instants,
                &loaded,
                cfg,
                defaults.language.as_deref(),
            )
            .await
        {
            Ok(results) => results,
            Err(e) => {
                let msg = e.to_string();
                items
                    .iter()
                    .map(|_| Err(StoreError::NotStored(msg.clone())))
                    .collect()
            }
        }
    }

    /// Stores a batch in one transaction. Should any message fail, the
    /// transaction is rolled back and every message is stored in a
    /// transaction of its own, so one bad message fails alone. (No savepoint
    /// per message: they cost a statement journal and two round trips each.)
    #[allow(clippy::too_many_arguments)]
    async fn store_batch(
        &self,
        store: &Store,
        items: &[Incoming],
        parsed: &[Result<ParsedMail, ParseFailure>],
        t: &Instants,
        loaded: &Loaded,
        cfg: &DecideConfig,
        language: Option<&str>,
    ) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
        if items.len() > 1 {
            let mut tx = store.begin().await?;
            let mut results = Vec::with_capacity(items.len());
            let mut failed = false;
            for (item, p) in items.iter().zip(parsed) {
                match self
                    .store_one(&mut tx, item, p, t, loaded, cfg, language)
                    .await
                {
                    Ok(o) => results.push(Ok(o)),
                    Err(e) => {
                        tracing::warn!(source = %item.source, error = %e, "batch rolled back; storing one by one");
                        failed = true;
                        break;
                    }
                }
            }
            if !failed {
                tx.commit().await?;
                return Ok(results);
            }
            tx.rollback().await?;
        }
        let mut results = Vec::with_capacity(items.len());
        for (item, p) in items.iter().zip(parsed) {
            let one = async {
                let mut tx = store.begin().await?;
                let o = self
                    .store_one(&mut tx, item, p, t, loaded, cfg, language)
                    .await?;
                tx.commit().await?;
                Ok(o)
            }
            .await;
            if let Err(e) = &one {
                tracing::error!(source = %item.source, error = %e, "message not stored");
            }
            results.push(one);
        }
        Ok(results)
    }

    #[allow(clippy::too_many_arguments)]
    async fn store_one(
        &self,
        conn: &mut sqlx::SqliteConnection,
        item: &Incoming,
        parsed: &Result<ParsedMail, ParseFailure>,
        t: &Instants,
        loaded: &Loaded,
        cfg: &DecideConfig,
        language: Option<&str>,
    ) -> Result<Outcome, StoreError> {
        let (sha, mid) = match parsed {
            Ok(p) => (p.sha256.clone(), p.message_id.clone()),
            Err(_) => (sha256_hex(&item.raw), None),
        };
        // The ticket number is recorded into the span once it is known, so
        // every later line of this message carries it.
        let span = tracing::info_span!(
            "message",
            message_id = mid.as_ref().map(|m| m.as_str()).unwrap_or(""),
            sha256 = %&sha[..12],
            source = %item.source,
            ticket = tracing::field::Empty,
        );
        self.store_one_in(conn, item, parsed, t, loaded, sha, mid, cfg, language)
            .instrument(span)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn store_one_in(
        &self,
        conn: &mut sqlx::SqliteConnection,
        item: &Incoming,
        parsed: &Result<ParsedMail, ParseFailure>,
        t: &Instants,
        loaded: &Loaded,
        sha: String,
        mid: Option<crate::domain::MessageId>,
        cfg: &DecideConfig,
        mailbox_language: Option<&str>,
    ) -> Result<Outcome, StoreError> {
        let probe = parsed.as_ref().ok().map(|mail| {
            let verdict = guard::check(mail, &cfg.own_addresses);
            let keys = lookup_keys(mail, &self.tag, &self.signer);
            (mail, verdict, keys)
        });
        let directory = self.customers();
        let (alert, org) = match &probe {
            Some((mail, _, _)) => self.context(&directory, mail),
            None => (None, None),
        };
        let incident = alert
            .as_ref()
            .map(|a| incident_key(org.map(|o| o.id.as_str()), a));
        let host_incident = alert
            .as_ref()
            .filter(|_| self.join_host_down)
            .and_then(|a| host_incident_key(org.map(|o| o.id.as_str()), a));
        // When it arrived: what the source knows, else the top Received
        // header, never after this commit (the receipt timestamp and the
        // start of the SLA clocks).
        let arrived = arrival::arrival(
            item.arrived,
            parsed.as_ref().ok().and_then(arrival::top_received),
            t.now,
        );
        let arrived_at = store::ts(arrived);
        let claim = store::claim(
            conn,
            &NewMessage {
                raw: &item.raw,
                source: &item.source,
                arrived_at: &arrived_at,
                message_id: mid.as_ref(),
                sha256: &sha,
                dedupe_key: &crate::ingest::dedupe_key(parsed.as_ref().ok(), &sha),
            },
            probe
                .as_ref()
                .map(|(mail, verdict, keys)| store::Probe {
                    keys,
                    reply_address: if verdict.is_machine() {
                        None
                    } else {
                        mail.reply_address().map(|m| m.address.as_str())
                    },
                    hour_ago: &t.hour_ago,
                    organisation: org.map(|o| o.id.as_str()),
                    quarter_start: &t.quarter_start,
                    incident: incident.as_deref(),
                    host_incident: host_incident.as_deref(),
                })
                .as_ref(),
            &t.at,
        )
        .await?;
        let (row, mut look, next, org_cases) = match claim {
            Claim::Duplicate { ticket, severity } => {
                tracing::info!(ticket = ticket.as_ref().map(|t| t.as_str()), "duplicate");
                return Ok(Outcome {
                    action: Action::Duplicate,
                    ticket,
                    severity,
                    message_id: mid.map(|m| m.0),
                    sha256: sha,
                    kind: None,
                    reason: "this message was stored before".into(),
                });
            }
            Claim::New { row, found, next } => {
                let org_cases = found.org_cases;
                let look = match &probe {
                    Some((_, _, keys)) => Lookups::from_found(*found, keys, &t.flap_since),
                    None => Lookups::default(),
                };
                (row, look, next, org_cases)
            }
        };
        look.alert = alert;
        look.mailbox = Some(mailbox_of(&item.source).to_string());
        look.hold_until = t.hold_until.clone();
        look.organisation = org.map(|o| OrgFacts {
            id: o.id.clone(),
            plan: o.plan.clone(),
            account_manager: o.account_manager.clone(),
            cases_per_quarter: o
                .plan
                .as_deref()
                .and_then(|p| directory.plan(p))
                .and_then(|p| p.cases_per_quarter),
            main_contacts_allowed: o
                .plan
                .as_deref()
                .and_then(|p| directory.plan(p))
                .and_then(|p| p.main_contacts),
            main_contacts: o
                .main_contact_list()
                .into_iter()
                .map(str::to_string)
                .collect(),
            cases_this_quarter: org_cases,
            critical_hosts: o.critical_hosts.clone(),
            notify_new: o.notify_new.clone(),
            notify_status: o.notify_status.clone(),
        });
        let Some((mail, verdict, _)) = &probe else {
            let reason = match parsed {
                Err(e) => e.0.as_str(),
                Ok(_) => "not parsed",
            };
            store::quarantine(conn, row, reason, &t.at).await?;
            tracing::warn!(reason = %reason, "quarantined");
            return Ok(Outcome {
                action: Action::Quarantined,
                ticket: None,
                severity: None,
                message_id: None,
                sha256: sha,
                kind: None,
                reason: reason.to_string(),
            });
        };
        let mail = *mail;
        let mut extra_notes = Vec::new();
        let mut classify = |m: &ParsedMail, facts: &Facts<'_>| match &loaded.rules {
            Ok(r) => r.classify(m, facts),
            Err(e) => {
                tracing::error!(error = %e, "rules cannot be loaded; default severity used");
                extra_notes.push(format!(
                    "Rules could not be loaded ({e}); default severity used."
                ));
                Classification::default()
            }
        };
        let mut decision = decide(mail, verdict, &look, cfg, &mut classify);
        decision.notes.append(&mut extra_notes);
        let language = self.choose_language(&decision, mail, org, mailbox_language);
        if let Target::New(t) = &mut decision.target {
            t.language = Some(language.clone());
        }
        let clean_subject = self.tag.strip(&mail.subject);
        // The ticket's thread, for the mails of ours on an existing ticket.
        let on_ticket = match &decision.target {
            crate::ingest::decide::Target::Existing { ticket, .. } => Some(ticket),
            _ => None,
        };
        let customer = mail
            .from
            .as_ref()
            .map(|f| f.address.clone())
            .unwrap_or_default();
        let mut build = |notice: Option<&Notice>,
                         n: Option<&TicketNumber>,
                         to: &Mailbox,
                         sev: Option<Severity>| {
            let templates = &**loaded.templates.as_ref().map_err(|e| e.clone())?;
            // A notice to the account manager is a mail to staff: an answer
            // to it is a note on the ticket, never a customer's mail.
            let to_staff = notice.is_some_and(|x| x.kind == NoticeKind::OverQuota);
            let mid = if to_staff {
                self.new_staff_id(n)?
            } else {
                self.new_message_id(n)?
            };
            // The receipt timestamp: the message's arrival, desk time.
            let received_at = self.local_time(arrived);
            let tag = n.map(|n| self.tag.render(n)).unwrap_or_default();
            // An answer to the customer's mail threads with it; a notice
            // to the account manager is a mail of its own.
            let (template, answer) = match notice {
                None => ("confirmation", true),
                Some(x) => (x.template(), x.kind.answers()),
            };
            // A forward carries the message whole, and answers go to its
            // sender.
            let forward = notice.is_some_and(|x| x.kind == NoticeKind::Forward);
            // A relayed staff reply answers the customer's newest mail, with
            // the ticket's thread as References, whatever the staff
            // member's own mail carried; a notice to the customer's people
            // on an existing ticket threads with it too.
            let relay = notice.is_some_and(|x| x.kind.personal());
            let (in_reply_to, references): (Option<&MessageId>, Vec<MessageId>) =
                match (answer, on_ticket) {
                    (true, _) => (mail.message_id.as_ref(), mail.references.clone()),
                    (false, _) if to_staff => (None, Vec::new()),
                    (false, Some(t)) if relay => (
                        t.last_inbound.as_ref().or(mail.in_reply_to.first()),
                        t.thread.clone(),
                    ),
                    (false, Some(t)) => {
                        let mut refs = t.thread.clone();
                        if let Some(id) = &mail.message_id {
                            refs.retain(|r| r != id);
                            refs.push(id.clone());
                        }
                        (mail.message_id.as_ref().or(t.last_inbound.as_ref()), refs)
                    }
                    // A new ticket's notice: the mail that opened it.
                    (false, None) if n.is_some() && !forward => {
                        (mail.message_id.as_ref(), mail.references.clone())
                    }
                    (false, None) => (None, Vec::new()),
                };
            confirmation(
                templates,
                &Confirmation {
                    template,
                    auto_submitted: if relay {
                        ""
                    } else if answer {
                        "auto-replied"
                    } else {
                        "auto-generated"
                    },
                    number: n,
                    tag: &tag,
                    customer: &customer,
                    facts: notice.map(|x| x.facts.as_slice()).unwrap_or(&[]),
                    subject: &clean_subject,
                    body: &mail.body,
                    severity: sev.unwrap_or(Severity::Malfunction),
                    received_at: &received_at,
                    language: self.language_in(Some(&language), templates, template),
                    desk_name: &self.desk_name,
                    from: &self.from,
                    to,
                    in_reply_to,
                    references: &references,
                    message_id: &mid,
                    date: SystemTime::from(t.now),
                    attach: forward.then_some(item.raw.as_slice()),
                    reply_to: mail.reply_address().filter(|_| forward),
                    cc: &[],
                },
            )
            .map_err(|e| e.to_string())
        };
        let (mut plan, clock_moved) = intake::intake_plan(
            row,
            next.seq,
            mail,
            &decision,
            &self.limits,
            &mut build,
            &t.at,
            &arrived_at,
        );
        let hooks = self.hooks(t.now);
        if let TicketWrite::New(row) = &mut plan.ticket {
            row.sla =
                timers::new_ticket_sla(hooks.context().as_ref(), &decision, &arrived_at, &t.at);
        }
        let applied = store::write_intake(conn, next, &plan).await?;
        if let Some(n) = &applied.ticket {
            tracing::Span::current().record("ticket", n.as_str());
        }
        // A ticket from before languages were recorded gets the one chosen
        // now; a new one has it from its plan.
        if let (Some(id), Target::Existing { ticket, .. }) = (applied.ticket_id, &decision.target) {
            if ticket.language.is_none() {
                store::set_ticket_language(conn, id, &language).await?;
            }
        }
        if let (true, Some(id), Some(ctx)) = (clock_moved, applied.ticket_id, hooks.context()) {
            timers::sync(conn, id, &ctx, t.now).await?;
        }
        tracing::info!(
            action = decision.action.as_str(),
            ticket = applied.ticket.as_ref().map(|t| t.as_str()),
            "{}",
            decision.reason
        );
        Ok(Outcome {
            action: decision.action,
            ticket: applied.ticket,
            severity: applied.severity,
            message_id: mail.message_id.as_ref().map(|m| m.0.clone()),
            sha256: sha,
            kind: Some(decision.kind.as_str().to_string()),
            reason: decision.reason,
        })
    }
}

/// The rules and templates of one batch, loaded before its write opens.
struct Loaded {
    rules: Result<Arc<RuleSet>, String>,
    templates: Result<Arc<Templates>, String>,
}

impl Intake {
    /// Releases quarantined message `id` (`quarantine release`): its raw
    /// bytes go through the intake again, as from its original source,
    /// with today's parser, rules and configuration, in one transaction
    /// with taking it out of quarantine. The quarantined row keeps its
    /// bytes (marked `released`) and records by `author` what became of
    /// it; should the intake quarantine it again, that is a new
    /// quarantined row with the same bytes, so nothing is lost.
    /// `defaults_of` gives the defaults of a source by its record (an IMAP
    /// mailbox's `[imap.defaults]`), as when it came in.
    pub async fn release(
        &self,
        store: &Store,
        id: i64,
        author: &str,
        now: jiff::Timestamp,
        defaults_of: impl Fn(&str) -> SourceDefaults,
    ) -> Result<Outcome, store::admin::AdminError> {
        let (view, raw, arrived) = store.quarantined(id).await?;
        let d = defaults_of(&view.source);
        let cfg = DecideConfig {
            confirm: d.confirm.unwrap_or(self.decide_cfg.confirm),
            default_severity: d
                .default_severity
                .unwrap_or(self.decide_cfg.default_severity),
            unknown_senders: d.unknown_senders.unwrap_or(self.decide_cfg.unknown_senders),
            ..self.decide_cfg.clone()
        };
        // It arrived when it was first received, not at its release.
        let item = Incoming {
            raw,
            source: view.source,
            arrived,
        };
        let parsed = parse(&item.raw);
        let t = self.instants(now);
        let loaded = self.loaded();
        let mut tx = store.begin().await?;
        store::admin::release_quarantined(&mut tx, id).await?;
        let outcome = self
            .store_one(
                &mut tx,
                &item,
                &parsed,
                &t,
                &loaded,
                &cfg,
                d.language.as_deref(),
            )
            .await?;
        let detail = format!(
            "quarantined message {id} released by {author}: {}{} ({})",
            outcome.action.as_str(),
            outcome
                .ticket
                .as_ref()
                .map(|n| format!(" ticket {n}"))
                .unwrap_or_default(),
            outcome.reason
        );
        store::admin::record_release(
            &mut tx,
            id,
            outcome.ticket.as_ref().map(|n| n.as_str()),
            &detail,
            &t.at,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            message = id,
            action = outcome.action.as_str(),
            "released from quarantine"
        );
        Ok(outcome)
    }
}

/// The mailbox name rules see for a message's source: an IMAP mailbox's
/// name (`imap:NAME/folder/validity/uid`) or a Graph mailbox's
/// (`graph:NAME/folder/id`), else the kind of source (`pipe`, `stdin`,
/// `file`, `maildir`).
pub fn mailbox_of(source: &str) -> &str {
    match source.split_once(':') {
        Some(("imap" | "graph", rest)) => rest.split('/').next().unwrap_or(rest),
        Some((kind, _)) => kind,
        None => source,
    }
}

/// The instants of one batch, formatted once: every message of a batch is
/// stored at the same `now`.
#[derive(Debug)]
struct Instants {
    now: jiff::Timestamp,
    /// `now` as stored.
    at: String,
    /// One hour before, for the hourly limit of automatic mails.
    hour_ago: String,
    /// The start of the calendar quarter, for plan quotas.
    quarter_start: String,
    /// The start of the flap window of monitoring incidents.
    flap_since: String,
    /// When a recovery received now resolves its ticket, if not at once.
    hold_until: Option<String>,
}

impl Intake {
    fn instants(&self, now: jiff::Timestamp) -> Instants {
        Instants {
            now,
            at: store::ts(now),
            hour_ago: store::ts(now - jiff::SignedDuration::from_hours(1)),
            quarter_start: quarter_start(now, &self.tz),
            flap_since: store::ts(now - self.flap_window),
            hold_until: (!self.recovery_hold.is_zero())
                .then(|| store::ts(now + self.recovery_hold)),
        }
    }

    /// An instant as customers read it in mails (desk time zone).
    fn local_time(&self, t: jiff::Timestamp) -> String {
        t.to_zoned(self.tz.clone())
            .strftime("%d.%m.%Y %H:%M:%S %Z")
            .to_string()
    }
}

/// The first instant of the calendar quarter `now` is in, in `tz`.
fn quarter_start(now: jiff::Timestamp, tz: &jiff::tz::TimeZone) -> String {
    let z = now.to_zoned(tz.clone());
    let month = (z.month() - 1) / 3 * 3 + 1;
    jiff::civil::date(z.year(), month, 1)
        .to_zoned(tz.clone())
        .map(|start| store::ts(start.timestamp()))
        .unwrap_or_else(|_| store::ts(now))
}

/// Opens the store of a data directory (or the configured URL) and applies
/// migrations.
pub async fn open_store(
    cfg: &Config,
    data: &DataDir,
    max_connections: u32,
) -> Result<Store, StoreError> {
    let store = match &cfg.database.url {
        Some(url) => Store::open_url(url, max_connections).await?,
        None => Store::open_sqlite(&data.database(), max_connections).await?,
    };
    store.migrate().await?;
    Ok(store)
}
