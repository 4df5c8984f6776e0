"""A real Controller and a real manager on loopback: what the Controller refuses.

Revocation reaches the Controller within its refresh interval (the test polls
with a deadline and asserts only the outcome); a Controller that cannot refresh
its list for longer than the maximum age refuses every token (503); tokens of a
rotated key stay valid and the new key's are accepted at once; and each token
refusal, named as the manager names it.

The Controller runs without its enclaves (no lifespan): a token it accepts then
meets "no clean room" (404) — which is how these tests tell accepted from refused.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.controller import ControllerSettings
from cleanroom.controller import create_app as create_controller
from cleanroom.manager import Settings, create_app
from cleanroom.manager import admin as operations
from cleanroom.manager.database import Client
from cleanroom.manager.keys import KeyRing, rotate
from cleanroom.tokens import kid_of
from tests.manager.conftest import Manager, bind, serve, url_of

REFRESH = 0.2
MAX_AGE = 1.0
DEADLINE = 30.0
"""Seconds a poll waits for an outcome before the test fails (never asserted as speed)."""


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    sock = bind()
    settings = Settings(data_dir=tmp_path / "manager", public_url=url_of(sock))
    app = create_app(settings)
    running = serve(app, sock)
    running.__enter__()
    started = Manager(url_of(sock), settings, app.state.manager.sessions, running=running)
    yield started
    started.stop()


@pytest.fixture
def controller(tmp_path: Path, manager: Manager) -> Iterator[str]:
    """The URL of a Controller that trusts ``manager``, refreshing its list every 0.2 s."""
    settings = ControllerSettings(
        data_dir=tmp_path / "compute",
        manager_url=manager.url,
        revocation_refresh=REFRESH,
        revocation_max_age=MAX_AGE,
        jwks_refetch_interval=REFRESH,
    )
    sock = bind()
    with serve(create_controller(settings), sock):
        yield url_of(sock)


def probe(controller: str, token: str, method: str = "GET") -> httpx.Response:
    """A request the Controller answers 404 (no such room) once it accepted the token."""
    return httpx.request(
        method,
        f"{controller}/v1/rooms/nothing-here",
        headers={"authorization": f"Bearer {token}"},
    )


def accepted(answer: httpx.Response) -> bool:
    return answer.status_code == 404


def poll(condition: Callable[[], httpx.Response | None]) -> httpx.Response:
    """The first answer ``condition`` gives that is not None, within the deadline."""
    deadline = time.monotonic() + DEADLINE
    while True:
        answer = condition()
        if answer is not None:
            return answer
        assert time.monotonic() < deadline, "no outcome within the deadline"
        time.sleep(REFRESH / 2)


def refused_with(controller: str, token: str, check: str) -> Callable[[], httpx.Response | None]:
    def condition() -> httpx.Response | None:
        answer = probe(controller, token)
        if accepted(answer):
            return None
        assert answer.json()["check"] == check, answer.json()
        return answer

    return condition


def login(manager: Manager) -> tuple[str, str, str]:
    client_id, secret = manager.new_client("acme")
    return client_id, secret, manager.client().fetch_token(client_id, secret).access_token


def test_a_revoked_token_is_refused_by_the_controller_within_the_refresh(
    manager: Manager, controller: str
) -> None:
    client_id, secret, token = login(manager)
    _, _, other = login(manager)
    assert accepted(probe(controller, token))
    form = {"token": token, "client_id": client_id, "client_secret": secret}
    assert httpx.post(f"{manager.url}/oauth/revoke", data=form).status_code == 200
    refused = poll(refused_with(controller, token, "token-revoked"))
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert accepted(probe(controller, other))  # only the revoked one


def test_a_disabled_client_is_refused_by_the_controller(manager: Manager, controller: str) -> None:
    client_id, _, token = login(manager)
    assert accepted(probe(controller, token))
    with manager.sessions() as session:
        operations.set_client_disabled(session, client_id, disabled=True)
    poll(refused_with(controller, token, "token-revoked"))


def test_the_disabled_flag_alone_is_enough_at_the_controller(
    manager: Manager, controller: str
) -> None:
    client_id, _, token = login(manager)
    assert accepted(probe(controller, token))
    with manager.sessions() as session:
        session.get_one(Client, client_id).disabled = True  # tokens_not_before untouched
        session.commit()
    refused = poll(refused_with(controller, token, "token-revoked"))
    assert "disabled" in refused.json()["detail"]


def test_a_controller_that_cannot_refresh_its_list_refuses_every_token(
    manager: Manager, controller: str
) -> None:
    _, _, token = login(manager)
    assert accepted(probe(controller, token))
    manager.stop()
    refused = poll(refused_with(controller, token, "token-revocation-stale"))
    assert refused.status_code == 503
    assert "www-authenticate" not in refused.headers  # not the token's fault


def test_after_a_rotation_the_controller_accepts_old_and_new_tokens(
    manager: Manager, controller: str
) -> None:
    client_id, secret, before = login(manager)
    assert accepted(probe(controller, before))
    # Published a second before it signs: more than the Controller's refetch interval,
    # so the Controller knows the key by the time a token names it.
    new = rotate(manager.settings.data_dir, activate_after=1)

    def signed_by_the_new_key() -> httpx.Response | None:
        token = manager.client().fetch_token(client_id, secret).access_token
        if jwt.get_unverified_header(token)["kid"] != new.kid:
            return None
        return probe(controller, token)

    assert accepted(poll(signed_by_the_new_key))
    assert accepted(probe(controller, before))


# -- every refusal, at the Controller ----------------------------------------------------


def signed(manager: Manager, client_id: str, **changes: Any) -> str:
    """A token signed with the manager's key, changed in one way from a good one."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": manager.url,
        "aud": "cleanroom",
        "sub": client_id,
        "project": "acme",
        "scope": "user",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": secrets.token_urlsafe(16),
    }
    key = changes.pop("key", None)
    header = changes.pop("header", {})
    claims.update(changes)
    ring_key = KeyRing.open(manager.settings.data_dir).signing_key()
    headers = {"kid": kid_of(ring_key.public_key()), **header}
    return jwt.encode(claims, key or ring_key, algorithm="ES256", headers=headers)


