//! What the Lua scripts promise at their edges (issue 13): the first due time across
//! every put-back, a copy of a job merging into the attempt under way, skip conditions
//! in every JSON spelling, a re-added job starting afresh, odd scores, and admin
//! commands that never hold Redis for long.

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn delayqs(config: &Path, args: &[&str]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&["--config", config.to_str().unwrap()]);
    run_delayqs(&all)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a command with --json and parses what it prints.
fn json_of(config: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = delayqs(config, &all);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn redis_now(con: &mut redis::Connection) -> f64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(con).unwrap();
    s as f64 + us as f64 / 1e6
}

/// A due time with whole milliseconds, so that `X-Delayqs-Due` shows it exactly.
fn whole_ms(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

/// Adds a member at a score given as Redis text (`-inf`, `-1e300`).
fn add_at(con: &mut redis::Connection, member: &str, score: &str) {
    let _: () = redis::cmd("ZADD")
        .arg(QUEUE)
        .arg(score)
        .arg(member)
        .query(con)
        .unwrap();
}

fn settled(con: &mut redis::Connection) -> bool {
    con.zcard::<_, usize>(QUEUE).unwrap() == 0
        && con.zcard::<_, usize>(INFLIGHT).unwrap() == 0
        && con.hlen::<_, usize>(ATTEMPTS).unwrap() == 0
}

// ---------------------------------------------------------------- A, B: first due time

/// Item 9: a first attempt put back because its host was paused keeps its first due
/// time for `X-Delayqs-Due`.
#[test]
fn a_first_attempt_put_back_by_a_host_pause_keeps_its_first_due_time() {
    let redis = RedisServer::start();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    // The first request fails: the host is paused (threshold 1) while the second job
    // is claimed, so that job's first attempt is put back untried.
    let endpoint = Endpoint::start(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::new(503, "down")
        } else {
            Reply::success()
        }
    });
    let mut con = redis.con();
    let daemon = Daemon::start(
        &redis,
        json!({"hostFailureThreshold": 1, "hostPauseMs": 1500, "retryBaseMs": 10, "concurrency": 1}),
    );
    let tripper = member(&endpoint.url("/trip"), json!(1));
    let paused = member(&endpoint.url("/paused"), json!(2));
    add(&mut con, &tripper, 1.0);
    add(&mut con, &paused, 1_700_000_000.25);
    daemon.wait_for_log("is paused");
    let got = endpoint.wait_for(3);
    let r = got.iter().find(|r| r.path == "/paused").expect("delivered");
    assert_eq!(r.attempt(), 1);
    assert_eq!(
        r.header("x-delayqs-due"),
        "1700000000.250",
        "the first due time, not the score it was put back with"
    );
    wait_until(PATIENCE, "settled", || settled(&mut con));
}

/// Item 13: a claim whose reply was lost puts its first attempts back at their own due
/// time, which `X-Delayqs-Due` still shows.
#[test]
fn a_lost_claim_puts_a_first_attempt_back_at_its_due_time() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    let daemon = Daemon::start(
        &redis,
        json!({"redisTimeoutMs": 150, "leaseMs": 600000, "pollIntervalMs": 10}),
    );
    daemon.wait_for_log("ready:");
    let m = member(&endpoint.url("/lost-reply"), json!(1));
    let due = whole_ms(unix_now() + 0.2);
    add(&mut con, &m, due);
    // Block Redis for a second: the daemon's claim, sent meanwhile, runs once this
    // ends, after the daemon gave up waiting for its reply.
    let _: () = redis::cmd("EVAL")
        .arg(
            "local function now() local t = redis.call('TIME') return t[1] + t[2] / 1e6 end \
             local stop = now() + 1 while now() < stop do end",
        )
        .arg(0)
        .query(&mut con)
        .unwrap();
    let r = &endpoint.wait_for(1)[0];
    assert!(daemon.log().contains("put back 1 jobs"), "{}", daemon.log());
    assert_eq!(r.attempt(), 1);
    assert_eq!(r.header("x-delayqs-due"), format!("{due:.3}"));
    wait_until(PATIENCE, "settled", || settled(&mut con));
}

