"""A bounded load test on loopback (it stops by itself): 20 clean rooms with two
parties each, deployed, attested, fed, run and read at once; then 1,000 sessions
(Phase 1 + Phase 2) against one Worker. Every output must be correct; the report
gives throughput, p50/p99 latencies and peak memory per process."""

from __future__ import annotations

import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cleanroom.insecure.localstack import LocalStack
from cleanroom.protocol.spec import DownloadPurpose
from tests.e2e.conftest import User, make_user
from tests.reliability import faults, flow
from tests.reliability.report import record

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROOMS = 20
SESSIONS = 1000
SESSION_THREADS = 8
T = TypeVar("T")


class Latencies:
    def __init__(self) -> None:
        self._samples: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()

    def time(self, operation: str, call: Callable[[], T]) -> T:
        started = time.monotonic()
        result = call()
        with self._lock:
            self._samples[operation].append(time.monotonic() - started)
        return result

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for operation, samples in sorted(self._samples.items()):
            ordered = sorted(samples)
            out[operation] = {
                "n": len(ordered),
                "p50 s": round(statistics.median(ordered), 3),
                "p99 s": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
            }
        return out


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def memory(stack: LocalStack, rooms: list[str]) -> dict[str, Any]:
    workers = [peak_rss_mib(faults.worker_pid(stack, name)) for name in rooms]
    return {
        "manager MiB": peak_rss_mib(faults.server(stack, faults.MANAGER).process.pid),
        "Controller MiB": peak_rss_mib(faults.server(stack, faults.COMPUTE).process.pid),
        "Attester MiB": peak_rss_mib(faults.attester_pid(stack)),
        "Worker MiB (max)": max(workers),
        "Worker MiB (median)": statistics.median(workers),
    }


def test_twenty_rooms_at_once_then_a_thousand_sessions(
    stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("load")
    pairs = [
        (
            make_user(stack, tmp, f"load-a{i}", "acme"),
            make_user(stack, tmp, f"load-b{i}", "globex"),
        )
        for i in range(ROOMS)
    ]
    latencies = Latencies()

    def one_room(index: int) -> Any:
        alice, bob = pairs[index]
        name = f"load-{index}"
        work = tmp / name
        latencies.time("deploy+approve", lambda: flow.deploy(alice, bob, work, name))
        latencies.time("attest", lambda: bob.client.attest(name))
        latencies.time("upload x2", lambda: flow.feed(alice, bob, work, name))
        latencies.time("run", lambda: flow.run(alice, name))
        results = [
            latencies.time("download", lambda u=u, o=o: flow.overlap(u, name, work, o))
            for u, o in ((alice, "output_1"), (bob, "output_2"))
        ]
        return results

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=ROOMS) as pool:
        results = list(pool.map(one_room, range(ROOMS)))
    rooms_seconds = time.monotonic() - started
    assert results == [[{"overlap": 1}, {"overlap": 1}]] * ROOMS
    names = [f"load-{i}" for i in range(ROOMS)]
    rooms_memory = memory(stack, names)

    # 1,000 sessions against one Worker: each one round trip (protocol v2: a quote and
    # the hybrid handshake, fanned out by the Controller).
    alice: User = pairs[0][0]
    room, spec = alice.client.approved("load-0")
    purpose = DownloadPurpose(op="download", output="output_1")

    def one_session(_index: int) -> str:
        with alice.client._compute(room) as compute:
            _attestation, keys = latencies.time(
                "session: attest and handshake",
                lambda: alice.client._open(compute, room, spec, purpose),
            )
        return keys.session_id

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=SESSION_THREADS) as pool:
        sessions = list(pool.map(one_session, range(SESSIONS)))
    sessions_seconds = time.monotonic() - started
    assert len(set(sessions)) == SESSIONS
    # The Worker still serves its data plane correctly after them.
    assert flow.overlap(alice, "load-0", tmp / "after", "output_1") == {"overlap": 1}
    session_memory = memory(stack, names)

    summary = latencies.summary()
    record("load", f"{ROOMS} rooms x 2 parties at once", {
        "wall s": round(rooms_seconds, 1),
        "rooms per minute": round(ROOMS / rooms_seconds * 60, 1),
        "latency": {k: v for k, v in summary.items() if not k.startswith("session")},
        "peak memory": rooms_memory,
    })  # fmt: skip
    record("load", f"{SESSIONS} sessions against one Worker", {
        "wall s": round(sessions_seconds, 1),
        "sessions per second": round(SESSIONS / sessions_seconds, 1),
        "latency": {k: v for k, v in summary.items() if k.startswith("session")},
        "peak memory": session_memory,
    })  # fmt: skip
    for i in range(ROOMS):
        pairs[i][0].client.delete(f"load-{i}")
