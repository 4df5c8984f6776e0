"""A hostile Controller that keeps a runner's run session and starts the run itself.

A v2 session is keyed by the handshake alone: the Worker cannot tell whether whoever
uses the session holds its keys. An upload and a download need them (records under
``k_c2w`` / ``k_w2c``), and so does a SQL query; a function room's run request was a
bare ``POST …/sessions/{id}/run``. So the Controller could answer a runner's
``cleanroom run`` with a refusal of its own, keep the session the Worker had just
opened, and start the run whenever it liked (once the other inputs were in), or
replay the runner's init into another Worker of the same Work-ID (the v2 init names
no Worker) and run there. The run request is now one record under the session's
``k_c2w`` (``run/request``), which only the client can seal (``run-request``).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from cleanroom.protocol.encoding import b64u
from tests.adversarial.proxy import Message, TamperingProxy
from tests.adversarial.test_hostile_controller import SESSIONS, refused, room  # noqa: F401
from tests.e2e.conftest import User
from tests.e2e.helpers import write


def worker_of(hostile_stack_dir: Path, work_id: str) -> httpx.Client:
    """The room's Worker on its Unix socket, as the Controller reaches it."""
    for socket in sorted(hostile_stack_dir.rglob("w-*.sock")):
        client = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), base_url="http://w")
        try:
            if client.get("/state").json().get("work_id") == work_id:
                return client
        except httpx.HTTPError:
            pass
        client.close()
    raise AssertionError(f"no Worker of {work_id} under {hostile_stack_dir}")


def test_the_controller_cannot_run_with_a_runners_session_she_never_used(
    alice: User,
    bob: User,
    tmp_path: Path,
    proxy: TamperingProxy,
    room: str,  # noqa: F811
    hostile_stack: tuple[object, TamperingProxy],
) -> None:
    alice.client.upload(room, "input_1", write(tmp_path / "a", "a@x\n"))
    kept: list[str] = []

    def keep_and_refuse(message: Message) -> None:
        """The Worker opened Alice's run session; Alice is told the Worker refused."""
        if not message.path.endswith(SESSIONS) or message.status != 200:
            return
        kept.append(json.loads(message.response)["handshake"]["resp"]["session_id"])
        message.status = 409
        refusal = {"type": "about:blank", "status": 409, "check": "inputs-missing"}
        refusal["detail"] = "not every input is in (missing: input_2)"
        message.response = json.dumps(refusal).encode()

    proxy.on_response = keep_and_refuse
    with pytest.raises(Exception, match="inputs-missing"):
        alice.client.run(room)  # Alice sees a refusal and sends no run request
    assert len(kept) == 1 and proxy.paths("/run") == []
    proxy.reset()
    bob.client.upload(room, "input_2", write(tmp_path / "b", "a@x\n"))

    stack = hostile_stack[0]
    work_id = alice.client.approved(room)[1].work_id
    worker = worker_of(stack.directory, work_id)  # type: ignore[attr-defined]
    try:
        forged = worker.post(f"/sessions/{kept[0]}/run", json={"request": b64u(bytes(120))})
        bare = worker.post(f"/sessions/{kept[0]}/run")
    finally:
        worker.close()
    answers = {"bare": (bare.status_code, bare.text), "forged": (forged.status_code, forged.text)}
    assert bare.status_code >= 400 and forged.status_code >= 400, (
        "check run-request: expected the Worker to refuse a run without a record sealed "
        f"under the session's key, got {answers}"
    )
    status = alice.client.status(room).worker
    assert status is not None and status.state == "collecting", (
        f"check run-request: expected no run (state collecting), got {status}"
    )
