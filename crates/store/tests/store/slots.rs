//! The upload-slot scripts: the cap, re-entrant claims, expired claims and the "moving"
//! marker, without waiting on the clock (expiries are written into the past instead).

use std::time::Duration;

use courier_core::DestinationId;
use courier_store::slots::MOVING_FOR;
use courier_store::{Claim, UploadSlots};
use redis::AsyncCommands;

use crate::{delivery_id_at, ns};

#[tokio::test]
async fn the_cap_holds_and_slot_activity_marks_the_destination_moving() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let slots = UploadSlots::new(ns.conn.clone(), ns.keys.clone(), 2, Duration::from_secs(60));
    let dest = DestinationId::generate();
    let moved = ns.keys.upload_slots_moved(&dest);
    let holders = ns.keys.upload_slots(&dest);
    let (a, b, x) = (delivery_id_at(1), delivery_id_at(2), delivery_id_at(3));

    assert_eq!(slots.acquire(&dest, &a).await.unwrap(), Claim::Taken);
    let pttl: i64 = c.pttl(&moved).await.unwrap();
    let moving_ms = i64::try_from(MOVING_FOR.as_millis()).unwrap();
    assert!((1..=moving_ms).contains(&pttl), "{pttl}");
    assert_eq!(slots.acquire(&dest, &b).await.unwrap(), Claim::Taken);
    assert_eq!(
        slots.acquire(&dest, &a).await.unwrap(),
        Claim::Taken,
        "its own again"
    );
    assert_eq!(
        slots.acquire(&dest, &x).await.unwrap(),
        Claim::Full { moving: true }
    );
    let mut held: Vec<String> = c.zrange(&holders, 0, -1).await.unwrap();
    held.sort();
    assert_eq!(held, [a.to_string(), b.to_string()]);
    // The set expires with its last claim.
    let set_ttl: i64 = c.pttl(&holders).await.unwrap();
    assert!((1..=60_000).contains(&set_ttl), "{set_ttl}");

    // Once the moment has passed, a full cap reads as stuck.
    let _: () = c.del(&moved).await.unwrap();
    assert_eq!(
        slots.acquire(&dest, &x).await.unwrap(),
        Claim::Full { moving: false }
    );
    // Giving back a slot one does not hold changes nothing.
    slots.release(&dest, &x).await.unwrap();
    assert!(!c.exists::<_, bool>(&moved).await.unwrap());
    // Giving one back frees it and marks the destination moving.
    slots.release(&dest, &a).await.unwrap();
    assert!(c.exists::<_, bool>(&moved).await.unwrap());
    assert_eq!(slots.acquire(&dest, &x).await.unwrap(), Claim::Taken);
}

#[tokio::test]
async fn a_claim_whose_holder_never_gave_it_back_expires() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let slots = UploadSlots::new(ns.conn.clone(), ns.keys.clone(), 1, Duration::from_secs(60));
    let dest = DestinationId::generate();
    let (dead, live) = (delivery_id_at(1), delivery_id_at(2));
    // A claim that expired a second ago (a killed worker's).
    let expired = chrono::Utc::now().timestamp_millis() - 1000;
    let _: () = c
        .zadd(ns.keys.upload_slots(&dest), dead.as_str(), expired)
        .await
        .unwrap();
    assert_eq!(slots.acquire(&dest, &live).await.unwrap(), Claim::Taken);
    let held: Vec<String> = c.zrange(ns.keys.upload_slots(&dest), 0, -1).await.unwrap();
    assert_eq!(held, [live.to_string()]);
}
