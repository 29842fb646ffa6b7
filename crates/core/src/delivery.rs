//! A finished job's delivery: the request that announces it, the task a worker receives,
//! and the record of what happened to it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::format::ColumnTypes;
use crate::rows::InlineRows;
use crate::{Compression, DeliveryId, DestinationId, ErrorCode, Format, TenantId};

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

/// Why the fleet must not read a delivery's `s3://` rows; see
/// [`RowsLocation::refusal_for`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowsRefusal {
    /// [`ErrorCode::RowsUrlOutsideStaging`] or [`ErrorCode::RowsOutsideTenant`].
    pub code: ErrorCode,
    /// A plain sentence naming the rule (never more of the key than the tenant's own).
    pub message: String,
}

/// Characters a staged key's segments may hold: S3's "safe characters" and `=` (for
/// `name=value` partitions). Anything else (`%`, `\`, spaces, controls, non-ASCII) is
/// refused rather than interpreted, so that no reader can decode a key into another path.
fn staged_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'-' | b'_' | b'.' | b'*' | b'\'' | b'(' | b')' | b'='
        )
}

impl RowsLocation {
    /// Why `tenant`'s delivery must not read these rows, on a fleet whose staging bucket is
    /// `staging`; `None` when it may. The API (`Rules::check_rows`) and the worker (before
    /// it reads) both ask this, so the rule has one home.
    ///
    /// `s3://` rows must be in that bucket, so that a delivery cannot make the fleet's
    /// credentials read whatever else they can; and under `{tenant}/` in it, so that one
    /// tenant cannot deliver another's staged rows. The key is taken as it is, never
    /// decoded or normalised: it must be `{tenant}/` followed by one or more `/`-separated
    /// segments, none empty, `.` or `..`, each of S3's safe characters (letters, digits,
    /// `!-_.*'()`) or `=`. `acme2/…` is not under `acme/`, and neither is `acme` itself.
    /// http(s) rows pass (the egress policy guards them).
    pub fn refusal_for(&self, staging: &str, tenant: &TenantId) -> Option<RowsRefusal> {
        let RowsLocation::S3 { bucket, key } = self else {
            return None;
        };
        if bucket != staging {
            return Some(RowsRefusal {
                code: ErrorCode::RowsUrlOutsideStaging,
                message: format!(
                    "s3:// rows must be in the fleet's staging bucket `{staging}`, not `{bucket}`"
                ),
            });
        }
        let under_tenant = key
            .strip_prefix(tenant.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| {
                !rest.is_empty()
                    && rest.split('/').all(|seg| {
                        !seg.is_empty()
                            && seg != "."
                            && seg != ".."
                            && seg.bytes().all(staged_key_char)
                    })
            });
        // A tenant named `.` or `..` would make its own prefix a path step: refuse rather
        // than let any reader resolve it.
        let odd_tenant = matches!(tenant.as_str(), "." | "..");
        if under_tenant && !odd_tenant {
            return None;
        }
        Some(RowsRefusal {
            code: ErrorCode::RowsOutsideTenant,
            message: format!(
                "s3:// rows must be staged under `{tenant}/` in the staging bucket: a key \
                 `{tenant}/…` of segments made of letters, digits and `!-_.*'()=` (no empty, \
                 `.` or `..` segment, no percent-encoding)"
            ),
        })
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
    /// Declared Parquet column types, each naming one of `columns` (when they are known);
    /// other formats ignore them.
    pub column_types: ColumnTypes,
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
    /// Set instead of `rows` for results passed by reference; the worker streams them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_url: Option<RowsUrl>,
    /// Declared Parquet column types of this delivery, over the destination's.
    #[serde(default, skip_serializing_if = "ColumnTypes::is_empty")]
    pub column_types: ColumnTypes,
    pub enqueued_at: DateTime<Utc>,
    /// Where this delivery stands in its retry schedule; reset when it is replayed.
    #[serde(default)]
    pub retry: RetryState,
    /// The JSON text of the rows, as the producer received it. Last, so that it is the last
    /// member of the task's JSON (`crate::payload` relies on that).
    #[serde(default)]
    pub rows: InlineRows,
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

impl RetryState {
    /// An attempt starts at `now`: counts it, and notes when the first one started.
    pub fn begin(&mut self, now: DateTime<Utc>) {
        self.first_attempt_at.get_or_insert(now);
        self.attempts += 1;
    }

    /// How long since the first attempt started (zero before it).
    pub fn elapsed(&self, now: DateTime<Utc>) -> std::time::Duration {
        self.first_attempt_at
            .map(|first| (now - first).to_std().unwrap_or_default())
            .unwrap_or_default()
    }
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
    /// Appended to its batched destination's open window; delivered when the window
    /// closes.
    Batched,
}

impl DeliveryStatus {
    /// Every status, in the order a delivery usually goes through them.
    pub const ALL: [DeliveryStatus; 8] = [
        DeliveryStatus::Queued,
        DeliveryStatus::Batched,
        DeliveryStatus::InProgress,
        DeliveryStatus::Retrying,
        DeliveryStatus::Held,
        DeliveryStatus::Delivered,
        DeliveryStatus::Superseded,
        DeliveryStatus::Failed,
    ];

    /// The wire name (`QUEUED`, `IN_PROGRESS`, …), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "QUEUED",
            DeliveryStatus::InProgress => "IN_PROGRESS",
            DeliveryStatus::Retrying => "RETRYING",
            DeliveryStatus::Held => "HELD",
            DeliveryStatus::Delivered => "DELIVERED",
            DeliveryStatus::Superseded => "SUPERSEDED",
            DeliveryStatus::Failed => "FAILED",
            DeliveryStatus::Batched => "BATCHED",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        serde_json::from_value(Value::String(s.to_owned())).map_err(|_| {
            format!(
                "`{s}` is not a status (QUEUED, BATCHED, IN_PROGRESS, RETRYING, HELD, DELIVERED, SUPERSEDED, FAILED)"
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
    /// To a batched destination: its window, and once delivered its object and lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<crate::batch::BatchRef>,
}

/// What an upload left behind, for [`DeliveryRecord::delivered`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub bytes: u64,
    pub rows: u64,
    pub etag: Option<String>,
    /// Lowercase hex MD5 of the whole object.
    pub md5: String,
    pub render_ms: u64,
    pub upload_ms: u64,
}

impl DeliveryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// A delivery's life: the one constructor, and one method per change of status. Each
/// takes the time it happens at, so that callers (and tests) choose the clock.
impl DeliveryRecord {
    /// A new record for `task`, `QUEUED`: written by the producer when it enqueues, and
    /// by a worker that finds a task without its record. `rows` is the inline row count
    /// (0 for rows by reference: counted when rendered).
    pub fn queued(
        task: &DeliveryTask,
        format: Format,
        compression: Compression,
        rows: u64,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: task.delivery_id.clone(),
            tenant: task.tenant.clone(),
            destination_id: task.destination_id.clone(),
            job_id: task.job_id.clone(),
            partner_inventory_id: task.partner_inventory_id.clone(),
            completed_at: task.completed_at,
            status: DeliveryStatus::Queued,
            format,
            compression,
            rows,
            bucket: None,
            key: None,
            bytes: None,
            etag: None,
            checksum: None,
            attempts: Vec::new(),
            error: None,
            timings: None,
            enqueued_at: task.enqueued_at,
            delivered_at: None,
            updated_at: now,
            batch: None,
        }
    }

    /// An attempt begins: the record says where the object goes and in which format.
    pub fn start(
        &mut self,
        format: Format,
        compression: Compression,
        bucket: &str,
        key: &str,
        now: DateTime<Utc>,
    ) {
        self.status = DeliveryStatus::InProgress;
        self.format = format;
        self.compression = compression;
        self.bucket = Some(bucket.to_owned());
        self.key = Some(key.to_owned());
        self.updated_at = now;
    }

    /// The number the next attempt gets (the first is 1).
    pub fn next_attempt_number(&self) -> u32 {
        u32::try_from(self.attempts.len()).unwrap_or(u32::MAX) + 1
    }

    /// The object is in the bucket.
    pub fn delivered(&mut self, up: Delivered, now: DateTime<Utc>) {
        self.status = DeliveryStatus::Delivered;
        self.bytes = Some(up.bytes);
        self.rows = up.rows;
        self.etag = up.etag;
        self.checksum = Some(Checksum {
            algorithm: "MD5".into(),
            value: up.md5,
        });
        self.error = None;
        self.delivered_at = Some(now);
        self.updated_at = now;
        self.timings = Some(Timings {
            render_ms: up.render_ms,
            upload_ms: up.upload_ms,
            total_ms: millis(self.age(now)),
        });
    }

    /// A transient failure; another attempt is scheduled.
    pub fn retrying(&mut self, error: DeliveryError, now: DateTime<Utc>) {
        self.status = DeliveryStatus::Retrying;
        self.error = Some(error);
        self.updated_at = now;
    }

    /// Given up for good; `error` says why.
    pub fn failed(&mut self, error: DeliveryError, now: DateTime<Utc>) {
        self.status = DeliveryStatus::Failed;
        self.error = Some(error);
        self.updated_at = now;
    }

    /// Back in the queue after a failure, its attempts kept: a dead letter replayed.
    pub fn requeued(&mut self, now: DateTime<Utc>) {
        self.status = DeliveryStatus::Queued;
        self.updated_at = now;
    }

    /// Parked while the destination is paused or failing.
    pub fn held(&mut self, now: DateTime<Utc>) {
        self.status = DeliveryStatus::Held;
        self.updated_at = now;
    }

    /// Not uploaded, because `key` already holds a newer result.
    pub fn superseded(&mut self, key: &str, error: DeliveryError, now: DateTime<Utc>) {
        self.status = DeliveryStatus::Superseded;
        self.key = Some(key.to_owned());
        self.error = Some(error);
        self.updated_at = now;
    }

    /// Appended to a batched destination's open window (`window` names it).
    pub fn batched(&mut self, window: crate::batch::BatchRef, now: DateTime<Utc>) {
        self.status = DeliveryStatus::Batched;
        self.batch = Some(window);
        self.updated_at = now;
    }

    /// Its window's object is in the bucket: `batch` names the object and the lines that
    /// hold this delivery's rows; `etag` and `md5` are the object's.
    pub fn delivered_in_batch(
        &mut self,
        bucket: &str,
        batch: crate::batch::BatchRef,
        etag: Option<String>,
        md5: String,
        now: DateTime<Utc>,
    ) {
        self.status = DeliveryStatus::Delivered;
        self.bucket = Some(bucket.to_owned());
        self.key = batch.key.clone();
        self.etag = etag;
        self.checksum = Some(Checksum {
            algorithm: "MD5".into(),
            value: md5,
        });
        self.batch = Some(batch);
        self.error = None;
        self.delivered_at = Some(now);
        self.updated_at = now;
    }

    /// How long since the delivery was enqueued.
    pub fn age(&self, now: DateTime<Utc>) -> std::time::Duration {
        (now - self.enqueued_at).to_std().unwrap_or_default()
    }
}

fn millis(d: std::time::Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

#[cfg(test)]
mod record_tests {
    use chrono::TimeZone;

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_780_000_000 + secs, 0).unwrap()
    }

    fn task() -> DeliveryTask {
        DeliveryTask {
            delivery_id: DeliveryId::generate(),
            tenant: TenantId::parse("acme").unwrap(),
            destination_id: DestinationId::generate(),
            job_id: "job-1".into(),
            partner_inventory_id: PartnerInventoryId::parse("INV-1").unwrap(),
            completed_at: at(-60),
            columns: vec![],
            rows: InlineRows::default(),
            rows_url: None,
            column_types: Default::default(),
            enqueued_at: at(0),
            retry: RetryState::default(),
        }
    }

    #[test]
    fn a_new_record_is_queued_with_the_tasks_identity() {
        let t = task();
        let r = DeliveryRecord::queued(&t, Format::Json, Compression::Gzip, 3, at(1));
        assert_eq!(r.status, DeliveryStatus::Queued);
        assert_eq!(
            (&r.id, &r.tenant, &r.destination_id, r.job_id.as_str()),
            (&t.delivery_id, &t.tenant, &t.destination_id, "job-1")
        );
        assert_eq!(
            (r.format, r.compression, r.rows),
            (Format::Json, Compression::Gzip, 3)
        );
        assert_eq!(
            (r.completed_at, r.enqueued_at, r.updated_at),
            (at(-60), at(0), at(1))
        );
        assert_eq!(r.next_attempt_number(), 1);
    }

    #[test]
    fn each_status_change_sets_what_belongs_to_it() {
        let mut r = DeliveryRecord::queued(&task(), Format::Csv, Compression::None, 0, at(0));
        r.start(
            Format::Ndjson,
            Compression::Gzip,
            "bucket",
            "k.ndjson.gz",
            at(1),
        );
        assert_eq!(r.status, DeliveryStatus::InProgress);
        assert_eq!(
            (r.bucket.as_deref(), r.key.as_deref()),
            (Some("bucket"), Some("k.ndjson.gz"))
        );
        assert_eq!(
            (r.format, r.compression),
            (Format::Ndjson, Compression::Gzip)
        );

        let slow = DeliveryError::new(ErrorCode::SlowDown, "slow");
        r.retrying(slow.clone(), at(2));
        assert_eq!(
            (r.status, r.error.as_ref(), r.updated_at),
            (DeliveryStatus::Retrying, Some(&slow), at(2))
        );

        r.delivered(
            Delivered {
                bytes: 10,
                rows: 2,
                etag: Some("e".into()),
                md5: "abc".into(),
                render_ms: 5,
                upload_ms: 7,
            },
            at(4),
        );
        assert_eq!(r.status, DeliveryStatus::Delivered);
        assert_eq!(r.error, None, "a delivered record carries no error");
        assert_eq!(
            (r.bytes, r.rows, r.etag.as_deref()),
            (Some(10), 2, Some("e"))
        );
        assert_eq!(
            r.checksum
                .as_ref()
                .map(|c| (c.algorithm.as_str(), c.value.as_str())),
            Some(("MD5", "abc"))
        );
        assert_eq!(r.delivered_at, Some(at(4)));
        assert_eq!(
            r.timings,
            Some(Timings {
                render_ms: 5,
                upload_ms: 7,
                total_ms: 4000
            })
        );

        let mut r = DeliveryRecord::queued(&task(), Format::Csv, Compression::None, 0, at(0));
        r.held(at(1));
        assert_eq!((r.status, r.updated_at), (DeliveryStatus::Held, at(1)));
        let gone = DeliveryError::new(ErrorCode::DestinationNotFound, "gone");
        r.failed(gone.clone(), at(2));
        assert_eq!(
            (r.status, r.error.as_ref()),
            (DeliveryStatus::Failed, Some(&gone))
        );
        assert_eq!(gone.code, "DestinationNotFound");

        let newer = DeliveryError::new(ErrorCode::Superseded, "newer");
        r.superseded("k.csv", newer.clone(), at(3));
        assert_eq!(
            (r.status, r.key.as_deref(), r.error.as_ref()),
            (DeliveryStatus::Superseded, Some("k.csv"), Some(&newer))
        );
    }

    #[test]
    fn the_retry_state_counts_attempts_from_the_first() {
        let mut retry = RetryState::default();
        assert_eq!(retry.elapsed(at(5)), std::time::Duration::ZERO);
        retry.begin(at(1));
        retry.begin(at(3));
        assert_eq!((retry.attempts, retry.first_attempt_at), (2, Some(at(1))));
        assert_eq!(retry.elapsed(at(5)), std::time::Duration::from_secs(4));
    }
}

#[cfg(test)]
mod rows_url_tests {
    use super::*;

    fn refusal(url: &str, tenant: &str) -> Option<String> {
        RowsUrl::parse(url)
            .unwrap()
            .location()
            .unwrap()
            .refusal_for("staging", &TenantId::parse(tenant).unwrap())
            .map(|r| r.code.to_string())
    }

    #[test]
    fn s3_rows_must_be_in_the_staging_bucket() {
        assert_eq!(refusal("s3://staging/acme/a.ndjson", "acme"), None);
        assert_eq!(refusal("https://example.com/a.ndjson", "acme"), None);
        let why = RowsUrl::parse("s3://secrets/acme/a.ndjson")
            .unwrap()
            .location()
            .unwrap()
            .refusal_for("staging", &TenantId::parse("acme").unwrap())
            .unwrap();
        assert_eq!(why.code, ErrorCode::RowsUrlOutsideStaging);
        assert!(
            why.message.contains("`staging`") && why.message.contains("`secrets`"),
            "{why:?}"
        );
    }

    #[test]
    fn staged_rows_must_lie_under_their_tenant() {
        for ok in [
            "s3://staging/acme/a.ndjson",
            "s3://staging/acme/jobs/2024/01HX-rows.ndjson.gz",
            "s3://staging/acme/date=2024-01-01/part(1)_x!.ndjson",
            "s3://staging/acme/..a/b..c/...",
        ] {
            assert_eq!(refusal(ok, "acme"), None, "{ok}");
        }
        for hostile in [
            // Another tenant's, or no tenant's.
            "s3://staging/acme2/a.ndjson",
            "s3://staging/acm/a.ndjson",
            "s3://staging/ACME/a.ndjson",
            "s3://staging/other/acme/a.ndjson",
            "s3://staging/staged/a.ndjson",
            "s3://staging/acme",
            "s3://staging/acme/",
            "s3://staging/acmea.ndjson",
            // Leaving the prefix by a path step.
            "s3://staging/acme/../acme2/a.ndjson",
            "s3://staging/acme/./a.ndjson",
            "s3://staging/acme/x/..",
            "s3://staging/acme/x/.",
            "s3://staging/./acme/a.ndjson",
            "s3://staging/acme//a.ndjson",
            "s3://staging//acme/a.ndjson",
            "s3://staging/acme/a.ndjson/",
            // Encodings a reader might decode into one.
            "s3://staging/acme/%2e%2e/acme2/a.ndjson",
            "s3://staging/acme%2fa.ndjson",
            "s3://staging/acme/..%2facme2%2fa",
            "s3://staging/acme/a\\..\\..\\acme2",
            "s3://staging/acme/a b.ndjson",
            "s3://staging/acme/a?x=1",
            "s3://staging/acme/a#x",
            "s3://staging/acme/a\u{0}b",
            "s3://staging/acme/a\nb",
            "s3://staging/acme/caf\u{e9}",
            "s3://staging/acme/\u{ff0e}\u{ff0e}/acme2",
        ] {
            assert_eq!(
                refusal(hostile, "acme").as_deref(),
                Some("RowsOutsideTenant"),
                "{hostile:?}"
            );
        }
        // A tenant whose id is a prefix of another's reaches only its own.
        assert_eq!(
            refusal("s3://staging/acme/a.ndjson", "acme2"),
            Some("RowsOutsideTenant".into())
        );
        assert_eq!(refusal("s3://staging/acme2/a.ndjson", "acme2"), None);
        // No tenant is named like a path step, so none owns `..` or `.`.
        assert!(TenantId::parse("..").is_err() && TenantId::parse(".").is_err());
        assert_eq!(
            refusal("s3://staging/../a.ndjson", "acme"),
            Some("RowsOutsideTenant".into())
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

#[cfg(test)]
mod status_tests {
    use super::DeliveryStatus;

    #[test]
    fn every_status_is_listed_once_under_its_wire_name() {
        for (i, s) in DeliveryStatus::ALL.iter().enumerate() {
            let wire = serde_json::to_value(s).unwrap();
            assert_eq!(wire.as_str(), Some(s.as_str()));
            assert_eq!(DeliveryStatus::parse(s.as_str()), Ok(*s));
            assert!(!DeliveryStatus::ALL[..i].contains(s));
        }
    }
}
