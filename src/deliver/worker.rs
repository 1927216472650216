//! The worker pool: `concurrency` threads, each with its own keep-alive HTTP agent,
//! turning a claimed job into one HTTP attempt and the attempt into an [`Outcome`].
//!
//! Workers never touch Redis; the main loop never waits on HTTP. Dropping the job
//! sender ends the workers once they finish the attempt in hand.

use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{info, warn};
use ureq::Agent;
use ureq::tls::{PemItem, RootCerts, TlsConfig};
use ureq::unversioned::transport::{ConnectProxyConnector, Connector, RustlsConnector};

use crate::deliver::breaker::{Breakers, Change};
use crate::deliver::resolver::{CallbackResolver, Denied};
use crate::deliver::{HttpSettings, SuccessRule, allowlist, signing, transport};
use crate::job::callback::Callback;
use crate::job::{Job, shorten};

pub const USER_AGENT: &str = concat!("delayqs/", env!("CARGO_PKG_VERSION"));

/// A job handed to a worker: what its attempt needs, with the HTTP settings in force
/// when it was claimed (a config reload hands out new ones; no lock is shared with the
/// workers).
#[derive(Debug)]
pub struct Delivery<T> {
    pub job: Job,
    /// `X-Delayqs-Job-Id`, and `webhook-id`: the SHA-1 of the member, which for a job
    /// scheduled under an id carries the id and a sequence number, so that it names one
    /// delivery (PROTOCOL §1.5).
    pub id: String,
    /// `X-Delayqs-Producer-Id`: the producer's own id, for a job scheduled under one.
    pub producer_id: Option<String>,
    /// `X-Delayqs-Attempt`: 1 for the first.
    pub attempt: u32,
    /// `X-Delayqs-Due`: when the job was first due, Unix seconds.
    pub first_due: f64,
    pub http: Arc<HttpSettings>,
    /// The last moment the attempt may start and still end, outcome written, inside
    /// the lease. A job waits in the channel while every worker is busy, and a hung
    /// endpoint could hold it there for a whole `timeoutMs`.
    pub start_by: Instant,
    /// The main loop's own record of the job (its lease), handed back untouched with
    /// the outcome: workers never look inside.
    pub back: T,
}

/// What became of a job a worker took.
#[derive(Debug)]
pub struct Outcome<T> {
    pub delivery: Delivery<T>,
    pub attempt: Attempt,
    pub took: Duration,
}

#[derive(Debug)]
pub enum Attempt {
    /// The request was made; this is how it went.
    Made(Result<(), Failure>),
    /// None was made: the job waited past its `start_by`.
    TooLate,
    /// None was made: the job's host is paused for this much longer.
    HostPaused(Duration),
}

/// A failed attempt, and what the endpoint said about the next one.
#[derive(Debug, Default, PartialEq)]
pub struct Failure {
    /// One line: the status and a response excerpt, or the transport error.
    pub reason: String,
    /// `Retry-After` of a 429 or 503: wait at least this long.
    pub retry_after: Option<Duration>,
    /// No more attempts: `410 Gone`, or the header `delayqs-retry: abort`.
    pub give_up: bool,
    /// The endpoint itself is in trouble (no connection, timeout, 429, 5xx), as
    /// opposed to refusing this one job; counts towards pausing its host.
    pub host_trouble: bool,
    /// The endpoint pushed back: 429, 502, 503, 504, a timeout or a refused
    /// connection. Slows its flow down (`dispatch::flow`).
    pub pressure: bool,
}

impl Failure {
    fn transport(reason: String) -> Failure {
        Failure {
            reason,
            host_trouble: true,
            pressure: true,
            ..Failure::default()
        }
    }

    /// A request that did not get an answer. Only trouble reaching or talking to the
    /// host counts against it: a request that could not be built (a URL or header
    /// the http crate refuses, say) would fail the same at any host, and must not
    /// pause a good one.
    fn not_sent(e: ureq::Error) -> Failure {
        use ureq::Error as E;
        let connection = matches!(
            e,
            E::Io(_)
                | E::Timeout(_)
                | E::HostNotFound
                | E::ConnectionFailed
                | E::Protocol(_)
                | E::Tls(_)
                | E::Rustls(_)
                | E::LargeResponseHeader(..)
                | E::ConnectProxyFailed(_)
                | E::TlsRequired
                | E::Other(_)
                | E::BodyStalled
        );
        let pressure = matches!(e, E::Io(_) | E::Timeout(_) | E::ConnectionFailed);
        Failure {
            reason: format!("request failed: {e}"),
            host_trouble: connection,
            pressure,
            ..Failure::default()
        }
    }
}

