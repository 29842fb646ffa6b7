//! A delivery record as the API shows it ([`DeliveryBody`], converted from the stored
//! [`DeliveryRecord`], whose tenant it leaves out), and the answer to a queued delivery.

use chrono::{DateTime, Utc};
use courier_core::DeliveryId;
use courier_core::batch::BatchRef;
use courier_core::delivery::{Attempt, Checksum, DeliveryError, DeliveryRecord, Timings};
use serde::Serialize;
use utoipa::ToSchema;

use super::enums::{Compression, DeliveryStatus, Format};

/// Everything known about one delivery. Written when the task is enqueued and after
/// every attempt; `GET /api/v1/deliveries/{id}` returns it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = DeliveryRecord)]
pub struct DeliveryBody {
    #[schema(example = "dlv_01JXQ5W7ZB3C4D5E6F7G8H9JKM")]
    pub id: String,
    #[schema(example = "dst_01JXQ5V3K8M2N7P4R6S9T0W1XY")]
    pub destination_id: String,
    pub job_id: String,
    #[schema(example = "INV-1234")]
    pub partner_inventory_id: String,
    pub completed_at: DateTime<Utc>,
    pub status: DeliveryStatus,
    pub format: Format,
    pub compression: Compression,
    pub rows: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The checksum of the delivered bytes, as sent to the store (which verified it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<ChecksumBody>,
    pub attempts: Vec<AttemptBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<DeliveryErrorBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<TimingsBody>,
    pub enqueued_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// To a batched destination: its window, and once delivered the batch object (`id`,
    /// `key`) and the lines holding its rows (`firstLine`..=`lastLine`, from 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchRefBody>,
}

/// Where a batched delivery's rows are.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = BatchRef)]
pub struct BatchRefBody {
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// The batch (see `GET /api/v1/batches`), once delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "bat_8f25b54462bf6eeac3ee8bde512b6c59")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_line: Option<u64>,
}

impl From<BatchRef> for BatchRefBody {
    fn from(b: BatchRef) -> Self {
        Self {
            window_start: b.window_start,
            window_end: b.window_end,
            id: b.id,
            key: b.key,
            first_line: b.first_line,
            last_line: b.last_line,
        }
    }
}

impl From<DeliveryRecord> for DeliveryBody {
    fn from(r: DeliveryRecord) -> Self {
        // Destructured so that a field added to the record must be placed here: shown, or
        // left out on purpose (like the tenant).
        let DeliveryRecord {
            id,
            tenant: _,
            destination_id,
            job_id,
            partner_inventory_id,
            completed_at,
            status,
            format,
            compression,
            rows,
            bucket,
            key,
            bytes,
            etag,
            checksum,
            attempts,
            error,
            timings,
            enqueued_at,
            delivered_at,
            updated_at,
            batch,
        } = r;
        Self {
            id: id.to_string(),
            destination_id: destination_id.to_string(),
            job_id,
            partner_inventory_id: partner_inventory_id.to_string(),
            completed_at,
            status: status.into(),
            format: format.into(),
            compression: compression.into(),
            rows,
            bucket,
            key,
            bytes,
            etag,
            checksum: checksum.map(Into::into),
            attempts: attempts.into_iter().map(Into::into).collect(),
            error: error.map(Into::into),
            timings: timings.map(Into::into),
            enqueued_at,
            delivered_at,
            updated_at,
            batch: batch.map(Into::into),
        }
    }
}

/// One try at delivering, kept in the record so a customer can see each one.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Attempt)]
pub struct AttemptBody {
    pub number: u32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// `DELIVERED` or `FAILED`.
    pub outcome: DeliveryStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

impl From<Attempt> for AttemptBody {
    fn from(a: Attempt) -> Self {
        Self {
            number: a.number,
            worker: a.worker,
            started_at: a.started_at,
            duration_ms: a.duration_ms,
            outcome: a.outcome.into(),
            error_code: a.error_code,
            error_message: a.error_message,
        }
    }
}

/// The error that ended a delivery, as the customer sees it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = DeliveryError)]
pub struct DeliveryErrorBody {
    /// The store's error code (`AccessDenied`, `NoSuchBucket`, …) or Courier's own
    /// (`DestinationNotFound`, `RenderFailed`, …).
    pub code: String,
    pub message: String,
}

impl From<DeliveryError> for DeliveryErrorBody {
    fn from(e: DeliveryError) -> Self {
        Self {
            code: e.code,
            message: e.message,
        }
    }
}

/// A checksum of a delivered object.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Checksum)]
pub struct ChecksumBody {
    /// `MD5`: every request carried `Content-MD5`, which the store checks.
    #[schema(example = "MD5")]
    pub algorithm: String,
    /// Lowercase hex of the whole object's digest.
    #[schema(example = "9e107d9d372bb6826bd81d3542a419d6")]
    pub value: String,
}

impl From<Checksum> for ChecksumBody {
    fn from(c: Checksum) -> Self {
        Self {
            algorithm: c.algorithm,
            value: c.value,
        }
    }
}

/// How long each stage took, in milliseconds.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Timings)]
pub struct TimingsBody {
    pub render_ms: u64,
    pub upload_ms: u64,
    /// From enqueue to the end of the last attempt.
    pub total_ms: u64,
}

impl From<Timings> for TimingsBody {
    fn from(t: Timings) -> Self {
        Self {
            render_ms: t.render_ms,
            upload_ms: t.upload_ms,
            total_ms: t.total_ms,
        }
    }
}

/// A page of delivery records, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPage {
    pub items: Vec<DeliveryBody>,
    /// Pass as `cursor` to get the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A delivery that was queued.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAccepted {
    /// The delivery's id; `GET /api/v1/deliveries/{id}` follows it.
    #[schema(value_type = String, example = "dlv_01JXQ5W7ZB3C4D5E6F7G8H9JKM")]
    pub id: DeliveryId,
    /// `QUEUED`: the task is in the queue; `BATCHED`: the rows are in the batched
    /// destination's open window.
    pub status: DeliveryStatus,
    /// To a batched destination: the window the rows were appended to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchRefBody>,
}

impl From<&DeliveryRecord> for DeliveryAccepted {
    fn from(r: &DeliveryRecord) -> Self {
        Self {
            id: r.id.clone(),
            status: r.status.into(),
            batch: r.batch.clone().map(Into::into),
        }
    }
}
