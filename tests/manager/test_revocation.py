"""Revocation at the manager: RFC 7009 revoke, tokens_not_before, the list for Controllers.

A revoked token is refused by the manager on its very next use; the Controllers'
copy of the list (:class:`RevocationFeed`) is tested here against a pinned clock
and in tests/controller/test_revocation.py against a real manager.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select

from cleanroom.client.errors import ServerError
from cleanroom.dpop import ProofKey
from cleanroom.manager import admin as operations
from cleanroom.manager import audit
from cleanroom.manager.app import MANAGER_SUBJECT
from cleanroom.manager.database import Client, RevokedToken
from cleanroom.manager.keys import KeyRing
from cleanroom.manager.revocation import DatabaseRevocations
from cleanroom.tokens import (
    ClientStatus,
    RevocationFeed,
    Revocations,
    TokenClaims,
    TokenError,
    TokenIssuer,
    client_digest,
)
from tests.auth import dpop

from .conftest import Manager, closed_port_url

NOW = 1_764_763_200
KEY = ProofKey.generate()
"""The DPoP key of every user token in this module."""


def login(manager: Manager, project: str = "acme") -> tuple[str, str, str]:
    """(client_id, secret, access token) of a new client of ``project``."""
    client_id, secret = manager.new_client(project)
    token = manager.client(dpop_key=KEY).fetch_token(client_id, secret).access_token
    return client_id, secret, token


def whoami(manager: Manager, token: str) -> httpx.Response:
    url = f"{manager.url}/v1/whoami"
    return httpx.get(url, headers=dpop(KEY, token, "GET", url))


def revocation_list(manager: Manager) -> httpx.Response:
    """The list as a registered compute server fetches it."""
    token = manager.compute_token()
    return httpx.get(f"{manager.url}/v1/revocations", headers={"authorization": f"Bearer {token}"})


def revoke(manager: Manager, **form: str) -> httpx.Response:
    return httpx.post(f"{manager.url}/oauth/revoke", data=form)


def jti_of(token: str) -> str:
    jti: str = jwt.decode(token, options={"verify_signature": False})["jti"]
    return jti


def audited(manager: Manager, action: str) -> list[dict[str, Any]]:
    with manager.sessions() as session:
        return [
            {"actor": entry.actor, "target": entry.target, **json.loads(entry.details)}
            for entry in audit.entries(session)
            if entry.action == action
        ]


def test_a_revoked_token_is_refused_by_the_manager_at_once(manager: Manager) -> None:
    client_id, secret, token = login(manager)
    assert whoami(manager, token).status_code == 200
    answer = revoke(manager, token=token, client_id=client_id, client_secret=secret)
    assert answer.status_code == 200 and answer.content == b""
    refused = whoami(manager, token)
    assert refused.status_code == 401
    assert refused.json()["check"] == "token-revoked"
    assert refused.json()["actual"] == jti_of(token)
    listed = revocation_list(manager).json()
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert {"jti": jti_of(token), "exp": exp} in listed["tokens"]
    [entry] = audited(manager, "token.revoked")
    assert entry["actor"] == client_id and entry["target"] == f"token:{jti_of(token)}"
    assert entry["authenticated_by"] == "client_credentials"
    _, _, other = login(manager)
    assert whoami(manager, other).status_code == 200  # only that token


def test_a_token_revokes_itself_without_credentials(manager: Manager) -> None:
    client_id, _, token = login(manager)
    assert revoke(manager, token=token).status_code == 200
    assert whoami(manager, token).json()["check"] == "token-revoked"
    [entry] = audited(manager, "token.revoked")
    # Not the owner's act: whoever held the token (a Controller sees users' tokens).
    assert entry["actor"] == "token-holder" and entry["authenticated_by"] == "the token itself"
    assert entry["client_id"] == client_id


def test_a_client_cannot_revoke_another_clients_token(manager: Manager) -> None:
    client_id, secret, _ = login(manager)
    _, _, victims = login(manager)
    answer = revoke(manager, token=victims, client_id=client_id, client_secret=secret)
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["error"] == "unauthorized_client"
    assert answer.json()["check"] == "token-owner"
    assert whoami(manager, victims).status_code == 200
    assert audited(manager, "token.revoked") == []


def test_revoke_with_a_wrong_secret_is_invalid_client(manager: Manager) -> None:
    client_id, secret, token = login(manager)
    answer = revoke(manager, token=token, client_id=client_id, client_secret="x" + secret)
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"
    assert whoami(manager, token).status_code == 200


def test_revoke_with_half_the_credentials_is_invalid_client(manager: Manager) -> None:
    client_id, _, token = login(manager)
    answer = revoke(manager, token=token, client_id=client_id)
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"
    assert whoami(manager, token).status_code == 200


def test_revoke_without_a_token_is_invalid_request(manager: Manager) -> None:
    answer = revoke(manager)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"


def test_an_invalid_or_already_revoked_token_is_200_and_changes_nothing(
    manager: Manager,
) -> None:
    # RFC 7009 §2.2: the client cannot do anything useful with an error here.
    _, _, token = login(manager)
    assert revoke(manager, token="not-a-token").status_code == 200
    assert revoke(manager, token=token).status_code == 200
    assert revoke(manager, token=token).status_code == 200
    assert len(audited(manager, "token.revoked")) == 1


def test_tokens_issued_before_a_rotation_are_refused(manager: Manager) -> None:
    client_id, _, old = login(manager)
    with manager.sessions() as session:
        rotated = operations.rotate_client(session, client_id)
    refused = whoami(manager, old)
    assert refused.status_code == 401
    assert refused.json()["check"] == "token-revoked"
    assert "tokens_not_before" in refused.json()["expected"]
    fresh = manager.client(dpop_key=KEY).fetch_token(client_id, rotated.secret).access_token
    assert whoami(manager, fresh).status_code == 200


def test_a_disabled_clients_tokens_are_refused(manager: Manager) -> None:
    client_id, _, token = login(manager)
    with manager.sessions() as session:
        operations.set_client_disabled(session, client_id, disabled=True)
    refused = whoami(manager, token)
    assert refused.status_code == 401
    assert refused.json()["check"] == "token-revoked"  # disabling set tokens_not_before


def test_deploy_tokens_of_the_manager_are_unaffected_by_clients(manager: Manager) -> None:
    client_id, _, _ = login(manager)
    with manager.sessions() as session:
        operations.set_client_disabled(session, client_id, disabled=True)
    check = DatabaseRevocations(manager.sessions)
    deploy = TokenClaims(
        sub=MANAGER_SUBJECT,
        client_id=MANAGER_SUBJECT,
        audience="http://compute.test",
        scope="deploy",
        iat=0,
        exp=NOW,
        jti="deploy-1",
        project="acme",
        room="overlap",
    )
    check.check(deploy)  # no client, nothing revoked: it counts
    with manager.sessions() as session:
        session.add(RevokedToken(jti="deploy-1", client_id=MANAGER_SUBJECT, exp=NOW))
        session.commit()
    with pytest.raises(TokenError) as caught:
        check.check(deploy)
    assert caught.value.check == "token-revoked"


def test_expired_revocations_are_pruned_and_never_listed(manager: Manager) -> None:
    past = int(time.time()) - 3600
    with manager.sessions() as session:
        session.add(RevokedToken(jti="long-gone", client_id="someone", exp=past))
        session.commit()
    listed = revocation_list(manager)
    assert listed.headers["cache-control"] == "no-store"
    assert listed.json()["tokens"] == []
    _, _, token = login(manager)
    assert revoke(manager, token=token).status_code == 200
    with manager.sessions() as session:
        assert list(session.scalars(select(RevokedToken.jti))) == [jti_of(token)]


def test_the_revocation_list_names_the_clients_that_matter(manager: Manager) -> None:
    disabled, _, _ = login(manager)
    rotated, _, _ = login(manager)
    long_ago, _, _ = login(manager)
    untouched, _, _ = login(manager)
    with manager.sessions() as session:
        operations.set_client_disabled(session, disabled, disabled=True)
        operations.rotate_client(session, rotated)
        # Every token issued before this not-before has expired (lifetime + leeway).
        client = session.get_one(Client, long_ago)
        client.tokens_not_before = int(time.time()) - 3600 - 30 - 60
        session.commit()
    document = revocation_list(manager).json()
    listed = Revocations.from_json(document)
    assert set(listed.clients) == {client_digest(disabled), client_digest(rotated)}
    assert listed.clients[client_digest(disabled)].disabled
    rotated_status = listed.clients[client_digest(rotated)]
    assert not rotated_status.disabled and rotated_status.not_before > 0
    assert client_digest(untouched) not in listed.clients
    assert abs(document["now"] - time.time()) < 3600  # the manager's clock, roughly
    text = json.dumps(document)
    assert disabled not in text and rotated not in text  # no client id, only digests


def test_the_revocation_list_is_for_registered_compute_servers_only(manager: Manager) -> None:
    url = f"{manager.url}/v1/revocations"
    nobody = httpx.get(url)
    assert nobody.status_code == 401 and nobody.json()["check"] == "token-missing"
    _, _, token = login(manager)
    user = httpx.get(url, headers=dpop(KEY, token, "GET", url))
    assert user.status_code == 403 and user.json()["check"] == "token-scope"
    credentials = manager.add_server(closed_port_url(), "soon-removed")
    server_token = manager.compute_token(credentials)
    bearer = {"authorization": f"Bearer {server_token}"}
    assert httpx.get(url, headers=bearer).status_code == 200
    with manager.sessions() as session:
        operations.remove_server(session, "soon-removed")
    removed = httpx.get(url, headers=bearer)
    assert removed.status_code == 401 and removed.json()["check"] == "token-revoked"


def test_rotated_server_credentials_refuse_the_old_secret_and_its_tokens(
    manager: Manager,
) -> None:
    credentials = manager.add_server(closed_port_url(), "rotating")
    old_token = manager.compute_token(credentials)
    with manager.sessions() as session:
        rotated = operations.rotate_server_credentials(session, "rotating").credentials
    assert rotated.client_id == credentials.client_id
    url = f"{manager.url}/v1/revocations"
    refused = httpx.get(url, headers={"authorization": f"Bearer {old_token}"})
    assert refused.status_code == 401 and refused.json()["check"] == "token-revoked"
    form = {
        "grant_type": "client_credentials",
        "client_id": credentials.client_id,
        "client_secret": credentials.client_secret,
    }
    old_secret = httpx.post(f"{manager.url}/oauth/token", data=form)
    assert old_secret.status_code == 401 and old_secret.json() == {"error": "invalid_client"}
    fresh = manager.compute_token(rotated)
    assert httpx.get(url, headers={"authorization": f"Bearer {fresh}"}).status_code == 200


def test_token_issued_is_audited_without_the_token(manager: Manager) -> None:
    client_id, secret, token = login(manager)
    claims = jwt.decode(token, options={"verify_signature": False})
    [entry] = audited(manager, "token.issued")
    assert entry == {
        "actor": client_id,
        "target": f"token:{claims['jti']}",
        "jti": claims["jti"],
        "scope": "user",
        "aud": manager.url,
        "project": "acme",
        "exp": claims["exp"],
        "jkt": KEY.jkt,
    }
    with manager.sessions() as session:
        text = " ".join(entry.details for entry in audit.entries(session))
    assert token not in text and secret not in text


# -- a Controller's copy of the list, against a pinned clock ----------------------------


class FakeManager(httpx.BaseTransport):
    """Serves a revocation list, or fails, as the test says; counts the fetches."""

    def __init__(self) -> None:
        self.document: object = Revocations(NOW, {}, {}).to_json()
        self.fail = False
        self.fetches = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        if self.fail:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json=self.document)


def feed(transport: FakeManager, now: list[float]) -> RevocationFeed:
    return RevocationFeed(
        "http://manager.test/v1/revocations",
        refresh=5,
        max_age=60,
        clock=lambda: now[0],
        transport=transport,
    )


TOKEN = TokenClaims(
    sub="client-1",
    client_id="client-1",
    audience="http://compute.test",
    scope="user",
    iat=NOW,
    exp=NOW + 3600,
    jti="jti-1",
    project="acme",
    room="overlap",
)


def test_the_feed_fetches_first_then_at_most_every_refresh() -> None:
    manager, now = FakeManager(), [0.0]
    copy = feed(manager, now)
    copy.check(TOKEN)
    assert manager.fetches == 1
    manager.document = Revocations(NOW, {"jti-1": NOW + 3600}, {}).to_json()
    now[0] = 4.9
    copy.check(TOKEN)  # the copy is younger than refresh: not refetched, still counts
    assert manager.fetches == 1
    now[0] = 5.0
    with pytest.raises(TokenError) as caught:
        copy.check(TOKEN)
    assert caught.value.check == "token-revoked" and manager.fetches == 2


def test_the_feed_sees_a_disabled_client() -> None:
    manager, now = FakeManager(), [0.0]
    manager.document = Revocations(
        NOW, {}, {client_digest("client-1"): ClientStatus(disabled=True)}
    ).to_json()
    with pytest.raises(TokenError) as caught:
        feed(manager, now).check(TOKEN)
    assert caught.value.check == "token-revoked"
    assert "disabled" in caught.value.message


def test_the_feed_fails_closed_when_it_never_fetched() -> None:
    manager, now = FakeManager(), [0.0]
    manager.fail = True
    with pytest.raises(TokenError) as caught:
        feed(manager, now).check(TOKEN)
    assert caught.value.check == "token-revocation-stale"
    assert caught.value.http_status == 503
    assert "ConnectError" in str(caught.value.actual)


def test_the_feed_keeps_its_copy_until_max_age_then_refuses_everything() -> None:
    manager, now = FakeManager(), [0.0]
    copy = feed(manager, now)
    copy.check(TOKEN)
    manager.fail = True
    now[0] = 60.0
    copy.check(TOKEN)  # refetch failed, the copy is exactly max_age old: still used
    now[0] = 60.5
    with pytest.raises(TokenError) as caught:
        copy.check(TOKEN)
    assert caught.value.check == "token-revocation-stale"
    assert caught.value.http_status == 503
    manager.fail = False
    now[0] = 66.0
    copy.check(TOKEN)  # the manager is back: so are tokens


def test_a_malformed_list_counts_as_a_failed_refresh() -> None:
    manager, now = FakeManager(), [0.0]
    manager.document = {"now": NOW, "tokens": "all of them", "clients": []}
    with pytest.raises(TokenError) as caught:
        feed(manager, now).check(TOKEN)
    assert caught.value.check == "token-revocation-stale"
    assert "ValueError" in str(caught.value.actual)


def test_refresh_must_not_exceed_max_age() -> None:
    with pytest.raises(ValueError):
        RevocationFeed("http://manager.test/v1/revocations", refresh=61, max_age=60)


def test_the_sdk_revokes_its_own_token(manager: Manager) -> None:
    client_id, secret = manager.new_client("acme")
    client = manager.client(dpop_key=KEY)
    client.fetch_token(client_id, secret)
    token = client.token
    assert token is not None
    client.revoke()
    assert client.token is None
    assert whoami(manager, token).json()["check"] == "token-revoked"


def test_a_token_for_a_controller_can_be_revoked_at_the_manager(manager: Manager) -> None:
    # Whoever holds it may end it: the revocation then reaches every Controller's list.
    client_id, _, _ = login(manager)
    issuer = TokenIssuer(manager.url, KeyRing.open(manager.settings.data_dir))
    for_controller, _ = issuer.issue(
        client_id, audience="http://compute.test", scope="user", project="acme", room="r"
    )
    assert revoke(manager, token=for_controller).status_code == 200
    listed = revocation_list(manager).json()
    assert jti_of(for_controller) in {entry["jti"] for entry in listed["tokens"]}


def test_the_sdk_revokes_with_credentials_and_reports_a_refusal(manager: Manager) -> None:
    client_id, secret, token = login(manager)
    _, _, others = login(manager)
    sdk = manager.client()
    with pytest.raises(ServerError) as caught:
        sdk.revoke(others, client_id=client_id, client_secret=secret)
    assert caught.value.status == 400 and caught.value.check == "token-owner"
    sdk.revoke(token, client_id=client_id, client_secret=secret)
    assert whoami(manager, token).json()["check"] == "token-revoked"


def test_a_logout_revokes_the_token_it_is_sent_with_and_no_other_keys(manager: Manager) -> None:
    """``POST /v1/whoami/logout`` revokes the manager token it is sent with: refused at the
    manager from its next use (``token-revoked``), and listed for Controllers; another
    profile's token of the same client (another DPoP key) stays good (h24: there was no
    logout, and a token the profile dropped stayed good for the rest of its hour)."""
    client_id, secret, token = login(manager)
    elsewhere = manager.client()  # the same client, another DPoP key: another profile
    elsewhere.fetch_token(client_id, secret)
    with manager.client(token=token, dpop_key=KEY) as client:
        assert client.logout() == 0  # no room token issued
        assert client.token is None
    refused = whoami(manager, token)
    assert refused.status_code == 401
    assert refused.json()["check"] == "token-revoked"
    assert refused.json()["actual"] == jti_of(token)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert {"jti": jti_of(token), "exp": exp} in revocation_list(manager).json()["tokens"]
    assert elsewhere.whoami()["client_id"] == client_id
    [entry] = audited(manager, "client.logged_out")
    assert entry["actor"] == client_id and entry["jti"] == jti_of(token)
    assert entry["jkt"] == KEY.jkt and entry["room_tokens_revoked"] == 0
    # The revoked token cannot log out (nor do anything) again.
    url = f"{manager.url}/v1/whoami/logout"
    again = httpx.post(url, headers=dpop(KEY, token, "POST", url))
    assert (again.status_code, again.json()["check"]) == (401, "token-revoked")


def test_a_logout_ends_the_manager_tokens_of_its_key_from_an_earlier_login(
    manager: Manager,
) -> None:
    """A logout refuses every manager token of its client and DPoP key issued before it,
    not only the one it is sent with: the manager does not keep its own tokens, and one
    of an earlier login of the same key (a profile keeps one at a time; a log, a copied
    token.json) stayed good for the rest of its hour (left open by h24). A login after
    the logout is good (none is born refused); another key of the client is untouched."""
    client_id, secret, earlier = login(manager)
    later = manager.client(dpop_key=KEY).fetch_token(client_id, secret).access_token
    elsewhere = manager.client()  # the same client, another DPoP key
    elsewhere.fetch_token(client_id, secret)
    with manager.client(token=later, dpop_key=KEY) as client:
        assert client.logout() == 0
    refused = whoami(manager, earlier)
    assert refused.status_code == 401, refused.text
    problem = refused.json()
    assert problem["check"] == "token-revoked"
    assert "logged out from that key" in problem["expected"]
    iat = jwt.decode(earlier, options={"verify_signature": False})["iat"]
    assert problem["actual"] == f"a token issued at {iat}"
    assert jti_of(earlier) not in {
        entry["jti"] for entry in revocation_list(manager).json()["tokens"]
    }  # refused by the key's not-before, not by its jti
    assert elsewhere.whoami()["client_id"] == client_id
    again = manager.client(dpop_key=KEY).fetch_token(client_id, secret).access_token
    assert whoami(manager, again).status_code == 200
