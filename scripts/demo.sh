#!/usr/bin/env bash
# Installs cleanroom into .venv and runs the demo on the embedded default
# (simulated SGX platform, everything on this machine, in a temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."

# Functions run in bubblewrap (the sandbox) with util-linux's setpriv, unshare, mount.
bash scripts/system-packages.sh bubblewrap util-linux mount

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
.venv/bin/cleanroom demo "$@"
