"""DPoP proofs (RFC 9449): every check of ProofVerifier breaks exactly one thing of a
good proof, and the request authenticator's scheme rules, one by one."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from cleanroom.dpop import (
    WINDOW,
    DPoPAuth,
    ProofKey,
    ProofVerifier,
    ReplayCache,
    normalised_url,
    thumbprint,
    token_hash,
)
from cleanroom.http_auth import Presented, RequestAuthenticator, challenge, presented
from cleanroom.protocol.encoding import b64u
from cleanroom.tokens import TokenError, TokenIssuer, TokenVerifier

NOW = 1_764_763_200
URL = "https://compute-1.test/v1/rooms/overlap/attestation"
TOKEN = "header.claims.signature"
KEY = ProofKey(ec.derive_private_key(0xD909, ec.SECP256R1()), clock=lambda: NOW)
OTHER = ProofKey(ec.derive_private_key(0x07E4, ec.SECP256R1()), clock=lambda: NOW)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def verifier(clock: Clock | None = None) -> ProofVerifier:
    clock = clock or Clock()
    return ProofVerifier(clock=clock, replays=ReplayCache(clock=clock))


def good_claims() -> dict[str, Any]:
    return {"jti": "proof-1", "htm": "POST", "htu": URL, "iat": NOW, "ath": token_hash(TOKEN)}


def made(
    claims: dict[str, Any] | None = None,
    key: ProofKey = KEY,
    **header: Any,
) -> str:
    headers: dict[str, Any] = {"typ": "dpop+jwt", "jwk": key.jwk, **header}
    headers = {name: value for name, value in headers.items() if value is not None}
    return jwt.encode(claims or good_claims(), key.key, algorithm="ES256", headers=headers)


def check(proof: str | list[str], **overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "method": "POST",
        "url": URL,
        "access_token": TOKEN,
        "jkt": KEY.jkt,
    }
    verifying = overrides.pop("verifier", None) or verifier()
    arguments.update(overrides)
    return verifying.verify([proof] if isinstance(proof, str) else proof, **arguments)


def refused(proof: str | list[str], actual_in: str = "", **overrides: Any) -> TokenError:
    with pytest.raises(TokenError) as caught:
        check(proof, **overrides)
    assert caught.value.check == "dpop-proof"
    assert caught.value.http_status == 401
    assert actual_in in caught.value.message
    return caught.value


def test_a_good_proof_is_accepted_and_names_its_key() -> None:
    assert check(made()) == KEY.jkt


def test_a_proof_made_by_proof_key_is_accepted() -> None:
    proof = KEY.proof("post", URL + "?query=ignored", TOKEN)
    assert check(proof) == KEY.jkt
    header = jwt.get_unverified_header(proof)
    assert header["typ"] == "dpop+jwt" and header["alg"] == "ES256"
    assert set(header["jwk"]) == {"kty", "crv", "x", "y"}  # public only
    claims = jwt.decode(proof, options={"verify_signature": False})
    assert claims["htu"] == URL and claims["htm"] == "POST"
    assert claims["ath"] == b64u(__import__("hashlib").sha256(TOKEN.encode()).digest())


def test_the_thumbprint_is_rfc_7638() -> None:
    # RFC 7638 §3.1's example is RSA; for EC the same rule: JCS of crv, kty, x, y.
    jwk = ECAlgorithm.to_jwk(KEY.key.public_key(), as_dict=True)
    members = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]},
        separators=(",", ":"),
        sort_keys=True,
    )
    expected = b64u(__import__("hashlib").sha256(members.encode()).digest())
    assert thumbprint(KEY.key.public_key()) == expected == KEY.jkt


def test_no_proof_and_two_proofs() -> None:
    refused([], "no DPoP proof")
    refused([made(), made({**good_claims(), "jti": "proof-2"})], "several")


def test_another_method() -> None:
    refused(made({**good_claims(), "htm": "GET"}), "another method")


@pytest.mark.parametrize(
    "htu",
    [
        "https://compute-2.test/v1/rooms/overlap/attestation",  # another server
        "https://compute-1.test/v1/rooms/other/attestation",  # another room
        "https://compute-1.test/v1/rooms/overlap/receipt",  # another route
        "http://compute-1.test/v1/rooms/overlap/attestation",  # another scheme
        "https://compute-1.test:8443/v1/rooms/overlap/attestation",  # another port
    ],
)
def test_another_url(htu: str) -> None:
    refused(made({**good_claims(), "htu": htu}), "another URL")


def test_the_url_is_compared_after_normalisation() -> None:
    proof = made(
        {**good_claims(), "htu": "HTTPS://Compute-1.TEST:443/v1/rooms/overlap/attestation"}
    )
    assert check(proof) == KEY.jkt
    assert normalised_url("http://a.test:80/x?y#z") == "http://a.test/x"
    assert normalised_url("http://a.test:8080") == "http://a.test:8080/"


@pytest.mark.parametrize("htu", ["/v1/rooms/overlap/attestation", "ftp://a/b", "not a url"])
def test_an_htu_that_is_no_absolute_url(htu: str) -> None:
    refused(made({**good_claims(), "htu": htu}))


def test_too_old_and_from_the_future() -> None:
    refused(made({**good_claims(), "iat": NOW - WINDOW - 1}), "too old")
    refused(made({**good_claims(), "iat": NOW + WINDOW + 1}), "from the future")
    assert check(made({**good_claims(), "iat": NOW - WINDOW})) == KEY.jkt
    assert check(made({**good_claims(), "iat": NOW + WINDOW, "jti": "p2"})) == KEY.jkt


def test_a_proof_for_another_token() -> None:
    refused(made({**good_claims(), "ath": token_hash("another.token.here")}), "another access")
    claims = good_claims()
    del claims["ath"]
    refused(made(claims), "another access")


def test_a_proof_by_another_key_than_the_tokens() -> None:
    refused(made(key=OTHER), "another key")


def test_a_replayed_proof() -> None:
    shared = verifier()
    proof = made()
    assert check(proof, verifier=shared) == KEY.jkt
    refused(proof, "replayed", verifier=shared)


def test_a_jti_is_remembered_for_the_whole_window_then_forgotten() -> None:
    clock = Clock()
    shared = verifier(clock)
    proof = made()
    check(proof, verifier=shared)
    clock.now = NOW + WINDOW  # still inside: still a replay
    refused(proof, "replayed", verifier=shared)
    clock.now = NOW + WINDOW + 1  # outside: too old, and forgotten
    refused(proof, "too old", verifier=shared)
    fresh = made({**good_claims(), "jti": "proof-2", "iat": NOW + WINDOW + 1})
    check(fresh, verifier=shared)
    assert len(shared.replays) == 1  # the old jti was forgotten when it could not count


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ({"typ": "JWT"}, "typ"),
        ({"typ": None}, "typ"),
        ({"typ": "at+jwt"}, "typ"),
        ({"jwk": None}, "no usable key"),
        ({"jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}}, "no usable key"),
        ({"jwk": {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}}, "no usable key"),
    ],
    ids=["typ-jwt", "typ-missing", "typ-access-token", "no-jwk", "rsa-jwk", "p384-jwk"],
)
def test_a_bad_header(header: dict[str, Any], words: str) -> None:
    refused(made(**header), words)


def test_a_jwk_with_a_private_part() -> None:
    private = ECAlgorithm.to_jwk(KEY.key, as_dict=True)
    refused(made(jwk=private), "private key")


def test_a_signature_by_another_key_than_the_jwk() -> None:
    # Header names KEY, signed by OTHER: the signature must not verify.
    forged = jwt.encode(
        good_claims(), OTHER.key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": KEY.jwk}
    )
    refused(forged, "does not verify")


def test_alg_none_and_hs256() -> None:
    header = b64u(json.dumps({"typ": "dpop+jwt", "alg": "none", "jwk": KEY.jwk}).encode())
    body = b64u(json.dumps(good_claims()).encode())
    refused(f"{header}.{body}.", "another algorithm")
    hs = jwt.encode(good_claims(), "s" * 32, algorithm="HS256", headers={"typ": "dpop+jwt"})
    refused(hs, "another algorithm")


@pytest.mark.parametrize("claim", ["jti", "htm", "htu", "iat"])
def test_a_missing_claim(claim: str) -> None:
    claims = good_claims()
    del claims[claim]
    refused(made(claims), f"lacks a valid {claim!r}")


@pytest.mark.parametrize(
    ("claim", "value"),
    [("iat", str(NOW)), ("iat", True), ("jti", 7), ("jti", ""), ("jti", "x" * 129)],
)
def test_a_claim_of_the_wrong_type_or_size(claim: str, value: object) -> None:
    refused(made({**good_claims(), claim: value}))


def test_not_a_jws() -> None:
    refused("not-a-proof")


def test_the_replay_cache_refuses_rather_than_forgets_when_full() -> None:
    clock = Clock()
    cache = ReplayCache(capacity=2, clock=clock)
    assert cache.first_use("a", NOW + 10) and cache.first_use("b", NOW + 10)
    with pytest.raises(TokenError) as caught:
        cache.first_use("c", NOW + 10)
    assert caught.value.check == "dpop-replay-cache" and caught.value.http_status == 503
    assert not cache.first_use("a", NOW + 10)  # still remembered
    clock.now = NOW + 11
    assert cache.first_use("c", NOW + 20)  # the expired ones made room


def test_one_key_fills_only_its_share_of_the_replay_cache() -> None:
    """A key past its share is refused (429) and no other is: one client could fill the
    whole cache and have every other client's requests refused (503)."""
    clock = Clock()
    cache = ReplayCache(capacity=4, share=2, clock=clock)
    assert cache.first_use("a1", NOW + 10, "a") and cache.first_use("a2", NOW + 10, "a")
    with pytest.raises(TokenError) as caught:
        cache.first_use("a3", NOW + 10, "a")
    assert caught.value.check == "dpop-replay-share" and caught.value.http_status == 429
    assert (caught.value.expected, caught.value.actual) == (
        "fewer than 2 requests of one key within the replay window",
        2,
    )
    assert challenge(caught.value) is None  # says nothing about the token
    assert cache.first_use("b1", NOW + 10, "b") and cache.first_use("b2", NOW + 10, "b")
    assert not cache.first_use("a1", NOW + 10, "a")  # still remembered: a replay
    clock.now = NOW + 11
    assert cache.first_use("a3", NOW + 20, "a")  # its expired ones made room
    assert cache.held("a") == 1 and cache.held("b") == 0 and len(cache) == 1


