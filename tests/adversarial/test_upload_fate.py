"""A hostile Controller that answers an uploader with a refusal of its own: after
relaying her body, after burning her session with her own first frame, or while it
holds her body to send later (docs/protocol.md, "Session fate").

The Worker takes an upload session with the first frame that opens under its key; the
Controller, which relays that frame, can send it alone first (the session taken, the
upload ended short, nothing stored) and her whole body after it (``session-used``), or
relay it all and answer ``502``. Either way she was told a refusal in the clear and
could not know whether her data got in. Her client now asks the Worker, in a new
session, what became of the upload session: it stored her input, or it is closed for
good (an upload still under way in it is then refused at its end).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from cleanroom.client.rooms import SessionClosedError
from cleanroom.insecure.localstack import LocalStack
from cleanroom.protocol.framing import decode_frames, encode_frames
from tests.adversarial.proxy import Message, TamperingProxy
from tests.adversarial.test_hostile_controller import refused, room
from tests.adversarial.test_run_session import worker_of
from tests.adversarial.test_session_fate import BAD_GATEWAY
from tests.adversarial.test_stalled_upload import (
    ended_by_the_worker,
    hang_the_next_upload,
    worker_socket,
)
from tests.e2e.conftest import User
from tests.e2e.helpers import write
from tests.e2e.test_cli_flow import Cli

__all__ = ["room"]  # the fixture, shared with the other hostile-Controller tests

UPLOAD = re.compile(r"/sessions/([^/]+)/upload$")


def to_worker(
    stack: LocalStack, alice: User, room: str, path: str, body: bytes
) -> dict[str, object]:
    """``body`` sent to the room's Worker straight over its socket, as the Controller can."""
    worker = worker_of(stack.directory, alice.client.approved(room)[1].work_id)
    try:
        answer = worker.post(path, content=body)
    finally:
        worker.close()
    document: dict[str, object] = json.loads(answer.text)
    document["status"] = answer.status_code
    return document


def fates(proxy: TamperingProxy) -> list[Message]:
    return [m for m in proxy.seen if m.path.endswith("/fate")]


def test_an_upload_burnt_with_its_own_first_frame_is_closed_and_uploading_again_is_safe(
    alice: User,
    tmp_path: Path,
    proxy: TamperingProxy,
    room: str,
    hostile_stack: tuple[LocalStack, TamperingProxy],
) -> None:
    """The Controller sends Alice's first frame alone (her session taken, the upload cut
    short), then her whole body (``session-used``, relayed as it came). Before, that was
    all she was told, the compute server's word; now the Worker says, sealed, that the
    session stored nothing and never will (the refusal named as relayed, confirmed), and
    her next upload is new, not 'already'."""
    burnt: list[dict[str, object]] = []

    def burn(message: Message) -> None:
        found = UPLOAD.search(message.path)
        if found is None or burnt:
            return
        first = next(decode_frames([message.body]))
        path = f"/sessions/{found.group(1)}/upload"
        burnt.append(
            to_worker(hostile_stack[0], alice, room, path, b"".join(encode_frames([first])))
        )

    proxy.on_request = burn
    source = write(tmp_path / "a", "a@x\n")
    error = refused(lambda: alice.client.upload(room, "input_1", source), "session-used")
    assert isinstance(error, SessionClosedError), f"not confirmed by the Worker: {error}"
    assert "stored nothing and never will" in str(error), error
    assert error.hint is not None and "uploading again is safe" in error.hint, error.hint
    (short,) = burnt
    assert short["check"] == "upload-truncated", short
    assert [m.status for m in proxy.seen if UPLOAD.search(m.path)] == [409]
    assert len(fates(proxy)) == 1
    status = alice.client.status(room).worker
    assert status is not None and "input_1" not in status.inputs
    proxy.reset()
    again = alice.client.upload(room, "input_1", source)
    assert not again.already


