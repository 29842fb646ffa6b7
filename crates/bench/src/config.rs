//! The bench's sizes, each overridable with an environment variable so that a quick run is
//! possible (`BENCH_SMALL_DELIVERIES=50 BENCH_BIG_ROWS=20000 make bench`). The defaults are
//! the sizes the figures in `docs/benchmarks.md` are quoted for.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use courier_core::Format;

/// What one run measures, and how big.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `courier` binary the API and workers run (`BENCH_COURIER_BIN`, default: next to
    /// this binary, i.e. `target/release/courier`).
    pub courier_bin: PathBuf,
    /// Rows of one small result (`BENCH_SMALL_ROWS`, 1,000).
    pub small_rows: usize,
    /// Small deliveries per end-to-end run (`BENCH_SMALL_DELIVERIES`, 2,000: a run of 500
    /// took under a second, too short to compare two runs within 10 %).
    pub small_deliveries: usize,
    /// Worker processes of each end-to-end run (`BENCH_WORKERS`, `1,2,4`).
    pub worker_counts: Vec<usize>,
    /// Deliveries each worker handles at once, `COURIER_WORKER_CONCURRENCY`
    /// (`BENCH_WORKER_CONCURRENCY`, 8, the worker's default until issue 17, now 64). The
    /// PutObject ceiling is measured with the same number of requests in flight as each
    /// end-to-end run has in total.
    pub worker_concurrency: usize,
    /// Concurrent `POST /deliveries` while the end-to-end runs enqueue (`BENCH_SMALL_ENQUEUERS`, 8).
    pub small_enqueuers: usize,
    /// How long each PutObject ceiling is measured (`BENCH_CEILING_SECS`, 10).
    pub ceiling_time: Duration,
    /// Rows each renderer writes (`BENCH_RENDER_ROWS`, 200,000).
    pub render_rows: usize,
    /// Rows of the big result delivered by reference (`BENCH_BIG_ROWS`, 1,000,000).
    pub big_rows: usize,
    /// Formats of the big deliveries (`BENCH_BIG_FORMATS`, `CSV,JSON,NDJSON,XLSX,PARQUET`).
    pub big_formats: Vec<Format>,
    /// Longest a big delivery may take before it is reported as timed out
    /// (`BENCH_BIG_TIMEOUT_SECS`, 300).
    pub big_timeout: Duration,
    /// Deliveries of the enqueue-rate run, also the waiting deliveries Redis memory is
    /// measured with (`BENCH_ENQUEUE_DELIVERIES`, 5,000).
    pub enqueue_deliveries: usize,
    /// Rows of each of them (`BENCH_ENQUEUE_ROWS`, 10).
    pub enqueue_rows: usize,
    /// Concurrent `POST /deliveries` of the enqueue-rate run (`BENCH_ENQUEUE_CONCURRENCY`, 16).
    pub enqueue_concurrency: usize,
    /// Deliveries appended to the batched destination of row 8 (`BENCH_BATCH_DELIVERIES`,
    /// 10,000).
    pub batch_deliveries: usize,
    /// Rows of each of them (`BENCH_BATCH_ROWS`, 100): 1,000,000 rows in the window.
    pub batch_rows: usize,
    /// Concurrent appends (`BENCH_BATCH_CONCURRENCY`, 16).
    pub batch_concurrency: usize,
    /// Extra environment of every worker, `K=V` pairs separated by spaces
    /// (`BENCH_WORKER_ENV`, none), e.g. `COURIER_MAX_UPLOADS_PER_DESTINATION=64`.
    pub worker_env: Vec<(String, String)>,
    /// Redis's `appendfsync` for the runs (`BENCH_REDIS_APPENDFSYNC`, `always`, as in
    /// `deploy/redis.conf`); `everysec` or `no` show what the per-write fsync costs.
    pub redis_appendfsync: String,
    /// Small deliveries of each run against the store behind the latency proxy
    /// (`BENCH_REMOTE_DELIVERIES`, 2,000).
    pub remote_deliveries: usize,
    /// Round-trip time the latency proxy adds, half each way (`BENCH_REMOTE_RTT_MS`, 50).
    pub remote_rtt: Duration,
    /// `COURIER_WORKER_CONCURRENCY` values of the remote runs after the one with the
    /// worker's defaults (`BENCH_REMOTE_CONCURRENCY`, `8,32,64`).
    pub remote_concurrency: Vec<usize>,
    /// Small deliveries the Celery peer and Courier each drain (`BENCH_PEER_DELIVERIES`, 2,000).
    pub peer_deliveries: usize,
    /// Rows of each of them (`BENCH_PEER_ROWS`, 1,000).
    pub peer_rows: usize,
    /// Prefork processes of the Celery worker (`BENCH_PEER_PROCESSES`, 4).
    pub peer_processes: usize,
    /// Courier workers the peer is compared with (`BENCH_PEER_COURIER_WORKERS`, 2).
    pub peer_courier_workers: usize,
    /// Rows xlsxwriter and Courier's XLSX renderer each write (`BENCH_XLSX_PEER_ROWS`, 100,000).
    pub xlsx_peer_rows: usize,
    /// The Python with Celery, boto3 and xlsxwriter (`BENCH_PYTHON`, default
    /// `$COURIER_TOOLS/venv/bin/python`, made by `scripts/ensure-tools.sh --python`).
    pub python: PathBuf,
    /// Sections to run (`BENCH_ONLY`, comma-separated from
    /// `ceiling,e2e,render,big,enqueue,remote,peer,batch`; all by default). The end-to-end
    /// percentages need the ceiling.
    pub sections: BTreeSet<Section>,
}

