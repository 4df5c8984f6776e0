#!/usr/bin/env bash
# Installs cleanroom into .venv and runs the demo on the embedded default
# (simulated SGX platform, everything on this machine, in a temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
# The demo's function needs only the standard library runtime (python3.11).
as_root=""
[ "$(id -u)" -eq 0 ] || [ -n "${CLEANROOM_RUNTIMES_DIR:-}" ] || as_root="sudo"
if [ ! -x /usr/bin/python3.11 ] && [ ! -x /usr/local/bin/python3.11 ]; then
  # A runtime is a venv of the system's python3.11, which every user may run.
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    python3.11 >/dev/null
fi
$as_root .venv/bin/cleanroom runtime install python3.11
$as_root .venv/bin/cleanroom measure --write >/dev/null
.venv/bin/cleanroom demo "$@"
