//! Row 7: Courier against the alternative a user would pick, on the same Garage in the same
//! run: a Celery worker on Redis (prefork) that renders with Python's csv module and uploads
//! with boto3 (`crates/bench/peer/peer.py`, run from the tools venv). Both drain the same
//! pre-filled queue of small deliveries, each on a fresh Redis with the same settings, timed
//! from "every worker ready" to the last upload; CPU per delivery counts the workers and
//! Redis, as in row 2. The last line gives Courier's figures as ratios to the peer's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use courier_test_support::RedisServer;

use crate::cluster::{BUCKET, Services};
use crate::table::{Line, int, rate};
use crate::{cpu, small};

/// Courier must be at least this many times the peer's rate…
const RATE_TARGET: f64 = 3.0;
/// …at no more than this share of its CPU per delivery.
const CPU_TARGET: f64 = 1.0 / 6.0;
/// How long the done count may stand still before the peer's run is given up.
const STALL: Duration = Duration::from_secs(60);

pub struct Params {
    pub deliveries: usize,
    pub rows: usize,
    pub processes: usize,
    pub courier_workers: usize,
    pub enqueuers: usize,
    pub python: PathBuf,
}

/// Where `peer.py` and `xlsx_peer.py` are.
pub fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peer")
}

/// A rate and CPU per delivery (workers + Redis, seconds).
struct Figures {
    per_sec: f64,
    cpu: f64,
}

pub async fn run(services: &Services, p: &Params) -> Vec<Line> {
    let n = int(p.deliveries as u64);
    let rows = int(p.rows as u64);
    let w = p.courier_workers;
    let mut lines = Vec::new();

    let name = format!(
        "Courier, {w} worker{}, default settings",
        if w == 1 { "" } else { "s" }
    );
    eprintln!("bench: {name} (against the peer)");
    let params = small::Params {
        worker_env: vec![("COURIER_WORKER_CONCURRENCY", String::new())],
        label: "-peer".into(),
        ..small::Params::new(p.rows, p.deliveries, w, p.enqueuers)
    };
    let line = Line::new("7", name).setup(format!(
        "{n} × {rows}-row CSV to one destination, queue pre-filled, the worker's default \
         settings; workers ready → last delivered"
    ));
    let courier = match small::run(services, small::Feed::Drain, &params).await {
        Ok(run) => {
            lines.push(
                line.result(format!(
                    "**{} deliveries/s** ({} in {:.2} s)",
                    rate(run.per_sec()),
                    int(run.deliveries),
                    run.elapsed.as_secs_f64()
                ))
                .detail(format!(
                    "CPU per delivery, workers + Redis: **{:.2} ms** ({}); {:.0} Redis commands \
                     per delivery",
                    run.workers_redis_cpu * 1000.0,
                    run.cpu_per_delivery,
                    run.redis_commands
                )),
            );
            Some(Figures {
                per_sec: run.per_sec(),
                cpu: run.workers_redis_cpu,
            })
        }
        Err(e) => {
            lines.push(Line::failed("7", line.measurement, &format!("{e:#}")));
            None
        }
    };

    let name = format!("Celery + boto3 peer, prefork, {} processes", p.processes);
    eprintln!("bench: {name}");
    let line = Line::new("7", name).setup(format!(
        "the same {n} × {rows}-row CSV through crates/bench/peer/peer.py: Celery on its own \
         fresh Redis, late acknowledgement, csv module, boto3 put_object; worker ready → last \
         uploaded"
    ));
    let peer = match peer_run(services, p).await {
        Ok(run) => {
            lines.push(
                line.result(format!(
                    "**{} deliveries/s** ({} in {:.2} s)",
                    rate(run.per_sec()),
                    int(run.deliveries),
                    run.elapsed.as_secs_f64()
                ))
                .detail(format!(
                    "CPU per delivery, workers + Redis: **{:.2} ms** ({}); enqueueing them \
                     beforehand took {:.2} s",
                    run.cpu * 1000.0,
                    run.cpu_detail,
                    run.enqueue_elapsed.as_secs_f64()
                )),
            );
            Some(Figures {
                per_sec: run.per_sec(),
                cpu: run.cpu,
            })
        }
        Err(e) => {
            lines.push(Line::failed("7", line.measurement, &format!("{e:#}")));
            None
        }
    };

    if let (Some(c), Some(peer)) = (courier, peer) {
        let speed = c.per_sec / peer.per_sec;
        let cpu = c.cpu / peer.cpu;
        let met = |ok: bool| if ok { "met" } else { "**NOT met**" };
        lines.push(
            Line::new("7", "Courier ÷ peer")
                .setup("the two lines above")
                .result(format!(
                    "**{speed:.2} ×** the peer's rate at **1/{:.1}** of its CPU per delivery",
                    1.0 / cpu
                ))
                .target(format!(
                    "rate ≥ {RATE_TARGET:.0} ×: {}; CPU ≤ 1/{:.0}: {}",
                    met(speed >= RATE_TARGET),
                    1.0 / CPU_TARGET,
                    met(cpu <= CPU_TARGET)
                )),
        );
    }
    lines
}

struct PeerRun {
    deliveries: u64,
    elapsed: Duration,
    enqueue_elapsed: Duration,
    /// CPU seconds per delivery of the Celery processes and Redis.
    cpu: f64,
    cpu_detail: String,
}

