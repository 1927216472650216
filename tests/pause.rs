//! A paused host's backlog costs Redis and the loop close to nothing, and other
//! hosts stay on time (issue 13, item 4).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::json;

/// A host that hangs past `timeoutMs` (3 s) trips after two attempts and is paused
/// for 200 ms; then one probe goes, for up to 3 s. Its other jobs used to be claimed
/// and put back every 200 ms (the pause, as the wait while a probe runs), some 15
/// times per probe; now they wait as long as the probe may take, so each is put
/// back about twice per cycle of pause and probe. A healthy host's jobs, due in the
/// middle of the backlog, still go out on time.
#[test]
fn a_paused_hosts_backlog_waits_out_the_probe_and_other_hosts_stay_on_time() {
    let redis = RedisServer::start();
    let hanging = Endpoint::start(|_| Reply::new(500, "").after(Duration::from_secs(5)));
    let healthy = Endpoint::succeeding();
    let mut con = redis.con();
    let daemon = Daemon::start(
        &redis,
        json!({
            "timeoutMs": 3000, "hostFailureThreshold": 2, "hostPauseMs": 200,
            "maxRetryNum": 1000, "retryBaseMs": 50, "concurrency": 4,
        }),
    );
    daemon.wait_for_log("ready:");
    let backlog = 300;
    for i in 0..backlog {
        add(&mut con, &member(&hanging.url("/hang"), json!(i)), 0.0);
    }
    daemon.wait_for_log("failed 2 times in a row");
    let start = unix_now();
    // Healthy jobs due over the next two cycles of pause and probe (2 × 3.2 s).
    let healthy_jobs = 8;
    for i in 0..healthy_jobs {
        let due = start + 1.0 + f64::from(i) * 0.8;
        add(&mut con, &member(&healthy.url("/ok"), json!(i)), due);
    }
    let got = healthy.wait_for(healthy_jobs as usize);
    let elapsed = unix_now() - start;

    for r in &got {
        let due: f64 = r.header("x-delayqs-due").parse().unwrap();
        let late = r.at - due;
        assert!(late < 1.0, "a healthy job was {late:.3} s late");
    }
    let log = daemon.log();
    let mut releases: HashMap<&str, usize> = HashMap::new();
    for line in log.lines().filter(|l| l.contains(" is paused; back in ")) {
        let id = line.split("job ").nth(1).and_then(|r| r.split(':').next());
        *releases.entry(id.unwrap_or("?")).or_default() += 1;
    }
    let most = releases.values().copied().max().unwrap_or(0);
    let total: usize = releases.values().sum();
    eprintln!(
        "{total} releases of {} jobs in {elapsed:.1} s; at most {most} for one job",
        releases.len()
    );
    // Held back: the claim sends fresh jobs of a held host to their slots itself
    // (unlogged), the daemon those it claimed (logged above); few ever reach the host.
    let calls = hanging.count();
    assert!(
        calls < backlog / 10,
        "the backlog was not held back: {calls} calls to the hanging host"
    );
    // About two per 3.2 s cycle; the old churn made it about 15 per cycle.
    let bound = 3 * (elapsed / 3.2).ceil() as usize + 2;
    assert!(
        most <= bound,
        "a job was claimed and put back {most} times in {elapsed:.1} s (bound {bound})"
    );
}
