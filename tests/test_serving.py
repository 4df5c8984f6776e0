"""The servers' HTTP settings: an idle kept-alive connection outlasts the clients' pools.

uvicorn closes an idle connection after 5 s by default, and httpx keeps one in its pool
for 5 s: a client could send its next request on a connection the server was closing
that instant and get "connection reset by peer" (seen under load in the concurrency
benchmark, from the manager). The manager and the Controller are both served by
``cleanroom.cli.serving``; the Attester and the Worker by ``cleanroom.enclave.http``, with
the Controller's aiohttp as their one client.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from cleanroom.cli.serving import KEEP_ALIVE_S, listening_elsewhere, server, trusted_proxies
from cleanroom.controller.relay import KEEP_IDLE_S as CONTROLLER_KEEPS
from cleanroom.enclave.http import KEEP_ALIVE_S as KEEP_ALIVE_S_ENCLAVE
from cleanroom.enclave.http import serve as serve_enclave
from tests.local_server import serving

_STOCK = httpx.Limits().keepalive_expiry
assert _STOCK is not None
CLIENTS_KEEP: float = _STOCK  # how long a stock httpx client keeps a connection, 5 s


async def client_port(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer with the client's port: the same port means the same connection."""
    assert scope["type"] == "http" and scope["client"] is not None
    body = str(scope["client"][1]).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def base_url() -> Iterator[str]:
    with serving(client_port) as url:
        yield url


def test_keeps_idle_connections_longer_than_clients_do() -> None:
    assert KEEP_ALIVE_S > 2 * CLIENTS_KEEP


def test_an_idle_connection_is_still_open_after_the_clients_pool_time(base_url: str) -> None:
    """Idle past uvicorn's default (5 s) and httpx's: the server has not closed it."""
    with httpx.Client(limits=httpx.Limits(keepalive_expiry=60)) as client:
        first = client.get(base_url).text
        time.sleep(CLIENTS_KEEP + 0.5)
        second = client.get(base_url).text
    assert second == first, (
        f"the server closed an idle connection within {CLIENTS_KEEP + 0.5} s "
        f"(expected it kept for {KEEP_ALIVE_S} s; the second request came from port "
        f"{second}, the first from {first})"
    )


def test_the_enclaves_keep_idle_connections_longer_than_the_controller_does() -> None:
    assert KEEP_ALIVE_S_ENCLAVE > 2 * CONTROLLER_KEEPS


