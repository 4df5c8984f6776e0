"""Running a server process in the foreground: uvicorn with access logs, and one line
saying where it listens once it does (after its start-up, so it is ready then).

uvicorn has no timeout for a request's head (its keep-alive timeout is reset by every
byte, and not armed before a connection's first request) and no bound on the number of
connections it holds: a client that opened connections and sent their heads a byte at a
time, or nothing at all, held them for as long as it liked, up to every file descriptor
of the process (found by the manager's red team). :class:`ServingLimits` are the bounds
both servers' listeners now have: ``limit_concurrency`` is uvicorn's own (503 past it);
the head's deadline and the cap on open connections are a small subclass of uvicorn's
httptools protocol (:func:`guarded_protocol`), which is what it lacks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import sys
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import uvicorn

# How long an idle kept-alive connection stays open. It must outlast how long clients
# keep one in their pools (httpx: 5 s), or a client can send its next request on a
# connection the server is closing that instant and get a reset instead of an answer.
# uvicorn's own default is 5 s, the same as httpx's: under load that race was lost
# (the concurrency benchmark, "connection reset by peer" from the manager).
KEEP_ALIVE_S = 65

HEADER_TIMEOUT_S = 10.0
"""Default: a request's head (request line and headers) arrives within this many seconds
of its connection, or of its first byte on a kept-alive connection."""
MAX_CONNECTIONS = 512
"""Default: connections held at once; below a process's usual 1,024 descriptors, so that
the server keeps some for its database, files and outgoing requests."""


@dataclass(frozen=True)
class ServingLimits:
    """What clients may hold of a server's listener (see the module docstring)."""

    header_timeout: float = HEADER_TIMEOUT_S
    max_connections: int = MAX_CONNECTIONS


HeaderTimeoutOption = Annotated[
    float,
    typer.Option(
        metavar="SECONDS",
        help="Seconds a request's head (request line and headers) may take to arrive, from "
        "its connection (or its first byte, on a kept-alive connection); then the "
        "connection is closed. Request bodies are not bounded in time: see "
        "docs/threat-model.md.",
        min=0.1,
    ),
]
MaxConnectionsOption = Annotated[
    int,
    typer.Option(
        metavar="N",
        help="Connections held open at once: one past it is closed before it is read, and "
        "a request is answered 503 once this many are open or being handled (uvicorn's "
        "limit_concurrency). Keep it below the open-files limit (ulimit -n).",
        min=1,
    ),
]


TrustedProxyOption = Annotated[
    list[str] | None,
    typer.Option(
        "--trusted-proxy",
        metavar="ADDRESS",
        help="A reverse proxy's address (or network, e.g. 10.0.0.0/24) whose "
        "X-Forwarded-For and X-Forwarded-Proto are believed (repeatable): the client's "
        "address is then the last one in X-Forwarded-For that is not such a proxy, for the "
        "rate limits and the access log. The proxy must set or append the header. "
        "Default: none, every request's peer is its client.",
        show_default=False,
    ),
]


def trusted_proxies(values: Sequence[str] | None) -> tuple[str, ...]:
    """The ``--trusted-proxy`` values as uvicorn's ``forwarded_allow_ips``, each an IP
    address or network; anything else is unusable input (exit code 2). uvicorn itself
    takes ``*`` (every peer) and any other text as a literal without a word: the first
    lets every client name its own address, the second would trust nothing unseen."""
    from cleanroom.cli.common import EXIT_USAGE, fail

    proxies: list[str] = []
    for value in values or ():
        try:
            network = ipaddress.ip_network(value.strip().strip("[]"), strict=True)
        except ValueError:
            fail(
                f"--trusted-proxy {value!r}: expected an IP address (127.0.0.1, ::1) or a "
                "network (10.0.0.0/24), got neither (names and * are not taken)",
                EXIT_USAGE,
            )
        if network.prefixlen == 0:
            fail(
                f"--trusted-proxy {value}: expected a proxy's address or network, got every "
                "address (then each client would choose the address the rate limits count)",
                EXIT_USAGE,
            )
        single = network.prefixlen == network.max_prefixlen
        proxies.append(str(network.network_address) if single else str(network))
    return tuple(proxies)


