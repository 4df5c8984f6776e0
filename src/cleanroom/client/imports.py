"""Which file Python imports for a function's module: importlib's own finder, the Worker's order.

The Worker imports the spec's handler ``module.function`` with the function's
top directory and then its ``packages/`` first on ``sys.path`` (docs/protocol.md,
"The function's working directory"), and calls ``function()``. A review must name
the file that import loads, not the file a reader would guess, so it asks the
import system's own machinery: one :class:`importlib.machinery.FileFinder` per
directory, with the loaders of the spec's runtime in the interpreter's order
(compiled extension modules, then sources, then bytecode), searched the way
:class:`importlib.machinery.PathFinder` searches ``sys.path``: the first entry that
has a module wins, and namespace-package portions are used only when no entry
has one. Within a directory, ``FileFinder`` takes a package (``x/__init__.py``)
before a module (``x.py``), and an extension (``x.cpython-311-x86_64-linux-gnu.so``)
before a source.

Everything runs on the unpacked function, whose files are only listed and
stat-ed: nothing of it is imported or executed. What a module does when it runs
(a package's ``__init__.py`` may change its ``__path__``) is for the reviewer to
read, so the review names the files that run before the handler's module.

:func:`shadowing` lists every name under which the function holds more than one
importable thing, and every top-level module named like the standard library.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib.machinery import (
    ExtensionFileLoader,
    FileFinder,
    ModuleSpec,
    SourceFileLoader,
    SourcelessFileLoader,
)
from pathlib import Path
from typing import Literal

from cleanroom.errors import CheckFailed
from cleanroom.protocol.bundle import PACKAGES
from cleanroom.protocol.text import shown

WORKER_PLATFORM = "x86_64-linux-gnu"
"""The Worker's platform tag (SGX enclaves are x86-64 Linux processes)."""

SOURCE_SUFFIXES = (".py",)
BYTECODE_SUFFIXES = (".pyc",)

# Standard-library modules that newer Pythons removed: a reviewer's interpreter may
# be newer than the Worker's runtime, whose standard library still has them.
_REMOVED_FROM_STDLIB = frozenset(
    {
        "aifc", "asynchat", "asyncore", "audioop", "cgi", "cgitb", "chunk", "crypt",
        "distutils", "imghdr", "imp", "lib2to3", "mailcap", "msilib", "nis", "nntplib",
        "ossaudiodev", "pipes", "smtpd", "sndhdr", "spwd", "sunau", "telnetlib", "uu",
        "xdrlib",
    }
)  # fmt: skip

STDLIB_MODULES = frozenset(sys.stdlib_module_names) | _REMOVED_FROM_STDLIB
"""Top-level names of the standard library (this interpreter's, and recently removed ones)."""

Kind = Literal["source", "extension", "bytecode"]


class ModuleError(CheckFailed):
    """The review cannot say which file the Worker imports as the handler's module."""


def extension_suffixes(runtime: str) -> tuple[str, ...]:
    """The suffixes of compiled extension modules for a spec's runtime (``python3.11``).

    In the interpreter's order of preference, as ``importlib.machinery.EXTENSION_SUFFIXES``
    lists them on the Worker's platform.
    """
    major, _, minor = runtime.removeprefix("python").partition(".")
    return (f".cpython-{major}{minor}-{WORKER_PLATFORM}.so", ".abi3.so", ".so")


def _finder(directory: Path, runtime: str) -> FileFinder:
    return FileFinder(
        str(directory),
        (ExtensionFileLoader, list(extension_suffixes(runtime))),
        (SourceFileLoader, list(SOURCE_SUFFIXES)),
        (SourcelessFileLoader, list(BYTECODE_SUFFIXES)),
    )


def find_spec(name: str, path: list[Path], runtime: str) -> ModuleSpec | None:
    """The spec of module ``name`` (dotted) in the directories ``path``, as PathFinder finds it.

    ``path`` is ``sys.path`` for a top-level name, or the parent package's
    ``__path__``; entries that are not directories are skipped, as PathFinder
    skips entries no path hook accepts.
    """
    portions: list[str] = []
    for entry in path:
        if not entry.is_dir():
            continue
        spec = _finder(entry, runtime).find_spec(name)
        if spec is None:
            continue
        if spec.loader is not None:
            return spec
        portions.extend(spec.submodule_search_locations or ())
    if portions:
        namespace = ModuleSpec(name, None, is_package=True)
        namespace.submodule_search_locations = portions
        return namespace
    return None


