//! What a callback endpoint receives, and when (PROTOCOL §2; core issue: Deliver, On
//! time, Poison, Outcome).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn callback_gets_exact_form_fields_and_headers() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    let _daemon = Daemon::start(&redis, json!({}));

    // Written the way a PHP producer writes it: unsorted keys, a big integer, HTML
    // characters and an extra field delayqs must tolerate.
    let member = format!(
        r#"{{"sign":"9c1f ab/+=","callback":"{}","body":{{"z":"<b>&amp;</b>","orderId":12345678901234567890,"a":{{"y":1.5,"x":[2,1]}}}},"extra":"kept"}}"#,
        endpoint.url("/orderTimeOut.php?shop=1")
    );
    add(&mut con, &member, unix_now() - 1.0);

    let r = &endpoint.wait_for(1)[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/orderTimeOut.php?shop=1");
    assert_eq!(
        r.header("content-type"),
        "application/x-www-form-urlencoded"
    );
    assert_eq!(r.form.len(), 2, "only body and sign: {:?}", r.form);
    assert_eq!(
        r.form["body"],
        r#"{"a":{"x":[2,1],"y":1.5},"orderId":12345678901234567890,"z":"<b>&amp;</b>"}"#
    );
    assert_eq!(r.form["sign"], "9c1f ab/+=");
    assert_eq!(
        r.header("user-agent"),
        concat!("delayqs/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(r.job_id(), job_id(&mut con, &member));
    assert_eq!(r.attempt(), 1);

    wait_until(PATIENCE, "the job to be settled", || {
        con.hlen::<_, usize>(ATTEMPTS).unwrap() == 0
    });
    assert_eq!(con.zcard::<_, usize>(QUEUE).unwrap(), 0);
    assert_no_bookkeeping(&mut con);
    assert_eq!(endpoint.count(), 1);
}

#[test]
fn scheduled_jobs_go_out_no_earlier_than_due_and_under_a_second_late() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    // A long poll interval: arriving on time must come from sleeping until the due
    // score, not from polling often.
    let _daemon = Daemon::start(&redis, json!({"pollIntervalMs": 2000}));

    let start = unix_now();
    let dues: Vec<f64> = [1.25, 1.5, 1.75, 2.125]
        .iter()
        .map(|offset| (start + offset) * 1000.0)
        .map(|ms: f64| ms.round() / 1000.0)
        .collect();
    for (i, due) in dues.iter().enumerate() {
        add(
            &mut con,
            &member(&endpoint.url("/t"), json!({ "i": i })),
            *due,
        );
    }
    let requests = endpoint.wait_for(dues.len());
    for r in &requests {
        let body: serde_json::Value = serde_json::from_str(&r.form["body"]).unwrap();
        let due = dues[body["i"].as_u64().unwrap() as usize];
        let late_ms = (r.at - due) * 1000.0;
        println!("job due {due:.3} arrived {late_ms:+.2} ms after its due time");
        assert!(late_ms >= 0.0, "delivered {late_ms:.2} ms early");
        // Generous, so a loaded machine does not fail it; the benchmark measures it.
        assert!(late_ms < 1000.0, "delivered {late_ms:.0} ms late");
    }
}

#[test]
fn past_due_job_added_while_running_is_delivered() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    let daemon = Daemon::start(&redis, json!({}));
    daemon.wait_ready();
    // Not a proof of absence: the jobs below must come after the loop has been claiming
    // for a while. A marker due now, delivered, shows it has claimed past now; empty
    // polls follow.
    wait_for_marker(&mut con, unix_now(), 1);

    add(
        &mut con,
        &member(&endpoint.url("/late"), json!(1)),
        unix_now() - 3600.0,
    );
    add(&mut con, &member(&endpoint.url("/ancient"), json!(2)), 1.0);
    let paths: Vec<String> = endpoint.wait_for(2).into_iter().map(|r| r.path).collect();
    assert!(paths.contains(&"/late".to_string()) && paths.contains(&"/ancient".to_string()));
}

