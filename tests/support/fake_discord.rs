//! A local fake Discord for integration tests: the REST API (the part a
//! bot uses) on one loopback port and the gateway WebSocket on another, so
//! serenity 0.12 runs against it unchanged.
//!
//! Include it from a test file with `#[path]` (as `support/mailstack.rs`
//! is included; no `tests/support/mod.rs` is needed):
//!
//! ```ignore
//! #[path = "support/fake_discord.rs"]
//! mod fake_discord;
//! use fake_discord::{FakeConfig, FakeDiscord, MessageSpec};
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn bot_answers() {
//!     let fake = FakeDiscord::start(FakeConfig::default()).await;
//!     // REST: every `https://discord.com` route goes to the fake. The proxy
//!     // is only honoured together with `ratelimiter_disabled(true)`.
//!     let http = serenity::http::HttpBuilder::new("Bot fake-token")
//!         .proxy(fake.base_url())
//!         .ratelimiter_disabled(true)
//!         .build();
//!     // Gateway: `ClientBuilder::new_with_http(http, intents)` asks
//!     // `GET /api/v10/gateway` and connects to the fake's WebSocket; use
//!     // `client.start()` (not `start_autosharded`).
//!     // … start the bot, then:
//!     fake.wait_ready(Duration::from_secs(10)).await;
//!     fake.message_create(MessageSpec::new(CHANNEL, USER, "alice", "help")).await;
//!     let posts = fake.wait_posts(1, Duration::from_secs(10)).await;
//! }
//! ```
//!
//! What the fake does:
//! - REST (`base_url()`, the value for `HttpBuilder::proxy`): records what
//!   the bot did — [`FakeDiscord::posts`] (messages sent),
//!   [`FakeDiscord::threads`] (threads started; a thread started from
//!   message M has id M, as on Discord), [`FakeDiscord::interaction_responses`]
//!   (callbacks, follow-ups, edits of the original response),
//!   [`FakeDiscord::commands`] (the application commands registered now),
//!   [`FakeDiscord::dm_channels`] (DM channels opened),
//!   [`FakeDiscord::requests`] (every request) and
//!   [`FakeDiscord::unknown_routes`] (what it could not answer: 404
//!   `{"message":"Unknown","code":0}`). It also answers `GET /gateway`,
//!   `/gateway/bot`, `/users/@me`, `/users/{id}`, `/oauth2/applications/@me`,
//!   `GET/PATCH /channels/{id}`, `GET/PATCH/DELETE` of messages, reactions,
//!   typing, thread members and `GET /guilds/{g}/members/{u}` with
//!   plausible objects that serenity deserialises.
//!   [`FakeDiscord::fail_next_posts`] makes message posts fail (500, or 429
//!   with Discord's rate-limit body and headers).
//! - Gateway: Hello (heartbeat every [`HEARTBEAT_INTERVAL_MS`]), READY on
//!   Identify, RESUMED (after replaying what the client missed) on Resume,
//!   heartbeat acks; uncompressed text frames (serenity asks for
//!   `compress: true` but reads text frames too). [`FakeDiscord::dispatch`],
//!   [`FakeDiscord::message_create`] and [`FakeDiscord::interaction_create`]
//!   send events; [`FakeDiscord::drop_connection`] cuts the TCP connection
//!   without a close frame so the client reconnects and resumes. Events
//!   dispatched while no connection is ready are kept and delivered on the
//!   next READY or RESUMED, so a test cannot lose one by being early.
//!
//! Not played: READY lists the guild as unavailable and no GUILD_CREATE
//! follows, so serenity's cache knows no guild, channel or role (dispatch a
//! GUILD_CREATE yourself if the code under test reads the cache); intents
//! are not enforced (message content is always sent); nothing is rate
//! limited unless [`FakeDiscord::fail_next_posts`] says so.
//!
//! Ids are strings on the wire (as on Discord). New ids come from a counter
//! starting above 900_000_000_000_000_000, unique per fake. Everything is
//! kept in memory; dropping the [`FakeDiscord`] stops both servers and
//! every connection. Unexpected input is logged to stderr and ignored; the
//! server tasks do not panic.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The heartbeat interval the fake gateway announces in Hello, in ms.
/// Short, so that tests exercise heartbeats and their acks.
pub const HEARTBEAT_INTERVAL_MS: u64 = 1_000;

/// The first id the fake hands out is above this.
const ID_BASE: u64 = 900_000_000_000_000_000;

/// The identities the fake Discord plays: the bot user, its application
/// and the one guild it is in.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// The bot's user id (`GET /users/@me`, READY's `user`, message authors).
    pub bot_user_id: u64,
    /// The application id (READY's `application`, interactions, commands).
    pub application_id: u64,
    /// The guild the bot is in (READY's `guilds`, guild messages).
    pub guild_id: u64,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            bot_user_id: 100_000_000_000_000_001,
            application_id: 100_000_000_000_000_002,
            guild_id: 100_000_000_000_000_003,
        }
    }
}

/// A message the bot sent (`POST /channels/{id}/messages`).
#[derive(Clone, Debug)]
pub struct Posted {
    /// The channel (or thread, or DM channel) it went to.
    pub channel_id: u64,
    /// The id the fake gave the new message.
    pub message_id: u64,
    /// What the bot sent: `content`, `embeds`, `components`, … (for a
    /// multipart request, its `payload_json`).
    pub body: Value,
    /// The file names of attachments uploaded with it (multipart only).
    pub files: Vec<String>,
}

/// A thread the bot started.
#[derive(Clone, Debug)]
pub struct ThreadMade {
    /// The channel the thread was started in.
    pub parent_id: u64,
    /// The message it was started from
    /// (`POST /channels/{c}/messages/{m}/threads`); `None` for
    /// `POST /channels/{c}/threads`.
    pub message_id: Option<u64>,
    /// The new thread's id: equal to the message id when started from one.
    pub thread_id: u64,
    /// The name the bot gave it.
    pub name: String,
}

/// Which kind of interaction answer a [`Responded`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseKind {
    /// `POST /interactions/{id}/{token}/callback` (the initial response;
    /// `body.type` 4 is a message, 5 a deferred one, `body.data.flags` 64
    /// makes it ephemeral).
    Callback,
    /// `POST /webhooks/{app}/{token}` (a follow-up message).
    Followup,
    /// `PATCH /webhooks/{app}/{token}/messages/@original`.
    EditOriginal,
    /// `PATCH /webhooks/{app}/{token}/messages/{id}` (editing a follow-up).
    EditFollowup,
}

/// An answer the bot gave to an interaction.
#[derive(Clone, Debug)]
pub struct Responded {
    /// The interaction answered (found through its token for follow-ups;
    /// 0 if the token was not one the fake issued).
    pub interaction_id: u64,
    /// The request body (for a multipart request, its `payload_json`).
    pub body: Value,
    /// Which route it came through.
    pub kind: ResponseKind,
}

