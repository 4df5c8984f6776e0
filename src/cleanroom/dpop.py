"""DPoP (RFC 9449): every request proves it comes from the holder of the token's key.

A user's access tokens are bound to a P-256 key: the token's ``cnf.jkt`` claim is
the key's RFC 7638 thumbprint. With every request the client sends, in the
``DPoP`` header, a fresh *proof*: a JWT signed by that key for exactly that request
(its method ``htm``, its URL without query ``htu``, the token's hash ``ath``, a
unique ``jti`` and the time ``iat``). A token copied by whoever it was shown to is
worthless without the private key, and a proof copied with it is worth one
request that has already been made.

A server accepts a proof only if every one of these holds, each refusal the check
``dpop-proof`` naming what it expected and what it found:

- exactly one ``DPoP`` header, a JWS whose header has ``typ`` ``dpop+jwt``, ``alg``
  ``ES256`` and a ``jwk`` that is a public P-256 key (no private part);
- the signature verifies under that ``jwk``;
- ``jti`` (at most 128 characters), ``htm``, ``htu`` and ``iat`` are present with
  the right JSON types;
- ``htm`` is the request's method and ``htu`` the URL the server is reached at
  (its public URL and the request's path), both compared after RFC 3986
  normalisation (case of scheme and host, default port);
- ``iat`` is at most :data:`WINDOW` seconds away from the server's clock, either
  way (60 s: the age of a proof, and the clock skew tolerated);
- ``ath`` is b64u(SHA-256(the access token)), when the proof comes with one;
- the ``jwk``'s thumbprint is the token's ``cnf.jkt``;
- its ``jti`` was not seen in a proof within the window (:class:`ReplayCache`), and
  its key has fewer than :data:`REPLAY_SHARE` proofs remembered
  (``dpop-replay-share``, 429: one client cannot fill the cache for everyone).

No server nonce (``DPoP-Nonce``) is used: the window bounds how long a proof
counts, and the replay cache remembers each ``jti`` for as long. The cache lives
in the server process's memory: a restarted server forgets it, so a proof
captured in transit could be replayed once within 60 s of a restart (TLS is what
keeps proofs from being captured in transit; a server that is shown a proof can
use it nowhere else, since ``htu`` names that server).

:class:`ProofKey` makes proofs (the client side); :class:`DPoPAuth` is an httpx
authentication that adds token and proof to every request.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from cleanroom.protocol.encoding import b64u, canonical, sha256
from cleanroom.tokens import TokenError, signed_claims

PROOF_TYPE = "dpop+jwt"
ALGORITHM = "ES256"
WINDOW = 60
"""Seconds a proof's ``iat`` may be away from the server's clock, either way."""
MAX_JTI = 128
"""The longest ``jti`` a proof may carry (a client's are 22 characters)."""
REPLAY_CAPACITY = 200_000
"""Proofs a server remembers at once; past that it refuses proofs (503) rather than forget."""
REPLAY_SHARE = 20_000
"""Proofs of one key a server remembers at once (166 requests a second for two minutes);
past that it refuses that key's proofs (429) and no other's."""
CHECK = "dpop-proof"

Clock = Callable[[], float]


def thumbprint(key: ec.EllipticCurvePublicKey) -> str:
    """The RFC 7638 JWK thumbprint of a P-256 key: b64u(SHA-256(JCS of crv, kty, x, y))."""
    jwk = ECAlgorithm.to_jwk(key, as_dict=True)
    required = {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]}
    return b64u(sha256(canonical(required)))


def token_hash(access_token: str) -> str:
    """The ``ath`` of a proof: b64u(SHA-256(the token's ASCII))."""
    return b64u(sha256(access_token.encode("ascii")))


def normalised_url(url: str | httpx.URL) -> str:
    """``url`` without query and fragment, scheme and host in lower case, no default port.

    Raises ``ValueError`` for a URL that is not absolute http(s).
    """
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as error:
        raise ValueError(f"not a URL: {str(url)[:80]!r}") from error
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"not an absolute http(s) URL: {str(url)[:80]!r}")
    default = {"http": 80, "https": 443}[parsed.scheme]
    port = "" if parsed.port in (None, default) else f":{parsed.port}"
    path = parsed.raw_path.split(b"?", 1)[0].decode("ascii") or "/"
    return f"{parsed.scheme}://{parsed.host}{port}{path}"


def _refused(expected: object, actual: object, message: str) -> TokenError:
    return TokenError(CHECK, expected, actual, message, hint="send a fresh DPoP proof")


# -- making proofs (clients) -------------------------------------------------------------


