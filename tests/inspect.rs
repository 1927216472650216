//! Seeing everything (issue 16): `show`, `inflight`, ids by unique prefix in every
//! command, bodies and totals in `pending`, filters on the failed list, `--limit 0`,
//! against a real redis-server.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use redis::Commands;
use serde_json::{Value, json};

/// Runs the binary with `$COLUMNS` as given (unset when `None`), so that no test
/// depends on the terminal it runs in.
fn delayqs_cols(config: &Path, columns: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_delayqs"));
    c.args(args)
        .arg("--config")
        .arg(config)
        .env_remove("COLUMNS");
    if let Some(columns) = columns {
        c.env("COLUMNS", columns);
    }
    c.output().unwrap()
}

fn delayqs(config: &Path, args: &[&str]) -> Output {
    delayqs_cols(config, None, args)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_of(config: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = delayqs(config, &all);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&out)))
}

fn sha1(member: &str) -> String {
    sha1_smol::Sha1::from(member).hexdigest()
}

fn redis_now(con: &mut redis::Connection) -> f64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(con).unwrap();
    s as f64 + us as f64 / 1e6
}

/// Two members whose ids share their first 6 hex digits, and the length of the
/// prefix that tells them apart.
fn twins(callback: &str) -> (String, String, usize) {
    let mut seen: HashMap<String, String> = HashMap::new();
    for i in 0.. {
        let m = member(callback, json!(i));
        let id = sha1(&m);
        if let Some(other) = seen.insert(id[..6].to_string(), m.clone()) {
            let other_id = sha1(&other);
            let apart = (0..40).find(|&d| id.as_bytes()[d] != other_id.as_bytes()[d]);
            return (other, m, apart.unwrap() + 1);
        }
    }
    unreachable!()
}

fn add_many(con: &mut redis::Connection, members: &[(String, f64)]) {
    let mut pipe = redis::pipe();
    for (m, due) in members {
        pipe.zadd(QUEUE, m, *due).ignore();
    }
    let _: () = pipe.query(con).unwrap();
}

