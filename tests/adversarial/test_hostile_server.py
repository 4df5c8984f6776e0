"""Credentials a compute server sees are worthless anywhere else, tried from outside.

A deployment of real processes: a manager, two honest compute servers ("local" and
"other") and a hostile one, registered the way an operator registers any server
(`admin server add`, its credentials file, `cleanroom server compute`), whose
operator records everything that reaches its Controller (a proxy at its registered
URL). Users of two projects work normally: acme's rooms live on the honest servers
and one on the hostile server; globex has a room of its own.

Then, as that operator, every credential the hostile server saw (the users' room
tokens with their DPoP proofs, the manager's deploy and status tokens, its own
compute token) is tried on every route of both OpenAPI documents, at the manager
and at the honest Controllers, aimed at acme's rooms, function, project and
clients. And, as the issue lists them, every route with no token, a foreign
project's token, a lower role, a disabled and a rotated client's token, another
resource's token, a token without its proof and one with a replayed proof.

Every answer is 401, 403 or 404: never 2xx, never 5xx, and never a byte of acme's
data. Afterwards nothing was created, changed or deleted.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from cleanroom.client.manager import ManagerClient
from cleanroom.dpop import ProofKey
from cleanroom.errors import CheckFailed
from cleanroom.insecure.localstack import LocalStack, free_port
from cleanroom.manager import admin as operations
from cleanroom.manager.database import open_database
from cleanroom.manager.settings import default_database_url
from tests.adversarial.proxy import Message, TamperingProxy
from tests.auth import dpop
from tests.e2e.conftest import User, confinement_available, make_user
from tests.e2e.helpers import HANDLER, approve, deploy

REFUSED = {401, 403, 404}
SESSION = "A" * 22
PUBLIC = {
    ("GET", "/v1/health"),
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/oauth/token"),  # its refusals are OAuth errors: tested in tests/manager
    ("POST", "/oauth/revoke"),  # whoever holds a token may end it (RFC 7009)
}


@dataclass
class World:
    """The deployment, its people, and what each party holds."""

    stack: LocalStack
    proxy: TamperingProxy
    alice: User  # acme
    bob: User  # globex, who takes part in acme's rooms
    mallory: User  # globex, who takes part in nothing of acme's
    carol: User  # acme, a member (not an owner)
    owner: User  # acme, an owner
    dave: User  # acme, disabled after it got its tokens
    erin: User  # acme, rotated after it got its tokens
    servers: dict[str, str] = field(default_factory=dict)  # name -> URL
    victim_digest: str = ""
    victim_work_id: str = ""
    stale: dict[str, dict[str, str]] = field(default_factory=dict)  # user -> its old tokens

    @property
    def manager(self) -> str:
        return self.stack.manager_url


def _operator(stack: LocalStack) -> Any:
    return open_database(default_database_url(stack.manager_dir))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if not confinement_available():
        pytest.skip("functions cannot be confined here (needs root, unshare, setpriv)")
    directory = tmp_path_factory.mktemp("outside")
    with LocalStack(directory) as stack:
        stack.add_project("acme")
        stack.add_project("globex")
        other = stack.add_compute_server("other")
        proxy_port = free_port()
        hostile = stack.add_compute_server(
            "hostile", advertise_url=f"http://127.0.0.1:{proxy_port}"
        )
        proxy = TamperingProxy(hostile.url, port=proxy_port)
        proxy.start()
        try:
            yield _populate(stack, proxy, other.url, tmp_path_factory)
        finally:
            proxy.stop()


def _populate(
    stack: LocalStack, proxy: TamperingProxy, other: str, factory: pytest.TempPathFactory
) -> World:
    users = {
        name: make_user(stack, factory.mktemp(name), name, project)
        for name, project in (
            ("alice", "acme"),
            ("bob", "globex"),
            ("mallory", "globex"),
            ("carol", "acme"),
            ("dave", "acme"),
            ("erin", "acme"),
        )
    }
    sessions = _operator(stack)
    with sessions() as session:
        operations.add_member(session, "acme", "the-owner", "owner")
        created = operations.create_client(session, "acme", member="the-owner")
    users["owner"] = _user_for(stack, factory, "owner", "acme", created.client_id, created.secret)
    world = World(stack, proxy, **users)
    world.servers = {"local": stack.compute_url, "other": other, "hostile": proxy.url}
    alice, bob = world.alice, world.bob
    tmp = factory.mktemp("rooms")
    # Scheduling: least loaded first, the oldest server on a tie.
    # The victim's function is its own: no other server may read its bundle.
    world.victim_work_id = deploy(alice, bob, tmp, "victim", HANDLER + "# victim\n")  # local
    deploy(alice, bob, tmp, "elsewhere")  # -> other
    # Every user holds a token for the manager and for acme's victim room (if it may).
    for user in (world.dave, world.erin):
        world.stale[user.name] = {
            "manager": user.profile.access_token(),
            "victim": user.profile.access_token(
                resource=stack.compute_url, room="victim", project="acme"
            ),
        }
    with sessions() as session:
        operations.set_client_disabled(session, world.dave.profile.config.client_id, True)
        operations.rotate_client(session, world.erin.profile.config.client_id)
    _wait_until_the_controllers_know(world)
    # The hostile server's room last: the deploy token it captures lives 15 s (and 30 s
    # of leeway), and the first test replays it while it is still valid, so that what
    # refuses it is where it is replayed, not its age.
    deploy(alice, bob, tmp, "exposed")  # -> hostile: it sees acme's tokens for this room
    deploy(bob, alice, factory.mktemp("globex"), "theirs")  # -> local
    rooms = {room.name: room for room in alice.client.manager.rooms()}
    assert rooms["victim"].compute_url == stack.compute_url
    assert rooms["elsewhere"].compute_url == other
    assert rooms["exposed"].compute_url == proxy.url
    world.victim_digest = rooms["victim"].function.removeprefix("fs://")
    # Users work on the hostile server's room: it records every credential they send.
    # (Its simulated platform is its own, whose root they do not trust: their clients
    # refuse its evidence, after it has seen their tokens and proofs.)
    approve(bob, "exposed")
    for user in (alice, bob):
        assert user.client.state("exposed")["state"] == "collecting"
        with pytest.raises(CheckFailed) as refused:
            user.client.attest("exposed")
        assert refused.value.check == "quote-verification"
    return world


def _user_for(
    stack: LocalStack,
    factory: pytest.TempPathFactory,
    name: str,
    project: str,
    client_id: str,
    secret: str,
) -> User:
    from cleanroom.client import CleanRoomClient
    from cleanroom.client.profile import Profile
    from cleanroom.tee.reference import LocalMeasurement

    home = factory.mktemp(name)
    profile = Profile.create(
        name,
        home,
        manager_url=stack.manager_url,
        client_id=client_id,
        client_secret=secret,
        project=project,
        simulator_root=stack.simulated_root_pem().encode(),
        reference=LocalMeasurement(),
    )
    return User(name, home, profile, CleanRoomClient(profile))


def _wait_until_the_controllers_know(world: World) -> None:
    """Revocations reach Controllers within seconds: wait for it (never asserted as speed)."""
    token = world.stale["dave"]["victim"]
    url = f"{world.stack.compute_url}/v1/rooms/victim"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = httpx.get(url, headers=dpop(world.dave.profile.proof_key, token, "GET", url))
        if answer.status_code == 401:
            return
        time.sleep(0.5)
    raise AssertionError("the Controller never learnt of the disabled client")


# -- every route of both OpenAPI documents, aimed at acme's things ----------------------


@dataclass(frozen=True)
class Route:
    method: str
    template: str

    def path(self, world: World) -> str:
        owner_client = world.owner.profile.config.client_id
        values = {
            "name": "the-owner" if "/members/" in self.template else "victim",
            "digest": world.victim_digest,
            "project": "acme",
            "client_id": owner_client,
            "session_id": SESSION,
            "number": "1",  # a SQL room's query run
        }
        return re.sub(r"\{(\w+)\}", lambda match: values[match.group(1)], self.template)

    def body(self, world: World) -> dict[str, Any]:
        """A well-formed body: only the credentials can decide the answer."""
        nonce = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
        if self.template.endswith(("/attestation", "/status", "/budget")):
            return {"json": {"nonce": nonce}}
        if self.template.endswith("/sessions"):
            return {"json": {"init": {}, "signature": "AA"}}
        if self.template.endswith("/upload") and "/sessions/" in self.template:
            return {"content": b"\x00\x00\x00\x00"}
        if self.template == "/v1/rooms" and self.method == "POST":
            return {"json": {"spec": world.alice.client.manager.room("victim").spec}}
        if self.template == "/v1/rooms/{name}" and self.method == "PUT":
            return {"json": {"spec": world.alice.client.manager.room("victim").spec}}
        if self.template.endswith("/members/{name}") and self.method == "PUT":
            return {"json": {"role": "owner"}}
        if self.template.endswith("/clients") and self.method == "POST":
            return {"json": {"member": "the-owner", "name": "stolen"}}
        if self.template == "/v1/functions":
            return {"content": b"not a bundle"}
        if self.template == "/v1/whoami/user-key":
            return {"json": {"user_key": "AA", "signature": "AA"}}
        return {}


def routes(url: str) -> list[Route]:
    document = httpx.get(f"{url}/openapi.json").json()
    found = [
        Route(method.upper(), path)
        for path, operations_of in document["paths"].items()
        for method in operations_of
        if (method.upper(), path) not in PUBLIC
    ]
    assert found, f"{url}/openapi.json lists no route"
    return found


def manager_routes(world: World) -> list[Route]:
    return routes(world.manager)


def controller_routes(world: World) -> list[Route]:
    return routes(world.stack.compute_url)


OWNER_ROUTES = re.compile(r"^/v1/projects/")
ADDRESSED = re.compile(r"\{")  # routes that name a resource of acme's


def send(world: World, base: str, route: Route, headers: dict[str, str]) -> httpx.Response:
    return httpx.request(
        route.method, base + route.path(world), headers=headers, timeout=30, **route.body(world)
    )


def assert_refused(answer: httpx.Response, world: World, what: str) -> None:
    where = f"{what}: {answer.request.method} {answer.request.url}"
    assert answer.status_code in REFUSED, f"{where} answered {answer.status_code}: {answer.text}"
    body = answer.text
    # What the request did not already carry (a 404 may repeat the digest it was asked).
    acme = (world.victim_work_id, world.alice.user_id, world.alice.profile.config.client_id)
    for secret in acme:
        assert secret not in body, f"{where} leaked acme's data: {body[:300]}"


def with_proof(key: ProofKey, token: str, method: str, url: str) -> dict[str, str]:
    return dpop(key, token, method, url)


# -- the hostile server's loot -----------------------------------------------------------


def loot(world: World) -> list[Message]:
    """Every request that reached the hostile server carrying a credential."""
    return [m for m in world.proxy.seen if "authorization" in m.headers]


def own_compute_token(world: World) -> str:
    credentials = world.stack.credentials["hostile"]
    answer = httpx.post(
        f"{world.manager}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": credentials.client_id,
            "client_secret": credentials.client_secret,
        },
    )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def test_the_captured_deploy_token_deploys_nothing_anywhere(world: World) -> None:
    """First in this module: the token is replayed while it is still valid (see _populate)."""
    [put] = [m for m in loot(world) if m.method == "PUT"]
    for name in ("local", "other"):
        for room in ("exposed", "victim", "stolen"):
            answer = httpx.put(
                f"{world.servers[name]}/v1/rooms/{room}",
                content=put.body,
                headers={**put.headers, "content-type": "application/json"},
            )
            assert answer.status_code == 401 and answer.json()["check"] == "token-audience"
            deleted = httpx.delete(f"{world.servers[name]}/v1/rooms/{room}", headers=put.headers)
            assert deleted.status_code in (401, 403)
    # At its own Controller (honest code): once used, for that room only.
    replay = httpx.put(
        f"{world.proxy.upstream}/v1/rooms/exposed",
        content=put.body,
        headers={**put.headers, "content-type": "application/json"},
    )
    assert replay.status_code == 401 and replay.json()["check"] == "token-replayed"
    other_room = httpx.put(
        f"{world.proxy.upstream}/v1/rooms/victim",
        content=put.body,
        headers={**put.headers, "content-type": "application/json"},
    )
    assert other_room.status_code == 403 and other_room.json()["check"] == "token-room"


def test_the_hostile_server_saw_credentials_of_every_kind(world: World) -> None:
    kinds = {m.headers["authorization"].split()[0] for m in loot(world)}
    assert kinds == {"Bearer", "DPoP"}  # the manager's deploy token, the users' tokens
    assert any(m.method == "PUT" for m in loot(world))
    assert any("dpop" in m.headers for m in loot(world))


def test_every_credential_it_saw_is_refused_everywhere_else(world: World) -> None:
    attacker_key = ProofKey.generate()  # the hostile operator's own key: never the users'
    targets = [("manager", world.manager, manager_routes(world))] + [
        (name, world.servers[name], controller_routes(world)) for name in ("local", "other")
    ]
    tried = 0
    for message in loot(world):
        scheme, _, token = message.headers["authorization"].partition(" ")
        attempts: list[tuple[str, dict[str, str] | None]] = [("as captured", None)]
        if scheme == "DPoP":
            attempts.append(("with the attacker's own proof", {}))
        for label, _ in attempts:
            for target, base, target_routes in targets:
                for route in target_routes:
                    url = base + route.path(world)
                    if label == "as captured":
                        headers = dict(message.headers)
                    else:
                        headers = with_proof(attacker_key, token, route.method, url)
                    answer = send(world, base, route, headers)
                    assert_refused(answer, world, f"{target}, {scheme} token {label}")
                    tried += 1
    assert tried > 100


def test_its_own_compute_token_reads_only_what_it_hosts(world: World) -> None:
    token = own_compute_token(world)
    bearer = {"authorization": f"Bearer {token}"}
    for route in manager_routes(world):
        if route.template in ("/v1/revocations",):
            continue
        assert_refused(send(world, world.manager, route, bearer), world, "its compute token")
    for name in ("local", "other"):
        for route in controller_routes(world):
            answer = send(world, world.servers[name], route, bearer)
            assert_refused(answer, world, f"its compute token at {name}")
    exposed = world.alice.client.manager.room("exposed").function.removeprefix("fs://")
    assert exposed != world.victim_digest
    own = httpx.get(f"{world.manager}/v1/functions/{exposed}", headers=bearer)
    assert own.status_code == 200  # its own room's bundle: what it needs, and no more
    listed = httpx.get(f"{world.manager}/v1/revocations", headers=bearer)
    assert listed.status_code == 200
    for user in (world.alice, world.dave, world.erin):
        assert user.profile.config.client_id not in listed.text  # digests only


# -- every route with every kind of wrong credential -------------------------------------


@dataclass(frozen=True)
class Variant:
    """A wrong credential for one request, and the check that must refuse it (if one)."""

    what: str
    headers: dict[str, str]
    check: str | None = None


def _replayed(
    world: World, base: str, route: Route, key: ProofKey, token: str, check: str = "dpop-proof"
) -> Variant:
    """A proof for exactly this request, used once (by a party the route then refuses
    for other reasons, or harmlessly), then replayed: refused for the replay itself
    (``check``; a logout's token is revoked by its first use, which is found first)."""
    url = base + route.path(world)
    headers = dpop(key, token, route.method, url)
    first = send(world, base, route, headers)
    assert first.status_code < 500, f"first use: {route.method} {url}: {first.text}"
    if first.status_code in (401, 403) and first.json().get("check", "").startswith(
        ("dpop", "token-audience")
    ):
        raise AssertionError(f"the first use was not accepted by DPoP: {first.text}")
    return Variant("a replayed proof", headers, check)


def manager_variants(world: World, route: Route) -> Iterator[Variant]:
    url = world.manager + route.path(world)
    method = route.method
    alice, mallory, carol = world.alice, world.mallory, world.carol
    own = alice.profile.access_token()
    yield Variant("no token", {}, "token-missing")
    room_token = alice.profile.access_token(
        resource=world.stack.compute_url, room="victim", project="acme"
    )
    yield Variant(
        "a Controller's token", dpop(alice.profile.proof_key, room_token, method, url),
        "token-audience",
    )  # fmt: skip
    if ADDRESSED.search(route.template):
        foreign = mallory.profile.access_token()
        yield Variant("a foreign project's token", dpop(mallory.profile.proof_key, foreign,
                                                        method, url))  # fmt: skip
    if OWNER_ROUTES.search(route.template):
        member = carol.profile.access_token()
        yield Variant("a lower role", dpop(carol.profile.proof_key, member, method, url),
                      "project-role")  # fmt: skip
    for name in ("dave", "erin"):
        user = getattr(world, name)
        yield Variant(f"{name}'s old token (disabled or rotated)",
                      dpop(user.profile.proof_key, world.stale[name]["manager"], method, url),
                      "token-revoked")  # fmt: skip
    yield from proof_variants(world, world.manager, route, alice.profile.proof_key, own)
    # The first use of the replayed proof must be harmless: by someone the route refuses.
    if OWNER_ROUTES.search(route.template):
        first_key, first_token = carol.profile.proof_key, carol.profile.access_token()
    elif ADDRESSED.search(route.template):
        first_key, first_token = mallory.profile.proof_key, mallory.profile.access_token()
    elif route.template == "/v1/revocations":
        first_key, first_token = alice.profile.proof_key, own  # refused: not a compute token
    elif route.template == "/v1/whoami/logout":
        # A logout ends its key's tokens: first by a key of its own, of alice's client.
        first_key = ProofKey.generate()
        with ManagerClient(world.manager, dpop_key=first_key) as elsewhere:
            first_token = elsewhere.fetch_token(
                alice.profile.config.client_id, alice.profile.client_secret
            ).access_token
        yield _replayed(world, world.manager, route, first_key, first_token, "token-revoked")
        return
    else:
        first_key, first_token = alice.profile.proof_key, own  # harmless on these routes
    yield _replayed(world, world.manager, route, first_key, first_token)


def proof_variants(
    world: World, base: str, route: Route, key: ProofKey, token: str
) -> Iterator[Variant]:
    url = base + route.path(world)
    method = route.method
    yield Variant("no DPoP proof", {"Authorization": f"DPoP {token}"}, "dpop-proof")
    yield Variant("the token as Bearer", {"Authorization": f"Bearer {token}"}, "dpop-proof")
    yield Variant("a proof by another key", dpop(ProofKey.generate(), token, method, url),
                  "dpop-proof")  # fmt: skip
    yield Variant("a proof for another URL", dpop(key, token, method, url + "x"), "dpop-proof")
    other_method = "PATCH" if method != "PATCH" else "GET"
    yield Variant("a proof for another method", dpop(key, token, other_method, url),
                  "dpop-proof")  # fmt: skip


def controller_variants(world: World, base: str, route: Route) -> Iterator[Variant]:
    url = base + route.path(world)
    method = route.method
    alice, bob = world.alice, world.bob
    local = world.stack.compute_url
    # A user's token never deploys or deletes, whatever room it names: the scope first.
    room_check = "token-scope" if method in ("PUT", "DELETE") else "token-room"
    yield Variant("no token", {}, "token-missing")
    manager_token = alice.profile.access_token()
    yield Variant("the manager's token", dpop(alice.profile.proof_key, manager_token, method,
                                             url), "token-audience")  # fmt: skip
    bobs = bob.profile.access_token(resource=local, room="theirs", project="globex")
    if base == local:
        yield Variant("a foreign project's token", dpop(bob.profile.proof_key, bobs, method, url),
                      room_check)  # fmt: skip
        sibling = alice.profile.access_token(resource=local, room="theirs", project="globex")
        yield Variant("another room's token", dpop(alice.profile.proof_key, sibling, method, url),
                      room_check)  # fmt: skip
        for name in ("dave", "erin"):
            user = getattr(world, name)
            yield Variant(f"{name}'s old token (disabled or rotated)",
                          dpop(user.profile.proof_key, world.stale[name]["victim"], method, url),
                          "token-revoked")  # fmt: skip
        victim = alice.profile.access_token(resource=local, room="victim", project="acme")
        yield from proof_variants(world, base, route, alice.profile.proof_key, victim)
        if route.method in ("PUT", "DELETE"):
            first_key, first_token = alice.profile.proof_key, victim  # refused: token-scope
        else:
            first_key, first_token = bob.profile.proof_key, bobs  # refused: token-room
        yield _replayed(world, base, route, first_key, first_token)
    else:
        yield Variant("another server's token", dpop(bob.profile.proof_key, bobs, method, url),
                      "token-audience")  # fmt: skip
        elsewhere = alice.profile.access_token(resource=base, room="elsewhere", project="acme")
        yield Variant("another room's token", dpop(alice.profile.proof_key, elsewhere, method,
                                                   url), room_check)  # fmt: skip


def assert_variant(answer: httpx.Response, world: World, variant: Variant, where: str) -> None:
    assert_refused(answer, world, f"{variant.what} at {where}")
    if variant.check is not None:
        check = answer.json().get("check")
        assert check == variant.check, f"{variant.what} at {where}: {answer.json()}"


def test_every_manager_route_refuses_every_wrong_credential(world: World) -> None:
    tried = 0
    for route in manager_routes(world):
        for variant in manager_variants(world, route):
            answer = send(world, world.manager, route, variant.headers)
            assert_variant(answer, world, variant, f"the manager {route.method} {route.template}")
            tried += 1
    assert tried > 100


def test_every_controller_route_refuses_every_wrong_credential(world: World) -> None:
    tried = 0
    for name in ("local", "other"):
        base = world.servers[name]
        for route in controller_routes(world):
            for variant in controller_variants(world, base, route):
                answer = send(world, base, route, variant.headers)
                assert_variant(answer, world, variant, f"{name} {route.method} {route.template}")
                tried += 1
    assert tried > 100


def test_the_right_credentials_get_through(world: World) -> None:
    # The same harness with the right credential: the tests above can fail.
    alice = world.alice
    token = alice.profile.access_token(
        resource=world.stack.compute_url, room="victim", project="acme"
    )
    url = f"{world.stack.compute_url}/v1/rooms/victim"
    assert httpx.get(url, headers=dpop(alice.profile.proof_key, token, "GET", url)).status_code == (
        200
    )
    manager_token = alice.profile.access_token()
    whoami = f"{world.manager}/v1/whoami"
    answer = httpx.get(whoami, headers=dpop(alice.profile.proof_key, manager_token, "GET", whoami))
    assert answer.status_code == 200
    owner = world.owner.profile.access_token()
    members = f"{world.manager}/v1/projects/acme/members"
    headers = dpop(world.owner.profile.proof_key, owner, "GET", members)
    assert httpx.get(members, headers=headers).status_code == 200


def test_nothing_was_created_changed_or_deleted(world: World) -> None:
    alice = world.alice
    rooms = {room.name: room for room in alice.client.manager.rooms()}
    assert {name: room.state for name, room in rooms.items()} == {
        "victim": "deployed",
        "elsewhere": "deployed",
        "exposed": "deployed",
        "theirs": "deployed",
    }
    assert alice.client.state("victim")["state"] == "collecting"
    for name in ("local", "other"):
        health = httpx.get(f"{world.servers[name]}/v1/health").json()
        expected = {"local": 2, "other": 1}[name]
        assert health["rooms"] == expected, (name, health)
    members = world.owner.client.manager.members("acme")
    names = {member.name: member.role for member in members}
    assert names["the-owner"] == "owner"
    assert all(client.name != "stolen" for member in members for client in member.clients)
    assert json.dumps([m.name for m in members])  # the owner still manages the project
