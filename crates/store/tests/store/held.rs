//! Held deliveries: parking, counting and releasing them into the queue.

use chrono::Utc;
use courier_core::delivery::DeliveryError;
use courier_core::destination::DestinationStatus;
use courier_core::{DestinationId, ErrorCode};
use courier_store::{DeadLetters, DeliveryQueue, DestinationStore, HealthStore, HeldDeliveries};
use redis::AsyncCommands;

use crate::destinations::{cipher, spec};
use crate::{delivery_id_at, ns, queued_deliveries, task, tenant};

#[tokio::test]
async fn held_deliveries_and_a_crashed_releases_leftovers_go_back_to_the_queue() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let queue = DeliveryQueue::new(ns.conn.clone(), &ns.keys);
    let held = HeldDeliveries::new(ns.conn.clone(), ns.keys.clone(), queue);
    let acme = tenant("acme");
    let (dest, other) = (DestinationId::generate(), DestinationId::generate());
    let (a, b, left) = (delivery_id_at(1), delivery_id_at(2), delivery_id_at(3));
    held.hold(&task(&acme, &dest, &a)).await.unwrap();
    held.hold(&task(&acme, &dest, &b)).await.unwrap();
    held.hold(&task(&acme, &other, &a)).await.unwrap();
    assert_eq!(held.count(&dest).await.unwrap(), 2);
    let mut holding: Vec<String> = c.smembers(ns.keys.held_destinations()).await.unwrap();
    holding.sort();
    let mut want = vec![dest.to_string(), other.to_string()];
    want.sort();
    assert_eq!(holding, want);

    // A release that crashed half-way left one task, and a payload that is no task, in
    // the releasing list: the task is queued again, the other payload dropped.
    let leftover = serde_json::to_string(&task(&acme, &dest, &left)).unwrap();
    let _: () = c
        .rpush(ns.keys.releasing(&dest), &[leftover.as_str(), "not a task"])
        .await
        .unwrap();
    assert_eq!(held.count(&dest).await.unwrap(), 4);

    assert_eq!(held.release(&dest).await.unwrap(), 4);
    assert_eq!(held.count(&dest).await.unwrap(), 0);
    assert_eq!(held.count(&other).await.unwrap(), 1);
    let holding: Vec<String> = c.smembers(ns.keys.held_destinations()).await.unwrap();
    assert_eq!(holding, [other.to_string()]);
    // The queue has the three tasks.
    let mut want = vec![left.to_string(), a.to_string(), b.to_string()];
    want.sort();
    assert_eq!(queued_deliveries(&ns).await, want);

    assert_eq!(held.release(&dest).await.unwrap(), 0, "nothing twice");
}

/// The rule both the worker and the control plane use: release only to a destination of
/// the tenant that is active and not failing.
#[tokio::test]
async fn held_deliveries_are_released_only_to_an_active_healthy_destination() {
    let ns = ns().await;
    let queue = DeliveryQueue::new(ns.conn.clone(), &ns.keys);
    let held = HeldDeliveries::new(ns.conn.clone(), ns.keys.clone(), queue);
    let destinations = DestinationStore::new(ns.conn.clone(), ns.keys.clone(), Some(cipher()));
    let health = HealthStore::new(ns.conn.clone(), ns.keys.clone());
    let (acme, other) = (tenant("acme"), tenant("other"));
    let dest = destinations
        .create(&acme, spec("main", DestinationStatus::Paused))
        .await
        .unwrap();
    let a = delivery_id_at(1);
    held.hold(&task(&acme, &dest.id, &a)).await.unwrap();
    let release = |t| held.release_if_active(&destinations, &health, t, &dest.id);

    assert_eq!(release(&acme).await.unwrap(), 0, "paused");
    destinations
        .update(&acme, &dest.id, spec("main", DestinationStatus::Active))
        .await
        .unwrap();
    health
        .record_permanent_failure(&dest.id, "AccessDenied", "no", 1)
        .await
        .unwrap();
    assert_eq!(release(&acme).await.unwrap(), 0, "failing");
    health.clear(&dest.id).await.unwrap();
    assert_eq!(release(&other).await.unwrap(), 0, "not the tenant's");
    let missing = DestinationId::generate();
    assert_eq!(
        held.release_if_active(&destinations, &health, &acme, &missing)
            .await
            .unwrap(),
        0,
        "no such destination"
    );
    assert_eq!(held.count(&dest.id).await.unwrap(), 1);
    assert_eq!(release(&acme).await.unwrap(), 1);
    assert_eq!(held.count(&dest.id).await.unwrap(), 0);
    assert_eq!(queued_deliveries(&ns).await, [a.to_string()]);
}

#[tokio::test]
async fn expired_held_deliveries_become_dead_letters_and_the_rest_stay_held() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let queue = DeliveryQueue::new(ns.conn.clone(), &ns.keys);
    let held = HeldDeliveries::new(ns.conn.clone(), ns.keys.clone(), queue.clone());
    let dead = DeadLetters::new(ns.conn.clone(), ns.keys.clone(), queue)
        .with_retention(std::time::Duration::from_secs(3600));
    let acme = tenant("acme");
    let (dest, other) = (DestinationId::generate(), DestinationId::generate());
    let (old, young, old_elsewhere) = (delivery_id_at(1), delivery_id_at(2), delivery_id_at(3));
    for (d, id) in [(&dest, &old), (&dest, &young), (&other, &old_elsewhere)] {
        held.hold(&task(&acme, d, id)).await.unwrap();
    }
    let now = Utc::now();
    let why =
        |id: &str| DeliveryError::new(ErrorCode::HeldTooLong, format!("{id} waited too long"));
    let is_old = |t: &courier_core::delivery::DeliveryTask| t.delivery_id != young;

    let mut expired: Vec<(String, DeliveryError)> = held
        .dead_letter_expired(&dead, now, |t| {
            is_old(t).then(|| why(t.delivery_id.as_str()))
        })
        .await
        .unwrap()
        .into_iter()
        .map(|(t, e)| (t.delivery_id.to_string(), e))
        .collect();
    expired.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        expired,
        [
            (old.to_string(), why(old.as_str())),
            (old_elsewhere.to_string(), why(old_elsewhere.as_str())),
        ]
    );
    assert_eq!(held.count(&dest).await.unwrap(), 1);
    assert_eq!(held.count(&other).await.unwrap(), 0);
    let letter = dead
        .get(old.as_str())
        .await
        .unwrap()
        .expect("a dead letter");
    assert_eq!(letter.code, "HeldTooLong");
    assert_eq!(letter.reason, format!("{old} waited too long"));
    assert_eq!(letter.destination_id, Some(dest.clone()));
    assert_eq!(letter.died_at.timestamp_millis(), now.timestamp_millis());
    assert_eq!(
        letter.payload,
        serde_json::to_value(task(&acme, &dest, &old)).unwrap(),
        "the task as it was held, so that it can be replayed"
    );
    let ttl: i64 = c.ttl(ns.keys.dead_letter(old.as_str())).await.unwrap();
    assert!((1..=3600).contains(&ttl), "{ttl}");
    assert_eq!(dead.count().await.unwrap(), 2);

    // Nothing twice; the young one stays held and is released as before.
    let again = held
        .dead_letter_expired(&dead, now, |t| is_old(t).then(|| why("x")))
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(held.release(&dest).await.unwrap(), 1);
    assert_eq!(queued_deliveries(&ns).await, [young.to_string()]);
}
