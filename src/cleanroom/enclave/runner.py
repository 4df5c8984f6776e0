"""Running the clean room's function: in bubblewrap, under a supervisor, bounded.

The function is untrusted code that sees plaintext. Each run is handed to a
supervisor process (:mod:`cleanroom.enclave.supervisor`) in a mount namespace of its
own, which runs the function in bubblewrap as the room's own unprivileged host uid,
with new user, PID, mount, IPC, UTS, network and cgroup namespaces (and no user
namespace of its own inside them), a syscall filter (:mod:`cleanroom.enclave.syscalls`),
limits on memory, tasks, CPU time, wall time and the total disk of ``outputs/`` plus
``/tmp``; and the seed product's contract (``/work/function``, ``/work/inputs/<id>/``,
``/work/outputs/<id>/``, ``/work/parameters.json``, cwd ``/work``). The supervisor
ends the run by ending its PID namespace, and only then streams the outputs back.
docs/threat-model.md says which tool enforces which point.

:func:`sandbox` checks, when the Worker starts, that this host can do all that (root,
to give each room a uid of its own; bubblewrap; util-linux; libseccomp), and fails
closed otherwise: there is no unconfined mode.
"""

from __future__ import annotations

import base64
import functools
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from packaging.version import InvalidVersion, Version

from cleanroom.enclave import syscalls
from cleanroom.enclave.errors import RunError, StoreError
from cleanroom.enclave.store import check_object_name
from cleanroom.enclave.supervisor import (
    RUN_NICENESS,
    STAGE,
    Limits,
    RunPlan,
    RunReport,
    ToolMissing,
    system_tool,
)
from cleanroom.enclave.uploads import MANIFEST_NAME
from cleanroom.protocol.text import FoldedPaths, name_problem
from cleanroom.runtimes import Runtime, RuntimeUnavailable, resolve_runtime

TOOLS = ("bwrap", "unshare", "setpriv", "mount", "nice")  # from the system's directories only
MIN_BUBBLEWRAP = Version("0.8")  # the first with --disable-userns (Debian 12 has 0.8.0)


class Confinement(Protocol):
    """How a Worker runs its room's function, confined (docs/threat-model.md)."""

    def run(
        self,
        *,
        runtime: Runtime,
        workspace: Path,
        outputs: list[str],
        handler: str,
        limits: Limits,
        receive: Receive,
        keep_log: bool = False,
    ) -> RunResult:
        """Run ``handler`` on ``workspace``; each output file goes to ``receive``."""
        ...


@dataclass(frozen=True)
class Sandbox:
    """How this host confines a room's functions (see :func:`sandbox`)."""

    uid: int  # the room's host uid, unique on the host (sandbox_ids.py)
    prefix: tuple[str, ...]  # how a supervisor is started

    def run(
        self,
        *,
        runtime: Runtime,
        workspace: Path,
        outputs: list[str],
        handler: str,
        limits: Limits,
        receive: Receive,
        keep_log: bool = False,
    ) -> RunResult:
        """:func:`run_function` in this sandbox."""
        return run_function(
            sandbox=self,
            runtime=runtime,
            workspace=workspace,
            outputs=outputs,
            handler=handler,
            limits=limits,
            receive=receive,
            keep_log=keep_log,
        )


@dataclass(frozen=True)
class NoConfinement:
    """Where no function can be confined yet: every run is refused (``run-isolation``),
    saying why. Never a way to run a function unconfined."""

    reason: str

    def run(self, **_: object) -> RunResult:
        raise RunError(
            "run-isolation",
            "a confined run",
            self.reason,
            "the function cannot be confined here; refusing to run it",
        )


# Every file the kernel holds open, on the whole host, draws on one count, fs.file-max,
# which no namespace, cgroup or rlimit divides; only a process with CAP_SYS_ADMIN opens
# past it. A descriptor is under RLIMIT_NOFILE, but a mapping of a file holds the file
# open after its descriptor is closed: one run of 8 processes held 480,000 open files
# with 4 descriptors each and 207 MiB of memory (h26's red team; 430 B of the run's
# memory per file, a struct file and a mapping), a fifth of this host's fs.file-max
# (2,466,239: the kernel's default, a tenth of the memory in KiB), so that a run under
# the default 2 GiB could hold all of it for its wall time, and every other room's
# function and bubblewrap (unprivileged) would fail to open a file (ENFILE). The run's
# memory limit is the only bound, so the host's count must be out of reach of memory:
# at least one file per FILE_BYTES of it (systemd sets fs.file-max to its maximum).
FILE_BYTES = 256  # less than what an open file costs in kernel memory (a struct file)
FILE_MAX = Path("/proc/sys/fs/file-max")
MEMINFO = Path("/proc/meminfo")


