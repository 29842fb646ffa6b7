//! Inline rows, kept as the JSON text they arrived in.
//!
//! A 1,000-row result is about 100 KB of JSON. Parsing it into a tree of
//! [`serde_json::Value`]s to check it, writing that tree back out into the queued task,
//! and parsing it into a tree again in the worker cost more CPU than rendering and
//! uploading the file (see `docs/benchmarks.md`). So inline rows travel as text: the edge
//! checks their shape in one pass that builds nothing ([`InlineRows::check`]), the queue
//! stores the same bytes, and the worker reads one row at a time straight into its cells
//! as it renders ([`InlineRows::for_each_cells`]). A queued task's rows come last in its
//! payload with their length in front (`crate::payload`), so the worker takes them as
//! they are ([`InlineRows::from_queued`]) and reads them once, rendering.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::cells::{Cells, ColumnIndex, Plain, each_plain_row};
use crate::delivery::Row;

/// The JSON text of an array of rows; shared, so that a task is cloned cheaply.
///
/// Text from a JSON parser ([`Deserialize`], [`from_raw`](Self::from_raw)) is well-formed;
/// text taken from a queued payload ([`from_queued`](Self::from_queued)) is trusted to be,
/// as Courier wrote it: reading its rows reports it if it is not.
#[derive(Clone)]
pub struct InlineRows(Arc<str>);

/// What [`InlineRows::check`] learned about well-formed rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowsShape {
    pub count: u64,
    /// The first row's keys, in order: the columns when none are given.
    pub first_keys: Vec<String>,
}

/// Why rows are not an array of objects. `index` is `None` for the whole value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    pub index: Option<usize>,
    /// What was found instead: `a number`, `a string`, …
    pub found: String,
}

impl InlineRows {
    /// No rows: `[]`.
    pub fn empty() -> Self {
        Self(Arc::from("[]"))
    }

    /// Rows built in memory (tests, the CLI).
    pub fn from_rows(rows: &[Row]) -> Self {
        Self::from_raw(serde_json::value::to_raw_value(rows).expect("a row always serializes"))
    }

    /// Takes JSON text as it is; [`check`](Self::check) says whether it is usable.
    pub fn from_raw(raw: Box<RawValue>) -> Self {
        Self(Arc::from(Box::<str>::from(raw)))
    }

    /// Takes the rows' JSON text from a queued payload without reading it: Courier wrote it
    /// there after [`check`](Self::check) passed.
    pub fn from_queued(json: &str) -> Self {
        Self(Arc::from(json))
    }

    /// The JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// Checks that this is an array of JSON objects, naming every element that is not,
    /// without building any of them.
    pub fn check(&self) -> Result<RowsShape, Vec<RowProblem>> {
        let mut de = serde_json::Deserializer::from_str(&self.0);
        match de.deserialize_any(CheckRows) {
            Ok(checked) if checked.problems.is_empty() => Ok(checked.shape),
            Ok(checked) => Err(checked.problems),
            // Well-formed JSON that cannot be read, such as a number out of range.
            Err(e) => Err(vec![RowProblem {
                index: None,
                found: format!("a value that cannot be read ({e})"),
            }]),
        }
    }

    /// Calls `f` with each row's cells in `columns` order, reading one row at a time into
    /// a reused buffer; returns how many rows there were. Stops at the first error, of the
    /// rows' JSON or of `f`.
    ///
    /// Plain rows are read by a fast path (`crate::cells::each_plain_row`); from the first
    /// row it leaves alone, serde_json reads the rest, so rows mean what serde_json makes of
    /// them and its errors are the errors.
    pub fn for_each_cells<E>(
        &self,
        columns: &ColumnIndex,
        mut f: impl FnMut(&Cells) -> Result<(), E>,
    ) -> Result<u64, ForEachError<E>> {
        match each_plain_row(&self.0, columns, &mut f) {
            Plain::Done(n) => Ok(n),
            Plain::Stopped(e) => Err(ForEachError::Stopped(e)),
            Plain::TakeOver { rows } => self.for_each_cells_from(rows, columns, f),
        }
    }

