//! The upload-slot cap and its gate against a real Redis: a busy destination's tasks wait
//! a moment for a slot, a hung destination's go back to the queue at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_core::{DeliveryId, DestinationId};
use courier_store::slots::MOVING_FOR;
use courier_store::{Claim, Keys, Signal, UploadSlots};
use courier_test_support::RedisServer;
use courier_worker::slot_gate::SlotGate;

async fn slots(redis: &RedisServer, cap: u32, claim_ttl: Duration) -> UploadSlots {
    let conn = courier_store::connect(&redis.url()).await.unwrap();
    UploadSlots::new(conn, Keys::new("courier"), cap, claim_ttl)
}

const TTL: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_cap_holds_claims_expire_and_slot_activity_marks_the_destination_moving() {
    let redis = RedisServer::start().unwrap();
    let slots = slots(&redis, 2, Duration::from_millis(1500)).await;
    let dest = DestinationId::generate();
    let (a, b, c) = (
        DeliveryId::generate(),
        DeliveryId::generate(),
        DeliveryId::generate(),
    );
    assert_eq!(slots.acquire(&dest, &a).await.unwrap(), Claim::Taken);
    assert_eq!(slots.acquire(&dest, &b).await.unwrap(), Claim::Taken);
    // Its own slot again, but no third; slots were just taken, so the destination moves.
    assert_eq!(slots.acquire(&dest, &a).await.unwrap(), Claim::Taken);
    assert_eq!(
        slots.acquire(&dest, &c).await.unwrap(),
        Claim::Full { moving: true }
    );
    // A second later nothing has been taken or given back: it is stuck.
    tokio::time::sleep(MOVING_FOR + Duration::from_millis(50)).await;
    assert_eq!(
        slots.acquire(&dest, &c).await.unwrap(),
        Claim::Full { moving: false }
    );
    // Another destination has its own slots.
    let other = DestinationId::generate();
    assert_eq!(slots.acquire(&other, &c).await.unwrap(), Claim::Taken);

    // Giving one back frees it and marks the destination moving for a moment.
    slots.release(&dest, &a, Signal::Neutral).await.unwrap();
    assert_eq!(slots.acquire(&dest, &c).await.unwrap(), Claim::Taken);
    assert_eq!(
        slots.acquire(&dest, &a).await.unwrap(),
        Claim::Full { moving: true }
    );
    // Releasing a slot one does not hold changes nothing.
    slots
        .release(&dest, &DeliveryId::generate(), Signal::Neutral)
        .await
        .unwrap();

    // A holder that never gives back (a killed worker): its claim expires.
    tokio::time::sleep(Duration::from_millis(1550)).await;
    assert_eq!(slots.acquire(&dest, &a).await.unwrap(), Claim::Taken);
}

#[tokio::test]
async fn a_hung_destination_sends_tasks_back_at_once() {
    let redis = RedisServer::start().unwrap();
    let gate = SlotGate::new(slots(&redis, 2, TTL).await, Duration::from_secs(2));
    let dest = DestinationId::generate();
    for _ in 0..2 {
        assert!(gate.take(&dest, &DeliveryId::generate()).await.unwrap());
    }
    // Nothing was given back since the slots were taken: the uploads are stuck, and
    // waiting would only hold a worker's slot that other destinations could use.
    tokio::time::sleep(MOVING_FOR + Duration::from_millis(50)).await;
    let t = Instant::now();
    assert!(!gate.take(&dest, &DeliveryId::generate()).await.unwrap());
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_busy_destination_waits_for_the_next_slot_instead_of_leaving() {
    let redis = RedisServer::start().unwrap();
    let gate = Arc::new(SlotGate::new(
        slots(&redis, 2, TTL).await,
        Duration::from_secs(2),
    ));
    let dest = DestinationId::generate();
    let (a, b) = (DeliveryId::generate(), DeliveryId::generate());
    // The start of a burst: two uploads just started, none ended yet.
    assert!(gate.take(&dest, &a).await.unwrap());
    assert!(gate.take(&dest, &b).await.unwrap());

    // A third task waits, and gets the slot as soon as one is given back.
    let waiter = {
        let gate = Arc::clone(&gate);
        let dest = dest.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let taken = gate.take(&dest, &DeliveryId::generate()).await.unwrap();
            (taken, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gate.waiting(&dest), 1);
    gate.give_back(&dest, &b, Signal::Neutral).await.unwrap();
    let (taken, waited) = waiter.await.unwrap();
    assert!(taken);
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(400),
        "woken when the slot was given back, not later: {waited:?}"
    );
    assert_eq!(gate.waiting(&dest), 0);
}

#[tokio::test]
async fn a_slot_given_back_by_another_worker_is_seen_too() {
    let redis = RedisServer::start().unwrap();
    let gate = SlotGate::new(slots(&redis, 1, TTL).await, Duration::from_secs(2));
    let elsewhere = slots(&redis, 1, TTL).await;
    let dest = DestinationId::generate();
    let (a, b) = (DeliveryId::generate(), DeliveryId::generate());
    assert_eq!(elsewhere.acquire(&dest, &a).await.unwrap(), Claim::Taken);
    elsewhere.release(&dest, &a, Signal::Neutral).await.unwrap();
    assert_eq!(elsewhere.acquire(&dest, &b).await.unwrap(), Claim::Taken);

    let release_later = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        elsewhere.release(&dest, &b, Signal::Neutral).await.unwrap();
    };
    let c = DeliveryId::generate();
    let t = Instant::now();
    let (taken, ()) = tokio::join!(gate.take(&dest, &c), release_later);
    assert!(taken.unwrap());
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_millis(400),
        "{waited:?}"
    );
}

#[tokio::test]
async fn waiting_is_bounded_in_time_and_in_waiters() {
    let redis = RedisServer::start().unwrap();
    let gate = Arc::new(SlotGate::new(
        slots(&redis, 2, TTL).await,
        Duration::from_millis(500),
    ));
    let dest = DestinationId::generate();
    let (a, b) = (DeliveryId::generate(), DeliveryId::generate());
    assert!(gate.take(&dest, &a).await.unwrap());
    assert!(gate.take(&dest, &b).await.unwrap());
    gate.give_back(&dest, &a, Signal::Neutral).await.unwrap();
    assert!(gate.take(&dest, &a).await.unwrap());

    // Three tasks want the moving destination; no slot comes free. Two wait (the cap), the
    // third goes back to the queue at once; the two give up after the longest wait.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let gate = Arc::clone(&gate);
        let dest = dest.clone();
        tasks.spawn(async move {
            let t = Instant::now();
            let taken = gate.take(&dest, &DeliveryId::generate()).await.unwrap();
            (taken, t.elapsed())
        });
    }
    let mut waited: Vec<Duration> = tasks
        .join_all()
        .await
        .into_iter()
        .map(|(taken, took)| {
            assert!(!taken);
            took
        })
        .collect();
    waited.sort();
    assert!(waited[0] < Duration::from_millis(100), "{waited:?}");
    for w in &waited[1..] {
        assert!(
            *w >= Duration::from_millis(480) && *w < Duration::from_millis(800),
            "{waited:?}"
        );
    }
    assert_eq!(gate.waiting(&dest), 0);
}
