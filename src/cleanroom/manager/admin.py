"""What the operator does on the manager's machine: projects, clients, compute servers.

These act on the database directly (``cleanroom admin …``); none is reachable
over HTTP. Each refusal is an :class:`AdminError` with one line to show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cleanroom.manager.credentials import hash_secret, new_client_id, new_secret
from cleanroom.manager.database import (
    LIVE_ROOM_STATES,
    Client,
    ComputeServer,
    Project,
    Room,
)

PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class AdminError(Exception):
    """An operator command was refused; the message is one line."""


@dataclass(frozen=True)
class NewClient:
    """A client just created; ``secret`` exists nowhere else (only its hash is stored)."""

    client_id: str
    project: str
    name: str | None
    secret: str


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
        session.commit()
    except IntegrityError as error:
        session.rollback()
        raise AdminError(f"a project named {name!r} exists") from error
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


def create_client(session: Session, project: str, name: str | None = None) -> NewClient:
    """A new client of ``project`` with a random id and secret."""
    owner = _project(session, project)
    client_id, secret = new_client_id(), new_secret()
    session.add(
        Client(id=client_id, project_id=owner.id, name=name, secret_hash=hash_secret(secret))
    )
    session.commit()
    return NewClient(client_id=client_id, project=owner.name, name=name, secret=secret)


def list_clients(session: Session, project: str | None = None) -> list[Client]:
    """Every client (of ``project`` if given), by project and creation."""
    query = select(Client).join(Project).order_by(Project.name, Client.created, Client.id)
    if project is not None:
        query = query.where(Project.id == _project(session, project).id)
    return list(session.scalars(query))


def set_client_disabled(session: Session, client_id: str, disabled: bool) -> Client:
    """Disable (or enable again) a client: its tokens stop working at once."""
    client = session.get(Client, client_id)
    if client is None:
        raise AdminError(f"no client {client_id!r}")
    client.disabled = disabled
    session.commit()
    return client


def normalise_server_url(url: str) -> str:
    """``url`` as stored: http(s), a host, no query or fragment, no trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AdminError(f"compute server URL {url!r} is not an http:// or https:// URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise AdminError(f"compute server URL {url!r} must not have credentials, query or fragment")
    return url.rstrip("/")


def add_server(session: Session, url: str, name: str | None = None) -> ComputeServer:
    """Register the compute server whose Controller answers at ``url``."""
    url = normalise_server_url(url)
    name = name or (urlsplit(url).netloc)
    if session.scalar(select(ComputeServer).where(ComputeServer.url == url)) is not None:
        raise AdminError(f"a compute server at {url} is registered")
    if session.scalar(select(ComputeServer).where(ComputeServer.name == name)) is not None:
        raise AdminError(f"a compute server named {name!r} is registered")
    server = ComputeServer(name=name, url=url)
    session.add(server)
    session.commit()
    return server


def list_servers(session: Session) -> list[tuple[ComputeServer, int]]:
    """Every compute server with its number of live (deploying or deployed) rooms."""
    load = (
        select(ComputeServer, func.count(Room.id))
        .outerjoin(
            Room,
            (Room.compute_server_id == ComputeServer.id) & Room.state.in_(LIVE_ROOM_STATES),
        )
        .group_by(ComputeServer.id)
        .order_by(ComputeServer.name)
    )
    return [(server, count) for server, count in session.execute(load).all()]
