"""Logging in, who the caller is, and registering the user key, over real HTTP.

``caller()`` checks every user token against the database: each of its refusals
has a test below that breaks exactly that one thing (the row changed directly,
so that no other check, such as revocation, refuses first).
"""

from __future__ import annotations

from typing import Literal

import httpx
import jwt
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import inspect, select, update

from cleanroom.client.errors import ServerError
from cleanroom.client.manager import ManagerClient
from cleanroom.dpop import ProofKey
from cleanroom.manager import admin as operations
from cleanroom.manager import credentials
from cleanroom.manager.database import Base, Client
from cleanroom.manager.keys import KeyRing
from cleanroom.protocol.encoding import b64u, canonical
from cleanroom.protocol.keys import sign, spki, user_id
from cleanroom.tokens import TokenIssuer, TokenVerifier
from tests.auth import dpop
from tests.conftest import TEST_ARGON2

from .conftest import Manager, closed_port_url, new_user

KEY = ProofKey.generate()


def token_request(manager: Manager, **form: str) -> httpx.Response:
    url = f"{manager.url}/oauth/token"
    return httpx.post(url, data=form, headers={"DPoP": KEY.proof("POST", url)})


def test_token_is_an_es256_jwt_for_the_client(manager: Manager) -> None:
    client_id, secret = manager.new_client("acme")
    answer = token_request(
        manager, grant_type="client_credentials", client_id=client_id, client_secret=secret
    )
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    document = answer.json()
    assert document["token_type"] == "DPoP" and document["expires_in"] == 3600
    verifier = TokenVerifier(
        manager.url, manager.url, jwks_url=f"{manager.url}/.well-known/jwks.json"
    )
    claims = verifier.verify(document["access_token"], scope="user")
    assert (claims.sub, claims.project, claims.jkt) == (client_id, "acme", KEY.jkt)
    decoded = jwt.decode(document["access_token"], options={"verify_signature": False})
    assert decoded["iss"] == manager.url and decoded["exp"] - decoded["iat"] == 3600


def test_wrong_secret_unknown_and_disabled_client_get_the_same_401(manager: Manager) -> None:
    client_id, secret = manager.new_client("acme")
    disabled_id, disabled_secret = manager.new_client("acme")
    with manager.sessions() as session:
        operations.set_client_disabled(session, disabled_id, disabled=True)
    answers = [
        token_request(
            manager,
            grant_type="client_credentials",
            client_id=client_id,
            client_secret="x" + secret,
        ),
        token_request(
            manager, grant_type="client_credentials", client_id="f" * 32, client_secret=secret
        ),
        token_request(
            manager,
            grant_type="client_credentials",
            client_id=disabled_id,
            client_secret=disabled_secret,
        ),
    ]
    for answer in answers:
        assert answer.status_code == 401
        assert answer.json() == {"error": "invalid_client"}
    assert len({(a.content, a.headers["content-type"]) for a in answers}) == 1


def test_wrong_grant_type(manager: Manager) -> None:
    client_id, secret = manager.new_client("acme")
    answer = token_request(
        manager, grant_type="password", client_id=client_id, client_secret=secret
    )
    assert answer.status_code == 400
    assert answer.json() == {"error": "unsupported_grant_type"}


def test_client_raises_server_error_for_invalid_client(manager: Manager) -> None:
    client_id, _ = manager.new_client("acme")
    with pytest.raises(ServerError) as caught:
        manager.client().fetch_token(client_id, "wrong")
    assert caught.value.status == 401
    assert str(caught.value) == "manager: 401 Unauthorized: invalid_client"


