//! Flow control: how many calls each flow (a callback host, or a job's `flowKey`) may
//! have under way and start per second, and how a flow slows down when its endpoint
//! pushes back.
//!
//! The state is this daemon's, not Redis's: each daemon on a queue takes an equal share
//! of every limit (the heartbeat tells how many daemons serve the queue and this one's
//! rank among them). That costs no Redis call per job or per flow, and it holds across
//! shards and Cluster slots, which no script could (a flow's jobs live in every shard).
//! The price: a daemon joining or leaving shifts the shares within one heartbeat
//! (2 s), and a dead daemon's share comes back when its record expires (10 s).
//!
//! A job whose flow has no room is not held in memory, where it would take a place in
//! the pool from other hosts' jobs, nor put back to be claimed again at once: it goes
//! back to the queue at the flow's next free *slot*. Slots are handed out one after
//! the other at the flow's pace (1 / rate, or the mean call over the concurrency), so a
//! backlog of 100,000 jobs for one host spreads over the time its limit needs, each
//! job is claimed about once, and the queue's due order leaves other hosts' jobs
//! where they were. A job keeps its first due time through every deferral (the
//! lateness metric counts the wait).
//!
//! Back-pressure (AIMD): a 429, 502, 503, 504, a timeout or a refused connection halves
//! the flow's rate (at most every [`DECREASE_EVERY`]), `Retry-After` holds the flow
//! that long; each calm [`INCREASE_EVERY`] adds a tenth of the limit back. Only a flow
//! with limits adapts; one with a concurrency limit only is slowed from the pace it was
//! running at.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::config::flow::{FlowControl, Limits};
use crate::job::Job;

/// Full flows passed to one claim call at most.
const FULL_SHOWN: usize = 16;
/// Flows remembered at most; past that, idle ones are forgotten.
const MAX_FLOWS: usize = 10_000;
/// A slowed flow's rate is halved at most this often: the calls under way when it
/// first pushed back answer the same, and must not halve it again each.
const DECREASE_EVERY: Duration = Duration::from_millis(500);
/// A slowed flow gains a tenth of its limit back after each such calm spell.
const INCREASE_EVERY: Duration = Duration::from_millis(500);
/// The slowest a flow is slowed to, calls per second (fleet-wide).
const MIN_RATE: f64 = 0.5;
/// The call duration assumed before a flow's first call ends.
const FIRST_CALL_GUESS: f64 = 0.1;
/// Where a paused flow's jobs wait: this far ahead, listed in the flow's parked set so
/// that `resume` brings them back at once. Should the resume be missed, they come
/// due again by themselves and are parked again while the pause lasts.
pub const PARK_FOR: f64 = 86_400.0;

/// A flow's name: its `flowKey`, or its callback's `host[:port]`.
pub fn flow_of(job: &Job) -> &str {
    job.options
        .flow_key
        .as_deref()
        .unwrap_or_else(|| job.callback.host_key())
}

/// What to do with a claimed job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admit {
    /// Send it now (counted as under way until [`Flows::finished`]).
    Go,
    /// Back to the queue at this score (Unix s, Redis's clock): the flow's next slot.
    Defer(f64),
    /// The flow is paused (`delayqs pause --host`): park it.
    Park,
}

/// How an attempt went, as far as its flow cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// An answer that says nothing about load: success, or a refusal of this job.
    Calm,
    /// The endpoint pushed back (429, 502–504, timeout, refused), perhaps saying how
    /// long to wait.
    Pressure(Option<Duration>),
}

/// This daemon's place in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub daemons: usize,
    pub rank: usize,
}

pub struct Flows {
    config: FlowControl,
    share: Share,
    /// Flows an operator paused (by host or flow key).
    paused: HashSet<String>,
    flows: HashMap<String, Flow>,
    /// Flows whose last job found no room and went to the back of the line, and when:
    /// for a second after, the claim sends their fresh jobs to their slots itself.
    full: HashMap<String, Instant>,
}

