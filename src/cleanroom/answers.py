"""An untrusted server's answer, read up to a size: the client's of the manager and the
Controller (``client/bounded.py``), the manager's of the Controllers (``manager/servers.py``);
and within a time: the manager's of the Controllers, the client's of the Controller.

httpx reads a whole body into memory, after decompressing it: a hostile server could
answer gigabytes, or a small gzip bomb that inflates to them, and the reader would run out
of memory first. A bound on the decoded size is not enough: httpx decodes each part of a
body as it comes, whole, through every content coding the answer names, so an answer
coded ``gzip, gzip`` of 1,828 bytes was one part that became 1 GiB in memory before any
bound was checked (a hostile Controller against a client, or against the manager, which
reads 1 MiB: 2.1 GiB at its peak; found by h34). Our servers compress nothing, so each
reader asks for no coding (:data:`IDENTITY_ONLY`) and refuses an answer that has one,
before reading its body (:func:`content_coding`). Its timeouts are per read: a server
that sends a byte of its answer now and then keeps the reader waiting for as long as it
likes (:class:`Deadline`).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import httpx

MAX_TOKEN_LIFETIME_S = 366 * 24 * 3600
"""The longest ``expires_in`` the client and a Controller take from the manager (a year):
one past any clock's float (10**400 s) was taken, and its expiry met the clock in
OverflowError: the client's profile's check, the Controller's at every request (h10)."""


IDENTITY_ONLY = {"accept-encoding": "identity"}
"""The headers of every client of an untrusted server: answers in no content coding
(httpx asks for gzip and deflate by default, and decodes what it gets, unbounded)."""


def content_coding(response: httpx.Response) -> str | None:
    """The content codings ``response`` names other than ``identity``, as one text, or
    None: an answer with one is refused unread (see the module)."""
    codings = [
        coding.strip().lower()
        for value in response.headers.get_list("content-encoding")
        for coding in value.split(",")
    ]
    named = [coding for coding in codings if coding and coding != "identity"]
    return ", ".join(named)[:200] if named else None


def read_bounded(
    response: httpx.Response,
    limit: int,
    too_large: Callable[[], BaseException],
    encoded: Callable[[str], BaseException],
) -> httpx.Response:
    """A streamed ``response``, its body read in chunks up to ``limit`` bytes and
    closed, as a response held in memory; past ``limit``, ``too_large()`` is raised
    before more is read. An answer in a content coding is not read at all:
    ``encoded(codings)`` is raised (:func:`content_coding`)."""
    try:
        coding = content_coding(response)
        if coding is not None:
            raise encoded(coding)
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise too_large()
            chunks.append(chunk)
    finally:
        response.close()
    headers = [
        (name, value)
        for name, value in response.headers.multi_items()
        if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=b"".join(chunks),
        request=response.request,
        extensions=response.extensions,
    )


class Connections:
    """The sockets of every connection one client opened, seen through httpcore's
    ``trace`` extension on each of its requests (:attr:`extensions`): a deadline of a
    request on a kept-alive connection has no connection of its own to shut, so it
    shuts these (a client that sends one request at a time)."""

    def __init__(self) -> None:
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def extensions(self) -> dict[str, Any]:
        return {"trace": self.trace}

    def trace(self, event: str, info: dict[str, Any]) -> socket.socket | None:
        """Keep the socket of a connection just made (and forget closed ones)."""
        sock = _connected(event, info)
        if sock is not None:
            with self._lock:
                self._sockets = [kept for kept in self._sockets if kept.fileno() != -1]
                self._sockets.append(sock)
        return sock

    def shut(self) -> None:
        with self._lock:
            for sock in self._sockets:
                _shut(sock)


