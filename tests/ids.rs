//! Jobs by the producer's own id (issue 18): the `delayqs` Functions library and the
//! plain script it is built from (`src/store/scripts/ids.lua`), the id index kept true
//! on every path a job leaves by, the id on the wire, the admin commands, real clients
//! (PHP's phpredis, redis-py, redis-cli), and the race the feature exists for.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::*;
use redis::Value;
use serde_json::{Value as Json, json};

const INDEX: &str = "DelayQs:job_zqueue:ids";

/// How a test reaches the operations: the library's functions, or the plain script.
#[derive(Clone, Copy, Debug)]
enum Via {
    Function,
    Script,
}

const VIAS: [Via; 2] = [Via::Function, Via::Script];

fn script() -> String {
    let out = run_delayqs(&["functions", "script"]);
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn library() -> String {
    let out = run_delayqs(&["functions", "library"]);
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The version the library carries ("Version N." in its header).
fn library_version() -> i64 {
    let text = library();
    let (_, rest) = text.split_once("Version ").unwrap();
    rest.split('.').next().unwrap().parse().unwrap()
}

fn load_library(con: &mut redis::Connection) {
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(library())
        .query(con)
        .unwrap();
}

impl Via {
    fn call(
        self,
        con: &mut redis::Connection,
        op: &str,
        args: &[&str],
    ) -> redis::RedisResult<Value> {
        let keys = [QUEUE, INFLIGHT, ATTEMPTS, INDEX];
        match self {
            Via::Function => redis::cmd("FCALL")
                .arg(format!("delayqs_{op}"))
                .arg(4)
                .arg(&keys[..])
                .arg(args)
                .query(con),
            Via::Script => redis::cmd("EVAL")
                .arg(script())
                .arg(4)
                .arg(&keys[..])
                .arg(op)
                .arg(args)
                .query(con),
        }
    }

    /// `{status, job id, due}` of schedule, move, cancel.
    fn op(self, con: &mut redis::Connection, op: &str, args: &[&str]) -> (String, String, String) {
        let v = self
            .call(con, op, args)
            .unwrap_or_else(|e| panic!("{self:?} {op} {args:?}: {e}"));
        let items: Vec<String> = redis::from_redis_value(v).unwrap();
        (items[0].clone(), items[1].clone(), items[2].clone())
    }

    fn schedule(
        self,
        con: &mut redis::Connection,
        id: &str,
        job: &Json,
        due: &str,
    ) -> (String, String) {
        let (status, job_id, _) = self.op(con, "schedule", &[id, &job.to_string(), due]);
        (status, job_id)
    }

    /// The state's fields, or `None` when no job lives under `id`.
    fn state(self, con: &mut redis::Connection, id: &str) -> Option<HashMap<String, String>> {
        match self.call(con, "state", &[id]).unwrap() {
            Value::Nil => None,
            v => {
                let items: Vec<String> = redis::from_redis_value(v).unwrap();
                Some(
                    items
                        .chunks(2)
                        .map(|p| (p[0].clone(), p[1].clone()))
                        .collect(),
                )
            }
        }
    }
}

fn job(endpoint: &Endpoint, path: &str, body: Json) -> Json {
    json!({"callback": endpoint.url(path), "body": body})
}

/// The index fields left besides the sequence counter.
fn index_left(con: &mut redis::Connection) -> Vec<String> {
    let fields: Vec<String> = con.hkeys(INDEX).unwrap();
    fields.into_iter().filter(|f| f != "seq").collect()
}

/// Nothing pending, in flight or counted, and no id indexed: once this holds, no job
/// lives and no request can come.
fn settled(con: &mut redis::Connection) -> bool {
    con.zcard::<_, usize>(QUEUE).unwrap() == 0
        && con.zcard::<_, usize>(INFLIGHT).unwrap() == 0
        && con.hlen::<_, usize>(ATTEMPTS).unwrap() == 0
        && index_left(con).is_empty()
}

fn wait_settled(con: &mut redis::Connection) {
    wait_until(PATIENCE, "every job gone and the index empty", || {
        settled(con)
    });
}

fn redis_now(con: &mut redis::Connection) -> f64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(con).unwrap();
    s as f64 + us as f64 / 1e6
}

/// An endpoint whose requests wait until `open` (or a minute), then answer `status`.
struct Gate {
    open: Arc<(Mutex<bool>, Condvar)>,
}

impl Gate {
    fn endpoint(status: u16) -> (Endpoint, Gate) {
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let shared = open.clone();
        let endpoint = Endpoint::start(move |_| {
            let (lock, cv) = &*shared;
            let g = lock.lock().unwrap();
            let _ = cv.wait_timeout_while(g, PATIENCE, |open| !*open).unwrap();
            match status {
                200 => Reply::success(),
                s => Reply::new(s, "no"),
            }
        });
        (endpoint, Gate { open })
    }

    fn open(&self) {
        *self.open.0.lock().unwrap() = true;
        self.open.1.notify_all();
    }
}

fn delayqs(config: &Path, args: &[&str]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&["--config", config.to_str().unwrap()]);
    run_delayqs(&all)
}

// ---------------------------------------------------------------- the id on the wire

#[test]
fn the_endpoint_sees_the_id_and_a_webhook_id_per_delivery() {
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let redis = RedisServer::start();
    let mut con = redis.con();
    let endpoint = Endpoint::succeeding();
    let daemon = Daemon::start(&redis, json!({"signingSecret": SECRET}));
    daemon.wait_ready();
    let j = job(&endpoint, "/close", json!({"orderId": 42}));
    let (status, first) = Via::Function.schedule(&mut con, "order:42:close", &j, "+0");
    assert_eq!(status, "added");
    let r = endpoint.wait_for(1).remove(0);
    assert_eq!(r.header("x-delayqs-producer-id"), "order:42:close");
    assert_eq!(r.job_id(), first);
    assert_eq!(r.header("webhook-id"), first, "webhook-id is the job id");
    assert_eq!(
        r.form["body"], r#"{"orderId":42}"#,
        "the body is the producer's"
    );
    wait_settled(&mut con);

    // The same id and the same JSON again, after the first delivery finished: a new
    // delivery, which receivers must not de-duplicate away.
    let (_, second) = Via::Function.schedule(&mut con, "order:42:close", &j, "+0");
    let r = endpoint.wait_for(2).remove(1);
    assert_eq!(r.header("x-delayqs-producer-id"), "order:42:close");
    assert_eq!(r.header("webhook-id"), second);
    assert_ne!(second, first);
    wait_settled(&mut con);

    // The index lost (a restart without persistence, a DEL): its counter starts again,
    // and the same id and JSON still make a new delivery, by the time in the member.
    let _: () = con.del(INDEX).unwrap();
    let (_, third) = Via::Function.schedule(&mut con, "order:42:close", &j, "+0");
    let r = endpoint.wait_for(3).remove(2);
    assert_eq!(r.header("webhook-id"), third);
    assert!(
        third != first && third != second,
        "a webhook-id of an earlier delivery: {third}"
    );
    wait_settled(&mut con);

    // A job added the old way: no id header, today's SHA-1 id.
    let old = member(&endpoint.url("/old"), json!(1));
    add(&mut con, &old, 1.0);
    let r = endpoint.wait_for(4).remove(3);
    assert_eq!(r.headers.get("x-delayqs-producer-id"), None);
    assert_eq!(r.header("webhook-id"), job_id(&mut con, &old));
    wait_settled(&mut con);
    assert_no_bookkeeping(&mut con);
}

