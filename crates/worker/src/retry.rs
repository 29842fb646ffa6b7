//! Courier's retry policy: plain data with documented defaults, capped in attempts and in
//! total time, exponential with full jitter. The random source is injected so tests can
//! assert exact delays. Replaces apalis-redis's hard-coded 25 tries at `now + attempt` s.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use rand::Rng;

/// When and how often a transient failure is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included. Default 12.
    pub max_attempts: u32,
    /// The cap of the first retry's delay; each later cap doubles. Default 1 s.
    pub min_delay: Duration,
    /// The largest cap. Default 60 s.
    pub max_delay: Duration,
    /// No retry is scheduled past this much time after the first attempt. Default 30 min.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_elapsed: Duration::from_secs(30 * 60),
        }
    }
}

impl RetryPolicy {
    /// The cap of the delay after the `attempts_made`-th attempt: `min_delay × 2^(n-1)`,
    /// at most `max_delay` (backon does the arithmetic).
    pub fn cap(&self, attempts_made: u32) -> Duration {
        let n = attempts_made.max(1) as usize;
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(n)
            .build()
            .nth(n - 1)
            .unwrap_or(self.max_delay)
    }

    /// The delay before the next attempt, or `None` when the policy gives up: after
    /// `max_attempts`, or when the delay would end past `max_elapsed`. Full jitter: a
    /// uniform draw in `[0, cap]`, never below 1 ms.
    pub fn next_delay(
        &self,
        attempts_made: u32,
        elapsed: Duration,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        if attempts_made >= self.max_attempts {
            return None;
        }
        let cap = u64::try_from(self.cap(attempts_made).as_millis()).unwrap_or(u64::MAX);
        let delay = Duration::from_millis(rng.random_range(1..=cap.max(1)));
        (elapsed + delay <= self.max_elapsed).then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            max_elapsed: Duration::from_secs(60),
        }
    }

    #[test]
    fn caps_double_up_to_the_maximum() {
        let caps: Vec<u64> = (1..=6).map(|n| policy().cap(n).as_secs()).collect();
        assert_eq!(caps, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn seeded_jitter_gives_exact_delays_within_each_cap() {
        let p = policy();
        let mut a = StdRng::seed_from_u64(7);
        let mut b = StdRng::seed_from_u64(7);
        let run = |rng: &mut StdRng| -> Vec<Duration> {
            (1..=5)
                .map(|n| p.next_delay(n, Duration::ZERO, rng).unwrap())
                .collect()
        };
        let first = run(&mut a);
        assert_eq!(first, run(&mut b), "same seed, same delays");
        for (n, d) in first.iter().enumerate() {
            assert!(
                *d >= Duration::from_millis(1) && *d <= p.cap(n as u32 + 1),
                "{d:?}"
            );
        }
        // Full jitter spreads the delays: not every draw sits at the cap.
        assert!(first.iter().zip(1..).any(|(d, n)| *d < p.cap(n)));
    }

    #[test]
    fn gives_up_after_max_attempts_or_max_elapsed() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(1);
        assert!(p.next_delay(5, Duration::ZERO, &mut rng).is_some());
        assert_eq!(
            p.next_delay(6, Duration::ZERO, &mut rng),
            None,
            "6 tries made"
        );
        // A delay that would end past max_elapsed is not scheduled.
        assert_eq!(p.next_delay(1, Duration::from_secs(60), &mut rng), None);
        let near = Duration::from_secs(59) + Duration::from_millis(999);
        let d = p.next_delay(1, near, &mut rng);
        assert!(d.is_none_or(|d| near + d <= p.max_elapsed));
    }

    /// The schedule as a worker lives it, with paused time: each retry waits its delay.
    #[tokio::test(start_paused = true)]
    async fn a_schedule_under_paused_time() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(42);
        let start = tokio::time::Instant::now();
        let mut made = 1;
        let mut waited = Duration::ZERO;
        while let Some(d) = p.next_delay(made, start.elapsed(), &mut rng) {
            tokio::time::sleep(d).await;
            waited += d;
            made += 1;
        }
        assert_eq!(made, p.max_attempts, "gave up after exactly max_attempts");
        assert_eq!(start.elapsed(), waited);
        assert!(waited <= p.max_elapsed);
    }
}
