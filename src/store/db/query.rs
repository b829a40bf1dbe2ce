//! The query builder ([`query`], [`query_scalar`], [`query_as`]) and
//! [`Script`], several statements in one go.
//!
//! A query is built without knowing the backend and bound to it when it
//! runs: the SQL is written once with `$1…` placeholders, and each
//! [`Value`] is sent in the form its backend wants.

use super::row::{FromRow, FromValue, Row};
use super::value::{IntoTs, Value};
use super::{AsConn, ConnRef, ConnRefInner, Target, TargetInner};
use sqlx::postgres::PgArguments;
use sqlx::sqlite::SqliteArguments;
use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};
use std::marker::PhantomData;

/// A statement with its bound values, run on any [`AsConn`].
#[derive(Debug, Clone)]
pub struct Query {
    sql: SqlStr,
    args: Vec<Value>,
    /// The first value that could not be bound (a text that is not a
    /// timestamp): reported when the query runs, as sqlx does.
    error: Option<String>,
}

/// Starts a query: `sql` is a `&'static str`, or SQL built at run time
/// wrapped in `sqlx::AssertSqlSafe` (values are always bound, never
/// formatted in).
pub fn query(sql: impl SqlSafeStr) -> Query {
    Query {
        sql: sql.into_sql_str(),
        args: Vec::new(),
        error: None,
    }
}

/// Starts a query whose rows are read as one value each: the first column
/// as `T` (`SELECT COUNT(*) …`).
pub fn query_scalar<T>(sql: impl SqlSafeStr) -> QueryScalar<T> {
    QueryScalar {
        query: query(sql),
        _t: PhantomData,
    }
}

/// Starts a query whose rows are read as `T`, a tuple of column types.
pub fn query_as<T: FromRow>(sql: impl SqlSafeStr) -> QueryAs<T> {
    QueryAs {
        query: query(sql),
        _t: PhantomData,
    }
}

/// What a statement that returns no rows did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryResult {
    rows_affected: u64,
}

impl QueryResult {
    /// How many rows the statement inserted, changed or deleted.
    pub fn rows_affected(&self) -> u64 {
        self.rows_affected
    }
}

impl Query {
    /// Binds the next `$n` to `value` (integers, floats, booleans, text,
    /// bytes, `Option`s of them for NULL; a `jiff::Timestamp` binds as
    /// [`Query::bind_ts`] does).
    pub fn bind(mut self, value: impl Into<Value>) -> Query {
        self.args.push(value.into());
        self
    }

    /// Binds the next `$n` to an instant: a `jiff::Timestamp`, or its text
    /// (`ts()` form). Every value written to or compared with a `*_at`
    /// column must be bound this way: PostgreSQL refuses `text` there.
    pub fn bind_ts(mut self, value: impl IntoTs) -> Query {
        match value.into_ts() {
            Ok(v) => self.args.push(v),
            Err(e) => {
                self.error.get_or_insert(e);
                self.args.push(Value::Null);
            }
        }
        self
    }

    /// The SQL text.
    pub fn sql(&self) -> &str {
        self.sql.as_str()
    }

    /// The values bound so far.
    pub fn values(&self) -> &[Value] {
        &self.args
    }

    fn check(&self) -> Result<(), sqlx::Error> {
        match &self.error {
            Some(e) => Err(sqlx::Error::Encode(e.clone().into())),
            None => Ok(()),
        }
    }

    fn into_sqlite(self) -> Result<(SqlStr, SqliteArguments), sqlx::Error> {
        self.check()?;
        let mut args = SqliteArguments::default();
        for v in self.args {
            v.add_sqlite(&mut args).map_err(sqlx::Error::Encode)?;
        }
        Ok((self.sql, args))
    }

    fn pg_args(&self) -> Result<PgArguments, sqlx::Error> {
        self.check()?;
        let mut args = PgArguments::default();
        for v in &self.args {
            v.add_postgres(&mut args).map_err(sqlx::Error::Encode)?;
        }
        Ok(args)
    }

