//! IMAP intake: one task per configured mailbox, pushed by IDLE (RFC 2177)
//! or polling where the server has none.
//!
//! A round reads the folder's UIDs, fetches the ones above the UID cursor in
//! batches (`BODY.PEEK[]`, so fetching sets no flag), stores them, and only
//! after the commit flags them \Seen and moves them to the processed folder
//! (a quarantined message to the quarantine folder). MOVE (RFC 6851) where
//! the server has it, else COPY, \Deleted and UID EXPUNGE (UIDPLUS). The
//! cursor (UIDVALIDITY and the highest UID below which everything is
//! stored) is kept in the database, so \Seen set by another client never
//! hides a message and a restart never re-reads the folder; when the server
//! renumbers the folder (a new UIDVALIDITY) it is read again from the start
//! and dedupe makes that harmless. A message stored but not yet moved (a
//! crash, a failed MOVE) is moved on the next round.
//!
//! Connection trouble ends the session; the task reconnects with
//! exponential backoff and jitter (1 s doubling to 5 min).

use crate::config::{Config, ImapConfig, ImapTls};
use crate::credential::{Credential, CredentialSource, OAuthMechanism, TokenProvider};
use crate::domain::Action;
use crate::outbound::Wake;
use crate::service::{Incoming, Intake, SourceDefaults};
use crate::store::{Store, StoreError};
use futures_util::TryStreamExt;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::rustls::{self, pki_types::pem::PemObject, pki_types::CertificateDer};

/// Longest wait for one command's answer before the connection counts as
/// dead.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// First reconnect delay (and the Graph source's after a failed round);
/// doubles up to [`MAX_BACKOFF`].
pub(crate) const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest reconnect delay.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why an IMAP session ended.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    /// The server said no, or the protocol broke.
    #[error("imap: {0}")]
    Imap(#[from] async_imap::error::Error),
    /// The connection failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// A command got no answer in time.
    #[error("{0}: no answer within {secs} s", secs = IO_TIMEOUT.as_secs())]
    Timeout(&'static str),
    /// The password or token could not be had, or the TLS setup is
    /// unusable.
    #[error("{0}")]
    Setup(String),
    /// The server refused the credential: a wrong password, or an access
    /// token that is expired, revoked or not for this mailbox. Distinct
    /// from connection trouble: a token is invalidated on it.
    #[error("authentication failed ({mechanism}): {reason}")]
    Auth {
        /// The SASL mechanism or `LOGIN`.
        mechanism: &'static str,
        /// The server's answer (and its error challenge, for a token).
        reason: String,
    },
    /// The server offers no SASL mechanism for a bearer token.
    #[error("the server offers neither AUTH=XOAUTH2 nor AUTH=OAUTHBEARER (it offers {offered}): it cannot log in with an OAuth 2.0 access token")]
    NoOAuthMechanism {
        /// The AUTH= capabilities it named.
        offered: String,
    },
    /// Messages could not be stored; they stay on the server.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Any stream a session can run over: TCP, or TLS on TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Io for T {}

type Session = async_imap::Session<Box<dyn Io>>;
type Client = async_imap::Client<Box<dyn Io>>;

impl ImapError {
    /// Whether the server refused the credential (as opposed to a
    /// connection, protocol or setup failure).
    pub fn is_auth(&self) -> bool {
        matches!(self, ImapError::Auth { .. })
    }
}

/// What a source task reports about its mailbox's health.
pub trait SyncObserver: Send + Sync {
    /// A round finished: the folder holds nothing that is not stored.
    fn synced(&self, mailbox: &str);
    /// A message was decided; `latency` runs from its arrival on the
    /// server (INTERNALDATE) to the commit.
    fn decided(&self, action: Action, latency: Duration);
    /// The mailbox logged in (`true`) or lost its connection (`false`).
    fn connected(&self, _mailbox: &str, _up: bool) {}
    /// The service took (`true`) or refused (`false`) the mailbox's
    /// credential; a source that learns it from the service, not from
    /// the token endpoint (Graph's 401), says so here.
    fn auth(&self, _mailbox: &str, _ok: bool) {}
}

impl SyncObserver for crate::metrics::Metrics {
    fn synced(&self, mailbox: &str) {
        self.mailbox_synced(mailbox);
    }
    fn connected(&self, mailbox: &str, up: bool) {
        self.mailbox_connected(mailbox, up);
    }
    fn auth(&self, mailbox: &str, ok: bool) {
        self.mailbox_auth(mailbox, ok);
    }
    fn decided(&self, action: Action, latency: Duration) {
        self.message_decided("imap", action.as_str());
        self.ingest_latency("imap", latency);
    }
}

/// One configured mailbox, ready to run.
pub struct ImapSource {
    cfg: ImapConfig,
    label: String,
    login: CredentialSource,
    tls: Option<tokio_rustls::TlsConnector>,
    defaults: SourceDefaults,
    /// `[intake] max_message_bytes`: bigger messages stay in the folder.
    max_bytes: u64,
    /// Messages (UIDVALIDITY, UID) found too big, told once and never
    /// moved by this process.
    too_big: std::sync::Mutex<BTreeSet<(u32, u32)>>,
}

impl std::fmt::Debug for ImapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapSource")
            .field("mailbox", &self.label)
            .finish_non_exhaustive()
    }
}

