"""The Worker's signed room status and its sealed upload acknowledgement: believed only
when they come from the attested Worker, for this nonce (or session), about this data."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from cleanroom.errors import CheckFailed
from cleanroom.protocol.acks import (
    ACK_TYPE,
    REFUSAL_TYPE,
    open_ack,
    open_upload_refusal,
    seal_ack,
    seal_upload_refusal,
)
from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.errors import (
    BindingError,
    MessageFormatError,
    RecordError,
    SignatureError,
)
from cleanroom.protocol.handshake import SessionKeys
from cleanroom.protocol.receipt import run_receipt
from cleanroom.protocol.records import RecordSender
from cleanroom.protocol.spec import WorkSpec
from cleanroom.protocol.status import room_status, sign_status, verify_status

from .fixtures import ALICE_ID, BOB_ID, SPEC, SPEC_DOCUMENT, WORKER, fixed_key

NONCE = bytes([0x4E]) * 32
DIGEST = "11" * 32


def status(**changes: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "nonce": NONCE,
        "state": "collecting",
        "inputs": {"input_1": (ALICE_ID, DIGEST)},
        "uploading": ["input_2"],
        "outputs": [],
        "run": None,
        "detail": None,
    }
    arguments.update(changes)
    return room_status(SPEC, **arguments)


def check(document: object, signature: bytes, **changes: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {"worker_key": WORKER.public_key(), "spec": SPEC, "nonce": NONCE}
    arguments.update(changes)
    return verify_status(document, signature, **arguments)


def test_a_signed_status_verifies() -> None:
    document = status()
    assert check(document, sign_status(WORKER, document)) == document
    done = status(state="done", uploading=[], outputs=["output_1"], run=("failed", 3))
    assert check(done, sign_status(WORKER, done))["run"] == {"status": "failed", "exit_code": 3}


def test_a_status_signed_by_another_key_is_refused() -> None:
    document = status()
    with pytest.raises(SignatureError) as caught:
        check(document, sign_status(fixed_key(0xBAD), document))
    assert caught.value.check == "status-signature"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("state", "done"),
        ("inputs", {}),
        ("outputs", ["output_1"]),
        ("detail", "all fine"),
        ("uploading", []),
    ],
)
def test_a_changed_status_is_refused(field: str, value: object) -> None:
    document = status()
    signature = sign_status(WORKER, document)
    changed = copy.deepcopy(document)
    changed[field] = value
    with pytest.raises(SignatureError):
        check(changed, signature)


def test_a_replayed_status_is_refused() -> None:
    """An old answer (another nonce) cannot stand for the room's state now."""
    document = status()
    with pytest.raises(BindingError) as caught:
        check(document, sign_status(WORKER, document), nonce=bytes(32))
    assert caught.value.check == "status-nonce"


def test_a_status_of_another_work_is_refused() -> None:
    other = WorkSpec.parse({**SPEC_DOCUMENT, "parameters": {"k": 2}})
    document = room_status(
        other, nonce=NONCE, state="collecting", inputs={}, uploading=[], outputs=[], run=None,
        detail=None,
    )  # fmt: skip
    with pytest.raises(BindingError) as caught:
        check(document, sign_status(WORKER, document))
    assert caught.value.check == "work-id"


@pytest.mark.parametrize(
    ("changes", "check_name"),
    [
        ({"inputs": {"input_9": (ALICE_ID, DIGEST)}}, "status-inputs"),
        ({"inputs": {"input_1": (BOB_ID, DIGEST)}}, "status-input-owner"),
        ({"uploading": ["input_9"]}, "status-uploading"),
        ({"outputs": ["output_9"]}, "status-outputs"),
        ({"state": "done", "run": None}, "status-run"),
        ({"state": "running", "run": ("succeeded", 0)}, "status-run"),
    ],
)
def test_a_status_the_spec_does_not_allow_is_refused(
    changes: dict[str, Any], check_name: str
) -> None:
    document = status(**changes)
    with pytest.raises(BindingError) as caught:
        check(document, sign_status(WORKER, document))
    assert caught.value.check == check_name


