"""A real Controller and a real manager on loopback: what the Controller refuses.

Revocation reaches the Controller within its refresh interval (the test polls
with a deadline and asserts only the outcome); a Controller that cannot refresh
its list for longer than the maximum age refuses every token (503); tokens of a
rotated key stay valid and the new key's are accepted at once; and each token
refusal, named as the manager names it.

The Controller is registered with the manager (its credentials fetch the
revocation list) and runs without its enclaves (no lifespan): a token it accepts
then meets "no clean room" (404) — which is how these tests tell accepted from
refused. The tokens are what the manager issues for one room on this server,
signed with its key ring, each sent with a fresh DPoP proof.
"""

from __future__ import annotations

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
from sqlalchemy import select

from cleanroom.client.manager import ManagerClient
from cleanroom.controller import ControllerSettings
from cleanroom.controller import create_app as create_controller
from cleanroom.controller.manager_link import ComputeCredentials
from cleanroom.dpop import ProofKey
from cleanroom.manager import Settings, create_app
from cleanroom.manager import admin as operations
from cleanroom.manager.database import Client, ComputeServer, Project, RevokedToken, Room
from cleanroom.manager.keys import KeyRing, rotate
from cleanroom.tokens import TokenIssuer
from tests.auth import dpop, signed_token
from tests.manager.conftest import Manager, bind, new_user, serve, url_of

REFRESH = 0.2
MAX_AGE = 1.0
KEY = ProofKey.generate()
ROOM = "nothing-here"
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


def controller_settings(tmp_path: Path, manager: Manager, url: str) -> ControllerSettings:
    """A Controller registered with ``manager`` at ``url``, refreshing its list every 0.2 s."""
    registered = manager.add_server(url)
    return ControllerSettings(
        data_dir=tmp_path / "compute",
        manager_url=manager.url,
        public_url=url,
        credentials=ComputeCredentials(url, registered.client_id, registered.client_secret),
        revocation_refresh=REFRESH,
        revocation_max_age=MAX_AGE,
        jwks_refetch_interval=REFRESH,
    )


@pytest.fixture
def controller(tmp_path: Path, manager: Manager) -> Iterator[str]:
    """The URL of a Controller registered with (and trusting) ``manager``."""
    sock = bind()
    settings = controller_settings(tmp_path, manager, url_of(sock))
    with serve(create_controller(settings), sock):
        yield url_of(sock)


def room_token(manager: Manager, controller: str, client_id: str) -> str:
    """What the manager issues ``client_id`` for room ROOM of acme on ``controller``."""
    issuer = TokenIssuer(manager.url, KeyRing.open(manager.settings.data_dir))
    token, _ = issuer.issue(
        client_id, audience=controller, scope="user", project="acme", room=ROOM, jkt=KEY.jkt
    )
    return token


def probe(controller: str, token: str, key: ProofKey = KEY) -> httpx.Response:
    """A request the Controller answers 404 (no such room) once it accepted the token."""
    url = f"{controller}/v1/rooms/{ROOM}"
    return httpx.get(url, headers=dpop(key, token, "GET", url))


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


def login(manager: Manager, controller: str) -> tuple[str, str, str]:
    """A new client of acme: its id, secret, and its token for ROOM on ``controller``."""
    client_id, secret = manager.new_client("acme")
    return client_id, secret, room_token(manager, controller, client_id)


def test_a_revoked_token_is_refused_by_the_controller_within_the_refresh(
    manager: Manager, controller: str
) -> None:
    client_id, secret, token = login(manager, controller)
    _, _, other = login(manager, controller)
    assert accepted(probe(controller, token))
    form = {"token": token, "client_id": client_id, "client_secret": secret}
    assert httpx.post(f"{manager.url}/oauth/revoke", data=form).status_code == 200
    refused = poll(refused_with(controller, token, "token-revoked"))
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert accepted(probe(controller, other))  # only the revoked one


def test_a_disabled_client_is_refused_by_the_controller(manager: Manager, controller: str) -> None:
    client_id, _, token = login(manager, controller)
    assert accepted(probe(controller, token))
    with manager.sessions() as session:
        operations.set_client_disabled(session, client_id, disabled=True)
    poll(refused_with(controller, token, "token-revoked"))


