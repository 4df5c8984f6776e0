"""A trial run of a function on its author's machine: the Worker's sandbox, no TEE.

``cleanroom function test`` packs the function directory exactly as an upload would,
unpacks the bundle as the Worker does, stages the inputs and parameters, and runs
the handler through the Worker's own runner: bubblewrap, the same runtime, the same
``/work`` layout and limits, as a sandbox uid from the host's registry (so it needs
root, as a compute server does).
Nothing here is attested or encrypted: it is for iterating on code with test data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cleanroom.enclave.errors import RunError
from cleanroom.enclave.runner import RunResult, installed_runtime, run_function, sandbox
from cleanroom.enclave.store import check_object_name
from cleanroom.enclave.supervisor import Limits
from cleanroom.protocol.bundle import pack, unpack
from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.spec import Scalar
from cleanroom.sandbox_ids import SandboxIds


@dataclass(frozen=True)
class TrialOutput:
    name: str  # <output id>/<path>
    size: int


@dataclass(frozen=True)
class Trial:
    result: RunResult
    outputs: list[TrialOutput]
    directory: Path  # where the outputs were written


@contextlib.contextmanager
def _identity(root: Path) -> Iterator[int]:
    if os.geteuid() != 0:
        raise RunError(
            "run-isolation", "root, to give the function a uid of its own",
            f"uid {os.geteuid()}", "run it as root (sudo), as a compute server runs",
        )  # fmt: skip
    ids = SandboxIds()
    uid = ids.allocate(root)
    try:
        yield uid
    finally:
        ids.release(uid, root)


def _stage_input(source: Path, target: Path) -> None:
    """An input is a file or a directory; it is copied, never linked."""
    if source.is_symlink() or not source.exists():
        raise RunError("input", "an existing file or directory", str(source), "no such input")
    target.mkdir(parents=True)
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True, symlinks=False)
    else:
        shutil.copyfile(source, target / source.name)


def run_trial(
    function_dir: Path,
    *,
    handler: str,
    runtime: str,
    inputs: Mapping[str, Path],
    outputs: Sequence[str],
    parameters: Mapping[str, Scalar],
    limits: Limits,
    destination: Path,
) -> Trial:
    """Run the function in ``function_dir`` on ``inputs``; outputs go to ``destination``."""
    bundle = pack(function_dir)  # the same refusals as an upload
    destination.mkdir(parents=True, exist_ok=True)
    written: list[TrialOutput] = []

    def receive(name: str, stream: IO[bytes], size: int) -> None:
        relative = check_object_name(name)  # <output id>/<relative path>, nothing else
        target = destination.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("xb") as handle:
            shutil.copyfileobj(stream, handle)
        written.append(TrialOutput(name, size))

    with tempfile.TemporaryDirectory(prefix="cleanroom-trial-") as temporary:
        root = Path(temporary)
        workspace = root / "run"
        workspace.mkdir(mode=0o700)
        unpack(bundle, workspace / "function")
        (workspace / "inputs").mkdir()
        for input_id, source in sorted(inputs.items()):
            _stage_input(source, workspace / "inputs" / input_id)
        (workspace / "parameters.json").write_bytes(canonical(dict(parameters)))
        with _identity(root) as uid:
            result = run_function(
                sandbox=sandbox(uid, shared_host=False),  # the author's own machine
                runtime=installed_runtime(runtime),
                workspace=workspace,
                outputs=list(outputs),
                handler=handler,
                limits=limits,
                receive=receive,
                keep_log=True,
            )
    return Trial(result, written, destination)
