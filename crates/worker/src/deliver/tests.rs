//! The delivery shell against in-memory fakes of its interfaces ([`crate::ports`]): each
//! way a run ends is carried out as [`crate::decide`] decided it — what is written to the
//! record, the queue, the held set and the dead letters, what happens to the key's lock,
//! its marker and the upload slot, and whether anything was uploaded at all.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::DateTime;
use courier_core::delivery::{PartnerInventoryId, RetryState};
use courier_core::destination::{
    BucketName, Credentials, DestinationSpec, DestinationStatus, PathPrefix, Region, S3Settings,
};
use courier_core::rows::InlineRows;
use courier_core::{Compression, DeliveryId, Format, TenantId};
use courier_s3::S3Failure;
use courier_store::{DestinationHealth, Marker};

use super::*;
use crate::pipeline::Uploaded;
use crate::ports::{Claims, Destinations, Finish, KeyLocks, Parking, Queue, Records, Slots};

/// What the fakes hold and what the shell did to them.
#[derive(Debug, Default)]
struct State {
    records: HashMap<String, DeliveryRecord>,
    /// Destinations by id, with whether their health says failing.
    destinations: HashMap<String, (Destination, bool)>,
    scheduled: Vec<(DeliveryTask, DateTime<Utc>)>,
    storage_retries: Vec<(Option<DeliveryRecord>, DeliveryTask)>,
    held: Vec<DeliveryTask>,
    release_checks: u32,
    dead: Vec<DeadLetter>,
    /// Key locks: (destination, key) → owner.
    locks: HashMap<(String, String), String>,
    markers: HashMap<(String, String), Marker>,
    /// Free upload slots (for every destination).
    free_slots: u32,
    given_back: Vec<Signal>,
    successes: u32,
    strikes: Vec<String>,
    /// Writing a record in this status fails, as Redis at `maxmemory` would.
    refuse_put_of: Option<DeliveryStatus>,
    /// Delivered uploads ended in one step ([`Finish::finish_delivered`]).
    finishes: u32,
    uploads: u32,
}

#[derive(Debug, Clone, Default)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }
}

impl Records for Fake {
    async fn record(&self, id: &DeliveryId) -> Result<Option<DeliveryRecord>, StoreError> {
        Ok(self.state().records.get(id.as_str()).cloned())
    }

    async fn put_record(&self, record: &DeliveryRecord) -> Result<(), StoreError> {
        let mut s = self.state();
        if s.refuse_put_of == Some(record.status) {
            return Err(StoreError::Queue("OOM command not allowed".into()));
        }
        s.records.insert(record.id.to_string(), record.clone());
        Ok(())
    }
}

impl Destinations for Fake {
    async fn taken(
        &self,
        task: &DeliveryTask,
    ) -> Result<(Option<DeliveryRecord>, Option<(Destination, bool)>), StoreError> {
        let s = self.state();
        Ok((
            s.records.get(task.delivery_id.as_str()).cloned(),
            s.destinations
                .get(task.destination_id.as_str())
                .filter(|(d, _)| d.tenant == task.tenant)
                .cloned(),
        ))
    }

    async fn record_success(&self, _: &DestinationId) -> Result<(), StoreError> {
        self.state().successes += 1;
        Ok(())
    }

    async fn record_permanent_failure(
        &self,
        _: &DestinationId,
        error: &DeliveryError,
        _: u32,
    ) -> Result<DestinationHealth, StoreError> {
        let mut s = self.state();
        s.strikes.push(error.code.clone());
        Ok(DestinationHealth {
            consecutive_failures: u32::try_from(s.strikes.len()).unwrap(),
            ..Default::default()
        })
    }
}

impl Queue for Fake {
    async fn schedule(&self, task: DeliveryTask, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.state().scheduled.push((task, at));
        Ok(())
    }

    async fn retry_after_storage_failure(
        &self,
        record: Option<&DeliveryRecord>,
        task: &DeliveryTask,
        _: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut s = self.state();
        if let Some(r) = record {
            s.records.insert(r.id.to_string(), r.clone());
        }
        s.storage_retries.push((record.cloned(), task.clone()));
        Ok(())
    }
}

impl Parking for Fake {
    async fn hold(&self, task: &DeliveryTask) -> Result<(), StoreError> {
        self.state().held.push(task.clone());
        Ok(())
    }

