//! Delivery semantics (issue 8): one clock, endpoint back-pressure, headers, per-job
//! options, skip conditions, reschedule.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn a_daemon_with_a_skewed_clock_never_delivers_early() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    // One daemon whose wall clock is an hour ahead, one an hour behind: both must go by
    // Redis's clock. Only the wall clock is skewed between hosts; the monotonic one
    // (which timed waits use) stays true.
    // libfaketime preloaded into the daemon itself (the `faketime` command would run it
    // as a grandchild the test cannot clean up after).
    let lib = libfaketime();
    let skewed = |offset: &str| {
        let config = config_file(&redis, json!({}));
        let preload = format!("LD_PRELOAD={lib}");
        let fake = format!("FAKETIME={offset}");
        let wrapper = ["env", "FAKETIME_DONT_FAKE_MONOTONIC=1", &preload, &fake];
        Daemon::start_under(&wrapper, &config)
    };
    let ahead = skewed("+1h");
    let behind = skewed("-1h");
    ahead.wait_ready();
    behind.wait_ready();
    // The skew took: each daemon logs with its own clock.
    let second_of_day = |log: String| -> i64 {
        let hms: Vec<i64> = log[11..19].split(':').map(|p| p.parse().unwrap()).collect();
        hms[0] * 3600 + hms[1] * 60 + hms[2]
    };
    let real = second_of_day(log_timestamp_now());
    let ahead_by = (second_of_day(ahead.log()) - real).rem_euclid(86_400);
    let behind_by = (real - second_of_day(behind.log())).rem_euclid(86_400);
    for (skew, log) in [(ahead_by, ahead.log()), (behind_by, behind.log())] {
        assert!((3500..3700).contains(&skew), "skewed by {skew} s: {log}");
    }
    let now = unix_now();
    let dues: Vec<f64> = (0..6).map(|i| now + 1.0 + i as f64 * 0.2).collect();
    for (i, due) in dues.iter().enumerate() {
        add(
            &mut con,
            &member(&endpoint.url("/skew"), json!({ "i": i })),
            *due,
        );
    }
    for r in endpoint.wait_for(dues.len()) {
        let body: serde_json::Value = serde_json::from_str(&r.form["body"]).unwrap();
        let due = dues[body["i"].as_u64().unwrap() as usize];
        let late = r.at - due;
        assert!(late >= 0.0, "delivered {:.3} s early", -late);
        assert!(
            late < 30.0,
            "delivered {late:.1} s late: the local clock was used"
        );
    }
}

#[test]
fn retry_after_holds_the_next_attempt_and_the_attempt_counts() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|r| {
        if r.attempt() == 1 {
            Reply::new(429, "slow down").header("Retry-After", "2")
        } else {
            Reply::success()
        }
    });
    let mut con = redis.con();
    let _daemon = Daemon::start(&redis, json!({"retryBaseMs": 50}));
    add(&mut con, &member(&endpoint.url("/ra"), json!(1)), 0.0);
    let requests = endpoint.wait_for(2);
    assert_eq!(requests[1].attempt(), 2, "the 429 attempt counted");
    let gap = requests[1].at - requests[0].at;
    assert!(gap >= 2.0, "retried after {gap:.2} s, before Retry-After");
}

#[test]
fn gone_and_abort_end_a_job_without_a_retry() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|r| match r.path.as_str() {
        "/gone" => Reply::new(410, "order deleted"),
        _ => Reply::new(500, "no").header("delayqs-retry", "abort"),
    });
    let mut con = redis.con();
    // One worker, so that the marker below keeps strict order.
    let _daemon = Daemon::start(
        &redis,
        json!({"maxRetryNum": 5, "retryBaseMs": 50, "concurrency": 1}),
    );
    add(&mut con, &member(&endpoint.url("/gone"), json!(1)), 0.0);
    add(&mut con, &member(&endpoint.url("/abort"), json!(2)), 0.0);
    wait_for_failed(&mut con, 2);
    // Both outcomes are written. A retry would have been queued with them, due 50 ms
    // on (no jitter), so claimed ahead of a marker due after that; with one worker its
    // request would arrive before the marker's.
    wait_for_marker(&mut con, unix_now() + 0.05 + 0.1, 1);
    assert_eq!(endpoint.count(), 2, "no retry after 410 or abort");
    let errors: Vec<String> = failed_records(&mut con)
        .iter()
        .map(|r| r["error"].as_str().unwrap().to_string())
        .collect();
    assert!(errors.iter().any(|e| e.contains("410 Gone")), "{errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("delayqs-retry: abort")),
        "{errors:?}"
    );
    assert_no_bookkeeping(&mut con);
}

