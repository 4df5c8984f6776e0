"""Running the clean room's function: its own process, no network, bounded, confined.

The function is untrusted code that sees plaintext. It runs:

- in its own network namespace with no interfaces but a down loopback
  (``unshare --net``): it cannot send data anywhere;
- in its own mount namespace where ``/tmp``, ``/var/tmp``, ``/dev/shm`` and
  ``/run/lock`` are private, bounded tmpfs: what it writes there is gone with it;
- as its own unprivileged user (``setpriv --reuid/--regid --clear-groups
  --no-new-privs``): inputs are owned by root and readable only through its group
  (read-only), ``outputs/<id>/`` are its own, and other workspaces and the
  Worker's files are unreadable to it;
- with rlimits on address space (the spec's memory), CPU time, processes (a fork
  bomb stops at the limit), file size and open files, and a wall-clock timeout
  after which its whole process group is killed;
- with a minimal environment, ``python -I`` (no user site, no PYTHON* variables),
  its bundle and ``packages/`` first on ``sys.path``, and its output streams sent
  nowhere unless the spec names a log output.

If the platform cannot provide the namespace and the user switch (not root, no
``unshare``/``setpriv``), :func:`isolation` refuses unless the operator passed the
explicit ``allow_insecure`` flag, and the result says the run was not isolated.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cleanroom.enclave.errors import RunError
from cleanroom.runtimes import RuntimeUnavailable, resolve_runtime

BOOTSTRAP = """
import importlib, os, sys
function_dir, handler = sys.argv[1], sys.argv[2]
sys.path[:0] = [function_dir, os.path.join(function_dir, "packages")]
module_name, _, attribute = handler.rpartition(".")
getattr(importlib.import_module(module_name), attribute)()
"""

MAX_LOG_BYTES = 1 << 20
MAX_PROCESSES = 64
MAX_OPEN_FILES = 256


@dataclass(frozen=True)
class Isolation:
    """How the function is confined on this machine."""

    prefix: tuple[str, ...]  # the command that enters the namespace and drops privileges
    sandbox_uid: int
    sandbox_gid: int
    isolated: bool


# Run as root in the function's own mount namespace, before the user switch: every
# world-writable directory gets a private, bounded tmpfs, so nothing the function writes
# outside outputs/ survives the run or is seen by another clean room's function. The
# workspace (usually under /tmp itself) is carried over onto the new /tmp by a bind
# mount held at /mnt, which exists only in this namespace.
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")  # noqa: S108 - masked, not used
PRIVATE_TMPFS = "size=64m,mode=1777,nosuid,nodev"
MOUNT_SCRIPT = f"""set -eu
workspace=$(pwd -P)
mount --bind "$workspace" /mnt
for directory in {" ".join(PRIVATE_DIRS)}; do
    if [ -d "$directory" ]; then
        mount -t tmpfs -o {PRIVATE_TMPFS} cleanroom-private "$directory"
    fi
