//! OAuth 2.0 access tokens for IMAP and SMTP logins (SASL XOAUTH2).
//!
//! [`TokenSource`] is what a mailbox or the SMTP transport holds: one per
//! account (`imap:NAME`, `smtp`). [`TokenSource::access_token`] returns the
//! cached access token until shortly before it expires (5 minutes, or 10 %
//! of its lifetime when that is shorter), then gets a new one — a single
//! request however many tasks ask at once — and writes it, with a refresh
//! token the provider rotated, to the database in one transaction
//! ([`crate::store::oauth`]). After a login was refused with the token,
//! [`TokenSource::invalidate`] makes the next call get a new one, once.
//!
//! Grants: client credentials (app-only; a fresh token each time the last
//! one expires, no refresh token), the refresh token of a device code
//! login ([`login`], RFC 8628), and a Google service account's JWT bearer
//! grant (RFC 7523 §2.1, domain-wide delegation; like client credentials,
//! no refresh token). The client authenticates with its secret or, for
//! Entra ID, with a certificate: a signed client assertion
//! ([`assertion`], RFC 7523 §2.2) in place of the secret. A refused grant (`invalid_grant`: revoked,
//! expired, the password changed) is [`OAuthError::Permanent`] and names
//! `ticketd auth login NAME`; a network error or a provider's 5xx is
//! [`OAuthError::Temporary`].
//!
//! Secrets never reach `Debug`, `Display` or a log line: the client secret
//! and the tokens stay in oauth2's secret types ([`ClientSecret`],
//! [`AccessToken`], [`RefreshToken`]), whose `Debug` prints `[redacted]`,
//! and error texts carry only the provider's error code and description.

pub mod assertion;
pub mod login;

use crate::config::{Config, OAuthAccount, OAuthEndpoints, OAuthFlow};
use crate::metrics::Metrics;
use crate::store::oauth::{GrantRow, NewTokens};
use crate::store::{ts, Store};
use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenResponse};
pub use oauth2::{AccessToken, ClientSecret, RefreshToken};
use oauth2::{AuthType, ClientId, RequestTokenError, Scope, TokenResponse, TokenUrl};
use std::sync::Arc;
use std::time::Duration;

/// How long before its expiry an access token is replaced, at most.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// How often a mailbox whose grant was refused looks for a new one.
pub const REPAIR_POLL: Duration = Duration::from_secs(2);

/// The lifetime assumed when a token endpoint names none (RFC 6749 makes
/// `expires_in` optional; Microsoft's and Google's tokens live one hour).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// Why no access token could be had.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The grant is gone (revoked, expired, never made) or the client was
    /// refused: retrying cannot help, an administrator must log in again
    /// or fix the app registration.
    #[error("{account}: {message}; run `ticketd auth login {name}`")]
    Permanent {
        /// `imap:NAME` or `smtp`.
        account: String,
        /// The name `ticketd auth login` takes.
        name: String,
        /// The provider's error code and description.
        message: String,
    },
    /// The provider could not be reached or failed (network, 5xx); the
    /// next attempt may succeed.
    #[error("{account}: token endpoint unavailable: {message}")]
    Temporary {
        /// `imap:NAME` or `smtp`.
        account: String,
        /// What went wrong.
        message: String,
    },
    /// The configuration cannot be used (an unreadable client secret).
    #[error("{0}")]
    Config(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl OAuthError {
    /// True when only a new login (or a configuration change) helps.
    pub fn is_permanent(&self) -> bool {
        matches!(self, OAuthError::Permanent { .. } | OAuthError::Config(_))
    }
}

/// How a failed token request is to be treated, with a text that holds no
/// secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Needs a new login or a configuration change.
    Permanent(String),
    /// May pass on a later attempt.
    Temporary(String),
}

