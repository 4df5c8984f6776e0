"""A real PostgreSQL server for the database tests, started once per test session.

The server is private to the run: ``initdb`` into a temporary directory, listening
on a free loopback port, stopped at the end. Where the PostgreSQL binaries live is
found from ``pg_config`` or Debian's ``/usr/lib/postgresql/<version>/bin``
(``scripts/test.sh`` installs Debian's ``postgresql`` package when they are
missing). PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` user that the package creates.

``CLEANROOM_TEST_POSTGRES_URL`` points the tests at an existing server instead
(a URL whose user may ``CREATE DATABASE``). Without either, the PostgreSQL half
of the tests is skipped, except in CI (``CI=true``), where it fails.

Each test gets a database of its own (:meth:`PostgresServer.new_database`).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

URL_VARIABLE = "CLEANROOM_TEST_POSTGRES_URL"


def _bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if found and (Path(found) / "initdb").exists():
            return Path(found)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """A PostgreSQL server the tests may create databases on."""

    url: str  # libpq URL of a database to connect to: postgresql://user@host:port/db
    _counter: Iterator[int] = field(default_factory=itertools.count)

    def new_database(self) -> str:
        """The SQLAlchemy URL of a new, empty database."""
        name = f"cleanroom_test_{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
            connection.execute(f'CREATE DATABASE "{name}"')
        url = make_url(self.url).set(drivername="postgresql+psycopg", database=name)
        return url.render_as_string(hide_password=False)


def _as_postgres_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root, but there is no 'postgres' user to run PostgreSQL as")
    return ["runuser", "-u", "postgres", "--"]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is needed in CI: {reason}")
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (started here unless CLEANROOM_TEST_POSTGRES_URL)."""
    given = os.environ.get(URL_VARIABLE)
    if given:
        yield PostgresServer(given.replace("postgresql+psycopg://", "postgresql://", 1))
        return
    bindir = _bindir()
    if bindir is None:
        _unavailable("no initdb found (install Debian's postgresql package)")
    assert bindir is not None
    prefix = _as_postgres_user()
    home = Path(tempfile.mkdtemp(prefix="cleanroom-pg-"))
    data, sockets = home / "data", home / "sockets"
    sockets.mkdir()
    if prefix:
        shutil.chown(home, "postgres")
        shutil.chown(sockets, "postgres")
    port = _free_port()
    log = home / "server.log"

    def run(*argv: str) -> None:
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} "
        "-c fsync=off -c max_connections=300"  # fsync off: a test server, thrown away
    )
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start")
    try:
        yield PostgresServer(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Each test that uses it runs twice: on SQLite (None: the default file) and PostgreSQL."""
    if request.param == "sqlite":
        return None
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database()
