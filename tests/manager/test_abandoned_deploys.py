"""A deploy the manager got no answer to keeps the room quota and the server's capacity.

When the manager's call to deploy a room timed out (a Controller fetching a big bundle
slowly), the room became ``failed`` and no longer counted, yet the Controller went on
and started its Worker: a member could hold more Workers than ``--rooms-per-project``
and a server more than its capacity (found by the manager's red team). The manager now
asks the Controller to delete such a room (which ends a deploy still under way:
``tests/controller/test_enclave_processes.py``), and the room keeps its slot until the
Controller confirms that, or until it is deleted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cleanroom.client.errors import ServerError
from cleanroom.client.manager import ManagerClient
from cleanroom.manager import admin as operations
from cleanroom.manager import audit

from .conftest import Manager, bind, make_bundle, make_spec, operator, serve, url_of

TIMEOUT = 2.0
"""The manager's controller_timeout here: how long it waits for a deploy's answer."""


@dataclass
class SlowController:
    """Takes a deploy of a room named ``slow…`` well past the manager's timeout (as a
    real one fetching a big bundle), any other at once; answers deletes when it is told
    to ``confirm``, else 503; with ``hold_deletes``, answers none until it closes."""

    url: str = ""
    confirm: bool = True
    hold_deletes: bool = False
    deletes: list[str] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)
    closing: bool = False


@contextmanager
def slow_controller(confirm: bool, hold_deletes: bool = False) -> Iterator[SlowController]:
    controller = SlowController(confirm=confirm, hold_deletes=hold_deletes)
    app = FastAPI()

    @app.put("/v1/rooms/{name}")
    async def put(name: str) -> JSONResponse:
        if name.startswith("slow"):
            until = time.monotonic() + 3 * TIMEOUT
            while time.monotonic() < until and not controller.closing:
                await asyncio.sleep(0.05)
        return JSONResponse({"name": name, "state": "collecting"}, status_code=201)

    @app.get("/v1/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "tee": "simulated", "rooms": 0})

    @app.delete("/v1/rooms/{name}")
    async def delete(name: str, request: Request) -> JSONResponse:
        controller.deletes.append(name)
        controller.scopes.append(token_scope(request.headers.get("authorization", "")))
        until = time.monotonic() + 60
        while controller.hold_deletes and not controller.closing and time.monotonic() < until:
            await asyncio.sleep(0.05)
        if not controller.confirm:
            return JSONResponse({"detail": "busy"}, status_code=503)
        return JSONResponse({"name": name, "state": "deleted"})

    sock = bind()
    controller.url = url_of(sock)
    with serve(app, sock):
        try:
            yield controller
        finally:
            controller.closing = True


def token_scope(authorization: str) -> str:
    """The scope a bearer token says it grants (unverified: what the manager asked for;
    the tokens' checks are the Controller's, tested on their own)."""
    payload = authorization.removeprefix("Bearer ").split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims.get("scope"))


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    until = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > until:
            return False
        time.sleep(0.05)
    return True


def refusal(client: ManagerClient, name: str, function: str) -> ServerError:
    with pytest.raises(ServerError) as caught:
        client.deploy(make_spec(function, name=name))
    return caught.value


def test_a_deploy_that_got_no_answer_is_deleted_on_its_controller(
    start_manager: Callable[..., Manager], tmp_path: Path
) -> None:
    manager = start_manager(controller_timeout=TIMEOUT)
    with slow_controller(confirm=True) as controller:
        with manager.sessions() as session:
            operations.add_server(session, controller.url, "slow", capacity=1)
        acme, _ = manager.login("acme")
        function = acme.upload_function(make_bundle(tmp_path / "f")).function_id
        refused = refusal(acme, "slow-room", function)
        assert refused.status == 502, refused
        assert controller.deletes == ["slow-room"], (
            f"expected the manager to delete on its Controller the room whose deploy it gave "
            f"up on, got deletes {controller.deletes}"
        )
        room = acme.room("slow-room")
        assert room.state == "failed" and room.reason is not None
        assert "keeps its slot" not in room.reason
        # The Controller confirmed: the slot is free again.
        assert acme.deploy(make_spec(function, name="next")).state == "deployed"


def test_a_deploy_that_got_no_answer_is_answered_before_twice_the_controller_timeout(
    start_manager: Callable[..., Manager], tmp_path: Path
) -> None:
    """The delete of a deploy that got no answer waits abandoned_delete_timeout, not
    controller_timeout again: the member's answer waited for both, 2 x 60 s by default,
    the client's own deadline for an answer (120 s), so a Controller answering neither
    made the client give up on the manager's answer (found by h15). The lower bound
    without the fix is the manager's own two timeouts, which cannot fire early."""
    timeout = 2 * TIMEOUT  # the deploy is held 3 x TIMEOUT: past it
    manager = start_manager(controller_timeout=timeout, abandoned_delete_timeout=0.2)
    with slow_controller(confirm=True, hold_deletes=True) as controller:
        with manager.sessions() as session:
            operations.add_server(session, controller.url, "slow", capacity=1)
        acme, _ = manager.login("acme")
        function = acme.upload_function(make_bundle(tmp_path / "f")).function_id
        started = time.monotonic()
        refused = refusal(acme, "slow-room", function)
        waited = time.monotonic() - started
        assert refused.status == 502, refused
        assert controller.deletes == ["slow-room"]
        assert "keeps its slot until it is deleted" in refused.detail
        assert waited < 2 * timeout, (
            f"the deploy's answer took {waited:.1f} s: the deploy's timeout ({timeout} s) "
            "and the held delete's, expected the abandoned delete's 0.2 s"
        )