/// One REST request the fake received, whatever the route.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path as sent, with its `/api/v10` prefix, without the query.
    pub path: String,
    /// The query string, if any (without `?`).
    pub query: Option<String>,
    /// The JSON body (multipart: `payload_json`); `Null` when empty, a
    /// string when it was not JSON.
    pub body: Value,
    /// The HTTP status the fake answered with.
    pub status: u16,
}

/// A guild message a user writes, for [`FakeDiscord::message_create`].
#[derive(Clone, Debug, Default)]
pub struct MessageSpec {
    /// The channel (or thread) it is written in.
    pub channel_id: u64,
    /// The author's user id.
    pub author_id: u64,
    /// The author's username (also their `global_name`).
    pub author_name: String,
    /// The author's role ids in the guild (`member.roles`).
    pub roles: Vec<u64>,
    /// The message text.
    pub content: String,
}

impl MessageSpec {
    /// A message without roles.
    pub fn new(
        channel_id: u64,
        author_id: u64,
        author_name: impl Into<String>,
        content: impl Into<String>,
    ) -> Self {
        MessageSpec {
            channel_id,
            author_id,
            author_name: author_name.into(),
            roles: Vec::new(),
            content: content.into(),
        }
    }

    /// The same message, from a member with these roles.
    pub fn roles(mut self, roles: impl IntoIterator<Item = u64>) -> Self {
        self.roles = roles.into_iter().collect();
        self
    }
}

/// A slash command a guild member invokes, for
/// [`FakeDiscord::interaction_create`].
#[derive(Clone, Debug, Default)]
pub struct InteractionSpec {
    /// The channel it is invoked in.
    pub channel_id: u64,
    /// The invoking user's id.
    pub user_id: u64,
    /// The invoking user's username.
    pub user_name: String,
    /// Their role ids in the guild.
    pub roles: Vec<u64>,
    /// The command name (without `/`).
    pub command: String,
    /// String options (type 3), name and value, in order.
    pub options: Vec<(String, String)>,
}

impl InteractionSpec {
    /// A command without roles or options.
    pub fn new(
        channel_id: u64,
        user_id: u64,
        user_name: impl Into<String>,
        command: impl Into<String>,
    ) -> Self {
        InteractionSpec {
            channel_id,
            user_id,
            user_name: user_name.into(),
            roles: Vec::new(),
            command: command.into(),
            options: Vec::new(),
        }
    }

    /// The same command with one more string option.
    pub fn option(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((name.into(), value.into()));
        self
    }

    /// The same command, from a member with these roles.
    pub fn roles(mut self, roles: impl IntoIterator<Item = u64>) -> Self {
        self.roles = roles.into_iter().collect();
        self
    }
}

/// The running fake: a REST server and a gateway server on 127.0.0.1,
/// random ports. Dropping it stops both and every connection.
pub struct FakeDiscord {
    shared: Arc<Mutex<State>>,
    http_port: u16,
    gateway_port: u16,
    tasks: Vec<JoinHandle<()>>,
}

// ---------------------------------------------------------------- state --

#[derive(Clone, Debug)]
enum ChanKind {
    Text,
    Thread { parent: u64 },
    Dm { user: u64 },
}

#[derive(Clone, Debug)]
struct Chan {
    kind: ChanKind,
    name: String,
    archived: bool,
    locked: bool,
}

#[derive(Clone, Debug)]
struct KnownUser {
    name: String,
    roles: Vec<u64>,
}

struct Conn {
    id: u64,
    tx: mpsc::UnboundedSender<WsMessage>,
    abort: Option<AbortHandle>,
}

struct Logged {
    seq: u64,
    event: String,
    data: Value,
}

struct Session {
    id: String,
    seq: u64,
    log: Vec<Logged>,
    /// The highest seq handed to a ready connection.
    delivered: u64,
}

struct State {
    cfg: FakeConfig,
    gateway_url: String,
    next_id: u64,
    // What the bot did.
    posts: Vec<Posted>,
    threads: Vec<ThreadMade>,
    responses: Vec<Responded>,
    /// (guild id or None for global, command JSON), in registration order.
    commands: Vec<(Option<u64>, Value)>,
    dm_channels: Vec<(u64, u64)>,
    unknown: Vec<String>,
    requests: Vec<SeenRequest>,
    fail_posts: usize,
    fail_status: u16,
    // The world the bot sees.
    channels: HashMap<u64, Chan>,
    messages: HashMap<u64, Value>,
    users: HashMap<u64, KnownUser>,
    /// Interaction token -> (interaction id, channel id).
    tokens: HashMap<String, (u64, u64)>,
    /// Interaction token -> the message of its response, once there is one.
    originals: HashMap<String, Value>,
    command_ids: HashMap<String, u64>,
    // The gateway.
    conns: Vec<Conn>,
    current: Option<u64>,
    session: Option<Session>,
    pending: Vec<(String, Value)>,
    identifies: usize,
    resumes: usize,
    heartbeats: usize,
    next_conn: u64,
    next_session: u64,
}

