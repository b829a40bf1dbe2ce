//! The database: every write of the intake, every read the CLI needs.
//!
//! This module is the one seam between the pipeline and SQL. It uses only
//! `sqlx::query` with bound `$n` parameters and portable SQL (`ON CONFLICT`,
//! `RETURNING`), so a PostgreSQL implementation can follow with its own
//! migrations and the same statements. A message costs two calls to the
//! database, whatever it holds: [`claim`] (store the raw bytes, look up
//! what the decision needs) and [`apply`] (write what it decided), each a
//! `Script` of several statements.

use crate::domain::{MessageId, Severity, Status, TicketNumber};
use crate::metrics::OutboxStats;
use crate::plan::{
    Found, FoundIncident, IncidentEvent, IntakePlan, LookupKeys, Outgoing, TicketInfo, TicketWrite,
    THREAD_IDS,
};
use serde::Serialize;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Arguments as _, Row, SqliteConnection, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub mod actions;
pub mod admin;
pub mod chat;
pub mod graph;
pub mod oauth;
mod secrets;
pub mod sla;
pub mod timers;

/// A database problem; the message was not stored (exit 75 for `ingest`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Stored data that cannot be read back.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The message's batch could not be committed (a full disk, say); the
    /// message was not stored and its source keeps it for a retry.
    #[error("not stored: {0}")]
    NotStored(String),
    /// A file beside the database could not be used (the migration lock).
    #[error("{0}")]
    Io(String),
}

/// An open database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    /// One writer at a time within this process. Two connections of one
    /// pool that both want SQLite's write lock would otherwise meet in
    /// SQLite's busy handler, which sleeps 1, 2, 5, 10 … ms before trying
    /// again; behind this gate a writer starts the moment the one before
    /// it commits. Other processes still wait in the busy handler.
    write_gate: Arc<tokio::sync::Mutex<()>>,
    /// The last commit that failed (its error and when), cleared by the
    /// next one that succeeds: what `/healthz` reports.
    write_fault: Arc<std::sync::Mutex<Option<(String, std::time::Instant)>>>,
}

/// How long a failed commit keeps `/healthz` failing when nothing has been
/// written since (a source that retries renews it; after that the write
/// probe decides).
const WRITE_FAULT_FRESH: Duration = Duration::from_secs(60);

/// A write transaction on the store; dereferences to the connection.
///
/// `BEGIN IMMEDIATE`, `COMMIT` and `ROLLBACK` are sent as plain statements
/// rather than through `sqlx::Transaction`: when SQLite rolls a transaction
/// back by itself (a commit that fails with "database or disk is full", an
/// I/O error), sqlx's own `ROLLBACK` fails and its connection keeps
/// believing it is inside a transaction, so every later `begin` on it fails
/// until a restart. Here a transaction that did not commit cleanly gives up
/// its connection: it is closed (SQLite rolls back whatever is still open)
/// and the pool opens a fresh one for the next writer.
#[derive(Debug)]
pub struct Tx {
    conn: PoolConnection<sqlx::Sqlite>,
    /// Where the outcome of the commit is recorded for `/healthz`.
    fault: Arc<std::sync::Mutex<Option<(String, std::time::Instant)>>>,
    /// Committed or rolled back cleanly: the connection may go back to the
    /// pool as it is.
    done: bool,
    _gate: tokio::sync::OwnedMutexGuard<()>,
}

impl Tx {
    /// Commits, then lets the next writer in. On failure the transaction
    /// is rolled back and the connection discarded.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        match sqlx::query("COMMIT").execute(&mut *self.conn).await {
            Ok(_) => {
                self.done = true;
                if let Ok(mut f) = self.fault.lock() {
                    *f = None;
                }
                Ok(())
            }
            Err(e) => {
                // SQLite may have rolled back already; this is for when
                // it has not. The connection is discarded either way.
                let _ = sqlx::query("ROLLBACK").execute(&mut *self.conn).await;
                let e = StoreError::from(e);
                if let Ok(mut f) = self.fault.lock() {
                    *f = Some((e.to_string(), std::time::Instant::now()));
                }
                Err(e)
            }
        }
    }

    /// Rolls back, then lets the next writer in.
    pub async fn rollback(mut self) -> Result<(), StoreError> {
        sqlx::query("ROLLBACK").execute(&mut *self.conn).await?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Tx {
    /// A transaction dropped without a clean commit or rollback (an error
    /// on the way, a cancelled task) closes its connection: closing rolls
    /// back, and no later writer can inherit an open or half-known
    /// transaction.
    fn drop(&mut self) {
        if !self.done {
            self.conn.close_on_drop();
        }
    }
}

impl std::ops::Deref for Tx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Formats an instant the way every table stores it: UTC, milliseconds, `Z`,
/// so text order is time order.
pub fn ts(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Row written into `messages` for a message, before the decision.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// The raw bytes.
    pub raw: &'a [u8],
    /// Where it came from (`stdin`, `file`, `maildir:<path>`, …).
    pub source: &'a str,
    /// When it arrived (`ts` format), at or before the commit: see
    /// [`crate::ingest::arrival`].
    pub arrived_at: &'a str,
    /// Its Message-ID, when it has one.
    pub message_id: Option<&'a MessageId>,
    /// SHA-256 hex of the raw bytes.
    pub sha256: &'a str,
    /// The key that makes a second delivery a duplicate
    /// ([`crate::ingest::dedupe_key`]).
    pub dedupe_key: &'a str,
}

/// What [`write_intake`] wrote.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The ticket the message is on.
    pub ticket: Option<TicketNumber>,
    /// That ticket's severity.
    pub severity: Option<Severity>,
    /// The ticket's row id.
    pub ticket_id: Option<i64>,
}

/// A ticket a timer resolved, for the mails that tell its organisation.
#[derive(Debug, Clone)]
pub struct ResolvedTicket {
    /// Its number.
    pub number: TicketNumber,
    /// Its subject.
    pub subject: String,
    /// Its organisation (directory id).
    pub organisation: Option<String>,
    /// Its severity.
    pub severity: Severity,
    /// Why it was resolved.
    pub why: String,
}

/// What a fired timer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredTimer {
    /// The timer's kind (`recovery-hold`, `sla-reminder`, `digest`).
    pub kind: String,
    /// The ticket it concerned.
    pub ticket: Option<String>,
    /// Whether it resolved the ticket.
    pub resolved: bool,
    /// Whether it queued mail or chat posts (the outbox worker should look).
    pub queued: bool,
}

/// A ticket for listing.
#[derive(Debug, Clone, Serialize)]
pub struct TicketSummary {
    /// Public number.
    pub number: String,
    /// Subject.
    pub subject: String,
    /// Status.
    pub status: String,
    /// Severity 1–4.
    pub severity: i64,
    /// Requester address.
    pub requester: String,
    /// Creation time (UTC).
    pub created_at: String,
    /// Last change (UTC).
    pub updated_at: String,
    /// Number of articles.
    pub article_count: i64,
    /// The ticket a stranger's tagged mail referred to.
    pub linked_ticket: Option<String>,
    /// The customer organisation (directory id), if the requester is known.
    pub organisation: Option<String>,
    /// Marks for staff: `unverified`, `over-quota`.
    pub flags: Vec<String>,
    /// The queue a rule put it in.
    pub queue: Option<String>,
    /// Its tags, in alphabetical order.
    pub tags: Vec<String>,
}

/// An attachment as listed.
#[derive(Debug, Clone, Serialize)]
pub struct AttachmentInfo {
    /// Its id: what `tickets attachment NUMBER ID` takes.
    pub id: i64,
    /// Decoded file name.
    pub filename: String,
    /// Size in bytes.
    pub size: i64,
    /// MIME type.
    pub content_type: String,
}

/// An article as shown.
#[derive(Debug, Clone, Serialize)]
pub struct ArticleView {
    /// Its id: what `tickets raw NUMBER ARTICLE` takes.
    pub id: i64,
    /// in, out or note.
    pub direction: String,
    /// mail, auto-reply, bounce, confirmation, note.
    pub kind: String,
    /// Sender address.
    pub from: Option<String>,
    /// Sender name.
    pub from_name: Option<String>,
    /// Subject.
    pub subject: Option<String>,
    /// Message-ID.
    pub message_id: Option<String>,
    /// Text.
    pub body: String,
    /// When it was stored (UTC).
    pub created_at: String,
    /// For an article made from a received message: when that message
    /// arrived (UTC), at or before `created_at`.
    pub arrived_at: Option<String>,
    /// Attachments.
    pub attachments: Vec<AttachmentInfo>,
}

/// A ticket with everything on it.
#[derive(Debug, Clone, Serialize)]
pub struct TicketView {
    /// The summary fields.
    #[serde(flatten)]
    pub summary: TicketSummary,
    /// The receipt timestamp (UTC): when the message that opened the ticket
    /// arrived, where its SLA clocks start; `created_at` is when ticketd
    /// stored it.
    pub arrived_at: String,
    /// The rule that set the severity.
    pub severity_rule: Option<String>,
    /// Who works it (`claim`/`assign`), by name.
    pub assignee: Option<String>,
    /// Where mail to the customer goes when not to the requester (the
    /// Reply-To of the requester's latest mail).
    pub reply_to: Option<String>,
    /// Tickets that refer to this one (opened by a mail on it after it was
    /// closed, or by a stranger naming it), oldest first.
    pub linked_from: Vec<String>,
    /// Participants.
    pub participants: Vec<String>,
    /// Articles, oldest first.
    pub articles: Vec<ArticleView>,
    /// Bounces recorded against recipients.
    pub bounces: Vec<BounceView>,
    /// The monitoring incident this ticket is for, if any.
    pub incident: Option<IncidentView>,
    /// What happened to it, oldest first: the audit trail.
    pub events: Vec<EventView>,
}

