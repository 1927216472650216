//! The daemons serving a queue, and pausing it: `daemons`, `pause`, `resume`, and the
//! heartbeat lookup behind `status`. Each daemon rewrites its record in the
//! `<key>:daemons` hash every 2 s (`dispatch::main_loop::beat`, `heartbeat.lua`); a
//! record carries its expiry in front, so a daemon that died drops out by itself.

use std::time::Duration;

use redis::Commands;
use serde_json::{Value, json};

use crate::cli::admin::{AdminResult, Output};
use crate::cli::error::Error;
use crate::config::Config;
use crate::dispatch::hostname;
use crate::store::Conn;
use crate::timefmt::{human, rfc3339};

/// A daemon's heartbeat record as it wrote it, and whether it still stands.
pub struct Record {
    pub fields: Value,
    pub expires: f64,
}

impl Record {
    pub(super) fn parse(line: &str) -> Option<Record> {
        let (expires, json) = line.split_once(' ')?;
        Some(Record {
            expires: expires.parse().ok()?,
            fields: serde_json::from_str(json).ok()?,
        })
    }

    fn num(&self, name: &str) -> f64 {
        self.fields[name].as_f64().unwrap_or(0.0)
    }
}

fn connect(config: &Config) -> Result<(Conn, String), Error> {
    let url = config.redis_url_redacted();
    let con = crate::store::open(config).map_err(|e| Error::redis(&url, &e))?;
    Ok((con, url))
}

fn redis_now(con: &mut Conn, url: &str) -> Result<f64, Error> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query(con)
        .map_err(|e| Error::redis(url, &e))?;
    Ok(secs as f64 + micros as f64 / 1e6)
}

/// The records of the daemons beating now, oldest first.
pub fn live_records(con: &mut Conn, config: &Config, url: &str) -> Result<Vec<Record>, Error> {
    let now = redis_now(con, url)?;
    let all: Vec<(String, String)> = con
        .hgetall(config.keys.daemons())
        .map_err(|e| Error::redis(url, &e))?;
    let mut live: Vec<Record> = all
        .iter()
        .filter_map(|(_, line)| Record::parse(line))
        .filter(|r| r.expires >= now)
        .collect();
    live.sort_by(|a, b| a.num("started").total_cmp(&b.num("started")));
    Ok(live)
}

/// The queue's pause note, when it is paused.
pub fn pause_note(con: &mut Conn, config: &Config, url: &str) -> Result<Option<Value>, Error> {
    let note: Option<String> = con
        .get(config.keys.paused())
        .map_err(|e| Error::redis(url, &e))?;
    Ok(note.map(|n| serde_json::from_str(&n).unwrap_or(Value::String(n))))
}

pub(super) fn describe_pause(note: &Value) -> String {
    let since = note["since"].as_f64().map(rfc3339).unwrap_or_default();
    let by = note["by"].as_str().unwrap_or("?");
    match note["reason"].as_str() {
        Some(reason) => format!("paused since {since} by {by}: {reason}"),
        None => format!("paused since {since} by {by}"),
    }
}

