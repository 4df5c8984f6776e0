"""A real management server on loopback, and a stand-in Controller beside it.

The manager runs under uvicorn in a background thread on a port bound before the
app is built (its public URL is the tokens' issuer). The stand-in Controller does
what the manager relies on from a real one (docs/api.md, "Controller"): it is
registered with the manager (and gets its credentials), checks that each deploy
or delete token is the manager's, for itself, for that operation and that room,
fetches the bundle with its own compute token, checks its ID, and answers; it
starts no Worker (the real Controller is tested on its own).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker

from cleanroom.cli.main import main
from cleanroom.client.manager import ManagerClient
from cleanroom.dpop import ProofKey
from cleanroom.manager import Settings, create_app
from cleanroom.manager import admin as operations
from cleanroom.manager.admin import ServerCredentials
from cleanroom.protocol.bundle import function_id, pack
from cleanroom.protocol.encoding import b64u
from cleanroom.protocol.keys import user_id
from cleanroom.protocol.spec import WorkSpec
from cleanroom.tokens import TokenClaims, TokenError, TokenVerifier


def bind(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def url_of(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextmanager
def serve(app: FastAPI, sock: socket.socket, *, lifespan: bool = False) -> Iterator[None]:
    """Run ``app`` under uvicorn on ``sock`` until the block ends (with its lifespan,
    if ``lifespan``: then it has started once this returns, and ends with the block)."""
    config = uvicorn.Config(app, log_level="warning", lifespan="on" if lifespan else "off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(2000):
        if server.started or not thread.is_alive():
            break
        started.wait(0.01)
    if not server.started:
        raise RuntimeError("uvicorn did not start")
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the port was bound, then released)."""
    sock = bind()
    url = url_of(sock)
    sock.close()
    return url


@dataclass
class Manager:
    """A running management server and the operator's access to its database."""

    url: str
    settings: Settings
    sessions: sessionmaker[Session]
    clients: list[ManagerClient] = field(default_factory=list)
    running: Any = None  # the serve() context of the HTTP server
    services: Any = None  # its cleanroom.manager.services.Services
    stopped: bool = False

    def stop(self) -> None:
        """Stop the server and give its database connections back (again: a no-op)."""
        if self.stopped:
            return
        self.stopped = True
        for client in self.clients:
            client.close()
        self.running.__exit__(None, None, None)
        self.sessions.kw["bind"].dispose()

    def project(self, name: str) -> None:
        with self.sessions() as session:
            operations.create_project(session, name)

    def new_client(self, project: str) -> tuple[str, str]:
        """(client_id, secret) of a new client of ``project`` (created if missing)."""
        with self.sessions() as session:
            if project not in {p.name for p, _ in operations.list_projects(session)}:
                operations.create_project(session, project)
            created = operations.create_client(session, project)
        return created.client_id, created.secret

    def client(self, token: str | None = None, dpop_key: ProofKey | None = None) -> ManagerClient:
        """A client of this manager (its own fresh DPoP key unless ``dpop_key``)."""
        client = ManagerClient(self.url, token=token, dpop_key=dpop_key)
        self.clients.append(client)
        return client

    def login(self, project: str) -> tuple[ManagerClient, str]:
        """A ManagerClient logged in as a new client of ``project``; and its client id."""
        client_id, secret = self.new_client(project)
        client = self.client()
        client.fetch_token(client_id, secret)
        return client, client_id

    def add_server(self, url: str, name: str | None = None) -> ServerCredentials:
        """Register a compute server as the operator does; its credentials."""
        with self.sessions() as session:
            return operations.add_server(session, url, name).credentials

    def compute_token(self, credentials: ServerCredentials | None = None) -> str:
        """A compute server's token (of a server registered now, unless given)."""
        if credentials is None:
            credentials = self.add_server(closed_port_url())
        answer = httpx.post(
            f"{self.url}/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": credentials.client_id,
                "client_secret": credentials.client_secret,
            },
        )
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["access_token"]
        return token


@pytest.fixture
def start_manager(tmp_path: Path, database_url: str | None) -> Iterator[Callable[..., Manager]]:
    """Start managers with settings overrides; all are stopped at the end of the test.

    Every test that uses it runs twice, on SQLite and on PostgreSQL
    (``database_url``, tests/postgres.py). To start a manager again on an earlier
    one's state, ``Manager.stop()`` that one and pass its ``port`` (the URL is the
    tokens' issuer), ``data_dir`` and ``database_url``. ``lifespan=True`` runs the
    app's lifespan, and with it the manager's housekeeping (health checks, garbage
    collection); without it, a test drives those itself.
    """
    stack: list[Manager] = []

    def start(port: int = 0, *, lifespan: bool = False, **overrides: Any) -> Manager:
        sock = bind(port)
        overrides.setdefault("data_dir", tmp_path / f"manager-{len(stack)}")
        overrides.setdefault("database_url", database_url)
        settings = Settings(public_url=url_of(sock), **overrides)
        app = create_app(settings)
        running = serve(app, sock, lifespan=lifespan)
        running.__enter__()
        services = app.state.manager
        manager = Manager(url_of(sock), settings, services.sessions, running=running)
        manager.services = services
        stack.append(manager)
        return manager

    yield start
    for manager in reversed(stack):
        manager.stop()


