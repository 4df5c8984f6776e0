"""One run of a function in bubblewrap, supervised; started by the Worker for each run.

    setpriv --pdeathsig KILL -- unshare --mount --propagation private -- \\
        python -I -m cleanroom.enclave.supervisor  < plan.json  > result + outputs

It lives in a mount namespace of its own, so everything it mounts (the run's
size-capped tmpfs for ``outputs/`` and ``/tmp``, the read-only views of the function
and the inputs) exists only for it and vanishes with it. It:

1. stages the run's view under :data:`STAGE` (a world-traversable mount point, so the
   sandbox's unprivileged uid can reach what is bound in without seeing the Worker's
   directories);
2. creates the run's control group (memory, tasks, CPU time; rlimits where the host
   has no cgroups, and the result says so);
3. starts bubblewrap *as the run's own unprivileged host uid* (never as root: root
   starting bubblewrap with a user namespace would map the sandbox to host root),
   with new user, PID, mount, IPC, UTS, network and cgroup namespaces (and no
   nested user namespace), a fresh ``/proc``, read-only system directories, no
   capabilities, the syscall filter of :mod:`cleanroom.enclave.syscalls`, its own
   session and death with its parent;
4. ends the run by ending its PID namespace (SIGKILL to its init: the kernel then
   kills every process in it, ``setsid`` or not, before the init's exit is reported),
   and makes sure no process of the run's uid or control group is left;
5. only then reads ``outputs/``, walking it by file descriptors without following a
   symlink, and writes to stdout one JSON line (the :class:`RunReport`) and then the
   outputs as a tar stream, which the Worker seals.

The Worker never touches the run's files itself; the function never sees the Worker.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import resource
import secrets
import select
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from cleanroom.enclave.cgroups import CgroupLimits, CgroupUnavailable, RunCgroup, run_cgroups
from cleanroom.enclave.syscalls import filter_fd as syscall_filter
from cleanroom.errors import Error
from cleanroom.protocol.records import MAX_PATH
from cleanroom.protocol.text import clashing, name_problem

STAGE = Path("/run/cleanroom/stage")
"""Where a supervisor (as root) mounts the run's view, in its own mount namespace only."""

WORK = "/work"
# A run is batch work: its supervisor, bubblewrap and the function run this much nicer
# than the enclave services, so that no room's function (busy or hostile) can starve
# the attestation and the sessions of every room on the host. The niceness is inherited,
# and an unprivileged function cannot lower it again (RLIMIT_NICE is 0); where the
# kernel groups processes by session it orders nothing across sessions, so the run's
# CPU control group gets the same weight (cleanroom.enclave.cgroups).
RUN_NICENESS = 10
MAX_LOG_BYTES = 1 << 20
MAX_OPEN_FILES = 1024
EXIT_GRACE_S = 5.0
POLL_S = 0.05
# Plenty for any function, few enough that a function cannot exhaust the host's
# inodes through its tmpfs (each file of a tmpfs costs kernel memory).
MAX_FILES = 20_000

# The interpreter says it started (one byte on the inherited fd argv[2], closed at
# once, before any of the function's code runs), then calls the handler.
BOOTSTRAP = """
import importlib, os, sys
os.write(int(sys.argv[2]), b"1")
os.close(int(sys.argv[2]))
sys.path[:0] = ["/work/function", "/work/function/packages"]
module_name, _, attribute = sys.argv[1].rpartition(".")
getattr(importlib.import_module(module_name), attribute)()
"""

# What every interpreter needs of the host, read-only. Of the host's /etc only the
# dynamic linker's cache and the time zone: none of its users, hosts or certificates.
SYSTEM_BINDS = ("/usr",)
SYSTEM_LINKS = (("usr/bin", "/bin"), ("usr/sbin", "/sbin"), ("usr/lib", "/lib"),
                ("usr/lib64", "/lib64"), ("usr/lib32", "/lib32"))  # fmt: skip
ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime")