/// What the workers share with the main loop.
///
/// The main loop sleeps on `bell`, not on `outcomes`: a worker rings it only when a
/// round is worth making, once `ring_at` outcomes wait (the main loop keeps it at
/// its prefetch mark) or no job waits for a worker.
/// A busy pool then wakes the loop once per batch rather than once per job; its timer
/// bounds how long an outcome can wait unwritten.
///
/// The workers keep the host breakers: each checks a job's host when it takes the
/// job and notes how the attempt went, so a pause holds back the very next job, even
/// one that was already waiting in the channel.
pub struct Links<T> {
    pub outcomes: Sender<Outcome<T>>,
    pub bell: Sender<()>,
    pub ring_at: Arc<AtomicUsize>,
    pub breakers: Arc<Mutex<Breakers>>,
}

// By hand: a derived Clone would ask for `T: Clone`, which the channels do not need.
impl<T> Clone for Links<T> {
    fn clone(&self) -> Links<T> {
        Links {
            outcomes: self.outcomes.clone(),
            bell: self.bell.clone(),
            ring_at: self.ring_at.clone(),
            breakers: self.breakers.clone(),
        }
    }
}

/// Starts `n` named worker threads reading from `jobs`.
pub fn start<T: Send + 'static>(
    n: usize,
    jobs: Receiver<Delivery<T>>,
    links: Links<T>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..n)
        .map(|i| {
            let jobs = jobs.clone();
            let links = links.clone();
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || work(jobs, links))
        })
        .collect()
}

fn work<T>(jobs: Receiver<Delivery<T>>, links: Links<T>) {
    // The agent keeps connections alive between calls; it is rebuilt only when a
    // reload changed the settings it was built with.
    let mut current: Option<(Arc<HttpSettings>, Agent)> = None;
    for delivery in jobs.iter() {
        let started = Instant::now();
        // Everything between taking a job and reporting it runs under the guard: a
        // panic anywhere in it (building the agent, the breakers, the attempt) must not
        // lose the outcome, since the main loop counts on one per job it handed out.
        let attempt = catch_unwind(AssertUnwindSafe(|| {
            take(&mut current, &delivery, &links, started)
        }))
        .unwrap_or_else(|_| {
            current = None; // it may be half-built: start afresh
            Attempt::Made(Err(Failure {
                reason: "internal error: the attempt panicked".into(),
                ..Failure::default()
            }))
        });
        let outcome = Outcome {
            delivery,
            attempt,
            took: started.elapsed(),
        };
        if links.outcomes.send(outcome).is_err() {
            return; // the main loop is gone; its leases cover what we hold
        }
        if links.outcomes.len() >= links.ring_at.load(Ordering::Relaxed) || jobs.is_empty() {
            // Full: the loop is awake already and will drain the outcomes.
            let _ = links.bell.try_send(());
        }
    }
}

/// What becomes of one job taken from the channel: too late to start, held back by
/// its host's pause, or an attempt.
fn take<T>(
    current: &mut Option<(Arc<HttpSettings>, Agent)>,
    delivery: &Delivery<T>,
    links: &Links<T>,
    started: Instant,
) -> Attempt {
    if started > delivery.start_by {
        return Attempt::TooLate;
    }
    let host = delivery.job.callback.host_key();
    if let Some(wait) = links.breakers().hold(host) {
        return Attempt::HostPaused(wait);
    }
    let agent = match current {
        Some((http, agent)) if Arc::ptr_eq(http, &delivery.http) => agent,
        _ => {
            &current
                .insert((delivery.http.clone(), agent(&delivery.http)))
                .1
        }
    };
    let result = attempt(agent, delivery);
    links.note(host, &result);
    Attempt::Made(result)
}

impl<T> Links<T> {
    fn breakers(&self) -> MutexGuard<'_, Breakers> {
        // The breakers stay consistent even if a holder panicked: each call is one
        // small update.
        self.breakers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts an attempt towards pausing its host, or towards its recovery.
    fn note(&self, host: &str, result: &Result<(), Failure>) {
        let trouble = matches!(result, Err(f) if f.host_trouble);
        // The lock is let go before logging: every worker takes it for every job.
        let (change, pause) = {
            let mut breakers = self.breakers();
            (breakers.record(host, trouble), breakers.pause())
        };
        match change {
            Some(Change::Tripped(n)) => warn!(
                "callbacks to {host} failed {n} times in a row; its jobs wait {:.0} s before the next try, other hosts go on",
                pause.as_secs_f64()
            ),
            Some(Change::Recovered) => info!("callbacks to {host} answer again"),
            None => {}
        }
    }
}

