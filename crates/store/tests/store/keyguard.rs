//! The object-key lock and marker scripts.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use courier_core::DestinationId;
use courier_store::{KeyGuard, Marker};
use redis::AsyncCommands;

use crate::{delivery_id_at, ns};

const KEY: &str = "out/INV-1/2026-01-02.csv";

#[tokio::test]
async fn one_owner_holds_a_key_lock_and_may_take_it_again() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let guard = KeyGuard::new(ns.conn.clone(), ns.keys.clone(), Duration::from_secs(60));
    let dest = DestinationId::generate();
    let (a, b) = (delivery_id_at(1), delivery_id_at(2));
    let ttl = Duration::from_secs(30);
    assert!(guard.lock(&dest, KEY, &a, ttl).await.unwrap());
    assert!(!guard.lock(&dest, KEY, &b, ttl).await.unwrap());
    assert!(guard.lock(&dest, KEY, &a, ttl).await.unwrap(), "re-entrant");
    let lock = ns.keys.object_lock(&dest, KEY);
    let owner: String = c.get(&lock).await.unwrap();
    assert_eq!(owner, a.as_str());
    let pttl: i64 = c.pttl(&lock).await.unwrap();
    assert!((1..=30_000).contains(&pttl), "{pttl}");
    // Another key of the same destination has its own lock.
    assert!(guard.lock(&dest, "other.csv", &b, ttl).await.unwrap());

    guard.unlock(&dest, KEY, &b).await.unwrap();
    assert!(
        !guard.lock(&dest, KEY, &b, ttl).await.unwrap(),
        "not b's to unlock"
    );
    guard.unlock(&dest, KEY, &a).await.unwrap();
    assert!(!c.exists::<_, bool>(&lock).await.unwrap());
    assert!(guard.lock(&dest, KEY, &b, ttl).await.unwrap());
}

#[tokio::test]
async fn the_marker_only_moves_forward() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let guard = KeyGuard::new(
        ns.conn.clone(),
        ns.keys.clone(),
        Duration::from_secs(86_400),
    );
    let dest = DestinationId::generate();
    let at = |ms: i64| Utc.timestamp_millis_opt(ms).unwrap();
    let (old, new, newest) = (delivery_id_at(1), delivery_id_at(2), delivery_id_at(3));
    assert_eq!(guard.marker(&dest, KEY).await.unwrap(), None);

    guard.mark(&dest, KEY, at(2_000), &new).await.unwrap();
    let marker = |ms, id: &courier_core::DeliveryId| Marker {
        completed_at: at(ms),
        delivery_id: id.to_string(),
    };
    assert_eq!(
        guard.marker(&dest, KEY).await.unwrap(),
        Some(marker(2_000, &new))
    );
    guard.mark(&dest, KEY, at(1_000), &old).await.unwrap();
    assert_eq!(
        guard.marker(&dest, KEY).await.unwrap(),
        Some(marker(2_000, &new)),
        "an older result leaves the marker alone"
    );
    guard.mark(&dest, KEY, at(2_000), &newest).await.unwrap();
    assert_eq!(
        guard.marker(&dest, KEY).await.unwrap(),
        Some(marker(2_000, &newest)),
        "as recent a result takes over"
    );
    guard.mark(&dest, KEY, at(3_000), &new).await.unwrap();
    assert_eq!(
        guard.marker(&dest, KEY).await.unwrap(),
        Some(marker(3_000, &new))
    );
    let raw: String = c.get(ns.keys.object_marker(&dest, KEY)).await.unwrap();
    assert_eq!(raw, format!("3000 {new}"));
    let ttl: i64 = c.ttl(ns.keys.object_marker(&dest, KEY)).await.unwrap();
    assert!((86_399..=86_400).contains(&ttl), "{ttl}");
}

