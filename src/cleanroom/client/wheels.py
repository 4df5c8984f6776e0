"""The vendored packages of a function against the published wheels a reviewer holds.

A distribution's ``RECORD`` is written at install by whoever built the function, so
:mod:`cleanroom.client.vendored` can only say that ``packages/`` is as its own
``RECORD`` says: a deployer who edits a vendored file and rewrites the line of its
``RECORD`` passes that check. Against the wheel itself (``pip download NAME==VERSION
--no-deps --only-binary :all: -d DIR``, which checks the index's digest), every file
the wheel installs is compared byte for byte, by SHA-256, with the function's, and
every other file of the distribution, or in one of the wheel's directories whoever
claims it, is named: this says whether the vendored code is the published release.

What pip writes at install and no wheel holds is allowed and named: the metadata
directory's ``RECORD`` (rewritten), ``INSTALLER``, ``REQUESTED``, ``direct_url.json``,
and the console scripts it generates under ``bin/`` (not on the import path). A wheel's
``.data/purelib`` and ``.data/platlib`` are installed at the top; its other ``.data``
directories (scripts, headers, data) are not importable and are not compared.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cleanroom.client.vendored import BundleFile, Vendored, VendoredDistribution
from cleanroom.protocol.bundle import PACKAGES
from cleanroom.protocol.text import shown

# {name}-{version}(-{build})?-{python}-{abi}-{platform}.whl (PEP 427)
_WHEEL_NAME = re.compile(
    r"(?P<name>[^-]+)-(?P<version>[^-]+)(?:-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl", re.IGNORECASE
)
_INSTALL_METADATA = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})
_CHUNK = 1 << 20
_LISTED = 3


def canonical_name(name: str) -> str:
    """A distribution's name as an index compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class WheelComparison:
    """One vendored distribution against the published wheel of its name and version."""

    name: str
    version: str
    wheel: str | None  # the wheel's file name; None when the directory holds none
    differ: tuple[str, ...]  # the function's files whose bytes are not the wheel's
    missing: tuple[str, ...]  # files the wheel installs that the function does not hold
    added: tuple[str, ...]  # its files (by its RECORD, or in the wheel's directories) not in it
    generated: tuple[str, ...]  # what pip writes at install: install metadata, bin/ scripts

    @property
    def as_published(self) -> bool:
        return self.wheel is not None and not (self.differ or self.missing or self.added)

    def describe(self) -> str:
        """One line for the review: as published, or what differs and from which wheel."""
        label = f"{shown(self.name)} {shown(self.version)}"
        if self.wheel is None:
            return f"{label}: no wheel of this name and version to compare with"
        if self.as_published:
            return f"{label}: as published in {shown(self.wheel)}"
        parts = [
            f"{len(paths)} {what}: "
            + ", ".join(shown(p) for p in paths[:_LISTED])
            + (f" and {len(paths) - _LISTED} more" if len(paths) > _LISTED else "")
            for paths, what in (
                (self.differ, "differ from it"),
                (self.missing, "of its files missing"),
                (self.added, "not in it"),
            )
            if paths
        ]
        return f"{label}: NOT as published in {shown(self.wheel)}: " + "; ".join(parts)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "wheel": self.wheel,
            "as_published": self.as_published,
            "differ": list(self.differ),
            "missing": list(self.missing),
            "added": list(self.added),
            "generated": list(self.generated),
        }


def _installed_path(member: str, data: str) -> str | None:
    """Where pip installs a wheel's member, under ``packages/``; None if not compared."""
    if member.endswith("/") or "__pycache__" in member.split("/") or member.endswith(".pyc"):
        return None
    parts = member.split("/")
    if parts[0] == data:
        if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
            return None  # scripts, headers, data: not on the import path
        parts = parts[2:]
    path = posixpath.normpath(PACKAGES + "/" + "/".join(parts))
    return path if path.startswith(PACKAGES + "/") else None


def _sha256(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    digest = hashlib.sha256()
    with archive.open(info) as handle:  # reads at most info.file_size bytes
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _against(
    item: VendoredDistribution, wheel: Path, files: Mapping[str, BundleFile]
) -> WheelComparison:
    info_dir = posixpath.basename(item.metadata)
    data = info_dir.rsplit(".", 1)[0] + ".data"
    wheel_paths: set[str] = set()
    differ: list[str] = []
    missing: list[str] = []
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            path = _installed_path(info.filename, data)
            if path is None:
                continue
            parent, base = posixpath.split(path)
            if posixpath.basename(parent).endswith(".dist-info") and base == "RECORD":
                continue  # pip rewrites it at install
            wheel_paths.add(path)
            file = files.get(path)
            if file is None:
                missing.append(path)
            elif file.size != info.file_size or file.sha256 != _sha256(archive, info):
                differ.append(path)
    generated = [
        path
        for path in item.files
        if path not in wheel_paths
        and (
            path.startswith(f"{PACKAGES}/bin/")
            or (posixpath.dirname(path) == item.metadata and posixpath.basename(path) in
                _INSTALL_METADATA)
        )
    ]  # fmt: skip
    # Not only what its RECORD claims: a file put in one of the wheel's own package
    # directories (numpy imports numpy/_distributor_init_local.py if it is there) runs
    # as that package's code whichever RECORD, if any, lists it.
    packages = {path.split("/", 2)[1] for path in wheel_paths if path.count("/") >= 2}
    inside = [path for path in files if path.count("/") >= 2 and path.split("/", 2)[1] in
              packages and path.startswith(f"{PACKAGES}/")]  # fmt: skip
    added = sorted(
        {path for path in (*item.files, *inside) if path not in wheel_paths}.difference(generated)
    )
    return WheelComparison(
        item.name,
        item.version,
        wheel.name,
        tuple(sorted(differ)),
        tuple(sorted(missing)),
        tuple(sorted(added)),
        tuple(sorted(generated)),
    )


def _candidates(directory: Path) -> dict[tuple[str, str], list[Path]]:
    found: dict[tuple[str, str], list[Path]] = {}
    for path in sorted(directory.iterdir()):
        match = _WHEEL_NAME.fullmatch(path.name)
        if match is None or not path.is_file():
            continue
        key = (canonical_name(match["name"]), match["version"])
        found.setdefault(key, []).append(path)
    return found


def compare_with_wheels(
    vendored: Vendored, files: Mapping[str, BundleFile], directory: Path
) -> tuple[WheelComparison, ...]:
    """Each distribution of ``vendored`` against the wheels in ``directory``.

    ``files`` are the function's files, as the review hashed them. Where several
    wheels have the distribution's name and version (one per platform), the closest
    is reported: the one as published if any, else the one with the fewest differences.
    A wheel that is not a readable ZIP is an error (``zipfile.BadZipFile``, an
    ``OSError``): the reviewer gave it.
    """
    wheels = _candidates(directory)
    found = []
    for item in vendored.distributions:
        key = (canonical_name(item.name), item.version.replace("-", "_"))
        options = [_against(item, wheel, files) for wheel in wheels.get(key, [])]
        if not options:
            found.append(WheelComparison(item.name, item.version, None, (), (), (), ()))
            continue
        found.append(min(options, key=lambda c: len(c.differ) + len(c.missing) + len(c.added)))
    return tuple(found)


__all__ = ["WheelComparison", "canonical_name", "compare_with_wheels"]
