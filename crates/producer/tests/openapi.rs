//! The OpenAPI document (`GET /api/v1/openapi.json`), in process: its shape, and real
//! responses of the real router checked against it with the `jsonschema` crate, so that a
//! field added to a response but not to the document fails here.

mod common;

use std::collections::{BTreeSet, HashSet};

use axum::http::Method;
use axum::response::IntoResponse;
use chrono::Utc;
use common::schema::{assert_conforms, check, resolve, response_schema};
use common::{Api, TOKEN};
use courier_core::destination::Destination;
use courier_core::{DestinationId, TenantId};
use courier_producer::api::error::ApiError;
use courier_producer::api::openapi::{BEARER, openapi};
use courier_producer::wire::{self, DestinationRequest, DestinationView};
use courier_s3::probe::{ProbeError, ProbeReport, ProbeStep, ProbeStepName, StepOutcome};
use serde_json::{Value, json};

/// Every operation of the API. A route removed from, or added to, the router without
/// changing this list fails `operations_are_exactly_the_served_routes`.
const OPERATIONS: [(&str, &str); 13] = [
    ("get", "/api/v1/tenant"),
    ("post", "/api/v1/delivery-destinations"),
    ("get", "/api/v1/delivery-destinations"),
    ("get", "/api/v1/delivery-destinations/{id}"),
    ("put", "/api/v1/delivery-destinations/{id}"),
    ("delete", "/api/v1/delivery-destinations/{id}"),
    ("post", "/api/v1/delivery-destinations/{id}/test"),
    ("post", "/api/v1/delivery-destinations/test"),
    ("post", "/api/v1/deliveries"),
    ("get", "/api/v1/deliveries"),
    ("get", "/api/v1/deliveries/{id}"),
    ("post", "/api/v1/deliveries/{id}/retry"),
    ("get", "/api/v1/batches"),
];

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn external_id() -> courier_core::destination::ExternalId {
    courier_core::destination::ExternalId::parse("Qm9bT4x7Kp2Lw8Zr5Nc1Vd6Hs3Jf0Yga").unwrap()
}

fn doc() -> Value {
    serde_json::to_value(openapi()).unwrap()
}

/// Every `(method, path, operation)` of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                ops.push((method.clone(), path.clone(), op.clone()));
            }
        }
    }
    ops
}

fn every_ref(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => every_ref(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| every_ref(v, out)),
        _ => {}
    }
}

#[test]
fn the_document_is_openapi_3_with_title_and_version() {
    let doc = doc();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Courier control API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        doc["info"]["description"]
            .as_str()
            .unwrap()
            .contains("Bearer")
    );
}

#[test]
fn operations_are_exactly_the_served_routes() {
    // `routes!` registers each handler under its documented method and path, so the
    // document's operations are the router's routes; this pins them.
    let documented: BTreeSet<(String, String)> = operations(&doc())
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    let expected: BTreeSet<(String, String)> = OPERATIONS
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected);
}

#[test]
fn every_operation_requires_the_bearer_token() {
    let doc = doc();
    let scheme = &doc["components"]["securitySchemes"][BEARER];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    for (method, path, op) in operations(&doc) {
        assert_eq!(
            op["security"],
            json!([{BEARER: []}]),
            "{method} {path} must require the bearer token"
        );
        assert!(
            op["responses"]["401"].is_object(),
            "{method} {path} must document 401"
        );
    }
}

#[test]
fn every_reference_resolves() {
    let doc = doc();
    let mut refs = Vec::new();
    every_ref(&doc, &mut refs);
    assert!(refs.iter().any(|r| r.starts_with("#/components/schemas/")));
    assert!(
        refs.iter()
            .any(|r| r.starts_with("#/components/responses/"))
    );
    for r in refs {
        resolve(&doc, &r);
    }
}

#[test]
fn operations_are_named_and_declare_their_path_parameters() {
    let doc = doc();
    let mut ids = HashSet::new();
    for (method, path, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap().to_owned();
        assert!(ids.insert(id.clone()), "operationId {id} is used twice");
        assert!(op["summary"].is_string(), "{method} {path} has no summary");
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(p["required"], true);
                p["name"].as_str().unwrap()
            })
            .collect();
        let in_path: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        assert_eq!(declared, in_path, "{method} {path}");
    }
}

