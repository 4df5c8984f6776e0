"""The user's commands against a real management server on loopback.

Two setups: the manager as the operator runs it (``cleanroom admin`` then ``cleanroom
server manager`` in its own process) with no compute server, so a deploy must fail
clearly; and the manager in-process (tests/manager's fixtures) with its stand-in
Controller, so a room exists and a second party can inspect and approve it.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import jwt
import pytest
from sqlalchemy import select

from cleanroom.cli.main import main
from cleanroom.client.errors import ServerError
from cleanroom.client.manager import ManagerClient
from cleanroom.client.profile import NotApprovedError, Profile
from cleanroom.manager.database import RevokedToken
from cleanroom.protocol.bundle import function_id, pack
from tests.manager.conftest import Manager, StandInController


class Terminal(io.StringIO):
    """What a person types at a terminal: approve and delete ask only when there is one."""

    def isatty(self) -> bool:
        return True


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def configure(profile: str, url: str, client_id: str, secret: str) -> list[str]:
    return [
        "--profile", profile, "configure",
        "--manager-url", url, "--client-id", client_id, "--client-secret", secret,
    ]  # fmt: skip


def write_access(path: Path, *, owner: str, recipient: str) -> Path:
    path.write_text(f"inputs:\n  input_1: {owner}\noutputs:\n  output_1: {recipient}\n")
    return path


# -------------------------------------------------------------------- as the operator runs it


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cleanroom.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "CLEANROOM_HOME": str(home)},
        timeout=120,
        check=False,
    )


@pytest.fixture
def manager_process(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """``cleanroom server manager`` in its own process; (url, client_id, secret) of a client."""
    data_dir, operator = tmp_path / "manager-data", tmp_path / "operator-home"
    admin = ["admin", "--data-dir", str(data_dir)]
    assert _cli(*admin, "project", "create", "acme", home=operator).returncode == 0
    created = _cli(*admin, "client", "create", "--project", "acme", home=operator)
    assert created.returncode == 0, created.stderr
    client_id = re.search(r"client_id:\s+(\S+)", created.stdout)
    secret = re.search(r"client_secret:\s+(\S+)", created.stdout)
    assert client_id is not None and secret is not None
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "cleanroom.cli.main", "server", "manager",
         "--port", str(port), "--data-dir", str(data_dir)],
        env={**os.environ, "CLEANROOM_HOME": str(operator)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/.well-known/jwks.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                _, err = process.communicate(timeout=5)
                pytest.fail(f"the manager did not start: {err.decode()[-2000:]}")
            time.sleep(0.1)
        yield url, client_id.group(1), secret.group(1)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_flow_against_a_manager_without_compute_server(
    home: Path,
    capsys: pytest.CaptureFixture[str],
    manager_process: tuple[str, str, str],
    function_dir: Path,
    tmp_path: Path,
) -> None:
    url, client_id, secret = manager_process
    assert run(capsys, *configure("alice", url, client_id, secret))[0] == 0

    code, out, err = run(capsys, "--profile", "alice", "login")
    assert code == 0, err
    alice = Profile.load("alice")
    assert f"user_id: {alice.user_id}" in out
    assert "(project acme)" in out
    assert alice.config.project == "acme"  # learned from the manager
    assert oct((alice.directory / "token.json").stat().st_mode & 0o777) == "0o600"

    code, out, err = run(capsys, "--profile", "alice", "function", "upload", str(function_dir))
    assert code == 0, err
    assert out == f"{function_id(pack(function_dir))}\n"
    assert "(already stored)" not in err
    code, again, err = run(capsys, "--profile", "alice", "function", "upload", str(function_dir))
    assert code == 0
    assert again == out
    assert "(already stored)" in err
    function = out.strip()

    access = write_access(tmp_path / "access.yaml", owner=alice.user_id, recipient=alice.user_id)
    code, out, err = run(
        capsys, "--profile", "alice", "deploy",
        "--function", function, "--name", "overlap", "--handler", "handler.run",
        "--access", str(access),
    )  # fmt: skip
    assert code == 1
    assert err.startswith("error: manager: 503")
    assert "compute server" in err
    assert len(err.strip().splitlines()) == 1
    assert Profile.load("alice").approval("overlap") is None  # nothing deployed, nothing pinned

    code, _, err = run(capsys, "--profile", "alice", "inspect", "overlap")
    assert code == 1
    assert err.startswith("error: manager: 404")


def test_wrong_secret_is_refused_in_one_line(
    home: Path, capsys: pytest.CaptureFixture[str], manager: Manager
) -> None:
    client_id, _ = manager.new_client("acme")
    assert run(capsys, *configure("alice", manager.url, client_id, "wrong"))[0] == 0
    code, _, err = run(capsys, "--profile", "alice", "login")
    assert code == 1
    assert err.startswith("error: manager: 401")
    assert "invalid_client" in err
    assert len(err.strip().splitlines()) == 1


def test_login_with_a_new_dpop_key_ends_the_old_keys_tokens(
    home: Path, capsys: pytest.CaptureFixture[str], manager: Manager
) -> None:
    """`login --new-dpop-key` replaces dpop-key.pem and registers the user key from the
    new key: the manager refuses the token the profile kept for the old key, which a
    copy of the profile directory would carry (h21)."""
    client_id, secret = manager.new_client("acme")
    assert run(capsys, *configure("alice", manager.url, client_id, secret))[0] == 0
    assert run(capsys, "--profile", "alice", "login")[0] == 0
    before = Profile.load("alice")
    old_key, old_token = before.proof_key, before.access_token()
    code, _, err = run(capsys, "--profile", "alice", "login", "--new-dpop-key")
    assert code == 0, err
    after = Profile.load("alice")
    assert after.proof_key.jkt != old_key.jkt
    assert oct((after.directory / "dpop-key.pem").stat().st_mode & 0o777) == "0o600"
    copied = ManagerClient(manager.url, token=old_token, dpop_key=old_key)
    with copied, pytest.raises(ServerError) as refused:
        copied.whoami()
    assert refused.value.status == 401 and refused.value.check == "token-revoked"
    with ManagerClient(manager.url, token=after.access_token(), dpop_key=after.proof_key) as new:
        assert new.whoami()["user_id"] == after.user_id


# -------------------------------------------------------------------- with a stand-in Controller


@pytest.fixture
def parties(
    home: Path, capsys: pytest.CaptureFixture[str], manager: Manager
) -> tuple[Profile, Profile]:
    """Alice (project acme, the deployer) and Bob (project beta), configured and logged in."""
    for name, project in (("alice", "acme"), ("bob", "beta")):
        client_id, secret = manager.new_client(project)
        assert run(capsys, *configure(name, manager.url, client_id, secret))[0] == 0
        code, _, err = run(capsys, "--profile", name, "login")
        assert code == 0, err
    return Profile.load("alice"), Profile.load("bob")


@pytest.fixture
def deployed(
    capsys: pytest.CaptureFixture[str],
    parties: tuple[Profile, Profile],
    controller: StandInController,
    function_dir: Path,
    tmp_path: Path,
) -> str:
    """Room ``overlap``: Bob uploads input_1, Alice reads output_1; deployed by Alice."""
    alice, bob = parties
    code, out, err = run(capsys, "--profile", "alice", "function", "upload", str(function_dir))
    assert code == 0, err
    access = write_access(tmp_path / "access.yaml", owner=bob.user_id, recipient=alice.user_id)
    code, out, err = run(
        capsys, "--profile", "alice", "deploy",
        "--function", out.strip(), "--name", "overlap", "--handler", "handler.run",
        "--access", str(access), "--memory", "0.5", "--timeout", "60",
        "--cpu", "600", "--processes", "64", "--disk", "2048",
        "--param", "threshold=0.25", "--param", "label=demo",
    )  # fmt: skip
    assert code == 0, err
    assert "handler-function" not in err  # the handler's module defines run
    assert "overlap" in controller.deployed
    work_id = re.search(r"Work-ID:\s+(\S+)", out)
    assert work_id is not None
    assert f"compute server: {controller.url}" in out
    return work_id.group(1)


def test_deploy_pins_the_deployers_approval(
    deployed: str, parties: tuple[Profile, Profile], controller: StandInController
) -> None:
    alice, _ = parties
    spec = controller.deployed["overlap"]
    assert spec["resources"] == {
        "memory_mib": 512,
        "timeout_s": 60,
        "cpu_s": 600,  # deploy had no --cpu, --processes or --disk: a function whose
        "processes": 64,  # outputs need more than 1 GiB could not be deployed (h22)
        "disk_mib": 2048,
    }
    assert spec["parameters"] == {"threshold": 0.25, "label": "demo"}
    assert spec["runners"] == [alice.user_id]  # the deployer, by default
    assert alice.require_approval("overlap", deployed).work_id == deployed


def test_deploy_with_a_name_taken_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
    deployed: str,
    parties: tuple[Profile, Profile],
    controller: StandInController,
    tmp_path: Path,
) -> None:
    """A name the project's live room has: exit 2 (unusable input, as a malformed name),
    naming the option, the manager's check and what to do; it exited 1 with the manager's
    409 alone, as a refusal by a security check (left open by h32; h37)."""
    alice, bob = parties
    function = controller.deployed["overlap"]["function"]
    access = write_access(tmp_path / "again.yaml", owner=bob.user_id, recipient=alice.user_id)
    code, out, err = run(
        capsys, "--profile", "alice", "deploy", "--function", function, "--name", "overlap",
        "--handler", "handler.run", "--access", str(access),
    )  # fmt: skip
    assert code == 2, err
    assert err.splitlines()[-1].startswith(  # after the warnings of the access file's rights
        "error: --name overlap: manager: 409 Conflict: project 'acme' has a clean room named "
        "'overlap' (room-name) (nothing was deployed or pinned: choose another --name"
    ), err
    assert "cleanroom --profile alice delete overlap" in err, err
    assert out == ""
    assert alice.require_approval("overlap", deployed).work_id == deployed  # the first kept


def test_deploy_refuses_a_handler_the_review_would_refuse(
    capsys: pytest.CaptureFixture[str],
    parties: tuple[Profile, Profile],
    controller: StandInController,
    function_dir: Path,
    tmp_path: Path,
) -> None:
    """A handler whose module is not in the function: deploy refuses it with the review's
    check (handler-module, exit 2) and deploys and pins nothing, instead of every other
    party's inspect refusing the room it deployed (h3's walk through the docs)."""
    alice, bob = parties
    code, function, err = run(capsys, "--profile", "alice", "function", "upload", str(function_dir))
    assert code == 0, err
    access = write_access(tmp_path / "access.yaml", owner=bob.user_id, recipient=alice.user_id)
    code, out, err = run(
        capsys, "--profile", "alice", "deploy", "--function", function.strip(),
        "--name", "nomodule", "--handler", "nomodule.run", "--access", str(access),
    )  # fmt: skip
    assert code == 2, err
    assert err.startswith("error: handler-module: the handler nomodule.run is not in the function")
    assert "nothing was deployed" in err
    assert len(err.strip().splitlines()) == 1
    assert out == ""
    assert "nomodule" not in controller.deployed
    assert Profile.load("alice").approval("nomodule") is None


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary directory of the command (tempfile's), this test's own."""
    directory = tmp_path / "scratch"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


