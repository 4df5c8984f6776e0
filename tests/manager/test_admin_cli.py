"""``cleanroom admin`` and ``cleanroom server manager``, run as the operator runs them.

Commands on a running manager (``operator(manager, …)``) give its ``--database-url``
too, so they run on SQLite and on PostgreSQL like the manager itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from cleanroom.cli.main import main
from cleanroom.client.errors import ServerError
from cleanroom.client.manager import ManagerClient
from cleanroom.manager import audit
from cleanroom.manager.keys import keys_dir

from .conftest import Manager, closed_port_url


def admin(data_dir: Path, *args: str) -> int:
    return main(["admin", "--data-dir", str(data_dir), *args])


def operator(manager: Manager, *args: str) -> int:
    """``cleanroom admin`` on ``manager``'s database, whichever it is."""
    database = manager.settings.database_url
    return admin(
        manager.settings.data_dir, *(["--database-url", database] if database else []), *args
    )


def printed_credentials(out: str) -> tuple[str, str]:
    """(client_id, secret) from what `client create` or `client rotate` printed."""
    match = re.fullmatch(r"client_id: +(\S+)\nclient_secret: +(\S+)\n", out)
    assert match is not None, out
    return match.group(1), match.group(2)


def logged_in(manager: Manager, client_id: str, secret: str) -> ManagerClient:
    client = manager.client()
    client.fetch_token(client_id, secret)
    return client


def refusal(call: Callable[..., object], *args: object) -> ServerError:
    """What the manager answered when ``call(*args)`` was refused."""
    with pytest.raises(ServerError) as caught:
        call(*args)
    return caught.value


def actions(manager: Manager) -> list[tuple[str, str, str]]:
    with manager.sessions() as session:
        return [(e.actor, e.action, e.target) for e in audit.entries(session)]


def test_client_create_prints_the_secret_once_and_it_logs_in(
    manager: Manager, capsys: pytest.CaptureFixture[str]
) -> None:
    assert operator(manager, "project", "create", "acme") == 0
    assert capsys.readouterr().out == "project acme created\n"
    assert operator(manager, "client", "create", "--project", "acme", "--name", "alice") == 0
    captured = capsys.readouterr()
    client_id, secret = printed_credentials(captured.out)
    assert captured.out.count(secret) == 1
    assert "shown only once" in captured.err
    with ManagerClient(manager.url) as client:
        client.fetch_token(client_id, secret)
        assert client.whoami()["project"] == "acme"
    assert operator(manager, "client", "list") == 0
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
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "compute server c1 at http://127.0.0.1:8081 added"
    assert printed[1].startswith("client_id:     cs-")
    assert printed[2].startswith("client_secret: ")
    assert admin(tmp_path, "server", "add", "http://127.0.0.1:8081") == 2
    assert admin(tmp_path, "server", "add", "ftp://x") == 2
    capsys.readouterr()
    assert admin(tmp_path, "server", "list") == 0
    assert "http://127.0.0.1:8081" in capsys.readouterr().out
    assert admin(tmp_path, "project", "list") == 0
    assert "acme" in capsys.readouterr().out


def test_disable_and_enable_a_client(manager: Manager, capsys: pytest.CaptureFixture[str]) -> None:
    client_id, secret = manager.new_client("acme")
    assert operator(manager, "client", "disable", client_id) == 0
    with ManagerClient(manager.url) as client:
        with pytest.raises(Exception, match="invalid_client"):
            client.fetch_token(client_id, secret)
        assert operator(manager, "client", "enable", client_id) == 0
        client.fetch_token(client_id, secret)
    assert operator(manager, "client", "disable", "unknown") == 2


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
    ring = keys_dir(data_dir)
    assert [*ring.iterdir()]  # the signing key is there, readable by the manager alone
    assert all(path.stat().st_mode & 0o077 == 0 for path in [ring, *ring.iterdir()])
    assert admin(data_dir, "client", "create", "--project", "acme") == 2  # no such project yet
    assert admin(data_dir, "project", "create", "acme") == 0
    assert admin(data_dir, "client", "create", "--project", "acme") == 0
    match = re.search(r"client_id: +(\S+)\nclient_secret: +(\S+)\n", capsys.readouterr().out)
    assert match is not None
    client_id, secret = match.groups()
    with ManagerClient(url) as client:
        token = client.fetch_token(client_id, secret).access_token
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == url


# -- members, roles and credentials ------------------------------------------------------


