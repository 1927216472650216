//! The main loop: record outcomes, claim due jobs, hand them to the workers, sleep
//! until the next due job or the poll interval, and shut down cleanly.
//!
//! This thread is the only one that talks to Redis. It never blocks on HTTP, and while
//! Redis is away it keeps taking outcomes from the workers and holds them until they
//! can be written. What an outcome means is `settle`'s to decide; this file does the
//! I/O, the log lines and the counting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, bounded, select_biased};
use log::{error, info, warn};

use crate::config::{self, Config, HttpSettings, MAX_SHARDS, Problem};
use crate::deliver::breaker::Breakers;
use crate::deliver::worker::{self, Attempt};
use crate::dispatch::flow::{self, Admit, Answer, Flows};
use crate::dispatch::prefetch::Prefetch;
use crate::dispatch::report;
use crate::dispatch::settle::{self, Decision, Op, Policy};
use crate::dispatch::signals::Signal;
use crate::job::backoff::random_unit;
use crate::job::{Job, failure_record};
use crate::store::functions::Library;
use crate::store::{ClaimBatch, Claimed, Score, Settle, SettleOp, Store};
use crate::telemetry::logging;
use crate::telemetry::metrics::{self, Metrics};

type Delivery = worker::Delivery<Claimed>;
type Outcome = worker::Outcome<Claimed>;

/// Longest wait between two tries while Redis is unreachable.
const REDIS_BACKOFF_CAP: Duration = Duration::from_secs(5);
/// How often a round does one chore besides its claims: in turn, one page of attempt
/// counts checked for jobs that no longer exist (the sweep), and the heartbeat, which
/// also reads whether the queue is paused. One at a time, so a round makes at most one
/// such call (the lease floor counts one).
const CHORE_EVERY: Duration = Duration::from_secs(1);
/// How long a heartbeat record stands for: several missed beats (one every 2 s).
const HEARTBEAT_LIFE: Duration = Duration::from_secs(10);
/// The deliveries whose lateness the heartbeat reports (`delayqs top`).
const LATENESS_WINDOW: Duration = Duration::from_secs(60);
/// Paused hosts named in a heartbeat at most: the record stays small.
const PAUSED_HOSTS_SHOWN: usize = 20;
/// Flows shown in a heartbeat record and the metrics file at most, busiest first.
const FLOWS_SHOWN: usize = 20;
/// Parked jobs one chore brings back.
const UNPARK_PAGE: usize = 500;
/// How soon to call again after a Cluster said a slot moved, and at most while it keeps
/// saying so (ASK: the slot's keys are moving).
const SLOT_MOVE_RETRY: Duration = Duration::from_millis(10);
const SLOT_MOVE_RETRY_CAP: Duration = Duration::from_millis(500);
/// A slot said to be moving for this long is stuck: an ERROR, and start -d is told.
const SLOT_MOVE_STUCK: Duration = Duration::from_secs(30);
/// How often to look for shards a larger `shards` setting left holding jobs.
const SHARD_PROBE_EVERY: Duration = Duration::from_secs(60);
/// How often an outage that goes on is logged again.
const STILL_DOWN_EVERY: Duration = Duration::from_secs(60);
/// How long a shutdown keeps trying to write outcomes to an unreachable Redis.
const SHUTDOWN_REDIS_GRACE: Duration = Duration::from_secs(10);

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Every claimed job was delivered, retried, failed or put back.
    Clean,
    /// Some outcomes could not be written; their leases expire and the jobs run again.
    Unrecorded(usize),
    /// Redis does not hold what the config says (a key of the wrong type).
    Misconfigured,
}

/// How the outside world steers a run.
pub struct Control {
    pub signals: Receiver<Signal>,
    /// Re-reads the config file, for SIGHUP.
    pub reload: Box<dyn Fn() -> Result<Config, config::ConfigError>>,
    /// Told once Redis has answered and its keys check out, and of Redis trouble
    /// before that (`start -d` waits on it).
    pub readiness: Option<Box<dyn FnMut(Readiness)>>,
}

#[derive(Debug)]
pub enum Readiness {
    Ready,
    Waiting(String),
}

/// Runs until a stop signal.
pub fn run(config: Config, control: Control) -> std::io::Result<Exit> {
    let store = Store::new(&config).map_err(std::io::Error::other)?;
    let prefetch = Prefetch::new(config.concurrency);
    // Neither side ever blocks: no more jobs than this are out at once.
    let (jobs_tx, jobs_rx) = bounded(prefetch.capacity());
    let (outcomes_tx, outcomes_rx) = bounded(prefetch.capacity());
    let (bell_tx, bell_rx) = bounded(1);
    let ring_at = Arc::new(AtomicUsize::new(prefetch.mark()));
    let breakers = Arc::new(Mutex::new(Breakers::new(
        config.host_failure_threshold,
        config.host_pause,
        config.http.timeout,
    )));
    let links = worker::Links {
        outcomes: outcomes_tx,
        bell: bell_tx,
        ring_at: ring_at.clone(),
        breakers: breakers.clone(),
    };
    let workers = worker::start(config.concurrency, jobs_rx.clone(), links)?;
    info!(
        "delayqs {} running: redis {}, queue {:?}, {} workers, {} attempts per job",
        env!("CARGO_PKG_VERSION"),
        config.redis_url_redacted(),
        config.keys.queue,
        config.concurrency,
        config.max_attempts()
    );
    let mut d = Dispatcher {
        token_prefix: token_prefix(),
        claims: 0,
        store,
        jobs_tx: Some(jobs_tx),
        jobs_rx,
        outcomes: outcomes_rx,
        bell: bell_rx,
        http: Arc::new(config.http.clone()),
        control,
        held: 0,
        prefetch,
        ring_at,
        breakers,
        flows: Flows::new(config.flow.clone()),
        unparking: Vec::new(),
        next_round: Instant::now(),
        shards: (0..MAX_SHARDS).map(|_| ShardRound::default()).collect(),
        turn: 0,
        last_shard_probe: Instant::now(),
        redis_down: None,
        redis_last_said: Instant::now(),
        replication_short_said: None,
        slots_moving_said: None,
        slots_moving_since: None,
        slots_moving_stuck_said: None,
        heartbeat_refused_said: false,
        floor: config.lease_floor(),
        failed_keys: (0..MAX_SHARDS)
            .map(|i| config.keys.shard(i).failed)
            .collect(),
        drain_floor_said: false,
        redis_backoff: Duration::ZERO,
        redis_retry_at: None,
        first_contact: true,
        check_redis: true,
        eviction_note: None,
        misconfigured: false,
        lost_claims: Vec::new(),
        last_chore: Instant::now(),
        sweep_next: false,
        paused: None,
        started: unix_now(),
        host: hostname(),
        clock: (unix_now(), Instant::now()),
        metrics: Metrics::default(),
        last_metrics: Instant::now(),
        metrics_file: metrics::MetricsFile::default(),
        config,
    };
    d.main_loop();
    let misconfigured = d.misconfigured;
    if misconfigured && d.held == 0 && d.pending() == 0 {
        return Ok(Exit::Misconfigured); // at start: nothing to write back
    }
    // Found on a reconnect (another Redis behind the address): what is in hand is
    // still written back before the exit.
    let exit = d.shut_down(workers);
    Ok(if misconfigured {
        Exit::Misconfigured
    } else {
        exit
    })
}