/// `daemons`: every daemon beating on this queue.
pub fn daemons(config: &Config) -> AdminResult {
    let (mut con, url) = connect(config)?;
    let now = redis_now(&mut con, &url)?;
    let live = live_records(&mut con, config, &url)?;
    let paused = pause_note(&mut con, config, &url)?;
    let mut rows = vec![
        [
            "HOST",
            "PID",
            "VERSION",
            "UP",
            "LAST ROUND",
            "BUSY",
            "DELIVERED",
            "FAILED",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in &live {
        let f = &r.fields;
        let ago = |t: f64| match t {
            0.0 => "never".to_string(),
            t => format!("{} ago", human(secs(now - t))),
        };
        rows.push(vec![
            f["host"].as_str().unwrap_or("?").to_string(),
            f["pid"].to_string(),
            f["version"].as_str().unwrap_or("?").to_string(),
            human(secs(now - r.num("started"))),
            ago(r.num("lastRound")),
            format!("{}/{}", f["busy"], f["workers"]),
            f["delivered"].to_string(),
            f["failed"].to_string(),
        ]);
    }
    let mut text = match live.len() {
        0 => format!(
            "no daemon serves {:?}: none has beaten in the last 10 s\n",
            config.keys.queue
        ),
        n => format!(
            "{n} daemon{} serve{} {:?}\n{}",
            if n == 1 { "" } else { "s" },
            if n == 1 { "s" } else { "" },
            config.keys.queue,
            crate::cli::admin::format_table(&rows)
        ),
    };
    if let Some(note) = &paused {
        text.push_str(&format!("the queue is {}\n", describe_pause(note)));
    }
    let records: Vec<Value> = live.iter().map(|r| r.fields.clone()).collect();
    Ok(Output {
        json: json!({"queue": config.keys.queue, "daemons": records, "paused": paused}),
        text,
        shortfall: None,
    })
}

/// `pause`: every daemon on the queue stops claiming at its next heartbeat (2 s at
/// most); outcomes of calls in flight are still written. With a flow (`--host`,
/// `--flow`), every daemon parks that flow's jobs instead, as they come due: a day
/// ahead in the queue and listed in the flow's parked set of their shard, without a
/// call and without using an attempt. Survives restarts.
pub fn pause(config: &Config, flow: Option<&FlowArg>, reason: Option<&str>) -> AdminResult {
    let (mut con, url) = connect(config)?;
    let now = redis_now(&mut con, &url)?;
    let by = format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "?".into()),
        hostname()
    );
    let mut note = json!({"since": now, "by": by});
    if let Some(reason) = reason {
        note["reason"] = json!(reason);
    }
    let already = match flow {
        None => pause_note(&mut con, config, &url)?,
        Some(f) => {
            note[f.kind()] = json!(f.name());
            let key = config.keys.paused_flows();
            let set: u64 = con
                .hset_nx(&key, f.name(), note.to_string())
                .map_err(|e| Error::redis(&url, &e))?;
            match set {
                1 => None,
                _ => Some(
                    con.hget::<_, _, Option<String>>(&key, f.name())
                        .map_err(|e| Error::redis(&url, &e))?
                        .map_or(Value::Null, |n| {
                            serde_json::from_str(&n).unwrap_or(Value::String(n))
                        }),
                ),
            }
        }
    };
    let what = match flow {
        None => format!("the queue {:?}", config.keys.queue),
        Some(f) => format!("the {} {:?}", f.kind(), f.name()),
    };
    let mut out = json!({"paused": true, "already": already.is_some()});
    if let Some(f) = flow {
        out[f.kind()] = json!(f.name());
    }
    let text = match (&already, flow) {
        (Some(old), _) => format!("{what} is already {}\n", describe_pause(old)),
        (None, None) => {
            let _: () = con
                .set(config.keys.paused(), note.to_string())
                .map_err(|e| Error::redis(&url, &e))?;
            format!(
                "paused {what}: every daemon stops claiming within 2 s; calls in flight still settle. `delayqs resume` goes on.\n"
            )
        }
        (None, Some(f)) => format!(
            "paused {what}: within 2 s every daemon parks its jobs as they come due (a day ahead, listed in {:?} of their shard), without a call or an attempt; other jobs go on. `delayqs resume --{} {}` brings them back at their due times.\n",
            crate::config::Keys::parked(&config.keys.queue, f.name()),
            f.kind(),
            f.name()
        ),
    };
    out["note"] = already.unwrap_or(note);
    Ok(Output {
        text,
        json: out,
        shortfall: None,
    })
}

/// `resume`: claiming starts again at each daemon's next heartbeat.
pub fn resume(config: &Config) -> AdminResult {
    let (mut con, url) = connect(config)?;
    let removed: u64 = con
        .del(config.keys.paused())
        .map_err(|e| Error::redis(&url, &e))?;
    let text = match removed {
        0 => format!("{:?} was not paused\n", config.keys.queue),
        _ => format!(
            "resumed {:?}: every daemon claims again within 2 s\n",
            config.keys.queue
        ),
    };
    Ok(Output {
        text,
        json: json!({"resumed": removed > 0}),
        shortfall: None,
    })
}

