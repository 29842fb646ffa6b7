//! Batched destinations' scripts: the append takes its window from Redis's clock and writes
//! the BATCHED record with its entry; a claim seals the window, so later appends go to the
//! next one; only the claim's holder renews, reschedules, fails or ends a window; ending
//! one releases its memory; a failed window reopens.

use std::time::Duration;

use chrono::Utc;
use courier_core::delivery::DeliveryStatus;
use courier_core::{DeliveryId, DestinationId};
use courier_store::{AppendRefused, BatchStore, RecordStore, WindowClaim, WindowId};
use redis::AsyncCommands;

use crate::{Ns, delivery_id_at, ns, record, tenant};

const W: u32 = 3600;

fn fresh(dest: &DestinationId, id: &DeliveryId) -> courier_core::delivery::DeliveryRecord {
    record(
        &tenant("acme"),
        dest,
        id,
        "job-1",
        DeliveryStatus::Queued,
        Utc::now(),
    )
}

async fn redis_now(ns: &Ns) -> i64 {
    let mut c = ns.conn.clone();
    let (secs, _): (i64, i64) = redis::cmd("TIME").query_async(&mut c).await.unwrap();
    secs
}

/// Makes window `w` due at once (its end is an hour away).
async fn make_due(ns: &Ns, w: &WindowId) {
    let mut c = ns.conn.clone();
    let _: () = c.zadd(ns.keys.batch_due(), w.member(), 0).await.unwrap();
}

#[tokio::test]
async fn an_append_takes_its_window_from_redis_and_writes_its_record_and_entry() {
    let ns = ns().await;
    let records = RecordStore::new(ns.conn.clone(), ns.keys.clone());
    let batches = BatchStore::new(ns.conn.clone(), ns.keys.clone());
    let dest = DestinationId::generate();
    let id = delivery_id_at(1_000);
    let written = batches
        .append(fresh(&dest, &id), W, b"{\"a\":1}\n{\"a\":2}\n", 2, 0)
        .await
        .unwrap()
        .unwrap();
    let now = redis_now(&ns).await;
    let start = now - now % i64::from(W);
    let window = written.batch.clone().unwrap();
    assert_eq!(written.status, DeliveryStatus::Batched);
    assert_eq!(window.window_start.timestamp(), start);
    assert_eq!(window.window_end.timestamp(), start + i64::from(W));

    let stored = records.get_any(&id).await.unwrap().unwrap();
    assert_eq!(stored, written, "the record as written");
    assert_eq!(records.waiting_count(&tenant("acme")).await.unwrap(), 1);
    assert_eq!(records.pending_count(&dest).await.unwrap(), 1);
    let mut c = ns.conn.clone();
    let batched: Vec<String> = c
        .zrange(
            ns.keys
                .tenant_status_deliveries(&tenant("acme"), DeliveryStatus::Batched),
            0,
            -1,
        )
        .await
        .unwrap();
    assert_eq!(batched, [id.to_string()]);

    let w = WindowId {
        destination_id: dest.clone(),
        start,
    };
    let entries = batches.entries(&w, 0, 10).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].delivery_id, id.as_str());
    assert_eq!(entries[0].lines, b"{\"a\":1}\n{\"a\":2}\n");
    assert_eq!(entries[0].line_count, 2);
    let due: Vec<(String, i64)> = c
        .zrange_withscores(ns.keys.batch_due(), 0, -1)
        .await
        .unwrap();
    assert_eq!(
        due,
        [(
            w.member(),
            start + i64::from(W) + courier_core::batch::GRACE_SECONDS
        )]
    );
}

#[tokio::test]
async fn a_full_tenant_gets_nothing_appended() {
    let ns = ns().await;
    let batches = BatchStore::new(ns.conn.clone(), ns.keys.clone());
    let dest = DestinationId::generate();
    batches
        .append(fresh(&dest, &delivery_id_at(1)), W, b"{}\n", 1, 1)
        .await
        .unwrap()
        .unwrap();
    let second = delivery_id_at(2);
    let refused = batches
        .append(fresh(&dest, &second), W, b"{}\n", 1, 1)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        refused,
        AppendRefused::Full(courier_store::Full { used: 1 })
    );
    let records = RecordStore::new(ns.conn.clone(), ns.keys.clone());
    assert_eq!(records.get_any(&second).await.unwrap(), None);
    let now = redis_now(&ns).await;
    let w = WindowId {
        destination_id: dest,
        start: now - now % i64::from(W),
    };
    assert_eq!(batches.entry_count(&w).await.unwrap(), 1);
}