def open_files_problem() -> str | None:
    """Why this host's count of open files (fs.file-max) is within reach of a run's
    memory, or None: at least one file per :data:`FILE_BYTES` of the host's memory."""
    try:
        file_max = int(FILE_MAX.read_text())
        fields = dict(line.split(":", 1) for line in MEMINFO.read_text().splitlines())
        memory = int(fields["MemTotal"].split()[0]) << 10  # "24662392 kB"
    except (OSError, ValueError, KeyError) as error:
        return f"fs.file-max or MemTotal could not be read: {error}"
    if file_max < memory // FILE_BYTES:
        return f"fs.file-max {file_max} for {memory >> 20} MiB of memory"
    return None


# What the kernel writes to its log of an unprivileged process, which the host's
# operators read (and many hosts ship elsewhere): a fault it did not handle, with its
# name (15 bytes it chooses, PR_SET_NAME or the name of the file it runs), the address,
# and the 64 bytes of its memory at the instruction (debug.exception-trace: "Code: …");
# and, when a run fills its memory, the name of every task of its control group
# (vm.oom_dump_tasks). A function's children put the input in both, 10 faults and 10
# dumps every 5 s (the kernel's rate limit): 170 B/s of faults, and 15 B a task a dump
# (h26's red team), a run that "succeeded" and released nothing. Both off, or no run.
# And kernel.print-fatal-signals (0 by default, 1 on a host being debugged): every
# core-dumping signal a task dies of, logged with its name, its program's file name, all
# its registers and the 64 bytes at its instruction, with no rate limit: a function's
# children faulting in a page of the input put 100 such dumps in the log in 2 s, about
# 10 KB/s (h30's red team, the setting 1 for the probe's 2 s).
KERNEL_LOG_SETTINGS = {
    "debug.exception-trace": Path("/proc/sys/debug/exception-trace"),
    "vm.oom_dump_tasks": Path("/proc/sys/vm/oom_dump_tasks"),
    "kernel.print-fatal-signals": Path("/proc/sys/kernel/print-fatal-signals"),
}
# And the audit of a process the syscall filter kills (a call through another ABI), with
# its name, the call's number and the address it was made from (10 every 5 s, 24 B a
# line of the function's choice): the kill actions are not logged. The run's exit
# status (SIGSYS) still says it, in the signed status.
SECCOMP_ACTIONS_LOGGED = Path("/proc/sys/kernel/seccomp/actions_logged")
SECCOMP_KILLS = ("kill_process", "kill_thread")
SECCOMP_LOGGED = "trap errno user_notif trace log"  # the kernel's default, less the kills
# And where the kernel sends a crash: a run dumps no core (RLIMIT_CORE 1, supervisor), but
# where kernel.core_pattern pipes cores to a crash helper ("|", apport's and
# systemd-coredump's default) the kernel logs each dump it aborts for that limit,
# "coredump: PID(NAME): RLIMIT_CORE is set to 1, aborting core", NAME 15 bytes of the
# function's choice, 10 lines every 5 s (its rate limit): a function's children dying of
# SIGSEGV, named by its input, put it there 10 times in 4 s of a run that "succeeded"
# (h35's red team, the pattern a pipe for the probe's 7 s), about 35 B/s. A socket ("@",
# Linux 6.16) is a crash server the kernel connects to at each crash, the task's pid
# with it, whatever the limit. So a file only (the kernel's default, "core").
CORE_PATTERN = Path("/proc/sys/kernel/core_pattern")
CORE_HANDLERS = ("|", "@")  # a pipe to a program, a socket


def kernel_log_problem() -> str | None:
    """Which of :data:`KERNEL_LOG_SETTINGS` would log what a run chooses (not 0), of
    the seccomp kills, and whether :data:`CORE_PATTERN` sends crashes to a helper
    (:data:`CORE_HANDLERS`); or None. A kernel without one of them logs nothing of the
    kind."""
    logging = []
    for name, path in KERNEL_LOG_SETTINGS.items():
        try:
            value = path.read_text().strip()
        except FileNotFoundError:
            continue
        except OSError as error:
            return f"{name} could not be read: {error}"
        if value != "0":
            logging.append(f"{name} {value}")
    try:
        actions = SECCOMP_ACTIONS_LOGGED.read_text().split()
    except FileNotFoundError:
        actions = []
    except OSError as error:
        return f"kernel.seccomp.actions_logged could not be read: {error}"
    if logged := [action for action in SECCOMP_KILLS if action in actions]:
        logging.append(f"kernel.seccomp.actions_logged {' '.join(logged)}")
    try:
        pattern = CORE_PATTERN.read_text().strip()
    except FileNotFoundError:  # a kernel without core dumps
        pattern = ""
    except OSError as error:
        return f"kernel.core_pattern could not be read: {error}"
    if pattern.startswith(CORE_HANDLERS):
        logging.append(f"kernel.core_pattern {pattern.split()[0]}")
    return ", ".join(logging) or None


