#!/usr/bin/env bash
# `make run`: runs delayqs in the foreground with the given config, and any further
# arguments for `delayqs run` (make passes --log-level debug: a line per delivery).
# When no Redis answers at 127.0.0.1:6379 it starts a private, throwaway redis-server
# for this session and stops it again when delayqs exits.
set -euo pipefail
bin=$1 config=$2
private=
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  dir=$(mktemp -d)
  echo "no Redis answers at 127.0.0.1:6379: starting a private redis-server (data in $dir, gone on exit)"
  redis-server --port 6379 --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
  private=$!
  trap 'kill $private 2>/dev/null; rm -rf "$dir"' EXIT
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 0.1; done
fi
echo "delayqs is running; add a job from another terminal (see README), stop with Ctrl-C"
"$bin" run --config "$config" "${@:3}"
