//! The system under test: the shared Garage with its buckets, and per run a fresh Redis, the
//! real `courier api` and any number of real `courier worker` processes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use courier_test_support::{GarageServer, RedisServer, S3Key, free_port};

use crate::api::Api;
use crate::cpu;
use crate::machine::status_kib;

/// The bucket deliveries land in.
pub const BUCKET: &str = "bench";
/// The bucket big results are staged in, read by workers through `COURIER_STAGING_*`.
pub const STAGING_BUCKET: &str = "staging";
/// The API token the bench calls with (tenant `bench`).
const TOKEN: &str = "tok_bench_0123456789abcdef";

/// Garage and what every run shares.
#[derive(Debug)]
pub struct Services {
    pub garage: GarageServer,
    pub key: S3Key,
    pub staging_key: S3Key,
    pub courier_bin: PathBuf,
    /// Environment of every worker on top of what [`Cluster::add_workers`] sets.
    pub worker_env: Vec<(String, String)>,
    /// Redis's `appendfsync` setting for every run.
    pub redis_appendfsync: String,
    /// Logs of every process the bench starts (kept when a run fails).
    pub log_dir: tempfile::TempDir,
}

impl Services {
    pub fn start(
        courier_bin: &Path,
        worker_env: Vec<(String, String)>,
        redis_appendfsync: &str,
    ) -> anyhow::Result<Self> {
        let garage = GarageServer::start().context("starting Garage")?;
        let key = garage.bucket_with_key(BUCKET)?;
        let staging_key = garage.bucket_with_key(STAGING_BUCKET)?;
        Ok(Services {
            garage,
            key,
            staging_key,
            courier_bin: courier_bin.to_owned(),
            worker_env,
            redis_appendfsync: redis_appendfsync.to_owned(),
            log_dir: tempfile::Builder::new()
                .prefix("courier-bench-")
                .tempdir()?,
        })
    }

    /// Stops Garage and hands over the log directory.
    pub fn stop(self) -> tempfile::TempDir {
        self.log_dir
    }

    /// The Garage server process (found by its configuration file), for CPU accounting.
    pub fn garage_pid(&self) -> Vec<u32> {
        let config = self.garage.config_path().to_string_lossy();
        cpu::find("garage", &config).into_iter().collect()
    }

    /// S3 settings like the worker's: no SDK retries, checksums only where required.
    pub fn s3_config(&self, key: &S3Key) -> aws_sdk_s3::Config {
        self.garage
            .s3_config(key)
            .to_builder()
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .build()
    }

    /// A client with [`s3_config`](Self::s3_config).
    pub fn s3(&self, key: &S3Key) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(self.s3_config(key))
    }
}

/// A running `courier` process; killed when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        status_kib(self.pid(), "VmRSS")
    }

    /// The resident-memory high-water mark since the process started, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        status_kib(self.pid(), "VmHWM")
    }

    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!(
                "{} exited ({status}); log tail:\n{}",
                self.log.display(),
                self.log_tail()
            ),
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A worker process and its metrics listener.
#[derive(Debug)]
pub struct Worker {
    pub proc: Proc,
    pub metrics_url: String,
}

/// One run: a fresh Redis, the API, and the workers added to it.
#[derive(Debug)]
pub struct Cluster<'s> {
    services: &'s Services,
    name: String,
    pub redis: RedisServer,
    secret_key: String,
    api_proc: Proc,
    pub api: Api,
    pub workers: Vec<Worker>,
    /// Workers started so far, stopped ones included: each gets a new name and log file
    /// (apalis refuses a name that was alive moments ago).
    spawned: usize,
}