fn agent(http: &HttpSettings) -> Agent {
    let config = Agent::config_builder()
        .timeout_connect(Some(http.connect_timeout))
        .timeout_global(Some(http.timeout))
        .http_status_as_error(false)
        // A redirect would turn the POST into a GET somewhere else; an endpoint that
        // moved should get its jobs' callback changed instead.
        .max_redirects(0)
        // No proxy from HTTP_PROXY, HTTPS_PROXY or ALL_PROXY: through a proxy only the
        // proxy's address would be resolved, and `denyPrivateNetworks` would judge it
        // instead of the callback's. delayqs connects to callbacks directly.
        .proxy(None)
        .user_agent(USER_AGENT)
        .tls_config(tls(http))
        .build();
    Agent::with_parts(
        config,
        // ureq's default chain (less the SOCKS and native-tls links, which this build
        // lacks), with our TCP link in place of ureq's (see transport.rs).
        ().chain(ConnectProxyConnector::default())
            .chain(transport::Tcp)
            .chain(RustlsConnector::default()),
        CallbackResolver::new(http.deny_private_networks),
    )
}

/// Certificates are always verified: against `caFile` when set (a private CA), else
/// against the webpki roots built into the binary, so a bare host needs no CA bundle.
fn tls(http: &HttpSettings) -> TlsConfig {
    let roots = match &http.ca_pem {
        None => RootCerts::WebPki,
        Some(pem) => ureq::tls::parse_pem(pem)
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(cert)) => Some(cert),
                _ => None,
            })
            .into(),
    };
    TlsConfig::builder().root_certs(roots).build()
}

/// One attempt: the request, and the redirects it may follow. Every hop shares one
/// deadline, the job's `timeout` or `timeoutMs` from the start, since the lease
/// allows one such span per attempt, whatever the number of hops.
fn attempt<T>(agent: &Agent, d: &Delivery<T>) -> Result<(), Failure> {
    let http = &d.http;
    let deadline = Instant::now() + d.job.options.timeout.unwrap_or(http.timeout);
    let mut url = d.job.callback.clone();
    let mut hops = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::transport(format!(
                "timed out after {hops} redirects, at {url}"
            )));
        }
        let cross_origin = !url.same_origin(&d.job.callback);
        let mut response = send(agent, d, &url, left, cross_origin)?;
        let status = response.status().as_u16();
        // Only the redirects that keep the method and body, only as many as allowed,
        // and only to where a callback itself may go.
        if matches!(status, 307 | 308) && hops < http.follow_redirects {
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok());
            let next = location.and_then(|l| url.follow(l));
            url = match next {
                Some(next) if allowlist::allows(&http.allowed, &next) => next,
                _ => {
                    return Err(Failure {
                        reason: format!(
                            "HTTP {status} to {:?}, which is not an http(s) URL within allowedCallbacks",
                            location.unwrap_or("")
                        ),
                        give_up: true,
                        ..Failure::default()
                    });
                }
            };
            hops += 1;
            continue;
        }
        return judge_response(http, status, &mut response);
    }
}

/// Sends the job to `url` within `left`: the method, headers, signature and body of
/// PROTOCOL §2 and the job's options. On another origin than the callback's (a
/// redirect), the job's credential headers stay behind, as browsers and curl do.
fn send<T>(
    agent: &Agent,
    d: &Delivery<T>,
    url: &Callback,
    left: Duration,
    cross_origin: bool,
) -> Result<ureq::http::Response<ureq::Body>, Failure> {
    let (http, job, options) = (&d.http, &d.job, &d.job.options);
    let request = match options.put {
        true => agent.put(url.as_str()),
        false => agent.post(url.as_str()),
    };
    // The agent's own timeout is `timeoutMs`: a request of its own config (a copy of
    // the agent's, per request) only when the deadline is another.
    let mut request = match left < http.timeout {
        true => request.config().timeout_global(Some(left)).build(),
        false => request,
    };
    // When the job was first due: a retry does not make a stale action fresh.
    request = request
        .header("X-Delayqs-Job-Id", &d.id)
        .header("X-Delayqs-Attempt", d.attempt.to_string())
        .header("X-Delayqs-Due", format!("{:.3}", d.first_due));
    if let Some(id) = &d.producer_id {
        request = request.header("X-Delayqs-Producer-Id", id);
    }
    for (name, value) in &options.headers {
        if !(cross_origin && credential(name)) {
            request = request.header(name, value);
        }
    }
    if options.json && !job.sign.is_empty() {
        // The form's `sign` field has no place in a JSON body.
        request = request.header("X-Delayqs-Sign", &job.sign);
    }
    let (content_type, body) = job.request_body();
    if !http.signing.is_empty() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for (name, value) in signing::headers(&http.signing, &d.id, now, body.as_bytes()) {
            request = request.header(name, value);
        }
    }
    request
        .content_type(content_type)
        .send(body)
        .map_err(|e| match e {
            // Not the host's trouble, and no later attempt would be let through either.
            ureq::Error::Other(denied) if denied.is::<Denied>() => Failure {
                reason: format!("refused: {denied}"),
                give_up: true,
                ..Failure::default()
            },
            e => Failure::not_sent(e),
        })
}

