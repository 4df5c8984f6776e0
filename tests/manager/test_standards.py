"""The manager as stock clients see it: an OAuth2 library at the token endpoint, an
OpenAPI reader of its errors, a JOSE reader of its key set.

Authlib (its httpx client) authenticates with ``client_secret_basic`` by default, as
RFC 6749 §2.3.1 says a server MUST accept; ``client_secret_post`` is the form. A user's
token is sender-constrained (DPoP, RFC 9449): the library passes the proof as one more
header of its token request, and the token is then used with a proof per request.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote_plus, urlencode

import httpx
import jwt
import pytest
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import OAuth2Client

from cleanroom.dpop import DPoPAuth, ProofKey
from cleanroom.manager.client_auth import ClientAuthError, ClientCredentials, client_credentials
from tests.manager.conftest import Manager

TOKEN = "/oauth/token"


def proof(manager: Manager, key: ProofKey) -> dict[str, str]:
    """The DPoP header of a token request made with ``key``."""
    return {"DPoP": key.proof("POST", manager.url + TOKEN)}


def basic(client_id: str, secret: str) -> str:
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_an_oauth2_library_gets_a_token_either_way(manager: Manager, method: str) -> None:
    client_id, secret = manager.new_client("acme")
    key = ProofKey.generate()
    with OAuth2Client(client_id, secret, token_endpoint_auth_method=method) as client:
        token = client.fetch_token(
            manager.url + TOKEN, grant_type="client_credentials", headers=proof(manager, key)
        )
    assert token["token_type"] == "DPoP" and token["expires_in"] > 0
    claims = jwt.decode(token["access_token"], options={"verify_signature": False})
    assert claims["sub"] == client_id
    # The token it holds works like the CLI's, with a proof of the same key per request.
    auth = DPoPAuth(key, token["access_token"])
    assert httpx.get(manager.url + "/v1/whoami", auth=auth).json()["client_id"] == client_id


def test_the_library_sends_basic_by_default(manager: Manager) -> None:
    client_id, secret = manager.new_client("acme")
    seen: list[httpx.Request] = []
    with OAuth2Client(client_id, secret, event_hooks={"request": [seen.append]}) as client:
        client.fetch_token(
            manager.url + TOKEN,
            grant_type="client_credentials",
            headers=proof(manager, ProofKey.generate()),
        )
    (request,) = seen
    assert request.headers["authorization"] == basic(client_id, secret)
    assert b"client_secret" not in request.content


def test_a_wrong_basic_secret_is_401_with_a_challenge(manager: Manager) -> None:
    client_id, secret = manager.new_client("acme")
    with (
        OAuth2Client(client_id, secret + "x") as client,
        pytest.raises(OAuthError) as caught,
    ):
        client.fetch_token(manager.url + TOKEN, grant_type="client_credentials")
    assert caught.value.error == "invalid_client"
    answer = httpx.post(
        manager.url + TOKEN,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": basic(client_id, secret + "x")},
    )
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith('Basic realm="cleanroom"')
    assert answer.json() == {"error": "invalid_client"}
    assert answer.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic !!!",  # not base64
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),  # not UTF-8
        "Basic " + base64.b64encode(b":secret").decode(),  # no client id
        "Bearer abc",  # another scheme
    ],
    ids=["base64", "colon", "utf8", "empty-id", "scheme"],
)
def test_malformed_basic_credentials_are_401_with_a_challenge(
    manager: Manager, authorization: str
) -> None:
    answer = httpx.post(
        manager.url + TOKEN,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": authorization},
    )
    assert answer.status_code == 401
    assert answer.json() == {"error": "invalid_client"}
    assert "www-authenticate" in answer.headers


def test_basic_ids_and_secrets_are_form_urlencoded_first() -> None:
    """RFC 6749 Appendix B: ':' , '+' and spaces in an id or secret survive Basic."""
    given = client_credentials(basic("id:with+plus", "se:cret wi+th"), {})
    assert given == ClientCredentials("id:with+plus", "se:cret wi+th", "client_secret_basic")
    assert client_credentials(None, {"client_id": "a", "client_secret": "b"}) == (
        ClientCredentials("a", "b", "client_secret_post")
    )
    assert client_credentials(None, {}) is None
    # Another scheme is not client authentication (a bearer token revoking itself).
    assert client_credentials("Bearer abc", {}) is None
    with pytest.raises(ClientAuthError) as caught:
        client_credentials(None, {"client_id": "a"})
    assert (caught.value.http_status, caught.value.challenge) == (401, False)


def test_both_methods_at_once_are_refused(manager: Manager) -> None:
    client_id, secret = manager.new_client("acme")
    answer = httpx.post(
        manager.url + TOKEN,
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        headers={"Authorization": basic(client_id, secret)},
    )
    assert (answer.status_code, answer.json()) == (400, {"error": "invalid_request"})
    other = httpx.post(
        manager.url + TOKEN,
        data={"grant_type": "client_credentials", "client_id": "someone-else"},
        headers={"Authorization": basic(client_id, secret)},
    )
    assert (other.status_code, other.json()) == (400, {"error": "invalid_request"})


@pytest.mark.parametrize("good_first", [True, False])
def test_two_authorization_headers_are_refused(manager: Manager, good_first: bool) -> None:
    """The field is not a list: the manager took the first of two Basic headers, so a
    proxy that read the other authenticated another client than the manager did (found by
    h9 with httpx, which sends both)."""
    client_id, secret = manager.new_client("acme")
    other_id, _ = manager.new_client("acme")
    headers = [("Authorization", basic(client_id, secret)), ("Authorization", basic(other_id, "x"))]
    key = ProofKey.generate()
    for path in (TOKEN, "/oauth/revoke"):
        answer = httpx.post(
            manager.url + path,
            data={"grant_type": "client_credentials", "token": "x"},
            headers=[*(headers if good_first else headers[::-1]), *proof(manager, key).items()],
        )
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json()["error"] == "invalid_request"
        assert "access_token" not in answer.text


def test_no_credentials_is_401_with_a_challenge(manager: Manager) -> None:
    answer = httpx.post(manager.url + TOKEN, data={"grant_type": "client_credentials"})
    assert answer.status_code == 401 and "www-authenticate" in answer.headers


def test_revocation_takes_basic_credentials_too(manager: Manager) -> None:
    client_id, secret = manager.new_client("acme")
    key = ProofKey.generate()
    with OAuth2Client(client_id, secret) as client:
        token = client.fetch_token(
            manager.url + TOKEN, grant_type="client_credentials", headers=proof(manager, key)
        )
        revoked = client.revoke_token(manager.url + "/oauth/revoke", token["access_token"])
        assert revoked.status_code == 200
    refused = httpx.get(manager.url + "/v1/whoami", auth=DPoPAuth(key, token["access_token"]))
    assert refused.status_code == 401 and refused.json()["check"] == "token-revoked"
    wrong = httpx.post(
        manager.url + "/oauth/revoke",
        data={"token": "x"},
        headers={"Authorization": basic(client_id, "wrong")},
    )
    assert wrong.status_code == 401 and "www-authenticate" in wrong.headers
    assert wrong.json()["error"] == "invalid_client"


# --- what a client generated from the OpenAPI document reads --------------------------


def openapi(manager: Manager) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(manager.url + "/openapi.json").json()
    return document


def test_every_error_is_described_as_a_problem_with_a_text_detail(manager: Manager) -> None:
    document = openapi(manager)
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert schemas["Problem"]["properties"]["detail"] == {
        "type": "string",
        "description": "one line a user can act on",
    }
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            default = responses["default"]["content"]
            assert default == {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            }, (method, path)
            for status, response in responses.items():
                if status.startswith(("4", "5")) and path != TOKEN:
                    assert "application/problem+json" in response["content"], (method, path)


def test_the_token_endpoint_is_described_as_it_is(manager: Manager) -> None:
    operation = openapi(manager)["paths"][TOKEN]["post"]
    form = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert form["required"] == ["grant_type"]
    assert form["properties"]["grant_type"]["enum"] == ["client_credentials"]
    assert {"client_id", "client_secret"} <= set(form["properties"])
    assert operation["security"] == [{"clientSecretBasic": []}, {}]
    for status in ("400", "401", "429"):
        schema = operation["responses"][status]["content"]["application/json"]["schema"]
        assert schema["required"] == ["error"]
    scheme = openapi(manager)["components"]["securitySchemes"]["clientSecretBasic"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "basic")


def test_real_errors_match_their_description(manager: Manager) -> None:
    """What the document promises, the server sends: a problem, detail a string."""
    client_id, secret = manager.new_client("acme")
    key = ProofKey.generate()
    token = httpx.post(
        manager.url + TOKEN,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": basic(client_id, secret), **proof(manager, key)},
    ).json()["access_token"]
    auth = DPoPAuth(key, token)
    for answer in (
        httpx.post(manager.url + "/v1/rooms", json={"nope": 1}, auth=auth),  # 422
        httpx.get(manager.url + "/v1/rooms/none", auth=auth),  # 404
        httpx.get(manager.url + "/v1/whoami"),  # 401
    ):
        assert answer.status_code >= 400
        assert answer.headers["content-type"] == "application/problem+json"
        body = answer.json()
        assert isinstance(body["detail"], str) and body["status"] == answer.status_code


def test_the_key_set_is_served_as_a_jwk_set(manager: Manager) -> None:
    answer = httpx.get(manager.url + "/.well-known/jwks.json")
    assert answer.headers["content-type"] == "application/jwk-set+json"
    keys = jwt.PyJWKSet.from_dict(answer.json())
    assert keys.keys and all(key.key_type == "EC" for key in keys.keys)


def test_a_parameter_given_twice_is_refused(manager: Manager) -> None:
    """RFC 6749 §3.2: parameters MUST NOT be included more than once. The manager read the
    last of two (Starlette's form.get), so another client's id first and this one's pair
    last got this client a token, and a proxy or log that read the first judged another
    client than the manager did, the gap of two Authorization headers (found by h10).
    ``resource`` alone may repeat (RFC 8707)."""
    client_id, secret = manager.new_client("acme")
    other_id, _ = manager.new_client("acme")
    key = ProofKey.generate()
    twice = [
        [("client_id", other_id), ("client_id", client_id), ("client_secret", secret)],
        [("client_id", client_id), ("client_secret", "x"), ("client_secret", secret)],
        [("client_id", client_id), ("client_secret", secret), ("grant_type", "x")],
    ]
    for form in twice:
        answer = httpx.post(
            manager.url + TOKEN,
            content=urlencode([("grant_type", "client_credentials"), *form]),
            headers={"Content-Type": "application/x-www-form-urlencoded", **proof(manager, key)},
        )
        assert answer.status_code == 400, (form, answer.text)
        assert answer.json()["error"] == "invalid_request"
        assert "access_token" not in answer.text
    revoked = httpx.post(
        manager.url + "/oauth/revoke",
        content=urlencode([("token", "a"), ("token", "b"), ("client_id", client_id),
                           ("client_secret", secret)]),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert revoked.status_code == 400, revoked.text
    assert revoked.json()["error"] == "invalid_request"
    once = httpx.post(
        manager.url + TOKEN,
        content=urlencode([("grant_type", "client_credentials"), ("client_id", client_id),
                           ("client_secret", secret)]),
        headers={"Content-Type": "application/x-www-form-urlencoded", **proof(manager, key)},
    )  # fmt: skip
    assert once.status_code == 200, once.text
