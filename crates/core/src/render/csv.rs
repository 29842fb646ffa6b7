//! CSV as RFC 4180 writes it, with a header row of the column names.
//!
//! Fields are quoted only when needed: they contain `,`, `"`, CR or LF, or are the single
//! empty field of a one-column row (an unquoted one would be a blank line, which readers
//! skip). A `"` inside a quoted field is doubled. Records end with `\n` (RFC 4180 says CRLF;
//! readers, Excel and the `csv` crate among them, accept both). CR and LF *inside* a value
//! are kept verbatim inside the quotes. These are the `csv` crate's rules with its default
//! settings, which this writer used to be; a test renders the same rows both ways. Cell
//! text follows [`super::cell::cell_text`].
//!
//! The rows are written straight into one buffer, a field at a time: going through the `csv`
//! crate's `ByteRecord` copied every field twice and cost a sixth of a small delivery's
//! rendering (`valgrind --tool=callgrind`, `docs/benchmarks.md`).
//!
//! With [`CsvOptions::neutralize_formulas`] a text cell (a header cell or a JSON string)
//! that starts with one of [`FORMULA_TRIGGERS`] is written with a `'` in front, OWASP's
//! advice against CSV injection; numbers, booleans, objects and arrays are left alone (see
//! [`CsvOptions`] for why).
//!
//! With no columns the file is empty whatever the row count: a CSV record cannot have zero
//! fields.

use std::io::Write;

use serde_json::Value;

use super::cell::cell_text;
use super::sink::Sink;
use super::{RenderError, RenderSummary, RowWriter};
use crate::cells::Cells;
use crate::format::{CsvOptions, FORMULA_TRIGGERS};

/// The buffer goes to the sink once it holds this much.
const FLUSH_AT: usize = 32 * 1024;

pub(super) struct CsvWriter<W: Write> {
    sink: Sink<W>,
    /// Rendered rows not yet in the sink.
    buf: Vec<u8>,
    columns: Vec<String>,
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
        let neutralize = options.neutralize_formulas;
        let mut buf = Vec::with_capacity(FLUSH_AT + 4096);
        if !columns.is_empty() {
            write_record(&mut buf, &columns, |buf, name| {
                push_text(buf, name, neutralize);
            });
        }
        Ok(Self {
            sink,
            buf,
            columns,
            neutralize,
            rows: 0,
        })
    }
}

/// Whether a spreadsheet would read `text` as a formula.
fn is_formula_like(text: &str) -> bool {
    text.starts_with(FORMULA_TRIGGERS)
}

/// Whether a field must be quoted: it holds the delimiter, the quote, CR or LF.
fn needs_quotes(field: &[u8]) -> bool {
    // All four are at or below b','; most bytes of most text are above it.
    field
        .iter()
        .any(|&b| b <= b',' && matches!(b, b',' | b'"' | b'\r' | b'\n'))
}

/// Appends `field`, quoted if it must be, `"` doubled inside the quotes; `prefix` (a `'`
/// or nothing) goes in front of it, inside the quotes.
fn push_field(buf: &mut Vec<u8>, prefix: &[u8], field: &[u8]) {
    if !needs_quotes(field) {
        buf.extend_from_slice(prefix);
        buf.extend_from_slice(field);
        return;
    }
    buf.push(b'"');
    buf.extend_from_slice(prefix);
    let mut rest = field;
    while let Some(i) = rest.iter().position(|&b| b == b'"') {
        buf.extend_from_slice(&rest[..=i]);
        buf.push(b'"');
        rest = &rest[i + 1..];
    }
    buf.extend_from_slice(rest);
    buf.push(b'"');
}

/// Appends the text cell `text`, with a `'` in front when `neutralize` and it looks like
/// a formula.
fn push_text(buf: &mut Vec<u8>, text: &str, neutralize: bool) {
    let prefix: &[u8] = if neutralize && is_formula_like(text) {
        b"'"
    } else {
        b""
    };
    push_field(buf, prefix, text.as_bytes());
}

