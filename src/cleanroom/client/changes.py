"""What changed between two versions of a clean room, for a reviewer.

A reviewer who approved a clean room before, or who knows a function, should not
have to read a redeployed one from scratch: :func:`compare` lists what changed in
the spec (handler, runtime, resources, logs), the parameters, the rights (who may
upload, read, run), the function's files, the vendored distributions, and, when
both functions' bytes are at hand, the lines of every changed text file outside
``packages/`` (vendored code is compared by distribution, version and digest).

Both sides are what the reviewer's own client computed: the earlier one from the
profile's record of what the user was shown (its spec hashes to its Work-ID) or
from a function whose bytes hash to its ID. Every line is escaped.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cleanroom.client.review import (
    BundleFile,
    Participant,
    Review,
    ReviewError,
    contents,
    parameter_value,
    participants,
    resources,
)
from cleanroom.client.vendored import Vendored
from cleanroom.errors import CheckFailed
from cleanroom.protocol.bundle import PACKAGES
from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.spec import WorkSpec
from cleanroom.protocol.text import quoted, shown

MAX_DIFF_LINES = 2000
"""Lines of code diff shown at most; beyond, the reviewer diffs the sources themselves."""

MAX_DIFF_FILE_BYTES = 1 << 20
"""Files larger than this are compared by digest only."""

_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # where Python's tokenizer ends a line


@dataclass(frozen=True)
class Side:
    """One version: a spec (none for a bare function), its function, and its files."""

    label: str
    spec: WorkSpec | None
    function_id: str
    files: Mapping[str, BundleFile] | None  # None: not known (no record, no bytes)
    vendored: Vendored | None
    directory: Path | None = None  # the unpacked function, when its bytes are at hand
    missing: str | None = None  # why its bytes are not at hand, for the notes

    @classmethod
    def of_review(cls, label: str, review: Review, directory: Path | None = None) -> Side:
        return cls(
            label,
            review.spec,
            review.function_id,
            {file.path: file for file in review.files},
            review.contents.vendored,
            directory,
        )

    @classmethod
    def of_record(
        cls, label: str, work_id: str, record: Mapping[str, Any], directory: Path | None = None
    ) -> Side:
        """A Work-ID the user reviewed before, from the profile's record of what they saw.

        The files and packages come from ``directory``, the function unpacked
        (its bytes hashed to the ID), when it is given; else from the record (a
        record made at deploy holds only the spec: then they are not known).
        Raises :class:`ReviewError` (``review-record``) unless the record's spec
        hashes to ``work_id`` and what it holds is readable.
        """
        files: dict[str, BundleFile] | None = None
        vendored: Vendored | None = None
        try:
            spec = WorkSpec.parse(record["spec"])
            function = str(record["function_id"])
            if directory is not None:
                found = contents(directory, _paths(directory), spec.runtime)
                files = {file.path: file for file in found.files}
                vendored = found.vendored
            elif "files" in record:
                files = {
                    str(item["path"]): BundleFile(
                        str(item["path"]), int(item["size"]), str(item["sha256"])
                    )
                    for item in record["files"]
                }
                vendored = Vendored.from_json(record["packages"])
        except (CheckFailed, KeyError, TypeError, ValueError) as error:
            raise ReviewError(
                "review-record", "a record of a review", work_id, f"unreadable: {error}"
            ) from error
        if spec.work_id != work_id or spec.function != function:
            raise ReviewError(
                "review-record",
                work_id,
                spec.work_id,
                "the profile's record of this Work-ID does not hash to it",
            )
        return cls(label, spec, function, files, vendored, directory)


def _paths(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


@dataclass
class Changes:
    """Every difference from ``before`` to ``after``; each list holds escaped lines."""

    before: str
    after: str
    spec: list[str] = field(default_factory=list)
    parameters: list[str] = field(default_factory=list)
    rights: list[str] = field(default_factory=list)
    # The same rights for a machine: each a dict of change, role, id, user_id, name, you.
    right_changes: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    code: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # What changed but could not be shown: each a dict of path (None: every file) and why.
    not_compared: list[dict[str, str | None]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether every change was compared: no file whose change is not shown."""
        return not self.not_compared

    @property
    def sections(self) -> list[tuple[str, list[str]]]:
        return [
            ("spec", self.spec),
            ("parameters", self.parameters),
            ("rights", self.rights),
            ("files", self.files),
            ("packages", self.packages),
            ("code", self.code),
        ]

    @property
    def changed(self) -> bool:
        return any(lines for _, lines in self.sections)

    def lines(self) -> list[str]:
        """The changes as indented lines for a person."""
        out = [f"changes from {self.before} to {self.after}:"]
        if not self.changed and self.complete:
            out.append("  none")
        for title, lines in self.sections:
            if lines:
                out.append(f"  {title}:")
                out += [f"    {line}" for line in lines]
        if self.not_compared:
            out.append("  NOT compared (what changed there is not shown above):")
            out += [
                f"    {shown(item['path']) if item['path'] is not None else 'every file'}: "
                f"{item['why']}"
                for item in self.not_compared
            ]
        out += [f"  note: {note}" for note in self.notes]
        return out

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"before": self.before, "after": self.after}
        document.update(dict(self.sections))
        document["right_changes"] = self.right_changes
        document["notes"] = self.notes
        document["not_compared"] = self.not_compared
        document["complete"] = self.complete
        return document


