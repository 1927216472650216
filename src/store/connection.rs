//! The main loop's connection to Redis and its calls: one round of the claim script,
//! the undo of a claim whose reply was lost, the sweep, and the reads for checks and
//! metrics. Connects lazily and drops the connection on any error.

use std::time::{Duration, Instant};

use log::info;
use redis::cluster::{ClusterClient, ClusterConnection};
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Client, Cmd, Connection, ConnectionLike, RedisResult, Value};

use crate::config::{Config, Keys, MAX_SHARDS, OUTCOMES_PER_CALL, Replication, ShardKeys};
use crate::store::claim::{self, ClaimBatch, LeaseToken, Score};
use crate::store::script::Lua;
use crate::store::sentinel::{self, Addr, Sentinel};

/// A connection to one node, or to a Redis Cluster (routing each command by its first
/// key, so that every script goes to the node that owns the queue's slot).
pub enum Conn {
    Node(Connection),
    Cluster(Box<ClusterConnection>),
}

impl Conn {
    fn like(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Conn::Node(c) => c,
            Conn::Cluster(c) => c.as_mut(),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.like().req_packed_command(cmd)
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.like().req_packed_commands(cmd, offset, count)
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        self.like().req_command(cmd)
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        self.like().check_connection()
    }

    fn is_open(&self) -> bool {
        match self {
            Conn::Node(c) => c.is_open(),
            Conn::Cluster(c) => c.is_open(),
        }
    }
}

/// How often the sentinels are asked whether the master moved.
const ASK_SENTINELS_EVERY: Duration = Duration::from_secs(1);

/// Where the data lives: one node, the master the sentinels name, or a Cluster.
enum Target {
    Single(Client),
    Cluster(Box<ClusterClient>),
    Sentinel {
        sentinel: Box<Sentinel>,
        /// The master last connected to or named by the sentinels.
        master: Option<Addr>,
        /// When to ask the sentinels again, and how long the wait after that is.
        next_ask: Instant,
        ask_backoff: Duration,
    },
}

impl Target {
    fn new(config: &Config) -> RedisResult<Target> {
        if let Some(nodes) = &config.cluster {
            let mut builder = ClusterClient::builder(nodes.iter().map(|u| u.as_str()))
                // No retries of its own: a claim whose reply was lost must not run
                // twice behind the loop's back; the loop has its own recovery.
                .retries(0)
                .connection_timeout(config.redis_timeout)
                .response_timeout(config.redis_timeout);
            if let Some(pem) = &config.redis_ca_pem {
                builder = builder.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                });
            }
            return Ok(Target::Cluster(Box::new(builder.build()?)));
        }
        Ok(match &config.sentinel {
            None => Target::Single(config.redis_client()?),
            Some(settings) => Target::Sentinel {
                sentinel: Box::new(Sentinel::new(
                    settings,
                    config.redis_timeout,
                    config.redis_ca_pem.as_deref(),
                )?),
                master: None,
                next_ask: Instant::now() + ASK_SENTINELS_EVERY,
                ask_backoff: ASK_SENTINELS_EVERY,
            },
        })
    }

    fn connect(&mut self, timeout: Duration) -> RedisResult<Conn> {
        match self {
            Target::Single(client) => {
                sentinel::open(client.get_connection_info().clone(), timeout).map(Conn::Node)
            }
            Target::Cluster(client) => {
                let con = client.get_connection()?;
                con.set_read_timeout(Some(timeout))?;
                con.set_write_timeout(Some(timeout))?;
                Ok(Conn::Cluster(Box::new(con)))
            }
            Target::Sentinel {
                sentinel, master, ..
            } => {
                let (con, addr) = sentinel.connect()?;
                if master.as_ref() != Some(&addr) {
                    info!(
                        "Sentinel: the master {:?} is at {}:{}",
                        sentinel.master_name(),
                        addr.0,
                        addr.1
                    );
                    *master = Some(addr);
                }
                Ok(Conn::Node(con))
            }
        }
    }

    /// Whether the connection in hand still goes to the master: with Sentinel, asks
    /// the sentinels about once a second. When they cannot be asked, the connection
    /// stays: the master it reaches refuses writes itself once demoted.
    fn still_master(&mut self) -> bool {
        let Target::Sentinel {
            sentinel,
            master,
            next_ask,
            ask_backoff,
        } = self
        else {
            return true;
        };
        if Instant::now() < *next_ask {
            return true;
        }
        let answer = sentinel.ask_next();
        // Asked again a second after this ask ended; while none answers, less and less
        // often (up to every 30 s): the master in hand refuses writes itself once
        // demoted, so the connection stays.
        *ask_backoff = match answer {
            Ok(_) => ASK_SENTINELS_EVERY,
            Err(_) => (*ask_backoff * 2).min(Duration::from_secs(30)),
        };
        *next_ask = Instant::now() + *ask_backoff;
        match answer {
            Ok(now) if master.as_ref() != Some(&now) => {
                info!(
                    "Sentinel: the master {:?} moved to {}:{}; switching to it",
                    sentinel.master_name(),
                    now.0,
                    now.1
                );
                *master = Some(now);
                false
            }
            _ => true,
        }
    }
}

