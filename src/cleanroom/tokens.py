"""Access tokens: JWTs the management server signs (ES256) and every server verifies.

The tokens follow RFC 9068 (JWT access tokens: header ``typ`` ``at+jwt``) and are
restricted to one audience (RFC 8707 resource indicators): a token for the
manager (``aud`` the manager's URL) is refused by every Controller, and a token
for a Controller (``aud`` that compute server's registered URL) by the manager
and every other Controller. Tokens are defence in depth, not the security
boundary (docs/api.md, "Tokens"): every message that matters is bound
cryptographically elsewhere. Still, a token is accepted only if every one of
these holds, each a named check:

- ``token-format``: three base64url parts with a JSON header and claims;
- ``token-algorithm``: the header's ``alg`` is ``ES256`` (``none``, ``HS256`` with
  the public key as a secret, and everything else are refused before any key
  is touched);
- ``token-type``: the header's ``typ`` is ``at+jwt`` (a DPoP proof or another JWT
  signed by the same key is no access token);
- ``token-key``: the header's ``kid`` names a key of the issuer's JWKS;
- ``token-signature``: the signature verifies under that key;
- ``token-claim``: ``iss``, ``aud``, ``sub``, ``client_id``, ``scope``, ``iat``,
  ``nbf``, ``exp`` and ``jti`` are present with the right JSON types, and
  ``project``, ``room`` and ``cnf`` (``{"jkt": …}``) have them when present;
- ``token-issuer`` and ``token-audience``: exactly the expected ones (``aud`` is
  one string: a token valid at several resources is refused everywhere);
- ``token-not-yet-valid`` and ``token-expired``: ``nbf`` and ``exp`` against the
  (injected) clock, with a small leeway for clock skew between machines;
- ``token-scope``: when the caller asks for a scope, the token carries it;
- ``token-revoked``: the token's ``jti`` is not revoked, its client is not
  disabled, and it was not issued before its client's ``tokens_not_before``;
- ``token-revocation-stale`` (a Controller only): the revocation list it checks
  against was fetched from the manager less than ``max_age`` seconds ago.

What a token is for is its ``scope`` (:data:`SCOPES`); a token that names a
``room`` is good for that room of ``project`` only (``token-room``, checked by
the server that knows the route), and one with ``cnf.jkt`` only with a DPoP
proof by that key (:mod:`cleanroom.dpop`).

:class:`TokenIssuer` signs with the active key of a :class:`SigningKeys` source
(the manager's key ring, :mod:`cleanroom.manager.keys`) and serves its JWKS;
:class:`TokenVerifier` is what the manager and the Controllers use to check a
token, with keys given, read from the issuer's key ring, or fetched from its
JWKS URL. Revocation is checked by a :class:`RevocationCheck`: the manager's
reads its database, a Controller's is a :class:`RevocationFeed` of the
manager's ``GET /v1/revocations``.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from cleanroom.errors import CheckFailed
from cleanroom.protocol.encoding import b64u, sha256
from cleanroom.protocol.keys import spki
from cleanroom.tls import tls_context

ALGORITHM = "ES256"
TOKEN_TYPE = "at+jwt"  # noqa: S105 - a JWT type, not a secret
"""The ``typ`` of an access token's header (RFC 9068 §2.1)."""
DEFAULT_LIFETIME = 3600
OPERATION_LIFETIME = 15
"""Seconds a token for one operation on one room (deploy, delete, status) lives."""
DEFAULT_LEEWAY = 30
"""Seconds of clock skew tolerated on ``nbf`` and ``exp``."""
JWKS_REFETCH_INTERVAL = 30.0
"""An unknown ``kid`` refetches the JWKS at most this often (seconds)."""
REVOCATION_REFRESH = 5.0
"""A Controller refetches the manager's revocation list at most this often (seconds)."""
REVOCATION_MAX_AGE = 60.0
"""A Controller whose revocation list is older than this refuses every token (seconds)."""

