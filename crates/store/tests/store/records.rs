//! Delivery records and their indexes.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use courier_core::DestinationId;
use courier_core::delivery::DeliveryStatus;
use courier_store::{RecordFilter, RecordStore};
use redis::AsyncCommands;

use crate::{delivery_id_at, ns, record, tenant};

#[tokio::test]
async fn a_record_is_read_back_by_its_tenant_only_and_its_indexes_follow_it() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let records = RecordStore::new(ns.conn.clone(), ns.keys.clone());
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let dest = DestinationId::generate();
    let id = delivery_id_at(1_700_000_000_000);
    let mut r = record(
        &acme,
        &dest,
        &id,
        "job-1",
        DeliveryStatus::Queued,
        Utc::now(),
    );
    records.put(&r).await.unwrap();

    assert_eq!(records.get(&acme, &id).await.unwrap(), Some(r.clone()));
    assert_eq!(records.get(&globex, &id).await.unwrap(), None);
    assert_eq!(records.get_any(&id).await.unwrap(), Some(r.clone()));
    assert_eq!(records.pending_count(&dest).await.unwrap(), 1);
    let indexes = [
        ns.keys.tenant_deliveries(&acme),
        ns.keys.destination_deliveries(&dest),
        ns.keys.job_deliveries(&acme, "job-1"),
    ];
    for index in &indexes {
        let ids: Vec<String> = c.zrange(index, 0, -1).await.unwrap();
        assert_eq!(ids, [id.as_str()], "{index}");
    }
    let mut registered: Vec<String> = c.smembers(ns.keys.delivery_indexes()).await.unwrap();
    registered.sort();
    let mut want = indexes[..2].to_vec();
    want.push(
        ns.keys
            .tenant_status_deliveries(&acme, DeliveryStatus::Queued),
    );
    want.sort();
    assert_eq!(
        registered, want,
        "the tenant, destination and tenant-status indexes"
    );

    // A final record is no longer pending; without a retention it never expires.
    r.status = DeliveryStatus::Delivered;
    records.put(&r).await.unwrap();
    assert_eq!(records.pending_count(&dest).await.unwrap(), 0);
    assert_eq!(c.ttl::<_, i64>(ns.keys.delivery(&id)).await.unwrap(), -1);

    records.delete(&r).await.unwrap();
    assert_eq!(records.get_any(&id).await.unwrap(), None);
    for index in &indexes {
        assert_eq!(c.zcard::<_, u64>(index).await.unwrap(), 0, "{index}");
    }
}

#[tokio::test]
async fn final_records_and_their_job_index_expire_after_the_retention() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let records =
        RecordStore::new(ns.conn.clone(), ns.keys.clone()).with_retention(Duration::from_secs(600));
    let acme = tenant("acme");
    let dest = DestinationId::generate();
    let (open, done) = (delivery_id_at(1), delivery_id_at(2));
    records
        .put(&record(
            &acme,
            &dest,
            &open,
            "j",
            DeliveryStatus::Retrying,
            Utc::now(),
        ))
        .await
        .unwrap();
    assert_eq!(c.ttl::<_, i64>(ns.keys.delivery(&open)).await.unwrap(), -1);
    let job = ns.keys.job_deliveries(&acme, "j");
    assert_eq!(c.ttl::<_, i64>(&job).await.unwrap(), -1);
    records
        .put(&record(
            &acme,
            &dest,
            &done,
            "j",
            DeliveryStatus::Failed,
            Utc::now(),
        ))
        .await
        .unwrap();
    for key in [ns.keys.delivery(&done), job] {
        let ttl: i64 = c.ttl(&key).await.unwrap();
        assert!((599..=600).contains(&ttl), "{key}: {ttl}");
    }
}

