"""What the tests share to call servers as a stock HTTP client would: tokens with their
DPoP proofs on raw requests, and tokens signed with a manager's key changed in one way."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.dpop import ProofKey
from cleanroom.manager.keys import KeyRing
from cleanroom.tokens import kid_of

TOKEN_REVOKED: dict[str, Any] = {
    "title": "Unauthorized",
    "status": 401,
    "detail": "the token was revoked",
    "check": "token-revoked",
    "expected": "a token not revoked",
    "actual": "revoked",
}
"""A server's ``401`` refusal of a revoked token, as every server words it (a Controller
may say it of any token it is shown: tests of what the client does then)."""


def dpop(key: ProofKey, token: str, method: str, url: str) -> dict[str, str]:
    """The headers of one raw request with a DPoP-bound ``token`` and a fresh proof."""
    return {"Authorization": f"DPoP {token}", "DPoP": key.proof(method, url, token)}


def call(key: ProofKey, token: str, method: str, url: str, **options: Any) -> httpx.Response:
    """One raw request with ``token`` and a fresh proof for exactly it."""
    headers = {**options.pop("headers", {}), **dpop(key, token, method, url)}
    return httpx.request(method, url, headers=headers, **options)


def signed_token(
    data_dir: Path,
    issuer: str,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    header: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A token signed with the manager's active key in ``data_dir`` (or ``key``), with
    the claims of a good user token for ``issuer`` changed by ``claims`` (None drops one)."""
    now = int(time.time())
    document: dict[str, Any] = {
        "iss": issuer,
        "aud": issuer,
        "sub": "client",
        "client_id": "client",
        "project": "acme",
        "scope": "user",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": secrets.token_urlsafe(16),
    }
    if "sub" in claims and "client_id" not in claims:
        document["client_id"] = claims["sub"]
    document.update(claims)
    document = {name: value for name, value in document.items() if value is not None}
    ring_key = KeyRing.open(data_dir).signing_key()
    headers = {"kid": kid_of(ring_key.public_key()), "typ": "at+jwt", **(header or {})}
    return jwt.encode(document, key or ring_key, algorithm="ES256", headers=headers)


def as_client(client: Any, method: str, url: str) -> dict[str, str]:
    """The headers of a raw request made with a ManagerClient's token and key."""
    assert client.token is not None, "the client has no token"
    return dpop(client.dpop_key, client.token, method, url)
