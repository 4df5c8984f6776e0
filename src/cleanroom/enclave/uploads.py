"""An upload into the Worker: files of one input, then a manifest that must match.

Objects arrive as record-stream objects named ``<input id>/<relative path>``; the
last object is ``<input id>/.manifest``::

    {"type": "cleanroom/upload-manifest/v2", "input": id, "salt": b64u(32 bytes),
     "files": {relative path: {"size": n, "sha256": hex}}}

The Worker accepts the input only when the files it stored are exactly those of
the manifest, with those sizes and digests; the input's digest for the run
receipt is SHA-256(JCS(manifest)), which the uploader's secret salt keeps from
confirming a guess of the data (:mod:`cleanroom.protocol.manifest`). Anything else
aborts the upload and erases what it stored.

An upload of an input the Worker already has (a retry after a lost
acknowledgement) is checked the same way but stores nothing (``keep=False``): only
its digest is compared with the input's.

No refusal names a file. The record stream seals the paths, and a refusal leaves
the enclave in the clear: back through the Controller, and into the Worker's log on
the host. So a refusal names the rule that was broken, with counts and sizes where
they help, and never a path, a file's digest or the manifest's salt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

from cleanroom.enclave.errors import StoreError, UploadError
from cleanroom.enclave.store import SealedStore, SealedWriter, StoredObject, check_object_name
from cleanroom.protocol.encoding import canonical, sha256
from cleanroom.protocol.errors import ProtocolError
from cleanroom.protocol.manifest import MAX_UPLOAD_MANIFEST, UPLOAD_MANIFEST_TYPE, check_salt

MANIFEST_TYPE = UPLOAD_MANIFEST_TYPE
MANIFEST_NAME = ".manifest"
MAX_MANIFEST = MAX_UPLOAD_MANIFEST  # 1 MiB before: 10,000 files of short names
MAX_NAME_BYTES = 255
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class CompletedInput:
    input_id: str
    by: str  # user_id of the uploader
    sha256: str  # hex SHA-256(JCS(manifest))
    files: tuple[StoredObject, ...]


class _DigestWriter:
    """A writer that keeps nothing: the size and SHA-256 of what it was given."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._digest = hashlib.sha256()
        self._size = 0

    def write(self, data: bytes) -> None:
        self._digest.update(data)
        self._size += len(data)

    def close(self) -> StoredObject:
        return StoredObject(self._name, self._size, self._digest.hexdigest())

    def abort(self) -> None:
        pass


