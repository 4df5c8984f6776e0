"""Projects, their members and roles, and the members' credentials (clients).

One set of operations behind two doors: ``cleanroom admin`` on the manager's
machine (actor :data:`cleanroom.manager.audit.OPERATOR`) and a project owner's
calls over HTTP (actor: the owner's client id). Every function changes the
session and records its audit entry in the same transaction; the caller commits,
so the change and its entry land together or not at all. Every refusal is a
:class:`ProjectRefused` (a :class:`cleanroom.errors.CheckFailed`) whose
``http_status`` is what the HTTP API answers.

The rules:

- A **member** is a person or system in one project, with the role ``owner``
  (manages the project's members and credentials) or ``member``. A **client** is
  one credential (client id and secret) of one member.
- A client created without a member is its own member: a new member named after
  the client id, role ``member``. That is what every client was before roles.
- **Removing** a member disables all its clients and revokes their tokens, then
  deletes the member; its clients stay (rooms name their deployer) with no
  member. A client without a member is refused everywhere: at login, on every
  token it holds, and when someone tries to enable it again.
- **Disabling** or **rotating** a client revokes every token issued to it so far
  (:func:`revoke_tokens`); rotating also replaces its secret, so the old one is
  refused at once.
- An owner cannot remove or demote the project's last owner (``409 last-owner``).
  The operator can: a project without owners is managed by the operator alone,
  as every project was before roles.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cleanroom.errors import CheckFailed
from cleanroom.manager import audit
from cleanroom.manager.credentials import hash_secret, new_client_id, new_secret
from cleanroom.manager.database import ROLES, Client, Member, Project

MEMBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}")
"""A member's name: a letter or digit, then letters, digits and ``._@+-`` (200 at most)."""
MAX_CLIENT_LABEL = 100
"""The longest label (``name``) of a client, in characters; it must be printable."""

Clock = Callable[[], float]


class ProjectRefused(CheckFailed):
    """A project, member or client operation was refused; ``check`` names the rule."""

    http_status = 409


class NotFound(ProjectRefused):
    """The project, member or client named does not exist (for this caller)."""

    http_status = 404


class Forbidden(ProjectRefused):
    """The caller's role does not allow the operation."""

    http_status = 403


class Invalid(ProjectRefused):
    """A name or role is not well-formed."""

    http_status = 422


@dataclass(frozen=True)
class NewClient:
    """A client just created or rotated; ``secret`` exists nowhere else (only its hash is kept)."""

    client_id: str
    project: str
    name: str | None
    secret: str
    member: str


# -- reading -----------------------------------------------------------------------------


def find_project(session: Session, name: str) -> Project:
    """The project ``name``, or :class:`NotFound` ``project``."""
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        raise NotFound("project", "the name of a project", name, f"no project named {name!r}")
    return project


def find_member(session: Session, project: Project, name: str) -> Member:
    """The member ``name`` of ``project``, or :class:`NotFound` ``member`` (``Invalid``
    ``member-name`` for a name no member can have: it is never looked up)."""
    _check_member_name(name)
    member = session.scalar(
        select(Member).where(Member.project_id == project.id, Member.name == name)
    )
    if member is None:
        raise NotFound(
            "member",
            f"the name of a member of project {project.name!r}",
            name,
            f"project {project.name!r} has no member named {name!r}",
        )
    return member


def find_client(session: Session, client_id: str, project: Project | None = None) -> Client:
    """The client ``client_id`` (of ``project``, when given), or :class:`NotFound` ``client``.

    A client of another project is answered exactly like one that does not exist.
    """
    client = session.get(Client, client_id)
    if client is None or (project is not None and client.project_id != project.id):
        where = f" in project {project.name!r}" if project is not None else ""
        raise NotFound(
            "client", f"the id of a client{where}", client_id, f"no client {client_id!r}{where}"
        )
    return client


def list_members(session: Session, project: Project) -> list[Member]:
    """The members of ``project``, by name."""
    query = select(Member).where(Member.project_id == project.id).order_by(Member.name)
    return list(session.scalars(query))


def clients_of(session: Session, member: Member) -> list[Client]:
    """The clients (credentials) of ``member``, oldest first."""
    query = select(Client).where(Client.member_id == member.id).order_by(Client.created, Client.id)
    return list(session.scalars(query))


def client_document(client: Client) -> dict[str, Any]:
    """A client as the API shows it: never its secret, which is not stored anyway."""
    return {
        "client_id": client.id,
        "project": client.project.name,
        "member": client.member.name if client.member is not None else None,
        "name": client.name,
        "disabled": client.disabled,
        "user_id": client.user_id,
        "created": client.created,
    }


def member_document(session: Session, member: Member) -> dict[str, Any]:
    """A member as the API shows it, with its clients."""
    return {
        "name": member.name,
        "project": member.project.name,
        "role": member.role,
        "created": member.created,
        "clients": [client_document(client) for client in clients_of(session, member)],
    }


