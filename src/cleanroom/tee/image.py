"""Which files an enclave image is made of, with their digests: what it is measured by.

An image is every file its process executes or reads, each in one named group
(``interpreter``, ``stdlib``, ``packages``, ``cleanroom``, ``libraries`` and, for
the Worker, ``runtime-base`` and ``runtime:NAME``; docs/protocol.md says what each
holds). Bytecode counts: the image's sources are compiled before they are hashed, so
no later import adds a file to a measured directory.

Hashing it takes seconds, so it is done once per installation, as signing an enclave
is: :class:`ImageStore` keeps the list with each file's and directory's stat, later
checks compare stats only (:meth:`ImageStore.load`), and a starting Worker reads only
the summary (:meth:`ImageStore.load_summary`). Why that weakens nothing a client
checks: docs/attestation.md §8.
"""

from __future__ import annotations

import compileall
import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import stat
import subprocess
import sys
import sysconfig
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from cleanroom.errors import EXIT_USAGE, Error
from cleanroom.runtimes import Runtime, RuntimeUnavailable, installed_runtimes, runtimes_dir

FILES_TYPE = "cleanroom/image-files/v1"
RECORD_TYPE = "cleanroom/image-record/v1"
BASE_GROUPS = ("interpreter", "stdlib", "packages", "cleanroom", "libraries", "runtime-base")
RUNTIME_GROUP_PREFIX = "runtime:"
HASH_CHUNK = 1 << 20

# Run by the image's own interpreter: import the service module (and what the image's
# processes import later), then say which distributions its modules come from and
# which files the process has mapped.
PROBE = """
import importlib, importlib.metadata, json, os, sys
for module in sys.argv[1:]:
    importlib.import_module(module)
owners = importlib.metadata.packages_distributions()
tops = {name.partition(".")[0] for name, module in list(sys.modules.items()) if module}
distributions = sorted({dist for top in tops for dist in owners.get(top, ())})
mapped = set()
with open("/proc/self/maps") as maps:
    for line in maps:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/") and not fields[5].endswith(")"):
            mapped.add(os.path.realpath(fields[5].strip()))
# Shared objects only: locale archives and caches are data, and depend on the caller's
# environment, not on the installation.
mapped = [path for path in mapped if ".so" in os.path.basename(path)]
print(json.dumps({"distributions": distributions, "mapped": sorted(mapped)}))
"""
# The probe's environment: fixed, so whoever measures (a client, the Attester, the
# CLI) finds the same files whatever its own environment says.
PROBE_ENVIRONMENT = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


class MeasurementError(Error):
    """An enclave image cannot be measured (unknown image, unreadable file, bad key)."""

    exit_code = EXIT_USAGE  # the image given cannot be measured


@dataclass(frozen=True)
class TrustedFile:
    """One file of an image: where it is, its SHA-256 and size, and its group."""

    group: str
    path: str
    sha256: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "path": self.path, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class GroupDigest:
    """A group's summary in the manifest; ``sha256`` commits to its every file."""

    name: str
    files: int
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "files": self.files, "bytes": self.bytes, "sha256": self.sha256}


def group_digest(name: str, files: Sequence[TrustedFile]) -> GroupDigest:
    """SHA-256 of the group's list: one line ``sha256 size path`` per file, sorted by path."""
    listing = "".join(
        f"{entry.sha256} {entry.size} {entry.path}\n"
        for entry in sorted(files, key=lambda entry: entry.path)
    )
    return GroupDigest(
        name=name,
        files=len(files),
        bytes=sum(entry.size for entry in files),
        sha256=hashlib.sha256(listing.encode("utf-8", "surrogateescape")).hexdigest(),
    )


def group_order(name: str) -> tuple[int, str]:
    if name in BASE_GROUPS:
        return (BASE_GROUPS.index(name), "")
    return (len(BASE_GROUPS), name)


