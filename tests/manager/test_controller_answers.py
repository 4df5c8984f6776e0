"""The manager reads a Controller's answers up to a bound (a Controller is untrusted).

A registered compute server's Controller answered the health check with a body of
512 MiB and the manager's process grew by 1.1 GiB reading it whole
(rt/probe_hostile_health.py): a hostile compute server could take the manager, and
with it every project, down by memory. The health check, the questions about single
rooms and the deploy and delete answers now read at most
:data:`cleanroom.manager.servers.MAX_ANSWER_BYTES`; a longer answer is no answer.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from cleanroom.manager import servers

CHUNK = 64 * 1024


def huge_health(sent: list[int], total: int) -> httpx.MockTransport:
    """A Controller whose health answer is ``total`` bytes; ``sent`` counts what was read."""

    def body() -> Iterator[bytes]:
        yield b'{"tee": "simulated", "status": "ok", "pad": "'
        while sent[0] < total:
            sent[0] += CHUNK
            yield b"x" * CHUNK

    return httpx.MockTransport(lambda request: httpx.Response(200, content=body()))


def test_a_huge_health_answer_is_not_read_whole() -> None:
    sent = [0]
    total = 64 << 20  # 64 MiB; the manager reads at most 1 MiB of an answer
    with httpx.Client(transport=huge_health(sent, total)) as client:
        seen = servers.observe(client, "http://controller.test", "simulated")
    assert not seen.answered
    assert seen.error is not None and "longer than" in seen.error
    assert sent[0] <= (1 << 20) + 2 * CHUNK


def test_an_answer_within_the_bound_is_read_as_before() -> None:
    document = b'{"tee": "simulated", "status": "ok", "rooms": 2}'
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=document))
    with httpx.Client(transport=transport) as client:
        seen = servers.observe(client, "http://controller.test", "simulated")
        answer = servers.send_capped(client, "PUT", "http://controller.test/v1/rooms/r", json={})
    assert seen.answered and seen.rooms == 2 and seen.problem is None
    assert answer.status_code == 200 and answer.json()["rooms"] == 2