#[test]
fn a_failing_host_is_paused_while_other_hosts_flow_then_probed_once() {
    let redis = RedisServer::start();
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    // Failing slowly: the host's other jobs come due while the probe is under way, so
    // a probe that did not go alone would show.
    let sick = Endpoint::start(move |_| {
        if flag.load(Ordering::SeqCst) {
            Reply::success()
        } else {
            Reply::new(503, "down").after(Duration::from_millis(800))
        }
    });
    let fine = Endpoint::succeeding();
    let mut con = redis.con();
    let daemon = Daemon::start(
        &redis,
        json!({"hostFailureThreshold": 3, "hostPauseMs": 3000, "retryBaseMs": 10, "maxRetryNum": 50, "concurrency": 2}),
    );
    for i in 0..6 {
        add(&mut con, &member(&sick.url("/sick"), json!(i)), 0.0);
    }
    daemon.wait_for_log("failed 3 times in a row");
    // A job handed out just before the trip may still be on its way: wait until every
    // request the host got has its outcome logged.
    wait_until(PATIENCE, "the attempts under way at the trip", || {
        daemon.log().matches("/sick failed").count() == sick.count()
    });
    let at_trip = sick.count();
    assert!(
        (3..=4).contains(&at_trip),
        "{at_trip} attempts before the pause"
    );

    // While the host is paused its jobs take no worker: the other host's go through.
    for i in 0..20 {
        add(&mut con, &member(&fine.url("/fine"), json!(i)), 0.0);
    }
    fine.wait_for(20);
    assert_eq!(sick.count(), at_trip, "attempts went out to a paused host");

    // After the pause one probe goes, alone; it fails, and the host is paused again.
    wait_until(PATIENCE, "the probe", || sick.count() > at_trip);
    let probe_at = sick.requests()[at_trip].at;
    // A second probe would be one of the host's jobs sent before the new pause ends:
    // 3 s after the probe failed, which is 0.8 s after it went. Each of those jobs is
    // due again within 2.1 s of the probe. Those held for the first pause come back at
    // most 0.75 s (a quarter of the pause) after its end, and the probe went after that
    // end; those held while the probe ran (0.8 s) come back 1 to 1.25 s later; the
    // probe's own retry comes tens of ms after it failed. So each has been claimed, and
    // sent or held again, ahead of markers due 2.5 s after the probe. Two markers held
    // at once keep both workers busy, so each has finished what it took before; and
    // counting only the requests from before that moment leaves out the next probe,
    // rightly sent once the new pause is over.
    let markers_held = wait_for_marker(&mut con, probe_at + 2.5, 2);
    let probes = sick
        .requests()
        .iter()
        .filter(|r| r.at >= probe_at && r.at < markers_held)
        .count();
    assert_eq!(probes, 1, "more than one probe");

    healthy.store(true, Ordering::SeqCst);
    daemon.wait_for_log("answer again");
    wait_until(PATIENCE, "the paused jobs delivered", || {
        con.zcard::<_, usize>(QUEUE).unwrap() == 0 && con.hlen::<_, usize>(ATTEMPTS).unwrap() == 0
    });
    let log = daemon.log();
    assert_eq!(
        log.matches("times in a row").count(),
        1,
        "tripping logged once"
    );
    assert_eq!(
        log.matches("answer again").count(),
        1,
        "recovery logged once"
    );
    assert_eq!(con.llen::<_, usize>(FAILED).unwrap(), 0);
}

#[test]
fn headers_carry_due_time_attempt_and_id() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    let _daemon = Daemon::start(&redis, json!({}));
    let m = member(&endpoint.url("/h"), json!(1));
    add(&mut con, &m, 1_700_000_000.125);
    let r = &endpoint.wait_for(1)[0];
    assert_eq!(r.header("x-delayqs-due"), "1700000000.125");
    assert_eq!(r.header("x-delayqs-attempt"), "1");
    assert_eq!(r.job_id(), job_id(&mut con, &m));
}

