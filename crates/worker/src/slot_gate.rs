//! Taking an upload slot without falling off a cliff.
//!
//! When a destination's fleet-wide cap ([`UploadSlots`]) is full, a task used to be put
//! back in the queue for a second, which apalis-redis schedules in whole seconds: a burst
//! to one busy destination then went at a few deliveries per second. A slot of a busy
//! destination frees up within milliseconds, so the gate waits for it, briefly: only while
//! the destination is *moving* (a slot was taken or given back in the last second,
//! anywhere in the fleet),
//! for at most [`SlotGate::max_wait`], and with at most as many waiters per destination
//! in this process as the cap. A destination whose endpoint hangs never moves, so its
//! tasks go back to the queue at once and cannot take the worker's other slots.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier_core::{DeliveryId, DestinationId};
use courier_store::{Claim, StoreError, UploadSlots};
use tokio::sync::Notify;
use tokio::time::Instant;

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
        let deadline = Instant::now() + self.max_wait;
        let mut pause = FIRST_PAUSE;
        let mut waiter: Option<Waiter<'_>> = None;
        loop {
            match self.slots.acquire(dest, holder).await? {
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

    /// Gives the slot back and wakes one of this process's waiters for it.
    pub async fn give_back(
        &self,
        dest: &DestinationId,
        holder: &DeliveryId,
    ) -> Result<(), StoreError> {
        self.slots.release(dest, holder).await?;
        if let Some(w) = self.lock().get(dest) {
            w.released.notify_one();
        }
        Ok(())
    }

    /// Extends `holder`'s claim on its slot of `dest` (a long upload's).
    pub async fn renew(&self, dest: &DestinationId, holder: &DeliveryId) -> Result<(), StoreError> {
        if self.slots.acquire(dest, holder).await? != Claim::Taken {
            tracing::warn!(
                "an upload slot's claim expired during the upload; the cap may be exceeded once"
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
        if w.count >= self.slots.per_destination {
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
