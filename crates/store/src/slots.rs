//! A fleet-wide cap on concurrent uploads per destination, kept in Redis, so that one
//! destination whose endpoint hangs holds at most its share of the fleet.
//!
//! Each destination has a sorted set of slot holders scored by when their claim expires;
//! a worker takes a slot before it starts a delivery and gives it back after. Claims of a
//! worker that died expire on their own.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::Utc;
use courier_core::{DeliveryId, DestinationId};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use crate::{Keys, StoreError};

/// Takes and gives back upload slots.
#[derive(Debug, Clone)]
pub struct UploadSlots {
    conn: ConnectionManager,
    keys: Keys,
    /// Uploads to one destination at once, fleet-wide.
    pub per_destination: u32,
    /// How long a claim lasts if its holder never gives it back (longer than any upload).
    pub claim_ttl: Duration,
}

impl UploadSlots {
    pub fn new(
        conn: ConnectionManager,
        keys: Keys,
        per_destination: u32,
        claim_ttl: Duration,
    ) -> Self {
        Self {
            conn,
            keys,
            per_destination,
            claim_ttl,
        }
    }

    /// Takes a slot of `dest` for `holder`; false when all are taken.
    pub async fn acquire(
        &self,
        dest: &DestinationId,
        holder: &DeliveryId,
    ) -> Result<bool, StoreError> {
        let now = Utc::now().timestamp_millis();
        let expires = now + i64::try_from(self.claim_ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let mut conn = self.conn.clone();
        let taken: i64 = ACQUIRE
            .key(self.keys.upload_slots(dest))
            .arg(now)
            .arg(expires)
            .arg(self.per_destination)
            .arg(holder.as_str())
            .invoke_async(&mut conn)
            .await?;
        Ok(taken == 1)
    }

    pub async fn release(
        &self,
        dest: &DestinationId,
        holder: &DeliveryId,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: () = conn
            .zrem(self.keys.upload_slots(dest), holder.as_str())
            .await?;
        Ok(())
    }
}

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS[1]: the destination's slot holders, scored by claim expiry (ms)
-- ARGV[1]: now (ms)   ARGV[2]: this claim's expiry (ms)   ARGV[3]: the cap   ARGV[4]: holder
-- Returns: 1 if the slot was taken (or already held by this holder), 0 if all are taken.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
    return 1
end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
    redis.call('PEXPIREAT', KEYS[1], ARGV[2])
    return 1
end
return 0
"#,
    )
});