#[test]
fn show_describes_a_pending_a_retrying_and_a_failed_job() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    let mut con = redis.con();
    let now = redis_now(&mut con);

    let pending = json!({"body": {"orderId": 7}, "callback": "http://shop.example/p",
        "maxRetry": 3, "headers": {"Authorization": "Bearer s3cret", "X-Shop": "7"}})
    .to_string();
    add(&mut con, &pending, now + 3600.0);
    let id = sha1(&pending);
    let doc = json_of(&config, &["show", &id[..8]]);
    assert_eq!(doc["id"], id.as_str());
    assert_eq!(doc["state"], "pending");
    assert_eq!(doc["attempts"], 0);
    assert_eq!(doc["body"], json!({"orderId": 7}));
    assert_eq!(doc["callback"], "http://shop.example/p");
    assert_eq!(doc["options"]["maxRetry"], 3);
    assert_eq!(doc["options"]["headers"]["X-Shop"], "7");
    let text = stdout(&delayqs(&config, &["show", &id[..8]]));
    assert!(
        text.contains("pending") && text.contains(r#"{"orderId":7}"#),
        "{text}"
    );
    assert!(
        !text.contains("s3cret"),
        "a credential header is shown: {text}"
    );
    assert!(!doc.to_string().contains("s3cret"), "{doc}");

    assert!(doc["producerId"].is_null(), "{doc}");
    assert!(!text.contains("producer id"), "{text}");

    // Scheduled under the producer's own id: `show` says it, and so does `pending`.
    let own = json_of(
        &config,
        &[
            "add",
            "--id",
            "order:42:close",
            "--callback",
            "http://shop.example/own",
            "--body",
            r#"{"orderId":42}"#,
            "--in",
            "2h",
        ],
    );
    let own_id = own["jobId"].as_str().unwrap().to_string();
    let doc = json_of(&config, &["show", &own_id[..8]]);
    assert_eq!(doc["producerId"], "order:42:close", "{doc}");
    assert_eq!(doc["state"], "pending");
    let text = stdout(&delayqs(&config, &["show", &own_id[..8]]));
    let line = text
        .lines()
        .find(|l| l.starts_with("producer id"))
        .unwrap_or_default();
    assert!(line.ends_with(" order:42:close"), "{text}");
    let listed = json_of(&config, &["pending", "--limit", "0"]);
    let of = |id: &str| -> Value {
        listed["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed: {listed}"))
    };
    assert_eq!(of(&own_id)["producerId"], "order:42:close");
    assert!(of(&id)["producerId"].is_null());

    // Waiting for a retry: two attempts made, left at its score by the daemon.
    let retrying = member("http://shop.example/r", json!(2));
    add(&mut con, &retrying, now + 60.0);
    let score: String = con.zscore(QUEUE, &retrying).unwrap();
    let value = format!("2:{:.6} @{score}", now - 100.0);
    let _: () = con.hset(ATTEMPTS, &retrying, value).unwrap();
    let doc = json_of(&config, &["show", &sha1(&retrying)[..6]]);
    assert_eq!(doc["state"], "retrying", "{doc}");
    assert_eq!(doc["attempts"], 2);
    let first_due = doc["firstDue"].as_f64().unwrap();
    assert!((first_due - (now - 100.0)).abs() < 0.01, "{doc}");
    assert!((doc["due"].as_f64().unwrap() - (now + 60.0)).abs() < 0.01);

    // Failed for good, with credentials in its callback: masked everywhere.
    let failed = member("http://user:pw-s3cret@shop.example/f", json!(3));
    let fid = sha1(&failed);
    let record = json!({"Id": fid, "attempts": 4, "error": "HTTP 500: disk full",
        "dueAt": now - 500.0, "failedAt": now - 50.0, "member": failed,
        "callback": "http://user:pw-s3cret@shop.example/f", "body": 3});
    let _: () = con.rpush(FAILED, record.to_string()).unwrap();
    let out = delayqs(&config, &["show", &fid[..10], "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("s3cret"), "{}", stdout(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["state"], "failed");
    assert_eq!(doc["attempts"], 4);
    assert_eq!(doc["callback"], "http://***@shop.example/f");
    assert_eq!(doc["failures"][0]["error"], "HTTP 500: disk full");
    assert!((doc["failures"][0]["failedAt"].as_f64().unwrap() - (now - 50.0)).abs() < 0.01);
    let text = stdout(&delayqs(&config, &["show", &fid[..10]]));
    assert!(
        text.contains("disk full") && !text.contains("s3cret"),
        "{text}"
    );
}

#[test]
fn show_and_inflight_name_the_daemon_holding_a_job() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|_| Reply::success().after(Duration::from_secs(3)));
    let config = config_file(&redis, json!({"concurrency": 2}));
    let daemon = Daemon::start_with_file(&config);
    let mut con = redis.con();
    let members: Vec<String> = (0..1)
        .map(|i| member(&endpoint.url("/slow"), json!(i)))
        .collect();
    for m in &members {
        add(&mut con, m, 0.0);
    }
    // The other under the producer's own id.
    let own = json_of(
        &config,
        &[
            "add",
            "--id",
            "order:7",
            "--callback",
            &endpoint.url("/slow"),
            "--in",
            "0s",
        ],
    );
    wait_until(PATIENCE, "both jobs in flight", || {
        con.zcard::<_, usize>(INFLIGHT).unwrap() == 2
    });

    // The daemon's heartbeat record, under the id its claim tokens begin with, names
    // its host.
    let records: HashMap<String, String> = con.hgetall(format!("{QUEUE}:daemons")).unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    let (record_id, record) = records.into_iter().next().unwrap();
    let record: Value = serde_json::from_str(record.split_once(' ').unwrap().1).unwrap();
    let host = record["host"].as_str().unwrap().to_string();
    assert!(!host.is_empty(), "{record}");

    let list = json_of(&config, &["inflight"]);
    assert_eq!(list["total"], 2);
    let jobs = list["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    let now = list["now"].as_f64().unwrap();
    for job in jobs {
        assert_eq!(job["daemon"]["pid"], daemon.pid(), "{job}");
        assert_eq!(job["daemon"]["host"], host.as_str(), "{job}");
        assert_eq!(job["daemon"]["id"], record_id.as_str(), "{job}");
        assert_eq!(job["attempt"], 1);
        assert!(job["leaseDeadline"].as_f64().unwrap() > now, "{job}");
        assert_eq!(job["leaseExpired"], false);
        let own_id = job["id"] == own["jobId"];
        assert_eq!(
            job["producerId"],
            if own_id {
                json!("order:7")
            } else {
                json!(null)
            }
        );
    }
    assert!(jobs.iter().any(|j| j["producerId"] == "order:7"), "{list}");
    let out = delayqs(&config, &["inflight", "--limit", "1"]);
    let text = stdout(&out);
    let named = format!("host {host}, pid {}, started ", daemon.pid());
    assert!(text.contains(&named), "{text}");
    assert!(text.contains("showing 1 of 2 jobs in flight"), "{text}");

    let id = sha1(&members[0]);
    let doc = json_of(&config, &["show", &id[..7]]);
    assert_eq!(doc["state"], "inflight", "{doc}");
    assert_eq!(doc["daemon"]["pid"], daemon.pid());
    assert_eq!(doc["daemon"]["host"], host.as_str(), "{doc}");
    assert_eq!(doc["attempts"], 1);
    let text = stdout(&delayqs(&config, &["show", &id[..7]]));
    assert!(
        text.contains("in flight") && text.contains(&format!("claimed by a daemon ({named}")),
        "{text}"
    );
    endpoint.wait_for(2);
}

