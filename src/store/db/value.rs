//! [`Value`]: a bound parameter of either backend, and how each kind is
//! sent.
//!
//! Timestamps on PostgreSQL are sent as real `timestamptz` values in
//! sqlx's binary format (microseconds since 2000-01-01 UTC) by a small
//! codec here, not as text with a `::timestamptz` cast in the SQL: a cast
//! would have to be written into every statement at every place a time is
//! bound (one missed cast is a run-time "operator does not exist:
//! timestamp with time zone <= text"), the text would be parsed by the
//! server under the session's `DateStyle`/`TimeZone`, and the SQL would
//! differ between the backends. sqlx 0.9 has no jiff support and its
//! `chrono`/`time` features would add a second time library to the store;
//! the wire format is PostgreSQL's fixed binary one (integer datetimes,
//! the only kind since PostgreSQL 10).

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgArguments, PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments as _, Postgres};

/// A value bound to a `$n` placeholder, the same for both backends.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL. Untyped on PostgreSQL: the server infers the type from
    /// where the placeholder stands (a column, a comparison).
    Null,
    /// An integer (ids, counts, numbers).
    I64(i64),
    /// A floating-point number.
    F64(f64),
    /// A flag: 0/1 on SQLite, `boolean` on PostgreSQL.
    Bool(bool),
    /// Text.
    Text(String),
    /// Bytes (raw mail, attachments): BLOB / `bytea`.
    Bytes(Vec<u8>),
    /// An instant: the `ts()` text on SQLite (UTC, milliseconds, `Z`, so
    /// text order is time order), `timestamptz` on PostgreSQL (cut to
    /// milliseconds too, so both store the same instant).
    Ts(jiff::Timestamp),
}

