//! Writes that must be whole or absent when Redis refuses writes, and the way back out of
//! apalis-redis's own dead set. The tests that need Redis at `maxmemory` start a server of
//! their own (a limit on the shared one would fail every other test).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use courier_core::delivery::{DeliveryRecord, DeliveryStatus, DeliveryTask};
use courier_core::{DestinationId, ErrorCode};
use courier_store::{
    DeadLetter, DeadLetters, DeliveryQueue, Janitor, Keys, RecordStore, RedisConn, StoreError,
};
use courier_test_support::{RedisServer, test_namespace};
use redis::AsyncCommands;

use crate::{Ns, delivery_id_at, ns, queued_deliveries, record, task, tenant};

/// A record and its task, as the producer makes them.
fn queued(dest: &DestinationId, ms: u64) -> (DeliveryRecord, DeliveryTask) {
    let acme = tenant("acme");
    let id = delivery_id_at(ms);
    let t = task(&acme, dest, &id);
    let r = record(
        &acme,
        dest,
        &id,
        "job-1",
        DeliveryStatus::Queued,
        Utc::now(),
    );
    (r, t)
}

/// Every key of the namespace, sorted.
async fn keys_of(conn: &RedisConn, keys: &Keys) -> Vec<String> {
    let mut c = conn.clone();
    let mut all: Vec<String> = c.keys(format!("{}:*", keys.namespace())).await.unwrap();
    all.sort();
    all
}

/// Redis refuses every write that may grow memory (`maxmemory` below what it uses, with
/// `noeviction`), or accepts writes again (`None`).
async fn limit_memory(conn: &RedisConn, limit: Option<u64>) {
    let mut c = conn.clone();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(limit.unwrap_or(0))
        .query_async(&mut c)
        .await
        .unwrap();
}

fn is_oom(e: &StoreError) -> bool {
    e.to_string().contains("OOM")
}

async fn own_server() -> (RedisServer, Ns) {
    let server = RedisServer::start().expect("start redis");
    let conn = courier_store::connect(&server.url()).await.unwrap();
    let ns = Ns {
        conn,
        keys: Keys::new(test_namespace()),
    };
    (server, ns)
}

#[tokio::test]
async fn an_enqueue_writes_the_record_and_a_task_as_apalis_pushes_it() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let queue = DeliveryQueue::new(ns.conn.clone(), &ns.keys);
    let records = RecordStore::new(ns.conn.clone(), ns.keys.clone());
    let q = ns.keys.queue_keys();
    let dest = DestinationId::generate();
    let (r, t) = queued(&dest, 1);
    queue.push_with_record(&records, &r, &t).await.unwrap();
    assert_eq!(records.get_any(&r.id).await.unwrap(), Some(r.clone()));
    assert_eq!(queued_deliveries(&ns).await, [r.id.to_string()]);
    assert_eq!(records.pending_count(&dest).await.unwrap(), 1);

    // The task's metadata is what apalis-redis's own push writes.
    let (_, t2) = queued(&dest, 2);
    queue.push(t2).await.unwrap();
    let ids: Vec<String> = c.zrange(q.scheduled(), 0, -1).await.unwrap();
    assert_eq!(ids.len(), 2);
    let mut metas = Vec::new();
    for id in &ids {
        let meta: HashMap<String, String> = c.hgetall(q.meta(id)).await.unwrap();
        metas.push(meta);
    }
    assert_eq!(metas[0], metas[1]);
    assert_eq!(metas[0]["max_attempts"], "25");
    assert_eq!(metas[0]["status"], "Pending");
}

#[tokio::test]
async fn a_refused_enqueue_leaves_neither_record_nor_task() {
    let (_server, ns) = own_server().await;
    let queue = DeliveryQueue::new(ns.conn.clone(), &ns.keys);
    let records = RecordStore::new(ns.conn.clone(), ns.keys.clone());
    let dest = DestinationId::generate();
    let (r, t) = queued(&dest, 1);
    limit_memory(&ns.conn, Some(1)).await;
    let err = queue.push_with_record(&records, &r, &t).await.unwrap_err();
    assert!(is_oom(&err), "{err}");
    limit_memory(&ns.conn, None).await;
    assert_eq!(keys_of(&ns.conn, &ns.keys).await, Vec::<String>::new());
    assert_eq!(records.get_any(&r.id).await.unwrap(), None);
}

