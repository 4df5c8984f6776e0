"""Clean rooms: deployed on a compute server, listed, shown and deleted.

Who sees a room: the deployer's project, and every client whose registered
``user_id`` appears in the room's spec (inputs, outputs or runners); a room the
caller may not see is answered ``404`` like one that does not exist
(:func:`cleanroom.manager.callers.find_room`). Only the deployer's project may
delete it. A project has at most ``Settings.rooms_per_project`` rooms that hold a slot
(``room-quota``; live rooms, and failed ones whose Controller may still run their Worker:
:func:`cleanroom.manager.database.holds_slot`). The manager talks to the room's
Controller with a token for that one operation on that room
(:meth:`cleanroom.manager.grants.Grants.operation_headers`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cleanroom import runtimes
from cleanroom.manager import audit, servers
from cleanroom.manager.callers import Caller, check_still_acts, find_room, visible_rooms
from cleanroom.manager.database import (
    LIVE_ROOM_STATES,
    ComputeServer,
    Room,
    RoomMember,
    StoredFunction,
    holds_slot,
)
from cleanroom.manager.errors import (
    ComputeServerFailed,
    Conflict,
    Forbidden,
    NotFound,
    QuotaExceeded,
    Unavailable,
    Unprocessable,
)
from cleanroom.manager.functions import Functions
from cleanroom.manager.grants import Grants
from cleanroom.manager.revocation import revoke_room_tokens
from cleanroom.manager.settings import Settings
from cleanroom.manager.storage import digest_of
from cleanroom.protocol.bundle import FUNCTION_ID_PREFIX
from cleanroom.protocol.errors import MessageFormatError
from cleanroom.protocol.spec import WorkSpec
from cleanroom.protocol.sql import ENGINE_RUNTIME
from cleanroom.tokens import SCOPE_DELETE, SCOPE_DEPLOY

_log = logging.getLogger("cleanroom.manager")


def room_document(room: Room) -> dict[str, Any]:
    """A room as the API shows it (docs/api.md, "A room")."""
    return {
        "name": room.name,
        "project": room.project.name,
        "spec": json.loads(room.spec),
        "work_id": room.work_id,
        "function": FUNCTION_ID_PREFIX + room.function_digest,
        "state": room.state,
        "reason": room.reason,
        "compute_url": room.compute_url,
        "deployer": room.deployer,
        "created": room.created,
    }


def _members(spec: WorkSpec) -> set[str]:
    return {*spec.inputs.values(), *spec.outputs.values(), *spec.runners}


def parse_spec(document: dict[str, Any]) -> WorkSpec:
    """The spec of a deploy, checked whole (422 naming the field or the check)."""
    try:
        spec = WorkSpec.parse(document)
    except MessageFormatError as error:
        detail = f"spec field {error.actual}: {error.message}"
        raise Unprocessable(detail, **error.to_json()) from error
    try:
        # A SQL room runs the engine in the data runtime (the Worker checks both).
        runtimes.definition(ENGINE_RUNTIME if spec.sql is not None else spec.runtime)
    except runtimes.RuntimeUnavailable as error:
        detail = f"spec field runtime: {error.message}"
        raise Unprocessable(detail, **error.to_json()) from error
    return spec


class Rooms:
    """The rooms of every project, and their deploys and deletes on the Controllers."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        functions: Functions,
        grants: Grants,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.functions = functions
        self.grants = grants

    def list(self, caller: Caller, *, deleted: bool = False) -> list[dict[str, Any]]:
        """Every room the caller sees, oldest first; the deleted ones only if asked (they
        are kept forever, and anyone may name the caller in a room and delete it)."""
        with self.sessions() as session:
            query = visible_rooms(caller).order_by(Room.created, Room.id)
            if not deleted:
                query = query.where(Room.state != "deleted")
            return [room_document(room) for room in session.scalars(query)]

    def get(self, caller: Caller, name: str, project: str | None = None) -> dict[str, Any]:
        """The room ``name`` the caller sees (of ``project``, where several share it)."""
        with self.sessions() as session:
            return room_document(find_room(session, caller, name, project))

    def deploy(self, caller: Caller, document: dict[str, Any]) -> dict[str, Any]:
        """Validate, schedule and deploy a room; the room, deployed (else 502 saying why).

        The room is inserted ``deploying`` in the transaction that chose its server
        (so it holds its slot: concurrent deploys never oversubscribe), then deployed
        on the Controller outside any transaction, then marked ``deployed`` or
        ``failed`` unless it changed meanwhile (its server was found lost, or it was
        deleted). A failed room frees its slot, unless the deploy got no answer and the
        Controller did not confirm the room's delete either (``may_still_run``).
        """
        spec = parse_spec(document)
        digest = digest_of(spec.function)
        if digest is None:  # WorkSpec checked the pattern; stay closed anyway
            raise Unprocessable(f"spec field function: not a function ID: {spec.function}")
        no_function = NotFound(f"no function {spec.function} (upload its bundle first)")
        taken = Conflict(
            f"project {caller.project!r} has a clean room named {spec.name!r}",
            check="room-name",
            room=spec.name,
        )
        with self.sessions() as session:
            check_still_acts(session, caller)  # it may have waited for its turn
            if session.get(StoredFunction, digest) is None or not self.functions.visible(
                session, caller, digest
            ):
                raise no_function
            # Names live per project: another project's room of this name is invisible.
            live = select(Room.id).where(
                Room.project_id == caller.project_id,
                Room.name == spec.name,
                Room.state != "deleted",
            )
            if session.scalar(live) is not None:
                raise taken
            server = _schedule(session)
            self._within_quota(session, caller)
            # One live room per Work-ID, whichever project: a second Worker of the same
            # Work-ID accepts the sessions, status and receipts meant for the first, and
            # another project could deploy a copy of a spec it was shown (found by the
            # protocol red team). Checked under the scheduling lock, as the quota.
            twin = select(Room.project_id).where(Room.work_id == spec.work_id, holds_slot())
            if session.scalar(twin) is not None:
                raise Conflict(
                    f"a clean room with Work-ID {spec.work_id} is live already: one room per "
                    "spec (give a new spec a new nonce)",
                    check="work-id-live",
                    work_id=spec.work_id,
                )
            # Again under the lock: a garbage collection may have deleted the bundle
            # since; from here on it cannot (storage.collect_garbage).
            bundle = select(StoredFunction.size).where(StoredFunction.digest == digest)
            size = session.scalar(bundle.with_for_update(read=True))
            if size is None:
                raise no_function
            # The room keeps its bundle stored, so the bundle counts in the project's
            # function quota (another project's bundle too: a participant of one of its
            # rooms may deploy on it). After the bundle's lock: an upload locks the
            # bundle, then the project.
            self.functions.within_quota(session, caller, digest, size)
            room = Room(
                name=spec.name,
                project_id=caller.project_id,
                deployer=caller.client_id,
                spec=spec.canonical().decode("utf-8"),
                work_id=spec.work_id,
                function_digest=digest,
                state="deploying",
                compute_server_id=server.id,
                compute_url=server.url,
                members=[RoomMember(user_id=member) for member in sorted(_members(spec))],
            )
            session.add(room)
            try:
                session.commit()
            except IntegrityError as error:  # another deploy of that name won the race
                session.rollback()
                raise taken from error
            room_id, url, server_name = room.id, server.url, server.name
        failure = self._put_room(url, caller.project, spec)
        may_still_run = False
        if failure is not None and failure.unanswered:
            # The Controller may have the request and go on to start the Worker (a real
            # one does: it does not stop when its caller goes away). It is asked to delete
            # the room, which also ends a deploy it is still carrying out; until it
            # confirms, the room keeps its slot.
            # Within Settings.abandoned_delete_timeout: the member's answer waits for it.
            refused = self._delete_room(
                url, caller.project, spec.name, self.settings.abandoned_delete_timeout
            )
            may_still_run = refused is not None
            if may_still_run:
                failure = Failure(
                    f"{failure.reason}; nor did it confirm the room's delete ({refused}): "
                    "the room keeps its slot until it is deleted",
                    unanswered=True,
                )
        reason = None if failure is None else failure.reason
        return self._settle(caller, spec, room_id, url, server_name, reason, may_still_run)

    def _within_quota(self, session: Session, caller: Caller) -> None:
        """Refuse a room past the project's live rooms (``room-quota``); counted with the
        scheduling lock held, so concurrent deploys cannot pass it together."""
        limit = self.settings.rooms_per_project
        live = session.scalar(
            select(func.count(Room.id)).where(Room.project_id == caller.project_id, holds_slot())
        )
        if live is not None and live >= limit:
            raise QuotaExceeded(
                "room-quota",
                limit,
                live + 1,
                f"project {caller.project!r} has {live} live clean rooms (a failed one counts "
                "while its Controller may still run it), the most one project may have: "
                "delete one first",
                "--rooms-per-project",
            )

    def _settle(
        self,
        caller: Caller,
        spec: WorkSpec,
        room_id: int,
        url: str,
        server_name: str,
        reason: str | None,
        may_still_run: bool = False,
    ) -> dict[str, Any]:
        """Record the deploy's outcome, unless the room changed meanwhile; the room."""
        outcome = "failed" if reason else "deployed"
        with self.sessions() as session:
            changed = servers.rows_changed(
                session,
                update(Room)
                .where(Room.id == room_id, Room.state == "deploying")
                .values(state=outcome, reason=reason, may_still_run=may_still_run),
            )
            stored = session.get_one(Room, room_id, populate_existing=True)
            if changed == 1:
                details: dict[str, Any] = {
                    "project": caller.project,
                    "work_id": spec.work_id,
                    "compute_server": server_name,
                }
                if reason:
                    details["reason"] = reason
                if may_still_run:
                    details["may_still_run"] = True
                audit.record(session, caller.client_id, f"room.{outcome}", spec.name, **details)
            session.commit()
            answer = room_document(stored)
        if stored.state != "deployed":
            why = answer["reason"] or f"the room was {stored.state} while it was being deployed"
            _log.warning("deploying %s on %s failed: %s", spec.name, url, why)
            raise ComputeServerFailed(why, room=answer["name"], state=answer["state"])
        return answer

    def _controller(self, timeout: float | None = None) -> httpx.Client:
        """A client for one request to a Controller (its answer read with a bound), waiting
        ``controller_timeout``, or ``timeout`` if that is shorter."""
        if timeout is None or timeout > self.settings.controller_timeout:
            timeout = self.settings.controller_timeout
        return httpx.Client(timeout=timeout, transport=servers.controller_transport(timeout))

    def _put_room(self, url: str, project: str, spec: WorkSpec) -> Failure | None:
        """Deploy on the Controller at ``url``; why it failed, or None."""
        try:
            with self._controller() as client:
                response = servers.send_capped(
                    client,
                    "PUT",
                    f"{url}/v1/rooms/{spec.name}",
                    json={"spec": spec.document()},
                    headers=self.grants.operation_headers(url, project, spec.name, SCOPE_DEPLOY),
                )
        except httpx.HTTPError as error:
            why = servers.one_line(str(error)) or type(error).__name__
            # Refused or not connected: the request never reached the Controller.
            never_sent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
            return Failure(
                f"cannot reach the compute server at {url}: {why}", unanswered=not never_sent
            )
        if not response.is_success:
            return Failure(
                f"the compute server at {url} answered {response.status_code}: "
                f"{servers.answer_detail(response)}",
                unanswered=False,
            )
        return None

    def delete(self, caller: Caller, name: str, project: str | None = None) -> dict[str, Any]:
        """Delete a room: tell its Controller, then mark it ``deleted`` (deployer's project).

        A live room, or a failed one that may still run, becomes ``deleted`` only once
        its Controller confirms (2xx, or 404: it does not have it); otherwise 502 and
        nothing changes, because its Worker may still be running (and it keeps its
        slot). Any other ``failed`` or ``lost`` room is deleted even when its
        Controller cannot be told (it may be gone for good): its Worker, if any, no
        longer holds anything anyone can use through the manager.
        """
        with self.sessions() as session:
            check_still_acts(session, caller)  # it may have waited for its turn
            room = find_room(session, caller, name, project)
            if room.project_id != caller.project_id:
                raise Forbidden(
                    f"only project {room.project.name!r}, which deployed it, may delete {name!r}"
                )
            if room.state == "deleted":
                return room_document(room)
            # The stored name, not the path's: a room the caller sees, exactly as deployed.
            room_id, url, owner, before = room.id, room.compute_url, room.project.name, room.state
            name, may_still_run = room.name, room.state == "failed" and room.may_still_run
        refused = self._delete_room(url, owner, name)
        if refused is not None and (before in LIVE_ROOM_STATES or may_still_run):
            raise ComputeServerFailed(f"{refused}; the room is unchanged", room=name)
        with self.sessions() as session:
            stored = session.get_one(Room, room_id)
            stored.state = "deleted"
            session.flush()
            # Its tokens name its project and name, which the next room of that name on
            # the same server carries too: none of them may reach that room.
            revoked = revoke_room_tokens(
                session, room_id, int(time.time()), self.settings.token_leeway
            )
            audit.record(
                session,
                caller.client_id,
                "room.deleted",
                name,
                project=owner,
                before=before,
                controller=refused or "confirmed",
                tokens_revoked=revoked,
            )
            session.commit()
            return room_document(stored)

    def _delete_room(
        self, url: str, project: str, name: str, timeout: float | None = None
    ) -> str | None:
        """Delete on the Controller at ``url`` (waiting at most ``timeout``, if shorter than
        ``controller_timeout``); why it did not confirm, or None."""
        try:
            with self._controller(timeout) as client:
                response = servers.send_capped(
                    client,
                    "DELETE",
                    f"{url}/v1/rooms/{name}",
                    headers=self.grants.operation_headers(url, project, name, SCOPE_DELETE),
                )
        except httpx.HTTPError as error:
            why = servers.one_line(str(error)) or type(error).__name__
            return f"cannot reach the compute server at {url} to delete {name!r}: {why}"
        if servers.delete_confirmed(response):
            return None
        return (
            f"the compute server at {url} refused to delete {name!r} "
            f"({response.status_code}: {servers.answer_detail(response)})"
        )


@dataclass(frozen=True)
class Failure:
    """Why a deploy failed; ``unanswered``: the request may have reached the Controller
    and there was no answer, so the Controller may still carry it out."""

    reason: str
    unanswered: bool


def _schedule(session: Session) -> ComputeServer:
    """The compute server for a new room, scheduling lock held (``servers.schedule``)."""
    try:
        return servers.schedule(session)
    except servers.NoServerAvailable as error:
        raise Unavailable(str(error), servers=error.refusals) from error
