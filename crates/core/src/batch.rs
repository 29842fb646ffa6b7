//! Batched destinations: every window's deliveries in gzip NDJSON objects at
//! time-partitioned keys (`{pathPrefix}YYYY/MM/DD/HH/YYYY-MM-DD-HH-MM-SS-{id}.gz`).
//!
//! Pure rules only: the settings and their limits, which window an instant falls in, how a
//! window's entries are cut into objects, each object's deterministic id and key, and the
//! batch record the inspector shows. Redis (the open windows, their claims) is in
//! `courier-store`, the closing in `courier-worker`.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::destination::PathPrefix;
use crate::{DestinationId, TenantId};

/// Shortest window.
pub const MIN_WINDOW_SECONDS: u32 = 5;
/// Longest window.
pub const MAX_WINDOW_SECONDS: u32 = 3600;
/// The window when `batch` is given without `windowSeconds`.
pub const DEFAULT_WINDOW_SECONDS: u32 = 60;
/// The smallest `maxObjectBytes` (S3's smallest multipart part).
pub const MIN_OBJECT_BYTES: u64 = 5 * 1024 * 1024;
/// `maxObjectBytes` when not given.
pub const DEFAULT_OBJECT_BYTES: u64 = 100 * 1024 * 1024;
/// The largest `maxObjectBytes` (S3's largest single PutObject, a sane bound per object).
pub const MAX_OBJECT_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// How long after its end a window is closed: appends are atomic in Redis and take their
/// window from Redis's clock, so this only spares a window closed to the second.
pub const GRACE_SECONDS: i64 = 2;

/// A destination's batching: one object (or more, see `max_object_bytes`) per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchSettings {
    /// Length of a window, [`MIN_WINDOW_SECONDS`] to [`MAX_WINDOW_SECONDS`].
    pub window_seconds: u32,
    /// Most NDJSON bytes (before gzip) in one object; a window with more continues in
    /// further objects. At least [`MIN_OBJECT_BYTES`].
    pub max_object_bytes: u64,
}

impl BatchSettings {
    /// Checks `windowSeconds` and `maxObjectBytes` (defaults for those not given); each
    /// error names its field under `batch.`.
    pub fn parse(
        window_seconds: Option<u32>,
        max_object_bytes: Option<u64>,
    ) -> Result<Self, Vec<(&'static str, String)>> {
        let window_seconds = window_seconds.unwrap_or(DEFAULT_WINDOW_SECONDS);
        let max_object_bytes = max_object_bytes.unwrap_or(DEFAULT_OBJECT_BYTES);
        let mut errors = Vec::new();
        if !(MIN_WINDOW_SECONDS..=MAX_WINDOW_SECONDS).contains(&window_seconds) {
            errors.push((
                "batch.windowSeconds",
                format!(
                    "must be {MIN_WINDOW_SECONDS} to {MAX_WINDOW_SECONDS} seconds, not {window_seconds}"
                ),
            ));
        }
        if !(MIN_OBJECT_BYTES..=MAX_OBJECT_BYTES).contains(&max_object_bytes) {
            errors.push((
                "batch.maxObjectBytes",
                format!(
                    "must be {MIN_OBJECT_BYTES} (5 MiB) to {MAX_OBJECT_BYTES} (5 GiB) bytes, not {max_object_bytes}"
                ),
            ));
        }
        if errors.is_empty() {
            Ok(Self {
                window_seconds,
                max_object_bytes,
            })
        } else {
            Err(errors)
        }
    }
}

/// The start (unix seconds) of the window of length `window_seconds` that holds `now`:
/// `floor(now / w) * w`. The append script computes the same from Redis's `TIME`.
pub fn window_start(now: i64, window_seconds: u32) -> i64 {
    let w = i64::from(window_seconds.max(1));
    now.div_euclid(w) * w
}

