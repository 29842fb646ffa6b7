//! A finished job's delivery: the request that announces it, the task a worker receives,
//! and the record of what happened to it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::format::ColumnTypes;
use crate::rows::{InlineRows, RowsShape};
use crate::{Compression, DeliveryId, DestinationId, Format, TenantId, ValidationErrors};

/// One result row: a JSON object. Key order is kept, so the first row can name the columns.
pub type Row = serde_json::Map<String, Value>;

/// Longest id accepted for `jobId` and `partnerInventoryId`.
const MAX_ID_LEN: usize = 200;
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

/// The body of `POST /api/v1/deliveries` (and the input of `courier enqueue`), as received.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobCompletedRequest {
    #[schema(example = "dst_01JXQ5V3K8M2N7P4R6S9T0W1XY")]
    pub destination_id: String,
    #[schema(example = "job-42")]
    pub job_id: String,
    #[schema(example = "INV-1234")]
    pub partner_inventory_id: String,
    #[schema(format = DateTime, example = "2026-06-07T10:00:00Z")]
    pub completed_at: String,
    #[serde(default)]
    #[schema(example = json!(["hotel", "score"]))]
    pub columns: Option<Vec<String>>,
    /// The rows inline, for results that fit the request size limit (8 MiB by default).
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>, example = json!([{"hotel": "A", "score": 1}]))]
    pub rows: Option<InlineRows>,
    /// Or a reference to the rows, for big results: NDJSON (gzip if the name ends in
    /// `.gz`) at `s3://bucket/key` in the fleet's staging store, or at an http(s) URL.
    #[serde(default)]
    #[schema(example = "s3://courier-staging/jobs/job-42.ndjson.gz")]
    pub rows_url: Option<String>,
    /// Parquet column types by column name (`STRING`, `INT64`, `DOUBLE`, `BOOLEAN`,
    /// `TIMESTAMP`, `DATE`, `JSON`), over the destination's; other formats ignore them.
    #[serde(default)]
    #[schema(value_type = Option<std::collections::BTreeMap<String, crate::format::ColumnType>>, example = json!({"score": "DOUBLE"}))]
    pub column_types: Option<ColumnTypes>,
}

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

/// A job-completed request with every field checked; rows are objects and columns are known.
#[derive(Debug, Clone, PartialEq)]
pub struct JobCompleted {
    pub destination_id: DestinationId,
    pub job_id: String,
    pub partner_inventory_id: PartnerInventoryId,
    pub completed_at: DateTime<Utc>,
    pub columns: Vec<String>,
    /// Checked to be an array of objects.
    pub rows: InlineRows,
    /// How many `rows` holds.
    pub row_count: u64,
    /// Set instead of `rows` for results passed by reference.
    pub rows_url: Option<RowsUrl>,
    /// Declared Parquet column types, each naming one of `columns` (when they are known).
    pub column_types: ColumnTypes,
}

