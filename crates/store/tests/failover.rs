//! A Sentinel failover under load, against real `redis-server`s and three real Sentinels:
//! the primary is SIGKILLed while writes go on; one `RedisConn` finds the promoted replica
//! by itself, and every write that `WAIT` said a replica had survives.

use std::time::{Duration, Instant};

use courier_store::{RedisConn, RedisTarget, wait_for_replicas};
use courier_test_support::{SENTINEL_SERVICE, SentinelCluster};
use redis::AsyncCommands;

/// Writes `key`, then waits for one replica; true only if both succeeded.
async fn acked_write(conn: &mut RedisConn, key: &str) -> bool {
    let set: redis::RedisResult<()> = conn.set(key, "v").await;
    set.is_ok()
        && wait_for_replicas(conn, 1, Duration::from_secs(2))
            .await
            .is_ok()
}

#[tokio::test]
async fn a_killed_primary_is_replaced_without_losing_an_acknowledged_write() {
    let mut cluster = SentinelCluster::start(2).unwrap();
    cluster.wait_ready(Duration::from_secs(60)).unwrap();
    let target = RedisTarget::from_settings(
        "redis://ignored/0",
        Some(&cluster.sentinels_setting()),
        Some(SENTINEL_SERVICE),
    )
    .unwrap();
    let mut conn = RedisConn::connect(&target).await.unwrap();

    let mut acked = Vec::new();
    for i in 0..50 {
        let key = format!("k{i}");
        assert!(acked_write(&mut conn, &key).await, "before the failover");
        acked.push(key);
    }

    cluster.primary.kill();

    // Keep writing: each key is retried until a primary takes it and a replica has it.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut refused = 0;
    for i in 50..150 {
        let key = format!("k{i}");
        while !acked_write(&mut conn, &key).await {
            refused += 1;
            assert!(
                Instant::now() < deadline,
                "no primary took writes again; sentinel log:\n{}",
                cluster.sentinels[0].log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        acked.push(key);
    }
    assert!(cluster.switched(), "the sentinels switched the primary");

    // Every acknowledged write is on the new primary, read through the same connection.
    for key in &acked {
        let v: Option<String> = conn.get(key).await.unwrap();
        assert_eq!(v.as_deref(), Some("v"), "{key} was acknowledged and lost");
    }
    eprintln!(
        "failover: {} writes acknowledged, {refused} refused while it ran",
        acked.len()
    );
}
