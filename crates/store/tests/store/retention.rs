//! The janitor's scripts: finished tasks' data and old dead letters go, the rest stays.
//! (Trimming indexes, and scanning for unregistered ones only once, is in
//! `tests/janitor.rs`, which counts the server's SCANs and so has a server of its own.)

use std::time::Duration;

use chrono::Utc;
use courier_core::DestinationId;
use courier_store::{DeadLetter, DeliveryQueue, Janitor, Swept};
use redis::AsyncCommands;

use crate::{delivery_id_at, ns, task, tenant};

#[tokio::test]
async fn finished_tasks_and_old_dead_letters_are_dropped() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let queue = DeliveryQueue::new(ns.conn.clone(), &ns.keys);
    let q = ns.keys.queue_keys();
    let (acme, dest) = (tenant("acme"), DestinationId::generate());
    for i in 0..3 {
        queue
            .push(task(&acme, &dest, &delivery_id_at(i)))
            .await
            .unwrap();
    }
    let ids: Vec<String> = c.zrange(q.scheduled(), 0, -1).await.unwrap();
    assert_eq!(ids.len(), 3);
    // Two of them are done (as apalis leaves them: in the done set, data and meta kept).
    let _: () = c.zrem(q.scheduled(), &ids[..2]).await.unwrap();
    let _: () = c.sadd(q.done(), &ids[..2]).await.unwrap();

    let dead = courier_store::DeadLetters::new(ns.conn.clone(), ns.keys.clone(), queue);
    let letter = |id: &str, age: chrono::Duration| DeadLetter {
        id: id.to_owned(),
        destination_id: None,
        code: "AccessDenied".into(),
        reason: "no".into(),
        died_at: Utc::now() - age,
        payload: serde_json::Value::Null,
    };
    dead.add(&letter("poison_old", chrono::Duration::hours(2)))
        .await
        .unwrap();
    dead.add(&letter("poison_new", chrono::Duration::zero()))
        .await
        .unwrap();

    let janitor = Janitor::new(ns.conn.clone(), ns.keys.clone(), Duration::from_secs(3600));
    assert_eq!(
        janitor.sweep().await.unwrap(),
        Swept {
            tasks: 2,
            index_entries: 0,
            dead_letters: 1,
            adopted: 0,
        }
    );
    for id in &ids[..2] {
        assert!(!c.hexists::<_, _, bool>(q.data(), id).await.unwrap());
        assert!(!c.exists::<_, bool>(q.meta(id)).await.unwrap());
    }
    assert!(c.hexists::<_, _, bool>(q.data(), &ids[2]).await.unwrap());
    assert!(c.exists::<_, bool>(q.meta(&ids[2])).await.unwrap());
    assert_eq!(c.scard::<_, u64>(q.done()).await.unwrap(), 0);
    let left: Vec<String> = dead
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(left, ["poison_new"]);
    assert!(
        !c.exists::<_, bool>(ns.keys.dead_letter("poison_old"))
            .await
            .unwrap()
    );

    assert_eq!(
        janitor.sweep().await.unwrap(),
        Swept::default(),
        "nothing twice"
    );
}
