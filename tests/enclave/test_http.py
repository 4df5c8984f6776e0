"""What both enclave services share (cleanroom.enclave.http): a Controller's request is
read up to a bound, never whole first: its body, and its head."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cleanroom.enclave.http import MAX_JSON_BODY, MAX_REQUEST_HEAD, enclave_app, json_body, serve

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


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Path]:
    """The enclaves' own server (uvicorn, httptools) on a Unix socket, in a thread."""

    async def count(request: Request) -> JSONResponse:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return JSONResponse({"size": size})

    app = enclave_app([Route("/count", count, methods=["POST"])], "Worker")
    socket_path, stop = tmp_path / "enclave.sock", threading.Event()
    thread = threading.Thread(target=serve, args=(app, socket_path, stop), daemon=True)
    thread.start()
    for _ in range(100):
        if socket_path.exists():
            break
        time.sleep(0.05)
    yield socket_path
    stop.set()
    thread.join(timeout=10)


def test_a_request_head_over_the_bound_is_refused_and_its_connection_closed(
    served: Path,
) -> None:
    """httptools keeps a header until it ends: a Controller's 256 MiB header to a Worker
    took half a gigabyte of its memory (rt/big_headers.py)."""
    connection = socket.socket(socket.AF_UNIX)
    connection.connect(str(served))
    connection.sendall(b"POST /count HTTP/1.1\r\nHost: enclave\r\nX-A: ")
    sent, answer = 0, b""
    try:
        while sent < 8 * MAX_REQUEST_HEAD:  # never ends the header
            connection.sendall(b"a" * CHUNK)
            sent += CHUNK
    except OSError:
        pass  # closed by the server
    connection.settimeout(10)
    with contextlib.suppress(OSError):
        answer = connection.recv(1 << 16)
    connection.close()
    assert sent < 4 * MAX_REQUEST_HEAD
    assert answer.startswith(b"HTTP/1.1 400")


def test_large_bodies_and_kept_alive_connections_are_served(served: Path) -> None:
    transport = httpx.HTTPTransport(uds=str(served))
    with httpx.Client(transport=transport, base_url="http://enclave", timeout=30) as client:
        for size in (32 << 20, 10, 3 << 20):  # one connection, kept alive
            answer = client.post("/count", content=b"x" * size)
            assert answer.json() == {"size": size}
