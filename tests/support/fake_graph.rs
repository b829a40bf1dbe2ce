//! A fake Microsoft Graph (the mail part of v1.0) on loopback for the
//! tests of `ticketd::sources::graph` and the `graph` transport. axum on
//! `127.0.0.1:0`, under `/v1.0`; every request is counted. Tokens are
//! checked against the fake identity provider (`FakeIdp::is_active`).
//!
//! ```ignore
//! #[path = "support/fake_graph.rs"]
//! mod fake_graph;
//! let graph = fake_graph::FakeGraph::start(move |t| idp.is_active(t)).await;
//! graph.add_mailbox("support@contoso.test");
//! graph.deliver("support@contoso.test", mime);
//! // base_url() is what `[[graph]] base_url` takes.
//! ```
//!
//! What each part models, and from which documentation page:
//! - **Bearer tokens** ("Microsoft Graph error responses and resource
//!   types"): a request without a live token (unknown, expired, revoked at
//!   the IdP) gets 401 `InvalidAuthenticationToken` ("Access token has
//!   expired or is not yet valid.") with a `WWW-Authenticate: Bearer`
//!   header. An unknown mailbox is 404 `ErrorInvalidUser`.
//! - **Throttling** ("Microsoft Graph throttling guidance" and its Outlook
//!   service limits): at most 4 concurrent requests per app and mailbox;
//!   a fifth gets 429 `ApplicationThrottled` ("Application is over its
//!   MailboxConcurrency limit.") with `Retry-After`. [`FakeGraph::throttle_next`]
//!   answers the next N requests with 429 and a chosen `Retry-After`, as
//!   the 10,000-requests-per-10-minutes limit does once exceeded. A client
//!   must not send before `Retry-After` has passed: a request of the same
//!   mailbox earlier is counted ([`FakeGraph::early_retries`]) and
//!   throttled again with the time still left.
//! - **Delta** ("message: delta", "Get incremental changes to messages in a
//!   folder", "Use delta query to track changes in Microsoft Graph data"):
//!   `GET /users/{u}/mailFolders/{id}/messages/delta` lists the folder's
//!   messages (`id`, `receivedDateTime`, `internetMessageId`), at most
//!   `Prefer: odata.maxpagesize=N` per page (default 10); a page with more
//!   to come carries `@odata.nextLink` (`$skiptoken`), the last one
//!   `@odata.deltaLink` (`$deltatoken`), never both. The state tokens are
//!   opaque. Rounds with a delta link return what changed since: messages
//!   that came into the folder, and `{"id":…,"@removed":{"reason":"deleted"}}`
//!   for those that left it (moved or deleted). A token the fake does not
//!   know or has expired ([`FakeGraph::expire_delta_tokens`]) is 410 Gone
//!   with `SyncStateNotFound` ("The sync state generation is not found.
//!   The delta token is expired and data must be synchronized again.").
//! - **MIME** ("Get MIME content of a message"): `GET
//!   /users/{u}/messages/{id}/$value` returns the message's MIME as
//!   stored; an unknown id is 404 `ErrorItemNotFound`.
//! - **Move** ("message: move"): `POST /users/{u}/messages/{id}/move` with
//!   `{"destinationId": …}` (a folder id or well-known name) answers 201
//!   with the message, which has a **new id** in the destination folder
//!   (Graph's ids are not immutable by default); the old id is gone.
//! - **Folders** ("List mailFolders", "Create mailFolder", "mailFolder
//!   resource type"): list with `$filter=displayName eq '…'`, get one by
//!   id or well-known name (`inbox`, `sentitems`, …) with
//!   `totalItemCount`, create with `{"displayName": …}` (201), a duplicate
//!   name 409 `ErrorFolderExists`.
//! - **sendMail in MIME** ("user: sendMail", "Send Outlook messages in MIME
//!   format"): `POST /users/{u}/sendMail` needs `Content-Type: text/plain`
//!   and the MIME base64-encoded as the body; 202 Accepted; a body that is
//!   not base64 is 400 `ErrorMimeContentInvalidBase64String` ("Invalid
//!   base64 string for MIME content."); another content type 400
//!   `ErrorInvalidRequest`; a request over Graph's 4 MB limit 413
//!   `RequestEntityTooLarge`. The MIME is recorded as sent and, with
//!   [`FakeGraph::deliver_sent`], delivered into another mailbox's Inbox.

