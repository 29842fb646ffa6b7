//! The control API's wire types: what requests and responses look like as JSON, each with
//! its OpenAPI schema (`utoipa::ToSchema`).
//!
//! The stored models of `courier-core` know nothing of HTTP or OpenAPI. Requests are read
//! here and validated into core's types ([`JobCompletedRequest::validate`],
//! [`DestinationRequest::validate`]); responses are converted from core's and the store's
//! types (`From`), so the schema is derived on the very type that is serialized and
//! nothing is mirrored by hand.
//!
//! | module | types |
//! | --- | --- |
//! | [`enums`] | `Format`, `Compression`, `ParquetCompression`, `ColumnType`, `DestinationStatus`, `DestinationType`, `CredentialsMode`, `DeliveryStatus`: the wire twins of core's enums, converted both ways by exhaustive matches |
//! | [`destination`] | the destination request, its validation, the destination as shown |
//! | [`job`] | the "job completed" request and its validation |
//! | [`record`] | a delivery record as shown, and the answer to an accepted delivery |
//! | [`probe`] | the connection test's report |
//! | [`batch`] | a batched destination's object as the inspector shows it |

pub mod batch;
pub mod destination;
pub mod enums;
pub mod job;
pub mod probe;
pub mod record;
pub mod tenant;

pub use batch::{BatchBody, BatchPage, BatchStatus};
pub use destination::{
    BatchRequest, BatchView, CsvRequest, CsvView, DestinationPage, DestinationRequest,
    DestinationView, ParquetRequest, ParquetView, S3Request,
};
pub use enums::{
    ColumnType, Compression, CredentialsMode, DeliveryStatus, DestinationStatus, DestinationType,
    Format, ParquetCompression,
};
pub use job::JobCompletedRequest;
pub use probe::ProbeReport;
pub use record::{DeliveryAccepted, DeliveryBody, DeliveryPage};
pub use tenant::TenantView;
