//! Waking an idle worker when a task is enqueued. The producer announces every task it
//! queues on a pub/sub channel ([`courier_store::Keys::queue_wake_channel`]); a worker
//! subscribed to it fetches at once instead of at its next poll, which is still what
//! finds tasks whose announcement was missed (and retries, due later). A subscription
//! that breaks is made again, with a backoff; until then the worker only polls.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use courier_store::RedisTarget;
use futures::task::AtomicWaker;
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

/// A stream that yields once after any number of announcements since it last yielded;
/// what the apalis worker's poll strategy waits on besides its interval.
#[derive(Debug, Clone, Default)]
pub struct Wake(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    set: AtomicBool,
    waker: AtomicWaker,
}

impl Wake {
    /// Marks that a task may be waiting, and wakes whoever waits on the stream.
    pub fn signal(&self) {
        self.0.set.store(true, Ordering::Release);
        self.0.waker.wake();
    }
}

impl Stream for Wake {
    type Item = ();

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        let inner = &self.0;
        if inner.set.swap(false, Ordering::AcqRel) {
            return Poll::Ready(Some(()));
        }
        // Registered before looking again, so a signal in between is not lost.
        inner.waker.register(cx.waker());
        if inner.set.swap(false, Ordering::AcqRel) {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}

/// The longest wait before subscribing again after a failure.
const MAX_RESUBSCRIBE_DELAY: Duration = Duration::from_secs(5);

/// Subscribes to `channel` on `target` until `shutdown`, signalling `wake` for every
/// announcement (and once after each subscription, for what was announced while there
/// was none).
pub async fn listen(target: RedisTarget, channel: String, wake: Wake, shutdown: CancellationToken) {
    let mut delay = Duration::from_millis(100);
    loop {
        match courier_store::subscribe(&target, &channel).await {
            Ok(mut messages) => {
                delay = Duration::from_millis(100);
                wake.signal();
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        message = messages.next() => match message {
                            Some(_) => wake.signal(),
                            None => break,
                        },
                    }
                }
                tracing::debug!("the wake-up subscription ended; subscribing again");
            }
            Err(e) => tracing::debug!(error = %e, "could not subscribe to wake-ups; polling only"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_RESUBSCRIBE_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn signals_before_a_poll_are_one_wake_up_and_none_is_lost() {
        let wake = Wake::default();
        let mut stream = wake.clone();
        assert!(
            stream.next().now_or_never().is_none(),
            "nothing announced yet"
        );
        wake.signal();
        wake.signal();
        assert_eq!(stream.next().now_or_never(), Some(Some(())));
        assert!(
            stream.next().now_or_never().is_none(),
            "two signals, one wake-up"
        );
        let waiting = tokio::spawn(async move { stream.next().await });
        tokio::task::yield_now().await;
        wake.signal();
        assert_eq!(waiting.await.unwrap(), Some(()));
    }
}
