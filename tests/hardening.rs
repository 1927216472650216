//! The boundaries of the daemon, hardened after an outside review (issue 13): Redis
//! credentials in every URL form, header values that cannot be sent, the metrics
//! file's temporary, Redis eviction policies, and outcomes resent after a lost reply.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use serde_json::json;

fn world_readable(path: &std::path::Path) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------- item 5: redaction

const SOCKET_PW: &str = "sockPW-3kq9";

#[test]
fn a_socket_password_is_never_shown_and_a_readable_config_is_warned_about() {
    let redis = SocketRedis::start(Some(SOCKET_PW), &[]);
    let config = config_file_for(&redis.url(), json!({}));
    world_readable(&config);
    let config_arg = config.to_str().unwrap();

    let check = run_delayqs(&["run", "--check", "--config", config_arg]);
    let said = text(&check);
    assert!(check.status.success(), "{said}");
    assert!(!said.contains(SOCKET_PW), "{said}");
    assert!(said.contains("holds a secret"), "no warning: {said}");

    let endpoint = Endpoint::succeeding();
    let daemon = Daemon::start_with_file(&config);
    add(
        &mut redis.con(),
        &member(&endpoint.url("/sock"), json!(1)),
        0.0,
    );
    endpoint.wait_for(1);
    daemon.wait_for_log("ready:");
    let log = daemon.log();
    assert!(!log.contains(SOCKET_PW), "{log}");
    assert!(log.contains("?pass=***"), "{log}");
    assert!(log.contains("holds a secret"), "{log}");

    let stats = run_delayqs(&["stats", "--config", config_arg]);
    assert!(stats.status.success(), "{}", text(&stats));
    assert!(!text(&stats).contains(SOCKET_PW));

    // A wrong password: the error names the server, masked.
    let wrong = config_file_for(
        &format!("unix://{}?pass=wrongPW-8z", redis.socket.display()),
        json!({}),
    );
    let stats = run_delayqs(&["stats", "--config", wrong.to_str().unwrap()]);
    let said = text(&stats);
    assert_eq!(stats.status.code(), Some(69), "{said}");
    assert!(said.contains("?pass=***"), "{said}");
    assert!(!said.contains("wrongPW-8z"), "{said}");
}

#[test]
fn a_password_holding_url_delimiters_is_never_shown() {
    // `/`, `#` and `?` end the authority for the URL parser: this does not parse.
    let bad = "redis://:pa/ss#w?rd@127.0.0.1:1/";
    let leaks = |said: &str| ["pa/ss", "ss#w", "w?rd"].iter().any(|s| said.contains(s));
    let config = config_file_for(bad, json!({}));
    let check = run_delayqs(&["run", "--check", "--config", config.to_str().unwrap()]);
    let said = text(&check);
    assert_eq!(check.status.code(), Some(78), "{said}");
    assert!(said.contains("`redis`"), "{said}");
    assert!(!leaks(&said), "{said}");

    // Percent-encoded, it parses; nothing listens on port 1.
    let encoded = "redis://:pa%2Fss%23w%3Frd@127.0.0.1:1/";
    let config = config_file_for(encoded, json!({"redisTimeoutMs": 200}));
    let stats = run_delayqs(&["stats", "--config", config.to_str().unwrap()]);
    let said = text(&stats);
    assert_eq!(stats.status.code(), Some(69), "{said}");
    assert!(!said.contains("pa%2Fss") && !leaks(&said), "{said}");
    let daemon = Daemon::start_with_file(&config);
    daemon.wait_for_log("failed");
    let log = daemon.log();
    assert!(!log.contains("pa%2Fss") && !leaks(&log), "{log}");

    // A reload to the URL that does not parse is refused, without it.
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    let daemon = Daemon::start_with_file(&config);
    daemon.wait_for_log("ready:");
    write_config(&config, &redis, json!({"redis": bad}));
    daemon.signal("HUP");
    daemon.wait_for_log("config not reloaded");
    let log = daemon.log();
    assert!(!leaks(&log), "{log}");
}

// ---------------------------------------------------------------- item 6: headers

