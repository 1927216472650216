//! The promises under trouble: several daemons, kill -9, a clean stop with callbacks in
//! flight, Redis restarting (core issue: Claim, Recovery, Stop, Redis trouble).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn two_daemons_on_one_redis_deliver_each_job_once() {
    const JOBS: usize = 3000;
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    let a = Daemon::start(&redis, json!({"concurrency": 8}));
    let b = Daemon::start(&redis, json!({"concurrency": 8}));
    a.wait_ready();
    b.wait_ready();

    // Half due at once, half spread over the next second and a half.
    let now = unix_now();
    let mut pipe = redis::pipe();
    for i in 0..JOBS {
        let due = if i % 2 == 0 {
            now - 1.0
        } else {
            now + (i as f64) / (JOBS as f64) * 1.5
        };
        pipe.cmd("ZADD")
            .arg(QUEUE)
            .arg(format!("{due:.6}"))
            .arg(member(&endpoint.url("/once"), json!({ "n": i })));
    }
    let _: () = pipe.query(&mut con).unwrap();

    endpoint.wait_for(JOBS);
    wait_until(PATIENCE, "every outcome written", || {
        con.hlen::<_, usize>(ATTEMPTS).unwrap() == 0
    });
    assert_eq!(con.zcard::<_, usize>(QUEUE).unwrap(), 0);
    // A duplicate would be a job claimed a second time. Markers due now, until each
    // daemon has delivered one: each daemon's loop has then claimed past this point, and
    // handed every job it claimed before to a worker ahead of its marker. With 8
    // workers, one could still be sending such a job as the marker arrives; but a
    // claimed job keeps its lease until its outcome is written, after its request, so
    // no bookkeeping left after the markers means every such request has arrived.
    let (mut seen_a, mut seen_b) = (false, false);
    let deadline = std::time::Instant::now() + PATIENCE;
    while !(seen_a && seen_b) {
        assert!(
            std::time::Instant::now() < deadline,
            "markers went to one daemon only"
        );
        let marker = Marker::add(&mut con, unix_now(), 1);
        marker.wait();
        let line = format!("delivered to {}", marker.url());
        wait_until(PATIENCE, "the marker's delivery in a daemon log", || {
            let (in_a, in_b) = (a.log().contains(&line), b.log().contains(&line));
            seen_a |= in_a;
            seen_b |= in_b;
            in_a || in_b
        });
    }
    assert_no_bookkeeping(&mut con);
    let per_job = endpoint.per_job();
    let twice: Vec<_> = per_job.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(per_job.len(), JOBS);
    for daemon in [&a, &b] {
        assert!(daemon.log().contains("delivered"), "one daemon did no work");
    }
}

#[test]
fn kill_9_mid_delivery_then_restart_delivers_everything() {
    const JOBS: usize = 12;
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|_| Reply::success().after(Duration::from_millis(400)));
    let mut con = redis.con();
    let config =
        json!({"concurrency": 3, "timeoutMs": 2000, "leaseMs": 3100, "redisTimeoutMs": 200});
    for i in 0..JOBS {
        add(
            &mut con,
            &member(&endpoint.url("/k"), json!({ "n": i })),
            0.0,
        );
    }
    let mut daemon = Daemon::start(&redis, config.clone());
    endpoint.wait_for(2); // attempts under way
    daemon.kill9();
    let inflight: usize = con.zcard(INFLIGHT).unwrap();
    assert!(inflight > 0, "nothing was in flight at the kill");

    let restarted = Daemon::start(&redis, config);
    wait_until(PATIENCE, "every job settled", || {
        con.zcard::<_, usize>(QUEUE).unwrap() == 0
            && con.zcard::<_, usize>(INFLIGHT).unwrap() == 0
            && con.hlen::<_, usize>(ATTEMPTS).unwrap() == 0
    });
    assert_eq!(endpoint.per_job().len(), JOBS, "a job was lost");
    assert_eq!(con.llen::<_, usize>(FAILED).unwrap(), 0);
    // The cut attempts came back through their expired leases, counted.
    assert!(
        restarted.log().contains("lease expired"),
        "{}",
        restarted.log()
    );
    assert!(endpoint.requests().iter().any(|r| r.attempt() == 2));
}

