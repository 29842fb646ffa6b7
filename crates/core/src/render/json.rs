//! JSON (one array of objects) and NDJSON (one object per line), written incrementally.
//!
//! Every row becomes one compact object with exactly the columns as keys, in column order;
//! a missing key is `null` and values are written as received (numbers keep their exact
//! JSON text, nested objects and arrays stay nested). JSON is `[`, the rows separated by
//! `,`, then `]`, with no whitespace; NDJSON is each object followed by `\n`.

use std::io::{BufWriter, Write};

use serde_json::Value;

use super::sink::Sink;
use super::{RenderError, RenderSummary, RowWriter};
use crate::cells::Cells;

static NULL: Value = Value::Null;

/// How rows are laid out in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// `[{...},{...}]`
    Array,
    /// `{...}\n{...}\n`
    Lines,
}

pub(super) struct JsonWriter<W: Write> {
    out: BufWriter<Sink<W>>,
    layout: Layout,
    columns: Vec<String>,
    rows: u64,
}

impl<W: Write> JsonWriter<W> {
    /// For [`Layout::Array`], writes the opening `[` now (into the buffer).
    pub(super) fn new(
        layout: Layout,
        columns: Vec<String>,
        sink: Sink<W>,
    ) -> Result<Self, RenderError> {
        let mut out = BufWriter::new(sink);
        if layout == Layout::Array {
            out.write_all(b"[")?;
        }
        Ok(Self {
            out,
            layout,
            columns,
            rows: 0,
        })
    }

    /// Writes `row` as one compact object of the columns, without building it in memory.
    fn write_object(&mut self, cells: &Cells) -> Result<(), RenderError> {
        debug_assert_eq!(cells.len(), self.columns.len());
        let out = &mut self.out;
        out.write_all(b"{")?;
        for (i, (column, cell)) in self.columns.iter().zip(cells).enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            serde_json::to_writer(&mut *out, column)?;
            out.write_all(b":")?;
            serde_json::to_writer(&mut *out, cell.as_ref().unwrap_or(&NULL))?;
        }
        out.write_all(b"}")?;
        Ok(())
    }
}