struct Flow {
    limits: Limits,
    /// Calls of this daemon under way or waiting in the channel.
    in_flight: u32,
    tokens: f64,
    refilled: Instant,
    /// The fleet-wide rate the flow is slowed to, below its limit; `None`: not slowed.
    slowed: Option<f64>,
    /// When the rate last changed because of pressure, or last grew back.
    rate_changed: Instant,
    /// Until when the endpoint asked for no calls (`Retry-After`, or a host pause).
    hold_until: Option<Instant>,
    /// The score the next deferred job gets (Redis's clock).
    next_slot: f64,
    /// The same for jobs back at their slot that still found no room.
    next_waited: f64,
    /// The rate it ran at when back-pressure first slowed it: the line's pace while
    /// slowed, for a flow without a limit.
    unslowed: Option<f64>,
    /// Running mean of a call, in seconds.
    mean_call: f64,
    /// Calls started in the current second, and in the last whole one: the pace an
    /// unlimited flow ran at when it first pushed back.
    started_now: (Instant, u32),
    pace: f64,
    /// Jobs sent back to wait for a slot, since start.
    deferred: u64,
    /// The last time the endpoint pushed back, and how.
    last_pressure: Option<(Instant, String)>,
    used: Instant,
}

/// One flow as shown by `stats`, `top` and the metrics file.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub name: String,
    /// The configured rate (fleet-wide), if any.
    pub limit: Option<f64>,
    /// The rate it runs at now (fleet-wide): the limit, or lower while slowed.
    pub rate: Option<f64>,
    pub concurrency: Option<u32>,
    pub in_flight: u32,
    pub deferred: u64,
    pub slowed: bool,
    pub paused: bool,
    /// Seconds the flow is still held by `Retry-After` or a host pause.
    pub held_for: Option<f64>,
    pub last_pressure: Option<String>,
}

impl Flows {
    pub fn new(config: FlowControl) -> Flows {
        Flows {
            config,
            share: Share {
                daemons: 1,
                rank: 0,
            },
            paused: HashSet::new(),
            flows: HashMap::new(),
            full: HashMap::new(),
        }
    }

    /// The heartbeat saw this many daemons, this one at `rank` among them.
    pub fn set_share(&mut self, share: Share) {
        self.share = Share {
            daemons: share.daemons.max(1),
            rank: share.rank.min(share.daemons.max(1) - 1),
        };
    }

    /// The flows an operator paused now; returns those that were paused and no longer
    /// are, whose parked jobs must come back.
    pub fn set_paused(&mut self, paused: HashSet<String>) -> Vec<String> {
        let resumed = self.paused.difference(&paused).cloned().collect();
        self.paused = paused;
        resumed
    }

    pub fn paused_names(&self) -> &HashSet<String> {
        &self.paused
    }

    pub fn is_paused(&self, job: &Job) -> bool {
        self.paused.contains(flow_of(job)) || self.is_paused_by_host(job)
    }

    /// Paused by its host's name (`pause --host`), whatever its flow key.
    pub fn is_paused_by_host(&self, job: &Job) -> bool {
        self.paused.contains(job.callback.host_key())
    }

