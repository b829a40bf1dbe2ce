//! The database: it writes what it is given and reads what is asked.
//!
//! Nothing here decides, evaluates a policy or renders a mail: the pipeline
//! computes a plan ([`crate::plan`]) before the write, and the store writes
//! it in one transaction and returns the ids it got. SQL goes through
//! `sqlx::query` with bound `$n` parameters and portable SQL (`ON
//! CONFLICT`, `RETURNING`) wherever SQLite and PostgreSQL agree.
//!
//! One idea per file:
//! - this file: [`Store`] (open, migrate, the write transaction [`Tx`]),
//!   [`StoreError`], the `ts` time format;
//! - `script`: many statements as one call;
//! - `rows`: the rows several writers share (events, articles, queued mail);
//! - `intake`: a message's [`claim`] and the write of its plan
//!   ([`write_intake`]) — two calls to the database per message;
//! - [`actions`]: staff actions; [`timers`]: due timers and their plans;
//!   [`sla`]: SLA rows and the reads of the SLA views; [`chat`]: the chat
//!   feed, outbox and threads; `outbox`: the mail outbox;
//! - `views`: what the command line reads; [`admin`]: its admin writes;
//! - `cursors`, [`graph`]: where the IMAP and Graph sources resume;
//!   [`oauth`]: stored grants; `secrets`: secrets every process shares.

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
mod cursors;
pub mod db;
pub mod graph;
mod intake;
pub mod oauth;
mod outbox;
mod rows;
mod script;
mod secrets;
pub mod sla;
pub mod timers;
mod views;

pub use intake::*;
pub use outbox::*;
use rows::*;
use script::*;
pub use timers::{FiredTimer, ResolvedTicket};
pub use views::*;

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
    /// The same pool behind the backend-neutral layer ([`db`]): the store's
    /// SQL moves onto it file by file, so that it runs on PostgreSQL too.
    db: db::Pool,
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
            db: db::Pool::from_sqlite(pool.clone()),
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

impl Store {
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
