"""A Controller that stops sending in the middle of a download: the client gives up after
its read timeout, instead of waiting for ever (the download had no read timeout)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import pytest

from cleanroom.client.compute import ComputeClient
from cleanroom.client.errors import ServerError
from cleanroom.dpop import ProofKey
from tests.client.hostile_http import serving

STALL_S = 15.0
"""How long the Controller holds the connection before it closes it."""


@contextmanager
def stalling_controller() -> Iterator[str]:
    """Answers a download's head and a few bytes of it, then sends nothing."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/octet-stream")
            self.send_header("content-length", "1000")
            self.end_headers()
            self.wfile.write(b"\x00\x00")
            self.wfile.flush()
            release.wait(STALL_S)

        def log_message(self, *_args: object) -> None:
            pass

    with serving(Handler, release) as url:
        yield url


def test_a_stalled_download_ends_at_the_read_timeout() -> None:
    with (
        stalling_controller() as url,
        ComputeClient(url, token="t", dpop_key=ProofKey.generate(), timeout=1.0) as client,
    ):
        started = time.monotonic()
        with pytest.raises(ServerError) as caught:
            list(client.download("room", "session"))
        waited = time.monotonic() - started
    assert "timed out" in str(caught.value)
    # Ended by the client's timeout (1 s), not by the Controller closing after 15 s.
    assert waited < STALL_S / 2, waited
