"""Deploy, feed, run and read a clean room for two parties; find leaked plaintext."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cleanroom.client.access import Access, build_spec
from cleanroom.insecure.localstack import LocalStack
from cleanroom.protocol.bundle import pack
from cleanroom.sandbox_ids import FIRST_UID
from tests.e2e.conftest import User
from tests.e2e.helpers import approve

OVERLAP = """
import json, pathlib

def run():
    a = set(pathlib.Path("inputs/input_1/emails.csv").read_text().split())
    b = set(pathlib.Path("inputs/input_2/emails.csv").read_text().split())
    for output in ("output_1", "output_2"):
        pathlib.Path("outputs", output, "overlap.json").write_text(
            json.dumps({"overlap": len(a & b)})
        )
"""


def deploy(
    alice: User,
    bob: User,
    tmp: Path,
    name: str,
    handler: str = OVERLAP,
    *,
    logs: bool = False,
    memory_mib: int = 256,
    timeout_s: int = 30,
    processes: int | None = None,
    parameters: dict[str, Any] | None = None,
) -> str:
    """Alice deploys ``handler`` for herself and Bob; both approve. The Work-ID."""
    source = tmp / f"function-{name}"
    source.mkdir(parents=True)
    (source / "handler.py").write_text(handler)
    function_id = alice.client.manager.upload_function(pack(source)).function_id
    access = Access(
        inputs={"input_1": alice.user_id, "input_2": bob.user_id},
        outputs={"output_1": alice.user_id, "output_2": bob.user_id},
        logs="output_1" if logs else None,
    )
    spec = build_spec(
        name=name,
        function_id=function_id,
        handler="handler.run",
        access=access,
        deployer_user_id=alice.user_id,
        memory_mib=memory_mib,
        timeout_s=timeout_s,
        processes=processes,
        parameters=parameters or {},
    )
    room = alice.client.manager.deploy(spec)
    assert room.state == "deployed", room
    alice.profile.approve(name, spec.work_id, function_id)
    approve(bob, name)
    return spec.work_id


def secrets_for(name: str) -> tuple[str, str]:
    """Plaintext markers that must never appear outside the clients and the Worker."""
    token = RUN_TOKEN
    return f"alice-secret-{name}-{token}@example.com", f"bob-secret-{name}-{token}@example.com"


def feed(alice: User, bob: User, tmp: Path, name: str) -> tuple[str, str]:
    secret_a, secret_b = secrets_for(name)
    for user, input_id, secret in ((alice, "input_1", secret_a), (bob, "input_2", secret_b)):
        directory = tmp / f"in-{name}-{user.name}"
        directory.mkdir(parents=True)
        (directory / "emails.csv").write_text(f"{secret}\nshared@example.com\n")
        user.client.upload(name, input_id, directory)
    return secret_a, secret_b


def run(alice: User, name: str) -> tuple[str, dict[str, Any], float]:
    """Run and wait; (Worker state, verified receipt, seconds)."""
    started = time.monotonic()
    state = alice.client.run(name, wait=True, poll_s=0.2).state
    seconds = time.monotonic() - started
    return state, alice.client.receipt(name).receipt, seconds


def read(user: User, name: str, output_id: str, tmp: Path) -> dict[str, bytes]:
    target = tmp / f"out-{name}-{user.name}-{output_id}"
    result = user.client.download(name, output_id, target)
    return {path: (result.directory / path).read_bytes() for path in result.files}


def overlap(user: User, name: str, tmp: Path, output_id: str) -> Any:
    return json.loads(read(user, name, output_id, tmp)["overlap.json"])


RUN_TOKEN = secrets.token_hex(6)  # markers of earlier runs must not match
SCANNED = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))


def leaks(markers: Iterable[str], stack: LocalStack) -> list[str]:
    """Every file of the deployment or a function that holds a marker (plaintext).

    Scans the whole deployment (logs, room directories, sealed stores, the platform)
    and, in the machine's temporary directories, whatever a sandbox uid owns (nothing
    should: a function's /tmp is its own tmpfs).
    """
    needles = [m.encode() for m in markers]
    found: set[str] = set()
    paths = list(stack.directory.rglob("*"))
    for root in SCANNED:
        # Other tools' files and pytest's trees, where the clients keep their own data,
        # are not looked at; nor are other suites' (they run beside this one).
        for top in root.iterdir():
            try:
                mine = top.lstat().st_uid >= FIRST_UID
            except OSError:
                continue
            if mine:
                paths += [top, *top.rglob("*")] if top.is_dir() else [top]
    for path in paths:
        try:
            if path.is_symlink() or not path.is_file() or path.stat().st_size > 64 << 20:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        found.update(f"{path}: {n.decode()}" for n in needles if n in data)
    return sorted(found)


def sandbox_processes(uid: int) -> list[int]:
    """Live processes of ``uid`` (a zombie runs nothing: the sandbox's init stays one
    until the host's init reaps it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid and b") Z " not in (entry / "stat").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def room_record(stack: LocalStack, name: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(
        (stack.room_directory("acme", name) / "room.json").read_text()
    )
    return record