    /// [`for_each_cells`](Self::for_each_cells) by serde_json alone, past the first `skip`
    /// rows (read, not passed on; they count in the total).
    fn for_each_cells_from<E>(
        &self,
        skip: u64,
        columns: &ColumnIndex,
        mut f: impl FnMut(&Cells) -> Result<(), E>,
    ) -> Result<u64, ForEachError<E>> {
        let mut stopped = None;
        let mut de = serde_json::Deserializer::from_str(&self.0);
        let result = de.deserialize_seq(EachRow {
            skip,
            columns,
            f: &mut f,
            stopped: &mut stopped,
        });
        match (result, stopped) {
            (_, Some(e)) => Err(ForEachError::Stopped(e)),
            (Ok(n), None) => Ok(n),
            (Err(e), None) => Err(ForEachError::Json(e)),
        }
    }
}

/// Why [`InlineRows::for_each_cells`] stopped.
#[derive(Debug)]
pub enum ForEachError<E> {
    /// The rows are not an array of objects.
    Json(serde_json::Error),
    /// The callback failed.
    Stopped(E),
}

impl Default for InlineRows {
    fn default() -> Self {
        Self::empty()
    }
}

impl PartialEq for InlineRows {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl fmt::Debug for InlineRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InlineRows({} bytes of JSON)", self.0.len())
    }
}

/// Writes the text as it is, as JSON (a queued payload's rows are spliced in by
/// `crate::payload` instead, without this pass over them).
impl Serialize for InlineRows {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for InlineRows {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(Self::from_raw)
    }
}

struct Checked {
    shape: RowsShape,
    problems: Vec<RowProblem>,
}

/// Walks the top level: an array is checked element by element, anything else is one
/// problem.
struct CheckRows;

impl CheckRows {
    fn whole<E>(found: &'static str) -> Result<Checked, E> {
        Ok(Checked {
            shape: RowsShape {
                count: 0,
                first_keys: Vec::new(),
            },
            problems: vec![RowProblem {
                index: None,
                found: found.to_owned(),
            }],
        })
    }
}

impl<'de> Visitor<'de> for CheckRows {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of JSON objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        let mut checked = Checked {
            shape: RowsShape {
                count: 0,
                first_keys: Vec::new(),
            },
            problems: Vec::new(),
        };
        let mut index = 0usize;
        while let Some(kind) = seq.next_element_seed(CheckRow { keys: index == 0 })? {
            match kind {
                Ok(keys) => {
                    if index == 0 {
                        checked.shape.first_keys = keys;
                    }
                }
                Err(found) => checked.problems.push(RowProblem {
                    index: Some(index),
                    found: found.to_owned(),
                }),
            }
            index += 1;
        }
        checked.shape.count = index as u64;
        Ok(checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Self::whole("an object")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
        Self::whole("null")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
        Self::whole("a boolean")
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
        Self::whole("a number")
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
        Self::whole("a number")
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
        Self::whole("a number")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
        Self::whole("a string")
    }
}

/// One element: `Ok(keys)` for an object (keys collected only when asked), else what
/// it is.
struct CheckRow {
    keys: bool,
}

type RowKind = Result<Vec<String>, &'static str>;