/// Sends an unkeyed command to the node that holds the queue: on a Cluster, the master
/// of the queue's slot (a cluster would send `INFO` or `WAIT` to every primary, and
/// `CONFIG GET` to a random node); on one node, that node.
fn on_queue_node<T: redis::FromRedisValue>(
    con: &mut Conn,
    queue: &str,
    cmd: &Cmd,
) -> RedisResult<T> {
    match con {
        Conn::Node(node) => cmd.query(node),
        Conn::Cluster(cluster) => {
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
                key_slot(queue),
                SlotAddr::Master,
            )));
            Ok(redis::from_redis_value(cluster.route_command(cmd, route)?)?)
        }
    }
}

/// The Cluster slot of a key: CRC16 (XMODEM) of its hash tag, or of the whole name
/// without one, modulo 16384, as Redis computes it.
fn key_slot(key: &str) -> u16 {
    let hashed = crate::config::hash_tag(key).unwrap_or(key);
    let mut crc: u16 = 0;
    for &byte in hashed.as_bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// A connection of its own for an admin command: to the one node, or to the master
/// the sentinels name.
pub fn open(config: &Config) -> RedisResult<Conn> {
    Target::new(config)?.connect(config.redis_timeout)
}

/// The shards of a queue that are in use: the configured ones, and those beyond that
/// still hold pending or claimed jobs (or, `with_failed`, failed records), left by a
/// larger `shards` setting. Only shards below the highest setting a daemon ever
/// recorded (`Keys::shards_record`) are looked at, one `EXISTS` each (all its keys in
/// one slot). A daemon (`record`) raises that record to its own setting first.
pub fn shards_in_use(
    con: &mut Conn,
    keys: &Keys,
    with_failed: bool,
    record: bool,
) -> RedisResult<ShardsInUse> {
    let mut found: Vec<usize> = (0..keys.shards).collect();
    let recorded = match recorded_shards(con, keys, record) {
        // An ACL of the queue's keys alone: no record, and nothing to drain.
        Err(e) if e.code() == Some("NOPERM") => keys.shards,
        other => other?,
    };
    for i in keys.shards..recorded.min(MAX_SHARDS) {
        let names = keys.shard(i);
        let mut exists = redis::cmd("EXISTS");
        exists
            .arg(&names.queue)
            .arg(&names.inflight)
            .arg(&names.attempts);
        if with_failed {
            exists.arg(&names.failed);
        }
        let held: u64 = exists.query(con)?;
        if held > 0 {
            found.push(i);
        }
    }
    Ok(ShardsInUse { found, recorded })
}

/// What `shards_in_use` found: the shards to read, and the highest setting recorded.
pub struct ShardsInUse {
    pub found: Vec<usize>,
    pub recorded: usize,
}

/// The highest `shards` recorded for the queue; with `record`, first raised to ours.
fn recorded_shards(con: &mut Conn, keys: &Keys, record: bool) -> RedisResult<usize> {
    // A name without a hash tag cannot have shards (the config refuses it).
    if crate::config::hash_tag(&keys.queue).is_none() {
        return Ok(1);
    }
    let key = keys.shards_record();
    let n: Option<usize> = match record {
        true => redis::cmd("EVAL")
            .arg(RECORD_SHARDS)
            .arg(1)
            .arg(&key)
            .arg(keys.shards)
            .query(con)?,
        false => redis::cmd("GET").arg(&key).query(con)?,
    };
    Ok(n.unwrap_or(keys.shards).max(keys.shards))
}

/// Raises the recorded highest `shards` to ARGV[1]; returns the record.
const RECORD_SHARDS: &str = "local n = tonumber(redis.call('GET', KEYS[1]) or '0') or 0 \
    local mine = tonumber(ARGV[1]) \
    if mine > n then redis.call('SET', KEYS[1], mine) n = mine end return n";

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
    /// Claimed while its flow is paused (`delayqs pause --host`): the claim is undone,
    /// the job waits at `until` and is listed at `due` in the flow's parked set, for
    /// `resume` to bring back.
    Park {
        due: Score,
        until: Score,
        flow: String,
    },
}

