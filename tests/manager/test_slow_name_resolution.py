"""A Controller's host name resolved within the manager's timeouts.

A compute server registered by a host name was resolved before httpx's timeouts and
the manager's deadline started, and nothing interrupted the lookup: a name server that
answers slowly added its 10-30 s to every health check, deploy and delete (found by the
manager's red team). Here the lookup of one name is made slow in the manager's process
(``socket.getaddrinfo`` for that host only: a fault injected, as a hostile name server
would), and the Controller behind it is a real server on loopback.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from cleanroom.client.errors import ServerError
from cleanroom.manager import servers

from .conftest import Manager, bind, make_bundle, make_spec, serve

SLOW_NAME = "slow-name.test"
LOOKUP_S = 12.0
"""How long the name server takes to answer for SLOW_NAME."""
TIMEOUT = 1.5
"""The manager's timeouts here (health, deploy and delete)."""


class SlowNameServer:
    """``socket.getaddrinfo`` that takes LOOKUP_S for SLOW_NAME (while ``slow``), then
    answers loopback; every other name as before."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.slow = True
        self.asked = 0
        real = socket.getaddrinfo

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host == SLOW_NAME:
                self.asked += 1
                if self.slow:
                    time.sleep(LOOKUP_S)
                return real("127.0.0.1", port, *args, **kwargs)
            return real(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def slow_name(monkeypatch: pytest.MonkeyPatch) -> SlowNameServer:
    return SlowNameServer(monkeypatch)


@pytest.fixture
def controller_by_name() -> Iterator[str]:
    """A Controller on loopback that answers everything at once, by its URL with
    SLOW_NAME as its host."""
    app = FastAPI()

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "tee": "simulated", "rooms": 0}

    @app.put("/v1/rooms/{name}")
    async def put(name: str) -> JSONResponse:
        return JSONResponse({"name": name, "state": "collecting"}, status_code=201)

    @app.delete("/v1/rooms/{name}")
    async def delete(name: str) -> JSONResponse:
        return JSONResponse({"name": name, "state": "deleted"})

    sock = bind()
    with serve(app, sock):
        yield f"http://{SLOW_NAME}:{sock.getsockname()[1]}"


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    try:
        outcome = call()
    except ServerError as error:
        outcome = error
    return outcome, time.monotonic() - started


def test_a_health_check_does_not_wait_for_a_slow_name_server(
    slow_name: SlowNameServer, controller_by_name: str
) -> None:
    with httpx.Client(timeout=TIMEOUT, transport=servers.controller_transport(TIMEOUT)) as client:
        seen, waited = timed(lambda: servers.observe(client, controller_by_name, "simulated"))
    assert slow_name.asked >= 1
    assert waited < LOOKUP_S / 2, (
        f"health check: expected no answer within the health timeout ({TIMEOUT} s), "
        f"it waited {waited:.1f} s for the name server"
    )
    assert not seen.answered
    assert seen.error is not None and "dns-resolution" in seen.error, seen
    assert f"within {TIMEOUT} s" in seen.error
    slow_name.slow = False  # the same check, the name answered at once
    with httpx.Client(timeout=TIMEOUT, transport=servers.controller_transport(TIMEOUT)) as client:
        assert servers.observe(client, controller_by_name, "simulated").answered


def test_a_deploy_and_a_delete_do_not_wait_for_a_slow_name_server(
    start_manager: Callable[..., Manager],
    slow_name: SlowNameServer,
    controller_by_name: str,
    tmp_path: Path,
) -> None:
    manager = start_manager(controller_timeout=TIMEOUT)
    manager.add_server(controller_by_name)
    acme, _ = manager.login("acme")
    function = acme.upload_function(make_bundle(tmp_path / "f")).function_id
    refused, waited = timed(lambda: acme.deploy(make_spec(function, name="first")))
    assert waited < LOOKUP_S / 2, (
        f"deploy: expected a refusal within the deploy timeout ({TIMEOUT} s), "
        f"it waited {waited:.1f} s for the name server"
    )
    assert isinstance(refused, ServerError) and refused.status == 502, refused
    assert "dns-resolution" in refused.detail and SLOW_NAME in refused.detail
    # Never sent: the room frees its slot (and is not asked to be deleted).
    assert acme.room("first").state == "failed"

    slow_name.slow = False
    assert acme.deploy(make_spec(function, name="second")).state == "deployed"
    slow_name.slow = True
    refused, waited = timed(lambda: acme.delete("second"))
    assert waited < LOOKUP_S / 2, (
        f"delete: expected a refusal within the delete timeout ({TIMEOUT} s), "
        f"it waited {waited:.1f} s for the name server"
    )
    assert isinstance(refused, ServerError) and refused.status == 502, refused
    assert "dns-resolution" in refused.detail
    assert acme.room("second").state == "deployed"