def sandbox(uid: int, *, shared_host: bool = True) -> Sandbox:
    """This host's sandbox for a room whose functions run as ``uid``; RunError if none.

    ``shared_host`` False (``cleanroom function test``: the author's own function, data
    and machine) leaves out what protects other rooms and the host's other readers
    (:func:`open_files_problem`, :func:`kernel_log_problem`): there they are the author."""
    missing = [tool for tool in TOOLS if not _have(tool)]
    if missing:
        raise RunError(
            "run-isolation",
            f"{', '.join(TOOLS)} in the system's directories (Debian: bubblewrap, util-linux)",
            f"missing {', '.join(missing)}",
            "the function cannot be confined here; refusing to run it",
        )
    version = _bubblewrap_version()
    if version is None or version < MIN_BUBBLEWRAP:
        raise RunError(
            "run-isolation",
            f"bubblewrap {MIN_BUBBLEWRAP} or later (--disable-userns)",
            f"bubblewrap {version or 'of an unknown version'}",
            "the function cannot be confined here; refusing to run it",
        )
    problem = _syscall_filter_problem()
    if problem is not None:
        raise RunError(
            "run-isolation",
            "the run's syscall filter, built by libseccomp with every rule of "
            "enclave.syscalls (Debian: libseccomp2)",
            problem,
            "the function cannot be confined here; refusing to run it",
        )
    if os.geteuid() != 0:
        raise RunError(
            "run-isolation",
            "root, to run each room's function as a uid of its own",
            f"uid {os.geteuid()}",
            "the function cannot be confined here; refusing to run it",
        )
    problem = overlay_problem()
    if problem is not None:
        raise RunError(
            "run-isolation",
            "a read-only overlay mount, each run's own view of the host's files (overlayfs)",
            problem,
            "the function cannot be confined here; refusing to run it",
        )
    problem = open_files_problem() if shared_host else None
    if problem is not None:
        raise RunError(
            "run-isolation",
            f"fs.file-max of at least the host's memory / {FILE_BYTES} B: the files a run "
            "can hold open by its mappings, past its descriptors, are bounded by its "
            "memory alone, and every other room's runs share the count",
            problem,
            "the function cannot be confined here; refusing to run it",
            hint="as root, scripts/host-settings.sh --persist (now, and at every boot "
            "from /etc/sysctl.d/60-cleanroom.conf), or sysctl -w "
            "fs.file-max=9223372036854775807 (what systemd sets at boot; fs.file-max in "
            "/etc/sysctl.d/ to keep it)",
        )
    problem = kernel_log_problem() if shared_host else None
    if problem is not None:
        raise RunError(
            "run-isolation",
            f"{' and '.join(KERNEL_LOG_SETTINGS)} 0, and kernel.seccomp.actions_logged "
            f"without {' or '.join(SECCOMP_KILLS)}, and kernel.core_pattern a file (not "
            "a pipe to a crash helper nor a socket): the kernel's log of a run's faults, "
            "of the signals it dies of, of its tasks at its memory limit, of its calls "
            "the filter kills and of the core dumps it aborts says what "
            "the function chooses, to the host",
            problem,
            "the function cannot be confined here; refusing to run it",
            hint="as root, scripts/host-settings.sh --persist (now, and at every boot "
            "from /etc/sysctl.d/60-cleanroom.conf), or sysctl -w debug.exception-trace=0 "
            "vm.oom_dump_tasks=0 kernel.print-fatal-signals=0 "
            f"kernel.seccomp.actions_logged='{SECCOMP_LOGGED}' kernel.core_pattern=core "
            "(in /etc/sysctl.d/ to keep them; a crash reporter that sets the pattern "
            "when it starts, apport, disabled)",
        )
    if uid <= 0:
        raise RunError("sandbox-uid", "an unprivileged uid", uid, "no sandbox identity")
    # Die with the Worker; never see the host's mounts change, nor change them.
    prefix = (
        system_tool("nice"), "-n", str(RUN_NICENESS),
        system_tool("setpriv"), "--pdeathsig", "KILL", "--",
        system_tool("unshare"), "--mount", "--propagation", "private",
    )  # fmt: skip
    return Sandbox(uid, prefix)


