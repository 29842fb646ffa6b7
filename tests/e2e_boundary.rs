//! A tenant's rows by reference, tried as an attacker would, against real processes: a
//! gzip bomb, an endless line, a server that trickles, a redirect to a port the operator
//! did not allow, and another tenant's staged rows (refused by the API, and by the worker
//! when the task reaches the queue some other way). Each fails the delivery with its own
//! code, writes no object, and never repeats the reference's query string.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use chrono::Utc;
use common::{STAGING_BUCKET, Stack};
use courier_core::delivery::{DeliveryRecord, DeliveryTask, RowsUrl};
use courier_core::{Compression, DeliveryId, Format, TenantId};
use courier_store::{DeliveryQueue, RecordStore, RedisConn, RedisTarget};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(120);
const SECRET: &str = "SECRET-TOKEN-1f2e3d";

/// What the hostile row server answers on a path.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    /// A few good rows, then the end: the control that proves the server is reachable.
    Good,
    /// Gzip members of rows, one after another for ever.
    Bomb,
    /// `x` for ever, never a line break.
    EndlessLine,
    /// One byte of a row a second, for ever.
    Trickle,
    /// `302` to `location`.
    Redirect,
}

/// A hostile HTTP server on 127.0.0.1. Answers by path; each streaming answer reports on
/// `hung_up` once the client stopped reading (a write failed), with the bytes it sent.
struct RowServer {
    port: u16,
    hung_up: mpsc::UnboundedReceiver<(Answer, u64)>,
}

async fn row_server(redirect_to: String) -> RowServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, hung_up) = mpsc::unbounded_channel();
    // One gzip member expanding ~1000-fold: 1,000,000 bytes of rows.
    let member = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        for _ in 0..100_000 {
            gz.write_all(b"{\"pwn\":0}\n").unwrap();
        }
        Arc::new(gz.finish().unwrap())
    };
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (tx, member, redirect_to) = (tx.clone(), member.clone(), redirect_to.clone());
            tokio::spawn(async move { serve(sock, tx, member, redirect_to).await });
        }
    });
    RowServer { port, hung_up }
}

async fn serve(
    mut sock: TcpStream,
    hung_up: mpsc::UnboundedSender<(Answer, u64)>,
    member: Arc<Vec<u8>>,
    redirect_to: String,
) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&request);
    let path = head.split_whitespace().nth(1).unwrap_or_default();
    let answer = match path.split('?').next().unwrap() {
        "/good.ndjson" => Answer::Good,
        "/bomb.ndjson.gz" => Answer::Bomb,
        "/line.ndjson" => Answer::EndlessLine,
        "/trickle.ndjson" => Answer::Trickle,
        "/redirect.ndjson" => Answer::Redirect,
        _ => {
            let _ = sock
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await;
            return;
        }
    };
    // Bodies without a length run until the connection closes.
    let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nconnection: close\r\n\r\n";
    let mut sent = 0u64;
    let result = match answer {
        Answer::Good => {
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 16\r\n\r\n{\"a\":1}\n{\"a\":2}\n")
                .await
        }
        Answer::Redirect => {
            let r = format!(
                "HTTP/1.1 302 Found\r\nlocation: {redirect_to}\r\ncontent-length: 0\r\n\r\n"
            );
            sock.write_all(r.as_bytes()).await
        }
        Answer::Bomb | Answer::EndlessLine | Answer::Trickle => {
            let chunk: Vec<u8> = match answer {
                Answer::Bomb => member.to_vec(),
                Answer::EndlessLine => vec![b'x'; 64 * 1024],
                _ => b"{\"slow\":1}\n".to_vec(),
            };
            let mut result = sock.write_all(ok).await;
            while result.is_ok() {
                if answer == Answer::Trickle {
                    for byte in &chunk {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        result = sock.write_all(&[*byte]).await;
                        if result.is_err() {
                            break;
                        }
                        sent += 1;
                    }
                } else {
                    result = sock.write_all(&chunk).await;
                    sent += chunk.len() as u64;
                }
            }
            // The client hung up: an endless answer ends no other way.
            let _ = hung_up.send((answer, sent));
            return;
        }
    };
    // A client that hung up early is not this server's concern.
    let _ = result;
}

/// A plain TCP listener that counts the connections it is offered.
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n{\"a\":1}\n")
                .await;
        }
    });
    (port, hits)
}

