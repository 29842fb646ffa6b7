//! Row 2: small deliveries end to end, API → Redis → worker processes → Garage, on a fresh
//! Redis per run.
//!
//! Two ways of feeding the workers, each with `workers` processes:
//! - **live**: the workers are up and idle, then the deliveries are enqueued through the API
//!   with bounded concurrency; timed from the first enqueue to the last delivery. The API,
//!   Redis and the workers share the CPU, as they would on one small host.
//! - **drain**: the deliveries are enqueued first, then the workers are started; timed from
//!   the moment every worker is ready to the last delivery. The worker path alone.
//!
//! "Delivered" is read from the workers' `courier_deliveries_total{outcome="delivered"}`,
//! and the objects are counted in the bucket at the end.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use courier_core::{Compression, Format};
use futures::{StreamExt, TryStreamExt};

use crate::api::{Outcomes, outcomes};
use crate::cluster::{BUCKET, Cluster, Services};
use crate::cpu;
use crate::monitor;
use crate::rows::JobBodies;

/// How the queue was fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    Live,
    Drain,
}

impl Feed {
    pub fn name(self) -> &'static str {
        match self {
            Feed::Live => "live",
            Feed::Drain => "drain",
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone)]
pub struct Run {
    /// Deliveries inside the timed window.
    pub deliveries: u64,
    pub elapsed: Duration,
    /// How long enqueueing all of them took (live: while the workers ran).
    pub enqueue_elapsed: Duration,
    /// CPU time per delivery of each process group in the timed window.
    pub cpu_per_delivery: String,
    /// Cores busy on average in the timed window (all processes of the run).
    pub cores_busy: f64,
    /// Commands Redis processed per delivery in the timed window
    /// (`total_commands_processed`: a script's own `redis.call`s and each command of a
    /// `MULTI` block count).
    pub redis_commands: f64,
    /// The window's commands by command, clients' apart from scripts', when watched
    /// ([`Params::monitor`]).
    pub commands: Option<monitor::Counts>,
    /// CPU seconds of the workers and Redis together per delivery (what the peer is
    /// compared on).
    pub workers_redis_cpu: f64,
    /// Cores the workers alone kept busy on average in the timed window.
    pub worker_cores: f64,
    /// Cores the whole machine kept busy on average in the timed window (other processes
    /// included), if `/proc/stat` could be read.
    pub machine_cores: Option<f64>,
}

impl Run {
    pub fn per_sec(&self) -> f64 {
        self.deliveries as f64 / self.elapsed.as_secs_f64()
    }
}

