//! A partitioned host (issue 14): one daemon runs in a network namespace of its own,
//! joined to the test's Redis and endpoint by a veth pair, and is cut off from Redis
//! by an nftables DROP mid-run while a second daemon runs beside it. Its leases
//! expire and the other daemon delivers its jobs; when the cut heals, its late
//! outcomes are ignored (the lease token check) and it claims again; nothing is lost.
//!
//! Needs root (namespaces, nftables): `make test` runs as root and installs nftables.
//! Every address used lives on the veth pair this test creates and removes.

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (this test needs iproute2 and nftables, and root)",
                args[0]
            )
        });
    assert!(
        out.status.success(),
        "{args:?} failed (this test needs root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with one end of a veth pair; the other end stays here.
struct Host {
    ns: String,
    /// This side's address, where Redis and the endpoint listen for the namespace.
    here: String,
}

impl Host {
    fn create() -> Host {
        let n = std::process::id() % 10_000;
        let ns = format!("delayqs-part-{n}");
        let (outer, inner) = (format!("dqo{n}"), format!("dqi{n}"));
        let subnet = n % 250 + 1;
        let here = format!("10.213.{subnet}.1");
        let there = format!("10.213.{subnet}.2");
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        run(&["ip", "netns", "add", &ns]);
        let host = Host { ns, here };
        run(&[
            "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        run(&["ip", "link", "set", &inner, "netns", &host.ns]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", host.here),
            "dev",
            &outer,
        ]);
        run(&["ip", "link", "set", &outer, "up"]);
        let exec = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &host.ns];
            all.extend_from_slice(args);
            run(&all);
        };
        exec(&["ip", "addr", "add", &format!("{there}/30"), "dev", &inner]);
        exec(&["ip", "link", "set", &inner, "up"]);
        exec(&["ip", "link", "set", "lo", "up"]);
        host
    }

    fn nft(&self, script: &str) {
        run(&["ip", "netns", "exec", &self.ns, "nft", script]);
    }

    /// Drops every packet from the namespace to Redis.
    fn cut_from(&self, port: u16) {
        self.nft("add table inet delayqs_test");
        self.nft("add chain inet delayqs_test out { type filter hook output priority 0 ; }");
        self.nft(&format!(
            "add rule inet delayqs_test out ip daddr {} tcp dport {port} drop",
            self.here
        ));
    }

    fn heal(&self) {
        self.nft("delete table inet delayqs_test");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn a_daemon_cut_off_from_redis_loses_nothing_and_resumes_when_healed() {
    let host = Host::create();
    let port = free_port();
    let dir = scratch_dir();
    let mut redis_cmd = Command::new(server_program());
    redis_cmd
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            &host.here,
        ])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null());
    let _redis = Guarded::spawn(&mut redis_cmd);
    let url_here = format!("redis://127.0.0.1:{port}/");
    let mut con = loop {
        if let Ok(con) = redis::Client::open(url_here.as_str()).and_then(|c| c.get_connection()) {
            break con;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let endpoint = Endpoint::start_on(&host.here, |_| {
        Reply::success().after(Duration::from_millis(300))
    });

    let settings = |redis: String, pid: &str| {
        json!({
            "redis": redis, "concurrency": 4, "pollIntervalMs": 20, "timeoutMs": 1000,
            "redisTimeoutMs": 200, "leaseMs": 3000, "logLevel": "debug",
            "pid": dir.join(pid),
        })
    };
    let config_a = dir.join("a.json");
    std::fs::write(
        &config_a,
        settings(format!("redis://{}:{port}/", host.here), "a.pid").to_string(),
    )
    .unwrap();
    let config_b = dir.join("b.json");
    std::fs::write(&config_b, settings(url_here.clone(), "b.pid").to_string()).unwrap();
    let cut_off = Daemon::start_under(&["ip", "netns", "exec", &host.ns], &config_a);
    cut_off.wait_ready();
    let other = Daemon::start_with_file(&config_b);
    other.wait_ready();

    let jobs = 200;
    let start = unix_now();
    let mut pipe = redis::pipe();
    for i in 0..jobs {
        let due = start + 0.5 + f64::from(i) * 0.05; // over 10 s
        pipe.zadd(
            QUEUE,
            member(&endpoint.url("/part"), json!(i)),
            format!("{due:.6}"),
        );
    }
    let _: () = pipe.query(&mut con).unwrap();

    thread::sleep(Duration::from_secs(3)); // jobs flow through both daemons
    host.cut_from(port);
    let cut = Instant::now();
    thread::sleep(Duration::from_secs(5)); // longer than the 3 s lease
    host.heal();
    eprintln!("cut off for {:.1} s", cut.elapsed().as_secs_f64());
    let healed_at = log_timestamp_now();

    wait_until(PATIENCE, "every job delivered and settled", || {
        let bodies: HashSet<String> = endpoint
            .requests()
            .iter()
            .map(|r| r.form["body"].clone())
            .collect();
        bodies.len() == jobs as usize
            && con.zcard::<_, usize>(QUEUE).unwrap() == 0
            && con.zcard::<_, usize>(INFLIGHT).unwrap() == 0
    });
    assert_no_bookkeeping(&mut con);
    let log = cut_off.log();
    assert!(log.contains("failed:"), "the cut was not noticed:\n{log}");
    assert!(
        log.contains("Redis answers again"),
        "never reconnected:\n{log}"
    );
    assert!(
        log.contains("its lease ran out before this outcome was written"),
        "its late outcomes were not refused as stale:\n{log}"
    );
    assert!(
        other.log().contains("took back"),
        "the other daemon did not take the expired leases back:\n{}",
        other.log()
    );
    // It claims again after the heal: a delivery logged after that moment.
    let resumed = log
        .lines()
        .filter(|l| l.contains(" delivered to "))
        .any(|l| l[..healed_at.trim().len()] > *healed_at.trim());
    assert!(resumed, "no delivery after the heal:\n{log}");
    let requests = endpoint.count();
    eprintln!(
        "{requests} requests for {jobs} jobs: {} delivered again after the cut",
        requests - jobs as usize
    );
}
