//! How many jobs to hold beyond the busy workers, and how much room makes a round.
//!
//! A worker that finishes should find its next job waiting in the channel, not wait
//! for a Redis round trip; and a round should move a batch, since each call costs
//! Redis about as much as a dozen jobs do. Both want jobs claimed ahead. But a job
//! claimed ahead is a job no other daemon can take, and with slow endpoints it would
//! wait behind them. So the jobs held beyond the workers are what the pool will start
//! within [`HORIZON`] at the pace its calls take now: many for a fast endpoint, none
//! for one that takes seconds.

use std::time::Duration;

/// How far ahead of the workers jobs are claimed, in time.
const HORIZON: Duration = Duration::from_millis(10);
/// At most this many jobs per worker waiting in the channel.
const WAITING_PER_WORKER: usize = crate::config::HELD_PER_WORKER - 1;
/// Weight of the newest call in the running mean of call durations.
const NEWEST: f64 = 0.1;

#[derive(Debug)]
pub struct Prefetch {
    concurrency: usize,
    /// Running mean of how long a call takes, in seconds; `None` before the first.
    mean_call: Option<f64>,
}

impl Prefetch {
    pub fn new(concurrency: usize) -> Prefetch {
        Prefetch {
            concurrency,
            mean_call: None,
        }
    }

    /// The most jobs ever held at once: the channels are this big.
    pub fn capacity(&self) -> usize {
        self.concurrency * (1 + WAITING_PER_WORKER)
    }

    /// Notes how long a call took.
    pub fn observe(&mut self, took: Duration) {
        let took = took.as_secs_f64();
        self.mean_call = Some(match self.mean_call {
            Some(mean) => mean + NEWEST * (took - mean),
            None => took,
        });
    }

    /// Jobs to hold beyond one per worker: what the pool starts within the horizon.
    fn ahead(&self) -> usize {
        let Some(mean) = self.mean_call else {
            return 0; // nothing known yet: claim for the workers only
        };
        let per_worker = HORIZON.as_secs_f64() / mean.max(1e-6);
        // `as` saturates: a huge quotient is just "as many as allowed".
        ((self.concurrency as f64 * per_worker) as usize).min(self.concurrency * WAITING_PER_WORKER)
    }

    /// The most jobs to hold now: one per worker plus those claimed ahead.
    pub fn limit(&self) -> usize {
        self.concurrency + self.ahead()
    }

    /// The free room that starts a round before the timer: half the jobs claimed
    /// ahead, so the other half keeps the workers busy during the round trip; or a
    /// single free worker when nothing is claimed ahead.
    pub fn mark(&self) -> usize {
        (self.ahead() / 2).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(calls: &[u64]) -> Prefetch {
        let mut p = Prefetch::new(8);
        for &ms in calls {
            p.observe(Duration::from_micros(ms));
        }
        p
    }

    #[test]
    fn nothing_ahead_before_the_first_call() {
        let p = after(&[]);
        assert_eq!((p.limit(), p.mark()), (8, 1));
    }

    #[test]
    fn fast_calls_fill_the_channel_and_rounds_move_half_of_it() {
        let p = after(&[250; 20]); // 0.25 ms: 40 per worker within 10 ms, capped at 7
        assert_eq!((p.limit(), p.mark()), (64, 28));
        assert_eq!(p.capacity(), 64);
    }

    #[test]
    fn slow_calls_claim_nothing_ahead() {
        let p = after(&[2_000_000; 5]); // 2 s calls
        assert_eq!((p.limit(), p.mark()), (8, 1));
    }

    #[test]
    fn the_mean_follows_a_change_of_pace() {
        let mut p = after(&[250; 50]);
        for _ in 0..60 {
            p.observe(Duration::from_secs(1));
        }
        assert_eq!(
            p.limit(),
            8,
            "an endpoint that slowed down gets nothing ahead"
        );
        let between = after(&[5_000; 10]); // 5 ms: 2 per worker
        assert_eq!((between.limit(), between.mark()), (24, 8));
    }
}
