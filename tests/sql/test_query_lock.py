"""A query is checked outside the room's lock: parsing and checking a long ad-hoc query
takes seconds (1.2 to 2.5 s for 64 KiB here), and every other session of the room, its
opening included, waited for it.

Needs what the sandbox needs (root, bubblewrap, util-linux) and the data runtime.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cleanroom.enclave.sqlroom as sqlroom
from cleanroom.enclave.errors import SealedRefusal
from cleanroom.enclave.runner import Sandbox
from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.query_receipt import QUERY_RECORD, open_refusal, query_request
from cleanroom.protocol.records import RecordSender
from cleanroom.protocol.spec import RunPurpose, UploadPurpose
from tests.enclave.test_sqlroom import make_room, session, upload
from tests.protocol.fixtures import ALICE, BOB
from tests.sandbox import confined
from tests.sql.fixtures import alice_csv, bob_csv, sql_spec


@pytest.fixture(scope="module")
def confinement() -> Iterator[Sandbox]:
    with confined() as sandbox:
        yield sandbox


def test_a_session_opens_while_a_query_is_checked(
    tmp_path: Path, confinement: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check is held until another session has opened: under the room's lock, the
    opening waited for the check (here, until the check gave up waiting, 60 s on); now
    it opens while the check runs, and the query is then admitted as before."""
    room = make_room(tmp_path, confinement, sql_spec())
    upload(room, ALICE, "input_1", alice_csv())
    upload(room, BOB, "input_2", bob_csv())
    checking, opened = threading.Event(), threading.Event()
    real = sqlroom.plan_query

    def held(*args: Any, **kwargs: Any) -> Any:
        checking.set()
        opened.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(sqlroom, "plan_query", held)
    keys = session(room, ALICE, RunPurpose(op="run"))
    text = "SELECT region, COUNT(DISTINCT email) AS n FROM input_1 GROUP BY region"
    request = query_request(name=None, parameters=None, sql=text, epsilon=None)
    frame = RecordSender(keys.client_to_worker, keys.session_id).seal(
        QUERY_RECORD, canonical(request), final=True
    )
    numbers: list[int] = []
    checker = threading.Thread(
        target=lambda: numbers.append(room.begin_query(keys.session_id, frame))
    )
    checker.start()
    try:
        assert checking.wait(60)
        session(room, BOB, UploadPurpose(op="upload", input="input_2"))
        still_checking = not numbers and checker.is_alive()
    finally:
        opened.set()
        checker.join()
    assert still_checking, "the session opened only once the check was over"
    assert numbers == [1] and room.runs[1].by == room.worker.spec.runners[0]


def test_the_room_is_read_again_after_the_check(
    tmp_path: Path, confinement: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the check read of the room may change while it runs, so the room is read
    again under its lock before the query is admitted: a room deleted in the meantime
    admits none (refused, sealed to the runner). (The budget the check read is the
    ledger's to confirm: its charge refuses what no longer fits.)"""
    room = make_room(tmp_path, confinement, sql_spec())
    upload(room, ALICE, "input_1", alice_csv())
    upload(room, BOB, "input_2", bob_csv())
    real = sqlroom.plan_query

    def deleting(*args: Any, **kwargs: Any) -> Any:
        plan = real(*args, **kwargs)
        room._state = "deleted"
        return plan

    monkeypatch.setattr(sqlroom, "plan_query", deleting)
    keys = session(room, ALICE, RunPurpose(op="run"))
    text = "SELECT region, COUNT(DISTINCT email) AS n FROM input_1 GROUP BY region"
    request = query_request(name=None, parameters=None, sql=text, epsilon=None)
    frame = RecordSender(keys.client_to_worker, keys.session_id).seal(
        QUERY_RECORD, canonical(request), final=True
    )
    with pytest.raises(SealedRefusal) as caught:
        room.begin_query(keys.session_id, frame)
    assert open_refusal(keys, caught.value.sealed).check == "deleted"
    assert room.runs == {}