/// `claim`: the lock, then (only holding it) a slot, and the marker under the lock, and,
/// holding both, the started record; the same answers and writes as the four scripts one
/// after another.
#[tokio::test]
async fn a_claim_takes_the_lock_then_a_slot_reads_the_marker_and_records_the_start() {
    use courier_core::delivery::DeliveryStatus;
    use courier_store::{Claim, Claimed, RecordStore, UploadSlots, claim};
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let guard = KeyGuard::new(ns.conn.clone(), ns.keys.clone(), Duration::from_secs(60));
    let slots = UploadSlots::new(ns.conn.clone(), ns.keys.clone(), 1, Duration::from_secs(60));
    let records = RecordStore::new(ns.conn.clone(), ns.keys.clone());
    let acme = crate::tenant("acme");
    let dest = DestinationId::generate();
    let (a, b, x) = (delivery_id_at(1), delivery_id_at(2), delivery_id_at(3));
    // A queued delivery's record, and that record as its upload starts.
    let started = async |id| {
        let mut r = crate::record(
            &acme,
            &dest,
            id,
            "job-1",
            DeliveryStatus::Queued,
            Utc::now(),
        );
        records.put(&r).await.unwrap();
        r.status = DeliveryStatus::InProgress;
        r.key = Some(KEY.to_owned());
        r
    };
    let ttl = Duration::from_secs(30);
    let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    guard.mark(&dest, KEY, at, &x).await.unwrap();
    let status_index = |s| ns.keys.tenant_status_deliveries(&acme, s);

    let ra = started(&a).await;
    let first = claim(&guard, &slots, &records, &ra, KEY, ttl)
        .await
        .unwrap();
    let marker = Marker {
        completed_at: at,
        delivery_id: x.to_string(),
    };
    assert_eq!(
        first,
        Claimed::Locked {
            slot: Claim::Taken,
            marker: Some(marker.clone()),
        }
    );
    let owner: String = c.get(ns.keys.object_lock(&dest, KEY)).await.unwrap();
    assert_eq!(owner, a.as_str());
    // The record as written by RecordStore::put: in progress, moved between the indexes.
    assert_eq!(records.get(&acme, &a).await.unwrap().unwrap(), ra);
    let in_progress: Vec<String> = c
        .zrange(status_index(DeliveryStatus::InProgress), 0, -1)
        .await
        .unwrap();
    assert_eq!(in_progress, [a.to_string()]);
    let queued: Vec<String> = c
        .zrange(status_index(DeliveryStatus::Queued), 0, -1)
        .await
        .unwrap();
    assert!(queued.is_empty(), "{queued:?}");
    // Re-entrant, as lock and acquire are.
    assert!(matches!(
        claim(&guard, &slots, &records, &ra, KEY, ttl)
            .await
            .unwrap(),
        Claimed::Locked {
            slot: Claim::Taken,
            ..
        }
    ));
    // Another delivery of the key takes nothing: not even a slot, and its record is as it
    // was.
    let rb = started(&b).await;
    assert_eq!(
        claim(&guard, &slots, &records, &rb, KEY, ttl)
            .await
            .unwrap(),
        Claimed::KeyBusy
    );
    let holders: Vec<String> = c.zrange(ns.keys.upload_slots(&dest), 0, -1).await.unwrap();
    assert_eq!(holders, [a.to_string()]);
    let b_now = records.get(&acme, &b).await.unwrap().unwrap();
    assert_eq!(b_now.status, DeliveryStatus::Queued);
    // Another key of the destination: its lock, but the destination's one slot is a's, so
    // the record is not written either.
    let mut rb_other = rb.clone();
    rb_other.key = Some("other.csv".to_owned());
    assert_eq!(
        claim(&guard, &slots, &records, &rb_other, "other.csv", ttl)
            .await
            .unwrap(),
        Claimed::Locked {
            slot: Claim::Full { moving: true },
            marker: None,
        }
    );
    let b_now = records.get(&acme, &b).await.unwrap().unwrap();
    assert_eq!(b_now.status, DeliveryStatus::Queued);
}