struct Dispatcher {
    config: Config,
    store: Store,
    /// `None` once shutting down: dropping it ends the workers.
    jobs_tx: Option<Sender<Delivery>>,
    /// Kept so that jobs no worker has started can be taken back at shutdown.
    jobs_rx: Receiver<Delivery>,
    outcomes: Receiver<Outcome>,
    /// Rung by the workers when outcomes are worth a round (`worker::Links`).
    bell: Receiver<()>,
    /// The HTTP settings handed to the workers with each job.
    http: Arc<HttpSettings>,
    control: Control,
    /// Jobs claimed and not yet come back from a worker.
    held: usize,
    /// How many to hold, from how fast calls go (see prefetch.rs).
    prefetch: Prefetch,
    /// The workers' `Links::ring_at`, kept at the prefetch's mark.
    ring_at: Arc<AtomicUsize>,
    /// The workers' host breakers: a job of a paused host goes back before it takes
    /// a worker's place.
    breakers: Arc<Mutex<Breakers>>,
    /// Limits per callback host and flow key, and how each flow is slowed down.
    flows: Flows,
    /// Resumed flows whose parked jobs this daemon still brings back, per shard.
    unparking: Vec<(String, usize)>,
    /// When the next round is due, unless outcomes free enough room before.
    next_round: Instant,
    /// Per shard, by number: the outcomes not yet written and when it is next due.
    shards: Vec<ShardRound>,
    /// Which shard goes first in the next round: each in turn, so that with less room
    /// than shards none starves.
    turn: usize,
    /// When the loop last looked for shards a larger `shards` setting left holding jobs.
    last_shard_probe: Instant,
    /// When Redis stopped answering, while it does not.
    redis_down: Option<Instant>,
    /// When the outage was last logged.
    redis_last_said: Instant,
    /// Each shard's failed list, by number, for the log lines of every outcome: named
    /// once, not per job.
    failed_keys: Vec<String>,
    /// The lease floor in force: the config's, or more while shards are drained.
    floor: Duration,
    /// A lease too short for draining was said.
    drain_floor_said: bool,
    /// The heartbeat was refused (an ACL without its keys) and that was said.
    heartbeat_refused_said: bool,
    /// When a Cluster slot move was last logged.
    slots_moving_said: Option<Instant>,
    /// Since when the Cluster keeps saying a slot moves, and when that was last said
    /// to be stuck.
    slots_moving_since: Option<Instant>,
    slots_moving_stuck_said: Option<Instant>,
    /// When too few replicas were last reported, while they are.
    replication_short_said: Option<Instant>,
    redis_backoff: Duration,
    /// No Redis call before this, while backing off.
    redis_retry_at: Option<Instant>,
    /// Nothing has been read from Redis yet: say `ready:` once the checks pass.
    first_contact: bool,
    /// The connection is new (the first, or one after Redis trouble): check the keys'
    /// types and the eviction policy before anything else.
    check_redis: bool,
    /// The eviction-policy warning last logged, so a reconnect does not repeat it.
    eviction_note: Option<String>,
    /// The keys in Redis do not fit the config; the loop ends.
    misconfigured: bool,
    /// Shards and tokens of claims whose reply was lost; their jobs are put back on
    /// reconnect.
    lost_claims: Vec<(usize, String)>,
    last_chore: Instant,
    /// Whose turn it is among the chores: the sweep, or the heartbeat.
    sweep_next: bool,
    /// The queue's pause note while it is paused (`delayqs pause`): nothing is claimed,
    /// outcomes are still written.
    paused: Option<String>,
    /// When this daemon started (Unix s), and the host it runs on, for its heartbeat.
    started: f64,
    host: String,
    /// Redis's clock at the last claim, and when that was here.
    clock: (f64, Instant),
    token_prefix: String,
    claims: u64,
    metrics: Metrics,
    last_metrics: Instant,
    /// Writes `metricsFile`, and says when that fails and when it works again.
    metrics_file: metrics::MetricsFile,
}

/// What the loop keeps for one shard between rounds.
#[derive(Default)]
struct ShardRound {
    /// Outcomes not yet written to Redis.
    pending: Vec<Settle>,
    /// How many of `pending` (the first ones) went out in a call that failed: Redis
    /// may have run it and only the reply got lost, so they may be written already.
    sent_unanswered: usize,
    /// The earliest score left in the shard's queue at its last claim (Unix s, Redis's
    /// clock); 0 until it has been claimed from, so that it is looked at at once.
    next_due: f64,
    /// When the shard was last claimed from: a producer may have added a due job since,
    /// so a shard not looked at for a poll interval counts as due.
    looked: Option<Instant>,
}

impl Dispatcher {
    /// Outcomes not yet written, over all shards.
    fn pending(&self) -> usize {
        self.shards.iter().map(|s| s.pending.len()).sum()
    }

