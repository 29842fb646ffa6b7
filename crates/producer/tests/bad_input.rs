//! Bad input gets a 4xx whose JSON names the problem, and leaves nothing behind:
//! no destination, no delivery record, no task in the queue. In process: the real router
//! over real Redis.

mod common;

use axum::http::Method;
use common::{Api, OTHER_TOKEN, TOKEN};
use courier_core::DestinationId;
use courier_producer::Rules;
use serde_json::{Value, json};

/// Keys Courier or apalis wrote that would betray a half-saved request.
async fn leftovers(stack: &Api) -> Vec<String> {
    let mut keys = stack.redis_keys("delivery:*").await;
    keys.append(&mut stack.redis_keys("tenant:*:deliveries").await);
    let queued = stack.queued_tasks().await;
    let mut conn = stack.conn.clone();
    let data: usize = redis::cmd("HLEN")
        .arg(format!("{}:deliveries:data", stack.keys.namespace()))
        .query_async(&mut conn)
        .await
        .unwrap();
    if queued > 0 {
        keys.push(format!("{queued} queued task ids"));
    }
    if data > 0 {
        keys.push(format!("{data} task payloads"));
    }
    keys
}

async fn destinations_saved(stack: &Api) -> usize {
    stack.redis_keys("destination:*").await.len()
}

