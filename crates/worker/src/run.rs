//! Running a worker process: apalis pulls tasks from Redis and calls [`Deliverer`];
//! a supervisor restarts the apalis worker if Redis goes away, and shutdown drains.
//!
//! An apalis worker stops at the first heartbeat or fetch Redis refuses (at `maxmemory`
//! both are refused writes, and a blip of the connection fails them too), and stopping
//! drops the handlers it was running. So each delivery runs on a task of its own
//! ([`UnderWay`]): when the apalis worker fails, its deliveries go on to their end (their
//! outcome written, or Courier's retry after a storage failure) instead of being cut off
//! in the middle of an upload, and the supervisor waits for them before it hands back
//! what is left and starts taking tasks again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{
    Attempt, BackendExt, BoxDynError, Data, Strategy, WorkerBuilder, WorkerBuilderExt,
};
use apalis_redis::RedisStorage;
use courier_store::Keys;
use courier_store::RedisConn;
use courier_store::queue::{Liveness, queue_config};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::batch::{Closer, CloserSettings};
use crate::codec::{RawTask, Verbatim};
use crate::deliver::Deliverer;
use crate::wake::Wake;

/// How one worker process takes work.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Unique across the fleet; apalis tracks in-flight tasks per name.
    pub name: String,
    /// Deliveries handled at the same time.
    pub concurrency: usize,
    /// How often an idle worker looks for new tasks (it is also woken by `wake`).
    pub poll_interval: Duration,
    /// Announcements of new tasks ([`crate::wake::listen`]); `None` polls only.
    pub wake: Option<Wake>,
    pub liveness: Liveness,
    /// How long shutdown waits for in-flight deliveries before leaving them to the fleet.
    pub drain_timeout: Duration,
    /// How the batch windows' closer works.
    pub closer: CloserSettings,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            name: default_worker_name(),
            concurrency: 8,
            poll_interval: Duration::from_millis(100),
            wake: None,
            liveness: Liveness::default(),
            drain_timeout: Duration::from_secs(25),
            closer: CloserSettings::default(),
        }
    }
}

/// `courier-{host}-{pid}-{random}`: unique even when a container restarts with the same pid.
pub fn default_worker_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let suffix = ulid::Ulid::new().to_string();
    format!(
        "courier-{host}-{}-{}",
        std::process::id(),
        &suffix[suffix.len() - 6..]
    )
}

/// The deliveries a worker process has under way, each on a task of its own, counted until
/// it ends: an apalis worker that fails drops its handlers, not the deliveries they await.
#[derive(Debug, Clone)]
struct UnderWay(Arc<watch::Sender<usize>>);

impl UnderWay {
    fn new() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }

    /// Runs `work` on a task of its own, counted while it runs.
    fn spawn<F>(&self, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.send_modify(|n| *n += 1);
        let ended = Ended(Arc::clone(&self.0));
        tokio::spawn(async move {
            let _ended = ended;
            work.await
        })
    }

    fn count(&self) -> usize {
        *self.0.borrow()
    }

    /// Returns once nothing is under way.
    async fn ended(&self) {
        let mut count = self.0.subscribe();
        let _ = count.wait_for(|n| *n == 0).await;
    }
}