    /// Runs a statement; how many rows it changed.
    pub async fn execute<'c>(self, on: impl Into<Target<'c>>) -> Result<QueryResult, sqlx::Error> {
        match on.into().0 {
            TargetInner::Conn(c) => self.execute_on(c).await,
            TargetInner::Pool(p) => self.execute_on(p.acquire().await?.conn_ref()).await,
        }
    }

    async fn execute_on(self, conn: ConnRef<'_>) -> Result<QueryResult, sqlx::Error> {
        let rows_affected = match conn.0 {
            ConnRefInner::Sqlite(c) => {
                let (sql, args) = self.into_sqlite()?;
                sqlx::query_with(sql, args)
                    .execute(&mut *c)
                    .await?
                    .rows_affected()
            }
            ConnRefInner::Postgres(c) => {
                let args = self.pg_args()?;
                sqlx::query_with(self.sql, args)
                    .execute(&mut *c)
                    .await?
                    .rows_affected()
            }
        };
        Ok(QueryResult { rows_affected })
    }

    /// Runs a query; all its rows.
    pub async fn fetch_all<'c>(self, on: impl Into<Target<'c>>) -> Result<Vec<Row>, sqlx::Error> {
        match on.into().0 {
            TargetInner::Conn(c) => self.fetch_all_on(c).await,
            TargetInner::Pool(p) => self.fetch_all_on(p.acquire().await?.conn_ref()).await,
        }
    }

    async fn fetch_all_on(self, conn: ConnRef<'_>) -> Result<Vec<Row>, sqlx::Error> {
        match conn.0 {
            ConnRefInner::Sqlite(c) => {
                let (sql, args) = self.into_sqlite()?;
                let rows = sqlx::query_with(sql, args).fetch_all(&mut *c).await?;
                Ok(rows.iter().map(Row::from_sqlite).collect())
            }
            ConnRefInner::Postgres(c) => {
                let args = self.pg_args()?;
                let rows = sqlx::query_with(self.sql, args).fetch_all(&mut *c).await?;
                Ok(rows.iter().map(Row::from_postgres).collect())
            }
        }
    }

    /// Runs a query; its first row, if any.
    pub async fn fetch_optional<'c>(
        self,
        on: impl Into<Target<'c>>,
    ) -> Result<Option<Row>, sqlx::Error> {
        match on.into().0 {
            TargetInner::Conn(c) => self.fetch_optional_on(c).await,
            TargetInner::Pool(p) => self.fetch_optional_on(p.acquire().await?.conn_ref()).await,
        }
    }

    async fn fetch_optional_on(self, conn: ConnRef<'_>) -> Result<Option<Row>, sqlx::Error> {
        match conn.0 {
            ConnRefInner::Sqlite(c) => {
                let (sql, args) = self.into_sqlite()?;
                let row = sqlx::query_with(sql, args).fetch_optional(&mut *c).await?;
                Ok(row.as_ref().map(Row::from_sqlite))
            }
            ConnRefInner::Postgres(c) => {
                let args = self.pg_args()?;
                let row = sqlx::query_with(self.sql, args)
                    .fetch_optional(&mut *c)
                    .await?;
                Ok(row.as_ref().map(Row::from_postgres))
            }
        }
    }

    /// Runs a query; its first row (`sqlx::Error::RowNotFound` when none).
    pub async fn fetch_one<'c>(self, on: impl Into<Target<'c>>) -> Result<Row, sqlx::Error> {
        self.fetch_optional(on)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }
}

/// A [`Query`] whose rows are read as their first column ([`query_scalar`]).
#[derive(Debug, Clone)]
pub struct QueryScalar<T> {
    query: Query,
    _t: PhantomData<fn() -> T>,
}

impl<T: for<'r> FromValue<'r>> QueryScalar<T> {
    /// See [`Query::bind`].
    pub fn bind(mut self, value: impl Into<Value>) -> Self {
        self.query = self.query.bind(value);
        self
    }

    /// See [`Query::bind_ts`].
    pub fn bind_ts(mut self, value: impl IntoTs) -> Self {
        self.query = self.query.bind_ts(value);
        self
    }

