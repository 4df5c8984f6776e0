"""`cleanroom function test` as examples/README.md runs it ("Trying them locally"): two
outputs named with --output-id, in the Worker's sandbox, each receiving the result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cleanroom.insecure.demodata import write_overlap_inputs
from tests.examples.harness import EXAMPLES
from tests.sandbox import require_sandbox


def test_each_output_id_receives_the_result(tmp_path: Path) -> None:
    """h3: `--output-id` was stored under the global --output option's name, so
    every `function test --output-id ID` was refused as "not one of 'text', 'json'"."""
    require_sandbox()
    truth = write_overlap_inputs(tmp_path / "input_1", tmp_path / "input_2", 1000)
    result = subprocess.run(
        [
            sys.executable, "-m", "cleanroom.cli.main", "function", "test",
            str(EXAMPLES / "overlap"),
            "--input", f"input_1={tmp_path / 'input_1'}",
            "--input", f"input_2={tmp_path / 'input_2'}",
            "--output-id", "output_1", "--output-id", "output_2",
            "--param", "k=10", "--out", str(tmp_path / "result"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "CLEANROOM_HOME": str(tmp_path / "home")},
        timeout=300,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for output_id in ("output_1", "output_2"):
        document = json.loads((tmp_path / "result" / output_id / "result.json").read_text())
        assert document["overlap"] == truth.overlap