#[test]
fn two_ids_may_carry_the_same_json_and_are_two_jobs() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    load_library(&mut con);
    let endpoint = Endpoint::succeeding();
    let j = job(&endpoint, "/remind", json!({"user": 7}));
    let (_, a) = Via::Function.schedule(&mut con, "remind:7:day1", &j, "+0");
    let (_, b) = Via::Script.schedule(&mut con, "remind:7:day2", &j, "+0");
    assert_ne!(a, b);
    let _daemon = Daemon::start(&redis, json!({}));
    let got = endpoint.wait_for(2);
    let mut ids: Vec<&str> = got
        .iter()
        .map(|r| r.header("x-delayqs-producer-id"))
        .collect();
    ids.sort();
    assert_eq!(ids, ["remind:7:day1", "remind:7:day2"]);
    wait_settled(&mut con);
}

// ---------------------------------------------------------------- pending jobs

#[test]
fn scheduling_a_pending_id_replaces_it_and_move_and_cancel_act_on_it() {
    for via in VIAS {
        let redis = RedisServer::start();
        let mut con = redis.con();
        load_library(&mut con);
        let endpoint = Endpoint::succeeding();
        let (s, first) = via.schedule(
            &mut con,
            "order:1",
            &job(&endpoint, "/a", json!(1)),
            "+3600",
        );
        assert_eq!(s, "added", "{via:?}");
        let (s, second) = via.schedule(
            &mut con,
            "order:1",
            &job(&endpoint, "/b", json!(2)),
            "+7200",
        );
        assert_eq!(s, "replaced", "{via:?}");
        assert_eq!(
            con.zcard::<_, usize>(QUEUE).unwrap(),
            1,
            "{via:?}: one step, one job"
        );
        let state = via.state(&mut con, "order:1").unwrap();
        assert_eq!(state["state"], "pending");
        assert_eq!(state["jobId"], second);
        assert!(state["member"].contains("/b\""), "{state:?}");
        assert_eq!(
            index_left(&mut con).len(),
            2,
            "{via:?}: id and member, the first gone"
        );

        let (s, moved, due) = via.op(&mut con, "move", &["order:1", "1"]);
        assert_eq!(
            (s.as_str(), moved.as_str(), due.as_str()),
            ("moved", second.as_str(), "1.000000")
        );
        let daemon = Daemon::start(&redis, json!({}));
        let r = endpoint.wait_for(1).remove(0);
        assert_eq!(
            (r.path.as_str(), r.job_id()),
            ("/b", second.as_str()),
            "{via:?}"
        );
        assert_ne!(first, second);
        wait_settled(&mut con);
        assert_eq!(via.state(&mut con, "order:1"), None);
        assert_eq!(via.op(&mut con, "move", &["order:1", "+1"]).0, "not-found");
        assert_eq!(via.op(&mut con, "cancel", &["order:1"]).0, "not-found");

        // Cancelled while pending: never sent.
        via.schedule(&mut con, "order:2", &job(&endpoint, "/c", json!(3)), "+1");
        let (s, _, _) = via.op(&mut con, "cancel", &["order:2"]);
        assert_eq!(s, "cancelled");
        assert!(
            settled(&mut con),
            "{via:?}: nothing left of a cancelled job"
        );
        let due = redis_now(&mut con) + 1.5;
        wait_for_marker(&mut con, due, 4);
        assert_eq!(endpoint.count(), 1, "{via:?}: the cancelled job was sent");
        drop(daemon);
    }
}

