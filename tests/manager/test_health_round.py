"""One Controller's answers cannot make the health round, every server's, take long.

Each answer has a deadline (the health timeout, 3 s), but a Controller whose health
says it runs fewer rooms than the manager has deployed there is asked about each of
them, one after the other: a hostile one answered each just within the timeout, and
with 20 rooms the round (which waits for every server's check) took a minute, so no
other server's health was looked at for that long. A server's check now asks about its
rooms for at most twice the health timeout; the rest are asked in the next round.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import select, update

from cleanroom.manager.database import ComputeServer, Room
from cleanroom.manager.servers import HealthChecker

from .conftest import Manager, bind, make_bundle, make_spec, serve, url_of

ANSWER_TIME = 0.8
"""How long the Controller takes to answer about a room: within the health timeout."""
HEALTH_TIMEOUT = 1.0
ROOMS = 12
MOST_ASKED = math.ceil(2 * HEALTH_TIMEOUT / ANSWER_TIME)
"""Questions begun within the budget of twice the health timeout, each answered no
sooner than ``ANSWER_TIME``: a count a loaded machine can only lower, where the time
the check took (at most about 4 s, 9.6 s for all 12) it can only raise."""


@contextmanager
def slow_rooms_controller(asked: list[str]) -> Iterator[str]:
    """A Controller that says it runs no room, and answers each question about one just
    within the health timeout."""
    app = FastAPI()

    @app.put("/v1/rooms/{name}")
    async def put(name: str) -> JSONResponse:
        return JSONResponse({"name": name, "state": "collecting"}, status_code=201)

    @app.get("/v1/health")
    async def health() -> JSONResponse:
        return JSONResponse({"tee": "simulated", "status": "ok", "rooms": 0})

    @app.get("/v1/rooms/{name}")
    async def room(name: str) -> JSONResponse:
        asked.append(name)
        await asyncio.sleep(ANSWER_TIME)
        return JSONResponse({"name": name, "state": "collecting"})

    sock = bind()
    with serve(app, sock):
        yield url_of(sock)


def test_a_servers_questions_about_its_rooms_take_at_most_twice_the_health_timeout(
    manager: Manager, tmp_path: Path
) -> None:
    asked: list[str] = []
    with slow_rooms_controller(asked) as url:
        manager.add_server(url)
        acme, _ = manager.login("acme")
        function = acme.upload_function(make_bundle(tmp_path / "f")).function_id
        for n in range(ROOMS):
            assert acme.deploy(make_spec(function, name=f"r{n}")).state == "deployed"
        with manager.sessions() as session:
            server_id = session.scalar(select(ComputeServer.id).where(ComputeServer.url == url))
        assert server_id is not None
        settings = replace(manager.settings, health_timeout=HEALTH_TIMEOUT)
        health = HealthChecker(manager.sessions, settings, lambda url, project, room, scope: {})
        try:
            health.check(server_id)
        finally:
            health.close()
    assert 0 < len(asked) <= MOST_ASKED, (
        f"one server's check: expected at most {MOST_ASKED} questions about its rooms "
        f"({2 * HEALTH_TIMEOUT} s of them, {ANSWER_TIME} s each), got {len(asked)} of "
        f"{ROOMS}: {asked}"
    )


@contextmanager
def slow_deletes_controller(asked: list[str]) -> Iterator[str]:
    """A Controller that runs every room it deployed, and answers each delete just within
    the health timeout, never confirming it."""
    app = FastAPI()

    @app.put("/v1/rooms/{name}")
    async def put(name: str) -> JSONResponse:
        return JSONResponse({"name": name, "state": "collecting"}, status_code=201)

    @app.get("/v1/health")
    async def health() -> JSONResponse:
        return JSONResponse({"tee": "simulated", "status": "ok", "rooms": ROOMS})

    @app.delete("/v1/rooms/{name}")
    async def delete(name: str) -> JSONResponse:
        asked.append(name)
        await asyncio.sleep(ANSWER_TIME)
        return JSONResponse({"detail": "busy"}, status_code=503)

    sock = bind()
    with serve(app, sock):
        yield url_of(sock)


def test_deletes_of_failed_rooms_that_keep_their_slot_take_at_most_twice_the_health_timeout(
    manager: Manager, tmp_path: Path
) -> None:
    """The health check asks again to delete each failed room that may still run (so
    that its slot is freed once its Controller confirms), within the same budget: a
    Controller that answers each just in time and never confirms holds no other
    server's round."""
    asked: list[str] = []
    with slow_deletes_controller(asked) as url:
        manager.add_server(url)
        acme, _ = manager.login("acme")
        function = acme.upload_function(make_bundle(tmp_path / "f")).function_id
        for n in range(ROOMS):
            assert acme.deploy(make_spec(function, name=f"r{n}")).state == "deployed"
        with manager.sessions() as session:
            server_id = session.scalar(select(ComputeServer.id).where(ComputeServer.url == url))
            # As a deploy that got no answer, nor its delete, leaves them.
            session.execute(update(Room).values(state="failed", may_still_run=True))
            session.commit()
        assert server_id is not None
        settings = replace(manager.settings, health_timeout=HEALTH_TIMEOUT)
        health = HealthChecker(manager.sessions, settings, lambda url, project, room, scope: {})
        try:
            health.check(server_id)
        finally:
            health.close()
    assert 0 < len(asked) <= MOST_ASKED, (
        f"one server's check: expected the Controller asked again to delete at most "
        f"{MOST_ASKED} of the {ROOMS} failed rooms that keep their slot "
        f"({2 * HEALTH_TIMEOUT} s of deletes, {ANSWER_TIME} s each), got {len(asked)}: {asked}"
    )
    with manager.sessions() as session:
        held = session.scalars(select(Room.may_still_run).where(Room.state == "failed"))
        assert all(held), "a delete the Controller refused freed a slot"
