"""What a party reviews before approving a clean room, recomputed from the bytes.

The manager serves a room (its spec, Work-ID and function ID) and the function's
bundle; none of it is trusted. :func:`review` recomputes the function ID from the
bundle and the Work-ID from the spec, refuses any disagreement, and lists what
the user should read before pinning the Work-ID with ``approve``: the function's
files, who may upload which input, who may read which output and who may run.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cleanroom.errors import CheckFailed
from cleanroom.protocol.bundle import function_id, unpack
from cleanroom.protocol.spec import WorkSpec

if TYPE_CHECKING:
    from cleanroom.client.manager import Room

Role = Literal["input", "output", "runner"]
_CHUNK = 1 << 20


class ReviewError(CheckFailed):
    """What the manager served does not hang together: refuse to approve it."""


@dataclass(frozen=True)
class BundleFile:
    """One file of the function: its path in the bundle, size and SHA-256 (hex)."""

    path: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


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
class Review:
    """A room whose spec, Work-ID and function were recomputed and agree."""

    room: Room
    spec: WorkSpec
    work_id: str  # recomputed from the spec, never the manager's field
    function_id: str  # recomputed from the bundle
    files: tuple[BundleFile, ...]
    participants: tuple[Participant, ...]
    handler_module: str | None  # the bundle path of the handler's module, if present

    @property
    def you_participate(self) -> bool:
        """Whether the reviewing user has any right in this room."""
        return any(participant.is_you for participant in self.participants)

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
            "files": [file.to_json() for file in self.files],
            "participants": [participant.to_json() for participant in self.participants],
        }


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


def _handler_module(handler: str, files: set[str]) -> str | None:
    module = handler.rpartition(".")[0].replace(".", "/")
    for candidate in (f"{module}.py", f"{module}/__init__.py"):
        if candidate in files:
            return candidate
    return None


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
    room: Room, bundle: bytes, *, you: str | None = None, source: Path | None = None
) -> Review:
    """Check that ``room`` and ``bundle`` agree and list what to review.

    Refuses (each a :class:`CheckFailed` naming the check): a spec that is not a
    valid work spec (``work-spec``); a spec named otherwise than the room
    (``room-name``); a bundle that does not hash to the spec's function, or a room
    whose ``function`` field names another (``function-id``); a manager ``work_id``
    that is not the spec's recomputed Work-ID (``work-id``); a bundle that does
    not unpack safely (``bundle-*``). ``you`` is the reviewer's ``user_id``, to mark
    their own rights. ``source``, if given, is a directory (that must not exist)
    to unpack the function into, for the user to read.
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
        paths = unpack(bundle, source)
        files = bundle_files(source, paths)
    else:
        with tempfile.TemporaryDirectory(prefix="cleanroom-review-") as scratch:
            unpacked = Path(scratch) / "function"
            paths = unpack(bundle, unpacked)
            files = bundle_files(unpacked, paths)
    return Review(
        room=room,
        spec=spec,
        work_id=spec.work_id,
        function_id=recomputed,
        files=files,
        participants=participants(spec, you),
        handler_module=_handler_module(spec.handler, set(paths)),
    )


__all__ = [
    "BundleFile",
    "Participant",
    "Review",
    "ReviewError",
    "bundle_files",
    "participants",
    "review",
]