def test_a_deploy_that_got_no_answer_keeps_its_slot_until_its_controller_confirms(
    start_manager: Callable[..., Manager], tmp_path: Path
) -> None:
    manager = start_manager(controller_timeout=TIMEOUT, rooms_per_project=1)
    with slow_controller(confirm=False) as slow, slow_controller(confirm=True) as other:
        with manager.sessions() as session:
            operations.add_server(session, slow.url, "slow", capacity=1)
        acme, _ = manager.login("acme")
        globex, _ = manager.login("globex")
        function = acme.upload_function(make_bundle(tmp_path / "f")).function_id
        globex_function = globex.upload_function(make_bundle(tmp_path / "g")).function_id
        refused = refusal(acme, "slow-room", function)
        assert refused.status == 502
        assert acme.room("slow-room").state == "failed"
        # The server's capacity: another project finds it full.
        full = refusal(globex, "theirs", globex_function)
        assert full.status == 503, f"capacity: expected 503 (full), got {full.status}: {full}"
        assert "is full (1 of 1 live rooms)" in full.detail
        # The project's quota: with a free server beside it, still one room.
        with manager.sessions() as session:
            operations.add_server(session, other.url, "other", capacity=2)
        quota = refusal(acme, "second", function)
        assert quota.status == 409 and quota.problem.get("check") == "room-quota", quota
        assert slow.deletes == ["slow-room"]
        assert "nor did it confirm the room's delete" in refused.detail
        assert "keeps its slot until it is deleted" in refused.detail
        # A delete the Controller does not confirm changes nothing.
        with pytest.raises(ServerError) as unconfirmed:
            acme.delete("slow-room")
        assert unconfirmed.value.status == 502
        assert acme.room("slow-room").state == "failed"
        slow.confirm = True
        assert acme.delete("slow-room").state == "deleted"
        assert acme.deploy(make_spec(function, name="second")).state == "deployed"