    /// The first column of every row.
    pub async fn fetch_all<'c>(self, on: impl Into<Target<'c>>) -> Result<Vec<T>, sqlx::Error> {
        let rows = self.query.fetch_all(on).await?;
        rows.iter().map(|r| r.try_get::<T, usize>(0)).collect()
    }

    /// The first column of the first row, if there is a row.
    pub async fn fetch_optional<'c>(
        self,
        on: impl Into<Target<'c>>,
    ) -> Result<Option<T>, sqlx::Error> {
        match self.query.fetch_optional(on).await? {
            Some(r) => Ok(Some(r.try_get::<T, usize>(0)?)),
            None => Ok(None),
        }
    }

    /// The first column of the first row (`RowNotFound` when none).
    pub async fn fetch_one<'c>(self, on: impl Into<Target<'c>>) -> Result<T, sqlx::Error> {
        self.query.fetch_one(on).await?.try_get::<T, usize>(0)
    }
}

/// A [`Query`] whose rows are read as `T` ([`query_as`]).
#[derive(Debug, Clone)]
pub struct QueryAs<T> {
    query: Query,
    _t: PhantomData<fn() -> T>,
}

impl<T: FromRow> QueryAs<T> {
    /// See [`Query::bind`].
    pub fn bind(mut self, value: impl Into<Value>) -> Self {
        self.query = self.query.bind(value);
        self
    }

    /// See [`Query::bind_ts`].
    pub fn bind_ts(mut self, value: impl IntoTs) -> Self {
        self.query = self.query.bind_ts(value);
        self
    }

    /// Every row.
    pub async fn fetch_all<'c>(self, on: impl Into<Target<'c>>) -> Result<Vec<T>, sqlx::Error> {
        let rows = self.query.fetch_all(on).await?;
        rows.iter().map(T::from_row).collect()
    }

    /// The first row, if any.
    pub async fn fetch_optional<'c>(
        self,
        on: impl Into<Target<'c>>,
    ) -> Result<Option<T>, sqlx::Error> {
        match self.query.fetch_optional(on).await? {
            Some(r) => Ok(Some(T::from_row(&r)?)),
            None => Ok(None),
        }
    }

    /// The first row (`RowNotFound` when none).
    pub async fn fetch_one<'c>(self, on: impl Into<Target<'c>>) -> Result<T, sqlx::Error> {
        T::from_row(&self.query.fetch_one(on).await?)
    }
}

/// Parameters per SQLite call: below SQLite's limit of 32,766 on `$n`,
/// as in the store's own script.
const PARAMS_PER_CALL: usize = 30_000;

/// Several statements, each with its own `$1…` and values, run in order;
/// the rows they return (RETURNING, SELECT), in order.
///
/// On SQLite they go as one call (one round trip to sqlx's worker thread,
/// which costs more than the statements): the texts are joined and each
/// statement's placeholders renumbered into one shared list, cut into
/// several calls between statements past SQLite's parameter limit. On
/// PostgreSQL, whose extended protocol takes one statement per prepared
/// query, they run one by one. Run a script inside a [`super::Tx`]: a
/// failing statement then leaves the caller to roll back all of them.
#[derive(Debug, Clone, Default)]
pub struct Script {
    statements: Vec<Query>,
}

impl Script {
    /// An empty script.
    pub fn new() -> Script {
        Script::default()
    }

    /// Appends a statement (without a trailing `;`; one is tolerated).
    pub fn push(&mut self, statement: Query) -> &mut Script {
        self.statements.push(statement);
        self
    }

    /// How many statements the script has.
    pub fn len(&self) -> usize {
        self.statements.len()
    }

    /// Whether the script has no statements.
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// Runs every statement in order; the rows they returned, in order.
    pub async fn run<C: AsConn + ?Sized>(self, conn: &mut C) -> Result<Vec<Row>, sqlx::Error> {
        execute_many(conn, self.statements).await
    }
}

impl FromIterator<Query> for Script {
    fn from_iter<I: IntoIterator<Item = Query>>(iter: I) -> Script {
        Script {
            statements: iter.into_iter().collect(),
        }
    }
}

