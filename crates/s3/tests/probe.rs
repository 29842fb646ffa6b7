//! The connection test against a real Garage, and against endpoints that do not answer.
//!
//! Garage differs from AWS in the codes it sends: a wrong secret and an unknown access key
//! id both come back as `AccessDenied` (messages `Forbidden: Invalid signature` and
//! `Forbidden: No such key: GK…`) where AWS sends `SignatureDoesNotMatch` and
//! `InvalidAccessKeyId`; the hints still give the credentials advice. A key with only read
//! permission may HeadBucket (AWS would need `s3:ListBucket`), and a key with only write
//! permission may not.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_core::destination::{
    BucketName, Credentials, EndpointUrl, PathPrefix, Region, S3Settings, Secret, StaticCredentials,
};
use courier_egress::EgressPolicy;
use courier_s3::{ProbeReport, ProbeStepName, StepOutcome, test_connection};
use courier_test_support::{GarageServer, S3Key, free_port};

use StepOutcome::{Failed, Passed, Skipped, Warning};

const TIMEOUT: Duration = Duration::from_secs(5);

fn start() -> GarageServer {
    GarageServer::start().expect("start garage")
}

/// A destination on `endpoint` in Garage's region, signed with `id` and `secret`.
fn settings(endpoint: &str, bucket: &str, prefix: &str, id: &str, secret: &str) -> S3Settings {
    S3Settings {
        bucket: BucketName::parse(bucket).unwrap(),
        region: Region::parse("garage").unwrap(),
        endpoint_url: Some(EndpointUrl::parse(endpoint).unwrap()),
        path_prefix: PathPrefix::parse(prefix).unwrap(),
        credentials: Credentials::Static(StaticCredentials {
            access_key_id: id.to_owned(),
            secret_access_key: Secret::new(secret),
        }),
        write: Default::default(),
    }
}

fn garage_settings(server: &GarageServer, bucket: &str, key: &S3Key) -> S3Settings {
    settings(
        &server.endpoint(),
        bucket,
        "incoming/",
        &key.id,
        &key.secret,
    )
}

/// An egress policy that lets the test reach exactly its endpoint's port on 127.0.0.1, as
/// an operator's `COURIER_EGRESS_ALLOW=127.0.0.1:<port>` would.
fn allowing_endpoint(s3: &S3Settings) -> Arc<EgressPolicy> {
    let endpoint = s3.endpoint_url.as_ref().expect("tests use an endpoint");
    let port = url::Url::parse(endpoint.as_str())
        .unwrap()
        .port_or_known_default()
        .unwrap();
    Arc::new(EgressPolicy::from_settings(&format!("127.0.0.1:{port}"), false).unwrap())
}

/// Runs the test and prints the report, so that a failing assertion shows all of it.
async fn probe(s3: &S3Settings, timeout: Duration) -> ProbeReport {
    probe_with(s3, timeout, &allowing_endpoint(s3)).await
}

async fn probe_with(s3: &S3Settings, timeout: Duration, egress: &Arc<EgressPolicy>) -> ProbeReport {
    let report = test_connection(s3, timeout, egress, "courier-test").await;
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    report
}

fn outcomes(r: &ProbeReport) -> Vec<StepOutcome> {
    r.steps.iter().map(|s| s.outcome).collect()
}

fn error(r: &ProbeReport, step: ProbeStepName) -> &courier_s3::ProbeError {
    r.steps
        .iter()
        .find(|s| s.step == step)
        .and_then(|s| s.error.as_ref())
        .unwrap_or_else(|| panic!("{step} has no error"))
}

/// A secret with its first character moved to the end: same length and alphabet, wrong.
fn altered(secret: &str) -> String {
    format!("{}{}", &secret[1..], &secret[..1])
}

#[tokio::test]
async fn a_good_destination_passes_and_leaves_nothing_behind() {
    let server = start();
    let key = server.bucket_with_key("results").unwrap();
    let report = probe(&garage_settings(&server, "results", &key), TIMEOUT).await;

    assert!(report.ok);
    assert_eq!(outcomes(&report), [Passed, Passed, Passed]);
    assert_eq!(
        report.summary,
        "Connection works: Courier can write to s3://results/incoming/."
    );
    let probe_key = report.steps[1]
        .key
        .as_deref()
        .expect("PutObject names its key");
    assert!(
        probe_key.starts_with("incoming/.courier-connection-test-"),
        "{probe_key}"
    );
    assert_eq!(report.steps[2].key.as_deref(), Some(probe_key));
    assert!(report.steps.iter().all(|s| s.error.is_none()));

    let listed = server
        .client(&key)
        .await
        .list_objects_v2()
        .bucket("results")
        .prefix("incoming/")
        .send()
        .await
        .expect("ListObjectsV2");
    assert!(listed.contents().is_empty(), "{:?}", listed.contents());
}

