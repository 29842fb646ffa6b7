//! Checking JSON against the OpenAPI document with the `jsonschema` crate (draft 2020-12,
//! which OpenAPI 3.1 uses), strictly: an object may have only the properties its schema
//! documents, so a field added to a response but not to the document fails.

use serde_json::{Map, Value};

/// The schema of the `status` response of `method path`, following a `$ref`'d response.
pub fn response_schema(doc: &Value, method: &str, path: &str, status: &str) -> Value {
    let mut response = &doc["paths"][path][method]["responses"][status];
    assert!(
        response.is_object(),
        "{method} {path} documents no {status} response"
    );
    if let Some(r) = response.get("$ref").and_then(Value::as_str) {
        response = resolve(doc, r);
    }
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} {status} has no JSON body"
    );
    schema.clone()
}

/// The value a local `$ref` points at.
pub fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("{reference} is not a local reference"));
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("{reference} does not resolve"))
}

/// Problems of `value` against `schema` (whose `$ref`s point into `doc`); empty if none.
pub fn problems(doc: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut root = match strict(schema) {
        Value::Object(map) => map,
        other => {
            let mut map = Map::new();
            map.insert("allOf".into(), Value::Array(vec![other]));
            map
        }
    };
    root.insert("components".into(), strict(&doc["components"]));
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&Value::Object(root))
        .expect("the document's schemas compile");
    validator
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Asserts that `value` conforms to `schema`.
pub fn assert_conforms(doc: &Value, schema: &Value, value: &Value) {
    let errors = problems(doc, schema, value);
    assert!(errors.is_empty(), "{value:#}\n{}", errors.join("\n"));
}

/// Asserts that `value`, the body of a `status` response of `method path`, is documented.
pub fn check(doc: &Value, method: &str, path: &str, status: &str, value: &Value) {
    let schema = response_schema(doc, method, path, status);
    let errors = problems(doc, &schema, value);
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: the response does not match the document:\n{}\n{value:#}",
        errors.join("\n")
    );
}

/// `schema` with `unevaluatedProperties: false` on every object schema that lists its
/// properties and says nothing about others: the document's types are closed.
fn strict(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out: Map<String, Value> = map
                .iter()
                .map(|(k, v)| {
                    // `properties` maps names to schemas; `example(s)` are data.
                    let v = match k.as_str() {
                        "example" | "examples" | "enum" | "const" => v.clone(),
                        _ => strict(v),
                    };
                    (k.clone(), v)
                })
                .collect();
            if out.contains_key("properties")
                && !out.contains_key("additionalProperties")
                && !out.contains_key("unevaluatedProperties")
            {
                out.insert("unevaluatedProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(strict).collect()),
        other => other.clone(),
    }
}