    async fn release_if_active(&self, _: &TenantId, _: &DestinationId) -> Result<u64, StoreError> {
        self.state().release_checks += 1;
        Ok(0)
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        self.state().dead.push(letter.clone());
        Ok(())
    }
}

impl KeyLocks for Fake {
    async fn lock_key(
        &self,
        dest: &DestinationId,
        key: &str,
        owner: &DeliveryId,
        _: Duration,
    ) -> Result<bool, StoreError> {
        let mut s = self.state();
        let holder = s
            .locks
            .entry((dest.to_string(), key.to_owned()))
            .or_insert_with(|| owner.to_string());
        Ok(holder == owner.as_str())
    }

    async fn unlock_key(
        &self,
        dest: &DestinationId,
        key: &str,
        owner: &DeliveryId,
    ) -> Result<(), StoreError> {
        let mut s = self.state();
        let k = (dest.to_string(), key.to_owned());
        if s.locks.get(&k).is_some_and(|o| o == owner.as_str()) {
            s.locks.remove(&k);
        }
        Ok(())
    }

    async fn marker(&self, dest: &DestinationId, key: &str) -> Result<Option<Marker>, StoreError> {
        Ok(self
            .state()
            .markers
            .get(&(dest.to_string(), key.to_owned()))
            .cloned())
    }

    async fn mark(
        &self,
        dest: &DestinationId,
        key: &str,
        completed_at: DateTime<Utc>,
        id: &DeliveryId,
    ) -> Result<(), StoreError> {
        self.state().markers.insert(
            (dest.to_string(), key.to_owned()),
            Marker {
                completed_at,
                delivery_id: id.to_string(),
            },
        );
        Ok(())
    }
}

/// The default: the lock, the slot and the marker one after another.
impl Claims for Fake {}

impl Finish for Fake {
    /// Does what `mark`, `record_success`, `put_record`, `give_back_slot` and `unlock_key`
    /// do, all or (when the record's write is refused) nothing.
    async fn finish_delivered(
        &self,
        record: &DeliveryRecord,
        key: &str,
        completed_at: DateTime<Utc>,
        signal: Signal,
    ) -> Result<(), StoreError> {
        if self.state().refuse_put_of == Some(record.status) {
            return Err(StoreError::Queue("OOM command not allowed".into()));
        }
        let dest = &record.destination_id;
        self.mark(dest, key, completed_at, &record.id).await?;
        self.record_success(dest).await?;
        self.put_record(record).await?;
        self.give_back_slot(dest, &record.id, signal).await?;
        self.unlock_key(dest, key, &record.id).await?;
        self.state().finishes += 1;
        Ok(())
    }
}

impl Slots for Fake {
    async fn take_slot(&self, _: &DestinationId, _: &DeliveryId) -> Result<bool, StoreError> {
        let mut s = self.state();
        if s.free_slots == 0 {
            return Ok(false);
        }
        s.free_slots -= 1;
        Ok(true)
    }

    async fn renew_slot(&self, _: &DestinationId, _: &DeliveryId) -> Result<(), StoreError> {
        Ok(())
    }

    async fn give_back_slot(
        &self,
        _: &DestinationId,
        _: &DeliveryId,
        signal: Signal,
    ) -> Result<(), StoreError> {
        let mut s = self.state();
        s.free_slots += 1;
        s.given_back.push(signal);
        Ok(())
    }

    fn slot_claim_ttl(&self) -> Duration {
        // Renewals every 10 ms, so a stolen key lock is noticed at once.
        Duration::from_millis(30)
    }
}

/// What the fake uploader does on each call, in order.
#[derive(Debug)]
enum Upshot {
    Ok,
    Fail(PipelineError),
    /// Another delivery takes the key's lock mid-upload; the upload waits to be stopped.
    LoseTheKey,
}

#[derive(Debug)]
struct FakeUpload {
    fake: Fake,
    upshots: Mutex<VecDeque<Upshot>>,
}

impl Upload for FakeUpload {
    async fn upload(
        &self,
        dest: &Destination,
        key: &str,
        _: &DeliveryTask,
        stop: &CancellationToken,
    ) -> Result<Uploaded, PipelineError> {
        self.fake.state().uploads += 1;
        let upshot = self.upshots.lock().unwrap().pop_front().expect("an upshot");
        match upshot {
            Upshot::Ok => Ok(Uploaded {
                bytes: 42,
                rows: 2,
                md5: "0123456789abcdef0123456789abcdef".into(),
                etag: Some("\"etag\"".into()),
                render: Duration::from_millis(1),
                waited: Duration::ZERO,
            }),
            Upshot::Fail(e) => Err(e),
            Upshot::LoseTheKey => {
                self.fake.state().locks.insert(
                    (dest.id.to_string(), key.to_owned()),
                    "another-delivery".into(),
                );
                stop.cancelled().await;
                Err(PipelineError::Stopped)
            }
        }
    }

