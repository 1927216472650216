//! What `delayqs top` shows, read from Redis once a second in a bounded number of
//! commands, whatever the queue holds: counts by `ZCARD`, `ZCOUNT`, `LLEN` and `HLEN`,
//! the in-flight set (small: a daemon holds at most 8 jobs per worker) read up to
//! [`INFLIGHT_READ`] members, the failed list's tail only, and the daemons' heartbeats
//! (one field per daemon), and the size of each paused flow's parked set per shard.
//! Nothing here scans a big key: no `HGETALL` of the attempts
//! hash, no full pass over the failed list (`stats` does those, on demand).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::Value;

use crate::cli::fleet::{FleetFlow, Record, describe_pause, fleet_flows};
use crate::cli::shown::{callback_in, callback_of, host_of};
use crate::config::{Config, Keys};
use crate::store::Conn;

/// In-flight members read per shard, per refresh, for the per-host counts.
pub const INFLIGHT_READ: usize = 1000;
/// Records read from the tail of each shard's failed list for recent failures.
pub const FAILED_TAIL: usize = 200;
/// The tail is read again when the list's length changed, else this often (a retry
/// or purge of other records can change it at the same length).
const TAIL_EVERY: Duration = Duration::from_secs(10);
/// How often to look for shards a larger `shards` setting left holding jobs (one
/// `EXISTS` per shard not configured, up to 64), as the daemon does.
const SHARD_PROBE_EVERY: Duration = Duration::from_secs(60);

/// Jobs in each state, summed over the shards.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub pending: u64,
    pub due: u64,
    pub inflight: u64,
    /// Attempt entries without a lease: jobs waiting after an attempt (a retry, or
    /// put back untried), plus entries of cancelled jobs the daemons' sweep has not
    /// dropped yet. An estimate from `HLEN` − `ZCARD`; `stats` counts exactly.
    pub retrying: u64,
    pub failed: u64,
    /// How late the oldest due job is, seconds (0: none due).
    pub oldest_late: f64,
}

/// One daemon, from its heartbeat.
#[derive(Debug, Default)]
pub struct Daemon {
    pub host: String,
    pub pid: u64,
    pub version: String,
    pub up: f64,
    /// Seconds since its last round reached Redis; `None` before its first.
    pub last_round_ago: Option<f64>,
    pub busy: u64,
    pub workers: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Per second, between its last two heartbeats; `None` until it has beaten twice.
    pub delivered_rate: Option<f64>,
    pub failed_rate: Option<f64>,
    /// Attempts that failed (retried or not), per second.
    pub attempts_failed_rate: Option<f64>,
    /// Lateness of its deliveries of the last minute, seconds.
    pub late_p50: Option<f64>,
    pub late_p99: Option<f64>,
    pub paused: bool,
}

/// One callback host (or `flowKey`), from the in-flight set, the failed tail, the
/// breakers, the flows of the daemons' heartbeats and the paused flows' hash.
#[derive(Debug, Default)]
pub struct Host {
    pub host: String,
    pub inflight: u64,
    /// Failures among the recent ones read (the failed list's tail).
    pub failures: u64,
    pub last_error: Option<String>,
    /// A daemon's breaker holds its jobs (it kept failing).
    pub paused: bool,
    /// Its flow's rate, `now/limit` (fleet-wide), when a daemon keeps its flow ("":
    /// unlimited, or not seen by any).
    pub rate: String,
    /// Slowed by back-pressure on some daemon.
    pub slowed: bool,
    /// Paused by an operator (`delayqs pause --host`/`--flow`): its jobs are parked.
    pub flow_paused: bool,
    /// Its jobs parked while paused, over the shards.
    pub parked: u64,
}

/// A failed record, as shown.
#[derive(Debug, Clone, Default)]
pub struct Failure {
    /// The record's `Id` (a job id, or an old daemon's id).
    pub id: String,
    pub at: f64,
    pub host: String,
    pub attempts: u64,
    pub error: String,
}

/// Everything one screen shows but the rates' history (the view keeps that).
#[derive(Debug, Default)]
pub struct Model {
    pub queue: String,
    /// The Redis URL, credentials masked.
    pub redis: String,
    pub shards: usize,
    /// Redis's clock at the last answer.
    pub now: f64,
    /// Set while Redis does not answer: what went wrong. The figures are then the
    /// last ones read (`read` says whether there are any).
    pub away: Option<String>,
    pub read: bool,
    pub counts: Counts,
    /// How the queue is paused (`delayqs pause`), when it is.
    pub paused: Option<String>,
    pub daemons: Vec<Daemon>,
    pub hosts: Vec<Host>,
    /// Newest first, at most [`FAILED_TAIL`].
    pub failures: Vec<Failure>,
    /// Some shard had more in flight than was read: the host counts are partial.
    pub inflight_partial: bool,
    /// Per second, summed over the daemons: delivered, failed for good, attempts
    /// failed.
    pub rates: [f64; 3],
    /// The worst daemon's lateness of the last minute.
    pub late_p50: Option<f64>,
    pub late_p99: Option<f64>,
    /// Redis commands the last refresh sent.
    pub commands: usize,
}