#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Outlook's concurrent requests per mailbox.
pub const MAILBOX_CONCURRENCY: usize = 4;
/// Graph's request size limit.
pub const MAX_REQUEST: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
struct Folder {
    id: String,
    name: String,
    well_known: Option<String>,
}

#[derive(Debug, Clone)]
struct Msg {
    folder: String,
    mime: Vec<u8>,
    received: String,
    internet_id: String,
    /// Order of arrival in its folder.
    seq: u64,
    delivered: Instant,
}

#[derive(Debug, Default)]
struct Mailbox {
    folders: Vec<Folder>,
    messages: HashMap<String, Msg>,
    /// (seq, folder id, message id): the message entered or left it.
    changes: Vec<(u64, String, String)>,
    in_flight: usize,
    not_before: Option<Instant>,
}

#[derive(Debug)]
struct Pending {
    mailbox: String,
    folder: String,
    rest: Vec<serde_json::Value>,
    snapshot: u64,
}

#[derive(Default)]
struct Inner {
    mailboxes: HashMap<String, Mailbox>,
    seq: u64,
    delta_tokens: HashMap<String, (String, String, u64)>,
    skip_tokens: HashMap<String, Pending>,
    counts: HashMap<String, usize>,
    throttle_next: usize,
    throttle_secs: u64,
    early: usize,
    sent: Vec<(String, Vec<u8>)>,
    /// Sending mailbox → the mailbox its sent mail is delivered into.
    deliver_sent: HashMap<String, String>,
    /// Delivery → moved out of the Inbox, per message.
    latencies: Vec<Duration>,
    next_id: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    is_active: Box<dyn Fn(&str) -> bool + Send + Sync>,
    base: Mutex<String>,
}

/// A running fake Graph; stops with the test's runtime.
pub struct FakeGraph {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn token() -> String {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl FakeGraph {
    /// Starts the fake on `127.0.0.1:0`; `is_active` says whether a bearer
    /// token is live (the fake IdP's introspection).
    pub async fn start(is_active: impl Fn(&str) -> bool + Send + Sync + 'static) -> FakeGraph {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            is_active: Box::new(is_active),
            base: Mutex::new(String::new()),
        });
        let app = Router::new()
            .route(
                "/v1.0/users/{mb}/mailFolders",
                get(list_folders).post(create_folder),
            )
            .route("/v1.0/users/{mb}/mailFolders/{fid}", get(get_folder))
            .route(
                "/v1.0/users/{mb}/mailFolders/{fid}/messages/delta",
                get(delta),
            )
            .route("/v1.0/users/{mb}/messages/{id}/$value", get(value))
            .route("/v1.0/users/{mb}/messages/{id}/move", post(move_message))
            .route("/v1.0/users/{mb}/sendMail", post(send_mail))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        *shared.base.lock().unwrap() = format!("http://{addr}/v1.0");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGraph { addr, shared }
    }