def test_an_enclave_keeps_an_idle_connection_open(tmp_path: Path) -> None:
    """An enclave service, served as the Attester and the Worker are (a Unix socket):
    idle past what the Controller keeps, the same connection still answers."""
    app = Starlette(routes=[Route("/", lambda _request: PlainTextResponse("ok"))])
    path = tmp_path / "enclave.sock"
    stop = threading.Event()
    thread = threading.Thread(target=serve_enclave, args=(app, path, stop), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not path.exists():
            assert time.monotonic() < deadline, "the enclave service did not start"
            time.sleep(0.01)
        with socket.socket(socket.AF_UNIX) as connection:
            connection.settimeout(10)
            connection.connect(str(path))
            first = _get(connection)
            time.sleep(CONTROLLER_KEEPS + 0.5)
            second = _get(connection)
    finally:
        stop.set()
        thread.join(10)
    assert first.startswith(b"HTTP/1.1 200"), first
    assert second.startswith(b"HTTP/1.1 200"), (
        f"the enclave service closed an idle connection within {CONTROLLER_KEEPS + 0.5} s "
        f"(expected it kept for {KEEP_ALIVE_S_ENCLAVE} s; the second request got {second!r})"
    )


def _get(connection: socket.socket) -> bytes:
    """One request on an open connection, and its whole answer ("ok", 2 bytes of body)."""
    try:
        connection.sendall(b"GET / HTTP/1.1\r\nhost: enclave\r\n\r\n")
        answer = b""
        while not answer.endswith(b"\r\n\r\nok"):
            piece = connection.recv(4096)
            if not piece:
                break
            answer += piece
    except OSError as error:
        return repr(error).encode()
    return answer


@pytest.mark.parametrize(
    ("public_url", "host", "port", "why"),
    [
        ("http://127.0.0.1:8081", "127.0.0.1", 8081, None),
        ("http://localhost:8081", "127.0.0.1", 8081, None),
        ("http://localhost:8081", "::1", 8081, None),
        ("http://127.0.0.1:8081", "0.0.0.0", 8081, None),  # noqa: S104 - every address
        ("http://127.0.0.1:8081", "localhost", 8081, None),
        ("http://127.0.0.1:8082", "127.0.0.1", 8081, "port 8082, not 8081"),
        ("http://127.0.0.1", "127.0.0.1", 8081, "port 80, not 8081"),
        ("http://127.0.0.1:8081", "0.0.0.0", 9000, "port 8081, not 9000"),  # noqa: S104
        ("https://127.0.0.1:8081", "127.0.0.1", 8081, "https: this server speaks plain http"),
        (
            "http://127.0.0.2:8081",
            "127.0.0.1",
            8081,
            "127.0.0.2: this server listens on 127.0.0.1 only",
        ),
        ("http://[::1]:8081", "127.0.0.1", 8081, "::1: this server listens on 127.0.0.1 only"),
        (
            "http://127.0.0.1:8081",
            "10.0.0.5",
            8081,
            "127.0.0.1: this server listens on 10.0.0.5 only",
        ),
        ("http://10.0.0.5:8081", "10.0.0.5", 9000, "port 8081, not 9000"),
        # A name, or another address: a proxy's, a load balancer's, NAT's; not known here.
        ("https://compute.example", "127.0.0.1", 8081, None),
        ("http://10.0.0.6", "10.0.0.5", 80, None),
        ("http://10.0.0.5:8081", "0.0.0.0", 9000, None),  # noqa: S104
    ],
)
def test_a_public_url_that_cannot_reach_the_listener_is_named(
    public_url: str, host: str, port: int, why: str | None
) -> None:
    assert listening_elsewhere(public_url, host, port) == why


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nobody's once closed


def _started(port: int, public_url: str) -> None:
    """Serve on ``port`` with ``public_url`` until it has started (and said so), then stop."""
    running = server(
        client_port, host="127.0.0.1", port=port, what="test", public_url=public_url,
        fix="Do this.",
    )  # fmt: skip
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    running.should_exit = True
    thread.join(10)


def test_a_server_whose_public_url_names_another_port_warns_when_it_starts(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A server registered at one URL and started on another port told nobody: the
    manager's health checks and every client failed to connect, with nothing on the
    server's side to say why (left open by the review of the command line). The warning
    names both URLs; the same server started where its URL names says nothing."""
    port, elsewhere = _free_port(), _free_port()
    _started(port, f"http://127.0.0.1:{elsewhere}")
    err = capfd.readouterr().err
    assert (
        f"WARNING: this test listens on http://127.0.0.1:{port}, and its public URL "
        f"http://127.0.0.1:{elsewhere} does not reach it (port {elsewhere}, not {port}): "
        "clients and the manager go to that URL, and fail to connect unless something there "
        "forwards here. Do this.\n"
    ) in err
    _started(port, f"http://127.0.0.1:{port}")
    err = capfd.readouterr().err
    assert f"cleanroom test listening on http://127.0.0.1:{port}\n" in err
    assert "WARNING" not in err


async def client_seen(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer with the client's address and the scheme, as the app sees them."""
    assert scope["type"] == "http" and scope["client"] is not None
    body = f"{scope['client'][0]} {scope['scheme']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_a_clients_forwarded_headers_are_not_believed() -> None:
    """The manager's rate limits count the peer's address: uvicorn took X-Forwarded-For
    (and -Proto) from 127.0.0.1 by default, so a process on the server's host named a
    new address with each wrong secret, and the access log showed it (seen by h24)."""
    forged = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    with serving(client_seen) as url:
        assert httpx.get(url, headers=forged).text == "127.0.0.1 http"


def get_from(source: str, url: str, headers: dict[str, str]) -> str:
    """The answer's text to a GET sent from the loopback address ``source``."""
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source)) as client:
        return client.get(url, headers=headers).text