def new_client_document(created: NewClient) -> dict[str, Any]:
    """The answer to creating or rotating a client: the one place its secret is shown."""
    return {
        "client_id": created.client_id,
        "client_secret": created.secret,
        "project": created.project,
        "member": created.member,
        "name": created.name,
    }


# -- who may manage a project -------------------------------------------------------------


def owned_project(session: Session, client_id: str, name: str) -> Project:
    """The project ``name`` if the client ``client_id`` belongs to one of its owners.

    A client of another project gets :class:`NotFound` ``project``, the same answer
    as for a project that does not exist: it learns nothing about the project's
    existence or members. A client of the project that is not an owner's gets
    :class:`Forbidden` ``project-role``.

    The project's row is locked first (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite
    has one writer at a time anyway), so owners changing roles at once are
    serialised: two owners cannot demote each other and leave none. The role is
    read after the lock, so a demotion committed meanwhile counts.
    """
    session.execute(select(Project.id).where(Project.name == name).with_for_update())
    client = session.get(Client, client_id, populate_existing=True)
    if client is None or client.project.name != name:
        raise NotFound(
            "project", "the name of the caller's project", name, f"no project named {name!r}"
        )
    role = client.member.role if client.member is not None else None
    if role != "owner":
        raise Forbidden(
            "project-role",
            "owner",
            role,
            f"only an owner of project {name!r} may manage its members and clients",
            hint="ask an owner of the project, or the operator",
        )
    return client.project


# -- members -----------------------------------------------------------------------------


def _check_member_name(name: str) -> None:
    if not MEMBER_NAME.fullmatch(name):
        raise Invalid(
            "member-name",
            "1-200 letters, digits or '._@+-', starting with a letter or digit",
            name[:200],
            f"member name {name[:200]!r} is not valid",
        )


def check_client_label(name: str | None) -> None:
    """A client's label is 1 to :data:`MAX_CLIENT_LABEL` printable characters (no control
    characters, no line breaks), not starting or ending with a space; or absent."""
    if name is None:
        return
    if not 0 < len(name) <= MAX_CLIENT_LABEL or not name.isprintable() or name != name.strip():
        shown = repr(name[:40]) + ("…" if len(name) > 40 else "")
        raise Invalid(
            "client-name",
            f"1-{MAX_CLIENT_LABEL} printable characters, no space at either end",
            f"{len(name)} characters: {shown}",
            "the client's label is not a short line of printable text",
        )


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise Invalid("member-role", list(ROLES), role, f"{role!r} is not a role")


def _owners(session: Session, project: Project) -> int:
    query = select(func.count(Member.id)).where(
        Member.project_id == project.id, Member.role == "owner"
    )
    return session.scalar(query) or 0


def _keep_an_owner(session: Session, project: Project, member: Member, what: str) -> None:
    if member.role == "owner" and _owners(session, project) <= 1:
        raise ProjectRefused(
            "last-owner",
            "another owner in the project",
            f"{member.name!r} is the only owner",
            f"cannot {what} {member.name!r}: it is the last owner of project {project.name!r}",
            hint="make another member an owner first",
        )


def _member_target(project: Project, name: str) -> str:
    return f"member:{project.name}/{name}"


def add_member(session: Session, actor: str, project: Project, name: str, role: str) -> Member:
    """A new member ``name`` of ``project`` with ``role``; :class:`ProjectRefused` if it exists."""
    _check_member_name(name)
    _check_role(role)
    existing = session.scalar(
        select(Member).where(Member.project_id == project.id, Member.name == name)
    )
    if existing is not None:
        raise ProjectRefused(
            "member-exists",
            f"a name no member of project {project.name!r} has",
            name,
            f"project {project.name!r} has a member named {name!r} (role {existing.role})",
        )
    member = Member(project_id=project.id, name=name, role=role)
    session.add(member)
    session.flush()
    audit.record(session, actor, "member.added", _member_target(project, name), role=role)
    return member


def set_role(
    session: Session,
    actor: str,
    project: Project,
    name: str,
    role: str,
    *,
    keep_an_owner: bool = True,
) -> Member:
    """Give the member ``name`` the role ``role`` (a no-op, unrecorded, if it has it).

    With ``keep_an_owner`` (owners over HTTP), demoting the last owner is refused.
    """
    _check_role(role)
    member = find_member(session, project, name)
    if member.role == role:
        return member
    if keep_an_owner:
        _keep_an_owner(session, project, member, "demote")
    previous, member.role = member.role, role
    session.flush()
    audit.record(
        session,
        actor,
        "member.role_changed",
        _member_target(project, name),
        **{"from": previous, "to": role},
    )
    return member