/// Sorts an error of oauth2's token request: the RFC 6749 §5.2 codes
/// `invalid_grant`, `invalid_client`, `unauthorized_client`,
/// `unsupported_grant_type`, `invalid_scope` and `invalid_request` are
/// permanent, and so are Google's `access_denied`, `admin_policy_enforced`
/// and `disabled_client`; anything else the provider sent (`temporarily_unavailable`,
/// `server_error`), a body that is not an error object (a 502 page) and
/// network errors are temporary.
pub fn classify<RE: std::error::Error + 'static>(
    e: &RequestTokenError<RE, oauth2::basic::BasicErrorResponse>,
) -> Failure {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let text = describe(r.error().as_ref(), r.error_description());
            match r.error() {
                // Google's refusals outside RFC 6749 §5.2: domain-wide
                // delegation switched off, an administrator's policy, a
                // disabled or deleted client.
                BasicErrorResponseType::Extension(code)
                    if matches!(
                        code.as_str(),
                        "access_denied" | "admin_policy_enforced" | "disabled_client"
                    ) =>
                {
                    Failure::Permanent(text)
                }
                BasicErrorResponseType::Extension(_) => Failure::Temporary(text),
                _ => Failure::Permanent(text),
            }
        }
        RequestTokenError::Request(e) => {
            Failure::Temporary(format!("request failed: {}", chain(e)))
        }
        RequestTokenError::Parse(e, _body) => {
            Failure::Temporary(format!("unexpected answer from the token endpoint: {e}"))
        }
        RequestTokenError::Other(e) => Failure::Temporary(e.clone()),
    }
}

/// `code: description` for an RFC 6749 error object; the description is
/// the provider's (Microsoft's carries its AADSTS code), cut to one line.
pub fn describe(code: &str, description: Option<&String>) -> String {
    match description {
        Some(d) => {
            let first = d.lines().next().unwrap_or("").trim();
            format!("{code}: {first}")
        }
        None => code.to_string(),
    }
}

