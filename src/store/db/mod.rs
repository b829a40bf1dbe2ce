//! One backend-neutral layer over SQLite and PostgreSQL, so that the store's
//! SQL is written once and runs on both (issue 16).
//!
//! The shape is sqlx's, so converting store code is mostly a rename
//! (`sqlx::query` → `db::query`, `&mut SqliteConnection` → `&mut impl
//! AsConn`); what differs is hidden here:
//!
//! - [`Pool`], [`Conn`], [`Tx`]: a pool chosen at run time from a URL, its
//!   connections and write transactions; none of them names a backend.
//! - `value`: [`Value`], what is bound. A timestamp ([`Value::Ts`], bound
//!   with [`Query::bind_ts`]) is the `ts()` text on SQLite and a real
//!   `timestamptz` on PostgreSQL; a boolean is 0/1 on SQLite and `boolean`
//!   on PostgreSQL; a NULL is untyped on PostgreSQL, so the server infers
//!   the column's type.
//! - `row`: [`Row`], decoded by each column's actual type, so that
//!   `try_get::<String, _>` on a `timestamptz` gives exactly the `ts()` text
//!   and a boolean reads as `bool` or as 0/1 on both backends.
//! - `query`: [`query`], [`query_scalar`], [`query_as`] and [`Script`]
//!   (several statements: one call on SQLite, one by one on PostgreSQL).
//! - `dialect`: [`Dialect`], the few SQL spellings that differ.
//! - `transient`: [`is_transient`] and [`retry`], for serialization
//!   failures, deadlocks, a busy SQLite and lost connections.
//!
//! # Converting store code
//!
//! ```ignore
//! // before: SQLite only
//! async fn due(conn: &mut SqliteConnection, now: &str) -> Result<Vec<(i64, String)>, StoreError> {
//!     Ok(sqlx::query_as::<_, (i64, String)>("SELECT id, due_at FROM timers WHERE due_at <= $1")
//!         .bind(now)
//!         .fetch_all(&mut *conn)
//!         .await?)
//! }
//! // after: both backends
//! async fn due(conn: &mut impl AsConn, now: &str) -> Result<Vec<(i64, String)>, StoreError> {
//!     Ok(db::query_as::<(i64, String)>("SELECT id, due_at FROM timers WHERE due_at <= $1")
//!         .bind_ts(now)
//!         .fetch_all(conn)
//!         .await?)
//! }
//! ```
//!
//! - `sqlx::query` → `db::query`; `query_as::<_, T>` → `query_as::<T>`;
//!   `query_scalar::<_, T>` → `query_scalar::<T>`; `row.try_get::<T, _>(i)`
//!   stays; errors stay `sqlx::Error`, so `?` into `StoreError` still works.
//! - Every value for a `*_at` column (written or compared) is bound with
//!   `bind_ts` (text or `jiff::Timestamp`); PostgreSQL refuses `text` there.
//! - Flags are bound as `bool` (`bind(true)`), not `1`; literals in SQL come
//!   from [`Dialect::bool_lit`]. They read back as `bool` or 0/1.
//! - Several statements in one `query` (SQLite only) become a [`Script`]
//!   of one [`Query`] each, with its own `$1…`.
//! - A function taking `&mut SqliteConnection` takes `&mut impl AsConn`;
//!   while callers are converted, today's `&mut *tx` is accepted as is.

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{PgConnection, SqliteConnection};
use std::str::FromStr;
use std::time::Duration;

mod dialect;
mod query;
mod row;
mod transient;
mod value;

pub use dialect::Dialect;
pub use query::{
    execute_many, query, query_as, query_scalar, Query, QueryAs, QueryResult, QueryScalar, Script,
};
pub use row::{ColumnIndex, FromRow, FromValue, Row, ValueRef};
pub use transient::{is_transient, retry, Transient};
pub use value::{IntoTs, Value};

/// Which database a [`Pool`] talks to; the same as its [`Dialect`].
pub type Backend = Dialect;

impl Dialect {
    /// The backend a database URL names: `sqlite:…` / `sqlite://…`, or
    /// `postgres://…` / `postgresql://…`; `None` for anything else.
    pub fn from_url(url: &str) -> Option<Dialect> {
        let scheme = url.split_once(':')?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Some(Dialect::Sqlite),
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            _ => None,
        }
    }
}

/// A pool of connections to either backend, chosen at run time.
#[derive(Debug, Clone)]
pub struct Pool(PoolInner);

