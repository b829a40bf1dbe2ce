//! [`Dialect`]: the few SQL spellings that differ between SQLite and
//! PostgreSQL in what the store writes.
//!
//! Most of the store's SQL is already common to both: `$n` placeholders,
//! `RETURNING`, `ON CONFLICT … DO UPDATE SET x = excluded.x`, `COALESCE`,
//! `||` (also with an integer operand), `CASE`, `EXISTS`, `LIMIT`, and the
//! literals `TRUE`/`FALSE` (SQLite reads them as 1/0 since 3.23). What is
//! not, and is used by the store:
//!
//! | need | SQLite | PostgreSQL | helper |
//! |---|---|---|---|
//! | start a write transaction | `BEGIN IMMEDIATE` | `BEGIN` | [`Dialect::begin`] |
//! | join a group's texts | `group_concat(x, sep)` | `string_agg(x, sep)` | [`Dialect::group_concat`] |
//! | a character by code | `char(31)` | `chr(31)` | [`Dialect::char_code`] |
//! | a flag literal | `1` / `0` (what the store writes today) | `TRUE` / `FALSE` | [`Dialect::bool_lit`] |
//! | claim rows other workers skip | nothing (one writer at a time) | `FOR UPDATE SKIP LOCKED` | [`Dialect::skip_locked`] |
//!
//! `SUM`/`AVG` of integers, NUMERIC on PostgreSQL, need nothing: rows
//! read them as an integer (no fraction digits) or a float, as SQLite's.
//! Not covered here because it is not SQL spelling but a different
//! design: the ticket number (SQLite: the `counters` row `ticket`;
//! PostgreSQL: the sequence `ticket_numbers`), and ids computed ahead as
//! `MAX(id) + 1` (safe behind SQLite's single writer; on PostgreSQL two
//! instances compute the same one: take the id from `RETURNING id`).

/// The SQL dialect of a backend; also the backend itself ([`super::Backend`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// SQLite (bundled by sqlx).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Dialect {
    /// The statement that begins a write transaction.
    pub fn begin(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }

    /// The aggregate joining the text `expr` of a group with the SQL
    /// expression `sep` between them (in the order of the rows it reads;
    /// NULLs are skipped by both).
    pub fn group_concat(self, expr: &str, sep: &str) -> String {
        match self {
            Dialect::Sqlite => format!("group_concat({expr}, {sep})"),
            Dialect::Postgres => format!("string_agg({expr}, {sep})"),
        }
    }

    /// The one-character text of code point `code` (`char(31)`: the unit
    /// separator the store joins tags with).
    pub fn char_code(self, code: u32) -> String {
        match self {
            Dialect::Sqlite => format!("char({code})"),
            Dialect::Postgres => format!("chr({code})"),
        }
    }

    /// A flag literal for a boolean column: `1`/`0` on SQLite (as the
    /// store's INTEGER flags are written), `TRUE`/`FALSE` on PostgreSQL,
    /// where `problem = 1` is a type error. (`TRUE`/`FALSE` would also do
    /// on SQLite; this keeps its SQL as it is.)
    pub fn bool_lit(self, b: bool) -> &'static str {
        match (self, b) {
            (Dialect::Sqlite, true) => "1",
            (Dialect::Sqlite, false) => "0",
            (Dialect::Postgres, true) => "TRUE",
            (Dialect::Postgres, false) => "FALSE",
        }
    }

    /// The clause ending a `SELECT` that claims rows for this worker: on
    /// PostgreSQL rows another worker has locked are skipped; SQLite has
    /// one writer at a time and no such clause.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        let tags = |d: Dialect| d.group_concat("tag", &d.char_code(31));
        assert_eq!(tags(Dialect::Sqlite), "group_concat(tag, char(31))");
        assert_eq!(tags(Dialect::Postgres), "string_agg(tag, chr(31))");
        assert_eq!(Dialect::Postgres.bool_lit(true), "TRUE");
        assert_eq!(Dialect::Sqlite.bool_lit(false), "0");
        assert_eq!(Dialect::Sqlite.skip_locked(), "");
    }
}