HOSTNAME = USER = "cleanroom"
# The sandbox's own names, written for each run: its loopback and hostname, its one user
# (the room's uid; every other owner shows as the overflow id, nobody), and files as the
# only source, so that no name is ever sent to a resolver. Libraries that serve
# themselves on localhost (Dask, Spark, test servers) and those that ask who runs them
# (pwd, getpass) then work as on a machine of their own.
ETC_OWN = {
    # As Debian names a machine: its hostname on a loopback address of its own.
    "hosts": f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n::1\tlocalhost ip6-localhost\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
    "passwd": f"{USER}:x:{{uid}}:{{uid}}:{USER}:/tmp:/usr/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "group": f"{USER}:x:{{uid}}:\nnogroup:x:65534:\n",
}

# The devices of bubblewrap's /dev, each made again for every run (see _stage).
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

# Precedence when several limits were hit: the one that ended the run comes first.
LIMIT_ORDER = ("timeout", "cpu", "memory", "disk", "processes")


@dataclass(frozen=True)
class Limits:
    memory_mib: int
    processes: int
    cpu_s: int
    timeout_s: int
    disk_mib: int


@dataclass(frozen=True)
class RunPlan:
    """Everything a supervisor needs, from the Worker (JSON on its stdin)."""

    function_dir: str  # the unpacked bundle (read-only in the sandbox)
    inputs_dir: str  # inputs/<id>/… (read-only in the sandbox)
    parameters: str  # the parameters file (read-only in the sandbox)
    outputs: list[str]
    handler: str
    interpreter: str
    runtime_roots: list[str]
    uid: int  # the run's host uid: unique on the host, never root
    limits: Limits
    stage: str  # where this supervisor mounts the run's view (STAGE as root)
    keep_log: bool = False

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RunPlan:
        document = json.loads(data)
        document["limits"] = Limits(**document["limits"])
        return cls(**document)


@dataclass
class RunReport:
    """How the run ended, what it used, and how it was confined."""

    status: str  # succeeded | failed | timeout | cpu | memory | disk | processes
    exit_code: int | None
    seconds: float
    cpu_seconds: float | None = None
    memory_peak_bytes: int | None = None
    disk_bytes: int | None = None
    limits_hit: list[str] = field(default_factory=list)
    confinement: list[str] = field(default_factory=list)  # what enforced it, for the log
    log: str = ""  # b64 of the function's output streams, when the spec keeps them
    outputs_withheld: bool = False  # more than the disk limit to release: none is
    outputs_left_out: int = 0  # regular files left out for their names (_walk_outputs)
    error: str | None = None  # why the supervisor could not run or end the run

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RunReport:
        return cls(**json.loads(data))


class SupervisorError(Error):
    """The run could not be set up or could not be ended: nothing of it is released."""

    http_status = 500  # this server's own failure, not the request's


class ToolMissing(Error):
    """A system tool the sandbox needs is not installed."""

    http_status = 500  # this server's own failure, not the request's


SYSTEM_DIRS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin")


def system_tool(name: str) -> str:
    """The absolute path of a system tool, from the system's own directories (never
    from PATH, which whoever started this process chose)."""
    for directory in SYSTEM_DIRS:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise ToolMissing(f"{name} is not installed in {', '.join(SYSTEM_DIRS)}")


