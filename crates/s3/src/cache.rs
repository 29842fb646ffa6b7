//! One S3 client per destination, kept between deliveries.
//!
//! Building a client parses the TLS root store, and a fresh client opens a fresh
//! connection; per delivery that cost more CPU than the upload itself. A cached client
//! keeps its connection pool warm. An entry is used only while the destination's
//! connection settings (region, endpoint, credentials, expected bucket owner) are exactly
//! those it was built with, so a rotated secret or a moved endpoint takes effect on the next
//! delivery.
//!
//! For a `ROLE` destination the cached client also keeps the role's temporary credentials:
//! its identity cache asks STS again only shortly before they expire, so deliveries do not
//! each assume the role.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use courier_core::DestinationId;
use courier_core::destination::{Credentials, EndpointUrl, Region, S3Settings};
use courier_core::role::role_session_name;
use courier_core::write_options::AccountId;
use courier_egress::EgressPolicy;
use lru::LruCache;

use crate::{S3Failure, S3Timeouts, client};

/// Recently used destinations' clients, at most `capacity` of them.
#[derive(Debug)]
pub struct ClientCache {
    timeouts: S3Timeouts,
    /// Where the clients' connections may go.
    egress: Arc<EgressPolicy>,
    entries: Mutex<LruCache<DestinationId, Entry>>,
    built: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    built_for: Connection,
    client: aws_sdk_s3::Client,
}

/// What a client depends on: not the bucket or the prefix, which are per request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Connection {
    region: Region,
    endpoint_url: Option<EndpointUrl>,
    credentials: Credentials,
    /// Sent on every request by the client itself.
    expected_bucket_owner: Option<AccountId>,
}

impl Connection {
    fn of(s3: &S3Settings) -> Self {
        Self {
            region: s3.region.clone(),
            endpoint_url: s3.endpoint_url.clone(),
            credentials: s3.credentials.clone(),
            expected_bucket_owner: s3.write.expected_bucket_owner.clone(),
        }
    }
}

impl ClientCache {
    pub fn new(capacity: NonZeroUsize, timeouts: S3Timeouts, egress: Arc<EgressPolicy>) -> Self {
        Self {
            timeouts,
            egress,
            entries: Mutex::new(LruCache::new(capacity)),
            built: AtomicU64::new(0),
        }
    }

    /// The client for `id` as configured by `s3`, built if there is none or if the
    /// settings changed since. (Clients are cheap to clone: they share their pool.) Fails
    /// for an endpoint the egress policy refuses outright.
    pub async fn get(
        &self,
        id: &DestinationId,
        s3: &S3Settings,
    ) -> Result<aws_sdk_s3::Client, S3Failure> {
        let wanted = Connection::of(s3);
        if let Some(entry) = self.lock().get(id)
            && entry.built_for == wanted
        {
            return Ok(entry.client.clone());
        }
        let built = client(s3, self.timeouts, &self.egress, &role_session_name(id)).await?;
        self.built.fetch_add(1, Ordering::Relaxed);
        self.lock().put(
            id.clone(),
            Entry {
                built_for: wanted,
                client: built.clone(),
            },
        );
        Ok(built)
    }

    /// How many clients were built so far.
    pub fn built(&self) -> u64 {
        self.built.load(Ordering::Relaxed)
    }

    /// How many clients are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<DestinationId, Entry>> {
        // A panic while holding the lock cannot leave the cache inconsistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use courier_core::destination::{BucketName, PathPrefix, Secret, StaticCredentials};

    use super::*;

    fn settings(region: &str, secret: &str) -> S3Settings {
        S3Settings {
            bucket: BucketName::parse("reports").unwrap(),
            region: Region::parse(region).unwrap(),
            endpoint_url: None,
            path_prefix: PathPrefix::parse("a/").unwrap(),
            credentials: Credentials::Static(StaticCredentials {
                access_key_id: "AKIAEXAMPLE".into(),
                secret_access_key: Secret::new(secret),
            }),
            write: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_client_is_built_once_per_destination_and_again_when_its_settings_change() {
        let cache = ClientCache::new(
            NonZeroUsize::new(2).unwrap(),
            S3Timeouts::default(),
            Arc::new(EgressPolicy::public_only()),
        );
        let (a, b, c) = (
            DestinationId::generate(),
            DestinationId::generate(),
            DestinationId::generate(),
        );
        let s = settings("eu-west-1", "one");
        cache.get(&a, &s).await.unwrap();
        cache.get(&a, &s).await.unwrap();
        assert_eq!(cache.built(), 1);

        // The bucket and prefix are per request: no new client.
        let mut other_prefix = s.clone();
        other_prefix.path_prefix = PathPrefix::parse("b/").unwrap();
        other_prefix.bucket = BucketName::parse("other").unwrap();
        cache.get(&a, &other_prefix).await.unwrap();
        assert_eq!(cache.built(), 1);

        // A rotated secret or another region: a new client, with the new settings.
        cache.get(&a, &settings("eu-west-1", "two")).await.unwrap();
        assert_eq!(cache.built(), 2);
        let moved = cache.get(&a, &settings("us-east-2", "two")).await.unwrap();
        assert_eq!(cache.built(), 3);
        assert_eq!(moved.config().region().unwrap().as_ref(), "us-east-2");

        // At most `capacity` are kept; the least recently used goes first.
        cache.get(&b, &s).await.unwrap();
        cache.get(&c, &s).await.unwrap();
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.built(), 5);
        cache.get(&c, &s).await.unwrap();
        assert_eq!(cache.built(), 5);
        cache.get(&a, &settings("us-east-2", "two")).await.unwrap();
        assert_eq!(cache.built(), 6, "a was evicted");
    }
}