def test_only_an_argon2id_hash_of_the_secret_is_stored(manager: Manager) -> None:
    client_id, secret = manager.new_client("acme")
    with manager.sessions() as session:
        stored = session.scalars(select(Client).where(Client.id == client_id)).one()
        assert stored.secret_hash.startswith("$argon2id$")
        # Every value of every table, as text: the secret is in none of them.
        everything = [
            str(row)
            for table in Base.metadata.sorted_tables
            if inspect(session.get_bind()).has_table(table.name)
            for row in session.execute(select(table)).all()
        ]
    assert secret not in " ".join(everything)
    assert client_id in " ".join(everything)  # what was searched is the right data
    if manager.settings.database_url is None:  # the SQLite file itself, free pages too
        database = (manager.settings.data_dir / "manager.db").read_bytes()
        assert secret.encode() not in database
        assert client_id.encode() in database


def test_whoami_before_and_after_key_registration(manager: Manager) -> None:
    client, client_id = manager.login("acme")
    assert client.whoami() == {
        "client_id": client_id,
        "project": "acme",
        "user_id": None,
        "member": client_id,  # created without a member: its own, named after it
        "role": "member",
    }
    key, expected = new_user()
    assert client.register_user_key(key, client_id) == expected
    assert client.whoami()["user_id"] == expected
    assert client.register_user_key(key, client_id) == expected  # the same key again: fine


def registration(
    key: ec.EllipticCurvePrivateKey, client_id: str, jkt: str | None, token: str | None
) -> dict[str, str]:
    """The body of ``PUT /v1/whoami/user-key``, signed as docs/api.md says (v3), for the
    token ``token`` (its jti); without ``jkt``, as v1 clients signed; without ``token``,
    as v2 clients did."""
    encoded = b64u(spki(key.public_key()))
    signed: dict[str, str] = {
        "type": "cleanroom/key-registration/v3",
        "client_id": client_id,
        "user_key": encoded,
    }
    if jkt is None:  # what clients before the DPoP key's thumbprint signed
        signed["type"] = "cleanroom/key-registration/v1"
    else:
        signed["jkt"] = jkt
    if token is not None:
        signed["jti"] = jwt.decode(token, options={"verify_signature": False})["jti"]
    elif jkt is not None:  # what clients before the token's jti signed
        signed["type"] = "cleanroom/key-registration/v2"
    return {"user_key": encoded, "signature": b64u(sign(key, canonical(signed)))}


def put_key(client: ManagerClient, body: dict[str, str]) -> httpx.Response:
    assert client.token is not None
    url = f"{client.base_url}/v1/whoami/user-key"
    return httpx.put(url, json=body, headers=dpop(client.dpop_key, client.token, "PUT", url))


def test_key_registration_good_over_raw_http(manager: Manager) -> None:
    client, client_id = manager.login("acme")
    key, expected = new_user()
    answer = put_key(client, registration(key, client_id, client.dpop_key.jkt, client.token))
    assert answer.status_code == 200 and answer.json() == {"user_id": expected}


def test_key_registration_signed_for_another_client_is_refused(manager: Manager) -> None:
    client, _ = manager.login("acme")
    other_id, _ = manager.new_client("acme")
    key, _ = new_user()
    answer = put_key(client, registration(key, other_id, client.dpop_key.jkt, client.token))
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["check"] == "key-registration"
    assert client.whoami()["user_id"] is None


def test_key_registration_signed_for_another_dpop_key_is_refused(manager: Manager) -> None:
    """The user key vouches for the DPoP key of the token that registers it: a signature
    naming another one (say, the member's, replayed by someone else holding the client's
    secret) or none (a v1 registration) is refused."""
    client, client_id = manager.login("acme")
    key, _ = new_user()
    for jkt in (ProofKey.generate().jkt, None):
        answer = put_key(client, registration(key, client_id, jkt, client.token))
        assert answer.status_code == 400 and answer.json()["check"] == "key-registration"
    assert client.whoami()["user_id"] is None


