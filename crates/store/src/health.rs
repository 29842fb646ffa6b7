//! Destination health: consecutive permanent failures, and the FAILING state that holds a
//! destination's deliveries instead of failing them one after another.

use crate::RedisConn;
use chrono::{DateTime, Utc};
use courier_core::DestinationId;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::{Keys, StoreError};

/// What the fleet knows about a destination's recent deliveries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationHealth {
    /// Permanent failures in a row since the last success.
    pub consecutive_failures: u32,
    /// Set once `consecutive_failures` reached the threshold; deliveries are held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_message: Option<String>,
}

impl DestinationHealth {
    pub fn is_failing(&self) -> bool {
        self.failing_since.is_some()
    }

    /// From its stored JSON; none (or unreadable) is a healthy destination.
    pub(crate) fn from_json(json: Option<&str>) -> Self {
        json.and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default()
    }
}

/// Reads and updates destination health.
#[derive(Debug, Clone)]
pub struct HealthStore {
    conn: RedisConn,
    keys: Keys,
}

impl HealthStore {
    pub fn new(conn: RedisConn, keys: Keys) -> Self {
        Self { conn, keys }
    }

    pub async fn get(&self, id: &DestinationId) -> Result<DestinationHealth, StoreError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = conn.get(self.keys.health(id)).await?;
        Ok(DestinationHealth::from_json(json.as_deref()))
    }

    /// A delivery succeeded: the streak ends.
    pub async fn record_success(&self, id: &DestinationId) -> Result<(), StoreError> {
        self.clear(id).await
    }

    /// Forgets failures, e.g. after the destination was updated or its test passed.
    pub async fn clear(&self, id: &DestinationId) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .del(self.keys.health(id))
            .srem(self.keys.failing_destinations(), id.as_str())
            .exec_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Counts one more permanent failure; marks the destination failing once `threshold`
    /// failures came in a row. Returns the new health.
    pub async fn record_permanent_failure(
        &self,
        id: &DestinationId,
        code: &str,
        message: &str,
        threshold: u32,
    ) -> Result<DestinationHealth, StoreError> {
        let mut health = self.get(id).await?;
        health.consecutive_failures += 1;
        health.last_error_code = Some(code.to_owned());
        health.last_error_message = Some(message.to_owned());
        if health.consecutive_failures >= threshold && health.failing_since.is_none() {
            health.failing_since = Some(Utc::now());
        }
        let json = serde_json::to_string(&health).map_err(|e| StoreError::Corrupt {
            what: "destination health",
            message: e.to_string(),
        })?;
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.set(self.keys.health(id), json);
        if health.is_failing() {
            pipe.sadd(self.keys.failing_destinations(), id.as_str());
        }
        pipe.exec_async(&mut conn).await?;
        Ok(health)
    }

    /// How many destinations are failing, fleet-wide.
    pub async fn failing_count(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        Ok(conn.scard(self.keys.failing_destinations()).await?)
    }
}
