//! The wire twins of core's enums. Core's enums are stored forms and carry no OpenAPI
//! schema; each one here has the same variants, the same serde names and a schema, and is
//! converted to and from core's by exhaustive matches, so a variant added on either side
//! fails to compile until the other has it too (and `serde_names_match_core` checks the
//! names).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Declares a wire enum with the variants of core enum `$core` and both conversions.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident = $core:ident, rename_all = $rename:tt {
            $($(#[$vmeta:meta])* $variant:ident),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = $rename)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &[$name] = &[$($name::$variant),+];
        }

        impl From<$core> for $name {
            fn from(v: $core) -> Self {
                match v {
                    $($core::$variant => $name::$variant),+
                }
            }
        }

        impl From<$name> for $core {
            fn from(v: $name) -> Self {
                match v {
                    $($name::$variant => $core::$variant),+
                }
            }
        }
    };
}

use courier_core::Compression as CoreCompression;
use courier_core::Format as CoreFormat;
use courier_core::delivery::DeliveryStatus as CoreDeliveryStatus;
use courier_core::destination::{
    CredentialsMode as CoreCredentialsMode, DestinationStatus as CoreDestinationStatus,
    DestinationType as CoreDestinationType,
};
use courier_core::format::{
    ColumnType as CoreColumnType, ColumnTypes as CoreColumnTypes,
    ParquetCompression as CoreParquetCompression,
};

wire_enum! {
    /// The file format a destination receives.
    #[derive(Default)]
    Format = CoreFormat, rename_all = "UPPERCASE" {
        /// RFC 4180 CSV with a header row.
        #[default]
        Csv,
        /// One JSON array of objects.
        Json,
        /// One JSON object per line.
        Ndjson,
        /// An Excel workbook with a header row and typed cells.
        Xlsx,
        /// Apache Parquet: typed columns, compressed inside the file (`parquet.compression`).
        Parquet,
    }
}

wire_enum! {
    /// Whether the rendered file is compressed before upload.
    #[derive(Default)]
    Compression = CoreCompression, rename_all = "UPPERCASE" {
        #[default]
        None,
        /// gzip; the key gets `.gz` appended and the object `Content-Encoding: gzip`.
        Gzip,
    }
}

wire_enum! {
    /// The codec of a Parquet file's pages (`parquet.compression`). Parquet compresses
    /// inside the file, so a Parquet destination's own `compression` stays `NONE`.
    #[derive(Default)]
    ParquetCompression = CoreParquetCompression, rename_all = "UPPERCASE" {
        /// Zstandard (level 1): small files, fast; read by every current Parquet reader.
        #[default]
        Zstd,
        Snappy,
        Gzip,
        None,
    }
}

wire_enum! {
    /// The type of one Parquet column, as declared in `columnTypes`; undeclared columns are
    /// inferred from the first row group.
    ColumnType = CoreColumnType, rename_all = "UPPERCASE" {
        /// UTF-8 text; numbers, booleans, objects and arrays as their compact JSON text.
        String,
        /// A signed 64-bit integer.
        Int64,
        /// A 64-bit float; integers up to ±2^53.
        Double,
        Boolean,
        /// RFC 3339 text with an offset, stored as microseconds since the epoch in UTC.
        Timestamp,
        /// `YYYY-MM-DD` text, stored as days since the epoch.
        Date,
        /// Any value as its compact JSON text.
        Json,
    }
}

wire_enum! {
    /// Whether deliveries flow to a destination.
    #[derive(Default)]
    DestinationStatus = CoreDestinationStatus, rename_all = "UPPERCASE" {
        #[default]
        Active,
        /// Deliveries are accepted and held until the destination is active again.
        Paused,
    }
}

wire_enum! {
    /// The destination type; only S3 (and S3-compatible stores) for now.
    DestinationType = CoreDestinationType, rename_all = "UPPERCASE" {
        S3,
    }
}

wire_enum! {
    /// How requests to a destination are signed, as named in the API (`s3.credentials`).
    CredentialsMode = CoreCredentialsMode, rename_all = "SCREAMING_SNAKE_CASE" {
        /// `accessKeyId` and `secretAccessKey` saved with the destination.
        Static,
        /// Unsigned requests, for buckets that allow anonymous writes.
        None,
        /// The AWS default credential chain of the worker (environment, profile, web
        /// identity, instance role), for operators who run Courier inside AWS.
        DefaultChain,
        /// A role in your account (`roleArn`) that Courier's fleet assumes with your
        /// tenant's `externalId`; Courier never holds your keys.
        Role,
    }
}

wire_enum! {
    /// Where a delivery stands.
    DeliveryStatus = CoreDeliveryStatus, rename_all = "SCREAMING_SNAKE_CASE" {
        /// Accepted and waiting in the queue.
        Queued,
        /// A worker is rendering or uploading it.
        InProgress,
        /// A transient failure; another attempt is scheduled.
        Retrying,
        /// Held because the destination is paused or failing; it flows when the
        /// destination is active and healthy again.
        Held,
        /// The object is in the bucket.
        Delivered,
        /// Not uploaded: a newer result of the same partner inventory and day is already at
        /// the key, and an older one must not overwrite it.
        Superseded,
        /// Gave up: a permanent error, or retries exhausted. The record says why.
        Failed,
        /// Appended to its batched destination's open window (`batch` names it);
        /// delivered when the window closes.
        Batched,
    }
}

/// Declared Parquet column types by column name, as on the wire (`columnTypes`,
/// `parquet.columnTypes`).
pub type ColumnTypes = BTreeMap<String, ColumnType>;

/// `types` as core's column types.
pub fn column_types_to_core(types: ColumnTypes) -> CoreColumnTypes {
    types.into_iter().map(|(c, t)| (c, t.into())).collect()
}

/// Core's column types as on the wire.
pub fn column_types_from_core(types: &CoreColumnTypes) -> ColumnTypes {
    types
        .iter()
        .map(|(c, t)| (c.clone(), (*t).into()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names<W: Serialize + Copy, C: Serialize + From<W>>(all: &[W]) {
        for &w in all {
            assert_eq!(
                serde_json::to_value(w).unwrap(),
                serde_json::to_value(C::from(w)).unwrap()
            );
        }
    }

    #[test]
    fn serde_names_match_core() {
        names::<Format, CoreFormat>(Format::ALL);
        names::<Compression, CoreCompression>(Compression::ALL);
        names::<ParquetCompression, CoreParquetCompression>(ParquetCompression::ALL);
        names::<ColumnType, CoreColumnType>(ColumnType::ALL);
        names::<DestinationStatus, CoreDestinationStatus>(DestinationStatus::ALL);
        names::<DestinationType, CoreDestinationType>(DestinationType::ALL);
        names::<CredentialsMode, CoreCredentialsMode>(CredentialsMode::ALL);
        names::<DeliveryStatus, CoreDeliveryStatus>(DeliveryStatus::ALL);
    }
}