def _compare_specs(before: WorkSpec, after: WorkSpec, changes: Changes, names: Names) -> None:
    fields = [
        ("name", before.name, after.name),
        ("handler", before.handler, after.handler),
        ("runtime", before.runtime, after.runtime),
        *(
            (label, old, new)
            for (label, old), (_, new) in zip(
                resources(before.resources), resources(after.resources), strict=True
            )
        ),
        ("logs", before.logs or "nowhere", after.logs or "nowhere"),
        ("function", before.function, after.function),
    ]
    for name, old, new in fields:
        if old != new:
            changes.spec.append(f"~ {name}: {shown(old)} -> {shown(new)}")
    if before.nonce != after.nonce and changes.spec:
        changes.notes.append("the nonce differs too, as in every deployment")
    for key in sorted(set(before.parameters) | set(after.parameters)):
        if key not in after.parameters:
            old = parameter_value(before.parameters[key])
            changes.parameters.append(f"- {quoted(key)} = {old}")
        elif key not in before.parameters:
            new = parameter_value(after.parameters[key])
            changes.parameters.append(f"+ {quoted(key)} = {new}")
        else:
            old, new = (
                parameter_value(before.parameters[key]),
                parameter_value(after.parameters[key]),
            )
            if old != new:
                changes.parameters.append(f"~ {quoted(key)}: {old} -> {new}")
    _compare_sql(before, after, changes)
    _compare_rights(participants(before, names.you), participants(after, names.you), changes, names)


def _compare_rights(
    before: tuple[Participant, ...],
    after: tuple[Participant, ...],
    changes: Changes,
    names: Names,
) -> None:
    """The rights removed, then added: by the user ID, shown as ``names.who`` shows it."""
    for sign, change, gone in (("-", "removed", set(before) - set(after)),
                               ("+", "added", set(after) - set(before))):  # fmt: skip
        shown_rights = sorted(
            ((_right(p.role, p.object_id, names.who(p.user_id)), p) for p in gone),
            key=lambda pair: pair[0],
        )
        changes.rights += [f"{sign} {text}" for text, _ in shown_rights]
        changes.right_changes += [
            {"change": change, **p.to_json(), "name": names.name_of(p.user_id)}
            for _, p in shown_rights
        ]


