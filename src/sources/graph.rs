//! Microsoft Graph intake: one task per `[[graph]]` mailbox, for Microsoft
//! 365 tenants that turned IMAP and SMTP off. Graph has no IDLE: the task
//! polls every `poll_seconds`.
//!
//! A round follows the folder's delta query ("Get incremental changes to
//! messages in a folder": `GET …/mailFolders/{id}/messages/delta`, pages
//! of at most 50 by `Prefer: odata.maxpagesize=50`, `@odata.nextLink`
//! until a page carries `@odata.deltaLink`). Each new message's MIME is
//! fetched (`GET …/messages/{id}/$value`), stored through the same intake
//! as an IMAP message (arrival = `receivedDateTime`), and only after the
//! commit moved to the processed folder (`POST …/messages/{id}/move`).
//! The delta link is written to the database only after the whole round
//! is stored and moved: a crash re-reads from the link before, and the
//! store's dedupe makes the re-read message a `duplicate`; a message
//! stored but not moved is met again and moved then. A link Graph no
//! longer knows (410 Gone, `syncStateNotFound`, `resyncRequired`) starts a
//! fresh delta, which lists the folder as it is (dedupe protects again).
//!
//! [`GraphClient`] does the HTTP for the source and for the `graph`
//! transport ([`crate::outbound::graph`]): bearer tokens from the
//! mailbox's [`TokenSource`] (a 401 invalidates the token and the request
//! is made once more, then it is an authentication failure), at most
//! [`MAX_CONCURRENT`] requests at a time (Outlook's per-mailbox
//! concurrency limit), and throttling answered as Graph's throttling
//! guidance says: after a 429 or 503 no request of this mailbox leaves
//! before its `Retry-After` has passed. Redirects are not followed, and a
//! `nextLink`/`deltaLink` outside the configured base URL is refused, so
//! the token never goes anywhere else.

use crate::config::{Config, GraphConfig};
use crate::domain::Action;
use crate::metrics::Metrics;
use crate::oauth::{chain, OAuthError, TokenSource};
use crate::outbound::Wake;
use crate::service::{Incoming, Intake, SourceDefaults};
use crate::sources::imap::{jitter, SyncObserver, MAX_BACKOFF, MIN_BACKOFF};
use crate::store::{Store, StoreError};
use oauth2::reqwest;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Outlook serves at most four concurrent requests per app and mailbox
/// ("Microsoft Graph throttling guidance", Outlook service limits); more
/// are answered with 429 `MailboxConcurrency`.
pub const MAX_CONCURRENT: usize = 4;
/// `$value` requests of one round in flight at once (the rest of
/// [`MAX_CONCURRENT`] is left to the transport and to moves).
const FETCH_CONCURRENCY: usize = 2;
/// Items per delta page asked for.
const PAGE_SIZE: u32 = 50;
/// Throttled answers one request waits out before it gives up (the round
/// then ends and the next one starts after the wait).
const MAX_THROTTLED: u32 = 6;
/// The delay after a 429/503 without `Retry-After` (the guidance: back off
/// exponentially), doubled per repeat.
const THROTTLE_FALLBACK: Duration = Duration::from_secs(2);