impl State {
    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        ID_BASE + self.next_id
    }

    fn bot_user(&self) -> Value {
        json!({
            "id": self.cfg.bot_user_id.to_string(),
            "username": "fake-bot",
            "global_name": null,
            "avatar": null,
            "bot": true,
            "verified": true,
            "mfa_enabled": false,
            "flags": 0,
        })
    }

    fn user_json(&self, id: u64) -> Value {
        if id == self.cfg.bot_user_id {
            return self.bot_user();
        }
        let name = self
            .users
            .get(&id)
            .map(|u| u.name.clone())
            .unwrap_or_else(|| format!("user-{id}"));
        json!({
            "id": id.to_string(),
            "username": name,
            "global_name": name,
            "avatar": null,
            "bot": false,
        })
    }

    fn member_json(&self, user: u64, roles: &[u64]) -> Value {
        json!({
            "user": self.user_json(user),
            "roles": roles.iter().map(u64::to_string).collect::<Vec<_>>(),
            "joined_at": now(),
            "nick": null,
            "deaf": false,
            "mute": false,
            "flags": 0,
            "pending": false,
        })
    }

    fn channel_json(&self, id: u64) -> Value {
        let chan = self.channels.get(&id).cloned().unwrap_or(Chan {
            kind: ChanKind::Text,
            name: format!("channel-{id}"),
            archived: false,
            locked: false,
        });
        match chan.kind {
            ChanKind::Dm { user } => json!({
                "id": id.to_string(),
                "type": 1,
                "last_message_id": null,
                "recipients": [self.user_json(user)],
            }),
            ChanKind::Text => json!({
                "id": id.to_string(),
                "type": 0,
                "guild_id": self.cfg.guild_id.to_string(),
                "name": chan.name,
                "position": 0,
                "permission_overwrites": [],
                "nsfw": false,
                "topic": null,
                "last_message_id": null,
                "parent_id": null,
                "rate_limit_per_user": 0,
            }),
            ChanKind::Thread { parent } => json!({
                "id": id.to_string(),
                "type": 11,
                "guild_id": self.cfg.guild_id.to_string(),
                "parent_id": parent.to_string(),
                "owner_id": self.cfg.bot_user_id.to_string(),
                "name": chan.name,
                "last_message_id": null,
                "rate_limit_per_user": 0,
                "message_count": 0,
                "member_count": 1,
                "total_message_sent": 0,
                "flags": 0,
                "thread_metadata": {
                    "archived": chan.archived,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": now(),
                    "locked": chan.locked,
                    "create_timestamp": now(),
                },
            }),
        }
    }

    /// A message the bot sent, as Discord's REST answers it.
    fn bot_message(&self, id: u64, channel: u64, body: &Value) -> Value {
        let mut m = json!({
            "id": id.to_string(),
            "channel_id": channel.to_string(),
            "author": self.bot_user(),
            "content": "",
            "timestamp": now(),
            "edited_timestamp": null,
            "tts": false,
            "mention_everyone": false,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": false,
            "type": 0,
            "flags": 0,
        });
        merge_message_fields(&mut m, body);
        m
    }

    fn conn_tx(&self, conn: u64) -> Option<mpsc::UnboundedSender<WsMessage>> {
        self.conns
            .iter()
            .find(|c| c.id == conn)
            .map(|c| c.tx.clone())
    }

    /// Logs the event with the next seq of the session and sends it to the
    /// ready connection, if there is one; without a session it waits for
    /// the next READY.
    fn dispatch(&mut self, event: &str, data: Value) {
        let Some(session) = self.session.as_mut() else {
            self.pending.push((event.to_string(), data));
            return;
        };
        session.seq += 1;
        let seq = session.seq;
        let frame = dispatch_frame(event, seq, &data);
        session.log.push(Logged {
            seq,
            event: event.to_string(),
            data,
        });
        let sent = match self.current {
            Some(cur) => self
                .conns
                .iter()
                .find(|c| c.id == cur)
                .map(|c| c.tx.send(WsMessage::Text(frame)).is_ok())
                .unwrap_or(false),
            None => false,
        };
        if sent {
            if let Some(s) = self.session.as_mut() {
                s.delivered = seq;
            }
        }
    }

    fn identify(&mut self, conn: u64, shard: Value) {
        let Some(tx) = self.conn_tx(conn) else {
            return;
        };
        self.identifies += 1;
        // What an earlier session never delivered goes to the new one.
        let mut carried: Vec<(String, Value)> = Vec::new();
        if let Some(old) = self.session.take() {
            carried.extend(
                old.log
                    .into_iter()
                    .filter(|l| l.seq > old.delivered && l.event != "READY")
                    .map(|l| (l.event, l.data)),
            );
        }
        carried.append(&mut self.pending);
        self.next_session += 1;
        let session_id = format!("fake-session-{}", self.next_session);
        let shard = if shard.is_array() {
            shard
        } else {
            json!([0, 1])
        };
        let ready = json!({
            "v": 10,
            "user": self.bot_user(),
            "guilds": [{ "id": self.cfg.guild_id.to_string(), "unavailable": true }],
            "session_id": session_id,
            "resume_gateway_url": self.gateway_url,
            "shard": shard,
            "application": { "id": self.cfg.application_id.to_string(), "flags": 0 },
            "private_channels": [],
        });
        let frame = dispatch_frame("READY", 1, &ready);
        self.session = Some(Session {
            id: session_id,
            seq: 1,
            log: vec![Logged {
                seq: 1,
                event: "READY".into(),
                data: ready,
            }],
            delivered: 0,
        });
        if tx.send(WsMessage::Text(frame)).is_ok() {
            if let Some(s) = self.session.as_mut() {
                s.delivered = 1;
            }
        }
        self.current = Some(conn);
        for (event, data) in carried {
            self.dispatch(&event, data);
        }
    }

    fn resume(&mut self, conn: u64, session_id: &str, client_seq: u64) {
        let Some(tx) = self.conn_tx(conn) else {
            return;
        };
        let Some(session) = self.session.as_mut().filter(|s| s.id == session_id) else {
            eprintln!("fake_discord: resume of unknown session {session_id:?}: invalid session");
            let _ = tx.send(WsMessage::Text(json!({"op": 9, "d": false}).to_string()));
            return;
        };
        let mut ok = true;
        for l in session.log.iter().filter(|l| l.seq > client_seq) {
            ok &= tx
                .send(WsMessage::Text(dispatch_frame(&l.event, l.seq, &l.data)))
                .is_ok();
        }
        ok &= tx
            .send(WsMessage::Text(dispatch_frame(
                "RESUMED",
                session.seq,
                &json!({"_trace": ["fake-discord"]}),
            )))
            .is_ok();
        if ok {
            session.delivered = session.seq;
        }
        self.resumes += 1;
        self.current = Some(conn);
        let pending: Vec<_> = self.pending.drain(..).collect();
        for (event, data) in pending {
            self.dispatch(&event, data);
        }
    }
}

fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn now() -> String {
    serenity::model::Timestamp::now().to_string()
}

fn dispatch_frame(event: &str, seq: u64, data: &Value) -> String {
    json!({"op": 0, "t": event, "s": seq, "d": data}).to_string()
}

/// Copies what a bot may set on a message into the message object, in
/// shapes serenity reads back.
fn merge_message_fields(m: &mut Value, body: &Value) {
    let Some(obj) = m.as_object_mut() else {
        return;
    };
    if let Some(c) = body.get("content").and_then(Value::as_str) {
        obj.insert("content".into(), json!(c));
    }
    if let Some(e) = body.get("embeds").filter(|e| e.is_array()) {
        obj.insert("embeds".into(), e.clone());
    }
    if let Some(t) = body.get("tts").and_then(Value::as_bool) {
        obj.insert("tts".into(), json!(t));
    }
    if let Some(f) = body.get("flags").and_then(Value::as_u64) {
        obj.insert("flags".into(), json!(f));
    }
}

fn parse_id(s: &str) -> Option<u64> {
    s.parse().ok().filter(|&n| n != 0)
}

fn value_id(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::String(s) => parse_id(s),
        Value::Number(n) => n.as_u64().filter(|&n| n != 0),
        _ => None,
    }
}

// ------------------------------------------------------------ public API --

