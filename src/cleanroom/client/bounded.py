"""Answers of a server the client does not trust, read up to a size.

httpx reads a whole body into memory, after decompressing it (it asks for gzip
and deflate): a hostile manager or Controller could answer gigabytes, or a small
gzip bomb that inflates to them, and the client's machine would run out of memory
first. :func:`send` reads the decoded body in chunks and refuses it
(``answer-size``) once it passes ``limit``, before it is all in memory
(:func:`cleanroom.answers.read_bounded`).

httpx's timeouts are per read: a server that sends a byte of its answer now and then
(or of its head) kept the client waiting for as long as it liked, a command that never
ended. With ``deadline``, :func:`send` gives up on an answer not whole within that many
seconds (``answer-time``), and shuts the client's connections to do so
(:class:`cleanroom.answers.Deadline`).
"""

from __future__ import annotations

from typing import Any

import httpx

from cleanroom.answers import Connections, Deadline, read_bounded
from cleanroom.client.errors import UntrustedAnswerError

MAX_ANSWER_BYTES = 64 << 20
"""The largest answer (decoded) the client reads when a call names no other limit:
its JSON answers are a few kilobytes to a few megabytes (evidence with collateral)."""

ANSWER_DEADLINE_S = 120.0
"""The longest the client waits for the whole of a JSON answer of an untrusted server,
from the request's start (each read has its own, shorter, timeout besides): a session's
evidence and handshake take well under a second from a Controller on the other side of
the world."""


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
    )
