//! Operator commands: add, pending, stats, failed list/retry/purge, cancel. Each reads
//! the same config as the daemon, talks to Redis directly, and changes data only in
//! one script call, so a running daemon never sees a job half moved.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::Commands;
use serde_json::{Value, json};

use crate::cli::error::Error;
use crate::config::{Config, Keys};
use crate::job::{Job, job_id, shorten};
use crate::store::script::Lua;
use crate::store::{AttemptsValue, lua};
use crate::timefmt::{human, parse_duration, parse_time, rfc3339};

pub type AdminResult = Result<Output, Error>;

/// Records or hash entries read per command: a page of this many keeps every Redis
/// command short, whatever the list or hash holds.
const PAGE: usize = 500;
/// Failed records gone through per `failed.lua` call: a retry costs the script about
/// 6 µs a record (decode, ZADD, HDEL), so a step stays near a millisecond.
const FAILED_STEP: usize = 200;

/// What a command prints: a table for people, or one JSON document.
pub struct Output {
    pub json: Value,
    pub text: String,
    /// Some of what was asked could not be done (an id not found): said on stderr,
    /// and the exit code is 64, but what was done is still printed.
    pub shortfall: Option<String>,
}

impl Output {
    pub fn render(&self, as_json: bool) -> String {
        if as_json {
            self.json.to_string()
        } else {
            self.text.clone()
        }
    }
}

pub struct Admin {
    con: crate::store::Conn,
    keys: Keys,
    url: String,
    /// The daemon's `timeoutMs`, which bounds a job's own `timeout`.
    max_timeout: Duration,
    /// The config's `maxJobBytes`: a longer member is set aside by the claim.
    max_job_bytes: usize,
}

impl Admin {
    pub fn connect(config: &Config) -> Result<Admin, Error> {
        let url = config.redis_url_redacted();
        let unreachable = |e: redis::RedisError| Error::redis(&url, &e);
        let con = crate::store::open(config).map_err(unreachable)?;
        Ok(Admin {
            con,
            keys: config.keys.clone(),
            url,
            max_timeout: config.http.timeout,
            max_job_bytes: config.max_job_bytes,
        })
    }

    /// Redis's clock, which the daemons judge due times by.
    fn now(&mut self) -> Result<f64, Error> {
        let (secs, micros): (u64, u64) = on(&self.url, redis::cmd("TIME").query(&mut self.con))?;
        Ok(secs as f64 + micros as f64 / 1e6)
    }

    /// `add`: writes a member exactly as a producer would.
    pub fn add(&mut self, job: NewJob, at: Option<&str>, after: Option<&str>) -> AdminResult {
        let (mode, secs) = match (at, after) {
            (Some(at), None) => ("at", due_at(at)?),
            (None, Some(after)) => (
                "in",
                parse_duration(after).map_err(Error::Usage)?.as_secs_f64(),
            ),
            _ => {
                return Err(Error::Usage(
                    "give exactly one of --at TIME and --in DURATION".into(),
                ));
            }
        };
        let (member, flags) = match job {
            NewJob::Member(member) => (member, Vec::new()),
            NewJob::Fields {
                callback,
                body,
                sign,
                options,
            } => (build_member(&callback, body, sign, &options)?, options),
        };
        if member.len() > self.max_job_bytes {
            return Err(Error::Usage(format!(
                "the member is {} bytes, over the config's maxJobBytes ({}): the daemon would set it aside unsent",
                member.len(),
                self.max_job_bytes
            )));
        }
        // What the daemon would refuse is refused here, named by the flag that gave it.
        Job::parse(member.as_bytes(), self.max_timeout).map_err(|e| {
            let flag = match (e.field, &flags[..]) {
                (_, []) => "--member",
                (Some("callback"), _) => "--callback",
                (Some("sign"), _) => "--sign",
                (Some(field), _) => flags
                    .iter()
                    .find(|o| o.field == field)
                    .map_or("--member", |o| o.flag),
                (None, _) => "--callback",
            };
            Error::Usage(format!("{flag}: {e}"))
        })?;

        let (score, added): (String, u8) = on(
            &self.url,
            Lua::new(lua::ADD)
                .key(&self.keys.queue)
                .arg(&member)
                .arg(mode)
                .arg(secs)
                .invoke(&mut self.con),
        )?;
        let due: f64 = score.parse().unwrap_or(0.0);
        let id = job_id(member.as_bytes());
        let verb = if added == 1 {
            "added"
        } else {
            "rescheduled (the same member was already pending)"
        };
        Ok(Output {
            text: format!("{verb} job {id}, due {} ({score})\n", rfc3339(due)),
            json: json!({"id": id, "due": due, "dueTime": rfc3339(due), "added": added == 1, "member": member}),
            shortfall: None,
        })
    }

