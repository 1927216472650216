//! The listing commands: `pending`, `inflight` and `failed list`, read a page at a
//! time (`pages`) and printed as they are read (`listing`), so that a queue of a
//! million jobs is listed in bounded memory and no Redis command is long. Each takes
//! one set of keys: a queue spread over several sets is read set by set.

use std::time::Duration;

use redis::Commands;
use serde_json::{Value, json};

use crate::cli::admin::{Admin, on};
use crate::cli::error::Error;
use crate::cli::listing::{Listing, thousands};
use crate::cli::pages::{ListPages, MergedPages, PAGE};
use crate::cli::shown::{callback_in, host_of, masked};
use crate::config::ShardKeys;
use crate::job::{job_id, shorten};
use crate::store::AttemptsValue;
use crate::timefmt::{human, rfc3339};

/// How many rows a listing shows: `--limit 0` means all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<usize>);

impl Limit {
    pub fn from_arg(n: usize) -> Limit {
        Limit((n > 0).then_some(n))
    }

    /// How many more may be shown after `shown`.
    fn left(self, shown: usize) -> usize {
        self.0.map_or(usize::MAX, |n| n.saturating_sub(shown))
    }
}

/// Characters of an id in a table: as unique as the whole among a million jobs, and
/// accepted back by every command that takes an id.
const SHORT_ID: usize = 12;

impl Admin {
    /// `pending`: jobs in due order over every shard, with their attempts so far and
    /// their bodies.
    pub fn pending(
        &mut self,
        out: &mut Listing,
        limit: Limit,
        due_only: bool,
    ) -> Result<(), Error> {
        let sets = self.sets()?;
        let now = self.now()?;
        let mut total = 0u64;
        for k in &sets {
            let n: u64 = match due_only {
                true => on(&self.url, self.con.zcount(&k.queue, "-inf", now))?,
                false => on(&self.url, self.con.zcard(&k.queue))?,
            };
            total += n;
        }
        let keys = sets.iter().map(|k| k.queue.as_str());
        let mut pages = MergedPages::new(keys, due_only.then_some(now));
        let mut shown = 0;
        while let Some(page) = pages.next(self, limit.left(shown))? {
            let values = self.attempts_in_sets(&sets, &page)?;
            let rows = page
                .iter()
                .zip(values)
                .map(|((_, (member, due)), value)| {
                    let attempts = value.map_or(0, |v| v.made_at(*due));
                    pending_row(member, *due, attempts, now, out.json())
                })
                .collect::<Vec<_>>();
            shown += rows.len();
            out.page(rows)?;
            if out.closed() {
                return Ok(());
            }
        }
        let what = if due_only { "due jobs" } else { "pending jobs" };
        out.finish(
            showing(shown, total, what),
            json!({"now": now, "total": total, "shown": shown}),
        )
    }

    /// The attempts-hash values of a merged page's members, each from its own shard's
    /// hash: one `HMGET` per shard in the page.
    fn attempts_in_sets(
        &mut self,
        sets: &[ShardKeys],
        page: &[(usize, (Vec<u8>, f64))],
    ) -> Result<Vec<Option<AttemptsValue>>, Error> {
        let mut values = vec![None; page.len()];
        for (set, k) in sets.iter().enumerate() {
            let at: Vec<usize> = (0..page.len()).filter(|&i| page[i].0 == set).collect();
            let got = self.attempts_values(k, at.iter().map(|&i| &page[i].1.0))?;
            for (i, v) in at.into_iter().zip(got) {
                values[i] = v;
            }
        }
        Ok(values)
    }

