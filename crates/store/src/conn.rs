//! The one connection type every store and the queue use ([`RedisConn`]): a
//! self-reconnecting connection to one Redis (`REDIS_URL`), or to whichever server the
//! Sentinels name as the primary (`COURIER_REDIS_SENTINELS`, `COURIER_REDIS_SENTINEL_SERVICE`),
//! found again after a failover without a restart.
//!
//! After a failover the old primary is gone (connections refused or dropped) or back as a
//! replica (writes answered `READONLY`). Either error makes the connection ask the
//! Sentinels again, for up to [`RedisTarget::Sentinel::failover_wait`], until one names a
//! server that answers `ROLE` as a primary. A command refused with `READONLY` was not
//! executed and is sent again to the new primary; a command whose connection broke may or
//! may not have run, so its error goes to the caller (the API answers 503, a worker hands
//! its task back), never a silent second execution.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisError, RedisFuture,
    RedisResult, ServerErrorKind, Value,
};

use crate::StoreError;

/// How long to wait for a server to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one command may take before it fails.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which Redis the fleet shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server, or a managed endpoint that fails over behind one address.
    Url(String),
    /// The primary the Sentinels monitor under `service`.
    Sentinel {
        /// `host:port` of each Sentinel.
        sentinels: Vec<String>,
        service: String,
        /// Database number, user and password for the primary, from `REDIS_URL`'s path
        /// and credentials (its host is ignored).
        db: i64,
        username: Option<String>,
        password: Option<String>,
        /// How long a command waits for the Sentinels to name a new primary.
        failover_wait: Duration,
    },
}

impl RedisTarget {
    /// From the settings: Sentinels when `sentinels` is set (comma-separated `host:port`),
    /// else `url`. With Sentinels, `url` still gives the database and credentials.
    pub fn from_settings(
        url: &str,
        sentinels: Option<&str>,
        service: Option<&str>,
    ) -> Result<Self, String> {
        let Some(sentinels) = sentinels.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(RedisTarget::Url(url.to_owned()));
        };
        let service = service
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or("COURIER_REDIS_SENTINEL_SERVICE is required with COURIER_REDIS_SENTINELS")?;
        let sentinels = sentinels
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                parse_host_port(s)
                    .map(|_| s.to_owned())
                    .ok_or_else(|| format!("COURIER_REDIS_SENTINELS: `{s}` is not host:port"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let parsed = url::Url::parse(url).map_err(|e| format!("REDIS_URL: {e}"))?;
        let db = match parsed.path().trim_start_matches('/') {
            "" => 0,
            n => n
                .parse()
                .map_err(|_| format!("REDIS_URL: `{n}` is not a database number"))?,
        };
        Ok(RedisTarget::Sentinel {
            sentinels,
            service: service.to_owned(),
            db,
            username: Some(parsed.username())
                .filter(|u| !u.is_empty())
                .map(str::to_owned),
            password: parsed.password().map(str::to_owned),
            failover_wait: Duration::from_secs(30),
        })
    }

    /// For logs: the URL without its password, or the Sentinels and service.
    pub fn describe(&self) -> String {
        match self {
            // User and password both hidden.
            RedisTarget::Url(u) => match (u.find("://"), u.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    format!("{}://***@{}", &u[..scheme], &u[at + 1..])
                }
                _ => u.clone(),
            },
            RedisTarget::Sentinel {
                sentinels, service, ..
            } => format!(
                "primary `{service}` of the Sentinels {}",
                sentinels.join(",")
            ),
        }
    }
}

fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port.parse().ok()?))
}

/// A connection to the fleet's Redis. Cheap to clone: clones share one multiplexed
/// connection.
#[derive(Clone)]
pub struct RedisConn {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Direct(ConnectionManager),
    Sentinel(Arc<SentinelPrimary>),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Direct(_) => f.write_str("RedisConn::Direct"),
            Inner::Sentinel(p) => write!(f, "RedisConn::Sentinel({})", p.service),
        }
    }
}