/// A daemon whose breaker pauses a host after three failures in a row, for a minute,
/// and that gives each job one attempt.
fn breaker_config() -> serde_json::Value {
    json!({"hostFailureThreshold": 3, "hostPauseMs": 60_000, "maxRetryNum": 0})
}

/// A good job to the endpoint goes out at once: its host was not paused.
fn good_job_goes_out_at_once(con: &mut redis::Connection, endpoint: &Endpoint) {
    let before = endpoint.count();
    add(con, &member(&endpoint.url("/good"), json!("good")), 0.0);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while endpoint.count() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the good job waited: its host was paused"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn control_characters_in_headers_or_a_json_sign_are_malformed_and_pause_no_host() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let endpoint = Endpoint::succeeding();
    let daemon = Daemon::start(&redis, breaker_config());
    daemon.wait_for_log("ready:");
    let url = endpoint.url("/bad");
    for (i, value) in ["a\u{1}b", "\u{7f}", "x\u{1f}"].iter().enumerate() {
        let m = json!({"callback": url, "body": i, "headers": {"X-Bad": value}});
        add(&mut con, &m.to_string(), 0.0);
    }
    let m = json!({"callback": url, "body": 3, "sign": "s\u{2}", "contentType": "json"});
    add(&mut con, &m.to_string(), 0.0);
    wait_for_failed(&mut con, 4);
    let mut fields: Vec<String> = failed_records(&mut con)
        .iter()
        .map(|r| {
            assert_eq!(r["attempts"], 0, "{r}");
            let error = r["error"].as_str().unwrap();
            assert!(error.starts_with("malformed job: `"), "{error}");
            error.split('`').nth(1).unwrap().to_string()
        })
        .collect();
    fields.sort();
    assert_eq!(fields, ["headers", "headers", "headers", "sign"]);
    assert_eq!(endpoint.count(), 0, "no request for a malformed job");
    good_job_goes_out_at_once(&mut con, &endpoint);
    assert!(!daemon.log().contains("failed 3 times in a row"));
}

#[test]
fn a_request_that_cannot_be_built_does_not_count_against_the_host() {
    // A path longer than an HTTP request target may be (the http crate's limit is
    // 65534 bytes): a valid URL, and a job under maxJobBytes, that ureq cannot send.
    let redis = RedisServer::start();
    let mut con = redis.con();
    let endpoint = Endpoint::succeeding();
    let daemon = Daemon::start(&redis, breaker_config());
    daemon.wait_for_log("ready:");
    let long = endpoint.url(&format!("/{}", "a".repeat(70_000)));
    for i in 0..3 {
        add(&mut con, &member(&long, json!(i)), 0.0);
    }
    wait_for_failed(&mut con, 3);
    for r in failed_records(&mut con) {
        assert!(
            r["error"].as_str().unwrap().contains("request failed"),
            "{r}"
        );
    }
    good_job_goes_out_at_once(&mut con, &endpoint);
    assert!(!daemon.log().contains("failed 3 times in a row"));
}

// ---------------------------------------------------------------- the metrics file

