//! Per-tenant quotas and rate limits through the real router and a real Redis: over a
//! limit the answer is 429 with `Retry-After` and a code and `limit` that name it, and
//! nothing was saved; and listing by another tenant's destination is a 404.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use common::{Api, OTHER_TOKEN, STAGING_BUCKET};
use courier_egress::EgressPolicy;
use courier_producer::{Quotas, Rules};
use serde_json::{Value, json};

/// The tests' API with these quotas.
async fn api_with(quotas: Quotas) -> Api {
    Api::with_rules(Rules {
        egress: Arc::new(EgressPolicy::allow_everything()),
        staging_bucket: Some(STAGING_BUCKET.into()),
        probe_timeout: Duration::from_secs(2),
        quotas,
        ..Rules::default()
    })
    .await
}

fn job(destination: &str, job_id: &str) -> Value {
    json!({
        "destinationId": destination,
        "jobId": job_id,
        "partnerInventoryId": "INV-1",
        "completedAt": "2026-06-07T10:00:00Z",
        "rows": [{"hotel": "A", "score": 1}]
    })
}

/// Asserts a 429 that names `code` and `limit`, and returns its `Retry-After` seconds.
fn assert_too_many(
    (status, headers, body): &(u16, axum::http::HeaderMap, Value),
    code: &str,
    limit: &str,
) -> u64 {
    assert_eq!(*status, 429, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["limit"], limit, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().len() > 10,
        "{body}"
    );
    headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds")
}

async fn post_as(
    api: &Api,
    token: &str,
    path: &str,
    body: &Value,
) -> (u16, axum::http::HeaderMap, Value) {
    api.call_full(
        Method::POST,
        path,
        Some(token),
        Some(serde_json::to_vec(body).unwrap()),
    )
    .await
}

#[tokio::test]
async fn one_destination_over_the_quota_is_429_and_not_saved() {
    let api = api_with(Quotas {
        max_destinations_per_tenant: 2,
        ..Quotas::default()
    })
    .await;
    let body = api.destination_body("CSV", "NONE", "in/");
    let first = api.create_destination(&body).await;
    api.create_destination(&body).await;
    let before = api.redis_keys("destination:*").await.len();
    let answer = post_as(&api, common::TOKEN, "/api/v1/delivery-destinations", &body).await;
    assert_eq!(
        assert_too_many(&answer, "QUOTA_EXCEEDED", "destinationsPerTenant"),
        60
    );
    assert!(
        !answer.2.to_string().contains(common::SECRET),
        "the secret is not echoed"
    );
    assert_eq!(
        api.redis_keys("destination:*").await.len(),
        before,
        "nothing saved"
    );
    let (_, list) = api.get("/api/v1/delivery-destinations").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");

    // Another tenant has its own quota.
    let (status, _, resp) =
        post_as(&api, OTHER_TOKEN, "/api/v1/delivery-destinations", &body).await;
    assert_eq!(status, 201, "{resp}");
    // Deleting one frees a place.
    let (status, _) = api
        .delete(&format!("/api/v1/delivery-destinations/{first}"))
        .await;
    assert_eq!(status, 204);
    api.create_destination(&body).await;
}

#[tokio::test]
async fn one_delivery_over_the_waiting_quota_is_429_and_not_queued() {
    let api = api_with(Quotas {
        max_waiting_per_tenant: 2,
        ..Quotas::default()
    })
    .await;
    let dest = api
        .create_destination(&api.destination_body("CSV", "NONE", "in/"))
        .await;
    api.enqueue(&dest, "job-1", "INV-1").await;
    api.enqueue(&dest, "job-2", "INV-1").await;
    let records_before = api.redis_keys("delivery:*").await;
    let answer = post_as(
        &api,
        common::TOKEN,
        "/api/v1/deliveries",
        &job(&dest, "job-3"),
    )
    .await;
    assert_eq!(
        assert_too_many(&answer, "QUOTA_EXCEEDED", "waitingDeliveriesPerTenant"),
        60
    );
    // Nothing half-saved: no record, no task, not listed.
    assert_eq!(api.redis_keys("delivery:*").await, records_before);
    assert_eq!(api.queued_tasks().await, 2);
    let (_, list) = api.get("/api/v1/deliveries").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    let (_, list) = api.get("/api/v1/deliveries?jobId=job-3").await;
    assert_eq!(list["items"], json!([]));

    // With an Idempotency-Key: refused too, and the key is free for the retry.
    let (status, headers, body) = api
        .post_delivery_with_key(&job(&dest, "job-3"), "k-3")
        .await;
    assert_too_many(
        &(status, headers, body),
        "QUOTA_EXCEEDED",
        "waitingDeliveriesPerTenant",
    );
    assert!(api.redis_keys("tenant:acme:idempotency:*").await.is_empty());

    // A delivery that reaches a final state frees its place (as a worker records it).
    let records = courier_store::RecordStore::new(api.conn.clone(), api.keys.clone());
    let id =
        courier_core::DeliveryId::parse(records_before[0].rsplit(':').next().unwrap()).unwrap();
    let mut record = records.get_any(&id).await.unwrap().unwrap();
    record.status = courier_core::delivery::DeliveryStatus::Delivered;
    records.put(&record).await.unwrap();
    let (status, _, body) = api
        .post_delivery_with_key(&job(&dest, "job-3"), "k-3")
        .await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test]
