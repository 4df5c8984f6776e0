"""Function storage: content-addressed bundle files under ``<data-dir>/functions/``.

A bundle is stored under its digest, ``b64u(SHA-256(bundle))`` (the function ID is
``fs://`` + digest). An upload is streamed into a temporary file beside the store
while it is hashed, never past the size limit; it is checked to unpack, and then
renamed into place atomically, so a reader never sees a half-written bundle.

A read (:meth:`FunctionStore.open_verified`) never holds the bundle in memory: it
hashes the file once before anything is sent, so a bundle changed on disk is
refused with a named check (``function-id``) instead of served; and it hashes
again while it sends, holding back the last chunk until that hash matches too, so
a file changed in between ends the response short of its ``Content-Length``
rather than completing it. (The Worker and every client recompute the ID anyway;
this catches a bad disk earlier and louder.)

:func:`collect_garbage` deletes the bundles that no live (deploying or deployed)
room uses and that nobody uploaded within a grace period, from the database and
from disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cleanroom.errors import CheckFailed, Error
from cleanroom.manager import audit
from cleanroom.manager.database import (
    LIVE_ROOM_STATES,
    FunctionUploader,
    Room,
    StoredFunction,
)
from cleanroom.protocol.bundle import FUNCTION_ID_PREFIX, unpack
from cleanroom.protocol.encoding import b64u

DIGEST = re.compile(r"[A-Za-z0-9_-]{43}")
CHUNK_BYTES = 1 << 20
"""How much of a bundle a read holds at a time."""
_INCOMING = ".incoming"


class StoredFunctionCorrupt(CheckFailed):
    """A stored bundle no longer hashes to its name: the disk or someone changed it."""

    http_status = 500


class StoredFunctionMissing(CheckFailed):
    """The database knows a bundle whose file is not in the store."""

    http_status = 500


class FunctionTooLarge(Error):
    """An upload went past the size limit; nothing of it is kept."""

    http_status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"the function bundle is larger than the limit of {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class Received:
    """An upload fully received into a temporary file, not yet in the store."""

    path: Path
    digest: str
    size: int

    @property
    def function_id(self) -> str:
        return FUNCTION_ID_PREFIX + self.digest


def digest_of(function_id: str) -> str | None:
    """The digest of ``fs://digest``, or ``None`` if ``function_id`` is not one."""
    digest = function_id.removeprefix(FUNCTION_ID_PREFIX)
    if function_id == digest or not DIGEST.fullmatch(digest):
        return None
    return digest


def _corrupt(digest: str, actual: str) -> StoredFunctionCorrupt:
    return StoredFunctionCorrupt(
        "function-id",
        FUNCTION_ID_PREFIX + digest,
        FUNCTION_ID_PREFIX + actual,
        "the stored function bundle does not match its ID",
        hint="the manager's operator must restore or re-upload this function",
    )


class VerifiedBundle:
    """A stored bundle, open, that hashed to its name; :meth:`chunks` sends it.

    :meth:`chunks` hashes again as it reads and holds back the last chunk until
    that hash matches: if the file changed since it was checked, it raises
    :class:`StoredFunctionCorrupt` instead of yielding the end of the bundle.
    """

    def __init__(self, digest: str, file: BinaryIO, size: int) -> None:
        self.digest = digest
        self.size = size
        self._file = file

    def chunks(self) -> Iterator[bytes]:
        """The bundle in chunks of at most :data:`CHUNK_BYTES`; closes the file at the end."""
        try:
            self._file.seek(0)
            hasher = hashlib.sha256()
            held = self._file.read(CHUNK_BYTES)
            while held:
                hasher.update(held)
                following = self._file.read(CHUNK_BYTES)
                if not following:
                    break
                yield held
                held = following
            actual = b64u(hasher.digest())
            if actual != self.digest:
                raise _corrupt(self.digest, actual)
            if held:
                yield held
        finally:
            self.close()

    def close(self) -> None:
        self._file.close()


