"""Compute servers: where a new clean room goes, and whether each server still answers.

**Scheduling** (:func:`schedule`). A new room goes to a server that is not removed,
whose state is ``healthy`` or ``unknown`` (registered, not checked yet: a new
server is usable at once, and its first health check follows within seconds), and
that has a free slot (fewer live rooms than its capacity); the least loaded first
(live rooms / capacity), the oldest registration on a tie. The capacity check and
the room's insert are one transaction that first takes the *scheduling lock*
(:func:`lock_servers`: every server row, ``SELECT … FOR UPDATE`` in id order on
PostgreSQL, the database's write lock on SQLite), so two deploys never both take
the last slot. A room whose deploy fails becomes ``failed`` and no longer counts,
unless its Controller may still start its Worker (the deploy got no answer, and the
Controller did not confirm the room's delete): then it keeps its slot until it is
deleted (:func:`cleanroom.manager.database.holds_slot`).

**Health** (:class:`HealthChecker`). Every ``health_interval`` seconds the manager
asks each Controller ``GET /v1/health``. :func:`judge` turns the answer into the
server's next state, a pure function of the old state and what was seen:

- a well-formed answer with ``status: ok`` and the TEE kind the server was
  registered with: ``healthy``;
- a well-formed answer that is not fit (``degraded``: its Attester died and a new
  one did not start; another TEE kind than registered): ``unhealthy`` at once, with that reason. The
  server answered, so it is never ``lost`` for this, and its rooms stay as they are;
- no answer (refused, timed out, not 200, not the health document): one more
  failure. After ``health_failures`` in a row the server is ``unhealthy``; once it
  has also not answered for ``lost_after`` seconds it is ``lost``, and every live
  room on it becomes ``lost``: its data lived only inside that server's enclaves
  and cannot be recovered anywhere else, so the only way on is to redeploy.

A server that answers again is ``healthy`` (or ``unhealthy``) again, but its lost
rooms stay lost: everyone was told to redeploy, and the manager cannot know what
the Worker went through meanwhile. Delete them (that reaches the Controller again
and frees their Workers). While a server is only ``unhealthy`` its rooms stay
``deployed``: it may be a short outage, and nothing is lost yet.

The Controller's health answer also says how many rooms it runs. When that is
fewer than the manager's ``deployed`` rooms there, the manager asks for each of
them (``GET /v1/rooms/{name}``) and marks lost those the Controller answers
``404`` or ``410`` (the Worker died, or the Controller lost it). Only the count is
compared, so a Controller that also runs rooms the manager does not know (a deploy
that timed out but went through) can hide a dead Worker until its next check.

**Deploys the manager did not finish** (:meth:`HealthChecker.settle_stale_deploys`).
A room is ``deploying`` while one manager process waits for the Controller's answer,
at most ``controller_timeout`` seconds. A room still ``deploying`` well after that
(:data:`STALE_DEPLOY_MARGIN` more) was left by a manager that stopped mid-deploy:
it would hold its server's slot for ever. The checker asks that server about it:
a Worker it runs makes the room ``deployed``; ``404``/``410`` (or a deleted
Worker) makes it ``failed`` with a reason saying so, which frees the slot. Any
other answer, or none, leaves it for the next round.

**Failed rooms that keep their slot** (:meth:`HealthChecker.release_failed_rooms`).
A room whose deploy got no answer, nor its delete, is ``failed`` with
``may_still_run``: its Controller may still run its Worker, so it holds its slot.
Each round the checker asks that Controller again to delete it (a ``delete`` token);
once it confirms (2xx or ``404``), the room's slot is free (``room.released``).

A server's questions about its rooms, its stale deploys and these deletes together
take at most :data:`ROOM_QUESTIONS_BUDGET` health timeouts per round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, cast

import httpx
from sqlalchemy import Update, func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, sessionmaker

from cleanroom.answers import IDENTITY_ONLY, Deadline, read_bounded
from cleanroom.errors import Error
from cleanroom.manager import audit
from cleanroom.manager.database import ComputeServer, Room, holds_slot
from cleanroom.manager.resolution import BoundedResolution, NameTooSlow, NoAddressAnswered
from cleanroom.manager.settings import Settings
from cleanroom.tls import tls_context
from cleanroom.tokens import SCOPE_DELETE, SCOPE_STATUS

SCHEDULABLE_STATES = ("unknown", "healthy")
"""Server states a new room may be scheduled in."""
TEE_KINDS = ("simulated", "gramine")
MANAGER_ACTOR = "cleanroom-manager"
LOST_ROOM_ADVICE = (
    "a clean room's data lives only inside its enclave and cannot be recovered elsewhere: redeploy"
)

STALE_DEPLOY_MARGIN = 30
"""Seconds past ``controller_timeout`` after which a ``deploying`` room was abandoned."""
WORKER_LIVE_STATES = ("collecting", "running", "done", "failed")
"""A Controller's room states that mean its Worker runs (``failed``: its run failed)."""

