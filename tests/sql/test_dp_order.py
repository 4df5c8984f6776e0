"""The Worker releases a DP query's exact groups chunk by chunk, in the engine's order,
and adds up rows of one key within a chunk only: it checks that the engine's groups
come in strictly increasing order of their keys, as the engine orders them.

Needs what the sandbox needs (root, bubblewrap, util-linux) and the data runtime.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cleanroom.enclave.errors import RunError
from cleanroom.enclave.runner import Sandbox
from cleanroom.enclave.sqlroom import SqlRoom
from cleanroom.enclave.store import StoredObject
from cleanroom.sql.rules import plan_query
from tests.enclave.test_sqlroom import make_room, parquet, query, upload
from tests.protocol.fixtures import ALICE, BOB
from tests.sandbox import confined
from tests.sql.fixtures import SCHEMAS, bob_csv, sql_spec


@pytest.fixture(scope="module")
def confinement() -> Iterator[Sandbox]:
    with confined() as sandbox:
        yield sandbox


def engine_rows(room: SqlRoom, name: str, groups: list[Any]) -> StoredObject:
    """A rows.jsonl as an engine would write it: one line a group of one key."""
    writer = room._store.create(name)
    for key in groups:
        writer.write(json.dumps({"__cr_g0": key, "__cr_n": 1000}).encode() + b"\n")
    stored = writer.close()
    room._store.record(stored)
    return stored


@pytest.mark.parametrize(
    ("groups", "actual"),
    [
        (["a", "b", "a"], "group 3 not after group 2"),  # one group twice, chunks apart
        (["a", "a"], "group 2 not after group 1"),  # repeated
        (["b", "a"], "group 2 not after group 1"),  # out of order
        ([None, "a"], "group 2 not after group 1"),  # NULL sorts last
        (["a", "\u00e9", "B"], "group 3 not after group 2"),  # by code point: B < a < é
        (["a", 1], "int"),  # every DP key is text or NULL
    ],
)
def test_dp_groups_out_of_the_engines_order_are_refused(
    tmp_path: Path,
    confinement: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    groups: list[Any],
    actual: str,
) -> None:
    """One group per chunk (the line bound is 512 bytes): a group the engine wrote twice,
    chunks apart, was released twice, each with its own noise, under a calibration for
    one; and one row out of order was all it took. Refused, naming where, not the keys."""
    monkeypatch.setattr("cleanroom.enclave.sqlroom.DP_CHUNK_BYTES", 512)
    room = make_room(tmp_path, confinement, sql_spec(dp=True))
    room.rows = {"input_1": 1000, "input_2": 1000}
    plan = plan_query(room.worker.spec, name=None, text="SELECT region, COUNT(*) AS n "
                      "FROM input_1 GROUP BY region", epsilon=1.0)  # fmt: skip
    assert plan.dp is not None
    stored = engine_rows(room, "output_1/run-1/rows.jsonl", groups)
    with pytest.raises(RunError) as caught:
        room._dp_release(plan, stored, 1)
    assert caught.value.check == "dp-order"
    assert caught.value.actual == actual  # where, never the keys themselves
    assert room._store.objects("output_1") == [stored]  # no part of a release
    # In the engine's order, the same chunks release each group once.
    ordered = engine_rows(room, "output_1/run-2/rows.jsonl", ["B", "a", "\u00e9", None])
    released, count = room._dp_release(plan, ordered, 2)
    lines = b"".join(room._store.read(released.name)).decode().splitlines()
    assert count == 4 and [line.split(",")[0] for line in lines] == [
        "region",
        "B",
        "a",
        "\u00e9",
        "",
    ]


def test_the_engines_order_of_dp_groups_is_the_one_the_worker_checks(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """Keys whose order differs by bytes, case, accents, code points past the BMP and
    NULL, grouped and ordered by the real engine, pass the Worker's check: both order
    text as DuckDB does, by its UTF-8 bytes (Python's code points)."""
    keys = ["B", "a", "a b", "ab", "\u00e4", "\u00e9", "z\u0301", "\uffff", "\U0001f600", "~", "1"]
    lines = ["email,region,zip,spend"] + [
        f"p{n}@x,{keys[n % len(keys)]},{100000 + n},1.5" for n in range(110 * len(keys))
    ]
    lines += [f"q{n}@x,,{200000 + n},1.5" for n in range(110)]  # region NULL
    room = make_room(tmp_path, confinement, sql_spec(dp=True))
    upload(room, ALICE, "input_1", ("\n".join(lines) + "\n").encode())
    upload(room, BOB, "input_2", bob_csv())
    text = "SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region"
    receipt, _detail, rows = query(room, ALICE, sql=text, epsilon=1.0)
    assert receipt["status"] == "succeeded", rows
    assert [row[0] for row in rows[1:]] == [*sorted(keys), ""], rows


# DuckDB expressions for the keys (chr: a code point), each a region and a zip.
KEYS = [
    "NULL", "''", "chr(0)", "chr(0) || chr(0)", "chr(0) || 'a'", "'a'", "'a' || chr(0)",
    "'a' || chr(1)", "'A'", "chr(127)", "chr(128)", "'é'", "'e' || chr(769)", "chr(55295)",
    "chr(57344)", "chr(65279)", "chr(65535)", "chr(65536)", "chr(1114111)", "'\"'", "'\\'",
    "chr(10)", "chr(13)", "chr(8232)",
    # Cut by the engine (more than 256 bytes of JSON), some alike after the cut.
    "repeat('a', 300)", "repeat('a', 300) || 'b'", "repeat('a', 256)", "repeat('a', 255)",
    "repeat(chr(1), 60)", "repeat(chr(1), 60) || 'z'", "repeat('é', 200)",
    "repeat(chr(65536), 100)", "repeat('a', 250) || chr(0) || 'x'",
    "repeat('a', 250) || chr(65536)", "repeat(chr(0), 43)", "repeat(chr(0), 42)",
]  # fmt: skip


def test_the_engine_orders_adversarial_keys_as_the_worker_checks_them(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """Keys chosen to be ordered differently if anything does: NULL and the empty string,
    NUL and other control characters, a combining mark, U+D7FF, U+E000, U+FFFF, U+10000
    and U+10FFFF, keys that are prefixes of each other, keys long enough to be cut by the
    engine (``cut_key``), cut alike or not, in two keys at once (every pair of them, in a
    Parquet file, as CSV holds no NUL), through a real room and the real engine: a key
    the two ordered differently would make a genuine run fail on its data alone (red
    team h5)."""
    schemas = copy.deepcopy(SCHEMAS)
    schemas["input_1"]["format"] = "parquet"
    room = make_room(tmp_path, confinement, sql_spec(dp=True, schemas=schemas))
    pairs = list(itertools.product(range(len(KEYS)), repeat=2))
    cases = " UNION ALL ".join(
        f"SELECT {n} AS i, {KEYS[a]} AS region, {KEYS[b]} AS zip" for n, (a, b) in enumerate(pairs)
    )
    head = "SELECT 'c' || i || '@x' AS email, region, zip, CAST(i % 100 AS DOUBLE) AS spend"
    select = f"{head} FROM ({cases}) t ORDER BY hash(i)"
    upload(room, ALICE, "input_1", parquet(tmp_path, select), "data.parquet")
    upload(room, BOB, "input_2", bob_csv())
    text = "SELECT region, zip, COUNT(*) AS n FROM input_1 GROUP BY region, zip"
    receipt, _detail, rows = query(room, ALICE, sql=text, epsilon=0.5)
    assert receipt["status"] == "succeeded", room.runs[1].detail
    assert rows[0] == ["region", "zip", "n"]
    assert room.runs[1].state == "done"
    # Reverted once each: NULL ordered first, or text by its UTF-16 (U+E000..U+FFFF
    # after U+10000): the run fails (dp-order) on these keys.
