//! A fleet-wide cap on concurrent uploads per destination, kept in Redis, so that one
//! destination whose endpoint hangs holds at most its share of the fleet.
//!
//! Each destination has a sorted set of slot holders scored by when their claim expires;
//! a worker takes a slot before it starts a delivery and gives it back after. Claims of a
//! worker that died expire on their own. Taking or giving back a slot also marks the
//! destination as *moving* for [`MOVING_FOR`], which tells a worker that finds the cap full
//! whether a slot is likely to free up soon (a busy destination) or not (one whose endpoint
//! hangs, so that its uploads neither end nor start).

use std::time::Duration;

use crate::RedisConn;
use chrono::Utc;
use courier_core::{DeliveryId, DestinationId};

use crate::scripts::{SLOT_ACQUIRE, SLOT_RELEASE};
use crate::{Keys, StoreError};

/// How long a destination counts as moving after one of its slots was taken or given back.
pub const MOVING_FOR: Duration = Duration::from_secs(1);

fn moving_for_ms() -> u64 {
    u64::try_from(MOVING_FOR.as_millis()).unwrap_or(1000)
}

/// The answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Taken,
    /// Every slot is held. `moving`: one was taken or given back within [`MOVING_FOR`].
    Full {
        moving: bool,
    },
}

/// Takes and gives back upload slots.
#[derive(Debug, Clone)]
pub struct UploadSlots {
    conn: RedisConn,
    keys: Keys,
    /// Uploads to one destination at once, fleet-wide.
    pub per_destination: u32,
    /// How long a claim lasts if its holder never gives it back (longer than any upload).
    pub claim_ttl: Duration,
}

impl UploadSlots {
    pub fn new(conn: RedisConn, keys: Keys, per_destination: u32, claim_ttl: Duration) -> Self {
        Self {
            conn,
            keys,
            per_destination,
            claim_ttl,
        }
    }

    /// Takes a slot of `dest` for `holder` (again, if it holds one already).
    pub async fn acquire(
        &self,
        dest: &DestinationId,
        holder: &DeliveryId,
    ) -> Result<Claim, StoreError> {
        let now = Utc::now().timestamp_millis();
        let expires = now + i64::try_from(self.claim_ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let mut conn = self.conn.clone();
        let taken: i64 = SLOT_ACQUIRE
            .key(self.keys.upload_slots(dest))
            .key(self.keys.upload_slots_moved(dest))
            .arg(now)
            .arg(expires)
            .arg(self.per_destination)
            .arg(holder.as_str())
            .arg(moving_for_ms())
            .invoke_async(&mut conn)
            .await?;
        Ok(match taken {
            1 => Claim::Taken,
            moving => Claim::Full {
                moving: moving == 2,
            },
        })
    }

    /// Gives `holder`'s slot of `dest` back, and marks the destination as moving.
    pub async fn release(
        &self,
        dest: &DestinationId,
        holder: &DeliveryId,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: () = SLOT_RELEASE
            .key(self.keys.upload_slots(dest))
            .key(self.keys.upload_slots_moved(dest))
            .arg(holder.as_str())
            .arg(moving_for_ms())
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}
