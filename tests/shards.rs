//! One queue over several shards on one redis-server (issue 15): the producers' rule,
//! fair claiming, retries staying in their shard, an old producer writing `key`, and a
//! lowered `shards` setting draining what it left behind. The same on a real Cluster
//! is in tests/cluster.rs.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use redis::Commands;
use serde_json::json;

const TAG_KEYS: [&str; 4] = [
    "{dq}:job_zqueue",
    "{dq}:inflight",
    "{dq}:attempts",
    "{dq}:fail_job",
];

fn keys(shards: usize) -> serde_json::Value {
    json!({
        "key": TAG_KEYS[0], "inflightKey": TAG_KEYS[1], "attemptsKey": TAG_KEYS[2],
        "failKey": TAG_KEYS[3], "shards": shards,
    })
}

fn merged(mut a: serde_json::Value, b: serde_json::Value) -> serde_json::Value {
    for (k, v) in b.as_object().unwrap() {
        a[k] = v.clone();
    }
    a
}

/// A shard's name for one of the configured keys, as the README gives it: shard 0 is
/// the name itself, shard i has the tag `{dq}` made `{dq:i}`.
fn shard_key(key: &str, shard: usize) -> String {
    match shard {
        0 => key.to_string(),
        i => key.replacen("{dq}", &format!("{{dq:{i}}}"), 1),
    }
}

/// The README's producer rule, computed here from Redis's own SHA-1.
fn shard_of(con: &mut redis::Connection, member: &str, shards: usize) -> usize {
    let id = job_id(con, member);
    u32::from_str_radix(&id[..8], 16).unwrap() as usize % shards
}

/// Adds `member` where a producer following the rule would.
fn produce(con: &mut redis::Connection, member: &str, due: f64, shards: usize) -> usize {
    let shard = shard_of(con, member, shards);
    let _: () = con
        .zadd(shard_key(TAG_KEYS[0], shard), member, format!("{due:.6}"))
        .unwrap();
    shard
}

fn left_in(con: &mut redis::Connection, shard: usize) -> (usize, usize, usize) {
    (
        con.zcard(shard_key(TAG_KEYS[0], shard)).unwrap(),
        con.zcard(shard_key(TAG_KEYS[1], shard)).unwrap(),
        con.hlen(shard_key(TAG_KEYS[2], shard)).unwrap(),
    )
}

#[test]
fn jobs_in_every_shard_are_delivered_once_and_retries_stay_in_their_shard() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let endpoint = Endpoint::start(|r| {
        if r.path == "/flaky" && r.attempt() == 1 {
            Reply::new(500, "not yet")
        } else {
            Reply::success()
        }
    });
    let daemon = Daemon::start(&redis, keys(3));
    daemon.wait_ready();
    assert!(
        daemon.log().contains("claiming from 3 shards of"),
        "{}",
        daemon.log()
    );

    let mut per_shard = [0; 3];
    for i in 0..60 {
        let shard = produce(&mut con, &member(&endpoint.url("/ok"), json!(i)), 0.0, 3);
        per_shard[shard] += 1;
    }
    assert!(
        per_shard.iter().all(|&n| n > 5),
        "the rule spreads: {per_shard:?}"
    );
    // A job that fails once, retried from the shard it lives in.
    let mut flaky_shard = None;
    for i in 0.. {
        let m = member(&endpoint.url("/flaky"), json!(i));
        if shard_of(&mut con, &m, 3) == 2 {
            produce(&mut con, &m, unix_now() + 0.5, 3);
            flaky_shard = Some(m);
            break;
        }
    }
    let flaky = flaky_shard.unwrap();
    wait_until(PATIENCE, "the flaky job's first attempt", || {
        endpoint.requests().iter().any(|r| r.path == "/flaky")
    });
    wait_until(PATIENCE, "the retry scheduled", || {
        con.zscore::<_, _, Option<f64>>(shard_key(TAG_KEYS[0], 2), &flaky)
            .unwrap()
            .is_some()
    });
    let elsewhere: Option<f64> = con.zscore(TAG_KEYS[0], &flaky).unwrap();
    assert_eq!(
        elsewhere, None,
        "the retry went back to shard 2, not shard 0"
    );
    endpoint.wait_for(62);
    let per_job = endpoint.per_job();
    assert_eq!(per_job.len(), 61);
    let twice: Vec<_> = endpoint
        .requests()
        .into_iter()
        .filter(|r| r.path == "/ok" && per_job[r.job_id()] != 1)
        .collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    for shard in 0..3 {
        wait_until(PATIENCE, "every shard empty", || {
            left_in(&mut con, shard) == (0, 0, 0)
        });
    }
}