def test_the_user_id_is_for_tokens_bound_to_the_dpop_key_the_user_key_vouched_for(
    manager: Manager,
) -> None:
    client_id, secret = manager.new_client("acme")
    member = manager.client()
    member.fetch_token(client_id, secret)
    key, expected = new_user()
    member.register_user_key(key, client_id)
    holder = manager.client()  # the same secret, another DPoP key (the owner who made it)
    holder.fetch_token(client_id, secret)
    assert holder.whoami()["user_id"] is None
    assert member.whoami()["user_id"] == expected
    holder.register_user_key(key, client_id)  # with the user key itself: it moves
    assert holder.whoami()["user_id"] == expected
    member.fetch_token(client_id, secret)  # its token from before the move is refused
    assert member.whoami()["user_id"] is None
    with manager.sessions() as session:
        stored = session.get(Client, client_id)
        assert stored is not None and stored.user_jkt == holder.dpop_key.jkt


def test_the_tokens_of_the_dpop_key_a_client_moved_from_are_refused_at_the_manager(
    manager: Manager,
) -> None:
    """A profile whose dpop-key.pem was lost or replaced registers the user key from its
    new key: the old key's tokens acted as the project's member for the rest of their
    hour, and could send the user key's old registration again, which named the old key,
    moving the user back to it. Every token of another key issued before the move is
    refused (token-revoked); one fetched after, with the secret, counts, as the member's."""
    client_id, secret = manager.new_client("acme")
    old = manager.client()
    old.fetch_token(client_id, secret)
    key, expected = new_user()
    first = registration(key, client_id, old.dpop_key.jkt, old.token)
    assert put_key(old, first).status_code == 200
    new = manager.client()
    new.fetch_token(client_id, secret)
    assert new.register_user_key(key, client_id) == expected
    for answer in (
        put_key(old, first),  # the old signature again, with the old key's token
        httpx.get(
            f"{manager.url}/v1/whoami",
            headers=dpop(old.dpop_key, old.token or "", "GET", f"{manager.url}/v1/whoami"),
        ),
    ):
        assert answer.status_code == 401, answer.text
        assert answer.json()["check"] == "token-revoked"
    assert new.whoami()["user_id"] == expected  # still the new key's
    old.fetch_token(client_id, secret)  # whoever holds the secret is the member
    assert old.whoami()["user_id"] is None
    # With a new token of the old key (the secret and the old key), the old registration
    # is no more: it was signed for the token it was sent with (h24: it moved the user
    # back to the old key, where it was replayed).
    replayed = put_key(old, first)
    assert replayed.status_code == 400 and replayed.json()["check"] == "key-registration"
    assert new.whoami()["user_id"] == expected
    assert old.whoami()["user_id"] is None


def test_key_registration_signed_for_another_token_or_none_is_refused(manager: Manager) -> None:
    """The signature names the token it is sent with (its jti): signed for another token
    of the same key, or for none (a v2 registration), it is refused; for the token, it
    counts."""
    client_id, secret = manager.new_client("acme")
    client = manager.client()
    earlier = client.fetch_token(client_id, secret).access_token
    client.fetch_token(client_id, secret)
    key, expected = new_user()
    for token in (earlier, None):
        answer = put_key(client, registration(key, client_id, client.dpop_key.jkt, token))
        assert answer.status_code == 400 and answer.json()["check"] == "key-registration"
    assert client.whoami()["user_id"] is None
    answer = put_key(client, registration(key, client_id, client.dpop_key.jkt, client.token))
    assert answer.status_code == 200 and answer.json() == {"user_id": expected}