/// One part of the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Ceiling,
    EndToEnd,
    Render,
    Big,
    Enqueue,
    Remote,
    Peer,
    Batch,
}

impl Section {
    const ALL: [(Section, &'static str); 8] = [
        (Section::Ceiling, "ceiling"),
        (Section::EndToEnd, "e2e"),
        (Section::Render, "render"),
        (Section::Big, "big"),
        (Section::Enqueue, "enqueue"),
        (Section::Remote, "remote"),
        (Section::Peer, "peer"),
        (Section::Batch, "batch"),
    ];
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Self> {
        let courier_bin = match var("BENCH_COURIER_BIN") {
            Some(bin) => PathBuf::from(bin),
            None => std::env::current_exe()
                .context("cannot find this binary's path")?
                .with_file_name("courier"),
        };
        if !courier_bin.is_file() {
            bail!(
                "{} does not exist: build it with `cargo build --release -p courier` \
                 (or set BENCH_COURIER_BIN)",
                courier_bin.display()
            );
        }
        Ok(Settings {
            courier_bin,
            small_rows: number("BENCH_SMALL_ROWS", 1_000)?,
            small_deliveries: number("BENCH_SMALL_DELIVERIES", 2000)?,
            worker_counts: list("BENCH_WORKERS", "1,2,4", |s| {
                s.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .context("a worker count is a positive number")
            })?,
            worker_concurrency: number("BENCH_WORKER_CONCURRENCY", 8)?,
            small_enqueuers: number("BENCH_SMALL_ENQUEUERS", 8)?,
            ceiling_time: Duration::from_secs(number("BENCH_CEILING_SECS", 10)? as u64),
            render_rows: number("BENCH_RENDER_ROWS", 200_000)?,
            big_rows: number("BENCH_BIG_ROWS", 1_000_000)?,
            big_formats: list("BENCH_BIG_FORMATS", "CSV,JSON,NDJSON,XLSX,PARQUET", |s| {
                Format::ALL
                    .into_iter()
                    .find(|f| f.extension().eq_ignore_ascii_case(s))
                    .with_context(|| format!("`{s}` is not CSV, JSON, NDJSON, XLSX or PARQUET"))
            })?,
            big_timeout: Duration::from_secs(number("BENCH_BIG_TIMEOUT_SECS", 300)? as u64),
            enqueue_deliveries: number("BENCH_ENQUEUE_DELIVERIES", 5_000)?,
            enqueue_rows: number("BENCH_ENQUEUE_ROWS", 10)?,
            enqueue_concurrency: number("BENCH_ENQUEUE_CONCURRENCY", 16)?,
            batch_deliveries: number("BENCH_BATCH_DELIVERIES", 10_000)?,
            batch_rows: number("BENCH_BATCH_ROWS", 100)?,
            batch_concurrency: number("BENCH_BATCH_CONCURRENCY", 16)?,
            worker_env: var("BENCH_WORKER_ENV")
                .unwrap_or_default()
                .split_whitespace()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .with_context(|| format!("BENCH_WORKER_ENV: `{kv}` is not K=V"))
                })
                .collect::<anyhow::Result<_>>()?,
            redis_appendfsync: var("BENCH_REDIS_APPENDFSYNC").unwrap_or_else(|| "always".into()),
            remote_deliveries: number("BENCH_REMOTE_DELIVERIES", 2_000)?,
            remote_rtt: Duration::from_millis(number("BENCH_REMOTE_RTT_MS", 50)? as u64),
            remote_concurrency: list("BENCH_REMOTE_CONCURRENCY", "8,32,64", |s| {
                s.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .context("a concurrency is a positive number")
            })?,
            peer_deliveries: number("BENCH_PEER_DELIVERIES", 2_000)?,
            peer_rows: number("BENCH_PEER_ROWS", 1_000)?,
            peer_processes: number("BENCH_PEER_PROCESSES", 4)?,
            peer_courier_workers: number("BENCH_PEER_COURIER_WORKERS", 2)?,
            xlsx_peer_rows: number("BENCH_XLSX_PEER_ROWS", 100_000)?,
            python: match var("BENCH_PYTHON") {
                Some(p) => PathBuf::from(p),
                None => courier_test_support::tools_dir().join("venv/bin/python"),
            },
            sections: list(
                "BENCH_ONLY",
                "ceiling,e2e,render,big,enqueue,remote,peer,batch",
                |s| {
                    Section::ALL
                    .into_iter()
                    .find(|(_, name)| name.eq_ignore_ascii_case(s))
                    .map(|(section, _)| section)
                    .with_context(|| {
                        format!(
                            "`{s}` is not one of ceiling, e2e, render, big, enqueue, remote, peer, batch"
                        )
                    })
                },
            )?
            .into_iter()
            .collect(),
        })
    }

    pub fn runs(&self, section: Section) -> bool {
        self.sections.contains(&section)
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A positive number from `name` (underscores allowed: `1_000_000`), or `default`.
fn number(name: &str, default: usize) -> anyhow::Result<usize> {
    let Some(v) = var(name) else {
        return Ok(default);
    };
    v.replace('_', "")
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .with_context(|| format!("{name}={v}: expected a positive number"))
}

fn list<T>(
    name: &str,
    default: &str,
    parse: impl Fn(&str) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    let raw = var(name).unwrap_or_else(|| default.to_owned());
    let items = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| parse(s).with_context(|| format!("{name}={raw}")))
        .collect::<anyhow::Result<Vec<T>>>()?;
    if items.is_empty() {
        bail!("{name} is empty");
    }
    Ok(items)
}
