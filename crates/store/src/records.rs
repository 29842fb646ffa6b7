//! Delivery records: one JSON string per delivery, plus a per-tenant index by enqueue time.

use courier_core::delivery::DeliveryRecord;
use courier_core::{DeliveryId, TenantId};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::{Keys, StoreError};

/// Reads and writes delivery records.
#[derive(Debug, Clone)]
pub struct RecordStore {
    conn: ConnectionManager,
    keys: Keys,
}

impl RecordStore {
    pub fn new(conn: ConnectionManager, keys: Keys) -> Self {
        Self { conn, keys }
    }

    /// Writes (or overwrites) a record and indexes it under its tenant.
    pub async fn put(&self, record: &DeliveryRecord) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(&Envelope::from(record)).map_err(|e| StoreError::Corrupt {
                what: "delivery record",
                message: e.to_string(),
            })?;
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .set(self.keys.delivery(&record.id), json)
            .zadd(
                self.keys.tenant_deliveries(&record.tenant),
                record.id.as_str(),
                record.enqueued_at.timestamp_millis(),
            )
            .exec_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Removes a record; used when an enqueue fails after its record was written.
    pub async fn delete(&self, record: &DeliveryRecord) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .del(self.keys.delivery(&record.id))
            .zrem(
                self.keys.tenant_deliveries(&record.tenant),
                record.id.as_str(),
            )
            .exec_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The record `id` if it belongs to `tenant`; another tenant's reads as absent.
    pub async fn get(
        &self,
        tenant: &TenantId,
        id: &DeliveryId,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        Ok(self.get_any(id).await?.filter(|r| &r.tenant == tenant))
    }

    /// The record `id` whatever its tenant; for workers.
    pub async fn get_any(&self, id: &DeliveryId) -> Result<Option<DeliveryRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = conn.get(self.keys.delivery(id)).await?;
        json.map(|j| {
            serde_json::from_str::<Envelope>(&j)
                .map(DeliveryRecord::from)
                .map_err(|e| StoreError::Corrupt {
                    what: "delivery record",
                    message: e.to_string(),
                })
        })
        .transpose()
    }
}

/// The stored form keeps the tenant, which the public JSON of a record leaves out.
#[derive(serde::Serialize, serde::Deserialize)]
struct Envelope {
    tenant: TenantId,
    record: DeliveryRecord,
}

impl From<&DeliveryRecord> for Envelope {
    fn from(r: &DeliveryRecord) -> Self {
        Self {
            tenant: r.tenant.clone(),
            record: r.clone(),
        }
    }
}

impl From<Envelope> for DeliveryRecord {
    fn from(e: Envelope) -> Self {
        DeliveryRecord {
            tenant: e.tenant,
            ..e.record
        }
    }
}
