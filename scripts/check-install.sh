#!/usr/bin/env bash
# `make install` into a DESTDIR tree: binary, completions, man page and config land,
# the completion completes and the page renders, an existing config is kept, `make
# uninstall` removes all but the config. Then the service files: the runit scripts
# parse and svlogd adds no second timestamp, and the systemd unit can write the
# directories it offers.
set -euo pipefail
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
fail() { echo "install check FAILED: $*" >&2; exit 1; }

make -s install DESTDIR="$root" PREFIX=/usr >/dev/null
[ -x "$root/usr/bin/delayqs" ] || fail "no $root/usr/bin/delayqs"
"$root/usr/bin/delayqs" --version | grep -q '^delayqs ' || fail "the installed binary does not answer --version"
cmp -s config/config.json "$root/etc/delayqs/config.json" || fail "the example config was not installed"
[ "$(stat -c %a "$root/etc/delayqs/config.json")" = 640 ] || fail "the config is not mode 640"

share=$root/usr/share
bash_completion=$share/bash-completion/completions/delayqs
for f in "$bash_completion" "$share/zsh/site-functions/_delayqs" "$share/man/man1/delayqs.1"; do
  [ -f "$f" ] || fail "no $f"
  [ "$(stat -c %a "$f")" = 644 ] || fail "$f is not mode 644"
done
# What bash-completion does with the file: source it, then complete `delayqs fa`.
offered=$(bash --norc -c 'source "$1"; COMP_WORDS=(delayqs fa); COMP_CWORD=1; _delayqs; echo "${COMPREPLY[*]}"' _ "$bash_completion")
[ "$offered" = failed ] || fail "the installed bash completion offers \"$offered\" for \`delayqs fa\`"
head -1 "$share/zsh/site-functions/_delayqs" | grep -qx '#compdef delayqs' || fail "the zsh completion lacks #compdef"
if command -v man >/dev/null; then
  MANWIDTH=80 man -l "$share/man/man1/delayqs.1" 2>&1 | grep -Eq 'delayqs +failed +retry' || fail "the installed man page does not render"
fi

echo '{"concurrency": 7}' >"$root/etc/delayqs/config.json"
make -s install DESTDIR="$root" PREFIX=/usr >/dev/null
grep -q '"concurrency": 7' "$root/etc/delayqs/config.json" || fail "an existing config was overwritten"

make -s uninstall DESTDIR="$root" PREFIX=/usr >/dev/null
[ ! -e "$root/usr/bin/delayqs" ] || fail "uninstall left the binary"
left=$(find "$share" -type f)
[ -z "$left" ] || fail "uninstall left $left"
[ -e "$root/etc/delayqs/config.json" ] || fail "uninstall removed the config"

# runit: both scripts parse; svlogd is not asked for timestamps (-t, -tt, -ttt), as
# every delayqs line starts with its own.
for f in config/runit/run config/runit/log/run; do
  [ -x "$f" ] || fail "$f is not executable"
  sh -n "$f" || fail "$f does not parse"
done
grep -Eq '^exec .*svlogd ' config/runit/log/run || fail "config/runit/log/run does not exec svlogd"
! grep -Eq '^exec .*svlogd.* -t' config/runit/log/run || fail "config/runit/log/run makes svlogd add timestamps"

# systemd: under ProtectSystem=strict only the unit's writable paths can be written:
# the log and state directories its comments offer for logDir and metricsFile must be
# there, and the way to add others said.
unit=config/delayqs.service
grep -qx 'ProtectSystem=strict' "$unit" || fail "$unit is not ProtectSystem=strict any more: revisit this check"
grep -qx 'LogsDirectory=delayqs' "$unit" || fail "$unit lacks LogsDirectory=delayqs"
grep -qx 'StateDirectory=delayqs' "$unit" || fail "$unit lacks StateDirectory=delayqs"
grep -q '^#ReadWritePaths=' "$unit" || fail "$unit does not say how to add ReadWritePaths"
grep -q '"pid": "/run/delayqs/delayqs.pid"' config/config.json || fail "config/config.json does not set the pid under /run/delayqs"
echo "install check: ok (DESTDIR tree, completions, man page, config kept, uninstall, runit and systemd files)"
