//! File formats and compression, with their file extensions and content types; CSV's own
//! setting (formula neutralising) and Parquet's (its codec and column types).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The file format a destination receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Format {
    /// RFC 4180 CSV with a header row.
    #[default]
    Csv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// An Excel workbook with a header row and typed cells.
    Xlsx,
    /// Apache Parquet: typed columns, compressed inside the file ([`ParquetOptions`]).
    Parquet,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Csv,
        Format::Json,
        Format::Ndjson,
        Format::Xlsx,
        Format::Parquet,
    ];

    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Xlsx => "xlsx",
            Format::Parquet => "parquet",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// The bounded label value used in metrics.
    pub fn label(self) -> &'static str {
        self.extension()
    }

    /// Whether `compression` (gzip around the whole file) goes with this format: a Parquet
    /// file compresses inside, column by column, and a gzipped one is not a file any Parquet
    /// reader opens, so Parquet takes only [`Compression::None`]. The error says where its
    /// codec is chosen instead.
    pub fn check_compression(self, compression: Compression) -> Result<(), String> {
        match (self, compression) {
            (Format::Parquet, Compression::Gzip) => Err(
                "must be NONE with format PARQUET: a Parquet file is compressed inside, column \
                 by column; choose its codec with `\"parquet\": {\"compression\": \"ZSTD\"}` \
                 (ZSTD, the default, SNAPPY, GZIP or NONE)"
                    .to_owned(),
            ),
            _ => Ok(()),
        }
    }
}

/// Whether the rendered file is compressed before upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Compression {
    #[default]
    None,
    /// gzip; the key gets `.gz` appended and the object `Content-Encoding: gzip`.
    Gzip,
}

impl Compression {
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
        }
    }
}

/// The codec of a Parquet file's pages. Parquet compresses inside the file, column by
/// column, so a Parquet destination's own `compression` stays `NONE` (a gzipped Parquet
/// file is not a Parquet file any reader opens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ParquetCompression {
    /// Zstandard (level 1): small files, fast; read by every current Parquet reader.
    #[default]
    Zstd,
    Snappy,
    Gzip,
    None,
}

/// The type of one Parquet column, as declared in `columnTypes`. Without a declaration a
/// column's type is inferred from the first row group (see the Parquet writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ColumnType {
    /// UTF-8 text (`BYTE_ARRAY` annotated `STRING`).
    String,
    /// A signed 64-bit integer.
    Int64,
    /// A 64-bit float.
    Double,
    Boolean,
    /// RFC 3339 text, stored as microseconds since the epoch in UTC
    /// (`INT64` annotated `TIMESTAMP(MICROS, isAdjustedToUTC)`).
    Timestamp,
    /// `YYYY-MM-DD` text, stored as days since the epoch (`INT32` annotated `DATE`).
    Date,
    /// Any value as its compact JSON text (`BYTE_ARRAY` annotated `JSON`).
    Json,
}

impl ColumnType {
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::String => "STRING",
            ColumnType::Int64 => "INT64",
            ColumnType::Double => "DOUBLE",
            ColumnType::Boolean => "BOOLEAN",
            ColumnType::Timestamp => "TIMESTAMP",
            ColumnType::Date => "DATE",
            ColumnType::Json => "JSON",
        }
    }
}

/// Declared column types by column name.
pub type ColumnTypes = BTreeMap<String, ColumnType>;

/// Checks the column names of a `columnTypes` map: none may be empty. (Whether each names
/// one of the delivery's columns is known only with the columns; see the job's validation.)
pub fn check_column_types(types: &ColumnTypes) -> Result<(), String> {
    if types.contains_key("") {
        return Err("column names must not be empty".to_owned());
    }
    Ok(())
}

/// How a Parquet file is written: the destination's codec and the declared column types
/// (the destination's, overridden column by column by the delivery's).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParquetOptions {
    #[serde(default)]
    pub compression: ParquetCompression,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub column_types: ColumnTypes,
}

impl ParquetOptions {
    /// These options with `overrides` (a delivery's `columnTypes`) declared on top.
    pub fn with_column_types(mut self, overrides: &ColumnTypes) -> Self {
        for (column, ty) in overrides {
            self.column_types.insert(column.clone(), *ty);
        }
        self
    }
}

/// How a CSV file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CsvOptions {
    /// Spreadsheet safety (OWASP's CSV-injection advice): a text cell, header cells
    /// included, whose first character is one of [`FORMULA_TRIGGERS`] gets a `'` in front,
    /// so a spreadsheet opening the file shows it as text instead of running it as a
    /// formula. Numbers, booleans, objects and arrays are never changed: a JSON number is
    /// only digits, a sign, `.` and an exponent, which no spreadsheet runs, so `-3` stays a
    /// number; the text `"-3"` becomes `'-3`. Off by default: the cells then are exactly
    /// the values sent.
    #[serde(default)]
    pub neutralize_formulas: bool,
}

/// The first characters that make a spreadsheet read a cell as a formula (OWASP: `=`,
/// `+`, `-`, `@`, tab and carriage return).
pub const FORMULA_TRIGGERS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_takes_no_gzip_around_the_file() {
        for format in Format::ALL {
            assert_eq!(format.check_compression(Compression::None), Ok(()));
            let gzip = format.check_compression(Compression::Gzip);
            if format == Format::Parquet {
                let message = gzip.unwrap_err();
                assert!(
                    message.contains(r#""parquet": {"compression": "ZSTD"}"#),
                    "{message}"
                );
            } else {
                assert_eq!(gzip, Ok(()), "{format:?}");
            }
        }
    }

    #[test]
    fn column_types_name_columns() {
        let mut types = ColumnTypes::new();
        types.insert("score".into(), ColumnType::Double);
        assert_eq!(check_column_types(&types), Ok(()));
        types.insert(String::new(), ColumnType::Int64);
        assert!(check_column_types(&types).is_err());
    }

    #[test]
    fn a_deliverys_column_types_win_over_the_destinations() {
        let destination = ParquetOptions {
            compression: ParquetCompression::Snappy,
            column_types: [
                ("a".to_owned(), ColumnType::Int64),
                ("b".to_owned(), ColumnType::String),
            ]
            .into(),
        };
        let delivery: ColumnTypes = [("b".to_owned(), ColumnType::Date)].into();
        let merged = destination.with_column_types(&delivery);
        assert_eq!(merged.compression, ParquetCompression::Snappy);
        assert_eq!(
            merged.column_types,
            [
                ("a".to_owned(), ColumnType::Int64),
                ("b".to_owned(), ColumnType::Date)
            ]
            .into()
        );
    }
}
