//! Batched destinations end to end, on a real Redis and a real Garage with real `courier`
//! processes: concurrent clients append into three windows of 5 s (and a worker is SIGKILLed
//! while the last one is open); every object is read back (gunzipped, line by line, with
//! flate2 and serde_json) and every row is found exactly once, at the lines its delivery's
//! record names, in an object whose key follows the layout; a window over `maxObjectBytes`
//! continues in further objects; a paused destination's windows are held, then delivered
//! once it is active (one delivery appended by `courier enqueue`); a worker SIGKILLed while
//! a window's upload is in flight (held at a gated proxy) leaves the window to another
//! worker, which delivers it exactly once; a store that is down is retried by the policy; a
//! permanent failure dead-letters the window, and its replay delivers it; a window held past
//! `COURIER_HELD_MAX_AGE_SECS` fails as `HeldTooLong`; a window bigger than a part goes
//! through the multipart upload; windows still open when batching is turned off are
//! delivered.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Stack, metric_sum};
use redis::AsyncCommands;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(120);

fn batched(stack: &Stack, prefix: &str, batch: Value, status: &str) -> Value {
    let mut body = stack.destination_body("NDJSON", "GZIP", prefix);
    body["batch"] = batch;
    body["status"] = status.into();
    body
}

/// Rows tagged with their client, delivery and row number, so each is told apart.
fn rows(tag: &str, n: usize, pad: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"tag": format!("{tag}/{i}"), "n": i, "pad": "x".repeat(pad)}))
        .collect()
}

/// Enqueues `rows` for `dest`; returns the 202's record.
async fn append(stack: &Stack, dest: &str, job: &str, rows: &[Value]) -> Value {
    let body = json!({
        "destinationId": dest,
        "jobId": job,
        "partnerInventoryId": "INV-1",
        "completedAt": "2026-06-07T10:00:00Z",
        "rows": rows,
    });
    let (status, resp) = stack.post("/api/v1/deliveries", &body).await;
    assert_eq!(status, 202, "{resp}");
    resp
}

/// The window start (unix s) of a delivery record.
fn window_of(rec: &Value) -> i64 {
    let s = rec["batch"]["windowStart"]
        .as_str()
        .unwrap_or_else(|| panic!("{rec}"));
    chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
}

/// Polls until every delivery is DELIVERED; returns their records.
async fn wait_delivered(stack: &Stack, ids: &[String]) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    for id in ids {
        out.insert(id.clone(), stack.wait_status(id, "DELIVERED", WAIT).await);
    }
    out
}