@pytest.fixture
def manager(start_manager: Callable[..., Manager]) -> Manager:
    return start_manager()


@dataclass
class StandInController:
    url: str
    credentials: ServerCredentials | None = None
    deployed: dict[str, dict[str, Any]] = field(default_factory=dict)
    bundles: dict[str, bytes] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    claims: list[TokenClaims] = field(default_factory=list)

    def compute_token(self, manager_url: str) -> str:
        """Its own token for the manager (client credentials, as a real Controller's)."""
        assert self.credentials is not None
        answer = httpx.post(
            f"{manager_url}/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self.credentials.client_id,
                "client_secret": self.credentials.client_secret,
            },
        )
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["access_token"]
        return token


def _check_token(
    manager_url: str, record: StandInController, request: Request, scope: str, name: str
) -> JSONResponse | None:
    """What a real Controller checks of the manager's tokens: for this server, this
    operation and this room (and recorded, for the tests to look at)."""
    verifier = TokenVerifier(
        manager_url, record.url, jwks_url=f"{manager_url}/.well-known/jwks.json"
    )
    header = request.headers.get("authorization", "")
    try:
        claims = verifier.verify(header.removeprefix("Bearer "), scope=scope)
    except TokenError as error:
        record.refusals.append(error.check)
        return JSONResponse({"detail": str(error)}, status_code=401)
    record.claims.append(claims)
    if claims.room != name:
        record.refusals.append("token-room")
        return JSONResponse({"detail": "token for another room"}, status_code=403)
    return None


def _controller_app(manager_url: str, record: StandInController) -> FastAPI:
    app = FastAPI()

    def check(request: Request, scope: str, name: str) -> JSONResponse | None:
        return _check_token(manager_url, record, request, scope, name)

    @app.put("/v1/rooms/{name}")
    def put(name: str, body: dict[str, Any], request: Request) -> JSONResponse:
        refused = check(request, "deploy", name)
        if refused is not None:
            return refused
        spec = WorkSpec.parse(body["spec"])
        digest = spec.function.removeprefix("fs://")
        answer = httpx.get(
            f"{manager_url}/v1/functions/{digest}",
            headers={"authorization": f"Bearer {record.compute_token(manager_url)}"},
        )
        if answer.status_code != 200 or function_id(answer.content) != spec.function:
            return JSONResponse({"detail": "cannot get the bundle"}, status_code=502)
        record.deployed[name] = body["spec"]
        record.bundles[name] = answer.content
        return JSONResponse(
            {"name": name, "worker_id": f"worker-{name}", "state": "collecting"}, status_code=201
        )

    @app.delete("/v1/rooms/{name}")
    def delete(name: str, request: Request) -> JSONResponse:
        refused = check(request, "delete", name)
        if refused is not None:
            return refused
        if name not in record.deployed:
            return JSONResponse({"detail": "no such room"}, status_code=404)
        del record.deployed[name]
        record.deleted.append(name)
        return JSONResponse({"name": name, "state": "deleted"})

    return app


@pytest.fixture
def start_controller() -> Iterator[Callable[[Manager], StandInController]]:
    running: list[Any] = []

    def start(manager: Manager) -> StandInController:
        sock = bind()
        record = StandInController(url_of(sock))
        record.credentials = manager.add_server(record.url)
        context = serve(_controller_app(manager.url, record), sock)
        context.__enter__()
        running.append(context)
        return record

    yield start
    for context in reversed(running):
        context.__exit__(None, None, None)


@pytest.fixture
def controller(
    manager: Manager, start_controller: Callable[[Manager], StandInController]
) -> StandInController:
    """A stand-in Controller registered with ``manager``."""
    return start_controller(manager)


def operator(manager: Manager, *args: str) -> int:
    """``cleanroom admin ARGS`` on ``manager``'s data directory and database; its exit code."""
    database = manager.settings.database_url
    return main(
        [
            "admin",
            "--data-dir",
            str(manager.settings.data_dir),
            *(["--database-url", database] if database else []),
            *args,
        ]
    )


def new_user() -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, user_id(key.public_key())


def make_bundle(directory: Path, body: str = "def main(ctx):\n    return None\n") -> bytes:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "handler.py").write_text(body)
    return pack(directory)


def make_spec(
    function: str,
    *,
    name: str = "overlap",
    owner: str | None = None,
    recipient: str | None = None,
    runner: str | None = None,
) -> WorkSpec:
    """A valid spec; users not given are fresh keys nobody registered."""
    owner = owner or new_user()[1]
    recipient = recipient or new_user()[1]
    runner = runner or owner
    return WorkSpec.parse(
        {
            "name": name,
            "function": function,
            "handler": "handler.main",
            "inputs": {"data": owner},
            "outputs": {"result": recipient},
            "runners": [runner],
            "nonce": b64u(os.urandom(16)),
        }
    )
