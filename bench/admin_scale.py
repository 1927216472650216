#!/usr/bin/env python3
"""The admin commands at scale (issue 16): fills a private redis-server with a million
pending jobs and 300,000 failed records, then times `pending`, `show <prefix>`,
`cancel <prefix>`, `failed list --host`, and a filtered `failed purge`, with every
Redis command's own duration from SLOWLOG (slowlog-log-slower-than 0).

    cargo build --release && bench/admin_scale.py target/release/delayqs [PENDING FAILED]

A measurement, not a test: nothing here asserts a time. Standard library only; the
fill goes through `redis-cli --pipe`.
"""

import collections
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

QUEUE, FAILED = "DelayQs:job_zqueue", "DelayQs:fail_job"


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def fill(pending, failed, now):
    """RESP for --pipe: ZADDs of 1000 jobs, RPUSHes of 1000 records."""
    batch = []
    for i in range(pending):
        m = json.dumps({"body": {"orderId": i, "note": "close the order if unpaid"},
                        "callback": "http://shop%d.example/orderTimeOut.php" % (i % 50),
                        "sign": "%032x" % i}, separators=(",", ":"))
        batch += ["%.6f" % (now + 3600 + i * 0.01), m]
        if len(batch) >= 2000:
            yield resp("ZADD", QUEUE, *batch)
            batch = []
    if batch:
        yield resp("ZADD", QUEUE, *batch)
    records = []
    for i in range(failed):
        cb = "http://host%d.example/cb" % (i % 100)
        m = json.dumps({"body": {"orderId": i}, "callback": cb}, separators=(",", ":"))
        error = "HTTP 500: upstream timed out" if i % 2 else "connection refused (os error 111)"
        records.append(json.dumps({"body": {"orderId": i}, "callback": cb,
                                   "Id": hashlib.sha1(m.encode()).hexdigest(), "attempts": 6,
                                   "error": error, "dueAt": round(now - 86400 + i * 0.1, 3),
                                   "failedAt": round(now - 86400 + i * 0.2, 3), "member": m},
                                  separators=(",", ":")))
        if len(records) >= 1000:
            yield resp("RPUSH", FAILED, *records)
            records = []
    if records:
        yield resp("RPUSH", FAILED, *records)


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                          text=True, check=True).stdout


def slowlog(port):
    """Per command: calls, total, p99 and max in ms; and the slowest one."""
    entries = json.loads(cli(port, "--json", "slowlog", "get", "10000000"))
    by = collections.defaultdict(list)
    for _, _, us, args, *_ in entries:
        name = args[0].upper()
        if name not in ("SLOWLOG", "CONFIG"):
            by[name].append((us, " ".join(a[:30] for a in args[:5])))
    lines = []
    for name, calls in sorted(by.items(), key=lambda kv: -sum(u for u, _ in kv[1])):
        us = sorted(u for u, _ in calls)
        p99 = us[min(len(us) - 1, int(0.99 * len(us)))]
        worst = max(calls)
        lines.append("    %-8s %6d calls  total %8.1f ms  p99 %6.3f ms  max %6.3f ms (%s)" % (
            name, len(us), sum(us) / 1000, p99 / 1000, worst[0] / 1000, worst[1]))
    return lines


def main():
    binary = os.path.abspath(sys.argv[1])
    pending = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    failed = int(sys.argv[3]) if len(sys.argv) > 3 else 300_000
    work = tempfile.mkdtemp(prefix="delayqs-admin-scale-")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", work],
                              stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        start = time.time()
        pipe = subprocess.Popen(["redis-cli", "-p", str(port), "--pipe"],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        for chunk in fill(pending, failed, time.time()):
            pipe.stdin.write(chunk)
        pipe.stdin.close()
        pipe.wait()
        print("filled %d pending, %d failed in %.1f s" % (
            pending, failed, time.time() - start))
        config = os.path.join(work, "config.json")
        with open(config, "w") as f:
            json.dump({"redis": "redis://127.0.0.1:%d/" % port}, f)
        cli(port, "config", "set", "slowlog-log-slower-than", "0")
        cli(port, "config", "set", "slowlog-max-len", "10000000")
        first = cli(port, "zrange", QUEUE, "0", "0").strip()
        prefix = hashlib.sha1(first.encode()).hexdigest()[:8]
        runs = [
            ["pending"],
            ["pending", "--limit", "0"],
            ["show", prefix],
            ["failed", "list", "--host", "host7.example"],
            ["failed", "list", "--limit", "0", "--json"],
            ["failed", "purge", "--host", "host7.example"],
            ["cancel", prefix],
        ]
        for args in runs:
            cli(port, "slowlog", "reset")
            start = time.time()
            out = subprocess.run([binary, *args, "--config", config], capture_output=True)
            took = time.time() - start
            print("%s: exit %d, %.2f s, %d lines" % (
                " ".join(args), out.returncode, took, out.stdout.count(b"\n")))
            print("\n".join(slowlog(port)))
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
