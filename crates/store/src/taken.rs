//! What a worker reads when it takes a task, in one `MGET` (one command instead of three):
//! the delivery's record, its destination and the destination's health.

use courier_core::delivery::DeliveryRecord;
use courier_core::destination::Destination;
use courier_core::{DeliveryId, DestinationId};

use crate::records::decode;
use crate::{DestinationHealth, DestinationStore, RecordStore, StoreError};

/// The record of delivery `id` (whatever its tenant), and destination `dest` (whatever its
/// tenant) with its health: what [`RecordStore::get_any`], [`DestinationStore::get_any`]
/// and [`crate::HealthStore::get`] read, read at once.
pub async fn read_taken(
    records: &RecordStore,
    destinations: &DestinationStore,
    id: &DeliveryId,
    dest: &DestinationId,
) -> Result<
    (
        Option<DeliveryRecord>,
        Option<(Destination, DestinationHealth)>,
    ),
    StoreError,
> {
    let keys = records.keys();
    let mut conn = records.conn();
    let (record, destination, health): (Option<String>, Option<String>, Option<String>) =
        redis::cmd("MGET")
            .arg(keys.delivery(id))
            .arg(keys.destination(dest))
            .arg(keys.health(dest))
            .query_async(&mut conn)
            .await?;
    let record = record.map(|j| decode(&j)).transpose()?;
    let destination = destination
        .map(|j| destinations.decode_json(&j))
        .transpose()?
        .map(|d| (d, DestinationHealth::from_json(health.as_deref())));
    Ok((record, destination))
}
