//! A finished job's delivery: the request that announces it, the task a worker receives,
//! and the record of what happened to it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::rows::InlineRows;
use crate::{Compression, DeliveryId, DestinationId, Format, TenantId};

/// One result row: a JSON object. Key order is kept, so the first row can name the columns.
pub type Row = serde_json::Map<String, Value>;

/// Longest id accepted for `jobId` and `partnerInventoryId`.
pub const MAX_ID_LEN: usize = 200;
/// Most columns one result may have (XLSX's own limit is 16,384).
pub const MAX_COLUMNS: usize = 16_384;

/// The partner inventory id; it becomes part of the object key, so its alphabet is safe
/// for keys and file names on every store: letters, digits, `-`, `_` and `.`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PartnerInventoryId(String);

impl PartnerInventoryId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= MAX_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s != "."
            && s != "..";
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "must be 1 to {MAX_ID_LEN} characters of letters, digits, `-`, `_` or `.` \
                 (it becomes part of the object key)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_newtype_conversions!(PartnerInventoryId);

/// Where a big result's rows are read from, streamed by the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RowsUrl(String);

/// A parsed [`RowsUrl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowsLocation {
    /// An object in the fleet's staging store.
    S3 { bucket: String, key: String },
    /// Anything a plain GET can fetch.
    Http(String),
}

impl RowsLocation {
    /// Why a fleet whose staging bucket is `staging` must not read these rows: `s3://` rows
    /// must be in that bucket, so that a delivery cannot make the fleet's credentials read
    /// whatever else they can. `None` when they may be read.
    pub fn outside_staging(&self, staging: &str) -> Option<String> {
        match self {
            RowsLocation::S3 { bucket, .. } if bucket != staging => Some(format!(
                "s3:// rows must be in the fleet's staging bucket `{staging}`, not `{bucket}`"
            )),
            _ => None,
        }
    }
}

impl RowsUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let url = Self(s.to_owned());
        url.location().map(|_| url)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// NDJSON is read through gzip when the name ends in `.gz`.
    pub fn is_gzip(&self) -> bool {
        let path = self.0.split(['?', '#']).next().unwrap_or_default();
        path.ends_with(".gz")
    }

    pub fn location(&self) -> Result<RowsLocation, String> {
        let s = self.0.as_str();
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, key) = rest
                .split_once('/')
                .ok_or("an s3:// rowsUrl needs a bucket and a key: s3://bucket/key")?;
            crate::destination::BucketName::parse(bucket)?;
            if key.is_empty() {
                return Err("an s3:// rowsUrl needs a key after the bucket".into());
            }
            return Ok(RowsLocation::S3 {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            });
        }
        let url = url::Url::parse(s).map_err(|e| format!("`{s}` is not a valid URL: {e}"))?;
        match url.scheme() {
            "http" | "https" if url.host_str().is_some() => Ok(RowsLocation::Http(s.to_owned())),
            _ => Err("rowsUrl must be s3://bucket/key or an http(s) URL".into()),
        }
    }
}

string_newtype_conversions!(RowsUrl);

/// Where a completed job's rows are: inline in the request, or by reference. Exactly one
/// of the two, so a job with both (or neither) cannot be represented.
#[derive(Debug, Clone, PartialEq)]
pub enum RowsSource {
    /// The rows' JSON text, checked to be an array of `count` objects.
    Inline { rows: InlineRows, count: u64 },
    /// NDJSON rows the worker streams from the fleet's staging store or an http(s) URL.
    Url(RowsUrl),
}

impl RowsSource {
    /// How many rows are known before delivery: the inline count, 0 for a reference.
    pub fn count(&self) -> u64 {
        match self {
            RowsSource::Inline { count, .. } => *count,
            RowsSource::Url(_) => 0,
        }
    }
}

/// A "job completed" with every field checked: rows are objects and columns are known.
/// Built from the API's request body (`courier_producer::wire::JobCompletedRequest`).
#[derive(Debug, Clone, PartialEq)]
pub struct JobCompleted {
    pub destination_id: DestinationId,
    pub job_id: String,
    pub partner_inventory_id: PartnerInventoryId,
    pub completed_at: DateTime<Utc>,
    pub columns: Vec<String>,
    pub rows: RowsSource,
}