@dataclass
class BundleFile:
    """Where deploy's handler check downloaded the bundle, as it was while downloading."""

    path: Path
    mode: int
    directory_mode: int
    written_before: int


def watch_the_bundle_file(monkeypatch: pytest.MonkeyPatch) -> list[BundleFile]:
    """The file each download_function_to writes into, seen when the download starts
    (the download itself is the real one)."""
    seen: list[BundleFile] = []
    download = ManagerClient.download_function_to

    def watched(client: ManagerClient, function: str, file: BinaryIO, **options: Any) -> int:
        path = Path(file.name)
        seen.append(
            BundleFile(
                path,
                stat.S_IMODE(os.fstat(file.fileno()).st_mode),
                stat.S_IMODE(path.parent.stat().st_mode),
                os.fstat(file.fileno()).st_size,
            )
        )
        return download(client, function, file, **options)

    monkeypatch.setattr(ManagerClient, "download_function_to", watched)
    return seen


def left_in(scratch: Path) -> list[str]:
    return sorted(path.name for path in scratch.iterdir() if path.name.startswith("cleanroom-"))


def test_deploys_handler_check_downloads_the_bundle_into_a_private_file_removed_after(
    capsys: pytest.CaptureFixture[str],
    parties: tuple[Profile, Profile],
    controller: StandInController,
    function_dir: Path,
    tmp_path: Path,
    scratch: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bundle deploy checks the handler in is streamed into a file of its own (0600,
    in a 0700 directory), read from there, and removed after: on success, after the
    check refused the handler, and after the manager refused the download. Before, it
    was held in memory whole, twice over while it was checked."""
    alice, bob = parties
    code, function, err = run(capsys, "--profile", "alice", "function", "upload", str(function_dir))
    assert code == 0, err
    access = write_access(tmp_path / "access.yaml", owner=bob.user_id, recipient=alice.user_id)
    seen = watch_the_bundle_file(monkeypatch)

    def deploy(name: str, handler: str, function: str) -> tuple[int, str]:
        code, _, err = run(
            capsys, "--profile", "alice", "deploy", "--function", function, "--name", name,
            "--handler", handler, "--access", str(access),
        )  # fmt: skip
        return code, err

    code, err = deploy("private", "handler.run", function.strip())
    assert code == 0, err
    assert "private" in controller.deployed
    [file] = seen
    assert (file.mode, file.directory_mode, file.written_before) == (0o600, 0o700, 0)
    assert file.path.parent.parent == scratch and not file.path.parent.exists()
    assert left_in(scratch) == []

    code, err = deploy("refused", "nomodule.run", function.strip())
    assert code == 2 and "handler-module" in err, err
    assert len(seen) == 2 and not seen[1].path.parent.exists()
    assert left_in(scratch) == []

    unknown = "fs://" + "A" * 43  # no such function: the manager refuses the download
    code, err = deploy("unknown", "handler.run", unknown)
    assert code == 1 and "404" in err, err
    assert len(seen) == 3 and not seen[2].path.parent.exists()
    assert left_in(scratch) == []
    assert "refused" not in controller.deployed and "unknown" not in controller.deployed


def test_inspect_and_function_download_read_the_bundle_from_a_private_file_removed_after(
    capsys: pytest.CaptureFixture[str],
    parties: tuple[Profile, Profile],
    controller: StandInController,
    function_dir: Path,
    tmp_path: Path,
    scratch: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """inspect, inspect --against a function and function download stream the bundle
    into a file of their own (0600, in a 0700 directory) and remove it after, as deploy's
    check does: each held it in memory whole (580 MiB resident for a 256 MiB bundle,
    now 70)."""
    alice, bob = parties
    code, function, err = run(capsys, "--profile", "alice", "function", "upload", str(function_dir))
    assert code == 0, err
    function = function.strip()
    access = write_access(tmp_path / "access.yaml", owner=bob.user_id, recipient=alice.user_id)
    code, _, err = run(
        capsys, "--profile", "alice", "deploy", "--function", function, "--name", "filed",
        "--handler", "handler.run", "--access", str(access),
    )  # fmt: skip
    assert code == 0, err
    seen = watch_the_bundle_file(monkeypatch)
    for command in (
        ("inspect", "filed"),
        ("inspect", "filed", "--against", function),
        ("function", "download", function, str(tmp_path / "downloaded")),
    ):
        before = len(seen)
        code, _, err = run(capsys, "--profile", "bob", *command)
        assert code == 0, (command, err)
        assert len(seen) > before, command
        for file in seen[before:]:
            assert (file.mode, file.directory_mode, file.written_before) == (0o600, 0o700, 0)
            assert file.path.parent.parent == scratch and not file.path.parent.exists()
        assert left_in(scratch) == [], command
    assert (tmp_path / "downloaded" / "handler.py").is_file()


def test_deploy_warns_of_a_handler_function_its_module_does_not_define(
    capsys: pytest.CaptureFixture[str],
    parties: tuple[Profile, Profile],
    controller: StandInController,
    function_dir: Path,
    tmp_path: Path,
) -> None:
    """handler.nope (the module is there, no nope in it): a warning, not a refusal (a
    module can bind names no reading sees), from deploy and from every party's inspect."""
    alice, bob = parties
    code, function, err = run(capsys, "--profile", "alice", "function", "upload", str(function_dir))
    assert code == 0, err
    access = write_access(tmp_path / "access.yaml", owner=bob.user_id, recipient=alice.user_id)
    code, out, err = run(
        capsys, "--profile", "alice", "--output", "json", "deploy",
        "--function", function.strip(), "--name", "nope", "--handler", "handler.nope",
        "--access", str(access),
    )  # fmt: skip
    assert code == 0, err
    assert "warning: handler-function: the handler's module handler.py defines no nope" in err
    printed = json.loads(out)
    assert [warning["check"] for warning in printed["warnings"]] == ["handler-function"]
    # The function under inspect --json's name, and under its first name (h3).
    assert printed["function_id"] == printed["function"] == function.strip()
    assert "nope" in controller.deployed
    code, out, err = run(capsys, "--profile", "bob", "inspect", "nope")
    assert code == 0, err
    assert "defines no nope at its top level" in out


def test_second_party_inspects_then_approves(
    deployed: str,
    capsys: pytest.CaptureFixture[str],
    parties: tuple[Profile, Profile],
    function_dir: Path,
) -> None:
    _, bob = parties
    with pytest.raises(NotApprovedError):
        bob.require_approval("overlap", deployed)

    code, out, err = run(capsys, "--profile", "bob", "inspect", "overlap")
    assert code == 0, err
    assert f"Work-ID:        {deployed} (recomputed from the spec)" in out
    assert "handler:        handler.run in handler.py" in out
    assert f"{bob.user_id}  uploads input_1  (you)" in out
    assert "lib/util.py" in out
    assert "approval:       not approved by you" in out

    code, out, _ = run(capsys, "--profile", "bob", "inspect", "overlap", "--json")
    assert code == 0
    document = json.loads(out)
    assert document["work_id"] == deployed
    assert document["approved"] is False
    assert [file["path"] for file in document["files"]] == ["handler.py", "lib/util.py"]

    code, out, err = run(capsys, "--profile", "bob", "approve", "overlap", "--yes")
    assert code == 0, err
    assert f"approved: clean room overlap, Work-ID {deployed}" in out
    assert Profile.load("bob").require_approval("overlap", deployed).work_id == deployed

    code, out, _ = run(capsys, "--profile", "bob", "inspect", "overlap", "--json")
    assert json.loads(out)["approved"] is True
    code, _, err = run(capsys, "--profile", "bob", "approve", "overlap", "--yes")
    assert code == 0
    assert "already approved" in err


def test_approve_asks_and_a_no_pins_nothing(
    deployed: str,
    capsys: pytest.CaptureFixture[str],
    parties: tuple[Profile, Profile],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    code, _, err = run(capsys, "--profile", "bob", "approve", "overlap")
    assert code == 1
    assert "aborted" in err
    assert Profile.load("bob").approval("overlap") is None


@pytest.mark.parametrize("command", [["approve", "overlap"], ["delete", "overlap"]])
def test_without_a_terminal_approve_and_delete_need_yes(
    deployed: str,
    capsys: pytest.CaptureFixture[str],
    parties: tuple[Profile, Profile],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    """A script gets a usage error naming --yes, never a prompt read from its input."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    code, out, err = run(capsys, "--profile", "bob", *command)
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {command[0]} asks") and len(err.splitlines()) == 1
    assert f"cleanroom --profile bob {command[0]} overlap --yes" in err
    assert Profile.load("bob").approval("overlap") is None


def test_second_party_downloads_the_function(
    deployed: str,
    capsys: pytest.CaptureFixture[str],
    controller: StandInController,
    function_dir: Path,
    tmp_path: Path,
) -> None:
    function = controller.deployed["overlap"]["function"]
    target = tmp_path / "review"
    target.mkdir()  # an empty directory is accepted
    code, _, err = run(capsys, "--profile", "bob", "function", "download", function, str(target))
    assert code == 0, err
    assert (target / "lib" / "util.py").read_text() == "VALUE = 1\n"
    assert function_id(pack(target)) == function


def test_outsider_cannot_see_the_room(
    deployed: str, capsys: pytest.CaptureFixture[str], manager: Manager
) -> None:
    client_id, secret = manager.new_client("gamma")
    assert run(capsys, *configure("eve", manager.url, client_id, secret))[0] == 0
    code, _, err = run(capsys, "--profile", "eve", "inspect", "overlap")
    assert code == 1
    assert err.startswith("error: manager: 404")


def test_expired_cached_token_is_replaced(
    parties: tuple[Profile, Profile], capsys: pytest.CaptureFixture[str]
) -> None:
    alice, _ = parties
    path = alice.directory / "token.json"
    record = json.loads(path.read_text())
    record["tokens"]["manager"]["access_token"] = "not-a-valid-token"  # refused: 401
    path.write_text(json.dumps(record))
    code, _, err = run(capsys, "--profile", "alice", "inspect", "nothing-here")
    assert code == 1
    assert err.startswith("error: manager: 404")  # logged in again, then asked
    again = json.loads(path.read_text())["tokens"]["manager"]["access_token"]
    assert again != "not-a-valid-token"


def revoked_jtis(manager: Manager) -> set[str]:
    with manager.sessions() as session:
        return set(session.scalars(select(RevokedToken.jti)))


def jti_of(token: str) -> str:
    jti: str = jwt.decode(token, options={"verify_signature": False})["jti"]
    return jti


def test_login_revokes_the_tokens_it_drops(
    deployed: str,
    parties: tuple[Profile, Profile],
    controller: StandInController,
    capsys: pytest.CaptureFixture[str],
    manager: Manager,
) -> None:
    """`login` revokes at the manager every token the profile kept before it drops them:
    a room token dropped unrevoked was good at its Controller for the rest of its hour
    to whoever saw it and held the DPoP key (left open by h24)."""
    alice, _ = parties
    room = alice.access_token(resource=controller.url, room="overlap", project="acme")
    kept = alice.access_token()
    code, _, err = run(capsys, "--profile", "alice", "login")
    assert code == 0, err
    assert "warning" not in err
    assert {jti_of(room), jti_of(kept)} <= revoked_jtis(manager)
    assert Profile.load("alice").access_token() != kept  # a new one, good
    old = ManagerClient(manager.url, token=kept, dpop_key=alice.proof_key)
    with old, pytest.raises(ServerError) as refused:
        old.whoami()
    assert (refused.value.status, refused.value.check) == (401, "token-revoked")


def test_a_refused_tokens_renewal_revokes_every_token_the_profile_drops(
    deployed: str,
    parties: tuple[Profile, Profile],
    controller: StandInController,
    capsys: pytest.CaptureFixture[str],
    manager: Manager,
) -> None:
    """A token a server refused at authentication makes the profile drop every token it
    kept (cleanroom.client.renewal): they are revoked at the manager first (h24)."""
    alice, _ = parties
    room = alice.access_token(resource=controller.url, room="overlap", project="acme")
    path = alice.directory / "token.json"
    record = json.loads(path.read_text())
    record["tokens"]["manager"]["access_token"] = "not-a-valid-token"  # refused: 401
    path.write_text(json.dumps(record))
    with alice.manager() as client:
        assert client.whoami()["client_id"] == alice.config.client_id  # renewed, sent again
    assert jti_of(room) in revoked_jtis(manager)


def test_a_controllers_refusal_revokes_and_drops_the_refused_room_token_only(
    deployed: str,
    parties: tuple[Profile, Profile],
    controller: StandInController,
    manager: Manager,
) -> None:
    """A room token refused by its Controller (which may say it of any token it is
    shown) is revoked and dropped alone: the manager token and another room token the
    profile kept (the room's, kept under its Work-ID) stay kept and good (before: every
    kept token was revoked, a hostile Controller's one lie a logout everywhere; left
    open by h31; tests/adversarial/test_refused_token.py on a real stack)."""
    alice, _ = parties
    other = alice.access(
        resource=controller.url, room="overlap", project="acme", work_id=deployed
    ).access_token
    kept = alice.access_token()
    source = alice.renewed_token(resource=controller.url, room="overlap", project="acme")
    refused = source()
    source.refused()  # what renew_for_retry does on the Controller's 401 token-…
    revoked = revoked_jtis(manager)
    assert jti_of(refused) in revoked
    assert jti_of(kept) not in revoked and jti_of(other) not in revoked
    record = json.loads((alice.directory / "token.json").read_text())["tokens"]
    assert record["manager"]["access_token"] == kept
    assert refused not in {cached["access_token"] for cached in record.values()}
    assert other in {cached["access_token"] for cached in record.values()}
    assert source() != refused  # a new one, fetched with the client's credentials
    with ManagerClient(manager.url, token=kept, dpop_key=alice.proof_key) as client:
        assert client.whoami()["client_id"] == alice.config.client_id


def test_a_login_with_many_kept_tokens_is_not_held_back_by_its_revocations(
    home: Path, capsys: pytest.CaptureFixture[str], manager: Manager
) -> None:
    """Each revocation counts against the manager's per-address limit (50 at once, shared
    by everyone at the address): a profile that kept 60 tokens revoked 52 one by one, was
    refused the rest (`429 slow_down`, in the warning) and spent the address's allowance
    for the login that followed and everyone else there. It revokes 20 at most, and says
    so of the rest."""
    client_id, secret = manager.new_client("acme")
    assert run(capsys, *configure("alice", manager.url, client_id, secret))[0] == 0
    assert run(capsys, "--profile", "alice", "login")[0] == 0
    path = Profile.load("alice").directory / "token.json"
    kept = json.loads(path.read_text())["tokens"]["manager"]
    with Profile.load("alice").login() as client:  # a second manager token, kept
        manager_token = client.token
    record = json.loads(path.read_text())
    assert record["tokens"]["manager"]["access_token"] == manager_token != kept["access_token"]
    for number in range(59):  # as many room tokens (revoked as any token: 200, counted)
        record["tokens"][f"https://compute.example room-{number}"] = kept
    path.write_text(json.dumps(record))
    code, out, err = run(capsys, "--profile", "alice", "login")
    assert code == 0, err
    assert err.startswith(
        "warning: 40 tokens this profile kept could not be revoked (more than 20 at once); "
    )
    assert out.startswith(f"logged in to {manager.url}")
    # The manager token, which acts as the user at the manager, is among those revoked
    # (it sorted after the rooms' URLs and was left: h33).
    assert manager_token is not None and jti_of(manager_token) in revoked_jtis(manager)


def test_a_login_that_cannot_revoke_warns_and_a_logout_reaches_them_later(
    deployed: str,
    parties: tuple[Profile, Profile],
    controller: StandInController,
    capsys: pytest.CaptureFixture[str],
    manager: Manager,
    start_manager: Callable[..., Manager],
) -> None:
    """With the manager unreachable, `login` says in one line how many kept tokens it
    could not revoke and that `logout` reaches them (the manager keeps room tokens, and a
    logout refuses its key's manager tokens issued before it); the keys and the secret
    stay. Once the manager is back, `logout` revokes them."""
    alice, _ = parties
    room = alice.access_token(resource=controller.url, room="overlap", project="acme")
    kept = alice.access_token()
    manager.stop()
    code, _, err = run(capsys, "--profile", "alice", "login")
    assert code != 0
    warning, error = err.splitlines()
    assert warning.startswith("warning: 2 tokens this profile kept could not be revoked (")
    assert warning.endswith(
        "`cleanroom logout` revokes them at the manager, which keeps them, once it answers"
    )
    assert error.startswith("error: ")
    for kept_file in ("dpop-key.pem", "user-key.pem", "credentials.json"):
        assert (alice.directory / kept_file).exists()
    port = int(manager.url.rsplit(":", 1)[1])
    again = start_manager(
        port, data_dir=manager.settings.data_dir, database_url=manager.settings.database_url
    )
    code, out, err = run(capsys, "--profile", "alice", "--output", "json", "logout")
    assert code == 0, err
    assert json.loads(out)["room_tokens_revoked"] == 1
    assert jti_of(room) in revoked_jtis(again)
    old = ManagerClient(again.url, token=kept, dpop_key=alice.proof_key)
    with old, pytest.raises(ServerError) as refused:
        old.whoami()
    assert (refused.value.status, refused.value.check) == (401, "token-revoked")


def test_logout_revokes_the_kept_token_and_removes_it(
    home: Path, capsys: pytest.CaptureFixture[str], manager: Manager
) -> None:
    """`logout` revokes at the manager the token the profile kept (refused from its next
    use, `token-revoked`) and removes token.json; with no usable kept token (expired,
    dropped) it logs in once to ask for the logout; `--forget-secret` also removes the
    stored secret, so that the profile logs in no more (h24: there was no logout)."""
    client_id, secret = manager.new_client("acme")
    assert run(capsys, *configure("alice", manager.url, client_id, secret))[0] == 0
    assert run(capsys, "--profile", "alice", "login")[0] == 0
    alice = Profile.load("alice")
    key, token = alice.proof_key, alice.access_token()
    code, out, err = run(capsys, "--profile", "alice", "logout")
    assert code == 0, err
    assert out.startswith(f"logged out of {manager.url} as client {client_id}: ")
    assert "0 room tokens revoked" in out
    assert not (alice.directory / "token.json").exists()
    copied = ManagerClient(manager.url, token=token, dpop_key=key)
    with copied, pytest.raises(ServerError) as refused:
        copied.whoami()
    assert (refused.value.status, refused.value.check) == (401, "token-revoked")
    # No token kept: a login, then the logout, of the token it just got.
    code, out, err = run(
        capsys, "--profile", "alice", "--output", "json", "logout", "--forget-secret"
    )
    assert code == 0, err
    assert json.loads(out) == {
        "manager_url": manager.url,
        "client_id": client_id,
        "room_tokens_revoked": 0,
        "secret_removed": True,
    }
    assert not (alice.directory / "token.json").exists()
    assert not (alice.directory / "credentials.json").exists()
    assert (alice.directory / "dpop-key.pem").exists()  # kept: no token of it is good
    code, _, err = run(capsys, "--profile", "alice", "login")
    assert code != 0 and "credentials.json is missing" in err, err
