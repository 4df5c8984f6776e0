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
from cleanroom.enclave.budget import BudgetLedger
from cleanroom.enclave.errors import SealedRefusal
from cleanroom.enclave.runner import Sandbox
from cleanroom.enclave.store import SealedStore
from cleanroom.errors import CheckFailed
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


def _sealed_query(keys: Any, text: str, epsilon: float | None = None) -> bytes:
    request = query_request(name=None, parameters=None, sql=text, epsilon=epsilon)
    return RecordSender(keys.client_to_worker, keys.session_id).seal(
        QUERY_RECORD, canonical(request), final=True
    )


def test_dp_queries_checked_at_once_never_spend_more_than_the_budget(
    tmp_path: Path, confinement: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four DP queries of ε 1 against a budget of 2, each checked against the budget as
    it was before any of them was charged (every check waits until all four sessions
    have read it): two are admitted, the other two refused by the ledger's charge
    (``differential_privacy.budget``), sealed to their runner, and the budget is spent
    exactly (red team h5: the check reads the budget outside the room's lock)."""
    room = make_room(tmp_path, confinement, sql_spec(dp=True))
    upload(room, ALICE, "input_1", alice_csv())
    upload(room, BOB, "input_2", bob_csv())
    racers = 4
    read_all = threading.Event()
    reads = 0
    real_spent, real_plan = room.ledger.spent, sqlroom.plan_query

    counting = threading.Lock()

    def spent() -> dict[str, float]:
        nonlocal reads
        value = real_spent()  # read before it counts: once counted, others may charge
        with counting:
            reads += 1
            if reads >= racers:
                read_all.set()
        return value

    def held(*args: Any, **kwargs: Any) -> Any:
        assert read_all.wait(60), "not every session read the budget"
        assert kwargs["spent"] == {"input_1": 0.0}  # the check saw the budget unspent
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(room.ledger, "spent", spent)
    monkeypatch.setattr(sqlroom, "plan_query", held)
    text = "SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region"
    sessions = [session(room, ALICE, RunPurpose(op="run")) for _ in range(racers)]
    outcomes: list[object] = [None] * racers

    def race(index: int) -> None:
        keys = sessions[index]
        try:
            outcomes[index] = room.begin_query(keys.session_id, _sealed_query(keys, text, 1.0))
        except SealedRefusal as refusal:
            outcomes[index] = open_refusal(keys, refusal.sealed).check

    threads = [threading.Thread(target=race, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    admitted = sorted(o for o in outcomes if isinstance(o, int))
    refused = [o for o in outcomes if not isinstance(o, int)]
    assert admitted == [1, 2]
    assert refused == ["differential_privacy.budget"] * 2
    assert real_spent() == {"input_1": 2.0}
    assert sorted(room.runs) == [1, 2]


def test_a_session_refused_after_its_check_is_spent(
    tmp_path: Path, confinement: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query refused at its admission (the room changed while it was checked) used its
    session: sent again, by the Controller that relays it, it is refused as a used
    session, never admitted by a second try."""
    room = make_room(tmp_path, confinement, sql_spec())
    upload(room, ALICE, "input_1", alice_csv())
    upload(room, BOB, "input_2", bob_csv())
    real = sqlroom.plan_query
    full = {"on": True}

    def filling(*args: Any, **kwargs: Any) -> Any:
        plan = real(*args, **kwargs)
        if full["on"]:
            room.runs.update(dict.fromkeys(range(1, sqlroom.MAX_RUNS + 1)))  # type: ignore[arg-type]
        return plan

    monkeypatch.setattr(sqlroom, "plan_query", filling)
    keys = session(room, ALICE, RunPurpose(op="run"))
    frame = _sealed_query(
        keys, "SELECT region, COUNT(DISTINCT email) AS n FROM input_1 GROUP BY region"
    )
    with pytest.raises(SealedRefusal) as caught:
        room.begin_query(keys.session_id, frame)
    assert open_refusal(keys, caught.value.sealed).check == "run-state"
    full["on"] = False
    room.runs.clear()
    with pytest.raises(CheckFailed) as again:
        room.begin_query(keys.session_id, frame)
    assert again.value.check == "session-used"
    assert room.runs == {}


def test_a_session_opens_while_the_ledger_is_read_for_a_check(
    tmp_path: Path, confinement: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget a query's check reads is the whole ledger read back from the sealed
    store, in time proportional to the queries charged (0.3 s for 1,000 entries here;
    a runner may charge up to 10,000, ε 2e-4 each): it was read under the room's lock,
    and every other session of the room, its opening included, waited for it (red team
    h5). Held until another session has opened: it opens, and the query is admitted."""
    room = make_room(tmp_path, confinement, sql_spec(dp=True))
    upload(room, ALICE, "input_1", alice_csv())
    upload(room, BOB, "input_2", bob_csv())
    reading, opened = threading.Event(), threading.Event()
    real = room.ledger.spent

    waited: list[bool] = []

    def held() -> dict[str, float]:
        reading.set()
        waited.append(opened.wait(60))  # False: given up, the session still not opened
        return real()

    monkeypatch.setattr(room.ledger, "spent", held)
    keys = session(room, ALICE, RunPurpose(op="run"))
    text = "SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region"
    frame = _sealed_query(keys, text, 1.0)
    numbers: list[int] = []
    checker = threading.Thread(
        target=lambda: numbers.append(room.begin_query(keys.session_id, frame))
    )
    checker.start()
    try:
        assert reading.wait(60)
        session(room, BOB, UploadPurpose(op="upload", input="input_2"))
    finally:
        opened.set()
        checker.join()
    assert waited == [True], "the session opened only once the ledger was read"
    assert numbers == [1] and real() == {"input_1": 1.0}


def test_a_charge_reads_back_only_the_last_entry(tmp_path: Path) -> None:
    """A charge, under the room's lock, reads back the ledger's last entry only: it read
    the whole chain, in time proportional to the queries charged (0.3 s per 1,000
    entries; a runner may charge 10,000), and before h5's fix twice over."""
    store = SealedStore(tmp_path / "sealed")
    ledger = BudgetLedger(store, sql_spec(dp=True))
    for run in range(1, 11):
        ledger.charge(run, 0.1, ["input_1"])
    reads: list[str] = []
    real = store.read

    def counted(name: str) -> Any:
        reads.append(name)
        return real(name)

    store.read = counted  # type: ignore[method-assign]
    ledger.charge(11, 0.1, ["input_1"])
    assert reads == ["_budget/00000010"]
    reads.clear()
    assert ledger.spent() == pytest.approx({"input_1": 1.1})
    assert reads == ["_budget/00000011"]
