"""What a party reviews before approving a clean room, recomputed from the bytes.

The manager serves a room (its spec, Work-ID and function ID) and the function's
bundle; none of it is trusted. :func:`review` recomputes the function ID from the
bundle and the Work-ID from the spec, refuses any disagreement, and lists what
the user should read before pinning the Work-ID with ``approve``: the function's
files, the file the Worker will import as the handler's module (found as Python
finds it, :mod:`cleanroom.client.imports`), who may upload which input, who may
read which output and who may run, and warnings: names that hide other modules,
parameter keys that read alike.
"""

from __future__ import annotations

import ast
import hashlib
import re
import tempfile
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cleanroom.client.imports import (
    STDLIB_MODULES,
    HandlerLocation,
    Shadowing,
    find_spec,
    locate_handler,
    search_path,
    shadowing,
)
from cleanroom.client.vendored import BundleFile, Vendored, vendored
from cleanroom.errors import UNSAFE_CATEGORIES, CheckFailed
from cleanroom.protocol.bundle import PACKAGES, Source, function_id, unpack
from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.spec import Resources, WorkSpec
from cleanroom.protocol.sql import ENGINE_RUNTIME
from cleanroom.protocol.text import collisions, quoted, shown
from cleanroom.runtimes import CATALOGUE
from cleanroom.sql import engine_function_id

if TYPE_CHECKING:
    from cleanroom.client.manager import ManagerClient, Room
    from cleanroom.client.profile import Approval, Inspection, Profile

RECORD_TYPE = "cleanroom/review-record/v1"

Role = Literal["input", "output", "runner"]
_CHUNK = 1 << 20


class ReviewError(CheckFailed):
    """What the manager served does not hang together: refuse to approve it."""


@dataclass(frozen=True)
class Participant:
    """One right in the spec: upload an input, read an output, or start the run."""

    role: Role
    object_id: str | None  # the input or output id; None for a runner
    user_id: str
    is_you: bool

    def to_json(self) -> dict[str, object]:
        return {
            "role": self.role,
            "id": self.object_id,
            "user_id": self.user_id,
            "you": self.is_you,
        }


@dataclass(frozen=True)
class ReviewWarning:
    """Something a reviewer must look at: ``message`` is one line, every name escaped."""

    check: str  # "module-shadowing", "parameter-collision"
    subjects: tuple[str, ...]  # the names concerned, exactly
    message: str

    def to_json(self) -> dict[str, object]:
        return {"check": self.check, "subjects": list(self.subjects), "message": self.message}


_LISTED = 5  # names listed in one warning line before "and N more"


def _count(paths: tuple[str, ...]) -> str:
    return "1 file" if len(paths) == 1 else f"{len(paths)} files"


def _some(paths: tuple[str, ...]) -> str:
    listed = ", ".join(shown(path) for path in paths[:_LISTED])
    more = len(paths) - _LISTED
    return listed + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class Contents:
    """What a function holds, read from its unpacked files (nothing of it is run)."""

    files: tuple[BundleFile, ...]
    shadowing: tuple[Shadowing, ...]
    vendored: Vendored

    @property
    def warnings(self) -> tuple[ReviewWarning, ...]:
        """Names that hide other modules, then vendored files that are not as recorded."""
        found = [
            ReviewWarning(
                "module-shadowing",
                (item.module, *((item.used,) if item.used else ()), *item.hidden),
                item.describe(),
            )
            for item in self.shadowing
        ]
        for item in self.vendored.distributions:
            label = f"{PACKAGES}/ {shown(item.name)} {shown(item.version)}"
            if not item.has_record:
                found.append(
                    ReviewWarning(
                        "vendored-record",
                        (item.metadata,),
                        f"{label}: no readable RECORD, its files cannot be checked",
                    )
                )
            if item.differ:
                found.append(
                    ReviewWarning(
                        "vendored-record",
                        item.differ,
                        f"{label}: its RECORD does not match {_count(item.differ)}: "
                        f"{_some(item.differ)}",
                    )
                )
            if item.missing:
                found.append(
                    ReviewWarning(
                        "vendored-record",
                        item.missing,
                        f"{label}: its RECORD lists {_count(item.missing)} not in the "
                        f"function: {_some(item.missing)}",
                    )
                )
        unrecorded = self.vendored.unrecorded
        if unrecorded:
            found.append(
                ReviewWarning(
                    "vendored-record",
                    unrecorded,
                    f"{PACKAGES}/: {_count(unrecorded)} in no distribution's RECORD: "
                    f"{_some(unrecorded)}",
                )
            )
        return tuple(found)


