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

QUEUE = "DelayQs:job_zqueue"
INFLIGHT = "DelayQs:inflight"
ATTEMPTS = "DelayQs:attempts"
FAILED = "DelayQs:fail_job"
STAGING = "bench:staging"
TICK = os.sysconf("SC_CLK_TCK")
SCENARIOS = ("ceiling_http", "ceiling_claim", "burst", "burst_replicated", "steady", "idle", "backlog")


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
        self.claim_src = open(args.claim_script, "rb").read()
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
