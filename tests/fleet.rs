//! Every daemon visible, and the queue paused and resumed (issue 16): heartbeat records
//! in Redis listed by `delayqs daemons`, gone at a clean stop and expired after a
//! `kill -9`; `pause` holding every daemon, across a restart, while calls in flight
//! still settle; `resume`; and the liveness lines of the metrics file.

mod common;

use std::collections::HashSet;
use std::fs;
use std::thread;
use std::time::Duration;

use common::*;
use redis::Commands;
use serde_json::{Value, json};

fn delayqs(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut all = vec![args[0], "--config", config.to_str().unwrap()];
    all.extend(&args[1..]);
    run_delayqs(&all)
}

fn json_of(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn pids(config: &std::path::Path) -> HashSet<u64> {
    json_of(&delayqs(config, &["daemons", "--json"]))["daemons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["pid"].as_u64().unwrap())
        .collect()
}

#[test]
fn daemons_lists_each_daemon_until_it_stops_or_dies() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let config = config_file(&redis, json!({}));
    let mut first = Daemon::start_with_file(&config);
    let mut second = Daemon::start_with_file(&config);
    first.wait_ready();
    second.wait_ready();
    let both: HashSet<u64> = [first.pid(), second.pid()].map(u64::from).into();
    wait_until(PATIENCE, "both daemons listed", || pids(&config) == both);

    let mut con = redis.con();
    for i in 0..20 {
        add(&mut con, &member(&endpoint.url("/x"), json!(i)), 0.0);
    }
    endpoint.wait_for(20);
    // Each record counts what its daemon delivered: together, every job once.
    wait_until(PATIENCE, "the records to count 20 deliveries", || {
        let listed = json_of(&delayqs(&config, &["daemons", "--json"]));
        let records = listed["daemons"].as_array().unwrap().clone();
        records.len() == 2
            && records
                .iter()
                .map(|d| d["delivered"].as_u64().unwrap())
                .sum::<u64>()
                == 20
            && records.iter().all(|d| {
                d["version"] == env!("CARGO_PKG_VERSION")
                    && d["workers"] == 4
                    && d["lastRound"].as_f64().unwrap() > 0.0
                    && !d.to_string().contains("redis://")
            })
    });
    let table = delayqs(&config, &["daemons"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("2 daemons serve") && text.contains(&first.pid().to_string()),
        "{text}"
    );

    // A clean stop takes its record away at once.
    first.signal("TERM");
    assert!(first.wait_exit().success());
    assert_eq!(pids(&config), [u64::from(second.pid())].into());
    // A daemon killed cannot: its record expires once it misses its beats.
    second.kill9();
    wait_until(PATIENCE, "the dead daemon's record to expire", || {
        pids(&config).is_empty()
    });
    let text = String::from_utf8_lossy(&delayqs(&config, &["daemons"]).stdout).into_owned();
    assert!(text.contains("no daemon serves"), "{text}");
}

#[test]
fn a_paused_queue_holds_every_daemon_across_a_restart_and_settles_calls_in_flight() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let endpoint = Endpoint::start(|r| match r.path.as_str() {
        "/slow" => Reply::success().after(Duration::from_millis(3000)),
        _ => Reply::success(),
    });
    let config = config_file(&redis, json!({}));
    let first = Daemon::start_with_file(&config);
    let mut second = Daemon::start_with_file(&config);
    first.wait_ready();
    second.wait_ready();

    // A call under way when the pause comes.
    let slow = member(&endpoint.url("/slow"), json!("slow"));
    add(&mut con, &slow, 0.0);
    wait_until(PATIENCE, "the slow call under way", || {
        endpoint.count() == 1
    });
    let out = delayqs(&config, &["pause", "--reason", "deploying the shop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("paused"));
    for daemon in [&first, &second] {
        daemon.wait_for_log("the queue is paused");
    }
    for i in 0..10 {
        add(&mut con, &member(&endpoint.url("/held"), json!(i)), 0.0);
    }
    // The call in flight still settles: delivered once, nothing left in flight.
    wait_until(PATIENCE, "the slow job settled", || {
        con.zcard::<_, usize>(INFLIGHT).unwrap() == 0
            && con
                .zscore::<_, _, Option<f64>>(QUEUE, &slow)
                .unwrap()
                .is_none()
    });
    // A daemon started while the queue is paused claims nothing either.
    second.kill9();
    let third = Daemon::start_with_file(&config);
    third.wait_ready();
    thread::sleep(Duration::from_secs(3));
    assert_eq!(endpoint.count(), 1, "nothing claimed while paused");
    assert_eq!(con.zcard::<_, usize>(QUEUE).unwrap(), 10);
    let listed = json_of(&delayqs(&config, &["daemons", "--json"]));
    assert_eq!(listed["paused"]["reason"], "deploying the shop");
    wait_until(PATIENCE, "every daemon to say it is paused", || {
        let listed = json_of(&delayqs(&config, &["daemons", "--json"]));
        let records = listed["daemons"].as_array().unwrap().clone();
        records.len() == 2 && records.iter().all(|d| d["paused"] == true)
    });
    // `stats` says the queue is paused, by whom and why, and not claiming.
    let stats = json_of(&delayqs(&config, &["stats", "--json"]));
    assert_eq!(stats["paused"]["reason"], "deploying the shop", "{stats}");
    assert!(stats["paused"]["since"].as_f64().is_some(), "{stats}");
    assert!(
        stats["paused"]["by"].as_str().unwrap().contains('@'),
        "{stats}"
    );
    assert_eq!(stats["pending"], 10);
    let claiming = |config: &std::path::Path| -> String {
        let out = delayqs(config, &["stats"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.starts_with("claiming "))
            .unwrap_or_else(|| panic!("no claiming line in\n{text}"))
            .to_string()
    };
    let line = claiming(&config);
    assert!(
        line.contains("no: paused since ")
            && line.ends_with(": deploying the shop (delayqs resume)"),
        "{line}"
    );
    // Pausing again says so and changes nothing.
    let again = json_of(&delayqs(&config, &["pause", "--json"]));
    assert_eq!(again["already"], true);

    let out = delayqs(&config, &["resume"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("resumed"));
    let stats = json_of(&delayqs(&config, &["stats", "--json"]));
    assert!(stats["paused"].is_null(), "{stats}");
    assert!(claiming(&config).ends_with(" yes"), "{}", claiming(&config));
    endpoint.wait_for(11);
    assert_eq!(endpoint.per_job().values().filter(|&&n| n != 1).count(), 0);
    let out = delayqs(&config, &["resume"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("was not paused"));
    drop(third);
    drop(first);
}

#[test]
fn the_metrics_file_says_whether_redis_is_up_the_last_round_the_failed_list_and_the_version() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let dir = scratch_dir();
    let file = dir.join("delayqs.prom");
    let endpoint = Endpoint::start(|_| Reply::new(500, "no"));
    let config = config_file(
        &redis,
        json!({"metricsFile": file, "metricsIntervalMs": 100, "maxRetryNum": 0}),
    );
    let daemon = Daemon::start_with_file(&config);
    daemon.wait_ready();
    add(&mut con, &member(&endpoint.url("/fails"), json!(1)), 0.0);
    wait_for_failed(&mut con, 1);
    let value = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let mut text = String::new();
    wait_until(PATIENCE, "the metrics to count the failed record", || {
        text = fs::read_to_string(&file).unwrap_or_default();
        value(&text, "delayqs_failed_jobs ") == Some(1.0)
    });
    assert_eq!(value(&text, "delayqs_redis_up "), Some(1.0), "{text}");
    assert_eq!(value(&text, "delayqs_paused "), Some(0.0), "{text}");
    let last = value(&text, "delayqs_last_round_timestamp_seconds ").unwrap();
    assert!((last - unix_now()).abs() < 30.0, "{text}");
    assert!(
        text.contains(&format!(
            "delayqs_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    drop(redis);
    wait_until(PATIENCE, "the metrics to say Redis is down", || {
        let text = fs::read_to_string(&file).unwrap_or_default();
        value(&text, "delayqs_redis_up ") == Some(0.0)
    });
}

#[test]
fn a_user_allowed_only_the_queues_keys_still_delivers_without_a_heartbeat() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let mut acl = redis::cmd("ACL");
    acl.arg("SETUSER")
        .arg("tight")
        .arg("on")
        .arg(">tight-pw")
        .arg("+@all");
    for key in [
        QUEUE,
        INFLIGHT,
        ATTEMPTS,
        FAILED,
        "DelayQs:retry_id",
        "DelayQs:body",
    ] {
        acl.arg(format!("~{key}"));
    }
    let _: () = acl.query(&mut con).unwrap();
    let endpoint = Endpoint::succeeding();
    let url = redis.url().replace("redis://", "redis://tight:tight-pw@");
    let path = scratch_dir().join("config.json");
    write_config_for(&path, &url, json!({}));
    let daemon = Daemon::start_with_file(&path);
    daemon.wait_ready();
    add(&mut con, &member(&endpoint.url("/x"), json!(1)), 0.0);
    endpoint.wait_for(1);
    let log = daemon.log();
    assert_eq!(
        log.matches("cannot write this daemon's heartbeat").count(),
        1,
        "said once: {log}"
    );
    assert!(!log.contains("tight-pw"), "{log}");
}

#[test]
fn heartbeats_expire_by_redis_clock_whatever_a_daemons_host_clock_says() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    // Paused, so neither daemon claims: Redis's clock reaches them by the heartbeat only.
    assert!(delayqs(&config, &["pause"]).status.success());
    let honest = Daemon::start_with_file(&config);
    let preload = format!("LD_PRELOAD={}", libfaketime());
    let wrapper = [
        "env",
        "FAKETIME_DONT_FAKE_MONOTONIC=1",
        &preload,
        "FAKETIME=+1h",
    ];
    let mut ahead = Daemon::start_under(&wrapper, &config);
    honest.wait_ready();
    ahead.wait_ready();
    let both: HashSet<u64> = [honest.pid(), ahead.pid()].map(u64::from).into();
    wait_until(PATIENCE, "both listed", || pids(&config) == both);
    // Several beats later the skewed daemon has not dropped the honest one's record.
    thread::sleep(Duration::from_secs(5));
    assert_eq!(pids(&config), both);
    // Killed, the skewed one's record goes within its 10 s, not an hour later.
    ahead.kill9();
    wait_until(
        Duration::from_secs(30),
        "the killed daemon's record to expire",
        || pids(&config) == [u64::from(honest.pid())].into(),
    );
}
