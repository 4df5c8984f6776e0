"""What a project's owners manage: its members and its clients (docs/api.md,
"Projects: members, roles and clients"), over :mod:`cleanroom.manager.projects`.

Another project is ``404`` as if it did not exist, a member who is not an owner
``403`` (:func:`cleanroom.manager.projects.owned_project`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session, sessionmaker

from cleanroom.limits import RateLimiter, retry_after
from cleanroom.manager import projects
from cleanroom.manager.callers import Caller, check_still_acts
from cleanroom.manager.database import Project
from cleanroom.manager.routes.deps import ClientId, CurrentCaller, ProjectName, refused_again
from cleanroom.manager.services import Services
from cleanroom.tokens import TokenError
from cleanroom.web import Refused

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class RoleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str


class NewClientRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    member: str | None = None
    name: str | None = None


def router(services: Services) -> APIRouter:
    """The owners' routes of ``/v1/projects/{project}``."""
    sessions = services.sessions
    secrets_made = RateLimiter(services.settings.secret_rate_per_project)
    routes = APIRouter()

    def spend_a_secret(project: Project) -> None:
        """Count one new secret of ``project`` (argon2id hashes it: CPU and 64 MiB), or
        429: unlimited, one project's owners could hold up every user of the manager."""
        wait = secrets_made.take(project.name)
        if wait is not None:
            raise Refused(
                429,
                f"too many new secrets for project {project.name!r}: try again later",
                headers={"Retry-After": retry_after(wait)},
                check="secret-rate",
                expected=f"at most {secrets_made.limit.burst} new secrets at once, then "
                f"{secrets_made.limit.per_second:g} a second",
                actual="more",
            )

    @routes.get("/v1/projects/{project}/members")
    def project_members(project: ProjectName, caller: CurrentCaller) -> dict[str, Any]:
        with owned(sessions, caller, project) as (session, found):
            members = projects.list_members(session, found)
            return {"members": [projects.member_document(session, m) for m in members]}

    @routes.put("/v1/projects/{project}/members/{name}")
    def put_member(
        project: ProjectName, name: str, caller: CurrentCaller, body: RoleRequest
    ) -> Response:
        with owned(sessions, caller, project) as (session, found):
            member, added = projects.put_member(session, caller.client_id, found, name, body.role)
            document = projects.member_document(session, member)
        return JSONResponse(document, status_code=201 if added else 200)

    @routes.delete("/v1/projects/{project}/members/{name}")
    def remove_member(project: ProjectName, name: str, caller: CurrentCaller) -> dict[str, Any]:
        with owned(sessions, caller, project) as (session, found):
            disabled = projects.remove_member(session, caller.client_id, found, name)
        return {"name": name, "project": project, "clients_disabled": disabled}

    @routes.post("/v1/projects/{project}/clients")
    def create_client(
        project: ProjectName, caller: CurrentCaller, body: NewClientRequest
    ) -> Response:
        with owned(sessions, caller, project) as (session, found):
            spend_a_secret(found)
            created = projects.create_client(
                session, caller.client_id, found, body.member, body.name
            )
        return JSONResponse(
            projects.new_client_document(created), status_code=201, headers=_NO_STORE
        )

    @routes.post("/v1/projects/{project}/clients/{client_id}/disable")
    def disable_client(
        project: ProjectName, client_id: ClientId, caller: CurrentCaller
    ) -> dict[str, Any]:
        with owned(sessions, caller, project) as (session, found):
            client = projects.find_client(session, client_id, found)
            projects.disable_client(session, caller.client_id, client)
            return projects.client_document(client)

    @routes.post("/v1/projects/{project}/clients/{client_id}/enable")
    def enable_client(
        project: ProjectName, client_id: ClientId, caller: CurrentCaller
    ) -> dict[str, Any]:
        with owned(sessions, caller, project) as (session, found):
            client = projects.find_client(session, client_id, found)
            projects.enable_client(session, caller.client_id, client)
            return projects.client_document(client)

    @routes.post("/v1/projects/{project}/clients/{client_id}/rotate")
    def rotate_client(project: ProjectName, client_id: ClientId, caller: CurrentCaller) -> Response:
        with owned(sessions, caller, project) as (session, found):
            client = projects.find_client(session, client_id, found)
            spend_a_secret(found)
            rotated = projects.rotate_client(session, caller.client_id, client)
        return JSONResponse(projects.new_client_document(rotated), headers=_NO_STORE)

    return routes


@contextmanager
def owned(
    sessions: sessionmaker[Session], caller: Caller, project: str
) -> Iterator[tuple[Session, Project]]:
    """A session and ``project`` if the caller is one of its owners; commits at the end.

    The owner's rights are read in the transaction that uses them: its role
    (``owned_project``), and that its client and token still count
    (``check_still_acts``): a sync route's handler may wait for a thread after its
    caller was authenticated, and an owner's client disabled meanwhile still acted.
    """
    with sessions() as session:
        found = projects.owned_project(session, caller.client_id, project)
        try:
            check_still_acts(session, caller)
        except TokenError as error:
            raise refused_again(error) from error
        yield session, found
        session.commit()