def contents(directory: Path, paths: list[str], runtime: str) -> Contents:
    """The contents of the function unpacked in ``directory`` (``paths``: its files)."""
    files = bundle_files(directory, paths)
    return Contents(
        files,
        shadowing(directory, runtime),
        vendored(directory, {file.path: file for file in files}),
    )


def parameter_warnings(spec: WorkSpec) -> tuple[ReviewWarning, ...]:
    """Parameter keys that read alike (NFKC, case folding): a handler reads only one."""
    return tuple(
        ReviewWarning(
            "parameter-collision",
            group,
            "parameter keys read alike: " + ", ".join(quoted(key) for key in group),
        )
        for group in collisions(spec.parameters)
    )


@dataclass(frozen=True)
class Review:
    """A room whose spec, Work-ID and function were recomputed and agree."""

    room: Room
    spec: WorkSpec
    work_id: str  # recomputed from the spec, never the manager's field
    function_id: str  # recomputed from the bundle
    contents: Contents
    handler: HandlerLocation  # the file the Worker imports as the handler's module
    participants: tuple[Participant, ...]
    handler_warnings: tuple[ReviewWarning, ...] = ()  # see handler_warnings()

    @property
    def files(self) -> tuple[BundleFile, ...]:
        return self.contents.files

    @property
    def handler_module(self) -> str:
        """The path in the function of the handler's module."""
        return self.handler.path

    @property
    def warnings(self) -> tuple[ReviewWarning, ...]:
        """Parameter keys that read alike, a handler not seen defined, names that hide others."""
        return parameter_warnings(self.spec) + self.handler_warnings + self.contents.warnings

    @property
    def you_participate(self) -> bool:
        """Whether the reviewing user has any right in this room."""
        return any(participant.is_you for participant in self.participants)

    def approve_command(self, profile: str | None = None) -> str:
        """The command that approves exactly this Work-ID of this project's room and
        nothing else."""
        option = f"--profile {profile} " if profile else ""
        return (
            f"cleanroom {option}approve {self.room.name} --project {self.room.project} "
            f"--work-id {self.work_id}"
        )

    def record(self) -> dict[str, Any]:
        """What the user was shown, to keep: compared later with what a room became."""
        return {
            "type": RECORD_TYPE,
            "name": self.room.name,
            "work_id": self.work_id,
            "function_id": self.function_id,
            "spec": self.spec.document(),
            "handler": self.handler.to_json(),
            "files": [file.to_json() for file in self.files],
            "packages": self.contents.vendored.to_json(),
        }

    def to_json(self) -> dict[str, Any]:
        """The review as one JSON object (spec included, as it is hashed)."""
        return {
            "name": self.room.name,
            "project": self.room.project,
            "state": self.room.state,
            "reason": self.room.reason,
            "compute_url": self.room.compute_url,
            "deployer": self.room.deployer,
            "work_id": self.work_id,
            "function_id": self.function_id,
            "spec": self.spec.document(),
            "handler_module": self.handler_module,
            "handler": self.handler.to_json(),
            "warnings": [warning.to_json() for warning in self.warnings],
            "files": [file.to_json() for file in self.files],
            "packages": self.contents.vendored.to_json(),
            "participants": [participant.to_json() for participant in self.participants],
        }


def parameter_value(value: object) -> str:
    """A parameter's value as the function reads it: a string quoted and escaped, anything
    else as the canonical JSON the Worker writes to ``parameters.json``. JCS writes ``10.0``
    as ``10`` and ``-0.0`` as ``0``: one Work-ID for both documents, and the function
    reads the integer, whichever of the two the review was served."""
    return quoted(value) if isinstance(value, str) else canonical(value).decode("ascii")