def _compare_sql(before: WorkSpec, after: WorkSpec, changes: Changes) -> None:
    """A SQL room's schemas, rules, queries and ad-hoc runners: each changed entry, as
    its canonical JSON before and after (every owner's rule is part of what is approved)."""
    old = before.sql.model_dump(mode="json", exclude_none=True) if before.sql else {}
    new = after.sql.model_dump(mode="json", exclude_none=True) if after.sql else {}

    def text(value: object) -> str:
        # As the room reads it and the review shows it (an ε of 1e-7, not 1e-07).
        return shown(canonical(value).decode("utf-8"))

    for section in ("schemas", "rules", "queries"):
        was, now = old.get(section, {}), new.get(section, {})
        for key in sorted(set(was) | set(now)):
            if was.get(key) != now.get(key):
                before_text = "none" if key not in was else text(was[key])
                after_text = "none" if key not in now else text(now[key])
                changes.spec.append(f"~ sql.{section}.{shown(key)}: {before_text} -> {after_text}")
    if old.get("adhoc") != new.get("adhoc"):
        changes.spec.append(f"~ sql.adhoc: {text(old.get('adhoc'))} -> {text(new.get('adhoc'))}")


def _right(role: str, object_id: str | None, user_id: str) -> str:
    what = {"input": f"uploads {object_id}", "output": f"reads {object_id}"}.get(
        role, "starts the run"
    )
    return f"{user_id} {what}"


_LISTED = 50


def _listed(lines: list[str]) -> list[str]:
    if len(lines) <= _LISTED:
        return lines
    return [*lines[:_LISTED], f"... and {len(lines) - _LISTED} more"]


def _compare_files(
    old: Mapping[str, BundleFile], new: Mapping[str, BundleFile], changes: Changes
) -> list[str]:
    """File-level changes into ``changes``; the paths changed in content, for the code diff."""
    added = [f"+ {shown(p)} ({new[p].size} bytes)" for p in sorted(set(new) - set(old))]
    removed = [f"- {shown(p)} ({old[p].size} bytes)" for p in sorted(set(old) - set(new))]
    modified = sorted(p for p in set(old) & set(new) if old[p].sha256 != new[p].sha256)
    changed = [f"~ {shown(p)} ({old[p].size} -> {new[p].size} bytes)" for p in modified]
    changes.files += _listed(removed) + _listed(added) + _listed(changed)
    return sorted(set(modified) | (set(new) ^ set(old)))


def _compare_packages(before: Vendored, after: Vendored, changes: Changes) -> None:
    old = {item.name: item for item in before.distributions}
    new = {item.name: item for item in after.distributions}
    for name in sorted(set(old) | set(new)):
        if name not in new:
            changes.packages.append(f"- {shown(name)} {shown(old[name].version)}")
        elif name not in old:
            changes.packages.append(f"+ {shown(name)} {shown(new[name].version)}")
        elif old[name].version != new[name].version:
            changes.packages.append(
                f"~ {shown(name)} {shown(old[name].version)} -> {shown(new[name].version)}"
            )
        elif old[name].digest != new[name].digest:
            changes.packages.append(
                f"~ {shown(name)} {shown(new[name].version)}: same version, other files"
            )
        if name in new and name in old and old[name].verified and not new[name].verified:
            changes.packages.append(f"! {shown(name)}: its files no longer match its RECORD")
    old_loose, new_loose = set(before.unrecorded), set(after.unrecorded)
    changes.packages += [f"+ {shown(p)} (in no RECORD)" for p in sorted(new_loose - old_loose)]
    changes.packages += [f"- {shown(p)} (in no RECORD)" for p in sorted(old_loose - new_loose)]


def _text(
    directory: Path | None, path: str, files: Mapping[str, BundleFile] | None
) -> list[str] | None:
    """The lines of ``path`` (as Python splits them), or None if absent, large or binary."""
    if files is None:
        return None
    if path not in files:
        return []
    if directory is None or files[path].size > MAX_DIFF_FILE_BYTES:
        return None
    try:
        text = (directory / path).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    lines = _LINE_BREAK.split(text)
    return lines[:-1] if lines and not lines[-1] else lines  # a final break ends a line


def _diff_line(line: str) -> str:
    if line.startswith(("---", "+++", "@@")):
        return shown(line)
    return line[:1] + shown(line[1:], leading=False)