def guarded_protocol(limits: ServingLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with a deadline for each request's head and a cap on
    the connections open at once (``limits``)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedProtocol(HttpToolsProtocol):
        head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                self.logger.warning(
                    "closed a connection: %d are open, the most this server holds "
                    "(--max-connections)",
                    limits.max_connections,
                )
                transport.close()
                return
            self.arm_head_timer()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.arm_head_timer()  # a kept-alive connection's next request

        def on_headers_complete(self) -> None:
            self.disarm_head_timer()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm_head_timer()
            super().connection_lost(exc)

        def arm_head_timer(self) -> None:
            if self.head_timer is None:
                self.head_timer = self.loop.call_later(limits.header_timeout, self.head_too_slow)

        def disarm_head_timer(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def head_too_slow(self) -> None:
            self.head_timer = None
            if not self.transport.is_closing():
                self.logger.warning(
                    "closed a connection: no whole request head within %s s (--header-timeout)",
                    limits.header_timeout,
                )
                self.transport.close()

    return GuardedProtocol


_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(host: str) -> _Address | None:
    """``host`` as an IP address, else None (a name)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def listening_elsewhere(public_url: str, host: str, port: int) -> str | None:
    """Why ``public_url`` (where clients and the manager are told to reach this server)
    cannot reach its listener on ``host``:``port``, when that is certain; else None.

    Certain only where the URL names this machine's loopback (an address, or
    ``localhost``) or the very address the server listens on: then the listener must be
    there (on it, on loopback, or on every address), the scheme http (this server speaks
    no TLS) and the port the one bound. A URL naming a host by name, or another address,
    may be a proxy's, a load balancer's or NAT's: nothing is said."""
    url = urllib.parse.urlsplit(public_url)
    try:
        url_port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    except ValueError:  # a port that is not a number: not this check's to judge
        return None
    name = url.hostname or ""
    named = _address(name)
    listening = _address(host)
    on_loopback = host.lower() == "localhost" or (listening is not None and listening.is_loopback)
    on_every = listening is not None and listening.is_unspecified
    if name.lower() == "localhost" or (named is not None and named.is_loopback):
        if not (on_every or (on_loopback and (named is None or listening in (None, named)))):
            return f"{name}: this server listens on {host} only"
    elif named is None or named != listening:
        return None  # a name, or another address: perhaps a proxy's
    if url.scheme != "http":
        return f"{url.scheme}: this server speaks plain http"
    if url_port != port:
        return f"port {url_port}, not {port}"
    return None


def serve(
    app: Any,
    *,
    host: str,
    port: int,
    what: str,
    notes: Sequence[str] = (),
    limits: ServingLimits | None = None,
    public_url: str | None = None,
    fix: str = "",
    proxies: Sequence[str] = (),
) -> None:
    """Serve ``app`` until interrupted; when ready print ``cleanroom WHAT listening on
    URL`` (the port it bound, also for port 0) and each of ``notes`` on stderr, and a
    warning when ``public_url`` cannot reach it (:func:`listening_elsewhere`), ending
    with ``fix``, what to do. ``proxies``: see :func:`server`."""
    server(
        app,
        host=host,
        port=port,
        what=what,
        notes=notes,
        limits=limits,
        public_url=public_url,
        fix=fix,
        proxies=proxies,
    ).run()


def server(
    app: Any,
    *,
    host: str,
    port: int,
    what: str,
    notes: Sequence[str] = (),
    limits: ServingLimits | None = None,
    public_url: str | None = None,
    fix: str = "",
    proxies: Sequence[str] = (),
) -> uvicorn.Server:
    """The uvicorn server :func:`serve` runs, not started (``limits``: the defaults of
    :class:`ServingLimits` unless given). ``proxies`` are the addresses and networks
    (:func:`trusted_proxies`) whose X-Forwarded-For and X-Forwarded-Proto are believed;
    none by default."""
    import uvicorn

    limits = limits or ServingLimits()

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if not self.started:
                return
            bound = self.servers[0].sockets[0].getsockname()[1] if self.servers else port
            shown_host = f"[{host}]" if ":" in host else host
            listening = f"http://{shown_host}:{bound}"
            lines = [f"cleanroom {what} listening on {listening}", *notes]
            if proxies:
                lines.append(
                    f"X-Forwarded-For and X-Forwarded-Proto believed from: {', '.join(proxies)}"
                )
            why = listening_elsewhere(public_url, host, bound) if public_url else None
            if why is not None:
                lines.append(
                    f"WARNING: this {what} listens on {listening}, and its public URL "
                    f"{public_url} does not reach it ({why}): clients and the manager go to "
                    f"that URL, and fail to connect unless something there forwards here. {fix}"
                )
            print("\n".join(lines), file=sys.stderr, flush=True)

    # "info": uvicorn's access log, one line per request, as operators expect.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        timeout_keep_alive=KEEP_ALIVE_S,
        http=guarded_protocol(limits),
        limit_concurrency=limits.max_connections,
        # The peer's address and scheme, never a client's X-Forwarded-For/-Proto, unless
        # the peer is a proxy the operator named: uvicorn believes them from 127.0.0.1
        # by default (and from $FORWARDED_ALLOW_IPS when not given a list), so any
        # process on this host chose the address the manager's rate limits count (a new
        # one per wrong secret) and its access log shows (seen by h24).
        proxy_headers=bool(proxies),
        forwarded_allow_ips=list(proxies),
    )
    return _Server(config)