    fn part_size(&self) -> usize {
        5 * 1024 * 1024
    }
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_323_045 + secs, 0).unwrap()
}

fn destination(status: DestinationStatus) -> Destination {
    Destination {
        id: DestinationId::generate(),
        tenant: TenantId::parse("acme").unwrap(),
        spec: DestinationSpec {
            name: "results".into(),
            s3: S3Settings {
                bucket: BucketName::parse("acme-results").unwrap(),
                region: Region::parse("us-east-1").unwrap(),
                endpoint_url: None,
                path_prefix: PathPrefix::parse("out/").unwrap(),
                credentials: Credentials::Anonymous,
                write: Default::default(),
            },
            format: Format::Csv,
            compression: Compression::None,
            csv: Default::default(),
            parquet: Default::default(),
            status,
            batch: None,
        },
        created_at: at(0),
        updated_at: at(0),
    }
}

fn task_for(dest: &Destination) -> DeliveryTask {
    DeliveryTask {
        delivery_id: DeliveryId::generate(),
        tenant: dest.tenant.clone(),
        destination_id: dest.id.clone(),
        job_id: "job-1".into(),
        partner_inventory_id: PartnerInventoryId::parse("INV-1").unwrap(),
        completed_at: at(0),
        columns: vec!["a".into()],
        rows: InlineRows::default(),
        rows_url: None,
        column_types: Default::default(),
        // Just enqueued: far inside every bound.
        enqueued_at: Utc::now(),
        retry: RetryState::default(),
    }
}

/// A run of the shell: the fakes, a destination, a queued task for it, and the uploader's
/// upshots.
struct Run {
    fake: Fake,
    dest: Destination,
    task: DeliveryTask,
    /// The task's object key.
    key: String,
    deliverer: Arc<Deliverer<Fake, FakeUpload>>,
}

impl Run {
    fn new(status: DestinationStatus, upshots: Vec<Upshot>) -> Self {
        let fake = Fake::default();
        let dest = destination(status);
        let task = task_for(&dest);
        {
            let mut s = fake.state();
            s.free_slots = 4;
            s.destinations
                .insert(dest.id.to_string(), (dest.clone(), false));
            let record =
                DeliveryRecord::queued(&task, Format::Csv, Compression::None, 0, Utc::now());
            s.records.insert(task.delivery_id.to_string(), record);
        }
        let deliverer = Arc::new(Deliverer {
            stores: fake.clone(),
            uploader: FakeUpload {
                fake: fake.clone(),
                upshots: Mutex::new(upshots.into()),
            },
            worker_name: "worker-1".into(),
            retry: RetryPolicy {
                max_attempts: 3,
                min_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(10),
                max_elapsed: Duration::from_secs(600),
            },
            failing_threshold: 3,
            bounds: Bounds::new(
                Duration::from_secs(3600),
                Duration::from_secs(600),
                Duration::from_secs(3600),
            ),
        });
        let key = object_key(
            &dest.spec.s3.path_prefix,
            &task.partner_inventory_id,
            task.completed_at,
            Format::Csv,
            Compression::None,
        );
        Run {
            fake,
            dest,
            task,
            key,
            deliverer,
        }
    }

    async fn handle(&self) -> Handled {
        let payload = serde_json::to_vec(&self.task).unwrap();
        Arc::clone(&self.deliverer).handle(&payload).await.unwrap()
    }

    fn record(&self) -> DeliveryRecord {
        self.fake.state().records[self.task.delivery_id.as_str()].clone()
    }

    /// Nothing of the run is left claimed: no key lock, every slot back.
    fn assert_released(&self) {
        let s = self.fake.state();
        assert!(s.locks.is_empty(), "key locks left: {:?}", s.locks);
        assert_eq!(s.free_slots, 4, "upload slots not given back");
    }
}

fn io(code: &str, status: Option<u16>) -> PipelineError {
    PipelineError::Io(S3Failure {
        status,
        ..S3Failure::new(code.into(), format!("{code} happened"))
    })
}

