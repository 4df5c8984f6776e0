"""The run's syscall filter as built (the sandbox tests run functions under it)."""

from __future__ import annotations

import os

import pytest

pyseccomp = pytest.importorskip("pyseccomp", reason="libseccomp is not installed")

from cleanroom.enclave.syscalls import DENIED, denied_calls, filter_fd  # noqa: E402


def test_every_denied_call_exists_on_this_architecture() -> None:
    """A name libseccomp cannot place here would be a rule that denies nothing."""
    arch = pyseccomp.system_arch()
    numbers = {name: pyseccomp.resolve_syscall(arch, name) for name in denied_calls()}
    assert {name: number for name, number in numbers.items() if number < 0} == {}


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