def test_the_disabled_flag_alone_is_enough_at_the_controller(
    manager: Manager, controller: str
) -> None:
    client_id, _, token = login(manager, controller)
    assert accepted(probe(controller, token))
    with manager.sessions() as session:
        session.get_one(Client, client_id).disabled = True  # tokens_not_before untouched
        session.commit()
    refused = poll(refused_with(controller, token, "token-revoked"))
    problem = refused.json()
    assert "disabled" in problem["detail"]
    # One shape with every other refusal: the message is the detail, the facts beside it
    # (the whole line as detail was shown twice by the command line).
    assert "message" not in problem, problem
    assert not problem["detail"].startswith("token-revoked"), problem["detail"]
    assert problem["check"] == "token-revoked" and "expected" in problem and "actual" in problem


def test_a_controller_that_cannot_refresh_its_list_refuses_every_token(
    manager: Manager, controller: str
) -> None:
    _, _, token = login(manager, controller)
    assert accepted(probe(controller, token))
    manager.stop()
    refused = poll(refused_with(controller, token, "token-revocation-stale"))
    assert refused.status_code == 503
    assert "www-authenticate" not in refused.headers  # not the token's fault


def test_after_a_rotation_the_controller_accepts_old_and_new_tokens(
    manager: Manager, controller: str
) -> None:
    client_id, _, before = login(manager, controller)
    assert accepted(probe(controller, before))
    # Published a second before it signs: more than the Controller's refetch interval,
    # so the Controller knows the key by the time a token names it.
    new = rotate(manager.settings.data_dir, activate_after=1)

    def signed_by_the_new_key() -> httpx.Response | None:
        token = room_token(manager, controller, client_id)
        if jwt.get_unverified_header(token)["kid"] != new.kid:
            return None
        return probe(controller, token)

    assert accepted(poll(signed_by_the_new_key))
    assert accepted(probe(controller, before))


# -- every refusal, at the Controller ----------------------------------------------------


def signed(manager: Manager, controller: str, client_id: str, **changes: Any) -> str:
    """A room token signed with the manager's key, changed in one way from a good one."""
    claims: dict[str, Any] = {
        "aud": controller,
        "sub": client_id,
        "room": ROOM,
        "cnf": {"jkt": KEY.jkt},
    }
    claims.update(changes)
    return signed_token(manager.settings.data_dir, manager.url, **claims)


def unsigned(manager: Manager, controller: str, client_id: str) -> str:
    good = signed(manager, controller, client_id)
    kid = jwt.get_unverified_header(good)["kid"]
    header = jwt.utils.base64url_encode(
        f'{{"alg":"none","typ":"at+jwt","kid":"{kid}"}}'.encode()
    ).decode()
    return f"{header}.{good.split('.')[1]}."


