//! How long a failed job waits before its next attempt.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::job::options::Backoff;

/// Exponential backoff between attempts: `base * 2^(n-1)`, capped, minus jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    /// Fraction (0..=1) of the delay that may be randomly taken off.
    pub jitter: f64,
}

/// The wait after attempt `failed_attempt` failed, by the job's own `backoff` when it
/// has one, else by the daemon's policy. `roll`, in [0, 1), draws the jitter.
pub fn job_retry_delay(
    policy: &RetryPolicy,
    job: Option<&Backoff>,
    failed_attempt: u32,
    roll: f64,
) -> Duration {
    match job {
        None => retry_delay(policy, failed_attempt, roll),
        Some(Backoff::List(list)) => {
            let i = (failed_attempt.max(1) as usize - 1).min(list.len() - 1);
            list[i]
        }
        Some(Backoff::Base(base)) => {
            let own = RetryPolicy {
                base: *base,
                cap: policy.cap.max(*base),
                jitter: policy.jitter,
            };
            retry_delay(&own, failed_attempt, roll)
        }
    }
}

/// The wait after attempt `failed_attempt` (1-based) failed: `base * 2^(n-1)`, capped,
/// then up to `jitter` of it taken off (`roll` of that, drawn by the caller) so jobs
/// that failed together do not all come back in the same millisecond.
pub fn retry_delay(policy: &RetryPolicy, failed_attempt: u32, roll: f64) -> Duration {
    let doublings = failed_attempt.saturating_sub(1).min(31);
    let delay = policy
        .base
        .saturating_mul(1u32 << doublings)
        .min(policy.cap);
    delay.mul_f64(1.0 - policy.jitter * roll.clamp(0.0, 1.0))
}

/// A number in [0, 1). `RandomState` is seeded from the OS per instance, which is all
/// the randomness jitter needs; no crate for it.
pub fn random_unit() -> f64 {
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
        let secs: Vec<u64> = (1..=6).map(|n| retry_delay(&p, n, 0.5).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 60, 60]);
        assert_eq!(retry_delay(&p, 1000, 0.5), Duration::from_secs(60));
    }

    #[test]
    fn a_job_list_is_taken_as_written_and_its_last_entry_repeats() {
        let list = Backoff::List(vec![Duration::from_secs(1), Duration::from_secs(30)]);
        let secs: Vec<u64> = (1..=4)
            .map(|n| job_retry_delay(&policy(0.5), Some(&list), n, 0.9).as_secs())
            .collect();
        assert_eq!(secs, [1, 30, 30, 30]);
        let base = Backoff::Base(Duration::from_secs(2));
        assert_eq!(
            job_retry_delay(&policy(0.0), Some(&base), 3, 0.9),
            Duration::from_secs(8)
        );
    }

    #[test]
    fn jitter_only_shortens_within_bounds() {
        let p = policy(0.5);
        let delays: Vec<Duration> = (0..200)
            .map(|_| retry_delay(&p, 2, random_unit()))
            .collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(10)));
        assert!(delays.iter().all(|d| *d >= Duration::from_secs(5)));
        assert!(delays.windows(2).any(|w| w[0] != w[1]), "no jitter at all");
    }
}