impl Model {
    /// What is known before Redis has answered: the queue and where it is.
    pub fn before_reading(config: &Config) -> Model {
        Model {
            queue: config.keys.queue.clone(),
            redis: config.redis_url_redacted(),
            shards: config.keys.shards,
            ..Model::default()
        }
    }
}

/// A daemon's counters at its last heartbeat, and its rates from the one before.
struct Beat {
    at: f64,
    /// Delivered, failed for good, attempts failed.
    counters: [f64; 3],
    rates: Option<[f64; 3]>,
}

/// A shard's failed tail as last read.
struct Tail {
    len: u64,
    read_at: Instant,
    records: Vec<Failure>,
}

/// Reads the model once a second, on its own connection; keeps what rates need.
pub struct Sampler {
    config: Arc<Config>,
    con: Option<Conn>,
    shards: Vec<usize>,
    last_probe: Option<Instant>,
    /// Per daemon id; a handful, so a list. (Small containers, here and below: each
    /// map type links its own code, and the static binary has a size budget.)
    beats: Vec<(String, Beat)>,
    /// Per shard number.
    tails: Vec<Option<Tail>>,
}

impl Sampler {
    pub fn new(config: Arc<Config>) -> Sampler {
        Sampler {
            shards: (0..config.keys.shards).collect(),
            config,
            con: None,
            last_probe: None,
            beats: Vec::new(),
            tails: (0..crate::config::MAX_SHARDS).map(|_| None).collect(),
        }
    }

    /// One refresh; when Redis does not answer, what to say (the next call connects
    /// again).
    pub fn sample(&mut self) -> Result<Model, String> {
        self.read().map_err(|e| {
            self.con = None;
            format!(
                "Redis at {} does not answer: {e}; trying again every second",
                self.config.redis_url_redacted()
            )
        })
    }

