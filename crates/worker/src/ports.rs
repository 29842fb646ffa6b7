//! The small interfaces through which the delivery shell ([`crate::deliver`]) carries out
//! what [`crate::decide`] decided: records, destinations and their health, the queue,
//! held deliveries and dead letters, object keys, upload slots, and the uploader.
//!
//! [`RedisStores`] implements the store-side ones on Courier's Redis stores and
//! [`S3Upload`] the uploader on the render-and-upload pipeline; the shell's unit tests
//! implement them in memory. Each method is one thing the shell does, named for it, so one
//! type can implement every store-side interface without clashes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use courier_core::delivery::{DeliveryError, DeliveryRecord, DeliveryTask};
use courier_core::destination::Destination;
use courier_core::{DeliveryId, DestinationId, TenantId};
use courier_s3::ClientCache;
use courier_store::{
    DeadLetter, DeadLetters, DeliveryQueue, DestinationHealth, DestinationStore, HealthStore,
    HeldDeliveries, KeyGuard, Marker, RecordStore, Signal, StoreError,
};
use tokio_util::sync::CancellationToken;

use crate::bounded::RowLimits;
use crate::pipeline::{PipelineError, Uploaded, Uploader};
use crate::slot_gate::SlotGate;
use crate::source::{HttpRows, Staging};
use crate::streams::StreamedDeliveries;

