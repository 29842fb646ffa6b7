//! Everything Courier says to a customer's S3 store.
//!
//! - [`client`]: a client per destination (static keys, unsigned, or the AWS default
//!   credential chain), uploads, and SDK errors turned into an
//!   [`ErrorCode`](courier_core::ErrorCode), a message and the HTTP status (the code and
//!   status give the class).
//! - [`cache`]: those clients kept per destination between deliveries.
//! - [`probe`]: the connection test (HeadBucket, PutObject and DeleteObject of a probe
//!   object) and its report.
//! - [`stream`]: an object of unknown size streamed as one PutObject or a multipart
//!   upload, part by part in bounded memory, each request with `Content-MD5`.
//! - [`hints`]: plain-words advice for each error code the connection test can meet.

pub mod cache;
pub mod client;
pub mod hints;
pub mod probe;
pub mod stream;

pub use cache::ClientCache;
pub use client::{PutRequest, S3Failure, S3Timeouts, client, put_file};
pub use hints::hint;
pub use probe::{ProbeError, ProbeReport, ProbeStep, ProbeStepName, StepOutcome, test_connection};
