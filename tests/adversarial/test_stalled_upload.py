"""A Controller that keeps an upload's body open for ever, on a real stack (the Worker a
process of its own, the Controller a tampering proxy that also writes to the Worker's
socket itself).

It relayed the first frame of Alice's body (taking her session and marking the input
``upload-in-progress``) and then nothing, and kept the connection open: the input stayed
in progress for everyone, for as long as the Controller liked, Alice's own upload again
refused ``upload-in-progress``. The Worker now ends a body that is late by its own bound
(``upload-body-time``): a session's lifetime after the handshake and more for each byte
received. This stack's Workers are given a short grace (``CLEANROOM_UPLOAD_GRACE_S``, which
can only shorten it), so the test waits for no real session's lifetime.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cleanroom.enclave.worker_service import UPLOAD_GRACE_VARIABLE
from cleanroom.insecure.localstack import LocalStack
from cleanroom.protocol.framing import decode_frames, encode_frames
from tests.adversarial.conftest import hostile_stack_in
from tests.adversarial.proxy import Message, TamperingProxy
from tests.adversarial.test_hostile_controller import refused, room
from tests.adversarial.test_session_fate import BAD_GATEWAY
from tests.e2e.conftest import User
from tests.e2e.helpers import write

__all__ = ["room"]  # the fixture, with this module's stack

UPLOAD = re.compile(r"/sessions/([^/]+)/upload$")
GRACE_S = "2"
LIVENESS_S = 60.0  # a fail-safe only: without the bound, the body is kept for ever


@pytest.fixture(scope="module")
def hostile_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalStack, TamperingProxy]]:
    """The adversarial stack, its Workers started with a short upload grace."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(UPLOAD_GRACE_VARIABLE, GRACE_S)
        with hostile_stack_in(tmp_path_factory.mktemp("stalled")) as stack:
            yield stack


def worker_socket(directory: Path, work_id: str) -> str:
    """The Unix socket of the room's Worker, as the Controller reaches it."""
    for path in sorted(directory.rglob("w-*.sock")):
        client = httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), base_url="http://w")
        try:
            if client.get("/state").json().get("work_id") == work_id:
                return str(path)
        except httpx.HTTPError:
            pass
        finally:
            client.close()
    raise AssertionError(f"no Worker of {work_id} under {directory}")


class HangingBody:
    """An upload request to the Worker whose body is one frame and then nothing, its
    connection kept open: what a Controller that stops relaying can do."""

    def __init__(self, path: str, session_path: str, first: bytes) -> None:
        self.connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.connection.settimeout(LIVENESS_S)
        self.connection.connect(path)
        chunk = b"".join(encode_frames([first]))
        head = (
            f"POST {session_path} HTTP/1.1\r\nhost: w\r\n"
            "content-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        ).encode()
        self.connection.sendall(head + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        self.answer = b""
        self.held = False  # no answer within LIVENESS_S
        self.done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while not self.answer.endswith(b"}"):
                data = self.connection.recv(65536)
                if not data:
                    break
                self.answer += data
        except TimeoutError:
            self.held = True
        except OSError:
            pass
        self.done.set()

    def close(self) -> None:
        self.connection.close()


def hang_the_next_upload(
    proxy: TamperingProxy, path: str, *, withhold_fate: bool = False
) -> list[HangingBody]:
    """Set ``proxy`` to send the Worker (at ``path``) the first frame of the next upload's
    body alone, on a connection of its own kept open (:class:`HangingBody`), and to answer
    the client ``502``; with ``withhold_fate``, her fate questions too. The bodies hung
    (one), to be waited for with :func:`ended_by_the_worker` and closed."""
    hanging: list[HangingBody] = []

    def hang(message: Message) -> None:
        if withhold_fate and message.path.endswith("/fate"):
            message.relay = False
            message.status, message.response = 502, BAD_GATEWAY
        found = UPLOAD.search(message.path)
        if found is None or hanging:
            return
        first = next(decode_frames([message.body]))
        hanging.append(HangingBody(path, f"/sessions/{found.group(1)}/upload", first))
        message.relay = False
        message.status, message.response = 502, BAD_GATEWAY

    proxy.on_request = hang
    return hanging


def ended_by_the_worker(hanging: list[HangingBody], still_held: str) -> str:
    """The check with which the Worker ended the one hung body; ``still_held`` the
    failure when it answered nothing within :data:`LIVENESS_S`."""
    (body,) = hanging
    body.done.wait()
    assert not body.held, still_held
    _head, _, answer = body.answer.partition(b"\r\n\r\n")
    return str(json.loads(answer)["check"])


def test_a_body_the_controller_keeps_open_is_ended_by_the_worker(
    alice: User,
    tmp_path: Path,
    proxy: TamperingProxy,
    room: str,
    hostile_stack: tuple[LocalStack, TamperingProxy],
) -> None:
    """The Controller sends the first frame of Alice's body to the Worker and then
    nothing, keeping the connection open, and answers her ``502``; it withholds her
    question too (which would end the upload: tests/adversarial/test_upload_fate.py).
    The Worker, at its bound, ends the body (``upload-body-time``), lets the input go,
    and her upload again is stored, new. Before, the input stayed
    ``upload-in-progress`` for as long as the Controller kept the connection."""
    stack = hostile_stack[0]
    path = worker_socket(stack.directory, alice.client.approved(room)[1].work_id)
    hanging = hang_the_next_upload(proxy, path, withhold_fate=True)
    source = write(tmp_path / "a", "a@x\n")
    try:
        refused(lambda: alice.client.upload(room, "input_1", source), "upload-unconfirmed")
        held = f"the Worker still held the body after {LIVENESS_S} s"
        assert ended_by_the_worker(hanging, held) == "upload-body-time", hanging[0].answer
        proxy.reset()
        again = alice.client.upload(room, "input_1", source)
        assert not again.already
        status = alice.client.status(room).worker
        assert status is not None and status.inputs["input_1"]["sha256"] == again.sha256
    finally:
        for body in hanging:
            body.close()