impl ImapSource {
    /// Builds the source for `m`; the TLS trust anchors are read here, so a
    /// bad `ca_file` is an error at start.
    pub fn new(cfg: &Config, m: &ImapConfig) -> Result<ImapSource, String> {
        let label = m.label();
        let tls = match m.tls {
            ImapTls::Plain => None,
            ImapTls::Implicit | ImapTls::Starttls => {
                let mut roots = rustls::RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                if let Some(ca) = &m.ca_file {
                    let path = cfg.resolve(ca);
                    let certs = CertificateDer::pem_file_iter(&path)
                        .map_err(|e| format!("imap {label:?}: {}: {e}", path.display()))?;
                    for c in certs {
                        let c =
                            c.map_err(|e| format!("imap {label:?}: {}: {e}", path.display()))?;
                        roots
                            .add(c)
                            .map_err(|e| format!("imap {label:?}: {}: {e}", path.display()))?;
                    }
                }
                // The ring provider, named: should another provider ever be
                // compiled in too, rustls would not know which to take.
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("imap {label:?}: TLS: {e}"))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
            }
        };
        Ok(ImapSource {
            max_bytes: cfg.intake.max_message_bytes,
            too_big: std::sync::Mutex::default(),
            cfg: m.clone(),
            login: CredentialSource::Password {
                user: m.user.clone(),
                env: m.password_env.clone(),
                file: m.password_file.as_ref().map(|f| cfg.resolve(f)),
                what: format!("imap {label:?}"),
            },
            label,
            tls,
            defaults: SourceDefaults::from(&m.defaults),
        })
    }

    /// Logs in with OAuth 2.0 access tokens from `tokens` (SASL XOAUTH2 or
    /// OAUTHBEARER) instead of the configured password.
    pub fn with_tokens(mut self, tokens: Arc<dyn TokenProvider>) -> ImapSource {
        self.login = CredentialSource::OAuth2 {
            user: self.cfg.user.clone(),
            tokens,
        };
        self
    }

    /// Connects, upgrades to TLS as configured and logs in. A refused
    /// access token is invalidated and the login tried once more, on the
    /// same connection, with a fresh one.
    async fn connect(&self) -> Result<Session, ImapError> {
        let m = &self.cfg;
        let client = self.open().await?;
        let credential = self.login.credential().await.map_err(ImapError::Setup)?;
        match log_in(client, &credential, &m.host, m.port()).await {
            Ok(s) => Ok(s),
            Err((e, client)) if e.is_auth() && credential.is_bearer() => {
                self.login.refused(&credential);
                tracing::warn!(mailbox = %self.label, error = %e, "the IMAP server refused the access token: trying once more with a fresh one");
                let fresh = self.login.credential().await.map_err(ImapError::Setup)?;
                let client = match client {
                    Some(c) => c,
                    None => self.open().await?,
                };
                let r = log_in(client, &fresh, &m.host, m.port()).await;
                if matches!(&r, Err((e, _)) if e.is_auth()) {
                    self.login.refused(&fresh);
                }
                r.map_err(|(e, _)| e)
            }
            Err((e, _)) => Err(e),
        }
    }

    /// Connects, upgrades to TLS as configured and reads the greeting.
    async fn open(&self) -> Result<Client, ImapError> {
        let m = &self.cfg;
        let tcp = timed("connect", TcpStream::connect((m.host.as_str(), m.port()))).await?;
        // APPEND/FETCH literals and their CRLF go in separate writes.
        tcp.set_nodelay(true)?;
        let name = || {
            rustls::pki_types::ServerName::try_from(m.host.clone())
                .map_err(|e| ImapError::Setup(format!("host {:?}: {e}", m.host)))
        };
        let connector = || {
            self.tls
                .clone()
                .ok_or_else(|| ImapError::Setup("no TLS configuration".into()))
        };
        let (stream, greeted): (Box<dyn Io>, bool) = match m.tls {
            ImapTls::Plain => (Box::new(tcp), false),
            ImapTls::Implicit => {
                let tls = timed("TLS handshake", connector()?.connect(name()?, tcp)).await?;
                (Box::new(tls), false)
            }
            ImapTls::Starttls => {
                let mut client = async_imap::Client::new(tcp);
                greeting(&mut client).await?;
                timed(
                    "STARTTLS",
                    client.run_command_and_check_ok("STARTTLS", None),
                )
                .await?;
                let tcp = client.into_inner();
                let tls = timed("TLS handshake", connector()?.connect(name()?, tcp)).await?;
                // No second greeting after STARTTLS.
                (Box::new(tls), true)
            }
        };
        let mut client = async_imap::Client::new(stream);
        if !greeted {
            greeting(&mut client).await?;
        }
        Ok(client)
    }

    /// For `check-config --connect`: connects, logs in and selects the
    /// folder as `run` would, then logs out. Says what was reached, or
    /// which step failed and why (never the password).
    pub async fn check(&self) -> Result<String, String> {
        let m = &self.cfg;
        let at = format!("{}:{}", m.host, m.port());
        let mut session = self
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {at} or log in as {}: {e}", m.user))?;
        let selected = timed("SELECT", session.select(&m.folder)).await;
        let _ = timed("LOGOUT", session.logout()).await;
        let selected = selected.map_err(|e| {
            format!(
                "logged in, but folder {:?} cannot be selected: {e}",
                m.folder
            )
        })?;
        Ok(format!(
            "logged in to {at} as {}, folder {:?} selected ({} messages)",
            m.user, m.folder, selected.exists
        ))
    }

    /// The mailbox's name.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Runs until `shutdown`: connect, sync, IDLE or poll, and reconnect
    /// after any failure.
    pub async fn run(
        self,
        intake: Arc<Intake>,
        store: Store,
        wake_outbox: Arc<Wake>,
        observer: Arc<impl SyncObserver + 'static>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut backoff = MIN_BACKOFF;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let mut synced = false;
            let ctx = Ctx {
                src: &self,
                intake: &intake,
                store: &store,
                wake: &wake_outbox,
                observer: &*observer,
            };
            match ctx.session(&mut shutdown, &mut synced).await {
                Ok(()) => {
                    observer.connected(&self.label, false);
                    return;
                }
                Err(e) => {
                    observer.connected(&self.label, false);
                    if synced {
                        backoff = MIN_BACKOFF;
                    }
                    let wait = jitter(backoff);
                    tracing::warn!(mailbox = %self.label, error = %e, retry_in_ms = wait.as_millis() as u64, "IMAP session ended");
                    // A grant refused for good waits for `ticketd auth
                    // login` (here or on another instance), then logs in
                    // at once instead of at the end of a long backoff.
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                        _ = self.login.repaired() => backoff = MIN_BACKOFF,
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }
}

/// `d` ± 20 %, so that mailboxes on one server do not reconnect in step.
pub(crate) fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = match getrandom::fill(&mut b) {
        Ok(()) => f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX),
        Err(_) => 0.5,
    };
    d.mul_f64(0.8 + 0.4 * r)
}