    /// `pending`: jobs in due order, with their attempts so far.
    pub fn pending(&mut self, limit: usize, due_only: bool) -> AdminResult {
        let now = self.now()?;
        let limit = limit.max(1);
        let rows: Vec<(Vec<u8>, f64)> = if due_only {
            on(
                &self.url,
                self.con.zrangebyscore_limit_withscores(
                    &self.keys.queue,
                    "-inf",
                    now,
                    0,
                    limit as isize,
                ),
            )?
        } else {
            on(
                &self.url,
                self.con
                    .zrange_withscores(&self.keys.queue, 0, limit as isize - 1),
            )?
        };
        let attempts = self.attempts_of(&rows)?;
        let mut jobs = Vec::new();
        let mut table = vec![row(["ID", "DUE", "LATE", "ATTEMPTS", "CALLBACK"])];
        for ((member, due), attempts) in rows.iter().zip(attempts) {
            let id = job_id(member);
            // Below 0 (`-inf` included) counts as the epoch, as in the daemon.
            let due = due.max(0.0);
            let late = (now - due).max(0.0);
            let callback = callback_of(member);
            table.push(row([
                id.clone(),
                rfc3339(due),
                if late > 0.0 {
                    human(Duration::from_secs_f64(late))
                } else {
                    String::new()
                },
                attempts.to_string(),
                callback.clone(),
            ]));
            jobs.push(json!({"id": id, "due": due, "lateSeconds": late, "attempts": attempts, "callback": callback}));
        }
        Ok(Output {
            text: format_table(&table),
            json: json!({"now": now, "jobs": jobs}),
            shortfall: None,
        })
    }

