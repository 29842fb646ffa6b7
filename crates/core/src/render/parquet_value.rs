//! How a JSON value becomes a value of a Parquet column: the coercions each
//! [`ColumnType`] accepts, and the inference of an undeclared column's type.
//!
//! | type | accepts | refuses |
//! | --- | --- | --- |
//! | `STRING` | any value: a string as it is; a number, `true`/`false`, an object or an array as its compact JSON text (as in CSV) | — |
//! | `JSON` | any value as its compact JSON text (a string gets its quotes) | — |
//! | `INT64` | integers from −2^63 to 2^63−1 | floats (`2.0` too), bigger integers, anything not a number |
//! | `DOUBLE` | floats; integers up to ±2^53 (exact in a double) | bigger integers (they would be rounded), anything not a number |
//! | `BOOLEAN` | `true`, `false` | anything else |
//! | `TIMESTAMP` | RFC 3339 text with an offset, to microseconds, stored in UTC | other text, finer than microseconds, anything not a string |
//! | `DATE` | `YYYY-MM-DD` text | anything else |
//!
//! Null and a missing key are Parquet nulls in every type. JSON has no NaN or infinity
//! (rows that contain them are not JSON and are refused before rendering), so a DOUBLE
//! column never holds one.
//!
//! Inference (a column without a declared type, from the values of the first row group):
//! only booleans → `BOOLEAN`; only numbers → `INT64`, or `DOUBLE` if any of them is a float;
//! only nulls → `STRING`; anything else (strings, objects, arrays, or a mix of kinds) →
//! `STRING`. `TIMESTAMP`, `DATE` and `JSON` are never inferred: text stays `STRING`.

use chrono::{DateTime, NaiveDate, Timelike, Utc};
use serde_json::{Number, Value};

use super::cell::MAX_EXACT_INTEGER;
use crate::format::ColumnType;

/// A value of an undeclared column, kept until the first row group decides the type.
/// Compact on purpose (24 bytes): a whole row group of these is in memory at once.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Pending {
    Null,
    Bool(bool),
    Number(Number),
    Text(Box<str>),
    /// An object or an array, as its compact JSON text.
    Nested(Box<str>),
}

impl Pending {
    pub(super) fn new(value: Option<&Value>) -> Self {
        match value {
            None | Some(Value::Null) => Pending::Null,
            Some(Value::Bool(b)) => Pending::Bool(*b),
            Some(Value::Number(n)) => Pending::Number(n.clone()),
            Some(Value::String(s)) => Pending::Text(s.as_str().into()),
            Some(v @ (Value::Array(_) | Value::Object(_))) => {
                Pending::Nested(v.to_string().into_boxed_str())
            }
        }
    }

    /// Bytes this value holds beyond its own size.
    pub(super) fn heap_bytes(&self) -> usize {
        match self {
            Pending::Text(s) | Pending::Nested(s) => s.len(),
            _ => 0,
        }
    }

    pub(super) fn as_cell(&self) -> Cell<'_> {
        match self {
            Pending::Null => Cell::Null,
            Pending::Bool(b) => Cell::Bool(*b),
            Pending::Number(n) => Cell::Number(n),
            Pending::Text(s) => Cell::Text(s),
            Pending::Nested(s) => Cell::Nested(Nested::Text(s)),
        }
    }
}

