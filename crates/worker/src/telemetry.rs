//! The worker's telemetry: the names of the metrics a worker exports, their HELP text, and
//! the helpers that record them. No other module of the worker names a metric. Label values
//! are bounded: outcomes, formats and error classes only; never ids, keys or bucket names.

use std::time::Duration;

use courier_core::Format;
use courier_core::failure::ErrorClass;

pub const DELIVERIES_TOTAL: &str = "courier_deliveries_total";
pub const ATTEMPTS_TOTAL: &str = "courier_delivery_attempts_total";
pub const RENDER_SECONDS: &str = "courier_render_duration_seconds";
pub const UPLOAD_SECONDS: &str = "courier_upload_duration_seconds";
pub const END_TO_END_SECONDS: &str = "courier_delivery_duration_seconds";
pub const UPLOADED_BYTES_TOTAL: &str = "courier_uploaded_bytes_total";
pub const IN_FLIGHT: &str = "courier_tasks_in_flight";
pub const POISON_TOTAL: &str = "courier_poison_tasks_total";
pub const UPLOAD_LIMIT_CUTS_TOTAL: &str = "courier_upload_limit_cuts_total";
pub const STORAGE_FAILURES_TOTAL: &str = "courier_storage_failures_total";
pub const BATCH_WINDOWS_TOTAL: &str = "courier_batch_windows_total";
pub const BATCH_OBJECTS_TOTAL: &str = "courier_batch_objects_total";
pub const BATCH_ROWS_TOTAL: &str = "courier_batch_rows_total";
pub const BATCH_OBJECT_BYTES_TOTAL: &str = "courier_batch_object_bytes_total";
pub const BATCH_LAG_SECONDS: &str = "courier_batch_lag_duration_seconds";
pub const BATCH_WINDOWS_OVERDUE: &str = "courier_batch_windows_overdue";

/// A look at a batch window ended: `delivered` (its objects landed; `lag` is the seconds
/// from the window's end to the last object landing), `retried`, `failed` or `held` (its
/// destination is paused or failing: left open).
pub fn batch_window_closed(outcome: &'static str, lag: f64) {
    metrics::counter!(BATCH_WINDOWS_TOTAL, "outcome" => outcome).increment(1);
    if outcome == "delivered" {
        metrics::histogram!(BATCH_LAG_SECONDS).record(lag);
    }
}

/// One batch object landed with `rows` rows in `bytes` bytes (gzip).
pub fn batch_object_landed(rows: u64, bytes: u64) {
    metrics::counter!(BATCH_OBJECTS_TOTAL).increment(1);
    metrics::counter!(BATCH_ROWS_TOTAL).increment(rows);
    metrics::counter!(BATCH_OBJECT_BYTES_TOTAL).increment(bytes);
}

/// Open batch windows (fleet-wide) due longer ago than the closer's overdue bound.
pub fn batch_windows_overdue(count: u64) {
    metrics::gauge!(BATCH_WINDOWS_OVERDUE).set(count as f64);
}

/// What became of a task whose handling failed in Courier's own storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageOutcome {
    /// Scheduled again by Courier's retry policy.
    Retried,
    /// The policy was spent: a dead letter.
    Dead,
    /// Nothing could be written: handed back to the queue after a delay.
    HandedBack,
}

/// A task whose handling failed in Courier's own storage.
pub fn storage_failure(outcome: StorageOutcome) {
    let label = match outcome {
        StorageOutcome::Retried => "retried",
        StorageOutcome::Dead => "dead",
        StorageOutcome::HandedBack => "handed_back",
    };
    metrics::counter!(STORAGE_FAILURES_TOTAL, "outcome" => label).increment(1);
}

/// Final outcome of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Stopped on a permanent error or after the last retry; the task is dead-lettered.
    Dead,
    /// Not uploaded: a newer result is already at the key.
    Superseded,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Dead => "dead",
            Outcome::Superseded => "superseded",
        }
    }
}

pub fn delivery_finished(outcome: Outcome, format: Format, end_to_end: Duration) {
    metrics::counter!(DELIVERIES_TOTAL, "outcome" => outcome.label(), "format" => format.label())
        .increment(1);
    metrics::histogram!(END_TO_END_SECONDS, "outcome" => outcome.label())
        .record(end_to_end.as_secs_f64());
}

/// A delivery held because its destination is paused or failing.
pub fn delivery_parked(format: Format) {
    metrics::counter!(DELIVERIES_TOTAL, "outcome" => "parked", "format" => format.label())
        .increment(1);
}

/// A failed attempt that will be tried again.
pub fn delivery_retried(format: Format) {
    metrics::counter!(DELIVERIES_TOTAL, "outcome" => "retried", "format" => format.label())
        .increment(1);
}

pub fn attempt(result: Result<(), ErrorClass>) {
    let (outcome, class) = match result {
        Ok(()) => ("success", "none"),
        Err(c) => ("failure", c.label()),
    };
    metrics::counter!(ATTEMPTS_TOTAL, "outcome" => outcome, "class" => class).increment(1);
}

pub fn rendered(format: Format, took: Duration) {
    metrics::histogram!(RENDER_SECONDS, "format" => format.label()).record(took.as_secs_f64());
}

pub fn uploaded(format: Format, bytes: u64, took: Duration) {
    metrics::histogram!(UPLOAD_SECONDS, "format" => format.label()).record(took.as_secs_f64());
    metrics::counter!(UPLOADED_BYTES_TOTAL, "format" => format.label()).increment(bytes);
}

/// A destination's adaptive upload limit was lowered; `reason` is `overloaded` (throttled,
/// 5xx, timed out) or `slower` (a one-request upload took over twice its usual time).
pub fn upload_limit_cut(reason: &'static str) {
    metrics::counter!(UPLOAD_LIMIT_CUTS_TOTAL, "reason" => reason).increment(1);
}