/// Runs `fut` with [`IO_TIMEOUT`].
async fn timed<T, E: Into<ImapError>>(
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ImapError> {
    match tokio::time::timeout(IO_TIMEOUT, fut).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(ImapError::Timeout(what)),
    }
}

/// A UID set in IMAP syntax, runs compressed: `3:5,9,11:12`.
pub fn uid_set(uids: &[u32]) -> String {
    let sorted: BTreeSet<u32> = uids.iter().copied().collect();
    let mut out = String::new();
    let mut iter = sorted.into_iter().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
    }
    out
}

/// The highest UID `c` such that every UID of `batch` up to `c` is in
/// `stored`, starting from the cursor `last`.
pub fn advance_cursor(last: u32, batch: &[u32], stored: &BTreeSet<u32>) -> u32 {
    let mut sorted: Vec<u32> = batch.iter().copied().filter(|u| *u > last).collect();
    sorted.sort_unstable();
    let mut c = last;
    for u in sorted {
        if stored.contains(&u) {
            c = u;
        } else {
            break;
        }
    }
    c
}

/// What the server offers.
#[derive(Debug, Clone, Copy)]
struct Caps {
    idle: bool,
    mv: bool,
    uidplus: bool,
}

struct Ctx<'a> {
    src: &'a ImapSource,
    intake: &'a Intake,
    store: &'a Store,
    wake: &'a Wake,
    observer: &'a dyn SyncObserver,
}

