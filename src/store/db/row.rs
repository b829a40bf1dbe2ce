//! [`Row`]: a result row decoded by each column's actual type, the same
//! for both backends.
//!
//! A row is decoded once, when it arrives: PostgreSQL by the column's type
//! (INT2/4/8, TEXT/VARCHAR/CHAR/NAME, BOOL, BYTEA, FLOAT4/8, TIMESTAMPTZ,
//! NUMERIC as an integer when it has no fraction digits, else a float),
//! SQLite by the value's storage class (INTEGER, REAL, TEXT, BLOB, NULL).
//! Reading then converts the same way for both: a `timestamptz` read as
//! text is the `ts()` form, a boolean reads as `bool` or as 0/1, NULL as
//! `None`. A column of a type this layer does not know fails only when it
//! is read, naming the column and its type.

use super::value::{decode_pg_timestamptz, Value};
use sqlx::error::BoxDynError;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Column as _, Decode, Postgres, Row as _, Sqlite, TypeInfo as _, ValueRef as _};
use std::sync::Arc;

/// One result row of either backend.
#[derive(Debug, Clone)]
pub struct Row {
    columns: Arc<[Column]>,
    cells: Vec<Cell>,
}

#[derive(Debug)]
struct Column {
    name: String,
}

/// A decoded value; timestamps keep their `ts()` text beside the instant
/// so that they read as `&str` too.
#[derive(Debug, Clone)]
enum Cell {
    Null,
    I64(i64),
    F64(f64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
    Ts(jiff::Timestamp, String),
    /// A value this layer cannot read: the database's type name and why.
    Unsupported(String, String),
}

/// A borrowed view of one value of a [`Row`], what [`FromValue`] converts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'r> {
    /// SQL NULL.
    Null,
    /// An integer (any width on PostgreSQL; SQLite INTEGER).
    I64(i64),
    /// A floating-point number.
    F64(f64),
    /// A PostgreSQL `boolean` (on SQLite flags are integers).
    Bool(bool),
    /// Text.
    Text(&'r str),
    /// Bytes.
    Bytes(&'r [u8]),
    /// A PostgreSQL `timestamptz`: the instant and its `ts()` text.
    Ts(jiff::Timestamp, &'r str),
}

impl ValueRef<'_> {
    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            ValueRef::Null => "NULL",
            ValueRef::I64(_) => "integer",
            ValueRef::F64(_) => "float",
            ValueRef::Bool(_) => "boolean",
            ValueRef::Text(_) => "text",
            ValueRef::Bytes(_) => "bytes",
            ValueRef::Ts(..) => "timestamptz",
        }
    }
}

/// A Rust type a column value can be read as ([`Row::try_get`]).
pub trait FromValue<'r>: Sized {
    /// The type's name, for messages.
    const WANTED: &'static str;

    /// Converts the value; `None` when it is of a kind this type cannot
    /// hold (the caller reports the column, this name and the kind).
    fn from_value(v: ValueRef<'r>) -> Option<Self>;
}

impl FromValue<'_> for i64 {
    const WANTED: &'static str = "i64";
    fn from_value(v: ValueRef<'_>) -> Option<i64> {
        match v {
            ValueRef::I64(n) => Some(n),
            ValueRef::Bool(b) => Some(i64::from(b)),
            _ => None,
        }
    }
}

impl FromValue<'_> for i32 {
    const WANTED: &'static str = "i32";
    fn from_value(v: ValueRef<'_>) -> Option<i32> {
        i64::from_value(v).and_then(|n| i32::try_from(n).ok())
    }
}

impl FromValue<'_> for u32 {
    const WANTED: &'static str = "u32";
    fn from_value(v: ValueRef<'_>) -> Option<u32> {
        i64::from_value(v).and_then(|n| u32::try_from(n).ok())
    }
}

impl FromValue<'_> for bool {
    const WANTED: &'static str = "bool";
    /// A boolean, or an integer (SQLite's flags): zero is false.
    fn from_value(v: ValueRef<'_>) -> Option<bool> {
        match v {
            ValueRef::Bool(b) => Some(b),
            ValueRef::I64(n) => Some(n != 0),
            _ => None,
        }
    }
}