@dataclass(frozen=True)
class ImageFiles:
    """Every file of an image, grouped, in a stable order: the list a third party diffs,
    and from which a Gramine manifest's trusted files are rendered."""

    image: str
    files: tuple[TrustedFile, ...]
    # Facts of the installation the image's code reads from its measured config
    # (for the Worker: where each runtime is and what a sandbox binds for it).
    config: Mapping[str, Any] = field(default_factory=dict)

    def groups(self) -> tuple[GroupDigest, ...]:
        grouped: dict[str, list[TrustedFile]] = {}
        for entry in self.files:
            grouped.setdefault(entry.group, []).append(entry)
        return tuple(group_digest(name, grouped[name]) for name in sorted(grouped, key=group_order))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": FILES_TYPE,
            "image": self.image,
            "config": dict(self.config),
            "files": [entry.to_json() for entry in self.files],
        }


@dataclass(frozen=True)
class ImageDefinition:
    """What an enclave image is: its identity, its service module, its own modules."""

    name: str
    isv_prod_id: int
    isv_svn: int
    service: str  # the module its process runs (python -m ...)
    trusted: tuple[str, ...]  # glob patterns, relative to the cleanroom package
    runtimes: bool = False  # does the image run functions (and so hold the runtimes)?
    # Modules its processes import later than the service's start (the Worker's run
    # supervisor builds its syscall filter with pyseccomp): measured all the same.
    also_imports: tuple[str, ...] = ()


# -- finding the files ---------------------------------------------------------------------


def _stat_key(status: os.stat_result) -> list[int]:
    return [status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino, status.st_dev]


def _stat_or_absent(path: str) -> list[int]:
    """The stat key, or [0] for a path that does not exist (or cannot be reached)."""
    try:
        return _stat_key(os.stat(path))
    except OSError:
        return [0]


def _walk(root: Path, *, skip: frozenset[str] = frozenset()) -> Iterator[str]:
    """Every regular file under ``root`` (or symlink to one), in no particular order.

    Symlinks to directories are not followed (the directory they point at is listed
    where it lies, if it belongs to the image). ``skip`` names top-level entries to
    leave out (e.g. a base interpreter's own ``site-packages``).
    """
    top = os.fspath(root)

    def unreadable(error: OSError) -> None:
        raise MeasurementError(f"cannot list {error.filename} of the image: {error.strerror}")

    for directory, subdirectories, files in os.walk(top, onerror=unreadable):
        if directory == top and skip:
            subdirectories[:] = [name for name in subdirectories if name not in skip]
        for name in files:
            yield os.path.join(directory, name)


def _compile(sources: Iterable[Path | str]) -> None:
    """Write the bytecode the interpreter would write on first import, so no later
    import adds a file to a measured directory. Read-only places are left as they are."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the standard library's tests hold odd sources
        for source in sources:
            if os.fspath(source).endswith(".py"):
                try:
                    compileall.compile_file(source, quiet=2)
                except (OSError, ValueError, RecursionError):
                    continue


@cache
def _probe(executable: str, modules: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(distributions, mapped files) of a fresh ``executable`` that imported ``modules``."""
    module = ", ".join(modules)
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and modules
            [executable, "-I", "-c", PROBE, *modules],
            env=PROBE_ENVIRONMENT,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise MeasurementError(f"cannot import {module} to find its files: {error}") from error
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise MeasurementError(f"importing {module} failed: {tail[0]}")
    found = json.loads(done.stdout)
    return tuple(found["distributions"]), tuple(found["mapped"])


def _requirements(distribution: importlib.metadata.Distribution) -> Iterator[str]:
    """Names a distribution requires here (markers evaluated, no extras)."""
    for text in distribution.requires or ():
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            yield canonicalize_name(requirement.name)


def _distribution_closure(names: Iterable[str]) -> list[importlib.metadata.Distribution]:
    """The distributions named and every one they require that is installed."""
    pending: list[str] = [canonicalize_name(name) for name in names]
    seen: dict[str, importlib.metadata.Distribution] = {}
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional requirement that is not installed
        seen[name] = distribution
        pending.extend(_requirements(distribution))
    return [seen[name] for name in sorted(seen)]