impl RedisConn {
    /// Connects to `target`; fails if no server (or no primary) can be reached now.
    pub async fn connect(target: &RedisTarget) -> Result<Self, StoreError> {
        match target {
            RedisTarget::Url(url) => {
                let client = redis::Client::open(url.as_str())?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(6)
                    .set_max_delay(Duration::from_secs(2));
                Ok(Self {
                    inner: Inner::Direct(ConnectionManager::new_with_config(client, config).await?),
                })
            }
            RedisTarget::Sentinel {
                service,
                db,
                failover_wait,
                ..
            } => {
                let primary = Arc::new(SentinelPrimary {
                    service: service.clone(),
                    sentinel: tokio::sync::Mutex::new(sentinel_client(target)?),
                    current: Mutex::new(None),
                    failover_wait: *failover_wait,
                    db: *db,
                });
                primary.discover(None).await?;
                Ok(Self {
                    inner: Inner::Sentinel(primary),
                })
            }
        }
    }
}

/// The Sentinels' client for the primary of a [`RedisTarget::Sentinel`].
fn sentinel_client(target: &RedisTarget) -> RedisResult<SentinelClient> {
    let RedisTarget::Sentinel {
        sentinels,
        service,
        db,
        username,
        password,
        ..
    } = target
    else {
        unreachable!("only a Sentinel target has Sentinels");
    };
    let addrs = sentinels
        .iter()
        .filter_map(|s| parse_host_port(s))
        .map(|(host, port)| ConnectionAddr::Tcp(host, port));
    let mut builder = SentinelClientBuilder::new(addrs, service, SentinelServerType::Master)?
        .set_client_to_redis_db(*db);
    if let Some(u) = username {
        builder = builder.set_client_to_redis_username(u);
    }
    if let Some(p) = password {
        builder = builder.set_client_to_redis_password(p);
    }
    builder.build()
}

/// Subscribes to `channel` on the server `target` names (the primary the Sentinels name
/// now). The stream yields each message and ends when the connection does (a failover, a
/// restart): the caller subscribes again. Pub/sub is a hint here, never a guarantee, so a
/// subscription that fails costs latency, not deliveries.
pub async fn subscribe(
    target: &RedisTarget,
    channel: &str,
) -> Result<redis::aio::PubSubStream, StoreError> {
    let client = match target {
        RedisTarget::Url(url) => redis::Client::open(url.as_str())?,
        RedisTarget::Sentinel { .. } => sentinel_client(target)?.async_get_client().await?,
    };
    let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| {
            RedisError::from((ErrorKind::Io, "timed out connecting for a subscription"))
        })??;
    pubsub.subscribe(channel).await?;
    Ok(pubsub.into_on_message())
}

/// Waits until `replicas` replicas acknowledge every write this connection made so far
/// (Redis `WAIT`), for at most `timeout`. Clones of a connection share it, so this covers
/// every write a process made through any clone. Returns how many acknowledged; fewer than
/// `replicas` is [`StoreError::NotReplicated`].
pub async fn wait_for_replicas(
    conn: &mut impl ConnectionLike,
    replicas: u32,
    timeout: Duration,
) -> Result<u32, StoreError> {
    let acked: u32 = redis::cmd("WAIT")
        .arg(replicas)
        .arg(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        )
        .query_async(conn)
        .await?;
    if acked < replicas {
        return Err(StoreError::NotReplicated {
            wanted: replicas,
            acked,
        });
    }
    Ok(acked)
}

/// The primary the Sentinels name, and the connection to it.
struct SentinelPrimary {
    service: String,
    /// Also serialises discovery, so that one failover triggers one search.
    sentinel: tokio::sync::Mutex<SentinelClient>,
    /// The connection in use, with a generation number that tells a search whether
    /// someone else already replaced the connection it found broken.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    failover_wait: Duration,
    db: i64,
}