impl Ctx<'_> {
    /// One session: returns `Ok` only on shutdown. `synced` turns true
    /// after the first complete round (the reconnect backoff starts over).
    async fn session(
        &self,
        shutdown: &mut watch::Receiver<bool>,
        synced: &mut bool,
    ) -> Result<(), ImapError> {
        let m = &self.src.cfg;
        let mut session = self.src.connect().await?;
        self.observer.connected(&self.src.label, true);
        let caps = timed("CAPABILITY", session.capabilities()).await?;
        let caps = Caps {
            idle: caps.has_str("IDLE"),
            mv: caps.has_str("MOVE"),
            uidplus: caps.has_str("UIDPLUS"),
        };
        for folder in [&m.processed_folder, &m.quarantine_folder] {
            if !folder.is_empty() {
                // An existing folder answers NO [ALREADYEXISTS]: fine.
                if let Err(e) = timed("CREATE", session.create(folder)).await {
                    tracing::debug!(mailbox = %self.src.label, folder, error = %e, "create");
                }
            }
        }
        if !caps.mv && !caps.uidplus && !m.processed_folder.is_empty() {
            tracing::warn!(mailbox = %self.src.label, "server has neither MOVE nor UIDPLUS: stored mail stays in {} flagged \\Seen", m.folder);
        }
        let selected = timed("SELECT", session.select(&m.folder)).await?;
        let validity = selected.uid_validity.unwrap_or(0);
        tracing::info!(mailbox = %self.src.label, folder = %m.folder, uidvalidity = validity, messages = selected.exists, idle = caps.idle && m.idle, "IMAP connected");
        loop {
            let stored = self.sync(&mut session, validity, caps).await?;
            if !*synced || stored > 0 {
                tracing::info!(mailbox = %self.src.label, stored, "mailbox in sync");
            } else {
                tracing::debug!(mailbox = %self.src.label, "mailbox in sync");
            }
            *synced = true;
            self.observer.synced(&self.src.label);
            while session.unsolicited_responses.try_recv().is_ok() {}
            if *shutdown.borrow() {
                let _ = timed("LOGOUT", session.logout()).await;
                return Ok(());
            }
            if caps.idle && m.idle {
                let mut idle = session.idle();
                timed("IDLE", idle.init()).await?;
                let stopped = {
                    let (wait, _interrupt) =
                        idle.wait_with_timeout(Duration::from_secs(m.idle_seconds));
                    tokio::select! {
                        r = wait => { r?; false }
                        _ = shutdown.changed() => true,
                    }
                };
                session = timed("DONE", idle.done()).await?;
                if stopped {
                    let _ = timed("LOGOUT", session.logout()).await;
                    return Ok(());
                }
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(m.poll_seconds)) => {}
                    _ = shutdown.changed() => {
                        let _ = timed("LOGOUT", session.logout()).await;
                        return Ok(());
                    }
                }
                // Keeps the folder state fresh and the connection checked.
                timed("NOOP", session.noop()).await?;
            }
        }
    }

    /// Stores everything above the cursor, batch by batch, and moves what
    /// was stored.
    async fn sync(
        &self,
        session: &mut Session,
        validity: u32,
        caps: Caps,
    ) -> Result<usize, ImapError> {
        let m = &self.src.cfg;
        let label = &self.src.label;
        let mut total = 0;
        let moving = !m.processed_folder.is_empty() && (caps.mv || caps.uidplus);
        let mut last = match self.store.imap_cursor(label, &m.folder).await? {
            Some((v, u)) if v == validity => u,
            Some((v, _)) => {
                tracing::warn!(mailbox = %label, old = v, new = validity, "UIDVALIDITY changed: reading the folder again");
                let now = crate::store::ts(jiff::Timestamp::now());
                self.store
                    .set_imap_cursor(label, &m.folder, validity, 0, &now)
                    .await?;
                0
            }
            None => 0,
        };
        loop {
            // With moving, everything left in the folder is a candidate
            // (stored-but-not-moved ones are moved now); without, only
            // what is above the cursor. `UID n:*` always matches the
            // highest UID, even below n: filter.
            let query = if moving {
                "ALL".to_string()
            } else {
                format!("UID {}:*", last.saturating_add(1))
            };
            let found = timed("UID SEARCH", session.uid_search(&query)).await?;
            let mut leftover: Vec<u32> = Vec::new();
            let mut fresh: Vec<u32> = Vec::new();
            let skipped = self
                .src
                .too_big
                .lock()
                .map(|t| t.clone())
                .unwrap_or_default();
            for u in found {
                if u > last {
                    fresh.push(u);
                } else if moving && !skipped.contains(&(validity, u)) {
                    leftover.push(u);
                }
            }
            if !leftover.is_empty() {
                tracing::info!(mailbox = %label, count = leftover.len(), "moving messages stored before");
                self.acknowledge(session, &leftover, &m.processed_folder, caps)
                    .await?;
            }
            if fresh.is_empty() {
                return Ok(total);
            }
            fresh.sort_unstable();
            fresh.truncate(m.batch_size);
            let fetched = timed("UID FETCH", async {
                session
                    .uid_fetch(
                        uid_set(&fresh),
                        "(UID RFC822.SIZE INTERNALDATE BODY.PEEK[])",
                    )
                    .await?
                    .try_collect::<Vec<_>>()
                    .await
            })
            .await?;
            let now = jiff::Timestamp::now();
            let mut items = Vec::with_capacity(fetched.len());
            let mut uids = Vec::with_capacity(fetched.len());
            let mut arrived = Vec::with_capacity(fetched.len());
            for f in &fetched {
                let (Some(uid), Some(body)) = (f.uid, f.body()) else {
                    continue;
                };
                if uid <= last || uids.contains(&uid) {
                    continue;
                }
                let size = f.size.map_or(body.len() as u64, u64::from);
                if size > self.src.max_bytes {
                    // Too big to take: it stays in the folder, unflagged
                    // (the cursor passes it as if it were gone).
                    let new = self
                        .src
                        .too_big
                        .lock()
                        .map(|mut t| t.insert((validity, uid)))
                        .unwrap_or(false);
                    if new {
                        tracing::error!(
                            mailbox = %label,
                            uid,
                            size,
                            limit = self.src.max_bytes,
                            "message larger than [intake] max_message_bytes: not taken, left in the folder"
                        );
                    }
                    continue;
                }
                uids.push(uid);
                // When the server took the message in: its arrival.
                let internal = f
                    .internal_date()
                    .and_then(|d| jiff::Timestamp::from_second(d.timestamp()).ok());
                arrived.push(internal.unwrap_or(now));
                items.push(Incoming {
                    raw: body.to_vec(),
                    source: format!("imap:{label}/{}/{validity}/{uid}", m.folder),
                    arrived: internal,
                });
            }
            drop(fetched);
            // A UID the server listed but returned no body for (expunged by
            // another client meanwhile) is not stored; the next search
            // will not list it again.
            let listed: Vec<u32> = fresh.clone();
            let results = self
                .intake
                .ingest_batch_from(
                    self.store,
                    &items,
                    jiff::Timestamp::now(),
                    &self.src.defaults,
                )
                .await;
            let committed = jiff::Timestamp::now();
            let mut stored = BTreeSet::new();
            let (mut done, mut quarantined) = (Vec::new(), Vec::new());
            let mut failed = None;
            for ((uid, at), r) in uids.iter().zip(&arrived).zip(results) {
                match r {
                    Ok(o) => {
                        stored.insert(*uid);
                        let latency = committed.duration_since(*at).unsigned_abs();
                        self.observer.decided(o.action, latency);
                        if o.action == Action::Quarantined {
                            quarantined.push(*uid);
                        } else {
                            done.push(*uid);
                        }
                    }
                    Err(e) => failed = Some(e),
                }
            }
            let gone: BTreeSet<u32> = listed
                .iter()
                .copied()
                .filter(|u| !uids.contains(u))
                .collect();
            let next = advance_cursor(last, &listed, &stored.union(&gone).copied().collect());
            if next > last {
                self.store
                    .set_imap_cursor(
                        label,
                        &m.folder,
                        validity,
                        next,
                        &crate::store::ts(committed),
                    )
                    .await?;
                last = next;
            }
            if !stored.is_empty() {
                total += stored.len();
                self.wake.notify_one();
            }
            let quarantine_to = if m.quarantine_folder.is_empty() {
                &m.processed_folder
            } else {
                &m.quarantine_folder
            };
            self.acknowledge(session, &done, &m.processed_folder, caps)
                .await?;
            self.acknowledge(session, &quarantined, quarantine_to, caps)
                .await?;
            if let Some(e) = failed {
                // The database is in trouble, not the message: leave it on
                // the server and try again after the backoff.
                return Err(e.into());
            }
        }
    }

    /// Flags stored messages \Seen and moves them to `to` (empty: they stay).
    async fn acknowledge(
        &self,
        session: &mut Session,
        uids: &[u32],
        to: &str,
        caps: Caps,
    ) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        let set = uid_set(uids);
        add_flags(session, &set, "\\Seen").await?;
        if to.is_empty() {
            return Ok(());
        }
        if caps.mv {
            timed("UID MOVE", session.uid_mv(&set, to)).await?;
        } else if caps.uidplus {
            timed("UID COPY", session.uid_copy(&set, to)).await?;
            add_flags(session, &set, "\\Deleted").await?;
            timed("UID EXPUNGE", async {
                session
                    .uid_expunge(&set)
                    .await?
                    .try_collect::<Vec<_>>()
                    .await
            })
            .await?;
        }
        Ok(())
    }
}