SCOPE_USER = "user"
"""A user's token: at the manager, or at a Controller for one room (DPoP-bound)."""
SCOPE_DEPLOY = "deploy"
"""The manager's token to deploy one room on one Controller, once."""
SCOPE_DELETE = "delete"
"""The manager's token to delete one room on one Controller, once."""
SCOPE_STATUS = "status"
"""The manager's token to ask one Controller about one room, once (health checks)."""
SCOPE_COMPUTE = "compute"
"""A compute server's token at the manager: its bundles and the revocation list."""
SCOPES = (SCOPE_USER, SCOPE_DEPLOY, SCOPE_DELETE, SCOPE_STATUS, SCOPE_COMPUTE)
OPERATION_SCOPES = (SCOPE_DEPLOY, SCOPE_DELETE, SCOPE_STATUS)
MANAGER_SUBJECT = "cleanroom-manager"
"""The ``sub`` of the manager's own tokens (one operation on one room), which no client has."""

REQUIRED_CLAIMS: Mapping[str, type] = {
    "iss": str,
    "aud": str,
    "sub": str,
    "client_id": str,
    "scope": str,
    "iat": int,
    "nbf": int,
    "exp": int,
    "jti": str,
}
OPTIONAL_CLAIMS: Mapping[str, type] = {"project": str, "room": str, "cnf": dict}

Clock = Callable[[], float]

_log = logging.getLogger("cleanroom.tokens")

_FORBIDDEN = {"token-scope", "token-room"}
_UNAVAILABLE = {"token-revocation-stale", "dpop-replay-cache"}
_TOO_MANY = {"dpop-replay-share"}


