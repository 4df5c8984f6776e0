"""The process's HTTP clients share one TLS context (cleanroom.tls).

httpx loads the CA bundle (20-30 ms of CPU) for every client it builds unless it is
given a context; the Controller fetched the JWKS, the revocation list, its token and
every function bundle through a new client, the bundle on its event loop, and the
manager built one for every deploy and delete it sent a Controller. Counted here from
outside: every ``ssl.create_default_context`` call while each of them talks to a real
server several times.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cleanroom.controller.app import _fetch_bundle
from cleanroom.controller.manager_link import ComputeCredentials, ManagerLink
from cleanroom.manager.rooms import Rooms
from cleanroom.manager.servers import HealthChecker
from cleanroom.manager.settings import Settings
from cleanroom.protocol.keys import user_id
from cleanroom.protocol.spec import WorkSpec
from cleanroom.tls import tls_context
from cleanroom.tokens import RevocationFeed, TokenVerifier
from tests.local_server import serving

DOCUMENTS: dict[str, Any] = {
    "/jwks": {"keys": []},
    "/revocations": {"now": 1_800_000_000, "tokens": [], "clients": []},
}
BUNDLE = b"a function bundle"


def token(_request: Request) -> JSONResponse:
    return JSONResponse({"access_token": "a token", "expires_in": 3600})


def bundle(_request: Request) -> Response:
    return Response(BUNDLE, media_type="application/octet-stream")


def deployed(request: Request) -> JSONResponse:
    """A Controller's answer to the manager's deploy or delete (what it says is not tested)."""
    return JSONResponse({"name": request.path_params["name"]}, status_code=200)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = Starlette(
        routes=[
            *(
                Route(path, lambda _request, body=body: JSONResponse(body))
                for path, body in DOCUMENTS.items()
            ),
            Route("/oauth/token", token, methods=["POST"]),
            Route("/v1/functions/{digest}", bundle),
            Route("/v1/rooms/{name}", deployed, methods=["PUT", "DELETE"]),
        ]
    )
    with serving(app) as url:
        yield url


@pytest.fixture
def contexts_built(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    tls_context()  # the process's one, built before counting
    built: list[int] = []
    original = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    return built


def test_fetching_keys_and_revocations_builds_no_tls_context(
    base_url: str, contexts_built: list[int]
) -> None:
    verifier = TokenVerifier(base_url, base_url, jwks_url=f"{base_url}/jwks")
    feed = RevocationFeed(f"{base_url}/revocations", refresh=1e-9, max_age=60)
    for _ in range(3):
        verifier._fetch(f"{base_url}/jwks")
        feed._fetch()
    assert contexts_built == [], f"{len(contexts_built)} TLS contexts built for 6 fetches"


def test_the_controllers_token_and_bundle_fetches_build_no_tls_context(
    base_url: str, contexts_built: list[int], tmp_path: Path
) -> None:
    """The bundle fetch runs on the Controller's event loop, beside every session."""
    link = ManagerLink(base_url, ComputeCredentials(base_url, "cs-" + "0" * 32, "secret"))
    for _ in range(3):
        link._fetch()
    for number in range(3):
        destination = tmp_path / f"bundle-{number}.tar"
        asyncio.run(_fetch_bundle(base_url, "A" * 43, link, None, destination))
        assert destination.read_bytes() == BUNDLE
    assert contexts_built == [], f"{len(contexts_built)} TLS contexts built for 6 fetches"


class OperationHeaders:
    """The manager's operation tokens are not what is counted here."""

    def operation_headers(self, url: str, project: str, room: str, scope: str) -> dict[str, str]:
        return {"Authorization": "Bearer a token"}


def test_the_managers_deploys_deletes_and_health_checks_build_no_tls_context(
    base_url: str, contexts_built: list[int], tmp_path: Path
) -> None:
    """A context is 20-30 ms of the manager's CPU for every room deployed or deleted."""
    settings = Settings(data_dir=tmp_path, public_url=base_url)
    rooms = Rooms(settings, None, None, OperationHeaders())  # type: ignore[arg-type]
    someone = user_id(ec.generate_private_key(ec.SECP256R1()).public_key())
    spec = WorkSpec.parse(
        {
            "name": "overlap",
            "function": "fs://" + "A" * 43,
            "handler": "handler.main",
            "inputs": {"data": someone},
            "outputs": {"result": someone},
            "runners": [someone],
            "nonce": "A" * 22,
        }
    )
    health = HealthChecker(None, settings, OperationHeaders().operation_headers)  # type: ignore[arg-type]
    for _ in range(3):
        assert rooms._put_room(base_url, "acme", spec) is None
        assert rooms._delete_room(base_url, "acme", "overlap") is None
        assert health.client.get(f"{base_url}/jwks").status_code == 200
    health.close()
    assert contexts_built == [], f"{len(contexts_built)} TLS contexts built for 9 requests"
