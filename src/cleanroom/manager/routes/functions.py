"""Function bundles: ``POST /v1/functions`` streams an upload to disk, hashing;
``GET /v1/functions/{digest}`` streams a stored one back (docs/api.md)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect

from cleanroom.manager.errors import BadRequest
from cleanroom.manager.routes import deps
from cleanroom.manager.routes.deps import CurrentCaller
from cleanroom.manager.services import Services
from cleanroom.tokens import TokenError


def router(services: Services) -> APIRouter:
    """Upload and download of function bundles, on ``services.functions``."""
    functions = services.functions
    routes = APIRouter()

    @routes.post("/v1/functions")
    async def upload_function(request: Request, caller: CurrentCaller) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit():
            functions.check_declared_size(int(declared))
        held = [0]  # bytes counted among the project's being received
        try:
            try:
                received = await functions.receive(
                    functions.counted(caller, request.stream(), held)
                )
            except ClientDisconnect as error:
                raise BadRequest("the upload ended before its end") from error
            try:
                created, size = await run_in_threadpool(functions.finish_upload, caller, received)
            except TokenError as error:  # refused again once its body ended
                raise deps.token_refused(error, request) from error
        finally:
            functions.receiving.release(caller, held[0])
        return JSONResponse(
            {"function_id": received.function_id, "size": size}, status_code=201 if created else 200
        )

    @routes.get("/v1/functions/{digest}")
    def download_function(digest: str, request: Request) -> Response:
        # Streamed from the open file, never read whole (storage.VerifiedBundle).
        bundle = functions.open_for(deps.reader(request), digest)
        return StreamingResponse(
            bundle.chunks(),
            media_type="application/octet-stream",
            headers={"Content-Length": str(bundle.size)},
        )

    return routes
