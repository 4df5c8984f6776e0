"""The manager's housekeeping as a component: which tasks it starts, that each runs at
once and then every interval, that a failing round does not end it, and that stop
ends them all. tests/manager/test_functions.py and test_servers.py run it inside a
real manager, from the app's lifespan."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cleanroom.manager import Settings
from cleanroom.manager.housekeeping import GARBAGE_COLLECTION, HEALTH_CHECKS, Periodic
from cleanroom.manager.services import Services


def _until(condition: threading.Event, seconds: float = 30) -> bool:
    return condition.wait(seconds)


def test_a_periodic_task_runs_at_once_then_every_interval_until_stopped() -> None:
    rounds: list[float] = []
    third = threading.Event()

    def task() -> None:
        rounds.append(time.monotonic())
        if len(rounds) == 3:
            third.set()

    periodic = Periodic("counting", 0.05, task).start()
    try:
        assert _until(third)
    finally:
        periodic.stop()
    assert not periodic.running
    stopped_at = len(rounds)
    time.sleep(0.2)
    assert len(rounds) == stopped_at  # nothing runs after stop
    assert all(later - earlier >= 0.04 for earlier, later in itertools.pairwise(rounds))


def test_a_round_that_fails_does_not_end_the_task(caplog: pytest.LogCaptureFixture) -> None:
    rounds: list[int] = []
    again = threading.Event()

    def task() -> None:
        rounds.append(1)
        if len(rounds) == 1:
            raise RuntimeError("the database went away for a moment")
        again.set()

    periodic = Periodic("flaky", 0.05, task).start()
    try:
        assert _until(again)
    finally:
        periodic.stop()
    assert "flaky failed; trying again in 0.05 s" in caplog.text


@pytest.fixture
def build_services(tmp_path: Path) -> Iterator[Callable[..., Services]]:
    """A manager's services (SQLite) with settings overrides, without an app."""
    built: list[Services] = []

    def build(**overrides: Any) -> Services:
        settings = Settings(
            data_dir=tmp_path / f"manager-{len(built)}",
            public_url="http://127.0.0.1:9",
            **overrides,
        )
        built.append(Services.build(settings))
        return built[-1]

    yield build
    for services in built:
        services.housekeeping.stop()
        services.health.close()
        services.sessions.kw["bind"].dispose()


def test_housekeeping_runs_health_checks_and_garbage_collection(
    build_services: Callable[..., Services],
) -> None:
    housekeeping = build_services(health_interval=60, gc_interval=60).housekeeping
    assert housekeeping.running == []
    housekeeping.start()
    assert sorted(housekeeping.running) == sorted([HEALTH_CHECKS, GARBAGE_COLLECTION])
    with pytest.raises(RuntimeError, match="running already"):
        housekeeping.start()
    housekeeping.stop()
    assert housekeeping.running == []
    names = {thread.name for thread in threading.enumerate()}
    assert not names & {HEALTH_CHECKS, GARBAGE_COLLECTION}


def test_housekeeping_collects_no_garbage_when_its_interval_is_zero(
    build_services: Callable[..., Services],
) -> None:
    housekeeping = build_services(health_interval=60, gc_interval=0).housekeeping
    housekeeping.start()
    assert housekeeping.running == [HEALTH_CHECKS]