@pytest.mark.parametrize(
    ("field", "value", "check_name"),
    [
        ("state", "great", "status-state"),
        ("detail", 7, "status-format"),
        ("run", {"status": "succeeded"}, "status-format"),
        ("run", {"status": "fine", "exit_code": 0}, "status"),
        ("run", {"status": "failed", "exit_code": 300}, "exit-code"),
    ],
)
def test_a_malformed_status_is_refused(field: str, value: object, check_name: str) -> None:
    document = status(state="done", uploading=[], run=("succeeded", 0))
    document[field] = value
    with pytest.raises(MessageFormatError) as caught:
        check(document, sign_status(WORKER, document))
    assert caught.value.check == check_name
    with pytest.raises(MessageFormatError):
        check({"type": "x"}, b"")


# --- the upload acknowledgement --------------------------------------------------------

KEYS = SessionKeys("Xl5eXl5eXl5eXl5eXl5eXg", bytes([1]) * 32, bytes([2]) * 32, bytes(32))


SIZE = 1234


@pytest.mark.parametrize("already", [False, True])
@pytest.mark.parametrize("rows", [None, 0, 17])
def test_an_acknowledgement_opens_for_its_input_digest_and_size(
    already: bool, rows: int | None
) -> None:
    frame = seal_ack(KEYS, "input_1", DIGEST, already=already, size=SIZE, rows=rows)
    ack = open_ack(KEYS, frame, input_id="input_1", sha256=DIGEST, size=SIZE)
    assert ack.already is already and ack.rows == rows


def test_an_acknowledgement_of_other_data_is_refused() -> None:
    frame = seal_ack(KEYS, "input_1", DIGEST, already=False, size=SIZE)
    for other in (
        {"input_id": "input_1", "sha256": "22" * 32, "size": SIZE},
        {"input_id": "input_2", "sha256": DIGEST, "size": SIZE},
        {"input_id": "input_1", "sha256": DIGEST, "size": SIZE + 1},  # a count the relay cut
    ):
        with pytest.raises(BindingError) as caught:
            open_ack(KEYS, frame, **other)  # type: ignore[arg-type]
        assert caught.value.check == "upload-ack"


def test_an_acknowledgement_not_sealed_by_the_worker_is_refused() -> None:
    """The relay holds no session key: a forged, changed, or client-direction record fails."""
    frame = seal_ack(KEYS, "input_1", DIGEST, already=False, size=SIZE)
    changed = frame[:-1] + bytes([frame[-1] ^ 1])
    with pytest.raises(RecordError):
        open_ack(KEYS, changed, input_id="input_1", sha256=DIGEST, size=SIZE)
    other_session = SessionKeys("AAAAAAAAAAAAAAAAAAAAAA", KEYS.client_to_worker,
                                KEYS.worker_to_client, bytes(32))  # fmt: skip
    with pytest.raises(RecordError):
        open_ack(other_session, frame, input_id="input_1", sha256=DIGEST, size=SIZE)
    document = {"type": ACK_TYPE, "input": "input_1", "sha256": DIGEST, "stored": "new",
                "bytes": SIZE}  # fmt: skip
    wrong_direction = RecordSender(KEYS.client_to_worker, KEYS.session_id).seal(
        "input_1/.ack", canonical(document), final=True
    )
    with pytest.raises(RecordError):
        open_ack(KEYS, wrong_direction, input_id="input_1", sha256=DIGEST, size=SIZE)


