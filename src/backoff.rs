//! How long a failed job waits before its next attempt.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::config::RetryPolicy;

/// The wait after attempt `failed_attempt` (1-based) failed: `base * 2^(n-1)`, capped,
/// then up to `jitter` of it taken off at random so jobs that failed together do not
/// all come back in the same millisecond.
pub fn retry_delay(policy: &RetryPolicy, failed_attempt: u32) -> Duration {
    let doublings = failed_attempt.saturating_sub(1).min(31);
    let delay = policy
        .base
        .saturating_mul(1u32 << doublings)
        .min(policy.cap);
    delay.mul_f64(1.0 - policy.jitter * random_unit())
}

/// A number in [0, 1). `RandomState` is seeded from the OS per instance, which is all
/// the randomness jitter needs; no crate for it.
fn random_unit() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u8(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(60),
            jitter,
        }
    }

    #[test]
    fn doubles_then_caps() {
        let p = policy(0.0);
        let secs: Vec<u64> = (1..=6).map(|n| retry_delay(&p, n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 60, 60]);
        assert_eq!(retry_delay(&p, 1000), Duration::from_secs(60));
    }

    #[test]
    fn jitter_only_shortens_within_bounds() {
        let p = policy(0.5);
        let delays: Vec<Duration> = (0..200).map(|_| retry_delay(&p, 2)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(10)));
        assert!(delays.iter().all(|d| *d >= Duration::from_secs(5)));
        assert!(delays.windows(2).any(|w| w[0] != w[1]), "no jitter at all");
    }
}