impl PeerRun {
    fn per_sec(&self) -> f64 {
        self.deliveries as f64 / self.elapsed.as_secs_f64()
    }
}

/// Kills the Celery main process and its pool when dropped.
struct Celery {
    main: Child,
}

impl Celery {
    fn pool(&self) -> Vec<u32> {
        children(self.main.id())
    }
}

impl Drop for Celery {
    fn drop(&mut self) {
        let pool = self.pool();
        let _ = self.main.kill();
        let _ = self.main.wait();
        if !pool.is_empty() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(pool.iter().map(u32::to_string))
                .stderr(Stdio::null())
                .status();
        }
    }
}

async fn peer_run(services: &Services, p: &Params) -> anyhow::Result<PeerRun> {
    if !p.python.is_file() {
        bail!(
            "{} does not exist: run scripts/ensure-tools.sh --python (or set BENCH_PYTHON)",
            p.python.display()
        );
    }
    let redis_server = RedisServer::start().context("starting Redis")?;
    let mut conn = redis::Client::open(redis_server.url())?
        .get_multiplexed_async_connection()
        .await?;
    if services.redis_appendfsync != "always" {
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("appendfsync")
            .arg(&services.redis_appendfsync)
            .query_async(&mut conn)
            .await
            .context("BENCH_REDIS_APPENDFSYNC")?;
    }
    let prefix = "peer/";
    let key = &services.key;
    let env: Vec<(&str, String)> = vec![
        ("PEER_REDIS_URL", redis_server.url()),
        ("PEER_S3_ENDPOINT", services.garage.endpoint()),
        ("PEER_S3_REGION", services.garage.region().to_owned()),
        ("PEER_S3_ACCESS_KEY_ID", key.id.clone()),
        ("PEER_S3_SECRET_ACCESS_KEY", key.secret.clone()),
        ("PEER_BUCKET", BUCKET.to_owned()),
        ("PEER_PREFIX", prefix.to_owned()),
        ("PEER_DELIVERIES", p.deliveries.to_string()),
        ("PEER_ROWS", p.rows.to_string()),
    ];
    let log_path = services.log_dir.path().join("peer.log");
    let log = std::fs::File::create(&log_path)?;
    let command = |args: &[&str]| -> anyhow::Result<Command> {
        let mut cmd = Command::new(&p.python);
        cmd.args(args)
            .current_dir(peer_dir())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            // No __pycache__ in the clone.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log.try_clone()?));
        Ok(cmd)
    };
    let tail = || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    };

    let t0 = Instant::now();
    let status = command(&["peer.py", "enqueue"])?.status()?;
    if !status.success() {
        bail!("peer.py enqueue failed ({status}):\n{}", tail());
    }
    let enqueue_elapsed = t0.elapsed();

    let processes = p.processes.to_string();
    let mut celery = Celery {
        main: command(&[
            "-m",
            "celery",
            "-A",
            "peer",
            "worker",
            "--pool=prefork",
            "--concurrency",
            &processes,
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-Q",
            "peer",
            "-n",
            "peer@bench",
        ])?
        .spawn()
        .context("starting the Celery worker")?,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready: Option<u64> = redis::cmd("GET")
            .arg("peer:ready")
            .query_async(&mut conn)
            .await?;
        if ready.is_some() {
            break;
        }
        if let Some(status) = celery.main.try_wait()? {
            bail!("the Celery worker exited ({status}):\n{}", tail());
        }
        if Instant::now() > deadline {
            bail!("the Celery worker is not ready after 60 s:\n{}", tail());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let redis_pids: Vec<u32> = cpu::find(
        "redis-server",
        &format!("127.0.0.1:{}", redis_server.port()),
    )
    .into_iter()
    .collect();
    let mut worker_pids = vec![celery.main.id()];
    worker_pids.extend(celery.pool());
    let groups = vec![("Celery", worker_pids), ("Redis", redis_pids)];
    let cpu0 = cpu::Sample::take(&groups);
    let start = Instant::now();
    let before = done(&mut conn).await?;
    let n = p.deliveries as u64;
    let mut last = before;
    let mut last_change = Instant::now();
    let end = loop {
        let now = done(&mut conn).await?;
        if now >= n {
            break Instant::now();
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() > STALL {
            bail!("stalled at {now}/{n} uploaded for {STALL:?}:\n{}", tail());
        }
        if let Some(status) = celery.main.try_wait()? {
            bail!("the Celery worker exited ({status}):\n{}", tail());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cpu1 = cpu::Sample::take(&groups);
    drop(celery);

    let deliveries = n - before;
    let objects = small::count_objects(&services.s3(key), prefix).await?;
    if objects != p.deliveries {
        bail!(
            "{objects} objects under {prefix}, expected {}",
            p.deliveries
        );
    }
    Ok(PeerRun {
        deliveries,
        elapsed: end - start,
        enqueue_elapsed,
        cpu: cpu0.total(&cpu1) / deliveries.max(1) as f64,
        cpu_detail: cpu0.per_unit(&cpu1, deliveries),
    })
}

async fn done(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let n: Option<u64> = redis::cmd("GET").arg("peer:done").query_async(conn).await?;
    Ok(n.unwrap_or(0))
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| {
                    let after = &s[s.rfind(')')? + 2..];
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}
