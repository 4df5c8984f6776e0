"""Clean rooms: validation, scheduling, deployment, visibility and deletion."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jwt
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from cleanroom.client.errors import ServerError
from cleanroom.client.manager import AccessToken, ManagerClient
from cleanroom.manager.auth import Auth
from cleanroom.manager.database import AuditEntry, RevokedToken, Room, RoomToken
from cleanroom.manager.grants import GrantRefused
from cleanroom.manager.keys import KeyRing
from cleanroom.protocol.encoding import b64u
from cleanroom.tokens import TokenIssuer
from tests.auth import as_client

from .conftest import (
    Manager,
    StandInController,
    _controller_app,
    bind,
    closed_port_url,
    make_bundle,
    make_spec,
    new_user,
    serve,
    url_of,
)


@pytest.fixture
def acme(manager: Manager, tmp_path: Path) -> tuple[ManagerClient, str, bytes]:
    """A logged-in client of project acme that uploaded a function: (client, fs id, bundle)."""
    client, _ = manager.login("acme")
    bundle = make_bundle(tmp_path / "function")
    return client, client.upload_function(bundle).function_id, bundle


def deploy_raw(manager: Manager, client: ManagerClient, spec: object) -> httpx.Response:
    url = f"{manager.url}/v1/rooms"
    return httpx.post(url, json={"spec": spec}, headers=as_client(client, "POST", url))


def test_deploy_schedules_and_deploys_on_the_controller(
    manager: Manager, controller: StandInController, acme: tuple[ManagerClient, str, bytes]
) -> None:
    client, function, bundle = acme
    spec = make_spec(function)
    room = client.deploy(spec)
    assert (room.name, room.project, room.state, room.reason) == (
        "overlap",
        "acme",
        "deployed",
        None,
    )
    assert (room.work_id, room.function, room.compute_url) == (
        spec.work_id,
        function,
        controller.url,
    )
    assert room.deployer == client.whoami()["client_id"]
    assert room.spec == spec.document()
    # The Controller got the spec and, with the manager's deploy token, the bundle.
    assert controller.deployed == {"overlap": spec.document()}
    assert controller.bundles == {"overlap": bundle}
    assert controller.refusals == []
    assert client.room("overlap") == room
    assert client.rooms() == [room]


def test_deploy_answers_201_over_raw_http(
    manager: Manager, controller: StandInController, acme: tuple[ManagerClient, str, bytes]
) -> None:
    client, function, _ = acme
    answer = deploy_raw(manager, client, make_spec(function).document())
    assert answer.status_code == 201 and answer.json()["state"] == "deployed"


def test_invalid_spec_is_422_naming_the_field(
    manager: Manager, controller: StandInController, acme: tuple[ManagerClient, str, bytes]
) -> None:
    client, function, _ = acme
    document = make_spec(function).document()
    document["runners"] = ["not-a-user-id"]
    answer = deploy_raw(manager, client, document)
    assert answer.status_code == 422
    problem = answer.json()
    assert problem["check"] == "work-spec"
    assert problem["actual"] == "runners.0"
    assert "runners.0" in problem["detail"]
    assert controller.deployed == {}


@pytest.mark.parametrize("where", ['"parameters": {', '{"spec": {', "{"])
def test_a_key_with_a_lone_surrogate_is_a_4xx(
    manager: Manager,
    controller: StandInController,
    acme: tuple[ManagerClient, str, bytes],
    where: str,
) -> None:
    """A key no UTF-8 or UTF-16 text holds (JCS cannot sort it): refused as malformed,
    and the refusal that quotes it still renders: never a 500."""
    client, function, _ = acme
    document = make_spec(function).document()
    body = json.dumps({"spec": document}).replace(where, where + '"\\ud800": 1, ', 1)
    assert "\\ud800" in body
    answer = httpx.post(
        f"{manager.url}/v1/rooms",
        content=body.encode(),
        headers={"authorization": f"Bearer {client.token}", "content-type": "application/json"},
    )
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert controller.deployed == {}


@pytest.mark.parametrize("runtime", ["python3.12", "python3.11-gpu", "python3.1"])
def test_a_runtime_outside_the_catalogue_is_422_naming_the_check(
    manager: Manager,
    controller: StandInController,
    acme: tuple[ManagerClient, str, bytes],
    runtime: str,
) -> None:
    client, function, _ = acme
    document = make_spec(function).document()
    document["runtime"] = runtime
    answer = deploy_raw(manager, client, document)
    assert answer.status_code == 422
    problem = answer.json()
    assert (problem["check"], problem["actual"]) == ("runtime", runtime)
    assert problem["expected"] == ["python3.11", "python3.11-data"]
    assert "spec field runtime: no such runtime" in problem["detail"]
    assert controller.deployed == {}


def test_the_data_runtime_is_deployed(
    manager: Manager, controller: StandInController, acme: tuple[ManagerClient, str, bytes]
) -> None:
    client, function, _ = acme
    document = make_spec(function).document()
    document["runtime"] = "python3.11-data"
    answer = deploy_raw(manager, client, document)
    assert answer.status_code == 201, answer.text


def test_unknown_function_is_404(
    manager: Manager, controller: StandInController, acme: tuple[ManagerClient, str, bytes]
) -> None:
    client, _, _ = acme
    with pytest.raises(ServerError) as caught:
        client.deploy(make_spec("fs://" + b64u(bytes(32))))
    assert caught.value.status == 404
    assert controller.deployed == {}


def test_another_projects_function_is_404(
    manager: Manager, controller: StandInController, acme: tuple[ManagerClient, str, bytes]
) -> None:
    _, function, _ = acme
    stranger, _ = manager.login("globex")
    with pytest.raises(ServerError) as caught:
        stranger.deploy(make_spec(function))
    assert caught.value.status == 404


def test_a_name_is_taken_within_its_project_only(
    manager: Manager,
    controller: StandInController,
    acme: tuple[ManagerClient, str, bytes],
    tmp_path: Path,
) -> None:
    client, function, _ = acme
    mine = client.deploy(make_spec(function))
    with pytest.raises(ServerError) as caught:
        client.deploy(make_spec(function))  # same name, same project
    assert caught.value.status == 409
    assert str(caught.value) == (
        "manager: 409 Conflict: project 'acme' has a clean room named 'overlap' (room-name)"
    )
    assert caught.value.check == "room-name"
    # Another project's use of the name is invisible: it deploys its own.
    other, _ = manager.login("globex")
    other_function = other.upload_function(make_bundle(tmp_path / "g", "def main(c): return 1\n"))
    theirs = other.deploy(make_spec(other_function.function_id))
    assert (theirs.name, theirs.project, theirs.state) == ("overlap", "globex", "deployed")
    assert client.room("overlap") == mine and other.room("overlap") == theirs
    assert other.rooms() == [theirs] and client.rooms() == [mine]
    # And the manager's tokens told the Controller whose room each was.
    deploys = [claims for claims in controller.claims if claims.scope == "deploy"]
    assert [(c.project, c.room) for c in deploys] == [("acme", "overlap"), ("globex", "overlap")]


def test_a_participant_names_the_project_where_names_collide(
    manager: Manager,
    controller: StandInController,
    acme: tuple[ManagerClient, str, bytes],
    tmp_path: Path,
) -> None:
    client, function, _ = acme
    carol, carol_id = manager.login("initech")
    key, carol_user = new_user()
    carol.register_user_key(key, carol_id)
    acme_room = client.deploy(make_spec(function, recipient=carol_user))
    other, _ = manager.login("globex")
    other_function = other.upload_function(make_bundle(tmp_path / "g", "def main(c): return 1\n"))
    globex_room = other.deploy(make_spec(other_function.function_id, recipient=carol_user))
    with pytest.raises(ServerError) as caught:
        carol.room("overlap")
    assert caught.value.status == 409 and caught.value.check == "room-ambiguous"
    assert caught.value.actual == ["acme", "globex"]
    assert carol.room("overlap", project="acme") == acme_room
    assert carol.room("overlap", project="globex") == globex_room
    with pytest.raises(ServerError) as unseen:
        carol.room("overlap", project="initech")
    assert unseen.value.status == 404


def test_a_live_room_of_another_project_wins_over_a_deleted_one_of_ones_own(
    manager: Manager, controller: StandInController, tmp_path: Path
) -> None:
    client, client_id = manager.login("acme")
    key, acme_user = new_user()
    client.register_user_key(key, client_id)
    function = client.upload_function(make_bundle(tmp_path / "f")).function_id
    client.deploy(make_spec(function))
    client.delete("overlap")
    other, _ = manager.login("globex")
    theirs = other.upload_function(make_bundle(tmp_path / "g", "def main(c): return 1\n"))
    live = other.deploy(make_spec(theirs.function_id, recipient=acme_user))
    assert client.room("overlap") == live
    assert client.room("overlap", project="acme").state == "deleted"


def test_the_managers_operation_tokens_name_the_server_the_room_and_the_operation(
    manager: Manager, controller: StandInController, acme: tuple[ManagerClient, str, bytes]
) -> None:
    client, function, _ = acme
    client.deploy(make_spec(function))
    client.delete("overlap")
    assert controller.refusals == []
    deploy, delete = controller.claims
    for claims, scope in ((deploy, "deploy"), (delete, "delete")):
        assert (claims.audience, claims.scope, claims.project, claims.room) == (
            controller.url,
            scope,
            "acme",
            "overlap",
        )
        assert claims.sub == "cleanroom-manager" and claims.jkt is None
        assert claims.exp - claims.iat == 15  # seconds, not an hour
    assert deploy.jti != delete.jti


def test_no_compute_server_is_503(manager: Manager, acme: tuple[ManagerClient, str, bytes]) -> None:
    client, function, _ = acme
    with pytest.raises(ServerError) as caught:
        client.deploy(make_spec(function))
    assert caught.value.status == 503
    assert "cleanroom admin server add" in caught.value.detail
    assert client.rooms() == []


def test_unreachable_compute_server_fails_the_room_with_502(
    manager: Manager, acme: tuple[ManagerClient, str, bytes]
) -> None:
    client, function, _ = acme
    url = closed_port_url()
    manager.add_server(url)
    with pytest.raises(ServerError) as caught:
        client.deploy(make_spec(function))
    assert caught.value.status == 502
    assert url in caught.value.detail
    room = client.room("overlap")
    assert room.state == "failed"
    assert room.reason is not None and f"cannot reach the compute server at {url}" in room.reason


def test_a_controller_that_refuses_fails_the_room_with_its_answer(
    manager: Manager, acme: tuple[ManagerClient, str, bytes]
) -> None:
    # A server registered with a wrong path: it answers, but 404 to the deploy.
    client, function, _ = acme
    wrong = FastAPI()
    sock = bind()
    with serve(wrong, sock):
        manager.add_server(url_of(sock) + "/wrong-path")
        with pytest.raises(ServerError) as caught:
            client.deploy(make_spec(function))
    assert caught.value.status == 502
    room = client.room("overlap")
    assert room.state == "failed"
    assert room.reason is not None and "answered 404: Not Found" in room.reason


def test_least_loaded_compute_server_is_chosen(
    manager: Manager,
    start_controller: Callable[[Manager], StandInController],
    acme: tuple[ManagerClient, str, bytes],
) -> None:
    client, function, _ = acme
    first, second = start_controller(manager), start_controller(manager)
    urls = [client.deploy(make_spec(function, name=f"room-{i}")).compute_url for i in range(4)]
    assert urls == [first.url, second.url, first.url, second.url]
    client.delete("room-0")
    client.delete("room-2")
    assert client.deploy(make_spec(function, name="room-4")).compute_url == first.url


def test_another_project_cannot_see_the_room_or_its_bundle(
    manager: Manager, controller: StandInController, acme: tuple[ManagerClient, str, bytes]
) -> None:
    client, function, _ = acme
    client.deploy(make_spec(function))
    stranger, _ = manager.login("globex")
    with pytest.raises(ServerError) as caught:
        stranger.room("overlap")
    assert caught.value.status == 404
    assert caught.value.detail == "no clean room named 'overlap'"
    assert caught.value.check == "room"
    assert stranger.rooms() == []
    with pytest.raises(ServerError) as download:
        stranger.download_function(function)
    assert download.value.status == 404
    with pytest.raises(ServerError) as delete:
        stranger.delete("overlap")
    assert delete.value.status == 404


def test_a_participant_from_another_project_sees_the_room_and_bundle_but_cannot_delete(
    manager: Manager, controller: StandInController, acme: tuple[ManagerClient, str, bytes]
) -> None:
    client, function, bundle = acme
    partner, partner_id = manager.login("globex")
    key, partner_user = new_user()
    partner.register_user_key(key, partner_id)
    room = client.deploy(make_spec(function, recipient=partner_user))
    assert partner.room("overlap") == room
    assert partner.rooms() == [room]
    assert partner.download_function(function) == bundle
    with pytest.raises(ServerError) as caught:
        partner.delete("overlap")
    assert caught.value.status == 403
    assert client.room("overlap").state == "deployed"


def test_a_spec_is_live_in_one_room_at_a_time(
    manager: Manager, controller: StandInController, acme: tuple[ManagerClient, str, bytes]
) -> None:
    """Another project shown a spec deploys an identical copy: a second Worker of one
    Work-ID, which would accept the sessions, status and receipts meant for the first."""
    client, function, bundle = acme
    spec = make_spec(function)
    client.deploy(spec)
    copier, _ = manager.login("globex")
    copier.upload_function(bundle)
    with pytest.raises(ServerError) as caught:
        copier.deploy(spec)
    assert (caught.value.status, caught.value.check) == (409, "work-id-live")
    assert spec.work_id in caught.value.detail
    client.delete(spec.name)
    assert copier.deploy(spec).state == "deployed"


def test_an_unregistered_client_of_another_project_is_not_a_participant(
    manager: Manager, controller: StandInController, acme: tuple[ManagerClient, str, bytes]
) -> None:
    # The user_id is in the spec, but this client never proved it holds that key.
    client, function, _ = acme
    _, partner_user = new_user()
    client.deploy(make_spec(function, recipient=partner_user))
    stranger, _ = manager.login("globex")
    with pytest.raises(ServerError) as caught:
        stranger.room("overlap")
    assert caught.value.status == 404


def test_delete_tells_the_controller_and_frees_the_name(
    manager: Manager, controller: StandInController, acme: tuple[ManagerClient, str, bytes]
) -> None:
    client, function, _ = acme
    client.deploy(make_spec(function))
    deleted = client.delete("overlap")
    assert deleted.state == "deleted"
    assert controller.deleted == ["overlap"]
    assert client.room("overlap").state == "deleted"
    assert client.delete("overlap").state == "deleted"  # again: nothing to do
    assert controller.deleted == ["overlap"]
    again = client.deploy(make_spec(function))
    assert again.state == "deployed" and client.room("overlap") == again


def test_the_list_leaves_deleted_rooms_out_unless_asked(
    manager: Manager, controller: StandInController, acme: tuple[ManagerClient, str, bytes]
) -> None:
    """The manager keeps every room, and anyone may name a user in a room and delete it
    again: deleted rooms in every list would grow a user's list without bound."""
    client, function, _ = acme
    partner, partner_id = manager.login("globex")
    key, partner_user = new_user()
    partner.register_user_key(key, partner_id)
    client.deploy(make_spec(function, recipient=partner_user))
    deleted = client.delete("overlap")
    again = client.deploy(make_spec(function, recipient=partner_user))
    for who in (client, partner):
        assert who.rooms() == [again]
        assert who.rooms(deleted=True) == [deleted, again]


