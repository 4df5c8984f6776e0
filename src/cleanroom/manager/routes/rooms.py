"""Clean rooms: deploy, list, show and delete (docs/api.md, "Management server").

A deploy or a delete waits for the room's Controller, up to ``controller_timeout``. Sync
routes share one pool of worker threads (anyio's 40): a member whose room was on a
Controller that answered slowly sent 48 deletes of it at once, every thread waited, and
every other project's requests waited behind them. So deploys and deletes run in
threads of their own, at most ``Settings.controller_calls`` at once (more wait for a
turn without a thread): a slow Controller can delay other deploys and deletes, never the
other routes.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from cleanroom.manager.routes.deps import CurrentCaller, RoomName, RoomProject, token_refused
from cleanroom.manager.services import Services
from cleanroom.tokens import TokenError


class DeployRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: dict[str, Any]


def router(services: Services) -> APIRouter:
    """The rooms' routes, on ``services.rooms``."""
    service = services.rooms
    routes = APIRouter()
    controller_calls = services.controller_calls

    @routes.post("/v1/rooms")
    async def deploy(request: Request, caller: CurrentCaller, body: DeployRequest) -> Response:
        try:
            room = await anyio.to_thread.run_sync(
                service.deploy, caller, body.spec, limiter=controller_calls
            )
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
            return await anyio.to_thread.run_sync(
                service.delete, caller, name, project, limiter=controller_calls
            )
        except TokenError as error:  # refused again after its wait (check_still_acts)
            raise token_refused(error, request) from error

    return routes