/// What a heartbeat read back.
#[derive(Debug)]
pub struct Beat {
    /// Redis's clock, Unix s.
    pub now: f64,
    /// The queue's pause note, while it is paused.
    pub paused: Option<String>,
    /// The ids of the daemons whose records stand, this one's included.
    pub daemons: Vec<String>,
    /// The flows an operator paused.
    pub paused_flows: Vec<String>,
}

/// How many expired leases one claim takes back; the rest wait for the next call.
const RECOVER_BATCH: usize = 100;
/// Attempt counts looked at per sweep call.
const SWEEP_PAGE: usize = 200;

pub struct Store {
    target: Target,
    /// A connection was made since the loop last asked (`take_fresh`).
    fresh: bool,
    replication: Replication,
    con: Option<Conn>,
    keys: Keys,
    /// Every shard's names, in use or not, by number.
    names: Vec<ShardKeys>,
    /// The shards claimed from: the configured ones, and any a larger `shards` left
    /// holding jobs (`find_shards`).
    active: Vec<usize>,
    /// The highest `shards` any daemon recorded for the queue (`find_shards`).
    recorded: usize,
    timeout: Duration,
    claim: Lua,
    unclaim: Lua,
    sweep: Lua,
    heartbeat: Lua,
    unpark: Lua,
    /// The flows with no room, for the claim to send their fresh jobs straight to
    /// their slots (claim.lua's ARGV[6]); set by the loop before each round.
    pub full_flows: String,
    /// The sweep goes through the active shards' attempts hashes and id indexes one
    /// page at a time: which one (twice an index into `active`, plus 1 for the index),
    /// and where in it.
    sweep_at: usize,
    sweep_cursor: String,
    /// What `load_functions` last found, as said.
    library_said: Option<String>,
    /// Per shard: this user may use the id index (`check_key_types`); when not, the
    /// scripts are called without it.
    index_ok: Vec<bool>,
}

impl Store {
    pub fn new(config: &Config) -> RedisResult<Store> {
        Ok(Store {
            target: Target::new(config)?,
            fresh: false,
            replication: config.replication,
            con: None,
            keys: config.keys.clone(),
            names: (0..MAX_SHARDS).map(|i| config.keys.shard(i)).collect(),
            active: (0..config.keys.shards).collect(),
            recorded: config.keys.shards,
            timeout: config.redis_timeout,
            // The id index's shared part first: both keep it true (ids_after.lua).
            claim: Lua::new(concat!(
                include_str!("scripts/ids_after.lua"),
                include_str!("scripts/claim.lua")
            )),
            unclaim: Lua::new(concat!(
                include_str!("scripts/ids_after.lua"),
                include_str!("scripts/unclaim.lua")
            )),
            sweep: Lua::new(include_str!("scripts/sweep.lua")),
            heartbeat: Lua::new(include_str!("scripts/heartbeat.lua")),
            unpark: Lua::new(crate::store::lua::UNPARK),
            full_flows: String::new(),
            sweep_at: 0,
            sweep_cursor: "0".into(),
            library_said: None,
            index_ok: vec![true; MAX_SHARDS],
        })
    }

