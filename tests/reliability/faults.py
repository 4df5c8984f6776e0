"""Killing the processes of a LocalStack with SIGKILL, and starting them again."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from cleanroom.insecure.localstack import LocalStack, _Server, _start

MANAGER, COMPUTE = 0, 1  # LocalStack starts the manager first, then the compute server


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            threads = len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            return
        # Dead once its parent can reap it: a zombie leader whose other threads are
        # still exiting is not yet (waitpid says it runs, and its socket may answer).
        if stat[stat.rindex(")") + 2] in "ZX" and threads <= 1:
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} survived SIGKILL")


def server(stack: LocalStack, which: int) -> _Server:
    return stack._servers[which]


def kill_server(stack: LocalStack, which: int) -> None:
    process = server(stack, which).process
    process.kill()  # SIGKILL: no lifespan shutdown, its enclave processes stay behind
    process.wait()


def restart_compute(stack: LocalStack) -> float:
    """Start the compute server again on the same port and data; seconds until healthy."""
    port = stack.compute_url.rsplit(":", 1)[1]
    argv = [
        "server", "compute", "--port", port, "--data-dir", str(stack.compute_dir),
        "--manager-url", stack.manager_url, "--credentials", str(stack.credentials_file("local")),
    ]  # fmt: skip
    started = time.monotonic()
    new = _start("compute server", argv, stack.compute_url, stack.directory / "compute.log")
    new.wait_healthy("/v1/health")
    stack._servers[COMPUTE] = new
    return time.monotonic() - started


def restart_manager(stack: LocalStack) -> float:
    port = stack.manager_url.rsplit(":", 1)[1]
    argv = ["server", "manager", "--port", port, "--data-dir", str(stack.manager_dir)]
    started = time.monotonic()
    new = _start("management server", argv, stack.manager_url, stack.directory / "manager.log")
    new.wait_healthy("/.well-known/jwks.json")
    stack._servers[MANAGER] = new
    return time.monotonic() - started


def attester_pid(stack: LocalStack) -> int:
    return int(json.loads((stack.compute_dir / "attester.json").read_text())["pid"])


def worker_pid(stack: LocalStack, name: str) -> int:
    record = json.loads((stack.room_directory("acme", name) / "room.json").read_text())
    return int(record["pid"])


def enclave_processes(stack: LocalStack, *, spares: bool = False) -> list[int]:
    """Enclave processes (Attester, Workers) of this stack, by command line; with
    ``spares``, only the spare Workers (started ahead, serving no room yet)."""
    marker = str(stack.compute_dir) + "/"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                words = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat[stat.rindex(")") + 2] in "ZX":
                continue
            if any(w.startswith("cleanroom.enclave.") for w in words) and any(
                w.startswith(marker) for w in words
            ):
                found.append((int(entry.name), "--spare" in words))
    # A spare Worker keeps its command line once it serves a room: the room's record
    # says whose it is.
    rooms = {
        int(json.loads(record.read_text())["pid"])
        for record in (stack.compute_dir / "rooms").glob("*/room.json")
    }
    return sorted(pid for pid, spare in found if (spare and pid not in rooms) == spares)