#[test]
fn each_success_rule_decides_as_documented() {
    // (rule, status, body, delivered?)
    let cases = [
        ("body", 500, "{\"result\":\"SUCCESS\"}", true),
        ("body", 200, "ok", false),
        ("2xx", 204, "", true),
        ("2xx", 500, "success", false),
        ("2xx+body", 201, "Success!", true),
        ("2xx+body", 200, "fine", false),
        ("2xx+body", 503, "success", false),
    ];
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|r| {
        let (status, body) = r.path[1..].split_once('/').unwrap();
        Reply::new(status.parse().unwrap(), &body.replace("%20", " "))
    });
    for (rule, status, body, delivered) in cases {
        let mut con = redis.con();
        let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
        let daemon = Daemon::start(&redis, json!({"successRule": rule, "maxRetryNum": 0}));
        let path = format!("/{status}/{}", body.replace(' ', "%20"));
        let m = member(&endpoint.url(&path), json!({"rule": rule}));
        add(&mut con, &m, 0.0);
        wait_until(PATIENCE, "the job to be settled", || {
            con.zcard::<_, usize>(QUEUE).unwrap() == 0
                && con.hlen::<_, usize>(ATTEMPTS).unwrap() == 0
        });
        let failed = failed_records(&mut con);
        assert_eq!(
            failed.is_empty(),
            delivered,
            "rule {rule:?}, HTTP {status} {body:?}: failed list {failed:?}\n{}",
            daemon.log()
        );
        drop(daemon);
    }
}

#[test]
fn poison_members_are_set_aside_with_a_reason_and_the_queue_keeps_moving() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    let poison: Vec<(Vec<u8>, &str)> = vec![
        (b"not json at all".to_vec(), "not valid JSON"),
        (b"[1,2,3]".to_vec(), "not a JSON object"),
        (br#"{"body":{"orderId":1}}"#.to_vec(), "no `callback`"),
        (br#"{"callback":"/relative/path"}"#.to_vec(), "absolute"),
        (
            br#"{"callback":"ftp://127.0.0.1/x"}"#.to_vec(),
            "http or https",
        ),
        (
            br#"{"callback":"http://user:hunter2@127.0.0.1/x"}"#.to_vec(),
            "credentials",
        ),
        (
            b"{\"callback\":\"http://127.0.0.1/\",\"body\":\"\xff\xfe\"}".to_vec(),
            "not valid JSON",
        ),
    ];
    for (i, (m, _)) in poison.iter().enumerate() {
        let _: () = con.zadd(QUEUE, m, i as f64).unwrap();
    }
    let good = member(&endpoint.url("/after-poison"), json!({"ok": true}));
    add(&mut con, &good, 100.0);
    let daemon = Daemon::start(&redis, json!({}));

    assert_eq!(endpoint.wait_for(1)[0].path, "/after-poison");
    wait_for_failed(&mut con, poison.len());
    let records = failed_records(&mut con);
    for (m, why) in &poison {
        let lossy = String::from_utf8_lossy(m);
        let record = records
            .iter()
            .find(|r| r["member"] == *lossy)
            .unwrap_or_else(|| panic!("no record for {lossy}: {records:?}"));
        let error = record["error"].as_str().unwrap();
        assert!(error.contains(why), "{lossy}: {error}");
        assert_eq!(record["attempts"], 0);
        assert_eq!(record["Id"].as_str().unwrap().len(), 40);
    }
    assert!(
        !daemon.log().contains("hunter2"),
        "a password reached the log"
    );
    assert!(
        records
            .iter()
            .all(|r| !r["error"].as_str().unwrap().contains("hunter2")),
        "a password reached an error message"
    );
    assert_eq!(endpoint.count(), 1, "no request for a poison job");
    wait_until(PATIENCE, "bookkeeping cleared", || {
        con.hlen::<_, usize>(ATTEMPTS).unwrap() == 0
    });
    assert_no_bookkeeping(&mut con);
}

#[test]
fn hanging_endpoint_does_not_hold_up_other_jobs() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|r| {
        if r.path == "/hang" {
            Reply::success().after(Duration::from_secs(30))
        } else {
            Reply::success()
        }
    });
    let mut con = redis.con();
    let _daemon = Daemon::start(
        &redis,
        json!({"concurrency": 2, "timeoutMs": 1000, "connectTimeoutMs": 500, "maxRetryNum": 1, "retryBaseMs": 100}),
    );
    add(&mut con, &member(&endpoint.url("/hang"), json!(0)), 0.0);
    for i in 0..20 {
        add(
            &mut con,
            &member(&endpoint.url("/ok"), json!(i)),
            1.0 + i as f64,
        );
    }
    // Both attempts at /hang time out, and the other twenty go through meanwhile.
    wait_for_failed(&mut con, 1);
    let requests = endpoint.requests();
    let ok: Vec<f64> = requests
        .iter()
        .filter(|r| r.path == "/ok")
        .map(|r| r.at)
        .collect();
    assert_eq!(ok.len(), 20);
    let hangs: Vec<f64> = requests
        .iter()
        .filter(|r| r.path == "/hang")
        .map(|r| r.at)
        .collect();
    assert_eq!(hangs.len(), 2);
    let last_ok = ok.iter().cloned().fold(0.0, f64::max);
    assert!(
        last_ok < hangs[1],
        "the other jobs waited for the hanging one"
    );
    let record = &failed_records(&mut con)[0];
    assert_eq!(record["attempts"], 2);
    let error = record["error"].as_str().unwrap();
    assert!(error.to_lowercase().contains("timeout"), "{error}");
}