def test_an_upload_refusal_opens_for_its_session_and_input_alone() -> None:
    """A schema refusal says where the uploader's data broke its schema: sealed to the
    upload session, of this input; a frame of another session or input, an
    acknowledgement, or a record in the client's direction is refused."""
    where = {"file": 1, "files": 1, "column": "spend", "row": 2}
    refusal = CheckFailed("schema-value", "double", where, "a value that is not double")
    frame = seal_upload_refusal(KEYS, "input_1", refusal)
    opened = open_upload_refusal(KEYS, frame, input_id="input_1")
    assert (opened.check, opened.expected, opened.actual) == ("schema-value", "double", where)
    assert opened.message == "a value that is not double"
    with pytest.raises(BindingError) as binding:
        open_upload_refusal(KEYS, frame, input_id="input_2")
    assert binding.value.check == "upload-refusal"
    other_session = SessionKeys("AAAAAAAAAAAAAAAAAAAAAA", KEYS.client_to_worker,
                                KEYS.worker_to_client, bytes(32))  # fmt: skip
    with pytest.raises(RecordError):
        open_upload_refusal(other_session, frame, input_id="input_1")
    ack = seal_ack(KEYS, "input_1", DIGEST, already=False, size=SIZE)
    with pytest.raises(BindingError):
        open_upload_refusal(KEYS, ack, input_id="input_1")
    document = {"type": REFUSAL_TYPE, **refusal.to_json()}
    wrong_direction = RecordSender(KEYS.client_to_worker, KEYS.session_id).seal(
        "input_1/.refusal", canonical(document), final=True
    )
    with pytest.raises(RecordError):
        open_upload_refusal(KEYS, wrong_direction, input_id="input_1")
    for bad in ({**document, "type": ACK_TYPE}, {**document, "check": 1}, {"type": REFUSAL_TYPE}):
        forged = RecordSender(KEYS.worker_to_client, KEYS.session_id).seal(
            "input_1/.refusal", canonical(bad), final=True
        )
        with pytest.raises(MessageFormatError) as caught:
            open_upload_refusal(KEYS, forged, input_id="input_1")
        assert caught.value.check == "upload-refusal"


@pytest.mark.parametrize(
    "change",
    [
        {"stored": "maybe"},
        {"bytes": True},  # equal to 1 in Python, but not a count
        {"bytes": -1},
        {"rows": -1},
        {"rows": "2"},
        {"rows": None},
        {"extra": 1},
    ],
)
def test_an_acknowledgement_must_be_exactly_the_canonical_document(
    change: dict[str, object],
) -> None:
    sender = RecordSender(KEYS.worker_to_client, KEYS.session_id)
    document = {"type": ACK_TYPE, "input": "input_1", "sha256": DIGEST, "stored": "new",
                "bytes": 1}  # fmt: skip
    spaced = sender.seal("input_1/.ack", json.dumps(document).encode(), final=True)
    with pytest.raises(BindingError):
        open_ack(KEYS, spaced, input_id="input_1", sha256=DIGEST, size=1)
    changed = RecordSender(KEYS.worker_to_client, KEYS.session_id).seal(
        "input_1/.ack", canonical({**document, **change}), final=True
    )
    with pytest.raises(BindingError):
        open_ack(KEYS, changed, input_id="input_1", sha256=DIGEST, size=1)


# --- the vectors of docs/protocol.md, recomputed ----------------------------------------

PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
K_W2C = bytes.fromhex("44d53e55c1d946f1c67304465c98cf5b9ed314a52b2720d1ba9b469f22ca10c2")


def documented_after(heading: str) -> list[str]:
    """The lines of the first code block after ``heading``'s "Vector:" paragraph."""
    text = PROTOCOL_MD.read_text()
    section = text[text.index(heading) :]
    block = section[section.index("Vector:") :].split("```")[1]
    return [line for line in block.splitlines() if line.strip()]


