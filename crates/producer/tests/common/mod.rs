//! The control API in process, for tests: the real router ([`api::router`]) over real Redis
//! stores, called with `tower::ServiceExt::oneshot`. The tests of one binary share one Redis
//! (started by the first test that needs it, stopped when the last one running lets it go),
//! each test in its own key namespace; a Garage is started only by tests that need a real
//! store to talk to.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::sync::{Arc, Mutex, Weak};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, header};
use courier_producer::api::{self, AppState, Tokens};
use courier_producer::{Rules, Service};
use courier_store::RedisConn;
use courier_store::{Keys, SecretCipher};
use courier_test_support::{GarageServer, RedisServer, S3Key};
use serde_json::{Value, json};
use tower::ServiceExt as _;

pub mod schema;

pub const TOKEN: &str = "tok_acme_0123456789abcdef";
pub const OTHER_TOKEN: &str = "tok_globex_0123456789abcdef";
pub const BUCKET: &str = "acme-results";
/// The fleet's staging bucket, as the API is told (`COURIER_STAGING_BUCKET`).
pub const STAGING_BUCKET: &str = "courier-staging";
/// `COURIER_SECRET_KEY` of the tests: 32 bytes, base64.
const SECRET_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// A secret that must never come back from the API.
pub const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
pub const KEY_ID: &str = "GK31c2f218a2e44f485b94239e";

/// The Redis of this test binary, while any test holds it.
fn shared_redis() -> Arc<RedisServer> {
    static SHARED: Mutex<Weak<RedisServer>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap();
    if let Some(redis) = slot.upgrade() {
        return redis;
    }
    let redis = Arc::new(RedisServer::start().expect("redis starts"));
    *slot = Arc::downgrade(&redis);
    redis
}

/// A Garage with bucket [`BUCKET`] and a key that may read and write it.
#[derive(Debug)]
pub struct Garage {
    pub server: GarageServer,
    pub key: S3Key,
}

impl Garage {
    pub fn start() -> Garage {
        let server = GarageServer::start().expect("garage starts");
        let key = server.bucket_with_key(BUCKET).expect("bucket and key");
        Garage { server, key }
    }
}

/// One test's API: its router, and the Redis namespace behind it.
#[derive(Debug)]
pub struct Api {
    pub router: Router,
    pub service: Service,
    pub conn: RedisConn,
    pub keys: Keys,
    pub garage: Option<Garage>,
    redis: Arc<RedisServer>,
}

impl Api {
    /// The API as the tests' `courier api` runs: private endpoints allowed (local stores),
    /// [`STAGING_BUCKET`] as the staging bucket, 2 s per connection-test step.
    pub async fn start() -> Api {
        Self::with_rules(Rules {
            egress: std::sync::Arc::new(courier_egress::EgressPolicy::allow_everything()),
            staging_bucket: Some(STAGING_BUCKET.into()),
            probe_timeout: std::time::Duration::from_secs(2),
            ..Rules::default()
        })
        .await
    }

    /// [`Api::start`] with a Garage to test connections against.
    pub async fn with_garage() -> Api {
        let garage = tokio::task::spawn_blocking(Garage::start).await.unwrap();
        let mut api = Self::start().await;
        api.garage = Some(garage);
        api
    }

    pub async fn with_rules(rules: Rules) -> Api {
        let redis = shared_redis();
        let conn = courier_store::connect(&redis.url())
            .await
            .expect("redis answers");
        let keys = Keys::new(format!("t{}", ulid::Ulid::new()));
        let cipher = SecretCipher::from_base64(SECRET_KEY).unwrap();
        let service = Service::new(conn.clone(), keys.clone(), Some(cipher), rules);
        let tokens = Tokens::parse(&format!("{TOKEN}=acme,{OTHER_TOKEN}=globex")).unwrap();
        let state = AppState {
            tokens,
            service: service.clone(),
        };
        Api {
            router: api::router(state, api::DEFAULT_MAX_BODY_BYTES),
            service,
            conn,
            keys,
            garage: None,
            redis,
        }
    }

