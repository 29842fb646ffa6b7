//! Deliveries held while their destination is paused (or failing), and their release.
//!
//! A worker that takes a task for a paused destination parks the payload in a per-
//! destination list and acknowledges the task. Releasing moves each payload through a
//! `releasing` list back into the queue, so a crash mid-release loses nothing: leftovers
//! in `releasing` are pushed again by the next release (a duplicate at worst, and
//! deliveries are idempotent).

use crate::RedisConn;
use chrono::{DateTime, Utc};
use courier_core::delivery::{DeliveryError, DeliveryTask};
use courier_core::destination::DestinationStatus;
use courier_core::{DestinationId, TenantId};
use redis::AsyncCommands;

use crate::{
    DeadLetter, DeadLetters, DeliveryQueue, DestinationStore, HealthStore, Keys, StoreError,
};

/// Parks and releases held deliveries.
#[derive(Debug, Clone)]
pub struct HeldDeliveries {
    conn: RedisConn,
    keys: Keys,
    queue: DeliveryQueue,
}

impl HeldDeliveries {
    pub fn new(conn: RedisConn, keys: Keys, queue: DeliveryQueue) -> Self {
        Self { conn, keys, queue }
    }

    /// Parks `task` until its destination is released.
    pub async fn hold(&self, task: &DeliveryTask) -> Result<(), StoreError> {
        let json = serde_json::to_string(task).map_err(|e| StoreError::Corrupt {
            what: "delivery task",
            message: e.to_string(),
        })?;
        let mut conn = self.conn.clone();
        redis::pipe()
            .rpush(self.keys.held(&task.destination_id), json)
            .sadd(self.keys.held_destinations(), task.destination_id.as_str())
            .exec_async(&mut conn)
            .await?;
        Ok(())
    }

    /// How many deliveries are held for `destination`.
    pub async fn count(&self, destination: &DestinationId) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let held: u64 = conn.llen(self.keys.held(destination)).await?;
        let releasing: u64 = conn.llen(self.keys.releasing(destination)).await?;
        Ok(held + releasing)
    }

    /// Moves every held delivery of `destination` back into the queue; returns how many.
    pub async fn release(&self, destination: &DestinationId) -> Result<u64, StoreError> {
        let held = self.keys.held(destination);
        let releasing = self.keys.releasing(destination);
        let mut conn = self.conn.clone();
        let mut moved = 0;
        // Leftovers of a release that crashed half-way go first.
        let leftovers: Vec<String> = conn.lrange(&releasing, 0, -1).await?;
        for json in leftovers {
            self.requeue(&releasing, &json).await?;
            moved += 1;
        }
        loop {
            let next: Option<String> = redis::cmd("LMOVE")
                .arg(&held)
                .arg(&releasing)
                .arg("LEFT")
                .arg("RIGHT")
                .query_async(&mut conn)
                .await?;
            let Some(json) = next else { break };
            self.requeue(&releasing, &json).await?;
            moved += 1;
        }
        let _: () = conn
            .srem(self.keys.held_destinations(), destination.as_str())
            .await?;
        // A task held meanwhile re-adds the destination; check so it is not forgotten.
        let late: u64 = conn.llen(&held).await?;
        if late > 0 {
            let _: () = conn
                .sadd(self.keys.held_destinations(), destination.as_str())
                .await?;
        }
        if moved > 0 {
            tracing::info!(destination_id = %destination, released = moved, "held deliveries released");
        }
        Ok(moved)
    }

    /// Releases `destination`'s held deliveries if it can take them now: it still belongs
    /// to `tenant`, it is `ACTIVE`, and its health does not say failing. The one statement
    /// of that rule: the control plane calls it when a destination was updated or passed
    /// its connection test, a worker when the destination recovered while it was holding a
    /// task. Returns how many were released.
    pub async fn release_if_active(
        &self,
        destinations: &DestinationStore,
        health: &HealthStore,
        tenant: &TenantId,
        destination: &DestinationId,
    ) -> Result<u64, StoreError> {
        let active = destinations
            .summary(tenant, destination)
            .await?
            .is_some_and(|d| d.status == DestinationStatus::Active);
        if !active || health.get(destination).await?.is_failing() {
            return Ok(0);
        }
        self.release(destination).await
    }

    /// Turns every held delivery for which `expired` gives an error (the worker's rule:
    /// held too long) into a dead letter with that error, dead at `now`, each in one atomic
    /// step; returns them, for their records. A delivery released meanwhile is left to its
    /// run, and payloads being released (the `releasing` list) are not looked at.
    pub async fn dead_letter_expired(
        &self,
        dead: &DeadLetters,
        now: DateTime<Utc>,
        mut expired: impl FnMut(&DeliveryTask) -> Option<DeliveryError>,
    ) -> Result<Vec<(DeliveryTask, DeliveryError)>, StoreError> {
        let mut conn = self.conn.clone();
        let destinations: Vec<String> = conn.smembers(self.keys.held_destinations()).await?;
        let mut out = Vec::new();
        for id in destinations {
            let Ok(id) = DestinationId::parse(&id) else {
                continue;
            };
            let held = self.keys.held(&id);
            let payloads: Vec<String> = conn.lrange(&held, 0, -1).await?;
            for json in payloads {
                let Ok(task) = serde_json::from_str::<DeliveryTask>(&json) else {
                    continue;
                };
                let Some(error) = expired(&task) else {
                    continue;
                };
                let letter = DeadLetter {
                    id: task.delivery_id.to_string(),
                    destination_id: Some(task.destination_id.clone()),
                    code: error.code.clone(),
                    reason: error.message.clone(),
                    died_at: now,
                    payload: serde_json::from_str(&json).unwrap_or_default(),
                };
                if dead.add_from_held(&held, &json, &letter).await? {
                    out.push((task, error));
                }
            }
        }
        Ok(out)
    }

    async fn requeue(&self, releasing: &str, json: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        match serde_json::from_str::<DeliveryTask>(json) {
            Ok(task) => self.queue.push(task).await?,
            Err(e) => {
                tracing::error!(error = %e, "a held payload is not a delivery task; dropping it")
            }
        }
        let _: () = conn.lrem(releasing, 1, json).await?;
        Ok(())
    }
}
