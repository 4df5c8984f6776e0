"""A whole deployment on loopback: a management server and a compute server, each
its own process (the compute server starts the Attester and its Workers), and as
many more compute servers as :meth:`LocalStack.add_compute_server` adds.

Used by ``cleanroom demo`` and by the end-to-end tests. Everything lives in one
directory; :meth:`LocalStack.close` stops every process it started.

    with LocalStack(Path(tmp)) as stack:
        alice = stack.add_client("acme")
        ...
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from cleanroom.controller.enclaves import enclave_processes
from cleanroom.errors import Error
from cleanroom.insecure.simulated import SimulatedPlatform
from cleanroom.manager.admin import (
    NewClient,
    ServerCredentials,
    add_server,
    create_client,
    create_project,
)
from cleanroom.manager.database import open_database
from cleanroom.manager.settings import default_database_url

START_TIMEOUT_S = 60.0


def free_port() -> int:
    """A TCP port that was free on loopback a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class StackError(Error):
    """A server of the local deployment did not start."""

    http_status = 500  # this server's own failure, not the request's


@dataclass
class _Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def wait_healthy(self, path: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StackError(f"the {self.name} exited: {self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + path, timeout=2.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise StackError(f"the {self.name} did not answer in {START_TIMEOUT_S} s: {self.tail()}")

    def tail(self, lines: int = 5) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:]) or "no output"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _start(name: str, argv: list[str], url: str, log: Path) -> _Server:
    with log.open("ab") as handle:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "cleanroom.cli.main", *argv],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=handle,
            start_new_session=True,
        )
    return _Server(name, url, process, log)


@dataclass
class ComputeNode:
    """A compute server that :meth:`LocalStack.add_compute_server` started."""

    name: str
    url: str
    directory: Path
    server: _Server


class LocalStack:
    """A manager and one compute server on free loopback ports under ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        advertise_url: str | None = None,
        manager_options: Sequence[str] = (),
        compute_options: Sequence[str] = (),
    ) -> None:
        """``advertise_url``: the compute server's URL as registered at the manager
        (default: its own); tests put a tampering proxy there. ``manager_options`` and
        ``compute_options``: more options of `cleanroom server manager` (e.g. faster
        health checks) and of every `cleanroom server compute` (e.g. ``--max``)."""
        self.directory = directory
        self.manager_dir = directory / "manager"
        self.compute_dir = directory / "compute"
        self.manager_url = f"http://127.0.0.1:{free_port()}"
        self.compute_url = f"http://127.0.0.1:{free_port()}"
        self.advertise_url = advertise_url or self.compute_url
        self.manager_options = list(manager_options)
        self.compute_options = list(compute_options)
        self.compute_nodes: dict[str, ComputeNode] = {}
        self.credentials: dict[str, ServerCredentials] = {}
        """Each compute server's credentials towards the manager, by name."""
        self._servers: list[_Server] = []
        self._database = open_database(default_database_url(self.manager_dir))

    def register(self, url: str, name: str, *, capacity: int = 20) -> Path:
        """Register the compute server ``name`` at ``url`` with the manager, as the
        operator does; its credentials file (what its Controller is started with)."""
        with self._database() as session:
            added = add_server(session, url, name, capacity=capacity)
        self.credentials[name] = added.credentials
        path = self.credentials_file(name)
        path.unlink(missing_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(added.credentials.to_json(), handle)
        return path

    def start(self) -> LocalStack:
        self.directory.mkdir(parents=True, exist_ok=True)
        manager_port = self.manager_url.rsplit(":", 1)[1]
        compute_port = self.compute_url.rsplit(":", 1)[1]
        manager_argv = [
            "server", "manager", "--port", manager_port, "--data-dir", str(self.manager_dir),
            *self.manager_options,
        ]  # fmt: skip
        manager = _start(
            "management server",
            manager_argv,
            self.manager_url,
            self.directory / "manager.log",
        )
        self._servers.append(manager)
        credentials = self.register(self.advertise_url, "local")
        compute_argv = [
            "server", "compute", "--port", compute_port, "--data-dir", str(self.compute_dir),
            "--manager-url", self.manager_url, "--credentials", str(credentials),
            *self.compute_options,
        ]  # fmt: skip
        compute = _start(
            "compute server", compute_argv, self.compute_url, self.directory / "compute.log"
        )
        self._servers.append(compute)
        manager.wait_healthy("/.well-known/jwks.json")
        compute.wait_healthy("/v1/health")
        return self

    def add_compute_server(
        self, name: str, *, capacity: int = 20, advertise_url: str | None = None
    ) -> ComputeNode:
        """Start another compute server, registered at the manager as ``name`` at its own
        URL, or at ``advertise_url`` (a proxy in front of it)."""
        url = f"http://127.0.0.1:{free_port()}"
        directory = self.directory / name
        credentials = self.register(advertise_url or url, name, capacity=capacity)
        argv = [
            "server", "compute", "--port", url.rsplit(":", 1)[1], "--data-dir", str(directory),
            "--manager-url", self.manager_url, "--credentials", str(credentials),
            *self.compute_options,
        ]  # fmt: skip
        server = _start(f"compute server {name}", argv, url, self.directory / f"{name}.log")
        self._servers.append(server)
        server.wait_healthy("/v1/health")
        node = ComputeNode(name, url, directory, server)
        self.compute_nodes[name] = node
        return node

    def credentials_file(self, name: str) -> Path:
        """The credentials file of the compute server ``name`` (``local``: the first one)."""
        return self.directory / f"{name}-credentials.json"

    def room_directory(self, project: str, name: str, compute_dir: Path | None = None) -> Path:
        """Where the compute server in ``compute_dir`` (default: the first) keeps the
        room ``name`` of ``project``: rooms are told apart by project there too."""
        return (compute_dir or self.compute_dir) / "rooms" / f"{project}.{name}"

    def kill_compute_server(self, name: str) -> None:
        """SIGKILL the compute server ``name`` and its enclave processes, as if its
        machine died: nothing of it answers again, and its rooms' keys are gone."""
        node = self.compute_nodes[name]
        node.server.process.kill()
        node.server.process.wait()
        for pid in enclave_processes(node.directory):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def add_project(self, name: str) -> None:
        with self._database() as session:
            create_project(session, name)

    def add_client(self, project: str, name: str | None = None) -> NewClient:
        with self._database() as session:
            return create_client(session, project, name)

    def simulated_root_pem(self) -> str:
        """The compute server's simulated root CA: what a user must choose to trust."""
        return SimulatedPlatform.load(
            self.compute_dir / "simulated-platform"
        ).root_certificate_pem()

    def close(self) -> None:
        for server in reversed(self._servers):
            server.stop()
        self._servers.clear()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _error: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.close()
