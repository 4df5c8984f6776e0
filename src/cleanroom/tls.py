"""One TLS context for every HTTP client of this process.

httpx builds a new context (and loads the CA bundle, 20-30 ms of CPU) for every client
it creates, even for a plain-HTTP URL; the SDK creates one per operation, the
Controller one per bundle fetch, token and revocation list, and the manager one per
deploy and delete it sends a Controller. The trust is the same
either way: the default CA bundle with hostname checks. (TLS is defence in depth here;
the protocol does not rely on it.) An ``SSLContext`` may be shared by threads.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default verifying context, built once."""
    return httpx.create_ssl_context()
