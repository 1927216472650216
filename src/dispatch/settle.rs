//! What to write for a job, decided without I/O: once when it is claimed (may it go
//! out at all?) and once when its attempt comes back (done, retry when, fail, or put
//! back). The main loop does the writing, the logging and the counting; everything
//! it needs for that is in the [`Decision`].

use std::time::Duration;

use crate::deliver::allowlist::{self, Allowed};
use crate::deliver::worker::{Attempt, Failure};
use crate::job::backoff::{RetryPolicy, job_retry_delay};
use crate::job::{Job, Malformed};
use crate::store::Score;

/// The settings the decisions depend on, from the running config.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub retry: &'a RetryPolicy,
    /// Attempts a job gets unless it says otherwise: 1 + `maxRetryNum`.
    pub max_attempts: u32,
    /// The longest an endpoint's `Retry-After` may hold a job back.
    pub retry_after_max: Duration,
    pub allowed: &'a [Allowed],
}

impl Policy<'_> {
    /// Attempts this job gets: the first plus its own `maxRetry`, or the daemon's.
    pub fn max_attempts(&self, job: &Job) -> u32 {
        job.options.max_retry.map_or(self.max_attempts, |r| r + 1)
    }
}

/// What to write for one job, and what happened, for the log line and the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub op: Op,
    pub event: Event,
}

/// The write.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Delivered: forget the job.
    Done,
    /// Back into the queue after this delay, the attempt counted.
    Retry(Duration),
    /// Into the failed list, with this many attempts made and this reason.
    Fail { attempts: u32, reason: String },
    /// Undo the claim (the attempt is not counted) and queue the job at this score.
    Release(Score),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The job is malformed: set aside without a request.
    Malformed,
    /// Its callback is outside `allowedCallbacks`: set aside without a connection.
    NotAllowed,
    /// Claimed for an attempt past its last (a cut attempt, or `maxRetryNum` lowered).
    NoAttemptsLeft,
    /// It waited for a worker so long that its attempt could not end inside the lease.
    TooLate,
    /// Its host is paused; it comes back after this long.
    HostPaused { back_in: Duration },
    /// The attempt succeeded, this long after the job was due (seconds, may be < 0).
    Delivered { lateness: f64 },
    /// The attempt failed and another follows after `delay`.
    Retrying {
        reason: String,
        delay: Duration,
        of: u32,
    },
    /// The attempt failed and was the last: `refused` when the endpoint asked for no
    /// more (410, `delayqs-retry: abort`), else no attempts were left.
    FailedForGood {
        reason: String,
        refused: bool,
        of: u32,
    },
}

/// The reason recorded for a callback outside the allow-list.
pub const NOT_ALLOWED: &str =
    "malformed job: `callback` is outside allowedCallbacks; no connection was made";

/// Decides about a job just claimed for attempt `attempt`: `None` sends it to a
/// worker, a decision sets it aside.
pub fn at_claim(job: &Result<Job, Malformed>, attempt: u32, policy: &Policy) -> Option<Decision> {
    let made = attempt.saturating_sub(1);
    let job = match job {
        Ok(job) => job,
        Err(malformed) => {
            return Some(fail(made, malformed.to_string(), Event::Malformed));
        }
    };
    if !allowlist::allows(policy.allowed, &job.callback) {
        return Some(fail(made, NOT_ALLOWED.into(), Event::NotAllowed));
    }
    let max = policy.max_attempts(job);
    if attempt > max {
        let reason = format!(
            "no attempts left: this would be attempt {attempt} of {max} (the last one was cut short by a daemon dying or losing Redis, or maxRetryNum was lowered)"
        );
        return Some(fail(max, reason, Event::NoAttemptsLeft));
    }
    None
}

/// A job back from a worker.
#[derive(Debug, Clone, Copy)]
pub struct Returned<'a> {
    pub report: &'a Attempt,
    /// The attempt's number: 1 for the first.
    pub attempt: u32,
    /// The score the job was claimed at.
    pub due: &'a Score,
    /// How long the worker had it.
    pub took: Duration,
}

