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

A bundle holds only code that a reviewer can read, under names a reviewer can
tell apart, and :func:`pack` and :func:`unpack` accept exactly the same members:
no bytecode (``.pyc``, ``.pyo``, ``__pycache__/``), compiled extension modules
(``.so``, ``.pyd``) only under ``packages/``, Python sources (``.py``, ``.pyw``) in
UTF-8 declaring no other encoding, and no two paths equal after NFKC
normalisation and case folding (:func:`cleanroom.protocol.text.folded`). The one
thing :func:`pack` leaves out instead of refusing is a directory named exactly
``__pycache__``: the interpreter's cache of the sources beside it, never part of
a function.

:func:`unpack` checks every member before it writes anything and extracts with
tarfile's ``"data"`` filter into a fresh directory that it renames into place
once the sources in it passed their check and the bundle is what :func:`pack` makes
of them, byte for byte: one spelling of a tree, which every release of ``tarfile``
reads alike.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import re
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from cleanroom.protocol.encoding import b64u, sha256
from cleanroom.protocol.errors import ProtocolError
from cleanroom.protocol.text import folded, shown

DEFAULT_MAX_BYTES = 1 << 30
"""Default limit on the total size of the files' contents (1 GiB)."""

DEFAULT_MAX_FILES = 10_000
"""Default limit on the number of members (files and directories)."""

MAX_PATH_BYTES = 1024
"""Longest relative path, in UTF-8 bytes (a path component is at most 255)."""

MAX_NAME_BYTES = 255

HANDLER = "handler.py"
FUNCTION_ID_PREFIX = "fs://"
PACKAGES = "packages"
"""The directory of vendored packages: on ``sys.path`` after the bundle's top."""

SOURCE_HEAD_BYTES = 1 << 20
"""Longest first two lines of a Python source (where an encoding may be declared)."""

_FILE_MODE = 0o644
_DIRECTORY_MODE = 0o755
_BYTECODE_CACHE = "__pycache__"
_BYTECODE_SUFFIXES = (".pyc", ".pyo")
_EXTENSION_SUFFIXES = (".so", ".pyd")
_SOURCE_SUFFIXES = (".py", ".pyw")
_FILE_TYPES = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE})
_CHUNK = 1 << 20
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
    """``path`` for error messages: printable ASCII, even when it is not valid UTF-8."""
    return shown(path)


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


# --- what a bundle may hold: only code that a reviewer can read is run -----------------


def _check_kind(path: str, *, is_directory: bool) -> None:
    """Refuse code that the review cannot show (``bundle-bytecode``, ``bundle-extension``).

    Bytecode is refused everywhere: the interpreter runs a ``.pyc`` beside or
    instead of its source (an unchecked-hash ``.pyc`` is never compared with it),
    so it could run other code than the source shows. A compiled extension module
    is allowed only under ``packages/``, where vendored wheels keep theirs; at the
    top it would be imported in place of a reviewed module of the same name.
    Suffixes are compared case-insensitively: refusing more is safe.
    """
    parts = path.split("/")
    if any(part.casefold() == _BYTECODE_CACHE for part in parts) or (
        not is_directory and parts[-1].casefold().endswith(_BYTECODE_SUFFIXES)
    ):
        raise BundleError(
            "bundle-bytecode",
            "Python sources only: no .pyc file and no __pycache__ directory",
            _display(path),
            "the function holds bytecode, which would run instead of the reviewed source",
            hint="delete the bytecode (Python rebuilds it from the sources)",
        )
    vendored = len(parts) > 1 and parts[0] == PACKAGES
    if not (is_directory or vendored) and parts[-1].casefold().endswith(_EXTENSION_SUFFIXES):
        raise BundleError(
            "bundle-extension",
            f"compiled extension modules (.so, .pyd) only under {PACKAGES}/",
            _display(path),
            "a compiled module outside packages/ would be imported instead of the source",
            hint=f"vendor compiled packages under {PACKAGES}/",
        )