/// A flow named on the command line: a callback host, or a job's `flowKey`. Both are
/// fields of one hash (`Keys::paused_flows`), named as the daemons name a job's flow
/// (`dispatch::flow::flow_of`, `Callback::host_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowArg {
    Host(String),
    Key(String),
}

impl FlowArg {
    /// `--host` and `--flow`, at most one of them; `None` for the queue itself.
    pub fn from_args(host: Option<&str>, flow: Option<&str>) -> Result<Option<FlowArg>, Error> {
        match (host, flow) {
            (None, None) => Ok(None),
            (Some(h), None) => Ok(Some(FlowArg::Host(host_name(h)?))),
            (None, Some(k)) => Ok(Some(FlowArg::Key(flow_key(k)?))),
            (Some(_), Some(_)) => Err(Error::Usage(
                "give --host or --flow, not both: each names one flow".into(),
            )),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            FlowArg::Host(n) | FlowArg::Key(n) => n,
        }
    }

    /// `host` or `flow`: the option that names it, and the JSON field.
    pub fn kind(&self) -> &'static str {
        match self {
            FlowArg::Host(_) => "host",
            FlowArg::Key(_) => "flow",
        }
    }
}

/// A host as `Callback::host_key` names it: `host` or `host:port`, in lower case, the
/// port left out when it is 80 or 443 (a callback's host is named without its scheme's
/// default port, and the scheme is not given here). A callback URL is taken too, and
/// named exactly as its jobs' flow is (`http://shop.example:443/` is
/// `shop.example:443`).
pub fn host_name(text: &str) -> Result<String, Error> {
    use crate::job::callback::Callback;
    let bad = |why: &str| Error::Usage(format!("--host {text:?} {why}"));
    let text = text.trim();
    if text.contains("://") {
        return Callback::parse(text)
            .map(|c| c.host_key().to_string())
            .map_err(|e| bad(&format!("is not a callback URL: {e}")));
    }
    if text.is_empty()
        || text
            .chars()
            .any(|c| "/?#@*\\".contains(c) || c.is_whitespace() || c.is_control())
    {
        return Err(bad(
            "must name one host: `host` or `host:port` (shop.example, 10.0.0.7:8080, [::1]:8080), or a callback URL; not a pattern",
        ));
    }
    let callback = Callback::parse(&format!("http://{text}/"))
        .map_err(|_| bad("is not a host name, nor host:port"))?;
    Ok(match callback.port() {
        80 | 443 => callback.host().to_string(),
        port => format!("{}:{port}", callback.host()),
    })
}

/// A `flowKey` as jobs may carry it: 1 to 200 bytes, no control characters.
fn flow_key(text: &str) -> Result<String, Error> {
    match !text.is_empty() && text.len() <= 200 && !text.contains(char::is_control) {
        true => Ok(text.to_string()),
        false => Err(Error::Usage(format!(
            "--flow {text:?} must be a flowKey of 1 to 200 bytes without control characters"
        ))),
    }
}

/// The paused flows: name → note, by name (a JSON object's order).
pub fn paused_flows(
    con: &mut Conn,
    keys: &crate::config::Keys,
    url: &str,
) -> Result<serde_json::Map<String, Value>, Error> {
    let all: Vec<(String, String)> = con
        .hgetall(keys.paused_flows())
        .map_err(|e| Error::redis(url, &e))?;
    // Inserted one by one: collecting would sort, and a sort's code is kilobytes.
    let mut flows = serde_json::Map::new();
    for (name, note) in all {
        let note = serde_json::from_str(&note).unwrap_or(Value::String(note));
        flows.insert(name, note);
    }
    Ok(flows)
}

/// Parked jobs brought back per `unpark.lua` call: each is a `ZSCORE`, an `HGET` and
/// perhaps a `ZADD` and an `HSET`, so a call stays near a millisecond.
const UNPARK_PAGE: usize = 500;

/// How long `resume --host` waits for every daemon to beat once after the pause went.
const BEAT_WAIT: Duration = Duration::from_secs(5);

