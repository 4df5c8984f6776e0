"""The runtimes a clean room's function runs in: their names, locks and installed places.

A spec's ``runtime`` names one of :data:`CATALOGUE`. Each is a virtual environment
of its own, made by ``cleanroom runtime install`` from a system interpreter that
anyone may run, plus the exact wheels of its lock (``NAME.txt`` beside this file).
It lives under :func:`runtimes_dir`, never in the project's ``.venv`` or under a
private directory, because the function runs as an unprivileged user that must
read every file of it through read-only binds. The directory's name carries the
lock's digest, so a changed lock is another directory, never a half-changed one.

:func:`resolve_runtime` gives what a sandbox needs to run one: its interpreter and
the paths to bind read-only (:class:`Runtime`). The Worker image measures every
file under those paths (:mod:`cleanroom.tee.image`).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from cleanroom.errors import CheckFailed

RUNTIMES_DIR_ENV = "CLEANROOM_RUNTIMES_DIR"
DEFAULT_RUNTIMES_DIR = Path("/opt/cleanroom/runtimes")
# Where a system interpreter that every user may run is found (Debian's, or the one
# of the official Python images).
SYSTEM_BIN_DIRS = (Path("/usr/bin"), Path("/usr/local/bin"))
MARKER = "cleanroom-runtime.json"
MARKER_TYPE = "cleanroom/runtime/v1"


class RuntimeUnavailable(CheckFailed):
    """A runtime is unknown, not installed, or not usable by the sandbox user."""


@dataclass(frozen=True)
class RuntimeDefinition:
    """One runtime of the catalogue: a Python version and the lock of its packages."""

    name: str
    python: str  # "3.11": the system interpreter python3.11 is its base
    summary: str

    @cached_property
    def lock(self) -> bytes:
        """The lock file (a pip requirements file: exact pins, wheel hashes)."""
        return (resources.files("cleanroom.runtimes") / f"{self.name}.txt").read_bytes()

    @property
    def lock_sha256(self) -> str:
        return hashlib.sha256(self.lock).hexdigest()

    @property
    def requirements(self) -> tuple[str, ...]:
        """``name==version`` of every distribution the lock installs."""
        pins = []
        for line in self.lock.decode().splitlines():
            text = line.split("#", 1)[0].strip()
            if text and not text.startswith("--"):
                pins.append(text.split()[0])
        return tuple(pins)

    def directory(self, base: Path | None = None) -> Path:
        """Where this runtime, from this lock, is installed."""
        return (base or runtimes_dir()) / f"{self.name}-{self.lock_sha256[:12]}"


CATALOGUE: Mapping[str, RuntimeDefinition] = {
    definition.name: definition
    for definition in (
        RuntimeDefinition("python3.11", "3.11", "Python 3.11, the standard library only"),
        RuntimeDefinition(
            "python3.11-data",
            "3.11",
            "Python 3.11 with numpy, pandas, polars, pyarrow, duckdb and scikit-learn",
        ),
    )
}
RUNTIME_NAMES = tuple(sorted(CATALOGUE))


def runtimes_dir() -> Path:
    """``$CLEANROOM_RUNTIMES_DIR`` if set, else ``/opt/cleanroom/runtimes``."""
    override = os.environ.get(RUNTIMES_DIR_ENV)
    return Path(override).expanduser() if override else DEFAULT_RUNTIMES_DIR


def definition(name: str) -> RuntimeDefinition:
    """The catalogue's runtime ``name``; RuntimeUnavailable (check ``runtime``) if none."""
    found = CATALOGUE.get(name)
    if found is None:
        raise RuntimeUnavailable(
            "runtime", list(RUNTIME_NAMES), name, "no such runtime", "name one of the catalogue"
        )
    return found


@dataclass(frozen=True)
class Runtime:
    """An installed runtime, as a sandbox runs it.

    ``interpreter`` is the path to execute (the environment's ``bin/python``, a
    symlink to ``base_executable``); ``roots`` are the paths (directories or
    files) to bind read-only, each at the same path, for it to work: the
    environment, the base interpreter, its standard library directories and the
    shared objects (``libraries``: libpython, libc, ...) the interpreter mapped once
    it had imported every package of the environment, as seen at installation.
    """

    name: str
    interpreter: Path
    roots: tuple[Path, ...]
    directory: Path
    base_executable: Path
    stdlib: tuple[Path, ...]
    libraries: tuple[Path, ...]
    lock_sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "interpreter": str(self.interpreter),
            "roots": [str(root) for root in self.roots],
            "directory": str(self.directory),
            "base_executable": str(self.base_executable),
            "stdlib": [str(path) for path in self.stdlib],
            "libraries": [str(path) for path in self.libraries],
            "lock_sha256": self.lock_sha256,
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Runtime:
        return cls(
            name=str(document["name"]),
            interpreter=Path(document["interpreter"]),
            roots=tuple(Path(root) for root in document["roots"]),
            directory=Path(document["directory"]),
            base_executable=Path(document["base_executable"]),
            stdlib=tuple(Path(path) for path in document["stdlib"]),
            libraries=tuple(Path(path) for path in document["libraries"]),
            lock_sha256=str(document["lock_sha256"]),
        )


