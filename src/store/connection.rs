//! The main loop's connection to Redis and its calls: one round of the claim script,
//! the undo of a claim whose reply was lost, the sweep, and the reads for checks and
//! metrics. Connects lazily and drops the connection on any error.

use std::time::Duration;

use redis::{Client, Connection, RedisResult, Script, Value};

use crate::config::{Config, Keys};
use crate::store::claim::{self, ClaimBatch, LeaseToken, Score};

/// An outcome to record. Each names the job's member and the lease it was claimed under.
#[derive(Debug, Clone)]
pub struct Settle {
    pub member: Vec<u8>,
    /// The job id, for messages about this outcome.
    pub id: String,
    pub lease: LeaseToken,
    pub op: SettleOp,
}

#[derive(Debug, Clone)]
pub enum SettleOp {
    /// Delivered: the job is gone for good.
    Done,
    /// Failed, attempts left: back into the queue after this delay.
    Retry(Duration),
    /// Failed for good or malformed: append this JSON record to the failed list.
    Fail(String),
    /// Claimed but never started (shutdown, a paused host, too late to start): the
    /// claim is undone and the job queued at this score.
    Release { due: Score },
}

/// How many expired leases one claim takes back; the rest wait for the next call.
const RECOVER_BATCH: usize = 100;
/// Attempt counts looked at per sweep call.
const SWEEP_PAGE: usize = 200;

pub struct Store {
    client: Client,
    con: Option<Connection>,
    keys: Keys,
    timeout: Duration,
    claim: Script,
    unclaim: Script,
    sweep: Script,
    sweep_cursor: String,
}

impl Store {
    pub fn new(config: &Config) -> RedisResult<Store> {
        Ok(Store {
            client: config.redis_client()?,
            con: None,
            keys: config.keys.clone(),
            timeout: config.redis_timeout,
            claim: Script::new(include_str!("scripts/claim.lua")),
            unclaim: Script::new(include_str!("scripts/unclaim.lua")),
            sweep: Script::new(include_str!("scripts/sweep.lua")),
            sweep_cursor: "0".into(),
        })
    }

    /// One round in one call: records `outcomes`, then claims up to `limit` due jobs,
    /// taking back expired leases on the way. A `limit` of 0 only records outcomes.
    pub fn claim(
        &mut self,
        outcomes: &[Settle],
        limit: usize,
        lease: Duration,
        token: &str,
        max_bytes: usize,
    ) -> RedisResult<ClaimBatch> {
        let recover = if limit == 0 { 0 } else { RECOVER_BATCH };
        let reply: Vec<Value> = self.call(|con, s| {
            let mut inv = s.claim.prepare_invoke();
            inv.key(&s.keys.queue)
                .key(&s.keys.inflight)
                .key(&s.keys.attempts)
                .key(&s.keys.failed)
                .arg(limit)
                .arg(lease.as_millis() as u64)
                .arg(token)
                .arg(recover)
                .arg(max_bytes);
            for o in outcomes {
                let (op, arg): (&str, Vec<u8>) = match &o.op {
                    SettleOp::Done => ("done", Vec::new()),
                    SettleOp::Retry(delay) => ("retry", delay.as_millis().to_string().into()),
                    SettleOp::Fail(record) => ("fail", record.clone().into_bytes()),
                    SettleOp::Release { due } => ("release", due.text().as_bytes().to_vec()),
                };
                inv.arg(op).arg(&o.member).arg(o.lease.as_str()).arg(arg);
            }
            inv.invoke(con)
        })?;
        Ok(claim::parse(reply)?)
    }

    /// Puts back the jobs of a claim whose reply was lost, called with `token`.
    /// Returns how many there were.
    pub fn unclaim(&mut self, token: &str) -> RedisResult<u64> {
        self.call(|con, s| {
            s.unclaim
                .key(&s.keys.queue)
                .key(&s.keys.inflight)
                .key(&s.keys.attempts)
                .arg(token)
                .invoke(con)
        })
    }

