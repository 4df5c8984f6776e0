"""The manager's own periodic work, started by the app's lifespan and stopped with it.

- **Health checks** of every registered compute server, every ``health_interval``
  seconds (:meth:`cleanroom.manager.servers.HealthChecker.check_all`: lost servers,
  lost rooms, deploys a stopped manager left unfinished).
- **Garbage collection** of the function bundles no live room uses, every
  ``gc_interval`` seconds (none when it is 0: then only `cleanroom admin gc`;
  :meth:`cleanroom.manager.functions.Functions.collect_garbage`).

Each task runs at once when started, then every interval, on its own daemon thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from cleanroom.manager.functions import Functions
from cleanroom.manager.servers import HealthChecker
from cleanroom.manager.settings import Settings

HEALTH_CHECKS = "compute server health checks"
GARBAGE_COLLECTION = "function garbage collection"

_log = logging.getLogger("cleanroom.manager.housekeeping")


class Periodic:
    """Runs ``task`` every ``interval`` seconds on a daemon thread, until :meth:`stop`.

    A task that raises is logged and run again at the next interval: one bad
    round (a database hiccup) must not end the health checks for good.
    """

    def __init__(self, name: str, interval: float, task: Callable[[], object]) -> None:
        self.name = name
        self.interval = interval
        self.task = task
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Periodic:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.task()
            except Exception:  # noqa: BLE001 - logged; the next round tries again
                _log.exception("%s failed; trying again in %s s", self.name, self.interval)
            self._stopping.wait(self.interval)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)


class Housekeeping:
    """The manager's periodic tasks (see the module docstring): :meth:`start` them
    once, :meth:`stop` them at the end."""

    def __init__(self, settings: Settings, health: HealthChecker, functions: Functions) -> None:
        self.settings = settings
        self.health = health
        self.functions = functions
        self.tasks: list[Periodic] = []

    def start(self) -> None:
        """Start every task the settings ask for."""
        if self.tasks:
            raise RuntimeError("the manager's housekeeping is running already")
        self.tasks.append(
            Periodic(HEALTH_CHECKS, self.settings.health_interval, self.health.check_all)
        )
        if self.settings.gc_interval > 0:
            self.tasks.append(
                Periodic(GARBAGE_COLLECTION, self.settings.gc_interval, self.collect_garbage)
            )
        for task in self.tasks:
            task.start()

    def collect_garbage(self) -> None:
        """One round of garbage collection, logged when it deleted something."""
        garbage = self.functions.collect_garbage()
        if garbage.functions or garbage.stray_files:
            _log.info(
                "deleted %d unused function bundles and %d stray files",
                len(garbage.functions),
                len(garbage.stray_files),
            )

    def stop(self) -> None:
        """Stop every task and wait for a round under way to end."""
        for task in self.tasks:
            task.stop()
        self.tasks.clear()

    @property
    def running(self) -> list[str]:
        """The names of the tasks running now."""
        return [task.name for task in self.tasks if task.running]
