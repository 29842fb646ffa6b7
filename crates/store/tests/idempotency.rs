//! Idempotency keys against a real Redis: one claim wins among concurrent requests, a
//! replay names the first delivery, another body is a mismatch, tenants are apart.

use courier_core::{DeliveryId, TenantId};
use courier_store::{Idempotency, KeyClaim, Keys};
use courier_test_support::RedisServer;

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

#[tokio::test]
async fn one_claim_wins_and_later_requests_replay_or_mismatch() {
    let redis = RedisServer::start().unwrap();
    let conn = courier_store::connect(&redis.url()).await.unwrap();
    let idem = Idempotency::new(conn, Keys::new("t-idem"));
    let acme = tenant("acme");

    // Twenty concurrent requests with one key: exactly one may queue.
    let claims = futures::future::join_all((0..20).map(|_| {
        let idem = idem.clone();
        let acme = acme.clone();
        async move { idem.claim(&acme, "k-1", "fp-a").await.unwrap() }
    }))
    .await;
    assert_eq!(
        claims.iter().filter(|c| **c == KeyClaim::Claimed).count(),
        1
    );
    assert_eq!(
        claims
            .iter()
            .filter(|c| **c == KeyClaim::InProgress)
            .count(),
        19
    );

    let id = DeliveryId::generate();
    idem.complete(&acme, "k-1", "fp-a", &id).await.unwrap();
    assert_eq!(
        idem.claim(&acme, "k-1", "fp-a").await.unwrap(),
        KeyClaim::Replay(id.clone())
    );
    assert_eq!(
        idem.claim(&acme, "k-1", "fp-b").await.unwrap(),
        KeyClaim::Mismatch
    );
    // Another tenant's key of the same name is its own.
    assert_eq!(
        idem.claim(&tenant("globex"), "k-1", "fp-b").await.unwrap(),
        KeyClaim::Claimed
    );

    // A released claim can be taken again; the completed one lives for 24 hours.
    assert_eq!(
        idem.claim(&acme, "k-2", "fp").await.unwrap(),
        KeyClaim::Claimed
    );
    idem.release(&acme, "k-2").await.unwrap();
    assert_eq!(
        idem.claim(&acme, "k-2", "fp").await.unwrap(),
        KeyClaim::Claimed
    );
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(Keys::new("t-idem").idempotency(&acme, "k-1"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 23 * 3_600_000 && ttl <= 24 * 3_600_000, "{ttl}");
    let claim_ttl: i64 = redis::cmd("PTTL")
        .arg(Keys::new("t-idem").idempotency(&acme, "k-2"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(claim_ttl > 0 && claim_ttl <= 60_000, "{claim_ttl}");
}