/// An error and its sources on one line (reqwest's own text is short).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// The HTTP client for token endpoints: no redirects (RFC 6749 endpoints
/// answer directly; following one could send the secret elsewhere), a
/// timeout so a hanging provider is a temporary error.
pub fn http_client() -> Result<oauth2::reqwest::Client, String> {
    oauth2::reqwest::ClientBuilder::new()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// One account's client: endpoints, id, secret or certificate, service
/// account key.
#[derive(Debug, Clone)]
pub struct Client {
    /// `imap:NAME` or `smtp`.
    pub account: String,
    /// The name `ticketd auth login` takes.
    pub name: String,
    /// The grant type.
    pub flow: OAuthFlow,
    /// Resolved endpoints and scope.
    pub endpoints: OAuthEndpoints,
    /// Whose endpoints (Google needs extra parameters for a refresh token).
    pub provider: crate::config::OAuthProvider,
    /// Authorization code flow: the loopback port for the redirect.
    pub redirect_port: Option<u16>,
    client_id: String,
    secret: Option<ClientSecret>,
    /// Entra ID certificate credentials: a client assertion per request
    /// instead of the secret.
    certificate: Option<assertion::CertificateCredential>,
    /// `flow = "service_account"`: the key and the user it acts as.
    service_account: Option<(assertion::ServiceAccountKey, String)>,
    http: oauth2::reqwest::Client,
}

impl Client {
    /// The client of a configured account; reads the client secret.
    pub fn new(cfg: &Config, account: &OAuthAccount<'_>) -> Result<Client, OAuthError> {
        let endpoints = account
            .oauth
            .endpoints()
            .map_err(|e| OAuthError::Config(format!("{}: {e}", account.name)))?;
        let mut endpoints = endpoints;
        let secret = account
            .oauth
            .client_secret(|p| cfg.resolve(p))
            .map_err(|e| OAuthError::Config(format!("{}: {e}", account.name)))?;
        let certificate = account
            .oauth
            .client_certificate(|p| cfg.resolve(p))
            .map_err(|e| OAuthError::Config(format!("{}: oauth.{e}", account.name)))?;
        let service_account = account
            .oauth
            .service_account(|p| cfg.resolve(p))
            .map_err(|e| OAuthError::Config(format!("{}: oauth.{e}", account.name)))?;
        if let Some((key, _)) = &service_account {
            // Google's libraries post to the key file's token_uri; an
            // explicit token_url wins.
            if account.oauth.token_url.is_none() {
                if let Some(uri) = &key.token_uri {
                    crate::config::check_endpoint_url("token_uri", uri).map_err(|e| {
                        OAuthError::Config(format!(
                            "{}: oauth.service_account_key_file: {e}",
                            account.name
                        ))
                    })?;
                    endpoints.token_url = uri.clone();
                }
            }
        }
        Ok(Client {
            account: account.key.clone(),
            name: account.name.clone(),
            flow: account.oauth.flow(),
            endpoints,
            provider: account.oauth.provider(),
            redirect_port: account.oauth.redirect_port,
            client_id: account.oauth.client_id.clone(),
            secret: secret.map(ClientSecret::new),
            certificate,
            service_account,
            http: http_client().map_err(OAuthError::Config)?,
        })
    }

    /// oauth2's client with the token endpoint set. The secret is sent in
    /// the request body (`client_secret_post`), which Microsoft's and
    /// Google's endpoints take.
    fn basic(
        &self,
    ) -> Result<
        BasicClient<
            oauth2::EndpointNotSet,
            oauth2::EndpointNotSet,
            oauth2::EndpointNotSet,
            oauth2::EndpointNotSet,
            oauth2::EndpointSet,
        >,
        OAuthError,
    > {
        let token = TokenUrl::new(self.endpoints.token_url.clone())
            .map_err(|e| OAuthError::Config(format!("{}: token_url: {e}", self.name)))?;
        let mut c = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(token);
        if let Some(s) = &self.secret {
            c = c.set_client_secret(s.clone());
        }
        Ok(c)
    }

    fn scopes(&self) -> impl Iterator<Item = Scope> + '_ {
        self.endpoints
            .scope
            .split_whitespace()
            .map(|s| Scope::new(s.to_string()))
    }

    fn fail(&self, f: Failure) -> OAuthError {
        match f {
            Failure::Permanent(message) => OAuthError::Permanent {
                account: self.account.clone(),
                name: self.name.clone(),
                message,
            },
            Failure::Temporary(message) => OAuthError::Temporary {
                account: self.account.clone(),
                message,
            },
        }
    }

    /// The parameters that authenticate a token request with the
    /// certificate (`client_assertion_type`, `client_assertion`), a fresh
    /// assertion each call; none with a secret or for a public client.
    pub(crate) fn assertion_params(&self) -> Result<Vec<(&'static str, String)>, OAuthError> {
        let Some(cert) = &self.certificate else {
            return Ok(Vec::new());
        };
        let jwt = cert
            .assertion(
                &self.client_id,
                &self.endpoints.token_url,
                assertion::unix_now(),
            )
            .map_err(|e| OAuthError::Config(format!("{}: {e}", self.name)))?;
        Ok(vec![
            (
                "client_assertion_type",
                assertion::CLIENT_ASSERTION_TYPE.to_string(),
            ),
            ("client_assertion", jwt),
        ])
    }

    /// A token by the client credentials grant (RFC 6749 §4.4).
    pub async fn client_credentials(&self) -> Result<BasicTokenResponse, OAuthError> {
        let basic = self.basic()?;
        let mut request = basic
            .exchange_client_credentials()
            .add_scopes(self.scopes());
        for (name, value) in self.assertion_params()? {
            request = request.add_extra_param(name, value);
        }
        request
            .request_async(&self.http)
            .await
            .map_err(|e| self.fail(classify(&e)))
    }

    /// A token by the refresh token grant (RFC 6749 §6).
    pub async fn refresh(&self, token: &RefreshToken) -> Result<BasicTokenResponse, OAuthError> {
        let basic = self.basic()?;
        let mut request = basic.exchange_refresh_token(token);
        for (name, value) in self.assertion_params()? {
            request = request.add_extra_param(name, value);
        }
        request
            .request_async(&self.http)
            .await
            .map_err(|e| self.fail(classify(&e)))
    }

    /// A token by a service account's JWT bearer grant (RFC 7523 §2.1;
    /// Google's server-to-server flow with domain-wide delegation): a JWT
    /// signed with the account's key, for the configured user (`sub`) and
    /// scope. The answer has no refresh token; errors are sorted as the
    /// other grants' ([`classify`]), so `unauthorized_client` (delegation
    /// not granted) and `invalid_grant` (unknown user, clock skew) are
    /// permanent with Google's description.
    pub async fn service_account(&self) -> Result<BasicTokenResponse, OAuthError> {
        let Some((key, subject)) = &self.service_account else {
            return Err(OAuthError::Config(format!(
                "{}: flow = \"service_account\" without a service account key",
                self.name
            )));
        };
        let jwt = key
            .assertion(
                &self.endpoints.scope,
                &self.endpoints.token_url,
                subject,
                assertion::unix_now(),
            )
            .map_err(|e| OAuthError::Config(format!("{}: {e}", self.name)))?;
        let response = self
            .http
            .post(&self.endpoints.token_url)
            .header("accept", "application/json")
            .form(&[
                ("grant_type", assertion::JWT_BEARER_GRANT),
                ("assertion", jwt.as_str()),
            ])
            .send()
            .await
            .map_err(|e| self.fail(Failure::Temporary(format!("request failed: {}", chain(&e)))))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.fail(Failure::Temporary(format!("request failed: {}", chain(&e)))))?;
        if status.is_success() {
            return serde_json::from_slice::<BasicTokenResponse>(&body).map_err(|e| {
                self.fail(Failure::Temporary(format!(
                    "unexpected answer from the token endpoint: {e}"
                )))
            });
        }
        match serde_json::from_slice::<oauth2::basic::BasicErrorResponse>(&body) {
            Ok(error) => {
                let e: RequestTokenError<std::io::Error, _> =
                    RequestTokenError::ServerResponse(error);
                Err(self.fail(classify(&e)))
            }
            Err(_) => Err(self.fail(Failure::Temporary(format!(
                "the token endpoint answered {status}"
            )))),
        }
    }
}

