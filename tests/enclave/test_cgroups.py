"""Finding and using a run's control group, on cgroup v1 and v2 layouts.

The real hierarchy of this machine (v1 here) is exercised by tests/enclave/
test_sandbox.py through every limit; these tests check the layout logic on fake
cgroup trees, so the v2 path (modern hosts) is checked too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cleanroom.enclave.cgroups import (
    CgroupLimits,
    CgroupUnavailable,
    CgroupV1,
    CgroupV2,
    nice_weight,
    run_cgroups,
    tcp_share,
)

LIMITS = CgroupLimits(memory_bytes=256 << 20, tasks=64)
WEIGHTED = CgroupLimits(memory_bytes=256 << 20, tasks=64, cpu_nice=10)


def mountinfo(*mounts: tuple[str, str, str]) -> str:
    """Lines of /proc/self/mountinfo for (fstype, mount point, super options)."""
    return "\n".join(
        f"{30 + n} 23 0:{30 + n} / {point} rw,relatime - {fstype} {fstype} {options}"
        for n, (fstype, point, options) in enumerate(mounts)
    )


def test_v2_with_delegated_controllers_is_preferred(tmp_path: Path) -> None:
    own = tmp_path / "unified" / "system.slice" / "cleanroom.service"
    own.mkdir(parents=True)
    (own / "cgroup.subtree_control").write_text("cpu memory pids\n")
    group = run_cgroups(
        "run-1",
        LIMITS,
        proc_self_cgroup="0::/system.slice/cleanroom.service\n",
        mountinfo=mountinfo(("cgroup2", str(tmp_path / "unified"), "rw")),
    )
    assert isinstance(group, CgroupV2)
    assert group.directory == own / "run-1"
    assert (own / "run-1" / "memory.max").read_text() == str(256 << 20)
    assert (own / "run-1" / "pids.max").read_text() == "64"
    # one kill of the whole run at its limit: the kernel names each task it kills (h30)
    assert (own / "run-1" / "memory.oom.group").read_text() == "1"
    assert group.procs_files() == [own / "run-1" / "cgroup.procs"]


def test_v2_limits_hit_and_usage_are_read_from_its_files(tmp_path: Path) -> None:
    group = CgroupV2(tmp_path)
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (tmp_path / "pids.events").write_text("max 0\n")
    (tmp_path / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    (tmp_path / "memory.peak").write_text("123456\n")
    (tmp_path / "cgroup.procs").write_text("")
    assert group.hit() == {"memory"}
    usage = group.usage()
    assert usage.cpu_seconds == 2.5 and usage.memory_peak_bytes == 123456
    (tmp_path / "pids.events").write_text("max 2\n")
    assert group.hit() == {"memory", "processes"}


def test_v2_without_delegation_falls_back_to_v1(tmp_path: Path) -> None:
    own = tmp_path / "unified"
    own.mkdir()
    (own / "cgroup.subtree_control").write_text("cpu\n")
    for controller in ("memory", "pids", "cpuacct"):
        (tmp_path / controller / "box").mkdir(parents=True)
    group = run_cgroups(
        "run-2",
        LIMITS,
        proc_self_cgroup="4:memory:/box\n8:pids:/box\n2:cpuacct:/box\n0::/\n",
        mountinfo=mountinfo(
            ("cgroup2", str(own), "rw"),
            ("cgroup", str(tmp_path / "memory"), "rw,memory"),
            ("cgroup", str(tmp_path / "pids"), "rw,pids"),
            ("cgroup", str(tmp_path / "cpuacct"), "rw,cpuacct"),
        ),
    )
    assert isinstance(group, CgroupV1)
    assert group.memory == tmp_path / "memory" / "box" / "run-2"
    # TCP buffers, which v1 charges to the group only when this is set, and apart from
    # its memory: an eighth of the run's memory limit, the rest the rest
    assert (group.memory / "memory.kmem.tcp.limit_in_bytes").read_text() == str(32 << 20)
    assert (group.memory / "memory.limit_in_bytes").read_text() == str(224 << 20)
    assert (group.pids / "pids.max").read_text() == "64"
    # no kill by the kernel at the limit (it names each task it kills, h30): the group
    # signals an eventfd, and the supervisor ends the run
    assert (group.memory / "memory.oom_control").read_text() == "1"
    assert group.oom_event is not None
    event, _control = (group.memory / "cgroup.event_control").read_text().split()
    assert int(event) == group.oom_event
    assert not group.out_of_memory()
    os.eventfd_write(group.oom_event, 1)  # what the kernel does at the limit
    assert group.out_of_memory() and group.hit() == {"memory"}
    assert group.out_of_memory()  # once seen, for the rest of the run


def test_a_v1_group_waiting_at_its_memory_limit_is_out_of_memory(tmp_path: Path) -> None:
    memory = tmp_path / "memory"
    memory.mkdir()
    (memory / "memory.oom_control").write_text("oom_kill_disable 1\nunder_oom 0\noom_kill 0\n")
    group = CgroupV1(memory, tmp_path / "pids", None)
    assert not group.out_of_memory()
    (memory / "memory.oom_control").write_text("oom_kill_disable 1\nunder_oom 1\noom_kill 0\n")
    assert group.out_of_memory()


def test_no_memory_controller_says_why(tmp_path: Path) -> None:
    (tmp_path / "pids").mkdir()
    with pytest.raises(CgroupUnavailable, match="memory"):
        run_cgroups(
            "run-3",
            LIMITS,
            proc_self_cgroup="8:pids:/\n",
            mountinfo=mountinfo(("cgroup", str(tmp_path / "pids"), "rw,pids")),
        )


def test_a_container_view_of_a_hierarchy_is_not_used(tmp_path: Path) -> None:
    """A cgroup mount of a sub-tree (root field not "/") does not show where we are."""
    line = f"35 31 0:32 /docker/abc {tmp_path} rw - cgroup cgroup rw,memory"
    with pytest.raises(CgroupUnavailable):
        run_cgroups("run-4", LIMITS, proc_self_cgroup="4:memory:/docker/abc\n", mountinfo=line)


# ------------------------------------------------------------------ the CPU weight


def test_the_weight_of_a_nice_value_is_the_kernels() -> None:
    """kernel/sched/core.c, sched_prio_to_weight: nice 0, 10 and 19."""
    assert [nice_weight(n) for n in (0, 10, 19)] == [1024, 110, 15]


def _v1_tree(tmp_path: Path, *hierarchies: str) -> tuple[str, str]:
    """Fake v1 hierarchies (mounted whole) with this process in /box of each."""
    lines, mounts = [], []
    for number, options in enumerate(hierarchies):
        point = tmp_path / options.replace(",", "+")
        (point / "box").mkdir(parents=True)
        lines.append(f"{number + 2}:{options}:/box")
        mounts.append(("cgroup", str(point), f"rw,{options}"))
    return "\n".join(lines) + "\n", mountinfo(*mounts)


def test_v1_gives_the_run_its_own_cpu_group_with_the_weight(tmp_path: Path) -> None:
    own, mounts = _v1_tree(tmp_path, "memory", "pids", "cpuacct", "cpu")
    group = run_cgroups("run-5", WEIGHTED, proc_self_cgroup=own, mountinfo=mounts)
    assert isinstance(group, CgroupV1) and group.cpu_weighted
    cpu = tmp_path / "cpu" / "box" / "run-5"
    assert group.cpu == cpu
    assert (cpu / "cpu.shares").read_text() == "110"
    assert cpu / "cgroup.procs" in group.procs_files()  # the run's tasks join it
    (cpu / "cpu.shares").unlink()  # a real group's files go with its directory
    group.remove()
    assert not cpu.exists()


def test_v1_with_cpu_and_cpuacct_mounted_together_uses_one_directory(tmp_path: Path) -> None:
    own, mounts = _v1_tree(tmp_path, "memory", "pids", "cpu,cpuacct")
    group = run_cgroups("run-6", WEIGHTED, proc_self_cgroup=own, mountinfo=mounts)
    assert isinstance(group, CgroupV1) and group.cpu_weighted
    both = tmp_path / "cpu+cpuacct" / "box" / "run-6"
    assert (group.cpuacct, group.cpu) == (both, None)
    assert (both / "cpu.shares").read_text() == "110"
    assert group.procs_files().count(both / "cgroup.procs") == 1


def test_v1_without_a_cpu_hierarchy_is_unweighted_not_refused(tmp_path: Path) -> None:
    own, mounts = _v1_tree(tmp_path, "memory", "pids", "cpuacct")
    group = run_cgroups("run-7", WEIGHTED, proc_self_cgroup=own, mountinfo=mounts)
    assert isinstance(group, CgroupV1) and not group.cpu_weighted


def test_v2_weighs_the_run_where_the_cpu_controller_is_delegated(tmp_path: Path) -> None:
    for delegated, weighted in (("cpu memory pids", True), ("memory pids", False)):
        own = tmp_path / delegated.replace(" ", "-")
        own.mkdir()
        (own / "cgroup.subtree_control").write_text(delegated + "\n")
        group = run_cgroups(
            "run-8",
            WEIGHTED,
            proc_self_cgroup="0::/\n",
            mountinfo=mountinfo(("cgroup2", str(own), "rw")),
        )
        assert isinstance(group, CgroupV2) and group.cpu_weighted is weighted
        nice = own / "run-8" / "cpu.weight.nice"
        assert (nice.read_text() if nice.exists() else None) == ("10" if weighted else None)


def test_a_cpu_group_that_cannot_be_made_leaves_the_limits_unweighted(tmp_path: Path) -> None:
    """The weight is wanted, not required: the memory and task limits still hold."""
    own, mounts = _v1_tree(tmp_path, "memory", "pids", "cpu")
    (tmp_path / "cpu" / "box").rmdir()  # the hierarchy is mounted; our group is not there
    group = run_cgroups("run-9", WEIGHTED, proc_self_cgroup=own, mountinfo=mounts)
    assert isinstance(group, CgroupV1) and not group.cpu_weighted and group.cpu is None
    assert (group.pids / "pids.max").read_text() == "64"
    assert len(group.procs_files()) == 2


def test_v1_tcp_share_is_part_of_the_memory_limit_and_at_most_64_mib() -> None:
    """cgroup v1 counts a run's TCP buffers apart from its memory: the share it keeps
    for them comes out of the memory limit, and is bounded, since each run's buffers
    also count in tcp_mem, one count for the whole host (found by h16's red team)."""
    assert tcp_share(64 << 20) == 8 << 20
    assert tcp_share(256 << 20) == 32 << 20
    assert tcp_share(2048 << 20) == 64 << 20
    assert tcp_share(1 << 40) == 64 << 20


def test_v1_memory_peak_counts_its_tcp_buffers(tmp_path: Path) -> None:
    memory = tmp_path / "memory"
    memory.mkdir()
    (memory / "memory.max_usage_in_bytes").write_text("1000\n")
    (memory / "memory.kmem.tcp.max_usage_in_bytes").write_text("234\n")
    assert CgroupV1(memory, tmp_path / "pids", None).usage().memory_peak_bytes == 1234