/// Appends one record: `fields` written by `write` one at a time, `,` between them, `\n`
/// after. A record of one empty field is written `""`: a blank line would be no record at
/// all.
fn write_record<T>(buf: &mut Vec<u8>, fields: &[T], mut write: impl FnMut(&mut Vec<u8>, &T)) {
    let mut field_start = buf.len();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
            field_start = buf.len();
        }
        write(buf, field);
    }
    if fields.len() == 1 && buf.len() == field_start {
        buf.extend_from_slice(b"\"\"");
    }
    buf.push(b'\n');
}

impl<W: Write + Send> RowWriter for CsvWriter<W> {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn write_cells(&mut self, cells: &Cells) -> Result<(), RenderError> {
        debug_assert_eq!(cells.len(), self.columns.len());
        if !cells.is_empty() {
            let neutralize = self.neutralize;
            write_record(&mut self.buf, cells, |buf, cell| match cell {
                // Only text can be a formula: a JSON number, boolean, object or array
                // cannot (see `CsvOptions`).
                Some(Value::String(s)) => push_text(buf, s, neutralize),
                // A number's JSON text (what `cell_text` gives it) never needs quotes.
                Some(Value::Number(n)) => {
                    serde_json::to_writer(&mut *buf, n).expect("a number serializes into a Vec")
                }
                other => push_field(buf, b"", cell_text(other.as_ref()).as_bytes()),
            });
            if self.buf.len() >= FLUSH_AT {
                self.sink.write_all(&self.buf)?;
                self.buf.clear();
            }
        }
        self.rows += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<RenderSummary, RenderError> {
        self.sink.write_all(&self.buf)?;
        self.sink.finish()?;
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

    /// The `csv` crate's writer, with its default settings, on the same cell texts: the
    /// bytes must be the same, whatever the fields hold and however many there are.
    fn reference(columns: &[String], rows: &[Row]) -> Vec<u8> {
        let mut w = ::csv::Writer::from_writer(Vec::new());
        if !columns.is_empty() {
            w.write_record(columns).unwrap();
            for r in rows {
                w.write_record(
                    columns
                        .iter()
                        .map(|c| super::super::cell::cell_text(r.get(c)).into_owned()),
                )
                .unwrap();
            }
        }
        w.into_inner().unwrap()
    }

    #[test]
    fn fields_are_written_byte_for_byte_as_the_csv_crate_writes_them() {
        const PIECES: [&str; 12] = [
            ",", "\"", "\r", "\n", "\r\n", " ", "'", "=", "a", "é", "\"\"", "x,\"y\"",
        ];
        // xorshift: the same cases on every run, with no dependency.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let text = |next: &mut dyn FnMut(u64) -> u64| -> String {
            (0..next(5)).map(|_| PIECES[next(12) as usize]).collect()
        };
        for case in 0..400 {
            let width = 1 + next(4) as usize;
            let columns: Vec<String> = (0..width)
                .map(|i| format!("c{i}{}", text(&mut next)))
                .collect();
            let rows: Vec<Row> = (0..1 + next(6))
                .map(|_| {
                    let mut r = Row::new();
                    for c in &columns {
                        let value = match next(7) {
                            0 => continue,
                            1 => json!(null),
                            2 => json!(next(1000) as i64 - 500),
                            3 => json!(next(1000) as f64 / 7.0),
                            4 => json!({ text(&mut next): [text(&mut next), true] }),
                            _ => json!(text(&mut next)),
                        };
                        r.insert(c.clone(), value);
                    }
                    r
                })
                .collect();
            let ours = render(&columns, &rows, Compression::None);
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&reference(&columns, &rows)),
                "case {case}"
            );
        }
    }

    #[test]
    fn output_past_the_buffer_reaches_the_sink_whole() {
        let columns = strings(&["n", "s"]);
        let rows: Vec<Row> = (0..5000)
            .map(|i| row(json!({"n": i, "s": format!("text, \"{i}\"\nline")})))
            .collect();
        let ours = render(&columns, &rows, Compression::None);
        assert!(ours.len() > 3 * super::FLUSH_AT, "{} bytes", ours.len());
        assert_eq!(ours, reference(&columns, &rows));
        assert_eq!(parse(&ours).len(), 5001);
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
