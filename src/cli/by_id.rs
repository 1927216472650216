//! Jobs by the producer's own id: `add --id`, `move`, `cancel --id`, and
//! `functions load|script|library`. Each change is one call of `store/scripts/ids.lua`,
//! as a function of the `delayqs` library where the server has Functions, as the plain
//! script otherwise, in the shard where the id's job lives: the one the id names
//! (`Keys::shard_of_producer_id`), unless a change of `shards` left it in another.

use serde_json::{Value, json};

use crate::cli::admin::{Admin, AdminResult, Output, on};
use crate::cli::error::Error;
use crate::config::ShardKeys;
use crate::store::functions::{self, Library};
use crate::timefmt::rfc3339;

/// The due time as `ids.lua` reads it: Unix seconds, or `+seconds` from now by Redis's
/// clock.
pub fn due_arg(mode: &str, secs: f64) -> String {
    match mode {
        "in" => format!("+{secs}"),
        _ => format!("{secs}"),
    }
}

impl Admin {
    /// One operation of `ids.lua` on the id's shard. A refusal of the script (a bad id,
    /// job or due time) is a usage error, with the script's own words.
    fn by_id(&mut self, op: &str, id: &str, args: &[&str]) -> Result<Value, Error> {
        let shard = self.shard_of(id)?;
        let mut all = vec![id];
        all.extend_from_slice(args);
        match functions::call(&mut self.con, &shard, op, &all) {
            Err(e) if e.to_string().contains("delayqs ") => {
                let text = e.to_string();
                let why = text.split_once("delayqs ").map_or(&*text, |(_, w)| w);
                Err(Error::Usage(format!("delayqs {why}")))
            }
            Err(e) if e.code() == Some("NOPERM") => Err(Error::Redis {
                url: self.url.clone(),
                what: format!(
                    "{e}; jobs by id need the user's ACL to allow {:?} besides the queue's keys",
                    shard.index_key
                ),
            }),
            result => on(&self.url, result.map(to_json)),
        }
    }

    /// The shard where the job under `id` lives, asked with `state` (read-only): the
    /// id's shard by the `shards` setting, else any other shard in use, which an
    /// earlier setting left the job in; the id's shard when none holds it. So that
    /// after a change of `shards` a move or cancel finds the job, and an `add --id`
    /// replaces it where it is rather than adding a second job under the id.
    fn shard_of(&mut self, id: &str) -> Result<ShardKeys, Error> {
        let home = self.keys.shard(self.keys.shard_of_producer_id(id));
        let others = self.sets()?;
        if others.len() > 1 {
            let rest = others.into_iter().filter(|k| k.index != home.index);
            for k in std::iter::once(home.clone()).chain(rest) {
                // A refusal (a bad id) or an error is the operation's to report.
                let found = functions::call(&mut self.con, &k, "state", &[id]);
                if matches!(found, Ok(v) if v != redis::Value::Nil) {
                    return Ok(k);
                }
            }
        }
        Ok(home)
    }

    /// `add --id`: schedules `member` (the job JSON) under `id`, replacing the job
    /// pending under it, or queued after the attempt in flight.
    pub fn schedule(&mut self, id: &str, job: &str, due: &str) -> AdminResult {
        let reply = self.by_id("schedule", id, &[job, due])?;
        let (status, job_id, score) = triple(&reply);
        let at = score.parse::<f64>().unwrap_or(0.0);
        let what = match status.as_str() {
            "added" => "added".to_string(),
            "replaced" => "replaced the job pending under this id by".to_string(),
            _ => "its attempt is in flight: once it ends, no retry follows, and instead comes"
                .to_string(),
        };
        Ok(Output {
            text: format!(
                "id {id}: {what} job {job_id}, due {} ({score})\n",
                rfc3339(at)
            ),
            json: json!({"id": id, "result": status, "jobId": job_id, "due": at, "dueTime": rfc3339(at)}),
            shortfall: None,
        })
    }

    /// `move`: the job under `id` is due at another time, its attempts so far kept.
    pub fn move_id(&mut self, id: &str, due: &str) -> AdminResult {
        let reply = self.by_id("move", id, &[due])?;
        let (status, job_id, score) = triple(&reply);
        let at = score.parse::<f64>().unwrap_or(0.0);
        let text = match status.as_str() {
            "moved" => format!("id {id}: job {job_id} moved to {} ({score})\n", rfc3339(at)),
            "after-attempt" => format!(
                "id {id}: its attempt is in flight and goes on; what follows it (a retry, or the job scheduled after it) is due {} ({score})\n",
                rfc3339(at)
            ),
            _ => format!("id {id}: no job lives under this id\n"),
        };
        Ok(Output {
            text,
            json: json!({"id": id, "result": status, "jobId": job_id, "due": at}),
            shortfall: (status == "not-found").then(|| format!("no job under id {id}")),
        })
    }

    /// `cancel --id`: cancels the jobs under these ids; one in flight finishes its
    /// attempt, and no retry follows.
    pub fn cancel_ids(&mut self, ids: &[String]) -> AdminResult {
        let mut text = String::new();
        let mut results = Vec::new();
        let mut missing = 0;
        for id in ids {
            let reply = self.by_id("cancel", id, &[])?;
            let (status, job_id, _) = triple(&reply);
            let what = match status.as_str() {
                "cancelled" => format!("cancelled job {job_id}"),
                "after-attempt" => format!(
                    "job {job_id} is in flight: its attempt goes on, and no retry or replacement follows it"
                ),
                _ => {
                    missing += 1;
                    "no job lives under this id".to_string()
                }
            };
            text.push_str(&format!("id {id}: {what}\n"));
            results.push(json!({"id": id, "result": status, "jobId": job_id}));
        }
        Ok(Output {
            text,
            json: json!({ "results": results }),
            shortfall: (missing > 0).then(|| format!("{missing} ids had no job")),
        })
    }

    /// `functions load`: loads (replaces) the library on the server, every master of a
    /// Cluster.
    pub fn functions_load(&mut self) -> AdminResult {
        let library = on(&self.url, functions::ensure(&mut self.con, true))?;
        let text = format!("{}\n", library.describe());
        let (result, shortfall) = match &library {
            Library::Loaded { .. } | Library::Present(_) => ("loaded", None),
            Library::NoFunctions(_) => ("no-functions", Some("the library was not loaded")),
            Library::Refused(_) => ("refused", Some("the library was not loaded")),
        };
        Ok(Output {
            text,
            json: json!({"result": result, "version": functions::VERSION, "message": library.describe()}),
            shortfall: shortfall.map(str::to_string),
        })
    }
}

fn to_json(v: redis::Value) -> Value {
    match v {
        redis::Value::Nil => Value::Null,
        redis::Value::Int(n) => json!(n),
        redis::Value::BulkString(b) => Value::String(String::from_utf8_lossy(&b).into_owned()),
        redis::Value::SimpleString(s) => Value::String(s),
        redis::Value::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        other => Value::String(format!("{other:?}")),
    }
}

/// `{status, job id, due}`, as `ids.lua` answers schedule, move and cancel.
fn triple(reply: &Value) -> (String, String, String) {
    let at = |i: usize| {
        reply
            .get(i)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (at(0), at(1), at(2))
}
