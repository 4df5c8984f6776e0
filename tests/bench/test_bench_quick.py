"""Smoke test of the benchmark suite: ``python -m bench --quick --json`` runs and
writes every figure with its baseline. It reports; timings are never asserted
(docs/benchmarks.md). About one minute on two cores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sandbox import require_sandbox

REPO = Path(__file__).resolve().parents[2]

EXPECTED = {
    "startup_help",
    "startup_version",
    "startup_whoami",
    "session_setup_median",
    "session_setup_p99",
    "ingest_64mib",
    "ingest_64mib_vs_aes",
    "egress_64mib",
    "egress_64mib_vs_aes",
    "memory_client",
    "memory_controller",
    "memory_worker",
    "compute_100k",
    "e2e_100k",
    "cold_start",
    "concurrency_total",
    "concurrency_session_p99",
    "concurrency_worker_memory",
    "bigdata_run_1m",
    "bigdata_e2e_1m",
    "bigdata_controller_rss_1m",
    "bigdata_worker_rss_1m",
}


def _confinable() -> bool:
    require_sandbox()  # skips, or fails under CI=true
    return True


def run_module(*argv: str, timeout: float) -> str:
    """Run ``python -m <argv>`` in the repository; its stdout, once it exited 0."""
    finished = subprocess.run(
        [sys.executable, "-m", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished.stdout


@pytest.mark.timeout(300)
def test_quick_suite_reports_every_figure(tmp_path: Path) -> None:
    if not _confinable():
        pytest.skip("functions cannot be confined here (needs root, unshare, setpriv)")
    output = tmp_path / "bench.json"
    # the default work directory (/tmp): Unix socket paths under pytest's tmp_path can
    # exceed the 107-byte limit
    stdout = run_module("bench", "--quick", "--json", str(output), timeout=290)
    assert "| figure" in stdout
    document = json.loads(output.read_text())
    assert document["mode"] == "quick"
    assert not document["errors"]
    figures = {figure["id"]: figure for figure in document["figures"]}
    assert set(figures) == EXPECTED
    for figure in figures.values():
        assert figure["value"] > 0, figure
        assert figure["unit"]
        assert figure["work_size"]
        if figure["baseline_value"] is not None:
            assert figure["ratio"] == pytest.approx(figure["value"] / figure["baseline_value"])


HOPS = [
    "Controller alone (health)",
    "Controller, token checked (403)",
    "Controller -> Worker (room state)",
    "Controller -> Attester (Phase 1 evidence)",
    "Controller -> Attester + Worker (v2 session, fanned out)",
    "bare relay -> Worker (room state)",
    "Attester direct, sync client (/attest)",
    "Worker direct, sync client (/sessions, v2 handshake)",
    "Worker direct, sync client (/state)",
    "Worker direct, async client (/state)",
    "Attester direct, sync client (/target-info)",
    "Attester direct, async client (/target-info)",
]


@pytest.mark.timeout(120)
def test_hops_reports_every_request_kind() -> None:
    # No function runs here, so no confinement is needed; each request kind checks its
    # answer's status, so a broken route fails the run instead of timing an error.
    stdout = run_module("bench.hops", "--count", "5", timeout=110)
    rows = [line.split("|")[1:3] for line in stdout.splitlines()[2:]]
    assert [label.strip() for label, _ in rows] == HOPS
    assert all(float(value) > 0 for _, value in rows)


@pytest.mark.timeout(120)
def test_refusals_times_every_kind_of_token_request() -> None:
    # Each request's status is checked by the module (200 for the right secret, 401 for
    # each refusal), so a refusal that stopped being one fails the run, not a timing.
    stdout = run_module("bench.refusals", "--count", "2", timeout=110)
    rows = [line.split("|")[1:6] for line in stdout.splitlines()[2:]]
    assert [row[0].strip() for row in rows] == [
        "right secret",
        "wrong secret",
        "unknown client id",
        "disabled client, right secret",
        "unknown compute server id",
    ]
    assert all(float(cell) > 0 for row in rows for cell in row[1:])