def test_the_health_check_deletes_a_failed_room_that_kept_its_slot_until_its_controller_confirms(
    start_manager: Callable[..., Manager], tmp_path: Path
) -> None:
    """Before, nothing asked again: the slot was held (quota, capacity, work-id-live)
    until a member deleted the room, though its Controller would have confirmed the
    delete a moment later."""
    manager = start_manager(
        controller_timeout=TIMEOUT, rooms_per_project=1, lifespan=True, health_interval=0.2
    )
    with slow_controller(confirm=False) as slow:
        with manager.sessions() as session:
            operations.add_server(session, slow.url, "slow", capacity=1)
        acme, _ = manager.login("acme")
        function = acme.upload_function(make_bundle(tmp_path / "f")).function_id
        assert refusal(acme, "slow-room", function).status == 502
        # The health rounds ask again, with a delete token for that room, and while the
        # Controller does not confirm, the room keeps its slot.
        assert wait_for(lambda: len(slow.deletes) >= 3, 30), (
            f"expected the health checks to ask the Controller again to delete the room "
            f"that keeps its slot, got deletes {slow.deletes}"
        )
        assert set(slow.deletes) == {"slow-room"} and set(slow.scopes) == {"delete"}, slow
        assert "is full (1 of 1 live rooms)" in refusal(acme, "second", function).detail
        assert "keeps its slot" in (acme.room("slow-room").reason or "")
        slow.confirm = True
        released = wait_for(lambda: "its slot is free" in (acme.room("slow-room").reason or ""), 30)
        room = acme.room("slow-room")
        assert released, (
            f"expected the room's slot freed once its Controller confirmed the delete, got "
            f"{room.state}: {room.reason} after {len(slow.deletes)} deletes"
        )
        assert room.state == "failed"
        asked = len(slow.deletes)
        assert acme.deploy(make_spec(function, name="second")).state == "deployed"
        time.sleep(1)  # five more rounds: a released room is not asked about again
        assert slow.deletes.count("slow-room") in (asked, asked + 1), slow.deletes
        assert "second" not in slow.deletes
        with manager.sessions() as session:
            released_entries = [
                (entry.actor, entry.target)
                for entry in audit.entries(session)
                if entry.action == "room.released"
            ]
        assert released_entries == [("cleanroom-manager", "slow-room")]


def test_the_server_list_counts_the_failed_rooms_that_keep_their_slot_and_names_them(
    start_manager: Callable[..., Manager], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cleanroom admin server list` counted only deploying and deployed rooms: a server
    full of failed rooms that may still run showed 0 of 1 and refused every deploy;
    `server remove` lost them without --force."""
    manager = start_manager(controller_timeout=TIMEOUT)
    with slow_controller(confirm=False) as slow:
        with manager.sessions() as session:
            operations.add_server(session, slow.url, "slow", capacity=1)
        acme, _ = manager.login("acme")
        function = acme.upload_function(make_bundle(tmp_path / "f")).function_id
        assert refusal(acme, "slow-room", function).status == 502
        capsys.readouterr()
        assert operator(manager, "server", "list") == 0
        header, row = capsys.readouterr().out.splitlines()
        columns = dict(zip(header.split(), row.split(), strict=False))
        assert (columns["CAPACITY"], columns["LIVE_ROOMS"]) == ("1", "1"), (
            f"server list: expected the failed room that keeps its slot counted (1 of 1), "
            f"got {columns.get('LIVE_ROOMS')} of {columns['CAPACITY']}"
        )
        assert columns["MAY_STILL_RUN"] == "acme/slow-room", columns
        assert operator(manager, "--output", "json", "server", "list") == 0
        [listed] = json.loads(capsys.readouterr().out)
        assert (listed["live_rooms"], listed["may_still_run"]) == ("1", "acme/slow-room")
        assert operator(manager, "server", "remove", "slow") == 2
        refused = capsys.readouterr().err
        assert "slow-room: failed, may still run" in refused and "give --force" in refused
        assert operator(manager, "server", "remove", "slow", "--force") == 0
        assert capsys.readouterr().err == "clean rooms marked lost: slow-room\n"
        assert acme.room("slow-room").state == "lost"