def _mount(*arguments: str) -> None:
    result = subprocess.run(  # noqa: S603 - util-linux mount with our own arguments
        [system_tool("mount"), *arguments], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SupervisorError(f"mount {' '.join(arguments)}: {result.stderr.strip()}")


@dataclass(frozen=True)
class _Stage:
    """The run's view as the sandbox's bwrap sees it (paths on the supervisor's side)."""

    root: Path

    @property
    def function(self) -> Path:
        return self.root / "function"

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    @property
    def parameters(self) -> Path:
        return self.root / "parameters.json"

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def rw(self) -> Path:
        return self.root / "rw"

    @property
    def outputs(self) -> Path:
        return self.rw / "outputs"

    @property
    def views(self) -> Path:
        return self.root / "views"

    @property
    def dev(self) -> Path:
        return self.root / "dev"


def _view_roots(plan: RunPlan) -> list[str]:
    """The directories a run sees of the host (``/usr``, the runtime's), outermost only."""
    directories = [
        p for p in dict.fromkeys([*SYSTEM_BINDS, *plan.runtime_roots]) if Path(p).is_dir()
    ]
    return [
        path
        for path in directories
        if not any(
            path != other and path.startswith(other.rstrip("/") + "/") for other in directories
        )
    ]


def _source(plan: RunPlan, stage: _Stage, path: str) -> str:
    """Where the sandbox's ``path`` is bound from: the run's own view of the host
    directory that holds it, else the host's path itself."""
    for index, root in enumerate(_view_roots(plan)):
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return str(stage.views / str(index)) + path[len(root.rstrip("/")) :]
    return path


def _stage(plan: RunPlan, root: Path) -> _Stage:
    """Mount the run's view at ``root``: read-only binds and one size-capped tmpfs.

    ``outputs/`` and ``/tmp`` (and ``/dev/shm``) share that tmpfs, so the total a
    function writes is capped while it runs, not checked after.
    """
    stage = _Stage(root)
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", "size=4m,mode=0755,nosuid,nodev", "cleanroom-stage", str(root))
    stage.function.mkdir()
    stage.inputs.mkdir()
    _mount("-o", "bind,ro", plan.function_dir, str(stage.function))
    _mount("-o", "bind,ro", plan.inputs_dir, str(stage.inputs))
    stage.parameters.write_bytes(Path(plan.parameters).read_bytes())
    stage.parameters.chmod(0o444)
    stage.etc.mkdir()
    for name, text in ETC_OWN.items():
        (stage.etc / name).write_text(text.format(uid=plan.uid))
        (stage.etc / name).chmod(0o444)
    # Every file a run sees of the host is, bound, the host's own inode, and so every
    # other run's: a lock taken on it (flock, fcntl; on a file opened read-only) is seen
    # by every other run on the host, and was a channel between two rooms' functions run
    # at once (bit by bit, exact), past their outputs' recipients. So each run gets
    # inodes of its own: a read-only overlay of each directory (the page cache under it
    # stays one: that is its reads' timing, not contained), copies of the two /etc
    # files, and devices made again (bubblewrap's --dev binds the host's /dev/null,
    # whose lock every process on the host shares).
    stage.views.mkdir()
    empty = stage.views / "empty"
    empty.mkdir()
    for index, host_directory in enumerate(_view_roots(plan)):
        if any(character in host_directory for character in ",:\\"):
            raise SupervisorError(f"a directory overlayfs cannot name: {host_directory!r}")
        (stage.views / str(index)).mkdir()
        options = f"ro,nosuid,nodev,lowerdir={host_directory}:{empty}"  # two layers: no upper
        _mount("-t", "overlay", "-o", options, "cleanroom-view", str(stage.views / str(index)))
    for path in ETC_FILES:
        if Path(path).exists():
            (stage.etc / Path(path).name).write_bytes(Path(path).read_bytes())
            (stage.etc / Path(path).name).chmod(0o444)
    stage.dev.mkdir()
    devices = "size=64k,nr_inodes=16,mode=0755,nosuid"  # not nodev: it holds devices
    _mount("-t", "tmpfs", "-o", devices, "cleanroom-dev", str(stage.dev))
    for name in DEVICES:
        device = os.stat(f"/dev/{name}")
        os.mknod(stage.dev / name, stat.S_IFCHR | 0o666, device.st_rdev)
        os.chmod(stage.dev / name, 0o666)  # noqa: S103 - the host's device's mode, not the umask's
    stage.rw.mkdir(mode=0o700)
    owner = plan.uid
    # noexec: no program the function wrote runs (an interpreter still reads a script).
    # The kernel logs, with no rate limit, a program it cannot load because its first
    # segment lies over memory already mapped ("N (NAME): Uhuuh, elf segment at ADDR
    # requested but the memory is mapped already"): a crafted ELF in /tmp, run again and
    # again, put 15 bytes of name and 4 of address of the function's choice in 121 lines
    # in 2 s (h30's red team). A memfd cannot be run either (syscalls.MEMFD_NOEXEC_SEAL).
    _mount(
        "-t", "tmpfs", "-o",
        f"size={plan.limits.disk_mib}m,nr_inodes={MAX_FILES},mode=0755,nosuid,nodev,noexec",
        "cleanroom-run", str(stage.rw),
    )  # fmt: skip
    stage.outputs.mkdir(mode=0o755)  # its own: the function makes no output ids
    private = [stage.rw / "tmp", stage.rw / "shm"]
    for directory in [*(stage.outputs / output_id for output_id in plan.outputs), *private]:
        directory.mkdir(mode=0o700)
        os.chown(directory, owner, owner)
    return stage


def _bwrap_argv(
    plan: RunPlan, stage: _Stage, info_fd: int, started_fd: int, seccomp_fd: int
) -> list[str]:
    argv = [
        system_tool("bwrap"),
        "--unshare-all",  # user, ipc, pid, net, uts, cgroup (and mount, always)
        "--unshare-user",  # required, not "if it can" (it always can: bwrap is not root)
        "--disable-userns",  # and no user namespace inside it (bubblewrap >= 0.8)
        "--seccomp", str(seccomp_fd),  # the calls it may not make (enclave.syscalls)
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        "--hostname", HOSTNAME,
        "--info-fd", str(info_fd),
    ]  # fmt: skip
    for path in dict.fromkeys([*SYSTEM_BINDS, *plan.runtime_roots]):
        argv += ["--ro-bind", _source(plan, stage, path), path]
    for target, link in SYSTEM_LINKS:
        if Path(link).is_symlink() or Path("/" + target).is_dir():
            argv += ["--symlink", target, link]
    for path in ETC_FILES:
        if Path(path).exists():
            argv += ["--ro-bind", str(stage.etc / Path(path).name), path]
    for name in ETC_OWN:
        argv += ["--ro-bind", str(stage.etc / name), f"/etc/{name}"]
    argv += [
        "--proc", "/proc",
        "--dev", "/dev",
        *(arg for name in DEVICES for arg in ("--dev-bind", str(stage.dev / name), f"/dev/{name}")),
        "--ro-bind", str(stage.function), f"{WORK}/function",
        "--ro-bind", str(stage.inputs), f"{WORK}/inputs",
        "--ro-bind", str(stage.parameters), f"{WORK}/parameters.json",
        "--bind", str(stage.outputs), f"{WORK}/outputs",
        # The sandbox's own /tmp and /dev/shm, on the run's capped tmpfs.
        "--bind", str(stage.rw / "tmp"), "/tmp",  # noqa: S108
        "--bind", str(stage.rw / "shm"), "/dev/shm",  # noqa: S108
        # No pseudo-terminal: every devpts instance but the host's own draws on one
        # count, kernel.pty.max less its reserve (3,072 of 4,096), which a function
        # held whole for its run. A device on a nodev bind is refused (EACCES).
        "--ro-bind", str(stage.dev / "null"), "/dev/pts/ptmx",
        # bubblewrap's /dev is a tmpfs of the function's uid, not the run's capped one:
        # read-only, so that no file is written past the disk and inode limits (its
        # devices still read and write; /dev/shm is the run's own).
        "--remount-ro", "/dev",
        "--remount-ro", "/",
        "--chdir", WORK,
        "--clearenv",
        "--setenv", "WORK_DIR", WORK,
        "--setenv", "HOME", "/tmp",  # noqa: S108 - the sandbox's own
        "--setenv", "TMPDIR", "/tmp",  # noqa: S108
        "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "LANG", "C.UTF-8",
        "--setenv", "USER", USER,
        plan.interpreter, "-I", "-c", BOOTSTRAP, plan.handler, str(started_fd),
    ]  # fmt: skip
    return argv


def _enter(plan: RunPlan, cgroup: RunCgroup | None) -> Callable[[], None]:
    """What the child does before exec: join the group, set rlimits, drop to the uid."""
    limits = plan.limits
    procs = [] if cgroup is None else [str(path) for path in cgroup.procs_files()]
    # The uid's task count (unique to this room) stops a fork bomb even without cgroups;
    # with them, the group's own limit must be the one that bites, so the result can
    # name it (bubblewrap's two processes count against the rlimit, not the group).
    tasks = limits.processes if cgroup is None else limits.processes + 8

    def enter() -> None:
        for path in procs:
            with open(path, "w") as handle:
                handle.write(str(os.getpid()))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_NPROC, (tasks, tasks))
        resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES))
        # No core of the function's memory (the rooms' plaintext): 0 stops a core file,
        # but a host whose core_pattern pipes dumps to a helper (apport, some crash
        # reporters) gets one whatever the limit is, except 1, which the kernel reads as
        # "abort the pipe dump" and which is under the least core file it writes.
        resource.setrlimit(resource.RLIMIT_CORE, (1, 1))
        # The run's niceness (RUN_NICENESS) is a floor it cannot lower.
        resource.setrlimit(resource.RLIMIT_NICE, (0, 0))
        # Nor does it take a real-time policy (SCHED_FIFO, SCHED_RR), which runs before
        # every normal task, the enclave services included, at any niceness: an
        # unprivileged task may, up to its RLIMIT_RTPRIO, and this one was the Worker's
        # (a systemd LimitRTPRIO=, a container's --ulimit rtprio). Only a CPU control
        # group with no real-time time of its own (v1's cpu.rt_runtime_us 0, where the
        # kernel has RT_GROUP_SCHED) stopped it; a v2 host or one with no cpu
        # controller had nothing.
        resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
        if cgroup is None:
            # No memory controller: cap the address space (data libraries that reserve
            # large virtual ranges may then fail early; the result says why).
            memory = limits.memory_mib << 20
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        os.setgroups([])
        os.setresgid(plan.uid, plan.uid, plan.uid)
        os.setresuid(plan.uid, plan.uid, plan.uid)

    return enter


