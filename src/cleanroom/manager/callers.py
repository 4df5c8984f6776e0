"""Who is calling the manager, and which rooms they may see.

A verified token (:mod:`cleanroom.http_auth`) says who it was issued to; what that
party may still do is read from the database on every request:

- a **user** (scope ``user``): :func:`user_caller` checks that its client exists
  (``token-client``), is in the project the token names (``token-project``),
  still belongs to a member of its project (``client-member``) and is enabled
  (``client-disabled``), and that the token is not bound to a DPoP key the client's
  user key was registered away from (issued before, ``token-revoked``);
- a **compute server** (scope ``compute``): :func:`server_caller` checks that the
  token's client is a registered compute server (``token-client``) that is not
  removed (``server-removed``).

Which rooms a user may see (:func:`visible_rooms`): those of its project, and
those whose spec names its ``user_id`` (inputs, outputs or runners). A caller has
that ``user_id`` only while its token is bound to the DPoP key its user key last
vouched for (:func:`proven_user_id`): the client's secret alone, which the project
owner who created or rotated the client also saw, never makes anyone that user.
Room names live per project, so a name may stand for several rooms a user sees:
:func:`find_room` takes a live one first, the caller's own project's first, and
refuses to guess between other projects' (``room-ambiguous``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from cleanroom.errors import CheckFailed
from cleanroom.manager.database import (
    Client,
    ComputeServer,
    KeyLogout,
    Project,
    RevokedToken,
    Room,
    RoomMember,
)
from cleanroom.tokens import ClientStatus, TokenClaims, TokenError, check_not_revoked


@dataclass(frozen=True)
class Caller:
    """A client that presented a valid ``user``-scope token and may act.

    ``member`` and ``role`` are its member's when the request began; what only an
    owner may do is checked again in the transaction that does it.
    """

    client_id: str
    project_id: int
    project: str
    user_id: str | None
    """The client's registered user_id, if this caller proved it (:func:`proven_user_id`)."""
    member: str
    role: str
    jkt: str | None = None
    """The thumbprint of the DPoP key the caller's token is bound to."""
    token: TokenClaims | None = None
    """The token the caller presented (None: a caller the token endpoint made up, which
    :func:`check_still_acts` refuses)."""


def proven_user_id(client: Client, jkt: str | None) -> str | None:
    """``client.user_id`` for a caller whose DPoP key is ``jkt``, if the user key vouched for it.

    The client's secret is no proof of the user: the project owner who created or
    rotated the client saw it too. Registering the user key
    (:meth:`cleanroom.manager.auth.Auth.register_key`) signs the thumbprint of the
    caller's DPoP key; only tokens bound to that key are that user (their rooms in
    other projects, room tokens for them). Anyone else holding the secret is the
    project's member without a user_id.
    """
    if client.user_id is None or jkt is None or client.user_jkt != jkt:
        return None
    return client.user_id


@dataclass(frozen=True)
class ServerCaller:
    """A registered compute server that presented a valid ``compute``-scope token."""

    server_id: int
    name: str
    url: str


class RoomRefused(CheckFailed):
    """A room reference that cannot be answered; ``http_status`` is the answer."""

    http_status = 404


class AmbiguousRoom(RoomRefused):
    """Several rooms of other projects that the caller sees carry the name asked for."""

    http_status = 409


def user_caller(session: Session, claims: TokenClaims) -> Caller:
    """The client behind a valid user token, if it may still act; else ``TokenError`` 401."""
    client = session.get(Client, claims.sub)
    if client is None:
        raise TokenError(
            "token-client",
            "the id of a client of this manager",
            claims.sub,
            "the token's client does not exist",
        )
    if client.project.name != claims.project:
        raise TokenError(
            "token-project",
            client.project.name,
            claims.project,
            "the token names another project than its client's",
        )
    if client.member is None:
        raise TokenError(
            "client-member",
            f"a client of a member of project {client.project.name!r}",
            "a client whose member was removed",
            f"client {client.id} belongs to a member removed from its project",
        )
    if client.disabled:
        raise TokenError(
            "client-disabled",
            "an enabled client",
            "disabled",
            f"client {client.id} is disabled",
        )
    since = client.user_jkt_since
    if since is not None and claims.jkt != client.user_jkt and claims.iat < since:
        raise TokenError(
            "token-revoked",
            f"a token bound to DPoP key {client.user_jkt}, or issued at or after {since}",
            f"a token bound to {claims.jkt}, issued at {claims.iat}",
            "the token is bound to a DPoP key its client's user key was registered away from",
            hint="fetch a new token",
        )
    logged_out = None if claims.jkt is None else session.get(KeyLogout, (client.id, claims.jkt))
    if logged_out is not None and claims.iat < logged_out.not_before:
        raise TokenError(
            "token-revoked",
            f"a token of DPoP key {claims.jkt} issued at or after {logged_out.not_before}, "
            "when its client last logged out from that key",
            f"a token issued at {claims.iat}",
            "the token's client logged out from its DPoP key after it was issued",
            hint="log in again (cleanroom login)",
        )
    return Caller(
        client_id=client.id,
        project_id=client.project_id,
        project=client.project.name,
        user_id=proven_user_id(client, claims.jkt),
        member=client.member.name,
        role=client.member.role,
        jkt=claims.jkt,
        token=claims,
    )


