//! A fleet-wide, adaptive limit on concurrent uploads per destination, kept in Redis, so
//! that a healthy destination gets as many uploads at once as it takes, and one whose
//! endpoint hangs or throttles holds at most its share of the fleet.
//!
//! Each destination has a sorted set of slot holders scored by when their claim expires;
//! a worker takes a slot before it starts a delivery and gives it back after, saying how
//! the upload went ([`Signal`]). The limit is learned from those signals, fleet-wide, by
//! additive increase and multiplicative decrease (`lua/slot_release.lua`), between the
//! bounds of [`Concurrency`]. Claims of a worker that died expire on their own. Taking or
//! giving back a slot also marks the destination as *moving* for [`MOVING_FOR`], which
//! tells a worker that finds every slot taken whether one is likely to free up soon (a
//! busy destination) or not (one whose endpoint hangs, so that its uploads neither end
//! nor start).

use std::time::Duration;

use crate::RedisConn;
use chrono::Utc;
use courier_core::{DeliveryId, DestinationId};

use crate::scripts::{SLOT_ACQUIRE, SLOT_RELEASE};
use crate::{Keys, StoreError};

/// How long a destination counts as moving after one of its slots was taken or given back.
pub const MOVING_FOR: Duration = Duration::from_secs(1);

pub(crate) fn moving_for_ms() -> u64 {
    u64::try_from(MOVING_FOR.as_millis()).unwrap_or(1000)
}

/// The answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Taken,
    /// Every slot is held. `moving`: one was taken or given back within [`MOVING_FOR`].
    Full {
        moving: bool,
    },
}

impl Claim {
    /// `slot_acquire.lua`'s answer: 1 taken, 2 full but moving, else full.
    pub(crate) fn from_answer(answer: i64) -> Self {
        match answer {
            1 => Claim::Taken,
            moving => Claim::Full {
                moving: moving == 2,
            },
        }
    }
}

/// How long a destination's learned limit is kept after its last upload.
pub const LIMIT_KEPT_FOR: Duration = Duration::from_secs(60 * 60);

/// The bounds of a destination's adaptive limit on concurrent uploads, fleet-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    /// Where a destination starts, before any upload taught anything.
    pub initial: u32,
    /// The limit never drops below this, however the destination answers.
    pub min: u32,
    /// Nor rises above this, however fast it answers.
    pub max: u32,
}

impl Concurrency {
    /// The limit of a new destination is its `initial` clamped to the bounds.
    pub fn start(&self) -> u32 {
        self.initial.clamp(self.min, self.max.max(self.min))
    }
}

/// A fixed limit of `n` (`min`, `initial` and `max` all `n`).
impl From<u32> for Concurrency {
    fn from(n: u32) -> Self {
        Self {
            initial: n,
            min: n,
            max: n,
        }
    }
}

/// What an upload says about its destination's capacity, given back with its slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// It succeeded; `latency` is its time when it was a single request (a multipart
    /// upload's time depends on its size, not on the destination's load).
    Done { latency: Option<Duration> },
    /// Throttled, a 5xx, a timeout, a refused connection: the destination has too much.
    Overloaded,
    /// Says nothing about the destination's load (a permanent refusal, bad rows, a
    /// delivery that never started).
    Neutral,
}

/// How giving a slot back changed its destination's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitChange {
    Grown,
    Unchanged,
    /// Halved: the destination was overloaded.
    Halved,
    /// Trimmed by a tenth: a one-request upload took over twice its usual time.
    Trimmed,
}

/// A destination's limit after a slot was given back, and how that changed it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Released {
    /// The limit now (fractional; the whole part is what [`UploadSlots::acquire`] allows).
    pub limit: f64,
    pub change: LimitChange,
}

impl Released {
    /// From `slot_release.lua`'s reply: the limit in thousandths and the change.
    #[allow(clippy::cast_precision_loss)]
    pub(crate) fn from_reply((thousandths, change): (i64, i64)) -> Self {
        Released {
            limit: thousandths as f64 / 1000.0,
            change: match change {
                1 => LimitChange::Grown,
                -1 => LimitChange::Halved,
                -2 => LimitChange::Trimmed,
                _ => LimitChange::Unchanged,
            },
        }
    }
}