async fn connection_tests_over_the_rate_are_429_with_the_rest_of_the_minute() {
    let api = api_with(Quotas {
        connection_tests_per_minute: 2,
        ..Quotas::default()
    })
    .await;
    // Its store is a loopback port nothing listens on: each test fails at once.
    let body = api.destination_body("CSV", "NONE", "in/");
    let dest = api.create_destination(&body).await;
    let saved = format!("/api/v1/delivery-destinations/{dest}/test");
    let (status, report) = api.post(&saved, &json!({})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ok"], false);
    let (status, _) = api.post("/api/v1/delivery-destinations/test", &body).await;
    assert_eq!(status, 200);
    // The third in the minute, of either kind, is refused before anything is tried.
    for path in [saved.as_str(), "/api/v1/delivery-destinations/test"] {
        let answer = post_as(&api, common::TOKEN, path, &body).await;
        let wait = assert_too_many(&answer, "RATE_LIMITED", "connectionTestsPerMinute");
        assert!((1..=60).contains(&wait), "{path}: Retry-After {wait}");
    }
    // Another tenant's tests are counted apart; another tenant's destination is still 404.
    let (status, _, resp) = post_as(
        &api,
        OTHER_TOKEN,
        "/api/v1/delivery-destinations/test",
        &body,
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    let (status, _, _) = post_as(&api, OTHER_TOKEN, &saved, &json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn listing_by_another_tenants_destination_is_404_and_reads_nothing_of_it() {
    let api = api_with(Quotas::default()).await;
    let mine = api
        .create_destination(&api.destination_body("CSV", "NONE", "in/"))
        .await;
    let (status, _, theirs) = post_as(
        &api,
        OTHER_TOKEN,
        "/api/v1/delivery-destinations",
        &api.destination_body("CSV", "NONE", "in/"),
    )
    .await;
    assert_eq!(status, 201);
    let theirs = theirs["id"].as_str().unwrap().to_owned();
    let (status, _, _) = post_as(&api, OTHER_TOKEN, "/api/v1/deliveries", &job(&theirs, "j")).await;
    assert_eq!(status, 202);
    let id = api.enqueue(&mine, "j", "INV-1").await;

    // The other tenant's destination index is made unreadable as a sorted set: a listing
    // that touched it (ZCARD, ZREVRANGEBYLEX) would fail with WRONGTYPE, a 503.
    let their_index = api
        .keys
        .destination_deliveries(&courier_core::DestinationId::parse(&theirs).unwrap());
    let mut c = api.conn.clone();
    let _: () = redis::pipe()
        .del(&their_index)
        .set(&their_index, "not a sorted set")
        .query_async(&mut c)
        .await
        .unwrap();
    for path in [
        format!("/api/v1/deliveries?destinationId={theirs}"),
        format!("/api/v1/deliveries?destinationId={theirs}&status=QUEUED"),
        format!("/api/v1/deliveries?destinationId={theirs}&jobId=j"),
        format!(
            "/api/v1/deliveries?destinationId={}",
            courier_core::DestinationId::generate()
        ),
    ] {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "NOT_FOUND");
    }

    // The tenant's own destination, and its statuses, list its own delivery.
    for path in [
        format!("/api/v1/deliveries?destinationId={mine}"),
        "/api/v1/deliveries?status=QUEUED".to_owned(),
        format!("/api/v1/deliveries?destinationId={mine}&status=QUEUED"),
    ] {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let ids: Vec<_> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, std::slice::from_ref(&id), "{path}");
    }
    let (_, body) = api.get("/api/v1/deliveries?status=DELIVERED").await;
    assert_eq!(body["items"], json!([]));
}