#[test]
fn the_metrics_temporary_follows_no_symlink_and_none_is_left_behind() {
    let redis = RedisServer::start();
    let dir = scratch_dir();
    let file = dir.join("delayqs.prom");
    let victim = scratch_dir().join("victim");
    fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("delayqs.prom.tmp")).unwrap();
    let mut daemon = Daemon::start(
        &redis,
        json!({"metricsFile": file, "metricsIntervalMs": 100}),
    );
    wait_until(PATIENCE, "the metrics file", || file.exists());
    let first = fs::metadata(&file).unwrap().modified().unwrap();
    wait_until(PATIENCE, "the metrics file rewritten", || {
        fs::metadata(&file).unwrap().modified().unwrap() > first
    });
    daemon.signal("TERM");
    assert!(daemon.wait_exit().success(), "{}", daemon.log());
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // The planted symlink, and the file; no temporary.
    assert_eq!(names, ["delayqs.prom", "delayqs.prom.tmp"]);
    assert!(
        fs::symlink_metadata(dir.join("delayqs.prom.tmp"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

// ---------------------------------------------------------------- maxmemory

fn config_set(con: &mut redis::Connection, name: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(con)
        .unwrap();
}

fn lines_with<'a>(log: &'a str, text: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(text)).collect()
}

#[test]
fn an_evicting_redis_stops_start_up_with_exit_78_unless_allowed() {
    let redis = SocketRedis::start(
        None,
        &["--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"],
    );
    let mut con = redis.con();
    let endpoint = Endpoint::succeeding();
    add(&mut con, &member(&endpoint.url("/evict"), json!(1)), 0.0);
    let mut daemon = Daemon::start_with_file(&config_file_for(&redis.url(), json!({})));
    let status = daemon.wait_exit();
    let log = daemon.log();
    assert_eq!(status.code(), Some(78), "{log}");
    let why = lines_with(&log, "maxmemory-policy");
    assert_eq!(why.len(), 1, "{log}");
    assert!(why[0].contains("allkeys-lru") && why[0].contains("allowEvictingRedis"));
    assert_eq!(con.zcard::<_, usize>(QUEUE).unwrap(), 1, "nothing claimed");
    assert_eq!(endpoint.count(), 0);

    let config = config_file_for(&redis.url(), json!({"allowEvictingRedis": true}));
    let daemon = Daemon::start_with_file(&config);
    endpoint.wait_for(1);
    let log = daemon.log();
    assert_eq!(
        lines_with(&log, "maxmemory-policy is allkeys-lru").len(),
        1,
        "{log}"
    );
}

#[test]
fn the_policy_is_read_from_info_where_config_is_refused() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    config_set(&mut con, "maxmemory-policy", "allkeys-lfu");
    let url = redis.acl_user("noconfig", "noconfig-pw", "*");
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("noconfig")
        .arg("-config")
        .query(&mut con)
        .unwrap();
    let mut daemon = Daemon::start(&redis, json!({"redis": url}));
    assert_eq!(daemon.wait_exit().code(), Some(78), "{}", daemon.log());
    assert!(daemon.log().contains("maxmemory-policy is allkeys-lfu"));

    // Neither CONFIG nor INFO: one warning, and it runs.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("noconfig")
        .arg("-info")
        .query(&mut con)
        .unwrap();
    let endpoint = Endpoint::succeeding();
    let daemon = Daemon::start(&redis, json!({"redis": url}));
    add(&mut con, &member(&endpoint.url("/blind"), json!(1)), 0.0);
    endpoint.wait_for(1);
    let log = daemon.log();
    assert_eq!(
        lines_with(&log, "cannot read Redis's maxmemory-policy").len(),
        1,
        "{log}"
    );
}

#[test]
fn a_full_redis_is_logged_once_and_nothing_is_half_written() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let endpoint = Endpoint::succeeding();
    add(&mut con, &member(&endpoint.url("/full"), json!(1)), 0.0);
    // noeviction (the default) and no room at all: every write that needs memory fails.
    config_set(&mut con, "maxmemory", "1");
    let daemon = Daemon::start(&redis, json!({}));
    daemon.wait_for_log("OOM");
    // Several rounds of backoff (0.1, 0.2, 0.4, 0.8 s...).
    std::thread::sleep(Duration::from_secs(2));
    let log = daemon.log();
    assert_eq!(lines_with(&log, "OOM").len(), 1, "{log}");
    assert_eq!(con.zcard::<_, usize>(QUEUE).unwrap(), 1, "the job waits");
    assert_eq!(con.zcard::<_, usize>(INFLIGHT).unwrap(), 0, "{log}");
    assert_eq!(con.hlen::<_, usize>(ATTEMPTS).unwrap(), 0, "{log}");
    assert_eq!(endpoint.count(), 0);
    config_set(&mut con, "maxmemory", "0");
    endpoint.wait_for(1);
    daemon.wait_for_log("Redis answers again");
    assert_no_bookkeeping(&mut con);
}

