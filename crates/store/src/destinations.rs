//! Customers' destinations in Redis: one JSON string per destination, one sorted set of
//! ids per tenant. Secrets are sealed by [`SecretCipher`] before they are written.

use crate::RedisConn;
use chrono::{DateTime, Utc};
use courier_core::batch::BatchSettings;
use courier_core::destination::{
    BucketName, Credentials, CredentialsMode, Destination, DestinationSpec, DestinationStatus,
    EndpointUrl, ExternalId, PathPrefix, Region, RoleArn, RoleCredentials, S3Settings,
    StaticCredentials, WriteOptions,
};
use courier_core::format::{CsvOptions, ParquetOptions};
use courier_core::{Compression, DestinationId, Format, TenantId};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::scripts::DESTINATION_CREATE;
use crate::{Full, Keys, SecretCipher, StoreError};

fn parse_stored(json: &str) -> Result<Stored, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        what: "destination",
        message: e.to_string(),
    })
}

/// A destination as stored: the spec with its secret sealed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    id: DestinationId,
    tenant: TenantId,
    name: String,
    bucket: BucketName,
    region: Region,
    endpoint_url: Option<EndpointUrl>,
    path_prefix: PathPrefix,
    credentials: CredentialsMode,
    access_key_id: Option<String>,
    secret_sealed: Option<String>,
    /// With `ROLE` credentials: the role, and the tenant's ExternalId it is assumed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role_arn: Option<RoleArn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    external_id: Option<ExternalId>,
    /// Absent in destinations saved before write options existed.
    #[serde(default)]
    write: WriteOptions,
    format: Format,
    compression: Compression,
    /// Absent in destinations saved before CSV had settings (and when all are off).
    #[serde(default, skip_serializing_if = "is_default")]
    csv: CsvOptions,
    /// Absent in destinations saved before Parquet existed.
    #[serde(default)]
    parquet: ParquetOptions,
    status: DestinationStatus,
    /// Absent for destinations that deliver one object per delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batch: Option<BatchSettings>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

/// Reads and writes destinations.
#[derive(Debug, Clone)]
pub struct DestinationStore {
    conn: RedisConn,
    keys: Keys,
    /// Absent for processes that never read secrets (e.g. `courier enqueue`).
    cipher: Option<SecretCipher>,
}

/// What a producer needs to know of a destination; reading it needs no secret key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationSummary {
    pub id: DestinationId,
    pub format: Format,
    pub compression: Compression,
    pub status: DestinationStatus,
    /// Set for a batched destination: deliveries are appended to its windows.
    pub batch: Option<BatchSettings>,
}

impl DestinationStore {
    pub fn new(conn: RedisConn, keys: Keys, cipher: Option<SecretCipher>) -> Self {
        Self { conn, keys, cipher }
    }

    fn cipher(&self) -> Result<&SecretCipher, StoreError> {
        self.cipher.as_ref().ok_or(StoreError::NoSecretKey)
    }

    /// The format and status of `tenant`'s destination `id`, without opening its secret.
    pub async fn summary(
        &self,
        tenant: &TenantId,
        id: &DestinationId,
    ) -> Result<Option<DestinationSummary>, StoreError> {
        let Some(s) = self.get_stored(id).await? else {
            return Ok(None);
        };
        Ok((&s.tenant == tenant).then_some(DestinationSummary {
            id: s.id,
            format: s.format,
            compression: s.compression,
            status: s.status,
            batch: s.batch,
        }))
    }

    /// The status of destination `id` whatever its tenant, without opening its secret;
    /// `None` if it does not exist.
    pub async fn status_any(
        &self,
        id: &DestinationId,
    ) -> Result<Option<DestinationStatus>, StoreError> {
        Ok(self.get_stored(id).await?.map(|s| s.status))
    }

