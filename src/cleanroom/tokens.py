"""Access tokens: JWTs the management server signs (ES256) and every server verifies.

Tokens are defence in depth, not the security boundary (docs/api.md, "Tokens"):
every message that matters is bound cryptographically elsewhere. Still, a token
is accepted only if every one of these holds, each a named check:

- ``token-format``: three base64url parts with a JSON header and claims;
- ``token-algorithm``: the header's ``alg`` is ``ES256`` (``none``, ``HS256`` with
  the public key as a secret, and everything else are refused before any key
  is touched);
- ``token-key``: the header's ``kid`` names a key of the issuer's JWKS;
- ``token-signature``: the signature verifies under that key;
- ``token-claim``: ``iss``, ``aud``, ``sub``, ``project``, ``scope``, ``iat``,
  ``nbf``, ``exp`` and ``jti`` are all present with the right JSON types;
- ``token-issuer`` and ``token-audience``: exactly the expected ones;
- ``token-not-yet-valid`` and ``token-expired``: ``nbf`` and ``exp`` against the
  (injected) clock, with a small leeway for clock skew between machines;
- ``token-scope``: when the caller asks for a scope, the token carries it.

:class:`TokenIssuer` holds the manager's signing key (``token-signing-key.pem`` in
its data directory, created on first start, mode 0600) and serves its JWKS;
:class:`TokenVerifier` is what the manager and the Controllers use to check a
token, with keys given or fetched from the issuer's JWKS URL.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from cleanroom.errors import CheckFailed
from cleanroom.protocol.encoding import b64u, sha256
from cleanroom.protocol.keys import spki

AUDIENCE = "cleanroom"
ALGORITHM = "ES256"
SIGNING_KEY_FILE = "token-signing-key.pem"
DEFAULT_LIFETIME = 3600
DEFAULT_LEEWAY = 30
"""Seconds of clock skew tolerated on ``nbf`` and ``exp``."""
JWKS_REFETCH_INTERVAL = 30.0
"""An unknown ``kid`` refetches the JWKS at most this often (seconds)."""

SCOPE_USER = "user"
SCOPE_DEPLOY = "deploy"

REQUIRED_CLAIMS: Mapping[str, type | tuple[type, ...]] = {
    "iss": str,
    "aud": (str, list),
    "sub": str,
    "project": str,
    "scope": str,
    "iat": int,
    "nbf": int,
    "exp": int,
    "jti": str,
}

Clock = Callable[[], float]


class TokenError(CheckFailed):
    """A bearer token was refused; ``check`` names the rule (``token-expired``, …).

    ``http_status`` is the answer a server gives: 403 for a valid token that lacks
    the scope (``token-scope``), 401 for every other refusal.
    """

    @property
    def http_status(self) -> int:
        return 403 if self.check == "token-scope" else 401


@dataclass(frozen=True)
class TokenClaims:
    """The claims of a verified token that callers act on."""

    sub: str
    project: str
    scope: str
    exp: int
    jti: str


def kid_of(key: ec.EllipticCurvePublicKey) -> str:
    """A key's ``kid``: b64u(SHA-256(DER SPKI))."""
    return b64u(sha256(spki(key)))


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    """The RFC 7517 JWK of a P-256 verification key, with its ``kid``."""
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(key, as_dict=True)
    jwk.update(kid=kid_of(key), use="sig", alg=ALGORITHM)
    return jwk


def load_or_create_signing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The P-256 key in PEM file ``path``; created (mode 0600) when it does not exist."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two managers starting at once must not overwrite each other's key.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)
        return key
    loaded = serialization.load_pem_private_key(data, password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp256r1":
        raise ValueError(f"{path} does not hold a P-256 private key")
    return loaded


class TokenIssuer:
    """Signs access tokens for one issuer (the manager's public URL) and serves its JWKS."""

    def __init__(
        self,
        issuer: str,
        key: ec.EllipticCurvePrivateKey,
        *,
        lifetime: int = DEFAULT_LIFETIME,
        audience: str = AUDIENCE,
        clock: Clock = time.time,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.lifetime = lifetime
        self._key = key
        self._clock = clock
        self.kid = kid_of(key.public_key())

    @classmethod
    def load(
        cls,
        data_dir: Path,
        issuer: str,
        *,
        lifetime: int = DEFAULT_LIFETIME,
        clock: Clock = time.time,
    ) -> TokenIssuer:
        """The issuer whose key is ``<data_dir>/token-signing-key.pem`` (created if absent)."""
        key = load_or_create_signing_key(data_dir / SIGNING_KEY_FILE)
        return cls(issuer, key, lifetime=lifetime, clock=clock)

    def issue(self, sub: str, project: str, scope: str) -> tuple[str, int]:
        """A signed token for ``sub`` of ``project`` with ``scope``; and its lifetime (s)."""
        now = int(self._clock())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "project": project,
            "scope": scope,
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime,
            "jti": secrets.token_urlsafe(16),
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})
        return token, self.lifetime

    def jwks(self) -> dict[str, Any]:
        """The JWKS document (``{"keys": [...]}``) served at ``/.well-known/jwks.json``."""
        return {"keys": [public_jwk(self._key.public_key())]}


