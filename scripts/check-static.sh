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
# Still position-independent (ASLR), its relocations packed (.cargo/config.toml), and
# applied right at start: a config check touches tables of pointers throughout.
readelf -h "$bin" | grep -q 'DYN' || { echo "static check FAILED: not a static PIE" >&2; exit 1; }
"$bin" run --check --config config/flow-control.json >/dev/null 2>&1 ||
  { echo "static check FAILED: run --check of config/flow-control.json" >&2; exit 1; }
# The budget for the one file users copy to a host: 3.5 MB (decimal).
size=$(stat -c %s "$bin")
budget=3500000
if [ "$size" -gt "$budget" ]; then
  echo "static check FAILED: $bin is $size bytes, over the budget of $budget (3.5 MB)" >&2
  exit 1
fi
echo "static check: ok ($size bytes of $budget, ldd: $out)"
