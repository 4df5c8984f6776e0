"""Vendored packages against the published wheel: a wheel installed by pip, then tampered.

The wheel is built here (a ZIP in the layout of PEP 427, with a console script and
a ``.data/purelib`` module) and installed by the real pip with ``--target``, as a
function's author vendors a package. The deployer's trick that a package's own
RECORD cannot show: edit an installed file and rewrite its line of RECORD.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cleanroom.client.review import contents
from cleanroom.client.wheels import WheelComparison, compare_with_wheels
from cleanroom.protocol.bundle import pack, unpack

NAME, VERSION = "tiny_pkg", "1.0"
INFO = f"{NAME}-{VERSION}.dist-info"
WHEEL_FILES = {
    "tiny_pkg/__init__.py": b"from tiny_pkg.core import answer\n",
    "tiny_pkg/core.py": b"def answer():\n    return 42\n",
    f"{NAME}-{VERSION}.data/purelib/tiny_extra.py": b"EXTRA = 1\n",
    f"{INFO}/METADATA": f"Metadata-Version: 2.1\nName: tiny-pkg\nVersion: {VERSION}\n".encode(),
    f"{INFO}/WHEEL": (
        b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    ),
    f"{INFO}/entry_points.txt": b"[console_scripts]\ntiny = tiny_pkg.core:answer\n",
}


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(directory: Path, files: dict[str, bytes] = WHEEL_FILES) -> Path:
    """A wheel of ``files`` with its RECORD, as a build backend writes it."""
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{NAME}-{VERSION}-py3-none-any.whl"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(path, data)
            writer.writerow([path, _record_hash(data), len(data)])
        writer.writerow([f"{INFO}/RECORD", "", ""])
        archive.writestr(f"{INFO}/RECORD", record.getvalue())
    return wheel


def pip_install(wheel: Path, function: Path) -> None:
    """Vendor ``wheel`` into ``function/packages`` with the real pip, as an author does."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-compile", "--target", str(function / "packages"), str(wheel)],
        check=True,
        capture_output=True,
    )  # fmt: skip


def rewrite_record(function: Path, path: str) -> None:
    """The deployer's cover: the RECORD line of an edited file, made to match it again."""
    record = function / "packages" / INFO / "RECORD"
    rows = list(csv.reader(record.read_text().splitlines()))
    data = (function / "packages" / path).read_bytes()
    fixed = [[path, _record_hash(data), str(len(data))] if row[0] == path else row for row in rows]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(fixed)
    record.write_text(out.getvalue())


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    directory = tmp_path / "wheels"
    build_wheel(directory)
    return directory


@pytest.fixture
def function(tmp_path: Path, wheels: Path) -> Path:
    root = tmp_path / "source"
    root.mkdir()
    (root / "handler.py").write_text("import tiny_pkg\n\ndef run():\n    tiny_pkg.answer()\n")
    pip_install(next(wheels.iterdir()), root)
    return root


def compared(function: Path, tmp_path: Path, wheels: Path) -> tuple[bool, WheelComparison]:
    """Whether the distribution is as its own RECORD says, and how it compares with the wheel."""
    target = tmp_path / "unpacked"
    paths = unpack(pack(function), target)
    found = contents(target, paths, "python3.11")
    (item,) = found.vendored.distributions
    (comparison,) = compare_with_wheels(
        found.vendored, {file.path: file for file in found.files}, wheels
    )
    return item.verified, comparison


def test_a_pip_installed_wheel_is_as_published(
    function: Path, tmp_path: Path, wheels: Path
) -> None:
    verified, comparison = compared(function, tmp_path, wheels)
    assert verified
    assert comparison.as_published, comparison
    assert comparison.wheel == f"{NAME}-{VERSION}-py3-none-any.whl"
    assert (comparison.name, comparison.version) == ("tiny-pkg", VERSION)
    assert comparison.generated == (  # what pip writes, and no wheel holds
        "packages/bin/tiny",
        f"packages/{INFO}/INSTALLER",
        f"packages/{INFO}/RECORD",
        f"packages/{INFO}/REQUESTED",
        f"packages/{INFO}/direct_url.json",
    )
    assert comparison.describe() == f"tiny-pkg 1.0: as published in {comparison.wheel}"


