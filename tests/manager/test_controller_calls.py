"""A Controller that is slow to answer cannot take the manager's threads from everyone.

Deploys and deletes wait for the room's Controller (up to ``controller_timeout``). They
ran on the worker threads every sync route shares (anyio's 40): a member whose room was
on a Controller that answered its deletes slowly (a hostile compute server, or one whose
address drops packets) sent 48 deletes of that room at once, every thread waited, and
every other project's requests waited behind them for the whole timeout, again and
again (found by the manager's red team). Deploys and deletes now run in threads of their
own, at most ``controller_calls`` at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from cleanroom.client.bounded import ANSWER_DEADLINE_S
from cleanroom.client.errors import ServerError
from cleanroom.manager import Settings
from cleanroom.manager.settings import CLIENT_ANSWER_DEADLINE, SettingsError
from cleanroom.protocol.bundle import function_id

from .conftest import Manager, bind, make_bundle, make_spec, serve, url_of
from .test_roles import join, raw, refused

TIMEOUT = 6.0
"""The manager's controller_timeout in these tests: how long a delete waits. Without
the fix another project's request waits most of it; with it, at once (a margin wide
enough for a machine another suite keeps busy)."""


@contextmanager
def slow_deleting_controller() -> Iterator[str]:
    """A Controller that takes deploys at once and answers a delete only well past the
    manager's timeout."""
    app = FastAPI()

    @app.put("/v1/rooms/{name}")
    async def put(name: str) -> JSONResponse:
        return JSONResponse({"name": name, "state": "collecting"}, status_code=201)

    @app.delete("/v1/rooms/{name}")
    async def delete(name: str) -> JSONResponse:
        await asyncio.sleep(3 * TIMEOUT)
        return JSONResponse({"name": name, "state": "deleted"})

    sock = bind()
    with serve(app, sock):
        yield url_of(sock)


def test_deletes_waiting_on_a_slow_controller_leave_the_threads_to_everyone(
    start_manager: Callable[..., Manager], tmp_path: Path
) -> None:
    # More deploy and delete slots than the 40 shared threads, so that all 48 deletes
    # wait at once: the test is that they wait apart from every other request.
    manager = start_manager(controller_timeout=TIMEOUT, controller_calls=64)
    with slow_deleting_controller() as url:
        manager.add_server(url)
        acme, _ = manager.login("acme")
        function = acme.upload_function(make_bundle(tmp_path / "f")).function_id
        assert acme.deploy(make_spec(function, name="stuck")).state == "deployed"
        bystander, _ = manager.login("globex")

        def delete(_: int) -> object:
            try:
                return acme.delete("stuck")
            except ServerError as error:
                return error

        with ThreadPoolExecutor(48) as pool:
            deletes = [pool.submit(delete, n) for n in range(48)]
            time.sleep(0.5)  # every delete is at the manager now
            started = time.monotonic()
            whoami = bystander.whoami()
            rooms = bystander.rooms()
            waited = time.monotonic() - started
            outcomes = [future.result() for future in deletes]
    assert whoami["project"] == "globex" and rooms == []
    assert waited < TIMEOUT / 2, (
        f"another project's requests: expected answers at once, got them after {waited:.1f} s"
        f" (the manager's threads all waited on the Controller, {TIMEOUT} s)"
    )
    statuses = {error.status for error in outcomes if isinstance(error, ServerError)}
    assert statuses == {502}, f"expected every delete to wait its turn and time out: {outcomes}"
    assert acme.room("stuck").state == "deployed", "a delete the Controller did not confirm"


@contextmanager
def held_controller() -> Iterator[tuple[str, threading.Event, threading.Event]]:
    """A Controller that takes deploys and deletes at once, except the delete of the room
    ``held``, which it holds (``entered`` set) until ``release`` is set."""
    entered, release = threading.Event(), threading.Event()
    app = FastAPI()

    @app.put("/v1/rooms/{name}")
    async def put(name: str) -> JSONResponse:
        return JSONResponse({"name": name, "state": "collecting"}, status_code=201)

    @app.delete("/v1/rooms/{name}")
    async def delete(name: str) -> JSONResponse:
        if name == "held":
            entered.set()
            while not release.is_set():
                await asyncio.sleep(0.02)
        return JSONResponse({"name": name, "state": "deleted"})

    sock = bind()
    with serve(app, sock):
        yield url_of(sock), entered, release


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds (the test fails after a generous deadline, which
    is never a measure of speed)."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"waited 60 s for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("operation", ["delete", "deploy"])