class Upload:
    """One input's upload, fed the records of one session in order.

    With ``keep=False`` the files are only measured, never stored: the completed
    input it returns names objects that do not exist, for comparison only.
    """

    def __init__(
        self, store: SealedStore, input_id: str, uploader: str, *, keep: bool = True
    ) -> None:
        self._store, self._input_id, self._uploader = store, input_id, uploader
        self._keep = keep
        self._writers: dict[str, SealedWriter | _DigestWriter] = {}
        self._stored: dict[str, StoredObject] = {}
        self._manifest = b""
        self._result: CompletedInput | None = None

    def _fail(self, check: str, expected: object, actual: object, message: str) -> UploadError:
        for writer in self._writers.values():
            writer.abort()
        if self._keep:
            for relative in [*self._writers, *self._stored]:
                self._store.discard(f"{self._input_id}/{relative}")
        self._writers.clear()
        self._stored.clear()
        return UploadError(check, expected, actual, message)

    def abort(self) -> None:
        """The session failed (tampered or cut records): erase what this upload stored."""
        self._fail("upload-aborted", "a complete upload", "aborted", "upload aborted")

    def feed(self, path: str, final: bool, data: bytes) -> CompletedInput | None:
        """One record; returns the completed input after the manifest's final record."""
        if self._result is not None:
            raise self._fail(
                "upload-complete", "no record after the manifest", "a record", "upload ended"
            )
        prefix = self._input_id + "/"
        if not path.startswith(prefix):
            raise self._fail(
                "upload-path", f"{prefix}…", "another path", "record outside this session's input"
            )
        relative = path[len(prefix) :]
        if relative == MANIFEST_NAME:
            self._manifest += data
            if len(self._manifest) > MAX_MANIFEST:
                raise self._fail(
                    "manifest-size", f"<= {MAX_MANIFEST}", len(self._manifest), "too big"
                )
            if final:
                self._result = self._finish()
                return self._result
            return None
        if self._manifest:
            raise self._fail(
                "upload-order", "the manifest last", "a file", "file after the manifest"
            )
        try:
            check_object_name(path)
        except StoreError as error:
            raise self._fail(
                error.check, error.expected, f"a path of {len(path.encode())} bytes", error.message
            ) from None
        writer = self._writers.get(relative)
        if writer is None:
            if relative in self._stored:
                raise self._fail("upload-duplicate", "each file once", "twice", "file sent twice")
            self._check_layout(relative)
            writer = self._writers[relative] = (
                self._store.create(path) if self._keep else _DigestWriter(path)
            )
        writer.write(data)
        if final:
            self._stored[relative] = writer.close()
            del self._writers[relative]
        return None

    def _check_layout(self, relative: str) -> None:
        """The input is laid out as files under ``inputs/<id>/`` for the run: refuse what
        no file system can hold (a name longer than 255 bytes, a file that is also a
        directory of another) now, not as a failed run later."""
        longest = max(len(part.encode()) for part in relative.split("/"))
        if longest > MAX_NAME_BYTES:
            raise self._fail(
                "upload-path", f"names of <= {MAX_NAME_BYTES} bytes", longest, "name too long"
            )
        for other in [*self._writers, *self._stored]:
            if other.startswith(relative + "/") or relative.startswith(other + "/"):
                raise self._fail(
                    "upload-path", "no file that is also a directory", "one",
                    "a file and a directory of the same name",
                )  # fmt: skip

    def _finish(self) -> CompletedInput:
        if self._writers:
            raise self._fail(
                "upload-truncated", "every file ended", f"{len(self._writers)} not ended",
                "cut short",
            )  # fmt: skip
        try:
            manifest: Any = json.loads(self._manifest)
        except (ValueError, RecursionError) as error:  # RecursionError: nested too deep
            raise self._fail("manifest-format", "JSON", "bytes", str(error)) from error
        if (
            not isinstance(manifest, dict)
            or set(manifest) != {"type", "input", "salt", "files"}
            or manifest["type"] != MANIFEST_TYPE
            or manifest["input"] != self._input_id
            or not isinstance(manifest["files"], dict)
        ):
            fields = sorted(manifest) if isinstance(manifest, dict) else type(manifest).__name__
            raise self._fail("manifest-format", MANIFEST_TYPE, fields, "bad manifest")
        try:
            check_salt(manifest["salt"], "manifest-salt")
        except ProtocolError as error:
            raise self._fail(
                "manifest-format", error.expected, "another salt", f"bad salt: {error.message}"
            ) from None
        listed: dict[str, Any] = manifest["files"]
        if set(listed) != set(self._stored):
            raise self._fail(
                "manifest-files",
                f"the {len(listed)} files listed",
                f"{len(set(self._stored) - set(listed))} not listed, "
                f"{len(set(listed) - set(self._stored))} not sent",
                "files differ from the manifest",
            )
        for name, stored in self._stored.items():
            entry = listed[name]
            if not isinstance(entry, dict) or set(entry) != {"size", "sha256"}:
                raise self._fail(
                    "manifest-format", ["sha256", "size"], "another entry", "bad entry"
                )
            size, digest = entry["size"], entry["sha256"]
            # Exactly an integer (not true, not 5.0) and lowercase hex: one manifest, one text.
            if type(size) is not int or size != stored.size:
                raise self._fail(
                    "manifest-size", "the size listed", "another size", "a file's size differs"
                )
            if (
                not isinstance(digest, str)
                or not _HEX_SHA256.fullmatch(digest)
                or not hmac.compare_digest(digest, stored.sha256)
            ):
                raise self._fail(
                    "manifest-sha256", "the SHA-256 listed", "another", "a file's content differs"
                )
        try:
            digest = sha256(canonical(manifest)).hex()
        except ProtocolError as error:  # e.g. a number with no exact JSON form
            raise self._fail(
                "manifest-format", "canonical JSON", "a value without one", error.message
            ) from None
        files = tuple(self._stored[name] for name in sorted(self._stored))
        if self._keep:
            for stored in files:
                self._store.record(stored)
        return CompletedInput(
            input_id=self._input_id,
            by=self._uploader,
            sha256=digest,
            files=files,
        )
