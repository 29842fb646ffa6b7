//! Every Redis key Courier reads or writes, built from one namespace so that several
//! deployments (or tests) can share one Redis without seeing each other.
//!
//! This module is the only place that knows a key's shape: the store's operations, its Lua
//! scripts (which receive every key in `KEYS`) and the tests all get their key names from
//! [`Keys`]. The keys apalis-redis keeps for the queue are named by apalis itself; they are
//! read through its [`Config`] accessors, wrapped in [`QueueKeys`].

use apalis_redis::Config;
use courier_core::delivery::DeliveryStatus;
use courier_core::{DeliveryId, DestinationId, TenantId};

/// Key builder. The default namespace is `courier`.
#[derive(Debug, Clone)]
pub struct Keys {
    ns: String,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new("courier")
    }
}

impl Keys {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            ns: namespace.into(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// String: the JSON of one destination.
    pub fn destination(&self, id: &DestinationId) -> String {
        format!("{}:destination:{id}", self.ns)
    }

    /// A `KEYS`/`SCAN` pattern matching every key of every destination: its record, and
    /// its indexes, held lists, health, slots, locks and markers.
    pub fn destination_pattern(&self) -> String {
        format!("{}:destination:*", self.ns)
    }

    /// Sorted set of a tenant's destination ids, all scored 0: ids are ULIDs, so the
    /// lexicographic order is the creation order and pages are cut with ZRANGEBYLEX.
    pub fn tenant_destinations(&self, tenant: &TenantId) -> String {
        format!("{}:tenant:{tenant}:destinations", self.ns)
    }

    /// String: the tenant's ExternalId for cross-account roles, created once with `SET NX`
    /// (see [`crate::TenantStore::external_id`]) and never changed.
    pub fn tenant_external_id(&self, tenant: &TenantId) -> String {
        format!("{}:tenant:{tenant}:external-id", self.ns)
    }

    /// String: the JSON of one delivery record.
    pub fn delivery(&self, id: &DeliveryId) -> String {
        self.delivery_of(id.as_str())
    }

    /// A `KEYS`/`SCAN` pattern matching every delivery record.
    pub fn delivery_pattern(&self) -> String {
        self.delivery_of("*")
    }

    /// [`delivery`](Self::delivery) for an id read back from an index, unparsed.
    pub fn delivery_of(&self, id: &str) -> String {
        format!("{}:delivery:{id}", self.ns)
    }

    /// Lex-ordered set (score 0) of a tenant's delivery ids; ULIDs sort by enqueue time.
    pub fn tenant_deliveries(&self, tenant: &TenantId) -> String {
        format!("{}:tenant:{tenant}:deliveries", self.ns)
    }

    /// Lex-ordered set (score 0) of a tenant's delivery ids whose record was last written
    /// with `status`: `GET /deliveries?status=` reads it. A record's id is in exactly one of
    /// its tenant's status indexes, moved by the same write that changes the record.
    pub fn tenant_status_deliveries(&self, tenant: &TenantId, status: DeliveryStatus) -> String {
        format!(
            "{}:tenant:{tenant}:status:{}:deliveries",
            self.ns,
            status.as_str()
        )
    }

    /// Set of a tenant's delivery ids that are waiting (recorded `QUEUED`, not final yet):
    /// its size is what `COURIER_MAX_WAITING_PER_TENANT` bounds. An id enters when its
    /// record is written `QUEUED` and leaves when it is written final, in the same write.
    pub fn tenant_waiting(&self, tenant: &TenantId) -> String {
        format!("{}:tenant:{tenant}:waiting", self.ns)
    }

    /// String: how many connection tests a tenant started in the current window; it
    /// expires with the window (`COURIER_CONNECTION_TESTS_PER_MINUTE`).
    pub fn connection_tests(&self, tenant: &TenantId) -> String {
        format!("{}:tenant:{tenant}:connection-tests", self.ns)
    }

    /// Lex-ordered set of the delivery ids of one destination.
    pub fn destination_deliveries(&self, id: &DestinationId) -> String {
        format!("{}:destination:{id}:deliveries", self.ns)
    }

    /// Set of the names of the tenant and destination delivery indexes, so that the janitor
    /// finds them without scanning the keyspace.
    pub fn delivery_indexes(&self) -> String {
        format!("{}:delivery-indexes", self.ns)
    }

    /// `SCAN` patterns that match every tenant and destination delivery index, for indexes
    /// written before [`delivery_indexes`](Self::delivery_indexes) registered them. Job
    /// indexes match the tenant pattern too; [`is_owner_index`](Self::is_owner_index)
    /// tells them apart.
    pub fn delivery_index_patterns(&self) -> [String; 2] {
        [
            format!("{}:tenant:*:deliveries", self.ns),
            format!("{}:destination:*:deliveries", self.ns),
        ]
    }

    /// Whether `key` is a tenant's, a tenant's status or a destination's delivery index
    /// (not a job's, which expires by itself, nor anything else).
    pub fn is_owner_index(&self, key: &str) -> bool {
        let Some(rest) = key
            .strip_prefix(self.ns.as_str())
            .and_then(|r| r.strip_prefix(':'))
        else {
            return false;
        };
        let one_segment = |owner: &str| !owner.is_empty() && !owner.contains(':');
        ["tenant:", "destination:"].iter().any(|kind| {
            rest.strip_prefix(kind)
                .and_then(|r| r.strip_suffix(":deliveries"))
                .is_some_and(|owner| {
                    one_segment(owner)
                        || (*kind == "tenant:"
                            && owner.split_once(":status:").is_some_and(|(t, s)| {
                                one_segment(t)
                                    && DeliveryStatus::ALL.iter().any(|x| x.as_str() == s)
                            }))
                })
        })
    }

    /// Lex-ordered set of the delivery ids of one job of one tenant.
    pub fn job_deliveries(&self, tenant: &TenantId, job_id: &str) -> String {
        format!("{}:tenant:{tenant}:job:{job_id}:deliveries", self.ns)
    }

    /// Set of the delivery ids of one destination that are not final yet.
    pub fn destination_pending(&self, id: &DestinationId) -> String {
        format!("{}:destination:{id}:pending", self.ns)
    }

    /// List of task payloads held while their destination is paused.
    pub fn held(&self, id: &DestinationId) -> String {
        format!("{}:destination:{id}:held", self.ns)
    }

    /// List of held payloads being moved back to the queue (survives a crash mid-move).
    pub fn releasing(&self, id: &DestinationId) -> String {
        format!("{}:destination:{id}:releasing", self.ns)
    }

    /// String: JSON health of one destination (consecutive failures, failing since).
    pub fn health(&self, id: &DestinationId) -> String {
        format!("{}:destination:{id}:health", self.ns)
    }

    /// Set of destination ids currently failing.
    pub fn failing_destinations(&self) -> String {
        format!("{}:failing", self.ns)
    }

    /// Set of destination ids that are paused.
    pub fn paused_destinations(&self) -> String {
        format!("{}:paused", self.ns)
    }

    /// Set of destination ids that may have held deliveries.
    pub fn held_destinations(&self) -> String {
        format!("{}:held-destinations", self.ns)
    }

    /// Sorted set of a destination's upload slot holders, scored by claim expiry (ms).
    pub fn upload_slots(&self, id: &DestinationId) -> String {
        format!("{}:destination:{id}:upload-slots", self.ns)
    }

    /// String, present for a moment after one of a destination's upload slots is given
    /// back: its uploads are moving, so a full cap is worth waiting for.
    pub fn upload_slots_moved(&self, id: &DestinationId) -> String {
        format!("{}:destination:{id}:upload-slots:moved", self.ns)
    }

    /// Hash of a destination's learned limit on concurrent uploads: `limit` (fractional),
    /// `rtt` (moving average of one-request uploads, ms), `cutAt` (last decrease, ms).
    pub fn upload_limit(&self, id: &DestinationId) -> String {
        format!("{}:destination:{id}:upload-limit", self.ns)
    }

    /// The lock of one object key of a destination.
    pub fn object_lock(&self, id: &DestinationId, key: &str) -> String {
        format!("{}:destination:{id}:object-lock:{key}", self.ns)
    }

    /// The marker of the newest result delivered at one object key.
    pub fn object_marker(&self, id: &DestinationId, key: &str) -> String {
        format!("{}:destination:{id}:object:{key}", self.ns)
    }

    /// String: the start (unix s) of the last window of a batched destination claimed for
    /// closing; an append never goes into that window or an earlier one.
    pub fn batch_sealed(&self, id: &DestinationId) -> String {
        format!("{}:destination:{id}:batch-sealed", self.ns)
    }

    /// List of one window's entries (a delivery id line, then its NDJSON lines), in the
    /// order they were appended; deleted once the window's objects landed.
    pub fn batch_entries(&self, id: &DestinationId, window_start: i64) -> String {
        format!("{}:destination:{id}:batch:{window_start}:entries", self.ns)
    }

    /// Hash of one open window: `end`, `rows`, `bytes`, `entries`, `attempts`,
    /// `firstAttemptAt`, and `status` (`FAILED` once given up).
    pub fn batch_window(&self, id: &DestinationId, window_start: i64) -> String {
        format!("{}:destination:{id}:batch:{window_start}", self.ns)
    }

    /// String: the claim of the worker closing one window (its token), with a TTL that
    /// the worker renews while it works.
    pub fn batch_claim(&self, id: &DestinationId, window_start: i64) -> String {
        format!("{}:destination:{id}:batch:{window_start}:claim", self.ns)
    }

    /// Sorted set of every open window of every batched destination (members
    /// `{destination id} {window start}`), scored by when it may be closed (unix s): its
    /// end plus the grace, or its next retry.
    pub fn batch_due(&self) -> String {
        format!("{}:batch-due", self.ns)
    }

    /// String: the JSON of one batch object's record.
    pub fn batch_record(&self, batch_id: &str) -> String {
        format!("{}:batch:{batch_id}", self.ns)
    }

    /// Sorted set of a destination's batch ids, scored by window start × 10⁴ + sequence.
    pub fn destination_batches(&self, id: &DestinationId) -> String {
        format!("{}:destination:{id}:batches", self.ns)
    }

    /// Sorted set of dead-lettered delivery ids, scored by when they died (ms).
    pub fn dead_letters(&self) -> String {
        format!("{}:dead", self.ns)
    }

    /// String: the JSON of one dead letter (reason and task payload).
    pub fn dead_letter(&self, id: &str) -> String {
        format!("{}:dead:{id}", self.ns)
    }

    /// String, present while one replay of dead letter `id` is under way (so that a second,
    /// concurrent one does not queue its task again); expires by itself.
    pub fn dead_letter_replaying(&self, id: &str) -> String {
        format!("{}:replaying:{id}", self.ns)
    }

    /// String: what one `Idempotency-Key` of a tenant stands for (the request's fingerprint
    /// and, once queued, its delivery id); kept 24 hours.
    pub fn idempotency(&self, tenant: &TenantId, key: &str) -> String {
        format!("{}:tenant:{tenant}:idempotency:{key}", self.ns)
    }

    /// The apalis-redis queue name; apalis derives its own keys from it.
    pub fn queue(&self) -> String {
        format!("{}:deliveries", self.ns)
    }

    /// The pub/sub channel a new task is announced on, so that idle workers fetch it at
    /// once instead of at their next poll (a channel, not a key: nothing is stored).
    pub fn queue_wake_channel(&self) -> String {
        format!("{}:deliveries:wake", self.ns)
    }

    /// The keys apalis-redis keeps for [`queue`](Self::queue).
    pub fn queue_keys(&self) -> QueueKeys {
        QueueKeys {
            config: Config::default().queue(self.queue()),
        }
    }
}

/// The keys apalis-redis derives from the queue name, as its [`Config`] names them. Courier
/// reads them for metrics, hands a stopping worker's tasks back, and drops finished tasks'
/// data; it never invents their shapes.
#[derive(Debug, Clone)]
pub struct QueueKeys {
    config: Config,
}

impl QueueKeys {
    /// List of task ids ready to run.
    pub fn active(&self) -> String {
        self.config.active_jobs_list()
    }

