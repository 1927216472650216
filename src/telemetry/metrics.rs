//! Counters and histograms of the running daemon, written as a Prometheus text file
//! for node_exporter's textfile collector. No HTTP server in the daemon: a file
//! renamed into place every few seconds is all the collector needs.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{error, info};

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
    /// The same, of the latest deliveries only: the heartbeat's p50 and p99.
    pub recent_lateness: super::recent::Recent,
    /// How long each attempt's HTTP call took.
    pub duration: Histogram,
    /// Whether Redis answered the last call.
    pub redis_up: bool,
    /// When the last round that reached Redis ended (Unix s); 0 before the first.
    pub last_round: f64,
    /// Whether the queue is paused (`delayqs pause`), as last read.
    pub paused: bool,
    /// Jobs sent back to wait for their flow's next slot (`flowControl`).
    pub deferred: u64,
    /// Jobs parked because their flow is paused (`delayqs pause --host`).
    pub parked: u64,
    /// The flows worth showing, as of the last file written.
    pub flows: Vec<crate::dispatch::flow::View>,
}

/// The queue's state, read from Redis when the file is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub pending: u64,
    pub due: u64,
    pub inflight: u64,
    /// Records in the failed lists.
    pub failed: u64,
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
            recent_lateness: Default::default(),
            duration: Histogram::new(DURATION_BOUNDS),
            redis_up: false,
            last_round: 0.0,
            paused: false,
            deferred: 0,
            parked: 0,
            flows: Vec::new(),
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
            (
                "delayqs_deferred_total",
                "Jobs sent back to wait for their flow's next slot (flowControl).",
                self.deferred,
            ),
            (
                "delayqs_parked_total",
                "Jobs parked because their flow is paused (delayqs pause --host).",
                self.parked,
            ),
        ];
        scalars(&mut out, "counter", &counters);
        let _ = writeln!(
            out,
            "# HELP delayqs_build_info The running version.\n# TYPE delayqs_build_info gauge\ndelayqs_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let liveness = [
            (
                "delayqs_redis_up",
                "1 when Redis answered the daemon's last call, 0 while it does not.",
                u64::from(self.redis_up),
            ),
            (
                "delayqs_paused",
                "1 while the queue is paused (delayqs pause): nothing is claimed.",
                u64::from(self.paused),
            ),
        ];
        scalars(&mut out, "gauge", &liveness);
        let _ = writeln!(
            out,
            "# HELP delayqs_last_round_timestamp_seconds When the last round that reached Redis ended (0: none yet).\n# TYPE delayqs_last_round_timestamp_seconds gauge\ndelayqs_last_round_timestamp_seconds {:.3}",
            self.last_round
        );
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
                (
                    "delayqs_failed_jobs",
                    "Records in the failed list: jobs that failed for good or were set aside.",
                    g.failed,
                ),
            ];
            scalars(&mut out, "gauge", &gauges);
        }
        self.render_flows(&mut out);
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

impl Metrics {
    /// One sample per flow shown: its rate now and its limit (calls/s, fleet-wide; no
    /// sample when it has none), calls under way here, jobs deferred, and whether it is
    /// slowed by back-pressure or paused.
    fn render_flows(&self, out: &mut String) {
        if self.flows.is_empty() {
            return;
        }
        type Sample = fn(&crate::dispatch::flow::View) -> Option<f64>;
        let families: [(&str, &str, &str, Sample); 6] = [
            (
                "delayqs_flow_rate",
                "gauge",
                "Calls per second the flow may start now, fleet-wide: its limit, or less while slowed by back-pressure.",
                |v| v.rate,
            ),
            (
                "delayqs_flow_rate_limit",
                "gauge",
                "The flow's configured calls per second, fleet-wide.",
                |v| v.limit,
            ),
            (
                "delayqs_flow_in_flight",
                "gauge",
                "The flow's calls under way on this daemon.",
                |v| Some(f64::from(v.in_flight)),
            ),
            (
                "delayqs_flow_deferred_total",
                "counter",
                "The flow's jobs sent back to wait for a slot.",
                |v| Some(v.deferred as f64),
            ),
            (
                "delayqs_flow_slowed",
                "gauge",
                "1 while back-pressure holds the flow below its limit.",
                |v| Some(f64::from(u8::from(v.slowed))),
            ),
            (
                "delayqs_flow_paused",
                "gauge",
                "1 while the flow is paused (delayqs pause --host).",
                |v| Some(f64::from(u8::from(v.paused))),
            ),
        ];
        for (name, kind, help, sample) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for v in &self.flows {
                if let Some(value) = sample(v) {
                    let _ = writeln!(out, "{name}{{flow=\"{}\"}} {value}", label(&v.name));
                }
            }
        }
    }
}