    /// Attempts made so far by each pending job (member, score): 0 when there is no
    /// count, and for a job added anew since its count was written.
    fn attempts_of(&mut self, rows: &[(Vec<u8>, f64)]) -> Result<Vec<u32>, Error> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let members: Vec<&Vec<u8>> = rows.iter().map(|(m, _)| m).collect();
        let values: Vec<Option<String>> = on(
            &self.url,
            redis::cmd("HMGET")
                .arg(&self.keys.attempts)
                .arg(&members)
                .query(&mut self.con),
        )?;
        Ok(values
            .into_iter()
            .zip(rows)
            .map(|(v, (_, score))| v.map_or(0, |v| AttemptsValue::parse(&v).made_at(*score)))
            .collect())
    }

    /// Jobs waiting in the queue for a retry: an attempts value with attempts made and
    /// no lease, whose member is still queued at the score recorded with it. Read one
    /// `HSCAN` page at a time, so that no command is long, whatever the hash holds.
    fn retrying(&mut self) -> Result<u64, Error> {
        let k = self.keys.clone();
        let mut cursor = "0".to_string();
        let mut retrying = 0;
        loop {
            let (next, page): (String, Vec<Vec<u8>>) = on(
                &self.url,
                redis::cmd("HSCAN")
                    .arg(&k.attempts)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(PAGE)
                    .query(&mut self.con),
            )?;
            let waiting: Vec<(&[u8], AttemptsValue)> = page
                .chunks(2)
                .filter(|pair| pair.len() == 2)
                .map(|pair| {
                    let value = AttemptsValue::parse(&String::from_utf8_lossy(&pair[1]));
                    (pair[0].as_slice(), value)
                })
                .filter(|(_, v)| !v.leased && v.made > 0)
                .collect();
            if !waiting.is_empty() {
                let mut pipe = redis::pipe();
                for (member, _) in &waiting {
                    pipe.zscore(&k.queue, *member);
                }
                let scores: Vec<Option<f64>> = on(&self.url, pipe.query(&mut self.con))?;
                retrying += waiting
                    .iter()
                    .zip(scores)
                    .filter(|((_, v), score)| score.is_some_and(|s| v.made_at(s) > 0))
                    .count() as u64;
            }
            if next == "0" {
                return Ok(retrying);
            }
            cursor = next;
        }
    }

    /// `stats`: counts of every state a job can be in, and where failures went.
    pub fn stats(&mut self) -> AdminResult {
        let now = self.now()?;
        let k = self.keys.clone();
        let pending: u64 = on(&self.url, self.con.zcard(&k.queue))?;
        let due: u64 = on(&self.url, self.con.zcount(&k.queue, "-inf", now))?;
        let inflight: u64 = on(&self.url, self.con.zcard(&k.inflight))?;
        let failed: u64 = on(&self.url, self.con.llen(&k.failed))?;
        let retrying = self.retrying()?;
        let oldest: Vec<(Vec<u8>, f64)> =
            on(&self.url, self.con.zrange_withscores(&k.queue, 0, 0))?;
        let oldest_late = oldest
            .first()
            .map(|(_, s)| (now - s.max(0.0)).max(0.0))
            .unwrap_or(0.0);

        let mut by_host: BTreeMap<String, u64> = BTreeMap::new();
        for start in (0..failed).step_by(PAGE) {
            let page: Vec<Vec<u8>> = on(
                &self.url,
                self.con.lrange(
                    &k.failed,
                    start as isize,
                    start as isize + PAGE as isize - 1,
                ),
            )?;
            for record in page {
                *by_host.entry(host_of(&callback_of(&record))).or_default() += 1;
            }
        }
        let mut text = format_table(&[
            row(["pending", &pending.to_string()]),
            row(["due now", &due.to_string()]),
            row(["in flight", &inflight.to_string()]),
            row(["waiting for a retry", &retrying.to_string()]),
            row(["failed", &failed.to_string()]),
            row([
                "oldest due job late by",
                &human(Duration::from_secs_f64(oldest_late)),
            ]),
        ]);
        if !by_host.is_empty() {
            let mut hosts = vec![row(["FAILED BY HOST", "JOBS"])];
            hosts.extend(by_host.iter().map(|(h, n)| row([h.clone(), n.to_string()])));
            text.push('\n');
            text.push_str(&format_table(&hosts));
        }
        Ok(Output {
            text,
            json: json!({
                "pending": pending, "due": due, "inflight": inflight, "retrying": retrying,
                "failed": failed, "oldestDueLateSeconds": oldest_late, "failedByHost": by_host,
            }),
            shortfall: None,
        })
    }

    /// `failed list`: the oldest `limit` records of the failed list.
    pub fn failed_list(&mut self, limit: usize) -> AdminResult {
        let raw: Vec<Vec<u8>> = on(
            &self.url,
            self.con
                .lrange(&self.keys.failed, 0, limit.max(1) as isize - 1),
        )?;
        let mut table = vec![row(["ID", "FAILED", "ATTEMPTS", "CALLBACK", "ERROR"])];
        let mut records = Vec::new();
        for r in &raw {
            let v: Value = serde_json::from_slice(r).unwrap_or(Value::Null);
            let id = v["Id"].as_str().unwrap_or("?").to_string();
            let when = v["failedAt"].as_f64().map(rfc3339).unwrap_or_default();
            table.push(row([
                id,
                when,
                v["attempts"].to_string(),
                callback_of(r),
                shorten(v["error"].as_str().unwrap_or(""), 100),
            ]));
            records.push(masked(v));
        }
        Ok(Output {
            text: format_table(&table),
            json: json!({ "records": records }),
            shortfall: None,
        })
    }

    /// `failed retry` and `failed purge`: `op` is "retry" or "purge"; `which` selects.
    /// The list is gone through in steps of [`FAILED_STEP`] records, one `failed.lua` call
    /// each, as many as it held at the start: no call holds Redis long, and each leaves
    /// every record in the list once (see the script for an interrupted run).
    pub fn failed_change(&mut self, op: &str, which: Selection) -> AdminResult {
        let failed = Lua::new(lua::FAILED);
        let mut selection: Vec<String> = Vec::new();
        let mut asked = Vec::new();
        match &which {
            Selection::All => selection.push("all".into()),
            Selection::OlderThan(d) => {
                let cutoff = self.now()? - d.as_secs_f64();
                selection.extend(["older".to_string(), cutoff.to_string()]);
            }
            Selection::Ids(ids) => {
                selection.push("ids".into());
                selection.extend(ids.iter().cloned());
                asked.clone_from(ids);
            }
        }
        let total: usize = on(&self.url, self.con.llen(&self.keys.failed))?;
        let mut reply: Vec<String> = Vec::new();
        let mut gone_through = 0;
        while gone_through < total {
            let step = (total - gone_through).min(FAILED_STEP);
            let got: Vec<String> = on(
                &self.url,
                failed
                    .key(&self.keys.queue)
                    .key(&self.keys.attempts)
                    .key(&self.keys.failed)
                    .key(&self.keys.inflight)
                    .arg(op)
                    .arg(step)
                    .arg(&selection)
                    .invoke(&mut self.con),
            )?;
            let taken: usize = got.first().and_then(|n| n.parse().ok()).unwrap_or(0);
            reply.extend(got.into_iter().skip(1));
            if taken == 0 {
                break; // someone else emptied the list meanwhile
            }
            gone_through += taken;
        }
        let mut done: Vec<Value> = Vec::new();
        let mut lines = String::new();
        for pair in reply.chunks(2) {
            let (id, what) = (&pair[0], &pair[1]);
            lines.push_str(&format!("{id}: {what}\n"));
            done.push(json!({"id": id, "result": what}));
        }
        let missing: Vec<&String> = asked
            .iter()
            .filter(|id| !reply.chunks(2).any(|p| &p[0] == *id))
            .collect();
        for id in &missing {
            lines.push_str(&format!("{id}: not found in the failed list\n"));
        }
        let malformed_kept = reply
            .chunks(2)
            .filter(|p| p[1].starts_with("kept: malformed"))
            .count();
        if malformed_kept > 0 {
            lines.push_str(&format!(
                "skipped {malformed_kept} malformed records: they would fail again at once (retry them by id or with --malformed)\n"
            ));
        }
        if lines.is_empty() {
            lines.push_str("nothing matched\n");
        }
        let json =
            json!({"results": done, "notFound": missing, "malformedSkipped": malformed_kept});
        let shortfall = (!missing.is_empty())
            .then(|| format!("{} ids not found in the failed list", missing.len()));
        Ok(Output {
            text: lines,
            json,
            shortfall,
        })
    }

    /// `cancel`: removes pending jobs by id. Finding a member by id means reading the
    /// queue page by page and hashing; the removal itself is one script call.
    pub fn cancel(&mut self, ids: &[String]) -> AdminResult {
        let mut found: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let wanted: Vec<&String> = ids.iter().collect();
        for key in [self.keys.queue.clone(), self.keys.inflight.clone()] {
            let iter: redis::Iter<Vec<u8>> = on(&self.url, self.con.zscan(&key))?;
            // ZSCAN yields member, score, member, score...
            let members: Vec<Vec<u8>> = on(&self.url, iter.step_by(2).collect())?;
            for m in members {
                let id = job_id(&m);
                if wanted.contains(&&id) {
                    found.entry(id).or_insert(m);
                }
            }
        }
        let members: Vec<&Vec<u8>> = found.values().collect();
        let results: Vec<i64> = if members.is_empty() {
            Vec::new()
        } else {
            on(
                &self.url,
                Lua::new(lua::CANCEL)
                    .key(&self.keys.queue)
                    .key(&self.keys.inflight)
                    .key(&self.keys.attempts)
                    .arg(&members)
                    .invoke(&mut self.con),
            )?
        };
        let outcome: BTreeMap<&String, i64> = found.keys().zip(results).collect();
        let mut lines = String::new();
        let mut json_results = Vec::new();
        let mut all_cancelled = true;
        for id in ids {
            let what = match outcome.get(id) {
                Some(1) => "cancelled",
                Some(-1) => {
                    "in flight: its attempt is under way and cannot be stopped; cancel it again if it comes back for a retry"
                }
                _ => "not found among pending jobs",
            };
            all_cancelled &= what == "cancelled";
            lines.push_str(&format!("{id}: {what}\n"));
            json_results.push(json!({"id": id, "result": what}));
        }
        Ok(Output {
            text: lines,
            json: json!({ "results": json_results }),
            shortfall: (!all_cancelled).then(|| "not every job was cancelled".to_string()),
        })
    }
}

