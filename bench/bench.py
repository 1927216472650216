#!/usr/bin/env python3
"""The delayqs benchmark (issue 6): scenarios, figures and BENCHMARKS.md.

Run through bench/run.sh, which builds delayqs and the endpoint, starts a private
redis-server and the endpoint on loopback, calls this script, and cleans up. This
script starts and stops delayqs itself (a fresh process for every run, so each run's
peak RSS is its own), and writes every pid it starts to --pidfile so that run.sh's
EXIT trap can end them whatever happens here.

Standard library only: a minimal RESP client talks to Redis.
"""

import argparse
import datetime
import hashlib
import json
import math
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import redis_cluster as rc  # noqa: E402  (the slot and shard rules, a cluster on loopback)

QUEUE = "DelayQs:job_zqueue"
INFLIGHT = "DelayQs:inflight"
ATTEMPTS = "DelayQs:attempts"
FAILED = "DelayQs:fail_job"
STAGING = "bench:staging"
TICK = os.sysconf("SC_CLK_TCK")
SCENARIOS = ("ceiling_http", "ceiling_claim", "burst", "burst_replicated", "steady", "idle", "backlog",
             "burst_3daemons", "burst_cluster", "shards")
# Tagged names for shards > 1 (shard i: the tag {DelayQs} made {DelayQs:i}).
TAGGED = ("{DelayQs}:job_zqueue", "{DelayQs}:inflight", "{DelayQs}:attempts", "{DelayQs}:fail_job")


# --------------------------------------------------------------------------- Redis


class RedisError(Exception):
    pass