impl<W: Write + Send> RowWriter for JsonWriter<W> {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn write_cells(&mut self, cells: &Cells) -> Result<(), RenderError> {
        if self.layout == Layout::Array && self.rows > 0 {
            self.out.write_all(b",")?;
        }
        self.write_object(cells)?;
        if self.layout == Layout::Lines {
            self.out.write_all(b"\n")?;
        }
        self.rows += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<RenderSummary, RenderError> {
        if self.layout == Layout::Array {
            self.out.write_all(b"]")?;
        }
        let sink = self.out.into_inner().map_err(|e| e.into_error())?;
        sink.finish()?;
        Ok(RenderSummary { rows: self.rows })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use super::super::test_support::{
        BEYOND_F64, NASTY_TEXT, awkward_columns, awkward_rows, gunzip, row,
    };
    use super::super::{RenderSpec, render_all};
    use super::*;
    use crate::delivery::Row;
    use crate::{Compression, Format};

    fn render(
        format: Format,
        columns: &[String],
        rows: &[Row],
        compression: Compression,
    ) -> Vec<u8> {
        let spec = RenderSpec {
            format,
            compression,
            columns: columns.to_vec(),
            ..Default::default()
        };
        let mut out = Vec::new();
        let summary = render_all(&spec, rows, &mut out).unwrap();
        assert_eq!(summary.rows, rows.len() as u64);
        match compression {
            Compression::None => out,
            Compression::Gzip => gunzip(&out),
        }
    }

    /// The awkward rows as they must come back: exactly the columns, in order, and `null`
    /// for missing keys.
    fn expected_awkward() -> Vec<Value> {
        vec![
            json!({
                "id": 1,
                "text": NASTY_TEXT,
                "int": -42,
                "float": 3.25,
                "flag": true,
                "nested": {"k": "v, \"q\"", "n": {"deep": [true, null]}},
                "list": [1, "two", [3.5], null],
                "big": BEYOND_F64,
                "missing": null,
            }),
            json!({
                "id": 2,
                "text": "",
                "int": 9_007_199_254_740_992_u64,
                "float": -1.5e-7,
                "flag": false,
                "nested": {},
                "list": [],
                "big": i64::MIN,
                "missing": null,
            }),
            json!({
                "id": null, "text": null, "int": null, "float": null, "flag": null,
                "nested": null, "list": null, "big": u64::MAX, "missing": null,
            }),
            json!({
                "id": null, "text": null, "int": null, "float": null, "flag": null,
                "nested": null, "list": null, "big": null, "missing": null,
            }),
            json!({
                "id": 5, "text": "007", "int": 0, "float": 1e300, "flag": null,
                "nested": null, "list": null, "big": -9_007_199_254_740_993_i64, "missing": null,
            }),
        ]
    }

    fn keys(object: &Value) -> Vec<String> {
        object
            .as_object()
            .map(Map::keys)
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    #[test]
    fn json_array_parses_back_to_exactly_the_expected_values_plain_and_gzip() {
        for compression in [Compression::None, Compression::Gzip] {
            let bytes = render(
                Format::Json,
                &awkward_columns(),
                &awkward_rows(),
                compression,
            );
            let parsed: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(parsed, Value::Array(expected_awkward()), "{compression:?}");
            for object in parsed.as_array().unwrap() {
                assert_eq!(keys(object), awkward_columns(), "key order is column order");
            }
        }
    }

    #[test]
    fn ndjson_is_one_compact_object_per_line_plain_and_gzip() {
        for compression in [Compression::None, Compression::Gzip] {
            let bytes = render(
                Format::Ndjson,
                &awkward_columns(),
                &awkward_rows(),
                compression,
            );
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.ends_with('\n'));
            let lines: Vec<&str> = text.split_terminator('\n').collect();
            assert_eq!(lines.len(), 5, "embedded newlines are escaped, never raw");
            let parsed: Vec<Value> = lines
                .iter()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(parsed, expected_awkward(), "{compression:?}");
            for object in &parsed {
                assert_eq!(keys(object), awkward_columns());
            }
            assert!(
                !text.contains(": ") && !text.contains(", \""),
                "compact: {text}"
            );
        }
    }

    #[test]
    fn json_output_is_compact_and_incremental() {
        let columns = vec!["a".to_string(), "b".to_string()];
        let rows = [
            row(json!({"b": [1, {"x": null}], "a": "q\"\n"})),
            row(json!({})),
            row(json!({"a": 1.5, "b": true})),
        ];
        let text =
            String::from_utf8(render(Format::Json, &columns, &rows, Compression::None)).unwrap();
        assert_eq!(
            text,
            r#"[{"a":"q\"\n","b":[1,{"x":null}]},{"a":null,"b":null},{"a":1.5,"b":true}]"#
        );
    }

    #[test]
    fn big_integers_keep_every_digit() {
        let columns = vec!["n".to_string()];
        let rows = [
            row(json!({"n": u64::MAX})),
            row(json!({"n": i64::MIN})),
            row(json!({"n": BEYOND_F64})),
        ];
        let text =
            String::from_utf8(render(Format::Ndjson, &columns, &rows, Compression::None)).unwrap();
        assert_eq!(
            text,
            "{\"n\":18446744073709551615}\n{\"n\":-9223372036854775808}\n{\"n\":9007199254740993}\n"
        );
    }

    #[test]
    fn no_columns_gives_empty_objects() {
        let rows = [row(json!({"a": 1})), row(json!({}))];
        assert_eq!(
            render(Format::Json, &[], &rows, Compression::None),
            b"[{},{}]"
        );
        assert_eq!(
            render(Format::Ndjson, &[], &rows, Compression::None),
            b"{}\n{}\n"
        );
    }

    #[test]
    fn column_names_that_need_escaping_are_escaped() {
        let columns = vec!["we\"ird\nname".to_string(), "🦀".to_string()];
        let rows = [row(json!({"we\"ird\nname": 1, "🦀": "ok"}))];
        let bytes = render(Format::Json, &columns, &rows, Compression::None);
        let parsed: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed, json!([{"we\"ird\nname": 1, "🦀": "ok"}]));
    }
}
