"""Queries the rules allow that genuinely fail in the engine, through a real room and
the real engine: the run and its receipt say it failed (and what ended it, where a
limit did), nothing of the engine's own error leaves the sandbox (DuckDB's text quotes
the value it failed on), and a DP query's ε stays spent, charged once.

Needs what the sandbox needs (root, bubblewrap, util-linux) and the data runtime.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cleanroom.enclave.runner import Sandbox
from cleanroom.enclave.sqlroom import _GroupOrder, run_states
from cleanroom.protocol.keys import load_spki
from cleanroom.protocol.query_receipt import verify_budget
from cleanroom.protocol.spec import UploadPurpose, WorkSpec
from tests.enclave.test_room import upload_frames
from tests.enclave.test_sqlroom import make_room, query, session, upload
from tests.protocol.fixtures import ALICE, BOB
from tests.sandbox import confined
from tests.sql.fixtures import alice_csv, bob_csv, sql_document
from tests.sql.test_engine import run_engine

# Bob's segments ("retail", "business": bob_csv) do not convert to an integer.
CAST_SEGMENT = "SELECT COUNT(*) AS n, SUM(CAST(segment AS INTEGER)) AS s FROM input_2"


@pytest.fixture(scope="module")
def confinement() -> Iterator[Sandbox]:
    with confined() as sandbox:
        yield sandbox


def custom_spec() -> WorkSpec:
    """Bob's input under a custom rule: his two named queries, which run as he approved
    them (a custom query is not rewritten to never fail, as the aggregation shape is)."""
    document = sql_document()
    document["sql"]["rules"]["input_2"] = {"kind": "custom", "allowed_queries": ["cast", "count"]}
    document["sql"]["queries"] = {
        "cast": {"text": CAST_SEGMENT, "output": "output_1"},
        "count": {"text": "SELECT COUNT(*) AS n FROM input_2", "output": "output_1"},
    }
    return WorkSpec.parse(document)


def test_the_engines_own_error_quotes_the_value_it_failed_on(tmp_path: Path) -> None:
    """Why the next test matters: DuckDB's error names the cell's value."""
    result = run_engine(tmp_path, "SELECT SUM(CAST(region AS INTEGER)) AS s FROM input_1")
    assert result.returncode != 0
    assert "Could not convert string 'east'" in result.stderr


def test_a_query_that_fails_on_the_data_is_a_failed_run_that_quotes_nothing_of_it(
    tmp_path: Path, confinement: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """A named query that passes every rule (its owner approved it) and fails in DuckDB
    on Bob's data ("Could not convert string 'retail' to INT32"): the run and its signed
    receipt say failed, with no output; what anyone sees of it (the receipt, relayed in
    the clear; the detail, sealed to the runner; the run's state, which the Controller
    relays; the Worker's log, on the host) names no value of the data nor the engine's
    error; and the room answers its next query."""
    caplog.set_level(logging.DEBUG)
    room = make_room(tmp_path, confinement, custom_spec())
    upload(room, ALICE, "input_1", alice_csv())
    upload(room, BOB, "input_2", bob_csv())
    receipt, detail, _rows = query(room, ALICE, name="cast")
    assert receipt["status"] == "failed"
    assert receipt["output"]["sha256"] is None
    assert detail["rows"] == {"released": None, "suppressed": None}
    run = room.runs[1]
    assert (run.state, run.detail, run.files) == ("failed", "the engine ended: failed", [])
    assert room.last_run is not None and room.last_run.log == b""  # the engine's log: not kept
    shown = json.dumps([receipt, detail, run_states(room)]) + caplog.text
    for value in ("retail", "business", "INT32", "Conversion", "convert"):
        assert value not in shown, value
    # Nothing of the failed run was kept, and the room still runs queries.
    assert room._store.objects("output_1") == []
    receipt, _detail, rows = query(room, ALICE, name="count")
    assert receipt["status"] == "succeeded"
    assert rows == [["n"], ["40"]]


def many_customers(people: int) -> dict[str, bytes]:
    """``people`` customers in files of 30,000 (a record holds at most 1 MiB)."""
    lines = [f"p{n}@x,r{n % 4},{100000 + n},1.5" for n in range(people)]
    return {
        f"part-{i:03d}.csv": (
            "\n".join(["email,region,zip,spend", *lines[i : i + 30_000]]) + "\n"
        ).encode()
        for i in range(0, people, 30_000)
    }


def test_a_dp_query_ended_by_a_limit_says_so_and_its_epsilon_stays_spent_once(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """500,000 customers in a room of 64 MiB: the upload's check reads a file at a time
    (37 MiB at its peak for 1,000,000), the query loads them all and is killed by the
    memory limit. Its receipt said "failed", and its state "the engine failed": now
    both name the limit ("memory", the sandbox's own status, which the host saw). ε is
    charged before the run (a failed run has touched the data too): spent once per
    run, never refunded, and the ledger's statement agrees."""
    document = sql_document(dp=True)
    document["resources"] = {"memory_mib": 64}
    room = make_room(tmp_path, confinement, WorkSpec.parse(document))
    keys = session(room, ALICE, UploadPurpose(op="upload", input="input_1"))
    stream = room.begin_upload(keys.session_id)
    for frame in upload_frames(keys, "input_1", many_customers(500_000)):
        stream.feed(frame)
    stream.finish()
    assert room.rows["input_1"] == 500_000
    upload(room, BOB, "input_2", bob_csv())
    text = "SELECT COUNT(*) AS n FROM input_1"
    receipt, detail, _rows = query(room, ALICE, sql=text, epsilon=0.5)
    assert room.last_run is not None and room.last_run.status == "memory", room.last_run
    assert receipt["status"] == "memory"
    assert (room.runs[1].state, room.runs[1].detail) == ("failed", "the engine ended: memory")
    assert receipt["output"]["sha256"] is None and detail["rows"]["released"] is None
    assert receipt["privacy"]["input_1"] == {"spent": 0.5, "left": 1.5, "budget": 2.0}
    receipt, _detail, _rows = query(room, ALICE, sql=text, epsilon=0.5)
    assert receipt["status"] == "memory"
    assert receipt["privacy"]["input_1"] == {"spent": 0.5, "left": 1.0, "budget": 2.0}
    statement, signature = room.budget("n" * 32)
    verify_budget(
        statement, signature, worker_key=load_spki(room.worker.worker_key_spki, "worker_key"),
        spec=room.worker.spec, nonce="n" * 32,
    )  # fmt: skip
    assert statement["privacy"]["input_1"]["spent"] == 1.0
    assert statement["runs"] == 2


def test_a_dp_release_the_worker_refuses_says_only_its_check_in_the_clear(
    tmp_path: Path, confinement: Sandbox, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """The engine's 37th exact group comes with a key that is not text (a DuckDB that
    misbehaved; the Worker's real check, on the real engine's groups): the Worker
    refuses the release, and its refusal says "group 37 of the engine has a key that is
    not text", how many exact groups came before it, which a DP release's threshold
    hides. The run's state, relayed in the clear, said that message as it was; now it
    names the check alone, as do the receipt and the Worker's log."""
    caplog.set_level(logging.DEBUG)
    checked = _GroupOrder.next

    def engine_broke_group_37(order: _GroupOrder, row: Any) -> dict[str, Any]:
        if order.lines == 36:
            row = {**row, "__cr_g0": 37}
        return checked(order, row)

    monkeypatch.setattr(_GroupOrder, "next", engine_broke_group_37)
    room = make_room(tmp_path, confinement, WorkSpec.parse(sql_document(dp=True)))
    upload(room, ALICE, "input_1", alice_csv())
    upload(room, BOB, "input_2", bob_csv())
    text = "SELECT zip, COUNT(*) AS n FROM input_1 GROUP BY zip"
    receipt, detail, _rows = query(room, ALICE, sql=text, epsilon=0.5)
    assert (receipt["status"], receipt["output"]["sha256"]) == ("failed", None)
    assert detail["rows"] == {"released": None, "suppressed": None}
    run = room.runs[1]
    refused = "the Worker refused the engine's result (dp-order)"
    assert (run.state, run.detail) == ("failed", refused)
    shown = json.dumps([receipt, run_states(room)]) + caplog.text
    assert [said for said in ("group 37", "not text") if said in shown] == [], shown
