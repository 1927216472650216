//! Where a callback may go and what it carries on the way: redirects inside one
//! deadline, credentials left behind on another origin, no proxy from the
//! environment, and allow-list prefixes judged on the normalised URL (issue 13).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

/// With `timeoutMs` 1000 and a lease just above the floor (1200 ms), a chain of slow redirects
/// used to get a fresh timeout per hop, outlive the lease, and be delivered again by
/// the next claim. Now every hop shares one deadline: the attempt fails inside the
/// lease and is retried, and no hop is ever served twice for one attempt.
#[test]
fn redirect_hops_share_one_deadline_inside_the_lease() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|r| {
        let hop: u32 = r.path.trim_start_matches("/hop").parse().unwrap_or(0);
        match hop {
            0..=3 => Reply::new(307, "")
                .header("Location", &format!("/hop{}", hop + 1))
                .after(Duration::from_millis(400)),
            _ => Reply::success(),
        }
    });
    let mut con = redis.con();
    let daemon = Daemon::start(
        &redis,
        json!({
            "timeoutMs": 1000, "redisTimeoutMs": 20, "pollIntervalMs": 20, "leaseMs": 1200,
            "followRedirects": 5, "maxRetryNum": 1, "retryBaseMs": 100,
        }),
    );
    add(&mut con, &member(&endpoint.url("/hop0"), json!(1)), 0.0);
    wait_for_failed(&mut con, 1);
    let record = &failed_records(&mut con)[0];
    assert!(
        record["error"].as_str().unwrap().contains("time"),
        "{record}"
    );
    assert_eq!(record["attempts"], 2, "{record}");
    // Each attempt got as far as the third hop (3 × 400 ms > 1 s) and never reached
    // the end, and the lease never ran out under it.
    let requests = endpoint.requests();
    assert!(
        requests.iter().all(|r| r.path != "/hop4"),
        "a hop past the deadline was served: {:?}",
        requests.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert!(
        !daemon.log().contains("took back"),
        "a lease expired:\n{}",
        daemon.log()
    );
    let first_hops = requests.iter().filter(|r| r.path == "/hop0").count();
    assert_eq!(first_hops, 2, "one start per attempt");
}

#[test]
fn a_redirect_to_another_origin_leaves_the_jobs_credentials_behind() {
    let redis = RedisServer::start();
    let other = Endpoint::succeeding();
    let elsewhere = other.url("/landing");
    let endpoint = Endpoint::start(move |r| match r.path.as_str() {
        "/same" => Reply::new(307, "").header("Location", "/here"),
        "/away" => Reply::new(307, "").header("Location", &elsewhere),
        _ => Reply::success(),
    });
    let mut con = redis.con();
    let _daemon = Daemon::start(&redis, json!({"followRedirects": 1}));
    let headers = json!({
        "Authorization": "Bearer s3cret", "Cookie": "sid=1", "X-Api-Token": "t0ken",
        "X-Shop": "7",
    });
    for path in ["/same", "/away"] {
        let job = json!({"callback": endpoint.url(path), "body": path, "headers": headers});
        add(&mut con, &job.to_string(), 0.0);
    }
    let landed = &other.wait_for(1)[0];
    wait_until(PATIENCE, "the same-origin hop", || {
        endpoint.requests().iter().any(|r| r.path == "/here")
    });
    let here = endpoint
        .requests()
        .into_iter()
        .find(|r| r.path == "/here")
        .unwrap();
    assert_eq!(
        here.header("authorization"),
        "Bearer s3cret",
        "same origin keeps them"
    );
    assert_eq!(here.header("cookie"), "sid=1");
    for name in ["authorization", "cookie", "x-api-token"] {
        assert_eq!(landed.header(name), "", "{name} went to another origin");
    }
    assert_eq!(landed.header("x-shop"), "7", "other headers still go along");
    assert_eq!(landed.form["body"], "\"/away\"");
}

/// A listener that counts connections: stands in for a proxy named in the
/// environment.
fn counting_listener() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

#[test]
fn a_proxy_in_the_environment_is_not_used_and_private_addresses_stay_refused() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let (proxy, proxy_port) = counting_listener();
    let proxy_url = format!("http://127.0.0.1:{proxy_port}");
    let run = |fields: serde_json::Value| {
        let config = config_file(&redis, fields);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_delayqs"));
        cmd.args(["run", "--config"])
            .arg(&config)
            .env("HTTP_PROXY", &proxy_url)
            .env("http_proxy", &proxy_url)
            .env("ALL_PROXY", &proxy_url)
            .env("HTTPS_PROXY", &proxy_url)
            .stdout(Stdio::null());
        Guarded::spawn(&mut cmd)
    };
    let mut con = redis.con();
    let _deny = run(json!({"denyPrivateNetworks": true, "maxRetryNum": 0}));
    add(&mut con, &member(&endpoint.url("/private"), json!(1)), 0.0);
    wait_for_failed(&mut con, 1);
    let record = &failed_records(&mut con)[0];
    assert!(
        record["error"]
            .as_str()
            .unwrap()
            .contains("denyPrivateNetworks"),
        "{record}"
    );
    drop(_deny);
    let _direct = run(json!({}));
    add(&mut con, &member(&endpoint.url("/direct"), json!(2)), 0.0);
    let got = endpoint.wait_for(1);
    assert_eq!(got[0].path, "/direct", "delivered directly");
    assert!(
        proxy.accept().is_err(),
        "a connection reached the proxy from the environment"
    );
}

#[test]
fn allow_list_prefixes_are_judged_on_the_normalised_path() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    let prefix = format!("http://127.0.0.1:{}/hooks/", endpoint.port);
    let _daemon = Daemon::start(
        &redis,
        json!({"allowedCallbacks": [prefix], "maxRetryNum": 0}),
    );
    let base = format!("127.0.0.1:{}", endpoint.port);
    let tricks = [
        format!("http://{base}/hooks/../admin/delete"),
        format!("http://{base}/hooks/%2e%2e/admin/x"),
        format!("http://{base}/hooks/..%2fadmin"),
        format!("HTTP://{base}/hooks/../upper"),
        format!("http://{base}/HOOKS/case"),
    ];
    for (i, url) in tricks.iter().enumerate() {
        add(&mut con, &member(url, json!(i)), 0.0);
    }
    add(
        &mut con,
        &member(&format!("HTTP://{base}/hooks/./ok"), json!("ok")),
        1.0,
    );
    let got = endpoint.wait_for(1);
    wait_for_failed(&mut con, tricks.len());
    assert_eq!(endpoint.count(), 1, "{:?}", endpoint.requests());
    assert_eq!(got[0].path, "/hooks/ok", "sent as normalised");
    for record in failed_records(&mut con) {
        assert!(
            record["error"]
                .as_str()
                .unwrap()
                .contains("outside allowedCallbacks"),
            "{record}"
        );
    }
}