#[test]
fn per_job_options_change_one_job_only() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|r| match r.path.as_str() {
        "/slow" => Reply::success().after(Duration::from_secs(3)),
        "/fail" => Reply::new(500, "no"),
        _ => Reply::success(),
    });
    let mut con = redis.con();
    let _daemon = Daemon::start(&redis, json!({"maxRetryNum": 3, "retryBaseMs": 50}));
    let url = |p: &str| endpoint.url(p);
    let jobs = [
        json!({"callback": url("/fail"), "body": 1, "maxRetry": 0}),
        json!({"callback": url("/slow"), "body": 2, "timeout": 0.5, "maxRetry": 0}),
        json!({"callback": url("/fail"), "body": 3, "backoff": [0.4, 0.8], "maxRetry": 2}),
        json!({"callback": url("/put"), "body": {"b": 1}, "sign": "s", "method": "PUT", "contentType": "json", "headers": {"X-Shop": "7"}}),
        json!({"callback": url("/never"), "body": 5, "method": "GET"}),
        json!({"callback": url("/fail"), "body": 6}),
    ];
    for job in &jobs {
        add(&mut con, &job.to_string(), 0.0);
    }
    wait_for_failed(&mut con, 5);
    let records = failed_records(&mut con);
    let by_body = |b: i64| {
        records
            .iter()
            .find(|r| r["body"] == b)
            .unwrap_or_else(|| panic!("{b}: {records:?}"))
    };
    assert_eq!(by_body(1)["attempts"], 1, "maxRetry 0: one attempt");
    let slow = by_body(2)["error"].as_str().unwrap().to_lowercase();
    assert!(slow.contains("timeout"), "{slow}");
    assert_eq!(by_body(3)["attempts"], 3);
    assert!(by_body(5)["error"].as_str().unwrap().contains("`method`"));
    assert_eq!(
        by_body(6)["attempts"],
        4,
        "a job without options keeps the daemon's maxRetryNum"
    );

    let requests = endpoint.requests();
    let backoff: Vec<f64> = requests
        .iter()
        .filter(|r| r.form.get("body").map(String::as_str) == Some("3"))
        .map(|r| r.at)
        .collect();
    assert_eq!(backoff.len(), 3);
    assert!(
        backoff[1] - backoff[0] >= 0.4 && backoff[2] - backoff[1] >= 0.8,
        "{backoff:?}"
    );
    let put = requests.iter().find(|r| r.path == "/put").unwrap();
    assert_eq!(put.method, "PUT");
    assert_eq!(put.header("content-type"), "application/json");
    assert_eq!(String::from_utf8_lossy(&put.body), r#"{"b":1}"#);
    assert_eq!(put.header("x-delayqs-sign"), "s");
    assert_eq!(put.header("x-shop"), "7");
    assert!(requests.iter().all(|r| r.path != "/never"));
}

#[test]
fn skip_conditions_drop_a_job_without_a_request() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    let dir = scratch_dir();
    let metrics = dir.join("m.prom");
    let daemon = Daemon::start(
        &redis,
        json!({"metricsFile": metrics, "metricsIntervalMs": 100}),
    );
    let paid = json!({"callback": endpoint.url("/close"), "body": {"orderId": 42}, "skipIfExists": "order:42:paid"});
    let unpaid = json!({"callback": endpoint.url("/close"), "body": {"orderId": 43}, "skipIfExists": "order:43:paid"});
    let gone = json!({"callback": endpoint.url("/remind"), "body": {"cart": 7}, "skipIfMissing": "cart:7"});
    let due = unix_now() + 0.5;
    for job in [&paid, &unpaid, &gone] {
        add(&mut con, &job.to_string(), due);
    }
    // The payment code's single write: no cancel race with the claim.
    let _: () = con.set("order:42:paid", 1).unwrap();
    let r = &endpoint.wait_for(1)[0];
    assert_eq!(r.form["body"], r#"{"orderId":43}"#);
    daemon.wait_for_log("skipIfExists order:42:paid holds: dropped");
    daemon.wait_for_log("skipIfMissing cart:7 holds: dropped");
    wait_until(PATIENCE, "the skips counted", || {
        std::fs::read_to_string(&metrics)
            .unwrap_or_default()
            .contains("delayqs_skipped_total 2")
    });
    assert_eq!(endpoint.count(), 1);
    assert_eq!(con.zcard::<_, usize>(QUEUE).unwrap(), 0);
    assert_eq!(con.llen::<_, usize>(FAILED).unwrap(), 0);
    assert_no_bookkeeping(&mut con);
}