/// Every error message of a record: the final one and each attempt's.
fn messages(rec: &Value) -> String {
    let mut all = rec["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for a in rec["attempts"].as_array().into_iter().flatten() {
        all.push('\n');
        all.push_str(a["errorMessage"].as_str().unwrap_or_default());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_row_sources_fail_with_their_own_codes_and_write_nothing() {
    let (target_port, target_hits) = counting_listener().await;
    let mut server = row_server(format!("http://127.0.0.1:{target_port}/rows.ndjson")).await;
    let mut stack = Stack::start(0).await;
    // The worker reaches only Garage and the row server: everything else on loopback is
    // refused at connect time, the redirect's target among it.
    let allow = format!(
        "{},127.0.0.1:{}",
        stack.garage.endpoint().trim_start_matches("http://"),
        server.port
    );
    stack.add_worker_with_env(&[
        ("COURIER_ALLOW_PRIVATE_ENDPOINTS", "false".into()),
        ("COURIER_EGRESS_ALLOW", allow),
        ("COURIER_MAX_ROW_BYTES", "65536".into()),
        ("COURIER_MAX_ROWS_BYTES", "1000000".into()),
        ("COURIER_ROWS_FETCH_TIMEOUT_SECS", "3".into()),
        // Four permanent failures in a row against one destination would mark it failing
        // and hold the rest; whose fault a row source's failure is, is not this test's
        // question.
        ("COURIER_FAILING_THRESHOLD", "100".into()),
    ]);
    stack.wait_worker(0).await;
    let dest = stack
        .create_destination(&stack.destination_body("CSV", "NONE", "boundary/"))
        .await;
    let port = server.port;
    let enqueue = |path: &str, inventory: &str| {
        json!({
            "destinationId": dest, "jobId": format!("job-{inventory}"),
            "partnerInventoryId": inventory, "completedAt": "2026-06-07T10:00:00Z",
            "rowsUrl": format!("http://127.0.0.1:{port}{path}?token={SECRET}&X-Amz-Signature={SECRET}")
        })
    };
    let mut ids = Vec::new();
    for (path, inventory) in [
        ("/good.ndjson", "GOOD"),
        ("/bomb.ndjson.gz", "BOMB"),
        ("/line.ndjson", "LINE"),
        ("/trickle.ndjson", "TRICKLE"),
        ("/redirect.ndjson", "REDIRECT"),
    ] {
        let (s, resp) = stack
            .post("/api/v1/deliveries", &enqueue(path, inventory))
            .await;
        assert_eq!(s, 202, "{resp}");
        ids.push((inventory, resp["id"].as_str().unwrap().to_owned()));
    }
    let mut failed = Vec::new();
    for (inventory, id) in &ids {
        let rec = stack.wait_final(id, WAIT).await;
        if *inventory == "GOOD" {
            assert_eq!(rec["status"], "DELIVERED", "{rec}");
            assert_eq!(rec["rows"], 2);
            continue;
        }
        assert_eq!(rec["status"], "FAILED", "{inventory}: {rec}");
        assert_eq!(
            rec["attempts"].as_array().unwrap().len(),
            1,
            "permanent: {rec}"
        );
        let said = messages(&rec);
        assert!(!said.contains(SECRET), "{inventory}: {said}");
        assert!(!said.contains("token="), "{inventory}: {said}");
        failed.push((*inventory, rec["error"]["code"].clone(), said));
    }
    let expected = [
        (
            "BOMB",
            "RowsTooLarge",
            "COURIER_MAX_ROWS_BYTES (1000000 bytes",
        ),
        ("LINE", "RowTooLong", "COURIER_MAX_ROW_BYTES (65536 bytes)"),
        (
            "TRICKLE",
            "RowsFetchTimeout",
            "COURIER_ROWS_FETCH_TIMEOUT_SECS (3 s)",
        ),
        ("REDIRECT", "RowsUnavailable", "redirects are not followed"),
    ];
    for ((inventory, code, said), (want_inv, want_code, want_said)) in failed.iter().zip(expected) {
        assert_eq!((*inventory, code.as_str().unwrap()), (want_inv, want_code));
        assert!(said.contains(want_said), "{inventory}: {said}");
    }
    // Nothing but the good delivery's object was written.
    assert_eq!(
        stack.objects("boundary/").await,
        ["boundary/mapping_results_GOOD_2026-06-07.csv"]
    );
    // The redirect's target saw no request at all.
    assert_eq!(target_hits.load(Ordering::SeqCst), 0);
    // The worker hung up on every endless answer rather than read on.
    let mut hung = Vec::new();
    while hung.len() < 3 {
        let (answer, sent) = tokio::time::timeout(WAIT, server.hung_up.recv())
            .await
            .expect("the worker hangs up on each endless answer")
            .unwrap();
        println!("{answer:?}: the server sent {sent} bytes before the worker hung up");
        hung.push(answer);
    }
    hung.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(hung, [Answer::Bomb, Answer::EndlessLine, Answer::Trickle]);
    // Nor does the query string reach a log line or a response.
    let everything = stack.everything_said();
    assert!(
        !everything.contains(SECRET),
        "a log or response repeats the token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_staged_rows_are_refused_by_the_api_and_by_the_worker() {
    let mut stack = Stack::start(0).await;
    let staging_key = stack.garage.bucket_with_key(STAGING_BUCKET).unwrap();
    stack.add_worker_with_env(&[
        ("COURIER_STAGING_BUCKET", STAGING_BUCKET.to_owned()),
        ("COURIER_STAGING_ENDPOINT", stack.garage.endpoint()),
        ("COURIER_STAGING_REGION", stack.garage.region().to_owned()),
        ("COURIER_STAGING_ACCESS_KEY_ID", staging_key.id.clone()),
        (
            "COURIER_STAGING_SECRET_ACCESS_KEY",
            staging_key.secret.clone(),
        ),
        ("COURIER_FAILING_THRESHOLD", "100".into()),
    ]);
    stack.wait_worker(0).await;
    // `globex` staged its rows; `acme` staged its own.
    let staging = stack.garage.client(&staging_key).await;
    for (key, body) in [
        ("globex/secret.ndjson", "{\"globex\":\"confidential\"}\n"),
        ("acme/own.ndjson", "{\"acme\":1}\n"),
    ] {
        staging
            .put_object()
            .bucket(STAGING_BUCKET)
            .key(key)
            .body(ByteStream::from(body.as_bytes().to_vec()))
            .send()
            .await
            .unwrap();
    }
    let dest = stack
        .create_destination(&stack.destination_body("CSV", "NONE", "stolen/"))
        .await;
    let job = |key: &str, inventory: &str| {
        json!({
            "destinationId": dest, "jobId": "job-x", "partnerInventoryId": inventory,
            "completedAt": "2026-06-07T10:00:00Z",
            "rowsUrl": format!("s3://{STAGING_BUCKET}/{key}")
        })
    };

    // The API refuses `acme` another tenant's key, however it is spelled.
    for key in [
        "globex/secret.ndjson",
        "acme/../globex/secret.ndjson",
        "acme/%2e%2e/globex/secret.ndjson",
        "acme2/secret.ndjson",
    ] {
        let (s, b) = stack.post("/api/v1/deliveries", &job(key, "API")).await;
        assert_eq!(s, 422, "{key}: {b}");
        assert_eq!(b["error"]["fields"][0]["field"], "rowsUrl", "{b}");
        assert!(b.to_string().contains("under `acme/`"), "{b}");
    }
    let (_, listed) = stack.get("/api/v1/deliveries").await;
    assert_eq!(listed["items"], json!([]), "nothing was saved: {listed}");

    // Tasks that reach the queue without the API (a forged or buggy producer): the
    // worker checks again, and fails them for good.
    let conn = RedisConn::connect(&RedisTarget::Url(stack.redis.url()))
        .await
        .unwrap();
    let records = RecordStore::new(conn.clone(), stack.keys());
    let queue = DeliveryQueue::new(conn, &stack.keys());
    let mut forged = Vec::new();
    for (key, inventory) in [
        ("globex/secret.ndjson", "FORGED-1"),
        ("acme/../globex/secret.ndjson", "FORGED-2"),
    ] {
        let task = DeliveryTask {
            delivery_id: DeliveryId::generate(),
            tenant: TenantId::parse("acme").unwrap(),
            destination_id: stack.dest_id(&dest),
            job_id: "job-forged".into(),
            partner_inventory_id: courier_core::delivery::PartnerInventoryId::parse(inventory)
                .unwrap(),
            completed_at: "2026-06-07T10:00:00Z".parse().unwrap(),
            columns: Vec::new(),
            rows: Default::default(),
            rows_url: Some(RowsUrl::parse(&format!("s3://{STAGING_BUCKET}/{key}")).unwrap()),
            column_types: Default::default(),
            enqueued_at: Utc::now(),
            retry: Default::default(),
        };
        records
            .put(&DeliveryRecord::queued(
                &task,
                Format::Csv,
                Compression::None,
                0,
                Utc::now(),
            ))
            .await
            .unwrap();
        forged.push(task.delivery_id.as_str().to_owned());
        queue.push(task).await.unwrap();
    }
    // Its own staged rows go through, after the forged ones.
    let (s, own) = stack
        .post("/api/v1/deliveries", &job("acme/own.ndjson", "OWN"))
        .await;
    assert_eq!(s, 202, "{own}");
    let own = stack.wait_final(own["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(own["status"], "DELIVERED", "{own}");
    for id in &forged {
        let rec = stack.wait_final(id, WAIT).await;
        assert_eq!(rec["status"], "FAILED", "{rec}");
        assert_eq!(rec["error"]["code"], "RowsOutsideTenant", "{rec}");
        assert_eq!(rec["attempts"].as_array().unwrap().len(), 1, "{rec}");
        assert!(
            rec["error"]["message"]
                .as_str()
                .unwrap()
                .contains("under `acme/`"),
            "{rec}"
        );
    }
    assert_eq!(
        stack.objects("stolen/").await,
        ["stolen/mapping_results_OWN_2026-06-07.csv"],
        "globex's rows were written nowhere"
    );
    let own_object = stack
        .object("stolen/mapping_results_OWN_2026-06-07.csv")
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&own_object).contains("confidential"),
        "the delivered object holds acme's rows only"
    );
}

/// A `POST` with the tenant's token, its status, `Retry-After` and JSON body.
async fn post_raw(
    stack: &Stack,
    token: &str,
    path: &str,
    body: &Value,
) -> (u16, Option<u64>, Value) {
    let resp = stack
        .http
        .post(format!("{}{path}", stack.api_url))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("the api answers");
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (
        status,
        retry_after,
        resp.json().await.unwrap_or(Value::Null),
    )
}

/// One tenant cannot crowd out the others: past its quotas (destinations, deliveries
/// waiting) and its rate of connection tests, the real API process answers 429 with
/// `Retry-After` and the limit's name, and saves nothing; another tenant is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_rate_limits_answer_429_and_save_nothing() {
    let stack = Stack::start_with(
        0,
        courier_test_support::RedisServer::start().expect("redis starts"),
        vec![
            ("COURIER_MAX_DESTINATIONS_PER_TENANT".into(), "1".into()),
            ("COURIER_MAX_WAITING_PER_TENANT".into(), "2".into()),
            ("COURIER_CONNECTION_TESTS_PER_MINUTE".into(), "1".into()),
        ],
    )
    .await;
    let body = stack.destination_body("CSV", "NONE", "quota/");
    let dest = stack.create_destination(&body).await;

    // A second destination is refused, and not saved.
    let (status, retry_after, err) = post_raw(
        &stack,
        common::TOKEN,
        "/api/v1/delivery-destinations",
        &body,
    )
    .await;
    assert_eq!(status, 429, "{err}");
    assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
    assert_eq!(err["error"]["code"], "QUOTA_EXCEEDED", "{err}");
    assert_eq!(err["error"]["limit"], "destinationsPerTenant", "{err}");
    let (_, list) = stack.get("/api/v1/delivery-destinations").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");

    // No worker runs, so deliveries wait: two are taken, the third is refused and not saved.
    stack.enqueue(&dest, "job-q-1", "INV-Q-1").await;
    stack.enqueue(&dest, "job-q-2", "INV-Q-2").await;
    let job = json!({
        "destinationId": dest, "jobId": "job-q-3", "partnerInventoryId": "INV-Q-3",
        "completedAt": "2026-06-07T10:00:00Z", "rows": [{"hotel": "A"}]
    });
    let (status, retry_after, err) =
        post_raw(&stack, common::TOKEN, "/api/v1/deliveries", &job).await;
    assert_eq!(status, 429, "{err}");
    assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
    assert_eq!(err["error"]["limit"], "waitingDeliveriesPerTenant", "{err}");
    let (_, page) = stack.get("/api/v1/deliveries?jobId=job-q-3").await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(0), "{page}");

    // One connection test a minute: the second is rate-limited.
    let test = format!("/api/v1/delivery-destinations/{dest}/test");
    let (status, _, report) = post_raw(&stack, common::TOKEN, &test, &json!({})).await;
    assert_eq!(status, 200, "{report}");
    let (status, retry_after, err) = post_raw(&stack, common::TOKEN, &test, &json!({})).await;
    assert_eq!(status, 429, "{err}");
    assert!(
        retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "{retry_after:?}"
    );
    assert_eq!(err["error"]["code"], "RATE_LIMITED", "{err}");
    assert_eq!(err["error"]["limit"], "connectionTestsPerMinute", "{err}");

    // Another tenant has its own quotas.
    let (status, _, created) = post_raw(
        &stack,
        common::OTHER_TOKEN,
        "/api/v1/delivery-destinations",
        &body,
    )
    .await;
    assert_eq!(status, 201, "{created}");
}