@pytest.fixture
def acme(manager: Manager, capsys: pytest.CaptureFixture[str]) -> Manager:
    """Project acme with owner alice and member bob, created with `cleanroom admin`."""
    assert operator(manager, "project", "create", "acme") == 0
    assert operator(manager, "member", "add", "acme", "alice", "--role", "owner") == 0
    assert operator(manager, "member", "add", "acme", "bob") == 0
    assert capsys.readouterr().out == (
        "project acme created\n"
        "member alice added to acme as owner\n"
        "member bob added to acme as member\n"
    )
    return manager


def create(manager: Manager, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str]:
    assert operator(manager, "client", "create", *args) == 0
    return printed_credentials(capsys.readouterr().out)


def test_a_client_of_a_named_member_logs_in_as_that_member(
    acme: Manager, capsys: pytest.CaptureFixture[str]
) -> None:
    client_id, secret = create(acme, capsys, "acme", "--member", "alice", "--name", "laptop")
    me = logged_in(acme, client_id, secret).whoami()
    assert (me["project"], me["member"], me["role"]) == ("acme", "alice", "owner")
    assert operator(acme, "member", "list", "acme") == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["PROJECT", "MEMBER", "ROLE", "CLIENTS", "ENABLED", "CREATED"]
    assert [line.split()[:5] for line in listing[1:]] == [
        ["acme", "alice", "owner", "1", "1"],
        ["acme", "bob", "member", "0", "0"],
    ]
    assert operator(acme, "client", "list", "--project", "acme") == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[:4] == [client_id, "acme", "alice", "enabled"] and secret not in row
    assert ("operator", "client.created", f"client:{client_id}") in actions(acme)


def test_a_client_without_a_member_is_its_own_member(
    acme: Manager, capsys: pytest.CaptureFixture[str]
) -> None:
    client_id, secret = create(acme, capsys, "acme")
    me = logged_in(acme, client_id, secret).whoami()
    assert (me["member"], me["role"]) == (client_id, "member")


def test_client_create_for_an_unknown_member_fails(
    acme: Manager, capsys: pytest.CaptureFixture[str]
) -> None:
    assert operator(acme, "client", "create", "acme", "--member", "mallory") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: project 'acme' has no member named 'mallory'\n"


def test_client_create_needs_one_project(acme: Manager, capsys: pytest.CaptureFixture[str]) -> None:
    assert operator(acme, "client", "create") == 2
    assert "give the project" in capsys.readouterr().err
    assert operator(acme, "client", "create", "acme", "--project", "globex") == 2
    assert "two projects given" in capsys.readouterr().err
    assert operator(acme, "client", "create", "acme", "--project", "acme") == 0


def test_member_add_refusals(acme: Manager, capsys: pytest.CaptureFixture[str]) -> None:
    assert operator(acme, "member", "add", "acme", "bob", "--role", "owner") == 2
    assert capsys.readouterr().err == (
        "error: project 'acme' has a member named 'bob' (role member)\n"
    )
    assert operator(acme, "member", "add", "acme", "bob/../x") == 2
    assert "member name 'bob/../x' is not valid" in capsys.readouterr().err
    assert operator(acme, "member", "add", "acme", "carol", "--role", "admin") == 2
    assert "admin" in capsys.readouterr().err
    assert operator(acme, "member", "add", "nope", "carol") == 2
    assert capsys.readouterr().err.startswith("error: no project named 'nope'")
    assert operator(acme, "member", "remove", "acme", "carol") == 2
    assert capsys.readouterr().err == "error: project 'acme' has no member named 'carol'\n"


def test_member_role_changes_the_role_and_is_audited(
    acme: Manager, capsys: pytest.CaptureFixture[str]
) -> None:
    client_id, secret = create(acme, capsys, "acme", "--member", "bob")
    assert operator(acme, "member", "role", "acme", "bob", "owner") == 0
    assert capsys.readouterr().out == "member bob of acme is owner\n"
    assert logged_in(acme, client_id, secret).whoami()["role"] == "owner"
    # The operator may demote even the last owner: the project is then the operator's.
    assert operator(acme, "member", "role", "acme", "alice", "member") == 0
    assert operator(acme, "member", "role", "acme", "bob", "member") == 0
    changes = [a for a in actions(acme) if a[1] == "member.role_changed"]
    assert changes == [
        ("operator", "member.role_changed", "member:acme/bob"),
        ("operator", "member.role_changed", "member:acme/alice"),
        ("operator", "member.role_changed", "member:acme/bob"),
    ]


