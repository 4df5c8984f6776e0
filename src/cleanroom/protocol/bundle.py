"""The function bundle: a deterministic tar archive of a function directory.

A function is a directory with ``handler.py`` at its top, other modules and
optionally vendored ``packages/``. Its ID is ``"fs://" + b64u(SHA-256(bundle))``,
and that ID is a field of the work spec, so it is part of the Work-ID that every
party approves and that the Worker's attestation binds. The Worker, the server and
every user recompute the ID from the bundle bytes; a reviewer who was shown the
source recomputes it by packing that source. So packing must be a function of the
files' names and contents only: the same tree gives the same bytes on every run,
machine and file system (no timestamps, owners, permissions, listing order), and a
different name or content gives a different ID.

Format (docs/protocol.md): an uncompressed POSIX.1-2001 (pax) tar archive as
written by the standard library ``tarfile`` with ``PAX_FORMAT``, UTF-8 names:

- members are the regular files and directories of the tree, sorted by the
  UTF-8 bytes of their relative POSIX path (so each directory comes before its
  contents); the top directory itself is not a member;
- every header has mtime 0, uid/gid 0, empty uname/gname, mode 0o644 for files
  and 0o755 for directories (the executable bit is not carried); directory names
  end with ``/``;
- a pax extended header appears only for a path that ustar cannot hold (longer
  than 100 bytes, or not ASCII), and then holds only ``path``; a file of 8 GiB or
  more also gets ``size``;
- the archive ends with tarfile's two zero blocks, padded to a 10240-byte record.

:func:`pack` skips, silently, every directory named ``__pycache__`` and every
regular file whose name ends in ``.pyc``: bytecode is a cache the interpreter
rebuilds, and it would make the ID depend on which Python last imported the code.

:func:`unpack` checks every member before it writes anything and extracts with
tarfile's ``"data"`` filter into a fresh directory that it renames into place.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from cleanroom.protocol.encoding import b64u, sha256
from cleanroom.protocol.errors import ProtocolError

DEFAULT_MAX_BYTES = 1 << 30
"""Default limit on the total size of the files' contents (1 GiB)."""

DEFAULT_MAX_FILES = 10_000
"""Default limit on the number of members (files and directories)."""

MAX_PATH_BYTES = 1024
"""Longest relative path, in UTF-8 bytes (a path component is at most 255)."""

MAX_NAME_BYTES = 255

HANDLER = "handler.py"
FUNCTION_ID_PREFIX = "fs://"

_FILE_MODE = 0o644
_DIRECTORY_MODE = 0o755
_SKIPPED_DIRECTORIES = frozenset({"__pycache__"})
_SKIPPED_SUFFIX = ".pyc"
_FILE_TYPES = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE})
# Errors that tarfile raises on malformed input while listing members.
_FORMAT_ERRORS = (tarfile.TarError, EOFError, ValueError, OverflowError, UnicodeError)


class BundleError(ProtocolError):
    """A function directory cannot be packed, or a bundle was refused."""


@dataclass(frozen=True)
class _Entry:
    path: str  # relative POSIX path, checked by _check_path
    source: str  # absolute path on disk (may not be valid UTF-8: surrogate-escaped)
    is_directory: bool
    size: int


def _display(path: str) -> str:
    """``path`` for error messages, even when it is not valid UTF-8."""
    return repr(path)[1:-1]


def _check_path(path: str) -> None:
    """Refuse (``bundle-path``) a relative path that a bundle may not hold."""

    def refuse(why: str) -> BundleError:
        return BundleError(
            "bundle-path",
            "a relative POSIX path of UTF-8 names without NUL or backslash",
            _display(path),
            why,
        )

    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise refuse("the path is not valid UTF-8") from None
    if "\x00" in path or "\\" in path:
        raise refuse("the path contains a NUL or a backslash")
    if path.startswith("/"):
        raise refuse("the path is absolute")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise refuse("the path has an empty, '.' or '..' component")
    if len(encoded) > MAX_PATH_BYTES or any(
        len(part.encode("utf-8")) > MAX_NAME_BYTES for part in parts
    ):
        raise refuse(f"the path is longer than {MAX_PATH_BYTES} bytes or a name than 255")


def _size_error(total: int, max_bytes: int) -> BundleError:
    return BundleError(
        "bundle-size",
        f"at most {max_bytes} bytes of file contents",
        f"{total} bytes",
        "the function is too large",
    )