def _unavailable(side: Side, path: str) -> str | None:
    """Why ``path`` of ``side`` cannot be read line by line though it is in the side's
    files (its function's bytes not at hand), or None when it can be."""
    if side.directory is not None or side.files is None or path not in side.files:
        return None
    why = f" ({side.missing})" if side.missing else ""
    return f"{side.label}: the function's bytes are not at hand{why}"


def _compare_code(before: Side, after: Side, paths: list[str], changes: Changes) -> None:
    """The code diff of ``paths`` outside packages/; each path whose change cannot be
    shown (a side's bytes not at hand, the diff cut) into ``changes.not_compared``."""
    if before.directory is None or after.directory is None:
        why = f" ({before.missing})" if before.missing else ""
        changes.notes.append(
            f"the earlier function's bytes are not at hand{why}: files compared by digest only"
        )
    budget = MAX_DIFF_LINES
    code = [path for path in paths if not path.startswith(PACKAGES + "/")]  # by distribution
    for index, path in enumerate(code):
        unavailable = _unavailable(before, path) or _unavailable(after, path)
        if unavailable is not None:
            changes.not_compared.append({"path": path, "why": unavailable})
            continue
        old = _text(before.directory, path, before.files)
        new = _text(after.directory, path, after.files)
        if old is None or new is None:
            changes.code.append(f"{shown(path)}: binary or larger than 1 MiB, digest changed")
            if path in (after.files or {}):  # a removal is shown in full by the files
                # A pickled model, a 1.1 MiB handler.py: code all the same, and what
                # changed in it is not shown (found by h22).
                changes.not_compared.append(
                    {"path": path, "why": "binary or larger than 1 MiB: not shown line by line"}
                )
            continue
        diff = list(
            difflib.unified_diff(old, new, f"{path} (before)", f"{path} (now)", lineterm="")
        )
        if len(diff) > budget:
            changes.code += [_diff_line(line) for line in diff[:budget]]
            changes.notes.append(
                f"the code diff is cut after {MAX_DIFF_LINES} lines: unpack both functions "
                "(inspect --source) and compare them in full"
            )
            cut = f"the code diff is cut after {MAX_DIFF_LINES} lines"
            changes.not_compared += [
                {"path": rest, "why": cut if rest == path else f"{cut}, before this file"}
                for rest in code[index:]
            ]
            return
        budget -= len(diff)
        changes.code += [_diff_line(line) for line in diff]


@dataclass(frozen=True)
class Names:
    """How the rights' user IDs are shown: ``who`` for a person (the reviewer's name for
    it: :meth:`cleanroom.client.contacts.Contacts.who`), ``name_of`` for a machine (the
    name alone, None when unknown), ``you`` the reviewer's own ID."""

    who: Callable[[str], str] = str
    name_of: Callable[[str], str | None] = lambda _user_id: None
    you: str | None = None


def compare(before: Side, after: Side, names: Names | None = None) -> Changes:
    """Every change from ``before`` to ``after``: spec, rights, files, packages, code.
    The rights' users are shown by ``names`` (the bare IDs unless given)."""
    changes = Changes(before.label, after.label)
    if before.spec is not None and after.spec is not None:
        _compare_specs(before.spec, after.spec, changes, names or Names())
    if before.function_id != after.function_id and not any(
        line.startswith("~ function:") for line in changes.spec
    ):
        changes.spec.append(
            f"~ function: {shown(before.function_id)} -> {shown(after.function_id)}"
        )
    if before.files is None or after.files is None:
        changes.notes.append("the earlier function's files are not known: only the IDs compared")
        if before.function_id != after.function_id:  # the same ID: the same bytes
            side = before if before.files is None else after
            why = f" ({side.missing})" if side.missing else ""
            changes.not_compared.append(
                {
                    "path": None,
                    "why": f"{side.label}: its files are not known{why}, only the function "
                    "IDs compared",
                }
            )
        return changes
    paths = _compare_files(before.files, after.files, changes)
    if before.vendored is not None and after.vendored is not None:
        _compare_packages(before.vendored, after.vendored, changes)
    if paths:
        _compare_code(before, after, paths, changes)
    return changes


__all__ = ["MAX_DIFF_LINES", "Changes", "Names", "Side", "compare"]