def test_an_edit_covered_by_its_record_is_not_as_published(
    function: Path, tmp_path: Path, wheels: Path
) -> None:
    core = function / "packages" / "tiny_pkg" / "core.py"
    core.write_text("import os\n\ndef answer():\n    return os.environ\n")
    rewrite_record(function, "tiny_pkg/core.py")
    verified, comparison = compared(function, tmp_path, wheels)
    assert verified  # its own RECORD cannot tell: the deployer wrote it
    assert not comparison.as_published
    assert comparison.differ == ("packages/tiny_pkg/core.py",)
    assert comparison.describe() == (
        "tiny-pkg 1.0: NOT as published in tiny_pkg-1.0-py3-none-any.whl: "
        "1 differ from it: packages/tiny_pkg/core.py"
    )


def test_a_module_added_to_the_record_and_one_removed_are_named(
    function: Path, tmp_path: Path, wheels: Path
) -> None:
    (function / "packages" / "tiny_pkg" / "hook.py").write_text("import socket\n")
    record = function / "packages" / INFO / "RECORD"
    data = b"import socket\n"
    record.write_text(record.read_text() + f"tiny_pkg/hook.py,{_record_hash(data)},{len(data)}\n")
    (function / "packages" / "tiny_extra.py").unlink()
    verified, comparison = compared(function, tmp_path, wheels)
    assert not verified  # tiny_extra.py is missing from what RECORD lists
    assert comparison.added == ("packages/tiny_pkg/hook.py",)
    assert comparison.missing == ("packages/tiny_extra.py",)
    assert not comparison.as_published


def test_a_module_put_in_the_wheels_package_by_another_record_is_named(
    function: Path, tmp_path: Path, wheels: Path
) -> None:
    """A package imports an optional module of its own if it is there (numpy's
    _distributor_init_local): one claimed by another distribution's RECORD, or by none,
    is code of that package all the same."""
    data = b"import socket\n"
    (function / "packages" / "tiny_pkg" / "_local.py").write_bytes(data)
    (function / "packages" / "tiny_pkg" / "_loose.py").write_bytes(data)
    cover = function / "packages" / "cover-1.0.dist-info"
    cover.mkdir()
    (cover / "METADATA").write_text("Metadata-Version: 2.1\nName: cover\nVersion: 1.0\n")
    (cover / "RECORD").write_text(
        f"tiny_pkg/_local.py,{_record_hash(data)},{len(data)}\ncover-1.0.dist-info/RECORD,,\n"
    )
    target = tmp_path / "unpacked"
    found = contents(target, unpack(pack(function), target), "python3.11")
    compared = compare_with_wheels(
        found.vendored, {file.path: file for file in found.files}, wheels
    )
    by_name = {item.name: item for item in compared}
    assert by_name["tiny-pkg"].added == (
        "packages/tiny_pkg/_local.py", "packages/tiny_pkg/_loose.py"
    )  # fmt: skip
    assert not by_name["tiny-pkg"].as_published
    assert by_name["cover"].wheel is None


def test_another_version_or_no_wheel_is_said(function: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    build_wheel(other)
    (other / f"{NAME}-{VERSION}-py3-none-any.whl").rename(other / "tiny_pkg-1.1-py3-none-any.whl")
    _, comparison = compared(function, tmp_path, other)
    assert comparison.wheel is None and not comparison.as_published
    assert comparison.describe() == (
        "tiny-pkg 1.0: no wheel of this name and version to compare with"
    )


def test_of_several_wheels_the_one_published_is_named(
    function: Path, tmp_path: Path, wheels: Path
) -> None:
    files = dict(WHEEL_FILES, **{"tiny_pkg/core.py": b"def answer():\n    return 41\n"})
    platform = build_wheel(tmp_path / "platform", files)
    platform.rename(wheels / f"{NAME}-{VERSION}-py3-none-manylinux_2_17_x86_64.whl")
    _, comparison = compared(function, tmp_path, wheels)
    assert comparison.as_published
    assert comparison.wheel == f"{NAME}-{VERSION}-py3-none-any.whl"


def test_a_record_line_without_a_digest_vouches_for_nothing(function: Path, tmp_path: Path) -> None:
    """Only RECORD itself goes without a digest (PEP 376): a line without one for a module
    hid an edit from the RECORD check (the review said RECORD verified)."""
    core = function / "packages" / "tiny_pkg" / "core.py"
    core.write_text("import os\n")
    record = function / "packages" / INFO / "RECORD"
    rows = [
        "tiny_pkg/core.py,," if line.startswith("tiny_pkg/core.py,") else line
        for line in record.read_text().splitlines()
    ]
    record.write_text("\n".join(rows) + "\n")
    target = tmp_path / "unpacked"
    found = contents(target, unpack(pack(function), target), "python3.11")
    (item,) = found.vendored.distributions
    assert item.differ == ("packages/tiny_pkg/core.py",)
    assert not item.verified
