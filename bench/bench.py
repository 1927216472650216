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
import threading
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
             "burst_3daemons", "burst_cluster", "shards", "flow")
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
        self.sent = 0  # commands sent on this connection: the benchmark's own share of Redis's count

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
        self.sent += 1
        self.sock.sendall(self.encode(args))
        reply = self.read()
        if isinstance(reply, RedisError):
            raise reply
        return reply

    def pipeline(self, commands, chunk=100):
        for i in range(0, len(commands), chunk):
            part = commands[i : i + chunk]
            self.sent += len(part)
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

    def slowlog_claim_calls(self):
        """(Unix s, server µs) of each claim.lua call since slowlog_on()."""
        entries = self.r.call("SLOWLOG", "GET", "-1")
        self.r.call("CONFIG", "SET", "slowlog-log-slower-than", "-1")
        head = self.claim_src[:100]
        calls = []
        for e in entries:
            argv = e[3]
            if not argv:
                continue
            cmd, first = s(argv[0]).upper(), argv[1] if len(argv) > 1 else b""
            if cmd == "EVALSHA" and s(first) == self.claim_sha or cmd == "EVAL" and first.startswith(head):
                calls.append((int(e[1]), int(e[2])))
        return calls

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

    # ============================================================ flow control (issue 17)

    def start_endpoint(self, label):
        """Another bench endpoint on a free port: one flow (host:port) each."""
        log_path = os.path.join(self.a.workdir, f"endpoint-{label}.log")
        p = subprocess.Popen([self.a.endpoint_bin, "0"], stdout=open(log_path, "wb"),
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.remember_pid(p.pid)
        self.live[p.pid] = p
        deadline = now() + 10
        while True:
            m = re.search(rb"^listening 127\.0\.0\.1:(\d+)$", open(log_path, "rb").read(), re.M)
            if m:
                break
            if p.poll() is not None or now() > deadline:
                raise SystemExit(f"the endpoint {label} did not start:\n" + open(log_path).read())
            time.sleep(0.02)
        p.url = f"http://127.0.0.1:{int(m.group(1))}"
        p.host = f"127.0.0.1:{int(m.group(1))}"
        return p

    @staticmethod
    def get(url, timeout=30):
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read().decode()

    def stop_endpoint(self, p):
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        self.live.pop(p.pid, None)

    @staticmethod
    def read_metric(path, name):
        """A counter from the daemon's metrics file (Prometheus text), or None."""
        try:
            text = open(path).read()
        except OSError:
            return None
        m = re.search(r"^%s(?:\{[^}]*\})?\s+(\S+)$" % re.escape(name), text, re.M)
        return float(m.group(1)) if m else None

    def flow(self):
        """Host A: a backlog of `flow_jobs` due at once, limited to `flow_rate`/s; host B:
        unlimited, `flow_b_rate` jobs/s scheduled `flow_lead` s ahead. B's lateness
        while A's backlog is spread (the first claim pass) and while A drains at its limit."""
        a = self.a
        n_a, rate, b_rate, lead, window = a.flow_jobs, a.flow_rate, a.flow_b_rate, a.flow_lead, a.flow_window
        ep_a, ep_b = self.start_endpoint("A"), self.start_endpoint("B")
        producer = None
        stop = threading.Event()
        ps = []
        try:
            self.fresh_redis()
            metrics_path = os.path.join(a.workdir, "flow-metrics.prom")
            config = dict(self.config, metricsFile=metrics_path, metricsIntervalMs=1000,
                          flowControl={"hosts": [{"match": ep_a.host, "perSecond": rate, "burst": rate}]})
            self.commands["flow config"] = json.dumps(config, indent=2).replace(a.workdir, "$WORK")
            # A's backlog, due all at once at t0 (a score of its own, to the 0.1 ms, so
            # that ZCOUNT t0 t0 counts A's jobs not yet claimed once and nothing else).
            t0 = round(now() + a.flow_lead_in, 3) + 0.0005
            load_t = now()
            items = [(t0, member(i, t0, ep_a.url + "/cb")) for i in range(n_a)]
            cmds = []
            for i in range(0, n_a, 500):
                cmd = ["ZADD", QUEUE]
                for score, m in items[i:i + 500]:
                    cmd += ["%.4f" % score, m]
                cmds.append(cmd)
            self.r.pipeline(cmds)
            load_s = now() - load_t
            del items, cmds
            ps = self.start_daemons(1, config, label="flow")
            dq = ps[0]
            self.slowlog_on()  # every claim call's server time, for how long Redis is held

            # B: one job every 1/b_rate s, due `lead` s after it is written.
            produced = []  # (n, when planned, when written, due)
            pr = Redis(self.redis_port)

            def produce():
                cb = ep_b.url + "/cb"
                start, i = now(), 0
                while not stop.is_set():
                    at = start + i / b_rate
                    wait = at - now()
                    if wait > 0:
                        time.sleep(wait)
                    w = now()
                    due = round(w + lead, 3)
                    pr.call("ZADD", QUEUE, "%.3f" % due, member(i, due, cb))
                    produced.append((i, at, w, due))
                    i += 1

            producer = threading.Thread(target=produce, name="flow-producer", daemon=True)
            producer.start()
            if now() > t0 - 2:
                self.notes.append(f"flow: loading A's backlog and starting delayqs took long: only "
                                  f"{t0 - now():.1f} s of host B alone before A's backlog came due")

            mon = Redis(self.redis_port)
            samples, spread_at, unspread_seen, cmdstats0 = [], None, [], None
            end = t0 + window
            # Full samples once a second, on whole seconds from t0: the timeline's rows.
            next_full = t0 - math.floor(t0 - now())
            load_start = loadavg()
            while True:
                t = now()
                if t >= end:
                    break
                if t >= t0 and spread_at is None:
                    left = mon.call("ZCOUNT", QUEUE, "%.4f" % t0, "%.4f" % t0)
                    unspread_seen.append((t - t0, left))
                    if left == 0:
                        spread_at = now()
                if t >= next_full:
                    next_full += 1.0
                    st = mon.info("stats")
                    samples.append({
                        "t": now(),
                        "dq_cpu": proc_cpu(dq.pid),
                        "redis_cpu": proc_cpu(self.a.redis_pid),
                        "ep_cpu": proc_cpu(ep_a.pid) + proc_cpu(ep_b.pid),
                        "redis_cmds": int(st["total_commands_processed"]),
                        "ours": self.r.sent + mon.sent + pr.sent,
                        "a": int(self.get(ep_a.url + "/count").split()[0]),
                        "b": int(self.get(ep_b.url + "/count").split()[0]),
                        "queue": mon.call("ZCARD", QUEUE),
                        "due_now": mon.call("ZCOUNT", QUEUE, "-inf", "%.3f" % now()),
                        "inflight": mon.call("ZCARD", INFLIGHT),
                        "deferred": self.read_metric(metrics_path, "delayqs_deferred_total"),
                        "unspread": mon.call("ZCOUNT", QUEUE, "%.4f" % t0, "%.4f" % t0),
                        "hwm_kb": proc_mem(dq.pid)[1],
                    })
                    if samples[-1]["t"] >= t0 and cmdstats0 is None:
                        cmdstats0 = (now(), mon.info("commandstats"))
                t = now()
                if t0 <= t and spread_at is None:
                    time.sleep(0.05)  # the first claim pass: when it ends, to 50 ms
                else:
                    time.sleep(max(0.005, min(next_full, end, t0 if t < t0 else end) - t))
            cmdstats1 = (now(), mon.info("commandstats"))
            self.flow_claims = self.slowlog_claim_calls()
            stop.set()
            producer.join(timeout=5)
            time.sleep(lead + 1.5)  # B's last jobs come due and go out
            load_end = loadavg()
            dump_a = [l.split() for l in self.get(ep_a.url + "/dump").splitlines()]
            dump_b = [l.split() for l in self.get(ep_b.url + "/dump").splitlines()]
            log_lines = open(dq.log_path, errors="replace").read().splitlines()
            last_deferred = self.read_metric(metrics_path, "delayqs_deferred_total")
            left = (self.r.call("ZCARD", QUEUE), self.r.call("ZCARD", INFLIGHT))
            codes = self.stop_daemons(ps)
            ps = []
        finally:
            stop.set()
            if producer is not None:
                producer.join(timeout=5)
            if ps:
                self.stop_daemons(ps)
            self.stop_endpoint(ep_a)
            self.stop_endpoint(ep_b)
        self.fresh_redis()
        return self.flow_figures(t0, end, spread_at, samples, unspread_seen, produced, dump_a, dump_b,
                                 cmdstats0, cmdstats1, log_lines,
                                 last_deferred, left, codes, load_s, load_start, load_end)

    def flow_figures(self, t0, end, spread_at, samples, unspread_seen, produced, dump_a, dump_b,
                     cs0, cs1, log_lines, last_deferred, left, codes, load_s, load_start, load_end):
        a = self.a
        # Records: (n, body due, X-Delayqs-Due, arrival).
        A = [(int(n), float(d), float(h), float(t)) for n, d, h, t in dump_a]
        B = [(int(n), float(d), float(h), float(t)) for n, d, h, t in dump_b]
        window = end - t0
        spread_s = spread_at - t0 if spread_at else None

        def late_stats(rows):
            xs = sorted((t - h) * 1000 for _, _, h, t in rows if not math.isnan(h))
            if not xs:
                return {"count": 0}
            return {"count": len(xs), "p50_ms": percentile(xs, 50), "p99_ms": percentile(xs, 99),
                    "max_ms": xs[-1], "min_ms": xs[0]}

        # B's jobs by when they were due (X-Delayqs-Due): before A's backlog came due,
        # during its first claim pass, after it, and over the whole window.
        cut = spread_at if spread_at else end
        b_pre = [r for r in B if r[2] < t0]
        b_window = [r for r in B if t0 <= r[2] < end]
        b_transient = [r for r in b_window if r[2] < cut]
        b_steady = [r for r in b_window if r[2] >= cut]
        # The pass's tail is in b_steady: B's jobs due in its last moments go out just
        # after it. From a second after it on, B should be as if A were not there.
        b_settled = [r for r in b_window if r[2] >= cut + 1]
        produced_window = [p for p in produced if t0 <= p[3] < end]
        got_b = {r[0] for r in B}
        missing_b = [p[0] for p in produced if p[0] not in got_b]
        header_off_b = sum(1 for _, d, h, _ in B if math.isnan(h) or abs(h - d) > 0.0015)
        header_off_a = sum(1 for _, d, h, _ in A if math.isnan(h) or abs(h - d) > 0.0015)

        a_in = sorted(t for _, _, _, t in A if t0 <= t < end)
        settle = a.flow_settle
        a_after = [t for t in a_in if t >= t0 + settle]
        a_per_s = [0] * int(math.ceil(window))
        for t in a_in:
            a_per_s[min(len(a_per_s) - 1, int(t - t0))] += 1

        def phase(s0, s1, enclose=False):
            """Rates between the samples (one a second) inside [s0, s1], or with
            `enclose` the last at or before s0 to the first at or after s1."""
            if enclose:
                i0 = max([k for k, p in enumerate(samples) if p["t"] <= s0] or [0])
                i1 = min([k for k, p in enumerate(samples) if p["t"] >= s1] or [len(samples) - 1])
                x = samples[i0:i1 + 1]
            else:
                x = [p for p in samples if s0 <= p["t"] <= s1]
            if len(x) < 2:
                return None
            dt = x[-1]["t"] - x[0]["t"]
            d = lambda k: x[-1][k] - x[0][k]
            dd = (x[-1]["deferred"] - x[0]["deferred"]
                  if x[-1]["deferred"] is not None and x[0]["deferred"] is not None else None)
            return {
                "from_s": x[0]["t"] - t0, "to_s": x[-1]["t"] - t0,
                "dq_cpu_pct": 100 * d("dq_cpu") / dt,
                "redis_cpu_pct": 100 * d("redis_cpu") / dt,
                "endpoints_cpu_pct": 100 * d("ep_cpu") / dt,
                "redis_cmds_per_s": d("redis_cmds") / dt,
                "bench_cmds_per_s": d("ours") / dt,
                "delayqs_cmds_per_s": (d("redis_cmds") - d("ours")) / dt,
                "a_per_s": d("a") / dt,
                "b_per_s": d("b") / dt,
                "deferred_per_s": dd / dt if dd is not None else None,
            }

        pre = phase(t0 - a.flow_lead_in, t0)
        trans = phase(t0, spread_at or end, enclose=True)
        steady = phase(spread_at + 1 if spread_at else end, end)
        whole = phase(t0, end)

        def calls(cs, name):
            v = cs.get("cmdstat_" + name)
            return int(dict(p.split("=") for p in v.split(","))["calls"]) if v else 0

        cmd_rates = {}
        if cs0:
            span = cs1[0] - cs0[0]
            for k in cs1[1]:
                name = k[len("cmdstat_"):]
                c = calls(cs1[1], name) - calls(cs0[1], name)
                if c:
                    cmd_rates[name] = c / span

        # A per-second timeline of the window.
        timeline = []
        for sec in range(-int(a.flow_lead_in) + 1, int(math.ceil(window))):
            lo, hi = t0 + sec, t0 + sec + 1
            bl = sorted((t - h) * 1000 for _, _, h, t in B if lo <= h < hi)
            # The sample interval that ends first at or after the second's end.
            k = next((k for k, p in enumerate(samples) if p["t"] >= hi), None)
            row = {"s": sec, "a": sum(1 for _, _, _, t in A if lo <= t < hi), "b_due": len(bl),
                   "b_p50_ms": percentile(bl, 50), "b_p99_ms": percentile(bl, 99),
                   "b_max_ms": bl[-1] if bl else None}
            if k:
                p0, p1 = samples[k - 1], samples[k]
                dt = p1["t"] - p0["t"]
                row.update({
                    "dq_cpu_pct": 100 * (p1["dq_cpu"] - p0["dq_cpu"]) / dt,
                    "cmds_per_s": (p1["redis_cmds"] - p1["ours"] - p0["redis_cmds"] + p0["ours"]) / dt,
                    "deferred": p1["deferred"], "unspread": p1["unspread"], "due_now": p1["due_now"],
                })
            timeline.append(row)

        warn = [l for l in log_lines if " WARN " in l or " ERROR " in l]
        calls = getattr(self, "flow_claims", [])
        pass_end = spread_at if spread_at else t0

        def call_stats(us):
            us = sorted(us)
            if not us:
                return None
            return {"count": len(us), "p50_us": percentile(us, 50), "p99_us": percentile(us, 99),
                    "max_us": us[-1]}
        # SLOWLOG stamps whole seconds: a call in the pass's last second counts in it.
        if calls:
            print(f"[bench] flow: {len(calls)} claim calls logged, stamped {min(c[0] for c in calls)} to "
                  f"{max(c[0] for c in calls)}; t0 {t0:.1f}, pass end {pass_end:.1f}", file=sys.stderr)
        claim_pass = call_stats([us for ts, us in calls if int(t0) <= ts <= pass_end])
        claim_after = call_stats([us for ts, us in calls if ts > pass_end])
        return {
            "claim_calls_pass": claim_pass, "claim_calls_after": claim_after,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "a_jobs": a.flow_jobs, "a_limit_per_s": a.flow_rate, "a_burst": a.flow_rate,
            "b_per_s": a.flow_b_rate, "b_lead_s": a.flow_lead, "window_s": window,
            "a_load_s": load_s,
            "spread_s": spread_s,
            "unspread_trace": [(round(t, 2), n) for t, n in unspread_seen[::10]] + (
                [(round(unspread_seen[-1][0], 2), unspread_seen[-1][1])] if unspread_seen else []),
            "b_late_pre": late_stats(b_pre),
            "b_late_transient": late_stats(b_transient),
            "b_late_steady": late_stats(b_steady),
            "b_late_window": late_stats(b_window),
            "b_late_settled": late_stats(b_settled),
            "b_produced": len(produced), "b_produced_in_window": len(produced_window),
            "b_delivered": len(B), "b_missing": len(missing_b), "b_missing_first": missing_b[:10],
            "b_duplicates": len(B) - len(got_b),
            "b_producer_lag_ms_max": max(1000 * (w - at) for _, at, w, _ in produced) if produced else None,
            "a_delivered_window": len(a_in),
            "a_rate_window": len(a_in) / window,
            "a_rate_after_settle": len(a_after) / (window - settle) if window > settle else None,
            "a_settle_s": settle,
            "a_per_s_min_max_after_settle": ([min(a_per_s[int(settle):]), max(a_per_s[int(settle):])]
                                             if len(a_per_s) > settle else None),
            "a_delivered_total": len(A), "a_duplicates": len(A) - len({r[0] for r in A}),
            "a_late": late_stats(A),
            "header_due_differs": {"a": header_off_a, "b": header_off_b},
            "deferred_end_of_window": samples[-1]["deferred"] if samples else None,
            "deferred_at_stop": last_deferred,
            "deferred_at_spread": next((p["deferred"] for p in samples if spread_at and p["t"] >= spread_at), None),
            "phase_pre": pre, "phase_transient": trans, "phase_steady": steady, "phase_window": whole,
            "commands_per_s_window": dict(sorted(cmd_rates.items(), key=lambda kv: -kv[1])),
            "hwm_kb": max(p["hwm_kb"] for p in samples) if samples else None,
            "left_queue_inflight": left, "exit": codes,
            "load_start": load_start, "load_end": load_end,
            "log_warnings": warn[:20], "log_warning_count": len(warn),
            "log_tail": log_lines[-15:],
            "timeline": timeline,
        }

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


def flow_targets(f):
    if not f:
        return []
    w, st = f["b_late_window"], f["b_late_steady"]
    lo, hi = 0.9 * f["a_limit_per_s"], 1.1 * f["a_limit_per_s"]
    r = f["a_rate_after_settle"]
    return [
        (f"flow: host B's lateness p99 ≤ 50 ms while host A drains at its limit (whole {f['window_s']:.0f} s window)",
         f"{fmt(w.get('p99_ms'), 1)} ms (max {fmt(w.get('max_ms'), 1)} ms); after A's first claim pass "
         f"{fmt(st.get('p99_ms'), 1)} ms", w.get("p99_ms") is not None and w["p99_ms"] <= 50),
        (f"flow: host A delivered at {f['a_limit_per_s']}/s ± 10 %",
         f"{fmt(r, 1)}/s after the first {f['a_settle_s']} s ({fmt(f['a_rate_window'], 1)}/s over the window)",
         r is not None and lo <= r <= hi),
    ]


def flow_section(w, f, args, res, targets=False):
    """### Flow control (issue 17): its own date, commit and load, so that it may stand
    in a BENCHMARKS.md written by another run."""
    def late(x):
        if not x.get("count"):
            return "no jobs"
        return (f"{fmt(x['p50_ms'], 1)} / {fmt(x['p99_ms'], 1)} / {fmt(x['max_ms'], 1)} ms "
                f"({x['count']:,} jobs)")

    def ph(key, field, nd=0):
        vals = []
        for name in ("phase_pre", "phase_transient", "phase_steady"):
            p = f.get(name)
            vals.append(fmt(p.get(field), nd) if p and p.get(field) is not None else "n/a")
        return " / ".join(vals)

    spread = f["spread_s"]
    pass_txt = f"{spread:.1f} s" if spread is not None else f"not over within the {f['window_s']:.0f} s window"
    w("### Flow control (issue 17)")
    w("")
    w(f"- **Date:** {f['date']}; "
      f"**delayqs:** {args.git_desc}; one run (about {f['window_s'] + args.flow_lead_in + 5:.0f} s).")
    other = res.get("other_cpu_pct", {}).get("flow")
    w(f"- **Load:** load average {f['load_start']} when the scenario started, {f['load_end']} at its end"
      + (f"; processes outside the benchmark used {other:.0f} % of a core meanwhile (±10)" if other is not None else "")
      + ". 2 cores shared with the endpoints, redis-server and the producer.")
    w(f"- **Host A** (one endpoint, `127.0.0.1:PORT`): {f['a_jobs']:,} jobs all due at the same moment t0, "
      f"limited by `flowControl.hosts` to `perSecond` {f['a_limit_per_s']}, `burst` {f['a_burst']}. "
      f"**Host B** (a second endpoint, another port: another host, no limit): {f['b_per_s']} jobs/s "
      f"written by the producer, each due {f['b_lead_s']} s after it is written, from {args.flow_lead_in} s "
      f"before t0 to the end of the window, {f['window_s']:.0f} s after t0.")
    w("- Lateness: arrival at the endpoint − the request's `X-Delayqs-Due`; B's jobs are put in a phase "
      "by that due time. CPU from `/proc/PID/stat`; Redis commands from `INFO stats` "
      "`total_commands_processed` (which counts the commands scripts run, too) less those the "
      "benchmark sent itself; `delayqs_deferred_total` from the daemon's metrics file (every 1 s).")
    w("")
    if targets:
        w("| target (issue 17) | measured | |")
        w("| --- | --- | --- |")
        for name, got, good in flow_targets(f):
            w(f"| {name[len('flow: '):]} | {got} | {'**met**' if good else '**MISSED**'} |")
        w("")
    w(f"| | B alone, before t0 / A's first claim pass (t0 to +{pass_txt}) / after it, to the window's end |")
    w("| --- | --- |")
    w(f"| host B lateness p50 / p99 / max | {late(f['b_late_pre'])}; **{late(f['b_late_transient'])}**; "
      f"{late(f['b_late_steady'])} |")
    w(f"| delayqs CPU, % of one core | {ph(None, 'dq_cpu_pct')} |")
    w(f"| redis-server CPU, % of one core | {ph(None, 'redis_cpu_pct')} |")
    w(f"| Redis commands/s of delayqs (Δ total_commands_processed − the benchmark's) | {ph(None, 'delayqs_cmds_per_s')} |")
    w(f"| jobs deferred per second (`delayqs_deferred_total`) | {ph(None, 'deferred_per_s')} |")
    w(f"| host A delivered per second | {ph(None, 'a_per_s', 1)} |")
    w("")
    win = f["phase_window"] or {}
    mm = f["a_per_s_min_max_after_settle"]
    w("| over the whole window (t0 to t0 + %.0f s) | |" % f["window_s"])
    w("| --- | --- |")
    w(f"| host B lateness p50 / p99 / max | **{late(f['b_late_window'])}** |")
    if f.get("b_late_settled") and spread is not None:
        w(f"| host B lateness from 1 s after the pass on (due t0 + {spread + 1:.1f} s to the end) | "
          f"{late(f['b_late_settled'])} |")
    w(f"| A's first claim pass: until no job of the backlog was left at its first score (ZCOUNT, every 50 ms) | {pass_txt} |")
    for label, key in (("during the pass", "claim_calls_pass"), ("after it", "claim_calls_after")):
        c = f.get(key)
        if c:
            w(f"| claim.lua calls {label} (SLOWLOG): count / server time p50 / p99 / max | "
              f"{c['count']:,} / {fmt(c['p50_us'] / 1000, 2)} / {fmt(c['p99_us'] / 1000, 2)} / "
              f"{fmt(c['max_us'] / 1000, 2)} ms |")
    w(f"| host A delivered | {f['a_delivered_window']:,} = {fmt(f['a_rate_window'], 1)}/s; after the first "
      f"{f['a_settle_s']} s (the burst of {f['a_burst']}) {fmt(f['a_rate_after_settle'], 1)}/s"
      + (f", per second {mm[0]}–{mm[1]}" if mm else "") + " |")
    w(f"| `delayqs_deferred_total` | {fmt(f['deferred_at_spread'], 0)} at the end of the pass, "
      f"{fmt(f['deferred_end_of_window'], 0)} at the window's end |")
    w(f"| delayqs CPU / redis-server CPU, % of one core | {fmt(win.get('dq_cpu_pct'), 0)} / {fmt(win.get('redis_cpu_pct'), 0)} |")
    w(f"| Redis commands/s: delayqs / the benchmark's own | {fmt(win.get('delayqs_cmds_per_s'), 0)} / {fmt(win.get('bench_cmds_per_s'), 0)} |")
    top = list(f["commands_per_s_window"].items())[:6]
    w("| the busiest commands (`INFO commandstats`, all clients, calls/s) | "
      + ", ".join(f"{k} {v:,.0f}" for k, v in top) + " |")
    w(f"| peak RSS of delayqs (VmHWM) | {fmt(mb(f['hwm_kb']), 2)} MB |")
    w(f"| host B: written / delivered / missing / duplicates | {f['b_produced']:,} / {f['b_delivered']:,} / "
      f"{f['b_missing']} / {f['b_duplicates']} (the producer wrote at most {fmt(f['b_producer_lag_ms_max'], 0)} ms behind its schedule) |")
    w(f"| host A duplicates; requests whose `X-Delayqs-Due` is not the job's first due (A / B) | "
      f"{f['a_duplicates']}; {f['header_due_differs']['a']} / {f['header_due_differs']['b']} |")
    w(f"| WARN or ERROR lines in the daemon's log | {f['log_warning_count']} |")
    w("")
    # The timeline: every second of the pass and a little after, then every 5 s.
    last_pass = int(math.ceil(spread)) + 3 if spread is not None else 10 ** 9
    w("Per second from t0: A's deliveries and B's jobs due in that second; A's jobs not yet claimed, the")
    w("jobs due in the queue and `delayqs_deferred_total` as read at the second's end; delayqs CPU and")
    w("its Redis commands/s over the second.")
    w("")
    w("| s | A delivered | B due | B p99 ms | B max ms | A not yet claimed | due in the queue | deferred total | delayqs CPU % | commands/s |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in f["timeline"]:
        sec = row["s"]
        if sec < -2 or (sec > last_pass and sec % 5):
            continue
        w(f"| {sec} | {row['a']} | {row['b_due']} | {fmt(row['b_p99_ms'], 1)} | {fmt(row['b_max_ms'], 1)} | "
          f"{fmt(row.get('unspread'), 0)} | {fmt(row.get('due_now'), 0)} | {fmt(row.get('deferred'), 0)} | "
          f"{fmt(row.get('dq_cpu_pct'), 0)} | {fmt(row.get('cmds_per_s'), 0)} |")
    w("")
    if f["log_warnings"]:
        w("The daemon's WARN and ERROR lines (first few):")
        w("")
        w("```")
        for line in f["log_warnings"][:8]:
            w(line[:300])
        w("```")
        w("")
    w("Reproduce (builds the release binary, starts its own redis-server and endpoints; about 2 minutes):")
    w("")
    w("```sh")
    w("BENCH_ONLY=flow make bench    # = BENCH_ONLY=flow bench/run.sh; prints JSON, writes bench/target/flow.md")
    w("```")
    w("")
    w("delayqs config (`$WORK` the run's temporary directory):")
    w("")
    w("```json")
    w(res["commands"].get("flow config", ""))
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
    targets += flow_targets(res.get("flow"))

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
    if res.get("flow"):
        flow_section(w, res["flow"], args, res)
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
    raw = {k: res[k] for k in SCENARIOS if k in res}
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
    ap.add_argument("--endpoint-bin", default=None,
                    help="the bench endpoint's binary: the flow scenario starts two more")
    ap.add_argument("--flow-md", default=None,
                    help="with --only flow: where to write the flow section of BENCHMARKS.md")
    ap.add_argument("--baseline", default=None,
                    help="a delayqs binary from before shards, measured beside shards 1 and 3")
    ap.add_argument("--baseline-desc", default="")
    ap.add_argument("--only", type=lambda v: v.split(","), default=None,
                    help="comma-separated scenarios to run (prints JSON, leaves BENCHMARKS.md alone)")
    a = ap.parse_args()
    if a.only and not set(a.only) <= set(SCENARIOS):
        ap.error(f"--only takes some of {', '.join(SCENARIOS)}")
    if (not a.only or "flow" in a.only) and not a.endpoint_bin:
        ap.error("the flow scenario needs --endpoint-bin")
    # Sizes from issue 6.
    a.wrk_seconds = 3
    a.claim_calls = 10000
    a.burst_jobs = 20000
    a.burst_timeout = 60
    a.steady_jobs, a.steady_seconds, a.lead = 3000, 15, 2
    a.idle_seconds = 10
    a.backlog_small, a.backlog_big = 1000, 1_000_000
    a.stream_jobs, a.stream_seconds = 1000, 5
    # Issue 17: host A's backlog and limit, host B's stream, the window (once, not --runs
    # times: it takes about 85 s).
    a.flow_jobs, a.flow_rate = 100_000, 100
    a.flow_b_rate, a.flow_lead = 50, 0.5
    a.flow_window, a.flow_lead_in, a.flow_settle = 70, 8, 2
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
        a.flow_jobs, a.flow_window, a.flow_lead_in = 5_000, 10, 4
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
        if res.get("flow") and a.flow_md:
            lines = []
            flow_section(lines.append, res["flow"], a, res, targets=True)
            with open(a.flow_md, "w") as f:
                f.write("\n".join(lines) + "\n")
            print(f"[bench] the flow section for BENCHMARKS.md: {a.flow_md}", file=sys.stderr)
            for name, got, good in flow_targets(res["flow"]):
                print(f"  {'met   ' if good else 'MISSED'}  {name}: {got}", file=sys.stderr)
        return
    targets = write_markdown(res, a, a.out)
    print(f"[bench] {a.out} written; whole run {res['total_s']:.0f} s", file=sys.stderr)
    for name, got, good in targets:
        print(f"  {'met   ' if good else 'MISSED'}  {name}: {got}", file=sys.stderr)
    for n in res["notes"]:
        print(f"  note: {n}", file=sys.stderr)


if __name__ == "__main__":
    main()