/// What `add` was given: the member itself, or what to build one from.
pub enum NewJob {
    Member(String),
    Fields {
        callback: String,
        body: Option<String>,
        sign: Option<String>,
        options: Vec<JobOption>,
    },
}

/// A per-job option from the command line: the flag, the member field it sets, and
/// the value as typed.
pub struct JobOption {
    pub flag: &'static str,
    pub field: &'static str,
    pub value: String,
}

/// Before 2000-01-01: no one schedules a job in the past on purpose, so such a time
/// is a slip (`--at 1000` meant as "in 1000 s", or milliseconds cut short).
const EARLIEST_AT: f64 = 946_684_800.0;

/// `--at`: a time that is not a slip.
fn due_at(at: &str) -> Result<f64, Error> {
    let secs = parse_time(at).map_err(Error::Usage)?;
    if secs < EARLIEST_AT {
        return Err(Error::Usage(format!(
            "--at {at} is {}, before 2000, which looks like a mistake: give the due time as RFC 3339 (--at 2026-12-01T12:00:00Z) or Unix seconds (--at 1796126400), or a delay with --in (--in 1000s; --in 0s for now)",
            rfc3339(secs)
        )));
    }
    Ok(secs)
}

/// The member a producer would write: its fields in sorted order (serde_json's map),
/// so the same flags give the same member, and the same job id.
fn build_member(
    callback: &str,
    body: Option<String>,
    sign: Option<String>,
    options: &[JobOption],
) -> Result<String, Error> {
    let body: Value = match body {
        None => Value::Null,
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| Error::Usage(format!("--body is not valid JSON: {e}")))?,
    };
    let mut fields = serde_json::Map::new();
    fields.insert("body".into(), body);
    fields.insert("callback".into(), Value::String(callback.into()));
    if let Some(sign) = sign {
        fields.insert("sign".into(), Value::String(sign));
    }
    let mut headers = serde_json::Map::new();
    for o in options {
        let usage = |why: String| Error::Usage(format!("{}: {why}", o.flag));
        let number = |text: &str| match serde_json::from_str::<Value>(text.trim()) {
            Ok(n @ Value::Number(_)) => Ok(n),
            _ => Err(usage(format!("expected a number of seconds, got {text:?}"))),
        };
        let value = match o.field {
            "maxRetry" => match o.value.trim().parse::<u64>() {
                Ok(n) => Value::from(n),
                Err(_) => {
                    return Err(usage(format!(
                        "expected a whole number from 0 to 1000, got {:?}",
                        o.value
                    )));
                }
            },
            "timeout" => number(&o.value)?,
            "backoff" if o.value.contains(',') => Value::Array(
                o.value
                    .split(',')
                    .map(number)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            "backoff" => number(&o.value)?,
            "method" => Value::String(o.value.to_ascii_uppercase()),
            "headers" => {
                let Some((name, value)) = o.value.split_once(':') else {
                    return Err(usage(format!(
                        "expected \"Name: value\", got {:?}",
                        o.value
                    )));
                };
                let name = name.trim();
                if headers
                    .insert(name.to_string(), Value::String(value.trim_start().into()))
                    .is_some()
                {
                    return Err(usage(format!("{name:?} is given twice")));
                }
                continue;
            }
            _ => Value::String(o.value.clone()),
        };
        fields.insert(o.field.into(), value);
    }
    if !headers.is_empty() {
        fields.insert("headers".into(), Value::Object(headers));
    }
    Ok(Value::Object(fields).to_string())
}