def _distribution_files(distribution: importlib.metadata.Distribution) -> Iterator[Path | str]:
    """Every file under the top-level entries a distribution installed into site-packages.

    Whole directories, not only the files its RECORD names, so bytecode written after
    the install is part of it too; the ``cleanroom`` package itself is left to the
    image's own list.
    """
    base = Path(str(distribution.locate_file("")))
    if distribution.files is None:
        raise MeasurementError(
            f"distribution {distribution.metadata['Name']} in {base} lists no files "
            "(no RECORD): its files cannot be measured"
        )
    modules: set[str] = set()
    entries: set[str] = set()
    for recorded in distribution.files:
        parts = Path(str(recorded)).parts
        if not parts or parts[0] == ".." or parts[0] == "cleanroom":
            continue
        if parts[0] == "__pycache__":
            modules.add(parts[-1].split(".", 1)[0])
            continue
        entries.add(parts[0])
        if len(parts) == 1 and parts[0].endswith((".py", ".so")):
            modules.add(parts[0].split(".", 1)[0])
    for entry in sorted(entries):
        path = base / entry
        if path.is_dir() and not path.is_symlink():
            yield from _walk(path)
        elif path.is_file():
            yield path
    for module in sorted(modules):
        yield from (base / "__pycache__").glob(f"{module}.*.pyc")


def _site_directories() -> list[Path]:
    return [
        Path(entry)
        for entry in sys.path
        if entry.endswith(("site-packages", "dist-packages")) and Path(entry).is_dir()
    ]


def _stdlib_directories() -> list[Path]:
    paths = {Path(sysconfig.get_path(key)).resolve() for key in ("stdlib", "platstdlib")}
    return [path for path in sorted(paths) if not any(other in path.parents for other in paths)]


@dataclass
class Layout:
    """Where an image's files are: (group, path) pairs, the directories to watch for
    added or removed files, and the configuration the image reads at run time."""

    entries: list[tuple[str, str]] = field(default_factory=list)
    watched: set[Path] = field(default_factory=set)
    config: dict[str, Any] = field(default_factory=dict)

    def add(self, group: str, paths: Iterable[Path | str]) -> None:
        self.entries.extend((group, os.fspath(path)) for path in paths)


def _runtime_layout(layout: Layout, runtimes: Sequence[Runtime], directory: Path) -> None:
    layout.watched.add(directory)
    for runtime in runtimes:
        layout.add("runtime-base", [runtime.base_executable, *runtime.libraries])
        for stdlib in runtime.stdlib:
            layout.add("runtime-base", _walk(stdlib, skip=frozenset({"site-packages"})))
        layout.add(RUNTIME_GROUP_PREFIX + runtime.name, _walk(runtime.directory))
    layout.config["runtimes"] = {runtime.name: runtime.to_json() for runtime in runtimes}


def installed_layout(
    image: ImageDefinition, *, cleanroom_root: Path, runtimes_directory: Path | None = None
) -> Layout:
    """The layout of ``image`` as installed here (this interpreter, its packages,
    ``cleanroom_root``, and for the Worker the runtimes under ``runtimes_directory``)."""
    layout = Layout()
    executable = Path(sys.executable)
    interpreter = [executable.resolve()]
    if sys.prefix != sys.base_prefix:
        interpreter.append(Path(sys.prefix) / "pyvenv.cfg")
    layout.add("interpreter", interpreter)

    stdlib = _stdlib_directories()
    outside = frozenset({"site-packages"})
    _compile(path for directory in stdlib for path in _walk(directory, skip=outside))
    layout.add("stdlib", (path for directory in stdlib for path in _walk(directory, skip=outside)))
    layout.watched.update(stdlib)

    distributions, mapped = _probe(str(executable), (image.service, *image.also_imports))
    closure = _distribution_closure(name for name in distributions if name != "cleanroom")
    with_own = list(closure)
    # cleanroom's own dist-info and .pth (its requirements are not the image's: the
    # manager's and the CLI's are among them); absent when run from a source tree.
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        with_own.append(importlib.metadata.distribution("cleanroom"))
    _compile(path for dist in with_own for path in _distribution_files(dist))
    layout.add("packages", (path for dist in with_own for path in _distribution_files(dist)))
    for site in _site_directories():
        layout.add("packages", site.glob("*.pth"))
        layout.watched.add(site)

    own: set[Path] = set()
    for pattern in image.trusted:
        own.update(path for path in cleanroom_root.glob(pattern) if path.is_file())
    sources = sorted(path for path in own if "__pycache__" not in path.parts)
    if not sources:
        raise MeasurementError(f"image {image.name!r} has no trusted files under {cleanroom_root}")
    _compile(cleanroom_root.rglob("*.py"))  # all of it: the directories are shared
    bytecode = [
        compiled
        for source in sources
        if source.suffix == ".py"
        for compiled in (source.parent / "__pycache__").glob(f"{source.stem}.*.pyc")
    ]
    layout.add("cleanroom", [*sources, *bytecode])
    layout.watched.add(cleanroom_root)

    layout.add("libraries", [Path(path) for path in mapped])

    if image.runtimes:
        directory = runtimes_directory or runtimes_dir()
        try:
            runtimes = installed_runtimes(directory)
        except RuntimeUnavailable as error:
            raise MeasurementError(f"an installed runtime is unusable: {error}") from error
        _runtime_layout(layout, runtimes, directory)
    return layout


