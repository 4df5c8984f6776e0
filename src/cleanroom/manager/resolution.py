"""A Controller's host name resolved, and each of its addresses tried, within the
request's connect timeout.

httpx (httpcore) resolves a host name with ``socket.getaddrinfo`` before any of its
timeouts starts, and nothing can interrupt it: a compute server registered by a name
whose name server answers slowly added the resolver's own 10-30 s to every health
check, deploy and delete (found by the manager's red team). :class:`BoundedResolution`
looks the name up in a thread of its own and waits for it only as long as the connect
timeout; then it connects to the addresses found, one after the other in the
resolver's order, until one takes the connection, all within what is left of that same
timeout (each an equal share of what is left, so that an address that swallows
packets does not use up the others' time), with the name still in the ``Host``
header and in TLS (``sni_hostname``: the certificate is checked against the name).
Only a failure to connect (the request was not sent) moves on to the next address;
none connecting is :class:`NoAddressAnswered` (check :data:`CONNECT_CHECK`), naming
each address tried and what it got.

A lookup cannot be interrupted, so one past its deadline goes on in its thread until the
resolver gives up. At most :data:`LOOKUPS_PER_NAME` of one name run at once: a name
server that never answers, asked by every health round, deploy and delete, would
otherwise hold a thread for each until the resolver's own timeout (its 5 s per try,
per name server), more of them the more often the name is asked.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

import httpx

from cleanroom.errors import Error

CHECK = "dns-resolution"
CONNECT_CHECK = "controller-address"
LOOKUPS_PER_NAME = 4
"""Lookups of one host name running at once, those past their deadline included."""

_running: dict[str, int] = {}
_running_lock = threading.Lock()


class NameTooSlow(httpx.ConnectTimeout, Error):
    """A Controller's host name not resolved within the connect timeout (check
    :data:`CHECK`): no answer, and the request was never sent."""


class NoAddressAnswered(httpx.ConnectError, Error):
    """None of the addresses a Controller's host name resolves to took the connection
    within the connect timeout (check :data:`CONNECT_CHECK`): the request was never
    sent."""


def lookup(host: str, port: int, seconds: float, request: httpx.Request) -> list[str]:
    """The addresses ``host`` resolves to, in the resolver's order without repeats,
    within ``seconds``; else :class:`NameTooSlow`, or ``httpx.ConnectError`` if it
    does not resolve.

    A lookup that takes longer goes on in its daemon thread (a resolver cannot be
    interrupted) and its answer is dropped; while :data:`LOOKUPS_PER_NAME` of ``host``
    still run, none is started and the name is :class:`NameTooSlow` at once.
    """
    with _running_lock:
        running = _running.get(host, 0)
        if running >= LOOKUPS_PER_NAME:
            raise NameTooSlow(
                f"{CHECK}: {request.method} {request.url}: the host name was not resolved in "
                f"time (expected at most {LOOKUPS_PER_NAME} lookups of {host} at once, got "
                f"{running} still running past their deadlines: its name server does not "
                "answer)",
                request=request,
            )
        _running[host] = running + 1
    found: list[str] = []
    failed: list[OSError] = []
    done = threading.Event()

    def resolve() -> None:
        try:
            for *_, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
                if str(address[0]) not in found:
                    found.append(str(address[0]))
        except OSError as error:
            failed.append(error)
        finally:
            with _running_lock:
                _running[host] -= 1
                if not _running[host]:
                    del _running[host]
            done.set()

    try:
        threading.Thread(target=resolve, name=f"resolve {host}", daemon=True).start()
    except BaseException:
        with _running_lock:
            _running[host] -= 1
            if not _running[host]:
                del _running[host]
        raise
    if not done.wait(seconds):
        raise NameTooSlow(
            f"{CHECK}: {request.method} {request.url}: the host name was not resolved in time "
            f"(expected an address for {host} within {seconds} s, got none after {seconds} s)",
            request=request,
        )
    if failed or not found:
        why = failed[0] if failed else "no address"
        raise httpx.ConnectError(
            f"{CHECK}: {request.method} {request.url}: {host} does not resolve: {why}",
            request=request,
        )
    return list(found)


class BoundedResolution(httpx.BaseTransport):
    """``transport`` (an ``httpx.HTTPTransport``), each request's host name resolved
    and its addresses tried within its connect timeout (``timeout`` when the request
    has none)."""

    def __init__(self, transport: httpx.BaseTransport, timeout: float) -> None:
        self.transport = transport
        self.timeout = timeout

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return self.transport.handle_request(request)  # no name to resolve
        timeouts = request.extensions.get("timeout", {})
        connect = timeouts.get("connect")
        seconds = connect if isinstance(connect, int | float) else self.timeout
        until = time.monotonic() + seconds
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        addresses = lookup(host, port, seconds, request)
        tried: list[str] = []
        for index, address in enumerate(addresses):
            left = until - time.monotonic()
            if left <= 0:
                break
            # An equal share of what is left: one address that swallows packets does
            # not use up the time of those after it; the last one gets the rest.
            share = left / (len(addresses) - index)
            # The headers as they are: Host still names the server, as does TLS.
            resolved = httpx.Request(
                request.method,
                request.url.copy_with(host=address),
                headers=request.headers,
                stream=request.stream,
                extensions={
                    **request.extensions,
                    "sni_hostname": host,
                    "timeout": {**timeouts, "connect": share},
                },
            )
            try:
                return self.transport.handle_request(resolved)
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                # Not connected: the request was not sent; the next address may answer.
                why = " ".join(str(error).split()) or type(error).__name__
                tried.append(f"{address}: {why}")
        untried = addresses[len(tried) :]
        if untried:
            tried.append(f"{', '.join(untried)}: not tried, no time left")
        raise NoAddressAnswered(
            f"{CONNECT_CHECK}: {request.method} {request.url}: no address of {host} took the "
            f"connection (expected one of {', '.join(addresses)} to connect within "
            f"{seconds} s, got: {'; '.join(tried)})",
            request=request,
        )

    def close(self) -> None:
        self.transport.close()
