#!/usr/bin/env bash
# need.sh COMMAND PACKAGE: makes sure COMMAND exists, installing Debian's PACKAGE
# when it does not (as root, or with sudo), or says plainly how to get it.
set -euo pipefail
cmd=$1 pkg=$2
command -v "$cmd" >/dev/null && exit 0
if command -v apt-get >/dev/null; then
  sudo=
  [ "$(id -u)" = 0 ] || sudo=sudo
  if [ -z "$sudo" ] || command -v sudo >/dev/null; then
    echo "$cmd is missing: installing Debian's $pkg package"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null
    command -v "$cmd" >/dev/null && exit 0
  fi
fi
echo "$cmd is missing and could not be installed here: install your system's $pkg package (Debian: apt-get install $pkg)" >&2
exit 1
