//! Loading and validating `config.json`.
//!
//! Every file written for the old daemon (PROTOCOL §4) loads unchanged. Each key is
//! taken out of the JSON object by a typed getter that knows its range, so a bad value
//! is reported with the key, the value and what is allowed; what is left over at the
//! end is unknown and only warned about. Past this module nothing is stringly typed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::keys::{Keys, MAX_SHARDS, hash_tag};
use crate::config::redact::{self, RedisUrl};
use crate::deliver::allowlist::Allowed;
use crate::deliver::signing::Secret;
pub use crate::deliver::{HttpSettings, SuccessRule};
pub use crate::job::backoff::RetryPolicy;

/// The files tried, in order, when `--config` is not given.
pub const DEFAULT_PATHS: [&str; 2] = ["config/config.json", "/etc/delayqs/config.json"];

/// `timeoutMs` when the config has none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(30_000);

/// The pid file when the config has no `pid`.
pub const DEFAULT_PID_FILE: &str = "/var/log/delayQs/delayqs.pid";

/// The `pid` key as read by [`pid_leniently`] from a file that may not load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidKey {
    /// The file names this pid file.
    Found(PathBuf),
    /// The file has no `pid` key, so the default applies.
    Absent,
}

/// Reads only the `pid` key out of a config's text, however wrong the rest is (a
/// value out of range, or JSON broken elsewhere), for `stop` and `status`. `None`
/// when there is a `pid` key but its value cannot be read as a string.
pub fn pid_leniently(text: &str) -> Option<PidKey> {
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        return match value.get("pid") {
            None if value.is_object() => Some(PidKey::Absent),
            Some(Value::String(s)) => Some(PidKey::Found(PathBuf::from(s))),
            _ => None,
        };
    }
    // Not JSON: look for `"pid": "<string>"` anywhere, a JSON string after the colon.
    let mut seen = false;
    for (at, _) in text.match_indices("\"pid\"") {
        seen = true;
        let rest = text[at + 5..].trim_start();
        let Some(rest) = rest.strip_prefix(':') else {
            continue;
        };
        let mut strings =
            serde_json::Deserializer::from_str(rest.trim_start()).into_iter::<String>();
        if let Some(Ok(s)) = strings.next() {
            return Some(PidKey::Found(PathBuf::from(s)));
        }
    }
    match seen {
        false => Some(PidKey::Absent),
        true => None,
    }
}

/// A validated configuration. Holding one means every value is in range.
#[derive(Debug, Clone)]
pub struct Config {
    /// Redis URL; may hold a password, and shows masked (`Debug`, `Display`).
    /// Unused when `sentinel` is set.
    pub redis_url: RedisUrl,
    /// `sentinel`: find the master through these sentinels instead of `redis`.
    pub sentinel: Option<SentinelSettings>,
    /// `cluster`: the seed nodes of a Redis Cluster, instead of `redis`.
    pub cluster: Option<Vec<RedisUrl>>,
    pub keys: Keys,
    /// Worker threads, each with one HTTP call in flight.
    pub concurrency: usize,
    /// Retries after the first attempt: a job gets `1 + max_retries` attempts.
    pub max_retries: u32,
    pub retry: RetryPolicy,
    /// The longest the loop sleeps before looking for newly added due jobs.
    pub poll_interval: Duration,
    pub http: HttpSettings,
    /// How long a claimed job may stay in flight before any daemon may take it back.
    pub lease: Duration,
    /// Read and write timeout of the Redis connection.
    pub redis_timeout: Duration,
    /// `redisCaFile`: PEM certificates to verify a `rediss://` server against, instead
    /// of the built-in roots.
    pub redis_ca_pem: Option<Vec<u8>>,
    pub log_level: log::LevelFilter,
    /// Log files instead of stderr, when `logDir` is set.
    pub log_files: Option<crate::telemetry::logging::FileLog>,
    /// The pid file `start` writes and `stop` and `status` read (`pid`).
    pub pid_file: PathBuf,
    /// Prometheus text file written every `metrics_interval`, when set.
    pub metrics_file: Option<PathBuf>,
    pub metrics_interval: Duration,
    /// Failures in a row that pause a host (0: never).
    pub host_failure_threshold: u32,
    pub host_pause: Duration,
    /// `flowControl`: limits per callback host and per `flowKey`.
    pub flow: crate::config::flow::FlowControl,
    /// The longest a `Retry-After` from an endpoint may hold a job back.
    pub retry_after_max: Duration,
    /// Members longer than this are malformed, and never leave Redis.
    pub max_job_bytes: usize,
    /// `allowEvictingRedis`: run even when Redis's `maxmemory-policy` may evict keys
    /// (`allkeys-*`), which can drop the queue or the in-flight set.
    pub allow_evicting_redis: bool,
    /// `waitReplicas`, `waitReplicasTimeoutMs`: claims and outcomes wait for replicas.
    pub replication: Replication,
}

/// The most jobs a daemon holds per worker: one in hand, seven waiting
/// (`dispatch::prefetch`). So at most this many outcomes wait for one round.
pub const HELD_PER_WORKER: usize = 8;
/// Outcomes one claim call carries (`store`): 4 arguments each, beside 4 keys and 5
/// others, under ElastiCache Serverless's 3,999 arguments.
pub const OUTCOMES_PER_CALL: usize = 990;

/// What the extra calls of a round cost the lease when its outcomes need more than one
/// (over 123 workers): each of the two claims in the window, a `redisTimeoutMs` per
/// extra call.
pub fn outcome_calls_cost(concurrency: usize, redis_timeout: Duration) -> Duration {
    let calls = (concurrency * HELD_PER_WORKER).div_ceil(OUTCOMES_PER_CALL) as u32;
    2 * calls.saturating_sub(1) * redis_timeout
}