/// `UID STORE set +FLAGS.SILENT (flag)`, its answers drained.
async fn add_flags(session: &mut Session, set: &str, flag: &str) -> Result<(), ImapError> {
    timed("UID STORE", async {
        session
            .uid_store(set, format!("+FLAGS.SILENT ({flag})"))
            .await?
            .try_collect::<Vec<_>>()
            .await
    })
    .await?;
    Ok(())
}

/// Logs in with `credential`. A password: AUTHENTICATE PLAIN (RFC 4616)
/// where the server offers it, else LOGIN. A bearer token: AUTHENTICATE
/// XOAUTH2 where offered, else OAUTHBEARER (RFC 7628); `host` and `port`
/// go into OAUTHBEARER's message. async-imap traces every line it sends
/// (LOGIN's password, and the base64 of AUTHENTICATE's response, alike):
/// the log filter of `main` keeps its target below trace, whatever
/// `TICKETD_LOG` says.
///
/// A refusal is [`ImapError::Auth`], and the client comes back with it
/// (still connected, not logged in) unless the connection is gone.
pub async fn log_in<T: Io>(
    mut client: async_imap::Client<T>,
    credential: &Credential,
    host: &str,
    port: u16,
) -> Result<async_imap::Session<T>, (ImapError, Option<async_imap::Client<T>>)> {
    let caps = match timed("CAPABILITY", capabilities_before_login(&mut client)).await {
        Ok(c) => c,
        Err(e) => return Err((e, None)),
    };
    let offers = |m: &str| {
        caps.iter()
            .any(|c| c.eq_ignore_ascii_case(&format!("AUTH={m}")))
    };
    match credential {
        Credential::Password { user, password } => {
            let (what, done) = if offers("PLAIN") {
                (
                    "PLAIN",
                    tokio::time::timeout(
                        IO_TIMEOUT,
                        client.authenticate("PLAIN", PlainAuth::new(user, password)),
                    )
                    .await,
                )
            } else {
                (
                    "LOGIN",
                    tokio::time::timeout(IO_TIMEOUT, client.login(user, password)).await,
                )
            };
            match done {
                Ok(Ok(s)) => Ok(s),
                Ok(Err((e, client))) => Err((refusal(what, e, None), Some(client))),
                Err(_) => Err((ImapError::Timeout(what), None)),
            }
        }
        Credential::Bearer { user, token } => {
            let mechanism = if offers("XOAUTH2") {
                OAuthMechanism::XOAuth2
            } else if offers("OAUTHBEARER") {
                OAuthMechanism::OAuthBearer
            } else {
                let offered: Vec<&str> = caps
                    .iter()
                    .filter(|c| c.len() > 5 && c[..5].eq_ignore_ascii_case("AUTH="))
                    .map(String::as_str)
                    .collect();
                let offered = if offered.is_empty() {
                    "no AUTH= mechanism".to_string()
                } else {
                    offered.join(" ")
                };
                return Err((ImapError::NoOAuthMechanism { offered }, Some(client)));
            };
            authenticate_bearer(client, mechanism, user, token, host, port).await
        }
    }
}

