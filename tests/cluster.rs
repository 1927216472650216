//! Redis Cluster, with real processes on loopback (issue 15, first step): 3 masters
//! with a replica each, joined by `redis-cli --cluster create`; the queue's keys share
//! one hash tag. Delivery, a retry, a daemon killed mid-delivery, and a
//! `CLUSTER FAILOVER` of the queue's master while jobs flow.

mod common;

use std::collections::HashSet;
use std::fs;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::json;

const Q: &str = "{dq}:job_zqueue";
const F: &str = "{dq}:inflight";
const A: &str = "{dq}:attempts";
const X: &str = "{dq}:fail_job";

/// A free port whose cluster bus port (the port + 10000) exists and is free too: a
/// node given a port above 55535 cannot open its bus and never joins.
fn node_port() -> u16 {
    loop {
        let port = free_port();
        if port <= 55535 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// The `-cli` program beside the server the tests run against.
fn cli_program() -> String {
    server_program().replace("-server", "-cli")
}

struct Cluster {
    ports: Vec<u16>,
    _nodes: Vec<Guarded>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = scratch_dir();
        let ports: Vec<u16> = (0..6).map(|_| node_port()).collect();
        let mut nodes = Vec::new();
        for &port in &ports {
            let d = dir.join(port.to_string());
            fs::create_dir_all(&d).unwrap();
            let mut cmd = Command::new(server_program());
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(&d)
                .stdout(Stdio::null());
            nodes.push(Guarded::spawn(&mut cmd));
        }
        for &port in &ports {
            wait_until(PATIENCE, "a cluster node to answer", || {
                node(port).is_some()
            });
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new(cli_program())
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli (make test installs it with redis-server)");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        wait_until(PATIENCE, "every node to see the cluster ok", || {
            ports.iter().all(|&p| {
                node(p).is_some_and(|mut c| {
                    redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query::<String>(&mut c)
                        .is_ok_and(|i| i.contains("cluster_state:ok"))
                })
            })
        });
        wait_until(PATIENCE, "every slot range to list its replica", || {
            node(ports[0]).is_some_and(|mut c| {
                redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query::<Vec<Vec<redis::Value>>>(&mut c)
                    .is_ok_and(|ranges| ranges.len() == 3 && ranges.iter().all(|r| r.len() >= 4))
            })
        });
        Cluster {
            ports,
            _nodes: nodes,
        }
    }

    fn urls(&self) -> Vec<String> {
        self.ports[..3]
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }

    fn con(&self) -> redis::cluster::ClusterConnection {
        redis::cluster::ClusterClient::new(self.urls())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// The port of the node that is master, or replica, of the queue's slot.
    fn owner_of_queue(&self, want_master: bool) -> u16 {
        let mut con = self.con();
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(Q)
            .query(&mut con)
            .unwrap();
        let slots: Vec<Vec<redis::Value>> =
            redis::cmd("CLUSTER").arg("SLOTS").query(&mut con).unwrap();
        for range in slots {
            let int = |v: &redis::Value| match v {
                redis::Value::Int(n) => *n as u16,
                _ => 0,
            };
            let (lo, hi) = (int(&range[0]), int(&range[1]));
            if (lo..=hi).contains(&slot) {
                let pick = if want_master { &range[2] } else { &range[3] };
                let redis::Value::Array(node) = pick else {
                    panic!("{pick:?}")
                };
                return int(&node[1]);
            }
        }
        panic!("no node owns slot {slot}");
    }
}

fn node(port: u16) -> Option<redis::Connection> {
    let con = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .ok()?
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    con.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    Some(con)
}

fn config(cluster: &Cluster, extra: serde_json::Value) -> std::path::PathBuf {
    let path = scratch_dir().join("config.json");
    let mut c = json!({
        "cluster": cluster.urls(),
        "key": Q, "inflightKey": F, "attemptsKey": A, "failKey": X,
        "concurrency": 4, "pollIntervalMs": 20, "retryBaseMs": 100, "retryJitter": 0,
        "timeoutMs": 2000, "redisTimeoutMs": 500, "logLevel": "debug",
        "pid": path.with_file_name("delayqs.pid"),
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    fs::write(&path, c.to_string()).unwrap();
    path
}

fn zadd(con: &mut redis::cluster::ClusterConnection, member: &str, due: f64) {
    let _: () = redis::cmd("ZADD")
        .arg(Q)
        .arg(format!("{due:.6}"))
        .arg(member)
        .query(con)
        .unwrap();
}

#[test]
fn untagged_key_names_on_a_cluster_stop_with_one_line_saying_how_to_name_them() {
    let path = scratch_dir().join("config.json");
    fs::write(
        &path,
        json!({"cluster": ["redis://127.0.0.1:1/"], "pid": path.with_file_name("p")}).to_string(),
    )
    .unwrap();
    let out = run_delayqs(&["run", "--check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("{DelayQs}:job_zqueue") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn jobs_flow_on_a_cluster_through_retries_a_killed_daemon_and_a_failover() {
    let cluster = Cluster::start();
    let endpoint = Endpoint::start(|r| {
        if r.path == "/flaky" && r.attempt() == 1 {
            Reply::new(500, "not yet")
        } else if r.path == "/slow" {
            Reply::success().after(Duration::from_millis(1500))
        } else {
            Reply::success()
        }
    });
    let mut con = cluster.con();
    let path = config(
        &cluster,
        json!({"leaseMs": 6000, "waitReplicas": 1, "waitReplicasTimeoutMs": 300}),
    );
    let mut first = Daemon::start_with_file(&path);
    first.wait_ready();

    for i in 0..20 {
        zadd(&mut con, &member(&endpoint.url("/ok"), json!(i)), 0.0);
    }
    zadd(&mut con, &member(&endpoint.url("/flaky"), json!("f")), 0.0);
    endpoint.wait_for(22);
    let flaky: Vec<u32> = endpoint
        .requests()
        .iter()
        .filter(|r| r.path == "/flaky")
        .map(|r| r.attempt())
        .collect();
    assert_eq!(flaky, [1, 2], "a retry on the cluster");
    // WAIT went to the queue's master alone, not to every primary.
    let waits = |port: u16| -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut node(port).unwrap())
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let master = cluster.owner_of_queue(true);
    assert!(waits(master) > 0, "no WAIT reached the queue's master");
    for &other in cluster.ports[..3].iter().filter(|&&p| p != master) {
        assert_eq!(waits(other), 0, "a WAIT went to another primary");
    }

    // A daemon killed while its callbacks run: their leases expire, another delivers.
    for i in 0..4 {
        zadd(&mut con, &member(&endpoint.url("/slow"), json!(i)), 0.0);
    }
    wait_until(PATIENCE, "the slow calls under way", || {
        endpoint
            .requests()
            .iter()
            .filter(|r| r.path == "/slow")
            .count()
            == 4
    });
    first.kill9();
    let second = Daemon::start_with_file(&path);
    second.wait_ready();

    // The queue's master hands over to its replica while jobs keep coming.
    let replica = cluster.owner_of_queue(false);
    let mut flow = Vec::new();
    for i in 0..30 {
        let m = member(&endpoint.url("/flow"), json!(i));
        zadd(&mut con, &m, 0.0);
        flow.push(m);
        if i == 10 {
            let answer: String = redis::cmd("CLUSTER")
                .arg("FAILOVER")
                .query(&mut node(replica).unwrap())
                .unwrap();
            assert_eq!(answer, "OK");
        }
        thread::sleep(Duration::from_millis(100));
    }
    wait_until(PATIENCE, "the replica to take the queue's slot", || {
        cluster.owner_of_queue(true) == replica
    });
    wait_until(PATIENCE, "every job delivered", || {
        let bodies: HashSet<String> = endpoint
            .requests()
            .iter()
            .filter(|r| r.path != "/flaky")
            .map(|r| format!("{}{}", r.path, r.form["body"]))
            .collect();
        bodies.len() == 20 + 4 + 30
    });
    wait_until(PATIENCE, "nothing left in flight or counted", || {
        let f: usize = redis::cmd("ZCARD").arg(F).query(&mut con).unwrap_or(1);
        let a: usize = redis::cmd("HLEN").arg(A).query(&mut con).unwrap_or(1);
        let q: usize = redis::cmd("ZCARD").arg(Q).query(&mut con).unwrap_or(1);
        (f, a, q) == (0, 0, 0)
    });
    let slow: Vec<u32> = endpoint
        .requests()
        .iter()
        .filter(|r| r.path == "/slow")
        .map(|r| r.attempt())
        .collect();
    assert!(slow.iter().filter(|&&a| a == 2).count() == 4, "{slow:?}");
}
