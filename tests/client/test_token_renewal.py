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

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Request
from fastapi.responses import JSONResponse

from cleanroom.answers import MAX_TOKEN_LIFETIME_S
from cleanroom.client import profile as profile_module
from cleanroom.client.manager import ManagerClient
from cleanroom.client.profile import Profile, token_margin, token_usable
from cleanroom.client.rooms import CleanRoomClient
from cleanroom.dpop import ProofVerifier
from cleanroom.http_auth import RequestAuthenticator
from cleanroom.protocol.errors import MessageFormatError
from cleanroom.tokens import SCOPE_USER, TokenClaims, TokenError, TokenVerifier
from tests.client.hostile_http import hostile_server, json_answer
from tests.client.test_with_manager import (  # noqa: F401 - fixtures
    configure,
    deployed,
    parties,
    run,
)
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


# --- tokens that live less than the minute's margin --------------------------------------

SHORT_LIFETIME_S = 40  # under the minute: with a minute's margin, stale as soon as issued


class CountingLogins(httpx.HTTPTransport):
    """httpx's own network transport, counting the logins (``POST /oauth/token``) it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.logins = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/oauth/token":
            self.logins += 1
        return super().handle_request(request)


def kept(profile: Profile) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((profile.directory / "token.json").read_text())
    manager_token: dict[str, Any] = record["tokens"]["manager"]
    return manager_token


def test_a_token_living_under_the_margin_is_renewed_after_three_quarters_of_its_life(
    start_manager: Callable[..., Manager],
    home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A manager issuing tokens of 40 s: one login for as long as three quarters of the
    token's life (its margin is a quarter, 10 s), then one more; before, with the fixed
    minute's margin, every request logged in again. The client's clock is pinned, so
    what is counted is the client's own choice; the manager checks every token on the
    real clock (no leeway), and accepts each one sent."""
    manager = start_manager(token_lifetime=SHORT_LIFETIME_S, token_leeway=0)
    client_id, secret = manager.new_client("acme")
    assert run(capsys, *configure("alice", manager.url, client_id, secret))[0] == 0
    alice = Profile.load("alice")
    now = [time.time()]
    transport = CountingLogins()
    with alice.manager(transport=transport, clock=lambda: now[0]) as client:
        for _ in range(5):
            assert client.rooms() == []
        assert transport.logins == 1
        first = kept(alice)
        assert first["expires_at"] - first["issued_at"] == SHORT_LIFETIME_S
        margin = token_margin(SHORT_LIFETIME_S)
        assert margin == SHORT_LIFETIME_S / 4

        now[0] = first["expires_at"] - margin - 1  # its last second before the margin
        assert client.rooms() == [] and client.rooms() == []
        assert transport.logins == 1

        now[0] = first["expires_at"] - margin  # the margin reached: renewed, once
        assert client.rooms() == []
        assert transport.logins == 2
        second = kept(alice)
        assert second["access_token"] != first["access_token"]

        now[0] = second["expires_at"]  # never sent once the client's clock says it expired
        assert client.rooms() == []
        assert transport.logins == 3
        assert kept(alice)["access_token"] != second["access_token"]


@pytest.mark.parametrize(
    ("lifetime", "margin"),
    [
        (None, 60.0),  # kept by an earlier version: the full minute
        (3600, 60.0),
        (240, 60.0),
        (200, 50.0),
        (40, 10.0),
        (5, 1.25),
        (2, 1.0),  # never under a second, the resolution of an expiry
        (1, 1.0),  # renewed at every request, never sent expired
    ],
)
def test_the_margin_is_a_minute_or_a_quarter_of_a_shorter_life(
    lifetime: int | None, margin: float
) -> None:
    assert token_margin(lifetime) == margin
    if lifetime is not None:
        issued = 1_000_000
        assert token_usable(issued + lifetime, issued, issued + lifetime - margin - 0.001)
        assert not token_usable(issued + lifetime, issued, issued + lifetime - margin)
        assert not token_usable(issued + lifetime, issued, issued + lifetime)


@pytest.mark.parametrize(
    ("expires_in", "actual"),
    [(0, 0), (-60, -60), (10**400, f"more than {MAX_TOKEN_LIFETIME_S} s")],
    ids=["zero", "negative", "past-any-clock"],
)
def test_a_token_lifetime_out_of_range_is_refused_not_kept(expires_in: int, actual: object) -> None:
    """A manager answering a token that lives no second is refused (``token``): the client
    sent it, to be refused itself, as the renewed token of every request. So is one that
    lives past any float (10**400 s): it was taken, and the profile's check of its expiry
    against the clock (``token_usable``) raised OverflowError (h10's red team)."""
    token = {"access_token": "t", "token_type": "DPoP", "expires_in": expires_in}

    def answer(method: str, path: str) -> tuple[int, dict[str, str], bytes] | None:
        return json_answer(token) if (method, path) == ("POST", "/oauth/token") else None

    with (
        hostile_server(answer) as url,
        ManagerClient(url) as client,
        pytest.raises(MessageFormatError) as refused,
    ):
        client.fetch_token("c" * 32, "secret")
    assert refused.value.check == "token"
    assert refused.value.actual == actual
    assert client.token is None