/// Why a Graph request or round failed.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// No access token (the token endpoint refused or failed).
    #[error("{0}")]
    Token(#[from] OAuthError),
    /// Graph refused the token twice (a fresh one too): 401.
    #[error("Microsoft Graph refused the access token: {0}")]
    Auth(String),
    /// Graph throttled the mailbox; nothing may be sent before `after`.
    #[error("throttled by Microsoft Graph ({status}), retry after {} s", after.as_secs())]
    Throttled {
        /// 429 or 503.
        status: u16,
        /// Its `Retry-After`.
        after: Duration,
    },
    /// Graph answered with an error status.
    #[error("Microsoft Graph answered {status}: {code}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// Graph's error code (`ErrorItemNotFound`, `syncStateNotFound`…).
        code: String,
        /// Graph's message, one line.
        message: String,
    },
    /// The request did not get an answer (network, timeout).
    #[error("request to Microsoft Graph failed: {0}")]
    Http(String),
    /// An answer that is not what Graph documents.
    #[error("unexpected answer from Microsoft Graph: {0}")]
    Protocol(String),
    /// Messages could not be stored; they stay in the mailbox.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl GraphError {
    /// Whether the mailbox's credential is at fault (as opposed to the
    /// network, throttling or the database).
    pub fn is_auth(&self) -> bool {
        match self {
            GraphError::Auth(_) => true,
            GraphError::Token(e) => e.is_permanent(),
            _ => false,
        }
    }

    /// Graph's error code, for a status answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            GraphError::Status { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// One answer: status and body.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body (cut off at the limit asked for: see [`Reply::too_big`]).
    pub body: Vec<u8>,
    /// The body was longer than the limit and was not read to its end.
    pub too_big: bool,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, GraphError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| GraphError::Protocol(format!("status {}: {e}", self.status)))
    }

    /// An error answer as [`GraphError::Status`] with Graph's code and
    /// message (`{"error":{"code":…,"message":…}}`).
    pub fn error(&self) -> GraphError {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        let text = |k: &str| {
            v["error"][k]
                .as_str()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(300)
                .collect::<String>()
        };
        GraphError::Status {
            status: self.status,
            code: text("code"),
            message: text("message"),
        }
    }
}

/// What a request may do when throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnThrottle {
    /// Wait out `Retry-After` and send again (up to [`MAX_THROTTLED`]).
    Wait,
    /// Return [`GraphError::Throttled`] at once (the outbox reschedules).
    Return,
}

/// The HTTP side of one Graph mailbox, shared by its source task and the
/// transport sending as it.
pub struct GraphClient {
    name: String,
    base: String,
    /// `{base}/users/{mailbox}`.
    user_url: String,
    tokens: Arc<TokenSource>,
    http: reqwest::Client,
    /// No request before this instant (the last `Retry-After`).
    not_before: std::sync::Mutex<Option<Instant>>,
    slots: tokio::sync::Semaphore,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("name", &self.name)
            .field("user_url", &self.user_url)
            .finish_non_exhaustive()
    }
}

/// Percent-encodes a path segment or query value (RFC 3986 unreserved
/// characters and `@` stay).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The well-known folder names Graph takes in place of a folder id
/// ("mailFolder resource type").
const WELL_KNOWN: &[&str] = &[
    "archive",
    "clutter",
    "conflicts",
    "conversationhistory",
    "deleteditems",
    "drafts",
    "inbox",
    "junkemail",
    "localfailures",
    "msgfolderroot",
    "outbox",
    "recoverableitemsdeletions",
    "scheduled",
    "searchfolders",
    "sentitems",
    "serverfailures",
    "syncissues",
];

/// The wait a 429/503 asks for: `Retry-After` in seconds, else
/// [`THROTTLE_FALLBACK`] doubled per repeat.
fn retry_after(headers: &reqwest::header::HeaderMap, repeat: u32) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or_else(|| THROTTLE_FALLBACK * 2u32.saturating_pow(repeat.min(6)))
}

impl GraphClient {
    /// The client of mailbox `g`, with the token source of account
    /// `graph:NAME`.
    pub fn new(
        cfg: &Config,
        g: &GraphConfig,
        store: &Store,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<GraphClient, String> {
        let key = format!("graph:{}", g.label());
        let tokens = crate::oauth::source_for(cfg, &key, store, metrics)
            .map_err(|e| format!("graph {:?}: {e}", g.label()))?
            .ok_or_else(|| format!("graph {:?}: no OAuth account", g.label()))?;
        GraphClient::with_tokens(g, tokens)
    }

    /// The account's token source (to tell the desk's lead when its grant
    /// is refused, see [`TokenSource::set_notice`]).
    pub fn tokens(&self) -> &Arc<TokenSource> {
        &self.tokens
    }

    /// The client of mailbox `g` with tokens from `tokens`.
    pub fn with_tokens(g: &GraphConfig, tokens: Arc<TokenSource>) -> Result<GraphClient, String> {
        let http = reqwest::ClientBuilder::new()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| format!("graph {:?}: HTTP client: {e}", g.label()))?;
        let base = g.base().to_string();
        Ok(GraphClient {
            name: g.label().to_string(),
            user_url: format!("{base}/users/{}", encode(g.mailbox.get_ref())),
            base,
            tokens,
            http,
            not_before: std::sync::Mutex::new(None),
            slots: tokio::sync::Semaphore::new(MAX_CONCURRENT),
        })
    }