/// `resume --host H` / `--flow K`: the flow's pause goes; once every live daemon has
/// beaten since (it reads the paused flows with its heartbeat, every 2 s), so that
/// none parks a job brought back again, its parked jobs come back to their due scores
/// in every shard, page by page, until none is left. A job a producer cancelled or
/// rescheduled meanwhile is left as the producer made it. A daemon that did not beat
/// in time brings back what it parks meanwhile itself, once it sees the resume.
pub fn resume_flow(config: &Config, flow: &FlowArg) -> AdminResult {
    let (mut con, url) = connect(config)?;
    let removed: u64 = con
        .hdel(config.keys.paused_flows(), flow.name())
        .map_err(|e| Error::redis(&url, &e))?;
    let late = match removed {
        0 => 0,
        _ => await_beats(&mut con, config, &url)?,
    };
    let shards = crate::store::shards_in_use(&mut con, &config.keys, false, false)
        .map_err(|e| Error::redis(&url, &e))?;
    let mut brought_back = 0;
    let unpark = crate::store::script::Lua::new(crate::store::lua::UNPARK);
    for shard in shards.found {
        let k = config.keys.shard(shard);
        loop {
            let (moved, left): (u64, u64) = unpark
                .key(&k.queue)
                .key(&k.attempts)
                .key(crate::config::Keys::parked(&k.queue, flow.name()))
                .arg(UNPARK_PAGE)
                .invoke(&mut con)
                .map_err(|e| Error::redis(&url, &e))?;
            brought_back += moved;
            if left == 0 {
                break;
            }
        }
    }
    let mut text = match removed {
        0 => format!("the {} {:?} was not paused", flow.kind(), flow.name()),
        _ => format!(
            "resumed the {} {:?}: every daemon sends its jobs again",
            flow.kind(),
            flow.name()
        ),
    };
    if removed > 0 || brought_back > 0 {
        text.push_str(&format!(
            "; brought back {brought_back} parked jobs, due at their own times"
        ));
    }
    text.push('\n');
    if late > 0 {
        text.push_str(&format!(
            "{late} daemon(s) did not beat within {} s: each brings back what it parks meanwhile once it sees the resume\n",
            BEAT_WAIT.as_secs()
        ));
    }
    Ok(Output {
        text,
        json: json!({
            "resumed": removed > 0, flow.kind(): flow.name(), "broughtBack": brought_back,
            "daemonsNotSeen": late,
        }),
        shortfall: None,
    })
}

/// Waits until every daemon beating now has beaten once more (its record rewritten),
/// at most [`BEAT_WAIT`]; returns how many did not. A user who may not read the
/// daemons' hash waits for none.
fn await_beats(con: &mut Conn, config: &Config, url: &str) -> Result<usize, Error> {
    let now = redis_now(con, url)?;
    let key = config.keys.daemons();
    let all: Vec<(String, String)> = match con.hgetall(&key) {
        Ok(all) => all,
        Err(e) if e.code() == Some("NOPERM") => return Ok(0),
        Err(e) => return Err(Error::redis(url, &e)),
    };
    let mut waiting: Vec<(String, String)> = all
        .into_iter()
        .filter(|(_, line)| Record::parse(line).is_some_and(|r| r.expires >= now))
        .collect();
    let began = std::time::Instant::now();
    while !waiting.is_empty() && began.elapsed() < BEAT_WAIT {
        std::thread::sleep(Duration::from_millis(100));
        // The whole hash again (one field per daemon): the same reply type as above.
        let now: Vec<(String, String)> = con.hgetall(&key).map_err(|e| Error::redis(url, &e))?;
        waiting.retain(|before| now.contains(before));
    }
    Ok(waiting.len())
}

