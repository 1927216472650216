#!/usr/bin/env bash
# `make bench`: the delayqs benchmark of issue 6, written to BENCHMARKS.md.
#
# Builds delayqs (release) and the benchmark endpoint into bench/target, starts a
# private redis-server and the endpoint on 127.0.0.1 (free ports), and runs
# bench/bench.py, which starts delayqs for each run of each scenario. Everything
# started here is stopped on exit, however the script ends.
#
# Environment:
#   BENCH_RUNS=3          runs per scenario (figures are medians)
#   BENCH_QUICK=1         one short run of everything, a smoke test (~45 s); writes
#                         bench/target/BENCHMARKS-quick.md, never the real figures
#   BENCH_OUT=path        where to write (default BENCHMARKS.md)
#   BENCH_ONLY=a,b        just these scenarios, printed as JSON (BENCHMARKS.md untouched):
#                         ceiling_http ceiling_claim burst burst_replicated steady idle
#                         backlog burst_3daemons burst_cluster shards flow
#                         (flow, issue 17: also writes its BENCHMARKS.md section to
#                         bench/target/flow.md; BENCH_ONLY=flow takes about 2 minutes)
#   BENCH_DELAYQS=path    measure this binary instead of building one (before/after)
#   BENCH_BASELINE=path   a delayqs from before shards, run beside shards 1 and 3 in the
#                         `shards` scenario ("one shard no slower than today's single key")
# Takes about 8 minutes on 2 cores once built (the burst_cluster scenario starts a
# 3-master Redis Cluster on loopback with redis-cli --cluster create).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bench=$root/bench
export CARGO_TARGET_DIR=$bench/target
runs=${BENCH_RUNS:-3}
out=${BENCH_OUT:-$root/BENCHMARKS.md}
extra=()
if [ "${BENCH_QUICK:-0}" = 1 ]; then
  extra+=(--quick)
  out=${BENCH_OUT:-$bench/target/BENCHMARKS-quick.md}
fi
[ -n "${BENCH_ONLY:-}" ] && extra+=(--only "$BENCH_ONLY")
if [ -n "${BENCH_BASELINE:-}" ]; then
  baseline=$(realpath "$BENCH_BASELINE")
  [ -x "$baseline" ] || { echo "[bench] BENCH_BASELINE=$BENCH_BASELINE is not an executable" >&2; exit 1; }
  extra+=(--baseline "$baseline" --baseline-desc "$(basename "$baseline"), sha256 $(sha256sum "$baseline" | cut -c1-12)")
fi

say() { echo "[bench] $*" >&2; }

# ---------------------------------------------------------------- prerequisites
need() { # Debian package, command
  command -v "$2" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "$2 is missing: installing Debian's $1 package"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
  else
    say "$2 is missing: install it first (Debian: sudo apt-get install -y $1)"
    exit 1
  fi
  command -v "$2" >/dev/null
}
# wrk and redis-benchmark measure the ceilings only.
only=",${BENCH_ONLY:-ceiling_http,ceiling_claim},"
if [[ $only == *,ceiling_http,* ]]; then need wrk wrk; fi
need redis-server redis-server
need redis-tools redis-cli
if [[ $only == *,ceiling_claim,* ]]; then need redis-tools redis-benchmark; fi
for c in python3 cargo; do
  command -v "$c" >/dev/null || { say "$c is required"; exit 1; }
done

# ---------------------------------------------------------------- build
mkdir -p "$CARGO_TARGET_DIR"
if [ -n "${BENCH_DELAYQS:-}" ]; then
  delayqs=$(realpath "$BENCH_DELAYQS")
  [ -x "$delayqs" ] || { say "BENCH_DELAYQS=$BENCH_DELAYQS is not an executable"; exit 1; }
  say "measuring the prebuilt $delayqs"
