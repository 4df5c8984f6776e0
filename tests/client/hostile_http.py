"""A hostile management server on loopback, answering canned bodies (red-team tests)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cleanroom.protocol.encoding import b64u

Answer = Callable[[str, str], tuple[int, dict[str, str], bytes] | None]
"""(method, path) -> (status, headers, body), or None for a 404."""


def json_answer(document: Any, status: int = 200) -> tuple[int, dict[str, str], bytes]:
    return status, {"content-type": "application/json"}, json.dumps(document).encode()


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], release: threading.Event) -> Iterator[str]:
    """``handler`` served on a free loopback port, a thread per connection; yields the
    base URL. At the end ``release`` is set (what the handler waits on ends) and the
    server shut."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()


@contextmanager
def hostile_server(
    answer: Answer, *, query: bool = False, encodings: list[str | None] | None = None
) -> Iterator[str]:
    """Serve ``answer`` on a free loopback port; yields the base URL. The path it is
    given has its query string only with ``query``; ``encodings`` gets the Accept-Encoding
    of each request (None: none)."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            if encodings is not None:
                encodings.append(self.headers.get("accept-encoding"))
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            answered = answer(self.command, self.path if query else self.path.split("?")[0])
            status, headers, body = answered or (404, {}, b"")
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def manager_of_room(room: dict[str, Any], bundle: bytes) -> Answer:
    """A manager that logs anyone in and serves ``room`` (whatever room is asked for) and
    ``bundle`` (whatever function is asked for)."""

    def answer(method: str, path: str) -> tuple[int, dict[str, str], bytes] | None:
        if (method, path) == ("POST", "/oauth/token"):
            return json_answer({"access_token": "t", "token_type": "DPoP", "expires_in": 600})
        if method == "GET" and path.startswith("/v1/rooms/"):
            return json_answer(room)
        if method == "GET" and path.startswith("/v1/functions/"):
            return 200, {"content-type": "application/octet-stream"}, bundle
        return None

    return answer


def deployed_room(document: dict[str, Any]) -> dict[str, Any]:
    """A manager's record of a deployed room of this spec ``document`` (with a fresh
    nonce, so each call is another room), for :func:`manager_of_room`."""
    from cleanroom.protocol.spec import WorkSpec

    document = {**document, "nonce": b64u(os.urandom(16))}
    spec = WorkSpec.parse(document)
    return {
        "name": spec.name, "project": "acme", "spec": document, "work_id": spec.work_id,
        "function": spec.function, "state": "deployed", "compute_url": "http://127.0.0.1:9",
        "deployer": "someone", "created": 0,
    }  # fmt: skip


def configure_against(url: str) -> None:
    """``cleanroom configure`` of the default profile against the manager at ``url``."""
    from cleanroom.cli.main import main

    configure = [
        "configure", "--manager-url", url, "--client-id", "c" * 32, "--client-secret", "secret",
    ]  # fmt: skip
    assert main(configure) == 0
