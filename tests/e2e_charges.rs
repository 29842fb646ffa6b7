//! Failures are charged to who caused them: bad row references and rows that cannot be
//! rendered fail their own delivery and leave the destination healthy; a worker's full
//! disk is retried, not failed. Real Redis, Garage, worker and API processes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{BUCKET, STAGING_BUCKET, Stack};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);

/// A local HTTP server for `rowsUrl`s: `/bad-json…` answers 200 with a body that is not
/// NDJSON, everything else 404. Counts the requests it answered.
async fn rows_server() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = 0;
                // Read the request head.
                while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf[got..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let head = String::from_utf8_lossy(&buf[..got]);
                let response = if head.starts_with("GET /bad-json") {
                    let body = "{\"a\": 1}\nthis line is not JSON\n";
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        .to_owned()
                };
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (port, hits)
}

/// The port of an `http://host:port` endpoint.
fn port_of(endpoint: &str) -> u16 {
    endpoint
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

fn job(destination: &str, inventory: &str, rows: Value) -> Value {
    let mut job = json!({
        "destinationId": destination,
        "jobId": format!("job-{inventory}"),
        "partnerInventoryId": inventory,
        "completedAt": "2026-06-07T12:00:00Z",
    });
    match rows {
        Value::String(url) => job["rowsUrl"] = url.into(),
        rows => job["rows"] = rows,
    }
    job
}

async fn enqueue(stack: &Stack, job: &Value) -> String {
    let (status, body) = stack.post("/api/v1/deliveries", job).await;
    assert_eq!(status, 202, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn health(stack: &Stack, destination: &str) -> Value {
    let (status, d) = stack
        .get(&format!("/api/v1/delivery-destinations/{destination}"))
        .await;
    assert_eq!(status, 200, "{d}");
    d["health"].clone()
}

/// Five bad row references in a row, more than `COURIER_FAILING_THRESHOLD` (3): each fails
/// its own delivery at once with its own code, the destination stays healthy, and the next
/// good delivery is delivered, not held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_row_references_fail_their_delivery_and_leave_the_destination_healthy() {
    let (rows_port, hits) = rows_server().await;
    let mut stack = Stack::start(0).await;
    let staging_key = stack.garage.bucket_with_key(STAGING_BUCKET).unwrap();
    let garage_port = port_of(&stack.garage.endpoint());
    // The worker gets the real egress policy: only the rows server and Garage are allowed.
    stack.add_worker_with_env(&[
        ("COURIER_ALLOW_PRIVATE_ENDPOINTS", "false".into()),
        (
            "COURIER_EGRESS_ALLOW",
            format!("127.0.0.1:{rows_port},127.0.0.1:{garage_port}"),
        ),
        ("COURIER_FAILING_THRESHOLD", "3".into()),
        ("COURIER_STAGING_BUCKET", STAGING_BUCKET.to_owned()),
        ("COURIER_STAGING_ENDPOINT", stack.garage.endpoint()),
        ("COURIER_STAGING_REGION", stack.garage.region().to_owned()),
        ("COURIER_STAGING_ACCESS_KEY_ID", staging_key.id.clone()),
        (
            "COURIER_STAGING_SECRET_ACCESS_KEY",
            staging_key.secret.clone(),
        ),
    ]);
    stack.wait_worker(0).await;
    let dest = stack
        .create_destination(&stack.destination_body("CSV", "NONE", "charges/"))
        .await;

    let http = |path: &str| Value::String(format!("http://127.0.0.1:{rows_port}/{path}"));
    let cases = [
        ("INV-404-1", http("missing-1.ndjson"), "RowsUnavailable"),
        ("INV-404-2", http("missing-2.ndjson"), "RowsUnavailable"),
        ("INV-404-3", http("missing-3.ndjson"), "RowsUnavailable"),
        ("INV-BAD-JSON", http("bad-json.ndjson"), "RenderFailed"),
        (
            "INV-NO-STAGED",
            Value::String(format!("s3://{STAGING_BUCKET}/acme/never-staged.ndjson")),
            "NoSuchKey",
        ),
    ];
    for (inventory, rows, code) in cases {
        let id = enqueue(&stack, &job(&dest, inventory, rows)).await;
        let record = stack.wait_final(&id, WAIT).await;
        assert_eq!(record["status"], "FAILED", "{inventory}: {record}");
        assert_eq!(record["error"]["code"], code, "{inventory}: {record}");
        assert_eq!(
            record["attempts"].as_array().unwrap().len(),
            1,
            "{inventory}: a permanent failure is not retried: {record}"
        );
        let health = health(&stack, &dest).await;
        assert_eq!(health["state"], "HEALTHY", "after {inventory}: {health}");
        assert_eq!(
            health["consecutiveFailures"], 0,
            "after {inventory}: {health}"
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        4,
        "each reference to the rows server was read once"
    );
    let logs = stack.worker_logs();
    assert!(
        logs.lines().any(|l| l.contains("attempt failed")
            && l.contains("charged_to")
            && l.contains("rows")),
        "the worker logs who each failure is charged to:\n{logs}"
    );

    // The destination was never at fault: its next delivery goes through at once.
    let id = enqueue(&stack, &job(&dest, "INV-GOOD", json!([{"a": 1, "b": "x"}]))).await;
    let record = stack.wait_final(&id, WAIT).await;
    assert_eq!(record["status"], "DELIVERED", "{record}");
    let key = "charges/mapping_results_INV-GOOD_2026-06-07.csv";
    assert_eq!(record["key"], key);
    assert_eq!(stack.object(key).await.unwrap(), b"a,b\n1,x\n");
    assert_eq!(health(&stack, &dest).await["state"], "HEALTHY");

    // While a failure of the destination's own store still counts against it.
    stack.garage.deny(BUCKET, &stack.key, false, true).unwrap();
    let id = enqueue(
        &stack,
        &job(&dest, "INV-DENIED", json!([{"a": 2, "b": "y"}])),
    )
    .await;
    let record = stack.wait_final(&id, WAIT).await;
    assert_eq!(record["error"]["code"], "AccessDenied", "{record}");
    let health = health(&stack, &dest).await;
    assert_eq!(health["consecutiveFailures"], 1, "{health}");
    assert_eq!(health["lastErrorCode"], "AccessDenied", "{health}");
}

/// A tmpfs mounted for one test, unmounted (lazily, so a process still holding a file
/// cannot keep it) when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`1m`) at `dir`; `None` when this is not root or mount
    /// is refused.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs {
            dir: dir.to_owned(),
        })
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "remount {}", self.dir.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// An XLSX delivery whose sheet spools into a worker's full temp directory is retried as
/// `LocalIoFailed` (not failed, not charged to the destination), and is delivered once
/// there is room. Needs root for the tmpfs; skipped otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_temp_disk_is_retried_and_then_delivered() {
    let mount_dir = tempfile::tempdir().unwrap();
    let Some(tmpfs) = Tmpfs::mount(mount_dir.path(), "256k") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let mut stack = Stack::start(0).await;
    stack.add_worker_with_env(&[
        ("TMPDIR", mount_dir.path().display().to_string()),
        ("COURIER_RETRY_MAX_ATTEMPTS", "1000".into()),
        ("COURIER_RETRY_MIN_DELAY_MS", "200".into()),
        ("COURIER_RETRY_MAX_DELAY_MS", "500".into()),
    ]);
    stack.wait_worker(0).await;
    let dest = stack
        .create_destination(&stack.destination_body("XLSX", "NONE", "disk/"))
        .await;
    // About 1 MB of sheet XML: four times the room the tmpfs has.
    let rows: Vec<Value> = (0..10_000)
        .map(|i| json!({"n": i, "hotel": format!("hotel number {i}"), "score": i as f64 / 7.0}))
        .collect();
    let id = enqueue(&stack, &job(&dest, "INV-DISK", Value::Array(rows))).await;

    // Wait for a failed attempt of the full disk, then make room.
    let deadline = std::time::Instant::now() + WAIT;
    let record = loop {
        let record = stack.record(&id).await;
        let attempts = record["attempts"].as_array().cloned().unwrap_or_default();
        if attempts.iter().any(|a| a["errorCode"] == "LocalIoFailed") {
            break record;
        }
        assert_ne!(record["status"], "FAILED", "{record}");
        assert_ne!(
            record["status"], "DELIVERED",
            "the disk was not full: {record}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no LocalIoFailed attempt: {record}\n{}",
            stack.worker_logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        record["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["errorCode"] == "LocalIoFailed"),
        "{record}"
    );
    let message = record["attempts"][0]["errorMessage"].as_str().unwrap();
    assert!(message.contains("temporary file"), "{message}");
    assert_eq!(health(&stack, &dest).await["consecutiveFailures"], 0);
    tmpfs.resize("64m");

    let record = stack.wait_final(&id, WAIT).await;
    assert_eq!(record["status"], "DELIVERED", "{record}");
    assert_eq!(record["rows"], 10_000);
    let attempts = record["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 2, "{record}");
    assert_eq!(attempts.last().unwrap()["outcome"], "DELIVERED");
    let health = health(&stack, &dest).await;
    assert_eq!(health["state"], "HEALTHY", "{health}");

    use calamine::{Data, Reader, Xlsx, open_workbook_from_rs};
    let key = "disk/mapping_results_INV-DISK_2026-06-07.xlsx";
    let bytes = stack.object(key).await.unwrap();
    let mut wb: Xlsx<_> = open_workbook_from_rs(std::io::Cursor::new(bytes)).unwrap();
    let range = wb.worksheet_range("Sheet1").unwrap();
    assert_eq!(range.height(), 10_001);
    assert_eq!(
        range.get_value((10_000, 1)),
        Some(&Data::String("hotel number 9999".into()))
    );
    drop(stack);
    drop(tmpfs);
}