def search_path(root: Path) -> list[Path]:
    """The function's entries of ``sys.path`` in the Worker: its top, then ``packages/``."""
    return [root, root / PACKAGES]


def _kind(spec: ModuleSpec) -> Kind:
    if isinstance(spec.loader, ExtensionFileLoader):
        return "extension"
    if isinstance(spec.loader, SourcelessFileLoader):
        return "bytecode"
    return "source"


def _relative(root: Path, location: str) -> str:
    return Path(os.path.relpath(location, root)).as_posix()


@dataclass(frozen=True)
class HandlerLocation:
    """The file the Worker imports for the handler ``module.attribute``, and what runs first."""

    module: str
    attribute: str
    path: str  # the file's path in the function
    kind: Kind
    runs_first: tuple[str, ...]  # the enclosing packages' __init__ files, outermost first

    def to_json(self) -> dict[str, object]:
        return {
            "module": self.module,
            "attribute": self.attribute,
            "path": self.path,
            "kind": self.kind,
            "runs_first": list(self.runs_first),
        }


def locate_handler(root: Path, handler: str, runtime: str) -> HandlerLocation:
    """Where the Worker finds ``handler``'s module in the function unpacked at ``root``.

    Raises :class:`ModuleError` (check ``handler-module``) when the module is not
    in the function, is a namespace package (no code), is bytecode, has a parent
    that is not a package, or is named like a standard-library module (then which
    one runs depends on what the runtime loaded before the handler).
    """
    module, _, attribute = handler.rpartition(".")
    parts = module.split(".")

    def refuse(actual: str, why: str) -> ModuleError:
        return ModuleError(
            "handler-module",
            f"a module of the function named {module}",
            actual,
            f"the handler {handler} {why}",
            hint="deploy with a handler that names a module of the function",
        )

    if parts[0] in STDLIB_MODULES:
        raise refuse(
            f"{parts[0]}: a standard-library name",
            "has the name of a standard-library module: the runtime decides which one runs",
        )
    path = search_path(root)
    runs_first: list[str] = []
    for depth in range(1, len(parts)):
        name = ".".join(parts[:depth])
        package = find_spec(name, path, runtime)
        if package is None:
            raise refuse(f"{name}: not found", "is not in the function")
        if package.submodule_search_locations is None:
            raise refuse(f"{name}: a module, not a package", "is inside a module")
        if package.loader is not None and package.origin is not None:
            runs_first.append(_relative(root, package.origin))
        path = [Path(location) for location in package.submodule_search_locations]
    spec = find_spec(module, path, runtime)
    if spec is None:
        raise refuse(f"{module}: not found", "is not in the function")
    if spec.loader is None or spec.origin is None:
        raise refuse(f"{module}: a namespace package", "names a directory without code")
    kind = _kind(spec)
    if kind == "bytecode":
        raise refuse(f"{_relative(root, spec.origin)}: bytecode", "is bytecode")
    return HandlerLocation(module, attribute, _relative(root, spec.origin), kind, tuple(runs_first))


# --- two things under one name ----------------------------------------------------------


@dataclass(frozen=True)
class Shadowing:
    """A module name under which the function holds more than one thing, or a stdlib name."""

    module: str
    used: str | None  # the path import loads; None when the standard library may win
    hidden: tuple[str, ...]  # paths import never loads under this name
    reason: str

    def to_json(self) -> dict[str, object]:
        return {
            "module": self.module,
            "used": self.used,
            "hidden": list(self.hidden),
            "reason": self.reason,
        }

    def describe(self) -> str:
        """One line for a person, every name escaped."""
        if self.used is None:
            return (
                f"{shown(self.module)}: {', '.join(shown(p) for p in self.hidden)} has the name "
                f"of a standard-library module ({self.reason})"
            )
        hidden = ", ".join(shown(path) for path in self.hidden)
        return (
            f"{shown(self.module)}: {shown(self.used)} is imported; never imported under "
            f"that name: {hidden} ({self.reason})"
        )