    /// The mailbox's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `{base}/users/{mailbox}`.
    pub fn user_url(&self) -> &str {
        &self.user_url
    }

    /// Waits until the last `Retry-After` has passed.
    async fn wait_turn(&self) {
        loop {
            let until = self.not_before.lock().ok().and_then(|n| *n);
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t.into()).await,
                _ => return,
            }
        }
    }

    fn hold_off(&self, d: Duration) {
        let t = Instant::now() + d;
        if let Ok(mut n) = self.not_before.lock() {
            if n.is_none_or(|old| old < t) {
                *n = Some(t);
            }
        }
    }

    /// Sends one request built by `build` (method, URL, headers, body;
    /// the token is added here). 401: the token is invalidated and the
    /// request made once more. 429/503: see [`OnThrottle`]. `limit`: the
    /// body is read up to this many bytes (then [`Reply::too_big`]).
    pub async fn call(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        on_throttle: OnThrottle,
        limit: Option<u64>,
    ) -> Result<Reply, GraphError> {
        let mut refreshed = false;
        let mut throttled = 0u32;
        loop {
            self.wait_turn().await;
            let _slot = self
                .slots
                .acquire()
                .await
                .map_err(|e| GraphError::Protocol(e.to_string()))?;
            let token = self.tokens.access_token().await?;
            let resp = build(&self.http)
                .bearer_auth(token.secret())
                .send()
                .await
                .map_err(|e| GraphError::Http(chain(&e)))?;
            let status = resp.status().as_u16();
            match status {
                401 => {
                    let reply = read(resp, Some(64 * 1024)).await?;
                    self.tokens.invalidate_token(&token);
                    if !refreshed {
                        refreshed = true;
                        tracing::warn!(mailbox = %self.name, error = %reply.error(), "Microsoft Graph refused the access token: trying once more with a fresh one");
                        continue;
                    }
                    return Err(GraphError::Auth(match reply.error() {
                        GraphError::Status { code, message, .. } => format!("{code}: {message}"),
                        e => e.to_string(),
                    }));
                }
                429 | 503 => {
                    let after = retry_after(resp.headers(), throttled);
                    self.hold_off(after);
                    throttled += 1;
                    tracing::info!(mailbox = %self.name, status, retry_after_ms = after.as_millis() as u64, "Microsoft Graph throttled the mailbox");
                    if on_throttle == OnThrottle::Return || throttled > MAX_THROTTLED {
                        return Err(GraphError::Throttled { status, after });
                    }
                    drop(resp);
                    continue;
                }
                _ => return read(resp, limit).await,
            }
        }
    }

    /// GET `url` as JSON; an error status is a [`GraphError::Status`].
    pub async fn get_json(
        &self,
        url: &str,
        prefer: Option<&str>,
    ) -> Result<serde_json::Value, GraphError> {
        let reply = self
            .call(
                |c| {
                    let r = c.get(url).header("Accept", "application/json");
                    match prefer {
                        Some(p) => r.header("Prefer", p),
                        None => r,
                    }
                },
                OnThrottle::Wait,
                Some(16 * 1024 * 1024),
            )
            .await?;
        if reply.status != 200 {
            return Err(reply.error());
        }
        reply.json()
    }

    /// POST a JSON body; the answer's JSON for a 2xx.
    async fn post_json(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, GraphError> {
        let text = body.to_string();
        let reply = self
            .call(
                |c| {
                    c.post(url)
                        .header("Content-Type", "application/json")
                        .body(text.clone())
                },
                OnThrottle::Wait,
                Some(1024 * 1024),
            )
            .await?;
        if !(200..300).contains(&reply.status) {
            return Err(reply.error());
        }
        if reply.body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        reply.json()
    }

    /// A link Graph returned (`nextLink`, `deltaLink`), if it is under the
    /// configured base URL: the token goes nowhere else.
    fn own_link(&self, link: &str) -> Result<String, GraphError> {
        let ok = link
            .strip_prefix(&self.base)
            .is_some_and(|rest| rest.starts_with('/'));
        if ok {
            Ok(link.to_string())
        } else {
            Err(GraphError::Protocol(format!(
                "a paging link outside {}: not followed",
                self.base
            )))
        }
    }

    /// The id of folder `name`: a well-known name directly, else a
    /// top-level folder with that display name; `create`: made when
    /// missing.
    pub async fn folder_id(&self, name: &str, create: bool) -> Result<Option<String>, GraphError> {
        let lower = name.to_ascii_lowercase();
        if WELL_KNOWN.contains(&lower.as_str()) {
            let v = self
                .get_json(
                    &format!(
                        "{}/mailFolders/{lower}?$select=id,displayName",
                        self.user_url
                    ),
                    None,
                )
                .await?;
            return id_of(&v).map(Some);
        }
        if let Some(id) = self.find_folder(name).await? {
            return Ok(Some(id));
        }
        if !create {
            return Ok(None);
        }
        match self
            .post_json(
                &format!("{}/mailFolders", self.user_url),
                &serde_json::json!({ "displayName": name }),
            )
            .await
        {
            Ok(v) => {
                tracing::info!(mailbox = %self.name, folder = name, "created the folder");
                id_of(&v).map(Some)
            }
            // Created meanwhile (another instance): look again.
            Err(e) if e.code() == Some("ErrorFolderExists") => self.find_folder(name).await,
            Err(e) => Err(e),
        }
    }

    /// A top-level folder by display name.
    async fn find_folder(&self, name: &str) -> Result<Option<String>, GraphError> {
        let filter = format!("displayName eq '{}'", name.replace('\'', "''"));
        let mut url = format!(
            "{}/mailFolders?$filter={}&$select=id,displayName",
            self.user_url,
            encode(&filter)
        );
        loop {
            let v = self.get_json(&url, None).await?;
            if let Some(list) = v["value"].as_array() {
                for f in list {
                    if f["displayName"]
                        .as_str()
                        .is_some_and(|d| d.eq_ignore_ascii_case(name))
                    {
                        return id_of(f).map(Some);
                    }
                }
            }
            match v["@odata.nextLink"].as_str() {
                Some(next) => url = self.own_link(next)?,
                None => return Ok(None),
            }
        }
    }

    /// How many messages folder `id` holds (`totalItemCount`).
    async fn folder_count(&self, id: &str) -> Result<u64, GraphError> {
        let v = self
            .get_json(
                &format!(
                    "{}/mailFolders/{}?$select=id,totalItemCount",
                    self.user_url,
                    encode(id)
                ),
                None,
            )
            .await?;
        Ok(v["totalItemCount"].as_u64().unwrap_or(0))
    }

    /// A message's MIME (`$value`); `Ok(None)` when it is larger than
    /// `limit`, `Err` with `ErrorItemNotFound` when it is gone.
    async fn mime(&self, id: &str, limit: u64) -> Result<Option<Vec<u8>>, GraphError> {
        let url = format!("{}/messages/{}/$value", self.user_url, encode(id));
        let reply = self
            .call(|c| c.get(&url), OnThrottle::Wait, Some(limit))
            .await?;
        if reply.status != 200 {
            return Err(reply.error());
        }
        Ok((!reply.too_big).then_some(reply.body))
    }

    /// Moves a message to folder `to` (it gets a new id there).
    async fn move_to(&self, id: &str, to: &str) -> Result<(), GraphError> {
        self.post_json(
            &format!("{}/messages/{}/move", self.user_url, encode(id)),
            &serde_json::json!({ "destinationId": to }),
        )
        .await
        .map(|_| ())
    }
}