#[test]
fn zadd_xx_reschedules_a_pending_job_and_one_waiting_for_a_retry() {
    let redis = RedisServer::start();
    let failed_once = std::sync::atomic::AtomicBool::new(false);
    let endpoint = Endpoint::start(move |r| {
        if r.path == "/retry" && !failed_once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Reply::new(500, "no")
        } else {
            Reply::success()
        }
    });
    let mut con = redis.con();
    let _daemon = Daemon::start(&redis, json!({"retryBaseMs": 600000, "retryJitter": 0}));
    let later = member(&endpoint.url("/later"), json!(1));
    add(&mut con, &later, unix_now() + 600.0);
    let retry = member(&endpoint.url("/retry"), json!(2));
    add(&mut con, &retry, 0.0);
    endpoint.wait_for(1);
    wait_until(PATIENCE, "the retry scheduled ten minutes out", || {
        con.zscore::<_, _, Option<f64>>(QUEUE, &retry)
            .unwrap()
            .is_some_and(|s| s > unix_now() + 500.0)
    });
    // ZADD XX moves only jobs that are there: both are pending, under their own member.
    for m in [&later, &retry] {
        let changed: usize = redis::cmd("ZADD")
            .arg(QUEUE)
            .arg("XX")
            .arg("CH")
            .arg(unix_now())
            .arg(m)
            .query(&mut con)
            .unwrap();
        assert_eq!(changed, 1);
    }
    let requests = endpoint.wait_for(3);
    // A reschedule and a cancel-then-add look the same in Redis (a new score), and a
    // re-added job must start afresh: the rescheduled one comes as attempt 1 again
    // (README, "Producing jobs").
    let retried = requests
        .iter()
        .filter(|r| r.path == "/retry")
        .nth(1)
        .map(|r| r.attempt());
    assert_eq!(retried, Some(1), "{requests:?}");
    assert!(requests.iter().any(|r| r.path == "/later"));
}

#[test]
fn the_due_header_keeps_the_first_due_time_across_retries() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|r| {
        if r.attempt() == 1 {
            Reply::new(500, "no")
        } else {
            Reply::success()
        }
    });
    let mut con = redis.con();
    let _daemon = Daemon::start(&redis, json!({"retryBaseMs": 100}));
    add(
        &mut con,
        &member(&endpoint.url("/late"), json!(1)),
        1_700_000_000.5,
    );
    let requests = endpoint.wait_for(2);
    assert_eq!(requests[1].attempt(), 2);
    for r in &requests {
        assert_eq!(
            r.header("x-delayqs-due"),
            "1700000000.500",
            "attempt {}",
            r.attempt()
        );
    }
}

#[test]
fn a_skip_key_the_daemon_may_not_read_sets_one_job_aside_and_the_queue_flows() {
    let redis = RedisServer::start();
    let mut admin = redis.con();
    let url = redis.acl_user("shop", "shop-pw", "DelayQs:*");
    let endpoint = Endpoint::succeeding();
    let daemon = Daemon::start(&redis, json!({"redis": url}));
    let locked =
        json!({"callback": endpoint.url("/locked"), "body": 1, "skipIfExists": "order:1:paid"});
    add(&mut admin, &locked.to_string(), 1.0);
    add(&mut admin, &member(&endpoint.url("/after"), json!(2)), 2.0);
    assert_eq!(endpoint.wait_for(1)[0].path, "/after");
    wait_for_failed(&mut admin, 1);
    let record = &failed_records(&mut admin)[0];
    assert!(
        record["error"]
            .as_str()
            .unwrap()
            .contains("order:1:paid cannot be read"),
        "{record}"
    );
    assert_eq!(record["member"], locked.to_string().as_str());
    daemon.wait_for_log("cannot be read");
    assert_eq!(endpoint.count(), 1);
}

#[test]
fn a_copy_added_while_in_flight_with_its_skip_key_set_does_not_break_the_lease() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|_| Reply::success().after(Duration::from_millis(800)));
    let mut con = redis.con();
    // Two workers: the copy is claimed (and merged) while the first attempt runs.
    let daemon = Daemon::start(&redis, json!({"concurrency": 2}));
    let job = json!({"callback": endpoint.url("/paid"), "body": 7, "skipIfExists": "order:7:paid"})
        .to_string();
    add(&mut con, &job, 0.0);
    endpoint.wait_for(1);
    add(&mut con, &job, 0.0);
    let _: () = con.set("order:7:paid", 1).unwrap();
    wait_until(PATIENCE, "settled", || {
        con.zcard::<_, usize>(QUEUE).unwrap() == 0 && con.hlen::<_, usize>(ATTEMPTS).unwrap() == 0
    });
    // A broken lease shows when the attempt's outcome is written: it is found stale
    // ("lease ran out"). The loop logs the delivery as it takes the outcome, and the
    // next claim writes it, so a marker added after that line is claimed no earlier
    // than the write, and the write's log line comes before the marker goes out.
    daemon.wait_for_log(&format!("delivered to {}", endpoint.url("/paid")));
    // A second delivery would be the copy claimed as a job of its own, due by now, so
    // ahead of markers due now. Two markers held at once keep both workers busy, so
    // each has finished what it took before, and any such request has arrived.
    wait_for_marker(&mut con, unix_now(), 2);
    assert_eq!(endpoint.count(), 1);
    assert!(!daemon.log().contains("lease ran out"), "{}", daemon.log());
    assert_no_bookkeeping(&mut con);
}
