#!/usr/bin/env bash
# Installs cleanroom into .venv and runs the demo on the embedded default
# (simulated SGX platform, everything on this machine, in a temporary directory).
# The compute server runs each function as a uid of its own, which needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "== the demo's compute server needs root (each function runs as its own uid): sudo"
  exec sudo -- "$0" "$@"
fi

# Functions run in bubblewrap (the sandbox, with a syscall filter built by libseccomp)
# with util-linux's setpriv, unshare, mount, in a runtime made from the system's python3.11.
bash scripts/system-packages.sh bubblewrap util-linux mount libseccomp2
# The kernel settings a Worker requires of its host (fs.file-max out of a run's reach,
# nothing of a run's choosing in the kernel's log), where they differ.
bash scripts/host-settings.sh
if [ ! -x /usr/bin/python3.11 ] && [ ! -x /usr/local/bin/python3.11 ]; then
  bash scripts/system-packages.sh python3.11 python3.11-venv
fi

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
# The demo's function needs only the standard library runtime (python3.11).
.venv/bin/cleanroom runtime install python3.11
.venv/bin/cleanroom measure --write >/dev/null
.venv/bin/cleanroom demo "$@"