REFUSALS: dict[str, tuple[dict[str, Any], str, int]] = {
    "expired": ({"exp": -1000, "iat": -1600, "nbf": -1600}, "token-expired", 401),
    "not-yet-valid": ({"nbf": 1000}, "token-not-yet-valid", 401),
    "wrong-audience": ({"aud": "someone-else"}, "token-audience", 401),
    "the-managers-audience": ({"aud": "MANAGER"}, "token-audience", 401),
    "wrong-issuer": ({"iss": "http://evil.test"}, "token-issuer", 401),
    "bad-signature": ({"key": ec.generate_private_key(ec.SECP256R1())}, "token-signature", 401),
    "another-room": ({"room": "another-room"}, "token-room", 403),
    "no-room": ({"room": None}, "token-room", 403),
    "no-project": ({"project": None}, "token-room", 403),
    "bound-to-another-key": ({"cnf": {"jkt": ProofKey.generate().jkt}}, "dpop-proof", 401),
    "bound-to-no-key": ({"cnf": None}, "dpop-proof", 401),
    "not-an-access-token": ({"header": {"typ": "JWT"}}, "token-type", 401),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_the_controller_refuses(manager: Manager, controller: str, case: str) -> None:
    client_id, _ = manager.new_client("acme")
    assert accepted(probe(controller, signed(manager, controller, client_id)))  # the baseline
    changes, check, status = REFUSALS[case]
    now = int(time.time())
    shifted = {
        name: now + value if name in ("exp", "iat", "nbf") else value
        for name, value in changes.items()
    }
    if shifted.get("aud") == "MANAGER":
        shifted["aud"] = manager.url
    answer = probe(controller, signed(manager, controller, client_id, **shifted))
    assert answer.status_code == status
    assert answer.json()["check"] == check


def test_the_controller_refuses_alg_none(manager: Manager, controller: str) -> None:
    client_id, _ = manager.new_client("acme")
    answer = probe(controller, unsigned(manager, controller, client_id))
    assert answer.status_code == 401 and answer.json()["check"] == "token-algorithm"


def test_the_controller_refuses_a_user_token_for_an_operation(
    manager: Manager, controller: str
) -> None:
    _, _, token = login(manager, controller)
    url = f"{controller}/v1/rooms/{ROOM}"
    answer = httpx.delete(url, headers=dpop(KEY, token, "DELETE", url))
    assert answer.status_code == 403
    assert answer.json()["check"] == "token-scope"
    assert answer.headers["www-authenticate"] == 'DPoP error="insufficient_scope", algs="ES256"'


def test_a_token_without_its_proof_or_with_a_replayed_or_foreign_one(
    manager: Manager, controller: str
) -> None:
    _, _, token = login(manager, controller)
    url = f"{controller}/v1/rooms/{ROOM}"
    bare = httpx.get(url, headers={"authorization": f"DPoP {token}"})
    assert bare.status_code == 401 and bare.json()["check"] == "dpop-proof"
    assert bare.headers["www-authenticate"] == 'DPoP error="invalid_dpop_proof", algs="ES256"'
    as_bearer = httpx.get(url, headers={"authorization": f"Bearer {token}"})
    assert as_bearer.status_code == 401 and as_bearer.json()["check"] == "dpop-proof"
    headers = dpop(KEY, token, "GET", url)
    assert accepted(httpx.get(url, headers=headers))
    replayed = httpx.get(url, headers=headers)
    assert replayed.status_code == 401 and replayed.json()["check"] == "dpop-proof"
    assert "replayed" in replayed.json()["detail"]
    receipt = f"{url}/receipt"
    for_another_url = httpx.get(receipt, headers=dpop(KEY, token, "GET", url))
    assert for_another_url.status_code == 401 and for_another_url.json()["check"] == "dpop-proof"
    for_another_method = httpx.get(url, headers=dpop(KEY, token, "POST", url))
    assert for_another_method.json()["check"] == "dpop-proof"


def test_two_authorization_headers_are_refused_by_the_controller(
    manager: Manager, controller: str
) -> None:
    """A room token and an operation token, each beside another Authorization header:
    neither counts (the Controller took the first; found by h9)."""
    _, _, token = login(manager, controller)
    url = f"{controller}/v1/rooms/{ROOM}"
    good = dpop(KEY, token, "GET", url)
    answer = httpx.get(
        url,
        headers=[
            ("Authorization", good["Authorization"]),
            ("Authorization", "Bearer junk"),
            ("DPoP", good["DPoP"]),
        ],
    )
    assert answer.status_code == 401 and answer.json()["check"] == "authorization-header"
    status = f"Bearer {operation_token(manager, controller, 'status')}"
    for headers in ([status, "Bearer junk"], ["Bearer junk", status]):
        answer = httpx.get(url, headers=[("Authorization", value) for value in headers])
        assert answer.status_code == 401 and answer.json()["check"] == "authorization-header"
    assert accepted(httpx.get(url, headers=dpop(KEY, token, "GET", url)))


def operation_token(manager: Manager, controller: str, scope: str, **changes: Any) -> str:
    claims: dict[str, Any] = {
        "aud": controller,
        "sub": "cleanroom-manager",
        "scope": scope,
        "room": ROOM,
        "exp": int(time.time()) + 15,
    }
    claims.update(changes)
    return signed_token(manager.settings.data_dir, manager.url, **claims)


def bearer(method: str, url: str, token: str) -> httpx.Response:
    return httpx.request(method, url, headers={"authorization": f"Bearer {token}"})


def test_an_operation_token_counts_once_and_for_its_operation_only(
    manager: Manager, controller: str
) -> None:
    url = f"{controller}/v1/rooms/{ROOM}"
    delete = operation_token(manager, controller, "delete")
    assert accepted(bearer("DELETE", url, delete))  # checked, then: no such room
    again = bearer("DELETE", url, delete)
    assert again.status_code == 401 and again.json()["check"] == "token-replayed"
    status = operation_token(manager, controller, "status")
    assert accepted(bearer("GET", url, status))
    assert bearer("GET", url, status).json()["check"] == "token-replayed"
    deploy = operation_token(manager, controller, "deploy")
    wrong = bearer("DELETE", url, deploy)
    assert wrong.status_code == 403 and wrong.json()["check"] == "token-scope"
    wrong = bearer("DELETE", f"{controller}/v1/rooms/other", operation_token(manager, controller,
                                                                            "delete"))  # fmt: skip
    assert wrong.status_code == 403 and wrong.json()["check"] == "token-room"
    put = httpx.put(
        f"{controller}/v1/rooms/other",
        json={"spec": {}},
        headers={"authorization": f"Bearer {operation_token(manager, controller, 'deploy')}"},
    )
    assert put.status_code == 403 and put.json()["check"] == "token-room"


def test_only_the_manager_holds_operation_tokens(manager: Manager, controller: str) -> None:
    client_id, _ = manager.new_client("acme")
    forged = operation_token(manager, controller, "delete", sub=client_id)
    answer = bearer("DELETE", f"{controller}/v1/rooms/{ROOM}", forged)
    assert answer.status_code == 403 and answer.json()["check"] == "token-scope"


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/rooms/{ROOM}/sessions/{'A' * 22}%0A/run",
        f"/v1/rooms/{ROOM}/sessions/{'A' * 22}%0A/upload",
        f"/v1/rooms/{ROOM}/sessions/{'A' * 22}%0A/download",
        f"/v1/rooms/{ROOM}/sessions/..%2F..%2Fstate/run",
        f"/v1/rooms/{ROOM}%0A",
        f"/v1/rooms/{ROOM}%0A/receipt",
    ],
)
def test_path_parameters_match_whole(manager: Manager, controller: str, path: str) -> None:
    # A trailing newline once slipped through ^…$ and broke the relayed URL (500).
    _, _, token = login(manager, controller)
    method = "GET" if path.endswith(("%0A", "receipt")) else "POST"
    url = controller + path
    answer = httpx.request(method, url, headers=dpop(KEY, token, method, url))
    assert answer.status_code in (403, 404), answer.text
    assert answer.headers["content-type"] == "application/problem+json"


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
    _, _, token = login(manager, controller)

    def chunks() -> Iterator[bytes]:
        for _ in range(16):
            yield b" " * (1 << 16)
        yield b" "

    url = f"{controller}/v1/rooms/{ROOM}/attestation"
    answer = httpx.post(
        url,
        content=chunks(),
        headers={**dpop(KEY, token, "POST", url), "content-type": "application/json"},
    )
    assert answer.status_code == 413
    assert answer.json()["check"] == "request-size"
    assert answer.json()["actual"] == f"more than {1 << 20} bytes"