#[tokio::test]
async fn a_claimed_window_is_sealed_and_later_rows_go_to_the_next() {
    let ns = ns().await;
    let batches = BatchStore::new(ns.conn.clone(), ns.keys.clone());
    let dest = DestinationId::generate();
    let first = batches
        .append(fresh(&dest, &delivery_id_at(1)), W, b"{}\n", 1, 0)
        .await
        .unwrap()
        .unwrap();
    let start = first.batch.unwrap().window_start.timestamp();
    let w = WindowId {
        destination_id: dest.clone(),
        start,
    };
    let ttl = Duration::from_secs(30);
    assert_eq!(
        batches.claim(&w, "t1", ttl).await.unwrap(),
        WindowClaim::NotDue,
        "an hour-long window is not due yet by Redis's clock"
    );
    make_due(&ns, &w).await;
    let WindowClaim::Claimed(c) = batches.claim(&w, "t1", ttl).await.unwrap() else {
        panic!("due and free: claimed");
    };
    assert_eq!((c.rows, c.entries, c.bytes, c.attempts), (1, 1, 3, 0));
    assert_eq!(c.end, start + i64::from(W));
    assert_eq!(
        batches.claim(&w, "t2", ttl).await.unwrap(),
        WindowClaim::Busy
    );
    assert!(matches!(
        batches.claim(&w, "t1", ttl).await.unwrap(),
        WindowClaim::Claimed(_)
    ));

    // Still in the claimed window's time, a new row goes to the next window.
    let later = batches
        .append(fresh(&dest, &delivery_id_at(2)), W, b"{}\n", 1, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        later.batch.unwrap().window_start.timestamp(),
        start + i64::from(W)
    );
    assert_eq!(batches.entry_count(&w).await.unwrap(), 1, "sealed");

    // Only the holder renews or ends it.
    assert!(!batches.renew(&w, "t2", ttl).await.unwrap());
    assert!(batches.renew(&w, "t1", ttl).await.unwrap());
    assert!(!batches.done(&w, "t2").await.unwrap());
    assert_eq!(batches.entry_count(&w).await.unwrap(), 1);
    assert!(batches.done(&w, "t1").await.unwrap());
    let mut conn = ns.conn.clone();
    for key in [
        ns.keys.batch_entries(&dest, start),
        ns.keys.batch_window(&dest, start),
        ns.keys.batch_claim(&dest, start),
    ] {
        assert!(
            !conn.exists::<_, bool>(&key).await.unwrap(),
            "{key} released"
        );
    }
    let due: Vec<String> = conn.zrange(ns.keys.batch_due(), 0, -1).await.unwrap();
    let next = WindowId {
        destination_id: dest,
        start: start + i64::from(W),
    };
    assert_eq!(due, [next.member()], "only the next window is open");
    assert_eq!(
        batches.claim(&w, "t1", ttl).await.unwrap(),
        WindowClaim::Gone
    );
}

#[tokio::test]
async fn an_expired_claim_lets_another_worker_take_the_window() {
    let ns = ns().await;
    let batches = BatchStore::new(ns.conn.clone(), ns.keys.clone());
    let dest = DestinationId::generate();
    let r = batches
        .append(fresh(&dest, &delivery_id_at(1)), W, b"{}\n", 1, 0)
        .await
        .unwrap()
        .unwrap();
    let w = WindowId {
        destination_id: dest,
        start: r.batch.unwrap().window_start.timestamp(),
    };
    make_due(&ns, &w).await;
    let short = Duration::from_millis(100);
    assert!(matches!(
        batches.claim(&w, "dead-worker", short).await.unwrap(),
        WindowClaim::Claimed(_)
    ));
    // Wait on the event: the claim key's expiry.
    let mut conn = ns.conn.clone();
    let claim = ns.keys.batch_claim(&w.destination_id, w.start);
    while conn.exists::<_, bool>(&claim).await.unwrap() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        batches
            .claim(&w, "live-worker", Duration::from_secs(30))
            .await
            .unwrap(),
        WindowClaim::Claimed(_)
    ));
    assert!(!batches.renew(&w, "dead-worker", short).await.unwrap());
}