impl FakeDiscord {
    /// Starts the REST and gateway servers on 127.0.0.1 (random ports).
    pub async fn start(cfg: FakeConfig) -> FakeDiscord {
        let http_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake_discord: bind the REST port");
        let gw_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake_discord: bind the gateway port");
        let http_port = http_listener.local_addr().expect("local addr").port();
        let gateway_port = gw_listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Mutex::new(State {
            cfg,
            gateway_url: format!("ws://127.0.0.1:{gateway_port}"),
            next_id: 0,
            posts: Vec::new(),
            threads: Vec::new(),
            responses: Vec::new(),
            commands: Vec::new(),
            dm_channels: Vec::new(),
            unknown: Vec::new(),
            requests: Vec::new(),
            fail_posts: 0,
            fail_status: 500,
            channels: HashMap::new(),
            messages: HashMap::new(),
            users: HashMap::new(),
            tokens: HashMap::new(),
            originals: HashMap::new(),
            command_ids: HashMap::new(),
            conns: Vec::new(),
            current: None,
            session: None,
            pending: Vec::new(),
            identifies: 0,
            resumes: 0,
            heartbeats: 0,
            next_conn: 0,
            next_session: 0,
        }));

        let for_http = Arc::clone(&shared);
        let router = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let shared = Arc::clone(&for_http);
                async move { handle_http(&shared, method, uri, headers, body) }
            },
        );
        let http_task = tokio::spawn(async move {
            if let Err(e) = axum::serve(http_listener, router).await {
                eprintln!("fake_discord: REST server stopped: {e}");
            }
        });
        let gw_task = tokio::spawn(accept_gateway(gw_listener, Arc::clone(&shared)));

        FakeDiscord {
            shared,
            http_port,
            gateway_port,
            tasks: vec![http_task, gw_task],
        }
    }

    /// `http://127.0.0.1:PORT`: the value for `HttpBuilder::proxy`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `ws://127.0.0.1:PORT`: what `GET /gateway` answers.
    pub fn gateway_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.gateway_port)
    }

    /// The configuration the fake runs with.
    pub fn config(&self) -> FakeConfig {
        lock(&self.shared).cfg.clone()
    }

    /// A serenity `Http` pointed at the fake (proxy, rate limiter off, the
    /// application id set, as the client sets it from READY).
    pub fn http(&self) -> serenity::http::Http {
        let app = lock(&self.shared).cfg.application_id;
        serenity::http::HttpBuilder::new("Bot fake-discord-token")
            .proxy(self.base_url())
            .ratelimiter_disabled(true)
            .application_id(serenity::model::id::ApplicationId::new(app))
            .build()
    }

    /// Every message the bot posted (`POST /channels/{id}/messages` that
    /// succeeded), in order.
    pub fn posts(&self) -> Vec<Posted> {
        lock(&self.shared).posts.clone()
    }

    /// Waits until at least `n` messages were posted and returns them all;
    /// panics after `timeout` with what there is.
    pub async fn wait_posts(&self, n: usize, timeout: Duration) -> Vec<Posted> {
        self.wait_for(timeout, |s| (s.posts.len() >= n).then(|| s.posts.clone()))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "fake_discord: wanted {n} posts within {timeout:?}, got {:#?}\nunknown routes: {:?}",
                    self.posts(),
                    self.unknown_routes()
                )
            })
    }

    /// Every thread the bot started (from a message or not), in order.
    pub fn threads(&self) -> Vec<ThreadMade> {
        lock(&self.shared).threads.clone()
    }

    /// Every answer to an interaction: callbacks, follow-ups and edits, in
    /// order.
    pub fn interaction_responses(&self) -> Vec<Responded> {
        lock(&self.shared).responses.clone()
    }

    /// Waits until at least `n` interaction answers arrived and returns
    /// them all; panics after `timeout` with what there is.
    pub async fn wait_interaction_responses(&self, n: usize, timeout: Duration) -> Vec<Responded> {
        self.wait_for(timeout, |s| {
            (s.responses.len() >= n).then(|| s.responses.clone())
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "fake_discord: wanted {n} interaction responses within {timeout:?}, got {:#?}\nunknown routes: {:?}",
                self.interaction_responses(),
                self.unknown_routes()
            )
        })
    }

    /// The application commands registered now, global ones first, as the
    /// fake answered them (the bot's JSON plus `id`, `application_id`,
    /// `guild_id` for guild commands, `version`). A bulk overwrite (`PUT`)
    /// replaces its scope; `POST` adds or replaces one by name; `DELETE`
    /// removes one.
    pub fn commands(&self) -> Vec<Value> {
        let s = lock(&self.shared);
        let mut global: Vec<Value> = Vec::new();
        let mut guild: Vec<Value> = Vec::new();
        for (g, c) in &s.commands {
            if g.is_some() {
                guild.push(c.clone());
            } else {
                global.push(c.clone());
            }
        }
        global.extend(guild);
        global
    }

    /// Every `POST /users/@me/channels`, in order: (recipient user id, DM
    /// channel id). Asking again for the same user gives the same channel.
    pub fn dm_channels(&self) -> Vec<(u64, u64)> {
        lock(&self.shared).dm_channels.clone()
    }

    /// Makes the next `n` message posts fail with `status`: 429 answers
    /// Discord's body (`{"message":"You are being rate limited.",
    /// "retry_after":0.05,"global":false,"code":0}`) and rate-limit headers;
    /// any other status `{"message":…,"code":0}`. Failed posts are not in
    /// [`Self::posts`] (they are in [`Self::requests`]).
    pub fn fail_next_posts(&self, n: usize, status: u16) {
        let mut s = lock(&self.shared);
        s.fail_posts = n;
        s.fail_status = status;
    }

    /// The requests the fake had no answer for (404), as `METHOD /path`
    /// (e.g. `GET /api/v10/guilds/1/roles`), in order.
    pub fn unknown_routes(&self) -> Vec<String> {
        lock(&self.shared).unknown.clone()
    }

    /// Every REST request the fake received, in order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.shared).requests.clone()
    }

    /// Waits until a connection got READY (after Identify) or RESUMED
    /// (after Resume) and is the current one; panics after `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) {
        let got = self
            .wait_for(timeout, |s| s.current.map(|_| ()))
            .await
            .is_some();
        if !got {
            let s = lock(&self.shared);
            panic!(
                "fake_discord: no READY/RESUMED within {timeout:?} (connections {}, identifies {}, resumes {}, REST requests {:?}, unknown routes {:?})",
                s.conns.len(),
                s.identifies,
                s.resumes,
                s.requests.iter().map(|r| format!("{} {}", r.method, r.path)).collect::<Vec<_>>(),
                s.unknown
            );
        }
    }

    /// How many Identify (op 2) were answered with READY.
    pub fn identifies(&self) -> usize {
        lock(&self.shared).identifies
    }

    /// How many Resume (op 6) were answered with RESUMED.
    pub fn resumes(&self) -> usize {
        lock(&self.shared).resumes
    }

    /// How many heartbeats (op 1) were acknowledged.
    pub fn heartbeats(&self) -> usize {
        lock(&self.shared).heartbeats
    }

    /// Sends a dispatch (op 0) with the next seq to the current
    /// connection; it is kept for replay when the client resumes, and held
    /// back until READY/RESUMED when no connection is ready.
    pub async fn dispatch(&self, event: &str, data: Value) {
        lock(&self.shared).dispatch(event, data);
    }

    /// The MESSAGE_CREATE payload [`Self::message_create`] would send, with
    /// a new id: for tests that change a field before [`Self::dispatch`].
    pub fn message_json(&self, m: &MessageSpec) -> Value {
        let mut s = lock(&self.shared);
        build_message(&mut s, m)
    }

    /// Dispatches MESSAGE_CREATE for a guild message from a user (author,
    /// member with roles, content) and returns its id. The fake remembers
    /// it (`GET /channels/{c}/messages/{id}`, threads from it) and the user.
    pub async fn message_create(&self, m: MessageSpec) -> u64 {
        let mut s = lock(&self.shared);
        let msg = build_message(&mut s, &m);
        let id = value_id(msg.get("id")).unwrap_or_default();
        s.dispatch("MESSAGE_CREATE", msg);
        id
    }

    /// Dispatches MESSAGE_CREATE for a direct message from a user to the
    /// bot (no guild, no member); `m.channel_id` 0 means the user's DM
    /// channel (made if needed). Returns the message id.
    pub async fn dm_message_create(&self, m: MessageSpec) -> u64 {
        let mut s = lock(&self.shared);
        let channel = if m.channel_id != 0 {
            m.channel_id
        } else {
            dm_channel_for(&mut s, m.author_id)
        };
        s.channels.entry(channel).or_insert(Chan {
            kind: ChanKind::Dm { user: m.author_id },
            name: String::new(),
            archived: false,
            locked: false,
        });
        let mut msg = build_message(
            &mut s,
            &MessageSpec {
                channel_id: channel,
                ..m
            },
        );
        if let Some(o) = msg.as_object_mut() {
            o.remove("guild_id");
            o.remove("member");
        }
        let id = value_id(msg.get("id")).unwrap_or_default();
        s.messages.insert(id, msg.clone());
        s.dispatch("MESSAGE_CREATE", msg);
        id
    }

    /// The INTERACTION_CREATE payload [`Self::interaction_create`] would
    /// send, with a new id and token.
    pub fn interaction_json(&self, i: &InteractionSpec) -> Value {
        let mut s = lock(&self.shared);
        build_interaction(&mut s, i)
    }

    /// Dispatches INTERACTION_CREATE for a slash command (type 2, string
    /// options) invoked by a guild member and returns the interaction id.
    /// Its token is known to the fake, so follow-ups map back to it.
    pub async fn interaction_create(&self, i: InteractionSpec) -> u64 {
        let mut s = lock(&self.shared);
        let v = build_interaction(&mut s, &i);
        let id = value_id(v.get("id")).unwrap_or_default();
        s.dispatch("INTERACTION_CREATE", v);
        id
    }

    /// Closes the gateway connection abruptly (TCP closed, no close frame),
    /// so the client reconnects and resumes. [`Self::wait_ready`] then waits
    /// for the new connection.
    pub async fn drop_connection(&self) {
        {
            let mut s = lock(&self.shared);
            s.current = None;
            for c in s.conns.drain(..) {
                if let Some(a) = c.abort {
                    a.abort();
                }
            }
        }
        tokio::task::yield_now().await;
    }

    /// Declares what `GET /channels/{id}` answers for `channel_id`: a text
    /// channel (`None`) or a public thread in `thread_parent`.
    pub fn set_channel_kind(&self, channel_id: u64, thread_parent: Option<u64>) {
        let mut s = lock(&self.shared);
        let kind = match thread_parent {
            Some(parent) => ChanKind::Thread { parent },
            None => ChanKind::Text,
        };
        let name = s
            .channels
            .get(&channel_id)
            .map(|c| c.name.clone())
            .unwrap_or_else(|| format!("channel-{channel_id}"));
        s.channels.insert(
            channel_id,
            Chan {
                kind,
                name,
                archived: false,
                locked: false,
            },
        );
    }

    async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&State) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(v) = check(&lock(&self.shared)) {
                return Some(v);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let mut s = lock(&self.shared);
        s.current = None;
        for c in s.conns.drain(..) {
            if let Some(a) = c.abort {
                a.abort();
            }
        }
    }
}