/// The cached token and when it must be replaced.
struct Cached {
    token: AccessToken,
    /// Replace from this instant on.
    refresh_at: jiff::Timestamp,
}

/// When a token obtained at `obtained` and expiring at `expires` should be
/// replaced: [`REFRESH_MARGIN`] before, or 10 % of its lifetime before
/// when that is shorter.
pub fn refresh_at(obtained: jiff::Timestamp, expires: jiff::Timestamp) -> jiff::Timestamp {
    let lifetime = expires.duration_since(obtained);
    let tenth = lifetime / 10;
    let margin = jiff::SignedDuration::try_from(REFRESH_MARGIN)
        .unwrap_or_default()
        .min(tenth);
    expires
        .checked_sub(margin.max(jiff::SignedDuration::ZERO))
        .unwrap_or(expires)
}

/// The token source of account `key` (`imap:NAME`, `smtp`), when the
/// configuration logs in to it with `auth = "oauth2"`; `None` for a
/// password login.
pub fn source_for(
    cfg: &Config,
    key: &str,
    store: &Store,
    metrics: Option<Arc<Metrics>>,
) -> Result<Option<Arc<TokenSource>>, OAuthError> {
    cfg.oauth_accounts()
        .iter()
        .find(|a| a.key == key)
        .map(|a| {
            Ok(Arc::new(TokenSource::new(
                Client::new(cfg, a)?,
                store.clone(),
                metrics,
            )))
        })
        .transpose()
}

