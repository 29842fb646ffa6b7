//! The producer's telemetry: the metric the enqueue path exports (in the API process, and in
//! any upstream job that links [`crate::Producer`]) and its HELP text. No other module of
//! the producer names a metric.

/// Deliveries accepted into the queue.
pub const ENQUEUED_TOTAL: &str = "courier_enqueued_total";

/// One delivery was accepted: its record is written and its task queued.
pub fn enqueued() {
    metrics::counter!(ENQUEUED_TOTAL).increment(1);
}

/// Registers the HELP text with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        ENQUEUED_TOTAL,
        "Deliveries accepted into the queue (by the API or a linked producer)."
    );
}

/// Describes the metric and registers it at zero, so it is scraped before the first enqueue.
pub fn register() {
    describe();
    metrics::counter!(ENQUEUED_TOTAL).absolute(0);
}