/// Takes and gives back upload slots.
#[derive(Debug, Clone)]
pub struct UploadSlots {
    conn: RedisConn,
    keys: Keys,
    /// The bounds of each destination's limit.
    pub concurrency: Concurrency,
    /// How long a claim lasts if its holder never gives it back (longer than any upload).
    pub claim_ttl: Duration,
}

impl UploadSlots {
    pub fn new(
        conn: RedisConn,
        keys: Keys,
        concurrency: impl Into<Concurrency>,
        claim_ttl: Duration,
    ) -> Self {
        Self {
            conn,
            keys,
            concurrency: concurrency.into(),
            claim_ttl,
        }
    }

    /// Takes a slot of `dest` for `holder` (again, if it holds one already).
    pub async fn acquire(
        &self,
        dest: &DestinationId,
        holder: &DeliveryId,
    ) -> Result<Claim, StoreError> {
        let now = Utc::now().timestamp_millis();
        let expires = now + i64::try_from(self.claim_ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let mut conn = self.conn.clone();
        let taken: i64 = SLOT_ACQUIRE
            .key(self.keys.upload_slots(dest))
            .key(self.keys.upload_slots_moved(dest))
            .key(self.keys.upload_limit(dest))
            .arg(now)
            .arg(expires)
            .arg(self.concurrency.start())
            .arg(holder.as_str())
            .arg(moving_for_ms())
            .arg(self.concurrency.min)
            .arg(self.concurrency.max)
            .invoke_async(&mut conn)
            .await?;
        Ok(Claim::from_answer(taken))
    }

    /// Gives `holder`'s slot of `dest` back, marks the destination as moving, and teaches
    /// its limit what the upload saw.
    pub async fn release(
        &self,
        dest: &DestinationId,
        holder: &DeliveryId,
        signal: Signal,
    ) -> Result<Released, StoreError> {
        let (keys, args) = self.release_parts(dest, holder, signal);
        let mut invocation = SLOT_RELEASE.prepare_invoke();
        for k in &keys {
            invocation.key(k);
        }
        for a in &args {
            invocation.arg(a);
        }
        let mut conn = self.conn.clone();
        let reply: (i64, i64) = invocation.invoke_async(&mut conn).await?;
        Ok(Released::from_reply(reply))
    }

    /// The keys and arguments of `lib/slot_release.lua` (what `slot_release.lua` takes,
    /// and `finish.lua` after the record's): 3 keys, 9 arguments, the holder first.
    pub(crate) fn release_parts(
        &self,
        dest: &DestinationId,
        holder: &DeliveryId,
        signal: Signal,
    ) -> ([String; 3], [String; 9]) {
        let (name, latency) = match signal {
            Signal::Done { latency } => ("done", latency.map_or(-1, millis)),
            Signal::Overloaded => ("overloaded", -1),
            Signal::Neutral => ("neutral", -1),
        };
        (
            [
                self.keys.upload_slots(dest),
                self.keys.upload_slots_moved(dest),
                self.keys.upload_limit(dest),
            ],
            [
                holder.as_str().to_owned(),
                moving_for_ms().to_string(),
                Utc::now().timestamp_millis().to_string(),
                name.to_owned(),
                latency.to_string(),
                self.concurrency.start().to_string(),
                self.concurrency.min.to_string(),
                self.concurrency.max.to_string(),
                millis(LIMIT_KEPT_FOR).to_string(),
            ],
        )
    }

    /// The limit `dest` has now: learned, or where it starts.
    pub async fn limit(&self, dest: &DestinationId) -> Result<f64, StoreError> {
        let mut conn = self.conn.clone();
        let learned: Option<f64> = redis::cmd("HGET")
            .arg(self.keys.upload_limit(dest))
            .arg("limit")
            .query_async(&mut conn)
            .await?;
        let (min, max) = (
            f64::from(self.concurrency.min),
            f64::from(self.concurrency.max),
        );
        Ok(learned
            .unwrap_or(f64::from(self.concurrency.start()))
            .clamp(min, max.max(min)))
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
