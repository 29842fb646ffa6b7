//! Running a worker process: apalis pulls tasks from Redis and calls [`Deliverer`];
//! a supervisor restarts the apalis worker if Redis goes away, and shutdown drains.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{Attempt, BackendExt, BoxDynError, Data, WorkerBuilder, WorkerBuilderExt};
use apalis_redis::RedisStorage;
use courier_store::Keys;
use courier_store::RedisConn;
use courier_store::queue::{Liveness, queue_config};
use tokio_util::sync::CancellationToken;

use crate::batch::{Closer, CloserSettings};
use crate::codec::{RawTask, Verbatim};
use crate::deliver::Deliverer;

/// How one worker process takes work.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Unique across the fleet; apalis tracks in-flight tasks per name.
    pub name: String,
    /// Deliveries handled at the same time.
    pub concurrency: usize,
    /// How often an idle worker looks for new tasks.
    pub poll_interval: Duration,
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

async fn handle(
    task: RawTask,
    deliverer: Data<Arc<Deliverer>>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    match Arc::clone(&deliverer).handle(&task.0).await {
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
        batches: deliverer.records.batches(),
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
    let mut generation = 0u32;
    let mut backoff = Duration::from_millis(250);
    loop {
        generation += 1;
        // apalis refuses a name that was alive moments ago, so each restart gets its own.
        let name = if generation == 1 {
            settings.name.clone()
        } else {
            format!("{}-r{generation}", settings.name)
        };
        let config = queue_config(keys, settings.liveness, settings.concurrency);
        let storage = RedisStorage::<RawTask, RedisConn>::new(conn.clone())
            .with_config(config)
            .with_codec(Verbatim)
            .poll_with_interval(settings.poll_interval);
        let worker = WorkerBuilder::new(name.clone())
            .backend(storage)
            .data(Arc::clone(&deliverer))
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
        // Best effort: if Redis is back, the old name's tasks need not wait for expiry.
        hand_back(&conn, &deliverer, &name).await;
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Hands `name`'s in-flight tasks back to the queue; 0 if Redis cannot be reached (they
/// then move when the name's heartbeat expires).
async fn hand_back(conn: &RedisConn, deliverer: &Deliverer, name: &str) -> u64 {
    let mut conn = conn.clone();
    match deliverer.queue.hand_back(&mut conn, name).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(worker = %name, error = %e, "could not hand back in-flight tasks");
            0
        }
    }
}

/// Beats for `name` every `every` until aborted.
async fn keep_alive(conn: RedisConn, deliverer: Arc<Deliverer>, name: String, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let mut conn = conn.clone();
        if let Err(e) = deliverer.queue.keep_alive(&mut conn, &name).await {
            tracing::debug!(worker = %name, error = %e, "heartbeat failed");
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
