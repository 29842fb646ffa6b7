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
//! goes through [`encode`] and [`json`].

use std::borrow::Cow;

use crate::delivery::DeliveryTask;

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
    Ok(pack(serde_json::to_vec(task)?))
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

/// The JSON text of a queued payload (borrowed when it was not compressed).
pub fn json(payload: &[u8]) -> Result<Cow<'_, [u8]>, PayloadError> {
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

/// The task in a queued payload.
pub fn decode(payload: &[u8]) -> Result<DeliveryTask, PayloadError> {
    Ok(serde_json::from_slice(&json(payload)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

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