#[tokio::test]
async fn lists_are_newest_first_paged_by_cursor_and_filtered() {
    let ns = ns().await;
    let records = RecordStore::new(ns.conn.clone(), ns.keys.clone());
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let (d1, d2) = (DestinationId::generate(), DestinationId::generate());
    let base = 1_700_000_000_000_u64;
    let at = |i: u64| Utc.timestamp_millis_opt((base + i * 1000) as i64).unwrap();
    // Five of acme's deliveries a second apart, and one of globex's.
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = delivery_id_at(base + i * 1000);
        let (dest, job, status) = match i {
            0 | 2 => (&d1, "j1", DeliveryStatus::Delivered),
            1 => (&d1, "j2", DeliveryStatus::Failed),
            _ => (&d2, "j2", DeliveryStatus::Delivered),
        };
        records
            .put(&record(&acme, dest, &id, job, status, at(i)))
            .await
            .unwrap();
        ids.push(id);
    }
    records
        .put(&record(
            &globex,
            &d1,
            &delivery_id_at(base + 500),
            "j1",
            DeliveryStatus::Delivered,
            at(0),
        ))
        .await
        .unwrap();

    let listed = |filter: RecordFilter, limit: usize| {
        let (records, acme) = (records.clone(), acme.clone());
        async move {
            let mut pages = Vec::new();
            let mut cursor = None;
            loop {
                let page = records
                    .list(&acme, &filter, limit, cursor.as_ref())
                    .await
                    .unwrap();
                pages.push(page.items.iter().map(|r| r.id.clone()).collect::<Vec<_>>());
                match page.next_cursor {
                    Some(c) => cursor = Some(courier_core::DeliveryId::parse(&c).unwrap()),
                    None => return pages,
                }
            }
        }
    };
    let [i0, i1, i2, i3, i4] = [0, 1, 2, 3, 4].map(|i| ids[i].clone());
    assert_eq!(
        listed(RecordFilter::default(), 2).await,
        [
            vec![i4.clone(), i3.clone()],
            vec![i2.clone(), i1.clone()],
            vec![i0.clone()]
        ]
    );
    let by_dest = RecordFilter {
        destination_id: Some(d1.clone()),
        ..Default::default()
    };
    assert_eq!(
        listed(by_dest, 10).await,
        [vec![i2.clone(), i1.clone(), i0.clone()]],
        "another tenant's delivery to the same destination is left out"
    );
    let by_job_and_status = RecordFilter {
        job_id: Some("j2".into()),
        status: Some(DeliveryStatus::Delivered),
        ..Default::default()
    };
    assert_eq!(
        listed(by_job_and_status, 10).await,
        [vec![i4.clone(), i3.clone()]]
    );
    let window = RecordFilter {
        from: Some(at(1)),
        to: Some(at(3)),
        ..Default::default()
    };
    assert_eq!(listed(window, 10).await, [vec![i2, i1]]);
}