/// One flow over the fleet, merged from the daemons' heartbeat records (`flows`): the
/// rates and limits are fleet-wide in each record already (the highest is shown), the
/// calls in flight and the jobs deferred are each daemon's own (summed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetFlow {
    pub name: String,
    pub limit: Option<f64>,
    pub rate: Option<f64>,
    pub concurrency: Option<u64>,
    pub in_flight: u64,
    pub deferred: u64,
    /// Slowed by back-pressure on some daemon.
    pub slowed: bool,
    /// Paused by an operator: in the paused flows' hash, or so a daemon says.
    pub paused: bool,
    /// Seconds the longest hold (`Retry-After`, a breaker's pause) has left.
    pub held_for: Option<f64>,
    pub last_pressure: Option<String>,
    /// Daemons whose record lists it.
    pub daemons: u64,
}

impl FleetFlow {
    /// `now/limit` calls per second, `-` for none.
    pub fn rate_text(&self) -> String {
        let n = |r: Option<f64>| r.map_or("-".to_string(), per_second);
        match (self.rate, self.limit) {
            (None, None) => "-".into(),
            (rate, limit) => format!("{}/{}", n(rate), n(limit)),
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "flow": self.name, "limit": self.limit, "rate": self.rate,
            "concurrency": self.concurrency, "inFlight": self.in_flight,
            "deferred": self.deferred, "slowed": self.slowed, "paused": self.paused,
            "heldFor": self.held_for, "lastPressure": self.last_pressure,
            "daemons": self.daemons,
        })
    }
}

/// `12`, `0.5`, `12.3`: a rate, its tenths only when it has some.
fn per_second(r: f64) -> String {
    let tenths = (r * 10.0).round() / 10.0;
    match tenths.fract() == 0.0 {
        true => format!("{tenths:.0}"),
        false => format!("{tenths:.1}"),
    }
}

/// The flows of every daemon's record, merged by name, and the paused flows of the
/// hash that none lists; by name.
pub fn fleet_flows(records: &[&Value], paused: &[&str]) -> Vec<FleetFlow> {
    fn max<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Option<T> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b > a { b } else { a }),
            (a, b) => a.or(b),
        }
    }
    // Kept in order by inserting in place: no sort of its own (each sort's code is
    // several kilobytes, and the static binary has a size budget).
    let mut flows: Vec<FleetFlow> = Vec::new();
    let entry = |flows: &mut Vec<FleetFlow>, name: &str| -> usize {
        match flows.binary_search_by(|f| f.name.as_str().cmp(name)) {
            Ok(at) => at,
            Err(at) => {
                let flow = FleetFlow {
                    name: name.to_string(),
                    ..FleetFlow::default()
                };
                flows.insert(at, flow);
                at
            }
        }
    };
    for record in records {
        for v in record["flows"].as_array().into_iter().flatten() {
            let Some(name) = v["flow"].as_str() else {
                continue;
            };
            let at = entry(&mut flows, name);
            let f = &mut flows[at];
            f.limit = max(f.limit, v["limit"].as_f64());
            f.rate = max(f.rate, v["rate"].as_f64());
            f.concurrency = max(f.concurrency, v["concurrency"].as_u64());
            f.in_flight += v["inFlight"].as_u64().unwrap_or(0);
            f.deferred += v["deferred"].as_u64().unwrap_or(0);
            f.slowed |= v["slowed"].as_bool().unwrap_or(false);
            f.paused |= v["paused"].as_bool().unwrap_or(false);
            f.held_for = max(f.held_for, v["heldFor"].as_f64());
            if f.last_pressure.is_none() {
                f.last_pressure = v["lastPressure"].as_str().map(str::to_string);
            }
            f.daemons += 1;
        }
    }
    for name in paused {
        let at = entry(&mut flows, name);
        flows[at].paused = true;
    }
    flows
}

/// What Redis says of one daemon's heartbeat, for `status`.
pub enum Heartbeat {
    /// Its record, and Redis's clock.
    Found(Record, f64),
    /// No record stands for it.
    Missing,
    /// The Redis user may not read the daemons' hash (an ACL of the queue's keys only).
    Refused,
}