#[derive(Debug, Clone)]
enum PoolInner {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Pool {
    /// Opens a pool for `url` (see [`Dialect::from_url`]). SQLite gets what
    /// the daemon's store uses: the file created if missing, WAL,
    /// `synchronous = FULL`, foreign keys and a 30 s busy timeout.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Pool, sqlx::Error> {
        match Dialect::from_url(url) {
            Some(Dialect::Sqlite) => {
                let opts = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(30))
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(max_connections)
                    .min_connections(0)
                    .connect_with(opts)
                    .await?;
                Ok(Pool(PoolInner::Sqlite(pool)))
            }
            Some(Dialect::Postgres) => {
                let opts = PgConnectOptions::from_str(url)?;
                let pool = PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(opts)
                    .await?;
                Ok(Pool(PoolInner::Postgres(pool)))
            }
            None => Err(sqlx::Error::Configuration(
                format!(
                    "unsupported database URL scheme in {:?}: use sqlite:… or postgres://…",
                    url.split_once(':').map_or(url, |(s, _)| s)
                )
                .into(),
            )),
        }
    }

    /// Wraps an SQLite pool opened elsewhere (the store's own, with its
    /// pragmas), for the edge that builds it.
    pub fn from_sqlite(pool: SqlitePool) -> Pool {
        Pool(PoolInner::Sqlite(pool))
    }

    /// Wraps a PostgreSQL pool opened elsewhere (tests, tools).
    pub fn from_postgres(pool: PgPool) -> Pool {
        Pool(PoolInner::Postgres(pool))
    }

    /// The backend, for SQL that differs ([`Dialect`]).
    pub fn dialect(&self) -> Dialect {
        match self.0 {
            PoolInner::Sqlite(_) => Dialect::Sqlite,
            PoolInner::Postgres(_) => Dialect::Postgres,
        }
    }

    /// A connection from the pool (autocommit: each statement on its own).
    pub async fn acquire(&self) -> Result<Conn, sqlx::Error> {
        Ok(Conn(match &self.0 {
            PoolInner::Sqlite(p) => ConnInner::Sqlite(p.acquire().await?),
            PoolInner::Postgres(p) => ConnInner::Postgres(p.acquire().await?),
        }))
    }

    /// Begins a write transaction on a connection of its own: `BEGIN
    /// IMMEDIATE` on SQLite (the write lock at once, so the reads of the
    /// transaction see the state its writes change), `BEGIN` on PostgreSQL
    /// (READ COMMITTED; conflicting writers wait on row locks).
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Tx::begin(self.acquire().await?).await
    }

    /// Closes the pool: waits for connections in use to come back.
    pub async fn close(&self) {
        match &self.0 {
            PoolInner::Sqlite(p) => p.close().await,
            PoolInner::Postgres(p) => p.close().await,
        }
    }
}

/// A connection taken from a [`Pool`]; back to the pool when dropped.
#[derive(Debug)]
pub struct Conn(ConnInner);

#[derive(Debug)]
enum ConnInner {
    Sqlite(PoolConnection<sqlx::Sqlite>),
    Postgres(PoolConnection<sqlx::Postgres>),
}

impl Conn {
    /// The backend of this connection.
    pub fn dialect(&self) -> Dialect {
        match self.0 {
            ConnInner::Sqlite(_) => Dialect::Sqlite,
            ConnInner::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Closes the connection when it is dropped instead of returning it to
    /// the pool (its state is unknown: an interrupted transaction).
    fn close_on_drop(&mut self) {
        match &mut self.0 {
            ConnInner::Sqlite(c) => c.close_on_drop(),
            ConnInner::Postgres(c) => c.close_on_drop(),
        }
    }
}

/// A write transaction; statements run on it through [`AsConn`].
///
/// `BEGIN`, `COMMIT` and `ROLLBACK` are plain statements, as in the store's
/// `Tx` (see there why not `sqlx::Transaction`): a transaction that did
/// not end cleanly (dropped, or a failed commit) closes its connection, and
/// closing rolls back, so no later user inherits a half-open transaction.
#[derive(Debug)]
pub struct Tx {
    conn: Conn,
    done: bool,
}

impl Tx {
    /// Begins a transaction on `conn` (see [`Pool::begin`]).
    pub async fn begin(mut conn: Conn) -> Result<Tx, sqlx::Error> {
        let sql = conn.dialect().begin();
        if let Err(e) = query(sql).execute(&mut conn).await {
            conn.close_on_drop();
            return Err(e);
        }
        Ok(Tx { conn, done: false })
    }

    /// The backend of this transaction.
    pub fn dialect(&self) -> Dialect {
        self.conn.dialect()
    }

    /// Commits. On failure the transaction is rolled back (if the database
    /// has not already done so) and the connection discarded.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        match query("COMMIT").execute(&mut self.conn).await {
            Ok(_) => {
                self.done = true;
                Ok(())
            }
            Err(e) => {
                let _ = query("ROLLBACK").execute(&mut self.conn).await;
                Err(e)
            }
        }
    }

