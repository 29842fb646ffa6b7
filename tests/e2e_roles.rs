//! Cross-account roles and write options end to end, against moto's server with IAM
//! enforcement on (`crates/test-support` `MotoServer`): the real `courier api` and
//! `courier worker` run as the fleet's IAM user, allowed only `sts:AssumeRole`, with
//! `AWS_ENDPOINT_URL_STS` pointing at moto; the customer reads its ExternalId from
//! `GET /api/v1/tenant`, writes a role whose trust policy requires it and whose policy
//! allows writing its prefix, creates a `ROLE` destination with its KMS key, a storage
//! class and tags, tests it and receives files written by the role. Objects are read back
//! by an independent client (boto3, as the bucket's owner).
//!
//! No Garage here: the processes are started by [`Fleet`], a small harness of this file
//! (Redis, the API and workers), so the tests need only Redis and moto.
//!
//! moto 5.2 evaluates a trust policy's `StringEquals` on a key the request lacks as true,
//! ignores the other condition operators and S3's condition keys, and ignores
//! `x-amz-expected-bucket-owner`; the server runs under a small patch that does all of these
//! as AWS does (see `crates/test-support/src/moto/serve.py`). So the probe's "assumable
//! without the ExternalId" check is tested both ways (a role requiring it passes, a role
//! without the condition fails with the confused-deputy hint), a bucket policy that requires
//! a KMS key and `bucket-owner-full-control` refuses the probe's PutObject until the
//! destination sets them, and a destination expecting another bucket owner is refused on
//! every request (which the patched server logs, so the test checks that each kind of
//! request Courier makes named the owner).

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use courier_test_support::{
    MOTO_ACCOUNT, MOTO_REGION, MotoCustomer, MotoFleet, MotoServer, RedisServer, free_port,
};
use serde_json::{Value, json};

mod common;

use common::{OTHER_TOKEN, TOKEN};

/// Redis, `courier api` and `courier worker`s with the given environment; killed on drop.
struct Fleet {
    _redis: RedisServer,
    dir: tempfile::TempDir,
    api_url: String,
    procs: Vec<Child>,
    http: reqwest::Client,
    /// Every response body, for secret scans.
    responses: Mutex<Vec<String>>,
}

impl Fleet {
    async fn start(workers: usize, env: &[(String, String)]) -> Fleet {
        let redis = RedisServer::start().expect("redis");
        let secret = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        let port = free_port();
        let mut fleet = Fleet {
            api_url: format!("http://127.0.0.1:{port}"),
            dir: tempfile::tempdir().unwrap(),
            procs: Vec::new(),
            http: reqwest::Client::new(),
            responses: Mutex::default(),
            _redis: redis,
        };
        let mut common: Vec<(String, String)> = vec![
            ("REDIS_URL".into(), fleet._redis.url()),
            ("COURIER_SECRET_KEY".into(), secret),
            (
                "COURIER_API_TOKENS".into(),
                format!("{TOKEN}=acme,{OTHER_TOKEN}=globex"),
            ),
            ("RUST_LOG".into(), "info,courier=debug".into()),
            ("COURIER_RETRY_MIN_DELAY_MS".into(), "50".into()),
            ("COURIER_RETRY_MAX_DELAY_MS".into(), "200".into()),
        ];
        common.extend_from_slice(env);
        let api_env = [("COURIER_API_LISTEN".to_owned(), format!("127.0.0.1:{port}"))];
        fleet.spawn("api", &["api"], &common, &api_env);
        fleet.wait_http(&format!("{}/healthz", fleet.api_url)).await;
        for i in 0..workers {
            let mport = free_port();
            let worker_env = [
                (
                    "COURIER_METRICS_LISTEN".to_owned(),
                    format!("127.0.0.1:{mport}"),
                ),
                (
                    "COURIER_WORKER_NAME".to_owned(),
                    format!("roles-{i}-{}", std::process::id()),
                ),
            ];
            fleet.spawn(&format!("worker-{i}"), &["worker"], &common, &worker_env);
            fleet
                .wait_http(&format!("http://127.0.0.1:{mport}/healthz"))
                .await;
        }
        fleet
    }