impl<'s> Cluster<'s> {
    /// Starts Redis and the API and waits until the API answers.
    pub async fn start(services: &'s Services, name: &str) -> anyhow::Result<Cluster<'s>> {
        let redis = RedisServer::start().context("starting Redis")?;
        if services.redis_appendfsync != "always" {
            let mut conn = redis::Client::open(redis.url())?
                .get_multiplexed_async_connection()
                .await?;
            let () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("appendfsync")
                .arg(&services.redis_appendfsync)
                .query_async(&mut conn)
                .await
                .context("BENCH_REDIS_APPENDFSYNC")?;
        }
        let secret_key =
            base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        let port = free_port();
        let mut cluster = Cluster {
            services,
            name: name.to_owned(),
            redis,
            secret_key,
            api_proc: placeholder()?,
            api: Api::new(&format!("http://127.0.0.1:{port}"), TOKEN),
            workers: Vec::new(),
            spawned: 0,
        };
        cluster.api_proc = cluster.spawn(
            &format!("{name}-api"),
            "api",
            &[
                ("COURIER_API_LISTEN", format!("127.0.0.1:{port}")),
                ("COURIER_STAGING_BUCKET", STAGING_BUCKET.to_owned()),
            ],
        )?;
        let url = format!("{}/healthz", cluster.api.base());
        wait_ok(&cluster.api, &url, &mut cluster.api_proc).await?;
        Ok(cluster)
    }

    /// Creates a destination writing into the bench bucket [`BUCKET`] of the run's Garage
    /// under `prefix`; returns its id.
    pub async fn create_destination(
        &self,
        prefix: &str,
        format: courier_core::Format,
        compression: courier_core::Compression,
    ) -> anyhow::Result<String> {
        self.api
            .create_destination(
                &self.services.garage.endpoint(),
                BUCKET,
                &self.services.key,
                prefix,
                format,
                compression,
            )
            .await
    }

    /// Starts `n` more workers and waits until each is ready (`/readyz`).
    pub async fn add_workers(&mut self, n: usize) -> anyhow::Result<()> {
        self.add_workers_with(n, &[]).await
    }

    /// Like [`add_workers`](Self::add_workers), with `extra` environment (which wins over
    /// the bench-wide `BENCH_WORKER_ENV`; an empty value unsets a variable).
    pub async fn add_workers_with(
        &mut self,
        n: usize,
        extra: &[(&str, String)],
    ) -> anyhow::Result<()> {
        let first = self.workers.len();
        for _ in 0..n {
            let i = self.spawned;
            self.spawned += 1;
            let port = free_port();
            let s = self.services;
            let mut env = vec![
                ("COURIER_METRICS_LISTEN", format!("127.0.0.1:{port}")),
                (
                    "COURIER_WORKER_NAME",
                    format!("bench-{}-{i}-{}", self.name, std::process::id()),
                ),
                ("COURIER_STAGING_BUCKET", STAGING_BUCKET.to_owned()),
                ("COURIER_STAGING_ENDPOINT", s.garage.endpoint()),
                ("COURIER_STAGING_REGION", s.garage.region().to_owned()),
                ("COURIER_STAGING_ACCESS_KEY_ID", s.staging_key.id.clone()),
                (
                    "COURIER_STAGING_SECRET_ACCESS_KEY",
                    s.staging_key.secret.clone(),
                ),
            ];
            env.extend(s.worker_env.iter().map(|(k, v)| (k.as_str(), v.clone())));
            env.extend(extra.iter().cloned());
            let proc = self.spawn(&format!("{}-worker-{i}", self.name), "worker", &env)?;
            self.workers.push(Worker {
                proc,
                metrics_url: format!("http://127.0.0.1:{port}"),
            });
        }
        for w in &mut self.workers[first..] {
            let url = format!("{}/readyz", w.metrics_url);
            wait_ok(&self.api, &url, &mut w.proc).await?;
        }
        Ok(())
    }

    /// A numeric field of Redis's `INFO <section>` (`used_memory`, `total_commands_processed`).
    pub async fn redis_info(&self, section: &str, field: &str) -> anyhow::Result<u64> {
        let mut conn = redis::Client::open(self.redis.url())?
            .get_multiplexed_async_connection()
            .await?;
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut conn)
            .await?;
        let prefix = format!("{field}:");
        info.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no {field} in INFO {section}"))
    }

    /// The processes of this run by role, for [`cpu::Sample::take`].
    pub fn cpu_groups(&self) -> Vec<(&'static str, Vec<u32>)> {
        let redis = format!("127.0.0.1:{}", self.redis.port());
        vec![
            (
                "workers",
                self.workers.iter().map(|w| w.proc.pid()).collect(),
            ),
            ("API", vec![self.api_proc.pid()]),
            (
                "Redis",
                cpu::find("redis-server", &redis).into_iter().collect(),
            ),
            ("Garage", self.services.garage_pid()),
            ("bench", vec![std::process::id()]),
        ]
    }

    /// Stops (SIGKILL) every worker.
    pub fn stop_workers(&mut self) {
        self.workers.clear();
    }

    /// Fails with the log tail if the API or a worker has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        self.api_proc.check_running()?;
        for w in &mut self.workers {
            w.proc.check_running()?;
        }
        Ok(())
    }

    fn spawn(&self, name: &str, command: &str, env: &[(&str, String)]) -> anyhow::Result<Proc> {
        let log = self.services.log_dir.path().join(format!("{name}.log"));
        let file = File::create(&log)?;
        let mut cmd = Command::new(&self.services.courier_bin);
        cmd.arg(command)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .env("REDIS_URL", self.redis.url())
            .env("COURIER_SECRET_KEY", &self.secret_key)
            .env("COURIER_API_TOKENS", format!("{TOKEN}=bench"))
            .env("COURIER_ALLOW_PRIVATE_ENDPOINTS", "true");
        // In order, so that a later entry wins; an empty value unsets the variable (the
        // worker's own default then applies).
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file));
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", self.services.courier_bin.display()))?;
        Ok(Proc { child, log })
    }
}

/// A process that has already exited, standing in until the API is spawned.
fn placeholder() -> anyhow::Result<Proc> {
    let mut child = Command::new("true").spawn()?;
    child.wait()?;
    Ok(Proc {
        child,
        log: PathBuf::new(),
    })
}

async fn wait_ok(api: &Api, url: &str, proc: &mut Proc) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if api.get_ok(url).await {
            return Ok(());
        }
        proc.check_running()?;
        if Instant::now() > deadline {
            bail!("{url} not ready after 30 s; log tail:\n{}", proc.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
