//! The periodic sweep: keeps Redis memory bounded (see [`courier_store::Janitor`]) and
//! ends deliveries that have been held too long ([`HeldExpiry`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use courier_core::delivery::DeliveryRecord;
use courier_store::{DeadLetters, HeldDeliveries, Janitor, RecordStore, StoreError};
use tokio_util::sync::CancellationToken;

use crate::decide::held_too_long;
use crate::telemetry::{self, Outcome};

/// Held deliveries enqueued longer ago than `max_age` (`COURIER_HELD_MAX_AGE_SECS`)
/// become dead letters with the code `HeldTooLong`, their records `FAILED`: a paused or
/// failing destination does not keep them for ever, and they stay replayable.
#[derive(Debug, Clone)]
pub struct HeldExpiry {
    pub held: HeldDeliveries,
    pub dead: DeadLetters,
    pub records: RecordStore,
    pub max_age: Duration,
}

impl HeldExpiry {
    /// Dead-letters the held deliveries too old at `now`; returns how many.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let expired = self
            .held
            .dead_letter_expired(&self.dead, now, |task| {
                let age = (now - task.enqueued_at).to_std().unwrap_or_default();
                (age > self.max_age).then(|| held_too_long(age, self.max_age))
            })
            .await?;
        for (task, error) in &expired {
            // The dead letter is written; the record follows (a crash in between leaves a
            // `HELD` record whose dead letter can be listed and replayed).
            let mut record = match self.records.get_any(&task.delivery_id).await? {
                Some(r) => r,
                None => {
                    DeliveryRecord::queued(task, Default::default(), Default::default(), 0, now)
                }
            };
            record.failed(error.clone(), now);
            self.records.put(&record).await?;
            telemetry::delivery_finished(Outcome::Dead, record.format, record.age(now));
            tracing::warn!(
                delivery_id = %task.delivery_id,
                destination_id = %task.destination_id,
                code = %error.code,
                "held too long; dead-lettered"
            );
        }
        Ok(expired.len())
    }
}

/// Sweeps every `every` until `shutdown`; errors are logged and the next sweep tries again.
pub async fn run(janitor: Janitor, held: HeldExpiry, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match janitor.sweep().await {
            Ok(s) if s.tasks + s.index_entries + s.dead_letters + s.adopted > 0 => {
                tracing::debug!(
                    adopted = s.adopted,
                    tasks = s.tasks,
                    index_entries = s.index_entries,
                    dead_letters = s.dead_letters,
                    "swept"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "janitor sweep failed"),
        }
        if let Err(e) = held.sweep(Utc::now()).await {
            tracing::warn!(error = %e, "sweep of held deliveries failed");
        }
    }
}
