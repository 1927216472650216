//! `delayqs add` beyond the callback and body (issue 16): the per-job options as flags,
//! a raw member, and a due time that is a slip.

mod common;

use common::*;
use serde_json::json;

use common::{delayqs_with as delayqs, json_with as added, stderr_of as stderr};

#[test]
fn per_job_options_as_flags_reach_the_endpoint() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|r| match r.path.as_str() {
        "/fails" => Reply::new(500, "no"),
        _ => Reply::success(),
    });
    let _daemon = Daemon::start(&redis, json!({"maxRetryNum": 5}));
    let config = config_file(&redis, json!({}));
    let mut con = redis.con();

    let out = added(
        &config,
        &[
            "add",
            "--callback",
            &endpoint.url("/opts"),
            "--body",
            r#"{"orderId":7}"#,
            "--sign",
            "s7",
            "--method",
            "put",
            "--content-type",
            "json",
            "--header",
            "X-Shop: 7",
            "--header",
            "X-Tenant:acme",
            "--timeout",
            "2.5",
            "--in",
            "0s",
        ],
    );
    let member = out["member"].as_str().unwrap();
    assert_eq!(
        member,
        r#"{"body":{"orderId":7},"callback":"URL","contentType":"json","headers":{"X-Shop":"7","X-Tenant":"acme"},"method":"PUT","sign":"s7","timeout":2.5}"#
            .replace("URL", &endpoint.url("/opts"))
    );
    let got = &endpoint.wait_for(1)[0];
    assert_eq!(got.method, "PUT");
    assert_eq!(got.header("x-shop"), "7");
    assert_eq!(got.header("x-tenant"), "acme");
    assert_eq!(got.header("content-type"), "application/json");
    assert_eq!(got.header("x-delayqs-sign"), "s7");
    assert_eq!(got.body, br#"{"orderId":7}"#);
    assert_eq!(got.job_id(), out["id"].as_str().unwrap());

    // maxRetry and backoff: 1 retry instead of the daemon's 5, after 0.2 s.
    let out = added(
        &config,
        &[
            "add",
            "--callback",
            &endpoint.url("/fails"),
            "--max-retry",
            "1",
            "--backoff",
            "0.2,60",
            "--in",
            "0s",
        ],
    );
    assert!(
        out["member"]
            .as_str()
            .unwrap()
            .contains(r#""backoff":[0.2,60],"#),
        "{out}"
    );
    wait_for_failed(&mut con, 1);
    let fails: Vec<Request> = endpoint
        .requests()
        .into_iter()
        .filter(|r| r.path == "/fails")
        .collect();
    assert_eq!(fails.len(), 2, "1 + maxRetry attempts");
    assert!(fails[1].at - fails[0].at >= 0.2, "the job's own backoff");

    // A skip condition: the key exists, so the job is dropped unsent.
    let _: () = con.set("order:7:paid", 1).unwrap();
    added(
        &config,
        &[
            "add",
            "--callback",
            &endpoint.url("/skipped"),
            "--skip-if-exists",
            "order:7:paid",
            "--in",
            "0s",
        ],
    );
    let now = redis_now(&mut con);
    wait_for_marker(&mut con, now, 4);
    assert!(endpoint.requests().iter().all(|r| r.path != "/skipped"));
    assert_eq!(con.zcard::<_, usize>(QUEUE).unwrap(), 0);

    // A flow key is written as given, and a bad one refused before anything is written.
    let out = added(
        &config,
        &[
            "add",
            "--callback",
            "http://127.0.0.1:9/f",
            "--flow-key",
            "payments",
            "--in",
            "1h",
        ],
    );
    assert!(
        out["member"]
            .as_str()
            .unwrap()
            .contains(r#""flowKey":"payments""#),
        "{out}"
    );
    let refused = delayqs_with(
        &config,
        &[
            "add",
            "--callback",
            "http://127.0.0.1:9/f",
            "--flow-key",
            "",
            "--in",
            "1h",
        ],
    );
    assert_eq!(refused.status.code(), Some(64), "{}", stderr_of(&refused));
    assert!(
        stderr_of(&refused).contains("flowKey"),
        "{}",
        stderr_of(&refused)
    );
}

fn redis_now(con: &mut redis::Connection) -> f64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(con).unwrap();
    s as f64 + us as f64 / 1e6
}

#[test]
fn a_raw_member_is_written_byte_for_byte_and_validated_like_a_claim() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    let mut con = redis.con();
    // Spacing and field order a producer's encoder might choose: kept as given, so
    // the id is the one that producer computes and a ZREM of it cancels the job.
    let raw = r#"{ "callback": "http://127.0.0.1:9/raw", "body": {"b":1,"a":2}, "maxRetry": 0 }"#;
    let out = added(&config, &["add", "--member", raw, "--in", "1h"]);
    assert_eq!(out["member"], raw);
    assert_eq!(out["id"], job_id(&mut con, raw).as_str());
    assert!(
        con.zscore::<_, _, Option<f64>>(QUEUE, raw)
            .unwrap()
            .is_some()
    );

    let refused: [(&[&str], &str); 10] = [
        (
            &["--member", raw, "--callback", "http://127.0.0.1:9/x"],
            "--member is the whole job",
        ),
        (
            &["--member", raw, "--max-retry", "1"],
            "--member is the whole job",
        ),
        (&[], "give the job's --callback"),
        (
            &["--member", "{not json"],
            "--member: malformed job: the member is not valid JSON",
        ),
        (
            &["--member", r#"{"callback":"/relative"}"#],
            "--member: malformed job: `callback`",
        ),
        (
            &["--member", r#"{"callback":"http://h/","maxRetry":5000}"#],
            "--member: malformed job: `maxRetry`",
        ),
        (
            &["--callback", "http://h/", "--max-retry", "5000"],
            "--max-retry: malformed job: `maxRetry` must be a whole number from 0 to 1000",
        ),
        (
            &["--callback", "http://h/", "--header", "Host: evil"],
            "--header: malformed job: `headers` \"Host\" may not be set",
        ),
        (
            &["--callback", "http://h/", "--timeout", "600"],
            "--timeout: malformed job: `timeout` 600 s exceeds the daemon's timeoutMs",
        ),
        (
            &["--callback", "http://h/", "--method", "GET"],
            "--method: malformed job: `method`",
        ),
    ];
    for (args, says) in refused {
        let mut all = vec!["add"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--in", "1s"]);
        let out = delayqs(&config, &all);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    let more: [(&[&str], &str); 3] = [
        (
            &["--header", "no colon"],
            "--header: expected \"Name: value\"",
        ),
        (
            &["--backoff", "10,soon"],
            "--backoff: expected a number of seconds",
        ),
        (
            &["--header", "X-A: 1", "--header", "X-A: 2"],
            "\"X-A\" is given twice",
        ),
    ];
    for (args, says) in more {
        let mut all = vec!["add", "--callback", "http://h/", "--in", "1s"];
        all.extend_from_slice(args);
        let out = delayqs(&config, &all);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(
        con.zcard::<_, usize>(QUEUE).unwrap(),
        1,
        "nothing else written"
    );
}

#[test]
fn a_due_time_before_2000_is_refused_as_a_slip() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    let mut con = redis.con();
    for at in ["1000", "0", "1999-12-31T23:59:59Z"] {
        let out = delayqs(
            &config,
            &["add", "--callback", "http://127.0.0.1:9/x", "--at", at],
        );
        assert_eq!(out.status.code(), Some(64), "{at}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("--at {at} is 19")), "{err}");
        assert!(err.contains("looks like a mistake"), "{err}");
        assert!(err.contains("RFC 3339") && err.contains("--in"), "{err}");
    }
    assert_eq!(con.zcard::<_, usize>(QUEUE).unwrap(), 0);
    // The first moment of 2000 is taken: a time long past is still a time.
    let out = added(
        &config,
        &[
            "add",
            "--callback",
            "http://127.0.0.1:9/y",
            "--at",
            "946684800",
        ],
    );
    assert_eq!(out["due"].as_f64(), Some(946_684_800.0));
}
