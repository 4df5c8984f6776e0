"""What became of a run session (CleanRoom.fate): the Worker's sealed answer, in one
process, the real Worker and sandbox (docs/protocol.md, "Session fate")."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cleanroom.enclave.errors import RunError, SealedRefusal, UploadError
from cleanroom.enclave.room import CleanRoom
from cleanroom.enclave.runner import Sandbox
from cleanroom.enclave.sqlroom import SqlRoom
from cleanroom.errors import CheckFailed
from cleanroom.protocol.acks import Ack, ack_document, open_ack
from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.fate import SessionFate, open_fate, seal_fate_request
from cleanroom.protocol.handshake import SessionKeys
from cleanroom.protocol.query_receipt import QUERY_RECORD, open_refusal, query_request
from cleanroom.protocol.records import RecordSender
from cleanroom.protocol.run_request import seal_run_request
from cleanroom.protocol.spec import FatePurpose, RunPurpose, UploadPurpose
from tests.enclave import test_room, test_sqlroom
from tests.enclave.test_room import (
    ALICE_DATA,
    BOB_DATA,
    HANDLER,
    make_room,
    manifest,
    session,
    upload,
    upload_frames,
)
from tests.protocol.fixtures import ALICE, ALICE_ID, BOB, BOB_ID
from tests.sql.fixtures import alice_csv, bob_csv, sql_spec

confinement = test_room.confinement


def ask(room: CleanRoom, user: object, asked: str) -> SessionFate:
    """A fate question about ``asked``, as the runner's client asks it and opens it."""
    keys = session(room, user, FatePurpose(op="fate", session=asked))  # type: ignore[arg-type]
    sealed = room.fate(keys.session_id, seal_fate_request(keys))
    return open_fate(keys, sealed, session=asked, sql=room.SQL)


@pytest.fixture
def room(tmp_path: Path, confinement: Sandbox) -> CleanRoom:
    room = make_room(tmp_path, confinement, HANDLER, runners=[ALICE_ID, BOB_ID])
    upload(room, ALICE, "input_1", ALICE_DATA)
    upload(room, BOB, "input_2", BOB_DATA)
    return room


def test_an_unused_run_session_asked_about_is_closed_and_never_runs(room: CleanRoom) -> None:
    """The Controller answered the run request itself and holds it back: the runner's
    question closes the session, and the held request starts nothing afterwards."""
    held = session(room, ALICE, RunPurpose(op="run"))
    assert ask(room, ALICE, held.session_id) == SessionFate(held.session_id, False, None)
    with pytest.raises(UploadError) as caught:
        room.begin_run(held.session_id, seal_run_request(held))
    assert caught.value.check == "session-used", caught.value
    assert room.state == "collecting"
    assert ask(room, ALICE, held.session_id).ran is False  # asked again: the same
    fresh = session(room, ALICE, RunPurpose(op="run"))
    receipt, _ = room.run(fresh.session_id, seal_run_request(fresh))  # asking again is safe
    assert receipt["status"] == "succeeded"


def test_a_session_that_started_the_run_is_said_to_have_run(room: CleanRoom) -> None:
    keys = session(room, ALICE, RunPurpose(op="run"))
    room.begin_run(keys.session_id, seal_run_request(keys))
    assert ask(room, ALICE, keys.session_id) == SessionFate(keys.session_id, True, None)
    room.execute()
    assert ask(room, ALICE, keys.session_id).ran is True


