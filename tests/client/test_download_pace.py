"""The pace a download must keep (``download-time``): what the client waits for the
Controller is at most a grace and a second for every so many bytes that came, however
many records they came in (a slow Controller: tests/adversarial/test_slow_controller.py)."""

from __future__ import annotations

import pytest

from cleanroom.client import bounded
from cleanroom.client.errors import UntrustedAnswerError

MIB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    monkeypatch.setattr(bounded, "DOWNLOAD_GRACE_S", 120.0)
    monkeypatch.setattr(bounded, "DOWNLOAD_MIN_BYTES_PER_S", 8192.0)
    return Clock()


def test_the_first_record_has_the_grace_and_each_next_what_came_before_it_earned(
    clock: Clock,
) -> None:
    pace = bounded.Pace("record", "the download", "compute server", clock)
    assert pace.wait() == 120.0  # the answer's head
    clock.now += 20
    pace.came(None)
    assert pace.wait() == 100.0  # the first record: the head took 20 s of the grace
    clock.now += 100
    pace.came(b"x" * MIB)
    assert pace.wait() == 128.0  # 120 + 1 MiB / 8 KiB/s - 120 waited


def test_the_client_s_own_time_between_records_does_not_count(clock: Clock) -> None:
    pace = bounded.Pace("record", "the download", "compute server", clock)
    pace.wait()
    clock.now += 10
    pace.came(b"x" * 8192)
    clock.now += 1000  # writing the record to a slow disk
    assert pace.wait() == 111.0


def test_many_small_records_earn_no_more_than_their_bytes(clock: Clock) -> None:
    # A Controller that sent each of 10,000 small records just inside a deadline of its
    # own would hold the download for 10,000 such deadlines: here they earn their bytes.
    pace = bounded.Pace("record", "the download", "compute server", clock)
    for _ in range(10_000):
        pace.wait()
        clock.now += 0.01
        pace.came(b"x" * 100)
    assert pace.wait() == pytest.approx(120.0 + 1_000_000 / 8192 - 100.0)


def test_too_slow_names_the_record_expected_and_what_came(clock: Clock) -> None:
    pace = bounded.Pace("record", "the download", "compute server", clock)
    pace.wait()
    pace.came(b"x" * 8192)
    error = pace.too_slow()
    assert isinstance(error, UntrustedAnswerError)
    assert error.check == "download-time"
    assert str(error.expected).startswith("record 2 of the download whole within 121 s")
    assert error.actual == "1 records (8192 bytes) after 121 s"
