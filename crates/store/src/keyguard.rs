//! Guarding an object key: one delivery at a time per key, and never an older result over
//! a newer one.
//!
//! Two jobs for the same partner inventory on the same day share a key. Each key has a
//! marker with the `completedAt` of the newest result delivered there; a delivery takes the
//! key's lock, compares, uploads only if it is not older, then raises the marker. The lock
//! lasts a while and is renewed while the delivery uploads; a renewal that finds another
//! delivery holding it aborts the upload. The marker is kept for as long as any other
//! delivery of the key may still run (held, retried, or replayed from the dead letters).

use std::time::Duration;

use crate::RedisConn;
use chrono::{DateTime, Utc};
use courier_core::{DeliveryId, DestinationId};
use redis::AsyncCommands;

use crate::scripts::{KEY_LOCK, KEY_MARK, KEY_UNLOCK};
use crate::{Keys, StoreError};

/// The newest result delivered at a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub completed_at: DateTime<Utc>,
    pub delivery_id: String,
}

/// A marker as Redis keeps it: `{completed_at ms} {delivery id}`.
pub(crate) fn parse_marker(raw: &str) -> Option<Marker> {
    let (ms, id) = raw.split_once(' ')?;
    Some(Marker {
        completed_at: DateTime::from_timestamp_millis(ms.parse().ok()?)?,
        delivery_id: id.to_owned(),
    })
}

/// Locks and markers of object keys.
#[derive(Debug, Clone)]
pub struct KeyGuard {
    conn: RedisConn,
    keys: Keys,
    /// How long a marker is kept after the last delivery to its key: as long as another
    /// delivery of the key may still run (the worker's `Bounds::marker_ttl`), so that an
    /// older one never finds the marker gone.
    pub marker_ttl: Duration,
}

impl KeyGuard {
    pub fn new(conn: RedisConn, keys: Keys, marker_ttl: Duration) -> Self {
        Self {
            conn,
            keys,
            marker_ttl,
        }
    }

    /// Takes the key's lock for `ttl` on behalf of `owner`; false if another delivery holds
    /// it. Re-entrant: a delivery that runs again (its worker died, or a duplicate task)
    /// takes back its own lock instead of waiting for it to expire.
    pub async fn lock(
        &self,
        dest: &DestinationId,
        key: &str,
        owner: &DeliveryId,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let taken: i64 = KEY_LOCK
            .key(self.keys.object_lock(dest, key))
            .arg(owner.as_str())
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .invoke_async(&mut conn)
            .await?;
        Ok(taken == 1)
    }

    /// Releases the lock if `owner` still holds it.
    pub async fn unlock(
        &self,
        dest: &DestinationId,
        key: &str,
        owner: &DeliveryId,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = KEY_UNLOCK
            .key(self.keys.object_lock(dest, key))
            .arg(owner.as_str())
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The newest result delivered at the key, if any is remembered.
    pub async fn marker(
        &self,
        dest: &DestinationId,
        key: &str,
    ) -> Result<Option<Marker>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn.get(self.keys.object_marker(dest, key)).await?;
        Ok(raw.as_deref().and_then(parse_marker))
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    pub(crate) fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Records that `id`, completed at `completed_at`, is now at the key, unless a newer
    /// result is already recorded.
    pub async fn mark(
        &self,
        dest: &DestinationId,
        key: &str,
        completed_at: DateTime<Utc>,
        id: &DeliveryId,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = KEY_MARK
            .key(self.keys.object_marker(dest, key))
            .arg(completed_at.timestamp_millis())
            .arg(id.as_str())
            .arg(self.marker_ttl.as_secs().max(1))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}
