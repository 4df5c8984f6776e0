"""The enclave processes a compute server runs: one Attester, one Worker per clean room.

The Controller starts them, relays admission between them and afterwards relays
every client message. It handles bytes it cannot read or forge: the Worker checks
its spec and bundle itself, admission is mutual local attestation, and clients
verify the Attester's quote. This module therefore imports nothing from
``cleanroom.enclave`` or ``cleanroom.client``: the Controller never holds a key
or plaintext.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger("cleanroom.controller")

START_TIMEOUT_S = 30.0
SANDBOX_UID_BASE = 61_000


class EnclaveProcessError(Exception):
    """An enclave process did not start, or answered with an error during admission."""

    def __init__(self, message: str, status: int = 502, body: Any = None) -> None:
        super().__init__(message)
        self.status, self.body = status, body


@dataclass
class EnclaveProcess:
    """A running enclave process and the HTTP client that reaches its socket."""

    name: str
    socket: Path
    process: subprocess.Popen[bytes]
    client: httpx.AsyncClient

    @classmethod
    def start(cls, name: str, socket: Path, argv: list[str], log_path: Path) -> EnclaveProcess:
        socket.unlink(missing_ok=True)
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, *argv],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
        transport = httpx.AsyncHTTPTransport(uds=str(socket))
        client = httpx.AsyncClient(
            transport=transport, base_url="http://enclave", timeout=httpx.Timeout(60.0)
        )
        return cls(name, socket, process, client)

    async def wait_ready(self, path: str, log_path: Path) -> None:
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
                raise EnclaveProcessError(
                    f"{self.name} exited with {self.process.returncode}: "
                    + (tail[0] if tail else "no output")
                )
            if self.socket.exists():
                with contextlib.suppress(httpx.TransportError):
                    response = await self.client.get(path)
                    if response.status_code == 200:
                        return
            if asyncio.get_running_loop().time() > deadline:
                raise EnclaveProcessError(f"{self.name} did not start in {START_TIMEOUT_S} s")
            await asyncio.sleep(0.05)

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """A JSON call that must succeed (used for admission, which the Controller drives)."""
        try:
            response = await self.client.request(method, path, json=body)
        except httpx.TransportError as error:
            raise EnclaveProcessError(f"{self.name} unreachable: {error}") from error
        if response.status_code >= 400:
            raise EnclaveProcessError(
                f"{self.name} refused {path}: {response.text[:300]}",
                status=response.status_code,
                body=response.json()
                if response.headers.get("content-type", "").endswith("json")
                else None,
            )
        return response.json()

    async def stop(self, grace_s: float = 5.0) -> None:
        await self.client.aclose()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            for _ in range(int(grace_s / 0.05)):
                if self.process.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
        await asyncio.get_running_loop().run_in_executor(None, self.process.wait)


@dataclass
class Room:
    name: str
    worker: EnclaveProcess
    worker_id: str
    directory: Path


@dataclass
class EnclaveHost:
    """Starts and tracks the enclave processes of one compute server."""

    data_dir: Path
    allow_insecure_no_isolation: bool = False
    rooms: dict[str, Room] = field(default_factory=dict)
    attester: EnclaveProcess | None = None
    _next_uid: int = SANDBOX_UID_BASE
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def platform_dir(self) -> Path:
        return self.data_dir / "simulated-platform"

    @property
    def _sockets(self) -> Path:
        return self.data_dir / "sockets"

    async def start(self) -> None:
        for directory in (self.data_dir, self._sockets, self.data_dir / "rooms"):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        log_path = self.data_dir / "attester.log"
        self.attester = EnclaveProcess.start(
            "Attester",
            self._sockets / "attester.sock",
            [
                "-m", "cleanroom.enclave.attester_service",
                "--socket", str(self._sockets / "attester.sock"),
                "--platform-dir", str(self.platform_dir),
                "--init-platform",
            ],
            log_path,
        )  # fmt: skip
        await self.attester.wait_ready("/target-info", log_path)

    def _attester(self) -> EnclaveProcess:
        if self.attester is None or self.attester.process.poll() is not None:
            raise EnclaveProcessError("the Attester is not running", status=503)
        return self.attester

    async def deploy(self, name: str, spec_json: bytes, bundle: bytes) -> Room:
        """Start the clean room's Worker and relay its admission by the Attester."""
        async with self._lock:
            if name in self.rooms:
                raise EnclaveProcessError(f"clean room {name!r} exists here", status=409)
            uid = self._next_uid
            self._next_uid += 1
            directory = self.data_dir / "rooms" / name
            directory.mkdir(mode=0o700, parents=True, exist_ok=False)
        (directory / "spec.json").write_bytes(spec_json)
        (directory / "function.tar").write_bytes(bundle)
        # Unix socket paths are limited to 107 bytes: name the socket by a short hash.
        socket = self._sockets / f"w-{hashlib.sha256(name.encode()).hexdigest()[:16]}.sock"
        log_path = directory / "worker.log"
        argv = [
            "-m", "cleanroom.enclave.worker_service",
            "--socket", str(socket),
            "--platform-dir", str(self.platform_dir),
            "--room-dir", str(directory),
            "--spec", str(directory / "spec.json"),
            "--bundle", str(directory / "function.tar"),
            "--sandbox-uid", str(uid),
        ]  # fmt: skip
        if self.allow_insecure_no_isolation:
            argv.append("--allow-insecure-no-isolation")
        worker = EnclaveProcess.start(f"Worker {name}", socket, argv, log_path)
        try:
            await worker.wait_ready("/state", log_path)
            attester = self._attester()
            target = await attester.call("GET", "/target-info")
            request = await worker.call("POST", "/admission/request", target)
            admitted = await attester.call("POST", "/admit", request)
            await worker.call("POST", "/admission/complete", {"report": admitted["report"]})
        except BaseException:
            await worker.stop()
            _remove(directory)
            raise
        room = Room(name, worker, admitted["worker_id"], directory)
        (directory / "room.json").write_text(
            json.dumps({"name": name, "worker_id": room.worker_id, "sandbox_uid": uid})
        )
        self.rooms[name] = room
        log.info("clean room %s: Worker %s admitted", name, room.worker_id)
        return room

    def room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            raise EnclaveProcessError(f"no clean room {name!r} on this compute server", 404)
        if room.worker.process.poll() is not None:
            raise EnclaveProcessError(
                f"the Worker of {name!r} exited ({room.worker.process.returncode}); "
                "its data is gone by design: redeploy",
                status=410,
            )
        return room

    async def attest(self, name: str, nonce: str) -> Any:
        room = self.room(name)
        return await self._attester().call(
            "POST", "/attest", {"worker_id": room.worker_id, "nonce": nonce}
        )

    async def delete(self, name: str) -> None:
        room = self.rooms.pop(name, None)
        if room is None:
            raise EnclaveProcessError(f"no clean room {name!r} on this compute server", 404)
        with contextlib.suppress(EnclaveProcessError):
            await self._attester().call("POST", "/forget", {"worker_id": room.worker_id})
        if room.worker.process.poll() is None:
            with contextlib.suppress(EnclaveProcessError):
                await room.worker.call("POST", "/delete")
        await room.worker.stop()
        _remove(room.directory)

    async def close(self) -> None:
        for room in list(self.rooms.values()):
            await room.worker.stop(grace_s=2.0)
        self.rooms.clear()
        if self.attester is not None:
            await self.attester.stop(grace_s=2.0)


def _remove(directory: Path) -> None:
    """Remove a room's directory: by now only ciphertext, the spec and the bundle."""
    shutil.rmtree(directory, ignore_errors=True)