    fn spawn(&mut self, name: &str, args: &[&str], a: &[(String, String)], b: &[(String, String)]) {
        let log = File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_courier"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(a.iter().chain(b).map(|(k, v)| (k, v)))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("courier runs");
        self.procs.push(child);
    }

    async fn wait_http(&self, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(url).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{url} did not come up:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
        all
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        common::call_api(
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

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let body = serde_json::to_vec(body).unwrap();
        self.call(reqwest::Method::POST, path, Some(TOKEN), Some(body))
            .await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(TOKEN), None)
            .await
    }

    async fn enqueue(&self, destination: &str, job_id: &str, inventory: &str) -> String {
        let body = json!({
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

    async fn wait_final(&self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, rec) = self.get(&format!("/api/v1/deliveries/{id}")).await;
            assert_eq!(status, 200, "{rec}");
            if rec["status"] == "DELIVERED" || rec["status"] == "FAILED" {
                return rec;
            }
            assert!(Instant::now() < deadline, "{rec}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// All responses and process logs, for secret scans.
    fn everything_said(&self) -> String {
        let mut all = self.responses.lock().unwrap().join("\n");
        all.push_str(&self.logs());
        all
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const WAIT: Duration = Duration::from_secs(60);
const BUCKET: &str = "customer-results";
const PREFIX: &str = "courier/";

/// Reads an object back as the bucket's owner and prints its encryption, KMS key, storage
/// class and tags as JSON. argv: endpoint, access key id, secret, bucket, key.
const READ_BACK: &str = r#"
import json, sys
import boto3
url, key_id, secret, bucket, key = sys.argv[1:6]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                  aws_access_key_id=key_id, aws_secret_access_key=secret)
head = s3.head_object(Bucket=bucket, Key=key)
tags = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
print(json.dumps({
    "sse": head.get("ServerSideEncryption"),
    "kmsKeyId": head.get("SSEKMSKeyId"),
    "storageClass": head.get("StorageClass"),
    "tags": {t["Key"]: t["Value"] for t in tags},
    "body": body,
}))
"#;

/// Lists the keys under a prefix as the bucket's owner. argv: endpoint, id, secret, bucket, prefix.
const LIST: &str = r#"
import json, sys
import boto3
url, key_id, secret, bucket, prefix = sys.argv[1:6]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                  aws_access_key_id=key_id, aws_secret_access_key=secret)
out = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
print(json.dumps(sorted(o["Key"] for o in out.get("Contents", []))))
"#;

/// Lists the multipart uploads still open under a prefix (parts a failed delivery would
/// leave behind, billed to the customer) as the bucket's owner. argv as `LIST`.
const OPEN_UPLOADS: &str = r#"
import json, sys
import boto3
url, key_id, secret, bucket, prefix = sys.argv[1:6]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                  aws_access_key_id=key_id, aws_secret_access_key=secret)
out = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
print(json.dumps(sorted(u["Key"] for u in out.get("Uploads", []))))
"#;

/// moto with the fleet's user, and Courier's processes running as that user.
struct World {
    moto: MotoServer,
    fleet: MotoFleet,
    customer: MotoCustomer,
    stack: Fleet,
    external_id: String,
}

impl World {
    /// Starts moto and the fleet's identity, then Courier (API and `workers` workers) as
    /// that identity, reads tenant `acme`'s ExternalId and sets the customer's account up
    /// with it; IAM enforcement is on from then on.
    async fn start(workers: usize) -> World {
        World::start_with(workers, &[], &[]).await
    }

    /// [`World::start`] with more environment for Courier's processes, and more loopback
    /// ports tenant traffic may reach (a `rowsUrl` server).
    async fn start_with(workers: usize, extra: &[(&str, &str)], ports: &[u16]) -> World {
        let moto = MotoServer::start().expect("moto starts");
        let fleet = moto.setup_fleet().expect("fleet user");
        let allowed: Vec<String> = std::iter::once(moto.port())
            .chain(ports.iter().copied())
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut env = vec![
            (
                "AWS_ACCESS_KEY_ID".to_owned(),
                fleet.fleet.access_key_id.clone(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".to_owned(),
                fleet.fleet.secret_access_key.clone(),
            ),
            ("AWS_REGION".to_owned(), MOTO_REGION.to_owned()),
            ("AWS_ENDPOINT_URL_STS".to_owned(), moto.endpoint()),
            (
                "COURIER_FLEET_PRINCIPAL".to_owned(),
                fleet.fleet.arn.clone(),
            ),
            // Tenant traffic may reach moto's port (and `ports`) on loopback, and nothing
            // else private.
            (
                "COURIER_ALLOW_PRIVATE_ENDPOINTS".to_owned(),
                "false".to_owned(),
            ),
            ("COURIER_EGRESS_ALLOW".to_owned(), allowed.join(",")),
        ];
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let stack = Fleet::start(workers, &env).await;
        let (status, tenant) = stack.get("/api/v1/tenant").await;
        assert_eq!(status, 200, "{tenant}");
        let external_id = tenant["externalId"].as_str().unwrap().to_owned();
        assert_eq!(external_id.len(), 32, "{tenant}");
        assert_eq!(tenant["fleetPrincipal"], fleet.fleet.arn.as_str());
        let customer = moto
            .setup_customer(&external_id, BUCKET, PREFIX, &fleet.fleet.arn)
            .expect("customer account");
        moto.enforce_iam().expect("IAM enforcement on");
        World {
            moto,
            fleet,
            customer,
            stack,
            external_id,
        }
    }

    fn role_body(&self, role_arn: &str, extra: Value) -> Value {
        let mut s3 = json!({
            "bucket": BUCKET,
            "region": MOTO_REGION,
            "credentials": "ROLE",
            "roleArn": role_arn,
            "endpointUrl": self.moto.endpoint(),
            "pathPrefix": PREFIX,
        });
        s3.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        json!({"type": "S3", "name": "Customer role", "s3": s3, "format": "CSV"})
    }

    /// Enqueues a delivery to `destination` whose rows are at `url`; job id and partner
    /// inventory id are both `job`.
    async fn enqueue_rows_url(&self, destination: &str, job: &str, url: String) -> String {
        let body = json!({
            "destinationId": destination, "jobId": job, "partnerInventoryId": job,
            "completedAt": "2026-06-07T10:00:00Z", "rowsUrl": url,
        });
        let (status, resp) = self.stack.post("/api/v1/deliveries", &body).await;
        assert_eq!(status, 202, "{resp}");
        resp["id"].as_str().unwrap().to_owned()
    }

    /// The connection test of the customer's role with `extra` settings, before saving.
    async fn test_role(&self, extra: Value) -> Value {
        let body = self.role_body(&self.customer.role_arn, extra);
        let (status, report) = self
            .stack
            .post("/api/v1/delivery-destinations/test", &body)
            .await;
        assert_eq!(status, 200, "{report}");
        report
    }

    fn as_owner(&self, script: &str, last: &str) -> Value {
        let admin = &self.fleet.admin;
        let out = self
            .moto
            .python(
                script,
                &[
                    &self.moto.endpoint(),
                    &admin.access_key_id,
                    &admin.secret_access_key,
                    BUCKET,
                    last,
                ],
            )
            .expect("boto3 reads back");
        serde_json::from_str(out.trim()).unwrap()
    }

    /// Sessions the workers assumed for destination `id` (the tests' own are `courier-test-…`).
    fn worker_sessions(&self, id: &str) -> Vec<courier_test_support::moto::AssumedRole> {
        let name = format!("courier-{id}");
        self.moto
            .assumed_roles()
            .unwrap()
            .into_iter()
            .filter(|r| r.session_name == name)
            .collect()
    }

    /// Nothing the fleet must keep to itself was said in a response or a log.
    fn assert_no_fleet_secret(&self) {
        let said = self.stack.everything_said();
        assert!(!said.contains(&self.fleet.fleet.secret_access_key));
    }
}

fn steps(report: &Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_owned(),
                s["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_destination_is_tested_and_delivers_with_kms_class_and_tags_assuming_once() {
    let w = World::start(1).await;
    let body = w.role_body(
        &w.customer.role_arn,
        json!({
            "serverSideEncryption": "aws:kms",
            "kmsKeyId": w.customer.kms_key_arn,
            "storageClass": "STANDARD_IA",
            "tags": {"source": "courier", "team": "data eng"},
            "cannedAcl": "bucket-owner-full-control",
        }),
    );
    let (status, created) = w.stack.post("/api/v1/delivery-destinations", &body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["s3"]["credentials"], "ROLE");
    assert_eq!(created["s3"]["roleArn"], w.customer.role_arn.as_str());
    assert_eq!(created["s3"]["externalId"], w.external_id.as_str());
    assert_eq!(created["s3"]["storageClass"], "STANDARD_IA");

    // The connection test: both STS steps pass (the role requires the ExternalId), HeadBucket
    // is not permitted (no s3:ListBucket, as in the minimal policy), the writes pass.
    let (status, report) = w
        .stack
        .post(
            &format!("/api/v1/delivery-destinations/{id}/test"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        steps(&report),
        [
            ("ASSUME_ROLE", "PASSED"),
            ("ASSUME_ROLE_WITHOUT_EXTERNAL_ID", "PASSED"),
            ("HEAD_BUCKET", "WARNING"),
            ("PUT_OBJECT", "PASSED"),
            ("DELETE_OBJECT", "PASSED"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned())),
        "{report}"
    );
    assert_eq!(report["ok"], true, "{report}");

    // Three deliveries, one AssumeRole: the worker's cached client keeps the credentials.
    let mut keys = Vec::new();
    for i in 0..3 {
        let d = w
            .stack
            .enqueue(&id, &format!("job-{i}"), &format!("inv-{i}"))
            .await;
        let rec = w.stack.wait_final(&d, WAIT).await;
        assert_eq!(rec["status"], "DELIVERED", "{rec}");
        keys.push(rec["key"].as_str().unwrap().to_owned());
    }
    let sessions = w.worker_sessions(&id);
    assert_eq!(
        sessions.len(),
        1,
        "one AssumeRole for three deliveries: {sessions:?}"
    );
    assert_eq!(
        sessions[0].external_id.as_deref(),
        Some(w.external_id.as_str())
    );
    assert_eq!(sessions[0].role_arn, w.customer.role_arn);

    let listed = w.as_owner(LIST, PREFIX);
    keys.sort();
    assert_eq!(
        listed,
        json!(keys),
        "exactly the delivered objects (no probe left)"
    );
    for key in listed.as_array().unwrap() {
        let key = key.as_str().unwrap();
        let obj = w.as_owner(READ_BACK, key);
        assert_eq!(obj["sse"], "aws:kms", "{key}: {obj}");
        assert_eq!(obj["kmsKeyId"], w.customer.kms_key_arn.as_str(), "{obj}");
        assert_eq!(obj["storageClass"], "STANDARD_IA", "{obj}");
        assert_eq!(
            obj["tags"],
            json!({"source": "courier", "team": "data eng"})
        );
        assert!(
            obj["body"].as_str().unwrap().starts_with("hotel,score"),
            "{obj}"
        );
    }
    w.assert_no_fleet_secret();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_assumable_without_the_external_id_fails_the_test_as_a_confused_deputy() {
    let w = World::start(0).await;
    let body = w.role_body(&w.customer.open_role_arn, json!({}));
    let (status, report) = w
        .stack
        .post("/api/v1/delivery-destinations/test", &body)
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(
        steps(&report)[..2],
        [
            ("ASSUME_ROLE".to_owned(), "PASSED".to_owned()),
            (
                "ASSUME_ROLE_WITHOUT_EXTERNAL_ID".to_owned(),
                "FAILED".to_owned()
            ),
        ],
        "{report}"
    );
    let error = &report["steps"][1]["error"];
    assert_eq!(error["code"], "RoleAssumableWithoutExternalId", "{report}");
    let hint = error["hint"].as_str().unwrap();
    assert!(
        hint.contains("sts:ExternalId") && hint.contains("confused deputy"),
        "{hint}"
    );
    // Nothing was written with a role that fails the test.
    assert_eq!(steps(&report)[3].1, "SKIPPED");
    w.assert_no_fleet_secret();
}

#[tokio::test(flavor = "multi_thread")]
async fn another_tenant_naming_the_role_is_refused_at_assume_role_and_its_delivery_fails() {
    let w = World::start(1).await;
    // globex names acme's role: globex's ExternalId is not the one the trust policy needs.
    let body = w.role_body(&w.customer.role_arn, json!({}));
    let (status, created) = w
        .stack
        .call(
            reqwest::Method::POST,
            "/api/v1/delivery-destinations",
            Some(OTHER_TOKEN),
            Some(serde_json::to_vec(&body).unwrap()),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_ne!(created["s3"]["externalId"], w.external_id.as_str());
    let (_, report) = w
        .stack
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/delivery-destinations/{id}/test"),
            Some(OTHER_TOKEN),
            None,
        )
        .await;
    assert_eq!(report["ok"], false, "{report}");
    let first = &report["steps"][0];
    assert_eq!(first["step"], "ASSUME_ROLE", "{report}");
    assert_eq!(first["outcome"], "FAILED", "{report}");
    assert_eq!(first["error"]["code"], "AccessDenied", "{report}");
    let hint = first["error"]["hint"].as_str().unwrap();
    assert!(
        hint.contains("trust policy") && hint.contains("ExternalId"),
        "{hint}"
    );

    // A client-chosen ExternalId is refused, naming the field.
    let mut chosen = w.role_body(&w.customer.role_arn, json!({}));
    chosen["s3"]["externalId"] = w.external_id.as_str().into();
    let (status, err) = w
        .stack
        .call(
            reqwest::Method::POST,
            "/api/v1/delivery-destinations",
            Some(OTHER_TOKEN),
            Some(serde_json::to_vec(&chosen).unwrap()),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    assert!(err.to_string().contains("s3.externalId"), "{err}");

    // A delivery to it fails at once with AssumeRoleFailed: refused by STS, not retried.
    let delivery = json!({
        "destinationId": id, "jobId": "j1", "partnerInventoryId": "inv",
        "completedAt": "2026-06-07T10:00:00Z", "rows": [{"a": 1}]
    });
    let (status, accepted) = w
        .stack
        .call(
            reqwest::Method::POST,
            "/api/v1/deliveries",
            Some(OTHER_TOKEN),
            Some(serde_json::to_vec(&delivery).unwrap()),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let did = accepted["id"].as_str().unwrap();
    let deadline = Instant::now() + WAIT;
    let rec = loop {
        let (_, rec) = w
            .stack
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/deliveries/{did}"),
                Some(OTHER_TOKEN),
                None,
            )
            .await;
        if rec["status"] == "FAILED" || rec["status"] == "HELD" {
            break rec;
        }
        assert!(Instant::now() < deadline, "{rec}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(rec.to_string().contains("AssumeRoleFailed"), "{rec}");
    assert_eq!(w.as_owner(LIST, PREFIX), json!([]));
    w.assert_no_fleet_secret();
}

/// Sets the bucket's policy as its owner. argv: endpoint, id, secret, bucket, policy JSON.
const PUT_POLICY: &str = r#"
import json, sys
import boto3
url, key_id, secret, bucket, policy = sys.argv[1:6]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                  aws_access_key_id=key_id, aws_secret_access_key=secret)
s3.put_bucket_policy(Bucket=bucket, Policy=policy)
print(json.dumps(True))
"#;

/// The customer's bucket policy, as AWS's documentation writes it: every PutObject under the
/// prefix must ask for encryption with KMS and give the bucket owner full control.
fn policy_requiring_kms_and_owner_full_control() -> String {
    let deny_unless = |key: &str, value: &str| {
        json!({
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": format!("arn:aws:s3:::{BUCKET}/{PREFIX}*"),
            "Condition": {"StringNotEquals": {key: value}},
        })
    };
    json!({
        "Version": "2012-10-17",
        "Statement": [
            deny_unless("s3:x-amz-server-side-encryption", "aws:kms"),
            deny_unless("s3:x-amz-acl", "bucket-owner-full-control"),
        ],
    })
    .to_string()
}

fn s(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_policy_requiring_write_options_fails_the_put_probe_with_a_hint_until_they_are_set()
 {
    let w = World::start(1).await;
    let policy = policy_requiring_kms_and_owner_full_control();
    assert_eq!(w.as_owner(PUT_POLICY, &policy), json!(true));
    let refused_at_put = s(&[
        ("ASSUME_ROLE", "PASSED"),
        ("ASSUME_ROLE_WITHOUT_EXTERNAL_ID", "PASSED"),
        ("HEAD_BUCKET", "WARNING"),
        ("PUT_OBJECT", "FAILED"),
        ("DELETE_OBJECT", "SKIPPED"),
    ]);

    // No write options: the policy refuses the probe's PutObject, and the hint names the
    // options a policy may require, none of which the destination sets.
    let report = w.test_role(json!({})).await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(steps(&report), refused_at_put, "{report}");
    let error = &report["steps"][3]["error"];
    assert_eq!(error["code"], "AccessDenied", "{report}");
    assert_eq!(error["httpStatus"], 403, "{report}");
    let hint = error["hint"].as_str().unwrap();
    for field in [
        "serverSideEncryption",
        "kmsKeyId",
        "storageClass",
        "tags",
        "cannedAcl",
        "s3:x-amz-server-side-encryption",
        "s3:x-amz-acl",
    ] {
        assert!(hint.contains(field), "{field}: {hint}");
    }
    assert!(!hint.contains("The request carried"), "{hint}");

    // The KMS key alone: the ACL the policy also requires is missing. The hint names what was
    // sent and what was not.
    let kms = json!({
        "serverSideEncryption": "aws:kms",
        "kmsKeyId": w.customer.kms_key_arn,
    });
    let report = w.test_role(kms.clone()).await;
    assert_eq!(steps(&report), refused_at_put, "{report}");
    let hint = report["steps"][3]["error"]["hint"].as_str().unwrap();
    assert!(
        hint.contains(&format!(
            "The request carried serverSideEncryption `aws:kms`, kmsKeyId `{}`",
            w.customer.kms_key_arn
        )),
        "{hint}"
    );
    assert!(
        hint.contains(
            "does not set storageClass, tags, cannedAcl (e.g. `bucket-owner-full-control`)"
        ),
        "{hint}"
    );

    // Both: the probe passes, and so does a delivery, written with the customer's key.
    let mut both = kms;
    both["cannedAcl"] = "bucket-owner-full-control".into();
    let report = w.test_role(both.clone()).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        steps(&report)[3],
        s(&[("PUT_OBJECT", "PASSED")])[0],
        "{report}"
    );
    let body = w.role_body(&w.customer.role_arn, both);
    let (status, created) = w.stack.post("/api/v1/delivery-destinations", &body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let d = w.stack.enqueue(id, "job-kms", "inv-kms").await;
    let rec = w.stack.wait_final(&d, WAIT).await;
    assert_eq!(rec["status"], "DELIVERED", "{rec}");
    let key = rec["key"].as_str().unwrap();
    assert_eq!(
        w.as_owner(LIST, PREFIX),
        json!([key]),
        "no probe object left"
    );
    let obj = w.as_owner(READ_BACK, key);
    assert_eq!(obj["sse"], "aws:kms", "{obj}");
    assert_eq!(obj["kmsKeyId"], w.customer.kms_key_arn.as_str(), "{obj}");
    w.assert_no_fleet_secret();
}

/// Rows of about a kilobyte each, as NDJSON: `count` good ones, then a line that is not
/// JSON when `corrupt`.
fn ndjson_rows(count: usize, corrupt: bool) -> Vec<u8> {
    let pad = "x".repeat(1000);
    let mut out = Vec::with_capacity(count * 1024 + 32);
    for i in 0..count {
        out.extend_from_slice(format!("{{\"hotel\":\"H{i:06}\",\"pad\":\"{pad}\"}}\n").as_bytes());
    }
    if corrupt {
        out.extend_from_slice(b"this line is not JSON\n");
    }
    out
}

/// A local HTTP server for `rowsUrl`s: `/big.ndjson` is 12,000 rows (about 12 MB, three
/// parts of 5 MiB), `/corrupt.ndjson` the same followed by a line that is not JSON, so its
/// render fails after parts were uploaded.
async fn rows_server() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let big = std::sync::Arc::new(ndjson_rows(12_000, false));
    let corrupt = std::sync::Arc::new(ndjson_rows(12_000, true));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (big, corrupt) = (big.clone(), corrupt.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = 0;
                while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf[got..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..got]);
                let body = if head.starts_with("GET /big.ndjson") {
                    big
                } else if head.starts_with("GET /corrupt.ndjson") {
                    corrupt
                } else {
                    let _ = sock
                        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    port
}

/// What Courier's processes asked of the bucket: the S3 operations it makes, each with the
/// expected bucket owner it named.
const COURIER_OPERATIONS: [&str; 7] = [
    "HeadBucket",
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "DeleteObject",
];

fn operations_naming(w: &World, owner: Option<&str>) -> std::collections::BTreeSet<&'static str> {
    w.moto
        .s3_requests()
        .unwrap()
        .iter()
        .filter(|r| r.expected_bucket_owner.as_deref() == owner)
        .map(|r| r.operation())
        .filter(|op| COURIER_OPERATIONS.contains(op))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_expected_bucket_owner_is_named_on_every_request_and_another_owner_is_refused() {
    let rows_port = rows_server().await;
    let w = World::start_with(1, &[("COURIER_PART_SIZE_MB", "5")], &[rows_port]).await;
    let rows_url = |path: &str| format!("http://127.0.0.1:{rows_port}/{path}");
    let right = json!({"expectedBucketOwner": MOTO_ACCOUNT});
    let wrong = json!({"expectedBucketOwner": "210987654321"});

    // The right owner: the test passes, a small and a multipart delivery land, and a
    // multipart upload whose rows fail mid-way is aborted.
    let report = w.test_role(right.clone()).await;
    assert_eq!(report["ok"], true, "{report}");
    let (status, created) = w
        .stack
        .post(
            "/api/v1/delivery-destinations",
            &w.role_body(&w.customer.role_arn, right),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["s3"]["expectedBucketOwner"], MOTO_ACCOUNT);
    let id = created["id"].as_str().unwrap().to_owned();
    let small = w.stack.enqueue(&id, "job-small", "inv-small").await;
    let rec = w.stack.wait_final(&small, WAIT).await;
    assert_eq!(rec["status"], "DELIVERED", "{rec}");
    let big = w
        .enqueue_rows_url(&id, "inv-big", rows_url("big.ndjson"))
        .await;
    let rec = w.stack.wait_final(&big, WAIT).await;
    assert_eq!(rec["status"], "DELIVERED", "{rec}");
    assert_eq!(rec["rows"], 12_000, "{rec}");
    assert!(
        rec["etag"].as_str().unwrap().ends_with("-3"),
        "a multipart upload of three parts: {rec}"
    );
    let corrupt = w
        .enqueue_rows_url(&id, "inv-corrupt", rows_url("corrupt.ndjson"))
        .await;
    let rec = w.stack.wait_final(&corrupt, WAIT).await;
    assert_eq!(rec["status"], "FAILED", "{rec}");
    assert_eq!(rec["error"]["code"], "RenderFailed", "{rec}");
    // The role may abort (the README's permissions policy grants it): no parts are left.
    assert_eq!(w.as_owner(OPEN_UPLOADS, PREFIX), json!([]));
    // Every request of every kind named the owner; none went without it.
    assert_eq!(
        operations_naming(&w, Some(MOTO_ACCOUNT)),
        COURIER_OPERATIONS.into_iter().collect(),
        "{:#?}",
        w.moto.s3_requests().unwrap()
    );
    assert_eq!(
        operations_naming(&w, None),
        Default::default(),
        "requests without the expected owner: {:#?}",
        w.moto.s3_requests().unwrap()
    );

    // Another owner: the test fails at PutObject with a hint about the bucket's owner, and
    // every delivery fails at once (AccessDenied is permanent), single or multipart, with
    // nothing written.
    let report = w.test_role(wrong.clone()).await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(
        steps(&report),
        s(&[
            ("ASSUME_ROLE", "PASSED"),
            ("ASSUME_ROLE_WITHOUT_EXTERNAL_ID", "PASSED"),
            ("HEAD_BUCKET", "WARNING"),
            ("PUT_OBJECT", "FAILED"),
            ("DELETE_OBJECT", "SKIPPED"),
        ]),
        "{report}"
    );
    let error = &report["steps"][3]["error"];
    assert_eq!(error["code"], "AccessDenied", "{report}");
    let hint = error["hint"].as_str().unwrap();
    assert!(
        hint.contains("expected bucket owner `210987654321`") && hint.contains("another account"),
        "{hint}"
    );
    let head_hint = report["steps"][2]["error"]["hint"].as_str().unwrap();
    assert!(head_hint.contains("another account"), "{head_hint}");
    let (status, created) = w
        .stack
        .post(
            "/api/v1/delivery-destinations",
            &w.role_body(&w.customer.role_arn, wrong),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let other = created["id"].as_str().unwrap().to_owned();
    let before = w.as_owner(LIST, PREFIX);
    let small = w.stack.enqueue(&other, "job-small-2", "inv-small-2").await;
    let big = w
        .enqueue_rows_url(&other, "inv-big-2", rows_url("big.ndjson"))
        .await;
    for d in [small, big] {
        let rec = w.stack.wait_final(&d, WAIT).await;
        assert_eq!(rec["status"], "FAILED", "{rec}");
        assert_eq!(rec["error"]["code"], "AccessDenied", "{rec}");
        assert!(
            rec["error"]["message"]
                .as_str()
                .unwrap()
                .contains("expected bucket owner 210987654321"),
            "{rec}"
        );
        assert_eq!(
            rec["attempts"].as_array().unwrap().len(),
            1,
            "not retried: {rec}"
        );
    }
    assert_eq!(w.as_owner(LIST, PREFIX), before, "nothing written");
    let refused = operations_naming(&w, Some("210987654321"));
    for op in ["HeadBucket", "PutObject", "CreateMultipartUpload"] {
        assert!(refused.contains(op), "{op} not seen: {refused:?}");
    }
    w.assert_no_fleet_secret();
}
