//! A delivery task as the queue holds it: its JSON, LZ4-compressed when it is long.
//!
//! A task carries its inline rows, so most of a queued delivery's bytes are rows: about
//! 97 KB of JSON for 1,000 of them. Redis keeps those bytes in memory and in its
//! append-only file, sends them to the worker, and its Lua hashes every byte of every
//! string that enters a script (apalis-redis's fetch reads the payloads in one), so their
//! size was most of what a small delivery cost Redis beyond its fixed commands. LZ4 cuts
//! the JSON of rows to a fraction of it at a cost of microseconds each way.
//!
//! The format: JSON as it is (it starts with `{`), or [`COMPRESSED`] followed by LZ4's
//! block format with the JSON's length in front (`lz4_flex::compress_prepend_size`). A
//! reader takes both, so tasks queued as plain JSON (by an older producer, by
//! apalis-redis's own push) stay readable. Every reader and writer of queued payloads
//! goes through [`encode`], [`decode`] and [`json`].
//!
//! The task's JSON ends with its rows and opens with their length,
//! `{"rowsBytes":97000,"deliveryId":…,"rows":[…]}`, so that [`decode`] reads the small
//! head of the task and takes the rows as they are, without a pass over them just to find
//! where they end (a fifth of a small delivery's rendering CPU, in `perf`); the renderer
//! reads them once. A reader that does not know the hint ignores it, as any unknown
//! member, and a payload without it is read whole.

use std::borrow::Cow;

use crate::delivery::DeliveryTask;
use crate::rows::InlineRows;

/// The first byte of a compressed payload: a control character, which no JSON text
/// starts with.
pub const COMPRESSED: u8 = 0x04;

/// Payloads shorter than this stay plain JSON: there is little to save.
pub const COMPRESS_FROM: usize = 1024;

/// The longest JSON a compressed payload may expand to: above the API's largest body
/// (8 MiB by default) with room, and a bound on what a corrupt length can allocate.
pub const MAX_JSON_BYTES: usize = 256 * 1024 * 1024;

/// Why a payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("the compressed task payload is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "the compressed task payload says it expands to {0} bytes, over the {MAX_JSON_BYTES}-byte bound"
    )]
    TooLong(usize),
    #[error("the task payload is not a delivery task: {0}")]
    Json(#[from] serde_json::Error),
}

/// `task` as the queue holds it.
pub fn encode(task: &DeliveryTask) -> Result<Vec<u8>, serde_json::Error> {
    Ok(pack(hinted_json(task)?))
}

/// What the JSON of a task with hinted rows opens with, before the rows' length.
const HINT: &[u8] = b"{\"rowsBytes\":";

/// What comes before the rows, the task's last member.
const ROWS_KEY: &[u8] = b",\"rows\":";

/// The task's JSON, its rows last and their length in front.
fn hinted_json(task: &DeliveryTask) -> Result<Vec<u8>, serde_json::Error> {
    let rows = task.rows.as_json();
    let head = DeliveryTask {
        rows: InlineRows::empty(),
        ..task.clone()
    };
    let head = serde_json::to_vec(&head)?;
    // `{…,"rows":[]}`: the rows go in place of their empty array.
    let Some(head) = head.strip_suffix(b"[]}") else {
        unreachable!("the rows are the last member of a task's JSON")
    };
    debug_assert!(head.ends_with(ROWS_KEY));
    let length = rows.len().to_string();
    let mut json = Vec::with_capacity(HINT.len() + length.len() + head.len() + rows.len() + 1);
    json.extend_from_slice(HINT);
    json.extend_from_slice(length.as_bytes());
    json.push(b',');
    json.extend_from_slice(&head[1..]);
    json.extend_from_slice(rows.as_bytes());
    json.push(b'}');
    Ok(json)
}

/// Where the parts of a hinted task's JSON are.
struct Hinted {
    /// Where the head's members start, after the hint and its `,`.
    members: usize,
    /// Where `,"rows":` starts: the head's members end there.
    rows_key: usize,
    /// The rows' text.
    rows: std::ops::Range<usize>,
}

impl Hinted {
    /// The parts of `json`; `None` when it has no hint, or one that does not fit it.
    fn find(json: &[u8]) -> Option<Self> {
        let after_hint = json.strip_prefix(HINT)?;
        let digits = after_hint.iter().position(|b| !b.is_ascii_digit())?;
        let rows_len: usize = std::str::from_utf8(&after_hint[..digits])
            .ok()?
            .parse()
            .ok()?;
        let members = HINT.len() + digits + 1;
        let rows_end = json.len().checked_sub(1)?;
        let rows_start = rows_end.checked_sub(rows_len)?;
        let rows_key = rows_start.checked_sub(ROWS_KEY.len())?;
        if json.get(members - 1) != Some(&b',')
            || json[rows_end] != b'}'
            || rows_key < members
            || &json[rows_key..rows_start] != ROWS_KEY
        {
            return None;
        }
        Some(Self {
            members,
            rows_key,
            rows: rows_start..rows_end,
        })
    }

