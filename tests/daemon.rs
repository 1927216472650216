//! Running like a Unix daemon (issue 3): start -d, stop, restart, status through the
//! pid file; log files; SIGHUP reload.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn delayqs(command: &str, config: &Path, extra: &[&str]) -> Output {
    let mut args = vec![command, "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_delayqs(&args)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn pid_of(config: &Path) -> u32 {
    fs::read_to_string(config.with_file_name("delayqs.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Whether a process runs (a zombie does not: nothing may reap it in a container).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.rsplit(") ").next().unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

/// Stops a detached daemon however the test ends.
struct Detached(PathBuf);

impl Drop for Detached {
    fn drop(&mut self) {
        let _ = delayqs("stop", &self.0, &["--force"]);
    }
}

#[test]
fn start_detached_status_restart_stop() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let config = config_file(&redis, json!({}));
    let _guard = Detached(config.clone());

    assert_eq!(delayqs("status", &config, &[]).status.code(), Some(3));
    let out = delayqs("start", &config, &["-d"]);
    assert!(out.status.success(), "{}", text(&out));
    let pid = pid_of(&config);
    assert!(
        text(&out).contains(&format!("started (pid {pid})")),
        "{}",
        text(&out)
    );

    let status = delayqs("status", &config, &[]);
    assert_eq!(status.status.code(), Some(0));
    assert!(
        text(&status).contains(&format!("running (pid {pid}, up ")),
        "{}",
        text(&status)
    );

    // A second start refuses, detached or not, while the first lives.
    for extra in [&["-d"][..], &[][..]] {
        let again = delayqs("start", &config, extra);
        assert_eq!(again.status.code(), Some(1), "{}", text(&again));
        assert!(
            text(&again).contains(&format!("already running (pid {pid})")),
            "{}",
            text(&again)
        );
    }

    let mut con = redis.con();
    add(&mut con, &member(&endpoint.url("/detached"), json!(1)), 0.0);
    endpoint.wait_for(1);

    let out = delayqs("restart", &config, &["-d"]);
    assert!(out.status.success(), "{}", text(&out));
    let new_pid = pid_of(&config);
    assert_ne!(new_pid, pid);
    assert!(!alive(pid), "the old process lives on");
    add(
        &mut con,
        &member(&endpoint.url("/restarted"), json!(2)),
        0.0,
    );
    endpoint.wait_for(2);

    let out = delayqs("stop", &config, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("waiting up to"), "{}", text(&out));
    assert!(!config.with_file_name("delayqs.pid").exists());
    assert_eq!(delayqs("status", &config, &[]).status.code(), Some(3));
    assert!(
        delayqs("stop", &config, &[]).status.success(),
        "stop when stopped is fine"
    );
}

#[test]
fn stale_pid_file_does_not_block_a_start() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    let _guard = Detached(config.clone());
    // A pid that lives but is not delayqs: this test's own.
    fs::write(
        config.with_file_name("delayqs.pid"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    let status = delayqs("status", &config, &[]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
    assert!(text(&status).contains("dead"), "{}", text(&status));

    let out = delayqs("start", &config, &["-d"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(pid_of(&config), std::process::id());
    assert!(delayqs("stop", &config, &[]).status.success());
}

#[test]
fn start_detached_reports_why_the_daemon_could_not_start() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({"pid": "/proc/delayqs/delayqs.pid"}));
    let out = delayqs("start", &config, &["-d"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("cannot write the pid file /proc/delayqs/delayqs.pid"),
        "{}",
        text(&out)
    );

    // Nothing answers on this port: the parent gives up, stops the child, says why.
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = config_file(
        &redis,
        json!({"redis": format!("redis://127.0.0.1:{dead_port}/"), "redisTimeoutMs": 200}),
    );
    let _guard = Detached(config.clone());
    let out = delayqs("start", &config, &["-d"]);
    assert_eq!(out.status.code(), Some(69), "{}", text(&out));
    assert!(
        text(&out).contains("not ready") && text(&out).contains("Redis at"),
        "{}",
        text(&out)
    );
    assert_eq!(delayqs("status", &config, &[]).status.code(), Some(3));
}

#[test]
fn stop_of_a_busy_daemon_loses_nothing() {
    const JOBS: usize = 12;
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|_| Reply::success().after(Duration::from_millis(500)));
    let config = config_file(&redis, json!({"concurrency": 2}));
    let _guard = Detached(config.clone());
    let mut con = redis.con();
    for i in 0..JOBS {
        add(
            &mut con,
            &member(&endpoint.url("/busy"), json!({ "n": i })),
            0.0,
        );
    }
    assert!(delayqs("start", &config, &["-d"]).status.success());
    endpoint.wait_for(2);
    let out = delayqs("stop", &config, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(con.zcard::<_, usize>(INFLIGHT).unwrap(), 0);
    let queued: usize = con.zcard(QUEUE).unwrap();
    assert_eq!(queued + endpoint.count(), JOBS, "a job went missing");

    assert!(delayqs("start", &config, &["-d"]).status.success());
    endpoint.wait_for(JOBS);
    wait_until(PATIENCE, "all settled", || {
        con.zcard::<_, usize>(QUEUE).unwrap() == 0 && con.hlen::<_, usize>(ATTEMPTS).unwrap() == 0
    });
    assert!(
        endpoint.per_job().values().all(|n| *n == 1),
        "delivered twice"
    );
    assert!(delayqs("stop", &config, &[]).status.success());
}

#[test]
fn sighup_applies_log_level_and_poll_interval_and_keeps_a_bad_config_out() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    add(&mut con, &member(&endpoint.url("/before"), json!(1)), 0.0);
    // The lease is pinned: its default follows pollIntervalMs, and would change too.
    let config = config_file(
        &redis,
        json!({"logLevel": "warn", "pollIntervalMs": 10000, "leaseMs": 60000}),
    );
    let daemon = Daemon::start_with_file(&config);
    endpoint.wait_for(1);
    // The main loop logs "delivered" (at debug) as it takes the outcome, before it
    // writes the outcome to Redis: once no bookkeeping is left, the line would be in.
    assert_no_bookkeeping(&mut con);
    assert!(
        !daemon.log().contains("delivered"),
        "debug lines at level warn"
    );

    write_config(
        &config,
        &redis,
        json!({"logLevel": "debug", "pollIntervalMs": 20, "concurrency": 9, "leaseMs": 60000}),
    );
    daemon.signal("HUP");
    daemon.wait_for_log("config reloaded: logLevel, pollIntervalMs now in effect");
    daemon.wait_for_log("need a restart were not applied: concurrency");

    // The job below must be added while the loop sleeps out its poll interval, not be
    // caught by a round that something else set off: the reload's own, or one for an
    // outcome. A marker added now is claimed in a round after the reload; its outcome
    // is written in the round its worker rings for; once that left no bookkeeping, the
    // loop sleeps for the poll interval, new (20 ms) or old (10 s).
    wait_for_marker(&mut con, unix_now(), 1);
    assert_no_bookkeeping(&mut con);
    let added = Instant::now();
    add(&mut con, &member(&endpoint.url("/after"), json!(2)), 0.0);
    endpoint.wait_for(2);
    let took = added.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}: the old poll interval still applies"
    );
    daemon.wait_for_log(&format!("delivered to {}", endpoint.url("/after")));

    fs::write(&config, "{\"concurrency\": ").unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("config not reloaded, the running one stays");

    // Valid on its own, but its lease is too short for the redisTimeoutMs still in use.
    write_config(
        &config,
        &redis,
        json!({"timeoutMs": 5000, "redisTimeoutMs": 100, "leaseMs": 5600}),
    );
    daemon.signal("HUP");
    daemon.wait_for_log("5 × the running `redisTimeoutMs` + `pollIntervalMs` = 30020 ms");
    add(&mut con, &member(&endpoint.url("/still"), json!(3)), 0.0);
    endpoint.wait_for(3);
}

#[test]
fn log_files_split_errors_and_reopen_on_sigusr1() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let logs = scratch_dir();
    let config = config_file(&redis, json!({"logDir": logs, "logLevel": "info"}));
    let daemon = Daemon::start_with_file(&config);
    let read = |name: &str| fs::read_to_string(logs.join(name)).unwrap_or_default();
    wait_until(PATIENCE, "the start line in info.log", || {
        read("info.log").contains("running")
    });
    assert_eq!(daemon.log(), "", "nothing on stderr when logging to files");

    let mut con = redis.con();
    let _: () = con.zadd(QUEUE, "not json", 0).unwrap();
    wait_until(PATIENCE, "the malformed job in error.log", || {
        read("error.log").contains("malformed")
    });
    assert!(
        read("info.log").contains("malformed"),
        "info.log has errors too"
    );
    assert!(
        !read("error.log").contains("running"),
        "error.log has only errors"
    );

    // logrotate moves the file, then signals.
    fs::rename(logs.join("info.log"), logs.join("info.log.moved")).unwrap();
    daemon.signal("USR1");
    wait_until(PATIENCE, "a new info.log", || {
        logs.join("info.log").exists()
    });
    add(&mut con, &member(&endpoint.url("/x"), json!(1)), 0.0);
    let _: () = con.zadd(QUEUE, "[still not json]", 0).unwrap();
    wait_until(PATIENCE, "new lines in the new info.log", || {
        read("info.log").contains("malformed")
    });
}