#[tokio::test]
async fn a_successful_upload_is_recorded_marked_and_releases_its_claims() {
    let run = Run::new(DestinationStatus::Active, vec![Upshot::Ok]);
    assert_eq!(run.handle().await, Handled::Delivered);
    let record = run.record();
    assert_eq!(record.status, DeliveryStatus::Delivered);
    assert_eq!(record.key.as_deref(), Some(run.key.as_str()));
    assert_eq!(record.attempts.len(), 1);
    assert_eq!(record.attempts[0].worker, "worker-1");
    assert_eq!(record.attempts[0].outcome, DeliveryStatus::Delivered);
    let s = run.fake.state();
    let marker = &s.markers[&(run.dest.id.to_string(), run.key.clone())];
    assert_eq!(marker.delivery_id, run.task.delivery_id.as_str());
    assert_eq!(marker.completed_at, run.task.completed_at);
    assert_eq!(s.successes, 1);
    assert!(matches!(s.given_back[..], [Signal::Done { .. }]));
    assert_eq!(
        s.finishes, 1,
        "record, marker, health, slot and lock in one step"
    );
    assert!(s.scheduled.is_empty() && s.dead.is_empty() && s.strikes.is_empty());
    drop(s);
    run.assert_released();
}

#[tokio::test]
async fn a_refused_end_of_a_delivery_gives_its_claims_back_and_is_retried() {
    let run = Run::new(DestinationStatus::Active, vec![Upshot::Ok]);
    // Redis (at `maxmemory`) refuses the step that records the delivery.
    run.fake.state().refuse_put_of = Some(DeliveryStatus::Delivered);
    assert_eq!(run.handle().await, Handled::Retrying);
    let s = run.fake.state();
    assert_eq!(s.uploads, 1);
    assert_eq!(s.finishes, 0);
    assert!(
        s.markers.is_empty(),
        "nothing of the refused step is written"
    );
    assert_eq!(s.successes, 0);
    let [(_, task)] = &s.storage_retries[..] else {
        panic!("one storage retry: {:?}", s.storage_retries)
    };
    assert_eq!(task.delivery_id, run.task.delivery_id);
    assert!(matches!(s.given_back[..], [Signal::Done { .. }]));
    drop(s);
    run.assert_released();
}

#[tokio::test]
async fn a_transient_failure_is_retried_later_and_slows_the_destination() {
    let run = Run::new(
        DestinationStatus::Active,
        vec![Upshot::Fail(io("SlowDown", Some(503)))],
    );
    assert_eq!(run.handle().await, Handled::Retrying);
    let record = run.record();
    assert_eq!(record.status, DeliveryStatus::Retrying);
    assert_eq!(record.attempts.len(), 1);
    assert_eq!(record.attempts[0].error_code.as_deref(), Some("SlowDown"));
    let s = run.fake.state();
    let [(task, at)] = &s.scheduled[..] else {
        panic!("one retry scheduled: {:?}", s.scheduled)
    };
    assert_eq!(task.retry.attempts, 1, "the attempt counts");
    assert!(*at > Utc::now() - chrono::Duration::seconds(1));
    assert!(
        *at <= Utc::now() + chrono::Duration::seconds(10),
        "within max_delay"
    );
    assert_eq!(s.given_back, vec![Signal::Overloaded]);
    assert!(s.dead.is_empty() && s.strikes.is_empty() && s.markers.is_empty());
    drop(s);
    run.assert_released();
}

#[tokio::test]
async fn a_permanent_failure_is_dead_lettered_and_strikes_the_destination() {
    let run = Run::new(
        DestinationStatus::Active,
        vec![Upshot::Fail(io("AccessDenied", Some(403)))],
    );
    assert_eq!(
        run.handle().await,
        Handled::Failed {
            code: "AccessDenied".into()
        }
    );
    let record = run.record();
    assert_eq!(record.status, DeliveryStatus::Failed);
    assert_eq!(record.error.as_ref().unwrap().code, "AccessDenied");
    let s = run.fake.state();
    assert_eq!(s.dead.len(), 1);
    assert_eq!(s.dead[0].id, run.task.delivery_id.as_str());
    assert_eq!(s.dead[0].code, "AccessDenied");
    // The dead letter keeps the task, so it can be replayed.
    let replayable: DeliveryTask = serde_json::from_value(s.dead[0].payload.clone()).unwrap();
    assert_eq!(replayable.delivery_id, run.task.delivery_id);
    assert_eq!(s.strikes, vec!["AccessDenied".to_owned()]);
    assert!(s.scheduled.is_empty() && s.markers.is_empty());
    drop(s);
    run.assert_released();
}

