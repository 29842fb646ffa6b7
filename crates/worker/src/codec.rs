//! The codec the worker reads task payloads with. apalis-redis's JSON codec fails the fetch
//! itself on a payload that is not JSON, which would stop the queue at that task; this one
//! never fails: anything unreadable arrives as `{"courierUndecodable": "<text>"}`, which
//! the handler then dead-letters like any payload that is not a delivery task.

use apalis::prelude::Codec;
use serde_json::{Value, json};

/// JSON that never fails to decode.
#[derive(Debug, Clone, Copy, Default)]
pub struct LenientJson;

impl Codec<Value> for LenientJson {
    type Error = serde_json::Error;
    type Compact = Vec<u8>;

    fn encode(&self, val: &Value) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(val)
    }

    fn decode(&self, bytes: &Vec<u8>) -> Result<Value, serde_json::Error> {
        Ok(serde_json::from_slice(bytes)
            .unwrap_or_else(|_| json!({ "courierUndecodable": String::from_utf8_lossy(bytes) })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anything_decodes() {
        assert_eq!(
            LenientJson.decode(&br#"{"a":1}"#.to_vec()).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            LenientJson.decode(&b"{\"unterminated".to_vec()).unwrap(),
            json!({"courierUndecodable": "{\"unterminated"})
        );
        assert_eq!(
            LenientJson.decode(&vec![0xff, 0xfe]).unwrap()["courierUndecodable"],
            "\u{fffd}\u{fffd}"
        );
    }
}
