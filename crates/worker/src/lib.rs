//! Courier's worker: take a delivery task, render the file, upload it to the customer's
//! store, and record the outcome.
//!
//! - [`run`]: the apalis worker loop, its supervisor and graceful shutdown.
//! - [`codec`]: task payloads taken as bytes, so that no payload can stop the queue.
//! - [`decide`]: every decision about a delivery, as one pure function.
//! - [`deliver`]: one delivery from task to record: gathers the facts [`decide`] needs
//!   and carries out its transitions.
//! - [`ports`]: the small interfaces the delivery shell acts through (records, queue,
//!   health, key guard, slots, uploader), on Redis and S3 in a worker.
//! - [`slot_gate`]: upload slots per destination, waited for briefly while they move.
//! - [`retry`]: the retry policy (exponential, full jitter, capped in count and time).
//! - [`janitor`]: the periodic sweep that keeps Redis memory bounded and dead-letters
//!   deliveries held too long.
//! - [`renew`]: a long delivery's key lock and upload slot, kept alive while it runs.
//! - [`pipeline`]: rows rendered straight into a streamed (multipart) upload.
//! - [`source`]: inline rows, or rows streamed from a reference (`rowsUrl`).
//! - [`bounded`]: the limits on a streamed reference: line length, total size, fetch time.
//! - [`streams`]: the bound on deliveries of rows by reference running at once.
//! - [`storage`]: Courier's retry policy for failures of its own storage (Redis).
//! - [`telemetry`]: the metrics the worker exports.
//! - [`batch`]: the closer of batched destinations' windows, which every worker runs.
//! - [`wake`]: idle workers woken by the announcement of a new task (Redis pub/sub).

pub mod batch;
pub mod bounded;
pub mod codec;
pub mod decide;
pub mod deliver;
pub mod janitor;
pub mod pipeline;
pub mod ports;
pub mod renew;
pub mod retry;
pub mod run;
pub mod slot_gate;
pub mod source;
pub mod storage;
pub mod streams;
pub mod telemetry;
pub mod wake;

pub use deliver::{Deliverer, Handled};
pub use retry::RetryPolicy;
pub use run::{WorkerSettings, run};