class Redis:
    """Just enough RESP2 for the benchmark: calls and pipelines."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb", buffering=1 << 16)

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            elif not isinstance(a, bytes):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def read(self):
        line = self.f.readline()
        if not line:
            raise RedisError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            return self.f.read(n + 2)[:-2]
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self.read() for _ in range(n)]
        raise RedisError(f"bad reply {line!r}")

    def call(self, *args):
        self.sock.sendall(self.encode(args))
        reply = self.read()
        if isinstance(reply, RedisError):
            raise reply
        return reply

    def pipeline(self, commands, chunk=100):
        for i in range(0, len(commands), chunk):
            part = commands[i : i + chunk]
            self.sock.sendall(b"".join(self.encode(c) for c in part))
            for _ in part:
                reply = self.read()
                if isinstance(reply, RedisError):
                    raise reply

    def info(self, section):
        text = self.call("INFO", section).decode()
        return dict(
            line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#")
        )


def s(x):
    return x.decode() if isinstance(x, bytes) else x


# ------------------------------------------------------------------------ helpers


def now():
    return time.time()


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def percentile(sorted_xs, p):
    """Nearest rank, as the endpoint computes it."""
    if not sorted_xs:
        return None
    rank = math.ceil(p / 100 * len(sorted_xs))
    return sorted_xs[max(1, min(len(sorted_xs), rank)) - 1]


def proc_cpu(pid):
    """user + system CPU seconds of a live process (clock-tick resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_mem(pid):
    """(VmRSS, VmHWM) in kB."""
    rss = hwm = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def machine_busy():
    """CPU seconds all processes on the machine have used since boot (every core)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: busy = all but idle, iowait, steal
    return (sum(fields[:7]) - fields[3] - fields[4]) / TICK


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def member(n, due, callback):
    # delayqs re-encodes the body with sorted keys; the endpoint parses either order.
    return '{"body":{"n":%d,"due":%.3f},"callback":"%s","sign":"b"}' % (n, due, callback)


def delayqs_figures(a, b, jobs):
    """CPU and memory of the delayqs process between two snaps, over `jobs` jobs."""
    cpu = b["dq_cpu"] - a["dq_cpu"]
    return {
        "dq_cpu_s": cpu,
        "cpu_s_per_1k": cpu / (jobs / 1000) if jobs else None,
        "hwm_kb": b["hwm_kb"],
        "rss_kb": b["rss_kb"],
    }


def zadd_commands(key, items, per_command=500):
    """items: (score, member) pairs -> ZADD commands of `per_command` pairs each."""
    commands = []
    for i in range(0, len(items), per_command):
        cmd = ["ZADD", key]
        for score, m in items[i : i + per_command]:
            cmd.append("%.3f" % score)
            cmd.append(m)
        commands.append(cmd)
    return commands


class Bench:
    def __init__(self, args):
        self.a = args
        self.redis_port = args.redis_port
        self.endpoint = f"http://127.0.0.1:{args.endpoint_port}"
        self.callback = f"{self.endpoint}/cb"
        self.r = Redis(args.redis_port)
        self.commands = {}
        self.notes = []
        self.conc = args.concurrency
        self.runs = args.runs
        # The daemon runs claim.lua with ids_after.lua in front (store/connection.rs,
        # `concat!`): that is the text whose SHA-1 its EVALSHA names.
        prelude = os.path.join(os.path.dirname(args.claim_script), "ids_after.lua")
        self.claim_src = (open(prelude, "rb").read() if os.path.exists(prelude) else b"") + open(
            args.claim_script, "rb"
        ).read()
        self.claim_sha = hashlib.sha1(self.claim_src).hexdigest()
        self.config_path = os.path.join(args.workdir, "delayqs.json")
        self.config = {
            "redis": f"redis://127.0.0.1:{args.redis_port}/",
            "concurrency": self.conc,
            "logLevel": "info",
        }
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=2)
        self.commands["delayqs"] = shlex.join([args.delayqs, "run", "--config", self.config_path])
        self.started = now()
        self.dq = None
        self.dq_runs = 0
        self.live = {}  # pid -> Popen: other daemons and cluster nodes this script runs now

    # ---------------------------------------------------------------- processes

    def remember_pid(self, pid):
        with open(self.a.pidfile, "a") as f:
            f.write(f"{pid}\n")

    def start_delayqs(self):
        self.dq_runs += 1
        log_path = os.path.join(self.a.workdir, f"delayqs-{self.dq_runs}.log")
        log = open(log_path, "wb")
        p = subprocess.Popen(
            [self.a.delayqs, "run", "--config", self.config_path],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.remember_pid(p.pid)
        self.dq = p
        self.dq_log = log_path
        deadline = now() + 10
        while now() < deadline:
            if p.poll() is not None:
                self.dq = None
                raise SystemExit(
                    f"delayqs exited with {p.returncode} at start:\n" + open(log_path).read()
                )
            if b"running" in open(log_path, "rb").read():
                break
            time.sleep(0.02)
        else:
            raise SystemExit(f"delayqs did not log that it is running within 10 s:\n" + open(log_path).read())
        time.sleep(0.3)  # first round: key checks, first claim
        return p

    def stop_delayqs(self):
        """SIGTERM, wait (15 s at most, then SIGKILL). Returns (exit code, CPU s of life)."""
        p, self.dq = self.dq, None
        if p is None:
            return None, None
        p.send_signal(signal.SIGTERM)
        deadline = now() + 15
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                break
            if now() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                p.returncode = os.waitstatus_to_exitcode(status)
                self.notes.append("delayqs did not stop within 15 s of SIGTERM and was killed")
                break
            time.sleep(0.02)
        if p.returncode != 0:
            self.notes.append(f"delayqs exited with {p.returncode} after SIGTERM")
        return p.returncode, ru.ru_utime + ru.ru_stime

    def snap(self):
        """CPU seconds of delayqs, redis-server and the endpoint, and delayqs memory."""
        out = {
            "t": now(),
            "redis_cpu": proc_cpu(self.a.redis_pid),
            "endpoint_cpu": proc_cpu(self.a.endpoint_pid),
        }
        if self.dq is not None:
            out["dq_cpu"] = proc_cpu(self.dq.pid)
            out["rss_kb"], out["hwm_kb"] = proc_mem(self.dq.pid)
        return out

    def ours(self):
        """CPU seconds of everything this benchmark runs: redis-server, the endpoint,
        this script, and its children (delayqs, wrk, redis-benchmark) once reaped."""
        t = os.times()
        live = proc_cpu(self.dq.pid) if self.dq is not None else 0
        for pid in list(self.live):
            try:
                live += proc_cpu(pid)
            except OSError:
                pass
        return (proc_cpu(self.a.redis_pid) + proc_cpu(self.a.endpoint_pid) + t.user + t.system
                + t.children_user + t.children_system + live)

    def wait_for_quiet(self):
        """Other work on two cores skews every figure: wait (--quiet-wait s at most)
        until the machine is mostly idle, and say so when it does not get there."""
        cores = os.cpu_count() or 1
        deadline = now() + self.a.quiet_wait
        while True:
            m0, o0, t0 = machine_busy(), self.ours(), now()
            time.sleep(1)
            other = (machine_busy() - m0 - (self.ours() - o0)) / (now() - t0)
            if other < 0.25 * cores or now() > deadline:
                break
            print(f"[bench] other processes use {100 * other:.0f} % of a core; waiting for a quieter machine",
                  file=sys.stderr, flush=True)
        if other >= 0.25 * cores:
            self.notes.append(f"the machine was busy when the benchmark started: other processes used "
                              f"{100 * other:.0f} % of a core")
        return 100 * other

    # ---------------------------------------------------------------- endpoint

    def ep(self, path):
        with urllib.request.urlopen(self.endpoint + path, timeout=30) as resp:
            return resp.read().decode()

    def ep_report(self):
        return json.loads(self.ep("/report"))

    def ep_count(self):
        return int(self.ep("/count").split()[0])

    def wait_count(self, target, timeout, every=0.05):
        deadline = now() + timeout
        n = self.ep_count()
        while n < target and now() < deadline:
            time.sleep(every)
            n = self.ep_count()
        return n

    # ---------------------------------------------------------------- redis

    def fresh_redis(self):
        self.r.call("FLUSHALL")
        self.r.call("CONFIG", "SET", "slowlog-log-slower-than", "-1")

    def slowlog_on(self):
        self.r.call("CONFIG", "SET", "slowlog-max-len", "200000")
        self.r.call("CONFIG", "SET", "slowlog-log-slower-than", "0")
        self.r.call("SLOWLOG", "RESET")

    def slowlog_script_times(self):
        """Server-side µs of each claim.lua call since slowlog_on()."""
        entries = self.r.call("SLOWLOG", "GET", "-1")
        self.r.call("CONFIG", "SET", "slowlog-log-slower-than", "-1")
        claim = []
        head = self.claim_src[:100]
        for e in entries:
            us, argv = e[2], e[3]
            if not argv:
                continue
            cmd = s(argv[0]).upper()
            first = argv[1] if len(argv) > 1 else b""
            if cmd == "EVALSHA" and s(first) == self.claim_sha or cmd == "EVAL" and first.startswith(head):
                claim.append(us)
        return sorted(claim)

    def evalsha_stats(self):
        st = self.r.info("commandstats").get("cmdstat_evalsha", "")
        kv = dict(p.split("=") for p in st.split(",")) if st else {}
        return int(kv.get("calls", 0)), float(kv.get("usec", 0))

    def load(self, key, items):
        self.r.pipeline(zadd_commands(key, items))

    def leftovers(self):
        return (
            self.r.call("ZCARD", QUEUE),
            self.r.call("ZCARD", INFLIGHT),
            self.r.call("HLEN", ATTEMPTS),
            self.r.call("LLEN", FAILED),
        )

    # ================================================================ scenarios

    def ceiling_http(self):
        job = json.dumps({"due": 1764000000.125, "n": 123}, separators=(",", ":"))
        form = "body=" + urllib.parse.quote(job, safe="") + "&sign=b"
        lua = os.path.join(self.a.workdir, "post.lua")
        with open(lua, "w") as f:
            f.write(
                "-- The same request delayqs sends: method, headers, form body.\n"
                'wrk.method = "POST"\n'
                f"wrk.body = {json.dumps(form)}\n"
                'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
                'wrk.headers["User-Agent"] = "delayqs/0.1.0"\n'
                'wrk.headers["X-Delayqs-Job-Id"] = "ca364d367b2ab555b9bf4e95ce67424232c73376"\n'
                'wrk.headers["X-Delayqs-Attempt"] = "1"\n'
            )
        cmd = ["wrk", "-t2", f"-c{self.conc}", f"-d{self.a.wrk_seconds}s", "-s", lua, self.callback]
        self.commands["wrk"] = shlex.join(cmd)
        self.commands["wrk script"] = open(lua).read()
        rates = []
        for _ in range(self.runs):
            self.ep("/reset")
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=self.a.wrk_seconds + 30)
            m = re.search(r"Requests/sec:\s*([\d.]+)", out.stdout)
            if not m:
                raise SystemExit("wrk failed:\n" + out.stdout + out.stderr)
            rates.append(float(m.group(1)))
        self.ep("/reset")
        return {"rps_runs": rates, "rps": median(rates)}

    def ceiling_claim(self):
        limit = self.conc
        calls = self.a.claim_calls
        per_run_jobs = calls * limit
        # claim.lua's interface: KEYS queue, inflight, attempts, failed; ARGV limit,
        # lease ms, token prefix, recover limit, maxJobBytes.
        cmd_tail = ["EVALSHA", self.claim_sha, "4", QUEUE, INFLIGHT, ATTEMPTS, FAILED,
                    str(limit), "65000", "bench", "100", str(1 << 20)]
        cmd = ["redis-benchmark", "-p", str(self.redis_port), "-c", "1", "-n", str(calls), "-q", "--csv"] + cmd_tail
        self.commands["redis-benchmark"] = shlex.join(cmd)
        rps, usec = [], []
        for _ in range(self.runs):
            self.fresh_redis()
            sha = s(self.r.call("SCRIPT", "LOAD", self.claim_src))
            assert sha == self.claim_sha, (sha, self.claim_sha)
            due = now() - 10
            self.load(QUEUE, [(due, member(i, due, self.callback)) for i in range(per_run_jobs + 1000)])
            self.r.call("CONFIG", "RESETSTAT")
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            rows = [l for l in out.stdout.splitlines() if l.startswith('"EVALSHA')]
            if not rows:
                raise SystemExit("redis-benchmark failed:\n" + out.stdout + out.stderr)
            claimed = self.r.call("ZCARD", INFLIGHT)
            if claimed != per_run_jobs:
                self.notes.append(f"claim ceiling: expected {per_run_jobs} claimed, found {claimed}")
            rps.append(float(rows[-1].split(",")[1].strip('"')))
            c, u = self.evalsha_stats()
            usec.append(u / c if c else None)
        self.fresh_redis()
        return {
            "calls_runs": rps,
            "calls_per_s": median(rps),
            "jobs_per_s": median(rps) * limit,
            "usec_per_call": median(usec),
            "limit": limit,
        }

    def burst(self):
        n_jobs = self.a.burst_jobs
        runs = []
        for _ in range(self.a.burst_runs):
            self.fresh_redis()
            self.ep("/reset")
            due = now() - 1
            self.load(STAGING, [(due, member(i, due, self.callback)) for i in range(n_jobs)])
            self.start_delayqs()
            self.r.call("CONFIG", "RESETSTAT")
            self.slowlog_on()
            a = self.snap()
            self.r.call("RENAME", STAGING, QUEUE)  # every job due at once
            got = self.wait_count(n_jobs, timeout=self.a.burst_timeout, every=0.05)
            b = self.snap()
            calls, usec = self.evalsha_stats()
            claim = self.slowlog_script_times()
            rep = self.ep_report()
            code, _ = self.stop_delayqs()
            left = self.leftovers()
            span = rep["last_arrival"] - rep["first_arrival"]
            wall = b["t"] - a["t"]
            count = rep["count"]
            runs.append({
                "delivered": count,
                "duplicates": rep["duplicates"],
                "connections": rep["connections"],
                "jobs_per_s": (count - 1) / span if span > 0 else None,
                "wall_s": wall,
                **delayqs_figures(a, b, count),
                "dq_cpu_pct": 100 * (b["dq_cpu"] - a["dq_cpu"]) / wall,
                "redis_cpu_pct": 100 * (b["redis_cpu"] - a["redis_cpu"]) / wall,
                "endpoint_cpu_pct": 100 * (b["endpoint_cpu"] - a["endpoint_cpu"]) / wall,
                "evalsha_calls": calls,
                "evalsha_per_job": calls / count if count else None,
                "claim_calls": len(claim),
                "jobs_per_claim": count / len(claim) if claim else None,
                "claim_us_p50": percentile(claim, 50),
                "redis_usec_per_job": usec / count if count else None,
                "exit": code,
                "left": left,
            })
            if got < n_jobs:
                self.notes.append(f"burst: only {got} of {n_jobs} delivered within {self.a.burst_timeout} s")
        self.fresh_redis()
        return runs

    def burst_replicated(self):
        """The burst again, with one replica in sync and `waitReplicas: 1`: what waiting
        for replication after each claim call costs."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        replica = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--replicaof", "127.0.0.1", str(self.redis_port),
             "--dir", self.a.workdir, "--dbfilename", f"replica-{port}.rdb"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self.remember_pid(replica.pid)
        saved = dict(self.config)
        try:
            deadline = now() + 30
            while not any("state=online" in v for v in self.r.info("replication").values()):
                if now() > deadline:
                    raise SystemExit("the bench replica did not come in sync within 30 s")
                time.sleep(0.05)
            self.config.update({"waitReplicas": 1, "waitReplicasTimeoutMs": 100})
            with open(self.config_path, "w") as f:
                json.dump(self.config, f, indent=2)
            return self.burst()
        finally:
            self.config.clear()
            self.config.update(saved)
            with open(self.config_path, "w") as f:
                json.dump(self.config, f, indent=2)
            replica.terminate()
            replica.wait()

    def steady(self):
        n_jobs, over = self.a.steady_jobs, self.a.steady_seconds
        runs = []
        for _ in range(self.runs):
            self.fresh_redis()
            self.ep("/reset")
            self.start_delayqs()
            start = now() + self.a.lead
            step = over / n_jobs
            items = []
            for i in range(n_jobs):
                due = start + i * step
                items.append((due, member(i, due, self.callback)))
            self.load(QUEUE, items)
            a = self.snap()
            got = self.wait_count(n_jobs, timeout=self.a.lead + over + 10, every=0.25)
            time.sleep(0.2)  # a duplicate would show up right after the last one
            b = self.snap()
            rep = self.ep_report()
            code, _ = self.stop_delayqs()
            left = self.leftovers()
            runs.append({
                "delivered": rep["count"],
                "missing": n_jobs - rep["unique"],
                "duplicates": rep["duplicates"],
                "connections": rep["connections"],
                "p50_ms": rep["late_ms"]["p50"],
                "p99_ms": rep["late_ms"]["p99"],
                "max_ms": rep["late_ms"]["max"],
                "min_ms": rep["late_ms"]["min"],
                **delayqs_figures(a, b, rep["count"]),
                "exit": code,
                "left": left,
            })
            if got < n_jobs:
                self.notes.append(f"steady: only {got} of {n_jobs} delivered")
        self.fresh_redis()
        return runs

    def idle(self):
        runs = []
        for _ in range(self.runs):
            self.fresh_redis()
            self.start_delayqs()
            time.sleep(0.5)
            self.r.call("CONFIG", "RESETSTAT")
            a = self.snap()
            time.sleep(self.a.idle_seconds)
            b = self.snap()
            calls, _ = self.evalsha_stats()
            code, _ = self.stop_delayqs()
            wall = b["t"] - a["t"]
            runs.append({
                "cpu_pct": 100 * (b["dq_cpu"] - a["dq_cpu"]) / wall,
                **delayqs_figures(a, b, 0),
                "evalsha_per_s": calls / wall,
                "exit": code,
            })
        return runs

    def backlog_fill(self, upto, have):
        """Far-future jobs (never due during the benchmark) until `upto` are pending."""
        base = now() + 86400
        items = [(base + i, member(10_000_000 + i, base + i, self.callback)) for i in range(have, upto)]
        t = now()
        self.load(QUEUE, items)
        return now() - t

    def backlog_stream(self, pending):
        n_jobs, over = self.a.stream_jobs, self.a.stream_seconds
        runs = []
        for _ in range(self.runs):
            self.ep("/reset")
            self.start_delayqs()
            start = now() + 1.0
            step = over / n_jobs
            items = []
            for i in range(n_jobs):
                due = start + i * step
                items.append((due, member(i, due, self.callback)))
            self.load(QUEUE, items)
            self.slowlog_on()
            a = self.snap()
            got = self.wait_count(n_jobs, timeout=1.0 + over + 10, every=0.25)
            time.sleep(0.1)
            b = self.snap()
            claim = self.slowlog_script_times()
            rep = self.ep_report()
            code, _ = self.stop_delayqs()
            q = self.r.call("ZCARD", QUEUE)
            runs.append({
                "pending": q,
                "delivered": rep["count"],
                "duplicates": rep["duplicates"],
                "claims": len(claim),
                "claim_us_p50": percentile(claim, 50),
                "claim_us_p99": percentile(claim, 99),
                "claim_us_max": claim[-1] if claim else None,
                "late_p50_ms": rep["late_ms"]["p50"],
                "late_p99_ms": rep["late_ms"]["p99"],
                "late_max_ms": rep["late_ms"]["max"],
                **delayqs_figures(a, b, rep["count"]),
                "exit": code,
            })
            if q != pending:
                self.notes.append(f"backlog: {q} pending after the stream, expected {pending}")
            if got < n_jobs:
                self.notes.append(f"backlog at {pending} pending: only {got} of {n_jobs} delivered")
        return runs

    def backlog(self):
        self.fresh_redis()
        small, big = self.a.backlog_small, self.a.backlog_big
        self.backlog_fill(small, 0)
        at_small = self.backlog_stream(small)
        load_s = self.backlog_fill(big, small)
        used = self.r.info("memory").get("used_memory_human")
        at_big = self.backlog_stream(big)
        self.fresh_redis()
        return {"small": at_small, "big": at_big, "load_s": load_s, "redis_used_memory": used}

    # ============================================ several daemons, shards, a cluster (issue 15)

    def start_daemons(self, n, config, binary=None, label="d"):
        """n delayqs processes on one config file (written here), each logging to its own
        file; returns once each has logged that Redis answered."""
        self.dq_runs += 1
        path = os.path.join(self.a.workdir, f"delayqs-{label}-{self.dq_runs}.json")
        with open(path, "w") as f:
            json.dump(config, f, indent=2)
        ps = []
        for k in range(n):
            log_path = os.path.join(self.a.workdir, f"delayqs-{label}-{self.dq_runs}-{k}.log")
            p = subprocess.Popen([binary or self.a.delayqs, "run", "--config", path],
                                 stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
            p.log_path = log_path
            self.remember_pid(p.pid)
            self.live[p.pid] = p
            ps.append(p)
        deadline = now() + 20
        for p in ps:
            while b"ready: " not in open(p.log_path, "rb").read():
                if p.poll() is not None or now() > deadline:
                    text = open(p.log_path).read()
                    self.stop_daemons(ps)
                    raise SystemExit(f"delayqs did not get ready ({p.returncode}):\n{text}")
                time.sleep(0.02)
        time.sleep(0.3)  # first rounds: key checks, first claims
        return ps

    def stop_daemons(self, ps):
        """SIGTERM to all, then wait for each (15 s at most, then SIGKILL); exit codes."""
        for p in ps:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = []
        for p in ps:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                self.notes.append("a delayqs did not stop within 15 s of SIGTERM and was killed")
            self.live.pop(p.pid, None)
            if p.returncode != 0:
                self.notes.append(f"a delayqs exited with {p.returncode} after SIGTERM")
            codes.append(p.returncode)
        return codes

    def errors_in_logs(self, ps):
        """Lines of the daemons' logs at WARN or ERROR (the first few of each)."""
        out = []
        for p in ps:
            lines = [l for l in open(p.log_path, errors="replace").read().splitlines()
                     if " WARN " in l or " ERROR " in l]
            out += lines[:3]
        return out

    def single_layout(self, names, shards):
        """The shards of `names` on the benchmark's one redis-server."""
        return {
            "masters": {self.redis_port: self.r},
            "shards": [{"conn": self.r, "port": self.redis_port,
                        "keys": [rc.shard_name(k, i) for k in names],
                        "staging": rc.shard_name(names[0] + ":staging" if "{" in names[0] else STAGING, i)}
                       for i in range(shards)],
        }

    def layout_flush(self, lay):
        for c in lay["masters"].values():
            c.call("FLUSHALL")
            c.call("CONFIG", "SET", "slowlog-log-slower-than", "-1")
            c.call("CONFIG", "RESETSTAT")

    def layout_leftovers(self, lay):
        tot = [0, 0, 0, 0]
        for sh in lay["shards"]:
            q, f, a, x = sh["keys"]
            c = sh["conn"]
            for j, v in enumerate((c.call("ZCARD", q), c.call("ZCARD", f), c.call("HLEN", a), c.call("LLEN", x))):
                tot[j] += v
        return tot

    @staticmethod
    def redis_cpu(c):
        i = c.info("cpu")
        return float(i["used_cpu_sys"]) + float(i["used_cpu_user"])

    def layout_split(self, lay, items):
        per = [[] for _ in lay["shards"]]
        for score, m in items:
            per[rc.shard_of(m, len(per))].append((score, m))
        return per

    def burst_on(self, lay, n_daemons, config, runs, binary=None, label="d"):
        """The burst scenario on a layout: every shard's jobs loaded into a staging key of
        its slot, the daemons started, then one RENAME per shard makes them all due."""
        n_jobs = self.a.burst_jobs
        out = []
        for _ in range(runs):
            self.layout_flush(lay)
            self.ep("/reset")
            due = now() - 1
            per = self.layout_split(lay, [(due, member(i, due, self.callback)) for i in range(n_jobs)])
            mem0 = {p: int(c.info("memory")["used_memory"]) for p, c in lay["masters"].items()}
            for sh, items in zip(lay["shards"], per):
                sh["conn"].pipeline(zadd_commands(sh["staging"], items))
            mem1 = {p: int(c.info("memory")["used_memory"]) for p, c in lay["masters"].items()}
            ps = self.start_daemons(n_daemons, config, binary, label)
            for c in lay["masters"].values():
                c.call("CONFIG", "RESETSTAT")
            cpu0 = {p: self.redis_cpu(c) for p, c in lay["masters"].items()}
            d0, e0, t0 = sum(proc_cpu(p.pid) for p in ps), proc_cpu(self.a.endpoint_pid), now()
            for sh in lay["shards"]:
                sh["conn"].call("RENAME", sh["staging"], sh["keys"][0])
            got = self.wait_count(n_jobs, timeout=self.a.burst_timeout, every=0.02)
            t1 = now()
            d1, e1 = sum(proc_cpu(p.pid) for p in ps), proc_cpu(self.a.endpoint_pid)
            cpu1 = {p: self.redis_cpu(c) for p, c in lay["masters"].items()}
            calls = {p: self.evalsha_calls(c) for p, c in lay["masters"].items()}
            hwm = max(proc_mem(p.pid)[1] for p in ps)
            time.sleep(0.2)  # a duplicate would show up right after the last one
            rep = self.ep_report()
            warnings = self.errors_in_logs(ps)
            codes = self.stop_daemons(ps)
            span = rep["last_arrival"] - rep["first_arrival"]
            wall = t1 - t0
            count = rep["count"]
            out.append({
                "delivered": count,
                "missing": n_jobs - rep["unique"],
                "duplicates": rep["duplicates"],
                "connections": rep["connections"],
                "jobs_per_s": (count - 1) / span if span > 0 else None,
                "wall_s": wall,
                "dq_cpu_pct": 100 * (d1 - d0) / wall,
                "cpu_s_per_1k": (d1 - d0) / (count / 1000) if count else None,
                "endpoint_cpu_pct": 100 * (e1 - e0) / wall,
                "hwm_kb": hwm,
                "per_master": {str(p): {
                    "used_memory_before": mem0[p], "used_memory_loaded": mem1[p],
                    "cpu_s": cpu1[p] - cpu0[p], "cpu_pct": 100 * (cpu1[p] - cpu0[p]) / wall,
                    "evalsha_calls": calls[p]} for p in lay["masters"]},
                "redis_cpu_pct": 100 * sum(cpu1[p] - cpu0[p] for p in lay["masters"]) / wall,
                "claim_calls": sum(calls.values()),
                "exit": codes,
                "left": self.layout_leftovers(lay),
                "log_warnings": warnings,
            })
            if got < n_jobs:
                self.notes.append(f"burst ({label}): only {got} of {n_jobs} delivered within {self.a.burst_timeout} s")
        self.layout_flush(lay)
        return out

    def evalsha_calls(self, c):
        st = c.info("commandstats")
        n = 0
        for k in ("cmdstat_evalsha", "cmdstat_eval"):
            if k in st:
                n += int(dict(p.split("=") for p in st[k].split(","))["calls"])
        return n

    def steady_on(self, lay, config, binary=None, label="d"):
        """One run of the steady scenario on a layout: jobs due evenly, each in its shard."""
        n_jobs, over = self.a.steady_jobs, self.a.steady_seconds
        self.layout_flush(lay)
        self.ep("/reset")
        ps = self.start_daemons(1, config, binary, label)
        start = now() + self.a.lead
        step = over / n_jobs
        per = self.layout_split(lay, [(start + i * step, member(i, start + i * step, self.callback))
                                      for i in range(n_jobs)])
        for sh, items in zip(lay["shards"], per):
            sh["conn"].pipeline(zadd_commands(sh["keys"][0], items))
        for c in lay["masters"].values():
            c.call("CONFIG", "RESETSTAT")
        d0, t0 = proc_cpu(ps[0].pid), now()
        got = self.wait_count(n_jobs, timeout=self.a.lead + over + 10, every=0.25)
        time.sleep(0.2)
        d1, t1 = proc_cpu(ps[0].pid), now()
        calls = sum(self.evalsha_calls(c) for c in lay["masters"].values())
        hwm = proc_mem(ps[0].pid)[1]
        rep = self.ep_report()
        warnings = self.errors_in_logs(ps)
        codes = self.stop_daemons(ps)
        if got < n_jobs:
            self.notes.append(f"steady ({label}): only {got} of {n_jobs} delivered")
        return {
            "delivered": rep["count"],
            "missing": n_jobs - rep["unique"],
            "duplicates": rep["duplicates"],
            "p50_ms": rep["late_ms"]["p50"],
            "p99_ms": rep["late_ms"]["p99"],
            "max_ms": rep["late_ms"]["max"],
            "cpu_s_per_1k": (d1 - d0) / (rep["count"] / 1000) if rep["count"] else None,
            "script_calls_per_s": calls / (t1 - t0),
            "hwm_kb": hwm,
            "exit": codes,
            "left": self.layout_leftovers(lay),
            "log_warnings": warnings,
        }

    def burst_3daemons(self):
        """(a) Three daemons on one Redis, one shard: the burst, aggregate."""
        lay = self.single_layout((QUEUE, INFLIGHT, ATTEMPTS, FAILED), 1)
        return self.burst_on(lay, 3, dict(self.config), self.a.burst_runs, label="three")

    def burst_cluster(self):
        """(b) A 3-master cluster (no replicas), shards: 3 on 3 masters, 3 daemons."""
        nodes = []
        try:
            for attempt in range(3):
                ports = [rc.node_port() for _ in range(3)]
                for p in ports:
                    d = os.path.join(self.a.workdir, f"cluster-{p}")
                    os.makedirs(d, exist_ok=True)
                    n = subprocess.Popen(rc.node_args(p, d, extra=["--loglevel", "warning"]),
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         stdin=subprocess.DEVNULL)
                    self.remember_pid(n.pid)
                    self.live[n.pid] = n
                    nodes.append(n)
                try:
                    ranges = rc.create(ports, 0, timeout=30)
                    break
                except RuntimeError as e:
                    # Seen once on this shared machine: a node's view never settled.
                    self.notes.append(f"burst_cluster: a new cluster did not settle, started another ({e})")
                    self.stop_nodes(nodes)
                    nodes = []
            else:
                raise SystemExit("burst_cluster: no cluster settled in 3 tries")
            tag, slots = rc.tag_on_masters(ranges, 3, prefix="dq")
            names = tuple("{%s}%s" % (tag, suffix) for suffix in
                          (":job_zqueue", ":inflight", ":attempts", ":fail_job"))
            masters = {p: Redis(p) for p in ports}
            lay = {"masters": masters, "shards": []}
            for i in range(3):
                keys = [rc.shard_name(k, i) for k in names]
                port = rc.master_of(ranges, slots[i])
                lay["shards"].append({"conn": masters[port], "port": port, "keys": keys,
                                      "staging": rc.shard_name("{%s}:staging" % tag, i)})
            config = {"cluster": [f"redis://127.0.0.1:{p}/" for p in ports],
                      "key": names[0], "inflightKey": names[1], "attemptsKey": names[2],
                      "failKey": names[3], "shards": 3, "concurrency": self.conc, "logLevel": "info"}
            self.commands["cluster"] = (shlex.join(rc.node_args("PORT", "$WORK/cluster-PORT"))
                                        + "   # 3 of them, then:\nredis-cli --cluster create "
                                        + " ".join("127.0.0.1:PORT%d" % k for k in range(3))
                                        + " --cluster-replicas 0 --cluster-yes")
            runs = self.burst_on(lay, 3, config, self.a.burst_runs, label="cluster")
            return {"tag": tag, "slots": slots,
                    "shard_master": [sh["port"] for sh in lay["shards"]],
                    "ranges": [[lo, hi, m] for lo, hi, m, _, _ in ranges],
                    "config": config, "runs": runs}
        finally:
            self.stop_nodes(nodes)

    def stop_nodes(self, nodes):
        for n in nodes:
            n.terminate()
        for n in nodes:
            try:
                n.wait(timeout=10)
            except subprocess.TimeoutExpired:
                n.kill()
                n.wait()
            self.live.pop(n.pid, None)

    def shards(self):
        """(c) One daemon on the one Redis: shards 1 (today's names) against shards 3, and
        the binary before shards (--baseline), burst and steady runs interleaved."""
        variants = []
        if self.a.baseline:
            variants.append(("before", self.single_layout((QUEUE, INFLIGHT, ATTEMPTS, FAILED), 1),
                             dict(self.config), self.a.baseline))
        variants.append(("one", self.single_layout((QUEUE, INFLIGHT, ATTEMPTS, FAILED), 1),
                         dict(self.config), None))
        three = dict(self.config, key=TAGGED[0], inflightKey=TAGGED[1], attemptsKey=TAGGED[2],
                     failKey=TAGGED[3], shards=3)
        variants.append(("three", self.single_layout(TAGGED, 3), three, None))
        res = {name: {"burst": [], "steady": []} for name, _, _, _ in variants}
        for _ in range(self.a.burst_runs):
            for name, lay, config, binary in variants:
                res[name]["burst"] += self.burst_on(lay, 1, config, 1, binary, label=f"shards-{name}")
        for _ in range(self.runs):
            for name, lay, config, binary in variants:
                res[name]["steady"].append(self.steady_on(lay, config, binary, label=f"shards-{name}"))
        res["three_config"] = three
        self.fresh_redis()
        return res

    # ================================================================ all

    def run(self):
        timings = {}
        res = {"load_before": loadavg(), "other_cpu_at_start_pct": self.wait_for_quiet(), "other_cpu_pct": {}}
        for name in SCENARIOS:
            if self.a.only and name not in self.a.only:
                continue
            t = now()
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            m0, o0 = machine_busy(), self.ours()
            try:
                res[name] = getattr(self, name)()
            finally:
                if self.dq is not None:
                    self.stop_delayqs()
            timings[name] = now() - t
            # Tick-sampled machine totals against precise per-process times: about
            # ±10 % of a core of noise, hence the clamp and the 20 % threshold.
            other = max(0.0, 100 * (machine_busy() - m0 - (self.ours() - o0)) / timings[name])
            res["other_cpu_pct"][name] = other
            if other > 20:
                self.notes.append(f"{name}: other processes on the machine used {other:.0f} % of a core "
                                  "meanwhile; its figures are skewed by that")
            print(f"[bench] {name} done in {timings[name]:.1f} s", file=sys.stderr, flush=True)
        res["timings"] = timings
        res["load_after"] = loadavg()
        res["total_s"] = now() - self.started
        res["notes"] = self.notes
        res["commands"] = self.commands
        res["config"] = self.config
        return res


# ------------------------------------------------------------------- BENCHMARKS.md


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10, shell=True).stdout.strip()
    except Exception:
        return "?"


def machine():
    model = mhz = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model is None:
                model = line.split(":", 1)[1].strip()
            if line.startswith("cpu MHz") and mhz is None:
                mhz = line.split(":", 1)[1].strip()
    return {
        "nproc": sh("nproc"),
        "model": model,
        "mhz": mhz,
        "mem": sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo"),
        "kernel": sh("uname -sr"),
        "redis": sh("redis-server --version"),
        "wrk": "wrk " + (re.findall(r"wrk (?:debian/)?([\w.+~-]+)", sh("wrk -v 2>&1 | head -1")) or ["?"])[0],
        "rustc": sh("rustc --version"),
    }


def fmt(x, nd=1):
    if x is None:
        return "n/a"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:,.{nd}f}"


