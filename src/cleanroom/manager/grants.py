"""What the token endpoint grants, and the manager's own tokens for one room on a Controller.

``POST /oauth/token`` takes client credentials (RFC 6749 §4.4) and a resource
indicator (RFC 8707): the one server the token is for, which becomes its ``aud``.

- A **user's client** must send a DPoP proof (RFC 9449 §5): its token is bound to
  the proof's key (``cnf.jkt``). With no ``resource`` (or the manager's URL) it
  gets a token for the manager. With a registered compute server's URL it must
  name a ``room`` (and may name its ``project``): a room it may see (its
  project's, or one whose spec names its user_id, when the proof's key is the one
  its user key vouched for: ``callers.proven_user_id``), not deleted, and scheduled on
  that server (a lost or failed room too: its Controller says what became of
  it). The token then names that room and the room's project, and is good for
  that room on that server only.
- A **compute server's Controller** gets a ``compute`` token for the manager,
  with which it reads only what its server hosts (the bundles of its rooms) and
  the revocation list. It is a bearer token: only that Controller ever holds it.

Anything else is refused with an RFC 6749 §5.2 error (``invalid_client`` alone
for failed authentication; ``invalid_target``, ``invalid_dpop_proof`` and
``invalid_request`` with a description and the check). Nothing is issued before
every check passed; every issued token is audited (``token.issued``).

The manager's tokens towards a Controller (:meth:`Grants.operation_headers`) are
for one operation (``deploy``, ``delete``, ``status``) on one room of one project
on that one server, live :data:`cleanroom.tokens.OPERATION_LIFETIME` seconds, and
are accepted once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from cleanroom.dpop import ProofVerifier
from cleanroom.errors import Error
from cleanroom.manager import audit
from cleanroom.manager.callers import Caller, RoomRefused, find_room, proven_user_id
from cleanroom.manager.credentials import (
    SERVER_CLIENT_PREFIX,
    authenticate,
    authenticate_server,
)
from cleanroom.manager.database import ComputeServer, KeyLogout, Room, RoomToken
from cleanroom.manager.revocation import prune_room_tokens
from cleanroom.tokens import (
    DEFAULT_LEEWAY,
    MANAGER_SUBJECT,
    OPERATION_SCOPES,
    SCOPE_COMPUTE,
    SCOPE_USER,
    TokenError,
    TokenIssuer,
    TokenVerifier,
)

TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What a client id may look like; any other is ``invalid_client`` before a lookup."""
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
"""A room's and a project's name (matched whole)."""
RESOURCE = re.compile(r"https?://[\x21-\x7e]{1,2000}")
"""A resource indicator: an absolute http(s) URL of printable ASCII."""


class GrantRefused(Error):
    """The token endpoint refuses: an RFC 6749 §5.2 ``error`` with its HTTP status
    (``http_status``; the token endpoint answers it with an OAuth error body).

    ``description`` and ``check`` are shown only for a client that authenticated.
    """

    def __init__(
        self, status: int, error: str, description: str | None = None, check: str | None = None
    ) -> None:
        super().__init__(description or error)
        self.http_status = status
        self.error, self.description, self.check = error, description, check

    def body(self) -> dict[str, str]:
        """The error's JSON body."""
        document = {"error": self.error}
        if self.description is not None:
            document["error_description"] = self.description
        if self.check is not None:
            document["check"] = self.check
        return document


INVALID_CLIENT = GrantRefused(401, "invalid_client")


@dataclass(frozen=True)
class TokenRequest:
    """A client-credentials token request: who, for which resource (and room), with
    which DPoP proofs."""

    client_id: str
    secret: str
    resources: Sequence[str] = ()
    room: str | None = None
    project: str | None = None
    proofs: Sequence[str] = ()


@dataclass(frozen=True)
class Granted:
    """An issued token as the token endpoint answers it."""

    access_token: str
    token_type: str
    expires_in: int