    /// Whether `job` may be sent now; `now` is Redis's clock. A job let go counts as
    /// under way in its flow until [`Flows::finished`].
    ///
    /// `waited`: the job was put back before (a slot, a retry). It has had its turn in
    /// line, so a call it finds a hair early (its token not quite grown, a call not
    /// quite ended) must not send it to the back of the line: it may take a token in
    /// advance, and else waits only for the next token or call.
    pub fn admit(&mut self, job: &Job, now: f64, waited: bool) -> Admit {
        if self.is_paused(job) {
            return Admit::Park;
        }
        let share = self.share;
        let Some(flow) = self.flow(job) else {
            return Admit::Go; // too many flows remembered: this one goes unlimited
        };
        let at = Instant::now();
        flow.used = at;
        flow.recover(at);
        let rate = flow.rate_now().map(|r| r / share.daemons as f64);
        let burst = (flow.limits.burst as f64 / share.daemons as f64).max(1.0);
        if let Some(r) = rate {
            let elapsed = at.duration_since(flow.refilled).as_secs_f64();
            flow.tokens = (flow.tokens + elapsed * r).min(burst);
        }
        flow.refilled = at;
        let held = flow
            .hold_until
            .and_then(|until| until.checked_duration_since(at))
            .map(|d| d.as_secs_f64());
        let concurrency = flow.limits.concurrency.map(|c| share_of(c, share));
        let room = concurrency.is_none_or(|c| flow.in_flight < c);
        // A token in advance is paid back by the next refill: the rate holds on
        // average, the bucket only grows by one.
        // No token in advance while slowed: then the slowed rate holds for the line too.
        let token = rate.is_none()
            || flow.tokens >= 1.0
            || (waited && flow.slowed.is_none() && flow.tokens > 0.0);
        if held.is_none() && room && token {
            if rate.is_some() {
                flow.tokens -= 1.0;
            }
            flow.in_flight += 1;
            flow.count_start(at);
            return Admit::Go;
        }
        if waited && held.is_none() && flow.slowed.is_none() {
            // Not to the back of the line: the next token, or the next call to end.
            // Several such jobs take turns (a chain of their own at the flow's pace),
            // so that they cost a claim each per turn, not one per token.
            let by_rate = rate.map_or(0.0, |r| ((1.0 - flow.tokens) / r).max(0.0));
            let by_room = match room {
                true => 0.0,
                false => flow.mean_call / concurrency.unwrap_or(1).max(1) as f64,
            };
            let (_, spacing) = flow.next(now, share);
            let slot = (now + by_rate.max(by_room).max(0.001)).max(flow.next_waited);
            flow.next_waited = slot + spacing;
            flow.deferred += 1;
            return Admit::Defer(slot);
        }
        let slot = flow.slot(now, share);
        if self.full.len() < FULL_SHOWN || self.full.contains_key(flow_of(job)) {
            self.full.insert(flow_of(job).to_string(), at);
        }
        Admit::Defer(slot)
    }

    /// The flows whose fresh jobs the claim may send to their slots itself (claim.lua's
    /// ARGV[6]): those that had no room within the last second, not paused, at most
    /// [`FULL_SHOWN`]; one line each, "<next slot> <spacing> <flow>".
    pub fn full_spec(&mut self, now: f64) -> String {
        let at = Instant::now();
        self.full
            .retain(|_, t| at.duration_since(*t) < Duration::from_secs(1));
        let mut lines: Vec<String> = self
            .full
            .keys()
            .filter(|name| !self.paused.contains(*name) && !name.contains('\n'))
            .filter_map(|name| {
                let (start, spacing) = self.flows.get(name)?.next(now, self.share);
                Some(format!("{start:.6} {spacing:.6} {name}"))
            })
            .collect();
        lines.sort();
        lines.join("\n")
    }

    /// The claim sent `count` fresh jobs of `name` to slots, up to `next_slot`.
    pub fn slotted(&mut self, name: &str, count: u64, next_slot: f64) {
        if let Some(flow) = self.flows.get_mut(name) {
            flow.next_slot = flow.next_slot.max(next_slot);
            flow.deferred += count;
            // Still full: the next claim sends its fresh jobs on too.
            self.full.insert(name.to_string(), Instant::now());
        }
    }

    /// A call of `job` that [`Flows::admit`] let go has ended after `took`.
    pub fn finished(&mut self, job: &Job, took: Duration, answer: &Answer) {
        let adaptive = self.config.adaptive;
        let Some(flow) = self.flows.get_mut(flow_of(job)) else {
            return; // forgotten (too many flows), or never let go by admit
        };
        flow.in_flight = flow.in_flight.saturating_sub(1);
        let took = took.as_secs_f64();
        flow.mean_call += 0.1 * (took - flow.mean_call);
        // Only a flow with limits adapts: a host without any keeps going at full
        // pace through the odd timeout or 503 (the short chaos run, a flaky endpoint
        // failing one call in six that way, drained at a tenth of its pace when every
        // host adapted), and the host breaker stays its defence.
        if adaptive && !flow.limits.is_none() {
            flow.pushed_back(answer);
        }
    }

