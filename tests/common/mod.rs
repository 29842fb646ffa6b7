//! The end-to-end harness: a real Redis and a real Garage on free ports, and the real
//! `courier api` and `courier worker` processes pointed at them.

#![allow(dead_code)]

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use courier_core::DestinationId;
use courier_store::Keys;
use courier_test_support::{GarageServer, RedisServer, S3Key, free_port};
use serde_json::{Value, json};

pub const TOKEN: &str = "tok_acme_0123456789abcdef";
pub const OTHER_TOKEN: &str = "tok_globex_0123456789abcdef";
pub const BUCKET: &str = "acme-results";
/// The fleet's staging bucket (`COURIER_STAGING_BUCKET` of the API; workers that read
/// staged rows get it with the rest of the staging settings).
pub const STAGING_BUCKET: &str = "courier-staging";

/// Sends a request to the API at `api_url` with `token` (none when `None`), keeps the
/// response body in `responses` (for secret scans) and returns status and JSON body (or the
/// text, when it is not JSON). Every harness's one way to call the API.
pub async fn call_api(
    http: &reqwest::Client,
    api_url: &str,
    responses: &std::sync::Mutex<Vec<String>>,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let mut req = http.request(method, format!("{api_url}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.expect("api answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    responses.lock().unwrap().push(text.clone());
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json)
}

/// A running process whose output goes to a log file; killed on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything one test needs, torn down when dropped.
pub struct Stack {
    pub redis: RedisServer,
    pub garage: GarageServer,
    pub key: S3Key,
    pub secret_key: String,
    pub api_url: String,
    pub api: Proc,
    pub workers: Vec<(Proc, u16)>,
    /// The `COURIER_WORKER_NAME` of each of `workers`, by index.
    pub worker_names: Vec<String>,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    /// Every response body the API sent in this test, for secret scans.
    pub responses: std::sync::Mutex<Vec<String>>,
    /// Environment every `courier` process of this stack gets on top of the usual.
    pub extra_env: Vec<(String, String)>,
}

impl Stack {
    /// Redis, Garage with bucket [`BUCKET`] and a read/write key, the API and `workers` workers.
    pub async fn start(workers: usize) -> Stack {
        Self::start_with(
            workers,
            RedisServer::start().expect("redis starts"),
            Vec::new(),
        )
        .await
    }

    /// [`Stack::start`] on a given Redis, with `extra_env` for every `courier` process
    /// (e.g. the Sentinels to find the primary through).
    pub async fn start_with(
        workers: usize,
        redis: RedisServer,
        extra_env: Vec<(String, String)>,
    ) -> Stack {
        let garage = GarageServer::start().expect("garage starts");
        let key = garage.bucket_with_key(BUCKET).expect("bucket and key");
        let secret_key =
            base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut stack = Stack {
            api_url: format!("http://127.0.0.1:{port}"),
            api: Proc {
                child: Command::new("true").spawn().unwrap(),
                log: PathBuf::new(),
            },
            redis,
            garage,
            key,
            secret_key,
            workers: Vec::new(),
            worker_names: Vec::new(),
            dir,
            http: reqwest::Client::new(),
            responses: Default::default(),
            extra_env,
        };
        stack.api = stack.spawn(
            "api",
            &["api"],
            &[
                ("COURIER_API_LISTEN", format!("127.0.0.1:{port}")),
                ("COURIER_STAGING_BUCKET", STAGING_BUCKET.to_owned()),
            ],
        );
        for _ in 0..workers {
            stack.add_worker();
        }
        stack.wait_http(&format!("{}/healthz", stack.api_url)).await;
        for i in 0..stack.workers.len() {
            let port = stack.workers[i].1;
            stack
                .wait_http(&format!("http://127.0.0.1:{port}/healthz"))
                .await;
        }
        stack
    }

    /// Starts one more worker; returns its index.
    pub fn add_worker(&mut self) -> usize {
        self.add_worker_with_env(&[])
    }

    /// Starts one more worker with extra environment variables; returns its index.
    pub fn add_worker_with_env(&mut self, extra: &[(&str, String)]) -> usize {
        let port = free_port();
        let n = self.workers.len();
        let mut env = vec![
            ("COURIER_METRICS_LISTEN", format!("127.0.0.1:{port}")),
            (
                "COURIER_WORKER_NAME",
                format!("e2e-worker-{n}-{}", std::process::id()),
            ),
            ("COURIER_RETRY_MIN_DELAY_MS", "50".into()),
            ("COURIER_RETRY_MAX_DELAY_MS", "200".into()),
        ];
        env.extend(extra.iter().cloned());
        // The last setting wins, as it does for the child's environment.
        let name = env
            .iter()
            .rev()
            .find(|(k, _)| *k == "COURIER_WORKER_NAME")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let proc = self.spawn(&format!("worker-{n}"), &["worker"], &env);
        self.workers.push((proc, port));
        self.worker_names.push(name);
        n
    }

    /// The worker name (`COURIER_WORKER_NAME`) worker `i` was started with.
    pub fn worker_name(&self, i: usize) -> &str {
        &self.worker_names[i]
    }

    /// The process id of worker `i`.
    pub fn worker_pid(&self, i: usize) -> u32 {
        self.workers[i].0.child.id()
    }

    /// Kills worker `i` with SIGKILL and reaps it.
    pub fn kill_worker(&mut self, i: usize) {
        let child = &mut self.workers[i].0.child;
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends `signal` (e.g. `"TERM"`) to worker `i` with `kill -<signal> <pid>`.
    pub fn signal_worker(&self, i: usize, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.worker_pid(i).to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} worker {i}: {status}");
    }

    /// Whether worker `i` is still running.
    pub fn worker_running(&mut self, i: usize) -> bool {
        matches!(self.workers[i].0.child.try_wait(), Ok(None))
    }

    /// Whether the API process is still running.
    pub fn api_running(&mut self) -> bool {
        matches!(self.api.child.try_wait(), Ok(None))
    }

    /// Waits up to `within` for worker `i` to exit; its exit status, or `None` if it is
    /// still running.
    pub async fn wait_worker_exit(&mut self, i: usize, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.workers[i].0.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until worker `i` answers on its metrics listener.
    pub async fn wait_worker(&self, i: usize) {
        let port = self.workers[i].1;
        self.wait_http(&format!("http://127.0.0.1:{port}/healthz"))
            .await;
    }

    /// A `courier` command with this stack's environment.
    /// `courier enqueue --rows FILE` for tenant `acme`, with `rows` written as NDJSON to
    /// FILE, `{job_id}.ndjson` in the stack's directory; asserts the command succeeded and
    /// returns the delivery id it printed.
    pub fn enqueue_file(
        &self,
        dest: &str,
        job_id: &str,
        inventory: &str,
        completed_at: &str,
        rows: &[Value],
    ) -> String {
        let file = self.dir.path().join(format!("{job_id}.ndjson"));
        let ndjson: String = rows.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(&file, ndjson).unwrap();
        let out = self
            .courier(&[
                "enqueue",
                "--tenant",
                "acme",
                "--destination",
                dest,
                "--job-id",
                job_id,
                "--partner-inventory-id",
                inventory,
                "--completed-at",
                completed_at,
                "--rows",
                file.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    pub fn courier(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_courier"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("REDIS_URL", self.redis.url())
            .env("COURIER_SECRET_KEY", &self.secret_key)
            .env(
                "COURIER_API_TOKENS",
                format!("{TOKEN}=acme,{OTHER_TOKEN}=globex"),
            )
            .env("COURIER_ALLOW_PRIVATE_ENDPOINTS", "true")
            .env("RUST_LOG", "info,courier=debug")
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn spawn(&self, name: &str, args: &[&str], env: &[(&str, String)]) -> Proc {
        let log = self.dir.path().join(format!("{name}.log"));
        let file = File::create(&log).unwrap();
        let mut cmd = self.courier(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("courier binary runs");
        Proc { child, log }
    }

    async fn wait_http(&self, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.http.get(url).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{url} did not come up; api log:\n{}",
                self.api.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a request with `token` (none when `None`) and returns status and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        call_api(
            &self.http,
            &self.api_url,
            &self.responses,
            method,
            path,
            token,
            body,
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            path,
            Some(TOKEN),
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(TOKEN), None)
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(
            reqwest::Method::PUT,
            path,
            Some(TOKEN),
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, Some(TOKEN), None)
            .await
    }

    /// Enqueues a small job for `destination` through the API; returns the delivery id.
    pub async fn enqueue(&self, destination: &str, job_id: &str, inventory: &str) -> String {
        let body = serde_json::json!({
            "destinationId": destination,
            "jobId": job_id,
            "partnerInventoryId": inventory,
            "completedAt": "2026-06-07T10:00:00Z",
            "rows": [{"hotel": "A", "score": 1}]
        });
        let (status, resp) = self.post("/api/v1/deliveries", &body).await;
        assert_eq!(status, 202, "{resp}");
        resp["id"].as_str().unwrap().to_owned()
    }

    /// Polls a delivery until it has `status`; returns the record.
    pub async fn wait_status(&self, id: &str, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (code, rec) = self.get(&format!("/api/v1/deliveries/{id}")).await;
            assert_eq!(code, 200, "{rec}");
            if rec["status"] == status {
                return rec;
            }
            assert!(
                Instant::now() < deadline,
                "delivery {id} not {status} after {within:?}: {rec}\nworker logs:\n{}",
                self.worker_logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Keys of the objects in the bucket under `prefix`.
    pub async fn objects(&self, prefix: &str) -> Vec<String> {
        let out = self
            .s3()
            .await
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix)
            .send()
            .await
            .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    /// All API response bodies and process logs of this test, for secret scans.
    pub fn everything_said(&self) -> String {
        let mut all = self.responses.lock().unwrap().join("\n");
        all.push_str(&self.api.logs());
        all.push_str(&self.worker_logs());
        all
    }

    /// A destination body for this stack's Garage and bucket.
    pub fn destination_body(&self, format: &str, compression: &str, prefix: &str) -> Value {
        json!({
            "type": "S3",
            "name": format!("{format} {compression}"),
            "s3": {
                "bucket": BUCKET,
                "region": self.garage.region(),
                "accessKeyId": self.key.id,
                "secretAccessKey": self.key.secret,
                "endpointUrl": self.garage.endpoint(),
                "pathPrefix": prefix,
            },
            "format": format,
            "compression": compression,
            "status": "ACTIVE",
        })
    }

    /// Creates a destination and returns its id.
    pub async fn create_destination(&self, body: &Value) -> String {
        let (status, resp) = self.post("/api/v1/delivery-destinations", body).await;
        assert_eq!(status, 201, "create destination: {resp}");
        resp["id"].as_str().unwrap().to_owned()
    }

    /// Polls a delivery until its status is final; returns the record.
    pub async fn wait_final(&self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, rec) = self.get(&format!("/api/v1/deliveries/{id}")).await;
            assert_eq!(status, 200, "{rec}");
            let s = rec["status"].as_str().unwrap_or_default();
            if s == "DELIVERED" || s == "FAILED" {
                return rec;
            }
            assert!(
                Instant::now() < deadline,
                "delivery {id} still {s} after {within:?}: {rec}\nworker logs:\n{}",
                self.worker_logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The record of delivery `id` (asserts that the API has it).
    pub async fn record(&self, id: &str) -> Value {
        let (status, rec) = self.get(&format!("/api/v1/deliveries/{id}")).await;
        assert_eq!(status, 200, "delivery {id}: {rec}");
        rec
    }

    /// Polls a delivery until its status is one of `statuses`; returns the record.
    pub async fn wait_settled(&self, id: &str, statuses: &[&str], within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let rec = self.record(id).await;
            let s = rec["status"].as_str().unwrap_or_default();
            if statuses.contains(&s) {
                return rec;
            }
            assert!(
                Instant::now() < deadline,
                "delivery {id} still {s}, not one of {statuses:?}, after {within:?}: {rec}\n\
                 log lines about it:\n{}",
                self.logs_mentioning(id)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Object `key` in [`BUCKET`], headers and body.
    pub async fn try_get_object(
        &self,
        key: &str,
    ) -> Result<
        aws_sdk_s3::operation::get_object::GetObjectOutput,
        aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::get_object::GetObjectError>,
    > {
        self.s3()
            .await
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
    }

    /// Object `key` in [`BUCKET`], which must exist.
    pub async fn get_object(
        &self,
        key: &str,
    ) -> aws_sdk_s3::operation::get_object::GetObjectOutput {
        self.try_get_object(key)
            .await
            .unwrap_or_else(|e| panic!("object {key} must exist: {e:?}"))
    }

    /// The bytes of object `key` in [`BUCKET`], or `None` if there is no such object.
    pub async fn object(&self, key: &str) -> Option<Vec<u8>> {
        let out = self.try_get_object(key).await.ok()?;
        Some(out.body.collect().await.ok()?.into_bytes().to_vec())
    }

    /// Runs `courier dlq <args…>` and returns its output.
    pub fn dlq(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["dlq"];
        all.extend_from_slice(args);
        self.courier(&all).output().expect("courier dlq runs")
    }

    /// `courier dlq list --json`: one JSON object per dead letter, oldest first.
    pub fn dlq_list(&self) -> Vec<Value> {
        let out = self.dlq(&["list", "--json"]);
        assert!(
            out.status.success(),
            "courier dlq list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.trim_start().starts_with('{'))
            .map(|l| serde_json::from_str(l).expect("dlq list --json prints JSON lines"))
            .collect()
    }

    /// The lines of the API's and the workers' logs that contain `needle`.
    pub fn logs_mentioning(&self, needle: &str) -> String {
        let mut all = self.api.logs();
        all.push_str(&self.worker_logs());
        all.lines()
            .filter(|l| l.contains(needle))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn worker_logs(&self) -> String {
        self.workers
            .iter()
            .map(|(p, _)| p.logs())
            .collect::<Vec<_>>()
            .join("\n----\n")
    }

    pub async fn s3(&self) -> aws_sdk_s3::Client {
        self.garage.client(&self.key).await
    }

    /// Prometheus text from worker `i`.
    pub async fn worker_metrics(&self, i: usize) -> String {
        let port = self.workers[i].1;
        self.http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The Redis keys of this stack's processes (the default namespace), for tests that
    /// look into Redis: key names come from the store's key module, never spelled out.
    pub fn keys(&self) -> Keys {
        Keys::default()
    }

    /// A destination id the API returned, parsed, for [`keys`](Self::keys).
    pub fn dest_id(&self, id: &str) -> DestinationId {
        DestinationId::parse(id).unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

/// The sum of every sample of `metric` whose labels include all of `labels`.
pub fn metric_sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name_labels, value) = l.rsplit_once(' ')?;
            let (name, rest) = match name_labels.split_once('{') {
                Some((n, r)) => (n, r),
                None => (name_labels, ""),
            };
            if name != metric {
                return None;
            }
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}