fn build_message(s: &mut State, m: &MessageSpec) -> Value {
    let id = s.new_id();
    s.users.insert(
        m.author_id,
        KnownUser {
            name: m.author_name.clone(),
            roles: m.roles.clone(),
        },
    );
    let mut member = s.member_json(m.author_id, &m.roles);
    if let Some(o) = member.as_object_mut() {
        o.remove("user");
    }
    let msg = json!({
        "id": id.to_string(),
        "channel_id": m.channel_id.to_string(),
        "guild_id": s.cfg.guild_id.to_string(),
        "author": {
            "id": m.author_id.to_string(),
            "username": m.author_name,
            "global_name": m.author_name,
            "avatar": null,
            "bot": false,
        },
        "member": member,
        "content": m.content,
        "timestamp": now(),
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "components": [],
        "pinned": false,
        "type": 0,
        "flags": 0,
        "nonce": id.to_string(),
    });
    s.messages.insert(id, msg.clone());
    msg
}

fn build_interaction(s: &mut State, i: &InteractionSpec) -> Value {
    let id = s.new_id();
    let token = format!("fake-interaction-token-{id}");
    s.tokens.insert(token.clone(), (id, i.channel_id));
    s.users.insert(
        i.user_id,
        KnownUser {
            name: i.user_name.clone(),
            roles: i.roles.clone(),
        },
    );
    let command_id = match s.command_ids.get(&i.command) {
        Some(&c) => c,
        None => {
            let c = s.new_id();
            s.command_ids.insert(i.command.clone(), c);
            c
        }
    };
    let options: Vec<Value> = i
        .options
        .iter()
        .map(|(name, value)| json!({"name": name, "type": 3, "value": value}))
        .collect();
    let mut member = s.member_json(i.user_id, &i.roles);
    if let Some(o) = member.as_object_mut() {
        o.insert("permissions".into(), json!("0"));
    }
    json!({
        "id": id.to_string(),
        "application_id": s.cfg.application_id.to_string(),
        "type": 2,
        "data": {
            "id": command_id.to_string(),
            "name": i.command,
            "type": 1,
            "options": options,
            "guild_id": s.cfg.guild_id.to_string(),
        },
        "guild_id": s.cfg.guild_id.to_string(),
        "channel_id": i.channel_id.to_string(),
        "channel": { "id": i.channel_id.to_string(), "type": 0 },
        "member": member,
        "token": token,
        "version": 1,
        "app_permissions": "0",
        "locale": "en-US",
        "guild_locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": { "0": s.cfg.guild_id.to_string() },
        "context": 0,
        "attachment_size_limit": 26_214_400,
    })
}

