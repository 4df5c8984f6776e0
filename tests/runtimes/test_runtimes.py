"""Runtimes: the catalogue, installation, and resolution refusing what a sandbox cannot use.

The installed data runtime (``cleanroom runtime install``, which scripts/test.sh runs)
is needed by a few tests; elsewhere they skip, and under CI=true they fail instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cleanroom.enclave.errors import RunError
from cleanroom.enclave.worker_service import image_runtime
from cleanroom.protocol.errors import MessageFormatError
from cleanroom.protocol.spec import WorkSpec
from cleanroom.runtimes import (
    CATALOGUE,
    MARKER,
    RUNTIME_NAMES,
    RuntimeUnavailable,
    definition,
    installed_runtimes,
    resolve_runtime,
)
from cleanroom.runtimes.install import InstallError, install_runtime
from cleanroom.tee.measure import measure
from tests.protocol.fixtures import SPEC_DOCUMENT


def installed(name: str) -> None:
    try:
        resolve_runtime(name)
    except RuntimeUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must have the runtimes installed: {error}")
        pytest.skip(str(error))


@pytest.fixture
def runtimes_dir() -> Iterator[Path]:
    """A directory every user can read (pytest's tmp_path is closed to others)."""
    path = Path(tempfile.mkdtemp(prefix="cleanroom-runtimes-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def stdlib_runtime(runtimes_dir: Path) -> Path:
    install_runtime("python3.11", runtimes_dir)
    return runtimes_dir


def test_the_catalogue_names_a_stdlib_and_a_data_runtime() -> None:
    assert RUNTIME_NAMES == ("python3.11", "python3.11-data")
    assert CATALOGUE["python3.11"].requirements == ()
    data = {pin.split("==")[0] for pin in CATALOGUE["python3.11-data"].requirements}
    assert {"numpy", "pandas", "polars", "pyarrow", "duckdb", "scikit-learn"} <= data
    # Exact pins and a hash for every wheel: the install resolves nothing.
    assert all("==" in pin for pin in CATALOGUE["python3.11-data"].requirements)
    lock = CATALOGUE["python3.11-data"].lock.decode()
    assert lock.count("--hash=sha256:") >= len(CATALOGUE["python3.11-data"].requirements)


@pytest.mark.parametrize("name", ["python3.12", "python3.11-gpu", "ruby", ""])
def test_an_unknown_runtime_is_refused_naming_the_catalogue(name: str) -> None:
    with pytest.raises(RuntimeUnavailable) as refused:
        resolve_runtime(name)
    assert refused.value.check == "runtime"
    assert refused.value.expected == list(RUNTIME_NAMES)
    assert refused.value.actual == name
    with pytest.raises(RuntimeUnavailable):
        definition(name)


@pytest.mark.parametrize("name", ["python3.11", "python3.11-data", "python3.12"])
def test_the_spec_accepts_runtime_names(name: str) -> None:
    assert WorkSpec.parse({**SPEC_DOCUMENT, "runtime": name}).runtime == name


@pytest.mark.parametrize("name", ["ruby", "python3.11-", "python3.11-Data", "python3.11/../x"])
def test_the_spec_refuses_what_is_no_runtime_name(name: str) -> None:
    with pytest.raises(MessageFormatError, match="runtime"):
        WorkSpec.parse({**SPEC_DOCUMENT, "runtime": name})


def test_a_runtime_not_installed_is_refused_with_how_to_install(runtimes_dir: Path) -> None:
    with pytest.raises(RuntimeUnavailable) as refused:
        resolve_runtime("python3.11-data", runtimes_dir)
    assert refused.value.check == "runtime-installed"
    assert refused.value.actual == "not installed"
    assert refused.value.hint == "run: cleanroom runtime install python3.11-data"
    assert installed_runtimes(runtimes_dir) == ()


def test_the_stdlib_runtime_sees_the_standard_library_only(stdlib_runtime: Path) -> None:
    runtime = resolve_runtime("python3.11", stdlib_runtime)
    assert runtime.directory == CATALOGUE["python3.11"].directory(stdlib_runtime)
    assert runtime.interpreter == runtime.directory / "bin" / "python"
    assert runtime.roots[0] == runtime.directory
    assert runtime.base_executable in runtime.roots
    assert all(root.is_absolute() and root.exists() for root in runtime.roots)
    probe = subprocess.run(
        [str(runtime.interpreter), "-I", "-c", "import json, sys; print(json.dumps(sys.path))"],
        capture_output=True,
        text=True,
        check=True,
    )
    path = json.loads(probe.stdout)
    packages = [entry for entry in path if "-packages" in entry]
    # No system dist-packages, no project .venv: only its own, empty, site-packages.
    assert packages == [str(runtime.directory / "lib" / "python3.11" / "site-packages")]
    assert installed_runtimes(stdlib_runtime) == (runtime,)


def test_installing_again_is_a_no_op(stdlib_runtime: Path) -> None:
    marker = CATALOGUE["python3.11"].directory(stdlib_runtime) / MARKER
    before = marker.stat().st_mtime_ns
    install_runtime("python3.11", stdlib_runtime)
    assert marker.stat().st_mtime_ns == before


def test_a_runtime_from_another_lock_is_refused(stdlib_runtime: Path) -> None:
    marker = CATALOGUE["python3.11"].directory(stdlib_runtime) / MARKER
    document = json.loads(marker.read_text())
    document["lock_sha256"] = "00" * 32
    marker.write_text(json.dumps(document))
    with pytest.raises(RuntimeUnavailable) as refused:
        resolve_runtime("python3.11", stdlib_runtime)
    assert (refused.value.check, refused.value.actual) == (
        "runtime-installed",
        "another installation",
    )
    # An install repairs it.
    install_runtime("python3.11", stdlib_runtime)
    assert resolve_runtime("python3.11", stdlib_runtime).lock_sha256 != "00" * 32


def test_a_half_installed_runtime_is_not_used(stdlib_runtime: Path) -> None:
    (CATALOGUE["python3.11"].directory(stdlib_runtime) / MARKER).unlink()
    with pytest.raises(RuntimeUnavailable) as refused:
        resolve_runtime("python3.11", stdlib_runtime)
    assert refused.value.check == "runtime-installed"


def test_a_runtime_the_sandbox_user_cannot_read_is_refused(stdlib_runtime: Path) -> None:
    directory = CATALOGUE["python3.11"].directory(stdlib_runtime)
    directory.chmod(0o700)
    try:
        with pytest.raises(RuntimeUnavailable) as refused:
            resolve_runtime("python3.11", stdlib_runtime)
        assert refused.value.check == "runtime-access"
        assert str(directory) in str(refused.value.actual)
        # Installed but unusable is not silently left out of the image.
        with pytest.raises(RuntimeUnavailable):
            installed_runtimes(stdlib_runtime)
    finally:
        directory.chmod(0o755)


def test_a_runtime_whose_interpreter_was_swapped_is_refused(stdlib_runtime: Path) -> None:
    python = CATALOGUE["python3.11"].directory(stdlib_runtime) / "bin" / "python"
    python.unlink()
    python.symlink_to("/bin/sh")
    with pytest.raises(RuntimeUnavailable) as refused:
        resolve_runtime("python3.11", stdlib_runtime)
    assert refused.value.check == "runtime-access"


def test_installing_where_others_cannot_read_is_refused(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(InstallError, match="closed to other users"):
        install_runtime("python3.11", private / "runtimes")
    assert not (private / "runtimes").exists() or not any((private / "runtimes").iterdir())


def test_the_data_runtime_imports_its_libraries() -> None:
    installed("python3.11-data")
    runtime = resolve_runtime("python3.11-data")
    code = (
        "import duckdb, numpy, pandas, polars, pyarrow, sklearn;"
        "print(duckdb.sql('select 40 + 2').fetchall()[0][0],"
        " polars.DataFrame({'a': [1, 2]})['a'].sum())"
    )
    done = subprocess.run(
        [str(runtime.interpreter), "-I", "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["42", "3"]


def test_the_worker_takes_its_runtime_from_its_measured_image() -> None:
    image = measure("worker")
    assert image_runtime(image, "python3.11") == resolve_runtime("python3.11")
    with pytest.raises(RunError) as unknown:
        image_runtime(image, "python3.12")
    assert (unknown.value.check, unknown.value.actual) == ("runtime", "python3.12")


def test_the_worker_refuses_a_runtime_its_image_does_not_hold() -> None:
    image = measure("worker")
    config = {**image.manifest["config"], "runtimes": {}}
    without = dataclasses.replace(image, manifest={**image.manifest, "config": config})
    with pytest.raises(RunError) as refused:
        image_runtime(without, "python3.11")
    assert (refused.value.check, refused.value.actual) == ("runtime-installed", "python3.11")
    assert refused.value.hint is not None and "cleanroom runtime install" in refused.value.hint
