"""The data-library examples, run as the Worker runs them (in its sandbox):

- ``crosstab_polars``, written as the seed product's functions are (absolute ``/work``
  paths, ``sys.path.append("/work/function/packages")``, ``app.log`` lines), with
  polars vendored into ``packages/``, on the plain ``python3.11`` runtime: unchanged;
- ``overlap_duckdb``, DuckDB SQL, in the data runtime (``python3.11-data``).

Both are checked against the demo data generator's own truth.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from cleanroom.insecure.demodata import OverlapTruth, write_overlap_inputs
from tests.examples.harness import run_example, vendored, workspace

POLARS = "polars==2.1.0"  # as the data runtime pins it (src/cleanroom/runtimes/)


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("vendored")
    return {"crosstab_polars": vendored("crosstab_polars", where, POLARS)}


def generated(tmp_path: Path, rows: int, k: int) -> tuple[Path, OverlapTruth]:
    work = workspace(tmp_path, {}, parameters={"k": k})
    directories = [work / "inputs" / "input_1", work / "inputs" / "input_2"]
    for directory in directories:
        directory.mkdir()
    return work, write_overlap_inputs(*directories, rows, seed=3)


def test_a_seed_style_polars_function_with_vendored_polars_runs_unchanged(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    work, truth = generated(tmp_path, 5000, k=20)
    run = run_example(packages["crosstab_polars"], work)
    assert run.returncode == 0, run.stderr
    for output_id in ("output_1", "output_2"):
        rows = list(csv.DictReader(io.StringIO(run.output(output_id, "crosstab.csv"))))
        released = {(r["region"], r["segment"]): int(r["customers"]) for r in rows}
        assert released == {cell: n for cell, n in truth.crosstab.items() if n >= 20}
        assert len(released) < len(truth.crosstab)  # some small groups were suppressed
        log = run.output(output_id, "app.log").splitlines()
        assert (
            log[-1]
            == f"{truth.overlap} shared customers; {len(released)} groups of at least 20 released"
        )


def test_a_bad_parameter_is_logged_not_guessed(packages: dict[str, Path], tmp_path: Path) -> None:
    work, _truth = generated(tmp_path, 100, k=0)
    run = run_example(packages["crosstab_polars"], work)
    assert run.returncode == 1
    assert run.output("output_1", "app.log") == "parameter k must be an integer >= 1\n"
    assert run.files("output_1") == ["app.log"]


def test_the_duckdb_overlap_in_the_data_runtime(tmp_path: Path) -> None:
    work, truth = generated(tmp_path, 5000, k=1)
    run = run_example("overlap_duckdb", work, runtime="python3.11-data")
    assert run.returncode == 0, run.stderr
    expected = {"input_1": truth.distinct_a, "input_2": truth.distinct_b, "shared": truth.overlap}
    for output_id in ("output_1", "output_2"):
        assert json.loads(run.output(output_id, "overlap.json")) == expected


def test_the_polars_example_runs_unchanged_in_the_data_runtime(tmp_path: Path) -> None:
    """The same seed-style code, without vendoring: the runtime provides polars (and its
    sys.path.append of an absent packages/ is harmless)."""
    work, truth = generated(tmp_path, 2000, k=5)
    run = run_example("crosstab_polars", work, runtime="python3.11-data")
    assert run.returncode == 0, run.stderr
    rows = list(csv.DictReader(io.StringIO(run.output("output_1", "crosstab.csv"))))
    released = {(r["region"], r["segment"]): int(r["customers"]) for r in rows}
    assert released == {cell: n for cell, n in truth.crosstab.items() if n >= 5}
