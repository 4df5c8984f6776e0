"""A Controller's host name resolved within the request's connect timeout.

httpx (httpcore) resolves a host name with ``socket.getaddrinfo`` before any of its
timeouts starts, and nothing can interrupt it: a compute server registered by a name
whose name server answers slowly added the resolver's own 10-30 s to every health
check, deploy and delete (found by the manager's red team). :class:`BoundedResolution`
looks the name up in a thread of its own and waits for it only as long as the connect
timeout; then it connects to the address found, with the name still in the ``Host``
header and in TLS (``sni_hostname``: the certificate is checked against the name).
"""

from __future__ import annotations

import ipaddress
import socket
import threading

import httpx

from cleanroom.errors import Error

CHECK = "dns-resolution"


class NameTooSlow(httpx.ConnectTimeout, Error):
    """A Controller's host name not resolved within the connect timeout (check
    :data:`CHECK`): no answer, and the request was never sent."""


def lookup(host: str, port: int, seconds: float, request: httpx.Request) -> str:
    """The first address ``host`` resolves to, within ``seconds``; else
    :class:`NameTooSlow`, or ``httpx.ConnectError`` if it does not resolve.

    A lookup that takes longer goes on in its daemon thread (a resolver cannot be
    interrupted) and its answer is dropped.
    """
    found: list[str] = []
    failed: list[OSError] = []
    done = threading.Event()

    def resolve() -> None:
        try:
            addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            found.append(str(addresses[0][4][0]))
        except OSError as error:
            failed.append(error)
        finally:
            done.set()

    threading.Thread(target=resolve, name=f"resolve {host}", daemon=True).start()
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
    return found[0]


class BoundedResolution(httpx.BaseTransport):
    """``transport`` (an ``httpx.HTTPTransport``), each request's host name resolved
    within its connect timeout first (``timeout`` when the request has none)."""

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
        connect = request.extensions.get("timeout", {}).get("connect")
        seconds = connect if isinstance(connect, int | float) else self.timeout
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        address = lookup(host, port, seconds, request)
        # The headers as they are: Host still names the server, as does TLS.
        resolved = httpx.Request(
            request.method,
            request.url.copy_with(host=address),
            headers=request.headers,
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": host},
        )
        return self.transport.handle_request(resolved)

    def close(self) -> None:
        self.transport.close()