def signed_claims(token: str, key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    """The claims of ``token``, a JWS that must be signed by ``key`` with ES256.

    PyJWT checks the signature (and the algorithm) only: its caller checks every claim
    against our clock, so each refusal names its check and its values. Access tokens and
    DPoP proofs are both read this way. Raises ``jwt.InvalidSignatureError`` for a bad
    signature and another ``jwt.InvalidTokenError`` for anything unreadable.
    """
    claims: dict[str, Any] = jwt.decode(
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
    return claims


class TokenError(CheckFailed):
    """A bearer token (or its DPoP proof) was refused; ``check`` names the rule.

    ``http_status`` is the answer a server gives: 403 for a valid token that is not
    for this operation or room (``token-scope``, ``token-room``), 503 when the
    server cannot tell whether the token is revoked or the proof replayed
    (``token-revocation-stale``, ``dpop-replay-cache``), 429 when the proof's key has
    made more requests than the server can remember (``dpop-replay-share``), 401 for
    every other refusal.
    """

    def __init__(
        self,
        check: str,
        expected: object,
        actual: object,
        message: str,
        hint: str | None = None,
    ) -> None:
        super().__init__(check, expected, actual, message, hint)
        if check in _FORBIDDEN:
            self.http_status = 403
        elif check in _UNAVAILABLE:
            self.http_status = 503
        elif check in _TOO_MANY:
            self.http_status = 429
        else:
            self.http_status = 401


@dataclass(frozen=True)
class TokenClaims:
    """The claims of a verified token that callers act on.

    ``project`` and ``room``: what the token is restricted to, if anything;
    ``jkt``: the thumbprint of the DPoP key it is bound to (``cnf.jkt``), if any.
    """

    sub: str
    client_id: str
    audience: str
    scope: str
    iat: int
    exp: int
    jti: str
    project: str | None = None
    room: str | None = None
    jkt: str | None = None

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self.scope.split())


def kid_of(key: ec.EllipticCurvePublicKey) -> str:
    """A key's ``kid``: b64u(SHA-256(DER SPKI))."""
    return b64u(sha256(spki(key)))


def client_digest(client_id: str) -> str:
    """How the revocation list names a client: b64u(SHA-256(client id))."""
    return b64u(sha256(client_id.encode("utf-8")))


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    """The RFC 7517 JWK of a P-256 verification key, with its ``kid``."""
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(key, as_dict=True)
    jwk.update(kid=kid_of(key), use="sig", alg=ALGORITHM)
    return jwk


# -- signing ---------------------------------------------------------------------------


class SigningKeys(Protocol):
    """Where an issuer's keys come from: the one that signs now, and those published."""

    def signing_key(self) -> ec.EllipticCurvePrivateKey:
        """The key new tokens are signed with."""
        ...

    def public_keys(self) -> Mapping[str, ec.EllipticCurvePublicKey]:
        """Every key the JWKS serves, by ``kid``: the signing key, keys about to sign,
        and retired keys whose tokens may not have expired yet."""
        ...


class StaticSigningKey:
    """One key that signs and is the only one published (tests, fixed setups)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        self._public = {kid_of(key.public_key()): key.public_key()}

    def signing_key(self) -> ec.EllipticCurvePrivateKey:
        return self._key

    def public_keys(self) -> Mapping[str, ec.EllipticCurvePublicKey]:
        return self._public


class TokenIssuer:
    """Signs access tokens for one issuer (the manager's public URL) and serves its JWKS.

    ``keys`` is a :class:`SigningKeys` source (a rotating key ring, such as the
    manager's :class:`cleanroom.manager.keys.KeyRing`) or one private key. The source
    is handed in: this module holds no private key of its own, and the Controllers
    import it only to verify. ``lifetime`` is how long a user's or compute server's
    token lives; a token for one operation lives :data:`OPERATION_LIFETIME` seconds.
    """

    def __init__(
        self,
        issuer: str,
        keys: SigningKeys | ec.EllipticCurvePrivateKey,
        *,
        lifetime: int = DEFAULT_LIFETIME,
        clock: Clock = time.time,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.lifetime = lifetime
        self.keys: SigningKeys = (
            StaticSigningKey(keys) if isinstance(keys, ec.EllipticCurvePrivateKey) else keys
        )
        self._clock = clock

    @property
    def kid(self) -> str:
        """The ``kid`` new tokens are signed with."""
        return kid_of(self.keys.signing_key().public_key())

    def issue(
        self,
        sub: str,
        *,
        audience: str,
        scope: str,
        client_id: str | None = None,
        project: str | None = None,
        room: str | None = None,
        jkt: str | None = None,
        lifetime: int | None = None,
    ) -> tuple[str, int]:
        """A signed token for ``sub`` at ``audience`` with ``scope``; and its lifetime (s).

        ``client_id`` defaults to ``sub``; ``project`` and ``room`` restrict it;
        ``jkt`` binds it to a DPoP key (``cnf.jkt``). ``lifetime`` defaults to this
        issuer's for user and compute tokens, :data:`OPERATION_LIFETIME` for the rest.
        """
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        if lifetime is None:
            lifetime = OPERATION_LIFETIME if scope in OPERATION_SCOPES else self.lifetime
        key = self.keys.signing_key()
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": audience.rstrip("/"),
            "sub": sub,
            "client_id": client_id if client_id is not None else sub,
            "scope": scope,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": secrets.token_urlsafe(16),
        }
        if project is not None:
            claims["project"] = project
        if room is not None:
            claims["room"] = room
        if jkt is not None:
            claims["cnf"] = {"jkt": jkt}
        headers = {"kid": kid_of(key.public_key()), "typ": TOKEN_TYPE}
        return jwt.encode(claims, key, algorithm=ALGORITHM, headers=headers), lifetime

    def jwks(self) -> dict[str, Any]:
        """The JWKS document (``{"keys": [...]}``) served at ``/.well-known/jwks.json``."""
        return {"keys": [public_jwk(key) for key in self.keys.public_keys().values()]}


# -- revocation ------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientStatus:
    """What revocation knows of a token's client: disabled, or a ``tokens_not_before``."""

    not_before: int = 0
    disabled: bool = False


def check_not_revoked(claims: TokenClaims, *, revoked: bool, client: ClientStatus | None) -> None:
    """Raise ``token-revoked`` when ``claims`` belong to a token that no longer counts.

    ``revoked``: its ``jti`` is on the revocation list; ``client``: what is known of
    its ``sub`` (None: nothing, e.g. the manager's own deploy tokens).
    """
    if revoked:
        raise TokenError(
            "token-revoked",
            "a jti that is not revoked",
            claims.jti,
            "the token was revoked",
            hint="fetch a new token",
        )
    if client is None:
        return
    if client.disabled:
        raise TokenError(
            "token-revoked",
            f"client {claims.sub} enabled",
            "disabled",
            "the token's client is disabled",
        )
    if claims.iat < client.not_before:
        raise TokenError(
            "token-revoked",
            f"iat at or after {client.not_before} (the client's tokens_not_before)",
            claims.iat,
            "the token was issued before its client's credentials were rotated or disabled",
            hint="fetch a new token",
        )


class RevocationCheck(Protocol):
    """Raises ``token-revoked`` (or ``token-revocation-stale``) for a token that must not
    count any more; returns for one that does."""

    def check(self, claims: TokenClaims) -> None: ...


@dataclass(frozen=True)
class Revocations:
    """The manager's revocation list (``GET /v1/revocations``, docs/api.md "Tokens").

    ``tokens``: revoked jtis with their ``exp``; ``clients``: every client whose
    tokens are refused wholesale (disabled) or up to a time (``tokens_not_before``),
    by :func:`client_digest` (the list names no client: a compute server learns
    client ids only from the tokens it is shown); ``now``: the manager's time when
    it answered.
    """

    now: int
    tokens: Mapping[str, int]
    clients: Mapping[str, ClientStatus]

    def check(self, claims: TokenClaims) -> None:
        """``token-revoked`` if the list revokes ``claims``."""
        check_not_revoked(
            claims,
            revoked=claims.jti in self.tokens,
            client=self.clients.get(client_digest(claims.sub)),
        )

    def to_json(self) -> dict[str, Any]:
        """The document as the manager serves it."""
        return {
            "now": self.now,
            "tokens": [{"jti": jti, "exp": exp} for jti, exp in sorted(self.tokens.items())],
            "clients": [
                {
                    "client_sha256": digest,
                    "not_before": status.not_before,
                    "disabled": status.disabled,
                }
                for digest, status in sorted(self.clients.items())
            ],
        }

    @classmethod
    def from_json(cls, document: object) -> Revocations:
        """The list in ``document``; ``ValueError`` naming the first bad member."""

        def integer(value: object, what: str) -> int:
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{what} is not an integer: {value!r:.80}")
            return value

        def text(value: object, what: str) -> str:
            if not isinstance(value, str):
                raise ValueError(f"{what} is not a string: {value!r:.80}")
            return value

        if not isinstance(document, dict):
            raise ValueError(f"not a JSON object: {type(document).__name__}")
        entries, clients = document.get("tokens"), document.get("clients")
        if not isinstance(entries, list) or not isinstance(clients, list):
            raise ValueError("'tokens' and 'clients' must be lists")
        tokens: dict[str, int] = {}
        for entry in entries:
            if not isinstance(entry, dict):
                raise ValueError(f"a token entry is not an object: {entry!r:.80}")
            tokens[text(entry.get("jti"), "tokens[].jti")] = integer(entry.get("exp"), "exp")
        statuses: dict[str, ClientStatus] = {}
        for entry in clients:
            if not isinstance(entry, dict) or not isinstance(entry.get("disabled"), bool):
                raise ValueError(f"a client entry lacks a boolean 'disabled': {entry!r:.80}")
            statuses[text(entry.get("client_sha256"), "clients[].client_sha256")] = ClientStatus(
                not_before=integer(entry.get("not_before"), "clients[].not_before"),
                disabled=entry["disabled"],
            )
        return cls(now=integer(document.get("now"), "now"), tokens=tokens, clients=statuses)


class RevocationFeed:
    """A Controller's copy of the manager's revocation list, kept fresh; fails closed.

    :meth:`check` refetches the list from ``url`` when the copy is ``refresh``
    seconds old (so a revocation reaches this server within ``refresh`` seconds
    plus one fetch), then checks the token against it. When the list could not be
    fetched for ``max_age`` seconds (or never was), every token is refused with
    ``token-revocation-stale``: a Controller that cannot learn of revocations must
    not go on accepting tokens that may be revoked. The manager serves the list
    only to registered compute servers: ``headers()`` gives the headers of each
    fetch (the compute server's own token).
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Callable[[], Mapping[str, str]] | None = None,
        refresh: float = REVOCATION_REFRESH,
        max_age: float = REVOCATION_MAX_AGE,
        clock: Clock = time.monotonic,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 5.0,
    ) -> None:
        if not 0 < refresh <= max_age:
            raise ValueError(f"need 0 < refresh <= max_age, got {refresh} and {max_age}")
        self.url = url
        self._headers = headers
        self.refresh = refresh
        self.max_age = max_age
        self._clock = clock
        self._transport = transport
        self._timeout = timeout
        self._lock = threading.Lock()
        self._list: Revocations | None = None
        self._fetched_at: float | None = None  # last success (our clock)
        self._tried_at: float | None = None  # last attempt
        self._failure = "not fetched yet"

    def _fetch(self) -> Revocations:
        with httpx.Client(
            transport=self._transport, timeout=self._timeout, verify=tls_context()
        ) as client:
            headers = {"Cache-Control": "no-cache"}
            if self._headers is not None:
                headers.update(self._headers())
            response = client.get(self.url, headers=headers)
            response.raise_for_status()
            return Revocations.from_json(response.json())

    def current(self) -> Revocations:
        """The list, refetched first if due; ``token-revocation-stale`` if too old."""
        with self._lock:
            now = self._clock()
            if self._tried_at is None or now - self._tried_at >= self.refresh:
                self._tried_at = now
                try:
                    self._list = self._fetch()
                except (httpx.HTTPError, ValueError, CheckFailed) as error:
                    self._failure = f"{type(error).__name__}: {error}"
                    _log.warning("cannot refresh the revocation list from %s: %s", self.url, error)
                else:
                    self._fetched_at = now
            if self._list is None or self._fetched_at is None:
                raise TokenError(
                    "token-revocation-stale",
                    f"the revocation list of {self.url}",
                    self._failure,
                    "this server could never fetch the manager's revocation list",
                )
            age = now - self._fetched_at
            if age > self.max_age:
                raise TokenError(
                    "token-revocation-stale",
                    f"a revocation list at most {self.max_age:g} s old",
                    f"{age:.0f} s old (last failure: {self._failure})",
                    "this server cannot reach the manager's revocation list",
                )
            return self._list

    def check(self, claims: TokenClaims) -> None:
        """``token-revoked`` or ``token-revocation-stale`` unless the token still counts."""
        self.current().check(claims)


# -- verification ----------------------------------------------------------------------


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
    """Checks access tokens of one issuer for one audience (every check: the module
    docstring).

    ``audience`` is this server's own resource identifier: the manager's public URL
    at the manager, the compute server's registered URL at its Controller.

    Give the keys in exactly one way: as a JWKS document (``keys=``), as a function
    returning the issuer's current keys (``key_source=``, the manager's own key
    ring), or as the URL to fetch the JWKS from (``jwks_url=``); fetched keys are
    cached, and a token with an unknown ``kid`` refetches the JWKS at most once per
    ``jwks_refetch_interval`` seconds. ``revocations``, when given, is asked last
    about every token that passed all other checks.
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        jwks_url: str | None = None,
        keys: Mapping[str, Any] | None = None,
        key_source: Callable[[], Mapping[str, ec.EllipticCurvePublicKey]] | None = None,
        revocations: RevocationCheck | None = None,
        clock: Clock = time.time,
        leeway: int = DEFAULT_LEEWAY,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
        jwks_refetch_interval: float = JWKS_REFETCH_INTERVAL,
    ) -> None:
        if [jwks_url, keys, key_source].count(None) != 2:
            raise ValueError("give exactly one of jwks_url, keys and key_source")
        self.issuer = issuer.rstrip("/")
        self.audience = audience.rstrip("/")
        self.revocations = revocations
        self._jwks_url = jwks_url
        self._key_source = key_source
        self._clock = clock
        self._leeway = leeway
        self._transport = transport
        self._timeout = timeout
        self._refetch_interval = jwks_refetch_interval
        self._lock = threading.Lock()
        self._fetched_at: float | None = None
        self._keys = _parse_jwks(dict(keys)) if keys is not None else {}

    def _fetch(self, url: str) -> None:
        try:
            with httpx.Client(
                transport=self._transport, timeout=self._timeout, verify=tls_context()
            ) as client:
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
        if self._key_source is not None:
            known = self._key_source()
            key = known.get(kid)
        else:
            with self._lock:
                key = self._keys.get(kid)
                now = self._clock()
                due = self._fetched_at is None or now - self._fetched_at >= self._refetch_interval
                if key is None and self._jwks_url is not None and due:
                    self._fetched_at = now
                    self._fetch(self._jwks_url)
                    key = self._keys.get(kid)
                known = self._keys
        if key is None:
            raise TokenError(
                "token-key",
                f"a kid of the issuer's keys {sorted(known)}",
                kid,
                "the token is signed by an unknown key",
            )
        return key

    def verify(self, token: str, scope: str | None = None) -> TokenClaims:
        """The claims of ``token`` if it passes every check, else :class:`TokenError`.

        ``scope``, when given, must be one of the token's space-separated scopes.
        """
        claims = self.issued_claims(token)
        if claims.audience != self.audience:
            raise TokenError(
                "token-audience",
                self.audience,
                claims.audience,
                "the token is for another server (ask the manager for a token for this one)",
            )
        if scope is not None and scope not in claims.scopes:
            raise TokenError("token-scope", scope, claims.scope, "the token lacks the scope")
        if self.revocations is not None:
            self.revocations.check(claims)
        return claims

    def issued_claims(self, token: str) -> TokenClaims:
        """The claims of a token this issuer signed that is valid now, *for any audience*.

        Every check but ``token-audience``, ``token-scope`` and revocation: for the
        manager's revocation endpoint only, where whoever holds a token may end it
        wherever it was meant to be used. Everything else calls :meth:`verify`.
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
        if header.get("typ") != TOKEN_TYPE:
            raise TokenError(
                "token-type", TOKEN_TYPE, header.get("typ"), "the JWT is not an access token"
            )
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise TokenError("token-key", "a kid in the header", kid, "the token names no key")
        key = self._key(kid)
        try:
            claims = signed_claims(token, key)
        except jwt.InvalidSignatureError as error:
            raise TokenError(
                "token-signature", f"a signature by key {kid}", "a bad signature", str(error)
            ) from error
        except jwt.InvalidTokenError as error:
            raise TokenError(
                "token-format", "a JWS compact serialisation", type(error).__name__, str(error)
            ) from error
        return self._check_claims(claims)

    def _check_claims(self, claims: dict[str, Any]) -> TokenClaims:
        for name, kind in REQUIRED_CLAIMS.items():
            value = claims.get(name)
            if value is None or isinstance(value, bool) or not isinstance(value, kind):
                raise TokenError(
                    "token-claim",
                    f"claim {name!r} of type {kind.__name__}",
                    repr(value)[:80],
                    f"the token lacks a valid {name!r} claim",
                )
        for name, kind in OPTIONAL_CLAIMS.items():
            value = claims.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
                raise TokenError(
                    "token-claim",
                    f"claim {name!r} absent or of type {kind.__name__}",
                    repr(value)[:80],
                    f"the token's {name!r} claim is not valid",
                )
        jkt: str | None = None
        if "cnf" in claims:
            jkt = claims["cnf"].get("jkt")
            if not isinstance(jkt, str) or not jkt:
                raise TokenError(
                    "token-claim",
                    "a cnf claim with a jkt (RFC 9449)",
                    repr(claims["cnf"])[:80],
                    "the token's confirmation claim names no key",
                )
        if claims["iss"] != self.issuer:
            raise TokenError("token-issuer", self.issuer, claims["iss"], "wrong issuer")
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
        return TokenClaims(
            sub=claims["sub"],
            client_id=claims["client_id"],
            audience=claims["aud"],
            scope=claims["scope"],
            iat=claims["iat"],
            exp=claims["exp"],
            jti=claims["jti"],
            project=claims.get("project"),
            room=claims.get("room"),
            jkt=jkt,
        )