/// Delivery records.
pub trait Records: Send + Sync {
    /// The record of `id`, whatever its tenant.
    fn record(
        &self,
        id: &DeliveryId,
    ) -> impl Future<Output = Result<Option<DeliveryRecord>, StoreError>> + Send;
    fn put_record(
        &self,
        record: &DeliveryRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Destinations, as a worker acting for `tenant` may see them, and their health.
pub trait Destinations: Send + Sync {
    /// What taking `task` reads, at once (one round trip on Redis): the record of its
    /// delivery, and its destination if it belongs to the task's tenant (another tenant's
    /// is absent), with whether its health says failing.
    #[allow(clippy::type_complexity)]
    fn taken(
        &self,
        task: &DeliveryTask,
    ) -> impl Future<
        Output = Result<(Option<DeliveryRecord>, Option<(Destination, bool)>), StoreError>,
    > + Send;
    /// An upload succeeded: the destination's run of permanent failures ends.
    fn record_success(
        &self,
        id: &DestinationId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// A permanent failure charged to the destination; it is marked failing at
    /// `threshold` in a row. Returns its health after.
    fn record_permanent_failure(
        &self,
        id: &DestinationId,
        error: &DeliveryError,
        threshold: u32,
    ) -> impl Future<Output = Result<DestinationHealth, StoreError>> + Send;
}

/// The delivery queue.
pub trait Queue: Send + Sync {
    /// Runs `task` again at `at`.
    fn schedule(
        &self,
        task: DeliveryTask,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// After a failure of Courier's own storage: writes `record` (when there is one) and
    /// schedules `task` at `at`, in one write Redis accepts even at `maxmemory`.
    fn retry_after_storage_failure(
        &self,
        record: Option<&DeliveryRecord>,
        task: &DeliveryTask,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Deliveries parked while their destination cannot take them, and dead letters.
pub trait Parking: Send + Sync {
    fn hold(&self, task: &DeliveryTask) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Releases the destination's held deliveries if it can take them now (the one rule:
    /// [`HeldDeliveries::release_if_active`]); how many.
    fn release_if_active(
        &self,
        tenant: &TenantId,
        id: &DestinationId,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    fn dead_letter(
        &self,
        letter: &DeadLetter,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The object keys' locks and markers (the stale-overwrite guard).
pub trait KeyLocks: Send + Sync {
    /// Takes (or takes back, re-entrantly) the key's lock for `ttl`; false if another
    /// delivery holds it.
    fn lock_key(
        &self,
        dest: &DestinationId,
        key: &str,
        owner: &DeliveryId,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn unlock_key(
        &self,
        dest: &DestinationId,
        key: &str,
        owner: &DeliveryId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The newest result delivered at the key, if remembered.
    fn marker(
        &self,
        dest: &DestinationId,
        key: &str,
    ) -> impl Future<Output = Result<Option<Marker>, StoreError>> + Send;
    /// Remembers that `id`, completed at `completed_at`, is at the key (unless newer is).
    fn mark(
        &self,
        dest: &DestinationId,
        key: &str,
        completed_at: DateTime<Utc>,
        id: &DeliveryId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The fleet-wide, adaptive limit on concurrent uploads per destination.
pub trait Slots: Send + Sync {
    /// Takes a slot, waiting while that is worth it; false: go back to the queue.
    fn take_slot(
        &self,
        dest: &DestinationId,
        holder: &DeliveryId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn renew_slot(
        &self,
        dest: &DestinationId,
        holder: &DeliveryId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Gives the slot back with what the upload said about the destination's load.
    fn give_back_slot(
        &self,
        dest: &DestinationId,
        holder: &DeliveryId,
        signal: Signal,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// How long a slot's claim lasts unless renewed.
    fn slot_claim_ttl(&self) -> Duration;
}

/// What [`Claims::claim`] took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimsHeld {
    /// The object key's lock is held.
    pub key: bool,
    /// An upload slot is held (never without the key).
    pub slot: bool,
    /// The key's marker, read under the lock (`None` without the lock).
    pub marker: Option<Marker>,
    /// The started record was written with the claims (only ever with both held); if not,
    /// the shell writes it.
    pub recorded: bool,
}

impl ClaimsHeld {
    /// The key's lock was not taken, so nothing was.
    pub const NOTHING: Self = Self {
        key: false,
        slot: false,
        marker: None,
        recorded: false,
    };
}

/// A delivery's claims, in one step (one round trip on Redis unless it waits for a slot).
pub trait Claims: KeyLocks + Slots {
    /// Takes the object `key`'s lock for the delivery of `started` for `ttl`, then, holding
    /// it, an upload slot of its destination (waiting while that is worth it), and reads
    /// the key's marker; holding both, it may write `started`, the delivery's record as its
    /// upload begins ([`ClaimsHeld::recorded`]). What [`KeyLocks::lock_key`],
    /// [`Slots::take_slot`] and [`KeyLocks::marker`] do one after another, which is what
    /// this default does (it leaves the record to the shell).
    fn claim(
        &self,
        started: &DeliveryRecord,
        key: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<ClaimsHeld, StoreError>> + Send {
        async move {
            let (dest, owner) = (&started.destination_id, &started.id);
            if !self.lock_key(dest, key, owner, ttl).await? {
                return Ok(ClaimsHeld::NOTHING);
            }
            let slot = self.take_slot(dest, owner).await?;
            let marker = self.marker(dest, key).await?;
            Ok(ClaimsHeld {
                key: true,
                slot,
                marker,
                recorded: false,
            })
        }
    }
}

/// The end of a delivered upload, in one step (one round trip on Redis).
pub trait Finish: Send + Sync {
    /// A delivered upload ends: writes `record` (delivered), raises the marker of its
    /// object `key` to it (unless a newer result's is there; `completed_at` is its
    /// result's), ends its destination's run of permanent failures, gives back its upload
    /// slot with `signal` and releases the key's lock. What [`KeyLocks::mark`],
    /// [`Destinations::record_success`], [`Records::put_record`],
    /// [`Slots::give_back_slot`] and [`KeyLocks::unlock_key`] would do one after another.
    /// An error where the store refused to write (Redis at `maxmemory`) means none of it
    /// was done.
    fn finish_delivered(
        &self,
        record: &DeliveryRecord,
        key: &str,
        completed_at: DateTime<Utc>,
        signal: Signal,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Everything on the store side the shell needs.
pub trait Stores:
    Records + Destinations + Queue + Parking + KeyLocks + Slots + Claims + Finish
{
}

impl<T: Records + Destinations + Queue + Parking + KeyLocks + Slots + Claims + Finish> Stores
    for T
{
}

/// Renders a task's rows for a destination and uploads the object.
pub trait Upload: Send + Sync {
    /// Streams `task`'s rows, rendered for `dest`, into the object at `key`, unless `stop`
    /// fires first ([`PipelineError::Stopped`]).
    fn upload(
        &self,
        dest: &Destination,
        key: &str,
        task: &DeliveryTask,
        stop: &CancellationToken,
    ) -> impl Future<Output = Result<Uploaded, PipelineError>> + Send;
    /// Bytes per multipart part: an object of at most this many bytes is one request.
    fn part_size(&self) -> usize;
}

/// The store-side interfaces on Courier's Redis stores.
#[derive(Debug, Clone)]
pub struct RedisStores {
    pub destinations: DestinationStore,
    pub records: RecordStore,
    pub queue: DeliveryQueue,
    pub held: HeldDeliveries,
    pub dead: DeadLetters,
    pub health: HealthStore,
    pub keys: KeyGuard,
    pub slots: Arc<SlotGate>,
}

impl Records for RedisStores {
    async fn record(&self, id: &DeliveryId) -> Result<Option<DeliveryRecord>, StoreError> {
        self.records.get_any(id).await
    }

    async fn put_record(&self, record: &DeliveryRecord) -> Result<(), StoreError> {
        self.records.put(record).await
    }
}

impl Destinations for RedisStores {
    async fn taken(
        &self,
        task: &DeliveryTask,
    ) -> Result<(Option<DeliveryRecord>, Option<(Destination, bool)>), StoreError> {
        let (record, dest) = courier_store::read_taken(
            &self.records,
            &self.destinations,
            &task.delivery_id,
            &task.destination_id,
        )
        .await?;
        let dest = dest
            .filter(|(d, _)| d.tenant == task.tenant)
            .map(|(d, health)| (d, health.is_failing()));
        Ok((record, dest))
    }

    async fn record_success(&self, id: &DestinationId) -> Result<(), StoreError> {
        self.health.record_success(id).await
    }

    async fn record_permanent_failure(
        &self,
        id: &DestinationId,
        error: &DeliveryError,
        threshold: u32,
    ) -> Result<DestinationHealth, StoreError> {
        self.health
            .record_permanent_failure(id, &error.code, &error.message, threshold)
            .await
    }
}

impl Queue for RedisStores {
    async fn schedule(&self, task: DeliveryTask, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.queue.schedule(task, at).await
    }

    async fn retry_after_storage_failure(
        &self,
        record: Option<&DeliveryRecord>,
        task: &DeliveryTask,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.queue
            .retry_after_storage_failure(record, task, at)
            .await
    }
}

impl Parking for RedisStores {
    async fn hold(&self, task: &DeliveryTask) -> Result<(), StoreError> {
        self.held.hold(task).await
    }

    async fn release_if_active(
        &self,
        tenant: &TenantId,
        id: &DestinationId,
    ) -> Result<u64, StoreError> {
        self.held
            .release_if_active(&self.destinations, &self.health, tenant, id)
            .await
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        self.dead.add(letter).await
    }
}

impl KeyLocks for RedisStores {
    async fn lock_key(
        &self,
        dest: &DestinationId,
        key: &str,
        owner: &DeliveryId,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.keys.lock(dest, key, owner, ttl).await
    }

    async fn unlock_key(
        &self,
        dest: &DestinationId,
        key: &str,
        owner: &DeliveryId,
    ) -> Result<(), StoreError> {
        self.keys.unlock(dest, key, owner).await
    }

    async fn marker(&self, dest: &DestinationId, key: &str) -> Result<Option<Marker>, StoreError> {
        self.keys.marker(dest, key).await
    }

    async fn mark(
        &self,
        dest: &DestinationId,
        key: &str,
        completed_at: DateTime<Utc>,
        id: &DeliveryId,
    ) -> Result<(), StoreError> {
        self.keys.mark(dest, key, completed_at, id).await
    }
}

impl Claims for RedisStores {
    /// The lock, the first slot try, the marker and (with the slot) the started record in
    /// one script; only a wait for a slot takes more round trips.
    async fn claim(
        &self,
        started: &DeliveryRecord,
        key: &str,
        ttl: Duration,
    ) -> Result<ClaimsHeld, StoreError> {
        let claimed = courier_store::claim(
            &self.keys,
            self.slots.slots(),
            &self.records,
            started,
            key,
            ttl,
        )
        .await?;
        let courier_store::Claimed::Locked { slot, marker } = claimed else {
            return Ok(ClaimsHeld::NOTHING);
        };
        // The script wrote the record when it took the slot.
        let recorded = slot == courier_store::Claim::Taken;
        let slot = self
            .slots
            .take_after(slot, &started.destination_id, &started.id)
            .await?;
        Ok(ClaimsHeld {
            key: true,
            slot,
            marker,
            recorded,
        })
    }
}

impl Finish for RedisStores {
    async fn finish_delivered(
        &self,
        record: &DeliveryRecord,
        key: &str,
        completed_at: DateTime<Utc>,
        signal: Signal,
    ) -> Result<(), StoreError> {
        let released = courier_store::finish_delivered(
            &self.records,
            &self.keys,
            self.slots.slots(),
            record,
            key,
            completed_at,
            signal,
        )
        .await?;
        self.slots.given_back(&record.destination_id, released);
        Ok(())
    }
}

impl Slots for RedisStores {
    async fn take_slot(
        &self,
        dest: &DestinationId,
        holder: &DeliveryId,
    ) -> Result<bool, StoreError> {
        self.slots.take(dest, holder).await
    }

    async fn renew_slot(
        &self,
        dest: &DestinationId,
        holder: &DeliveryId,
    ) -> Result<(), StoreError> {
        self.slots.renew(dest, holder).await
    }

    async fn give_back_slot(
        &self,
        dest: &DestinationId,
        holder: &DeliveryId,
        signal: Signal,
    ) -> Result<(), StoreError> {
        self.slots.give_back(dest, holder, signal).await
    }

    fn slot_claim_ttl(&self) -> Duration {
        self.slots.claim_ttl()
    }
}

/// The uploader on the render-and-upload pipeline ([`crate::pipeline`]).
#[derive(Debug, Clone)]
pub struct S3Upload {
    /// S3 clients per destination, kept between deliveries.
    pub clients: Arc<ClientCache>,
    /// Where `s3://` row references are read from.
    pub staging: Staging,
    /// For `http(s)://` row references.
    pub http: HttpRows,
    /// Bytes per multipart part (at least 5 MiB); smaller results go as one PutObject.
    pub part_size: usize,
    /// `COURIER_DEFAULT_CHAIN_TENANTS`: the tenants whose destinations may use the fleet's
    /// own AWS identity (`DEFAULT_CHAIN`); empty: none.
    pub default_chain_tenants: Vec<TenantId>,
    /// Bounds on rows by reference: line length, total size, fetch time.
    pub row_limits: RowLimits,
    /// The bound on deliveries of rows by reference running at once.
    pub streams: StreamedDeliveries,
}

impl Upload for S3Upload {
    async fn upload(
        &self,
        dest: &Destination,
        key: &str,
        task: &DeliveryTask,
        stop: &CancellationToken,
    ) -> Result<Uploaded, PipelineError> {
        let uploader = Uploader {
            clients: &self.clients,
            staging: &self.staging,
            http: &self.http,
            part_size: self.part_size,
            default_chain_tenants: &self.default_chain_tenants,
            limits: self.row_limits,
            streams: &self.streams,
        };
        uploader.upload(dest, key, task, stop).await
    }

    fn part_size(&self) -> usize {
        self.part_size
    }
}
