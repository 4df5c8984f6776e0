"""Control groups for one run of a function: its memory, its tasks, its CPU time.

A run gets its own control group, created below the cgroup its supervisor already
lives in, so the host's own accounting still covers it. Two layouts exist:

- cgroup v2 (modern hosts): one directory with ``memory.max``, ``memory.swap.max``,
  ``pids.max`` and, where the ``cpu`` controller is delegated, ``cpu.weight.nice``;
  ``memory.events`` and ``pids.events`` say which limit was hit; ``cpu.stat`` gives CPU
  time; ``cgroup.kill`` ends every task at once; ``memory.oom.group`` makes the kernel's
  kill at the memory limit one of the whole run.
- cgroup v1 (older hosts, and this project's CI machines): one directory in each of
  the ``memory``, ``pids``, ``cpuacct`` and ``cpu`` hierarchies, with the same meaning
  under v1's names (``memory.limit_in_bytes``, ``memory.oom_control``'s ``oom_kill``,
  ``cpu.shares``, …); the kernel's kill at the memory limit is off
  (``memory.oom_control``): a task that needs memory there waits, and the supervisor
  ends the run.

Why no task of a run is killed alone at its limit: the kernel logs each kill with the
task's name (``Killed process N (name)``, not rate-limited), 15 bytes the function
chooses (``PR_SET_NAME``, or the name of a link it runs). A function that let a child
named by its input be killed, again and again, put about 300 B/s of it in the host's
kernel log (h26's red team, h30's fix).

The CPU weight is what makes a run yield to the enclave services. A niceness alone does
not, where the kernel groups processes by session (``sched_autogroup_enabled``, the
default of many distributions): there a nice value orders processes only within their
session's group, the run's supervisor and its sandbox each start a session, and a
function can start more (``setsid``) or set its group's niceness back to 0. A process
in a CPU control group other than the root is outside every autogroup, and its tasks
cannot leave the group.

Where neither has the memory and pids controllers, :func:`run_cgroups` says why, and
the supervisor falls back to rlimits (and says so in its result).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cleanroom.errors import Error

CGROUP_ROOT = Path("/sys/fs/cgroup")


class CgroupUnavailable(Error):
    """This host offers no usable memory and pids controllers; the message says why."""

    http_status = 500  # this server's own failure, not the request's


@dataclass(frozen=True)
class CgroupLimits:
    memory_bytes: int
    tasks: int
    cpu_nice: int | None = None  # the whole group's CPU weight, as that of a nice value


TCP_SHARE = 8  # a run's TCP buffers: at most this fraction of its memory limit (v1) ...
MAX_TCP_BYTES = 64 << 20  # ... and at most this much


def tcp_share(memory_bytes: int) -> int:
    """What of a run's memory limit cgroup v1 keeps for its TCP buffers, which it counts
    apart from the rest (``memory.kmem.tcp.limit_in_bytes``). At most 64 MiB: each
    run's buffers also count in ``tcp_mem``, one count for the whole host, and 64 MiB
    is plenty for a function's own services on its loopback (a sender whose buffers are
    full waits)."""
    return min(memory_bytes // TCP_SHARE, MAX_TCP_BYTES)


NICE_0_WEIGHT = 1024  # the kernel's weight of nice 0 (cgroup v1's default cpu.shares)


def nice_weight(nice: int) -> int:
    """The CPU weight of ``nice``: 1.25x less per step from nice 0's, as the kernel's
    ``sched_prio_to_weight`` is built. The table differs from this by at most 2 % and
    equals it at nice 0, 10 and 19; at least 2, cgroup v1's least ``cpu.shares``."""
    return max(2, round(NICE_0_WEIGHT / 1.25**nice))


@dataclass(frozen=True)
class CgroupUsage:
    memory_peak_bytes: int | None
    cpu_seconds: float | None