def mb(kb):
    return None if kb is None else kb / 1024


def col(runs, key):
    return [r[key] for r in runs if r.get(key) is not None]


def spread(runs, key, nd=1, scale=None):
    """median (min–max) over the runs."""
    xs = col(runs, key)
    if scale:
        xs = [scale(x) for x in xs]
    if not xs:
        return "n/a"
    m = median(xs)
    if len(xs) == 1:
        return fmt(m, nd)
    return f"{fmt(m, nd)} ({fmt(min(xs), nd)}–{fmt(max(xs), nd)})"


def _per_master(runs, port, key):
    return median([r["per_master"][port][key] for r in runs])


def scale_targets(res, burst):
    out = []
    three = res.get("burst_3daemons")
    if three:
        d, m = sum(col(three, "duplicates")), sum(col(three, "missing"))
        out.append(("3 daemons on one Redis: no duplicates, nothing missing (every burst run)",
                    f"{d} duplicates, {m} missing", d == 0 and m == 0))
    cl = res.get("burst_cluster")
    if cl:
        d, m = sum(col(cl["runs"], "duplicates")), sum(col(cl["runs"], "missing"))
        out.append(("3 daemons on a 3-master cluster, `shards: 3`: no duplicates, nothing missing",
                    f"{d} duplicates, {m} missing", d == 0 and m == 0))
    sh = res.get("shards")
    if sh:
        one = median(col(sh["one"]["burst"], "jobs_per_s"))
        if "before" in sh:
            ref, what = median(col(sh["before"]["burst"], "jobs_per_s")), "the binary before shards"
        else:
            ref, what = median(col(burst, "jobs_per_s")), "the burst scenario above (same binary)"
        ratio = one / ref if one and ref else None
        out.append((f"`shards: 1` burst no slower than today's single key (≥ 95 % of {what}, interleaved runs)",
                    f"{fmt(one, 0)} vs {fmt(ref, 0)} jobs/s ({fmt(100 * ratio if ratio else None)} %)",
                    ratio is not None and ratio >= 0.95))
        p1 = median(col(sh["one"]["steady"], "p99_ms"))
        p3 = median(col(sh["three"]["steady"], "p99_ms"))
        out.append(("steady lateness p99 with `shards: 3` no worse than with 1 (≤ 1's + max(10 %, 0.1 ms))",
                    f"{fmt(p3, 2)} vs {fmt(p1, 2)} ms",
                    p1 is not None and p3 is not None and p3 <= p1 + max(0.1 * p1, 0.1)))
    return out