fn dm_channel_for(s: &mut State, user: u64) -> u64 {
    let existing = s
        .channels
        .iter()
        .find(|(_, c)| matches!(c.kind, ChanKind::Dm { user: u } if u == user))
        .map(|(&id, _)| id);
    match existing {
        Some(id) => id,
        None => {
            let id = s.new_id();
            s.channels.insert(
                id,
                Chan {
                    kind: ChanKind::Dm { user },
                    name: String::new(),
                    archived: false,
                    locked: false,
                },
            );
            id
        }
    }
}

// ------------------------------------------------------------------ REST --

struct Reply {
    status: u16,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(body: Value) -> Reply {
        Reply {
            status: 200,
            body: Some(body),
            headers: Vec::new(),
        }
    }
    fn no_content() -> Reply {
        Reply {
            status: 204,
            body: None,
            headers: Vec::new(),
        }
    }
    fn error(status: u16, message: &str, code: u64) -> Reply {
        Reply {
            status,
            body: Some(json!({"message": message, "code": code})),
            headers: Vec::new(),
        }
    }
}

/// The JSON body and attachment file names of a request: plain JSON, or
/// the `payload_json` part of a multipart form.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> (Value, Vec<String>) {
    let ctype = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(boundary) = ctype
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))
    {
        let boundary = boundary.trim_matches('"');
        let text = String::from_utf8_lossy(body);
        let mut payload = Value::Null;
        let mut files = Vec::new();
        for part in text.split(&format!("--{boundary}")) {
            let Some((head, content)) = part.split_once("\r\n\r\n") else {
                continue;
            };
            let content = content.strip_suffix("\r\n").unwrap_or(content);
            if let Some(f) = head.split("filename=\"").nth(1) {
                files.push(f.split('"').next().unwrap_or("").to_string());
            } else if head.contains("name=\"payload_json\"") {
                payload = serde_json::from_str(content)
                    .unwrap_or_else(|_| Value::String(content.to_string()));
            }
        }
        return (payload, files);
    }
    if body.is_empty() {
        return (Value::Null, Vec::new());
    }
    let v = serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    (v, Vec::new())
}

