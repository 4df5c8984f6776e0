"""A command that waits shows a spinner on a terminal, and nothing on a pipe.

`run --wait` (up to the spec's wall time, an hour by default) and `query` (until its
receipt) said nothing while they waited, where `deploy` had a spinner (found by h22 as
a new user).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import cleanroom.cli.room as room_cli
import cleanroom.cli.sql as sql_cli
from cleanroom.errors import CheckFailed

SHOW = (
    "import time\n"
    "from cleanroom.cli.common import spinner\n"
    "with spinner('waiting for [bold]x[/bold]…'):\n"
    "    time.sleep(0.5)\n"
)


def test_a_spinner_is_shown_on_a_terminal_and_nothing_on_a_pipe(tmp_path: Path) -> None:
    env = {**os.environ, "TERM": "xterm", "CLEANROOM_HOME": str(tmp_path)}
    env.pop("NO_COLOR", None)
    primary, secondary = os.openpty()
    try:
        shown = subprocess.run(
            [sys.executable, "-c", SHOW], stderr=secondary, env=env, timeout=60, check=True
        )
        os.close(secondary)
        secondary = -1
        written = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the terminal's other end is closed and read out
                break
            if not chunk:
                break
            written += chunk
    finally:
        os.close(primary)
        if secondary != -1:
            os.close(secondary)
    assert shown.returncode == 0
    assert "waiting for [bold]x[/bold]…" in written.decode(errors="replace"), written[:400]
    piped = subprocess.run(
        [sys.executable, "-c", SHOW], capture_output=True, env=env, timeout=60, check=True
    )
    assert piped.stderr == b""


class _Spinners:
    """Stands for ``spinner``: which texts were shown, and which one is up now."""

    def __init__(self) -> None:
        self.shown: list[str] = []
        self.up: str | None = None

    @contextmanager
    def __call__(self, text: str) -> Iterator[None]:
        self.shown.append(text)
        self.up = text
        try:
            yield
        finally:
            self.up = None


class _Waiting(CheckFailed):
    pass


def test_run_and_query_wait_under_a_spinner(monkeypatch: pytest.MonkeyPatch) -> None:
    spinners = _Spinners()
    seen: dict[str, str | None] = {}

    class Client:
        def run(self, name: str, wait: bool) -> None:
            seen["run"] = spinners.up
            raise _Waiting("run-state", "a run", "a test", "stop here")

    def query(client: object, room: str, **options: object) -> None:
        seen["query"] = spinners.up
        raise _Waiting("run-state", "a query", "a test", "stop here")

    monkeypatch.setattr(room_cli, "spinner", spinners)
    monkeypatch.setattr(room_cli, "_client", Client)
    monkeypatch.setattr(sql_cli, "spinner", spinners)
    monkeypatch.setattr(sql_cli, "_client", Client)
    monkeypatch.setattr(sql_cli, "run_query", query)
    with pytest.raises(_Waiting):
        room_cli.run("overlap", wait=True)
    with pytest.raises(_Waiting):
        sql_cli.query(
            "segments", None, named="by_region", param=None, epsilon=None, out=None,
            save_receipt=None, as_json=False,
        )  # fmt: skip
    assert seen == {
        "run": "running overlap: waiting for the Worker's signed status…",
        "query": "query on segments: waiting for its receipt…",
    }
    assert spinners.up is None  # gone once the command stopped waiting