pub fn poison() {
    metrics::counter!(POISON_TOTAL).increment(1);
}

/// Counts a task as in flight for as long as the guard lives.
#[derive(Debug)]
pub struct InFlight;

impl InFlight {
    pub fn enter() -> Self {
        metrics::gauge!(IN_FLIGHT).increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT).decrement(1.0);
    }
}

/// Registers every metric's HELP text and unit with the installed recorder.
pub fn describe() {
    use metrics::Unit;
    metrics::describe_counter!(
        DELIVERIES_TOTAL,
        "Deliveries that reached an outcome: delivered, retried (a failed attempt that will be \
         tried again), parked (held for a paused or failing destination), dead or superseded."
    );
    metrics::describe_counter!(
        STORAGE_FAILURES_TOTAL,
        "Tasks whose handling failed in Courier's own storage (Redis), by what became of them: \
         retried (scheduled again by the retry policy), dead (the policy was spent: a dead \
         letter with StorageRetriesExhausted) or handed_back (nothing could be written; the \
         task went back to the queue after a delay)."
    );
    metrics::describe_counter!(
        ATTEMPTS_TOTAL,
        "Upload attempts, by outcome and, for failures, error class (transient or permanent)."
    );
    metrics::describe_histogram!(
        RENDER_SECONDS,
        Unit::Seconds,
        "Time to render a delivery's rows into its file format."
    );
    metrics::describe_histogram!(
        UPLOAD_SECONDS,
        Unit::Seconds,
        "Time to upload one rendered object to its destination."
    );
    metrics::describe_histogram!(
        END_TO_END_SECONDS,
        Unit::Seconds,
        "Time from enqueue to a delivery's final outcome."
    );
    metrics::describe_counter!(
        UPLOADED_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes uploaded to destinations."
    );
    metrics::describe_gauge!(IN_FLIGHT, "Tasks this worker is working on right now.");
    metrics::describe_counter!(
        UPLOAD_LIMIT_CUTS_TOTAL,
        "Times a destination's adaptive limit on concurrent uploads was lowered: overloaded \
         (throttled, 5xx or timed out: halved) or slower (an upload took over twice its usual \
         time: a tenth off)."
    );
    metrics::describe_counter!(
        BATCH_WINDOWS_TOTAL,
        "Batch windows looked at by this worker's closer, by outcome: delivered (every object \
         of the window landed and its deliveries are DELIVERED), retried (a transient failure; \
         the window is due again later), failed (given up; its deliveries are FAILED and \
         dead-lettered) or held (its destination is paused or failing; left open)."
    );
    metrics::describe_counter!(
        BATCH_OBJECTS_TOTAL,
        "Batch objects landed; rows per object is the rate of courier_batch_rows_total over \
         this one's."
    );
    metrics::describe_counter!(
        BATCH_ROWS_TOTAL,
        "Rows (NDJSON lines) in the batch objects landed."
    );
    metrics::describe_counter!(
        BATCH_OBJECT_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes (gzip) of the batch objects landed."
    );
    metrics::describe_histogram!(
        BATCH_LAG_SECONDS,
        Unit::Seconds,
        "Time from a batch window's end to its objects landing."
    );
    metrics::describe_gauge!(
        BATCH_WINDOWS_OVERDUE,
        "Open batch windows, fleet-wide (at most 1000 counted), that were due more than two \
         minutes ago and have not landed, paused destinations' windows left out: retrying, \
         held for a failing destination, or no closer running."
    );
    metrics::describe_counter!(
        POISON_TOTAL,
        "Task payloads that could not be read as a delivery task; they are dead-lettered."
    );
}

/// Describes every metric (see [`describe`]) and registers every counter series at zero,
/// so dashboards and `rate()` see a worker from its first scrape, not from its first
/// delivery of each kind.
pub fn register() {
    describe();
    for format in Format::ALL {
        for outcome in ["delivered", "retried", "parked", "dead", "superseded"] {
            metrics::counter!(DELIVERIES_TOTAL, "outcome" => outcome, "format" => format.label())
                .absolute(0);
        }
        metrics::counter!(UPLOADED_BYTES_TOTAL, "format" => format.label()).absolute(0);
    }
    for (outcome, class) in [
        ("success", "none"),
        ("failure", "transient"),
        ("failure", "permanent"),
    ] {
        metrics::counter!(ATTEMPTS_TOTAL, "outcome" => outcome, "class" => class).absolute(0);
    }
    metrics::counter!(POISON_TOTAL).absolute(0);
    for outcome in ["delivered", "retried", "failed", "held"] {
        metrics::counter!(BATCH_WINDOWS_TOTAL, "outcome" => outcome).absolute(0);
    }
    metrics::counter!(BATCH_OBJECT_BYTES_TOTAL).absolute(0);
    metrics::counter!(BATCH_OBJECTS_TOTAL).absolute(0);
    metrics::counter!(BATCH_ROWS_TOTAL).absolute(0);
    metrics::gauge!(BATCH_WINDOWS_OVERDUE).set(0.0);
    metrics::gauge!(IN_FLIGHT).set(0.0);
}

/// Histogram buckets (seconds) that fit each duration: renders and uploads of small files
/// take milliseconds, big ones minutes.
pub fn buckets() -> Vec<(&'static str, Vec<f64>)> {
    let fine = vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        120.0, 300.0,
    ];
    let end_to_end = vec![
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
        1800.0, 3600.0,
    ];
    let lag = vec![
        1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    ];
    vec![
        (BATCH_LAG_SECONDS, lag),
        (RENDER_SECONDS, fine.clone()),
        (UPLOAD_SECONDS, fine),
        (END_TO_END_SECONDS, end_to_end),
    ]
}
