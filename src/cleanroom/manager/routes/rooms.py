"""Clean rooms: deploy, list, show and delete (docs/api.md, "Management server").

A deploy or a delete waits for the room's Controller, up to ``controller_timeout``. Sync
routes share one pool of worker threads (anyio's 40): a member whose room was on a
Controller that answered slowly sent 48 deletes of it at once, every thread waited, and
every other project's requests waited behind them. So deploys and deletes run in
threads of their own, at most ``Settings.controller_calls`` at once (more wait for a
turn without a thread): a slow Controller can delay other deploys and deletes, never the
other routes. A turn is waited for at most ``Settings.controller_call_wait``; then the
answer is ``503 controller-calls`` and nothing is done: the wait was unbounded, and a
deploy that found its turn after the client had given up on its answer (120 s) was
carried out unseen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from cleanroom.limits import retry_after
from cleanroom.manager.routes.deps import CurrentCaller, RoomName, RoomProject, token_refused
from cleanroom.manager.services import Services
from cleanroom.tokens import TokenError
from cleanroom.web import Refused

T = TypeVar("T")


class DeployRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: dict[str, Any]


def router(services: Services) -> APIRouter:
    """The rooms' routes, on ``services.rooms``."""
    service = services.rooms
    routes = APIRouter()
    turns = services.controller_calls
    threads = anyio.CapacityLimiter(turns.total_tokens)  # never waited for: a turn is held
    wait = services.settings.controller_call_wait

    async def in_turn(call: Callable[..., T], *args: object) -> T:
        """``call(*args)`` in a thread of its own, once a turn among the Controller calls
        is free; ``503 controller-calls`` if none is within ``wait`` seconds."""
        turn = False
        with anyio.move_on_after(wait):
            await turns.acquire()
            turn = True
        if not turn:
            raise Refused(
                503,
                f"the manager is calling compute servers for {turns.total_tokens} other "
                f"deploys and deletes, and none ended within {wait:g} s: nothing was done, "
                "try again",
                headers={"Retry-After": retry_after(wait)},
                check="controller-calls",
            )
        try:
            return await anyio.to_thread.run_sync(call, *args, limiter=threads)
        finally:
            turns.release()

    @routes.post("/v1/rooms")
    async def deploy(request: Request, caller: CurrentCaller, body: DeployRequest) -> Response:
        try:
            room = await in_turn(service.deploy, caller, body.spec)
        except TokenError as error:  # refused again after its wait (check_still_acts)
            raise token_refused(error, request) from error
        return JSONResponse(room, status_code=201)

    @routes.get("/v1/rooms")
    def rooms(
        caller: CurrentCaller,
        deleted: Annotated[
            bool, Query(description="Also the deleted rooms (kept for their audit trail).")
        ] = False,
    ) -> dict[str, Any]:
        return {"rooms": service.list(caller, deleted=deleted)}

    @routes.get("/v1/rooms/{name}")
    def room(name: RoomName, caller: CurrentCaller, project: RoomProject = None) -> dict[str, Any]:
        return service.get(caller, name, project)

    @routes.delete("/v1/rooms/{name}")
    async def delete(
        request: Request, name: RoomName, caller: CurrentCaller, project: RoomProject = None
    ) -> dict[str, Any]:
        try:
            return await in_turn(service.delete, caller, name, project)
        except TokenError as error:  # refused again after its wait (check_still_acts)
            raise token_refused(error, request) from error

    return routes
