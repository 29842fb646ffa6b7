//! How a failure is treated: retried later, or given up at once. Which class each error
//! code has is written in [`crate::codes`]; this module holds the classes and the rule for
//! codes whose class follows the HTTP status.

use serde::{Deserialize, Serialize};

/// How a failure is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorClass {
    /// Likely to pass on a later try: 5xx, throttling, timeouts, connection errors.
    Transient,
    /// Will fail the same way until someone changes the configuration or the bucket.
    Permanent,
}

impl ErrorClass {
    /// The bounded label value used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
        }
    }
}

/// Who a failure is charged to: whose health it counts against. Only a permanent failure
/// charged to the destination counts towards marking it failing (and holding its other
/// deliveries); a failure charged to the rows fails only its own delivery, and one charged
/// to Courier (its disk, its configuration) is Courier's to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChargedTo {
    /// The destination's store answered (or could not be reached): AccessDenied,
    /// NoSuchBucket, its endpoint refused by the egress policy, …
    Destination,
    /// The delivery's rows: their reference (`rowsUrl`) could not be read, or they could
    /// not be rendered.
    Rows,
    /// Courier itself: a worker's local disk or temp files, its staging configuration, its
    /// own bookkeeping. Never the customer's.
    Courier,
}

impl ChargedTo {
    /// The bounded label value (logs, metrics).
    pub fn label(self) -> &'static str {
        match self {
            ChargedTo::Destination => "destination",
            ChargedTo::Rows => "rows",
            ChargedTo::Courier => "courier",
        }
    }
}

/// The class of a failure whose code does not fix one, from its HTTP status. Without a
/// status (no response at all: refused connection, DNS failure, timeout) it is transient.
pub fn class_of_status(status: Option<u16>) -> ErrorClass {
    match status {
        None | Some(408 | 429) => ErrorClass::Transient,
        Some(s) if s >= 500 => ErrorClass::Transient,
        Some(_) => ErrorClass::Permanent,
    }
}