    fn read(&mut self) -> redis::RedisResult<Model> {
        if self.con.is_none() {
            self.con = Some(crate::store::open(&self.config)?);
        }
        let con = self.con.as_mut().expect("connected above");
        let keys = self.config.keys.clone();
        let mut commands = 1;
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query(con)?;
        let now = secs as f64 + micros as f64 / 1e6;
        if self
            .last_probe
            .is_none_or(|at| at.elapsed() >= SHARD_PROBE_EVERY)
        {
            // Reads the highest `shards` recorded (a `GET`), records nothing.
            let found = crate::store::shards_in_use(con, &keys, true, false)?;
            commands += 1 + found
                .recorded
                .min(crate::config::MAX_SHARDS)
                .saturating_sub(keys.shards);
            self.shards = found.found;
            self.last_probe = Some(Instant::now());
        }

        let mut counts = Counts::default();
        let mut oldest: Option<f64> = None;
        let mut inflight_hosts: BTreeMap<String, u64> = BTreeMap::new();
        let mut partial = false;
        for &shard in &self.shards {
            let k = keys.shard(shard);
            let mut r = redis::pipe()
                .zcard(&k.queue)
                .zcount(&k.queue, "-inf", now)
                .zcard(&k.inflight)
                .llen(&k.failed)
                .hlen(&k.attempts)
                .zrange(&k.inflight, 0, INFLIGHT_READ as isize - 1)
                .zrange_withscores(&k.queue, 0, 0)
                .query::<Vec<redis::Value>>(con)?
                .into_iter();
            let pending: u64 = take(&mut r)?;
            let due: u64 = take(&mut r)?;
            let inflight: u64 = take(&mut r)?;
            let failed: u64 = take(&mut r)?;
            let attempts: u64 = take(&mut r)?;
            let members: Vec<Vec<u8>> = take(&mut r)?;
            let first: Vec<(Vec<u8>, f64)> = take(&mut r)?;
            commands += 7;
            counts.pending += pending;
            counts.due += due;
            counts.inflight += inflight;
            counts.failed += failed;
            counts.retrying += attempts.saturating_sub(inflight);
            partial |= inflight > members.len() as u64;
            for m in &members {
                *inflight_hosts.entry(host_of(&callback_of(m))).or_default() += 1;
            }
            if let Some((_, score)) = first.first() {
                oldest = Some(oldest.map_or(*score, |o: f64| o.min(*score)));
            }
            let stale = self.tails[shard]
                .as_ref()
                .is_none_or(|t| t.len != failed || t.read_at.elapsed() >= TAIL_EVERY);
            if stale {
                let raw: Vec<Vec<u8>> = con.lrange(&k.failed, -(FAILED_TAIL as isize), -1)?;
                commands += 1;
                let records = raw.iter().map(|r| failure_of(r)).collect();
                let read_at = Instant::now();
                self.tails[shard] = Some(Tail {
                    len: failed,
                    read_at,
                    records,
                });
            }
        }
        for (shard, tail) in self.tails.iter_mut().enumerate() {
            if !self.shards.contains(&shard) {
                *tail = None;
            }
        }
        counts.oldest_late = oldest.map_or(0.0, |s| (now - s.max(0.0)).max(0.0));

        let mut r = redis::pipe()
            .hgetall(keys.daemons())
            .get(keys.paused())
            .hkeys(keys.paused_flows())
            .query::<Vec<redis::Value>>(con)?
            .into_iter();
        let beats: Vec<(String, String)> = take(&mut r)?;
        let pause: Option<String> = take(&mut r)?;
        let paused_flows: Vec<String> = take(&mut r)?;
        commands += 3;
        // One `ZCARD` per paused flow and shard: operators pause a handful, and
        // nothing is sent while none is.
        let mut parked = vec![0u64; paused_flows.len()];
        if !paused_flows.is_empty() {
            let mut pipe = redis::pipe();
            for &shard in &self.shards {
                for name in &paused_flows {
                    pipe.zcard(Keys::parked(&keys.shard(shard).queue, name));
                }
            }
            let counts: Vec<u64> = pipe.query(con)?;
            commands += counts.len();
            for (i, n) in counts.into_iter().enumerate() {
                parked[i % paused_flows.len()] += n;
            }
        }

        let records: Vec<Record> = beats
            .iter()
            .filter_map(|(_, line)| Record::parse(line))
            .filter(|r| r.expires >= now)
            .collect();
        let records = ordered(records, |r| millis(num(r, "started")));
        let daemons = self.daemons(&records, now);

        let mut m = Model::before_reading(&self.config);
        m.now = now;
        m.read = true;
        m.counts = counts;
        m.shards = self.shards.len();
        m.paused = pause.map(|note| {
            let note = serde_json::from_str(&note).unwrap_or(Value::String(note));
            describe_pause(&note)
        });
        // From 0.0: a float sum of nothing is -0.0, shown as "-0.0".
        let rate =
            |f: fn(&Daemon) -> Option<f64>| daemons.iter().filter_map(f).fold(0.0, |a, b| a + b);
        m.rates = [
            rate(|d| d.delivered_rate),
            rate(|d| d.failed_rate),
            rate(|d| d.attempts_failed_rate),
        ];
        let worst = |f: fn(&Daemon) -> Option<f64>| daemons.iter().filter_map(f).reduce(f64::max);
        m.late_p50 = worst(|d| d.late_p50);
        m.late_p99 = worst(|d| d.late_p99);
        let paused_hosts: Vec<&str> = records
            .iter()
            .filter_map(|r| r.fields["pausedHosts"].as_array())
            .flatten()
            .filter_map(|h| h.as_str())
            .collect();
        let failures: Vec<Failure> = self
            .tails
            .iter()
            .flatten()
            .flat_map(|t| t.records.iter().cloned())
            .collect();
        // Newest first.
        let mut failures = ordered(failures, |f| inverse(millis(f.at)));
        failures.truncate(FAILED_TAIL);
        m.commands = commands;
        let paused_flows: Vec<&str> = paused_flows.iter().map(String::as_str).collect();
        let fields: Vec<&Value> = records.iter().map(|r| &r.fields).collect();
        let flows = fleet_flows(&fields, &paused_flows);
        let mut hosts = hosts(&inflight_hosts, &failures, &paused_hosts, &flows);
        for h in hosts.iter_mut().filter(|h| h.flow_paused) {
            let at = paused_flows.iter().position(|n| *n == h.host);
            h.parked = at.map_or(0, |at| parked[at]);
        }
        m.hosts = hosts;
        m.failures = failures;
        m.inflight_partial = partial;
        m.daemons = daemons;
        Ok(m)
    }

