#!/usr/bin/env bash
# `make install` into a DESTDIR tree: binary and config land, an existing config is
# kept, `make uninstall` removes the binary only.
set -euo pipefail
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
fail() { echo "install check FAILED: $*" >&2; exit 1; }

make -s install DESTDIR="$root" PREFIX=/usr >/dev/null
[ -x "$root/usr/bin/delayqs" ] || fail "no $root/usr/bin/delayqs"
"$root/usr/bin/delayqs" --version | grep -q '^delayqs ' || fail "the installed binary does not answer --version"
cmp -s config/config.json "$root/etc/delayqs/config.json" || fail "the example config was not installed"

echo '{"concurrency": 7}' >"$root/etc/delayqs/config.json"
make -s install DESTDIR="$root" PREFIX=/usr >/dev/null
grep -q '"concurrency": 7' "$root/etc/delayqs/config.json" || fail "an existing config was overwritten"

make -s uninstall DESTDIR="$root" PREFIX=/usr >/dev/null
[ ! -e "$root/usr/bin/delayqs" ] || fail "uninstall left the binary"
[ -e "$root/etc/delayqs/config.json" ] || fail "uninstall removed the config"
echo "install check: ok (DESTDIR tree, config kept, uninstall)"
