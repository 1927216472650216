//! Pausing a host whose endpoint keeps failing, so one dead host does not eat the
//! worker pool while other hosts' jobs keep flowing.
//!
//! After `threshold` attempts in a row that failed for the host's own sake (no
//! connection, a timeout, 429, 5xx) its jobs wait `pause` before going out again. Then
//! one attempt probes, alone: the host's other jobs wait as long as the probe may take
//! (its timeout), not less, so that a backlog is not claimed and put back over and
//! over while it runs. A failure pauses the host again at once; an answer of any kind
//! ends the trouble.
//!
//! The main loop reads the breakers too (`paused`), so a paused host's job claimed
//! anew goes back to the queue before it takes a worker's place.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Hosts remembered at most; past that, those not paused are forgotten.
const MAX_HOSTS: usize = 10_000;

pub struct Breakers {
    threshold: u32,
    pause: Duration,
    /// The longest a probe may take: the call's timeout.
    probe_window: Duration,
    hosts: HashMap<String, Host>,
}

#[derive(Default)]
struct Host {
    failures: u32,
    paused_until: Option<Instant>,
    /// The one attempt let through after a pause is under way, and may run until then.
    probe_ends: Option<Instant>,
}

/// The least a job waits while a probe is under way.
const PROBE_WAIT_MIN: Duration = Duration::from_millis(100);

/// What an attempt changed about its host, for a log line.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// The host just got paused, after this many failures in a row.
    Tripped(u32),
    /// A paused host answered again.
    Recovered,
}

impl Breakers {
    /// `threshold` 0 never pauses a host; `probe_window` is the longest a call takes.
    pub fn new(threshold: u32, pause: Duration, probe_window: Duration) -> Breakers {
        Breakers {
            threshold,
            pause,
            probe_window,
            hosts: HashMap::new(),
        }
    }

    /// A reload changed `timeoutMs`: a probe may now take this long.
    pub fn set_probe_window(&mut self, window: Duration) {
        self.probe_window = window;
    }

    /// How long a tripped host's jobs wait (`hostPauseMs`).
    pub fn pause(&self) -> Duration {
        self.pause
    }

    /// How much longer a job for `host` must wait, if the host is paused. After the
    /// pause the first caller is let through as the probe (and `None` is returned),
    /// the others wait for its outcome.
    pub fn hold(&mut self, host: &str) -> Option<Duration> {
        if let Some(wait) = self.paused(host) {
            return Some(wait);
        }
        let h = self.hosts.get_mut(host)?;
        h.paused_until?;
        h.probe_ends = Some(Instant::now() + self.probe_window);
        None
    }

    /// How much longer a job for `host` must wait, without letting a probe through:
    /// the rest of the pause, or of the probe under way.
    pub fn paused(&self, host: &str) -> Option<Duration> {
        let h = self.hosts.get(host)?;
        let now = Instant::now();
        let left = h.paused_until?.saturating_duration_since(now);
        if !left.is_zero() {
            return Some(left);
        }
        // A probe past its window was never reported (it cannot be: every attempt
        // ends by then); the next caller probes instead of the host staying stuck.
        let probe_left = h.probe_ends?.checked_duration_since(now)?;
        Some(probe_left.max(PROBE_WAIT_MIN))
    }

    /// The hosts whose jobs wait now (paused, or a probe under way), sorted, at most
    /// `limit`: the heartbeat carries them for `delayqs top`.
    pub fn paused_hosts(&self, limit: usize) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .hosts
            .keys()
            .filter(|h| self.paused(h).is_some())
            .cloned()
            .collect();
        hosts.sort();
        hosts.truncate(limit);
        hosts
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
            // Forget the hosts that are merely counting, or whose pause is over.
            let now = Instant::now();
            self.hosts.retain(|_, h| {
                h.paused_until.is_some_and(|until| until > now) || h.probe_ends.is_some()
            });
            if self.hosts.len() >= MAX_HOSTS {
                // Every remembered host is paused: this one goes uncounted rather
                // than make the map, which every worker locks, grow without bound.
                return None;
            }
        }
        let entry = self.hosts.entry(host.to_string()).or_default();
        entry.probe_ends = None;
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
        let mut b = Breakers::new(3, Duration::from_secs(60), Duration::from_secs(5));
        assert_eq!(b.record("h:1", true), None);
        assert_eq!(b.record("h:1", true), None);
        assert_eq!(b.hold("h:1"), None);
        assert_eq!(b.record("h:1", true), Some(Change::Tripped(3)));
        assert!(b.hold("h:1").is_some());
        assert_eq!(b.hold("other"), None);
        assert_eq!(b.paused_hosts(10), ["h:1"]);
        assert_eq!(b.record("h:1", true), None, "tripping is logged once");
        assert_eq!(b.record("h:1", false), Some(Change::Recovered));
        assert_eq!(b.hold("h:1"), None);
        assert!(b.paused_hosts(10).is_empty());
        assert_eq!(b.record("h:1", false), None);
    }

    #[test]
    fn after_the_pause_one_probe_goes_alone() {
        let mut b = Breakers::new(1, Duration::from_millis(20), Duration::from_secs(5));
        assert_eq!(b.record("h", true), Some(Change::Tripped(1)));
        assert!(b.hold("h").is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.hold("h"), None, "the probe");
        let wait = b.hold("h").expect("others wait for the probe");
        assert!(
            wait > Duration::from_secs(4),
            "as long as the probe may take: {wait:?}"
        );
        assert_eq!(
            b.paused("h").map(|w| w > Duration::from_secs(4)),
            Some(true)
        );
        assert_eq!(b.record("h", true), None, "the probe failed: paused again");
        assert!(b.hold("h").is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.hold("h"), None);
        assert_eq!(b.record("h", false), Some(Change::Recovered));
        assert_eq!(b.hold("h"), None);
    }

    #[test]
    fn an_answer_resets_the_count_and_zero_disables() {
        let mut b = Breakers::new(2, Duration::from_secs(60), Duration::from_secs(5));
        b.record("h", true);
        b.record("h", false);
        assert_eq!(b.record("h", true), None);
        assert_eq!(b.hold("h"), None);
        let mut off = Breakers::new(0, Duration::from_secs(60), Duration::from_secs(5));
        for _ in 0..100 {
            assert_eq!(off.record("h", true), None);
        }
    }

    #[test]
    fn a_probe_never_reported_gives_way_after_its_window() {
        let mut b = Breakers::new(1, Duration::from_millis(10), Duration::from_millis(40));
        b.record("h", true);
        std::thread::sleep(Duration::from_millis(15));
        assert_eq!(b.hold("h"), None, "the probe");
        assert!(b.hold("h").is_some());
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(b.hold("h"), None, "a new probe, not a host stuck for ever");
    }
}