/// A header that carries credentials: never sent to an origin the job did not name.
fn credential(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "authorization"
        || n == "cookie"
        || [
            "auth", "token", "secret", "session", "password", "api-key", "apikey",
        ]
        .iter()
        .any(|word| n.contains(word))
}

/// Reads at most `maxResponseBytes` of the response and applies the success rule,
/// noting what the endpoint asked for the next attempt.
fn judge_response(
    http: &HttpSettings,
    status: u16,
    response: &mut ureq::http::Response<ureq::Body>,
) -> Result<(), Failure> {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let retry_after = match status {
        429 | 503 => header("retry-after").and_then(|v| crate::timefmt::parse_retry_after(&v)),
        _ => None,
    };
    let abort = header("delayqs-retry").is_some_and(|v| v.trim().eq_ignore_ascii_case("abort"));
    let mut body = Vec::new();
    response
        .body_mut()
        .as_reader()
        .take(http.max_response_bytes)
        .read_to_end(&mut body)
        .map_err(|e| {
            Failure::transport(format!("HTTP {status}, reading the response failed: {e}"))
        })?;
    judge(&http.success, status, &body).map_err(|reason| Failure {
        reason: match (status, abort) {
            (_, true) => format!("{reason}; the endpoint answered `delayqs-retry: abort`"),
            (410, _) => format!("{reason}; 410 Gone: the endpoint wants no more attempts"),
            _ => reason,
        },
        retry_after,
        give_up: status == 410 || abort,
        host_trouble: status == 429 || status >= 500,
        pressure: matches!(status, 429 | 502 | 503 | 504),
    })
}

/// Applies the success rule to a response.
pub fn judge(rule: &SuccessRule, status: u16, body: &[u8]) -> Result<(), String> {
    let ok_status = (200..300).contains(&status);
    let (ok, text) = match rule {
        SuccessRule::BodyContains(text) => (contains_ignore_case(body, text), Some(text)),
        SuccessRule::Status2xx => (ok_status, None),
        SuccessRule::Status2xxAndBodyContains(text) => {
            (ok_status && contains_ignore_case(body, text), Some(text))
        }
    };
    if ok {
        return Ok(());
    }
    let excerpt = shorten(String::from_utf8_lossy(body).trim(), 200);
    match text {
        Some(text) if ok_status || matches!(rule, SuccessRule::BodyContains(_)) => Err(format!(
            "HTTP {status}, response does not contain {text:?}: {excerpt:?}"
        )),
        _ => Err(format!("HTTP {status}: {excerpt:?}")),
    }
}

fn contains_ignore_case(haystack: &[u8], needle: &str) -> bool {
    let needle = needle.as_bytes();
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_rule_ignores_status_and_case() {
        let rule = SuccessRule::BodyContains("success".into());
        assert!(judge(&rule, 500, b"{\"r\":\"SUCCESS\"}").is_ok());
        let e = judge(&rule, 200, b"ok").unwrap_err();
        assert!(e.contains("HTTP 200") && e.contains("\"success\""), "{e}");
    }

    #[test]
    fn status_rules() {
        assert!(judge(&SuccessRule::Status2xx, 204, b"").is_ok());
        assert!(judge(&SuccessRule::Status2xx, 302, b"success").is_err());
        let rule = SuccessRule::Status2xxAndBodyContains("done".into());
        assert!(judge(&rule, 201, b"all Done").is_ok());
        assert!(
            judge(&rule, 500, b"done")
                .unwrap_err()
                .starts_with("HTTP 500:")
        );
        assert!(judge(&rule, 200, b"nope").is_err());
    }
}
