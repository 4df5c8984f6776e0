"""DuckDB within the run's limits: the engine gives it the memory, threads and spill
space the Worker derives from the spec's resources (it cannot see the sandbox's: it
took the host's memory and cores), so it spills before the sandbox's memory limit.

Needs what the sandbox needs (root, bubblewrap, util-linux) and the data runtime.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cleanroom.enclave.runner import Sandbox
from cleanroom.enclave.sqlroom import engine_limits
from cleanroom.protocol.spec import Resources, UploadPurpose, WorkSpec
from tests.enclave.test_room import upload_frames
from tests.enclave.test_sqlroom import make_room, query, session, upload
from tests.protocol.fixtures import ALICE, BOB
from tests.sandbox import confined
from tests.sql.fixtures import bob_csv, sql_document
from tests.sql.test_engine import run_engine


@pytest.fixture(scope="module")
def confinement() -> Iterator[Sandbox]:
    with confined() as sandbox:
        yield sandbox


@pytest.mark.parametrize(
    ("resources", "memory", "spill"),
    [
        (Resources(), "768.0 MiB", "512.0 MiB"),  # (2048 - 128) * 2 / 5, 1024 / 2
        (Resources(memory_mib=4096, disk_mib=300), "1.5 GiB", "150.0 MiB"),
        (Resources(memory_mib=256, disk_mib=64), "64.0 MiB", "32.0 MiB"),  # its least
    ],
)
def test_duckdb_runs_under_the_limits_the_spec_gives_it(
    tmp_path: Path, resources: Resources, memory: str, spill: str
) -> None:
    """Read back inside the engine, after its lock-down: not the host's memory and cores
    (18.8 GiB and the host's 2 threads, inside the sandbox, before), and a spill
    directory of its own in the run's /tmp."""
    settings = "memory_limit", "max_temp_directory_size", "threads", "temp_directory"
    sql = "SELECT " + ", ".join(f"current_setting('{name}')" for name in settings)
    result = run_engine(tmp_path, sql, direct=True, limits=engine_limits(resources))
    assert result.returncode == 0, result.stderr
    [(found_memory, found_spill, threads, directory)] = eval(result.stdout)  # noqa: S307
    assert (found_memory, found_spill, threads) == (memory, spill, 2)
    assert Path(directory).parent == tmp_path and Path(directory).name.startswith(
        "cleanroom-duckdb-"
    )


def customers_csv(first: int, people: int) -> bytes:
    lines = ["email,region,zip,spend"] + [
        f"person{n:09d}@example.com,r{n % 4},{100000 + n},1.5" for n in range(first, first + people)
    ]
    return ("\n".join(lines) + "\n").encode()


def test_a_query_larger_than_duckdbs_memory_spills_instead_of_being_killed(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """1,440,000 customers grouped by their unique zip codes in a room of 384 MiB: DuckDB,
    taking the host's memory for its own, grew its hash tables until the sandbox's
    memory limit killed the run (its peak in a room of 448 MiB: 438 MiB); under its
    limit of 102 MiB it spills to the run's /tmp and the query succeeds (its peak in a
    room of 448 MiB, with a limit of 128 MiB: 291 MiB, spill and all). Every group is
    under the threshold: none released, all counted."""
    document = sql_document(report_suppressed=True)
    document["resources"] = {"memory_mib": 384, "disk_mib": 1024}
    room = make_room(tmp_path, confinement, WorkSpec.parse(document))
    keys = session(room, ALICE, UploadPurpose(op="upload", input="input_1"))
    stream = room.begin_upload(keys.session_id)
    per_file = 24_000  # under the 1 MiB of one record
    files = {f"part-{i:02d}.csv": customers_csv(per_file * i, per_file) for i in range(60)}
    for frame in upload_frames(keys, "input_1", files):
        stream.feed(frame)
    stream.finish()
    assert room.rows["input_1"] == 1_440_000
    upload(room, BOB, "input_2", bob_csv())
    text = (
        "SELECT zip, region, COUNT(DISTINCT email) AS n, SUM(spend) AS s "
        "FROM input_1 GROUP BY zip, region"
    )
    receipt, detail, rows = query(room, ALICE, sql=text)
    assert room.last_run.status == "succeeded", room.last_run
    assert receipt["status"] == "succeeded", rows
    assert rows == [["zip", "region", "n", "s"]]
    assert detail["rows"] == {"released": 0, "suppressed": 1_440_000}
