"""Answers of a server the client does not trust, read up to a size.

httpx reads a whole body into memory, after decompressing it: a hostile manager or
Controller could answer gigabytes, or a small gzip bomb that inflates to them, and the
client's machine would run out of memory first. :func:`send` reads the body in chunks
and refuses it (``answer-size``) once it passes ``limit``, before it is all in memory
(:func:`cleanroom.answers.read_bounded`). The client asks for answers in no content
coding, and refuses one in any (``answer-encoding``) before reading it: httpx decodes
each part whole, through every coding named, and ``gzip, gzip`` made 1 GiB of one
part of 1,828 bytes before the size was checked.

httpx's timeouts are per read: a server that sends a byte of its answer now and then
(or of its head) kept the client waiting for as long as it liked, a command that never
ended. With ``deadline``, :func:`send` gives up on an answer not whole within that many
seconds (``answer-time``), and shuts the client's connections to do so
(:class:`cleanroom.answers.Deadline`). A download (a room's output, a function's
bundle) is not whole in any time known before it starts: :func:`head` and
:func:`paced` hold it to a pace instead (:class:`Pace`, ``download-time``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from cleanroom.answers import Connections, Deadline, content_coding, read_bounded
from cleanroom.client.errors import UntrustedAnswerError
from cleanroom.protocol.errors import RecordError

MAX_ANSWER_BYTES = 64 << 20
"""The largest answer (decoded) the client reads when a call names no other limit:
its JSON answers are a few kilobytes to a few megabytes (evidence with collateral)."""

ANSWER_DEADLINE_S = 120.0
"""The longest the client waits for the whole of a JSON answer of an untrusted server,
from the request's start (each read has its own, shorter, timeout besides): a session's
evidence and handshake take well under a second from a Controller on the other side of
the world."""


def refusing_redirects(who: str) -> dict[str, list[Callable[[httpx.Response], None]]]:
    """The event hooks of a client of the ``who`` server: an answer of 300 to 399 is
    refused (``answer-redirect``), before its body is read. Nothing is followed (httpx
    follows no redirect unless asked), so the request's token and proof go nowhere
    else; a redirect was read as an answer and refused as malformed, naming no check.
    No server of cleanroom redirects."""

    def refuse(response: httpx.Response) -> None:
        if 300 <= response.status_code < 400:
            location = response.headers.get("location", "no location")
            raise UntrustedAnswerError(
                "answer-redirect",
                "an answer or a refusal (a redirect is never followed)",
                f"{response.status_code} to {location[:200]}",
                f"the {who} redirected {response.request.method} "
                f"{response.request.url.path} elsewhere: not followed",
            )

    return {"response": [refuse]}


def send(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    limit: int,
    who: str,
    deadline: float | None = None,
    connections: Connections | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """``client.request(method, url, **kwargs)``, its body read (decoded) up to ``limit``
    bytes; more is :class:`UntrustedAnswerError` ``answer-size``. With ``deadline``, the
    answer must be whole within that many seconds, else ``answer-time``: ``connections``
    (every request of ``client`` sent with them, one request at a time) are shut then,
    or without them the connection this request opens. Transport failures are httpx's
    errors, as from ``request``."""
    auth = kwargs.pop("auth", httpx.USE_CLIENT_DEFAULT)
    if deadline is None:
        if connections is not None:
            kwargs["extensions"] = connections.extensions
        request = client.build_request(method, url, **kwargs)
        return read(client.send(request, auth=auth, stream=True), limit=limit, who=who)
    timer = Deadline(deadline, connections)
    request = client.build_request(method, url, extensions=timer.extensions, **kwargs)
    with timer:
        try:
            return read(client.send(request, auth=auth, stream=True), limit=limit, who=who)
        except httpx.HTTPError as error:
            if not timer.expired:
                raise
            raise UntrustedAnswerError(
                "answer-time",
                f"a whole answer within {deadline:g} s",
                f"none after {deadline:g} s",
                f"the {who} did not answer {method} {request.url.path} in time",
            ) from error


def read(response: httpx.Response, *, limit: int, who: str) -> httpx.Response:
    """A streamed ``response`` read (decoded) up to ``limit`` bytes and closed, as a
    response whose content is in memory; more is ``answer-size``."""
    return read_bounded(
        response,
        limit,
        lambda: UntrustedAnswerError(
            "answer-size",
            f"at most {limit} bytes",
            f"more than {limit}",
            f"the {who} sent an answer larger than the client reads",
        ),
        lambda coding: encoded(coding, who),
    )


def encoded(coding: str, who: str) -> UntrustedAnswerError:
    """An answer in content coding ``coding``, refused unread (``answer-encoding``)."""
    return UntrustedAnswerError(
        "answer-encoding",
        "an answer in no content coding (the client asks for identity)",
        coding,
        f"the {who} sent a compressed answer, which is not read: decoded, a small one "
        "may fill the memory before its size can be checked",
    )


DOWNLOAD_GRACE_S = 120.0
"""What a download's head and first part may take (check ``download-time``)."""

