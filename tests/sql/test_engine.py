"""The engine's own lock-down, below the checker: SQL that reaches DuckDB despite the
checker still cannot read or write a file, load an extension or unlock the settings."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cleanroom.enclave.errors import RunError
from cleanroom.enclave.runner import installed_runtime
from cleanroom.sql import ENGINE_DIRECTORY
from tests.sql.fixtures import SCHEMAS, alice_csv


def run_engine(
    tmp_path: Path, sql: str, *, direct: bool = False
) -> subprocess.CompletedProcess[str]:
    """The engine on Alice's data: its query mode, or (``direct``) its tables and
    lock-down, then ``sql`` as one statement on the connection."""
    try:
        runtime = installed_runtime("python3.11-data")
    except RunError as error:
        pytest.skip(f"the data runtime is not installed: {error}")
    work = tmp_path / "work"
    (work / "inputs" / "input_1").mkdir(parents=True)
    (work / "outputs").mkdir()
    (work / "inputs" / "input_1" / "data.csv").write_bytes(alice_csv())
    plan = {"mode": "query", "sql": sql, "keep": {}, "dp": False, "format": "csv",
            "inputs": {"input_1": SCHEMAS["input_1"]}}  # fmt: skip
    (work / "parameters.json").write_text(json.dumps(plan))
    bootstrap = f"import sys\nsys.path.insert(0, {str(ENGINE_DIRECTORY)!r})\nimport handler\n"
    if direct:
        bootstrap += (
            "import duckdb\ncon = duckdb.connect(':memory:')\n"
            f"handler.load(con, {{'input_1': {SCHEMAS['input_1']!r}}})\nhandler.lock_down(con)\n"
            f"print(con.execute({sql!r}).fetchall())\n"
        )
    else:
        bootstrap += "handler.run()\n"
    return subprocess.run(
        [str(runtime.interpreter), "-I", "-c", bootstrap],
        env={"WORK_DIR": str(work), "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_engine_runs_a_query_on_its_tables(tmp_path: Path) -> None:
    result = run_engine(tmp_path, "SELECT region, count(*) AS n FROM input_1 GROUP BY region")
    assert result.returncode == 0, result.stderr
    data = (tmp_path / "work" / "outputs" / "result" / "data.csv").read_text()
    assert '"east",30' in data


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/*')",
        "COPY input_1 TO '/tmp/cleanroom-engine-leak.csv'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "ATTACH '/tmp/cleanroom-engine.db' AS other",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "SELECT * FROM read_csv('https://example.com/x.csv')",
    ],
)
def test_sql_that_slipped_past_the_checker_still_reaches_nothing(tmp_path: Path, sql: str) -> None:
    result = run_engine(tmp_path, sql, direct=True)
    assert result.returncode != 0
    assert (
        "Permission Error" in result.stderr
        or "Cannot change configuration" in (result.stderr)
        or "disabled" in result.stderr
    ), result.stderr[-500:]
    assert not Path("/tmp/cleanroom-engine-leak.csv").exists()