class RunCgroup(Protocol):
    """The control group of one run (see the module docstring)."""

    kind: str
    cpu_weighted: bool  # the group has the run's CPU weight (not where no cpu controller)

    def procs_files(self) -> list[Path]:
        """The ``cgroup.procs`` files a process writes its pid to, to join."""
        ...

    def tasks(self) -> set[int]:
        """Every pid in the group."""
        ...

    def hit(self) -> set[str]:
        """The limits hit so far: ``memory`` (an OOM kill), ``processes`` (a refused fork)."""
        ...

    def out_of_memory(self) -> bool:
        """The run reached its memory limit with nothing left to reclaim: it must end
        (v1: its tasks wait there for ever; v2: the kernel has killed them all)."""
        ...

    def usage(self) -> CgroupUsage: ...

    def kill(self) -> None:
        """SIGKILL every task of the group."""
        ...

    def remove(self) -> None:
        """Remove the group (it must be empty)."""
        ...


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _keyed(path: Path) -> dict[str, int]:
    """A flat-keyed file (``key value`` per line), such as ``memory.events``."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if value.strip().lstrip("-").isdigit():
                values[key] = int(value)
    return values


def _pids(procs: Path) -> set[int]:
    with contextlib.suppress(OSError):
        return {int(line) for line in procs.read_text().split()}
    return set()


def _make(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o755)
    except OSError as error:
        raise CgroupUnavailable(f"cannot create {directory}: {error.strerror}") from error


def _remove_dir(directory: Path) -> None:
    # A group empties a moment after its last task is reaped: retry briefly.
    for _ in range(50):
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != errno.EBUSY:
                return
            time.sleep(0.02)


@dataclass
class CgroupV2:
    directory: Path
    kind: str = "cgroup2"
    cpu_weighted: bool = False

    @classmethod
    def create(cls, parent: Path, name: str, limits: CgroupLimits) -> CgroupV2:
        available = set((parent / "cgroup.subtree_control").read_text().split())
        missing = {"memory", "pids"} - available
        if missing:
            raise CgroupUnavailable(
                f"{parent} does not delegate the {', '.join(sorted(missing))} controller(s) "
                "to its children (cgroup.subtree_control)"
            )
        group = cls(parent / name)
        _make(group.directory)
        try:
            (group.directory / "memory.max").write_text(str(limits.memory_bytes))
            with contextlib.suppress(FileNotFoundError):  # no swap accounting on this host
                (group.directory / "memory.swap.max").write_text("0")
            (group.directory / "pids.max").write_text(str(limits.tasks))
            # One kill of the whole run at its memory limit, never a task alone: each
            # task is named once in the kernel's log, when the run ends (see above).
            (group.directory / "memory.oom.group").write_text("1")
        except OSError as error:
            group.remove()
            raise CgroupUnavailable(f"cannot set limits in {group.directory}: {error}") from error
        if limits.cpu_nice is not None and "cpu" in available:
            # The weight is wanted, not required: without it the run keeps its limits.
            with contextlib.suppress(OSError):
                (group.directory / "cpu.weight.nice").write_text(str(limits.cpu_nice))
                group.cpu_weighted = True
        return group

    def procs_files(self) -> list[Path]:
        return [self.directory / "cgroup.procs"]

    def tasks(self) -> set[int]:
        return _pids(self.directory / "cgroup.procs")

    def hit(self) -> set[str]:
        hit = set()
        if self.out_of_memory():
            hit.add("memory")
        if _keyed(self.directory / "pids.events").get("max", 0) > 0:
            hit.add("processes")
        return hit

    def out_of_memory(self) -> bool:
        return _keyed(self.directory / "memory.events").get("oom_kill", 0) > 0

    def usage(self) -> CgroupUsage:
        cpu = _keyed(self.directory / "cpu.stat").get("usage_usec")
        return CgroupUsage(
            memory_peak_bytes=_read_int(self.directory / "memory.peak"),
            cpu_seconds=None if cpu is None else cpu / 1e6,
        )

    def kill(self) -> None:
        try:
            (self.directory / "cgroup.kill").write_text("1")
        except OSError:  # before Linux 5.14: one by one
            _kill_each(self.tasks)

    def remove(self) -> None:
        _remove_dir(self.directory)


@dataclass
class CgroupV1:
    memory: Path
    pids: Path
    cpuacct: Path | None
    cpu: Path | None = None  # None also where ``cpu`` shares ``cpuacct``'s hierarchy
    kind: str = "cgroup-v1"
    cpu_weighted: bool = False
    oom_event: int | None = None  # an eventfd the kernel signals when the group is at its limit
    _out_of_memory: bool = False  # the event was seen (it is read once)

    @classmethod
    def create(cls, parents: Mapping[str, Path], name: str, limits: CgroupLimits) -> CgroupV1:
        missing = {"memory", "pids"} - set(parents)
        if missing:
            raise CgroupUnavailable(
                f"no cgroup v1 hierarchy for the {', '.join(sorted(missing))} controller(s)"
            )
        cpuacct = parents.get("cpuacct")
        group = cls(
            parents["memory"] / name,
            parents["pids"] / name,
            None if cpuacct is None else cpuacct / name,
        )
        created: list[Path] = []
        try:
            for directory in group._directories():
                _make(directory)
                created.append(directory)
            # Nor into TCP buffers: v1 charges a socket's buffers to its group only once
            # this is set (v2 always does). Unset, a function under a 256 MiB limit held
            # 2.2 GiB of loopback buffers nobody read, up to tcp_mem's hard limit, which
            # is one for the whole host: every TCP socket on it was then under pressure.
            # It is a counter of its own, not part of memory.limit_in_bytes: set to the
            # memory limit as well, a function under 256 MiB held 200 MiB of memory and
            # 202 MiB of TCP buffers, and one under the default 2 GiB could queue 2 GiB,
            # past this host's tcp_mem pressure threshold (1.46 GiB), and two runs at once
            # past its hard limit (2.2 GiB). So the buffers get a share of the memory
            # limit (tcp_share), and the rest of the memory the rest.
            share = tcp_share(limits.memory_bytes)
            try:
                (group.memory / "memory.kmem.tcp.limit_in_bytes").write_text(str(share))
            except FileNotFoundError:  # a kernel without it: no buffers are charged
                share = 0
            memory = limits.memory_bytes - share
            (group.memory / "memory.limit_in_bytes").write_text(str(memory))
            # No escape into swap either (absent when the kernel has no swap accounting).
            with contextlib.suppress(FileNotFoundError, PermissionError):
                (group.memory / "memory.memsw.limit_in_bytes").write_text(str(memory))
            (group.pids / "pids.max").write_text(str(limits.tasks))
            # No kill by the kernel at the limit (its log names the task, see above): a
            # task that needs memory there waits, the kernel signals the event, and the
            # supervisor ends the whole run (out_of_memory).
            (group.memory / "memory.oom_control").write_text("1")
            group._watch_oom()
        except (OSError, CgroupUnavailable) as error:
            group._close_event()
            for directory in reversed(created):
                _remove_dir(directory)
            if isinstance(error, CgroupUnavailable):
                raise
            raise CgroupUnavailable(f"cannot set limits in {group.memory}: {error}") from error
        cpu = parents.get("cpu")
        if limits.cpu_nice is not None and cpu is not None:
            group._weigh(cpu / name, nice_weight(limits.cpu_nice))
        return group

    def _watch_oom(self) -> None:
        """Register an eventfd for the group's OOM notification (``cgroup.event_control``):
        unlike ``under_oom``, it stays signalled after the waiting tasks are gone."""
        self.oom_event = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        control = os.open(self.memory / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        try:
            (self.memory / "cgroup.event_control").write_text(f"{self.oom_event} {control}")
        finally:
            os.close(control)

    def _close_event(self) -> None:
        if self.oom_event is not None:
            os.close(self.oom_event)
            self.oom_event = None

    def out_of_memory(self) -> bool:
        if not self._out_of_memory and self.oom_event is not None:
            with contextlib.suppress(BlockingIOError):
                self._out_of_memory = os.eventfd_read(self.oom_event) > 0
        if _keyed(self.memory / "memory.oom_control").get("under_oom", 0) > 0:
            self._out_of_memory = True
        return self._out_of_memory

    def _weigh(self, directory: Path, shares: int) -> None:
        """The run's CPU weight, in ``directory`` of the cpu hierarchy (cpuacct's own where
        both are mounted together). Wanted, not required: without it the run keeps its
        limits, and its result says which it has."""
        separate = directory != self.cpuacct
        try:
            if separate:
                _make(directory)
            (directory / "cpu.shares").write_text(str(shares))
        except (OSError, CgroupUnavailable):
            if separate:
                _remove_dir(directory)
            return
        self.cpu = directory if separate else None
        self.cpu_weighted = True

    def _directories(self) -> list[Path]:
        optional = (self.cpuacct, self.cpu)
        return [self.memory, self.pids, *(d for d in optional if d is not None)]

    def procs_files(self) -> list[Path]:
        return [directory / "cgroup.procs" for directory in self._directories()]

    def tasks(self) -> set[int]:
        return _pids(self.memory / "cgroup.procs") | _pids(self.pids / "cgroup.procs")

    def hit(self) -> set[str]:
        hit = set()
        if self.out_of_memory() or _keyed(self.memory / "memory.oom_control").get("oom_kill", 0):
            hit.add("memory")
        elif (_read_int(self.memory / "memory.failcnt") or 0) > 0 and not self.tasks():
            # Kernels before 4.13 do not count OOM kills; a failed charge is the sign.
            hit.add("memory")
        if _keyed(self.pids / "pids.events").get("max", 0) > 0:
            hit.add("processes")
        return hit

    def usage(self) -> CgroupUsage:
        cpu = None if self.cpuacct is None else _read_int(self.cpuacct / "cpuacct.usage")
        memory = _read_int(self.memory / "memory.max_usage_in_bytes")
        tcp = _read_int(self.memory / "memory.kmem.tcp.max_usage_in_bytes")
        return CgroupUsage(
            # v1's TCP buffers are counted apart from its memory (see create)
            memory_peak_bytes=None if memory is None else memory + (tcp or 0),
            cpu_seconds=None if cpu is None else cpu / 1e9,
        )

    def kill(self) -> None:
        _kill_each(self.tasks)

    def remove(self) -> None:
        self._close_event()
        for directory in reversed(self._directories()):
            _remove_dir(directory)


def _kill_each(tasks: Callable[[], set[int]]) -> None:
    """SIGKILL every task until none is left (a forking task may add one meanwhile)."""
    for _ in range(100):
        pids = tasks()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


@dataclass(frozen=True)
class _Membership:
    controllers: frozenset[str]
    path: str  # relative to the hierarchy's root, starting with "/"


def _memberships(proc_self_cgroup: str) -> list[_Membership]:
    found = []
    for line in proc_self_cgroup.splitlines():
        _hierarchy, controllers, path = line.split(":", 2)
        found.append(_Membership(frozenset(filter(None, controllers.split(","))), path))
    return found


def _mounts(mountinfo: str) -> Iterator[tuple[str, Path, frozenset[str]]]:
    """(filesystem type, mount point, super options) of every cgroup mount."""
    for line in mountinfo.splitlines():
        fields = line.split()
        separator = fields.index("-")
        fstype, options = fields[separator + 1], fields[separator + 3]
        if fstype in ("cgroup", "cgroup2"):
            root, mount_point = fields[3], Path(fields[4])
            if root == "/":  # a hierarchy mounted whole (not a container's sub-tree view)
                yield fstype, mount_point, frozenset(options.split(","))


def run_cgroups(
    name: str,
    limits: CgroupLimits,
    *,
    proc_self_cgroup: str | None = None,
    mountinfo: str | None = None,
) -> RunCgroup:
    """A new control group named ``name`` with ``limits``, below this process's own.

    Prefers cgroup v2 when its hierarchy delegates memory and pids here, else v1;
    CgroupUnavailable says why neither works.
    """
    if proc_self_cgroup is None:
        proc_self_cgroup = Path("/proc/self/cgroup").read_text()
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    memberships = _memberships(proc_self_cgroup)
    reasons = []
    v1_parents: dict[str, Path] = {}
    for fstype, mount_point, options in _mounts(mountinfo):
        if fstype == "cgroup2":
            own = next((m for m in memberships if not m.controllers), None)
            if own is None:
                continue
            parent = mount_point / own.path.lstrip("/")
            try:
                return CgroupV2.create(parent, name, limits)
            except (CgroupUnavailable, OSError) as error:
                reasons.append(f"cgroup v2: {error}")
            continue
        for controller in ("memory", "pids", "cpuacct", "cpu"):
            if controller in options:
                member = next((m for m in memberships if controller in m.controllers), None)
                if member is not None:
                    v1_parents[controller] = mount_point / member.path.lstrip("/")
    try:
        return CgroupV1.create(v1_parents, name, limits)
    except CgroupUnavailable as error:
        reasons.append(f"cgroup v1: {error}")
    raise CgroupUnavailable("; ".join(reasons))
