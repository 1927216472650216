//! The command line and the config file: old files load, bad ones stop start-up with
//! one line and exit code 78 (core issue: Project, Config, Migration).

mod common;

use std::fs;

use common::*;
use serde_json::json;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn check(config: &str) -> std::process::Output {
    let path = scratch_dir().join("config.json");
    fs::write(&path, config).unwrap();
    run_delayqs(&["run", "--check", "--config", path.to_str().unwrap()])
}

#[test]
fn version_and_help() {
    let out = run_delayqs(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        concat!("delayqs ", env!("CARGO_PKG_VERSION"))
    );
    let out = run_delayqs(&["run", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--config") && help.contains("foreground"),
        "{help}"
    );
    let out = run_delayqs(&[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("delayqs run"), "{}", stderr(&out));
}

#[test]
fn old_daemon_config_file_loads_unchanged() {
    let old = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/old-daemon.json"
    ))
    .unwrap();
    let out = check(&old);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "no warnings for an old file");
    let shipped = run_delayqs(&[
        "run",
        "--check",
        "--config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/config.json"),
    ]);
    assert!(shipped.status.success(), "{}", stderr(&shipped));
    assert_eq!(
        stderr(&shipped),
        "",
        "the shipped example has only known keys"
    );
    let flow = run_delayqs(&[
        "run",
        "--check",
        "--config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/flow-control.json"),
    ]);
    assert!(flow.status.success(), "{}", stderr(&flow));
    assert_eq!(stderr(&flow), "", "the flow-control example loads clean");
}

