"""A management server that answers a byte now and then, each byte well inside the
client's read timeout, or stops taking a bundle: the client gives up at the answer's
deadline (``answer-time``, a JSON answer whole within it, on a new connection as on one
kept alive), at the pace of a download (``download-time``, a function's bundle) or at a
write's timeout (``upload-time``), where it waited for as long as the manager liked."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import pytest

from cleanroom.client import bounded
from cleanroom.client.manager import ManagerClient
from cleanroom.errors import CheckFailed
from cleanroom.protocol.bundle import function_id
from tests.client.hostile_http import serving

BYTE_EVERY_S = 0.1
DEADLINE_S = 1.0
BUNDLE = b"\x07" * 4096
TOKEN = json.dumps({"access_token": "t", "token_type": "DPoP", "expires_in": 600}).encode()
WHOAMI = json.dumps({"client_id": "c" * 32, "project": "acme", "user_id": None}).encode()
UPLOADED = json.dumps({"function_id": function_id(BUNDLE), "size": len(BUNDLE)}).encode()


@contextmanager
def slow_manager(trickled: Callable[[str, str], bool], *, reads: bool = True) -> Iterator[str]:
    """A manager whose answers to the requests ``trickled(method, path)`` picks come a
    byte every ``BYTE_EVERY_S`` seconds (until the test ends), the others at once, on
    kept-alive connections; without ``reads``, it never reads a request's body."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def _serve(self) -> None:
            if not reads:
                release.wait(60)
                return
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            path = self.path.split("?")[0]
            if path == "/oauth/token":
                body, kind = TOKEN, "application/json"
            elif path == "/v1/whoami":
                body, kind = WHOAMI, "application/json"
            elif path == "/v1/functions":
                body, kind = UPLOADED, "application/json"
            else:
                body, kind = BUNDLE, "application/octet-stream"
            self.send_response(200)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if not trickled(self.command, path):
                self.wfile.write(body)
                return
            for index in range(len(body)):
                if release.wait(BYTE_EVERY_S):
                    return
                try:
                    self.wfile.write(body[index : index + 1])
                    self.wfile.flush()
                except OSError:
                    return

        do_GET = do_POST = _serve

        def log_message(self, *_args: object) -> None:
            pass

    with serving(Handler, release) as url:
        yield url


def ended(action: Callable[[], object]) -> object:
    """What ``action`` returned or raised; given up on (as a failure) if still going
    long after the deadline."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(action())
        except CheckFailed as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert outcome, "expected an end within 60 s, still waiting"
    return outcome[0]


@pytest.fixture(autouse=True)
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bounded, "ANSWER_DEADLINE_S", DEADLINE_S)
    monkeypatch.setattr(bounded, "DOWNLOAD_GRACE_S", DEADLINE_S)
    monkeypatch.setattr(bounded, "DOWNLOAD_MIN_BYTES_PER_S", 1e9)


def refused(outcome: object, check: str) -> CheckFailed:
    assert isinstance(outcome, CheckFailed) and outcome.check == check, outcome
    return outcome


def test_a_trickled_token_is_given_up_at_the_deadline() -> None:
    with slow_manager(lambda _m, path: path == "/oauth/token") as url:
        manager = ManagerClient(url)
        error = refused(ended(lambda: manager.fetch_token("c" * 32, "secret")), "answer-time")
        manager.close()
    assert error.expected == f"a whole answer within {DEADLINE_S:g} s"
    assert manager.token is None


def test_a_trickled_answer_on_a_kept_alive_connection_is_given_up_at_the_deadline() -> None:
    # The token at once, on the connection the next request then reuses.
    with slow_manager(lambda _m, path: path == "/v1/whoami") as url:
        manager = ManagerClient(url)
        manager.fetch_token("c" * 32, "secret")
        refused(ended(manager.whoami), "answer-time")
        manager.close()


def test_a_trickled_answer_to_a_bundle_s_upload_is_given_up_after_its_end() -> None:
    with slow_manager(lambda method, path: path == "/v1/functions") as url:
        manager = ManagerClient(url, token="t")
        error = refused(ended(lambda: manager.upload_function(BUNDLE)), "answer-time")
        manager.close()
    assert error.expected == f"an answer within {DEADLINE_S:g} s of the bundle's end"


def test_a_bundle_the_manager_stops_taking_is_given_up() -> None:
    # More than every buffer between the client and the server can hold.
    with slow_manager(lambda _m, _p: False, reads=False) as url:
        manager = ManagerClient(url, token="t", timeout=DEADLINE_S)
        refused(ended(lambda: manager.upload_function(b"\0" * (64 << 20))), "upload-time")
        manager.close()


def test_a_trickled_bundle_is_given_up_at_the_pace() -> None:
    with slow_manager(lambda method, path: path.startswith("/v1/functions/")) as url:
        manager = ManagerClient(url, token="t")
        error = refused(
            ended(lambda: manager.download_function(function_id(BUNDLE))), "download-time"
        )
        manager.close()
    # Each byte a part: the first few came within the second, and earned nothing.
    assert re.fullmatch(r"part \d+ of the bundle whole within 1 s .*", str(error.expected))


def test_answers_in_time_are_taken() -> None:
    with slow_manager(lambda _m, _p: False) as url:
        manager = ManagerClient(url)
        manager.fetch_token("c" * 32, "secret")
        assert manager.whoami()["project"] == "acme"
        assert manager.upload_function(BUNDLE).function_id == function_id(BUNDLE)
        assert manager.download_function(function_id(BUNDLE)) == BUNDLE
        manager.close()
