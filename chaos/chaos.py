#!/usr/bin/env python3
"""Chaos run driver (issue 7). Python stdlib only; started by chaos/run.sh.

usage: chaos.py DELAYQS_BINARY   (env: CHAOS_SHORT=1, CHAOS_SEED=n, CHAOS_KEEP=1,
                                  CHAOS_REPORT=path to write RELIABILITY.md)

Starts redis-server (appendonly, appendfsync always) on a free loopback port, the faulty
endpoint (chaos/endpoint.py) and three delayqs daemons; enqueues jobs, cancels some with
ZREM, adds past-due ones, SIGKILLs and restarts daemons and restarts Redis, all driven by
one printed seed; waits for the queue to drain, stops everything and checks the
properties of issue 7. Last line: "N passed, M failed"; exit status 1 if any failed.
"""
import datetime
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import redis_cluster as rc  # noqa: E402  (slot and shard rules, cluster on loopback)

HERE = os.path.dirname(os.path.abspath(__file__))
SHORT = os.environ.get("CHAOS_SHORT") == "1"
SEED = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 2**31))
KEEP = os.environ.get("CHAOS_KEEP") == "1"
REPORT = os.environ.get("CHAOS_REPORT")
# Sentinel mode: a master and a replica watched by 3 sentinels; instead of Redis
# restarts, failovers (SENTINEL FAILOVER, then a kill -9 of the master, in turn).
SENTINEL = os.environ.get("CHAOS_SENTINEL") == "1"
MASTER_NAME = "chaos"
# Cluster mode: 3 masters with a replica each, the queue in 3 shards on the 3 masters;
# instead of Redis restarts, CLUSTER FAILOVERs, kill -9s of masters (restarted: they
# rejoin as replicas) and slot migrations by redis-cli --cluster reshard.
CLUSTER = os.environ.get("CHAOS_CLUSTER") == "1"
SHARDS = 3 if CLUSTER else 1
MOVED_SLOTS = 64   # how many slots a reshard moves (redis-cli takes a source's lowest first)
# cluster-node-timeout: with 2000 ms, nodes busy with a reshard on this loaded 2-core
# machine were once marked failed and failed over without being killed.
NODE_TIMEOUT_MS = int(os.environ.get("CHAOS_NODE_TIMEOUT_MS") or 5000)

QUEUE, INFLIGHT, ATTEMPTS, FAIL = ("DelayQs:job_zqueue", "DelayQs:inflight",
                                   "DelayQs:attempts", "DelayQs:fail_job")
TIMEOUT_MS, LEASE_MS = 1000, 4000
REDIS_TIMEOUT_MS = 500
if CLUSTER:
    # The lease must outlast the claim calls of every shard before an outcome is
    # written: timeoutMs + (3 x shards + 2) x redisTimeoutMs + pollIntervalMs = 6.55 s.
    LEASE_MS = 8000
DAEMONS = 3
# Each shard's keys (queue, in-flight, attempts, failed); the cluster mode's names are
# chosen once the cluster stands (a tag whose shards sit on three masters).
SHARD_KEYS = [(QUEUE, INFLIGHT, ATTEMPTS, FAIL)]

if SHORT:
    P = dict(at_once=1000, spread=1800, past_due=300, window=45.0, cancels=150,
             kill_gap=(2.0, 5.0), redis_restarts=2, drain=90.0)
else:
    P = dict(at_once=5000, spread=14000, past_due=1500, window=150.0, cancels=600,
             kill_gap=(2.0, 6.0), redis_restarts=3, drain=180.0)

rng = random.Random(SEED)
procs = {}          # name -> Popen, everything we started and have not reaped
T0 = time.time()