/// Uncounts one delivery when its task ends, however it ends.
struct Ended(Arc<watch::Sender<usize>>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

async fn handle(
    task: RawTask,
    deliverer: Data<Arc<Deliverer>>,
    under_way: Data<UnderWay>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    let delivering = Arc::clone(&deliverer);
    let run = under_way.spawn(async move { delivering.handle(&task.0).await });
    // A panic is the task's error: apalis runs it again.
    match run.await? {
        Ok(_) => Ok(()),
        // Courier's own storage failed and not even its retry could be written (Redis
        // read-only or gone): hand the task back to the queue, after the policy's delay for
        // the how-many-th time this happens to it, so that apalis-redis's own schedule
        // (+1 s, +2 s, … for 25 runs) stretches over Courier's. Should apalis give up
        // anyway, the janitor moves the task into Courier's dead letters.
        Err(e) => {
            let wait = deliverer
                .retry
                .cap(u32::try_from(attempt.current()).unwrap_or(u32::MAX));
            tracing::warn!(error = %e, ?wait, runs = attempt.current(), "Courier's storage failed and nothing could be written; handing the task back to the queue");
            tokio::time::sleep(wait).await;
            Err(Box::new(e))
        }
    }
}

/// How long the supervisor waits before the first restart of a failed apalis worker; each
/// failure in a row doubles it, up to [`MAX_RESTART_DELAY`].
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(250);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(10);
/// An apalis worker that ran this long before failing ends the run of failures: the next
/// restart waits [`FIRST_RESTART_DELAY`] again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Runs until `shutdown` is cancelled, then drains in-flight deliveries. Beside the
/// queue, the batch windows' [`Closer`] runs; at shutdown it finishes the window it is
/// closing (if any) and stops.
pub async fn run(
    conn: RedisConn,
    keys: &Keys,
    settings: WorkerSettings,
    deliverer: Arc<Deliverer>,
    shutdown: CancellationToken,
) {
    let closer = Arc::new(Closer {
        batches: deliverer.stores.records.batches(),
        deliverer: Arc::clone(&deliverer),
        settings: settings.closer,
    });
    let mut closing = tokio::spawn(closer.run(shutdown.clone()));
    let drain = settings.drain_timeout;
    // At shutdown the closer finishes the window it is closing, within the same drain
    // timeout as the queue's in-flight deliveries (both drain at once); past it the closer
    // is stopped, and the window's claim lapses for another worker to redo it.
    let stop = shutdown.clone();
    let drain_closer = async move {
        stop.cancelled().await;
        if tokio::time::timeout(drain, &mut closing).await.is_err() {
            closing.abort();
            tracing::warn!(
                "the batch closer was stopped midway; its window's claim lapses and another worker redoes it"
            );
        }
    };
    tokio::join!(
        run_queue(conn, keys, settings, deliverer, shutdown),
        drain_closer
    );
}

/// The apalis worker and its supervisor.
async fn run_queue(
    conn: RedisConn,
    keys: &Keys,
    settings: WorkerSettings,
    deliverer: Arc<Deliverer>,
    shutdown: CancellationToken,
) {
    let under_way = UnderWay::new();
    let mut generation = 0u32;
    let mut backoff = FIRST_RESTART_DELAY;
    loop {
        generation += 1;
        // apalis refuses a name that was alive moments ago, so each restart gets its own.
        let name = if generation == 1 {
            settings.name.clone()
        } else {
            format!("{}-r{generation}", settings.name)
        };
        // A backlog of due tasks apalis's fetch cannot promote in one go would fail every
        // fetch (and so every restart) until promoted in steps.
        promote_due(&conn, &deliverer, &name).await;
        let config = queue_config(keys, settings.liveness, settings.concurrency);
        let mut strategy = Strategy::new().interval(settings.poll_interval);
        if let Some(wake) = &settings.wake {
            strategy = strategy.stream(wake.clone());
        }
        let storage = RedisStorage::<RawTask, RedisConn>::new(conn.clone())
            .with_config(config)
            .with_codec(Verbatim)
            .poll_with_strategy(strategy);
        let worker = WorkerBuilder::new(name.clone())
            .backend(storage)
            .data(Arc::clone(&deliverer))
            .data(under_way.clone())
            .concurrency(settings.concurrency)
            .build(handle);
        let stop = shutdown.clone();
        tracing::info!(worker = %name, concurrency = settings.concurrency, "worker started");
        let signal = async move {
            stop.cancelled().await;
            Ok::<(), std::io::Error>(())
        };
        let beat = tokio::spawn(keep_alive(
            conn.clone(),
            Arc::clone(&deliverer),
            name.clone(),
            settings.liveness.heartbeat,
        ));
        let _stop_beating = AbortOnDrop(beat);
        let run = worker.run_until(signal);
        let started = std::time::Instant::now();
        let result = tokio::select! {
            r = run => r,
            () = async {
                shutdown.cancelled().await;
                tokio::time::sleep(settings.drain_timeout).await;
            } => {
                // Whatever did not finish goes back to the queue now, not after the
                // heartbeat expires.
                let handed = hand_back(&conn, &deliverer, &name).await;
                tracing::warn!(worker = %name, handed_back = handed, "drain timeout reached; unfinished tasks handed back");
                return;
            }
        };
        if shutdown.is_cancelled() {
            // Leave the live set at once (and hand back anything apalis left behind).
            hand_back(&conn, &deliverer, &name).await;
            tracing::info!(worker = %name, "worker stopped");
            return;
        }
        match result {
            Ok(()) => tracing::warn!(worker = %name, "worker ended unexpectedly; restarting"),
            Err(e) => tracing::error!(worker = %name, error = %e, "worker failed; restarting"),
        }
        // A worker that ran well for a while failed for a new reason: restart it soon again,
        // not after the longest wait an earlier outage reached.
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_RESTART_DELAY;
        }
        // Its deliveries go on: wait until each has written its outcome (or Courier's
        // retry), within the drain timeout once shutdown is asked for.
        let left = under_way.count();
        if left > 0 {
            tracing::warn!(worker = %name, deliveries = left, "waiting for the deliveries under way before restarting");
            tokio::select! {
                () = under_way.ended() => {}
                () = async {
                    shutdown.cancelled().await;
                    tokio::time::sleep(settings.drain_timeout).await;
                } => {}
            }
        }
        // Best effort: if Redis is back, the old name's tasks need not wait for expiry.
        hand_back(&conn, &deliverer, &name).await;
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_RESTART_DELAY);
    }
}

