//! How one JSON value becomes one cell, shared by the CSV and XLSX writers.

use std::borrow::Cow;

use serde_json::Value;

/// 2^53: integers up to this magnitude are exact in an f64; beyond it XLSX gets a string.
pub const MAX_EXACT_INTEGER: u64 = 1 << 53;

/// A cell's text (CSV): a string as-is; a number as its JSON text; `true`/`false`; null or a
/// missing key → empty; an object or array → its compact JSON text.
pub(super) fn cell_text(value: Option<&Value>) -> Cow<'_, str> {
    match value {
        None | Some(Value::Null) => Cow::Borrowed(""),
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(Value::Bool(true)) => Cow::Borrowed("true"),
        Some(Value::Bool(false)) => Cow::Borrowed("false"),
        Some(Value::Number(n)) => Cow::Owned(n.to_string()),
        // `Display` on a Value is compact JSON.
        Some(v @ (Value::Array(_) | Value::Object(_))) => Cow::Owned(v.to_string()),
    }
}

/// A typed spreadsheet cell (XLSX).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum TypedCell<'a> {
    /// Nothing is written: null or a missing key.
    Empty,
    Number(f64),
    Bool(bool),
    Text(Cow<'a, str>),
}

/// The typed cell for a value: numbers become f64, except integers beyond ±2^53, which an
/// f64 cannot hold exactly and so are written as their decimal text (no digit is lost);
/// objects and arrays become their compact JSON text.
pub(super) fn typed_cell(value: Option<&Value>) -> TypedCell<'_> {
    match value {
        None | Some(Value::Null) => TypedCell::Empty,
        Some(Value::Bool(b)) => TypedCell::Bool(*b),
        Some(Value::String(s)) => TypedCell::Text(Cow::Borrowed(s)),
        Some(Value::Number(n)) => {
            let exact = if let Some(u) = n.as_u64() {
                (u <= MAX_EXACT_INTEGER).then_some(u as f64)
            } else if let Some(i) = n.as_i64() {
                (i.unsigned_abs() <= MAX_EXACT_INTEGER).then_some(i as f64)
            } else {
                n.as_f64()
            };
            match exact {
                Some(f) => TypedCell::Number(f),
                None => TypedCell::Text(Cow::Owned(n.to_string())),
            }
        }
        Some(v @ (Value::Array(_) | Value::Object(_))) => {
            TypedCell::Text(Cow::Owned(v.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn text(v: Value) -> String {
        cell_text(Some(&v)).into_owned()
    }

    fn typed(v: Value) -> TypedCell<'static> {
        match typed_cell(Some(&v)) {
            TypedCell::Text(t) => TypedCell::Text(Cow::Owned(t.into_owned())),
            TypedCell::Empty => TypedCell::Empty,
            TypedCell::Number(f) => TypedCell::Number(f),
            TypedCell::Bool(b) => TypedCell::Bool(b),
        }
    }

    fn owned(s: &str) -> TypedCell<'static> {
        TypedCell::Text(Cow::Owned(s.to_owned()))
    }

    #[test]
    fn text_of_each_kind_of_value() {
        assert_eq!(cell_text(None), "");
        assert_eq!(text(json!(null)), "");
        assert_eq!(text(json!("a, \"b\"\r\n🦀")), "a, \"b\"\r\n🦀");
        assert_eq!(text(json!("")), "");
        assert_eq!(text(json!(true)), "true");
        assert_eq!(text(json!(false)), "false");
        assert_eq!(text(json!(-42)), "-42");
        assert_eq!(text(json!(u64::MAX)), "18446744073709551615");
        assert_eq!(text(json!(i64::MIN)), "-9223372036854775808");
        assert_eq!(text(json!(3.25)), "3.25");
        assert_eq!(text(json!(1.0)), "1.0");
        assert_eq!(text(json!(-1.5e-7)), "-1.5e-7");
        assert_eq!(text(json!(1e300)), "1e+300");
        assert_eq!(
            text(json!({"b": [1, {"c": null}], "a": "x\"y"})),
            r#"{"b":[1,{"c":null}],"a":"x\"y"}"#,
            "compact JSON, key order kept"
        );
        assert_eq!(text(json!([])), "[]");
        assert_eq!(text(json!({})), "{}");
    }

    #[test]
    fn typed_cells_of_each_kind_of_value() {
        assert_eq!(typed_cell(None), TypedCell::Empty);
        assert_eq!(typed(json!(null)), TypedCell::Empty);
        assert_eq!(typed(json!(true)), TypedCell::Bool(true));
        assert_eq!(typed(json!(false)), TypedCell::Bool(false));
        assert_eq!(
            typed(json!("007")),
            owned("007"),
            "numeric-looking text stays text"
        );
        assert_eq!(typed(json!(-42)), TypedCell::Number(-42.0));
        assert_eq!(typed(json!(3.25)), TypedCell::Number(3.25));
        assert_eq!(typed(json!(1e300)), TypedCell::Number(1e300));
        assert_eq!(typed(json!([1, "a"])), owned(r#"[1,"a"]"#));
        assert_eq!(typed(json!({"k": {}})), owned(r#"{"k":{}}"#));
    }

    #[test]
    fn integers_beyond_2_pow_53_become_text_so_no_digit_is_lost() {
        let limit = MAX_EXACT_INTEGER;
        assert_eq!(
            typed(json!(limit)),
            TypedCell::Number(9_007_199_254_740_992.0)
        );
        assert_eq!(
            typed(json!(-(limit as i64))),
            TypedCell::Number(-9_007_199_254_740_992.0)
        );
        assert_eq!(typed(json!(limit + 1)), owned("9007199254740993"));
        assert_eq!(
            typed(json!(-(limit as i64) - 1)),
            owned("-9007199254740993")
        );
        assert_eq!(typed(json!(u64::MAX)), owned("18446744073709551615"));
        assert_eq!(typed(json!(i64::MIN)), owned("-9223372036854775808"));
        // A float is already an f64: large magnitudes stay numbers.
        assert_eq!(typed(json!(1e20)), TypedCell::Number(1e20));
    }
}