def test_the_data_upload_is_exempt(controller: str) -> None:
    session_id = "A" * 22
    path = f"/v1/rooms/x/sessions/{session_id}/upload"
    assert raw_head(controller, path, 1 << 30) == 401  # the route decides: no token


def record_room(manager: Manager, controller: str, deployer: str) -> None:
    """Room ROOM of acme, deployed on ``controller`` as the manager records it (this
    Controller runs no Worker): the token endpoint then issues tokens for it."""
    with manager.sessions() as session:
        server = session.scalars(select(ComputeServer).where(ComputeServer.url == controller))
        host = server.one()
        project = session.scalars(select(Project).where(Project.name == "acme")).one()
        session.add(
            Room(
                name=ROOM,
                project_id=project.id,
                deployer=deployer,
                spec="{}",
                work_id="w" * 43,
                function_digest="f" * 43,
                state="deployed",
                compute_server_id=host.id,
                compute_url=controller,
            )
        )
        session.commit()


def test_a_deleted_rooms_token_is_refused_by_the_controller(
    manager: Manager, controller: str
) -> None:
    """A room token names its project and room name, and the Controller finds the room by
    them: a token for a deleted room is a token for the next room of that name the
    project deploys here. Deleting the room revokes it, and the Controller refuses it
    within its refresh (found by h17's red team)."""
    client_id, secret = manager.new_client("acme")
    record_room(manager, controller, client_id)
    token_url = f"{manager.url}/oauth/token"
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    answer = httpx.post(
        token_url,
        data={**form, "resource": controller, "room": ROOM},
        headers={"DPoP": KEY.proof("POST", token_url)},
    )
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    assert accepted(probe(controller, token))
    manager_token = httpx.post(
        token_url, data=form, headers={"DPoP": KEY.proof("POST", token_url)}
    ).json()["access_token"]
    room_url = f"{manager.url}/v1/rooms/{ROOM}"
    deleted = httpx.delete(room_url, headers=dpop(KEY, manager_token, "DELETE", room_url))
    assert (deleted.status_code, deleted.json()["state"]) == (200, "deleted"), deleted.text
    refused = poll(refused_with(controller, token, "token-revoked"))
    assert refused.status_code == 401


