//! Parquet: typed, optional columns written row group by row group with the `parquet`
//! crate's column writers.
//!
//! Rows are buffered column by column until a row group is full
//! ([`MAX_ROW_GROUP_ROWS`] rows, or about [`MAX_ROW_GROUP_BYTES`] of buffered values,
//! whichever comes first); the group is then encoded, compressed and written to the sink,
//! so memory holds one row group whatever the row count. Each column's type is declared
//! ([`ParquetOptions::column_types`]) or inferred from the values of the first row group
//! (see [`super::parquet_value`] for the rules and coercions); the schema, and so the file,
//! starts once the first group is full. A later value that does not fit its column's type
//! is an error naming the row and the column ([`RenderError::ValueDoesNotFit`]).
//!
//! Every column is `OPTIONAL` (a row may lack any key). Pages are compressed with the
//! destination's codec ([`ParquetOptions::compression`]); dictionary encoding and page
//! statistics are the `parquet` crate's defaults; the format version is 1.0 pages, which
//! every reader understands.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::{
    Compression as Codec, GzipLevel, LogicalType, Repetition, TimeUnit, Type as Physical, ZstdLevel,
};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

use super::parquet_value::{Cell, Pending, TextOut, Typed, coerce, infer};
use super::sink::Sink;
use super::{RenderError, RenderSummary, RowWriter};
use crate::cells::Cells;
use crate::format::{ColumnType, ParquetCompression, ParquetOptions};

/// Most rows in one row group (DuckDB's default is 122,880; Spark's groups are similar).
pub const MAX_ROW_GROUP_ROWS: usize = 131_072;
/// About this many bytes of buffered values close a row group early (wide or text-heavy
/// rows), which bounds a worker's memory.
pub const MAX_ROW_GROUP_BYTES: usize = 24 * 1024 * 1024;
/// Values handed to a byte-array column writer at once.
const TEXT_BATCH: usize = 4096;

pub(super) struct ParquetWriter<W: Write + Send> {
    columns: Vec<String>,
    buffers: Vec<ColumnBuffer>,
    /// Waiting for the first row group to be full: the schema is not known yet.
    out: Output<W>,
    compression: ParquetCompression,
    max_rows: usize,
    max_bytes: usize,
    /// Rows in the current group, and an estimate of the bytes they hold.
    group_rows: usize,
    group_bytes: usize,
    rows: u64,
}

enum Output<W: Write + Send> {
    NotStarted(Sink<W>),
    Started(Box<SerializedFileWriter<Sink<W>>>),
    /// Only while moving from one to the other, or after an error.
    Gone,
}

/// One column's values of the current row group.
struct ColumnBuffer {
    /// `None` until the first row group decides an undeclared column's type.
    ty: Option<ColumnType>,
    declared: bool,
    /// 1 for a value, 0 for null, one per row (not used while pending).
    defs: Vec<i16>,
    values: Values,
}

enum Values {
    Pending(Vec<Pending>),
    Int64(Vec<i64>),
    Int32(Vec<i32>),
    Double(Vec<f64>),
    Boolean(Vec<bool>),
    /// UTF-8 text, one after the other; `ends[i]` is where value `i` ends.
    Text {
        data: Vec<u8>,
        ends: Vec<usize>,
    },
}

impl Values {
    fn for_type(ty: Option<ColumnType>) -> Self {
        match ty {
            None => Values::Pending(Vec::new()),
            Some(ColumnType::Int64 | ColumnType::Timestamp) => Values::Int64(Vec::new()),
            Some(ColumnType::Date) => Values::Int32(Vec::new()),
            Some(ColumnType::Double) => Values::Double(Vec::new()),
            Some(ColumnType::Boolean) => Values::Boolean(Vec::new()),
            Some(ColumnType::String | ColumnType::Json) => Values::Text {
                data: Vec::new(),
                ends: Vec::new(),
            },
        }
    }
}