/// The id of object `sequence` (0, 1, …) of a destination's window: a hash of the three,
/// so that a retried close writes the same keys.
pub fn object_id(destination: &DestinationId, window_start: i64, sequence: u32) -> String {
    let digest = Sha256::digest(format!("{destination}:{window_start}:{sequence}"));
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Where object `id` of the window starting at `window_start` lands:
/// `{prefix}YYYY/MM/DD/HH/YYYY-MM-DD-HH-MM-SS-{id}.gz`, the window's start in UTC.
pub fn batch_object_key(prefix: &PathPrefix, window_start: i64, id: &str) -> String {
    let at = Utc
        .timestamp_opt(window_start, 0)
        .single()
        .unwrap_or_default();
    format!(
        "{prefix}{folder}/{stamp}-{id}.gz",
        prefix = prefix.as_str(),
        folder = at.format("%Y/%m/%d/%H"),
        stamp = at.format("%Y-%m-%d-%H-%M-%S"),
    )
}

/// Cuts a window into objects: entries (one delivery's NDJSON lines each) are taken in
/// order, and an object is closed before an entry that would take it past `max_bytes`
/// (an entry is never split, and an object holds at least one). Feed it every entry's
/// size; it answers which object (sequence) the entry goes into.
#[derive(Debug, Clone)]
pub struct ObjectCutter {
    max_bytes: u64,
    sequence: u32,
    bytes: u64,
    lines: u64,
}

/// Where one entry went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub sequence: u32,
    /// Whether this entry starts a new object after an earlier one (the earlier one is
    /// complete).
    pub starts_new: bool,
    /// Its first line's number in the object, from 1; `None` for an entry without rows.
    pub first_line: Option<u64>,
    pub last_line: Option<u64>,
}

impl ObjectCutter {
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            sequence: 0,
            bytes: 0,
            lines: 0,
        }
    }

    /// Places an entry of `bytes` bytes and `lines` lines.
    pub fn place(&mut self, bytes: u64, lines: u64) -> Placed {
        // An entry without rows never opens an object of its own.
        let starts_new = bytes > 0 && self.bytes > 0 && self.bytes + bytes > self.max_bytes;
        if starts_new {
            self.sequence += 1;
            self.bytes = 0;
            self.lines = 0;
        }
        let first = self.lines + 1;
        self.bytes += bytes;
        self.lines += lines;
        Placed {
            sequence: self.sequence,
            starts_new,
            first_line: (lines > 0).then_some(first),
            last_line: (lines > 0).then_some(self.lines),
        }
    }
}

/// What a delivery record says of its batch: its window while `BATCHED`, and once
/// delivered the object (batch id and key) and the lines its rows occupy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchRef {
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// First line of this delivery's rows in the object, from 1 (absent without rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_line: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_line: Option<u64>,
}

/// Where a batch object stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BatchStatus {
    /// The object is in the bucket.
    Delivered,
    /// The window failed for good; its deliveries are `FAILED` and dead-lettered.
    Failed,
}

