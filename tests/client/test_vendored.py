"""The review's summary of packages/: a real pip-installed distribution, then tampered copies."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import pytest

from cleanroom.client.review import contents
from cleanroom.client.vendored import vendored
from cleanroom.protocol.bundle import pack, unpack

DISTRIBUTION = "rfc8785"  # installed by pip into this environment: a real RECORD


def vendor(root: Path, name: str = DISTRIBUTION) -> list[str]:
    """Copy the installed distribution ``name`` into ``root/packages`` as pip left it."""
    distribution = importlib.metadata.distribution(name)
    copied = []
    for item in distribution.files or ():
        if "__pycache__" in item.parts:
            continue
        target = root / "packages" / item.as_posix()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.locate(), target)
        copied.append(f"packages/{item.as_posix()}")
    return sorted(copied)


@pytest.fixture
def function(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    root.mkdir()
    (root / "handler.py").write_text("import rfc8785\n\ndef run():\n    pass\n")
    vendor(root)
    return root


def unpacked(source: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    target = tmp_path / "unpacked"
    shutil.rmtree(target, ignore_errors=True)
    return target, unpack(pack(source), target)


def test_a_pip_installed_distribution_is_verified(function: Path, tmp_path: Path) -> None:
    root, paths = unpacked(function, tmp_path)
    found = contents(root, paths, "python3.11")
    (item,) = found.vendored.distributions
    assert (item.name, item.version) == ("rfc8785", importlib.metadata.version("rfc8785"))
    assert item.metadata == "packages/rfc8785-0.1.4.dist-info"
    assert list(item.files) == [p for p in paths if p.startswith("packages/")]
    assert item.verified
    assert found.vendored.unrecorded == ()
    assert found.warnings == ()


def test_a_vendored_file_changed_after_install_is_named(function: Path, tmp_path: Path) -> None:
    before = unpacked(function, tmp_path)
    digest = contents(*before, "python3.11").vendored.distributions[0].digest
    impl = function / "packages" / "rfc8785" / "_impl.py"
    impl.write_text(impl.read_text() + "\nimport os  # added after install\n")
    root, paths = unpacked(function, tmp_path)
    found = contents(root, paths, "python3.11")
    (item,) = found.vendored.distributions
    assert item.differ == ("packages/rfc8785/_impl.py",)
    assert not item.verified
    assert item.digest != digest
    (warning,) = found.warnings
    assert warning.check == "vendored-record"
    assert warning.message == (
        "packages/ rfc8785 0.1.4: its RECORD does not match 1 file: packages/rfc8785/_impl.py"
    )


def test_missing_and_unrecorded_files_are_named(function: Path, tmp_path: Path) -> None:
    (function / "packages" / "rfc8785" / "py.typed").unlink()
    (function / "packages" / "rfc8785" / "extra.py").write_text("X = 1\n")
    (function / "packages" / "loose.py").write_text("Y = 2\n")
    root, paths = unpacked(function, tmp_path)
    found = vendored(root, {f.path: f for f in contents(root, paths, "python3.11").files})
    (item,) = found.distributions
    assert item.missing == ("packages/rfc8785/py.typed",)
    assert found.unrecorded == ("packages/loose.py", "packages/rfc8785/extra.py")


@pytest.mark.parametrize(
    "record",
    [b"a,b,not-a-size\n", b"\xff\xfe\n", b"a,b,1,extra\n"],
    ids=["size", "utf-8", "columns"],
)
def test_an_unreadable_record_is_said(record: bytes, function: Path, tmp_path: Path) -> None:
    (function / "packages" / "rfc8785-0.1.4.dist-info" / "RECORD").write_bytes(record)
    root, paths = unpacked(function, tmp_path)
    found = contents(root, paths, "python3.11")
    (item,) = found.vendored.distributions
    assert not item.has_record
    assert item.files == ()
    assert "no readable RECORD" in found.warnings[0].message


def test_unreadable_metadata_is_said(function: Path, tmp_path: Path) -> None:
    (function / "packages" / "rfc8785-0.1.4.dist-info" / "METADATA").write_bytes(b"Name: \xff\n")
    root, paths = unpacked(function, tmp_path)
    (item,) = contents(root, paths, "python3.11").vendored.distributions
    assert (item.name, item.version) == ("rfc8785-0.1.4.dist-info", "unreadable METADATA")


def test_no_packages(tmp_path: Path) -> None:
    root = tmp_path / "f"
    root.mkdir()
    assert vendored(root, {}) == vendored(root, {})
    assert vendored(root, {}).distributions == ()
