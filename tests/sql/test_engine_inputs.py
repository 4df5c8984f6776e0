"""Each input file reaches DuckDB as itself, whatever its name: DuckDB expands glob
characters in a path it reads, so an upload's names must never reach it.

Needs what the sandbox needs (root, bubblewrap, util-linux) and the data runtime.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cleanroom.enclave.runner import Sandbox
from cleanroom.protocol.spec import UploadPurpose
from tests.enclave.test_room import upload_frames
from tests.enclave.test_sqlroom import make_room, query, session, upload
from tests.protocol.fixtures import ALICE, BOB
from tests.sandbox import confined
from tests.sql.fixtures import alice_csv, bob_csv, sql_spec


@pytest.fixture(scope="module")
def confinement() -> Iterator[Sandbox]:
    with confined() as sandbox:
        yield sandbox


WEST = b"email,region,zip,spend\n" + b"".join(
    f"w{n}@x,west,{20000 + n},1.5\n".encode() for n in range(7)
)


@pytest.mark.parametrize("name", ["*.csv", "?.csv", "[b].csv", "**.csv", "{a,b}.csv"])
def test_a_file_named_with_glob_characters_is_read_as_itself(
    tmp_path: Path, confinement: Sandbox, name: str
) -> None:
    """Alice's 40 customers in a file named ``name`` beside 7 in ``b.csv``: 47 rows.
    DuckDB was given each file's path as it is, and expanded it: ``*.csv``, ``?.csv``
    and ``**.csv`` read both files again (54 rows counted, the query's table too),
    ``[b].csv`` read ``b.csv`` in its place (14): the schema check of one file read
    others. (DuckDB expands no braces; the case stays, as a name of that syntax.)"""
    room = make_room(tmp_path, confinement, sql_spec())
    keys = session(room, ALICE, UploadPurpose(op="upload", input="input_1"))
    stream = room.begin_upload(keys.session_id)
    for frame in upload_frames(keys, "input_1", {name: alice_csv(), "b.csv": WEST}):
        stream.feed(frame)
    stream.finish()
    assert room.rows["input_1"] == 47
    upload(room, BOB, "input_2", bob_csv())
    text = (
        "SELECT region, COUNT(DISTINCT email) AS n, COUNT(email) AS e FROM input_1 GROUP BY region"
    )
    receipt, _detail, rows = query(room, ALICE, sql=text)
    assert receipt["status"] == "succeeded", rows
    assert sorted(rows[1:]) == [["east", "30", "30"], ["north", "9", "9"], ["west", "7", "7"]]