    /// Checks that each key delayqs writes is absent or of the type it expects, so a
    /// wrong key name in the config is caught before a script fails halfway.
    pub fn check_key_types(&mut self) -> RedisResult<Result<(), String>> {
        let expected = [
            ("key", self.keys.queue.clone(), "zset"),
            ("inflightKey", self.keys.inflight.clone(), "zset"),
            ("attemptsKey", self.keys.attempts.clone(), "hash"),
            ("failKey", self.keys.failed.clone(), "list"),
        ];
        for (setting, key, want) in expected {
            let found: String = self.call(|con, _| redis::cmd("TYPE").arg(&key).query(con))?;
            if found != "none" && found != want {
                return Ok(Err(format!(
                    "Redis key {key:?} (config `{setting}`) holds a {found}, not a {want}; point `{setting}` at another key or remove that one"
                )));
            }
        }
        Ok(Ok(()))
    }

    /// Redis's `maxmemory-policy`: from `CONFIG GET`, or where that is refused (managed
    /// services rename it, an ACL may deny it) from `INFO memory`. `None` when neither
    /// answers with it.
    pub fn eviction_policy(&mut self) -> RedisResult<Option<String>> {
        // A refusal is an answer; only trouble reaching Redis is an error here.
        let refused = |e: &redis::RedisError| {
            !(e.is_io_error() || e.is_timeout() || e.is_connection_dropped())
        };
        let config: RedisResult<std::collections::HashMap<String, String>> = self.call(|con, _| {
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory-policy")
                .query(con)
        });
        match config {
            Ok(map) => {
                if let Some(policy) = map.get("maxmemory-policy") {
                    return Ok(Some(policy.clone()));
                }
            }
            Err(e) if refused(&e) => {}
            Err(e) => return Err(e),
        }
        let info: RedisResult<String> =
            self.call(|con, _| redis::cmd("INFO").arg("memory").query(con));
        match info {
            Ok(info) => Ok(info
                .lines()
                .find_map(|l| l.strip_prefix("maxmemory_policy:"))
                .map(|p| p.trim().to_string())),
            Err(e) if refused(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Looks at one page of attempt counts and drops those of jobs that no longer
    /// exist. Returns how many it dropped.
    pub fn sweep_step(&mut self) -> RedisResult<u64> {
        let (cursor, removed): (String, u64) = self.call(|con, s| {
            s.sweep
                .key(&s.keys.queue)
                .key(&s.keys.inflight)
                .key(&s.keys.attempts)
                .arg(&s.sweep_cursor)
                .arg(SWEEP_PAGE)
                .invoke(con)
        })?;
        self.sweep_cursor = cursor;
        Ok(removed)
    }

    /// The queue's state for the metrics file: pending, due by `now`, in flight.
    pub fn gauges(&mut self, now: f64) -> RedisResult<crate::telemetry::metrics::Gauges> {
        let (pending, due, inflight) = self.call(|con, s| {
            redis::pipe()
                .zcard(&s.keys.queue)
                .zcount(&s.keys.queue, "-inf", now)
                .zcard(&s.keys.inflight)
                .query(con)
        })?;
        Ok(crate::telemetry::metrics::Gauges {
            pending,
            due,
            inflight,
        })
    }

    /// Names the keys of the old daemon that still exist in Redis.
    pub fn old_daemon_leftovers(&mut self) -> RedisResult<Vec<String>> {
        let keys = [
            self.keys.old_retry_ids.clone(),
            self.keys.old_bodies.clone(),
        ];
        let mut found = Vec::new();
        for key in keys {
            let exists: bool = self.call(|con, _| redis::cmd("EXISTS").arg(&key).query(con))?;
            if exists {
                found.push(key);
            }
        }
        Ok(found)
    }

    /// Runs `f` on a connection, connecting first when there is none. Any error drops
    /// the connection: after a timeout or a half-read reply it cannot be trusted, and
    /// the next call reconnects.
    fn call<T>(
        &mut self,
        f: impl FnOnce(&mut Connection, &Store) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let mut con = match self.con.take() {
            Some(con) => con,
            None => self.connect()?,
        };
        let result = f(&mut con, self);
        if result.is_ok() {
            self.con = Some(con);
        }
        result
    }

    fn connect(&self) -> RedisResult<Connection> {
        let con = self.client.get_connection_with_timeout(self.timeout)?;
        con.set_read_timeout(Some(self.timeout))?;
        con.set_write_timeout(Some(self.timeout))?;
        Ok(con)
    }
}
