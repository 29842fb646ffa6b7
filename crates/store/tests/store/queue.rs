//! The queue as Courier uses apalis-redis: pushes, schedules, heartbeats, and handing a
//! stopping worker's tasks back.

use chrono::{TimeZone, Utc};
use courier_core::DestinationId;
use courier_store::DeliveryQueue;
use redis::AsyncCommands;

use crate::{delivery_id_at, ns, task, tenant};

#[tokio::test]
async fn pushed_tasks_are_due_now_and_scheduled_ones_at_the_next_second() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let queue = DeliveryQueue::new(ns.conn.clone(), &ns.keys);
    let q = ns.keys.queue_keys();
    let (acme, dest) = (tenant("acme"), DestinationId::generate());
    let (now, later) = (delivery_id_at(1), delivery_id_at(2));
    let before = Utc::now().timestamp();
    queue.push(task(&acme, &dest, &now)).await.unwrap();
    let after = Utc::now().timestamp();
    // apalis-redis keeps a pushed task in the scheduled set, due at once.
    let pushed: Vec<(String, i64)> = c.zrange_withscores(q.scheduled(), 0, -1).await.unwrap();
    assert_eq!(pushed.len(), 1);
    let (task_id, due) = &pushed[0];
    assert!(
        (before..=after).contains(due),
        "{before} <= {due} <= {after}"
    );
    let payload: String = c.hget(q.data(), task_id).await.unwrap();
    assert!(payload.contains(now.as_str()), "{payload}");
    assert!(c.exists::<_, bool>(q.meta(task_id)).await.unwrap());
    let _: () = c.zrem(q.scheduled(), task_id).await.unwrap();

    // Rounded up to the next whole second.
    let at = Utc.timestamp_millis_opt(4_102_444_800_250).unwrap();
    queue
        .schedule(task(&acme, &dest, &later), at)
        .await
        .unwrap();
    let scheduled: Vec<(String, f64)> = c.zrange_withscores(q.scheduled(), 0, -1).await.unwrap();
    assert_eq!(scheduled.len(), 1);
    assert_eq!(scheduled[0].1, 4_102_444_801.0);
}

#[tokio::test]
async fn heartbeats_only_keep_registered_workers_alive() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let queue = DeliveryQueue::new(ns.conn.clone(), &ns.keys);
    let workers = ns.keys.queue_keys().workers();
    queue.keep_alive(&mut c, "stranger").await.unwrap();
    assert_eq!(c.zcard::<_, u64>(&workers).await.unwrap(), 0);

    let _: () = c.zadd(&workers, "w1", 0).await.unwrap();
    let before = Utc::now().timestamp();
    queue.keep_alive(&mut c, "w1").await.unwrap();
    let after = Utc::now().timestamp();
    let beat: i64 = c.zscore(&workers, "w1").await.unwrap();
    assert!(
        (before..=after).contains(&beat),
        "{before} <= {beat} <= {after}"
    );
}

#[tokio::test]
async fn a_stopping_workers_tasks_go_back_to_the_queue_at_once() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let queue = DeliveryQueue::new(ns.conn.clone(), &ns.keys);
    let q = ns.keys.queue_keys();
    let _: () = c.zadd(q.workers(), "w1", 1).await.unwrap();
    let _: () = c.zadd(q.workers(), "w2", 1).await.unwrap();
    let _: () = c.sadd(q.inflight("w1"), &["t1", "t2"]).await.unwrap();
    let _: () = c.sadd(q.inflight("w2"), "t3").await.unwrap();
    let _: () = c.rpush(q.active(), "t0").await.unwrap();

    assert_eq!(queue.hand_back(&mut c, "w1").await.unwrap(), 2);
    let mut active: Vec<String> = c.lrange(q.active(), 0, -1).await.unwrap();
    assert_eq!(active.remove(0), "t0", "behind what was already waiting");
    active.sort();
    assert_eq!(active, ["t1", "t2"]);
    assert!(!c.exists::<_, bool>(q.inflight("w1")).await.unwrap());
    let workers: Vec<String> = c.zrange(q.workers(), 0, -1).await.unwrap();
    assert_eq!(workers, ["w2"]);
    let signal: Vec<String> = c.lrange(q.signal(), 0, -1).await.unwrap();
    assert_eq!(signal, ["1"], "waiting workers are woken");
    assert_eq!(c.scard::<_, u64>(q.inflight("w2")).await.unwrap(), 1);

    // A worker with nothing in flight just leaves.
    assert_eq!(queue.hand_back(&mut c, "w2-gone").await.unwrap(), 0);
}
