//! Closing the windows of batched destinations. Every worker runs a [`Closer`] beside its
//! apalis worker: it looks for open windows that are due (their end plus a short grace, or
//! their next retry), and for each one whose destination is active and healthy, claims it
//! (one worker of the fleet wins), streams its entries from Redis in pages, gzips them into
//! one object or more and uploads them through the multipart path, then records the
//! batches and the deliveries and deletes the window.
//!
//! - [`close`]: one window, from claim to records.
//! - [`stream`]: a window's entries read, cut into objects and gzipped on a blocking
//!   thread, each object's parts uploaded as they come.
//!
//! A worker that dies mid-window leaves its claim to expire; the next worker redoes the
//! window: the same entries in the same order make the same objects with the same ids,
//! keys and bytes, so nothing is lost and nothing is delivered twice.

pub mod close;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use courier_store::BatchStore;
use tokio_util::sync::CancellationToken;

use crate::Deliverer;
use crate::telemetry;

/// The most overdue windows the overdue gauge looks at.
const OVERDUE_SCAN: usize = 1000;

/// How a closer works.
#[derive(Debug, Clone, Copy)]
pub struct CloserSettings {
    /// How often it looks for due windows.
    pub tick: Duration,
    /// How long a claim lasts unless renewed; renewed every third of it.
    pub claim_ttl: Duration,
    /// Entries read from Redis per page.
    pub page: u64,
    /// A window still open this long after it was due counts as overdue (the gauge).
    pub overdue_after: Duration,
}

impl Default for CloserSettings {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            claim_ttl: Duration::from_secs(30),
            page: 64,
            overdue_after: Duration::from_secs(120),
        }
    }
}

/// Closes due windows for the fleet.
#[derive(Debug)]
pub struct Closer {
    pub batches: BatchStore,
    pub deliverer: Arc<Deliverer>,
    pub settings: CloserSettings,
}

impl Closer {
    /// Looks for due windows every tick until `shutdown`; a window being closed is
    /// finished first (or left to its claim's expiry if the process dies).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.sweep(&shutdown).await {
                tracing::warn!(error = %e, "could not look for due batch windows");
            }
        }
    }

    /// How many open windows were due before `before` and are not held by their
    /// customer (a paused destination's windows wait by the customer's choice); at most
    /// [`OVERDUE_SCAN`] are looked at.
    async fn overdue(&self, before: i64) -> Result<u64, courier_store::StoreError> {
        let mut paused = std::collections::HashMap::new();
        let mut count = 0;
        for (w, _) in self.batches.due(before, 0, OVERDUE_SCAN).await? {
            let is_paused = match paused.get(&w.destination_id) {
                Some(p) => *p,
                None => {
                    let status = self
                        .deliverer
                        .stores
                        .destinations
                        .status_any(&w.destination_id)
                        .await?;
                    let p = status == Some(courier_core::destination::DestinationStatus::Paused);
                    paused.insert(w.destination_id.clone(), p);
                    p
                }
            };
            if !is_paused {
                count += 1;
            }
        }
        Ok(count)
    }

    /// One look: every due window, most overdue first, page by page. Windows that stay
    /// open (held, another worker's, failed on Courier's storage) are stepped over, so that
    /// however many are held the others are reached; a held destination's windows are
    /// skipped without another look at it in the same sweep.
    pub async fn sweep(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<(), courier_store::StoreError> {
        let now = Utc::now().timestamp();
        let overdue_before = now - self.settings.overdue_after.as_secs() as i64;
        telemetry::batch_windows_overdue(self.overdue(overdue_before).await?);
        let mut held = std::collections::HashSet::new();
        let mut skipped = 0;
        loop {
            let page = self.batches.due(now, skipped, 32).await?;
            if page.is_empty() {
                return Ok(());
            }
            for (window, _) in page {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                if held.contains(&window.destination_id) {
                    skipped += 1;
                    continue;
                }
                match self.close(&window).await {
                    Ok(close::Closed::Held) => {
                        telemetry::batch_window_closed("held", 0.0);
                        held.insert(window.destination_id.clone());
                        skipped += 1;
                    }
                    // Closed, given up or rescheduled later: out of this sweep's range.
                    Ok(
                        close::Closed::Delivered { .. }
                        | close::Closed::Failed { .. }
                        | close::Closed::Retrying { .. },
                    ) => {}
                    Ok(_) => skipped += 1,
                    Err(e) => {
                        skipped += 1;
                        tracing::warn!(destination_id = %window.destination_id, window_start = window.start, error = %e, "closing a batch window failed on Courier's storage; it is tried again");
                    }
                }
            }
        }
    }
}