def _uid_processes(uid: int) -> set[int]:
    """Every live process on the host running as ``uid``. Zombies are left out: they
    run nothing, and the sandbox's init stays one until the host's init reaps it."""
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                with open(f"/proc/{entry.name}/stat", "rb") as handle:
                    state = handle.read().rsplit(b")", 1)[1].split()[0]
                if state not in (b"Z", b"X"):
                    found.add(int(entry.name))
    return found


class _LogReader(threading.Thread):
    """Drains the sandbox's output streams; keeps the first MAX_LOG_BYTES if asked.

    The first few KiB are kept in any case, and said only if bubblewrap never started
    the function (they are then bubblewrap's own complaint, not the function's output).
    """

    def __init__(self, stream: IO[bytes], keep: bool) -> None:
        super().__init__(name="log", daemon=True)
        self._stream, self._keep = stream, keep
        self.data = bytearray()
        self.head = bytearray()

    def run(self) -> None:
        while chunk := self._stream.read(65536):
            if len(self.head) < 4096:
                self.head += chunk[: 4096 - len(self.head)]
            if self._keep and len(self.data) < MAX_LOG_BYTES:
                self.data += chunk[: MAX_LOG_BYTES - len(self.data)]


class Supervisor:
    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan
        self._parent = os.getppid()
        self.confinement: list[str] = []
        self.reported = False  # the report line is out: what follows is the outputs

    def run(self, out: IO[bytes]) -> int:
        plan = self.plan
        if plan.uid <= 0 or os.geteuid() != 0:
            raise SupervisorError(f"a run as uid {plan.uid} needs a root supervisor, and not 0")
        stage = _stage(plan, Path(plan.stage))
        name = f"cleanroom-run-{plan.uid}-"
        limits = CgroupLimits(
            plan.limits.memory_mib << 20, plan.limits.processes, cpu_nice=RUN_NICENESS
        )
        cgroup: RunCgroup | None
        try:
            cgroup = run_cgroups(name + secrets.token_hex(4), limits)
            share = f", CPU share of nice {RUN_NICENESS}" if cgroup.cpu_weighted else ""
            self.confinement.append(f"{cgroup.kind}: memory, tasks, CPU time{share}")
        except (CgroupUnavailable, OSError) as error:
            cgroup = None
            self.confinement.append(f"rlimits only (no cgroups: {error})")
        try:
            report = self._run(stage, cgroup)
        finally:
            if cgroup is not None:
                cgroup.kill()
                cgroup.remove()
        left_out = frozenset[str]()
        if report.error is None:
            left_out, report.outputs_left_out = _clashing(stage.outputs, plan.outputs)
        if (
            report.error is None
            and _size(stage.outputs, plan.outputs, left_out) > plan.limits.disk_mib << 20
        ):
            # Sparse files use little of the tmpfs but are read at their full size: more
            # than the limit is released not at all (a part would be the supervisor's
            # choice, not the function's).
            report.outputs_withheld = True
            hit = {*report.limits_hit, "disk"}
            report.limits_hit = [limit for limit in LIMIT_ORDER if limit in hit]
            report.status = report.limits_hit[0]
        out.write(report.to_json() + b"\n")
        out.flush()
        self.reported = True
        if report.error is None:
            released = [] if report.outputs_withheld else plan.outputs
            _write_outputs(stage.outputs, released, left_out, out)
        out.flush()
        return 0

    def _run(self, stage: _Stage, cgroup: RunCgroup | None) -> RunReport:
        plan, limits = self.plan, self.plan.limits
        try:
            seccomp = syscall_filter()
        except (OSError, RuntimeError) as failure:  # no libseccomp: nothing runs
            raise SupervisorError(f"cannot build the run's syscall filter: {failure}") from failure
        info_read, info_write = os.pipe()
        started_read, started_write = os.pipe()  # the function's interpreter says it ran
        ran = False
        started = time.monotonic()
        try:
            process = subprocess.Popen(  # noqa: S603 - bubblewrap with our own argv
                _bwrap_argv(plan, stage, info_write, started_write, seccomp),
                # Bubblewrap stays in the sandbox as its init, readable by the function's
                # uid (/proc/1/environ): it gets nothing of the host's environment.
                env={},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(info_write, started_write, seccomp),
                preexec_fn=_enter(plan, cgroup),  # this process has one thread: fork is safe
                start_new_session=True,
            )
        finally:
            os.close(seccomp)  # bubblewrap has its own copy, or never started
        os.close(info_write)
        os.close(started_write)
        assert process.stdout is not None
        log = _LogReader(process.stdout, plan.keep_log)
        log.start()
        deadline = started + limits.timeout_s
        init = _sandbox_init(info_read, deadline)
        hit: set[str] = set()
        while process.poll() is None:
            if _full(stage.rw):  # seen full while it runs (it may free space afterwards)
                hit.add("disk")
            ending = set()  # what ends the run now (a full disk does not: writes just fail)
            if time.monotonic() > deadline:
                ending.add("timeout")
            elif cgroup is not None and (cgroup.usage().cpu_seconds or 0) > limits.cpu_s:
                ending.add("cpu")
            elif cgroup is not None and cgroup.out_of_memory():
                ending.add("memory")  # at its memory limit: the whole run ends, never a task
            elif os.getppid() != self._parent:
                ending.add("worker-gone")
            if ending:
                hit |= ending
                self._end(process, init, cgroup)
                break
            time.sleep(POLL_S)
        code = process.wait()
        seconds = time.monotonic() - started
        error = self._ensure_ended(cgroup)
        log.join(timeout=EXIT_GRACE_S)
        os.set_blocking(started_read, False)
        with os.fdopen(started_read, "rb") as started_pipe, contextlib.suppress(OSError):
            ran = started_pipe.read(1) == b"1"
        if not ran and error is None and "timeout" not in hit:
            said = log.head.decode(errors="replace").strip()[-500:]
            error = f"bubblewrap did not start the function (exit {code}): {said or 'no output'}"
        usage = cgroup.usage() if cgroup is not None else None
        if cgroup is not None:
            hit |= cgroup.hit()
        if code == 128 + signal.SIGXCPU:
            hit.add("cpu")
        disk = os.statvfs(stage.rw)
        used = (disk.f_blocks - disk.f_bfree) * disk.f_frsize
        if _full(stage.rw):
            hit.add("disk")
        limits_hit = [limit for limit in LIMIT_ORDER if limit in hit]
        if limits_hit:
            status = limits_hit[0]
        elif "worker-gone" in hit:
            status, error = "failed", error or "the Worker went away during the run"
        else:
            status = "succeeded" if code == 0 else "failed"
        return RunReport(
            status=status,
            exit_code=code,
            seconds=round(seconds, 3),
            cpu_seconds=None if usage is None else usage.cpu_seconds,
            memory_peak_bytes=None if usage is None else usage.memory_peak_bytes,
            disk_bytes=used,
            limits_hit=limits_hit,
            confinement=self.confinement,
            log=base64.b64encode(bytes(log.data)).decode() if plan.keep_log else "",
            error=error,
        )

    def _end(
        self, process: subprocess.Popen[bytes], init: int | None, cgroup: RunCgroup | None
    ) -> None:
        """End the run: its PID namespace's init, so the kernel ends everything in it."""
        if init is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            process.kill()  # bubblewrap itself; --die-with-parent ends the rest
        if cgroup is not None:
            cgroup.kill()

    def _ensure_ended(self, cgroup: RunCgroup | None) -> str | None:
        """None once no process of the run is left; else why (and nothing is released)."""

        def left() -> set[int]:
            pids = cgroup.tasks() if cgroup is not None else set()
            return pids | _uid_processes(self.plan.uid)

        deadline = time.monotonic() + EXIT_GRACE_S
        while pids := left():
            if time.monotonic() > deadline:
                return f"processes of the run did not end: {sorted(pids)[:10]}"
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        return None


