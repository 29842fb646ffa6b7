//! A bound on the deliveries of one worker that stream their rows from a reference
//! (`rowsUrl`) at the same time, `COURIER_MAX_STREAMED_DELIVERIES`.
//!
//! `COURIER_WORKER_CONCURRENCY` is sized for small deliveries, which spend most of their
//! time waiting on the store's round trip and hold little memory. A delivery of rows by
//! reference holds much more for as long as it runs: about three multipart parts
//! (`COURIER_PART_SIZE_MB` each) plus the row reader's buffers, some 25–40 MiB. So those
//! deliveries take a permit of their own before they open their rows, and the worker's
//! memory stays bounded by this count, not by its concurrency. A delivery waiting for a
//! permit keeps its slot of the worker's concurrency; its fetch timeout starts once it has
//! the permit.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// `COURIER_MAX_STREAMED_DELIVERIES` by default.
pub const DEFAULT_MAX_STREAMED_DELIVERIES: usize = 4;

/// Permits for deliveries that stream their rows, shared by all of a worker's deliveries.
#[derive(Debug, Clone)]
pub struct StreamedDeliveries {
    permits: Arc<Semaphore>,
    max: usize,
}

impl Default for StreamedDeliveries {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_STREAMED_DELIVERIES)
    }
}

impl StreamedDeliveries {
    /// At most `max` (at least one) streamed deliveries at once.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// The most at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Streamed deliveries running now.
    pub fn running(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// Waits for a permit, held until it is dropped; `None` if `stop` fires first.
    pub async fn enter(&self, stop: &CancellationToken) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            biased;
            () = stop.cancelled() => None,
            permit = self.permits.clone().acquire_owned() => {
                Some(permit.expect("the semaphore is never closed"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn at_most_max_run_at_once_and_a_released_permit_lets_the_next_one_in() {
        let streams = StreamedDeliveries::new(2);
        let never = CancellationToken::new();
        let a = streams.enter(&never).await.expect("a permit");
        let b = streams.enter(&never).await.expect("a permit");
        assert_eq!(streams.running(), 2);

        let waiting = streams.enter(&never);
        tokio::pin!(waiting);
        assert!(
            (&mut waiting).now_or_never().is_none(),
            "a third delivery waits while two stream"
        );
        drop(a);
        let c = waiting.await.expect("the released permit");
        assert_eq!(streams.running(), 2);
        drop((b, c));
        assert_eq!(streams.running(), 0);
    }

    #[tokio::test]
    async fn a_delivery_told_to_stop_while_waiting_gets_no_permit() {
        let streams = StreamedDeliveries::new(1);
        let never = CancellationToken::new();
        let held = streams.enter(&never).await.expect("a permit");
        let stop = CancellationToken::new();
        let waiting = streams.enter(&stop);
        tokio::pin!(waiting);
        assert!((&mut waiting).now_or_never().is_none());
        stop.cancel();
        assert!(waiting.await.is_none(), "stopped, not admitted");
        drop(held);
        assert_eq!(streams.running(), 0, "the stopped one took nothing");
    }

    #[test]
    fn zero_means_one() {
        assert_eq!(StreamedDeliveries::new(0).max(), 1);
        assert_eq!(
            StreamedDeliveries::default().max(),
            DEFAULT_MAX_STREAMED_DELIVERIES
        );
    }
}
