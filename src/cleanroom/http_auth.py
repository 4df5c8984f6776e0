"""The access token of an HTTP request, checked with its DPoP proof: what every server shares.

A request carries its token in ``Authorization``: ``DPoP <token>`` with a proof in
the ``DPoP`` header for a token bound to a key (``cnf.jkt``: every user token),
``Bearer <token>`` for one that is not (the manager's tokens for one operation on
one room, a compute server's token at the manager). :class:`RequestAuthenticator`
verifies the token (:class:`cleanroom.tokens.TokenVerifier`: signature, issuer,
this server's audience, time, revocation), then who holds it, then its scope:

- a bound token must come with the ``DPoP`` scheme and a valid proof for exactly
  this request, this token and its key (:class:`cleanroom.dpop.ProofVerifier`);
- a token of a scope that must be bound (:data:`BOUND_SCOPES`) and is not is
  refused: a user token that anyone who sees it could replay does not exist;
- a token that is not bound must come with the ``Bearer`` scheme.

Every refusal is a :class:`cleanroom.tokens.TokenError` naming its check;
:func:`challenge` gives the ``WWW-Authenticate`` header for it (RFC 6750 §3,
RFC 9449 §7.1). The checks of what a token may do here (its room, its project)
belong to the server that knows the route.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from starlette.requests import Request

from cleanroom.dpop import ProofVerifier
from cleanroom.tokens import SCOPE_USER, TokenClaims, TokenError, TokenVerifier

BOUND_SCOPES = (SCOPE_USER,)
"""Scopes whose tokens are always DPoP-bound."""
DPOP_ALGORITHMS = 'algs="ES256"'


@dataclass(frozen=True)
class Presented:
    """The credentials a request presented: its scheme (``dpop`` or ``bearer``), token, proofs."""

    scheme: str
    token: str
    proofs: tuple[str, ...]


def presented(authorization: str | None, proofs: Sequence[str]) -> Presented:
    """What ``Authorization`` and the ``DPoP`` headers carry; ``token-missing`` if no token."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    scheme, token = scheme.lower(), token.strip()
    if scheme not in ("dpop", "bearer") or not token or " " in token:
        raise TokenError(
            "token-missing",
            "Authorization: DPoP <token> (or Bearer <token>)",
            scheme or "no Authorization header",
            "the request carries no access token (get one from the manager's POST /oauth/token)",
        )
    return Presented(scheme, token, tuple(proofs))


def authorization(request: Request) -> str | None:
    """The request's one ``Authorization`` header, or None; ``authorization-header`` if it
    carries several. The field is not a list (RFC 9110 §11.6.2): which of two counts is a
    guess, and a proxy in front may guess otherwise than this server (Starlette's
    ``headers.get`` takes the first), so neither is used, as of ``DPoP`` headers."""
    values = request.headers.getlist("authorization")
    if len(values) > 1:
        raise TokenError(
            "authorization-header",
            "at most one Authorization header",
            f"{len(values)} Authorization headers",
            "the request carries several Authorization headers: send one",
        )
    return values[0] if values else None


def request_url(public_url: str, request: Request) -> str:
    """The URL a request was sent to, as its client saw it: this server's public URL
    and the path exactly as received (percent-encoding kept), without the query."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else request.url.path
    return public_url.rstrip("/") + path.split("?", 1)[0]


class RequestAuthenticator:
    """Checks a request's access token and, for a bound token, its DPoP proof.

    ``public_url`` is the URL clients reach this server at (the proofs' ``htu``
    starts with it); ``tokens`` verifies tokens for this server's audience.
    """

    def __init__(self, tokens: TokenVerifier, proofs: ProofVerifier, public_url: str) -> None:
        self.tokens = tokens
        self.proofs = proofs
        self.public_url = public_url.rstrip("/")

    def authenticate(self, request: Request, scope: str | None = None) -> TokenClaims:
        """The claims of the request's token (with ``scope``, if given), or ``TokenError``."""
        credentials = presented(authorization(request), request.headers.getlist("dpop"))
        return self.check(
            credentials,
            method=request.method,
            url=request_url(self.public_url, request),
            scope=scope,
        )

    def check(
        self, credentials: Presented, *, method: str, url: str, scope: str | None = None
    ) -> TokenClaims:
        """The claims of ``credentials`` sent with a ``method`` request to ``url``.

        Who holds the token (its proof) is checked before what it may do (its
        scope): every request that presented a valid token spends its proof.
        """
        claims = self.tokens.verify(credentials.token)
        self._check_binding(credentials, claims, method=method, url=url)
        if scope is not None and scope not in claims.scopes:
            raise TokenError("token-scope", scope, claims.scope, "the token lacks the scope")
        return claims

    def _check_binding(
        self, credentials: Presented, claims: TokenClaims, *, method: str, url: str
    ) -> None:
        if claims.jkt is None:
            if any(bound in claims.scopes for bound in BOUND_SCOPES):
                raise TokenError(
                    "dpop-proof",
                    "a DPoP-bound token (cnf.jkt)",
                    "a token bound to no key",
                    f"a {claims.scope!r} token must be bound to a DPoP key",
                )
            if credentials.scheme != "bearer":
                raise TokenError(
                    "dpop-proof",
                    "the Bearer scheme for a token bound to no key",
                    "DPoP",
                    "the token is bound to no key: send it as Bearer",
                )
            return
        if credentials.scheme != "dpop":
            raise TokenError(
                "dpop-proof",
                "Authorization: DPoP <token> with a DPoP proof",
                "Bearer",
                "the token is DPoP-bound: send it with the DPoP scheme and a proof",
            )
        self.proofs.verify(
            list(credentials.proofs),
            method=method,
            url=url,
            access_token=credentials.token,
            jkt=claims.jkt,
        )


def challenge(error: TokenError, scheme: str = "dpop") -> str | None:
    """The ``WWW-Authenticate`` value for a refused token sent with ``scheme``, or None
    (a 503 or a 429 says nothing about the token)."""
    status = error.http_status
    if status in (429, 503):
        return None
    if error.check in ("token-missing", "authorization-header"):
        return f"DPoP {DPOP_ALGORITHMS}, Bearer"
    if error.check == "dpop-proof":
        return f'DPoP error="invalid_dpop_proof", {DPOP_ALGORITHMS}'
    code = "insufficient_scope" if status == 403 else "invalid_token"
    if scheme == "bearer":
        return f'Bearer error="{code}"'
    return f'DPoP error="{code}", {DPOP_ALGORITHMS}'