fn handle_http(
    shared: &Mutex<State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (json_body, files) = parse_body(&headers, &body);
    let path = uri.path().to_string();
    let mut s = lock(shared);
    let reply = route(&mut s, method.as_str(), &path, json_body.clone(), files);
    s.requests.push(SeenRequest {
        method: method.to_string(),
        path,
        query: uri.query().map(str::to_string),
        body: json_body,
        status: reply.status,
    });
    drop(s);

    let mut builder = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    for (k, v) in &reply.headers {
        builder = builder.header(*k, v.as_str());
    }
    let built = match reply.body {
        Some(b) => builder
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => builder.body(Body::empty()),
    };
    built.unwrap_or_else(|e| {
        eprintln!("fake_discord: building a response failed: {e}");
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

fn route(s: &mut State, method: &str, path: &str, body: Value, files: Vec<String>) -> Reply {
    let mut segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segs.first() == Some(&"api") {
        segs.remove(0);
        if segs
            .first()
            .is_some_and(|v| v.starts_with('v') && v[1..].chars().all(|c| c.is_ascii_digit()))
        {
            segs.remove(0);
        }
    }
    let reply = match (method, segs.as_slice()) {
        ("GET", ["gateway"]) => Some(Reply::json(json!({"url": s.gateway_url}))),
        ("GET", ["gateway", "bot"]) => Some(Reply::json(json!({
            "url": s.gateway_url,
            "shards": 1,
            "session_start_limit": {
                "total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1
            },
        }))),
        ("GET", ["users", "@me"]) => Some(Reply::json(s.bot_user())),
        ("GET", ["users", id]) => parse_id(id).map(|id| Reply::json(s.user_json(id))),
        ("POST", ["users", "@me", "channels"]) => value_id(body.get("recipient_id")).map(|user| {
            let channel = dm_channel_for(s, user);
            s.dm_channels.push((user, channel));
            Reply::json(s.channel_json(channel))
        }),
        ("GET", ["oauth2", "applications", "@me"]) => Some(Reply::json(json!({
            "id": s.cfg.application_id.to_string(),
            "name": "fake-app",
            "icon": null,
            "description": "",
            "bot_public": false,
            "bot_require_code_grant": false,
            "owner": s.user_json(1),
            "verify_key": "00",
            "team": null,
            "flags": 0,
        }))),
        ("GET", ["channels", c]) => parse_id(c).map(|c| Reply::json(s.channel_json(c))),
        ("PATCH", ["channels", c]) => parse_id(c).map(|c| edit_channel(s, c, &body)),
        ("POST", ["channels", c, "messages"]) => {
            parse_id(c).map(|c| post_message(s, c, body, files))
        }
        ("GET", ["channels", c, "messages"]) => parse_id(c).map(|c| {
            let mut list: Vec<(u64, Value)> = s
                .messages
                .iter()
                .filter(|(_, m)| value_id(m.get("channel_id")) == Some(c))
                .map(|(&id, m)| (id, m.clone()))
                .collect();
            list.sort_by_key(|m| std::cmp::Reverse(m.0));
            Reply::json(Value::Array(list.into_iter().map(|(_, m)| m).collect()))
        }),
        ("GET", ["channels", c, "messages", m]) => match (parse_id(c), parse_id(m)) {
            (Some(_), Some(m)) => Some(match s.messages.get(&m) {
                Some(msg) => Reply::json(msg.clone()),
                None => Reply::error(404, "Unknown Message", 10008),
            }),
            _ => None,
        },
        ("PATCH", ["channels", c, "messages", m]) => match (parse_id(c), parse_id(m)) {
            (Some(c), Some(m)) => {
                let mut msg = s
                    .messages
                    .get(&m)
                    .cloned()
                    .unwrap_or_else(|| s.bot_message(m, c, &Value::Null));
                merge_message_fields(&mut msg, &body);
                if let Some(o) = msg.as_object_mut() {
                    o.insert("edited_timestamp".into(), json!(now()));
                }
                s.messages.insert(m, msg.clone());
                Some(Reply::json(msg))
            }
            _ => None,
        },
        ("DELETE", ["channels", c, "messages", m]) => parse_id(c).and(parse_id(m)).map(|m| {
            s.messages.remove(&m);
            Reply::no_content()
        }),
        ("POST", ["channels", c, "messages", m, "threads"]) => match (parse_id(c), parse_id(m)) {
            (Some(c), Some(m)) => Some(start_thread(s, c, Some(m), &body)),
            _ => None,
        },
        ("POST", ["channels", c, "threads"]) => {
            parse_id(c).map(|c| start_thread(s, c, None, &body))
        }
        ("PUT" | "DELETE", ["channels", c, "messages", m, "reactions", _, _]) => {
            parse_id(c).and(parse_id(m)).map(|_| Reply::no_content())
        }
        ("POST", ["channels", c, "typing"]) => parse_id(c).map(|_| Reply::no_content()),
        ("PUT" | "DELETE", ["channels", c, "thread-members", _]) => {
            parse_id(c).map(|_| Reply::no_content())
        }
        ("POST", ["interactions", i, token, "callback"]) => parse_id(i).map(|i| {
            s.responses.push(Responded {
                interaction_id: i,
                body: body.clone(),
                kind: ResponseKind::Callback,
            });
            if let Some(data) = body.get("data") {
                let channel = s.tokens.get(*token).map(|t| t.1).unwrap_or_default();
                let id = s.new_id();
                let msg = s.bot_message(id, channel, data);
                s.originals.insert(token.to_string(), msg);
            }
            Reply::no_content()
        }),
        ("POST", ["webhooks", _, token]) => {
            let (interaction, channel) = s.tokens.get(*token).copied().unwrap_or_default();
            s.responses.push(Responded {
                interaction_id: interaction,
                body: body.clone(),
                kind: ResponseKind::Followup,
            });
            let id = s.new_id();
            let msg = s.bot_message(id, channel, &body);
            s.messages.insert(id, msg.clone());
            Some(Reply::json(msg))
        }
        ("GET" | "PATCH" | "DELETE", ["webhooks", _, token, "messages", m]) => {
            webhook_message(s, method, token, m, &body)
        }
        ("GET", ["applications", _, "commands"]) => Some(list_commands(s, None)),
        ("GET", ["applications", _, "guilds", g, "commands"]) => {
            parse_id(g).map(|g| list_commands(s, Some(g)))
        }
        ("PUT", ["applications", _, "commands"]) => Some(put_commands(s, None, &body)),
        ("PUT", ["applications", _, "guilds", g, "commands"]) => {
            parse_id(g).map(|g| put_commands(s, Some(g), &body))
        }
        ("POST", ["applications", _, "commands"]) => Some(post_command(s, None, &body)),
        ("POST", ["applications", _, "guilds", g, "commands"]) => {
            parse_id(g).map(|g| post_command(s, Some(g), &body))
        }
        ("DELETE", ["applications", _, "commands", c]) => {
            parse_id(c).map(|c| delete_command(s, None, c))
        }
        ("DELETE", ["applications", _, "guilds", g, "commands", c]) => {
            match (parse_id(g), parse_id(c)) {
                (Some(g), Some(c)) => Some(delete_command(s, Some(g), c)),
                _ => None,
            }
        }
        ("GET", ["guilds", _, "members", u]) => parse_id(u).map(|u| {
            let roles = s.users.get(&u).map(|k| k.roles.clone()).unwrap_or_default();
            Reply::json(s.member_json(u, &roles))
        }),
        _ => None,
    };
    reply.unwrap_or_else(|| {
        let what = format!("{method} {path}");
        eprintln!("fake_discord: no answer for {what}");
        s.unknown.push(what);
        Reply::error(404, "Unknown", 0)
    })
}

fn post_message(s: &mut State, channel: u64, body: Value, files: Vec<String>) -> Reply {
    if s.fail_posts > 0 {
        s.fail_posts -= 1;
        let status = s.fail_status;
        if status == 429 {
            return Reply {
                status,
                body: Some(json!({
                    "message": "You are being rate limited.",
                    "retry_after": 0.05,
                    "global": false,
                    "code": 0,
                })),
                headers: vec![
                    ("retry-after", "1".into()),
                    ("x-ratelimit-limit", "5".into()),
                    ("x-ratelimit-remaining", "0".into()),
                    ("x-ratelimit-reset-after", "0.05".into()),
                    ("x-ratelimit-bucket", "fake-bucket".into()),
                    ("x-ratelimit-scope", "user".into()),
                ],
            };
        }
        return Reply::error(status, "Fake failure (fail_next_posts)", 0);
    }
    let id = s.new_id();
    // Like Discord's REST answers, the message carries no guild_id.
    let msg = s.bot_message(id, channel, &body);
    s.messages.insert(id, msg.clone());
    s.posts.push(Posted {
        channel_id: channel,
        message_id: id,
        body,
        files,
    });
    Reply::json(msg)
}

fn start_thread(s: &mut State, parent: u64, message: Option<u64>, body: &Value) -> Reply {
    let thread_id = match message {
        Some(m) => {
            if s.channels.contains_key(&m) {
                return Reply::error(
                    400,
                    "A thread has already been created for this message",
                    160004,
                );
            }
            m
        }
        None => s.new_id(),
    };
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("thread")
        .to_string();
    s.channels.insert(
        thread_id,
        Chan {
            kind: ChanKind::Thread { parent },
            name: name.clone(),
            archived: false,
            locked: false,
        },
    );
    s.threads.push(ThreadMade {
        parent_id: parent,
        message_id: message,
        thread_id,
        name,
    });
    let mut chan = s.channel_json(thread_id);
    // A forum post starts with a message; answer it inside the channel.
    if message.is_none() {
        if let Some(m) = body.get("message") {
            let id = s.new_id();
            let msg = s.bot_message(id, thread_id, m);
            s.messages.insert(id, msg.clone());
            if let Some(o) = chan.as_object_mut() {
                o.insert("message".into(), msg);
            }
        }
    }
    Reply::json(chan)
}

fn edit_channel(s: &mut State, id: u64, body: &Value) -> Reply {
    let chan = s.channels.entry(id).or_insert(Chan {
        kind: ChanKind::Text,
        name: format!("channel-{id}"),
        archived: false,
        locked: false,
    });
    if let Some(n) = body.get("name").and_then(Value::as_str) {
        chan.name = n.to_string();
    }
    if let Some(a) = body.get("archived").and_then(Value::as_bool) {
        chan.archived = a;
    }
    if let Some(l) = body.get("locked").and_then(Value::as_bool) {
        chan.locked = l;
    }
    Reply::json(s.channel_json(id))
}

fn webhook_message(
    s: &mut State,
    method: &str,
    token: &str,
    message: &str,
    body: &Value,
) -> Option<Reply> {
    let (interaction, channel) = s.tokens.get(token).copied().unwrap_or_default();
    if message == "@original" {
        let existing = s.originals.get(token).cloned();
        return Some(match method {
            "GET" => match existing {
                Some(m) => Reply::json(m),
                None => Reply::error(404, "Unknown Message", 10008),
            },
            "PATCH" => {
                s.responses.push(Responded {
                    interaction_id: interaction,
                    body: body.clone(),
                    kind: ResponseKind::EditOriginal,
                });
                let mut msg = match existing {
                    Some(m) => m,
                    None => {
                        let id = s.new_id();
                        s.bot_message(id, channel, &Value::Null)
                    }
                };
                merge_message_fields(&mut msg, body);
                s.originals.insert(token.to_string(), msg.clone());
                Reply::json(msg)
            }
            _ => {
                s.originals.remove(token);
                Reply::no_content()
            }
        });
    }
    let m = parse_id(message)?;
    Some(match method {
        "GET" => match s.messages.get(&m) {
            Some(msg) => Reply::json(msg.clone()),
            None => Reply::error(404, "Unknown Message", 10008),
        },
        "PATCH" => {
            s.responses.push(Responded {
                interaction_id: interaction,
                body: body.clone(),
                kind: ResponseKind::EditFollowup,
            });
            let mut msg = s
                .messages
                .get(&m)
                .cloned()
                .unwrap_or_else(|| s.bot_message(m, channel, &Value::Null));
            merge_message_fields(&mut msg, body);
            s.messages.insert(m, msg.clone());
            Reply::json(msg)
        }
        _ => {
            s.messages.remove(&m);
            Reply::no_content()
        }
    })
}

/// The registered form of a command the bot sent.
fn command_json(s: &mut State, guild: Option<u64>, body: &Value) -> Value {
    let mut c = match body {
        Value::Object(_) => body.clone(),
        _ => json!({}),
    };
    let name = c
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let id = match s.command_ids.get(&name) {
        Some(&id) => id,
        None => {
            let id = s.new_id();
            s.command_ids.insert(name, id);
            id
        }
    };
    let version = s.new_id();
    if let Some(o) = c.as_object_mut() {
        o.insert("id".into(), json!(id.to_string()));
        o.insert(
            "application_id".into(),
            json!(s.cfg.application_id.to_string()),
        );
        o.insert("version".into(), json!(version.to_string()));
        o.entry("type").or_insert(json!(1));
        o.entry("description").or_insert(json!(""));
        if o.get("type").is_some_and(Value::is_null) {
            o.insert("type".into(), json!(1));
        }
        match guild {
            Some(g) => {
                o.insert("guild_id".into(), json!(g.to_string()));
            }
            None => {
                o.remove("guild_id");
            }
        }
    }
    c
}

fn list_commands(s: &State, guild: Option<u64>) -> Reply {
    Reply::json(Value::Array(
        s.commands
            .iter()
            .filter(|(g, _)| *g == guild)
            .map(|(_, c)| c.clone())
            .collect(),
    ))
}

fn put_commands(s: &mut State, guild: Option<u64>, body: &Value) -> Reply {
    let Some(list) = body.as_array() else {
        return Reply::error(400, "Invalid Form Body", 50035);
    };
    s.commands.retain(|(g, _)| *g != guild);
    let made: Vec<Value> = list.iter().map(|c| command_json(s, guild, c)).collect();
    s.commands.extend(made.iter().cloned().map(|c| (guild, c)));
    Reply::json(Value::Array(made))
}

fn post_command(s: &mut State, guild: Option<u64>, body: &Value) -> Reply {
    let c = command_json(s, guild, body);
    let name = c.get("name").cloned();
    s.commands
        .retain(|(g, old)| !(*g == guild && old.get("name") == name.as_ref()));
    s.commands.push((guild, c.clone()));
    Reply::json(c)
}

fn delete_command(s: &mut State, guild: Option<u64>, id: u64) -> Reply {
    s.commands
        .retain(|(g, c)| !(*g == guild && value_id(c.get("id")) == Some(id)));
    Reply::no_content()
}

// --------------------------------------------------------------- gateway --

async fn accept_gateway(listener: TcpListener, shared: Arc<Mutex<State>>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("fake_discord: gateway accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let conn_id = {
            let mut s = lock(&shared);
            s.next_conn += 1;
            let id = s.next_conn;
            s.conns.push(Conn {
                id,
                tx,
                abort: None,
            });
            id
        };
        let task = tokio::spawn(run_connection(stream, Arc::clone(&shared), conn_id, rx));
        let mut s = lock(&shared);
        match s.conns.iter_mut().find(|c| c.id == conn_id) {
            Some(c) => c.abort = Some(task.abort_handle()),
            // Dropped (drop_connection) before it was fully registered.
            None => task.abort(),
        }
    }
}

async fn run_connection(
    stream: TcpStream,
    shared: Arc<Mutex<State>>,
    conn_id: u64,
    mut rx: mpsc::UnboundedReceiver<WsMessage>,
) {
    let ws = match tokio_tungstenite::accept_async(stream).await {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("fake_discord: WebSocket handshake failed: {e}");
            forget_connection(&shared, conn_id);
            return;
        }
    };
    let (mut sink, mut source) = ws.split();
    let hello = json!({"op": 10, "s": null, "t": null,
        "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}});
    if sink.send(WsMessage::Text(hello.to_string())).await.is_err() {
        forget_connection(&shared, conn_id);
        return;
    }
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(msg) => {
                    if let Err(e) = sink.send(msg).await {
                        eprintln!("fake_discord: gateway send failed: {e}");
                        break;
                    }
                }
                None => break,
            },
            incoming = source.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => handle_frame(&shared, conn_id, &text),
                Some(Ok(WsMessage::Binary(bytes))) => match String::from_utf8(bytes) {
                    Ok(text) => handle_frame(&shared, conn_id, &text),
                    Err(_) => eprintln!("fake_discord: ignoring a binary gateway frame"),
                },
                Some(Ok(WsMessage::Close(_))) => {
                    // Finish the closing handshake (tungstenite queued the
                    // reply); serenity waits for it when it shuts down.
                    let _ = sink.flush().await;
                    let _ = sink.close().await;
                    break;
                }
                None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    eprintln!("fake_discord: gateway read failed: {e}");
                    break;
                }
            },
        }
    }
    forget_connection(&shared, conn_id);
}

