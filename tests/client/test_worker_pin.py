"""One Worker per approved Work-ID for a profile (``worker-changed``), without servers.

The end-to-end case, a Worker the Controller starts again from the spec it kept, is
``tests/adversarial/test_twin_worker.py``.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from cleanroom.client.errors import UntrustedAnswerError
from cleanroom.client.profile import Profile
from cleanroom.client.rooms import UPLOADS_FILE, CleanRoomClient
from cleanroom.protocol.spec import WorkSpec
from tests.client.test_profile import create
from tests.sql.fixtures import sql_document, sql_spec

WORKER_A = "A" * 43
WORKER_B = "B" * 43


def changed(client: CleanRoomClient, work_id: str, worker_id: str) -> UntrustedAnswerError:
    with pytest.raises(UntrustedAnswerError) as caught:
        client._check_worker("room", work_id, worker_id)
    assert caught.value.check == "worker-changed"
    assert (caught.value.expected, caught.value.actual) == (WORKER_A, worker_id)
    return caught.value


def test_the_first_worker_of_an_approved_work_id_is_the_only_one(tmp_path: Path) -> None:
    profile = create("alice", tmp_path)
    client = CleanRoomClient(profile)
    spec = sql_spec()
    client._check_worker("room", spec.work_id, WORKER_B)  # not approved: nothing pinned
    profile.approve("room", spec.work_id, spec.function)
    client._check_worker("room", spec.work_id, WORKER_A)  # the first one met: pinned
    client._check_worker("room", spec.work_id, WORKER_A)
    assert profile.approval("room").worker_id == WORKER_A  # type: ignore[union-attr]
    error = changed(client, spec.work_id, WORKER_B)
    assert error.hint is not None and "redeployed" in error.hint
    # A second process of the same profile reads the pin from the file.
    changed(CleanRoomClient(Profile.load("alice", tmp_path)), spec.work_id, WORKER_B)
    # Approving the same Work-ID again keeps the pin: being asked to approve again
    # does not free the Controller to choose the Worker.
    profile.approve("room", spec.work_id, spec.function)
    changed(client, spec.work_id, WORKER_B)


def another_work_id() -> WorkSpec:
    """The room's spec deployed again: another nonce, another Work-ID."""
    document = sql_document()
    document["nonce"] = "B" + "A" * 21
    return WorkSpec.parse(document)


def test_a_redeployed_room_pins_its_own_worker(tmp_path: Path) -> None:
    profile = create("alice", tmp_path)
    client = CleanRoomClient(profile)
    spec = sql_spec()
    profile.approve("room", spec.work_id, spec.function)
    client._check_worker("room", spec.work_id, WORKER_A)
    redeployed = another_work_id()
    profile.approve("room", redeployed.work_id, redeployed.function)
    client._check_worker("room", redeployed.work_id, WORKER_B)
    assert profile.approval("room").worker_id == WORKER_B  # type: ignore[union-attr]


def test_the_worker_an_earlier_version_recorded_for_a_dp_input_is_the_pinned_one(
    tmp_path: Path,
) -> None:
    """Before the pin, uploads.json recorded which Worker got each input under DP; a
    profile upgraded with such a record pins that Worker, not the next one it meets."""
    profile = create("alice", tmp_path)
    client = CleanRoomClient(profile)
    spec = sql_spec(dp=True)
    profile.approve("room", spec.work_id, spec.function)
    record = {"work_id": spec.work_id, "inputs": {"input_1": "00" * 32}}
    record["workers"] = {"input_1": WORKER_A}
    (profile.directory / UPLOADS_FILE).write_text(json.dumps({"room": record}))
    changed(client, spec.work_id, WORKER_B)
    client._check_worker("room", spec.work_id, WORKER_A)


def test_approving_a_work_id_again_after_another_keeps_its_worker(tmp_path: Path) -> None:
    """A manager that serves the room's other Work-ID for a while, then the first one
    again, has the user approve each: the Worker pinned for the first is still its
    only one (a Work-ID has one Worker, whatever was approved in between)."""
    profile = create("alice", tmp_path)
    client = CleanRoomClient(profile)
    spec = sql_spec()
    profile.approve("room", spec.work_id, spec.function)
    client._check_worker("room", spec.work_id, WORKER_A)
    other = another_work_id()
    profile.approve("room", other.work_id, other.function)
    client._check_worker("room", other.work_id, "C" * 43)
    profile.approve("room", spec.work_id, spec.function)  # the first one, back again
    changed(client, spec.work_id, WORKER_B)
    assert profile.approval("room").worker_id == WORKER_A  # type: ignore[union-attr]


def test_two_processes_meeting_two_workers_at_once_pin_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two commands of one profile (two uploads in parallel) that meet the room for
    the first time, each sent by the Controller to its own Worker: one is pinned, and
    the other command is refused, not told that its Worker is the pinned one."""
    profile = create("alice", tmp_path)
    spec = sql_spec()
    profile.approve("room", spec.work_id, spec.function)
    read, go = threading.Event(), threading.Event()
    pins = Profile.pinned_workers

    def slow_pins(self: Profile) -> dict[str, str]:
        found = pins(self)
        if threading.current_thread().name == "first" and not read.is_set():
            read.set()  # the first has read no pin; it writes its own after the second ran
            go.wait(10)
        return found

    monkeypatch.setattr(Profile, "pinned_workers", slow_pins)
    pinned: dict[str, str | None] = {}

    def pin(worker_id: str) -> None:
        other = Profile.load("alice", tmp_path)  # another process's view
        pinned[worker_id] = other.pin_worker("room", spec.work_id, worker_id)

    first = threading.Thread(target=pin, args=(WORKER_A,), name="first")
    second = threading.Thread(target=pin, args=(WORKER_B,), name="second")
    first.start()
    assert read.wait(10)
    second.start()
    second.join(0.5)
    go.set()
    first.join(10)
    second.join(10)
    assert pinned == {WORKER_A: WORKER_A, WORKER_B: WORKER_A}
    assert profile.approval("room").worker_id == WORKER_A  # type: ignore[union-attr]


def test_two_uploads_at_once_both_stay_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two uploads of one profile at once (two inputs of a room, in parallel) each
    record the digest it sent, which the receipt is checked against: the second one
    written dropped the first (both read the file before either wrote it), or the two
    writers shared one temporary file and left a file that is not JSON."""
    profile = create("alice", tmp_path)
    spec = sql_spec()
    read, go = threading.Event(), threading.Event()
    records = CleanRoomClient._records

    def slow_records(self: CleanRoomClient) -> dict[str, object]:
        found = records(self)
        if threading.current_thread().name == "first" and not read.is_set():
            read.set()
            go.wait(10)
        return found

    monkeypatch.setattr(CleanRoomClient, "_records", slow_records)

    def upload(input_id: str) -> None:
        client = CleanRoomClient(Profile.load("alice", tmp_path))  # another process's view
        client._remember_upload("room", spec.work_id, input_id, input_id[-1] * 64)

    first = threading.Thread(target=upload, args=("input_1",), name="first")
    second = threading.Thread(target=upload, args=("input_2",), name="second")
    first.start()
    assert read.wait(10)
    second.start()
    second.join(0.5)
    go.set()
    first.join(10)
    second.join(10)
    own = CleanRoomClient(profile)._own_uploads("room", spec.work_id)
    assert own == {"input_1": "1" * 64, "input_2": "2" * 64}