/// AUTHENTICATE with a bearer token by `mechanism`, whether or not the
/// server names it. On a refusal the server sends an error challenge (a
/// base64 JSON status); it is answered as the mechanism requires (empty,
/// or `^A`), the server's NO read, and both reported as
/// [`ImapError::Auth`] — the connection stays usable for another try.
pub async fn authenticate_bearer<T: Io>(
    client: async_imap::Client<T>,
    mechanism: OAuthMechanism,
    user: &str,
    token: &str,
    host: &str,
    port: u16,
) -> Result<async_imap::Session<T>, (ImapError, Option<async_imap::Client<T>>)> {
    let mut auth = BearerAuth {
        mechanism,
        initial: mechanism.initial_response(user, token, host, port),
        answered: false,
        challenge: None,
    };
    let done =
        tokio::time::timeout(IO_TIMEOUT, client.authenticate(mechanism.name(), &mut auth)).await;
    match done {
        Ok(Ok(s)) => Ok(s),
        Ok(Err((e, client))) => Err((
            refusal(mechanism.name(), e, auth.challenge.take()),
            Some(client),
        )),
        Err(_) => Err((ImapError::Timeout("AUTHENTICATE"), None)),
    }
}

/// What a failed login means: a NO is the credential refused
/// ([`ImapError::Auth`]), except `[UNAVAILABLE]` (the server could not
/// check it, e.g. its identity provider is down), which like anything else
/// is not the credential's fault.
fn refusal(
    mechanism: &'static str,
    e: async_imap::error::Error,
    challenge: Option<String>,
) -> ImapError {
    match e {
        async_imap::error::Error::No(text) if !text.contains("UNAVAILABLE") => {
            let text = server_text(&text);
            let reason = match challenge {
                Some(c) => format!("{text} (error challenge {c})"),
                None => text,
            };
            ImapError::Auth { mechanism, reason }
        }
        e => ImapError::Imap(e),
    }
}

/// The server's own words from async-imap's `code: …, info: Some("…")`.
fn server_text(text: &str) -> String {
    match text.split_once("info: Some(\"") {
        Some((_, rest)) => rest
            .strip_suffix("\")")
            .unwrap_or(rest)
            .replace("\\\"", "\""),
        None => text.to_string(),
    }
}

/// The SASL exchange for a bearer token: the initial response on the
/// first (empty) challenge; the mechanism's acknowledgement on an error
/// challenge, which is kept for the report. Its `Debug` shows no token.
struct BearerAuth {
    mechanism: OAuthMechanism,
    initial: Vec<u8>,
    answered: bool,
    /// The server's error challenge (a JSON status), as text.
    challenge: Option<String>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth")
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

impl async_imap::Authenticator for &mut BearerAuth {
    type Response = Vec<u8>;

    fn process(&mut self, challenge: &[u8]) -> Vec<u8> {
        if !std::mem::replace(&mut self.answered, true) {
            return std::mem::take(&mut self.initial);
        }
        let text: String = String::from_utf8_lossy(challenge)
            .chars()
            .filter(|c| !c.is_control())
            .take(300)
            .collect();
        self.challenge = Some(text);
        self.mechanism.error_ack().to_vec()
    }
}

/// The tag of the CAPABILITY command sent before login (async-imap's own
/// tags are `A0001`…).
const CAPABILITY_TAG: &str = "tdcap";

/// The capabilities the server names before login. async-imap asks for them
/// only on a session, so the command is written to the stream directly and
/// the answers read through the client.
async fn capabilities_before_login<T: Io>(
    client: &mut async_imap::Client<T>,
) -> Result<Vec<String>, ImapError> {
    use async_imap::imap_proto::{Capability, Response, ResponseCode, Status};
    use tokio::io::AsyncWriteExt;
    let name = |c: &Capability<'_>| match c {
        Capability::Imap4rev1 => "IMAP4rev1".to_string(),
        Capability::Auth(m) => format!("AUTH={m}"),
        Capability::Atom(a) => a.to_string(),
    };
    let stream = client.get_mut();
    stream
        .write_all(format!("{CAPABILITY_TAG} CAPABILITY\r\n").as_bytes())
        .await?;
    stream.flush().await?;
    let mut caps = Vec::new();
    loop {
        let Some(r) = client.read_response().await? else {
            return Err(ImapError::Imap(async_imap::error::Error::ConnectionLost));
        };
        match r.parsed() {
            Response::Capabilities(list) => caps.extend(list.iter().map(name)),
            Response::Done {
                tag,
                status,
                outcome,
            } if tag.0 == CAPABILITY_TAG => {
                if let Some(ResponseCode::Capabilities(list)) = &outcome.code {
                    caps.extend(list.iter().map(name));
                }
                // A server that refuses CAPABILITY offers nothing we know of.
                if *status != Status::Ok {
                    caps.clear();
                }
                return Ok(caps);
            }
            _ => {}
        }
    }
}