def test_the_receipt_vector() -> None:
    document = run_receipt(
        SPEC,
        inputs={"input_1": (ALICE_ID, "11" * 32), "input_2": (BOB_ID, "22" * 32)},
        outputs={"output_1": "33" * 32},
        status="failed",
        exit_code=3,
        started=1764763200,
        finished=1764763260,
    )
    lines = documented_after("## Run receipt")
    assert lines[0] == "JCS(receipt) = " + canonical(document).decode()
    assert lines[1].split("=")[1].strip() == hashlib.sha256(canonical(document)).hexdigest()


def test_the_status_vector() -> None:
    document = status()
    lines = documented_after("## Room status")
    assert lines[0] == "JCS(status) = " + canonical(document).decode()
    assert lines[1].split("=")[1].strip() == hashlib.sha256(canonical(document)).hexdigest()


def test_the_acknowledgement_vector() -> None:
    keys = SessionKeys("Xl5eXl5eXl5eXl5eXl5eXg", bytes(32), K_W2C, bytes(32))
    frame = seal_ack(keys, "input_1", DIGEST, already=True, size=SIZE)
    assert documented_after("## Upload acknowledgement") == [frame.hex()]
    assert open_ack(keys, frame, input_id="input_1", sha256=DIGEST, size=SIZE).already


def test_the_upload_refusal_vector() -> None:
    keys = SessionKeys("Xl5eXl5eXl5eXl5eXl5eXg", bytes(32), K_W2C, bytes(32))
    where = {"file": 1, "files": 1, "column": "spend", "row": 2}
    message = "input_1 does not match its schema: not a DOUBLE (file 1 of 1, column spend, row 2)"
    frame = seal_upload_refusal(
        keys, "input_1", CheckFailed("schema-value", "a DOUBLE", where, message)
    )
    assert documented_after("An upload its schema refuses (a SQL room)") == [frame.hex()]
    refusal = open_upload_refusal(keys, frame, input_id="input_1")
    assert (refusal.check, refusal.expected, refusal.actual) == ("schema-value", "a DOUBLE", where)


def test_a_sealed_upload_refusal_is_as_long_whatever_broke_where() -> None:
    # The relay sees the sealed refusal's length: unpadded, it told which check refused the
    # data, the length of the column's name and how many digits the row has (h10). Every
    # refusal up to a block is one block long; the opener refuses one that is not padded.
    keys = SessionKeys("Xl5eXl5eXl5eXl5eXl5eXg", bytes(32), K_W2C, bytes(32))
    said = "input_1 does not match its schema: "
    refusals = [
        CheckFailed(
            "schema-null", "a value", {"file": 1, "files": 1, "column": "id", "row": 1},
            said + "an empty value (file 1 of 1, column id, row 1)",
        ),
        CheckFailed(
            "schema-value", "DOUBLE",
            {"file": 12, "files": 40, "column": "lifetime_spend", "row": 123456789},
            said + "a value that is not DOUBLE"
            " (file 12 of 40, column lifetime_spend, row 123456789)",
        ),
        CheckFailed(
            "schema-header", ["id", "lifetime_spend"],
            {"file": 1, "files": 1, "column": None, "row": 0}, said + "header: 3 columns",
        ),
    ]  # fmt: skip
    frames = [seal_upload_refusal(keys, "input_1", refusal) for refusal in refusals]
    assert len({len(frame) for frame in frames}) == 1
    for frame, refusal in zip(frames, refusals, strict=True):
        opened = open_upload_refusal(keys, frame, input_id="input_1")
        assert (opened.check, opened.actual) == (refusal.check, refusal.actual)
    # An unpadded refusal (a Worker that would show its length) is refused.
    document = {"type": "cleanroom/upload-refusal/v1", **refusals[0].to_json()}
    sender = RecordSender(K_W2C, "Xl5eXl5eXl5eXl5eXl5eXg")
    bare = sender.seal("input_1/.refusal", canonical(document), final=True)
    with pytest.raises(MessageFormatError) as caught:
        open_upload_refusal(keys, bare, input_id="input_1")
    assert caught.value.check == "upload-refusal"