# How each limit of a run is named and counted in the review. Every field of Resources
# is hashed into the Work-ID, so every one is shown: a field not named here is shown by
# its own name (resources() below never leaves one out).
_RESOURCE_TERMS = {
    "memory_mib": ("memory", "MiB"),
    "timeout_s": ("timeout", "s"),
    "cpu_s": ("cpu", "s"),
    "processes": ("processes", ""),
    "disk_mib": ("disk", "MiB"),
}


def resources(limits: Resources) -> tuple[tuple[str, str], ...]:
    """Every limit of a run, as (name, value with its unit), in the spec's order."""
    shown_limits = []
    for field_name in type(limits).model_fields:
        label, unit = _RESOURCE_TERMS.get(field_name, (field_name, ""))
        value = getattr(limits, field_name)
        shown_limits.append((label, f"{value} {unit}" if unit else str(value)))
    return tuple(shown_limits)


def participants(spec: WorkSpec, you: str | None = None) -> tuple[Participant, ...]:
    """Every right the spec grants, inputs then outputs then runners."""
    rights: list[Participant] = [
        Participant("input", name, owner, owner == you)
        for name, owner in sorted(spec.inputs.items())
    ]
    rights += [
        Participant("output", name, recipient, recipient == you)
        for name, recipient in sorted(spec.outputs.items())
    ]
    rights += [Participant("runner", None, runner, runner == you) for runner in spec.runners]
    return tuple(rights)


