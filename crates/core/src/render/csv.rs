//! CSV: RFC 4180 quoting via the `csv` crate, with a header row of the column names.
//!
//! Fields are quoted only when needed (they contain `,`, `"`, CR or LF, or are the single
//! empty field of a one-column row); a `"` inside a quoted field is doubled. Records end
//! with the `csv` crate's default terminator, `\n` (RFC 4180 says CRLF; readers, including
//! Excel and the `csv` crate itself, accept both). CR and LF *inside* a value are kept
//! verbatim inside the quotes. Cell text follows [`super::cell::cell_text`].
//!
//! With [`CsvOptions::neutralize_formulas`] a text cell (a header cell or a JSON string)
//! that starts with one of [`FORMULA_TRIGGERS`] is written with a `'` in front, OWASP's
//! advice against CSV injection; numbers, booleans, objects and arrays are left alone (see
//! [`CsvOptions`] for why).
//!
//! With no columns the file is empty whatever the row count: a CSV record cannot have zero
//! fields (the `csv` crate would write `""`, a record with one empty field).

use std::io::Write;

use ::csv::{ByteRecord, Writer, WriterBuilder};

use serde_json::Value;

use super::cell::cell_text;
use super::sink::Sink;
use super::{RenderError, RenderSummary, RowWriter};
use crate::cells::Cells;
use crate::format::{CsvOptions, FORMULA_TRIGGERS};

pub(super) struct CsvWriter<W: Write> {
    out: Writer<Sink<W>>,
    columns: Vec<String>,
    /// Reused for every row, so a row costs no allocation beyond nested cells' text.
    record: ByteRecord,
    /// A number cell's text, written here rather than into a new string per cell.
    number: Vec<u8>,
    /// [`CsvOptions::neutralize_formulas`].
    neutralize: bool,
    rows: u64,
}

impl<W: Write> CsvWriter<W> {
    /// Writes the header row now (into the writer's buffer).
    pub(super) fn new(
        columns: Vec<String>,
        options: CsvOptions,
        sink: Sink<W>,
    ) -> Result<Self, RenderError> {
        let mut out = WriterBuilder::new().from_writer(sink);
        let neutralize = options.neutralize_formulas;
        if !columns.is_empty() {
            let mut header = ByteRecord::new();
            for name in &columns {
                push_text(&mut header, name, neutralize);
            }
            out.write_byte_record(&header)?;
        }
        Ok(Self {
            out,
            columns,
            record: ByteRecord::new(),
            number: Vec::new(),
            neutralize,
            rows: 0,
        })
    }
}

/// Whether a spreadsheet would read `text` as a formula.
fn is_formula_like(text: &str) -> bool {
    text.starts_with(FORMULA_TRIGGERS)
}

/// Appends the text cell `text`, with a `'` in front when `neutralize` and it looks like
/// a formula.
fn push_text(record: &mut ByteRecord, text: &str, neutralize: bool) {
    if neutralize && is_formula_like(text) {
        let mut field = Vec::with_capacity(text.len() + 1);
        field.push(b'\'');
        field.extend_from_slice(text.as_bytes());
        record.push_field(&field);
    } else {
        record.push_field(text.as_bytes());
    }
}

