//! A row as its cells in column order, read straight from JSON.
//!
//! Every renderer writes a row column by column. Building each row as a
//! [`Row`](crate::delivery::Row) first (an ordered map, every key allocated and hashed) cost
//! more than rendering it; reading an object straight into a reused buffer of cells, one
//! per column, skips the keys and the fields no column asks for.

use std::collections::HashMap;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

/// One row's cells in column order; `None` where the row has no such key.
pub type Cells = [Option<Value>];

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

    fn position(&self, key: &str) -> Option<usize> {
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
        self.cells.clear();
        self.cells.resize(self.columns.len(), None);
        while let Some(position) = map.next_key_seed(KeyPosition(self.columns))? {
            match position {
                // A repeated key: the last one wins, as in a map.
                Some(i) => self.cells[i] = Some(map.next_value::<Value>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A key, looked up without being allocated.
struct KeyPosition<'a>(&'a ColumnIndex);

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
        Ok(self.0.position(key))
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

    #[test]
    fn anything_but_one_object_is_an_error() {
        let index = ColumnIndex::new(&columns(&["a"]));
        let mut cells = Vec::new();
        for bad in ["[1]", "7", "\"a\"", "{\"a\": 1} {}", "{\"a\": }"] {
            assert!(index.parse(bad, &mut cells).is_err(), "{bad}");
        }
    }
}