impl SentinelPrimary {
    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        match self.current() {
            Some(c) => Ok(c),
            None => self.discover(None).await,
        }
    }

    /// Asks the Sentinels for the primary until one answers, for up to `failover_wait`.
    /// `broken` is the generation found not to work; if the connection was replaced
    /// meanwhile, the replacement is returned without asking again.
    async fn discover(&self, broken: Option<u64>) -> RedisResult<(u64, MultiplexedConnection)> {
        let mut sentinel = self.sentinel.lock().await;
        let previous = self.current();
        if let Some(cur) = &previous
            && Some(cur.0) != broken
        {
            return Ok(cur.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let deadline = tokio::time::Instant::now() + self.failover_wait;
        let mut delay = Duration::from_millis(100);
        loop {
            match sentinel.get_async_connection_with_config(&config).await {
                Ok(conn) => {
                    let generation = previous.as_ref().map_or(1, |p| p.0 + 1);
                    *self.current.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((generation, conn.clone()));
                    if generation > 1 {
                        tracing::warn!(service = %self.service, "connected to the new Redis primary after a failover");
                    }
                    return Ok((generation, conn));
                }
                Err(e) if tokio::time::Instant::now() + delay < deadline => {
                    tracing::debug!(service = %self.service, error = %e, "no Redis primary yet; asking the Sentinels again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether `e` says the server is not (or no longer) the primary.
fn primary_lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || is_read_only(e)
}

/// A write refused by a replica: the command did not run, so it may be sent again.
fn is_read_only(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.inner {
            Inner::Direct(c) => c.req_packed_command(cmd),
            Inner::Sentinel(p) => {
                let p = p.clone();
                Box::pin(async move {
                    let (generation, mut conn) = p.connection().await?;
                    match conn.req_packed_command(cmd).await {
                        Err(e) if primary_lost(&e) => {
                            let (_, mut conn) = p.discover(Some(generation)).await?;
                            if is_read_only(&e) {
                                conn.req_packed_command(cmd).await
                            } else {
                                Err(e)
                            }
                        }
                        other => other,
                    }
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.inner {
            Inner::Direct(c) => c.req_packed_commands(pipeline, offset, count),
            Inner::Sentinel(p) => {
                let p = p.clone();
                Box::pin(async move {
                    let (generation, mut conn) = p.connection().await?;
                    match conn.req_packed_commands(pipeline, offset, count).await {
                        Err(e) if primary_lost(&e) => {
                            // Find the new primary for the next caller. A pipeline refused with READONLY ran none of its writes only
                            // if it was a MULTI block; send nothing again, to be safe.
                            let _ = p.discover(Some(generation)).await;
                            Err(e)
                        }
                        other => other,
                    }
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Direct(c) => c.get_db(),
            Inner::Sentinel(p) => p.db,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_alone_is_one_server() {
        assert_eq!(
            RedisTarget::from_settings("redis://h:6379/2", None, None).unwrap(),
            RedisTarget::Url("redis://h:6379/2".into())
        );
        assert_eq!(
            RedisTarget::from_settings("redis://h:6379/2", Some(" "), None).unwrap(),
            RedisTarget::Url("redis://h:6379/2".into())
        );
    }

    #[test]
    fn sentinels_take_db_and_credentials_from_the_url() {
        let t = RedisTarget::from_settings(
            "redis://user:pw@ignored:1/3",
            Some("10.0.0.1:26379, [::1]:26380"),
            Some("courier"),
        )
        .unwrap();
        let RedisTarget::Sentinel {
            sentinels,
            service,
            db,
            username,
            password,
            ..
        } = &t
        else {
            panic!("{t:?}")
        };
        assert_eq!(sentinels, &["10.0.0.1:26379", "[::1]:26380"]);
        assert_eq!(service, "courier");
        assert_eq!(*db, 3);
        assert_eq!(username.as_deref(), Some("user"));
        assert_eq!(password.as_deref(), Some("pw"));
        assert!(!t.describe().contains("pw"));
    }

    #[test]
    fn bad_sentinel_settings_name_the_variable() {
        let e = RedisTarget::from_settings("redis://h/0", Some("a:1"), None).unwrap_err();
        assert!(e.contains("COURIER_REDIS_SENTINEL_SERVICE"), "{e}");
        let e = RedisTarget::from_settings("redis://h/0", Some("a:1,nope"), Some("s")).unwrap_err();
        assert!(e.starts_with("COURIER_REDIS_SENTINELS: `nope`"), "{e}");
    }

    #[test]
    fn a_password_never_reaches_the_description() {
        let t = RedisTarget::from_settings("redis://:hunter2@h:6379/0", None, None).unwrap();
        assert_eq!(t.describe(), "redis://***@h:6379/0");
        let t = RedisTarget::from_settings("redis://h:6379", None, None).unwrap();
        assert_eq!(t.describe(), "redis://h:6379");
    }
}