# -- hashing -------------------------------------------------------------------------------

# Digests this process computed itself, by path and stat: measuring the same files
# again (the other image shares most of them, a test measures a copy) reads only
# what changed.
_digests: dict[str, tuple[list[int], str]] = {}


# A file (or directory) modified within this long before it was hashed may change again
# within the same timestamp tick without its stat showing it (git's "racily clean"
# entries): its stat is recorded as [], which no stat matches, so the next check
# measures the image again.
RACY_NS = 2_000_000_000


def _sha256(path: str, key: list[int], recorded: tuple[list[int], str] | None) -> str:
    for known in (_digests.get(path), recorded):
        if key and known is not None and known[0] == key:
            return known[1]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    if key:
        _digests[path] = (key, digest.hexdigest())
    return digest.hexdigest()


@dataclass(frozen=True)
class Hashed:
    files: ImageFiles
    stats: Mapping[str, list[int]]  # path -> stat key when hashed
    directories: Mapping[str, list[int]]  # watched directory -> stat key


def hash_layout(
    image: str, layout: Layout, recorded: Mapping[str, tuple[list[int], str]] | None = None
) -> Hashed:
    """Hash every file of ``layout``; one whose stat is as ``recorded`` (or as when this
    process hashed it) is not read again."""
    recorded = recorded or {}
    racy_after = time.time_ns() - RACY_NS
    files: list[TrustedFile] = []
    stats: dict[str, list[int]] = {}
    taken: set[str] = set()
    directories = {os.fspath(directory) for directory in layout.watched}
    for group, path in sorted(layout.entries, key=lambda item: group_order(item[0])):
        name = os.path.abspath(path)
        if name in taken:
            continue
        if "\n" in name:
            raise MeasurementError(f"a path of the image holds a newline: {name!r}")
        taken.add(name)
        try:
            status = os.stat(name)
        except FileNotFoundError:
            # Gone since it was listed (e.g. another process's temporary bytecode): not
            # part of the image; its directory's stat, recorded below, shows the change.
            continue
        except OSError as error:
            raise MeasurementError(f"cannot read {name} ({group}): {error.strerror}") from error
        if not stat.S_ISREG(status.st_mode):
            raise MeasurementError(f"{name} ({group}) is not a regular file")
        key = [] if status.st_mtime_ns >= racy_after else _stat_key(status)
        try:
            digest = _sha256(name, key, recorded.get(name))
        except OSError as error:
            raise MeasurementError(f"cannot read {name} ({group}): {error.strerror}") from error
        files.append(TrustedFile(group, name, digest, status.st_size))
        stats[name] = key
        directories.add(os.path.dirname(name))
    files.sort(key=lambda entry: (group_order(entry.group), entry.path))
    watched = {}
    for directory in sorted(directories):
        key = _stat_or_absent(directory)
        watched[directory] = [] if key and key[1] >= racy_after else key
    return Hashed(ImageFiles(image, tuple(files), dict(layout.config)), stats, watched)