/// Asserts a 4xx with a JSON error body; returns the names of the fields at fault.
fn fields_of(status: u16, body: &Value, expected_status: u16) -> Vec<String> {
    assert_eq!(status, expected_status, "{body}");
    let err = &body["error"];
    assert!(err["code"].is_string(), "error body has a code: {body}");
    assert!(
        err["message"].is_string(),
        "error body has a message: {body}"
    );
    err["fields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| f["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn staged_rows_of_another_tenant_are_refused_and_leave_nothing_behind() {
    let stack = Api::start().await;
    let dest = stack
        .create_destination(&stack.destination_body("CSV", "NONE", "in/"))
        .await;
    let job = |url: &str| {
        json!({
            "destinationId": dest, "jobId": "job-1", "partnerInventoryId": "INV-1",
            "completedAt": "2026-06-07T10:00:00Z", "rowsUrl": url
        })
    };
    let staging = common::STAGING_BUCKET;
    // The caller is tenant `acme`: another tenant's prefix, one it is a prefix of, path
    // steps out of its own, encodings a reader might decode, and its bare name.
    for key in [
        "globex/rows.ndjson",
        "acme2/rows.ndjson",
        "acme/../globex/rows.ndjson",
        "acme/%2e%2e/globex/rows.ndjson",
        "acme%2frows.ndjson",
        "acme//rows.ndjson",
        "./acme/rows.ndjson",
        "acme",
        "staged/rows.ndjson",
    ] {
        let url = format!("s3://{staging}/{key}");
        let (s, b) = stack.post("/api/v1/deliveries", &job(&url)).await;
        assert_eq!(fields_of(s, &b, 422), ["rowsUrl"], "{url}");
        let message = b["error"]["fields"][0]["message"].as_str().unwrap();
        assert!(message.contains("under `acme/`"), "{url}: {b}");
        assert_eq!(leftovers(&stack).await, Vec::<String>::new(), "{url}");
    }
    // Tenant `globex` may not name `acme`'s rows either (its own destination or not: the
    // rows are refused before anything is looked up).
    let bytes = serde_json::to_vec(&job(&format!("s3://{staging}/acme/rows.ndjson"))).unwrap();
    let (s, b) = stack
        .call(
            Method::POST,
            "/api/v1/deliveries",
            Some(OTHER_TOKEN),
            Some(bytes),
        )
        .await;
    assert_eq!(fields_of(s, &b, 422), ["rowsUrl"]);
    assert!(b.to_string().contains("under `globex/`"), "{b}");
    assert_eq!(leftovers(&stack).await, Vec::<String>::new());

    // Its own prefix is accepted.
    let (s, b) = stack
        .post(
            "/api/v1/deliveries",
            &job(&format!("s3://{staging}/acme/jobs/rows.ndjson.gz")),
        )
        .await;
    assert_eq!(s, 202, "{b}");
}

#[tokio::test]
async fn bad_deliveries_are_refused_and_leave_nothing_behind() {
    let stack = Api::start().await;
    let dest = stack
        .create_destination(&stack.destination_body("CSV", "NONE", "in/"))
        .await;
    let good = json!({
        "destinationId": dest,
        "jobId": "job-1",
        "partnerInventoryId": "INV-1",
        "completedAt": "2026-06-07T10:00:00Z",
        "rows": [{"a": 1}]
    });

    // An unknown destination.
    let mut body = good.clone();
    body["destinationId"] = "dst_01JAAAAAAAAAAAAAAAAAAAAAAA".into();
    let (s, b) = stack.post("/api/v1/deliveries", &body).await;
    assert_eq!(fields_of(s, &b, 422), ["destinationId"]);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );

    // Another tenant's destination is just as unknown.
    let (s, b) = stack
        .call(
            Method::POST,
            "/api/v1/deliveries",
            Some(OTHER_TOKEN),
            Some(good.to_string().into_bytes()),
        )
        .await;
    assert_eq!(fields_of(s, &b, 422), ["destinationId"]);

    // A missing field.
    let mut body = good.clone();
    body.as_object_mut().unwrap().remove("partnerInventoryId");
    let (s, b) = stack.post("/api/v1/deliveries", &body).await;
    let fields = fields_of(s, &b, 422);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing field `partnerInventoryId`"),
        "{b}"
    );
    assert_eq!(fields, ["partnerInventoryId"], "{b}");

    // An unknown field.
    let mut body = good.clone();
    body["priority"] = 1.into();
    let (s, b) = stack.post("/api/v1/deliveries", &body).await;
    assert_eq!(fields_of(s, &b, 422), ["priority"]);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `priority`"),
        "{b}"
    );

    // Malformed rows: not objects, and rows not an array.
    let mut body = good.clone();
    body["rows"] = json!([{"a": 1}, 7, "text"]);
    let (s, b) = stack.post("/api/v1/deliveries", &body).await;
    assert_eq!(fields_of(s, &b, 422), ["rows[1]", "rows[2]"]);
    let mut body = good.clone();
    body["rows"] = json!({"a": 1});
    let (s, b) = stack.post("/api/v1/deliveries", &body).await;
    assert_eq!(fields_of(s, &b, 422), ["rows"]);

    // Rows by reference from outside the fleet's staging bucket: the workers would not read
    // them (the fleet's credentials must not read whatever else they can).
    let mut body = good.clone();
    body.as_object_mut().unwrap().remove("rows");
    body["rowsUrl"] = "s3://customer-secrets/dump.ndjson".into();
    let (s, b) = stack.post("/api/v1/deliveries", &body).await;
    assert_eq!(fields_of(s, &b, 422), ["rowsUrl"]);
    let message = b["error"]["fields"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(common::STAGING_BUCKET) && message.contains("customer-secrets"),
        "{b}"
    );

    // A wrong type deep inside is named by its path.
    let mut body = good.clone();
    body["columns"] = json!(["a", 5]);
    let (s, b) = stack.post("/api/v1/deliveries", &body).await;
    assert_eq!(fields_of(s, &b, 422), ["columns[1]"]);

    // A Parquet column type must name a column (here the first row's keys), and be a type.
    let mut body = good.clone();
    body["columnTypes"] = json!({"scroe": "INT64"});
    let (s, b) = stack.post("/api/v1/deliveries", &body).await;
    assert_eq!(fields_of(s, &b, 422), ["columnTypes.scroe"]);
    body["columnTypes"] = json!({"a": "DECIMAL"});
    let (s, b) = stack.post("/api/v1/deliveries", &body).await;
    assert_eq!(fields_of(s, &b, 422), ["columnTypes.a"]);

    // Bad values.
    let mut body = good.clone();
    body["completedAt"] = "yesterday".into();
    body["partnerInventoryId"] = "../etc".into();
    let (s, b) = stack.post("/api/v1/deliveries", &body).await;
    assert_eq!(fields_of(s, &b, 422), ["partnerInventoryId", "completedAt"]);

    // A body that is not JSON.
    let (s, b) = stack
        .call(
            Method::POST,
            "/api/v1/deliveries",
            Some(TOKEN),
            Some(b"rows=1&x".to_vec()),
        )
        .await;
    fields_of(s, &b, 400);
    assert_eq!(b["error"]["code"], "MALFORMED_JSON");

    // No token, a wrong token.
    let (s, b) = stack
        .call(
            Method::POST,
            "/api/v1/deliveries",
            None,
            Some(good.to_string().into_bytes()),
        )
        .await;
    fields_of(s, &b, 401);
    let (s, b) = stack
        .call(
            Method::POST,
            "/api/v1/deliveries",
            Some("tok_wrong_0123456789abcdef"),
            Some(good.to_string().into_bytes()),
        )
        .await;
    fields_of(s, &b, 401);

    assert_eq!(leftovers(&stack).await, Vec::<String>::new());

    // And the good one is accepted and leaves exactly one record and one task.
    let (s, b) = stack.post("/api/v1/deliveries", &good).await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(stack.queued_tasks().await, 1);
    let (s, rec) = stack
        .get(&format!("/api/v1/deliveries/{}", b["id"].as_str().unwrap()))
        .await;
    assert_eq!(s, 200);
    assert_eq!(rec["status"], "QUEUED");
    assert_eq!(rec["partnerInventoryId"], "INV-1");
}