def test_a_run_request_refused_after_its_session_was_taken_is_closed(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """inputs-missing (in the clear, from the Worker or the Controller alike): the
    session is used and ran nothing; the answer says so, sealed."""
    room = make_room(tmp_path, confinement, HANDLER)
    keys = session(room, ALICE, RunPurpose(op="run"))
    with pytest.raises(RunError) as caught:
        room.begin_run(keys.session_id, seal_run_request(keys))
    assert caught.value.check == "inputs-missing"
    assert ask(room, ALICE, keys.session_id).ran is False


def test_a_session_never_opened_is_closed(room: CleanRoom) -> None:
    assert ask(room, ALICE, "AAAAAAAAAAAAAAAAAAAAAA").ran is False


def test_only_the_user_who_opened_a_session_asks_about_it(room: CleanRoom) -> None:
    """Another runner cannot close a runner's session (nor learn what became of it)."""
    alices = session(room, ALICE, RunPurpose(op="run"))
    with pytest.raises(RunError) as caught:
        ask(room, BOB, alices.session_id)
    assert caught.value.check == "fate-owner", caught.value
    room.run(alices.session_id, seal_run_request(alices))  # still hers
    with pytest.raises(RunError) as ran:
        ask(room, BOB, alices.session_id)
    assert ran.value.check == "fate-owner", ran.value


def test_a_question_not_sealed_in_its_session_is_refused_and_keeps_the_session(
    room: CleanRoom,
) -> None:
    """The Controller sees the fate session's id: a question it made up (or another
    session's) neither closes anything nor uses the runner's fate session."""
    held = session(room, ALICE, RunPurpose(op="run"))
    keys = session(room, ALICE, FatePurpose(op="fate", session=held.session_id))
    other = session(room, ALICE, FatePurpose(op="fate", session=held.session_id))
    for forged, check in (
        (b"", "record-frame"),
        (seal_fate_request(other), "record-authentication"),
    ):
        with pytest.raises(CheckFailed) as caught:
            room.fate(keys.session_id, forged)
        assert caught.value.check == check, caught.value
    room.begin_run(held.session_id, seal_run_request(held))  # not closed by a refused question
    sealed = room.fate(keys.session_id, seal_fate_request(keys))
    assert open_fate(keys, sealed, session=held.session_id, sql=False).ran is True
    with pytest.raises(CheckFailed) as swapped:  # the other fate session's answer
        open_fate(other, sealed, session=held.session_id, sql=False)
    assert swapped.value.check == "record-authentication"


def _query_frame(keys: SessionKeys) -> bytes:
    request = canonical(query_request(name="by_segment", parameters={"skip": "none"}))
    return RecordSender(keys.client_to_worker, keys.session_id).seal(
        QUERY_RECORD, request, final=True
    )


@pytest.fixture
def sql_room(tmp_path: Path, confinement: Sandbox) -> SqlRoom:
    room = test_sqlroom.make_room(tmp_path, confinement, sql_spec())
    test_sqlroom.upload(room, ALICE, "input_1", alice_csv())
    test_sqlroom.upload(room, BOB, "input_2", bob_csv())
    return room


def test_a_query_names_its_run_and_one_being_checked_when_closed_never_runs(
    sql_room: SqlRoom, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query's session ran as run n; a query still being checked when its session's
    question came (its session taken, not yet charged) is refused before the charge,
    sealed to its runner (session-closed), and the answer stays 'closed'."""
    first = session(sql_room, ALICE, RunPurpose(op="run"))
    number = sql_room.begin_query(first.session_id, _query_frame(first))
    assert ask(sql_room, ALICE, first.session_id) == SessionFate(first.session_id, True, number)
    racing = session(sql_room, ALICE, RunPurpose(op="run"))
    from cleanroom.enclave import sqlroom

    real_plan = sqlroom.plan_query
    answers: list[SessionFate] = []

    def plan_then_asked(*args: object, **kwargs: object) -> object:
        answers.append(ask(sql_room, ALICE, racing.session_id))  # between check and charge
        return real_plan(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlroom, "plan_query", plan_then_asked)
    with pytest.raises(SealedRefusal) as caught:
        sql_room.begin_query(racing.session_id, _query_frame(racing))
    assert open_refusal(racing, caught.value.sealed).check == "session-closed"
    assert answers == [SessionFate(racing.session_id, False, None)]
    assert sorted(sql_room.runs) == [number]
    assert ask(sql_room, ALICE, racing.session_id).ran is False


# ------------------------------------------------------------ upload sessions


def ask_upload(room: CleanRoom, user: object, asked: str) -> SessionFate:
    """A fate question about upload session ``asked``, as the uploader's client asks it."""
    keys = session(room, user, FatePurpose(op="fate", session=asked))  # type: ignore[arg-type]
    sealed = room.fate(keys.session_id, seal_fate_request(keys))
    return open_fate(keys, sealed, session=asked, sql=room.SQL, upload=True)


@pytest.fixture
def empty_room(tmp_path: Path, confinement: Sandbox) -> CleanRoom:
    return make_room(tmp_path, confinement, HANDLER)


def test_an_upload_session_that_stored_its_input_is_said_to_have_stored_it(
    empty_room: CleanRoom,
) -> None:
    """The Controller relayed the body and dropped the acknowledgement: the uploader asks,
    and the Worker says, sealed, that the session stored her input; only she may ask."""
    keys = session(empty_room, ALICE, UploadPurpose(op="upload", input="input_1"))
    stream = empty_room.begin_upload(keys.session_id)
    for frame in upload_frames(keys, "input_1", {"e.csv": ALICE_DATA}):
        stream.feed(frame)
    stream.finish()
    digest = hashlib.sha256(manifest("input_1", {"e.csv": ALICE_DATA})).hexdigest()
    ack = open_ack(keys, stream.acknowledgement(), input_id="input_1", sha256=digest, size=12)
    stored = ask_upload(empty_room, ALICE, keys.session_id)
    assert stored.stored and stored.acknowledged == ack == Ack(already=False, rows=None)
    assert ask_upload(empty_room, ALICE, keys.session_id) == stored  # asked again: the same
    with pytest.raises(RunError) as caught:
        ask_upload(empty_room, BOB, keys.session_id)
    assert caught.value.check == "fate-owner", caught.value


def test_an_upload_burnt_by_its_first_frame_is_closed_and_uploading_again_is_safe(
    empty_room: CleanRoom,
) -> None:
    """The Controller sends the uploader's first frame alone (it takes her session, then
    ends short) and her whole body after it (session-used): asked, the Worker says the
    session stored nothing, and a new session's upload of the same is new, not already."""
    keys = session(empty_room, ALICE, UploadPurpose(op="upload", input="input_1"))
    frames = upload_frames(keys, "input_1", {"e.csv": ALICE_DATA})
    with pytest.raises(UploadError) as short:
        empty_room.upload(keys.session_id, frames[:1])
    assert short.value.check == "upload-truncated", short.value
    with pytest.raises(UploadError) as used:
        empty_room.upload(keys.session_id, frames)
    assert used.value.check == "session-used", used.value
    assert ask_upload(empty_room, ALICE, keys.session_id) == SessionFate(
        keys.session_id, False, None
    )
    again = session(empty_room, ALICE, UploadPurpose(op="upload", input="input_1"))
    stream = empty_room.begin_upload(again.session_id)
    for frame in upload_frames(again, "input_1", {"e.csv": ALICE_DATA}):
        stream.feed(frame)
    stream.finish()
    assert not stream.already


def test_an_upload_under_way_when_its_session_is_closed_stores_nothing(
    empty_room: CleanRoom,
) -> None:
    """The Controller sends the first frames of the body, answers the uploader a 502 and
    holds the rest: her question closes the session, and the upload is ended at once
    (session-closed, h28: before, at its end, the input held in progress meanwhile),
    the rest refused (upload-ended), nothing stored; the answer stays 'closed'."""
    keys = session(empty_room, ALICE, UploadPurpose(op="upload", input="input_1"))
    frames = upload_frames(keys, "input_1", {"e.csv": ALICE_DATA})
    stream = empty_room.begin_upload(keys.session_id)
    stream.feed(frames[0])
    closed = SessionFate(keys.session_id, False, None)
    assert ask_upload(empty_room, ALICE, keys.session_id) == closed
    with pytest.raises(RunError) as caught:
        stream.check_time()  # what the Worker's service does while it waits for more
    assert caught.value.check == "session-closed", caught.value
    assert empty_room.status(bytes(32))[0]["uploading"] == []
    for frame in frames[1:]:
        with pytest.raises(UploadError) as ended:
            stream.feed(frame)
        assert ended.value.check == "upload-ended", ended.value
    with pytest.raises(UploadError):
        stream.finish()
    assert "input_1" not in empty_room.status(bytes(32))[0]["inputs"]
    assert ask_upload(empty_room, ALICE, keys.session_id) == closed
    upload(empty_room, ALICE, "input_1", ALICE_DATA)  # uploading again is safe


def test_a_retry_under_way_when_its_session_is_closed_is_not_acknowledged(
    empty_room: CleanRoom,
) -> None:
    """The same for a retry of an input already there: 'closed' and then an
    acknowledgement 'already' of the same session would contradict each other."""
    upload(empty_room, ALICE, "input_1", ALICE_DATA)
    keys = session(empty_room, ALICE, UploadPurpose(op="upload", input="input_1"))
    frames = upload_frames(keys, "input_1", {"emails.csv": ALICE_DATA})
    stream = empty_room.begin_upload(keys.session_id)
    stream.feed(frames[0])
    assert ask_upload(empty_room, ALICE, keys.session_id).stored is False
    with pytest.raises(RunError) as caught:
        stream.feed(frames[1])
    assert caught.value.check == "session-closed", caught.value
    with pytest.raises(UploadError):
        stream.finish()
    assert ask_upload(empty_room, ALICE, keys.session_id).stored is False


def test_the_memory_of_closed_sessions_is_only_of_requests_under_way(
    empty_room: CleanRoom,
) -> None:
    """A fate question about a session with nothing under way needs no memory of it (a
    session neither fresh nor under way can never start anything); one under way is
    remembered until its request ends. The Worker's memory was every session ever
    asked about, for ever."""
    for _ in range(5):
        held = session(empty_room, ALICE, RunPurpose(op="run"))
        assert ask(empty_room, ALICE, held.session_id).ran is False
    assert ask(empty_room, ALICE, "AAAAAAAAAAAAAAAAAAAAAA").ran is False
    assert empty_room._closed == set()
    keys = session(empty_room, ALICE, UploadPurpose(op="upload", input="input_1"))
    frames = upload_frames(keys, "input_1", {"e.csv": ALICE_DATA})
    stream = empty_room.begin_upload(keys.session_id)
    stream.feed(frames[0])
    ask_upload(empty_room, ALICE, keys.session_id)
    assert empty_room._closed == {keys.session_id}
    stream.abort()  # the Controller ended the body short
    assert empty_room._closed == set() and empty_room._pending == {}
    assert ask_upload(empty_room, ALICE, keys.session_id).stored is False


def test_a_retry_found_stored_says_already_as_its_acknowledgement_would_have(
    empty_room: CleanRoom,
) -> None:
    """A retry of an input already there whose acknowledgement the Controller dropped:
    the Worker's answer is ``stored`` with that acknowledgement, ``already`` (before, it
    was ``closed``, "stored nothing", and the uploader was told to upload again)."""
    upload(empty_room, ALICE, "input_1", ALICE_DATA)
    keys = session(empty_room, ALICE, UploadPurpose(op="upload", input="input_1"))
    empty_room.upload(keys.session_id, upload_frames(keys, "input_1", {"emails.csv": ALICE_DATA}))
    digest = hashlib.sha256(manifest("input_1", {"emails.csv": ALICE_DATA})).hexdigest()
    answer = ask_upload(empty_room, ALICE, keys.session_id)
    assert answer.ack == ack_document("input_1", digest, already=True, size=len(ALICE_DATA))
    assert answer.acknowledged == Ack(already=True, rows=None)
    with pytest.raises(RunError) as caught:
        ask_upload(empty_room, BOB, keys.session_id)
    assert caught.value.check == "fate-owner", caught.value


def test_a_sql_rooms_stored_answer_counts_the_rows_it_checked(sql_room: SqlRoom) -> None:
    """A SQL room's upload found stored reports the rows its schema check counted, as
    its acknowledgement does (before: rows unknown)."""
    acknowledged = test_sqlroom.upload(sql_room, ALICE, "input_1", alice_csv())
    keys = session(sql_room, ALICE, UploadPurpose(op="upload", input="input_1"))
    stream = sql_room.begin_upload(keys.session_id)
    for frame in upload_frames(keys, "input_1", {"data.csv": alice_csv()}):
        stream.feed(frame)
    stream.finish()
    answer = ask_upload(sql_room, ALICE, keys.session_id)
    assert answer.acknowledged is not None and answer.acknowledged.already is True
    assert answer.acknowledged.rows == acknowledged["rows"] and acknowledged["rows"] > 0


def test_the_retries_remembered_for_their_fate_are_bounded(empty_room: CleanRoom) -> None:
    """Each retry's fate is kept for the room's life: at most MAX_RETRIES of an input,
    one more refused before its body is read (upload-retries)."""
    from cleanroom.enclave.room import MAX_RETRIES

    upload(empty_room, ALICE, "input_1", ALICE_DATA)
    for _ in range(MAX_RETRIES):
        upload(empty_room, ALICE, "input_1", ALICE_DATA)
    with pytest.raises(UploadError) as caught:
        upload(empty_room, ALICE, "input_1", ALICE_DATA)
    assert caught.value.check == "upload-retries", caught.value
    assert len(empty_room._stored) == 1 + MAX_RETRIES