#[tokio::test]
async fn a_missing_bucket_fails_at_head_bucket_and_skips_the_writes() {
    let server = start();
    let key = server.bucket_with_key("results").unwrap();
    let report = probe(&garage_settings(&server, "no-such-bucket", &key), TIMEOUT).await;

    assert!(!report.ok);
    assert_eq!(outcomes(&report), [Failed, Skipped, Skipped]);
    // A HEAD response has no body: the code is the SDK's name for the bare 404.
    let e = error(&report, ProbeStepName::HeadBucket);
    assert_eq!(e.code, "NotFound");
    assert_eq!(e.http_status, Some(404));
    assert!(
        e.hint.contains("bucket `no-such-bucket` does not exist"),
        "{}",
        e.hint
    );
    assert!(e.hint.contains("case-sensitive"), "{}", e.hint);
    assert!(e.hint.contains(&server.endpoint()), "{}", e.hint);
    assert_eq!(report.summary, "Connection failed at HeadBucket: NotFound.");
}

#[tokio::test]
async fn a_read_only_key_fails_at_put_object_with_access_denied() {
    let server = start();
    server.create_bucket("readonly").unwrap();
    let reader = server.create_key("reader").unwrap();
    server.allow("readonly", &reader, true, false).unwrap();
    let report = probe(&garage_settings(&server, "readonly", &reader), TIMEOUT).await;

    assert!(!report.ok);
    // Garage lets a key with read permission HeadBucket.
    assert_eq!(outcomes(&report), [Passed, Failed, Skipped]);
    let e = error(&report, ProbeStepName::PutObject);
    assert_eq!(e.code, "AccessDenied");
    assert_eq!(e.http_status, Some(403));
    assert_eq!(
        e.message,
        "Forbidden: Operation is not allowed for this key."
    );
    assert!(
        e.hint.contains("arn:aws:s3:::readonly/incoming/*"),
        "{}",
        e.hint
    );
    assert!(e.hint.contains("path prefix `incoming/`"), "{}", e.hint);
    assert_eq!(
        report.summary,
        "Connection failed at PutObject: AccessDenied."
    );
}

#[tokio::test]
async fn a_write_only_key_warns_at_head_bucket_and_passes() {
    let server = start();
    server.create_bucket("dropbox").unwrap();
    let writer = server.create_key("writer").unwrap();
    server.allow("dropbox", &writer, false, true).unwrap();
    let report = probe(&garage_settings(&server, "dropbox", &writer), TIMEOUT).await;

    assert!(report.ok, "writes passed, so deliveries work");
    assert_eq!(outcomes(&report), [Warning, Passed, Passed]);
    let e = error(&report, ProbeStepName::HeadBucket);
    assert_eq!(
        (e.code.as_str(), e.http_status),
        ("AccessDenied", Some(403))
    );
    assert!(e.hint.contains("s3:ListBucket"), "{}", e.hint);
    assert_eq!(
        report.summary,
        "Connection works: Courier can write to s3://dropbox/incoming/ (HeadBucket was not \
         permitted, which is fine)."
    );
}

#[tokio::test]
async fn a_wrong_secret_fails_at_put_object_with_the_credentials_hint() {
    let server = start();
    let key = server.bucket_with_key("results").unwrap();
    let wrong = altered(&key.secret);
    let s3 = settings(&server.endpoint(), "results", "incoming/", &key.id, &wrong);
    let report = probe(&s3, TIMEOUT).await;

    assert!(!report.ok);
    // HEAD gets a bare 403; PUT gets Garage's code and message (AWS: SignatureDoesNotMatch).
    assert_eq!(outcomes(&report), [Warning, Failed, Skipped]);
    assert_eq!(
        error(&report, ProbeStepName::HeadBucket).code,
        "AccessDenied"
    );
    let e = error(&report, ProbeStepName::PutObject);
    assert_eq!(e.code, "AccessDenied");
    assert_eq!(e.http_status, Some(403));
    assert_eq!(e.message, "Forbidden: Invalid signature");
    assert!(
        e.hint.contains("secretAccessKey does not match"),
        "{}",
        e.hint
    );
    assert!(e.hint.contains("fresh credentials"), "{}", e.hint);
}

#[tokio::test]
async fn an_unknown_key_id_fails_at_put_object_with_the_credentials_hint() {
    let server = start();
    let key = server.bucket_with_key("results").unwrap();
    let unknown = format!("GK{}", "0".repeat(24));
    let s3 = settings(
        &server.endpoint(),
        "results",
        "incoming/",
        &unknown,
        &key.secret,
    );
    let report = probe(&s3, TIMEOUT).await;

    assert!(!report.ok);
    assert_eq!(outcomes(&report), [Warning, Failed, Skipped]);
    let e = error(&report, ProbeStepName::PutObject);
    // AWS: InvalidAccessKeyId. Garage names the key; the report masks it.
    assert_eq!(e.code, "AccessDenied");
    assert_eq!(e.http_status, Some(403));
    assert_eq!(e.message, "Forbidden: No such key: GK00…0000");
    assert!(
        e.hint.contains("does not know the access key `GK00…0000`"),
        "{}",
        e.hint
    );
    assert!(e.hint.contains("fresh credentials"), "{}", e.hint);
}

