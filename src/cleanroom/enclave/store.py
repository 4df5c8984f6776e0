"""The Worker's sealed store: clean room data at rest, readable only by this Worker.

Files live on the untrusted disk encrypted with AES-256-GCM under a key generated
in the Worker's memory and never written anywhere: when the Worker ends, the data
is unreadable. (No MRENCLAVE-bound sealing key: every Worker shares one MRENCLAVE
and runs user code, so such a key would be shared across clean rooms.)

File format: a sequence of chunks ``size u32 ‖ final u8 ‖ ciphertext+tag``; chunk i of file
number f uses nonce ``f u32 ‖ i u64`` (unique under the key) and
AAD = JCS({"object", "index", "final"}), so chunks cannot be reordered, dropped,
moved between objects or cut off without the read failing.

An object's name is a path of its owner's (an uploader's file, a function's output
file): sealed on the wire, and as private as the data. No refusal of the store quotes
one; it names the object's input or output only (:func:`unnamed`), since a refusal
leaves the enclave in the clear (a function that named a file with a backslash put its
plaintext in the room's status that way).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cleanroom.enclave.errors import StoreError
from cleanroom.protocol.encoding import canonical

_HEADER = struct.Struct(">IB")
MAX_CHUNK = 1 << 20
_TAG = 16


_OBJECT_ID = re.compile(r"[a-z][a-z0-9_]{0,31}")  # the spec's input and output ids


def unnamed(name: str) -> str:
    """An object as a refusal may show it: its input's or output's id (the spec's, public),
    never its path."""
    head = name.split("/", 1)[0]
    return f"an object of {head}" if _OBJECT_ID.fullmatch(head) else "an object"


def check_object_name(name: str) -> PurePosixPath:
    """``<id>/<relative path>``: no absolute paths, no ``..``, no empty parts."""
    path = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or "\x00" in name
        or path.is_absolute()
        or any(part in ("", ".", "..") for part in name.split("/"))
        or len(path.parts) < 2
    ):
        raise StoreError("object-name", "<id>/<relative path>", unnamed(name), "unsafe object name")
    return path


@dataclass(frozen=True)
class StoredObject:
    name: str
    size: int
    sha256: str  # of the plaintext, lowercase hex


class SealedWriter:
    """Writes one object; ``close()`` seals the final chunk and returns its digest.

    The last chunk is held back until more data or ``close()`` says whether it is the
    final one; data arriving in whole chunks (1 MiB records) is sealed without a copy.
    """

    def __init__(self, aead: AESGCM, file_number: int, name: str, path: Path) -> None:
        self._aead, self._file_number, self._name = aead, file_number, name
        self._path = path
        self._handle = path.open("wb")
        self._index = 0
        self._pending: list[bytes | memoryview] = []  # at most MAX_CHUNK bytes in all
        self._pending_size = 0
        self._digest = hashlib.sha256()
        self._size = 0

    def _seal(self, final: bool) -> None:
        chunk = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending, self._pending_size = [], 0
        nonce = struct.pack(">IQ", self._file_number, self._index)
        aad = canonical({"object": self._name, "index": self._index, "final": final})
        sealed = self._aead.encrypt(nonce, chunk, aad)
        self._handle.write(_HEADER.pack(len(sealed), int(final)))
        self._handle.write(sealed)
        self._index += 1

    def write(self, data: bytes) -> None:
        self._digest.update(data)
        self._size += len(data)
        view = memoryview(data)
        while view:
            if self._pending_size == MAX_CHUNK:  # more follows: that chunk is not final
                self._seal(final=False)
            take = min(MAX_CHUNK - self._pending_size, len(view))
            self._pending.append(data if take == len(data) else view[:take])
            self._pending_size += take
            view = view[take:]

    def close(self) -> StoredObject:
        self._seal(final=True)
        self._handle.close()
        return StoredObject(self._name, self._size, self._digest.hexdigest())

    def abort(self) -> None:
        self._handle.close()
        self._path.unlink(missing_ok=True)


class SealedStore:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=False, mode=0o700)
        self._directory = directory
        self._aead: AESGCM | None = AESGCM(AESGCM.generate_key(bit_length=256))
        self._files: dict[str, tuple[int, Path]] = {}
        self._objects: dict[str, StoredObject] = {}

    def _key(self) -> AESGCM:
        if self._aead is None:
            raise StoreError("store-open", "an open store", "erased", "the store was erased")
        return self._aead

    def create(self, name: str) -> SealedWriter:
        """A writer for a new object; an existing object is never overwritten."""
        check_object_name(name)
        if name in self._files:
            raise StoreError(
                "object-exists", "a new object", unnamed(name), "object already stored"
            )
        number = len(self._files)
        path = self._directory / f"{number:08d}.sealed"
        self._files[name] = (number, path)
        return SealedWriter(self._key(), number, name, path)

    def ingest(self, name: str, source: IO[bytes]) -> StoredObject:
        """Seal everything ``source`` holds as a new object, read in chunks; recorded."""
        writer = self.create(name)
        try:
            while chunk := source.read(MAX_CHUNK):
                writer.write(chunk)
        except BaseException:
            writer.abort()
            self._files.pop(name, None)
            raise
        stored = writer.close()
        self.record(stored)
        return stored

    def discard(self, name: str) -> None:
        """Forget an object and delete its file (an aborted upload leaves nothing)."""
        entry = self._files.pop(name, None)
        self._objects.pop(name, None)
        if entry is not None:
            entry[1].unlink(missing_ok=True)

    def record(self, stored: StoredObject) -> None:
        self._objects[stored.name] = stored

    def objects(self, prefix: str) -> list[StoredObject]:
        """The complete objects under ``<prefix>/``, sorted by name."""
        return sorted(
            (o for name, o in self._objects.items() if name.startswith(prefix + "/")),
            key=lambda o: o.name,
        )

    def read(self, name: str) -> Iterator[bytes]:
        """The object's plaintext chunks; StoreError if the disk copy was tampered with."""
        aead = self._key()
        if name not in self._objects:
            raise StoreError("object-known", "a stored object", unnamed(name), "no such object")
        number, path = self._files[name]
        with path.open("rb") as handle:
            index, final = 0, False
            while not final:
                header = handle.read(_HEADER.size)
                if len(header) != _HEADER.size:
                    raise StoreError("sealed-truncated", "a final chunk", index, "object cut short")
                size, final_flag = _HEADER.unpack(header)
                # The header comes from the untrusted disk: bound it before reading.
                if size > MAX_CHUNK + _TAG or final_flag not in (0, 1):
                    raise StoreError(
                        "sealed-chunk", f"a chunk of <= {MAX_CHUNK + _TAG} bytes", size,
                        "chunk header tampered with at rest",
                    )  # fmt: skip
                final = final_flag == 1
                nonce = struct.pack(">IQ", number, index)
                aad = canonical({"object": name, "index": index, "final": final})
                sealed = handle.read(size)
                if len(sealed) != size:  # a header that claims more than the file holds
                    raise StoreError("sealed-truncated", size, len(sealed), "chunk cut short")
                try:
                    plaintext = aead.decrypt(nonce, sealed, aad)
                except InvalidTag as error:
                    raise StoreError(
                        "sealed-chunk", "an authentic chunk", index, "tampered with at rest"
                    ) from error
                index += 1
                yield plaintext
            if handle.read(1):
                raise StoreError(
                    "sealed-trailing", "nothing after the final chunk", "more", "tampered"
                )

    def erase(self) -> None:
        """Drop the key (the data becomes unreadable) and delete the files."""
        self._aead = None
        self._objects.clear()
        shutil.rmtree(self._directory, ignore_errors=True)


def wipe(directory: Path) -> None:
    """Overwrite then delete a plaintext scratch tree (best effort on the simulated backend).

    The walk goes by file descriptors and never follows a symlink, at any depth: a
    link planted in the tree cannot make the wipe overwrite or delete anything
    outside it.
    """
    try:
        top = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    try:
        for _path, _dirs, files, dir_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            for name in files:
                _overwrite(name, dir_fd)
    finally:
        os.close(top)
    # rmtree deletes by descriptors too, never following links (avoids_symlink_attacks).
    shutil.rmtree(directory, ignore_errors=True)


def _overwrite(name: str, dir_fd: int) -> None:
    try:
        fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return  # a symlink (ELOOP), a FIFO without reader, or gone: nothing of ours to zero
    with os.fdopen(fd, "wb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return
        remaining = info.st_size
        if info.st_blocks * 512 < remaining:
            # Sparse (a 1 GiB file of holes is made in no time): writing zeros over the
            # holes would turn them into real disk. Free the blocks instead.
            os.ftruncate(fd, 0)
            return
        while remaining > 0:
            block = min(remaining, MAX_CHUNK)
            handle.write(bytes(block))
            remaining -= block
        handle.flush()
        os.fsync(fd)
