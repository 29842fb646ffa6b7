//! A row as its cells in column order, read straight from JSON.
//!
//! Every renderer writes a row column by column. Building each row as a
//! [`Row`](crate::delivery::Row) first (an ordered map, every key allocated and hashed) cost
//! more than rendering it; reading an object straight into a reused buffer of cells, one
//! per column, skips the keys and the fields no column asks for.

mod plain;

use std::collections::HashMap;
use std::fmt;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Number, Value};

/// One row's cells in column order; `None` where the row has no such key.
pub type Cells = [Option<Value>];

pub(crate) use plain::{Plain, each_plain_row};

/// Column positions by name, built once per delivery.
#[derive(Debug, Clone)]
pub struct ColumnIndex {
    names: Vec<String>,
    /// For many columns; a short list is searched in order.
    by_name: Option<HashMap<String, usize>>,
}

/// Up to this many columns, a linear search beats hashing the key.
const LINEAR_UP_TO: usize = 16;

impl ColumnIndex {
    pub fn new(columns: &[String]) -> Self {
        let by_name = (columns.len() > LINEAR_UP_TO).then(|| {
            let mut map = HashMap::with_capacity(columns.len());
            for (i, c) in columns.iter().enumerate() {
                map.entry(c.clone()).or_insert(i);
            }
            map
        });
        Self {
            names: columns.to_vec(),
            by_name,
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Where column `key` is; `hint` is where a row's keys in column order would put it,
    /// tried first: rows mostly come with their keys in the columns' order.
    pub(crate) fn position(&self, key: &str, hint: usize) -> Option<usize> {
        if self.names.get(hint).is_some_and(|c| c == key) {
            return Some(hint);
        }
        match &self.by_name {
            Some(map) => map.get(key).copied(),
            None => self.names.iter().position(|c| c == key),
        }
    }

    /// Reads the JSON object in `text` into `cells`.
    pub fn parse(&self, text: &str, cells: &mut Vec<Option<Value>>) -> serde_json::Result<()> {
        let mut de = serde_json::Deserializer::from_str(text);
        self.seed(cells).deserialize(&mut de)?;
        de.end()
    }

    /// Reads one JSON object into `cells` (cleared first, one slot per column).
    pub fn seed<'a>(&'a self, cells: &'a mut Vec<Option<Value>>) -> CellsSeed<'a> {
        CellsSeed {
            columns: self,
            cells,
        }
    }
}

/// Deserializes one JSON object into a buffer of cells; see [`ColumnIndex::seed`].
#[derive(Debug)]
pub struct CellsSeed<'a> {
    columns: &'a ColumnIndex,
    cells: &'a mut Vec<Option<Value>>,
}

impl<'de> DeserializeSeed<'de> for CellsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for CellsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut filling = Filling::begin(self.cells, self.columns.len());
        let mut hint = 0;
        while let Some(position) = map.next_key_seed(KeyPosition(self.columns, hint))? {
            match position {
                // A repeated key: the last one wins, as in a map.
                Some(i) => {
                    map.next_value_seed(CellSeed(&mut self.cells[i]))?;
                    filling.set(i);
                    hint = i + 1;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        filling.end(self.cells);
        Ok(())
    }
}

/// Up to this many columns a row's cells are overwritten in place (one bit each says
/// which the row had).
const REUSE_UP_TO: usize = 128;

/// One row being read into the last row's buffer of cells, by [`CellsSeed`] or the plain
/// fast path alike. The cells are overwritten in place, so that a text cell keeps its
/// buffer from row to row; the cells this row has no key for are emptied at its end. Past
/// [`REUSE_UP_TO`] columns, every row starts from empty cells.
pub(crate) struct Filling {
    reuse: bool,
    /// The cells this row set, one bit per column.
    seen: u128,
}

impl Filling {
    #[inline]
    pub(crate) fn begin(cells: &mut Vec<Option<Value>>, columns: usize) -> Self {
        let reuse = columns <= REUSE_UP_TO && cells.len() == columns;
        if !reuse {
            cells.clear();
            cells.resize(columns, None);
        }
        Self { reuse, seen: 0 }
    }

    /// The row set cell `i`.
    #[inline]
    pub(crate) fn set(&mut self, i: usize) {
        if i < REUSE_UP_TO {
            self.seen |= 1 << i;
        }
    }

    /// Empties the cells the row did not set.
    #[inline]
    pub(crate) fn end(self, cells: &mut [Option<Value>]) {
        if self.reuse {
            for (i, cell) in cells.iter_mut().enumerate() {
                if self.seen & (1 << i) == 0 {
                    *cell = None;
                }
            }
        }
    }
}

/// Reads one value into a cell, as [`Value`]'s own deserializer would, except that text
/// goes into the cell's string when it holds one.
struct CellSeed<'a>(&'a mut Option<Value>);

impl<'de> DeserializeSeed<'de> for CellSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CellSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        *self.0 = Some(Value::Null);
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        *self.0 = Some(Value::Bool(b));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<(), E> {
        *self.0 = Some(Value::Number(n.into()));
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<(), E> {
        *self.0 = Some(Value::Number(n.into()));
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<(), E> {
        *self.0 = Some(Number::from_f64(f).map_or(Value::Null, Value::Number));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        set_text(self.0, text);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        *self.0 = Some(Value::deserialize(SeqAccessDeserializer::new(seq))?);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        *self.0 = Some(Value::deserialize(MapAccessDeserializer::new(map))?);
        Ok(())
    }
}

/// Makes `cell` the text `text`, in the string it already holds if it holds one (so a
/// text column's buffer lasts from row to row).
#[inline]
pub(crate) fn set_text(cell: &mut Option<Value>, text: &str) {
    match cell {
        Some(Value::String(s)) => {
            s.clear();
            s.push_str(text);
        }
        cell => *cell = Some(Value::String(text.to_owned())),
    }
}

/// A key, looked up without being allocated (the column after the last key's first).
struct KeyPosition<'a>(&'a ColumnIndex, usize);

impl<'de> DeserializeSeed<'de> for KeyPosition<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyPosition<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.position(key, self.1))
    }
}

