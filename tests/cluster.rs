//! Redis Cluster, with real processes on loopback (issue 15): 3 masters with a replica
//! each, joined by `redis-cli --cluster create`; the queue's keys share one hash tag.
//! One shard: delivery, a retry, a daemon killed mid-delivery, and a `CLUSTER
//! FAILOVER` of the queue's master while jobs flow. Three shards on three masters: a
//! master killed, a slot migrated by `redis-cli --cluster reshard`, a `CLUSTER
//! FAILOVER` and a daemon killed, while two daemons claim and a producer adds; skip
//! keys, the admin commands and the metrics file over shards.

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
    /// The node processes, in the order of `ports`.
    nodes: Vec<Guarded>,
    /// Each node's `nodes.conf` lives in a folder named for its port here.
    dir: std::path::PathBuf,
}

/// A cluster node on `port`; a node restarted in the same folder rejoins as it was
/// (its `nodes.conf`).
fn spawn_node(dir: &std::path::Path, port: u16) -> Guarded {
    let d = dir.join(port.to_string());
    fs::create_dir_all(&d).unwrap();
    let mut cmd = Command::new(server_program());
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(&d)
        .stdout(Stdio::null());
    Guarded::spawn(&mut cmd)
}

/// One slot range of `CLUSTER SLOTS`: its bounds and its master's port and node id.
struct Range {
    lo: u16,
    hi: u16,
    master: u16,
    master_id: String,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = scratch_dir();
        let ports: Vec<u16> = (0..6).map(|_| node_port()).collect();
        let nodes = ports.iter().map(|&port| spawn_node(&dir, port)).collect();
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
        Cluster { ports, nodes, dir }
    }

    /// The slot ranges as a live master sees them.
    fn ranges(&self) -> Vec<Range> {
        let mut con = self.con();
        let slots: Vec<Vec<redis::Value>> =
            redis::cmd("CLUSTER").arg("SLOTS").query(&mut con).unwrap();
        let int = |v: &redis::Value| match v {
            redis::Value::Int(n) => *n as u16,
            _ => 0,
        };
        slots
            .iter()
            .map(|range| {
                let redis::Value::Array(node) = &range[2] else {
                    panic!("{range:?}")
                };
                let id = match &node[2] {
                    redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    other => panic!("{other:?}"),
                };
                Range {
                    lo: int(&range[0]),
                    hi: int(&range[1]),
                    master: int(&node[1]),
                    master_id: id,
                }
            })
            .collect()
    }

    /// The port of a replica of the master that serves `slot`.
    fn replica_of(&self, slot: u16) -> u16 {
        let mut con = self.con();
        let slots: Vec<Vec<redis::Value>> =
            redis::cmd("CLUSTER").arg("SLOTS").query(&mut con).unwrap();
        let int = |v: &redis::Value| match v {
            redis::Value::Int(n) => *n as u16,
            _ => 0,
        };
        let range = slots
            .iter()
            .find(|r| (int(&r[0])..=int(&r[1])).contains(&slot) && r.len() >= 4)
            .expect("the slot's master has a replica");
        let redis::Value::Array(node) = &range[3] else {
            panic!("{range:?}")
        };
        int(&node[1])
    }

    /// The port of the master that serves `slot`.
    fn master_of(&self, slot: u16) -> u16 {
        let ranges = self.ranges();
        let range = ranges.iter().find(|r| (r.lo..=r.hi).contains(&slot));
        range.expect("every slot is served").master
    }

    fn kill9(&mut self, port: u16) {
        let i = self.ports.iter().position(|&p| p == port).unwrap();
        let _ = self.nodes[i].0.kill();
        let _ = self.nodes[i].0.wait();
    }

    /// Starts a killed node again: it comes back as a replica of whoever took its
    /// slots.
    fn restart(&mut self, port: u16) {
        let i = self.ports.iter().position(|&p| p == port).unwrap();
        self.nodes[i] = spawn_node(&self.dir, port);
    }

    fn urls(&self) -> Vec<String> {
        self.ports
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

/// The slot of a key, as Redis computes it (CRC16/XMODEM of its hash tag).
fn slot_of(key: &str) -> u16 {
    let hashed = match (key.find('{'), key.find('}')) {
        (Some(open), Some(close)) if close > open + 1 => &key[open + 1..close],
        _ => key,
    };
    let mut crc: u16 = 0;
    for &byte in hashed.as_bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// The names of shard `i` of the keys tagged `{tag}`, as the README gives them.
fn shard_keys(tag: &str, i: usize) -> [String; 4] {
    let t = match i {
        0 => format!("{{{tag}}}"),
        i => format!("{{{tag}:{i}}}"),
    };
    [":q", ":f", ":a", ":x"].map(|suffix| format!("{t}{suffix}"))
}

/// How many slots the reshard moves: `redis-cli --cluster reshard` takes a source's
/// lowest slots first, so shard 2's slot is chosen among its master's first few.
const MOVED_SLOTS: u16 = 64;

#[test]
fn three_shards_on_three_masters_survive_a_master_killed_a_slot_migrated_a_failover_and_a_daemon_killed()
 {
    let mut cluster = Cluster::start();
    let ranges = cluster.ranges();
    let range_of = |slot: u16| {
        ranges
            .iter()
            .position(|r| (r.lo..=r.hi).contains(&slot))
            .unwrap()
    };
    // A tag whose 3 shards sit on 3 masters, shard 2's slot among the ones the
    // reshard will move.
    let tag = (0..)
        .map(|n| format!("q{n}"))
        .find(|tag| {
            let slots: Vec<u16> = (0..3).map(|i| slot_of(&shard_keys(tag, i)[0])).collect();
            let owners: HashSet<usize> = slots.iter().map(|&s| range_of(s)).collect();
            let two = &ranges[range_of(slots[2])];
            owners.len() == 3 && slots[2] < two.lo + MOVED_SLOTS
        })
        .unwrap();
    let slot = |i: usize| slot_of(&shard_keys(&tag, i)[0]);
    let endpoint = Endpoint::start(|r| {
        if r.path == "/flaky" && r.attempt() == 1 {
            Reply::new(503, "not yet")
        } else if r.path == "/slow" {
            Reply::success().after(Duration::from_millis(800))
        } else {
            Reply::success()
        }
    });
    let names = shard_keys(&tag, 0);
    let path = config(
        &cluster,
        json!({
            "key": names[0], "inflightKey": names[1], "attemptsKey": names[2], "failKey": names[3],
            "shards": 3, "leaseMs": 8000, "waitReplicas": 1, "waitReplicasTimeoutMs": 100,
            "redisTimeoutMs": 300,
        }),
    );
    let mut first = Daemon::start_with_file(&path);
    let second = Daemon::start_with_file(&path);
    first.wait_ready();
    second.wait_ready();

    // The producer follows the rule and, like a careful shop, waits for a replica to
    // have each job: what a dying master never passed on was never added.
    let urls = cluster.urls();
    let total = 240;
    let produced = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let producer = {
        let produced = produced.clone();
        let tag = tag.clone();
        let base = endpoint.url("");
        thread::spawn(move || {
            let mut jobs = Vec::new();
            let mut con: Option<redis::cluster::ClusterConnection> = None;
            for i in 0..total {
                let path = match i % 10 {
                    0 => "/flaky",
                    5 => "/slow",
                    _ => "/ok",
                };
                let m = member(&format!("{}{path}", base.trim_end_matches('/')), json!(i));
                let id = sha1_hex(&m);
                let shard = u32::from_str_radix(&id[..8], 16).unwrap() as usize % 3;
                let key = shard_keys(&tag, shard)[0].clone();
                loop {
                    let c = match con.as_mut() {
                        Some(c) => c,
                        None => match redis::cluster::ClusterClient::new(urls.clone())
                            .and_then(|c| c.get_connection())
                        {
                            Ok(c) => con.insert(c),
                            Err(_) => {
                                thread::sleep(Duration::from_millis(100));
                                continue;
                            }
                        },
                    };
                    if add_and_wait(c, &key, &m).is_ok() {
                        break;
                    }
                    con = None;
                    thread::sleep(Duration::from_millis(100));
                }
                jobs.push(m);
                produced.store(i + 1, std::sync::atomic::Ordering::SeqCst);
                thread::sleep(Duration::from_millis(25));
            }
            jobs
        })
    };
    let wait_produced = |n: usize| {
        wait_until(PATIENCE, &format!("{n} jobs produced"), || {
            produced.load(std::sync::atomic::Ordering::SeqCst) >= n
        })
    };

    // Shard 1's master dies; its replica takes the slot over.
    wait_produced(40);
    let dead = cluster.master_of(slot(1));
    cluster.kill9(dead);
    wait_until(PATIENCE, "a replica to take shard 1's slot", || {
        cluster.ranges().iter().all(|r| r.master != dead)
    });
    // As an operator would: the dead node comes back, as the new master's replica.
    cluster.restart(dead);
    // Shard 2's slot moves to shard 0's master while jobs flow (MOVED, ASK).
    wait_produced(100);
    let from = &ranges[range_of(slot(2))];
    let to = cluster
        .ranges()
        .into_iter()
        .find(|r| (r.lo..=r.hi).contains(&slot(0)))
        .unwrap();
    let out = Command::new(cli_program())
        .args(["--cluster", "reshard", &format!("127.0.0.1:{}", to.master)])
        .args([
            "--cluster-from",
            &from.master_id,
            "--cluster-to",
            &to.master_id,
        ])
        .args(["--cluster-slots", &MOVED_SLOTS.to_string(), "--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reshard failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        cluster.master_of(slot(2)),
        to.master,
        "shard 2's slot moved"
    );
    wait_until(PATIENCE, "a daemon to follow the moved slot", || {
        [&first, &second]
            .iter()
            .any(|d| d.log().contains("is moving a slot of the queue"))
    });
    // Shard 0's master (now shard 2's too) hands over to its replica.
    wait_produced(130);
    let replica = cluster.replica_of(slot(0));
    let answer: String = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .query(&mut node(replica).unwrap())
        .unwrap();
    assert_eq!(answer, "OK");
    wait_until(PATIENCE, "the replica to take shard 0's slot", || {
        cluster.master_of(slot(0)) == replica
    });
    // A daemon dies with callbacks in hand; the other takes them back at lease end.
    wait_produced(160);
    first.kill9();

    let jobs = producer.join().unwrap();
    let wanted: HashSet<String> = jobs
        .iter()
        .map(|m| serde_json::from_str::<serde_json::Value>(m).unwrap()["body"].to_string())
        .collect();
    wait_until(PATIENCE, "every job delivered", || {
        let seen: HashSet<String> = endpoint
            .requests()
            .iter()
            .map(|r| r.form["body"].clone())
            .collect();
        wanted.is_subset(&seen)
    });
    let mut con = cluster.con();
    for i in 0..3 {
        let [q, f, a, _] = shard_keys(&tag, i);
        wait_until(
            PATIENCE,
            &format!("shard {i} empty: nothing stranded"),
            || {
                let left: (usize, usize, usize) = (
                    redis::cmd("ZCARD").arg(&q).query(&mut con).unwrap_or(1),
                    redis::cmd("ZCARD").arg(&f).query(&mut con).unwrap_or(1),
                    redis::cmd("HLEN").arg(&a).query(&mut con).unwrap_or(1),
                );
                left == (0, 0, 0)
            },
        );
    }
    let flaky = endpoint
        .requests()
        .iter()
        .filter(|r| r.path == "/flaky" && r.attempt() >= 2)
        .map(|r| r.form["body"].clone())
        .collect::<HashSet<_>>()
        .len();
    assert_eq!(flaky, total / 10, "every flaky job retried once it failed");
    assert!(
        second.log().contains("claiming from 3 shards"),
        "{}",
        second.log()
    );
}

fn sha1_hex(member: &str) -> String {
    let out = Command::new("sha1sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(member.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)[..40].to_string()
}

/// `ZADD` on the key's master, then `WAIT` there for one replica to have it.
fn add_and_wait(
    con: &mut redis::cluster::ClusterConnection,
    key: &str,
    member: &str,
) -> redis::RedisResult<()> {
    use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
    let _: () = redis::cmd("ZADD").arg(key).arg(0).arg(member).query(con)?;
    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
        slot_of(key),
        SlotAddr::Master,
    )));
    let acked: i64 =
        redis::from_redis_value(con.route_command(redis::cmd("WAIT").arg(1).arg(1000), route)?)?;
    if acked < 1 {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no replica has it",
        )));
    }
    Ok(())
}

