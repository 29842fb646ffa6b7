//! A private `redis-server` per test, or one shared by every test of a test binary.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Context, anyhow};
use tempfile::TempDir;

use crate::ports::{PORT_ATTEMPTS, free_port};
use crate::process::{
    Startup, child_is_running, file_len, kill_child, log_mentions_port_in_use, log_tail, probe,
    random_hex, spawn_logged_with_stdin,
};
use crate::tools::ENSURE_TOOLS_HINT;

/// Runs `redis-server "$@"` in the background and waits for a line (or the end) of stdin:
/// at the end of stdin (this process exited) it kills the server and removes its directory;
/// after a `keep` line ([`RedisServer::kill`]) it only kills the server.
const LIFELINE_SCRIPT: &str = r#"redis-server "$@" &
pid=$!
read -r what
kill -9 "$pid" 2>/dev/null
wait "$pid"
[ "$what" = keep ] || rm -rf "$COURIER_REDIS_DIR""#;

/// A namespace of its own for one test: `t-` and 16 random hex digits. Tests that share a
/// [`RedisServer::shared`] write their keys under it (`Keys::new(test_namespace())`).
pub fn test_namespace() -> String {
    format!("t-{}", random_hex(8))
}

/// A private `redis-server` on a free port of 127.0.0.1, with AOF persistence in its own
/// temporary directory. Killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    dir: TempDir,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
    /// Only for the [`shared`](Self::shared) server, which runs under a wrapper shell: the
    /// write end of the shell's stdin. It closes when this process exits, however it exits,
    /// and the shell then kills the server and removes its directory.
    lifeline: Option<ChildStdin>,
    /// Whether the server runs under that wrapper shell.
    tied: bool,
    /// Arguments after the standard ones (`--replicaof …`).
    extra_args: Vec<String>,
}

impl RedisServer {
    /// Starts `redis-server` (found on `PATH`) and waits until it answers `PING`.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false, Vec::new())
    }

    /// Starts a replica of the server on `primary_port` and waits until it has synced.
    pub fn start_replica_of(primary_port: u16) -> anyhow::Result<Self> {
        Self::start_with(
            false,
            vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary_port.to_string(),
            ],
        )
    }

    /// One server for every test of this process (one test binary), started by the first
    /// test that asks for it. Tests that share it keep apart by writing under their own
    /// namespace (see [`test_namespace`]). It cannot be killed or restarted (tests that need
    /// that start their own), and it stops when the process exits: statics are never
    /// dropped, so it runs under a shell that kills it once this process is gone.
    ///
    /// # Panics
    ///
    /// If the server cannot be started.
    pub fn shared() -> &'static RedisServer {
        static SHARED: OnceLock<RedisServer> = OnceLock::new();
        SHARED
            .get_or_init(|| Self::start_with(true, Vec::new()).unwrap_or_else(|e| panic!("{e:#}")))
    }

    fn start_with(tied: bool, extra_args: Vec<String>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("courier-redis-")
            .tempdir()
            .context("cannot create a temporary directory for redis")?;
        let log = dir.path().join("redis.log");
        let mut server = RedisServer {
            dir,
            port: 0,
            log,
            child: None,
            lifeline: None,
            tied,
            extra_args,
        };
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port();
            let log_offset = file_len(&server.log);
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) if log_mentions_port_in_use(&server.log, log_offset) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err
            .expect("at least one attempt")
            .context("no free port found for redis"))
    }

    /// `redis://127.0.0.1:<port>/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port the server listens on (stable across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (holds the AOF).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file the server's stdout and stderr go to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Whether the server process is running (false after [`kill`](Self::kill) or a crash).
    pub fn is_running(&mut self) -> bool {
        child_is_running(&mut self.child)
    }

    /// Kills the server with SIGKILL (no shutdown, no final save) and reaps it.
    /// Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut lifeline) = self.lifeline.take() {
            // Tells the wrapper shell to kill the server but keep its directory (and log).
            let _ = lifeline.write_all(b"keep\n");
            drop(lifeline);
            if let Some(mut c) = self.child.take() {
                let _ = c.wait();
            }
        }
        kill_child(&mut self.child);
    }

    /// Starts the server again on the same port and directory (the AOF is reloaded) and waits
    /// until it answers `PING`. Kills the running server first if there is one.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn_and_wait()
    }

    fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let log_offset = file_len(&self.log);
        let mut cmd = if self.tied {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(LIFELINE_SCRIPT)
                .arg("sh")
                .env("COURIER_REDIS_DIR", self.dir.path());
            sh
        } else {
            Command::new("redis-server")
        };
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", ""])
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "always"])
            .args(["--daemonize", "no"])
            .args(["--logfile", ""])
            .args(["--loglevel", "notice"])
            .args(&self.extra_args);
        let stdin = if self.tied {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        let child = spawn_logged_with_stdin(&mut cmd, &self.log, stdin).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow!("redis-server not found on PATH ({ENSURE_TOOLS_HINT})")
            } else {
                anyhow!(e).context("cannot spawn redis-server")
            }
        })?;
        let mut child = child;
        self.lifeline = child.stdin.take();
        self.child = Some(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        // The log line proves that *this* process bound the port (and finished loading the
        // AOF); PING proves it serves.
        let startup = Startup {
            started,
            what: "redis-server",
            log: &self.log,
            log_offset,
            markers: if self.extra_args.iter().any(|a| a == "--replicaof") {
                vec!["MASTER <-> REPLICA sync: Finished with success".to_owned()]
            } else {
                vec!["Ready to accept connections".to_owned()]
            },
        };
        let result = startup.wait(&mut self.child, || {
            probe(addr, b"PING\r\n", |reply| reply.starts_with(b"+PONG"))
        });
        if result.is_err() {
            self.kill();
        }
        result
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn redis_on_a_taken_port_fails_fast_with_the_log() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut server = RedisServer {
            log: dir.path().join("redis.log"),
            dir,
            port: taken.local_addr().unwrap().port(),
            child: None,
            lifeline: None,
            tied: false,
            extra_args: Vec::new(),
        };
        let err = format!("{:#}", server.spawn_and_wait().unwrap_err());
        assert!(err.contains("already in use"), "{err}");
        assert!(log_mentions_port_in_use(&server.log, 0));
        assert!(!server.is_running());
    }

    #[test]
    fn test_namespaces_differ() {
        let (a, b) = (test_namespace(), test_namespace());
        assert!(a.starts_with("t-") && a.len() == 18, "{a}");
        assert_ne!(a, b);
    }
}