/// Reads a whole object the slow way, for comparison in tests.
#[cfg(test)]
fn cells_via_map(columns: &[String], text: &str) -> Vec<Option<Value>> {
    use serde::Deserialize;
    let row =
        crate::delivery::Row::deserialize(&mut serde_json::Deserializer::from_str(text)).unwrap();
    columns.iter().map(|c| row.get(c).cloned()).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn columns(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn cells_come_in_column_order_and_unknown_keys_are_skipped() {
        let cols = columns(&["b", "a", "missing"]);
        let index = ColumnIndex::new(&cols);
        let mut cells = Vec::new();
        let text = r#"{"a": [1, {"x": null}], "extra": {"deep": [1,2]}, "b": "t\u00e9\"", "a": 2}"#;
        index.parse(text, &mut cells).unwrap();
        assert_eq!(cells, [Some(json!("té\"")), Some(json!(2)), None]);
        assert_eq!(cells, cells_via_map(&cols, text));
        // The buffer is reused: no cell of the last row leaks into the next.
        index.parse(r#"{"missing": null}"#, &mut cells).unwrap();
        assert_eq!(cells, [None, None, Some(Value::Null)]);
    }

    #[test]
    fn many_columns_are_found_by_hash_and_escaped_keys_are_matched() {
        let cols: Vec<String> = (0..40)
            .map(|i| format!("c{i}"))
            .chain(["é\"k".to_owned()])
            .collect();
        let index = ColumnIndex::new(&cols);
        assert!(index.by_name.is_some());
        let mut cells = Vec::new();
        let text = r#"{"c39": 39, "c0": 0, "\u00e9\"k": true, "zz": 1}"#;
        index.parse(text, &mut cells).unwrap();
        assert_eq!(cells, cells_via_map(&cols, text));
        assert_eq!(cells[0], Some(json!(0)));
        assert_eq!(cells[39], Some(json!(39)));
        assert_eq!(cells[40], Some(json!(true)));
        assert_eq!(cells.iter().filter(|c| c.is_some()).count(), 3);
    }

    /// One buffer through rows whose cells change kind, go missing, repeat and nest: each
    /// row reads as a map would, whatever the row before held.
    #[test]
    fn a_reused_buffer_gives_each_row_exactly_its_own_cells() {
        let rows = [
            r#"{"a": "long text that leaves capacity", "b": 1, "c": {"x": [1, "y"]}}"#,
            r#"{"a": "s", "c": "now text", "b": null}"#,
            r#"{"b": "\u00e9\"", "a": 2.5}"#,
            r#"{}"#,
            r#"{"c": [true, null], "a": "x", "a": false, "d": "ignored"}"#,
            r#"{"a": -3, "b": 18446744073709551615, "c": "t"}"#,
        ];
        for names in [vec!["a", "b", "c"], vec!["c", "a"]] {
            let cols = columns(&names);
            let index = ColumnIndex::new(&cols);
            let mut cells = Vec::new();
            for text in rows.iter().chain(rows.iter().rev()) {
                index.parse(text, &mut cells).unwrap();
                assert_eq!(cells, cells_via_map(&cols, text), "{names:?} {text}");
            }
        }
    }

    /// Past the columns whose cells are reused in place, rows still read right.
    #[test]
    fn rows_of_very_many_columns_read_right_in_turn() {
        let cols: Vec<String> = (0..REUSE_UP_TO + 10).map(|i| format!("c{i}")).collect();
        let index = ColumnIndex::new(&cols);
        let mut cells = Vec::new();
        let full = format!(
            "{{{}}}",
            (0..cols.len())
                .map(|i| format!(r#""c{i}": "v{i}""#))
                .collect::<Vec<_>>()
                .join(",")
        );
        let sparse = r#"{"c0": 1, "c137": 2}"#;
        for text in [full.as_str(), sparse, full.as_str(), sparse] {
            index.parse(text, &mut cells).unwrap();
            assert_eq!(cells, cells_via_map(&cols, text));
        }
    }

    #[test]
    fn anything_but_one_object_is_an_error() {
        let index = ColumnIndex::new(&columns(&["a"]));
        let mut cells = Vec::new();
        for bad in ["[1]", "7", "\"a\"", "{\"a\": 1} {}", "{\"a\": }"] {
            assert!(index.parse(bad, &mut cells).is_err(), "{bad}");
        }
    }
}
