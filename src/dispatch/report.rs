//! The log line and the counters for what happened to a job: one place, so that the
//! wording users grep for and the metrics stay in step. No decisions here.

use std::time::Duration;

use log::{debug, error, info, warn};

use crate::dispatch::settle::{Event, Op};
use crate::job::Job;
use crate::store::SetAside;
use crate::telemetry::metrics::Metrics;

/// The job an event is about, as the log line names it.
pub struct Seen<'a> {
    pub id: &'a str,
    pub attempt: u32,
    /// `None` when the member did not parse.
    pub job: Option<&'a Job>,
    /// How long the attempt ran.
    pub took: Duration,
}

/// Logs and counts one decision about a job; `failed` is the failed list's key.
pub fn event(m: &mut Metrics, seen: &Seen, event: &Event, op: &Op, failed: &str) {
    let (id, n) = (seen.id, seen.attempt);
    // Formatted only when printed: a delivery's line is at debug, off in production.
    let to = To(seen.job);
    let took = seen.took.as_millis();
    let reason = match op {
        Op::Fail { reason, .. } => reason.as_str(),
        _ => "",
    };
    match event {
        Event::Malformed | Event::NotAllowed => {
            error!("job {id}{to}: {reason}; moved to {failed:?} without a request");
            m.poison += 1;
        }
        // Failed for good is at error: a lost callback must reach `error.log`.
        Event::NoAttemptsLeft => {
            error!("job {id}{to}: {reason}; moved to {failed:?}");
            m.failed_for_good += 1;
        }
        Event::TooLate => info!(
            "job {id}: waited too long for a free worker to start inside its lease; put back at its score, untried"
        ),
        Event::HostPaused { back_in } => debug!(
            "job {id}: {} is paused; back in {:.1} s",
            seen.job.map_or("", |j| j.callback.host_key()),
            back_in.as_secs_f64()
        ),
        Event::Delivered { lateness } => {
            m.delivered += 1;
            m.lateness.observe(*lateness);
            m.recent_lateness.observe(*lateness);
            debug!("job {id} delivered{to} (attempt {n}, {took} ms)");
        }
        Event::Retrying { reason, delay, of } => {
            m.failed_attempts += 1;
            m.retries_scheduled += 1;
            warn!(
                "job {id} attempt {n}/{of}{to} failed after {took} ms: {reason}; next attempt in {:.1} s",
                delay.as_secs_f64()
            );
        }
        Event::FailedForGood {
            reason,
            refused,
            of,
        } => {
            m.failed_attempts += 1;
            m.failed_for_good += 1;
            let why = match refused {
                true => "the endpoint refused the job for good",
                false => "no attempts left",
            };
            error!("job {id} attempt {n}/{of}{to} failed: {reason}; {why}, moved to {failed:?}");
        }
    }
}

/// " to URL" in a log line, when the job parsed.
struct To<'a>(Option<&'a Job>);

impl std::fmt::Display for To<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(job) => write!(f, " to {}", job.callback),
            None => Ok(()),
        }
    }
}

/// Logs and counts a job the claim script set aside itself.
pub fn set_aside(m: &mut Metrics, set_aside: &SetAside, failed: &str) {
    match set_aside {
        SetAside::Skipped { id, field, key } => {
            info!("job {id}: {field} {key} holds: dropped without a request");
            m.skipped += 1;
        }
        SetAside::Unreadable { id, error } => {
            error!("job {id}: {error}; moved to {failed:?} without a request");
            m.poison += 1;
        }
        SetAside::Oversize { id, bytes } => {
            error!(
                "job {id}: malformed job: the member is {bytes} bytes, over maxJobBytes; moved to {failed:?} without a request"
            );
            m.poison += 1;
        }
    }
}