#[tokio::test]
async fn a_retried_window_waits_and_a_failed_one_reopens() {
    let ns = ns().await;
    let batches = BatchStore::new(ns.conn.clone(), ns.keys.clone());
    let dest = DestinationId::generate();
    let r = batches
        .append(fresh(&dest, &delivery_id_at(1)), W, b"{}\n", 1, 0)
        .await
        .unwrap()
        .unwrap();
    let w = WindowId {
        destination_id: dest,
        start: r.batch.unwrap().window_start.timestamp(),
    };
    make_due(&ns, &w).await;
    let ttl = Duration::from_secs(30);
    let WindowClaim::Claimed(c) = batches.claim(&w, "t1", ttl).await.unwrap() else {
        panic!("claimed");
    };
    let later = c.now + 3600;
    assert!(
        !batches
            .retry_later(&w, "t2", later, 1, c.now)
            .await
            .unwrap()
    );
    assert!(
        batches
            .retry_later(&w, "t1", later, 1, c.now)
            .await
            .unwrap()
    );
    assert_eq!(
        batches.claim(&w, "t2", ttl).await.unwrap(),
        WindowClaim::NotDue
    );
    make_due(&ns, &w).await;
    let WindowClaim::Claimed(c) = batches.claim(&w, "t2", ttl).await.unwrap() else {
        panic!("claimed once due again");
    };
    assert_eq!(c.attempts, 1, "the tries made are kept");
    assert!(batches.fail(&w, "t2", 2).await.unwrap());
    assert_eq!(
        batches.claim(&w, "t3", ttl).await.unwrap(),
        WindowClaim::Gone
    );
    assert_eq!(
        batches.entry_count(&w).await.unwrap(),
        1,
        "kept for a replay"
    );
    assert!(batches.reopen(&w).await.unwrap());
    let WindowClaim::Claimed(c) = batches.claim(&w, "t3", ttl).await.unwrap() else {
        panic!("reopened: due now");
    };
    assert_eq!(c.attempts, 0, "a replay counts from zero");
}

fn batch_record(
    dest: &DestinationId,
    tenant_name: &str,
    start: i64,
    sequence: u32,
) -> courier_core::batch::BatchRecord {
    use courier_store::batches::at;
    courier_core::batch::BatchRecord {
        id: format!("bat_{start}_{sequence}"),
        tenant: tenant(tenant_name),
        destination_id: dest.clone(),
        bucket: "b".into(),
        key: format!("k/{start}-{sequence}.gz"),
        window_start: at(start),
        window_end: at(start + 60),
        sequence,
        status: courier_core::batch::BatchStatus::Delivered,
        rows: 1,
        deliveries: 1,
        bytes: 10,
        etag: None,
        md5: None,
        attempts: 1,
        error_code: None,
        error_message: None,
        updated_at: Utc::now(),
    }
}

#[tokio::test]
async fn batch_records_list_newest_first_for_their_tenant_and_old_ones_leave_the_index() {
    let ns = ns().await;
    let batches =
        BatchStore::new(ns.conn.clone(), ns.keys.clone()).with_retention(Duration::from_secs(3600));
    let dest = DestinationId::generate();
    let now = Utc::now().timestamp();
    let recent = now - now % 60;
    batches
        .put_records(&[
            batch_record(&dest, "acme", recent - 120, 0),
            batch_record(&dest, "acme", recent - 60, 0),
            batch_record(&dest, "acme", recent - 60, 1),
        ])
        .await
        .unwrap();
    let page = batches.list(&tenant("acme"), &dest, 2, None).await.unwrap();
    let ids: Vec<&str> = page.items.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            format!("bat_{}_1", recent - 60),
            format!("bat_{}_0", recent - 60)
        ]
    );
    let next = page.next_cursor.unwrap().parse().unwrap();
    let page = batches
        .list(&tenant("acme"), &dest, 2, Some(next))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.next_cursor, None);
    assert!(
        batches
            .list(&tenant("globex"), &dest, 10, None)
            .await
            .unwrap()
            .items
            .is_empty(),
        "another tenant sees none"
    );
    // A record written past the retention window takes the old entries out of the index.
    batches
        .put_records(&[batch_record(&dest, "acme", recent, 0)])
        .await
        .unwrap();
    let mut c = ns.conn.clone();
    let _: () = c
        .zadd(
            ns.keys.destination_batches(&dest),
            "bat_ancient",
            (now - 7200) * 10_000,
        )
        .await
        .unwrap();
    batches
        .put_records(&[batch_record(&dest, "acme", recent, 1)])
        .await
        .unwrap();
    let left: Vec<String> = c
        .zrange(ns.keys.destination_batches(&dest), 0, -1)
        .await
        .unwrap();
    assert!(!left.contains(&"bat_ancient".to_owned()), "{left:?}");
    assert_eq!(left.len(), 5);
}