@pytest.mark.parametrize("release", ["v1", "v2"])
def test_a_registration_of_an_earlier_release_is_refused_saying_to_upgrade(
    manager: Manager, release: str
) -> None:
    """A client of an earlier release signs its key registration as v1 (no DPoP key) or
    v2 (no token id): refused (a v2 body could be sent again with any later token of its
    key, h24), in one line that says what to do, which the old client prints as it is;
    a signature that is no registration at all is refused as before."""
    client_id, secret = manager.new_client("acme")
    client = manager.client()
    client.fetch_token(client_id, secret)
    key, _ = new_user()
    jkt = None if release == "v1" else client.dpop_key.jkt
    answer = put_key(client, registration(key, client_id, jkt, None))
    assert answer.status_code == 400, answer.text
    problem = answer.json()
    assert problem["check"] == "key-registration"
    assert problem["expected"] == "cleanroom/key-registration/v3"
    assert problem["actual"] == f"cleanroom/key-registration/{release}"
    assert problem["detail"] == (
        f"this client signs its user key's registration as cleanroom/key-registration/{release}, "
        "of an earlier release, which this manager refuses: upgrade cleanroom on this "
        "machine, then run `cleanroom login` again"
    )
    assert "\n" not in problem["detail"]
    assert client.whoami()["user_id"] is None
    other, _ = new_user()  # signed by another key: no registration of any release
    forged = {
        **registration(key, client_id, jkt, None),
        "signature": registration(other, client_id, jkt, None)["signature"],
    }
    answer = put_key(client, forged)
    assert answer.status_code == 400 and answer.json()["detail"] == "signature does not verify"


def test_key_registration_signed_by_another_key_is_refused(manager: Manager) -> None:
    client, client_id = manager.login("acme")
    key, _ = new_user()
    other, _ = new_user()
    body = {
        **registration(key, client_id, client.dpop_key.jkt, client.token),
        "signature": registration(other, client_id, client.dpop_key.jkt, client.token)["signature"],
    }
    answer = put_key(client, body)
    assert answer.status_code == 400 and answer.json()["check"] == "key-registration"


def test_key_registration_with_a_malformed_key_is_422(manager: Manager) -> None:
    client, client_id = manager.login("acme")
    key, _ = new_user()
    body = {
        **registration(key, client_id, client.dpop_key.jkt, client.token),
        "user_key": b64u(b"not a key"),
    }
    answer = put_key(client, body)
    assert answer.status_code == 422 and answer.json()["check"] == "user_key"


def test_one_user_id_per_client(manager: Manager) -> None:
    client, client_id = manager.login("acme")
    first, first_id = new_user()
    client.register_user_key(first, client_id)
    second, _ = new_user()
    with pytest.raises(ServerError) as caught:
        client.register_user_key(second, client_id)
    assert caught.value.status == 409
    assert client.whoami()["user_id"] == first_id
    assert user_id(first.public_key()) == first_id


def test_no_token_is_401_problem(manager: Manager) -> None:
    answer = httpx.get(f"{manager.url}/v1/whoami")
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["www-authenticate"] == 'DPoP algs="ES256", Bearer'
    assert answer.json()["check"] == "token-missing"


def test_two_authorization_headers_are_refused(manager: Manager) -> None:
    """Which of two Authorization headers counts is a guess (the manager took the first:
    a good token, then any other, was served), so neither does, as of two DPoP proofs
    (found by h9)."""
    client, _ = manager.login("acme")
    assert client.token is not None
    url = f"{manager.url}/v1/whoami"
    good = dpop(client.dpop_key, client.token, "GET", url)
    for second in (f"DPoP {client.token}", "DPoP junk", "Bearer junk"):
        for headers in (
            [("Authorization", good["Authorization"]), ("Authorization", second)],
            [("Authorization", second), ("Authorization", good["Authorization"])],
        ):
            proof = client.dpop_key.proof("GET", url, client.token)
            answer = httpx.get(url, headers=[*headers, ("DPoP", proof)])
            assert answer.status_code == 401, answer.text
            assert answer.json()["check"] == "authorization-header"
            assert answer.headers["www-authenticate"] == 'DPoP algs="ES256", Bearer'
    assert httpx.get(url, headers=dpop(client.dpop_key, client.token, "GET", url)).is_success


def test_a_forged_token_is_refused_by_the_manager(manager: Manager) -> None:
    client, _ = manager.login("acme")
    assert client.token is not None
    header, payload, signature = client.token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    url = f"{manager.url}/v1/whoami"
    forged = f"{header}.{payload}.{flipped}"
    answer = httpx.get(url, headers=dpop(client.dpop_key, forged, "GET", url))
    assert answer.status_code == 401 and answer.json()["check"] == "token-signature"


