//! Taking an upload slot without falling off a cliff.
//!
//! When a destination's fleet-wide limit ([`UploadSlots`]) is reached, a task used to be put
//! back in the queue for a second, which apalis-redis schedules in whole seconds: a burst
//! to one busy destination then went at a few deliveries per second. A slot of a busy
//! destination frees up within milliseconds, so the gate waits for it, briefly: only while
//! the destination is *moving* (a slot was taken or given back in the last second,
//! anywhere in the fleet),
//! for at most [`SlotGate::max_wait`], and with at most as many waiters per destination
//! in this process as the highest limit. A destination whose endpoint hangs never moves, so its
//! tasks go back to the queue at once and cannot take the worker's other slots.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier_core::failure::ErrorClass;
use courier_core::{DeliveryId, DestinationId};
use courier_store::{Claim, LimitChange, Released, Signal, StoreError, UploadSlots};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::pipeline::{PipelineError, Uploaded};
use crate::telemetry;

/// How long a task waits at most for a slot of a moving destination.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(2);
/// The first pause between two claims; it doubles up to [`MAX_PAUSE`]. A slot given back
/// by this process wakes a waiter at once; one given back elsewhere is seen at the next
/// claim.
const FIRST_PAUSE: Duration = Duration::from_millis(2);
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// Upload slots, with a short wait for those of busy destinations.
#[derive(Debug)]
pub struct SlotGate {
    slots: UploadSlots,
    pub max_wait: Duration,
    local: Mutex<HashMap<DestinationId, Waiting>>,
}

/// This process's waiters for one destination.
#[derive(Debug)]
struct Waiting {
    count: u32,
    released: Arc<Notify>,
}