#[tokio::test]
async fn a_failure_of_the_rows_source_fails_without_striking_the_destination() {
    let run = Run::new(
        DestinationStatus::Active,
        vec![Upshot::Fail(PipelineError::Source(S3Failure {
            status: Some(404),
            ..S3Failure::new("NoSuchKey".into(), "no such staged object")
        }))],
    );
    assert!(matches!(run.handle().await, Handled::Failed { .. }));
    assert_eq!(run.record().status, DeliveryStatus::Failed);
    let s = run.fake.state();
    assert_eq!(s.dead.len(), 1);
    assert!(
        s.strikes.is_empty(),
        "charged to the rows, not the destination"
    );
    drop(s);
    run.assert_released();
}

#[tokio::test]
async fn a_paused_destination_holds_the_delivery_without_claiming_anything() {
    let run = Run::new(DestinationStatus::Paused, vec![]);
    assert_eq!(run.handle().await, Handled::Held);
    assert_eq!(run.record().status, DeliveryStatus::Held);
    let s = run.fake.state();
    assert_eq!(s.held.len(), 1);
    assert_eq!(s.held[0].delivery_id, run.task.delivery_id);
    // The race with a resume: released at once if the destination is active again.
    assert_eq!(s.release_checks, 1);
    assert_eq!(s.uploads, 0);
    assert!(s.locks.is_empty() && s.given_back.is_empty());
}

#[tokio::test]
async fn another_tenants_destination_is_not_found() {
    let run = Run::new(DestinationStatus::Active, vec![]);
    run.fake
        .state()
        .destinations
        .get_mut(run.dest.id.as_str())
        .unwrap()
        .0
        .tenant = TenantId::parse("globex").unwrap();
    assert_eq!(
        run.handle().await,
        Handled::Failed {
            code: "DestinationNotFound".into()
        }
    );
    let s = run.fake.state();
    assert_eq!(s.uploads, 0);
    assert_eq!(s.dead.len(), 1);
    assert!(s.locks.is_empty());
}

#[tokio::test]
async fn a_busy_key_reschedules_without_an_attempt() {
    let run = Run::new(DestinationStatus::Active, vec![]);
    run.fake.state().locks.insert(
        (run.dest.id.to_string(), run.key.clone()),
        "another-delivery".into(),
    );
    assert_eq!(run.handle().await, Handled::Retrying);
    let record = run.record();
    assert_eq!(record.status, DeliveryStatus::Queued);
    assert!(record.attempts.is_empty());
    let s = run.fake.state();
    assert_eq!(s.uploads, 0);
    let [(task, _)] = &s.scheduled[..] else {
        panic!("rescheduled once")
    };
    assert_eq!(task.retry.attempts, 0);
    // The other delivery's lock is untouched; no slot was taken.
    assert_eq!(s.locks.len(), 1);
    assert_eq!(s.free_slots, 4);
}

#[tokio::test]
async fn a_destination_at_its_upload_limit_reschedules_and_frees_the_key() {
    let run = Run::new(DestinationStatus::Active, vec![]);
    run.fake.state().free_slots = 0;
    assert_eq!(run.handle().await, Handled::Retrying);
    let s = run.fake.state();
    assert_eq!(s.uploads, 0);
    assert_eq!(s.scheduled.len(), 1);
    assert!(s.locks.is_empty(), "the key's lock is released");
    drop(s);
    assert!(run.record().attempts.is_empty());
}

#[tokio::test]
async fn an_older_result_than_the_keys_marker_is_superseded_not_uploaded() {
    let run = Run::new(DestinationStatus::Active, vec![]);
    run.fake.state().markers.insert(
        (run.dest.id.to_string(), run.key.clone()),
        Marker {
            completed_at: run.task.completed_at + chrono::Duration::seconds(1),
            delivery_id: "dlv_newer".into(),
        },
    );
    assert_eq!(run.handle().await, Handled::Superseded);
    assert_eq!(run.record().status, DeliveryStatus::Superseded);
    let s = run.fake.state();
    assert_eq!(s.uploads, 0);
    assert_eq!(s.markers.len(), 1);
    assert_eq!(
        s.markers[&(run.dest.id.to_string(), run.key.clone())].delivery_id,
        "dlv_newer"
    );
    assert!(s.dead.is_empty() && s.scheduled.is_empty());
    drop(s);
    run.assert_released();
}