impl ColumnBuffer {
    /// Adds one typed value (or null); returns the bytes it takes.
    fn push(&mut self, value: Option<Typed<'_>>) -> usize {
        let Some(value) = value else {
            self.defs.push(0);
            return 2;
        };
        self.defs.push(1);
        match (&mut self.values, value) {
            (Values::Int64(v), Typed::Int64(x)) => v.push(x),
            (Values::Int32(v), Typed::Int32(x)) => v.push(x),
            (Values::Double(v), Typed::Double(x)) => v.push(x),
            (Values::Boolean(v), Typed::Boolean(x)) => v.push(x),
            (Values::Text { data, ends }, Typed::Text(t)) => {
                let before = data.len();
                match t {
                    TextOut::Borrowed(s) => data.extend_from_slice(s.as_bytes()),
                    TextOut::Owned(s) => data.extend_from_slice(s.as_bytes()),
                    TextOut::Json(v) => {
                        serde_json::to_writer(&mut *data, v).expect("a Vec takes any JSON");
                    }
                }
                ends.push(data.len());
                return 2 + 8 + data.len() - before;
            }
            // `coerce` returns the variant of the column's type.
            _ => unreachable!("a value of another type than its column"),
        }
        10
    }
}

impl<W: Write + Send> ParquetWriter<W> {
    pub(super) fn new(
        columns: Vec<String>,
        options: &ParquetOptions,
        sink: Sink<W>,
    ) -> Result<Self, RenderError> {
        Self::with_limits(
            columns,
            options,
            sink,
            MAX_ROW_GROUP_ROWS,
            MAX_ROW_GROUP_BYTES,
        )
    }

    /// A writer with other row group limits, so tests can fill groups quickly.
    pub(super) fn with_limits(
        columns: Vec<String>,
        options: &ParquetOptions,
        sink: Sink<W>,
        max_rows: usize,
        max_bytes: usize,
    ) -> Result<Self, RenderError> {
        let buffers = columns
            .iter()
            .map(|c| {
                let ty = options.column_types.get(c).copied();
                ColumnBuffer {
                    ty,
                    declared: ty.is_some(),
                    defs: Vec::new(),
                    values: Values::for_type(ty),
                }
            })
            .collect();
        Ok(Self {
            columns,
            buffers,
            out: Output::NotStarted(sink),
            compression: options.compression,
            max_rows: max_rows.max(1),
            max_bytes,
            group_rows: 0,
            group_bytes: 0,
            rows: 0,
        })
    }

    /// Types the pending columns (first row group only), starts the file if needed and
    /// writes the buffered rows as one row group.
    fn flush_group(&mut self) -> Result<(), RenderError> {
        let first_row = self.rows - self.group_rows as u64 + 1;
        for (name, buffer) in self.columns.iter().zip(&mut self.buffers) {
            decide_type(name, buffer, first_row)?;
        }
        if matches!(self.out, Output::NotStarted(_)) {
            self.start()?;
        }
        if self.group_rows > 0 && !self.columns.is_empty() {
            let Output::Started(file) = &mut self.out else {
                unreachable!("started above")
            };
            let mut group = file.next_row_group()?;
            for buffer in &mut self.buffers {
                let mut column = group
                    .next_column()?
                    .expect("the schema has one column per buffer");
                write_column(&mut column, buffer)?;
                column.close()?;
            }
            group.close()?;
        }
        self.group_rows = 0;
        self.group_bytes = 0;
        Ok(())
    }

    /// Writes the file's header; the schema follows from the (now decided) column types.
    fn start(&mut self) -> Result<(), RenderError> {
        let Output::NotStarted(sink) = std::mem::replace(&mut self.out, Output::Gone) else {
            unreachable!("called once, before the file starts")
        };
        let fields = self
            .columns
            .iter()
            .zip(&self.buffers)
            .map(|(name, b)| field(name, b.ty.expect("decided before the file starts")))
            .collect::<Result<Vec<_>, _>>()?;
        let schema = Type::group_type_builder("schema")
            .with_fields(fields)
            .build()?;
        let codec = match self.compression {
            ParquetCompression::Zstd => Codec::ZSTD(ZstdLevel::default()),
            ParquetCompression::Snappy => Codec::SNAPPY,
            ParquetCompression::Gzip => Codec::GZIP(GzipLevel::default()),
            ParquetCompression::None => Codec::UNCOMPRESSED,
        };
        let props = WriterProperties::builder().set_compression(codec).build();
        let file = SerializedFileWriter::new(sink, Arc::new(schema), Arc::new(props))?;
        self.out = Output::Started(Box::new(file));
        Ok(())
    }
}