def _parse_jwks(document: object) -> dict[str, ec.EllipticCurvePublicKey]:
    """The P-256 keys of a JWKS document by ``kid``; other keys are ignored."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise TokenError("token-key", "a JWKS document", type(document).__name__, "bad JWKS")
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            continue
        if not isinstance(jwk.get("kid"), str):
            continue
        try:
            key = ECAlgorithm.from_jwk(json.dumps(jwk))
        except (jwt.InvalidKeyError, ValueError, TypeError):
            continue
        if isinstance(key, ec.EllipticCurvePublicKey):
            keys[jwk["kid"]] = key
    return keys


class TokenVerifier:
    """Checks access tokens of one issuer (see the module docstring for every check).

    Give the keys either as a JWKS document (``keys=``) or as the URL to fetch it
    from (``jwks_url=``); fetched keys are cached, and a token with an unknown
    ``kid`` refetches the JWKS at most once per 30 seconds.
    """

    def __init__(
        self,
        issuer: str,
        audience: str = AUDIENCE,
        *,
        jwks_url: str | None = None,
        keys: Mapping[str, Any] | None = None,
        clock: Clock = time.time,
        leeway: int = DEFAULT_LEEWAY,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        if (jwks_url is None) == (keys is None):
            raise ValueError("give exactly one of jwks_url and keys")
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self._jwks_url = jwks_url
        self._clock = clock
        self._leeway = leeway
        self._transport = transport
        self._timeout = timeout
        self._lock = threading.Lock()
        self._fetched_at: float | None = None
        self._keys = _parse_jwks(dict(keys)) if keys is not None else {}

    def _fetch(self, url: str) -> None:
        try:
            with httpx.Client(transport=self._transport, timeout=self._timeout) as client:
                response = client.get(url)
                response.raise_for_status()
                document = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise TokenError(
                "token-key",
                f"the JWKS at {url}",
                f"{type(error).__name__}: {error}",
                "cannot fetch the issuer's keys",
            ) from error
        self._keys = _parse_jwks(document)

    def _key(self, kid: str) -> ec.EllipticCurvePublicKey:
        with self._lock:
            key = self._keys.get(kid)
            now = self._clock()
            due = self._fetched_at is None or now - self._fetched_at >= JWKS_REFETCH_INTERVAL
            if key is None and self._jwks_url is not None and due:
                self._fetched_at = now
                self._fetch(self._jwks_url)
                key = self._keys.get(kid)
            if key is None:
                raise TokenError(
                    "token-key",
                    f"a kid of the issuer's keys {sorted(self._keys)}",
                    kid,
                    "the token is signed by an unknown key",
                )
            return key

    def verify(self, token: str, scope: str | None = None) -> TokenClaims:
        """The claims of ``token`` if it passes every check, else :class:`TokenError`.

        ``scope``, when given, must be one of the token's space-separated scopes.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as error:
            raise TokenError(
                "token-format", "a JWS compact serialisation", "unparseable", str(error)
            ) from error
        algorithm = header.get("alg")
        if algorithm != ALGORITHM:
            raise TokenError(
                "token-algorithm", ALGORITHM, algorithm, "the token uses another algorithm"
            )
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise TokenError("token-key", "a kid in the header", kid, "the token names no key")
        key = self._key(kid)
        try:
            # PyJWT checks the signature only; every claim is checked below against
            # our clock, so each refusal names its check and its values.
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                options={
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                    "verify_sub": False,
                    "verify_jti": False,
                },
            )
        except jwt.InvalidSignatureError as error:
            raise TokenError(
                "token-signature", f"a signature by key {kid}", "a bad signature", str(error)
            ) from error
        except jwt.InvalidTokenError as error:
            raise TokenError(
                "token-format", "a JWS compact serialisation", type(error).__name__, str(error)
            ) from error
        return self._check_claims(claims, scope)

    def _check_claims(self, claims: dict[str, Any], scope: str | None) -> TokenClaims:
        for name, kind in REQUIRED_CLAIMS.items():
            value = claims.get(name)
            if value is None or isinstance(value, bool) or not isinstance(value, kind):
                raise TokenError(
                    "token-claim",
                    f"claim {name!r} of type {kind}",
                    repr(value),
                    f"the token lacks a valid {name!r} claim",
                )
        if claims["iss"] != self.issuer:
            raise TokenError("token-issuer", self.issuer, claims["iss"], "wrong issuer")
        audience = claims["aud"]
        if audience != self.audience and not (
            isinstance(audience, list) and self.audience in audience
        ):
            raise TokenError("token-audience", self.audience, audience, "wrong audience")
        now = int(self._clock())
        if claims["nbf"] > now + self._leeway:
            raise TokenError(
                "token-not-yet-valid",
                f"nbf at most {now + self._leeway}",
                claims["nbf"],
                "the token is not valid yet",
            )
        if claims["exp"] <= now - self._leeway:
            raise TokenError(
                "token-expired",
                f"exp after {now - self._leeway}",
                claims["exp"],
                "the token has expired",
                hint="fetch a new token",
            )
        if scope is not None and scope not in claims["scope"].split():
            raise TokenError("token-scope", scope, claims["scope"], "the token lacks the scope")
        return TokenClaims(
            sub=claims["sub"],
            project=claims["project"],
            scope=claims["scope"],
            exp=claims["exp"],
            jti=claims["jti"],
        )