#[test]
fn bad_values_fail_run_check_with_exit_78_and_one_line() {
    let cases = [
        (
            r#"{"concurrency": -3}"#,
            "key `concurrency`: expected a whole number from 1 to 1024, got -3",
        ),
        (r#"{"maxRetryNum": "3"}"#, "key `maxRetryNum`"),
        (r#"{"pollIntervalMs": 0}"#, "key `pollIntervalMs`"),
        (
            r#"{"successRule": "maybe"}"#,
            "key `successRule`: \"maybe\"",
        ),
        (r#"{"retryJitter": 2}"#, "key `retryJitter`"),
        (r#"{"logLevel": "loud"}"#, "key `logLevel`"),
        (r#"{"key": ""}"#, "key `key`"),
        ("{\"concurrency\": 2,", "not valid JSON"),
        ("[]", "JSON object"),
    ];
    for (config, message) in cases {
        let out = check(config);
        assert_eq!(out.status.code(), Some(78), "{config}");
        let err = stderr(&out);
        assert!(err.starts_with("delayqs: config "), "{err}");
        assert!(err.contains(message), "{config}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn missing_config_file_is_an_error() {
    let out = run_delayqs(&["run", "--config", "/nonexistent/delayqs.json"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("/nonexistent/delayqs.json"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unknown_keys_fail_run_check_with_a_suggestion_and_warn_in_run() {
    let out = check(r#"{"concurency": 8}"#);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("unknown key `concurency` (did you mean `concurrency`?)"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // No suggestion for a name near none.
    let out = check(r#"{"zzzzzzzzzz": 1, "timeout": 9}"#);
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    assert!(
        err.contains("unknown key `zzzzzzzzzz` (no known key"),
        "{err}"
    );
    assert!(
        err.contains("`timeout` (did you mean `timeoutMs`?)"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // `run` starts anyway, and its warning has the suggestion.
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis, json!({"concurency": 8}));
    daemon.wait_for_log("unknown key `concurency` ignored (did you mean `concurrency`?)");
}

#[test]
fn old_daemon_config_runs_against_redis_and_delivers() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let old = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/old-daemon.json"
    ))
    .unwrap();
    let old = old.replace("redis://localhost:6379/", &redis.url());
    let path = scratch_dir().join("config.json");
    fs::write(&path, old).unwrap();
    let _daemon = Daemon::start_with_file(&path);
    let mut con = redis.con();
    add(
        &mut con,
        &member(&endpoint.url("/old"), json!({"orderId": 1})),
        0.0,
    );
    assert_eq!(endpoint.wait_for(1)[0].form["body"], r#"{"orderId":1}"#);
}

#[test]
fn old_daemon_leftovers_cause_no_loss_and_no_second_delivery() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    // What the old daemon leaves behind: a job still in the sorted set, its record in
    // the body hash and its id in the retry list.
    let m = member(&endpoint.url("/migrated"), json!({"orderId": 9}));
    add(&mut con, &m, 0.0);
    let _: () = con.hset("DelayQs:body", "old-id-1", &m).unwrap();
    let _: () = con.rpush("DelayQs:retry_id", "old-id-1").unwrap();

    // One worker, so that the marker below keeps strict order.
    let daemon = Daemon::start(&redis, json!({"concurrency": 1}));
    endpoint.wait_for(1);
    daemon.wait_for_log("keys of the old daemon exist");
    // The old keys are looked at on first contact, before the first claim. A second
    // delivery (from the old body hash or retry list, or the job queued again) would be
    // a job due by now, so claimed ahead of a marker due now; with one worker its
    // request would arrive before the marker's.
    wait_for_marker(&mut con, unix_now(), 1);
    assert_eq!(endpoint.count(), 1, "delivered twice");
    // Left for the operator, as the README says.
    assert_eq!(con.hlen::<_, usize>("DelayQs:body").unwrap(), 1);
    assert_eq!(con.llen::<_, usize>("DelayQs:retry_id").unwrap(), 1);
}

#[test]
fn redis_password_never_reaches_the_log() {
    let redis = RedisServer::start();
    let url = redis.require_password("s3cret-pw");
    let endpoint = Endpoint::succeeding();
    let daemon = Daemon::start(&redis, json!({"redis": url}));
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    add(&mut con, &member(&endpoint.url("/pw"), json!(1)), 0.0);
    endpoint.wait_for(1);
    // Both the `running:` and the `ready:` line name the Redis URL, redacted.
    daemon.wait_ready();
    let log = daemon.log();
    assert!(
        log.contains("running: redis redis://***@127.0.0.1"),
        "{log}"
    );
    assert!(
        log.contains("ready: Redis at redis://***@127.0.0.1"),
        "{log}"
    );
    assert!(!log.contains("s3cret-pw"), "{log}");
}

#[test]
fn key_of_the_wrong_type_stops_start_up_with_exit_78() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let _: () = con.set(FAILED, "not a list").unwrap();
    let endpoint = Endpoint::succeeding();
    add(&mut con, &member(&endpoint.url("/x"), json!(1)), 0.0);
    let mut daemon = Daemon::start(&redis, json!({}));
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(78), "{}", daemon.log());
    let log = daemon.log();
    assert!(
        log.contains("\"DelayQs:fail_job\" (config `failKey`) holds a string, not a list"),
        "{log}"
    );
    // Nothing was claimed: the job waits untouched.
    assert_eq!(con.zcard::<_, usize>(QUEUE).unwrap(), 1);
    assert_eq!(endpoint.count(), 0);
}

#[test]
fn usage_errors_exit_64_and_h_is_help() {
    for args in [
        &["pendng"][..],
        &["stats", "--bogus"],
        &["add"],
        &["pending", "--limit", "abc"],
        &["failed"],
        &["run", "extra"],
    ] {
        let out = run_delayqs(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty(), "{args:?}: says why");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
    for args in [
        &["--help"][..],
        &["-h"],
        &["run", "-h"],
        &["run", "--help"],
        &["failed", "list", "-h"],
        &["add", "-h"],
    ] {
        let out = run_delayqs(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.starts_with("Usage: delayqs"), "{args:?}: {help}");
        assert!(
            help.contains("--config") || help.contains("Commands"),
            "{help}"
        );
    }
}

#[test]
fn delayqs_config_names_the_file_when_config_is_not_given() {
    let with_env = |value: &std::path::Path, args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_delayqs"))
            .args(args)
            .env("DELAYQS_CONFIG", value)
            // Anywhere: the default paths are relative to the current directory.
            .current_dir("/")
            .output()
            .unwrap()
    };
    let dir = scratch_dir();
    let good = dir.join("good.json");
    let pid = dir.join("delayqs.pid");
    fs::write(&good, json!({"pid": pid}).to_string()).unwrap();
    let bad = dir.join("bad.json");
    fs::write(&bad, r#"{"concurrency": -3}"#).unwrap();

    let out = with_env(&good, &["run", "--check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains(good.to_str().unwrap()), "{said}");
    // An admin command finds it too: the pid file it names says stopped.
    assert_eq!(with_env(&good, &["status"]).status.code(), Some(3));

    let out = with_env(&bad, &["run", "--check"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains(bad.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
    // --config wins over the variable.
    let out = with_env(
        &bad,
        &["run", "--check", "--config", good.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let help = String::from_utf8_lossy(&run_delayqs(&["--help"]).stdout).into_owned();
    assert!(help.contains("DELAYQS_CONFIG"), "{help}");
}

/// The binary, run as `user` (`None`: as the test itself), killed after a minute: a
/// daemon that starts when it should not must fail the test, not hang it.
fn delayqs_as(user: Option<&str>) -> std::process::Command {
    let mut c = std::process::Command::new("timeout");
    c.arg("60");
    if let Some(uid) = user {
        c.args([
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
        ])
        .arg("--clear-groups");
    }
    c.arg(env!("CARGO_BIN_EXE_delayqs"));
    c
}

/// `run --check` and `run` on a config of `fields`, as `user` (no Redis: the check
/// comes first).
fn check_and_run_as(user: Option<&str>, fields: serde_json::Value) -> [std::process::Output; 2] {
    let path = config_file_for("redis://127.0.0.1:1/", fields);
    [true, false].map(|check| {
        let mut command = delayqs_as(user);
        command.args(["run", "--config", path.to_str().unwrap()]);
        if check {
            command.arg("--check");
        }
        command.output().unwrap()
    })
}

fn assert_refused(outs: &[std::process::Output; 2], key: &str, path: &str, says: &str) {
    for out in outs {
        assert_eq!(out.status.code(), Some(78), "{}", stderr(out));
        let err = stderr(out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("key `{key}`")), "{err}");
        assert!(err.contains(path), "{err}");
        assert!(err.contains(says), "{err}");
    }
    assert_eq!(
        stderr(&outs[0]),
        stderr(&outs[1]),
        "the same line from both"
    );
}

#[test]
fn a_metrics_file_or_log_dir_that_cannot_be_written_stops_check_and_start_with_78() {
    let dir = scratch_dir();
    let missing = dir.join("no-such-dir/delayqs.prom");
    let outs = check_and_run_as(None, json!({"metricsFile": missing}));
    assert_refused(
        &outs,
        "metricsFile",
        missing.to_str().unwrap(),
        "does not exist; create it (mkdir -p",
    );
    let outs = check_and_run_as(None, json!({"metricsFile": dir}));
    assert_refused(
        &outs,
        "metricsFile",
        dir.to_str().unwrap(),
        "is a directory",
    );
    fs::write(dir.join("a-file"), "").unwrap();
    let under_a_file = dir.join("a-file/logs");
    let outs = check_and_run_as(None, json!({"logDir": under_a_file}));
    assert_refused(&outs, "logDir", "a-file", "is not a directory");

    // Judged by trying, as the user the daemon runs as: a directory root may write
    // and `nobody` may not.
    let root = String::from_utf8(
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
        == "0";
    let closed = dir.join("closed");
    fs::create_dir(&closed).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o755)).unwrap();
    let user = match root {
        true => Some("65534"),
        false => {
            fs::set_permissions(&closed, fs::Permissions::from_mode(0o555)).unwrap();
            None
        }
    };
    let metrics = closed.join("delayqs.prom");
    let outs = check_and_run_as(user, json!({"metricsFile": metrics}));
    assert_refused(
        &outs,
        "metricsFile",
        closed.to_str().unwrap(),
        "Permission denied",
    );
    assert!(stderr(&outs[0]).contains("writable by the user delayqs runs as"));
    let outs = check_and_run_as(user, json!({"logDir": closed.join("logs")}));
    assert_refused(
        &outs,
        "logDir",
        closed.to_str().unwrap(),
        "Permission denied",
    );
    // Opened up, the same config passes the check, and the probe left nothing behind.
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o777)).unwrap();
    let path = config_file_for(
        "redis://127.0.0.1:1/",
        json!({"metricsFile": metrics, "logDir": closed}),
    );
    let check = delayqs_as(user)
        .args(["run", "--check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
    assert_eq!(fs::read_dir(&closed).unwrap().count(), 0);
}

#[test]
fn a_metrics_file_that_stops_working_is_said_once_and_again_when_it_works() {
    let redis = RedisServer::start();
    let dir = scratch_dir().join("textfile");
    fs::create_dir(&dir).unwrap();
    let file = dir.join("delayqs.prom");
    let daemon = Daemon::start(
        &redis,
        json!({"metricsFile": file, "metricsIntervalMs": 100, "logLevel": "info"}),
    );
    wait_until(PATIENCE, "the metrics file", || file.exists());
    fs::remove_dir_all(&dir).unwrap();
    daemon.wait_for_log("cannot write the metrics file");
    // Ten more intervals of failing: still the one line.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let said = |log: &str, what: &str| log.lines().filter(|l| l.contains(what)).count();
    let log = daemon.log();
    assert_eq!(said(&log, "write the metrics file"), 1, "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("cannot write the metrics"))
        .unwrap();
    assert!(
        line.contains("[ERROR]") && line.contains("(config `metricsFile`)"),
        "{line}"
    );
    assert!(line.contains(file.to_str().unwrap()), "{line}");
    fs::create_dir(&dir).unwrap();
    daemon.wait_for_log("is written again, after failing for");
    wait_until(PATIENCE, "the metrics file again", || file.exists());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let log = daemon.log();
    assert_eq!(said(&log, "write the metrics file"), 1, "{log}");
    assert_eq!(said(&log, "is written again"), 1, "{log}");
}

#[test]
fn log_level_flag_wins_over_the_config_at_start_and_after_a_reload() {
    let out = run_delayqs(&[
        "run",
        "--log-level",
        "loud",
        "--config",
        "/nonexistent.json",
    ]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("--log-level \"loud\" is not a level"));

    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    // The config says errors only: the flag's debug shows each delivery all the same.
    let config = config_file(&redis, json!({"logLevel": "error"}));
    let log = config.with_extension("log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_delayqs"))
        .args(["run", "--log-level", "debug", "--config"])
        .arg(&config)
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let guard = Guarded(child);
    let said = |what: &str| fs::read_to_string(&log).unwrap().matches(what).count();
    let mut con = redis.con();
    add(&mut con, &member(&endpoint.url("/one"), json!(1)), 0.0);
    wait_until(PATIENCE, "the first delivery's line", || {
        said("] job ") == 1
    });
    let line = fs::read_to_string(&log).unwrap();
    assert!(
        line.contains("[DEBUG] job ") && line.contains("delivered to"),
        "{line}"
    );
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &guard.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    // At info: said only because the flag's level outlives the reload.
    wait_until(PATIENCE, "the reload", || said("config reloaded") == 1);
    add(&mut con, &member(&endpoint.url("/two"), json!(2)), 0.0);
    wait_until(PATIENCE, "the second delivery's line", || {
        said("] job ") == 2
    });
}
