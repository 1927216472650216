//! What the daemon needs of the server, checked on every new connection (issue 14):
//! a master, Lua scripting. Said plainly when missing.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::json;

#[test]
fn a_replica_is_said_to_be_one_and_work_starts_once_it_is_promoted() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    add(
        &mut con,
        &member(&endpoint.url("/after-promotion"), json!(1)),
        0.0,
    );
    // A replica of nothing: read-only, as an old master is after a failover.
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(1)
        .query(&mut con)
        .unwrap();
    let daemon = Daemon::start(&redis, json!({}));
    daemon.wait_for_log("not a master");
    assert!(
        daemon.log().contains("point `redis` at the master"),
        "{}",
        daemon.log()
    );
    assert_eq!(endpoint.count(), 0);
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut con)
        .unwrap();
    endpoint.wait_for(1);
    daemon.wait_for_log("Redis answers again");
}

#[test]
fn a_server_without_scripting_stops_the_daemon_with_exit_78_and_one_line() {
    let (_server, port) = server_with(&["--rename-command", "EVAL", ""]);
    let url = format!("redis://127.0.0.1:{port}/");
    wait_until(PATIENCE, "the server to answer", || {
        redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .is_ok()
    });
    let config = config_file_for(&url, json!({}));
    let mut daemon = Daemon::start_with_file(&config);
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(78), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("does not run Lua scripts"), "{log}");
    assert!(!log.contains("ready:"), "{log}");
}

/// A server of its own on a free port with `extra` arguments, killed when dropped.
fn server_with(extra: &[&str]) -> (Guarded, u16) {
    let port = free_port();
    let mut cmd = Command::new(server_program());
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
    ])
    .args(extra)
    .arg("--dir")
    .arg(scratch_dir())
    .stdout(Stdio::null());
    (Guarded::spawn(&mut cmd), port)
}

/// A replica of `master`, killed when dropped.
fn replica_of(master: u16) -> (Guarded, u16) {
    server_with(&["--replicaof", "127.0.0.1", &master.to_string()])
}

fn wait_calls(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn wait_replicas_waits_after_each_writing_round_and_says_when_replicas_fall_short() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    let (replica, _) = replica_of(redis.port);
    wait_until(PATIENCE, "the replica to be in sync", || {
        redis::cmd("INFO")
            .arg("replication")
            .query::<String>(&mut con)
            .is_ok_and(|i| i.contains("state=online"))
    });
    let daemon = Daemon::start(
        &redis,
        json!({"waitReplicas": 1, "waitReplicasTimeoutMs": 2000, "redisTimeoutMs": 3000}),
    );
    daemon.wait_ready();
    for i in 0..5 {
        add(
            &mut con,
            &member(&endpoint.url("/replicated"), json!(i)),
            0.0,
        );
    }
    endpoint.wait_for(5);
    assert_no_bookkeeping(&mut con);
    assert!(wait_calls(&mut con) > 0, "no WAIT was sent");
    assert!(
        !daemon.log().contains("replicas (`waitReplicas`)"),
        "{}",
        daemon.log()
    );

    drop(replica);
    add(&mut con, &member(&endpoint.url("/alone"), json!("x")), 0.0);
    endpoint.wait_for(6);
    daemon.wait_for_log("only 0 of 1 replicas (`waitReplicas`) acknowledged");
}

#[test]
fn wait_replicas_longer_than_the_redis_timeout_is_refused() {
    let redis = RedisServer::start();
    let config = config_file(
        &redis,
        json!({"waitReplicas": 1, "waitReplicasTimeoutMs": 5000, "redisTimeoutMs": 1000}),
    );
    let out = run_delayqs(&["run", "--check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`waitReplicasTimeoutMs`"), "{err}");
}
