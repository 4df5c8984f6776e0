"""The token endpoint: a DPoP proof for every user token, one audience per token (RFC 8707),
a room's token only for a room the client sees, live on that server; a compute
server's token for the manager only. Every refusal names its check, and nothing is
issued (nor audited as issued) when a check fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from cleanroom.client.errors import ServerError
from cleanroom.client.manager import ManagerClient
from cleanroom.dpop import ProofKey
from cleanroom.manager import admin as operations
from cleanroom.manager import audit
from cleanroom.manager.admin import ServerCredentials
from cleanroom.manager.database import Room
from tests.auth import dpop

from .conftest import Manager, StandInController, closed_port_url, make_bundle, make_spec, new_user

KEY = ProofKey.generate()


def token_request(
    manager: Manager,
    client_id: str,
    secret: str,
    *,
    proof: str | bool | None = True,
    **form: str | list[str],
) -> httpx.Response:
    """POST /oauth/token as a stock client would; ``proof=True`` makes a good proof."""
    url = f"{manager.url}/oauth/token"
    headers = {}
    if proof is True:
        headers["DPoP"] = KEY.proof("POST", url)
    elif isinstance(proof, str):
        headers["DPoP"] = proof
    data: dict[str, Any] = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": secret,
        **form,
    }
    return httpx.post(url, data=data, headers=headers)


def claims_of(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = jwt.decode(
        answer.json()["access_token"], options={"verify_signature": False}
    )
    return document


def refusal(answer: httpx.Response, status: int, error: str, check: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error
    assert answer.json()["check"] == check
    assert answer.headers["cache-control"] == "no-store"


def issued(manager: Manager) -> int:
    with manager.sessions() as session:
        return sum(1 for entry in audit.entries(session) if entry.action == "token.issued")


@pytest.fixture
def deployed(
    manager: Manager, controller: StandInController, tmp_path: Path
) -> tuple[ManagerClient, str, str]:
    """acme deployed "overlap" on the stand-in Controller: (client, client_id, secret)."""
    client_id, secret = manager.new_client("acme")
    client = manager.client()
    client.fetch_token(client_id, secret)
    function = client.upload_function(make_bundle(tmp_path / "f")).function_id
    client.deploy(make_spec(function))
    return client, client_id, secret


# -- tokens for the manager --------------------------------------------------------------


def test_a_user_token_for_the_manager_is_bound_to_the_proofs_key(manager: Manager) -> None:
    client_id, secret = manager.new_client("acme")
    answer = token_request(manager, client_id, secret)
    assert answer.json()["token_type"] == "DPoP"
    claims = claims_of(answer)
    assert claims["aud"] == manager.url and claims["cnf"] == {"jkt": KEY.jkt}
    assert (claims["sub"], claims["client_id"], claims["project"]) == (client_id, client_id, "acme")
    assert "room" not in claims
    assert claims_of(token_request(manager, client_id, secret, resource=manager.url))["aud"] == (
        manager.url
    )
    url = f"{manager.url}/v1/whoami"
    token = answer.json()["access_token"]
    assert httpx.get(url, headers=dpop(KEY, token, "GET", url)).status_code == 200


@pytest.mark.parametrize(
    "proof",
    [
        None,
        KEY.proof("GET", "http://127.0.0.1:1/oauth/token"),  # another method and URL
        "not-a-proof",
    ],
    ids=["no-proof", "another-request", "garbage"],
)
def test_a_user_token_needs_a_proof_for_exactly_this_request(
    manager: Manager, proof: str | None
) -> None:
    client_id, secret = manager.new_client("acme")
    before = issued(manager)
    refusal(token_request(manager, client_id, secret, proof=proof), 400, "invalid_dpop_proof",
            "dpop-proof")  # fmt: skip
    assert issued(manager) == before


def test_a_proof_for_the_token_endpoint_is_good_once(manager: Manager) -> None:
    client_id, secret = manager.new_client("acme")
    proof = KEY.proof("POST", f"{manager.url}/oauth/token")
    assert token_request(manager, client_id, secret, proof=proof).status_code == 200
    replayed = token_request(manager, client_id, secret, proof=proof)
    refusal(replayed, 400, "invalid_dpop_proof", "dpop-proof")
    assert "replayed" in replayed.json()["error_description"]


def test_a_wrong_secret_says_nothing_more_than_invalid_client(manager: Manager) -> None:
    client_id, secret = manager.new_client("acme")
    for proof in (True, None):
        answer = token_request(manager, client_id, "x" + secret, proof=proof)
        assert answer.status_code == 401 and answer.json() == {"error": "invalid_client"}


def test_room_and_project_are_for_a_compute_server_resource(manager: Manager) -> None:
    client_id, secret = manager.new_client("acme")
    refusal(token_request(manager, client_id, secret, room="overlap"), 400, "invalid_request",
            "token-room")  # fmt: skip


def test_two_resources_are_invalid_target(manager: Manager) -> None:
    client_id, secret = manager.new_client("acme")
    resource = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    answer = token_request(manager, client_id, secret, resource=resource, room="overlap")
    refusal(answer, 400, "invalid_target", "token-audience")


def test_whether_a_url_is_a_registered_compute_server_is_not_told_by_a_refusal(
    manager: Manager, controller: StandInController, deployed: tuple[ManagerClient, str, str]
) -> None:
    """A room token at an unregistered URL was refused with `token-audience`, at a
    registered one with `room` or `token-room`: any client could probe which URLs are
    registered compute servers (manager red team 1, F5). Now the room is looked up
    first, and a URL that is not where it lives is one answer, registered or not."""
    _, client_id, secret = deployed
    registered, unregistered = closed_port_url(), "http://unregistered.test:8081"
    manager.add_server(registered)

    def answers(room: str) -> list[tuple[int, str, str, str]]:
        found = []
        for url in (registered, unregistered):
            answer = token_request(manager, client_id, secret, resource=url, room=room)
            body = answer.json()
            detail = body.get("error_description", "").replace(url, "URL")
            found.append((answer.status_code, body["error"], body.get("check", ""), detail))
        return found

    for room in ("nothing", "overlap"):  # a room the client does not see, one it does
        at_registered, at_unregistered = answers(room)
        assert at_registered == at_unregistered, (
            f"a room token for {room!r}: expected one answer at a registered and an "
            f"unregistered URL, got {at_registered} and {at_unregistered}"
        )
    assert at_registered[:3] == (400, "invalid_target", "token-room"), at_registered


@pytest.mark.parametrize("value", ["x\x00", "x\n", "x" * 5000], ids=["nul", "newline", "5000"])
@pytest.mark.parametrize("field", ["client_id", "resource", "room", "project"])
def test_a_hostile_field_is_an_oauth_error_never_a_5xx(
    manager: Manager, controller: StandInController, field: str, value: str
) -> None:
    # Each reached the database as it came (PostgreSQL refuses a NUL in text: 500).
    client_id, secret = manager.new_client("acme")
    form = {"resource": controller.url, "room": "overlap", "client_id": client_id, field: value}
    before = issued(manager)
    answer = token_request(manager, form.pop("client_id"), secret, **form)
    assert answer.status_code in (400, 401), answer.text
    assert answer.json()["error"] in ("invalid_request", "invalid_target", "invalid_client")
    if field in ("room", "project"):
        refusal(answer, 400, "invalid_request", "token-room")
    if field == "resource":
        refusal(answer, 400, "invalid_target", "token-audience")
    assert issued(manager) == before


# -- tokens for one room on one compute server -------------------------------------------


def test_a_room_token_names_the_server_the_project_and_the_room(
    manager: Manager, controller: StandInController, deployed: tuple[ManagerClient, str, str]
) -> None:
    _, client_id, secret = deployed
    answer = token_request(manager, client_id, secret, resource=controller.url, room="overlap")
    claims = claims_of(answer)
    assert (claims["aud"], claims["project"], claims["room"]) == (
        controller.url,
        "acme",
        "overlap",
    )
    assert claims["scope"] == "user" and claims["cnf"] == {"jkt": KEY.jkt}
    with manager.sessions() as session:
        [entry] = [
            json.loads(e.details)
            for e in audit.entries(session)
            if e.action == "token.issued" and json.loads(e.details).get("room") == "overlap"
        ]
    assert entry["aud"] == controller.url and entry["project"] == "acme"
    # The manager itself refuses it: it is for the Controller.
    url = f"{manager.url}/v1/whoami"
    token = answer.json()["access_token"]
    refused = httpx.get(url, headers=dpop(KEY, token, "GET", url))
    assert refused.status_code == 401 and refused.json()["check"] == "token-audience"


def test_a_room_token_needs_a_room(
    manager: Manager, controller: StandInController, deployed: tuple[ManagerClient, str, str]
) -> None:
    _, client_id, secret = deployed
    refusal(token_request(manager, client_id, secret, resource=controller.url), 400,
            "invalid_request", "token-room")  # fmt: skip


def test_no_room_token_for_a_room_the_client_does_not_see(
    manager: Manager, controller: StandInController, deployed: tuple[ManagerClient, str, str]
) -> None:
    outsider, secret = manager.new_client("globex")
    before = issued(manager)
    answer = token_request(manager, outsider, secret, resource=controller.url, room="overlap")
    refusal(answer, 400, "invalid_target", "room")
    assert "acme" not in answer.text  # nothing about whose room it is
    answer = token_request(
        manager, outsider, secret, resource=controller.url, room="overlap", project="acme"
    )
    refusal(answer, 400, "invalid_target", "room")
    assert issued(manager) == before


def test_no_room_token_at_another_server_or_for_a_room_no_longer_live(
    manager: Manager, controller: StandInController, deployed: tuple[ManagerClient, str, str]
) -> None:
    client, client_id, secret = deployed
    elsewhere = closed_port_url()
    manager.add_server(elsewhere)
    answer = token_request(manager, client_id, secret, resource=elsewhere, room="overlap")
    refusal(answer, 400, "invalid_target", "token-room")
    client.delete("overlap")
    answer = token_request(manager, client_id, secret, resource=controller.url, room="overlap")
    refusal(answer, 400, "invalid_target", "token-room")


def test_no_room_token_at_a_removed_server(
    manager: Manager, controller: StandInController, deployed: tuple[ManagerClient, str, str]
) -> None:
    _, client_id, secret = deployed
    with manager.sessions() as session:
        operations.remove_server(session, controller.url, force=True)
    answer = token_request(manager, client_id, secret, resource=controller.url, room="overlap")
    refusal(answer, 400, "invalid_target", "token-room")


def test_a_participant_of_another_project_gets_a_token_naming_the_rooms_project(
    manager: Manager, controller: StandInController, tmp_path: Path
) -> None:
    acme, _ = manager.login("acme")
    bob_id, bob_secret = manager.new_client("globex")
    bob = manager.client(dpop_key=KEY)
    bob.fetch_token(bob_id, bob_secret)
    key, uid = new_user()
    bob.register_user_key(key, bob_id)
    function = acme.upload_function(make_bundle(tmp_path / "f")).function_id
    acme.deploy(make_spec(function, owner=uid))
    answer = token_request(manager, bob_id, bob_secret, resource=controller.url, room="overlap")
    claims = claims_of(answer)
    assert (claims["sub"], claims["project"], claims["room"]) == (bob_id, "acme", "overlap")
    # The secret with another DPoP key than the one bob's user key vouched for: not bob.
    url = f"{manager.url}/oauth/token"
    elsewhere = ProofKey.generate().proof("POST", url)
    answer = token_request(
        manager, bob_id, bob_secret, proof=elsewhere, resource=controller.url, room="overlap"
    )
    refusal(answer, 400, "invalid_target", "room")


def test_the_sdk_fetches_a_room_token_without_replacing_its_own(
    manager: Manager, controller: StandInController, deployed: tuple[ManagerClient, str, str]
) -> None:
    client, client_id, secret = deployed
    own = client.token
    access = client.fetch_token(client_id, secret, resource=controller.url, room="overlap")
    assert client.token == own
    claims = jwt.decode(access.access_token, options={"verify_signature": False})
    assert claims["aud"] == controller.url and claims["cnf"]["jkt"] == client.dpop_key.jkt
    with pytest.raises(ServerError) as caught:
        client.fetch_token(client_id, secret, resource=controller.url, room="nothing")
    assert caught.value.status == 400 and caught.value.check == "room"


# -- a compute server's own token --------------------------------------------------------


def server_request(manager: Manager, credentials: ServerCredentials, **form: str) -> httpx.Response:
    return token_request(
        manager, credentials.client_id, credentials.client_secret, proof=None, **form
    )


def test_a_compute_server_gets_a_bearer_token_for_the_manager_only(manager: Manager) -> None:
    credentials = manager.add_server(closed_port_url(), "c1")
    answer = server_request(manager, credentials)
    assert answer.json()["token_type"] == "Bearer"
    claims = claims_of(answer)
    assert (claims["aud"], claims["scope"], claims["sub"]) == (
        manager.url,
        "compute",
        credentials.client_id,
    )
    assert "cnf" not in claims and "project" not in claims
    refusal(server_request(manager, credentials, resource=credentials.url), 400,
            "invalid_target", "token-audience")  # fmt: skip


def test_a_removed_server_cannot_log_in(manager: Manager) -> None:
    credentials = manager.add_server(closed_port_url(), "c1")
    never_logged_in = manager.add_server(closed_port_url(), "c2")
    # c1's secret was accepted (the manager remembers it), c2's never was: both refused.
    assert server_request(manager, credentials).status_code == 200
    with manager.sessions() as session:
        operations.remove_server(session, "c1")
        operations.remove_server(session, "c2")
    for removed in (credentials, never_logged_in):
        answer = server_request(manager, removed)
        assert answer.status_code == 401 and answer.json() == {"error": "invalid_client"}


def test_new_server_credentials_refuse_the_old_secret(manager: Manager) -> None:
    old = manager.add_server(closed_port_url(), "c1")
    assert server_request(manager, old).status_code == 200  # remembered from now on
    with manager.sessions() as session:
        new = operations.rotate_server_credentials(session, "c1").credentials
    answer = server_request(manager, old)
    assert answer.status_code == 401 and answer.json() == {"error": "invalid_client"}
    assert server_request(manager, new).status_code == 200


def test_a_compute_token_reads_only_its_own_rooms_bundles(
    manager: Manager, controller: StandInController, deployed: tuple[ManagerClient, str, str]
) -> None:
    with manager.sessions() as session:
        room = session.query(Room).one()
        digest = room.function_digest
    url = f"{manager.url}/v1/functions/{digest}"
    own = manager.compute_token(controller.credentials)
    assert httpx.get(url, headers={"authorization": f"Bearer {own}"}).status_code == 200
    other = manager.compute_token()  # another registered server: hosts nothing of it
    assert httpx.get(url, headers={"authorization": f"Bearer {other}"}).status_code == 404
    # And no user routes at all.
    whoami = httpx.get(f"{manager.url}/v1/whoami", headers={"authorization": f"Bearer {own}"})
    assert whoami.status_code == 403 and whoami.json()["check"] == "token-scope"