def test_a_room_token_of_the_dpop_key_a_client_moved_from_is_refused_by_the_controller(
    manager: Manager, controller: str
) -> None:
    """A profile whose dpop-key.pem was lost or replaced, or a new profile of the client,
    logs in with a new DPoP key and registers the user key from it: the room tokens bound
    to the old key were good at the Controller for the rest of their hour, to whoever
    holds that key. Registering from another key revokes them; the new key's stay good
    (left open by h17)."""
    client_id, secret = manager.new_client("acme")
    record_room(manager, controller, client_id)
    user_key, _ = new_user()
    moved_to = ProofKey.generate()
    with ManagerClient(manager.url, dpop_key=KEY) as first:
        first.fetch_token(client_id, secret)
        first.register_user_key(user_key, client_id)
        old = first.fetch_token(client_id, secret, resource=controller, room=ROOM).access_token
        again = first.fetch_token(client_id, secret, resource=controller, room=ROOM).access_token
        first.register_user_key(user_key, client_id)  # again from the same key: nothing
    assert accepted(probe(controller, old))
    with ManagerClient(manager.url, dpop_key=moved_to) as second:
        second.fetch_token(client_id, secret)
        new = second.fetch_token(client_id, secret, resource=controller, room=ROOM).access_token
        assert accepted(probe(controller, new, moved_to))
        assert accepted(probe(controller, again))  # the same-key registration kept it
        second.register_user_key(user_key, client_id)
    for token in (old, again):
        refused = poll(refused_with(controller, token, "token-revoked"))
        assert refused.status_code == 401
    assert accepted(probe(controller, new, moved_to))
    # Registering again from the same key is no move: another profile's room token (a
    # key never registered, with the client's secret) is left alone.
    with ManagerClient(manager.url) as other:
        kept = other.fetch_token(client_id, secret, resource=controller, room=ROOM).access_token
    with ManagerClient(manager.url, dpop_key=moved_to) as second:
        second.fetch_token(client_id, secret)
        second.register_user_key(user_key, client_id)
    with manager.sessions() as session:
        assert (
            session.get(RevokedToken, jwt.decode(kept, options={"verify_signature": False})["jti"])
            is None
        )


def test_a_logged_out_keys_room_tokens_are_refused_by_the_controller(
    manager: Manager, controller: str
) -> None:
    """A logout revokes every room token the manager issued the client for the DPoP key it
    logs out, the ones the profile no longer keeps too (a login drops its kept tokens
    without revoking them): a Controller that saw them refuses them once its list is
    refreshed. Another profile's (another DPoP key's) stay good (h24: there was no
    logout)."""
    client_id, secret = manager.new_client("acme")
    record_room(manager, controller, client_id)
    with ManagerClient(manager.url, dpop_key=KEY) as leaving:
        leaving.fetch_token(client_id, secret)
        dropped = leaving.fetch_token(client_id, secret, resource=controller, room=ROOM)
        kept = leaving.fetch_token(client_id, secret, resource=controller, room=ROOM)
        elsewhere = ProofKey.generate()
        with ManagerClient(manager.url, dpop_key=elsewhere) as other:
            staying = other.fetch_token(client_id, secret, resource=controller, room=ROOM)
        for token in (dropped, kept):
            assert accepted(probe(controller, token.access_token))
        assert leaving.logout() == 2
    for token in (dropped, kept):
        refused = poll(refused_with(controller, token.access_token, "token-revoked"))
        assert refused.status_code == 401
    assert accepted(probe(controller, staying.access_token, elsewhere))