    /// The attempts-hash values of these members, one `HMGET` for the page.
    pub(super) fn attempts_values<'m>(
        &mut self,
        k: &ShardKeys,
        members: impl Iterator<Item = &'m Vec<u8>>,
    ) -> Result<Vec<Option<AttemptsValue>>, Error> {
        let members: Vec<&Vec<u8>> = members.collect();
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = on(
            &self.url,
            redis::cmd("HMGET")
                .arg(&k.attempts)
                .arg(&members)
                .query(&mut self.con),
        )?;
        Ok(values
            .into_iter()
            .map(|v| v.map(|v| AttemptsValue::parse(&v)))
            .collect())
    }

    /// The host of each daemon with a heartbeat record, by the record's id (its claim
    /// tokens' prefix): one `HGETALL` of a hash of one field per daemon. None for a
    /// user whose ACL does not cover the hash: the claims are still named by pid.
    pub(super) fn daemon_hosts(&mut self) -> Result<Vec<(String, String)>, Error> {
        let all: Vec<(String, String)> = match self.con.hgetall(self.keys.daemons()) {
            Ok(all) => all,
            Err(e) if e.code() == Some("NOPERM") => Vec::new(),
            Err(e) => return Err(Error::redis(&self.url, &e)),
        };
        Ok(all
            .into_iter()
            .filter_map(|(id, line)| {
                let record = crate::cli::fleet::Record::parse(&line)?;
                Some((id, record.fields["host"].as_str()?.to_string()))
            })
            .collect())
    }

    /// `inflight`: claimed jobs over every shard, soonest lease deadline first, with
    /// the daemon that holds each.
    pub fn inflight(&mut self, out: &mut Listing, limit: Limit) -> Result<(), Error> {
        let sets = self.sets()?;
        let now = self.now()?;
        let hosts = self.daemon_hosts()?;
        let mut total = 0u64;
        for k in &sets {
            let n: u64 = on(&self.url, self.con.zcard(&k.inflight))?;
            total += n;
        }
        let mut pages = MergedPages::new(sets.iter().map(|k| k.inflight.as_str()), None);
        let mut shown = 0;
        while let Some(page) = pages.next(self, limit.left(shown))? {
            let values = self.attempts_in_sets(&sets, &page)?;
            let rows = page
                .iter()
                .zip(values)
                .map(|((_, (member, deadline)), value)| {
                    inflight_row(member, *deadline, value, &hosts, now, out.json())
                })
                .collect::<Vec<_>>();
            shown += rows.len();
            out.page(rows)?;
            if out.closed() {
                return Ok(());
            }
        }
        out.finish(
            showing(shown, total, "jobs in flight"),
            json!({"now": now, "total": total, "shown": shown}),
        )
    }

    /// `failed list`: the records of the failed list, oldest first, that `filter`
    /// keeps. With a filter the whole list is read (a page at a time) to count the
    /// records it keeps.
    /// With several shards, their lists one after the other, each oldest first.
    pub fn failed_list(
        &mut self,
        out: &mut Listing,
        limit: Limit,
        filter: &Filter,
    ) -> Result<(), Error> {
        let sets = self.sets()?;
        let bounds = self.bounds(filter)?;
        let mut total = 0u64;
        for k in &sets {
            let n: u64 = on(&self.url, self.con.llen(&k.failed))?;
            total += n;
        }
        let (mut shown, mut matched) = (0, 0u64);
        let read_all = !filter.is_empty();
        let want = |shown| if read_all { PAGE } else { limit.left(shown) };
        for k in &sets {
            let mut pages = ListPages::new(&k.failed);
            while let Some(page) = pages.next(self, want(shown))? {
                let mut rows = Vec::new();
                for raw in &page {
                    let record: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
                    if !bounds.keeps(&record) {
                        continue;
                    }
                    matched += 1;
                    if rows.len() < limit.left(shown) {
                        rows.push(failed_row(record, out.json()));
                    }
                }
                shown += rows.len();
                out.page(rows)?;
                if out.closed() {
                    return Ok(());
                }
            }
        }
        let matched = if read_all { matched } else { total };
        let footer = match read_all {
            true => Some(match showing(shown, matched, "matching records") {
                Some(cut) => format!("{cut}; {} failed in all", thousands(total)),
                None => format!(
                    "{} of {} failed records matched",
                    thousands(matched),
                    thousands(total)
                ),
            }),
            false => showing(shown, total, "failed records"),
        };
        out.finish(
            footer,
            json!({"total": total, "matched": matched, "shown": shown}),
        )
    }

    /// A filter's times, against Redis's clock.
    pub(super) fn bounds(&mut self, filter: &Filter) -> Result<Bounds, Error> {
        let needs_now = [&filter.since, &filter.before]
            .iter()
            .any(|w| matches!(w, Some(When::Ago(_))));
        let now = if needs_now { self.now()? } else { 0.0 };
        Ok(Bounds {
            host: filter.host.as_ref().map(|h| h.to_ascii_lowercase()),
            error: filter.error.as_ref().map(|e| e.to_lowercase()),
            since: filter.since.map(|w| w.at(now)),
            before: filter.before.map(|w| w.at(now)),
        })
    }
}

