//! The queue snapshot script: every number of one state of the queue, exactly.

use std::time::Duration;

use chrono::Utc;
use courier_core::DestinationId;
use courier_store::queue::Liveness;
use courier_store::{QueueStats, StatsReader};
use redis::AsyncCommands;

use crate::ns;

fn reader(ns: &crate::Ns) -> StatsReader {
    StatsReader::new(
        ns.conn.clone(),
        ns.keys.clone(),
        Liveness {
            heartbeat: Duration::from_secs(5),
            missed_heartbeats: 6,
        },
    )
}

#[tokio::test]
async fn an_empty_queue_reads_all_zero() {
    let ns = ns().await;
    assert_eq!(reader(&ns).read().await.unwrap(), QueueStats::default());
}

#[tokio::test]
async fn every_number_of_a_known_state() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let q = ns.keys.queue_keys();
    let now = Utc::now().timestamp();
    // Waiting: two in the active list (the head's ULID says it was made at `head_ms`) and
    // one scheduled task that is due; one more is scheduled for later.
    let head_ms = 1_000_000_000_000_u64;
    let head = ulid::Ulid::from_parts(head_ms, 1).to_string();
    let _: () = c
        .rpush(q.active(), &[head.as_str(), "t-second"])
        .await
        .unwrap();
    let _: () = c.zadd(q.scheduled(), "t-due", now - 10).await.unwrap();
    let _: () = c.zadd(q.scheduled(), "t-later", now + 600).await.unwrap();
    // One live worker with two tasks in flight, one dead (silent for an hour) with one.
    let _: () = c.zadd(q.workers(), "w-live", now).await.unwrap();
    let _: () = c.zadd(q.workers(), "w-dead", now - 3600).await.unwrap();
    let _: () = c.sadd(q.inflight("w-live"), &["a", "b"]).await.unwrap();
    let _: () = c.sadd(q.inflight("w-dead"), "c").await.unwrap();
    // An in-flight set of a worker no longer registered is not counted.
    let _: () = c.sadd(q.inflight("w-gone"), "d").await.unwrap();
    // Held: two parked and one being released for one destination, one for another.
    let (d1, d2) = (DestinationId::generate(), DestinationId::generate());
    let _: () = c.rpush(ns.keys.held(&d1), &["h1", "h2"]).await.unwrap();
    let _: () = c.rpush(ns.keys.releasing(&d1), "h3").await.unwrap();
    let _: () = c.rpush(ns.keys.held(&d2), "h4").await.unwrap();
    let _: () = c
        .sadd(ns.keys.held_destinations(), &[d1.as_str(), d2.as_str()])
        .await
        .unwrap();
    let _: () = c.zadd(ns.keys.dead_letters(), "dlv_x", 1).await.unwrap();
    let _: () = c
        .sadd(ns.keys.failing_destinations(), d1.as_str())
        .await
        .unwrap();
    let _: () = c
        .sadd(ns.keys.paused_destinations(), &[d1.as_str(), d2.as_str()])
        .await
        .unwrap();

    let age =
        |ms: u64| Duration::from_millis(u64::try_from(Utc::now().timestamp_millis()).unwrap() - ms);
    let before = age(head_ms);
    let stats = reader(&ns).read().await.unwrap();
    let after = age(head_ms);
    assert!(
        (before..=after).contains(&stats.oldest_waiting_age),
        "the head of the active list is the oldest: {:?}",
        stats.oldest_waiting_age
    );
    assert_eq!(
        stats,
        QueueStats {
            waiting: 3,
            scheduled: 1,
            in_flight: 3,
            held: 4,
            dead: 1,
            oldest_waiting_age: stats.oldest_waiting_age,
            live_workers: 1,
            failing_destinations: 1,
            paused_destinations: 2,
        }
    );
}

#[tokio::test]
async fn the_oldest_waiting_task_may_be_a_due_scheduled_one() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let q = ns.keys.queue_keys();
    let due = Utc::now().timestamp() - 3600;
    let _: () = c.zadd(q.scheduled(), "t-due", due).await.unwrap();
    let _: () = c.rpush(q.active(), "not-a-ulid!").await.unwrap();
    let before = Utc::now().timestamp_millis();
    let stats = reader(&ns).read().await.unwrap();
    let after = Utc::now().timestamp_millis();
    let age = i64::try_from(stats.oldest_waiting_age.as_millis()).unwrap();
    assert!(
        (before - due * 1000..=after - due * 1000).contains(&age),
        "{age}"
    );
    assert_eq!(stats.waiting, 2);
}
