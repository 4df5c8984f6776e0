"""Start-up time of the command line: what a user waits for before anything happens.

``cleanroom --help``, ``--version`` and ``whoami`` (a configured profile, no network)
as the console script runs them, each process timed from spawn to exit, beside the
interpreter doing nothing (``python -c pass``) in the same run. Target: 0.3 s each.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Figure, Target, median, percentile

COMMANDS = {"help": ["--help"], "version": ["--version"], "whoami": ["whoami"]}
TARGET_S = 0.3


def _console_script() -> list[str]:
    script = Path(sys.executable).with_name("cleanroom")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cleanroom.cli.main"]


def _time(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, check=False)  # noqa: S603
        seconds.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr[-500:]!r}")
    return seconds


def startup(root: Path, runs: int) -> list[Figure]:
    """One figure per command: median seconds, against ``python -c pass``."""
    from cleanroom.client.profile import Profile
    from cleanroom.tee.reference import LocalMeasurement

    home = root / "startup-home"
    Profile.create(
        "default",
        home,
        manager_url="http://127.0.0.1:9",
        client_id="bench",
        client_secret="x",  # noqa: S106
        reference=LocalMeasurement(),
    )
    env = {**os.environ, "CLEANROOM_HOME": str(home)}
    env.pop("CLEANROOM_PROFILE", None)
    _time([sys.executable, "-c", "pass"], env, 2)  # warm the file cache for both
    _time([*_console_script(), "--version"], env, 2)
    baseline = _time([sys.executable, "-c", "pass"], env, runs)
    figures = []
    for name, args in COMMANDS.items():
        samples = _time([*_console_script(), *args], env, runs)
        figures.append(
            Figure(
                f"startup_{name}",
                "8 start-up",
                f"cleanroom {' '.join(args)} (median)",
                median(samples),
                "s",
                median(baseline),
                "python -c pass",
                f"{runs} runs, each its own process",
                {"runs": runs},
                Target("<=", TARGET_S, on="value"),
                {"p90 s": percentile(samples, 90), "baseline p90 s": percentile(baseline, 90)},
            )
        )
    return figures
