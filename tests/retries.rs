//! Failed attempts: backoff, the failed list, cancelling a job that waits for a retry
//! (PROTOCOL §1, §3; core issue: Outcome).

mod common;

use common::*;
use serde_json::json;

#[test]
fn failing_job_is_retried_with_backoff_then_recorded_in_fail_key() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|_| Reply::new(500, "database is down"));
    let mut con = redis.con();
    let _daemon = Daemon::start(
        &redis,
        json!({"maxRetryNum": 2, "retryBaseMs": 300, "retryJitter": 0}),
    );
    let m = format!(
        r#"{{"callback":"{}","body":{{"orderId":7}},"sign":"s1","extra":[1]}}"#,
        endpoint.url("/fail")
    );
    add(&mut con, &m, 0.0);

    wait_for_failed(&mut con, 1);
    let requests = endpoint.requests();
    assert_eq!(requests.len(), 3, "1 + maxRetryNum attempts");
    let attempts: Vec<u32> = requests.iter().map(|r| r.attempt()).collect();
    assert_eq!(attempts, [1, 2, 3]);
    let id = job_id(&mut con, &m);
    assert!(
        requests.iter().all(|r| r.job_id() == id),
        "same id on every attempt"
    );
    let gaps: Vec<f64> = requests.windows(2).map(|w| w[1].at - w[0].at).collect();
    println!("gaps between attempts: {gaps:?}");
    assert!(gaps[0] >= 0.3, "first retry after the base delay: {gaps:?}");
    assert!(
        gaps[1] >= 0.6,
        "second retry after twice the base: {gaps:?}"
    );

    let record = &failed_records(&mut con)[0];
    assert_eq!(record["Id"], id.as_str());
    assert_eq!(record["member"], m.as_str());
    assert_eq!(record["callback"], endpoint.url("/fail").as_str());
    assert_eq!(record["body"], json!({"orderId": 7}));
    assert_eq!(record["sign"], "s1");
    assert_eq!(record["extra"], json!([1]));
    assert_eq!(record["attempts"], 3);
    let error = record["error"].as_str().unwrap();
    assert!(
        error.contains("HTTP 500") && error.contains("database is down"),
        "{error}"
    );
    assert!(record["failedAt"].as_f64().unwrap() > 1.7e9);

    assert_eq!(con.zcard::<_, usize>(QUEUE).unwrap(), 0);
    assert_no_bookkeeping(&mut con);
}

#[test]
fn retry_then_success_delivers_once_and_keeps_no_bookkeeping() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|r| {
        if r.attempt() < 3 {
            Reply::new(502, "bad gateway")
        } else {
            Reply::success()
        }
    });
    let mut con = redis.con();
    // One worker, so that the marker below keeps strict order.
    let _daemon = Daemon::start(&redis, json!({"retryBaseMs": 50, "concurrency": 1}));
    add(&mut con, &member(&endpoint.url("/flaky"), json!(1)), 0.0);
    endpoint.wait_for(3);
    wait_until(PATIENCE, "attempt counts cleared", || {
        con.hlen::<_, usize>(ATTEMPTS).unwrap() == 0
    });
    assert_no_bookkeeping(&mut con);
    assert_eq!(con.llen::<_, usize>(FAILED).unwrap(), 0);
    assert_eq!(con.zcard::<_, usize>(QUEUE).unwrap(), 0);
    // The third attempt's outcome is written. A fourth attempt would be a retry after
    // it, 200 ms on (50 ms doubled twice, no jitter), so claimed ahead of a marker due
    // after that; with one worker its request would arrive before the marker's.
    wait_for_marker(&mut con, unix_now() + 0.2 + 0.1, 1);
    assert_eq!(endpoint.count(), 3);
}

#[test]
fn job_waiting_for_a_retry_can_be_cancelled_with_zrem() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|_| Reply::new(500, "no"));
    let mut con = redis.con();
    // One worker, so that the marker below proves the retry time has passed.
    let _daemon = Daemon::start(&redis, json!({"retryBaseMs": 1500, "concurrency": 1}));
    let m = member(&endpoint.url("/cancel-me"), json!({"orderId": 42}));
    add(&mut con, &m, 0.0);
    endpoint.wait_for(1);

    // The job goes back into the queue under its original member string...
    let mut retry_due = 0.0;
    wait_until(PATIENCE, "the job back in the queue", || {
        let score: Option<f64> = con.zscore(QUEUE, &m).unwrap();
        retry_due = score.unwrap_or(0.0);
        score.is_some()
    });
    // ...so the producer's ZREM (the order got paid) still cancels it.
    let removed: usize = con.zrem(QUEUE, &m).unwrap();
    assert_eq!(removed, 1);

    // Its attempt count is swept once nothing refers to it.
    wait_until(PATIENCE, "the attempt count to be swept", || {
        con.hlen::<_, usize>(ATTEMPTS).unwrap() == 0
    });
    // A marker due just after the removed retry was: had the retry still been queued
    // it would have been claimed first, and with one worker its request would have
    // arrived before the marker's.
    wait_for_marker(&mut con, retry_due + 0.1, 1);
    assert_eq!(endpoint.count(), 1, "a cancelled job was delivered");
    assert_eq!(con.llen::<_, usize>(FAILED).unwrap(), 0);
    assert_no_bookkeeping(&mut con);
}

#[test]
fn attempt_count_survives_a_restart() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|_| Reply::new(500, "no"));
    let mut con = redis.con();
    let m = member(&endpoint.url("/count"), json!(1));
    add(&mut con, &m, 0.0);
    let config = json!({"maxRetryNum": 2, "retryBaseMs": 1000, "retryJitter": 0});
    let mut daemon = Daemon::start(&redis, config.clone());
    endpoint.wait_for(1);
    wait_until(PATIENCE, "the retry scheduled", || {
        con.zscore::<_, _, Option<f64>>(QUEUE, &m)
            .unwrap()
            .is_some()
    });
    daemon.signal("TERM");
    assert!(daemon.wait_exit().success());

    let _daemon = Daemon::start(&redis, config);
    wait_for_failed(&mut con, 1);
    let attempts: Vec<u32> = endpoint.requests().iter().map(|r| r.attempt()).collect();
    assert_eq!(attempts, [1, 2, 3], "the count went on after the restart");
}
