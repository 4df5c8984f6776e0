"""An ASGI app served as ``cleanroom.cli.serving`` serves the manager and the Controller,
in a thread of the test, on a free loopback port."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from cleanroom.cli.serving import ServingLimits, server


@contextlib.contextmanager
def serving(
    app: Any, limits: ServingLimits | None = None, proxies: tuple[str, ...] = ()
) -> Iterator[str]:
    """The app's base URL while it is served (with ``limits``, else the defaults;
    believing X-Forwarded-For from ``proxies`` only)."""
    running = server(app, host="127.0.0.1", port=0, what="test", limits=limits, proxies=proxies)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{running.servers[0].sockets[0].getsockname()[1]}"
    finally:
        running.should_exit = True
        thread.join(10)