def _count_error(count: int, max_files: int) -> BundleError:
    return BundleError(
        "bundle-size",
        f"at most {max_files} files and directories",
        f"{count} or more",
        "the function has too many files",
    )


def _handler_error(actual: str) -> BundleError:
    return BundleError(
        "bundle-handler",
        f"a regular file {HANDLER} at the top of the function",
        actual,
        f"the function has no {HANDLER}",
        hint=f"put the entry point in {HANDLER} at the top of the function directory",
    )


def _symlink_error(path: str) -> BundleError:
    return BundleError(
        "bundle-symlink",
        "regular files and directories only",
        f"symlink {_display(path)}",
        "a function may not contain symbolic links",
        hint="replace the link by a copy of its target",
    )


def _file_type_error(path: str, mode: int) -> BundleError:
    return BundleError(
        "bundle-file-type",
        "regular files and directories only",
        f"{_display(path)} of type {stat.filemode(mode)[0]!r}",
        "a function may contain only regular files and directories",
    )


def _scan(directory: Path, max_bytes: int, max_files: int) -> list[_Entry]:
    """Every file and directory below ``directory``, checked, in canonical order."""
    top = os.lstat(directory)
    if stat.S_ISLNK(top.st_mode):
        raise _symlink_error(str(directory))
    if not stat.S_ISDIR(top.st_mode):
        raise _file_type_error(str(directory), top.st_mode)
    entries: list[_Entry] = []
    total = 0
    pending: list[tuple[str, str]] = [(os.fspath(directory), "")]
    while pending:
        source, prefix = pending.pop()
        with os.scandir(source) as listing:
            children = list(listing)
        for child in children:
            path = prefix + child.name
            mode = child.stat(follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode):
                raise _symlink_error(path)
            if stat.S_ISDIR(mode):
                if child.name in _SKIPPED_DIRECTORIES:
                    continue
                _check_path(path)
                entries.append(_Entry(path, child.path, is_directory=True, size=0))
                pending.append((child.path, path + "/"))
            elif stat.S_ISREG(mode):
                if child.name.endswith(_SKIPPED_SUFFIX):
                    continue
                _check_path(path)
                size = child.stat(follow_symlinks=False).st_size
                entries.append(_Entry(path, child.path, is_directory=False, size=size))
                total += size
                if total > max_bytes:
                    raise _size_error(total, max_bytes)
            else:
                raise _file_type_error(path, mode)
            if len(entries) > max_files:
                raise _count_error(len(entries), max_files)
    if not any(entry.path == HANDLER and not entry.is_directory for entry in entries):
        raise _handler_error("no such file")
    # _check_path made every path valid UTF-8, whose byte order is code point order.
    entries.sort(key=lambda entry: entry.path)
    return entries


