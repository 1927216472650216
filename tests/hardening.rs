//! The boundaries of the daemon, hardened after an outside review (issue 13): Redis
//! credentials in every URL form, header values that cannot be sent, the metrics
//! file's temporary, Redis eviction policies, and outcomes resent after a lost reply.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

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