def check_still_acts(session: Session, caller: Caller) -> None:
    """Refuse (``TokenError`` 401, as at authentication) a caller whose token or client
    no longer counts, read again in ``session``'s transaction: its client disabled,
    rotated or removed from its member, or its token revoked.

    A request is authenticated when it arrives, and a deploy, a delete or an upload may
    act much later: a deploy or a delete waits for a turn among
    ``Settings.controller_calls`` (for as long as the Controllers ahead of it take), and
    an upload's body may take as long as its sender likes. A member removed meanwhile,
    its tokens "refused at once", still deleted its project's rooms (found by h17's
    red team). Read, not locked: an owner's disable locks the project's row, then the
    client's, and a deploy locks the project's row later in its transaction.
    """
    claims = caller.token
    if claims is None:
        raise TokenError(
            "token-missing", "a caller with a checked token", "none", "no token to check again"
        )
    client = session.get(Client, claims.sub, populate_existing=True)
    if client is not None:  # in the order of the first check (DatabaseRevocations first)
        revoked = session.get(RevokedToken, claims.jti) is not None
        check_not_revoked(claims, revoked=revoked, client=ClientStatus(client.tokens_not_before))
    user_caller(session, claims)  # it exists, in its project, of a member, enabled


def server_caller(session: Session, claims: TokenClaims) -> ServerCaller:
    """The compute server behind a valid compute token, if it is still registered."""
    server = session.scalar(select(ComputeServer).where(ComputeServer.client_id == claims.sub))
    if server is None:
        raise TokenError(
            "token-client",
            "the client id of a registered compute server",
            claims.sub,
            "the token's compute server is not registered",
        )
    if server.removed:
        raise TokenError(
            "server-removed",
            "a compute server that is not removed",
            server.name,
            f"compute server {server.name} was removed",
        )
    return ServerCaller(server_id=server.id, name=server.name, url=server.url)


def visible_rooms(caller: Caller) -> Select[Room]:
    """The rooms ``caller`` may see: its project's, and those naming its user_id."""
    condition = Room.project_id == caller.project_id
    if caller.user_id is not None:
        condition = or_(
            condition,
            Room.id.in_(select(RoomMember.room_id).where(RoomMember.user_id == caller.user_id)),
        )
    return select(Room).where(condition)


def find_room(session: Session, caller: Caller, name: str, project: str | None = None) -> Room:
    """The room ``name`` the caller may see (of ``project``, when given).

    A live room wins over deleted ones; of several, the caller's own project's;
    otherwise they must all be one other project's (``room-ambiguous`` 409 if not:
    ask again with ``project``). Of a project's deleted rooms, the latest. A room
    the caller may not see is ``room`` 404, as one that does not exist.
    """
    query = visible_rooms(caller).where(Room.name == name)
    if project is not None:
        query = query.join(Project, Room.project_id == Project.id).where(Project.name == project)
    rooms = list(session.scalars(query))
    if not rooms:
        where = f" of project {project!r}" if project is not None else ""
        raise RoomRefused(
            "room", "a clean room you may see", name, f"no clean room named {name!r}{where}"
        )
    live = [room for room in rooms if room.state != "deleted"]
    rooms = live or rooms
    own = [room for room in rooms if room.project_id == caller.project_id]
    if own:
        rooms = own
    else:
        projects = sorted({room.project.name for room in rooms})
        if len(projects) > 1:
            raise AmbiguousRoom(
                "room-ambiguous",
                "one project's room of that name",
                projects,
                f"clean rooms named {name!r} of several projects include you: "
                f"name the project ({', '.join(projects)})",
                hint="ask for GET /v1/rooms/{name}?project=PROJECT",
            )
    rooms.sort(key=lambda room: (room.state != "deleted", room.created, room.id), reverse=True)
    return rooms[0]
