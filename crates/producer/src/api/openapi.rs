//! The OpenAPI description of the control API, served without a token at
//! `GET /api/v1/openapi.json`.
//!
//! It is generated from the code, so it cannot drift from what is served:
//!
//! - every handler carries a `#[utoipa::path]` with its method, path, parameters, body and
//!   responses, and [`utoipa_axum::routes!`] registers the handler under exactly that method
//!   and path: the router is built from the operations, so a route cannot be served without
//!   being documented, nor documented without being served;
//! - request and response types derive `ToSchema`, which reads their serde attributes, so the
//!   documented properties are the serialized ones, with the types' doc comments as
//!   descriptions;
//! - the one response type defined in another crate that can't derive it here,
//!   `courier_s3::probe::ProbeReport`, is described by [`ProbeReportSchema`], and a test
//!   checks a fully populated report against it field by field.
//!
//! Error responses are shared components (`#/components/responses/NotFound`, …), all with
//! the [`ErrorBody`] schema.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse, ToSchema};

use super::error::ErrorBody;

/// Where the document is served.
pub const PATH: &str = "/api/v1/openapi.json";

/// The name of the bearer-token security scheme every operation requires.
pub const BEARER: &str = "bearer";

/// The document's root: title, description, tags, the security scheme and the shared error
/// responses. The operations are added by the routers ([`super::router`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Courier control API",
        version = env!("CARGO_PKG_VERSION"),
        description = "Courier delivers the result files of finished jobs into customers' S3 \
buckets (AWS S3 or any S3-compatible store).

Customers manage their **delivery destinations** (bucket, region, credentials, path prefix, \
file format, compression) and test their connection; upstream jobs announce **completed jobs**, \
which Courier queues and delivers, recording every attempt.

Every operation needs `Authorization: Bearer <token>`. Each token belongs to one tenant, and a \
tenant sees only its own destinations and deliveries: another tenant's id reads as 404.

Every refusal is a 4xx or 503 whose body is `{\"error\": {\"code\", \"message\", \"fields\": \
[{\"field\", \"message\"}]}}`; `fields` names each field at fault of a `VALIDATION_FAILED` \
request, and all of them are reported at once.

Ids are a type prefix and a ULID (`dst_…`, `dlv_…`). Lists return a page of `items` and a \
`nextCursor` to pass as `cursor` (null on the last page); `limit` is 1 to 500 (default 50). \
Unknown query parameters and unknown body fields are refused."
    ),
    modifiers(&BearerAuth),
    components(
        schemas(ErrorBody),
        responses(
            BadRequest,
            Unauthorized,
            NotFound,
            DestinationBusy,
            NotRetryable,
            PayloadTooLarge,
            ValidationFailed,
            Unavailable
        )
    ),
    tags(
        (name = "destinations", description = "A customer's delivery destinations: where, in which format, with which credentials."),
        (name = "deliveries", description = "Completed jobs announced for delivery, and the record of each delivery."),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme.
#[derive(Debug)]
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token from the operator's `COURIER_API_TOKENS`; each token \
                         belongs to exactly one tenant.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The whole document: [`ApiDoc`] plus every operation of the routers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    super::routes().into_openapi()
}

/// `GET /api/v1/openapi.json`: `doc`, rendered once. No token needed.
pub(super) fn handler(
    doc: &utoipa::openapi::OpenApi,
) -> axum::routing::MethodRouter<super::AppState> {
    let json = axum::body::Bytes::from(
        doc.to_pretty_json()
            .expect("an OpenAPI document serializes"),
    );
    axum::routing::get(move || {
        let json = json.clone();
        async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                json,
            )
        }
    })
}

// --- Error responses ----------------------------------------------------------------------

/// The body is not valid JSON (`MALFORMED_JSON`) or could not be read (`BAD_REQUEST`).
#[derive(Debug, ToResponse)]
#[response(example = json!({"error": {
    "code": "MALFORMED_JSON",
    "message": "the body is not valid JSON: key must be a string at line 1 column 2"
}}))]
pub struct BadRequest(pub ErrorBody);

