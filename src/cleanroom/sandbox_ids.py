"""Sandbox uids: one per clean room, unique on this host across every compute server.

A room's function runs as a host uid of its own, so that nothing of one room — its
processes, its files, its ``/proc`` entries — is reachable from another's, and so
that cleaning up after one room (kill every process of its uid) can never touch
another room or another server's. Every compute server on a host allocates from one
registry under one lock: :data:`REGISTRY` (root only), where each allocated uid is a
file naming its owner, the room's directory.

A uid is free when no file claims it, no account of the host has it and no process
runs as it. A claim is stale, and taken over, when its owner directory is gone and
no process runs as the uid (a server that was removed with its data directory).

The range is systemd's "unused" one (1879048192 to 2147483647), above the ranges that
systemd, container managers and distributions hand out.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cleanroom.errors import Error

REGISTRY = Path("/run/cleanroom/sandbox-ids")
FIRST_UID = 0x7000_0000
COUNT = 0x0100_0000


class SandboxIdError(Error):
    """No sandbox uid can be had (the range is exhausted, or the registry is unusable)."""

    http_status = 503


def uids_in_use() -> set[int]:
    """The uids of every live process on the host."""
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                found.add(entry.stat(follow_symlinks=False).st_uid)
    return found


def kill_uid(uid: int, *, grace_s: float = 5.0) -> None:
    """SIGKILL every process running as ``uid`` until none is left (or ``grace_s``)."""
    if uid < FIRST_UID:
        raise SandboxIdError(f"refusing to kill the processes of uid {uid}: not a sandbox uid")
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        found = False
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_uid == uid:
                    found = True
                    os.kill(int(entry.name), signal.SIGKILL)
        if not found:
            return
        time.sleep(0.02)


@dataclass(frozen=True)
class SandboxIds:
    """The host's registry of sandbox uids (see the module docstring)."""

    registry: Path = REGISTRY
    first: int = FIRST_UID
    count: int = COUNT

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.registry.mkdir(mode=0o700, parents=True, exist_ok=True)
            with (self.registry / ".lock").open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                yield
        except OSError as error:
            raise SandboxIdError(f"cannot use the uid registry {self.registry}: {error}") from error

    def _entry(self, uid: int) -> Path:
        return self.registry / str(uid)

    def _owner(self, uid: int) -> Path | None:
        try:
            return Path(json.loads(self._entry(uid).read_text())["owner"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return Path("/")  # unreadable: treated as taken, never as ours

    def _write(self, uid: int, owner: Path) -> None:
        temporary = self.registry / f".{uid}.tmp"
        temporary.write_text(json.dumps({"owner": str(owner), "since": int(time.time())}))
        os.replace(temporary, self._entry(uid))

    def allocate(self, owner: Path) -> int:
        """A uid no account, process or other room on this host has, claimed for ``owner``."""
        owner = owner.resolve()
        with self._locked():
            running = uids_in_use()
            for uid in range(self.first, self.first + self.count):
                claimed = self._owner(uid)
                if claimed is not None and (claimed.exists() or uid in running):
                    continue
                if uid in running or _is_account(uid):
                    continue
                self._write(uid, owner)
                return uid
        raise SandboxIdError(f"all {self.count} sandbox uids from {self.first} are in use")

    def claim(self, uid: int, owner: Path) -> bool:
        """Claim ``uid`` for ``owner`` again (a restarted Controller); False if another has it."""
        owner = owner.resolve()
        with self._locked():
            claimed = self._owner(uid)
            if claimed is not None and claimed != owner and claimed.exists():
                return False
            if claimed is None and _is_account(uid):
                return False
            self._write(uid, owner)
            return True

    def owns(self, uid: int, owner: Path) -> bool:
        return self._owner(uid) == owner.resolve()

    def release(self, uid: int, owner: Path) -> None:
        """Kill every process of ``uid`` and free it, if ``owner`` holds it; else nothing.

        A room recovered after the registry was lost (a reboot clears /run) may name a
        uid that another room holds now: that room's processes are never touched.
        """
        owner = owner.resolve()
        with self._locked():
            if self._owner(uid) != owner:
                return
            kill_uid(uid)
            self._entry(uid).unlink(missing_ok=True)


def _is_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True