/// Runs `statements` in order (see [`Script`]); the rows they returned.
pub async fn execute_many<C: AsConn + ?Sized>(
    conn: &mut C,
    statements: Vec<Query>,
) -> Result<Vec<Row>, sqlx::Error> {
    // Nothing runs when a value of any statement could not be bound.
    for s in &statements {
        s.check()?;
    }
    match conn.conn_ref().0 {
        ConnRefInner::Sqlite(c) => {
            let mut calls: Vec<(String, SqliteArguments)> = Vec::new();
            let (mut sql, mut args, mut count) = (String::new(), SqliteArguments::default(), 0);
            for s in statements {
                let n = s.args.len();
                let text = renumber(s.sql(), count, n).map_err(sqlx::Error::Protocol)?;
                sql.push_str(&text);
                sql.push_str(";\n");
                for v in s.args {
                    v.add_sqlite(&mut args).map_err(sqlx::Error::Encode)?;
                }
                count += n;
                if count >= PARAMS_PER_CALL {
                    calls.push((std::mem::take(&mut sql), std::mem::take(&mut args)));
                    count = 0;
                }
            }
            if !sql.is_empty() {
                calls.push((sql, args));
            }
            let mut rows = Vec::new();
            for (sql, args) in calls {
                let got = sqlx::query_with(AssertSqlSafe(sql), args)
                    .fetch_all(&mut *c)
                    .await?;
                rows.extend(got.iter().map(Row::from_sqlite));
            }
            Ok(rows)
        }
        ConnRefInner::Postgres(c) => {
            let mut rows = Vec::new();
            for s in statements {
                let args = s.pg_args()?;
                let got = sqlx::query_with(s.sql, args).fetch_all(&mut *c).await?;
                rows.extend(got.iter().map(Row::from_postgres));
            }
            Ok(rows)
        }
    }
}

/// `sql` with every placeholder `$n` turned into `$(n + offset)`, and a
/// trailing `;` dropped; an error when it names a value beyond its own
/// `bound` (that would silently read the next statement's). Quoted text,
/// quoted names and comments are copied as they are.
fn renumber(sql: &str, offset: usize, bound: usize) -> Result<String, String> {
    let body = sql.trim_end().trim_end_matches(';').trim_end();
    let mut out = String::with_capacity(body.len() + 8);
    let mut chars = body.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for (_, d) in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek().is_some_and(|(_, d)| *d == '-') => {
                out.push(c);
                for (_, d) in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek().is_some_and(|(_, d)| *d == '*') => {
                out.push(c);
                let mut prev = ' ';
                for (_, d) in chars.by_ref() {
                    out.push(d);
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
            }
            '$' if chars.peek().is_some_and(|(_, d)| d.is_ascii_digit()) => {
                let mut n = String::new();
                while let Some((_, d)) = chars.next_if(|(_, d)| d.is_ascii_digit()) {
                    n.push(d);
                }
                let n: usize = n.parse().map_err(|_| format!("bad placeholder ${n}"))?;
                if n == 0 || n > bound {
                    return Err(format!(
                        "statement uses ${n} but binds {bound} value(s): {}",
                        body.chars().take(80).collect::<String>()
                    ));
                }
                out.push('$');
                out.push_str(&(n + offset).to_string());
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renumbered_outside_quotes_and_comments() {
        assert_eq!(
            renumber("SELECT $1, '$1', \"$2\", $2 -- $1\n, $10 /* $3 */;", 5, 10).expect("ok"),
            "SELECT $6, '$1', \"$2\", $7 -- $1\n, $15 /* $3 */"
        );
        assert_eq!(
            renumber("SELECT 'it''s $1', $1", 2, 1).expect("ok"),
            "SELECT 'it''s $1', $3"
        );
        assert!(renumber("SELECT $2", 0, 1).is_err());
        assert!(renumber("SELECT $0", 0, 1).is_err());
    }

    #[test]
    fn a_bad_timestamp_is_reported_when_the_query_runs() {
        let q = query("SELECT $1").bind_ts("not a time");
        assert!(matches!(q.check(), Err(sqlx::Error::Encode(_))));
        let q = query("SELECT $1, $2").bind(1i64).bind_ts(None::<&str>);
        assert_eq!(q.values(), &[Value::I64(1), Value::Null]);
    }
}