/// No `Authorization: Bearer <token>` header, or a token that is not known (`UNAUTHORIZED`).
#[derive(Debug, ToResponse)]
#[response(
    headers(("WWW-Authenticate" = String, description = "`Bearer`")),
    example = json!({"error": {
        "code": "UNAUTHORIZED",
        "message": "a valid `Authorization: Bearer <token>` header is required"
    }})
)]
pub struct Unauthorized(pub ErrorBody);

/// No such destination or delivery for the caller's tenant (`NOT_FOUND`); another tenant's
/// ids read the same.
#[derive(Debug, ToResponse)]
#[response(example = json!({"error": {
    "code": "NOT_FOUND",
    "message": "destination `dst_01JXQ5V3K8M2N7P4R6S9T0W1XY` does not exist"
}}))]
pub struct NotFound(pub ErrorBody);

/// Deliveries to this destination are still waiting (`DESTINATION_HAS_PENDING_DELIVERIES`):
/// delete again with `?force=true` to fail them, or wait until they are delivered.
#[derive(Debug, ToResponse)]
#[response(example = json!({"error": {
    "code": "DESTINATION_HAS_PENDING_DELIVERIES",
    "message": "3 deliveries to this destination are still waiting; delete again with ?force=true to fail them, or wait until they are delivered"
}}))]
pub struct DestinationBusy(pub ErrorBody);

/// Only a `FAILED` delivery can be retried (`NOT_FAILED`), and only while its task is still
/// kept (`TASK_EXPIRED`: enqueue the job again).
#[derive(Debug, ToResponse)]
#[response(examples(
    ("NOT_FAILED" = (value = json!({"error": {
        "code": "NOT_FAILED",
        "message": "only a FAILED delivery can be retried; this one is DELIVERED"
    }}))),
    ("TASK_EXPIRED" = (value = json!({"error": {
        "code": "TASK_EXPIRED",
        "message": "the task of this delivery is no longer kept; enqueue the job again"
    }}))),
))]
pub struct NotRetryable(pub ErrorBody);

/// The body is larger than the API accepts (`PAYLOAD_TOO_LARGE`; the operator's
/// `COURIER_API_MAX_BODY_BYTES`, 8 MiB by default).
#[derive(Debug, ToResponse)]
#[response(example = json!({"error": {
    "code": "PAYLOAD_TOO_LARGE",
    "message": "Failed to buffer the request body: length limit exceeded"
}}))]
pub struct PayloadTooLarge(pub ErrorBody);

/// The request is well-formed JSON but invalid (`VALIDATION_FAILED`): a missing, unknown or
/// mistyped field, a value that breaks a rule, or a bad query parameter. `fields` names each
/// one.
#[derive(Debug, ToResponse)]
#[response(example = json!({"error": {
    "code": "VALIDATION_FAILED",
    "message": "the request is invalid: s3.bucket: bucket `Bad_Bucket` is not a valid S3 bucket name: only lowercase letters, digits, `.` and `-` are allowed",
    "fields": [{
        "field": "s3.bucket",
        "message": "bucket `Bad_Bucket` is not a valid S3 bucket name: only lowercase letters, digits, `.` and `-` are allowed"
    }]
}}))]
pub struct ValidationFailed(pub ErrorBody);

/// Courier's storage is unavailable (`UNAVAILABLE`); nothing was saved, retry later.
#[derive(Debug, ToResponse)]
#[response(example = json!({"error": {
    "code": "UNAVAILABLE",
    "message": "Courier's storage is unavailable; nothing was saved, retry later"
}}))]
pub struct Unavailable(pub ErrorBody);

// --- The connection test's report ---------------------------------------------------------
//
// `courier_s3::probe::ProbeReport` lives in a crate without utoipa, and neither the trait nor
// the type is this crate's, so the report is described by these types; the test
// `the_probe_report_schema_matches_a_real_report` keeps them equal.

