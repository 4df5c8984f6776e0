"""What every figure shares: the result record, statistics, process memory, the table."""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MIB = 1 << 20
MB = 1_000_000


@dataclass
class Target:
    """A target: on the ratio (``value / baseline``) or on the value itself."""

    op: str  # "<=" or ">="
    limit: float
    on: str = "ratio"  # "ratio" or "value"

    def met(self, value: float, ratio: float | None) -> bool | None:
        subject = ratio if self.on == "ratio" else value
        if subject is None or math.isnan(subject):
            return None
        return subject <= self.limit if self.op == "<=" else subject >= self.limit

    def text(self, unit: str) -> str:
        if self.on == "ratio":
            return f"{self.op} {self.limit:g}x"
        return f"{self.op} {self.limit:g} {unit}"


@dataclass
class Figure:
    """One line of the table and one entry of the JSON."""

    id: str
    figure: str
    metric: str
    value: float
    unit: str
    baseline_value: float | None
    baseline: str
    work: str
    work_size: dict[str, Any]
    target: Target | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline_value is None or self.baseline_value == 0:
            return None
        return self.value / self.baseline_value

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["ratio"] = self.ratio
        document["target"] = (
            None
            if self.target is None
            else {**asdict(self.target), "text": self.target.text(self.unit)}
        )
        document["met"] = None if self.target is None else self.target.met(self.value, self.ratio)
        return document


def percentile(values: Iterable[float], p: float) -> float:
    """The p-th percentile (0..100), nearest-rank: p99 of 200 samples is the 198th."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    listed = list(values)
    return statistics.median(listed) if listed else math.nan


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        self.seconds = math.nan
        return self

    def __exit__(self, *_exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


# ------------------------------------------------------------------ processes


def status_kib(pid: int, key: str) -> int | None:
    """A ``/proc/<pid>/status`` field in KiB (VmRSS, VmHWM), None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from every thread's ``children`` list)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
        except FileNotFoundError:
            continue
        found.extend(int(item) for item in text.split())
    return sorted(set(found))


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time a process has used so far (``/proc/<pid>/stat``), None if
    it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds each of some processes (and this one) used between ``start`` and
    ``stop``: what a figure costs, whatever else shares the machine."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.used: dict[str, float] = {}
        self._before: dict[str, float | None] = {}
        self._own = 0.0

    def start(self) -> None:
        self._before = {label: cpu_seconds(pid) for label, pid in self.pids.items()}
        times = os.times()
        self._own = times.user + times.system

    def stop(self) -> dict[str, float]:
        times = os.times()
        self.used = {"client": times.user + times.system - self._own}
        for label, pid in self.pids.items():
            before, after = self._before.get(label), cpu_seconds(pid)
            if before is not None and after is not None:
                self.used[label] = after - before
        return self.used


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except FileNotFoundError:
        return []


class RssSampler:
    """Samples VmRSS of some processes every ``interval`` s; keeps each one's peak (KiB).

    Used beside VmHWM for processes that lived before the measured transfer (the
    Controller, the baseline relay), whose VmHWM covers their whole life.
    """

    def __init__(self, pids: dict[str, int], interval: float = 0.02) -> None:
        self.pids = pids
        self.interval = interval
        self.peak: dict[str, int] = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for label, pid in self.pids.items():
                rss = status_kib(pid, "VmRSS")
                if rss is not None and rss > self.peak[label]:
                    self.peak[label] = rss
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------- table


def _number(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def table(figures: list[Figure]) -> str:
    """A Markdown table (also readable on a terminal)."""
    header = ["figure", "metric", "work", "value", "baseline", "baseline value", "ratio",
              "target", "met"]  # fmt: skip
    rows = [header]
    for figure in figures:
        met = None if figure.target is None else figure.target.met(figure.value, figure.ratio)
        rows.append(
            [
                figure.figure,
                figure.metric,
                figure.work,
                _number(figure.value, figure.unit),
                figure.baseline,
                _number(figure.baseline_value, figure.unit),
                "-" if figure.ratio is None else f"{figure.ratio:.2f}x",
                "-" if figure.target is None else figure.target.text(figure.unit),
                {None: "-", True: "yes", False: "NO"}[met],
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for number, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if number == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