    /// Sorted set of task ids scheduled for later, scored by when they are due (unix s).
    pub fn scheduled(&self) -> String {
        self.config.scheduled_jobs_set()
    }

    /// Sorted set of registered worker names, scored by their last heartbeat (unix s).
    pub fn workers(&self) -> String {
        self.config.workers_set()
    }

    /// Set of the task ids `worker` has taken and not acknowledged yet. apalis names it
    /// with [`Config::inflight_set_for`], which wants a whole `WorkerContext`; this is the
    /// same key for a worker known by its name. `"*"` gives a `KEYS`/`SCAN` pattern.
    pub fn inflight(&self, worker: &str) -> String {
        format!("{}:{worker}", self.config.inflight_jobs_set())
    }

    /// Hash of task payloads by task id.
    pub fn data(&self) -> String {
        self.config.job_data_hash()
    }

    /// Hash of one task's metadata (attempts, status, …); apalis appends the task id to
    /// [`Config::job_meta_hash`].
    pub fn meta(&self, task_id: &str) -> String {
        format!("{}:{task_id}", self.config.job_meta_hash())
    }

    /// Set of finished task ids, whose data and metadata the janitor drops.
    pub fn done(&self) -> String {
        self.config.done_jobs_set()
    }

    /// Set of task ids apalis itself gave up on (Courier's dead letters are elsewhere).
    pub fn dead(&self) -> String {
        self.config.dead_jobs_set()
    }