    /// `http://127.0.0.1:PORT/v1.0`: what `[[graph]] base_url` takes.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1.0", self.addr)
    }

    /// Creates a mailbox with its Inbox and Sent Items.
    pub fn add_mailbox(&self, upn: &str) {
        let mut i = self.shared.inner.lock().unwrap();
        let folders = ["inbox", "sentitems", "deleteditems"]
            .iter()
            .map(|w| Folder {
                id: format!("AQMk{}", token()),
                name: match *w {
                    "inbox" => "Inbox",
                    "sentitems" => "Sent Items",
                    _ => "Deleted Items",
                }
                .to_string(),
                well_known: Some(w.to_string()),
            })
            .collect();
        i.mailboxes.insert(
            lower(upn),
            Mailbox {
                folders,
                ..Mailbox::default()
            },
        );
    }

    /// Delivers `mime` into `upn`'s Inbox now; returns its id.
    pub fn deliver(&self, upn: &str, mime: Vec<u8>) -> String {
        let mut i = self.shared.inner.lock().unwrap();
        deliver_into(&mut i, &lower(upn), mime)
    }

    /// Requests of `kind` answered: `delta`, `value`, `move`, `sendMail`,
    /// `folders`, `createFolder`, `throttled`, `unauthorized`.
    pub fn count(&self, kind: &str) -> usize {
        let i = self.shared.inner.lock().unwrap();
        i.counts.get(kind).copied().unwrap_or(0)
    }

    /// Messages now in `upn`'s folder with display name `folder`.
    pub fn folder_count(&self, upn: &str, folder: &str) -> usize {
        self.messages_in(upn, folder).len()
    }

    /// The MIME of the messages in `upn`'s folder `folder` (display name).
    pub fn messages_in(&self, upn: &str, folder: &str) -> Vec<Vec<u8>> {
        let i = self.shared.inner.lock().unwrap();
        let Some(m) = i.mailboxes.get(&lower(upn)) else {
            return Vec::new();
        };
        let Some(f) = m
            .folders
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(folder))
        else {
            return Vec::new();
        };
        let mut list: Vec<&Msg> = m.messages.values().filter(|x| x.folder == f.id).collect();
        list.sort_by_key(|x| x.seq);
        list.into_iter().map(|x| x.mime.clone()).collect()
    }

    /// The next `n` requests (any mailbox) get 429 with `Retry-After: secs`.
    pub fn throttle_next(&self, n: usize, secs: u64) {
        let mut i = self.shared.inner.lock().unwrap();
        i.throttle_next = n;
        i.throttle_secs = secs;
    }

    /// Requests that came before the `Retry-After` their mailbox was given.
    pub fn early_retries(&self) -> usize {
        self.shared.inner.lock().unwrap().early
    }

    /// Every delta token stops working (Graph's token cache dropped them).
    pub fn expire_delta_tokens(&self) {
        let mut i = self.shared.inner.lock().unwrap();
        i.delta_tokens.clear();
        i.skip_tokens.clear();
    }

    /// The mails sent through sendMail: (mailbox, MIME).
    pub fn sent(&self) -> Vec<(String, Vec<u8>)> {
        self.shared.inner.lock().unwrap().sent.clone()
    }

    /// Mail `from` sends from now on is also delivered into `to`'s Inbox
    /// (a customer's mailbox writing to the desk).
    pub fn deliver_sent(&self, from: &str, to: &str) {
        self.shared
            .inner
            .lock()
            .unwrap()
            .deliver_sent
            .insert(lower(from), lower(to));
    }

    /// For each message moved out of an Inbox: the time from its delivery
    /// to the move.
    pub fn delivery_to_move(&self) -> Vec<Duration> {
        self.shared.inner.lock().unwrap().latencies.clone()
    }
}

fn deliver_into(i: &mut Inner, mb: &str, mime: Vec<u8>) -> String {
    i.seq += 1;
    i.next_id += 1;
    let seq = i.seq;
    let id = format!("AAMk{:08}{}", i.next_id, token());
    let internet_id = header(&mime, "message-id").unwrap_or_default();
    let Some(m) = i.mailboxes.get_mut(mb) else {
        return id;
    };
    let inbox = m
        .folders
        .iter()
        .find(|f| f.well_known.as_deref() == Some("inbox"))
        .map(|f| f.id.clone())
        .unwrap_or_default();
    m.changes.push((seq, inbox.clone(), id.clone()));
    m.messages.insert(
        id.clone(),
        Msg {
            folder: inbox,
            mime,
            received: jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap()
                .to_string(),
            internet_id,
            seq,
            delivered: Instant::now(),
        },
    );
    id
}

/// A header's value (first occurrence, unfolded).
fn header(mime: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(mime);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let want = format!("{}:", name.to_ascii_lowercase());
    head.lines()
        .find(|l| l.to_ascii_lowercase().starts_with(&want))
        .map(|l| l[want.len()..].trim().to_string())
}