    /// A job [`Flows::admit`] let go never started (too late, or held back by its
    /// host's breaker): its place is free again.
    pub fn unstarted(&mut self, job: &Job) {
        if let Some(flow) = self.flows.get_mut(flow_of(job)) {
            flow.in_flight = flow.in_flight.saturating_sub(1);
        }
    }

    /// The next slot of `job`'s flow, for a job that must wait whatever its room.
    pub fn slot(&mut self, job: &Job, now: f64) -> f64 {
        let share = self.share;
        match self.flow(job) {
            Some(flow) => flow.slot(now, share),
            None => now,
        }
    }

    /// A host pause (`hostFailureThreshold`) holds the flow this much longer: its jobs
    /// get slots after it, at its pace, instead of all coming back at its end.
    pub fn hold(&mut self, job: &Job, wait: Duration) {
        if let Some(flow) = self.flow(job) {
            let at = Instant::now();
            let until = at + wait;
            flow.hold_until = Some(flow.hold_until.map_or(until, |h| h.max(until)));
            if flow.slowed.is_none() {
                // Its jobs come back slower than they went out.
                flow.pushed_back(&Answer::Pressure(None));
            }
            flow.last_pressure = Some((at, "paused by its breaker (hostFailureThreshold)".into()));
        }
    }

    /// The flows seen lately and the paused ones, the busiest first, at most `limit`.
    pub fn views(&self, limit: usize) -> Vec<View> {
        let at = Instant::now();
        let mut views: Vec<View> = self
            .flows
            .iter()
            .filter(|(_, f)| {
                f.in_flight > 0
                    || !f.limits.is_none()
                    || f.slowed.is_some()
                    || at.duration_since(f.used) < Duration::from_secs(60)
            })
            .map(|(name, f)| View {
                name: name.clone(),
                limit: f.limits.rate,
                rate: f.rate_now(),
                concurrency: f.limits.concurrency,
                in_flight: f.in_flight,
                deferred: f.deferred,
                slowed: f.slowed.is_some(),
                paused: self.paused.contains(name),
                held_for: f
                    .hold_until
                    .and_then(|u| u.checked_duration_since(at))
                    .map(|d| d.as_secs_f64()),
                last_pressure: f.last_pressure.as_ref().map(|(_, why)| why.clone()),
            })
            .collect();
        for name in &self.paused {
            if !self.flows.contains_key(name) {
                views.push(View {
                    name: name.clone(),
                    limit: None,
                    rate: None,
                    concurrency: None,
                    in_flight: 0,
                    deferred: 0,
                    slowed: false,
                    paused: true,
                    held_for: None,
                    last_pressure: None,
                });
            }
        }
        views.sort_by(|a, b| {
            (b.in_flight, b.deferred, &a.name).cmp(&(a.in_flight, a.deferred, &b.name))
        });
        views.truncate(limit);
        views
    }

    /// A flow's state, made on first use. Flows without limits are kept too: their
    /// pace is what back-pressure slows them from, and `top` shows them. `None` only
    /// when too many flows are busy to remember one more.
    fn flow(&mut self, job: &Job) -> Option<&mut Flow> {
        let name = flow_of(job);
        if !self.flows.contains_key(name) {
            let limits = self
                .config
                .limits(job.options.flow_key.as_deref(), &job.callback);
            self.insert(name.to_string(), limits);
        }
        self.flows.get_mut(name)
    }

