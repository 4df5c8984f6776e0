"""Clean rooms: deploy, list, show and delete (docs/api.md, "Management server")."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from cleanroom.manager.routes.deps import CurrentCaller, RoomName, RoomProject
from cleanroom.manager.services import Services


class DeployRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: dict[str, Any]


def router(services: Services) -> APIRouter:
    """The rooms' routes, on ``services.rooms``."""
    service = services.rooms
    routes = APIRouter()

    @routes.post("/v1/rooms")
    def deploy(caller: CurrentCaller, body: DeployRequest) -> Response:
        return JSONResponse(service.deploy(caller, body.spec), status_code=201)

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
    def delete(
        name: RoomName, caller: CurrentCaller, project: RoomProject = None
    ) -> dict[str, Any]:
        return service.delete(caller, name, project)

    return routes