#[test]
fn sigterm_lets_callbacks_in_flight_finish_and_puts_the_rest_back() {
    const JOBS: usize = 10;
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|_| Reply::success().after(Duration::from_millis(700)));
    let mut con = redis.con();
    let members: Vec<String> = (0..JOBS)
        .map(|i| member(&endpoint.url("/t"), json!({ "n": i })))
        .collect();
    for m in &members {
        add(&mut con, m, 0.0);
    }
    let mut daemon = Daemon::start(&redis, json!({"concurrency": 2}));
    endpoint.wait_for(2);
    daemon.signal("TERM");
    let status = daemon.wait_exit();
    assert!(status.success(), "exit {status:?}\n{}", daemon.log());

    // The two attempts under way finished and were recorded; nothing stays leased.
    let delivered = endpoint.count();
    assert!(delivered >= 2);
    assert_eq!(con.zcard::<_, usize>(INFLIGHT).unwrap(), 0);
    let queued: usize = con.zcard(QUEUE).unwrap();
    assert_eq!(queued + delivered, JOBS, "a job was lost or kept");
    // Jobs put back unstarted kept their attempt count at zero.
    let attempts: usize = con.hlen(ATTEMPTS).unwrap();
    assert_eq!(attempts, 0);

    // The next run delivers the rest, and nothing twice: this was a clean stop.
    let _daemon = Daemon::start(&redis, json!({"concurrency": 2}));
    endpoint.wait_for(JOBS);
    wait_until(PATIENCE, "queue drained", || {
        con.zcard::<_, usize>(QUEUE).unwrap() == 0 && con.hlen::<_, usize>(ATTEMPTS).unwrap() == 0
    });
    // A job delivered twice would be claimed again, so ahead of markers due now; two
    // markers held at once keep both workers busy, so each has finished what it took
    // before, and every request for a job claimed ahead has arrived.
    wait_for_marker(&mut con, unix_now(), 2);
    let per_job = endpoint.per_job();
    assert_eq!(per_job.len(), JOBS);
    assert!(per_job.values().all(|n| *n == 1), "{per_job:?}");
}

#[test]
fn second_stop_signal_exits_without_waiting_for_the_callback_in_flight() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|_| Reply::success().after(Duration::from_secs(20)));
    let mut con = redis.con();
    add(&mut con, &member(&endpoint.url("/slow"), json!(1)), 0.0);
    let mut daemon = Daemon::start(&redis, json!({"timeoutMs": 30000}));
    endpoint.wait_for(1);
    daemon.signal("INT");
    daemon.wait_for_log("stopping");
    daemon.signal("INT");
    let status = daemon.wait_exit();
    assert!(!status.success());
    // The lease still covers the job: it is in flight, not lost.
    assert_eq!(con.zcard::<_, usize>(INFLIGHT).unwrap(), 1);
}

