//! The codec the worker reads task payloads with: none. apalis-redis's JSON codec parses
//! every payload into a tree before the handler sees it, and fails the fetch itself on a
//! payload that is not JSON, which would stop the queue at that task. The worker takes the
//! bytes as they are instead and decodes them once, straight into a
//! [`DeliveryTask`](courier_core::delivery::DeliveryTask); bytes that are not a task are
//! dead-lettered as they are.

use std::convert::Infallible;

use apalis::prelude::Codec;

/// A task payload as it is stored in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTask(pub Vec<u8>);

/// Hands the stored bytes over untouched; never fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct Verbatim;

impl Codec<RawTask> for Verbatim {
    type Error = Infallible;
    type Compact = Vec<u8>;

    fn encode(&self, val: &RawTask) -> Result<Vec<u8>, Infallible> {
        Ok(val.0.clone())
    }

    fn decode(&self, bytes: &Vec<u8>) -> Result<RawTask, Infallible> {
        Ok(RawTask(bytes.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anything_decodes_to_its_own_bytes() {
        for bytes in [
            br#"{"a":1}"#.to_vec(),
            b"{\"unterminated".to_vec(),
            vec![0xff, 0xfe],
        ] {
            let task = Verbatim.decode(&bytes).unwrap();
            assert_eq!(task.0, bytes);
            assert_eq!(Verbatim.encode(&task).unwrap(), bytes);
        }
    }
}
