"""An untrusted server's answer, read up to a size: the client's of the manager and the
Controller (``client/bounded.py``), the manager's of the Controllers (``manager/servers.py``).

httpx reads a whole body into memory, after decompressing it (it asks for gzip and
deflate): a hostile server could answer gigabytes, or a small gzip bomb that inflates to
them, and the reader would run out of memory first.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx


def read_bounded(
    response: httpx.Response, limit: int, too_large: Callable[[], BaseException]
) -> httpx.Response:
    """A streamed ``response``, its body read (decoded) in chunks up to ``limit`` bytes and
    closed, as a response held in memory; past ``limit``, ``too_large()`` is raised
    before more is read."""
    try:
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