DOWNLOAD_MIN_BYTES_PER_S = 8192.0
"""The slowest a download may go past :data:`DOWNLOAD_GRACE_S` (``download-time``): the
time the client waits for the server is at most the grace and a second for every this
many bytes that came, so each record of 1 MiB (the record layer's) may take 128 s more,
and an output of ``size`` bytes takes at most the grace and
``size / DOWNLOAD_MIN_BYTES_PER_S`` seconds whatever its number of records (a link of
64 kbit/s keeps up)."""


class Pace:
    """How long the client has waited for a download, and how long it may wait for what
    comes next: :data:`DOWNLOAD_GRACE_S` and a second for every
    :data:`DOWNLOAD_MIN_BYTES_PER_S` bytes received, less what it waited already. Its
    own time between two parts (writing one to disk) does not count.

    ``part`` names what comes (``record``), ``what`` the whole (``the download``) and
    ``who`` the server, in :meth:`too_slow`'s words."""

    def __init__(
        self, part: str, what: str, who: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._grace = DOWNLOAD_GRACE_S
        self._rate = DOWNLOAD_MIN_BYTES_PER_S
        self._part, self._what, self.who = part, what, who
        self._clock = clock
        self._bytes = 0
        self._parts = 0
        self._waited = 0.0
        self._since = clock()

    def wait(self) -> float:
        """A wait starts now: the seconds it may last."""
        self._since = self._clock()
        return self._grace + self._bytes / self._rate - self._waited

    def came(self, part: bytes | None) -> None:
        """The wait ended with ``part`` (None: the answer's head, or its end)."""
        self._waited += self._clock() - self._since
        if part is not None:
            self._bytes += len(part)
            self._parts += 1

    def too_slow(self) -> UntrustedAnswerError:
        """``download-time``: what was waited for, and what had come."""
        allowed = self._grace + self._bytes / self._rate
        return UntrustedAnswerError(
            "download-time",
            f"{self._part} {self._parts + 1} of {self._what} whole within {allowed:.0f} s "
            f"of waiting ({self._grace:g} s and a second for every {self._rate:g} bytes "
            f"received)",
            f"{self._parts} {self._part}s ({self._bytes} bytes) after {allowed:.0f} s",
            f"the {self.who} sent {self._what} too slowly",
        )


def head(
    client: httpx.Client,
    request: httpx.Request,
    pace: Pace,
    connections: Connections,
    *,
    auth: Any = httpx.USE_CLIENT_DEFAULT,
) -> httpx.Response:
    """``request`` sent on ``client`` (every request of which is sent with
    ``connections``), its answer's head within what ``pace`` allows
    (``download-time``), streamed; a refusal (400 or more) read whole in that time, up
    to :data:`MAX_ANSWER_BYTES`; an answer in a content coding refused unread
    (``answer-encoding``). Transport failures are httpx's errors."""
    timer = Deadline(pace.wait(), connections)
    request.extensions.update(timer.extensions)
    with timer:
        try:
            response = client.send(request, auth=auth, stream=True)
            if response.status_code >= 400:
                response = read(response, limit=MAX_ANSWER_BYTES, who=pace.who)
            elif (coding := content_coding(response)) is not None:
                response.close()  # a download decoded part by part: unbounded the same way
                raise encoded(coding, pace.who)
        except httpx.HTTPError as error:
            if timer.expired:
                raise pace.too_slow() from error
            raise
        if timer.expired:
            raise pace.too_slow()
    pace.came(None)
    return response


def paced(parts: Iterator[bytes], pace: Pace, connections: Connections) -> Iterator[bytes]:
    """``parts`` (of an answer whose head :func:`head` had), each within what ``pace``
    allows, else ``connections`` are shut and ``download-time`` raised: a server that
    sent a byte now and then is no longer waited for. Transport failures are httpx's
    errors."""
    while True:
        with Deadline(pace.wait(), connections) as timer:
            try:
                part = next(parts, None)
            except (httpx.HTTPError, RecordError) as error:  # a part cut where it was shut
                if timer.expired:
                    raise pace.too_slow() from error
                raise
            if timer.expired:  # its end seen as the answer's
                raise pace.too_slow()
        pace.came(part)
        if part is None:
            return
        yield part