    /// The daemons' rows, and their rates from the heartbeat before: a daemon seen
    /// for the first time has none yet (its counters count since its start), and one
    /// gone is forgotten.
    fn daemons(&mut self, records: &[Record], now: f64) -> Vec<Daemon> {
        let mut beats = Vec::new();
        let mut rows = Vec::new();
        for r in records {
            let f = &r.fields;
            let id = f["id"].as_str().unwrap_or_default().to_string();
            // Redis stamps each record's expiry, a fixed time after the beat by its own
            // clock: two records' expiries are as far apart as their beats.
            let at = r.expires;
            let counters = ["delivered", "failed", "attemptsFailed"].map(|n| num(r, n));
            let before = self.beats.iter().position(|(i, _)| *i == id);
            let beat = match before.map(|at| self.beats.swap_remove(at).1) {
                Some(prev) if at > prev.at => Beat {
                    at,
                    counters,
                    rates: Some(std::array::from_fn(|i| {
                        ((counters[i] - prev.counters[i]) / (at - prev.at)).max(0.0)
                    })),
                },
                Some(prev) => prev,
                None => Beat {
                    at,
                    counters,
                    rates: None,
                },
            };
            let last_round = num(r, "lastRound");
            rows.push(Daemon {
                host: f["host"].as_str().unwrap_or("?").to_string(),
                pid: f["pid"].as_u64().unwrap_or(0),
                version: f["version"].as_str().unwrap_or("?").to_string(),
                up: (now - num(r, "started")).max(0.0),
                last_round_ago: (last_round > 0.0).then(|| (now - last_round).max(0.0)),
                busy: f["busy"].as_u64().unwrap_or(0),
                workers: f["workers"].as_u64().unwrap_or(0),
                delivered: counters[0] as u64,
                failed: counters[1] as u64,
                delivered_rate: beat.rates.map(|r| r[0]),
                failed_rate: beat.rates.map(|r| r[1]),
                attempts_failed_rate: beat.rates.map(|r| r[2]),
                late_p50: f["lateP50"].as_f64(),
                late_p99: f["lateP99"].as_f64(),
                paused: f["paused"].as_bool().unwrap_or(false),
            });
            beats.push((id, beat));
        }
        // The daemons not listed any more are forgotten.
        self.beats = beats;
        rows
    }
}

/// The next of a pipeline's replies, as `T`: each type's parser is linked already,
/// where a tuple of them would be one more (the static binary has a size budget).
fn take<T: redis::FromRedisValue>(
    replies: &mut std::vec::IntoIter<redis::Value>,
) -> redis::RedisResult<T> {
    let reply = replies.next().unwrap_or(redis::Value::Nil);
    Ok(redis::from_redis_value(reply)?)
}

fn num(r: &Record, name: &str) -> f64 {
    r.fields[name].as_f64().unwrap_or(0.0)
}

/// Bits of a sort key; the lower bits of the `u64` sorted carry the item's place.
const KEY_BITS: u32 = 47;
const KEY_MAX: u64 = (1 << KEY_BITS) - 1;
const PLACE_BITS: u32 = 64 - KEY_BITS;

/// `items` in the order of `key` (at most [`KEY_BITS`] bits), equals in the order
/// given. Every table goes through this one sort of `u64`s: a sort's code is several
/// kilobytes per type it is used with, and the static binary has a size budget. Past
/// 2^17 items (never: hosts are at most 1,000 per shard in flight and 200 failed) the
/// rest are dropped.
fn ordered<T>(items: Vec<T>, key: impl Fn(&T) -> u64) -> Vec<T> {
    let mut keys: Vec<u64> = (0..)
        .zip(items.iter().take(1 << PLACE_BITS))
        .map(|(place, t)| (key(t).min(KEY_MAX) << PLACE_BITS) | place)
        .collect();
    keys.sort_unstable();
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    let place = |k: u64| (k & ((1 << PLACE_BITS) - 1)) as usize;
    keys.into_iter()
        .filter_map(|k| slots[place(k)].take())
        .collect()
}

/// A key that sorts `n` the other way round.
fn inverse(n: u64) -> u64 {
    KEY_MAX - n.min(KEY_MAX)
}

/// Unix seconds as milliseconds, for a sort key (41 bits until the year 2039 + 30).
fn millis(unix: f64) -> u64 {
    (unix.max(0.0) * 1000.0) as u64
}

fn failure_of(raw: &[u8]) -> Failure {
    let record: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
    Failure {
        id: record["Id"].as_str().unwrap_or("?").to_string(),
        at: record["failedAt"].as_f64().unwrap_or(0.0),
        host: host_of(&callback_in(&record)),
        attempts: record["attempts"].as_u64().unwrap_or(0),
        error: record["error"].as_str().unwrap_or("").to_string(),
    }
}

