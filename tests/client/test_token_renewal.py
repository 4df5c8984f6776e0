"""A command that goes on past the life of the token it started with (``run --wait`` on
a long run, a query's wait, an SDK client kept open): each request asks the profile for
its token, renewed through the client's credentials once it nears its expiry. Before,
the client kept the token it started with (cached, it may have had a minute left), and
the server's 401 ended the command (``run --wait`` an hour into a run, the run going on).

A real manager issues tokens that live 5 s; the Controller is a stand-in that checks the
user's token and its DPoP proof as the real one does (tests/manager/conftest.py), with no
leeway, so that an expired token is refused at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import Request
from fastapi.responses import JSONResponse

from cleanroom.client import profile as profile_module
from cleanroom.client.profile import Profile
from cleanroom.client.rooms import CleanRoomClient
from cleanroom.dpop import ProofVerifier
from cleanroom.http_auth import RequestAuthenticator
from cleanroom.tokens import SCOPE_USER, TokenClaims, TokenError, TokenVerifier
from tests.client.test_with_manager import deployed, parties  # noqa: F401 - fixtures
from tests.manager.conftest import (
    Manager,
    StandInController,
    _controller_app,
    bind,
    serve,
    url_of,
)

LIFETIME_S = 5
MARGIN_S = 2


@pytest.fixture
def manager(start_manager: Callable[..., Manager]) -> Manager:
    return start_manager(token_lifetime=LIFETIME_S, token_leeway=0)


class Checked(StandInController):
    """The stand-in Controller and the user tokens it accepted or refused."""

    accepted: list[TokenClaims]
    refused: list[str]


@pytest.fixture
def controller(manager: Manager) -> Iterator[Checked]:
    sock = bind()
    record = Checked(url_of(sock))
    record.accepted, record.refused = [], []
    record.credentials = manager.add_server(record.url)
    app = _controller_app(manager.url, record)
    verifier = TokenVerifier(
        manager.url, record.url, jwks_url=f"{manager.url}/.well-known/jwks.json", leeway=0
    )
    authenticator = RequestAuthenticator(verifier, ProofVerifier(), record.url)

    @app.get("/v1/rooms/{name}")
    def state(name: str, request: Request) -> JSONResponse:
        try:
            claims = authenticator.authenticate(request, SCOPE_USER)
        except TokenError as error:
            record.refused.append(error.check)
            return JSONResponse({"detail": str(error)}, status_code=401)
        if claims.room != name:
            return JSONResponse({"detail": "token for another room"}, status_code=403)
        record.accepted.append(claims)
        return JSONResponse({"name": name, "state": "collecting"})

    with serve(app, sock):
        yield record


def test_a_command_that_outlives_its_tokens_goes_on_with_renewed_ones(
    deployed: str,  # noqa: F811
    parties: tuple[Profile, Profile],  # noqa: F811
    controller: Checked,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice, _ = parties
    monkeypatch.setattr(profile_module, "TOKEN_MARGIN_S", MARGIN_S)
    client = CleanRoomClient(alice)
    room = client.manager.room("overlap")
    with client._compute(room) as compute:
        answers: list[dict[str, Any]] = [compute.state("overlap")]
        first = controller.accepted[0]
        # Past the first token's expiry (which the Controller no longer accepts), asking
        # now and then as run --wait does.
        while time.time() < first.exp + 1:
            time.sleep(0.5)
            answers.append(compute.state("overlap"))
    assert controller.refused == []
    assert all(answer["state"] == "collecting" for answer in answers)
    tokens = {claims.jti for claims in controller.accepted}
    assert len(tokens) >= 2
    assert controller.accepted[-1].exp > first.exp
    # The manager's client of the same command too: its first token has expired.
    assert client.manager.room("overlap").name == "overlap"