    /// Sends a request with `token` (none when `None`); returns the status and the JSON body
    /// (a JSON string of the text when the body is not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let (status, _, body) = self.call_full(method, path, token, body).await;
        (status, body)
    }

    /// [`Api::call`], with the response's headers.
    pub async fn call_full(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, axum::http::HeaderMap, Value) {
        self.call_with_headers(method, path, token, body, &[]).await
    }

    /// [`Api::call_full`] with extra request headers.
    pub async fn call_with_headers(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> (u16, axum::http::HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b)),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, json)
    }

    /// `POST /api/v1/deliveries` with an `Idempotency-Key` header.
    pub async fn post_delivery_with_key(
        &self,
        body: &Value,
        key: &str,
    ) -> (u16, axum::http::HeaderMap, Value) {
        let body = Some(serde_json::to_vec(body).unwrap());
        self.call_with_headers(
            Method::POST,
            "/api/v1/deliveries",
            Some(TOKEN),
            body,
            &[("Idempotency-Key", key)],
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        self.call(Method::POST, path, Some(TOKEN), Some(bytes))
            .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, Some(TOKEN), None).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        self.call(Method::PUT, path, Some(TOKEN), Some(bytes)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(Method::DELETE, path, Some(TOKEN), None).await
    }

    /// A valid destination body: the Garage's bucket and key when there is one, otherwise a
    /// store on a loopback port nothing listens on (creating never contacts the store).
    pub fn destination_body(&self, format: &str, compression: &str, prefix: &str) -> Value {
        let (region, key_id, secret, endpoint) = match &self.garage {
            Some(g) => (
                g.server.region().to_owned(),
                g.key.id.clone(),
                g.key.secret.clone(),
                g.server.endpoint(),
            ),
            None => (
                "garage".to_owned(),
                KEY_ID.to_owned(),
                SECRET.to_owned(),
                "http://127.0.0.1:1".to_owned(),
            ),
        };
        json!({
            "type": "S3",
            "name": format!("{format} {compression}"),
            "s3": {
                "bucket": BUCKET,
                "region": region,
                "accessKeyId": key_id,
                "secretAccessKey": secret,
                "endpointUrl": endpoint,
                "pathPrefix": prefix,
            },
            "format": format,
            "compression": compression,
            "status": "ACTIVE",
        })
    }

    /// The secret the destination bodies of this test carry.
    pub fn secret(&self) -> String {
        self.garage
            .as_ref()
            .map_or(SECRET.to_owned(), |g| g.key.secret.clone())
    }

    pub fn key_id(&self) -> String {
        self.garage
            .as_ref()
            .map_or(KEY_ID.to_owned(), |g| g.key.id.clone())
    }

    /// Creates a destination and returns its id.
    pub async fn create_destination(&self, body: &Value) -> String {
        let (status, resp) = self.post("/api/v1/delivery-destinations", body).await;
        assert_eq!(status, 201, "create destination: {resp}");
        resp["id"].as_str().unwrap().to_owned()
    }

    /// Enqueues a small job for `destination` through the API; returns the delivery id.
    pub async fn enqueue(&self, destination: &str, job_id: &str, inventory: &str) -> String {
        let body = json!({
            "destinationId": destination,
            "jobId": job_id,
            "partnerInventoryId": inventory,
            "completedAt": "2026-06-07T10:00:00Z",
            "rows": [{"hotel": "A", "score": 1}]
        });
        let (status, resp) = self.post("/api/v1/deliveries", &body).await;
        assert_eq!(status, 202, "{resp}");
        resp["id"].as_str().unwrap().to_owned()
    }

    /// Keys of this test's namespace matching `pattern` (after the namespace's `:`).
    /// The keys matching `pattern` in this test's namespace, sorted (`KEYS` answers in
    /// no particular order).
    pub async fn redis_keys(&self, pattern: &str) -> Vec<String> {
        let mut conn = self.conn.clone();
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:{pattern}", self.keys.namespace()))
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.sort();
        keys
    }

    /// Tasks waiting in the queue (apalis-redis's active list and scheduled set).
    pub async fn queued_tasks(&self) -> usize {
        let mut conn = self.conn.clone();
        let queue = self.keys.queue_keys();
        let active: usize = redis::cmd("LLEN")
            .arg(queue.active())
            .query_async(&mut conn)
            .await
            .unwrap();
        let scheduled: usize = redis::cmd("ZCARD")
            .arg(queue.scheduled())
            .query_async(&mut conn)
            .await
            .unwrap();
        active + scheduled
    }
}