/// Hosts with jobs in flight, recent failures or a breaker holding them, and the flows
/// the daemons keep (limited, slowed, held or paused): the paused, busiest and most
/// troubled first.
fn hosts(
    inflight: &BTreeMap<String, u64>,
    failures: &[Failure],
    paused: &[&str],
    flows: &[FleetFlow],
) -> Vec<Host> {
    // By name, as the map is, so that a host is found by binary search.
    let mut rows: Vec<Host> = inflight
        .iter()
        .map(|(host, n)| Host {
            host: host.clone(),
            inflight: *n,
            ..Host::default()
        })
        .collect();
    fn entry<'a>(rows: &'a mut Vec<Host>, name: &str) -> &'a mut Host {
        let at = match rows.binary_search_by(|h| h.host.as_str().cmp(name)) {
            Ok(at) => at,
            Err(at) => {
                let host = Host {
                    host: name.to_string(),
                    ..Host::default()
                };
                rows.insert(at, host);
                at
            }
        };
        &mut rows[at]
    }
    for f in failures {
        let h = entry(&mut rows, &f.host);
        h.failures += 1;
        // Newest first: the first seen is the last error.
        h.last_error.get_or_insert_with(|| f.error.clone());
    }
    for host in paused {
        entry(&mut rows, host).paused = true;
    }
    for f in flows {
        let h = entry(&mut rows, &f.name);
        // A flowKey's jobs are counted by host in the in-flight set: its daemons'
        // count stands for it.
        h.inflight = h.inflight.max(f.in_flight);
        if f.rate.is_some() || f.limit.is_some() {
            h.rate = f.rate_text();
        }
        h.slowed = f.slowed;
        h.flow_paused = f.paused;
    }
    // Paused first, then the most in flight, then the most failures; by name among
    // equals.
    const COUNT: u64 = (1 << 23) - 1;
    ordered(rows, |h| {
        let paused = h.paused || h.flow_paused;
        let key = (u64::from(paused) << 46) | (h.inflight.min(COUNT) << 23) | h.failures.min(COUNT);
        inverse(key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_ordered_paused_then_busiest_with_their_last_error() {
        let inflight = BTreeMap::from([
            ("e:80".to_string(), 1),
            ("a:80".to_string(), 1),
            ("b:80".to_string(), 5),
        ]);
        let failures = [
            Failure {
                host: "c:80".into(),
                error: "HTTP 500 (newest)".into(),
                ..Failure::default()
            },
            Failure {
                host: "c:80".into(),
                error: "HTTP 502".into(),
                ..Failure::default()
            },
        ];
        let paused = ["d:80"];
        let rows = hosts(&inflight, &failures, &paused, &[]);
        let names: Vec<&str> = rows.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(names, ["d:80", "b:80", "a:80", "e:80", "c:80"]);
        assert_eq!(rows[4].failures, 2);
        assert_eq!(rows[4].last_error.as_deref(), Some("HTTP 500 (newest)"));

        // The flows of the heartbeats: merged into their host's row, or rows of
        // their own; an operator's pause goes first as a breaker's does.
        let records = [
            serde_json::json!({"flows": [
                {"flow": "a:80", "limit": 50.0, "rate": 25.0, "inFlight": 1, "slowed": true},
                {"flow": "payments", "limit": null, "rate": null, "inFlight": 4},
            ]}),
            serde_json::json!({"flows": [
                {"flow": "a:80", "limit": 50.0, "rate": 50.0, "inFlight": 2, "slowed": false},
            ]}),
        ];
        let records: Vec<&Value> = records.iter().collect();
        let flows = fleet_flows(&records, &["f:80"]);
        let rows = hosts(&inflight, &failures, &paused, &flows);
        let names: Vec<&str> = rows.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(
            names,
            ["d:80", "f:80", "b:80", "payments", "a:80", "e:80", "c:80"]
        );
        let a = &rows[4];
        assert_eq!((a.inflight, a.rate.as_str(), a.slowed), (3, "50/50", true));
        assert!(rows[1].flow_paused && !rows[1].paused && rows[1].rate.is_empty());
        assert_eq!(rows[3].inflight, 4);
    }

    #[test]
    fn ordered_sorts_by_key_and_keeps_equals_in_place() {
        let items = vec![(3, 'a'), (1, 'b'), (3, 'c'), (KEY_MAX + 5, 'd'), (0, 'e')];
        let got: Vec<char> = ordered(items, |(k, _)| *k)
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        assert_eq!(got, ['e', 'b', 'a', 'c', 'd']);
        let newest_first: Vec<u64> = ordered(vec![10, 30, 20], |t| inverse(millis(*t as f64)));
        assert_eq!(newest_first, [30, 20, 10]);
    }
}
