"""Token revocation at the manager: RFC 7009 revoke, the check, the list Controllers fetch.

A token stops counting when its ``jti`` is revoked (``POST /oauth/revoke``, kept
in ``revoked_tokens`` until it expires), when it was issued before its client's
``tokens_not_before`` (set when a client is disabled or its secret rotated), or
when its client is disabled. The manager checks the first two in its database on
every use of a token (:class:`DatabaseRevocations`), so a revocation holds there
at once; the third is ``caller()``'s (``client-disabled``), on every path a user
token takes, as is a fourth, for a user's token for the manager only: issued before
its client's last logout from its DPoP key (``KeyLogout``). A compute server's token
is refused the same way once the server is removed or its secret rotated.
Controllers cannot ask the database: they fetch :func:`revocation_list`, the first
three kinds, from ``GET /v1/revocations`` every few seconds
(:class:`cleanroom.tokens.RevocationFeed`), with their own token; the list names
clients only by digest (:func:`cleanroom.tokens.client_digest`).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence

from sqlalchemy import Row, delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import Executable

from cleanroom.manager import audit
from cleanroom.manager.credentials import authenticate
from cleanroom.manager.database import (
    Client,
    ComputeServer,
    KeyLogout,
    RevokedToken,
    RoomToken,
)
from cleanroom.tokens import (
    ClientStatus,
    Clock,
    Revocations,
    TokenClaims,
    TokenError,
    TokenVerifier,
    check_not_revoked,
    client_digest,
)


class DatabaseRevocations:
    """The manager's :class:`cleanroom.tokens.RevocationCheck`: asks its database.

    Its own tokens for one operation (``sub`` ``cleanroom-manager``, no client) are
    refused only if their jti is revoked: a client disabled meanwhile does not stop
    a deploy the manager is doing. A compute server's are refused once it is
    removed (as a disabled client's) or issued before its last secret rotation.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def check(self, claims: TokenClaims) -> None:
        """``token-revoked`` if ``claims``' jti is revoked or precedes its client's
        ``tokens_not_before``."""
        with self._sessions() as session:
            revoked = session.get(RevokedToken, claims.jti) is not None
            client = session.get(Client, claims.sub)
            status = None if client is None else ClientStatus(client.tokens_not_before)
            if client is None:
                server = session.scalar(
                    select(ComputeServer).where(ComputeServer.client_id == claims.sub)
                )
                if server is not None:
                    status = ClientStatus(server.tokens_not_before, disabled=server.removed)
        check_not_revoked(claims, revoked=revoked, client=status)


class Revoked(enum.Enum):
    """What ``POST /oauth/revoke`` did (each its own answer, docs/api.md "Tokens")."""

    REVOKED = "revoked"
    """The token is now on the revocation list."""
    UNCHANGED = "unchanged"
    """Nothing to do: the token was invalid, expired or already revoked (RFC 7009 §2.2)."""
    INVALID_CLIENT = "invalid_client"
    """The client credentials given are wrong (or the client is disabled)."""
    NOT_YOURS = "unauthorized_client"
    """The credentials are good, but the token was issued to another client."""


def revoke(
    sessions: sessionmaker[Session],
    verifier: TokenVerifier,
    token: str,
    credentials: tuple[str, str] | None,
    *,
    leeway: int,
    clock: Clock = time.time,
) -> Revoked:
    """Revoke ``token`` (RFC 7009), authenticated by ``credentials`` or by the token itself.

    With ``(client_id, secret)``, the token must be that client's. Without, holding
    the token is the proof: whoever can use a token may as well end it.
    """
    client_id: str | None = None
    if credentials is not None:
        with sessions() as session:
            client = authenticate(session, *credentials)
            if client is None:
                return Revoked.INVALID_CLIENT
            client_id = client.id
    try:
        # Any audience: a token for a Controller is revoked here too (the list reaches it).
        claims = verifier.issued_claims(token)
    except TokenError:
        return Revoked.UNCHANGED
    if client_id is not None and claims.sub != client_id:
        return Revoked.NOT_YOURS
    with sessions() as session:
        session.add(RevokedToken(jti=claims.jti, client_id=claims.sub, exp=claims.exp))
        try:
            session.flush()
        except IntegrityError:  # revoked by a concurrent request: the same outcome
            session.rollback()
            return Revoked.UNCHANGED
        # Whoever holds a token may end it, so only credentials name who did: an entry
        # revoked by the token alone is the holder's (a Controller sees users' tokens
        # and the manager's own), never logged as the token's owner.
        audit.record(
            session,
            client_id or audit.TOKEN_HOLDER,
            "token.revoked",
            f"token:{claims.jti}",
            jti=claims.jti,
            client_id=claims.sub,
            exp=claims.exp,
            authenticated_by="client_credentials" if client_id else "the token itself",
        )
        prune(session, int(clock()), leeway)
        session.commit()
    return Revoked.REVOKED


def prune(session: Session, now: int, leeway: int) -> None:
    """Forget revoked tokens that have expired (every verifier refuses them anyway)."""
    session.execute(delete(RevokedToken).where(RevokedToken.exp < now - leeway))


def prune_room_tokens(session: Session, room_id: int, now: int, leeway: int) -> None:
    """Forget the tokens of the room ``room_id`` that have expired (nothing need revoke
    them any more); with the room's row locked, so that no two transactions delete the
    same rows (in orders of their own: a deadlock on PostgreSQL)."""
    session.execute(
        delete(RoomToken).where(RoomToken.room_id == room_id, RoomToken.exp < now - leeway)
    )


def revoke_room_tokens(session: Session, room_id: int, now: int, leeway: int) -> int:
    """Revoke every token issued for the room ``room_id`` that has not expired; how many.

    For a room being deleted, after its row was marked (which holds the token endpoint's
    recording of a new one, ``grants.Grants._audit``, and with it every other change of
    the room's tokens). A room token names the room's project and name, not the room:
    without this, a Controller took a token issued for a deleted room on the room of the
    same name its project deployed there next, for the rest of the token's hour. The
    revocation list carries them to every Controller. A token its holder revokes at the
    same moment (``POST /oauth/revoke``) is revoked once: the insert skips a jti present.
    """
    issued = session.execute(
        select(RoomToken.jti, RoomToken.client_id, RoomToken.exp)
        .where(RoomToken.room_id == room_id, RoomToken.exp >= now - leeway)
        .order_by(RoomToken.jti)
    ).all()
    revoked = _revoke_kept(session, issued, now)
    session.execute(delete(RoomToken).where(RoomToken.room_id == room_id))
    session.flush()
    return revoked


def revoke_other_keys_room_tokens(
    session: Session, client_id: str, jkt: str, now: int, leeway: int
) -> int:
    """Revoke every unexpired room token of ``client_id`` bound to another DPoP key than
    ``jkt`` (or kept without its key, before migration 0007); how many.

    For a client whose user key was just registered from the DPoP key ``jkt``, another
    than before (``auth.Auth.register_key``, which every ``cleanroom login`` does): a profile whose
    ``dpop-key.pem`` was lost or replaced, or a new profile of the client, moves the
    client to its new key, and the room tokens bound to the old one were good at
    Controllers for the rest of their hour, to whoever holds that key (left open by
    h17). The rows stay (their room's delete or prune forgets them): rows are deleted
    only per room, under its lock. Revoked in the order of their jti, as a room's
    delete revokes its own, so that two such transactions do not wait on each other's
    inserts in orders of their own (a deadlock on PostgreSQL).
    """
    issued = session.execute(
        select(RoomToken.jti, RoomToken.client_id, RoomToken.exp)
        .where(
            RoomToken.client_id == client_id,
            RoomToken.exp >= now - leeway,
            or_(RoomToken.jkt.is_(None), RoomToken.jkt != jkt),
        )
        .order_by(RoomToken.jti)
    ).all()
    revoked = _revoke_kept(session, issued, now)
    session.flush()
    return revoked


def revoke_logged_out(
    session: Session, token: TokenClaims, jkt: str, now: int, lifetime: int, leeway: int
) -> int:
    """Revoke ``token``, the manager token a logout was sent with, every other manager
    token of its client bound to the DPoP key ``jkt`` issued until now, and every
    unexpired room token of the client bound to that key; how many room tokens were not
    revoked already (the token is revoked once, as :func:`_revoke_kept` does).

    The manager does not keep its own tokens: it refuses from now on the client's tokens
    of that key issued before the next second (``KeyLogout``, checked by
    ``callers.user_caller``; iat is in whole seconds, as ``projects.revoke_tokens``, and
    the token endpoint waits that second out). Without it the tokens of the same key
    from an earlier login lived out their hour (left open by h24)."""
    _revoke_kept(session, [(token.jti, token.sub, token.exp)], now)
    _record_key_logout(session, token.sub, jkt, now + 1)
    session.execute(delete(KeyLogout).where(KeyLogout.not_before < now - lifetime - leeway))
    return revoke_key_room_tokens(session, token.sub, jkt, now, leeway)


def _record_key_logout(session: Session, client_id: str, jkt: str, not_before: int) -> None:
    """Set the not-before of ``client_id``'s tokens of the DPoP key ``jkt``; a concurrent
    logout of the same key sets it too (an upsert, not a race on the primary key)."""
    dialect = session.get_bind().dialect.name
    row = {"client_id": client_id, "jkt": jkt, "not_before": not_before}
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(KeyLogout).values(row)
        statement = statement.on_conflict_do_update(
            index_elements=[KeyLogout.client_id, KeyLogout.jkt],
            set_={"not_before": statement.excluded.not_before},
        )
        session.execute(statement)
        return
    recorded = session.get(KeyLogout, (client_id, jkt))  # another database: no race handled
    if recorded is None:
        session.add(KeyLogout(**row))
    else:
        recorded.not_before = not_before
    session.flush()


def revoke_key_room_tokens(
    session: Session, client_id: str, jkt: str, now: int, leeway: int
) -> int:
    """Revoke every unexpired room token of ``client_id`` bound to the DPoP key ``jkt``;
    how many were not revoked already.

    For a client logging out from that key (:func:`revoke_logged_out`): the manager keeps every
    room token it issues, so this reaches the tokens the client no longer keeps too (a
    ``cleanroom login`` that could not reach the manager drops its kept tokens unrevoked),
    which Controllers took for the rest of their hour. The rows stay, as for
    :func:`revoke_other_keys_room_tokens`, and in the same order of their jti.
    """
    issued = session.execute(
        select(RoomToken.jti, RoomToken.client_id, RoomToken.exp)
        .where(
            RoomToken.client_id == client_id,
            RoomToken.exp >= now - leeway,
            RoomToken.jkt == jkt,
        )
        .order_by(RoomToken.jti)
    ).all()
    revoked = _revoke_kept(session, issued, now)
    session.flush()
    return revoked


def _revoke_kept(
    session: Session, issued: Sequence[Row[str, str, int] | tuple[str, str, int]], now: int
) -> int:
    """Put the kept room tokens ``issued`` (jti, client_id, exp) on the revocation list;
    how many were not on it already (one revoked at the same moment by its holder, by
    ``POST /oauth/revoke`` or by another revocation of kept tokens, is revoked once:
    the insert skips a jti present)."""
    dialect = session.get_bind().dialect.name
    revoked = 0
    for jti, client_id, exp in issued:
        row = {"jti": jti, "client_id": client_id, "exp": exp, "revoked": now}
        statement: Executable
        if dialect == "postgresql":
            statement = postgresql.insert(RevokedToken).values(row).on_conflict_do_nothing()
            statement = statement.returning(RevokedToken.jti)
        elif dialect == "sqlite":
            statement = sqlite.insert(RevokedToken).values(row).on_conflict_do_nothing()
            statement = statement.returning(RevokedToken.jti)
        else:  # another database: no race with a concurrent revoke is handled there
            if session.get(RevokedToken, jti) is None:
                session.add(RevokedToken(**row))
                revoked += 1
            continue
        revoked += len(session.execute(statement).all())  # the jti, if it was added
    return revoked


def revocation_list(session: Session, now: int, lifetime: int, leeway: int) -> Revocations:
    """What Controllers must refuse (``GET /v1/revocations``).

    Revoked jtis not yet expired; disabled clients; and clients whose
    ``tokens_not_before`` still matters, i.e. a token issued before it may not
    have expired yet (``not_before > now - lifetime - leeway``).
    """
    tokens = session.execute(
        select(RevokedToken.jti, RevokedToken.exp).where(RevokedToken.exp >= now - leeway)
    )
    clients = session.execute(
        select(Client.id, Client.tokens_not_before, Client.disabled).where(
            or_(
                Client.disabled.is_(True),
                Client.tokens_not_before > now - lifetime - leeway,
            )
        )
    )
    return Revocations(
        now=now,
        tokens={row.jti: row.exp for row in tokens},
        clients={
            client_digest(client_id): ClientStatus(not_before=not_before, disabled=disabled)
            for client_id, not_before, disabled in clients
        },
    )