/// Hands `name`'s in-flight tasks back to the queue; 0 if Redis cannot be reached (they
/// then move when the name's heartbeat expires).
async fn hand_back(conn: &RedisConn, deliverer: &Deliverer, name: &str) -> u64 {
    let mut conn = conn.clone();
    match deliverer.stores.queue.hand_back(&mut conn, name).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(worker = %name, error = %e, "could not hand back in-flight tasks");
            0
        }
    }
}

/// Moves the tasks due now to the active list in bounded steps
/// ([`courier_store::DeliveryQueue::promote_due`]); a failure is left to the next beat.
async fn promote_due(conn: &RedisConn, deliverer: &Deliverer, name: &str) {
    let mut conn = conn.clone();
    match deliverer.stores.queue.promote_due(&mut conn).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(worker = %name, promoted = n, "due tasks moved to the queue"),
        Err(e) => tracing::debug!(worker = %name, error = %e, "could not promote due tasks"),
    }
}

/// Beats for `name` every `every` until aborted, and keeps the backlog of due tasks small.
async fn keep_alive(conn: RedisConn, deliverer: Arc<Deliverer>, name: String, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let mut c = conn.clone();
        if let Err(e) = deliverer.stores.queue.keep_alive(&mut c, &name).await {
            tracing::debug!(worker = %name, error = %e, "heartbeat failed");
        }
        promote_due(&conn, &deliverer, &name).await;
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;

    /// What a failed apalis worker does to its handlers, dropping them mid-await, leaves
    /// the delivery running to its end; the supervisor can wait for it.
    #[tokio::test]
    async fn a_dropped_handler_leaves_its_delivery_running_to_its_end() {
        let under_way = UnderWay::new();
        let (go, gate) = oneshot::channel::<()>();
        let (done, finished) = oneshot::channel::<&str>();
        let handler = {
            let under_way = under_way.clone();
            tokio::spawn(async move {
                under_way
                    .spawn(async move {
                        let _ = gate.await;
                        let _ = done.send("outcome written");
                    })
                    .await
            })
        };
        // The handler is awaiting its delivery: then apalis drops it.
        let mut count = under_way.0.subscribe();
        count.wait_for(|n| *n == 1).await.unwrap();
        handler.abort();
        assert!(handler.await.unwrap_err().is_cancelled());
        assert_eq!(under_way.count(), 1, "still under way");
        go.send(()).unwrap();
        under_way.ended().await;
        assert_eq!(finished.await, Ok("outcome written"));
        assert_eq!(under_way.count(), 0);
    }
}