/// What a worker's report means for the job. `now` is Redis's clock as the outcome
/// arrives; `roll`, in [0, 1), draws the jitter.
pub fn on_outcome(back: Returned, job: &Job, now: f64, policy: &Policy, roll: f64) -> Decision {
    let Returned {
        report,
        attempt,
        due,
        took,
    } = back;
    let failure = match report {
        Attempt::TooLate => {
            return Decision {
                op: Op::Release(due.clone()),
                event: Event::TooLate,
            };
        }
        Attempt::HostPaused(wait) => {
            // Spread over a quarter of the pause, so the host's backlog does not
            // return at once.
            let back_in = *wait + wait.mul_f64(0.25 * roll);
            return Decision {
                op: Op::Release(Score::at(now + back_in.as_secs_f64())),
                event: Event::HostPaused { back_in },
            };
        }
        Attempt::Made(Ok(())) => {
            // The request went out when the attempt started.
            let sent_at = now - took.as_secs_f64();
            return Decision {
                op: Op::Done,
                event: Event::Delivered {
                    lateness: sent_at - due.value(),
                },
            };
        }
        Attempt::Made(Err(failure)) => failure,
    };
    let max = policy.max_attempts(job);
    if failure.give_up || attempt >= max {
        return fail(
            attempt,
            failure.reason.clone(),
            Event::FailedForGood {
                reason: failure.reason.clone(),
                refused: failure.give_up,
                of: max,
            },
        );
    }
    let delay = retry_delay(failure, job, attempt, policy, roll);
    Decision {
        op: Op::Retry(delay),
        event: Event::Retrying {
            reason: failure.reason.clone(),
            delay,
            of: max,
        },
    }
}

/// The backoff, with the endpoint's `Retry-After` as a floor within the configured cap.
fn retry_delay(failure: &Failure, job: &Job, attempt: u32, policy: &Policy, roll: f64) -> Duration {
    let delay = job_retry_delay(policy.retry, job.options.backoff.as_ref(), attempt, roll);
    match failure.retry_after {
        Some(asked) => delay.max(asked.min(policy.retry_after_max)),
        None => delay,
    }
}

