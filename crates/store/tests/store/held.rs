//! Held deliveries: parking, counting and releasing them into the queue.

use courier_core::DestinationId;
use courier_store::{DeliveryQueue, HeldDeliveries};
use redis::AsyncCommands;

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