def bundle_files(directory: Path, paths: list[str]) -> tuple[BundleFile, ...]:
    """The files ``paths`` of a function unpacked in ``directory``: sizes and SHA-256."""
    listed = []
    for path in paths:
        digest = hashlib.sha256()
        size = 0
        with open(directory / path, "rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        listed.append(BundleFile(path, size, digest.hexdigest()))
    return tuple(listed)


def review(
    room: Room, bundle: Source, *, you: str | None = None, source: Path | None = None
) -> Review:
    """Check that ``room`` and ``bundle`` (the function's bytes, or a seekable file
    holding them) agree and list what to review.

    Refuses (each a :class:`CheckFailed` naming the check): a spec that is not a
    valid work spec (``work-spec``); a spec named otherwise than the room
    (``room-name``); a bundle that does not hash to the spec's function, or a room
    whose ``function`` field names another (``function-id``); a manager ``work_id``
    that is not the spec's recomputed Work-ID (``work-id``); a bundle that does
    not unpack safely (``bundle-*``); a handler whose module the review cannot
    find in the function as the Worker's import will (``handler-module``). ``you``
    is the reviewer's ``user_id``, to mark their own rights. ``source``, if given,
    is a directory (that must not exist) to unpack the function into, for the
    user to read.
    """
    spec = WorkSpec.parse(room.spec)
    if spec.name != room.name:
        raise ReviewError(
            "room-name", room.name, spec.name, "the room's spec is for a clean room of another name"
        )
    recomputed = function_id(bundle)
    if recomputed != spec.function:
        raise ReviewError(
            "function-id",
            spec.function,
            recomputed,
            "the function's bytes are not the function the spec names",
        )
    if spec.sql is not None and spec.function != engine_function_id():
        # A SQL room's function is this release's engine, never code to read.
        raise ReviewError(
            "sql-engine", engine_function_id(), spec.function,
            "a SQL room must run the engine of this client's release",
        )  # fmt: skip
    if room.function != spec.function:
        raise ReviewError(
            "function-id",
            spec.function,
            room.function,
            "the manager lists another function for this room than its spec names",
        )
    if room.work_id != spec.work_id:
        raise ReviewError(
            "work-id",
            spec.work_id,
            room.work_id,
            "the manager's Work-ID is not the hash of the room's spec",
        )
    if source is not None:
        return _review(room, spec, recomputed, bundle, source, you)
    with tempfile.TemporaryDirectory(prefix="cleanroom-review-") as scratch:
        return _review(room, spec, recomputed, bundle, Path(scratch) / "function", you)


# What Python reads as line ends and whitespace, and every terminal and editor shows so:
# a carriage return only before a line feed. Alone, Python reads it as a line's end and
# a terminal as a return to the line's start: "evil()\r# a long comment" is two lines of
# code that `cat` shows as the comment alone.
_UNUSUAL = re.compile(r"\r(?!\n)|[^\t\n\r\f\x20-\x7e]")
_SHOWN_AROUND = 80
_LINE_END = re.compile(r"\r\n|\r|\n")


def check_code_text(directory: Path, paths: Iterable[str]) -> None:
    """Every Python source of the function outside ``packages/`` shows as Python reads it
    (``code-text``): none holds a character a terminal acts on or an editor does not show
    or reorders (:data:`cleanroom.errors.UNSAFE_CATEGORIES`: controls other than tab,
    line ends (a carriage return only before a line feed) and form feed, bidirectional
    and zero-width format characters, line and paragraph separators, private-use and
    unassigned code points; a BOM at the start aside). Such a character in a comment or a
    string lets a deployer show a reviewer other code than runs: ``ESC[2K`` and a
    carriage return make ``cat handler.py`` print a comment over the line that copies an
    input into an output, and U+202E reorders a line in an editor (Trojan Source,
    CVE-2021-42574); Python reads either as written. A string that needs one can spell
    it as an escape (``"\\u202e"``). Vendored code is checked against its RECORD and
    wheels instead (``--wheels``)."""
    for path in sorted(paths):
        if not path.endswith(".py") or path.startswith(f"{PACKAGES}/"):
            continue
        # As bytes decoded (unpack refuses another encoding), not as a text file: a
        # carriage return stays one, to be shown in the line it hides.
        text = (directory / path).read_bytes().decode("utf-8")
        for match in _UNUSUAL.finditer(text):
            offset, character = match.start(), match.group()
            if character == "\ufeff" and offset == 0:
                continue
            if unicodedata.category(character) not in UNSAFE_CATEGORIES:
                continue
            start = max(text.rfind("\n", 0, offset) + 1, offset - _SHOWN_AROUND)
            end = text.find("\n", offset)
            end = min(len(text) if end < 0 else end, offset + _SHOWN_AROUND)
            line = len(_LINE_END.findall(text, 0, offset)) + 1  # as Python counts lines
            raise ReviewError(
                "code-text",
                "Python sources whose every character shows as Python reads it (no "
                "control but tab, line ends (LF, CR LF) and form feed; no bidirectional, "
                "invisible or line-separator character)",
                f"{shown(path)} line {line}: {shown(text[start:end])}",
                f"{shown(path)} line {line} holds "
                f"{shown(character)}, which a terminal or an editor shows otherwise than "
                "Python reads it: the code a reviewer reads would not be the code that runs",
                "a string that needs such a character spells it as an escape "
                '(e.g. "\\u202e"); the deployer must deploy a function without it',
            )


def _review(
    room: Room, spec: WorkSpec, recomputed: str, bundle: Source, directory: Path, you: str | None
) -> Review:
    paths = unpack(bundle, directory)
    check_code_text(directory, paths)
    runtime = ENGINE_RUNTIME if spec.sql is not None else spec.runtime
    handler = locate_handler(directory, spec.handler, runtime)
    return Review(
        room=room,
        spec=spec,
        work_id=spec.work_id,
        function_id=recomputed,
        contents=contents(directory, paths, runtime),
        handler=handler,
        participants=participants(spec, you),
        handler_warnings=handler_warnings(directory, handler, runtime),
    )


# Statements whose bodies run when the module is imported (a def under `if` or `try`
# still binds a top-level name).
_RUN_AT_IMPORT = (ast.If, ast.Try, ast.TryStar, ast.With, ast.For, ast.While)
# Calls through which a module may bind names no reading of it finds.
_DYNAMIC = frozenset({"globals", "vars", "setattr", "exec", "__import__"})


def _bound_names(statements: list[ast.stmt]) -> set[str]:
    """Names the statements bind at the module's top level (not in a def's body)."""
    names: set[str] = set()
    for statement in statements:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(statement.name)
            continue
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            names.update(alias.asname or alias.name.partition(".")[0] for alias in statement.names)
            continue
        if isinstance(statement, _RUN_AT_IMPORT):
            nested = [*statement.body, *getattr(statement, "orelse", [])]
            nested += getattr(statement, "finalbody", [])
            for handler in getattr(statement, "handlers", []):
                nested += handler.body
            names |= _bound_names(nested)
        for node in ast.walk(statement):  # assignments, for/with targets, :=
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return names


def _may_bind_unseen(tree: ast.Module) -> bool:
    """Whether the module may bind names :func:`_bound_names` cannot see."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names):
            return True
        if isinstance(node, ast.Name) and node.id in _DYNAMIC:
            return True
    return False


# The function's own modules the review follows from the handler's, at most.
_MODULES_FOLLOWED = 256


def _type_checking(test: ast.expr) -> bool:
    """Whether an ``if``'s test is ``TYPE_CHECKING`` (or ``typing.TYPE_CHECKING``): false
    when the module runs."""
    name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", None)
    return name == "TYPE_CHECKING"


def _unguarded(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The module's imports that are not under a ``try`` (which may be ready for one
    missing) nor under ``if TYPE_CHECKING:`` (never run), wherever they are: at the top,
    or in a function run later."""
    guarded = {
        id(node)
        for statement in ast.walk(tree)
        if isinstance(statement, ast.Try | ast.TryStar)
        or (isinstance(statement, ast.If) and _type_checking(statement.test))
        for part in statement.body
        for node in ast.walk(part)
    }
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in guarded
    ]


