"""The one watchdog thread that ends every expired deadline (cleanroom.answers): each
action at its time, in order, whenever it was added; a cancelled one never."""

from __future__ import annotations

import threading
import time

from cleanroom.answers import Deadline, _Watchdog


def test_each_action_runs_at_its_time_in_order_and_a_cancelled_one_never() -> None:
    watchdog = _Watchdog()
    fired: list[str] = []
    done = threading.Event()
    start = time.monotonic()
    late = watchdog.add(start + 0.6, lambda: (fired.append("late"), done.set()))
    cancelled = watchdog.add(start + 0.2, lambda: fired.append("cancelled"))
    watchdog.add(start + 0.1, lambda: fired.append("early"))  # earlier than the thread waits for
    watchdog.cancel(cancelled)
    assert done.wait(30), fired
    assert fired == ["early", "late"]
    assert late[2] is not None


def test_a_deadline_expires_once_started_and_not_after_its_end() -> None:
    ended = Deadline(0.05)
    with ended:
        pass
    waited = Deadline(0.05)
    with waited:
        limit = time.monotonic() + 30
        while not waited.expired and time.monotonic() < limit:
            time.sleep(0.01)
    time.sleep(0.2)
    assert waited.expired
    assert not ended.expired
