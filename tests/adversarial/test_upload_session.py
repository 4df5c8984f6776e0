"""A hostile Controller that races a body of its own onto an uploader's session.

The Controller sees an upload session's id in the clear (it is in the Worker's signed
response, relayed) and can send the Worker a body for it before the uploader's: made-up
frames, or records of another session. The Worker took the session at the body's
start, before any record opened under its key, so such a body used the session up and
the uploader's own body was refused ``session-used``. It now takes the session with the
first frame that opens under the session's key (found by h13's red team).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from cleanroom.protocol.framing import encode_frames
from tests.adversarial.proxy import Message, TamperingProxy
from tests.adversarial.test_hostile_controller import room  # noqa: F401
from tests.adversarial.test_run_session import worker_of
from tests.e2e.conftest import User
from tests.e2e.helpers import write


def test_a_body_the_controller_sends_first_leaves_the_session_to_its_uploader(
    alice: User,
    tmp_path: Path,
    proxy: TamperingProxy,
    room: str,  # noqa: F811
    hostile_stack: tuple[object, TamperingProxy],
) -> None:
    stack = hostile_stack[0]
    work_id = alice.client.approved(room)[1].work_id
    worker = worker_of(stack.directory, work_id)  # type: ignore[attr-defined]
    raced: list[httpx.Response] = []

    def race(message: Message) -> None:
        """Before Alice's body goes on, the Controller sends its own to her session."""
        found = re.search(r"/sessions/([^/]+)/upload$", message.path)
        if found is None:
            return
        made_up = b"".join(encode_frames([bytes(120)]))
        raced.append(worker.post(f"/sessions/{found.group(1)}/upload", content=made_up))

    proxy.on_request = race
    try:
        uploaded = alice.client.upload(room, "input_1", write(tmp_path / "a", "a@x\n"))
    finally:
        worker.close()
    (answer,) = raced
    assert answer.status_code >= 400 and json.loads(answer.text)["check"] == "record-frame", (
        f"expected the made-up body refused (record-frame), got {answer.status_code} {answer.text}"
    )
    assert not uploaded.already
    status = alice.client.status(room).worker
    assert status is not None and status.inputs["input_1"]["sha256"] == uploaded.sha256