impl JobCompletedRequest {
    /// Validates every field, reporting each problem under its path (`rows[3]`, `columns[0]`).
    /// Columns come from `columns` or else from the keys of the first row, in order.
    pub fn validate(self) -> Result<JobCompleted, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let destination_id =
            errors.check("destinationId", DestinationId::parse(&self.destination_id));
        let job_id = self.job_id.trim().to_owned();
        if job_id.is_empty() || job_id.len() > MAX_ID_LEN || job_id.chars().any(char::is_control) {
            errors.push(
                "jobId",
                format!("must be 1 to {MAX_ID_LEN} characters without control characters"),
            );
        }
        let partner_inventory_id = errors.check(
            "partnerInventoryId",
            PartnerInventoryId::parse(&self.partner_inventory_id),
        );
        let completed_at = errors.check(
            "completedAt",
            DateTime::parse_from_rfc3339(&self.completed_at)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    format!("must be an RFC 3339 timestamp such as 2026-06-07T10:00:00Z ({e})")
                }),
        );

        let rows_url = match (&self.rows, self.rows_url.as_deref()) {
            (Some(_), Some(_)) => {
                errors.push("rowsUrl", "give either rows or rowsUrl, not both");
                None
            }
            (None, None) => {
                errors.push(
                    "rows",
                    "is required (or rowsUrl, a reference to NDJSON rows, for big results)",
                );
                None
            }
            (None, Some(u)) => errors.check("rowsUrl", RowsUrl::parse(u)),
            (Some(_), None) => None,
        };
        let rows = self.rows.unwrap_or_default();
        let shape = match rows.check() {
            Ok(shape) => shape,
            Err(problems) => {
                for p in problems {
                    match p.index {
                        Some(i) => errors.push(
                            format!("rows[{i}]"),
                            format!("must be a JSON object, found {}", p.found),
                        ),
                        None => errors.push(
                            "rows",
                            format!("must be an array of JSON objects, found {}", p.found),
                        ),
                    }
                }
                RowsShape::default()
            }
        };

        let columns = match self.columns {
            Some(cols) => {
                check_columns(&cols, &mut errors);
                cols
            }
            None => shape.first_keys,
        };
        let column_types = self.column_types.unwrap_or_default();
        crate::destination::check_column_types("columnTypes", &column_types, &mut errors);
        // With rows by reference and no `columns`, the columns are known only to the worker.
        if !columns.is_empty() {
            for name in column_types
                .keys()
                .filter(|n| !n.is_empty() && !columns.contains(n))
            {
                errors.push(
                    format!("columnTypes.{name}"),
                    "is not one of the columns (`columns`, or the first row's keys)",
                );
            }
        }
        if columns.len() > MAX_COLUMNS {
            errors.push(
                "columns",
                format!("at most {MAX_COLUMNS} columns are supported"),
            );
        }

        match (destination_id, partner_inventory_id, completed_at) {
            (Some(destination_id), Some(partner_inventory_id), Some(completed_at))
                if errors.is_empty() =>
            {
                Ok(JobCompleted {
                    destination_id,
                    job_id,
                    partner_inventory_id,
                    completed_at,
                    columns,
                    rows,
                    row_count: shape.count,
                    rows_url,
                    column_types,
                })
            }
            _ => Err(errors),
        }
    }
}

fn check_columns(cols: &[String], errors: &mut ValidationErrors) {
    let mut seen = std::collections::HashSet::new();
    for (i, c) in cols.iter().enumerate() {
        if c.is_empty() {
            errors.push(format!("columns[{i}]"), "must not be empty");
        } else if !seen.insert(c.as_str()) {
            errors.push(
                format!("columns[{i}]"),
                format!("`{c}` appears more than once"),
            );
        }
    }
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
    /// Declared Parquet column types of this delivery, over the destination's.
    #[serde(default, skip_serializing_if = "ColumnTypes::is_empty")]
    pub column_types: ColumnTypes,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryError {
    /// The store's error code (`AccessDenied`, `NoSuchBucket`, …) or Courier's own
    /// (`DestinationNotFound`, `RenderFailed`, …).
    pub code: String,
    pub message: String,
}

/// A checksum of a delivered object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Checksum {
    /// `MD5`: every request carried `Content-MD5`, which the store checks.
    #[schema(example = "MD5")]
    pub algorithm: String,
    /// Lowercase hex of the whole object's digest.
    #[schema(example = "9e107d9d372bb6826bd81d3542a419d6")]
    pub value: String,
}

/// How long each stage took, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    pub render_ms: u64,
    pub upload_ms: u64,
    /// From enqueue to the end of the last attempt.
    pub total_ms: u64,
}

/// Everything known about one delivery. Written when the task is enqueued and after
/// every attempt; `GET /api/v1/deliveries/{id}` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRecord {
    #[schema(value_type = String, example = "dlv_01JXQ5W7ZB3C4D5E6F7G8H9JKM")]
    pub id: DeliveryId,
    #[serde(skip_serializing)]
    #[serde(default = "unknown_tenant")]
    pub tenant: TenantId,
    #[schema(value_type = String, example = "dst_01JXQ5V3K8M2N7P4R6S9T0W1XY")]
    pub destination_id: DestinationId,
    pub job_id: String,
    #[schema(value_type = String, example = "INV-1234")]
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

