"""The Controller checks the manager's bearer tokens on every request (defence in depth)."""

from __future__ import annotations

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.localstack import LocalStack
from tests.e2e.conftest import User


def test_a_request_without_a_token_is_refused(stack: LocalStack) -> None:
    response = httpx.post(f"{stack.compute_url}/v1/rooms/any/attestation", json={"nonce": ""})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_a_user_token_cannot_deploy(stack: LocalStack, alice: User) -> None:
    token = alice.profile.access_token()
    response = httpx.put(
        f"{stack.compute_url}/v1/rooms/sneaky",
        json={"spec": {}},
        headers={"authorization": f"Bearer {token}"},
    )
    assert response.status_code == 403
    assert response.json()["check"] == "token-scope"


def test_a_token_signed_by_anyone_else_is_refused(stack: LocalStack, alice: User) -> None:
    genuine = jwt.decode(alice.profile.access_token(), options={"verify_signature": False})
    header = jwt.get_unverified_header(alice.profile.access_token())
    forged = jwt.encode(
        {**genuine, "scope": "deploy"},
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": header["kid"]},
    )
    response = httpx.delete(
        f"{stack.compute_url}/v1/rooms/anything", headers={"authorization": f"Bearer {forged}"}
    )
    assert response.status_code == 401
    assert response.json()["check"] == "token-signature"


def test_health_needs_no_token(stack: LocalStack) -> None:
    assert httpx.get(f"{stack.compute_url}/v1/health").json()["status"] == "ok"
