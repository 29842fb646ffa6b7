//! Redis failover under load, with real processes: a primary, two replicas and three real
//! Sentinels; the API (with `COURIER_REDIS_WAIT_REPLICAS=1`) and two workers find Redis
//! through the Sentinels. Clients keep announcing jobs (retrying with the same
//! `Idempotency-Key` until they get a 202) while the primary is SIGKILLed. The Sentinels
//! promote a replica; every delivery the API acknowledged lands exactly at its key, none is
//! doubled, and the fleet goes on delivering without a restart.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{BUCKET, Stack, TOKEN};
use courier_test_support::{SENTINEL_SERVICE, SentinelCluster};
use serde_json::json;

const JOBS: usize = 120;
const CLIENTS: usize = 4;

#[tokio::test]
async fn a_killed_primary_loses_no_acknowledged_delivery() {
    let cluster = SentinelCluster::start(2).expect("primary, replicas and sentinels");
    cluster
        .wait_ready(Duration::from_secs(60))
        .expect("sentinels know the topology");
    let sentinels = cluster.sentinels_setting();
    let SentinelCluster {
        primary,
        replicas: _replicas,
        sentinels: sentinel_procs,
    } = cluster;
    let env = vec![
        ("COURIER_REDIS_SENTINELS".to_owned(), sentinels),
        (
            "COURIER_REDIS_SENTINEL_SERVICE".to_owned(),
            SENTINEL_SERVICE.to_owned(),
        ),
        ("COURIER_REDIS_WAIT_REPLICAS".to_owned(), "1".to_owned()),
        ("COURIER_HEARTBEAT_SECS".to_owned(), "1".to_owned()),
        ("COURIER_MISSED_HEARTBEATS".to_owned(), "3".to_owned()),
    ];
    let mut stack = Stack::start_with(2, primary, env).await;
    let body = stack.destination_body("CSV", "NONE", "failover/");
    let dest = stack.create_destination(&body).await;

    // Clients announce jobs 0..JOBS, each until it is acknowledged.
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let api = stack.api_url.clone();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, acked, refused, api, dest) = (
                next.clone(),
                acked.clone(),
                refused.clone(),
                api.clone(),
                dest.clone(),
            );
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut ids = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= JOBS {
                        return ids;
                    }
                    let job = json!({
                        "destinationId": dest,
                        "jobId": format!("job-{n}"),
                        "partnerInventoryId": format!("INV-{n}"),
                        "completedAt": "2026-06-07T10:00:00Z",
                        "rows": [{"n": n}]
                    });
                    loop {
                        let resp = http
                            .post(format!("{api}/api/v1/deliveries"))
                            .bearer_auth(TOKEN)
                            .header("Idempotency-Key", format!("job-{n}"))
                            .json(&job)
                            .send()
                            .await;
                        match resp {
                            Ok(r) if r.status().as_u16() == 202 => {
                                let v: serde_json::Value = r.json().await.unwrap();
                                ids.push((n, v["id"].as_str().unwrap().to_owned()));
                                acked.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                            _ => {
                                refused.fetch_add(1, Ordering::SeqCst);
                                assert!(Instant::now() < deadline, "job-{n} never acknowledged");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                }
            })
        })
        .collect();

    // Kill the primary once a third of the jobs are in.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < JOBS / 3 {
        assert!(Instant::now() < deadline, "no progress before the failover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stack.redis.kill();

    let mut acknowledged = Vec::new();
    for c in clients {
        acknowledged.extend(c.await.unwrap());
    }
    assert_eq!(
        acknowledged.len(),
        JOBS,
        "every job was acknowledged in the end"
    );
    assert!(
        sentinel_procs
            .iter()
            .any(|s| s.log().contains("+switch-master")),
        "the sentinels promoted a replica"
    );

    // Every acknowledged delivery lands, once, at its key.
    for (_, id) in &acknowledged {
        stack
            .wait_status(id, "DELIVERED", Duration::from_secs(120))
            .await;
    }
    let ids: BTreeSet<&str> = acknowledged.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), JOBS, "one delivery per job, none doubled");
    let keys: BTreeSet<String> = stack.objects("failover/").await.into_iter().collect();
    let expected: BTreeSet<String> = (0..JOBS)
        .map(|n| format!("failover/mapping_results_INV-{n}_2026-06-07.csv"))
        .collect();
    assert_eq!(keys, expected, "in s3://{BUCKET}/failover/");
    for n in [0, JOBS / 2, JOBS - 1] {
        let body = stack
            .object(&format!("failover/mapping_results_INV-{n}_2026-06-07.csv"))
            .await
            .expect("object");
        assert_eq!(String::from_utf8(body).unwrap(), format!("n\n{n}\n"));
    }
    // The processes that saw the failover are the ones that finished the work.
    assert!(stack.api_running(), "the API was not restarted");
    for i in 0..stack.workers.len() {
        assert!(stack.worker_running(i), "worker {i} was not restarted");
    }
    eprintln!(
        "failover: {JOBS} jobs acknowledged, {} attempts refused while it ran",
        refused.load(Ordering::SeqCst)
    );
}