impl Value {
    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::I64(_) => "integer",
            Value::F64(_) => "float",
            Value::Bool(_) => "boolean",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Ts(_) => "timestamp",
        }
    }

    /// Adds the value to SQLite arguments (moved, not copied: raw mail
    /// can be megabytes).
    pub(super) fn add_sqlite(self, args: &mut SqliteArguments) -> Result<(), BoxDynError> {
        match self {
            Value::Null => args.add(Option::<i64>::None),
            Value::I64(v) => args.add(v),
            Value::F64(v) => args.add(v),
            Value::Bool(v) => args.add(i64::from(v)),
            Value::Text(v) => args.add(v),
            Value::Bytes(v) => args.add(v),
            Value::Ts(t) => args.add(crate::store::ts(t)),
        }
    }

    /// Adds the value to PostgreSQL arguments.
    pub(super) fn add_postgres(&self, args: &mut PgArguments) -> Result<(), BoxDynError> {
        match self {
            Value::Null => args.add(UntypedNull),
            Value::I64(v) => args.add(*v),
            Value::F64(v) => args.add(*v),
            Value::Bool(v) => args.add(*v),
            Value::Text(v) => args.add(v.as_str()),
            Value::Bytes(v) => args.add(v.as_slice()),
            Value::Ts(t) => args.add(PgTimestamptz(*t)),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::I64(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::I64(v.into())
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::I64(v.into())
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::F64(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Bytes(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Bytes(v.to_vec())
    }
}

impl From<jiff::Timestamp> for Value {
    fn from(v: jiff::Timestamp) -> Value {
        Value::Ts(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// What [`Query::bind_ts`](super::Query::bind_ts) takes: an instant, or its
/// text (the `ts()` form or any RFC 3339 instant with an offset).
pub trait IntoTs {
    /// The instant as a [`Value`] (`Ts`, or `Null` for `None`), or why the
    /// text is not an instant.
    fn into_ts(self) -> Result<Value, String>;
}

impl IntoTs for jiff::Timestamp {
    fn into_ts(self) -> Result<Value, String> {
        Ok(Value::Ts(self))
    }
}

impl IntoTs for &str {
    fn into_ts(self) -> Result<Value, String> {
        self.parse::<jiff::Timestamp>()
            .map(Value::Ts)
            .map_err(|e| format!("not a timestamp: {self:?}: {e}"))
    }
}

impl IntoTs for String {
    fn into_ts(self) -> Result<Value, String> {
        self.as_str().into_ts()
    }
}

impl IntoTs for &String {
    fn into_ts(self) -> Result<Value, String> {
        self.as_str().into_ts()
    }
}

impl<T: IntoTs> IntoTs for Option<T> {
    fn into_ts(self) -> Result<Value, String> {
        self.map_or(Ok(Value::Null), IntoTs::into_ts)
    }
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz` parameter in PostgreSQL's binary format.
struct PgTimestamptz(jiff::Timestamp);

/// `timestamptz`'s type OID, fixed in PostgreSQL's catalog.
const TIMESTAMPTZ_OID: u32 = 1184;

impl sqlx::Type<Postgres> for PgTimestamptz {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(TIMESTAMPTZ_OID))
    }
}

impl sqlx::Encode<'_, Postgres> for PgTimestamptz {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        // Milliseconds, as `ts()` writes on SQLite: the same instant is
        // stored, and compares, alike on both backends.
        let micros = self
            .0
            .as_millisecond()
            .checked_mul(1000)
            .and_then(|us| us.checked_sub(PG_EPOCH_MICROS))
            .ok_or_else(|| format!("timestamp out of range: {}", self.0))?;
        <i64 as sqlx::Encode<'_, Postgres>>::encode_by_ref(&micros, buf)
    }

    fn size_hint(&self) -> usize {
        8
    }
}

/// A NULL whose type the server infers (type OID 0, "unspecified"): an
/// `Option::<String>::None` would be a `text` NULL, which PostgreSQL
/// refuses for a `bigint`, `timestamptz` or `bytea` column.
struct UntypedNull;

impl sqlx::Type<Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(0))
    }
}

impl sqlx::Encode<'_, Postgres> for UntypedNull {
    fn encode_by_ref(&self, _buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Ok(IsNull::Yes)
    }
}

/// Decodes a PostgreSQL `timestamptz` value (binary, as sqlx fetches, or
/// text, as a simple query returns it).
pub(super) fn decode_pg_timestamptz(v: PgValueRef<'_>) -> Result<jiff::Timestamp, BoxDynError> {
    match v.format() {
        PgValueFormat::Binary => {
            let micros = <i64 as sqlx::Decode<'_, Postgres>>::decode(v)?;
            if micros == i64::MAX || micros == i64::MIN {
                return Err("an infinite timestamp".into());
            }
            let unix = micros
                .checked_add(PG_EPOCH_MICROS)
                .ok_or("timestamp out of range")?;
            Ok(jiff::Timestamp::from_microsecond(unix)?)
        }
        PgValueFormat::Text => {
            let s = v.as_str()?;
            Ok(s.parse::<jiff::Timestamp>()
                .map_err(|e| format!("timestamptz text {s:?}: {e}"))?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_timestamps_parse_and_bad_ones_are_refused() {
        let v = "2026-12-03T19:37:55.030Z".into_ts().expect("ts");
        let Value::Ts(t) = v else {
            panic!("not a Ts: {v:?}")
        };
        assert_eq!(crate::store::ts(t), "2026-12-03T19:37:55.030Z");
        assert_eq!(
            "2026-12-03T20:37:55.030+01:00".into_ts().expect("offset"),
            Value::Ts(t)
        );
        assert!("yesterday".into_ts().is_err());
        assert_eq!(Option::<&str>::None.into_ts(), Ok(Value::Null));
    }

    #[test]
    fn options_bind_as_null() {
        assert_eq!(Value::from(Option::<i64>::None), Value::Null);
        assert_eq!(Value::from(Some("x")), Value::Text("x".into()));
        assert_eq!(Value::from(true), Value::Bool(true));
    }
}
