//! The end of a delivered upload in one script (`finish.lua`): the key's marker raised to
//! the result, the destination's run of permanent failures ended, the delivered record
//! written with its index entries, the upload slot given back (the destination's limit
//! learns from it) and the object key's lock released. Each part is the function its own
//! store's script runs ([`KeyGuard::mark`], [`HealthStore::record_success`],
//! [`RecordStore::put`], [`UploadSlots::release`], [`KeyGuard::unlock`]), so doing them
//! together changes nothing but the round trips: one command sent instead of six.
//!
//! [`HealthStore::record_success`]: crate::HealthStore::record_success

use chrono::{DateTime, Utc};
use courier_core::delivery::DeliveryRecord;

use crate::records::RECORD_KEYS;
use crate::scripts::FINISH;
use crate::{KeyGuard, RecordStore, Released, Signal, StoreError, UploadSlots};

/// Ends a delivered upload: `record` (delivered) is written, the marker of object `key` of
/// its destination names it (unless a newer result's does; `completed_at` is its result's),
/// the destination's health is cleared, its upload slot is given back with `signal` and the
/// key's lock released, both held by the record's delivery. All or, if Redis refuses the
/// first write (at `maxmemory`), nothing.
pub async fn finish_delivered(
    records: &RecordStore,
    guard: &KeyGuard,
    slots: &UploadSlots,
    record: &DeliveryRecord,
    key: &str,
    completed_at: DateTime<Utc>,
    signal: Signal,
) -> Result<Released, StoreError> {
    let dest = &record.destination_id;
    let keys = records.keys();
    let (record_keys, record_args) = records.write_parts(record)?;
    debug_assert_eq!(record_keys.len(), RECORD_KEYS);
    let (slot_keys, slot_args) = slots.release_parts(dest, &record.id, signal);
    let mut invocation = FINISH.prepare_invoke();
    for k in &record_keys {
        invocation.key(k);
    }
    invocation
        .key(keys.object_marker(dest, key))
        .key(keys.object_lock(dest, key))
        .key(keys.health(dest))
        .key(keys.failing_destinations());
    for k in &slot_keys {
        invocation.key(k);
    }
    for a in &record_args {
        invocation.arg(a);
    }
    invocation
        .arg(completed_at.timestamp_millis())
        .arg(guard.marker_ttl.as_secs().max(1))
        .arg(dest.as_str());
    // The holder (the delivery id) is already the record's first argument.
    for a in &slot_args[1..] {
        invocation.arg(a);
    }
    let mut conn = records.conn();
    let reply: (i64, i64) = invocation.invoke_async(&mut conn).await?;
    Ok(Released::from_reply(reply))
}