/// The result of a connection test: HeadBucket, PutObject of a small probe object under the
/// path prefix, DeleteObject of it.
#[derive(Debug, ToSchema)]
#[schema(as = ProbeReport)]
#[serde(rename_all = "camelCase")]
pub struct ProbeReportSchema {
    /// True when Courier can deliver: PutObject and DeleteObject passed, HeadBucket passed
    /// or warned.
    pub ok: bool,
    /// One plain sentence.
    pub summary: String,
    /// Always the three steps, in order.
    pub steps: Vec<ProbeStepSchema>,
}

/// One step of the report.
#[derive(Debug, ToSchema)]
#[schema(as = ProbeStep)]
#[serde(rename_all = "camelCase")]
pub struct ProbeStepSchema {
    pub step: ProbeStepNameSchema,
    pub outcome: StepOutcomeSchema,
    pub duration_ms: u64,
    /// The probe object's key, for the steps that used it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ProbeErrorSchema>,
}

/// One step of the connection test.
#[derive(Debug, ToSchema)]
#[schema(as = ProbeStepName)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProbeStepNameSchema {
    HeadBucket,
    PutObject,
    DeleteObject,
}

/// How one step went: `PASSED`, `FAILED`, `WARNING` (refused in a way that does not stop
/// deliveries: HeadBucket without `s3:ListBucket`) or `SKIPPED` (not run, because an earlier
/// step showed it cannot pass).
#[derive(Debug, ToSchema)]
#[schema(as = StepOutcome)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepOutcomeSchema {
    Passed,
    Failed,
    Warning,
    Skipped,
}

