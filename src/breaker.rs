//! Pausing a host whose endpoint keeps failing, so one dead host does not eat the
//! worker pool while other hosts' jobs keep flowing.
//!
//! After `threshold` attempts in a row that failed for the host's own sake (no
//! connection, a timeout, 429, 5xx) its jobs wait `pause` before going out again. The
//! first attempt after the pause probes: a failure pauses the host again at once, an
//! answer of any kind ends the trouble.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Hosts remembered at most; past that, those not paused are forgotten.
const MAX_HOSTS: usize = 10_000;

pub struct Breakers {
    threshold: u32,
    pause: Duration,
    hosts: HashMap<String, Host>,
}

#[derive(Default)]
struct Host {
    failures: u32,
    paused_until: Option<Instant>,
}

/// What an attempt changed about its host, for a log line.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// The host just got paused, after this many failures in a row.
    Tripped(u32),
    /// A paused host answered again.
    Recovered,
}

impl Breakers {
    /// `threshold` 0 never pauses a host.
    pub fn new(threshold: u32, pause: Duration) -> Breakers {
        Breakers {
            threshold,
            pause,
            hosts: HashMap::new(),
        }
    }

    /// How much longer the host's jobs must wait, if it is paused.
    pub fn paused_for(&self, host: &str) -> Option<Duration> {
        let until = self.hosts.get(host)?.paused_until?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Notes an attempt's result: `trouble` when it failed for the host's own sake.
    pub fn record(&mut self, host: &str, trouble: bool) -> Option<Change> {
        if !trouble {
            let host = self.hosts.remove(host)?;
            return host.paused_until.map(|_| Change::Recovered);
        }
        if self.threshold == 0 {
            return None;
        }
        if self.hosts.len() >= MAX_HOSTS && !self.hosts.contains_key(host) {
            self.hosts.retain(|_, h| h.paused_until.is_some());
        }
        let entry = self.hosts.entry(host.to_string()).or_default();
        entry.failures += 1;
        if entry.failures < self.threshold {
            return None;
        }
        let first = entry.paused_until.is_none();
        entry.paused_until = Some(Instant::now() + self.pause);
        first.then_some(Change::Tripped(entry.failures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_after_threshold_and_recovers_on_an_answer() {
        let mut b = Breakers::new(3, Duration::from_secs(60));
        assert_eq!(b.record("h:1", true), None);
        assert_eq!(b.record("h:1", true), None);
        assert_eq!(b.paused_for("h:1"), None);
        assert_eq!(b.record("h:1", true), Some(Change::Tripped(3)));
        assert!(b.paused_for("h:1").is_some());
        assert_eq!(b.paused_for("other"), None);
        assert_eq!(b.record("h:1", true), None, "tripping is logged once");
        assert_eq!(b.record("h:1", false), Some(Change::Recovered));
        assert_eq!(b.paused_for("h:1"), None);
        assert_eq!(b.record("h:1", false), None);
    }

    #[test]
    fn an_answer_resets_the_count_and_zero_disables() {
        let mut b = Breakers::new(2, Duration::from_secs(60));
        b.record("h", true);
        b.record("h", false);
        assert_eq!(b.record("h", true), None);
        let mut off = Breakers::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            assert_eq!(off.record("h", true), None);
        }
    }
}
