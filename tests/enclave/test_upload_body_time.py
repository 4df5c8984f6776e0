"""An upload's body has a bound of the Worker's own (``upload-body-time``): a Controller that
keeps it open, sending nothing, held the input ``upload-in-progress`` for everyone, for
as long as it liked. The real Worker, in one process, its clock pinned."""

from __future__ import annotations

from pathlib import Path

import pytest

from cleanroom.enclave.errors import UploadError
from cleanroom.enclave.room import SESSION_LIFETIME_S, UPLOAD_MIN_BYTES_PER_S, CleanRoom
from cleanroom.enclave.runner import Sandbox
from cleanroom.protocol.spec import UploadPurpose
from tests.enclave import test_room
from tests.enclave.test_fate import ask_upload
from tests.enclave.test_room import ALICE_DATA, HANDLER, make_room, session, upload_frames
from tests.protocol.fixtures import ALICE

confinement = test_room.confinement


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def room(tmp_path: Path, confinement: Sandbox, clock: Clock) -> CleanRoom:
    room = make_room(tmp_path, confinement, HANDLER)
    room._clock = clock
    return room


def started(room: CleanRoom) -> tuple[object, list[bytes]]:
    """Alice's upload of input_1, its first frame fed (the input marked in progress)."""
    keys = session(room, ALICE, UploadPurpose(op="upload", input="input_1"))
    frames = upload_frames(keys, "input_1", {"e.csv": ALICE_DATA})
    stream = room.begin_upload(keys.session_id)
    stream.arrived(len(frames[0]))
    stream.feed(frames[0])
    return stream, frames


def test_a_body_kept_open_past_its_bound_is_ended_and_lets_the_input_go(
    room: CleanRoom, clock: Clock
) -> None:
    """The Controller relays the first frame and then nothing: past the bound the Worker
    ends the upload (upload-body-time), nothing stored, the input no longer in progress, and
    the rest of that body, sent later, is refused; uploading again works."""
    stream, frames = started(room)
    assert room.status(bytes(32))[0]["uploading"] == ["input_1"]
    assert stream.remaining() > 0  # type: ignore[attr-defined]
    clock.now += SESSION_LIFETIME_S + len(frames[0]) / UPLOAD_MIN_BYTES_PER_S + 1
    with pytest.raises(UploadError) as caught:
        stream.check_time()  # type: ignore[attr-defined]
    assert caught.value.check == "upload-body-time", caught.value
    assert room.status(bytes(32))[0]["uploading"] == []
    with pytest.raises(UploadError) as late:
        stream.feed(frames[1])  # type: ignore[attr-defined]
    assert late.value.check == "upload-ended", late.value
    test_room.upload(room, ALICE, "input_1", ALICE_DATA)
    assert "input_1" in room.status(bytes(32))[0]["inputs"]


def test_a_late_end_of_the_old_body_never_lets_go_of_a_new_uploads_mark(
    room: CleanRoom, clock: Clock
) -> None:
    """After the old upload was ended, Alice's new upload of the input is under way: the
    old body's end (its connection cut, or its last frames) lets go of nothing, so a third
    upload of the input is still refused while hers goes on (upload-in-progress)."""
    old, old_frames = started(room)
    clock.now += SESSION_LIFETIME_S + 10
    with pytest.raises(UploadError):
        old.feed(old_frames[1])  # type: ignore[attr-defined]
    new, new_frames = started(room)
    old.abort()  # type: ignore[attr-defined]
    with pytest.raises(UploadError):
        old.finish()  # type: ignore[attr-defined]
    assert room.status(bytes(32))[0]["uploading"] == ["input_1"]
    with pytest.raises(UploadError) as busy:
        started(room)
    assert busy.value.check == "upload-in-progress", busy.value
    for frame in new_frames[1:]:
        new.feed(frame)  # type: ignore[attr-defined]
    new.finish()  # type: ignore[attr-defined]
    assert room.status(bytes(32))[0]["uploading"] == []


def test_an_ended_uploads_session_is_closed_when_asked(room: CleanRoom, clock: Clock) -> None:
    """Asked what became of the ended upload, the Worker says it stored nothing."""
    stream, _frames = started(room)
    clock.now += SESSION_LIFETIME_S + 10
    with pytest.raises(UploadError):
        stream.check_time()  # type: ignore[attr-defined]
    asked = stream._session.keys.session_id  # type: ignore[attr-defined]
    assert room._pending == {} and room._closed == set()
    assert ask_upload(room, ALICE, asked).stored is False


def test_each_byte_of_the_body_earns_it_more_time(room: CleanRoom, clock: Clock) -> None:
    """A body that keeps coming is not ended at the grace: a large honest upload on a
    slow link goes on as long as it sends UPLOAD_MIN_BYTES_PER_S."""
    stream, _frames = started(room)
    clock.now += SESSION_LIFETIME_S + 5
    stream.arrived(int(10 * UPLOAD_MIN_BYTES_PER_S))  # type: ignore[attr-defined]
    stream.check_time()  # type: ignore[attr-defined]


def test_a_grace_longer_than_a_sessions_lifetime_is_refused(
    tmp_path: Path, confinement: Sandbox
) -> None:
    room = make_room(tmp_path, confinement, HANDLER)
    with pytest.raises(UploadError) as caught:
        CleanRoom(
            room.worker, room._store, sandbox=confinement, runtime=room._runtime,
            scratch_root=tmp_path / "s", upload_grace_s=SESSION_LIFETIME_S + 1,
        )  # fmt: skip
    assert caught.value.check == "upload-grace", caught.value
