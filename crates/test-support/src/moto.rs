//! A private moto server (AWS semantics: IAM, STS, KMS, S3 with tags and storage classes)
//! per test, with IAM enforcement switched on once the test's accounts are set up.
//!
//! Garage has no STS, KMS or object tags; moto's server does, and with IAM enforcement it
//! refuses an unauthorised call with AWS's own codes. It runs from the tools venv
//! (`$COURIER_TOOLS/venv`, `moto[server]` from `scripts/python-tools.txt`) under a small
//! wrapper (`moto/serve.py`) that closes the gaps between moto 5.2 and AWS these tests
//! depend on: policy conditions evaluate as on AWS (a `StringEquals` on a key the request
//! lacks is false, where moto says true; `StringNotEquals`, `Null` and the like are
//! evaluated, where moto ignores them), S3 requests carry their condition keys
//! (`s3:x-amz-server-side-encryption`, `s3:x-amz-storage-class`, `s3:x-amz-acl`, …) into
//! bucket and identity policies, and `x-amz-expected-bucket-owner` is enforced (moto
//! ignores it; AWS answers 403 AccessDenied when it names another account). The wrapper
//! also logs every S3 request it handled ([`MotoServer::s3_requests`]).
//!
//! How the enforcement switch works (moto's `core/authorization.py`): every request counts
//! against `INITIAL_NO_AUTH_ACTION_COUNT` (infinite by default) and is authorised only once
//! the count is reached; `POST /moto-api/reset-auth` with a number sets that limit and
//! resets the count. The server starts with no enforcement, [`MotoServer::setup_fleet`] and
//! [`MotoServer::setup_customer`] create users, roles, bucket and key, and
//! [`MotoServer::enforce_iam`] posts `0`: from then on every request must be signed by a
//! known key and allowed by its policies.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::ports::{PORT_ATTEMPTS, free_port};
use crate::process::{
    Startup, kill_child, log_mentions_port_in_use, log_tail, probe, spawn_logged,
};
use crate::tools::{ENSURE_TOOLS_HINT, tools_dir};

const SERVE: &str = include_str!("moto/serve.py");
const SETUP: &str = include_str!("moto/setup.py");

/// The account moto puts everything in.
pub const MOTO_ACCOUNT: &str = "123456789012";
/// The region the tests use.
pub const MOTO_REGION: &str = "us-east-1";

/// An IAM user's access key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MotoUser {
    pub arn: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// The operator's side, made by [`MotoServer::setup_fleet`].
#[derive(Debug, Clone)]
pub struct MotoFleet {
    /// Allowed everything: reads objects back as the bucket's owner.
    pub admin: MotoUser,
    /// Courier's fleet: allowed only `sts:AssumeRole`.
    pub fleet: MotoUser,
}

/// The customer's side, made by [`MotoServer::setup_customer`].
#[derive(Debug, Clone)]
pub struct MotoCustomer {
    /// Trusts the fleet with the ExternalId; may write, read and delete under the prefix.
    pub role_arn: String,
    /// The same, but its trust policy does not require the ExternalId.
    pub open_role_arn: String,
    /// The customer's KMS key.
    pub kms_key_arn: String,
}

/// A role session moto handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumedRole {
    pub session_name: String,
    pub role_arn: String,
    pub external_id: Option<String>,
}

/// One S3 request the server handled, from its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Request {
    pub method: String,
    pub bucket: Option<String>,
    /// `None` for a bucket request (HeadBucket, ListObjects, …).
    pub key: Option<String>,
    /// The names of its query parameters, sorted (`uploads`, `partNumber`, `uploadId`, …).
    pub query: Vec<String>,
    /// The `x-amz-expected-bucket-owner` it named.
    pub expected_bucket_owner: Option<String>,
}

impl S3Request {
    /// The S3 operation, named as AWS names it, for the requests Courier makes.
    pub fn operation(&self) -> &'static str {
        let has = |q: &str| self.query.iter().any(|p| p == q);
        match (self.method.as_str(), self.key.is_some()) {
            ("HEAD", false) => "HeadBucket",
            ("GET", false) => "ListObjects",
            ("HEAD", true) => "HeadObject",
            ("GET", true) => "GetObject",
            ("POST", true) if has("uploads") => "CreateMultipartUpload",
            ("POST", true) if has("uploadId") => "CompleteMultipartUpload",
            ("PUT", true) if has("uploadId") => "UploadPart",
            ("PUT", true) if has("tagging") || has("acl") => "PutObjectSubresource",
            ("PUT", true) => "PutObject",
            ("DELETE", true) if has("uploadId") => "AbortMultipartUpload",
            ("DELETE", true) => "DeleteObject",
            _ => "Other",
        }
    }
}

/// A private moto server on a free port of 127.0.0.1, with its log in a temporary
/// directory. Killed on drop.
#[derive(Debug)]
pub struct MotoServer {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

/// The venv's python, if moto is installed in it.
pub fn try_moto_python() -> anyhow::Result<PathBuf> {
    let python = tools_dir().join("venv/bin/python");
    let moto = tools_dir().join("venv/bin/moto_server");
    if python.is_file() && moto.is_file() {
        Ok(python)
    } else {
        bail!(
            "moto_server not found in {} ({ENSURE_TOOLS_HINT} --python)",
            tools_dir().join("venv").display()
        )
    }
}

impl MotoServer {
    /// Starts moto's server and waits until `/moto-api/data.json` answers 200.
    pub fn start() -> anyhow::Result<Self> {
        let python = try_moto_python()?;
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("courier-moto-")
                .tempdir()
                .context("cannot create a temporary directory for moto")?;
            let mut server = MotoServer {
                dir,
                port: free_port(),
                child: None,
            };
            match server.spawn(&python) {
                Ok(()) => return Ok(server),
                Err(e) if log_mentions_port_in_use(&server.log(), 0) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err
            .expect("at least one attempt")
            .context("no free port found for moto"))
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("moto.log")
    }