    /// `{` and the head's members (the rows left out), as JSON of its own.
    fn head(&self, json: &[u8]) -> Vec<u8> {
        braced(&json[self.members..self.rows_key])
    }

    /// `{` and every member after the hint, the rows last, as they are.
    fn without_hint(&self, json: &[u8]) -> Vec<u8> {
        braced(&json[self.members..json.len() - 1])
    }
}

/// `{members}`.
fn braced(members: &[u8]) -> Vec<u8> {
    let mut json = Vec::with_capacity(members.len() + 2);
    json.push(b'{');
    json.extend_from_slice(members);
    json.push(b'}');
    json
}

/// JSON text as the queue holds it: compressed from [`COMPRESS_FROM`] bytes.
pub fn pack(json: Vec<u8>) -> Vec<u8> {
    if json.len() < COMPRESS_FROM {
        return json;
    }
    // One buffer: the marker, the length, then the block compressed straight into it.
    let head = 1 + 4;
    let mut out = vec![0; head + lz4_flex::block::get_maximum_output_size(json.len())];
    out[0] = COMPRESSED;
    out[1..head].copy_from_slice(&(json.len() as u32).to_le_bytes());
    let n = lz4_flex::block::compress_into(&json, &mut out[head..])
        .expect("the buffer has the block's largest size");
    out.truncate(head + n);
    out
}

/// The JSON text of a queued payload (borrowed when it was neither compressed nor
/// hinted): the task as its producer serialized it, without the rows' length in front.
pub fn json(payload: &[u8]) -> Result<Cow<'_, [u8]>, PayloadError> {
    let text = text(payload)?;
    Ok(match Hinted::find(&text) {
        Some(hinted) => Cow::Owned(hinted.without_hint(&text)),
        None => text,
    })
}

/// The text of a queued payload, decompressed when it was compressed.
fn text(payload: &[u8]) -> Result<Cow<'_, [u8]>, PayloadError> {
    let Some((&COMPRESSED, packed)) = payload.split_first() else {
        return Ok(Cow::Borrowed(payload));
    };
    let len = packed
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| PayloadError::Corrupt("shorter than its length".into()))?;
    if len > MAX_JSON_BYTES {
        return Err(PayloadError::TooLong(len));
    }
    let text = lz4_flex::decompress_size_prepended(packed)
        .map_err(|e| PayloadError::Corrupt(e.to_string()))?;
    // A block cut short can decode to a prefix of the text without complaint.
    if text.len() != len {
        return Err(PayloadError::Corrupt(format!(
            "{} bytes decoded where its length says {len}",
            text.len()
        )));
    }
    Ok(Cow::Owned(text))
}