/// The `id` of a Graph object.
fn id_of(v: &serde_json::Value) -> Result<String, GraphError> {
    v["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| GraphError::Protocol("an object without id".into()))
}

/// Reads a body up to `limit` bytes.
async fn read(mut resp: reqwest::Response, limit: Option<u64>) -> Result<Reply, GraphError> {
    let status = resp.status().as_u16();
    let limit = limit.unwrap_or(u64::MAX);
    if resp.content_length().is_some_and(|n| n > limit) {
        return Ok(Reply {
            status,
            body: Vec::new(),
            too_big: true,
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| GraphError::Http(chain(&e)))?
    {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Ok(Reply {
                status,
                body: Vec::new(),
                too_big: true,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        body,
        too_big: false,
    })
}

/// Whether Graph no longer knows a delta link: 410 Gone, or the codes its
/// delta documentation names for it.
fn delta_expired(e: &GraphError) -> bool {
    match e {
        GraphError::Status { status, code, .. } => {
            *status == 410
                || code.eq_ignore_ascii_case("syncStateNotFound")
                || code.eq_ignore_ascii_case("resyncRequired")
                || code.eq_ignore_ascii_case("SyncStateInvalid")
        }
        _ => false,
    }
}

/// One item of a delta page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaItem {
    /// The message id (in this folder).
    pub id: String,
    /// `receivedDateTime`.
    pub received: Option<jiff::Timestamp>,
}

/// A delta page: the new or changed messages (removed ones left out), and
/// the link to go on with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaPage {
    /// New or changed messages.
    pub items: Vec<DeltaItem>,
    /// `@odata.nextLink`: more pages.
    pub next: Option<String>,
    /// `@odata.deltaLink`: the round is complete.
    pub delta: Option<String>,
}

/// Reads a delta page; `@removed` entries are skipped.
pub fn parse_delta(v: &serde_json::Value) -> Result<DeltaPage, GraphError> {
    let list = v["value"]
        .as_array()
        .ok_or_else(|| GraphError::Protocol("a delta page without value".into()))?;
    let items = list
        .iter()
        .filter(|m| m.get("@removed").is_none())
        .filter_map(|m| {
            Some(DeltaItem {
                id: m["id"].as_str()?.to_string(),
                received: m["receivedDateTime"].as_str().and_then(|t| t.parse().ok()),
            })
        })
        .collect();
    let link = |k: &str| v[k].as_str().map(str::to_string);
    let page = DeltaPage {
        items,
        next: link("@odata.nextLink"),
        delta: link("@odata.deltaLink"),
    };
    if page.next.is_none() && page.delta.is_none() {
        return Err(GraphError::Protocol(
            "a delta page with neither @odata.nextLink nor @odata.deltaLink".into(),
        ));
    }
    Ok(page)
}

/// Reports a Graph mailbox to [`Metrics`] (source `graph` in the message
/// counters).
pub struct GraphMetrics(pub Arc<Metrics>);

impl SyncObserver for GraphMetrics {
    fn synced(&self, mailbox: &str) {
        self.0.mailbox_synced(mailbox);
    }
    fn connected(&self, mailbox: &str, up: bool) {
        self.0.mailbox_connected(mailbox, up);
    }
    fn auth(&self, mailbox: &str, ok: bool) {
        self.0.mailbox_auth(mailbox, ok);
    }
    fn decided(&self, action: Action, latency: Duration) {
        self.0.message_decided("graph", action.as_str());
        self.0.ingest_latency("graph", latency);
    }
}

/// One configured Graph mailbox, ready to run.
pub struct GraphSource {
    cfg: GraphConfig,
    client: Arc<GraphClient>,
    defaults: SourceDefaults,
    /// `[intake] max_message_bytes`: bigger messages stay in the folder.
    max_bytes: u64,
    /// Messages found too big, told once.
    too_big: std::sync::Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for GraphSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphSource")
            .field("mailbox", &self.cfg.label())
            .finish_non_exhaustive()
    }
}

/// The folder ids a session works with.
#[derive(Debug, Clone)]
struct Folders {
    source: String,
    processed: String,
}

impl GraphSource {
    /// The source of mailbox `g`, using `client` (shared with the
    /// transport when it sends as this mailbox).
    pub fn new(cfg: &Config, g: &GraphConfig, client: Arc<GraphClient>) -> GraphSource {
        GraphSource {
            cfg: g.clone(),
            client,
            defaults: SourceDefaults::from(&g.defaults),
            max_bytes: cfg.intake.max_message_bytes,
            too_big: std::sync::Mutex::default(),
        }
    }

    /// The mailbox's name.
    pub fn label(&self) -> &str {
        self.cfg.label()
    }

    /// For `check-config --connect`: gets a token, finds the folder and
    /// counts its messages, finds the processed folder (without creating
    /// it). Says what was reached, or which step failed.
    pub async fn check(&self) -> Result<String, String> {
        let c = &self.client;
        let folder = &self.cfg.folder;
        let id = c
            .folder_id(folder, false)
            .await
            .map_err(|e| format!("{}: folder {folder:?}: {e}", c.user_url()))?
            .ok_or_else(|| {
                format!(
                    "{}: no folder {folder:?} (a well-known name or a top-level folder's display name)",
                    c.user_url()
                )
            })?;
        let n = c
            .folder_count(&id)
            .await
            .map_err(|e| format!("{}: folder {folder:?}: {e}", c.user_url()))?;
        let processed = match c.folder_id(&self.cfg.processed_folder, false).await {
            Ok(Some(_)) => "exists".to_string(),
            Ok(None) => "will be created".to_string(),
            Err(e) => return Err(format!("folder {:?}: {e}", self.cfg.processed_folder)),
        };
        Ok(format!(
            "{}: folder {folder:?} listed ({n} messages), processed folder {:?} {processed}",
            c.user_url(),
            self.cfg.processed_folder
        ))
    }

    /// Runs until `shutdown`: a delta round every `poll_seconds`; after a
    /// failure the next one after a backoff with jitter (after a throttle,
    /// after exactly its `Retry-After`).
    pub async fn run(
        self,
        intake: Arc<Intake>,
        store: Store,
        wake: Arc<Wake>,
        observer: Arc<dyn SyncObserver>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let label = self.label().to_string();
        let mut backoff = MIN_BACKOFF;
        let mut folders: Option<Folders> = None;
        let mut up = false;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let round = async {
                let f = match &folders {
                    Some(f) => f.clone(),
                    None => {
                        let f = self.folders().await?;
                        folders = Some(f.clone());
                        f
                    }
                };
                self.round(&f, &intake, &store, &wake, &*observer).await
            };
            let r = tokio::select! {
                r = round => r,
                _ = shutdown.changed() => return,
            };
            let wait = match r {
                Ok(stored) => {
                    if !up {
                        up = true;
                        observer.connected(&label, true);
                        observer.auth(&label, true);
                        tracing::info!(mailbox = %label, stored, "Graph mailbox in sync");
                    } else if stored > 0 {
                        tracing::info!(mailbox = %label, stored, "Graph mailbox in sync");
                    }
                    observer.synced(&label);
                    backoff = MIN_BACKOFF;
                    Duration::from_secs(self.cfg.poll_seconds)
                }
                Err(e) => {
                    up = false;
                    observer.connected(&label, false);
                    if e.is_auth() {
                        observer.auth(&label, false);
                    }
                    if matches!(&e, GraphError::Status { status: 404, .. }) {
                        // A folder deleted or renamed: look it up again.
                        folders = None;
                    }
                    let wait = match &e {
                        // The client holds every request until then anyway.
                        GraphError::Throttled { after, .. } => *after,
                        _ => jitter(backoff),
                    };
                    tracing::warn!(mailbox = %label, error = %e, retry_in_ms = wait.as_millis() as u64, "Graph round failed");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Finds the folder and the processed folder (creating it).
    async fn folders(&self) -> Result<Folders, GraphError> {
        let c = &self.client;
        let source =
            c.folder_id(&self.cfg.folder, false)
                .await?
                .ok_or_else(|| GraphError::Status {
                    status: 404,
                    code: "ErrorFolderNotFound".into(),
                    message: format!("no folder {:?}", self.cfg.folder),
                })?;
        let processed = c
            .folder_id(&self.cfg.processed_folder, true)
            .await?
            .ok_or_else(|| GraphError::Protocol("the processed folder was not created".into()))?;
        Ok(Folders { source, processed })
    }

    /// One delta round: every page, each page's messages stored and moved;
    /// then the delta link saved. Returns how many messages were stored.
    async fn round(
        &self,
        f: &Folders,
        intake: &Intake,
        store: &Store,
        wake: &Wake,
        observer: &dyn SyncObserver,
    ) -> Result<usize, GraphError> {
        let label = self.label();
        let folder = &self.cfg.folder;
        let fresh = format!(
            "{}/mailFolders/{}/messages/delta?$select=id,receivedDateTime,internetMessageId",
            self.client.user_url(),
            encode(&f.source)
        );
        let mut url = match store.graph_cursor(label, folder).await? {
            Some(link) => self
                .client
                .own_link(&link)
                .unwrap_or_else(|_| fresh.clone()),
            None => fresh.clone(),
        };
        let prefer = format!("odata.maxpagesize={PAGE_SIZE}");
        let mut restarted = false;
        let mut total = 0;
        loop {
            let page = match self.client.get_json(&url, Some(&prefer)).await {
                Ok(v) => parse_delta(&v)?,
                Err(e) if delta_expired(&e) && !restarted => {
                    tracing::warn!(mailbox = %label, error = %e, "Graph no longer knows the delta link: reading the folder afresh (messages stored before are duplicates)");
                    store.clear_graph_cursor(label, folder).await?;
                    restarted = true;
                    url = fresh.clone();
                    continue;
                }
                Err(e) => return Err(e),
            };
            total += self.take(&page.items, f, intake, store, observer).await?;
            if total > 0 {
                wake.notify_one();
            }
            if let Some(next) = page.next {
                url = self.client.own_link(&next)?;
                continue;
            }
            if let Some(delta) = page.delta {
                let link = self.client.own_link(&delta)?;
                store
                    .set_graph_cursor(
                        label,
                        folder,
                        &link,
                        &crate::store::ts(jiff::Timestamp::now()),
                    )
                    .await?;
                return Ok(total);
            }
        }
    }

    /// Fetches, stores and moves the messages of one page; returns how
    /// many were stored.
    async fn take(
        &self,
        items: &[DeltaItem],
        f: &Folders,
        intake: &Intake,
        store: &Store,
        observer: &dyn SyncObserver,
    ) -> Result<usize, GraphError> {
        use futures_util::StreamExt;
        if items.is_empty() {
            return Ok(0);
        }
        let label = self.label();
        let skipped = self.too_big.lock().map(|t| t.clone()).unwrap_or_default();
        let wanted: Vec<&DeltaItem> = items.iter().filter(|i| !skipped.contains(&i.id)).collect();
        let client: &GraphClient = &self.client;
        let max = self.max_bytes;
        let requests: Vec<_> = wanted
            .iter()
            .map(|i| {
                let id = i.id.clone();
                async move { client.mime(&id, max).await }
            })
            .collect();
        let answers: Vec<Result<Option<Vec<u8>>, GraphError>> =
            futures_util::stream::iter(requests)
                .buffered(FETCH_CONCURRENCY)
                .collect()
                .await;
        let fetched = wanted.into_iter().zip(answers);
        let mut incoming = Vec::with_capacity(items.len());
        let mut ids = Vec::with_capacity(items.len());
        let mut arrived = Vec::with_capacity(items.len());
        let now = jiff::Timestamp::now();
        for (item, r) in fetched {
            match r {
                Ok(Some(raw)) => {
                    ids.push(item.id.clone());
                    arrived.push(item.received.unwrap_or(now));
                    incoming.push(Incoming {
                        raw,
                        source: format!("graph:{label}/{}/{}", self.cfg.folder, item.id),
                        arrived: item.received,
                    });
                }
                Ok(None) => {
                    let new = self
                        .too_big
                        .lock()
                        .map(|mut t| t.insert(item.id.clone()))
                        .unwrap_or(false);
                    if new {
                        tracing::error!(
                            mailbox = %label,
                            limit = self.max_bytes,
                            "message larger than [intake] max_message_bytes: not taken, left in the folder"
                        );
                    }
                }
                // Deleted or moved by someone else meanwhile.
                Err(GraphError::Status { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let results = intake
            .ingest_batch_from(store, &incoming, jiff::Timestamp::now(), &self.defaults)
            .await;
        drop(incoming);
        let committed = jiff::Timestamp::now();
        let mut done = Vec::new();
        let mut failed = None;
        for ((id, at), r) in ids.iter().zip(&arrived).zip(results) {
            match r {
                Ok(o) => {
                    observer.decided(o.action, committed.duration_since(*at).unsigned_abs());
                    done.push(id);
                }
                Err(e) => failed = Some(e),
            }
        }
        for id in &done {
            match self.client.move_to(id, &f.processed).await {
                Ok(()) => {}
                Err(GraphError::Status { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(e) = failed {
            // The database is in trouble, not the message: it stays in the
            // folder, and the delta link is not advanced.
            return Err(e.into());
        }
        Ok(done.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_page_skips_removed_items_and_names_its_link() {
        let v = serde_json::json!({
            "@odata.nextLink": "https://graph.microsoft.com/v1.0/users/a/mailFolders/x/messages/delta?$skiptoken=s",
            "value": [
                {"id": "m1", "receivedDateTime": "2026-12-03T10:00:00Z", "internetMessageId": "<a@b>"},
                {"id": "m2", "@removed": {"reason": "deleted"}},
                {"id": "m3"}
            ]
        });
        let p = parse_delta(&v).unwrap();
        assert_eq!(p.items.len(), 2);
        assert_eq!(p.items[0].id, "m1");
        assert_eq!(
            p.items[0].received,
            Some("2026-12-03T10:00:00Z".parse().unwrap())
        );
        assert_eq!(p.items[1].received, None);
        assert!(p.next.is_some() && p.delta.is_none());
        assert!(parse_delta(&serde_json::json!({"value": []})).is_err());
    }

    #[test]
    fn expired_delta_links_are_recognised() {
        let st = |status, code: &str| GraphError::Status {
            status,
            code: code.into(),
            message: String::new(),
        };
        assert!(delta_expired(&st(410, "")));
        assert!(delta_expired(&st(400, "syncStateNotFound")));
        assert!(delta_expired(&st(400, "resyncRequired")));
        assert!(!delta_expired(&st(400, "ErrorInvalidRequest")));
        assert!(!delta_expired(&GraphError::Http("x".into())));
    }

    #[test]
    fn retry_after_is_taken_in_seconds_else_backed_off() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h, 0), THROTTLE_FALLBACK);
        assert_eq!(retry_after(&h, 2), THROTTLE_FALLBACK * 4);
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h, 3), Duration::from_secs(7));
    }

    #[test]
    fn rules_see_the_graph_mailboxs_name() {
        assert_eq!(
            crate::service::mailbox_of("graph:desk/Inbox/AAMkAGI2TG93AAA="),
            "desk"
        );
        assert_eq!(
            crate::service::mailbox_of("imap:support/INBOX/7/42"),
            "support"
        );
    }

    #[test]
    fn mailbox_names_and_filters_are_encoded() {
        assert_eq!(encode("support@contoso.com"), "support@contoso.com");
        assert_eq!(
            encode("displayName eq 'A b'"),
            "displayName%20eq%20%27A%20b%27"
        );
    }
}
