#!/usr/bin/env python3
"""What `delayqs top` costs Redis per refresh (issue 16): fills a private redis-server
as bench/admin_scale.py does (a million pending jobs, 300,000 failed records) plus
2,000 jobs in flight and 20,000 attempt counts, runs `delayqs top` in a tmux pane
for a while, and reports the Redis commands per refresh from `INFO commandstats`
deltas (one `TIME` per refresh counts the refreshes), with each command's time.

    cargo build --release && bench/top_cost.py target/release/delayqs [SECONDS]

A measurement, not a test. Needs tmux and redis-cli.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from admin_scale import QUEUE, cli, fill, resp  # noqa: E402

INFLIGHT, ATTEMPTS = "DelayQs:inflight", "DelayQs:attempts"


def commandstats(port):
    """Per command: (calls, usec)."""
    stats = {}
    for line in cli(port, "info", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, fields = line[len("cmdstat_"):].split(":", 1)
            f = dict(kv.split("=") for kv in fields.split(","))
            stats[name] = (int(f["calls"]), float(f["usec"]))
    return stats


def main():
    binary = os.path.abspath(sys.argv[1])
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    work = tempfile.mkdtemp(prefix="delayqs-top-cost-")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", work],
                              stdout=subprocess.DEVNULL)
    tmux = ["tmux", "-S", os.path.join(work, "tmux.sock")]
    try:
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        now = time.time()
        pipe = subprocess.Popen(["redis-cli", "-p", str(port), "--pipe"],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        for chunk in fill(1_000_000, 300_000, now):
            pipe.stdin.write(chunk)
        for i in range(0, 20_000, 1000):
            flying, counts = [], []
            for j in range(i, i + 1000):
                m = json.dumps({"body": j, "callback": "http://fly%d.example/cb" % (j % 20)})
                if j < 2000:
                    flying += ["%.3f" % (now + 60), m]
                counts += [m, "1:%.3f t%d" % (now, j) if j < 2000 else "2:%.3f @%.6f" % (now, now)]
            if flying:
                pipe.stdin.write(resp("ZADD", INFLIGHT, *flying))
            pipe.stdin.write(resp("HSET", ATTEMPTS, *counts))
        pipe.stdin.close()
        pipe.wait()
        config = os.path.join(work, "config.json")
        with open(config, "w") as f:
            json.dump({"redis": "redis://127.0.0.1:%d/" % port}, f)
        print("queue: %s pending, %s in flight, %s attempt counts, %s failed records" % (
            cli(port, "zcard", QUEUE).strip(), cli(port, "zcard", INFLIGHT).strip(),
            cli(port, "hlen", ATTEMPTS).strip(), cli(port, "llen", "DelayQs:fail_job").strip()))
        subprocess.run([*tmux, "new-session", "-d", "-x", "120", "-y", "40",
                        "%s top --config %s" % (binary, config)], check=True)
        time.sleep(3)  # past the first refresh, which reads every tail and probes shards
        before = commandstats(port)
        time.sleep(seconds)
        after = commandstats(port)
        screen = subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True,
                                text=True).stdout
        refreshes = after["time"][0] - before.get("time", (0, 0))[0]
        total_calls, total_us = 0, 0.0
        print("%d refreshes in %d s; per refresh:" % (refreshes, seconds))
        for name in sorted(after):
            calls = after[name][0] - before.get(name, (0, 0))[0]
            us = after[name][1] - before.get(name, (0, 0))[1]
            if name == "info":
                calls -= 1  # this script's own INFO before
            if calls <= 0:
                continue
            total_calls += calls
            total_us += us
            print("  %-10s %6.2f calls  %8.1f us" % (name, calls / refreshes, us / refreshes))
        print("  %-10s %6.2f calls  %8.1f us of Redis time" % (
            "all", total_calls / refreshes, total_us / refreshes))
        print("the screen at the end:\n" + screen)
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