#[tokio::test]
async fn a_storage_retry_is_written_at_maxmemory_where_plain_writes_are_refused() {
    let (_server, ns) = own_server().await;
    let mut c = ns.conn.clone();
    let queue = DeliveryQueue::new(ns.conn.clone(), &ns.keys);
    let records = RecordStore::new(ns.conn.clone(), ns.keys.clone());
    let q = ns.keys.queue_keys();
    let dest = DestinationId::generate();
    let (mut r, t) = queued(&dest, 1);
    queue.push_with_record(&records, &r, &t).await.unwrap();
    let before: Vec<String> = c.zrange(q.scheduled(), 0, -1).await.unwrap();

    limit_memory(&ns.conn, Some(1)).await;
    r.retrying(
        courier_core::delivery::DeliveryError::new(ErrorCode::StorageFailed, "OOM"),
        Utc::now(),
    );
    let err = records.put(&r).await.unwrap_err();
    assert!(is_oom(&err), "a plain write is refused: {err}");
    let at = Utc.timestamp_opt(4_102_444_800, 0).unwrap();
    queue
        .retry_after_storage_failure(Some(&r), &t, at)
        .await
        .unwrap();
    limit_memory(&ns.conn, None).await;

    assert_eq!(
        records.get_any(&r.id).await.unwrap().map(|r| r.status),
        Some(DeliveryStatus::Retrying)
    );
    let after: Vec<(String, f64)> = c.zrange_withscores(q.scheduled(), 0, -1).await.unwrap();
    let new: Vec<_> = after
        .iter()
        .filter(|(id, _)| !before.contains(id))
        .collect();
    assert_eq!(new.len(), 1, "{after:?}");
    assert_eq!(new[0].1, 4_102_444_800.0);
    let payload: Vec<u8> = c.hget(q.data(), &new[0].0).await.unwrap();
    let task: DeliveryTask = courier_core::payload::decode(&payload).unwrap();
    assert_eq!(task, t);
}

#[tokio::test]
async fn a_refused_replay_leaves_the_letter_and_the_record_as_they_were() {
    let (_server, ns) = own_server().await;
    let queue = DeliveryQueue::new(ns.conn.clone(), &ns.keys);
    let records = RecordStore::new(ns.conn.clone(), ns.keys.clone());
    let dead = DeadLetters::new(ns.conn.clone(), ns.keys.clone(), queue.clone());
    let dest = DestinationId::generate();
    let (mut r, t) = queued(&dest, 1);
    r.failed(
        courier_core::delivery::DeliveryError::new(ErrorCode::AccessDenied, "no"),
        Utc::now(),
    );
    records.put(&r).await.unwrap();
    let letter = DeadLetter {
        id: r.id.to_string(),
        destination_id: Some(dest.clone()),
        code: "AccessDenied".into(),
        reason: "no".into(),
        died_at: Utc::now(),
        payload: serde_json::to_value(&t).unwrap(),
    };
    dead.add(&letter).await.unwrap();
    let keys_before = keys_of(&ns.conn, &ns.keys).await;

    limit_memory(&ns.conn, Some(1)).await;
    let err = dead.replay(&letter).await.unwrap_err();
    assert!(is_oom(&err), "{err}");
    limit_memory(&ns.conn, None).await;
    assert_eq!(keys_of(&ns.conn, &ns.keys).await, keys_before);
    assert_eq!(records.get_any(&r.id).await.unwrap(), Some(r.clone()));
    assert_eq!(dead.get(&letter.id).await.unwrap(), Some(letter.clone()));

    // Accepted, the replay queues the task and marks the record in one step.
    assert!(dead.replay(&letter).await.unwrap());
    let requeued = records.get_any(&r.id).await.unwrap().unwrap();
    assert_eq!(requeued.status, DeliveryStatus::Queued);
    assert_eq!(requeued.error, r.error, "the history is kept");
    assert_eq!(queued_deliveries(&ns).await, [r.id.to_string()]);
    assert_eq!(dead.get(&letter.id).await.unwrap(), None);
}