/// How long the delivered count may stand still before the run is given up.
const STALL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Params {
    pub rows: usize,
    pub deliveries: usize,
    pub workers: usize,
    pub enqueuers: usize,
    /// A fixed limit on concurrent uploads per destination (the adaptive limit's lowest,
    /// first and most all set to it); `None` keeps the worker's adaptive default.
    pub upload_cap: Option<usize>,
    /// More worker environment (wins over the above), e.g. `COURIER_WORKER_CONCURRENCY`.
    pub worker_env: Vec<(&'static str, String)>,
    /// The S3 endpoint the destination names; `None` is the Garage itself (a latency proxy
    /// in front of it otherwise).
    pub endpoint: Option<String>,
    /// Added to the run's name, which names its Redis, logs and object prefix.
    pub label: String,
    /// Watch Redis's `MONITOR` stream in the timed window (drain only) to count the
    /// commands clients sent apart from those scripts ran; slows Redis down.
    pub monitor: bool,
}

impl Params {
    /// `n` deliveries of `rows` rows through `workers` workers with the worker's defaults.
    pub fn new(rows: usize, deliveries: usize, workers: usize, enqueuers: usize) -> Self {
        Params {
            rows,
            deliveries,
            workers,
            enqueuers,
            upload_cap: None,
            worker_env: Vec::new(),
            endpoint: None,
            label: String::new(),
            monitor: false,
        }
    }
}

pub async fn run(services: &Services, feed: Feed, p: &Params) -> anyhow::Result<Run> {
    let name = format!(
        "e2e-{}-{}w{}{}",
        feed.name(),
        p.workers,
        if p.upload_cap.is_none() {
            "-default-cap"
        } else {
            ""
        },
        p.label
    );
    let mut cluster = Cluster::start(services, &name).await?;
    let prefix = format!("{name}/");
    let dest = match &p.endpoint {
        None => {
            cluster
                .create_destination(&prefix, Format::Csv, Compression::None)
                .await?
        }
        Some(endpoint) => {
            cluster
                .api
                .create_destination(
                    endpoint,
                    BUCKET,
                    &services.key,
                    &prefix,
                    Format::Csv,
                    Compression::None,
                )
                .await?
        }
    };
    let bodies = JobBodies::new(&dest, p.rows);
    let mut cap_env: Vec<(&str, String)> = p
        .upload_cap
        .into_iter()
        .flat_map(|cap| {
            [
                "COURIER_MIN_UPLOADS_PER_DESTINATION",
                "COURIER_INITIAL_UPLOADS_PER_DESTINATION",
                "COURIER_MAX_UPLOADS_PER_DESTINATION",
            ]
            .map(|name| (name, cap.to_string()))
        })
        .collect();
    cap_env.extend(p.worker_env.iter().cloned());

    let result = match feed {
        Feed::Live => {
            cluster.add_workers_with(p.workers, &cap_env).await?;
            let groups = cluster.cpu_groups();
            let own = own_groups(&groups);
            let own0 = cpu::Sample::take(&own);
            let machine0 = cpu::machine_busy_seconds();
            let cpu0 = cpu::Sample::take(&groups);
            let cmds0 = cluster
                .redis_info("stats", "total_commands_processed")
                .await?;
            let start = Instant::now();
            let (enqueued, delivered) = tokio::join!(
                enqueue_all(&cluster, &bodies, &name, p.deliveries, p.enqueuers),
                wait_delivered(&cluster, p.deliveries as u64)
            );
            let enqueue_elapsed = enqueued?;
            let end = delivered?;
            let cpu1 = cpu::Sample::take(&groups);
            let own1 = cpu::Sample::take(&own);
            let machine1 = cpu::machine_busy_seconds();
            let cmds1 = cluster
                .redis_info("stats", "total_commands_processed")
                .await?;
            let deliveries = p.deliveries as u64;
            Run {
                redis_commands: (cmds1 - cmds0) as f64 / deliveries as f64,
                commands: None,
                deliveries,
                elapsed: end - start,
                enqueue_elapsed,
                cpu_per_delivery: cpu0.per_unit(&cpu1, deliveries),
                cores_busy: cpu0.total(&cpu1) / (end - start).as_secs_f64(),
                workers_redis_cpu: own0.total(&own1) / deliveries.max(1) as f64,
                worker_cores: own0.first(&own1) / (end - start).as_secs_f64(),
                machine_cores: machine0
                    .zip(machine1)
                    .map(|(m0, m1)| (m1 - m0) / (end - start).as_secs_f64()),
            }
        }
        Feed::Drain => {
            let enqueue_elapsed =
                enqueue_all(&cluster, &bodies, &name, p.deliveries, p.enqueuers).await?;
            cluster.add_workers_with(p.workers, &cap_env).await?;
            let groups = cluster.cpu_groups();
            let own = own_groups(&groups);
            let own0 = cpu::Sample::take(&own);
            let machine0 = cpu::machine_busy_seconds();
            let watch = if p.monitor {
                Some(monitor::Monitor::start(cluster.redis.port())?)
            } else {
                None
            };
            let cpu0 = cpu::Sample::take(&groups);
            let cmds0 = cluster
                .redis_info("stats", "total_commands_processed")
                .await?;
            let start = Instant::now();
            let urls: Vec<String> = cluster
                .workers
                .iter()
                .map(|w| w.metrics_url.clone())
                .collect();
            let before = outcomes(&cluster.api, &urls).await?.delivered;
            let end = wait_delivered(&cluster, p.deliveries as u64).await?;
            let cpu1 = cpu::Sample::take(&groups);
            let own1 = cpu::Sample::take(&own);
            let machine1 = cpu::machine_busy_seconds();
            let cmds1 = cluster
                .redis_info("stats", "total_commands_processed")
                .await?;
            let deliveries = p.deliveries as u64 - before;
            Run {
                redis_commands: (cmds1 - cmds0) as f64 / deliveries.max(1) as f64,
                commands: watch.map(monitor::Monitor::stop),
                deliveries,
                elapsed: end - start,
                enqueue_elapsed,
                cpu_per_delivery: cpu0.per_unit(&cpu1, deliveries),
                cores_busy: cpu0.total(&cpu1) / (end - start).as_secs_f64(),
                workers_redis_cpu: own0.total(&own1) / deliveries.max(1) as f64,
                worker_cores: own0.first(&own1) / (end - start).as_secs_f64(),
                machine_cores: machine0
                    .zip(machine1)
                    .map(|(m0, m1)| (m1 - m0) / (end - start).as_secs_f64()),
            }
        }
    };
    cluster.stop_workers();

    let objects = count_objects(&services.s3(&services.key), &prefix).await?;
    if objects != p.deliveries {
        bail!(
            "{} objects under {prefix}, expected {}",
            objects,
            p.deliveries
        );
    }
    Ok(result)
}

/// The workers and Redis of `groups`, the workers first.
fn own_groups(groups: &[(&'static str, Vec<u32>)]) -> Vec<(&'static str, Vec<u32>)> {
    groups
        .iter()
        .filter(|(name, _)| *name == "workers" || *name == "Redis")
        .cloned()
        .collect()
}

/// Enqueues `n` jobs with `concurrency` requests in flight; returns how long it took.
async fn enqueue_all(
    cluster: &Cluster<'_>,
    bodies: &JobBodies,
    tag: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| cluster.api.enqueue(bodies.body(tag, i)))
        .buffer_unordered(concurrency)
        .try_for_each(|_| async { Ok(()) })
        .await
        .context("enqueueing")?;
    Ok(start.elapsed())
}

/// Polls the workers' metrics until `n` deliveries are delivered; returns when they were.
/// A worker that died fails the next scrape.
async fn wait_delivered(cluster: &Cluster<'_>, n: u64) -> anyhow::Result<Instant> {
    let urls: Vec<String> = cluster
        .workers
        .iter()
        .map(|w| w.metrics_url.clone())
        .collect();
    let mut last = Outcomes::default();
    let mut last_change = Instant::now();
    loop {
        let now = outcomes(&cluster.api, &urls).await?;
        if now.delivered >= n {
            return Ok(Instant::now());
        }
        if now.stuck > 0 {
            bail!(
                "{} deliveries were dead-lettered or held (see the worker logs)",
                now.stuck
            );
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() > STALL {
            bail!(
                "stalled at {}/{n} delivered ({} retries) for {STALL:?}",
                now.delivered,
                now.retried
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn count_objects(s3: &aws_sdk_s3::Client, prefix: &str) -> anyhow::Result<usize> {
    let mut pages = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix(prefix)
        .into_paginator()
        .send();
    let mut n = 0;
    while let Some(page) = pages.next().await {
        n += page?.contents().len();
    }
    Ok(n)
}
