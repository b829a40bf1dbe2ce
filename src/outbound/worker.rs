//! The outbox worker: claims due rows, hands them to lettre (file or SMTP
//! transport), and marks them sent only after the transport accepted them.
//!
//! The one window left: a crash after the server accepted a mail and before
//! the row is marked sent. The row's lease then expires and the mail is sent
//! again — at most one duplicate per mail in flight (up to [`RECORD_EVERY`]
//! mails whose outcomes are recorded together), never a lost one.

use super::Wake;
use crate::config::{Config, SmtpTls, Transport};
use crate::credential::TokenProvider;
use crate::sources::discord::is_discord_address;
use crate::store::{ts, Delivery, DueMail, Store, StoreError};
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying (4xx, connection trouble, a full disk).
    #[error("temporary: {0}")]
    Temporary(String),
    /// Never going to work (5xx, an address lettre refuses).
    #[error("permanent: {0}")]
    Permanent(String),
    /// The relay refused the access token, also after a fresh one was
    /// fetched: the grant needs attention, the mail waits (retried like a
    /// temporary failure).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The service throttled the sender and said when to come back
    /// (Graph's 429/503 `Retry-After`): the mail waits at least that long.
    #[error("temporary: {error}")]
    Throttled {
        /// What the service said.
        error: String,
        /// Not before this delay.
        retry_after: Duration,
    },
}

/// A configured transport.
pub enum Sender {
    /// `.eml` files in a directory.
    File(AsyncFileTransport<Tokio1Executor>),
    /// An SMTP relay (pooled connections).
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// An SMTP relay with AUTH XOAUTH2 and an access token.
    SmtpOAuth2(Box<OAuth2Smtp>),
    /// Microsoft Graph's sendMail, as a `[[graph]]` mailbox.
    Graph(super::graph::GraphSender),
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sender::File(_) => f.write_str("Sender::File"),
            Sender::Smtp(_) => f.write_str("Sender::Smtp"),
            Sender::SmtpOAuth2(_) => f.write_str("Sender::SmtpOAuth2"),
            Sender::Graph(g) => write!(f, "Sender::Graph({})", g.mailbox()),
        }
    }
}

/// SMTP with AUTH XOAUTH2: one pooled transport per access token. When the
/// provider hands out another token the transport is built anew (its pool,
/// logged in with the old token, is dropped); a refusal invalidates the
/// token and the mail is tried once more with a fresh one.
pub struct OAuth2Smtp {
    /// TLS, port and timeout as configured, no credentials.
    builder: AsyncSmtpTransportBuilder,
    user: String,
    tokens: Arc<dyn TokenProvider>,
    /// The token the transport logs in with, and the transport.
    current: tokio::sync::Mutex<Option<(String, AsyncSmtpTransport<Tokio1Executor>)>>,
}

impl OAuth2Smtp {
    /// The transport for the provider's current token, built if the token
    /// changed.
    async fn transport(&self) -> Result<(String, AsyncSmtpTransport<Tokio1Executor>), SendError> {
        let token = self
            .tokens
            .access_token()
            .await
            .map_err(|e| SendError::Temporary(e.to_string()))?;
        let mut current = self.current.lock().await;
        if let Some((t, transport)) = current.as_ref() {
            if *t == token {
                return Ok((token, transport.clone()));
            }
        }
        let transport = self
            .builder
            .clone()
            .credentials(Credentials::new(self.user.clone(), token.clone()))
            .authentication(vec![Mechanism::Xoauth2])
            .build();
        *current = Some((token.clone(), transport.clone()));
        Ok((token, transport))
    }

    /// Runs `op` on the current transport; on an authentication failure
    /// once more with a fresh token.
    async fn with_retry<T, F, Fut>(&self, op: F) -> Result<T, SendError>
    where
        F: Fn(AsyncSmtpTransport<Tokio1Executor>) -> Fut,
        Fut: std::future::Future<Output = Result<T, lettre::transport::smtp::Error>>,
    {
        let (token, transport) = self.transport().await?;
        match op(transport).await {
            Err(e) if refused_login(&e) => {
                self.tokens.invalidate(&token);
                tracing::warn!(user = %self.user, error = %e, "the SMTP relay refused the access token: trying once more with a fresh one");
                let (token, transport) = self.transport().await?;
                op(transport).await.map_err(|e| {
                    if refused_login(&e) {
                        self.tokens.invalidate(&token);
                        let why = if e.is_client() {
                            // lettre does not answer the error challenge
                            // with the empty response; it hangs up.
                            "the server sent an error challenge".to_string()
                        } else {
                            e.to_string()
                        };
                        SendError::Auth(format!(
                            "the relay refused the access token (XOAUTH2 as {}): {why}",
                            self.user
                        ))
                    } else {
                        classify(e)
                    }
                })
            }
            r => r.map_err(classify),
        }
    }
}

