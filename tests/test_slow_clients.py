"""Slow clients cannot hold the servers' listeners (the manager's and the Controller's).

uvicorn has no timeout for a request's head and no bound on its connections: a client
that sent its headers a byte at a time, or nothing, held each connection for as long as
it liked, as many as the process had descriptors (found by the manager's red team).
These tests speak to a server run as ``cleanroom.cli.serving`` runs both, through raw
sockets that trickle a head or send nothing.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import httpx
from starlette.types import Receive, Scope, Send

from cleanroom.cli.serving import ServingLimits
from tests.local_server import serving

HEADER_TIMEOUT = 1.0
MAX_CONNECTIONS = 8


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@contextlib.contextmanager
def limited(header_timeout: float = HEADER_TIMEOUT) -> Iterator[tuple[str, int]]:
    limits = ServingLimits(header_timeout=header_timeout, max_connections=MAX_CONNECTIONS)
    with serving(ok, limits) as url:
        yield url, int(url.rsplit(":", 1)[1])


def connect(port: int) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.settimeout(10)
    return connection


def closed_by_server(connection: socket.socket, within: float) -> bool:
    """Whether the server closes ``connection`` within ``within`` seconds (it reads
    nothing from us meanwhile)."""
    connection.settimeout(within)
    try:
        return connection.recv(4096) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def trickle_head(connection: socket.socket, seconds: float) -> float | None:
    """Send a request head a byte every 0.1 s for up to ``seconds``; when the server
    closed the connection (seconds after the first byte), else None."""
    started = time.monotonic()
    head = b"GET / HTTP/1.1\r\nhost: manager\r\nx-slow: " + b"a" * 1000
    for byte in head:
        if time.monotonic() - started > seconds:
            return None
        try:
            connection.sendall(bytes([byte]))
        except OSError:
            return time.monotonic() - started
        time.sleep(0.1)
        connection.settimeout(0.001)
        try:
            if connection.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            pass
        except ConnectionResetError:
            return time.monotonic() - started
    return None


def test_a_head_trickled_a_byte_at_a_time_is_cut_off() -> None:
    with limited() as (_url, port), connect(port) as connection:
        closed_after = trickle_head(connection, seconds=6 * HEADER_TIMEOUT)
    assert closed_after is not None, (
        f"header timeout: expected the connection closed {HEADER_TIMEOUT} s after its first "
        f"byte, it was still open after {6 * HEADER_TIMEOUT} s of a byte every 0.1 s"
    )
    assert closed_after < 4 * HEADER_TIMEOUT


def test_a_connection_that_sends_nothing_is_closed() -> None:
    with limited() as (_url, port), connect(port) as connection:
        assert closed_by_server(connection, within=4 * HEADER_TIMEOUT), (
            f"header timeout: expected a silent connection closed after {HEADER_TIMEOUT} s, "
            f"it was open after {4 * HEADER_TIMEOUT} s"
        )


def test_a_kept_alive_connection_may_idle_between_requests() -> None:
    """The head's deadline starts at the next request's first byte, not at the end of
    the last answer: a kept-alive connection idle past it still serves."""
    with (
        limited() as (url, _port),
        httpx.Client(limits=httpx.Limits(keepalive_expiry=60)) as client,
    ):
        assert client.get(url).text == "ok"
        time.sleep(2 * HEADER_TIMEOUT)
        assert client.get(url).text == "ok"


def served(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).text == "ok"
    except httpx.HTTPError:
        return False


def until(condition: Callable[[], bool], seconds: float = 10) -> bool:
    """Whether ``condition`` holds within ``seconds`` (a busy machine accepts late)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_connections_past_the_most_a_server_holds_are_closed_at_once() -> None:
    with limited(header_timeout=30) as (url, port), contextlib.ExitStack() as held:
        silent = [held.enter_context(connect(port)) for _ in range(MAX_CONNECTIONS)]
        # Once the server holds them all, a request is turned away (never, without a cap).
        until(lambda: not served(url))
        extra = held.enter_context(connect(port))
        assert closed_by_server(extra, within=10), (
            f"max connections: expected a connection past {MAX_CONNECTIONS} closed at once, "
            "it was kept open"
        )
        for connection in silent:
            connection.close()
        assert until(lambda: served(url)), "no room again once the held connections closed"
