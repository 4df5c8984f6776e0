"""Function storage: content-addressed bundle files under ``<data-dir>/functions/``.

A bundle is stored under its digest, ``b64u(SHA-256(bundle))`` (the function ID is
``fs://`` + digest). An upload is streamed into a temporary file beside the store
while it is hashed, never past the size limit; it is checked to unpack, and then
renamed into place atomically, so a reader never sees a half-written bundle.
Every read hashes the file again: a bundle changed on disk is refused, not served
(the Worker and every client recompute the ID anyway; this catches it earlier).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from cleanroom.errors import CheckFailed
from cleanroom.protocol.bundle import FUNCTION_ID_PREFIX, unpack
from cleanroom.protocol.encoding import b64u, sha256

DIGEST = re.compile(r"[A-Za-z0-9_-]{43}")
_INCOMING = ".incoming"


class StoredFunctionCorrupt(CheckFailed):
    """A stored bundle no longer hashes to its name: the disk or someone changed it."""

    http_status = 500


class FunctionTooLarge(Exception):
    """An upload went past the size limit; nothing of it is kept."""

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
        """Refuse (BundleError) a bundle that :func:`cleanroom.protocol.bundle.unpack` refuses."""
        bundle = received.path.read_bytes()
        with tempfile.TemporaryDirectory(dir=self._incoming, prefix="check-") as scratch:
            unpack(bundle, Path(scratch) / "function")

    def commit(self, received: Received) -> bool:
        """Move ``received`` into the store; ``False`` if that bundle was already there."""
        target = self.path(received.digest)
        if target.exists():
            self.discard(received)
            return False
        os.chmod(received.path, 0o600)
        os.replace(received.path, target)
        return True

    def discard(self, received: Received) -> None:
        with contextlib.suppress(FileNotFoundError):
            received.path.unlink()

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: str) -> bytes:
        """The bundle named ``digest``, hashed again (StoredFunctionCorrupt if it changed)."""
        bundle = self.path(digest).read_bytes()
        actual = b64u(sha256(bundle))
        if actual != digest:
            raise StoredFunctionCorrupt(
                "function-id",
                FUNCTION_ID_PREFIX + digest,
                FUNCTION_ID_PREFIX + actual,
                "the stored function bundle does not match its ID",
                hint="the manager's operator must restore or re-upload this function",
            )
        return bundle
