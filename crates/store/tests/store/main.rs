//! The store's operations and every Lua script against a real Redis: one server for the
//! whole test binary ([`RedisServer::shared`]), each test under a namespace of its own, so
//! the tests run in parallel without seeing each other's keys. Each asserts exact results.

mod batches;
mod dead;
mod destinations;
mod finish;
mod health;
mod held;
mod keyguard;
mod queue;
mod quotas;
mod records;
mod retention;
mod slots;
mod stats;
mod storage_failures;

use chrono::{DateTime, Utc};
use courier_core::delivery::{DeliveryRecord, DeliveryStatus, DeliveryTask};
use courier_core::{DeliveryId, DestinationId, TenantId};
use courier_store::Keys;
use courier_store::RedisConn;
use courier_test_support::{RedisServer, test_namespace};
use serde_json::json;

/// A connection to the shared Redis and the keys of a fresh namespace.
#[derive(Debug)]
pub struct Ns {
    pub conn: RedisConn,
    pub keys: Keys,
}

pub async fn ns() -> Ns {
    let conn = courier_store::connect(&RedisServer::shared().url())
        .await
        .expect("connect to the shared redis");
    Ns {
        conn,
        keys: Keys::new(test_namespace()),
    }
}

pub fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

/// A delivery id of instant `ms`, so that tests control the order of ids.
pub fn delivery_id_at(ms: u64) -> DeliveryId {
    DeliveryId::parse(&format!(
        "{}{}",
        DeliveryId::PREFIX,
        ulid::Ulid::from_parts(ms, ulid::Ulid::new().random())
    ))
    .unwrap()
}

/// A task as the producer queues it (its stored JSON form).
pub fn task(tenant: &TenantId, dest: &DestinationId, id: &DeliveryId) -> DeliveryTask {
    let json = json!({
        "deliveryId": id,
        "tenant": tenant,
        "destinationId": dest,
        "jobId": "job-1",
        "partnerInventoryId": "INV-1",
        "completedAt": "2026-01-02T03:04:05Z",
        "columns": ["a"],
        "rows": [{"a": 1}],
        "enqueuedAt": "2026-01-02T03:04:06Z",
    });
    serde_json::from_str(&json.to_string()).expect("a delivery task")
}

/// A record of `tenant`'s delivery `id` (its stored JSON form).
pub fn record(
    tenant: &TenantId,
    dest: &DestinationId,
    id: &DeliveryId,
    job: &str,
    status: DeliveryStatus,
    enqueued_at: DateTime<Utc>,
) -> DeliveryRecord {
    let json = json!({
        "id": id,
        "tenant": tenant,
        "destinationId": dest,
        "jobId": job,
        "partnerInventoryId": "INV-1",
        "completedAt": "2026-01-02T03:04:05Z",
        "status": status,
        "format": "CSV",
        "compression": "NONE",
        "rows": 1,
        "attempts": [],
        "enqueuedAt": enqueued_at,
        "updatedAt": enqueued_at,
    });
    serde_json::from_value(json).expect("a delivery record")
}

/// The delivery ids of the tasks waiting in the queue (apalis-redis keeps pushed tasks in
/// its scheduled set, due at once), sorted.
pub async fn queued_deliveries(ns: &Ns) -> Vec<String> {
    use redis::AsyncCommands;
    let mut c = ns.conn.clone();
    let q = ns.keys.queue_keys();
    let mut task_ids: Vec<String> = c.lrange(q.active(), 0, -1).await.unwrap();
    task_ids.extend(
        c.zrange::<_, Vec<String>>(q.scheduled(), 0, -1)
            .await
            .unwrap(),
    );
    let mut out = Vec::new();
    for t in &task_ids {
        let payload: Vec<u8> = c.hget(q.data(), t).await.unwrap();
        let task: DeliveryTask = courier_core::payload::decode(&payload).unwrap();
        out.push(task.delivery_id.to_string());
    }
    out.sort();
    out
}
