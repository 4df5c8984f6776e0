"""The function runs confined: hostile functions fail or are cut off, and nothing leaks.

These need root, util-linux ``unshare``/``setpriv`` and a system ``python3.11``
(CI has them); elsewhere they skip, and under CI=true they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cleanroom.enclave.errors import RunError
from cleanroom.enclave.runner import (
    Isolation,
    RunResult,
    isolation,
    prepare_workspace,
    run_function,
    runtime_interpreter,
)

SANDBOX_UID = 61_001


@pytest.fixture(scope="module")
def confinement() -> Isolation:
    try:
        return isolation(SANDBOX_UID)
    except RunError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must be able to confine functions: {error}")
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def interpreter() -> str:
    try:
        return runtime_interpreter("python3.11")
    except RunError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(str(error))
        pytest.skip(str(error))


@pytest.fixture
def workspace() -> Iterator[Path]:
    # Under /tmp itself: the sandbox user must be able to reach it.
    path = Path(tempfile.mkdtemp(prefix="cleanroom-run-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(
    workspace: Path,
    confinement: Isolation,
    interpreter: str,
    body: str,
    *,
    memory_mib: int = 256,
    timeout_s: int = 20,
    keep_log: bool = False,
) -> RunResult:
    function = workspace / "function"
    function.mkdir()
    (function / "handler.py").write_text(
        "import os, pathlib\n\ndef run():\n" + textwrap.indent(textwrap.dedent(body), "    ")
    )
    inputs = workspace / "inputs" / "input_1"
    inputs.mkdir(parents=True)
    (inputs / "data.csv").write_text("secret@example.com\n")
    prepare_workspace(workspace, ["output_1"], confinement)
    return run_function(
        interpreter=interpreter,
        function_dir=function,
        handler="handler.run",
        workspace=workspace,
        memory_mib=memory_mib,
        timeout_s=timeout_s,
        confinement=confinement,
        keep_log=keep_log,
    )


def output(workspace: Path) -> str:
    return (workspace / "outputs" / "output_1" / "result.txt").read_text()


def test_function_reads_inputs_and_writes_outputs(
    workspace: Path, confinement: Isolation, interpreter: str
) -> None:
    result = run(workspace, confinement, interpreter, """
        rows = pathlib.Path("inputs/input_1/data.csv").read_text().splitlines()
        out = pathlib.Path(os.environ["WORK_DIR"], "outputs/output_1/result.txt")
        out.write_text(str(len(rows)))
    """)  # fmt: skip
    assert result.status == "succeeded", result
    assert result.isolated
    assert output(workspace) == "1"


def test_no_network(workspace: Path, confinement: Isolation, interpreter: str) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.settimeout(5)
    received: list[object] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            received.append(listener.accept())

    thread = threading.Thread(target=accept)
    thread.start()
    result = run(workspace, confinement, interpreter, f"""
        import socket
        data = pathlib.Path("inputs/input_1/data.csv").read_bytes()
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2).sendall(data)
            verdict = "sent"
        except OSError as error:
            verdict = f"blocked: {{error}}"
        pathlib.Path("outputs/output_1/result.txt").write_text(verdict)
    """)  # fmt: skip
    thread.join()
    listener.close()
    assert result.status == "succeeded"
    assert output(workspace).startswith("blocked")
    assert received == []


def test_inputs_are_read_only(workspace: Path, confinement: Isolation, interpreter: str) -> None:
    result = run(workspace, confinement, interpreter, """
        pathlib.Path("inputs/input_1/data.csv").write_text("overwritten")
    """)  # fmt: skip
    assert result.status == "failed"
    assert (workspace / "inputs/input_1/data.csv").read_text() == "secret@example.com\n"


def test_cannot_write_outside_outputs(
    workspace: Path, confinement: Isolation, interpreter: str
) -> None:
    result = run(workspace, confinement, interpreter, """
        pathlib.Path("stray.txt").write_text("x")
    """)  # fmt: skip
    assert result.status == "failed"
    assert not (workspace / "stray.txt").exists()


def test_other_workspaces_and_worker_files_are_unreadable(
    workspace: Path, confinement: Isolation, interpreter: str
) -> None:
    other = Path(tempfile.mkdtemp(prefix="cleanroom-other-"))  # 0700, like every workspace
    (other / "secret").write_text("another clean room's data")
    try:
        result = run(workspace, confinement, interpreter, f"""
            found = []
            for target in ({str(other / "secret")!r}, "/root/.bashrc", "/etc/shadow"):
                try:
                    found.append(open(target).read())
                except OSError:
                    pass
            pathlib.Path("outputs/output_1/result.txt").write_text(repr(found))
        """)  # fmt: skip
    finally:
        shutil.rmtree(other)
    assert result.status == "succeeded"
    assert output(workspace) == "[]"


def test_infinite_loop_is_cut_off(
    workspace: Path, confinement: Isolation, interpreter: str
) -> None:
    result = run(workspace, confinement, interpreter, "while True:\n    pass\n", timeout_s=2)
    assert result.status in {"timeout", "killed"}
    assert result.seconds < 10


def test_memory_limit(workspace: Path, confinement: Isolation, interpreter: str) -> None:
    result = run(workspace, confinement, interpreter, """
        hoard = bytearray(1 << 30)
        pathlib.Path("outputs/output_1/result.txt").write_text("allocated")
    """, memory_mib=128)  # fmt: skip
    assert result.status in {"failed", "killed"}
    assert not (workspace / "outputs/output_1/result.txt").exists()


def test_fork_bomb_is_contained(workspace: Path, confinement: Isolation, interpreter: str) -> None:
    result = run(workspace, confinement, interpreter, """
        children = 0
        while True:
            try:
                if os.fork() == 0:
                    import time
                    time.sleep(60)
                    os._exit(0)
                children += 1
            except OSError:
                pathlib.Path("outputs/output_1/result.txt").write_text(str(children))
                return
    """, timeout_s=10)  # fmt: skip
    assert result.status == "succeeded"
    assert int(output(workspace)) < 64
    # The whole process group was killed after the run: no sandbox process is left.
    leftover = [pid for pid in os.listdir("/proc") if pid.isdigit() and _uid(pid) == SANDBOX_UID]
    assert leftover == []


def _uid(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def test_output_streams_go_nowhere_unless_asked(
    workspace: Path, confinement: Isolation, interpreter: str
) -> None:
    body = 'print(pathlib.Path("inputs/input_1/data.csv").read_text())\n'
    assert run(workspace, confinement, interpreter, body).log == b""
    second = Path(tempfile.mkdtemp(prefix="cleanroom-run-"))
    try:
        logged = run(second, confinement, interpreter, body, keep_log=True)
    finally:
        shutil.rmtree(second)
    assert b"secret@example.com" in logged.log


def test_without_confinement_the_run_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RunError) as caught:
        isolation(SANDBOX_UID)
    assert caught.value.check == "run-isolation"
    insecure = isolation(SANDBOX_UID, allow_insecure=True)
    assert not insecure.isolated


def test_unknown_runtime_is_refused() -> None:
    with pytest.raises(RunError) as caught:
        runtime_interpreter("python2.7")
    assert caught.value.check == "runtime"
