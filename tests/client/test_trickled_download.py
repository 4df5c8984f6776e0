"""A Controller that sends a download's records a byte now and then, each byte well inside
the client's read timeout: the client gives up at the pace it holds downloads to
(``download-time``), where it waited for as long as the trickle lasted."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import pytest

from cleanroom.client import bounded
from cleanroom.client.compute import ComputeClient
from cleanroom.dpop import ProofKey
from cleanroom.errors import CheckFailed
from cleanroom.protocol.framing import encode_frames
from tests.client.hostile_http import serving

RECORD = b"\x01" * 1000
BYTE_EVERY_S = 0.1  # a record of 1000 bytes: 100 s
GRACE_S = 1.0


@contextmanager
def trickling_controller(at_once: int) -> Iterator[str]:
    """Answers a download with two records: the first ``at_once`` bytes of the body at
    once, then the rest a byte every ``BYTE_EVERY_S`` seconds (until the test ends)."""
    release = threading.Event()
    body = b"".join(encode_frames([RECORD, RECORD]))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/octet-stream")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:at_once])
            self.wfile.flush()
            for index in range(at_once, len(body)):
                if release.wait(BYTE_EVERY_S):
                    return
                try:
                    self.wfile.write(body[index : index + 1])
                    self.wfile.flush()
                except OSError:
                    return

        def log_message(self, *_args: object) -> None:
            pass

    with serving(Handler, release) as url:
        yield url


def download(url: str) -> tuple[object, list[bytes]]:
    """What the download raised (or None), and the records it gave before; given up on
    (as a failure) if still going long after the grace."""
    records: list[bytes] = []
    outcome: list[object] = []

    def run() -> None:
        try:
            with ComputeClient(url, token="t", dpop_key=ProofKey.generate()) as client:
                records.extend(client.download("room", "session"))
            outcome.append(None)
        except CheckFailed as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert outcome, "check download-time: expected an end within 60 s, still waiting"
    return outcome[0], records


@pytest.fixture(autouse=True)
def pace(monkeypatch: pytest.MonkeyPatch) -> None:
    # A record earns next to nothing: each wait has what is left of the grace.
    monkeypatch.setattr(bounded, "DOWNLOAD_GRACE_S", GRACE_S)
    monkeypatch.setattr(bounded, "DOWNLOAD_MIN_BYTES_PER_S", 1e9)


def test_a_first_record_trickled_is_given_up() -> None:
    with trickling_controller(at_once=0) as url:
        error, records = download(url)
    assert isinstance(error, CheckFailed) and error.check == "download-time", error
    assert str(error.actual).startswith("0 records (0 bytes) after "), error.actual
    assert records == []


def test_a_later_record_trickled_is_given_up() -> None:
    first = len(b"".join(encode_frames([RECORD])))
    with trickling_controller(at_once=first + 3) as url:
        error, records = download(url)
    assert isinstance(error, CheckFailed) and error.check == "download-time", error
    assert str(error.actual).startswith(f"1 records ({len(RECORD)} bytes) after "), error.actual
    assert records == [RECORD]


def test_records_at_the_pace_are_all_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bounded, "DOWNLOAD_GRACE_S", 600.0)  # far more than the trickle
    first = len(b"".join(encode_frames([RECORD])))
    with trickling_controller(at_once=first + 3 + len(RECORD) - 5) as url:
        error, records = download(url)
    assert error is None, error
    assert records == [RECORD, RECORD]
