"""The management server's HTTP app: its services, wired to one router per resource.

The manager is outside the TEE model: it can deny service, but it can never read
data or make a client accept the wrong function, spec or enclave, because every
client recomputes function IDs and Work-IDs itself. What it enforces (tokens,
visibility, the size limit) is defence in depth and good manners.

Each resource is a service with plain methods (:mod:`cleanroom.manager.auth`,
:mod:`~cleanroom.manager.functions`, :mod:`~cleanroom.manager.rooms`,
:mod:`~cleanroom.manager.projects`, :mod:`~cleanroom.manager.servers`) and a router in
:mod:`cleanroom.manager.routes`; a service refuses with a
:class:`cleanroom.errors.Error`, which :mod:`cleanroom.web` answers as a problem. The
app's lifespan runs the manager's :mod:`~cleanroom.manager.housekeeping`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from cleanroom.limits import BodySizeLimit
from cleanroom.manager.callers import Caller
from cleanroom.manager.routes import auth, functions, projects, rooms, servers
from cleanroom.manager.services import Services
from cleanroom.manager.settings import Settings
from cleanroom.tokens import MANAGER_SUBJECT
from cleanroom.web import install_problem_handlers

__all__ = ["MANAGER_SUBJECT", "Caller", "create_app"]


def create_app(settings: Settings) -> FastAPI:
    """The management server's FastAPI app; state in ``settings.data_dir`` and its database."""
    services = Services.build(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        services.housekeeping.start()
        try:
            yield
        finally:
            await run_in_threadpool(services.housekeeping.stop)
            services.health.close()

    app = FastAPI(
        title="cleanroom management server",
        summary="Tokens, function storage and the clean room registry (docs/api.md)",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.manager = services
    install_problem_handlers(app)
    # Every body but the function upload's (which streams, with its own limit).
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_json_bytes, exempt=[("POST", "/v1/functions")]
    )
    for resource in (auth, servers, functions, rooms, projects):
        app.include_router(resource.router(services))
    return app