fn fail(attempts: u32, reason: String, event: Event) -> Decision {
    Decision {
        op: Op::Fail { attempts, reason },
        event,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn retry() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(60),
            jitter: 0.2,
        }
    }

    fn job(extra: &str) -> Job {
        let member = format!(r#"{{"callback":"http://shop.example/close"{extra}}}"#);
        Job::parse(member.as_bytes(), Duration::from_secs(30)).unwrap()
    }

    fn outcome(report: Attempt, job: &Job, attempt: u32, roll: f64) -> Decision {
        let retry = retry();
        let policy = Policy {
            retry: &retry,
            max_attempts: 4,
            retry_after_max: Duration::from_secs(120),
            allowed: &[],
        };
        let due = Score::at(1000.0);
        let back = Returned {
            report: &report,
            attempt,
            due: &due,
            took: SECOND,
        };
        on_outcome(back, job, 1010.0, &policy, roll)
    }

    fn failed(reason: &str) -> Attempt {
        Attempt::Made(Err(Failure {
            reason: reason.into(),
            host_trouble: true,
            ..Failure::default()
        }))
    }

    #[test]
    fn success_is_done_and_lateness_counts_from_when_the_request_went_out() {
        let d = outcome(Attempt::Made(Ok(())), &job(""), 1, 0.5);
        assert_eq!(d.op, Op::Done);
        assert_eq!(d.event, Event::Delivered { lateness: 9.0 });
    }

    #[test]
    fn a_failure_retries_with_doubling_backoff_within_the_jitter() {
        for (attempt, full) in [(1, 5.0), (2, 10.0), (3, 20.0)] {
            let at = |roll| match outcome(failed("HTTP 500"), &job(""), attempt, roll).op {
                Op::Retry(d) => d.as_secs_f64(),
                other => panic!("{other:?}"),
            };
            assert_eq!(at(0.0), full, "no jitter drawn: the whole delay");
            let least = at(0.999_999);
            assert!(
                least >= full * 0.8 - 1e-6 && least < full,
                "attempt {attempt}: {least}"
            );
        }
        let d = outcome(failed("HTTP 500"), &job(""), 2, 0.0);
        assert_eq!(
            d.event,
            Event::Retrying {
                reason: "HTTP 500".into(),
                delay: 10 * SECOND,
                of: 4
            }
        );
    }

    #[test]
    fn retry_after_is_a_floor_and_capped() {
        let asked = |after: u64| {
            Attempt::Made(Err(Failure {
                reason: "HTTP 429".into(),
                retry_after: Some(Duration::from_secs(after)),
                ..Failure::default()
            }))
        };
        assert_eq!(
            outcome(asked(1), &job(""), 1, 0.0).op,
            Op::Retry(5 * SECOND),
            "below the backoff"
        );
        assert_eq!(
            outcome(asked(90), &job(""), 1, 0.0).op,
            Op::Retry(90 * SECOND)
        );
        assert_eq!(
            outcome(asked(9999), &job(""), 1, 0.0).op,
            Op::Retry(120 * SECOND),
            "the cap"
        );
    }

    #[test]
    fn gone_and_abort_fail_at_once_and_the_last_attempt_fails() {
        let refused = Attempt::Made(Err(Failure {
            reason: "HTTP 410".into(),
            give_up: true,
            ..Failure::default()
        }));
        let d = outcome(refused, &job(""), 1, 0.0);
        assert_eq!(
            d.op,
            Op::Fail {
                attempts: 1,
                reason: "HTTP 410".into()
            }
        );
        assert!(matches!(
            d.event,
            Event::FailedForGood { refused: true, .. }
        ));
        let d = outcome(failed("timeout"), &job(""), 4, 0.0);
        assert_eq!(
            d.op,
            Op::Fail {
                attempts: 4,
                reason: "timeout".into()
            }
        );
        assert!(matches!(
            d.event,
            Event::FailedForGood {
                refused: false,
                of: 4,
                ..
            }
        ));
    }

    #[test]
    fn a_jobs_own_max_retry_and_backoff_rule() {
        let own = job(r#","maxRetry":1,"backoff":[2,7]"#);
        assert_eq!(
            outcome(failed("x"), &own, 1, 0.9).op,
            Op::Retry(2 * SECOND),
            "no jitter on a list"
        );
        assert!(matches!(
            outcome(failed("x"), &own, 2, 0.0).op,
            Op::Fail { attempts: 2, .. }
        ));
        let none = job(r#","maxRetry":0"#);
        assert!(matches!(
            outcome(failed("x"), &none, 1, 0.0).op,
            Op::Fail { .. }
        ));
    }

    #[test]
    fn too_late_goes_back_at_its_exact_score_and_a_paused_host_after_the_pause() {
        let d = outcome(Attempt::TooLate, &job(""), 1, 0.0);
        assert_eq!(d.op, Op::Release(Score::at(1000.0)));
        assert_eq!(d.event, Event::TooLate);
        let d = outcome(Attempt::HostPaused(8 * SECOND), &job(""), 1, 0.5);
        assert_eq!(
            d.op,
            Op::Release(Score::at(1019.0)),
            "now + 8 s + a quarter of it, half drawn"
        );
        assert_eq!(
            d.event,
            Event::HostPaused {
                back_in: 9 * SECOND
            }
        );
    }

    #[test]
    fn claims_that_may_not_go_out() {
        let retry = retry();
        let allowed = [Allowed::parse("http://shop.example/close").unwrap()];
        let policy = Policy {
            retry: &retry,
            max_attempts: 4,
            retry_after_max: SECOND,
            allowed: &allowed,
        };
        assert_eq!(at_claim(&Ok(job("")), 1, &policy), None);
        assert_eq!(at_claim(&Ok(job("")), 4, &policy), None);
        let malformed = Job::parse(
            br#"{"callback":"http://shop.example/close","maxRetry":-1}"#,
            SECOND,
        );
        let d = at_claim(&malformed, 2, &policy).unwrap();
        assert_eq!(d.event, Event::Malformed);
        assert!(matches!(&d.op, Op::Fail { attempts: 1, reason } if reason.contains("`maxRetry`")));
        let elsewhere = Job::parse(br#"{"callback":"http://shop.example/other"}"#, SECOND);
        let d = at_claim(&elsewhere, 1, &policy).unwrap();
        assert_eq!(d, fail(0, NOT_ALLOWED.into(), Event::NotAllowed));
        let d = at_claim(&Ok(job("")), 5, &policy).unwrap();
        assert_eq!(d.event, Event::NoAttemptsLeft);
        assert!(
            matches!(&d.op, Op::Fail { attempts: 4, reason } if reason.contains("attempt 5 of 4"))
        );
        let d = at_claim(&Ok(job(r#","maxRetry":0"#)), 2, &policy).unwrap();
        assert_eq!(d.event, Event::NoAttemptsLeft, "the job's own maxRetry");
    }
}