/// `showing 20 of 1,000,000 <what>`, when the limit cut the list.
fn showing(shown: usize, total: u64, what: &str) -> Option<String> {
    ((shown as u64) < total).then(|| {
        format!(
            "showing {} of {} {what} (--limit 0 shows all)",
            thousands(shown as u64),
            thousands(total)
        )
    })
}

fn short(id: &str) -> String {
    id[..SHORT_ID.min(id.len())].to_string()
}

fn pending_row(
    member: &[u8],
    due: f64,
    attempts: u32,
    now: f64,
    as_json: bool,
) -> (Vec<String>, Value) {
    let id = job_id(member);
    // Below 0 (`-inf` included) counts as the epoch, as in the daemon.
    let due = due.max(0.0);
    let late = (now - due).max(0.0);
    let (callback, body, own) = callback_and_body(member);
    if as_json {
        let json = json!({"id": id, "producerId": own, "due": due, "lateSeconds": late, "attempts": attempts, "callback": callback, "body": body});
        return (Vec::new(), json);
    }
    let late = match late > 0.0 {
        true => human(Duration::from_secs_f64(late)),
        false => String::new(),
    };
    let cells = vec![
        short(&id),
        rfc3339(due),
        late,
        attempts.to_string(),
        callback,
        body.to_string(),
    ];
    (cells, Value::Null)
}

fn inflight_row(
    member: &[u8],
    deadline: f64,
    value: Option<AttemptsValue>,
    hosts: &[(String, String)],
    now: f64,
    as_json: bool,
) -> (Vec<String>, Value) {
    let id = job_id(member);
    let attempt = value.as_ref().map_or(0, |v| v.made);
    let token = value.and_then(|v| v.token);
    let daemon = token
        .as_deref()
        .and_then(Claimer::of_token)
        .map(|c| c.on(hosts));
    let expired = deadline < now;
    let (callback, body, own) = callback_and_body(member);
    if as_json {
        let json = json!({
            "id": id, "producerId": own, "leaseDeadline": deadline, "leaseExpired": expired, "attempt": attempt,
            "token": token, "daemon": daemon.map(|d| d.json()), "callback": callback,
            "body": body,
        });
        return (Vec::new(), json);
    }
    let cells = vec![
        short(&id),
        match expired {
            true => format!("{} (expired)", rfc3339(deadline)),
            false => rfc3339(deadline),
        },
        attempt.to_string(),
        daemon.as_ref().map_or_else(
            || token.clone().unwrap_or_else(|| "?".into()),
            Claimer::to_string,
        ),
        callback,
    ];
    (cells, Value::Null)
}

fn failed_row(record: Value, as_json: bool) -> (Vec<String>, Value) {
    if as_json {
        return (Vec::new(), masked(record));
    }
    let cells = vec![
        record["Id"].as_str().unwrap_or("?").to_string(),
        record["failedAt"].as_f64().map(rfc3339).unwrap_or_default(),
        record["attempts"].to_string(),
        callback_in(&record),
        shorten(record["error"].as_str().unwrap_or(""), 100),
    ];
    (cells, Value::Null)
}

/// A member's callback (masked), body and producer's id, from one parse: listing a
/// million jobs costs a parse each.
fn callback_and_body(member: &[u8]) -> (String, Value, Option<String>) {
    match serde_json::from_slice::<Value>(member) {
        Ok(parsed @ Value::Object(_)) => {
            let callback = callback_in(&parsed);
            let own = parsed
                .as_object()
                .and_then(producer_id_in)
                .map(str::to_string);
            (callback, body_in(parsed), own)
        }
        _ => ("?".into(), body_of(member), None),
    }
}

