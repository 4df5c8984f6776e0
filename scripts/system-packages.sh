#!/usr/bin/env bash
# Installs Debian packages the machine lacks (as root, or with sudo), quietly.
#   scripts/system-packages.sh COMMAND=PACKAGE ...
# e.g. `bwrap=bubblewrap`: installs bubblewrap unless `bwrap` is already on PATH.
set -euo pipefail
missing=()
for pair in "$@"; do
  command=${pair%%=*}
  package=${pair#*=}
  command -v "$command" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "== installing Debian packages: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