fn forget_connection(shared: &Mutex<State>, conn_id: u64) {
    let mut s = lock(shared);
    s.conns.retain(|c| c.id != conn_id);
    if s.current == Some(conn_id) {
        s.current = None;
    }
}

fn handle_frame(shared: &Mutex<State>, conn_id: u64, text: &str) {
    let frame: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("fake_discord: ignoring a gateway frame that is no JSON ({e}): {text}");
            return;
        }
    };
    let mut s = lock(shared);
    match frame.get("op").and_then(Value::as_u64) {
        Some(1) => {
            s.heartbeats += 1;
            if let Some(tx) = s.conn_tx(conn_id) {
                let _ = tx.send(WsMessage::Text(json!({"op": 11}).to_string()));
            }
        }
        Some(2) => {
            let shard = frame.pointer("/d/shard").cloned().unwrap_or(Value::Null);
            s.identify(conn_id, shard);
        }
        Some(6) => {
            let session_id = frame
                .pointer("/d/session_id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let seq = frame.pointer("/d/seq").and_then(Value::as_u64).unwrap_or(0);
            s.resume(conn_id, &session_id, seq);
        }
        // Presence updates, voice state, member chunk requests: not played.
        Some(op) => eprintln!("fake_discord: ignoring gateway op {op}"),
        None => eprintln!("fake_discord: ignoring a gateway frame without op: {text}"),
    }
}