#[test]
fn schemas_use_the_wire_names_and_keep_the_docs() {
    let doc = doc();
    let schemas = &doc["components"]["schemas"];
    let request = &schemas["DestinationRequest"];
    let props: Vec<&String> = request["properties"].as_object().unwrap().keys().collect();
    assert_eq!(
        props,
        [
            "type",
            "name",
            "s3",
            "format",
            "compression",
            "csv",
            "parquet",
            "status",
            "batch"
        ]
    );
    assert_eq!(request["additionalProperties"], false);
    let batch = &schemas["BatchRequest"]["properties"];
    assert_eq!(batch["windowSeconds"]["minimum"], 5);
    assert_eq!(batch["windowSeconds"]["maximum"], 3600);
    assert_eq!(batch["maxObjectBytes"]["minimum"], 5 * 1024 * 1024);
    assert!(
        schemas["DeliveryStatus"]["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("BATCHED"))
    );
    let s3 = &schemas["S3Request"];
    let secret = &s3["properties"]["secretAccessKey"];
    assert_eq!(secret["writeOnly"], true);
    assert!(secret["type"].to_string().contains("string"), "{secret}");
    assert_eq!(
        s3["required"],
        json!(["bucket", "region"]),
        "only bucket and region are required"
    );
    assert_eq!(
        schemas["Format"]["enum"],
        json!(["CSV", "JSON", "NDJSON", "XLSX", "PARQUET"])
    );
    assert_eq!(schemas["Compression"]["enum"], json!(["NONE", "GZIP"]));
    assert_eq!(
        schemas["ParquetCompression"]["enum"],
        json!(["ZSTD", "SNAPPY", "GZIP", "NONE"])
    );
    assert_eq!(
        schemas["ColumnType"]["enum"],
        json!([
            "STRING",
            "INT64",
            "DOUBLE",
            "BOOLEAN",
            "TIMESTAMP",
            "DATE",
            "JSON"
        ])
    );
    assert_eq!(schemas["ParquetRequest"]["additionalProperties"], false);
    assert_eq!(schemas["CsvRequest"]["additionalProperties"], false);
    let neutralize = &schemas["CsvRequest"]["properties"]["neutralizeFormulas"];
    assert_eq!(neutralize["type"], "boolean", "{neutralize}");
    assert!(
        neutralize["description"]
            .as_str()
            .unwrap()
            .contains("CSV injection"),
        "{neutralize}"
    );
    assert_eq!(
        schemas["CsvView"]["properties"]["neutralizeFormulas"]["type"],
        "boolean"
    );
    // columnTypes: a map from column name to a ColumnType, on the delivery and the destination.
    for (schema, ty) in [
        (&schemas["JobCompletedRequest"], json!(["object", "null"])),
        (&schemas["ParquetRequest"], json!(["object", "null"])),
        (&schemas["ParquetView"], json!("object")),
    ] {
        let column_types = &schema["properties"]["columnTypes"];
        assert_eq!(column_types["type"], ty, "{column_types}");
        assert_eq!(
            column_types["additionalProperties"]["$ref"], "#/components/schemas/ColumnType",
            "{column_types}"
        );
    }
    assert_eq!(
        schemas["CredentialsMode"]["enum"],
        json!(["STATIC", "NONE", "DEFAULT_CHAIN", "ROLE"])
    );
    assert!(
        schemas["DeliveryError"]["properties"]["code"]["description"]
            .as_str()
            .unwrap()
            .contains("AccessDenied"),
        "field docs become descriptions"
    );
    assert!(
        schemas["DeliveryRecord"]["properties"]
            .get("tenant")
            .is_none(),
        "the tenant is never serialized"
    );
    assert_eq!(
        schemas["DeliveryRecord"]["properties"]["id"]["type"],
        "string"
    );
    let rows = &schemas["JobCompletedRequest"]["properties"]["rows"];
    assert_eq!(
        rows["type"],
        serde_json::json!(["array", "null"]),
        "rows or rowsUrl"
    );
    assert_eq!(rows["items"]["type"], "object");
    let rows_url = &schemas["JobCompletedRequest"]["properties"]["rowsUrl"];
    assert_eq!(rows_url["type"], serde_json::json!(["string", "null"]));
}

fn full_probe_report() -> ProbeReport {
    let error = ProbeError {
        code: "AccessDenied".into(),
        message: "Access Denied".into(),
        hint: "Grant s3:DeleteObject.".into(),
        http_status: Some(403),
    };
    ProbeReport {
        ok: false,
        summary: "Connection failed at DeleteObject: AccessDenied.".into(),
        steps: vec![
            ProbeStep {
                step: ProbeStepName::HeadBucket,
                outcome: StepOutcome::Warning,
                duration_ms: 3,
                key: None,
                error: Some(error.clone()),
            },
            ProbeStep {
                step: ProbeStepName::PutObject,
                outcome: StepOutcome::Passed,
                duration_ms: 4,
                key: Some("incoming/.courier-connection-test-x.txt".into()),
                error: None,
            },
            ProbeStep {
                step: ProbeStepName::DeleteObject,
                outcome: StepOutcome::Failed,
                duration_ms: 5,
                key: Some("incoming/.courier-connection-test-x.txt".into()),
                error: Some(error),
            },
        ],
    }
}

/// The property names of `schema`'s component.
fn properties(doc: &Value, schema: &str) -> BTreeSet<String> {
    doc["components"]["schemas"][schema]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{schema} has no properties"))
        .keys()
        .cloned()
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn the_probe_report_schema_matches_a_real_report() {
    let doc = doc();
    let report = serde_json::to_value(wire::ProbeReport::from(full_probe_report())).unwrap();
    for (method, path) in [
        ("post", "/api/v1/delivery-destinations/{id}/test"),
        ("post", "/api/v1/delivery-destinations/test"),
    ] {
        assert_conforms(&doc, &response_schema(&doc, method, path, "200"), &report);
    }
    // Both ways: every documented property is one a report has.
    assert_eq!(keys(&report), properties(&doc, "ProbeReport"));
    assert_eq!(keys(&report["steps"][2]), properties(&doc, "ProbeStep"));
    assert_eq!(
        keys(&report["steps"][2]["error"]),
        properties(&doc, "ProbeError")
    );
    let names: Vec<Value> = ProbeStepName::ALL
        .iter()
        .map(|n| serde_json::to_value(n).unwrap())
        .collect();
    assert_eq!(
        doc["components"]["schemas"]["ProbeStepName"]["enum"],
        json!(names)
    );
    let outcomes: Vec<Value> = [
        StepOutcome::Passed,
        StepOutcome::Failed,
        StepOutcome::Warning,
        StepOutcome::Skipped,
    ]
    .into_iter()
    .map(|o| {
        // A new outcome fails to compile here; add it to the list and the schema.
        match o {
            StepOutcome::Passed
            | StepOutcome::Failed
            | StepOutcome::Warning
            | StepOutcome::Skipped => serde_json::to_value(o).unwrap(),
        }
    })
    .collect();
    assert_eq!(
        doc["components"]["schemas"]["StepOutcome"]["enum"],
        json!(outcomes)
    );
}

#[test]
fn a_destination_conforms_to_its_schema() {
    let doc = doc();
    let spec = serde_json::from_value::<DestinationRequest>(json!({
        "type": "S3",
        "name": "Production",
        "s3": {
            "bucket": "acme-results",
            "region": "auto",
            "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
            "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "endpointUrl": "https://abc.r2.cloudflarestorage.com",
            "pathPrefix": "incoming/"
        },
        "format": "XLSX",
        "compression": "GZIP",
        "status": "PAUSED"
    }))
    .unwrap()
    .validate(&external_id())
    .unwrap();
    let dest = Destination {
        id: DestinationId::generate(),
        tenant: TenantId::parse("acme").unwrap(),
        spec,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    };
    let failing = courier_store::DestinationHealth {
        consecutive_failures: 3,
        failing_since: Some(Utc::now()),
        last_error_code: Some("AccessDenied".into()),
        last_error_message: Some("Access Denied".into()),
    };
    let view = serde_json::to_value(DestinationView::new(&dest, failing, &external_id())).unwrap();
    // A role destination with every write option shows the other half of `S3View`.
    let role_spec = serde_json::from_value::<DestinationRequest>(json!({
        "type": "S3",
        "name": "Role",
        "s3": {
            "bucket": "acme-results",
            "region": "eu-west-1",
            "roleArn": "arn:aws:iam::123456789012:role/courier",
            "serverSideEncryption": "aws:kms",
            "kmsKeyId": "alias/courier",
            "storageClass": "STANDARD_IA",
            "tags": {"team": "data"},
            "cannedAcl": "bucket-owner-full-control",
            "expectedBucketOwner": "123456789012"
        }
    }))
    .unwrap()
    .validate(&external_id())
    .unwrap();
    let role_dest = Destination {
        spec: role_spec,
        ..dest.clone()
    };
    let role_view = serde_json::to_value(DestinationView::new(
        &role_dest,
        Default::default(),
        &external_id(),
    ))
    .unwrap();
    assert_eq!(role_view["s3"]["credentials"], "ROLE");
    assert_eq!(role_view["s3"]["externalId"], external_id().as_str());
    assert_eq!(view["s3"]["externalId"], external_id().as_str());
    let shown: BTreeSet<String> = keys(&view["s3"])
        .union(&keys(&role_view["s3"]))
        .cloned()
        .collect();
    assert_eq!(shown, properties(&doc, "S3View"));
    for (method, path, status) in [
        ("post", "/api/v1/delivery-destinations", "201"),
        ("get", "/api/v1/delivery-destinations/{id}", "200"),
    ] {
        assert_conforms(
            &doc,
            &response_schema(&doc, method, path, status),
            &role_view,
        );
    }
    for (method, path, status) in [
        ("post", "/api/v1/delivery-destinations", "201"),
        ("get", "/api/v1/delivery-destinations/{id}", "200"),
        ("put", "/api/v1/delivery-destinations/{id}", "200"),
    ] {
        assert_conforms(&doc, &response_schema(&doc, method, path, status), &view);
    }
    let page = json!({"items": [view], "nextCursor": null});
    assert_conforms(
        &doc,
        &response_schema(&doc, "get", "/api/v1/delivery-destinations", "200"),
        &page,
    );
}

#[test]
fn a_parquet_destination_conforms_to_its_schema() {
    let doc = doc();
    let spec = serde_json::from_value::<DestinationRequest>(json!({
        "type": "S3",
        "name": "Warehouse",
        "s3": {"bucket": "acme-results", "region": "eu-west-1"},
        "format": "PARQUET",
        "parquet": {"compression": "SNAPPY", "columnTypes": {"at": "TIMESTAMP", "n": "INT64"}}
    }))
    .unwrap()
    .validate(&external_id())
    .unwrap();
    let dest = Destination {
        id: DestinationId::generate(),
        tenant: TenantId::parse("acme").unwrap(),
        spec,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    };
    let view = serde_json::to_value(DestinationView::new(
        &dest,
        Default::default(),
        &external_id(),
    ))
    .unwrap();
    assert_eq!(
        view["parquet"],
        json!({"compression": "SNAPPY", "columnTypes": {"at": "TIMESTAMP", "n": "INT64"}})
    );
    // Both ways: every documented property is one a Parquet destination shows.
    assert_eq!(keys(&view["parquet"]), properties(&doc, "ParquetView"));
    let mut shown = keys(&view);
    shown.insert("csv".into());
    shown.insert("batch".into());
    assert_eq!(
        shown,
        properties(&doc, "DestinationView"),
        "a Parquet destination shows every property but CSV's and batching's settings"
    );
    for (method, path, status) in [
        ("post", "/api/v1/delivery-destinations", "201"),
        ("get", "/api/v1/delivery-destinations/{id}", "200"),
        ("put", "/api/v1/delivery-destinations/{id}", "200"),
    ] {
        assert_conforms(&doc, &response_schema(&doc, method, path, status), &view);
    }
}

#[test]
fn a_csv_destination_shows_its_csv_settings_as_documented() {
    let doc = doc();
    for (csv, shown) in [
        (
            json!({"neutralizeFormulas": true}),
            json!({"neutralizeFormulas": true}),
        ),
        (Value::Null, json!({"neutralizeFormulas": false})),
    ] {
        let mut body = json!({
            "type": "S3",
            "name": "Spreadsheets",
            "s3": {"bucket": "acme-results", "region": "eu-west-1"},
            "format": "CSV",
        });
        if !csv.is_null() {
            body["csv"] = csv;
        }
        let spec = serde_json::from_value::<DestinationRequest>(body)
            .unwrap()
            .validate(&external_id())
            .unwrap();
        let dest = Destination {
            id: DestinationId::generate(),
            tenant: TenantId::parse("acme").unwrap(),
            spec,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let view = serde_json::to_value(DestinationView::new(
            &dest,
            Default::default(),
            &external_id(),
        ))
        .unwrap();
        assert_eq!(view["csv"], shown);
        assert_eq!(keys(&view["csv"]), properties(&doc, "CsvView"));
        assert!(view.get("parquet").is_none(), "{view}");
        for (method, path, status) in [
            ("post", "/api/v1/delivery-destinations", "201"),
            ("get", "/api/v1/delivery-destinations/{id}", "200"),
            ("put", "/api/v1/delivery-destinations/{id}", "200"),
        ] {
            assert_conforms(&doc, &response_schema(&doc, method, path, status), &view);
        }
    }
}

#[test]
fn a_delivery_record_conforms_to_its_schema() {
    let doc = doc();
    let now = Utc::now();
    let record: courier_core::delivery::DeliveryRecord = serde_json::from_value(json!({
        "id": courier_core::DeliveryId::generate(),
        "tenant": "acme",
        "destinationId": DestinationId::generate(),
        "jobId": "job-42",
        "partnerInventoryId": "INV-1",
        "completedAt": now,
        "status": "FAILED",
        "format": "CSV",
        "compression": "GZIP",
        "rows": 2,
        "bucket": "acme-results",
        "key": "incoming/mapping_results_INV-1_2026-06-07.csv.gz",
        "bytes": 120,
        "etag": "\"abc\"",
        "attempts": [{
            "number": 1,
            "worker": "w1",
            "startedAt": now,
            "durationMs": 12,
            "outcome": "FAILED",
            "errorCode": "AccessDenied",
            "errorMessage": "Access Denied"
        }],
        "error": {"code": "AccessDenied", "message": "Access Denied"},
        "timings": {"renderMs": 1, "uploadMs": 2, "totalMs": 3},
        "enqueuedAt": now,
        "deliveredAt": now,
        "updatedAt": now
    }))
    .unwrap();
    let record = serde_json::to_value(wire::DeliveryBody::from(record)).unwrap();
    assert!(record.get("tenant").is_none(), "the tenant is never shown");
    assert_conforms(
        &doc,
        &response_schema(&doc, "get", "/api/v1/deliveries/{id}", "200"),
        &record,
    );
    let page = json!({"items": [record], "nextCursor": "dlv_01JXQ5W7ZB3C4D5E6F7G8H9JKM"});
    assert_conforms(
        &doc,
        &response_schema(&doc, "get", "/api/v1/deliveries", "200"),
        &page,
    );
    let accepted = json!({"id": "dlv_01JXQ5W7ZB3C4D5E6F7G8H9JKM", "status": "QUEUED"});
    for path in ["/api/v1/deliveries", "/api/v1/deliveries/{id}/retry"] {
        assert_conforms(&doc, &response_schema(&doc, "post", path, "202"), &accepted);
    }
}

#[test]
fn the_checker_refuses_what_the_document_does_not_say() {
    // The validator is strict: an undocumented property, a value outside an enum, a wrong
    // type or a missing required property is a problem; a documented null is not.
    let doc = doc();
    let schema = response_schema(&doc, "get", "/api/v1/deliveries", "200");
    let ok = json!({"items": [], "nextCursor": null});
    assert_eq!(
        common::schema::problems(&doc, &schema, &ok),
        Vec::<String>::new()
    );
    for bad in [
        json!({"items": [], "nextCursor": null, "extra": 1}),
        json!({"items": [{"status": "DONE"}], "nextCursor": null}),
        json!({"items": 5, "nextCursor": null}),
        json!({"items": []}),
    ] {
        assert!(
            !common::schema::problems(&doc, &schema, &bad).is_empty(),
            "{bad} passed"
        );
    }
}

#[tokio::test]
async fn error_bodies_conform_to_every_documented_error_response() {
    let doc = doc();
    let mut invalid = courier_core::ValidationErrors::default();
    invalid.push("s3.bucket", "bad");
    let body = |e: ApiError| async move {
        let bytes = axum::body::to_bytes(e.into_response().into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()
    };
    let with_fields = body(ApiError::invalid(invalid)).await;
    let without = body(ApiError::unauthorized()).await;
    assert!(without["error"].get("fields").is_none());
    for (method, path, op) in operations(&doc) {
        for (status, _) in op["responses"].as_object().unwrap() {
            if status.starts_with('4') || status.starts_with('5') {
                let schema = response_schema(&doc, &method, &path, status);
                assert_conforms(&doc, &schema, &with_fields);
                assert_conforms(&doc, &schema, &without);
            }
        }
    }
}

#[test]
fn examples_in_the_document_conform_too() {
    let doc = doc();
    for (_, response) in doc["components"]["responses"].as_object().unwrap() {
        let content = &response["content"]["application/json"];
        let examples: Vec<&Value> = content
            .get("example")
            .into_iter()
            .chain(
                content["examples"]
                    .as_object()
                    .into_iter()
                    .flat_map(|m| m.values().map(|e| &e["value"])),
            )
            .collect();
        assert!(!examples.is_empty(), "{response}");
        for example in examples {
            assert_conforms(&doc, &content["schema"], example);
        }
    }
}

const DESTINATION_ID: &str = "dst_01JXQ5V3K8M2N7P4R6S9T0W1XY";
const DELIVERY_ID: &str = "dlv_01JXQ5W7ZB3C4D5E6F7G8H9JKM";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_served_and_real_responses_match_it() {
    let stack = Api::with_garage().await;

    // Served without a token, as JSON.
    let (status, headers, doc) = stack
        .call_full(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(status, 200);
    let content_type = headers["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Courier control API");
    assert!(doc["paths"]["/api/v1/delivery-destinations/{id}/test"]["post"].is_object());
    let request = resolve(
        &doc,
        doc["paths"]["/api/v1/delivery-destinations"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"]
            .as_str()
            .unwrap(),
    );
    let s3 = resolve(&doc, request["properties"]["s3"]["$ref"].as_str().unwrap());
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
    assert_eq!(operations, 13, "the API has 13 operations");

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

    // A Parquet destination shows its `parquet` settings, as documented.
    let mut parquet = stack.destination_body("PARQUET", "NONE", "pq/");
    parquet["parquet"] = json!({"compression": "GZIP", "columnTypes": {"score": "DOUBLE"}});
    let (status, created_pq) = stack.post("/api/v1/delivery-destinations", &parquet).await;
    assert_eq!(status, 201, "{created_pq}");
    assert_eq!(
        created_pq["parquet"],
        json!({"compression": "GZIP", "columnTypes": {"score": "DOUBLE"}})
    );
    check(
        &doc,
        "post",
        "/api/v1/delivery-destinations",
        "201",
        &created_pq,
    );

    // A batched destination, a delivery appended to its window, and its (still empty)
    // list of objects, as documented.
    let mut batched = stack.destination_body("NDJSON", "GZIP", "b/");
    batched["batch"] = json!({"windowSeconds": 3600});
    let (status, created_b) = stack.post("/api/v1/delivery-destinations", &batched).await;
    assert_eq!(status, 201, "{created_b}");
    assert_eq!(
        created_b["batch"],
        json!({"windowSeconds": 3600, "maxObjectBytes": 104857600})
    );
    check(
        &doc,
        "post",
        "/api/v1/delivery-destinations",
        "201",
        &created_b,
    );
    let batched_id = created_b["id"].as_str().unwrap().to_owned();
    let job = json!({
        "destinationId": batched_id,
        "jobId": "job-b",
        "partnerInventoryId": "INV-B",
        "completedAt": "2026-06-07T10:00:00Z",
        "rows": [{"a": 1}]
    });
    let (status, accepted) = stack.post("/api/v1/deliveries", &job).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "BATCHED");
    check(&doc, "post", "/api/v1/deliveries", "202", &accepted);
    let (status, record) = stack
        .get(&format!(
            "/api/v1/deliveries/{}",
            accepted["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "{record}");
    assert!(record["batch"]["windowStart"].is_string(), "{record}");
    check(&doc, "get", "/api/v1/deliveries/{id}", "200", &record);
    let query = query_with_every_parameter(&doc, "/api/v1/batches", &batched_id, "0");
    let (status, page) = stack.get(&query).await;
    assert_eq!(status, 200, "{query}: {page}");
    assert_eq!(page, json!({"items": [], "nextCursor": null}));
    check(&doc, "get", "/api/v1/batches", "200", &page);

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
