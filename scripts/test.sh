#!/usr/bin/env bash
# Installs cleanroom with its test tools into .venv and runs the whole suite:
# lint (ruff), types (mypy, strict on the security core), then pytest.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m slow` for the slow suite.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"

echo "== ruff"
.venv/bin/ruff check src tests
.venv/bin/ruff format --check src tests
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/pytest "$@"