class FunctionStore:
    """The bundle files of one manager."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._incoming = directory / _INCOMING
        self._incoming.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, digest: str) -> Path:
        if not DIGEST.fullmatch(digest):  # a digest is the whole file name, never a path
            raise ValueError(f"not a function digest: {digest!r}")
        return self.directory / digest

    async def receive(self, chunks: AsyncIterator[bytes]) -> Received:
        """Stream ``chunks`` into a temporary file, hashing; FunctionTooLarge past the limit."""
        descriptor, name = tempfile.mkstemp(dir=self._incoming, prefix="upload-")
        path = Path(name)
        hasher = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(descriptor, "wb") as file:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise FunctionTooLarge(self.max_bytes)
                    hasher.update(chunk)
                    file.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return Received(path=path, digest=b64u(hasher.digest()), size=size)

    def check_unpacks(self, received: Received) -> None:
        """Refuse (BundleError) a bundle that :func:`cleanroom.protocol.bundle.unpack` refuses.

        ``unpack`` reads the received file in pieces and extracts it into a
        scratch directory that is removed again: the bundle is never in memory.
        """
        with (
            received.path.open("rb") as bundle,
            tempfile.TemporaryDirectory(dir=self._incoming, prefix="check-") as scratch,
        ):
            unpack(bundle, Path(scratch) / "function")

    def commit(self, received: Received) -> None:
        """Move ``received`` into the store, in place of any file of that name.

        The same name means the same bytes, so replacing is harmless when the file
        was there, and repairs it when it had been damaged or lost. The rename is
        atomic: a reader has the old file or the new one open, never half of one.
        """
        os.chmod(received.path, 0o600)
        os.replace(received.path, self.path(received.digest))

    def discard(self, received: Received) -> None:
        with contextlib.suppress(FileNotFoundError):
            received.path.unlink()

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def open_verified(self, digest: str) -> VerifiedBundle:
        """The bundle named ``digest``, open, after hashing the whole file once.

        Raises :class:`StoredFunctionMissing` (no file) or
        :class:`StoredFunctionCorrupt` (it hashes to another ID).
        """
        try:
            file = self.path(digest).open("rb")
        except FileNotFoundError as error:
            raise StoredFunctionMissing(
                "function-stored",
                f"the bundle file {self.path(digest)}",
                "no such file",
                f"the manager has no stored bundle for {FUNCTION_ID_PREFIX}{digest}",
                hint="the manager's operator must restore or re-upload this function",
            ) from error
        try:
            hasher = hashlib.sha256()
            size = 0
            while chunk := file.read(CHUNK_BYTES):
                hasher.update(chunk)
                size += len(chunk)
            actual = b64u(hasher.digest())
            if actual != digest:
                raise _corrupt(digest, actual)
        except BaseException:
            file.close()
            raise
        return VerifiedBundle(digest, file, size)

    def remove(self, digest: str) -> None:
        """Delete the bundle file named ``digest`` (nothing if there is none)."""
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()

    def stale_files(self, older_than: float) -> list[Path]:
        """Files not modified since ``older_than``: bundles and abandoned uploads."""
        found = []
        for directory in (self.directory, self._incoming):
            for entry in os.scandir(directory):
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime <= older_than:
                    found.append(Path(entry.path))
        return sorted(found)


# -- garbage collection -----------------------------------------------------------------


@dataclass(frozen=True)
class Collected:
    """A bundle garbage collection deleted (or, in a dry run, would delete)."""

    function_id: str
    size: int
    uploaded: int


@dataclass(frozen=True)
class Garbage:
    """What one garbage collection deleted: bundles known to the database, and files
    nothing knows (left by an upload or a collection that stopped half-way)."""

    functions: list[Collected]
    stray_files: list[Path]


def collect_garbage(
    session: Session,
    store: FunctionStore,
    *,
    grace: int,
    actor: str,
    dry_run: bool = False,
    now: int | None = None,
) -> Garbage:
    """Delete every bundle no live room uses and nobody uploaded in the last ``grace`` s.

    A room that is ``failed``, ``lost`` or ``deleted`` does not keep its bundle
    (its record keeps the function ID). Each deletion is audited
    (``function.deleted``). ``dry_run``: change nothing, say what would go.

    The bundles old enough to go are locked first (a no-op write: row locks on
    PostgreSQL, the write lock on SQLite). An upload of one of them (which
    refreshes its upload time) and a deploy that would use one (which reads its
    row ``FOR SHARE`` after taking the scheduling lock) wait for this transaction,
    or this one waits for them and then sees their room or their new upload time.
    So a bundle is never deleted under a deploy that has just checked it exists.
    Files are deleted before the commit: should the commit then fail, the rows
    are still there without their files, which a re-upload of the same bundle
    repairs (:meth:`FunctionStore.commit`).
    """
    now = int(time.time()) if now is None else now
    cutoff = now - grace
    old = StoredFunction.uploaded <= cutoff
    session.execute(update(StoredFunction).where(old).values(uploaded=StoredFunction.uploaded))
    in_use = select(Room.function_digest).where(Room.state.in_(LIVE_ROOM_STATES))
    doomed = list(
        session.scalars(
            select(StoredFunction)
            .where(old, StoredFunction.digest.not_in(in_use))
            .order_by(StoredFunction.digest)
            .execution_options(populate_existing=True)
        )
    )
    collected = [
        Collected(FUNCTION_ID_PREFIX + stored.digest, stored.size, stored.uploaded)
        for stored in doomed
    ]
    known = set(session.scalars(select(StoredFunction.digest)))
    stray = [
        path
        for path in store.stale_files(cutoff)
        if path.parent != store.directory or path.name not in known
    ]
    if dry_run:
        session.rollback()
        return Garbage(collected, stray)
    digests = [stored.digest for stored in doomed]
    if digests:
        session.execute(delete(FunctionUploader).where(FunctionUploader.digest.in_(digests)))
        session.execute(delete(StoredFunction).where(StoredFunction.digest.in_(digests)))
    for item in collected:
        audit.record(
            session,
            actor,
            "function.deleted",
            item.function_id,
            size=item.size,
            uploaded=item.uploaded,
            why=f"no live clean room uses it and it was last uploaded more than {grace} s ago",
        )
    for digest in digests:
        store.remove(digest)
    for path in stray:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    session.commit()
    return Garbage(collected, stray)