def _own_source(spec: ModuleSpec | None, root: Path) -> Path | None:
    """The source file of ``spec`` when it is one of the function's own modules (not in
    ``packages/``, whose vendored libraries import what they like where it is never
    reached), else None."""
    if spec is None or not spec.has_location or not spec.origin:
        return None
    origin = Path(spec.origin)
    if origin.suffix != ".py" or not origin.is_relative_to(root):
        return None
    if origin.is_relative_to(root / PACKAGES):
        return None
    return origin


def _submodules(spec: ModuleSpec | None, dotted: list[str], runtime: str) -> list[ModuleSpec]:
    """The specs of ``dotted``'s parts below the package ``spec``, as far as they are found."""
    found: list[ModuleSpec] = []
    for part in dotted:
        if spec is None or not spec.submodule_search_locations:
            break
        locations = [Path(location) for location in spec.submodule_search_locations]
        spec = find_spec(part, locations, runtime)
        if spec is not None:
            found.append(spec)
    return found


def _relative(node: ast.ImportFrom, path: Path, root: Path, runtime: str) -> list[ModuleSpec]:
    """The function's modules a relative import in the module at ``path`` names."""
    base = path.parent
    for _ in range(node.level - 1):
        base = base.parent
    if not base.is_relative_to(root):
        return []
    package = ModuleSpec("", None, is_package=True)
    package.submodule_search_locations = [str(base)]
    dotted = node.module.split(".") if node.module else []
    found = _submodules(package, dotted, runtime)
    if len(found) < len(dotted):
        return found
    last = found[-1] if found else package
    return found + [
        spec for alias in node.names for spec in _submodules(last, [alias.name], runtime)
    ]


