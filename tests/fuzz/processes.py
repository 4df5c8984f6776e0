"""The Attester and an admitted Worker as real processes, reached over their Unix sockets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cleanroom.protocol.bundle import function_id
from cleanroom.protocol.spec import WorkSpec
from cleanroom.sandbox_ids import FIRST_UID
from tests.fuzz.conftest import make_bundle
from tests.protocol.fixtures import SPEC_DOCUMENT


@dataclass
class Process:
    name: str
    socket: Path
    process: subprocess.Popen[bytes]
    client: httpx.Client
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def start(name: str, socket: Path, argv: list[str], log: Path, ready: str) -> Process:
    socket.unlink(missing_ok=True)
    with log.open("ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", *argv],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=handle,
            start_new_session=True,
        )
    client = httpx.Client(
        transport=httpx.HTTPTransport(uds=str(socket)), base_url="http://enclave", timeout=30
    )
    started = Process(name, socket, process, client, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()[-500:]}")
        if socket.exists():
            try:
                if client.get(ready).status_code == 200:
                    return started
            except httpx.TransportError:
                pass
        time.sleep(0.05)
    started.stop()
    raise RuntimeError(f"{name} did not start")


@dataclass
class Deployment:
    attester: Process
    worker: Process
    spec: WorkSpec
    room_dir: Path
    admission: dict[str, Any]  # the valid admission request (report, claims)
    answer: dict[str, Any]  # the Attester's valid answer (worker_id, report)

    @property
    def worker_id(self) -> str:
        return str(self.answer["worker_id"])


@contextmanager
def deployment(directory: Path) -> Iterator[Deployment]:
    """An Attester and one admitted Worker (the Controller's relay, done by hand)."""
    sockets = directory / "sockets"
    sockets.mkdir(parents=True)
    platform = directory / "platform"
    attester = start(
        "Attester",
        sockets / "attester.sock",
        ["cleanroom.enclave.attester_service", "--socket", str(sockets / "attester.sock"),
         "--platform-dir", str(platform), "--init-platform"],
        directory / "attester.log",
        "/target-info",
    )  # fmt: skip
    worker: Process | None = None
    try:
        bundle = make_bundle(directory / "function")
        document = {**SPEC_DOCUMENT, "function": function_id(bundle)}
        room = directory / "room"
        room.mkdir()
        (room / "spec.json").write_text(json.dumps(document))
        (room / "function.tar").write_bytes(bundle)
        worker = start(
            "Worker",
            sockets / "worker.sock",
            ["cleanroom.enclave.worker_service", "--socket", str(sockets / "worker.sock"),
             "--platform-dir", str(platform), "--room-dir", str(room),
             "--spec", str(room / "spec.json"), "--bundle", str(room / "function.tar"),
             "--sandbox-uid", str(FIRST_UID - 1)],  # runs no function
            room / "worker.log",
            "/state",
        )  # fmt: skip
        target = attester.client.get("/target-info").json()
        request = worker.client.post("/admission/request", json=target).json()
        answer = attester.client.post("/admit", json=request).json()
        done = worker.client.post("/admission/complete", json={"report": answer["report"]})
        assert done.status_code == 200, done.text
        yield Deployment(attester, worker, WorkSpec.parse(document), room, request, answer)
    finally:
        if worker is not None:
            worker.stop()
        attester.stop()
