//! A JSON body extractor whose errors name the field: a type error says `s3.bucket:
//! invalid type…`, an unknown field says which, and a body that is not JSON says where.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Like `axum::Json`, with Courier's error bodies.
#[derive(Debug)]
pub struct ValidJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ValidJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                return ApiError::new(
                    status,
                    "PAYLOAD_TOO_LARGE",
                    "the request body is larger than this API accepts; for big results, stage \
                     the rows as NDJSON (gzip allowed) and send `rowsUrl` instead of `rows`",
                );
            }
            ApiError::new(status, "BAD_REQUEST", e.body_text())
        })?;
        parse(&bytes).map(ValidJson)
    }
}

/// Parses `bytes` as `T`, reporting the path of the field at fault.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "MALFORMED_JSON",
                format!("the body is not valid JSON: {inner}"),
            );
        }
        let path = if path == "." { String::new() } else { path };
        let message = inner.to_string();
        let field = named_field(&path, &message);
        // serde appends " at line L column C"; the field path says more.
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m)
            .to_owned();
        let mut err = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            if field.is_empty() {
                format!("the request is invalid: {message}")
            } else {
                format!("the request is invalid: {field}: {message}")
            },
        );
        err.fields.push(super::error::FieldError { field, message });
        err
    })
}

/// serde reports a missing field at its parent; name the field itself.
fn named_field(path: &str, message: &str) -> String {
    let named = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    match (named, path.is_empty()) {
        (Some(name), true) => name.to_owned(),
        (Some(name), false) => format!("{path}.{name}"),
        (None, _) => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        inner: Inner,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
        list: Vec<u32>,
    }

    fn field_of(body: &str) -> String {
        parse::<Outer>(body.as_bytes()).unwrap_err().fields[0]
            .field
            .clone()
    }

    #[test]
    fn errors_name_the_field_itself() {
        assert_eq!(field_of(r#"{"inner": {"n": "x", "list": []}}"#), "inner.n");
        assert_eq!(
            field_of(r#"{"inner": {"n": 1, "list": [1, "x"]}}"#),
            "inner.list[1]"
        );
        assert_eq!(field_of(r#"{"inner": {"list": []}}"#), "inner.n");
        assert_eq!(
            field_of(r#"{"inner": {"n": 1, "list": [], "extra": 1}}"#),
            "inner.extra"
        );
        assert_eq!(field_of(r#"{}"#), "inner");
        let err = parse::<Outer>(b"{nope").unwrap_err();
        assert_eq!(err.code, "MALFORMED_JSON");
    }
}
