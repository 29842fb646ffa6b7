//! Courier's pure domain: everything that can be decided without a network, a clock
//! source or a runtime.
//!
//! - [`destination`]: a customer's delivery destination and the validated newtypes it is
//!   made of ([`destination::BucketName`], [`destination::PathPrefix`], …).
//! - [`delivery`]: a validated "job completed", the task a worker receives, and the
//!   delivery record that says what happened to it.
//! - [`key`]: where a delivered file lands in the bucket.
//! - [`payload`]: a delivery task as the queue holds it (JSON, LZ4-compressed when long).
//! - [`rows`]: inline rows kept as JSON text, checked without being built.
//! - [`cells`]: a row read straight into its cells in column order, for rendering.
//! - [`render`]: row-by-row writers for CSV, JSON, NDJSON and XLSX, optionally gzip, and
//!   Parquet (typed columns, row group by row group).
//! - [`format`](mod@format): file formats, compression, and Parquet's codecs and column types.
//! - [`codes`]: every error code Courier reports, with its class; [`failure`]: the
//!   classes (transient or permanent).
//! - [`error`]: field-level validation errors shared by every edge that accepts input.
//!
//! No Redis, no AWS, no tokio and no HTTP or OpenAPI types here (the API's wire types live in
//! `courier-producer`): the crates around this one do the I/O and call
//! into these plain functions, which is what lets them be unit-tested exhaustively.

/// `TryFrom<String>` (through `parse`), `From<T> for String` and `Display` for a validated
/// string newtype, so that serde can read and write it as a plain string.
macro_rules! string_newtype_conversions {
    ($($t:ty),*) => {$(
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                Self::parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl ::std::fmt::Display for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}

pub mod batch;
pub mod cells;
pub mod codes;
pub mod delivery;
pub mod destination;
pub mod error;
pub mod failure;
pub mod format;
pub mod ids;
pub mod key;
pub mod payload;
pub mod render;
pub mod role;
pub mod rows;
pub mod write_options;

pub use codes::ErrorCode;
pub use error::{FieldError, ValidationErrors};
pub use format::{Compression, Format};
pub use ids::{DeliveryId, DestinationId, TenantId};