    async fn get_stored(&self, id: &DestinationId) -> Result<Option<Stored>, StoreError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = conn.get(self.keys.destination(id)).await?;
        json.map(|j| parse_stored(&j)).transpose()
    }

    /// A destination from its stored JSON (read with other keys, [`crate::read_taken`]).
    pub(crate) fn decode_json(&self, json: &str) -> Result<Destination, StoreError> {
        self.decode(parse_stored(json)?)
    }

    /// Saves a new destination for `tenant` and returns it with its id; no quota.
    pub async fn create(
        &self,
        tenant: &TenantId,
        spec: DestinationSpec,
    ) -> Result<Destination, StoreError> {
        self.create_within(tenant, spec, 0)
            .await?
            .map_err(|full| StoreError::Corrupt {
                what: "destination count",
                message: format!("refused without a limit at {}", full.used),
            })
    }

    /// Saves a new destination for `tenant` unless it has `limit` already (0: no limit);
    /// the count and the write are one script, so concurrent creates cannot both take the
    /// last place. `Err(Full)`: nothing was saved.
    pub async fn create_within(
        &self,
        tenant: &TenantId,
        spec: DestinationSpec,
        limit: u64,
    ) -> Result<Result<Destination, Full>, StoreError> {
        let now = Utc::now();
        let dest = Destination {
            id: DestinationId::generate(),
            tenant: tenant.clone(),
            spec,
            created_at: now,
            updated_at: now,
        };
        let json = self.encode(&dest)?;
        let paused = dest.spec.status == DestinationStatus::Paused;
        let mut conn = self.conn.clone();
        let (saved, used): (u8, u64) = DESTINATION_CREATE
            .key(self.keys.destination(&dest.id))
            .key(self.keys.tenant_destinations(tenant))
            .key(self.keys.paused_destinations())
            .arg(dest.id.as_str())
            .arg(json)
            .arg(limit)
            .arg(if paused { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        Ok(if saved == 1 {
            Ok(dest)
        } else {
            Err(Full { used })
        })
    }

    /// How many destinations `tenant` has.
    pub async fn count(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        Ok(conn.zcard(self.keys.tenant_destinations(tenant)).await?)
    }

    /// Replaces the spec of an existing destination; returns the saved destination, or
    /// `None` if `tenant` has no destination `id`.
    pub async fn update(
        &self,
        tenant: &TenantId,
        id: &DestinationId,
        spec: DestinationSpec,
    ) -> Result<Option<Destination>, StoreError> {
        let Some(old) = self.get(tenant, id).await? else {
            return Ok(None);
        };
        let dest = Destination {
            spec,
            updated_at: Utc::now(),
            ..old
        };
        let json = self.encode(&dest)?;
        let mut conn = self.conn.clone();
        let _: () = conn.set(self.keys.destination(id), json).await?;
        self.track_paused(&dest).await?;
        Ok(Some(dest))
    }

    /// Keeps the set of paused destinations (for metrics) in step.
    async fn track_paused(&self, dest: &Destination) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.paused_destinations();
        let _: () = if dest.spec.status == DestinationStatus::Paused {
            conn.sadd(key, dest.id.as_str()).await?
        } else {
            conn.srem(key, dest.id.as_str()).await?
        };
        Ok(())
    }

    /// Deletes `tenant`'s destination `id`; false if there was none.
    pub async fn delete(&self, tenant: &TenantId, id: &DestinationId) -> Result<bool, StoreError> {
        if self.summary(tenant, id).await?.is_none() {
            return Ok(false);
        }
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .del(self.keys.destination(id))
            .zrem(self.keys.tenant_destinations(tenant), id.as_str())
            .srem(self.keys.paused_destinations(), id.as_str())
            .del(self.keys.health(id))
            .srem(self.keys.failing_destinations(), id.as_str())
            .del(self.keys.batch_sealed(id))
            .exec_async(&mut conn)
            .await?;
        Ok(true)
    }

    /// A page of `tenant`'s destinations, oldest first, starting after `cursor`.
    pub async fn list(
        &self,
        tenant: &TenantId,
        limit: usize,
        cursor: Option<&DestinationId>,
    ) -> Result<(Vec<Destination>, Option<DestinationId>), StoreError> {
        let min = cursor.map_or_else(|| "-".to_owned(), |c| format!("({c}"));
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZRANGEBYLEX")
            .arg(self.keys.tenant_destinations(tenant))
            .arg(&min)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1)
            .query_async(&mut conn)
            .await?;
        let more = ids.len() > limit;
        let mut out = Vec::with_capacity(limit);
        for id in ids.into_iter().take(limit) {
            let Ok(id) = DestinationId::parse(&id) else {
                continue;
            };
            if let Some(d) = self.get(tenant, &id).await? {
                out.push(d);
            }
        }
        let next = if more {
            out.last().map(|d| d.id.clone())
        } else {
            None
        };
        Ok((out, next))
    }

    /// The destination `id` if it exists and belongs to `tenant`. Another tenant's
    /// destination is reported as absent, exactly like a missing one.
    pub async fn get(
        &self,
        tenant: &TenantId,
        id: &DestinationId,
    ) -> Result<Option<Destination>, StoreError> {
        Ok(self.get_any(id).await?.filter(|d| &d.tenant == tenant))
    }

    /// The destination `id` whatever its tenant; for workers, which act for every tenant.
    pub async fn get_any(&self, id: &DestinationId) -> Result<Option<Destination>, StoreError> {
        self.get_stored(id)
            .await?
            .map(|s| self.decode(s))
            .transpose()
    }

    fn encode(&self, d: &Destination) -> Result<String, StoreError> {
        let (access_key_id, secret_sealed) = match &d.spec.s3.credentials {
            Credentials::Static(c) => (
                Some(c.access_key_id.clone()),
                Some(self.cipher()?.seal(&c.secret_access_key, d.id.as_str())),
            ),
            Credentials::Anonymous | Credentials::DefaultChain | Credentials::Role(_) => {
                (None, None)
            }
        };
        let role = d.spec.s3.credentials.as_role();
        let stored = Stored {
            id: d.id.clone(),
            tenant: d.tenant.clone(),
            name: d.spec.name.clone(),
            bucket: d.spec.s3.bucket.clone(),
            region: d.spec.s3.region.clone(),
            endpoint_url: d.spec.s3.endpoint_url.clone(),
            path_prefix: d.spec.s3.path_prefix.clone(),
            credentials: d.spec.s3.credentials.mode(),
            access_key_id,
            secret_sealed,
            role_arn: role.map(|r| r.role_arn.clone()),
            external_id: role.map(|r| r.external_id.clone()),
            write: d.spec.s3.write.clone(),
            format: d.spec.format,
            compression: d.spec.compression,
            csv: d.spec.csv,
            parquet: d.spec.parquet.clone(),
            status: d.spec.status,
            batch: d.spec.batch,
            created_at: d.created_at,
            updated_at: d.updated_at,
        };
        serde_json::to_string(&stored).map_err(|e| StoreError::Corrupt {
            what: "destination",
            message: e.to_string(),
        })
    }

    fn decode(&self, s: Stored) -> Result<Destination, StoreError> {
        let credentials = match (s.credentials, s.access_key_id, s.secret_sealed) {
            (CredentialsMode::Static, Some(access_key_id), Some(sealed)) => {
                Credentials::Static(StaticCredentials {
                    access_key_id,
                    secret_access_key: self.cipher()?.open(&sealed, s.id.as_str())?,
                })
            }
            (CredentialsMode::Static, _, _) => {
                return Err(StoreError::Corrupt {
                    what: "destination",
                    message: format!("{} has STATIC credentials without keys", s.id),
                });
            }
            (CredentialsMode::None, _, _) => Credentials::Anonymous,
            (CredentialsMode::DefaultChain, _, _) => Credentials::DefaultChain,
            (CredentialsMode::Role, _, _) => match (s.role_arn, s.external_id) {
                (Some(role_arn), Some(external_id)) => Credentials::Role(RoleCredentials {
                    role_arn,
                    external_id,
                }),
                _ => {
                    return Err(StoreError::Corrupt {
                        what: "destination",
                        message: format!("{} has ROLE credentials without its role", s.id),
                    });
                }
            },
        };
        Ok(Destination {
            id: s.id,
            tenant: s.tenant,
            spec: DestinationSpec {
                name: s.name,
                s3: S3Settings {
                    bucket: s.bucket,
                    region: s.region,
                    endpoint_url: s.endpoint_url,
                    path_prefix: s.path_prefix,
                    credentials,
                    write: s.write,
                },
                format: s.format,
                compression: s.compression,
                csv: s.csv,
                parquet: s.parquet,
                status: s.status,
                batch: s.batch,
            },
            created_at: s.created_at,
            updated_at: s.updated_at,
        })
    }
}