def test_member_remove_disables_its_clients_and_stops_their_tokens_at_once(
    acme: Manager, capsys: pytest.CaptureFixture[str]
) -> None:
    first = create(acme, capsys, "acme", "--member", "bob")
    second = create(acme, capsys, "acme", "--member", "bob")
    alice = create(acme, capsys, "acme", "--member", "alice")
    bob = logged_in(acme, *first)
    bob.whoami()
    assert operator(acme, "member", "remove", "acme", "bob") == 0
    out = capsys.readouterr().out
    assert out.startswith("member bob removed from acme; 2 client(s) disabled: ")
    assert first[0] in out and second[0] in out
    refused = refusal(bob.whoami)
    assert (refused.status, refused.check) == (401, "token-revoked")
    for client_id, secret in (first, second):
        assert "invalid_client" in str(refusal(acme.client().fetch_token, client_id, secret))
    logged_in(acme, *alice).whoami()  # another member's client is untouched
    assert operator(acme, "client", "enable", first[0]) == 2
    assert capsys.readouterr().err == (
        f"error: cannot enable client '{first[0]}': its member was removed "
        "(create a new client for a current member)\n"
    )
    assert operator(acme, "client", "list", "--project", "acme") == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows[first[0]][2:4] == ["-", "disabled"]
    assert ("operator", "member.removed", "member:acme/bob") in actions(acme)
    # The name can be given to a member again; the old clients stay the old member's.
    assert operator(acme, "member", "add", "acme", "bob") == 0
    assert operator(acme, "client", "enable", first[0]) == 2


def test_client_rotate_prints_a_new_secret_once_and_refuses_the_old_one(
    acme: Manager, capsys: pytest.CaptureFixture[str]
) -> None:
    client_id, old_secret = create(acme, capsys, "acme", "--member", "bob")
    before = logged_in(acme, client_id, old_secret)
    assert operator(acme, "client", "rotate", client_id) == 0
    captured = capsys.readouterr()
    rotated_id, new_secret = printed_credentials(captured.out)
    assert rotated_id == client_id and new_secret != old_secret
    assert "shown only once" in captured.err
    assert "invalid_client" in str(refusal(acme.client().fetch_token, client_id, old_secret))
    refused = refusal(before.whoami)  # a token issued before the rotation
    assert (refused.status, refused.check) == (401, "token-revoked")
    assert logged_in(acme, client_id, new_secret).whoami()["member"] == "bob"
    assert operator(acme, "client", "list") == 0
    listing = capsys.readouterr().out
    assert new_secret not in listing and old_secret not in listing
    assert operator(acme, "client", "rotate", "f" * 32) == 2
    assert capsys.readouterr().err == f"error: no client '{'f' * 32}'\n"
    assert ("operator", "client.rotated", f"client:{client_id}") in actions(acme)


def test_client_disable_stops_its_tokens_and_enable_does_not_revive_them(
    acme: Manager, capsys: pytest.CaptureFixture[str]
) -> None:
    client_id, secret = create(acme, capsys, "acme", "--member", "bob")
    before = logged_in(acme, client_id, secret)
    assert operator(acme, "client", "disable", client_id) == 0
    refused = refusal(before.whoami)
    assert (refused.status, refused.check) == (401, "token-revoked")
    assert operator(acme, "client", "enable", client_id) == 0
    refused = refusal(before.whoami)
    assert (refused.status, refused.check) == (401, "token-revoked")
    logged_in(acme, client_id, secret).whoami()
    done = [a for a in actions(acme) if a[2] == f"client:{client_id}"]
    assert [a[1] for a in done] == ["client.created", "client.disabled", "client.enabled"]
    assert {a[0] for a in done} == {"operator"}


def test_every_operator_change_is_audited_as_the_operator(
    acme: Manager, capsys: pytest.CaptureFixture[str]
) -> None:
    create(acme, capsys, "acme", "--member", "bob")
    assert operator(acme, "member", "remove", "acme", "bob") == 0
    assert [a[1] for a in actions(acme)] == [
        "project.created",
        "member.added",
        "member.added",
        "client.created",
        "member.removed",
    ]
    assert {a[0] for a in actions(acme)} == {"operator"}
    with acme.sessions() as session:
        assert audit.verify(session).ok


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["project", "create"], "Create a project"),
        (["project", "list"], "List the projects"),
        (["member", "add"], "Add a member"),
        (["member", "role"], "Change a member's role"),
        (["member", "remove"], "all its clients are disabled"),
        (["member", "list"], "List members"),
        (["client", "create"], "the secret is printed once"),
        (["client", "list"], "Secrets are never shown"),
        (["client", "disable"], "its tokens stop working at once"),
        (["client", "enable"], "Enable a disabled client"),
        (["client", "rotate"], "the old secret is refused"),
    ],
)
def test_every_command_says_what_it_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str], says: str
) -> None:
    assert admin(tmp_path, *command, "--help") == 0
    assert says in " ".join(capsys.readouterr().out.split())