class Grants:
    """Issues the tokens of ``POST /oauth/token`` and the manager's operation tokens.

    ``verifier`` is the manager's own (for the audit of what was issued);
    ``proofs`` checks the DPoP proofs sent to the token endpoint.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        issuer: TokenIssuer,
        verifier: TokenVerifier,
        proofs: ProofVerifier,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        leeway: int = DEFAULT_LEEWAY,
    ) -> None:
        self.sessions = sessions
        self.leeway = leeway
        self.issuer = issuer
        self.verifier = verifier
        self.proofs = proofs
        self.public_url = issuer.issuer
        self._sleep = sleep
        self._clock = clock

    # -- the token endpoint -------------------------------------------------------------

    def grant(self, request: TokenRequest) -> Granted:
        """A token for ``request``, or :class:`GrantRefused`.

        Every field is checked whole before it is looked up (a NUL, say, never reaches
        the database).
        """
        if not CLIENT_ID.fullmatch(request.client_id):
            raise INVALID_CLIENT
        if request.client_id.startswith(SERVER_CLIENT_PREFIX):
            return self._grant_server(request)
        return self._grant_user(request)

    def _resource(self, request: TokenRequest) -> str | None:
        """The compute server URL the token is for, or None for the manager."""
        if len(request.resources) > 1:
            raise GrantRefused(
                400,
                "invalid_target",
                "one resource per token: ask for each server's token on its own",
                "token-audience",
            )
        if not all(RESOURCE.fullmatch(resource) for resource in request.resources):
            raise GrantRefused(
                400,
                "invalid_target",
                "a resource is the absolute http(s) URL of this manager or of a compute "
                "server, in printable ASCII",
                "token-audience",
            )
        resource = request.resources[0].rstrip("/") if request.resources else None
        return None if resource in (None, self.public_url) else resource

    def _wait_until(self, not_before: int) -> None:
        """Right after a rotation, ``tokens_not_before`` is the next second
        (``projects.revoke_tokens``): wait it out, so no token is born revoked."""
        wait = not_before - self._clock()
        if wait > 0:
            self._sleep(min(wait, 1.0))

    def _grant_user(self, request: TokenRequest) -> Granted:
        with self.sessions() as session:
            client = authenticate(session, request.client_id, request.secret)
            if client is None:
                raise INVALID_CLIENT
            try:
                jkt = self.proofs.verify(
                    list(request.proofs), method="POST", url=self.public_url + TOKEN_PATH
                )
            except TokenError as error:
                status = error.http_status if error.http_status in (429, 503) else 400
                raise GrantRefused(status, "invalid_dpop_proof", str(error), error.check) from error
            caller = Caller(
                client_id=client.id,
                project_id=client.project_id,
                project=client.project.name,
                user_id=proven_user_id(client, jkt),
                member=client.member.name if client.member is not None else "",
                role=client.member.role if client.member is not None else "",
                jkt=jkt,
            )
            not_before = client.tokens_not_before
            if client.user_jkt_since is not None and jkt != client.user_jkt:
                # Another key than the registered one: its tokens issued before the key
                # last moved are refused (callers.user_caller); none is born so.
                not_before = max(not_before, client.user_jkt_since)
            logged_out = session.get(KeyLogout, (client.id, jkt))
            if logged_out is not None:
                # A logout from this key refuses its tokens issued before the next second
                # (callers.user_caller): none is born so.
                not_before = max(not_before, logged_out.not_before)
        for what, name in (("room", request.room), ("project", request.project)):
            if name is not None and not NAME.fullmatch(name):
                raise GrantRefused(
                    400,
                    "invalid_request",
                    f"{what}: expected a name of 1-63 characters a-z, 0-9 and -, "
                    f"found {name[:63]!r}",
                    "token-room",
                )
        resource = self._resource(request)
        if resource is None:
            if request.room is not None or request.project is not None:
                raise GrantRefused(
                    400,
                    "invalid_request",
                    "room and project name a room on a compute server: give that server "
                    "as the resource",
                    "token-room",
                )
            self._wait_until(not_before)
            token, lifetime = self.issuer.issue(
                caller.client_id,
                audience=self.public_url,
                scope=SCOPE_USER,
                project=caller.project,
                jkt=jkt,
            )
        else:
            audience, project, room, room_id = self._room_target(caller, resource, request)
            self._wait_until(not_before)
            token, lifetime = self.issuer.issue(
                caller.client_id,
                audience=audience,
                scope=SCOPE_USER,
                project=project,
                room=room,
                jkt=jkt,
            )
            self._audit(token, room_id)
            return Granted(token, "DPoP", lifetime)
        self._audit(token)
        return Granted(token, "DPoP", lifetime)

    def _room_target(
        self, caller: Caller, resource: str, request: TokenRequest
    ) -> tuple[str, str, str, int]:
        """(audience, project, room, the room's id) of a token for a room on the server at
        ``resource``.

        The room is looked up first, and a resource that is not where it lives is one
        answer whether or not the URL is a registered compute server's: which URLs are
        registered was told apart by the refusal's check to any client (found by the
        manager's red team; a client learns a server's URL only from the rooms it sees).
        """
        if request.room is None:
            raise GrantRefused(
                400,
                "invalid_request",
                "a token for a compute server is for one room: name it (room=NAME)",
                "token-room",
            )
        with self.sessions() as session:
            try:
                room = find_room(session, caller, request.room, request.project)
            except RoomRefused as error:
                raise GrantRefused(400, "invalid_target", error.message, error.check) from error
            server = session.get(ComputeServer, room.compute_server_id)
            if (
                server is None
                or server.removed
                or server.url != resource
                or room.state == "deleted"
            ):
                raise GrantRefused(
                    400,
                    "invalid_target",
                    f"clean room {room.name!r} of project {room.project.name!r} is not "
                    f"scheduled on a compute server at {resource[:200]}",
                    "token-room",
                )
            return server.url, room.project.name, room.name, room.id

    def _grant_server(self, request: TokenRequest) -> Granted:
        with self.sessions() as session:
            server = authenticate_server(session, request.client_id, request.secret)
            if server is None:
                raise INVALID_CLIENT
            client_id, not_before = server.client_id, server.tokens_not_before
        if client_id is None:  # authenticate_server found it by this id
            raise INVALID_CLIENT
        if self._resource(request) is not None or request.room is not None:
            raise GrantRefused(
                400,
                "invalid_target",
                "a compute server's token is for the manager only",
                "token-audience",
            )
        self._wait_until(not_before)
        token, lifetime = self.issuer.issue(
            client_id, audience=self.public_url, scope=SCOPE_COMPUTE
        )
        self._audit(token)
        return Granted(token, "Bearer", lifetime)

    def _audit(self, token: str, room_id: int | None = None) -> None:
        """Record ``token.issued``; the token is checked first, so none leaves that the
        manager itself would not recognise as its own.

        A token for the room ``room_id`` is kept until it expires, so that deleting the
        room revokes it (``revocation.revoke_room_tokens``): it names the room's project
        and name, which a room deployed later may carry too. The room is read under its
        lock, the one a delete's update of it takes, and the token kept in the same
        transaction: a delete either sees the token or is seen here, and a token for a
        room deleted meanwhile never leaves.
        """
        claims = self.verifier.issued_claims(token)
        details: dict[str, object] = {
            "jti": claims.jti,
            "scope": claims.scope,
            "aud": claims.audience,
            "exp": claims.exp,
        }
        if claims.project is not None:
            details["project"] = claims.project
        if claims.room is not None:
            details["room"] = claims.room
        if claims.jkt is not None:
            details["jkt"] = claims.jkt
        with self.sessions() as session:
            if room_id is not None:
                # The room's row first: the write lock on SQLite, a row lock on PostgreSQL
                # that a delete's update of the row waits for, and waits for (two grants
                # that took the insert's foreign-key lock first deadlocked upgrading it).
                mine = update(Room).where(Room.id == room_id).values(state=Room.state)
                session.execute(mine)
                state = session.scalar(select(Room.state).where(Room.id == room_id))
                if state is None or state == "deleted":
                    session.rollback()
                    raise GrantRefused(
                        400,
                        "invalid_target",
                        f"clean room {claims.room!r} of project {claims.project!r} was "
                        "deleted while its token was issued",
                        "token-room",
                    )
                prune_room_tokens(session, room_id, int(self._clock()), self.leeway)
                session.add(
                    RoomToken(
                        jti=claims.jti,
                        room_id=room_id,
                        client_id=claims.sub,
                        exp=claims.exp,
                        jkt=claims.jkt,
                    )
                )
                session.flush()
            audit.record(session, claims.sub, "token.issued", f"token:{claims.jti}", **details)
            session.commit()

    # -- the manager's own tokens for a Controller ----------------------------------------

    def operation_headers(
        self, server_url: str, project: str, room: str, scope: str
    ) -> dict[str, str]:
        """The headers of the manager's request to the Controller at ``server_url`` to
        ``scope`` (deploy, delete, status) the room ``room`` of ``project``."""
        if scope not in OPERATION_SCOPES:
            raise ValueError(f"not an operation scope: {scope!r}")
        token, _ = self.issuer.issue(
            MANAGER_SUBJECT, audience=server_url, scope=scope, project=project, room=room
        )
        return {"Authorization": f"Bearer {token}"}