#[test]
fn a_backlog_in_one_shard_does_not_starve_the_others() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let endpoint = Endpoint::start(|_| Reply::success().after(Duration::from_millis(5)));
    // One worker, so every claim is small and the turn decides who goes first.
    let daemon = Daemon::start(&redis, merged(keys(3), json!({"concurrency": 1})));
    daemon.wait_ready();
    let mut backlog = Vec::new();
    let mut others = Vec::new();
    for i in 0.. {
        let m = member(&endpoint.url("/job"), json!(i));
        match shard_of(&mut con, &m, 3) {
            0 if backlog.len() < 300 => backlog.push(m),
            1 | 2 if others.len() < 10 => others.push((m, json!(i).to_string())),
            _ => {}
        }
        if backlog.len() == 300 && others.len() == 10 {
            break;
        }
    }
    // Due earliest of all, so that due order alone would send them first.
    for (k, m) in backlog.iter().enumerate() {
        produce(&mut con, m, 1000.0 + k as f64, 3);
    }
    // The other shards' jobs come once the daemon has found their shards empty and is
    // busy with the backlog: it must look at them again.
    endpoint.wait_for(5);
    let sent_before = endpoint.requests().len();
    for (m, _) in &others {
        produce(&mut con, m, 5000.0, 3);
    }
    endpoint.wait_for(310);
    let order: Vec<String> = endpoint
        .requests()
        .iter()
        .map(|r| r.form["body"].clone())
        .collect();
    let last_other = order
        .iter()
        .rposition(|b| others.iter().any(|(_, body)| body == b))
        .expect("the other shards' jobs arrived");
    // Taking turns, the other shards' 10 jobs go out within a few dozen of being
    // added, not after the rest of the backlog.
    assert!(
        last_other < sent_before + 60,
        "the other shards waited: added after {sent_before} requests, the last went out at {last_other} of {}",
        order.len()
    );
}

#[test]
fn an_old_producer_writing_key_and_a_lowered_shards_setting_lose_nothing() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let endpoint = Endpoint::succeeding();
    // A daemon ran the queue with `shards: 4` (and recorded it), then stopped.
    let mut four = Daemon::start(&redis, keys(4));
    four.wait_ready();
    four.signal("TERM");
    assert!(four.wait_exit().success());
    let recorded: Option<String> = con.get("{dq}:job_zqueue:shards").unwrap();
    assert_eq!(recorded.as_deref(), Some("4"));
    // Written under `shards: 4`: some jobs land in shard 3, which `shards: 2` no
    // longer names; and one old producer writes the configured key itself.
    let mut expected = 0;
    let mut in_shard_3 = 0;
    for i in 0..40 {
        let m = member(&endpoint.url("/four"), json!(i));
        if produce(&mut con, &m, 0.0, 4) == 3 {
            in_shard_3 += 1;
        }
        expected += 1;
    }
    assert!(in_shard_3 > 0);
    add_to(
        &mut con,
        TAG_KEYS[0],
        &member(&endpoint.url("/old"), json!("old")),
    );
    expected += 1;
    let daemon = Daemon::start(&redis, keys(2));
    daemon.wait_ready();
    endpoint.wait_for(expected);
    assert!(
        daemon
            .log()
            .contains("shard 3 (\"{dq:3}:job_zqueue\") holds jobs but `shards` is 2"),
        "{}",
        daemon.log()
    );
    let per_job: HashMap<String, usize> = endpoint.per_job();
    assert_eq!(per_job.len(), expected);
    assert!(per_job.values().all(|&n| n == 1), "{per_job:?}");
    for shard in 0..4 {
        wait_until(PATIENCE, "every shard empty", || {
            left_in(&mut con, shard) == (0, 0, 0)
        });
    }
}

fn add_to(con: &mut redis::Connection, key: &str, member: &str) {
    let _: () = con.zadd(key, member, 0).unwrap();
}

#[test]
fn shards_without_a_hash_tag_stop_at_the_check_with_how_to_name_them() {
    let path = scratch_dir().join("config.json");
    write_config_for(&path, "redis://127.0.0.1:1/", json!({"shards": 3}));
    let out = run_delayqs(&["run", "--check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`shards` above 1") && err.contains("{DelayQs}:job_zqueue"),
        "{err}"
    );
    write_config_for(&path, "redis://127.0.0.1:1/", merged(keys(65), json!({})));
    let out = run_delayqs(&["run", "--check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shards"));
}

