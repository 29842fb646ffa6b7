//! The upload-slot scripts: the cap, re-entrant claims, expired claims and the "moving"
//! marker, without waiting on the clock (expiries are written into the past instead).

use std::time::Duration;

use courier_core::{DeliveryId, DestinationId};
use courier_store::slots::MOVING_FOR;
use courier_store::{Claim, Concurrency, LimitChange, Released, Signal, UploadSlots};
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
    slots.release(&dest, &x, Signal::Neutral).await.unwrap();
    assert!(!c.exists::<_, bool>(&moved).await.unwrap());
    // Giving one back frees it and marks the destination moving.
    slots.release(&dest, &a, Signal::Neutral).await.unwrap();
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

const ADAPTIVE: Concurrency = Concurrency {
    initial: 4,
    min: 1,
    max: 6,
};

fn done(ms: u64) -> Signal {
    Signal::Done {
        latency: Some(Duration::from_millis(ms)),
    }
}

/// Takes slots of `dest` until the limit refuses one; returns the holders that got one.
async fn fill(slots: &UploadSlots, dest: &DestinationId) -> Vec<DeliveryId> {
    let mut taken = vec![];
    loop {
        let id = DeliveryId::generate();
        match slots.acquire(dest, &id).await.unwrap() {
            Claim::Taken => taken.push(id),
            Claim::Full { .. } => return taken,
        }
    }
}

#[tokio::test]
async fn a_destination_that_keeps_up_doubles_its_limit_until_a_cut_then_earns_one_slot_per_round() {
    let ns = ns().await;
    let slots = UploadSlots::new(
        ns.conn.clone(),
        ns.keys.clone(),
        ADAPTIVE,
        Duration::from_secs(60),
    );
    let dest = DestinationId::generate();
    let mut held = fill(&slots, &dest).await;
    assert_eq!(held.len(), 4, "it starts at the initial limit");
    assert!((slots.limit(&dest).await.unwrap() - 4.0).abs() < 1e-9);

    // Slow start: every slot busy, every upload fast and fine, and no cut yet: each release
    // adds a slot (a round of releases doubles the limit), up to the most.
    let mut limits = vec![];
    for _ in 0..10 {
        let oldest = held.remove(0);
        limits.push(slots.release(&dest, &oldest, done(20)).await.unwrap().limit);
        held.extend(fill(&slots, &dest).await);
    }
    assert!(
        (limits[0] - 5.0).abs() < 1e-9 && (limits[1] - 6.0).abs() < 1e-9,
        "one more slot per release: {limits:?}"
    );
    assert!(
        (limits[9] - 6.0).abs() < 1e-9,
        "never above the most: {limits:?}"
    );
    assert_eq!(held.len(), 6);

    // The first cut ends the slow start: 6 -> 3, and from then on every slot busy and a
    // fast upload add 1/limit, so a full round of releases adds one slot.
    let oldest = held.remove(0);
    let cut = slots
        .release(&dest, &oldest, Signal::Overloaded)
        .await
        .unwrap();
    assert_eq!(cut.change, LimitChange::Halved);
    assert!((cut.limit - 3.0).abs() < 1e-9, "{cut:?}");
    let mut limits = vec![];
    for _ in 0..4 {
        let oldest = held.remove(0);
        limits.push(slots.release(&dest, &oldest, done(20)).await.unwrap().limit);
        held.extend(fill(&slots, &dest).await);
    }
    assert!(
        (limits[0] - (3.0 + 1.0 / 3.0)).abs() < 1e-3,
        "1/limit per release after a cut: {limits:?}"
    );
    assert!(
        limits[2] < 4.0 && limits[3] > 4.0,
        "about three releases at 3 make 4: {limits:?}"
    );

    // A release while slots stand free earns nothing: the limit was not what held it back.
    let other = DestinationId::generate();
    let held = fill(&slots, &other).await;
    let first = slots
        .release(&other, &held[0], done(20))
        .await
        .unwrap()
        .limit;
    assert!((first - 5.0).abs() < 1e-9, "{first}");
    let second = slots
        .release(&other, &held[1], done(20))
        .await
        .unwrap()
        .limit;
    assert!((second - 5.0).abs() < 1e-9, "{second}");
}

#[tokio::test]
async fn throttling_halves_the_limit_once_per_window_and_slow_uploads_trim_it() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let slots = UploadSlots::new(
        ns.conn.clone(),
        ns.keys.clone(),
        ADAPTIVE,
        Duration::from_secs(60),
    );
    let dest = DestinationId::generate();
    let learned = ns.keys.upload_limit(&dest);
    let ids = fill(&slots, &dest).await;
    let is = |r: Released, limit: f64, change: LimitChange| {
        assert!(
            (r.limit - limit).abs() < 1e-9 && r.change == change,
            "{r:?}, expected {limit} {change:?}"
        );
    };

    // SlowDown: 4 -> 2; a second one in the same window changes nothing (they came from
    // the same burst).
    let r = slots.release(&dest, &ids[0], Signal::Overloaded).await;
    is(r.unwrap(), 2.0, LimitChange::Halved);
    let r = slots.release(&dest, &ids[1], Signal::Overloaded).await;
    is(r.unwrap(), 2.0, LimitChange::Unchanged);
    // A window later (the last cut written into the past), it halves again, but never
    // below the lowest.
    let _: () = c.hset(&learned, "cutAt", 0).await.unwrap();
    let r = slots.release(&dest, &ids[2], Signal::Overloaded).await;
    is(r.unwrap(), 1.0, LimitChange::Halved);
    let _: () = c.hset(&learned, "cutAt", 0).await.unwrap();
    let r = slots.release(&dest, &ids[3], Signal::Overloaded).await;
    is(r.unwrap(), 1.0, LimitChange::Unchanged);
    let one = fill(&slots, &dest).await;
    assert_eq!(one.len(), 1, "one upload at a time now");

    // Neither a permanent refusal nor a stale release (a slot not held) moves the limit.
    let _: () = c.hset(&learned, "limit", 5).await.unwrap();
    let r = slots.release(&dest, &one[0], Signal::Neutral).await;
    is(r.unwrap(), 5.0, LimitChange::Unchanged);
    let r = slots.release(&dest, &one[0], Signal::Overloaded).await;
    is(r.unwrap(), 5.0, LimitChange::Unchanged);

    // Uploads taking 20 ms teach the usual time; one taking 100 ms trims the limit by a
    // tenth (latency rises before errors do).
    let _: () = c.hset(&learned, "cutAt", 0).await.unwrap();
    for _ in 0..3 {
        let id = DeliveryId::generate();
        assert_eq!(slots.acquire(&dest, &id).await.unwrap(), Claim::Taken);
        slots.release(&dest, &id, done(20)).await.unwrap();
    }
    let before = slots.limit(&dest).await.unwrap();
    let id = DeliveryId::generate();
    assert_eq!(slots.acquire(&dest, &id).await.unwrap(), Claim::Taken);
    let after = slots.release(&dest, &id, done(100)).await.unwrap();
    assert_eq!(after.change, LimitChange::Trimmed);
    assert!(
        (after.limit - before * 0.9).abs() < 0.002,
        "{before} -> {after:?}"
    );
    // The learned limit is kept for a while after the last upload, not for ever.
    let ttl: i64 = c.pttl(&learned).await.unwrap();
    assert!(ttl > 0, "{ttl}");
}