# -- the record kept beside the installation -----------------------------------------------


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    temporary.chmod(0o644)
    temporary.replace(path)


_SAFE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


class ImageStore:
    """Measured images of one installation, kept in ``directory``.

    ``IMAGE.files.json`` holds the whole list with each file's and each watched
    directory's stat; ``IMAGE.json`` the small summary (group digests and config)
    that a starting Worker reads. ``inputs`` (which interpreter, which cleanroom,
    which runtimes directory) must match too, or the record is not this image's.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def default(cls) -> ImageStore:
        """The installation's own: ``<sys.prefix>/share/cleanroom/images``."""
        return cls(Path(sys.prefix) / "share" / "cleanroom" / "images")

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """Held while an image is measured and recorded: processes starting at once (a
        client and an Attester) measure one after the other, and the second finds the
        first one's record instead of compiling and hashing beside it. Without a
        writable directory, no lock (and nothing will be recorded)."""
        try:
            self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            handle = (self.directory / ".lock").open("a")
        except OSError:
            yield
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _paths(self, image: str) -> tuple[Path, Path]:
        if not _SAFE_NAME.fullmatch(image):
            raise MeasurementError(f"not an image name: {image!r}")
        return self.directory / f"{image}.json", self.directory / f"{image}.files.json"

    def write(self, hashed: Hashed, inputs: Mapping[str, str]) -> bool:
        """Keep ``hashed``; False (and nothing written) where the directory is not writable."""
        summary_path, files_path = self._paths(hashed.files.image)
        files_document = {
            **hashed.files.to_json(),
            "stats": hashed.stats,
            "directories": hashed.directories,
        }
        files_bytes = json.dumps(files_document, separators=(",", ":")).encode()
        summary = {
            "type": RECORD_TYPE,
            "image": hashed.files.image,
            "inputs": dict(inputs),
            "groups": [group.to_json() for group in hashed.files.groups()],
            "config": dict(hashed.files.config),
            "files_sha256": hashlib.sha256(files_bytes).hexdigest(),
        }
        try:
            self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            _write_atomically(files_path, files_bytes)
            _write_atomically(summary_path, json.dumps(summary, indent=1).encode())
        except OSError:
            return False
        return True

    def load_summary(self, image: str, inputs: Mapping[str, str]) -> dict[str, Any] | None:
        """The summary as written, without checking the files (a Worker's start)."""
        summary_path, _ = self._paths(image)
        try:
            summary = json.loads(summary_path.read_bytes())
        except (OSError, ValueError):
            return None
        if (
            not isinstance(summary, dict)
            or summary.get("type") != RECORD_TYPE
            or summary.get("image") != image
            or summary.get("inputs") != dict(inputs)
        ):
            return None
        return summary

    def load(self, image: str, inputs: Mapping[str, str]) -> tuple[Hashed, bool] | None:
        """The recorded image and whether every file and directory is as recorded."""
        summary = self.load_summary(image, inputs)
        if summary is None:
            return None
        _, files_path = self._paths(image)
        try:
            raw = files_path.read_bytes()
            if hashlib.sha256(raw).hexdigest() != summary.get("files_sha256"):
                return None
            document = json.loads(raw)
            files = ImageFiles(
                image,
                tuple(TrustedFile(**entry) for entry in document["files"]),
                document["config"],
            )
            hashed = Hashed(files, document["stats"], document["directories"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if [group.to_json() for group in files.groups()] != summary.get("groups"):
            return None
        return hashed, _unchanged(hashed)


def _unchanged(hashed: Hashed) -> bool:
    """Is every recorded file and directory as it was (a directory that was absent,
    still absent)? A file written, replaced, added or removed changes a stat."""
    for recorded in (hashed.stats, hashed.directories):
        for path, key in recorded.items():
            if _stat_or_absent(path) != key:
                return False
    return True