    /// The shards claimed from, by number.
    pub fn shards(&self) -> &[usize] {
        &self.active
    }

    /// The Redis calls a round may make for its shards beyond the configured ones:
    /// the claims of the shards being drained, and the probe's `EXISTS` for each
    /// shard up to the highest setting recorded. Counted in the lease floor.
    pub fn extra_shard_calls(&self) -> usize {
        let configured = self.keys.shards;
        let draining = self.active.len().saturating_sub(configured);
        draining + self.recorded.saturating_sub(configured)
    }

    /// Looks again for shards beyond `shards` that still hold jobs (the setting was
    /// lowered): those are claimed from too, until they are empty. Returns the ones
    /// newly found.
    pub fn find_shards(&mut self) -> RedisResult<Vec<usize>> {
        let ShardsInUse { found, recorded } =
            self.call(|con, s| shards_in_use(con, &s.keys, false, true))?;
        self.recorded = recorded;
        let new: Vec<usize> = found
            .iter()
            .copied()
            .filter(|i| !self.active.contains(i))
            .collect();
        if self.active != found {
            self.active = found;
            self.sweep_at = 0;
            self.sweep_cursor = "0".into();
        }
        Ok(new)
    }

    /// One shard's round in one call: records `outcomes` (all of that shard), then
    /// claims up to `limit` due jobs, taking back expired leases on the way. A `limit`
    /// of 0 only records outcomes. More outcomes than one call may carry go first in
    /// calls that only record.
    pub fn claim(
        &mut self,
        shard: usize,
        outcomes: &[Settle],
        limit: usize,
        lease: Duration,
        token: &str,
        max_bytes: usize,
    ) -> RedisResult<ClaimBatch> {
        let mut start = 0;
        let mut stale = Vec::new();
        loop {
            let end = (start + OUTCOMES_PER_CALL).min(outcomes.len());
            let last = end == outcomes.len();
            let chunk = &outcomes[start..end];
            let limit = if last { limit } else { 0 };
            let mut batch = self.claim_call(shard, chunk, limit, lease, token, max_bytes)?;
            stale.extend(batch.stale.iter().map(|i| i + start));
            if last {
                batch.stale = stale;
                let wrote = !outcomes.is_empty() || !batch.jobs.is_empty() || batch.recovered > 0;
                if self.replication.replicas > 0 && wrote {
                    batch.replicated = Some(self.wait_for_replicas(shard)?);
                }
                return Ok(batch);
            }
            start = end;
        }
    }

    fn claim_call(
        &mut self,
        shard: usize,
        outcomes: &[Settle],
        limit: usize,
        lease: Duration,
        token: &str,
        max_bytes: usize,
    ) -> RedisResult<ClaimBatch> {
        let recover = if limit == 0 { 0 } else { RECOVER_BATCH };
        let reply: Vec<Value> = self.call(|con, s| {
            let keys = &s.names[shard];
            let mut inv = s.claim.prepare_invoke();
            inv.key(&keys.queue)
                .key(&keys.inflight)
                .key(&keys.attempts)
                .key(&keys.failed);
            if s.index_ok[shard] {
                inv.key(&keys.index_key);
            }
            inv.arg(limit)
                .arg(lease.as_millis() as u64)
                .arg(token)
                .arg(recover)
                .arg(max_bytes)
                .arg(if limit == 0 {
                    ""
                } else {
                    s.full_flows.as_str()
                });
            for o in outcomes {
                let (op, arg): (&str, Vec<u8>) = match &o.op {
                    SettleOp::Done => ("done", Vec::new()),
                    SettleOp::Retry(delay) => ("retry", delay.as_millis().to_string().into()),
                    SettleOp::Fail(record) => ("fail", record.clone().into_bytes()),
                    SettleOp::Release { due } => ("release", due.text().as_bytes().to_vec()),
                    SettleOp::Park { due, until, flow } => (
                        "park",
                        format!("{} {} {flow}", until.text(), due.text()).into_bytes(),
                    ),
                };
                inv.arg(op).arg(&o.member).arg(o.lease.as_str()).arg(arg);
            }
            inv.invoke(con)
        })?;
        Ok(claim::parse(reply, shard)?)
    }