else
  say "building delayqs into $CARGO_TARGET_DIR"
  if ! cargo build --release --locked --quiet; then
    say "building delayqs failed (see above; --locked needs a Cargo.lock that matches Cargo.toml)"
    exit 1
  fi
  delayqs=$CARGO_TARGET_DIR/release/delayqs
fi
cargo build --release --quiet --manifest-path "$bench/endpoint/Cargo.toml"
endpoint=$CARGO_TARGET_DIR/release/bench-endpoint

# ---------------------------------------------------------------- processes
work=$(mktemp -d "${TMPDIR:-/tmp}/delayqs-bench.XXXXXX")
pidfile=$work/pids
: >"$pidfile"
redis_pid= endpoint_pid=

stop_pid() { # pid: TERM, up to 5 s, then KILL
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # The driver (through `timeout`), then what it started (delayqs), then ours.
  if [ -s "$pidfile" ]; then
    while read -r pid; do [ -n "$pid" ] && stop_pid "$pid"; done <"$pidfile"
  fi
  [ -n "$endpoint_pid" ] && stop_pid "$endpoint_pid"
  [ -n "$redis_pid" ] && stop_pid "$redis_pid"
  wait 2>/dev/null || true
  if [ "$rc" != 0 ] && [ -d "$work" ]; then
    say "failed (exit $rc); last lines of the logs:"
    tail -n 20 "$work"/*.log >&2 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$work" --loglevel warning >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 100); do
  redis-cli -p "$redis_port" PING >/dev/null 2>&1 && break
  sleep 0.05
done
redis-cli -p "$redis_port" PING >/dev/null || { say "redis-server did not start"; exit 1; }

"$endpoint" 0 >"$work/endpoint.log" 2>&1 &
endpoint_pid=$!
endpoint_port=
for _ in $(seq 100); do
  endpoint_port=$(sed -n 's/^listening 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/endpoint.log" | head -1)
  [ -n "$endpoint_port" ] && break
  sleep 0.05
done
[ -n "$endpoint_port" ] || { say "the endpoint did not start"; exit 1; }
say "redis-server on 127.0.0.1:$redis_port (pid $redis_pid), endpoint on 127.0.0.1:$endpoint_port (pid $endpoint_pid)"

# What was measured: the commit, and whether the working tree differed from it.
commit=$(git --no-optional-locks rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "${BENCH_DELAYQS:-}" ]; then
  git_desc="the prebuilt binary $BENCH_DELAYQS (sha256 $(sha256sum "$delayqs" | cut -c1-12)); tree at commit $commit"
elif [ -n "$(git --no-optional-locks status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
  git_desc="commit $commit with uncommitted changes to src/ or Cargo files"
else
  git_desc="commit $commit"
fi

# ---------------------------------------------------------------- run
# The timeout is a safety net: the scenarios take about 7 minutes. The driver runs in
# the background and we `wait`, so that a signal to this script runs the trap at once.
timeout --signal=TERM 1500 python3 "$bench/bench.py" \
  --redis-port "$redis_port" --redis-pid "$redis_pid" \
  --endpoint-port "$endpoint_port" --endpoint-pid "$endpoint_pid" \
  --delayqs "$delayqs" --endpoint-bin "$endpoint" --flow-md "$CARGO_TARGET_DIR/flow.md" \
  --claim-script "$root/src/store/scripts/claim.lua" \
  --workdir "$work" --pidfile "$pidfile" --out "$out" \
  --analysis "$bench/analysis.md" \
  --redis-cmd "redis-server --port PORT --bind 127.0.0.1 --save \"\" --appendonly no --dir \$WORK --loglevel warning" \
  --endpoint-cmd "bench/target/release/bench-endpoint 0   # prints 'listening 127.0.0.1:PORT'" \
  --git-desc "$git_desc" --runs "$runs" ${extra[@]+"${extra[@]}"} &
driver_pid=$!
echo "$driver_pid" >>"$pidfile"
wait "$driver_pid"