/// One entry of a ticket's audit trail.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    /// What happened (`created`, `staff-reply`, `waiting`, `severity`, …).
    pub kind: String,
    /// Details: why, by whom.
    pub detail: String,
    /// When.
    pub created_at: String,
}

/// A monitoring incident as shown on its ticket.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentView {
    /// Organisation, host and service.
    pub key: String,
    /// The last alert's state.
    pub state: String,
    /// Whether the problem is open.
    pub problem: bool,
    /// Problem alerts so far.
    pub occurrences: i64,
    /// The last alert's text.
    pub last_text: String,
    /// When the last alert came.
    pub last_at: String,
}

/// A recorded delivery failure.
#[derive(Debug, Clone, Serialize)]
pub struct BounceView {
    /// The recipient that failed.
    pub recipient: String,
    /// DSN action.
    pub action: Option<String>,
    /// DSN status code.
    pub status: Option<String>,
    /// Diagnostic text.
    pub diagnostic: Option<String>,
    /// When.
    pub created_at: String,
}

/// An outbox row as listed.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxView {
    /// Row id.
    pub id: i64,
    /// Ticket number.
    pub ticket: Option<String>,
    /// Kind (confirmation, …).
    pub kind: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Subject.
    pub subject: String,
    /// Message-ID.
    pub message_id: String,
    /// queued, sending, sent, failed, cancelled.
    pub status: String,
    /// Delivery attempts.
    pub attempts: i64,
    /// When it is tried next (UTC): for a queued row only (a row being
    /// sent, sent, failed or cancelled is tried no more by itself).
    pub next_attempt_at: Option<String>,
    /// Last error.
    pub last_error: Option<String>,
    /// Queued at.
    pub created_at: String,
    /// Sent at.
    pub sent_at: Option<String>,
    /// The full RFC 5322 text.
    pub raw: String,
}

/// A queued mail claimed for delivery.
#[derive(Debug, Clone)]
pub struct DueMail {
    /// Row id.
    pub id: i64,
    /// Ticket id.
    pub ticket_id: Option<i64>,
    /// Envelope sender.
    pub sender: String,
    /// Envelope recipients.
    pub recipients: Vec<String>,
    /// Bytes to send.
    pub raw: Vec<u8>,
    /// Attempts so far.
    pub attempts: i64,
    /// First queued (UTC).
    pub created_at: String,
}

