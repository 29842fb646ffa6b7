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
    want.sort();
    assert_eq!(registered, want, "the tenant and destination indexes");

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
