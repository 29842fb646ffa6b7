//! The OpenAPI document as a client gets it from the real `courier api`: served without a
//! token, every documented operation served (and no other method on its paths), and real
//! responses of the running API checked against the documented schemas, so that a field
//! added to a response but not to the document fails here.

mod common;

use std::collections::BTreeSet;

use common::{Stack, TOKEN};
use reqwest::Method;
use serde_json::{Value, json};

const DESTINATION_ID: &str = "dst_01JXQ5V3K8M2N7P4R6S9T0W1XY";
const DELIVERY_ID: &str = "dlv_01JXQ5W7ZB3C4D5E6F7G8H9JKM";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_served_and_real_responses_match_it() {
    let stack = Stack::start(0).await;

    // Served without a token, as JSON.
    let resp = stack
        .http
        .get(format!("{}/api/v1/openapi.json", stack.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let doc: Value = resp.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Courier control API");
    assert!(doc["paths"]["/api/v1/delivery-destinations/{id}/test"]["post"].is_object());
    let request = resolve(
        &doc,
        &doc["paths"]["/api/v1/delivery-destinations"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"],
    );
    let s3 = resolve(&doc, &request["properties"]["s3"]);
    let s3_props: BTreeSet<&str> = s3["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for p in [
        "bucket",
        "region",
        "accessKeyId",
        "secretAccessKey",
        "endpointUrl",
        "pathPrefix",
        "credentials",
    ] {
        assert!(
            s3_props.contains(p),
            "DestinationRequest.s3 lacks {p}: {s3_props:?}"
        );
    }
    assert_eq!(s3["properties"]["secretAccessKey"]["writeOnly"], true);

    // Every documented operation is served: without a token it is refused with 401, where an
    // unknown path would be 404. Every other method on a documented path is 405: the router
    // serves nothing the document does not describe.
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = concrete(path);
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            let documented = item.get(method.to_lowercase()).is_some();
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let (status, body) = stack.call(m, &concrete, None, None).await;
            if documented {
                operations += 1;
                assert_eq!(status, 401, "{method} {path}: {body}");
                assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{method} {path}");
            } else {
                assert_eq!(status, 405, "{method} {path} is served but not documented");
            }
        }
    }
    assert_eq!(operations, 11, "the API has 11 operations");

    // Real responses match their documented schemas.
    let body = stack.destination_body("CSV", "NONE", "x/");
    let (status, created) = stack.post("/api/v1/delivery-destinations", &body).await;
    assert_eq!(status, 201, "{created}");
    check(
        &doc,
        "post",
        "/api/v1/delivery-destinations",
        "201",
        &created,
    );
    let id = created["id"].as_str().unwrap().to_owned();

    let (status, read) = stack
        .get(&format!("/api/v1/delivery-destinations/{id}"))
        .await;
    assert_eq!(status, 200, "{read}");
    check(
        &doc,
        "get",
        "/api/v1/delivery-destinations/{id}",
        "200",
        &read,
    );
    assert!(
        read["s3"]["accessKeyId"].is_string(),
        "a masked key id is shown: {read}"
    );
    assert!(read["s3"]["endpointUrl"].is_string(), "{read}");

    let (status, updated) = stack
        .put(&format!("/api/v1/delivery-destinations/{id}"), &body)
        .await;
    assert_eq!(status, 200, "{updated}");
    check(
        &doc,
        "put",
        "/api/v1/delivery-destinations/{id}",
        "200",
        &updated,
    );

    let query = query_with_every_parameter(&doc, "/api/v1/delivery-destinations", &id, &id);
    let (status, page) = stack.get(&query).await;
    assert_eq!(status, 200, "{query}: {page}");
    check(&doc, "get", "/api/v1/delivery-destinations", "200", &page);

    // The connection test's report, against Garage, saved and unsaved.
    let (status, report) = stack
        .post(
            &format!("/api/v1/delivery-destinations/{id}/test"),
            &json!(null),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    check(
        &doc,
        "post",
        "/api/v1/delivery-destinations/{id}/test",
        "200",
        &report,
    );
    let mut wrong = body.clone();
    wrong["s3"]["bucket"] = "no-such-bucket".into();
    let (status, report) = stack
        .post("/api/v1/delivery-destinations/test", &wrong)
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ok"], false, "{report}");
    check(
        &doc,
        "post",
        "/api/v1/delivery-destinations/test",
        "200",
        &report,
    );

    // A delivery: accepted, its record, a page of records with every documented filter.
    let job = json!({
        "destinationId": id,
        "jobId": "job-1",
        "partnerInventoryId": "INV-1",
        "completedAt": "2026-06-07T10:00:00Z",
        "columns": ["hotel", "score"],
        "rows": [{"hotel": "A", "score": 1}]
    });
    let (status, accepted) = stack.post("/api/v1/deliveries", &job).await;
    assert_eq!(status, 202, "{accepted}");
    check(&doc, "post", "/api/v1/deliveries", "202", &accepted);
    let delivery = accepted["id"].as_str().unwrap().to_owned();
    let (status, record) = stack.get(&format!("/api/v1/deliveries/{delivery}")).await;
    assert_eq!(status, 200, "{record}");
    check(&doc, "get", "/api/v1/deliveries/{id}", "200", &record);
    let query = query_with_every_parameter(&doc, "/api/v1/deliveries", &id, &delivery);
    let (status, page) = stack.get(&query).await;
    assert_eq!(status, 200, "{query}: {page}");
    check(&doc, "get", "/api/v1/deliveries", "200", &page);

    // Errors have the documented body under each status.
    let (status, err) = stack
        .get(&format!("/api/v1/delivery-destinations/{DESTINATION_ID}"))
        .await;
    assert_eq!(status, 404, "{err}");
    check(
        &doc,
        "get",
        "/api/v1/delivery-destinations/{id}",
        "404",
        &err,
    );
    let mut invalid = body.clone();
    invalid["s3"]["pathPrefix"] = "no-slash".into();
    let (status, err) = stack.post("/api/v1/delivery-destinations", &invalid).await;
    assert_eq!(status, 422, "{err}");
    check(&doc, "post", "/api/v1/delivery-destinations", "422", &err);
    let (status, err) = stack
        .call(
            Method::POST,
            "/api/v1/deliveries",
            Some(TOKEN),
            Some(b"{nope".to_vec()),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    check(&doc, "post", "/api/v1/deliveries", "400", &err);
    let (status, err) = stack
        .post(
            &format!("/api/v1/deliveries/{delivery}/retry"),
            &json!(null),
        )
        .await;
    assert_eq!(status, 409, "{err}");
    check(&doc, "post", "/api/v1/deliveries/{id}/retry", "409", &err);
    let (status, err) = stack
        .delete(&format!("/api/v1/delivery-destinations/{id}"))
        .await;
    assert_eq!(status, 409, "a delivery is still queued: {err}");
    check(
        &doc,
        "delete",
        "/api/v1/delivery-destinations/{id}",
        "409",
        &err,
    );
    let (status, _) = stack
        .delete(&format!("/api/v1/delivery-destinations/{id}?force=true"))
        .await;
    assert_eq!(status, 204);
    assert!(
        doc["paths"]["/api/v1/delivery-destinations/{id}"]["delete"]["responses"]["204"]
            .is_object()
    );
}

/// `path` with its parameters filled in with ids of the right kind.
fn concrete(path: &str) -> String {
    let id = if path.starts_with("/api/v1/deliveries") {
        DELIVERY_ID
    } else {
        DESTINATION_ID
    };
    path.replace("{id}", id)
}

/// `path` with a valid value for every query parameter its GET documents, so that a
/// documented parameter the handler does not accept fails with 422.
fn query_with_every_parameter(doc: &Value, path: &str, destination: &str, cursor: &str) -> String {
    let mut pairs = Vec::new();
    for param in doc["paths"][path]["get"]["parameters"].as_array().unwrap() {
        if param["in"] != "query" {
            continue;
        }
        let name = param["name"].as_str().unwrap();
        let value = match name {
            "limit" => "10",
            "cursor" => cursor,
            "jobId" => "job-1",
            "destinationId" => destination,
            "status" => "QUEUED",
            "from" => "2000-01-01T00:00:00Z",
            "to" => "2100-01-01T00:00:00Z",
            other => panic!("GET {path} documents `{other}`; give this test a value for it"),
        };
        pairs.push(format!("{name}={value}"));
    }
    assert!(!pairs.is_empty(), "GET {path} documents no query parameter");
    format!("{path}?{}", pairs.join("&"))
}

/// Follows `schema`'s `$ref`, if any.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let target = doc
                .pointer(r.strip_prefix('#').expect("a local reference"))
                .unwrap_or_else(|| panic!("{r} does not resolve"));
            resolve(doc, target)
        }
        None => schema,
    }
}

