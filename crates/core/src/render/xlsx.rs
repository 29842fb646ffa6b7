//! XLSX: a workbook of typed cells, streamed through `rust_xlsxwriter`'s constant-memory
//! worksheets.
//!
//! Row 0 of every sheet is the header (the column names, bold). Cells follow
//! [`super::cell::typed_cell`]: numbers are number cells (f64; integers beyond ±2^53 are
//! written as text so no digit is lost), booleans are boolean cells, strings are string
//! cells, objects and arrays are their compact JSON text, and null or a missing key writes
//! nothing. Excel cannot tell an empty string from an empty cell, so `""` is also empty.
//!
//! A sheet holds at most 1,048,576 rows including its header. When one is full the writer
//! continues on a new sheet (`Sheet2`, `Sheet3`, …) that repeats the header; nothing is
//! truncated. Each sheet spools its XML to a temporary file (one open file each) until
//! [`RowWriter::finish`], so the number of sheets is capped at [`MAX_SHEETS`]; past that,
//! [`RenderError::TooManyRows`].
//!
//! A text cell may hold at most 32,767 characters (UTF-16 code units, as Excel counts);
//! a longer value (or column name) is an error naming the column, never a silent cut.
//!
//! Only the current row is in memory. At [`RowWriter::finish`] the workbook is zipped
//! straight into the sink: `rust_xlsxwriter` (since 0.96) writes its zip as a stream
//! and needs no `Seek`, so no second temporary copy of the finished file is made.

use std::io::{BufWriter, Write};

use rust_xlsxwriter::{Format as CellFormat, Workbook};

use super::cell::{TypedCell, typed_cell};
use super::sink::Sink;
use super::{RenderError, RenderSummary, RowWriter};
use crate::cells::Cells;

/// Excel's rows per sheet, header included.
pub const MAX_ROWS_PER_SHEET: u32 = 1_048_576;
/// Excel's columns per sheet.
pub const MAX_XLSX_COLUMNS: usize = 16_384;
/// Excel's characters (UTF-16 code units) per text cell.
pub const MAX_CELL_CHARS: usize = 32_767;
/// Most sheets one workbook gets: 64 × 1,048,575 ≈ 67 million data rows. Each sheet keeps a
/// temporary file open until the workbook is written, so this bounds open files as well.
pub const MAX_SHEETS: usize = 64;

/// Longest column name quoted in full in an error message.
const MAX_NAME_IN_ERROR: usize = 100;

pub(super) struct XlsxWriter<W: Write> {
    workbook: Workbook,
    out: BufWriter<Sink<W>>,
    columns: Vec<String>,
    header_format: CellFormat,
    /// Rows per sheet, header included.
    max_rows_per_sheet: u32,
    max_sheets: usize,
    /// Sheets created so far; the last one is being written.
    sheets: usize,
    /// Index of the next row to write in the current sheet.
    next_row: u32,
    rows: u64,
}

impl<W: Write> XlsxWriter<W> {
    /// The production writer: Excel's sheet size and [`MAX_SHEETS`].
    pub(super) fn new(columns: Vec<String>, sink: Sink<W>) -> Result<Self, RenderError> {
        Self::with_limits(columns, sink, MAX_ROWS_PER_SHEET, MAX_SHEETS)
    }

    /// A writer with smaller limits, so tests can fill sheets quickly. `max_rows_per_sheet`
    /// counts the header and is clamped to `2..=MAX_ROWS_PER_SHEET`; `max_sheets` is at
    /// least 1. Creates the first sheet and writes its header now.
    pub(super) fn with_limits(
        columns: Vec<String>,
        sink: Sink<W>,
        max_rows_per_sheet: u32,
        max_sheets: usize,
    ) -> Result<Self, RenderError> {
        if columns.len() > MAX_XLSX_COLUMNS {
            return Err(RenderError::TooManyColumns {
                columns: columns.len(),
                limit: MAX_XLSX_COLUMNS,
            });
        }
        if let Some((column, chars)) = columns
            .iter()
            .find_map(|c| too_long(c).map(|chars| (c, chars)))
        {
            return Err(RenderError::HeaderTooLong {
                column: name_for_error(column),
                chars,
                limit: MAX_CELL_CHARS,
            });
        }
        let mut writer = Self {
            workbook: Workbook::new(),
            out: BufWriter::new(sink),
            columns,
            header_format: CellFormat::new().set_bold(),
            max_rows_per_sheet: max_rows_per_sheet.clamp(2, MAX_ROWS_PER_SHEET),
            max_sheets: max_sheets.max(1),
            sheets: 0,
            next_row: 0,
            rows: 0,
        };
        writer.add_sheet()?;
        Ok(writer)
    }