def _others_may(path: Path, what: int) -> bool:
    try:
        return bool(path.stat().st_mode & what)
    except OSError:
        return False


def inaccessible(path: Path) -> Path | None:
    """The first of ``path`` and its ancestors another user cannot reach, or None.

    Every ancestor must be searchable by others, and the path itself readable (and,
    for a directory, searchable) by others: a file under ``/root`` (0700) is not.
    """
    resolved = path.resolve()
    for ancestor in reversed(resolved.parents):
        if not _others_may(ancestor, stat.S_IXOTH):
            return ancestor
    try:
        mode = resolved.stat().st_mode
    except OSError:
        return resolved
    needed = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
    return None if mode & needed == needed else resolved


def base_interpreter(python: str) -> Path:
    """The system ``python<version>`` that every user may run (not, e.g., one under /root)."""
    tried = []
    for directory in SYSTEM_BIN_DIRS:
        candidate = directory / f"python{python}"
        tried.append(str(candidate))
        if (
            candidate.is_file()
            and inaccessible(candidate) is None
            and _others_may(candidate, stat.S_IXOTH)
        ):
            return candidate
    raise RuntimeUnavailable(
        "runtime-base",
        f"python{python} in {' or '.join(str(d) for d in SYSTEM_BIN_DIRS)}, runnable by others",
        "not found",
        f"no system Python {python} that the sandbox user can run",
        "install Debian's python3 package (or use an official Python image)",
    )


def read_marker(directory: Path) -> dict[str, Any] | None:
    """The installed runtime's description, or None when absent or unreadable."""
    try:
        document = json.loads((directory / MARKER).read_bytes())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def resolve_runtime(name: str, directory: Path | None = None) -> Runtime:
    """The installed runtime ``name`` under ``directory`` (default :func:`runtimes_dir`).

    Refuses (RuntimeUnavailable, naming the check) a name outside the catalogue
    (``runtime``), a runtime not installed from this release's lock
    (``runtime-installed``), and one the sandbox user could not read
    (``runtime-access``).
    """
    wanted = definition(name)
    place = wanted.directory(directory)
    marker = read_marker(place)
    if (
        marker is None
        or marker.get("type") != MARKER_TYPE
        or marker.get("name") != name
        or marker.get("lock_sha256") != wanted.lock_sha256
    ):
        raise RuntimeUnavailable(
            "runtime-installed",
            f"{name} installed in {place} from the lock {wanted.lock_sha256[:12]}",
            "not installed" if marker is None else "another installation",
            f"runtime {name} is not installed for sandboxed use",
            f"run: cleanroom runtime install {name}",
        )
    try:
        stdlib = tuple(Path(path) for path in marker["stdlib"])
        libraries = tuple(Path(path) for path in marker["libraries"])
        base = Path(marker["base_executable"])
    except (KeyError, TypeError) as error:
        raise RuntimeUnavailable(
            "runtime-installed", "a complete runtime description", str(error),
            f"runtime {name} is not installed for sandboxed use",
            f"run: cleanroom runtime install --force {name}",
        ) from error  # fmt: skip
    roots = (place, base, *stdlib, *libraries)
    interpreter = place / "bin" / "python"
    if interpreter.resolve() != base.resolve() or not _others_may(base, stat.S_IXOTH):
        raise RuntimeUnavailable(
            "runtime-access",
            f"{interpreter} -> {base}, executable by others",
            str(interpreter.resolve()),
            f"runtime {name} has no interpreter the sandbox user can run",
            f"run: cleanroom runtime install --force {name}",
        )
    for root in roots:
        blocked = inaccessible(root)
        if blocked is not None:
            raise RuntimeUnavailable(
                "runtime-access",
                f"{root} readable by the sandbox user",
                f"{blocked} is closed to other users",
                f"runtime {name} cannot be used by an unprivileged sandbox user",
            )
    return Runtime(
        name=name,
        interpreter=interpreter,
        roots=roots,
        directory=place,
        base_executable=base,
        stdlib=stdlib,
        libraries=libraries,
        lock_sha256=wanted.lock_sha256,
    )


def installed_runtimes(directory: Path | None = None) -> tuple[Runtime, ...]:
    """Every runtime of the catalogue installed under ``directory``, by name.

    One that is not installed (from this release's lock) is left out; one that is
    installed but unusable raises, so a broken installation is not silently dropped.
    """
    found = []
    for name in RUNTIME_NAMES:
        try:
            found.append(resolve_runtime(name, directory))
        except RuntimeUnavailable as error:
            if error.check != "runtime-installed":
                raise
    return tuple(found)
