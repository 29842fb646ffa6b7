//! What Courier keeps per tenant beyond its destinations: the ExternalId its cross-account
//! roles must require.

use courier_core::TenantId;
use courier_core::destination::ExternalId;
use rand::Rng;
use rand::distr::Alphanumeric;

use crate::{Keys, RedisConn, StoreError};

/// Reads (and on first read creates) per-tenant settings.
#[derive(Debug, Clone)]
pub struct TenantStore {
    conn: RedisConn,
    keys: Keys,
}

impl TenantStore {
    pub fn new(conn: RedisConn, keys: Keys) -> Self {
        Self { conn, keys }
    }

    /// `tenant`'s ExternalId: 32 letters and digits from the OS-seeded CSPRNG, made on the
    /// first read and stable afterwards. `SET NX` then `GET` in one transaction, so
    /// concurrent first reads (two API replicas, a create racing a `GET /tenant`) all get
    /// the one that was stored first.
    pub async fn external_id(&self, tenant: &TenantId) -> Result<ExternalId, StoreError> {
        let key = self.keys.tenant_external_id(tenant);
        let fresh: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(ExternalId::LEN)
            .map(char::from)
            .collect();
        let mut conn = self.conn.clone();
        let (stored,): (String,) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&key)
            .arg(&fresh)
            .arg("NX")
            .ignore()
            .get(&key)
            .query_async(&mut conn)
            .await?;
        ExternalId::parse(&stored).map_err(|message| StoreError::Corrupt {
            what: "tenant external id",
            message,
        })
    }
}