#[test]
fn stop_force_kills_a_daemon_that_does_not_stop() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({"timeoutMs": 1000}));
    let _guard = Detached(config.clone());
    assert!(delayqs("start", &config, &["-d"]).status.success());
    let pid = pid_of(&config);
    // A stopped process cannot act on SIGTERM; only SIGKILL ends it.
    let froze = std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(froze.success());

    let out = delayqs("stop", &config, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--force"), "{}", text(&out));
    // Frozen, it runs as far as the pid goes, but its heartbeat has lapsed: 150, not 0.
    let status = delayqs("status", &config, &[]);
    assert_eq!(status.status.code(), Some(150), "{}", text(&status));
    assert!(text(&status).contains("running"), "{}", text(&status));

    let out = delayqs("stop", &config, &["--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("killed"), "{}", text(&out));
    assert!(!alive(pid));
    assert_eq!(delayqs("status", &config, &[]).status.code(), Some(3));
}

#[test]
fn status_says_whether_redis_answers_and_takes_writes() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    let _guard = Detached(config.clone());
    let out = delayqs("start", &config, &["-d"]);
    assert!(out.status.success(), "{}", text(&out));
    // Just started, its first heartbeat may precede its first round: 0 either way.
    let status = delayqs("status", &config, &[]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(
        text(&status).contains("answers (master)"),
        "{}",
        text(&status)
    );
    wait_until(PATIENCE, "status to tell the last round's age", || {
        let status = delayqs("status", &config, &[]);
        status.status.code() == Some(0) && text(&status).contains("its last round ended")
    });
    // A replica of nothing: up, but read-only, as an old master is after a failover.
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(1)
        .query(&mut redis.con())
        .unwrap();
    let status = delayqs("status", &config, &[]);
    assert_eq!(status.status.code(), Some(150), "runs, but cannot work");
    assert!(text(&status).contains("read-only"), "{}", text(&status));
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut redis.con())
        .unwrap();
    drop(redis);
    let status = delayqs("status", &config, &[]);
    assert_eq!(status.status.code(), Some(150));
    assert!(
        text(&status).contains("does not answer"),
        "{}",
        text(&status)
    );
}

#[test]
fn stop_and_status_work_when_the_config_was_broken_after_start() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    let _guard = Detached(config.clone());
    let out = delayqs("start", &config, &["-d"]);
    assert!(out.status.success(), "{}", text(&out));
    let pid = pid_of(&config);

    // A bad edit meant for a SIGHUP: a value out of range, then a syntax error. The pid
    // file is still named in it; status and stop need nothing else.
    let good = fs::read_to_string(&config).unwrap();
    let out_of_range = good.replacen("\"concurrency\":4", "\"concurrency\":-3", 1);
    assert_ne!(out_of_range, good);
    fs::write(&config, &out_of_range).unwrap();
    let status = delayqs("status", &config, &[]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let err = String::from_utf8_lossy(&status.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("key `concurrency`"), "{err}");
    assert!(err.contains("delayqs.pid"), "{err}");
    assert!(
        text(&status).contains(&format!("running (pid {pid}")),
        "{}",
        text(&status)
    );

    fs::write(&config, format!("{},", good.trim_end_matches('}'))).unwrap();
    let out = delayqs("stop", &config, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("delayqs stopped"), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out)
    );
    assert!(!alive(pid), "the daemon lives on");
    assert_eq!(delayqs("status", &config, &[]).status.code(), Some(3));

    // A file with no `pid` key at all: the default pid file, and the warning says so.
    fs::write(&config, "{\"concurrency\": -3}").unwrap();
    let status = delayqs("status", &config, &[]);
    let err = String::from_utf8_lossy(&status.stderr).into_owned();
    assert!(err.contains("/var/log/delayQs/delayqs.pid"), "{err}");
    assert!(err.contains("default"), "{err}");
}

