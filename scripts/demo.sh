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
# A run holds files open past its descriptors (a mapping of each), bounded by its memory
# alone: the host's count of open files must be beyond it, as systemd sets it at boot
# (enclave.runner.open_files_problem).
if [ "$(cat /proc/sys/fs/file-max)" != 9223372036854775807 ]; then
  sysctl -q -w fs.file-max=9223372036854775807
fi
# Nor where the kernel logs what a function chooses (enclave.runner.kernel_log_problem).
sysctl -e -q -w debug.exception-trace=0 vm.oom_dump_tasks=0 \
  kernel.seccomp.actions_logged="trap errno user_notif trace log"
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
