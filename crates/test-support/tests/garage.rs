//! The real Garage behaves as Courier expects: objects round-trip through `aws-sdk-s3`, and
//! permission and bucket problems come back with the exact S3 error codes Courier classifies.

use std::time::Instant;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use courier_test_support::{GarageServer, S3Key};

fn start() -> GarageServer {
    let started = Instant::now();
    let server = GarageServer::start().expect("start garage");
    eprintln!("garage started in {:?}", started.elapsed());
    server
}

async fn put(
    server: &GarageServer,
    key: &S3Key,
    bucket: &str,
    object: &str,
    body: &[u8],
) -> Result<(), String> {
    server
        .client(key)
        .await
        .put_object()
        .bucket(bucket)
        .key(object)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .map(|_| ())
        .map_err(service_code)
}

async fn get(
    server: &GarageServer,
    key: &S3Key,
    bucket: &str,
    object: &str,
) -> Result<Vec<u8>, String> {
    let out = server
        .client(key)
        .await
        .get_object()
        .bucket(bucket)
        .key(object)
        .send()
        .await
        .map_err(service_code)?;
    Ok(out.body.collect().await.expect("read body").to_vec())
}

/// The S3 error code (`ProvideErrorMetadata::code`) of a service error; panics on other
/// (transport, timeout…) errors.
fn service_code<E, R>(err: SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    match err.as_service_error() {
        Some(service_err) => service_err
            .code()
            .unwrap_or_else(|| panic!("service error without a code: {service_err:?}"))
            .to_owned(),
        None => panic!("expected a service error, got {err:?}"),
    }
}

#[tokio::test]
async fn put_then_get_round_trips_bytes() {
    let server = start();
    assert_eq!(server.region(), "garage");
    assert!(server.endpoint().starts_with("http://127.0.0.1:"));
    let key = server.bucket_with_key("roundtrip").expect("bucket and key");
    assert!(key.id.starts_with("GK"), "unexpected key id {key:?}");
    assert_eq!(key.name, "roundtrip-key");

    let body: Vec<u8> = (0..=255u8).cycle().take(3 * 1024 * 1024 + 17).collect();
    put(&server, &key, "roundtrip", "results/job-1.csv", &body)
        .await
        .expect("PutObject");
    let got = get(&server, &key, "roundtrip", "results/job-1.csv")
        .await
        .expect("GetObject");
    assert_eq!(got, body);
}

#[tokio::test]
async fn read_only_key_gets_access_denied_on_put() {
    let server = start();
    server.create_bucket("readonly").expect("create bucket");
    let key = server.create_key("reader").expect("create key");
    server
        .allow("readonly", &key, true, false)
        .expect("allow read");

    let code = put(&server, &key, "readonly", "x.txt", b"nope")
        .await
        .expect_err("read-only key must not write");
    assert_eq!(code, "AccessDenied");
    let code = get(&server, &key, "readonly", "missing.txt")
        .await
        .expect_err("object does not exist");
    assert_eq!(code, "NoSuchKey");
}

#[tokio::test]
async fn denied_write_gets_access_denied() {
    let server = start();
    let key = server.bucket_with_key("revoked").expect("bucket and key");
    put(&server, &key, "revoked", "a.txt", b"ok")
        .await
        .expect("PutObject before deny");

    server
        .deny("revoked", &key, false, true)
        .expect("deny write");
    let code = put(&server, &key, "revoked", "b.txt", b"nope")
        .await
        .expect_err("write was denied");
    assert_eq!(code, "AccessDenied");
    assert_eq!(
        get(&server, &key, "revoked", "a.txt").await.as_deref(),
        Ok(&b"ok"[..])
    );
}

#[tokio::test]
async fn missing_bucket_gets_no_such_bucket() {
    let server = start();
    let key = server.bucket_with_key("exists").expect("bucket and key");
    let code = put(&server, &key, "does-not-exist", "x.txt", b"data")
        .await
        .expect_err("bucket does not exist");
    assert_eq!(code, "NoSuchBucket");
}

#[tokio::test]
async fn key_without_permissions_gets_access_denied() {
    let server = start();
    server.create_bucket("private").expect("create bucket");
    let stranger = server.create_key("stranger").expect("create key");
    let code = put(&server, &stranger, "private", "x.txt", b"data")
        .await
        .expect_err("key has no permission on the bucket");
    assert_eq!(code, "AccessDenied");
}

#[tokio::test]
async fn data_survives_stop_and_start_again() {
    let mut server = start();
    let endpoint = server.endpoint();
    let key = server.bucket_with_key("durable").expect("bucket and key");
    put(&server, &key, "durable", "kept.txt", b"still here")
        .await
        .expect("PutObject");

    server.stop();
    assert!(!server.is_running());
    let started = Instant::now();
    server.start_again().expect("start garage again");
    eprintln!("garage restarted in {:?}", started.elapsed());
    assert_eq!(server.endpoint(), endpoint, "restart keeps the ports");

    assert_eq!(
        get(&server, &key, "durable", "kept.txt").await.as_deref(),
        Ok(&b"still here"[..])
    );
}

#[test]
fn servers_start_in_parallel() {
    let started = Instant::now();
    let servers: Vec<GarageServer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3).map(|_| s.spawn(GarageServer::start)).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic").expect("start garage"))
            .collect()
    });
    eprintln!(
        "3 garage servers started in parallel in {:?}",
        started.elapsed()
    );
    let mut endpoints: Vec<String> = servers.iter().map(GarageServer::endpoint).collect();
    endpoints.sort();
    endpoints.dedup();
    assert_eq!(endpoints.len(), 3);
    for server in &servers {
        server.bucket_with_key("same-name").expect("bucket and key");
    }
}