    fn spawn(&mut self, python: &PathBuf) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut cmd = Command::new(python);
        cmd.arg("-c")
            .arg(SERVE)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .env_remove("INITIAL_NO_AUTH_ACTION_COUNT")
            .env("PYTHONUNBUFFERED", "1");
        let log = self.log();
        self.child = Some(spawn_logged(&mut cmd, &log).context("cannot spawn moto")?);
        let addr = self.addr();
        let startup = Startup {
            started,
            what: "moto",
            log: &log,
            log_offset: 0,
            markers: Vec::new(),
        };
        let result = startup.wait(&mut self.child, || {
            probe(
                addr,
                &crate::process::http_get("/moto-api/data.json"),
                |r| crate::process::http_status(r) == Some(200),
            )
        });
        if result.is_err() {
            kill_child(&mut self.child);
        }
        result
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `http://127.0.0.1:<port>`: S3, STS, IAM and KMS alike.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log())
    }

    /// Runs `code` with the venv's python (boto3 is there) and `args`; returns stdout.
    pub fn python(&self, code: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(try_moto_python()?)
            .arg("-c")
            .arg(code)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run python")?;
        if !out.status.success() {
            bail!(
                "python failed ({}): {}\nmoto log:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates the fleet's user (only `sts:AssumeRole`) and an admin user; see
    /// `moto/setup.py`. Before [`enforce_iam`](Self::enforce_iam).
    pub fn setup_fleet(&self) -> anyhow::Result<MotoFleet> {
        let v = self.setup(&["fleet"])?;
        let user = |name: &str| -> anyhow::Result<MotoUser> {
            Ok(MotoUser {
                arn: text(&v[name], "arn")?,
                access_key_id: text(&v[name], "accessKeyId")?,
                secret_access_key: text(&v[name], "secretAccessKey")?,
            })
        };
        Ok(MotoFleet {
            admin: user("admin")?,
            fleet: user("fleet")?,
        })
    }

    /// Creates the customer's `bucket`, KMS key and two roles trusting `fleet_arn` (one
    /// requiring `external_id`), allowed to write under `prefix`; see `moto/setup.py`.
    /// Before [`enforce_iam`](Self::enforce_iam).
    pub fn setup_customer(
        &self,
        external_id: &str,
        bucket: &str,
        prefix: &str,
        fleet_arn: &str,
    ) -> anyhow::Result<MotoCustomer> {
        let v = self.setup(&["customer", external_id, bucket, prefix, fleet_arn])?;
        Ok(MotoCustomer {
            role_arn: text(&v, "role")?,
            open_role_arn: text(&v, "openRole")?,
            kms_key_arn: text(&v, "kmsKeyArn")?,
        })
    }

    fn setup(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let endpoint = self.endpoint();
        let mut all = vec![endpoint.as_str()];
        all.extend_from_slice(args);
        let out = self.python(SETUP, &all)?;
        serde_json::from_str(out.trim()).with_context(|| format!("setup said: {out}"))
    }

    /// Switches IAM enforcement on: every later request is authenticated and authorised.
    pub fn enforce_iam(&self) -> anyhow::Result<()> {
        let (status, body) = self.request("POST", "/moto-api/reset-auth", "0")?;
        if status != 200 {
            bail!("reset-auth answered {status}: {body}");
        }
        Ok(())
    }

    /// Every role session moto handed out so far, in order.
    pub fn assumed_roles(&self) -> anyhow::Result<Vec<AssumedRole>> {
        let (status, body) = self.request("GET", "/moto-api/data.json", "")?;
        if status != 200 {
            bail!("data.json answered {status}");
        }
        let v: serde_json::Value = serde_json::from_str(&body)?;
        let roles = v["sts"]["AssumedRole"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(roles
            .iter()
            .map(|r| AssumedRole {
                session_name: r["session_name"].as_str().unwrap_or_default().to_owned(),
                role_arn: r["role_arn"].as_str().unwrap_or_default().to_owned(),
                external_id: r["external_id"].as_str().map(str::to_owned),
            })
            .collect())
    }

    /// Every S3 request the server handled so far, in order (the wrapper logs each one).
    pub fn s3_requests(&self) -> anyhow::Result<Vec<S3Request>> {
        const MARK: &str = "COURIER-S3 ";
        let log = std::fs::read_to_string(self.log()).context("cannot read moto's log")?;
        let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
        log.lines()
            .filter_map(|line| line.find(MARK).map(|at| &line[at + MARK.len()..]))
            .map(|entry| {
                let v: serde_json::Value = serde_json::from_str(entry)
                    .with_context(|| format!("unreadable request log line: {entry}"))?;
                Ok(S3Request {
                    method: text(&v["method"]).unwrap_or_default(),
                    bucket: text(&v["bucket"]),
                    key: text(&v["key"]),
                    query: v["query"]
                        .as_array()
                        .map(|q| q.iter().filter_map(text).collect())
                        .unwrap_or_default(),
                    expected_bucket_owner: text(&v["expectedBucketOwner"]),
                })
            })
            .collect()
    }

    /// One HTTP/1.1 request to the server; its status and body.
    fn request(&self, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply)?;
        let reply = String::from_utf8_lossy(&reply).into_owned();
        let status = crate::process::http_status(reply.as_bytes()).unwrap_or(0);
        let body = reply
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }
}

fn text(v: &serde_json::Value, field: &str) -> anyhow::Result<String> {
    v[field]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no `{field}` in {v}"))
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}
