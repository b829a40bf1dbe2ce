//! `Script`: many statements with numbered parameters sent as one call
//! (SQLite runs them in order on one connection), split only past SQLite's
//! parameter limit. Every write of the intake is one script.

use super::*;

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
pub(super) struct Script {
    /// Finished parts, each one call.
    pub(super) parts: Vec<(String, SqliteArguments)>,
    pub(super) sql: String,
    pub(super) args: SqliteArguments,
    pub(super) count: usize,
    pub(super) error: Option<String>,
}

/// A bound parameter's placeholder, `$n`.
#[derive(Debug, Clone, Copy)]
pub(super) struct P(usize);

impl std::fmt::Display for P {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "${}", self.0)
    }
}

/// Rows per multi-row `INSERT … VALUES` and entries per `IN (…)` list.
pub(super) const ROWS_PER_STATEMENT: usize = 64;

/// Parameters per call: below SQLite's limit of 32,766 on `$n`, with room
/// for the widest statement (64 rows of 13 parameters).
pub(super) const PARAMS_PER_CALL: usize = 30_000;

impl Script {
    /// Binds `value` and returns its placeholder.
    pub(super) fn arg<'q, T>(&mut self, value: T) -> P
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
    pub(super) fn push(&mut self, text: std::fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        let _ = self.sql.write_fmt(text);
    }

    /// Ends a statement; starts a new call when this one has enough
    /// parameters.
    pub(super) fn end(&mut self) {
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
    pub(super) fn rows<T>(
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
    pub(super) fn list<T>(
        &mut self,
        items: &[T],
        mut f: impl FnMut(&mut Script, &T) -> P,
    ) -> String {
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
    pub(super) async fn run(
        mut self,
        conn: &mut SqliteConnection,
    ) -> Result<Vec<SqliteRow>, StoreError> {
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
