"""Project roles over real HTTP: what owners manage, what members and strangers may not.

Owners manage their project's members and clients (``/v1/projects/{project}/…``);
a member who is not an owner gets ``403 project-role``; a client of another
project gets ``404 project``, the same answer as for a project that does not
exist. Then who may see and act on which rooms and functions ("another
project's resource").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import HTTPException

from cleanroom.client.errors import ServerError
from cleanroom.client.manager import ManagerClient
from cleanroom.manager import admin as operations
from cleanroom.manager import audit
from cleanroom.manager.auth import Auth
from cleanroom.manager.callers import user_caller
from cleanroom.manager.routes.projects import owned
from tests.auth import as_client

from .conftest import Manager, StandInController, make_bundle, make_spec, new_user


@dataclass
class Person:
    """A member's client, logged in."""

    client: ManagerClient
    client_id: str
    secret: str


def join(manager: Manager, project: str, member: str, role: str) -> Person:
    """Add ``member`` to ``project`` (created if missing) with a client, logged in."""
    with manager.sessions() as session:
        if project not in {p.name for p, _ in operations.list_projects(session)}:
            operations.create_project(session, project)
        operations.add_member(session, project, member, role)
        created = operations.create_client(session, project, member=member)
    client = manager.client()
    client.fetch_token(created.client_id, created.secret)
    return Person(client, created.client_id, created.secret)


@dataclass
class Acme:
    manager: Manager
    alice: Person  # owner of acme
    bob: Person  # member of acme
    carol: Person  # owner of globex


@pytest.fixture
def acme(manager: Manager) -> Acme:
    return Acme(
        manager,
        alice=join(manager, "acme", "alice", "owner"),
        bob=join(manager, "acme", "bob", "member"),
        carol=join(manager, "globex", "carol", "owner"),
    )


def refused(call: Callable[..., object], *args: Any, **kwargs: Any) -> ServerError:
    """The manager's answer when ``call`` was refused."""
    with pytest.raises(ServerError) as caught:
        call(*args, **kwargs)
    return caught.value