    fn insert(&mut self, name: String, limits: Limits) {
        if self.flows.len() >= MAX_FLOWS {
            let at = Instant::now();
            self.flows.retain(|_, f| {
                f.in_flight > 0
                    || f.slowed.is_some()
                    || at.duration_since(f.used) < Duration::from_secs(60)
            });
            if self.flows.len() >= MAX_FLOWS {
                return; // every one busy: this flow goes unlimited rather than grow the map
            }
        }
        let at = Instant::now();
        let burst = (limits.burst as f64 / self.share.daemons as f64).max(1.0);
        self.flows.insert(
            name,
            Flow {
                limits,
                in_flight: 0,
                tokens: burst,
                refilled: at,
                slowed: None,
                rate_changed: at,
                hold_until: None,
                next_slot: 0.0,
                next_waited: 0.0,
                unslowed: None,
                mean_call: FIRST_CALL_GUESS,
                started_now: (at, 0),
                pace: 0.0,
                deferred: 0,
                last_pressure: None,
                used: at,
            },
        );
    }
}

/// This daemon's part of a fleet-wide limit of `n` calls: an equal share, the rest
/// going to the first ranks, so that the parts add up to `n` exactly (a daemon may get
/// none, and leaves that flow to the others).
fn share_of(n: u32, share: Share) -> u32 {
    let d = share.daemons as u32;
    n / d + u32::from((share.rank as u32) < n % d)
}

impl Flow {
    /// Hands out the flow's next slot: a place in line at its pace (a slot per call
    /// its rate allows, or per call its concurrency finishes, whichever is slower),
    /// no sooner than the flow may call again.
    fn slot(&mut self, now: f64, share: Share) -> f64 {
        let (slot, spacing) = self.next(now, share);
        self.next_slot = slot + spacing;
        self.deferred += 1;
        slot
    }

    /// The slot the next job would get, and the spacing between slots.
    fn next(&self, now: f64, share: Share) -> (f64, f64) {
        let at = Instant::now();
        let rate = self.rate_now().map(|r| r / share.daemons as f64);
        // The line keeps the limit's pace (without one, the pace before the flow was
        // slowed) while back-pressure slows the flow: a slot lasts as long as its job
        // waits, and a line laid out at the slowed pace would keep that pace long
        // after the endpoint recovered (at 0.5/s, 10,000 jobs would take 5 hours).
        // While slowed, the jobs at their slots go at the slowed rate, and those that
        // find no token go to the line's end.
        let pace = self
            .limits
            .rate
            .or(self.slowed.and(self.unslowed))
            .or(self.slowed)
            .map(|r| r / share.daemons as f64);
        let concurrency = self.limits.concurrency.map(|c| share_of(c, share));
        let by_rate = pace.map_or(0.0, |r| 1.0 / r);
        let by_room = concurrency.map_or(0.0, |c| self.mean_call / c.max(1) as f64);
        let spacing = by_rate.max(by_room).max(0.001);
        let held = self
            .hold_until
            .and_then(|until| until.checked_duration_since(at))
            .map_or(0.0, |d| d.as_secs_f64());
        let mut earliest = now + held;
        if let Some(r) = rate {
            earliest += ((1.0 - self.tokens) / r).max(0.0);
        }
        (self.next_slot.max(earliest), spacing)
    }

    /// The fleet-wide rate the flow may run at now.
    fn rate_now(&self) -> Option<f64> {
        match (self.slowed, self.limits.rate) {
            (Some(s), Some(limit)) => Some(s.min(limit)),
            (Some(s), None) => Some(s),
            (None, limit) => limit,
        }
    }

    fn count_start(&mut self, at: Instant) {
        let (since, n) = self.started_now;
        let elapsed = at.duration_since(since);
        if elapsed >= Duration::from_secs(1) {
            self.pace = n as f64 / elapsed.as_secs_f64();
            self.started_now = (at, 1);
        } else {
            self.started_now.1 += 1;
        }
    }

