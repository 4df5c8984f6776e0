"""Limits every cleanroom HTTP server applies before it does real work.

- :class:`BodySizeLimit`, an ASGI middleware: a request body larger than the limit
  is refused with ``413`` problem details (check ``request-size``) before it is
  read into memory. A ``Content-Length`` above the limit is refused before any of
  the body is read; a chunked body is counted as it arrives and refused as soon as
  it passes the limit. Routes that stream their body to disk or to an enclave
  with a limit of their own are exempt.
- :class:`RateLimiter`: token buckets by key (a client id, a remote address), in
  this process's memory. One manager process serves the token endpoint, so one
  process's buckets are the limit; several processes would each allow as much.

Both the manager and the Controller use them; this module imports neither.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException

from cleanroom.web import problem

DEFAULT_MAX_JSON_BYTES = 1 << 20
"""1 MiB: the largest request body of an endpoint that is not a streaming upload."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _size_facts(limit: int, actual: str) -> dict[str, str]:
    """What the 413 names: the check, the limit and the size seen."""
    return {
        "check": "request-size",
        "expected": f"a request body of at most {limit} bytes",
        "actual": actual,
    }


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413, except on ``exempt`` routes.

    ``exempt`` lists ``(method, path regex)`` pairs (the regex must match the whole
    path) of routes that enforce a limit of their own while streaming.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int = DEFAULT_MAX_JSON_BYTES,
        exempt: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._exempt = [(method.upper(), re.compile(pattern)) for method, pattern in exempt]

    def _is_exempt(self, scope: Scope) -> bool:
        method, path = scope.get("method", ""), scope.get("path", "")
        return any(method == m and pattern.fullmatch(path) for m, pattern in self._exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_exempt(scope):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            detail = (
                f"the request body of {declared} bytes is larger than this server's "
                f"limit of {self.max_bytes} bytes"
            )
            facts = _size_facts(self.max_bytes, f"{declared} bytes")
            response = problem(
                413,
                detail,
                check=facts["check"],
                expected=facts["expected"],
                actual=facts["actual"],
            )
            await response(scope, receive, send)
            return
        received = 0
        limit = self.max_bytes

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the app, where the problem handlers answer it (FastAPI
                    # passes an HTTPException from reading the body through unchanged).
                    raise HTTPException(
                        413,
                        {
                            "detail": f"the request body is larger than this server's "
                            f"limit of {limit} bytes",
                            **_size_facts(limit, f"more than {limit} bytes"),
                        },
                    )
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


@dataclass(frozen=True)
class RateLimit:
    """A token bucket's shape: ``burst`` requests at once, refilled at ``per_second``."""

    burst: int
    per_second: float

    def __post_init__(self) -> None:
        if self.burst < 1 or self.per_second <= 0:
            raise ValueError(f"a rate limit needs burst >= 1 and per_second > 0, got {self}")


class RateLimiter:
    """Token buckets by key, all of one :class:`RateLimit`, in memory.

    :meth:`take` spends one request of ``key``'s bucket. Buckets that have
    refilled completely are forgotten (they are the same as new ones), so memory
    stays bounded by the keys seen within one refill period.
    """

    def __init__(self, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._swept_at = clock()

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.limit.burst), now))
        return min(float(self.limit.burst), tokens + (now - at) * self.limit.per_second)

    def take(self, key: str) -> float | None:
        """Spend one request of ``key``: None if allowed, else seconds until one is."""
        with self._lock:
            now = self._clock()
            self._sweep(now)
            tokens = self._tokens(key, now)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return (1.0 - tokens) / self.limit.per_second
            self._buckets[key] = (tokens - 1.0, now)
            return None

    def _sweep(self, now: float) -> None:
        refill = self.limit.burst / self.limit.per_second
        if now - self._swept_at < refill:
            return
        self._swept_at = now
        full = [key for key in self._buckets if self._tokens(key, now) >= self.limit.burst]
        for key in full:
            del self._buckets[key]

    def __len__(self) -> int:
        """How many buckets are remembered (for tests of the memory bound)."""
        return len(self._buckets)


TOKEN_RATE_PER_CLIENT = RateLimit(burst=10, per_second=0.5)
"""The token endpoint's default limit per client_id from one address: 10 at once, then one
per 2 s."""
TOKEN_RATE_PER_ADDRESS = RateLimit(burst=50, per_second=5.0)
"""The token endpoint's default limit per remote address: 50 at once, then 5 per second."""
SECRET_RATE_PER_PROJECT = RateLimit(burst=10, per_second=0.5)
"""How many new secrets (a client created, a secret rotated) a project's owners may have
the manager hash with argon2id: 10 at once, then one per 2 s."""


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value (whole seconds, rounded up, at least 1)."""
    return str(max(1, math.ceil(seconds)))
