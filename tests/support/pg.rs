//! A fresh PostgreSQL database for each test, on the test server, dropped
//! afterwards.
//!
//! The server: `TICKETD_TEST_PG`, an admin URL (a role that may create
//! databases, and the database to connect to for that), e.g.
//! `postgres://postgres@127.0.0.1:5432/postgres`. scripts/test.sh always
//! sets it (an existing server on 127.0.0.1:5432, or a throw-away cluster of
//! its own: scripts/testpg.sh). Unset, a server answering on
//! 127.0.0.1:5432 is used as user `postgres`; when nothing answers there
//! either, [`TestDb::create`] prints `SKIPPED: no PostgreSQL` and gives
//! `None`, and the test returns.
//!
//! Include it from a test file with `#[path]` (like the other support
//! files):
//!
//! ```ignore
//! #[path = "support/pg.rs"]
//! mod pg;
//!
//! #[tokio::test]
//! async fn stores_a_ticket() {
//!     let Some(db) = pg::TestDb::create("stores_a_ticket").await else {
//!         return; // SKIPPED: no PostgreSQL
//!     };
//!     let pool = db.pool().await;
//!     // … `db.url()` for a daemon's configuration …
//! } // `db` drops: the database goes, also when the test panicked
//! ```
//!
//! Each database has a name of its own (`ticketd_test_<label>_<pid>_<n>`),
//! so tests run in parallel, in several processes and worktrees, against one
//! server.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};

/// The variable naming the test server's admin URL.
pub const ENV: &str = "TICKETD_TEST_PG";

/// What is tried when [`ENV`] is unset: the local server, as its superuser.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The admin URL of the test server: [`ENV`] when set; else
/// [`DEFAULT_ADMIN_URL`] when something accepts connections on
/// 127.0.0.1:5432; else `None` (no PostgreSQL here).
pub fn admin_url() -> Option<String> {
    if let Some(url) = std::env::var(ENV).ok().filter(|v| !v.trim().is_empty()) {
        return Some(url.trim().to_string());
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], 5432));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .ok()
        .map(|_| DEFAULT_ADMIN_URL.to_string())
}

/// A database of one test's own; dropping it drops the database (with
/// `WITH (FORCE)`, so connections a pool still holds do not stop that).
pub struct TestDb {
    name: String,
    admin_url: String,
    url: String,
}

impl TestDb {
    /// Creates an empty database for the test `label` (letters, digits and
    /// `_` of it go into the name); `None` after printing `SKIPPED: no
    /// PostgreSQL` when there is no server (see [`admin_url`]). Panics when
    /// the server is there but refuses: a set `TICKETD_TEST_PG` that does
    /// not work is a broken setup, not a reason to skip.
    pub async fn create(label: &str) -> Option<TestDb> {
        let Some(admin_url) = admin_url() else {
            println!(
                "SKIPPED: no PostgreSQL ({ENV} unset and nothing answers on 127.0.0.1:5432; \
                 scripts/test.sh provides one)"
            );
            return None;
        };
        let name = unique_name(label);
        let mut admin = connect_admin(&admin_url).await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'"
        )))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {}: {e}", redact(&admin_url)));
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        Some(TestDb {
            name,
            admin_url,
            url,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL for the database (the admin URL with the database replaced),
    /// e.g. for a daemon's configuration.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connection options for the database, without statement logging.
    pub fn options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(&self.admin_url)
            .unwrap_or_else(|e| panic!("{ENV}: {e}"))
            .database(&self.name)
            .disable_statement_logging()
    }

    /// A small pool on the database.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(self.options())
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.name))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop cannot await, and may run inside the test's runtime (where
        // blocking on it would panic): a thread with a runtime of its own.
        let name = self.name.clone();
        let admin_url = self.admin_url.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let opts = PgConnectOptions::from_str(&admin_url)
                    .map_err(|e| e.to_string())?
                    .disable_statement_logging();
                let mut admin = PgConnection::connect_with(&opts)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
                .map_err(|e| e.to_string())?;
                let _ = admin.close().await;
                Ok::<_, String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            // No panic here: during a test's panic that would abort the
            // process and hide the test's own message.
            Ok(Err(e)) => eprintln!("pg: could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("pg: dropping test database {} panicked", self.name),
        }
    }
}

async fn connect_admin(admin_url: &str) -> PgConnection {
    let opts = PgConnectOptions::from_str(admin_url)
        .unwrap_or_else(|e| panic!("{ENV}={}: {e}", redact(admin_url)))
        .disable_statement_logging();
    PgConnection::connect_with(&opts)
        .await
        .unwrap_or_else(|e| panic!("no PostgreSQL at {} ({ENV}): {e}", redact(admin_url)))
}

/// `ticketd_test_<label>_<pid>_<n>`, at most 63 bytes (PostgreSQL's limit
/// for a name), only `[a-z0-9_]` so it needs no quoting rules beyond "…".
fn unique_name(label: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    // the time too: a pid is reused, and a killed run leaves its databases
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() % 1_000_000);
    let suffix = format!("_{}_{n}_{t}", std::process::id());
    let mut clean: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    clean.truncate(63 - "ticketd_test_".len() - suffix.len());
    format!("ticketd_test_{clean}{suffix}")
}

/// `url` with its database (the path) replaced by `db`; the query string
/// (sslmode …) is kept.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let mut out = format!("{}/{db}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The URL without a password, for messages.
fn redact(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[start..];
    let Some(at) = rest.find('@') else {
        return url.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{}{user}:***{}", &url[..start], &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_replaced_in_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=require", "x"),
            "postgres://u:p@h/x?sslmode=require"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
        assert_eq!(redact("postgres://u:p@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn names_are_unique_and_short() {
        let long = "x".repeat(100);
        let a = unique_name(&long);
        let b = unique_name(&long);
        assert_ne!(a, b);
        assert!(a.len() <= 63, "{a}");
        assert!(unique_name("Schema Parity!").starts_with("ticketd_test_schema_parity__"));
    }
}