    /// `WAIT`s for the configured replicas to have what this connection wrote; returns
    /// how many did within the timeout.
    fn wait_for_replicas(&mut self, shard: usize) -> RedisResult<u32> {
        let Replication { replicas, timeout } = self.replication;
        self.call(|con, s| {
            // On a Cluster, over the connection the claim used: the shard's master.
            let mut wait = redis::cmd("WAIT");
            wait.arg(replicas).arg(timeout.as_millis() as u64);
            on_queue_node(con, &s.names[shard].queue, &wait)
        })
    }

    /// Loads the Functions library of jobs by id when it is missing or older
    /// (`functions::ensure`): on every new connection, since a Redis restarted without
    /// persistence, or a new Cluster master, has none. Returns what was found only when
    /// it differs from the last time, so that a refusal that lasts (a full Redis, whose
    /// every round reconnects) is said once.
    pub fn load_functions(&mut self) -> RedisResult<Option<crate::store::functions::Library>> {
        let library = self.call(|con, _| crate::store::functions::ensure(con, false))?;
        let said = library.describe();
        Ok((self.library_said.replace(said.clone()) != Some(said)).then_some(library))
    }

    /// Puts back the jobs of a claim whose reply was lost, called with `token`.
    /// Returns how many there were.
    pub fn unclaim(&mut self, shard: usize, token: &str) -> RedisResult<u64> {
        self.call(|con, s| {
            let keys = &s.names[shard];
            let mut call = s.unclaim.key(&keys.queue);
            call.key(&keys.inflight).key(&keys.attempts);
            if s.index_ok[shard] {
                call.key(&keys.index_key);
            }
            call.arg(token).invoke(con)
        })
    }

    /// Checks that each key delayqs writes is absent or of the type it expects, so a
    /// wrong key name in the config is caught before a script fails halfway.
    pub fn check_key_types(&mut self) -> RedisResult<Result<(), String>> {
        let expected: Vec<(&str, String, String, &str)> = self
            .active
            .iter()
            .flat_map(|&i| {
                let keys = &self.names[i];
                let of = |setting: &'static str, key: &String, want: &'static str| {
                    let what = match i {
                        0 => format!("config `{setting}`"),
                        i => format!("shard {i} of config `{setting}`"),
                    };
                    (setting, what, key.clone(), want)
                };
                [
                    of("key", &keys.queue, "zset"),
                    of("inflightKey", &keys.inflight, "zset"),
                    of("attemptsKey", &keys.attempts, "hash"),
                    of("failKey", &keys.failed, "list"),
                ]
            })
            .collect();
        for i in self.active.clone() {
            let key = self.names[i].index_key.clone();
            // A user whose ACL names only the configured keys may not touch the id
            // index: that shard is then served without it (no job there has an id).
            let found: Option<String> =
                self.call(|con, _| match redis::cmd("TYPE").arg(&key).query(con) {
                    Err(e) if e.code() == Some("NOPERM") => Ok(None),
                    other => other.map(Some),
                })?;
            if self.index_ok[i] && found.is_none() {
                log::warn!(
                    "this Redis user may not use the id index {key:?}: jobs scheduled by id are not served from that shard (allow the key in the user's ACL)"
                );
            }
            self.index_ok[i] = found.is_some();
            if let Some(found) = found
                && found != "none"
                && found != "hash"
            {
                return Ok(Err(format!(
                    "Redis key {key:?} (the id index, named after `key`) holds a {found}, not a hash; remove it, or point `key` elsewhere"
                )));
            }
        }
        for (setting, what, key, want) in expected {
            let found: String = self.call(|con, _| redis::cmd("TYPE").arg(&key).query(con))?;
            if found != "none" && found != want {
                return Ok(Err(format!(
                    "Redis key {key:?} ({what}) holds a {found}, not a {want}; point `{setting}` at another key or remove that one"
                )));
            }
        }
        Ok(Ok(()))
    }