done
mkdir -p "$workspace"
mount --move /mnt "$workspace"
cd "$workspace"
exec "$@"
"""


def isolation(sandbox_uid: int, *, allow_insecure: bool = False) -> Isolation:
    """Probe for network and mount namespaces and a user switch; fail closed without them."""
    unshare, setpriv = shutil.which("unshare"), shutil.which("setpriv")
    if os.geteuid() == 0 and unshare and setpriv:
        prefix = (
            unshare, "--net", "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", MOUNT_SCRIPT, "cleanroom-sandbox",
            setpriv, f"--reuid={sandbox_uid}", f"--regid={sandbox_uid}",
            "--clear-groups", "--no-new-privs", "--pdeathsig", "KILL", "--",
        )  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="cleanroom-probe-") as probe_dir:
            probe = subprocess.run(  # noqa: S603 - fixed argv, no shell
                [*prefix, "true"], capture_output=True, timeout=30, check=False, cwd=probe_dir
            )
        if probe.returncode == 0:
            return Isolation(prefix, sandbox_uid, sandbox_uid, isolated=True)
        reason = probe.stderr.decode(errors="replace").strip()
    else:
        reason = "needs root with util-linux unshare and setpriv"
    if not allow_insecure:
        raise RunError(
            "run-isolation",
            "a network namespace and an unprivileged sandbox user",
            reason or "unavailable",
            "the function cannot be confined here; refusing to run it",
        )
    return Isolation((), os.getuid(), os.getgid(), isolated=False)


def runtime_interpreter(runtime: str) -> str:
    """The interpreter of an installed runtime (``python3.11``), runnable by the sandbox user.

    Not the Worker's own interpreter: that may live where the sandbox user cannot go.
    See :func:`cleanroom.runtimes.resolve_runtime` for the paths a sandbox must bind.
    """
    try:
        return str(resolve_runtime(runtime).interpreter)
    except RuntimeUnavailable as error:
        raise RunError(
            error.check, error.expected, error.actual, error.message, error.hint
        ) from None


@dataclass(frozen=True)
class RunResult:
    status: str  # succeeded | failed | timeout | killed
    exit_code: int | None
    seconds: float
    log: bytes  # empty unless the spec sends the log to an output
    isolated: bool


def _limits(memory_mib: int, cpu_seconds: int, file_bytes: int) -> Callable[[], None]:
    def apply() -> None:
        memory = memory_mib << 20
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_NPROC, (MAX_PROCESSES, MAX_PROCESSES))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def prepare_workspace(workspace: Path, output_ids: list[str], confinement: Isolation) -> None:
    """Make inputs read-only for the sandbox and its own ``outputs/<id>/`` writable."""
    gid = confinement.sandbox_gid
    for path in [workspace, *workspace.rglob("*")]:
        if path.is_symlink():
            raise RunError("workspace", "no symlinks", str(path), "unexpected symlink in workspace")
        if os.geteuid() == 0:
            os.chown(path, 0, gid)
        path.chmod(0o750 if path.is_dir() else 0o440)
    outputs = workspace / "outputs"
    outputs.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        os.chown(outputs, 0, gid)
    outputs.chmod(0o750)
    for output_id in output_ids:
        directory = outputs / output_id
        directory.mkdir()
        if os.geteuid() == 0:
            os.chown(directory, confinement.sandbox_uid, gid)
        directory.chmod(0o700)


def _await_group_exit(group: int, limit_s: float = 5.0) -> None:
    """Return once every process of the group is gone (SIGKILL is asynchronous)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def run_function(
    *,
    interpreter: str,
    function_dir: Path,
    handler: str,
    workspace: Path,
    memory_mib: int,
    timeout_s: int,
    confinement: Isolation,
    keep_log: bool = False,
    max_output_bytes: int = 1 << 30,
) -> RunResult:
    """Run ``handler`` (``module.func``, called with no arguments) in ``workspace``."""
    command = [
        *confinement.prefix, interpreter, "-I", "-c", BOOTSTRAP, str(function_dir), handler,
    ]  # fmt: skip
    environment = {
        "WORK_DIR": str(workspace),
        "HOME": str(workspace),
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
    }
    started = time.monotonic()
    process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        command,
        cwd=workspace,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if keep_log else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if keep_log else subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_limits(memory_mib, timeout_s, max_output_bytes),
    )
    try:
        output, _ = process.communicate(timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        output = b""
    finally:
        # The whole group: children the function forked must not outlive the run.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        _await_group_exit(process.pid)
    seconds = time.monotonic() - started
    code = process.returncode
    if timed_out:
        status = "timeout"
    elif code == 0:
        status = "succeeded"
    elif code is not None and code < 0:
        status = "killed"
    else:
        status = "failed"
    return RunResult(
        status=status,
        exit_code=code,
        seconds=seconds,
        log=(output or b"")[:MAX_LOG_BYTES] if keep_log else b"",
        isolated=confinement.isolated,
    )
