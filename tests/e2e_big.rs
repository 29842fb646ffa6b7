//! Big results and a fair fleet: rows by reference streamed into multipart uploads in
//! bounded memory, checksums the store verifies, aborted uploads that leave no parts
//! behind, the request size limit, and the per-destination upload cap that keeps a hung
//! endpoint from starving everyone else.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use common::{BUCKET, Stack};
use redis::AsyncCommands;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(180);
const STAGING: &str = common::STAGING_BUCKET;

/// Staging bucket env for workers that read `s3://` row references.
fn staging_env(stack: &Stack, key: &courier_test_support::S3Key) -> Vec<(&'static str, String)> {
    vec![
        ("COURIER_STAGING_BUCKET", STAGING.to_owned()),
        ("COURIER_STAGING_ENDPOINT", stack.garage.endpoint()),
        ("COURIER_STAGING_REGION", stack.garage.region().to_owned()),
        ("COURIER_STAGING_ACCESS_KEY_ID", key.id.clone()),
        ("COURIER_STAGING_SECRET_ACCESS_KEY", key.secret.clone()),
    ]
}

/// A stack with a staging bucket and one worker that reads it, with `extra` environment.
async fn stack_reading_staging(
    extra: &[(&'static str, String)],
) -> (Stack, courier_test_support::S3Key) {
    let mut stack = Stack::start(0).await;
    let staging_key = stack.garage.bucket_with_key(STAGING).unwrap();
    let mut env = staging_env(&stack, &staging_key);
    env.extend_from_slice(extra);
    stack.add_worker_with_env(&env);
    stack.wait_worker(0).await;
    (stack, staging_key)
}

/// `n` rows of NDJSON, gzip-compressed.
fn ndjson_gz(n: usize, poison_at: Option<usize>) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for i in 0..n {
        if Some(i) == poison_at {
            gz.write_all(b"this line is not json\n").unwrap();
            continue;
        }
        writeln!(
            gz,
            r#"{{"hotelId":"H-{i}","name":"Hotel {i}, \"Grand\"","city":"Paris","score":{},"rooms":{},"open":{}}}"#,
            i % 10,
            i % 500,
            i % 2 == 0
        )
        .unwrap();
    }
    gz.finish().unwrap()
}

async fn stage(
    stack: &Stack,
    key: &courier_test_support::S3Key,
    name: &str,
    body: Vec<u8>,
) -> String {
    stack
        .garage
        .client(key)
        .await
        .put_object()
        .bucket(STAGING)
        .key(name)
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap();
    format!("s3://{STAGING}/{name}")
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_stream_through_a_multipart_upload_in_bounded_memory() {
    const ROWS: usize = 1_000_000;
    let (stack, staging_key) = stack_reading_staging(&[("COURIER_PART_SIZE_MB", "5".into())]).await;
    let url = stage(
        &stack,
        &staging_key,
        "acme/jobs/big.ndjson.gz",
        ndjson_gz(ROWS, None),
    )
    .await;
    let dest = stack
        .create_destination(&stack.destination_body("CSV", "GZIP", "big/"))
        .await;
    let body = json!({
        "destinationId": dest, "jobId": "job-big", "partnerInventoryId": "INV-BIG",
        "completedAt": "2026-06-07T10:00:00Z", "rowsUrl": url
    });
    let (s, resp) = stack.post("/api/v1/deliveries", &body).await;
    assert_eq!(s, 202, "{resp}");
    let rec = stack.wait_final(resp["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(rec["status"], "DELIVERED", "{rec}");
    assert_eq!(rec["rows"], ROWS as u64);
    let pid = stack.workers[0].0.child.id();
    let peak = peak_rss_kib(pid);
    println!(
        "1,000,000-row CSV.gz: {} bytes, worker peak RSS {} KiB",
        rec["bytes"], peak
    );
    assert!(
        peak < 100 * 1024,
        "worker peak RSS {peak} KiB is over 100 MiB"
    );

    // The object is complete: every row is there, and its MD5 is the recorded checksum.
    let key = "big/mapping_results_INV-BIG_2026-06-07.csv.gz";
    let obj = stack.get_object(key).await;
    let etag = obj.e_tag().unwrap_or_default().to_owned();
    assert!(
        etag.contains('-'),
        "a multipart upload's ETag ({etag}) names its parts"
    );
    let raw = obj.body.collect().await.unwrap().to_vec();
    assert_eq!(rec["bytes"], raw.len() as u64);
    use md5::Digest;
    let digest: String = md5::Md5::digest(&raw)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(rec["checksum"]["algorithm"], "MD5");
    assert_eq!(rec["checksum"]["value"], digest.as_str());
    let mut csv = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut csv).unwrap();
    let mut reader = csv::Reader::from_reader(&csv[..]);
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["hotelId", "name", "city", "score", "rooms", "open"]
    );
    let mut n = 0;
    let mut last = csv::StringRecord::new();
    for r in reader.records() {
        last = r.unwrap();
        n += 1;
    }
    assert_eq!(n, ROWS);
    assert_eq!(&last[0], "H-999999");
    assert_eq!(&last[1], "Hotel 999999, \"Grand\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_by_http_reference_small_results_in_one_put_and_the_size_limit() {
    let mut stack = Stack::start(0).await;
    stack.add_worker();
    stack.wait_worker(0).await;
    // An http server the worker fetches the rows from.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let rows = ndjson_gz(1_000, None);
    let app = axum::Router::new().route(
        "/rows.ndjson.gz",
        axum::routing::get(move || {
            let rows = rows.clone();
            async move { rows }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dest = stack
        .create_destination(&stack.destination_body("JSON", "NONE", "http/"))
        .await;
    let body = json!({
        "destinationId": dest, "jobId": "job-http", "partnerInventoryId": "INV-HTTP",
        "completedAt": "2026-06-07T10:00:00Z",
        "rowsUrl": format!("http://127.0.0.1:{port}/rows.ndjson.gz")
    });
    let (s, resp) = stack.post("/api/v1/deliveries", &body).await;
    assert_eq!(s, 202, "{resp}");
    let rec = stack.wait_final(resp["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(rec["status"], "DELIVERED", "{rec}");
    assert_eq!(rec["rows"], 1_000);
    let obj = stack
        .get_object("http/mapping_results_INV-HTTP_2026-06-07.json")
        .await;
    assert!(
        !obj.e_tag().unwrap().contains('-'),
        "a small result is one PutObject"
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&obj.body.collect().await.unwrap().to_vec()).unwrap();
    assert_eq!(rows.len(), 1_000);
    assert_eq!(rows[999]["hotelId"], "H-999");

    // A missing reference fails for good with a clear code.
    let mut missing = body.clone();
    missing["rowsUrl"] = format!("http://127.0.0.1:{port}/nope.ndjson").into();
    missing["partnerInventoryId"] = "INV-MISSING".into();
    let (_, resp) = stack.post("/api/v1/deliveries", &missing).await;
    let rec = stack.wait_final(resp["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(rec["status"], "FAILED");
    assert_eq!(rec["error"]["code"], "RowsUnavailable", "{rec}");

    // Inline rows over the request limit get a 413 that says what to do instead.
    let big_row = json!({"blob": "x".repeat(1024)});
    let rows: Vec<_> = (0..9 * 1024).map(|_| big_row.clone()).collect();
    let body = json!({
        "destinationId": dest, "jobId": "job-huge", "partnerInventoryId": "INV-HUGE",
        "completedAt": "2026-06-07T10:00:00Z", "rows": rows
    });
    let (s, resp) = stack.post("/api/v1/deliveries", &body).await;
    assert_eq!(s, 413, "{resp}");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rowsUrl"),
        "{resp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_multipart_upload_is_aborted_without_orphaned_parts() {
    let (stack, staging_key) = stack_reading_staging(&[("COURIER_PART_SIZE_MB", "5".into())]).await;
    // A corrupt line well past the first parts: the upload has begun when rendering fails.
    let url = stage(
        &stack,
        &staging_key,
        "acme/jobs/corrupt.ndjson.gz",
        ndjson_gz(300_000, Some(250_000)),
    )
    .await;
    let dest = stack
        .create_destination(&stack.destination_body("NDJSON", "NONE", "abort/"))
        .await;
    let body = json!({
        "destinationId": dest, "jobId": "job-corrupt", "partnerInventoryId": "INV-CORRUPT",
        "completedAt": "2026-06-07T10:00:00Z", "rowsUrl": url
    });
    let (_, resp) = stack.post("/api/v1/deliveries", &body).await;
    let rec = stack.wait_final(resp["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(rec["status"], "FAILED", "{rec}");
    assert_eq!(rec["error"]["code"], "RenderFailed");
    assert!(
        rec["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 250001"),
        "{rec}"
    );
    let s3 = stack.s3().await;
    let uploads = s3
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    assert!(
        uploads.uploads().is_empty(),
        "orphaned multipart uploads: {:?}",
        uploads.uploads()
    );
    assert!(
        stack.objects("abort/").await.is_empty(),
        "no partial object"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_destination_holds_only_its_share_of_the_fleet() {
    const N: usize = 24;
    let mut stack = Stack::start(0).await;
    stack.add_worker_with_env(&[
        ("COURIER_WORKER_CONCURRENCY", "4".into()),
        ("COURIER_MAX_UPLOADS_PER_DESTINATION", "2".into()),
        ("COURIER_S3_CONNECT_TIMEOUT_SECS", "1".into()),
        ("COURIER_S3_OPERATION_TIMEOUT_SECS", "4".into()),
    ]);
    stack.wait_worker(0).await;
    let healthy = stack
        .create_destination(&stack.destination_body("CSV", "NONE", "fair/"))
        .await;
    // A black hole: accepts connections and never answers.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut body = stack.destination_body("CSV", "NONE", "hole/");
    body["s3"]["endpointUrl"] = format!("http://{}", hole.local_addr().unwrap()).into();
    let hung = stack.create_destination(&body).await;

    async fn run(stack: &Stack, dest: &str, tag: &str, n: usize) -> Duration {
        let start = Instant::now();
        let mut ids = Vec::new();
        for i in 0..n {
            ids.push(
                stack
                    .enqueue(dest, &format!("job-{tag}-{i}"), &format!("INV-{tag}-{i}"))
                    .await,
            );
        }
        for id in &ids {
            assert_eq!(stack.wait_final(id, WAIT).await["status"], "DELIVERED");
        }
        start.elapsed()
    }

    let alone = run(&stack, &healthy, "alone", N).await;
    // Now the hung destination's deliveries compete for the same worker.
    for i in 0..N {
        stack
            .enqueue(&hung, &format!("job-hung-{i}"), &format!("INV-HUNG-{i}"))
            .await;
    }
    let mut conn = stack.redis().await;
    let slots_key = stack.keys().upload_slots(&stack.dest_id(&hung));
    let healthy_key = stack.keys().upload_slots(&stack.dest_id(&healthy));
    // Watch both destinations' upload slots until the healthy deliveries are done: the
    // most the hung one ever held, and whether the healthy one was uploading while the
    // hung one held slots (the worker served both at once instead of waiting behind the
    // hung uploads' timeouts).
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let mut conn = conn.clone();
        let (hung_key, healthy_key) = (slots_key.clone(), healthy_key.clone());
        let done = done.clone();
        tokio::spawn(async move {
            let (mut most, mut side_by_side) = (0u64, 0u64);
            while !done.load(Ordering::SeqCst) {
                let (h, ok): (u64, u64) = redis::pipe()
                    .zcard(&hung_key)
                    .zcard(&healthy_key)
                    .query_async(&mut conn)
                    .await
                    .unwrap_or((0, 0));
                most = most.max(h);
                if h >= 1 && ok >= 1 {
                    side_by_side += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (most, side_by_side)
        })
    };
    // The hung destination's first uploads have begun before the healthy ones arrive.
    while conn.zcard::<_, u64>(&slots_key).await.unwrap() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let contended = run(&stack, &healthy, "contended", N).await;
    done.store(true, Ordering::SeqCst);
    let (most_hung, side_by_side) = sampler.await.unwrap();
    let hung_now: u64 = conn.zcard(&slots_key).await.unwrap();
    println!(
        "healthy destination: {N} deliveries alone {alone:?}, next to a hung one {contended:?}; \
         hung slots at most {most_hung}; samples with both uploading: {side_by_side}"
    );
    assert!(
        most_hung <= 2,
        "the hung destination held {most_hung} slots, over its cap of 2"
    );
    assert!(hung_now <= 2);
    // Half the worker stays free for the healthy destination: its uploads ran while the
    // hung destination held its slots, rather than after.
    assert!(
        side_by_side >= 1,
        "the healthy destination never uploaded while the hung one held slots"
    );
    drop(hole);
}

/// A front for Garage that answers the first `refuse` connections' first request with S3's
/// `503 SlowDown` (then closes them) and passes every later connection through untouched.
struct ThrottlingFront {
    addr: std::net::SocketAddr,
    refused: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ThrottlingFront {
    async fn start(upstream: &str, refuse: usize) -> Self {
        use std::sync::atomic::AtomicUsize;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refused = Arc::new(AtomicUsize::new(0));
        let counter = refused.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let counter = counter.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if counter.fetch_add(1, Ordering::SeqCst) >= refuse {
                        counter.fetch_sub(1, Ordering::SeqCst);
                        let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    }
                    // Read the request (head, then its Content-Length of body) and refuse it.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let head_end = loop {
                        match client.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    let expects_continue = head.contains("expect: 100-continue");
                    let mut body = buf.len() - head_end;
                    while !expects_continue && body < length {
                        match client.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => body += n,
                        }
                    }
                    let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown\
                               </Code><Message>Please reduce your request rate.</Message></Error>";
                    let answer = format!(
                        "HTTP/1.1 503 Slow Down\r\ncontent-type: application/xml\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{xml}",
                        xml.len()
                    );
                    let _ = client.write_all(answer.as_bytes()).await;
                    let _ = client.shutdown().await;
                });
            }
        });
        Self {
            addr,
            refused,
            task,
        }
    }

    fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for ThrottlingFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_answers_slow_down_is_slowed_not_failed() {
    const N: usize = 8;
    const REFUSE: usize = 6;
    let stack = Stack::start(1).await;
    let front = ThrottlingFront::start(&stack.garage.endpoint(), REFUSE).await;
    let mut body = stack.destination_body("CSV", "NONE", "throttled/");
    body["s3"]["endpointUrl"] = format!("http://{}", front.addr).into();
    let dest = stack.create_destination(&body).await;
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(
            stack
                .enqueue(&dest, &format!("job-slow-{i}"), &format!("INV-SLOW-{i}"))
                .await,
        );
    }
    let mut slow_downs = 0;
    for id in &ids {
        let rec = stack.wait_final(id, WAIT).await;
        assert_eq!(rec["status"], "DELIVERED", "{rec}");
        slow_downs += rec["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["errorCode"] == "SlowDown")
            .count();
    }
    assert_eq!(front.refused(), REFUSE);
    assert_eq!(
        slow_downs, REFUSE,
        "every SlowDown is one failed attempt, retried"
    );
    for i in 0..N {
        let key = format!("throttled/mapping_results_INV-SLOW-{i}_2026-06-07.csv");
        assert!(stack.object(&key).await.is_some(), "{key}");
    }
    // The destination's upload limit was halved for it.
    let metrics = stack.worker_metrics(0).await;
    let cuts = common::metric_sum(
        &metrics,
        "courier_upload_limit_cuts_total",
        &[("reason", "overloaded")],
    );
    assert!(cuts >= 1.0, "no cut of the upload limit:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_stages_a_big_local_file_and_delivers_it_by_reference() {
    const ROWS: usize = 120_000;
    let (stack, staging_key) = stack_reading_staging(&[]).await;
    let dest = stack
        .create_destination(&stack.destination_body("NDJSON", "GZIP", "staged/"))
        .await;
    // ~12 MB of plain NDJSON: staged as a two-part multipart upload.
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&ndjson_gz(ROWS, None)[..]).read_to_end_into(&mut plain);
    let file = stack.dir.path().join("big-result.ndjson");
    std::fs::write(&file, &plain).unwrap();
    let mut cmd = stack.courier(&[
        "enqueue",
        "--tenant",
        "acme",
        "--destination",
        &dest,
        "--job-id",
        "job-staged",
        "--partner-inventory-id",
        "INV-STAGED",
        "--completed-at",
        "2026-06-07T10:00:00Z",
        "--stage",
        file.to_str().unwrap(),
    ]);
    // The CLI stages with the same settings the worker reads with.
    for (k, v) in staging_env(&stack, &staging_key) {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("staged ") && stderr.contains("s3://courier-staging/acme/"),
        "{stderr}"
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let rec = stack.wait_final(&id, WAIT).await;
    assert_eq!(rec["status"], "DELIVERED", "{rec}");
    assert_eq!(rec["rows"], ROWS as u64);
    let obj = stack
        .get_object("staged/mapping_results_INV-STAGED_2026-06-07.ndjson.gz")
        .await;
    let raw = obj.body.collect().await.unwrap().to_vec();
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(&raw[..]).read_to_end_into(&mut text);
    assert_eq!(
        text, plain,
        "the delivered NDJSON is the staged rows, byte for byte"
    );
}

trait ReadToEndInto {
    fn read_to_end_into(self, out: &mut Vec<u8>);
}

impl<R: std::io::Read> ReadToEndInto for R {
    fn read_to_end_into(mut self, out: &mut Vec<u8>) {
        self.read_to_end(out).unwrap();
    }
}
