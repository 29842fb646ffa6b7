//! Dead letters: kept with their reason, listed oldest first, replayed or removed.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use courier_core::DestinationId;
use courier_core::delivery::DeliveryTask;
use courier_store::{DeadLetter, DeadLetters, DeliveryQueue};
use redis::AsyncCommands;
use serde_json::json;

use crate::{delivery_id_at, ns, task, tenant};

fn letter(
    id: &str,
    dest: Option<&DestinationId>,
    died_ms: i64,
    payload: serde_json::Value,
) -> DeadLetter {
    DeadLetter {
        id: id.to_owned(),
        destination_id: dest.cloned(),
        code: "AccessDenied".into(),
        reason: "the key may not write".into(),
        died_at: Utc.timestamp_millis_opt(died_ms).unwrap(),
        payload,
    }
}

#[tokio::test]
async fn dead_letters_are_listed_oldest_first_and_replayed_as_fresh_runs() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let queue = DeliveryQueue::new(ns.conn.clone(), &ns.keys);
    let dead = DeadLetters::new(ns.conn.clone(), ns.keys.clone(), queue);
    let dest = DestinationId::generate();
    let id = delivery_id_at(1);
    let mut t = task(&tenant("acme"), &dest, &id);
    t.retry.attempts = 5;
    let payload = serde_json::to_value(&t).unwrap();
    let newer = letter(id.as_str(), Some(&dest), 2_000, payload);
    let older = letter("poison_1", None, 1_000, json!({"hello": "world"}));
    dead.add(&newer).await.unwrap();
    dead.add(&older).await.unwrap();
    assert_eq!(dead.count().await.unwrap(), 2);
    assert_eq!(dead.list().await.unwrap(), [older.clone(), newer.clone()]);
    assert_eq!(dead.get(id.as_str()).await.unwrap(), Some(newer.clone()));
    assert_eq!(
        c.ttl::<_, i64>(ns.keys.dead_letter(id.as_str()))
            .await
            .unwrap(),
        -1,
        "kept until replayed without a retention"
    );

    // A payload that is not a task cannot be replayed, and stays.
    assert!(!dead.replay(&older).await.unwrap());
    assert_eq!(dead.count().await.unwrap(), 2);
    // A task is queued again with its retry count reset, and the letter goes.
    assert!(dead.replay(&newer).await.unwrap());
    assert_eq!(dead.list().await.unwrap(), std::slice::from_ref(&older));
    let q = ns.keys.queue_keys();
    let task_ids: Vec<String> = c.zrange(q.scheduled(), 0, -1).await.unwrap();
    assert_eq!(task_ids.len(), 1);
    let payload: Vec<u8> = c.hget(q.data(), &task_ids[0]).await.unwrap();
    let requeued: DeliveryTask = courier_core::payload::decode(&payload).unwrap();
    assert_eq!(requeued.delivery_id, id);
    assert_eq!(requeued.retry, Default::default());

    dead.remove("poison_1").await.unwrap();
    assert_eq!(dead.count().await.unwrap(), 0);
    assert_eq!(dead.get("poison_1").await.unwrap(), None);
}

#[tokio::test]
async fn dead_letters_expire_after_the_retention() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let queue = DeliveryQueue::new(ns.conn.clone(), &ns.keys);
    let dead = DeadLetters::new(ns.conn.clone(), ns.keys.clone(), queue)
        .with_retention(Duration::from_secs(3600));
    dead.add(&letter("poison_2", None, 1_000, json!(null)))
        .await
        .unwrap();
    let ttl: i64 = c.ttl(ns.keys.dead_letter("poison_2")).await.unwrap();
    assert!((3599..=3600).contains(&ttl), "{ttl}");
}

/// Two replays of one letter at once (the API's retry and `courier dlq replay`, say), and
/// one more from a copy read before either: the task is queued once.
#[tokio::test]
async fn racing_replays_of_one_letter_queue_its_task_once() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let queue = DeliveryQueue::new(ns.conn.clone(), &ns.keys);
    let dead = DeadLetters::new(ns.conn.clone(), ns.keys.clone(), queue);
    let dest = DestinationId::generate();
    let id = delivery_id_at(7);
    let t = task(&tenant("acme"), &dest, &id);
    let l = letter(
        id.as_str(),
        Some(&dest),
        3_000,
        serde_json::to_value(&t).unwrap(),
    );
    dead.add(&l).await.unwrap();

    let (a, b) = tokio::join!(dead.replay(&l), dead.replay(&l));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a ^ b, "exactly one replays: {a} {b}");
    assert!(!dead.replay(&l).await.unwrap(), "the letter is gone");
    let q = ns.keys.queue_keys();
    let task_ids: Vec<String> = c.zrange(q.scheduled(), 0, -1).await.unwrap();
    assert_eq!(task_ids.len(), 1, "{task_ids:?}");
    assert_eq!(dead.count().await.unwrap(), 0);
    // The claim is given back: the same delivery dead-lettered again replays.
    assert!(
        !c.exists::<_, bool>(ns.keys.dead_letter_replaying(id.as_str()))
            .await
            .unwrap()
    );
    dead.add(&l).await.unwrap();
    assert!(dead.replay(&l).await.unwrap());
}