def test_a_key_that_sends_proofs_out_of_order_counts_its_own_expired_ones_longer() -> None:
    clock = Clock()
    cache = ReplayCache(capacity=10, share=2, clock=clock)
    assert cache.first_use("late", NOW + 100, "a") and cache.first_use("early", NOW + 10, "a")
    clock.now = NOW + 11
    with pytest.raises(TokenError, match="too many requests"):
        cache.first_use("next", NOW + 70, "a")  # "early" is behind a live one
    assert cache.first_use("other", NOW + 70, "b")
    clock.now = NOW + 101
    assert cache.first_use("next", NOW + 160, "a")


def test_the_verifier_charges_each_proof_to_its_key() -> None:
    clock = Clock()
    proofs = ProofVerifier(clock=clock, replays=ReplayCache(capacity=10, share=2, clock=clock))
    for jti in ("k1", "k2"):
        assert check(made({**good_claims(), "jti": jti}), verifier=proofs) == KEY.jkt
    with pytest.raises(TokenError) as caught:
        check(made({**good_claims(), "jti": "k3"}), verifier=proofs)
    assert caught.value.check == "dpop-replay-share"
    other = made({**good_claims(), "jti": "o1"}, key=OTHER)
    assert check(other, verifier=proofs, jkt=OTHER.jkt) == OTHER.jkt


