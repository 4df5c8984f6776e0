"""Finding and using a run's control group, on cgroup v1 and v2 layouts.

The real hierarchy of this machine (v1 here) is exercised by tests/enclave/
test_sandbox.py through every limit; these tests check the layout logic on fake
cgroup trees, so the v2 path (modern hosts) is checked too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cleanroom.enclave.cgroups import (
    CgroupLimits,
    CgroupUnavailable,
    CgroupV1,
    CgroupV2,
    run_cgroups,
)

LIMITS = CgroupLimits(memory_bytes=256 << 20, tasks=64)


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
    assert (group.memory / "memory.limit_in_bytes").read_text() == str(256 << 20)
    assert (group.pids / "pids.max").read_text() == "64"


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