def put_member(
    session: Session, actor: str, project: Project, name: str, role: str
) -> tuple[Member, bool]:
    """Add the member ``name`` with ``role``, or give the existing one that role.

    An owner's ``PUT``; True when the member was added. The last owner stays one.
    """
    _check_member_name(name)
    _check_role(role)
    existing = session.scalar(
        select(Member).where(Member.project_id == project.id, Member.name == name)
    )
    if existing is None:
        return add_member(session, actor, project, name, role), True
    return set_role(session, actor, project, name, role, keep_an_owner=True), False


def remove_member(
    session: Session,
    actor: str,
    project: Project,
    name: str,
    *,
    keep_an_owner: bool = True,
    clock: Clock = time.time,
) -> list[str]:
    """Remove the member ``name``: disable its clients and revoke their tokens; their ids.

    With ``keep_an_owner`` (owners over HTTP), removing the last owner is refused.
    """
    member = find_member(session, project, name)
    if keep_an_owner:
        _keep_an_owner(session, project, member, "remove")
    disabled: list[str] = []
    for client in clients_of(session, member):
        client.disabled = True
        revoke_tokens(client, clock)
        client.member = None
        disabled.append(client.id)
    role = member.role
    session.flush()
    session.delete(member)
    session.flush()
    audit.record(
        session,
        actor,
        "member.removed",
        _member_target(project, name),
        role=role,
        clients_disabled=disabled,
    )
    return disabled


# -- clients -----------------------------------------------------------------------------


def revoke_tokens(client: Client, clock: Clock = time.time) -> None:
    """Refuse every token issued to ``client`` until now.

    Tokens carry ``iat`` in whole seconds, so "issued before now" cannot tell a token
    from earlier in this second from a later one: ``tokens_not_before`` is set to
    the start of the next second, refusing every token of this second too. The
    token endpoint waits for that second to pass before it issues the client a new
    token (``Grants._wait_until``), so a token is never born revoked.
    """
    client.tokens_not_before = max(client.tokens_not_before, int(clock()) + 1)


def create_client(
    session: Session,
    actor: str,
    project: Project,
    member_name: str | None = None,
    name: str | None = None,
) -> NewClient:
    """A new client with a random id and secret, of the member ``member_name``.

    Without ``member_name``, the client is its own member: a new member named
    after the client id, role ``member``. ``name`` is a label for people.
    """
    check_client_label(name)
    client_id, secret = new_client_id(), new_secret()
    # Hashed before the first write of the transaction: argon2id takes a few hundred ms,
    # and SQLite's write lock, once taken, holds up every other writer meanwhile.
    secret_hash = hash_secret(secret)
    if member_name is None:
        member = add_member(session, actor, project, client_id, "member")
    else:
        member = find_member(session, project, member_name)
    session.add(
        Client(
            id=client_id,
            project_id=project.id,
            member_id=member.id,
            name=name,
            secret_hash=secret_hash,
        )
    )
    session.flush()
    audit.record(
        session, actor, "client.created", f"client:{client_id}", member=member.name, name=name
    )
    return NewClient(
        client_id=client_id, project=project.name, name=name, secret=secret, member=member.name
    )


def _member_of(client: Client, what: str) -> Member:
    if client.member is None:
        raise ProjectRefused(
            "client-member",
            "a client of a member of the project",
            "a client whose member was removed",
            f"cannot {what} client {client.id!r}: its member was removed",
            hint="create a new client for a current member",
        )
    return client.member


def disable_client(
    session: Session, actor: str, client: Client, clock: Clock = time.time
) -> Client:
    """Disable ``client``: it cannot log in, and every token it holds is refused at once."""
    client.disabled = True
    revoke_tokens(client, clock)
    session.flush()
    audit.record(session, actor, "client.disabled", f"client:{client.id}")
    return client


def enable_client(session: Session, actor: str, client: Client) -> Client:
    """Enable ``client`` again (its secret is unchanged, its old tokens stay refused).

    A client whose member was removed cannot be enabled (``client-member``).
    """
    _member_of(client, "enable")
    client.disabled = False
    session.flush()
    audit.record(session, actor, "client.enabled", f"client:{client.id}")
    return client


def rotate_client(
    session: Session, actor: str, client: Client, clock: Clock = time.time
) -> NewClient:
    """A new secret for ``client``: the old one and every token issued so far are refused.

    A client whose member was removed cannot be rotated (``client-member``).
    """
    member = _member_of(client, "rotate")
    secret = new_secret()
    client.secret_hash = hash_secret(secret)
    revoke_tokens(client, clock)
    session.flush()
    audit.record(session, actor, "client.rotated", f"client:{client.id}")
    return NewClient(
        client_id=client.id,
        project=client.project.name,
        name=client.name,
        secret=secret,
        member=member.name,
    )
