//! `courier worker`: one process of the delivery fleet.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use courier_s3::{ClientCache, S3Timeouts};
use courier_store::queue::Liveness;
use courier_store::{
    Concurrency, DeadLetters, DeliveryQueue, DestinationStore, HealthStore, HeldDeliveries,
    Janitor, KeyGuard, RecordStore, StatsReader, UploadSlots,
};
use courier_worker::bounded::RowLimits;
use courier_worker::decide::Bounds;
use courier_worker::janitor::HeldExpiry;
use courier_worker::ports::{RedisStores, S3Upload};
use courier_worker::slot_gate::{self, SlotGate};
use courier_worker::source::{HttpRows, Staging};
use courier_worker::streams::StreamedDeliveries;
use courier_worker::{Deliverer, RetryPolicy, WorkerSettings};

use crate::common::{BoundaryArgs, RedisArgs, SecretArgs, StagingArgs, shutdown_token};

/// Destinations whose S3 client a worker keeps between deliveries.
const CLIENT_CACHE_SIZE: std::num::NonZeroUsize = std::num::NonZeroUsize::new(1024).unwrap();
use crate::observe;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of this worker's metrics and health listener.
    #[arg(long, env = "COURIER_METRICS_LISTEN", default_value = "127.0.0.1:9000")]
    metrics_listen: SocketAddr,
    /// Unique name of this worker in the fleet (default: host, pid and a random suffix).
    #[arg(long, env = "COURIER_WORKER_NAME")]
    name: Option<String>,
    /// Deliveries handled at the same time. Small deliveries mostly wait on the store's
    /// round trip, so this is what bounds one worker's rate against a distant store
    /// (deliveries in flight ÷ round trip); deliveries of rows by reference, which hold
    /// far more memory, are bounded apart by COURIER_MAX_STREAMED_DELIVERIES.
    #[arg(long, env = "COURIER_WORKER_CONCURRENCY", default_value_t = 64)]
    concurrency: usize,
    /// Deliveries of rows by reference (`rowsUrl`) handled at the same time, within the
    /// concurrency: each holds about three multipart parts and the row reader's buffers
    /// (some 25–40 MiB) while it runs; the others wait for a turn.
    #[arg(
        long,
        env = "COURIER_MAX_STREAMED_DELIVERIES",
        default_value_t = courier_worker::streams::DEFAULT_MAX_STREAMED_DELIVERIES
    )]
    max_streamed_deliveries: usize,
    /// How often an idle worker polls for tasks, in milliseconds. Besides polling, an idle
    /// worker is woken when a task is enqueued (Redis pub/sub), so this bounds how late a
    /// task is taken only when that announcement is missed, and for retries come due.
    #[arg(long, env = "COURIER_POLL_INTERVAL_MS", default_value_t = 100)]
    poll_interval_ms: u64,
    /// Seconds between heartbeats.
    #[arg(long, env = "COURIER_HEARTBEAT_SECS", default_value_t = 5)]
    heartbeat_secs: u64,
    /// Heartbeats a worker may miss before its in-flight tasks go to other workers.
    #[arg(long, env = "COURIER_MISSED_HEARTBEATS", default_value_t = 6)]
    missed_heartbeats: usize,
    /// Seconds shutdown waits for in-flight deliveries to finish.
    #[arg(long, env = "COURIER_DRAIN_TIMEOUT_SECS", default_value_t = 25)]
    drain_timeout_secs: u64,
    /// Multipart part size in MiB (at least 5); results smaller than one part are uploaded
    /// with a single PutObject. A worker holds about three parts per upload in memory.
    #[arg(long, env = "COURIER_PART_SIZE_MB", default_value_t = 8)]
    part_size_mb: usize,
    /// The most uploads to one destination at once across the whole fleet. Each
    /// destination's limit adapts between the lowest and this (it grows while uploads stay
    /// fast and error-free, halves on throttling, 5xx and timeouts, and drops a tenth when
    /// uploads slow down), so a destination whose endpoint hangs holds few workers' slots.
    #[arg(
        long,
        env = "COURIER_MAX_UPLOADS_PER_DESTINATION",
        default_value_t = 64
    )]
    max_uploads_per_destination: u32,
    /// The limit a destination starts with, before its uploads taught anything.
    #[arg(
        long,
        env = "COURIER_INITIAL_UPLOADS_PER_DESTINATION",
        default_value_t = 4
    )]
    initial_uploads_per_destination: u32,
    /// The lowest limit, however a destination answers; set it equal to the most for a
    /// fixed limit.
    #[arg(long, env = "COURIER_MIN_UPLOADS_PER_DESTINATION", default_value_t = 1)]
    min_uploads_per_destination: u32,
    #[command(flatten)]
    staging: StagingArgs,
    /// Longest line of rows by reference (`rowsUrl`), in bytes: a longer one fails the
    /// delivery (`RowTooLong`) as soon as the limit is read.
    #[arg(long, env = "COURIER_MAX_ROW_BYTES", default_value_t = 1024 * 1024)]
    max_row_bytes: usize,
    /// Most bytes of rows by reference one delivery reads, counted after decompression:
    /// more fail the delivery (`RowsTooLarge`) as soon as the limit is read.
    #[arg(long, env = "COURIER_MAX_ROWS_BYTES", default_value_t = 10 * 1024 * 1024 * 1024)]
    max_rows_bytes: u64,
    /// Seconds one fetch of rows by reference may take in all, from the request to the
    /// last byte; a longer one fails the delivery (`RowsFetchTimeout`).
    #[arg(long, env = "COURIER_ROWS_FETCH_TIMEOUT_SECS", default_value_t = 1_800)]
    rows_fetch_timeout_secs: u64,
    /// Tries per delivery for transient failures, the first included.
    #[arg(long, env = "COURIER_RETRY_MAX_ATTEMPTS", default_value_t = 12)]
    retry_max_attempts: u32,
    /// Cap of the first retry's delay, in milliseconds; each later cap doubles, and the
    /// delay is drawn uniformly below the cap (full jitter). Retries run in whole seconds.
    #[arg(long, env = "COURIER_RETRY_MIN_DELAY_MS", default_value_t = 1_000)]
    retry_min_delay_ms: u64,
    /// Largest cap of a retry delay, in milliseconds.
    #[arg(long, env = "COURIER_RETRY_MAX_DELAY_MS", default_value_t = 60_000)]
    retry_max_delay_ms: u64,
    /// No retry is scheduled later than this many seconds after the first attempt.
    #[arg(long, env = "COURIER_RETRY_MAX_ELAPSED_SECS", default_value_t = 1_800)]
    retry_max_elapsed_secs: u64,
    /// Permanent failures in a row after which a destination is marked failing and its
    /// deliveries are held until it is updated or its connection test passes.
    #[arg(long, env = "COURIER_FAILING_THRESHOLD", default_value_t = 3)]
    failing_threshold: u32,
    /// Seconds that finished records and dead letters are kept (key markers are kept
    /// longer: see COURIER_HELD_MAX_AGE_SECS).
    #[arg(long, env = "COURIER_RETENTION_SECS", default_value_t = 7 * 24 * 3600)]
    retention_secs: u64,
    /// Seconds after its enqueue that a delivery may wait while its destination is paused
    /// or failing; then it becomes a dead letter (`HeldTooLong`). A key's marker is kept
    /// for this plus the retention, twice the retry span and a day, and a delivery older
    /// than all but that day is not uploaded (`DeliveryExpired`).
    #[arg(long, env = "COURIER_HELD_MAX_AGE_SECS", default_value_t = 30 * 24 * 3600)]
    held_max_age_secs: u64,
    /// Seconds a worker's claim on a batch window lasts unless renewed (every third of it,
    /// while the window is uploaded): how long a window of a worker that died waits before
    /// another worker redoes it.
    #[arg(long, env = "COURIER_BATCH_CLAIM_TTL_SECS", default_value_t = 30)]
    batch_claim_ttl_secs: u64,
    /// Seconds between sweeps that drop finished task data and expired history.
    #[arg(long, env = "COURIER_JANITOR_INTERVAL_SECS", default_value_t = 30)]
    janitor_interval_secs: u64,
    /// Seconds to wait for a customer's endpoint to accept a connection.
    #[arg(long, env = "COURIER_S3_CONNECT_TIMEOUT_SECS", default_value_t = 10)]
    s3_connect_timeout_secs: u64,
    /// Seconds one request to a customer's store may take, upload included.
    #[arg(long, env = "COURIER_S3_OPERATION_TIMEOUT_SECS", default_value_t = 300)]
    s3_operation_timeout_secs: u64,
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    egress: BoundaryArgs,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    observe::init_logging();
    let metrics = observe::install_metrics()?;
    courier_worker::telemetry::register();
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let conn = args.redis.connect().await?;
    let keys = args.redis.keys();
    let cipher = args.secret.check_opens(&conn, &keys).await?;
    let mut settings = WorkerSettings {
        concurrency: args.concurrency,
        poll_interval: Duration::from_millis(args.poll_interval_ms),
        liveness: Liveness {
            heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
            missed_heartbeats: args.missed_heartbeats.max(1),
        },
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        closer: courier_worker::batch::CloserSettings {
            claim_ttl: Duration::from_secs(args.batch_claim_ttl_secs.max(3)),
            ..Default::default()
        },
        ..WorkerSettings::default()
    };
    if let Some(name) = args.name.clone() {
        settings.name = name;
    }
    let queue = DeliveryQueue::new(conn.clone(), &keys);
    let egress = args.egress.policy()?;
    let timeouts = S3Timeouts {
        connect: Duration::from_secs(args.s3_connect_timeout_secs.max(1)),
        operation: Duration::from_secs(args.s3_operation_timeout_secs.max(1)),
    };
    let retention = Duration::from_secs(args.retention_secs.max(1));
    let retry = RetryPolicy {
        max_attempts: args.retry_max_attempts.max(1),
        min_delay: Duration::from_millis(args.retry_min_delay_ms.max(1)),
        max_delay: Duration::from_millis(args.retry_max_delay_ms.max(1)),
        max_elapsed: Duration::from_secs(args.retry_max_elapsed_secs),
    };
    let bounds = Bounds::new(
        Duration::from_secs(args.held_max_age_secs.max(1)),
        retry.max_elapsed,
        retention,
    );
    let records = RecordStore::new(conn.clone(), keys.clone()).with_retention(retention);
    let held = HeldDeliveries::new(conn.clone(), keys.clone(), queue.clone());
    let dead =
        DeadLetters::new(conn.clone(), keys.clone(), queue.clone()).with_retention(retention);
    let held_expiry = HeldExpiry {
        held: held.clone(),
        dead: dead.clone(),
        records: records.clone(),
        max_age: bounds.held_max_age,
    };
    let deliverer = Arc::new(Deliverer {
        stores: RedisStores {
            destinations: DestinationStore::new(conn.clone(), keys.clone(), Some(cipher)),
            records,
            held,
            dead,
            health: HealthStore::new(conn.clone(), keys.clone()),
            keys: KeyGuard::new(conn.clone(), keys.clone(), bounds.marker_ttl()),
            queue,
            slots: Arc::new(SlotGate::new(
                UploadSlots::new(
                    conn.clone(),
                    keys.clone(),
                    Concurrency {
                        initial: args.initial_uploads_per_destination,
                        min: args.min_uploads_per_destination.max(1),
                        max: args
                            .max_uploads_per_destination
                            .max(args.min_uploads_per_destination)
                            .max(1),
                    },
                    timeouts.operation * 2,
                ),
                slot_gate::DEFAULT_MAX_WAIT,
            )),
        },
        uploader: S3Upload {
            clients: Arc::new(ClientCache::new(
                CLIENT_CACHE_SIZE,
                timeouts,
                egress.clone(),
            )),
            staging: match &args.staging.staging_bucket {
                Some(bucket) => Staging {
                    client: Some(args.staging.client(timeouts).await),
                    bucket: Some(bucket.clone()),
                },
                None => Staging::default(),
            },
            default_chain_tenants: args.egress.default_chain_tenants()?,
            http: HttpRows {
                egress: egress.clone(),
                connect_timeout: timeouts.connect,
                read_timeout: timeouts.operation,
            },
            part_size: (args.part_size_mb.max(5)) * 1024 * 1024,
            row_limits: RowLimits {
                max_row_bytes: args.max_row_bytes.max(1),
                max_rows_bytes: args.max_rows_bytes.max(1),
                fetch_timeout: Duration::from_secs(args.rows_fetch_timeout_secs.max(1)),
            },
            streams: StreamedDeliveries::new(args.max_streamed_deliveries),
        },
        failing_threshold: args.failing_threshold.max(1),
        worker_name: settings.name.clone(),
        retry,
        bounds,
    });

    let listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("binding the metrics listener to {}", args.metrics_listen))?;
    tracing::info!(listen = %listener.local_addr()?, worker = %settings.name, "metrics listening");
    let shutdown = shutdown_token();
    let wake = courier_worker::wake::Wake::default();
    tokio::spawn(courier_worker::wake::listen(
        args.redis.target()?,
        keys.queue_wake_channel(),
        wake.clone(),
        shutdown.clone(),
    ));
    settings.wake = Some(wake);
    let metrics_shutdown = shutdown.clone();
    observe::spawn_queue_stats(
        StatsReader::new(conn.clone(), keys.clone(), settings.liveness),
        Duration::from_secs(2),
    );
    let routes = observe::metrics_routes(metrics, conn.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, routes)
            .with_graceful_shutdown(async move { metrics_shutdown.cancelled().await })
            .await
    });
    let janitor = tokio::spawn(courier_worker::janitor::run(
        Janitor::new(conn.clone(), keys.clone(), retention),
        held_expiry,
        Duration::from_secs(args.janitor_interval_secs.max(1)),
        shutdown.clone(),
    ));
    courier_worker::run(conn, &keys, settings, deliverer, shutdown).await;
    janitor.await?;
    server.await??;
    Ok(())
}