/// A borrowed value, from the row being written or from a [`Pending`] one.
#[derive(Debug, Clone, Copy)]
pub(super) enum Cell<'a> {
    Null,
    Bool(bool),
    Number(&'a Number),
    Text(&'a str),
    Nested(Nested<'a>),
}

/// An object or an array: still a value, or already its JSON text.
#[derive(Debug, Clone, Copy)]
pub(super) enum Nested<'a> {
    Value(&'a Value),
    Text(&'a str),
}

impl<'a> Cell<'a> {
    pub(super) fn of(value: Option<&'a Value>) -> Self {
        match value {
            None | Some(Value::Null) => Cell::Null,
            Some(Value::Bool(b)) => Cell::Bool(*b),
            Some(Value::Number(n)) => Cell::Number(n),
            Some(Value::String(s)) => Cell::Text(s),
            Some(v @ (Value::Array(_) | Value::Object(_))) => Cell::Nested(Nested::Value(v)),
        }
    }

    /// What kind of value this is, for error messages (never the value itself).
    fn kind(&self) -> &'static str {
        match self {
            Cell::Null => "null",
            Cell::Bool(_) => "a boolean",
            Cell::Number(n) if n.is_f64() => "a float",
            Cell::Number(_) => "an integer",
            Cell::Text(_) => "a string",
            Cell::Nested(Nested::Value(Value::Array(_))) => "an array",
            Cell::Nested(Nested::Text(t)) if t.starts_with('[') => "an array",
            Cell::Nested(_) => "an object",
        }
    }
}

/// One non-null value, converted for its column.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Typed<'a> {
    Int64(i64),
    Int32(i32),
    Double(f64),
    Boolean(bool),
    /// UTF-8 text appended to the column's bytes by `write`.
    Text(TextOut<'a>),
}

/// Text that is written without being copied where possible.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum TextOut<'a> {
    Borrowed(&'a str),
    Owned(String),
    /// A value whose compact JSON text is written straight into the column.
    Json(&'a Value),
}

/// Why a value does not fit its column: a phrase such as "a string" or "an integer beyond
/// INT64's range", never the value.
pub(super) type Mismatch = String;

/// Converts `cell` for a column of type `ty`; `Ok(None)` for null.
pub(super) fn coerce<'a>(ty: ColumnType, cell: Cell<'a>) -> Result<Option<Typed<'a>>, Mismatch> {
    let wrong = || Err(cell.kind().to_owned());
    let typed = match (ty, cell) {
        (_, Cell::Null) => return Ok(None),
        (ColumnType::String, c) => Typed::Text(match c {
            Cell::Text(s) => TextOut::Borrowed(s),
            other => json_text(other),
        }),
        (ColumnType::Json, c) => Typed::Text(json_text(c)),
        (ColumnType::Int64, Cell::Number(n)) => match n.as_i64() {
            Some(i) => Typed::Int64(i),
            None if n.is_u64() => return Err("an integer beyond INT64's range".into()),
            None => return wrong(),
        },
        (ColumnType::Double, Cell::Number(n)) => {
            if let Some(u) = n.as_u64() {
                if u > MAX_EXACT_INTEGER {
                    return Err(too_big_for_double());
                }
                Typed::Double(u as f64)
            } else if let Some(i) = n.as_i64() {
                if i.unsigned_abs() > MAX_EXACT_INTEGER {
                    return Err(too_big_for_double());
                }
                Typed::Double(i as f64)
            } else {
                Typed::Double(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        (ColumnType::Boolean, Cell::Bool(b)) => Typed::Boolean(b),
        (ColumnType::Timestamp, Cell::Text(s)) => Typed::Int64(timestamp_micros(s)?),
        (ColumnType::Date, Cell::Text(s)) => Typed::Int32(date_days(s)?),
        _ => return wrong(),
    };
    Ok(Some(typed))
}

fn too_big_for_double() -> Mismatch {
    "an integer beyond ±2^53, which a DOUBLE cannot hold exactly".into()
}

/// The compact JSON text of a value (a string gets its quotes and escapes).
fn json_text(cell: Cell<'_>) -> TextOut<'_> {
    match cell {
        Cell::Null => TextOut::Borrowed("null"),
        Cell::Bool(true) => TextOut::Borrowed("true"),
        Cell::Bool(false) => TextOut::Borrowed("false"),
        Cell::Number(n) => TextOut::Owned(n.to_string()),
        Cell::Text(s) => TextOut::Owned(Value::from(s).to_string()),
        Cell::Nested(Nested::Value(v)) => TextOut::Json(v),
        Cell::Nested(Nested::Text(t)) => TextOut::Borrowed(t),
    }
}

/// Microseconds since the epoch of RFC 3339 text with an offset.
fn timestamp_micros(s: &str) -> Result<i64, Mismatch> {
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|_| "a string that is not an RFC 3339 timestamp with an offset".to_owned())?
        .with_timezone(&Utc);
    if t.nanosecond() % 1_000 != 0 {
        return Err("a timestamp finer than microseconds, which TIMESTAMP keeps".into());
    }
    Ok(t.timestamp_micros())
}

/// Days since 1970-01-01 of `YYYY-MM-DD` text.
fn date_days(s: &str) -> Result<i32, Mismatch> {
    let bad = || "a string that is not a YYYY-MM-DD date".to_owned();
    if s.len() != 10 {
        return Err(bad());
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| bad())?;
    let days = d.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch"));
    i32::try_from(days.num_days()).map_err(|_| bad())
}

/// The type of an undeclared column whose first row group holds `values`.
pub(super) fn infer<'a>(values: impl IntoIterator<Item = &'a Pending>) -> ColumnType {
    let (mut bools, mut ints, mut floats, mut others) = (false, false, false, false);
    for v in values {
        match v {
            Pending::Null => {}
            Pending::Bool(_) => bools = true,
            Pending::Number(n) if n.is_f64() => floats = true,
            Pending::Number(_) => ints = true,
            Pending::Text(_) | Pending::Nested(_) => others = true,
        }
    }
    match (bools, ints || floats, others) {
        (true, false, false) => ColumnType::Boolean,
        (false, true, false) if floats => ColumnType::Double,
        (false, true, false) => ColumnType::Int64,
        _ => ColumnType::String,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use ColumnType::*;

    fn fits(ty: ColumnType, v: Value) -> Result<Option<Typed<'static>>, Mismatch> {
        let v: &'static Value = Box::leak(Box::new(v));
        coerce(ty, Cell::of(Some(v)))
    }

    fn text(ty: ColumnType, v: Value) -> std::string::String {
        match fits(ty, v).unwrap().unwrap() {
            Typed::Text(TextOut::Borrowed(s)) => s.to_owned(),
            Typed::Text(TextOut::Owned(s)) => s,
            Typed::Text(TextOut::Json(v)) => v.to_string(),
            other => panic!("{other:?}"),
        }
    }

    fn pending(values: &[Value]) -> Vec<Pending> {
        values.iter().map(|v| Pending::new(Some(v))).collect()
    }

    #[test]
    fn pending_values_are_small() {
        assert!(std::mem::size_of::<Pending>() <= 24);
    }

    #[test]
    fn nulls_fit_every_type() {
        for ty in [String, Int64, Double, Boolean, Timestamp, Date, Json] {
            assert_eq!(coerce(ty, Cell::of(None)), Ok(None));
            assert_eq!(fits(ty, json!(null)), Ok(None));
        }
    }

    #[test]
    fn strings_take_any_value_as_text_and_json_quotes_strings() {
        assert_eq!(text(String, json!("a \"q\"\n🦀")), "a \"q\"\n🦀");
        assert_eq!(text(String, json!(-5)), "-5");
        assert_eq!(text(String, json!(1.5)), "1.5");
        assert_eq!(text(String, json!(true)), "true");
        assert_eq!(text(String, json!({"a": [1, null]})), r#"{"a":[1,null]}"#);
        assert_eq!(text(Json, json!("a\"b")), r#""a\"b""#);
        assert_eq!(text(Json, json!([1, "x"])), r#"[1,"x"]"#);
        assert_eq!(text(Json, json!(false)), "false");
        assert_eq!(text(Json, json!(u64::MAX)), "18446744073709551615");
    }

    #[test]
    fn int64_takes_integers_in_range_only() {
        assert_eq!(
            fits(Int64, json!(i64::MIN)),
            Ok(Some(Typed::Int64(i64::MIN)))
        );
        assert_eq!(
            fits(Int64, json!(i64::MAX)),
            Ok(Some(Typed::Int64(i64::MAX)))
        );
        assert_eq!(
            fits(Int64, json!(i64::MAX as u64 + 1)).unwrap_err(),
            "an integer beyond INT64's range"
        );
        assert_eq!(fits(Int64, json!(2.0)).unwrap_err(), "a float");
        assert_eq!(fits(Int64, json!("7")).unwrap_err(), "a string");
        assert_eq!(fits(Int64, json!(true)).unwrap_err(), "a boolean");
        assert_eq!(fits(Int64, json!([1])).unwrap_err(), "an array");
        assert_eq!(fits(Int64, json!({"a": 1})).unwrap_err(), "an object");
    }

    #[test]
    fn double_takes_floats_and_exact_integers() {
        assert_eq!(fits(Double, json!(-0.5)), Ok(Some(Typed::Double(-0.5))));
        assert_eq!(fits(Double, json!(1e300)), Ok(Some(Typed::Double(1e300))));
        assert_eq!(fits(Double, json!(7)), Ok(Some(Typed::Double(7.0))));
        let limit = MAX_EXACT_INTEGER as i64;
        assert_eq!(
            fits(Double, json!(-limit)),
            Ok(Some(Typed::Double(-limit as f64)))
        );
        assert!(fits(Double, json!(limit + 1)).unwrap_err().contains("2^53"));
        assert!(
            fits(Double, json!(-limit - 1))
                .unwrap_err()
                .contains("2^53")
        );
        assert!(fits(Double, json!(u64::MAX)).unwrap_err().contains("2^53"));
        assert_eq!(fits(Double, json!("NaN")).unwrap_err(), "a string");
    }

    #[test]
    fn booleans_take_booleans_only() {
        assert_eq!(fits(Boolean, json!(false)), Ok(Some(Typed::Boolean(false))));
        assert_eq!(fits(Boolean, json!(1)).unwrap_err(), "an integer");
        assert_eq!(fits(Boolean, json!("true")).unwrap_err(), "a string");
    }

    #[test]
    fn timestamps_are_rfc3339_text_in_utc_microseconds() {
        assert_eq!(
            fits(Timestamp, json!("1970-01-01T00:00:01.000002Z")),
            Ok(Some(Typed::Int64(1_000_002)))
        );
        assert_eq!(
            fits(Timestamp, json!("1970-01-01T01:00:00+01:00")),
            Ok(Some(Typed::Int64(0)))
        );
        assert_eq!(
            fits(Timestamp, json!("1969-12-31T23:59:59Z")),
            Ok(Some(Typed::Int64(-1_000_000)))
        );
        assert!(
            fits(Timestamp, json!("2026-06-07T10:00:00.123456789Z"))
                .unwrap_err()
                .contains("microseconds")
        );
        for bad in ["2026-06-07", "2026-06-07T10:00:00", "yesterday"] {
            assert!(
                fits(Timestamp, json!(bad))
                    .unwrap_err()
                    .contains("RFC 3339"),
                "{bad}"
            );
        }
        assert_eq!(
            fits(Timestamp, json!(1_700_000_000)).unwrap_err(),
            "an integer"
        );
    }

    #[test]
    fn dates_are_yyyy_mm_dd_text() {
        assert_eq!(fits(Date, json!("1970-01-02")), Ok(Some(Typed::Int32(1))));
        assert_eq!(fits(Date, json!("1969-12-31")), Ok(Some(Typed::Int32(-1))));
        assert_eq!(
            fits(Date, json!("2026-06-07")),
            Ok(Some(Typed::Int32(20_611)))
        );
        for bad in ["2026-6-7", "2026-02-30", "2026-06-07T00:00:00Z", ""] {
            assert!(
                fits(Date, json!(bad)).unwrap_err().contains("YYYY-MM-DD"),
                "{bad}"
            );
        }
    }

    #[test]
    fn inference_follows_the_documented_rules() {
        assert_eq!(infer(&pending(&[])), String);
        assert_eq!(infer(&pending(&[json!(null), json!(null)])), String);
        assert_eq!(infer(&pending(&[json!(true), json!(null)])), Boolean);
        assert_eq!(infer(&pending(&[json!(1), json!(-2), json!(null)])), Int64);
        assert_eq!(infer(&pending(&[json!(u64::MAX)])), Int64);
        assert_eq!(infer(&pending(&[json!(1), json!(2.5)])), Double);
        assert_eq!(infer(&pending(&[json!("a"), json!(null)])), String);
        assert_eq!(infer(&pending(&[json!({"a": 1}), json!([1])])), String);
        assert_eq!(infer(&pending(&[json!(1), json!("a")])), String);
        assert_eq!(infer(&pending(&[json!(true), json!(1)])), String);
        assert_eq!(
            infer(&pending(&[json!("2026-06-07T10:00:00Z")])),
            String,
            "text is never inferred as TIMESTAMP"
        );
    }
}
