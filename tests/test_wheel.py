"""The wheel: it ships the examples, and ``cleanroom demo`` finds them in an installed
package, outside any checkout.

The wheel is built from a copy of the source (so the build leaves nothing in the
checkout), installed with ``--no-deps`` into a virtual environment of its own whose
dependencies come from the test environment's site-packages (a ``.pth`` line: no
network, and not the test environment's editable cleanroom, whose own ``.pth`` files
such a line does not read), and asked from a directory outside the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from cleanroom.cli.demo import examples
from cleanroom.protocol.bundle import function_id, pack

ROOT = Path(__file__).resolve().parents[1]
OVERLAP = "cleanroom/examples/functions/overlap/handler.py"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    # With the bytecode a checkout has (the examples' too, once run in place): the
    # wheel must leave it out.
    shutil.copytree(
        ROOT / "src" / "cleanroom",
        source / "src" / "cleanroom",
        ignore=shutil.ignore_patterns("*.so"),
    )
    examples_cache = source / "src" / "cleanroom" / "examples" / "functions" / "__pycache__"
    examples_cache.mkdir(exist_ok=True)
    (examples_cache / "handler.cpython-311.pyc").write_bytes(b"bytecode")
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), "."],
        cwd=source,
        check=True,
        timeout=600,
    )
    (built,) = dist.glob("cleanroom-*.whl")
    return built


def test_the_wheel_ships_every_example(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("cleanroom/examples/")}
    in_tree = {
        "cleanroom/" + path.relative_to(ROOT / "src" / "cleanroom").as_posix()
        for path in (ROOT / "src" / "cleanroom" / "examples").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert OVERLAP in shipped
    assert "cleanroom/examples/sql/overlap/queries.sql" in shipped
    assert shipped == in_tree


def test_demo_finds_its_examples_in_an_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )  # fmt: skip
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    found = subprocess.run(
        [str(python), "-c", "from cleanroom.cli.demo import examples; print(examples())"],
        cwd=elsewhere,
        env=environment,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    overlap = Path(found) / "functions" / "overlap"
    assert overlap.is_relative_to(venv)  # the installed package's, not the checkout's
    assert (overlap / "handler.py").is_file()
    # The same function as the checkout's, byte for byte.
    checkout = examples() / "functions" / "overlap"
    assert function_id(pack(overlap)) == function_id(pack(checkout))
    usage = subprocess.run(
        [str(venv / "bin" / "cleanroom"), "demo", "--help"],
        cwd=elsewhere,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert usage.returncode == 0, usage.stderr
    assert "two organisations" in usage.stdout