/// Every form of the attempts value, as `stats` and `pending` read it: a first
/// attempt put back ("0:…") is no retry, a leased one is in flight, and a count whose
/// recorded score is not the member's any more belongs to a job added anew.
#[test]
fn admin_commands_read_every_form_of_the_attempts_value() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    let mut con = redis.con();
    let now = redis_now(&mut con);
    let forms = [
        ("released", "0:100.5 @200", 1), // a first attempt put back: 0 made
        ("retrying", "2:100.5 @200", 2), // waiting for attempt 3
        ("readded", "2:100.5 @150", 3),  // its score moved: a producer re-added it
        ("old-count", "3", 4),           // written by an older delayqs
        ("old-first", "1:100.5", 5),     // likewise
        ("leased", "1:100.5 abc.1", 6),  // claimed: in flight
    ];
    for (name, value, i) in forms {
        let m = member(&format!("http://127.0.0.1:9/{name}"), json!(i));
        add(
            &mut con,
            &m,
            if name == "leased" { now + 999.0 } else { 200.0 },
        );
        let _: () = con.hset(ATTEMPTS, &m, value).unwrap();
    }
    let stats = json_of(&config, &["stats"]);
    // retrying, old-count, old-first
    assert_eq!(stats["retrying"], 3, "{stats}");
    let pending = json_of(&config, &["pending"]);
    let attempts: Vec<(String, u64)> = pending["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            let cb = j["callback"].as_str().unwrap();
            (
                cb.rsplit('/').next().unwrap().to_string(),
                j["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    for (name, want) in [
        ("released", 0),
        ("retrying", 2),
        ("readded", 0),
        ("old-count", 3),
        ("old-first", 1),
        ("leased", 1),
    ] {
        assert!(
            attempts.contains(&(name.to_string(), want)),
            "{name}: {attempts:?}"
        );
    }
}

// ---------------------------------------------------------------- C: skip spellings

/// Item 10: a skip condition written with JSON escapes is not ignored: the two sides
/// read the member alike, and one the claim cannot check is set aside as malformed.
#[test]
fn a_skip_condition_spelled_with_escapes_is_never_ignored() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    let _: () = con.set("order:9:paid", 1).unwrap();
    let cb = endpoint.url("/skip");
    // serde_json and cjson both read these keys as skipIfExists / skipIfMissing.
    let escaped_exists =
        format!(r#"{{"body":1,"callback":"{cb}","\u0073kipIfExists":"order:9:paid"}}"#);
    let escaped_missing =
        format!(r#"{{"body":2,"callback":"{cb}","\u0073kipIfMissing":"cart:none"}}"#);
    let partly_escaped =
        format!(r#"{{"body":3,"callback":"{cb}","skipIfMi\u0073sing":"cart:none"}}"#);
    let plain = format!(r#"{{"body":4,"callback":"{cb}","skipIfExists":"order:9:paid"}}"#);
    let control = member(&endpoint.url("/after"), json!(5));
    for (i, m) in [&escaped_exists, &escaped_missing, &partly_escaped, &plain]
        .iter()
        .enumerate()
    {
        add(&mut con, m, 1.0 + i as f64);
    }
    add(&mut con, &control, 10.0);
    let daemon = Daemon::start(&redis, json!({}));
    assert_eq!(endpoint.wait_for(1)[0].path, "/after");
    wait_until(PATIENCE, "settled", || settled(&mut con));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        endpoint.count(),
        1,
        "a job whose skip condition holds was sent"
    );
    let records = failed_records(&mut con);
    let set_aside: Vec<&str> = records
        .iter()
        .map(|r| r["member"].as_str().unwrap())
        .collect();
    assert_eq!(
        set_aside,
        [escaped_exists.as_str(), escaped_missing.as_str()],
        "{records:?}"
    );
    for r in &records {
        assert!(
            r["error"].as_str().unwrap().contains("escape"),
            "the reason says why: {r}"
        );
    }
    daemon.wait_for_log("skipIfMissing cart:none holds: dropped");
    daemon.wait_for_log("skipIfExists order:9:paid holds: dropped");
}

// ---------------------------------------------------------------- D, E: merging

/// Item 11: a copy of a running job, over the maxJobBytes of the daemon that claims
/// it, merges into the attempt under way instead of being set aside over its lease.
#[test]
fn an_oversize_copy_of_a_running_job_merges_and_leaves_its_lease_alone() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|_| Reply::success().after(Duration::from_secs(2)));
    let mut con = redis.con();
    let m = member(&endpoint.url("/slow"), json!("x".repeat(1500)));
    assert!(m.len() > 1024);
    let big = Daemon::start(&redis, json!({"concurrency": 1}));
    add(&mut con, &m, 1.0);
    endpoint.wait_for(1);
    add(&mut con, &m, unix_now() - 1.0);
    let small = Daemon::start(&redis, json!({"concurrency": 1, "maxJobBytes": 1024}));
    small.wait_for_log("ready:");
    wait_until(PATIENCE, "the copy taken out of the queue", || {
        con.zcard::<_, usize>(QUEUE).unwrap() == 0
    });
    wait_until(PATIENCE, "the attempt's outcome", || {
        let log = big.log();
        log.contains("delivered to") || log.contains("its lease ran out")
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        con.llen::<_, usize>(FAILED).unwrap(),
        0,
        "{:?}",
        failed_records(&mut con)
    );
    assert!(!big.log().contains("its lease ran out"), "{}", big.log());
    assert_no_bookkeeping(&mut con);
    assert_eq!(endpoint.count(), 1);
}

/// Item 12: with one daemon, a copy that falls due while the job's attempt runs merges
/// into it, whether the attempt succeeds or fails for good; a copy due after the
/// attempt ends is delivered at its own time.
#[test]
fn a_copy_due_during_the_attempt_merges_into_it_with_one_daemon() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|r| {
        let reply = if r.path == "/gone" {
            Reply::new(410, "gone")
        } else {
            Reply::success()
        };
        reply.after(Duration::from_millis(800))
    });
    let mut con = redis.con();
    let _daemon = Daemon::start(&redis, json!({"concurrency": 1}));

    for (i, path) in ["/ok", "/gone"].into_iter().enumerate() {
        let m = member(&endpoint.url(path), json!(1));
        add(&mut con, &m, 1.0);
        endpoint.wait_for(i + 1);
        add(&mut con, &m, unix_now() - 0.1);
        wait_until(PATIENCE, "settled", || settled(&mut con));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            endpoint.count(),
            i + 1,
            "{path}: the copy was delivered again"
        );
    }
    assert_eq!(con.llen::<_, usize>(FAILED).unwrap(), 1);

    // Due after the attempt ends: a delivery of its own.
    let m = member(&endpoint.url("/later"), json!(2));
    add(&mut con, &m, 1.0);
    endpoint.wait_for(3);
    let later = unix_now() + 1.5;
    add(&mut con, &m, later);
    let got = endpoint.wait_for(4);
    assert!(got[3].at >= later - 0.01, "{got:?}");
    assert_eq!(got[3].attempt(), 1);
    wait_until(PATIENCE, "settled", || settled(&mut con));
}