def test_an_upload_relayed_then_refused_by_the_controller_is_found_stored(
    alice: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    """The Controller relays the body and answers ``502`` in place of the Worker's
    acknowledgement: the Worker says, sealed, that the session stored the input, and the
    upload is reported done (before: a 502, the input in all the same)."""

    def drop_ack(message: Message) -> None:
        if UPLOAD.search(message.path) and message.status == 200:
            message.status, message.response = 502, BAD_GATEWAY

    proxy.on_response = drop_ack
    uploaded = alice.client.upload(room, "input_1", write(tmp_path / "a", "a@x\n"))
    assert len(fates(proxy)) == 1 and fates(proxy)[0].status == 200
    status = alice.client.status(room).worker
    assert status is not None and status.inputs["input_1"]["sha256"] == uploaded.sha256
    # `cleanroom fate` says what the acknowledgement would have (h28's sealed ``ack``).
    match = next(UPLOAD.search(m.path) for m in proxy.seen if UPLOAD.search(m.path))
    assert match is not None
    said = Cli(alice.home)("--profile", "alice", "fate", room, "--", match.group(1))
    assert f"stored input_1 (new: {uploaded.bytes} bytes, manifest sha256 " in said.stdout
    answer = Cli(alice.home)(
        "--output", "json", "--profile", "alice", "fate", room, "--", match.group(1)
    )
    acknowledgement = json.loads(answer.stdout)["acknowledgement"]
    assert acknowledgement["stored"] == "new" and acknowledgement["sha256"] == uploaded.sha256


def test_an_upload_held_by_the_controller_is_closed_before_it_is_sent(
    alice: User,
    tmp_path: Path,
    proxy: TamperingProxy,
    room: str,
    hostile_stack: tuple[LocalStack, TamperingProxy],
) -> None:
    """The Controller keeps the body and answers ``502``: Alice's question closes the
    session, so the body it sends afterwards (within the session's lifetime) stores
    nothing (``session-used``): she was told 'not in', and it never gets in."""
    held: list[Message] = []

    def keep(message: Message) -> None:
        if UPLOAD.search(message.path):
            message.relay = False
            message.status, message.response = 502, BAD_GATEWAY
            held.append(message)

    proxy.on_request = keep
    refused(
        lambda: alice.client.upload(room, "input_1", write(tmp_path / "a", "a@x\n")),
        "fate-closed",
    )
    (kept,) = held
    found = UPLOAD.search(kept.path)
    assert found is not None
    late = to_worker(hostile_stack[0], alice, room, f"/sessions/{found.group(1)}/upload", kept.body)
    assert late["status"] == 409 and late["check"] == "session-used", late
    status = alice.client.status(room).worker
    assert status is not None and "input_1" not in status.inputs


def test_an_acknowledgement_answered_with_a_refusals_status_is_found_stored(
    alice: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    """The Controller answers ``409`` over the Worker's genuine acknowledgement (an HTTP
    status other than the sealed answer's): the client, which reads no body of a
    refusal as an acknowledgement, asks, and the Worker says the input is stored
    (before: a refusal, the input in all the same)."""

    def refusal_status(message: Message) -> None:
        if UPLOAD.search(message.path) and message.status == 200:
            message.status = 409

    proxy.on_response = refusal_status
    uploaded = alice.client.upload(room, "input_1", write(tmp_path / "a", "a@x\n"))
    assert not uploaded.already and len(fates(proxy)) == 1
    status = alice.client.status(room).worker
    assert status is not None and status.inputs["input_1"]["sha256"] == uploaded.sha256


def test_a_refusal_answered_with_a_success_status_is_confirmed_refused(
    alice: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    """The reverse: the Worker refuses other content for an input it has
    (``input-complete``) and the Controller answers ``200`` over it, with Alice's own
    earlier acknowledgement: refused (``record-authentication``, another session's),
    and the Worker confirms, sealed, that this upload stored nothing; she is never told
    'uploaded'."""
    kept: list[bytes] = []
    proxy.on_response = lambda m: kept.append(m.response) if UPLOAD.search(m.path) else None
    first = alice.client.upload(room, "input_1", write(tmp_path / "a", "a@x\n"))

    def success_status(message: Message) -> None:
        if UPLOAD.search(message.path):
            assert message.status == 409, message.response
            message.status, message.response = 200, kept[0]

    proxy.on_response = success_status
    error = refused(
        lambda: alice.client.upload(room, "input_1", write(tmp_path / "b", "c@x\n")),
        "record-authentication",
    )
    assert isinstance(error, SessionClosedError), f"not confirmed by the Worker: {error}"
    status = alice.client.status(room).worker
    assert status is not None and status.inputs["input_1"]["sha256"] == first.sha256


def drop_acks(message: Message) -> None:
    """The Controller answers ``502`` in place of every acknowledgement it relayed."""
    if UPLOAD.search(message.path) and message.status == 200:
        message.status, message.response = 502, BAD_GATEWAY


def test_a_retry_whose_acknowledgement_is_dropped_is_reported_already_there(
    alice: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    """Alice uploads again exactly what the room has, and the Controller answers ``502``
    over the Worker's acknowledgement ``already``: the Worker's sealed answer says what
    that acknowledgement said, and the upload is reported as it would have been,
    already there. Before, the retry's fate was ``closed``: she was told "this upload
    stored nothing", her input in the room all the same."""
    source = write(tmp_path / "a", "a@x\n")
    first = alice.client.upload(room, "input_1", source)
    proxy.reset()
    proxy.on_response = drop_acks
    again = alice.client.upload(room, "input_1", source)
    assert again.already and again.sha256 == first.sha256, again
    assert [m.status for m in proxy.seen if UPLOAD.search(m.path)] == [502]
    assert len(fates(proxy)) == 1 and fates(proxy)[0].status == 200


def test_another_uploads_stored_answer_swapped_in_is_refused(
    alice: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    """The Controller keeps the Worker's ``stored`` answer about one of Alice's uploads
    and gives it as the answer about another of hers (whose body it never relayed): it
    was sealed to another fate session, so it does not open (record-authentication),
    and she is told the upload is unconfirmed, never "uploaded"."""
    kept: list[bytes] = []

    def keep_fate(message: Message) -> None:
        drop_acks(message)
        if message.path.endswith("/fate") and message.status == 200:
            kept.append(message.response)

    proxy.on_response = keep_fate
    alice.client.upload(room, "input_1", write(tmp_path / "a", "a@x\n"))
    (stored,) = kept

    def swap(message: Message) -> None:
        if UPLOAD.search(message.path):
            message.relay = False
            message.status, message.response = 502, BAD_GATEWAY
        elif message.path.endswith("/fate"):
            message.relay = False
            message.status, message.response = 200, stored

    proxy.reset()
    proxy.on_request = swap
    error = refused(
        lambda: alice.client.upload(room, "input_1", write(tmp_path / "b", "b@x\n")),
        "upload-unconfirmed",
    )
    assert "record-authentication" in str(error), error


def test_a_body_kept_open_is_ended_when_its_owner_asks_and_the_input_let_go(
    alice: User,
    tmp_path: Path,
    proxy: TamperingProxy,
    room: str,
    hostile_stack: tuple[LocalStack, TamperingProxy],
) -> None:
    """The Controller sends the first frame of Alice's body to the Worker and then
    nothing (or a trickle), keeping the connection open, and answers her ``502``. Her
    question closes the session, and the Worker ends that upload at once
    (``session-closed``), not only at its end or its bound: the input is let go, and her
    upload again is stored. Before, the input stayed ``upload-in-progress`` until the
    Controller ended the body, her own upload again refused (this stack's Workers have
    the full 120 s grace, so the bound plays no part here)."""
    path = worker_socket(hostile_stack[0].directory, alice.client.approved(room)[1].work_id)
    hanging = hang_the_next_upload(proxy, path)
    source = write(tmp_path / "a", "a@x\n")
    try:
        refused(lambda: alice.client.upload(room, "input_1", source), "fate-closed")
        held = "the Worker still held the body its owner was told is closed"
        assert ended_by_the_worker(hanging, held) == "session-closed", hanging[0].answer
        proxy.reset()
        again = alice.client.upload(room, "input_1", source)
        assert not again.already
    finally:
        for body in hanging:
            body.close()