def scale_section(w, res, args, burst):
    three, cl, sh = res.get("burst_3daemons"), res.get("burst_cluster"), res.get("shards")
    if not (three or cl or sh):
        return
    w("### Several daemons, shards, a Redis Cluster (issue 15)")
    w("")
    w(f"The burst of {args.burst_jobs:,} jobs and the steady load as above, each daemon with "
      f"`concurrency` {args.concurrency}; a job goes to shard `int(sha1(member)[:8], 16) % shards`. "
      "Every process shares the same 2 cores: the endpoint, every daemon and every redis-server.")
    w("")
    if three:
        w("**Three daemons on one Redis** (one shard, today's names):")
        w("")
        w("| | 1 daemon (burst above) | 3 daemons |")
        w("| --- | --- | --- |")
        w(f"| throughput | {spread(burst, 'jobs_per_s', 0)} jobs/s | {spread(three, 'jobs_per_s', 0)} jobs/s |")
        w(f"| CPU while draining: delayqs (all) / redis-server / endpoint, % of one core | "
          f"{spread(burst, 'dq_cpu_pct', 0)} / {spread(burst, 'redis_cpu_pct', 0)} / {spread(burst, 'endpoint_cpu_pct', 0)} | "
          f"{spread(three, 'dq_cpu_pct', 0)} / {spread(three, 'redis_cpu_pct', 0)} / {spread(three, 'endpoint_cpu_pct', 0)} |")
        w(f"| delayqs CPU seconds per 1,000 jobs (all daemons) | {spread(burst, 'cpu_s_per_1k', 3)} | {spread(three, 'cpu_s_per_1k', 3)} |")
        w(f"| script calls (all daemons) | {spread(burst, 'evalsha_calls', 0)} | {spread(three, 'claim_calls', 0)} |")
        w(f"| duplicates / missing | {sum(col(burst, 'duplicates'))} / 0 | {sum(col(three, 'duplicates'))} / {sum(col(three, 'missing'))} |")
        w("")
    if cl:
        runs = cl["runs"]
        w(f"**A 3-master cluster, `shards: 3`, 3 daemons.** Three `redis-server --cluster-enabled yes` "
          f"masters, no replicas (`--cluster-replicas 0`: replicas would be three more processes on the "
          f"same 2 cores), `cluster-node-timeout` 2000. The tag `{{{cl['tag']}}}` puts the 3 shards on "
          f"3 masters: " + ", ".join(f"shard {i} `{rc.shard_name('{' + cl['tag'] + '}:job_zqueue', i)}` "
                                    f"slot {s} on :{cl['shard_master'][i]}" for i, s in enumerate(cl["slots"])) + ".")
        w("")
        w("| | 3 daemons, one Redis | 3 daemons, 3 masters |")
        w("| --- | --- | --- |")
        a = three or []
        w(f"| throughput | {spread(a, 'jobs_per_s', 0)} jobs/s | {spread(runs, 'jobs_per_s', 0)} jobs/s |")
        w(f"| CPU while draining: delayqs (all) / redis-server (all) / endpoint, % of one core | "
          f"{spread(a, 'dq_cpu_pct', 0)} / {spread(a, 'redis_cpu_pct', 0)} / {spread(a, 'endpoint_cpu_pct', 0)} | "
          f"{spread(runs, 'dq_cpu_pct', 0)} / {spread(runs, 'redis_cpu_pct', 0)} / {spread(runs, 'endpoint_cpu_pct', 0)} |")
        w(f"| script calls (all daemons, all masters) | {spread(a, 'claim_calls', 0)} | {spread(runs, 'claim_calls', 0)} |")
        w(f"| duplicates / missing | {sum(col(a, 'duplicates'))} / {sum(col(a, 'missing'))} | "
          f"{sum(col(runs, 'duplicates'))} / {sum(col(runs, 'missing'))} |")
        w("")
        w("Per master (`INFO memory` used_memory with the cluster empty and with the burst loaded in "
          "its staging key; `INFO cpu` used_cpu_sys + used_cpu_user over the drain; medians):")
        w("")
        w("| master | slots | shard | used_memory empty | loaded | the backlog's share | CPU s over the drain | CPU % of one core | script calls |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        ports = list(runs[0]["per_master"])
        if three:
            p0 = list(three[0]["per_master"])[0]
            b0, b1 = _per_master(three, p0, "used_memory_before"), _per_master(three, p0, "used_memory_loaded")
            w(f"| one Redis (3 daemons, above) | all | the one | {b0 / 1048576:.2f} MB | {b1 / 1048576:.2f} MB | "
              f"{(b1 - b0) / 1048576:.2f} MB | {fmt(_per_master(three, p0, 'cpu_s'), 2)} | "
              f"{fmt(_per_master(three, p0, 'cpu_pct'), 0)} | {fmt(_per_master(three, p0, 'evalsha_calls'), 0)} |")
        for port in ports:
            rng = " ".join(f"{lo}–{hi}" for lo, hi, m in cl["ranges"] if str(m) == port)
            mine = [str(i) for i, m in enumerate(cl["shard_master"]) if str(m) == port]
            m0 = _per_master(runs, port, "used_memory_before")
            m1 = _per_master(runs, port, "used_memory_loaded")
            w(f"| :{port} | {rng} | {', '.join(mine) or '—'} | {m0 / 1048576:.2f} MB | {m1 / 1048576:.2f} MB | "
              f"{(m1 - m0) / 1048576:.2f} MB | {fmt(_per_master(runs, port, 'cpu_s'), 2)} | "
              f"{fmt(_per_master(runs, port, 'cpu_pct'), 0)} | {fmt(_per_master(runs, port, 'evalsha_calls'), 0)} |")
        w("")
        if three:
            r3, rc3 = median(col(three, "jobs_per_s")), median(col(runs, "jobs_per_s"))
            if r3 and rc3:
                w(f"The cluster drained at {100 * rc3 / r3:.0f} % of the rate of the same 3 daemons on one Redis "
                  "in this run (see \"Shards and a cluster on 2 cores\" below for why).")
                w("")
    if sh:
        names = [n for n in ("before", "one", "three") if n in sh]
        head = {"before": f"before shards ({args.baseline_desc or 'baseline'})", "one": "`shards: 1` (today's names)",
                "three": "`shards: 3` (`{DelayQs}`, `{DelayQs:1}`, `{DelayQs:2}`)"}
        w("**One daemon on one redis-server: one shard against three** (runs interleaved: "
          + ", ".join(names) + ", then again):")
        w("")
        w("| | " + " | ".join(head[n] for n in names) + " |")
        w("|" + " --- |" * (len(names) + 1))
        rows = [("burst throughput", "burst", "jobs_per_s", 0, " jobs/s"),
                ("burst: script calls", "burst", "claim_calls", 0, ""),
                ("burst: delayqs CPU s per 1,000 jobs", "burst", "cpu_s_per_1k", 3, ""),
                ("steady lateness p50", "steady", "p50_ms", 2, " ms"),
                ("steady lateness p99", "steady", "p99_ms", 2, " ms"),
                ("steady lateness max", "steady", "max_ms", 2, " ms"),
                ("steady: script calls per second", "steady", "script_calls_per_s", 1, ""),
                ("steady: delayqs CPU s per 1,000 jobs", "steady", "cpu_s_per_1k", 3, "")]
        for label, part, key, nd, unit in rows:
            w(f"| {label} | " + " | ".join(spread(sh[n][part], key, nd) + unit for n in names) + " |")
        w("| duplicates / missing (burst and steady) | " + " | ".join(
            f"{sum(col(sh[n]['burst'], 'duplicates')) + sum(col(sh[n]['steady'], 'duplicates'))} / "
            f"{sum(col(sh[n]['burst'], 'missing')) + sum(col(sh[n]['steady'], 'missing'))}" for n in names) + " |")
        w("")
    warn = []
    for runs in ([three or []] + [cl["runs"] if cl else []]
                 + [sh[n][p] for n in ("before", "one", "three") if sh and n in sh for p in ("burst", "steady")]):
        for r in runs:
            warn += r.get("log_warnings", [])
    if warn:
        w("Warnings and errors the daemons logged in these scenarios (first few):")
        w("")
        w("```")
        for line in warn[:8]:
            w(line[:300])
        w("```")
        w("")


def write_markdown(res, args, path):
    m = machine()
    http = res["ceiling_http"]["rps"]
    claim = res["ceiling_claim"]
    burst, steady, idle, back = res["burst"], res["steady"], res["idle"], res["backlog"]
    burst_rate = median(col(burst, "jobs_per_s"))
    share = 100 * burst_rate / http if burst_rate and http else None

    hwm_all = {
        "burst": max(col(burst, "hwm_kb")),
        "steady": max(col(steady, "hwm_kb")),
        "idle": max(col(idle, "hwm_kb")),
        f"backlog {args.backlog_small:,}": max(col(back["small"], "hwm_kb")),
        f"backlog {args.backlog_big:,}": max(col(back["big"], "hwm_kb")),
    }
    peak = max(hwm_all.values())
    claim_small = median(col(back["small"], "claim_us_p50"))
    claim_big = median(col(back["big"], "claim_us_p50"))
    claim_ratio = claim_big / claim_small if claim_small and claim_big else None
    rss_small = median(col(back["small"], "hwm_kb"))
    rss_big = median(col(back["big"], "hwm_kb"))

    def ok(b):
        return "**met**" if b else "**MISSED**"

    p99 = median(col(steady, "p99_ms"))
    mx = median(col(steady, "max_ms"))
    dups = sum(col(steady, "duplicates")) + sum(col(burst, "duplicates"))
    missing = sum(col(steady, "missing"))
    idle_cpu = median(col(idle, "cpu_pct"))
    idle_rss = median(col(idle, "rss_kb"))

    targets = [
        (f"burst ≥ 40 % of the HTTP ceiling at concurrency {args.concurrency}",
         f"{fmt(share)} % ({fmt(burst_rate, 0)} of {fmt(http, 0)} req/s)", share is not None and share >= 40),
        ("steady lateness p99 ≤ 5 ms", f"{fmt(p99, 2)} ms (worst run {fmt(max(col(steady, 'p99_ms')), 2)} ms)",
         p99 is not None and p99 <= 5),
        ("steady lateness max ≤ 50 ms", f"{fmt(mx, 2)} ms (worst run {fmt(max(col(steady, 'max_ms')), 2)} ms)",
         mx is not None and mx <= 50),
        ("no duplicates, nothing missing (burst and steady, every run)", f"{dups} duplicates, {missing} missing",
         dups == 0 and missing == 0),
        ("idle CPU < 0.5 %", f"{fmt(idle_cpu, 2)} % of one core", idle_cpu is not None and idle_cpu < 0.5),
        ("idle RSS < 5 MB", f"{fmt(mb(idle_rss), 2)} MB", idle_rss is not None and idle_rss < 5 * 1024),
        ("peak RSS < 15 MB in every scenario", f"{fmt(mb(peak), 2)} MB (highest VmHWM of any run)",
         peak < 15 * 1024),
        (f"memory flat with {args.backlog_big:,} pending",
         f"peak RSS {fmt(mb(rss_small), 2)} MB at {args.backlog_small:,} vs {fmt(mb(rss_big), 2)} MB",
         bool(rss_small and rss_big and rss_big <= rss_small * 1.1 + 256)),
        (f"claim time at {args.backlog_big:,} pending within 2× of {args.backlog_small:,}",
         f"{fmt(claim_big, 0)} µs vs {fmt(claim_small, 0)} µs median ({fmt(claim_ratio, 2)}×)",
         claim_ratio is not None and claim_ratio <= 2),
    ]
    targets += scale_targets(res, burst)

    L = []
    w = L.append
    w("# delayqs benchmarks")
    w("")
    w("Written by `bench/run.sh` (`make bench`); do not edit by hand, run it again. The")
    w("benchmark is a measurement, not a test: CI does not fail on these numbers. What it")
    w("measures and why is in issue 6.")
    w("")
    w(f"- **Date:** {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    w(f"- **Machine:** {m['nproc']} cores, {m['model']} ({m['mhz']} MHz), {m['mem']} RAM, {m['kernel']}")
    w(f"- **Software:** {m['redis']}; {m['wrk']}; {m['rustc']}")
    w(f"- **delayqs:** {args.git_desc}"
      + ("" if "prebuilt" in args.git_desc else ", built with `cargo build --release --locked`"))
    w(f"- **Runs:** every scenario {args.runs}×, the burst {args.burst_runs}× (a fresh delayqs process per run); figures are the")
    w("  median, with the range over the runs in brackets.")
    w(f"- **Whole benchmark:** {res['total_s']:.0f} s ("
      + ", ".join(f"{k} {v:.0f} s" for k, v in res["timings"].items()) + ")")
    w(f"- **Other work on the machine** (it skews every figure on 2 cores): load average"
      f" {res['load_before']} before, {res['load_after']} after; CPU used by processes outside the"
      " benchmark, % of one core (±10): at start " + f"{res['other_cpu_at_start_pct']:.0f}, "
      + ", ".join(f"{k} {v:.0f}" for k, v in res["other_cpu_pct"].items()))
    w("")
    w("## Targets")
    w("")
    w("| target | measured | |")
    w("| --- | --- | --- |")
    for name, got, good in targets:
        w(f"| {name} | {got} | {ok(good)} |")
    w("")
    w("## Figures")
    w("")
    w("### Ceiling (same machine, same run)")
    w("")
    w("| | median | runs |")
    w("| --- | --- | --- |")
    w(f"| HTTP: wrk → endpoint, {args.concurrency} connections, {args.wrk_seconds} s | {fmt(http, 0)} req/s | "
      + ", ".join(fmt(x, 0) for x in res["ceiling_http"]["rps_runs"]) + " |")
    w(f"| claim.lua via EVALSHA, 1 connection, limit {claim['limit']} (each call claims {claim['limit']}) "
      f"| {fmt(claim['calls_per_s'], 0)} calls/s = {fmt(claim['jobs_per_s'], 0)} jobs/s | "
      + ", ".join(fmt(x, 0) for x in claim["calls_runs"]) + " calls/s |")
    w(f"| claim.lua server time (INFO commandstats) | {fmt(claim['usec_per_call'], 1)} µs per call | |")
    w("")
    w(f"### Burst: {args.burst_jobs:,} jobs already due, drained")
    w("")
    w("| | median (min–max) |")
    w("| --- | --- |")
    w(f"| throughput (first to last arrival at the endpoint) | {spread(burst, 'jobs_per_s', 0)} jobs/s |")
    w(f"| share of the HTTP ceiling | {fmt(share)} % |")
    w(f"| delayqs CPU seconds per 1,000 jobs | {spread(burst, 'cpu_s_per_1k', 3)} |")
    w(f"| CPU use while draining: delayqs / redis-server / endpoint | {spread(burst, 'dq_cpu_pct', 0)} % / "
      f"{spread(burst, 'redis_cpu_pct', 0)} % / {spread(burst, 'endpoint_cpu_pct', 0)} % (of one core) |")
    w(f"| Redis script calls (EVALSHA) per job | {spread(burst, 'evalsha_per_job', 2)} |")
    w(f"| claim.lua calls (each also writes the outcomes of the last batch) / jobs per call / server time p50 | {spread(burst, 'claim_calls', 0)} / "
      f"{spread(burst, 'jobs_per_claim', 2)} / {spread(burst, 'claim_us_p50', 0)} µs |")
    w(f"| Redis server time per job | {spread(burst, 'redis_usec_per_job', 1)} µs |")
    w(f"| HTTP connections used (keep-alive) | {spread(burst, 'connections', 0)} |")
    w(f"| peak RSS (VmHWM) | {spread(burst, 'hwm_kb', 2, mb)} MB |")
    w(f"| duplicates | {sum(col(burst, 'duplicates'))} |")
    rep = res.get("burst_replicated")
    if rep:
        w(f"| with one replica and `waitReplicas: 1` (a `WAIT` after each claim call) | {spread(rep, 'jobs_per_s', 0)} jobs/s, "
          f"{spread(rep, 'claim_calls', 0)} claim calls, {sum(col(rep, 'duplicates'))} duplicates |")
    w("")
    w(f"### Steady: {args.steady_jobs:,} jobs due evenly over {args.steady_seconds} s, scheduled {args.lead} s ahead")
    w("")
    w("| | median (min–max) |")
    w("| --- | --- |")
    w(f"| lateness p50 | {spread(steady, 'p50_ms', 2)} ms |")
    w(f"| lateness p99 | {spread(steady, 'p99_ms', 2)} ms |")
    w(f"| lateness max | {spread(steady, 'max_ms', 2)} ms |")
    w(f"| duplicates / missing | {sum(col(steady, 'duplicates'))} / {missing} |")
    w(f"| delayqs CPU seconds per 1,000 jobs | {spread(steady, 'cpu_s_per_1k', 3)} |")
    w(f"| peak RSS (VmHWM) | {spread(steady, 'hwm_kb', 2, mb)} MB |")
    w("")
    w(f"### Idle: {args.idle_seconds} s with nothing due")
    w("")
    w("| | median (min–max) |")
    w("| --- | --- |")
    w(f"| CPU | {spread(idle, 'cpu_pct', 2)} % of one core |")
    w(f"| RSS at the end | {spread(idle, 'rss_kb', 2, mb)} MB |")
    w(f"| peak RSS (VmHWM) | {spread(idle, 'hwm_kb', 2, mb)} MB |")
    w(f"| Redis script calls per second | {spread(idle, 'evalsha_per_s', 1)} |")
    w("| CPU seconds per 1,000 jobs | n/a (no jobs) |")
    w("")
    w(f"### Backlog: {args.stream_jobs:,} jobs due over {args.stream_seconds} s while others wait far in the future")
    w("")
    w(f"| | {args.backlog_small:,} pending | {args.backlog_big:,} pending |")
    w("| --- | --- | --- |")
    for label, key, nd, sc, unit in [
        ("claim.lua server time p50 (SLOWLOG)", "claim_us_p50", 0, None, " µs"),
        ("claim.lua server time p99", "claim_us_p99", 0, None, " µs"),
        ("claim calls during the stream", "claims", 0, None, ""),
        ("lateness p50 (due → delivery)", "late_p50_ms", 2, None, " ms"),
        ("lateness p99", "late_p99_ms", 2, None, " ms"),
        ("lateness max", "late_max_ms", 2, None, " ms"),
        ("delayqs CPU seconds per 1,000 jobs", "cpu_s_per_1k", 3, None, ""),
        ("peak RSS (VmHWM)", "hwm_kb", 2, mb, " MB"),
        ("duplicates", "duplicates", 0, None, ""),
    ]:
        w(f"| {label} | {spread(back['small'], key, nd, sc)}{unit} | {spread(back['big'], key, nd, sc)}{unit} |")
    w("")
    w(f"Loading the extra {args.backlog_big - args.backlog_small:,} future jobs took {back['load_s']:.1f} s "
      f"(pipelined ZADD, 500 members per command); Redis then used {back['redis_used_memory']}.")
    w("")
    scale_section(w, res, args, burst)
    w("### Peak RSS of delayqs per scenario (highest VmHWM of any run)")
    w("")
    w("| " + " | ".join(hwm_all) + " |")
    w("|" + " --- |" * len(hwm_all))
    w("| " + " | ".join(f"{mb(v):.2f} MB" for v in hwm_all.values()) + " |")
    w("")
    if res["notes"]:
        w("### Anomalies seen during the run")
        w("")
        for n in res["notes"]:
            w(f"- {n}")
        w("")
    w("## Method")
    w("")
    w("- CPU is user + system time from `/proc/PID/stat` (10 ms ticks) over the scenario's")
    w("  window; CPU % is of one core. RSS is `VmRSS`, peak RSS `VmHWM` from `/proc/PID/status`.")
    w("- Lateness is the endpoint's arrival time minus the job's score (both the host's clock;")
    w("  Redis runs on the same host), nearest-rank percentiles over every delivery.")
    w("- Burst: the jobs are loaded into a staging key, delayqs is started, and a `RENAME` to")
    w("  the queue makes all of them due at once. Throughput is (deliveries − 1) / (last")
    w("  arrival − first arrival) at the endpoint.")
    w("- Burst and backlog: per-script call counts and times come from Redis's `SLOWLOG`")
    w("  (`slowlog-log-slower-than 0`): Redis's own execution time, without network or client.")
    w("  Lateness in the backlog stream covers the whole path.")
    w("- Before starting, the benchmark waits (30 s at most) for other processes to use less")
    w("  than a quarter of the machine, and measures what they use during each scenario.")
    w("- Jobs are members like `" + member(7, 1764000000.125, "http://127.0.0.1:PORT/cb") + "`.")
    w("")
    w("## Exact commands")
    w("")
    w("```sh")
    w("make bench        # = bench/run.sh; knobs: BENCH_RUNS=3, BENCH_QUICK=1, BENCH_ONLY=..., BENCH_DELAYQS=...")
    w("CARGO_TARGET_DIR=bench/target cargo build --release --locked")
    w("CARGO_TARGET_DIR=bench/target cargo build --release --manifest-path bench/endpoint/Cargo.toml")
    w(args.redis_cmd)
    w(args.endpoint_cmd)
    w(res["commands"]["delayqs"].replace(args.workdir, "$WORK"))
    w(res["commands"]["wrk"].replace(args.workdir, "$WORK"))
    w(res["commands"]["redis-benchmark"])
    w("```")
    w("")
    w("delayqs config (every other key at its default, e.g. `pollIntervalMs` 50):")
    w("")
    w("```json")
    w(json.dumps(res["config"], indent=2))
    w("```")
    w("")
    w("wrk script (the request delayqs sends for a job):")
    w("")
    w("```lua")
    w(res["commands"]["wrk script"].rstrip())
    w("```")
    w("")
    if args.analysis and os.path.exists(args.analysis):
        w(open(args.analysis).read().rstrip())
        w("")
    w("## Raw runs")
    w("")
    w("```json")
    raw = {k: res[k] for k in SCENARIOS}
    w(json.dumps(raw, indent=1, default=str))
    w("```")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")
    return targets


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-port", type=int, required=True)
    ap.add_argument("--redis-pid", type=int, required=True)
    ap.add_argument("--endpoint-port", type=int, required=True)
    ap.add_argument("--endpoint-pid", type=int, required=True)
    ap.add_argument("--delayqs", required=True)
    ap.add_argument("--claim-script", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--analysis", help="markdown appended to BENCHMARKS.md (what bounds the figures)")
    ap.add_argument("--redis-cmd", default="")
    ap.add_argument("--endpoint-cmd", default="")
    ap.add_argument("--git-desc", default="")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quiet-wait", type=float, default=30,
                    help="seconds to wait at most for other processes to quieten down")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--baseline", default=None,
                    help="a delayqs binary from before shards, measured beside shards 1 and 3")
    ap.add_argument("--baseline-desc", default="")
    ap.add_argument("--only", type=lambda v: v.split(","), default=None,
                    help="comma-separated scenarios to run (prints JSON, leaves BENCHMARKS.md alone)")
    a = ap.parse_args()
    if a.only and not set(a.only) <= set(SCENARIOS):
        ap.error(f"--only takes some of {', '.join(SCENARIOS)}")
    # Sizes from issue 6.
    a.wrk_seconds = 3
    a.claim_calls = 10000
    a.burst_jobs = 20000
    a.burst_timeout = 60
    a.steady_jobs, a.steady_seconds, a.lead = 3000, 15, 2
    a.idle_seconds = 10
    a.backlog_small, a.backlog_big = 1000, 1_000_000
    a.stream_jobs, a.stream_seconds = 1000, 5
    if a.quick:
        a.runs = 1
        a.quiet_wait = 0
        a.wrk_seconds = 1
        a.claim_calls = 2000
        a.burst_jobs = 2000
        a.steady_jobs, a.steady_seconds = 300, 3
        a.idle_seconds = 2
        a.backlog_big = 50_000
        a.stream_jobs, a.stream_seconds = 200, 2
    # The burst is short and varies most from run to run on a shared machine: more runs
    # for a steadier median, at a few seconds each.
    a.burst_runs = a.runs if a.quick else max(a.runs, 5)
    b = Bench(a)
    res = b.run()
    with open(os.path.join(a.workdir, "results.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    if a.only:
        json.dump({k: v for k, v in res.items() if k not in ("commands", "config")}, sys.stdout,
                  indent=1, default=str)
        print()
        return
    targets = write_markdown(res, a, a.out)
    print(f"[bench] {a.out} written; whole run {res['total_s']:.0f} s", file=sys.stderr)
    for name, got, good in targets:
        print(f"  {'met   ' if good else 'MISSED'}  {name}: {got}", file=sys.stderr)
    for n in res["notes"]:
        print(f"  note: {n}", file=sys.stderr)


if __name__ == "__main__":
    main()
