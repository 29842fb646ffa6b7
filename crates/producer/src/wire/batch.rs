//! A batched destination's object as the inspector shows it (`GET /api/v1/batches`),
//! converted from core's [`BatchRecord`], whose tenant it leaves out.

use chrono::{DateTime, Utc};
use courier_core::batch::{BatchRecord, BatchStatus as CoreBatchStatus};
use serde::Serialize;
use utoipa::ToSchema;

/// Where a batch object stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BatchStatus {
    /// The object is in the bucket.
    Delivered,
    /// The window failed for good; its deliveries are `FAILED` and dead-lettered.
    Failed,
}

impl From<CoreBatchStatus> for BatchStatus {
    fn from(s: CoreBatchStatus) -> Self {
        match s {
            CoreBatchStatus::Delivered => BatchStatus::Delivered,
            CoreBatchStatus::Failed => BatchStatus::Failed,
        }
    }
}

/// One object of a batched destination: a window's deliveries (or, over
/// `maxObjectBytes`, the next part of them), gzip NDJSON.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Batch)]
pub struct BatchBody {
    #[schema(example = "bat_8f25b54462bf6eeac3ee8bde512b6c59")]
    pub id: String,
    #[schema(example = "dst_01JXQ5V3K8M2N7P4R6S9T0W1XY")]
    pub destination_id: String,
    pub bucket: String,
    #[schema(
        example = "incoming/2026/06/07/10/2026-06-07-10-14-00-8f25b54462bf6eeac3ee8bde512b6c59.gz"
    )]
    pub key: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// 0 for a window's first object, 1 for the next, … (over `maxObjectBytes`).
    pub sequence: u32,
    pub status: BatchStatus,
    /// NDJSON lines in the object.
    pub rows: u64,
    /// Deliveries whose rows it holds.
    pub deliveries: u64,
    /// Bytes of the gzip object.
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Lowercase hex MD5 of the object; every part was sent with `Content-MD5`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// Tries at closing the window, the successful one included.
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl From<BatchRecord> for BatchBody {
    fn from(b: BatchRecord) -> Self {
        let BatchRecord {
            id,
            tenant: _,
            destination_id,
            bucket,
            key,
            window_start,
            window_end,
            sequence,
            status,
            rows,
            deliveries,
            bytes,
            etag,
            md5,
            attempts,
            error_code,
            error_message,
            updated_at,
        } = b;
        Self {
            id,
            destination_id: destination_id.to_string(),
            bucket,
            key,
            window_start,
            window_end,
            sequence,
            status: status.into(),
            rows,
            deliveries,
            bytes,
            etag,
            md5,
            attempts,
            error_code,
            error_message,
            updated_at,
        }
    }
}

/// A page of batch objects, newest window first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchPage {
    pub items: Vec<BatchBody>,
    /// Pass as `cursor` to get the next page; null on the last page.
    #[schema(value_type = Option<String>, required = true)]
    pub next_cursor: Option<String>,
}