#[tokio::test]
async fn bad_destinations_are_refused_with_the_field_named() {
    let stack = Api::start().await;
    let base = stack.destination_body("CSV", "NONE", "incoming/");
    let cases: Vec<(Value, &str)> = vec![
        (json!({"s3": {"pathPrefix": "incoming"}}), "s3.pathPrefix"),
        (json!({"s3": {"bucket": "Not_A_Bucket"}}), "s3.bucket"),
        (
            json!({"s3": {"endpointUrl": "ftp://store"}}),
            "s3.endpointUrl",
        ),
        (json!({"s3": {"region": "EU WEST"}}), "s3.region"),
        (json!({"format": "PDF"}), "format"),
        (json!({"s3": {"acl": "public-read"}}), "s3.acl"),
        // Write options, each under its field.
        (
            json!({"s3": {"serverSideEncryption": "AES128"}}),
            "s3.serverSideEncryption",
        ),
        (
            json!({"s3": {"serverSideEncryption": "AES256", "kmsKeyId": "alias/k"}}),
            "s3.kmsKeyId",
        ),
        (json!({"s3": {"storageClass": "COLD"}}), "s3.storageClass"),
        (json!({"s3": {"tags": {"aws:owner": "x"}}}), "s3.tags"),
        (json!({"s3": {"cannedAcl": "public-read"}}), "s3.cannedAcl"),
        (
            json!({"s3": {"expectedBucketOwner": "1234"}}),
            "s3.expectedBucketOwner",
        ),
        // A role needs its ARN, without keys; the ExternalId is Courier's to choose.
        (
            json!({"s3": {"roleArn": "arn:aws:iam::123456789012:role/x"}}),
            "s3.roleArn",
        ),
        (json!({"s3": {"externalId": "mine"}}), "s3.externalId"),
        (json!({"name": ""}), "name"),
        // gzip around a Parquet file: refused, its codec is `parquet.compression`.
        (
            json!({"format": "PARQUET", "compression": "GZIP"}),
            "compression",
        ),
        // Parquet settings on a CSV destination would mean nothing.
        (json!({"parquet": {"compression": "SNAPPY"}}), "parquet"),
        (
            json!({"format": "PARQUET", "parquet": {"compression": "LZ4"}}),
            "parquet.compression",
        ),
        (
            json!({"format": "PARQUET", "parquet": {"columnTypes": {"": "INT64"}}}),
            "parquet.columnTypes",
        ),
        (
            json!({"format": "PARQUET", "parquet": {"columnTypes": {"a": "DECIMAL"}}}),
            "parquet.columnTypes.a",
        ),
        // CSV's settings on another format would mean nothing; a misspelt one is no setting.
        (
            json!({"format": "JSON", "csv": {"neutralizeFormulas": true}}),
            "csv",
        ),
        (
            json!({"csv": {"neutraliseFormulas": true}}),
            "csv.neutraliseFormulas",
        ),
        (
            json!({"csv": {"neutralizeFormulas": "yes"}}),
            "csv.neutralizeFormulas",
        ),
        // Batch settings out of range or of the wrong shape, on an otherwise valid
        // batched destination (NDJSON + GZIP).
        (
            json!({"format": "NDJSON", "compression": "GZIP", "batch": {"windowSeconds": 4}}),
            "batch.windowSeconds",
        ),
        (
            json!({"format": "NDJSON", "compression": "GZIP", "batch": {"windowSeconds": 0}}),
            "batch.windowSeconds",
        ),
        (
            json!({"format": "NDJSON", "compression": "GZIP", "batch": {"windowSeconds": -60}}),
            "batch.windowSeconds",
        ),
        (
            json!({"format": "NDJSON", "compression": "GZIP",
                   "batch": {"maxObjectBytes": 5 * 1024 * 1024 - 1}}),
            "batch.maxObjectBytes",
        ),
        (
            json!({"format": "NDJSON", "compression": "GZIP",
                   "batch": {"maxObjectBytes": 6_u64 * 1024 * 1024 * 1024}}),
            "batch.maxObjectBytes",
        ),
        (
            json!({"format": "NDJSON", "compression": "GZIP", "batch": "every minute"}),
            "batch",
        ),
    ];
    for (patch, field) in cases {
        let mut body = base.clone();
        merge(&mut body, &patch);
        let (s, b) = stack.post("/api/v1/delivery-destinations", &body).await;
        let fields = fields_of(s, &b, 422);
        assert_eq!(fields, [field], "patch {patch}: {b}");
    }
    let (s, b) = stack
        .post("/api/v1/delivery-destinations", &json!({"type": "S3"}))
        .await;
    fields_of(s, &b, 422);
    let (s, b) = stack
        .call(
            Method::POST,
            "/api/v1/delivery-destinations",
            Some(TOKEN),
            Some(b"{".to_vec()),
        )
        .await;
    fields_of(s, &b, 400);

    // The Parquet refusal says where the codec goes instead.
    let mut body = base.clone();
    merge(
        &mut body,
        &json!({"format": "PARQUET", "compression": "GZIP"}),
    );
    let (_, b) = stack.post("/api/v1/delivery-destinations", &body).await;
    let msg = b["error"]["fields"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains(r#""parquet": {"compression": "ZSTD"}"#),
        "{msg}"
    );

    // The prefix mistake is explained in the customer's terms.
    let mut body = base.clone();
    body["s3"]["pathPrefix"] = "incoming".into();
    let (_, b) = stack.post("/api/v1/delivery-destinations", &body).await;
    let msg = b["error"]["fields"][0]["message"].as_str().unwrap();
    assert!(msg.contains("incomingmapping_results_"), "{msg}");

    assert_eq!(destinations_saved(&stack).await, 0, "nothing half-saved");
}

#[tokio::test]
async fn destinations_read_back_without_secrets_and_only_by_their_tenant() {
    let stack = Api::start().await;
    let body = stack.destination_body("XLSX", "GZIP", "acme/prod/exports/");
    let (s, created) = stack.post("/api/v1/delivery-destinations", &body).await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("dst_"));
    let (s, read) = stack
        .get(&format!("/api/v1/delivery-destinations/{id}"))
        .await;
    assert_eq!(s, 200);
    for resp in [&created, &read] {
        let text = resp.to_string();
        assert!(!text.contains(&stack.secret()), "secret echoed: {text}");
        assert!(
            !text.contains(&stack.key_id()),
            "access key id unmasked: {text}"
        );
        assert_eq!(resp["s3"]["bucket"], "acme-results");
        assert_eq!(resp["s3"]["pathPrefix"], "acme/prod/exports/");
        assert_eq!(resp["s3"]["credentials"], "STATIC");
        assert_eq!(resp["format"], "XLSX");
        assert_eq!(resp["compression"], "GZIP");
        assert_eq!(resp["status"], "ACTIVE");
        assert!(resp["s3"].get("secretAccessKey").is_none());
    }
    // The secret is not in Redis in the clear either.
    let mut conn = stack.conn.clone();
    let raw: String = redis::cmd("GET")
        .arg(stack.keys.destination(&DestinationId::parse(id).unwrap()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(raw.contains("acme/prod/exports/"), "{raw}");
    assert!(!raw.contains(&stack.secret()), "secret stored in the clear");

    // Another tenant gets 404, exactly as for an id that does not exist.
    let (s, other) = stack
        .call(
            Method::GET,
            &format!("/api/v1/delivery-destinations/{id}"),
            Some(OTHER_TOKEN),
            None,
        )
        .await;
    assert_eq!(s, 404, "{other}");
    let (s, missing) = stack
        .get("/api/v1/delivery-destinations/dst_01JAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    assert_eq!(s, 404);
    assert_eq!(other["error"]["code"], missing["error"]["code"]);
    let (s, _) = stack
        .call(
            Method::GET,
            &format!("/api/v1/delivery-destinations/{id}"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn private_endpoints_are_refused_unless_allowed() {
    // The API without COURIER_ALLOW_PRIVATE_ENDPOINTS.
    let stack = Api::with_rules(Rules::default()).await;
    for endpoint in [
        "http://127.0.0.1:9000",
        "http://169.254.169.254",
        "http://localhost:3900",
        "http://[::1]:80",
    ] {
        let mut body = stack.destination_body("CSV", "NONE", "");
        body["s3"]["endpointUrl"] = endpoint.into();
        let (s, b) = stack.post("/api/v1/delivery-destinations", &body).await;
        assert_eq!(s, 422, "{endpoint}: {b}");
        assert_eq!(b["error"]["fields"][0]["field"], "s3.endpointUrl", "{b}");
    }
    assert_eq!(destinations_saved(&stack).await, 0);
}

fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

#[tokio::test]
async fn the_library_and_the_api_refuse_the_same_row_references() {
    // `Producer::enqueue`, which upstream jobs link (and `courier enqueue` calls), runs the
    // rules the API runs: s3:// rows only from the staging bucket, no private hosts.
    let stack = Api::with_rules(Rules {
        staging_bucket: Some(common::STAGING_BUCKET.into()),
        ..Rules::default()
    })
    .await;
    let mut body = stack.destination_body("CSV", "NONE", "in/");
    body["s3"].as_object_mut().unwrap().remove("endpointUrl");
    let dest = stack.create_destination(&body).await;
    let tenant = courier_core::TenantId::parse("acme").unwrap();
    for (url, needle) in [
        ("s3://customer-secrets/dump.ndjson", "customer-secrets"),
        ("s3://courier-staging/globex/dump.ndjson", "under `acme/`"),
        ("http://127.0.0.1:9000/rows.ndjson", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
    ] {
        let job = json!({
            "destinationId": dest,
            "jobId": "job-1",
            "partnerInventoryId": "INV-1",
            "completedAt": "2026-06-07T10:00:00Z",
            "rowsUrl": url,
        });
        let (s, b) = stack.post("/api/v1/deliveries", &job).await;
        assert_eq!(fields_of(s, &b, 422), ["rowsUrl"], "{url}");
        let request: courier_producer::wire::JobCompletedRequest =
            serde_json::from_value(job).unwrap();
        let err = stack
            .service
            .producer()
            .enqueue(&tenant, request.validate().unwrap())
            .await
            .unwrap_err();
        match err {
            courier_producer::EnqueueError::Invalid(errors) => {
                assert_eq!(errors.0[0].field, "rowsUrl", "{url}");
                assert!(errors.0[0].message.contains(needle), "{url}: {errors}");
            }
            other => panic!("{url}: {other}"),
        }
    }
    assert_eq!(leftovers(&stack).await, Vec::<String>::new());
}

/// A batched destination keeps a window's rows in Redis: a delivery whose NDJSON alone is
/// over the destination's object size (5 MiB here, sent in a body under the API's 8 MiB
/// limit) is refused naming `rows`, and nothing of it is written.
#[tokio::test]
async fn a_delivery_bigger_than_a_batched_object_is_refused_and_leaves_nothing() {
    let stack = Api::start().await;
    let mut body = stack.destination_body("NDJSON", "GZIP", "batched/");
    body["batch"] = json!({"windowSeconds": 60, "maxObjectBytes": 5 * 1024 * 1024});
    let dest = stack.create_destination(&body).await;
    let big = "x".repeat(100 * 1024);
    let rows: Vec<Value> = (0..60).map(|i| json!({"n": i, "pad": big})).collect();
    let (s, b) = stack
        .post(
            "/api/v1/deliveries",
            &json!({
                "destinationId": dest,
                "jobId": "job-big",
                "partnerInventoryId": "INV-BIG",
                "completedAt": "2026-06-07T10:00:00Z",
                "rows": rows,
            }),
        )
        .await;
    assert_eq!(fields_of(s, &b, 422), ["rows"], "{b}");
    assert_eq!(leftovers(&stack).await, Vec::<String>::new());
    assert!(stack.redis_keys("destination:*:batch:*").await.is_empty());
}
