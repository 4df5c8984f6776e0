#!/usr/bin/env bash
# Installs cleanroom with its test tools into .venv and runs the whole suite:
# lint (ruff), types (mypy, strict on the security core), then pytest.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m slow` for the slow suite.
set -euo pipefail
cd "$(dirname "$0")/.."

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
bash scripts/system-packages.sh bubblewrap util-linux mount

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
echo "== ruff"
.venv/bin/ruff check src tests
.venv/bin/ruff format --check src tests
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/pytest "$@"
