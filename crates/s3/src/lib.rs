//! Everything Courier says to a customer's S3 store.
//!
//! - [`client`]: a client per destination (static keys, unsigned, or the AWS default
//!   credential chain), uploads, and SDK errors turned into a code, a message and an
//!   [`ErrorClass`](courier_core::failure::ErrorClass).

pub mod client;

pub use client::{PutRequest, S3Failure, S3Timeouts, client, put_file};