    /// What the daemon needs of the server, checked on every new connection: a
    /// master (a replica is an error, so the loop backs off and asks again, as after
    /// a failover), Lua scripting, and Redis 4.0 or later (variadic `HSET`). A server
    /// that can never do (`Ok(Err(why))`) stops the daemon.
    pub fn check_server(&mut self) -> RedisResult<Result<(), String>> {
        // An answer refused (an ACL without INFO or ROLE, a managed service) leaves
        // that check out; only trouble reaching Redis is an error here.
        let unreachable =
            |e: &redis::RedisError| e.is_io_error() || e.is_timeout() || e.is_connection_dropped();
        let asked: RedisResult<String> =
            self.call(|con, s| on_queue_node(con, &s.keys.queue, redis::cmd("INFO").arg("server")));
        let info = match asked {
            Ok(info) => info,
            Err(e) if unreachable(&e) => return Err(e),
            Err(_) => String::new(),
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        let name = field("server_name").unwrap_or_else(|| "redis".into());
        let version = field("redis_version").unwrap_or_default();
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        // Valkey reports the Redis version it is compatible with (7.2.4) here.
        if major < 4 && !version.is_empty() {
            return Ok(Err(format!(
                "the Redis server reports version {version:?}; delayqs needs Redis 4.0 or later (or Valkey)"
            )));
        }
        // A Cluster routes every keyed command to the master of its slot, and an
        // unkeyed ROLE could land on any node: only a single node is asked.
        let role: Vec<Value> = match &self.target {
            Target::Cluster(_) => vec![Value::BulkString(b"master".to_vec())],
            _ => match self.call(|con, _| redis::cmd("ROLE").query(con)) {
                Ok(role) => role,
                Err(e) if unreachable(&e) => return Err(e),
                Err(_) => vec![Value::BulkString(b"master".to_vec())],
            },
        };
        let role = match role.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => String::new(),
        };
        if role != "master" {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "the server is read-only",
                format!(
                    "{name} {version} is a {role}, not a master: delayqs cannot claim or settle jobs there (point `redis` at the master, or use `sentinel`)"
                ),
            )));
        }
        // Keyed, so that a Cluster asks the queue's node, and so that services that
        // refuse keyless scripts (ElastiCache Serverless) answer as they will to ours.
        let scripting: RedisResult<i64> = self.call(|con, s| {
            redis::cmd("EVAL")
                .arg("return 1")
                .arg(1)
                .arg(&s.keys.queue)
                .query(con)
        });
        // Only a refusal that means "no scripting here" stops the daemon; LOADING,
        // BUSY, MOVED, TRYAGAIN, CLUSTERDOWN and the like pass, and are retried.
        let no_scripting = |e: &redis::RedisError| {
            let text = e.to_string().to_ascii_lowercase();
            [
                "unknown command",
                "noperm",
                "no permission",
                "scripting",
                "disabled",
            ]
            .iter()
            .any(|w| text.contains(w))
        };
        match scripting {
            Ok(_) => Ok(Ok(())),
            Err(e) if !no_scripting(&e) => Err(e),
            Err(e) => Ok(Err(format!(
                "{name} {version} does not run Lua scripts ({e}); delayqs needs scripting (EVAL/EVALSHA): enable it, or use a build with Lua"
            ))),
        }
    }

    /// Redis's `maxmemory-policy`: from `CONFIG GET`, or where that is refused (managed
    /// services rename it, an ACL may deny it) from `INFO memory`. `None` when neither
    /// answers with it.
    pub fn eviction_policy(&mut self) -> RedisResult<Option<String>> {
        // On a Cluster each shard's master has its own; the first that is not
        // `noeviction` is the one to judge.
        let mut policy = None;
        for shard in self.active.clone() {
            let queue = self.names[shard].queue.clone();
            policy = self.eviction_policy_of(&queue)?;
            if policy.as_deref() != Some("noeviction") || !matches!(self.target, Target::Cluster(_))
            {
                break;
            }
        }
        Ok(policy)
    }

    fn eviction_policy_of(&mut self, queue: &str) -> RedisResult<Option<String>> {
        // A refusal is an answer; only trouble reaching Redis is an error here.
        let refused = |e: &redis::RedisError| {
            !(e.is_io_error() || e.is_timeout() || e.is_connection_dropped())
        };
        // The node that holds the queue is the one whose policy matters.
        let config: RedisResult<std::collections::HashMap<String, String>> = self.call(|con, _| {
            on_queue_node(
                con,
                queue,
                redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy"),
            )
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
            self.call(|con, _| on_queue_node(con, queue, redis::cmd("INFO").arg("memory")));
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
        // Each shard's attempts hash, then its id index.
        let shard = self.active[(self.sweep_at / 2) % self.active.len()];
        let hash = if self.sweep_at % 2 == 1 {
            "index"
        } else {
            "attempts"
        };
        if hash == "index" && !self.index_ok[shard] {
            self.sweep_at = (self.sweep_at + 1) % (2 * self.active.len());
            return Ok(0);
        }
        let (cursor, removed): (String, u64) = self.call(|con, s| {
            let keys = &s.names[shard];
            s.sweep
                .key(&keys.queue)
                .key(&keys.inflight)
                .key(&keys.attempts)
                .key(&keys.index_key)
                .arg(&s.sweep_cursor)
                .arg(SWEEP_PAGE)
                .arg(hash)
                .invoke(con)
        })?;
        if cursor == "0" {
            self.sweep_at = (self.sweep_at + 1) % (2 * self.active.len());
        }
        self.sweep_cursor = cursor;
        Ok(removed)
    }

    /// Brings back up to `page` of a resumed flow's parked jobs in one shard; returns
    /// how many came back and how many are left listed.
    pub fn unpark(&mut self, shard: usize, flow: &str, page: usize) -> RedisResult<(u64, u64)> {
        self.call(|con, s| {
            let keys = &s.names[shard];
            s.unpark
                .key(&keys.queue)
                .key(&keys.attempts)
                .key(crate::config::Keys::parked(&keys.queue, flow))
                .arg(page)
                .invoke(con)
        })
    }

    /// Writes this daemon's heartbeat record, standing `life` (`None`: removes it, at a
    /// clean stop), drops those of daemons that stopped beating, and returns Redis's
    /// time and the queue's pause note when it is paused.
    pub fn heartbeat(
        &mut self,
        id: &str,
        record: Option<&str>,
        life: Duration,
    ) -> RedisResult<Beat> {
        let (now, paused, daemons, paused_flows): (
            String,
            Option<String>,
            Vec<String>,
            Vec<String>,
        ) = self.call(|con, s| {
            s.heartbeat
                .key(s.keys.daemons())
                .key(s.keys.paused())
                .key(s.keys.paused_flows())
                .arg(id)
                .arg(record.unwrap_or(""))
                .arg(life.as_secs_f64())
                .invoke(con)
        })?;
        let now = now.parse().map_err(|_| {
            redis::RedisError::from((
                redis::ErrorKind::Parse,
                "heartbeat.lua returned a time that is not a number",
                now,
            ))
        })?;
        Ok(Beat {
            now,
            paused,
            daemons,
            paused_flows,
        })
    }

    /// The queue's state for the metrics file: pending, due by `now`, in flight, failed.
    /// Summed over the shards, one pipeline each (a Cluster routes it by the shard's
    /// slot).
    pub fn gauges(&mut self, now: f64) -> RedisResult<crate::telemetry::metrics::Gauges> {
        let mut sum = crate::telemetry::metrics::Gauges::default();
        for shard in self.active.clone() {
            let (pending, due, inflight, failed): (u64, u64, u64, u64) = self.call(|con, s| {
                let keys = &s.names[shard];
                redis::pipe()
                    .zcard(&keys.queue)
                    .zcount(&keys.queue, "-inf", now)
                    .zcard(&keys.inflight)
                    .llen(&keys.failed)
                    .query(con)
            })?;
            sum.failed += failed;
            sum.pending += pending;
            sum.due += due;
            sum.inflight += inflight;
        }
        Ok(sum)
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

    /// Connects now if there is no connection (or the sentinels named another master),
    /// so that a new connection is known before the round's first real call.
    pub fn connect_if_needed(&mut self) -> RedisResult<()> {
        self.call(|_, _| Ok(()))
    }

    /// Whether a new connection was made since the last time this was asked: the loop
    /// checks the server again on every new connection, however it came about (an
    /// error, a Sentinel switch, a failed metrics read).
    pub fn take_fresh(&mut self) -> bool {
        std::mem::take(&mut self.fresh)
    }

    /// Runs `f` on a connection, connecting first when there is none. Any error drops
    /// the connection: after a timeout or a half-read reply it cannot be trusted, and
    /// the next call reconnects.
    fn call<T>(&mut self, f: impl FnOnce(&mut Conn, &Store) -> RedisResult<T>) -> RedisResult<T> {
        if !self.target.still_master() {
            self.con = None;
        }
        let mut con = match self.con.take() {
            Some(con) => con,
            None => {
                let con = self.target.connect(self.timeout)?;
                self.fresh = true;
                con
            }
        };
        let result = f(&mut con, self);
        if result.is_ok() {
            self.con = Some(con);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};

    /// A real redis-server on a free port, for the store's own calls.
    struct Server(Child, u16);

    impl Server {
        fn start() -> Server {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let program =
                std::env::var("DELAYQS_TEST_SERVER").unwrap_or_else(|_| "redis-server".into());
            let child = Command::new(program)
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                ])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server (make test installs it)");
            let url = format!("redis://127.0.0.1:{port}/");
            for _ in 0..500 {
                let up = redis::Client::open(url.as_str())
                    .and_then(|c| c.get_connection())
                    .is_ok();
                if up {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Server(child, port)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn many_outcomes_go_in_calls_of_under_4000_arguments_and_stale_indexes_stay_true() {
        let server = Server::start();
        let json = format!(r#"{{"redis": "redis://127.0.0.1:{}/"}}"#, server.1);
        let (config, _) = crate::config::parse(&json).unwrap();
        let mut store = Store::new(&config).unwrap();
        let mut con = redis::Client::open(config.redis_url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            .arg(0)
            .query(&mut con)
            .unwrap();
        let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut con).unwrap();
        // No lease matches: every outcome is stale, so the reply names them all.
        let outcomes: Vec<Settle> = (0..2500)
            .map(|i| Settle {
                member: format!("m{i}").into_bytes(),
                id: format!("id{i}"),
                lease: LeaseToken::for_test(&format!("1:1 t.{i}")),
                op: SettleOp::Done,
            })
            .collect();
        let batch = store
            .claim(0, &outcomes, 8, Duration::from_secs(60), "t", 1 << 20)
            .unwrap();
        assert_eq!(batch.stale, (0..2500).collect::<Vec<_>>());
        let log: Vec<Vec<redis::Value>> = redis::cmd("SLOWLOG")
            .arg("GET")
            .arg(-1)
            .query(&mut con)
            .unwrap();
        let mut calls = Vec::new();
        for entry in log {
            let Some(redis::Value::Array(args)) = entry.get(3) else {
                continue;
            };
            let name = match args.first() {
                Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).to_lowercase(),
                _ => String::new(),
            };
            if !name.starts_with("eval") {
                continue;
            }
            // Redis keeps 32 arguments; the last then says how many more there were.
            let more = match args.last() {
                Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b)
                    .strip_prefix("... (")
                    .and_then(|r| r.split(' ').next())
                    .and_then(|n| n.parse::<usize>().ok()),
                _ => None,
            };
            calls.push(more.map_or(args.len(), |m| args.len() - 1 + m));
        }
        // 990 + 990 + 520 outcomes (and the first EVALSHA once more, after NOSCRIPT).
        assert!(calls.len() >= 3, "{calls:?}");
        assert!(calls.iter().all(|&n| n < 4000), "{calls:?}");
    }

    #[test]
    fn key_slots_match_redis() {
        // redis-cli CLUSTER KEYSLOT: 12182 for "foo", and a tag hashes alone.
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{foo}:job_zqueue"), 12182);
        assert_eq!(
            key_slot("123456789"),
            0x31C3,
            "the CRC16/XMODEM check value"
        );
    }
}
