"""What both enclave services share: JSON in, problem details out, a Unix socket.

The enclave processes (the Attester and one Worker per clean room) talk only to the
Controller, which relays every message from and to clients. Nothing here trusts
the Controller: every message is checked by the enclave code it reaches
(admission, handshake, records, manifests), exactly as if an attacker sent it.
See docs/api.md ("Enclave processes").
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, cast

# The HTTP parser and event loop the enclaves serve with, named and imported here so
# that the image's measurement (which follows what the service module imports) covers
# them: uvicorn's "auto" would pick them up only when serving, unmeasured.
import httptools  # noqa: F401
import uvicorn
import uvloop  # noqa: F401
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cleanroom.enclave.errors import RunError, UnknownWorkerError, UploadError, log_failure
from cleanroom.errors import CheckFailed
from cleanroom.protocol.encoding import from_b64u
from cleanroom.protocol.errors import AccessDenied, MessageFormatError, ReplayError

log = logging.getLogger("cleanroom.enclave")

MAX_JSON_BODY = 1 << 20


def status_for(error: CheckFailed) -> int:
    if isinstance(error, AccessDenied):
        return 403
    if isinstance(error, UnknownWorkerError):
        return 404
    if isinstance(error, ReplayError):
        return 409
    if isinstance(error, UploadError | RunError) and error.check in {
        "run-started",
        "input-complete",
        "upload-in-progress",
        "uploads-running",
        "run-state",
        "inputs-missing",
        "session-used",
        "deleted",
    }:
        return 409
    return 400


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as text: a refusal must always render as JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259)")


def problem(status: int, detail: str, **extra: object) -> JSONResponse:
    body = {"type": "about:blank", "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def enclave_app(routes: list[BaseRoute], who: str) -> Starlette:
    """A bare Starlette app (no OpenAPI, no FastAPI: it imports in a fraction of the time,
    and a Worker's start is a clean room's cold start), errors as problem details."""
    app = Starlette(routes=routes)
    app.router.redirect_slashes = False
    install_errors(app, who)
    return app


def install_errors(app: Starlette, who: str) -> None:
    async def refused(_request: Request, error: Exception) -> Response:
        refusal = cast(CheckFailed, error)  # registered for CheckFailed only
        log.info("%s refused: %s", who, refusal)
        facts = _finite(refusal.to_json())
        return problem(status_for(refusal), str(facts.pop("message")), **facts)

    async def broken(_request: Request, error: Exception) -> Response:
        log_failure(log, f"{who} failed", error)  # its message may quote a sealed name
        return problem(500, f"{who} failed: {type(error).__name__}")

    async def no_route(request: Request, error: Exception) -> Response:
        failure = cast(HTTPException, error)  # registered for HTTPException only
        return problem(
            failure.status_code,
            str(failure.detail),
            check="request-route",
            expected=f"a route of the {who}",
            actual=f"{request.method} {request.url.path}"[:200],
        )

    app.add_exception_handler(CheckFailed, refused)
    app.add_exception_handler(HTTPException, no_route)
    app.add_exception_handler(Exception, broken)


async def json_body(request: Request, fields: frozenset[str]) -> dict[str, Any]:
    """The request's JSON object, with exactly ``fields`` (nothing ignored silently).

    Read up to :data:`MAX_JSON_BODY` and no further: the whole body was read before its
    size was looked at, and a Controller's 512 MiB body to ``/status`` (or the
    Attester's ``/attest``, which every room shares) took a gigabyte of its memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_JSON_BODY:
        raise MessageFormatError("request-size", f"<= {MAX_JSON_BODY}", int(declared), "too big")
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_JSON_BODY:
            raise MessageFormatError(
                "request-size", f"<= {MAX_JSON_BODY}", f"more than {MAX_JSON_BODY}", "too big"
            )
        parts.append(chunk)
    body = b"".join(parts)
    try:
        document = json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deep
        raise MessageFormatError("request-format", "JSON", "not JSON", str(error)) from error
    if not isinstance(document, dict):
        raise MessageFormatError("request-format", "a JSON object", type(document).__name__, "")
    if set(document) != fields:
        raise MessageFormatError(
            "request-fields", sorted(fields), sorted(document)[:20], "wrong fields"
        )
    return document


def field(document: dict[str, Any], name: str) -> Any:
    if name not in document:
        raise MessageFormatError("request-format", f"a field {name!r}", sorted(document), "missing")
    return document[name]


def binary(document: dict[str, Any], name: str, size: int | None = None) -> bytes:
    value = field(document, name)
    if not isinstance(value, str):
        raise MessageFormatError(name, "b64u text", type(value).__name__, f"{name} is not text")
    return from_b64u(value, name, size=size)


MAX_REQUEST_HEAD = 1 << 20


class BoundedHead(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a bound on a request's head (its request line
    and headers): httptools keeps a header until it ends, whatever its size, and a
    Controller's 256 MiB header to a Worker took half a gigabyte of its memory.

    The bytes received while a head is incomplete are counted after the parser took
    them (a read that ends a message and starts the next counts whole: a read is at most
    256 KiB, far under the bound); past the bound the answer is a 400 and the connection
    is closed."""

    _head_bytes = 0
    _in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_REQUEST_HEAD:
                self.send_400_response("Request head too large.")


# How long an idle kept-alive connection from the Controller stays open. It must outlast
# how long the Controller's pool keeps one (``controller.relay.KEEP_IDLE_S``), or the
# Controller can send a request on a connection that is being closed that instant and get
# a reset; uvicorn's default (5 s) was shorter than aiohttp's (15 s).
KEEP_ALIVE_S = 65


def serve(
    app: Starlette,
    socket: Path | None,
    stop: threading.Event | None = None,
    *,
    listen: str | None = None,
) -> None:
    """Serve ``app`` on a Unix socket, or on ``listen`` (``HOST:PORT``: inside a Gramine
    enclave, whose Unix sockets do not reach the host), until ``stop`` is set."""
    # The parser and loop by name: the ones imported above, which the measurement covers.
    options: dict[str, Any] = {
        "log_level": "warning",
        "lifespan": "off",
        "loop": "uvloop",
        "http": BoundedHead,  # httptools, its head bounded
        "timeout_keep_alive": KEEP_ALIVE_S,
    }
    if socket is not None:
        socket.unlink(missing_ok=True)
        config = uvicorn.Config(app, uds=str(socket), **options)
    elif listen is not None:
        host, _, port = listen.rpartition(":")
        config = uvicorn.Config(app, host=host, port=int(port), **options)
    else:
        raise ValueError("serve on a Unix socket or on HOST:PORT")
    server = uvicorn.Server(config)
    if stop is not None:

        def watch() -> None:
            stop.wait()
            time.sleep(0.2)  # let the answer to /delete leave first
            server.should_exit = True

        threading.Thread(target=watch, name="stop", daemon=True).start()
    server.run()