#[tokio::test]
async fn losing_the_key_mid_upload_stops_it_and_reschedules_it_uncounted() {
    let run = Run::new(DestinationStatus::Active, vec![Upshot::LoseTheKey]);
    assert_eq!(run.handle().await, Handled::Retrying);
    let record = run.record();
    assert_eq!(record.status, DeliveryStatus::InProgress);
    assert!(record.attempts.is_empty(), "no attempt recorded");
    let s = run.fake.state();
    assert_eq!(s.uploads, 1);
    let [(task, _)] = &s.scheduled[..] else {
        panic!("rescheduled once")
    };
    assert_eq!(
        task.retry,
        RetryState::default(),
        "the retry count is untouched"
    );
    assert!(s.markers.is_empty() && s.dead.is_empty());
    // The lock is the other delivery's now, and stays so; the slot is given back.
    assert_eq!(
        s.locks[&(run.dest.id.to_string(), run.key.clone())],
        "another-delivery"
    );
    assert_eq!(s.free_slots, 4);
}

#[tokio::test]
async fn a_duplicate_of_a_delivered_task_is_skipped() {
    let run = Run::new(DestinationStatus::Active, vec![Upshot::Ok]);
    assert_eq!(run.handle().await, Handled::Delivered);
    assert_eq!(run.handle().await, Handled::Delivered);
    let s = run.fake.state();
    assert_eq!(s.uploads, 1, "uploaded once");
    assert_eq!(s.successes, 1);
}

#[tokio::test]
async fn a_payload_that_is_not_a_task_is_dead_lettered_as_it_came() {
    let run = Run::new(DestinationStatus::Active, vec![]);
    let handled = Arc::clone(&run.deliverer)
        .handle(b"{\"not\":\"a task\"}")
        .await
        .unwrap();
    assert_eq!(handled, Handled::Poison);
    let s = run.fake.state();
    assert_eq!(s.dead.len(), 1);
    assert_eq!(s.dead[0].code, "UndecodableTask");
    assert_eq!(s.dead[0].payload, serde_json::json!({"not": "a task"}));
}

#[tokio::test]
async fn a_compressed_payload_is_delivered_and_a_corrupt_one_dead_lettered_as_json() {
    let run = Run::new(DestinationStatus::Active, vec![Upshot::Ok]);
    let mut task = run.task.clone();
    // Long enough to be compressed, as the producer queues it.
    task.job_id = "j".repeat(2 * courier_core::payload::COMPRESS_FROM);
    let packed = courier_core::payload::encode(&task).unwrap();
    assert_eq!(packed[0], courier_core::payload::COMPRESSED);
    let handled = Arc::clone(&run.deliverer).handle(&packed).await;
    assert_eq!(handled.unwrap(), Handled::Delivered);
    assert_eq!(run.record().status, DeliveryStatus::Delivered);

    let cut = &packed[..packed.len() / 2];
    let handled = Arc::clone(&run.deliverer).handle(cut).await.unwrap();
    assert_eq!(handled, Handled::Poison);
    let s = run.fake.state();
    assert_eq!(s.dead.len(), 1);
    assert_eq!(s.dead[0].code, "UndecodableTask");
    assert!(
        s.dead[0]
            .reason
            .contains("compressed task payload is corrupt"),
        "{}",
        s.dead[0].reason
    );
}

#[tokio::test]
async fn a_storage_failure_follows_couriers_retry_policy() {
    let run = Run::new(DestinationStatus::Active, vec![]);
    // Redis refuses the write that starts the attempt.
    run.fake.state().refuse_put_of = Some(DeliveryStatus::InProgress);
    assert_eq!(run.handle().await, Handled::Retrying);
    let s = run.fake.state();
    assert_eq!(s.uploads, 0);
    let [(Some(record), task)] = &s.storage_retries[..] else {
        panic!("one storage retry with its record: {:?}", s.storage_retries)
    };
    assert_eq!(task.retry.attempts, 1);
    assert_eq!(record.status, DeliveryStatus::Retrying);
    assert_eq!(
        record.attempts.last().unwrap().error_code.as_deref(),
        Some("StorageFailed")
    );
    assert!(s.dead.is_empty());
}