_log = logging.getLogger("cleanroom.manager.servers")


def timestamp(seconds: int) -> str:
    """``seconds`` since the epoch as an ISO 8601 UTC time, for reasons people read."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line of at most ``limit`` characters, for a reason people read."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


DEFAULT_DEADLINE = 60.0
"""For a client without a read timeout: the whole answer within a minute."""
NO_KEEPALIVE = httpx.Limits(max_keepalive_connections=0)
"""Every request to a Controller on a new connection, so that its deadline can end it."""


def controller_transport(timeout: float) -> httpx.BaseTransport:
    """The transport of the manager's requests to Controllers: the manager's TLS trust,
    no keep-alive, and a host name resolved within the connect timeout (``timeout`` if
    a request has none; :class:`cleanroom.manager.resolution.BoundedResolution`)."""
    return BoundedResolution(
        httpx.HTTPTransport(verify=tls_context(), limits=NO_KEEPALIVE), timeout
    )


MAX_ANSWER_BYTES = 1 << 20
"""The most of a Controller's answer the manager reads (1 MiB): a Controller is untrusted,
and what it answers (health, a room's status, a deploy or delete) is a short JSON document."""


class AnswerTooLarge(httpx.RequestError, Error):
    """A Controller's answer longer than :data:`MAX_ANSWER_BYTES`: treated as no answer
    (an ``httpx.RequestError``, as every caller takes it; cleanroom's own error too)."""


class AnswerEncoded(httpx.DecodingError, Error):
    """A Controller's answer in a content coding (the manager asks for none): not read,
    treated as no answer (decoded, 1,828 bytes coded ``gzip, gzip`` became 1 GiB of the
    manager's memory before its size was checked: found by h34)."""


class AnswerTooSlow(httpx.TimeoutException, Error):
    """A Controller's answer not complete within the client's read timeout: treated as
    no answer (a Controller that sent a byte now and then held the manager's thread, and
    with one server's health check every server's, for as long as it liked)."""


def send_capped(client: httpx.Client, method: str, url: str, **options: Any) -> httpx.Response:
    """``client``'s answer to ``method url``, its body read only up to
    :data:`MAX_ANSWER_BYTES` and the whole of it within the client's read timeout: a
    longer one raises :class:`AnswerTooLarge`, a slower one :class:`AnswerTooSlow`, one
    in a content coding (asked for none) :class:`AnswerEncoded`, unread (each an
    ``httpx.HTTPError``, which every caller already takes for no answer). ``client``
    keeps no connection alive (the deadline acts on the
    connection the request opens: :class:`cleanroom.answers.Deadline`)."""
    read = client.timeout.read
    seconds = read if read is not None else DEFAULT_DEADLINE
    deadline = Deadline(seconds)
    request = client.build_request(method, url, extensions=deadline.extensions, **options)
    request.headers.update(IDENTITY_ONLY)
    with deadline:
        try:
            return read_bounded(
                client.send(request, stream=True),
                MAX_ANSWER_BYTES,
                lambda: AnswerTooLarge(
                    f"{method} {url}: the answer is longer than {MAX_ANSWER_BYTES} bytes",
                    request=request,
                ),
                lambda coding: AnswerEncoded(
                    f"{method} {url}: the answer is in a content coding ({coding}), not read",
                    request=request,
                ),
            )
        except httpx.HTTPError as error:
            if not deadline.expired or isinstance(error, NameTooSlow | NoAddressAnswered):
                raise  # the deadline expired while the name was looked up, or connecting
            raise AnswerTooSlow(
                f"{method} {url}: no whole answer within {seconds} s", request=request
            ) from error


ROOM_QUESTIONS_BUDGET = 2
"""A server's check asks about its rooms for at most this many health timeouts."""


def answer_detail(response: httpx.Response) -> str:
    """What a Controller said when it refused: its problem's detail (naming the check,
    if one refused), or its body, on one line."""
    try:
        body = response.json()
    except ValueError:
        return one_line(response.text) or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        if isinstance(body.get("check"), str):  # a refused check: name it
            return one_line(f"{body['detail']} (check {body['check']})")
        return one_line(body["detail"])
    return one_line(response.text)


# -- scheduling -------------------------------------------------------------------------


class NoServerAvailable(Error):
    """No compute server may take a new room; ``refusals`` says why, one per server."""

    http_status = 503

    def __init__(self, refusals: list[str]) -> None:
        if refusals:
            message = "no compute server can take a new clean room: " + "; ".join(refusals)
        else:
            message = (
                "no compute server is registered "
                "(the operator adds one with `cleanroom admin server add URL`)"
            )
        super().__init__(message)
        self.refusals = refusals


def lock_servers(session: Session) -> list[ComputeServer]:
    """Take the scheduling lock in ``session``'s transaction; every server, by id.

    On PostgreSQL the rows are locked ``FOR UPDATE`` in id order (so two lockers
    cannot deadlock); SQLite has no row locks, so a write to the table takes the
    database's write lock first. Either way a second transaction that takes the
    lock waits until this one ends, and then sees what it committed.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(ComputeServer).values(capacity=ComputeServer.capacity))
    query = (
        select(ComputeServer)
        .order_by(ComputeServer.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return list(session.scalars(query))


def rows_changed(session: Session, statement: Update) -> int:
    """Execute an UPDATE in ``session``; how many rows it changed."""
    result = cast(CursorResult[Any], session.execute(statement))
    return result.rowcount


def live_rooms(session: Session) -> dict[int, int]:
    """How many rooms hold a slot on each compute server, by id: the live (deploying or
    deployed) ones and the failed ones that may still run (``holds_slot``)."""
    counts = (
        select(Room.compute_server_id, func.count(Room.id))
        .where(holds_slot())
        .group_by(Room.compute_server_id)
    )
    return {row[0]: row[1] for row in session.execute(counts)}


def refusal(server: ComputeServer, load: int) -> str | None:
    """Why ``server`` cannot take a new room with ``load`` live rooms, or None if it can."""
    label = f"{server.name} ({server.url})"
    if server.removed:
        return f"{label} is removed"
    if server.state not in SCHEDULABLE_STATES:
        return f"{label} is {server.state}" + (f": {server.reason}" if server.reason else "")
    if load >= server.capacity:
        return f"{label} is full ({load} of {server.capacity} live rooms)"
    return None


def schedule(session: Session) -> ComputeServer:
    """The server a new room goes to, with the scheduling lock held (see the module).

    The caller inserts the room in the same transaction and commits, which releases
    the lock. Raises :class:`NoServerAvailable`.
    """
    servers = lock_servers(session)
    load = live_rooms(session)
    refusals: list[str] = []
    free: list[ComputeServer] = []
    for server in servers:
        why = refusal(server, load.get(server.id, 0))
        if why is None:
            free.append(server)
        else:
            refusals.append(why)
    if not free:
        raise NoServerAvailable(refusals)
    return min(
        free, key=lambda server: (Fraction(load.get(server.id, 0), server.capacity), server.id)
    )


def lose_rooms(session: Session, server: ComputeServer, reason: str, actor: str) -> list[str]:
    """Mark every live room on ``server`` lost with ``reason``, and every failed room
    that may still run there (they can be deleted then without their Controller); their
    names.

    All rows change before the first audit entry, so this transaction takes the
    audit log's lock last, like every other writer (no lock cycle).
    """
    lost = list(
        session.scalars(
            select(Room)
            .where(Room.compute_server_id == server.id, holds_slot())
            .order_by(Room.id)
            .with_for_update()
        )
    )
    for room in lost:
        room.state, room.reason = "lost", reason
    session.flush()
    for room in lost:
        audit.record(
            session, actor, "room.lost", room.name, compute_server=server.name, reason=reason
        )
    return [room.name for room in lost]


# -- health -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """What one health check of a Controller saw.

    ``answered``: a well-formed health answer came back. ``problem``: why the
    server, though it answered, may not take rooms (None: it may). ``rooms``: how
    many rooms it says it runs. ``error``: why there was no answer.
    """

    answered: bool
    problem: str | None = None
    rooms: int | None = None
    error: str | None = None


def observe(client: httpx.Client, url: str, tee_kind: str) -> Observation:
    """Ask the Controller at ``url`` for its health (``GET /v1/health``)."""
    try:
        response = send_capped(client, "GET", f"{url}/v1/health")
    except httpx.HTTPError as error:
        return Observation(False, error=one_line(str(error)) or type(error).__name__)
    if response.status_code != 200:
        return Observation(False, error=f"GET /v1/health answered {response.status_code}")
    try:
        document: Any = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("tee"), str):
        return Observation(False, error="GET /v1/health did not answer the health document")
    rooms = document.get("rooms")
    count = rooms if isinstance(rooms, int) and not isinstance(rooms, bool) else None
    if document["tee"] != tee_kind:
        return Observation(
            True,
            problem=f"tee-kind: registered as {tee_kind!r}, its Controller reports "
            f"{one_line(document['tee'], 40)!r}",
            rooms=count,
        )
    if document.get("status") != "ok":
        status = one_line(str(document.get("status")), 40)
        return Observation(
            True,
            problem=f"its Controller reports status {status!r} (its Attester cannot be started)",
            rooms=count,
        )
    return Observation(True, rooms=count)


@dataclass(frozen=True)
class Verdict:
    """A server's health after a check: the fields of :class:`ComputeServer` it sets."""

    state: str
    reason: str | None
    failures: int
    last_seen: int | None


def judge(
    server: ComputeServer, seen: Observation, now: int, failures_allowed: int, lost_after: float
) -> Verdict:
    """The server's next health (the rules are in the module docstring)."""
    if seen.answered:
        state = "healthy" if seen.problem is None else "unhealthy"
        return Verdict(state, seen.problem, 0, now)
    failures = server.failures + 1
    if server.state == "lost":
        return Verdict("lost", server.reason, failures, server.last_seen)
    silent_since = server.last_seen if server.last_seen is not None else server.created
    if failures >= failures_allowed and now - silent_since >= lost_after:
        since = (
            f"stopped answering at {timestamp(server.last_seen)}"
            if server.last_seen is not None
            else f"has not answered since it was added at {timestamp(server.created)}"
        )
        return Verdict("lost", f"{since} (last: {seen.error})", failures, server.last_seen)
    if failures >= failures_allowed:
        reason = f"{failures} health checks failed in a row (last: {seen.error})"
        return Verdict("unhealthy", reason, failures, server.last_seen)
    return Verdict(server.state, server.reason, failures, server.last_seen)


def lost_room_reason(server: ComputeServer) -> str:
    """Why a room on ``server``, now lost, is lost."""
    if server.last_seen is None:
        what = f"has not answered since it was added at {timestamp(server.created)}"
    else:
        what = f"stopped answering at {timestamp(server.last_seen)}"
    return f"compute server {server.name} {what}; {LOST_ROOM_ADVICE}"


class HealthChecker:
    """Checks every registered compute server and records what it found.

    ``headers_for(url, project, room, scope)`` gives the headers of a request to the
    Controller at ``url`` about the room ``room`` of ``project`` (the manager's token
    for exactly that operation, ``status`` or ``delete``, good once), used to ask about
    single rooms and to delete the failed ones that keep their slot.
    ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        headers_for: Callable[[str, str, str, str], dict[str, str]],
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.headers_for = headers_for
        self.clock = clock
        self.client = httpx.Client(
            timeout=settings.health_timeout,
            transport=transport or controller_transport(settings.health_timeout),
        )

    def close(self) -> None:
        self.client.close()

    def check_all(self) -> None:
        """One round: check every server that is not removed, a few at a time."""
        with self.sessions() as session:
            servers = list(
                session.scalars(select(ComputeServer.id).where(ComputeServer.removed.is_(False)))
            )
        if not servers:
            return
        with ThreadPoolExecutor(max_workers=min(8, len(servers))) as pool:
            for _ in pool.map(self.check, servers):
                pass

    def check(self, server_id: int) -> None:
        """Check one server: its health, then (if it runs fewer rooms) its rooms."""
        with self.sessions() as session:
            server = session.get(ComputeServer, server_id)
            if server is None or server.removed:
                return
            url, tee_kind = server.url, server.tee_kind
        seen = observe(self.client, url, tee_kind)
        state = self.record(server_id, seen)
        if not seen.answered or state in (None, "lost"):
            return
        # Every answer has its deadline, but one after the other a Controller's
        # answers about its rooms could hold the round (which waits for every
        # server's check) for a minute: at most ROOM_QUESTIONS_BUDGET health
        # timeouts of them all, the rest next round.
        until = time.monotonic() + ROOM_QUESTIONS_BUDGET * self.settings.health_timeout
        if seen.rooms is not None:
            self.check_rooms(server_id, seen.rooms, until)
            self.settle_stale_deploys(server_id, until)
        self.release_failed_rooms(server_id, until)

    def record(self, server_id: int, seen: Observation) -> str | None:
        """Apply :func:`judge` to the stored server in one transaction; its new state."""
        now = int(self.clock())
        with self.sessions() as session:
            server = session.get(
                ComputeServer, server_id, with_for_update=True, populate_existing=True
            )
            if server is None or server.removed:
                return None
            verdict = judge(
                server, seen, now, self.settings.health_failures, self.settings.lost_after
            )
            before = server.state
            server.state, server.reason = verdict.state, verdict.reason
            server.failures, server.last_seen = verdict.failures, verdict.last_seen
            session.flush()
            if before != verdict.state:
                _log.log(
                    logging.INFO if verdict.state == "healthy" else logging.WARNING,
                    "compute server %s is %s (was %s): %s",
                    server.name,
                    verdict.state,
                    before,
                    verdict.reason or "it answers",
                )
                lost: list[str] = []
                if verdict.state == "lost":
                    lost = lose_rooms(session, server, lost_room_reason(server), MANAGER_ACTOR)
                audit.record(
                    session,
                    MANAGER_ACTOR,
                    "server.state_changed",
                    server.name,
                    url=server.url,
                    before=before,
                    after=verdict.state,
                    reason=verdict.reason,
                    rooms_lost=lost,
                )
            session.commit()
            return verdict.state

    def check_rooms(self, server_id: int, reported: int, until: float | None = None) -> None:
        """Ask about each deployed room when the Controller runs fewer than expected
        (until ``time.monotonic()`` is ``until``, if given)."""
        with self.sessions() as session:
            server = session.get_one(ComputeServer, server_id)
            rooms = list(
                session.scalars(
                    select(Room)
                    .where(Room.compute_server_id == server_id, Room.state == "deployed")
                    .order_by(Room.id)
                )
            )
            if reported >= len(rooms):
                return
            asked = [(room.id, room.name, room.project.name) for room in rooms]
            name, url = server.name, server.url
        for room_id, answer in self._ask_rooms(url, asked, until):
            if answer.status_code in (404, 410):
                reason = (
                    f"compute server {name} no longer runs its Worker "
                    f"({answer.status_code}: {answer_detail(answer)}); {LOST_ROOM_ADVICE}"
                )
                self.lose_room(room_id, reason)

    def settle_stale_deploys(self, server_id: int, until: float | None = None) -> None:
        """Settle the rooms a stopped manager left ``deploying`` (see the module
        docstring; until ``time.monotonic()`` is ``until``, if given)."""
        cutoff = int(self.clock() - self.settings.controller_timeout) - STALE_DEPLOY_MARGIN
        with self.sessions() as session:
            server = session.get_one(ComputeServer, server_id)
            stale = [
                (room.id, room.name, room.project.name)
                for room in session.scalars(
                    select(Room)
                    .where(
                        Room.compute_server_id == server_id,
                        Room.state == "deploying",
                        Room.created < cutoff,
                    )
                    .order_by(Room.id)
                )
            ]
            name, url = server.name, server.url
        for room_id, answer in self._ask_rooms(url, stale, until):
            outcome = deploy_outcome(answer)
            if outcome is None:
                continue
            reason = None
            if outcome == "failed":
                reason = (
                    f"the manager stopped while deploying it, and compute server {name} "
                    f"does not run its Worker ({answer.status_code}: {answer_detail(answer)})"
                )
            self._move_room(
                room_id,
                "deploying",
                outcome,
                reason,
                settled="the manager that deployed it stopped before it recorded the outcome",
            )

    def release_failed_rooms(self, server_id: int, until: float | None = None) -> None:
        """Ask the Controller again to delete each failed room that keeps its slot
        (``may_still_run``: its deploy got no answer, nor did its delete), and free the
        slot of each whose delete it confirms (2xx or ``404``: :func:`delete_confirmed`);
        until ``time.monotonic()`` is ``until``, if given, the rest next round."""
        with self.sessions() as session:
            server = session.get_one(ComputeServer, server_id)
            held = [
                (room.id, room.name, room.project.name)
                for room in session.scalars(
                    select(Room)
                    .where(
                        Room.compute_server_id == server_id,
                        Room.state == "failed",
                        Room.may_still_run.is_(True),
                    )
                    .order_by(Room.id)
                )
            ]
            name, url = server.name, server.url
        for room_id, answer in self._ask_rooms(url, held, until, delete=True):
            if delete_confirmed(answer):
                self.release_room(room_id, name, answer)

    def release_room(self, room_id: int, server_name: str, answer: httpx.Response) -> bool:
        """Free the slot of the failed room whose delete its Controller confirmed with
        ``answer``, if it still holds one; whether it did (audited ``room.released``)."""
        confirmed = f"{answer.status_code}: {answer_detail(answer)}"
        with self.sessions() as session:
            room = session.get(Room, room_id, with_for_update=True, populate_existing=True)
            if room is None or room.state != "failed" or not room.may_still_run:
                session.rollback()
                return False  # deleted, or lost, meanwhile: whoever changed it wins
            when = timestamp(int(self.clock()))
            room.may_still_run = False
            room.reason = one_line(
                f"{room.reason or 'its deploy failed'}; at {when} compute server "
                f"{server_name} confirmed the room's delete ({confirmed}): its slot is free",
                2000,
            )
            session.flush()
            audit.record(
                session,
                MANAGER_ACTOR,
                "room.released",
                room.name,
                compute_server=server_name,
                controller=confirmed,
            )
            session.commit()
            _log.info("clean room %s: its delete confirmed (%s), slot free", room.name, confirmed)
            return True

    def _ask_rooms(
        self,
        url: str,
        rooms: list[tuple[int, str, str]],
        until: float | None = None,
        *,
        delete: bool = False,
    ) -> Iterator[tuple[int, httpx.Response]]:
        """The Controller's answer about each ``(id, name, project)`` (its state, or
        with ``delete`` to a request to delete it), until one fails or
        ``time.monotonic()`` passes ``until``.

        A request that gets no answer ends the round: the server stopped answering,
        and the next health check deals with that. Past ``until`` the rest are asked
        in the next round.
        """
        method, scope = ("DELETE", SCOPE_DELETE) if delete else ("GET", SCOPE_STATUS)
        for room_id, room_name, project in rooms:
            if until is not None and time.monotonic() >= until:
                return
            try:
                answer = send_capped(
                    self.client,
                    method,
                    f"{url}/v1/rooms/{room_name}",
                    headers=self.headers_for(url, project, room_name, scope),
                )
            except httpx.HTTPError:
                return
            yield room_id, answer

    def lose_room(self, room_id: int, reason: str) -> bool:
        """Mark the room lost if it is still deployed; whether it was."""
        return self._move_room(room_id, "deployed", "lost", reason)

    def _move_room(
        self, room_id: int, before: str, after: str, reason: str | None, *, settled: str = ""
    ) -> bool:
        """Move the room from state ``before`` to ``after`` and audit ``room.<after>``.

        Only if it is still ``before`` (whoever changed it meanwhile wins); whether it
        moved. ``settled`` says why the manager finished another process's deploy.
        """
        with self.sessions() as session:
            changed = rows_changed(
                session,
                update(Room)
                .where(Room.id == room_id, Room.state == before)
                .values(state=after, reason=reason),
            )
            if changed != 1:
                session.rollback()
                return False
            room = session.get_one(Room, room_id)
            server = session.get_one(ComputeServer, room.compute_server_id)
            details: dict[str, Any] = {"compute_server": server.name}
            if settled:
                details |= {"work_id": room.work_id, "settled": settled}
            if reason:
                details["reason"] = reason
            audit.record(session, MANAGER_ACTOR, f"room.{after}", room.name, **details)
            session.commit()
            _log.warning("clean room %s is %s (was %s): %s", room.name, after, before, reason)
            return True


def delete_confirmed(answer: httpx.Response) -> bool:
    """Whether a Controller's answer to ``DELETE /v1/rooms/{name}`` confirms the room is
    gone: 2xx (deleted), or ``404`` (it has no such room)."""
    return answer.is_success or answer.status_code == 404


def deploy_outcome(answer: httpx.Response) -> str | None:
    """What a Controller's answer about a room left ``deploying`` makes of it, if anything."""
    if answer.status_code in (404, 410):
        return "failed"
    if answer.status_code != 200:
        return None
    try:
        state = answer.json().get("state")
    except (ValueError, AttributeError):
        return None
    if state in WORKER_LIVE_STATES:
        return "deployed"
    if state == "deleted":
        return "failed"
    return None