#[test]
fn redis_restart_mid_run_loses_nothing() {
    const JOBS: usize = 300;
    let mut redis = RedisServer::start_persistent();
    let endpoint = Endpoint::start(|_| Reply::success().after(Duration::from_millis(5)));
    let mut con = redis.con();
    let now = unix_now();
    let members: Vec<String> = (0..JOBS)
        .map(|i| member(&endpoint.url("/r"), json!({ "n": i })))
        .collect();
    for (i, m) in members.iter().enumerate() {
        add(&mut con, m, now + 0.5 + (i as f64) / (JOBS as f64) * 3.0);
    }
    let daemon = Daemon::start(&redis, json!({"concurrency": 4, "redisTimeoutMs": 1000}));
    endpoint.wait_for(20);
    redis.restart(Duration::from_millis(500));
    daemon.wait_for_log("Redis answers again");
    endpoint.wait_for(40);
    redis.restart(Duration::from_millis(200));

    let mut con = redis.con();
    wait_until(PATIENCE, "every job settled", || {
        con.zcard::<_, usize>(QUEUE).unwrap() == 0
            && con.zcard::<_, usize>(INFLIGHT).unwrap() == 0
            && con.hlen::<_, usize>(ATTEMPTS).unwrap() == 0
    });
    let ids: HashSet<String> = endpoint.per_job().into_keys().collect();
    let expected: HashSet<String> = members.iter().map(|m| job_id(&mut con, m)).collect();
    assert_eq!(ids, expected, "every job was delivered");
    assert_eq!(con.llen::<_, usize>(FAILED).unwrap(), 0);
    let log = daemon.log();
    assert!(log.contains("Redis at") && log.contains("failed"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn job_added_again_while_in_flight_is_delivered_once() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|_| Reply::success().after(Duration::from_millis(800)));
    let mut con = redis.con();
    // Two workers: the copy is claimed (and merged) while the first attempt runs.
    let daemon = Daemon::start(&redis, json!({"concurrency": 2}));
    let m = member(&endpoint.url("/dup"), json!({"orderId": 5}));
    add(&mut con, &m, 0.0);
    endpoint.wait_for(1);
    // A second producer writes the same member while the first attempt runs.
    add(&mut con, &m, unix_now() - 1.0);
    daemon.wait_for_log("merged into the attempt under way");
    wait_until(PATIENCE, "the job settled", || {
        con.hlen::<_, usize>(ATTEMPTS).unwrap() == 0
    });
    assert_eq!(con.zcard::<_, usize>(QUEUE).unwrap(), 0);
    // A second delivery would be the copy claimed as a job of its own: due by now, so
    // ahead of markers due now. Two markers held at once keep both workers busy, so
    // each has finished what it took before, and any such request has arrived.
    wait_for_marker(&mut con, unix_now(), 2);
    assert_eq!(endpoint.count(), 1, "one member is one job");
    assert_eq!(con.llen::<_, usize>(FAILED).unwrap(), 0);
    assert_no_bookkeeping(&mut con);
}

#[test]
fn claim_whose_reply_is_lost_is_put_back_without_waiting_for_its_lease() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    // A long lease: the job must come back through the lost-claim path, not by expiry.
    let daemon = Daemon::start(
        &redis,
        json!({"redisTimeoutMs": 150, "leaseMs": 600000, "pollIntervalMs": 10}),
    );
    daemon.wait_ready();
    let m = member(&endpoint.url("/lost-reply"), json!(1));
    add(&mut con, &m, unix_now() + 0.2);
    // Block Redis for a second with a busy script: the daemon's claim, sent meanwhile,
    // runs once the script ends, after the daemon gave up waiting for the reply.
    let _: () = redis::cmd("EVAL")
        .arg(
            "local function now() local t = redis.call('TIME') return t[1] + t[2] / 1e6 end \
             local stop = now() + 1 while now() < stop do end",
        )
        .arg(0)
        .query(&mut con)
        .unwrap();
    let r = &endpoint.wait_for(1)[0];
    assert_eq!(r.attempt(), 1, "the lost claim did not use up an attempt");
    // Redis runs a command it had read even when its client has gone by then, so the
    // lost claim took the job and the put-back path brought it back. Valkey drops a
    // gone client's unread commands: the lost call claimed nothing, and the job went
    // out on a later claim, still inside the lease and at attempt 1.
    if server_program() != "valkey-server" {
        assert!(daemon.log().contains("put back 1 jobs"), "{}", daemon.log());
    }
    wait_until(PATIENCE, "the job settled", || {
        con.hlen::<_, usize>(ATTEMPTS).unwrap() == 0
    });
    assert_no_bookkeeping(&mut con);
}

