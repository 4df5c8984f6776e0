"""Every path parameter of the manager, as an attacker writes it: matched whole or refused.

A NUL, a newline (the trailing one slips through a ``^…$`` pattern), a slash
encoded, or a very long value in any parameter of any route, with an owner's
token of the project the other parameters name: every answer is a 4xx problem
detail, never a 5xx (PostgreSQL refuses NUL in text: it must never be asked),
and nothing changes.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.auth import as_client

from .conftest import Manager
from .test_roles import join

HOSTILE = ["x%00", "x%0A", "acme%0A", "%2E%2E%2Facme", "x" * 5000]


def _routes(manager: Manager) -> list[tuple[str, str]]:
    document = httpx.get(f"{manager.url}/openapi.json").json()
    return [
        (method.upper(), path)
        for path, operations_of in document["paths"].items()
        for method in operations_of
        if "{" in path
    ]


def test_every_path_parameter_is_matched_whole(manager: Manager) -> None:
    owner = join(manager, "acme", "alice", "owner")
    routes = _routes(manager)
    assert len(routes) >= 9, routes
    normal = {"project": "acme", "name": "alice", "client_id": owner.client_id, "digest": "A" * 43}
    members_before = httpx.get(
        f"{manager.url}/v1/projects/acme/members",
        headers=as_client(owner.client, "GET", f"{manager.url}/v1/projects/acme/members"),
    ).json()
    tried = 0
    for method, template in routes:
        for parameter in re.findall(r"\{(\w+)\}", template):
            for value in HOSTILE:
                values = {**normal, parameter: value}
                path = template.format_map(values)
                url = f"{manager.url}{path}"
                body = {"json": {"role": "owner"}} if method == "PUT" else {}
                answer = httpx.request(
                    method, url, headers=as_client(owner.client, method, url), **body
                )
                where = f"{method} {template} with {parameter}={value[:20]!r}"
                assert 400 <= answer.status_code < 500, (where, answer.text)
                assert answer.headers["content-type"] == "application/problem+json", where
                check = answer.json().get("check") or ""
                assert not check.startswith(("dpop", "token")), f"{where}: not past the token"
                tried += 1
    assert tried >= 40
    members_after = httpx.get(
        f"{manager.url}/v1/projects/acme/members",
        headers=as_client(owner.client, "GET", f"{manager.url}/v1/projects/acme/members"),
    ).json()
    assert members_after == members_before


@pytest.mark.parametrize("value", ["victim%00", "victim%0A"])
def test_a_room_project_query_parameter_is_matched_whole(manager: Manager, value: str) -> None:
    owner = join(manager, "acme", "alice", "owner")
    url = f"{manager.url}/v1/rooms/victim?project={value}"
    answer = httpx.get(url, headers=as_client(owner.client, "GET", url))
    assert 400 <= answer.status_code < 500, answer.text


@pytest.mark.parametrize("member", ["x\x00", "x\n", "x" * 5000], ids=["nul", "newline", "5000"])
def test_a_member_named_in_a_body_is_checked_before_it_is_looked_up(
    manager: Manager, member: str
) -> None:
    owner = join(manager, "acme", "alice", "owner")
    url = f"{manager.url}/v1/projects/acme/clients"
    answer = httpx.post(url, json={"member": member}, headers=as_client(owner.client, "POST", url))
    assert answer.status_code == 422, answer.text
    assert answer.json()["check"] == "member-name"
    url = f"{manager.url}/v1/projects/acme/members/alice"
    answer = httpx.put(url, json={"role": member}, headers=as_client(owner.client, "PUT", url))
    assert answer.status_code == 422 and answer.json()["check"] == "member-role", answer.text


def test_the_token_is_checked_before_the_path(manager: Manager) -> None:
    for path in ("/v1/rooms/x%00", "/v1/projects/acme%0A/members"):
        answer = httpx.get(f"{manager.url}{path}")
        assert answer.status_code == 401 and answer.json()["check"] == "token-missing"