/// The shard of a member under `shards: 3`, by the README's rule.
fn shard_of(member: &str) -> usize {
    u32::from_str_radix(&sha1_hex(member)[..8], 16).unwrap() as usize % 3
}

/// Issue 18 on a Cluster: the daemon loads the Functions library on every master, and
/// jobs scheduled by id, each in the shard its id names, are delivered with their id.
/// Then what a shop does over shards on a Cluster: skip keys in the shard's slot, the
/// admin commands and the metrics file summing every shard.
#[test]
fn the_functions_library_admin_commands_skip_keys_and_metrics_work_over_shards() {
    let cluster = Cluster::start();
    let endpoint = Endpoint::succeeding();
    let metrics = scratch_dir().join("metrics.prom");
    let path = config(
        &cluster,
        json!({"shards": 3, "metricsFile": metrics, "metricsIntervalMs": 200}),
    );
    let daemon = Daemon::start_with_file(&path);
    daemon.wait_for_log("loaded the delayqs Functions library");
    let masters: HashSet<u16> = cluster.ranges().iter().map(|r| r.master).collect();
    assert_eq!(masters.len(), 3);
    for port in masters {
        let version: i64 = redis::cmd("FCALL")
            .arg("delayqs_version")
            .arg(0)
            .query(&mut node(port).unwrap())
            .unwrap_or_else(|e| panic!("master {port}: {e}"));
        assert_eq!(
            version, 2,
            "master {port}: the library VERSION in src/store/functions.rs"
        );
    }
    let mut wanted = HashSet::new();
    for i in 0..6 {
        let id = format!("order:{i}");
        let out = Command::new(env!("CARGO_BIN_EXE_delayqs"))
            .args(["add", "--config", path.to_str().unwrap(), "--id", &id])
            .args(["--callback", &endpoint.url("/c"), "--in", "0s"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wanted.insert(id);
    }
    let got: HashSet<String> = endpoint
        .wait_for(6)
        .iter()
        .map(|r| r.header("x-delayqs-producer-id").to_string())
        .collect();
    assert_eq!(got, wanted);

    // Skip keys: one job per shard whose key, in that shard's slot, exists (dropped,
    // no request), one whose key does not (sent), and one whose key is in another
    // slot (set aside with the reason: the claim cannot read it there).
    let mut con = cluster.con();
    let tag = |shard: usize| match shard {
        0 => "{dq}".to_string(),
        s => format!("{{dq:{s}}}"),
    };
    let queue = |shard: usize| format!("{}:job_zqueue", tag(shard));
    let in_shard = |shard: usize, callback: &str, body: serde_json::Value| {
        (0..)
            .map(|n| {
                let mut job = json!({"callback": callback, "body": n});
                for (k, v) in body.as_object().unwrap() {
                    job[k] = v.clone();
                }
                job.to_string()
            })
            .find(|m| shard_of(m) == shard)
            .unwrap()
    };
    let mut skipped = Vec::new();
    for shard in 0..3 {
        let paid = format!("{}:order:paid", tag(shard));
        let _: () = redis::cmd("SET").arg(&paid).arg(1).query(&mut con).unwrap();
        let m = in_shard(
            shard,
            &endpoint.url("/skipped"),
            json!({"skipIfExists": paid}),
        );
        let _: () = redis::cmd("ZADD")
            .arg(queue(shard))
            .arg(0)
            .arg(&m)
            .query(&mut con)
            .unwrap();
        skipped.push(m);
    }
    let sent = in_shard(
        1,
        &endpoint.url("/sent"),
        json!({"skipIfExists": format!("{}:order:unpaid", tag(1))}),
    );
    let elsewhere = in_shard(
        2,
        &endpoint.url("/elsewhere"),
        json!({"skipIfExists": format!("{}:order:paid", tag(0))}),
    );
    for m in [&sent, &elsewhere] {
        let shard = shard_of(m);
        let _: () = redis::cmd("ZADD")
            .arg(queue(shard))
            .arg(0)
            .arg(m)
            .query(&mut con)
            .unwrap();
    }
    endpoint.wait_for(7);
    let fail_list = format!("{}:fail_job", tag(2));
    wait_until(
        PATIENCE,
        "the job with another slot's skip key set aside",
        || {
            redis::cmd("LLEN")
                .arg(&fail_list)
                .query::<usize>(&mut con)
                .unwrap_or(0)
                == 1
        },
    );
    let record: String = redis::cmd("LINDEX")
        .arg(&fail_list)
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert!(record.contains("cannot be read"), "{record}");
    wait_until(PATIENCE, "every shard's queue empty", || {
        (0..3).all(|s| {
            redis::cmd("ZCARD")
                .arg(queue(s))
                .query::<usize>(&mut con)
                .unwrap_or(1)
                == 0
        })
    });
    let paths: Vec<String> = endpoint.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        !paths.iter().any(|p| p == "/skipped" || p == "/elsewhere"),
        "{paths:?}"
    );
    assert_eq!(
        daemon.log().matches("dropped without a request").count(),
        3,
        "{}",
        daemon.log()
    );

    // The admin commands and the metrics file over the shards: five jobs for later,
    // added by the rule (`add` follows it), listed, counted, one cancelled by prefix.
    let mut later = Vec::new();
    for i in 0..5 {
        let out = delayqs_with(
            &path,
            &[
                "add",
                "--callback",
                &endpoint.url("/later"),
                "--body",
                &i.to_string(),
                "--in",
                "1h",
            ],
        );
        assert!(out.status.success(), "{}", stderr_of(&out));
        later.push(stdout_of(&out));
    }
    let listed = json_with(&path, &["pending", "--limit", "0"]);
    assert_eq!(listed["total"], 5, "{listed}");
    let stats = json_with(&path, &["stats"]);
    assert_eq!(stats["pending"], 5, "{stats}");
    let per_shard: u64 = stats["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pending"].as_u64().unwrap())
        .sum();
    assert_eq!(per_shard, 5, "{stats}");
    let gauge = |want: &str| {
        wait_until(PATIENCE, &format!("the metrics file to say {want}"), || {
            fs::read_to_string(&metrics).is_ok_and(|t| t.lines().any(|l| l == want))
        })
    };
    gauge("delayqs_pending_jobs 5");
    gauge("delayqs_skipped_total 3");
    gauge("delayqs_failed_jobs 1");
    let id = listed["jobs"][0]["id"].as_str().unwrap().to_string();
    let out = delayqs_with(&path, &["cancel", &id[..8]]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(json_with(&path, &["pending"])["total"], 4);
    gauge("delayqs_pending_jobs 4");
}
