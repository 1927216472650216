//! Operator commands that change the queue or count it: add, stats, failed
//! retry/purge, cancel (the listings are in `lists`, `show` in `show`). Each reads
//! the same config as the daemon, talks to Redis directly, and changes data only in
//! one script call, so a running daemon never sees a job half moved.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::Commands;
use serde_json::{Value, json};

use crate::cli::error::Error;
use crate::cli::fleet::{FleetFlow, fleet_flows};
use crate::cli::ids::{IdArg, Resolver};
use crate::cli::lists::{Bounds, Filter};
use crate::cli::pages::{ListPages, PAGE, ScanPages};
use crate::cli::shown::{callback_of, host_of};
use crate::config::{Config, Keys, ShardKeys};
use crate::job::{Job, job_id};
use crate::store::script::Lua;
use crate::store::{AttemptsValue, lua};
use crate::timefmt::{human, parse_duration, parse_time, rfc3339};

pub type AdminResult = Result<Output, Error>;

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
    pub(super) con: crate::store::Conn,
    pub(super) keys: Keys,
    pub(super) url: String,
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

    /// The shards every command reads: the configured ones, and any beyond that a
    /// larger `shards` setting left holding jobs or failed records.
    pub(super) fn sets(&mut self) -> Result<Vec<ShardKeys>, Error> {
        let used = on(
            &self.url,
            crate::store::shards_in_use(&mut self.con, &self.keys, true, false),
        )?;
        Ok(used.found.into_iter().map(|i| self.keys.shard(i)).collect())
    }

    /// `names`, and the shard's id index after them when this user may use it: an ACL
    /// that names only the configured keys refuses any script that declares it, and a
    /// shard it may not index has no job with an id.
    fn with_index(&mut self, k: &ShardKeys, names: &[&String]) -> Result<Vec<String>, Error> {
        let mut all: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        match redis::cmd("TYPE")
            .arg(&k.index_key)
            .query::<String>(&mut self.con)
        {
            Err(e) if e.code() == Some("NOPERM") => {}
            other => {
                on(&self.url, other)?;
                all.push(k.index_key.clone());
            }
        }
        Ok(all)
    }

    /// Redis's clock, which the daemons judge due times by.
    pub(super) fn now(&mut self) -> Result<f64, Error> {
        let (secs, micros): (u64, u64) = on(&self.url, redis::cmd("TIME").query(&mut self.con))?;
        Ok(secs as f64 + micros as f64 / 1e6)
    }

    /// `add`: writes a member exactly as a producer would; with `id`, schedules it under
    /// that id as the `delayqs_schedule` function does.
    pub fn add(
        &mut self,
        job: NewJob,
        at: Option<&str>,
        after: Option<&str>,
        id: Option<&str>,
    ) -> AdminResult {
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
        if let Some(id) = id {
            return self.schedule(id, &member, &crate::cli::by_id::due_arg(mode, secs));
        }

        // Where a producer would put it, by the rule of `config::keys`.
        let shard = self
            .keys
            .shard(self.keys.shard_of_member(member.as_bytes()));
        let (score, added): (String, u8) = on(
            &self.url,
            Lua::new(lua::ADD)
                .key(&shard.queue)
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

    /// Jobs waiting in the queue for a retry: an attempts value with attempts made and
    /// no lease, whose member is still queued at the score recorded with it. Read one
    /// `HSCAN` page at a time, so that no command is long, whatever the hash holds.
    fn retrying(&mut self, k: &ShardKeys) -> Result<u64, Error> {
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

    /// `stats`: counts of every state a job can be in, and where failures went, summed
    /// over the shards (and per shard, when there are several).
    pub fn stats(&mut self) -> AdminResult {
        let now = self.now()?;
        let mut sum = Counts::default();
        let mut per_shard = Vec::new();
        let mut by_host: BTreeMap<String, u64> = BTreeMap::new();
        for k in self.sets()? {
            let counts = self.counts(&k, now, &mut by_host)?;
            sum.add(&counts);
            per_shard.push((k, counts));
        }
        let paused: Option<String> = on(&self.url, self.con.get(self.keys.paused()))?;
        let paused: Option<Value> =
            paused.map(|n| serde_json::from_str(&n).unwrap_or(Value::String(n)));
        let claiming = match &paused {
            Some(note) => format!(
                "no: {} (delayqs resume)",
                crate::cli::fleet::describe_pause(note)
            ),
            None => "yes".into(),
        };
        let oldest_late = sum.oldest_due.map_or(0.0, |s| (now - s.max(0.0)).max(0.0));
        let mut text = format_table(&[
            row(["pending", &sum.pending.to_string()]),
            row(["due now", &sum.due.to_string()]),
            row(["in flight", &sum.inflight.to_string()]),
            row(["waiting for a retry", &sum.retrying.to_string()]),
            row(["failed", &sum.failed.to_string()]),
            row([
                "oldest due job late by",
                &human(Duration::from_secs_f64(oldest_late)),
            ]),
            row(["claiming", &claiming]),
        ]);
        if per_shard.len() > 1 {
            let mut rows = vec![row([
                "SHARD",
                "KEY",
                "PENDING",
                "DUE",
                "IN FLIGHT",
                "FAILED",
            ])];
            for (k, c) in &per_shard {
                rows.push(row([
                    k.index.to_string(),
                    k.queue.clone(),
                    c.pending.to_string(),
                    c.due.to_string(),
                    c.inflight.to_string(),
                    c.failed.to_string(),
                ]));
            }
            text.push('\n');
            text.push_str(&format_table(&rows));
        }
        if !by_host.is_empty() {
            let mut hosts = vec![row(["FAILED BY HOST", "JOBS"])];
            hosts.extend(by_host.iter().map(|(h, n)| row([h.clone(), n.to_string()])));
            text.push('\n');
            text.push_str(&format_table(&hosts));
        }
        let (paused_flows, flows) = self.flows(now, &per_shard)?;
        if !paused_flows.is_empty() {
            let mut rows = vec![row(["PAUSED FLOW", "PARKED", "SINCE", "BY", "REASON"])];
            for p in &paused_flows {
                let note = &p["note"];
                rows.push(row([
                    p["flow"].as_str().unwrap_or("?").to_string(),
                    p["parked"].to_string(),
                    note["since"].as_f64().map(rfc3339).unwrap_or_default(),
                    note["by"].as_str().unwrap_or("?").to_string(),
                    note["reason"].as_str().unwrap_or("").to_string(),
                ]));
            }
            text.push('\n');
            text.push_str(&format_table(&rows));
        }
        if !flows.is_empty() {
            let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
            let mut rows = vec![row([
                "FLOW",
                "RATE NOW/LIMIT",
                "CONCURRENCY",
                "IN FLIGHT",
                "DEFERRED",
                "SLOWED",
                "PAUSED",
                "LAST PRESSURE",
            ])];
            for f in &flows {
                let mut pressure = f.last_pressure.clone().unwrap_or_default();
                if let Some(h) = f.held_for {
                    pressure.push_str(&format!(" (held {h:.1}s more)"));
                }
                rows.push(row([
                    f.name.clone(),
                    f.rate_text(),
                    f.concurrency.map_or("-".into(), |c| c.to_string()),
                    f.in_flight.to_string(),
                    f.deferred.to_string(),
                    yes(f.slowed),
                    yes(f.paused),
                    pressure,
                ]));
            }
            text.push('\n');
            text.push_str(&format_table(&rows));
        }
        let shards: Vec<Value> = per_shard
            .iter()
            .map(|(k, c)| {
                json!({"shard": k.index, "key": k.queue, "pending": c.pending, "due": c.due,
                       "inflight": c.inflight, "retrying": c.retrying, "failed": c.failed})
            })
            .collect();
        Ok(Output {
            text,
            json: json!({
                "pending": sum.pending, "due": sum.due, "inflight": sum.inflight,
                "retrying": sum.retrying, "failed": sum.failed,
                "oldestDueLateSeconds": oldest_late, "failedByHost": by_host,
                "paused": paused, "shards": shards,
                "pausedFlows": paused_flows,
                "flows": flows.iter().map(FleetFlow::json).collect::<Vec<_>>(),
            }),
            shortfall: None,
        })
    }

    /// For `stats`: the paused flows (name, note, and the jobs parked in each shard,
    /// one `ZCARD` per shard and paused flow), and the flows of the daemons' heartbeat
    /// records merged over the fleet (`fleet::fleet_flows`).
    fn flows(
        &mut self,
        now: f64,
        shards: &[(ShardKeys, Counts)],
    ) -> Result<(Vec<Value>, Vec<FleetFlow>), Error> {
        let paused = crate::cli::fleet::paused_flows(&mut self.con, &self.keys, &self.url)?;
        let mut paused_json = Vec::new();
        for (name, note) in &paused {
            let mut parked = 0;
            for (k, _) in shards {
                let n: u64 = on(&self.url, self.con.zcard(Keys::parked(&k.queue, name)))?;
                parked += n;
            }
            paused_json.push(json!({"flow": name, "note": note, "parked": parked}));
        }
        let beats: Vec<(String, String)> = on(&self.url, self.con.hgetall(self.keys.daemons()))?;
        let records: Vec<Value> = beats
            .iter()
            .filter_map(|(_, line)| crate::cli::fleet::Record::parse(line))
            .filter(|r| r.expires >= now)
            .map(|r| r.fields)
            .collect();
        let names: Vec<&str> = paused.keys().map(String::as_str).collect();
        let records: Vec<&Value> = records.iter().collect();
        Ok((paused_json, fleet_flows(&records, &names)))
    }

    /// One shard's counts for `stats`; its failed records counted by host into `by_host`.
    fn counts(
        &mut self,
        k: &ShardKeys,
        now: f64,
        by_host: &mut BTreeMap<String, u64>,
    ) -> Result<Counts, Error> {
        let pending: u64 = on(&self.url, self.con.zcard(&k.queue))?;
        let due: u64 = on(&self.url, self.con.zcount(&k.queue, "-inf", now))?;
        let inflight: u64 = on(&self.url, self.con.zcard(&k.inflight))?;
        let failed: u64 = on(&self.url, self.con.llen(&k.failed))?;
        let retrying = self.retrying(k)?;
        let oldest: Vec<(Vec<u8>, f64)> =
            on(&self.url, self.con.zrange_withscores(&k.queue, 0, 0))?;
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
        Ok(Counts {
            pending,
            due,
            inflight,
            failed,
            retrying,
            oldest_due: oldest.first().map(|(_, s)| *s),
        })
    }

    /// `failed retry` and `failed purge`: `op` is "retry" or "purge"; `which` selects.
    /// The list is gone through in steps of [`FAILED_STEP`] records, one `failed.lua` call
    /// each, as many as it held at the start: no call holds Redis long, and each leaves
    /// every record in the list once (see the script for an interrupted run).
    pub fn failed_change(&mut self, op: &str, which: Selection) -> AdminResult {
        let sets = self.sets()?;
        let mut reply = Vec::new();
        let mut not_found = Vec::new();
        match which {
            Selection::Ids(args) => {
                // The whole ids first, so that a prefix is judged over every shard.
                let (found, missing) = self.failed_ids(&sets, args)?;
                not_found = missing;
                let ids: Vec<IdArg> = found
                    .iter()
                    .map(|(_, id)| IdArg::parse(id, true))
                    .collect::<Result<_, _>>()?;
                // Then in every shard: a record may be in more than one list (a job
                // written under two `shards` settings).
                let mut gone_somewhere = Vec::new();
                for k in sets.iter().filter(|_| !ids.is_empty()) {
                    let (got, gone) = self.failed_change_in(k, op, Selection::Ids(ids.clone()))?;
                    reply.extend(got);
                    gone_somewhere.extend(gone);
                }
                gone_somewhere.sort();
                gone_somewhere.dedup();
                not_found.extend(
                    gone_somewhere
                        .into_iter()
                        .filter(|id| !reply.chunks(2).any(|p| &p[0] == id)),
                );
            }
            which => {
                for k in &sets {
                    let (got, gone) = self.failed_change_in(k, op, which.clone())?;
                    reply.extend(got);
                    not_found.extend(gone);
                }
            }
        }
        Ok(failed_report(&reply, &not_found))
    }

    /// One shard's part of `failed_change`: the script's reply (id, what was done) and
    /// the ids that were gone from the list by the time of the change.
    fn failed_change_in(
        &mut self,
        k: &ShardKeys,
        op: &str,
        which: Selection,
    ) -> Result<(Vec<String>, Vec<String>), Error> {
        let mut not_found: Vec<String> = Vec::new();
        let (mut selection, bounds) = match which {
            Selection::All => (vec!["all".to_string()], None),
            Selection::Ids(args) => {
                let (ids, missing) = self.failed_ids(std::slice::from_ref(k), args)?;
                not_found = missing;
                let mut selection = vec!["ids".to_string()];
                selection.extend(ids.into_iter().map(|(_, id)| id));
                (selection, None)
            }
            Selection::Filter(filter) => (Vec::new(), Some(self.bounds(&filter)?)),
        };
        let total: usize = match selection.as_slice() {
            [ids] if ids == "ids" => 0, // none of the ids named is in the list
            _ => on(&self.url, self.con.llen(&k.failed))?,
        };
        let failed = Lua::new(lua::FAILED);
        let names = self.with_index(k, &[&k.queue, &k.attempts, &k.failed, &k.inflight])?;
        let mut reply: Vec<String> = Vec::new();
        let mut gone_through = 0;
        while gone_through < total {
            let step = (total - gone_through).min(FAILED_STEP);
            if let Some(bounds) = &bounds {
                selection = self.picked(k, step, bounds)?;
            }
            let got: Vec<String> = on(
                &self.url,
                failed
                    .key(&names)
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
        if let [mode, ids @ ..] = selection.as_slice()
            && mode == "ids"
        {
            // Gone from the list between the lookup and the change.
            not_found.extend(
                ids.iter()
                    .filter(|id| !reply.chunks(2).any(|p| &p[0] == *id))
                    .cloned(),
            );
        }
        Ok((reply, not_found))
    }

    /// The whole `Id`s the arguments name in the failed lists of `sets`, each with its
    /// shard, and the arguments that name none. The lists are read a page at a time;
    /// ambiguous prefixes are an error.
    fn failed_ids(
        &mut self,
        sets: &[ShardKeys],
        args: Vec<IdArg>,
    ) -> Result<(Vec<ShardId>, Vec<String>), Error> {
        let mut ids: Resolver<usize> = Resolver::new(args);
        'sets: for k in sets {
            let mut pages = ListPages::new(&k.failed);
            while let Some(page) = pages.next(self, PAGE)? {
                for raw in page {
                    if let Ok(Value::Object(r)) = serde_json::from_slice::<Value>(&raw)
                        && let Some(Value::String(id)) = r.get("Id")
                    {
                        ids.offer(id, || k.index);
                    }
                }
                if ids.settled() {
                    break 'sets;
                }
            }
        }
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for (arg, id) in ids.finish()? {
            match id {
                Some((id, shard)) => found.push((shard, id)),
                None => missing.push(arg.text().to_string()),
            }
        }
        found.dedup();
        Ok((found, missing))
    }

    /// The selection for the next step of a filtered change: the SHA-1 of each of the
    /// step's records the filter keeps, read from the head the step will take. The
    /// script acts only on records whose hash it is given, so a head that changed
    /// meanwhile (another operator's run) is kept, not wrongly acted on.
    fn picked(
        &mut self,
        k: &ShardKeys,
        step: usize,
        bounds: &Bounds,
    ) -> Result<Vec<String>, Error> {
        let head: Vec<Vec<u8>> = on(&self.url, self.con.lrange(&k.failed, 0, step as isize - 1))?;
        let mut selection = vec!["picked".to_string()];
        for raw in head {
            let record: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
            if bounds.keeps(&record) {
                selection.push(job_id(&raw));
            }
        }
        Ok(selection)
    }

    /// `cancel`: removes pending jobs by id. Finding a member by id means reading the
    /// queue page by page and hashing; the removal itself is one script call.
    pub fn cancel(&mut self, args: &[IdArg]) -> AdminResult {
        let sets = self.sets()?;
        // Looked for in the shard the id names first: where a producer following the
        // rule put it, so that a full id is usually found in one shard's scan.
        let mut order: Vec<&ShardKeys> = sets.iter().collect();
        if let [IdArg::Prefix(id)] = args
            && id.len() >= 8
        {
            let home = crate::config::shard_of_id(id, self.keys.shards);
            order.sort_by_key(|k| k.index != home);
        }
        let mut ids: Resolver<(usize, Vec<u8>)> = Resolver::new(args.to_vec());
        'scan: for k in &order {
            for key in [&k.queue, &k.inflight] {
                let mut pages = ScanPages::new(key);
                while let Some(page) = pages.next(self)? {
                    for member in page {
                        let id = job_id(&member);
                        ids.offer(&id, || (k.index, member));
                    }
                    if ids.settled() {
                        break 'scan;
                    }
                }
            }
        }
        let resolved = ids.finish()?;
        let found: BTreeMap<&String, &(usize, Vec<u8>)> = resolved
            .iter()
            .filter_map(|(_, f)| f.as_ref().map(|(id, m)| (id, m)))
            .collect();
        // Cancelled in every shard, not only where it was found: a job written under
        // two `shards` settings has a copy in each, and each would be delivered.
        let mut outcome: BTreeMap<&String, i64> = BTreeMap::new();
        let members: Vec<&Vec<u8>> = found.values().map(|(_, m)| m).collect();
        for k in sets.iter().filter(|_| !members.is_empty()) {
            let names = self.with_index(k, &[&k.queue, &k.inflight, &k.attempts])?;
            let results: Vec<i64> = on(
                &self.url,
                Lua::new(lua::CANCEL)
                    .key(&names)
                    .arg(&members)
                    .invoke(&mut self.con),
            )?;
            // In flight anywhere is what the operator must hear; then cancelled.
            for (id, r) in found.keys().copied().zip(results) {
                let was = outcome.entry(id).or_insert(0);
                *was = match (*was, r) {
                    (-1, _) | (_, -1) => -1,
                    (1, _) | (_, 1) => 1,
                    _ => 0,
                };
            }
        }
        let mut lines = String::new();
        let mut json_results = Vec::new();
        let mut all_cancelled = true;
        for (arg, f) in &resolved {
            let id = f.as_ref().map_or(arg.text(), |(id, _)| id.as_str());
            let what = match f.as_ref().and_then(|(id, _)| outcome.get(id)) {
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

/// What `failed retry|purge` did: the script's (id, what) pairs, and the ids named that
/// were not found.
fn failed_report(reply: &[String], not_found: &[String]) -> Output {
    let mut done: Vec<Value> = Vec::new();
    let mut lines = String::new();
    for pair in reply.chunks(2) {
        let (id, what) = (&pair[0], &pair[1]);
        lines.push_str(&format!("{id}: {what}\n"));
        done.push(json!({"id": id, "result": what}));
    }
    for id in not_found {
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
    let json = json!({"results": done, "notFound": not_found, "malformedSkipped": malformed_kept});
    let shortfall = (!not_found.is_empty())
        .then(|| format!("{} ids not found in the failed list", not_found.len()));
    Output {
        text: lines,
        json,
        shortfall,
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
pub(super) fn due_at(at: &str) -> Result<f64, Error> {
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

pub(super) fn on<T>(url: &str, r: redis::RedisResult<T>) -> Result<T, Error> {
    r.map_err(|e| Error::redis(url, &e))
}

/// Which failed records a command acts on.
#[derive(Clone)]
pub enum Selection {
    All,
    Ids(Vec<IdArg>),
    Filter(Filter),
}

/// A whole failed record `Id` and the shard whose list holds it.
type ShardId = (usize, String);

/// One shard's counts, for `stats`.
#[derive(Default)]
struct Counts {
    pending: u64,
    due: u64,
    inflight: u64,
    failed: u64,
    retrying: u64,
    /// The lowest score in the queue.
    oldest_due: Option<f64>,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.pending += other.pending;
        self.due += other.due;
        self.inflight += other.inflight;
        self.failed += other.failed;
        self.retrying += other.retrying;
        self.oldest_due = match (self.oldest_due, other.oldest_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

pub(super) fn row<const N: usize, S: Into<String>>(cells: [S; N]) -> Vec<String> {
    cells.into_iter().map(Into::into).collect()
}

/// Left-aligned columns two spaces apart; the last column is not padded.
pub(crate) fn format_table(rows: &[Vec<String>]) -> String {
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
}