#[test]
fn bad_input_is_refused_with_a_message_and_nothing_written() {
    for via in VIAS {
        let redis = RedisServer::start();
        let mut con = redis.con();
        load_library(&mut con);
        let good = r#"{"callback":"http://127.0.0.1:9/x"}"#;
        let long = "x".repeat(201);
        let mut cases: Vec<(&str, Vec<&str>, &str)> = vec![
            (
                "schedule",
                vec!["order 1", good, "1"],
                "printable ASCII characters without spaces",
            ),
            ("schedule", vec!["", good, "1"], "1 to 200"),
            ("schedule", vec![&long, good, "1"], "1 to 200"),
            ("schedule", vec!["o", good, "soon"], "is not Unix seconds"),
            ("schedule", vec!["o", good, "-5"], "is not Unix seconds"),
            ("schedule", vec!["o", good, "inf"], "is not Unix seconds"),
            ("schedule", vec!["o", good, "nan"], "is not Unix seconds"),
            ("schedule", vec!["o", good], "is not Unix seconds"),
            ("schedule", vec!["o", "[1]", "1"], "must be a JSON object"),
            (
                "schedule",
                vec!["o", "{\"callback\":", "1"],
                "not valid JSON",
            ),
            (
                "schedule",
                vec!["o", r#"{"body":1}"#, "1"],
                "needs a \"callback\"",
            ),
            (
                "schedule",
                vec!["o", r#"{"callback":"ftp://h/"}"#, "1"],
                "needs a \"callback\"",
            ),
            (
                "schedule",
                vec!["o", r#"{"callback":"http://h/","delayqs":1}"#, "1"],
                "may not have a \"delayqs\" field",
            ),
            (
                "schedule",
                vec!["o", good, "1764000000000"],
                "Unix seconds are expected, not milliseconds",
            ),
            (
                "move",
                vec!["o", "+1e12"],
                "Unix seconds are expected, not milliseconds",
            ),
            ("move", vec!["o", "+x"], "is not Unix seconds"),
            ("cancel", vec!["a\tb"], "printable ASCII"),
            ("state", vec![], "the id must be"),
            ("frobnicate", vec!["o"], "unknown operation"),
        ];
        // Each option the daemon checks when the job falls due, as src/job/options.rs
        // and format.rs check it, named in the refusal.
        let options = [
            (
                r#""maxRetry":"many""#,
                "\"maxRetry\" must be a whole number",
            ),
            (r#""maxRetry":1.5"#, "\"maxRetry\" must be a whole number"),
            (r#""maxRetry":1001"#, "\"maxRetry\" must be a whole number"),
            (r#""timeout":0"#, "\"timeout\" must be a positive number"),
            (r#""timeout":"5s""#, "\"timeout\" must be a positive number"),
            (r#""backoff":[]"#, "\"backoff\" must be seconds"),
            (r#""backoff":[1,"x"]"#, "\"backoff\" must be seconds"),
            (r#""backoff":700000"#, "\"backoff\" must be seconds"),
            (r#""headers":["x"]"#, "\"headers\" must be an object"),
            (r#""headers":{"X-A":1}"#, "must be a string"),
            (r#""headers":{"Bad Name":"x"}"#, "not a valid header name"),
            (r#""headers":{"X-A":"a\nb"}"#, "control character"),
            (
                r#""headers":{"Content-Type":"x"}"#,
                "may not be set by a job",
            ),
            (r#""headers":{"webhook-id":"x"}"#, "may not be set by a job"),
            (
                r#""method":"GET""#,
                "\"method\" must be \"POST\" or \"PUT\"",
            ),
            (r#""contentType":"xml""#, "\"contentType\" must be"),
            (
                r#""skipIfExists":5"#,
                "\"skipIfExists\" must be a Redis key name",
            ),
            (
                r#""skipIfMissing":"""#,
                "\"skipIfMissing\" must be a Redis key name",
            ),
            (
                r#""skipIfExists":"a","skipIfMissing":"b""#,
                "cannot be combined",
            ),
            (r#""\u0073kipIfExists":"a""#, "spelled with JSON escapes"),
            (r#""flowKey":"""#, "\"flowKey\" must be a name"),
            (r#""flowKey":7"#, "\"flowKey\" must be a name"),
            (r#""sign":5"#, "\"sign\" must be a string"),
            (
                r#""sign":"a\u0001","contentType":"json""#,
                "\"sign\" holds a control character",
            ),
        ];
        let jobs: Vec<String> = options
            .iter()
            .map(|(o, _)| format!(r#"{{"callback":"http://127.0.0.1:9/x",{o}}}"#))
            .collect();
        for ((_, expected), job) in options.iter().zip(&jobs) {
            cases.push(("schedule", vec!["o", job, "1"], expected));
        }
        for job in [
            r#"{"callback":"http://u:p@127.0.0.1:9/x"}"#,
            r#"{"callback":"http://127.0.0.1:9/a b"}"#,
        ] {
            cases.push(("schedule", vec!["o", job, "1"], "the job's \"callback\""));
        }
        // cjson takes a raw control character inside a string; JSON and the daemon do not.
        for job in [
            "{\"callback\":\"http://127.0.0.1:9/x\",\"body\":\"a\tb\"}",
            "{\"callback\":\"http://127.0.0.1:9/x\",\"body\":\"a\u{1}b\"}",
        ] {
            cases.push((
                "schedule",
                vec!["o", job, "1"],
                "control character unescaped",
            ));
        }
        // What passes every check is accepted, pretty-printed too (line feeds between
        // tokens): the checks refuse no valid job.
        let fine = r#"{"callback":"http://127.0.0.1:9/x","maxRetry":0,"timeout":2.5,"backoff":[0,1.5],"headers":{"X-Shop":"7\t8"},"method":"PUT","contentType":"json","skipIfMissing":"k","flowKey":"payments","sign":"s","body":{"a":[1]}}"#;
        let pretty =
            serde_json::to_string_pretty(&serde_json::from_str::<Json>(fine).unwrap()).unwrap();
        let accepted = via.op(&mut con, "schedule", &["fine", &pretty, "+3600"]);
        assert_eq!(accepted.0, "added", "{via:?}");
        assert_eq!(via.op(&mut con, "cancel", &["fine"]).0, "cancelled");
        let _: () = con.del(INDEX).unwrap();
        // And the daemon's own parsing takes it (`add` refuses what the daemon would
        // set aside).
        let config = config_file(&redis, json!({}));
        let out = delayqs(&config, &["add", "--member", &pretty, "--in", "1h"]);
        assert!(
            out.status.success(),
            "{via:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _: () = con.del(QUEUE).unwrap();
        for (op, args, expected) in cases {
            let call = match (via, op) {
                // A function that does not exist is the server's own error.
                (Via::Function, "frobnicate") => continue,
                _ => via.call(&mut con, op, &args),
            };
            let e = call.expect_err(&format!("{via:?} {op} {args:?} was accepted"));
            assert!(
                e.to_string().contains(expected),
                "{via:?} {op} {args:?}: {e}"
            );
        }
        let keys: Vec<String> = con.keys("*").unwrap();
        assert!(keys.is_empty(), "{via:?}: written: {keys:?}");
    }
}

// ---------------------------------------------------------------- in flight

#[test]
fn a_cancel_during_the_attempt_lets_it_finish_and_no_retry_follows() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let (endpoint, gate) = Gate::endpoint(503);
    let daemon = Daemon::start(&redis, json!({"retryBaseMs": 50, "maxRetryNum": 5}));
    daemon.wait_ready();
    let (_, id) = Via::Function.schedule(
        &mut con,
        "order:9",
        &job(&endpoint, "/close", json!(9)),
        "+0",
    );
    endpoint.wait_for(1);
    let (s, job_id, _) = Via::Function.op(&mut con, "cancel", &["order:9"]);
    assert_eq!(
        (s.as_str(), job_id.as_str()),
        ("after-attempt", id.as_str())
    );
    let state = Via::Function.state(&mut con, "order:9").unwrap();
    assert_eq!(
        (state["state"].as_str(), state["after"].as_str()),
        ("in-flight", "cancel")
    );
    assert_eq!(
        Via::Function.op(&mut con, "move", &["order:9", "+0"]).0,
        "not-found"
    );
    gate.open();
    wait_settled(&mut con);
    assert_eq!(endpoint.count(), 1, "a retry followed the cancel");
    assert!(
        failed_records(&mut con).is_empty(),
        "a cancelled job is no failure"
    );
}

#[test]
fn a_schedule_during_the_attempt_is_delivered_after_it_whatever_its_outcome() {
    for (status, path) in [(503, "/fails"), (200, "/succeeds")] {
        let redis = RedisServer::start();
        let mut con = redis.con();
        let (endpoint, gate) = Gate::endpoint(status);
        let daemon = Daemon::start(&redis, json!({"retryBaseMs": 50, "maxRetryNum": 5}));
        daemon.wait_ready();
        let via = Via::Function;
        let (_, old) = via.schedule(
            &mut con,
            "order:5",
            &job(&endpoint, path, json!("old")),
            "+0",
        );
        endpoint.wait_for(1);
        let (s, new) = via.schedule(
            &mut con,
            "order:5",
            &job(&endpoint, path, json!("new")),
            "+0",
        );
        assert_eq!(s, "after-attempt");
        let state = via.state(&mut con, "order:5").unwrap();
        assert_eq!(
            state["jobId"], old,
            "the attempt in flight is still the id's job"
        );
        assert!(state["after"].starts_with("schedule "), "{state:?}");
        gate.open();
        let got = endpoint.wait_for(2);
        assert_eq!(got[1].job_id(), new, "{status}");
        assert_eq!(got[1].form["body"], "\"new\"");
        assert_eq!(
            (got[1].attempt(), got[1].header("x-delayqs-producer-id")),
            (1, "order:5")
        );
        if status == 200 {
            wait_settled(&mut con);
        } else {
            // The new job is retried as any; the old one never again.
            wait_until(PATIENCE, "a retry of the new job", || endpoint.count() >= 3);
            via.op(&mut con, "cancel", &["order:5"]);
            wait_settled(&mut con);
        }
        let per_job = endpoint.per_job();
        assert_eq!(per_job[&old], 1, "{status}: the replaced job was retried");
        drop(daemon);
    }
}

#[test]
fn a_move_during_the_attempt_puts_its_retry_at_that_time() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let (endpoint, gate) = Gate::endpoint(503);
    // Without the move, the retry would come ten minutes later.
    let daemon = Daemon::start(&redis, json!({"retryBaseMs": 600000, "maxRetryNum": 2}));
    daemon.wait_ready();
    let via = Via::Script;
    let (_, id) = via.schedule(&mut con, "order:3", &job(&endpoint, "/m", json!(3)), "+0");
    endpoint.wait_for(1);
    let at = redis_now(&mut con) + 1.0;
    let (s, _, due) = via.op(&mut con, "move", &["order:3", &format!("{at}")]);
    assert_eq!(s, "after-attempt");
    gate.open();
    let retry = endpoint.wait_for(2).remove(1);
    assert_eq!(
        (retry.attempt(), retry.job_id()),
        (2, id.as_str()),
        "the same delivery"
    );
    assert!(
        retry.at >= due.parse::<f64>().unwrap() - 0.05,
        "early: {} < {due}",
        retry.at
    );
    via.op(&mut con, "cancel", &["order:3"]);
    wait_settled(&mut con);
}

#[test]
fn an_id_waiting_for_a_retry_is_moved_with_its_attempts_and_cancelled() {
    for via in VIAS {
        let redis = RedisServer::start();
        let mut con = redis.con();
        load_library(&mut con);
        let endpoint = Endpoint::start(|_| Reply::new(503, "down"));
        let daemon = Daemon::start(&redis, json!({"retryBaseMs": 600000, "maxRetryNum": 5}));
        let (_, id) = via.schedule(&mut con, "order:4", &job(&endpoint, "/r", json!(4)), "+0");
        endpoint.wait_for(1);
        wait_until(PATIENCE, "the retry to wait", || {
            via.state(&mut con, "order:4")
                .is_some_and(|s| s["state"] == "retrying")
        });
        assert_eq!(via.state(&mut con, "order:4").unwrap()["attempts"], "1");
        let first_due = endpoint.requests()[0].header("x-delayqs-due").to_string();
        assert_eq!(via.op(&mut con, "move", &["order:4", "+0"]).0, "moved");
        let r = endpoint.wait_for(2).remove(1);
        assert_eq!(
            (r.attempt(), r.job_id()),
            (2, id.as_str()),
            "{via:?}: attempts kept"
        );
        assert_eq!(
            r.header("x-delayqs-due"),
            first_due,
            "{via:?}: first due time kept"
        );
        assert_eq!(
            r.header("x-delayqs-producer-id"),
            "order:4",
            "{via:?}: the id on the retry too"
        );
        // Waiting again, not merely counted: the attempt under way counts too.
        wait_until(PATIENCE, "the second retry to wait", || {
            via.state(&mut con, "order:4")
                .is_some_and(|s| s["attempts"] == "2" && s["state"] == "retrying")
        });
        assert_eq!(via.op(&mut con, "cancel", &["order:4"]).0, "cancelled");
        assert!(settled(&mut con), "{via:?}");
        drop(daemon);
    }
}

// ---------------------------------------------------------------- the index on every path

#[test]
fn every_way_out_clears_the_index() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    load_library(&mut con);
    let endpoint = Endpoint::start(|r| match r.path.as_str() {
        "/gone" => Reply::new(410, "gone"),
        "/fail" => Reply::new(500, "no"),
        _ => Reply::success(),
    });
    let _: () = con.set("paid:1", 1).unwrap();
    let via = Via::Function;
    let big = "x".repeat(3000);
    let jobs = [
        ("done", json!({"callback": endpoint.url("/ok")})),
        ("gone", json!({"callback": endpoint.url("/gone")})),
        ("failed", json!({"callback": endpoint.url("/fail")})),
        (
            "skipped",
            json!({"callback": endpoint.url("/ok"), "skipIfExists": "paid:1"}),
        ),
        (
            "oversize",
            json!({"callback": endpoint.url("/ok"), "body": big}),
        ),
        // Past the daemon's timeoutMs, which the functions cannot know: set aside when
        // due. (A bad option they can check is refused at once.)
        (
            "malformed",
            json!({"callback": endpoint.url("/ok"), "timeout": 86400}),
        ),
    ];
    for (id, j) in &jobs {
        assert_eq!(via.schedule(&mut con, id, j, "+0").0, "added");
    }
    let _daemon = Daemon::start(
        &redis,
        json!({"maxJobBytes": 2048, "maxRetryNum": 1, "retryBaseMs": 10}),
    );
    wait_settled(&mut con);
    assert_eq!(
        con.llen::<_, usize>(FAILED).unwrap(),
        4,
        "gone, failed, oversize, malformed"
    );
    for (id, _) in &jobs {
        assert_eq!(via.state(&mut con, id), None, "{id}");
    }
    let paths: Vec<String> = endpoint.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths.iter().filter(|p| *p == "/ok").count(), 1, "{paths:?}");
    // The failed record names the id, in the member's own field.
    let records = failed_records(&mut con);
    let gone = records
        .iter()
        .find(|r| r["callback"] == endpoint.url("/gone"))
        .unwrap();
    assert_eq!(gone["delayqs"]["id"], "gone");
}

#[test]
fn a_failed_job_by_id_is_retried_under_its_id() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let endpoint = Endpoint::start(|r| match r.form.get("body").map(String::as_str) {
        Some("\"bad\"") => Reply::new(410, "gone"),
        _ => Reply::success(),
    });
    let daemon = Daemon::start(&redis, json!({}));
    daemon.wait_ready();
    let via = Via::Function;
    let (_, failed) = via.schedule(&mut con, "f", &job(&endpoint, "/f", json!("bad")), "+0");
    wait_for_failed(&mut con, 1);
    wait_settled(&mut con);
    // Paused, so that the retried job waits to be looked at.
    assert!(delayqs(&daemon.config, &["pause"]).status.success());
    daemon.wait_for_log("the queue is paused");
    let out = delayqs(&daemon.config, &["failed", "retry", &failed]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = via.state(&mut con, "f").expect("indexed again");
    assert_eq!(state["jobId"], failed);
    // Failed again, then retried while a new job lives under the id: it goes back
    // without the id, and the new job keeps it.
    assert!(delayqs(&daemon.config, &["resume"]).status.success());
    wait_for_failed(&mut con, 1);
    wait_settled(&mut con);
    let (_, newer) = via.schedule(&mut con, "f", &job(&endpoint, "/f", json!("good")), "+3600");
    let out = delayqs(&daemon.config, &["failed", "retry", &failed]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("another job lives under it"));
    assert_eq!(via.state(&mut con, "f").unwrap()["jobId"], newer);
    assert_eq!(via.op(&mut con, "move", &["f", "+0"]).0, "moved");
    wait_until(PATIENCE, "the newer job delivered", || {
        endpoint.per_job().contains_key(&newer)
    });
    let last = endpoint
        .requests()
        .into_iter()
        .find(|r| r.job_id() == newer)
        .unwrap();
    assert_eq!(last.header("x-delayqs-producer-id"), "f");
}

#[test]
fn a_user_not_allowed_the_index_still_delivers_and_is_told_once() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let mut acl = redis::cmd("ACL");
    acl.arg(&["SETUSER", "tight", "on", ">tight-pw", "+@all"][..]);
    for key in [
        QUEUE,
        INFLIGHT,
        ATTEMPTS,
        FAILED,
        "DelayQs:retry_id",
        "DelayQs:body",
    ] {
        acl.arg(format!("~{key}"));
    }
    let _: () = acl.query(&mut con).unwrap();
    let url = redis.url().replace("redis://", "redis://tight:tight-pw@");
    let config = config_file_for(&url, json!({}));
    let daemon = Daemon::start_with_file(&config);
    daemon.wait_ready();
    let endpoint = Endpoint::succeeding();
    add(&mut con, &member(&endpoint.url("/plain"), json!(1)), 0.0);
    endpoint.wait_for(1);
    let out = delayqs(
        &config,
        &[
            "add",
            "--id",
            "o",
            "--callback",
            &endpoint.url("/x"),
            "--in",
            "0s",
        ],
    );
    assert!(
        !out.status.success(),
        "the index is not this user's to write"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission"), "{err}");
    // A job cancelled by its job id as this user: the script is called without the index.
    let m = member(&endpoint.url("/later"), json!(2));
    add(&mut con, &m, unix_now() + 3600.0);
    let id = job_id(&mut con, &m);
    assert!(delayqs(&config, &["cancel", &id]).status.success());
    wait_until(PATIENCE, "the sweep to have passed", || {
        daemon.log().matches("may not use the id index").count() == 1
    });
    assert_eq!(daemon.log().matches("may not use the id index").count(), 1);
}

#[test]
fn a_plain_zrem_of_a_job_by_id_leaves_nothing_behind_for_long() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    load_library(&mut con);
    let endpoint = Endpoint::succeeding();
    Via::Function.schedule(&mut con, "z", &job(&endpoint, "/z", json!(1)), "+3600");
    let members: Vec<String> = con.zrange(QUEUE, 0, -1).unwrap();
    let _: () = con.zrem(QUEUE, &members[0]).unwrap();
    assert_eq!(index_left(&mut con).len(), 2);
    let _daemon = Daemon::start(&redis, json!({}));
    wait_until(PATIENCE, "the sweep to clear the index", || {
        index_left(&mut con).is_empty()
    });
    assert_eq!(Via::Function.state(&mut con, "z"), None);
}

/// A claim whose reply was lost is undone by `unclaim.lua` before anything else; what
/// the producer asked meanwhile applies then. Run on the scripts themselves, as the
/// daemon assembles them: the timing of a lost reply cannot be arranged from outside.
#[test]
fn a_lost_claim_honours_what_the_producer_asked_meanwhile() {
    let after = include_str!("../src/store/scripts/ids_after.lua");
    let claim = format!("{after}{}", include_str!("../src/store/scripts/claim.lua"));
    let unclaim = format!(
        "{after}{}",
        include_str!("../src/store/scripts/unclaim.lua")
    );
    let redis = RedisServer::start();
    let mut con = redis.con();
    load_library(&mut con);
    let via = Via::Function;
    let j = |n: u32| json!({"callback": "http://127.0.0.1:9/x", "body": n});
    let (_, cancelled) = via.schedule(&mut con, "c", &j(1), "+0");
    let (_, moved) = via.schedule(&mut con, "m", &j(2), "+0");
    let (_, replaced) = via.schedule(&mut con, "s", &j(3), "+0");
    let claimed: Vec<Value> = redis::cmd("EVAL")
        .arg(&claim)
        .arg(5)
        .arg(&[QUEUE, INFLIGHT, ATTEMPTS, FAILED, INDEX][..])
        .arg(&["10", "60000", "lost", "100", "1048576"][..])
        .query(&mut con)
        .unwrap();
    assert_eq!(
        claimed.len(),
        7 + 3 * 6,
        "three jobs claimed, each with its id"
    );
    assert_eq!(
        redis::from_redis_value::<String>(claimed[12].clone()).unwrap(),
        "c"
    );
    assert_eq!(via.op(&mut con, "cancel", &["c"]).0, "after-attempt");
    assert_eq!(via.op(&mut con, "move", &["m", "12345"]).0, "after-attempt");
    let (_, replacement) = via.schedule(&mut con, "s", &j(4), "+60");
    let put_back: i64 = redis::cmd("EVAL")
        .arg(&unclaim)
        .arg(4)
        .arg(&[QUEUE, INFLIGHT, ATTEMPTS, INDEX][..])
        .arg("lost")
        .query(&mut con)
        .unwrap();
    assert_eq!(put_back, 3);
    assert_eq!(via.state(&mut con, "c"), None, "cancelled");
    let m = via.state(&mut con, "m").unwrap();
    assert_eq!(
        (m["jobId"].as_str(), m["due"].as_str()),
        (moved.as_str(), "12345")
    );
    assert_eq!(m["after"], "", "the move was used up");
    let s = via.state(&mut con, "s").unwrap();
    assert_eq!(
        (s["state"].as_str(), s["jobId"].as_str()),
        ("pending", replacement.as_str())
    );
    let queued: Vec<String> = con.zrange(QUEUE, 0, -1).unwrap();
    assert_eq!(
        queued.len(),
        2,
        "the moved job and the replacement: {queued:?}"
    );
    let ids: Vec<String> = [&cancelled, &replaced]
        .iter()
        .filter(|id| queued.iter().any(|q| job_id(&mut con, q) == ***id))
        .map(|id| id.to_string())
        .collect();
    assert!(ids.is_empty(), "{ids:?} came back");
    assert_eq!(con.zcard::<_, usize>(INFLIGHT).unwrap(), 0);
    assert_eq!(index_left(&mut con).len(), 4, "two ids, two members");
}

#[test]
fn an_expired_lease_honours_what_the_producer_asked_meanwhile() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let (endpoint, gate) = Gate::endpoint(200);
    let fields =
        json!({"leaseMs": 3000, "timeoutMs": 1000, "redisTimeoutMs": 200, "concurrency": 4});
    let mut first = Daemon::start(&redis, fields.clone());
    first.wait_ready();
    let via = Via::Function;
    let (_, cancelled) = via.schedule(&mut con, "c", &job(&endpoint, "/c", json!("c")), "+0");
    let (_, moved) = via.schedule(&mut con, "m", &job(&endpoint, "/m", json!("m")), "+0");
    let (_, replaced) = via.schedule(&mut con, "s", &job(&endpoint, "/s", json!("s1")), "+0");
    endpoint.wait_for(3);
    first.kill9(); // the three attempts are cut: their leases will run out
    assert_eq!(via.op(&mut con, "cancel", &["c"]).0, "after-attempt");
    let later = redis_now(&mut con) + 4.0;
    assert_eq!(
        via.op(&mut con, "move", &["m", &format!("{later}")]).0,
        "after-attempt"
    );
    let (s, replacement) = via.schedule(&mut con, "s", &job(&endpoint, "/s", json!("s2")), "+0");
    assert_eq!(s, "after-attempt");
    gate.open();
    let _second = Daemon::start(&redis, fields);
    wait_settled(&mut con);
    let per_job = endpoint.per_job();
    assert_eq!(per_job[&cancelled], 1, "tried again after a cancel");
    assert_eq!(per_job[&moved], 2, "the moved job is tried again");
    assert_eq!(per_job[&replaced], 1, "tried again after a replacement");
    assert_eq!(per_job[&replacement], 1);
    let again = endpoint
        .requests()
        .into_iter()
        .filter(|r| r.job_id() == moved)
        .nth(1)
        .unwrap();
    assert!(
        again.at >= later - 0.05,
        "the moved job came back before its time"
    );
}

// ---------------------------------------------------------------- loading, commands, shards

#[test]
fn the_daemon_loads_the_library_when_missing_or_older() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("#!lua name=delayqs\nredis.register_function('delayqs_version', function() return 0 end)")
        .query(&mut con)
        .unwrap();
    let daemon = Daemon::start(&redis, json!({}));
    let version = library_version();
    daemon.wait_for_log(&format!(
        "replaced the delayqs Functions library version 0 by version {version}"
    ));
    let v: i64 = redis::cmd("FCALL")
        .arg("delayqs_version")
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert_eq!(v, version);
    // Functions are kept like data: flushed, the daemon's next connection loads them.
    let _: () = redis::cmd("FUNCTION").arg("FLUSH").query(&mut con).unwrap();
    let out = delayqs(&daemon.config, &["functions", "load", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["result"], "loaded");
    let v: i64 = redis::cmd("FCALL")
        .arg("delayqs_version")
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert_eq!(v, version);
}

#[test]
fn add_move_and_cancel_by_id_in_the_ids_shard() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let config = config_file(
        &redis,
        json!({"shards": 4, "key": "{q}:jobs", "inflightKey": "{q}:inflight",
               "attemptsKey": "{q}:attempts", "failKey": "{q}:failed"}),
    );
    for id in ["order:7", "order:8", "order:9"] {
        let out = delayqs(
            &config,
            &[
                "add",
                "--id",
                id,
                "--callback",
                "http://127.0.0.1:9/x",
                "--in",
                "1h",
                "--json",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reply: Json = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(reply["result"], "added");
        // The README's rule: the shard by the id's SHA-1.
        let sha: String = redis::cmd("EVAL")
            .arg("return redis.sha1hex(ARGV[1])")
            .arg(0)
            .arg(id)
            .query(&mut con)
            .unwrap();
        let shard = u32::from_str_radix(&sha[..8], 16).unwrap() % 4;
        let queue = match shard {
            0 => "{q}:jobs".to_string(),
            n => format!("{{q:{n}}}:jobs"),
        };
        let found: Option<f64> = con
            .zscore(&queue, reply["member"].as_str().unwrap_or(""))
            .unwrap();
        let members: Vec<String> = con.zrange(&queue, 0, -1).unwrap();
        assert!(
            found.is_some()
                || members
                    .iter()
                    .any(|m| m.contains(&format!("\"id\":\"{id}\""))),
            "{id} not in shard {shard}: {members:?}"
        );
        let index: Option<String> = con
            .hget(format!("{queue}:ids"), format!("id:{id}"))
            .unwrap();
        assert!(index.is_some(), "{id}: not indexed in shard {shard}");
    }
    let out = delayqs(
        &config,
        &[
            "add",
            "--id",
            "order:7",
            "--callback",
            "http://127.0.0.1:9/y",
            "--in",
            "2h",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("replaced the job pending under this id")
    );
    let out = delayqs(&config, &["move", "order:8", "--in", "3h"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("moved to"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = delayqs(
        &config,
        &["cancel", "--id", "order:7", "order:8", "order:9"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("cancelled job")
            .count(),
        3
    );
    let out = delayqs(&config, &["cancel", "--id", "order:7"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no job lives under this id"));
    let out = delayqs(&config, &["move", "order:7", "--in", "1h"]);
    assert_eq!(out.status.code(), Some(64));
    let out = delayqs(
        &config,
        &[
            "add",
            "--id",
            "bad id",
            "--callback",
            "http://127.0.0.1:9/x",
            "--in",
            "1h",
        ],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("printable ASCII"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<String> = con.keys("*").unwrap();
    assert!(left.iter().all(|k| k.ends_with(":ids")), "{left:?}");
}

/// The id's shard by `shards: n` (the README's rule), and its queue key.
fn shard_queue(con: &mut redis::Connection, id: &str, n: u32) -> String {
    let sha: String = redis::cmd("EVAL")
        .arg("return redis.sha1hex(ARGV[1])")
        .arg(0)
        .arg(id)
        .query(con)
        .unwrap();
    match u32::from_str_radix(&sha[..8], 16).unwrap() % n {
        0 => "{q}:jobs".to_string(),
        s => format!("{{q:{s}}}:jobs"),
    }
}

/// Lowered from 4 shards to 2, the id's shard by the new setting is not where its job
/// lives: `move`, `cancel --id` and `add --id` look in every shard in use and act there
/// (before, they answered "no job" and `add --id` made a second job under the id).
#[test]
fn after_a_change_of_shards_the_commands_act_where_the_ids_job_lives() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let keys = |n: u32| {
        json!({"shards": n, "key": "{q}:jobs", "inflightKey": "{q}:inflight",
               "attemptsKey": "{q}:attempts", "failKey": "{q}:failed"})
    };
    let (four, two) = (config_file(&redis, keys(4)), config_file(&redis, keys(2)));
    // Ids in shards 2 and 3 of four, which a setting of two no longer names.
    let ids: Vec<String> = (0..)
        .map(|i| format!("order:{i}"))
        .filter(|id| {
            let old = shard_queue(&mut redis.con(), id, 4);
            old != shard_queue(&mut redis.con(), id, 2)
        })
        .take(3)
        .collect();
    for id in &ids {
        let out = delayqs(
            &four,
            &[
                "add",
                "--id",
                id,
                "--callback",
                "http://127.0.0.1:9/x",
                "--in",
                "1h",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // As a daemon run with `shards: 4` records it: the shards to drain.
    let _: () = con.set("{q}:jobs:shards", 4).unwrap();
    let jobs_of = |con: &mut redis::Connection, id: &str| -> Vec<(String, f64)> {
        let mut found = Vec::new();
        for s in 0..4 {
            let queue = match s {
                0 => "{q}:jobs".to_string(),
                s => format!("{{q:{s}}}:jobs"),
            };
            let members: Vec<(String, f64)> = con.zrange_withscores(&queue, 0, -1).unwrap();
            found.extend(
                members
                    .into_iter()
                    .filter(|(m, _)| m.contains(&format!("\"id\":\"{id}\"")))
                    .map(|(_, score)| (queue.clone(), score)),
            );
        }
        found
    };
    let before = jobs_of(&mut con, &ids[0]);
    let out = delayqs(&two, &["move", &ids[0], "--in", "3h"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("moved to"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let after = jobs_of(&mut con, &ids[0]);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(
        after[0].0,
        shard_queue(&mut con, &ids[0], 4),
        "moved where it lives"
    );
    assert!(after[0].1 > before[0].1 + 7000.0, "{before:?} -> {after:?}");

    let out = delayqs(
        &two,
        &[
            "add",
            "--id",
            &ids[1],
            "--callback",
            "http://127.0.0.1:9/y",
            "--in",
            "2h",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("replaced the job pending under this id"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let replaced = jobs_of(&mut con, &ids[1]);
    assert_eq!(replaced.len(), 1, "one job under the id: {replaced:?}");

    let out = delayqs(&two, &["cancel", "--id", &ids[0], &ids[2]]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("cancelled job")
            .count(),
        2
    );
    assert!(jobs_of(&mut con, &ids[0]).is_empty() && jobs_of(&mut con, &ids[2]).is_empty());
    // An id with no job anywhere goes to its shard by the setting now.
    let out = delayqs(
        &two,
        &[
            "add",
            "--id",
            "fresh",
            "--callback",
            "http://127.0.0.1:9/z",
            "--in",
            "1h",
        ],
    );
    assert!(out.status.success());
    assert_eq!(
        jobs_of(&mut con, "fresh")[0].0,
        shard_queue(&mut con, "fresh", 2)
    );
}

#[test]
fn without_functions_the_plain_script_does_the_same() {
    // FCALL and FUNCTION renamed away: a server as Redis 6 or KeyDB look to a client.
    let redis = SocketRedis::start(
        None,
        &[
            "--rename-command",
            "FCALL",
            "",
            "--rename-command",
            "FUNCTION",
            "",
        ],
    );
    let mut con = redis.con();
    let endpoint = Endpoint::succeeding();
    let config = config_file_for(&redis.url(), json!({}));
    let daemon = Daemon::start_with_file(&config);
    daemon.wait_for_log("this server has no Functions");
    let out = delayqs(
        &config,
        &[
            "add",
            "--id",
            "order:1",
            "--callback",
            &endpoint.url("/p"),
            "--in",
            "0s",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = endpoint.wait_for(1).remove(0);
    assert_eq!(r.header("x-delayqs-producer-id"), "order:1");
    wait_settled(&mut con);
    let out = delayqs(&config, &["functions", "load"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no Functions"));
}

// ---------------------------------------------------------------- real clients

/// Runs a program and returns its stdout; fails the test with its stderr.
fn run(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} (make test installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const PHP: &str = r#"
$r = new Redis();
$r->connect('127.0.0.1', (int) $argv[1]);
$keys = ['DelayQs:job_zqueue', 'DelayQs:inflight', 'DelayQs:attempts', 'DelayQs:job_zqueue:ids'];
$fcall = function (string $fn, array $args) use ($r, $keys) {
    // phpredis 6 has $r->fcall($fn, $keys, $args); 5.3 sends it raw.
    $r->clearLastError();
    $reply = $r->rawCommand('FCALL', "delayqs_$fn", count($keys), ...$keys, ...$args);
    if ($r->getLastError() !== null) {
        throw new RuntimeException($r->getLastError());
    }
    return $reply;
};
$job = json_encode(['callback' => $argv[2], 'body' => ['orderId' => 42]]);
[$status, $jobId] = $fcall('schedule', ['php:order:42', $job, '+3600']);
echo "$status\n";
[$status] = $fcall('move', ['php:order:42', (string) (time() - 1)]);
echo "$status\n";
$state = $fcall('state', ['php:cancelled']);
var_export($state); echo "\n";
$fcall('schedule', ['php:cancelled', $job, '+3600']);
[$status] = $fcall('cancel', ['php:cancelled']);
echo "$status\n";
try {
    $fcall('schedule', ['php:bad', $job, 'tomorrow']);
} catch (RuntimeException $e) {
    echo $e->getMessage(), "\n";
}
// Without Functions: the same operations as a plain script.
$script = file_get_contents($argv[3]);
$reply = $r->eval($script, array_merge($keys, ['state', 'php:order:42']), count($keys));
echo $reply === false ? $r->getLastError() : $reply[3], "\n";
"#;

const PYTHON: &str = r#"
import sys, json, time, redis
r = redis.Redis(port=int(sys.argv[1]), decode_responses=True)
keys = ['DelayQs:job_zqueue', 'DelayQs:inflight', 'DelayQs:attempts', 'DelayQs:job_zqueue:ids']
job = json.dumps({'callback': sys.argv[2], 'body': {'orderId': 43}})
status, job_id, due = r.fcall('delayqs_schedule', len(keys), *keys, 'py:order:43', job, '+3600')
print(status)
print(r.fcall('delayqs_move', len(keys), *keys, 'py:order:43', str(time.time() - 1))[0])
print(r.fcall('delayqs_state', len(keys), *keys, 'py:cancelled'))
r.fcall('delayqs_schedule', len(keys), *keys, 'py:cancelled', job, '+3600')
print(r.fcall('delayqs_cancel', len(keys), *keys, 'py:cancelled')[0])
try:
    r.fcall('delayqs_schedule', len(keys), *keys, 'py:bad', '{"body": 1}', '+1')
except redis.ResponseError as e:
    print(e)
plain = r.register_script(open(sys.argv[3]).read())
state = plain(keys=keys, args=['state', 'py:order:43'])
print(dict(zip(state[::2], state[1::2]))['state'])
"#;

#[test]
fn php_python_and_redis_cli_drive_the_functions() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let endpoint = Endpoint::succeeding();
    let dir = scratch_dir();
    let script_file = dir.join("ids.lua");
    std::fs::write(&script_file, script()).unwrap();
    let port = redis.port.to_string();
    let daemon = Daemon::start(&redis, json!({"pollIntervalMs": 20}));
    daemon.wait_for_log("loaded the delayqs Functions library");
    // Paused, so that the jobs moved into the past wait while the clients look at them.
    let out = delayqs(&daemon.config, &["pause"]);
    assert!(out.status.success());
    daemon.wait_for_log("the queue is paused");

    let php = run(
        "php",
        &[
            "-r",
            PHP,
            "--",
            &port,
            &endpoint.url("/php"),
            script_file.to_str().unwrap(),
        ],
    );
    let lines: Vec<&str> = php.lines().collect();
    assert_eq!(
        &lines[..4],
        ["added", "moved", "false", "cancelled"],
        "{php}"
    );
    assert!(
        lines[4].contains("the due time \"tomorrow\" is not Unix seconds"),
        "{php}"
    );
    assert_eq!(lines[5], "pending", "{php}");

    let python = run(
        "python3",
        &[
            "-c",
            PYTHON,
            &port,
            &endpoint.url("/py"),
            script_file.to_str().unwrap(),
        ],
    );
    let lines: Vec<&str> = python.lines().collect();
    assert_eq!(
        &lines[..4],
        ["added", "moved", "None", "cancelled"],
        "{python}"
    );
    assert!(lines[4].contains("needs a \"callback\""), "{python}");
    assert_eq!(lines[5], "pending", "{python}");

    let keys = [
        "DelayQs:job_zqueue",
        "DelayQs:inflight",
        "DelayQs:attempts",
        "DelayQs:job_zqueue:ids",
    ];
    let cli = |args: &[&str]| {
        let mut all = vec!["-p", &port, "FCALL"];
        all.extend_from_slice(args);
        run("redis-cli", &all)
    };
    let job = json!({"callback": endpoint.url("/cli"), "body": {"orderId": 44}}).to_string();
    let mut schedule = vec!["delayqs_schedule", "4"];
    schedule.extend_from_slice(&keys);
    schedule.extend_from_slice(&["cli:order:44", &job, "0"]);
    assert!(cli(&schedule).starts_with("added\n"));
    let mut bad = vec!["delayqs_schedule", "4"];
    bad.extend_from_slice(&keys);
    bad.extend_from_slice(&["cli:bad", "not json", "0"]);
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port, "FCALL"])
        .args(&bad)
        .output()
        .unwrap();
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(shown.contains("must be a JSON object"), "{shown}");

    let out = delayqs(&daemon.config, &["resume"]);
    assert!(out.status.success());
    let got = endpoint.wait_for(3);
    let mut seen: Vec<(&str, &str)> = got
        .iter()
        .map(|r| (r.path.as_str(), r.header("x-delayqs-producer-id")))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("/cli", "cli:order:44"),
            ("/php", "php:order:42"),
            ("/py", "py:order:43")
        ]
    );
    wait_settled(&mut con);
    assert!(!index_left(&mut con).iter().any(|f| f.contains("bad")));
}

// ---------------------------------------------------------------- the race

/// The order is paid while its close job falls due: the cancel and the claim race. Each
/// time, either the cancel wins (no request ever) or the attempt was under way (one
/// request, and no retry though the endpoint fails it). The endpoint holds each request
/// until the cancel has answered, so an attempt that started is still in flight then.
#[test]
fn a_cancel_racing_the_claim_is_either_in_time_or_ends_the_job_after_its_attempt() {
    const ROUNDS: usize = 200;
    let redis = RedisServer::start();
    let mut con = redis.con();
    let cancelled: Arc<Mutex<HashMap<String, bool>>> = Arc::default();
    let answered = Arc::new(Condvar::new());
    let (seen, bell) = (cancelled.clone(), answered.clone());
    let endpoint = Endpoint::start(move |r| {
        let id = r.header("x-delayqs-producer-id").to_string();
        let done = seen.lock().unwrap();
        let _ = bell
            .wait_timeout_while(done, PATIENCE, |d| !d.contains_key(&id))
            .unwrap();
        // A failure that is retried, but not the host's trouble: no breaker holds the
        // claimed jobs back untried, so every attempt claimed is made.
        Reply::new(400, "retry me")
    });
    let daemon = Daemon::start(
        &redis,
        json!({"pollIntervalMs": 5, "retryBaseMs": 20, "maxRetryNum": 3, "concurrency": 8}),
    );
    daemon.wait_ready();
    let mut outcomes: HashMap<String, String> = HashMap::new();
    let mut rng = 0x9e3779b97f4a7c15u64;
    for i in 0..ROUNDS {
        let id = format!("order:{i}:close");
        let j = job(&endpoint, "/close", json!({"order": i}));
        Via::Function.schedule(&mut con, &id, &j, "+0.02");
        // Cancel from 0 to 40 ms after scheduling: before, at and after the due time.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(rng % 40_000));
        let (status, _, _) = Via::Function.op(&mut con, "cancel", &[&id]);
        cancelled.lock().unwrap().insert(id.clone(), true);
        answered.notify_all();
        outcomes.insert(id, status);
    }
    wait_settled(&mut con);
    let per_id: HashMap<String, usize> =
        endpoint.requests().iter().fold(HashMap::new(), |mut m, r| {
            *m.entry(r.header("x-delayqs-producer-id").to_string())
                .or_default() += 1;
            m
        });
    let mut tally: HashMap<&str, usize> = HashMap::new();
    for (id, status) in &outcomes {
        let requests = per_id.get(id).copied().unwrap_or(0);
        match status.as_str() {
            "cancelled" => assert_eq!(requests, 0, "{id}: cancelled in time, yet sent"),
            "after-attempt" => assert_eq!(requests, 1, "{id}: retried after its cancel"),
            other => panic!("{id}: cancel answered {other}"),
        }
        *tally.entry(status).or_default() += 1;
    }
    assert!(failed_records(&mut con).is_empty());
    eprintln!("cancel outcomes over {ROUNDS} rounds: {tally:?}");
    assert!(
        tally.contains_key("cancelled") && tally.contains_key("after-attempt"),
        "the race was not run both ways: {tally:?}"
    );
}
