//! Fixtures shared by the renderer tests: awkward rows and a strict gunzip.

use std::io::Read;

use flate2::read::GzDecoder;
use serde_json::{Value, json};

use crate::delivery::Row;

/// A JSON object literal as a [`Row`].
pub(super) fn row(value: Value) -> Row {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// Decompresses a whole gzip stream; panics unless it is complete (footer, CRC and length).
pub(super) fn gunzip(bytes: &[u8]) -> Vec<u8> {
    try_gunzip(bytes).expect("valid, complete gzip stream")
}

pub(super) fn try_gunzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    GzDecoder::new(bytes).read_to_end(&mut out)?;
    Ok(out)
}

/// Text with everything CSV and XML make hard: delimiters, quotes, both line endings, a
/// lone CR, a tab, a control character, padding, XML markup, a literal `_xHHHH_` (XLSX's own
/// escape syntax), emoji (incl. a ZWJ sequence) and RTL text.
pub(super) const NASTY_TEXT: &str = "comma, \"quoted\"\nLF\r\nCRLF\rCR\ttab\u{1}ctl  padded  \
                                     <b>&amp;</b> _x0041_ 🦀👩\u{200d}👩\u{200d}👧 שלום عربي";

/// 2^53 + 1: the first integer an f64 cannot hold.
pub(super) const BEYOND_F64: u64 = 9_007_199_254_740_993;

/// The columns of [`awkward_rows`]. `missing` is in no row; rows carry keys that are not
/// columns, and their keys are not in column order.
pub(super) fn awkward_columns() -> Vec<String> {
    [
        "id", "text", "int", "float", "flag", "nested", "list", "big", "missing",
    ]
    .map(String::from)
    .to_vec()
}

pub(super) fn awkward_rows() -> Vec<Row> {
    vec![
        row(json!({
            "extra": "not a column",
            "big": BEYOND_F64,
            "list": [1, "two", [3.5], null],
            "nested": {"k": "v, \"q\"", "n": {"deep": [true, null]}},
            "flag": true,
            "float": 3.25,
            "int": -42,
            "text": NASTY_TEXT,
            "id": 1,
        })),
        row(json!({
            "id": 2,
            "text": "",
            "int": 9_007_199_254_740_992_u64,
            "float": -1.5e-7,
            "flag": false,
            "nested": {},
            "list": [],
            "big": i64::MIN,
            "zzz": [1, 2],
        })),
        row(json!({
            "id": null,
            "text": null,
            "int": null,
            "float": null,
            "flag": null,
            "nested": null,
            "list": null,
            "big": u64::MAX,
        })),
        row(json!({"only": "keys that are not columns"})),
        row(
            json!({"id": 5, "text": "007", "int": 0, "float": 1e300, "big": -9_007_199_254_740_993_i64}),
        ),
    ]
}