#[test]
fn a_job_kept_waiting_by_a_slow_endpoint_is_claimed_again_rather_than_sent_past_its_lease() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|r| match r.path.as_str() {
        "/slow" => Reply::success().after(Duration::from_millis(800)),
        _ => Reply::success(),
    });
    let mut con = redis.con();
    // One worker. Fast calls first, so the daemon claims jobs ahead of it; then two
    // slow ones, claimed together, so the second waits 0.8 s behind the first. A call
    // may take 1 s and the lease is 1.3 s: a job may start at most 0.1 s after its
    // claim. Started late it would run past its lease and be taken back and sent
    // twice; instead it goes back to the queue untried and is claimed afresh.
    let daemon = Daemon::start(
        &redis,
        json!({"concurrency": 1, "timeoutMs": 1000, "redisTimeoutMs": 100, "leaseMs": 1600}),
    );
    daemon.wait_ready();
    for i in 0..20 {
        add(&mut con, &member(&endpoint.url("/fast"), json!(i)), 0.0);
    }
    let later = unix_now() + 0.7;
    for i in 0..2 {
        add(&mut con, &member(&endpoint.url("/slow"), json!(i)), later);
    }
    endpoint.wait_for(22);
    // A second try would come from a lease running out. Every lease now held was taken
    // before the 22nd request, so runs out before now + 1.3 s: the round that claims a
    // marker due after that first takes back any expired lease (the claim script does
    // so before it claims). A job taken back is queued, and leased again when claimed,
    // until its outcome is written after its request: so once no bookkeeping is left
    // after the marker, a second try would have reached the endpoint.
    wait_for_marker(&mut con, unix_now() + 1.3 + 0.1, 1);
    assert_no_bookkeeping(&mut con);
    let requests = endpoint.requests();
    let per_job = endpoint.per_job();
    assert_eq!(per_job.len(), 22, "{per_job:?}");
    assert!(per_job.values().all(|&n| n == 1), "{per_job:?}");
    assert!(
        requests.iter().all(|r| r.attempt() == 1),
        "handing a job back must not use up an attempt"
    );
    let log = daemon.log();
    assert!(log.contains("waited too long for a free worker"), "{log}");
    assert!(!log.contains("lease ran out"), "{log}");
    assert!(!log.contains("took back"), "{log}");
}

#[test]
fn a_daemon_with_busy_workers_leaves_due_jobs_to_one_with_free_workers() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|_| Reply::success().after(Duration::from_millis(800)));
    let mut con = redis.con();
    let a = Daemon::start(&redis, json!({"concurrency": 1}));
    let b = Daemon::start(&redis, json!({"concurrency": 1}));
    a.wait_ready();
    b.wait_ready();
    // Calls take 0.8 s, so neither daemon claims ahead of its one worker: whichever
    // polls first takes one job, not all four, and the other daemon gets its share.
    let mut pipe = redis::pipe();
    for i in 0..4 {
        pipe.cmd("ZADD")
            .arg(QUEUE)
            .arg("1")
            .arg(member(&endpoint.url("/slow"), json!(i)));
    }
    let _: () = pipe.query(&mut con).unwrap();
    endpoint.wait_for(4);
    assert_no_bookkeeping(&mut con);
    for daemon in [&a, &b] {
        let delivered = daemon.log().matches(" delivered to ").count();
        assert_eq!(delivered, 2, "{}", daemon.log());
    }
}

/// A corrupt attempts hash (a count past u32) once failed the whole claim batch, so
/// no job was delivered. Now that one job is set aside with its id and the problem
/// named, and the others go out.
#[test]
fn one_unreadable_claim_line_sets_that_job_aside_and_spares_the_batch() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::succeeding();
    let mut con = redis.con();
    let corrupt = member(&endpoint.url("/corrupt"), json!(1));
    let _: () = con
        .hset(ATTEMPTS, &corrupt, "99999999999:1700000000")
        .unwrap();
    add(&mut con, &corrupt, 1.0);
    for i in 0..3 {
        add(&mut con, &member(&endpoint.url("/fine"), json!(i)), 2.0);
    }
    let daemon = Daemon::start(&redis, json!({}));
    endpoint.wait_for(3);
    wait_for_failed(&mut con, 1);
    let record = &failed_records(&mut con)[0];
    let error = record["error"].as_str().unwrap();
    assert!(error.contains("attempt count"), "{record}");
    assert_eq!(record["member"], corrupt.as_str());
    assert!(
        daemon.log().contains(&job_id(&mut con, &corrupt)),
        "{}",
        daemon.log()
    );
    assert_no_bookkeeping(&mut con);
    assert!(endpoint.requests().iter().all(|r| r.path == "/fine"));
}
