//! The control API where processes matter: pausing and resuming with real workers, the
//! `courier destinations test` and `courier dlq` commands, credential modes, the delivery
//! inspector and retry, secrets in every process's output; through the real `courier api`
//! and workers against real Redis and Garage. Validation, tenants, the lifecycle without
//! workers and the connection test run in process: crates/producer/tests/.

mod common;

use std::time::Duration;

use common::{BUCKET, Stack, TOKEN};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_pause_resume_rotate_and_delete() {
    let stack = Stack::start(1).await;
    let mut ids = Vec::new();
    for prefix in ["a/", "b/", "c/"] {
        ids.push(
            stack
                .create_destination(&stack.destination_body("CSV", "NONE", prefix))
                .await,
        );
    }

    // Pause without resending the secret: the saved one is kept.
    let dest = &ids[0];
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

    // Deliveries to a paused destination are accepted and held, not delivered.
    let held: Vec<String> = vec![
        stack.enqueue(dest, "job-p1", "INV-P1").await,
        stack.enqueue(dest, "job-p2", "INV-P2").await,
    ];
    for id in &held {
        stack.wait_status(id, "HELD", WAIT).await;
    }
    assert!(
        stack.objects("a/").await.is_empty(),
        "nothing delivered while paused"
    );

    // Deleting it now is refused: deliveries are waiting.
    let (s, refused) = stack
        .delete(&format!("/api/v1/delivery-destinations/{dest}"))
        .await;
    assert_eq!(s, 409, "{refused}");
    assert_eq!(
        refused["error"]["code"],
        "DESTINATION_HAS_PENDING_DELIVERIES"
    );

    // Resume: the held deliveries flow, with the saved secret.
    body["status"] = "ACTIVE".into();
    let (s, resumed) = stack
        .put(&format!("/api/v1/delivery-destinations/{dest}"), &body)
        .await;
    assert_eq!(s, 200, "{resumed}");
    for id in &held {
        let rec = stack.wait_final(id, WAIT).await;
        assert_eq!(rec["status"], "DELIVERED", "{rec}");
    }
    let mut keys = stack.objects("a/").await;
    keys.sort();
    assert_eq!(
        keys,
        [
            "a/mapping_results_INV-P1_2026-06-07.csv",
            "a/mapping_results_INV-P2_2026-06-07.csv"
        ]
    );

    // Rotated credentials: a new key pair is used from the next delivery on.
    let new_key = stack.garage.create_key("rotated").unwrap();
    stack.garage.allow(BUCKET, &new_key, true, true).unwrap();
    body["s3"]["accessKeyId"] = new_key.id.clone().into();
    body["s3"]["secretAccessKey"] = new_key.secret.clone().into();
    let (s, rotated) = stack
        .put(&format!("/api/v1/delivery-destinations/{dest}"), &body)
        .await;
    assert_eq!(s, 200, "{rotated}");
    assert!(
        rotated["s3"]["accessKeyId"]
            .as_str()
            .unwrap()
            .starts_with(&new_key.id[..4])
    );
    stack.garage.deny(BUCKET, &stack.key, true, true).unwrap();
    let id = stack.enqueue(dest, "job-rot", "INV-ROT").await;
    assert_eq!(stack.wait_final(&id, WAIT).await["status"], "DELIVERED");

    // Nothing waiting: delete works, and the destination is gone.
    let (s, _) = stack
        .delete(&format!("/api/v1/delivery-destinations/{dest}"))
        .await;
    assert_eq!(s, 204);
    let (s, _) = stack
        .get(&format!("/api/v1/delivery-destinations/{dest}"))
        .await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_delete_fails_waiting_deliveries_instead_of_dropping_them() {
    let stack = Stack::start(1).await;
    let mut body = stack.destination_body("JSON", "NONE", "f/");
    body["status"] = "PAUSED".into();
    let dest = stack.create_destination(&body).await;
    let id = stack.enqueue(&dest, "job-f", "INV-F").await;
    stack.wait_status(&id, "HELD", WAIT).await;
    let (s, _) = stack
        .delete(&format!("/api/v1/delivery-destinations/{dest}?force=true"))
        .await;
    assert_eq!(s, 204);
    let rec = stack.wait_final(&id, WAIT).await;
    assert_eq!(rec["status"], "FAILED", "{rec}");
    assert_eq!(rec["error"]["code"], "DestinationNotFound");
}

/// `courier destinations test` runs the connection test of a saved destination (the API's
/// own test runs in process); it needs Redis and Garage, not the API or a worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_the_connection_test() {
    let redis = courier_test_support::RedisServer::start().expect("redis starts");
    let garage = courier_test_support::GarageServer::start().expect("garage starts");
    let key = garage.bucket_with_key(BUCKET).expect("bucket and key");
    let secret_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let conn = courier_store::connect(&redis.url()).await.unwrap();
    let service = courier_producer::Service::new(
        conn,
        courier_store::Keys::default(),
        Some(courier_store::SecretCipher::from_base64(secret_key).unwrap()),
        courier_producer::Rules {
            egress: std::sync::Arc::new(courier_egress::EgressPolicy::allow_everything()),
            ..Default::default()
        },
    );
    let tenant = courier_core::TenantId::parse("acme").unwrap();
    let create = |key: &courier_test_support::S3Key| {
        serde_json::from_value::<courier_producer::wire::DestinationRequest>(json!({
            "type": "S3",
            "name": "cli",
            "s3": {
                "bucket": BUCKET,
                "region": garage.region(),
                "accessKeyId": key.id,
                "secretAccessKey": key.secret,
                "endpointUrl": garage.endpoint(),
                "pathPrefix": "incoming/",
            },
        }))
        .unwrap()
    };
    let good = service
        .create_destination(&tenant, create(&key))
        .await
        .unwrap();
    let reader = garage.create_key("reader").unwrap();
    garage.allow(BUCKET, &reader, true, false).unwrap();
    let ro = service
        .create_destination(&tenant, create(&reader))
        .await
        .unwrap();
    let courier = |id: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_courier"))
            .args(["destinations", "test", id])
            .env_clear()
            .env("REDIS_URL", redis.url())
            .env("COURIER_SECRET_KEY", secret_key)
            // Garage is on loopback: the operator allows exactly its address and port.
            .env(
                "COURIER_EGRESS_ALLOW",
                garage.endpoint().trim_start_matches("http://"),
            )
            .output()
            .unwrap()
    };
    let out = courier(good.id.as_str());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let out = courier(ro.id.as_str());
    assert_eq!(out.status.code(), Some(1), "a failed test exits 1");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["steps"][1]["error"]["code"], "AccessDenied",
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspector_filters_paginates_and_retries_a_failed_delivery() {
    let stack = Stack::start(1).await;
    let d1 = stack
        .create_destination(&stack.destination_body("CSV", "NONE", "i1/"))
        .await;
    let mut body = stack.destination_body("CSV", "NONE", "i2/");
    body["s3"]["bucket"] = "created-later".into();
    let d2 = stack.create_destination(&body).await;

    let a = stack.enqueue(&d1, "job-a", "INV-A").await;
    let b = stack.enqueue(&d1, "job-b", "INV-B").await;
    let c = stack.enqueue(&d2, "job-a", "INV-C").await;
    for id in [&a, &b] {
        assert_eq!(stack.wait_final(id, WAIT).await["status"], "DELIVERED");
    }
    let failed = stack.wait_final(&c, WAIT).await;
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(failed["error"]["code"], "NoSuchBucket");

    let ids = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, all) = stack.get("/api/v1/deliveries").await;
    assert_eq!(ids(&all), [c.clone(), b.clone(), a.clone()], "newest first");
    let (_, by_job) = stack.get("/api/v1/deliveries?jobId=job-a").await;
    assert_eq!(ids(&by_job), [c.clone(), a.clone()]);
    let (_, by_dest) = stack
        .get(&format!("/api/v1/deliveries?destinationId={d1}"))
        .await;
    assert_eq!(ids(&by_dest), [b.clone(), a.clone()]);
    let (_, by_status) = stack.get("/api/v1/deliveries?status=FAILED").await;
    assert_eq!(ids(&by_status), vec![c.clone()]);
    assert_eq!(
        by_status["items"][0]["attempts"][0]["errorCode"],
        "NoSuchBucket"
    );
    let (_, page1) = stack.get("/api/v1/deliveries?limit=2").await;
    assert_eq!(ids(&page1), [c.clone(), b.clone()]);
    let cursor = page1["nextCursor"].as_str().unwrap();
    let (_, page2) = stack
        .get(&format!("/api/v1/deliveries?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(ids(&page2), vec![a.clone()]);
    let (_, future) = stack
        .get("/api/v1/deliveries?from=2999-01-01T00:00:00Z")
        .await;
    assert!(ids(&future).is_empty());
    let (_, past) = stack
        .get("/api/v1/deliveries?to=2000-01-01T00:00:00Z")
        .await;
    assert!(ids(&past).is_empty());
    let (_, window) = stack
        .get("/api/v1/deliveries?from=2000-01-01T00:00:00Z&to=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(ids(&window).len(), 3);
    let (s, bad) = stack
        .get("/api/v1/deliveries?status=DONE&from=yesterday")
        .await;
    assert_eq!(s, 422);
    let fields: Vec<&str> = bad["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["status", "from"]);

    // Retrying a delivered one is refused; the failed one goes through once the bucket exists.
    let (s, refused) = stack
        .post(&format!("/api/v1/deliveries/{a}/retry"), &json!({}))
        .await;
    assert_eq!(s, 409, "{refused}");
    stack.garage.create_bucket("created-later").unwrap();
    stack
        .garage
        .allow("created-later", &stack.key, true, true)
        .unwrap();
    let (s, accepted) = stack
        .post(&format!("/api/v1/deliveries/{c}/retry"), &json!({}))
        .await;
    assert_eq!(s, 202, "{accepted}");
    let rec = stack.wait_final(&c, WAIT).await;
    assert_eq!(rec["status"], "DELIVERED", "{rec}");
    let attempts = rec["attempts"].as_array().unwrap();
    assert_eq!(
        attempts.len(),
        2,
        "the failed attempt stays in the history: {rec}"
    );
    assert_eq!(attempts[0]["errorCode"], "NoSuchBucket");
    assert_eq!(attempts[1]["outcome"], "DELIVERED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_the_destination_the_default_chain_or_none() {
    // The fleet's identity is lent to acme only.
    let redis = courier_test_support::RedisServer::start().expect("redis starts");
    let env = vec![(
        "COURIER_DEFAULT_CHAIN_TENANTS".to_owned(),
        "acme".to_owned(),
    )];
    let mut stack = Stack::start_with(0, redis, env).await;
    // The worker's own AWS environment is what DEFAULT_CHAIN destinations use.
    stack.add_worker_with_env(&[
        ("AWS_ACCESS_KEY_ID", stack.key.id.clone()),
        ("AWS_SECRET_ACCESS_KEY", stack.key.secret.clone()),
    ]);
    stack.wait_worker(0).await;

    let mut body = stack.destination_body("NDJSON", "NONE", "chain/");
    let s3 = body["s3"].as_object_mut().unwrap();
    s3.remove("accessKeyId");
    s3.remove("secretAccessKey");
    s3.insert("credentials".into(), "DEFAULT_CHAIN".into());
    // Another tenant may not write with the fleet's identity, nor test with it.
    for path in [
        "/api/v1/delivery-destinations",
        "/api/v1/delivery-destinations/test",
    ] {
        let (s, refused) = stack
            .call(
                reqwest::Method::POST,
                path,
                Some(common::OTHER_TOKEN),
                Some(serde_json::to_vec(&body).unwrap()),
            )
            .await;
        assert_eq!(s, 422, "{path}: {refused}");
        assert_eq!(refused["error"]["fields"][0]["field"], "s3.credentials");
        assert!(
            refused["error"]["fields"][0]["message"]
                .as_str()
                .unwrap()
                .contains("COURIER_DEFAULT_CHAIN_TENANTS"),
            "{refused}"
        );
    }
    let (s, created) = stack.post("/api/v1/delivery-destinations", &body).await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["s3"]["credentials"], "DEFAULT_CHAIN");
    assert!(created["s3"].get("accessKeyId").is_none());
    let id = stack
        .enqueue(created["id"].as_str().unwrap(), "job-chain", "INV-CHAIN")
        .await;
    assert_eq!(stack.wait_final(&id, WAIT).await["status"], "DELIVERED");
    assert_eq!(
        stack.objects("chain/").await,
        ["chain/mapping_results_INV-CHAIN_2026-06-07.ndjson"]
    );

    // A worker re-checks: one whose operator lends the identity to no tenant fails the
    // delivery with its own code instead of writing with it.
    stack.kill_worker(0);
    stack.add_worker_with_env(&[
        ("AWS_ACCESS_KEY_ID", stack.key.id.clone()),
        ("AWS_SECRET_ACCESS_KEY", stack.key.secret.clone()),
        ("COURIER_DEFAULT_CHAIN_TENANTS", String::new()),
    ]);
    stack.wait_worker(1).await;
    let id = stack
        .enqueue(created["id"].as_str().unwrap(), "job-chain-2", "INV-CHAIN2")
        .await;
    let rec = stack.wait_final(&id, WAIT).await;
    assert_eq!(rec["status"], "FAILED", "{rec}");
    assert_eq!(rec["error"]["code"], "DefaultChainNotAllowed", "{rec}");
    assert_eq!(
        stack.objects("chain/").await.len(),
        1,
        "nothing more was written"
    );

    // NONE sends unsigned requests; Garage refuses anonymous writes, which proves no
    // signature was sent (the same bucket accepts the signed ones above).
    body["s3"]["credentials"] = "NONE".into();
    let anon = stack.create_destination(&body).await;
    let id = stack.enqueue(&anon, "job-anon", "INV-ANON").await;
    let rec = stack.wait_final(&id, WAIT).await;
    assert_eq!(rec["status"], "FAILED", "{rec}");
    assert_eq!(rec["error"]["code"], "AccessDenied", "{rec}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_responses_or_logs() {
    let stack = Stack::start(1).await;
    let wrong_secret = format!("{}WRONG", &stack.key.secret[..20]);
    let dest = stack
        .create_destination(&stack.destination_body("CSV", "GZIP", "s/"))
        .await;
    let mut bad = stack.destination_body("CSV", "NONE", "s/");
    bad["s3"]["secretAccessKey"] = wrong_secret.clone().into();
    let bad_dest = stack.create_destination(&bad).await;

    stack
        .get(&format!("/api/v1/delivery-destinations/{dest}"))
        .await;
    stack.get("/api/v1/delivery-destinations").await;
    stack
        .post(
            &format!("/api/v1/delivery-destinations/{dest}/test"),
            &json!({}),
        )
        .await;
    stack
        .post(
            &format!("/api/v1/delivery-destinations/{bad_dest}/test"),
            &json!({}),
        )
        .await;
    stack.post("/api/v1/delivery-destinations/test", &bad).await;
    let ok = stack.enqueue(&dest, "job-s1", "INV-S1").await;
    let failed = stack.enqueue(&bad_dest, "job-s2", "INV-S2").await;
    assert_eq!(stack.wait_final(&ok, WAIT).await["status"], "DELIVERED");
    let rec = stack.wait_final(&failed, WAIT).await;
    assert_eq!(rec["status"], "FAILED", "{rec}");
    stack.get("/api/v1/deliveries").await;
    let mut update = stack.destination_body("CSV", "NONE", "s/");
    update["status"] = "PAUSED".into();
    stack
        .put(&format!("/api/v1/delivery-destinations/{dest}"), &update)
        .await;
    stack
        .post(
            "/api/v1/delivery-destinations",
            &json!({"type": "S3", "name": "x",
        "s3": {"bucket": "Bad_Bucket", "region": "garage", "accessKeyId": stack.key.id,
               "secretAccessKey": stack.key.secret}}),
        )
        .await;
    let text = stack.worker_metrics(0).await;

    let all = format!("{}{text}", stack.everything_said());
    assert!(all.len() > 1000, "the scan saw real output");
    assert!(!all.contains(&stack.key.secret), "the secret leaked");
    assert!(!all.contains(&wrong_secret), "the wrong secret leaked");
    assert!(
        !all.contains(&stack.secret_key),
        "COURIER_SECRET_KEY leaked"
    );
    assert!(!all.contains(TOKEN), "an API token leaked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_holds_deliveries_until_its_test_passes() {
    let mut stack = Stack::start(0).await;
    stack.add_worker_with_env(&[("COURIER_FAILING_THRESHOLD", "2".into())]);
    stack.wait_worker(0).await;
    let dest = stack
        .create_destination(&stack.destination_body("CSV", "NONE", "h/"))
        .await;
    stack.garage.deny(BUCKET, &stack.key, false, true).unwrap();

    // Two permanent failures in a row mark the destination failing...
    for i in 0..2 {
        let id = stack
            .enqueue(&dest, &format!("job-h{i}"), &format!("INV-H{i}"))
            .await;
        let rec = stack.wait_final(&id, WAIT).await;
        assert_eq!(rec["status"], "FAILED", "{rec}");
        assert_eq!(rec["error"]["code"], "AccessDenied");
        assert_eq!(
            rec["attempts"].as_array().unwrap().len(),
            1,
            "permanent: no retry"
        );
    }
    let (_, view) = stack
        .get(&format!("/api/v1/delivery-destinations/{dest}"))
        .await;
    assert_eq!(view["health"]["state"], "FAILING", "{view}");
    assert_eq!(view["health"]["consecutiveFailures"], 2);
    assert_eq!(view["health"]["lastErrorCode"], "AccessDenied");

    // ...so the next delivery is held instead of failing too.
    let held = stack.enqueue(&dest, "job-h2", "INV-H2").await;
    stack.wait_status(&held, "HELD", WAIT).await;

    // The customer fixes the permission; a passing connection test releases it.
    stack.garage.allow(BUCKET, &stack.key, true, true).unwrap();
    let (_, report) = stack
        .post(
            &format!("/api/v1/delivery-destinations/{dest}/test"),
            &json!({}),
        )
        .await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(stack.wait_final(&held, WAIT).await["status"], "DELIVERED");
    let (_, view) = stack
        .get(&format!("/api/v1/delivery-destinations/{dest}"))
        .await;
    assert_eq!(view["health"]["state"], "HEALTHY", "{view}");
    assert_eq!(view["health"]["consecutiveFailures"], 0);

    // The two that failed wait in the dead letters and can be replayed.
    let out = stack.courier(&["dlq", "list", "--json"]).output().unwrap();
    assert!(out.status.success());
    let listed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let out = stack
        .courier(&["dlq", "replay", "--destination", &dest])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "2 replayed, 0 kept"
    );
    let mut keys = stack.objects("h/").await;
    let deadline = std::time::Instant::now() + WAIT;
    while keys.len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        keys = stack.objects("h/").await;
    }
    keys.sort();
    assert_eq!(
        keys,
        [
            "h/mapping_results_INV-H0_2026-06-07.csv",
            "h/mapping_results_INV-H1_2026-06-07.csv",
            "h/mapping_results_INV-H2_2026-06-07.csv"
        ]
    );
}