    /// Rolls back.
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        query("ROLLBACK").execute(&mut self.conn).await?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Tx {
    /// Not committed or rolled back cleanly: the connection is closed,
    /// which rolls back whatever is open.
    fn drop(&mut self) {
        if !self.done {
            self.conn.close_on_drop();
        }
    }
}

/// A borrowed connection of either backend: what a query runs on.
pub struct ConnRef<'c>(ConnRefInner<'c>);

enum ConnRefInner<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl ConnRef<'_> {
    /// The backend of the connection.
    pub fn dialect(&self) -> Dialect {
        match self.0 {
            ConnRefInner::Sqlite(_) => Dialect::Sqlite,
            ConnRefInner::Postgres(_) => Dialect::Postgres,
        }
    }
}

/// Where one query runs: a connection or transaction (anything
/// [`AsConn`], passed as `&mut`), or a `&`[`Pool`], which lends a
/// connection for that one statement (as sqlx's `&pool` does).
pub struct Target<'c>(TargetInner<'c>);

enum TargetInner<'c> {
    Conn(ConnRef<'c>),
    Pool(&'c Pool),
}

impl<'c, C: AsConn + ?Sized> From<&'c mut C> for Target<'c> {
    fn from(c: &'c mut C) -> Target<'c> {
        Target(TargetInner::Conn(c.conn_ref()))
    }
}

impl<'c> From<&'c Pool> for Target<'c> {
    fn from(p: &'c Pool) -> Target<'c> {
        Target(TargetInner::Pool(p))
    }
}

/// Whatever a query can run on: a [`Conn`], a [`Tx`], or (while the store
/// is converted) a bare sqlx connection such as `&mut *tx` of today's
/// store transaction.
pub trait AsConn: Send {
    /// The connection to run a statement on.
    fn conn_ref(&mut self) -> ConnRef<'_>;

    /// The backend, for SQL that differs ([`Dialect`]).
    fn dialect(&mut self) -> Dialect {
        self.conn_ref().dialect()
    }
}

impl AsConn for Conn {
    fn conn_ref(&mut self) -> ConnRef<'_> {
        ConnRef(match &mut self.0 {
            ConnInner::Sqlite(c) => ConnRefInner::Sqlite(c),
            ConnInner::Postgres(c) => ConnRefInner::Postgres(c),
        })
    }
}

impl AsConn for Tx {
    fn conn_ref(&mut self) -> ConnRef<'_> {
        self.conn.conn_ref()
    }
}

impl AsConn for SqliteConnection {
    fn conn_ref(&mut self) -> ConnRef<'_> {
        ConnRef(ConnRefInner::Sqlite(self))
    }
}

impl AsConn for PgConnection {
    fn conn_ref(&mut self) -> ConnRef<'_> {
        ConnRef(ConnRefInner::Postgres(self))
    }
}

impl AsConn for ConnRef<'_> {
    fn conn_ref(&mut self) -> ConnRef<'_> {
        ConnRef(match &mut self.0 {
            ConnRefInner::Sqlite(c) => ConnRefInner::Sqlite(c),
            ConnRefInner::Postgres(c) => ConnRefInner::Postgres(c),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_from_url() {
        assert_eq!(Dialect::from_url("sqlite:data/t.db"), Some(Dialect::Sqlite));
        assert_eq!(Dialect::from_url("sqlite://t.db"), Some(Dialect::Sqlite));
        assert_eq!(
            Dialect::from_url("postgres://u@h/db"),
            Some(Dialect::Postgres)
        );
        assert_eq!(
            Dialect::from_url("PostgreSQL://u@h/db"),
            Some(Dialect::Postgres)
        );
        assert_eq!(Dialect::from_url("mysql://h/db"), None);
        assert_eq!(Dialect::from_url("t.db"), None);
    }
}
