"""The Controller's token from the manager (``ManagerLink``) is renewed near its expiry,
not for every request, whatever the manager's token lifetime: with a fixed minute's
margin, a manager issuing tokens of under a minute was asked for one for every request.

A real manager issues the tokens; the Controller's clock is pinned."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cleanroom.answers import MAX_TOKEN_LIFETIME_S
from cleanroom.controller.manager_link import ComputeCredentials, ManagerLink, ManagerRefused
from tests.client.hostile_http import hostile_server, json_answer
from tests.client.test_token_renewal import CountingLogins
from tests.manager.conftest import (  # noqa: F401 - start_manager: a fixture
    Manager,
    closed_port_url,
    start_manager,
)

LIFETIME_S = 40  # under the minute


@pytest.fixture
def manager(start_manager: Callable[..., Manager]) -> Manager:  # noqa: F811
    return start_manager(token_lifetime=LIFETIME_S)


def test_a_short_lived_token_is_renewed_in_its_last_quarter(manager: Manager) -> None:
    url = closed_port_url()
    registered = manager.add_server(url)
    credentials = ComputeCredentials(url, registered.client_id, registered.client_secret)
    now = [1_000_000.0]
    transport = CountingLogins()
    link = ManagerLink(manager.url, credentials, transport=transport, clock=lambda: now[0])
    first = link.headers()
    for _ in range(5):  # requests within the first three quarters of its life
        now[0] += 5
        assert link.headers() == first
    assert transport.logins == 1
    now[0] = 1_000_000.0 + LIFETIME_S * 3 / 4  # its last quarter: renewed, once
    renewed = link.headers()
    assert link.headers() == renewed
    assert transport.logins == 2


@pytest.mark.parametrize(
    ("lifetime", "actual"),
    [(0, 0), (-5, -5), (10**400, f"more than {MAX_TOKEN_LIFETIME_S} s")],
    ids=["zero", "negative", "past-any-clock"],
)
def test_a_token_lifetime_out_of_range_is_refused(lifetime: int, actual: object) -> None:
    """A manager answering a token that lives under a second is refused (it would be sent
    expired, and fetched again for every request), and one that lives past any float
    (10**400 s): every request of the Controller logged in again and ended in
    OverflowError, adding the lifetime to its clock (h10). Both ``manager-token``."""
    token = {"access_token": "t", "token_type": "Bearer", "expires_in": lifetime}

    def answer(method: str, path: str) -> tuple[int, dict[str, str], bytes] | None:
        return json_answer(token) if (method, path) == ("POST", "/oauth/token") else None

    with hostile_server(answer) as url:
        credentials = ComputeCredentials("http://127.0.0.1:9", "cs_x", "secret")
        with pytest.raises(ManagerRefused) as refused:
            ManagerLink(url, credentials).headers()
    assert refused.value.check == "manager-token"
    assert refused.value.actual == actual