impl<W: Write + Send> RowWriter for CsvWriter<W> {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn write_cells(&mut self, cells: &Cells) -> Result<(), RenderError> {
        debug_assert_eq!(cells.len(), self.columns.len());
        if !self.columns.is_empty() {
            self.record.clear();
            for cell in cells {
                match cell {
                    // Only text can be a formula: a JSON number, boolean, object or array
                    // cannot (see `CsvOptions`).
                    Some(Value::String(s)) => push_text(&mut self.record, s, self.neutralize),
                    // A number's JSON text (what `cell_text` gives it), without allocating.
                    Some(Value::Number(n)) => {
                        self.number.clear();
                        serde_json::to_writer(&mut self.number, n)
                            .expect("a number serializes into a Vec");
                        self.record.push_field(&self.number);
                    }
                    other => self.record.push_field(cell_text(other.as_ref()).as_bytes()),
                }
            }
            self.out.write_byte_record(&self.record)?;
        }
        self.rows += 1;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<RenderSummary, RenderError> {
        let sink = self
            .out
            .into_inner()
            .map_err(|e| RenderError::Io(e.into_error()))?;
        sink.finish()?;
        Ok(RenderSummary { rows: self.rows })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_support::{
        BEYOND_F64, NASTY_TEXT, awkward_columns, awkward_rows, gunzip, row, try_gunzip,
    };
    use super::super::{RenderSpec, render_all};
    use crate::delivery::Row;
    use crate::format::CsvOptions;
    use crate::{Compression, Format};

    fn render(columns: &[String], rows: &[Row], compression: Compression) -> Vec<u8> {
        let spec = RenderSpec {
            format: Format::Csv,
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

    fn parse(bytes: &[u8]) -> Vec<Vec<String>> {
        ::csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(bytes)
            .records()
            .map(|r| r.unwrap().iter().map(String::from).collect())
            .collect()
    }

    fn strings(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn awkward_values_round_trip_through_a_csv_reader_plain_and_gzip() {
        for compression in [Compression::None, Compression::Gzip] {
            let bytes = render(&awkward_columns(), &awkward_rows(), compression);
            let expected = vec![
                strings(&[
                    "id", "text", "int", "float", "flag", "nested", "list", "big", "missing",
                ]),
                strings(&[
                    "1",
                    NASTY_TEXT,
                    "-42",
                    "3.25",
                    "true",
                    r#"{"k":"v, \"q\"","n":{"deep":[true,null]}}"#,
                    r#"[1,"two",[3.5],null]"#,
                    &BEYOND_F64.to_string(),
                    "",
                ]),
                strings(&[
                    "2",
                    "",
                    "9007199254740992",
                    "-1.5e-7",
                    "false",
                    "{}",
                    "[]",
                    "-9223372036854775808",
                    "",
                ]),
                strings(&["", "", "", "", "", "", "", "18446744073709551615", ""]),
                strings(&["", "", "", "", "", "", "", "", ""]),
                strings(&[
                    "5",
                    "007",
                    "0",
                    "1e+300",
                    "",
                    "",
                    "",
                    "-9007199254740993",
                    "",
                ]),
            ];
            assert_eq!(parse(&bytes), expected, "{compression:?}");
        }
    }

    #[test]
    fn quoting_is_rfc_4180_with_lf_record_terminators() {
        let columns = strings(&["a", "b", "c"]);
        let rows = [row(json!({
            "a": "x,y",
            "b": "say \"hi\"",
            "c": "line1\r\nline2",
        }))];
        let text = String::from_utf8(render(&columns, &rows, Compression::None)).unwrap();
        assert_eq!(
            text,
            "a,b,c\n\"x,y\",\"say \"\"hi\"\"\",\"line1\r\nline2\"\n"
        );
    }

    #[test]
    fn header_names_are_quoted_like_values() {
        let columns = strings(&["plain", "with,comma", "with \"quote\"", "💶"]);
        let bytes = render(&columns, &[], Compression::None);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "plain,\"with,comma\",\"with \"\"quote\"\"\",💶\n"
        );
        assert_eq!(parse(&bytes), vec![columns]);
    }

    #[test]
    fn a_one_column_row_with_an_empty_value_is_not_a_blank_line() {
        let columns = strings(&["only"]);
        let rows = [row(json!({"only": null})), row(json!({"only": "x"}))];
        let bytes = render(&columns, &rows, Compression::None);
        assert_eq!(bytes, b"only\n\"\"\nx\n");
        assert_eq!(
            parse(&bytes),
            vec![columns, strings(&[""]), strings(&["x"])]
        );
    }

    #[test]
    fn no_columns_means_an_empty_file_but_rows_are_counted() {
        let rows = [row(json!({"a": 1})), row(json!({}))];
        assert_eq!(render(&[], &rows, Compression::None), b"");
        assert_eq!(render(&[], &rows, Compression::Gzip), b"");
    }

    #[test]
    fn gzip_output_is_compressed_and_needs_its_footer() {
        let columns = strings(&["n", "s"]);
        let rows: Vec<Row> = (0..2000)
            .map(|i| row(json!({"n": i, "s": "the same text again"})))
            .collect();
        let plain = render(&columns, &rows, Compression::None);
        let spec = RenderSpec {
            format: Format::Csv,
            compression: Compression::Gzip,
            columns,
            ..Default::default()
        };
        let mut gz = Vec::new();
        render_all(&spec, &rows, &mut gz).unwrap();
        assert!(
            gz.len() * 4 < plain.len(),
            "{} vs {}",
            gz.len(),
            plain.len()
        );
        assert_eq!(gunzip(&gz), plain);
        // Without the 8-byte footer (CRC32 + length) the stream does not decode.
        assert!(try_gunzip(&gz[..gz.len() - 8]).is_err());
    }

    fn render_neutralized(columns: &[String], rows: &[Row], compression: Compression) -> Vec<u8> {
        let spec = RenderSpec {
            format: Format::Csv,
            compression,
            columns: columns.to_vec(),
            csv: CsvOptions {
                neutralize_formulas: true,
            },
            ..Default::default()
        };
        let mut out = Vec::new();
        render_all(&spec, rows, &mut out).unwrap();
        match compression {
            Compression::None => out,
            Compression::Gzip => gunzip(&out),
        }
    }

    #[test]
    fn neutralized_formulas_read_back_with_a_leading_quote() {
        let columns = strings(&["=cmd", "text", "n", "other"]);
        let rows = [
            row(
                json!({"=cmd": "=HYPERLINK(\"http://evil\",\"x\")", "text": "+1+2", "n": -3, "other": "@SUM(A1)"}),
            ),
            row(
                json!({"=cmd": "-2+3+cmd|' /C calc'!A0", "text": "\tTAB", "n": -1.5e-7, "other": "\rCR"}),
            ),
            row(json!({"=cmd": "safe = text", "text": "'quoted", "n": 42, "other": "-3"})),
            row(json!({"=cmd": true, "text": {"=k": "=v"}, "n": ["=x"], "other": null})),
            row(json!({"=cmd": "", "text": " =leading space", "n": "", "other": "a,=b"})),
        ];
        for compression in [Compression::None, Compression::Gzip] {
            let bytes = render_neutralized(&columns, &rows, compression);
            assert_eq!(
                parse(&bytes),
                vec![
                    strings(&["'=cmd", "text", "n", "other"]),
                    strings(&[
                        "'=HYPERLINK(\"http://evil\",\"x\")",
                        "'+1+2",
                        "-3",
                        "'@SUM(A1)"
                    ]),
                    strings(&["'-2+3+cmd|' /C calc'!A0", "'\tTAB", "-1.5e-7", "'\rCR"]),
                    strings(&["safe = text", "'quoted", "42", "'-3"]),
                    strings(&["true", r#"{"=k":"=v"}"#, r#"["=x"]"#, ""]),
                    strings(&["", " =leading space", "", "a,=b"]),
                ],
                "{compression:?}"
            );
        }
    }

    #[test]
    fn formulas_are_kept_verbatim_by_default() {
        let columns = strings(&["=a", "b"]);
        let rows = [row(json!({"=a": "=1+1", "b": "-3"}))];
        let bytes = render(&columns, &rows, Compression::None);
        assert_eq!(
            parse(&bytes),
            vec![columns.clone(), strings(&["=1+1", "-3"])]
        );
        assert_eq!(
            CsvOptions::default(),
            CsvOptions {
                neutralize_formulas: false
            }
        );
    }
}