/// What the IMAP and SMTP logins ask for: the token's text, and a refused
/// token given back ([`TokenSource::invalidate_token`]).
impl crate::credential::TokenProvider for TokenSource {
    fn access_token(&self) -> crate::credential::TokenFuture<'_> {
        Box::pin(async move {
            TokenSource::access_token(self)
                .await
                .map(|t| t.secret().to_string())
                .map_err(|e| crate::credential::TokenError(e.to_string()))
        })
    }

    fn invalidate(&self, token: &str) {
        self.invalidate_token(&AccessToken::new(token.to_string()));
    }

    fn repaired(&self) -> crate::credential::RepairFuture<'_> {
        Box::pin(TokenSource::repaired(self))
    }
}

/// The access tokens of one account, shared by the tasks that log in with
/// it (`Arc<TokenSource>`).
pub struct TokenSource {
    client: Client,
    store: Store,
    metrics: Option<Arc<Metrics>>,
    cache: tokio::sync::Mutex<Option<Cached>>,
    /// The token a login refused (set by [`TokenSource::invalidate`]): not
    /// to be handed out again, from the cache or from the database.
    refused: std::sync::Mutex<Option<AccessToken>>,
    /// The token last handed out: the one `invalidate` refers to.
    last: std::sync::Mutex<Option<AccessToken>>,
    /// What tells the desk's lead that the grant was refused, and the
    /// delivery workers to wake (set by `run`; none for the CLI).
    notice: std::sync::OnceLock<(RefusalNotice, Arc<crate::outbound::Wake>)>,
}

/// A grant refused for good, as the notice to the desk's lead tells it.
#[derive(Debug, Clone, Copy)]
pub struct Refusal<'a> {
    /// `imap:NAME`, `graph:NAME` or `smtp`.
    pub account: &'a str,
    /// The name `ticketd auth login` takes.
    pub name: &'a str,
    /// The provider's error code and description (no secret).
    pub message: &'a str,
}

