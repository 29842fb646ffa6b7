//! `finish.lua`: the end of a delivered upload in one step does what its five parts do one
//! after another: record and indexes, marker, health, slot (and the limit's learning), lock.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use courier_core::DestinationId;
use courier_core::delivery::DeliveryStatus;
use courier_store::{
    Claim, Concurrency, HealthStore, KeyGuard, Marker, RecordStore, Signal, UploadSlots,
    finish_delivered,
};
use redis::AsyncCommands;

use crate::{delivery_id_at, ns, record, tenant};

#[tokio::test]
async fn a_delivered_upload_is_recorded_marked_cleared_and_gives_back_its_claims_at_once() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let keep = Duration::from_secs(3600);
    let records = RecordStore::new(ns.conn.clone(), ns.keys.clone()).with_retention(keep);
    let guard = KeyGuard::new(ns.conn.clone(), ns.keys.clone(), Duration::from_secs(600));
    let concurrency = Concurrency {
        initial: 2,
        min: 1,
        max: 8,
    };
    let slots = UploadSlots::new(
        ns.conn.clone(),
        ns.keys.clone(),
        concurrency,
        Duration::from_secs(60),
    );
    let health = HealthStore::new(ns.conn.clone(), ns.keys.clone());
    let acme = tenant("acme");
    let dest = DestinationId::generate();
    let id = delivery_id_at(1_700_000_000_000);
    let other = delivery_id_at(1_700_000_000_001);
    let key = "out/mapping_results_INV-1_2026-01-02.csv";
    let completed = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();

    // The state a delivery is in while it uploads: its record in progress, the key's lock
    // and a slot held, the destination failing after a permanent failure.
    let mut r = record(
        &acme,
        &dest,
        &id,
        "job-1",
        DeliveryStatus::InProgress,
        Utc::now(),
    );
    records.put(&r).await.unwrap();
    assert!(
        guard
            .lock(&dest, key, &id, Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert_eq!(slots.acquire(&dest, &id).await.unwrap(), Claim::Taken);
    assert_eq!(slots.acquire(&dest, &other).await.unwrap(), Claim::Taken);
    health
        .record_permanent_failure(&dest, "AccessDenied", "no", 1)
        .await
        .unwrap();
    assert_eq!(health.failing_count().await.unwrap(), 1);
    let moved = ns.keys.upload_slots_moved(&dest);
    let _: () = c.del(&moved).await.unwrap();

    r.status = DeliveryStatus::Delivered;
    let released = finish_delivered(
        &records,
        &guard,
        &slots,
        &r,
        key,
        completed,
        Signal::Done {
            latency: Some(Duration::from_millis(40)),
        },
    )
    .await
    .unwrap();

    // The record and its indexes, as `put` writes a final one.
    assert_eq!(records.get_any(&id).await.unwrap(), Some(r.clone()));
    let ttl: i64 = c.ttl(ns.keys.delivery(&id)).await.unwrap();
    assert!((1..=3600).contains(&ttl), "{ttl}");
    assert_eq!(records.pending_count(&dest).await.unwrap(), 0);
    let delivered = ns
        .keys
        .tenant_status_deliveries(&acme, DeliveryStatus::Delivered);
    let in_progress = ns
        .keys
        .tenant_status_deliveries(&acme, DeliveryStatus::InProgress);
    assert!(
        c.zscore::<_, _, Option<f64>>(&delivered, id.as_str())
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        c.zscore::<_, _, Option<f64>>(&in_progress, id.as_str())
            .await
            .unwrap()
            .is_none()
    );
    // The marker names it.
    assert_eq!(
        guard.marker(&dest, key).await.unwrap(),
        Some(Marker {
            completed_at: completed,
            delivery_id: id.to_string(),
        })
    );
    // The destination's run of failures ended.
    assert!(!health.get(&dest).await.unwrap().is_failing());
    assert_eq!(health.failing_count().await.unwrap(), 0);
    // Its slot is back (the other holder's is not), the destination is moving, and the
    // limit learned from the upload: both slots were in use, so it grew.
    let held: Vec<String> = c.zrange(ns.keys.upload_slots(&dest), 0, -1).await.unwrap();
    assert_eq!(held, [other.to_string()]);
    assert!(c.exists::<_, bool>(&moved).await.unwrap());
    assert!(released.limit > 2.0, "{released:?}");
    assert_eq!(slots.limit(&dest).await.unwrap(), released.limit);
    // The key's lock is free: another delivery takes it.
    assert!(
        guard
            .lock(&dest, key, &other, Duration::from_secs(60))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn it_keeps_a_newer_marker_and_another_deliverys_lock() {
    let ns = ns().await;
    let records = RecordStore::new(ns.conn.clone(), ns.keys.clone());
    let guard = KeyGuard::new(ns.conn.clone(), ns.keys.clone(), Duration::from_secs(600));
    let slots = UploadSlots::new(ns.conn.clone(), ns.keys.clone(), 2, Duration::from_secs(60));
    let acme = tenant("acme");
    let dest = DestinationId::generate();
    let (id, newer) = (delivery_id_at(1), delivery_id_at(2));
    let key = "k.csv";
    let old = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let new = Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap();
    guard.mark(&dest, key, new, &newer).await.unwrap();
    assert!(
        guard
            .lock(&dest, key, &newer, Duration::from_secs(60))
            .await
            .unwrap()
    );

    let r = record(
        &acme,
        &dest,
        &id,
        "job-1",
        DeliveryStatus::Delivered,
        Utc::now(),
    );
    finish_delivered(&records, &guard, &slots, &r, key, old, Signal::Neutral)
        .await
        .unwrap();

    assert_eq!(records.get_any(&id).await.unwrap(), Some(r));
    let marker = guard.marker(&dest, key).await.unwrap().unwrap();
    assert_eq!(
        (marker.completed_at, marker.delivery_id),
        (new, newer.to_string())
    );
    assert!(
        !guard
            .lock(&dest, key, &id, Duration::from_secs(60))
            .await
            .unwrap(),
        "the lock is still the other delivery's"
    );
}