/// A quarantined message as listed.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineView {
    /// Row id.
    pub id: i64,
    /// Why.
    pub reason: Option<String>,
    /// Size.
    pub size: i64,
    /// SHA-256.
    pub sha256: String,
    /// Source.
    pub source: String,
    /// When.
    pub received_at: String,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path`.
    pub async fn open_sqlite(path: &Path, max_connections: u32) -> Result<Store, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite://")?.filename(path);
        Store::connect(opts, max_connections).await
    }

    /// Opens a database by URL (`sqlite:path`).
    pub async fn open_url(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        Store::connect(SqliteConnectOptions::from_str(url)?, max_connections).await
    }

    /// WAL mode, `synchronous = FULL` so a commit survives a power cut, and a
    /// busy timeout so concurrent `ingest` processes wait instead of failing.
    async fn connect(
        opts: SqliteConnectOptions,
        max_connections: u32,
    ) -> Result<Store, StoreError> {
        let opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
            // Statement journals and sorts stay in memory, not in /var/tmp.
            .pragma("temp_store", "memory")
            // Up to 32 MiB of page cache (allocated as used): a batch of
            // messages (≈ 14 KB of pages each) stays in memory until its
            // commit instead of spilling to the WAL and being read back.
            .pragma("cache_size", "-32768");
        // A new database file is set to WAL by its first connection, and
        // processes doing that at once get "database is locked" at once
        // (SQLite does not wait for a journal mode change): the first
        // connection to a file that is not there yet is made under the
        // migration lock. An existing database costs no lock.
        let path = opts.get_filename().to_path_buf();
        let is_new = std::fs::metadata(&path).map_or(true, |m| m.len() == 0);
        let _lock = if is_new {
            lock_beside(&path).await?
        } else {
            None
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .connect_with(opts)
            .await?;
        Ok(Store {
            pool,
            write_gate: Arc::new(tokio::sync::Mutex::new(())),
            write_fault: Arc::default(),
        })
    }

    /// Applies pending migrations. Cheap when there are none: `user_version`
    /// records how many were applied, so a per-message `ingest` process
    /// reads one pragma instead of the migration table.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let expected = MIGRATOR.iter().count() as i64;
        let have: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&self.pool)
            .await?;
        if have == expected {
            return Ok(());
        }
        // Processes starting together on a fresh data directory would
        // race here (the loser's migration fails on the tables the winner
        // just created): one migrates under a lock, the others wait for
        // it and then find the migrations applied.
        let _lock = self.migration_lock().await?;
        let have: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&self.pool)
            .await?;
        if have == expected {
            return Ok(());
        }
        MIGRATOR.run(&self.pool).await?;
        let set = format!("PRAGMA user_version = {expected}");
        sqlx::query(sqlx::AssertSqlSafe(set))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// An exclusive lock on `<database>-migrate.lock` beside the database
    /// file, held while migrations run (none for an in-memory database).
    async fn migration_lock(&self) -> Result<Option<std::fs::File>, StoreError> {
        lock_beside(self.pool.connect_options().get_filename()).await
    }

    /// Begins a write transaction, taking the write lock at once so that the
    /// lookups and the writes of a message see one consistent state.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let gate = self.write_gate.clone().lock_owned().await;
        let mut conn = self.pool.acquire().await?;
        if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
            // Busy past the timeout, or a connection in a state of its
            // own: not one to hand to the next writer.
            conn.close_on_drop();
            return Err(e.into());
        }
        Ok(Tx {
            conn,
            fault: self.write_fault.clone(),
            done: false,
            _gate: gate,
        })
    }

    /// The pool, for tests and tools.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// An exclusive lock on `<db>-migrate.lock` beside the database file `db`
/// (none for an in-memory database), taken without blocking the runtime.
async fn lock_beside(db: &Path) -> Result<Option<std::fs::File>, StoreError> {
    if db.as_os_str().is_empty() || db.as_os_str() == ":memory:" {
        return Ok(None);
    }
    let mut name = db.as_os_str().to_owned();
    name.push("-migrate.lock");
    let path = std::path::PathBuf::from(name);
    let shown = path.display().to_string();
    let locked = tokio::task::spawn_blocking(move || {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        f.lock()?;
        Ok::<_, std::io::Error>(f)
    })
    .await
    .map_err(|e| StoreError::Io(format!("cannot lock {shown}: {e}")))?;
    locked
        .map(Some)
        .map_err(|e| StoreError::Io(format!("cannot lock {shown}: {e}")))
}

/// Several SQL statements sent to SQLite in one call, sharing one list of
/// numbered parameters (`$1`, `$2`, …).
///
/// Every call crosses to sqlx's SQLite worker thread and back: two thread
/// wake-ups, which on a small VM cost more than the statements themselves
/// (over half of the intake's CPU time at one call per statement). So what
/// one message needs before its decision is one script, and what it writes
/// after it is another. Only the shape of the text is built at run time;
/// every value is a bound parameter. Each statement binds its own
/// parameters, so a script that grows past SQLite's limit on parameter
/// numbers is cut between two statements into several calls.
#[derive(Default)]
struct Script {
    /// Finished parts, each one call.
    parts: Vec<(String, SqliteArguments)>,
    sql: String,
    args: SqliteArguments,
    count: usize,
    error: Option<String>,
}

/// A bound parameter's placeholder, `$n`.
#[derive(Debug, Clone, Copy)]
struct P(usize);

impl std::fmt::Display for P {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "${}", self.0)
    }
}

/// Rows per multi-row `INSERT … VALUES` and entries per `IN (…)` list.
const ROWS_PER_STATEMENT: usize = 64;

/// Parameters per call: below SQLite's limit of 32,766 on `$n`, with room
/// for the widest statement (64 rows of 13 parameters).
const PARAMS_PER_CALL: usize = 30_000;

impl Script {
    /// Binds `value` and returns its placeholder.
    fn arg<'q, T>(&mut self, value: T) -> P
    where
        T: sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
    {
        if let Err(e) = self.args.add(value) {
            self.error.get_or_insert_with(|| e.to_string());
        }
        self.count += 1;
        P(self.count)
    }

    /// Appends SQL text.
    fn push(&mut self, text: std::fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        let _ = self.sql.write_fmt(text);
    }

    /// Ends a statement; starts a new call when this one has enough
    /// parameters.
    fn end(&mut self) {
        self.sql.push_str(";\n");
        if self.count >= PARAMS_PER_CALL {
            let sql = std::mem::take(&mut self.sql);
            let args = std::mem::take(&mut self.args);
            self.parts.push((sql, args));
            self.count = 0;
        }
    }

    /// Multi-row inserts: `head`, then the group `row` makes for each item,
    /// then `tail`; a statement per [`ROWS_PER_STATEMENT`] items.
    fn rows<T>(
        &mut self,
        head: &str,
        items: &[T],
        tail: &str,
        mut row: impl FnMut(&mut Script, &T) -> String,
    ) {
        for chunk in items.chunks(ROWS_PER_STATEMENT) {
            self.sql.push_str(head);
            for (i, item) in chunk.iter().enumerate() {
                let group = row(self, item);
                if i > 0 {
                    self.sql.push_str(", ");
                }
                self.sql.push_str(&group);
            }
            self.sql.push_str(tail);
            self.end();
        }
    }

    /// An `IN (…)` list of placeholders for `items`.
    fn list<T>(&mut self, items: &[T], mut f: impl FnMut(&mut Script, &T) -> P) -> String {
        let mut out = String::from("(");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&f(self, item).to_string());
        }
        out.push(')');
        out
    }

    /// Runs every statement in order; the rows they return.
    async fn run(mut self, conn: &mut SqliteConnection) -> Result<Vec<SqliteRow>, StoreError> {
        if let Some(e) = self.error {
            return Err(StoreError::Corrupt(format!("cannot bind a value: {e}")));
        }
        if !self.sql.is_empty() {
            self.parts.push((self.sql, self.args));
        }
        let mut rows = Vec::new();
        for (sql, args) in self.parts {
            rows.extend(
                sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                    .fetch_all(&mut *conn)
                    .await?,
            );
        }
        Ok(rows)
    }
}

/// The next free row ids and the ticket sequence's current value, read
/// under the transaction's write lock together with the lookups. They stay
/// valid until [`apply`] writes with them in the same transaction (nothing
/// else writes meanwhile: `BEGIN IMMEDIATE` holds the lock). Should that
/// ever be broken, the primary key refuses the row and the message is not
/// stored — an error, never a row on the wrong ticket.
#[derive(Debug, Clone, Copy, Default)]
pub struct NextIds {
    /// Highest `tickets.id` so far.
    pub ticket: i64,
    /// Highest `articles.id` so far.
    pub article: i64,
    /// Highest `outbox.id` so far.
    pub outbox: i64,
    /// The ticket sequence's value (`None`: no ticket yet).
    pub seq: Option<i64>,
}

/// What the decision of a parsed message needs looked up.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    /// Ids and numbers to find tickets by.
    pub keys: &'a LookupKeys,
    /// The would-be confirmation recipient, for the hourly limit.
    pub reply_address: Option<&'a str>,
    /// One hour before now (`ts` format).
    pub hour_ago: &'a str,
    /// The sender's organisation (directory id), to count its cases.
    pub organisation: Option<&'a str>,
    /// Start of the current quarter (`ts` format).
    pub quarter_start: &'a str,
    /// The incident key of a monitoring alert.
    pub incident: Option<&'a str>,
    /// For a service alert: the incident key of its host, whose open
    /// DOWN ticket the alert joins.
    pub host_incident: Option<&'a str>,
}

/// Result of claiming a message's dedupe key.
#[derive(Debug, Clone)]
pub enum Claim {
    /// First time seen.
    New {
        /// The new `messages` row.
        row: i64,
        /// What was found for the decision (empty without a probe).
        found: Box<Found>,
        /// Ids for [`write_intake`].
        next: NextIds,
    },
    /// Seen before.
    Duplicate {
        /// Ticket of the first delivery, if any.
        ticket: Option<TicketNumber>,
        /// Severity of that ticket.
        severity: Option<Severity>,
    },
}

/// Ticket columns the decision needs, with one row per participant
/// (`p.address` NULL when there is none): then the reply address, the
/// newest customer mail's Message-ID and the newest Message-IDs of the
/// customer's mails and ours on the ticket (space-separated, newest first,
/// at most [`THREAD_IDS`]; staff members' own mails
/// are internal), read through `articles_ticket` so that a mail of ours on
/// the ticket threads without another query.
const TICKET_INFO_COLUMNS: &str = "t.id, t.number, t.requester, t.status, p.address, t.reply_to, t.language,
    (SELECT a.message_id FROM articles a WHERE a.ticket_id = t.id AND a.direction = 'in' AND a.kind = 'mail'
       AND a.message_id IS NOT NULL ORDER BY a.id DESC LIMIT 1),
    (SELECT group_concat(x.message_id, ' ') FROM (SELECT a.message_id FROM articles a
       WHERE a.ticket_id = t.id AND a.message_id IS NOT NULL AND (a.direction = 'out' OR a.kind = 'mail')
       ORDER BY a.id DESC LIMIT 10) x)";

/// How many columns [`TICKET_INFO_COLUMNS`] has.
const TICKET_INFO_WIDTH: usize = 9;

/// A ticket from its rows of [`TICKET_INFO_COLUMNS`] starting at column
/// `at`; `None` when there are no rows.
fn ticket_info_from_rows<'r>(
    mut rows: impl Iterator<Item = &'r SqliteRow>,
    at: usize,
) -> Result<Option<TicketInfo>, StoreError> {
    let Some(first) = rows.next() else {
        return Ok(None);
    };
    let mut participants = Vec::new();
    for r in std::iter::once(first).chain(rows) {
        if let Some(a) = r.try_get::<Option<String>, _>(at + 4)? {
            participants.push(a);
        }
    }
    let newest_first: Option<String> = first.try_get(at + 8)?;
    let mut thread: Vec<MessageId> = newest_first
        .as_deref()
        .unwrap_or("")
        .split(' ')
        .filter_map(MessageId::parse)
        .take(THREAD_IDS)
        .collect();
    thread.reverse();
    Ok(Some(TicketInfo {
        id: first.try_get(at)?,
        number: TicketNumber(first.try_get(at + 1)?),
        requester: first.try_get(at + 2)?,
        participants,
        status: Status::parse(first.try_get::<&str, _>(at + 3)?),
        reply_to: first.try_get(at + 5)?,
        language: first.try_get(at + 6)?,
        last_inbound: first
            .try_get::<Option<&str>, _>(at + 7)?
            .and_then(MessageId::parse),
        thread,
    }))
}

/// Appends a query for tickets: rows `(label, key, TICKET_INFO_COLUMNS)`
/// for each of `ids` (Message-IDs we stored or sent) or, with `by_number`,
/// each ticket number.
fn find_tickets(s: &mut Script, label: &str, keys: &[&str], by_number: bool) {
    if keys.is_empty() {
        return;
    }
    let list = s.list(keys, |s, k| s.arg(*k));
    // `label` is one of this module's constants, never input.
    if by_number {
        s.push(format_args!(
            "SELECT '{label}', t.number, {TICKET_INFO_COLUMNS} FROM tickets t
             LEFT JOIN participants p ON p.ticket_id = t.id WHERE t.number IN {list}"
        ));
    } else {
        s.push(format_args!(
            "SELECT '{label}', th.message_id, {TICKET_INFO_COLUMNS} FROM thread_ids th
             JOIN tickets t ON t.id = th.ticket_id
             LEFT JOIN participants p ON p.ticket_id = t.id WHERE th.message_id IN {list}"
        ));
    }
    s.end();
}

/// The ticket of the first key (in the order given) that has rows labelled
/// `label`.
fn first_ticket(
    rows: &[SqliteRow],
    label: &str,
    keys: &[&str],
) -> Result<Option<TicketInfo>, StoreError> {
    for k in keys {
        let mut matching = rows
            .iter()
            .filter(|r| {
                r.try_get::<&str, _>(0).is_ok_and(|l| l == label)
                    && r.try_get::<&str, _>(1).is_ok_and(|m| m == *k)
            })
            .peekable();
        if matching.peek().is_some() {
            return ticket_info_from_rows(matching, 2);
        }
    }
    Ok(None)
}

/// Stores the raw message under its dedupe key and, in the same call, looks
/// up what its decision needs (`probe`) and the ids [`apply`] will use. A
/// second delivery is recorded as a duplicate (its bytes kept when they
/// differ).
pub async fn claim(
    conn: &mut SqliteConnection,
    m: &NewMessage<'_>,
    probe: Option<&Probe<'_>>,
    now: &str,
) -> Result<Claim, StoreError> {
    let mut s = Script::default();
    let (key, mid, sha, size, raw, source, at, arrived) = (
        s.arg(m.dedupe_key),
        s.arg(m.message_id.map(|i| i.as_str())),
        s.arg(m.sha256),
        s.arg(m.raw.len() as i64),
        s.arg(inline_part(m.raw)),
        s.arg(m.source),
        s.arg(now),
        s.arg(m.arrived_at),
    );
    s.push(format_args!(
        "INSERT INTO messages (dedupe_key, message_id, sha256, size, raw, source, received_at, arrived_at, action)
         VALUES ({key}, {mid}, {sha}, {size}, {raw}, {source}, {at}, {arrived}, 'pending')
         ON CONFLICT (dedupe_key) DO NOTHING RETURNING 'claim', id"
    ));
    s.end();
    s.push(format_args!(
        "SELECT 'next', (SELECT COALESCE(MAX(id), 0) FROM tickets), (SELECT COALESCE(MAX(id), 0) FROM articles),
                (SELECT COALESCE(MAX(id), 0) FROM outbox), (SELECT value FROM counters WHERE name = 'ticket')"
    ));
    s.end();
    let (thread, signed, staff, tag, bounced, bounced_nums) = match probe {
        Some(p) => (
            keys_of(&p.keys.thread_ids, MessageId::as_str),
            keys_of(&p.keys.signed_numbers, TicketNumber::as_str),
            keys_of(&p.keys.staff_numbers, TicketNumber::as_str),
            p.keys
                .tag_number
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>(),
            keys_of(&p.keys.bounced_ids, MessageId::as_str),
            keys_of(&p.keys.bounced_numbers, TicketNumber::as_str),
        ),
        None => Default::default(),
    };
    find_tickets(&mut s, "ref", &thread, false);
    find_tickets(&mut s, "sig", &signed, true);
    find_tickets(&mut s, "staff", &staff, true);
    find_tickets(&mut s, "tag", &tag, true);
    find_tickets(&mut s, "bref", &bounced, false);
    find_tickets(&mut s, "bsig", &bounced_nums, true);
    if let Some(addr) = probe.and_then(|p| p.reply_address) {
        let (a, h) = (
            s.arg(addr.to_ascii_lowercase()),
            s.arg(probe.map(|p| p.hour_ago)),
        );
        s.push(format_args!(
            "SELECT 'auto', COUNT(*) FROM auto_mail_log WHERE recipient = {a} AND sent_at > {h}"
        ));
        s.end();
    }
    let incident_keys: Vec<&str> = probe.and_then(|p| p.incident).into_iter().collect();
    let host_keys: Vec<&str> = probe.and_then(|p| p.host_incident).into_iter().collect();
    for (label, keys) in [("incident", &incident_keys), ("hostinc", &host_keys)] {
        if let Some(key) = keys.first() {
            let k = s.arg(*key);
            s.push(format_args!(
                "SELECT '{label}', i.key, {TICKET_INFO_COLUMNS}, i.problem, i.recovered_at FROM incidents i
                 JOIN tickets t ON t.id = i.ticket_id
                 LEFT JOIN participants p ON p.ticket_id = t.id WHERE i.key = {k}"
            ));
            s.end();
        }
    }
    if let Some(p) = probe {
        if let Some(org) = p.organisation {
            let (o, q) = (s.arg(org), s.arg(p.quarter_start));
            s.push(format_args!(
                "SELECT 'cases', COUNT(*) FROM tickets WHERE organisation = {o} AND created_at >= {q}"
            ));
            s.end();
        }
    }
    let rows = s.run(conn).await?;
    let label = |r: &SqliteRow| r.try_get::<String, _>(0).unwrap_or_default();
    let Some(claimed) = rows.iter().find(|r| label(r) == "claim") else {
        return duplicate(conn, m, now).await;
    };
    store_chunks(conn, "message", claimed.try_get(1)?, m.raw).await?;
    let mut next = NextIds::default();
    let mut auto = 0i64;
    let mut cases = 0i64;
    for r in &rows {
        match label(r).as_str() {
            "next" => {
                next = NextIds {
                    ticket: r.try_get(1)?,
                    article: r.try_get(2)?,
                    outbox: r.try_get(3)?,
                    seq: r.try_get(4)?,
                }
            }
            "auto" => auto = r.try_get(1)?,
            "cases" => cases = r.try_get(1)?,
            _ => {}
        }
    }
    Ok(Claim::New {
        row: claimed.try_get(1)?,
        found: Box::new(Found {
            by_stored_id: first_ticket(&rows, "ref", &thread)?,
            by_signed_number: first_ticket(&rows, "sig", &signed)?,
            by_staff_number: first_ticket(&rows, "staff", &staff)?,
            by_tag: first_ticket(&rows, "tag", &tag)?,
            bounced_by_id: first_ticket(&rows, "bref", &bounced)?,
            bounced_by_number: first_ticket(&rows, "bsig", &bounced_nums)?,
            auto_mails_last_hour: u32::try_from(auto).unwrap_or(u32::MAX),
            incident: incident_from(&rows, "incident", &incident_keys)?,
            host_incident: incident_from(&rows, "hostinc", &host_keys)?,
            org_cases: u32::try_from(cases).unwrap_or(u32::MAX),
        }),
        next,
    })
}

/// The incident the claim's rows labelled `label` found, with its ticket.
fn incident_from(
    rows: &[SqliteRow],
    label: &str,
    keys: &[&str],
) -> Result<Option<FoundIncident>, StoreError> {
    let Some(ticket) = first_ticket(rows, label, keys)? else {
        return Ok(None);
    };
    let row = rows
        .iter()
        .find(|r| r.try_get::<&str, _>(0).is_ok_and(|l| l == label));
    let problem = row
        .map(|r| r.try_get::<i64, _>(2 + TICKET_INFO_WIDTH))
        .transpose()?
        .unwrap_or(0);
    let recovered_at: Option<String> = row
        .map(|r| r.try_get(3 + TICKET_INFO_WIDTH))
        .transpose()?
        .flatten();
    Ok(Some(FoundIncident {
        ticket,
        problem: problem != 0,
        recovered_at,
    }))
}

/// At most 50 of `items` as text: a References header of thousands of ids
/// must not become thousands of parameters.
/// Raw bytes kept inline in a row (`messages.raw`, `duplicates.raw`); the
/// rest of a bigger message goes into `raw_chunks` in pieces of this size,
/// so that no copy the driver or SQLite makes is bigger than one piece.
pub const RAW_CHUNK: usize = 1024 * 1024;

/// An article's attachments over one piece: the article's id and, for each,
/// its position among the article's attachments and its content.
type Pieced<'a> = (i64, Vec<(usize, &'a [u8])>);

/// The inline part of a raw message: its first [`RAW_CHUNK`] bytes.
fn inline_part(raw: &[u8]) -> &[u8] {
    &raw[..raw.len().min(RAW_CHUNK)]
}

/// Stores what [`inline_part`] leaves out as `raw_chunks` rows 1, 2, … of
/// row `row_id` of `kind` (`message` or `duplicate`). Nothing for a
/// message of one piece: the usual mail costs no extra statement.
async fn store_chunks(
    conn: &mut SqliteConnection,
    kind: &str,
    row_id: i64,
    raw: &[u8],
) -> Result<(), StoreError> {
    for (seq, piece) in raw.chunks(RAW_CHUNK).enumerate().skip(1) {
        sqlx::query("INSERT INTO raw_chunks (kind, row_id, seq, data) VALUES ($1, $2, $3, $4)")
            .bind(kind)
            .bind(row_id)
            .bind(seq as i64)
            .bind(piece)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

fn keys_of<T>(items: &[T], text: impl Fn(&T) -> &str) -> Vec<&str> {
    items.iter().take(50).map(text).collect()
}

/// Records a second delivery of a stored message.
async fn duplicate(
    conn: &mut SqliteConnection,
    m: &NewMessage<'_>,
    now: &str,
) -> Result<Claim, StoreError> {
    let orig = sqlx::query(
        "SELECT m.id, m.sha256, t.number, t.severity FROM messages m
         LEFT JOIN tickets t ON t.id = m.ticket_id WHERE m.dedupe_key = $1",
    )
    .bind(m.dedupe_key)
    .fetch_one(&mut *conn)
    .await?;
    let orig_id: i64 = orig.try_get(0)?;
    let orig_sha: String = orig.try_get(1)?;
    let number: Option<String> = orig.try_get(2)?;
    let severity: Option<i64> = orig.try_get(3)?;
    let raw = (orig_sha != m.sha256).then_some(m.raw);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO duplicates (original_id, sha256, raw, source, received_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(orig_id)
    .bind(m.sha256)
    .bind(raw.map(inline_part))
    .bind(m.source)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    if let Some(raw) = raw {
        store_chunks(conn, "duplicate", id, raw).await?;
    }
    Ok(Claim::Duplicate {
        ticket: number.map(TicketNumber),
        severity: severity.and_then(|s| Severity::try_from(s).ok()),
    })
}

/// Marks a claimed message quarantined with the reason.
pub async fn quarantine(
    conn: &mut SqliteConnection,
    message_row: i64,
    reason: &str,
    now: &str,
) -> Result<(), StoreError> {
    let mut s = Script::default();
    let (r, m) = (s.arg(reason), s.arg(message_row));
    s.push(format_args!(
        "UPDATE messages SET action = 'quarantined', reason = {r} WHERE id = {m}"
    ));
    s.end();
    events(
        &mut s,
        None,
        Some(message_row),
        &[("quarantined", reason)],
        now,
    );
    s.run(conn).await?;
    Ok(())
}

/// The language recorded on a ticket for its customer's mails, if any.
pub async fn ticket_language(
    conn: &mut SqliteConnection,
    ticket_id: i64,
) -> Result<Option<String>, StoreError> {
    let l: Option<Option<String>> =
        sqlx::query_scalar("SELECT language FROM tickets WHERE id = $1")
            .bind(ticket_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(l.flatten())
}

/// Records the language of a ticket's customer mails, unless it has one:
/// the first choice stays for the ticket's life.
pub async fn set_ticket_language(
    conn: &mut SqliteConnection,
    ticket_id: i64,
    language: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE tickets SET language = $2 WHERE id = $1 AND language IS NULL")
        .bind(ticket_id)
        .bind(language)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Appends audit events of one ticket and message, in the order given.
fn events(
    s: &mut Script,
    ticket: Option<i64>,
    message: Option<i64>,
    list: &[(&str, &str)],
    now: &str,
) {
    s.rows(
        "INSERT INTO events (ticket_id, message_ref, kind, detail, created_at) VALUES ",
        list,
        "",
        |s, (kind, detail)| {
            let (t, m, k, d, at) = (
                s.arg(ticket),
                s.arg(message),
                s.arg(*kind),
                s.arg(*detail),
                s.arg(now),
            );
            format!("({t}, {m}, {k}, {d}, {at})")
        },
    );
}

/// Appends rows of a ticket's table that has only the ticket and one text:
/// participants, thread ids, with `ON CONFLICT DO NOTHING`.
fn ticket_texts(s: &mut Script, head: &str, ticket: i64, texts: &[&str]) {
    s.rows(head, texts, " ON CONFLICT DO NOTHING", |s, text| {
        let (t, x) = (s.arg(ticket), s.arg(*text));
        format!("({t}, {x})")
    });
}

/// One row of `articles`; a column left `None` is stored NULL.
#[derive(Debug, Default)]
struct Article<'a> {
    direction: &'a str,
    kind: &'a str,
    from_addr: Option<&'a str>,
    from_name: Option<&'a str>,
    to_addrs: Option<String>,
    cc_addrs: Option<String>,
    subject: Option<&'a str>,
    message_id: Option<&'a str>,
    body: &'a str,
    message_ref: Option<i64>,
    outbox_ref: Option<i64>,
}

impl<'a> Article<'a> {
    fn note(text: &'a str) -> Article<'a> {
        Article {
            direction: "note",
            kind: "note",
            body: text,
            ..Article::default()
        }
    }

    /// The ticket's outgoing article for a queued mail.
    fn outgoing(kind: &'a str, out: &'a Outgoing, outbox_id: i64) -> Article<'a> {
        Article {
            direction: "out",
            kind,
            to_addrs: Some(out.to.join(", ")),
            subject: Some(&out.subject),
            message_id: Some(out.message_id.as_str()),
            body: &out.body,
            outbox_ref: Some(outbox_id),
            ..Article::default()
        }
    }
}

/// Queues a chat post in `s`: a `chat_outbox` row for the channel named
/// `channel`, due at once.
fn queue_chat(
    s: &mut Script,
    ticket: Option<i64>,
    channel: &str,
    kind: &str,
    body: &serde_json::Value,
    now: &str,
) {
    let ps = [
        s.arg(ticket),
        s.arg(channel),
        s.arg(kind),
        s.arg(body.to_string()),
        s.arg(now),
    ];
    s.push(format_args!(
        "INSERT INTO chat_outbox (ticket_id, channel, kind, body, status, next_attempt_at, created_at)
         VALUES ({}, {}, {}, {}, 'queued', {}, {})",
        ps[0], ps[1], ps[2], ps[3], ps[4], ps[4]
    ));
    s.end();
}

/// The id the next outbox row of this transaction gets when none was
/// counted yet: one more than the highest so far (the write lock keeps it
/// free until the commit). The one place outbox ids are allocated outside
/// the intake, so a backend with sequences can replace it.
async fn next_outbox_id(conn: &mut SqliteConnection) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(id), 0) + 1 FROM outbox")
            .fetch_one(conn)
            .await?,
    )
}

/// Queues one built mail in the outbox as row `id`, due at once.
fn queue_outgoing(
    s: &mut Script,
    id: i64,
    ticket: Option<i64>,
    kind: &str,
    out: &Outgoing,
    now: &str,
) {
    let recipients = serde_json::to_string(&out.to).unwrap_or_else(|_| "[]".into());
    let ps = [
        s.arg(id),
        s.arg(ticket),
        s.arg(kind),
        s.arg(recipients),
        s.arg(out.sender.as_str()),
        s.arg(out.subject.as_str()),
        s.arg(out.message_id.as_str()),
        s.arg(out.raw.as_slice()),
        s.arg(now),
    ];
    s.push(format_args!(
        "INSERT INTO outbox (id, ticket_id, kind, recipients, sender, subject, message_id, raw, status, next_attempt_at, created_at)
         VALUES ({}, {}, {}, {}, {}, {}, {}, {}, 'queued', {}, {})",
        ps[0], ps[1], ps[2], ps[3], ps[4], ps[5], ps[6], ps[7], ps[8], ps[8]
    ));
    s.end();
}

/// Appends articles of one ticket with ids `first`, `first + 1`, … in the
/// order given (`None`: ids as SQLite picks them).
fn articles(s: &mut Script, ticket: i64, first: Option<i64>, list: &[Article<'_>], now: &str) {
    let mut id = first;
    s.rows(
        "INSERT INTO articles (id, ticket_id, direction, kind, from_addr, from_name, to_addrs, cc_addrs, subject, message_id, body, message_ref, outbox_ref, created_at) VALUES ",
        list,
        "",
        |s, a| {
            let ps = [
                s.arg(id),
                s.arg(ticket),
                s.arg(a.direction),
                s.arg(a.kind),
                s.arg(a.from_addr),
                s.arg(a.from_name),
                s.arg(a.to_addrs.as_deref()),
                s.arg(a.cc_addrs.as_deref()),
                s.arg(a.subject),
                s.arg(a.message_id),
                s.arg(a.body),
                s.arg(a.message_ref),
                s.arg(a.outbox_ref),
                s.arg(now),
            ];
            id = id.map(|i| i + 1);
            let ps: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
            format!("({})", ps.join(", "))
        },
    );
}

/// Writes an intake plan, in one call: ticket or article, attachments,
/// ids, participants, bounces, notes, the audit events, the automatic mails
/// in the outbox, the incident, and the message's final record. `next`
/// comes from the [`claim`] of this message in this transaction. Writes
/// what it is given: every text, status, mail and a new ticket's SLA rows
/// were computed before.
pub async fn write_intake(
    conn: &mut SqliteConnection,
    next: NextIds,
    plan: &IntakePlan<'_>,
) -> Result<Applied, StoreError> {
    let mut s = Script::default();
    let now = plan.now;
    let message_row = plan.message_row;
    let (ticket_id, number, severity) = match &plan.ticket {
        TicketWrite::New(t) => {
            let id = next.ticket + 1;
            let v = s.arg(t.seq);
            s.push(format_args!(
                "INSERT INTO counters (name, value) VALUES ('ticket', {v})
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value"
            ));
            s.end();
            let ps = [
                s.arg(id),
                s.arg(t.number.as_str()),
                s.arg(t.subject),
                s.arg(t.severity.level() as i64),
                s.arg(t.rule),
                s.arg(t.requester.key()),
                s.arg(t.requester.name.as_deref()),
                s.arg(t.linked.map(|n| n.as_str())),
                s.arg(now),
                s.arg(t.organisation),
                s.arg(t.flags.as_deref()),
                s.arg(t.queue),
                s.arg(plan.arrived),
                s.arg(t.reply_to),
                s.arg(t.language),
            ];
            s.push(format_args!(
                "INSERT INTO tickets (id, number, subject, status, severity, severity_rule, requester, requester_name, linked_number, created_at, updated_at, organisation, flags, queue, arrived_at, reply_to, language)
                 VALUES ({}, {}, {}, 'new', {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                ps[0], ps[1], ps[2], ps[3], ps[4], ps[5], ps[6], ps[7], ps[8], ps[8], ps[9], ps[10], ps[11], ps[12], ps[13], ps[14]
            ));
            s.end();
            ticket_texts(
                &mut s,
                "INSERT INTO ticket_tags (ticket_id, tag) VALUES ",
                id,
                &t.tags,
            );
            ticket_texts(
                &mut s,
                "INSERT INTO participants (ticket_id, address) VALUES ",
                id,
                &t.participants,
            );
            // A new ticket's clock starts at the arrival of its first
            // message, with nothing in its history, and was evaluated by
            // the caller: its SLA rows go into this same script.
            if let Some(rows) = &t.sla {
                sla::write(&mut s, id, rows, true);
            }
            (Some(id), Some(t.number.clone()), Some(t.severity))
        }
        TicketWrite::Existing(u) => {
            let (at, id) = (s.arg(now), s.arg(u.id));
            let status = match u.status {
                Some(st) => format!("status = {}, ", s.arg(st.as_str())),
                None => String::new(),
            };
            let reply_to = match &u.reply_to {
                Some(r) => format!("reply_to = {}, ", s.arg(*r)),
                None => String::new(),
            };
            s.push(format_args!(
                "UPDATE tickets SET {status}{reply_to}updated_at = {at} WHERE id = {id} RETURNING 'severity', severity"
            ));
            s.end();
            ticket_texts(
                &mut s,
                "INSERT INTO participants (ticket_id, address) VALUES ",
                u.id,
                &u.new_participants,
            );
            (Some(u.id), Some(u.number.clone()), None)
        }
        TicketWrite::Nothing => (None, None, None),
    };
    let list: Vec<(&str, &str)> = plan.events.iter().map(|(k, d)| (*k, d.as_str())).collect();
    events(&mut s, ticket_id, Some(message_row), &list, now);

    s.rows(
        "INSERT INTO bounces (ticket_id, message_ref, recipient, action, status, diagnostic, created_at) VALUES ",
        &plan.bounces,
        "",
        |s, r| {
            let (t, m, rc, a, st, dg, at) = (
                s.arg(ticket_id),
                s.arg(message_row),
                s.arg(r.recipient.as_str()),
                s.arg(r.action),
                s.arg(r.status),
                s.arg(r.diagnostic),
                s.arg(now),
            );
            format!("({t}, {m}, {rc}, {a}, {st}, {dg}, {at})")
        },
    );

    let outbox_ids: Vec<i64> = (1..=plan.mails.len() as i64)
        .map(|i| next.outbox + i)
        .collect();
    for (q, id) in plan.mails.iter().zip(&outbox_ids) {
        queue_outgoing(&mut s, *id, ticket_id, q.kind, &q.mail, now);
        if q.counts_hourly {
            s.rows(
                "INSERT INTO auto_mail_log (recipient, sent_at) VALUES ",
                &q.mail.to,
                "",
                |s, r| {
                    let (r, at) = (s.arg(r.to_ascii_lowercase()), s.arg(now));
                    format!("({r}, {at})")
                },
            );
        }
    }

    if let (Some(c), Some(tid)) = (plan.incident, ticket_id) {
        let (k, t, st, tx, at) = (
            s.arg(c.key.as_str()),
            s.arg(tid),
            s.arg(c.state.as_str()),
            s.arg(c.text.as_str()),
            s.arg(now),
        );
        match c.event {
            IncidentEvent::Opened => s.push(format_args!(
                "INSERT INTO incidents (key, ticket_id, state, problem, occurrences, last_text, last_at)
                 VALUES ({k}, {t}, {st}, 1, 1, {tx}, {at})
                 ON CONFLICT (key) DO UPDATE SET ticket_id = excluded.ticket_id, state = excluded.state,
                   problem = 1, occurrences = 1, last_text = excluded.last_text, last_at = excluded.last_at,
                   recovered_at = NULL"
            )),
            IncidentEvent::Repeated | IncidentEvent::Reopened => s.push(format_args!(
                "UPDATE incidents SET occurrences = occurrences + 1, problem = 1, state = {st},
                   last_text = {tx}, last_at = {at}, recovered_at = NULL WHERE key = {k} AND ticket_id = {t}"
            )),
            IncidentEvent::Recovered => s.push(format_args!(
                "UPDATE incidents SET problem = 0, state = {st}, last_text = {tx}, last_at = {at},
                   recovered_at = {at} WHERE key = {k} AND ticket_id = {t}"
            )),
        }
        s.end();
        if let (IncidentEvent::Recovered, Some(due)) = (c.event, &c.resolve_at) {
            let due = s.arg(due.as_str());
            s.push(format_args!(
                "INSERT INTO timers (kind, ticket_id, key, due_at, created_at)
                 VALUES ('recovery-hold', {t}, {k}, {due}, {at})"
            ));
            s.end();
        }
    }

    // Attachments over one piece: their inline part goes in with the rest,
    // the other pieces after it (by the article and their order).
    let mut pieced: Option<Pieced<'_>> = None;
    if let (Some(w), Some(tid)) = (&plan.articles, ticket_id) {
        let a = &w.inbound;
        let mut list = Vec::with_capacity(1 + plan.mails.len() + w.notes.len());
        list.push(Article {
            direction: "in",
            kind: a.kind,
            from_addr: a.from_addr,
            from_name: a.from_name,
            to_addrs: a.to_addrs.clone(),
            cc_addrs: a.cc_addrs.clone(),
            subject: Some(a.subject),
            message_id: a.message_id,
            body: &a.body,
            message_ref: Some(message_row),
            outbox_ref: None,
        });
        for (q, id) in plan.mails.iter().zip(&outbox_ids) {
            list.push(Article::outgoing(q.kind, &q.mail, *id));
        }
        list.extend(w.notes.iter().map(|n| Article::note(n)));
        let inbound = next.article + 1;
        articles(&mut s, tid, Some(inbound), &list, now);
        s.rows(
            "INSERT INTO attachments (article_id, filename, content_type, size, sha256, content) VALUES ",
            &w.attachments,
            "",
            |s, a| {
                let (id, f, ct, sz, sh, c) = (
                    s.arg(inbound),
                    s.arg(a.filename),
                    s.arg(a.content_type),
                    s.arg(a.content.len() as i64),
                    s.arg(a.sha256.as_str()),
                    s.arg(inline_part(a.content)),
                );
                format!("({id}, {f}, {ct}, {sz}, {sh}, {c})")
            },
        );
        let big: Vec<(usize, &[u8])> = w
            .attachments
            .iter()
            .enumerate()
            .filter(|(_, a)| a.content.len() > RAW_CHUNK)
            .map(|(i, a)| (i, a.content))
            .collect();
        if !big.is_empty() {
            pieced = Some((inbound, big));
        }
        let mut ids = w.thread_ids.clone();
        ids.extend(plan.mails.iter().map(|q| q.mail.message_id.as_str()));
        ticket_texts(
            &mut s,
            "INSERT INTO thread_ids (ticket_id, message_id) VALUES ",
            tid,
            &ids,
        );
    }

    let o = &plan.outcome;
    let ps = [
        s.arg(o.action),
        s.arg(o.kind),
        s.arg(o.reason.as_str()),
        s.arg(ticket_id),
        s.arg(message_row),
    ];
    s.push(format_args!(
        "UPDATE messages SET action = {}, kind = {}, reason = {}, ticket_id = {} WHERE id = {}",
        ps[0], ps[1], ps[2], ps[3], ps[4]
    ));
    s.end();
    let rows = s.run(conn).await?;
    if let Some((article, big)) = pieced {
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM attachments WHERE article_id = $1 ORDER BY id")
                .bind(article)
                .fetch_all(&mut *conn)
                .await?;
        for (i, content) in big {
            let id = ids.get(i).copied().ok_or_else(|| {
                StoreError::Corrupt(format!("attachment {i} of article {article} not written"))
            })?;
            store_chunks(conn, "attachment", id, content).await?;
        }
    }
    let severity = match severity {
        Some(sev) => Some(sev),
        None => rows
            .iter()
            .find(|r| r.try_get::<&str, _>(0).is_ok_and(|l| l == "severity"))
            .map(|r| r.try_get::<i64, _>(1))
            .transpose()?
            .and_then(|v| Severity::try_from(v).ok()),
    };
    Ok(Applied {
        ticket: number,
        severity,
        ticket_id,
    })
}

fn summary_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<TicketSummary, sqlx::Error> {
    Ok(TicketSummary {
        number: r.try_get("number")?,
        subject: r.try_get("subject")?,
        status: r.try_get("status")?,
        severity: r.try_get("severity")?,
        requester: r.try_get("requester")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        article_count: r.try_get("article_count")?,
        linked_ticket: r.try_get("linked_number")?,
        organisation: r.try_get("organisation")?,
        flags: r
            .try_get::<Option<String>, _>("flags")?
            .map(|f| f.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        queue: r.try_get("queue")?,
        tags: r
            .try_get::<Option<String>, _>("tags")?
            .map(|f| f.split('\u{1f}').map(str::to_string).collect())
            .unwrap_or_default(),
    })
}

const SUMMARY_SELECT: &str = "SELECT t.id, t.number, t.subject, t.status, t.severity, t.requester, t.created_at, t.updated_at, t.linked_number, t.severity_rule, t.organisation, t.flags, t.queue, t.assignee_name,
  (SELECT group_concat(tag, char(31)) FROM (SELECT tag FROM ticket_tags g WHERE g.ticket_id = t.id ORDER BY tag)) AS tags,
  (SELECT COUNT(*) FROM articles a WHERE a.ticket_id = t.id) AS article_count FROM tickets t";

impl Store {
    /// All tickets, newest first.
    pub async fn list_tickets(&self) -> Result<Vec<TicketSummary>, StoreError> {
        let sql = format!("{SUMMARY_SELECT} ORDER BY t.id DESC");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(summary_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// One ticket with articles, attachments, participants and bounces.
    pub async fn show_ticket(&self, number: &str) -> Result<Option<TicketView>, StoreError> {
        let sql = format!("{SUMMARY_SELECT} WHERE t.number = $1");
        let Some(r) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(number)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let id: i64 = r.try_get("id")?;
        let summary = summary_from_row(&r)?;
        let arrived_at: String = sqlx::query_scalar(
            "SELECT COALESCE(arrived_at, created_at) FROM tickets WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        let severity_rule: Option<String> = r.try_get("severity_rule")?;
        let assignee: Option<String> = r.try_get("assignee_name")?;
        let reply_to: Option<String> =
            sqlx::query_scalar("SELECT reply_to FROM tickets WHERE id = $1")
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
        let linked_from: Vec<String> =
            sqlx::query_scalar("SELECT number FROM tickets WHERE linked_number = $1 ORDER BY id")
                .bind(&summary.number)
                .fetch_all(&self.pool)
                .await?;
        let participants: Vec<String> = sqlx::query_scalar(
            "SELECT address FROM participants WHERE ticket_id = $1 ORDER BY address",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let arts = sqlx::query(
            "SELECT a.id, a.direction, a.kind, a.from_addr, a.from_name, a.subject, a.message_id, a.body, a.created_at, m.arrived_at
             FROM articles a LEFT JOIN messages m ON m.id = a.message_ref AND a.direction = 'in' WHERE a.ticket_id = $1 ORDER BY a.id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let mut articles = Vec::new();
        for a in arts {
            let aid: i64 = a.try_get("id")?;
            let atts = sqlx::query(
                "SELECT id, filename, size, content_type FROM attachments WHERE article_id = $1 ORDER BY id",
            )
            .bind(aid)
            .fetch_all(&self.pool)
            .await?;
            articles.push(ArticleView {
                id: aid,
                direction: a.try_get("direction")?,
                kind: a.try_get("kind")?,
                from: a.try_get("from_addr")?,
                from_name: a.try_get("from_name")?,
                subject: a.try_get("subject")?,
                message_id: a.try_get("message_id")?,
                body: a.try_get("body")?,
                created_at: a.try_get("created_at")?,
                arrived_at: a.try_get("arrived_at")?,
                attachments: atts
                    .iter()
                    .map(|x| {
                        Ok(AttachmentInfo {
                            id: x.try_get("id")?,
                            filename: x.try_get("filename")?,
                            size: x.try_get("size")?,
                            content_type: x.try_get("content_type")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()?,
            });
        }
        let bounces = sqlx::query(
            "SELECT recipient, action, status, diagnostic, created_at FROM bounces WHERE ticket_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|b| {
            Ok(BounceView {
                recipient: b.try_get("recipient")?,
                action: b.try_get("action")?,
                status: b.try_get("status")?,
                diagnostic: b.try_get("diagnostic")?,
                created_at: b.try_get("created_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
        let incident = sqlx::query(
            "SELECT key, state, problem, occurrences, last_text, last_at FROM incidents WHERE ticket_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| -> Result<IncidentView, sqlx::Error> {
            Ok(IncidentView {
                key: r.try_get::<String, _>("key")?.replace('\u{1f}', "/"),
                state: r.try_get("state")?,
                problem: r.try_get::<i64, _>("problem")? != 0,
                occurrences: r.try_get("occurrences")?,
                last_text: r.try_get("last_text")?,
                last_at: r.try_get("last_at")?,
            })
        })
        .transpose()?;
        let events = sqlx::query_as::<_, (String, String, String)>(
            "SELECT kind, detail, created_at FROM events WHERE ticket_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|(kind, detail, created_at)| EventView {
            kind,
            detail,
            created_at,
        })
        .collect();
        Ok(Some(TicketView {
            summary,
            arrived_at,
            severity_rule,
            assignee,
            reply_to,
            linked_from,
            participants,
            articles,
            bounces,
            incident,
            events,
        }))
    }

    /// The outbox, oldest first.
    pub async fn list_outbox(&self) -> Result<Vec<OutboxView>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.id, t.number, o.kind, o.recipients, o.subject, o.message_id, o.status, o.attempts, o.next_attempt_at, o.last_error, o.created_at, o.sent_at, o.raw
             FROM outbox o LEFT JOIN tickets t ON t.id = o.ticket_id ORDER BY o.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let rcpts: String = r.try_get("recipients")?;
                let raw: Vec<u8> = r.try_get("raw")?;
                Ok(OutboxView {
                    id: r.try_get("id")?,
                    ticket: r.try_get("number")?,
                    kind: r.try_get("kind")?,
                    to: serde_json::from_str(&rcpts)
                        .map_err(|e| StoreError::Corrupt(format!("outbox recipients: {e}")))?,
                    subject: r.try_get("subject")?,
                    message_id: r.try_get("message_id")?,
                    status: r.try_get("status")?,
                    attempts: r.try_get("attempts")?,
                    next_attempt_at: Some(r.try_get::<String, _>("next_attempt_at")?)
                        .filter(|_| r.try_get::<&str, _>("status").is_ok_and(|s| s == "queued")),
                    last_error: r.try_get("last_error")?,
                    created_at: r.try_get("created_at")?,
                    sent_at: r.try_get("sent_at")?,
                    raw: String::from_utf8_lossy(&raw).into_owned(),
                })
            })
            .collect()
    }

    /// The outbox by status, for the metrics: one grouped count over the
    /// `(status, next_attempt_at)` index, read-only, so a scrape never waits
    /// for the write gate.
    pub async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        let mut stats = OutboxStats::default();
        for r in rows {
            let status: String = r.try_get("status")?;
            let n: i64 = r.try_get("n")?;
            match status.as_str() {
                "queued" => stats.queued = n,
                "sending" => stats.sending = n,
                "failed" => stats.failed = n,
                "sent" => stats.sent = n,
                // Cancelled by an admin (`outbox cancel`): never sent.
                "cancelled" => {}
                // A status this build does not know (a newer schema): not
                // a reason to fail the scrape.
                other => tracing::warn!(status = other, rows = n, "unknown outbox status"),
            }
        }
        Ok(stats)
    }

    /// The SLA figures for metrics: open tickets by state (index reads),
    /// breaches and reminders so far (counters kept by the timer task),
    /// chat posts queued.
    pub async fn sla_stats(&self) -> Result<crate::metrics::SlaStats, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let open_by_state = sla::state_counts(&mut conn, &ts(jiff::Timestamp::now())).await?;
        let counters: Vec<(String, i64)> = sqlx::query_as(
            "SELECT name, value FROM counters WHERE name IN ('sla-breaches', 'sla-reminders')",
        )
        .fetch_all(&mut *conn)
        .await?;
        let counter = |n: &str| counters.iter().find(|(k, _)| k == n).map_or(0, |(_, v)| *v);
        let (chat_queued, chat_failed): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM chat_outbox WHERE status = 'queued'),
                    (SELECT COUNT(*) FROM chat_outbox WHERE status = 'failed')",
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(crate::metrics::SlaStats {
            open_by_state,
            breaches: counter("sla-breaches"),
            reminders: counter("sla-reminders"),
            chat_queued,
            chat_failed,
        })
    }

    /// Quarantined messages, newest first.
    pub async fn list_quarantine(&self) -> Result<Vec<QuarantineView>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, reason, size, sha256, source, received_at FROM messages WHERE action = 'quarantined' ORDER BY id DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(QuarantineView {
                    id: r.try_get("id")?,
                    reason: r.try_get("reason")?,
                    size: r.try_get("size")?,
                    sha256: r.try_get("sha256")?,
                    source: r.try_get("source")?,
                    received_at: r.try_get("received_at")?,
                })
            })
            .collect()
    }

    /// The raw bytes of a stored message, whole (its inline part and its
    /// `raw_chunks`).
    pub async fn raw_message(&self, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        self.raw_of("message", id).await
    }

    /// The raw bytes of a recorded duplicate delivery, when they differed
    /// from the first one's.
    pub async fn raw_duplicate(&self, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        self.raw_of("duplicate", id).await
    }

    /// The decoded content of a stored attachment, whole.
    pub async fn attachment_content(&self, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        self.raw_of("attachment", id).await
    }

    /// The raw bytes of the stored message with this SHA-256 (of the whole
    /// raw message), if any.
    pub async fn raw_by_sha256(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM messages WHERE sha256 = $1 ORDER BY id LIMIT 1")
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await?;
        match id {
            Some(id) => self.raw_message(id).await,
            None => Ok(None),
        }
    }

    async fn raw_of(&self, kind: &str, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        let sql = match kind {
            "message" => "SELECT raw, size FROM messages WHERE id = $1",
            "attachment" => "SELECT content, size FROM attachments WHERE id = $1",
            _ => "SELECT raw, NULL FROM duplicates WHERE id = $1",
        };
        let Some((inline, size)): Option<(Option<Vec<u8>>, Option<i64>)> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(None);
        };
        let Some(mut raw) = inline else {
            return Ok(None);
        };
        if raw.len() < RAW_CHUNK {
            return Ok(Some(raw));
        }
        raw.reserve(
            usize::try_from(size.unwrap_or(0))
                .unwrap_or(0)
                .saturating_sub(raw.len()),
        );
        let mut rows = sqlx::query_scalar::<_, Vec<u8>>(
            "SELECT data FROM raw_chunks WHERE kind = $1 AND row_id = $2 ORDER BY seq",
        )
        .bind(kind)
        .bind(id)
        .fetch(&self.pool);
        use futures_util::TryStreamExt as _;
        while let Some(piece) = rows.try_next().await? {
            raw.extend_from_slice(&piece);
        }
        Ok(Some(raw))
    }

    /// Claims up to `limit` due mails (queued, due now, or `sending` whose
    /// claim expired after a crash), marking them `sending` until `lease`.
    pub async fn claim_due(
        &self,
        now: &str,
        lease_until: &str,
        limit: i64,
    ) -> Result<Vec<DueMail>, StoreError> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "UPDATE outbox SET status = 'sending', next_attempt_at = $2 WHERE id IN
               (SELECT id FROM outbox WHERE status IN ('queued', 'sending') AND next_attempt_at <= $1
                ORDER BY next_attempt_at, id LIMIT $3)
             RETURNING id, ticket_id, sender, recipients, raw, attempts, created_at",
        )
        .bind(now)
        .bind(lease_until)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let rcpts: String = r.try_get("recipients")?;
            out.push(DueMail {
                id: r.try_get("id")?,
                ticket_id: r.try_get("ticket_id")?,
                sender: r.try_get("sender")?,
                recipients: serde_json::from_str(&rcpts)
                    .map_err(|e| StoreError::Corrupt(format!("outbox recipients: {e}")))?,
                raw: r.try_get("raw")?,
                attempts: r.try_get("attempts")?,
                created_at: r.try_get("created_at")?,
            });
        }
        // Oldest first, as they were selected (RETURNING keeps no order).
        out.sort_by_key(|m| m.id);
        Ok(out)
    }

    /// The earliest time a queued mail becomes due, if any.
    pub async fn next_due(&self) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE status IN ('queued', 'sending')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Hands mails claimed by a worker that is gone back to the queue. Only
    /// for `run` at start: one daemon per data directory (the hand-over
    /// socket refuses a second), so a row still `sending` then was claimed
    /// by a process that died before recording the outcome; it is sent
    /// again now instead of when its lease ends.
    pub async fn release_leases(&self, now: &str) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE outbox SET status = 'queued', next_attempt_at = $1 WHERE status = 'sending'",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// When the next timer is due, if any is pending.
    pub async fn next_timer(&self) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT MIN(due_at) FROM timers WHERE fired_at IS NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The UID cursor of a mailbox's folder: `(uidvalidity, last_uid)`.
    pub async fn imap_cursor(
        &self,
        mailbox: &str,
        folder: &str,
    ) -> Result<Option<(u32, u32)>, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT uidvalidity, last_uid FROM imap_cursors WHERE mailbox = $1 AND folder = $2",
        )
        .bind(mailbox)
        .bind(folder)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(v, u)| (u32::try_from(v).unwrap_or(0), u32::try_from(u).unwrap_or(0))))
    }

    /// Records that every message of the folder up to `last_uid` (under
    /// `uidvalidity`) is stored.
    pub async fn set_imap_cursor(
        &self,
        mailbox: &str,
        folder: &str,
        uidvalidity: u32,
        last_uid: u32,
        now: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO imap_cursors (mailbox, folder, uidvalidity, last_uid, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (mailbox, folder) DO UPDATE SET
               uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid, updated_at = excluded.updated_at",
        )
        .bind(mailbox)
        .bind(folder)
        .bind(i64::from(uidvalidity))
        .bind(i64::from(last_uid))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets automatic-mail records older than `before` (the hourly limit
    /// only looks one hour back); returns how many were removed.
    pub async fn prune_auto_mail_log(&self, before: &str) -> Result<u64, StoreError> {
        self.write_one(sqlx::query("DELETE FROM auto_mail_log WHERE sent_at < $1").bind(before))
            .await
    }

    /// Whether the store takes writes, for `/healthz`: `Err` with the
    /// reason while the last commit failed (within the last minute and none
    /// succeeded since: a full disk fails messages, not a small probe), else
    /// the outcome of committing one small row (a read-only or vanished
    /// database with no traffic). Passes again by itself once the cause is
    /// gone.
    pub async fn probe_write(&self) -> Result<(), String> {
        if let Some((e, at)) = self.write_fault.lock().map(|f| f.clone()).unwrap_or(None) {
            if at.elapsed() < WRITE_FAULT_FRESH {
                return Err(format!(
                    "the last write failed {} s ago: {e}",
                    at.elapsed().as_secs()
                ));
            }
        }
        let probe = async {
            let mut conn = self.pool.acquire().await?;
            sqlx::query(
                "INSERT INTO counters (name, value) VALUES ('healthz', 1) \
                 ON CONFLICT (name) DO UPDATE SET value = counters.value + 1",
            )
            .execute(&mut *conn)
            .await?;
            Ok::<_, sqlx::Error>(())
        };
        probe.await.map_err(|e| StoreError::from(e).to_string())
    }

    /// Runs one statement in a write transaction of its own; returns how
    /// many rows it changed.
    pub(crate) async fn write_one(
        &self,
        q: sqlx::query::Query<'_, sqlx::Sqlite, <sqlx::Sqlite as sqlx::Database>::Arguments>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let n = q.execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// Records what became of delivery attempts, all in one transaction.
    pub async fn record_deliveries(
        &self,
        list: &[(&DueMail, Delivery)],
        now: &str,
    ) -> Result<(), StoreError> {
        if list.is_empty() {
            return Ok(());
        }
        let mut s = Script::default();
        for (m, d) in list {
            let id = s.arg(m.id);
            // A mail the transport accepted is sent, whatever happened to
            // its row meanwhile; a retry or a failure applies only to a row
            // still being sent, so a late outcome never brings back a row
            // an admin cancelled (`outbox cancel`).
            match d {
                Delivery::Sent => {
                    let at = s.arg(now);
                    s.push(format_args!(
                        "UPDATE outbox SET status = 'sent', attempts = attempts + 1, sent_at = {at}, last_error = NULL WHERE id = {id}"
                    ));
                    s.end();
                }
                Delivery::Chat { channel, body } => {
                    let at = s.arg(now);
                    s.push(format_args!(
                        "UPDATE outbox SET status = 'sent', attempts = attempts + 1, sent_at = {at}, last_error = 'posted in Discord' WHERE id = {id}"
                    ));
                    s.end();
                    queue_chat(&mut s, m.ticket_id, channel, "customer", body, now);
                }
                Delivery::Retry { error, next } => {
                    let (e, n) = (s.arg(error.as_str()), s.arg(next.as_str()));
                    s.push(format_args!(
                        "UPDATE outbox SET status = 'queued', attempts = attempts + 1, last_error = {e}, next_attempt_at = {n} WHERE id = {id} AND status = 'sending'"
                    ));
                    s.end();
                }
                Delivery::Failed { error } => {
                    let e = s.arg(error.as_str());
                    s.push(format_args!(
                        "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = {e} WHERE id = {id} AND status = 'sending'"
                    ));
                    s.end();
                    if let Some(t) = m.ticket_id {
                        let text = format!(
                            "Mail to {} could not be delivered: {error}",
                            m.recipients.join(", ")
                        );
                        articles(&mut s, t, None, &[Article::note(&text)], now);
                        events(&mut s, Some(t), None, &[("delivery-failed", &text)], now);
                    }
                }
            }
        }
        let mut tx = self.begin().await?;
        s.run(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The server accepted it.
    Sent,
    /// It was for a customer in Discord: posted into their thread instead,
    /// through the chat outbox (queued in the same transaction).
    Chat {
        /// The intake channel's configured name.
        channel: String,
        /// The chat outbox body (kind `customer`).
        body: serde_json::Value,
    },
    /// Try again at `next` (`ts` format).
    Retry {
        /// Why it failed this time.
        error: String,
        /// When to try again.
        next: String,
    },
    /// Given up; noted on the ticket.
    Failed {
        /// Why.
        error: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_sqlite(&dir.path().join("t.db"), 1)
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        (dir, store)
    }

    #[tokio::test]
    async fn script_shares_numbered_parameters_across_statements() {
        let (_dir, store) = store().await;
        let mut conn = store.pool().acquire().await.expect("conn");
        let mut s = Script::default();
        let (a, b) = (s.arg("x@example.test"), s.arg("2026-01-01T00:00:00.000Z"));
        s.push(format_args!(
            "INSERT INTO auto_mail_log (recipient, sent_at) VALUES ({a}, {b})"
        ));
        s.end();
        let c = s.arg("x@example.test");
        s.push(format_args!(
            "SELECT 'n', COUNT(*) FROM auto_mail_log WHERE recipient = {c}"
        ));
        s.end();
        let rows = s.run(&mut conn).await.expect("run");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].try_get::<i64, _>(1).expect("count"), 1);
    }

    #[tokio::test]
    async fn a_script_past_the_parameter_limit_is_split_between_statements() {
        // 40,000 rows of 2 parameters: 80,000 parameters, far past SQLite's
        // 32,766, as a mail with tens of thousands of Cc addresses needs.
        let (_dir, store) = store().await;
        let mut conn = store.pool().acquire().await.expect("conn");
        let addrs: Vec<String> = (0..40_000).map(|i| format!("u{i}@example.test")).collect();
        let mut s = Script::default();
        s.rows(
            "INSERT INTO auto_mail_log (recipient, sent_at) VALUES ",
            &addrs,
            "",
            |s, a| {
                let (r, at) = (s.arg(a.as_str()), s.arg("2026-01-01T00:00:00.000Z"));
                format!("({r}, {at})")
            },
        );
        assert!(s.parts.len() >= 2, "split into {} calls", s.parts.len() + 1);
        s.run(&mut conn).await.expect("run");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT recipient) FROM auto_mail_log")
            .fetch_one(&mut *conn)
            .await
            .expect("count");
        assert_eq!(n, 40_000);
    }

    #[tokio::test]
    async fn outbox_stats_count_rows_by_status() {
        let (_dir, store) = store().await;
        assert_eq!(
            store.outbox_stats().await.expect("stats"),
            OutboxStats::default()
        );
        let now = "2026-01-01T00:00:00.000Z";
        for (id, status) in [
            (1i64, "queued"),
            (2, "queued"),
            (3, "sending"),
            (4, "sent"),
            (5, "sent"),
            (6, "sent"),
            (7, "failed"),
        ] {
            sqlx::query(
                "INSERT INTO outbox (id, kind, recipients, sender, subject, message_id, raw, status, next_attempt_at, created_at)
                 VALUES ($1, 'confirmation', '[]', 'support@example.com', 's', $2, X'00', $3, $4, $4)",
            )
            .bind(id)
            .bind(format!("m{id}@example.com"))
            .bind(status)
            .bind(now)
            .execute(store.pool())
            .await
            .expect("outbox");
        }
        assert_eq!(
            store.outbox_stats().await.expect("stats"),
            OutboxStats {
                queued: 2,
                sending: 1,
                failed: 1,
                sent: 3
            }
        );
    }

    #[tokio::test]
    async fn delivery_outcomes_are_recorded_together_with_a_note_on_failure() {
        let (_dir, store) = store().await;
        let now = "2026-01-01T00:00:00.000Z";
        sqlx::query(
            "INSERT INTO tickets (id, number, subject, status, severity, requester, created_at, updated_at)
             VALUES (1, '10001', 's', 'new', 3, 'a@kunde.test', $1, $1)",
        )
        .bind(now)
        .execute(store.pool())
        .await
        .expect("ticket");
        for id in 1..=3i64 {
            sqlx::query(
                "INSERT INTO outbox (id, ticket_id, kind, recipients, sender, subject, message_id, raw, status, next_attempt_at, created_at)
                 VALUES ($1, 1, 'confirmation', '[\"a@kunde.test\"]', 'support@example.com', 's', $2, X'00', 'queued', $3, $3)",
            )
            .bind(id)
            .bind(format!("m{id}@example.com"))
            .bind(now)
            .execute(store.pool())
            .await
            .expect("outbox");
        }
        let due = store
            .claim_due("2026-01-01T00:00:01.000Z", "2026-01-01T00:05:01.000Z", 50)
            .await
            .expect("claim");
        assert_eq!(due.iter().map(|m| m.id).collect::<Vec<_>>(), [1, 2, 3]);
        // Claimed rows are leased: a second claim before the lease ends gets none.
        assert!(store
            .claim_due("2026-01-01T00:00:02.000Z", "2026-01-01T00:05:02.000Z", 50)
            .await
            .expect("claim")
            .is_empty());
        let outcomes = [
            (&due[0], Delivery::Sent),
            (
                &due[1],
                Delivery::Retry {
                    error: "451 try later".into(),
                    next: "2026-01-01T00:00:31.000Z".into(),
                },
            ),
            (
                &due[2],
                Delivery::Failed {
                    error: "550 no such user".into(),
                },
            ),
        ];
        store
            .record_deliveries(&outcomes, "2026-01-01T00:00:03.000Z")
            .await
            .expect("record");
        let rows: Vec<(i64, String, i64, Option<String>, String)> = sqlx::query_as(
            "SELECT id, status, attempts, last_error, next_attempt_at FROM outbox ORDER BY id",
        )
        .fetch_all(store.pool())
        .await
        .expect("rows");
        assert_eq!(rows[0].1, "sent");
        assert_eq!(rows[1].1, "queued");
        assert_eq!(rows[1].3.as_deref(), Some("451 try later"));
        assert_eq!(rows[1].4, "2026-01-01T00:00:31.000Z");
        assert_eq!(rows[2].1, "failed");
        assert!(rows.iter().all(|r| r.2 == 1));
        let view = store
            .show_ticket("10001")
            .await
            .expect("show")
            .expect("ticket");
        assert!(view
            .articles
            .iter()
            .any(|a| a.direction == "note" && a.body.contains("550 no such user")));
    }
}