fn unknown_tenant() -> TenantId {
    TenantId::parse("unknown").expect("valid")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body() -> Value {
        json!({
            "destinationId": DestinationId::generate().to_string(),
            "jobId": "job-42",
            "partnerInventoryId": "INV-1234",
            "completedAt": "2026-06-07T10:00:00Z",
            "rows": [{"hotel": "A", "score": 1}, {"score": 2, "hotel": "B", "extra": true}]
        })
    }

    fn parse(v: Value) -> Result<JobCompleted, ValidationErrors> {
        serde_json::from_value::<JobCompletedRequest>(v)
            .unwrap()
            .validate()
    }

    #[test]
    fn columns_default_to_the_first_rows_keys_in_order() {
        let job = parse(body()).unwrap();
        assert_eq!(job.columns, ["hotel", "score"]);
        assert_eq!(job.row_count, 2);
    }

    #[test]
    fn column_types_must_name_columns_when_the_columns_are_known() {
        use crate::format::ColumnType;
        let mut b = body();
        b["columnTypes"] = json!({"score": "DOUBLE"});
        let job = parse(b.clone()).unwrap();
        assert_eq!(job.column_types.get("score"), Some(&ColumnType::Double));

        b["columnTypes"] = json!({"scor": "DOUBLE", "": "INT64"});
        let errs = parse(b.clone()).unwrap_err();
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["columnTypes", "columnTypes.scor"]);

        // Rows by reference without `columns`: only the worker knows the columns.
        b.as_object_mut().unwrap().remove("rows");
        b["rowsUrl"] = "https://example.com/rows.ndjson".into();
        b["columnTypes"] = json!({"anything": "DATE"});
        assert_eq!(parse(b.clone()).unwrap().column_types.len(), 1);

        b["columnTypes"] = json!({"a": "DECIMAL"});
        assert!(serde_json::from_value::<JobCompletedRequest>(b).is_err());
    }

    #[test]
    fn explicit_columns_win() {
        let mut b = body();
        b["columns"] = json!(["score", "extra", "hotel"]);
        assert_eq!(parse(b).unwrap().columns, ["score", "extra", "hotel"]);
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut b = body();
        b["destinationId"] = "nope".into();
        b["partnerInventoryId"] = "INV/1".into();
        b["completedAt"] = "yesterday".into();
        b["rows"] = json!([{"a": 1}, 5, "x"]);
        b["columns"] = json!(["a", "a", ""]);
        let errs = parse(b).unwrap_err();
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "destinationId",
                "partnerInventoryId",
                "completedAt",
                "rows[1]",
                "rows[2]",
                "columns[1]",
                "columns[2]"
            ]
        );
        assert!(errs.0[3].message.contains("a number"));
    }

    #[test]
    fn rows_that_are_not_an_array_are_named_as_rows() {
        let mut b = body();
        b["rows"] = json!({"a": 1});
        let errs = parse(b).unwrap_err();
        assert_eq!(errs.0.len(), 1);
        assert_eq!(errs.0[0].field, "rows");
        assert!(errs.0[0].message.contains("found an object"), "{errs}");
    }

    #[test]
    fn missing_and_unknown_fields_fail_to_decode() {
        let mut b = body();
        b.as_object_mut().unwrap().remove("rows");
        let errs = parse(b).unwrap_err();
        assert_eq!(errs.0[0].field, "rows");
        let mut b = body();
        b.as_object_mut().unwrap().remove("jobId");
        let e = serde_json::from_value::<JobCompletedRequest>(b).unwrap_err();
        assert!(e.to_string().contains("missing field `jobId`"), "{e}");
        let mut b = body();
        b["priority"] = 1.into();
        let e = serde_json::from_value::<JobCompletedRequest>(b).unwrap_err();
        assert!(e.to_string().contains("unknown field `priority`"), "{e}");
    }

    #[test]
    fn completed_at_keeps_the_instant() {
        let mut b = body();
        b["completedAt"] = "2026-06-08T01:30:00+02:00".into();
        let job = parse(b).unwrap();
        assert_eq!(job.completed_at.to_rfc3339(), "2026-06-07T23:30:00+00:00");
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
mod rows_url_tests {
    use serde_json::json;

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
    fn rows_or_rows_url_but_not_both() {
        let base = json!({
            "destinationId": DestinationId::generate().to_string(),
            "jobId": "j", "partnerInventoryId": "I", "completedAt": "2026-06-07T10:00:00Z",
        });
        let parse = |v: Value| {
            serde_json::from_value::<JobCompletedRequest>(v)
                .unwrap()
                .validate()
        };
        let mut by_ref = base.clone();
        by_ref["rowsUrl"] = "s3://staging/x.ndjson".into();
        let job = parse(by_ref.clone()).unwrap();
        assert_eq!(job.row_count, 0);
        assert_eq!(job.rows_url.unwrap().as_str(), "s3://staging/x.ndjson");
        by_ref["rows"] = json!([]);
        assert_eq!(parse(by_ref).unwrap_err().0[0].field, "rowsUrl");
        assert_eq!(parse(base).unwrap_err().0[0].field, "rows");
    }
}