/// Why a step failed or warned, and what to do about it.
#[derive(Debug, ToSchema)]
#[schema(as = ProbeError)]
#[serde(rename_all = "camelCase")]
pub struct ProbeErrorSchema {
    /// The store's error code, or Courier's name for a failure without an answer
    /// (`Timeout`, `ConnectionFailed`, …).
    pub code: String,
    pub message: String,
    /// Plain-words advice.
    pub hint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};

    use axum::response::IntoResponse;
    use chrono::Utc;
    use courier_core::destination::{Destination, DestinationRequest};
    use courier_core::{DestinationId, TenantId};
    use courier_s3::probe::{ProbeError, ProbeReport, ProbeStep, ProbeStepName, StepOutcome};
    use serde_json::{Value, json};

    use super::*;
    use crate::api::destinations::DestinationView;
    use crate::api::error::ApiError;

    /// Every operation of the API. A route removed from, or added to, the router without
    /// changing this list fails `operations_are_exactly_the_served_routes`.
    const OPERATIONS: [(&str, &str); 11] = [
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
    ];

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

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

    fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{reference} is not a local reference"));
        doc.pointer(pointer)
            .unwrap_or_else(|| panic!("{reference} does not resolve"))
    }

    /// The JSON schema of `status`'s body of the operation `method path`.
    fn response_schema<'a>(doc: &'a Value, method: &str, path: &str, status: &str) -> &'a Value {
        let mut response = &doc["paths"][path][method]["responses"][status];
        if let Some(r) = response.get("$ref") {
            response = resolve(doc, r.as_str().unwrap());
        }
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {path} {status} has no JSON body"
        );
        schema
    }

    /// Checks `value` against `schema` strictly: no property that is not documented, every
    /// required one present, types, enums and date-times as documented.
    fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        if let Some(r) = schema.get("$ref") {
            return conforms(doc, resolve(doc, r.as_str().unwrap()), value, at, errors);
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for s in all {
                conforms(doc, s, value, at, errors);
            }
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(alternatives) = schema.get(key).and_then(Value::as_array) {
                let fits = alternatives.iter().any(|s| {
                    let mut e = Vec::new();
                    conforms(doc, s, value, at, &mut e);
                    e.is_empty()
                });
                if !fits {
                    errors.push(format!("{at}: {value} fits none of {key} {schema}"));
                }
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
        if let Some(ty) = schema.get("type") {
            let types: Vec<&str> = match ty {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            let actual = match value {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            let ok = types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
            if !ok {
                errors.push(format!(
                    "{at}: {value} is {actual}, documented as {types:?}"
                ));
                return;
            }
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time")
            && let Some(s) = value.as_str()
            && chrono::DateTime::parse_from_rfc3339(s).is_err()
        {
            errors.push(format!("{at}: {s} is not a date-time"));
        }
        if let (Some(props), Some(object)) = (
            schema.get("properties").and_then(Value::as_object),
            value.as_object(),
        ) {
            let extra_allowed = schema
                .get("additionalProperties")
                .is_some_and(|a| a != &Value::Bool(false));
            for (key, v) in object {
                match props.get(key) {
                    Some(s) => conforms(doc, s, v, &format!("{at}.{key}"), errors),
                    None if extra_allowed => {}
                    None => errors.push(format!("{at}.{key} is not documented")),
                }
            }
            for required in schema["required"].as_array().into_iter().flatten() {
                let key = required.as_str().unwrap();
                if !object.contains_key(key) {
                    errors.push(format!("{at}.{key} is required but missing"));
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (i, v) in array.iter().enumerate() {
                conforms(doc, items, v, &format!("{at}[{i}]"), errors);
            }
        }
    }

    fn assert_conforms(doc: &Value, schema: &Value, value: &Value) {
        let mut errors = Vec::new();
        conforms(doc, schema, value, "$", &mut errors);
        assert!(errors.is_empty(), "{value:#}\n{}", errors.join("\n"));
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
                "parquet",
                "status"
            ]
        );
        assert_eq!(request["additionalProperties"], false);
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
        assert_eq!(schemas["Compression"]["enum"], json!(["NONE", "GZIP"]));
        assert_eq!(
            schemas["CredentialsMode"]["enum"],
            json!(["STATIC", "NONE", "DEFAULT_CHAIN"])
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
        let report = serde_json::to_value(full_probe_report()).unwrap();
        for (method, path) in [
            ("post", "/api/v1/delivery-destinations/{id}/test"),
            ("post", "/api/v1/delivery-destinations/test"),
        ] {
            assert_conforms(&doc, response_schema(&doc, method, path, "200"), &report);
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
        .validate()
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
        let view = serde_json::to_value(DestinationView::new(&dest, failing)).unwrap();
        assert_eq!(keys(&view["s3"]), properties(&doc, "S3View"));
        for (method, path, status) in [
            ("post", "/api/v1/delivery-destinations", "201"),
            ("get", "/api/v1/delivery-destinations/{id}", "200"),
            ("put", "/api/v1/delivery-destinations/{id}", "200"),
        ] {
            assert_conforms(&doc, response_schema(&doc, method, path, status), &view);
        }
        let page = json!({"items": [view], "nextCursor": null});
        assert_conforms(
            &doc,
            response_schema(&doc, "get", "/api/v1/delivery-destinations", "200"),
            &page,
        );
    }

    #[test]
    fn a_delivery_record_conforms_to_its_schema() {
        let doc = doc();
        let now = Utc::now();
        let record: courier_core::delivery::DeliveryRecord = serde_json::from_value(json!({
            "id": courier_core::DeliveryId::generate(),
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
        let record = serde_json::to_value(record).unwrap();
        assert_conforms(
            &doc,
            response_schema(&doc, "get", "/api/v1/deliveries/{id}", "200"),
            &record,
        );
        let page = json!({"items": [record], "nextCursor": "dlv_01JXQ5W7ZB3C4D5E6F7G8H9JKM"});
        assert_conforms(
            &doc,
            response_schema(&doc, "get", "/api/v1/deliveries", "200"),
            &page,
        );
        let accepted = json!({"id": "dlv_01JXQ5W7ZB3C4D5E6F7G8H9JKM", "status": "QUEUED"});
        for path in ["/api/v1/deliveries", "/api/v1/deliveries/{id}/retry"] {
            assert_conforms(&doc, response_schema(&doc, "post", path, "202"), &accepted);
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
                    assert_conforms(&doc, schema, &with_fields);
                    assert_conforms(&doc, schema, &without);
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
}