def test_a_call_that_waited_for_its_turn_is_refused_if_its_member_was_removed_meanwhile(
    start_manager: Callable[..., Manager], tmp_path: Path, operation: str
) -> None:
    """A deploy or delete is authenticated when it arrives, then waits for a turn among
    ``controller_calls``, for as long as the Controllers ahead of it take. A member
    removed meanwhile, its tokens "refused at once", still deleted its project's room
    (or deployed one) when its turn came (found by h17's red team). The caller is read
    again in the call's own transaction."""
    manager = start_manager(controller_calls=1)
    with held_controller() as (url, entered, release):
        manager.add_server(url)
        alice = join(manager, "acme", "alice", "owner")
        mallory = join(manager, "acme", "mallory", "member")
        function = alice.client.upload_function(make_bundle(tmp_path / "f")).function_id
        alice.client.deploy(make_spec(function, name="held"))
        alice.client.deploy(make_spec(function, name="precious"))
        limiter = manager.services.controller_calls
        with ThreadPoolExecutor(2) as pool:
            holding = pool.submit(alice.client.delete, "held")
            wait_for(entered.is_set, "the held delete to reach the Controller")
            if operation == "delete":
                call = pool.submit(raw, manager, mallory, "DELETE", "/v1/rooms/precious")
            else:
                spec = make_spec(function, name="mallorys").document()
                call = pool.submit(raw, manager, mallory, "POST", "/v1/rooms", json={"spec": spec})
            wait_for(lambda: limiter.statistics().tasks_waiting == 1, "mallory's call to wait")
            alice.client.remove_member("acme", "mallory")
            release.set()
            assert holding.result().state == "deleted"
            answer = call.result()
    assert answer.status_code == 401, f"expected the call refused, got {answer.text}"
    assert answer.json()["check"] == "token-revoked"
    assert answer.headers["www-authenticate"].startswith("DPoP error=")
    assert alice.client.room("precious").state == "deployed"
    assert [room.name for room in alice.client.rooms()] == ["precious"]


def test_a_call_that_finds_no_turn_within_its_wait_is_refused_and_nothing_is_done(
    start_manager: Callable[..., Manager], tmp_path: Path
) -> None:
    """A turn among ``controller_calls`` was waited for without a bound: a deploy queued
    behind slow Controllers found its turn after the client had given up on its answer
    (120 s) and was carried out unseen. It is now ``503 controller-calls`` after
    ``controller_call_wait``, with nothing done (left open by h15)."""
    manager = start_manager(controller_calls=1, controller_call_wait=0.5)
    with held_controller() as (url, entered, release):
        manager.add_server(url)
        alice = join(manager, "acme", "alice", "owner")
        function = alice.client.upload_function(make_bundle(tmp_path / "f")).function_id
        alice.client.deploy(make_spec(function, name="held"))
        with ThreadPoolExecutor(1) as pool:
            holding = pool.submit(alice.client.delete, "held")
            wait_for(entered.is_set, "the held delete to reach the Controller")
            spec = make_spec(function, name="queued").document()
            answer = raw(manager, alice, "POST", "/v1/rooms", json={"spec": spec})
            release.set()
            assert holding.result().state == "deleted"
        assert answer.status_code == 503, f"expected no turn, got {answer.status_code}"
        assert answer.json()["check"] == "controller-calls", answer.text
        assert answer.headers["retry-after"] == "1"
        assert refused(alice.client.room, "queued").status == 404, "nothing was to be done"
        assert alice.client.deploy(make_spec(function, name="queued")).state == "deployed"


def test_an_upload_whose_body_ended_after_its_client_was_disabled_is_refused(
    manager: Manager, tmp_path: Path
) -> None:
    """An upload's body may take as long as its sender likes (docs/threat-model.md, "Slow
    clients"): the caller is read again once it has ended, and the bundle is not kept."""
    alice = join(manager, "acme", "alice", "owner")
    mallory = join(manager, "acme", "mallory", "member")
    bundle = make_bundle(tmp_path / "f")
    go = threading.Event()

    def body() -> Iterator[bytes]:
        yield bundle[:512]
        go.wait(60)
        yield bundle[512:]

    incoming = manager.settings.functions_dir / ".incoming"
    with ThreadPoolExecutor(1) as pool:
        upload = pool.submit(raw, manager, mallory, "POST", "/v1/functions", content=body())
        wait_for(lambda: any(incoming.glob("upload-*")), "the upload to begin")
        alice.client.disable_client("acme", mallory.client_id)
        go.set()
        answer = upload.result()
    assert answer.status_code == 401, f"expected the call refused, got {answer.text}"
    assert answer.json()["check"] == "token-revoked"
    assert answer.headers["www-authenticate"].startswith("DPoP error=")
    assert list(incoming.iterdir()) == []
    function = function_id(bundle)
    assert refused(alice.client.download_function, function).status == 404


@pytest.mark.parametrize(
    "waits",
    [
        {"controller_timeout": float("nan")},
        {"abandoned_delete_timeout": 0},
        {"controller_call_wait": -1.0},
        {"controller_call_wait": float("inf")},
        {"controller_timeout": 90.0},  # 90 + 15 + 30: the client gives up first
    ],
)
def test_the_managers_waits_on_controllers_are_bounded(
    tmp_path: Path, waits: dict[str, float]
) -> None:
    """However the settings are made (the command line's options or Settings), a deploy's
    answer comes within the client's deadline, which the manager keeps a copy of."""
    assert CLIENT_ANSWER_DEADLINE == ANSWER_DEADLINE_S
    with pytest.raises(SettingsError, match=next(iter(waits)).split("_")[0]):
        Settings(data_dir=tmp_path, public_url="http://manager.test", **waits)
