//! Bounded Redis memory: finished task data is dropped, and records, dead letters and
//! index entries expire after the retention, so Redis does not grow with history.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Stack;
use redis::AsyncCommands;
use serde_json::json;

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

async fn dbsize(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    redis::cmd("DBSIZE").query_async(conn).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_memory_returns_to_its_baseline_after_the_retention() {
    // What outlives the retention, by design: one marker per object key (the newest result
    // delivered there, the stale-overwrite guard's memory), kept for as long as a delivery
    // of the key can still arrive: 2 × (held 600 s + retries 1,800 s + retention 3 s +
    // retries after a replay 1,800 s), each expiring on its own.
    const MARKER_TTL_MS: i64 = 2 * (MARKER_HELD_SECS + 1_800 + 3 + 1_800) * 1000;
    // 2,000 in `make test`; `RETENTION_TEST_DELIVERIES=100000` for the full-size run.
    let n: usize = std::env::var("RETENTION_TEST_DELIVERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let mut stack = Stack::start(0).await;
    for _ in 0..2 {
        stack.add_worker_with_env(&[
            ("COURIER_RETENTION_SECS", "3".into()),
            // Key markers outlive every delivery that can still reach their key: held
            // (at most this long), retried (30 min) and replayed: 8,406 s here.
            ("COURIER_HELD_MAX_AGE_SECS", MARKER_HELD_SECS.to_string()),
            ("COURIER_JANITOR_INTERVAL_SECS", "1".into()),
            ("COURIER_WORKER_CONCURRENCY", "16".into()),
        ]);
    }
    stack.wait_worker(0).await;
    stack.wait_worker(1).await;
    let dest = stack
        .create_destination(&stack.destination_body("NDJSON", "GZIP", "mem/"))
        .await;
    // A first delivery warms everything up (apalis registers its queue and workers).
    let warm = stack.enqueue(&dest, "warm", "WARM").await;
    stack.wait_final(&warm, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut conn = stack.redis().await;
    let base_keys = dbsize(&mut conn).await;
    let base_memory = used_memory(&mut conn).await;

    let stack = Arc::new(stack);
    let started = Instant::now();
    // Samples the key count and memory all along, so the peak is seen whatever the pace.
    let peak_seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let peak_memory = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let mut conn = conn.clone();
        let peak_seen = Arc::clone(&peak_seen);
        let peak_memory = Arc::clone(&peak_memory);
        tokio::spawn(async move {
            loop {
                if let Ok(n) = redis::cmd("DBSIZE").query_async::<u64>(&mut conn).await {
                    peak_seen.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
                }
                let memory = used_memory(&mut conn).await;
                peak_memory.fetch_max(memory, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..8 {
        let stack = Arc::clone(&stack);
        let dest = dest.clone();
        tasks.spawn(async move {
            for i in (chunk..n).step_by(8) {
                let body = json!({
                    "destinationId": dest, "jobId": format!("job-{i}"),
                    "partnerInventoryId": format!("INV-{i}"),
                    "completedAt": "2026-06-07T10:00:00Z",
                    "rows": [{"hotel": format!("H{i}"), "score": i}]
                });
                let (s, b) = stack.post("/api/v1/deliveries", &body).await;
                assert_eq!(s, 202, "{b}");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    // Every delivery lands (the bucket is the witness), then history expires.
    let deadline = Instant::now() + Duration::from_secs(240 + n as u64 / 20);
    let mut peak_keys = dbsize(&mut conn).await;
    loop {
        peak_keys = peak_keys.max(dbsize(&mut conn).await);
        let landed = count_objects(&stack, "mem/").await;
        if landed == n + 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {landed} of {} objects landed",
            n + 1
        );
        // Listing the bucket is a page per 1,000 objects: look less often on big runs.
        tokio::time::sleep(Duration::from_millis((n as u64 / 20).max(500))).await;
    }
    let delivered_in = started.elapsed();
    sampler.abort();
    peak_keys = peak_keys.max(peak_seen.load(std::sync::atomic::Ordering::Relaxed));
    let object_keys: Vec<String> = std::iter::once("WARM".to_owned())
        .chain((0..n).map(|i| format!("INV-{i}")))
        .map(|inv| format!("mem/mapping_results_{inv}_2026-06-07.ndjson.gz"))
        .collect();
    // The warm-up delivery's marker is in the baseline already.
    let base_markers = 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (keys, memory, markers) = loop {
        let keys = dbsize(&mut conn).await;
        peak_keys = peak_keys.max(keys);
        let data: u64 = conn.hlen(stack.keys().queue_keys().data()).await.unwrap();
        let (markers, longest) = live_markers(&mut conn, &stack, &dest, &object_keys).await;
        if keys - markers <= base_keys - base_markers + 2 && data == 0 {
            assert_eq!(markers, n as u64 + 1, "one marker per object key");
            assert!(
                (1..=MARKER_TTL_MS).contains(&longest),
                "every marker expires within {MARKER_TTL_MS} ms: {longest}"
            );
            break (keys, used_memory(&mut conn).await, markers);
        }
        if Instant::now() >= deadline {
            let sample: Vec<String> = redis::cmd("SCAN")
                .arg(0)
                .arg("COUNT")
                .arg(50)
                .query_async::<(u64, Vec<String>)>(&mut conn)
                .await
                .unwrap()
                .1;
            panic!(
                "Redis still holds {keys} keys (baseline {base_keys}) and {data} task payloads; e.g. {sample:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let peak_memory = peak_memory.load(std::sync::atomic::Ordering::Relaxed);
    // No per-delivery command may scan the waiting list (apalis-redis's lease does, with
    // LREM, unless leases are off): that would make a backlog drain in quadratic time.
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let lrem = stats
        .lines()
        .find(|l| l.starts_with("cmdstat_lrem:"))
        .unwrap_or("cmdstat_lrem: none");
    assert!(lrem.ends_with("none"), "the queue scanned lists: {lrem}");
    // The janitors find the delivery indexes through their registry; each scans the
    // keyspace once at most, when it starts, not on every sweep.
    let scans: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_scan:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap());
    assert!(
        scans <= 8,
        "the janitors scanned the keyspace {scans} times"
    );
    println!(
        "deliveries={n} delivered_in={delivered_in:?} keys: baseline={base_keys} peak={peak_keys} after={keys}; \
         used_memory: baseline={base_memory} peak={peak_memory} after={memory}"
    );
    assert!(
        peak_keys > base_keys + 100,
        "the run did write history ({peak_keys} keys at the end)"
    );
    // Allocator slack aside, memory is back near the baseline plus the markers (a key, a
    // timestamp and an id each), not N deliveries above it.
    assert!(
        memory < base_memory + 1_000_000 + markers * 256,
        "used_memory grew from {base_memory} to {memory} with {markers} markers"
    );
    let index: u64 = conn
        .zcard(stack.keys().destination_deliveries(&stack.dest_id(&dest)))
        .await
        .unwrap();
    assert_eq!(index, 0, "index entries of expired records are swept");
}

/// Held deliveries expire after this long in the test (see the marker's lifetime above).
const MARKER_HELD_SECS: i64 = 600;

/// The markers of `keys` still in Redis, and the longest time one has left (ms).
async fn live_markers(
    conn: &mut redis::aio::MultiplexedConnection,
    stack: &Stack,
    dest: &str,
    keys: &[String],
) -> (u64, i64) {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.pttl(stack.keys().object_marker(&stack.dest_id(dest), key));
    }
    let ttls: Vec<i64> = pipe.query_async(conn).await.unwrap();
    let live = ttls.iter().filter(|&&t| t != -2).count() as u64;
    (live, ttls.into_iter().max().unwrap_or(-2))
}

async fn count_objects(stack: &Stack, prefix: &str) -> usize {
    let client = stack.s3().await;
    let mut n = 0;
    let mut token = None;
    loop {
        let out = client
            .list_objects_v2()
            .bucket(common::BUCKET)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        n += out.contents().len();
        token = out.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            return n;
        }
    }
}