def _full(rw: Path) -> bool:
    """Whether the run's tmpfs has no block or no inode left."""
    disk = os.statvfs(rw)
    return disk.f_bavail == 0 or disk.f_favail == 0


def _sandbox_init(info_read: int, deadline: float) -> int | None:
    """The host pid of the sandbox's init, from bubblewrap's --info-fd (None if it did
    not say by ``deadline``)."""
    data = b""
    with os.fdopen(info_read, "rb", buffering=0) as info:
        while True:
            ready, _, _ = select.select([info], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = info.read(4096)
            if not chunk:
                break
            data += chunk
    with contextlib.suppress(ValueError, TypeError, KeyError):
        pid = json.loads(data)["child-pid"]
        if isinstance(pid, int) and pid > 1:
            return pid
    return None


READ_NO_FOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK  # no FIFO blocks the walk
# The walk holds a descriptor (and a generator frame) per level: bounded, a function's
# 1,500 nested directories neither crash it nor exhaust its descriptors; a longer name
# than any client's paths allow is no output either.
MAX_OUTPUT_DEPTH = 32  # directories between an output's own and a file
# What a record names an object in (``protocol.records.MAX_PATH``), the output's id
# and "/" included: the sandbox released names of up to 1,024 bytes *below* the output,
# and one of 1,016 to 1,024 was sealed, listed and signed, and failed every download of
# the output (found by h16's red team).
MAX_OUTPUT_NAME = MAX_PATH  # bytes of ``<output id>/<file's name below it>``
# What no output file may be named, and is left out: the name an output's download
# ends with, its manifest (``uploads.MANIFEST_NAME``: a file of that name made the
# output's download fail, the Worker refusing a second record of it), and any name
# with a backslash, which the sealed store refuses (``store.check_object_name``):
# that refusal ended the run and quoted the name, which is the function's plaintext,
# in the room's status, which the Controller reads in the clear.
RESERVED_OUTPUT_NAME = ".manifest"
# Nor a name with a character a terminal acts on or does not show (ESC, CR, a
# bidirectional override, a zero-width space: ``text.unsafe_character``): the function's
# author chose it, and each recipient's terminal listed it raw (``ls`` prints U+202E as
# it is, so ``report\u202ecsv.exe`` reads ``reportexe.csv``); and no two files of an
# output that a case- or normalisation-insensitive disk holds as one (``a.csv`` and
# ``A.csv``, ``café`` in NFC and NFD, ``a`` and ``A/b``: ``text.clashing``), which
# failed the download of a recipient on macOS or Windows every time, or let one
# file stand for the other: all of them are left out (h19's red team). Nor a part that
# begins with "-" (``tar cf all.tar *`` in the download ran ``--checkpoint-action``)
# or folds like ".git" (a repository's config names commands git runs):
# ``text.name_problem``.


def _releasable(relative: str) -> bool:
    """Whether an output file named ``relative`` (below its output) can be released."""
    return (
        "\\" not in relative and relative != RESERVED_OUTPUT_NAME and name_problem(relative) is None
    )


def _clashing(outputs: Path, output_ids: list[str]) -> tuple[frozenset[str], int]:
    """The files :func:`_walk_outputs` would release whose names clash with another's on
    a disk that ignores case and normalisation (``text.clashing``): every one of them;
    and how many files it leaves out for their names, these included."""
    names: list[str] = []
    unnamed: list[str] = []
    for name, fd in _walk_outputs(outputs, output_ids, unnamed=unnamed):
        os.close(fd)
        names.append(name)
    clashes = frozenset(clashing(names))
    return clashes, len(unnamed) + len(clashes)


def _walk_outputs(
    outputs: Path,
    output_ids: list[str],
    left_out: frozenset[str] = frozenset(),
    unnamed: list[str] | None = None,
) -> Iterator[tuple[str, int]]:
    """(relative name, open fd) of every regular file under each output, by descriptors:
    no symlink is followed at any depth, and special files and links are left out, as
    are files deeper than :data:`MAX_OUTPUT_DEPTH`, named (with their output's id) longer
    than :data:`MAX_OUTPUT_NAME`, named as no output file may be (:func:`_releasable`),
    or named in ``left_out`` (``<output id>/<relative>``: :func:`_clashing`); ``unnamed``
    gets the names of the regular files left out for their names."""
    root = os.open(outputs, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for output_id in sorted(output_ids):
            try:
                top = os.open(output_id, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root)
            except OSError:
                continue
            try:
                walk = os.fwalk(".", dir_fd=top, follow_symlinks=False)
                for directory, directories, files, dir_fd in walk:
                    if directory.count("/") >= MAX_OUTPUT_DEPTH:
                        directories.clear()  # topdown: the walk goes no deeper
                    for name in sorted(files):
                        relative = os.path.normpath(os.path.join(directory, name))
                        named = len(os.fsencode(f"{output_id}/{relative}"))
                        unreleasable = named > MAX_OUTPUT_NAME or not _releasable(relative)
                        if f"{output_id}/{relative}" in left_out:
                            continue
                        try:
                            fd = os.open(name, READ_NO_FOLLOW, dir_fd=dir_fd)
                        except OSError:
                            continue  # a symlink (ELOOP) or gone
                        info = os.fstat(fd)
                        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or unreleasable:
                            os.close(fd)
                            if unreleasable and unnamed is not None and stat.S_ISREG(info.st_mode):
                                unnamed.append(relative)
                            continue
                        yield f"{output_id}/{relative}", fd
            finally:
                os.close(top)
    finally:
        os.close(root)


def _size(outputs: Path, output_ids: list[str], left_out: frozenset[str]) -> int:
    """The total size of the files that would be released (sparse ones in full)."""
    total = 0
    for _name, fd in _walk_outputs(outputs, output_ids, left_out):
        total += os.fstat(fd).st_size
        os.close(fd)
    return total


def _write_outputs(
    outputs: Path, output_ids: list[str], left_out: frozenset[str], out: IO[bytes]
) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, fd in _walk_outputs(outputs, output_ids, left_out):
            with os.fdopen(fd, "rb") as handle:
                try:
                    name.encode()
                except UnicodeEncodeError:
                    continue  # not UTF-8: no object name can carry it
                member = tarfile.TarInfo(name)
                member.size = os.fstat(handle.fileno()).st_size
                member.mode = 0o644
                tar.addfile(member, handle)


def main() -> int:
    plan = RunPlan.from_json(sys.stdin.buffer.read())
    out = sys.stdout.buffer
    supervisor = Supervisor(plan)
    try:
        return supervisor.run(out)
    except (SupervisorError, OSError) as error:
        failure = str(error)
    except Exception as error:  # noqa: BLE001 - a fault of this code: said, not a clean run
        failure = f"the supervisor failed: {type(error).__name__}: {error}"
    if not supervisor.reported:  # else the Worker finds the outputs' stream cut short
        report = RunReport(status="failed", exit_code=None, seconds=0.0, error=failure)
        out.write(report.to_json() + b"\n")
        out.flush()
    return 1


if __name__ == "__main__":
    sys.exit(main())