#[test]
fn every_command_takes_a_unique_prefix_and_refuses_an_ambiguous_one() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    let mut con = redis.con();
    let (a, b, apart) = twins("http://127.0.0.1:9/twin");
    let (ida, idb) = (sha1(&a), sha1(&b));
    add(&mut con, &a, 1e10);
    add(&mut con, &b, 1e10);

    for args in [
        vec!["show", &ida[..6]],
        vec!["cancel", &ida[..6]],
        vec!["cancel", &idb[..apart], &ida[..6]],
    ] {
        let out = delayqs(&config, &args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("ambiguous") && err.contains(&ida) && err.contains(&idb),
            "{err}"
        );
    }
    assert_eq!(
        con.zcard::<_, usize>(QUEUE).unwrap(),
        2,
        "nothing was cancelled"
    );

    for short in ["abcde", "xyz123", "1"] {
        let out = delayqs(&config, &["show", short]);
        assert_eq!(out.status.code(), Some(64), "{short}");
        assert!(stderr(&out).starts_with("delayqs: "), "{}", stderr(&out));
    }
    let out = delayqs(&config, &["show", "000000"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stdout(&out).contains("000000: not found"),
        "{}",
        stdout(&out)
    );
    // A whole id that Redis does not hold (delivered, or never there): not found, in
    // text and in JSON, exit 64.
    let gone = sha1("a member never added");
    let out = delayqs(&config, &["show", &gone]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "{gone}: not found among pending, in-flight or failed jobs (a delivered job leaves no trace)\n"
        )
    );
    let out = delayqs(&config, &["show", &gone[..9], "--json"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc, json!({"id": &gone[..9], "state": "not found"}));

    let doc = json_of(&config, &["show", &ida[..apart]]);
    assert_eq!(doc["id"], ida.as_str());
    let out = delayqs(&config, &["cancel", &idb[..apart].to_uppercase()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("{idb}: cancelled")),
        "{}",
        stdout(&out)
    );
    let left: Vec<String> = con.zrange(QUEUE, 0, -1).unwrap();
    assert_eq!(left.as_slice(), std::slice::from_ref(&a));

    // The failed list: the same rules for retry and purge.
    let _: () = con.del(QUEUE).unwrap();
    for (id, m) in [(&ida, &a), (&idb, &b)] {
        let record = json!({"Id": id, "member": m, "error": "HTTP 500", "failedAt": 1.0});
        let _: () = con.rpush(FAILED, record.to_string()).unwrap();
    }
    let out = delayqs(&config, &["failed", "purge", &ida[..6]]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("ambiguous"), "{}", stderr(&out));
    assert_eq!(con.llen::<_, usize>(FAILED).unwrap(), 2);
    let out = delayqs(&config, &["failed", "retry", &ida[..apart]]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("{ida}: retried")),
        "{}",
        stdout(&out)
    );
    let queued: Vec<String> = con.zrange(QUEUE, 0, -1).unwrap();
    assert_eq!(queued, [a]);
    let out = delayqs(&config, &["failed", "purge", &idb[..apart], "abcdef"]);
    assert_eq!(out.status.code(), Some(64), "abcdef is not there");
    assert!(
        stdout(&out).contains("abcdef: not found"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        con.llen::<_, usize>(FAILED).unwrap(),
        0,
        "the one found was purged"
    );
}

