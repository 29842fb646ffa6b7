//! The delivery queue: apalis-redis storage under Courier's namespace.
//!
//! Producers push [`DeliveryTask`]s; workers pull them as raw JSON and decode them
//! themselves, so that a corrupt payload is Courier's to report rather than a codec
//! failure inside apalis.

use std::time::Duration;

use apalis::prelude::TaskSink;
use apalis_redis::{Config, RedisStorage};
use courier_core::delivery::DeliveryTask;
use redis::aio::ConnectionManager;

use crate::{Keys, StoreError};

/// How long a worker may go silent before its in-flight tasks are handed to others.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// How often a worker reports that it is alive.
    pub heartbeat: Duration,
    /// How many reports may be missed before the worker counts as dead.
    pub missed_heartbeats: usize,
}

impl Default for Liveness {
    /// 5 s × 6 = 30 s until a dead worker's tasks move, instead of apalis's 5 minutes.
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            missed_heartbeats: 6,
        }
    }
}

/// The apalis-redis configuration both sides of the queue must agree on.
pub fn queue_config(keys: &Keys, liveness: Liveness, batch_size: usize) -> Config {
    Config::default()
        .queue(keys.queue())
        .heartbeat_interval(liveness.heartbeat)
        .missed_heartbeats(liveness.missed_heartbeats)
        .batch_size(batch_size.max(1))
        .emit_events(false)
}

/// The producer side of the queue.
#[derive(Debug, Clone)]
pub struct DeliveryQueue {
    storage: RedisStorage<DeliveryTask>,
}

impl DeliveryQueue {
    pub fn new(conn: ConnectionManager, keys: &Keys) -> Self {
        let config = queue_config(keys, Liveness::default(), 1);
        Self {
            storage: RedisStorage::new(conn).with_config(config),
        }
    }

    /// Pushes one task; returns once Redis holds it.
    pub async fn push(&self, task: DeliveryTask) -> Result<(), StoreError> {
        let mut storage = self.storage.clone();
        storage
            .push(task)
            .await
            .map_err(|e| StoreError::Queue(e.to_string()))
    }
}