#[test]
fn a_kept_alive_connection_the_endpoint_closed_costs_no_attempt() {
    let redis = RedisServer::start();
    // Every answer closes its connection without a `Connection: close` header, as a
    // server whose keep-alive timeout ran out does: the pooled connection is dead by
    // the time the next job goes out, and sending on it would fail that attempt.
    let endpoint = Endpoint::start(|_| Reply::success().then_close());
    let mut con = redis.con();
    let _daemon = Daemon::start(&redis, json!({"concurrency": 1, "maxRetryNum": 0}));
    for i in 0..3 {
        add(
            &mut con,
            &member(&endpoint.url("/cb"), json!(i)),
            unix_now() + 0.3 * i as f64,
        );
    }
    let requests = endpoint.wait_for(3);
    assert_no_bookkeeping(&mut con);
    assert!(failed_records(&mut con).is_empty());
    assert!(requests.iter().all(|r| r.attempt() == 1), "{requests:?}");
}

#[test]
fn a_slow_answer_times_out_at_timeout_ms_on_a_reused_connection() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|r| match r.path.as_str() {
        "/slow" => Reply::success().after(Duration::from_millis(1600)),
        _ => Reply::success(),
    });
    let mut con = redis.con();
    let _daemon = Daemon::start(
        &redis,
        json!({"concurrency": 1, "timeoutMs": 1000, "maxRetryNum": 0}),
    );
    // The quick job opens the connection; the slow one reuses it, so its read runs
    // under the receive timeout left on the socket by the first.
    add(&mut con, &member(&endpoint.url("/fast"), json!(1)), 0.0);
    add(
        &mut con,
        &member(&endpoint.url("/slow"), json!(2)),
        unix_now() + 0.3,
    );
    wait_for_failed(&mut con, 1);
    let record = &failed_records(&mut con)[0];
    let error = record["error"].as_str().unwrap().to_lowercase();
    assert!(error.contains("timeout"), "{record}");
    // Not before the deadline either: the request was sent, then a second passed.
    let sent = endpoint
        .requests()
        .iter()
        .find(|r| r.path == "/slow")
        .map(|r| r.at)
        .unwrap();
    let after = record["failedAt"].as_f64().unwrap() - sent;
    assert!(
        after >= 0.95,
        "gave up {after:.3} s after sending, before timeoutMs"
    );
    assert_eq!(endpoint.count(), 2);
}