fn on<T>(url: &str, r: redis::RedisResult<T>) -> Result<T, Error> {
    r.map_err(|e| Error::redis(url, &e))
}

/// Which failed records a command acts on.
pub enum Selection {
    All,
    OlderThan(Duration),
    Ids(Vec<String>),
}

/// A failed record as `failed list --json` shows it: the credentials in its callback
/// masked, as in the table, both in the `callback` field and in the `member` string
/// (which is not the one to put back then; the record in Redis keeps that).
fn masked(mut record: Value) -> Value {
    let Value::Object(fields) = &mut record else {
        return record;
    };
    mask_callback_fields(fields);
    if let Some(Value::String(member)) = fields.get_mut("member") {
        let mut shown = crate::job::callback::mask_in_text(member);
        // A callback written with JSON escapes (`\/`, `\u0040`) is not found in the
        // text: then the member is shown re-encoded, with it masked.
        if let Ok(Value::Object(mut parsed)) = serde_json::from_str::<Value>(&shown)
            && mask_callback_fields(&mut parsed)
        {
            shown = Value::Object(parsed).to_string();
        }
        *member = shown;
    }
    record
}

/// Masks every `callback` field (any case) of a member or record; whether one changed.
fn mask_callback_fields(fields: &mut serde_json::Map<String, Value>) -> bool {
    let mut changed = false;
    for (key, value) in fields.iter_mut() {
        if let (true, Value::String(url)) = (key.eq_ignore_ascii_case("callback"), &mut *value) {
            let shown = crate::job::callback::mask(url);
            changed |= shown != *url;
            *url = shown;
        }
    }
    changed
}