def say(msg):
    print(f"[chaos {time.time() - T0:7.1f}s] {msg}", flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# ------------------------------------------------------------------ minimal RESP client
class RedisDown(Exception):
    pass


class Redis:
    def __init__(self, port):
        self.port, self.sock, self.f = port, None, None

    def close(self):
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = self.f = None

    def _conn(self):
        if self.sock is None:
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError as e:
                self.sock = None
                raise RedisDown(str(e))
            self.f = self.sock.makefile("rb")

    @staticmethod
    def _enc(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def _read(self):
        line = self.f.readline()
        if not line:
            raise RedisDown("connection closed")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return Exception(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            if len(data) < n + 2:
                raise RedisDown("short read")
            return data[:-2].decode()
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RedisDown(f"bad reply {line!r}")

    def pipeline(self, cmds):
        """Send all, read all. Raises RedisDown on any connection trouble."""
        self._conn()
        try:
            self.sock.sendall(b"".join(self._enc(c) for c in cmds))
            replies = [self._read() for _ in cmds]
        except (OSError, ValueError) as e:
            self.close()
            raise RedisDown(str(e))
        for r in replies:
            if isinstance(r, Exception):
                if SENTINEL and str(r).startswith(("READONLY", "LOADING", "MASTERDOWN")):
                    # an old master being demoted, or a new one loading: ask again
                    self.close()
                    raise RedisDown(str(r))
                raise r
        return replies

    def cmd(self, *args):
        return self.pipeline([args])[0]

    def retry(self, cmds, limit=30.0):
        """Idempotent commands only: retried until Redis answers (bounded)."""
        end = time.time() + limit
        while True:
            try:
                return self.pipeline(cmds)
            except RedisDown:
                if time.time() > end:
                    raise
                time.sleep(0.1)


class SentinelRedis(Redis):
    """The master the sentinels name, asked again on every new connection."""

    def __init__(self, sentinel_ports):
        super().__init__(None)
        self.sentinels = sentinel_ports

    def master_port(self):
        for sp in self.sentinels:
            try:
                s = Redis(sp)
                addr = s.cmd("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
                s.close()
                if addr:
                    return int(addr[1])
            except (RedisDown, Exception):
                continue
        raise RedisDown("no sentinel answered")

    def _conn(self):
        if self.sock is None:
            self.port = self.master_port()
        super()._conn()


class ClusterRedis:
    """A Redis Cluster client for the producer and the checker: each keyed command goes to
    the master of its key's slot (the map from CLUSTER SLOTS, read again after MOVED or
    any trouble), ASK is followed with ASKING, and a write can be followed by WAIT on the
    same connection, that is on the key's master. Trouble (a dead node, CLUSTERDOWN,
    TRYAGAIN, a write refused) raises RedisDown: callers retry what is idempotent."""

    def __init__(self, ports):
        self.ports = list(ports)     # every node, masters and replicas
        self.conns = {}              # port -> Redis
        self.slots = []              # (lo, hi, master port)

    def close(self):
        for c in self.conns.values():
            c.close()
        self.conns = {}
        self.slots = []

    def conn(self, port):
        if port not in self.conns:
            self.conns[port] = Redis(port)
        return self.conns[port]

    def refresh(self):
        for port in self.ports:
            try:
                slots = self.conn(port).cmd("CLUSTER", "SLOTS")
            except (RedisDown, Exception):
                continue
            if slots:
                self.slots = sorted((int(r[0]), int(r[1]), int(r[2][1])) for r in slots)
                return
        raise RedisDown("no cluster node answered CLUSTER SLOTS")

    def master_for(self, key):
        if not self.slots:
            self.refresh()
        slot = rc.keyslot(key)
        for lo, hi, port in self.slots:
            if lo <= slot <= hi:
                return port
        self.refresh()
        raise RedisDown(f"no master serves slot {slot}")

    def on_key(self, key, cmds, wait=False):
        """cmds (all on `key`'s slot) on its master, then `WAIT 1 1000` there when asked;
        the replies (the WAIT's last)."""
        port, asking = self.master_for(key), False
        for _ in range(5):
            c = self.conn(port)
            batch = ([["ASKING"]] if asking else []) + [list(x) for x in cmds]
            if wait:
                batch.append(["WAIT", 1, 1000])
            c._conn()
            try:
                c.sock.sendall(b"".join(c._enc(x) for x in batch))
                replies = [c._read() for _ in batch]
            except (OSError, ValueError, RedisDown) as e:
                c.close()
                self.slots = []
                raise RedisDown(str(e))
            if asking:
                replies = replies[1:]
            err = next((r for r in replies if isinstance(r, Exception)), None)
            if err is None:
                return replies
            text = str(err)
            if text.startswith("MOVED"):
                self.slots = []
                port, asking = int(text.split()[2].rsplit(":", 1)[1]), False
                continue
            if text.startswith("ASK"):
                port, asking = int(text.split()[2].rsplit(":", 1)[1]), True
                continue
            if text.startswith(("CLUSTERDOWN", "TRYAGAIN", "READONLY", "LOADING", "MASTERDOWN")):
                self.slots = []
                raise RedisDown(text)
            raise err
        raise RedisDown(f"too many redirections for {key}")

    def cmd(self, *args):
        """An unkeyed command (TIME) on any master."""
        return self.conn(self.master_for("{x}")).cmd(*args)

    def retry_on_key(self, key, cmds, limit=60.0, wait=False):
        end = time.time() + limit
        while True:
            try:
                return self.on_key(key, cmds, wait)
            except RedisDown:
                if time.time() > end:
                    raise
                time.sleep(0.1)


# ------------------------------------------------------------------ processes
def stop_proc(name, sig=signal.SIGTERM, wait=10.0):
    p = procs.pop(name, None)
    if p is None:
        return None
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
    return p.returncode


def cleanup():
    for name in list(procs):
        stop_proc(name, signal.SIGKILL if name.startswith("daemon") else signal.SIGTERM, 5.0)


def on_term(signum, frame):
    raise SystemExit(130)


class Cluster:
    def __init__(self, binary, tmp):
        self.binary, self.tmp = binary, tmp
        self.rport, self.eport = free_port(), free_port()
        self.rdir = os.path.join(tmp, "redis")
        os.makedirs(self.rdir)
        self.eplog = os.path.join(tmp, "endpoint.log")
        self.r = Redis(self.rport)
        self.config = os.path.join(tmp, "delayqs.json")
        target = {"redis": f"redis://127.0.0.1:{self.rport}/"}
        if SENTINEL:
            self.nodes = [self.rport, free_port()]   # node 0 starts as the master
            self.sports = [free_port() for _ in range(3)]
            self.r = SentinelRedis(self.sports)
            target = {"sentinel": {
                "sentinels": [f"redis://127.0.0.1:{p}/" for p in self.sports],
                "master": f"redis://{MASTER_NAME}/0"}}
        if CLUSTER:
            self.nodes = [rc.node_port() for _ in range(6)]
            self.r = ClusterRedis(self.nodes)
            self.reshard_proc = None
            return   # the config names the shards' keys: written once the cluster stands
        self.write_config(target)

    def write_config(self, target):
        with open(self.config, "w") as f:
            json.dump({**target, "concurrency": 16,
                       "timeoutMs": TIMEOUT_MS, "connectTimeoutMs": 500,
                       "leaseMs": LEASE_MS, "redisTimeoutMs": REDIS_TIMEOUT_MS, "retryBaseMs": 100,
                       "maxRetryNum": 8, "pollIntervalMs": 50, "hostFailureThreshold": 0,
                       "logLevel": "warn"}, f)

    def start_node(self, i, replica_of=None):
        d = os.path.join(self.rdir, f"node{i}")
        os.makedirs(d, exist_ok=True)
        log = open(os.path.join(self.tmp, f"node{i}.out"), "a")
        args = ["redis-server", "--port", str(self.nodes[i]), "--bind", "127.0.0.1",
                "--dir", d, "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                "--daemonize", "no", "--logfile", os.path.join(self.tmp, f"node{i}.log")]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        procs[f"node{i}"] = subprocess.Popen(args, stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL)
        wait_answer(self.nodes[i])

    def start_sentinels(self):
        for k, port in enumerate(self.sports):
            conf = os.path.join(self.tmp, f"sentinel{k}.conf")
            with open(conf, "w") as f:
                f.write(f"port {port}\nbind 127.0.0.1\ndir {self.tmp}\n"
                        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.nodes[0]} 2\n"
                        f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                        f"sentinel failover-timeout {MASTER_NAME} 4000\n")
            log = open(os.path.join(self.tmp, f"sentinel{k}.out"), "a")
            procs[f"sentinel{k}"] = subprocess.Popen(["redis-sentinel", conf], stdout=log,
                                                     stderr=log, stdin=subprocess.DEVNULL)
        end = time.time() + 60
        while time.time() < end:
            seen = 0
            for port in self.sports:
                try:
                    s = Redis(port)
                    reps = s.cmd("SENTINEL", "replicas", MASTER_NAME) or []
                    s.close()
                    if any("slave" in r[r.index("flags") + 1] for r in reps if "flags" in r):
                        seen += 1
                except (RedisDown, Exception):
                    pass
            if seen == len(self.sports) and self.replica_online():
                return
            time.sleep(0.1)
        raise RuntimeError("the sentinels did not see the replica in sync within 60 s")

    def replica_online(self):
        try:
            info = Redis(self.nodes[0]).cmd("INFO", "replication")
            return "state=online" in info
        except (RedisDown, Exception):
            return False

    def master_index(self):
        return self.nodes.index(self.r.master_port())

    def failover(self, kind):
        """A planned switch (SENTINEL FAILOVER) or a dead master (kill -9, restarted as
        a replica once the other is elected). Returns (t_down, t_up): from the switch's
        start until the new master takes writes."""
        old = self.master_index()
        new = 1 - old
        if kind == "kill":
            # Kill a master that has a replica in sync. After a planned failover,
            # Sentinel turns the old master into a replica only some seconds later
            # (about 10 here): a master killed before then takes everything written
            # since the switch with it. That is Redis's window, not delayqs's; the
            # README says how min-replicas-to-write closes it.
            end = time.time() + 60
            while time.time() < end:
                try:
                    info = Redis(self.nodes[new]).cmd("INFO", "replication")
                    if "master_link_status:up" in info:
                        break
                except (RedisDown, Exception):
                    pass
                time.sleep(0.1)
        t_down = time.time()
        if kind == "failover":
            Redis(self.sports[0]).cmd("SENTINEL", "FAILOVER", MASTER_NAME)
        else:
            p = procs.pop(f"node{old}")
            p.kill()
            p.wait(timeout=10)
        end = time.time() + 60
        while time.time() < end:
            try:
                if self.r.master_port() == self.nodes[new]:
                    role = Redis(self.nodes[new]).cmd("ROLE")
                    if role and role[0] == "master":
                        break
            except (RedisDown, Exception):
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"no new master within 60 s after a {kind}")
        t_up = time.time()
        self.r.close()
        if kind == "kill":
            self.start_node(old, replica_of=self.nodes[new])
        return t_down, t_up

    # ---------------------------------------------------------------- cluster mode
    def start_cluster_node(self, i):
        d = os.path.join(self.rdir, f"node{i}")
        os.makedirs(d, exist_ok=True)
        log = open(os.path.join(self.tmp, f"node{i}.out"), "a")
        args = rc.node_args(self.nodes[i], d, node_timeout_ms=NODE_TIMEOUT_MS, extra=[
            "--logfile", os.path.join(self.tmp, f"node{i}.log"), "--daemonize", "no"])
        procs[f"node{i}"] = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        wait_answer(self.nodes[i])

    def start_cluster(self):
        global SHARD_KEYS
        for attempt in range(3):
            for i in range(len(self.nodes)):
                self.start_cluster_node(i)
            try:
                ranges = rc.create(self.nodes, 1)
                break
            except RuntimeError as e:
                # Seen once on this shared machine: a new cluster whose view never settled.
                say(f"the cluster did not settle ({e}); starting another on new ports")
                for i in range(len(self.nodes)):
                    stop_proc(f"node{i}", signal.SIGKILL, 5.0)
                shutil.rmtree(self.rdir, ignore_errors=True)
                os.makedirs(self.rdir)
                self.nodes = [rc.node_port() for _ in range(6)]
                self.r = ClusterRedis(self.nodes)
        else:
            raise RuntimeError("no cluster settled in 3 tries")
        # A tag whose 3 shards sit on 3 masters, one of them in the lowest slots of the
        # range that starts at 0: redis-cli --cluster reshard moves a source's lowest
        # slots first, so that shard's slot moves, and moves back from a master whose
        # own range lies above it.
        self.tag, self.slots = rc.tag_on_masters(
            ranges, SHARDS, prefix="chaos", key_suffix=":q",
            extra=lambda slots: any(sl < MOVED_SLOTS for sl in slots))
        self.moving = next(i for i, sl in enumerate(self.slots) if sl < MOVED_SLOTS)
        base = ["{%s}%s" % (self.tag, x) for x in (":q", ":inflight", ":attempts", ":fail")]
        SHARD_KEYS = [tuple(rc.shard_name(k, i) for k in base) for i in range(SHARDS)]
        self.write_config({"cluster": [f"redis://127.0.0.1:{p}/" for p in self.nodes],
                           "key": base[0], "inflightKey": base[1], "attemptsKey": base[2],
                           "failKey": base[3], "shards": SHARDS})
        say(f"cluster: 3 masters, 3 replicas on {self.nodes}; tag {{{self.tag}}}: shard slots "
            f"{self.slots} on masters {[rc.master_of(ranges, sl) for sl in self.slots]}; "
            f"shard {self.moving}'s slot is the one resharded")

    def ranges(self):
        for port in self.nodes:
            try:
                return rc.slot_ranges(port)
            except (OSError, rc.Error):
                continue
        raise RuntimeError("no cluster node answers")

    def live_ports(self):
        return [self.nodes[i] for i in range(len(self.nodes)) if f"node{i}" in procs]

    def wait_stable(self, limit=60.0):
        """Every node up, agreeing on the masters, every master with its replica in sync
        and redis-cli --cluster check clean (what a reshard insists on)."""
        end = time.time() + limit
        why = None
        while time.time() < end:
            try:
                ranges = rc.wait_ok(self.live_ports(), 3, 1, timeout=max(1.0, end - time.time()))
                synced = all("master_link_status:up" in Redis(rp).cmd("INFO", "replication")
                             for _, _, _, _, reps in ranges for rp in reps)
                check = subprocess.run(["redis-cli", "--cluster", "check", f"127.0.0.1:{ranges[0][2]}"],
                                       capture_output=True, text=True, timeout=30)
                if synced and check.returncode == 0:
                    return ranges
                why = check.stdout[-400:] if check.returncode else "a replica not in sync"
            except (OSError, rc.Error, RedisDown, RuntimeError, Exception) as e:
                why = str(e)
            time.sleep(0.2)
        raise RuntimeError(f"the cluster did not settle within {limit:.0f} s: {why}")

    def cluster_event(self, kind):
        """kind: failover (CLUSTER FAILOVER on the replica of one shard's master), kill
        (kill -9 of one shard's master; restarted once its replica took over: it rejoins
        as a replica), reshard / reshard-back (redis-cli --cluster reshard of the moving
        shard's slot, started in the background). Returns (t_down, t_up or None, detail)."""
        ranges = self.wait_stable()
        if kind.startswith("reshard"):
            return self.start_reshard(kind, ranges)
        return self.switch_master(kind, ranges)

    def slot_owner(self, slot):
        return rc.master_of(self.ranges(), slot)

    def start_reshard(self, kind, ranges=None):
        """redis-cli --cluster reshard in the background; (t_start, None, detail)."""
        if ranges is None:
            ranges = self.wait_stable()
        if True:
            moving = self.slots[self.moving]
            src = next(r for r in ranges if r[0] <= moving <= r[1])
            if kind == "reshard":
                other = self.slots[(self.moving + 1) % SHARDS]
                dst = next(r for r in ranges if r[0] <= other <= r[1])
            else:   # back to the master of the rest of its first range
                dst = next(r for r in ranges if r[0] <= MOVED_SLOTS <= r[1])
            t = time.time()
            out = open(os.path.join(self.tmp, f"reshard-{int(t)}.out"), "w")
            self.reshard_proc = subprocess.Popen(
                ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{dst[2]}", "--cluster-from", src[3],
                 "--cluster-to", dst[3], "--cluster-slots", str(MOVED_SLOTS), "--cluster-yes"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            procs["reshard"] = self.reshard_proc
            self.reshard_dst = dst[2]
            return t, None, f"slot {moving} (shard {self.moving}) and {MOVED_SLOTS - 1} more: :{src[2]} -> :{dst[2]}"

    def switch_master(self, kind, ranges):
        shard = rng.randrange(SHARDS)
        r = next(x for x in ranges if x[0] <= self.slots[shard] <= x[1])
        master, replica = r[2], r[4][0]
        t_down = time.time()
        if kind == "failover":
            Redis(replica).cmd("CLUSTER", "FAILOVER")
        else:
            i = self.nodes.index(master)
            p = procs.pop(f"node{i}")
            p.kill()
            p.wait(timeout=10)
        end = time.time() + 60
        while time.time() < end:
            try:
                now_ranges = rc.slot_ranges(replica)
                if any(x[2] == replica for x in now_ranges) and all(x[2] != master for x in now_ranges) \
                        and Redis(replica).cmd("ROLE")[0] == "master":
                    break
            except (OSError, rc.Error, RedisDown, Exception):
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"no new master for shard {shard} within 60 s after a {kind}")
        t_up = time.time()
        self.r.close()
        if kind == "kill":
            self.start_cluster_node(self.nodes.index(master))
        return t_down, t_up, f"shard {shard}'s master :{master} -> :{replica}"

    def reshard_done(self):
        """None while a reshard runs; its exit code once it is over (reaped)."""
        p = self.reshard_proc
        if p is None or p.poll() is None:
            return None
        procs.pop("reshard", None)
        self.reshard_proc = None
        return p.returncode

    def start_redis(self):
        if CLUSTER:
            self.start_cluster()
            return
        if SENTINEL:
            self.start_node(0)
            self.start_node(1, replica_of=self.nodes[0])
            self.start_sentinels()
            return
        log = open(os.path.join(self.tmp, "redis.out"), "a")
        procs["redis"] = subprocess.Popen(
            ["redis-server", "--port", str(self.rport), "--bind", "127.0.0.1",
             "--dir", self.rdir, "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--daemonize", "no", "--protected-mode", "yes",
             "--logfile", os.path.join(self.tmp, "redis.log")],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        end = time.time() + 30
        while time.time() < end:
            try:
                if self.r.cmd("PING") == "PONG":
                    return
            except (RedisDown, Exception):
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer within 30 s")

    def stop_redis(self):
        if SENTINEL or CLUSTER:
            for name in [n for n in procs if n.startswith(("sentinel", "node"))]:
                stop_proc(name, signal.SIGTERM, 20.0)
            self.r.close()
            return 0
        rc = stop_proc("redis", signal.SIGTERM, 20.0)
        self.r.close()
        return rc

    def start_endpoint(self):
        late = TIMEOUT_MS / 1000 + 0.5
        procs["endpoint"] = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "endpoint.py"), str(self.eport),
             self.eplog, str(SEED), str(late)], stdin=subprocess.DEVNULL)
        end = time.time() + 15
        while time.time() < end:
            try:
                socket.create_connection(("127.0.0.1", self.eport), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("endpoint did not listen within 15 s")

    def start_daemon(self, i):
        log = open(os.path.join(self.tmp, f"daemon{i}.log"), "a")
        procs[f"daemon{i}"] = subprocess.Popen(
            [self.binary, "run", "--config", self.config],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)


def wait_answer(port):
    end = time.time() + 30
    while time.time() < end:
        try:
            r = Redis(port)
            if r.cmd("PING") == "PONG":
                r.close()
                return
        except (RedisDown, Exception):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"redis-server on {port} did not answer within 30 s")


def replicated(r):
    """In Sentinel mode, whether a replica has this connection's writes (the producer's
    side of a write that survives a failover); always true on a single Redis."""
    if not SENTINEL:
        return True
    try:
        return r.cmd("WAIT", 1, 1000) >= 1
    except (RedisDown, Exception):
        return False


def redis_time(r):
    if CLUSTER:
        end = time.time() + 60
        while True:
            try:
                return float(r.cmd("TIME")[0])
            except (RedisDown, Exception):
                if time.time() > end:
                    raise
                r.close()
                time.sleep(0.1)
    return float(r.retry([["TIME"]])[0][0])


def produce(r, items):
    """ZADD (score, member) pairs; returns the ids of jobs whose write no replica
    acknowledged (outside Sentinel and Cluster modes: none). On a cluster each job goes
    to the shard the producers' rule gives it, on that shard's master, and a WAIT 1 on
    the same connection follows each ZADD; a write that fails is sent again until it
    goes through."""
    if not CLUSTER:
        for i in range(0, len(items), 500):
            args = [QUEUE]
            for sc, m in items[i:i + 500]:
                args += [f"{sc:.3f}", m]
            r.retry([["ZADD", *args]])
        return set() if replicated(r) else {jid(m) for _, m in items}
    per = [[] for _ in range(SHARDS)]
    for sc, m in items:
        per[rc.shard_of(m, SHARDS)].append((sc, m))
    unacked = set()
    for shard, part in enumerate(per):
        key = SHARD_KEYS[shard][0]
        for i in range(0, len(part), 500):
            args = [key]
            for sc, m in part[i:i + 500]:
                args += [f"{sc:.3f}", m]
            replies = r.retry_on_key(key, [["ZADD", *args]], limit=120.0, wait=True)
            if replies[-1] < 1:
                unacked.update(jid(m) for _, m in part[i:i + 500])
    return unacked


def cancel(r, m):
    """ZREM of a waiting job: 1 removed, 0 not there, None unknown (no answer, or no
    replica acknowledged it, so a failover may undo it)."""
    if not CLUSTER:
        res = r.cmd("ZREM", QUEUE, m)
        return res if replicated(r) else None
    key = SHARD_KEYS[rc.shard_of(m, SHARDS)][0]
    res, acked = r.on_key(key, [["ZREM", key, m]], wait=True)
    return res if acked >= 1 else None


def counts(r):
    """(queue, in flight, attempts) summed over the shards."""
    tot = [0, 0, 0]
    for q, f, a, _ in SHARD_KEYS:
        if CLUSTER:
            got = [r.on_key(q, [["ZCARD", q]])[0], r.on_key(f, [["ZCARD", f]])[0],
                   r.on_key(a, [["HLEN", a]])[0]]
        else:
            got = r.pipeline([["ZCARD", q], ["ZCARD", f], ["HLEN", a]])
        tot = [x + y for x, y in zip(tot, got)]
    return tuple(tot)


def per_shard_leftovers(r):
    out = {}
    for q, f, a, _ in SHARD_KEYS:
        for key, cmd in ((q, ["ZRANGE", q, 0, 20, "WITHSCORES"]), (f, ["ZRANGE", f, 0, 20, "WITHSCORES"]),
                         (a, ["HSCAN", a, 0, "COUNT", 20])):
            got = r.retry_on_key(key, [cmd])[0] if CLUSTER else r.cmd(*cmd)
            if got and got != ["0", []]:
                out[key] = got
    return out


def fail_records(r):
    out = []
    for _, _, _, x in SHARD_KEYS:
        out += (r.retry_on_key(x, [["LRANGE", x, 0, -1]])[0] if CLUSTER
                else r.retry([["LRANGE", x, 0, -1]])[0])
    return out


# ------------------------------------------------------------------ the run
def member(n, port):
    if n % 200 == 7:   # 0.5% of jobs are refused for good by the endpoint: the fail path
        return json.dumps({"body": {"n": n, "seed": SEED}, "maxRetry": 1,
                           "callback": f"http://127.0.0.1:{port}/fail"}, separators=(",", ":"))
    return json.dumps({"body": {"n": n, "seed": SEED},
                       "callback": f"http://127.0.0.1:{port}/cb"}, separators=(",", ":"))


def jid(m):
    return hashlib.sha1(m.encode()).hexdigest()


def run(binary):
    load_before = open("/proc/loadavg").read().split()[:3]
    tmp = tempfile.mkdtemp(prefix="delayqs-chaos-")
    say(f"seed {SEED} ({'short' if SHORT else 'full'} mode), work dir {tmp}")
    c = Cluster(binary, tmp)
    c.start_redis()
    c.start_endpoint()
    r = c.r
    now0 = redis_time(r)

    jobs = {}        # id -> member
    n = 0
    at_once, spread = [], []
    for _ in range(P["at_once"]):
        m = member(n, c.eport); n += 1
        at_once.append((now0 - rng.uniform(0, 5), m))
    for _ in range(P["spread"]):
        m = member(n, c.eport); n += 1
        spread.append((now0 + rng.uniform(2, P["window"]), m))
    for batch in (at_once, spread):
        for _, m in batch:
            jobs[jid(m)] = m
        if produce(r, batch):
            raise RuntimeError("the replica did not acknowledge the initial jobs")
    say(f"enqueued {len(at_once)} due at once, {len(spread)} spread over "
        f"{P['window']:.0f} s")

    for i in range(DAEMONS):
        c.start_daemon(i)
    t_start = time.time()
    t_window_end = t_start + P["window"]

    # event schedule, all drawn from the seed
    kills, restarts, cancels, pastdue_added = [], [], [], 0
    redis_at = sorted(t_start + P["window"] * f
                      for f in (0.2, 0.5, 0.8)[:P["redis_restarts"]])
    redis_at = [t + rng.uniform(-3, 3) for t in redis_at]
    next_kill = t_start + rng.uniform(*P["kill_gap"])
    revive = {}                       # daemon index -> time to restart it
    pd_batches = 10
    pd_times = [t_start + P["window"] * (k + 0.5) / pd_batches for k in range(pd_batches)]
    cancel_gap = P["window"] / P["cancels"]
    next_cancel = t_start + 1.0
    spread_sorted = sorted(spread)
    cancelled_ids = set()
    maybe = set()   # ids whose producer write no replica acknowledged (Sentinel mode)
    # Cluster mode's events, at fixed shares of the window (a few seconds either way)
    if CLUSTER:
        plan = ([(0.2, "failover"), (0.45, "reshard"), (0.7, "kill")] if SHORT else
                [(0.12, "failover"), (0.27, "kill"), (0.42, "reshard"), (0.6, "kill"),
                 (0.74, "reshard-back"), (0.88, "failover")])
        cluster_at = [(t_start + P["window"] * f + rng.uniform(-3, 3), kind) for f, kind in plan]
        redis_at = []
    cluster_at = cluster_at if CLUSTER else []
    reshard_at, reshard_failures, cluster_log = None, [], []

    deadline = t_window_end + 5
    while time.time() < t_window_end:
        now = time.time()
        if time.time() > deadline:
            break
        # daemon kills
        if now >= next_kill:
            alive = [i for i in range(DAEMONS) if f"daemon{i}" in procs]
            if alive:
                i = rng.choice(alive)
                p = procs[f"daemon{i}"]
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=10)
                del procs[f"daemon{i}"]
                kills.append((time.time(), i))
                revive[i] = time.time() + rng.uniform(0.3, 2.0)
            next_kill = now + rng.uniform(*P["kill_gap"])
        for i, t in list(revive.items()):
            if now >= t:
                c.start_daemon(i)
                restarts.append((time.time(), i))
                del revive[i]
        # Cluster mode: a background reshard that has ended
        if CLUSTER and reshard_at is not None:
            code = c.reshard_done()
            if code is not None:
                e = cluster_log[-1]
                e["codes"].append(code)
                say(f"reshard done (exit {code}) in {time.time() - reshard_at[0]:.1f} s")
                if code != 0:
                    reshard_failures.append(code)
                    fix = subprocess.run(["redis-cli", "--cluster", "fix", f"127.0.0.1:{c.live_ports()[0]}",
                                          "--cluster-yes"], capture_output=True, text=True, timeout=120)
                    say(f"reshard failed: redis-cli --cluster fix exited {fix.returncode}")
                if code != 0 and len(e["codes"]) < 3:
                    _, _, detail = c.start_reshard(e["kind"])
                    say(f"reshard started again: {detail}")
                else:
                    kills[kills.index(reshard_at)] = (reshard_at[0], "redis", time.time(), "reshard")
                    e.update(up=time.time(), code=code,
                             moved=c.slot_owner(c.slots[c.moving]) == c.reshard_dst)
                    reshard_at = None
        # Redis restarts, or failovers in Sentinel mode, or Cluster mode's events
        if CLUSTER and cluster_at and now >= cluster_at[0][0]:
            if reshard_at is not None:
                pass   # one event at a time: wait for the reshard to end
            else:
                _, kind = cluster_at.pop(0)
                t_down, t_up, detail = c.cluster_event(kind)
                restarts.append((t_down, "redis"))
                if t_up is None:
                    reshard_at = (t_down, "redis", None, "reshard")
                    kills.append(reshard_at)
                    say(f"reshard started: {detail}")
                else:
                    kills.append((t_down, "redis", t_up, kind))
                    say(f"{kind}: {detail}, new master in {t_up - t_down:.1f} s")
                cluster_log.append(dict(t=t_down, kind=kind, detail=detail, up=t_up, code=None,
                                        codes=[], moved=None))
        elif redis_at and now >= redis_at[0]:
            redis_at.pop(0)
            if SENTINEL:
                kind = ("failover", "kill")[len([k for k in kills if k[1] == "redis"]) % 2]
                t_down, t_up = c.failover(kind)
                restarts.append((t_down, "redis"))
                kills.append((t_down, "redis", t_up, kind))
                say(f"{kind}: master {c.master_index()} elected in {t_up - t_down:.1f} s")
            else:
                t_down = time.time()
                code = c.stop_redis()
                time.sleep(rng.uniform(0.5, 2.5))
                c.start_redis()
                t_up = time.time()
                restarts.append((t_down, "redis"))
                kills.append((t_down, "redis", t_up, code))
                say(f"redis restarted (exit {code}), down {t_up - t_down:.1f} s")
        # past-due jobs added during the run
        if pd_times and now >= pd_times[0]:
            pd_times.pop(0)
            k = P["past_due"] // pd_batches
            tnow = redis_time(r)
            batch = []
            for _ in range(k):
                m = member(n, c.eport); n += 1
                batch.append((tnow - rng.uniform(0, 3600), m))
                jobs[jid(m)] = m
            maybe.update(produce(r, batch))   # a failover may have taken those away
            pastdue_added += k
        # cancellations: mostly jobs due later, some due about now (racing a claim)
        if now >= next_cancel:
            next_cancel = now + cancel_gap
            tnow = time.time() - t_start + now0
            if rng.random() < 0.8:
                cand = [x for x in spread_sorted[-len(spread_sorted) // 2:] if x[0] > tnow + 1]
            else:
                cand = [x for x in spread_sorted if tnow - 0.5 <= x[0] <= tnow + 0.3]
            cand = [x for x in cand if jid(x[1]) not in cancelled_ids]
            if cand:
                s, m = rng.choice(cand)
                t_sent = time.time()
                try:
                    res = cancel(r, m)
                except RedisDown:
                    res = None   # unknown: neither required delivered nor undelivered
                t_back = time.time()
                cancelled_ids.add(jid(m))
                cancels.append(dict(id=jid(m), sent=t_sent, back=t_back, res=res))
        time.sleep(0.02)

    for i, t in list(revive.items()):
        c.start_daemon(i)
        restarts.append((time.time(), i))
    revive.clear()
    if CLUSTER and reshard_at is not None:   # a reshard still running: let it finish
        end = time.time() + 120
        code = c.reshard_done()
        while code is None and time.time() < end:
            time.sleep(0.1)
            code = c.reshard_done()
        kills[kills.index(reshard_at)] = (reshard_at[0], "redis", time.time(), "reshard")
        cluster_log[-1]["codes"].append(code)
        cluster_log[-1].update(up=time.time(), code=code,
                               moved=c.slot_owner(c.slots[c.moving]) == c.reshard_dst)
        if code != 0:
            reshard_failures.append(code)
        say(f"reshard done (exit {code}) after the window")
        reshard_at = None
    if CLUSTER and cluster_at:
        say(f"window over before {len(cluster_at)} planned cluster events: {[k for _, k in cluster_at]}")
    daemon_kills = [k for k in kills if k[1] != "redis"]
    redis_restarts = [k for k in kills if k[1] == "redis"]
    say(f"window over: {len(daemon_kills)} daemon kills, {len(redis_restarts)} Redis "
        f"restarts, {len(cancels)} ZREMs, {pastdue_added} past-due jobs added; draining")

    # drain: bounded wait for the queue, in-flight set and attempts hash to empty
    drained = False
    end = time.time() + P["drain"]
    last = None
    while time.time() < end:
        try:
            q, fl, at = counts(r)
        except RedisDown:
            time.sleep(0.2); continue
        if (q, fl, at) != last:
            last = (q, fl, at)
        if q == 0 and fl == 0 and at == 0:
            drained = True
            break
        time.sleep(0.25)
    t_drained = time.time()
    say(f"drained={drained} queue/inflight/attempts={last}")
    leftover = {}
    if not drained:
        leftover = per_shard_leftovers(r)
    fails = fail_records(r)
    if os.environ.get("CHAOS_SABOTAGE") == "1":
        # checker self-test: pretend one delivered job's success was never recorded
        # and one failure record lost its reason; the run must then fail.
        say("CHAOS_SABOTAGE=1: hiding one delivery and one fail reason from the checker")
        sabotage = True
    else:
        sabotage = False

    # stop the daemons (SIGTERM, graceful), then endpoint and Redis
    for i in range(DAEMONS):
        stop_proc(f"daemon{i}", signal.SIGTERM, 15.0)
    time.sleep(0.5)
    stop_proc("endpoint", signal.SIGTERM, 5.0)
    c.stop_redis()
    duration = time.time() - t_start

    return analyse(dict(tmp=tmp, jobs=jobs, cancels=cancels, kills=daemon_kills,
                        redis=redis_restarts, fails=fails, drained=drained, last=last,
                        leftover=leftover, eplog=c.eplog, sabotage=sabotage, duration=duration,
                        drain_s=t_drained - t_window_end, pastdue=pastdue_added,
                        at_once=len(at_once), spread=len(spread), maybe=maybe,
                        cluster_log=cluster_log, reshard_failures=reshard_failures,
                        load_before=" ".join(load_before),
                        load_after=" ".join(open("/proc/loadavg").read().split()[:3]),
                        cluster=(dict(tag=c.tag, slots=c.slots, moving=c.moving, keys=SHARD_KEYS)
                                 if CLUSTER else None)))


def analyse(R):
    arrivals = {}     # seq -> (t, id, attempt, kind)
    successes = {}    # id -> [(t_arrival, t_done, attempt)]
    seen_first = {}   # id -> first arrival time
    kinds = {}
    with open(R["eplog"]) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if p[0] == "A":
                t = float(p[2])
                arrivals[p[1]] = (t, p[3], p[4], p[5])
                kinds[p[5]] = kinds.get(p[5], 0) + 1
                seen_first[p[3]] = min(seen_first.get(p[3], t), t)
            elif p[0] == "S":
                ta = arrivals[p[1]][0]
                successes.setdefault(p[3], []).append((ta, float(p[2]), p[4]))
    if R.get("sabotage"):
        victim = next(i for i in successes if i not in {x["id"] for x in R["cancels"]})
        del successes[victim]
        R["fails"] = ['{"Id":"x","attempts":1}'] + R["fails"]
    # Pauses in deliveries: the longest gap between two requests near each cluster event
    times = sorted(t for t, _, _, _ in arrivals.values())
    gaps = sorted(((b - a), a) for a, b in zip(times, times[1:]))
    R["longest_gap"] = gaps[-1] if gaps else (0, 0)
    for e in R.get("cluster_log") or []:
        lo, hi = e["t"] - 1.0, (e["up"] or e["t"]) + 5.0
        near = [g for g in gaps if lo <= g[1] <= hi]
        e["gap"] = max(near)[0] if near else 0.0
    R["log_errors"] = daemon_log_errors(R["tmp"])
    by_id_arrivals = {}
    for t, i, a, k in arrivals.values():
        by_id_arrivals.setdefault(i, []).append(t)

    fail_ok, fail_bad = {}, []
    for rec in R["fails"]:
        try:
            d = json.loads(rec)
            if d.get("error"):
                fail_ok[d.get("Id")] = d["error"]
            else:
                fail_bad.append(rec)
        except ValueError:
            fail_bad.append(rec)

    removed = {x["id"] for x in R["cancels"] if x["res"] in (1, None)}
    cancelled_first = [x for x in R["cancels"] if x["res"] == 1
                       and not (x["id"] in seen_first and seen_first[x["id"]] < x["sent"])]
    cancel_violations = [x["id"] for x in cancelled_first
                         if any(t > x["back"] for t in by_id_arrivals.get(x["id"], []))]
    must = [i for i in R["jobs"] if i not in removed and i not in R["maybe"]]
    R["maybe_arrived"] = sum(1 for i in R["maybe"] if i in successes or i in fail_ok)
    lost = [i for i in must if i not in successes and i not in fail_ok]
    unknown = [i for i in set(successes) | set(seen_first) if i not in R["jobs"]]
    dups = {i: s for i, s in successes.items() if len(s) > 1}
    dup_extra = sum(len(s) - 1 for s in dups.values())

    # a duplicate is explained when its first success was answered in a window in which a
    # daemon was killed or Redis was down (the outcome of that attempt could not be settled)
    # Cluster mode: a slot migration explains no duplicate (delayqs should lose nothing
    # and repeat nothing when a slot moves); only failovers and master kills do.
    reshard_iv = [(t, up) for t, _, up, kind in R["redis"] if kind == "reshard"]
    R["redis"] = [x for x in R["redis"] if x[3] != "reshard"]
    intervals = [(t - 0.05, t) for t, _ in R["kills"]] + [(t, up) for t, _, up, _ in R["redis"]]

    # After a failover the old master takes writes until Sentinel demotes it, and a
    # daemon learns of the switch within about a second of the sentinels: a claim or
    # an outcome written there in that time is lost, and the job runs again.
    after = 2.0 if SENTINEL or CLUSTER else 0.05

    def near(s, ivs):
        ta, td, _ = sorted(s)[0]
        return any(a <= td + 2.0 and b >= ta - after for a, b in ivs)
    kill_iv = intervals[:len(R["kills"])]
    redis_iv = intervals[len(R["kills"]):]
    unexplained = [i for i, s in dups.items() if not near(s, intervals)]
    R["dup_kill"] = sum(1 for s in dups.values() if near(s, kill_iv))
    R["dup_redis"] = sum(1 for s in dups.values() if near(s, redis_iv) and not near(s, kill_iv))
    R["dup_reshard"] = sum(1 for s in dups.values() if near(s, reshard_iv) and not near(s, intervals))
    expect_fail = {i for i, m in R["jobs"].items() if '/fail"' in m} - removed
    bad_fail = [i for i in expect_fail if i not in fail_ok]

    checks = [
        ("queue, in-flight set and attempts hash drained (bounded wait)", R["drained"]),
        ("zero lost: every job not cancelled was answered success or is in the fail list "
         "with a reason", not lost and not fail_bad),
        ("nothing left in flight", R["drained"] or (R["last"] and R["last"][1] == 0)),
        ("no job cancelled before its first attempt was ever requested",
         not cancel_violations),
        ("no request for a job that was never enqueued", not unknown),
        ("every job its endpoint refused for good is in the fail list with a reason",
         not bad_fail),
        ("every duplicate follows a daemon kill or a Redis restart", not unexplained),
    ]
    if CLUSTER:
        reshards = [e for e in R["cluster_log"] if e["kind"].startswith("reshard")]
        checks.append(("at least one reshard ran, and each moved the slot to its destination",
                       bool(reshards) and all(e["moved"] for e in reshards)))
    jobs_n = len(R["jobs"])
    print()
    print(f"seed {SEED}; jobs {jobs_n} ({R['at_once']} due at once, {R['spread']} spread, "
          f"{R['pastdue']} past-due added during the run)")
    if SENTINEL:
        print(f"Sentinel mode: failovers {[k[3] for k in R['redis']]}; producer writes no "
              f"replica acknowledged {len(R['maybe'])} (not counted as lost when absent)")
    if CLUSTER:
        print(f"longest pause between two requests: {R['longest_gap'][0]:.2f} s (at +{R['longest_gap'][1] - T0:.1f} s); "
              "near each cluster event: " + ", ".join(f"{e['kind']} {e['gap']:.2f} s" for e in R["cluster_log"]))
        for k, (n, first) in R["log_errors"].items():
            print(f"daemon log, Redis errors, {k}: {n}, e.g. {first[:220]}")
        print(f"Cluster mode: tag {{{R['cluster']['tag']}}}, shard slots {R['cluster']['slots']}; events "
              + "; ".join(f"{e['kind']} {e['detail']} ({(e['up'] or e['t']) - e['t']:.1f} s"
                          + (f", exit {e['code']}" if e['code'] is not None else "") + ")"
                          for e in R["cluster_log"])
              + f"; producer writes no replica acknowledged {len(R['maybe'])} ({R['maybe_arrived']} of them "
              f"delivered or failed for good all the same); duplicates after a "
              f"reshard only {R['dup_reshard']}")
    outages = "master failovers and kills" if CLUSTER else "failovers" if SENTINEL else "Redis restarts"
    print(f"daemon kills (SIGKILL) {len(R['kills'])}; {outages} {len(R['redis'])}; "
          f"duplicates {len(dups)} jobs ({dup_extra} extra successes), "
          f"{len(unexplained)} unexplained; after a kill {R['dup_kill']}, "
          f"after a Redis restart only {R['dup_redis']}")
    print(f"requests {len(arrivals)}; injected faults: " +
          ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    print(f"delivered {len(successes)}; failed for good {len(fail_ok)}; "
          f"cancelled (ZREM=1) {sum(1 for x in R['cancels'] if x['res'] == 1)} of "
          f"{len(R['cancels'])} ZREMs, {len(cancelled_first)} before their first attempt; "
          f"lost {len(lost)}")
    print(f"duration {R['duration']:.0f} s (drain {R['drain_s']:.0f} s)")
    if lost:
        print("LOST (first 10):", [(i, R["jobs"][i]) for i in lost[:10]])
    if fail_bad:
        print("fail records without a reason (first 3):", fail_bad[:3])
    if cancel_violations:
        print("cancelled but requested after the ZREM (first 10):", cancel_violations[:10])
    for i, sl in dups.items():
        if near(sl, redis_iv) and not near(sl, kill_iv):
            sl = sorted(sl)
            d = min(R["redis"], key=lambda x: abs(x[0] - sl[0][0]))
            print(f"duplicate around a {'master failover or kill' if CLUSTER else 'Redis restart'}: {i}: successes at "
                  + ", ".join(f"{ta - d[0]:+.2f}s(att {a})" for ta, _, a in sl)
                  + f" from Redis going down (down {d[2] - d[0]:.1f} s)")
    if unexplained:
        print("unexplained duplicates (first 10):", [(i, dups[i]) for i in unexplained[:10]])
    if R["leftover"]:
        print("left in Redis:", json.dumps(R["leftover"])[:3000])
    passed = sum(1 for _, ok in checks if ok)
    for name, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")

    if REPORT and not SHORT and not R.get("sabotage"):
        write_report(R, kinds, dups, dup_extra, unexplained, lost, fail_ok, cancelled_first,
                     checks, passed)
    if KEEP or passed != len(checks):
        print(f"logs kept in {R['tmp']}")
    else:
        shutil.rmtree(R["tmp"], ignore_errors=True)
    print(f"{passed} passed, {len(checks) - passed} failed")
    return 0 if passed == len(checks) else 1


ERROR_KINDS = [("ASK redirection returned as an error", "Ask:"), ("MOVED returned as an error", "Moved:"),
               ("CLUSTERDOWN", "ClusterDown"), ("TRYAGAIN", "TryAgain"),
               ("read timeout (redisTimeoutMs)", "os error 11"), ("connection closed", "unexpected end of file"),
               ("connection refused", "Connection refused")]


def daemon_log_errors(tmp):
    """ERROR lines of the daemons' logs about Redis, by kind, and the first of each."""
    out = {}
    for name in sorted(os.listdir(tmp)):
        if not (name.startswith("daemon") and name.endswith(".log")):
            continue
        for line in open(os.path.join(tmp, name), errors="replace"):
            if "[ERROR]" not in line or "Redis" not in line:
                continue
            kind = next((k for k, pat in ERROR_KINDS if pat in line), "other")
            n, first = out.get(kind, (0, line.strip()))
            out[kind] = (n + 1, first)
    return out


def write_report(R, kinds, dups, dup_extra, unexplained, lost, fail_ok, cancelled_first,
                 checks, passed):
    faults = {k: v for k, v in kinds.items() if k not in ("ok", "alwaysfail")}
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(faults.items()))
    checks_md = "\n".join(f"- {'PASS' if ok else 'FAIL'}: {n}" for n, ok in checks)
    text = f"""# Reliability

Figures of the last full chaos run (issue 7), written by `chaos/run.sh`.

| | |
| --- | --- |
| date | {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} |
| seed | {SEED} |
| jobs | {len(R['jobs'])} ({R['at_once']} due at once, {R['spread']} spread over {P['window']:.0f} s, {R['pastdue']} past-due added during the run) |
| daemons | 3 on one Redis (`appendonly yes`, `appendfsync always`) |
| daemon kills (SIGKILL, then restart) | {len(R['kills'])} |
| Redis restarts (SIGTERM, restart on the same dir) | {len(R['redis'])} |
| requests | {sum(kinds.values())} |
| cancelled with ZREM | {sum(1 for x in R['cancels'] if x['res'] == 1)} ({len(cancelled_first)} before their first attempt) |
| failed for good (in `DelayQs:fail_job`, with a reason) | {len(fail_ok)} |
| **lost** | **{len(lost)}** |
| duplicates | {len(dups)} jobs answered `success` more than once ({dup_extra} extra), {len(unexplained)} not following a kill or Redis restart ({R['dup_kill']} around a daemon kill, {R['dup_redis']} around a Redis restart only) |
| duration | {R['duration']:.0f} s (of which {R['drain_s']:.0f} s draining) |

Injected endpoint faults, by kind (each request draws one; the rest answer `success`):

| kind | requests |
| --- | --- |
{rows}

Besides these, {kinds.get('alwaysfail', 0)} requests went to the 0.5% of jobs whose
endpoint refuses them for good (HTTP 500 on every attempt, `"maxRetry":1`): the
fail-list path.

Kinds: `e500` HTTP 500; `timeout` no answer until {TIMEOUT_MS / 1000 + 0.5:g} s, past the
daemons' `timeoutMs` ({TIMEOUT_MS} ms); `reset` TCP RST instead of a response; `slow`
`success` trickled over ~0.4 s; `nosuccess` HTTP 200 without `success`.

**Duplicates and their cause.** A duplicate is a job whose endpoint answered `success`
twice. delayqs promises at-least-once: when a daemon is SIGKILLed after its request
reached the endpoint but before the outcome was settled in Redis, the job's lease
(`leaseMs` {LEASE_MS}) expires and another daemon delivers it again, with a higher
`X-Delayqs-Attempt`. The same happens around a Redis restart when the time from the
claim to the moment the daemon gets Redis back (the outage, plus up to its reconnect
backoff of 100 ms doubling) exceeds the lease, which is deliberately short here (4 s
against outages of 0.5 to 2.5 s plus shutdown): the daemon then logs "its lease ran out
before this outcome was written, so another attempt follows". Neither is a loss, and
both are what the README promises. The run counts a duplicate as explained when a kill or a Redis
outage falls between the first successful request's arrival and two seconds after its
answer.

Checks:

{checks_md}

{passed} passed, {len(checks) - passed} failed.

## Reproduce

```sh
CHAOS_SEED={SEED} chaos/run.sh
```

(`CHAOS_SHORT=1` for the CI variant of a few thousand jobs.) Timing is not replayed
exactly: the seed fixes the jobs, the schedule of kills, Redis restarts, cancels and
the endpoint's fault draws, but which daemon claims what depends on the scheduler.
"""
    if SENTINEL or CLUSTER:
        heading = SENTINEL_HEADING if SENTINEL else CLUSTER_HEADING
        section = (sentinel_section if SENTINEL else cluster_section)(
            R, kinds, dups, dup_extra, unexplained, lost, checks, passed)
        try:
            before = open(REPORT).read()
        except OSError:
            before = ""
        # Replace this mode's section, keep the others (each runs to the next "## ").
        parts = before.split("\n## ")
        kept = [parts[0].rstrip()] + ["## " + x.rstrip() for x in parts[1:]
                                     if not ("## " + x).startswith(heading)]
        text = "\n\n".join(k for k in kept if k) + "\n\n" + section
    else:
        # The main run rewrites its part and keeps the other modes' sections.
        try:
            before = open(REPORT).read()
        except OSError:
            before = ""
        others = ["## " + x.rstrip() for x in before.split("\n## ")[1:]
                  if ("## " + x).startswith((SENTINEL_HEADING, CLUSTER_HEADING))]
        if others:
            text = text.rstrip() + "\n\n" + "\n\n".join(others) + "\n"
    with open(REPORT, "w") as f:
        f.write(text)
    print(f"wrote {REPORT}")


SENTINEL_HEADING = "## Sentinel mode"
CLUSTER_HEADING = "## Cluster mode"


def cluster_section(R, kinds, dups, dup_extra, unexplained, lost, checks, passed):
    checks_md = "\n".join(f"- {'PASS' if ok else 'FAIL'}: {n}" for n, ok in checks)
    cl = R["cluster"]
    t0 = min([e["t"] for e in R["cluster_log"]] or [0])
    def took(e):
        out = f"{(e['up'] or e['t']) - e['t']:.1f} s"
        if e["codes"]:
            out += " (redis-cli exit " + ", then ".join(str(c) for c in e["codes"]) + ")"
        return out
    events = "\n".join(
        f"| +{e['t'] - t0:.0f} s | {e['kind']} | {e['detail']} | {took(e)} | {e['gap']:.2f} s |"
        for e in R["cluster_log"])
    def short(line):   # the node list of "Redis at cluster <URLs> failed:" left out
        return re.sub(r"Redis at cluster (redis://[^ ,]+/?(, )?)+", "Redis at cluster <its nodes>",
                      line)[:200].replace("|", "/")
    errors = "\n".join(f"| {k} | {n} | `{short(first)}` |"
                       for k, (n, first) in sorted(R["log_errors"].items(), key=lambda x: -x[1][0]))
    shards = ", ".join(f"`{k[0]}` (slot {sl})" for k, sl in zip(cl["keys"], cl["slots"]))
    kills = [e for e in R["cluster_log"] if e["kind"] == "kill"]
    stall_note = ""
    if kills and all(e["gap"] >= 0.8 * (e["up"] - e["t"]) for e in kills):
        stall_note = (
            " After each `kill -9` of a master, no request at all went out until its replica"
            " had been elected: the two shards on live masters waited too. Each daemon claims"
            " every shard in one round over one cluster connection, and a shard whose master"
            " does not answer fails the round, so the daemon backs off and claims nothing from"
            " any shard (nothing is lost; jobs on the live masters are late by the outage).")
    redirect_note = ""
    if any(k.startswith(("ASK", "MOVED")) for k in R["log_errors"]):
        redirect_note = (
            "\n\nMOVED and ASK come back to the daemon as errors: its cluster client is built with"
            " `retries(0)`, and in redis-rs that also turns off following redirections. Each one"
            " costs a failed round, a new connection (which reads the slot map again) and the"
            " first step of the backoff; the pauses near failovers and reshards above show what"
            " that came to.")
    load = (f"\n\nThe machine (2 cores) was shared with other work: load average {R['load_before']} at"
            f" the start, {R['load_after']} at the end.")
    return f"""{CLUSTER_HEADING}

`CHAOS_CLUSTER=1 chaos/run.sh` (`make chaos-cluster`): the same run on a Redis Cluster of
3 masters with a replica each (`redis-server --cluster-enabled yes`,
`cluster-node-timeout {NODE_TIMEOUT_MS}`, no persistence: a restarted node resyncs from its master),
joined by `redis-cli --cluster create --cluster-replicas 1`. The queue is `shards: 3`:
{shards}, one shard on each master at the start. The three daemons name all six nodes.
Instead of Redis restarts: `CLUSTER FAILOVER`s (on a shard's replica), `kill -9`s of a
shard's master (its replica is elected; the killed node is started again on its
`nodes.conf` and rejoins as a replica), and `redis-cli --cluster reshard` of {MOVED_SLOTS} slots
that include shard {cl['moving']}'s, to another master and later back, while jobs flow and daemons
are killed. Each event waits until the cluster is whole again (every node up, replicas in
sync, `redis-cli --cluster check` clean). The producer follows the shard rule
(`int(sha1(member)[:8], 16) % 3`), sends each ZADD to the key's master and `WAIT 1 1000`
on that same connection (so on the key's slot master), and sends a write again when it
fails. A write no replica acknowledged may be lost with its master, which is outside
delayqs: such a job is not counted as lost when it never arrives. The daemons run
without `waitReplicas` (as in the Sentinel mode), `leaseMs` {LEASE_MS} (the lease floor
grows with the shards: `timeoutMs` + (3 × shards + 2) × `redisTimeoutMs` + `pollIntervalMs`).

| | |
| --- | --- |
| date | {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} |
| seed | {SEED} |
| jobs | {len(R['jobs'])} ({R['at_once']} due at once, {R['spread']} spread over {P['window']:.0f} s, {R['pastdue']} past-due added during the run; {len(R['maybe'])} whose producer write no replica acknowledged within 1 s, of which {R['maybe_arrived']} arrived all the same) |
| daemon kills (SIGKILL, then restart) | {len(R['kills'])} |
| cluster events | {len(R['cluster_log'])}: {', '.join(e['kind'] for e in R['cluster_log'])} |
| requests | {sum(kinds.values())} |
| failed for good (in the shards' fail lists, with a reason) | {sum(1 for _ in R['fails'])} records |
| **lost** | **{len(lost)}** |
| stranded (left in any shard's queue, in-flight set or attempts hash after the drain) | {'none' if R['drained'] else R['last']} |
| duplicates | {len(dups)} jobs answered `success` more than once ({dup_extra} extra), {len(unexplained)} not following a kill or a failover ({R['dup_kill']} around a daemon kill, {R['dup_redis']} around a master failover or kill only, {R['dup_reshard']} around a reshard only) |
| duration | {R['duration']:.0f} s (of which {R['drain_s']:.0f} s draining) |

| when | event | what | from its start to a new master taking writes / to the reshard's end | longest pause between two requests, from 1 s before to 5 s after |
| --- | --- | --- | --- | --- |
{events}

The longest pause between two requests over the whole run: {R['longest_gap'][0]:.2f} s. (Jobs fall
due about {R['spread'] / P['window']:.0f} a second, so a pause much above 0.1 s means no daemon delivered
from any shard.){stall_note}

Redis errors in the daemons' logs (`[ERROR]` lines, all three daemons, by kind; a daemon logs
the first failure of a run of them, and a failing command each time):

| kind | lines | first |
| --- | --- | --- |
{errors}{redirect_note}

Checks:

{checks_md}

{passed} passed, {len(checks) - passed} failed.

Reproduce: `CHAOS_CLUSTER=1 CHAOS_SEED={SEED} chaos/run.sh`.{load}
"""


def sentinel_section(R, kinds, dups, dup_extra, unexplained, lost, checks, passed):
    checks_md = "\n".join(f"- {'PASS' if ok else 'FAIL'}: {n}" for n, ok in checks)
    switches = "\n".join(
        f"| {kind} | {up - t:.1f} s |" for t, _, up, kind in R["redis"])
    return f"""{SENTINEL_HEADING}

`CHAOS_SENTINEL=1 make chaos`: the same run on a master and a replica watched by three
sentinels (`down-after-milliseconds 1000`), with failovers instead of Redis restarts, in
turn a `SENTINEL FAILOVER` and a `kill -9` of the master (restarted as a replica of the
new one). The daemons name the sentinels, not a Redis. The producer waits for a replica
after each write (`WAIT 1 1000`); a write no replica acknowledged in time may be lost
with its master, which is outside delayqs, so such a job is not counted as lost when it
never arrives.

| | |
| --- | --- |
| date | {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} |
| seed | {SEED} |
| jobs | {len(R['jobs'])} ({len(R['maybe'])} whose producer write no replica acknowledged) |
| daemon kills (SIGKILL, then restart) | {len(R['kills'])} |
| requests | {sum(kinds.values())} |
| **lost** | **{len(lost)}** |
| duplicates | {len(dups)} jobs answered `success` more than once ({dup_extra} extra), {len(unexplained)} not following a kill or a failover ({R['dup_kill']} around a daemon kill, {R['dup_redis']} around a failover only) |
| duration | {R['duration']:.0f} s (of which {R['drain_s']:.0f} s draining) |

| switch | from its start to a master taking writes |
| --- | --- |
{switches}

Checks:

{checks_md}

{passed} passed, {len(checks) - passed} failed.

Reproduce: `CHAOS_SENTINEL=1 CHAOS_SEED={SEED} chaos/run.sh`.
"""


def main():
    signal.signal(signal.SIGTERM, on_term)
    binary = sys.argv[1]
    try:
        rc = run(binary)
    except SystemExit:
        cleanup()
        raise
    except BaseException:
        cleanup()
        raise
    cleanup()
    sys.exit(rc)


if __name__ == "__main__":
    main()
