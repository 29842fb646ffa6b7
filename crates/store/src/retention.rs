//! Keeping Redis memory bounded: finished apalis task data is removed once a task is done,
//! and Courier's own history (final records, dead letters, index entries) is dropped after
//! the retention period. Without this, apalis-redis keeps every task's payload and
//! metadata forever.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use redis::Script;
use redis::aio::ConnectionManager;

use crate::{Keys, StoreError};

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Payloads and metadata of finished apalis tasks.
    pub tasks: u64,
    /// Index entries of records that expired.
    pub index_entries: u64,
    /// Dead letters older than the retention.
    pub dead_letters: u64,
}

/// Removes what no longer needs to be kept.
#[derive(Debug)]
pub struct Janitor {
    conn: ConnectionManager,
    keys: Keys,
    retention: Duration,
    /// Whether indexes written before they were registered have been looked for.
    registered_old_indexes: AtomicBool,
}

impl Janitor {
    pub fn new(conn: ConnectionManager, keys: Keys, retention: Duration) -> Self {
        Self {
            conn,
            keys,
            retention,
            registered_old_indexes: AtomicBool::new(false),
        }
    }

    /// One sweep; safe to run from every worker at once.
    pub async fn sweep(&self) -> Result<Swept, StoreError> {
        let mut swept = Swept::default();
        let mut conn = self.conn.clone();
        let queue = self.keys.queue();
        loop {
            let n: u64 = DROP_DONE_TASKS
                .key(format!("{queue}:done"))
                .key(format!("{queue}:data"))
                .key(format!("{queue}:meta"))
                .arg(1000)
                .invoke_async(&mut conn)
                .await?;
            swept.tasks += n;
            if n < 1000 {
                break;
            }
        }
        let cutoff = Utc::now() - chrono::Duration::from_std(self.retention).unwrap_or_default();
        let ms = u64::try_from(cutoff.timestamp_millis()).unwrap_or(0);
        let oldest_kept = format!("(dlv_{}", ulid::Ulid::from_parts(ms, 0));
        if !self.registered_old_indexes.load(Ordering::Relaxed) {
            self.register_old_indexes(&mut conn).await?;
            self.registered_old_indexes.store(true, Ordering::Relaxed);
        }
        // The indexes are registered when written, so a sweep costs as many commands as
        // there are tenants and destinations, not a scan of the keyspace.
        let index_keys: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.delivery_indexes())
            .query_async(&mut conn)
            .await?;
        for key in index_keys {
            let n: u64 = TRIM_INDEX
                .key(&key)
                .key(self.keys.delivery_indexes())
                .arg(&oldest_kept)
                .invoke_async(&mut conn)
                .await?;
            swept.index_entries += n;
        }
        let old: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.dead_letters())
            .arg("-inf")
            .arg(cutoff.timestamp_millis())
            .query_async(&mut conn)
            .await?;
        for id in &old {
            redis::pipe()
                .del(self.keys.dead_letter(id))
                .zrem(self.keys.dead_letters(), id)
                .exec_async(&mut conn)
                .await?;
        }
        swept.dead_letters = old.len() as u64;
        Ok(swept)
    }
}

impl Janitor {
    /// Registers indexes written before they were registered on write (once per process:
    /// a scan of the keyspace).
    async fn register_old_indexes(&self, conn: &mut ConnectionManager) -> Result<(), StoreError> {
        let ns = self.keys.namespace();
        for (prefix, pattern) in [
            (format!("{ns}:tenant:"), format!("{ns}:tenant:*:deliveries")),
            (
                format!("{ns}:destination:"),
                format!("{ns}:destination:*:deliveries"),
            ),
        ] {
            let mut iter: redis::AsyncIter<String> = redis::cmd("SCAN")
                .cursor_arg(0)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .clone()
                .iter_async(conn)
                .await?;
            let mut found = Vec::new();
            while let Some(k) = iter.next_item().await {
                let k = k?;
                // Job indexes (`tenant:T:job:J:deliveries`) match the tenant pattern too;
                // they expire by themselves.
                let owner = k
                    .strip_prefix(prefix.as_str())
                    .and_then(|rest| rest.strip_suffix(":deliveries"));
                if owner.is_some_and(|o| !o.contains(':')) {
                    found.push(k);
                }
            }
            drop(iter);
            if !found.is_empty() {
                let _: () = redis::cmd("SADD")
                    .arg(self.keys.delivery_indexes())
                    .arg(&found)
                    .query_async(conn)
                    .await?;
            }
        }
        Ok(())
    }
}

/// Drops an index's entries older than the retention, and forgets the index once empty.
static TRIM_INDEX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS[1]: a delivery index   KEYS[2]: the set of indexes
-- ARGV[1]: the lex bound of the oldest id kept, exclusive ("(dlv_…")
-- Returns: how many entries were dropped.
local n = redis.call('ZREMRANGEBYLEX', KEYS[1], '-', ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SREM', KEYS[2], KEYS[1])
end
return n
"#,
    )
});

/// Drops the payload and metadata of up to ARGV[1] finished tasks.
static DROP_DONE_TASKS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS[1]: apalis's done set   KEYS[2]: its task data hash   KEYS[3]: its metadata prefix
-- ARGV[1]: how many to drop at most
-- Returns: how many were dropped.
local ids = redis.call('SPOP', KEYS[1], tonumber(ARGV[1]))
for _, id in ipairs(ids) do
    redis.call('HDEL', KEYS[2], id)
    redis.call('DEL', KEYS[3] .. ':' .. id)
end
return #ids
"#,
    )
});