#[test]
fn pending_shows_bodies_cut_to_the_width_and_how_many_it_left_out() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    let mut con = redis.con();
    let now = redis_now(&mut con);
    let long = "x".repeat(300);
    // 700 due, 600 later: more than a page of each.
    let jobs: Vec<(String, f64)> = (0..1300)
        .map(|i| {
            let body = json!({"n": i, "text": long});
            let due = if i < 700 {
                now - 1000.0 + i as f64
            } else {
                now + i as f64
            };
            (member("http://127.0.0.1:9/p", body), due)
        })
        .collect();
    add_many(&mut con, &jobs);

    let out = delayqs_cols(&config, Some("120"), &["pending"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 22, "{text}");
    assert!(
        lines[0].starts_with("ID ") && lines[0].ends_with("BODY"),
        "{text}"
    );
    assert!(lines[1].contains(r#"{"n":0,"#), "{text}");
    assert!(lines.iter().all(|l| l.chars().count() <= 120), "{text}");
    assert_eq!(
        lines[21],
        "showing 20 of 1,300 pending jobs (--limit 0 shows all)"
    );
    let wide = stdout(&delayqs(&config, &["pending", "--limit", "3"]));
    assert!(wide.lines().all(|l| l.chars().count() <= 100), "{wide}");
    assert!(
        wide.lines().nth(1).unwrap().chars().count() == 100,
        "{wide}"
    );

    let doc = json_of(&config, &["pending", "--limit", "2"]);
    assert_eq!(doc["total"], 1300);
    assert_eq!(doc["shown"], 2);
    assert_eq!(
        doc["jobs"][1]["body"],
        json!({"n": 1, "text": long}),
        "whole in JSON"
    );

    let all = json_of(&config, &["pending", "--limit", "0"]);
    let listed: Vec<&str> = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 1300);
    assert_eq!(
        listed.iter().collect::<HashSet<_>>().len(),
        1300,
        "no job twice"
    );
    let expected: Vec<String> = jobs.iter().map(|(m, _)| sha1(m)).collect();
    assert_eq!(listed, expected, "in due order");
    let due = json_of(&config, &["pending", "--due", "--limit", "0"]);
    assert_eq!(due["jobs"].as_array().unwrap().len(), 700);
    assert_eq!(due["total"], 700);
    let text = stdout(&delayqs(&config, &["pending", "--limit", "0"]));
    assert_eq!(
        text.lines().count(),
        1301,
        "no 'showing' line when all are shown"
    );
}

#[test]
fn failed_filters_choose_what_list_retry_and_purge_act_on() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    let mut con = redis.con();
    let now = redis_now(&mut con);
    // 450 records, more than two steps of failed.lua: every third on b.example:8080.
    let mut pipe = redis::pipe();
    for i in 0..450 {
        let (host, error, age) = match i % 3 {
            0 => ("b.example:8080", "HTTP 503: busy", 10.0),
            1 => ("a.example", "timed out after 5 s", 7200.0),
            _ => ("a.example", "HTTP 500: disk full", 10.0),
        };
        let callback = format!("http://{host}/cb");
        let m = member(&callback, json!(i));
        let record = json!({"Id": sha1(&m), "callback": callback, "member": m,
            "error": error, "failedAt": now - age, "n": i});
        pipe.rpush(FAILED, record.to_string()).ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();

    let doc = json_of(
        &config,
        &["failed", "list", "--host", "B.example", "--limit", "0"],
    );
    assert_eq!(
        (doc["matched"].as_u64(), doc["total"].as_u64()),
        (Some(150), Some(450))
    );
    assert_eq!(doc["records"].as_array().unwrap().len(), 150);
    let doc = json_of(
        &config,
        &["failed", "list", "--error", "TIMED OUT", "--limit", "5"],
    );
    assert_eq!(doc["matched"], 150);
    assert_eq!(doc["shown"], 5);
    assert!(
        doc["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["n"].as_u64().unwrap() % 3 == 1)
    );
    let doc = json_of(
        &config,
        &["failed", "list", "--since", "1h", "--host", "a.example"],
    );
    assert_eq!(doc["matched"], 150, "the recent disk-full ones");
    let text = stdout(&delayqs(
        &config,
        &["failed", "list", "--host", "a.example", "--limit", "2"],
    ));
    assert!(
        text.contains("showing 2 of 300 matching records (--limit 0 shows all); 450 failed in all"),
        "{text}"
    );
    let text = stdout(&delayqs(
        &config,
        &["failed", "list", "--error", "nothing like it"],
    ));
    assert!(text.contains("0 of 450 failed records matched"), "{text}");
    assert_eq!(
        json_of(&config, &["failed", "list", "--limit", "0"])["records"]
            .as_array()
            .unwrap()
            .len(),
        450
    );

    let out = delayqs(&config, &["failed", "purge", "--host", "b.example"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let left = failed_records(&mut con);
    let ns: Vec<u64> = left.iter().map(|r| r["n"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (0..450).filter(|n| n % 3 != 0).collect();
    assert_eq!(
        ns, expected,
        "only b.example's went, the rest in their order"
    );

    let out = delayqs(
        &config,
        &["failed", "retry", "--error", "timed out", "--since", "3h"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(con.zcard::<_, usize>(QUEUE).unwrap(), 150);
    let left = failed_records(&mut con);
    assert!(
        left.iter().all(|r| r["error"] == "HTTP 500: disk full"),
        "{left:?}"
    );
    assert_eq!(left.len(), 150);

    let out = delayqs(
        &config,
        &[
            "failed",
            "purge",
            "--older-than",
            "1h",
            "--host",
            "a.example",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        con.llen::<_, usize>(FAILED).unwrap(),
        150,
        "none is that old"
    );

    for args in [
        vec!["failed", "retry", "--all", "--host", "a.example"],
        vec!["failed", "purge", "--since", "yesterday"],
        vec!["failed", "list", "--since", "soon"],
    ] {
        assert_eq!(delayqs(&config, &args).status.code(), Some(64), "{args:?}");
    }
}

#[test]
fn a_listing_that_fails_before_reading_prints_nothing_on_stdout() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    let mut con = redis.con();
    let _: () = con.set(FAILED, "not a list").unwrap();
    for args in [
        vec!["failed", "list", "--json"],
        vec!["failed", "list", "--limit", "0"],
    ] {
        let out = delayqs(&config, &args);
        assert_eq!(out.status.code(), Some(69), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?}");
        assert!(stderr(&out).contains("WRONGTYPE"), "{}", stderr(&out));
    }
    let empty = json_of(&config, &["pending"]);
    assert_eq!(
        (empty["jobs"].clone(), empty["total"].clone()),
        (json!([]), json!(0))
    );
}
