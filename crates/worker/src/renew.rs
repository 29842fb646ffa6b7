//! Keeping claims alive while a delivery runs.
//!
//! A delivery holds its object key's lock and an upload slot, each with a time to live so
//! that a dead worker's claims expire by themselves. A delivery that takes longer than
//! that (a very big result) must not lose them midway: the key lock is what keeps an
//! older result from overwriting a newer one. [`while_running`] renews them periodically
//! for as long as the delivery runs, and stops the moment it ends. If a renewal finds that
//! another delivery took the key meanwhile, the delivery is told to stop uploading.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// What a renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The delivery still holds its claims, for another lifetime.
    Held,
    /// Another delivery holds the object key now: this one must stop uploading.
    Lost,
}

/// Runs `work` to completion, calling `renew` every `every` meanwhile. A failed renewal
/// is logged, not fatal: the claim may still be valid, and the next try may succeed. A
/// renewal that finds the claim [`Renewal::Lost`] cancels `lost` (which `work` watches, to
/// abort its upload) and renews no more; `work` still runs to its end.
pub async fn while_running<T, E, R>(
    work: impl Future<Output = T>,
    every: Duration,
    lost: &CancellationToken,
    mut renew: impl FnMut() -> R,
) -> T
where
    E: std::fmt::Display,
    R: Future<Output = Result<Renewal, E>>,
{
    let renewing = async {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match renew().await {
                Ok(Renewal::Held) => {}
                Ok(Renewal::Lost) => {
                    lost.cancel();
                    std::future::pending::<()>().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not renew the delivery's key lock and upload slot");
                }
            }
        }
    };
    tokio::select! {
        out = work => out,
        never = renewing => never,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn renews_every_period_while_the_work_runs_and_never_after() {
        let renewals = Cell::new(0u32);
        let lost = CancellationToken::new();
        let out = while_running(
            async {
                tokio::time::sleep(Duration::from_secs(35)).await;
                "done"
            },
            Duration::from_secs(10),
            &lost,
            || {
                renewals.set(renewals.get() + 1);
                std::future::ready(Ok::<_, String>(Renewal::Held))
            },
        )
        .await;
        assert_eq!(out, "done");
        // At 10 s, 20 s and 30 s; not at 0 s (just taken) and not after the work ended.
        assert_eq!(renewals.get(), 3);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(renewals.get(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_renewal_does_not_stop_the_work_or_later_renewals() {
        let renewals = Cell::new(0u32);
        let lost = CancellationToken::new();
        let out = while_running(
            async {
                tokio::time::sleep(Duration::from_secs(25)).await;
                7
            },
            Duration::from_secs(10),
            &lost,
            || {
                renewals.set(renewals.get() + 1);
                std::future::ready(Err("redis is away"))
            },
        )
        .await;
        assert_eq!(out, 7);
        assert_eq!(renewals.get(), 2);
        assert!(!lost.is_cancelled(), "a failed renewal is not a lost claim");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_claim_cancels_the_work_and_stops_renewing() {
        let renewals = Cell::new(0u32);
        let lost = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let out = while_running(
            async {
                // The work stops when told to, and reports when that was.
                tokio::select! {
                    () = lost.cancelled() => started.elapsed(),
                    () = tokio::time::sleep(Duration::from_secs(3600)) => Duration::MAX,
                }
            },
            Duration::from_secs(10),
            &lost,
            || {
                renewals.set(renewals.get() + 1);
                let found = if renewals.get() < 2 {
                    Renewal::Held
                } else {
                    Renewal::Lost
                };
                std::future::ready(Ok::<_, String>(found))
            },
        )
        .await;
        // Held at 10 s, lost at 20 s: the work learnt it then, and nothing renewed after.
        assert_eq!(out, Duration::from_secs(20));
        assert!(lost.is_cancelled());
        assert_eq!(renewals.get(), 2);
    }
}
