//! Per-tenant quotas and rate limits, counted in Redis so that every API process (and every
//! `courier enqueue`) shares one count.
//!
//! - Quotas are checked and taken in the same script as the write they bound
//!   ([`crate::DestinationStore::create_within`], [`crate::RecordStore::put_queued`]): two
//!   concurrent requests cannot both take the last place, and nothing is written when the
//!   quota is full. Their counts are the sizes of sets the writes keep anyway (a tenant's
//!   destinations; its waiting deliveries), so a repeated write cannot skew them.
//! - Rate limits ([`RateLimiter`]) are a fixed window counter per tenant that starts with the
//!   first use and expires with the window.

use std::time::Duration;

use courier_core::TenantId;

use crate::scripts::RATE_WINDOW;
use crate::{Keys, RedisConn, StoreError};

/// A quota was full: nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// How many the tenant has (at least the limit).
    pub used: u64,
}

/// What a rate limiter said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Allowed and counted; `used` uses in this window so far, this one included.
    Allowed { used: u64 },
    /// Refused, not counted; the window ends in `retry_after`.
    Refused { retry_after: Duration },
}

/// Fixed-window rate limits per tenant.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    conn: RedisConn,
    keys: Keys,
}

impl RateLimiter {
    pub fn new(conn: RedisConn, keys: Keys) -> Self {
        Self { conn, keys }
    }

    /// Counts one connection test of `tenant` if fewer than `limit` were started in the
    /// current `window` (which starts with the window's first test).
    pub async fn take_connection_test(
        &self,
        tenant: &TenantId,
        limit: u64,
        window: Duration,
    ) -> Result<RateDecision, StoreError> {
        let mut conn = self.conn.clone();
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let (allowed, n): (u8, u64) = RATE_WINDOW
            .key(self.keys.connection_tests(tenant))
            .arg(limit)
            .arg(window_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(if allowed == 1 {
            RateDecision::Allowed { used: n }
        } else {
            RateDecision::Refused {
                retry_after: Duration::from_millis(n),
            }
        })
    }
}