def unsigned(manager: Manager, client_id: str) -> str:
    good = signed(manager, client_id)
    kid = jwt.get_unverified_header(good)["kid"]
    header = jwt.utils.base64url_encode(
        f'{{"alg":"none","typ":"JWT","kid":"{kid}"}}'.encode()
    ).decode()
    return f"{header}.{good.split('.')[1]}."


REFUSALS: dict[str, tuple[dict[str, Any], str, int]] = {
    "expired": ({"exp": -1000, "iat": -1600, "nbf": -1600}, "token-expired", 401),
    "not-yet-valid": ({"nbf": 1000}, "token-not-yet-valid", 401),
    "wrong-audience": ({"aud": "someone-else"}, "token-audience", 401),
    "wrong-issuer": ({"iss": "http://evil.test"}, "token-issuer", 401),
    "bad-signature": ({"key": ec.generate_private_key(ec.SECP256R1())}, "token-signature", 401),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_the_controller_refuses(manager: Manager, controller: str, case: str) -> None:
    client_id, _ = manager.new_client("acme")
    assert accepted(probe(controller, signed(manager, client_id)))  # the baseline
    changes, check, status = REFUSALS[case]
    now = int(time.time())
    shifted = {
        name: now + value if name in ("exp", "iat", "nbf") else value
        for name, value in changes.items()
    }
    answer = probe(controller, signed(manager, client_id, **shifted))
    assert answer.status_code == status
    assert answer.json()["check"] == check


def test_the_controller_refuses_alg_none(manager: Manager, controller: str) -> None:
    client_id, _ = manager.new_client("acme")
    answer = probe(controller, unsigned(manager, client_id))
    assert answer.status_code == 401 and answer.json()["check"] == "token-algorithm"


def test_the_controller_refuses_a_missing_scope(manager: Manager, controller: str) -> None:
    _, _, token = login(manager)
    answer = probe(controller, token, method="DELETE")  # needs the deploy scope
    assert answer.status_code == 403
    assert answer.json()["check"] == "token-scope"
    assert answer.headers["www-authenticate"] == 'Bearer error="insufficient_scope"'


# -- request size --------------------------------------------------------------------------


def raw_head(url: str, path: str, length: int) -> int:
    """Send only a POST's head declaring ``length`` bytes; the status of the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split()[1])


def test_a_json_body_over_1_mib_is_refused_before_it_is_read(controller: str) -> None:
    assert raw_head(controller, "/v1/rooms/x/attestation", (1 << 20) + 1) == 413


def test_a_chunked_json_body_over_1_mib_is_refused(manager: Manager, controller: str) -> None:
    _, _, token = login(manager)

    def chunks() -> Iterator[bytes]:
        for _ in range(16):
            yield b" " * (1 << 16)
        yield b" "

    answer = httpx.post(
        f"{controller}/v1/rooms/x/attestation",
        content=chunks(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    assert answer.status_code == 413
    assert answer.json()["check"] == "request-size"
    assert answer.json()["actual"] == f"more than {1 << 20} bytes"


def test_the_data_upload_is_exempt(controller: str) -> None:
    session_id = "A" * 22
    path = f"/v1/rooms/x/sessions/{session_id}/upload"
    assert raw_head(controller, path, 1 << 30) == 401  # the route decides: no token
