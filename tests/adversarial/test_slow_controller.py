"""A Controller that answers a byte now and then (``answer-time``).

httpx's timeouts are per read, so a Controller that sent one byte of its answer every
half second (well inside the 60 s read timeout) held a command for as long as it
liked: an upload, a status, a run waiting for its end. Each JSON answer must now be
whole within a deadline (``cleanroom.client.bounded.ANSWER_DEADLINE_S``), on a new
connection as on one kept alive from the request before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cleanroom.client import bounded
from cleanroom.errors import CheckFailed
from tests.adversarial.proxy import Message, TamperingProxy
from tests.adversarial.test_hostile_controller import room  # noqa: F401
from tests.e2e.conftest import User
from tests.e2e.helpers import write

DEADLINE_S = 3.0
WAIT_S = 60.0  # far past the deadline, far short of the trickled answer (minutes)


def slow(suffix: str) -> Callable[[Message], float | None]:
    """A byte every 0.5 s of each answer to a path ending in ``suffix``."""
    return lambda message: 0.5 if message.path.endswith(suffix) else None


def within(action: Callable[[], object], seconds: float) -> tuple[object, float]:
    """``action``'s result (or the exception it raised) and how long it took; fails if
    it took longer than ``seconds``."""
    outcome: list[object] = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: outcome.append(_call(action)), daemon=True)
    thread.start()
    thread.join(seconds)
    took = time.monotonic() - started
    assert outcome, f"check answer-time: expected an end within {seconds} s, still waiting"
    return outcome[0], took


def _call(action: Callable[[], object]) -> object:
    try:
        return action()
    except Exception as error:  # noqa: BLE001 - the caller looks at it
        return error


def test_a_trickled_session_answer_is_given_up_at_the_deadline(
    alice: User,
    tmp_path: Path,
    proxy: TamperingProxy,
    room: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bounded, "ANSWER_DEADLINE_S", DEADLINE_S)
    proxy.slow = slow("/attested-sessions")
    source = write(tmp_path / "a", "a@x\n")
    error, took = within(lambda: alice.client.upload(room, "input_1", source), WAIT_S)
    assert isinstance(error, CheckFailed) and error.check == "answer-time", error
    assert DEADLINE_S <= took < DEADLINE_S + 10, took
    assert proxy.paths("/upload") == []


def test_a_trickled_status_on_a_kept_alive_connection_is_given_up_at_the_deadline(
    alice: User,
    proxy: TamperingProxy,
    room: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The evidence comes at once, on the connection the status request then reuses.
    monkeypatch.setattr(bounded, "ANSWER_DEADLINE_S", DEADLINE_S)
    proxy.slow = slow("/status")
    status, took = within(lambda: alice.client.status(room), WAIT_S)
    assert not isinstance(status, BaseException), status
    assert status.worker is None  # type: ignore[attr-defined]
    assert "answer-time" in status.unverified  # type: ignore[attr-defined]
    assert took < DEADLINE_S + 10, took
    assert len(proxy.paths("/attestation")) == 1
