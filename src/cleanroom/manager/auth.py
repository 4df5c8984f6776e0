"""Tokens and who holds them: the manager's signing keys, its token checks, the grants
of its token endpoint, revocation, and the user key a client registers.

A request's token and its DPoP proof are checked by :attr:`Auth.authenticator`
(:mod:`cleanroom.http_auth`, for this manager's audience); :meth:`Auth.user` and
:meth:`Auth.server` then look up who holds it (:mod:`cleanroom.manager.callers`).
Tokens are issued by :mod:`cleanroom.manager.grants` and revoked by
:mod:`cleanroom.manager.revocation`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from sqlalchemy.orm import Session, sessionmaker

from cleanroom.dpop import ProofVerifier
from cleanroom.http_auth import RequestAuthenticator
from cleanroom.manager import audit
from cleanroom.manager.callers import Caller, ServerCaller, server_caller, user_caller
from cleanroom.manager.database import Client
from cleanroom.manager.errors import Conflict, Unauthorized, Unprocessable
from cleanroom.manager.grants import Grants
from cleanroom.manager.keys import KeyRing
from cleanroom.manager.revocation import (
    DatabaseRevocations,
    Revoked,
    prune,
    revocation_list,
    revoke,
    revoke_logged_out,
    revoke_other_keys_room_tokens,
)
from cleanroom.manager.settings import Settings
from cleanroom.protocol.encoding import canonical, from_b64u
from cleanroom.protocol.errors import MessageFormatError, SignatureError
from cleanroom.protocol.keys import load_spki, user_id, verify
from cleanroom.tokens import Revocations, TokenClaims, TokenIssuer, TokenVerifier

KEY_REGISTRATION_TYPE = "cleanroom/key-registration/v3"


def _refuse_an_earlier_release(
    key: EllipticCurvePublicKey, signed: bytes, client_id: str, user_key: str, jkt: str
) -> None:
    """``SignatureError`` saying to upgrade, in one line, if ``signed`` is a registration
    as a client of an earlier release signs it: v1 (no DPoP key) or v2 (no token id,
    refused since h24: it could be sent again with any later token of its key). Never
    accepted; the old client prints the ``detail`` as it is, so it says what to do."""
    for release, fields in (("v2", {"jkt": jkt}), ("v1", {})):
        earlier = f"cleanroom/key-registration/{release}"
        message = canonical(
            {"type": earlier, "client_id": client_id, "user_key": user_key, **fields}
        )
        try:
            verify(key, signed, message, "key-registration")
        except SignatureError:
            continue
        raise SignatureError(
            "key-registration",
            KEY_REGISTRATION_TYPE,
            earlier,
            f"this client signs its user key's registration as {earlier}, of an earlier "
            "release, which this manager refuses: upgrade cleanroom on this machine, then "
            "run `cleanroom login` again",
        )


@dataclass(frozen=True)
class LoggedOut:
    """What a logout revoked: the token it was sent with, and how many room tokens."""

    manager_token: str
    room_tokens_revoked: int


class Auth:
    """The manager's tokens: issued, checked, revoked; and their holders' user keys."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.issuer = TokenIssuer(
            settings.public_url,
            KeyRing.open(
                settings.data_dir,
                lifetime=settings.token_lifetime,
                leeway=settings.token_leeway,
            ),
            lifetime=settings.token_lifetime,
        )
        # Its own key ring and database: a rotated key or a revocation counts from
        # the next request on (cleanroom.manager.keys, cleanroom.manager.revocation).
        self.verifier = TokenVerifier(
            self.issuer.issuer,
            settings.public_url,
            key_source=self.issuer.keys.public_keys,
            revocations=DatabaseRevocations(sessions),
            leeway=settings.token_leeway,
        )
        proofs = ProofVerifier()
        self.authenticator = RequestAuthenticator(self.verifier, proofs, settings.public_url)
        self.grants = Grants(
            sessions, self.issuer, self.verifier, proofs, leeway=settings.token_leeway
        )

    def user(self, claims: TokenClaims) -> Caller:
        """The client behind a checked user token, if it may still act (else
        ``TokenError`` naming the check, :func:`cleanroom.manager.callers.user_caller`)."""
        with self.sessions() as session:
            return user_caller(session, claims)

    def server(self, claims: TokenClaims) -> ServerCaller:
        """The compute server behind a checked compute token, if still registered."""
        with self.sessions() as session:
            return server_caller(session, claims)

    def jwks(self) -> dict[str, Any]:
        """The token signing keys, as a JWK set."""
        return self.issuer.jwks()

    def revoke(self, token: str, credentials: tuple[str, str] | None) -> Revoked:
        """Revoke ``token`` (RFC 7009), for its client's credentials or its holder."""
        return revoke(
            self.sessions, self.verifier, token, credentials, leeway=self.settings.token_leeway
        )

    def logout(self, caller: Caller) -> LoggedOut:
        """End what the caller's DPoP key holds: the token it presented, every other
        manager token of its client and key issued until now (``KeyLogout``), and every room
        token the manager issued its client bound to that key (the manager keeps them,
        ``room_tokens``), which the revocation list carries to every Controller. Audited as
        ``client.logged_out``. Other keys' tokens of the client (another profile) stay."""
        token = caller.token
        if token is None or caller.jkt is None:  # every user token is DPoP-bound
            raise Unauthorized("a logout is sent with a DPoP-bound token")
        now = int(time.time())
        leeway = self.settings.token_leeway
        with self.sessions() as session:
            rooms = revoke_logged_out(
                session, token, caller.jkt, now, self.settings.token_lifetime, leeway
            )
            audit.record(
                session,
                caller.client_id,
                "client.logged_out",
                f"client:{caller.client_id}",
                jti=token.jti,
                jkt=caller.jkt,
                room_tokens_revoked=rooms,
            )
            prune(session, now, leeway)
            session.commit()
        return LoggedOut(manager_token=token.jti, room_tokens_revoked=rooms)

    def revocations(self) -> Revocations:
        """What Controllers must refuse, as of now."""
        with self.sessions() as session:
            return revocation_list(
                session,
                int(time.time()),
                self.settings.token_lifetime,
                self.settings.token_leeway,
            )

    def register_key(self, caller: Caller, user_key: str, signature: str) -> str:
        """Register the caller's user key, proven by its signature; its ``user_id``.

        The signature is over the client id, the key, the thumbprint of the DPoP
        key the caller's token is bound to (``jkt``) and that token's ``jti`` (so that the
        body counts with that token only: its freshness): the user key vouches for that
        DPoP key, and only tokens bound to it are the user from now on
        (:func:`cleanroom.manager.callers.proven_user_id`); registering again from
        another DPoP key moves that to the new key, and then revokes every room token of
        the client bound to another key (audited as ``room_tokens.revoked``) and, at the
        manager, every token of another key issued until then (``Client.user_jkt_since``).
        One user key per client: another
        key than the one registered is refused (409 ``one-user-per-client``).
        """
        if caller.jkt is None or caller.token is None:  # every user token is DPoP-bound
            raise Unauthorized("a user key is registered with a DPoP-bound token")
        try:
            key = load_spki(from_b64u(user_key, "user_key"), "user_key")
            signed = from_b64u(signature, "signature")
        except MessageFormatError as error:
            raise Unprocessable(f"{error.check}: {error.message}", **error.to_json()) from error
        message = canonical(
            {
                "type": KEY_REGISTRATION_TYPE,
                "client_id": caller.client_id,
                "user_key": user_key,
                "jkt": caller.jkt,
                # The one token it is sent with: a registration sent again with another
                # (a new token of the key the user moved from, fetched with the client's
                # secret) is refused, and the token it was made for is refused at once
                # after a move (user_jkt_since) and ends with its hour anyway.
                "jti": caller.token.jti,
            }
        )
        try:
            verify(key, signed, message, "key-registration")  # SignatureError: a 400 problem
        except SignatureError:
            _refuse_an_earlier_release(key, signed, caller.client_id, user_key, caller.jkt)
            raise
        registered = user_id(key)
        with self.sessions() as session:
            client = session.get(Client, caller.client_id)
            if client is None:
                raise Unauthorized("the token's client is unknown")
            if client.user_id is not None and client.user_id != registered:
                raise Conflict(
                    "this client has another user key registered "
                    "(one user_id per client: ask the operator for a new client)",
                    check="one-user-per-client",
                    expected=client.user_id,
                    actual=registered,
                )
            now = int(time.time())
            moved = client.user_jkt != caller.jkt
            if moved:
                # The tokens of every other key issued until now stop counting at the
                # manager (callers.user_caller), so the key moved from acts no more as
                # the project's member either, nor registers its old signature again;
                # the next second, as projects.revoke_tokens (iat is in whole seconds).
                client.user_jkt_since = now + 1
            client.user_key = user_key
            client.user_id = registered
            client.user_jkt = caller.jkt
            session.flush()
            # The client's room tokens bound to another DPoP key (a lost or replaced
            # dpop-key.pem, another profile of the client) end here: at Controllers they
            # were good for the rest of their hour to whoever holds that key. Only when
            # the key moves, as the manager's own tokens: registering again from the
            # same key leaves the tokens of the client's other profiles alone.
            revoked = 0
            if moved:
                revoked = revoke_other_keys_room_tokens(
                    session, client.id, caller.jkt, now, self.settings.token_leeway
                )
            if revoked:
                audit.record(
                    session,
                    client.id,
                    "room_tokens.revoked",
                    f"client:{client.id}",
                    reason="user key registered from another DPoP key",
                    jkt=caller.jkt,
                    tokens_revoked=revoked,
                )
            session.commit()
        return registered