def test_delete_of_a_live_room_with_an_unreachable_controller_is_502_and_keeps_it(
    manager: Manager, acme: tuple[ManagerClient, str, bytes]
) -> None:
    # Its Worker may still run: the room stays until its Controller confirms.
    client, function, _ = acme
    sock = bind()
    url = url_of(sock)
    stand_in = StandInController(url)
    stand_in.credentials = manager.add_server(url)
    with serve(_controller_app(manager.url, stand_in), sock):
        client.deploy(make_spec(function))
    with pytest.raises(ServerError) as caught:
        client.delete("overlap")
    assert caught.value.status == 502
    assert f"cannot reach the compute server at {url}" in caught.value.detail
    assert "the room is unchanged" in caught.value.detail
    assert client.room("overlap").state == "deployed"


def test_a_failed_room_is_deleted_even_if_its_controller_cannot_be_told(
    manager: Manager, acme: tuple[ManagerClient, str, bytes]
) -> None:
    client, function, _ = acme
    url = closed_port_url()
    manager.add_server(url)
    with pytest.raises(ServerError):
        client.deploy(make_spec(function))
    assert client.delete("overlap").state == "deleted"
    entries = audit_entries(manager, "room.deleted")
    assert len(entries) == 1 and entries[0]["before"] == "failed"
    assert f"cannot reach the compute server at {url}" in entries[0]["controller"]


