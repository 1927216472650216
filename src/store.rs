//! The Redis side: one connection, owned by the main loop, and the Lua scripts that
//! claim jobs and record their outcomes atomically.
//!
//! Every key a script touches is passed in `KEYS`, so a move to Redis Cluster needs only
//! hash tags in the key names.

use std::time::Duration;

use redis::{Client, Connection, RedisError, RedisResult, Script, Value};

use crate::config::{Config, Keys};
use crate::job::job_id;

/// A job taken out of the queue under a lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The member string exactly as the producer wrote it.
    pub member: Vec<u8>,
    /// The score it had in the queue: when it was due, in Unix seconds.
    pub due: String,
    /// 1 for the first attempt; counts survive restarts because they live in Redis.
    pub attempt: u32,
    /// SHA-1 hex of the member: the same for every attempt and every daemon.
    pub id: String,
    /// What the claim wrote into the attempts hash; outcomes must present it.
    pub lease: String,
    /// When the job was first due, before any retry moved it (Unix seconds).
    pub first_due: String,
}

/// What one call of the claim script saw and did.
#[derive(Debug)]
pub struct ClaimBatch {
    /// Redis's clock at the claim, Unix seconds.
    pub now: f64,
    /// The earliest score still in the queue.
    pub next_due: Option<f64>,
    /// Expired leases put back into the queue.
    pub recovered: u64,
    /// Due copies of members already in flight, merged into the attempt under way.
    pub merged: u64,
    /// Jobs the claim set aside: "skip <id> <field> <key>" or "oversize <id> <bytes>".
    pub dropped: Vec<String>,
    /// Indexes of the outcomes whose lease had already been taken back: they changed
    /// nothing.
    pub stale: Vec<usize>,
    pub jobs: Vec<Claimed>,
}

/// An outcome to record. Each names the job's member and the lease it was claimed under.
#[derive(Debug, Clone)]
pub struct Settle {
    pub member: Vec<u8>,
    /// The job id, for messages about this outcome.
    pub id: String,
    pub lease: String,
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
    /// Claimed but never started (shutdown): back into the queue at its old score.
    Release { due: String },
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
                    SettleOp::Release { due } => ("release", due.clone().into_bytes()),
                };
                inv.arg(op).arg(&o.member).arg(&o.lease).arg(arg);
            }
            inv.invoke(con)
        })?;
        parse_claim(reply)
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
    pub fn gauges(&mut self, now: f64) -> RedisResult<crate::metrics::Gauges> {
        let (pending, due, inflight) = self.call(|con, s| {
            redis::pipe()
                .zcard(&s.keys.queue)
                .zcount(&s.keys.queue, "-inf", now)
                .zcard(&s.keys.inflight)
                .query(con)
        })?;
        Ok(crate::metrics::Gauges {
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

fn parse_claim(reply: Vec<Value>) -> RedisResult<ClaimBatch> {
    let bad = |what: &str| {
        RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "claim.lua returned an unexpected reply",
            what.to_string(),
        ))
    };
    if reply.len() < 6 || !(reply.len() - 6).is_multiple_of(5) {
        return Err(bad("wrong length"));
    }
    let mut it = reply.into_iter();
    let mut next = || it.next().ok_or_else(|| bad("too short"));
    let now: String = redis::from_redis_value(next()?)?;
    let next_due: String = redis::from_redis_value(next()?)?;
    let recovered: u64 = redis::from_redis_value(next()?)?;
    let merged: u64 = redis::from_redis_value(next()?)?;
    let dropped: String = redis::from_redis_value(next()?)?;
    let stale: String = redis::from_redis_value(next()?)?;
    let mut jobs = Vec::new();
    while let Ok(member) = next() {
        let member: Vec<u8> = redis::from_redis_value(member)?;
        let due = redis::from_redis_value(next()?)?;
        let attempt: u32 = redis::from_redis_value(next()?)?;
        let id = job_id(&member);
        let lease = redis::from_redis_value(next()?)?;
        let first_due = redis::from_redis_value(next()?)?;
        jobs.push(Claimed {
            member,
            due,
            attempt,
            id,
            lease,
            first_due,
        });
    }
    Ok(ClaimBatch {
        now: now.parse().map_err(|_| bad("now is not a number"))?,
        next_due: next_due.parse().ok(),
        recovered,
        merged,
        dropped: dropped.lines().map(str::to_string).collect(),
        stale: stale
            .split(' ')
            .filter_map(|n| n.parse::<usize>().ok()?.checked_sub(1))
            .collect(),
        jobs,
    })
}
