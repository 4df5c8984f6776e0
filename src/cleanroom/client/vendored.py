"""The vendored packages of a function (``packages/``): distributions, versions, files, digests.

A wheel installed into ``packages/`` (``pip install --target packages``) leaves a
``<name>-<version>.dist-info`` directory with ``METADATA`` (its name and version)
and ``RECORD`` (every file it installed, with SHA-256 and size). The review reads
them with the standard library's own ``importlib.metadata`` and checks every
recorded digest against the file in the function: a vendored package edited after
it was installed, a recorded file missing, and files under ``packages/`` that no
distribution records are all said as such, because vendored code is where a
change is easiest to hide in a long file listing. Bytecode a RECORD lists (pip
compiles it at install) is not expected: a function never holds any.

Each distribution also gets a digest of its files as they are in the function,
so a reviewer comparing two versions of a function sees which distributions
changed even when their version strings did not.
"""

from __future__ import annotations

import csv
import hashlib
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import Distribution, PackagePath
from pathlib import Path
from typing import Any

from cleanroom.protocol.bundle import PACKAGES
from cleanroom.protocol.encoding import b64u

_METADATA_SUFFIXES = (".dist-info", ".egg-info")
_STRONGER_HASHES = frozenset({"sha384", "sha512", "sha3_256", "sha3_384", "sha3_512"})
# The only files a wheel's RECORD lists without a hash: itself and its signatures (PEP 376).
_UNHASHED = frozenset({"RECORD", "RECORD.jws", "RECORD.p7s"})
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BundleFile:
    """One file of the function: its path in the bundle, size and SHA-256 (hex).

    Defined here, below :mod:`cleanroom.client.review` (which re-exports it), so the
    two modules import each other in one direction only.
    """

    path: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class VendoredDistribution:
    """One distribution in ``packages/`` and how its files compare with its RECORD."""

    name: str
    version: str
    metadata: str  # its metadata directory in the function, e.g. packages/x-1.0.dist-info
    files: tuple[str, ...]  # the function's files its RECORD lists, sorted
    has_record: bool
    differ: tuple[str, ...]  # files whose SHA-256 or size is not what RECORD says
    missing: tuple[str, ...]  # RECORD entries that are not files of the function
    digest: str  # SHA-256 (hex) over its files' paths and SHA-256s, as in the function

    @property
    def verified(self) -> bool:
        """Whether RECORD exists and every file it lists is there, as recorded."""
        return self.has_record and not self.differ and not self.missing

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "metadata": self.metadata,
            "files": list(self.files),
            "has_record": self.has_record,
            "differ": list(self.differ),
            "missing": list(self.missing),
            "digest": self.digest,
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> VendoredDistribution:
        return cls(
            name=str(document["name"]),
            version=str(document["version"]),
            metadata=str(document["metadata"]),
            files=tuple(str(path) for path in document["files"]),
            has_record=bool(document["has_record"]),
            differ=tuple(str(path) for path in document["differ"]),
            missing=tuple(str(path) for path in document["missing"]),
            digest=str(document["digest"]),
        )


@dataclass(frozen=True)
class Vendored:
    """Every distribution in ``packages/``, and the files there that none records."""

    distributions: tuple[VendoredDistribution, ...]
    unrecorded: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "distributions": [item.to_json() for item in self.distributions],
            "unrecorded": list(self.unrecorded),
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Vendored:
        return cls(
            tuple(VendoredDistribution.from_json(item) for item in document["distributions"]),
            tuple(str(path) for path in document["unrecorded"]),
        )


def _digest(paths: list[str], files: Mapping[str, BundleFile]) -> str:
    lines = "".join(f"{path}\t{files[path].sha256}\n" for path in sorted(paths))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def _hash_matches(
    root: Path, path: str, file: BundleFile, recorded: PackagePath, metadata: str
) -> bool:
    if recorded.size is not None and recorded.size != file.size:
        return False
    if recorded.hash is None:  # only RECORD itself (and its signatures) has no digest
        own = len(recorded.parts) == 2 and recorded.parts[0] == metadata
        return own and recorded.name in _UNHASHED
    mode, value = recorded.hash.mode, recorded.hash.value
    if mode == "sha256":
        return b64u(bytes.fromhex(file.sha256)) == value
    if mode not in _STRONGER_HASHES:  # a wheel's RECORD uses SHA-256 or stronger
        return False
    digest = hashlib.new(mode)
    with open(root / path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return b64u(digest.digest()) == value


def _under_target(recorded: str) -> str:
    """A RECORD path relative to ``packages/``. ``pip install --target`` installs into
    the ``lib/python`` of a temporary home and moves it and the home's other directories
    (``bin/`` of console scripts, data) to the target, so it records those as
    ``../../bin/…``: they are ``packages/bin/…``."""
    path = posixpath.normpath(recorded)
    rest = path.removeprefix("../../")
    return rest if rest != path and not rest.startswith("../") and rest != ".." else path


# What a malformed METADATA or RECORD (not UTF-8, not CSV of path,hash,size) raises.
_MALFORMED = (ValueError, TypeError, csv.Error)


def _recorded(distribution: Distribution) -> list[PackagePath] | None:
    try:
        return distribution.files
    except _MALFORMED:
        return None


def _name_and_version(distribution: Distribution, directory: str) -> tuple[str, str]:
    try:
        metadata = distribution.metadata
        return str(metadata["Name"] or directory), str(metadata["Version"] or "unknown")
    except _MALFORMED:
        return directory, "unreadable METADATA"


def vendored(root: Path, files: Mapping[str, BundleFile]) -> Vendored:
    """The vendored packages of the function unpacked at ``root`` (``files``: all its files)."""
    packages = root / PACKAGES
    if not packages.is_dir():
        return Vendored((), ())
    prefix = PACKAGES + "/"
    claimed: set[str] = set()
    found: list[VendoredDistribution] = []
    for entry in sorted(packages.iterdir()):
        if not (entry.is_dir() and entry.name.endswith(_METADATA_SUFFIXES)):
            continue
        distribution = Distribution.at(entry)
        name, version = _name_and_version(distribution, entry.name)
        recorded = _recorded(distribution)
        present: list[str] = []
        differ: list[str] = []
        missing: list[str] = []
        for item in recorded or ():
            if "__pycache__" in item.parts or item.suffix == ".pyc":
                continue  # bytecode pip compiled: never part of a function (bundle-bytecode)
            path = posixpath.normpath(prefix + _under_target(item.as_posix()))
            inside = path.startswith(prefix) and not item.is_absolute()
            file = files.get(path) if inside else None
            if file is None:
                missing.append(path)
                continue
            present.append(path)
            if not _hash_matches(root, path, file, item, entry.name):
                differ.append(path)
        claimed.update(present)
        found.append(
            VendoredDistribution(
                name=name,
                version=version,
                metadata=f"{prefix}{entry.name}",
                files=tuple(sorted(set(present))),
                has_record=recorded is not None,
                differ=tuple(sorted(set(differ))),
                missing=tuple(sorted(set(missing))),
                digest=_digest(sorted(set(present)), files),
            )
        )
    unrecorded = tuple(
        sorted(path for path in files if path.startswith(prefix) and path not in claimed)
    )
    return Vendored(tuple(found), unrecorded)


__all__ = ["Vendored", "VendoredDistribution", "vendored"]