def _candidates(directory: Path, runtime: str) -> dict[str, list[str]]:
    """Importable names in ``directory`` -> the entries that could provide them.

    Entries are absolute paths; a directory's ends with ``/``. Only names that are
    identifiers, which an ``import`` statement can name.
    """
    suffixes = [*extension_suffixes(runtime), *SOURCE_SUFFIXES, *BYTECODE_SUFFIXES]
    found: dict[str, list[str]] = {}
    with os.scandir(directory) as listing:
        entries = sorted(listing, key=lambda entry: entry.name)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if entry.name.isidentifier():
                found.setdefault(entry.name, []).append(entry.path + os.sep)
            continue
        for suffix in suffixes:
            stem = entry.name.removesuffix(suffix)
            if stem != entry.name and stem.isidentifier():
                found.setdefault(stem, []).append(entry.path)
                break
    return found


def _shown_entry(root: Path, location: str) -> str:
    relative = _relative(root, location.rstrip(os.sep))
    return relative + "/" if location.endswith(os.sep) else relative


def _provides(candidate: str, spec: ModuleSpec) -> bool:
    """Whether ``candidate`` (a file, or a directory ending in ``/``) is what ``spec`` loads."""
    if spec.loader is not None and spec.origin is not None:
        if candidate.endswith(os.sep):  # a regular package: its __init__ is the origin
            return os.path.dirname(spec.origin) + os.sep == candidate
        return candidate == spec.origin
    return candidate.rstrip(os.sep) in (spec.submodule_search_locations or ())


def _scopes(root: Path, runtime: str) -> list[tuple[str, list[Path]]]:
    """(package name, its search path) for the top level and every importable directory."""
    top = search_path(root)
    scopes: list[tuple[str, list[Path]]] = [("", top)]
    for entry in top:
        if not entry.is_dir():
            continue
        pending = [entry]
        while pending:
            directory = pending.pop()
            for name, providers in _candidates(directory, runtime).items():
                for provider in providers:
                    child = directory / name
                    if provider.endswith(os.sep) and child != root / PACKAGES:
                        scopes.append((".".join(child.relative_to(entry).parts), [child]))
                        pending.append(child)
    return sorted(scopes, key=lambda scope: (scope[0], [str(p) for p in scope[1]]))


def _reason(root: Path, used: ModuleSpec, hidden: list[str]) -> str:
    origin = _relative(root, used.origin) if used.origin and used.loader else ""
    if any(path.startswith(PACKAGES + "/") for path in hidden) and not origin.startswith(
        PACKAGES + "/"
    ):
        return "the top of the function comes before packages/"
    if used.submodule_search_locations is not None and used.loader is not None:
        return "a package comes before a module of the same name"
    if any(path.endswith("/") for path in hidden):
        return "a module comes before a namespace package (a directory without __init__.py)"
    return "the interpreter tries compiled extensions first, then sources"


def shadowing(root: Path, runtime: str) -> tuple[Shadowing, ...]:
    """Every importable name of the function unpacked at ``root`` that hides something.

    - two things under one name (``handler/`` and ``handler.py``; ``x.py`` and a
      compiled ``x``; the same name at the top and in ``packages/``): import
      loads one, the other is never imported under that name;
    - a top-level module named like the standard library (``json.py``): whichever
      of the two the runtime loads first is used by the whole function, the
      standard library's own imports included.
    """
    found: list[Shadowing] = []
    for package, path in _scopes(root, runtime):
        named: dict[str, list[str]] = {}
        for entry in path:
            if entry.is_dir():
                for name, providers in _candidates(entry, runtime).items():
                    named.setdefault(name, []).extend(providers)
        for name, providers in sorted(named.items()):
            module = f"{package}.{name}" if package else name
            if not package and name in STDLIB_MODULES:
                paths = tuple(_shown_entry(root, provider) for provider in providers)
                found.append(Shadowing(module, None, paths, "the runtime decides which runs"))
                continue
            if len(providers) < 2:
                continue
            spec = find_spec(module, path, runtime)
            if spec is None:  # pragma: no cover - every provider came from a listing of path
                continue
            hidden = [_shown_entry(root, p) for p in providers if not _provides(p, spec)]
            if hidden:
                if spec.loader is not None and spec.origin is not None:
                    used = _relative(root, spec.origin)
                else:
                    used = ", ".join(
                        _shown_entry(root, location + os.sep)
                        for location in spec.submodule_search_locations or ()
                    )
                found.append(Shadowing(module, used, tuple(hidden), _reason(root, spec, hidden)))
    return tuple(found)


__all__ = [
    "STDLIB_MODULES",
    "HandlerLocation",
    "ModuleError",
    "Shadowing",
    "extension_suffixes",
    "find_spec",
    "locate_handler",
    "search_path",
    "shadowing",
]