def test_forwarded_headers_are_believed_from_a_trusted_proxy_only() -> None:
    """--trusted-proxy: behind a reverse proxy every client had the proxy's address (the
    manager's rate limits counted them as one). X-Forwarded-For and -Proto are now
    believed from the named proxy (127.0.0.1 here), never from another peer (127.0.0.2),
    and a client's own X-Forwarded-For before the proxy's entry does not choose its
    address: the last entry that is not a trusted proxy is the client (h32)."""
    forged = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    with serving(client_seen, proxies=("127.0.0.1",)) as url:
        assert get_from("127.0.0.1", url, forged) == "203.0.113.9 https"
        assert get_from("127.0.0.2", url, forged) == "127.0.0.2 http"
        chained = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}  # the client's, the proxy's
        assert get_from("127.0.0.1", url, chained) == "203.0.113.9 http"
        assert get_from("127.0.0.1", url, {}) == "127.0.0.1 http"
    with serving(client_seen, proxies=("127.0.0.2",)) as url:
        assert get_from("127.0.0.1", url, forged) == "127.0.0.1 http"
    with serving(client_seen, proxies=("127.0.0.0/30",)) as url:
        assert get_from("127.0.0.2", url, forged) == "203.0.113.9 https"


@pytest.mark.parametrize(
    ("given", "taken"),
    [
        (["127.0.0.1"], ("127.0.0.1",)),
        (["::1", "[::1]"], ("::1", "::1")),
        (["10.0.0.0/24", "10.0.0.7/32"], ("10.0.0.0/24", "10.0.0.7")),
        ([], ()),
    ],
)
def test_a_trusted_proxy_is_an_address_or_a_network(
    given: list[str], taken: tuple[str, ...]
) -> None:
    assert trusted_proxies(given) == taken


@pytest.mark.parametrize(
    ("given", "says"),
    [
        # uvicorn takes * as every peer, and a name as a literal it never meets, silently.
        ("*", "expected an IP address (127.0.0.1, ::1) or a network (10.0.0.0/24), got neither"),
        ("localhost", "got neither"),
        ("10.0.0.7/24", "got neither"),  # host bits set: a typo for an address or a network?
        ("0.0.0.0/0", "got every address"),
        ("::/0", "got every address"),
    ],
)
def test_a_trusted_proxy_that_is_not_one_is_refused(given: str, says: str) -> None:
    from cleanroom.cli.common import CliError

    with pytest.raises(CliError) as caught:
        trusted_proxies([given])
    assert caught.value.exit_code == 2
    assert f"--trusted-proxy {given}" in str(caught.value).replace("'", "")
    assert says in str(caught.value)


def test_the_managers_rate_limit_counts_the_client_behind_a_trusted_proxy(tmp_path: Path) -> None:
    """The manager's per-address limit of /oauth/revoke and /oauth/token, behind a proxy
    at 127.0.0.1 (--trusted-proxy 127.0.0.1): each client forwarded has its own bucket;
    a peer that is not the proxy (127.0.0.2) names no other address with the header."""
    from cleanroom.limits import RateLimit
    from cleanroom.manager import Settings, create_app

    settings = Settings(
        data_dir=tmp_path / "manager",
        public_url="http://127.0.0.1:1",
        token_rate_per_address=RateLimit(burst=1, per_second=0.0001),
    )
    with serving(create_app(settings), proxies=("127.0.0.1",)) as url:

        def revoke(source: str, forwarded: str) -> int:
            with httpx.Client(transport=httpx.HTTPTransport(local_address=source)) as client:
                return client.post(
                    f"{url}/oauth/revoke",
                    data={"token": "x"},
                    headers={"X-Forwarded-For": forwarded},
                ).status_code

        assert revoke("127.0.0.1", "203.0.113.1") == 200
        assert revoke("127.0.0.1", "203.0.113.1") == 429  # that client's bucket is empty
        assert revoke("127.0.0.1", "203.0.113.2") == 200  # another client behind the proxy
        assert revoke("127.0.0.2", "203.0.113.3") == 200  # counted as 127.0.0.2
        assert revoke("127.0.0.2", "203.0.113.4") == 429  # still 127.0.0.2: not believed
