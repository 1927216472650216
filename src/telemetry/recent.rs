//! The lateness of this daemon's latest deliveries, for the p50 and p99 its heartbeat
//! carries (`delayqs top`). The metrics histogram counts since start in coarse buckets;
//! an operator watching the queue asks how late jobs are now.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Deliveries kept: enough for a p99 to mean something, few enough to sort at each
/// heartbeat (every 2 s) without it showing. At a high rate this is well under the
/// window, and then the figures are of the last this many deliveries.
const KEPT: usize = 1024;

/// Percentiles of the deliveries of the window, and how many there were.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lateness {
    pub p50: f64,
    pub p99: f64,
    pub count: usize,
}

#[derive(Debug, Default)]
pub struct Recent {
    values: VecDeque<(Instant, f64)>,
}

impl Recent {
    pub fn observe(&mut self, seconds: f64) {
        if self.values.len() == KEPT {
            self.values.pop_front();
        }
        self.values.push_back((Instant::now(), seconds.max(0.0)));
    }

    /// Over the deliveries of the last `window` (at most the last [`KEPT`]); `None`
    /// when there were none: a daemon with nothing to do is not late.
    pub fn lateness(&mut self, window: Duration) -> Option<Lateness> {
        let now = Instant::now();
        while let Some((at, _)) = self.values.front() {
            if now.duration_since(*at) <= window {
                break;
            }
            self.values.pop_front();
        }
        // Non-negative floats sort as their bits do, and a sort of u64 is linked already.
        let mut sorted: Vec<u64> = self.values.iter().map(|(_, v)| v.to_bits()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_unstable();
        let sorted: Vec<f64> = sorted.into_iter().map(f64::from_bits).collect();
        // Nearest rank: the smallest value with at least that share at or below it.
        let rank =
            |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        Some(Lateness {
            p50: rank(0.50),
            p99: rank(0.99),
            count: sorted.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_what_is_kept() {
        let mut r = Recent::default();
        assert_eq!(r.lateness(Duration::from_secs(60)), None);
        for i in 1..=100 {
            r.observe(f64::from(i) / 1000.0);
        }
        let l = r.lateness(Duration::from_secs(60)).unwrap();
        assert_eq!((l.p50, l.p99, l.count), (0.050, 0.099, 100));
        // Only the latest KEPT count: 2000 late ones push the early ones out.
        for _ in 0..2000 {
            r.observe(5.0);
        }
        let l = r.lateness(Duration::from_secs(60)).unwrap();
        assert_eq!((l.p50, l.count), (5.0, KEPT));
        // Past the window, nothing is left.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(r.lateness(Duration::from_millis(10)), None);
    }
}