    fn pushed_back(&mut self, answer: &Answer) {
        let Answer::Pressure(retry_after) = answer else {
            return;
        };
        let at = Instant::now();
        if let Some(wait) = retry_after {
            let until = at + *wait;
            self.hold_until = Some(self.hold_until.map_or(until, |h| h.max(until)));
        }
        self.last_pressure = Some((
            at,
            match retry_after {
                Some(w) => format!("pushed back, Retry-After {} s", w.as_secs_f64()),
                None => "pushed back".to_string(),
            },
        ));
        if self.slowed.is_some() && at.duration_since(self.rate_changed) < DECREASE_EVERY {
            return;
        }
        let current = self.rate_now().unwrap_or_else(|| {
            // Unlimited until now: slow it from the pace it ran at (the last whole
            // second, or the calls started since, if that is faster).
            let (since, n) = self.started_now;
            let recent = n as f64 / at.duration_since(since).as_secs_f64().max(0.1);
            self.pace.max(recent).max(MIN_RATE * 2.0)
        });
        if self.slowed.is_none() {
            self.unslowed = Some(current);
        }
        self.slowed = Some((current / 2.0).max(MIN_RATE));
        self.rate_changed = at;
    }

    /// A slowed flow gains rate back after each calm spell, up to its limit (or, with
    /// none, until it is no longer slowed).
    fn recover(&mut self, at: Instant) {
        let Some(slowed) = self.slowed else {
            return;
        };
        let calm = at.duration_since(self.rate_changed);
        let recent_trouble = self
            .last_pressure
            .as_ref()
            .is_some_and(|(when, _)| at.duration_since(*when) < INCREASE_EVERY);
        if calm < INCREASE_EVERY || recent_trouble {
            return;
        }
        let steps = (calm.as_secs_f64() / INCREASE_EVERY.as_secs_f64()).floor();
        let ceiling = self.limits.rate.unwrap_or(f64::INFINITY);
        // A tenth of the limit per step; a flow without one grows by half each step.
        let grown = match self.limits.rate {
            Some(limit) => slowed + steps * (limit / 10.0).max(MIN_RATE),
            None => slowed * 1.5f64.powf(steps),
        };
        self.rate_changed = at;
        if grown >= ceiling || (self.limits.rate.is_none() && grown > 10.0 * self.pace.max(1.0)) {
            self.slowed = None;
            self.unslowed = None;
        } else {
            self.slowed = Some(grown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: serde_json::Value) -> FlowControl {
        FlowControl::parse(v).unwrap()
    }

    fn job(url: &str, flow_key: Option<&str>) -> Job {
        let mut m = json!({"callback": url, "body": 1});
        if let Some(k) = flow_key {
            m["flowKey"] = json!(k);
        }
        Job::parse(m.to_string().as_bytes(), Duration::from_secs(30)).unwrap()
    }

    #[test]
    fn concurrency_caps_calls_under_way_and_frees_on_finish() {
        let mut f = Flows::new(config(json!({"default": {"concurrency": 2}})));
        let a = job("http://a.example/x", None);
        assert_eq!(f.admit(&a, 100.0, false), Admit::Go);
        assert_eq!(f.admit(&a, 100.0, false), Admit::Go);
        let Admit::Defer(slot) = f.admit(&a, 100.0, false) else {
            panic!("a third call must wait")
        };
        assert!(slot >= 100.0);
        let b = job("http://b.example/x", None);
        assert_eq!(
            f.admit(&b, 100.0, false),
            Admit::Go,
            "another host has its own limit"
        );
        f.finished(&a, Duration::from_millis(10), &Answer::Calm);
        assert_eq!(f.admit(&a, 100.0, false), Admit::Go);
    }

    #[test]
    fn a_rate_spends_its_burst_then_hands_out_slots_at_its_pace() {
        let mut f = Flows::new(config(json!({
            "hosts": [{"match": "a.example", "perSecond": 10, "burst": 3}],
        })));
        let a = job("http://a.example/x", None);
        for _ in 0..3 {
            assert_eq!(f.admit(&a, 100.0, false), Admit::Go);
        }
        let slots: Vec<f64> = (0..4)
            .map(|_| match f.admit(&a, 100.0, false) {
                Admit::Defer(s) => s,
                other => panic!("{other:?}"),
            })
            .collect();
        for pair in slots.windows(2) {
            assert!((pair[1] - pair[0] - 0.1).abs() < 1e-9, "{slots:?}");
        }
        assert!(slots[0] > 100.0 && slots[0] <= 100.1 + 1e-9, "{slots:?}");
        let other = job("http://other.example/x", None);
        assert_eq!(f.admit(&other, 100.0, false), Admit::Go);
    }

    #[test]
    fn two_daemons_take_half_each_and_the_parts_add_up() {
        let s = |rank| Share { daemons: 3, rank };
        assert_eq!(
            [share_of(4, s(0)), share_of(4, s(1)), share_of(4, s(2))],
            [2, 1, 1]
        );
        assert_eq!([share_of(1, s(0)), share_of(1, s(1))], [1, 0]);
        let mut f = Flows::new(config(json!({"default": {"perSecond": 10, "burst": 10}})));
        f.set_share(Share {
            daemons: 2,
            rank: 1,
        });
        let a = job("http://a.example/x", None);
        let gone = (0..10)
            .filter(|_| f.admit(&a, 0.0, false) == Admit::Go)
            .count();
        assert_eq!(gone, 5, "half the burst");
        let Admit::Defer(first) = f.admit(&a, 0.0, false) else {
            panic!()
        };
        let Admit::Defer(second) = f.admit(&a, 0.0, false) else {
            panic!()
        };
        assert!(
            (second - first - 0.2).abs() < 1e-9,
            "half the rate: a slot per 0.2 s"
        );
    }

    #[test]
    fn pressure_halves_the_rate_and_calm_brings_it_back() {
        let mut f = Flows::new(config(json!({"default": {"perSecond": 100}})));
        let a = job("http://a.example/x", None);
        assert_eq!(f.admit(&a, 0.0, false), Admit::Go);
        f.finished(&a, Duration::from_millis(5), &Answer::Pressure(None));
        let v = &f.views(10)[0];
        assert_eq!((v.rate, v.slowed), (Some(50.0), true));
        // Calls under way at the time answer alike: one halving for them all.
        assert_eq!(f.admit(&a, 0.0, false), Admit::Go);
        f.finished(&a, Duration::from_millis(5), &Answer::Pressure(None));
        assert_eq!(f.views(10)[0].rate, Some(50.0));
        let flow = f.flows.get_mut("a.example").unwrap();
        flow.rate_changed -= Duration::from_secs(2);
        flow.last_pressure.as_mut().unwrap().0 -= Duration::from_secs(2);
        f.admit(&a, 0.0, false);
        assert_eq!(f.views(10)[0].rate, Some(90.0), "four calm steps of 10");
        let flow = f.flows.get_mut("a.example").unwrap();
        flow.rate_changed -= Duration::from_secs(1);
        f.admit(&a, 0.0, false);
        assert_eq!(
            (f.views(10)[0].rate, f.views(10)[0].slowed),
            (Some(100.0), false)
        );
    }

    #[test]
    fn retry_after_holds_a_limited_flow_and_an_unlimited_one_is_left_alone() {
        let mut f = Flows::new(config(
            json!({"hosts": [{"match": "a.example", "concurrency": 100}]}),
        ));
        let a = job("http://a.example/x", None);
        assert_eq!(f.admit(&a, 0.0, false), Admit::Go);
        f.finished(
            &a,
            Duration::from_millis(5),
            &Answer::Pressure(Some(Duration::from_secs(30))),
        );
        let Admit::Defer(slot) = f.admit(&a, 1000.0, false) else {
            panic!("held by Retry-After")
        };
        assert!((1029.0..=1030.0).contains(&slot), "{slot}");
        let v = &f.views(10)[0];
        // One call within the first 0.1 s is a pace of 10/s (less on a stalled
        // machine): slowed to half of it, not to the floor.
        let rate = v.rate.unwrap();
        assert!(v.slowed && rate > MIN_RATE && rate <= 5.0, "{v:?}");
        assert!(v.held_for.unwrap() > 29.0);
        let b = job("http://b.example/x", None);
        assert_eq!(f.admit(&b, 0.0, false), Admit::Go);
        f.finished(
            &b,
            Duration::from_millis(5),
            &Answer::Pressure(Some(Duration::from_secs(30))),
        );
        assert_eq!(f.admit(&b, 0.0, false), Admit::Go, "no limits: not slowed");
    }

    #[test]
    fn a_paused_flow_parks_by_host_or_flow_key_and_resuming_names_it() {
        let mut f = Flows::new(FlowControl::default());
        let a = job("http://a.example:8080/x", None);
        let keyed = job("http://b.example/x", Some("payments"));
        f.set_paused(["a.example:8080".to_string(), "payments".to_string()].into());
        assert_eq!(f.admit(&a, 0.0, false), Admit::Park);
        assert_eq!(f.admit(&keyed, 0.0, false), Admit::Park);
        assert_eq!(
            f.admit(&job("http://a.example/x", None), 0.0, false),
            Admit::Go
        );
        let resumed = f.set_paused(["payments".to_string()].into());
        assert_eq!(resumed, ["a.example:8080"]);
        assert_eq!(f.admit(&a, 0.0, false), Admit::Go);
    }

    #[test]
    fn a_flow_key_shares_one_limit_across_hosts() {
        let mut f = Flows::new(config(json!({"flows": {"pay": {"concurrency": 1}}})));
        assert_eq!(
            f.admit(&job("http://a.example/", Some("pay")), 0.0, false),
            Admit::Go
        );
        assert!(matches!(
            f.admit(&job("http://b.example/", Some("pay")), 0.0, false),
            Admit::Defer(_)
        ));
        assert_eq!(
            f.admit(&job("http://b.example/", None), 0.0, false),
            Admit::Go
        );
    }

    #[test]
    fn a_job_back_at_its_slot_is_not_sent_to_the_back_of_the_line() {
        let mut f = Flows::new(config(json!({"default": {"perSecond": 10, "burst": 1}})));
        let a = job("http://a.example/x", None);
        assert_eq!(f.admit(&a, 100.0, false), Admit::Go);
        // A line of 50 slots, 5 s long.
        for _ in 0..50 {
            assert!(matches!(f.admit(&a, 100.0, false), Admit::Defer(_)));
        }
        // The first slot's job comes back a hair before its token has grown.
        f.flows.get_mut("a.example").unwrap().tokens = 0.98;
        assert_eq!(f.admit(&a, 100.1, true), Admit::Go, "a token in advance");
        let Admit::Defer(back) = f.admit(&a, 100.1, true) else {
            panic!("no token at all: it waits")
        };
        assert!(
            back < 100.5,
            "the next token, not the line's end (105): {back}"
        );
    }

    #[test]
    fn a_full_flow_is_named_to_the_claim_with_its_next_slot() {
        let mut f = Flows::new(config(json!({"default": {"perSecond": 10, "burst": 1}})));
        let a = job("http://a.example/x", None);
        assert_eq!(f.full_spec(100.0), "", "nothing full yet");
        assert_eq!(f.admit(&a, 100.0, false), Admit::Go);
        assert!(matches!(f.admit(&a, 100.0, false), Admit::Defer(_)));
        let spec = f.full_spec(100.0);
        let parts: Vec<&str> = spec.split(' ').collect();
        assert_eq!((parts[1], parts[2]), ("0.100000", "a.example"), "{spec}");
        let next: f64 = parts[0].parse().unwrap();
        assert!((100.1..100.3).contains(&next), "{spec}");
        f.slotted("a.example", 40, 104.2);
        assert!(f.full_spec(100.0).starts_with("104.200000 "));
        f.set_paused(["a.example".to_string()].into());
        assert_eq!(
            f.full_spec(100.0),
            "",
            "a paused flow's jobs are parked instead"
        );
    }
}
