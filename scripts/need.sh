#!/usr/bin/env bash
# need.sh COMMAND PACKAGE [SUITE]: makes sure COMMAND exists, installing Debian's
# PACKAGE when it does not (as root, or with sudo), or says plainly how to get it.
# With SUITE (e.g. bookworm-backports), the package comes from that suite, whose apt
# source is added first when the system has none for it. NEED_CHECK, when set, is a
# shell test that stands for COMMAND (a PHP module has no command of its own).
set -euo pipefail
cmd=$1 pkg=$2 suite=${3:-}
have() { if [ -n "${NEED_CHECK:-}" ]; then bash -c "$NEED_CHECK"; else command -v "$cmd" >/dev/null; fi; }
have && exit 0
how="apt-get install $pkg"
[ -n "$suite" ] && how="add the $suite suite to apt's sources, then apt-get install -t $suite $pkg"
if command -v apt-get >/dev/null; then
  sudo=
  [ "$(id -u)" = 0 ] || sudo=sudo
  if [ -z "$sudo" ] || command -v sudo >/dev/null; then
    echo "$cmd is missing: installing Debian's $pkg package${suite:+ from $suite}"
    target=()
    if [ -n "$suite" ]; then
      if ! grep -rqs "$suite" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$suite" |
          $sudo tee "/etc/apt/sources.list.d/$suite.sources" >/dev/null
      fi
      target=(-t "$suite")
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${target[@]}" "$pkg" >/dev/null
    have && exit 0
  fi
fi
echo "$cmd is missing and could not be installed here: install your system's $pkg package (Debian: $how)" >&2
exit 1
