"""The spec's runtime decides what a function may import: through the whole flow, a
function of the data runtime computes with DuckDB and Polars, the same imports fail
in the standard-library runtime, and a runtime outside the catalogue is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cleanroom.client.errors import ServerError
from cleanroom.runtimes import RuntimeUnavailable, resolve_runtime
from tests.e2e.conftest import User
from tests.e2e.helpers import approve, deploy, write

DATA_HANDLER = """
import json, pathlib
import duckdb
import polars as pl

def run():
    a = pl.read_csv("inputs/input_1/emails.csv", has_header=False, new_columns=["email"])
    b = pl.read_csv("inputs/input_2/emails.csv", has_header=False, new_columns=["email"])
    joined = a.join(b, on="email", how="inner").height
    sql = duckdb.sql(
        "select count(*) from read_csv('inputs/input_1/emails.csv', header=false) a "
        "join read_csv('inputs/input_2/emails.csv', header=false) b using (column0)"
    ).fetchall()[0][0]
    k = json.loads(pathlib.Path("parameters.json").read_text())["k"]
    for output in ("output_1", "output_2"):
        pathlib.Path("outputs", output, "overlap.json").write_text(
            json.dumps({"polars": joined, "duckdb": sql, "k": k,
                        "versions": [pl.__version__, duckdb.__version__]})
        )
"""

STDLIB_HANDLER = """
import polars  # not in the standard-library runtime

def run():
    pass
"""


def require_data_runtime() -> None:
    try:
        resolve_runtime("python3.11-data")
    except RuntimeUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must have the data runtime installed: {error}")
        pytest.skip(str(error))


def upload_both(alice: User, bob: User, name: str, tmp_path: Path) -> None:
    alice.client.upload(name, "input_1", write(tmp_path / "a", "a@x\nb@x\nc@x\n"))
    bob.client.upload(name, "input_2", write(tmp_path / "b", "b@x\nc@x\nd@x\n"))


def test_a_function_computes_with_duckdb_and_polars_in_the_data_runtime(
    alice: User, bob: User, tmp_path: Path
) -> None:
    require_data_runtime()
    # Polars and DuckDB reserve ~1.4 GiB of address space for ~100 MiB resident: more
    # than an address-space rlimit of 512 MiB allows.
    deploy(
        alice, bob, tmp_path, "e2e-data", DATA_HANDLER, runtime="python3.11-data", memory_mib=2048
    )
    approve(bob, "e2e-data")
    upload_both(alice, bob, "e2e-data", tmp_path)
    assert alice.client.run("e2e-data", wait=True).succeeded
    result = bob.client.download("e2e-data", "output_2", tmp_path / "out")
    answer = json.loads((result.directory / "overlap.json").read_text())
    assert (answer["polars"], answer["duckdb"], answer["k"]) == (2, 2, 3)
    assert answer["versions"] == ["2.1.0", "2.0.1"]  # the lock's pins
    assert result.receipt.receipt["status"] == "succeeded"
    alice.client.delete("e2e-data")


VENDORED_HANDLER = """
import json, pathlib
import polars
import threadpoolctl  # the bundle's own, not the runtime's
import vendored_overlap  # from the bundle's packages/

def run():
    a = pathlib.Path("inputs/input_1/emails.csv").read_text().split()
    b = pathlib.Path("inputs/input_2/emails.csv").read_text().split()
    for output in ("output_1", "output_2"):
        pathlib.Path("outputs", output, "overlap.json").write_text(
            json.dumps({"overlap": vendored_overlap.count(a, b), "polars": polars.__version__,
                        "threadpoolctl": threadpoolctl.__version__})
        )
"""


def test_a_bundles_own_packages_come_first_in_the_data_runtime(
    alice: User, bob: User, tmp_path: Path
) -> None:
    require_data_runtime()
    vendored = {
        "packages/vendored_overlap/__init__.py": "def count(a, b): return len(set(a) & set(b))",
        "packages/threadpoolctl.py": "__version__ = 'vendored'",
    }
    deploy(
        alice, bob, tmp_path, "e2e-vendored", VENDORED_HANDLER,
        runtime="python3.11-data", memory_mib=2048, files=vendored,
    )  # fmt: skip
    approve(bob, "e2e-vendored")
    upload_both(alice, bob, "e2e-vendored", tmp_path)
    assert alice.client.run("e2e-vendored", wait=True).succeeded
    result = bob.client.download("e2e-vendored", "output_2", tmp_path / "out")
    answer = json.loads((result.directory / "overlap.json").read_text())
    assert answer == {"overlap": 2, "polars": "2.1.0", "threadpoolctl": "vendored"}
    alice.client.delete("e2e-vendored")


def test_the_standard_library_runtime_has_no_data_libraries(
    alice: User, bob: User, tmp_path: Path
) -> None:
    deploy(alice, bob, tmp_path, "e2e-stdlib", STDLIB_HANDLER)
    approve(bob, "e2e-stdlib")
    upload_both(alice, bob, "e2e-stdlib", tmp_path)
    alice.client.run("e2e-stdlib", wait=True)
    result = alice.client.download("e2e-stdlib", "output_1", tmp_path / "out")
    assert result.receipt.receipt["status"] == "failed"
    alice.client.delete("e2e-stdlib")


def test_a_runtime_outside_the_catalogue_is_refused_at_deploy(
    alice: User, bob: User, tmp_path: Path
) -> None:
    with pytest.raises(ServerError) as refused:
        deploy(alice, bob, tmp_path, "e2e-ruby", runtime="python3.11-ruby")
    assert refused.value.status == 422
    assert refused.value.problem["check"] == "runtime"
    assert refused.value.problem["actual"] == "python3.11-ruby"
