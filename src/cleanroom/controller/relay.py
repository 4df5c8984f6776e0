"""The Controller's HTTP client to its enclave processes, over their Unix sockets.

aiohttp, not httpx, for this one hop: measured on a Unix socket against the same
uvicorn app, httpx's asynchronous client took 2.3 to 3.3 ms per small request and aiohttp
0.25 to 0.32 ms (docs/benchmarks.md, "The profile"). Every client message crosses this hop,
so it was most of a session's round trip. What this module relays is never parsed
here (except where the caller says so): bodies go through as bytes or as a stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from cleanroom.errors import Error

BASE_URL = "http://enclave"
STREAM_CHUNK = 1 << 20


class EnclaveUnreachable(Error):
    """The enclave process did not answer: not started, gone, or too slow."""

    http_status = 502


class RequestNotRelayable(Error):
    """A request that cannot be sent as it is (its URL would not parse): the caller's
    400, never a 502 blamed on the enclave."""


@dataclass(frozen=True)
class Answer:
    """An enclave's whole answer: status, body bytes and content type."""

    status: int
    content: bytes
    content_type: str

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")


class StreamedAnswer:
    """An enclave's answer whose body is read as it arrives (a download)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.content_type = response.headers.get("content-type", "application/json")

    async def read(self) -> Answer:
        try:
            return Answer(self.status, await self._response.read(), self.content_type)
        finally:
            self.close()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(STREAM_CHUNK):
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        self._response.release()


_FAILURES = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


async def coalesced(body: AsyncIterator[bytes], size: int = STREAM_CHUNK) -> AsyncIterator[bytes]:
    """``body``'s bytes unchanged, in pieces of at least ``size`` (the last may be shorter).

    A request body arrives in pieces of what one socket read gave (tens of KiB); each
    piece sent on as it came costs a chunk header, a write here and an ASGI message,
    a parse and a frame-decoder call in the Worker. Joined into pieces of a record's
    size, those costs are paid once per record. The bytes are not looked at.
    """
    parts: list[bytes] = []
    have = 0
    async for chunk in body:
        parts.append(chunk)
        have += len(chunk)
        if have >= size:
            yield parts[0] if len(parts) == 1 else b"".join(parts)
            parts, have = [], 0
    if parts:
        yield b"".join(parts)


# How long an idle connection to an enclave stays in the pool: less than the enclave
# services keep one open (``enclave.http.KEEP_ALIVE_S``, 65 s), so that the Controller
# never sends on a connection the enclave is closing.
KEEP_IDLE_S = 5.0


class EnclaveClient:
    """One enclave process's socket: requests whose answers are read whole, or streamed."""

    def __init__(self, socket: Path, *, timeout: float = 60.0) -> None:
        self.socket = socket
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(
                    path=str(self.socket), keepalive_timeout=KEEP_IDLE_S
                ),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self._timeout, sock_read=self._timeout
                ),
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        json_body: Any = None,
        timeout: float | None = None,
    ) -> Answer:
        """Send a request with a small body (bytes, or JSON to encode) and read the answer."""
        if json_body is not None:
            content = json.dumps(json_body).encode()
        headers = {"content-type": "application/json"} if content is not None else None
        session = self._open()
        try:
            async with session.request(
                method,
                BASE_URL + path,
                data=content,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout) if timeout is not None else None,
            ) as response:
                return Answer(
                    response.status,
                    await response.read(),
                    response.headers.get("content-type", "application/json"),
                )
        except aiohttp.InvalidURL as error:
            raise RequestNotRelayable(f"the request cannot be relayed: {error}") from error
        except _FAILURES as error:
            raise EnclaveUnreachable(str(error) or type(error).__name__) from error

    async def send_stream(
        self, method: str, path: str, body: AsyncIterator[bytes], content_type: str
    ) -> Answer:
        """Stream ``body`` (chunked, in pieces of about a record, never buffered whole)
        and read the answer."""
        session = self._open()
        try:
            async with session.request(
                method,
                BASE_URL + path,
                data=coalesced(body),
                headers={"content-type": content_type},
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=60.0),
            ) as response:
                return Answer(
                    response.status,
                    await response.read(),
                    response.headers.get("content-type", "application/json"),
                )
        except aiohttp.InvalidURL as error:
            raise RequestNotRelayable(f"the request cannot be relayed: {error}") from error
        except _FAILURES as error:
            raise EnclaveUnreachable(str(error) or type(error).__name__) from error

    async def open_stream(self, method: str, path: str) -> StreamedAnswer:
        """Send a request and return its answer unread: the caller streams or reads it."""
        session = self._open()
        try:
            response = await session.request(
                method,
                BASE_URL + path,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=60.0),
            )
        except aiohttp.InvalidURL as error:
            raise RequestNotRelayable(f"the request cannot be relayed: {error}") from error
        except _FAILURES as error:
            raise EnclaveUnreachable(str(error) or type(error).__name__) from error
        return StreamedAnswer(response)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