/// Decides a pending column's type from its values and converts them; a value that does
/// not fit the inferred type (an integer beyond INT64) is an error like any later one.
fn decide_type(name: &str, buffer: &mut ColumnBuffer, first_row: u64) -> Result<(), RenderError> {
    let Values::Pending(pending) = &buffer.values else {
        return Ok(());
    };
    let ty = infer(pending);
    let pending = std::mem::replace(&mut buffer.values, Values::for_type(Some(ty)));
    buffer.ty = Some(ty);
    let Values::Pending(pending) = pending else {
        unreachable!("matched above")
    };
    buffer.defs.reserve(pending.len());
    for (i, value) in pending.iter().enumerate() {
        let typed = coerce(ty, value.as_cell())
            .map_err(|found| mismatch(name, first_row + i as u64, ty, false, found))?;
        buffer.push(typed);
    }
    Ok(())
}

fn mismatch(column: &str, row: u64, ty: ColumnType, declared: bool, found: String) -> RenderError {
    RenderError::ValueDoesNotFit {
        column: column.to_owned(),
        row,
        column_type: ty.name(),
        how: if declared {
            "declared in columnTypes"
        } else {
            "inferred from the first row group; declare the column's type in columnTypes"
        },
        found,
    }
}

/// The schema field of one column.
fn field(name: &str, ty: ColumnType) -> Result<Arc<Type>, ParquetError> {
    let (physical, logical) = match ty {
        ColumnType::String => (Physical::BYTE_ARRAY, Some(LogicalType::String)),
        ColumnType::Json => (Physical::BYTE_ARRAY, Some(LogicalType::Json)),
        ColumnType::Int64 => (Physical::INT64, None),
        ColumnType::Double => (Physical::DOUBLE, None),
        ColumnType::Boolean => (Physical::BOOLEAN, None),
        ColumnType::Date => (Physical::INT32, Some(LogicalType::Date)),
        ColumnType::Timestamp => (
            Physical::INT64,
            Some(LogicalType::timestamp(true, TimeUnit::MICROS)),
        ),
    };
    Type::primitive_type_builder(name, physical)
        .with_repetition(Repetition::OPTIONAL)
        .with_logical_type(logical)
        .build()
        .map(Arc::new)
}

/// Writes one column's buffered values into its column chunk and empties the buffer.
fn write_column(
    column: &mut parquet::file::writer::SerializedColumnWriter<'_>,
    buffer: &mut ColumnBuffer,
) -> Result<(), ParquetError> {
    let defs = std::mem::take(&mut buffer.defs);
    let values = std::mem::replace(&mut buffer.values, Values::for_type(buffer.ty));
    match values {
        Values::Int64(v) => {
            column
                .typed::<Int64Type>()
                .write_batch(&v, Some(&defs), None)?;
        }
        Values::Int32(v) => {
            column
                .typed::<Int32Type>()
                .write_batch(&v, Some(&defs), None)?;
        }
        Values::Double(v) => {
            column
                .typed::<DoubleType>()
                .write_batch(&v, Some(&defs), None)?;
        }
        Values::Boolean(v) => {
            column
                .typed::<BoolType>()
                .write_batch(&v, Some(&defs), None)?;
        }
        Values::Text { data, ends } => {
            let data = Bytes::from(data);
            let writer = column.typed::<ByteArrayType>();
            let mut next = 0; // index of the next value
            let mut batch = Vec::with_capacity(TEXT_BATCH);
            for levels in defs.chunks(TEXT_BATCH) {
                batch.clear();
                for _ in levels.iter().filter(|d| **d == 1) {
                    let start = if next == 0 { 0 } else { ends[next - 1] };
                    batch.push(ByteArray::from(data.slice(start..ends[next])));
                    next += 1;
                }
                writer.write_batch(&batch, Some(levels), None)?;
            }
        }
        Values::Pending(_) => unreachable!("typed before writing"),
    }
    Ok(())
}