/// The task in a queued payload. Hinted rows are taken as they are, not read here.
pub fn decode(payload: &[u8]) -> Result<DeliveryTask, PayloadError> {
    let text = text(payload)?;
    if let Some(hinted) = Hinted::find(&text)
        && let Ok(rows) = std::str::from_utf8(&text[hinted.rows.clone()])
    {
        let mut task: DeliveryTask = serde_json::from_slice(&hinted.head(&text))?;
        task.rows = InlineRows::from_queued(rows);
        return Ok(task);
    }
    Ok(serde_json::from_slice(&text)?)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// A task whose rows hold what could confuse a reader that looked for their edges:
    /// the key that precedes them, braces, quotes, escapes, non-ASCII text.
    fn task_with_awkward_rows() -> DeliveryTask {
        let rows = json!([
            {"a": ",\"rows\":[]}", "b": "}{\\\"", "c": "Montréal 🦀"},
            {"rows": [1, {"rows": []}], "rowsBytes": 3},
            {"n": 1.5e300, "m": -7},
            {"pad": "x".repeat(COMPRESS_FROM)}
        ]);
        serde_json::from_value(json!({
            "deliveryId": "dlv_01JD8X3V6Q0000000000000000",
            "tenant": "acme",
            "destinationId": "dst_01JD8X3V6Q0000000000000000",
            "jobId": "job \"1\", rows",
            "partnerInventoryId": "INV-1",
            "completedAt": "2026-01-02T03:04:05Z",
            "columns": ["a", "rows"],
            "enqueuedAt": "2026-01-02T03:04:06Z",
            "retry": {"attempts": 2},
            "rows": rows,
        }))
        .unwrap()
    }

    #[test]
    fn a_task_comes_back_whole_its_rows_last_with_their_length_in_front() {
        let task = task_with_awkward_rows();
        let packed = encode(&task).unwrap();
        assert_eq!(packed[0], COMPRESSED);
        let text = super::text(&packed).unwrap();
        let rows = task.rows.as_json();
        let hint = format!("{{\"rowsBytes\":{},\"deliveryId\":", rows.len());
        assert!(
            text.starts_with(hint.as_bytes()),
            "{}",
            String::from_utf8_lossy(&text)
        );
        assert!(text.ends_with(format!(",\"rows\":{rows}}}").as_bytes()));

        let back = decode(&packed).unwrap();
        assert_eq!(back, task);
        assert_eq!(back.rows.as_json(), rows);
        // The task's JSON, as a reader of any kind gets it, has no hint.
        let plain: Value = serde_json::from_slice(&json(&packed).unwrap()).unwrap();
        assert_eq!(plain, serde_json::to_value(&task).unwrap());
        // A reader that parses the whole text ignores the hint.
        let whole: DeliveryTask = serde_json::from_slice(&text).unwrap();
        assert_eq!(whole, task);
        // A short task is hinted too, and not compressed.
        let mut short = task.clone();
        short.rows = InlineRows::empty();
        let packed = encode(&short).unwrap();
        assert_eq!(packed[0], b'{');
        assert_eq!(decode(&packed).unwrap(), short);
    }

    #[test]
    fn a_payload_without_a_hint_or_with_one_that_does_not_fit_is_read_whole() {
        let task = task_with_awkward_rows();
        let plain = serde_json::to_vec(&task).unwrap();
        assert_eq!(decode(&plain).unwrap(), task);
        assert_eq!(decode(&pack(plain.clone())).unwrap(), task);
        assert!(matches!(json(&plain).unwrap(), Cow::Borrowed(_)));

        let text = hinted_json(&task).unwrap();
        let hinted = String::from_utf8(text).unwrap();
        let n = task.rows.as_json().len();
        // Lengths that miss the rows' key, run past the start, or are not a number: the
        // text is read whole, and still gives the task (the hint is just a member).
        for wrong in [n - 1, n + 1, hinted.len(), 0] {
            let text = hinted.replacen(&format!(":{n},"), &format!(":{wrong},"), 1);
            assert!(Hinted::find(text.as_bytes()).is_none(), "{wrong}");
            assert_eq!(decode(text.as_bytes()).unwrap(), task, "{wrong}");
        }
        let text = hinted.replacen(&format!(":{n},"), ":99999999999999999999999,", 1);
        assert!(Hinted::find(text.as_bytes()).is_none());
        // Cut short, it is an error, not a panic.
        for cut in [1, 14, hinted.len() / 2, hinted.len() - 1] {
            assert!(decode(&hinted.as_bytes()[..cut]).is_err(), "{cut}");
        }
    }

    fn long_json() -> Vec<u8> {
        let rows: Vec<String> = (0..100)
            .map(|i| format!(r#"{{"hotelId":"H-{i}","name":"Hotel {i}","score":{i}.5}}"#))
            .collect();
        format!(r#"{{"rows":[{}]}}"#, rows.join(",")).into_bytes()
    }

    #[test]
    fn long_json_is_compressed_and_comes_back_whole() {
        let text = long_json();
        let packed = pack(text.clone());
        assert_eq!(packed[0], COMPRESSED);
        assert!(
            packed.len() < text.len() / 3,
            "{} of {}",
            packed.len(),
            text.len()
        );
        assert_eq!(json(&packed).unwrap(), &text[..]);
    }

    #[test]
    fn short_and_plain_json_pass_through() {
        let short = br#"{"deliveryId":"x"}"#.to_vec();
        assert_eq!(pack(short.clone()), short);
        assert!(matches!(json(&short).unwrap(), Cow::Borrowed(_)));
        // A long payload written as plain JSON (an older producer's) is read as it is.
        let text = long_json();
        assert_eq!(json(&text).unwrap(), &text[..]);
        assert_eq!(json(b"").unwrap(), &b""[..]);
    }

    #[test]
    fn a_corrupt_or_oversized_payload_is_an_error_not_a_panic() {
        let packed = pack(long_json());
        for bad in [&packed[..3], &packed[..packed.len() / 2], &[COMPRESSED][..]] {
            assert!(json(bad).is_err(), "{bad:?}");
        }
        let mut huge = vec![COMPRESSED];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0; 16]);
        assert!(matches!(json(&huge), Err(PayloadError::TooLong(_))));
        assert!(matches!(decode(b"{\"a\": 1}"), Err(PayloadError::Json(_))));
    }
}