class ProofKey:
    """A P-256 key that DPoP-bound tokens are bound to, and makes proofs for them."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, *, clock: Clock = time.time) -> None:
        if key.curve.name != "secp256r1":
            raise ValueError(f"a DPoP key must be P-256, not {key.curve.name}")
        self.key = key
        self.jwk: dict[str, Any] = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        self.jkt = thumbprint(key.public_key())
        self._clock = clock

    @classmethod
    def generate(cls) -> ProofKey:
        """A fresh key (for a client that keeps none)."""
        return cls(ec.generate_private_key(ec.SECP256R1()))

    def proof(self, method: str, url: str | httpx.URL, access_token: str | None = None) -> str:
        """A proof for one request: ``method`` to ``url`` (its query is left out)."""
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method.upper(),
            "htu": normalised_url(url),
            "iat": int(self._clock()),
        }
        if access_token is not None:
            claims["ath"] = token_hash(access_token)
        headers = {"typ": PROOF_TYPE, "jwk": self.jwk}
        return jwt.encode(claims, self.key, algorithm=ALGORITHM, headers=headers)


class DPoPAuth(httpx.Auth):
    """httpx authentication: ``Authorization: DPoP <token>`` and a fresh proof per request.

    ``token`` is the access token, or a function returning it (read per request).
    """

    def __init__(self, key: ProofKey, token: str | Callable[[], str]) -> None:
        self.key = key
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._token() if callable(self._token) else self._token
        request.headers["Authorization"] = f"DPoP {token}"
        request.headers["DPoP"] = self.key.proof(request.method, request.url, token)
        yield request


# -- checking proofs (servers) -----------------------------------------------------------


class ReplayCache:
    """Identifiers seen recently, each until its own expiry; thread-safe and bounded.

    :meth:`first_use` records an identifier and says whether it is new. When
    ``capacity`` identifiers are remembered and none has expired, it refuses
    (``dpop-replay-cache``, 503) instead of forgetting one that may still be
    replayed. An identifier may be recorded for an ``owner`` (a proof's key): one
    owner holds at most ``share`` of them at once, and past that only its own
    requests are refused (``dpop-replay-share``, 429), so that one key cannot fill
    the cache and have every other's refused.
    """

    def __init__(
        self,
        capacity: int = REPLAY_CAPACITY,
        *,
        share: int = REPLAY_SHARE,
        clock: Clock = time.time,
    ) -> None:
        self.capacity = capacity
        self.share = share
        self._clock = clock
        self._lock = threading.Lock()
        # By insertion: roughly by expiry (a proof's iat is its client's clock).
        self._seen: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._owned: dict[str, OrderedDict[str, float]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def held(self, owner: str) -> int:
        """How many identifiers ``owner`` holds (expired ones not yet forgotten included)."""
        with self._lock:
            return len(self._owned.get(owner, ()))

    def first_use(self, identifier: str, until: float, owner: str | None = None) -> bool:
        """Record ``identifier`` as used until ``until`` (for ``owner``, if any); False
        if it was already."""
        with self._lock:
            now = self._clock()
            self._prune(now)
            seen = self._seen.get(identifier)
            if seen is not None and seen[0] >= now:
                return False
            if owner is not None:
                self._check_share(owner, now)
            if len(self._seen) >= self.capacity:
                self._prune(now, everything=True)
            if len(self._seen) >= self.capacity:
                raise TokenError(
                    "dpop-replay-cache",
                    f"fewer than {self.capacity} requests within the replay window",
                    len(self._seen),
                    "this server remembers too many recent requests to tell a replay",
                    hint="try again in a minute",
                )
            self._forget(identifier)
            self._seen[identifier] = (until, owner)
            if owner is not None:
                self._owned.setdefault(owner, OrderedDict())[identifier] = until
            return True

    def _check_share(self, owner: str, now: float) -> None:
        owned = self._owned.get(owner)
        if owned is None or len(owned) < self.share:
            return
        # The owner's own, oldest first: exact for a client whose clock runs forward;
        # one that sends proofs out of order keeps its own expired ones counted longer.
        while owned:
            identifier, until = next(iter(owned.items()))
            if until >= now:
                break
            self._forget(identifier)
        if len(owned) >= self.share:
            raise TokenError(
                "dpop-replay-share",
                f"fewer than {self.share} requests of one key within the replay window",
                len(owned),
                "this key has made too many requests in the last two minutes for this "
                "server to remember them all",
                hint="try again in a minute",
            )

    def _forget(self, identifier: str) -> None:
        _, owner = self._seen.pop(identifier, (0.0, None))
        if owner is not None:
            owned = self._owned[owner]
            del owned[identifier]
            if not owned:
                del self._owned[owner]

    def _prune(self, now: float, *, everything: bool = False) -> None:
        """Forget expired identifiers: from the oldest on until a live one (or all)."""
        if everything:
            for identifier in [k for k, (until, _) in self._seen.items() if until < now]:
                self._forget(identifier)
            return
        while self._seen:
            identifier, (until, _) = next(iter(self._seen.items()))
            if until >= now:
                break
            self._forget(identifier)


class ProofVerifier:
    """Checks DPoP proofs for one server (see the module docstring for every check)."""

    def __init__(
        self,
        *,
        window: int = WINDOW,
        clock: Clock = time.time,
        replays: ReplayCache | None = None,
    ) -> None:
        self.window = window
        self._clock = clock
        self.replays = replays if replays is not None else ReplayCache(clock=clock)

    def verify(
        self,
        proofs: list[str],
        *,
        method: str,
        url: str,
        access_token: str | None = None,
        jkt: str | None = None,
    ) -> str:
        """The thumbprint of the key that signed the one proof in ``proofs``, else refuse.

        ``proofs`` are the request's ``DPoP`` header values; ``method`` and ``url``
        what the request is (``url``: the server's public URL and the request's
        path); ``access_token`` and ``jkt`` the token the proof must come with and
        the thumbprint it is bound to, if any.
        """
        if len(proofs) != 1:
            raise _refused(
                "exactly one DPoP header with a proof",
                f"{len(proofs)} DPoP headers",
                "the request carries no DPoP proof"
                if not proofs
                else "the request carries several DPoP proofs",
            )
        try:
            expected_url = normalised_url(url)
        except ValueError as error:  # a request no client could have made a proof for
            raise _refused("a request URL", url[:200], "the request's URL is not valid") from error
        proof = proofs[0]
        key = self._key(proof)
        claims = self._claims(proof, key)
        if claims["htm"] != method.upper():
            raise _refused(method.upper(), claims["htm"][:16], "the proof is for another method")
        try:
            proved_url = normalised_url(claims["htu"])
        except ValueError as error:
            raise _refused(url, claims["htu"][:200], "the proof's htu is not a URL") from error
        if proved_url != expected_url:
            raise _refused(expected_url, proved_url[:200], "the proof is for another URL")
        now = int(self._clock())
        if not now - self.window <= claims["iat"] <= now + self.window:
            raise _refused(
                f"iat within {self.window} s of {now}",
                claims["iat"],
                "the proof is too old"
                if claims["iat"] < now
                else "the proof is from the future (is a clock wrong?)",
            )
        if access_token is not None:
            expected_hash = token_hash(access_token)
            if claims.get("ath") != expected_hash:
                raise _refused(
                    expected_hash,
                    str(claims.get("ath"))[:64],
                    "the proof was made for another access token",
                )
        proved = thumbprint(key)
        if jkt is not None and proved != jkt:
            raise _refused(jkt, proved, "the proof is signed by another key than the token's")
        if not self.replays.first_use(
            "dpop:" + claims["jti"], claims["iat"] + self.window, owner=proved
        ):
            raise _refused("a proof not used before", claims["jti"], "the proof was replayed")
        return proved

    @staticmethod
    def _key(proof: str) -> ec.EllipticCurvePublicKey:
        try:
            header = jwt.get_unverified_header(proof)
        except jwt.DecodeError as error:
            raise _refused("a JWS compact serialisation", "unparseable", str(error)) from error
        if header.get("typ") != PROOF_TYPE:
            raise _refused(PROOF_TYPE, header.get("typ"), "the proof's typ is not dpop+jwt")
        if header.get("alg") != ALGORITHM:
            raise _refused(ALGORITHM, header.get("alg"), "the proof uses another algorithm")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            raise _refused("a P-256 public jwk", repr(jwk)[:120], "the proof names no usable key")
        if "d" in jwk:
            raise _refused("a public jwk", "a private key", "the proof's jwk carries a private key")
        try:
            key = ECAlgorithm.from_jwk(jwk)
        except (jwt.InvalidKeyError, ValueError, TypeError) as error:
            raise _refused("a P-256 public jwk", repr(jwk)[:120], str(error)) from error
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise _refused("a public jwk", type(key).__name__, "the proof's jwk is no public key")
        return key

    @staticmethod
    def _claims(proof: str, key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
        try:
            claims = signed_claims(proof, key)
        except jwt.InvalidSignatureError as error:
            raise _refused(
                "a signature by the proof's jwk",
                "a bad signature",
                "the proof's signature does not verify under its jwk",
            ) from error
        except jwt.InvalidTokenError as error:
            raise _refused(
                "a JWS compact serialisation", type(error).__name__, str(error)
            ) from error
        for name, kind in (("jti", str), ("htm", str), ("htu", str), ("iat", int)):
            value = claims.get(name)
            if value is None or isinstance(value, bool) or not isinstance(value, kind):
                raise _refused(
                    f"claim {name!r} of type {kind.__name__}",
                    repr(value)[:80],
                    f"the proof lacks a valid {name!r}",
                )
        if not 0 < len(claims["jti"]) <= MAX_JTI:
            raise _refused(f"a jti of 1 to {MAX_JTI} characters", len(claims["jti"]), "bad jti")
        return claims
