"""Installing a runtime: a virtual environment of the system interpreter plus its lock.

The environment is made by the base interpreter's own ``venv`` (without pip), then
this environment's pip installs the lock into it with ``--require-hashes
--no-deps --only-binary=:all:``: exactly the wheels the lock names, nothing
resolved, nothing built. Files are created with umask 022 and checked readable by
others before the marker that makes the runtime usable is written, last. Two
installs at once wait for each other (a lock file beside the runtimes).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cleanroom.errors import Error
from cleanroom.runtimes import (
    MARKER,
    MARKER_TYPE,
    Runtime,
    RuntimeUnavailable,
    base_interpreter,
    definition,
    inaccessible,
    resolve_runtime,
    runtimes_dir,
)

# What the installed environment reports about itself, run by its own interpreter after
# importing every top-level module of its distributions: the base interpreter, the
# standard library directories on its path, and every shared object then mapped into
# the process (libpython, libc, ...) outside its environment.
DESCRIBE = """
import importlib, importlib.metadata, json, os, sys
for module in sorted(importlib.metadata.packages_distributions()):
    try:
        importlib.import_module(module)
    except Exception:
        pass
prefix = os.path.realpath(sys.prefix)
bases = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}
paths = sorted({os.path.realpath(entry) for entry in sys.path if entry and os.path.isdir(entry)})
stdlib = [path for path in paths if any(path.startswith(base + os.sep) for base in bases)]
stdlib = [path for path in stdlib if not any(path.startswith(top + os.sep) for top in stdlib)]
mapped = set()
with open("/proc/self/maps") as maps:
    for line in maps:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/") and not fields[5].endswith(")"):
            mapped.add(os.path.realpath(fields[5].strip()))
inside = [prefix + os.sep, *(path + os.sep for path in stdlib)]
mapped = {path for path in mapped if ".so" in os.path.basename(path)}  # not locale data
base_executable = os.path.realpath(sys._base_executable)
mapped.discard(base_executable)
print(json.dumps({
    "base_executable": base_executable,
    "stdlib": stdlib,
    "libraries": sorted(path for path in mapped if not path.startswith(tuple(inside))),
    "python_version": sys.version.split()[0],
}))
"""


class InstallError(Error):
    """A runtime could not be installed (the message says which step failed and why)."""

    http_status = 500  # this server's own failure, not the request's


@contextlib.contextmanager
def _install_lock(directory: Path) -> Iterator[None]:
    with (directory / ".install.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(step: str, argv: list[str], environment: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv of our own tools, no shell
            argv, capture_output=True, text=True, check=False, timeout=1800, env=environment
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise InstallError(f"{step}: {error}") from error
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip().splitlines()
        raise InstallError(f"{step} failed ({done.returncode}): {' / '.join(output[-3:])}")
    return done.stdout


def _closed_to_others(root: Path) -> Path | None:
    """The first file or directory under ``root`` another user cannot read, or None."""
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories:
            path = Path(directory, name)
            mode = path.lstat().st_mode
            if stat.S_ISDIR(mode) and mode & 0o005 != 0o005:
                return path
        for name in files:
            path = Path(directory, name)
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode) and not mode & stat.S_IROTH:
                return path
    return None


def install_runtime(name: str, directory: Path | None = None, *, force: bool = False) -> Runtime:
    """Install the runtime ``name`` under ``directory``; a no-op when it already is.

    Raises RuntimeUnavailable for an unknown name or a missing base interpreter,
    InstallError when a step fails.
    """
    wanted = definition(name)
    base = base_interpreter(wanted.python)
    parent = (directory or runtimes_dir()).absolute()
    place = wanted.directory(parent)
    previous = os.umask(0o022)
    try:
        parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        blocked = inaccessible(parent)
        if blocked is not None:
            raise InstallError(
                f"{parent}: the sandbox user could not read a runtime here ({blocked} is "
                "closed to other users); choose another --dir"
            )
        with _install_lock(parent):
            if not force:
                with contextlib.suppress(RuntimeUnavailable):
                    return resolve_runtime(name, parent)
            if place.exists():
                shutil.rmtree(place)  # an unfinished or forced install: start again
            _run("creating the environment", [str(base), "-m", "venv", "--without-pip", str(place)])
            python = place / "bin" / "python"
            if wanted.requirements:
                with tempfile.NamedTemporaryFile("wb", suffix=".txt") as lock_file:
                    lock_file.write(wanted.lock)
                    lock_file.flush()
                    _run(
                        "installing the lock",
                        [
                            sys.executable, "-m", "pip", "--python", str(python),
                            "--disable-pip-version-check", "--no-input", "install", "--quiet",
                            "--no-deps", "--require-hashes", "--only-binary=:all:",
                            "--no-warn-script-location", "-r", lock_file.name,
                        ],
                    )  # fmt: skip
            description = _run(
                "describing the environment",
                [str(python), "-I", "-c", DESCRIBE],
                environment={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            )
            described = json.loads(description)
            closed = _closed_to_others(place)
            if closed is not None:
                raise InstallError(f"{closed} is not readable by other users")
            marker = {
                "type": MARKER_TYPE,
                "name": name,
                "lock_sha256": wanted.lock_sha256,
                "requirements": list(wanted.requirements),
                **{key: described[key] for key in ("base_executable", "stdlib", "libraries")},
                "python_version": described["python_version"],
            }
            temporary = place / f".{MARKER}.tmp"
            temporary.write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
            temporary.chmod(0o644)
            temporary.replace(place / MARKER)
            return resolve_runtime(name, parent)
    finally:
        os.umask(previous)
