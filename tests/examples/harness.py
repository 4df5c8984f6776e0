"""Run an example function the way the Worker does: in the Worker's own sandbox.

The function directory is packed and unpacked as a bundle (as the Worker receives
it) and run by ``cleanroom function test``'s machinery: bubblewrap as a sandbox uid,
the system ``python3.11 -I``, ``/work/inputs/<id>/``, ``/work/outputs/<id>/`` and
``/work/parameters.json``, the limits. Only the TEE is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cleanroom.enclave.supervisor import Limits
from cleanroom.enclave.trial import run_trial
from tests.sandbox import require_sandbox

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "functions"
INTERPRETER = Path("/usr/bin/python3.11")
HANDLER = "handler.run"


def require_interpreter() -> None:
    """Skip without the sandbox and the system interpreter the Worker uses; under
    CI=true, fail."""
    require_sandbox()
    if not INTERPRETER.is_file():
        message = f"{INTERPRETER} (the Worker's runtime) is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def workspace(
    root: Path,
    inputs: dict[str, dict[str, str]],
    *,
    outputs: tuple[str, ...] = ("output_1", "output_2"),
    parameters: dict[str, Any] | None = None,
) -> Path:
    """A working directory: ``inputs`` maps input id -> file name -> text."""
    work = root / "work"
    for input_id, files in inputs.items():
        directory = work / "inputs" / input_id
        directory.mkdir(parents=True)
        for name, text in files.items():
            (directory / name).write_text(text, encoding="utf-8")
    (work / "inputs").mkdir(parents=True, exist_ok=True)
    for output_id in outputs:
        (work / "outputs" / output_id).mkdir(parents=True)
    (work / "parameters.json").write_text(json.dumps(parameters or {}), encoding="utf-8")
    return work


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    work: Path

    def output(self, output_id: str, name: str) -> str:
        return (self.work / "outputs" / output_id / name).read_text(encoding="utf-8")

    def json(self, output_id: str, name: str) -> Any:
        return json.loads(self.output(output_id, name))

    def files(self, output_id: str) -> list[str]:
        return sorted(p.name for p in (self.work / "outputs" / output_id).iterdir())


def run_example(example: str | Path, work: Path, *, runtime: str = "python3.11") -> Run:
    """Run ``examples/functions/<example>`` (or the function directory ``example``) on
    ``work``'s inputs and parameters as the Worker would; outputs land in ``work/outputs/``."""
    require_interpreter()
    inputs = {d.name: d for d in sorted((work / "inputs").iterdir())}
    outputs = sorted(d.name for d in (work / "outputs").iterdir())
    trial = run_trial(
        EXAMPLES / example if isinstance(example, str) else example,
        handler=HANDLER,
        runtime=runtime,
        inputs=inputs,
        outputs=outputs,
        parameters=json.loads((work / "parameters.json").read_text()),
        limits=Limits(memory_mib=1024, timeout_s=120, cpu_s=240, processes=64, disk_mib=256),
        destination=work / "outputs",
    )
    log = trial.result.log.decode(errors="replace")
    code = trial.result.exit_code if trial.result.exit_code is not None else -1
    return Run(code, log, log, work)


def csv_text(header: str, rows: list[str]) -> str:
    return "\n".join([header, *rows]) + "\n"


def vendored(example: str, destination: Path, *requirements: str) -> Path:
    """A copy of ``examples/functions/<example>`` with ``requirements`` vendored into its
    ``packages/`` as its author would (manylinux wheels for the runtime's Python)."""
    function = destination / example
    shutil.copytree(EXAMPLES / example, function)
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--only-binary=:all:", "--python-version", "3.11", "--target",
         str(function / "packages"), *requirements],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if completed.returncode != 0:
        message = f"cannot vendor {requirements}: {completed.stderr.strip()[-500:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return function