/// What a worker receives from the queue: everything needed to render and upload one file.
/// The destination itself is read when the task runs, so rotated credentials apply at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryTask {
    pub delivery_id: DeliveryId,
    pub tenant: TenantId,
    pub destination_id: DestinationId,
    pub job_id: String,
    pub partner_inventory_id: PartnerInventoryId,
    pub completed_at: DateTime<Utc>,
    pub columns: Vec<String>,
    /// The JSON text of the rows, as the producer received it.
    #[serde(default)]
    pub rows: InlineRows,
    /// Set instead of `rows` for results passed by reference; the worker streams them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_url: Option<RowsUrl>,
    pub enqueued_at: DateTime<Utc>,
    /// Where this delivery stands in its retry schedule; reset when it is replayed.
    #[serde(default)]
    pub retry: RetryState,
}

/// Retry bookkeeping that travels with the task, so that a scheduled retry survives any
/// worker's restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryState {
    /// Attempts already made in this run of the delivery.
    pub attempts: u32,
    /// When the first of them started; the retry policy caps the total time from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt_at: Option<DateTime<Utc>>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryStatus {
    /// Accepted and waiting in the queue.
    Queued,
    /// A worker is rendering or uploading it.
    InProgress,
    /// A transient failure; another attempt is scheduled.
    Retrying,
    /// Held because the destination is paused; it flows when the destination is active again.
    Held,
    /// The object is in the bucket.
    Delivered,
    /// Not uploaded: a newer result of the same partner inventory and day is already at
    /// the key, and an older one must not overwrite it.
    Superseded,
    /// Gave up: a permanent error, or retries exhausted. The record says why.
    Failed,
}

impl DeliveryStatus {
    pub fn parse(s: &str) -> Result<Self, String> {
        serde_json::from_value(Value::String(s.to_owned())).map_err(|_| {
            format!(
                "`{s}` is not a status (QUEUED, IN_PROGRESS, RETRYING, HELD, DELIVERED, SUPERSEDED, FAILED)"
            )
        })
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryStatus::Delivered | DeliveryStatus::Failed | DeliveryStatus::Superseded
        )
    }
}

/// One try at delivering, kept in the record so a customer can see each one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
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

/// The error that ended a delivery, as the customer sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryError {
    /// The store's error code (`AccessDenied`, `NoSuchBucket`, …) or Courier's own
    /// (`DestinationNotFound`, `RenderFailed`, …).
    pub code: String,
    pub message: String,
}

/// A checksum of a delivered object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checksum {
    /// `MD5`: every request carried `Content-MD5`, which the store checks.
    pub algorithm: String,
    /// Lowercase hex of the whole object's digest.
    pub value: String,
}

/// How long each stage took, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    pub render_ms: u64,
    pub upload_ms: u64,
    /// From enqueue to the end of the last attempt.
    pub total_ms: u64,
}

/// Everything known about one delivery, as stored. Written when the task is enqueued and
/// after every attempt; the API shows it as `courier_producer::wire::DeliveryBody`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub tenant: TenantId,
    pub destination_id: DestinationId,
    pub job_id: String,
    pub partner_inventory_id: PartnerInventoryId,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Checksum>,
    pub attempts: Vec<Attempt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<DeliveryError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
    pub enqueued_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod rows_url_tests {
    use super::*;

    #[test]
    fn only_s3_rows_outside_the_staging_bucket_are_refused() {
        let loc = |u: &str| RowsUrl::parse(u).unwrap().location().unwrap();
        assert_eq!(
            loc("s3://staging/a.ndjson").outside_staging("staging"),
            None
        );
        assert_eq!(
            loc("https://example.com/a.ndjson").outside_staging("staging"),
            None
        );
        let why = loc("s3://secrets/a.ndjson")
            .outside_staging("staging")
            .unwrap();
        assert!(
            why.contains("`staging`") && why.contains("`secrets`"),
            "{why}"
        );
    }

    #[test]
    fn s3_and_http_references_parse() {
        let u = RowsUrl::parse("s3://courier-staging/jobs/42.ndjson.gz").unwrap();
        assert!(u.is_gzip());
        assert_eq!(
            u.location().unwrap(),
            RowsLocation::S3 {
                bucket: "courier-staging".into(),
                key: "jobs/42.ndjson.gz".into()
            }
        );
        let h = RowsUrl::parse("https://files.example.com/r.ndjson?sig=1").unwrap();
        assert!(!h.is_gzip());
        for bad in [
            "s3://Bad_Bucket/k",
            "s3://bucket",
            "s3://bucket/",
            "ftp://x/y",
            "nope",
        ] {
            assert!(RowsUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_parses_from_its_wire_name() {
        assert_eq!(
            DeliveryStatus::parse("DELIVERED").unwrap(),
            DeliveryStatus::Delivered
        );
        assert!(DeliveryStatus::parse("done").is_err());
    }
}