impl FromValue<'_> for f64 {
    const WANTED: &'static str = "f64";
    fn from_value(v: ValueRef<'_>) -> Option<f64> {
        match v {
            ValueRef::F64(x) => Some(x),
            #[allow(clippy::cast_precision_loss)]
            ValueRef::I64(n) => Some(n as f64),
            _ => None,
        }
    }
}

impl FromValue<'_> for String {
    const WANTED: &'static str = "String";
    fn from_value(v: ValueRef<'_>) -> Option<String> {
        <&str>::from_value(v).map(str::to_string)
    }
}

impl<'r> FromValue<'r> for &'r str {
    const WANTED: &'static str = "&str";
    /// Text, or a timestamp's `ts()` text.
    fn from_value(v: ValueRef<'r>) -> Option<&'r str> {
        match v {
            ValueRef::Text(s) | ValueRef::Ts(_, s) => Some(s),
            _ => None,
        }
    }
}

impl FromValue<'_> for Vec<u8> {
    const WANTED: &'static str = "Vec<u8>";
    fn from_value(v: ValueRef<'_>) -> Option<Vec<u8>> {
        <&[u8]>::from_value(v).map(<[u8]>::to_vec)
    }
}

impl<'r> FromValue<'r> for &'r [u8] {
    const WANTED: &'static str = "&[u8]";
    fn from_value(v: ValueRef<'r>) -> Option<&'r [u8]> {
        match v {
            ValueRef::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

impl FromValue<'_> for jiff::Timestamp {
    const WANTED: &'static str = "Timestamp";
    /// A `timestamptz`, or text holding an instant (SQLite's `*_at`).
    fn from_value(v: ValueRef<'_>) -> Option<jiff::Timestamp> {
        match v {
            ValueRef::Ts(t, _) => Some(t),
            ValueRef::Text(s) => s.parse().ok(),
            _ => None,
        }
    }
}

impl FromValue<'_> for Value {
    const WANTED: &'static str = "Value";
    fn from_value(v: ValueRef<'_>) -> Option<Value> {
        Some(match v {
            ValueRef::Null => Value::Null,
            ValueRef::I64(n) => Value::I64(n),
            ValueRef::F64(x) => Value::F64(x),
            ValueRef::Bool(b) => Value::Bool(b),
            ValueRef::Text(s) => Value::Text(s.to_string()),
            ValueRef::Bytes(b) => Value::Bytes(b.to_vec()),
            ValueRef::Ts(t, _) => Value::Ts(t),
        })
    }
}

impl<'r, T: FromValue<'r>> FromValue<'r> for Option<T> {
    const WANTED: &'static str = T::WANTED;
    /// `None` for NULL.
    fn from_value(v: ValueRef<'r>) -> Option<Option<T>> {
        match v {
            ValueRef::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// A column index for [`Row::try_get`]: its position (from 0) or its name.
pub trait ColumnIndex {
    /// The position of the column in `row`.
    fn position(&self, row: &Row) -> Result<usize, sqlx::Error>;
}

impl ColumnIndex for usize {
    fn position(&self, row: &Row) -> Result<usize, sqlx::Error> {
        if *self < row.cells.len() {
            Ok(*self)
        } else {
            Err(sqlx::Error::ColumnIndexOutOfBounds {
                index: *self,
                len: row.cells.len(),
            })
        }
    }
}

impl ColumnIndex for &str {
    fn position(&self, row: &Row) -> Result<usize, sqlx::Error> {
        row.columns
            .iter()
            .position(|c| c.name == *self)
            .ok_or_else(|| sqlx::Error::ColumnNotFound(self.to_string()))
    }
}

impl Row {
    /// Reads column `index` (a position from 0, or a name) as `T`. Errors
    /// name the column, the wanted type and what was found; NULL is only
    /// read by an `Option`.
    pub fn try_get<'r, T: FromValue<'r>, I: ColumnIndex>(
        &'r self,
        index: I,
    ) -> Result<T, sqlx::Error> {
        let i = index.position(self)?;
        let name = &self.columns[i].name;
        let fail = |found: String| sqlx::Error::ColumnDecode {
            index: format!("{i} ({name:?})"),
            source: format!("wanted {}, found {found}", T::WANTED).into(),
        };
        let v = match &self.cells[i] {
            Cell::Null => ValueRef::Null,
            Cell::I64(n) => ValueRef::I64(*n),
            Cell::F64(x) => ValueRef::F64(*x),
            Cell::Bool(b) => ValueRef::Bool(*b),
            Cell::Text(s) => ValueRef::Text(s),
            Cell::Bytes(b) => ValueRef::Bytes(b),
            Cell::Ts(t, s) => ValueRef::Ts(*t, s),
            Cell::Unsupported(ty, why) => return Err(fail(format!("{ty} ({why})"))),
        };
        T::from_value(v).ok_or_else(|| match v {
            ValueRef::Null => fail("NULL (read it as an Option)".into()),
            ValueRef::I64(n) => fail(format!("integer {n}")),
            ValueRef::Text(s) if s.len() <= 40 => fail(format!("text {s:?}")),
            v => fail(v.kind().to_string()),
        })
    }

    /// The same as [`Row::try_get`] (it never panics, unlike sqlx's `get`).
    pub fn get<'r, T: FromValue<'r>, I: ColumnIndex>(&'r self, index: I) -> Result<T, sqlx::Error> {
        self.try_get(index)
    }

    /// How many columns the row has.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// The name of column `i`, if there is one.
    pub fn column_name(&self, i: usize) -> Option<&str> {
        self.columns.get(i).map(|c| c.name.as_str())
    }

    /// Decodes an SQLite row by the storage class of each value.
    pub(super) fn from_sqlite(row: &SqliteRow) -> Row {
        let columns: Arc<[Column]> = row
            .columns()
            .iter()
            .map(|c| Column {
                name: c.name().to_string(),
            })
            .collect();
        let cells = (0..columns.len())
            .map(|i| match row.try_get_raw(i) {
                Ok(v) => sqlite_cell(v),
                Err(e) => Cell::Unsupported("?".into(), e.to_string()),
            })
            .collect();
        Row { columns, cells }
    }

    /// Decodes a PostgreSQL row by the type of each column.
    pub(super) fn from_postgres(row: &PgRow) -> Row {
        let columns: Arc<[Column]> = row
            .columns()
            .iter()
            .map(|c| Column {
                name: c.name().to_string(),
            })
            .collect();
        let cells = (0..columns.len())
            .map(|i| match row.try_get_raw(i) {
                Ok(v) => pg_cell(v),
                Err(e) => Cell::Unsupported("?".into(), e.to_string()),
            })
            .collect();
        Row { columns, cells }
    }

    /// A row from names and values, for tests of code that reads rows.
    pub fn from_values(columns: &[&str], values: Vec<Value>) -> Row {
        Row {
            columns: columns
                .iter()
                .map(|n| Column {
                    name: (*n).to_string(),
                })
                .collect(),
            cells: values
                .into_iter()
                .map(|v| match v {
                    Value::Null => Cell::Null,
                    Value::I64(n) => Cell::I64(n),
                    Value::F64(x) => Cell::F64(x),
                    Value::Bool(b) => Cell::Bool(b),
                    Value::Text(s) => Cell::Text(s),
                    Value::Bytes(b) => Cell::Bytes(b),
                    Value::Ts(t) => Cell::Ts(t, crate::store::ts(t)),
                })
                .collect(),
        }
    }
}

fn cell_or<T>(r: Result<T, BoxDynError>, ty: &str, f: impl FnOnce(T) -> Cell) -> Cell {
    match r {
        Ok(v) => f(v),
        Err(e) => Cell::Unsupported(ty.to_string(), e.to_string()),
    }
}

fn sqlite_cell(v: sqlx::sqlite::SqliteValueRef<'_>) -> Cell {
    if v.is_null() {
        return Cell::Null;
    }
    let ty = v.type_info().name().to_string();
    match ty.as_str() {
        "INTEGER" | "BOOLEAN" => cell_or(<i64 as Decode<Sqlite>>::decode(v), &ty, Cell::I64),
        "REAL" => cell_or(<f64 as Decode<Sqlite>>::decode(v), &ty, Cell::F64),
        "TEXT" => cell_or(<String as Decode<Sqlite>>::decode(v), &ty, Cell::Text),
        "BLOB" => cell_or(<Vec<u8> as Decode<Sqlite>>::decode(v), &ty, Cell::Bytes),
        _ => Cell::Unsupported(ty, "not a storage class of SQLite".into()),
    }
}

fn pg_cell(v: sqlx::postgres::PgValueRef<'_>) -> Cell {
    if v.is_null() {
        return Cell::Null;
    }
    let info = v.type_info().into_owned();
    let ty = info.name().to_string();
    // By OID: fixed for PostgreSQL's built-in types.
    match info.oid().map(|o| o.0) {
        Some(16) => cell_or(<bool as Decode<Postgres>>::decode(v), &ty, Cell::Bool),
        Some(17) => cell_or(<Vec<u8> as Decode<Postgres>>::decode(v), &ty, Cell::Bytes),
        Some(20) => cell_or(<i64 as Decode<Postgres>>::decode(v), &ty, Cell::I64),
        Some(21) => cell_or(<i16 as Decode<Postgres>>::decode(v), &ty, |n| {
            Cell::I64(n.into())
        }),
        Some(23) => cell_or(<i32 as Decode<Postgres>>::decode(v), &ty, |n| {
            Cell::I64(n.into())
        }),
        Some(700) => cell_or(<f32 as Decode<Postgres>>::decode(v), &ty, |x| {
            Cell::F64(x.into())
        }),
        Some(701) => cell_or(<f64 as Decode<Postgres>>::decode(v), &ty, Cell::F64),
        // text, name, bpchar, varchar, unknown (an untyped literal)
        Some(25 | 19 | 1042 | 1043 | 705) => {
            cell_or(<String as Decode<Postgres>>::decode(v), &ty, Cell::Text)
        }
        Some(1184) => cell_or(decode_pg_timestamptz(v), &ty, |t| {
            Cell::Ts(t, crate::store::ts(t))
        }),
        // SUM/AVG of integers: an integer when it has no fraction digits
        // (as SQLite's SUM), else a float (as SQLite's AVG).
        Some(1700) => cell_or(decode_pg_numeric(v), &ty, |c| c),
        _ => Cell::Unsupported(ty, "a type this layer does not read".into()),
    }
}

/// Decodes a PostgreSQL NUMERIC (binary: digit count, weight, sign,
/// display scale, then base-10000 digits): an integer when its scale is 0
/// and it fits an i64, else the nearest f64.
fn decode_pg_numeric(v: sqlx::postgres::PgValueRef<'_>) -> Result<Cell, BoxDynError> {
    if v.format() != sqlx::postgres::PgValueFormat::Binary {
        let s = v.as_str()?;
        return Ok(match s.parse::<i64>() {
            Ok(n) => Cell::I64(n),
            Err(_) => Cell::F64(
                s.parse::<f64>()
                    .map_err(|e| format!("numeric {s:?}: {e}"))?,
            ),
        });
    }
    let b = v.as_bytes()?;
    let word = |i: usize| -> Result<u16, BoxDynError> {
        b.get(2 * i..2 * i + 2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]))
            .ok_or_else(|| "truncated numeric".into())
    };
    let (ndigits, weight, sign, scale) = (word(0)?, word(1)? as i16, word(2)?, word(3)?);
    let negative = match sign {
        0x0000 => false,
        0x4000 => true,
        0xC000 => return Ok(Cell::F64(f64::NAN)),
        0xD000 => return Ok(Cell::F64(f64::INFINITY)),
        0xF000 => return Ok(Cell::F64(f64::NEG_INFINITY)),
        s => return Err(format!("numeric with sign word {s:#x}").into()),
    };
    let digits: Vec<u16> = (0..usize::from(ndigits))
        .map(|i| word(4 + i))
        .collect::<Result<_, _>>()?;
    if scale == 0 {
        // digits[i] counts 10000^(weight - i); none is below 10000^0.
        let mut n: Option<i128> = Some(0);
        for i in 0..=i32::from(weight).max(-1) {
            let d = digits.get(i as usize).copied().unwrap_or(0);
            n = n.and_then(|n| n.checked_mul(10_000)?.checked_add(i128::from(d)));
        }
        if let Some(n) = n.map(|n| if negative { -n } else { n }) {
            if let Ok(n) = i64::try_from(n) {
                return Ok(Cell::I64(n));
            }
        }
    }
    let mut x = 0f64;
    for (i, d) in digits.iter().enumerate() {
        x += f64::from(*d) * 10_000f64.powi(i32::from(weight) - i as i32);
    }
    Ok(Cell::F64(if negative { -x } else { x }))
}

/// A Rust type a whole row can be read as ([`super::query_as`]): tuples of
/// [`FromValue`] types, column by column.
pub trait FromRow: Sized {
    /// Reads the row.
    fn from_row(row: &Row) -> Result<Self, sqlx::Error>;
}

macro_rules! tuple_from_row {
    ($($t:ident $i:tt),+) => {
        impl<$($t: for<'r> FromValue<'r>),+> FromRow for ($($t,)+) {
            fn from_row(row: &Row) -> Result<Self, sqlx::Error> {
                Ok(($(row.try_get::<$t, usize>($i)?,)+))
            }
        }
    };
}

tuple_from_row!(A 0);
tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

impl FromRow for Row {
    fn from_row(row: &Row) -> Result<Row, sqlx::Error> {
        Ok(row.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        let t: jiff::Timestamp = "2026-12-03T19:37:55.030Z".parse().expect("ts");
        Row::from_values(
            &["id", "due_at", "flag", "n", "raw", "none"],
            vec![
                Value::I64(7),
                Value::Ts(t),
                Value::Bool(true),
                Value::I64(0),
                Value::Bytes(vec![0, 159]),
                Value::Null,
            ],
        )
    }

    #[test]
    fn values_convert_the_same_way_by_position_and_name() {
        let r = row();
        assert_eq!(r.try_get::<i64, _>(0).expect("id"), 7);
        assert_eq!(
            r.try_get::<String, _>("due_at").expect("ts text"),
            "2026-12-03T19:37:55.030Z"
        );
        assert_eq!(
            r.try_get::<&str, _>(1).expect("&str"),
            "2026-12-03T19:37:55.030Z"
        );
        assert_eq!(r.try_get::<i64, _>("flag").expect("flag as int"), 1);
        assert!(r.try_get::<bool, _>("flag").expect("flag"));
        assert!(!r.try_get::<bool, _>("n").expect("int as bool"));
        assert_eq!(r.try_get::<Vec<u8>, _>("raw").expect("raw"), vec![0, 159]);
        assert_eq!(r.try_get::<Option<String>, _>("none").expect("null"), None);
        assert_eq!(r.try_get::<Option<i64>, _>(0).expect("some"), Some(7));
    }

    #[test]
    fn errors_name_the_column_and_both_types() {
        let r = row();
        let e = r
            .try_get::<i64, _>("due_at")
            .expect_err("ts as int")
            .to_string();
        assert!(
            e.contains("\"due_at\"") && e.contains("wanted i64") && e.contains("timestamptz"),
            "{e}"
        );
        let e = r
            .try_get::<String, _>("none")
            .expect_err("null")
            .to_string();
        assert!(e.contains("NULL") && e.contains("Option"), "{e}");
        assert!(matches!(
            r.try_get::<i64, _>("nope"),
            Err(sqlx::Error::ColumnNotFound(_))
        ));
        assert!(matches!(
            r.try_get::<i64, _>(9),
            Err(sqlx::Error::ColumnIndexOutOfBounds { .. })
        ));
        let (id, flag): (i64, bool) = (r.try_get(0).expect("id"), r.try_get(2).expect("flag"));
        assert_eq!((id, flag), (7, true));
    }
}