class _Names:
    """The paths seen so far, refusing two that read alike (``bundle-name-collision``)."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def add(self, path: str) -> None:
        other = self._seen.setdefault(folded(path), path)
        if other != path:
            first, second = sorted((other, path))
            raise BundleError(
                "bundle-name-collision",
                "names that differ after NFKC normalisation and case folding",
                f"{_display(first)} and {_display(second)}",
                "two names in the function read alike",
                hint="rename one of them: a reviewer cannot tell them apart",
            )


_DECLARATION = re.compile(rb"coding[:=][ \t]*([-\w.]+)")
_LINE_END = re.compile(rb"\r\n|\r|\n")


def _declares_utf8(name: bytes) -> bool:
    """Whether Python reads a source declaring ``name`` as UTF-8 (its own normalisation)."""
    text = name.decode("ascii")
    normal = text[:12].lower().replace("_", "-")
    if normal == "utf-8" or normal.startswith("utf-8-"):
        return True
    try:
        return codecs.lookup(text).name == "utf-8"
    except LookupError:
        return False


class _SourceCheck:
    """One Python source, fed in pieces: UTF-8 throughout, no other encoding declared.

    Python reads a source as UTF-8 unless one of its first two lines declares
    another encoding (``# -*- coding: utf-7 -*-``); a reviewer's editor or viewer
    may not, and then shows other text than runs. So a source must be valid UTF-8
    and every ``coding:`` or ``coding=`` after a ``#`` in its first two lines must
    name UTF-8 (more than Python looks at: a code line's trailing comment counts,
    as editors read it). A UTF-8 byte order mark is fine.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._head = bytearray()
        self._head_checked = False
        self._offset = 0

    def _refuse(self, actual: str, why: str) -> BundleError:
        return BundleError(
            "bundle-source-encoding",
            "Python sources in UTF-8 that declare no other encoding",
            f"{_display(self._path)}: {actual}",
            why,
            hint="save the file as UTF-8 and remove the coding declaration",
        )

    def feed(self, data: bytes, *, final: bool = False) -> None:
        pending = len(self._decoder.getstate()[0])
        try:
            self._decoder.decode(data, final)
        except UnicodeDecodeError as error:
            where = self._offset - pending + error.start
            raise self._refuse(
                f"not UTF-8 at byte {where}", "a Python source is not valid UTF-8"
            ) from None
        self._offset += len(data)
        if self._head_checked:
            return
        self._head += data
        lines = _LINE_END.split(bytes(self._head), maxsplit=2)
        if len(lines) < 3 and not final:
            if len(self._head) > SOURCE_HEAD_BYTES:
                raise self._refuse(
                    f"first two lines longer than {SOURCE_HEAD_BYTES} bytes",
                    "a Python source's first lines, where an encoding is declared, are too long",
                )
            return
        for line in lines[:2]:
            comment = line.find(b"#")
            if comment < 0:
                continue
            for declared in _DECLARATION.finditer(line, comment):
                if not _declares_utf8(declared[1]):
                    name = declared[1].decode("ascii")
                    raise self._refuse(
                        f"declares encoding {name}",
                        "a Python source declares another encoding than UTF-8",
                    )
        self._head_checked = True
        self._head.clear()

    def finish(self) -> None:
        self.feed(b"", final=True)


def _is_source(path: str) -> bool:
    return path.rpartition("/")[2].casefold().endswith(_SOURCE_SUFFIXES)


def _check_source_file(path: str, file: IO[bytes]) -> None:
    check = _SourceCheck(path)
    while chunk := file.read(_CHUNK):
        check.feed(chunk)
    check.finish()


class _CheckedSource(io.RawIOBase):
    """A source file that checks (:class:`_SourceCheck`) every byte read from it."""

    def __init__(self, file: IO[bytes], check: _SourceCheck) -> None:
        super().__init__()
        self._file = file
        self._check = check

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        data = self._file.read(size)
        self._check.feed(data)
        return data


def _scan(directory: Path, max_bytes: int, max_files: int) -> list[_Entry]:
    """Every file and directory below ``directory``, checked, in canonical order."""
    top = os.lstat(directory)
    if stat.S_ISLNK(top.st_mode):
        raise _symlink_error(str(directory))
    if not stat.S_ISDIR(top.st_mode):
        raise _file_type_error(str(directory), top.st_mode)
    entries: list[_Entry] = []
    names = _Names()
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
                if child.name == _BYTECODE_CACHE:
                    continue  # a cache the interpreter rebuilds: never part of a function
                _check_path(path)
                _check_kind(path, is_directory=True)
                names.add(path)
                entries.append(_Entry(path, child.path, is_directory=True, size=0))
                pending.append((child.path, path + "/"))
            elif stat.S_ISREG(mode):
                _check_path(path)
                _check_kind(path, is_directory=False)
                names.add(path)
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
        source = _SourceCheck(entry.path) if _is_source(entry.path) else None
        # The bytes checked are the bytes packed: the check reads as tarfile copies.
        contents = file if source is None else _CheckedSource(file, source)
        try:
            tar.addfile(_header(entry.path, is_directory=False, size=status.st_size), contents)
        except OSError as error:  # tarfile read fewer bytes than the size it wrote
            raise _changed_error(entry.path) from error
        if file.read(1):
            raise _changed_error(entry.path)
        if source is not None:
            source.finish()
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
    everywhere. Directories named ``__pycache__`` are left out. Files are streamed
    into the archive, each read once (and checked as it is read); the archive is
    returned in memory.

    Raises :class:`BundleError` naming the check: ``bundle-symlink`` (a symbolic
    link anywhere, ``directory`` included), ``bundle-file-type`` (anything but
    regular files and directories), ``bundle-path`` (a name that is not valid
    UTF-8, holds a backslash, or is too long), ``bundle-bytecode``,
    ``bundle-extension``, ``bundle-source-encoding``, ``bundle-name-collision``
    (see the module docstring), ``bundle-handler`` (no regular ``handler.py`` at
    the top), ``bundle-size`` (more than ``max_bytes`` bytes of contents or more
    than ``max_files`` members: :func:`unpack`'s limits), and ``bundle-changed``
    (a file changed size while it was read). ``OSError`` when the directory
    cannot be read.
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


class _Counter:
    """A write-only file that keeps nothing, only its length (to hash a bundle unwritten)."""

    def __init__(self) -> None:
        self._length = 0

    def write(self, data: bytes) -> int:
        self._length += len(data)
        return len(data)

    def tell(self) -> int:
        return self._length


def function_id(bundle: Source) -> str:
    """The function's ID: ``"fs://" + b64u(SHA-256(bundle))``, over the bundle's bytes
    (``bundle`` itself, or a seekable binary file holding them, read from its start)."""
    if isinstance(bundle, bytes):
        return FUNCTION_ID_PREFIX + b64u(sha256(bundle))
    bundle.seek(0)
    digest = hashlib.sha256()
    while chunk := bundle.read(_CHUNK):
        digest.update(chunk)
    return FUNCTION_ID_PREFIX + b64u(digest.digest())


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
    names = _Names()
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
        _check_kind(path, is_directory=is_directory)
        if path in seen:
            raise BundleError(
                "bundle-duplicate", "each path once", _display(path), "a path appears twice"
            )
        seen.add(path)
        names.add(path)
        encoded = path.encode("utf-8")
        if encoded <= previous:
            raise BundleError(
                "bundle-canonical",
                f"members sorted by path: after {_display(previous.decode('utf-8'))}",
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


def _check_canonical(bundle: Source, staging: Path, max_bytes: int, max_files: int) -> None:
    """Refuse (``bundle-canonical``) a bundle that is not, byte for byte, what :func:`pack`
    makes of the files it holds.

    Every party reads a bundle with its own interpreter's ``tarfile`` (a reviewer's 3.13,
    the Worker's 3.11), and ``tarfile`` reads pax records, GNU long names and headers
    otherwise from one release to another (3.13.0 refuses a pax record whose length is
    wrong, which 3.11 reads as a path ending in a line break). What ``pack`` writes, every
    release reads alike: any other spelling of a tree is refused, so no two readers can
    see two trees in one Work-ID.
    """
    expected = pack_into(
        staging, cast(IO[bytes], _Counter()), max_bytes=max_bytes, max_files=max_files
    )
    actual = function_id(bundle)
    if actual != expected:
        raise BundleError(
            "bundle-canonical",
            f"the bundle pack makes of these files ({expected})",
            actual,
            "the bundle is not in canonical form (headers, records or padding differ)",
            hint="make the bundle with cleanroom function upload (cleanroom.protocol.bundle.pack)",
        )


def _check_sources(directory: Path, files: list[str]) -> None:
    """Every Python source among ``files``, as extracted under ``directory``, is UTF-8."""
    for path in files:
        if _is_source(path):
            with open(directory / path, "rb") as file:
                _check_source_file(path, file)


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
    (more than ``max_bytes`` bytes of contents or ``max_files`` members),
    ``bundle-bytecode``, ``bundle-extension``, ``bundle-name-collision``,
    ``bundle-handler`` and, after extraction but before the rename,
    ``bundle-source-encoding`` and ``bundle-canonical`` again (the bundle is not, byte
    for byte, what :func:`pack` makes of the files extracted: :func:`_check_canonical`).
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
            _check_sources(Path(staging), files)
            _check_canonical(bundle, Path(staging), max_bytes, max_files)
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
