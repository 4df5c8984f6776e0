"""Answers of a server the client does not trust, read up to a size.

httpx reads a whole body into memory, after decompressing it (it asks for gzip
and deflate): a hostile manager or Controller could answer gigabytes, or a small
gzip bomb that inflates to them, and the client's machine would run out of memory
first. :func:`send` reads the decoded body in chunks and refuses it
(``answer-size``) once it passes ``limit``, before it is all in memory
(:func:`cleanroom.answers.read_bounded`).
"""

from __future__ import annotations

from typing import Any

import httpx

from cleanroom.answers import read_bounded
from cleanroom.client.errors import UntrustedAnswerError

MAX_ANSWER_BYTES = 64 << 20
"""The largest answer (decoded) the client reads when a call names no other limit:
its JSON answers are a few kilobytes to a few megabytes (evidence with collateral)."""


def send(
    client: httpx.Client, method: str, url: str, *, limit: int, who: str, **kwargs: Any
) -> httpx.Response:
    """``client.request(method, url, **kwargs)``, its body read (decoded) up to ``limit``
    bytes; more is :class:`UntrustedAnswerError` ``answer-size``. Transport failures are
    httpx's errors, as from ``request``."""
    auth = kwargs.pop("auth", httpx.USE_CLIENT_DEFAULT)
    request = client.build_request(method, url, **kwargs)
    return read(client.send(request, auth=auth, stream=True), limit=limit, who=who)


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
