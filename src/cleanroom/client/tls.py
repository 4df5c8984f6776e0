"""One TLS context for every client of this process.

httpx builds a new context (and loads the CA bundle, ~30 ms) for every client it
creates; the SDK creates one per operation. The trust is the same either way: the
default CA bundle with hostname checks. (TLS is defence in depth here; the
protocol does not rely on it.)
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default verifying context, built once."""
    return httpx.create_ssl_context()