def installed_runtime(name: str) -> Runtime:
    """An installed runtime (``python3.11``): its interpreter, runnable by the sandbox
    user, and the paths the sandbox binds read-only for it (a Worker takes the one its
    measurement names instead: worker_service.image_runtime)."""
    try:
        return resolve_runtime(name)
    except RuntimeUnavailable as error:
        raise RunError(
            error.check, error.expected, error.actual, error.message, error.hint
        ) from None


@dataclass(frozen=True)
class RunResult:
    status: str  # succeeded | failed | timeout | cpu | memory | disk | processes
    exit_code: int | None
    seconds: float
    log: bytes  # empty unless the spec sends the log to an output
    cpu_seconds: float | None = None
    memory_peak_bytes: int | None = None
    disk_bytes: int | None = None
    confinement: tuple[str, ...] = ()
    outputs_withheld: bool = False
    outputs_left_out: int = 0  # regular files left out for their names (the supervisor's)


Receive = Callable[[str, IO[bytes], int], None]
"""Called for each output file, in order: ``<output id>/<path>``, its bytes, its size."""


def prepare_workspace(workspace: Path, group: int) -> None:
    """Make the staged function and inputs readable by the sandbox's group only.

    The supervisor binds them read-only; this keeps another uid out even of the view.
    """
    for path in [workspace, *workspace.rglob("*")]:
        if path.is_symlink():
            raise RunError("workspace", "no symlinks", str(path), "unexpected symlink in workspace")
        os.chown(path, 0, group)
        path.chmod(0o750 if path.is_dir() else 0o440)


_RUNS_OF_UID: dict[int, threading.Lock] = {}
_RUNS_GUARD = threading.Lock()


def _runs_of(uid: int) -> threading.Lock:
    """The lock that lets one run of ``uid`` at a time.

    A run ends by killing every process of its uid (the supervisor's ``_ensure_ended``:
    nothing a function started may outlive it, whatever namespace it got out to). A
    second run of the same uid at the same time, a SQL room's second query or a
    party's schema check beside a query, was killed with it (SIGKILL, reported as a
    failed run). So the runs of a room wait their turn."""
    with _RUNS_GUARD:
        return _RUNS_OF_UID.setdefault(uid, threading.Lock())


