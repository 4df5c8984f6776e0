"""The manager's limits: the token endpoint's rate limit, the request size limit and the
rate of new secrets per project."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import text

from cleanroom.client.errors import ServerError
from cleanroom.dpop import ProofKey
from cleanroom.limits import RateLimit, RateLimiter, retry_after
from cleanroom.manager import admin as operations
from cleanroom.manager import audit, projects
from tests.auth import as_client

from .conftest import Manager, make_bundle
from .test_roles import Person, join

NEVER = RateLimit(burst=1000, per_second=1000.0)
"""A limit no test reaches, for the other of the two buckets."""


def raw_head(url: str, method: str, path: str, length: int) -> tuple[int, dict[str, object]]:
    """Send only the head of a request that declares ``length`` body bytes; the answer.

    An answer proves the server decided without reading the body.
    """
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
        sock.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        answer_head, _, body = data.partition(b"\r\n\r\n")
        lines = answer_head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        size = int(headers.get("content-length", "0"))
        while len(body) < size:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    document = json.loads(body) if body else {}
    return int(lines[0].split()[1]), document


# -- rate limit ------------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(RateLimit(burst=2, per_second=0.5), clock=lambda: now[0])
    assert limiter.take("a") is None and limiter.take("a") is None
    assert limiter.take("a") == pytest.approx(2.0)  # one request refills in 2 s
    assert limiter.take("b") is None  # buckets are per key
    now[0] = 1.0
    assert limiter.take("a") == pytest.approx(1.0)
    now[0] = 2.0
    assert limiter.take("a") is None


def test_full_buckets_are_forgotten() -> None:
    now = [0.0]
    limiter = RateLimiter(RateLimit(burst=2, per_second=1.0), clock=lambda: now[0])
    for key in range(100):
        limiter.take(str(key))
    assert len(limiter) == 100
    now[0] = 2.0  # all refilled
    limiter.take("new")
    assert len(limiter) == 1


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert [retry_after(s) for s in (0.01, 1.0, 1.2, 59.9)] == ["1", "1", "2", "60"]


ELSEWHERE = "127.0.0.2"
"""Another source address on loopback: the real client's, where an attacker's is 127.0.0.1."""


def post_from(source: str, url: str, **request: object) -> httpx.Response:
    """A POST sent from the loopback address ``source``."""
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source)) as client:
        return client.post(url, **request)  # type: ignore[arg-type]


def token_request(
    manager: Manager, client_id: str, secret: str, source: str = "127.0.0.1"
) -> httpx.Response:
    url = f"{manager.url}/oauth/token"
    return post_from(
        source,
        url,
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        headers={"DPoP": ProofKey.generate().proof("POST", url)},
    )


def test_wrong_secrets_count_against_the_client_from_their_address(
    start_manager: Callable[..., Manager],
) -> None:
    """A brute force of one client's secret is slowed at its address, even the right
    secret from there; the real client, from another address, still logs in (h24: the
    bucket was the client_id's alone, and anyone who knew it held the client's logins
    back with wrong secrets)."""
    manager = start_manager(
        token_rate_per_client=RateLimit(burst=2, per_second=0.001), token_rate_per_address=NEVER
    )
    client_id, secret = manager.new_client("acme")
    assert token_request(manager, client_id, "wrong").status_code == 401
    assert token_request(manager, client_id, "wrong again").status_code == 401
    limited = token_request(manager, client_id, secret)  # even the right secret, now
    assert limited.status_code == 429
    assert limited.json() == {"error": "slow_down"}
    assert int(limited.headers["retry-after"]) >= 1
    assert token_request(manager, client_id, "and again").status_code == 429
    other_id, other_secret = manager.new_client("acme")
    assert token_request(manager, other_id, other_secret).status_code == 200
    # The real client, elsewhere, while the attacker is held back.
    assert token_request(manager, client_id, secret, ELSEWHERE).status_code == 200
    assert token_request(manager, client_id, "wrong", "127.0.0.1").status_code == 429


def test_one_address_is_limited_across_client_ids(start_manager: Callable[..., Manager]) -> None:
    manager = start_manager(
        token_rate_per_client=NEVER, token_rate_per_address=RateLimit(burst=3, per_second=0.001)
    )
    answers = [token_request(manager, f"{n:032x}", "guess").status_code for n in range(3)]
    assert answers == [401, 401, 401]
    client_id, secret = manager.new_client("acme")
    limited = token_request(manager, client_id, secret)
    assert limited.status_code == 429 and limited.json() == {"error": "slow_down"}
    revoke = httpx.post(f"{manager.url}/oauth/revoke", data={"token": "x"})
    assert revoke.status_code == 429  # the revocation endpoint shares the address's bucket
    assert revoke.json()["error"] == "slow_down" and "retry-after" in revoke.headers


def test_revocation_with_credentials_counts_against_the_client(
    start_manager: Callable[..., Manager],
) -> None:
    manager = start_manager(
        token_rate_per_client=RateLimit(burst=1, per_second=0.001), token_rate_per_address=NEVER
    )
    client_id, secret = manager.new_client("acme")
    form = {"token": "x", "client_id": client_id, "client_secret": "wrong"}
    assert httpx.post(f"{manager.url}/oauth/revoke", data=form).status_code == 401
    assert httpx.post(f"{manager.url}/oauth/revoke", data=form).status_code == 429
    # The client itself, from another address, still revokes (h24).
    mine = {**form, "client_secret": secret}
    assert post_from(ELSEWHERE, f"{manager.url}/oauth/revoke", data=mine).status_code == 200


# -- request size ----------------------------------------------------------------------


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(manager: Manager) -> None:
    status, problem = raw_head(manager.url, "POST", "/v1/rooms", (1 << 20) + 1)
    assert status == 413
    assert problem["check"] == "request-size"
    assert problem["expected"] == "a request body of at most 1048576 bytes"
    assert problem["actual"] == "1048577 bytes"


@pytest.mark.parametrize("path", ["/v1/rooms", "/oauth/token", "/v1/whoami/user-key"])
def test_a_chunked_body_over_the_limit_is_refused(
    start_manager: Callable[..., Manager], path: str
) -> None:
    manager = start_manager(max_json_bytes=1024)

    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield b" " * 256

    method = "PUT" if path.endswith("user-key") else "POST"
    kind = "application/x-www-form-urlencoded" if path.startswith("/oauth") else "application/json"
    answer = httpx.request(
        method, f"{manager.url}{path}", content=chunks(), headers={"content-type": kind}
    )
    assert answer.status_code == 413
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["check"] == "request-size"
    assert answer.json()["actual"] == "more than 1024 bytes"


def test_a_body_at_the_limit_is_read(start_manager: Callable[..., Manager]) -> None:
    manager = start_manager(max_json_bytes=1024)
    body = b'{"spec": {}}'.ljust(1024)
    answer = httpx.post(
        f"{manager.url}/v1/rooms", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 401  # read, parsed, and then the missing token


def test_the_function_upload_keeps_its_own_limit(
    start_manager: Callable[..., Manager], tmp_path: Path
) -> None:
    manager = start_manager(max_json_bytes=1024)
    status, _ = raw_head(manager.url, "POST", "/v1/functions", 1 << 20)
    assert status == 401  # not 413: the upload route decides (here: no token)
    client, _ = manager.login("acme")
    bundle = make_bundle(tmp_path / "function", "x = 1\n" + "#" * 4096 + "\n")
    assert len(bundle) > 1024
    assert client.upload_function(bundle).created


# -- the owners' routes that make a secret ------------------------------------------------


def test_making_secrets_is_rate_limited_per_project(start_manager: Callable[..., Manager]) -> None:
    """Creating a client and rotating a secret each hash a new secret with argon2id (a
    few hundred ms of CPU and 64 MiB, inside the transaction). Unlimited, one project's
    owner held up every other user of the manager (rt/probe_argon2_flood.py: a cheap
    request took 10 s, and concurrent writers failed with 500). They are limited per
    project, answered 429 with Retry-After; another project is not slowed down."""
    manager = start_manager(secret_rate_per_project=RateLimit(burst=2, per_second=0.001))
    alice = join(manager, "acme", "alice", "owner")
    carol = join(manager, "globex", "carol", "owner")

    def post(person: Person, path: str) -> httpx.Response:
        url = f"{manager.url}{path}"
        return httpx.post(url, json={}, headers=as_client(person.client, "POST", url))

    created = post(alice, "/v1/projects/acme/clients")
    assert created.status_code == 201
    rotate = f"/v1/projects/acme/clients/{created.json()['client_id']}/rotate"
    assert post(alice, rotate).status_code == 200
    for path in ("/v1/projects/acme/clients", rotate):
        limited = post(alice, path)
        assert limited.status_code == 429, limited.text
        assert limited.json()["check"] == "secret-rate"
        assert int(limited.headers["retry-after"]) >= 1
    assert post(carol, "/v1/projects/globex/clients").status_code == 201
    # Who may not manage the project learns nothing new: still 404 / 403 first.
    assert post(carol, "/v1/projects/acme/clients").status_code == 404


def test_a_new_secret_is_hashed_before_its_transaction_writes(
    manager: Manager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """argon2id takes a few hundred ms of CPU. Hashed after the transaction's first write
    (the new member and its audit entry), it held SQLite's write lock, or PostgreSQL's
    lock on the audit head, that long: every other writer (a token issued, an entry
    logged) waited for it. Here another writer writes while the secret is hashed."""
    manager.project("acme")
    real, others = projects.hash_secret, []

    def hashing(secret: str) -> str:
        with manager.sessions() as other:
            if other.get_bind().dialect.name == "postgresql":
                other.execute(text("SET LOCAL lock_timeout = '3s'"))
            else:
                other.execute(text("PRAGMA busy_timeout = 3000"))
            audit.record(other, "test", "test.written", "meanwhile")
            other.commit()
        others.append(secret)
        return real(secret)

    monkeypatch.setattr(projects, "hash_secret", hashing)
    with manager.sessions() as session:
        created = operations.create_client(session, "acme")
        session.commit()
    assert others == [created.secret]


def test_one_key_past_its_share_of_the_replay_cache_is_refused_alone(manager: Manager) -> None:
    """A real manager, its replay cache's share per key made 3: a key's 4th proof within
    the window is refused ``429 dpop-replay-share``, at an API route and at the token
    endpoint alike, while another client's key goes on. Before, one client's proofs
    filled the whole cache and every client was refused ``503 dpop-replay-cache``."""
    replays = manager.services.auth.grants.proofs.replays
    assert replays is manager.services.auth.authenticator.proofs.replays  # one cache
    replays.share = 3
    busy, client_id = manager.login("acme")  # one proof, at the token endpoint
    busy.whoami()
    busy.whoami()  # three
    with pytest.raises(ServerError) as caught:
        busy.whoami()
    assert (caught.value.status, caught.value.check) == (429, "dpop-replay-share")
    other, _ = manager.login("acme")  # another client, another key
    assert other.whoami()["client_id"] != client_id
    another_id, secret = manager.new_client("acme")
    with pytest.raises(ServerError) as caught:  # the busy key at the token endpoint
        manager.client(dpop_key=busy.dpop_key).fetch_token(another_id, secret)
    assert (caught.value.status, caught.value.check) == (429, "dpop-replay-share")