def test_an_operation_token_cannot_act_as_a_user(manager: Manager) -> None:
    token, _ = manager_issuer(manager).issue(
        "cleanroom-manager", audience=manager.url, scope="deploy", project="acme", room="x"
    )
    answer = httpx.get(f"{manager.url}/v1/whoami", headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 403 and answer.json()["check"] == "token-scope"


def test_disabled_clients_tokens_stop_working(manager: Manager) -> None:
    client, client_id = manager.login("acme")
    client.whoami()
    with manager.sessions() as session:
        operations.set_client_disabled(session, client_id, disabled=True)
    with pytest.raises(ServerError) as caught:
        client.whoami()
    assert caught.value.status == 401


def change_client(manager: Manager, client_id: str, **values: object) -> None:
    """Change the client's row directly: nothing else (tokens_not_before) moves."""
    with manager.sessions() as session:
        session.execute(update(Client).where(Client.id == client_id).values(**values))
        session.commit()


def whoami_refusal(manager: Manager, token: str | None, key: ProofKey = KEY) -> httpx.Response:
    assert token is not None
    url = f"{manager.url}/v1/whoami"
    answer = httpx.get(url, headers=dpop(key, token, "GET", url))
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["www-authenticate"] == 'DPoP error="invalid_token", algs="ES256"'
    return answer


def test_caller_refuses_a_disabled_client(manager: Manager) -> None:
    client, client_id = manager.login("acme")
    change_client(manager, client_id, disabled=True)
    problem = whoami_refusal(manager, client.token, client.dpop_key).json()
    assert problem["check"] == "client-disabled"
    assert (problem["expected"], problem["actual"]) == ("an enabled client", "disabled")
    assert problem["detail"] == f"client {client_id} is disabled"


def test_caller_refuses_a_client_whose_member_was_removed(manager: Manager) -> None:
    client, client_id = manager.login("acme")
    change_client(manager, client_id, member_id=None)
    problem = whoami_refusal(manager, client.token, client.dpop_key).json()
    assert problem["check"] == "client-member"
    assert problem["expected"] == "a client of a member of project 'acme'"
    assert problem["actual"] == "a client whose member was removed"


def test_caller_refuses_a_token_for_another_project_than_its_clients(manager: Manager) -> None:
    client_id, _ = manager.new_client("acme")
    manager.new_client("globex")
    token, _ = manager_issuer(manager).issue(
        client_id, audience=manager.url, scope="user", project="globex", jkt=KEY.jkt
    )
    problem = whoami_refusal(manager, token).json()
    assert problem["check"] == "token-project"
    assert (problem["expected"], problem["actual"]) == ("acme", "globex")


def test_caller_refuses_a_token_of_an_unknown_client(manager: Manager) -> None:
    token, _ = manager_issuer(manager).issue(
        "f" * 32, audience=manager.url, scope="user", project="acme", jkt=KEY.jkt
    )
    problem = whoami_refusal(manager, token).json()
    assert (problem["check"], problem["actual"]) == ("token-client", "f" * 32)


def test_a_client_whose_member_was_removed_cannot_log_in(manager: Manager) -> None:
    client_id, secret = manager.new_client("acme")
    change_client(manager, client_id, member_id=None)  # still enabled: only that differs
    answer = token_request(
        manager, grant_type="client_credentials", client_id=client_id, client_secret=secret
    )
    assert answer.status_code == 401 and answer.json() == {"error": "invalid_client"}


def test_a_token_fetched_right_after_a_rotation_is_valid(manager: Manager) -> None:
    # Rotation refuses every token of the current second; the token endpoint waits
    # it out, so the new secret's first token works at once.
    client_id, _ = manager.new_client("acme")
    with manager.sessions() as session:
        rotated = operations.rotate_client(session, client_id)
    client = manager.client()
    client.fetch_token(client_id, rotated.secret)
    assert client.whoami()["client_id"] == client_id


def manager_issuer(manager: Manager) -> TokenIssuer:
    """The manager's own issuer (same signing key), as the manager uses for deploys."""
    return TokenIssuer(manager.url, KeyRing.open(manager.settings.data_dir))


def test_unreachable_manager_is_status_0() -> None:
    url = closed_port_url()
    with ManagerClient(url) as client, pytest.raises(ServerError) as caught:
        client.whoami()
    assert caught.value.status == 0
    assert str(caught.value).startswith(f"cannot reach the manager at {url}: ")


class CountingHasher(PasswordHasher):
    """The suite's cheap argon2, counting its checks."""

    def __init__(self) -> None:
        parameters = TEST_ARGON2
        super().__init__(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_cost,
            parallelism=parameters.parallelism,
            hash_len=parameters.hash_len,
            salt_len=parameters.salt_len,
            type=parameters.type,
        )
        self.checks = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:  # noqa: A002
        self.checks += 1
        return super().verify(hash, password)


@pytest.fixture
def argon2(monkeypatch: pytest.MonkeyPatch) -> CountingHasher:
    hasher = CountingHasher()
    monkeypatch.setattr(credentials, "_hasher", hasher)
    credentials.accepted.clear()
    return hasher


def log_in(manager: Manager, client_id: str, secret: str) -> int:
    return token_request(
        manager, grant_type="client_credentials", client_id=client_id, client_secret=secret
    ).status_code


def test_an_accepted_secret_costs_argon2_once(manager: Manager, argon2: CountingHasher) -> None:
    client_id, secret = manager.new_client("acme")
    assert [log_in(manager, client_id, secret) for _ in range(3)] == [200, 200, 200]
    assert argon2.checks == 1


def test_every_refusal_still_costs_argon2(manager: Manager, argon2: CountingHasher) -> None:
    """Only an active client's correct secret is answered from memory: a wrong secret, a
    disabled client's remembered secret and an unknown client all pay argon2 alike."""
    client_id, secret = manager.new_client("acme")
    assert log_in(manager, client_id, secret) == 200
    argon2.checks = 0
    assert log_in(manager, client_id, "x" + secret) == 401
    assert log_in(manager, "f" * 32, secret) == 401
    with manager.sessions() as session:
        operations.set_client_disabled(session, client_id, disabled=True)
    assert log_in(manager, client_id, secret) == 401
    assert argon2.checks == 3


def test_a_new_secret_forgets_the_old_one(manager: Manager, argon2: CountingHasher) -> None:
    client_id, secret = manager.new_client("acme")
    assert log_in(manager, client_id, secret) == 200
    with manager.sessions() as session:
        session.execute(
            update(Client)
            .where(Client.id == client_id)
            .values(secret_hash=credentials.hash_secret("another secret"))
        )
        session.commit()
    assert log_in(manager, client_id, secret) == 401
    assert log_in(manager, client_id, "another secret") == 200


def test_accepted_secrets_are_bounded_and_tied_to_the_stored_hash() -> None:
    remembered = credentials.AcceptedSecrets(capacity=2)
    remembered.remember("client:a", "hash-a", "secret-a")
    assert remembered.knows("client:a", "hash-a", "secret-a")
    assert not remembered.knows("client:a", "hash-a", "secret-b")
    assert not remembered.knows("client:a", "another hash", "secret-a")
    assert not remembered.knows("client:b", "hash-a", "secret-a")
    remembered.remember("client:b", "hash-b", "secret-b")
    remembered.knows("client:a", "hash-a", "secret-a")  # a used last: b is the oldest
    remembered.remember("client:c", "hash-c", "secret-c")
    assert remembered.knows("client:a", "hash-a", "secret-a")
    assert not remembered.knows("client:b", "hash-b", "secret-b")
    assert "secret-a" not in repr(remembered._known)
