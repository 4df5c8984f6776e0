"""The fate question and answer (cleanroom.protocol.fate): docs/protocol.md's vectors,
and every way an answer the Worker did not seal in this session is refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cleanroom.errors import CheckFailed
from cleanroom.protocol.acks import Ack, ack_document
from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.fate import (
    FATE_RECORD,
    SessionFate,
    fate_document,
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
DIGEST = "11" * 32
ACK = ack_document("input_1", DIGEST, already=True, size=1234, rows=5)
UPLOADED = ("input_1", DIGEST, 1234)


def _vector(heading: str) -> tuple[str, list[str]]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    said, block = text[text.index(heading) :].split("```")[:2]
    return said, block.split()


def test_the_fate_vectors() -> None:
    """docs/protocol.md: the question's frame and the answers' documents and frames."""
    ran = seal_fate(KEYS, SessionFate(ASKED, True, 2))
    closed = seal_fate(KEYS, SessionFate(ASKED, False, None))
    stored = seal_fate(KEYS, SessionFate(ASKED, False, None, stored=True, ack=ACK))
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
        canonical(fate_document(SessionFate(ASKED, False, None, stored=True, ack=ACK))).decode(),
        hashlib.sha256(stored).hexdigest(),
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
    stored = seal_fate(KEYS, SessionFate(ASKED, False, None, stored=True, ack=ACK))
    assert open_fate(KEYS, stored, session=ASKED, sql=False, upload=True).stored is True
    assert open_fate(KEYS, stored, session=ASKED, sql=True, upload=None).stored is True
    ran = seal_fate(KEYS, SessionFate(ASKED, True, None))
    for frame, upload in ((stored, False), (ran, True)):
        with pytest.raises(CheckFailed) as caught:
            open_fate(KEYS, frame, session=ASKED, sql=False, upload=upload)
        assert caught.value.check == "session-fate", caught.value


def test_a_stored_answer_says_what_the_acknowledgement_would_have() -> None:
    """``stored`` carries the acknowledgement of the upload session asked about: the
    client reports ``already`` and a SQL room's rows as from the acknowledgement itself
    (before, it knew neither and said new and no rows)."""
    stored = seal_fate(KEYS, SessionFate(ASKED, False, None, stored=True, ack=ACK))
    answer = open_fate(KEYS, stored, session=ASKED, sql=True, upload=True, uploaded=UPLOADED)
    assert answer == SessionFate(ASKED, False, None, stored=True, ack=ACK)
    assert answer.acknowledged == Ack(already=True, rows=5)
    new = ack_document("input_1", DIGEST, already=False, size=1234)
    fresh = seal_fate(KEYS, SessionFate(ASKED, False, None, stored=True, ack=new))
    opened = open_fate(KEYS, fresh, session=ASKED, sql=False, upload=True, uploaded=UPLOADED)
    assert opened.acknowledged == Ack(already=False, rows=None)


@pytest.mark.parametrize(
    ("what", "uploaded"),
    [
        ("another input's", ("input_2", DIGEST, 1234)),
        ("other content's", ("input_1", "22" * 32, 1234)),
        ("other bytes'", ("input_1", DIGEST, 1233)),
    ],
)
def test_a_stored_answer_of_another_upload_is_refused(
    what: str, uploaded: tuple[str, str, int]
) -> None:
    """An acknowledgement in a ``stored`` answer that is not of this upload's input,
    manifest digest and bytes is refused (upload-ack), as the acknowledgement is."""
    stored = seal_fate(KEYS, SessionFate(ASKED, False, None, stored=True, ack=ACK))
    with pytest.raises(CheckFailed) as caught:
        open_fate(KEYS, stored, session=ASKED, sql=True, upload=True, uploaded=uploaded)
    assert caught.value.check == "upload-ack", f"{what}: {caught.value}"


@pytest.mark.parametrize(
    ("what", "frame", "check"),
    [
        ("another upload's fate session's answer",
         seal_fate(SessionKeys("AAAAAAAAAAAAAAAAAAAAAA", KEYS.client_to_worker, bytes([3]) * 32,
                               bytes(32)), SessionFate(ASKED, False, None, stored=True, ack=ACK)),
         "record-authentication"),
        ("stored without an acknowledgement",
         _sealed(_doc(fate="stored", run=None)), "session-fate"),
        ("closed with an acknowledgement",
         _sealed({**_doc(fate="closed", run=None), "ack": ACK}), "session-fate"),
        ("an acknowledgement of another form",
         _sealed({**_doc(fate="stored", run=None), "ack": {**ACK, "stored": "maybe"}}),
         "upload-ack"),
        ("an acknowledgement with rows as text",
         _sealed({**_doc(fate="stored", run=None), "ack": {**ACK, "rows": "5"}}), "upload-ack"),
        ("an acknowledgement of no input",
         _sealed({**_doc(fate="stored", run=None), "ack": {**ACK, "input": 1}}), "upload-ack"),
    ],
)  # fmt: skip
def test_a_stored_answer_not_the_workers_for_this_upload_is_refused(
    what: str, frame: bytes, check: str
) -> None:
    """Replayed from another upload's fate session (it does not open), or not exactly
    the document: refused by name, whether the asker knows her upload or not."""
    for uploaded in (UPLOADED, None):
        with pytest.raises(CheckFailed) as caught:
            open_fate(KEYS, frame, session=ASKED, sql=True, upload=True, uploaded=uploaded)
        expected = "session-fate" if uploaded is None and "no input" in what else check
        assert caught.value.check == expected, f"{what}: {caught.value}"