def audit_entries(manager: Manager, action: str) -> list[dict[str, object]]:
    with manager.sessions() as session:
        query = select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
        return [json.loads(entry.details) for entry in session.scalars(query)]


def test_deploy_and_delete_are_audited(
    manager: Manager, controller: StandInController, acme: tuple[ManagerClient, str, bytes]
) -> None:
    client, function, _ = acme
    spec = make_spec(function)
    client.deploy(spec)
    client.delete("overlap")
    client_id = client.whoami()["client_id"]
    with manager.sessions() as session:
        actions = [
            (entry.actor, entry.action, entry.target)
            for entry in session.scalars(
                select(AuditEntry).where(AuditEntry.action.like("room.%")).order_by(AuditEntry.seq)
            )
        ]
    assert actions == [
        (client_id, "room.deployed", "overlap"),
        (client_id, "room.deleted", "overlap"),
    ]
    assert audit_entries(manager, "room.deployed") == [
        {
            "project": "acme",
            "work_id": spec.work_id,
            "compute_server": controller.url.removeprefix("http://"),
        }
    ]
    assert audit_entries(manager, "room.deleted") == [
        {"project": "acme", "before": "deployed", "controller": "confirmed", "tokens_revoked": 0}
    ]


def test_delete_of_a_room_the_controller_does_not_know_marks_it_deleted(
    manager: Manager, controller: StandInController, acme: tuple[ManagerClient, str, bytes]
) -> None:
    client, function, _ = acme
    client.deploy(make_spec(function))
    del controller.deployed["overlap"]  # the Controller lost it (restarted, say)
    assert client.delete("overlap").state == "deleted"