fn json(status: StatusCode, v: serde_json::Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json(
        status,
        serde_json::json!({"error": {"code": code, "message": message, "innerError": {"request-id": token()}}}),
    )
}

/// The query parameters, decoded.
fn query(uri: &Uri) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut k = 0;
        while k < b.len() {
            match b[k] {
                b'+' => out.push(b' '),
                b'%' if k + 2 < b.len() => {
                    match std::str::from_utf8(&b[k + 1..(k + 3).min(b.len())])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(v) => {
                            out.push(v);
                            k += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            k += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// A request in flight for a mailbox; the count drops with it.
struct Guard {
    shared: Arc<Shared>,
    mailbox: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut i = self.shared.inner.lock().unwrap();
        if let Some(m) = i.mailboxes.get_mut(&self.mailbox) {
            m.in_flight = m.in_flight.saturating_sub(1);
        }
    }
}

fn throttled(secs: u64, limit: &str) -> Response {
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "ApplicationThrottled",
        &format!("Application is over its {limit} limit."),
    );
    r.headers_mut()
        .insert("retry-after", secs.to_string().parse().unwrap());
    r
}

/// Authentication, throttling and the concurrency count of one request.
fn enter(
    s: &Arc<Shared>,
    mb: &str,
    headers: &HeaderMap,
    kind: &str,
) -> Result<Guard, Box<Response>> {
    let mb = lower(mb);
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let live = bearer.as_deref().is_some_and(|t| (s.is_active)(t));
    let mut i = s.inner.lock().unwrap();
    if !live {
        *i.counts.entry("unauthorized".into()).or_default() += 1;
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
        );
        r.headers_mut().insert(
            "www-authenticate",
            "Bearer realm=\"\", error=\"invalid_token\""
                .parse()
                .unwrap(),
        );
        return Err(Box::new(r));
    }
    let now = Instant::now();
    let throttle_now = i.throttle_next > 0;
    let secs = i.throttle_secs;
    if throttle_now {
        i.throttle_next -= 1;
    }
    let Some(m) = i.mailboxes.get_mut(&mb) else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "ErrorInvalidUser",
            &format!("The requested user '{mb}' is invalid."),
        )));
    };
    let mut early = false;
    let answer = if let Some(t) = m.not_before.filter(|t| *t > now) {
        early = true;
        let left = (t - now).as_secs_f64().ceil().max(1.0) as u64;
        Some(throttled(left, "request"))
    } else if throttle_now {
        m.not_before = Some(now + Duration::from_secs(secs));
        Some(throttled(secs, "request"))
    } else if m.in_flight >= MAILBOX_CONCURRENCY {
        m.not_before = Some(now + Duration::from_secs(1));
        Some(throttled(1, "MailboxConcurrency"))
    } else {
        m.in_flight += 1;
        None
    };
    if early {
        i.early += 1;
    }
    if let Some(r) = answer {
        *i.counts.entry("throttled".into()).or_default() += 1;
        return Err(Box::new(r));
    }
    *i.counts.entry(kind.into()).or_default() += 1;
    Ok(Guard {
        shared: s.clone(),
        mailbox: mb,
    })
}

fn folder_json(m: &Mailbox, f: &Folder) -> serde_json::Value {
    let n = m.messages.values().filter(|x| x.folder == f.id).count();
    serde_json::json!({
        "id": f.id,
        "displayName": f.name,
        "parentFolderId": "root",
        "childFolderCount": 0,
        "totalItemCount": n,
        "unreadItemCount": n,
    })
}

fn find_folder<'a>(m: &'a Mailbox, fid: &str) -> Option<&'a Folder> {
    m.folders.iter().find(|f| {
        f.id == fid
            || f.well_known
                .as_deref()
                .is_some_and(|w| w.eq_ignore_ascii_case(fid))
    })
}

