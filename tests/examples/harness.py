"""Run an example function the way the Worker does, on the system interpreter.

The function directory is packed and unpacked as a bundle (as the Worker receives
it), the working directory holds ``inputs/<id>/``, empty ``outputs/<id>/`` and
``parameters.json``, and the handler is called through the Worker's own bootstrap
by ``python3.11 -I`` with a minimal environment: no third-party packages, no
``PYTHON*`` variables. What this does not reproduce is the confinement (network
namespace, sandbox user, rlimits), which tests/enclave/test_runner.py covers.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cleanroom.enclave.runner import BOOTSTRAP
from cleanroom.protocol.bundle import pack, unpack

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "functions"
INTERPRETER = Path("/usr/bin/python3.11")
HANDLER = "handler.run"


def require_interpreter() -> None:
    """Skip without the system interpreter the Worker uses; under CI=true, fail."""
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


def run_example(example: str, work: Path) -> Run:
    """Run ``examples/functions/<example>`` in ``work`` as the Worker would."""
    require_interpreter()
    function_dir = work.parent / "function"
    unpack(pack(EXAMPLES / example), function_dir)
    for path in (work / "inputs").rglob("*"):
        path.chmod(0o555 if path.is_dir() else 0o444)
    completed = subprocess.run(
        [str(INTERPRETER), "-I", "-c", BOOTSTRAP, str(function_dir), HANDLER],
        cwd=work,
        env={"WORK_DIR": str(work), "HOME": str(work), "PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Run(completed.returncode, completed.stdout, completed.stderr, work)


def csv_text(header: str, rows: list[str]) -> str:
    return "\n".join([header, *rows]) + "\n"
