"""Function storage: uploads checked and recorded, downloads for whoever may read them.

Who may read a bundle: every project that uploaded it, every client that sees a
room using it (:func:`cleanroom.manager.callers.visible_rooms`), and a compute
server while a live room using it is scheduled *on that server*. Anyone else is
answered ``404`` as if it did not exist. The bundles counted for a project
(:func:`charged_digests`: those it uploaded within the grace period, those its live
rooms use, and those it uploaded that nobody's live room uses) are at most
``Settings.function_bytes_per_project`` bytes (``function-quota``), checked when a
deploy would count a bundle for the project and once an upload has ended; until then
an upload's bytes sit in
the store's ``.incoming`` directory for as long as the client takes to send them, so
one project's uploads being received are at most ``2 * max_function_bytes`` at once
(:class:`Receiving`; the byte past it is refused, 409 ``function-uploads``). The files live in
:class:`cleanroom.manager.storage.FunctionStore`; :meth:`Functions.collect_garbage`
deletes those no live room uses (:func:`cleanroom.manager.storage.collect_garbage`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator

from sqlalchemy import CompoundSelect, func, select, union, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cleanroom.manager import audit
from cleanroom.manager.callers import Caller, ServerCaller, check_still_acts, visible_rooms
from cleanroom.manager.database import (
    LIVE_ROOM_STATES,
    FunctionUploader,
    Project,
    Room,
    StoredFunction,
)
from cleanroom.manager.errors import (
    BundleTooLarge,
    Conflict,
    NotFound,
    QuotaExceeded,
    Unprocessable,
)
from cleanroom.manager.servers import rows_changed
from cleanroom.manager.settings import Settings
from cleanroom.manager.storage import (
    FunctionStore,
    FunctionTooLarge,
    Garbage,
    Received,
    StoredFunctionMissing,
    VerifiedBundle,
    collect_garbage,
    digest_of,
)
from cleanroom.protocol.bundle import FUNCTION_ID_PREFIX, BundleError
from cleanroom.tokens import MANAGER_SUBJECT, TokenError


def charged_digests(project_id: int, cutoff: int) -> CompoundSelect[tuple[str]]:
    """The bundles counted in the function quota of the project ``project_id``: those
    it uploaded after ``cutoff`` (its own last upload, within the grace period), those
    its live rooms use, and those it uploaded that no other project's live room uses
    (garbage, until a collection deletes it).

    Not a bundle the project uploaded once that only another project's live room keeps
    now: a participant of one of its rooms may deploy its own room on the bundle, and
    kept it counted in the uploader's quota for as long as it liked (found by the
    manager's red team); that project's quota counts it instead."""
    live = Room.state.in_(LIVE_ROOM_STATES)
    others_use = select(Room.function_digest).where(Room.project_id != project_id, live)
    uploaded = select(FunctionUploader.digest).where(
        FunctionUploader.project_id == project_id,
        (FunctionUploader.uploaded > cutoff) | FunctionUploader.digest.not_in(others_use),
    )
    used = select(Room.function_digest).where(Room.project_id == project_id, live)
    return union(uploaded, used)


class Receiving:
    """The bytes of each project's uploads being received (in this process's memory).

    The quota is checked once an upload has ended; a project that held uploads open
    kept as many files of up to ``max_function_bytes`` on the manager's disk, past its
    quota, for as long as it liked. At most ``limit`` bytes of one project's are
    received at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._bytes: dict[int, int] = {}

    def add(self, caller: Caller, size: int) -> None:
        """Count ``size`` more bytes of ``caller``'s project's, or refuse
        (``function-uploads``) without counting them."""
        with self._lock:
            now = self._bytes.get(caller.project_id, 0) + size
            if now > self.limit:
                raise QuotaExceeded(
                    "function-uploads",
                    self.limit,
                    now,
                    f"project {caller.project!r} has more than {self.limit} bytes of "
                    "uploads being received at once: upload once they ended",
                    "--max-function-bytes",
                )
            self._bytes[caller.project_id] = now

    def release(self, caller: Caller, size: int) -> None:
        """Count ``size`` bytes of ``caller``'s project's as received no longer."""
        with self._lock:
            left = self._bytes.get(caller.project_id, 0) - size
            if left > 0:
                self._bytes[caller.project_id] = left
            else:
                self._bytes.pop(caller.project_id, None)