/// The SASL PLAIN response (RFC 4616): no authorisation identity, the user,
/// the password. Its `Debug` shows no password.
struct PlainAuth<'a> {
    user: &'a str,
    password: &'a str,
    answered: bool,
}

impl<'a> PlainAuth<'a> {
    fn new(user: &'a str, password: &'a str) -> PlainAuth<'a> {
        PlainAuth {
            user,
            password,
            answered: false,
        }
    }
}

impl std::fmt::Debug for PlainAuth<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainAuth")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl async_imap::Authenticator for PlainAuth<'_> {
    type Response = Vec<u8>;

    /// The credentials on the first (empty) challenge; an empty answer to
    /// any further one, which ends the exchange as a failure.
    fn process(&mut self, _challenge: &[u8]) -> Vec<u8> {
        if std::mem::replace(&mut self.answered, true) {
            return Vec::new();
        }
        let mut r = Vec::with_capacity(self.user.len() + self.password.len() + 2);
        r.push(0);
        r.extend_from_slice(self.user.as_bytes());
        r.push(0);
        r.extend_from_slice(self.password.as_bytes());
        r
    }
}

/// Reads the server greeting, which `Client::new` does not.
async fn greeting<T: Io>(client: &mut async_imap::Client<T>) -> Result<(), ImapError> {
    match timed("greeting", client.read_response()).await? {
        Some(_) => Ok(()),
        None => Err(ImapError::Imap(async_imap::error::Error::ConnectionLost)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_compress_runs() {
        assert_eq!(uid_set(&[5, 3, 4, 9, 11, 12]), "3:5,9,11:12");
        assert_eq!(uid_set(&[7]), "7");
        assert_eq!(uid_set(&[]), "");
        assert_eq!(uid_set(&[2, 2, 3]), "2:3");
    }

    #[test]
    fn cursor_stops_below_the_first_message_not_stored() {
        let stored: BTreeSet<u32> = [11, 12, 14].into_iter().collect();
        assert_eq!(advance_cursor(10, &[11, 12, 13, 14], &stored), 12);
        assert_eq!(advance_cursor(10, &[13], &stored), 10);
        // 13 does not exist (not listed): the cursor passes it.
        assert_eq!(advance_cursor(10, &[14, 12, 11], &stored), 14);
        // UIDs at or below the cursor change nothing.
        assert_eq!(advance_cursor(20, &[11, 12], &stored), 20);
    }

    #[test]
    fn plain_answers_once_and_hides_the_password() {
        use async_imap::Authenticator;
        let mut a = PlainAuth::new("support@example.test", "hunter2");
        assert_eq!(a.process(b""), b"\0support@example.test\0hunter2".to_vec());
        assert_eq!(a.process(b""), Vec::<u8>::new());
        let shown = format!("{a:?}");
        assert!(
            shown.contains("support@example.test") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    /// A server that answers CAPABILITY with `caps`, then takes the next
    /// command and what follows it; returns the lines the client sent.
    async fn fake_server(mut server: tokio::io::DuplexStream, caps: &'static str) -> Vec<String> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let (read, mut write) = tokio::io::split(&mut server);
        let mut lines = BufReader::new(read).lines();
        let mut seen = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line.clone());
            let reply = if line == "tdcap CAPABILITY" {
                format!("* CAPABILITY IMAP4rev1 {caps}\r\ntdcap OK done\r\n")
            } else if line.ends_with(" AUTHENTICATE PLAIN") {
                "+ \r\n".to_string()
            } else if let Some((tag, _)) = line.split_once(" LOGIN ") {
                format!("{tag} OK logged in\r\n")
            } else {
                // The PLAIN response.
                "A0001 OK logged in\r\n".to_string()
            };
            write.write_all(reply.as_bytes()).await.unwrap();
            if reply.contains("logged in") {
                break;
            }
        }
        seen
    }

    #[tokio::test]
    async fn logs_in_with_plain_where_offered_else_with_login() {
        for (caps, want_plain) in [
            ("AUTH=PLAIN AUTH=LOGIN IDLE", true),
            ("LOGINDISABLED AUTH=plain", true),
            ("IDLE", false),
        ] {
            let (client_end, server_end) = tokio::io::duplex(4096);
            let server = tokio::spawn(fake_server(server_end, caps));
            let client = async_imap::Client::new(client_end);
            let c = Credential::Password {
                user: "support@example.test".into(),
                password: "hunter2".into(),
            };
            if log_in(client, &c, "imap.example.test", 143).await.is_err() {
                panic!("{caps}: login failed");
            }
            let seen = server.await.unwrap();
            assert_eq!(seen[0], "tdcap CAPABILITY");
            if want_plain {
                assert_eq!(seen[1], "A0001 AUTHENTICATE PLAIN", "{caps}: {seen:?}");
                // base64 of "\0support@example.test\0hunter2"
                assert_eq!(seen[2], "AHN1cHBvcnRAZXhhbXBsZS50ZXN0AGh1bnRlcjI=");
            } else {
                assert_eq!(
                    seen[1], "A0001 LOGIN \"support@example.test\" \"hunter2\"",
                    "{caps}: {seen:?}"
                );
            }
        }
    }

    /// A server offering `caps` that refuses the first bearer login with
    /// an error challenge and takes the second; returns the client's lines.
    async fn bearer_server(server: tokio::io::DuplexStream, caps: &'static str) -> Vec<String> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let (read, mut write) = tokio::io::split(server);
        let mut lines = BufReader::new(read).lines();
        let mut seen = Vec::new();
        let mut tag = String::new();
        let mut step = 0;
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line.clone());
            let reply = if line == "tdcap CAPABILITY" {
                format!("* CAPABILITY IMAP4rev1 {caps}\r\ntdcap OK done\r\n")
            } else if line.contains(" AUTHENTICATE ") {
                tag = line.split(' ').next().unwrap_or_default().to_string();
                "+ \r\n".to_string()
            } else {
                step += 1;
                match step {
                    // base64 of {"status":"401","schemes":"bearer"}
                    1 => "+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=\r\n".to_string(),
                    2 => format!("{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
                    _ => format!("{tag} OK logged in\r\n"),
                }
            };
            write.write_all(reply.as_bytes()).await.unwrap();
            if reply.contains("logged in") {
                break;
            }
        }
        seen
    }

    #[tokio::test]
    async fn a_refused_token_is_acknowledged_reported_and_the_connection_stays_usable() {
        // The first response in base64: the user and the old token.
        let xoauth2 = "dXNlcj1zdXBwb3J0QGV4YW1wbGUudGVzdAFhdXRoPUJlYXJlciBvbGQtdG9rZW4BAQ==";
        let oauthbearer = "bixhPXN1cHBvcnRAZXhhbXBsZS50ZXN0LAFob3N0PWltYXAuZXhhbXBsZS50ZXN0AXBvcnQ9OTkzAWF1dGg9QmVhcmVyIG9sZC10b2tlbgEB";
        for (caps, mechanism, first, ack) in [
            (
                "AUTH=PLAIN AUTH=XOAUTH2 AUTH=OAUTHBEARER",
                "XOAUTH2",
                xoauth2,
                "",
            ),
            ("AUTH=OAUTHBEARER", "OAUTHBEARER", oauthbearer, "AQ=="),
        ] {
            let (client_end, server_end) = tokio::io::duplex(4096);
            let server = tokio::spawn(bearer_server(server_end, caps));
            let client = async_imap::Client::new(client_end);
            let old = Credential::Bearer {
                user: "support@example.test".into(),
                token: "old-token".into(),
            };
            let Err((e, Some(client))) = log_in(client, &old, "imap.example.test", 993).await
            else {
                panic!("{caps}: the old token was taken, or the connection lost");
            };
            assert!(e.is_auth(), "{caps}: {e}");
            let shown = e.to_string();
            assert!(shown.contains(mechanism), "{shown}");
            assert!(shown.contains(r#""status":"401""#), "{shown}");
            assert!(!shown.contains("old-token"), "{shown}");
            // The same connection takes the fresh token.
            let fresh = Credential::Bearer {
                user: "support@example.test".into(),
                token: "new-token".into(),
            };
            if let Err((e, _)) = log_in(client, &fresh, "imap.example.test", 993).await {
                panic!("{caps}: fresh token refused: {e}");
            }
            let seen = server.await.unwrap();
            assert_eq!(
                seen[1],
                format!("A0001 AUTHENTICATE {mechanism}"),
                "{seen:?}"
            );
            assert_eq!(seen[2], first, "{caps}: the initial response");
            assert_eq!(seen[3], ack, "{caps}: the answer to the error challenge");
        }
    }

    #[tokio::test]
    async fn a_server_without_an_oauth_mechanism_is_named_clearly() {
        let (client_end, server_end) = tokio::io::duplex(4096);
        let server = tokio::spawn(fake_server(server_end, "AUTH=PLAIN IDLE"));
        let client = async_imap::Client::new(client_end);
        let c = Credential::Bearer {
            user: "support@example.test".into(),
            token: "t".into(),
        };
        let Err((e, _)) = log_in(client, &c, "imap.example.test", 993).await else {
            panic!("logged in without a mechanism");
        };
        assert!(
            matches!(&e, ImapError::NoOAuthMechanism { offered } if offered == "AUTH=PLAIN"),
            "{e}"
        );
        assert!(e.to_string().contains("AUTH=XOAUTH2"), "{e}");
        server.abort();
    }

    #[test]
    fn the_server_text_is_taken_from_async_imaps_wrapper() {
        assert_eq!(
            server_text(
                r#"code: None, info: Some("[AUTHENTICATIONFAILED] Authentication failed.")"#
            ),
            "[AUTHENTICATIONFAILED] Authentication failed."
        );
        assert_eq!(server_text("plain words"), "plain words");
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(10));
            assert!(d >= Duration::from_secs(8) && d <= Duration::from_secs(12));
        }
    }
}