def run_function(
    *,
    sandbox: Sandbox,
    runtime: Runtime,
    workspace: Path,
    outputs: list[str],
    handler: str,
    limits: Limits,
    receive: Receive,
    keep_log: bool = False,
) -> RunResult:
    """Run ``handler`` on ``workspace`` (``function/``, ``inputs/``, ``parameters.json``);
    each output file goes to ``receive`` once no process of the run is left. One run of
    a uid at a time (:func:`_runs_of`): another waits."""
    with _runs_of(sandbox.uid):
        prepare_workspace(workspace, sandbox.uid)
        plan = RunPlan(
            function_dir=str(workspace / "function"),
            inputs_dir=str(workspace / "inputs"),
            parameters=str(workspace / "parameters.json"),
            outputs=sorted(outputs),
            handler=handler,
            interpreter=str(runtime.interpreter),
            runtime_roots=[str(root) for root in runtime.roots],
            uid=sandbox.uid,
            limits=limits,
            keep_log=keep_log,
            stage=str(STAGE),
        )
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [*sandbox.prefix, "--", sys.executable, "-I", "-m", "cleanroom.enclave.supervisor"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None
        assert process.stderr is not None
        errors = _Drain(process.stderr)
        errors.start()
        try:
            process.stdin.write(plan.to_json())
            process.stdin.close()
            line = process.stdout.readline(1 << 22)
            try:
                report = RunReport.from_json(line)
            except (ValueError, TypeError) as error:
                detail = errors.text() or "nothing"
                raise RunError(
                    "run-supervisor", "a run report", detail, "the run did not start"
                ) from error
            if report.error is None:
                _receive_outputs(process.stdout, outputs, limits, receive)
        finally:
            process.kill()
            process.wait()
            errors.join(timeout=5)
        if report.error is not None:
            raise RunError(
                "run-ended", "a run that ended cleanly", report.error, "run not released"
            )
        return RunResult(
            status=report.status,
            exit_code=report.exit_code,
            seconds=report.seconds,
            log=base64.b64decode(report.log) if keep_log else b"",
            cpu_seconds=report.cpu_seconds,
            memory_peak_bytes=report.memory_peak_bytes,
            disk_bytes=report.disk_bytes,
            confinement=tuple(report.confinement),
            outputs_withheld=report.outputs_withheld,
            outputs_left_out=report.outputs_left_out,
        )


def _receive_outputs(
    stream: IO[bytes], outputs: list[str], limits: Limits, receive: Receive
) -> None:
    """The supervisor's tar stream: regular files under known outputs, within the limit."""
    budget = limits.disk_mib << 20
    names = FoldedPaths()  # the supervisor left out every clash: one here is its fault
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                output_id = member.name.split("/", 1)[0]
                if (
                    not member.isreg()
                    or output_id not in outputs
                    or member.size > budget
                    or not _storable(member.name)
                    or names.add(member.name) is not None
                ):
                    # Not the entry's name: an output's paths are sealed, this is not.
                    raise RunError(
                        "run-outputs", "regular files of the spec's outputs within the limit",
                        f"an entry of {output_id if output_id in outputs else 'no output'}",
                        "unexpected entry in the outputs",
                    )  # fmt: skip
                budget -= member.size
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file always has one
                receive(member.name, handle, member.size)
    except tarfile.TarError as error:
        raise RunError(
            "run-outputs", "a complete outputs stream", str(error), "outputs cut short"
        ) from error


def _storable(name: str) -> bool:
    """Whether the Worker can seal and serve an output file of this name: one the store
    accepts, not the output's manifest, and one a recipient may write and list
    (``text.name_problem`` of the name below the output, as the supervisor checks it,
    leaving the others out: an output's id is the spec's, and ``aux`` is one). Checked
    here, where a refusal does not quote the name (the function's plaintext), rather
    than by the store, whose refusal does."""
    try:
        path = check_object_name(name)
    except StoreError:
        return False
    relative = "/".join(path.parts[1:])
    return relative != MANIFEST_NAME and name_problem(relative) is None


def _bubblewrap_version() -> Version | None:
    """The installed bubblewrap's version (``bwrap --version``: "bubblewrap 0.8.0")."""
    try:
        answer = subprocess.run(  # noqa: S603 - the system's bwrap, a fixed argument
            [system_tool("bwrap"), "--version"], capture_output=True, text=True, timeout=10
        )
        return Version(answer.stdout.split()[-1])
    except (OSError, subprocess.SubprocessError, IndexError, InvalidVersion):
        return None


def _syscall_filter_problem() -> str | None:
    """Why this host cannot build the filter each run's supervisor builds (no
    libseccomp, or one that refuses a rule, e.g. a call newer than it), or None: the
    same build, once at the start, so that a Worker that could run nothing never starts."""
    try:
        os.close(syscalls.filter_fd())
    except (ImportError, OSError, RuntimeError) as error:  # pyseccomp: no libseccomp
        return f"the filter could not be built: {error}"
    return None


@functools.cache
def overlay_problem() -> str | None:
    """Why this host cannot mount the read-only overlays each run's supervisor mounts
    (its own inodes of /usr and the runtime: ``supervisor._stage``), or None: one such
    mount, once per process (7 ms; a spare Worker tries it before it is assigned), in a
    mount namespace that ends with it, so that a Worker whose every run would fail never
    starts."""
    with tempfile.TemporaryDirectory(prefix="cleanroom-overlay-probe-") as scratch:
        top, bottom, view = (Path(scratch) / name for name in ("top", "bottom", "view"))
        for directory in (top, bottom, view):
            directory.mkdir()
        options = f"ro,nosuid,nodev,lowerdir={top}:{bottom}"  # two layers: no upper
        try:
            answer = subprocess.run(  # noqa: S603 - the system's tools, our own arguments
                [system_tool("unshare"), "--mount", "--propagation", "private",
                 system_tool("mount"), "-t", "overlay", "-o", options, "cleanroom-probe",
                 str(view)],
                capture_output=True, text=True, timeout=10,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as error:
            return f"the probe mount did not run: {error}"
    if answer.returncode != 0:
        return f"mount -t overlay: {answer.stderr.strip()[-300:] or answer.returncode}"
    return None


def _have(tool: str) -> bool:
    try:
        system_tool(tool)
    except ToolMissing:
        return False
    return True


class _Drain(threading.Thread):
    """The supervisor's stderr (its own failures only; the function's go elsewhere)."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(name="supervisor-stderr", daemon=True)
        self._stream = stream
        self._data = bytearray()

    def run(self) -> None:
        while chunk := self._stream.read(4096):
            if len(self._data) < 65536:
                self._data += chunk

    def text(self) -> str:
        return self._data.decode(errors="replace").strip()[-2000:]