#[tokio::test]
async fn each_record_is_in_the_status_index_of_its_tenant_and_status_only() {
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let records = RecordStore::new(ns.conn.clone(), ns.keys.clone());
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let dest = DestinationId::generate();
    let now = Utc::now();
    let ids: Vec<_> = (0..4).map(|i| delivery_id_at(1_000 + i)).collect();
    for id in &ids {
        records
            .put_queued(
                &record(&acme, &dest, id, "j", DeliveryStatus::Queued, now),
                0,
            )
            .await
            .unwrap()
            .unwrap();
    }
    let theirs = delivery_id_at(5_000);
    records
        .put(&record(
            &globex,
            &dest,
            &theirs,
            "j",
            DeliveryStatus::Failed,
            now,
        ))
        .await
        .unwrap();
    // Move them along: 0 delivered, 1 failed after retrying, 2 held, 3 stays queued.
    let moves = [
        (0, DeliveryStatus::InProgress),
        (0, DeliveryStatus::Delivered),
        (1, DeliveryStatus::InProgress),
        (1, DeliveryStatus::Retrying),
        (1, DeliveryStatus::Failed),
        (2, DeliveryStatus::Held),
    ];
    for (i, status) in moves {
        records
            .put(&record(&acme, &dest, &ids[i], "j", status, now))
            .await
            .unwrap();
    }
    let conn = ns.conn.clone();
    let index = |t: &courier_core::TenantId, s: DeliveryStatus| {
        let (mut c, key) = (conn.clone(), ns.keys.tenant_status_deliveries(t, s));
        async move { c.zrange::<_, Vec<String>>(key, 0, -1).await.unwrap() }
    };
    let s = |i: usize| vec![ids[i].to_string()];
    assert_eq!(index(&acme, DeliveryStatus::Queued).await, s(3));
    assert_eq!(
        index(&acme, DeliveryStatus::InProgress).await,
        Vec::<String>::new()
    );
    assert_eq!(
        index(&acme, DeliveryStatus::Retrying).await,
        Vec::<String>::new()
    );
    assert_eq!(index(&acme, DeliveryStatus::Held).await, s(2));
    assert_eq!(index(&acme, DeliveryStatus::Delivered).await, s(0));
    assert_eq!(index(&acme, DeliveryStatus::Failed).await, s(1));
    assert_eq!(
        index(&globex, DeliveryStatus::Failed).await,
        vec![theirs.to_string()]
    );
    // An index emptied by the moves is gone; the ones written are registered for trimming.
    assert!(
        !c.exists::<_, bool>(
            ns.keys
                .tenant_status_deliveries(&acme, DeliveryStatus::Retrying)
        )
        .await
        .unwrap()
    );
    let registry: Vec<String> = c.smembers(ns.keys.delivery_indexes()).await.unwrap();
    for s in [
        DeliveryStatus::Queued,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
    ] {
        assert!(
            registry.contains(&ns.keys.tenant_status_deliveries(&acme, s)),
            "{s:?}"
        );
    }

    // Listing by status reads that index: acme's failed one only, not globex's.
    let failed = RecordFilter {
        status: Some(DeliveryStatus::Failed),
        ..Default::default()
    };
    let page = records.list(&acme, &failed, 10, None).await.unwrap();
    let listed: Vec<_> = page.items.iter().map(|r| r.id.clone()).collect();
    assert_eq!(listed, [ids[1].clone()]);
    // Status and destination together: whichever index is smaller, the same answer.
    let both = RecordFilter {
        status: Some(DeliveryStatus::Held),
        destination_id: Some(dest.clone()),
        ..Default::default()
    };
    let page = records.list(&acme, &both, 10, None).await.unwrap();
    let listed: Vec<_> = page.items.iter().map(|r| r.id.clone()).collect();
    assert_eq!(listed, [ids[2].clone()]);

    // A removed record leaves its status index too.
    records
        .delete(&record(
            &acme,
            &dest,
            &ids[3],
            "j",
            DeliveryStatus::Queued,
            now,
        ))
        .await
        .unwrap();
    assert_eq!(
        index(&acme, DeliveryStatus::Queued).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn the_janitor_trims_status_indexes_with_the_records() {
    use courier_store::Janitor;
    let ns = ns().await;
    let mut c = ns.conn.clone();
    let records =
        RecordStore::new(ns.conn.clone(), ns.keys.clone()).with_retention(Duration::from_secs(60));
    let acme = tenant("acme");
    let dest = DestinationId::generate();
    let now_ms = u64::try_from(Utc::now().timestamp_millis()).unwrap();
    let (old, fresh) = (delivery_id_at(now_ms - 3_600_000), delivery_id_at(now_ms));
    for id in [&old, &fresh] {
        records
            .put(&record(
                &acme,
                &dest,
                id,
                "j",
                DeliveryStatus::Delivered,
                Utc::now(),
            ))
            .await
            .unwrap();
    }
    let delivered = ns
        .keys
        .tenant_status_deliveries(&acme, DeliveryStatus::Delivered);
    let janitor = Janitor::new(ns.conn.clone(), ns.keys.clone(), Duration::from_secs(60));
    let swept = janitor.sweep().await.unwrap();
    assert_eq!(
        swept.index_entries, 3,
        "the old id from the tenant's, the destination's and the status index"
    );
    let left: Vec<String> = c.zrange(&delivered, 0, -1).await.unwrap();
    assert_eq!(left, [fresh.to_string()]);

    // An index emptied by a status change is forgotten by the next sweep.
    let queued_index = ns
        .keys
        .tenant_status_deliveries(&acme, DeliveryStatus::Queued);
    for status in [DeliveryStatus::Queued, DeliveryStatus::Failed] {
        records
            .put(&record(&acme, &dest, &fresh, "j", status, Utc::now()))
            .await
            .unwrap();
    }
    janitor.sweep().await.unwrap();
    let registry: Vec<String> = c.smembers(ns.keys.delivery_indexes()).await.unwrap();
    assert!(!registry.contains(&queued_index), "{registry:?}");
    assert!(!registry.contains(&delivered), "{registry:?}");
}
