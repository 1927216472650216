#!/usr/bin/env bash
# `make static` gives a fully static binary that runs.
set -euo pipefail
bin=target/x86_64-unknown-linux-musl/release/delayqs
make -s static >/dev/null
out=$(ldd "$bin" 2>&1 || true)
case "$out" in
  *"not a dynamic executable"*|*"statically linked"*) ;;
  *) echo "static check FAILED: ldd says: $out" >&2; exit 1 ;;
esac
"$bin" --version | grep -q '^delayqs ' || { echo "static check FAILED: no --version" >&2; exit 1; }
echo "static check: ok ($(stat -c %s "$bin") bytes, ldd: $out)"