#[test]
fn jobs_that_failed_for_good_reach_error_log() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|r| match r.path.as_str() {
        "/gone" => Reply::new(410, "gone"),
        _ => Reply::new(500, "broken"),
    });
    let logs = scratch_dir();
    let config = config_file(
        &redis,
        json!({"logDir": logs, "logLevel": "info", "maxRetryNum": 0}),
    );
    let mut con = redis.con();
    // Refused by the endpoint; its last attempt failed; its attempts used up before
    // this daemon claims it (as after a daemon died in its last attempt).
    let gone = member(&endpoint.url("/gone"), json!(1));
    let broken = member(&endpoint.url("/broken"), json!(2));
    let used_up = member(&endpoint.url("/used-up"), json!(3));
    add(&mut con, &gone, 0.0);
    add(&mut con, &broken, 0.0);
    add(&mut con, &used_up, 0.0);
    let _: () = con.hset(ATTEMPTS, &used_up, "1:0 @0").unwrap();
    let _daemon = Daemon::start_with_file(&config);
    wait_for_failed(&mut con, 3);
    let read = |name: &str| fs::read_to_string(logs.join(name)).unwrap_or_default();
    for (m, why) in [
        (&gone, "the endpoint refused the job for good"),
        (&broken, "no attempts left, moved to"),
        (&used_up, "no attempts left: this would be attempt 2 of 1"),
    ] {
        let id = job_id(&mut con, m);
        wait_until(PATIENCE, "the failure in error.log", || {
            read("error.log")
                .lines()
                .any(|l| l.contains(&id) && l.contains(why))
        });
    }
    assert_eq!(endpoint.count(), 2, "the used-up job got a request");
}