/// The id a producer scheduled the job under (`add --id`, the `delayqs` library):
/// `ids.lua` writes it first in the member, `{"delayqs":{"id":…,"n":…},…}`.
pub(super) fn producer_id_in(fields: &serde_json::Map<String, Value>) -> Option<&str> {
    fields.get("delayqs")?.get("id")?.as_str()
}

/// The `body` of a member (any case), as the endpoint would get it; a member that is
/// not JSON is shown whole, its credentials masked.
pub(super) fn body_of(member: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(member) {
        Ok(parsed @ Value::Object(_)) => body_in(parsed),
        _ => Value::String(crate::job::callback::mask_in_text(
            &String::from_utf8_lossy(member),
        )),
    }
}

fn body_in(parsed: Value) -> Value {
    let Value::Object(mut fields) = parsed else {
        return Value::Null;
    };
    if let Some(body) = fields.remove("body") {
        return body;
    }
    let key = fields
        .keys()
        .find(|k| k.eq_ignore_ascii_case("body"))
        .cloned();
    key.and_then(|k| fields.remove(&k)).unwrap_or(Value::Null)
}

/// The daemon named by a claim token. The daemon builds its tokens as
/// `<pid hex>.<start nanos hex>-<claim>.<job>` (`token_prefix` in
/// `dispatch/main_loop.rs`); a token of another form is shown as it is. The part
/// before the `-` is also its heartbeat record's id, which gives the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimer {
    /// Its heartbeat record's id in `<key>:daemons`.
    pub id: String,
    pub pid: u32,
    /// Unix seconds, by the daemon's own clock, when it started claiming.
    pub started: f64,
    /// From its heartbeat record; `None` once the record is gone (the daemon stopped
    /// beating a while ago) or when it cannot be read.
    pub host: Option<String>,
}

impl Claimer {
    pub fn of_token(token: &str) -> Option<Claimer> {
        let (prefix, _claim) = token.rsplit_once('-')?;
        let (pid, nanos) = prefix.split_once('.')?;
        Some(Claimer {
            id: prefix.to_string(),
            pid: u32::from_str_radix(pid, 16).ok()?,
            started: u128::from_str_radix(nanos, 16).ok()? as f64 / 1e9,
            host: None,
        })
    }

    /// With its host, from [`Admin::daemon_hosts`].
    pub fn on(mut self, hosts: &[(String, String)]) -> Claimer {
        self.host = hosts
            .iter()
            .find(|(id, _)| *id == self.id)
            .map(|(_, h)| h.clone());
        self
    }

    pub fn json(&self) -> Value {
        json!({"id": self.id, "host": self.host, "pid": self.pid, "startedAt": self.started,
               "startedTime": rfc3339(self.started)})
    }
}

impl std::fmt::Display for Claimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The pid alone may repeat across hosts; with the start time it does not.
        if let Some(host) = &self.host {
            write!(f, "host {host}, ")?;
        }
        write!(f, "pid {}, started {}", self.pid, rfc3339(self.started))
    }
}

/// A time given on the command line: absolute, or that long before Redis's now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum When {
    At(f64),
    Ago(Duration),
}

impl When {
    /// A duration (`3d`, `90m`) or a time (Unix seconds, RFC 3339).
    pub fn parse(text: &str, option: &str) -> Result<When, Error> {
        if let Ok(d) = crate::timefmt::parse_duration(text) {
            return Ok(When::Ago(d));
        }
        crate::timefmt::parse_time(text).map(When::At).map_err(|_| {
            Error::Usage(format!(
                "{option} {text:?}: expected a duration (90s, 15m, 3d, 1h30m) or a time (Unix seconds, RFC 3339)"
            ))
        })
    }

    fn at(self, now: f64) -> f64 {
        match self {
            When::At(t) => t,
            When::Ago(d) => now - d.as_secs_f64(),
        }
    }
}