class Functions:
    """The function bundles: their files (``store``) and their rows in the database."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = FunctionStore(settings.functions_dir, settings.max_function_bytes)
        self.receiving = Receiving(2 * settings.max_function_bytes)

    # -- upload -------------------------------------------------------------------------

    def check_declared_size(self, declared: int) -> None:
        """Refuse an upload whose ``Content-Length`` is over the limit before reading it."""
        if declared > self.store.max_bytes:
            raise BundleTooLarge(self.store.max_bytes, f"{declared} bytes (Content-Length)")

    async def receive(self, chunks: AsyncIterator[bytes]) -> Received:
        """Stream an upload into a temporary file, hashing (``function-size`` past the limit)."""
        try:
            return await self.store.receive(chunks)
        except FunctionTooLarge as error:
            raise BundleTooLarge(
                error.limit, f"more than {error.limit} bytes (the upload was stopped there)"
            ) from error

    async def counted(
        self, caller: Caller, chunks: AsyncIterator[bytes], held: list[int]
    ) -> AsyncIterator[bytes]:
        """``chunks``, each counted among the project's bytes being received
        (:class:`Receiving`) before it is written; ``held[0]`` is what was counted, for
        :meth:`Receiving.release` once the upload is stored or refused."""
        async for chunk in chunks:
            self.receiving.add(caller, len(chunk))
            held[0] += len(chunk)
            yield chunk

    def finish_upload(self, caller: Caller, received: Received) -> tuple[bool, int]:
        """Check, store, record and audit an upload; (new to the caller's project, size).

        New to the project, not to the manager: whether another project stored the same
        bundle is not the caller's to learn (its ``201`` or ``200`` told any project
        holding a bundle's bytes whether someone else had uploaded them; the audit's
        ``new`` still says, for the operator).

        The first statement refreshes the bundle's upload time, which locks its
        row (the write lock on SQLite) if it is stored already, so a garbage
        collection deciding about it either finishes first (then this stores it
        anew) or waits and sees it was just uploaded (storage.collect_garbage).
        """
        try:
            with self.sessions() as session:  # its body may have taken as long as it liked
                check_still_acts(session, caller)
        except TokenError:
            self.store.discard(received)
            raise
        try:
            self.store.check_unpacks(received)
        except BundleError as error:
            self.store.discard(received)
            facts = error.to_json()
            facts.pop("message", None)
            raise Unprocessable(f"the bundle is refused: {error.message}", **facts) from error
        digest = received.digest
        for attempt in (1, 2):
            with self.sessions() as session:
                now = int(time.time())
                refreshed = rows_changed(
                    session,
                    update(StoredFunction)
                    .where(StoredFunction.digest == digest)
                    .values(uploaded=now),
                )
                new = refreshed == 0
                try:
                    self.within_quota(session, caller, digest, received.size, now)
                except QuotaExceeded:
                    if attempt == 1:  # else it is stored, by another project's upload
                        self.store.discard(received)
                    raise
                if attempt == 1:
                    self.store.commit(received)
                try:
                    if new:
                        session.add(
                            StoredFunction(
                                digest=digest, size=received.size, created=now, uploaded=now
                            )
                        )
                        session.flush()  # before its uploader: no relationship orders them
                    uploader = (
                        update(FunctionUploader)
                        .where(
                            FunctionUploader.digest == digest,
                            FunctionUploader.project_id == caller.project_id,
                        )
                        .values(uploaded=now)
                    )
                    first_for_project = rows_changed(session, uploader) == 0
                    if first_for_project:
                        session.add(
                            FunctionUploader(
                                digest=digest, project_id=caller.project_id, uploaded=now
                            )
                        )
                        session.flush()
                except IntegrityError:
                    # The same bundle's first upload at the same moment, from another
                    # request: it stored the row; go again to record this upload too.
                    session.rollback()
                    continue
                audit.record(
                    session,
                    caller.client_id,
                    "function.uploaded",
                    received.function_id,
                    size=received.size,
                    new=new,
                )
                session.commit()
                return first_for_project, received.size
        raise Conflict("the same bundle is being uploaded concurrently: upload again")

    def within_quota(
        self, session: Session, caller: Caller, digest: str, size: int, now: int | None = None
    ) -> None:
        """Refuse to count the bundle ``digest`` (``size`` bytes) for the caller's project
        past its limit (``function-quota``), unless it counts already
        (:func:`charged_digests`): for an upload, and for a deploy of a room on it. The
        project's row is locked first, so two uploads or deploys of one project cannot
        pass the limit together."""
        if session.get_bind().dialect.name == "sqlite":  # no row locks: the write lock
            session.execute(
                update(Project).where(Project.id == caller.project_id).values(id=Project.id)
            )
        else:
            session.execute(
                select(Project.id).where(Project.id == caller.project_id).with_for_update()
            )
        now = int(time.time()) if now is None else now
        counted = charged_digests(caller.project_id, now - self.settings.function_grace)
        digests = counted.subquery().c[0]
        if session.scalar(select(digests).where(digests == digest).limit(1)) is not None:
            return
        stored = session.scalar(
            select(func.coalesce(func.sum(StoredFunction.size), 0)).where(
                StoredFunction.digest.in_(select(digests))
            )
        )
        limit = self.settings.function_bytes_per_project
        if stored is not None and stored + size > limit:
            raise QuotaExceeded(
                "function-quota",
                limit,
                stored + size,
                f"project {caller.project!r} has {stored} bytes of function bundles counted; "
                f"this one ({size} bytes) would pass the most one project may have (a bundle "
                "counts for a project that uploaded it within the grace period, or while a "
                "live room of the project uses it; an unused one is deleted a grace period "
                "after its last upload)",
                "--function-bytes-per-project",
            )

    # -- who may read it ----------------------------------------------------------------

    @staticmethod
    def _uploaded_by(session: Session, caller: Caller, digest: str) -> bool:
        uploaded = session.scalar(
            select(FunctionUploader.id).where(
                FunctionUploader.digest == digest,
                FunctionUploader.project_id == caller.project_id,
            )
        )
        return uploaded is not None

    def visible(self, session: Session, caller: Caller, digest: str) -> bool:
        """Whether ``caller`` may read the bundle ``digest`` (see the module docstring)."""
        if self._uploaded_by(session, caller, digest):
            return True
        return (
            session.scalar(visible_rooms(caller).where(Room.function_digest == digest)) is not None
        )

    def open_for(self, reader: Caller | ServerCaller, digest: str) -> VerifiedBundle:
        """The stored bundle ``digest`` for ``reader``, if it may read it, open and verified.

        Its file was hashed once already (500 ``function-id`` if it no longer
        matches, ``function-stored`` if it is gone); :meth:`VerifiedBundle.chunks`
        streams it, hashing again.
        """
        not_found = NotFound(f"no function {FUNCTION_ID_PREFIX}{digest}")
        if not digest_of(FUNCTION_ID_PREFIX + digest):
            raise not_found
        with self.sessions() as session:
            if session.get(StoredFunction, digest) is None:
                raise not_found
            if isinstance(reader, ServerCaller):
                # Only what this server hosts: a live room of its own uses the bundle.
                hosted = session.scalar(
                    select(Room.id).where(
                        Room.function_digest == digest,
                        Room.state.in_(LIVE_ROOM_STATES),
                        Room.compute_server_id == reader.server_id,
                    )
                )
                if hosted is None:
                    raise not_found
            elif not self.visible(session, reader, digest):
                raise not_found
        try:
            return self.store.open_verified(digest)
        except StoredFunctionMissing:
            with self.sessions() as session:
                if session.get(StoredFunction, digest) is None:  # collected just now
                    raise not_found from None
            raise

    # -- garbage collection -------------------------------------------------------------

    def collect_garbage(self, *, dry_run: bool = False) -> Garbage:
        """Delete the bundles no live room uses, past the grace period (``storage``)."""
        with self.sessions() as session:
            return collect_garbage(
                session,
                self.store,
                grace=self.settings.function_grace,
                actor=MANAGER_SUBJECT,
                dry_run=dry_run,
            )
