//! `Idempotency-Key` through the real router and a real Redis: concurrent retries with one
//! key queue one delivery; a repeat answers with the first delivery; another body with the
//! same key is a 422 naming the header; a bad key is refused before anything is saved.

mod common;

use common::Api;
use serde_json::{Value, json};

fn job(destination: &str, score: i64) -> Value {
    json!({
        "destinationId": destination,
        "jobId": "job-42",
        "partnerInventoryId": "INV-42",
        "completedAt": "2026-06-07T10:00:00Z",
        "rows": [{"hotel": "A", "score": score}]
    })
}

#[tokio::test]
async fn concurrent_retries_with_one_key_queue_one_delivery() {
    let api = Api::start().await;
    let dest = api
        .create_destination(&api.destination_body("CSV", "NONE", "in/"))
        .await;
    let body = job(&dest, 1);

    let answers = futures::future::join_all(
        (0..16).map(|_| api.post_delivery_with_key(&body, "0b7f6c1e-retry")),
    )
    .await;
    for (status, _, resp) in &answers {
        assert_eq!(*status, 202, "{resp}");
    }
    let ids: std::collections::HashSet<&str> = answers
        .iter()
        .map(|(_, _, r)| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "every retry names the one delivery: {ids:?}");
    let replayed = answers
        .iter()
        .filter(|(_, h, _)| h.get("idempotent-replayed").is_some_and(|v| v == "true"))
        .count();
    assert_eq!(replayed, 15, "all but the first say they were replayed");
    assert_eq!(api.queued_tasks().await, 1, "one task in the queue");
    let (_, list) = api.get("/api/v1/deliveries?jobId=job-42").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");

    // Later, the same key and body: the same delivery, still one task.
    let (status, headers, resp) = api.post_delivery_with_key(&body, "0b7f6c1e-retry").await;
    assert_eq!(status, 202);
    assert_eq!(resp["id"].as_str(), ids.iter().next().copied());
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(api.queued_tasks().await, 1);

    // A new key is a new delivery.
    let (status, headers, other) = api.post_delivery_with_key(&body, "another-key").await;
    assert_eq!(status, 202);
    assert!(headers.get("idempotent-replayed").is_none());
    assert_ne!(other["id"], resp["id"]);
    assert_eq!(api.queued_tasks().await, 2);
}

#[tokio::test]
async fn a_key_reused_for_another_body_or_malformed_is_refused_and_saves_nothing() {
    let api = Api::start().await;
    let dest = api
        .create_destination(&api.destination_body("CSV", "NONE", "in/"))
        .await;
    let (status, _, _) = api.post_delivery_with_key(&job(&dest, 1), "k-1").await;
    assert_eq!(status, 202);

    let (status, _, resp) = api.post_delivery_with_key(&job(&dest, 2), "k-1").await;
    assert_eq!(status, 422, "{resp}");
    assert_eq!(resp["error"]["code"], "VALIDATION_FAILED");
    assert_eq!(resp["error"]["fields"][0]["field"], "Idempotency-Key");
    assert!(
        resp["error"]["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("different request"),
        "{resp}"
    );

    let long = "k".repeat(256);
    for bad in ["has space", long.as_str()] {
        let (status, _, resp) = api.post_delivery_with_key(&job(&dest, 3), bad).await;
        assert_eq!(status, 422, "{resp}");
        assert_eq!(resp["error"]["fields"][0]["field"], "Idempotency-Key");
    }
    assert_eq!(api.queued_tasks().await, 1, "only the first request queued");
}