/// One object of a batched destination, as the inspector shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchRecord {
    /// `bat_{object id}`.
    pub id: String,
    pub tenant: TenantId,
    pub destination_id: DestinationId,
    pub bucket: String,
    pub key: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// 0 for the window's first object, 1 for the next, …
    pub sequence: u32,
    pub status: BatchStatus,
    pub rows: u64,
    pub deliveries: u64,
    /// Bytes of the gzip object.
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Lowercase hex MD5 of the object (every part carried `Content-MD5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// Tries at closing the window, this one included.
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A delivery's rows as the NDJSON lines a batch object holds (each ending with a
/// newline), rendered by the NDJSON renderer with `columns`; and how many there are.
pub fn ndjson_lines(
    columns: &[String],
    rows: &crate::rows::InlineRows,
) -> Result<(Vec<u8>, u64), String> {
    use crate::render::{RenderSpec, row_writer};
    let spec = RenderSpec {
        format: crate::Format::Ndjson,
        compression: crate::Compression::None,
        columns: columns.to_vec(),
        ..RenderSpec::default()
    };
    let index = crate::cells::ColumnIndex::new(&spec.columns);
    let mut out = Vec::new();
    let mut w = row_writer(&spec, &mut out).map_err(|e| e.to_string())?;
    rows.for_each_cells(&index, |cells| w.write_cells(cells))
        .map_err(|e| match e {
            crate::rows::ForEachError::Json(e) => format!("the rows are not JSON objects: {e}"),
            crate::rows::ForEachError::Stopped(e) => e.to_string(),
        })?;
    let n = w.finish().map_err(|e| e.to_string())?.rows;
    Ok((out, n))
}

/// The batch id of object `object_id`.
pub fn batch_id(object_id: &str) -> String {
    format!("bat_{object_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_take_defaults_and_name_each_bad_field() {
        assert_eq!(
            BatchSettings::parse(None, None).unwrap(),
            BatchSettings {
                window_seconds: 60,
                max_object_bytes: 100 * 1024 * 1024
            }
        );
        assert!(BatchSettings::parse(Some(5), Some(MIN_OBJECT_BYTES)).is_ok());
        assert!(BatchSettings::parse(Some(3600), None).is_ok());
        let errs = BatchSettings::parse(Some(4), Some(MIN_OBJECT_BYTES - 1)).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.0).collect();
        assert_eq!(fields, ["batch.windowSeconds", "batch.maxObjectBytes"]);
        assert!(BatchSettings::parse(Some(3601), None).is_err());
    }

    #[test]
    fn windows_are_aligned_to_their_length() {
        assert_eq!(window_start(1_000_003, 5), 1_000_000);
        assert_eq!(window_start(1_000_005, 5), 1_000_005);
        assert_eq!(window_start(119, 60), 60);
    }

    #[test]
    fn keys_follow_the_layout_and_ids_are_deterministic() {
        let d = DestinationId::parse("dst_01J0000000000000000000000A").unwrap();
        let id = object_id(&d, 1_558_800_898, 0);
        assert_eq!(id, object_id(&d, 1_558_800_898, 0));
        assert_ne!(id, object_id(&d, 1_558_800_898, 1));
        assert_eq!(id.len(), 32);
        let key = batch_object_key(&PathPrefix::parse("test/").unwrap(), 1_558_800_898, &id);
        assert_eq!(
            key,
            format!("test/2019/05/25/16/2019-05-25-16-14-58-{id}.gz")
        );
    }

    #[test]
    fn rows_become_one_ndjson_line_each() {
        let rows = crate::rows::InlineRows::from_raw(
            serde_json::value::RawValue::from_string(r#"[{"a":1,"b":"x"},{"a":2,"c":3}]"#.into())
                .unwrap(),
        );
        let (lines, n) = ndjson_lines(&["a".into(), "b".into()], &rows).unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            String::from_utf8(lines).unwrap(),
            "{\"a\":1,\"b\":\"x\"}\n{\"a\":2,\"b\":null}\n"
        );
    }

    #[test]
    fn entries_are_cut_into_objects_at_the_limit() {
        let mut c = ObjectCutter::new(10);
        let a = c.place(6, 2);
        assert_eq!(
            (a.sequence, a.starts_new, a.first_line, a.last_line),
            (0, false, Some(1), Some(2))
        );
        let b = c.place(4, 1);
        assert_eq!(
            (b.sequence, b.first_line, b.last_line),
            (0, Some(3), Some(3))
        );
        let n = c.place(1, 1);
        assert_eq!((n.sequence, n.starts_new, n.first_line), (1, true, Some(1)));
        // An entry bigger than the limit gets an object of its own.
        let big = c.place(50, 5);
        assert_eq!(
            (big.sequence, big.first_line, big.last_line),
            (2, Some(1), Some(5))
        );
        let empty = c.place(0, 0);
        assert_eq!((empty.sequence, empty.first_line), (2, None));
    }
}