/// What [`DestinationStore::sealing_keys`] found: the keys the saved secrets need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealingKeys {
    /// Destinations with a sealed secret.
    pub sealed: u64,
    /// Ids of keys that sealed some of them and that the cipher does not hold.
    pub missing: Vec<String>,
    /// Secrets sealed before key ids existed that no key of the cipher opens.
    pub unopenable_legacy: u64,
}

/// What [`DestinationStore::reseal_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Re-sealed with the current key.
    pub resealed: u64,
    /// Already sealed with the current key (or without a secret).
    pub current: u64,
    /// Changed by someone else while being re-sealed; a later run takes them.
    pub raced: u64,
    /// Whose key the cipher does not hold.
    pub unopenable: Vec<DestinationId>,
}

impl DestinationStore {
    /// Every saved destination, read with `SCAN` (once per call: for start-up checks and
    /// rotation, never per request).
    async fn scan_stored(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(self.keys.destination_pattern())
                .arg("COUNT")
                .arg(1000)
                .arg("TYPE")
                .arg("string")
                .query_async(&mut conn)
                .await?;
            let keys: Vec<String> = keys
                .into_iter()
                .filter(|k| {
                    k.rsplit(':')
                        .next()
                        .and_then(|id| DestinationId::parse(id).ok())
                        .is_some_and(|id| self.keys.destination(&id) == *k)
                })
                .collect();
            if !keys.is_empty() {
                let values: Vec<Option<String>> = conn.mget(&keys).await?;
                out.extend(
                    keys.into_iter()
                        .zip(values)
                        .filter_map(|(k, v)| v.map(|v| (k, v))),
                );
            }
            cursor = next;
            if cursor == 0 {
                return Ok(out);
            }
        }
    }

    /// Which keys the saved secrets need that this store's cipher lacks. A process whose
    /// `COURIER_SECRET_KEY` (with `COURIER_PREVIOUS_SECRET_KEYS`) cannot open the fleet's
    /// destinations should refuse to start rather than fail every delivery.
    pub async fn sealing_keys(&self) -> Result<SealingKeys, StoreError> {
        let cipher = self.cipher()?;
        let mut found = SealingKeys::default();
        for (_, json) in self.scan_stored().await? {
            let Ok(s) = serde_json::from_str::<Stored>(&json) else {
                continue;
            };
            let Some(sealed) = &s.secret_sealed else {
                continue;
            };
            found.sealed += 1;
            match SecretCipher::sealed_with(sealed) {
                Some(id) if !cipher.has_key(id) => {
                    if !found.missing.iter().any(|m| m == id) {
                        found.missing.push(id.to_owned());
                    }
                }
                Some(_) => {}
                None => {
                    if cipher.open(sealed, s.id.as_str()).is_err() {
                        found.unopenable_legacy += 1;
                    }
                }
            }
        }
        Ok(found)
    }

    /// Re-seals every destination's secret that is not sealed with the current key. Safe
    /// while the fleet delivers (a destination changed meanwhile is left for the next run)
    /// and resumable (what is done stays done).
    pub async fn reseal_all(&self) -> Result<Resealed, StoreError> {
        let cipher = self.cipher()?;
        let mut done = Resealed::default();
        let mut conn = self.conn.clone();
        for (key, json) in self.scan_stored().await? {
            let Ok(mut s) = serde_json::from_str::<Stored>(&json) else {
                continue;
            };
            let Some(sealed) = s.secret_sealed.clone() else {
                done.current += 1;
                continue;
            };
            if !cipher.needs_reseal(&sealed) {
                done.current += 1;
                continue;
            }
            let Ok(secret) = cipher.open(&sealed, s.id.as_str()) else {
                done.unopenable.push(s.id.clone());
                continue;
            };
            s.secret_sealed = Some(cipher.seal(&secret, s.id.as_str()));
            let new = serde_json::to_string(&s).map_err(|e| StoreError::Corrupt {
                what: "destination",
                message: e.to_string(),
            })?;
            let replaced: i64 = crate::scripts::COMPARE_AND_SET
                .key(&key)
                .arg(&json)
                .arg(&new)
                .invoke_async(&mut conn)
                .await?;
            if replaced == 1 {
                done.resealed += 1;
            } else {
                done.raced += 1;
            }
        }
        Ok(done)
    }
}