/// Which failed records `failed list`, `retry` and `purge` act on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// The callback's host, or `host:port`, any case.
    pub host: Option<String>,
    /// Text the error contains, any case.
    pub error: Option<String>,
    /// Failed at or after.
    pub since: Option<When>,
    /// Failed before (`purge --older-than`).
    pub before: Option<When>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }
}

/// A [`Filter`] with its times against Redis's clock.
pub struct Bounds {
    host: Option<String>,
    error: Option<String>,
    since: Option<f64>,
    before: Option<f64>,
}

impl Bounds {
    /// Whether a failed record (parsed, and as stored) is one the filter keeps.
    pub fn keeps(&self, record: &Value) -> bool {
        let failed_at = record["failedAt"].as_f64();
        self.host.as_ref().is_none_or(|h| host_matches(h, record))
            && self.error.as_ref().is_none_or(|e| {
                record["error"]
                    .as_str()
                    .is_some_and(|text| text.to_lowercase().contains(e.as_str()))
            })
            && self.since.is_none_or(|s| failed_at.is_some_and(|t| t >= s))
            && self.before.is_none_or(|b| failed_at.is_some_and(|t| t < b))
    }
}

/// `host` is the callback's host with or without its port (as `stats` shows it).
fn host_matches(host: &str, record: &Value) -> bool {
    let key = host_of(&callback_in(record)).to_ascii_lowercase();
    key == host || key.rsplit_once(':').is_some_and(|(name, _)| name == host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_token_names_its_daemon() {
        // As `token_prefix` writes it: pid 0x1a2b, started 1764000000.5 s.
        let nanos = format!("{:x}", 1_764_000_000_500_000_000u128);
        let token = format!("1a2b.{nanos}-17.3");
        let c = Claimer::of_token(&token).unwrap();
        assert_eq!(c.pid, 0x1a2b);
        assert!((c.started - 1_764_000_000.5).abs() < 1e-3);
        assert_eq!(c.to_string(), "pid 6699, started 2025-11-24T16:00:00.500Z");
        assert_eq!(c.id, format!("1a2b.{nanos}"));
        let hosts = [
            ("1a2b.1".to_string(), "other".to_string()),
            (c.id.clone(), "web1".to_string()),
        ];
        assert_eq!(
            c.on(&hosts).to_string(),
            "host web1, pid 6699, started 2025-11-24T16:00:00.500Z"
        );
        assert_eq!(Claimer::of_token("tok.3"), None);
    }

    #[test]
    fn limit_zero_means_all() {
        assert_eq!(Limit::from_arg(0).left(1_000_000), usize::MAX);
        assert_eq!(Limit::from_arg(20).left(5), 15);
        assert_eq!(Limit::from_arg(20).left(25), 0);
    }

    #[test]
    fn filters_match_host_error_and_time() {
        let b = |host: Option<&str>, error: Option<&str>, since: Option<f64>| Bounds {
            host: host.map(str::to_string),
            error: error.map(str::to_string),
            since,
            before: None,
        };
        let raw = br#"{"callback":"http://Shop.example:8080/x","error":"HTTP 500: Disk full","failedAt":100}"#;
        let record: Value = serde_json::from_slice(raw).unwrap();
        assert!(b(Some("shop.example"), None, None).keeps(&record));
        assert!(b(Some("shop.example:8080"), None, None).keeps(&record));
        assert!(!b(Some("shop.exampl"), None, None).keeps(&record));
        assert!(b(None, Some("disk full"), None).keeps(&record));
        assert!(!b(None, Some("timeout"), None).keeps(&record));
        assert!(b(None, None, Some(100.0)).keeps(&record));
        assert!(!b(None, None, Some(100.5)).keeps(&record));
        assert!(When::parse("3d", "--since").is_ok());
        assert_eq!(
            When::parse("1764000000", "--since").unwrap(),
            When::At(1.764e9)
        );
        assert_eq!(When::parse("soon", "--since").unwrap_err().exit_code(), 64);
    }
}
