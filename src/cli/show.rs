//! `show`: one job, found by a prefix of its id in the queue, the in-flight set and
//! the failed list, with everything Redis knows of it.

use serde_json::{Map, Value, json};

use crate::cli::admin::{Admin, AdminResult, Output, format_table, on, row};
use crate::cli::error::Error;
use crate::cli::ids::{IdArg, Resolver};
use crate::cli::lists::{Claimer, body_of, producer_id_in};
use crate::cli::pages::{ListPages, PAGE, ScanPages};
use crate::cli::shown::{callback_of, mask_secret_headers, masked};
use crate::config::ShardKeys;
use crate::job::{job_id, shorten};
use crate::store::AttemptsValue;
use crate::timefmt::{human, rfc3339};

/// Member fields that tune one job (README, "Per-job options").
const OPTIONS: [&str; 9] = [
    "maxRetry",
    "timeout",
    "backoff",
    "headers",
    "method",
    "contentType",
    "skipIfExists",
    "skipIfMissing",
    "flowKey",
];

/// Where a job was seen while its id was looked for.
enum Seen {
    /// A member of the queue or the in-flight set.
    Member(Vec<u8>),
    /// A failed record, parsed.
    Record(Value),
}

/// What Redis holds of one job.
struct Found {
    id: String,
    member: Option<Vec<u8>>,
    due: Option<f64>,
    lease: Option<f64>,
    attempts: Option<AttemptsValue>,
    records: Vec<Value>,
    /// The daemon holding its lease, with its host when its heartbeat record stands.
    daemon: Option<Claimer>,
}

impl Admin {
    pub fn show(&mut self, arg: &IdArg) -> AdminResult {
        let sets = self.sets()?;
        let Some(mut found) = self.find_job(&sets, arg)? else {
            let what = format!(
                "{}: not found among pending, in-flight or failed jobs (a delivered job leaves no trace)",
                arg.text()
            );
            return Ok(Output {
                text: format!("{what}\n"),
                json: json!({"id": arg.text(), "state": "not found"}),
                shortfall: Some("job not found".into()),
            });
        };
        let claimer = found.attempts.as_ref().and_then(|a| a.token.as_deref());
        if let Some(c) = claimer.and_then(Claimer::of_token) {
            found.daemon = Some(c.on(&self.daemon_hosts()?));
        }
        let now = self.now()?;
        Ok(describe(&found, now))
    }

    /// The one job `arg` names, and its state now: the keys are read a page at a time
    /// (Redis has no index by id), then the job's entries one command each.
    /// Every shard is looked through: a job is in the one its producer chose, which
    /// need not be the rule's (an old producer writes shard 0).
    fn find_job(&mut self, sets: &[ShardKeys], arg: &IdArg) -> Result<Option<Found>, Error> {
        let mut ids: Resolver<()> = Resolver::new(vec![arg.clone()]);
        let mut seen: Vec<(String, usize, Seen)> = Vec::new();
        for (shard, k) in sets.iter().enumerate() {
            for key in [&k.queue, &k.inflight] {
                let mut pages = ScanPages::new(key);
                while let Some(page) = pages.next(self)? {
                    for member in page {
                        let id = job_id(&member);
                        if arg.matches(&id) {
                            ids.offer(&id, || ());
                            seen.push((id, shard, Seen::Member(member)));
                        }
                    }
                }
            }
            let mut pages = ListPages::new(&k.failed);
            while let Some(page) = pages.next(self, PAGE)? {
                for raw in page {
                    let record: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
                    if let Some(id) = record["Id"].as_str().filter(|id| arg.matches(id)) {
                        let id = id.to_string();
                        ids.offer(&id, || ());
                        seen.push((id, shard, Seen::Record(record)));
                    }
                }
            }
        }
        let Some((id, ())) = ids.finish()?.pop().and_then(|(_, found)| found) else {
            return Ok(None);
        };
        let mut member = None;
        let mut records = Vec::new();
        let mut home = None;
        for (_, shard, s) in seen.into_iter().filter(|(i, _, _)| *i == id) {
            match s {
                Seen::Member(m) => {
                    member = Some(m);
                    home = Some(shard);
                }
                Seen::Record(r) => {
                    records.push(r);
                    home = home.or(Some(shard));
                }
            }
        }
        let k = &sets[home.unwrap_or(0)];
        let member = member.or_else(|| {
            records
                .iter()
                .find_map(|r| r["member"].as_str().map(|m| m.as_bytes().to_vec()))
        });
        let Some(m) = &member else {
            // A record of the old daemon, or of a member over maxJobBytes.
            return Ok(Some(Found {
                id,
                member,
                due: None,
                lease: None,
                attempts: None,
                records,
                daemon: None,
            }));
        };
        let (due, lease, attempts): (Option<f64>, Option<f64>, Option<String>) = on(
            &self.url,
            redis::pipe()
                .zscore(&k.queue, m)
                .zscore(&k.inflight, m)
                .hget(&k.attempts, m)
                .query(&mut self.con),
        )?;
        Ok(Some(Found {
            id,
            member,
            due,
            lease,
            attempts: attempts.map(|v| AttemptsValue::parse(&v)),
            records,
            daemon: None,
        }))
    }
}

