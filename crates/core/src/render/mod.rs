//! Row-by-row file writers: turn a delivery's result rows into the bytes of one CSV, JSON,
//! NDJSON or XLSX file, optionally gzip-compressed, or one Parquet file.
//!
//! This module owns the *file format*: which columns appear and in what order, how a JSON
//! value becomes a cell, quoting, typed spreadsheet cells, sheet splitting and compression.
//! It does not know where the bytes go: callers hand in any [`Write`] sink (a `Vec<u8>`, a
//! file, an upload buffer) and get back a [`RowWriter`].
//!
//! Everything is row by row on purpose. A later step streams millions of rows into
//! multipart uploads, so no writer here holds the whole file (or all rows) in memory: CSV,
//! JSON and NDJSON rows go straight through a small buffer into the sink, and XLSX rows go
//! straight into `rust_xlsxwriter`'s constant-memory worksheets, which keep only the current
//! row in memory and spool the sheet XML to a temporary file until [`RowWriter::finish`]
//! zips the workbook into the sink. Parquet rows are buffered one row group at a time
//! (bounded in rows and bytes), then encoded into the sink.
//!
//! Shared rules (see each writer for the details):
//!
//! - The columns are [`RenderSpec::columns`], in that order, for every row. A key missing
//!   from a row is an empty cell (CSV, XLSX) or `null` (JSON, NDJSON); keys that are not
//!   columns are dropped.
//! - An empty result is still a valid file: CSV is the header line (or nothing when there
//!   are no columns), JSON is `[]`, NDJSON is empty and XLSX is a workbook with the header.
//! - With [`Compression::Gzip`] the whole file is gzip-compressed (default level) and
//!   [`RowWriter::finish`] writes the gzip footer. Parquet compresses inside the file
//!   ([`RenderSpec::parquet`]) and refuses gzip around it.
//! - Any error leaves the output incomplete: drop the writer and do not deliver what was
//!   written.
//!
//! Files: `cell.rs` (JSON value → cell), `sink.rs` (plain or gzip output), `csv.rs`,
//! `json.rs` (JSON and NDJSON), `xlsx.rs`, `parquet.rs` and `parquet_value.rs` (Parquet's
//! types, coercions and inference).

mod cell;
mod csv;
mod json;
mod parquet;
mod parquet_value;
mod sink;
mod xlsx;

#[cfg(test)]
mod test_support;

use std::io::Write;

use crate::cells::Cells;
use crate::delivery::Row;
use crate::format::{CsvOptions, ParquetOptions};
use crate::{Compression, Format};

pub use self::cell::MAX_EXACT_INTEGER;
pub use self::parquet::{MAX_ROW_GROUP_BYTES, MAX_ROW_GROUP_ROWS};
pub use self::xlsx::{MAX_CELL_CHARS, MAX_ROWS_PER_SHEET, MAX_SHEETS, MAX_XLSX_COLUMNS};

use self::sink::Sink;

/// Describes the file to produce.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RenderSpec {
    pub format: Format,
    pub compression: Compression,
    /// The columns of every row, in order; also the CSV/XLSX header.
    pub columns: Vec<String>,
    /// Formula neutralising; other formats ignore it.
    pub csv: CsvOptions,
    /// Parquet's codec and declared column types; other formats ignore them.
    pub parquet: ParquetOptions,
}

/// Why a file could not be rendered. Messages name columns and row numbers, never cell
/// contents.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The sink (or a temporary file) failed. I/O failures reported through the
    /// `serde_json` and `rust_xlsxwriter` crates (its temporary files and its zip writer
    /// included) are unwrapped into this variant, so a failing sink or disk reads the same
    /// whatever the format.
    #[error("I/O error while writing the rendered file: {0}")]
    Io(#[from] std::io::Error),
    #[error("XLSX error: {0}")]
    Xlsx(rust_xlsxwriter::XlsxError),
    #[error("JSON error: {0}")]
    Json(serde_json::Error),
    /// The format cannot hold more rows (XLSX: every allowed sheet is full).
    #[error("too many rows: this file format holds at most {limit} rows")]
    TooManyRows { limit: u64 },
    /// More columns than the format can hold (XLSX: 16,384).
    #[error("too many columns: {columns} columns, this file format holds at most {limit}")]
    TooManyColumns { columns: usize, limit: usize },
    /// A text cell longer than Excel allows. `row` counts data rows from 1 (the header
    /// is not a data row); `chars` is the length in UTF-16 code units, as Excel counts.
    #[error(
        "row {row}, column `{column}`: text of {chars} characters is longer than Excel's \
         limit of {limit} characters per cell"
    )]
    CellTooLong {
        column: String,
        row: u64,
        chars: usize,
        limit: usize,
    },
    /// A value that does not fit its Parquet column's type (declared, or inferred from the
    /// first row group). `row` counts data rows from 1; `found` says what kind of value it
    /// is ("a string", "an integer beyond INT64's range"), never the value.
    #[error(
        "row {row}, column `{column}`: {found} does not fit the column's type {column_type} ({how})"
    )]
    ValueDoesNotFit {
        column: String,
        row: u64,
        column_type: &'static str,
        how: &'static str,
        found: String,
    },
    /// The `parquet` crate refused something (not an I/O error).
    #[error("Parquet error: {0}")]
    Parquet(String),
    /// A combination the writers do not support (gzip around a Parquet file).
    #[error("{0}")]
    Unsupported(&'static str),
    /// A column name longer than Excel allows in a header cell.
    #[error(
        "column `{column}`: the name ({chars} characters) is longer than Excel's limit of \
         {limit} characters per cell"
    )]
    HeaderTooLong {
        column: String,
        chars: usize,
        limit: usize,
    },
}