    fn main_loop(&mut self) {
        loop {
            self.take_outcomes();
            let now = Instant::now();
            // While Redis is away, an outcome arriving must not bring the next try
            // forward: the backoff holds.
            let backing_off = self.redis_retry_at.is_some_and(|at| now < at);
            // Outcomes bring a round forward only once they have freed a batch's worth
            // of room: one round trip then writes them and refills the pool, instead of
            // one per outcome. The timer still bounds how long an outcome waits.
            let room_for_a_batch = self.room() >= self.prefetch.mark();
            if !backing_off && (now >= self.next_round || room_for_a_batch) {
                match self.step() {
                    Ok(wait) => {
                        self.redis_is_back();
                        self.metrics.redis_up = true;
                        self.metrics.last_round = self.now();
                        self.next_round = Instant::now() + wait;
                    }
                    Err(e) => {
                        self.metrics.redis_up = false;
                        let backoff = match slot_in_motion(&e) {
                            true => self.follow_slots(&e),
                            false => self.redis_trouble(&e),
                        };
                        let at = Instant::now() + backoff;
                        self.redis_retry_at = Some(at);
                        self.next_round = at;
                    }
                }
            }
            // On its own clock, whatever the round did: a full pool or a Redis outage
            // must not leave the file stale (the gauges need Redis, the counters not).
            if self.last_metrics.elapsed() >= self.config.metrics_interval {
                self.write_metrics(self.redis_down.is_none());
            }
            let wait = self.next_round.saturating_duration_since(Instant::now());
            if self.misconfigured || !self.wait(wait) {
                return;
            }
        }
    }

    /// Claimed jobs the pool can still take; none while the queue is paused.
    fn room(&self) -> usize {
        if self.paused.is_some() {
            return 0;
        }
        self.prefetch.limit().saturating_sub(self.held)
    }

    /// The lease floor for the calls a round makes now: more than the config counted
    /// while shards a larger setting left are drained. When the lease does not cover
    /// that, it is said (once per change) and the configured floor stays: raising
    /// `leaseMs` is the operator's to do.
    fn judge_drain_floor(&mut self) {
        let shards = self.config.keys.shards + self.store.extra_shard_calls();
        let floor = self.config.lease_floor_for(shards);
        if self.config.lease > floor {
            self.floor = floor;
            self.drain_floor_said = false;
            return;
        }
        self.floor = self.config.lease_floor();
        if !self.drain_floor_said {
            self.drain_floor_said = true;
            error!(
                "`leaseMs` {} ms is too short while this daemon also drains shards left by a larger `shards` (a round may make the calls of {shards} shards): raise it above {} ms until they are empty, or a slow Redis could let a lease run out and a job go out twice",
                self.config.lease.as_millis(),
                floor.as_millis()
            );
        }
    }