/// The README's one-line rule in PHP, Python and Node, for `member` and 3 shards.
fn rule_in(language: &str, member: &str) -> usize {
    let (program, args): (&str, Vec<&str>) = match language {
        "php" => (
            "php",
            vec!["-r", "echo hexdec(substr(sha1($argv[1]), 0, 8)) % 3;", "--"],
        ),
        "python" => (
            "python3",
            vec![
                "-c",
                "import hashlib, sys; print(int(hashlib.sha1(sys.argv[1].encode()).hexdigest()[:8], 16) % 3)",
            ],
        ),
        "node" => (
            "node",
            vec![
                "-e",
                "const crypto = require('crypto'); console.log(parseInt(crypto.createHash('sha1').update(process.argv[1]).digest('hex').slice(0, 8), 16) % 3)",
            ],
        ),
        _ => unreachable!(),
    };
    let out = std::process::Command::new(program)
        .args(args)
        .arg(member)
        .output()
        .unwrap_or_else(|e| panic!("{program} (make test installs it): {e}"));
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn delayqs_add_and_the_readmes_php_python_and_node_rule_pick_the_same_shard() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let path = config_file(&redis, keys(3));
    let mut seen = [0; 3];
    for i in 0..12 {
        let body = json!({"order": i, "text": "déjà vu ✓"}).to_string();
        let out = run_delayqs(&[
            "add",
            "--config",
            path.to_str().unwrap(),
            "--callback",
            "http://127.0.0.1:9/x",
            "--body",
            &body,
            "--in",
            "1h",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let added: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let m = added["member"].as_str().unwrap();
        let shard = (0..3)
            .find(|&s| {
                con.zscore::<_, _, Option<f64>>(shard_key(TAG_KEYS[0], s), m)
                    .unwrap()
                    .is_some()
            })
            .expect("add wrote the job into a shard");
        seen[shard] += 1;
        for language in ["php", "python", "node"] {
            assert_eq!(rule_in(language, m), shard, "{language} for {m}");
        }
    }
    assert!(
        seen.iter().all(|&n| n > 0),
        "12 jobs over 3 shards: {seen:?}"
    );
}

#[test]
fn the_admin_commands_see_every_shard() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let config = config_file(&redis, keys(3));
    // Two jobs in each shard, due times interleaved across the shards; one job in a
    // shard a larger setting left behind.
    let mut by_shard: HashMap<usize, Vec<(String, f64)>> = HashMap::new();
    for i in 0.. {
        let m = member("http://127.0.0.1:9/x", json!(i));
        let shard = shard_of(&mut con, &m, 3);
        let list = by_shard.entry(shard).or_default();
        if list.len() < 2 {
            let due = 2e9 + i as f64;
            produce(&mut con, &m, due, 3);
            list.push((m, due));
        }
        if by_shard.values().map(Vec::len).sum::<usize>() == 6 {
            break;
        }
    }
    // A daemon once ran it with `shards: 6` (the record says so): shard 5 is drained.
    let _: () = con.set("{dq}:job_zqueue:shards", 6).unwrap();
    let stray = member("http://127.0.0.1:9/stray", json!("s"));
    let _: () = con.zadd(shard_key(TAG_KEYS[0], 5), &stray, 1e9).unwrap();

    // pending: all seven, in due order across the shards.
    let listed = json_with(&config, &["pending", "--limit", "0"]);
    let rows = listed["jobs"]
        .as_array()
        .or(listed["rows"].as_array())
        .cloned();
    let rows = rows.unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(listed["total"], 7, "{listed}");
    let dues: Vec<f64> = rows.iter().map(|r| r["due"].as_f64().unwrap()).collect();
    assert_eq!(dues.len(), 7, "{listed}");
    assert!(dues.windows(2).all(|w| w[0] <= w[1]), "due order: {dues:?}");
    let limited = json_with(&config, &["pending", "--limit", "3"]);
    assert_eq!(limited["shown"], 3);

    // stats: the sums, and each shard.
    let stats = json_with(&config, &["stats"]);
    assert_eq!(stats["pending"], 7, "{stats}");
    let shards: Vec<u64> = stats["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["shard"].as_u64().unwrap())
        .collect();
    assert_eq!(shards, [0, 1, 2, 5]);

    // show and cancel find a job in shard 2 and the stray one by a prefix of the id.
    let (in_two, _) = &by_shard[&2][0];
    let id = job_id(&mut con, in_two);
    let shown = json_with(&config, &["show", &id[..8]]);
    assert_eq!(shown["state"], "pending", "{shown}");
    let cancelled = json_with(&config, &["cancel", &id[..10]]);
    assert!(cancelled.to_string().contains(&id), "{cancelled}");
    let still: Option<f64> = con.zscore(shard_key(TAG_KEYS[0], 2), in_two).unwrap();
    assert_eq!(still, None, "cancelled in its own shard");
    let stray_id = job_id(&mut con, &stray);
    json_with(&config, &["cancel", &stray_id[..7]]);
    assert_eq!(con.zcard::<_, usize>(shard_key(TAG_KEYS[0], 5)).unwrap(), 0);
    // A job written under two settings has a copy in two shards: both go.
    let twice = member("http://127.0.0.1:9/twice", json!("t"));
    let _: () = con.zadd(TAG_KEYS[0], &twice, 2e9).unwrap();
    let _: () = con.zadd(shard_key(TAG_KEYS[0], 1), &twice, 2e9).unwrap();
    let twice_id = job_id(&mut con, &twice);
    json_with(&config, &["cancel", &twice_id]);
    for shard in [0, 1] {
        let left: Option<f64> = con.zscore(shard_key(TAG_KEYS[0], shard), &twice).unwrap();
        assert_eq!(left, None, "the copy in shard {shard} is cancelled too");
    }

    // failed records in two shards: listed, retried by id and by filter into their
    // own shards.
    let failed_in = |shard: usize, m: &str, id: &str| {
        let record = json!({"Id": id, "member": m, "callback": "http://127.0.0.1:9/x",
            "error": "HTTP 500", "attempts": 1, "failedAt": 1.7e9});
        let mut con = redis.con();
        let _: () = con
            .rpush(shard_key(TAG_KEYS[3], shard), record.to_string())
            .unwrap();
    };
    let (m1, _) = by_shard[&1][0].clone();
    let (m0, _) = by_shard[&0][0].clone();
    let _: () = con.zrem(shard_key(TAG_KEYS[0], 1), &m1).unwrap();
    let _: () = con.zrem(TAG_KEYS[0], &m0).unwrap();
    let id1 = job_id(&mut con, &m1);
    let id0 = job_id(&mut con, &m0);
    failed_in(1, &m1, &id1);
    failed_in(0, &m0, &id0);
    let listed = json_with(&config, &["failed", "list"]);
    assert_eq!(listed["total"], 2, "{listed}");
    json_with(&config, &["failed", "retry", &id1[..8]]);
    let back: Option<f64> = con.zscore(shard_key(TAG_KEYS[0], 1), &m1).unwrap();
    assert!(back.is_some(), "retried into shard 1");
    json_with(&config, &["failed", "retry", "--all"]);
    let back: Option<f64> = con.zscore(TAG_KEYS[0], &m0).unwrap();
    assert!(back.is_some(), "retried into shard 0");
    assert_eq!(json_with(&config, &["failed", "list"])["total"], 0);
}

#[test]
fn a_key_that_only_looks_like_a_shard_is_left_alone() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let endpoint = Endpoint::succeeding();
    // Another queue of the shop, named as shard 1 of this one would be: no daemon
    // ever ran this queue with more than one shard, so it is not a shard of it.
    let theirs = member(&endpoint.url("/theirs"), json!("theirs"));
    let _: () = con.zadd("{dq:1}:job_zqueue", &theirs, 0).unwrap();
    let ours = member(&endpoint.url("/ours"), json!("ours"));
    let _: () = con.zadd(TAG_KEYS[0], &ours, 0).unwrap();
    let daemon = Daemon::start(&redis, keys(1));
    daemon.wait_ready();
    endpoint.wait_for(1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(endpoint.count(), 1, "only this queue's job");
    assert_eq!(con.zcard::<_, usize>("{dq:1}:job_zqueue").unwrap(), 1);
    assert!(!daemon.log().contains("holds jobs but"), "{}", daemon.log());
    let stats = json_with(&config_file(&redis, keys(1)), &["stats"]);
    assert_eq!(stats["pending"], 0, "{stats}");
}
