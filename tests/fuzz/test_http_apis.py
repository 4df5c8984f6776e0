"""Every HTTP endpoint of the manager and the Controller, fuzzed from its own OpenAPI.

schemathesis reads each server's ``/openapi.json`` and generates requests for every
operation: valid ones, and ones that break the schema (wrong types, missing
fields, odd headers). The servers are real processes on loopback (a LocalStack),
with a deployed clean room, so cases reach past the token check: half of them
carry a valid user token for that server (at the Controller: for the room) with
a DPoP proof for exactly that request and, where a path names a room, the real
room's name.

For every answer: no 5xx, an answer within the timeout (no hang), and every
error a problem-details body (RFC 9457) with the status it came with, except the
token endpoint, which answers OAuth2 errors (RFC 6749 §5.2). The normal run uses
``CLEANROOM_FUZZ_HTTP_FAST`` (25) examples per operation; ``-m slow``
``CLEANROOM_FUZZ_HTTP_SLOW`` (1,000).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case

from cleanroom.dpop import ProofKey
from cleanroom.insecure.localstack import LocalStack
from tests.e2e.conftest import User, make_user
from tests.e2e.helpers import deploy
from tests.reliability.report import record

FAST = int(os.environ.get("CLEANROOM_FUZZ_HTTP_FAST", "25"))
SLOW = int(os.environ.get("CLEANROOM_FUZZ_HTTP_SLOW", "1000"))
# The slow budget sends tens of thousands of requests: more than the suite's 300 s.
BUDGETS = [
    pytest.param(FAST, id="fast"),
    pytest.param(SLOW, id="slow", marks=[pytest.mark.slow, pytest.mark.timeout(3600)]),
]
TIMEOUT = 20.0
"""Seconds an answer may take before the case counts as a hang."""
ROOM = "fuzzed"
OAUTH_ERRORS = {
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_target",
    "invalid_dpop_proof",
    "slow_down",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("stack")) as running:
        running.add_project("acme")
        running.add_project("globex")
        yield running


@pytest.fixture(scope="module")
def parties(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> tuple[User, User]:
    alice = make_user(stack, tmp_path_factory.mktemp("alice"), "alice", "acme")
    bob = make_user(stack, tmp_path_factory.mktemp("bob"), "bob", "globex")
    deploy(alice, bob, tmp_path_factory.mktemp("function"), ROOM)
    return alice, bob


@dataclass(frozen=True)
class Credentials:
    """A valid token for one server and the key its proofs are made with."""

    key: ProofKey
    token: str


@pytest.fixture(scope="module")
def credentials(stack: LocalStack, parties: tuple[User, User]) -> dict[str, Credentials]:
    """Alice's tokens for the manager and for the room, both fetched before any fuzzing
    (which may delete the room at the manager)."""
    alice, _ = parties
    login = alice.profile.login()
    assert login.token is not None
    room = alice.profile.access_token(resource=stack.compute_url, room=ROOM, project="acme")
    key = alice.profile.proof_key
    return {"manager": Credentials(key, login.token), "controller": Credentials(key, room)}


def _aim(case: Case, base_url: str, credentials: Credentials) -> None:
    """Half the cases (decided by the case itself) get a valid token with a proof for
    exactly that request, and the real room."""
    seen = repr((case.body, case.query, case.path_parameters)).encode()
    if zlib.crc32(seen) % 2:
        return
    if case.path_parameters and "name" in case.path_parameters:
        case.path_parameters["name"] = ROOM
    try:
        proof = credentials.key.proof(
            case.method, base_url + case.formatted_path, credentials.token
        )
    except ValueError:  # a path no URL can carry: the case goes without a token
        return
    case.headers = {
        **(case.headers or {}),
        "Authorization": f"DPoP {credentials.token}",
        "DPoP": proof,
    }


def _check(case: Case, response: Any) -> None:
    where = f"{case.method} {case.formatted_path}"
    status = response.status_code
    assert status < 500, f"{where} answered {status}: {response.text[:500]}"
    if status < 400:
        return
    headers = {name.lower(): value for name, value in response.headers.items()}
    kind = headers.get("content-type", [""])  # schemathesis: name -> list of values
    kind = kind[0] if isinstance(kind, list) else kind
    body = response.json()
    if case.path == "/oauth/token":
        assert body.get("error") in OAUTH_ERRORS, f"{where} {status}: {body}"
        return
    assert kind.startswith("application/problem+json"), f"{where} {status} is {kind}: {body}"
    assert body.get("status") == status, f"{where} {status}: {body}"
    assert isinstance(body.get("detail"), str) and body["detail"], f"{where} {status}: {body}"


def _fuzz(case: Case, base_url: str, credentials: Credentials, seen: dict[str, int]) -> None:
    _aim(case, base_url, credentials)
    try:
        response = case.call(base_url=base_url, timeout=TIMEOUT)
    except Exception as error:  # noqa: BLE001 (a hang or a dropped connection fails the case)
        pytest.fail(f"{case.method} {case.formatted_path}: no answer: {error!r}")
    _check(case, response)
    kind = f"{response.status_code // 100}xx"
    seen[kind] = seen.get(kind, 0) + 1


def _alive(url: str, path: str) -> None:
    """After the fuzzing, the server still answers."""
    assert httpx.get(url + path, timeout=TIMEOUT).status_code == 200


def _fuzz_server(server: str, base_url: str, credentials: Credentials, examples: int) -> None:
    """``examples`` cases for every operation of the server's own OpenAPI description."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, f"{base_url}/openapi.json lists no operation"
    seen: dict[str, int] = {}
    for operation in operations:

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(operation.as_strategy())
        def run(case: Case) -> None:
            _fuzz(case, base_url, credentials, seen)

        run()
    record(
        "fuzz over HTTP (schemathesis)",
        f"{server}: every operation of its /openapi.json",
        {
            "operations": len(operations),
            "examples": examples,
            "cases sent": sum(seen.values()),
            "answers": seen,
            "outcome": "no 5xx, no hang; every error a problem with a text detail "
            "(the token endpoint: an OAuth error)",
        },
    )


@pytest.mark.parametrize("examples", BUDGETS)
def test_manager_api(stack: LocalStack, credentials: dict[str, Credentials], examples: int) -> None:
    _fuzz_server("manager", stack.manager_url, credentials["manager"], examples)


@pytest.mark.parametrize("examples", BUDGETS)
def test_controller_api(
    stack: LocalStack, credentials: dict[str, Credentials], examples: int
) -> None:
    _fuzz_server("Controller", stack.compute_url, credentials["controller"], examples)


def test_both_servers_still_serve_after_the_fuzzing(
    stack: LocalStack, parties: tuple[User, User]
) -> None:
    _alive(stack.manager_url, "/.well-known/jwks.json")
    _alive(stack.compute_url, "/v1/health")
    alice, _ = parties
    # The fuzzer holds a valid token, so it may well have deleted the room: it is
    # only asked that the manager still answers with its true state.
    assert alice.client.manager.room(ROOM).state in {"deployed", "deleted"}
