//! Courier's worker: take a delivery task, render the file, upload it to the customer's
//! store, and record the outcome.
//!
//! - [`run`]: the apalis worker loop, its supervisor and graceful shutdown.
//! - [`deliver`]: one delivery from task to record, with the retry policy.
//! - [`render`]: rendering rows into a spool file off the async runtime.
//! - [`telemetry`]: the metrics the worker exports.

pub mod deliver;
pub mod render;
pub mod run;
pub mod telemetry;

pub use deliver::{Deliverer, Handled, RetryPolicy};
pub use run::{WorkerSettings, run};