def _absolute(
    node: ast.Import | ast.ImportFrom, root: Path, runtime: str
) -> tuple[list[str], list[ModuleSpec]]:
    """The top-level names an absolute import names that neither the standard library
    nor the function has, and the modules of the function it names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:  # ``from x.y import z``: z may be a submodule
        names = [f"{node.module}.{alias.name}" for alias in node.names]
    missing: list[str] = []
    found: list[ModuleSpec] = []
    for name in names:
        top, *below = name.split(".")
        if top in STDLIB_MODULES:
            continue
        spec = find_spec(top, search_path(root), runtime)
        if spec is None:
            missing.append(top)
        else:
            found += [spec, *_submodules(spec, below, runtime)]
    return missing, found


def _imported_elsewhere(tree: ast.Module, root: Path, handler: str, runtime: str) -> dict[str, str]:
    """The top-level modules that the handler's module ``tree``, or one of the function's
    own modules it imports (followed through absolute and relative imports, up to
    :data:`_MODULES_FOLLOWED`), imports (not under a ``try``) and that neither the standard
    library nor the function (its top, its ``packages/``) has: in a runtime of the
    standard library only, the Worker's import fails. Each with the first module found
    importing it. Nothing in a runtime with packages (not known here without installing
    it)."""
    if runtime not in CATALOGUE or CATALOGUE[runtime].requirements:
        return {}
    missing: dict[str, str] = {}
    seen = {(root / handler).resolve()}
    queue: list[tuple[Path, ast.Module]] = [(root / handler, tree)]
    while queue:
        path, module = queue.pop(0)
        followed: list[ModuleSpec] = []
        for node in _unguarded(module):
            if isinstance(node, ast.ImportFrom) and node.level:
                followed += _relative(node, path, root, runtime)
                continue
            lacking, found = _absolute(node, root, runtime)
            followed += found
            for name in lacking:
                missing.setdefault(name, path.relative_to(root).as_posix())
        for spec in followed:
            source = _own_source(spec, root)
            if source is None or source.resolve() in seen or len(seen) >= _MODULES_FOLLOWED:
                continue
            seen.add(source.resolve())
            try:
                queue.append((source, ast.parse(source.read_bytes(), str(source))))
            except (SyntaxError, ValueError, RecursionError, MemoryError, OSError):
                continue  # the Worker's import fails there, with its own error
    return dict(sorted(missing.items()))


def _imports_warning(
    tree: ast.Module, root: Path, handler: HandlerLocation, runtime: str
) -> tuple[ReviewWarning, ...]:
    missing = _imported_elsewhere(tree, root, handler.path, runtime)
    if not missing:
        return ()
    others = [f"{name} ({d.summary})" for name, d in CATALOGUE.items() if d.requirements]
    where = ", ".join(
        shown(name) if module == handler.path else f"{shown(name)} (in {shown(module)})"
        for name, module in missing.items()
    )
    return (
        ReviewWarning(
            "handler-imports",
            (handler.path, *missing),
            f"the handler's module {shown(handler.path)}, or a module of the function it "
            f"imports, imports {where}, which runtime {runtime} ({CATALOGUE[runtime].summary}) "
            "does not have and the function does not bring (in packages/): the run will fail "
            f"importing it; deploy on a runtime that has it "
            f"({'; '.join(others) or 'none in the catalogue'}) or vendor it into packages/",
        ),
    )


def handler_warnings(
    root: Path, handler: HandlerLocation, runtime: str
) -> tuple[ReviewWarning, ...]:
    """A warning (``handler-function``) when the handler's module, read not run, binds no
    top-level name ``handler.attribute``: no ``def``, class, assignment or import of it;
    and one (``handler-imports``) when, in a runtime of the standard library only, it or
    one of the function's own modules it imports imports a module neither that nor the
    function has (:func:`_imported_elsewhere`).

    Warnings, not refusals: the Worker imports the module and then looks the name up,
    and a module can bind names no reading finds (``from x import *``, ``globals()``, a
    module ``__getattr__``; then nothing is said), or import one only where it is never
    reached. Only a source module is read.
    """
    if handler.kind != "source":
        return ()
    try:
        tree = ast.parse((root / handler.path).read_bytes(), handler.path)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        # A deployer's module nested past the parser's depth (a long `a+a+…` or `----1`)
        # ends it with RecursionError or MemoryError: a warning, not a crashed review.
        return (
            ReviewWarning(
                "handler-function",
                (handler.path,),
                f"the handler's module {shown(handler.path)} is not Python this client "
                f"parses ({shown(str(error))}): importing it in the Worker will likely fail",
            ),
        )
    imports = _imports_warning(tree, root, handler, runtime)
    names = _bound_names(tree.body)
    if handler.attribute in names or "__getattr__" in names or _may_bind_unseen(tree):
        return imports
    # A seed-product script's entry point is often main(), called under `__main__`,
    # which the Worker never runs: name what the module does define.
    defined = [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and not node.name.startswith("_")
    ]
    instead = (
        f"; it defines {', '.join(map(shown, defined))} (the handler is called with no "
        f"arguments: e.g. --handler {shown(handler.module)}.{shown(defined[0])})"
        if defined
        else ""
    )
    return (
        *imports,
        ReviewWarning(
            "handler-function",
            (handler.path, handler.attribute),
            f"the handler's module {shown(handler.path)} defines no {shown(handler.attribute)} "
            "at its top level (no def, class, assignment or import of it): the run will fail "
            f"unless the module binds it in a way not read here{instead}",
        ),
    )


def check_handler(
    bundle: Source, handler: str, runtime: str, *, function: str
) -> tuple[ReviewWarning, ...]:
    """The review's handler check, for a deployer before a spec exists on the manager.

    ``bundle`` is the function's bytes or a seekable binary file holding them (read in
    pieces: a bundle of any size is checked in constant memory). It must first hash to
    ``function``, the function ID the spec names (``function-id``, as :func:`review`),
    before anything in it is read. Then it is unpacked as :func:`review` does and what
    it would raise for a spec naming ``handler`` in ``runtime`` is raised:
    :class:`~cleanroom.client.imports.ModuleError` (``handler-module``) when the
    Worker's import would not find the handler's module, ``bundle-*`` when the bundle
    does not unpack. Returns :func:`handler_warnings`.
    """
    recomputed = function_id(bundle)
    if recomputed != function:
        raise ReviewError(
            "function-id",
            function,
            recomputed,
            "the function's bytes are not the function the spec names",
        )
    with tempfile.TemporaryDirectory(prefix="cleanroom-handler-") as scratch:
        directory = Path(scratch) / "function"
        check_code_text(directory, unpack(bundle, directory))
        return handler_warnings(directory, locate_handler(directory, handler, runtime), runtime)


def spec_record(spec: WorkSpec) -> dict[str, Any]:
    """A record of a spec alone (the deployer's, who built it): see :meth:`Review.record`."""
    return {
        "type": RECORD_TYPE,
        "name": spec.name,
        "work_id": spec.work_id,
        "function_id": spec.function,
        "spec": spec.document(),
    }


def fetch_review(
    manager: ManagerClient,
    name: str,
    *,
    project: str | None = None,
    you: str | None = None,
    source: Path | None = None,
) -> Review:
    """Fetch room ``name`` (of ``project``, if named) and the function its spec names
    from ``manager``, and review them.

    The bundle downloaded is the one the spec names (what the Work-ID covers), not
    the manager's separate field for it; :func:`review` then checks that they agree.
    """
    room = manager.room(name, project)
    spec = WorkSpec.parse(room.spec)
    return review(room, manager.download_function(spec.function), you=you, source=source)


def record_inspection(profile: Profile, reviewed: Review) -> Inspection | None:
    """Note in ``profile`` that its user was shown ``reviewed``; the inspection before, if any."""
    name = reviewed.room.name
    previous = profile.inspection(name)
    profile.remember_review(reviewed.work_id, reviewed.record())
    profile.record_inspection(name, reviewed.work_id, reviewed.function_id)
    return previous


def approve_review(profile: Profile, reviewed: Review, work_id: str) -> Approval:
    """Pin ``work_id`` for the reviewed room, only if it is the Work-ID just reviewed.

    ``reviewed`` must be a review made now, from what the manager serves now:
    :class:`ReviewError` (check ``work-id-reviewed``) when the room's Work-ID is
    another than ``work_id`` (it was redeployed since the user looked at it);
    nothing is pinned then.
    """
    from cleanroom.client.profile import ProfileError  # profile.py imports this module

    name = reviewed.room.name
    if reviewed.work_id != work_id:
        try:
            shown = profile.remembered_review(work_id) is not None
        except ProfileError:  # not even the form of a Work-ID
            shown = False
        why = (
            "no longer has the Work-ID you reviewed: it was redeployed"
            if shown
            # Never shown here: a Work-ID given by someone else, or mistyped.
            else "has another Work-ID than the one given, which was never shown to you here: "
            "mistyped, or the room was redeployed since it was given to you"
        )
        raise ReviewError(
            "work-id-reviewed",
            work_id,
            reviewed.work_id,
            f"clean room {name} {why}",
            hint=f"inspect it again: {profile.command(f'inspect {name}')}",
        )
    profile.remember_review(reviewed.work_id, reviewed.record())
    return profile.approve(
        name, reviewed.work_id, reviewed.function_id, project=reviewed.room.project
    )


__all__ = [
    "BundleFile",
    "Contents",
    "Participant",
    "Review",
    "ReviewError",
    "ReviewWarning",
    "approve_review",
    "bundle_files",
    "check_handler",
    "contents",
    "fetch_review",
    "handler_warnings",
    "parameter_value",
    "parameter_warnings",
    "participants",
    "record_inspection",
    "resources",
    "review",
    "spec_record",
]
