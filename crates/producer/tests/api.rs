//! The control API in process, where processes don't matter: the destination lifecycle
//! (pagination, update keeping the saved secret, delete refused while deliveries wait),
//! tenants (no route leaks across them) and the connection test against a real Garage.
//! Holding, releasing, delivering and retrying with real workers stay in tests/e2e_api.rs.

mod common;

use axum::http::Method;
use common::{Api, BUCKET, OTHER_TOKEN};
use courier_core::{DestinationId, TenantId};
use serde_json::{Value, json};

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

fn fields(v: &Value) -> Vec<String> {
    v["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn destinations_list_update_and_delete() {
    let stack = Api::start().await;
    let mut created = Vec::new();
    for prefix in ["a/", "b/", "c/"] {
        created.push(
            stack
                .create_destination(&stack.destination_body("CSV", "NONE", prefix))
                .await,
        );
    }

    // Paginated list, oldest first.
    let (s, page1) = stack.get("/api/v1/delivery-destinations?limit=2").await;
    assert_eq!(s, 200, "{page1}");
    assert_eq!(ids(&page1), created[..2]);
    let cursor = page1["nextCursor"].as_str().unwrap();
    let (_, page2) = stack
        .get(&format!(
            "/api/v1/delivery-destinations?limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(ids(&page2), created[2..]);
    assert!(page2["nextCursor"].is_null());
    let (s, bad) = stack
        .get("/api/v1/delivery-destinations?limit=0&colour=red")
        .await;
    assert_eq!(s, 422, "{bad}");
    assert_eq!(fields(&bad), ["limit", "colour"]);
    // A required parameter left out is named with the other problems.
    let (s, bad) = stack.get("/api/v1/batches?limit=0").await;
    assert_eq!(s, 422, "{bad}");
    assert_eq!(fields(&bad), ["destinationId", "limit"]);

    // Pause without resending the secret: the saved one is kept.
    let dest = &created[0];
    let mut body = stack.destination_body("CSV", "NONE", "a/");
    body["status"] = "PAUSED".into();
    body["name"] = "renamed".into();
    body["s3"]
        .as_object_mut()
        .unwrap()
        .remove("secretAccessKey");
    let (s, updated) = stack
        .put(&format!("/api/v1/delivery-destinations/{dest}"), &body)
        .await;
    assert_eq!(s, 200, "{updated}");
    assert_eq!(updated["status"], "PAUSED");
    assert_eq!(updated["name"], "renamed");
    assert_eq!(updated["s3"]["credentials"], "STATIC");
    let saved = stack
        .service
        .destination(&TenantId::parse("acme").unwrap(), dest)
        .await
        .unwrap();
    let keys = saved.spec.s3.credentials.as_static().unwrap();
    assert_eq!(keys.secret_access_key.expose(), stack.secret());
    assert_eq!(keys.access_key_id, stack.key_id());

    // Deleting it is refused while a delivery waits (the paused destination holds it).
    let waiting = stack.enqueue(dest, "job-p1", "INV-P1").await;
    let (s, refused) = stack
        .delete(&format!("/api/v1/delivery-destinations/{dest}"))
        .await;
    assert_eq!(s, 409, "{refused}");
    assert_eq!(
        refused["error"]["code"],
        "DESTINATION_HAS_PENDING_DELIVERIES"
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("1 deliveries"),
        "{refused}"
    );

    // A changed key id without its secret is refused, naming the field.
    body["s3"]["accessKeyId"] = "GK0000000000000000000000".into();
    let (s, err) = stack
        .put(&format!("/api/v1/delivery-destinations/{dest}"), &body)
        .await;
    assert_eq!(s, 422, "{err}");
    assert_eq!(fields(&err), ["s3.secretAccessKey"]);

    // Forced, the delete goes through; the destination is gone, the delivery is not.
    let (s, _) = stack
        .delete(&format!("/api/v1/delivery-destinations/{dest}?force=true"))
        .await;
    assert_eq!(s, 204);
    let (s, _) = stack
        .get(&format!("/api/v1/delivery-destinations/{dest}"))
        .await;
    assert_eq!(s, 404);
    let (s, record) = stack.get(&format!("/api/v1/deliveries/{waiting}")).await;
    assert_eq!(s, 200, "{record}");

    // Nothing waiting: a plain delete works.
    let (s, _) = stack
        .delete(&format!("/api/v1/delivery-destinations/{}", created[1]))
        .await;
    assert_eq!(s, 204);
    let (_, left) = stack.get("/api/v1/delivery-destinations").await;
    assert_eq!(ids(&left), created[2..]);
}

#[tokio::test]
async fn no_route_leaks_across_tenants() {
    let stack = Api::start().await;
    let dest = stack
        .create_destination(&stack.destination_body("CSV", "NONE", "t/"))
        .await;
    let delivery = stack.enqueue(&dest, "job-t", "INV-T").await;

    let body = stack
        .destination_body("CSV", "NONE", "t/")
        .to_string()
        .into_bytes();
    let job = json!({"destinationId": dest, "jobId": "j", "partnerInventoryId": "I",
                     "completedAt": "2026-06-07T10:00:00Z", "rows": []})
    .to_string()
    .into_bytes();
    let (_, missing) = stack
        .get("/api/v1/delivery-destinations/dst_01JAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    let routes: Vec<(Method, String, Option<Vec<u8>>)> = vec![
        (
            Method::GET,
            format!("/api/v1/delivery-destinations/{dest}"),
            None,
        ),
        (
            Method::PUT,
            format!("/api/v1/delivery-destinations/{dest}"),
            Some(body.clone()),
        ),
        (
            Method::DELETE,
            format!("/api/v1/delivery-destinations/{dest}"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/delivery-destinations/{dest}/test"),
            None,
        ),
        (Method::GET, format!("/api/v1/deliveries/{delivery}"), None),
        (
            Method::POST,
            format!("/api/v1/deliveries/{delivery}/retry"),
            None,
        ),
    ];
    for (method, path, body) in routes {
        let (s, resp) = stack
            .call(method.clone(), &path, Some(OTHER_TOKEN), body.clone())
            .await;
        assert_eq!(s, 404, "{method} {path}: {resp}");
        assert_eq!(
            resp["error"]["code"], missing["error"]["code"],
            "{method} {path}"
        );
        assert!(!resp.to_string().contains("INV-T"), "{resp}");
        let (s, _) = stack.call(method.clone(), &path, None, body).await;
        assert_eq!(s, 401, "{method} {path} without a token");
    }
    // Lists show only the caller's own.
    for path in [
        "/api/v1/delivery-destinations",
        "/api/v1/deliveries",
        "/api/v1/deliveries?jobId=job-t",
    ] {
        let (s, resp) = stack.call(Method::GET, path, Some(OTHER_TOKEN), None).await;
        assert_eq!(s, 200, "{path}");
        assert_eq!(resp["items"], json!([]), "{path}: {resp}");
    }
    // Listing by another tenant's destination is as unknown as a missing one.
    let path = format!("/api/v1/deliveries?destinationId={dest}");
    let (s, resp) = stack
        .call(Method::GET, &path, Some(OTHER_TOKEN), None)
        .await;
    assert_eq!(s, 404, "{path}: {resp}");
    assert_eq!(resp["error"]["code"], "NOT_FOUND");
    // Enqueueing to another tenant's destination is refused as unknown.
    let (s, resp) = stack
        .call(
            Method::POST,
            "/api/v1/deliveries",
            Some(OTHER_TOKEN),
            Some(job),
        )
        .await;
    assert_eq!(s, 422, "{resp}");
    // And the owner still sees everything intact.
    let (s, _) = stack
        .get(&format!("/api/v1/delivery-destinations/{dest}"))
        .await;
    assert_eq!(s, 200);
    let (s, record) = stack.get(&format!("/api/v1/deliveries/{delivery}")).await;
    assert_eq!(s, 200);
    assert_eq!(record["partnerInventoryId"], "INV-T");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_test_reports_each_step_with_code_and_hint() {
    let stack = Api::with_garage().await;
    let garage = stack.garage.as_ref().unwrap();

    // A working destination: three steps pass, the probe object is cleaned up.
    let good = stack
        .create_destination(&stack.destination_body("CSV", "NONE", "incoming/"))
        .await;
    let (s, report) = stack
        .post(
            &format!("/api/v1/delivery-destinations/{good}/test"),
            &json!({}),
        )
        .await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    let steps: Vec<(&str, &str)> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| {
            (
                st["step"].as_str().unwrap(),
                st["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("HEAD_BUCKET", "PASSED"),
            ("PUT_OBJECT", "PASSED"),
            ("DELETE_OBJECT", "PASSED")
        ]
    );
    let s3 = garage.server.client(&garage.key).await;
    let listed = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix("incoming/")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count(), Some(0), "probe object deleted");

    // A key that may only read: PutObject fails with AccessDenied and a hint about the prefix.
    let reader = garage.server.create_key("reader").unwrap();
    garage.server.allow(BUCKET, &reader, true, false).unwrap();
    let mut body = stack.destination_body("CSV", "NONE", "incoming/");
    body["s3"]["accessKeyId"] = reader.id.clone().into();
    body["s3"]["secretAccessKey"] = reader.secret.clone().into();
    let ro = stack.create_destination(&body).await;
    let (_, report) = stack
        .post(
            &format!("/api/v1/delivery-destinations/{ro}/test"),
            &json!({}),
        )
        .await;
    assert_eq!(report["ok"], false, "{report}");
    let put = &report["steps"][1];
    assert_eq!(put["step"], "PUT_OBJECT");
    assert_eq!(put["outcome"], "FAILED");
    assert_eq!(put["error"]["code"], "AccessDenied", "{report}");
    assert!(
        put["error"]["hint"].as_str().unwrap().contains("incoming/"),
        "{report}"
    );
    assert_eq!(report["steps"][2]["outcome"], "SKIPPED");

    // An unsaved configuration can be tested; a missing bucket fails with a bucket hint.
    let mut body = stack.destination_body("CSV", "NONE", "");
    body["s3"]["bucket"] = "does-not-exist".into();
    let (s, report) = stack
        .post("/api/v1/delivery-destinations/test", &body)
        .await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["ok"], false);
    let head = &report["steps"][0];
    assert_eq!(head["outcome"], "FAILED", "{report}");
    assert!(
        ["NoSuchBucket", "NotFound"].contains(&head["error"]["code"].as_str().unwrap()),
        "{report}"
    );
    assert!(
        head["error"]["hint"].as_str().unwrap().contains("bucket"),
        "{report}"
    );

    // An endpoint that does not answer fails with its own error (each step is bounded by
    // the probe timeout, 2 s here).
    let mut body = stack.destination_body("CSV", "NONE", "");
    body["s3"]["endpointUrl"] =
        format!("http://127.0.0.1:{}", courier_test_support::free_port()).into();
    let (_, report) = stack
        .post("/api/v1/delivery-destinations/test", &body)
        .await;
    assert_eq!(report["ok"], false);
    assert_eq!(
        report["steps"][0]["error"]["code"], "ConnectionFailed",
        "{report}"
    );

    // Another tenant cannot test this tenant's destination.
    let (s, _) = stack
        .call(
            Method::POST,
            &format!("/api/v1/delivery-destinations/{good}/test"),
            Some(OTHER_TOKEN),
            None,
        )
        .await;
    assert_eq!(s, 404);
}

/// A task for `dest` as a worker would hold or dead-letter it.
fn task(dest: &str, delivery: &str) -> courier_core::delivery::DeliveryTask {
    serde_json::from_value(json!({
        "deliveryId": delivery,
        "tenant": "acme",
        "destinationId": dest,
        "jobId": "job-h",
        "partnerInventoryId": "INV-H",
        "completedAt": "2026-06-07T10:00:00Z",
        "columns": ["hotel"],
        "rows": [{"hotel": "A"}],
        "enqueuedAt": "2026-06-07T10:00:01Z",
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_deliveries_flow_again_when_the_destination_recovers() {
    use courier_store::{DeliveryQueue, HealthStore, HeldDeliveries};
    let stack = Api::with_garage().await;
    let queue = DeliveryQueue::new(stack.conn.clone(), &stack.keys);
    let held = HeldDeliveries::new(stack.conn.clone(), stack.keys.clone(), queue);
    let health = HealthStore::new(stack.conn.clone(), stack.keys.clone());
    let dest = stack
        .create_destination(&stack.destination_body("CSV", "NONE", "h/"))
        .await;
    let id = DestinationId::parse(&dest).unwrap();
    for _ in 0..2 {
        health
            .record_permanent_failure(&id, "AccessDenied", "Access Denied", 2)
            .await
            .unwrap();
    }
    let (_, view) = stack
        .get(&format!("/api/v1/delivery-destinations/{dest}"))
        .await;
    assert_eq!(view["health"]["state"], "FAILING", "{view}");
    held.hold(&task(&dest, "dlv_01JXQ5W7ZB3C4D5E6F7G8H9JK1"))
        .await
        .unwrap();
    assert_eq!(held.count(&id).await.unwrap(), 1);

    // A passing connection test of a failing destination releases what it held.
    let (_, report) = stack
        .post(
            &format!("/api/v1/delivery-destinations/{dest}/test"),
            &json!({}),
        )
        .await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(held.count(&id).await.unwrap(), 0);
    assert_eq!(stack.queued_tasks().await, 1, "back in the queue");
    let (_, view) = stack
        .get(&format!("/api/v1/delivery-destinations/{dest}"))
        .await;
    assert_eq!(view["health"]["state"], "HEALTHY", "{view}");
    assert_eq!(view["health"]["consecutiveFailures"], 0);

    // Paused, an update keeps holding; set active again, it releases.
    let mut body = stack.destination_body("CSV", "NONE", "h/");
    body["status"] = "PAUSED".into();
    let (s, _) = stack
        .put(&format!("/api/v1/delivery-destinations/{dest}"), &body)
        .await;
    assert_eq!(s, 200);
    held.hold(&task(&dest, "dlv_01JXQ5W7ZB3C4D5E6F7G8H9JK2"))
        .await
        .unwrap();
    let (s, _) = stack
        .put(&format!("/api/v1/delivery-destinations/{dest}"), &body)
        .await;
    assert_eq!(s, 200);
    assert_eq!(held.count(&id).await.unwrap(), 1, "paused: still held");
    body["status"] = "ACTIVE".into();
    let (s, _) = stack
        .put(&format!("/api/v1/delivery-destinations/{dest}"), &body)
        .await;
    assert_eq!(s, 200);
    assert_eq!(held.count(&id).await.unwrap(), 0, "active: released");
    assert_eq!(stack.queued_tasks().await, 2);
}

#[tokio::test]
async fn only_a_failed_delivery_with_its_dead_letter_is_retried() {
    use courier_store::{DeadLetter, DeadLetters, DeliveryQueue, RecordStore};
    let stack = Api::start().await;
    let dest = stack
        .create_destination(&stack.destination_body("CSV", "NONE", "r/"))
        .await;
    let delivery = stack.enqueue(&dest, "job-r", "INV-R").await;
    let retry = format!("/api/v1/deliveries/{delivery}/retry");

    let (s, refused) = stack.post(&retry, &json!({})).await;
    assert_eq!(s, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "NOT_FAILED");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("this one is QUEUED"),
        "{refused}"
    );

    // Failed, but its task is no longer kept.
    let records = RecordStore::new(stack.conn.clone(), stack.keys.clone());
    let tenant = TenantId::parse("acme").unwrap();
    let mut record = records
        .get(
            &tenant,
            &courier_core::DeliveryId::parse(&delivery).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    record.status = courier_core::delivery::DeliveryStatus::Failed;
    records.put(&record).await.unwrap();
    let (s, expired) = stack.post(&retry, &json!({})).await;
    assert_eq!(s, 409, "{expired}");
    assert_eq!(expired["error"]["code"], "TASK_EXPIRED");

    // With its dead letter: queued again, the letter replayed.
    let queue = DeliveryQueue::new(stack.conn.clone(), &stack.keys);
    let dead = DeadLetters::new(stack.conn.clone(), stack.keys.clone(), queue);
    dead.add(&DeadLetter {
        id: delivery.clone(),
        destination_id: Some(DestinationId::parse(&dest).unwrap()),
        code: "AccessDenied".into(),
        reason: "Access Denied".into(),
        died_at: chrono::Utc::now(),
        payload: serde_json::to_value(task(&dest, &delivery)).unwrap(),
    })
    .await
    .unwrap();
    let queued_before = stack.queued_tasks().await;
    let (s, accepted) = stack.post(&retry, &json!({})).await;
    assert_eq!(s, 202, "{accepted}");
    assert_eq!(accepted, json!({"id": delivery, "status": "QUEUED"}));
    let (_, record) = stack.get(&format!("/api/v1/deliveries/{delivery}")).await;
    assert_eq!(record["status"], "QUEUED");
    assert!(dead.get(&delivery).await.unwrap().is_none(), "replayed");
    assert_eq!(stack.queued_tasks().await, queued_before + 1);
}
