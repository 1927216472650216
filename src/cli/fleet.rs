//! The daemons serving a queue, and pausing it: `daemons`, `pause`, `resume`, and the
//! heartbeat lookup behind `status`. Each daemon rewrites its record in the
//! `<key>:daemons` hash every 2 s (`dispatch::main_loop::beat`, `heartbeat.lua`); a
//! record carries its expiry in front, so a daemon that died drops out by itself.

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
/// most); outcomes of calls in flight are still written. Survives restarts.
pub fn pause(config: &Config, reason: Option<&str>) -> AdminResult {
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
    let already = pause_note(&mut con, config, &url)?;
    if let Some(old) = &already {
        return Ok(Output {
            text: format!(
                "the queue {:?} is already {}\n",
                config.keys.queue,
                describe_pause(old)
            ),
            json: json!({"paused": true, "already": true, "note": old}),
            shortfall: None,
        });
    }
    let _: () = con
        .set(config.keys.paused(), note.to_string())
        .map_err(|e| Error::redis(&url, &e))?;
    Ok(Output {
        text: format!(
            "paused {:?}: every daemon stops claiming within 2 s; calls in flight still settle. `delayqs resume` goes on.\n",
            config.keys.queue
        ),
        json: json!({"paused": true, "already": false, "note": note}),
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

fn secs(s: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(s.max(0.0))
}