/// `waitReplicas`: after each claim call that wrote something, `WAIT` for this many
/// replicas to have it, at most `timeout`, so that a failover cannot undo a claim or
/// an outcome that was acknowledged. 0: do not wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    pub replicas: u32,
    pub timeout: Duration,
}

impl Replication {
    /// What waiting adds to the lease floor: the waits after two rounds' claim calls,
    /// one per shard each.
    pub fn lease_cost(&self, shards: usize) -> Duration {
        match self.replicas {
            0 => Duration::ZERO,
            _ => 2 * shards as u32 * self.timeout,
        }
    }
}

/// Redis Sentinel: where the sentinels are and how to reach the master they name.
/// Its `Debug` masks the URLs' credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelSettings {
    /// One URL per sentinel, each with its own password and TLS (`rediss://`).
    pub sentinels: Vec<String>,
    /// The master's name, as the sentinels know it: the host part of `master`.
    pub master_name: String,
    /// `master`: a Redis URL whose host is the master's name; its scheme, user,
    /// password and db are used for the data nodes.
    pub master_url: String,
}

impl fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self
            .sentinels
            .iter()
            .map(|u| redact::redis_url(u))
            .collect();
        f.debug_struct("SentinelSettings")
            .field("sentinels", &shown)
            .field("master_name", &self.master_name)
            .field("master_url", &redact::redis_url(&self.master_url))
            .finish()
    }
}

/// What is wrong with a config's text: the key at fault (when one is) and the problem,
/// which names the value and what is allowed. Never repeats a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: Option<String>,
    pub message: String,
}