impl From<serde_json::Error> for RenderError {
    fn from(e: serde_json::Error) -> Self {
        if e.is_io() {
            // For I/O errors this gives back the original `std::io::Error`.
            RenderError::Io(e.into())
        } else {
            RenderError::Json(e)
        }
    }
}

impl From<rust_xlsxwriter::XlsxError> for RenderError {
    fn from(e: rust_xlsxwriter::XlsxError) -> Self {
        use rust_xlsxwriter::XlsxError;
        match e {
            XlsxError::IoError(io) => RenderError::Io(io),
            // Zipping the workbook reads the sheets' temporary files and writes the sink.
            XlsxError::ZipError(zip) => RenderError::Io(zip.into()),
            // A sheet's temporary file could not be made (no space, no temp directory).
            XlsxError::TempFileError(dir, io) => RenderError::Io(std::io::Error::new(
                io.kind(),
                format!("temporary file in {}: {io}", dir.display()),
            )),
            other => RenderError::Xlsx(other),
        }
    }
}

/// Summary returned by [`RowWriter::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderSummary {
    /// Data rows written (headers not counted).
    pub rows: u64,
}

/// Writes one file row by row into a sink; nothing here holds the whole file in memory.
pub trait RowWriter: Send {
    /// The columns written, in order ([`RenderSpec::columns`]).
    fn columns(&self) -> &[String];

    /// Appends one row given as its cells, one per column, in order (`None`: the row has
    /// no such key). See [`crate::cells`] for reading them straight from JSON.
    fn write_cells(&mut self, cells: &Cells) -> Result<(), RenderError>;

    /// Appends one row given as an object. Only the columns are written, in their order.
    fn write_row(&mut self, row: &Row) -> Result<(), RenderError> {
        let cells: Vec<Option<serde_json::Value>> =
            self.columns().iter().map(|c| row.get(c).cloned()).collect();
        self.write_cells(&cells)
    }

    /// Writes trailers (JSON's closing `]`, the XLSX zip, the gzip footer) and flushes the
    /// sink. The file is complete only once this returns `Ok`.
    fn finish(self: Box<Self>) -> Result<RenderSummary, RenderError>;
}

/// The writer for `spec`, writing into `out`.
///
/// Headers (the CSV header row, JSON's `[`, the XLSX header row) are written here, at
/// creation, so an error in them (e.g. an XLSX column name that is too long) surfaces before
/// any row is read. Bytes reach `out` through a buffer, and with gzip through the encoder, so
/// `out` may see nothing until more rows arrive or [`RowWriter::finish`] runs.
pub fn row_writer<'a, W: Write + Send + 'a>(
    spec: &RenderSpec,
    out: W,
) -> Result<Box<dyn RowWriter + 'a>, RenderError> {
    let sink = Sink::new(out, spec.compression);
    let columns = spec.columns.clone();
    Ok(match spec.format {
        Format::Csv => Box::new(csv::CsvWriter::new(columns, spec.csv, sink)?),
        Format::Json => Box::new(json::JsonWriter::new(json::Layout::Array, columns, sink)?),
        Format::Ndjson => Box::new(json::JsonWriter::new(json::Layout::Lines, columns, sink)?),
        Format::Xlsx => Box::new(xlsx::XlsxWriter::new(columns, sink)?),
        Format::Parquet => {
            if spec.compression != Compression::None {
                return Err(RenderError::Unsupported(
                    "a Parquet file is compressed inside (its codec is parquet.compression); \
                     gzip around it is not supported",
                ));
            }
            Box::new(parquet::ParquetWriter::new(columns, &spec.parquet, sink)?)
        }
    })
}