#[tokio::test]
async fn a_closed_port_fails_fast_with_connection_failed() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let s3 = settings(
        &endpoint,
        "results",
        "incoming/",
        "GK0123456789",
        "secret-value",
    );
    let started = Instant::now();
    let report = probe(&s3, TIMEOUT).await;
    let elapsed = started.elapsed();

    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert!(!report.ok);
    assert_eq!(outcomes(&report), [Failed, Skipped, Skipped]);
    let e = error(&report, ProbeStepName::HeadBucket);
    assert_eq!(e.code, "ConnectionFailed");
    assert_eq!(e.http_status, None);
    assert!(e.hint.contains("does not answer"), "{}", e.hint);
    assert!(e.hint.contains(&endpoint), "{}", e.hint);
    assert_eq!(
        report.summary,
        "Connection failed at HeadBucket: ConnectionFailed."
    );
}

#[tokio::test]
async fn an_endpoint_that_never_answers_times_out() {
    // Accepts connections (the kernel completes the handshake) but never reads or answers.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let s3 = settings(
        &endpoint,
        "results",
        "incoming/",
        "GK0123456789",
        "secret-value",
    );
    let started = Instant::now();
    let report = probe(&s3, Duration::from_secs(1)).await;
    let elapsed = started.elapsed();
    drop(listener);

    assert!(
        (Duration::from_millis(900)..Duration::from_secs(4)).contains(&elapsed),
        "took {elapsed:?}"
    );
    assert!(!report.ok);
    assert_eq!(outcomes(&report), [Failed, Skipped, Skipped]);
    let e = error(&report, ProbeStepName::HeadBucket);
    assert_eq!(e.code, "Timeout");
    assert!(e.hint.contains("does not answer"), "{}", e.hint);
    assert!(e.hint.contains("did not answer in time"), "{}", e.hint);
}

#[tokio::test]
async fn no_report_ever_contains_the_secret() {
    let server = start();
    let key = server.bucket_with_key("results").unwrap();
    server.create_bucket("readonly").unwrap();
    server.allow("readonly", &key, true, false).unwrap();
    let wrong = altered(&key.secret);
    let unknown = format!("GK{}", "0".repeat(24));
    let e = server.endpoint();
    let cases = [
        settings(&e, "results", "incoming/", &key.id, &key.secret),
        settings(&e, "no-such-bucket", "incoming/", &key.id, &key.secret),
        settings(&e, "results", "incoming/", &key.id, &wrong),
        settings(&e, "results", "incoming/", &unknown, &key.secret),
    ];
    for s3 in &cases {
        let json = serde_json::to_string(&probe(s3, TIMEOUT).await).unwrap();
        assert!(!json.contains(&key.secret), "{json}");
        assert!(!json.contains(&wrong), "{json}");
        assert!(!json.contains(&key.id), "key ids are shown masked: {json}");
    }
}

#[tokio::test]
async fn an_endpoint_outside_the_egress_policy_is_refused_before_any_request() {
    let server = start();
    let key = server.bucket_with_key("results").unwrap();
    let port = url::Url::parse(&server.endpoint()).unwrap().port().unwrap();

    // Written as an address: refused before a client is built.
    let literal = garage_settings(&server, "results", &key);
    let report = probe_with(&literal, TIMEOUT, &Arc::new(EgressPolicy::public_only())).await;
    assert!(!report.ok);
    assert_eq!(outcomes(&report), [Failed, Skipped, Skipped]);
    let e = error(&report, ProbeStepName::HeadBucket);
    assert_eq!(e.code, "EgressRefused");
    assert!(
        e.message
            .contains("`127.0.0.1` leads to a special-purpose address (loopback)"),
        "{}",
        e.message
    );
    assert!(e.hint.contains("COURIER_EGRESS_ALLOW"), "{}", e.hint);

    // Written as a name: refused when the name resolves, at connect time, unless the
    // resolved address and port are allowed.
    let named = settings(
        &format!("http://localhost:{port}"),
        "results",
        "incoming/",
        &key.id,
        &key.secret,
    );
    let report = probe_with(&named, TIMEOUT, &Arc::new(EgressPolicy::public_only())).await;
    assert_eq!(outcomes(&report), [Failed, Skipped, Skipped]);
    let e = error(&report, ProbeStepName::HeadBucket);
    assert_eq!(e.code, "EgressRefused");
    assert!(e.message.contains("`localhost` leads to"), "{}", e.message);

    let other_port = Arc::new(
        EgressPolicy::from_settings(&format!("127.0.0.1:{},[::1]:{}", port + 1, port + 1), false)
            .unwrap(),
    );
    let report = probe_with(&named, TIMEOUT, &other_port).await;
    assert_eq!(
        error(&report, ProbeStepName::HeadBucket).code,
        "EgressRefused"
    );

    let this_port = Arc::new(
        EgressPolicy::from_settings(&format!("127.0.0.1:{port},[::1]:{port}"), false).unwrap(),
    );
    let report = probe_with(&named, TIMEOUT, &this_port).await;
    assert!(report.ok, "allowed by address and port");
}
