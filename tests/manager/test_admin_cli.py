"""``cleanroom admin`` and ``cleanroom server manager``, run as the operator runs them."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from cleanroom.cli.main import main
from cleanroom.client.manager import ManagerClient

from .conftest import Manager, closed_port_url


def admin(data_dir: Path, *args: str) -> int:
    return main(["admin", "--data-dir", str(data_dir), *args])


def test_client_create_prints_the_secret_once_and_it_logs_in(
    manager: Manager, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = manager.settings.data_dir
    assert admin(data_dir, "project", "create", "acme") == 0
    assert capsys.readouterr().out == "project acme created\n"
    assert admin(data_dir, "client", "create", "--project", "acme", "--name", "alice") == 0
    captured = capsys.readouterr()
    match = re.fullmatch(r"client_id: +(\S+)\nclient_secret: +(\S+)\n", captured.out)
    assert match is not None
    client_id, secret = match.groups()
    assert captured.out.count(secret) == 1
    assert "shown only once" in captured.err
    with ManagerClient(manager.url) as client:
        client.fetch_token(client_id, secret)
        assert client.whoami()["project"] == "acme"
    assert admin(data_dir, "client", "list") == 0
    listing = capsys.readouterr().out
    assert client_id in listing and secret not in listing


def test_client_create_for_an_unknown_project_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert admin(tmp_path, "client", "create", "--project", "nope") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("error: no project named 'nope'")


def test_project_create_twice_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert admin(tmp_path, "project", "create", "acme") == 0
    assert admin(tmp_path, "project", "create", "acme") == 2
    assert capsys.readouterr().err == "error: a project named 'acme' exists\n"


def test_bad_project_name_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert admin(tmp_path, "project", "create", "Not_Valid") == 2
    assert "is not 1-63 lowercase letters" in capsys.readouterr().err


def test_project_and_server_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert admin(tmp_path, "project", "create", "acme") == 0
    capsys.readouterr()
    assert admin(tmp_path, "server", "add", "http://127.0.0.1:8081/", "--name", "c1") == 0
    assert capsys.readouterr().out == "compute server c1 at http://127.0.0.1:8081 added\n"
    assert admin(tmp_path, "server", "add", "http://127.0.0.1:8081") == 2
    assert admin(tmp_path, "server", "add", "ftp://x") == 2
    capsys.readouterr()
    assert admin(tmp_path, "server", "list") == 0
    assert "http://127.0.0.1:8081" in capsys.readouterr().out
    assert admin(tmp_path, "project", "list") == 0
    assert "acme" in capsys.readouterr().out


def test_disable_and_enable_a_client(manager: Manager, capsys: pytest.CaptureFixture[str]) -> None:
    client_id, secret = manager.new_client("acme")
    assert admin(manager.settings.data_dir, "client", "disable", client_id) == 0
    with ManagerClient(manager.url) as client:
        with pytest.raises(Exception, match="invalid_client"):
            client.fetch_token(client_id, secret)
        assert admin(manager.settings.data_dir, "client", "enable", client_id) == 0
        client.fetch_token(client_id, secret)
    assert admin(manager.settings.data_dir, "client", "disable", "unknown") == 2


@pytest.fixture
def manager_process(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    url = closed_port_url()
    port = url.rsplit(":", 1)[1]
    data_dir = tmp_path / "manager"
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "cleanroom.cli.main", "server", "manager"),
            *("--port", port, "--data-dir", str(data_dir)),
        ],
        env={**os.environ, "CLEANROOM_HOME": str(tmp_path / "home")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(600):
            if process.poll() is not None:
                break
            try:
                httpx.get(f"{url}/.well-known/jwks.json", timeout=1.0)
                break
            except httpx.TransportError:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=0.1)  # poll, and notice an early exit
        yield url, data_dir
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()


def test_server_manager_command_serves_and_the_issuer_is_its_url(
    manager_process: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, data_dir = manager_process
    jwks = httpx.get(f"{url}/.well-known/jwks.json").json()
    assert [key["alg"] for key in jwks["keys"]] == ["ES256"]
    assert (data_dir / "token-signing-key.pem").stat().st_mode & 0o077 == 0
    assert admin(data_dir, "client", "create", "--project", "acme") == 2  # no such project yet
    assert admin(data_dir, "project", "create", "acme") == 0
    assert admin(data_dir, "client", "create", "--project", "acme") == 0
    match = re.search(r"client_id: +(\S+)\nclient_secret: +(\S+)\n", capsys.readouterr().out)
    assert match is not None
    client_id, secret = match.groups()
    with ManagerClient(url) as client:
        token = client.fetch_token(client_id, secret).access_token
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == url
