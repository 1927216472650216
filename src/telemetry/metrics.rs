//! Counters and histograms of the running daemon, written as a Prometheus text file
//! for node_exporter's textfile collector. No HTTP server in the daemon: a file
//! renamed into place every few seconds is all the collector needs.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;

/// Upper bounds of the lateness buckets, seconds: from "on time" to "a poll late" to
/// "Redis was away".
const LATENESS_BOUNDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0, 300.0,
];
/// Upper bounds of the callback duration buckets, seconds.
const DURATION_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// What this process has done since it started.
#[derive(Debug)]
pub struct Metrics {
    pub delivered: u64,
    pub failed_attempts: u64,
    pub retries_scheduled: u64,
    pub failed_for_good: u64,
    pub poison: u64,
    pub leases_recovered: u64,
    pub skipped: u64,
    /// Delivery time minus due time, of successful attempts.
    pub lateness: Histogram,
    /// How long each attempt's HTTP call took.
    pub duration: Histogram,
}

/// The queue's state, read from Redis when the file is written.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    pub pending: u64,
    pub due: u64,
    pub inflight: u64,
}

#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket, not cumulative; the last one is +Inf.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let value = value.max(0.0);
        let bucket = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += value;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count;
            let le = self
                .bounds
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {cumulative}", self.sum);
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            delivered: 0,
            failed_attempts: 0,
            retries_scheduled: 0,
            failed_for_good: 0,
            poison: 0,
            leases_recovered: 0,
            skipped: 0,
            lateness: Histogram::new(LATENESS_BOUNDS),
            duration: Histogram::new(DURATION_BOUNDS),
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition format.
    pub fn render(&self, gauges: Option<Gauges>) -> String {
        let mut out = String::new();
        let counters = [
            (
                "delayqs_delivered_total",
                "Jobs delivered: an attempt succeeded.",
                self.delivered,
            ),
            (
                "delayqs_attempts_failed_total",
                "Attempts that failed.",
                self.failed_attempts,
            ),
            (
                "delayqs_retries_scheduled_total",
                "Failed attempts followed by a retry.",
                self.retries_scheduled,
            ),
            (
                "delayqs_failed_total",
                "Jobs moved to the failed list after their last attempt.",
                self.failed_for_good,
            ),
            (
                "delayqs_poison_total",
                "Malformed jobs moved to the failed list without a request.",
                self.poison,
            ),
            (
                "delayqs_leases_recovered_total",
                "Jobs taken back after their lease expired.",
                self.leases_recovered,
            ),
            (
                "delayqs_skipped_total",
                "Jobs dropped by their skip condition, without a request.",
                self.skipped,
            ),
        ];
        scalars(&mut out, "counter", &counters);
        if let Some(g) = gauges {
            let gauges = [
                (
                    "delayqs_pending_jobs",
                    "Jobs in the queue, due or not.",
                    g.pending,
                ),
                ("delayqs_due_jobs", "Jobs in the queue that are due.", g.due),
                (
                    "delayqs_inflight_jobs",
                    "Jobs claimed by any daemon and not yet settled.",
                    g.inflight,
                ),
            ];
            scalars(&mut out, "gauge", &gauges);
        }
        self.lateness.render(
            &mut out,
            "delayqs_lateness_seconds",
            "Delivery time minus due time.",
        );
        self.duration.render(
            &mut out,
            "delayqs_callback_duration_seconds",
            "Duration of callback attempts.",
        );
        out
    }
}

/// One sample each, with its HELP and TYPE lines.
fn scalars(out: &mut String, kind: &str, metrics: &[(&str, &str, u64)]) {
    for (name, help, value) in metrics {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so a reader never
/// sees half a file.
pub fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut m = Metrics::default();
        for v in [0.0005, 0.003, 0.003, 2.0, 1000.0] {
            m.lateness.observe(v);
        }
        let text = m.render(None);
        assert!(
            text.contains("delayqs_lateness_seconds_bucket{le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("delayqs_lateness_seconds_bucket{le=\"0.005\"} 3\n"));
        assert!(text.contains("delayqs_lateness_seconds_bucket{le=\"5\"} 4\n"));
        assert!(text.contains("delayqs_lateness_seconds_bucket{le=\"+Inf\"} 5\n"));
        assert!(text.contains("delayqs_lateness_seconds_count 5\n"));
        assert!(
            !text.contains("delayqs_pending_jobs"),
            "no gauges without Redis"
        );
    }
}
