"""The one watchdog thread that ends every expired deadline (cleanroom.answers): each
action at its time, in order, whenever it was added; a cancelled one never."""

from __future__ import annotations

import threading
import time

from cleanroom.answers import _WATCHDOG, Deadline, _Watchdog


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
    watchdog.cancel(late)  # after it ran: nothing left to cancel, nothing counted
    assert watchdog._cancelled == 0


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


def test_cancelled_entries_leave_the_heap_long_before_their_time() -> None:
    # Many requests a second, each deadline 120 s away and cancelled at once: the heap
    # kept every one of them for its 120 s.
    watchdog = _Watchdog()
    fired = threading.Event()
    start = time.monotonic()
    kept = []
    for index in range(20 * _Watchdog.COMPACT_FROM):
        entry = watchdog.add(start + 120 + index, lambda: None)
        if index % 10 == 0:
            kept.append(entry)  # one in ten still waiting
        else:
            watchdog.cancel(entry)
    live = len(kept)
    assert len(watchdog._heap) <= max(_Watchdog.COMPACT_FROM, 2 * live) + 1
    assert all(entry in watchdog._heap for entry in kept)
    # What is left is still a heap by expiry: an earlier one comes first, and runs.
    watchdog.add(start + 0.05, fired.set)
    assert fired.wait(30)
    assert watchdog._heap[0] is kept[0]


def test_the_process_watchdog_holds_no_more_than_its_live_deadlines() -> None:
    for _ in range(10 * _Watchdog.COMPACT_FROM):
        with Deadline(120.0):
            pass
    assert len(_WATCHDOG._heap) <= _Watchdog.COMPACT_FROM