# -- the request authenticator: the scheme goes with the token -------------------------

ISSUER = "https://manager.test"
SIGNING = ec.derive_private_key(0x515, ec.SECP256R1())


def authenticator(clock: Clock | None = None) -> RequestAuthenticator:
    clock = clock or Clock()
    tokens = TokenVerifier(ISSUER, ISSUER, keys=TokenIssuer(ISSUER, SIGNING).jwks(), clock=clock)
    return RequestAuthenticator(tokens, verifier(clock), ISSUER)


def issue(scope: str = "user", jkt: str | None = KEY.jkt) -> str:
    token, _ = TokenIssuer(ISSUER, SIGNING, clock=lambda: NOW).issue(
        "client-1", audience=ISSUER, scope=scope, project="acme", jkt=jkt
    )
    return token


def authenticate(
    authorization: str | None, proofs: list[str], checking: RequestAuthenticator | None = None
) -> str:
    credentials = presented(authorization, proofs)
    claims = (checking or authenticator()).check(
        credentials, method="GET", url=ISSUER + "/v1/whoami"
    )
    return claims.sub


def proof_for(token: str, key: ProofKey = KEY) -> str:
    return key.proof("GET", ISSUER + "/v1/whoami", token)


def auth_refused(authorization: str | None, proofs: list[str], check_name: str) -> TokenError:
    with pytest.raises(TokenError) as caught:
        authenticate(authorization, proofs)
    assert caught.value.check == check_name
    return caught.value