/// Convenience for tests and benchmarks: renders all `rows` into `out` and finishes.
pub fn render_all<'r, W: Write + Send>(
    spec: &RenderSpec,
    rows: impl IntoIterator<Item = &'r Row>,
    out: W,
) -> Result<RenderSummary, RenderError> {
    let mut writer = row_writer(spec, out)?;
    for row in rows {
        writer.write_row(row)?;
    }
    writer.finish()
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::sync::{Arc, Mutex};

    use calamine::{Data, Reader, Xlsx, open_workbook_from_rs};
    use serde_json::json;

    use super::test_support::{gunzip, row};
    use super::*;

    fn spec(format: Format, compression: Compression, columns: &[&str]) -> RenderSpec {
        RenderSpec {
            format,
            compression,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }
    }

    /// Renders with the given compression and returns the uncompressed bytes.
    fn render(spec: &RenderSpec, rows: &[Row]) -> (RenderSummary, Vec<u8>) {
        let mut out = Vec::new();
        let summary = render_all(spec, rows, &mut out).expect("render");
        let bytes = match spec.compression {
            Compression::None => out,
            Compression::Gzip => gunzip(&out),
        };
        (summary, bytes)
    }

    const BOTH: [Compression; 2] = [Compression::None, Compression::Gzip];

    /// The whole-file compressions `format` takes (Parquet compresses inside).
    fn compressions(format: Format) -> &'static [Compression] {
        match format {
            Format::Parquet => &[Compression::None],
            _ => &BOTH,
        }
    }

    #[test]
    fn writers_and_errors_are_send_and_sync_where_needed() {
        fn assert_send<T: Send>() {}
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send::<Box<dyn RowWriter>>();
        assert_send::<csv::CsvWriter<Vec<u8>>>();
        assert_send::<json::JsonWriter<Vec<u8>>>();
        assert_send::<xlsx::XlsxWriter<Vec<u8>>>();
        assert_send_sync::<RenderError>();
    }

    #[test]
    fn empty_results_are_valid_files_in_every_format() {
        for compression in BOTH {
            let cols = ["a", "b"];
            let (s, csv) = render(&spec(Format::Csv, compression, &cols), &[]);
            assert_eq!(s.rows, 0);
            assert_eq!(csv, b"a,b\n");

            let (_, csv) = render(&spec(Format::Csv, compression, &[]), &[]);
            assert_eq!(csv, b"");

            let (_, js) = render(&spec(Format::Json, compression, &cols), &[]);
            assert_eq!(js, b"[]");
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(&js).unwrap(),
                json!([])
            );

            let (_, nd) = render(&spec(Format::Ndjson, compression, &cols), &[]);
            assert_eq!(nd, b"");

            let (s, xl) = render(&spec(Format::Xlsx, compression, &cols), &[]);
            assert_eq!(s.rows, 0);
            let mut wb: Xlsx<_> = open_workbook_from_rs(Cursor::new(xl)).unwrap();
            assert_eq!(wb.sheet_names(), ["Sheet1"]);
            let range = wb.worksheet_range("Sheet1").unwrap();
            assert_eq!(range.get_value((0, 0)), Some(&Data::String("a".into())));
            assert_eq!(range.get_value((0, 1)), Some(&Data::String("b".into())));
            assert_eq!(range.height(), 1);
        }
    }

    #[test]
    fn every_format_keeps_column_order_and_drops_extra_keys() {
        let rows = [
            row(json!({"extra": 1, "b": "x", "a": 1})),
            row(json!({"a": 2})),
        ];
        for compression in BOTH {
            let spec_for = |f| spec(f, compression, &["a", "b"]);

            let (s, csv) = render(&spec_for(Format::Csv), &rows);
            assert_eq!(s, RenderSummary { rows: 2 });
            assert_eq!(String::from_utf8(csv).unwrap(), "a,b\n1,x\n2,\n");

            let (s, js) = render(&spec_for(Format::Json), &rows);
            assert_eq!(s.rows, 2);
            assert_eq!(
                String::from_utf8(js).unwrap(),
                r#"[{"a":1,"b":"x"},{"a":2,"b":null}]"#
            );

            let (s, nd) = render(&spec_for(Format::Ndjson), &rows);
            assert_eq!(s.rows, 2);
            assert_eq!(
                String::from_utf8(nd).unwrap(),
                "{\"a\":1,\"b\":\"x\"}\n{\"a\":2,\"b\":null}\n"
            );

            let (s, xl) = render(&spec_for(Format::Xlsx), &rows);
            assert_eq!(s.rows, 2);
            let mut wb: Xlsx<_> = open_workbook_from_rs(Cursor::new(xl)).unwrap();
            let range = wb.worksheet_range("Sheet1").unwrap();
            let cell = |r, c| range.get_value((r, c)).cloned().unwrap_or(Data::Empty);
            assert_eq!(cell(0, 0), Data::String("a".into()));
            assert_eq!(cell(0, 1), Data::String("b".into()));
            assert_eq!(cell(1, 0), Data::Float(1.0));
            assert_eq!(cell(1, 1), Data::String("x".into()));
            assert_eq!(cell(2, 0), Data::Float(2.0));
            assert_eq!(cell(2, 1), Data::Empty);
            assert_eq!(cell(1, 2), Data::Empty, "the extra key is not a column");
        }
    }

    #[test]
    fn render_all_works_with_an_owned_sink_and_a_borrowed_row_iterator() {
        let rows = [row(json!({"a": 1}))];
        let summary = render_all(
            &spec(Format::Ndjson, Compression::None, &["a"]),
            rows.iter(),
            std::io::sink(),
        )
        .unwrap();
        assert_eq!(summary.rows, 1);
    }

    /// A sink that remembers what it held when it was last flushed.
    #[derive(Clone, Default)]
    struct Recorder {
        bytes: Arc<Mutex<Vec<u8>>>,
        at_last_flush: Arc<Mutex<Option<Vec<u8>>>>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            *self.at_last_flush.lock().unwrap() = Some(self.bytes.lock().unwrap().clone());
            Ok(())
        }
    }

    #[test]
    fn finish_completes_the_file_then_flushes_the_sink() {
        let rows: Vec<Row> = (0..100).map(|i| row(json!({"a": i, "b": "x"}))).collect();
        for format in Format::ALL {
            for &compression in compressions(format) {
                let recorder = Recorder::default();
                let mut writer =
                    row_writer(&spec(format, compression, &["a", "b"]), recorder.clone()).unwrap();
                for r in &rows {
                    writer.write_row(r).unwrap();
                }
                assert_eq!(writer.finish().unwrap().rows, 100);
                let flushed = recorder.at_last_flush.lock().unwrap().clone();
                let all = recorder.bytes.lock().unwrap().clone();
                // Everything, including the gzip footer, was written before the final flush
                // (not later, e.g. by a destructor).
                assert_eq!(flushed.as_ref(), Some(&all), "{format:?}/{compression:?}");
                let plain = match compression {
                    Compression::None => all,
                    Compression::Gzip => gunzip(&all),
                };
                match format {
                    Format::Csv => assert_eq!(plain.iter().filter(|b| **b == b'\n').count(), 101),
                    Format::Ndjson => {
                        assert_eq!(plain.iter().filter(|b| **b == b'\n').count(), 100)
                    }
                    Format::Json => {
                        let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
                        assert_eq!(v.as_array().map(Vec::len), Some(100));
                    }
                    Format::Xlsx => {
                        let mut wb: Xlsx<_> = open_workbook_from_rs(Cursor::new(plain)).unwrap();
                        assert_eq!(wb.worksheet_range("Sheet1").unwrap().height(), 101);
                    }
                    Format::Parquet => {
                        use ::parquet::file::reader::{FileReader, SerializedFileReader};
                        let file = SerializedFileReader::new(bytes::Bytes::from(plain)).unwrap();
                        assert_eq!(file.metadata().file_metadata().num_rows(), 100);
                    }
                }
            }
        }
    }

    #[test]
    fn non_io_errors_keep_their_own_variant() {
        let json_err = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        assert!(matches!(RenderError::from(json_err), RenderError::Json(_)));
        let xlsx_err = rust_xlsxwriter::XlsxError::MaxStringLengthExceeded;
        assert!(matches!(RenderError::from(xlsx_err), RenderError::Xlsx(_)));
    }

    #[test]
    fn xlsx_temp_file_and_zip_failures_are_io_errors() {
        use rust_xlsxwriter::XlsxError;
        let full = || std::io::Error::new(std::io::ErrorKind::StorageFull, "no space");
        let temp = RenderError::from(XlsxError::TempFileError("/tmp".into(), full()));
        match &temp {
            RenderError::Io(io) => {
                assert_eq!(io.kind(), std::io::ErrorKind::StorageFull);
                assert!(io.to_string().contains("temporary file in /tmp"), "{io}");
            }
            other => panic!("{other:?}"),
        }
        let io = RenderError::from(XlsxError::IoError(full()));
        assert!(matches!(&io, RenderError::Io(e) if e.kind() == std::io::ErrorKind::StorageFull));
    }

    #[test]
    fn io_errors_surface_as_render_errors() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        for format in Format::ALL {
            for &compression in compressions(format) {
                let s = spec(format, compression, &["a"]);
                let rows = [row(json!({"a": 1}))];
                let err = render_all(&s, &rows, Broken).expect_err("broken sink");
                match &err {
                    RenderError::Io(io) => assert_eq!(io.to_string(), "disk on fire"),
                    other => panic!("{format:?}/{compression:?}: {other:?}"),
                }
            }
        }
    }
}