class Deadline:
    """A request and its whole answer within ``seconds``: then the socket of the
    connection it opened is shut down, and the read that was waiting ends (``expired``).

    The socket is seen through httpcore's ``trace`` extension when the connection is
    made, so the request must open one (a client without keep-alive), or the client's
    :class:`Connections` must be given, whose every socket is shut then. Use it as a
    context manager around the request and the reading of its answer, with
    :attr:`extensions` on the request.
    """

    def __init__(self, seconds: float, connections: Connections | None = None) -> None:
        self.expired = False
        self._seconds = seconds
        self._sockets: list[socket.socket] = []
        self._connections = connections
        self._lock = threading.Lock()
        self._entry: list[Any] | None = None  # its place in the watchdog's heap, once started

    @property
    def extensions(self) -> dict[str, Any]:
        return {"trace": self._trace}

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        if self._connections is not None:
            sock = self._connections.trace(event, info)
        else:
            sock = _connected(event, info)
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)
        if self._connections is not None:
            self._connections.shut()

    def start(self) -> None:
        """Start counting (once): from the request's start, or later (an upload's
        answer from the end of its body)."""
        with self._lock:
            if self._entry is None:
                self._entry = _WATCHDOG.add(time.monotonic() + self._seconds, self._expire)

    def __enter__(self) -> Deadline:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._lock:
            if self._entry is not None:
                _WATCHDOG.cancel(self._entry)


class _Watchdog:
    """One thread of the process that ends every :class:`Deadline` that expires: a
    thread of its own per request (``threading.Timer``) cost 0.5 ms a request, a tenth
    of a session's setup. Deadlines wait in a heap by when they expire. A cancelled one
    is inert; once cancelled ones are more than half the heap (and the heap more than
    :attr:`COMPACT_FROM` entries), the heap is rebuilt without them: a process that
    made thousands of requests a second kept each for its whole 120 s, a heap of
    hundreds of thousands of dead entries."""

    COMPACT_FROM = 1024
    """The fewest entries a heap must have before it is rebuilt: below that, what the
    cancelled ones hold is nothing, and a rebuild per few requests would cost more."""

    def __init__(self) -> None:
        self._wakeup = threading.Condition(threading.Lock())
        self._heap: list[list[Any]] = []  # [when (monotonic), sequence, action or None]
        self._cancelled = 0  # entries in the heap whose action is None
        self._sequence = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, when: float, action: Callable[[], None]) -> list[Any]:
        """Call ``action`` (in the watchdog's thread) at ``when``, unless cancelled."""
        entry = [when, next(self._sequence), action]
        with self._wakeup:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="cleanroom-deadlines", daemon=True
                )
                self._thread.start()
            elif self._heap[0] is entry:
                self._wakeup.notify()  # earlier than what the thread waits for
        return entry

    def cancel(self, entry: list[Any]) -> None:
        """``entry``'s action is not called (if it was not already)."""
        with self._wakeup:
            if entry[2] is None:  # cancelled already, or taken off the heap
                return
            entry[2] = None
            self._cancelled += 1
            if self._cancelled * 2 > len(self._heap) >= self.COMPACT_FROM:
                self._heap = [kept for kept in self._heap if kept[2] is not None]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _run(self) -> None:
        while True:
            with self._wakeup:
                now = time.monotonic()
                due = []
                while self._heap and self._heap[0][0] <= now:
                    entry = heapq.heappop(self._heap)
                    if entry[2] is None:
                        self._cancelled -= 1
                    else:
                        due.append(entry[2])
                        entry[2] = None  # off the heap: a cancel after counts nothing
                if not due:
                    self._wakeup.wait(self._heap[0][0] - now if self._heap else None)
                    continue
            for action in due:  # outside the heap's lock: each takes its deadline's own
                action()

    def _after_fork(self) -> None:
        """A child has none of its parent's threads: its deadlines start a watchdog anew."""
        self._wakeup = threading.Condition(threading.Lock())
        self._heap = []
        self._cancelled = 0
        self._thread = None


_WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=_WATCHDOG._after_fork)


def _connected(event: str, info: dict[str, Any]) -> socket.socket | None:
    """The socket of the connection a ``trace`` event says was just made, else None."""
    if event != "connection.connect_tcp.complete":
        return None
    sock = info["return_value"].get_extra_info("socket")
    return sock if isinstance(sock, socket.socket) else None


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed meanwhile: nothing is waiting on it
        sock.shutdown(socket.SHUT_RDWR)
