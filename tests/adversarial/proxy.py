"""A hostile network in front of the Controller: a real HTTP proxy on loopback that
can change, replay, reorder, drop, duplicate, truncate or redirect any message.

The manager registers the proxy's URL as the compute server, so deploys from the
manager and every client call pass through it, exactly as they would pass
through a compromised Controller.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cleanroom.insecure.localstack import free_port

FORWARDED_HEADERS = ("authorization", "dpop", "content-type")


@dataclass
class Message:
    """One request (and, after forwarding, its response) as the proxy sees it."""

    method: str
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    """The credentials it carried: ``authorization`` and ``dpop``, as sent."""
    status: int = 0
    response: bytes = b""
    content_type: str = "application/json"
    relay: bool = True
    """False (set by a request hook): the Controller answers itself, with ``status`` and
    ``response``, and the request never reaches the Controller behind the proxy."""
    answer_headers: dict[str, str] = field(default_factory=dict)
    """Headers of the proxy's own to add to the answer (a redirect's ``location``)."""


RequestHook = Callable[[Message], None]
ResponseHook = Callable[[Message], None]


@dataclass
class TamperingProxy:
    upstream: str
    port: int = field(default_factory=free_port)
    on_request: RequestHook | None = None
    on_response: ResponseHook | None = None
    seen: list[Message] = field(default_factory=list)
    stalled: Callable[[str], bool] | None = None
    """Paths whose request body it does not read (until the proxy is reset): a Controller
    that stops taking an upload."""
    slow: Callable[[Message], float | None] | None = None
    """Seconds between the bytes of an answer it picks (None: the answer at once): a
    Controller that sends a byte now and then."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.on_request = self.on_response = self.slow = self.stalled = None
        self.seen.clear()

    def paths(self, suffix: str) -> list[str]:
        return [m.path for m in self.seen if m.path.endswith(suffix)]

    async def _forward(self, request: Request) -> Response:
        while self.stalled is not None and self.stalled(request.url.path):
            await asyncio.sleep(0.05)
        credentials = {k: v for k, v in request.headers.items() if k in ("authorization", "dpop")}
        message = Message(request.method, request.url.path, await request.body(), credentials)
        if self.on_request is not None:
            self.on_request(message)
        self.seen.append(message)
        # The credentials as the hooks left them (a hook may stand in for a Controller
        # that checks nothing), the rest as sent.
        headers = {k: v for k, v in request.headers.items() if k in FORWARDED_HEADERS}
        headers = {k: v for k, v in headers.items() if k not in ("authorization", "dpop")}
        headers.update(message.headers)
        if message.relay:
            async with httpx.AsyncClient(timeout=120.0) as client:
                answer = await client.request(
                    message.method,
                    self.upstream + message.path,
                    content=message.body,
                    headers=headers,
                )
            message.status, message.response = answer.status_code, answer.content
            message.content_type = answer.headers.get("content-type", "application/json")
        if self.on_response is not None:
            self.on_response(message)
        delay = None if self.slow is None else self.slow(message)
        if delay is not None:
            return StreamingResponse(
                self._trickle(message.response, delay),
                message.status,
                headers=message.answer_headers,
                media_type=message.content_type,
            )
        return Response(
            message.response,
            message.status,
            headers=message.answer_headers,
            media_type=message.content_type,
        )

    async def _trickle(self, body: bytes, delay: float) -> AsyncIterator[bytes]:
        """``body`` a byte at a time, ``delay`` seconds apart, until the proxy is reset."""
        for index in range(len(body)):
            if self.slow is None:
                return
            yield body[index : index + 1]
            await asyncio.sleep(delay)

    def start(self) -> None:
        app = Starlette(
            routes=[
                Route(
                    "/{path:path}",
                    self._forward,
                    methods=["GET", "POST", "PUT", "DELETE"],
                )
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the tampering proxy did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