def _header(path: str, *, is_directory: bool, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.type = tarfile.DIRTYPE if is_directory else tarfile.REGTYPE
    info.mode = _DIRECTORY_MODE if is_directory else _FILE_MODE
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_file(tar: tarfile.TarFile, entry: _Entry, total: int, max_bytes: int) -> int:
    """Stream one file into ``tar``; return the new total of contents."""
    # O_NOFOLLOW and fstat: the file checked by _scan may have been swapped since.
    # O_NONBLOCK: opening a FIFO swapped in must not hang.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        descriptor = os.open(entry.source, flags)
    except OSError as error:
        if os.path.islink(entry.source):
            raise _symlink_error(entry.path) from error
        raise
    with os.fdopen(descriptor, "rb") as file:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise _file_type_error(entry.path, status.st_mode)
        total += status.st_size
        if total > max_bytes:
            raise _size_error(total, max_bytes)
        try:
            tar.addfile(_header(entry.path, is_directory=False, size=status.st_size), file)
        except OSError as error:  # tarfile read fewer bytes than the size it wrote
            raise _changed_error(entry.path) from error
        if file.read(1):
            raise _changed_error(entry.path)
    return total


def _changed_error(path: str) -> BundleError:
    return BundleError(
        "bundle-changed",
        "files that do not change while they are packed",
        _display(path),
        "a file changed size while it was packed",
        hint="pack again when nothing is writing to the function directory",
    )


def pack(
    directory: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
) -> bytes:
    """The canonical bundle of the function in ``directory`` (see the module docstring).

    Only names and contents are carried: the same tree gives the same bytes
    everywhere. ``__pycache__`` directories and ``*.pyc`` files are skipped silently.
    Files are streamed into the archive, each read once; the archive is returned in
    memory.

    Raises :class:`BundleError` naming the check: ``bundle-symlink`` (a symbolic
    link anywhere, ``directory`` included), ``bundle-file-type`` (anything but
    regular files and directories), ``bundle-path`` (a name that is not valid
    UTF-8, holds a backslash, or is too long), ``bundle-handler`` (no regular
    ``handler.py`` at the top), ``bundle-size`` (more than ``max_bytes`` bytes of
    contents or more than ``max_files`` members: :func:`unpack`'s limits), and
    ``bundle-changed`` (a file changed size while it was read). ``OSError`` when
    the directory cannot be read.
    """
    buffer = io.BytesIO()
    pack_into(directory, buffer, max_bytes=max_bytes, max_files=max_files)
    return buffer.getvalue()


def pack_into(
    directory: Path,
    destination: IO[bytes],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
) -> str:
    """:func:`pack`, written into the binary file ``destination`` as it is made (a
    bundle of any size in constant memory); the function ID of what was written."""
    entries = _scan(directory, max_bytes, max_files)
    hashed = _HashingWriter(destination)
    total = 0
    # Writing an archive, tarfile only calls write() and tell().
    target = cast(IO[bytes], hashed)
    with tarfile.open(fileobj=target, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for entry in entries:
            if entry.is_directory:
                tar.addfile(_header(entry.path, is_directory=True))
            else:
                total = _add_file(tar, entry, total, max_bytes)
    return FUNCTION_ID_PREFIX + b64u(hashed.digest.digest())


class _HashingWriter:
    """A write-only file that hashes what passes through it (what tarfile needs)."""

    def __init__(self, destination: IO[bytes]) -> None:
        self._destination = destination
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self._destination.write(data)

    def tell(self) -> int:
        return self._destination.tell()


def function_id(bundle: bytes) -> str:
    """The function's ID: ``"fs://" + b64u(SHA-256(bundle))``, over the bundle's bytes."""
    return FUNCTION_ID_PREFIX + b64u(sha256(bundle))


def _format_error(actual: str) -> BundleError:
    return BundleError(
        "bundle-format",
        "an uncompressed POSIX tar archive",
        actual,
        "the bundle is not a tar archive",
    )


Source = bytes | IO[bytes]
"""A bundle to unpack: its bytes, or a seekable binary file holding them (read in
pieces, so a large bundle need not be in memory)."""

_ZERO_CHECK_CHUNK = 1 << 20


def _size_of(bundle: Source) -> int:
    if isinstance(bundle, bytes):
        return len(bundle)
    position = bundle.tell()
    size = bundle.seek(0, os.SEEK_END)
    bundle.seek(position)
    return size


def _zeros_from(bundle: Source, offset: int) -> int:
    """How many zero bytes ``bundle`` holds from ``offset`` to its end."""
    if isinstance(bundle, bytes):
        return bundle.count(0, offset)
    bundle.seek(offset)
    zeros = 0
    while chunk := bundle.read(_ZERO_CHECK_CHUNK):
        zeros += chunk.count(0)
    return zeros


def _check_members(
    tar: tarfile.TarFile, bundle: Source, max_bytes: int, max_files: int
) -> tuple[list[tarfile.TarInfo], list[str]]:
    """Every member of ``tar``, checked; and the sorted paths of its files."""
    members: list[tarfile.TarInfo] = []
    files: list[str] = []
    directories: set[str] = set()
    seen: set[str] = set()
    previous = b""
    total = 0
    size = _size_of(bundle)
    while True:
        try:
            member = tar.next()
        except _FORMAT_ERRORS as error:
            raise _format_error(f"{type(error).__name__}: {error}") from error
        if member is None:
            break
        if len(members) >= max_files:
            raise _count_error(len(members) + 1, max_files)
        path = member.name
        _check_path(path)
        if member.type == tarfile.DIRTYPE:
            is_directory = True
        elif member.type in _FILE_TYPES:
            is_directory = False
        elif member.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
            raise BundleError(
                "bundle-file-type",
                "regular files and directories only",
                f"link {_display(path)} -> {_display(member.linkname)}",
                "a bundle may not contain links",
            )
        else:
            raise BundleError(
                "bundle-file-type",
                "regular files and directories only",
                f"{_display(path)} of tar type {member.type!r}",
                "a bundle may contain only regular files and directories",
            )
        if path in seen:
            raise BundleError(
                "bundle-duplicate", "each path once", _display(path), "a path appears twice"
            )
        seen.add(path)
        encoded = path.encode("utf-8")
        if encoded <= previous:
            raise BundleError(
                "bundle-canonical",
                f"members sorted by path: after {previous.decode('utf-8')!r}",
                _display(path),
                "the members are not in canonical order",
            )
        previous = encoded
        parent = path.rpartition("/")[0]
        if parent and parent not in directories:
            raise BundleError(
                "bundle-canonical",
                f"directory {_display(parent)} listed before its contents",
                _display(path),
                "a member's directory is not a member before it",
            )
        if member.offset_data + (0 if is_directory else member.size) > size:
            raise _format_error(f"{_display(path)} is truncated")
        if is_directory:
            directories.add(path)
        else:
            total += member.size
            if total > max_bytes:
                raise _size_error(total, max_bytes)
            files.append(path)
        members.append(member)
    # tarfile stops at the first zero block, or silently at a bad header after the
    # first: what follows must be the end-of-archive marker, two or more zero
    # blocks, and nothing else (no truncation at a member boundary, no hidden data).
    trailer = size - tar.offset
    if trailer < 2 * tarfile.BLOCKSIZE or _zeros_from(bundle, tar.offset) != trailer:
        raise _format_error(f"no end-of-archive marker at byte {tar.offset}")
    if HANDLER not in files:
        raise _handler_error("a directory" if HANDLER in directories else "no such file")
    return members, files


def _open(bundle: Source) -> tarfile.TarFile:
    """``bundle`` opened as an uncompressed tar archive (``bundle-format``)."""
    if isinstance(bundle, bytes):
        fileobj: IO[bytes] = io.BytesIO(bundle)
    else:
        fileobj = bundle
        fileobj.seek(0)
    try:
        return tarfile.open(fileobj=fileobj, mode="r:", encoding="utf-8", errorlevel=2)
    except _FORMAT_ERRORS as error:
        raise _format_error(f"{type(error).__name__}: {error}") from error


def unpack(
    bundle: Source,
    destination: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
) -> list[str]:
    """Extract ``bundle`` safely into ``destination``; return its file paths, sorted.

    ``bundle`` is the archive's bytes or a seekable binary file opened on it (read
    in pieces: a file of any size is unpacked in constant memory).

    ``destination`` must not exist; its parent must. Every member is checked before
    anything is written, then the members are extracted with tarfile's ``"data"``
    filter into a fresh directory beside ``destination``, which is renamed to it: on
    any refusal nothing is left behind. The data filter sets the modes (files
    0o644); mtimes are 0; ``destination`` itself is private (0o700).

    Raises :class:`BundleError` naming the check: ``bundle-destination``
    (``destination`` exists), ``bundle-format`` (not an uncompressed tar archive,
    or truncated), ``bundle-path`` (absolute, ``..``, ``.`` or empty component,
    backslash, NUL, not UTF-8, too long), ``bundle-file-type`` (symlinks, hard
    links, devices, FIFOs, anything but regular files and directories),
    ``bundle-duplicate``, ``bundle-canonical`` (members not sorted as :func:`pack`
    sorts them, or a directory not listed before its contents), ``bundle-size``
    (more than ``max_bytes`` bytes of contents or ``max_files`` members) and
    ``bundle-handler``. A bundle that passes need not be byte-identical to what
    :func:`pack` makes of its contents: its ID is what it hashes to.
    """
    if os.path.lexists(destination):
        raise BundleError(
            "bundle-destination",
            "a destination that does not exist",
            str(destination),
            "the destination exists",
        )
    with _open(bundle) as tar:
        members, files = _check_members(tar, bundle, max_bytes, max_files)
        staging = tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent)
        try:
            try:
                tar.extractall(staging, members=members, filter="data")
            except tarfile.TarError as error:  # a filter refused what the checks let by
                raise _format_error(f"{type(error).__name__}: {error}") from error
            if os.path.lexists(destination):
                raise BundleError(
                    "bundle-destination",
                    "a destination that does not exist",
                    str(destination),
                    "the destination was created during extraction",
                )
            os.rename(staging, destination)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return files