async fn list_folders(
    State(s): State<Arc<Shared>>,
    Path(mb): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let _g = match enter(&s, &mb, &headers, "folders") {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let q = query(&uri);
    let wanted = q.get("$filter").and_then(|f| {
        let rest = f.trim().strip_prefix("displayName eq '")?;
        Some(rest.strip_suffix('\'')?.replace("''", "'"))
    });
    let i = s.inner.lock().unwrap();
    let m = &i.mailboxes[&lower(&mb)];
    let list: Vec<serde_json::Value> = m
        .folders
        .iter()
        .filter(|f| wanted.as_deref().is_none_or(|w| f.name == w))
        .map(|f| folder_json(m, f))
        .collect();
    json(StatusCode::OK, serde_json::json!({ "value": list }))
}

async fn get_folder(
    State(s): State<Arc<Shared>>,
    Path((mb, fid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let _g = match enter(&s, &mb, &headers, "folders") {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let i = s.inner.lock().unwrap();
    let m = &i.mailboxes[&lower(&mb)];
    match find_folder(m, &fid) {
        Some(f) => json(StatusCode::OK, folder_json(m, f)),
        None => error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        ),
    }
}

async fn create_folder(
    State(s): State<Arc<Shared>>,
    Path(mb): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _g = match enter(&s, &mb, &headers, "createFolder") {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(name) = v["displayName"].as_str() else {
        return error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "displayName is required.",
        );
    };
    let mut i = s.inner.lock().unwrap();
    let m = i.mailboxes.get_mut(&lower(&mb)).unwrap();
    if m.folders.iter().any(|f| f.name.eq_ignore_ascii_case(name)) {
        return error(
            StatusCode::CONFLICT,
            "ErrorFolderExists",
            "A folder with the specified name already exists.",
        );
    }
    let f = Folder {
        id: format!("AQMk{}", token()),
        name: name.to_string(),
        well_known: None,
    };
    m.folders.push(f.clone());
    let out = folder_json(m, &f);
    json(StatusCode::CREATED, out)
}

fn item_json(id: &str, x: &Msg) -> serde_json::Value {
    serde_json::json!({
        "@odata.type": "#microsoft.graph.message",
        "id": id,
        "receivedDateTime": x.received,
        "internetMessageId": x.internet_id,
    })
}

async fn delta(
    State(s): State<Arc<Shared>>,
    Path((mb, fid)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let _g = match enter(&s, &mb, &headers, "delta") {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let page_size = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .and_then(|p| {
            p.split(',')
                .find_map(|x| x.trim().strip_prefix("odata.maxpagesize="))
                .and_then(|n| n.trim().parse::<usize>().ok())
        })
        .unwrap_or(10)
        .max(1);
    let q = query(&uri);
    let mb = lower(&mb);
    let base = s.base.lock().unwrap().clone();
    let mut i = s.inner.lock().unwrap();
    let gone = || {
        error(
            StatusCode::GONE,
            "SyncStateNotFound",
            "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
        )
    };
    let (folder, items, snapshot) = if let Some(t) = q.get("$skiptoken") {
        match i.skip_tokens.remove(t) {
            Some(p) if p.mailbox == mb => (p.folder, p.rest, p.snapshot),
            _ => return gone(),
        }
    } else {
        let m = &i.mailboxes[&mb];
        let Some(folder) = find_folder(m, &fid).map(|f| f.id.clone()) else {
            return error(
                StatusCode::NOT_FOUND,
                "ErrorItemNotFound",
                "The specified object was not found in the store.",
            );
        };
        let snapshot = i.seq;
        let items: Vec<serde_json::Value> = if let Some(t) = q.get("$deltatoken") {
            let since = match i.delta_tokens.get(t) {
                Some((tm, tf, seq)) if *tm == mb && *tf == folder => *seq,
                _ => return gone(),
            };
            let mut seen = std::collections::HashSet::new();
            m.changes
                .iter()
                .filter(|(seq, f, _)| *seq > since && *f == folder)
                .filter(|(_, _, id)| seen.insert(id.clone()))
                .map(|(_, _, id)| match m.messages.get(id) {
                    Some(x) if x.folder == folder => item_json(id, x),
                    _ => serde_json::json!({"id": id, "@removed": {"reason": "deleted"}}),
                })
                .collect()
        } else {
            let mut list: Vec<(&String, &Msg)> = m
                .messages
                .iter()
                .filter(|(_, x)| x.folder == folder)
                .collect();
            list.sort_by_key(|(_, x)| x.seq);
            list.into_iter().map(|(id, x)| item_json(id, x)).collect()
        };
        (folder, items, snapshot)
    };
    let mut items = items;
    let rest = if items.len() > page_size {
        items.split_off(page_size)
    } else {
        Vec::new()
    };
    let link = format!("{base}/users/{mb}/mailFolders/{fid}/messages/delta");
    let mut out = serde_json::json!({
        "@odata.context": format!("{base}/$metadata#Collection(message)"),
        "value": items,
    });
    if rest.is_empty() {
        let t = token();
        i.delta_tokens.insert(t.clone(), (mb, folder, snapshot));
        out["@odata.deltaLink"] = format!("{link}?$deltatoken={t}").into();
    } else {
        let t = token();
        i.skip_tokens.insert(
            t.clone(),
            Pending {
                mailbox: mb,
                folder,
                rest,
                snapshot,
            },
        );
        out["@odata.nextLink"] = format!("{link}?$skiptoken={t}").into();
    }
    json(StatusCode::OK, out)
}

async fn value(
    State(s): State<Arc<Shared>>,
    Path((mb, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let _g = match enter(&s, &mb, &headers, "value") {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let i = s.inner.lock().unwrap();
    match i.mailboxes[&lower(&mb)].messages.get(&id) {
        Some(x) => (
            StatusCode::OK,
            [("content-type", "text/plain")],
            x.mime.clone(),
        )
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        ),
    }
}

async fn move_message(
    State(s): State<Arc<Shared>>,
    Path((mb, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _g = match enter(&s, &mb, &headers, "move") {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(dest) = v["destinationId"].as_str() else {
        return error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "destinationId is required.",
        );
    };
    let mut i = s.inner.lock().unwrap();
    i.seq += 2;
    i.next_id += 1;
    let (seq, n) = (i.seq, i.next_id);
    let m = i.mailboxes.get_mut(&lower(&mb)).unwrap();
    let Some(to) = find_folder(m, dest).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        );
    };
    let Some(mut x) = m.messages.remove(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        );
    };
    let from_inbox = find_folder(m, "inbox").is_some_and(|f| f.id == x.folder);
    let new_id = format!("AAMk{n:08}{}", token());
    m.changes.push((seq - 1, x.folder.clone(), id.clone()));
    m.changes.push((seq, to.id.clone(), new_id.clone()));
    let waited = x.delivered.elapsed();
    x.folder = to.id.clone();
    x.seq = seq;
    let mut out = item_json(&new_id, &x);
    out["parentFolderId"] = to.id.clone().into();
    m.messages.insert(new_id, x);
    if from_inbox {
        i.latencies.push(waited);
    }
    json(StatusCode::CREATED, out)
}

async fn send_mail(
    State(s): State<Arc<Shared>>,
    Path(mb): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _g = match enter(&s, &mb, &headers, "sendMail") {
        Ok(g) => g,
        Err(r) => return *r,
    };
    if body.len() > MAX_REQUEST {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "The request exceeds the maximum size of 4 MB.",
        );
    }
    let text_plain = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("text/plain"));
    if !text_plain {
        return error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "A MIME message is sent with Content-Type: text/plain.",
        );
    }
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let Ok(mime) = base64::engine::general_purpose::STANDARD.decode(&compact) else {
        return error(
            StatusCode::BAD_REQUEST,
            "ErrorMimeContentInvalidBase64String",
            "Invalid base64 string for MIME content.",
        );
    };
    if header(&mime, "from").is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "ErrorMimeContentInvalid",
            "The MIME content is invalid.",
        );
    }
    let mut i = s.inner.lock().unwrap();
    i.sent.push((lower(&mb), mime.clone()));
    if let Some(to) = i.deliver_sent.get(&lower(&mb)).cloned() {
        deliver_into(&mut i, &to, mime);
    }
    StatusCode::ACCEPTED.into_response()
}