    /// Writes this daemon's heartbeat record and reads the queue's pause, saying when
    /// it changes.
    fn beat(&mut self) -> redis::RedisResult<()> {
        let waiting = self.jobs_rx.len();
        let late = self.metrics.recent_lateness.lateness(LATENESS_WINDOW);
        let paused_hosts = self
            .breakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .paused_hosts(PAUSED_HOSTS_SHOWN);
        let record = serde_json::json!({
            "id": self.token_prefix,
            "host": self.host,
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "queue": self.config.keys.queue,
            "shards": self.store.shards(),
            "started": self.started,
            "lastRound": self.metrics.last_round,
            "workers": self.config.concurrency,
            "busy": self.held.saturating_sub(waiting),
            "held": self.held,
            "delivered": self.metrics.delivered,
            "failed": self.metrics.failed_for_good,
            "attemptsFailed": self.metrics.failed_attempts,
            "paused": self.paused.is_some(),
            "lateP50": late.map(|l| l.p50),
            "lateP99": late.map(|l| l.p99),
            "lateCount": late.map_or(0, |l| l.count),
            "pausedHosts": paused_hosts,
            "flows": self.flows.views(FLOWS_SHOWN).iter().map(flow_json).collect::<Vec<_>>(),
        });
        let line = record.to_string();
        let paused = match self
            .store
            .heartbeat(&self.token_prefix, Some(&line), HEARTBEAT_LIFE)
        {
            Ok(beat) => {
                // Redis's clock, for a daemon that has not claimed yet (paused).
                self.clock = (beat.now, Instant::now());
                let mut ids = beat.daemons;
                ids.sort();
                let rank = ids.iter().position(|id| *id == self.token_prefix);
                self.flows.set_share(flow::Share {
                    daemons: ids.len().max(1),
                    rank: rank.unwrap_or(0),
                });
                let paused_flows: std::collections::HashSet<String> =
                    beat.paused_flows.into_iter().collect();
                for name in &paused_flows {
                    if !self.flows.paused_names().contains(name) {
                        info!(
                            "flow {name:?} is paused: its jobs are parked as they come due until `delayqs resume --host` (or `--flow`) names it"
                        );
                    }
                }
                for name in self.flows.set_paused(paused_flows) {
                    info!("flow {name:?} was resumed: its parked jobs go out again");
                    for shard in self.store.shards().to_vec() {
                        self.unparking.push((name.clone(), shard));
                    }
                }
                beat.paused
            }
            Err(e) if e.code() == Some("NOPERM") => {
                // An ACL that names only the queue's keys: delivery goes on without
                // the heartbeat. Anything else (an outage, a full Redis) fails the
                // round as any call does.
                if !self.heartbeat_refused_said {
                    self.heartbeat_refused_said = true;
                    warn!(
                        "cannot write this daemon's heartbeat to {:?} nor read {:?} ({e}): `delayqs daemons`, `status` and `pause` do not see this daemon; allow the user those keys",
                        self.config.keys.daemons(),
                        self.config.keys.paused()
                    );
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        match (&self.paused, &paused) {
            (None, Some(note)) => info!(
                "the queue is paused ({note}): nothing is claimed until `delayqs resume`; calls in flight still settle"
            ),
            (Some(_), None) => info!("the queue was resumed: claiming again"),
            _ => {}
        }
        self.metrics.paused = paused.is_some();
        self.paused = paused;
        Ok(())
    }

    /// One round: write outcomes and claim what is due in one call, hand it out.
    /// Returns how long to wait before the next round.
    fn step(&mut self) -> redis::RedisResult<Duration> {
        self.store.connect_if_needed()?;
        if self.store.take_fresh() {
            self.check_redis = true;
        }
        if self.check_redis {
            if let Err(problem) = self.store.check_server()? {
                error!("{problem}");
                self.misconfigured = true;
                return Ok(Duration::ZERO);
            }
            match self.store.load_functions()? {
                Some(library @ Library::Refused(_)) => warn!("{}", library.describe()),
                Some(library) => info!("{}", library.describe()),
                None => {}
            }
            if let Err(problem) = self.store.check_key_types()? {
                error!("{problem}");
                self.misconfigured = true;
                return Ok(Duration::ZERO);
            }
            let policy = self.store.eviction_policy()?;
            match judge_eviction(policy.as_deref(), self.config.allow_evicting_redis) {
                Eviction::Safe => self.eviction_note = None,
                Eviction::Warn(note) => {
                    if self.eviction_note.as_ref() != Some(&note) {
                        warn!("{note}");
                        self.eviction_note = Some(note);
                    }
                }
                Eviction::Refuse(problem) => {
                    error!("{problem}");
                    self.misconfigured = true;
                    return Ok(Duration::ZERO);
                }
            }
            self.check_redis = false;
        }
        if self.first_contact || self.last_shard_probe.elapsed() >= SHARD_PROBE_EVERY {
            self.last_shard_probe = Instant::now();
            let found = self.store.find_shards()?;
            for extra in &found {
                warn!(
                    "shard {extra} ({:?}) holds jobs but `shards` is {}: claiming from it too until it is empty (it was written under a larger `shards`)",
                    self.config.keys.shard(*extra).queue,
                    self.config.keys.shards
                );
            }
            if !found.is_empty() {
                // Checked like the configured ones before a script touches them.
                if let Err(problem) = self.store.check_key_types()? {
                    error!("{problem}");
                    self.misconfigured = true;
                    return Ok(Duration::ZERO);
                }
            }
            self.judge_drain_floor();
        }
        if self.first_contact {
            // A paused queue stays paused across restarts: known before any claim.
            self.beat()?;
            self.warn_about_old_daemon_keys()?;
            self.first_contact = false;
            let from = match self.config.keys.shards {
                1 => format!("{:?}", self.config.keys.queue),
                n => format!("{n} shards of {:?}", self.config.keys.queue),
            };
            // Tests and operators wait on this line: it comes after Redis answered.
            info!(
                "ready: Redis at {} answers and its keys check out; claiming from {from}",
                self.config.redis_url_redacted(),
            );
            if let Some(tell) = self.control.readiness.as_mut() {
                tell(Readiness::Ready);
            }
            self.control.readiness = None;
        }
        while let Some((shard, token)) = self.lost_claims.last() {
            let put_back = self.store.unclaim(*shard, token)?;
            if put_back > 0 {
                info!(
                    "put back {put_back} jobs claimed by a call whose reply was lost; they run now"
                );
            }
            self.lost_claims.pop();
        }
        if self.last_chore.elapsed() >= CHORE_EVERY {
            self.last_chore = Instant::now();
            self.sweep_next = !self.sweep_next;
            if let Some((flow, shard)) = self.unparking.last().cloned().filter(|_| self.sweep_next)
            {
                // A resumed flow's jobs parked by a daemon that had not yet heard of
                // the resume: `resume` brought the rest back already.
                let (moved, left) = self.store.unpark(shard, &flow, UNPARK_PAGE)?;
                if moved > 0 {
                    info!("brought back {moved} parked jobs of the resumed flow {flow:?}");
                }
                if left == 0 {
                    self.unparking.pop();
                }
            } else if self.sweep_next {
                let dropped = self.store.sweep_step()?;
                if dropped > 0 {
                    info!(
                        "dropped {dropped} attempt counts of jobs that were cancelled while waiting for a retry"
                    );
                }
            } else {
                self.beat()?;
            }
        }
        if self.room() == 0 && self.pending() == 0 {
            return Ok(self.config.poll_interval); // outcomes will wake us first
        }
        let active = self.store.shards().to_vec();
        let first = self.turn % active.len();
        self.turn = self.turn.wrapping_add(1);
        let mut order: Vec<usize> = (0..active.len())
            .map(|k| active[(first + k) % active.len()])
            .collect();
        // Shards with due jobs go first, taking turns (the rotation), so that a backlog
        // in one never starves another's due jobs when the room is less than a call per
        // shard; then the others, due soonest first, so that a job falling due waits
        // for no other shard's call. A shard not looked at for a poll interval may have
        // had a due job added: it counts as due.
        let redis_now = self.now();
        let due = |s: &ShardRound| {
            s.next_due <= redis_now
                || s.looked
                    .is_none_or(|at| at.elapsed() >= self.config.poll_interval)
        };
        order.sort_by(|a, b| {
            let (a, b) = (&self.shards[*a], &self.shards[*b]);
            match (due(a), due(b)) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Less,
                (false, true) => std::cmp::Ordering::Greater,
                (false, false) => a.next_due.total_cmp(&b.next_due),
            }
        });
        // Outcomes of a shard no longer claimed from (it emptied) are written all the
        // same; it gets no room.
        order.extend(
            (0..self.shards.len())
                .filter(|i| !active.contains(i) && !self.shards[*i].pending.is_empty()),
        );
        for (k, &shard) in order.iter().enumerate() {
            // Each shard's share of the room left, rounded up; what one leaves unused
            // goes to those after it. With less room than shards the first turns
            // rotate, so none starves.
            let share = match k < active.len() {
                true => self.room().div_ceil(active.len() - k),
                false => 0,
            };
            if share == 0 && self.shards[shard].pending.is_empty() {
                continue;
            }
            self.claim_from(shard, share)?;
        }
        if self.room() == 0 {
            // Outcomes will wake us first; a pause is read again by the heartbeat.
            return Ok(self.config.poll_interval);
        }
        // Still due somewhere and room left (jobs set aside took none): go again at
        // once.
        let now = self.now();
        let until_next = active
            .iter()
            .map(|&i| secs(self.shards[i].next_due - now))
            .min()
            .unwrap_or(Duration::MAX);
        Ok(until_next.min(self.config.poll_interval))
    }

    /// One shard's call: writes its outcomes and claims up to `limit` of its due jobs,
    /// which go down the job channel.
    fn claim_from(&mut self, shard: usize, limit: usize) -> redis::RedisResult<()> {
        self.claims += 1;
        let token = format!("{}-{}", self.token_prefix, self.claims);
        self.store.full_flows = self.flows.full_spec(self.now());
        let asked = Instant::now();
        let claim = self.store.claim(
            shard,
            &self.shards[shard].pending,
            limit,
            self.config.lease,
            &token,
            self.config.max_job_bytes,
        );
        let mut batch: ClaimBatch = match claim {
            Ok(batch) => batch,
            Err(e) => {
                // Redis may have run the claim and only the reply got lost. The
                // outcomes stay pending: writing them twice changes nothing.
                if limit > 0 {
                    self.lost_claims.push((shard, token));
                }
                self.unanswered(shard, &e);
                return Err(e);
            }
        };
        self.written(shard, &batch.stale);
        for s in &batch.slotted {
            log::debug!(
                "{} fresh jobs of {} went to its slots inside the claim, up to {:.3} s ahead",
                s.count,
                s.flow,
                s.next_slot - batch.now
            );
            self.flows.slotted(&s.flow, s.count, s.next_slot);
            self.metrics.deferred += s.count;
        }
        self.clock = (batch.now, Instant::now());
        self.shards[shard].next_due = batch.next_due.as_ref().map_or(f64::MAX, Score::value);
        self.shards[shard].looked = Some(Instant::now());
        if let Some(acked) = batch.replicated {
            self.note_replication(acked);
        }
        self.metrics.leases_recovered += batch.recovered;
        if batch.recovered > 0 {
            warn!(
                "took back {} jobs whose lease expired (a daemon died or lost Redis mid-delivery); they run again now",
                batch.recovered
            );
        }
        let failed_key = self.failed_keys[shard].clone();
        for set_aside in &batch.set_aside {
            report::set_aside(&mut self.metrics, set_aside, &failed_key);
        }
        for bad in std::mem::take(&mut batch.bad) {
            error!(
                "job {}: cannot read its claim: {}; moved to {failed_key:?} without a request",
                bad.id, bad.problem
            );
            self.metrics.poison += 1;
            let record = failure_record(&bad.member, &bad.id, 0, &bad.problem, 0.0, self.now());
            self.shards[shard].pending.push(Settle {
                member: bad.member,
                id: bad.id,
                lease: bad.lease,
                op: SettleOp::Fail(record),
            });
        }
        if batch.merged > 0 {
            info!(
                "{} jobs were added again while in flight; merged into the attempt under way",
                batch.merged
            );
        }
        // The latest a claimed job may start: its attempt, the wait for a round and the
        // outcome's write must end inside the lease, which Redis started after `asked`.
        let start_by = asked + self.config.lease - self.floor;
        for claimed in batch.jobs {
            self.dispatch(claimed, start_by);
        }
        Ok(())
    }

    /// The settings `settle` decides by.
    fn policy(&self) -> Policy<'_> {
        Policy {
            retry: &self.config.retry,
            max_attempts: self.config.max_attempts(),
            retry_after_max: self.config.retry_after_max,
            allowed: &self.config.http.allowed,
        }
    }

    fn dispatch(&mut self, claimed: Claimed, start_by: Instant) {
        let job = Job::parse(&claimed.member, self.config.http.timeout);
        if let Some(decision) = settle::at_claim(&job, claimed.attempt, &self.policy()) {
            self.settle(claimed, job.as_ref().ok(), Duration::ZERO, decision);
            return;
        }
        let Ok(job) = job else {
            return; // not reached: a job that did not parse was set aside above
        };
        let paused = {
            let breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
            breakers.paused(job.callback.host_key())
        };
        if let Some(wait) = paused {
            // A host paused by its breaker: its jobs get slots after the pause, at its
            // pace, rather than all coming back at its end.
            self.flows.hold(&job, wait);
        }
        let why = match paused {
            Some(_) => "is paused",
            None => "is at its limit",
        };
        // Put back before (a slot, a retry): it has had its turn in line.
        let waited = claimed.due.value() > claimed.first_due.value() + 0.000_5;
        match self.flows.admit(&job, self.now(), waited) {
            Admit::Go => {}
            Admit::Defer(slot) => return self.defer(claimed, &job, slot, why),
            Admit::Park => return self.park(claimed, &job),
        }
        let Some(tx) = &self.jobs_tx else {
            return; // not reached: nothing is claimed while shutting down
        };
        // Never blocks: the batch was sized by the room left in the pool. A paused
        // host is the worker's to check, when the job's turn comes.
        let delivery = Delivery {
            job,
            id: claimed.id.clone(),
            producer_id: claimed.producer_id.clone(),
            attempt: claimed.attempt,
            first_due: claimed.first_due.value(),
            http: self.http.clone(),
            start_by,
            back: claimed,
        };
        if tx.send(delivery).is_ok() {
            self.held += 1;
        }
    }

    /// Sends a claimed job back to the queue at its flow's next slot: the attempt never
    /// started, and its count and first due time are kept.
    fn defer(&mut self, claimed: Claimed, job: &Job, slot: f64, why: &str) {
        self.metrics.deferred += 1;
        log::debug!(
            "job {}: {} {why}; back in {:.3} s, at its flow's next slot",
            claimed.id,
            flow::flow_of(job),
            slot - self.now()
        );
        self.shards[claimed.shard].pending.push(Settle {
            member: claimed.member,
            lease: claimed.lease,
            id: claimed.id,
            op: SettleOp::Release {
                due: Score::at(slot),
            },
        });
    }

    /// Parks a claimed job of a paused flow: a day ahead in the queue, listed in the
    /// flow's parked set, from which `resume` brings it back at its due time.
    fn park(&mut self, claimed: Claimed, job: &Job) {
        self.metrics.parked += 1;
        let until = Score::at(self.now() + flow::PARK_FOR);
        let flow = if self.flows.is_paused_by_host(job) {
            job.callback.host_key()
        } else {
            flow::flow_of(job)
        };
        self.shards[claimed.shard].pending.push(Settle {
            member: claimed.member,
            lease: claimed.lease,
            id: claimed.id,
            op: SettleOp::Park {
                due: claimed.due,
                until,
                flow: flow.to_string(),
            },
        });
    }

    fn take_outcomes(&mut self) {
        while let Ok(outcome) = self.outcomes.try_recv() {
            self.record(outcome);
        }
    }

    fn record(&mut self, outcome: Outcome) {
        self.held -= 1;
        let Outcome {
            delivery,
            attempt: report,
            took,
        } = outcome;
        let answer = match &report {
            Attempt::Made(Err(f)) if f.pressure => Some(Answer::Pressure(f.retry_after)),
            Attempt::Made(_) => Some(Answer::Calm),
            _ => None,
        };
        match answer {
            Some(answer) => self.flows.finished(&delivery.job, took, &answer),
            None => self.flows.unstarted(&delivery.job),
        }
        if let Attempt::HostPaused(wait) = report {
            // Its host's breaker held it in the channel: a slot after the pause.
            self.flows.hold(&delivery.job, wait);
            let slot = self.flows.slot(&delivery.job, self.now());
            return self.defer(delivery.back, &delivery.job, slot, "is paused");
        }
        if let Attempt::Made(_) = report {
            self.prefetch.observe(took);
            self.ring_at.store(self.prefetch.mark(), Ordering::Relaxed);
            self.metrics.duration.observe(took.as_secs_f64());
        }
        let claimed = delivery.back;
        let back = settle::Returned {
            report: &report,
            attempt: claimed.attempt,
            due: &claimed.due,
            took,
        };
        let decision = settle::on_outcome(
            back,
            &delivery.job,
            self.now(),
            &self.policy(),
            random_unit(),
        );
        self.settle(claimed, Some(&delivery.job), took, decision);
    }

    /// Logs and counts what happened to a job, and queues its write for the next round.
    /// `job` is `None` when the member did not parse; `took` is how long the attempt
    /// ran.
    fn settle(&mut self, claimed: Claimed, job: Option<&Job>, took: Duration, decision: Decision) {
        let Decision { op, event } = decision;
        let seen = report::Seen {
            id: &claimed.id,
            attempt: claimed.attempt,
            job,
            took,
        };
        report::event(
            &mut self.metrics,
            &seen,
            &event,
            &op,
            &self.failed_keys[claimed.shard],
        );
        let op = match op {
            Op::Done => SettleOp::Done,
            Op::Retry(delay) => SettleOp::Retry(delay),
            Op::Release(due) => SettleOp::Release { due },
            Op::Fail { attempts, reason } => SettleOp::Fail(failure_record(
                &claimed.member,
                &claimed.id,
                attempts,
                &reason,
                claimed.first_due.value(),
                self.now(),
            )),
        };
        self.shards[claimed.shard].pending.push(Settle {
            member: claimed.member,
            lease: claimed.lease,
            id: claimed.id,
            op,
        });
    }

    /// Says, once a minute at most, when fewer replicas than `waitReplicas` had a
    /// round's writes in time. The jobs go out all the same: a failover now could
    /// undo those writes, which costs a redelivery, never a job.
    fn note_replication(&mut self, acked: u32) {
        let wanted = self.config.replication.replicas;
        if acked >= wanted {
            self.replication_short_said = None;
            return;
        }
        if self
            .replication_short_said
            .is_some_and(|at| at.elapsed() < STILL_DOWN_EVERY)
        {
            return;
        }
        self.replication_short_said = Some(Instant::now());
        warn!(
            "only {acked} of {wanted} replicas (`waitReplicas`) acknowledged a round's writes within {} ms; jobs go out all the same, and a failover now could deliver some again",
            self.config.replication.timeout.as_millis()
        );
    }

    /// Writes the pending outcomes without claiming. On error they stay pending, to
    /// be written later.
    fn flush(&mut self) -> redis::RedisResult<()> {
        for shard in 0..self.shards.len() {
            if self.shards[shard].pending.is_empty() {
                continue;
            }
            let written = self.store.claim(
                shard,
                &self.shards[shard].pending,
                0,
                self.config.lease,
                &self.token_prefix,
                self.config.max_job_bytes,
            );
            match written {
                Ok(batch) => self.written(shard, &batch.stale),
                Err(e) => {
                    self.unanswered(shard, &e);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// A call carrying a shard's pending outcomes failed. Unless Redis said it refused
    /// the call before writing anything (OOM, or a Cluster's slot moving), it may have
    /// run them.
    fn unanswered(&mut self, shard: usize, e: &redis::RedisError) {
        if e.code() != Some("OOM") && !slot_in_motion(e) {
            self.shards[shard].sent_unanswered = self.shards[shard].pending.len();
        }
    }

    /// A shard's pending outcomes are in Redis; `stale` names those that changed
    /// nothing: written already by a call whose reply was lost, or their lease ran out.
    fn written(&mut self, shard: usize, stale: &[usize]) {
        let round = &mut self.shards[shard];
        for &i in stale {
            let Some(late) = round.pending.get(i) else {
                continue;
            };
            if i < round.sent_unanswered {
                info!(
                    "job {}: outcome already written by the call whose reply was lost, so this resend changed nothing (had that call not run, the lease ran out meanwhile and another attempt follows)",
                    late.id
                );
            } else {
                warn!(
                    "job {}: its lease ran out before this outcome was written, so another attempt follows (at-least-once)",
                    late.id
                );
            }
        }
        round.pending.clear();
        round.sent_unanswered = 0;
    }

    /// Writes the metrics file, when one is configured; `with_gauges` reads the
    /// queue's state from Redis first.
    fn write_metrics(&mut self, with_gauges: bool) {
        self.last_metrics = Instant::now();
        let Some(path) = self.config.metrics_file.clone() else {
            return;
        };
        let now = self.now();
        // A failed read drops the connection; the next round reconnects, and checks
        // the server again on the new one. The counters go out either way.
        let gauges = with_gauges.then(|| self.store.gauges(now).ok()).flatten();
        self.metrics.flows = self.flows.views(FLOWS_SHOWN);
        // The daemon's work does not depend on it: a failure is only logged.
        self.metrics_file.write(&path, &self.metrics.render(gauges));
    }

    fn warn_about_old_daemon_keys(&mut self) -> redis::RedisResult<()> {
        let found = self.store.old_daemon_leftovers()?;
        if !found.is_empty() {
            warn!(
                "keys of the old daemon exist: {}. delayqs never reads them: every job the old daemon had not finished is still in {:?} and runs from there. Delete them when the old daemon is gone: redis-cli DEL {}",
                found.join(", "),
                self.config.keys.queue,
                found.join(" ")
            );
        }
        Ok(())
    }

    /// Waits up to `timeout` for an outcome or a signal. Returns false on stop.
    fn wait(&mut self, timeout: Duration) -> bool {
        select_biased! {
            recv(self.control.signals) -> signal => match signal {
                Ok(Signal::Reload) => {
                    self.reopen_logs();
                    self.reload();
                    true
                }
                Ok(Signal::ReopenLogs) => {
                    self.reopen_logs();
                    true
                }
                Ok(Signal::Stop) | Err(_) => false,
            },
            recv(self.bell) -> rung => match rung {
                Ok(()) => true, // the loop takes the outcomes
                Err(_) => {
                    // Every worker holds a sender, so all of them are gone.
                    error!("all worker threads ended; stopping");
                    false
                }
            },
            default(timeout) => true,
        }
    }

    fn reopen_logs(&self) {
        if let Err(e) = logging::reopen() {
            error!("cannot reopen the log files: {e}");
        }
    }

    /// Applies a re-read config: what can change while running does, the rest is
    /// named as needing a restart (`config::reload` declares which is which). A config
    /// that does not load changes nothing.
    fn reload(&mut self) {
        let reloaded = (self.control.reload)()
            .map_err(|e| e.to_string())
            .and_then(|new| config::reload(&self.config, new).map_err(|e: Problem| e.to_string()));
        let r = match reloaded {
            Ok(r) => r,
            Err(e) => {
                error!("config not reloaded, the running one stays: {e}");
                return;
            }
        };
        // The new level first, so that a reload to a chattier level says so.
        logging::set_level(r.config.log_level);
        if r.applied.is_empty() {
            info!("config reloaded: nothing that applies while running changed");
        } else {
            info!("config reloaded: {} now in effect", r.applied.join(", "));
        }
        if !r.restart.is_empty() {
            warn!(
                "config changes that need a restart were not applied: {}",
                r.restart.join(", ")
            );
        }
        if self.config.http != r.config.http {
            self.http = Arc::new(r.config.http.clone());
            self.breakers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .set_probe_window(r.config.http.timeout);
        }
        self.config = r.config;
        self.judge_drain_floor();
    }

    /// Logs the first failure of a run of them, and says how long to back off.
    fn redis_trouble(&mut self, e: &redis::RedisError) -> Duration {
        if let Some(tell) = self.control.readiness.as_mut() {
            tell(Readiness::Waiting(format!(
                "Redis at {} failed: {e}",
                self.config.redis_url_redacted()
            )));
        }
        // Every error drops the connection: the next one is checked afresh.
        self.check_redis = true;
        let unreachable = e.is_io_error() || e.is_timeout() || e.is_connection_dropped();
        // Full (maxmemory): it passes once memory is freed, like an outage. Redis
        // refuses a script at its first write that needs memory, and only when
        // nothing was written before it, so no call is ever cut halfway.
        let full = e.code() == Some("OOM");
        // A Cluster failing over, or a node still loading: passes like an outage.
        let passing = matches!(
            e.code(),
            Some("CLUSTERDOWN" | "MASTERDOWN" | "READONLY" | "LOADING")
        );
        if self.redis_down.is_some() && !unreachable && !full && !passing {
            // Not an outage but a failing command: say it each time, it will not pass.
            error!("Redis call failed again: {e}");
        }
        if let Some(since) = self.redis_down
            && self.redis_last_said.elapsed() >= STILL_DOWN_EVERY
        {
            // A long outage is said again, so the log never looks like all is well.
            self.redis_last_said = Instant::now();
            error!(
                "Redis at {} still failing after {:.0} s: {e}; {} outcomes held, nothing is claimed until it answers",
                self.config.redis_url_redacted(),
                since.elapsed().as_secs_f64(),
                self.pending()
            );
        }
        if self.redis_down.is_none() {
            self.redis_down = Some(Instant::now());
            self.redis_last_said = Instant::now();
            if full {
                error!(
                    "Redis at {} is full (maxmemory) and refused the call before writing anything: {e}; retrying every few seconds, {} outcomes held until it has room",
                    self.config.redis_url_redacted(),
                    self.pending()
                );
            } else {
                error!(
                    "Redis at {} failed: {e}; retrying every few seconds, {} outcomes held until it answers",
                    self.config.redis_url_redacted(),
                    self.pending()
                );
            }
        }
        self.redis_backoff =
            (self.redis_backoff * 2).clamp(Duration::from_millis(100), REDIS_BACKOFF_CAP);
        self.redis_backoff
    }

    /// A Cluster moving a slot answered MOVED, ASK or TRYAGAIN: the call ran nowhere.
    /// The connection was dropped, so the next one reads the new slot map; try again
    /// soon, backing off only a little while a slot's keys are under way (ASK), and say
    /// so at most once a minute: a reshard is routine, not an outage.
    fn follow_slots(&mut self, e: &redis::RedisError) -> Duration {
        self.check_redis = true;
        let since = *self.slots_moving_since.get_or_insert_with(Instant::now);
        let said_lately = self
            .slots_moving_said
            .is_some_and(|at| at.elapsed() < STILL_DOWN_EVERY);
        // A move takes moments; one that lasts is a migration left half done, which
        // only an operator can finish, and meanwhile nothing is claimed.
        let stuck = since.elapsed() >= SLOT_MOVE_STUCK;
        if stuck
            && self
                .slots_moving_stuck_said
                .is_none_or(|at| at.elapsed() >= STILL_DOWN_EVERY)
        {
            self.slots_moving_stuck_said = Some(Instant::now());
            error!(
                "the Redis Cluster has answered that a slot of the queue is moving for {:.0} s ({e}): a slot migration may be stuck; look with `redis-cli --cluster check HOST:PORT` and finish it with `redis-cli --cluster fix HOST:PORT`; nothing is claimed meanwhile",
                since.elapsed().as_secs_f64()
            );
            if let Some(tell) = self.control.readiness.as_mut() {
                tell(Readiness::Waiting(format!(
                    "a Redis Cluster slot stays in motion: {e}"
                )));
            }
        } else if !said_lately {
            self.slots_moving_said = Some(Instant::now());
            info!("the Redis Cluster is moving a slot of the queue ({e}); following it");
        }
        self.redis_backoff = (self.redis_backoff * 2).clamp(SLOT_MOVE_RETRY, SLOT_MOVE_RETRY_CAP);
        self.redis_backoff
    }

    fn redis_is_back(&mut self) {
        self.slots_moving_since = None;
        self.redis_backoff = Duration::ZERO;
        self.redis_retry_at = None;
        if let Some(since) = self.redis_down.take() {
            info!(
                "Redis answers again after {:.1} s",
                since.elapsed().as_secs_f64()
            );
        }
    }

    /// Stop claiming, put back what no worker started, let the attempts in hand
    /// finish, and write every outcome.
    fn shut_down(mut self, workers: Vec<JoinHandle<()>>) -> Exit {
        info!(
            "stopping: no more claims; waiting for {} callbacks in flight",
            self.held
        );
        self.jobs_tx = None; // the workers end once the channel is empty
        while let Ok(unstarted) = self.jobs_rx.try_recv() {
            self.held -= 1;
            let claimed = unstarted.back;
            let due = claimed.due.clone();
            self.shards[claimed.shard].pending.push(Settle {
                member: claimed.member,
                lease: claimed.lease,
                id: claimed.id,
                op: SettleOp::Release { due },
            });
        }
        let deadline = Instant::now() + self.config.http.timeout + Duration::from_secs(1);
        while self.held > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.outcomes.recv_timeout(left) {
                Ok(outcome) => self.record(outcome),
                Err(_) => break,
            }
        }
        let give_up = Instant::now() + SHUTDOWN_REDIS_GRACE;
        while let Err(e) = self.flush() {
            if Instant::now() >= give_up {
                error!(
                    "could not write {} outcomes to Redis ({e}); their leases will expire and those jobs run again",
                    self.pending()
                );
                return Exit::Unrecorded(self.pending() + self.held);
            }
            std::thread::sleep(self.redis_trouble(&e));
        }
        if self.held > 0 {
            // A worker outlived the HTTP timeout: leave it; the lease covers its job.
            warn!(
                "{} callbacks did not finish in time; their leases cover them",
                self.held
            );
            return Exit::Unrecorded(self.held);
        }
        for w in workers {
            if w.join().is_err() {
                error!("a worker thread panicked outside an attempt");
            }
        }
        // Gone from `delayqs daemons` at once, not when the record expires.
        if let Err(e) = self
            .store
            .heartbeat(&self.token_prefix, None, HEARTBEAT_LIFE)
        {
            warn!("could not remove this daemon's heartbeat record ({e}); it expires by itself");
        }
        // The last counts, without the gauges: Redis may be what stopped us.
        self.write_metrics(false);
        info!("stopped cleanly");
        Exit::Clean
    }

    /// Redis's clock, advanced by the local one since the last claim.
    fn now(&self) -> f64 {
        self.clock.0 + self.clock.1.elapsed().as_secs_f64()
    }
}

/// A Cluster's answer that the call ran nowhere because a slot is moving.
fn slot_in_motion(e: &redis::RedisError) -> bool {
    matches!(e.code(), Some("MOVED" | "ASK" | "TRYAGAIN"))
}

/// What Redis's `maxmemory-policy` means for running.
#[derive(Debug, PartialEq, Eq)]
enum Eviction {
    /// `noeviction`: a full Redis refuses writes (OOM), and nothing is lost.
    Safe,
    /// Run, and say this once.
    Warn(String),
    /// Do not run (exit 78), for this reason.
    Refuse(String),
}

/// Judges the eviction policy Redis reported (`None`: it would not say). `allkeys-*`
/// may evict the queue or the in-flight set, losing jobs without a trace; the
/// `volatile-*` policies evict only keys with a TTL, and delayqs's keys have none.
fn judge_eviction(policy: Option<&str>, allowed: bool) -> Eviction {
    let danger = "which may evict the queue or the in-flight set when Redis fills up, losing jobs without a trace";
    match policy {
        Some("noeviction") => Eviction::Safe,
        Some(p) if p.starts_with("volatile-") => Eviction::Warn(format!(
            "Redis maxmemory-policy is {p}: it evicts only keys with a TTL and delayqs's keys have none, so a full Redis refuses writes instead and delayqs waits (unless something sets a TTL on them); noeviction says so plainly"
        )),
        None => Eviction::Warn(
            "cannot read Redis's maxmemory-policy (CONFIG GET and INFO both refused); make sure it is noeviction: an allkeys-* policy may evict the queue or the in-flight set when Redis fills up".into(),
        ),
        Some(p) if allowed => Eviction::Warn(format!(
            "Redis maxmemory-policy is {p}, {danger}; running anyway, as `allowEvictingRedis` says"
        )),
        Some(p) => Eviction::Refuse(format!(
            "Redis maxmemory-policy is {p}, {danger}; set it to noeviction (CONFIG SET maxmemory-policy noeviction), or set `allowEvictingRedis`: true to run anyway"
        )),
    }
}

/// A flow as the heartbeat record carries it, for `stats` and `top`.
fn flow_json(v: &flow::View) -> serde_json::Value {
    serde_json::json!({
        "flow": v.name,
        "limit": v.limit,
        "rate": v.rate,
        "concurrency": v.concurrency,
        "inFlight": v.in_flight,
        "deferred": v.deferred,
        "slowed": v.slowed,
        "paused": v.paused,
        "heldFor": v.held_for,
        "lastPressure": v.last_pressure,
    })
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This host's name, for the heartbeat record: as `hostname` prints it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Unique to this process among all daemons on one Redis: the claim tokens built on it
/// tell one lease from the next.
fn token_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}.{:x}", std::process::id(), nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_noeviction_is_safe_and_allkeys_is_refused_unless_allowed() {
        assert_eq!(judge_eviction(Some("noeviction"), false), Eviction::Safe);
        for p in [
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "some-new-policy",
        ] {
            let Eviction::Refuse(why) = judge_eviction(Some(p), false) else {
                panic!("{p} is not refused");
            };
            assert!(
                why.contains(p) && why.contains("allowEvictingRedis"),
                "{why}"
            );
            assert!(matches!(judge_eviction(Some(p), true), Eviction::Warn(_)));
        }
        for p in [
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
        ] {
            let Eviction::Warn(why) = judge_eviction(Some(p), false) else {
                panic!("{p} is not a warning");
            };
            assert!(why.contains(p) && why.contains("TTL"), "{why}");
        }
        assert!(matches!(judge_eviction(None, false), Eviction::Warn(_)));
    }
}
