//! A delivery's claims in one script (`claim.lua`): the lock of its object key, then, if it
//! holds that, one of its destination's upload slots, and the key's marker read under the
//! lock; holding both, its record written as started. Each part is the function its own
//! store's script runs ([`KeyGuard::lock`], [`UploadSlots::acquire`], [`KeyGuard::marker`],
//! [`RecordStore::put`]), so doing them together changes nothing but the round trips: one
//! command sent instead of four.

use chrono::Utc;
use courier_core::delivery::{DeliveryRecord, DeliveryStatus};

use crate::keyguard::parse_marker;
use crate::records::RECORD_KEYS;
use crate::scripts::CLAIM;
use crate::slots::moving_for_ms;
use crate::{Claim, KeyGuard, Marker, RecordStore, StoreError, UploadSlots};

/// What [`claim`] took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// Another delivery holds the object key's lock: nothing was taken.
    KeyBusy,
    /// The lock is held (for the owner), with the slot's answer and the key's marker.
    Locked { slot: Claim, marker: Option<Marker> },
}

/// Takes object `key`'s lock for the delivery of `started` for `ttl` (re-entrantly, as
/// [`KeyGuard::lock`]), and, holding it, one of its destination's upload slots (as
/// [`UploadSlots::acquire`]); reads the key's marker. The slot is not tried without the
/// lock. Holding both, writes `started` (its record as the upload begins: in progress) as
/// [`RecordStore::put`] would; with either refused, writes nothing.
pub async fn claim(
    guard: &KeyGuard,
    slots: &UploadSlots,
    records: &RecordStore,
    started: &DeliveryRecord,
    key: &str,
    ttl: std::time::Duration,
) -> Result<Claimed, StoreError> {
    debug_assert_eq!(started.status, DeliveryStatus::InProgress);
    let (dest, owner) = (&started.destination_id, &started.id);
    let (record_keys, record_args) = records.write_parts(started)?;
    debug_assert_eq!(record_keys.len(), RECORD_KEYS);
    let keys = guard.keys();
    let now = Utc::now().timestamp_millis();
    let expires = now + i64::try_from(slots.claim_ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let mut invocation = CLAIM.prepare_invoke();
    invocation
        .key(keys.object_lock(dest, key))
        .key(keys.upload_slots(dest))
        .key(keys.upload_slots_moved(dest))
        .key(keys.upload_limit(dest))
        .key(keys.object_marker(dest, key));
    for k in &record_keys {
        invocation.key(k);
    }
    let mut conn = guard.conn();
    let (locked, slot, marker): (i64, i64, Option<String>) = invocation
        .arg(owner.as_str())
        .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
        .arg(now)
        .arg(expires)
        .arg(slots.concurrency.start())
        .arg(moving_for_ms())
        .arg(slots.concurrency.min)
        .arg(slots.concurrency.max)
        // The owner is already the record's first argument.
        .arg(&record_args[1..])
        .invoke_async(&mut conn)
        .await?;
    if locked == 0 {
        return Ok(Claimed::KeyBusy);
    }
    Ok(Claimed::Locked {
        slot: Claim::from_answer(slot),
        marker: marker.as_deref().and_then(parse_marker),
    })
}