/// The `callback` of a member or record, or `?`.
fn callback_of(member: &[u8]) -> String {
    match serde_json::from_slice::<Value>(member) {
        Ok(Value::Object(fields)) => fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("callback"))
            .and_then(|(_, v)| v.as_str())
            .map(crate::job::callback::mask)
            .unwrap_or_else(|| "?".into()),
        _ => "?".into(),
    }
}

/// `host[:port]` of a callback, as the breakers count it; the text itself when it is
/// not a callback URL (a malformed job's record).
fn host_of(url: &str) -> String {
    crate::job::callback::Callback::parse(url)
        .map(|c| c.host_key().to_string())
        .unwrap_or_else(|_| url.to_string())
}

fn row<const N: usize, S: Into<String>>(cells: [S; N]) -> Vec<String> {
    cells.into_iter().map(Into::into).collect()
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn format_table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let last = r.len().saturating_sub(1);
        for (c, cell) in r.iter().enumerate() {
            if c == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_redis_sha1hex() {
        // redis-cli EVAL "return redis.sha1hex(ARGV[1])" 0 '{"body":{"orderId":42},…}'
        let member =
            r#"{"body":{"orderId":42},"callback":"http://127.0.0.1:8000/close","sign":"9c1f"}"#;
        assert_eq!(
            job_id(member.as_bytes()),
            "ca364d367b2ab555b9bf4e95ce67424232c73376"
        );
    }

    #[test]
    fn hosts_and_tables() {
        assert_eq!(host_of("https://shop.local:8443/x?y"), "shop.local:8443");
        assert_eq!(host_of("?"), "?");
        let t = format_table(&[row(["A", "BB", "C"]), row(["aaa", "b", "c"])]);
        assert_eq!(t, "A    BB  C\naaa  b   c\n");
    }

    #[test]
    fn a_record_shows_its_callback_masked_even_when_escaped() {
        let record = json!({
            "Callback": "http://u:pw@h/x",
            "member": r#"{"Callback":"http:\/\/u:pw@h\/x","body":1}"#,
        });
        let shown = masked(record).to_string();
        assert!(!shown.contains("pw"), "{shown}");
        assert!(shown.contains(r#""Callback":"http://***@h/x""#), "{shown}");
    }
}
