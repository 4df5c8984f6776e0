"""A test that needs the recorded vectors fails, loudly, when they are missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_missing_vectors_fail_the_run_and_say_where(tmp_path: Path) -> None:
    missing = tmp_path / "no-vectors"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "tests/sgx/test_structs.py::test_intel_sample_quote_has_no_pck_chain"],
        cwd=ROOT,
        env={**os.environ, "CLEANROOM_TEST_VECTORS": str(missing)},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"recorded vectors expected at {missing}, found nothing there" in result.stdout
    assert "1 error" in result.stdout and "skipped" not in result.stdout  # an error, not a skip
