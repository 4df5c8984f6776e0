"""The run's syscall filter as built (the sandbox tests run functions under it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pyseccomp  # a dependency, over the system's libseccomp: the Worker needs both
import pytest

from cleanroom.enclave import supervisor
from cleanroom.enclave.supervisor import Limits, RunPlan, Supervisor, SupervisorError
from cleanroom.enclave.syscalls import DENIED, DENIED_BY_NUMBER, denied_calls, filter_fd


def test_every_denied_call_exists_on_this_architecture() -> None:
    """A name libseccomp cannot place here would be a rule that denies nothing."""
    arch = pyseccomp.system_arch()
    numbers = {name: pyseccomp.resolve_syscall(arch, name) for name in denied_calls()}
    assert {name: number for name, number in numbers.items() if number < 0} == {}


def test_a_call_denied_by_number_is_that_call_where_libseccomp_can_name_it() -> None:
    """The numbers are the kernel's, whatever libseccomp knows; where it knows a name,
    the number is its, and the name is not denied twice."""
    arch = pyseccomp.system_arch()
    for name, number in DENIED_BY_NUMBER.items():
        assert name not in denied_calls()
        assert pyseccomp.resolve_syscall(arch, name) in (number, -1), name  # -1: unknown


def test_no_call_is_listed_twice() -> None:
    listed = [name for names in DENIED.values() for name in names]
    assert len(listed) == len(set(listed)) == len(denied_calls())


def test_the_program_is_handed_over_sealed_and_from_its_start() -> None:
    fd = filter_fd()
    try:
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0
        program = os.read(fd, 1 << 16)
        # One struct sock_filter (8 bytes) per instruction: more than one per denied
        # call (each compares the number and returns), plus the architecture check.
        assert len(program) % 8 == 0
        assert len(program) // 8 > len(denied_calls())
        with pytest.raises(PermissionError):  # F_SEAL_WRITE: nobody can change it
            os.pwrite(fd, b"\0" * 8, 0)
    finally:
        os.close(fd)


def test_a_run_whose_filter_cannot_be_built_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The supervisor builds the filter before anything else of the run: if libseccomp
    fails it then (after the Worker's start checked it), bubblewrap is never started."""

    def broken() -> int:
        raise OSError("libseccomp refused a rule")

    started: list[object] = []
    monkeypatch.setattr(supervisor, "syscall_filter", broken)
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a))
    plan = RunPlan(
        function_dir=str(tmp_path), inputs_dir=str(tmp_path), parameters=str(tmp_path / "p"),
        outputs=["output_1"], handler="handler.run", interpreter="/usr/bin/python3",
        runtime_roots=[], uid=1 << 30, stage=str(tmp_path / "stage"),
        limits=Limits(memory_mib=64, processes=8, cpu_s=1, timeout_s=1, disk_mib=1),
    )  # fmt: skip
    with pytest.raises(SupervisorError, match="cannot build the run's syscall filter"):
        Supervisor(plan)._run(stage=None, cgroup=None)  # type: ignore[arg-type]
    assert started == []
