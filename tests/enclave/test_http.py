"""What both enclave services share (cleanroom.enclave.http): a Controller's request is
read up to a bound, never whole first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cleanroom.enclave.http import MAX_JSON_BODY, enclave_app, json_body

CHUNK = 1 << 16


async def echo(request: Request) -> JSONResponse:
    return JSONResponse(await json_body(request, frozenset({"nonce"})))


def post(body: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> httpx.Response:
    app = enclave_app([Route("/status", echo, methods=["POST"])], "Worker")

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://enclave") as client:
            return await client.post("/status", content=body, headers=headers)

    return asyncio.run(go())


def test_a_body_over_the_bound_is_refused_after_reading_no_more_than_the_bound() -> None:
    """A Controller's 512 MiB body to /status (or the Attester's /attest) was read whole,
    then refused: the service's peak memory grew by twice the body (rt/big_body.py)."""
    read = [0]

    async def huge() -> AsyncIterator[bytes]:
        for _ in range((64 << 20) // CHUNK):  # 64 MiB, never announced
            read[0] += CHUNK
            yield b" " * CHUNK

    answer = post(huge())
    assert answer.status_code == 400
    assert answer.json()["check"] == "request-size"
    assert read[0] <= MAX_JSON_BODY + 2 * CHUNK


def test_a_declared_length_over_the_bound_is_refused() -> None:
    async def announced() -> AsyncIterator[bytes]:
        yield b" " * (MAX_JSON_BODY + 1)

    answer = post(announced(), headers={"content-length": str(MAX_JSON_BODY + 1)})
    assert answer.status_code == 400
    assert answer.json()["check"] == "request-size"


def test_a_body_within_the_bound_is_read() -> None:
    async def small() -> AsyncIterator[bytes]:
        yield b'{"nonce": '
        yield b'"' + b"a" * (MAX_JSON_BODY - 100) + b'"}'

    answer = post(small())
    assert answer.status_code == 200
    assert len(answer.json()["nonce"]) == MAX_JSON_BODY - 100