    /// Starts the next sheet (`Sheet{n}`) with the header in row 0.
    fn add_sheet(&mut self) -> Result<(), RenderError> {
        let sheet = self.workbook.add_worksheet_with_constant_memory()?;
        for (col, name) in (0u16..).zip(&self.columns) {
            sheet.write_string_with_format(0, col, name, &self.header_format)?;
        }
        self.sheets += 1;
        self.next_row = 1;
        Ok(())
    }

    /// Data rows the workbook can hold.
    fn row_limit(&self) -> u64 {
        u64::from(self.max_rows_per_sheet - 1) * self.max_sheets as u64
    }
}

impl<W: Write + Send> RowWriter for XlsxWriter<W> {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn write_cells(&mut self, cells: &Cells) -> Result<(), RenderError> {
        debug_assert_eq!(cells.len(), self.columns.len());
        if self.next_row >= self.max_rows_per_sheet {
            if self.sheets >= self.max_sheets {
                return Err(RenderError::TooManyRows {
                    limit: self.row_limit(),
                });
            }
            self.add_sheet()?;
        }
        let data_row = self.rows + 1;
        let sheet_row = self.next_row;
        let sheet = self.workbook.worksheet_from_index(self.sheets - 1)?;
        for ((col, name), cell) in (0u16..).zip(&self.columns).zip(cells) {
            match typed_cell(cell.as_ref()) {
                TypedCell::Empty => {}
                TypedCell::Number(n) => {
                    sheet.write_number(sheet_row, col, n)?;
                }
                TypedCell::Bool(b) => {
                    sheet.write_boolean(sheet_row, col, b)?;
                }
                TypedCell::Text(text) => {
                    if let Some(chars) = too_long(&text) {
                        return Err(RenderError::CellTooLong {
                            column: name_for_error(name),
                            row: data_row,
                            chars,
                            limit: MAX_CELL_CHARS,
                        });
                    }
                    sheet.write_string(sheet_row, col, text)?;
                }
            }
        }
        self.next_row += 1;
        self.rows += 1;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<RenderSummary, RenderError> {
        let XlsxWriter {
            mut workbook,
            mut out,
            rows,
            ..
        } = *self;
        workbook.save_to_writer(&mut out)?;
        let sink = out.into_inner().map_err(|e| e.into_error())?;
        sink.finish()?;
        Ok(RenderSummary { rows })
    }
}

/// `Some(length in UTF-16 code units)` when `text` does not fit in one Excel cell.
fn too_long(text: &str) -> Option<usize> {
    // UTF-16 never needs more code units than UTF-8 needs bytes: short texts skip counting.
    if text.len() <= MAX_CELL_CHARS {
        return None;
    }
    let units = text.encode_utf16().count();
    (units > MAX_CELL_CHARS).then_some(units)
}

/// A column name for an error message, shortened if it is very long.
fn name_for_error(name: &str) -> String {
    match name.char_indices().nth(MAX_NAME_IN_ERROR) {
        Some((cut, _)) => format!("{}…", &name[..cut]),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use calamine::{Data, Range, Reader, Xlsx, open_workbook_from_rs};
    use serde_json::json;

    use super::super::test_support::{
        BEYOND_F64, NASTY_TEXT, awkward_columns, awkward_rows, gunzip, row,
    };
    use super::super::{RenderSpec, render_all};
    use super::*;
    use crate::delivery::Row;
    use crate::{Compression, Format};

    fn spec(columns: &[String], compression: Compression) -> RenderSpec {
        RenderSpec {
            format: Format::Xlsx,
            compression,
            columns: columns.to_vec(),
            ..Default::default()
        }
    }

    fn render(columns: &[String], rows: &[Row], compression: Compression) -> Vec<u8> {
        let mut out = Vec::new();
        let summary = render_all(&spec(columns, compression), rows, &mut out).unwrap();
        assert_eq!(summary.rows, rows.len() as u64);
        match compression {
            Compression::None => out,
            Compression::Gzip => gunzip(&out),
        }
    }

    /// Every sheet of the workbook, by name, as a grid of cells (missing cells → Empty).
    fn read_sheets(bytes: Vec<u8>) -> Vec<(String, Vec<Vec<Data>>)> {
        let mut workbook: Xlsx<_> = open_workbook_from_rs(Cursor::new(bytes)).unwrap();
        let names = workbook.sheet_names();
        names
            .into_iter()
            .map(|name| {
                let range = workbook.worksheet_range(&name).unwrap();
                (name, grid(&range))
            })
            .collect()
    }

    fn grid(range: &Range<Data>) -> Vec<Vec<Data>> {
        let (height, width) = match range.end() {
            Some((r, c)) => (r + 1, c + 1),
            None => (0, 0),
        };
        (0..height)
            .map(|r| {
                (0..width)
                    .map(|c| range.get_value((r, c)).cloned().unwrap_or(Data::Empty))
                    .collect()
            })
            .collect()
    }

    fn s(text: &str) -> Data {
        Data::String(text.to_owned())
    }

    fn header(columns: &[&str]) -> Vec<Data> {
        columns.iter().map(|c| s(c)).collect()
    }

    #[test]
    fn awkward_values_become_typed_cells_plain_and_gzip() {
        use Data::{Bool, Empty, Float};
        for compression in [Compression::None, Compression::Gzip] {
            let sheets = read_sheets(render(&awkward_columns(), &awkward_rows(), compression));
            assert_eq!(sheets.len(), 1);
            let (name, cells) = &sheets[0];
            assert_eq!(name, "Sheet1");
            let expected = vec![
                header(&[
                    "id", "text", "int", "float", "flag", "nested", "list", "big", "missing",
                ]),
                vec![
                    Float(1.0),
                    s(NASTY_TEXT),
                    Float(-42.0),
                    Float(3.25),
                    Bool(true),
                    s(r#"{"k":"v, \"q\"","n":{"deep":[true,null]}}"#),
                    s(r#"[1,"two",[3.5],null]"#),
                    s(&BEYOND_F64.to_string()),
                    Empty,
                ],
                vec![
                    Float(2.0),
                    Empty, // "" is an empty cell in Excel
                    Float(9_007_199_254_740_992.0),
                    Float(-1.5e-7),
                    Bool(false),
                    s("{}"),
                    s("[]"),
                    s("-9223372036854775808"),
                    Empty,
                ],
                vec![
                    Empty,
                    Empty,
                    Empty,
                    Empty,
                    Empty,
                    Empty,
                    Empty,
                    s("18446744073709551615"),
                    Empty,
                ],
                vec![Empty; 9],
                vec![
                    Float(5.0),
                    s("007"),
                    Float(0.0),
                    Float(1e300),
                    Empty,
                    Empty,
                    Empty,
                    s("-9007199254740993"),
                    Empty,
                ],
            ];
            assert_eq!(cells.len(), expected.len(), "{compression:?}");
            for (r, (got, want)) in cells.iter().zip(&expected).enumerate() {
                assert_eq!(got, want, "{compression:?} row {r}");
            }
        }
    }

    #[test]
    fn full_sheets_continue_on_new_sheets_that_repeat_the_header() {
        let columns = vec!["n".to_string(), "tag".to_string()];
        let rows: Vec<Row> = (1..=5)
            .map(|n| row(json!({"n": n, "tag": format!("r{n}")})))
            .collect();
        for compression in [Compression::None, Compression::Gzip] {
            let mut out = Vec::new();
            let mut writer =
                XlsxWriter::with_limits(columns.clone(), Sink::new(&mut out, compression), 3, 10)
                    .unwrap();
            for r in &rows {
                writer.write_row(r).unwrap();
            }
            let summary = Box::new(writer).finish().unwrap();
            assert_eq!(summary.rows, 5);
            let bytes = match compression {
                Compression::None => out,
                Compression::Gzip => gunzip(&out),
            };
            let sheets = read_sheets(bytes);
            let data = |n: u32| vec![Data::Float(f64::from(n)), s(&format!("r{n}"))];
            assert_eq!(
                sheets,
                vec![
                    (
                        "Sheet1".to_string(),
                        vec![header(&["n", "tag"]), data(1), data(2)]
                    ),
                    (
                        "Sheet2".to_string(),
                        vec![header(&["n", "tag"]), data(3), data(4)]
                    ),
                    ("Sheet3".to_string(), vec![header(&["n", "tag"]), data(5)]),
                ],
                "{compression:?}"
            );
        }
    }

    #[test]
    fn exactly_full_sheets_add_no_empty_trailing_sheet() {
        let columns = vec!["n".to_string()];
        let mut out = Vec::new();
        let mut writer =
            XlsxWriter::with_limits(columns, Sink::new(&mut out, Compression::None), 3, 10)
                .unwrap();
        for n in 1..=4 {
            writer.write_row(&row(json!({"n": n}))).unwrap();
        }
        Box::new(writer).finish().unwrap();
        let names: Vec<String> = read_sheets(out).into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["Sheet1", "Sheet2"]);
    }

    #[test]
    fn rows_beyond_the_last_allowed_sheet_are_an_error_not_a_truncation() {
        let mut writer = XlsxWriter::with_limits(
            vec!["n".to_string()],
            Sink::new(Vec::new(), Compression::None),
            3,
            2,
        )
        .unwrap();
        for n in 1..=4 {
            writer.write_row(&row(json!({"n": n}))).unwrap();
        }
        let err = writer.write_row(&row(json!({"n": 5}))).unwrap_err();
        assert!(
            matches!(err, RenderError::TooManyRows { limit: 4 }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "too many rows: this file format holds at most 4 rows"
        );
    }

    #[test]
    fn production_limits_are_excels() {
        let writer =
            XlsxWriter::new(vec!["a".into()], Sink::new(Vec::new(), Compression::None)).unwrap();
        assert_eq!(writer.max_rows_per_sheet, 1_048_576);
        assert_eq!(writer.max_sheets, MAX_SHEETS);
        assert_eq!(writer.row_limit(), 1_048_575 * MAX_SHEETS as u64);
    }

    #[test]
    fn text_up_to_32767_characters_fits_in_a_cell() {
        let columns = vec!["body".to_string()];
        let longest = "x".repeat(MAX_CELL_CHARS);
        // 16,383 crabs are 32,766 UTF-16 code units.
        let crabs = "🦀".repeat(16_383);
        let rows = [row(json!({"body": longest})), row(json!({"body": crabs}))];
        let sheets = read_sheets(render(&columns, &rows, Compression::None));
        assert_eq!(sheets[0].1[1], vec![s(&longest)]);
        assert_eq!(sheets[0].1[2], vec![s(&crabs)]);
    }

    #[test]
    fn longer_text_is_an_error_naming_the_column_and_row_without_the_content() {
        let columns = vec!["id".to_string(), "body".to_string()];
        let secret = format!("SECRET{}", "x".repeat(MAX_CELL_CHARS));
        let rows = [
            row(json!({"id": 1, "body": "fine"})),
            row(json!({"id": 2, "body": secret})),
        ];
        let err = render_all(&spec(&columns, Compression::None), &rows, Vec::new()).unwrap_err();
        match &err {
            RenderError::CellTooLong {
                column,
                row,
                chars,
                limit,
            } => {
                assert_eq!(column, "body");
                assert_eq!(*row, 2);
                assert_eq!(*chars, MAX_CELL_CHARS + 6);
                assert_eq!(*limit, MAX_CELL_CHARS);
            }
            other => panic!("unexpected error: {other:?}"),
        }
        let message = err.to_string();
        assert_eq!(
            message,
            "row 2, column `body`: text of 32773 characters is longer than Excel's limit of \
             32767 characters per cell"
        );
        assert!(!message.contains("SECRET"));
    }

    #[test]
    fn the_cell_limit_counts_utf16_code_units_like_excel() {
        // 16,384 crabs: 16,384 characters but 32,768 UTF-16 code units.
        let rows = [row(json!({"c": "🦀".repeat(16_384)}))];
        let err =
            render_all(&spec(&["c".into()], Compression::None), &rows, Vec::new()).unwrap_err();
        assert!(
            matches!(err, RenderError::CellTooLong { chars: 32_768, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn nested_json_text_is_held_to_the_cell_limit_too() {
        let rows = [row(json!({"c": ["y".repeat(MAX_CELL_CHARS)]}))];
        let err =
            render_all(&spec(&["c".into()], Compression::None), &rows, Vec::new()).unwrap_err();
        assert!(
            matches!(err, RenderError::CellTooLong { row: 1, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn an_overlong_column_name_fails_at_creation_with_a_shortened_name() {
        let name = "n".repeat(MAX_CELL_CHARS + 1);
        let Err(err) = XlsxWriter::new(vec![name], Sink::new(Vec::new(), Compression::None)) else {
            panic!("expected an error");
        };
        match err {
            RenderError::HeaderTooLong { column, chars, .. } => {
                assert_eq!(column, format!("{}…", "n".repeat(100)));
                assert_eq!(chars, MAX_CELL_CHARS + 1);
            }
            other => panic!("unexpected error: {other:?}"),
        }
    }

    #[test]
    fn more_columns_than_excel_allows_is_an_error() {
        let columns: Vec<String> = (0..=MAX_XLSX_COLUMNS).map(|i| format!("c{i}")).collect();
        let Err(err) = XlsxWriter::new(columns, Sink::new(Vec::new(), Compression::None)) else {
            panic!("expected an error");
        };
        assert!(
            matches!(
                err,
                RenderError::TooManyColumns {
                    columns: 16_385,
                    limit: 16_384
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn the_last_excel_column_is_usable() {
        let columns: Vec<String> = (0..MAX_XLSX_COLUMNS).map(|i| format!("c{i}")).collect();
        let rows = [row(json!({"c16383": true}))];
        let sheets = read_sheets(render(&columns, &rows, Compression::None));
        let cells = &sheets[0].1;
        assert_eq!(cells[0].len(), MAX_XLSX_COLUMNS);
        assert_eq!(cells[0][16_383], s("c16383"));
        assert_eq!(cells[1][16_383], Data::Bool(true));
        assert_eq!(cells[1][0], Data::Empty);
    }
}