impl Problem {
    pub fn key(key: &str, message: impl Into<String>) -> Problem {
        Problem {
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    /// The file as a whole is at fault.
    pub fn file(message: impl Into<String>) -> Problem {
        Problem {
            key: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "key `{key}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Why a configuration was refused. Displays as one line naming the file and key.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problem: Problem,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config {}: {}", self.path.display(), self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Every top-level key `parse` reads, old ones included; anything else is unknown. A
/// test checks that `parse` asks for exactly these.
pub const KNOWN_KEYS: &[&str] = &[
    "sentinel",
    "cluster",
    "redis",
    "connections",
    "startTime",
    "concurrency",
    "key",
    "inflightKey",
    "attemptsKey",
    "failKey",
    "retryIdKey",
    "bodyKey",
    "shards",
    "maxRetryNum",
    "retryInterval",
    "retryBaseMs",
    "retryMaxMs",
    "retryJitter",
    "pollIntervalMs",
    "timeoutMs",
    "connectTimeoutMs",
    "successText",
    "successRule",
    "maxResponseBytes",
    "signingSecret",
    "caFile",
    "allowedCallbacks",
    "followRedirects",
    "denyPrivateNetworks",
    "redisTimeoutMs",
    "allowEvictingRedis",
    "redisCaFile",
    "waitReplicas",
    "waitReplicasTimeoutMs",
    "leaseMs",
    "logLevel",
    "pid",
    "hostFailureThreshold",
    "hostPauseMs",
    "flowControl",
    "retryAfterMaxMs",
    "maxJobBytes",
    "metricsFile",
    "metricsIntervalMs",
    "logDir",
    "logKeepDays",
];

/// Something a config file loads with but should not have. Displays as one sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The key, when the warning is that it is unknown (`run --check` refuses those).
    pub unknown_key: Option<String>,
    message: String,
}

impl Warning {
    fn unknown(key: &str) -> Warning {
        Warning {
            unknown_key: Some(key.to_string()),
            message: format!("unknown key `{key}` ignored{}", suggestion(key)),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// " (did you mean `x`?)" for the known key closest to `key`, when one is close
/// enough to be a typo of it; else a pointer to the README.
pub fn suggestion(key: &str) -> String {
    match closest_key(key) {
        Some(known) => format!(" (did you mean `{known}`?)"),
        None => " (no known key is close; see README for the keys)".to_string(),
    }
}

/// The known key at the smallest edit distance from `key` (case ignored), if within
/// a third of its length (at least 1).
fn closest_key(key: &str) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    let limit = (key.chars().count() / 3).max(1);
    KNOWN_KEYS
        .iter()
        .map(|k| (edit_distance(&key, &k.to_ascii_lowercase()), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// The environment variable naming the config file when `--config` is not given.
pub const CONFIG_VAR: &str = "DELAYQS_CONFIG";

/// Finds the config file: the explicit path, else `$DELAYQS_CONFIG` (when set and not
/// empty), else the first of [`DEFAULT_PATHS`] that exists.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os(CONFIG_VAR).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    DEFAULT_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| ConfigError {
            path: PathBuf::from(DEFAULT_PATHS[0]),
            problem: Problem::file(format!(
                "no config file found (tried {}); pass --config PATH or set {CONFIG_VAR}",
                DEFAULT_PATHS.join(", ")
            )),
        })
}

/// Reads and validates a config file. Unknown keys come back as warnings.
pub fn load(path: &Path) -> Result<(Config, Vec<Warning>), ConfigError> {
    let err = |problem: Problem| ConfigError {
        path: path.to_path_buf(),
        problem,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(Problem::file(format!("cannot read: {e}"))))?;
    let (config, mut warnings) = parse(&text).map_err(err)?;
    let sentinel_urls = config
        .sentinel
        .iter()
        .flat_map(|s| s.sentinels.iter().chain(std::iter::once(&s.master_url)));
    let has_secret = !config.http.signing.is_empty()
        || config.redis_url.has_credentials()
        || sentinel_urls.clone().any(|u| redact::has_credentials(u))
        || config
            .cluster
            .iter()
            .flatten()
            .any(RedisUrl::has_credentials);
    let world_readable = std::fs::metadata(path).is_ok_and(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o004 != 0
    });
    if has_secret && world_readable {
        warnings.push(Warning {
            unknown_key: None,
            message: "holds a secret (a Redis password or signingSecret) and every user on this host can read it; chmod o-r it".into(),
        });
    }
    Ok((config, warnings))
}

/// Validates the text of a config file.
pub fn parse(text: &str) -> Result<(Config, Vec<Warning>), Problem> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| Problem::file(format!("not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(Problem::file("expected a JSON object at the top level"));
    };
    let mut f = Fields {
        map,
        #[cfg(test)]
        read: Vec::new(),
    };
    let result = parse_fields(&mut f);
    #[cfg(test)]
    READ.with(|r| *r.borrow_mut() = std::mem::take(&mut f.read));
    result
}

#[cfg(test)]
thread_local! {
    /// The keys the last `parse` on this thread asked for.
    static READ: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn parse_fields(f: &mut Fields) -> Result<(Config, Vec<Warning>), Problem> {
    let sentinel = sentinel_settings(f.take("sentinel"))?;
    if sentinel.is_some() && f.map.contains_key("redis") {
        return Err(Problem::key(
            "sentinel",
            "cannot be combined with `redis`: with Sentinel the master's address comes from the sentinels; put its credentials and db in `sentinel.master`",
        ));
    }
    let cluster = cluster_nodes(f.take("cluster"))?;
    if cluster.is_some() && (sentinel.is_some() || f.map.contains_key("redis")) {
        return Err(Problem::key(
            "cluster",
            "cannot be combined with `redis` or `sentinel`: name the cluster's nodes in `cluster` alone",
        ));
    }
    let redis_url = match f.take("redis") {
        None => "redis://localhost:6379/".to_string(),
        Some(Value::String(url)) => url,
        // Not repeated: it may hold a password.
        Some(_) => return Err(Problem::key("redis", "expected a string (a Redis URL)")),
    };
    if let Err(e) = redis::Client::open(redis_url.as_str()) {
        return Err(Problem::key(
            "redis",
            format!(
                "{:?} is not a usable Redis URL ({e}); expected redis://[user:password@]host:port/db, rediss://… (TLS) or unix:///path[?pass=…]",
                redact::redis_url(&redis_url)
            ),
        ));
    }
    let redis_url = RedisUrl::new(redis_url);
    // Old settings the new design does not use (see README): any value the old daemon
    // took still loads.
    f.any_number("connections")?;
    f.any_number("startTime")?;
    let concurrency = f.integer("concurrency", 2, 1, 1024)? as usize;

    let keys = Keys {
        queue: f.key_name("key", "DelayQs:job_zqueue")?,
        inflight: f.key_name("inflightKey", "DelayQs:inflight")?,
        attempts: f.key_name("attemptsKey", "DelayQs:attempts")?,
        failed: f.key_name("failKey", "DelayQs:fail_job")?,
        old_retry_ids: f.key_name("retryIdKey", "DelayQs:retry_id")?,
        old_bodies: f.key_name("bodyKey", "DelayQs:body")?,
        shards: f.integer("shards", 1, 1, MAX_SHARDS as u64)? as usize,
    };
    let names = [
        ("key", &keys.queue),
        ("inflightKey", &keys.inflight),
        ("attemptsKey", &keys.attempts),
        ("failKey", &keys.failed),
        ("retryIdKey", &keys.old_retry_ids),
        ("bodyKey", &keys.old_bodies),
    ];
    for (i, (a, va)) in names.iter().enumerate() {
        if let Some((b, _)) = names[i + 1..].iter().find(|(_, vb)| vb == va) {
            return Err(Problem::file(format!(
                "keys `{a}` and `{b}` are both {va:?}; each must name its own Redis key"
            )));
        }
    }

    if cluster.is_some() || keys.shards > 1 {
        // Every script touches its keys in one call: on a Cluster they must live in one
        // slot, which only a shared hash tag guarantees. Shards are named by that tag,
        // so they need one on any server.
        let why = if cluster.is_some() {
            "on a Redis Cluster every key a script touches must be in one slot"
        } else {
            "with `shards` above 1 each shard's keys are named by the tag (`{T}` becomes `{T:1}`, …)"
        };
        let tag = hash_tag(&keys.queue);
        let scripted = [
            ("key", &keys.queue),
            ("inflightKey", &keys.inflight),
            ("attemptsKey", &keys.attempts),
            ("failKey", &keys.failed),
        ];
        if let Some((name, value)) = scripted
            .iter()
            .find(|(_, v)| tag.is_none() || hash_tag(v) != tag)
        {
            return Err(Problem::key(
                name,
                format!(
                    "{value:?} does not share the queue's hash tag: {why}, so name them with one tag, e.g. `key` \"{{DelayQs}}:job_zqueue\", `inflightKey` \"{{DelayQs}}:inflight\", `attemptsKey` \"{{DelayQs}}:attempts\", `failKey` \"{{DelayQs}}:fail_job\""
                ),
            ));
        }
    }

    let max_retries = f.integer("maxRetryNum", 3, 0, 1000)? as u32;
    // The old daemon polled its retry list every `retryInterval` seconds; that is
    // the closest thing it had to a first retry delay, so it seeds the backoff base.
    const WEEK_MS: u64 = 7 * 86_400_000;
    let retry_interval_s = f.integer("retryInterval", 5, 0, u64::from(u32::MAX))?;
    let base = f.millis(
        "retryBaseMs",
        (retry_interval_s * 1000).min(WEEK_MS),
        0,
        WEEK_MS,
    )?;
    let cap_default = (base.as_millis() as u64).max(3_600_000);
    let retry = RetryPolicy {
        base,
        cap: f.millis("retryMaxMs", cap_default, 0, WEEK_MS)?,
        jitter: f.number("retryJitter", 0.2, 0.0, 1.0)?,
    };
    if retry.cap < retry.base {
        return Err(Problem::key(
            "retryMaxMs",
            format!(
                "{} is below `retryBaseMs` {}; the cap must be at least the base",
                retry.cap.as_millis(),
                retry.base.as_millis()
            ),
        ));
    }

    let poll_interval = f.millis("pollIntervalMs", 50, 1, 10_000)?;
    let timeout = f.millis(
        "timeoutMs",
        DEFAULT_TIMEOUT.as_millis() as u64,
        1,
        3_600_000,
    )?;
    let connect_default = (timeout.as_millis() as u64).min(5_000);
    let connect_timeout = f.millis("connectTimeoutMs", connect_default, 1, 600_000)?;
    if connect_timeout > timeout {
        return Err(Problem::key(
            "connectTimeoutMs",
            format!(
                "{} exceeds `timeoutMs` {}; the connect timeout is part of the total",
                connect_timeout.as_millis(),
                timeout.as_millis()
            ),
        ));
    }
    let success_text = f.string("successText", "success")?;
    if success_text.is_empty() {
        return Err(Problem::key("successText", "must not be empty"));
    }
    let rule = f.string("successRule", "body")?;
    let success = match rule.as_str() {
        "body" => SuccessRule::BodyContains(success_text),
        "2xx" => SuccessRule::Status2xx,
        "2xx+body" => SuccessRule::Status2xxAndBodyContains(success_text),
        other => {
            return Err(Problem::key(
                "successRule",
                format!(
                    "{other:?} is not a rule; expected \"body\" (the old daemon's: body contains `successText`), \"2xx\" or \"2xx+body\""
                ),
            ));
        }
    };
    let max_response_bytes = f.integer("maxResponseBytes", 65_536, 0, 16 << 20)?;
    if max_response_bytes == 0 && success != SuccessRule::Status2xx {
        return Err(Problem::key(
            "maxResponseBytes",
            format!(
                "0 reads no body, so `successRule` {rule:?} could never succeed; use at least the length of `successText`"
            ),
        ));
    }
    let signing = f
        .strings("signingSecret")?
        .iter()
        .map(|s| Secret::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Problem::key("signingSecret", e.to_string()))?;
    let ca_file = f.string("caFile", "")?;
    let ca_pem = match ca_file.as_str() {
        "" => None,
        path => Some(read_ca_file("caFile", path)?),
    };
    let allowed = f
        .strings("allowedCallbacks")?
        .iter()
        .map(|e| Allowed::parse(e))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Problem::key("allowedCallbacks", e.to_string()))?;
    let http = HttpSettings {
        allowed,
        follow_redirects: f.integer("followRedirects", 0, 0, 10)? as u32,
        ca_pem,
        signing,
        deny_private_networks: f.boolean("denyPrivateNetworks", false)?,
        connect_timeout,
        timeout,
        max_response_bytes,
        success,
    };

    let redis_timeout = f.millis("redisTimeoutMs", 5_000, 10, 600_000)?;
    let allow_evicting_redis = f.boolean("allowEvictingRedis", false)?;
    let redis_ca_pem = match f.string("redisCaFile", "")?.as_str() {
        "" => None,
        path => Some(read_ca_file("redisCaFile", path)?),
    };
    let wait_replicas = f.integer("waitReplicas", 0, 0, 16)? as u32;
    let wait_timeout = f.millis("waitReplicasTimeoutMs", 100, 1, 60_000)?;
    if wait_replicas > 0 && wait_timeout >= redis_timeout {
        return Err(Problem::key(
            "waitReplicasTimeoutMs",
            format!(
                "{} must be below `redisTimeoutMs` {}: WAIT holds the connection that long, and the read would time out first",
                wait_timeout.as_millis(),
                redis_timeout.as_millis()
            ),
        ));
    }
    let replication = Replication {
        replicas: wait_replicas,
        timeout: wait_timeout,
    };
    let floor = lease_floor(timeout, redis_timeout, poll_interval, keys.shards)
        + replication.lease_cost(keys.shards)
        + outcome_calls_cost(concurrency, redis_timeout);
    let lease_default = floor.max(timeout + Duration::from_secs(30)) + Duration::from_secs(5);
    let lease = f.millis("leaseMs", lease_default.as_millis() as u64, 100, 86_400_000)?;
    if lease <= floor {
        let calls = redis_calls_before_write(keys.shards);
        return Err(Problem::key(
            "leaseMs",
            format!(
                "{} must exceed `timeoutMs` + {calls} × `redisTimeoutMs` + `pollIntervalMs`{} = {} ms (the callback, then up to {calls} Redis calls and a poll before its outcome is written), or a slow callback would be taken back and sent twice",
                lease.as_millis(),
                if replication.replicas > 0 {
                    format!(" + {} × `waitReplicasTimeoutMs`", 2 * keys.shards)
                } else {
                    String::new()
                },
                floor.as_millis()
            ),
        ));
    }

    let level = f.string("logLevel", "info")?;
    let log_level = match level.to_ascii_lowercase().as_str() {
        "off" => log::LevelFilter::Off,
        "error" => log::LevelFilter::Error,
        "warn" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        _ => {
            return Err(Problem::key(
                "logLevel",
                format!(
                    "{level:?} is not a level; expected one of off, error, warn, info, debug, trace"
                ),
            ));
        }
    };
    let pid_file = PathBuf::from(f.string("pid", DEFAULT_PID_FILE)?);
    let host_failure_threshold = f.integer("hostFailureThreshold", 10, 0, 100_000)? as u32;
    let host_pause = f.millis("hostPauseMs", 30_000, 1, 86_400_000)?;
    let flow = match f.take("flowControl") {
        None => crate::config::flow::FlowControl::default(),
        Some(v) => crate::config::flow::FlowControl::parse(v)?,
    };
    let retry_after_max = f.millis("retryAfterMaxMs", 3_600_000, 0, WEEK_MS)?;
    let max_job_bytes = f.integer("maxJobBytes", 1 << 20, 1024, 512 << 20)? as usize;
    let metrics_file = f.string("metricsFile", "")?;
    let metrics_file = (!metrics_file.is_empty()).then(|| PathBuf::from(metrics_file));
    let metrics_interval = f.millis("metricsIntervalMs", 5_000, 100, 3_600_000)?;
    let log_dir = f.string("logDir", "")?;
    let keep_days = f.integer("logKeepDays", 30, 1, 36_500)? as usize;
    let log_files = (!log_dir.is_empty()).then(|| crate::telemetry::logging::FileLog {
        dir: PathBuf::from(log_dir),
        keep_days,
    });

    let warnings = f.map.keys().map(|k| Warning::unknown(k)).collect();
    let config = Config {
        redis_url,
        sentinel,
        cluster,
        keys,
        concurrency,
        max_retries,
        retry,
        poll_interval,
        http,
        lease,
        redis_timeout,
        redis_ca_pem,
        log_level,
        log_files,
        pid_file,
        metrics_file,
        metrics_interval,
        host_failure_threshold,
        host_pause,
        flow,
        retry_after_max,
        max_job_bytes,
        allow_evicting_redis,
        replication,
    };
    Ok((config, warnings))
}

impl Config {
    /// Total attempts a job gets: the first one plus `maxRetryNum` retries.
    pub fn max_attempts(&self) -> u32 {
        self.max_retries + 1
    }

    /// See [`lease_floor`]; with `waitReplicas`, each of the two claim calls in the
    /// window may also wait for its replicas, and with many workers a round's
    /// outcomes may need more than one call ([`outcome_calls_cost`]).
    pub fn lease_floor(&self) -> Duration {
        self.lease_floor_for(self.keys.shards)
    }

    /// The floor for a round over `shards` shards' calls: more than the setting while
    /// shards a larger setting left are drained.
    pub fn lease_floor_for(&self, shards: usize) -> Duration {
        lease_floor(
            self.http.timeout,
            self.redis_timeout,
            self.poll_interval,
            shards,
        ) + self.replication.lease_cost(shards)
            + outcome_calls_cost(self.concurrency, self.redis_timeout)
    }

    /// A client for the configured Redis, with `redisCaFile` when set.
    pub fn redis_client(&self) -> redis::RedisResult<redis::Client> {
        match &self.redis_ca_pem {
            None => redis::Client::open(self.redis_url.as_str()),
            Some(pem) => redis::Client::build_with_tls(
                self.redis_url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
        }
    }

    /// The Redis URL to show: its credentials masked ([`redact::redis_url`]).
    pub fn redis_url_redacted(&self) -> String {
        if let Some(nodes) = &self.cluster {
            let shown: Vec<String> = nodes.iter().map(RedisUrl::redacted).collect();
            return format!("cluster {}", shown.join(", "));
        }
        match &self.sentinel {
            None => self.redis_url.redacted(),
            Some(s) => format!(
                "master {:?} of sentinels {}",
                s.master_name,
                s.sentinels
                    .iter()
                    .map(|u| redact::redis_url(u))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Redis calls, each bounded by `redisTimeoutMs`, that can come between an outcome
/// reaching the main loop and its write, while Redis answers (`Dispatcher::step` and
/// `main_loop`). The worst case is an outcome that arrives just after a round took
/// the outcomes in: that round's sweep (once a second) and its claim calls (one per
/// shard), then the metrics gauges (`metricsFile`, one call per shard), which start
/// inside the wait for the next round but may end after it, then the next round's
/// sweep (again due when that wait or the calls took a second) and its claim calls, the
/// last of which may be the one that writes the outcome: 5 calls with one shard. The
/// unclaims and the key and policy checks run only after Redis trouble, which a lease
/// does not promise to outlast.
pub fn redis_calls_before_write(shards: usize) -> u32 {
    3 * shards as u32 + 2
}

/// What a lease must outlast once its job starts: the call (`timeoutMs`), the wait for
/// the next round (at most `pollIntervalMs`), and the Redis calls before the outcome's
/// write ([`redis_calls_before_write`] × `redisTimeoutMs`). A claimed job that has not
/// started by lease − this goes back untried (`Delivery::start_by`), and a lease no
/// longer than this is refused, or a slow success would be taken back and sent twice.
pub fn lease_floor(
    timeout: Duration,
    redis_timeout: Duration,
    poll: Duration,
    shards: usize,
) -> Duration {
    timeout + redis_calls_before_write(shards) * redis_timeout + poll
}

/// `cluster`: a list of seed nodes' URLs (any few of the cluster's masters; the rest is
/// discovered), each checked here as a Redis URL.
fn cluster_nodes(value: Option<Value>) -> Result<Option<Vec<RedisUrl>>, Problem> {
    let Some(value) = value else {
        return Ok(None);
    };
    let bad = || {
        Problem::key(
            "cluster",
            "expected a non-empty list of Redis URLs of the cluster's nodes, e.g. [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]",
        )
    };
    let Value::Array(list) = value else {
        return Err(bad());
    };
    if list.is_empty() {
        return Err(bad());
    }
    list.into_iter()
        .map(|v| match v {
            Value::String(url) => match redis::Client::open(url.as_str()) {
                Ok(_) => Ok(RedisUrl::new(url)),
                Err(e) => Err(Problem::key(
                    "cluster",
                    format!(
                        "{:?} is not a usable Redis URL ({e})",
                        redact::redis_url(&url)
                    ),
                )),
            },
            _ => Err(bad()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The `sentinel` object: `sentinels` (a list of URLs) and `master` (a URL whose host
/// is the master's name). Every value is checked as a Redis URL here, so that a typo
/// stops the start, not the first failover.
fn sentinel_settings(value: Option<Value>) -> Result<Option<SentinelSettings>, Problem> {
    let Some(value) = value else {
        return Ok(None);
    };
    let key = "sentinel";
    let Value::Object(mut map) = value else {
        return Err(Problem::key(
            key,
            "expected an object: {\"sentinels\": [\"redis://host:26379\", …], \"master\": \"redis://[:password@]mastername/0\"}",
        ));
    };
    let usable = |what: &str, url: &str| {
        redis::Client::open(url).map(|_| ()).map_err(|e| {
            Problem::key(
                key,
                format!(
                    "{what} {:?} is not a usable Redis URL ({e})",
                    redact::redis_url(url)
                ),
            )
        })
    };
    let sentinels = match map.remove("sentinels") {
        Some(Value::Array(list)) if !list.is_empty() => list
            .into_iter()
            .map(|v| match v {
                Value::String(url) => usable("`sentinels` entry", &url).map(|()| url),
                _ => Err(Problem::key(
                    key,
                    "`sentinels` must be a list of Redis URLs",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(Problem::key(
                key,
                "`sentinels` must be a non-empty list of Redis URLs, one per sentinel",
            ));
        }
    };
    let master_url = match map.remove("master") {
        Some(Value::String(url)) => url,
        _ => {
            return Err(Problem::key(
                key,
                "`master` must be a Redis URL whose host is the master's name, e.g. \"redis://:password@mymaster/0\"",
            ));
        }
    };
    usable("`master`", &master_url)?;
    let master_name =
        match redis::IntoConnectionInfo::into_connection_info(master_url.as_str())
            .map(|info| info.addr().clone())
        {
            Ok(
                redis::ConnectionAddr::Tcp(host, _) | redis::ConnectionAddr::TcpTls { host, .. },
            ) if !host.is_empty() => host,
            _ => {
                return Err(Problem::key(
                    key,
                    "`master` must be a redis:// or rediss:// URL whose host is the master's name",
                ));
            }
        };
    if let Some(unknown) = map.keys().next() {
        return Err(Problem::key(
            key,
            format!("unknown key `{unknown}` (expected `sentinels` and `master`)"),
        ));
    }
    Ok(Some(SentinelSettings {
        sentinels,
        master_name,
        master_url,
    }))
}

/// Reads a PEM file and checks it holds at least one certificate.
fn read_ca_file(key: &str, path: &str) -> Result<Vec<u8>, Problem> {
    let pem =
        std::fs::read(path).map_err(|e| Problem::key(key, format!("cannot read {path}: {e}")))?;
    let certs = ureq::tls::parse_pem(&pem)
        .filter(|item| matches!(item, Ok(ureq::tls::PemItem::Certificate(_))))
        .count();
    if certs == 0 {
        return Err(Problem::key(
            key,
            format!("{path} holds no PEM certificate"),
        ));
    }
    Ok(pem)
}

/// The config object, consumed key by key.
struct Fields {
    map: Map<String, Value>,
    /// Every key asked for, present or not: checked against [`KNOWN_KEYS`] in a test.
    #[cfg(test)]
    read: Vec<String>,
}

impl Fields {
    fn take(&mut self, key: &str) -> Option<Value> {
        #[cfg(test)]
        self.read.push(key.to_string());
        self.map.remove(key)
    }

    fn string(&mut self, key: &str, default: &str) -> Result<String, Problem> {
        match self.take(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(Problem::key(key, format!("expected a string, got {other}"))),
        }
    }

    fn boolean(&mut self, key: &str, default: bool) -> Result<bool, Problem> {
        match self.take(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(b),
            Some(other) => Err(Problem::key(
                key,
                format!("expected true or false, got {other}"),
            )),
        }
    }

    /// A string or a list of strings; absent is an empty list. Values are not
    /// repeated in errors: they may be secrets.
    fn strings(&mut self, key: &str) -> Result<Vec<String>, Problem> {
        match self.take(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s]),
            Some(Value::Array(list)) => list
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(Problem::key(key, "expected strings in the list")),
                })
                .collect(),
            Some(_) => Err(Problem::key(key, "expected a string or a list of strings")),
        }
    }

    fn key_name(&mut self, key: &str, default: &str) -> Result<String, Problem> {
        let name = self.string(key, default)?;
        if name.is_empty() {
            return Err(Problem::key(key, "the Redis key name must not be empty"));
        }
        Ok(name)
    }

    fn integer(&mut self, key: &str, default: u64, min: u64, max: u64) -> Result<u64, Problem> {
        let Some(value) = self.take(key) else {
            return Ok(default);
        };
        match value.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(Problem::key(
                key,
                format!("expected a whole number from {min} to {max}, got {value}"),
            )),
        }
    }

    fn millis(&mut self, key: &str, default: u64, min: u64, max: u64) -> Result<Duration, Problem> {
        self.integer(key, default, min, max)
            .map(Duration::from_millis)
    }

    /// A key that is only accepted: any JSON number will do.
    fn any_number(&mut self, key: &str) -> Result<(), Problem> {
        match self.take(key) {
            None | Some(Value::Number(_)) => Ok(()),
            Some(other) => Err(Problem::key(key, format!("expected a number, got {other}"))),
        }
    }

    fn number(&mut self, key: &str, default: f64, min: f64, max: f64) -> Result<f64, Problem> {
        let Some(value) = self.take(key) else {
            return Ok(default);
        };
        match value.as_f64() {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(Problem::key(
                key,
                format!("expected a number from {min} to {max}, got {value}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD_DAEMON_CONFIG: &str = r#"{
      "redis": "redis://localhost:6379/",
      "connections": 4,
      "concurrency": 2,
      "startTime": 0,
      "key": "DelayQs:job_zqueue",
      "retryIdKey": "DelayQs:retry_id",
      "bodyKey": "DelayQs:body",
      "failKey": "DelayQs:fail_job",
      "maxRetryNum": 3,
      "retryInterval" : 5,
      "pid" : "/var/log/delayQs/delayqs.pid"
    }"#;

    #[test]
    fn old_daemon_config_loads_without_warnings() {
        let (c, warnings) = parse(OLD_DAEMON_CONFIG).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c.concurrency, 2);
        assert_eq!(c.max_attempts(), 4);
        assert_eq!(c.keys.queue, "DelayQs:job_zqueue");
        assert_eq!(c.retry.base, Duration::from_secs(5));
        assert_eq!(c.http.success, SuccessRule::BodyContains("success".into()));
    }

    #[test]
    fn empty_object_takes_defaults() {
        let (c, _) = parse("{}").unwrap();
        assert_eq!(c.poll_interval, Duration::from_millis(50));
        assert_eq!(c.keys.inflight, "DelayQs:inflight");
        assert_eq!(c.lease, Duration::from_secs(65));
    }

    #[test]
    fn bad_value_names_key_value_and_range() {
        let e = parse(r#"{"concurrency": -3}"#).unwrap_err().to_string();
        assert_eq!(
            e,
            "key `concurrency`: expected a whole number from 1 to 1024, got -3"
        );
        let e = parse(r#"{"successRule": "always"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`successRule`") && e.contains("\"always\""),
            "{e}"
        );
    }

    #[test]
    fn any_old_daemon_value_loads() {
        let (c, _) = parse(
            r#"{"retryInterval": 7200, "connections": 0, "startTime": -5, "concurrency": 1}"#,
        )
        .unwrap();
        assert_eq!(c.retry.base, Duration::from_secs(7200));
        assert_eq!(c.retry.cap, Duration::from_secs(7200));
        let (c, _) = parse(r#"{"retryInterval": 100000000}"#).unwrap();
        assert_eq!(c.retry.base, Duration::from_secs(7 * 86_400));
    }

    #[test]
    fn reading_no_body_needs_the_status_rule() {
        assert!(parse(r#"{"maxResponseBytes": 0}"#).is_err());
        assert!(parse(r#"{"maxResponseBytes": 0, "successRule": "2xx"}"#).is_ok());
    }

    #[test]
    fn signing_secrets_load_and_are_never_echoed() {
        let (c, _) =
            parse(r#"{"signingSecret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}"#).unwrap();
        assert_eq!(c.http.signing.len(), 1);
        let (c, _) = parse(
            r#"{"signingSecret": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]}"#,
        )
        .unwrap();
        assert_eq!(c.http.signing.len(), 2);
        assert!(
            !format!("{c:?}").contains("MfKQ9r8"),
            "Debug shows a secret"
        );
        let e = parse(r#"{"signingSecret": "hunter2hunter2"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`signingSecret`") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn pid_is_read_from_a_file_that_does_not_load() {
        let found = |p: &str| Some(PidKey::Found(PathBuf::from(p)));
        assert_eq!(
            pid_leniently(r#"{"pid": "/a.pid", "concurrency": -3}"#),
            found("/a.pid")
        );
        assert_eq!(
            pid_leniently(r#"{"concurrency": 2, "pid" : "/b.pid","#),
            found("/b.pid")
        );
        assert_eq!(
            pid_leniently(r#"{"key": "pid", "pid": "/c.pid" x"#),
            found("/c.pid")
        );
        assert_eq!(pid_leniently(r#"{"concurrency": 2,"#), Some(PidKey::Absent));
        assert_eq!(
            pid_leniently(r#"{"concurrency": -3}"#),
            Some(PidKey::Absent)
        );
        assert_eq!(pid_leniently(r#"{"pid": 3}"#), None);
        assert_eq!(pid_leniently(r#"{"pid": /x"#), None);
    }

    #[test]
    fn parse_reads_exactly_the_known_keys() {
        let mut read = std::collections::BTreeSet::new();
        // Each form takes its own path through `parse`; together they ask for every key.
        for text in [
            "{}",
            r#"{"sentinel": {"sentinels": ["redis://127.0.0.1:26379"], "master": "redis://m/0"}}"#,
            r#"{"cluster": ["redis://127.0.0.1:7000"], "key": "{q}:a", "inflightKey": "{q}:b", "attemptsKey": "{q}:c", "failKey": "{q}:d"}"#,
        ] {
            parse(text).unwrap();
            read.extend(READ.with(|r| r.borrow().clone()));
        }
        for key in &read {
            assert!(
                KNOWN_KEYS.contains(&key.as_str()),
                "`{key}` is read but not in KNOWN_KEYS"
            );
        }
        for key in KNOWN_KEYS {
            assert!(
                read.contains(*key),
                "`{key}` is in KNOWN_KEYS but parse never reads it"
            );
        }
    }

    #[test]
    fn unknown_keys_suggest_the_closest_known_one() {
        assert_eq!(edit_distance("concurency", "concurrency"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(closest_key("concurency"), Some("concurrency"));
        assert_eq!(closest_key("logdir"), Some("logDir"));
        assert_eq!(closest_key("timeout"), Some("timeoutMs"));
        assert_eq!(closest_key("zzzzzzzzzz"), None);
    }

    #[test]
    fn unknown_keys_warn() {
        let (_, warnings) = parse(r#"{"concurency": 3}"#).unwrap();
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].unknown_key.as_deref(), Some("concurency"));
        assert!(
            warnings[0]
                .to_string()
                .contains("`concurency` ignored (did you mean `concurrency`?)")
        );
    }

    #[test]
    fn shared_key_names_are_refused() {
        let e = parse(r#"{"failKey": "DelayQs:job_zqueue"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`key` and `failKey`"), "{e}");
    }

    #[test]
    fn short_timeout_shortens_the_default_connect_timeout() {
        let (c, _) = parse(r#"{"timeoutMs": 2000}"#).unwrap();
        assert_eq!(c.http.connect_timeout, Duration::from_millis(2000));
        let e = parse(r#"{"timeoutMs": 2000, "connectTimeoutMs": 3000}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`connectTimeoutMs`"), "{e}");
    }

    #[test]
    fn lease_must_outlast_timeout() {
        // 5000 + 5 × 5000 + 50: the callback, five Redis calls and a poll.
        let e = parse(r#"{"timeoutMs": 5000, "leaseMs": 30000}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`leaseMs`") && e.contains("30050 ms"), "{e}");
        assert!(e.contains("5 × `redisTimeoutMs`"), "{e}");
        assert!(parse(r#"{"timeoutMs": 5000, "leaseMs": 30051}"#).is_ok());
        let (c, _) =
            parse(r#"{"timeoutMs": 5000, "redisTimeoutMs": 100, "leaseMs": 5600}"#).unwrap();
        assert_eq!(c.lease, Duration::from_millis(5600));
        let e = parse(r#"{"timeoutMs": 5000, "redisTimeoutMs": 100, "leaseMs": 5550}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("= 5550 ms"), "{e}");
        // Outcomes may wait a poll interval for their round: the lease covers it.
        let slow_poll =
            r#"{"timeoutMs": 5000, "redisTimeoutMs": 100, "pollIntervalMs": 500, "leaseMs": 5600}"#;
        let e = parse(slow_poll).unwrap_err().to_string();
        assert!(e.contains("`pollIntervalMs` = 6000 ms"), "{e}");
    }

    #[test]
    fn bad_redis_url_is_refused_without_its_password() {
        let e = parse(r#"{"redis": "http://:hunter2@host/"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`redis`"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_redis_url_that_does_not_parse_is_refused_without_its_password() {
        // `/`, `#` and `?` end the authority for the parser, so this does not parse.
        for url in [
            "redis://:pa/ss#w?rd@127.0.0.1:1/",
            "redis://:pw@h:notaport/",
        ] {
            let e = parse(&format!(r#"{{"redis": {url:?}}}"#))
                .unwrap_err()
                .to_string();
            assert!(e.contains("`redis`"), "{e}");
            for secret in ["pa/ss", "w?rd", "ss#w", ":pw@"] {
                assert!(!e.contains(secret), "{e}");
            }
        }
    }

    #[test]
    fn a_socket_password_shows_nowhere_and_counts_as_a_secret() {
        let (c, _) = parse(r#"{"redis": "unix:///r.sock?pass=pw-sock-1"}"#).unwrap();
        assert!(c.redis_url.has_credentials());
        assert_eq!(c.redis_url_redacted(), "unix:///r.sock?pass=***");
        assert!(!format!("{c:?}").contains("pw-sock-1"), "Debug shows it");
    }

    #[test]
    fn sentinel_form_loads_and_is_shown_without_passwords() {
        let (c, _) = parse(
            r#"{"sentinel": {"sentinels": ["redis://:s3cret@10.0.0.1:26379", "redis://10.0.0.2:26379"], "master": "redis://:datapw@jobs/2"}}"#,
        )
        .unwrap();
        let s = c.sentinel.as_ref().unwrap();
        assert_eq!(s.master_name, "jobs");
        assert_eq!(s.sentinels.len(), 2);
        let shown = c.redis_url_redacted();
        assert!(
            shown.contains("\"jobs\"") && shown.contains("10.0.0.2:26379"),
            "{shown}"
        );
        assert!(
            !shown.contains("s3cret") && !shown.contains("datapw"),
            "{shown}"
        );
    }

    #[test]
    fn sentinel_form_mistakes_are_refused() {
        for (json, why) in [
            (
                r#"{"sentinel": {"sentinels": [], "master": "redis://m/0"}}"#,
                "non-empty list",
            ),
            (
                r#"{"sentinel": {"sentinels": ["redis://h:1"]}}"#,
                "`master`",
            ),
            (
                r#"{"sentinel": {"sentinels": ["http://h:1"], "master": "redis://m/0"}}"#,
                "not a usable Redis URL",
            ),
            (
                r#"{"sentinel": {"sentinels": ["redis://h:1"], "master": "redis://m/0", "nodes": 1}}"#,
                "unknown key `nodes`",
            ),
            (
                r#"{"redis": "redis://h/", "sentinel": {"sentinels": ["redis://h:1"], "master": "redis://m/0"}}"#,
                "cannot be combined",
            ),
            (r#"{"sentinel": "redis://h:1"}"#, "expected an object"),
        ] {
            let e = parse(json).unwrap_err().to_string();
            assert!(e.contains("`sentinel`") && e.contains(why), "{json}: {e}");
        }
    }
}