impl<W: Write + Send> RowWriter for ParquetWriter<W> {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn write_cells(&mut self, cells: &Cells) -> Result<(), RenderError> {
        debug_assert_eq!(cells.len(), self.columns.len());
        let row = self.rows + 1;
        let mut bytes = 0;
        for ((name, buffer), cell) in self.columns.iter().zip(&mut self.buffers).zip(cells) {
            match buffer.ty {
                None => {
                    let Values::Pending(pending) = &mut buffer.values else {
                        unreachable!("untyped columns are pending")
                    };
                    let value = Pending::new(cell.as_ref());
                    bytes += std::mem::size_of::<Pending>() + value.heap_bytes();
                    pending.push(value);
                }
                Some(ty) => {
                    let typed = coerce(ty, Cell::of(cell.as_ref()))
                        .map_err(|found| mismatch(name, row, ty, buffer.declared, found))?;
                    bytes += buffer.push(typed);
                }
            }
        }
        self.rows += 1;
        self.group_rows += 1;
        self.group_bytes += bytes;
        if self.group_rows >= self.max_rows || self.group_bytes >= self.max_bytes {
            self.flush_group()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<RenderSummary, RenderError> {
        if self.group_rows > 0 || matches!(self.out, Output::NotStarted(_)) {
            self.flush_group()?;
        }
        match std::mem::replace(&mut self.out, Output::Gone) {
            Output::Started(file) => {
                // Writes the footer and flushes through to the caller's sink.
                let sink = file.into_inner()?;
                sink.finish()?;
            }
            _ => unreachable!("started by the last flush"),
        }
        Ok(RenderSummary { rows: self.rows })
    }
}

impl From<ParquetError> for RenderError {
    fn from(e: ParquetError) -> Self {
        match e {
            ParquetError::External(inner) => match inner.downcast::<std::io::Error>() {
                Ok(io) => RenderError::Io(*io),
                Err(other) => RenderError::Parquet(other.to_string()),
            },
            other => RenderError::Parquet(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use parquet::basic::{Compression as Codec, LogicalType, Repetition, Type as Physical};
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    use serde_json::{Value, json};

    use super::super::test_support::row;
    use super::*;
    use crate::Compression;
    use crate::delivery::Row;
    use crate::render::{RenderSpec, render_all, row_writer};

    fn names(columns: &[&str]) -> Vec<String> {
        columns.iter().map(|c| (*c).to_owned()).collect()
    }

    fn options(types: &[(&str, ColumnType)]) -> ParquetOptions {
        ParquetOptions {
            compression: ParquetCompression::Zstd,
            column_types: types.iter().map(|(c, t)| ((*c).to_owned(), *t)).collect(),
        }
    }

    /// Renders `rows` with row groups of at most `max_rows` rows.
    fn render_groups(
        columns: &[&str],
        options: &ParquetOptions,
        rows: &[Row],
        max_rows: usize,
    ) -> Result<(RenderSummary, Vec<u8>), RenderError> {
        let mut out = Vec::new();
        let sink = Sink::new(&mut out, Compression::None);
        let mut w: Box<dyn RowWriter> = Box::new(ParquetWriter::with_limits(
            names(columns),
            options,
            sink,
            max_rows,
            MAX_ROW_GROUP_BYTES,
        )?);
        for r in rows {
            w.write_row(r)?;
        }
        let summary = w.finish()?;
        Ok((summary, out))
    }

    fn render(
        columns: &[&str],
        options: &ParquetOptions,
        rows: &[Row],
    ) -> Result<Vec<u8>, RenderError> {
        let spec = RenderSpec {
            format: crate::Format::Parquet,
            compression: Compression::None,
            columns: names(columns),
            parquet: options.clone(),
            ..Default::default()
        };
        let mut out = Vec::new();
        render_all(&spec, rows, &mut out)?;
        Ok(out)
    }

    /// What the `parquet` crate's own reader sees.
    struct Read {
        reader: SerializedFileReader<Bytes>,
    }

    impl Read {
        fn new(bytes: Vec<u8>) -> Self {
            Self {
                reader: SerializedFileReader::new(Bytes::from(bytes)).expect("a Parquet file"),
            }
        }

        /// (name, physical type, logical type) per column; every column must be OPTIONAL.
        fn schema(&self) -> Vec<(String, Physical, Option<LogicalType>)> {
            let schema = self.reader.metadata().file_metadata().schema_descr();
            schema
                .columns()
                .iter()
                .map(|c| {
                    assert_eq!(
                        c.self_type().get_basic_info().repetition(),
                        Repetition::OPTIONAL
                    );
                    (
                        c.name().to_owned(),
                        c.physical_type(),
                        c.logical_type_ref().cloned(),
                    )
                })
                .collect()
        }

        fn rows(&self) -> Vec<Vec<Field>> {
            self.reader
                .get_row_iter(None)
                .unwrap()
                .map(|r| {
                    r.unwrap()
                        .get_column_iter()
                        .map(|(_, f)| f.clone())
                        .collect()
                })
                .collect()
        }

        fn row_groups(&self) -> Vec<i64> {
            self.reader
                .metadata()
                .row_groups()
                .iter()
                .map(|g| g.num_rows())
                .collect()
        }
    }

    fn s(v: &str) -> Field {
        Field::Str(v.to_owned())
    }

    #[test]
    fn inferred_types_round_trip_with_every_awkward_value() {
        let rows = [
            row(json!({
                "id": i64::MIN, "score": 1, "ok": true, "name": "a, \"q\"\r\n🦀 é",
                "nested": {"k": [1, null, "x"]}, "nothing": null, "mixed": 1
            })),
            row(json!({
                "id": i64::MAX, "score": 2.5, "ok": null, "name": "",
                "nested": [], "mixed": "two"
            })),
            row(json!({"id": -1, "score": -1e300, "ok": false, "extra": 1})),
        ];
        let cols = ["id", "score", "ok", "name", "nested", "nothing", "mixed"];
        let file = Read::new(render(&cols, &ParquetOptions::default(), &rows).unwrap());
        assert_eq!(
            file.schema(),
            [
                ("id".into(), Physical::INT64, None),
                ("score".into(), Physical::DOUBLE, None),
                ("ok".into(), Physical::BOOLEAN, None),
                (
                    "name".into(),
                    Physical::BYTE_ARRAY,
                    Some(LogicalType::String)
                ),
                (
                    "nested".into(),
                    Physical::BYTE_ARRAY,
                    Some(LogicalType::String)
                ),
                (
                    "nothing".into(),
                    Physical::BYTE_ARRAY,
                    Some(LogicalType::String)
                ),
                (
                    "mixed".into(),
                    Physical::BYTE_ARRAY,
                    Some(LogicalType::String)
                ),
            ]
        );
        assert_eq!(
            file.rows(),
            [
                vec![
                    Field::Long(i64::MIN),
                    Field::Double(1.0),
                    Field::Bool(true),
                    s("a, \"q\"\r\n🦀 é"),
                    s(r#"{"k":[1,null,"x"]}"#),
                    Field::Null,
                    s("1"),
                ],
                vec![
                    Field::Long(i64::MAX),
                    Field::Double(2.5),
                    Field::Null,
                    s(""),
                    s("[]"),
                    Field::Null,
                    s("two"),
                ],
                vec![
                    Field::Long(-1),
                    Field::Double(-1e300),
                    Field::Bool(false),
                    Field::Null,
                    Field::Null,
                    Field::Null,
                    Field::Null,
                ],
            ]
        );
        assert_eq!(file.row_groups(), [3]);
    }

    #[test]
    fn declared_types_round_trip() {
        let types = options(&[
            ("at", ColumnType::Timestamp),
            ("day", ColumnType::Date),
            ("doc", ColumnType::Json),
            ("n", ColumnType::Double),
            ("code", ColumnType::String),
            ("count", ColumnType::Int64),
        ]);
        let rows = [
            row(json!({
                "at": "2026-06-07T10:00:00.123456+02:00", "day": "2026-06-07",
                "doc": "text", "n": 3, "code": 7, "count": null
            })),
            row(json!({"at": null, "doc": {"a": [true]}, "n": 0.25, "code": "007"})),
        ];
        let cols = ["at", "day", "doc", "n", "code", "count"];
        let file = Read::new(render(&cols, &types, &rows).unwrap());
        assert_eq!(
            file.schema(),
            [
                (
                    "at".into(),
                    Physical::INT64,
                    Some(LogicalType::timestamp(true, TimeUnit::MICROS))
                ),
                ("day".into(), Physical::INT32, Some(LogicalType::Date)),
                ("doc".into(), Physical::BYTE_ARRAY, Some(LogicalType::Json)),
                ("n".into(), Physical::DOUBLE, None),
                (
                    "code".into(),
                    Physical::BYTE_ARRAY,
                    Some(LogicalType::String)
                ),
                ("count".into(), Physical::INT64, None),
            ]
        );
        let micros = chrono::DateTime::parse_from_rfc3339("2026-06-07T08:00:00.123456Z")
            .unwrap()
            .timestamp_micros();
        assert_eq!(
            file.rows(),
            [
                vec![
                    Field::TimestampMicros(micros),
                    Field::Date(20_611),
                    s(r#""text""#),
                    Field::Double(3.0),
                    s("7"),
                    Field::Null,
                ],
                vec![
                    Field::Null,
                    Field::Null,
                    s(r#"{"a":[true]}"#),
                    Field::Double(0.25),
                    s("007"),
                    Field::Null,
                ],
            ]
        );
    }

    #[test]
    fn row_groups_are_bounded_and_types_come_from_the_first() {
        let rows: Vec<Row> = (0..10).map(|i| row(json!({"i": i, "t": "x"}))).collect();
        let (summary, out) =
            render_groups(&["i", "t"], &ParquetOptions::default(), &rows, 4).unwrap();
        assert_eq!(summary.rows, 10);
        let file = Read::new(out);
        assert_eq!(file.row_groups(), [4, 4, 2]);
        let read: Vec<Field> = file.rows().into_iter().map(|r| r[0].clone()).collect();
        assert_eq!(read, (0..10).map(Field::Long).collect::<Vec<_>>());
    }

    #[test]
    fn a_bigger_group_closes_on_bytes_before_rows() {
        let rows: Vec<Row> = (0..10)
            .map(|_| row(json!({"t": "x".repeat(1000)})))
            .collect();
        let mut out = Vec::new();
        let mut w: Box<dyn RowWriter> = Box::new(
            ParquetWriter::with_limits(
                names(&["t"]),
                &ParquetOptions::default(),
                Sink::new(&mut out, Compression::None),
                1_000,
                2_500,
            )
            .unwrap(),
        );
        for r in &rows {
            w.write_row(r).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(Read::new(out).row_groups(), [3, 3, 3, 1]);
    }

    fn error_of(result: Result<impl std::fmt::Debug, RenderError>) -> String {
        let err = result.expect_err("must not fit");
        assert!(
            matches!(err, RenderError::ValueDoesNotFit { .. }),
            "{err:?}"
        );
        err.to_string()
    }

    #[test]
    fn a_later_value_that_does_not_fit_names_the_row_and_column() {
        let mut rows: Vec<Row> = (0..5).map(|i| row(json!({"n": i}))).collect();
        rows.push(row(json!({"n": 1.5})));
        assert_eq!(
            error_of(render_groups(&["n"], &ParquetOptions::default(), &rows, 2)),
            "row 6, column `n`: a float does not fit the column's type INT64 (inferred from \
             the first row group; declare the column's type in columnTypes)"
        );
        // Declared: the first row already fails, and no value is quoted.
        let rows = [row(json!({"n": 1})), row(json!({"n": "secret"}))];
        assert_eq!(
            error_of(render(
                &["n"],
                &options(&[("n", ColumnType::Double)]),
                &rows
            )),
            "row 2, column `n`: a string does not fit the column's type DOUBLE (declared in \
             columnTypes)"
        );
    }

    #[test]
    fn a_value_of_the_first_group_that_does_not_fit_the_inferred_type_is_named_too() {
        let rows: Vec<Row> = [json!(1), json!(2), json!(3), json!(u64::MAX)]
            .into_iter()
            .map(|v| row(json!({"big": v})))
            .collect();
        assert_eq!(
            error_of(render_groups(
                &["big"],
                &ParquetOptions::default(),
                &rows,
                3
            )),
            "row 4, column `big`: an integer beyond INT64's range does not fit the column's \
             type INT64 (inferred from the first row group; declare the column's type in \
             columnTypes)"
        );
        let rows = [row(json!({"big": 1})), row(json!({"big": u64::MAX}))];
        assert!(
            error_of(render(&["big"], &ParquetOptions::default(), &rows)).starts_with("row 2,")
        );
        let as_string = options(&[("big", ColumnType::String)]);
        let file = Read::new(render(&["big"], &as_string, &rows).unwrap());
        assert_eq!(file.rows()[1], [s("18446744073709551615")]);
    }

    #[test]
    fn an_empty_result_is_a_valid_file_of_string_columns_unless_declared() {
        let types = options(&[("b", ColumnType::Int64)]);
        let (summary, out) = render_groups(&["a", "b"], &types, &[], 10).unwrap();
        assert_eq!(summary.rows, 0);
        let file = Read::new(out);
        assert_eq!(
            file.schema(),
            [
                ("a".into(), Physical::BYTE_ARRAY, Some(LogicalType::String)),
                ("b".into(), Physical::INT64, None),
            ]
        );
        assert!(file.row_groups().is_empty());
        assert!(file.rows().is_empty());
        // No columns at all: still a file a reader opens.
        let rows = [row(json!({}))];
        let file = Read::new(render(&[], &ParquetOptions::default(), &rows).unwrap());
        assert!(file.schema().is_empty());
    }

    #[test]
    fn every_codec_writes_a_readable_file_and_says_so() {
        let rows: Vec<Row> = (0..100)
            .map(|i| row(json!({"i": i, "t": format!("value {}", i % 7)})))
            .collect();
        for (choice, codec) in [
            (ParquetCompression::Zstd, "ZSTD"),
            (ParquetCompression::Snappy, "SNAPPY"),
            (ParquetCompression::Gzip, "GZIP"),
            (ParquetCompression::None, "UNCOMPRESSED"),
        ] {
            let opts = ParquetOptions {
                compression: choice,
                ..Default::default()
            };
            let file = Read::new(render(&["i", "t"], &opts, &rows).unwrap());
            let used: Vec<Codec> = file.reader.metadata().row_groups()[0]
                .columns()
                .iter()
                .map(|c| c.compression())
                .collect();
            assert!(
                used.iter().all(|c| c.to_string().starts_with(codec)),
                "{used:?}"
            );
            assert_eq!(file.rows().len(), 100);
            assert_eq!(file.rows()[99], [Field::Long(99), s("value 1")]);
        }
    }

    #[test]
    fn gzip_around_parquet_is_refused() {
        let spec = RenderSpec {
            format: crate::Format::Parquet,
            compression: Compression::Gzip,
            columns: names(&["a"]),
            ..Default::default()
        };
        let err = row_writer(&spec, Vec::new()).err().expect("refused");
        assert!(matches!(err, RenderError::Unsupported(_)), "{err:?}");
    }

    #[test]
    fn values_of_a_later_group_are_typed_as_they_arrive() {
        // Nulls only in the first group: STRING, and later values are their text.
        let rows: Vec<Row> = [json!(null), json!(null), json!(5), json!({"a": 1})]
            .into_iter()
            .map(|v| row(json!({"v": v})))
            .collect();
        let (_, out) = render_groups(&["v"], &ParquetOptions::default(), &rows, 2).unwrap();
        let file = Read::new(out);
        let got: Vec<Field> = file.rows().into_iter().map(|r| r[0].clone()).collect();
        assert_eq!(got, [Field::Null, Field::Null, s("5"), s(r#"{"a":1}"#)]);
        let _: Value = json!(null);
    }
}