/// The object's NDJSON lines, gunzipped by an independent reader.
async fn lines_of(stack: &Stack, key: &str) -> Vec<Value> {
    let bytes = stack
        .object(key)
        .await
        .unwrap_or_else(|| panic!("{key} exists"));
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(
        text.ends_with('\n'),
        "{key}: every line ends with a newline"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{key}: {e}: {l}")))
        .collect()
}

/// Whether `key` is `{prefix}YYYY/MM/DD/HH/YYYY-MM-DD-HH-MM-SS-{32 hex}.gz` with the time
/// of `window_start`.
fn assert_layout(key: &str, prefix: &str, window_start: i64) {
    let at = chrono::DateTime::from_timestamp(window_start, 0).unwrap();
    let head = format!(
        "{prefix}{}/{}-",
        at.format("%Y/%m/%d/%H"),
        at.format("%Y-%m-%d-%H-%M-%S")
    );
    let id = key
        .strip_prefix(&head)
        .and_then(|r| r.strip_suffix(".gz"))
        .unwrap_or_else(|| panic!("{key} does not start with {head} and end with .gz"));
    assert!(
        id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{key}: the id is 32 lowercase hex digits"
    );
}

/// Checks every object under `prefix` against the records: each row sent exactly once, at
/// the lines its delivery's record names, in the object its record names. Returns the
/// objects by window start.
async fn assert_exactly_once(
    stack: &Stack,
    prefix: &str,
    sent: &HashMap<String, Vec<Value>>,
    records: &HashMap<String, Value>,
) -> BTreeMap<i64, BTreeSet<String>> {
    let keys = stack.objects(prefix).await;
    let mut by_window: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    let mut objects = HashMap::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for key in &keys {
        let lines = lines_of(stack, key).await;
        for l in &lines {
            *seen
                .entry(l["tag"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        objects.insert(key.clone(), lines);
    }
    for (id, rows) in sent {
        let rec = &records[id];
        let key = rec["key"].as_str().unwrap();
        assert_eq!(rec["batch"]["key"], rec["key"], "{rec}");
        assert!(
            rec["batch"]["id"].as_str().unwrap().starts_with("bat_"),
            "{rec}"
        );
        let start = window_of(rec);
        assert_layout(key, prefix, start);
        by_window.entry(start).or_default().insert(key.to_owned());
        let lines = objects
            .get(key)
            .unwrap_or_else(|| panic!("{id}'s object {key} is in the bucket"));
        let first = rec["batch"]["firstLine"].as_u64().unwrap() as usize;
        let last = rec["batch"]["lastLine"].as_u64().unwrap() as usize;
        assert_eq!(last - first + 1, rows.len(), "{rec}");
        assert_eq!(rec["rows"], rows.len(), "{rec}");
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(&lines[first - 1 + i], row, "{id} line {}", first + i);
        }
        for row in rows {
            let tag = row["tag"].as_str().unwrap();
            assert_eq!(
                seen.get(tag),
                Some(&1),
                "{tag} is in exactly one object, once"
            );
        }
    }
    let sent_rows: usize = sent.values().map(Vec::len).sum();
    assert_eq!(
        seen.values().sum::<usize>(),
        sent_rows,
        "nothing else in the objects"
    );
    assert_eq!(
        keys.iter().collect::<BTreeSet<_>>(),
        by_window.values().flatten().collect::<BTreeSet<_>>(),
        "every object holds some delivery's rows"
    );
    by_window
}

/// Polls until the destination has no open window left in Redis (its memory released).
async fn wait_released(stack: &Stack, dest: &str) {
    let keys = stack.keys();
    let d = stack.dest_id(dest);
    let mut c = stack.redis().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let due: Vec<String> = c.zrange(keys.batch_due(), 0, -1).await.unwrap();
        let left: Vec<String> = c
            .keys(format!("{}:batch:*", keys.destination(&d)))
            .await
            .unwrap();
        if !due.iter().any(|m| m.starts_with(dest)) && left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still open: {due:?} {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_fill_three_windows_and_every_row_lands_exactly_once() {
    let stack = Arc::new(Stack::start(2).await);
    let prefix = "batched/";
    let dest = stack
        .create_destination(&batched(
            &stack,
            prefix,
            json!({"windowSeconds": 5}),
            "ACTIVE",
        ))
        .await;
    let (_, view) = stack
        .get(&format!("/api/v1/delivery-destinations/{dest}"))
        .await;
    assert_eq!(
        view["batch"],
        json!({"windowSeconds": 5, "maxObjectBytes": 100 * 1024 * 1024})
    );

    // Batched objects are gzip NDJSON: anything else is refused, naming the field.
    let (status, resp) = stack
        .post(
            "/api/v1/delivery-destinations",
            &batched(&stack, prefix, json!({"windowSeconds": 5}), "ACTIVE")
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.insert("format".into(), "CSV".into());
                    o.insert("compression".into(), "NONE".into());
                    Value::Object(o)
                })
                .unwrap(),
        )
        .await;
    assert_eq!(status, 422, "{resp}");
    let fields: Vec<&str> = resp["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["format", "compression"], "{resp}");
    let (status, resp) = stack
        .post(
            "/api/v1/delivery-destinations",
            &batched(&stack, prefix, json!({"windowSeconds": 3601}), "ACTIVE"),
        )
        .await;
    assert_eq!(status, 422, "{resp}");
    assert_eq!(resp["error"]["fields"][0]["field"], "batch.windowSeconds");
    // Rows by reference are refused for a batched destination.
    let (status, resp) = stack
        .post(
            "/api/v1/deliveries",
            &json!({
                "destinationId": dest,
                "jobId": "by-reference",
                "partnerInventoryId": "INV-1",
                "completedAt": "2026-06-07T10:00:00Z",
                "rowsUrl": format!("s3://{}/acme/rows.ndjson", common::STAGING_BUCKET),
            }),
        )
        .await;
    assert_eq!(status, 422, "{resp}");
    assert_eq!(resp["error"]["fields"][0]["field"], "rowsUrl", "{resp}");

    // Four clients append until the deliveries span three windows.
    let windows = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (stack, dest, windows) = (Arc::clone(&stack), dest.clone(), Arc::clone(&windows));
        clients.push(tokio::spawn(async move {
            let mut sent = HashMap::new();
            for i in 0.. {
                let rows = rows(&format!("c{c}/d{i}"), 1 + (i % 4), 10);
                let rec = append(&stack, &dest, &format!("job-{c}-{i}"), &rows).await;
                assert_eq!(rec["status"], "BATCHED", "{rec}");
                sent.insert(rec["id"].as_str().unwrap().to_owned(), rows);
                let spanned = {
                    let mut w = windows.lock().unwrap();
                    w.insert(window_of(&rec));
                    w.len()
                };
                if spanned >= 3 {
                    return sent;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            unreachable!()
        }));
    }
    let mut sent = HashMap::new();
    for c in clients {
        sent.extend(c.await.unwrap());
    }
    // A worker SIGKILLed while the last window is still open: the other one closes it (and
    // redoes any window the dead one had claimed, once its claim expires).
    let mut stack = Arc::into_inner(stack).expect("the clients are done");
    stack.kill_worker(0);
    let ids: Vec<String> = sent.keys().cloned().collect();
    let records = wait_delivered(&stack, &ids).await;
    let by_window = assert_exactly_once(&stack, prefix, &sent, &records).await;
    assert!(
        by_window.len() >= 3,
        "three windows at least: {by_window:?}"
    );
    for keys in by_window.values() {
        assert_eq!(
            keys.len(),
            1,
            "one object per window under the limit: {keys:?}"
        );
    }
    wait_released(&stack, &dest).await;

    // Each record links to its batch, which the inspector lists.
    let (status, page) = stack
        .get(&format!("/api/v1/batches?destinationId={dest}&limit=500"))
        .await;
    assert_eq!(status, 200, "{page}");
    let listed: HashMap<String, Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["id"].as_str().unwrap().to_owned(), b.clone()))
        .collect();
    assert_eq!(listed.len(), by_window.len(), "{page}");
    let rows_sent: usize = sent.values().map(Vec::len).sum();
    assert_eq!(
        listed
            .values()
            .map(|b| b["rows"].as_u64().unwrap())
            .sum::<u64>(),
        rows_sent as u64
    );
    for rec in records.values() {
        let b = &listed[rec["batch"]["id"].as_str().unwrap()];
        assert_eq!(
            (&b["key"], &b["status"]),
            (&rec["key"], &json!("DELIVERED"))
        );
        assert_eq!(b["etag"], rec["etag"]);
        assert!(b["attempts"].as_u64().unwrap() >= 1);
    }
    // Another tenant's view of the destination is a 404.
    let (status, _) = stack
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/batches?destinationId={dest}"),
            Some(common::OTHER_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 404);

    let metrics = stack.worker_metrics(1).await;
    let closed = metric_sum(
        &metrics,
        "courier_batch_windows_total",
        &[("outcome", "delivered")],
    );
    assert!(
        closed >= 1.0,
        "the survivor closed the last window: {closed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_window_over_max_object_bytes_continues_in_further_objects() {
    let stack = Stack::start(1).await;
    let prefix = "split/";
    let limit = 5 * 1024 * 1024;
    let dest = stack
        .create_destination(&batched(
            &stack,
            prefix,
            json!({"windowSeconds": 60, "maxObjectBytes": limit}),
            "ACTIVE",
        ))
        .await;
    // About 1.5 MiB of NDJSON per delivery: a 5 MiB object holds three.
    let mut sent = HashMap::new();
    let mut windows = BTreeMap::<i64, usize>::new();
    let mut i = 0;
    while windows.values().all(|n| *n < 10) {
        let rows = rows(&format!("d{i}"), 1500, 1000);
        let rec = append(&stack, &dest, &format!("job-{i}"), &rows).await;
        *windows.entry(window_of(&rec)).or_default() += 1;
        sent.insert(rec["id"].as_str().unwrap().to_owned(), rows);
        i += 1;
    }
    let ids: Vec<String> = sent.keys().cloned().collect();
    let records = wait_delivered(&stack, &ids).await;
    let by_window = assert_exactly_once(&stack, prefix, &sent, &records).await;
    let (start, n) = windows.iter().find(|(_, n)| **n >= 10).unwrap();
    let keys = &by_window[start];
    assert!(
        keys.len() >= 4,
        "{n} deliveries of 1.5 MiB: four objects at least: {keys:?}"
    );
    for key in keys {
        let ndjson: usize = lines_of(&stack, key)
            .await
            .iter()
            .map(|l| l.to_string().len() + 1)
            .sum();
        assert!(ndjson <= limit, "{key}: {ndjson} bytes of NDJSON");
    }
    wait_released(&stack, &dest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_destinations_windows_are_held_then_delivered_once_active() {
    let stack = Stack::start(1).await;
    let prefix = "paused/";
    let body = batched(&stack, prefix, json!({"windowSeconds": 5}), "PAUSED");
    let dest = stack.create_destination(&body).await;
    let mut sent = HashMap::new();
    let mut windows = BTreeSet::new();
    let mut i = 0;
    while windows.len() < 2 {
        let rows = rows(&format!("p{i}"), 2, 10);
        let rec = append(&stack, &dest, &format!("job-{i}"), &rows).await;
        windows.insert(window_of(&rec));
        sent.insert(rec["id"].as_str().unwrap().to_owned(), rows);
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // `courier enqueue` appends through the same service.
    let cli_rows = rows("cli", 2, 10);
    let cli_id = stack.enqueue_file(
        &dest,
        "job-cli",
        "INV-CLI",
        "2026-06-07T10:00:00Z",
        &cli_rows,
    );
    assert_eq!(stack.record(&cli_id).await["status"], "BATCHED");
    sent.insert(cli_id, cli_rows);

    // The closer looks at the due windows and holds them, more than once.
    let deadline = Instant::now() + WAIT;
    loop {
        let held = metric_sum(
            &stack.worker_metrics(0).await,
            "courier_batch_windows_total",
            &[("outcome", "held")],
        );
        if held >= 4.0 {
            break;
        }
        assert!(Instant::now() < deadline, "windows never looked at: {held}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        stack.objects(prefix).await.is_empty(),
        "nothing delivered while paused"
    );
    for id in sent.keys() {
        assert_eq!(stack.record(id).await["status"], "BATCHED");
    }

    let mut active = body.clone();
    active["status"] = "ACTIVE".into();
    let (status, resp) = stack
        .put(&format!("/api/v1/delivery-destinations/{dest}"), &active)
        .await;
    assert_eq!(status, 200, "{resp}");
    let ids: Vec<String> = sent.keys().cloned().collect();
    let records = wait_delivered(&stack, &ids).await;
    let by_window = assert_exactly_once(&stack, prefix, &sent, &records).await;
    assert!(by_window.len() >= 2);
    wait_released(&stack, &dest).await;
}

/// A TCP proxy to `upstream` whose client-to-server direction stops while the gate is
/// closed; it counts the bytes that waited at the closed gate.
struct Gate {
    port: u16,
    open: Arc<AtomicBool>,
    waited: Arc<AtomicU64>,
}

impl Gate {
    async fn start(upstream: String) -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let waited = Arc::new(AtomicU64::new(0));
        let (o, w) = (Arc::clone(&open), Arc::clone(&waited));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let (o, w) = (Arc::clone(&o), Arc::clone(&w));
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if !o.load(Ordering::SeqCst) {
                            w.fetch_add(n as u64, Ordering::SeqCst);
                            while !o.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
            }
        });
        Gate { port, open, waited }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_upload_leaves_its_window_to_another_delivered_once() {
    let mut stack = Stack::start_with(
        2,
        courier_test_support::RedisServer::start().expect("redis starts"),
        vec![("COURIER_BATCH_CLAIM_TTL_SECS".into(), "3".into())],
    )
    .await;
    let endpoint = stack.garage.endpoint();
    let upstream = endpoint.trim_start_matches("http://").to_owned();
    let gate = Gate::start(upstream).await;
    let prefix = "killed/";
    let mut body = batched(&stack, prefix, json!({"windowSeconds": 5}), "ACTIVE");
    body["s3"]["endpointUrl"] = format!("http://127.0.0.1:{}", gate.port).into();
    let dest = stack.create_destination(&body).await;

    gate.open.store(false, Ordering::SeqCst);
    let mut sent = HashMap::new();
    for i in 0..20 {
        let rows = rows(&format!("k{i}"), 5, 100);
        let rec = append(&stack, &dest, &format!("job-{i}"), &rows).await;
        sent.insert(rec["id"].as_str().unwrap().to_owned(), rows);
    }
    // A worker claims a window and its upload reaches the gate: kill that worker.
    let keys = stack.keys();
    let d = stack.dest_id(&dest);
    let mut c = stack.redis().await;
    let deadline = Instant::now() + WAIT;
    let holder = loop {
        let claims: Vec<String> = c
            .keys(format!("{}:batch:*:claim", keys.destination(&d)))
            .await
            .unwrap();
        if let Some(claim) = claims.first()
            && gate.waited.load(Ordering::SeqCst) > 0
        {
            let token: String = c.get(claim).await.unwrap();
            break token;
        }
        assert!(Instant::now() < deadline, "no upload reached the gate");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let victim = (0..2)
        .find(|i| holder.starts_with(&format!("{}:", stack.worker_name(*i))))
        .unwrap_or_else(|| panic!("{holder} is one of the workers' claims"));
    stack.kill_worker(victim);
    gate.open.store(true, Ordering::SeqCst);

    let ids: Vec<String> = sent.keys().cloned().collect();
    let records = wait_delivered(&stack, &ids).await;
    assert_exactly_once(&stack, prefix, &sent, &records).await;
    for rec in records.values() {
        let attempts = rec["attempts"].as_array().unwrap();
        assert!(
            attempts
                .iter()
                .all(|a| a["worker"] == stack.worker_name(1 - victim)),
            "delivered by the survivor: {rec}"
        );
    }
    wait_released(&stack, &dest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_permanently_failed_window_is_dead_lettered_and_its_replay_delivers_it() {
    let stack = Stack::start(1).await;
    let prefix = "refused/";
    let body = batched(&stack, prefix, json!({"windowSeconds": 5}), "ACTIVE");
    let dest = stack.create_destination(&body).await;
    // The key may no longer write: PutObject gets a real AccessDenied (permanent).
    stack
        .garage
        .deny(common::BUCKET, &stack.key, false, true)
        .unwrap();
    let mut sent = HashMap::new();
    for i in 0..3 {
        let rows = rows(&format!("f{i}"), 2, 10);
        let rec = append(&stack, &dest, &format!("job-{i}"), &rows).await;
        sent.insert(
            rec["id"].as_str().unwrap().to_owned(),
            (window_of(&rec), rows),
        );
    }
    for id in sent.keys() {
        let rec = stack.wait_status(id, "FAILED", WAIT).await;
        assert_eq!(rec["error"]["code"], "AccessDenied", "{rec}");
        assert_eq!(rec["status"], "FAILED");
    }
    let windows: BTreeSet<i64> = sent.values().map(|(w, _)| *w).collect();
    let letters: BTreeSet<String> = stack
        .dlq_list()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = windows
        .iter()
        .map(|w| format!("batch_{dest}_{w}"))
        .collect();
    assert_eq!(letters, expected, "one dead letter per failed window");
    assert!(stack.objects(prefix).await.is_empty());

    // Fixed: the key may write again; updating the destination clears its failing state.
    stack
        .garage
        .allow(common::BUCKET, &stack.key, true, true)
        .unwrap();
    let (status, resp) = stack
        .put(&format!("/api/v1/delivery-destinations/{dest}"), &body)
        .await;
    assert_eq!(status, 200, "{resp}");
    // One delivery retried through the API replays its whole window; the CLI replays the rest.
    let first = sent.keys().next().unwrap().clone();
    let (status, resp) = stack
        .post(&format!("/api/v1/deliveries/{first}/retry"), &json!(null))
        .await;
    assert_eq!(status, 202, "{resp}");
    assert_eq!(resp["status"], "BATCHED", "{resp}");
    let out = stack.dlq(&["replay", "--all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<String> = sent.keys().cloned().collect();
    let records = wait_delivered(&stack, &ids).await;
    let sent: HashMap<String, Vec<Value>> = sent.into_iter().map(|(id, (_, r))| (id, r)).collect();
    assert_exactly_once(&stack, prefix, &sent, &records).await;
    assert!(stack.dlq_list().is_empty(), "the letters are gone");
    wait_released(&stack, &dest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_window_whose_store_is_down_is_retried_until_it_lands_once() {
    let mut stack = Stack::start(1).await;
    let prefix = "retried/";
    let dest = stack
        .create_destination(&batched(
            &stack,
            prefix,
            json!({"windowSeconds": 5}),
            "ACTIVE",
        ))
        .await;
    stack.garage.stop();
    let mut sent = HashMap::new();
    for i in 0..3 {
        let rows = rows(&format!("r{i}"), 2, 10);
        let rec = append(&stack, &dest, &format!("job-{i}"), &rows).await;
        sent.insert(rec["id"].as_str().unwrap().to_owned(), rows);
    }
    // The store refuses connections: a transient failure, tried again by the policy.
    let deadline = Instant::now() + WAIT;
    loop {
        let retried = metric_sum(
            &stack.worker_metrics(0).await,
            "courier_batch_windows_total",
            &[("outcome", "retried")],
        );
        if retried >= 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never retried:\n{}",
            stack.worker_logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in sent.keys() {
        assert_eq!(stack.record(id).await["status"], "BATCHED");
    }
    stack.garage.start_again().unwrap();
    let ids: Vec<String> = sent.keys().cloned().collect();
    let records = wait_delivered(&stack, &ids).await;
    assert_exactly_once(&stack, prefix, &sent, &records).await;
    let (_, page) = stack
        .get(&format!("/api/v1/batches?destinationId={dest}"))
        .await;
    let attempts: u64 = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["attempts"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(
        attempts >= 2,
        "the landing try counts the failed ones: {page}"
    );
    wait_released(&stack, &dest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_window_held_longer_than_the_held_max_age_fails_as_held_too_long() {
    let stack = Stack::start_with(
        1,
        courier_test_support::RedisServer::start().expect("redis starts"),
        vec![("COURIER_HELD_MAX_AGE_SECS".into(), "8".into())],
    )
    .await;
    let prefix = "held-long/";
    let dest = stack
        .create_destination(&batched(
            &stack,
            prefix,
            json!({"windowSeconds": 5}),
            "PAUSED",
        ))
        .await;
    let rec = append(&stack, &dest, "job-held", &rows("h", 2, 10)).await;
    let id = rec["id"].as_str().unwrap();
    let failed = stack.wait_status(id, "FAILED", WAIT).await;
    assert_eq!(failed["error"]["code"], "HeldTooLong", "{failed}");
    let letters: Vec<String> = stack
        .dlq_list()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(letters, [format!("batch_{dest}_{}", window_of(&rec))]);
    assert!(stack.objects(prefix).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_big_window_goes_through_the_multipart_upload() {
    let stack = Stack::start_with(
        1,
        courier_test_support::RedisServer::start().expect("redis starts"),
        vec![("COURIER_PART_SIZE_MB".into(), "5".into())],
    )
    .await;
    let prefix = "multipart/";
    let dest = stack
        .create_destination(&batched(
            &stack,
            prefix,
            json!({"windowSeconds": 30, "maxObjectBytes": 64 * 1024 * 1024}),
            "ACTIVE",
        ))
        .await;
    // Random hex compresses to about half: ~15 MiB of NDJSON in a window is ~8 MiB of gzip,
    // more than one 5 MiB part.
    let mut sent = HashMap::new();
    let mut windows = BTreeMap::<i64, usize>::new();
    let mut i = 0;
    while windows.values().all(|n| *n < 10) {
        let rows: Vec<Value> = (0..1500)
            .map(|r| {
                let pad: String = (0..500)
                    .map(|_| format!("{:02x}", rand::random::<u8>()))
                    .collect();
                json!({"tag": format!("m{i}/{r}"), "n": r, "pad": pad})
            })
            .collect();
        let rec = append(&stack, &dest, &format!("job-{i}"), &rows).await;
        *windows.entry(window_of(&rec)).or_default() += 1;
        sent.insert(rec["id"].as_str().unwrap().to_owned(), rows);
        i += 1;
    }
    let ids: Vec<String> = sent.keys().cloned().collect();
    let records = wait_delivered(&stack, &ids).await;
    let by_window = assert_exactly_once(&stack, prefix, &sent, &records).await;
    let (start, _) = windows.iter().find(|(_, n)| **n >= 10).unwrap();
    let key = by_window[start].iter().next().unwrap();
    let head = stack
        .s3()
        .await
        .head_object()
        .bucket(common::BUCKET)
        .key(key)
        .send()
        .await
        .unwrap();
    let etag = head
        .e_tag()
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned();
    assert!(
        etag.rsplit_once('-')
            .is_some_and(|(_, parts)| parts.parse::<u32>().unwrap() >= 2),
        "a multipart object's ETag ends with its part count: {etag} ({} bytes)",
        head.content_length().unwrap_or_default()
    );
    assert_eq!(head.content_encoding(), Some("gzip"));
    let rec = records.values().find(|r| r["key"] == json!(key)).unwrap();
    assert_eq!(rec["etag"], json!(etag), "{rec}");
    wait_released(&stack, &dest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn windows_open_when_batching_is_turned_off_are_still_delivered() {
    let stack = Stack::start(1).await;
    let prefix = "turned-off/";
    let dest = stack
        .create_destination(&batched(
            &stack,
            prefix,
            json!({"windowSeconds": 5}),
            "PAUSED",
        ))
        .await;
    let mut sent = HashMap::new();
    for i in 0..2 {
        let rows = rows(&format!("o{i}"), 3, 10);
        let rec = append(&stack, &dest, &format!("job-{i}"), &rows).await;
        sent.insert(rec["id"].as_str().unwrap().to_owned(), rows);
    }
    // Back to one CSV object per delivery, and active.
    let plain = stack.destination_body("CSV", "NONE", prefix);
    let (status, resp) = stack
        .put(&format!("/api/v1/delivery-destinations/{dest}"), &plain)
        .await;
    assert_eq!(status, 200, "{resp}");
    assert!(resp.get("batch").is_none(), "{resp}");
    let ids: Vec<String> = sent.keys().cloned().collect();
    let records = wait_delivered(&stack, &ids).await;
    assert_exactly_once(&stack, prefix, &sent, &records).await;
    wait_released(&stack, &dest).await;
}
