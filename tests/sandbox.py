"""What the tests that run functions share: a sandbox uid from the host's registry.

Functions run in bubblewrap as a uid of their own (needs root, bubblewrap and
util-linux). Where that is not possible the tests skip, and under CI=true they fail.
Every uid comes from the same host-wide registry the compute servers use, so these
tests never share a uid with a compute server or another suite running beside them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cleanroom.enclave.errors import RunError
from cleanroom.enclave.runner import Sandbox, installed_runtime, sandbox
from cleanroom.sandbox_ids import SandboxIds


def require_sandbox() -> None:
    """Skip (fail under CI=true) when this machine cannot confine a function."""
    try:
        if os.geteuid() != 0:
            raise RunError("run-isolation", "root", os.geteuid(), "not root")
        sandbox(1 << 30)
        installed_runtime("python3.11")
    except RunError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must be able to confine functions: {error}")
        pytest.skip(f"functions cannot be confined here: {error}")


@contextlib.contextmanager
def sandbox_uid() -> Iterator[int]:
    """A uid of the host registry, for the duration of the block (then killed and freed)."""
    owner = Path(tempfile.mkdtemp(prefix="cleanroom-test-uid-"))
    ids = SandboxIds()
    uid = ids.allocate(owner)
    try:
        yield uid
    finally:
        ids.release(uid, owner)
        owner.rmdir()


@contextlib.contextmanager
def confined() -> Iterator[Sandbox]:
    require_sandbox()
    with sandbox_uid() as uid:
        yield sandbox(uid)
