//! Operator commands against a real redis-server (issue 4): add, pending, stats,
//! failed list/retry/purge, cancel.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use serde_json::{Value, json};

use common::{
    delayqs_with as delayqs, json_with as json_of, stderr_of as stderr, stdout_of as stdout,
};

fn redis_now(con: &mut redis::Connection) -> f64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(con).unwrap();
    s as f64 + us as f64 / 1e6
}

#[test]
fn add_takes_every_time_form_and_writes_what_a_producer_writes() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    let mut con = redis.con();

    let before = redis_now(&mut con);
    let out = json_of(
        &config,
        &[
            "add",
            "--callback",
            "http://127.0.0.1:9/a",
            "--body",
            r#"{"orderId":12345678901234567890}"#,
            "--sign",
            "s1",
            "--in",
            "1h30m",
        ],
    );
    let member = out["member"].as_str().unwrap();
    assert_eq!(
        member,
        r#"{"body":{"orderId":12345678901234567890},"callback":"http://127.0.0.1:9/a","sign":"s1"}"#
    );
    assert_eq!(out["id"], job_id(&mut con, member).as_str());
    let score: f64 = con.zscore(QUEUE, member).unwrap();
    assert!(
        (score - before - 5400.0).abs() < 5.0,
        "due {score}, now {before}"
    );

    let out = delayqs(
        &config,
        &[
            "add",
            "--callback",
            "http://127.0.0.1:9/b",
            "--at",
            "1764000000.25",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("2025-11-24T16:00:00.250Z"),
        "{}",
        stdout(&out)
    );
    let score: f64 = con
        .zscore(QUEUE, r#"{"body":null,"callback":"http://127.0.0.1:9/b"}"#)
        .unwrap();
    assert_eq!(score, 1_764_000_000.25);

    let out = json_of(
        &config,
        &[
            "add",
            "--callback",
            "http://127.0.0.1:9/c",
            "--at",
            "2026-01-02T03:04:05+01:00",
        ],
    );
    assert_eq!(out["due"].as_f64(), Some(1_767_319_445.0));

    // Refused before anything is written.
    let refused = [
        vec![
            "add",
            "--callback",
            "http://127.0.0.1:9/d",
            "--body",
            "{not json",
            "--in",
            "1s",
        ],
        vec!["add", "--callback", "/relative", "--in", "1s"],
        vec!["add", "--callback", "ftp://127.0.0.1/x", "--in", "1s"],
        vec!["add", "--callback", "http://127.0.0.1:9/e", "--in", "soon"],
        vec![
            "add",
            "--callback",
            "http://127.0.0.1:9/f",
            "--in",
            "1s",
            "--at",
            "5",
        ],
        vec!["add", "--callback", "http://127.0.0.1:9/g"],
    ];
    for args in refused {
        let out = delayqs(&config, &args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(stderr(&out).starts_with("delayqs: "), "{}", stderr(&out));
    }
    assert_eq!(con.zcard::<_, usize>(QUEUE).unwrap(), 3);
}

#[test]
fn pending_and_stats_describe_the_queue() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    let mut con = redis.con();
    let now = redis_now(&mut con);
    let late = member("http://127.0.0.1:9/late", json!(1));
    add(&mut con, &late, now - 90.0);
    for i in 0..3 {
        add(
            &mut con,
            &member("http://127.0.0.1:9/later", json!(i)),
            now + 100.0 + i as f64,
        );
    }
    let _: () = con.hset(ATTEMPTS, &late, "2").unwrap();
    for host in ["a.example:8080", "a.example:8080", "b.example"] {
        let record =
            json!({"Id": "x", "callback": format!("http://{host}/cb"), "error": "HTTP 500"});
        let _: () = con.rpush(FAILED, record.to_string()).unwrap();
    }

    let pending = json_of(&config, &["pending"]);
    let jobs = pending["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 4);
    assert_eq!(jobs[0]["callback"], "http://127.0.0.1:9/late");
    assert_eq!(jobs[0]["attempts"], 2);
    assert!(jobs[0]["lateSeconds"].as_f64().unwrap() >= 90.0);
    assert_eq!(jobs[1]["lateSeconds"].as_f64(), Some(0.0));
    let dues: Vec<f64> = jobs.iter().map(|j| j["due"].as_f64().unwrap()).collect();
    assert!(dues.windows(2).all(|w| w[0] <= w[1]), "due order: {dues:?}");
    assert_eq!(
        json_of(&config, &["pending", "--due"])["jobs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        json_of(&config, &["pending", "--limit", "2"])["jobs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let table = stdout(&delayqs(&config, &["pending"]));
    assert!(
        table.starts_with("ID ") && table.contains("http://127.0.0.1:9/later"),
        "{table}"
    );

    let stats = json_of(&config, &["stats"]);
    assert_eq!(stats["pending"], 4);
    assert_eq!(stats["due"], 1);
    assert_eq!(stats["inflight"], 0);
    assert_eq!(stats["retrying"], 1);
    assert_eq!(stats["failed"], 3);
    assert!(stats["oldestDueLateSeconds"].as_f64().unwrap() >= 90.0);
    assert_eq!(
        stats["failedByHost"],
        json!({"a.example:8080": 2, "b.example": 1})
    );
    assert!(stdout(&delayqs(&config, &["stats"])).contains("waiting for a retry"));
}

#[test]
fn failed_job_is_listed_with_its_reason_then_retried_and_delivered() {
    let redis = RedisServer::start();
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    let endpoint = Endpoint::start(move |_| {
        if flag.load(Ordering::SeqCst) {
            Reply::success()
        } else {
            Reply::new(500, "disk full")
        }
    });
    let config = config_file(&redis, json!({"maxRetryNum": 1, "retryBaseMs": 50}));
    let _daemon = Daemon::start_with_file(&config);
    let mut con = redis.con();
    let added = json_of(
        &config,
        &[
            "add",
            "--callback",
            &endpoint.url("/replay"),
            "--body",
            r#"{"n":1}"#,
            "--in",
            "0s",
        ],
    );
    let id = added["id"].as_str().unwrap().to_string();
    wait_for_failed(&mut con, 1);

    let list = json_of(&config, &["failed", "list"]);
    let record = &list["records"][0];
    assert_eq!(record["Id"], id.as_str());
    assert_eq!(record["attempts"], 2);
    assert!(
        record["error"].as_str().unwrap().contains("disk full"),
        "{record}"
    );
    let table = stdout(&delayqs(&config, &["failed", "list"]));
    assert!(table.contains(&id) && table.contains("HTTP 500"), "{table}");

    healthy.store(true, Ordering::SeqCst);
    let out = delayqs(&config, &["failed", "retry", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("{id}: retried")),
        "{}",
        stdout(&out)
    );
    wait_until(PATIENCE, "the retried job delivered", || {
        endpoint
            .requests()
            .iter()
            .any(|r| r.attempt() == 1 && endpoint.count() == 3)
    });
    let last = endpoint.requests().pop().unwrap();
    assert_eq!(last.job_id(), id, "the same member came back");
    assert_eq!(last.attempt(), 1, "the attempt count was reset");
    wait_until(PATIENCE, "settled", || {
        con.hlen::<_, usize>(ATTEMPTS).unwrap() == 0
    });
    assert_eq!(con.llen::<_, usize>(FAILED).unwrap(), 0);

    let out = delayqs(&config, &["failed", "retry", "000000"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stdout(&out).contains("000000: not found"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("1 ids not found"), "{}", stderr(&out));
    assert_eq!(
        delayqs(&config, &["failed", "retry"]).status.code(),
        Some(64)
    );
}

#[test]
fn failed_purge_by_age_id_and_all() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    let mut con = redis.con();
    let now = redis_now(&mut con);
    for (id, age) in [
        ("old1", 7200.0),
        ("new1", 10.0),
        ("old2", 9000.0),
        ("new2", 5.0),
    ] {
        let record = json!({"Id": id, "failedAt": now - age, "member": "{}"});
        let _: () = con.rpush(FAILED, record.to_string()).unwrap();
    }
    let out = delayqs(&config, &["failed", "purge", "--older-than", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ids = |con: &mut redis::Connection| -> Vec<String> {
        failed_records(con)
            .iter()
            .map(|r| r["Id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&mut con), ["new1", "new2"], "order kept");
    assert!(
        delayqs(&config, &["failed", "purge", "new2"])
            .status
            .success()
    );
    assert_eq!(ids(&mut con), ["new1"]);
    assert!(
        delayqs(&config, &["failed", "purge", "--all"])
            .status
            .success()
    );
    assert_eq!(con.llen::<_, usize>(FAILED).unwrap(), 0);
    assert_eq!(
        delayqs(&config, &["failed", "purge", "--all", "x"])
            .status
            .code(),
        Some(64)
    );
}

#[test]
fn cancel_removes_a_job_waiting_for_a_retry_by_id() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|_| Reply::new(503, "busy"));
    // One worker, so that the marker below proves the retry time has passed.
    let config = config_file(&redis, json!({"retryBaseMs": 2000, "concurrency": 1}));
    let _daemon = Daemon::start_with_file(&config);
    let mut con = redis.con();
    let m = member(&endpoint.url("/cancel"), json!({"orderId": 3}));
    add(&mut con, &m, 0.0);
    let id = job_id(&mut con, &m);
    endpoint.wait_for(1);
    let mut retry_due = 0.0;
    wait_until(PATIENCE, "the retry scheduled", || {
        let score: Option<f64> = con.zscore(QUEUE, &m).unwrap();
        retry_due = score.unwrap_or(0.0);
        score.is_some()
    });

    let out = delayqs(&config, &["cancel", &id, "ffffff", "--json"]);
    assert_eq!(out.status.code(), Some(64), "an unknown id is reported");
    // Still one JSON document saying what was done.
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["results"][0], json!({"id": id, "result": "cancelled"}));
    assert_eq!(doc["results"][1]["result"], "not found among pending jobs");
    assert!(
        stderr(&out).contains("not every job was cancelled"),
        "{}",
        stderr(&out)
    );
    assert_eq!(con.zcard::<_, usize>(QUEUE).unwrap(), 0);
    assert_eq!(con.hlen::<_, usize>(ATTEMPTS).unwrap(), 0);
    // A marker due just after the cancelled retry was: claims go in due order, so had
    // the retry still been queued it would have been claimed first, and with one worker
    // its request would have arrived before the marker's.
    wait_for_marker(&mut con, retry_due + 0.1, 1);
    assert_eq!(endpoint.count(), 1, "a cancelled job was delivered");
}

/// Parses a Prometheus text file with the reference Python parser
/// (`prometheus_client`, which `make test` installs) into sample name → value.
fn parse_exposition(path: &Path) -> Result<std::collections::HashMap<String, f64>, String> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[s.name + ("{" + labels + "}" if labels else "")] = s.value
print(json.dumps(out))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

#[test]
fn metrics_file_is_valid_exposition_format_and_counts_what_happened() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|r| {
        if r.path == "/fail" {
            Reply::new(500, "no")
        } else {
            Reply::success()
        }
    });
    let dir = scratch_dir();
    let file = dir.join("delayqs.prom");
    let config = config_file(
        &redis,
        json!({"metricsFile": file, "metricsIntervalMs": 100, "maxRetryNum": 1, "retryBaseMs": 50}),
    );
    let mut con = redis.con();
    for i in 0..3 {
        add(&mut con, &member(&endpoint.url("/ok"), json!(i)), 0.0);
    }
    add(&mut con, &member(&endpoint.url("/fail"), json!("x")), 0.0);
    let _: () = con.zadd(QUEUE, "{not json", 0).unwrap();
    add(
        &mut con,
        &member(&endpoint.url("/later"), json!("later")),
        unix_now() + 3600.0,
    );
    let _daemon = Daemon::start_with_file(&config);

    let mut samples = Default::default();
    wait_until(
        PATIENCE,
        "the metrics file to count everything",
        || match parse_exposition(&file) {
            Ok(s) => {
                samples = s;
                samples.get("delayqs_failed_total") == Some(&1.0)
                    && samples.get("delayqs_delivered_total") == Some(&3.0)
                    && samples.get("delayqs_inflight_jobs") == Some(&0.0)
            }
            Err(e) if file.exists() => panic!("not valid exposition format: {e}"),
            Err(_) => false,
        },
    );
    let expect = [
        ("delayqs_delivered_total", 3.0),
        ("delayqs_attempts_failed_total", 2.0),
        ("delayqs_retries_scheduled_total", 1.0),
        ("delayqs_failed_total", 1.0),
        ("delayqs_poison_total", 1.0),
        ("delayqs_pending_jobs", 1.0),
        ("delayqs_due_jobs", 0.0),
        ("delayqs_inflight_jobs", 0.0),
        ("delayqs_lateness_seconds_count", 3.0),
        ("delayqs_lateness_seconds_bucket{le=\"+Inf\"}", 3.0),
        ("delayqs_callback_duration_seconds_count", 5.0),
    ];
    for (name, value) in expect {
        assert_eq!(samples.get(name), Some(&value), "{name} in {samples:?}");
    }
    assert!(
        !dir.join("delayqs.prom.tmp").exists(),
        "the temporary file stays behind"
    );
}

#[test]
fn failed_list_json_masks_callback_credentials_as_the_table_does() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    let _daemon = Daemon::start_with_file(&config);
    let mut con = redis.con();
    // Both are set aside without a request: credentials in a callback are refused, and
    // the second is not JSON at all.
    let with_credentials = member("http://user:s3cret1@127.0.0.1:9/x", json!(1));
    add(&mut con, &with_credentials, 0.0);
    add(&mut con, "not json http://u:s3cret2@127.0.0.1:9/y", 0.0);
    wait_for_failed(&mut con, 2);

    let out = delayqs(&config, &["failed", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("s3cret"), "{text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    let records = list["records"].as_array().unwrap();
    let parsed = records
        .iter()
        .find(|r| r.get("callback").is_some())
        .unwrap();
    assert_eq!(parsed["callback"], "http://***@127.0.0.1:9/x");
    let member: Value = serde_json::from_str(parsed["member"].as_str().unwrap()).unwrap();
    assert_eq!(member["callback"], "http://***@127.0.0.1:9/x");
    assert_eq!(member["body"], 1);
    let unparsed = records
        .iter()
        .find(|r| r.get("callback").is_none())
        .unwrap();
    assert_eq!(
        unparsed["member"], "not json http://***@127.0.0.1:9/y",
        "{unparsed}"
    );
    let table = stdout(&delayqs(&config, &["failed", "list"]));
    assert!(!table.contains("s3cret"), "{table}");
    // Only what is shown is masked: the records in Redis keep the member to put back.
    let raw: Vec<String> = con.lrange(FAILED, 0, -1).unwrap();
    assert!(raw.iter().any(|r| r.contains("s3cret1")), "{raw:?}");
}

#[test]
fn failed_retry_skips_malformed_records_unless_asked() {
    let redis = RedisServer::start();
    let gone = Arc::new(AtomicBool::new(true));
    let answer = gone.clone();
    let endpoint = Endpoint::start(move |_| match answer.load(Ordering::SeqCst) {
        true => Reply::new(410, "gone"),
        false => Reply::success(),
    });
    let mut con = redis.con();
    let config = config_file(&redis, json!({"maxRetryNum": 0}));
    let _daemon = Daemon::start_with_file(&config);
    let refused = member(&endpoint.url("/refused"), json!(1));
    add(&mut con, &refused, 0.0);
    let _: () = con.zadd(QUEUE, "{not json", 0).unwrap();
    wait_for_failed(&mut con, 2);
    gone.store(false, Ordering::SeqCst);

    let out = delayqs(&config, &["failed", "retry", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("skipped 1 malformed records"),
        "{}",
        stdout(&out)
    );
    endpoint.wait_for(2); // the refused job, retried and now delivered
    wait_for_failed(&mut con, 1);
    let left = failed_records(&mut con);
    assert!(
        left[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed job"),
        "{left:?}"
    );

    let out = delayqs(&config, &["failed", "retry", "--all", "--malformed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(": retried"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("skipped"), "{}", stdout(&out));
}