// ---------------------------------------------------------------- F: a new job

/// Item 14: a job cancelled while it waits for a retry and added again starts anew:
/// attempt 1, due when it was added, whether or not the sweep got to it first.
#[test]
fn a_job_cancelled_while_waiting_for_a_retry_and_added_again_starts_at_attempt_one() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|r| {
        if r.attempt() == 1 && r.form.get("body").is_some_and(|b| b == "1") {
            Reply::new(500, "no")
        } else {
            Reply::success()
        }
    });
    let mut con = redis.con();
    let _daemon = Daemon::start(&redis, json!({"retryBaseMs": 600000, "retryJitter": 0}));
    let m = member(&endpoint.url("/again"), json!(1));
    add(&mut con, &m, 1.0);
    endpoint.wait_for(1);
    wait_until(PATIENCE, "the retry scheduled ten minutes out", || {
        con.zscore::<_, _, Option<f64>>(QUEUE, &m)
            .unwrap()
            .is_some_and(|s| s > unix_now() + 500.0)
    });
    // A producer cancels the job and adds it again, in one transaction so that the
    // sweep cannot come between.
    let due = whole_ms(unix_now());
    let _: () = redis::pipe()
        .atomic()
        .zrem(QUEUE, &m)
        .cmd("ZADD")
        .arg(QUEUE)
        .arg(format!("{due:.6}"))
        .arg(&m)
        .query(&mut con)
        .unwrap();
    let r = endpoint.wait_for(2)[1].clone();
    assert_eq!(r.attempt(), 1, "a new job starts at attempt 1");
    assert_eq!(r.header("x-delayqs-due"), format!("{due:.3}"));
}

