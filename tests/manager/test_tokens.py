"""TokenIssuer and TokenVerifier: every refusal breaks exactly one thing of a good token.

Tokens follow RFC 9068 (``typ`` ``at+jwt``) and name exactly one audience (RFC 8707);
a user token is bound to a DPoP key (``cnf.jkt``), so at a running manager each is
sent with a proof (tests/auth.py), and the refusals there are the token's alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.dpop import ProofKey
from cleanroom.manager.keys import KEYS_DIR, KeyRing
from cleanroom.tokens import (
    DEFAULT_LEEWAY,
    OPERATION_LIFETIME,
    ClientStatus,
    Revocations,
    TokenClaims,
    TokenError,
    TokenIssuer,
    TokenVerifier,
    check_not_revoked,
    client_digest,
    kid_of,
)
from tests.auth import dpop, signed_token

from .conftest import Manager

ISSUER = "http://manager.test"
CONTROLLER = "http://compute-1.test:8081"
NOW = 1_764_763_200
KEY = ec.derive_private_key(0x70CE4, ec.SECP256R1())
OTHER_KEY = ec.derive_private_key(0x0DD, ec.SECP256R1())


def issuer(**overrides: Any) -> TokenIssuer:
    arguments: dict[str, Any] = {"clock": lambda: NOW}
    arguments.update(overrides)
    return TokenIssuer(arguments.pop("issuer", ISSUER), arguments.pop("key", KEY), **arguments)


def verifier(now: int = NOW, audience: str = ISSUER, **overrides: Any) -> TokenVerifier:
    return TokenVerifier(ISSUER, audience, keys=issuer().jwks(), clock=lambda: now, **overrides)


def good_claims() -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "aud": ISSUER,
        "sub": "client-1",
        "client_id": "client-1",
        "project": "acme",
        "scope": "user",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 3600,
        "jti": "jti-1",
    }


def signed(claims: dict[str, Any], key: ec.EllipticCurvePrivateKey = KEY, **header: Any) -> str:
    headers = {"kid": kid_of(KEY.public_key()), "typ": "at+jwt", **header}
    headers = {name: value for name, value in headers.items() if value is not None}
    return jwt.encode(claims, key, algorithm="ES256", headers=headers)


def b64u_json(document: dict[str, Any]) -> str:
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def refused(token: str, check: str, scope: str | None = None, **verifier_args: Any) -> None:
    with pytest.raises(TokenError) as caught:
        verifier(**verifier_args).verify(token, scope=scope)
    assert caught.value.check == check
    assert caught.value.http_status == (403 if check == "token-scope" else 401)


def user_token(**overrides: Any) -> str:
    arguments: dict[str, Any] = {"audience": ISSUER, "scope": "user", "project": "acme"}
    arguments.update(overrides)
    token, _ = issuer().issue("client-1", **arguments)
    return token


def test_issued_token_verifies_with_every_claim() -> None:
    token, expires_in = issuer().issue(
        "client-1", audience=ISSUER, scope="user", project="acme", jkt="thumb"
    )
    assert expires_in == 3600
    claims = verifier().verify(token, scope="user")
    assert (claims.sub, claims.client_id, claims.project, claims.scope, claims.exp) == (
        "client-1",
        "client-1",
        "acme",
        "user",
        NOW + 3600,
    )
    assert (claims.audience, claims.jkt, claims.room) == (ISSUER, "thumb", None)
    decoded = jwt.decode(token, options={"verify_signature": False})
    assert set(decoded) == {
        "iss", "aud", "sub", "client_id", "project", "scope", "iat", "nbf", "exp", "jti", "cnf"
    }  # fmt: skip
    assert decoded["iss"] == ISSUER and decoded["aud"] == ISSUER
    assert decoded["cnf"] == {"jkt": "thumb"}
    assert jwt.get_unverified_header(token) == {
        "alg": "ES256",
        "typ": "at+jwt",
        "kid": kid_of(KEY.public_key()),
    }


def test_a_token_for_one_room_names_it_and_its_project() -> None:
    token, _ = issuer().issue(
        "client-1", audience=CONTROLLER, scope="user", project="acme", room="overlap", jkt="t"
    )
    claims = verifier(audience=CONTROLLER).verify(token, scope="user")
    assert (claims.audience, claims.project, claims.room) == (CONTROLLER, "acme", "overlap")


def test_an_operation_token_lives_seconds() -> None:
    for scope in ("deploy", "delete", "status"):
        token, lifetime = issuer().issue(
            "cleanroom-manager", audience=CONTROLLER, scope=scope, project="acme", room="x"
        )
        assert lifetime == OPERATION_LIFETIME == 15
        assert verifier(audience=CONTROLLER).verify(token, scope=scope).exp == NOW + 15


def test_an_unknown_scope_is_never_issued() -> None:
    with pytest.raises(ValueError, match="unknown scope"):
        issuer().issue("client-1", audience=ISSUER, scope="admin")


def test_hand_built_good_token_verifies() -> None:
    # The baseline every negative test below changes in exactly one way.
    assert verifier().verify(signed(good_claims()), scope="user").jti == "jti-1"


def test_expired() -> None:
    refused(user_token(), "token-expired", now=NOW + 3600 + DEFAULT_LEEWAY)


def test_not_yet_valid() -> None:
    refused(user_token(), "token-not-yet-valid", now=NOW - DEFAULT_LEEWAY - 1)


def test_wrong_audience() -> None:
    refused(signed({**good_claims(), "aud": "someone-else"}), "token-audience")


def test_the_managers_token_is_refused_by_a_controller_and_the_other_way_round() -> None:
    refused(user_token(), "token-audience", audience=CONTROLLER)
    for_controller = user_token(audience=CONTROLLER, room="overlap")
    refused(for_controller, "token-audience")
    refused(for_controller, "token-audience", audience="http://compute-2.test:8081")


def test_an_audience_list_is_refused_even_if_it_names_this_server() -> None:
    refused(signed({**good_claims(), "aud": [ISSUER, CONTROLLER]}), "token-claim")


def test_issued_claims_skip_only_the_audience() -> None:
    # What the revocation endpoint uses: a token for a Controller, still signed and in time.
    for_controller = user_token(audience=CONTROLLER, room="overlap")
    assert verifier().issued_claims(for_controller).audience == CONTROLLER
    with pytest.raises(TokenError) as caught:
        verifier(now=NOW + 3600 + DEFAULT_LEEWAY).issued_claims(for_controller)
    assert caught.value.check == "token-expired"


@pytest.mark.parametrize("typ", [None, "JWT", "dpop+jwt", "application/jwt"])
def test_a_jwt_that_is_no_access_token_is_refused(typ: str | None) -> None:
    refused(signed(good_claims(), typ=typ), "token-type")


@pytest.mark.parametrize("cnf", [{"jkt": 1}, {"jkt": ""}, {}, "thumb", ["thumb"]], ids=repr)
def test_a_bad_confirmation_claim_is_refused(cnf: object) -> None:
    refused(signed({**good_claims(), "cnf": cnf}), "token-claim")


@pytest.mark.parametrize("claim", ["project", "room"])
def test_an_optional_claim_of_the_wrong_type_is_refused(claim: str) -> None:
    refused(signed({**good_claims(), claim: 7}), "token-claim")


def test_wrong_issuer() -> None:
    refused(signed({**good_claims(), "iss": "http://evil.test"}), "token-issuer")


def test_bad_signature() -> None:
    # Signed by another key, but naming the issuer's key.
    refused(signed(good_claims(), key=OTHER_KEY), "token-signature")


def test_tampered_claims_break_the_signature() -> None:
    header, _, signature = signed(good_claims()).split(".")
    forged = b64u_json({**good_claims(), "project": "other"})
    refused(f"{header}.{forged}.{signature}", "token-signature")


def test_alg_none() -> None:
    header = b64u_json({"alg": "none", "typ": "at+jwt", "kid": kid_of(KEY.public_key())})
    refused(f"{header}.{b64u_json(good_claims())}.", "token-algorithm")


def test_hs256_with_the_public_key_as_secret() -> None:
    public_pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64u_json({"alg": "HS256", "typ": "at+jwt", "kid": kid_of(KEY.public_key())})
    signing_input = f"{header}.{b64u_json(good_claims())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    refused(
        f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}",
        "token-algorithm",
    )


@pytest.mark.parametrize(
    "claim", ["iss", "aud", "sub", "client_id", "scope", "iat", "nbf", "exp", "jti"]
)
def test_missing_claim(claim: str) -> None:
    claims = good_claims()
    del claims[claim]
    refused(signed(claims), "token-claim")


def test_claim_of_the_wrong_type() -> None:
    refused(signed({**good_claims(), "exp": str(NOW + 3600)}), "token-claim")


def test_wrong_scope() -> None:
    refused(signed(good_claims()), "token-scope", scope="deploy")


def test_unknown_kid() -> None:
    refused(signed(good_claims(), key=OTHER_KEY, kid=kid_of(OTHER_KEY.public_key())), "token-key")


def test_not_a_jwt() -> None:
    refused("not-a-token", "token-format")


def test_signing_key_is_created_private_and_reused(tmp_path: Path) -> None:
    first = TokenIssuer(ISSUER, KeyRing.open(tmp_path))
    path = tmp_path / KEYS_DIR / f"{first.kid}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    second = TokenIssuer(ISSUER, KeyRing.open(tmp_path))
    assert first.kid == second.kid
    token, _ = first.issue("client-1", audience=ISSUER, scope="user")
    TokenVerifier(ISSUER, ISSUER, keys=second.jwks()).verify(token)


def test_kid_is_the_hash_of_the_spki() -> None:
    der = KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    expected = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    assert issuer().kid == expected
    assert issuer().jwks()["keys"][0]["kid"] == expected


class CountingTransport(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return super().handle_request(request)


def test_jwks_fetched_from_the_manager_and_refetched_at_most_every_30_s(
    manager: Manager,
) -> None:
    client_id, secret = manager.new_client("acme")
    token = manager.client().fetch_token(client_id, secret).access_token
    now = [float(NOW)]
    transport = CountingTransport()
    remote = TokenVerifier(
        manager.url,
        manager.url,
        jwks_url=f"{manager.url}/.well-known/jwks.json",
        transport=transport,
        clock=lambda: now[0],
    )
    # The manager's token is checked against the real clock's issue time: pin ours to it.
    now[0] = jwt.decode(token, options={"verify_signature": False})["iat"]
    assert remote.verify(token, scope="user").sub == client_id
    assert transport.requests == 1
    stranger = jwt.encode(
        {"sub": "x"},
        OTHER_KEY,
        algorithm="ES256",
        headers={"kid": kid_of(OTHER_KEY.public_key()), "typ": "at+jwt"},
    )
    with pytest.raises(TokenError) as caught:
        remote.verify(stranger)
    assert caught.value.check == "token-key"
    assert transport.requests == 1  # fetched less than 30 s ago: not again
    now[0] += 30
    with pytest.raises(TokenError):
        remote.verify(stranger)
    assert transport.requests == 2
    assert remote.verify(token).sub == client_id  # known kid: no fetch
    assert transport.requests == 2


# -- revocation: the one rule, checked the same way at the manager and the Controllers


def claims(**changes: Any) -> TokenClaims:
    fields: dict[str, Any] = {
        "sub": "client-1",
        "client_id": "client-1",
        "audience": ISSUER,
        "project": "acme",
        "scope": "user",
        "iat": NOW,
        "exp": NOW + 3600,
        "jti": "jti-1",
    }
    fields.update(changes)
    return TokenClaims(**fields)


def test_a_token_that_nothing_revokes_counts() -> None:
    check_not_revoked(claims(), revoked=False, client=None)
    check_not_revoked(claims(), revoked=False, client=ClientStatus(not_before=NOW))


@pytest.mark.parametrize(
    ("revoked", "client", "reason"),
    [
        (True, None, "the token was revoked"),
        (False, ClientStatus(disabled=True), "the token's client is disabled"),
        (False, ClientStatus(not_before=NOW + 1), "issued before its client's credentials"),
    ],
    ids=["jti-revoked", "client-disabled", "issued-before-not-before"],
)
def test_revoked(revoked: bool, client: ClientStatus | None, reason: str) -> None:
    with pytest.raises(TokenError) as caught:
        check_not_revoked(claims(), revoked=revoked, client=client)
    assert caught.value.check == "token-revoked"
    assert caught.value.http_status == 401
    assert reason in caught.value.message


def test_revocation_list_round_trip_and_check() -> None:
    listed = Revocations(
        now=NOW,
        tokens={"jti-1": NOW + 3600},
        clients={
            client_digest("client-2"): ClientStatus(not_before=NOW + 1),
            client_digest("client-3"): ClientStatus(0, True),
        },
    )
    document = listed.to_json()
    assert "client-2" not in json.dumps(document)  # clients only by digest
    again = Revocations.from_json(json.loads(json.dumps(document)))
    assert again == listed
    revoked_ones = (claims(), claims(jti="x", sub="client-2"), claims(jti="y", sub="client-3"))
    for refused_claims in revoked_ones:
        with pytest.raises(TokenError) as caught:
            again.check(refused_claims)
        assert caught.value.check == "token-revoked"
    again.check(claims(jti="z"))
    again.check(claims(jti="z", sub="client-2", iat=NOW + 1))


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"now": NOW, "tokens": {}, "clients": []},
        {"now": str(NOW), "tokens": [], "clients": []},
        {"now": NOW, "tokens": [{"jti": 1, "exp": NOW}], "clients": []},
        {"now": NOW, "tokens": [{"jti": "a", "exp": True}], "clients": []},
        {"now": NOW, "tokens": [], "clients": [{"client_sha256": "c", "not_before": 0}]},
        {"now": NOW, "tokens": [], "clients": [{"not_before": 0, "disabled": False}]},
    ],
    ids=["not-object", "not-list", "now-text", "jti-int", "exp-bool", "no-disabled", "no-id"],
)
def test_a_malformed_revocation_list_is_refused(document: object) -> None:
    with pytest.raises(ValueError):
        Revocations.from_json(document)


# -- every refusal, at a running manager -------------------------------------------------

KEY_OF_CLIENT = ProofKey.generate()


def manager_signed(manager: Manager, client_id: str, **changes: Any) -> str:
    """A user token signed with the manager's own key, bound to KEY_OF_CLIENT, changed
    in one way from a good one."""
    changes.setdefault("cnf", {"jkt": KEY_OF_CLIENT.jkt})
    return signed_token(manager.settings.data_dir, manager.url, sub=client_id, **changes)


def whoami(manager: Manager, token: str) -> httpx.Response:
    url = f"{manager.url}/v1/whoami"
    return httpx.get(url, headers=dpop(KEY_OF_CLIENT, token, "GET", url))


MANAGER_REFUSALS: dict[str, tuple[dict[str, Any], str, int]] = {
    "expired": ({"exp": -1000}, "token-expired", 401),
    "not-yet-valid": ({"nbf": 1000}, "token-not-yet-valid", 401),
    "wrong-audience": ({"aud": "someone-else"}, "token-audience", 401),
    "a-controller-audience": ({"aud": "http://127.0.0.1:1", "room": "x"}, "token-audience", 401),
    "wrong-issuer": ({"iss": "http://evil.test"}, "token-issuer", 401),
    "bad-signature": ({"key": OTHER_KEY}, "token-signature", 401),
    "missing-scope": ({"scope": "deploy"}, "token-scope", 403),
    "not-an-access-token": ({"header": {"typ": "JWT"}}, "token-type", 401),
    "bound-to-no-key": ({"cnf": None}, "dpop-proof", 401),
    "bound-to-another-key": ({"cnf": {"jkt": ProofKey.generate().jkt}}, "dpop-proof", 401),
}


@pytest.mark.parametrize("case", sorted(MANAGER_REFUSALS))
def test_the_manager_refuses(manager: Manager, case: str) -> None:
    client_id, _ = manager.new_client("acme")
    assert whoami(manager, manager_signed(manager, client_id)).status_code == 200  # baseline
    changes, check, status = MANAGER_REFUSALS[case]
    now = int(time.time())
    shifted = {
        name: (now + value if name in ("exp", "nbf") else value) for name, value in changes.items()
    }
    if "exp" in shifted:
        shifted.update(iat=shifted["exp"] - 600, nbf=shifted["exp"] - 600)
    answer = whoami(manager, manager_signed(manager, client_id, **shifted))
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["check"] == check


def test_the_manager_refuses_alg_none(manager: Manager) -> None:
    client_id, _ = manager.new_client("acme")
    good = manager_signed(manager, client_id)
    _, claims_part, _ = good.split(".")
    kid = jwt.get_unverified_header(good)["kid"]
    unsigned = f"{b64u_json({'alg': 'none', 'typ': 'at+jwt', 'kid': kid})}.{claims_part}."
    answer = whoami(manager, unsigned)
    assert answer.status_code == 401 and answer.json()["check"] == "token-algorithm"