/// Puts `task` where apalis-redis's `handle_results.lua` puts a task after its 25th failed
/// run: out of the queue, its id in the dead set, its data and metadata kept.
async fn give_up_as_apalis_does(ns: &Ns, queue: &DeliveryQueue, task: DeliveryTask) -> String {
    let mut c = ns.conn.clone();
    let q = ns.keys.queue_keys();
    let before: Vec<String> = c.zrange(q.scheduled(), 0, -1).await.unwrap();
    queue.push(task).await.unwrap();
    let after: Vec<String> = c.zrange(q.scheduled(), 0, -1).await.unwrap();
    let id = after.into_iter().find(|i| !before.contains(i)).unwrap();
    let _: () = c.zrem(q.scheduled(), &id).await.unwrap();
    let _: () = c.sadd(q.dead(), &id).await.unwrap();
    let _: () = c
        .hset_multiple(q.meta(&id), &[("attempts", "25"), ("status", "Failed")])
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn janitors_move_apalis_dead_tasks_into_courier_dead_letters_once() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let queue = DeliveryQueue::new(ns.conn.clone(), &ns.keys);
    let records = RecordStore::new(ns.conn.clone(), ns.keys.clone());
    let dead = DeadLetters::new(ns.conn.clone(), ns.keys.clone(), queue.clone());
    let q = ns.keys.queue_keys();
    let dest = DestinationId::generate();
    // A delivery stuck IN_PROGRESS, one already delivered, and a payload that is no task.
    let (mut stuck, stuck_task) = queued(&dest, 1);
    stuck.status = DeliveryStatus::InProgress;
    records.put(&stuck).await.unwrap();
    let (mut done, done_task) = queued(&dest, 2);
    done.status = DeliveryStatus::Delivered;
    records.put(&done).await.unwrap();
    let mut task_ids = vec![
        give_up_as_apalis_does(&ns, &queue, stuck_task.clone()).await,
        give_up_as_apalis_does(&ns, &queue, done_task).await,
    ];
    let poison = "01J0000000000000000000POIS".to_owned();
    let _: () = c.hset(q.data(), &poison, "not json").await.unwrap();
    let _: () = c.sadd(q.dead(), &poison).await.unwrap();
    task_ids.push(poison);

    // Two janitors at once (two workers): each task moves once.
    let retention = Duration::from_secs(3600);
    let a = Janitor::new(ns.conn.clone(), ns.keys.clone(), retention);
    let b = Janitor::new(ns.conn.clone(), ns.keys.clone(), retention);
    let (sa, sb) = tokio::join!(a.sweep(), b.sweep());
    assert_eq!(sa.unwrap().adopted + sb.unwrap().adopted, 3);
    assert_eq!(a.sweep().await.unwrap().adopted, 0, "idempotent");

    assert_eq!(c.scard::<_, u64>(q.dead()).await.unwrap(), 0);
    for id in &task_ids {
        assert!(!c.hexists::<_, _, bool>(q.data(), id).await.unwrap());
        assert!(!c.exists::<_, bool>(q.meta(id)).await.unwrap());
    }
    let letters = dead.list().await.unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    let letter = letters.iter().find(|l| l.id == stuck.id.as_str()).unwrap();
    assert_eq!(letter.code, "StorageRetriesExhausted");
    assert!(letter.reason.contains("25"), "{}", letter.reason);
    assert_eq!(letter.payload, serde_json::to_value(&stuck_task).unwrap());
    let poison = letters.iter().find(|l| l.id != stuck.id.as_str()).unwrap();
    assert!(poison.id.starts_with("poison_"), "{}", poison.id);
    assert_eq!(poison.code, "UndecodableTask");

    let failed = records.get_any(&stuck.id).await.unwrap().unwrap();
    assert_eq!(failed.status, DeliveryStatus::Failed);
    assert_eq!(
        failed.error.as_ref().map(|e| e.code.as_str()),
        Some("StorageRetriesExhausted")
    );
    assert_eq!(records.pending_count(&dest).await.unwrap(), 0);
    let ttl: i64 = c.ttl(ns.keys.delivery(&stuck.id)).await.unwrap();
    assert!(
        (3599..=3600).contains(&ttl),
        "kept for the retention: {ttl}"
    );
    assert_eq!(
        records.get_any(&done.id).await.unwrap().map(|r| r.status),
        Some(DeliveryStatus::Delivered),
        "a delivered record is left alone"
    );

    // Replayable like any dead letter.
    assert!(dead.replay(letter).await.unwrap());
    assert_eq!(queued_deliveries(&ns).await, [stuck.id.to_string()]);
    assert_eq!(
        records.get_any(&stuck.id).await.unwrap().map(|r| r.status),
        Some(DeliveryStatus::Queued)
    );
}