/// Whether lettre's error is the relay refusing the login: 535, or the
/// error challenge of a refused XOAUTH2 token (`334 <base64 JSON>`), which
/// lettre does not answer and reports as a client error.
fn refused_login(e: &lettre::transport::smtp::Error) -> bool {
    let code = e.status().map(u16::from);
    code == Some(535) || code == Some(534) || (e.is_client() && e.to_string().contains("challenge"))
}

/// A lettre error as a [`SendError`].
fn classify(e: lettre::transport::smtp::Error) -> SendError {
    if e.is_permanent() {
        SendError::Permanent(e.to_string())
    } else {
        SendError::Temporary(e.to_string())
    }
}

impl Sender {
    /// Builds the transport the configuration names.
    pub fn from_config(cfg: &Config, default_dir: &Path) -> Result<Sender, String> {
        Sender::from_config_with_tokens(cfg, default_dir, None)
    }

    /// [`Sender::from_config`], but an SMTP relay logs in as
    /// `[outbound.smtp] user` with AUTH XOAUTH2 and access tokens from
    /// `tokens` instead of the password, when given.
    pub fn from_config_with_tokens(
        cfg: &Config,
        default_dir: &Path,
        tokens: Option<Arc<dyn TokenProvider>>,
    ) -> Result<Sender, String> {
        match cfg.outbound.transport {
            Transport::Graph => Err(
                "transport = \"graph\" is built with Sender::Graph from the [[graph]] mailbox's client"
                    .into(),
            ),
            Transport::File => {
                let dir = cfg
                    .outbound
                    .file_dir
                    .as_ref()
                    .map(|d| cfg.resolve(d))
                    .unwrap_or_else(|| default_dir.to_path_buf());
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                Ok(Sender::File(AsyncFileTransport::new(dir)))
            }
            Transport::Smtp => {
                let s = &cfg.outbound.smtp;
                let tls = |host: &str| -> Result<TlsParameters, String> {
                    let mut b = TlsParameters::builder(host.to_string());
                    if let Some(ca) = &s.ca_file {
                        let path = cfg.resolve(ca);
                        let pem = std::fs::read(&path)
                            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                        let cert = Certificate::from_pem(&pem)
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                        b = b.add_root_certificate(cert);
                    }
                    b.build_rustls()
                        .map_err(|e| format!("smtp {}: TLS: {e}", s.host))
                };
                let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host);
                let builder = match s.tls {
                    SmtpTls::None => builder,
                    SmtpTls::Starttls => builder.tls(Tls::Required(tls(&s.host)?)),
                    SmtpTls::Tls => builder.tls(Tls::Wrapper(tls(&s.host)?)),
                };
                let mut builder = builder.port(s.port).timeout(Some(Duration::from_secs(60)));
                if let Some(tokens) = tokens {
                    let user = s.user.clone().ok_or_else(|| {
                        "outbound.smtp: an OAuth 2.0 login needs user".to_string()
                    })?;
                    return Ok(Sender::SmtpOAuth2(Box::new(OAuth2Smtp {
                        builder,
                        user,
                        tokens,
                        current: tokio::sync::Mutex::new(None),
                    })));
                }
                if s.auth == crate::config::MailAuth::Oauth2 {
                    return Err(
                        "outbound.smtp: auth = \"oauth2\" but no token source was given".into(),
                    );
                }
                if let Some(user) = &s.user {
                    let password = crate::config::read_secret(
                        s.password_env.as_deref(),
                        s.password_file.as_ref().map(|f| cfg.resolve(f)).as_deref(),
                        "outbound.smtp",
                    )?;
                    builder = builder.credentials(Credentials::new(user.clone(), password));
                }
                Ok(Sender::Smtp(builder.build()))
            }
        }
    }

    /// For `check-config --connect`: connects to the SMTP relay with TLS and
    /// AUTH as configured (a NOOP after), or says why it cannot. The file
    /// transport has nothing to reach.
    pub async fn check(&self) -> Result<String, String> {
        match self {
            Sender::File(_) => Ok("file transport: nothing to connect to".into()),
            Sender::Graph(g) => g.check().await,
            Sender::Smtp(t) => match t.test_connection().await {
                Ok(true) => Ok("connected, TLS and AUTH as configured accepted".into()),
                Ok(false) => Err("connected, but the server does not answer".into()),
                Err(e) => Err(e.to_string()),
            },
            Sender::SmtpOAuth2(o) => {
                match o
                    .with_retry(|t| async move { t.test_connection().await })
                    .await
                {
                    Ok(true) => Ok("connected, TLS and AUTH XOAUTH2 accepted".into()),
                    Ok(false) => Err("connected, but the server does not answer".into()),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }

    /// Delivers one mail.
    pub async fn send(&self, m: &DueMail) -> Result<(), SendError> {
        if let Sender::Graph(g) = self {
            // Graph reads sender and recipients from the MIME headers.
            return g.send(&m.raw).await;
        }
        let from = m
            .sender
            .parse()
            .map_err(|e| SendError::Permanent(format!("sender {:?}: {e}", m.sender)))?;
        let to = m
            .recipients
            .iter()
            .map(|r| {
                r.parse()
                    .map_err(|e| SendError::Permanent(format!("recipient {r:?}: {e}")))
            })
            .collect::<Result<Vec<lettre::Address>, _>>()?;
        let env = Envelope::new(Some(from), to)
            .map_err(|e| SendError::Permanent(format!("envelope: {e}")))?;
        match self {
            Sender::File(t) => t
                .send_raw(&env, &m.raw)
                .await
                .map(|_| ())
                .map_err(|e| SendError::Temporary(e.to_string())),
            Sender::Smtp(t) => t.send_raw(&env, &m.raw).await.map(|_| ()).map_err(classify),
            Sender::Graph(g) => g.send(&m.raw).await,
            Sender::SmtpOAuth2(o) => o
                .with_retry(|t| {
                    let env = env.clone();
                    async move { t.send_raw(&env, &m.raw).await }
                })
                .await
                .map(|_| ()),
        }
    }
}

/// The worker loop's state.
#[derive(Debug)]
pub struct Worker {
    store: Store,
    sender: Sender,
    retry_for: jiff::SignedDuration,
    retry_base: Duration,
    poll: Duration,
    wake: Arc<Wake>,
    /// The Discord intake channel mail to Discord members is posted to.
    divert: Option<String>,
}

/// Delivery outcomes recorded per transaction. A crash loses at most the
/// records of these (the mails go out once more when their lease expires).
pub const RECORD_EVERY: usize = 10;

/// How long the worker waits after being woken before it claims mail.
const COALESCE: Duration = Duration::from_millis(20);

/// Delay before attempt `n + 1`: `base` doubling, at most one hour.
pub fn backoff(base: Duration, attempts: i64) -> jiff::SignedDuration {
    let ms = (base.as_millis() as i64)
        .saturating_mul(1i64 << attempts.clamp(0, 16))
        .min(3_600_000);
    jiff::SignedDuration::from_millis(ms)
}

/// When a delivery queued at `queued` that failed for the `attempts + 1`th
/// time is tried again: `backoff` from now, or `None` once it has been
/// retried for longer than `retry_for` (the outbox's mail and the chat
/// outbox's posts alike).
pub fn retry_at(
    queued: &str,
    attempts: i64,
    now: jiff::Timestamp,
    retry_for: jiff::SignedDuration,
    base: Duration,
) -> Option<jiff::Timestamp> {
    let first: jiff::Timestamp = queued.parse().unwrap_or(now);
    (now.duration_since(first) <= retry_for).then(|| now + backoff(base, attempts))
}

impl Worker {
    /// A worker over `store` delivering through `sender`.
    pub fn new(store: Store, sender: Sender, cfg: &Config, wake: Arc<Wake>) -> Worker {
        Worker {
            store,
            sender,
            retry_for: jiff::SignedDuration::from_secs_f64(cfg.outbound.retry_hours * 3600.0),
            retry_base: Duration::from_secs_f64(cfg.outbound.retry_base_seconds),
            poll: Duration::from_secs_f64(cfg.outbound.poll_seconds),
            wake,
            divert: cfg
                .discord
                .enabled
                .then(|| cfg.discord.intake.clone())
                .flatten(),
        }
    }

    /// Delivers what is due now; returns how many mails were handled.
    ///
    /// Outcomes are recorded [`RECORD_EVERY`] mails at a time, in one
    /// transaction each, instead of one commit (and fsync) per mail.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let now = jiff::Timestamp::now();
        let lease = now + jiff::SignedDuration::from_mins(5);
        let due = self.store.claim_due(&ts(now), &ts(lease), 50).await?;
        let n = due.len();
        for chunk in due.chunks(RECORD_EVERY) {
            let mut done = Vec::with_capacity(chunk.len());
            for m in chunk {
                let outcome = if m.recipients.iter().any(|r| is_discord_address(r)) {
                    self.divert(m).await
                } else {
                    self.outcome(m, self.sender.send(m).await)
                };
                done.push((m, outcome));
            }
            self.store
                .record_deliveries(&done, &ts(jiff::Timestamp::now()))
                .await?;
        }
        Ok(n)
    }

    /// A mail to a Discord member (an address of
    /// [`crate::sources::discord`]) is posted into their thread instead;
    /// other recipients of the same mail still get it by mail.
    async fn divert(&self, m: &DueMail) -> Delivery {
        let Some(channel) = &self.divert else {
            return Delivery::Failed {
                error:
                    "the recipient is a Discord member, and no Discord intake channel is configured"
                        .into(),
            };
        };
        let others: Vec<String> = m
            .recipients
            .iter()
            .filter(|r| !is_discord_address(r))
            .cloned()
            .collect();
        if !others.is_empty() {
            let rest = DueMail {
                recipients: others,
                ..m.clone()
            };
            match self.outcome(m, self.sender.send(&rest).await) {
                Delivery::Sent => {}
                other => return other,
            }
        }
        let parsed = mail_parser::MessageParser::default().parse(&m.raw);
        let text = parsed
            .as_ref()
            .and_then(|p| p.body_text(0))
            .map(|t| t.into_owned())
            .unwrap_or_default();
        tracing::info!(outbox = m.id, channel = %channel, "mail to a Discord member: posted in their thread");
        Delivery::Chat {
            channel: channel.clone(),
            body: serde_json::json!({
                "kind": "customer",
                "text": text,
                "subject": parsed.as_ref().and_then(|p| p.subject()).unwrap_or(""),
            }),
        }
    }

    /// What a delivery attempt's result means for its row.
    fn outcome(&self, m: &DueMail, result: Result<(), SendError>) -> Delivery {
        let now = jiff::Timestamp::now();
        match result {
            Ok(()) => {
                tracing::info!(outbox = m.id, to = ?m.recipients, "mail sent");
                Delivery::Sent
            }
            Err(SendError::Permanent(e)) => {
                tracing::warn!(outbox = m.id, error = %e, "mail failed permanently");
                Delivery::Failed { error: e }
            }
            Err(
                e @ (SendError::Temporary(_) | SendError::Auth(_) | SendError::Throttled { .. }),
            ) => {
                // A refused token leaves the mail queued, as a 4xx does; a
                // throttled one waits exactly the service's delay, never
                // less (Graph's Retry-After).
                let (e, wait) = match e {
                    SendError::Temporary(e) => (e, None),
                    SendError::Throttled { error, retry_after } => (error, Some(retry_after)),
                    e => (e.to_string(), None),
                };
                match retry_at(
                    &m.created_at,
                    m.attempts,
                    now,
                    self.retry_for,
                    self.retry_base,
                ) {
                    None => {
                        tracing::warn!(outbox = m.id, error = %e, "mail failed: retries exhausted");
                        Delivery::Failed {
                            error: format!("{e} (gave up after {} attempts)", m.attempts + 1),
                        }
                    }
                    Some(next) => {
                        let next = match wait {
                            Some(w) => now + jiff::SignedDuration::try_from(w).unwrap_or_default(),
                            None => next,
                        };
                        tracing::info!(outbox = m.id, error = %e, next = %next, throttled = wait.is_some(), "mail deferred");
                        Delivery::Retry {
                            error: e,
                            next: ts(next),
                        }
                    }
                }
            }
        }
    }

    /// Runs until `shutdown` turns true: delivers, then sleeps until woken
    /// by a new row or the poll interval.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.run_once().await {
                Ok(n) if n > 0 => {
                    failures = 0;
                    continue;
                }
                Ok(_) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::error!(error = %e, "outbox: database error");
                }
            }
            let pause = if failures > 0 {
                self.poll * failures.min(20)
            } else {
                self.poll
            };
            tokio::select! {
                _ = self.wake.mail() => {
                    // Let a burst of new tickets settle into one claim: a
                    // few milliseconds later instead of one transaction per
                    // confirmation competing with intake for the write lock.
                    tokio::time::sleep(COALESCE).await;
                }
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let base = Duration::from_secs(30);
        assert_eq!(backoff(base, 0).as_secs(), 30);
        assert_eq!(backoff(base, 1).as_secs(), 60);
        assert_eq!(backoff(base, 10).as_secs(), 3600);
        assert_eq!(backoff(base, -3).as_secs(), 30);
        assert_eq!(backoff(Duration::from_millis(500), 2).as_millis(), 2000);
    }
}
