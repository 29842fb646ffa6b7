//! The janitor against a real Redis: expired index entries go, live ones stay, and the
//! indexes are found through their registry, not by scanning the keyspace every sweep.

use std::time::Duration;

use courier_core::{DestinationId, TenantId};
use courier_store::{Janitor, Keys};
use courier_test_support::RedisServer;
use redis::AsyncCommands;

fn id_at(ms: u64) -> String {
    format!("dlv_{}", ulid::Ulid::from_parts(ms, 1))
}

fn scans(info: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_scan:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn sweeps_trim_registered_indexes_and_scan_only_once_for_old_ones() {
    let redis = RedisServer::start().unwrap();
    let conn = courier_store::connect(&redis.url()).await.unwrap();
    let mut c = conn.clone();
    let keys = Keys::default();
    let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
    let (old, fresh) = (id_at(now - 3_600_000), id_at(now));

    // An index written before indexes were registered, and one registered on write.
    let acme = TenantId::parse("acme").unwrap();
    let unregistered = &keys.tenant_deliveries(&acme);
    let registered = &keys.destination_deliveries(&DestinationId::generate());
    let job_index = &keys.job_deliveries(&acme, "j1");
    for key in [unregistered, registered, job_index] {
        let _: () = c.zadd(key, &old, 0).await.unwrap();
        let _: () = c.zadd(key, &fresh, 0).await.unwrap();
    }
    let _: () = c.sadd(keys.delivery_indexes(), registered).await.unwrap();
    // An index whose entries all expired.
    let stale = &keys.destination_deliveries(&DestinationId::generate());
    let _: () = c.zadd(stale, &old, 0).await.unwrap();
    let _: () = c.sadd(keys.delivery_indexes(), stale).await.unwrap();

    let janitor = Janitor::new(conn.clone(), keys.clone(), Duration::from_secs(60));
    let swept = janitor.sweep().await.unwrap();
    assert_eq!(
        swept.index_entries, 3,
        "the old entry of each of the 3 indexes"
    );
    for key in [unregistered, registered] {
        let left: Vec<String> = c.zrange(key, 0, -1).await.unwrap();
        assert_eq!(left, std::slice::from_ref(&fresh), "{key}");
    }
    // Job indexes expire by themselves; the janitor leaves them alone.
    assert_eq!(c.zcard::<_, u64>(job_index).await.unwrap(), 2);
    let mut registry: Vec<String> = c.smembers(keys.delivery_indexes()).await.unwrap();
    registry.sort();
    let mut want = [registered.clone(), unregistered.clone()];
    want.sort();
    assert_eq!(registry, want, "the empty index is forgotten");

    // Later sweeps find the indexes through the registry: no more scans.
    let before = scans(
        &redis::cmd("INFO")
            .arg("commandstats")
            .query_async::<String>(&mut c)
            .await
            .unwrap(),
    );
    assert!(before >= 1);
    for _ in 0..5 {
        janitor.sweep().await.unwrap();
    }
    let after = scans(
        &redis::cmd("INFO")
            .arg("commandstats")
            .query_async::<String>(&mut c)
            .await
            .unwrap(),
    );
    assert_eq!(after, before);
}