// ---------------------------------------------------------------- G: bounded admin

/// Fills the failed list with `n` records through one pipeline.
fn fill_failed(con: &mut redis::Connection, n: usize, failed_at: impl Fn(usize) -> f64) {
    for start in (0..n).step_by(5000) {
        let mut pipe = redis::pipe();
        for i in start..(start + 5000).min(n) {
            let m = member("http://127.0.0.1:9/big", json!({ "n": i }));
            let record = json!({
                "Id": format!("{i:040}"), "attempts": 4, "body": {"n": i},
                "callback": "http://127.0.0.1:9/big", "error": "HTTP 500: no",
                "dueAt": 1.0, "failedAt": failed_at(i), "member": m,
            });
            pipe.rpush(FAILED, record.to_string()).ignore();
        }
        let _: () = pipe.query(con).unwrap();
    }
}

/// Commands that took longer than the slowlog threshold since the last reset.
fn slow_commands(con: &mut redis::Connection) -> Vec<String> {
    let entries: Vec<Vec<redis::Value>> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(1000)
        .query(con)
        .unwrap();
    entries
        .iter()
        .map(|e| {
            let micros = match &e[2] {
                redis::Value::Int(n) => *n,
                _ => -1,
            };
            let args = match &e[3] {
                redis::Value::Array(a) => a
                    .iter()
                    .take(3)
                    .map(|v| match v {
                        redis::Value::BulkString(b) => {
                            String::from_utf8_lossy(&b[..b.len().min(40)]).into_owned()
                        }
                        other => format!("{other:?}"),
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => String::new(),
            };
            format!("{micros} µs: {args}")
        })
        .collect()
}

/// Item 8: `failed purge` and `failed retry` on a long list work in short script
/// calls: none holds Redis for 50 ms (a generous bound, not a speed test).
#[test]
fn failed_retry_and_purge_of_a_long_list_never_hold_redis_long() {
    const RECORDS: usize = 50_000;
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    let mut con = redis.con();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(50_000)
        .query(&mut con)
        .unwrap();

    fill_failed(&mut con, RECORDS, |_| 1.0);
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut con).unwrap();
    let out = delayqs(&config, &["failed", "purge", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(con.llen::<_, usize>(FAILED).unwrap(), 0);
    assert_eq!(slow_commands(&mut con), Vec::<String>::new(), "purge");

    fill_failed(&mut con, RECORDS, |_| 1.0);
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut con).unwrap();
    let out = delayqs(&config, &["failed", "retry", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(con.llen::<_, usize>(FAILED).unwrap(), 0);
    assert_eq!(con.zcard::<_, usize>(QUEUE).unwrap(), RECORDS);
    let stats = json_of(&config, &["stats"]);
    assert_eq!(stats["pending"], RECORDS);
    assert_eq!(slow_commands(&mut con), Vec::<String>::new(), "retry");
}

/// The chunks of a selective `failed purge` / `retry` keep every other record once,
/// in order, whatever chunk it falls in.
#[test]
fn failed_purge_and_retry_by_selection_keep_the_rest_in_order() {
    const RECORDS: usize = 1300;
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({}));
    let mut con = redis.con();
    let now = redis_now(&mut con);
    // Even records are old, odd ones recent.
    fill_failed(&mut con, RECORDS, |i| if i % 2 == 0 { 1.0 } else { now });
    let out = json_of(&config, &["failed", "purge", "--older-than", "1d"]);
    assert_eq!(out["results"].as_array().unwrap().len(), RECORDS / 2);
    let left: Vec<String> = con.lrange(FAILED, 0, -1).unwrap();
    let ids: Vec<String> = left
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(r).unwrap()["Id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let want: Vec<String> = (0..RECORDS)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("{i:040}"))
        .collect();
    assert_eq!(ids, want);

    // Retry two records, one in the first chunk and one in the last.
    let (a, b) = (want[1].clone(), want[want.len() - 2].clone());
    let out = json_of(&config, &["failed", "retry", &a, &b]);
    assert_eq!(out["results"].as_array().unwrap().len(), 2, "{out}");
    assert_eq!(con.zcard::<_, usize>(QUEUE).unwrap(), 2);
    let left: Vec<String> = con.lrange(FAILED, 0, -1).unwrap();
    let ids: Vec<String> = left
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(r).unwrap()["Id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let want: Vec<String> = want.into_iter().filter(|id| *id != a && *id != b).collect();
    assert_eq!(ids, want);
}

// ---------------------------------------------------------------- H: odd scores

/// A score of -inf or -1e300 is due, and counts as the Unix epoch: a sane
/// `X-Delayqs-Due`, finite lateness, and `pending` reads it.
#[test]
fn a_score_of_minus_infinity_counts_as_the_epoch() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    let dir = scratch_dir();
    let metrics = dir.join("m.prom");
    let config = config_file(
        &redis,
        json!({"metricsFile": metrics, "metricsIntervalMs": 100}),
    );
    add_at(&mut con, &member(&endpoint.url("/inf"), json!(1)), "-inf");
    add_at(
        &mut con,
        &member(&endpoint.url("/huge"), json!(2)),
        "-1e300",
    );
    let pending = json_of(&config, &["pending"]);
    assert_eq!(pending["jobs"].as_array().unwrap().len(), 2, "{pending}");
    let _daemon = Daemon::start_with_file(&config);
    let got = endpoint.wait_for(2);
    for r in &got {
        assert_eq!(r.header("x-delayqs-due"), "0.000", "{}", r.path);
    }
    wait_until(PATIENCE, "settled", || settled(&mut con));
    wait_until(PATIENCE, "the metrics to count both", || {
        std::fs::read_to_string(&metrics)
            .unwrap_or_default()
            .contains("delayqs_lateness_seconds_count 2")
    });
    let text = std::fs::read_to_string(&metrics).unwrap();
    let sum: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("delayqs_lateness_seconds_sum "))
        .expect("a lateness sum")
        .parse()
        .unwrap();
    assert!(sum.is_finite(), "{text}");
    assert_eq!(endpoint.count(), 2);
}

/// An oversize member at -inf is set aside like any other, and the queue flows.
#[test]
fn an_oversize_member_at_minus_infinity_is_set_aside() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    let big = member(&endpoint.url("/big"), json!("y".repeat(2000)));
    add_at(&mut con, &big, "-inf");
    add(&mut con, &member(&endpoint.url("/after"), json!(1)), 1.0);
    let _daemon = Daemon::start(&redis, json!({"maxJobBytes": 1024}));
    assert_eq!(endpoint.wait_for(1)[0].path, "/after");
    wait_for_failed(&mut con, 1);
    let record = &failed_records(&mut con)[0];
    assert_eq!(record["dueAt"].as_f64(), Some(0.0), "{record}");
}

// ---------------------------------------------------------------- I: oversize records

/// The prefix kept of an oversize member is cut on a character boundary, so the
/// record is valid UTF-8 JSON; `failed retry` says why it cannot put it back.
#[test]
fn an_oversize_record_is_valid_utf8_and_retry_says_why_it_is_kept() {
    let redis = RedisServer::start();
    let config = config_file(&redis, json!({"maxJobBytes": 1024}));
    let mut con = redis.con();
    // `{"body":"` is 9 bytes and each € 3: byte 200 falls inside a character.
    let m = format!(
        r#"{{"body":"{}","callback":"http://127.0.0.1:9/euro"}}"#,
        "€".repeat(400)
    );
    add(&mut con, &m, 1.0);
    let _daemon = Daemon::start_with_file(&config);
    wait_for_failed(&mut con, 1);
    let raw: Vec<Vec<u8>> = con.lrange(FAILED, 0, -1).unwrap();
    let text = String::from_utf8(raw[0].clone()).expect("the record is valid UTF-8");
    let record: Value = serde_json::from_str(&text).unwrap();
    let prefix = record["memberPrefix"].as_str().unwrap();
    assert!(m.starts_with(prefix) && prefix.len() >= 190, "{prefix}");
    let id = record["Id"].as_str().unwrap();
    let out = json_of(&config, &["failed", "retry", id]);
    let what = out["results"][0]["result"].as_str().unwrap();
    assert!(
        what.contains("maxJobBytes") && !what.contains("old daemon"),
        "{what}"
    );
    assert_eq!(
        con.llen::<_, usize>(FAILED).unwrap(),
        1,
        "the record is kept"
    );
}

/// The claim sends a full flow's fresh jobs straight to their slots (ARGV[6]): never
/// claimed, first due time kept, the slots one spacing apart; other hosts' jobs and a
/// job that was put back before are claimed as usual.
#[test]
fn a_full_flows_fresh_jobs_go_to_their_slots_inside_the_claim() {
    let redis = RedisServer::start();
    let mut con = redis.con();
    let claim = format!(
        "{}{}",
        include_str!("../src/store/scripts/ids_after.lua"),
        include_str!("../src/store/scripts/claim.lua")
    );
    let now = redis_now(&mut con);
    let full = |i: u32| member(&format!("http://127.0.0.1:9/a{i}"), json!(i));
    for i in 0..10 {
        add(&mut con, &full(i), now - 100.0 + f64::from(i));
    }
    // A job of the full flow put back before: the daemon decides about it.
    let waited = member("HTTP://127.0.0.1:9/again", json!("waited"));
    add(&mut con, &waited, now - 200.0);
    let _: () = con
        .hset(
            ATTEMPTS,
            &waited,
            format!("0:{:.6} @{:.6}", now - 300.0, now - 200.0),
        )
        .unwrap();
    // Another host, and a body that only mentions the full one.
    let other = member(
        "http://127.0.0.1:8/b",
        json!("http://127.0.0.1:9/ in a body"),
    );
    add(&mut con, &other, now - 5.0);
    // Due within the last second: while a flow is full, claimed before older jobs.
    let just_due = member("http://127.0.0.1:8/b", json!("just due"));
    add(&mut con, &just_due, now - 0.2);
    let start = now + 10.0;
    let reply: Vec<redis::Value> = redis::cmd("EVAL")
        .arg(&claim)
        .arg(4)
        .arg(&[QUEUE, INFLIGHT, ATTEMPTS, FAILED][..])
        .arg(&["5", "60000", "t", "100", "1048576"][..])
        .arg(format!("{start:.6} 0.500000 127.0.0.1:9"))
        .query(&mut con)
        .unwrap();
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    };
    let claimed: Vec<String> = reply[7..].chunks(6).map(|j| text(&j[0])).collect();
    assert_eq!(
        claimed,
        [just_due.clone(), waited.clone(), other.clone()],
        "the just due first, then in due order; the full flow's fresh jobs slotted"
    );
    let deferred = text(&reply[6]);
    let (count, rest) = deferred.split_once(' ').unwrap();
    let (next, flow) = rest.split_once(' ').unwrap();
    assert_eq!((count, flow), ("10", "127.0.0.1:9"));
    assert!(
        (next.parse::<f64>().unwrap() - (start + 5.0)).abs() < 1e-3,
        "{deferred}"
    );
    for i in 0..10 {
        let score: f64 = con.zscore(QUEUE, full(i)).unwrap();
        let slot = start + 0.5 * f64::from(i);
        assert!(
            (score - slot).abs() < 1e-3,
            "job {i} at {score}, slot {slot}"
        );
        let value: String = con.hget(ATTEMPTS, full(i)).unwrap();
        let first = now - 100.0 + f64::from(i);
        assert!(value.starts_with("0:"), "{value}");
        let (first_text, at) = value[2..].split_once(" @").unwrap();
        assert!(
            (first_text.parse::<f64>().unwrap() - first).abs() < 1e-3,
            "{value}"
        );
        assert!((at.parse::<f64>().unwrap() - slot).abs() < 1e-3, "{value}");
    }
    assert_eq!(con.zcard::<_, usize>(INFLIGHT).unwrap(), 3);
}
