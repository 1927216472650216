#!/usr/bin/env bash
# `make chaos`: the chaos run of issue 7. Builds delayqs into chaos/target, then
# chaos/chaos.py starts a private redis-server (appendonly, appendfsync always), a
# faulty endpoint and three daemons on 127.0.0.1, kills daemons and restarts Redis
# under a printed seed, and checks that no job was lost. Last line: "N passed, M failed".
#
# Environment:
#   CHAOS_SHORT=1       CI variant: ~3,000 jobs, under 2 minutes (RELIABILITY.md untouched)
#   CHAOS_SEED=n        replay a seed (printed at the start of every run)
#   CHAOS_KEEP=1        keep the work dir (logs, AOF, endpoint log) even when all pass
#   CHAOS_DELAYQS=path  use this binary instead of building one
#   CHAOS_REPORT=path   where the full run writes its figures (default RELIABILITY.md)
#   CHAOS_SENTINEL=1    a master, a replica and 3 sentinels; failovers instead of Redis
#                       restarts (its figures go to RELIABILITY.md's "Sentinel mode")
#   CHAOS_CLUSTER=1     a Redis Cluster of 3 masters and 3 replicas, the queue in 3 shards;
#                       CLUSTER FAILOVERs, kill -9s of masters and redis-cli --cluster
#                       reshards instead of Redis restarts ("Cluster mode")
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
need=(redis-server python3)
[ "${CHAOS_SENTINEL:-0}" = 1 ] && need+=(redis-sentinel)
[ "${CHAOS_CLUSTER:-0}" = 1 ] && need+=(redis-cli)
for c in "${need[@]}"; do
  command -v "$c" >/dev/null || { echo "[chaos] $c is required" >&2; exit 1; }
done
if [ -n "${CHAOS_DELAYQS:-}" ]; then
  bin=$(realpath "$CHAOS_DELAYQS")
else
  CARGO_TARGET_DIR=$root/chaos/target cargo build --release --quiet
  bin=$root/chaos/target/release/delayqs
fi
export CHAOS_REPORT=${CHAOS_REPORT:-$root/RELIABILITY.md}

driver=
stop_driver() {
  if [ -n "$driver" ] && kill -0 "$driver" 2>/dev/null; then
    kill -TERM "$driver" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$driver" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$driver" 2>/dev/null || true
  fi
}
trap stop_driver EXIT
trap 'exit 130' INT TERM
python3 "$root/chaos/chaos.py" "$bin" &
driver=$!
set +e
wait "$driver"
rc=$?
driver=
exit $rc
