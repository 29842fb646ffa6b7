//! Per-tenant quotas and rate limits: the waiting count kept by the record writes, the
//! check-and-write scripts under concurrency, and the connection-test window.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use courier_core::delivery::DeliveryStatus;
use courier_core::{DeliveryId, DestinationId};
use courier_store::{Full, RateDecision, RateLimiter, RecordStore};
use redis::AsyncCommands;

use crate::{Ns, delivery_id_at, ns, record, tenant};

fn queued(
    ns_tenant: &str,
    dest: &DestinationId,
    id: &DeliveryId,
) -> courier_core::delivery::DeliveryRecord {
    record(
        &tenant(ns_tenant),
        dest,
        id,
        "job-1",
        DeliveryStatus::Queued,
        Utc::now(),
    )
}

async fn waiting(ns: &Ns, t: &str) -> BTreeSet<String> {
    let mut c = ns.conn.clone();
    c.smembers(ns.keys.tenant_waiting(&tenant(t)))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_waiting_count_follows_queued_and_final_writes_only() {
    let ns = ns().await;
    let records = RecordStore::new(ns.conn.clone(), ns.keys.clone());
    let dest = DestinationId::generate();
    let acme = tenant("acme");
    let (a, b) = (delivery_id_at(1_000), delivery_id_at(2_000));
    let mut ra = queued("acme", &dest, &a);
    records.put_queued(&ra, 0).await.unwrap().unwrap();
    records
        .put_queued(&queued("acme", &dest, &b), 0)
        .await
        .unwrap()
        .unwrap();
    // Another tenant's deliveries are counted apart.
    records
        .put_queued(&queued("globex", &dest, &delivery_id_at(3_000)), 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(records.waiting_count(&acme).await.unwrap(), 2);
    assert_eq!(records.waiting_count(&tenant("globex")).await.unwrap(), 1);

    // A worker's progress writes leave the count alone; so does writing one twice.
    for status in [
        DeliveryStatus::InProgress,
        DeliveryStatus::Retrying,
        DeliveryStatus::Held,
        DeliveryStatus::InProgress,
    ] {
        ra.status = status;
        records.put(&ra).await.unwrap();
        assert_eq!(records.waiting_count(&acme).await.unwrap(), 2, "{status:?}");
    }
    // Final: it leaves, once; a repeated final write cannot take one more off.
    ra.status = DeliveryStatus::Delivered;
    records.put(&ra).await.unwrap();
    records.put(&ra).await.unwrap();
    assert_eq!(waiting(&ns, "acme").await, BTreeSet::from([b.to_string()]));
    // A late progress write after the final one does not bring it back.
    ra.status = DeliveryStatus::InProgress;
    records.put(&ra).await.unwrap();
    assert_eq!(records.waiting_count(&acme).await.unwrap(), 1);
    // Replayed (QUEUED again, as a dead letter's replay writes it): counted again.
    ra.status = DeliveryStatus::Queued;
    records.put(&ra).await.unwrap();
    assert_eq!(records.waiting_count(&acme).await.unwrap(), 2);
    for (id, status) in [
        (&a, DeliveryStatus::Failed),
        (&b, DeliveryStatus::Superseded),
    ] {
        let mut r = queued("acme", &dest, id);
        r.status = status;
        records.put(&r).await.unwrap();
    }
    assert_eq!(records.waiting_count(&acme).await.unwrap(), 0);
    let mut c = ns.conn.clone();
    assert!(
        !c.exists::<_, bool>(ns.keys.tenant_waiting(&acme))
            .await
            .unwrap(),
        "an empty count leaves no key behind"
    );

    // A record removed after a failed push leaves the count too.
    let gone = queued("acme", &dest, &delivery_id_at(4_000));
    records.put_queued(&gone, 0).await.unwrap().unwrap();
    records.delete(&gone).await.unwrap();
    assert_eq!(records.waiting_count(&acme).await.unwrap(), 0);
}

#[tokio::test]
async fn a_full_waiting_quota_writes_nothing_and_frees_as_deliveries_finish() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let records = RecordStore::new(ns.conn.clone(), ns.keys.clone());
    let dest = DestinationId::generate();
    let acme = tenant("acme");
    let first = queued("acme", &dest, &delivery_id_at(1_000));
    records.put_queued(&first, 2).await.unwrap().unwrap();
    records
        .put_queued(&queued("acme", &dest, &delivery_id_at(2_000)), 2)
        .await
        .unwrap()
        .unwrap();
    let refused = queued("acme", &dest, &delivery_id_at(3_000));
    let before: BTreeSet<String> = c.keys(format!("{}:*", ns.keys.namespace())).await.unwrap();
    assert_eq!(
        records.put_queued(&refused, 2).await.unwrap(),
        Err(Full { used: 2 })
    );
    // Nothing of it was written: no key, no record, no index entry, no count.
    let after: BTreeSet<String> = c.keys(format!("{}:*", ns.keys.namespace())).await.unwrap();
    assert_eq!(before, after);
    assert!(
        !c.exists::<_, bool>(ns.keys.delivery(&refused.id))
            .await
            .unwrap()
    );
    for index in [
        ns.keys.tenant_deliveries(&acme),
        ns.keys.destination_deliveries(&dest),
        ns.keys.job_deliveries(&acme, "job-1"),
        ns.keys
            .tenant_status_deliveries(&acme, DeliveryStatus::Queued),
    ] {
        let ids: Vec<String> = c.zrange(&index, 0, -1).await.unwrap();
        assert_eq!(ids.len(), 2, "{index}");
        assert!(!ids.contains(&refused.id.to_string()), "{index}");
    }
    assert_eq!(records.waiting_count(&acme).await.unwrap(), 2);
    // Another tenant is not affected by acme's full quota.
    records
        .put_queued(&queued("globex", &dest, &delivery_id_at(3_500)), 2)
        .await
        .unwrap()
        .unwrap();
    // Writing the same delivery again (a retried write of an admitted one) is no new place.
    records.put_queued(&first, 2).await.unwrap().unwrap();
    assert_eq!(records.waiting_count(&acme).await.unwrap(), 2);

    // One finishes: one place frees.
    let mut done = first.clone();
    done.status = DeliveryStatus::Delivered;
    records.put(&done).await.unwrap();
    records.put_queued(&refused, 2).await.unwrap().unwrap();
    assert_eq!(
        records
            .put_queued(&queued("acme", &dest, &delivery_id_at(5_000)), 2)
            .await
            .unwrap(),
        Err(Full { used: 2 })
    );
}

#[tokio::test]
async fn concurrent_enqueues_at_the_limit_take_exactly_the_places_left() {
    let ns = ns().await;
    let records = RecordStore::new(ns.conn.clone(), ns.keys.clone());
    let dest = DestinationId::generate();
    let acme = tenant("acme");
    // Two racing for the last place, over and over: exactly one passes each time.
    for round in 0..20_u64 {
        let (x, y) = (
            queued("acme", &dest, &delivery_id_at(10 * round + 1)),
            queued("acme", &dest, &delivery_id_at(10 * round + 2)),
        );
        let limit = round + 1;
        let (rx, ry) = tokio::join!(records.put_queued(&x, limit), records.put_queued(&y, limit));
        let passed = [rx.unwrap().is_ok(), ry.unwrap().is_ok()];
        assert_eq!(passed.iter().filter(|p| **p).count(), 1, "round {round}");
        assert_eq!(records.waiting_count(&acme).await.unwrap(), limit);
    }
    // Many at once for a few places.
    let globex = tenant("globex");
    let tries: Vec<_> = (0..32)
        .map(|i| queued("globex", &dest, &delivery_id_at(1_000_000 + i)))
        .collect();
    let results = futures::future::join_all(tries.iter().map(|r| records.put_queued(r, 5))).await;
    let passed = results
        .into_iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    assert_eq!(passed, 5);
    assert_eq!(records.waiting_count(&globex).await.unwrap(), 5);
    let mut c = ns.conn.clone();
    let written: u64 = c.zcard(ns.keys.tenant_deliveries(&globex)).await.unwrap();
    assert_eq!(written, 5, "only the admitted ones have index entries");
}

#[tokio::test]
async fn connection_tests_are_counted_in_a_window_per_tenant() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let limiter = RateLimiter::new(ns.conn.clone(), ns.keys.clone());
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let minute = Duration::from_secs(60);
    for n in 1..=3 {
        assert_eq!(
            limiter
                .take_connection_test(&acme, 3, minute)
                .await
                .unwrap(),
            RateDecision::Allowed { used: n }
        );
    }
    for _ in 0..2 {
        match limiter
            .take_connection_test(&acme, 3, minute)
            .await
            .unwrap()
        {
            RateDecision::Refused { retry_after } => {
                assert!(
                    retry_after > Duration::ZERO && retry_after <= minute,
                    "{retry_after:?}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    let used: u64 = c.get(ns.keys.connection_tests(&acme)).await.unwrap();
    assert_eq!(used, 3, "refused tests are not counted");
    assert_eq!(
        limiter
            .take_connection_test(&globex, 3, minute)
            .await
            .unwrap(),
        RateDecision::Allowed { used: 1 },
        "another tenant has its own window"
    );

    // The window ends (made to end now): the count starts again.
    let _: () = c.pexpire(ns.keys.connection_tests(&acme), 1).await.unwrap();
    while c
        .exists::<_, bool>(ns.keys.connection_tests(&acme))
        .await
        .unwrap()
    {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        limiter
            .take_connection_test(&acme, 3, minute)
            .await
            .unwrap(),
        RateDecision::Allowed { used: 1 }
    );
    let ttl: i64 = c.pttl(ns.keys.connection_tests(&acme)).await.unwrap();
    assert!(
        ttl > 0 && ttl <= 60_000,
        "the counter expires with its window: {ttl}"
    );
}
