//! `Idempotency-Key`: the same key from one tenant within 24 hours stands for one delivery.
//!
//! The first request with a key claims it (`SET NX`, for a minute while it is being
//! queued), then records the delivery it queued (for 24 hours). A later request with the
//! same key and the same fingerprint gets that delivery; one with another fingerprint is
//! refused; one that arrives while the first is still being queued is told so. A claim
//! whose holder died lapses after a minute, so the key can be used again.

use std::time::Duration;

use crate::RedisConn;
use courier_core::{DeliveryId, TenantId};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::{Keys, StoreError};

/// How long an idempotency key answers with its first delivery.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a claim lasts before its delivery is queued; a holder that died frees the key
/// after this.
const CLAIM_TTL: Duration = Duration::from_secs(60);

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// What one key stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    fingerprint: String,
    delivery_id: Option<DeliveryId>,
}

/// What a request with a key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key is new: queue the delivery, then [`Idempotency::complete`] (or
    /// [`Idempotency::release`] if queuing failed).
    Claimed,
    /// The key already stands for this delivery, queued by an earlier request.
    Replay(DeliveryId),
    /// An earlier request with this key is still being queued.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

/// Checks an `Idempotency-Key` header's value: 1 to 255 visible ASCII characters.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "must be 1 to {MAX_KEY_LEN} visible ASCII characters (a UUID is a good choice)"
        ));
    }
    Ok(())
}

/// Reads and writes idempotency keys.
#[derive(Debug, Clone)]
pub struct Idempotency {
    conn: RedisConn,
    keys: Keys,
}

impl Idempotency {
    pub fn new(conn: RedisConn, keys: Keys) -> Self {
        Self { conn, keys }
    }

    /// Claims `key` for a request whose body has `fingerprint`, or says what it stands for.
    pub async fn claim(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &str,
    ) -> Result<KeyClaim, StoreError> {
        let redis_key = self.keys.idempotency(tenant, key);
        let entry = Entry {
            fingerprint: fingerprint.to_owned(),
            delivery_id: None,
        };
        let mut conn = self.conn.clone();
        let claimed: Option<String> = redis::cmd("SET")
            .arg(&redis_key)
            .arg(encode(&entry)?)
            .arg("NX")
            .arg("PX")
            .arg(millis(CLAIM_TTL))
            .query_async(&mut conn)
            .await?;
        if claimed.is_some() {
            return Ok(KeyClaim::Claimed);
        }
        let existing: Option<String> = conn.get(&redis_key).await?;
        let Some(existing) = existing else {
            // It lapsed between the two commands: try once more.
            return Box::pin(self.claim(tenant, key, fingerprint)).await;
        };
        let existing: Entry = serde_json::from_str(&existing).map_err(|e| StoreError::Corrupt {
            what: "idempotency key",
            message: e.to_string(),
        })?;
        Ok(if existing.fingerprint != fingerprint {
            KeyClaim::Mismatch
        } else {
            match existing.delivery_id {
                Some(id) => KeyClaim::Replay(id),
                None => KeyClaim::InProgress,
            }
        })
    }

    /// Records that `key` stands for `delivery`, for 24 hours.
    pub async fn complete(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &str,
        delivery: &DeliveryId,
    ) -> Result<(), StoreError> {
        let entry = Entry {
            fingerprint: fingerprint.to_owned(),
            delivery_id: Some(delivery.clone()),
        };
        let mut conn = self.conn.clone();
        let _: () = redis::cmd("SET")
            .arg(self.keys.idempotency(tenant, key))
            .arg(encode(&entry)?)
            .arg("PX")
            .arg(millis(IDEMPOTENCY_TTL))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Frees a claimed key whose delivery could not be queued, so a retry can queue it.
    pub async fn release(&self, tenant: &TenantId, key: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: () = conn.del(self.keys.idempotency(tenant, key)).await?;
        Ok(())
    }
}

fn encode(entry: &Entry) -> Result<String, StoreError> {
    serde_json::to_string(entry).map_err(|e| StoreError::Corrupt {
        what: "idempotency key",
        message: e.to_string(),
    })
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        check_key("0b7f6c1e-3c1a-4f7e-9a63-2b1d2c3e4f50").unwrap();
        check_key("job-42:attempt").unwrap();
        assert!(check_key("").is_err());
        assert!(check_key("has space").is_err());
        assert!(check_key("naïve").is_err());
        assert!(check_key(&"k".repeat(256)).is_err());
        check_key(&"k".repeat(255)).unwrap();
    }
}
