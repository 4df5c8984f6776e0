"""A Worker the compute server starts again from the spec it kept (``worker-changed``).

The compute server holds the spec and the bundle of every room it hosts, and can start
another Worker of the same spec whenever it likes. That Worker passes every Phase 1
check, a genuine enclave of the approved Work-ID, yet holds its own inputs, runs,
receipts and privacy budget. Here the compute server deletes a room's Worker behind
the manager's back and deploys the same spec in its place (the test signs the two
operations with the manager's key, which only lets it drive the real Controller as a
hostile one would). Alice, who gave the first Worker her input, refuses the second
before anything of hers goes to it. Bob never met the first one: for him the second is
the first, which no client can tell (docs/threat-model.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from cleanroom.insecure.localstack import LocalStack
from cleanroom.manager.keys import KeyRing
from cleanroom.tokens import MANAGER_SUBJECT, SCOPE_DELETE, SCOPE_DEPLOY, TokenIssuer
from tests.adversarial.proxy import TamperingProxy
from tests.adversarial.test_hostile_controller import (  # noqa: F401
    json_change,
    on_path,
    refused,
    room,
)
from tests.e2e.conftest import User
from tests.e2e.helpers import write


def operate(stack: LocalStack, name: str, scope: str, body: Any = None) -> httpx.Response:
    """Deploy or delete room ``name`` of acme at the Controller, as the manager would."""
    issuer = TokenIssuer(stack.manager_url, KeyRing.open(stack.manager_dir))
    token, _ = issuer.issue(
        MANAGER_SUBJECT, audience=stack.advertise_url, scope=scope, project="acme", room=name
    )
    method = {SCOPE_DEPLOY: "PUT", SCOPE_DELETE: "DELETE"}[scope]
    return httpx.request(
        method,
        f"{stack.compute_url}/v1/rooms/{name}",
        headers={"Authorization": f"Bearer {token}"},
        json=body,
        timeout=120,
    )


def one_more_room(health: dict[str, Any]) -> None:
    health["rooms"] += 1


def test_a_second_worker_of_the_approved_work_id_gets_nothing_from_who_used_the_first(
    alice: User,
    bob: User,
    tmp_path: Path,
    proxy: TamperingProxy,
    room: str,  # noqa: F811
    hostile_stack: tuple[LocalStack, TamperingProxy],
) -> None:
    stack = hostile_stack[0]
    alice.client.upload(room, "input_1", write(tmp_path / "a", "a@x\n"))
    first = alice.client.attest(room).worker.worker_id

    spec = alice.client.manager.room(room).spec
    # Meanwhile the Controller counts the room in its health, so that the manager
    # does not find it lost (and keeps serving its bundle).
    proxy.on_response = on_path("/v1/health", json_change(one_more_room, response=True))
    deleted = operate(stack, room, SCOPE_DELETE)
    assert deleted.status_code == 200, deleted.text
    again = operate(stack, room, SCOPE_DEPLOY, {"spec": spec})
    assert again.status_code == 201, again.text
    proxy.on_response = None
    twin = again.json()["worker_id"]
    assert twin != first

    proxy.seen.clear()
    error = refused(lambda: alice.client.attest(room), "worker-changed")
    assert (error.expected, error.actual) == (first, twin)
    refused(
        lambda: alice.client.upload(room, "input_1", write(tmp_path / "b", "b@x\n")),
        "worker-changed",
    )
    assert proxy.paths("/upload") == []
    status = alice.client.status(room)
    assert status.worker is None
    assert status.unverified is not None and "worker-changed" in status.unverified

    # Bob never met the first Worker: the twin is the first he meets.
    bob.client.upload(room, "input_2", write(tmp_path / "c", "a@x\n"))
    assert bob.client.attest(room).worker.worker_id == twin