def entries(manager: Manager, action: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(actor, target, details) of every audit entry of ``action``, oldest first."""
    with manager.sessions() as session:
        return [
            (entry.actor, entry.target, json.loads(entry.details))
            for entry in audit.entries(session)
            if entry.action == action
        ]


def raw(manager: Manager, person: Person, method: str, path: str, **kwargs: Any) -> httpx.Response:
    url = f"{manager.url}{path}"
    headers = as_client(person.client, method, url)
    return httpx.request(method, url, headers=headers, **kwargs)


# -- what an owner does ------------------------------------------------------------------


def test_an_owner_lists_the_members_and_their_clients_without_secrets(acme: Acme) -> None:
    members = acme.alice.client.members("acme")
    assert [(m.name, m.role) for m in members] == [("alice", "owner"), ("bob", "member")]
    assert [c.client_id for c in members[1].clients] == [acme.bob.client_id]
    assert members[1].clients[0].member == "bob" and not members[1].clients[0].disabled
    body = raw(acme.manager, acme.alice, "GET", "/v1/projects/acme/members").text
    assert acme.bob.secret not in body and acme.alice.secret not in body
    assert "secret" not in body


def test_an_owner_adds_a_member_and_changes_its_role(acme: Acme) -> None:
    answer = raw(
        acme.manager, acme.alice, "PUT", "/v1/projects/acme/members/dave", json={"role": "member"}
    )
    assert answer.status_code == 201
    assert answer.json() | {"created": 0} == {
        "name": "dave",
        "project": "acme",
        "role": "member",
        "created": 0,
        "clients": [],
    }
    again = raw(
        acme.manager, acme.alice, "PUT", "/v1/projects/acme/members/dave", json={"role": "owner"}
    )
    assert again.status_code == 200 and again.json()["role"] == "owner"
    assert acme.alice.client.put_member("acme", "dave", "owner").role == "owner"  # a no-op
    assert entries(acme.manager, "member.added")[-1] == (
        acme.alice.client_id,
        "member:acme/dave",
        {"role": "member"},
    )
    assert entries(acme.manager, "member.role_changed") == [
        (acme.alice.client_id, "member:acme/dave", {"from": "member", "to": "owner"})
    ]


def test_an_owner_creates_a_client_for_a_member_and_sees_its_secret_once(acme: Acme) -> None:
    answer = raw(
        acme.manager,
        acme.alice,
        "POST",
        "/v1/projects/acme/clients",
        json={"member": "bob", "name": "ci"},
    )
    assert answer.status_code == 201
    assert answer.headers["cache-control"] == "no-store"
    created = answer.json()
    assert (created["member"], created["project"], created["name"]) == ("bob", "acme", "ci")
    second = manager_client(acme.manager, created["client_id"], created["client_secret"])
    assert (second.whoami()["member"], second.whoami()["role"]) == ("bob", "member")
    listed = raw(acme.manager, acme.alice, "GET", "/v1/projects/acme/members").text
    assert created["client_id"] in listed and created["client_secret"] not in listed
    assert entries(acme.manager, "client.created")[-1] == (
        acme.alice.client_id,
        f"client:{created['client_id']}",
        {"member": "bob", "name": "ci"},
    )


def test_a_client_created_without_a_member_is_its_own_member(acme: Acme) -> None:
    created = acme.alice.client.create_client("acme")
    assert created.member == created.client_id
    me = manager_client(acme.manager, created.client_id, created.client_secret).whoami()
    assert (me["member"], me["role"]) == (created.client_id, "member")


@pytest.mark.parametrize(
    "label",
    ["with\x00nul", "two\nlines", "x" * 101, "x" * 100_000, " padded", "tab\t", ""],
    ids=["nul", "newline", "101-chars", "100-kB", "leading-space", "tab", "empty"],
)
def test_a_client_label_is_short_printable_text(acme: Acme, label: str) -> None:
    before = len(acme.alice.client.members("acme"))
    error = refused(acme.alice.client.create_client, "acme", "bob", label)
    assert (error.status, error.check) == (422, "client-name")
    assert len(acme.alice.client.members("acme")) == before
    assert all(c.name != label for m in acme.alice.client.members("acme") for c in m.clients)


def test_a_client_label_of_100_printable_characters_is_kept(acme: Acme) -> None:
    label = "Alice's laptop (Zürich), " + "x" * 75
    assert len(label) == 100
    assert acme.alice.client.create_client("acme", "bob", label).name == label


def test_a_client_for_an_unknown_member_is_404(acme: Acme) -> None:
    error = refused(acme.alice.client.create_client, "acme", "mallory")
    assert (error.status, error.check) == (404, "member")
    assert error.detail == "project 'acme' has no member named 'mallory'"


def test_an_owner_disables_a_client_and_its_token_stops_at_once(acme: Acme) -> None:
    acme.bob.client.whoami()
    disabled = acme.alice.client.disable_client("acme", acme.bob.client_id)
    assert disabled.disabled and disabled.member == "bob"
    error = refused(acme.bob.client.whoami)
    assert (error.status, error.check) == (401, "token-revoked")
    assert "invalid_client" in str(refused(login, acme.manager, acme.bob))
    enabled = acme.alice.client.enable_client("acme", acme.bob.client_id)
    assert not enabled.disabled
    assert refused(acme.bob.client.whoami).check == "token-revoked"  # the old token stays dead
    login(acme.manager, acme.bob).whoami()
    done = entries(acme.manager, "client.disabled") + entries(acme.manager, "client.enabled")
    assert {actor for actor, _, _ in done} == {acme.alice.client_id}


def test_an_owner_rotates_a_secret_the_old_one_and_its_tokens_are_refused_at_once(
    acme: Acme,
) -> None:
    rotated = acme.alice.client.rotate_client("acme", acme.bob.client_id)
    assert (rotated.client_id, rotated.member) == (acme.bob.client_id, "bob")
    assert rotated.client_secret != acme.bob.secret
    assert "invalid_client" in str(refused(login, acme.manager, acme.bob))
    error = refused(acme.bob.client.whoami)
    assert (error.status, error.check) == (401, "token-revoked")
    assert manager_client(acme.manager, acme.bob.client_id, rotated.client_secret).whoami()
    assert entries(acme.manager, "client.rotated") == [
        (acme.alice.client_id, f"client:{acme.bob.client_id}", {})
    ]


def test_an_owner_removes_a_member_its_clients_stop_at_once(acme: Acme) -> None:
    acme.bob.client.whoami()
    assert acme.alice.client.remove_member("acme", "bob") == [acme.bob.client_id]
    assert refused(acme.bob.client.whoami).status == 401
    assert "invalid_client" in str(refused(login, acme.manager, acme.bob))
    assert [m.name for m in acme.alice.client.members("acme")] == ["alice"]
    error = refused(acme.alice.client.enable_client, "acme", acme.bob.client_id)
    assert (error.status, error.check) == (409, "client-member")
    error = refused(acme.alice.client.rotate_client, "acme", acme.bob.client_id)
    assert (error.status, error.check) == (409, "client-member")
    assert entries(acme.manager, "member.removed") == [
        (
            acme.alice.client_id,
            "member:acme/bob",
            {"role": "member", "clients_disabled": [acme.bob.client_id]},
        )
    ]


def test_the_last_owner_cannot_be_demoted_or_removed(acme: Acme) -> None:
    for call in (
        lambda: acme.alice.client.put_member("acme", "alice", "member"),
        lambda: acme.alice.client.remove_member("acme", "alice"),
    ):
        error = refused(call)
        assert (error.status, error.check) == (409, "last-owner")
        assert error.problem["actual"] == "'alice' is the only owner"
    assert [m.role for m in acme.alice.client.members("acme")] == ["owner", "member"]
    acme.alice.client.put_member("acme", "bob", "owner")
    acme.alice.client.put_member("acme", "alice", "member")  # bob is an owner now
    error = refused(acme.bob.client.remove_member, "acme", "bob")
    assert (error.status, error.check) == (409, "last-owner")


def test_a_demoted_owner_loses_its_rights_on_its_next_request(acme: Acme) -> None:
    acme.alice.client.put_member("acme", "bob", "owner")
    acme.bob.client.put_member("acme", "alice", "member")
    error = refused(acme.alice.client.members, "acme")
    assert (error.status, error.check) == (403, "project-role")


def test_bad_names_and_roles_are_422(acme: Acme) -> None:
    answer = raw(
        acme.manager, acme.alice, "PUT", "/v1/projects/acme/members/dave", json={"role": "admin"}
    )
    assert answer.status_code == 422 and answer.json()["check"] == "member-role"
    answer = raw(
        acme.manager, acme.alice, "PUT", "/v1/projects/acme/members/-x", json={"role": "member"}
    )
    assert answer.status_code == 422 and answer.json()["check"] == "member-name"
    answer = raw(acme.manager, acme.alice, "PUT", "/v1/projects/acme/members/dave", json={})
    assert answer.status_code == 422


# -- what members and strangers may not ---------------------------------------------------


def owner_calls(person: Person, project: str, target: str) -> list[Callable[[], object]]:
    """Every owner operation, on ``project``, acting on client ``target``."""
    client = person.client
    return [
        lambda: client.members(project),
        lambda: client.put_member(project, "dave", "owner"),
        lambda: client.remove_member(project, "alice"),
        lambda: client.create_client(project, "alice"),
        lambda: client.disable_client(project, target),
        lambda: client.enable_client(project, target),
        lambda: client.rotate_client(project, target),
    ]


def test_a_member_who_is_not_an_owner_gets_403_for_every_owner_operation(acme: Acme) -> None:
    for call in owner_calls(acme.bob, "acme", acme.alice.client_id):
        error = refused(call)
        assert (error.status, error.check) == (403, "project-role")
        assert (error.problem["expected"], error.problem["actual"]) == ("owner", "member")
        assert error.detail == "only an owner of project 'acme' may manage its members and clients"
    assert [m.role for m in acme.alice.client.members("acme")] == ["owner", "member"]
    assert acme.alice.client.whoami()  # nothing was disabled or rotated
    with acme.manager.sessions() as session:
        changes = [e for e in audit.entries(session) if e.action.startswith(("member.", "client."))]
    assert acme.bob.client_id not in {entry.actor for entry in changes}


def test_another_projects_owner_gets_404_as_if_the_project_did_not_exist(acme: Acme) -> None:
    for call in owner_calls(acme.carol, "acme", acme.alice.client_id):
        error = refused(call)
        assert (error.status, error.check) == (404, "project")
        assert error.detail == "no project named 'acme'"
        assert "alice" not in str(error.problem) and "bob" not in str(error.problem)
    nowhere = refused(acme.carol.client.members, "initech")
    assert (nowhere.status, nowhere.check, nowhere.detail) == (
        404,
        "project",
        "no project named 'initech'",
    )
    acme.alice.client.whoami()


def test_an_owner_cannot_reach_another_projects_client_through_its_own_project(
    acme: Acme,
) -> None:
    for call in (
        acme.alice.client.disable_client,
        acme.alice.client.enable_client,
        acme.alice.client.rotate_client,
    ):
        error = refused(call, "acme", acme.carol.client_id)
        assert (error.status, error.check) == (404, "client")
        assert error.detail == f"no client '{acme.carol.client_id}' in project 'acme'"
    acme.carol.client.whoami()  # untouched


def test_owner_routes_need_a_user_token(acme: Acme) -> None:
    answer = httpx.get(f"{acme.manager.url}/v1/projects/acme/members")
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"


# -- another project's resource -----------------------------------------------------------


@pytest.fixture
def deployed(acme: Acme, controller: StandInController, tmp_path: Path) -> tuple[str, bytes, str]:
    """acme's room "overlap" with bob's function: (function id, bundle, carol's user_id).

    Carol (globex) registered her key; the room names her as recipient.
    """
    bundle = make_bundle(tmp_path / "function")
    function = acme.bob.client.upload_function(bundle).function_id
    key, carol_user = new_user()
    acme.carol.client.register_user_key(key, acme.carol.client_id)
    acme.bob.client.deploy(make_spec(function, recipient=carol_user))
    return function, bundle, carol_user


def test_another_projects_room_is_404_to_get_and_to_delete(
    acme: Acme, deployed: tuple[str, bytes, str]
) -> None:
    stranger = join(acme.manager, "initech", "dave", "owner")
    for call in (stranger.client.room, stranger.client.delete):
        error = refused(call, "overlap")
        assert (error.status, error.detail) == (404, "no clean room named 'overlap'")
    assert stranger.client.rooms() == []
    assert acme.bob.client.room("overlap").state == "deployed"


def test_another_projects_function_is_404_to_download_and_to_deploy_with(
    acme: Acme, deployed: tuple[str, bytes, str]
) -> None:
    function, _, _ = deployed
    stranger = join(acme.manager, "initech", "dave", "owner")
    error = refused(stranger.client.download_function, function)
    assert (error.status, error.detail) == (404, f"no function {function}")
    error = refused(stranger.client.deploy, make_spec(function, name="copy"))
    assert error.status == 404
    assert error.detail == f"no function {function} (upload its bundle first)"


def test_a_participant_from_another_project_may_inspect_but_not_delete(
    acme: Acme, deployed: tuple[str, bytes, str]
) -> None:
    function, bundle, _ = deployed
    room = acme.carol.client.room("overlap")
    assert room.project == "acme"
    assert acme.carol.client.rooms() == [room]
    assert acme.carol.client.download_function(function) == bundle
    error = refused(acme.carol.client.delete, "overlap")
    assert error.status == 403
    assert error.detail == "only project 'acme', which deployed it, may delete 'overlap'"
    assert acme.bob.client.room("overlap").state == "deployed"


def test_every_member_of_the_project_sees_and_acts_on_its_rooms(
    acme: Acme, deployed: tuple[str, bytes, str]
) -> None:
    function, bundle, _ = deployed
    assert acme.alice.client.download_function(function) == bundle  # bob uploaded it
    assert acme.alice.client.room("overlap").project == "acme"
    assert acme.alice.client.delete("overlap").state == "deleted"


def test_a_removed_members_token_sees_nothing(acme: Acme, deployed: tuple[str, bytes, str]) -> None:
    acme.alice.client.remove_member("acme", "bob")
    for call in (acme.bob.client.rooms, lambda: acme.bob.client.room("overlap")):
        assert refused(call).status == 401


def test_an_owner_holding_a_members_secret_is_not_that_user(
    acme: Acme, controller: StandInController, deployed: tuple[str, bytes, str]
) -> None:
    """The owner who creates or rotates a member's client sees its secret. The member's
    user_id, and with it the rooms of other projects that name it, is only for tokens
    bound to the DPoP key the member's user key vouched for."""
    function, _, _ = deployed
    manager = acme.manager
    acme.carol.client.put_member("globex", "erin")
    created = acme.carol.client.create_client("globex", member="erin")
    erin = manager_client(manager, created.client_id, created.client_secret)
    key, erin_user = new_user()
    erin.register_user_key(key, created.client_id)
    room = acme.bob.client.deploy(make_spec(function, name="erins", recipient=erin_user))
    assert erin.room("erins") == room

    def not_erin(secret: str) -> None:
        owner = manager_client(manager, created.client_id, secret)  # the owner's own DPoP key
        assert owner.whoami()["user_id"] is None
        assert owner.rooms() == []
        assert refused(owner.room, "erins").status == 404
        room_token = refused(
            owner.fetch_token, created.client_id, secret, resource=controller.url, room="erins"
        )
        assert (room_token.status, room_token.check) == (400, "room")
        other, _ = new_user()  # nor can the owner put its own key in erin's place
        assert refused(owner.register_user_key, other, created.client_id).status == 409

    not_erin(created.client_secret)
    rotated = acme.carol.client.rotate_client("globex", created.client_id)
    not_erin(rotated.client_secret)
    erin.fetch_token(created.client_id, rotated.client_secret)  # the new secret, handed over
    assert erin.whoami()["user_id"] == erin_user
    assert erin.room("erins") == room


# -- helpers -----------------------------------------------------------------------------


def manager_client(manager: Manager, client_id: str, secret: str) -> ManagerClient:
    client = manager.client()
    client.fetch_token(client_id, secret)
    return client


def login(manager: Manager, person: Person) -> ManagerClient:
    return manager_client(manager, person.client_id, person.secret)


def test_an_owners_rights_are_read_again_where_they_are_used(acme: Acme) -> None:
    """A sync route's handler may wait for a thread after its caller was authenticated;
    its role was read again in its transaction, but not whether its client and token
    still count: an owner whose client was disabled meanwhile still managed the project
    (found by h17's red team)."""
    manager = acme.manager
    with manager.sessions() as session:
        claims = Auth(manager.settings, manager.sessions).verifier.issued_claims(
            acme.alice.client.token or ""
        )
        caller = user_caller(session, claims)  # as the request's dependency found it
        operations.set_client_disabled(session, acme.alice.client_id, True)
    with pytest.raises(HTTPException) as caught, owned(manager.sessions, caller, "acme"):
        pass
    assert caught.value.status_code == 401
    assert caught.value.detail["check"] == "token-revoked"
    assert caught.value.headers["WWW-Authenticate"].startswith('DPoP error="invalid_token"')