/// The job's state in words, and the attempts it has made.
fn state(f: &Found, now: f64) -> (&'static str, String, u32) {
    let a = f.attempts.as_ref();
    if let Some(deadline) = f.lease {
        let made = a.map_or(0, |a| a.made);
        let until = match deadline >= now {
            true => format!(
                "lease until {} (in {})",
                rfc3339(deadline),
                ago(deadline - now)
            ),
            false => format!(
                "lease expired {} ago at {}: its daemon is gone or stuck; a daemon takes it back",
                ago(now - deadline),
                rfc3339(deadline)
            ),
        };
        let by = a
            .and_then(|a| a.token.as_deref())
            .map(|t| match &f.daemon {
                Some(c) => format!(", claimed by a daemon ({c}; token {t})"),
                None => format!(", claim token {t}"),
            })
            .unwrap_or_default();
        let text = format!("in flight: attempt {made} under way, {until}{by}");
        return ("inflight", text, made);
    }
    if let Some(due) = f.due {
        let made = a.map_or(0, |a| a.made_at(due));
        if made > 0 {
            let text = format!(
                "waiting for a retry: {made} attempts made, attempt {} due {}",
                made + 1,
                rfc3339(due.max(0.0))
            );
            return ("retrying", text, made);
        }
        return ("pending", "pending: no attempt yet".into(), 0);
    }
    if let Some(last) = f.records.last() {
        let made = last["attempts"].as_u64().unwrap_or(0) as u32;
        return (
            "failed",
            "failed for good (in the failed list)".into(),
            made,
        );
    }
    (
        "unknown",
        "unknown: it left the queue while being looked up (delivered, cancelled or failed just now)"
            .into(),
        a.map_or(0, |a| a.made),
    )
}

fn ago(secs: f64) -> String {
    human(std::time::Duration::from_secs_f64(secs.max(0.0)))
}

fn describe(f: &Found, now: f64) -> Output {
    let (state, state_text, made) = state(f, now);
    let member = f.member.as_deref().unwrap_or_default();
    let fields = match serde_json::from_slice::<Value>(member) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    };
    let first_due = f
        .attempts
        .as_ref()
        .and_then(|a| a.first_due)
        .or_else(|| f.records.last().and_then(|r| r["dueAt"].as_f64()))
        .or(f.due)
        .map(|t| t.max(0.0));
    let options = options_of(&fields);
    let sign = fields.get("sign").cloned().unwrap_or(Value::Null);
    let member_shown =
        masked(json!({ "member": String::from_utf8_lossy(member) }))["member"].clone();

    // The producer's own id, which `add --id` and the `delayqs` library put first in
    // the member (`ids.lua`).
    let producer_id = producer_id_in(&fields);
    let mut rows = vec![row(["id", &f.id])];
    if let Some(own) = producer_id {
        rows.push(row(["producer id", own]));
    }
    rows.push(row(["state", &state_text]));
    rows.push(row(["attempts", &made.to_string()]));
    if let Some(due) = f.due {
        let late = now - due.max(0.0);
        let late = match late > 0.0 {
            true => format!(" (late by {})", ago(late)),
            false => String::new(),
        };
        // A copy a producer added while the attempt runs merges into it (claim.lua).
        let label = if f.lease.is_some() {
            "queued copy due"
        } else {
            "due"
        };
        rows.push(row([label, &format!("{}{late}", rfc3339(due.max(0.0)))]));
    }
    if let Some(first) = first_due {
        rows.push(row(["first due", &rfc3339(first)]));
    }
    if f.member.is_some() {
        rows.push(row(["callback", &callback_of(member)]));
        rows.push(row(["body", &body_of(member).to_string()]));
    }
    if !sign.is_null() {
        rows.push(row(["sign", &sign.to_string()]));
    }
    if !options.is_empty() {
        let text: Vec<String> = options.iter().map(|(k, v)| format!("{k}={v}")).collect();
        rows.push(row(["options", &text.join(" ")]));
    }
    let failures: Vec<Value> = f.records.iter().map(failure).collect();
    for r in &failures {
        let when = r["failedTime"].as_str().unwrap_or("?");
        let error = shorten(r["error"].as_str().unwrap_or(""), 300);
        rows.push(row([
            "failed",
            &format!("{when}, after {} attempts: {error}", r["attempts"]),
        ]));
    }
    if f.member.is_none() {
        rows.push(row([
            "member",
            "not kept (a record of the old daemon, or a member over maxJobBytes)",
        ]));
    }
    Output {
        text: format_table(&rows),
        json: json!({
            "id": f.id, "producerId": producer_id, "state": state, "description": state_text,
            "attempts": made,
            "due": f.due.map(|d| d.max(0.0)), "firstDue": first_due,
            "leaseDeadline": f.lease,
            "token": f.attempts.as_ref().and_then(|a| a.token.clone()),
            "daemon": f.daemon.as_ref().map(Claimer::json),
            "callback": f.member.as_ref().map(|m| callback_of(m)),
            "body": f.member.as_ref().map(|m| body_of(m)),
            "sign": sign, "options": options, "failures": failures,
            "member": f.member.as_ref().map(|_| member_shown),
        }),
        shortfall: None,
    }
}

/// A failed record's failure: when, after how many attempts, why.
fn failure(record: &Value) -> Value {
    let at = record["failedAt"].as_f64();
    json!({
        "failedAt": at, "failedTime": at.map(rfc3339), "attempts": record["attempts"],
        "error": record["error"],
    })
}

/// The per-job options a member sets, with the values of headers that usually carry
/// credentials masked.
fn options_of(fields: &Map<String, Value>) -> Map<String, Value> {
    let mut options: Map<String, Value> = OPTIONS
        .iter()
        .filter_map(|name| fields.get(*name).map(|v| (name.to_string(), v.clone())))
        .collect();
    mask_secret_headers(&mut options);
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_headers_are_masked() {
        let fields = json!({"headers": {"Authorization": "Bearer x", "X-Shop": "7", "X-Api-Key": "k"}, "maxRetry": 3, "body": 1});
        let o = options_of(fields.as_object().unwrap());
        assert_eq!(
            Value::Object(o),
            json!({"headers": {"Authorization": "***", "X-Shop": "7", "X-Api-Key": "***"}, "maxRetry": 3})
        );
    }
}
