//! A Redis primary, its replicas and three Sentinels on loopback, for failover tests.
//!
//! The Sentinels are `redis-server --sentinel` (the same binary Debian's `redis-sentinel`
//! package runs), each with its own config file, which Sentinel rewrites as it learns the
//! topology. They declare the primary down after 1 s and fail over within a few seconds.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Instant;

use anyhow::{Context, anyhow};
use tempfile::TempDir;

use crate::ports::free_port;
use crate::process::{Startup, kill_child, log_tail, probe, spawn_logged};
use crate::redis::RedisServer;

/// The name the Sentinels monitor the primary under.
pub const SENTINEL_SERVICE: &str = "courier";

/// One Sentinel process. Killed on drop.
#[derive(Debug)]
pub struct SentinelServer {
    _dir: TempDir,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl SentinelServer {
    /// Starts a Sentinel that monitors the primary on `primary_port` with quorum `quorum`.
    pub fn start(primary_port: u16, quorum: u32) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("courier-sentinel-")
            .tempdir()
            .context("cannot create a temporary directory for a sentinel")?;
        let port = free_port();
        let log = dir.path().join("sentinel.log");
        let conf = dir.path().join("sentinel.conf");
        fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary_port} {quorum}\n\
                 sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
                 sentinel failover-timeout {SENTINEL_SERVICE} 5000\n\
                 sentinel parallel-syncs {SENTINEL_SERVICE} 1\n",
                dir = dir.path().display()
            ),
        )?;
        let started = Instant::now();
        let mut cmd = Command::new("redis-server");
        cmd.arg(&conf).arg("--sentinel");
        let child = spawn_logged(&mut cmd, &log).map_err(|e| anyhow!(e).context("sentinel"))?;
        let mut server = SentinelServer {
            _dir: dir,
            port,
            log,
            child: Some(child),
        };
        let startup = Startup {
            started,
            what: "redis sentinel",
            log: &server.log,
            log_offset: 0,
            markers: vec!["+monitor master".to_owned()],
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        startup.wait(&mut server.child, || {
            probe(addr, b"PING\r\n", |r| r.starts_with(b"+PONG"))
        })?;
        Ok(server)
    }

    /// `127.0.0.1:<port>`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The last lines of its log (`+switch-master` says a failover happened).
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// The whole log.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SentinelServer {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// A primary, `replicas` replicas and three Sentinels (quorum 2).
#[derive(Debug)]
pub struct SentinelCluster {
    pub primary: RedisServer,
    pub replicas: Vec<RedisServer>,
    pub sentinels: Vec<SentinelServer>,
}

impl SentinelCluster {
    pub fn start(replicas: usize) -> anyhow::Result<Self> {
        let primary = RedisServer::start()?;
        let replicas = (0..replicas)
            .map(|_| RedisServer::start_replica_of(primary.port()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let sentinels = (0..3)
            .map(|_| SentinelServer::start(primary.port(), 2))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            primary,
            replicas,
            sentinels,
        })
    }

    /// Waits until every Sentinel knows the other two and all replicas, so that a failover
    /// can be agreed on; fails after `within`.
    pub fn wait_ready(&self, within: std::time::Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let want_replicas = self.replicas.len().to_string();
        loop {
            let ready = self.sentinels.iter().all(|s| {
                let master = redis::Client::open(format!("redis://{}", s.addr()))
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| {
                        redis::cmd("SENTINEL")
                            .arg("MASTER")
                            .arg(SENTINEL_SERVICE)
                            .query::<std::collections::HashMap<String, String>>(&mut c)
                    });
                master.is_ok_and(|m| {
                    m.get("num-other-sentinels").map(String::as_str) == Some("2")
                        && m.get("num-slaves") == Some(&want_replicas)
                })
            });
            if ready {
                return Ok(());
            }
            if started.elapsed() > within {
                anyhow::bail!(
                    "the sentinels did not learn the topology within {within:?}; a log:\n{}",
                    self.sentinels[0].log_tail()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// `COURIER_REDIS_SENTINELS`: every Sentinel's `host:port`, comma-separated.
    pub fn sentinels_setting(&self) -> String {
        self.sentinels
            .iter()
            .map(SentinelServer::addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether any Sentinel has logged a switch of the primary to another server.
    pub fn switched(&self) -> bool {
        self.sentinels
            .iter()
            .any(|s| s.log().contains("+switch-master"))
    }
}