/// A label value as the exposition format writes it.
fn label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
///
/// The temporary is `.<name>.<random>.tmp` in the same directory (hidden, and not
/// `*.prom`, so the textfile collector skips it), created only if nothing is there
/// (`O_CREAT|O_EXCL|O_NOFOLLOW`): whoever can write to that directory cannot point a
/// symlink at another file for the daemon to overwrite. It is removed on any error.
pub fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "names no file"))?;
    let (tmp, mut file) = create_temporary(dir, name)?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Whether a file can be created in `dir` by this process, found by creating (the way
/// [`write_atomic`] does) and removing one: permission bits cannot tell, as root,
/// ACLs, read-only mounts and systemd's `ProtectSystem=` make them lie.
pub fn probe_dir(dir: &Path) -> io::Result<()> {
    let (tmp, file) = create_temporary(dir, OsStr::new("delayqs-probe"))?;
    drop(file);
    fs::remove_file(tmp)
}

/// How often a metrics file that still cannot be written is said again.
pub const STILL_FAILING_EVERY: Duration = Duration::from_secs(600);

/// Writes the metrics file and says when that stops working: once when it fails, then
/// at most every [`STILL_FAILING_EVERY`] while it goes on (written every few seconds,
/// the file would otherwise fill the log with one line per interval), and once when it
/// works again.
#[derive(Debug, Default)]
pub struct MetricsFile {
    /// Since when, and when it was last said, while writing fails.
    failing: Option<(Instant, Instant)>,
}

/// A line to log about the metrics file.
#[derive(Debug, PartialEq, Eq)]
enum Say {
    Failed,
    StillFailing(Duration),
    WorksAgain(Duration),
}

impl MetricsFile {
    pub fn write(&mut self, path: &Path, text: &str) {
        let result = write_atomic(path, text);
        let shown = path.display();
        let fix = "make its directory writable by the user delayqs runs as, or change the key";
        match (self.judge(result.is_ok(), Instant::now()), result) {
            (Some(Say::Failed), Err(e)) => error!(
                "cannot write the metrics file {shown} (config `metricsFile`): {e}; {fix}. Said again every {} minutes while it fails",
                STILL_FAILING_EVERY.as_secs() / 60
            ),
            (Some(Say::StillFailing(d)), Err(e)) => error!(
                "still cannot write the metrics file {shown} (config `metricsFile`), for {}: {e}; {fix}",
                crate::timefmt::human(d)
            ),
            (Some(Say::WorksAgain(d)), _) => info!(
                "the metrics file {shown} is written again, after failing for {}",
                crate::timefmt::human(d)
            ),
            _ => {}
        }
    }

    /// What to say after a write that went `ok` at `now`, if anything.
    fn judge(&mut self, ok: bool, now: Instant) -> Option<Say> {
        match (self.failing, ok) {
            (None, true) => None,
            (Some((since, _)), true) => {
                self.failing = None;
                Some(Say::WorksAgain(now.saturating_duration_since(since)))
            }
            (None, false) => {
                self.failing = Some((now, now));
                Some(Say::Failed)
            }
            (Some((since, said)), false) => {
                if now.saturating_duration_since(said) < STILL_FAILING_EVERY {
                    return None;
                }
                self.failing = Some((since, now));
                Some(Say::StillFailing(now.saturating_duration_since(since)))
            }
        }
    }
}

/// Creates a new file with a random name beside `name` in `dir`, never following a
/// symlink and never opening a file that exists.
fn create_temporary(dir: &Path, name: &OsStr) -> io::Result<(PathBuf, fs::File)> {
    let mut tries = 0;
    loop {
        let mut tmp = OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".{:013x}.tmp", random_id()));
        let tmp = dir.join(tmp);
        match create_new(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            // A name taken (or planted) already: draw another.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

fn create_new(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn random_id() -> u64 {
    (crate::job::backoff::random_unit() * (1u64 << 52) as f64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("delayqs-unit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_temporary_never_follows_a_symlink() {
        let dir = scratch("metrics-symlink");
        let victim = dir.join("victim");
        fs::write(&victim, "keep me").unwrap();
        let planted = dir.join(".delayqs.prom.x.tmp");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let e = create_new(&planted).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        // A dangling one is not created through either.
        let dangling = dir.join(".dangling.tmp");
        std::os::unix::fs::symlink(dir.join("nowhere"), &dangling).unwrap();
        assert!(create_new(&dangling).is_err());
        assert!(!dir.join("nowhere").exists());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writing_leaves_only_the_file() {
        let dir = scratch("metrics-write");
        let path = dir.join("delayqs.prom");
        write_atomic(&path, "a 1\n").unwrap();
        write_atomic(&path, "a 2\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a 2\n");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["delayqs.prom"]);
        // A directory that is not there: an error.
        assert!(write_atomic(&dir.join("no/such.prom"), "x").is_err());
        // The rename fails (a directory is in the way): the temporary is removed.
        fs::create_dir(dir.join("taken.prom")).unwrap();
        assert!(write_atomic(&dir.join("taken.prom"), "x").is_err());
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["delayqs.prom", "taken.prom"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failing_file_is_said_once_then_every_ten_minutes_then_once_when_it_works() {
        let mut m = MetricsFile::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(m.judge(true, at(0)), None);
        assert_eq!(m.judge(false, at(5)), Some(Say::Failed));
        for s in (10..605).step_by(5) {
            assert_eq!(m.judge(false, at(s)), None, "at {s} s");
        }
        assert_eq!(
            m.judge(false, at(605)),
            Some(Say::StillFailing(Duration::from_secs(600)))
        );
        assert_eq!(m.judge(false, at(610)), None);
        assert_eq!(
            m.judge(false, at(1205)),
            Some(Say::StillFailing(Duration::from_secs(1200)))
        );
        assert_eq!(
            m.judge(true, at(1210)),
            Some(Say::WorksAgain(Duration::from_secs(1205)))
        );
        assert_eq!(m.judge(true, at(1215)), None);
        // A new failure is news again.
        assert_eq!(m.judge(false, at(1220)), Some(Say::Failed));
    }

    #[test]
    fn probing_a_directory_leaves_nothing_behind() {
        let dir = scratch("metrics-probe");
        probe_dir(&dir).unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        let e = probe_dir(&dir.join("missing")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        fs::remove_dir_all(&dir).unwrap();
    }

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