impl<'de> DeserializeSeed<'de> for CheckRow {
    type Value = RowKind;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RowKind, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CheckRow {
    type Value = RowKind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RowKind, A::Error> {
        let mut keys = Vec::new();
        if self.keys {
            while let Some((key, Cell)) = map.next_entry::<String, Cell>()? {
                // A repeated key is one column, as when the row is built.
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        } else {
            while map.next_entry::<IgnoredAny, Cell>()?.is_some() {}
        }
        Ok(Ok(keys))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RowKind, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err("an array"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<RowKind, E> {
        Ok(Err("null"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RowKind, E> {
        Ok(Err("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RowKind, E> {
        Ok(Err("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RowKind, E> {
        Ok(Err("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RowKind, E> {
        Ok(Err("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<RowKind, E> {
        Ok(Err("a string"))
    }
}

/// A cell, walked without being built, so that one the worker could not build (a number
/// out of range) fails the check rather than the delivery.
struct Cell;

impl<'de> Deserialize<'de> for Cell {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cell, D::Error> {
        d.deserialize_any(CellVisitor)
    }
}

struct CellVisitor;

impl<'de> Visitor<'de> for CellVisitor {
    type Value = Cell;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Cell, A::Error> {
        while map.next_entry::<IgnoredAny, Cell>()?.is_some() {}
        Ok(Cell)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Cell, A::Error> {
        while seq.next_element::<Cell>()?.is_some() {}
        Ok(Cell)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Cell, E> {
        Ok(Cell)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Cell, E> {
        Ok(Cell)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Cell, E> {
        Ok(Cell)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Cell, E> {
        Ok(Cell)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Cell, E> {
        Ok(Cell)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Cell, E> {
        Ok(Cell)
    }
}

/// Reads each element into the cells buffer and hands it to the callback.
struct EachRow<'a, F, E> {
    /// Rows read past first, not passed on (another reader passed them on already).
    skip: u64,
    columns: &'a ColumnIndex,
    f: &'a mut F,
    stopped: &'a mut Option<E>,
}

impl<'de, F, E> Visitor<'de> for EachRow<'_, F, E>
where
    F: FnMut(&Cells) -> Result<(), E>,
{
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of JSON objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut n = 0u64;
        while n < self.skip {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(n);
            }
            n += 1;
        }
        let mut cells = Vec::with_capacity(self.columns.len());
        while seq
            .next_element_seed(self.columns.seed(&mut cells))?
            .is_some()
        {
            if let Err(e) = (self.f)(&cells) {
                *self.stopped = Some(e);
                return Err(de::Error::custom("stopped"));
            }
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rows(v: serde_json::Value) -> InlineRows {
        InlineRows::from_raw(serde_json::value::to_raw_value(&v).unwrap())
    }

    /// What reading `text` gives: every row's cells as passed on, then the count or the
    /// error; `stop_at` makes the callback fail at that row.
    type Outcome = (Vec<Vec<Option<serde_json::Value>>>, Result<u64, String>);

    fn read(text: &str, columns: &[&str], stop_at: Option<usize>, serde_only: bool) -> Outcome {
        let columns: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
        let index = ColumnIndex::new(&columns);
        let rows = InlineRows::from_queued(text);
        let mut seen = Vec::new();
        let f = |cells: &Cells| {
            if stop_at == Some(seen.len()) {
                return Err("stop");
            }
            seen.push(cells.to_vec());
            Ok(())
        };
        let result = if serde_only {
            rows.for_each_cells_from(0, &index, f)
        } else {
            rows.for_each_cells(&index, f)
        };
        let result = result.map_err(|e| match e {
            ForEachError::Json(e) => format!("json: {e}"),
            ForEachError::Stopped(e) => format!("stopped: {e}"),
        });
        (seen, result)
    }

    /// The fast path and serde_json alone agree on every row and every error, whatever
    /// the rows hold: plain values, escapes, control characters, nesting, odd numbers,
    /// repeated and unknown keys, whitespace, broken separators.
    #[test]
    fn plain_rows_read_as_serde_json_reads_them() {
        const KEYS: [&str; 7] = [
            r#""a""#,
            r#""b""#,
            r#""c""#,
            r#""zz""#,
            r#""b\u0061""#,
            r#""é\"k""#,
            r#""a""#,
        ];
        const VALUES: [&str; 30] = [
            r#""plain""#,
            r#""""#,
            r#""Montréal, QC""#,
            r#""say \"hi\"""#,
            r#""\u00e9\n""#,
            "\"tab\there\"",
            "1",
            "0",
            "-0",
            "01",
            "1.5",
            "-1.5e-7",
            "2E+3",
            "1e400",
            "18446744073709551615",
            "18446744073709551616",
            "123456789012345678",
            "1234567890123456789",
            "-9223372036854775808",
            "-9223372036854775809",
            "-",
            "true",
            "false",
            "null",
            "tru",
            "nul",
            r#"{"x": [1, "]"]}"#,
            r#"[1, "a"]"#,
            "1-2",
            "truex",
        ];
        const GAPS: [&str; 5] = ["", " ", "\n\t", "\r\n  ", ""];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for case in 0..3000 {
            // Mostly well-formed, plain rows, so the fast path goes some way before
            // anything hands over.
            let odd = next(4) == 0;
            let mut text = String::from(GAPS[next(5)]);
            text.push('[');
            let rows = next(6);
            for r in 0..rows {
                if r > 0 {
                    text.push_str(if odd && next(40) == 0 { " " } else { "," });
                }
                text.push_str(GAPS[next(5)]);
                text.push('{');
                for k in 0..next(5) {
                    if k > 0 {
                        text.push_str(if odd && next(40) == 0 { "" } else { "," });
                    }
                    let key = if odd { KEYS[next(7)] } else { KEYS[next(4)] };
                    let value = if odd {
                        VALUES[next(30)]
                    } else {
                        VALUES[[0, 1, 2, 6, 10, 21, 22, 23][next(8)]]
                    };
                    text.push_str(&format!(
                        "{}{key}{}:{}{value}",
                        GAPS[next(5)],
                        GAPS[next(5)],
                        GAPS[next(5)]
                    ));
                }
                if odd && next(30) == 0 {
                    text.push(',');
                }
                text.push_str(GAPS[next(5)]);
                text.push('}');
            }
            if odd && next(30) == 0 {
                text.push(',');
            }
            text.push(']');
            let stop_at = (next(5) == 0).then(|| next(4));
            for columns in [
                &["a", "b", "c"][..],
                &["c", "é\"k", "ba"][..],
                &["only"][..],
            ] {
                assert_eq!(
                    read(&text, columns, stop_at, false),
                    read(&text, columns, stop_at, true),
                    "case {case}: {text}"
                );
            }
        }
        for whole in [
            "[]",
            " [ ] ",
            "{}",
            "[1]",
            "7",
            "[{}",
            "[{\"a\": 1}] trailing",
            "",
        ] {
            assert_eq!(
                read(whole, &["a"], None, false),
                read(whole, &["a"], None, true),
                "{whole}"
            );
        }
    }

    /// Rows as a hostile tenant would send them: nesting far past serde_json's depth
    /// limit, a megabyte of text in one cell, a number of 20,000 digits, a row of 5,000
    /// keys. Nothing panics, and the fast path ends where serde_json alone ends.
    #[test]
    fn hostile_rows_read_as_serde_json_reads_them() {
        let deep = format!(
            r#"[{{"a": 1}}, {{"a": {}1{}}}]"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let long = format!(r#"[{{"a": "{}", "b": 2}}]"#, "x".repeat(1 << 20));
        let digits = format!(r#"[{{"a": {}}}, {{"a": 1}}]"#, "9".repeat(20_000));
        let wide = format!(
            "[{{{}}}]",
            (0..5000)
                .map(|i| format!(r#""k{i}": {i}"#))
                .collect::<Vec<_>>()
                .join(",")
        );
        for (name, text) in [
            ("deep", &deep),
            ("long", &long),
            ("digits", &digits),
            ("wide", &wide),
        ] {
            let fast = read(text, &["a", "b", "k4999"], None, false);
            assert_eq!(fast, read(text, &["a", "b", "k4999"], None, true), "{name}");
            match name {
                // The first row is passed on; the second is too deep for serde_json.
                "deep" => {
                    assert_eq!(fast.0.len(), 1);
                    assert!(
                        fast.1.as_ref().unwrap_err().contains("recursion limit"),
                        "{fast:?}"
                    );
                }
                "long" => {
                    assert_eq!(fast.1, Ok(1));
                    assert_eq!(fast.0[0][0], Some(json!("x".repeat(1 << 20))));
                }
                "digits" => assert!(fast.1.is_err(), "{:?}", fast.1),
                _ => assert_eq!(fast.0, [vec![None, None, Some(json!(4999))]]),
            }
        }
    }

    #[test]
    fn plain_rows_fill_cells_by_column_and_keep_repeated_keys_last() {
        let (rows, n) = read(
            r#"[{"b": "x", "a": 1, "zz": true, "a": -2.5}, {"c": null}, {}]"#,
            &["a", "b", "c"],
            None,
            false,
        );
        assert_eq!(n, Ok(3));
        assert_eq!(
            rows,
            [
                vec![Some(json!(-2.5)), Some(json!("x")), None],
                vec![None, None, Some(json!(null))],
                vec![None, None, None],
            ]
        );
    }

    #[test]
    fn check_counts_rows_and_takes_the_first_rows_keys_in_order() {
        let r = rows(json!([{"b": 1, "a": {"x": [1, 2]}}, {"c": null}, {}]));
        assert_eq!(
            r.check().unwrap(),
            RowsShape {
                count: 3,
                first_keys: vec!["b".into(), "a".into()],
            }
        );
        assert_eq!(rows(json!([])).check().unwrap().count, 0);
    }

    #[test]
    fn check_names_every_element_that_is_not_an_object() {
        let r = rows(json!([{"a": 1}, 7, "x", [1], null, true, 1.5, {"b": 2}]));
        let found: Vec<_> = r
            .check()
            .unwrap_err()
            .into_iter()
            .map(|p| (p.index, p.found))
            .collect();
        assert_eq!(
            found,
            [
                (Some(1), "a number".to_owned()),
                (Some(2), "a string".to_owned()),
                (Some(3), "an array".to_owned()),
                (Some(4), "null".to_owned()),
                (Some(5), "a boolean".to_owned()),
                (Some(6), "a number".to_owned()),
            ]
        );
    }

    #[test]
    fn check_rejects_anything_but_an_array() {
        for (v, found) in [
            (json!({"a": 1}), "an object"),
            (json!("rows"), "a string"),
            (json!(3), "a number"),
            (json!(null), "null"),
        ] {
            assert_eq!(
                rows(v).check().unwrap_err(),
                [RowProblem {
                    index: None,
                    found: found.to_owned()
                }]
            );
        }
    }

    #[test]
    fn check_refuses_a_cell_the_worker_could_not_build() {
        let r: InlineRows = serde_json::from_str(r#"[{"a": 1}, {"a": [1e400]}]"#).unwrap();
        let problems = r.check().unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].index, None);
        assert!(problems[0].found.contains("out of range"), "{problems:?}");
        assert!(matches!(
            r.for_each_cells(&index(&["a"]), |_| Ok::<_, ()>(())),
            Err(ForEachError::Json(_))
        ));
    }

    fn index(names: &[&str]) -> ColumnIndex {
        ColumnIndex::new(&names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn for_each_cells_reads_the_rows_in_order_into_column_order() {
        let r = rows(json!([{"b": 1, "a": "é\"\n", "z": 0}, {"a": [1, {"x": null}]}]));
        let mut seen = Vec::new();
        let n = r
            .for_each_cells(&index(&["a", "b"]), |cells| {
                seen.push(cells.to_vec());
                Ok::<_, ()>(())
            })
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            seen,
            [
                vec![Some(json!("é\"\n")), Some(json!(1))],
                vec![Some(json!([1, {"x": null}])), None]
            ]
        );
    }

    #[test]
    fn for_each_stops_at_the_callbacks_error_or_a_bad_row() {
        let r = rows(json!([{"a": 1}, {"a": 2}, {"a": 3}]));
        let mut calls = 0;
        let err = r
            .for_each_cells(&index(&["a"]), |_| {
                calls += 1;
                if calls == 2 { Err("full") } else { Ok(()) }
            })
            .unwrap_err();
        assert!(matches!(err, ForEachError::Stopped("full")));
        assert_eq!(calls, 2);

        let bad = rows(json!([{"a": 1}, 5]));
        assert!(matches!(
            bad.for_each_cells(&index(&["a"]), |_| Ok::<_, ()>(())),
            Err(ForEachError::Json(_))
        ));
    }

    #[test]
    fn serializes_as_the_same_json_text() {
        let text = r#"[{"b":1,"a":"x"},{"a":2}]"#;
        let r: InlineRows = serde_json::from_str(text).unwrap();
        assert_eq!(r.as_json(), text);
        assert_eq!(serde_json::to_string(&r).unwrap(), text);
        let task = json!({ "rows": r });
        assert_eq!(task["rows"][0]["b"], 1);
        assert_eq!(InlineRows::default().as_json(), "[]");
        let built = InlineRows::from_rows(&[json!({"z": 1, "y": 2}).as_object().unwrap().clone()]);
        assert_eq!(built.as_json(), r#"[{"z":1,"y":2}]"#);
    }
}