/// The heartbeat of the daemon with `pid` on this host: for `status`.
pub fn heartbeat_of(config: &Config, pid: u32) -> Result<Heartbeat, Error> {
    let (mut con, url) = connect(config)?;
    let now = redis_now(&mut con, &url)?;
    let host = hostname();
    let all: Vec<(String, String)> = match con.hgetall(config.keys.daemons()) {
        Ok(all) => all,
        Err(e) if e.code() == Some("NOPERM") => return Ok(Heartbeat::Refused),
        Err(e) => return Err(Error::redis(&url, &e)),
    };
    let found = all
        .iter()
        .filter_map(|(_, line)| Record::parse(line))
        .filter(|r| r.expires >= now)
        .find(|r| {
            r.fields["pid"].as_u64() == Some(u64::from(pid))
                && r.fields["host"].as_str() == Some(&host)
        });
    Ok(found.map_or(Heartbeat::Missing, |r| Heartbeat::Found(r, now)))
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_named_as_its_callbacks_flow_is() {
        let name = |t: &str| host_name(t).map_err(|e| e.to_string());
        assert_eq!(name("Shop.Example").unwrap(), "shop.example");
        assert_eq!(name("shop.example:80").unwrap(), "shop.example");
        assert_eq!(name("shop.example:443").unwrap(), "shop.example");
        assert_eq!(name("127.0.0.1:8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(name("[::1]:8080").unwrap(), "[::1]:8080");
        // A URL says its scheme: its port is dropped only when that scheme's default.
        assert_eq!(
            name("http://shop.example:443/x").unwrap(),
            "shop.example:443"
        );
        assert_eq!(name("HTTPS://Shop.Example:443/x").unwrap(), "shop.example");
        for bad in [
            "",
            "*.shop.example",
            "shop.example/x",
            "u@shop.example",
            "a b",
            "h:99999",
        ] {
            assert!(name(bad).is_err(), "{bad:?} taken");
        }
        // As a job's callback names it.
        let c = crate::job::callback::Callback::parse("http://SHOP.example:8080/x").unwrap();
        assert_eq!(name("SHOP.example:8080").unwrap(), c.host_key());
        assert!(FlowArg::from_args(Some("h"), Some("k")).is_err());
        assert_eq!(
            FlowArg::from_args(None, Some("payments")).unwrap(),
            Some(FlowArg::Key("payments".into()))
        );
        assert!(FlowArg::from_args(None, Some("")).is_err());
        assert_eq!(FlowArg::from_args(None, None).unwrap(), None);
    }

    #[test]
    fn flows_merge_over_the_daemons() {
        let records = [
            json!({"flows": [
                {"flow": "b", "limit": 50.0, "rate": 12.5, "concurrency": 4, "inFlight": 2,
                 "deferred": 10, "slowed": true, "paused": false, "heldFor": 1.5,
                 "lastPressure": "pushed back"},
            ]}),
            json!({"flows": [
                {"flow": "b", "limit": 50.0, "rate": 25.0, "concurrency": 4, "inFlight": 3,
                 "deferred": 5, "slowed": false, "paused": false, "heldFor": null,
                 "lastPressure": null},
                {"flow": "a", "limit": null, "rate": null, "inFlight": 1},
            ]}),
            json!({"host": "an old daemon: no flows"}),
        ];
        let records: Vec<&Value> = records.iter().collect();
        let flows = fleet_flows(&records, &["c", "a"]);
        let names: Vec<&str> = flows.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let b = &flows[1];
        assert_eq!(
            (b.rate, b.limit, b.concurrency, b.in_flight, b.deferred),
            (Some(25.0), Some(50.0), Some(4), 5, 15),
            "rates are fleet-wide (the highest), counts each daemon's (summed)"
        );
        assert!(b.slowed && !b.paused && b.held_for == Some(1.5) && b.daemons == 2);
        assert_eq!(b.last_pressure.as_deref(), Some("pushed back"));
        assert_eq!(b.rate_text(), "25/50");
        assert!(flows[0].paused && flows[0].rate_text() == "-" && flows[0].in_flight == 1);
        assert!(flows[2].paused && flows[2].daemons == 0);
        let slowed = FleetFlow {
            rate: Some(0.5),
            ..FleetFlow::default()
        };
        assert_eq!(slowed.rate_text(), "0.5/-");
    }
}