impl SlotGate {
    pub fn new(slots: UploadSlots, max_wait: Duration) -> Self {
        Self {
            slots,
            max_wait,
            local: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a slot of `dest` for `holder`, waiting while that is worth it; false means
    /// the task should go back to the queue.
    pub async fn take(
        &self,
        dest: &DestinationId,
        holder: &DeliveryId,
    ) -> Result<bool, StoreError> {
        let first = self.slots.acquire(dest, holder).await?;
        self.take_after(first, dest, holder).await
    }

    /// [`Self::take`] when the first try was made already (with the key's lock, in one
    /// script: [`courier_store::claim`]) and answered `first`.
    pub async fn take_after(
        &self,
        first: Claim,
        dest: &DestinationId,
        holder: &DeliveryId,
    ) -> Result<bool, StoreError> {
        let deadline = Instant::now() + self.max_wait;
        let mut pause = FIRST_PAUSE;
        let mut waiter: Option<Waiter<'_>> = None;
        let mut answer = Some(first);
        loop {
            let claim = match answer.take() {
                Some(first) => first,
                None => self.slots.acquire(dest, holder).await?,
            };
            match claim {
                Claim::Taken => return Ok(true),
                Claim::Full { moving: false } => return Ok(false),
                Claim::Full { moving: true } => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            if waiter.is_none() {
                waiter = self.enter(dest);
            }
            let Some(w) = &waiter else {
                // Enough of this process's tasks wait for this destination already.
                return Ok(false);
            };
            let released = w.released.notified();
            tokio::select! {
                () = released => {}
                () = tokio::time::sleep(pause.min(deadline - now)) => {}
            }
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// Gives the slot back with what its upload saw (which adjusts the destination's
    /// limit), and wakes one of this process's waiters for it.
    pub async fn give_back(
        &self,
        dest: &DestinationId,
        holder: &DeliveryId,
        signal: Signal,
    ) -> Result<(), StoreError> {
        let released = self.slots.release(dest, holder, signal).await?;
        self.given_back(dest, released);
        Ok(())
    }

    /// The slot store this gate takes slots from.
    pub fn slots(&self) -> &UploadSlots {
        &self.slots
    }

    /// What follows a slot given back (here or in one step with the end of its delivery,
    /// [`courier_store::finish_delivered`]): the limit's change is reported, and one of this
    /// process's waiters for `dest` is woken.
    pub fn given_back(&self, dest: &DestinationId, released: Released) {
        match released.change {
            LimitChange::Halved => {
                telemetry::upload_limit_cut("overloaded");
                tracing::info!(
                    limit = released.limit,
                    "destination overloaded; its upload limit halved"
                );
            }
            LimitChange::Trimmed => {
                telemetry::upload_limit_cut("slower");
                tracing::debug!(
                    limit = released.limit,
                    "uploads slowing down; upload limit trimmed"
                );
            }
            LimitChange::Grown | LimitChange::Unchanged => {}
        }
        if let Some(w) = self.lock().get(dest) {
            w.released.notify_one();
        }
    }

    /// Extends `holder`'s claim on its slot of `dest` (a long upload's).
    pub async fn renew(&self, dest: &DestinationId, holder: &DeliveryId) -> Result<(), StoreError> {
        if self.slots.acquire(dest, holder).await? != Claim::Taken {
            tracing::warn!(
                "an upload slot's claim expired during the upload; the limit may be exceeded once"
            );
        }
        Ok(())
    }

    /// How long a claim lasts unless renewed.
    pub fn claim_ttl(&self) -> Duration {
        self.slots.claim_ttl
    }

    /// Waiters of this process for `dest`, now.
    pub fn waiting(&self, dest: &DestinationId) -> u32 {
        self.lock().get(dest).map_or(0, |w| w.count)
    }

    fn enter(&self, dest: &DestinationId) -> Option<Waiter<'_>> {
        let mut local = self.lock();
        let w = local.entry(dest.clone()).or_insert_with(|| Waiting {
            count: 0,
            released: Arc::new(Notify::new()),
        });
        if w.count >= self.slots.concurrency.max {
            return None;
        }
        w.count += 1;
        Some(Waiter {
            gate: self,
            dest: dest.clone(),
            released: Arc::clone(&w.released),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DestinationId, Waiting>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What an attempt says about its destination's load, given back with its upload slot:
/// a success (with its time when the object went in one request, as a multipart upload's
/// time follows its size), a transient failure (throttled, 5xx, timed out: the destination
/// has too much), or nothing (a permanent refusal, bad rows).
pub fn signal_of(
    result: &Result<Uploaded, PipelineError>,
    took: Duration,
    part_size: usize,
) -> Signal {
    match result {
        Ok(up) => Signal::Done {
            // The wait for a streamed delivery's turn is the worker's, not the store's.
            latency: (up.bytes < part_size as u64).then_some(took.saturating_sub(up.waited)),
        },
        Err(PipelineError::Io(f)) if f.class() == ErrorClass::Transient => Signal::Overloaded,
        Err(_) => Signal::Neutral,
    }
}

/// One waiting task; leaves the count when dropped.
struct Waiter<'a> {
    gate: &'a SlotGate,
    dest: DestinationId,
    released: Arc<Notify>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut local = self.gate.lock();
        if let Some(w) = local.get_mut(&self.dest) {
            w.count -= 1;
            if w.count == 0 {
                local.remove(&self.dest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use courier_core::ErrorCode;
    use courier_s3::S3Failure;

    use super::*;

    const PART: usize = 8 << 20;

    fn uploaded(bytes: u64) -> Result<Uploaded, PipelineError> {
        Ok(Uploaded {
            bytes,
            rows: 1,
            md5: String::new(),
            etag: None,
            render: Duration::ZERO,
            waited: Duration::ZERO,
        })
    }

    #[test]
    fn the_wait_for_a_streamed_turn_is_not_the_stores_latency() {
        let waited = Ok(Uploaded {
            waited: Duration::from_millis(900),
            ..uploaded(1_000).unwrap()
        });
        assert_eq!(
            signal_of(&waited, Duration::from_millis(1_000), PART),
            Signal::Done {
                latency: Some(Duration::from_millis(100))
            }
        );
    }

    fn failed(code: ErrorCode, status: Option<u16>) -> Result<Uploaded, PipelineError> {
        Err(PipelineError::Io(S3Failure {
            status,
            ..S3Failure::new(code, "x")
        }))
    }

    #[test]
    fn an_attempt_tells_how_loaded_its_destination_is() {
        let took = Duration::from_millis(30);
        let cases = [
            (
                uploaded(1_000),
                Signal::Done {
                    latency: Some(took),
                },
            ),
            // A multipart upload's time says more about its size than the store's load.
            (uploaded(PART as u64 * 3), Signal::Done { latency: None }),
            (failed(ErrorCode::SlowDown, Some(503)), Signal::Overloaded),
            (
                failed(ErrorCode::InternalError, Some(500)),
                Signal::Overloaded,
            ),
            (failed(ErrorCode::Timeout, None), Signal::Overloaded),
            (
                failed(ErrorCode::parse("Weird"), Some(502)),
                Signal::Overloaded,
            ),
            (failed(ErrorCode::AccessDenied, Some(403)), Signal::Neutral),
            (failed(ErrorCode::NoSuchBucket, Some(404)), Signal::Neutral),
            (
                Err(PipelineError::Render("bad row".into())),
                Signal::Neutral,
            ),
        ];
        for (result, want) in cases {
            assert_eq!(signal_of(&result, took, PART), want, "{result:?}");
        }
    }
}