def test_a_compute_token_cannot_fetch_a_function_no_live_room_on_its_server_uses(
    manager: Manager, acme: tuple[ManagerClient, str, bytes]
) -> None:
    _, function, _ = acme
    answer = httpx.get(
        f"{manager.url}/v1/functions/{function.removeprefix('fs://')}",
        headers={"authorization": f"Bearer {manager.compute_token()}"},
    )
    assert answer.status_code == 404


def test_an_operation_token_reads_nothing_at_the_manager(
    manager: Manager, acme: tuple[ManagerClient, str, bytes]
) -> None:
    # Even one made out for the manager itself (the manager never issues such a thing).
    _, function, _ = acme
    token, _ = TokenIssuer(manager.url, KeyRing.open(manager.settings.data_dir)).issue(
        "cleanroom-manager", audience=manager.url, scope="deploy", project="acme", room="x"
    )
    answer = httpx.get(
        f"{manager.url}/v1/functions/{function.removeprefix('fs://')}",
        headers={"authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 403 and answer.json()["check"] == "token-scope"


def test_a_deleted_rooms_tokens_are_revoked_before_its_name_is_deployed_again(
    manager: Manager, controller: StandInController, acme: tuple[ManagerClient, str, bytes]
) -> None:
    """A room token names its project, its room's name and the server, not the room: a
    Controller took a token issued for a deleted room on the next room of that name the
    project deployed there, for the rest of the token's hour. A party of the old room
    only, with such a token, read the new room's state, evidence and receipt (found by
    h17's red team). Deleting a room revokes every token issued for it, and the
    revocation list carries them to every Controller."""
    client, function, _ = acme
    carol_id, secret = manager.new_client("globex")
    carol = manager.client()
    carol.fetch_token(carol_id, secret)
    key, carol_user = new_user()
    carol.register_user_key(key, carol_id)
    bob_id, bob_secret = manager.new_client("acme")
    bob = manager.client()
    client.deploy(make_spec(function, recipient=carol_user))
    # A token for a room is returned, not kept: carol keeps her token for the manager.
    old = carol.fetch_token(carol_id, secret, resource=controller.url, room="overlap")
    own = bob.fetch_token(bob_id, bob_secret, resource=controller.url, room="overlap")
    assert client.delete("overlap").state == "deleted"
    listed = httpx.get(
        f"{manager.url}/v1/revocations",
        headers={"Authorization": f"Bearer {controller.compute_token(manager.url)}"},
    ).json()["tokens"]
    assert {_jti(old.access_token), _jti(own.access_token)} <= {entry["jti"] for entry in listed}
    with manager.sessions() as session:
        deleted = [
            json.loads(entry.details)
            for entry in session.scalars(select(AuditEntry))
            if entry.action == "room.deleted"
        ]
    assert deleted[-1]["tokens_revoked"] == 2
    client.deploy(make_spec(function))  # the same name, on the same server, without carol
    with pytest.raises(ServerError) as refused:  # she sees the deleted one only
        carol.fetch_token(carol_id, secret, resource=controller.url, room="overlap")
    assert (refused.value.status, refused.value.check) == (400, "token-room")


def test_a_room_token_is_not_issued_for_a_room_deleted_while_it_was_made(
    manager: Manager, controller: StandInController, acme: tuple[ManagerClient, str, bytes]
) -> None:
    """The token endpoint checks the room, then signs; a delete may come between. The
    token is kept, then the room read again under its lock, so a room deleted meanwhile
    gets no token that its delete did not revoke."""
    client, function, _ = acme
    room_id = _room_id(manager, client.deploy(make_spec(function)).name)
    client.delete("overlap")
    auth = Auth(manager.settings, manager.sessions)
    token, _ = auth.issuer.issue(
        "someone", audience=controller.url, scope="user", project="acme", room="overlap"
    )
    with pytest.raises(GrantRefused) as refused:
        auth.grants._audit(token, room_id)
    assert (refused.value.error, refused.value.check) == ("invalid_target", "token-room")
    with manager.sessions() as session:
        assert session.scalars(select(RoomToken)).all() == []


def _jti(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


def _room_id(manager: Manager, name: str) -> int:
    with manager.sessions() as session:
        return session.scalars(select(Room.id).where(Room.name == name)).one()


def test_room_tokens_asked_for_at_once_are_all_issued(
    manager: Manager, controller: StandInController, acme: tuple[ManagerClient, str, bytes]
) -> None:
    """Each is kept under its room's lock, taken before anything else: two taking the
    foreign-key lock of their insert first, then the room's, deadlocked on PostgreSQL."""
    client, function, _ = acme
    client.deploy(make_spec(function))
    members = [manager.new_client("acme") for _ in range(8)]
    start = threading.Barrier(len(members))

    def token(credentials: tuple[str, str]) -> AccessToken:
        start.wait()
        return manager.client().fetch_token(*credentials, resource=controller.url, room="overlap")

    with ThreadPoolExecutor(len(members)) as pool:
        tokens = list(pool.map(token, members))
    assert len({_jti(token.access_token) for token in tokens}) == len(members)
    with manager.sessions() as session:
        assert len(session.scalars(select(RoomToken)).all()) == len(members)


def test_a_room_token_its_holder_revoked_is_revoked_once_when_the_room_is_deleted(
    manager: Manager, controller: StandInController, acme: tuple[ManagerClient, str, bytes]
) -> None:
    client, function, _ = acme
    client.deploy(make_spec(function))
    bob_id, bob_secret = manager.new_client("acme")
    bob = manager.client()
    ended = bob.fetch_token(bob_id, bob_secret, resource=controller.url, room="overlap")
    kept = bob.fetch_token(bob_id, bob_secret, resource=controller.url, room="overlap")
    form = {"token": ended.access_token}
    assert httpx.post(f"{manager.url}/oauth/revoke", data=form).status_code == 200
    assert client.delete("overlap").state == "deleted"
    with manager.sessions() as session:
        deleted = [
            json.loads(entry.details)
            for entry in session.scalars(select(AuditEntry))
            if entry.action == "room.deleted"
        ]
        revoked = {row.jti for row in session.scalars(select(RevokedToken))}
    assert deleted[-1]["tokens_revoked"] == 1
    assert {_jti(ended.access_token), _jti(kept.access_token)} <= revoked
