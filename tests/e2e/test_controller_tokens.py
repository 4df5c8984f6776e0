"""The Controller checks the manager's tokens on every request (defence in depth), and
shows each room only to tokens for that room of its project."""

from __future__ import annotations

from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.insecure.localstack import LocalStack
from tests.auth import call, dpop
from tests.e2e.conftest import User
from tests.e2e.helpers import deploy


def room_token(user: User, stack: LocalStack, name: str, project: str = "acme") -> str:
    return user.profile.access_token(resource=stack.compute_url, room=name, project=project)


def test_a_request_without_a_token_is_refused(stack: LocalStack) -> None:
    response = httpx.post(f"{stack.compute_url}/v1/rooms/any/attestation", json={"nonce": ""})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["check"] == "token-missing"


def test_a_user_token_cannot_deploy(
    stack: LocalStack, alice: User, bob: User, tmp_path: Path
) -> None:
    deploy(alice, bob, tmp_path, "tokens-deploy")
    token = room_token(alice, stack, "tokens-deploy")
    url = f"{stack.compute_url}/v1/rooms/tokens-deploy"
    response = call(alice.profile.proof_key, token, "PUT", url, json={"spec": {}})
    assert response.status_code == 403
    assert response.json()["check"] == "token-scope"


def test_a_token_signed_by_anyone_else_is_refused(
    stack: LocalStack, alice: User, bob: User, tmp_path: Path
) -> None:
    deploy(alice, bob, tmp_path, "tokens-forged")
    genuine = room_token(alice, stack, "tokens-forged")
    header = jwt.get_unverified_header(genuine)
    claims = jwt.decode(genuine, options={"verify_signature": False})
    forged = jwt.encode(
        {**claims, "scope": "delete", "sub": "cleanroom-manager"},
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": header["kid"], "typ": "at+jwt"},
    )
    response = httpx.delete(
        f"{stack.compute_url}/v1/rooms/tokens-forged", headers={"authorization": f"Bearer {forged}"}
    )
    assert response.status_code == 401
    assert response.json()["check"] == "token-signature"
    assert alice.client.state("tokens-forged")["state"] == "collecting"


def test_the_managers_token_is_refused_by_the_controller(
    stack: LocalStack, alice: User, bob: User, tmp_path: Path
) -> None:
    deploy(alice, bob, tmp_path, "tokens-audience")
    manager_token = alice.profile.access_token()
    url = f"{stack.compute_url}/v1/rooms/tokens-audience"
    response = call(alice.profile.proof_key, manager_token, "GET", url)
    assert response.status_code == 401
    assert response.json()["check"] == "token-audience"


def test_a_room_token_is_good_for_its_room_only(
    stack: LocalStack, alice: User, bob: User, tmp_path: Path
) -> None:
    deploy(alice, bob, tmp_path, "tokens-one")
    deploy(alice, bob, tmp_path, "tokens-two")
    token = room_token(alice, stack, "tokens-one")
    key = alice.profile.proof_key
    assert call(key, token, "GET", f"{stack.compute_url}/v1/rooms/tokens-one").status_code == 200
    other = call(key, token, "GET", f"{stack.compute_url}/v1/rooms/tokens-two")
    assert other.status_code == 403 and other.json()["check"] == "token-room"


def test_another_projects_room_is_not_found_by_its_token(
    stack: LocalStack, alice: User, bob: User, mallory: User, tmp_path: Path
) -> None:
    # globex deploys a room of the same name: acme's tokens never reach it, and a
    # globex token for that name never reaches acme's (the Controller tells them apart).
    deploy(alice, bob, tmp_path, "tokens-twin")
    (tmp_path / "globex").mkdir()
    deploy(mallory, alice, tmp_path / "globex", "tokens-twin")
    acme_state = alice.client.state("tokens-twin")
    globex_token = room_token(mallory, stack, "tokens-twin", project="globex")
    url = f"{stack.compute_url}/v1/rooms/tokens-twin"
    globex_state = call(mallory.profile.proof_key, globex_token, "GET", url).json()
    assert acme_state["worker_id"] != globex_state["worker_id"]


def test_a_copied_token_is_useless_without_its_proof(
    stack: LocalStack, alice: User, bob: User, tmp_path: Path
) -> None:
    deploy(alice, bob, tmp_path, "tokens-copied")
    token = room_token(alice, stack, "tokens-copied")
    url = f"{stack.compute_url}/v1/rooms/tokens-copied"
    bare = httpx.get(url, headers={"authorization": f"DPoP {token}"})
    assert bare.status_code == 401 and bare.json()["check"] == "dpop-proof"
    headers = dpop(alice.profile.proof_key, token, "GET", url)
    assert httpx.get(url, headers=headers).status_code == 200
    replayed = httpx.get(url, headers=headers)
    assert replayed.status_code == 401 and replayed.json()["check"] == "dpop-proof"


def test_health_needs_no_token(stack: LocalStack) -> None:
    assert httpx.get(f"{stack.compute_url}/v1/health").json()["status"] == "ok"
