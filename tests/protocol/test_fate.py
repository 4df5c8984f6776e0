"""The fate question and answer (cleanroom.protocol.fate): docs/protocol.md's vectors,
and every way an answer the Worker did not seal in this session is refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cleanroom.errors import CheckFailed
from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.fate import (
    FATE_RECORD,
    SessionFate,
    open_fate,
    open_fate_request,
    seal_fate,
    seal_fate_request,
)
from cleanroom.protocol.handshake import SessionKeys
from cleanroom.protocol.records import RecordSender
from cleanroom.protocol.spec import FatePurpose, authorize

KEYS = SessionKeys("Xl5eXl5eXl5eXl5eXl5eXg", bytes([1]) * 32, bytes([2]) * 32, bytes(32))
ASKED = "Q0NDQ0NDQ0NDQ0NDQ0NDQw"  # b64u of 16 bytes 0x43


def _vector(heading: str) -> tuple[str, list[str]]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    said, block = text[text.index(heading) :].split("```")[:2]
    return said, block.split()


def test_the_fate_vectors() -> None:
    """docs/protocol.md: the question's frame and the answers' documents and frames."""
    ran = seal_fate(KEYS, SessionFate(ASKED, True, 2))
    closed = seal_fate(KEYS, SessionFate(ASKED, False, None))
    _said, block = _vector("Vector (`tests/protocol/test_fate.py`)")
    assert block == [
        canonical({"type": "cleanroom/fate-request/v1"}).decode(),
        hashlib.sha256(seal_fate_request(KEYS)).hexdigest(),
        canonical(
            {"fate": "ran", "run": 2, "session": ASKED, "type": "cleanroom/session-fate/v1"}
        ).decode(),
        hashlib.sha256(ran).hexdigest(),
        canonical(
            {"fate": "closed", "run": None, "session": ASKED, "type": "cleanroom/session-fate/v1"}
        ).decode(),
        hashlib.sha256(closed).hexdigest(),
    ]
    assert open_fate(KEYS, ran, session=ASKED, sql=True) == SessionFate(ASKED, True, 2)
    assert open_fate(KEYS, closed, session=ASKED, sql=True) == SessionFate(ASKED, False, None)
    open_fate_request(KEYS, seal_fate_request(KEYS))


def _sealed(document: object, keys: SessionKeys = KEYS, path: str = FATE_RECORD) -> bytes:
    data = document if isinstance(document, bytes) else canonical(document)
    return RecordSender(keys.worker_to_client, keys.session_id).seal(path, data, final=True)


def _doc(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "type": "cleanroom/session-fate/v1", "session": ASKED, "fate": "ran", "run": 2,
    }  # fmt: skip
    return {**base, **changes}


@pytest.mark.parametrize(
    ("what", "frame", "sql", "check"),
    [
        ("another fate session's answer",
         seal_fate(SessionKeys("AAAAAAAAAAAAAAAAAAAAAA", KEYS.client_to_worker, bytes([3]) * 32,
                               bytes(32)), SessionFate(ASKED, False, None)), True,
         "record-authentication"),
        ("the client's own direction",
         seal_fate(SessionKeys(KEYS.session_id, KEYS.worker_to_client, KEYS.client_to_worker,
                               bytes(32)), SessionFate(ASKED, True, 2)), True,
         "record-authentication"),
        ("another record", _sealed(_doc(), path="run/query.detail"), True, "session-fate"),
        ("another session's fate", _sealed(_doc(session="AAAAAAAAAAAAAAAAAAAAAA")), True,
         "session-fate"),
        ("another type", _sealed(_doc(type="cleanroom/session-fate/v2")), True, "session-fate"),
        ("a fate of its own", _sealed(_doc(fate="maybe")), True, "session-fate"),
        ("a SQL room's run without its number", _sealed(_doc(run=None)), True, "session-fate"),
        ("run 0", _sealed(_doc(run=0)), True, "session-fate"),
        ("a run number as true", _sealed(_doc(run=True)), True, "session-fate"),
        ("a function room's run with a number", _sealed(_doc(run=1)), False, "session-fate"),
        ("closed with a run", _sealed(_doc(fate="closed")), True, "session-fate"),
        ("a field more", _sealed({**_doc(), "note": "x"}), True, "session-fate"),
        ("not canonical", _sealed(b'{"type":"cleanroom/session-fate/v1","session":"'
                                  + ASKED.encode() + b'","fate":"ran","run":2}'), True,
         "session-fate"),
        ("not JSON", _sealed(b"ran"), True, "session-fate"),
        ("zeros", bytes(120), True, "record-frame"),
    ],
)  # fmt: skip
def test_an_answer_not_the_workers_for_this_question_is_refused(
    what: str, frame: bytes, sql: bool, check: str
) -> None:
    with pytest.raises(CheckFailed) as caught:
        open_fate(KEYS, frame, session=ASKED, sql=sql)
    assert caught.value.check == check, f"{what}: {caught.value}"


def test_a_question_not_sealed_in_its_session_is_refused() -> None:
    other = SessionKeys("AAAAAAAAAAAAAAAAAAAAAA", bytes([3]) * 32, KEYS.worker_to_client, bytes(32))
    for what, frame, check in [
        ("another session's", seal_fate_request(other), "record-authentication"),
        ("empty", b"", "record-frame"),
        ("another record",
         RecordSender(KEYS.client_to_worker, KEYS.session_id).seal("run/request", b"{}",
                                                                   final=True), "fate-request"),
    ]:  # fmt: skip
        with pytest.raises(CheckFailed) as caught:
            open_fate_request(KEYS, frame)
        assert caught.value.check == check, f"{what}: {caught.value}"


def test_only_a_runner_or_an_uploader_asks_what_became_of_a_session() -> None:
    """A runner asks about her run sessions, an input's owner about her upload sessions
    (whose session it is, the Worker checks: fate-owner); anyone else is refused."""
    from cleanroom.protocol.errors import AccessDenied
    from cleanroom.protocol.spec import WorkSpec
    from tests.protocol.fixtures import ALICE_ID, BOB_ID, SPEC_DOCUMENT

    spec = WorkSpec.parse(SPEC_DOCUMENT)
    purpose = FatePurpose(op="fate", session=ASKED)
    authorize(spec, ALICE_ID, purpose)  # a runner
    authorize(spec, BOB_ID, purpose)  # input_2's owner
    alone = WorkSpec.parse({**SPEC_DOCUMENT, "inputs": {"input_1": ALICE_ID, "input_2": ALICE_ID}})
    with pytest.raises(AccessDenied) as caught:
        authorize(alone, BOB_ID, purpose)
    assert caught.value.check == "runner"


def test_an_upload_sessions_answer_is_stored_or_closed_and_a_run_sessions_never_stored() -> None:
    """``stored`` is an upload session's answer only, ``ran`` a run session's only: the
    client asking about one kind refuses the other's (session-fate)."""
    stored = seal_fate(KEYS, SessionFate(ASKED, False, None, stored=True))
    assert open_fate(KEYS, stored, session=ASKED, sql=False, upload=True).stored is True
    assert open_fate(KEYS, stored, session=ASKED, sql=True, upload=None).stored is True
    ran = seal_fate(KEYS, SessionFate(ASKED, True, None))
    for frame, upload in ((stored, False), (ran, True)):
        with pytest.raises(CheckFailed) as caught:
            open_fate(KEYS, frame, session=ASKED, sql=False, upload=upload)
        assert caught.value.check == "session-fate", caught.value
