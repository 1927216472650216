//! Redis Sentinel, with real processes on loopback: 1 master, 1 replica, 3 sentinels.
//! Jobs flow while Sentinel fails the master over, and then while the new master is
//! killed with SIGKILL: every job whose producer write was replicated is delivered,
//! and the daemon follows both switches by itself (issue 14).

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const MASTER: &str = "jobs";

/// The sentinel program beside the server the tests run against.
fn sentinel_program() -> String {
    server_program().replace("-server", "-sentinel")
}

struct Node {
    port: u16,
    process: Option<Guarded>,
}

impl Node {
    fn start(dir: &Path, replica_of: Option<u16>) -> Node {
        Node::start_on(free_port(), dir, replica_of)
    }

    fn start_on(port: u16, dir: &Path, replica_of: Option<u16>) -> Node {
        let dir = dir.join(format!("node-{port}"));
        fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new(server_program());
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null());
        if let Some(master) = replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &master.to_string()]);
        }
        let node = Node {
            port,
            process: Some(Guarded::spawn(&mut cmd)),
        };
        wait_until(PATIENCE, "the node to answer", || node.try_con().is_some());
        node
    }

    fn try_con(&self) -> Option<redis::Connection> {
        let url = format!("redis://127.0.0.1:{}/", self.port);
        let con = redis::Client::open(url)
            .ok()?
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()?;
        con.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        Some(con)
    }

    fn kill9(&mut self) {
        drop(self.process.take());
    }
}

struct Sentinels {
    ports: Vec<u16>,
    _processes: Vec<Guarded>,
}

impl Sentinels {
    fn start(dir: &Path, master: u16) -> Sentinels {
        let mut ports = Vec::new();
        let mut processes = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let conf = dir.join(format!("sentinel-{port}.conf"));
            fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {MASTER} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 4000\n\
                     sentinel parallel-syncs {MASTER} 1\n",
                    dir.display()
                ),
            )
            .unwrap();
            let mut cmd = Command::new(sentinel_program());
            cmd.arg(&conf).stdout(Stdio::null());
            processes.push(Guarded::spawn(&mut cmd));
            ports.push(port);
        }
        let s = Sentinels {
            ports,
            _processes: processes,
        };
        wait_until(PATIENCE, "every sentinel to see the replica", || {
            s.ports.iter().all(|&p| {
                s.ask(p, |con| {
                    let replicas: Vec<Vec<String>> = redis::cmd("SENTINEL")
                        .arg("replicas")
                        .arg(MASTER)
                        .query(con)
                        .ok()?;
                    let ok = replicas
                        .iter()
                        .any(|r| r.windows(2).any(|kv| kv[0] == "flags" && kv[1] == "slave"));
                    ok.then_some(())
                })
                .is_some()
            })
        });
        s
    }

    fn ask<T>(&self, port: u16, f: impl FnOnce(&mut redis::Connection) -> Option<T>) -> Option<T> {
        let url = format!("redis://127.0.0.1:{port}/");
        let mut con = redis::Client::open(url)
            .ok()?
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()?;
        con.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        f(&mut con)
    }

    /// The master's port, as the first sentinel that answers says.
    fn master(&self) -> Option<u16> {
        self.ports.iter().find_map(|&p| {
            self.ask(p, |con| {
                let (_, port): (String, u16) = redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(MASTER)
                    .query(con)
                    .ok()?;
                Some(port)
            })
        })
    }

    fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }
}

/// Adds a job to the current master and waits for one replica to have it: the
/// producer's side of "replicated". Returns whether it was acknowledged by a replica.
fn add_replicated(sentinels: &Sentinels, member: &str) -> bool {
    let Some(port) = sentinels.master() else {
        return false;
    };
    let url = format!("redis://127.0.0.1:{port}/");
    let Ok(mut con) = redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
    else {
        return false;
    };
    if con.set_read_timeout(Some(Duration::from_secs(2))).is_err() {
        return false;
    }
    let added: redis::RedisResult<()> = redis::cmd("ZADD")
        .arg(QUEUE)
        .arg(format!("{:.6}", unix_now()))
        .arg(member)
        .query(&mut con);
    let acked: redis::RedisResult<u32> = redis::cmd("WAIT").arg(1).arg(1000).query(&mut con);
    added.is_ok() && acked.is_ok_and(|n| n >= 1)
}

