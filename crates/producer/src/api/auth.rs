//! Bearer-token authentication: each token belongs to exactly one tenant.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use courier_core::TenantId;

use super::AppState;
use super::error::ApiError;

/// The token → tenant table, from `COURIER_API_TOKENS` (`token=tenant,token=tenant`).
#[derive(Clone, Default)]
pub struct Tokens(Arc<HashMap<String, TenantId>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} tokens)", self.0.len())
    }
}

impl Tokens {
    /// Parses `token=tenant` pairs separated by commas. Errors never echo a token.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut map = HashMap::new();
        for (i, pair) in spec
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let (token, tenant) = pair.split_once('=').ok_or_else(|| {
                format!("COURIER_API_TOKENS entry {} is not `token=tenant`", i + 1)
            })?;
            if token.len() < 16 {
                return Err(format!(
                    "COURIER_API_TOKENS entry {} has a token shorter than 16 characters",
                    i + 1
                ));
            }
            let tenant = TenantId::parse(tenant.trim())
                .map_err(|e| format!("COURIER_API_TOKENS entry {}: {e}", i + 1))?;
            map.insert(token.trim().to_owned(), tenant);
        }
        Ok(Self(Arc::new(map)))
    }

    fn tenant(&self, token: &str) -> Option<&TenantId> {
        self.0.get(token)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The tenant the request's bearer token belongs to; a handler that takes it is protected.
#[derive(Debug, Clone)]
pub struct Tenant(pub TenantId);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        state
            .tokens
            .tenant(token)
            .cloned()
            .map(Tenant)
            .ok_or_else(ApiError::unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_and_hides_tokens_in_errors() {
        let t = Tokens::parse("aaaaaaaaaaaaaaaa=acme, bbbbbbbbbbbbbbbb=globex").unwrap();
        assert_eq!(t.tenant("aaaaaaaaaaaaaaaa").unwrap().as_str(), "acme");
        assert!(t.tenant("nope").is_none());
        let err = Tokens::parse("zq9x=acme").unwrap_err();
        assert!(!err.contains("zq9x"), "{err}");
        assert!(Tokens::parse("no-equals-sign-here").is_err());
        assert!(!format!("{t:?}").contains("aaaa"));
    }
}