def test_a_bound_token_with_its_proof() -> None:
    token = issue()
    assert authenticate(f"DPoP {token}", [proof_for(token)]) == "client-1"


def test_a_bound_token_sent_as_bearer_is_refused() -> None:
    token = issue()
    auth_refused(f"Bearer {token}", [proof_for(token)], "dpop-proof")


def test_a_bound_token_without_its_proof_or_with_a_replayed_one() -> None:
    token = issue()
    auth_refused(f"DPoP {token}", [], "dpop-proof")
    shared = authenticator()
    proof = proof_for(token)
    assert authenticate(f"DPoP {token}", [proof], shared) == "client-1"
    with pytest.raises(TokenError) as caught:
        authenticate(f"DPoP {token}", [proof], shared)
    assert caught.value.check == "dpop-proof" and "replayed" in caught.value.message


def test_a_user_token_bound_to_no_key_is_refused_either_way() -> None:
    token = issue(jkt=None)
    auth_refused(f"Bearer {token}", [], "dpop-proof")
    auth_refused(f"DPoP {token}", [proof_for(token)], "dpop-proof")


def test_an_unbound_operation_token_goes_as_bearer_only() -> None:
    token = issue(scope="deploy", jkt=None)
    assert authenticate(f"Bearer {token}", []) == "client-1"
    auth_refused(f"DPoP {token}", [proof_for(token)], "dpop-proof")


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Basic abc", "DPoP a b", "token-without-scheme"]
)
def test_no_usable_authorization(authorization: str | None) -> None:
    error = auth_refused(authorization, [], "token-missing")
    assert challenge(error) == 'DPoP algs="ES256", Bearer'


def test_challenges() -> None:
    def error(check_name: str) -> TokenError:
        return TokenError(check_name, "x", "y", "z")

    assert challenge(error("dpop-proof")) == 'DPoP error="invalid_dpop_proof", algs="ES256"'
    assert challenge(error("token-expired")) == 'DPoP error="invalid_token", algs="ES256"'
    assert challenge(error("token-room")) == 'DPoP error="insufficient_scope", algs="ES256"'
    assert challenge(error("token-scope"), "bearer") == 'Bearer error="insufficient_scope"'
    assert challenge(error("token-revocation-stale")) is None


def test_presented_keeps_the_scheme_and_every_proof() -> None:
    assert presented("dpop  tok", ["a", "b"]) == Presented("dpop", "tok", ("a", "b"))


def test_dpop_auth_adds_a_fresh_proof_to_each_request() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    read: Callable[[], str] = lambda: TOKEN  # noqa: E731 - a token read per request
    with httpx.Client(transport=httpx.MockTransport(handler), auth=DPoPAuth(KEY, read)) as client:
        client.post(URL + "?x=1")
        client.post(URL)
    first, second = (request.headers["dpop"] for request in seen)
    assert seen[0].headers["authorization"] == f"DPoP {TOKEN}"
    assert check(first) == KEY.jkt
    assert first != second  # each its own jti


def test_a_request_url_no_proof_could_name_is_refused_not_crashed() -> None:
    refused(made(), "not valid", url="http://compute-1.test/v1/rooms/\x00")