/// Checks `value`, the body of a `status` response of `method path`, against the documented
/// schema: every key at every level is a documented property, every required one is there.
fn check(doc: &Value, method: &str, path: &str, status: &str, value: &Value) {
    let response = resolve(doc, &doc["paths"][path][method]["responses"][status]);
    assert!(
        response.is_object(),
        "{method} {path} documents no {status} response"
    );
    let schema = &response["content"]["application/json"]["schema"];
    let mut errors = Vec::new();
    conforms(doc, schema, value, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: the response does not match the document:\n{}\n{value:#}",
        errors.join("\n")
    );
}

fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if let Some(alternatives) = schema.get("oneOf").and_then(Value::as_array) {
        // `Option<T>`: null, or T.
        if value.is_null() {
            return;
        }
        for s in alternatives.iter().filter(|s| s["type"] != "null") {
            conforms(doc, s, value, at, errors);
        }
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let (Some(props), Some(object)) = (
        schema.get("properties").and_then(Value::as_object),
        value.as_object(),
    ) {
        for (key, v) in object {
            match props.get(key) {
                Some(s) => conforms(doc, s, v, &format!("{at}.{key}"), errors),
                None => errors.push(format!("{at}.{key} is not documented")),
            }
        }
        for required in schema["required"].as_array().into_iter().flatten() {
            let key = required.as_str().unwrap();
            if !object.contains_key(key) {
                errors.push(format!("{at}.{key} is documented as required but missing"));
            }
        }
    } else if value.is_object() && schema["type"] != "object" {
        errors.push(format!("{at}: an object where the document has {schema}"));
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, v) in array.iter().enumerate() {
            conforms(doc, items, v, &format!("{at}[{i}]"), errors);
        }
    }
}
