"""What the operator does on the manager's machine: projects, members, clients, compute servers.

These act on the database directly (``cleanroom admin …``); none is reachable
over HTTP. Each refusal is an :class:`AdminError` with one line to show. Member
and client operations are :mod:`cleanroom.manager.projects`'s (which project
owners also reach over HTTP), done here as the operator (audit actor
``operator``), each committed with its audit entry.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cleanroom.errors import EXIT_USAGE, Error
from cleanroom.manager import audit, projects, servers
from cleanroom.manager.credentials import hash_secret, new_secret, new_server_client_id
from cleanroom.manager.database import (
    LIVE_ROOM_STATES,
    Client,
    ComputeServer,
    Member,
    Project,
    Room,
    holds_slot,
)
from cleanroom.manager.projects import NewClient as NewClient  # re-exported for callers

PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
DEFAULT_CAPACITY = 20
"""Live rooms a compute server hosts at most, unless registered with another capacity."""


class AdminError(Error):
    """An operator command was refused; the message is one line."""

    exit_code = EXIT_USAGE  # the operator's input names no such thing, or a taken one


@dataclass(frozen=True)
class ServerCredentials:
    """A compute server's credentials towards the manager. ``client_secret`` exists
    nowhere else (the manager keeps its argon2id hash): give it to the server's
    Controller (``cleanroom server compute --credentials FILE``)."""

    name: str
    url: str
    client_id: str
    client_secret: str

    def to_json(self) -> dict[str, Any]:
        """The credentials file a Controller reads."""
        return {
            "type": "cleanroom/compute-credentials/v1",
            "server": self.name,
            "url": self.url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }


@dataclass(frozen=True)
class NewServer:
    """A compute server just registered (or given new credentials), and its credentials."""

    server: ComputeServer
    credentials: ServerCredentials


def _new_credentials(server: ComputeServer, now: int) -> ServerCredentials:
    """Give ``server`` a new secret (and a client id if it has none); every token it
    was issued so far is refused from the next second on."""
    secret = new_secret()
    if server.client_id is None:
        server.client_id = new_server_client_id()
    server.secret_hash = hash_secret(secret)
    server.tokens_not_before = max(server.tokens_not_before or 0, now + 1)
    return ServerCredentials(server.name, server.url, server.client_id, secret)


@contextmanager
def _as_operator(session: Session) -> Iterator[None]:
    """Commit what the block did, or roll it back and turn its refusal into an AdminError."""
    try:
        yield
    except projects.ProjectRefused as error:
        session.rollback()
        hint = f" ({error.hint})" if error.hint else ""
        raise AdminError(error.message + hint) from error
    session.commit()


def _project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        raise AdminError(
            f"no project named {name!r} (create it with `cleanroom admin project create`)"
        )
    return project


def create_project(session: Session, name: str) -> Project:
    """A new project ``name`` (lowercase letters, digits and '-', at most 63)."""
    if not PROJECT_NAME.fullmatch(name):
        raise AdminError(
            f"project name {name!r} is not 1-63 lowercase letters, digits or '-' "
            "starting with a letter or digit"
        )
    if session.scalar(select(Project).where(Project.name == name)) is not None:
        raise AdminError(f"a project named {name!r} exists")
    project = Project(name=name)
    session.add(project)
    try:
        session.flush()
    except IntegrityError as error:
        session.rollback()
        raise AdminError(f"a project named {name!r} exists") from error
    audit.record(session, audit.OPERATOR, "project.created", f"project:{name}")
    session.commit()
    return project


def list_projects(session: Session) -> list[tuple[Project, int]]:
    """Every project with its number of clients, by name."""
    counts = (
        select(Project, func.count(Client.id))
        .outerjoin(Client, Client.project_id == Project.id)
        .group_by(Project.id)
        .order_by(Project.name)
    )
    return [(project, count) for project, count in session.execute(counts).all()]


def add_member(session: Session, project: str, name: str, role: str = "member") -> Member:
    """A new member ``name`` of ``project`` with ``role`` (``owner`` or ``member``)."""
    found = _project(session, project)
    with _as_operator(session):
        member = projects.add_member(session, audit.OPERATOR, found, name, role)
    return member


def set_member_role(session: Session, project: str, name: str, role: str) -> Member:
    """Give the member ``name`` of ``project`` the role ``role`` (even the last owner's)."""
    found = _project(session, project)
    with _as_operator(session):
        member = projects.set_role(session, audit.OPERATOR, found, name, role, keep_an_owner=False)
    return member


def remove_member(session: Session, project: str, name: str) -> list[str]:
    """Remove a member: its clients are disabled and their tokens refused; their ids.

    The operator may remove a project's last owner (the project is then the
    operator's alone to manage).
    """
    found = _project(session, project)
    with _as_operator(session):
        disabled = projects.remove_member(session, audit.OPERATOR, found, name, keep_an_owner=False)
    return disabled


def list_members(session: Session, project: str | None = None) -> list[tuple[Member, list[Client]]]:
    """Every member (of ``project`` if given) with its clients, by project and name."""
    query = select(Member).join(Project).order_by(Project.name, Member.name)
    if project is not None:
        query = query.where(Member.project_id == _project(session, project).id)
    return [(member, projects.clients_of(session, member)) for member in session.scalars(query)]


def create_client(
    session: Session, project: str, name: str | None = None, *, member: str | None = None
) -> NewClient:
    """A new client of ``project`` with a random id and secret, for ``member``.

    Without ``member`` the client is its own member: a new member named after the
    client id, role ``member`` (see :mod:`cleanroom.manager.projects`).
    """
    found = _project(session, project)
    with _as_operator(session):
        created = projects.create_client(session, audit.OPERATOR, found, member, name)
    return created


def list_clients(session: Session, project: str | None = None) -> list[Client]:
    """Every client (of ``project`` if given), by project and creation."""
    query = select(Client).join(Project).order_by(Project.name, Client.created, Client.id)
    if project is not None:
        query = query.where(Project.id == _project(session, project).id)
    return list(session.scalars(query))


def _client(session: Session, client_id: str) -> Client:
    client = session.get(Client, client_id)
    if client is None:
        raise AdminError(f"no client {client_id!r}")
    return client


def set_client_disabled(session: Session, client_id: str, disabled: bool) -> Client:
    """Disable (or enable again) a client: disabling refuses its tokens at once.

    Tokens issued before a disable stay refused after an enable; a client whose
    member was removed cannot be enabled.
    """
    client = _client(session, client_id)
    with _as_operator(session):
        if disabled:
            projects.disable_client(session, audit.OPERATOR, client)
        else:
            projects.enable_client(session, audit.OPERATOR, client)
    return client


def rotate_client(session: Session, client_id: str) -> NewClient:
    """A new secret for a client: the old secret and every token issued so far are refused."""
    client = _client(session, client_id)
    with _as_operator(session):
        rotated = projects.rotate_client(session, audit.OPERATOR, client)
    return rotated


def normalise_server_url(url: str) -> str:
    """``url`` as stored: http(s), a host, no query or fragment, no trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AdminError(f"compute server URL {url!r} is not an http:// or https:// URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise AdminError(f"compute server URL {url!r} must not have credentials, query or fragment")
    return url.rstrip("/")


def add_server(
    session: Session,
    url: str,
    name: str | None = None,
    *,
    capacity: int = DEFAULT_CAPACITY,
    tee_kind: str = "simulated",
) -> NewServer:
    """Register the compute server whose Controller answers at ``url``; and its credentials.

    ``url`` is also the server's identity: the audience of every token for it.
    ``capacity`` is how many live rooms it may host; ``tee_kind`` the TEE its
    Controller must report (a server reporting another is unhealthy). A removed
    server added again at the same URL is registered again (same name unless
    ``name`` is given), in state ``unknown`` until its first health check, with
    new credentials.
    """
    url = normalise_server_url(url)
    if capacity < 1:
        raise AdminError(f"capacity must be at least 1, not {capacity}")
    if tee_kind not in servers.TEE_KINDS:
        raise AdminError(f"TEE kind {tee_kind!r} is not one of {', '.join(servers.TEE_KINDS)}")
    existing = session.scalar(select(ComputeServer).where(ComputeServer.url == url))
    if existing is not None and not existing.removed:
        raise AdminError(f"a compute server at {url} is registered (as {existing.name!r})")
    name = name or (existing.name if existing is not None else urlsplit(url).netloc)
    namesake = session.scalar(select(ComputeServer).where(ComputeServer.name == name))
    if namesake is not None and namesake is not existing:
        removed = " (removed; its name stays taken)" if namesake.removed else ""
        raise AdminError(f"a compute server named {name!r} is registered{removed}")
    server = existing or ComputeServer(url=url)
    server.name, server.capacity, server.tee_kind = name, capacity, tee_kind
    server.removed, server.state, server.reason, server.failures = False, "unknown", None, 0
    session.add(server)
    try:
        session.flush()
        credentials = _new_credentials(server, int(time.time()))
        session.flush()
        audit.record(
            session,
            audit.OPERATOR,
            "server.added",
            name,
            url=url,
            capacity=capacity,
            tee_kind=tee_kind,
            again=existing is not None,
            client_id=credentials.client_id,
        )
        session.commit()
    except IntegrityError as error:  # another `server add` of that name or URL won
        session.rollback()
        raise AdminError(f"a compute server named {name!r} or at {url} is registered") from error
    return NewServer(server, credentials)


def _find_server(session: Session, which: str) -> ComputeServer:
    """The compute server named ``which`` or at URL ``which``."""
    try:
        url = normalise_server_url(which)
    except AdminError:
        url = None
    query = select(ComputeServer).where(
        (ComputeServer.name == which) | (ComputeServer.url == (url or which))
    )
    server = session.scalars(query.order_by(ComputeServer.id)).first()
    if server is None:
        raise AdminError(f"no compute server named or at {which!r}")
    return server


def rotate_server_credentials(session: Session, which: str) -> NewServer:
    """New credentials for the compute server named (or at URL) ``which``: the old secret
    and every token issued with it are refused from now on."""
    server = _find_server(session, which)
    if server.removed:
        raise AdminError(f"compute server {server.name} ({server.url}) is removed")
    credentials = _new_credentials(server, int(time.time()))
    session.flush()
    audit.record(
        session,
        audit.OPERATOR,
        "server.credentials_rotated",
        server.name,
        url=server.url,
        client_id=credentials.client_id,
    )
    session.commit()
    return NewServer(server, credentials)


def remove_server(
    session: Session, which: str, *, force: bool = False, now: int | None = None
) -> tuple[ComputeServer, list[str]]:
    """Stop scheduling on the compute server named ``which`` (or at URL ``which``).

    Refused while rooms hold a slot there (live ones, and failed ones whose
    Controller may still run their Worker), unless ``force``: they are then marked
    lost (their data is only in that server's enclaves). Returns the server and
    the names of the rooms marked lost. The row stays (rooms refer to it), marked
    removed: it is never scheduled or health-checked again.
    """
    try:
        url = normalise_server_url(which)
    except AdminError:
        url = None
    # The scheduling lock: no deploy can be choosing this server meanwhile.
    matches = [
        server
        for server in servers.lock_servers(session)
        if server.name == which or (url is not None and server.url == url)
    ]
    if not matches:
        raise AdminError(f"no compute server named or at {which!r}")
    server = matches[0]
    if server.removed:
        raise AdminError(f"compute server {server.name} ({server.url}) is already removed")
    # Every room that holds a slot there: a failed one whose Controller may still run
    # its Worker is lost with it too.
    live = [
        name if state in LIVE_ROOM_STATES else f"{name}: failed, may still run"
        for name, state in session.execute(
            select(Room.name, Room.state)
            .where(Room.compute_server_id == server.id, holds_slot())
            .order_by(Room.name)
        )
    ]
    if live and not force:
        raise AdminError(
            f"compute server {server.name} hosts {len(live)} live clean room(s) "
            f"({', '.join(live)}); removing it loses them: give --force to mark them lost"
        )
    when = servers.timestamp(now if now is not None else int(time.time()))
    server.removed = True
    server.reason = f"removed by the operator at {when}"
    session.flush()
    lost = servers.lose_rooms(
        session,
        server,
        f"compute server {server.name} was removed by the operator at {when}; "
        f"{servers.LOST_ROOM_ADVICE}",
        audit.OPERATOR,
    )
    audit.record(
        session,
        audit.OPERATOR,
        "server.removed",
        server.name,
        url=server.url,
        forced=force,
        rooms_lost=lost,
    )
    session.commit()
    return server, lost


@dataclass(frozen=True)
class ServerLoad:
    """The rooms that hold a slot on one compute server (``holds_slot``, as its capacity
    is checked): ``rooms`` of them, among them the failed ones whose Controller may still
    run their Worker, ``may_still_run`` (``project/room``, oldest first)."""

    rooms: int
    may_still_run: list[str]


def list_servers(session: Session) -> list[tuple[ComputeServer, ServerLoad]]:
    """Every compute server, by name, with the rooms that hold a slot on it."""
    holding = session.execute(
        select(Room.compute_server_id, Room.state, Room.name, Project.name)
        .join(Project, Project.id == Room.project_id)
        .where(holds_slot())
        .order_by(Room.id)
    ).all()
    counts: dict[int, int] = {}
    failed: dict[int, list[str]] = {}
    for server_id, state, room, project in holding:
        counts[server_id] = counts.get(server_id, 0) + 1
        if state not in LIVE_ROOM_STATES:
            failed.setdefault(server_id, []).append(f"{project}/{room}")
    listed = session.scalars(select(ComputeServer).order_by(ComputeServer.name))
    return [
        (server, ServerLoad(counts.get(server.id, 0), failed.get(server.id, [])))
        for server in listed
    ]