/// Builds the mails and chat posts that tell the desk's lead of a
/// [`Refusal`] (the service renders them; the store queues them in the
/// transaction that records the refusal).
pub type RefusalNotice =
    Arc<dyn Fn(&Refusal<'_>) -> Vec<crate::store::sla::Notification> + Send + Sync>;

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("account", &self.client.account)
            .field("flow", &self.client.flow)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// The token source of an account; `metrics` counts refreshes.
    pub fn new(client: Client, store: Store, metrics: Option<Arc<Metrics>>) -> TokenSource {
        TokenSource {
            client,
            store,
            metrics,
            cache: tokio::sync::Mutex::new(None),
            refused: std::sync::Mutex::new(None),
            last: std::sync::Mutex::new(None),
            notice: std::sync::OnceLock::new(),
        }
    }

    /// From now on, a grant refused for good (the first refusal since it
    /// last worked, not every retry) queues `notice`'s mails and posts and
    /// wakes `wake`. Set once; a later call is ignored.
    pub fn set_notice(&self, notice: RefusalNotice, wake: Arc<crate::outbound::Wake>) {
        let _ = self.notice.set((notice, wake));
    }

    /// Resolves when a grant that is refused for good now has been
    /// replaced (`ticketd auth login`, here or on another instance: the
    /// database says so), checked every [`REPAIR_POLL`]. Never resolves
    /// while the grant is not refused, and for client credentials and
    /// service accounts (there a new attempt is the check; the mailbox's
    /// backoff paces it).
    pub async fn repaired(&self) {
        if !self.client.flow.has_refresh_token() || !self.refused_for_good().await {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(REPAIR_POLL).await;
            if !self.refused_for_good().await {
                tracing::info!(account = %self.client.account, "oauth: the grant was replaced; logging in again");
                return;
            }
        }
    }

    /// Whether the stored grant is marked refused for good (a database
    /// error counts as not: the caller's own retry then tells).
    async fn refused_for_good(&self) -> bool {
        matches!(
            self.store.oauth_grant(&self.client.account).await,
            Ok(Some(g)) if g.last_error_kind.as_deref() == Some("permanent")
        )
    }

    /// One token source per configured OAuth account.
    pub fn for_config(
        cfg: &Config,
        store: &Store,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Vec<Arc<TokenSource>>, OAuthError> {
        cfg.oauth_accounts()
            .iter()
            .map(|a| {
                Ok(Arc::new(TokenSource::new(
                    Client::new(cfg, a)?,
                    store.clone(),
                    metrics.clone(),
                )))
            })
            .collect()
    }

    /// `imap:NAME` or `smtp`.
    pub fn account(&self) -> &str {
        &self.client.account
    }

    /// The name `ticketd auth login` takes.
    pub fn name(&self) -> &str {
        &self.client.name
    }

    /// A valid access token: the cached one, the one another instance
    /// stored, or a new one from the token endpoint. Concurrent callers
    /// wait for one request.
    pub async fn access_token(&self) -> Result<AccessToken, OAuthError> {
        let token = self.get().await?;
        if let Ok(mut l) = self.last.lock() {
            *l = Some(token.clone());
        }
        Ok(token)
    }

    async fn get(&self) -> Result<AccessToken, OAuthError> {
        let mut cache = self.cache.lock().await;
        let now = jiff::Timestamp::now();
        let refused = self.take_refused();
        if let Some(c) = cache.as_ref() {
            let was_refused = refused
                .as_ref()
                .is_some_and(|r| r.secret() == c.token.secret());
            if !was_refused && now < c.refresh_at {
                return Ok(c.token.clone());
            }
            *cache = None;
        }
        // Token sources of one account in this process (a reload builds
        // new ones while the old still run) refresh one after the other:
        // with rotation, two refreshes with the same refresh token would
        // have the second refused and the grant look revoked. The one that
        // waited finds the other's token in the database.
        let account_lock = account_lock(&self.client.account);
        let _serial = account_lock.lock().await;
        let grant = self.store.oauth_grant(&self.client.account).await?;
        // A grant the provider refused stays refused: asking again with
        // the same refresh token on every poll only gets the app throttled.
        // `ticketd auth login` replaces the row and clears the error, which
        // the next call here picks up.
        if self.client.flow.has_refresh_token() {
            if let Some(g) = &grant {
                if g.last_error_kind.as_deref() == Some("permanent") {
                    return Err(OAuthError::Permanent {
                        account: self.client.account.clone(),
                        name: self.client.name.clone(),
                        message: g.last_error.clone().unwrap_or_default(),
                    });
                }
            }
        }
        if let Some(c) = grant.as_ref().and_then(stored_token) {
            let was_refused = refused
                .as_ref()
                .is_some_and(|r| r.secret() == c.token.secret());
            if !was_refused && now < c.refresh_at {
                let token = c.token.clone();
                *cache = Some(c);
                // A token `auth login` (or another instance) stored: the
                // grant works again.
                self.auth_metric(true);
                return Ok(token);
            }
        }
        let fresh = self.fetch(grant.as_ref()).await;
        match fresh {
            Ok(c) => {
                let token = c.token.clone();
                *cache = Some(c);
                self.auth_metric(true);
                Ok(token)
            }
            Err(e) => {
                let (kind, text) = match &e {
                    OAuthError::Permanent { message, .. } => ("permanent", message.clone()),
                    OAuthError::Temporary { message, .. } => ("temporary", message.clone()),
                    OAuthError::Config(m) => ("permanent", m.clone()),
                    OAuthError::Store(_) => return Err(e),
                };
                let notices = match (kind, self.notice.get()) {
                    ("permanent", Some((notice, _))) => notice(&Refusal {
                        account: &self.client.account,
                        name: &self.client.name,
                        message: &text,
                    }),
                    _ => Vec::new(),
                };
                let queued = self
                    .store
                    .record_oauth_error(&self.client.account, kind, &text, &ts(now), &notices)
                    .await?;
                if kind == "permanent" {
                    self.auth_metric(false);
                }
                if queued {
                    tracing::warn!(account = %self.client.account, notices = notices.len(), "oauth: the grant was refused; the desk's lead is told");
                    if let Some((_, wake)) = self.notice.get() {
                        wake.notify_one();
                    }
                }
                Err(e)
            }
        }
    }

    /// `ticketd_mailbox_auth_ok` of the account (the IMAP or Graph
    /// mailbox's name, or `smtp`): 1 after the provider gave a token, 0 after it refused the
    /// grant for good.
    fn auth_metric(&self, ok: bool) {
        if let Some(m) = &self.metrics {
            let account = &self.client.account;
            let mailbox = account
                .strip_prefix("imap:")
                .or_else(|| account.strip_prefix("graph:"))
                .unwrap_or(account);
            m.mailbox_auth(mailbox, ok);
        }
    }

    /// The token last handed out was refused by the server: the next
    /// [`TokenSource::access_token`] gets a new one, unless another caller
    /// already replaced it.
    pub fn invalidate(&self) {
        let last = self.last.lock().ok().and_then(|l| l.clone());
        if let Some(t) = last {
            self.invalidate_token(&t);
        }
    }

    /// `token` was refused by the server: the next call gets a new one if
    /// `token` is still the current one. Several tasks refused with the
    /// same token cause one refresh.
    pub fn invalidate_token(&self, token: &AccessToken) {
        if let Ok(mut r) = self.refused.lock() {
            *r = Some(token.clone());
        }
    }

    fn take_refused(&self) -> Option<AccessToken> {
        self.refused.lock().ok().and_then(|mut r| r.take())
    }

    /// Gets a token by the account's grant and stores it.
    async fn fetch(&self, grant: Option<&GrantRow>) -> Result<Cached, OAuthError> {
        let answer = match self.client.flow {
            OAuthFlow::ClientCredentials => self.client.client_credentials().await?,
            OAuthFlow::ServiceAccount => self.client.service_account().await?,
            OAuthFlow::DeviceCode | OAuthFlow::AuthorizationCode => {
                let Some(refresh) = grant.and_then(|g| g.refresh_token.clone()) else {
                    return Err(OAuthError::Permanent {
                        account: self.client.account.clone(),
                        name: self.client.name.clone(),
                        message: "no grant stored".into(),
                    });
                };
                match self
                    .client
                    .refresh(&RefreshToken::new(refresh.clone()))
                    .await
                {
                    Ok(answer) => answer,
                    Err(e) => {
                        // Another process may have rotated the refresh
                        // token a moment ago: its token is then in the
                        // database, and the grant is fine.
                        if let OAuthError::Permanent { .. } = e {
                            let now = self.store.oauth_grant(&self.client.account).await?;
                            if let Some(g) = now.as_ref() {
                                if g.refresh_token.as_deref() != Some(refresh.as_str()) {
                                    if let Some(c) = stored_token(g) {
                                        if jiff::Timestamp::now() < c.refresh_at {
                                            return Ok(c);
                                        }
                                    }
                                }
                            }
                        }
                        return Err(e);
                    }
                }
            }
        };
        let now = jiff::Timestamp::now();
        let cached = save(&self.store, &self.client.account, &answer, now, false).await?;
        if let Some(m) = &self.metrics {
            m.oauth_token_refreshed(&self.client.account);
        }
        tracing::info!(
            account = %self.client.account,
            expires_in = answer.expires_in().map(|d| d.as_secs()),
            rotated = answer.refresh_token().is_some(),
            "oauth: new access token"
        );
        Ok(cached)
    }
}

/// Stores a token answer (the rotated refresh token with it, in one
/// transaction); `replace` drops the old grant first (a new login).
async fn save(
    store: &Store,
    account: &str,
    answer: &BasicTokenResponse,
    now: jiff::Timestamp,
    replace: bool,
) -> Result<Cached, OAuthError> {
    let lifetime = answer.expires_in().unwrap_or(DEFAULT_LIFETIME);
    let expires = now
        .checked_add(jiff::SignedDuration::try_from(lifetime).unwrap_or_default())
        .unwrap_or(now);
    let scope = answer
        .scopes()
        .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "));
    let expires_text = ts(expires);
    let tokens = NewTokens {
        access_token: answer.access_token().secret(),
        access_expires_at: &expires_text,
        refresh_token: answer.refresh_token().map(|r| r.secret().as_str()),
        scope: scope.as_deref(),
    };
    if replace {
        store
            .replace_oauth_grant(account, &tokens, &ts(now))
            .await?;
    } else {
        store.save_oauth_tokens(account, &tokens, &ts(now)).await?;
    }
    Ok(Cached {
        token: answer.access_token().clone(),
        refresh_at: refresh_at(now, expires),
    })
}

/// The lock that serialises refreshes of `account` within this process.
fn account_lock(account: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    > = std::sync::LazyLock::new(Default::default);
    let mut locks = LOCKS.lock().unwrap_or_else(|p| p.into_inner());
    locks.entry(account.to_string()).or_default().clone()
}

/// The access token a stored grant holds, if any and readable.
fn stored_token(g: &GrantRow) -> Option<Cached> {
    let token = g.access_token.clone()?;
    let expires: jiff::Timestamp = g.access_expires_at.as_deref()?.parse().ok()?;
    let obtained: jiff::Timestamp = g
        .last_refresh_at
        .as_deref()
        .and_then(|t| t.parse().ok())
        .unwrap_or(expires);
    Some(Cached {
        token: AccessToken::new(token),
        refresh_at: refresh_at(obtained, expires),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn an_hour_token_is_replaced_five_minutes_early_a_short_one_at_ninety_percent() {
        assert_eq!(
            refresh_at(t("2026-01-01T00:00:00Z"), t("2026-01-01T01:00:00Z")),
            t("2026-01-01T00:55:00Z")
        );
        assert_eq!(
            refresh_at(t("2026-01-01T00:00:00Z"), t("2026-01-01T00:00:20Z")),
            t("2026-01-01T00:00:18Z")
        );
    }

    #[test]
    fn invalid_grant_is_permanent_and_server_errors_are_temporary() {
        use oauth2::basic::BasicErrorResponse;
        type E = RequestTokenError<std::io::Error, BasicErrorResponse>;
        let grant: E = RequestTokenError::ServerResponse(BasicErrorResponse::new(
            BasicErrorResponseType::InvalidGrant,
            Some("AADSTS70008: The provided authorization code or refresh token has expired.\nTrace ID: x".into()),
            None,
        ));
        assert_eq!(
            classify(&grant),
            Failure::Permanent(
                "invalid_grant: AADSTS70008: The provided authorization code or refresh token has expired."
                    .into()
            )
        );
        let busy: E = RequestTokenError::ServerResponse(BasicErrorResponse::new(
            BasicErrorResponseType::Extension("temporarily_unavailable".into()),
            None,
            None,
        ));
        assert_eq!(
            classify(&busy),
            Failure::Temporary("temporarily_unavailable".into())
        );
        let net: E = RequestTokenError::Request(std::io::Error::other("connection refused"));
        assert!(matches!(classify(&net), Failure::Temporary(_)));
    }

    #[test]
    fn a_permanent_error_names_the_login_command() {
        let e = OAuthError::Permanent {
            account: "imap:support".into(),
            name: "support".into(),
            message: "invalid_grant: revoked".into(),
        };
        assert_eq!(
            e.to_string(),
            "imap:support: invalid_grant: revoked; run `ticketd auth login support`"
        );
        assert!(e.is_permanent());
    }
}
