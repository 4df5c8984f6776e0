#!/usr/bin/env bash
# Installs cleanroom with its test tools into .venv and runs the whole suite:
# lint (ruff), types (mypy, strict on the security core), layers (import-linter), then pytest.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m slow` for the slow suite.
#
# `scripts/test.sh --fast [pytest args]`: the same installation and checks, then only the
# fast tier of pytest: unit, protocol and in-process tests (FAST_TESTS below), each
# database test on SQLite only, on every core (pytest-xdist, whole files per worker).
# Left out: the end-to-end flows (and `cleanroom demo`'s, FAST_LEFT_OUT), reliability
# and fuzzing, the hostile Controller, the examples, the runtimes and the benchmarks
# (out-of-process flows). Arguments that start with a test path run those tests
# instead of FAST_TESTS. Without --fast it runs everything, as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."

fast=false
if [ "${1:-}" = "--fast" ]; then
  fast=true
  shift
fi
FAST_TESTS=(
  tests/protocol tests/sgx tests/attestation tests/tee tests/enclave tests/controller
  tests/client tests/manager tests/test_cli.py tests/test_protocol_vectors.py
  tests/test_layers.py tests/test_vectors_required.py tests/test_secret_hashing.py
  tests/test_errors.py tests/test_cli_docs.py
)
# The whole demo flow, out of process (servers, enclaves, the sandbox): an end-to-end test.
FAST_LEFT_OUT=(--deselect tests/test_cli.py::test_demo_runs_the_whole_flow)

# The database tests need a real PostgreSQL server (tests/postgres.py starts a
# private one on loopback): install Debian's packages when the machine lacks them.
have_postgres() {
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 ||
    { command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; }
}
if [ -z "${CLEANROOM_TEST_POSTGRES_URL:-}" ] && ! have_postgres; then
  bash scripts/system-packages.sh postgresql
fi

# Functions run in bubblewrap (the sandbox) with util-linux's setpriv, unshare, mount.
bash scripts/system-packages.sh bubblewrap util-linux mount libseccomp2
# The Gramine images' shell scripts are linted with shellcheck (the tests run it).
bash scripts/system-packages.sh shellcheck

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"

# The Gramine backend's EGETKEY helper is C: the tests compile it (and never run
# it), so they need a C compiler and this Python's headers.
python_h="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h"
if ! command -v gcc >/dev/null || [ ! -f "$python_h" ]; then
  bash scripts/system-packages.sh gcc libc6-dev python3-dev
fi

echo "== the native EGETKEY helper (compiled here, never run outside an enclave)"
native_dir="$(mktemp -d)"
.venv/bin/python -m cleanroom.tee.gramine.native --out "$native_dir" >/dev/null
rm -rf "$native_dir"

# The runtimes functions run in (a venv of the system Python each, under
# /opt/cleanroom/runtimes unless $CLEANROOM_RUNTIMES_DIR says otherwise); the data
# runtime is about 800 MB of pinned, hashed wheels. Installing again is a no-op.
echo "== runtimes"
as_root=""
[ "$(id -u)" -eq 0 ] || [ -n "${CLEANROOM_RUNTIMES_DIR:-}" ] || as_root="sudo"
if [ ! -x /usr/bin/python3.11 ] && [ ! -x /usr/local/bin/python3.11 ]; then
  # A runtime is a venv of the system's python3.11, which every user may run.
  bash scripts/system-packages.sh python3.11 python3.11-venv
fi
$as_root .venv/bin/cleanroom runtime install
# The kernel settings a Worker requires of its host (fs.file-max out of a run's reach,
# nothing of a run's choosing in the kernel's log): set as root, where they differ.
if [ "$(id -u)" -eq 0 ]; then
  bash scripts/host-settings.sh
fi
# Hash every file of the enclave images once, as signing an enclave does (servers then
# only compare each file's stat with the record).
echo "== measure"
$as_root .venv/bin/cleanroom measure --write

echo "== ruff"
.venv/bin/ruff check src tests
.venv/bin/ruff format --check src tests
echo "== mypy"
.venv/bin/mypy
echo "== import-linter (the layers; contracts in pyproject.toml)"
.venv/bin/lint-imports --no-cache
if $fast; then
  echo "== pytest, the fast tier"
  if [ $# -gt 0 ] && [ -e "${1%%::*}" ]; then
    FAST_TESTS=()
  fi
  .venv/bin/pytest -n auto --dist loadfile -m "not slow and not postgresql" \
    "${FAST_LEFT_OUT[@]}" "${FAST_TESTS[@]}" "$@"
else
  echo "== pytest"
  .venv/bin/pytest "$@"
fi
