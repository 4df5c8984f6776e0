"""What compute servers fetch with their own token: the revocation list (docs/api.md,
"Tokens"). Their bundles come from :mod:`cleanroom.manager.routes.functions`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from cleanroom.manager.routes.deps import CurrentServer
from cleanroom.manager.services import Services


def router(services: Services) -> APIRouter:
    """``GET /v1/revocations``, for registered compute servers only."""
    routes = APIRouter()

    @routes.get("/v1/revocations")
    def revocations(_server: CurrentServer) -> Response:
        """What Controllers must refuse: revoked jtis, disabled and rotated clients (by
        digest); for registered compute servers only."""
        listed = services.auth.revocations()
        return JSONResponse(listed.to_json(), headers={"Cache-Control": "no-store"})

    return routes