    /// Set of task ids apalis marked failed.
    pub fn failed(&self) -> String {
        self.config.failed_jobs_set()
    }

    /// List that wakes workers blocked waiting for tasks.
    pub fn signal(&self) -> String {
        self.config.signal_list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_under_the_namespace() {
        let keys = Keys::new("ns");
        let dest = DestinationId::parse("dst_01J0000000000000000000000A").unwrap();
        let tenant = TenantId::parse("acme").unwrap();
        assert_eq!(keys.destination(&dest), format!("ns:destination:{dest}"));
        assert_eq!(keys.held(&dest), format!("ns:destination:{dest}:held"));
        assert_eq!(
            keys.object_lock(&dest, "a/b.csv"),
            format!("ns:destination:{dest}:object-lock:a/b.csv")
        );
        assert_eq!(keys.delivery_of("dlv_x"), "ns:delivery:dlv_x");
        assert_eq!(keys.delivery_pattern(), "ns:delivery:*");
        assert_eq!(keys.destination_pattern(), "ns:destination:*");
        assert_eq!(keys.queue(), "ns:deliveries");
        let q = keys.queue_keys();
        assert_eq!(q.active(), "ns:deliveries:active");
        assert_eq!(q.scheduled(), "ns:deliveries:scheduled");
        assert_eq!(q.workers(), "ns:deliveries:workers");
        assert_eq!(q.inflight("w1"), "ns:deliveries:inflight:w1");
        assert_eq!(q.data(), "ns:deliveries:data");
        assert_eq!(q.meta("t1"), "ns:deliveries:meta:t1");
        assert_eq!(q.done(), "ns:deliveries:done");
        assert_eq!(q.signal(), "ns:deliveries:signal");
        assert_eq!(keys.tenant_deliveries(&tenant), "ns:tenant:acme:deliveries");
        assert_eq!(
            keys.tenant_external_id(&tenant),
            "ns:tenant:acme:external-id"
        );
        assert!(!keys.is_owner_index(&keys.tenant_external_id(&tenant)));
    }

    #[test]
    fn owner_indexes_are_told_apart_from_job_indexes() {
        let keys = Keys::new("ns");
        let tenant = TenantId::parse("acme").unwrap();
        let dest = DestinationId::generate();
        assert!(keys.is_owner_index(&keys.tenant_deliveries(&tenant)));
        assert!(keys.is_owner_index(&keys.destination_deliveries(&dest)));
        assert!(!keys.is_owner_index(&keys.job_deliveries(&tenant, "j1")));
        assert!(!keys.is_owner_index(&keys.destination_pending(&dest)));
        assert!(!keys.is_owner_index(&Keys::new("other").tenant_deliveries(&tenant)));
        assert!(!keys.is_owner_index("ns:tenant::deliveries"));
        for status in DeliveryStatus::ALL {
            let index = keys.tenant_status_deliveries(&tenant, status);
            assert!(keys.is_owner_index(&index), "{index}");
        }
        assert_eq!(
            keys.tenant_status_deliveries(&tenant, DeliveryStatus::InProgress),
            "ns:tenant:acme:status:IN_PROGRESS:deliveries"
        );
        assert!(!keys.is_owner_index("ns:tenant:acme:status:NOPE:deliveries"));
        assert!(!keys.is_owner_index(&keys.job_deliveries(&tenant, "status:QUEUED")));
        assert!(!keys.is_owner_index(&keys.tenant_waiting(&tenant)));
    }
}