#[test]
fn jobs_survive_a_sentinel_failover_and_a_killed_master() {
    let dir = scratch_dir();
    let mut first = Node::start(&dir, None);
    let mut second = Node::start(&dir, Some(first.port));
    let sentinels = Sentinels::start(&dir, first.port);
    let endpoint = Endpoint::succeeding();

    let config = dir.join("config.json");
    let fields = json!({
        "sentinel": {"sentinels": sentinels.urls(), "master": format!("redis://{MASTER}/0")},
        "concurrency": 4, "pollIntervalMs": 20, "timeoutMs": 2000, "redisTimeoutMs": 300,
        "logLevel": "info", "pid": dir.join("delayqs.pid"),
    });
    fs::write(&config, fields.to_string()).unwrap();
    let daemon = Daemon::start_with_file(&config);
    daemon.wait_ready();

    let mut replicated = Vec::new();
    let mut add_some = |n: usize, from: usize| {
        for i in from..from + n {
            let m = member(&endpoint.url("/ha"), json!(i));
            if add_replicated(&sentinels, &m) {
                replicated.push(m);
            }
            thread::sleep(Duration::from_millis(20));
        }
    };
    add_some(50, 0);

    // A planned switch: the replica is promoted, the old master demoted.
    let asked = sentinels.ask(sentinels.ports[0], |con| {
        redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER)
            .query::<String>(con)
            .ok()
    });
    assert_eq!(asked.as_deref(), Some("OK"));
    wait_until(PATIENCE, "the sentinels to name the replica", || {
        sentinels.master() == Some(second.port)
    });
    let switched = Instant::now();
    let named = |port: u16| {
        let at = format!("127.0.0.1:{port}");
        let log = daemon.log();
        log.lines()
            .filter(|l| l.contains("Sentinel: the master") && l.contains(&at))
            .count()
    };
    wait_until(PATIENCE, "the daemon to follow the switch", || {
        named(second.port) >= 1
    });
    eprintln!(
        "switch followed by the daemon {:.1} s after the sentinels named it",
        switched.elapsed().as_secs_f64()
    );
    add_some(50, 50);

    // An unplanned one: the new master dies; Sentinel promotes the first node again.
    wait_until(PATIENCE, "the old master to replicate the new one", || {
        first.try_con().is_some_and(|mut c| {
            redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut c)
                .is_ok_and(|i| i.contains("master_link_status:up"))
        })
    });
    second.kill9();
    let killed = Instant::now();
    wait_until(PATIENCE, "the sentinels to promote the first node", || {
        sentinels.master() == Some(first.port)
    });
    eprintln!(
        "election {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    // The killed node comes back as a replica, so that writes can be replicated again.
    // The sentinels may still fail over once more (Valkey's did, now and then, to the
    // node just back): either way one node replicates the other, and the producer asks
    // the sentinels where to write.
    let port = second.port;
    second = Node::start_on(port, &dir, Some(first.port));
    let replicates = |node: &Node| {
        node.try_con().is_some_and(|mut c| {
            redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut c)
                .is_ok_and(|i| i.contains("master_link_status:up"))
        })
    };
    wait_until(PATIENCE, "one node to replicate the other again", || {
        replicates(&second) || replicates(&first)
    });
    add_some(50, 100);

    let wanted: HashSet<String> = replicated.iter().cloned().collect();
    eprintln!(
        "{} of 150 producer writes acknowledged by a replica",
        wanted.len()
    );
    assert!(
        wanted.len() >= 100,
        "too few writes were replicated: {}",
        wanted.len()
    );
    wait_until(PATIENCE, "every replicated job delivered", || {
        let got: HashSet<String> = endpoint
            .requests()
            .iter()
            .map(|r| r.form["body"].clone())
            .collect();
        wanted.iter().all(|m| {
            let v: serde_json::Value = serde_json::from_str(m).unwrap();
            got.contains(&v["body"].to_string())
        })
    });
    let requests = endpoint.requests();
    let bodies: HashSet<&String> = requests.iter().map(|r| &r.form["body"]).collect();
    eprintln!(
        "{} requests for {} jobs: {} duplicates",
        requests.len(),
        bodies.len(),
        requests.len() - bodies.len()
    );
    // Once at start, once after the kill.
    assert!(
        named(first.port) >= 2,
        "the second switch was not followed:\n{}",
        daemon.log()
    );
    drop(first.process.take());
}