#[test]
fn an_evicting_policy_found_on_reconnect_stops_the_daemon_with_exit_78() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let endpoint = Endpoint::succeeding();
    let mut daemon = Daemon::start(&redis, json!({}));
    add(&mut con, &member(&endpoint.url("/before"), json!(1)), 0.0);
    endpoint.wait_for(1);
    config_set(&mut con, "maxmemory-policy", "allkeys-random");
    // Drop the daemon's connection (not ours): its next call reconnects.
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut con)
        .unwrap();
    assert_eq!(daemon.wait_exit().code(), Some(78), "{}", daemon.log());
    let log = daemon.log();
    assert_eq!(
        lines_with(&log, "maxmemory-policy is allkeys-random").len(),
        1,
        "{log}"
    );
    assert_no_bookkeeping(&mut con);
}

// ---------------------------------------------------------------- the lease floor

#[test]
fn a_lease_must_outlast_five_redis_calls_after_the_callback() {
    // 5000 + 5 × 1000 + 20 = 10020; the old floor (two calls) was 7020.
    let redis = RedisServer::start();
    let fields = |lease: u64| json!({"timeoutMs": 5000, "redisTimeoutMs": 1000, "leaseMs": lease});
    let short = config_file(&redis, fields(8000));
    let out = run_delayqs(&["run", "--check", "--config", short.to_str().unwrap()]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(78), "{said}");
    assert!(
        said.contains("`leaseMs`") && said.contains("= 10020 ms"),
        "{said}"
    );
    let enough = config_file(&redis, fields(10021));
    let out = run_delayqs(&["run", "--check", "--config", enough.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
}

// ---------------------------------------------------------------- a lost reply

/// Keeps Redis busy for `ms` (a script that spins on TIME), on a connection of its own.
fn make_redis_busy(url: String, ms: u64) {
    std::thread::spawn(move || {
        let mut con = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let _: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg(
                "local s = redis.call('TIME') local t0 = s[1] * 1000000 + s[2] \
                 repeat local n = redis.call('TIME') until n[1] * 1000000 + n[2] - t0 > tonumber(ARGV[1]) \
                 return 1",
            )
            .arg(0)
            .arg(ms * 1000)
            .query(&mut con);
    });
}

#[test]
fn an_outcome_resent_after_a_lost_reply_is_not_reported_as_an_expired_lease() {
    // The endpoint makes Redis busy, then answers. The daemon's next call, which
    // writes this outcome, outlasts its redisTimeoutMs (200 ms) and is given up on,
    // but Redis runs it once free: the reply is lost, the outcome written. The daemon
    // sends the outcome again and Redis reports it stale.
    let redis = RedisServer::start();
    let mut con = redis.con();
    let url = redis.url();
    let endpoint = Endpoint::start(move |_| {
        make_redis_busy(url.clone(), 700);
        std::thread::sleep(Duration::from_millis(30)); // the script has started
        Reply::success()
    });
    // One worker, so that while its job is out no claim goes to Redis (no room).
    let daemon = Daemon::start(&redis, json!({"concurrency": 1, "redisTimeoutMs": 200}));
    daemon.wait_for_log("ready:");
    const RESENT: &str = "outcome already written by the call whose reply was lost";
    // The lost reply needs the daemon's call to land inside the busy time, which a
    // sweep (once a second) can spoil; a few jobs make it certain.
    for i in 0..5 {
        let before = lines_with(&daemon.log(), "Redis answers again").len();
        add(&mut con, &member(&endpoint.url("/lost"), json!(i)), 0.0);
        endpoint.wait_for(i + 1);
        wait_until(PATIENCE, "Redis back", || {
            lines_with(&daemon.log(), "Redis answers again").len() > before
        });
        assert_no_bookkeeping(&mut con);
        let log = daemon.log();
        assert!(!log.contains("its lease ran out"), "{log}");
        if log.contains(RESENT) {
            assert_eq!(endpoint.count(), i + 1, "each job delivered once");
            assert_eq!(con.zcard::<_, usize>(QUEUE).unwrap(), 0);
            return;
        }
    }
    panic!("never provoked a lost reply:\n{}", daemon.log());
}
