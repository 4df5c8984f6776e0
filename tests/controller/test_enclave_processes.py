"""The Attester and a Worker as real processes, admission relayed by a Controller.

The relay is the Controller's own code (:mod:`cleanroom.controller.enclaves`); the
tampering tests relay by hand and change exactly one thing, as a hostile
Controller would, and expect the enclave to name the check that caught it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cleanroom.controller.enclaves import (
    EnclaveHost,
    EnclaveProcess,
    EnclaveProcessError,
    enclave_processes,
)
from cleanroom.protocol.bundle import function_id, pack
from cleanroom.protocol.encoding import b64u, from_b64u
from cleanroom.sandbox_ids import FIRST_UID
from tests.protocol.fixtures import SPEC_DOCUMENT

T = TypeVar("T")


def _spec_and_bundle(tmp_path: Path, name: str = "overlap") -> tuple[dict[str, Any], bytes]:
    source = tmp_path / f"function-{name}"
    source.mkdir()
    (source / "handler.py").write_text(f"NAME = {name!r}\n\ndef run():\n    pass\n")
    bundle = pack(source)
    return {**SPEC_DOCUMENT, "name": name, "function": function_id(bundle)}, bundle


def _fetching(bundle: bytes) -> Callable[[Path], Awaitable[None]]:
    """What the Controller's deploy does with the manager's answer: write it down."""

    async def fetch(destination: Path) -> None:
        destination.write_bytes(bundle)

    return fetch


def _with_host(tmp_path: Path, body: Callable[[EnclaveHost], Awaitable[T]]) -> T:
    async def main() -> T:
        host = EnclaveHost(tmp_path / "compute")
        await host.start()
        try:
            return await body(host)
        finally:
            await host.close()

    return asyncio.run(main())


def _worker(host: EnclaveHost, directory: Path, spec: dict[str, Any], bundle: bytes) -> Any:
    directory.mkdir(parents=True)
    (directory / "spec.json").write_text(json.dumps(spec))
    (directory / "function.tar").write_bytes(bundle)
    socket = host._sockets / f"{directory.name}.sock"
    return EnclaveProcess.start(
        "Worker",
        socket,
        [
            "-m", "cleanroom.enclave.worker_service", "--socket", str(socket),
            "--platform-dir", str(host.platform_dir), "--room-dir", str(directory),
            "--spec", str(directory / "spec.json"), "--bundle", str(directory / "function.tar"),
            "--sandbox-uid", str(FIRST_UID - 1),  # runs no function
        ],
        directory / "worker.log",
    )  # fmt: skip


def test_deploy_admits_the_worker_and_the_attester_vouches_for_it(tmp_path: Path) -> None:
    spec, bundle = _spec_and_bundle(tmp_path)

    async def body(host: EnclaveHost) -> tuple[Any, Any]:
        room = await host.deploy("overlap", json.dumps(spec).encode(), _fetching(bundle))
        evidence = await host.attest("overlap", b64u(bytes(32)))
        state = await room.worker.call("GET", "/state")
        return evidence, state

    evidence, state = _with_host(tmp_path, body)
    assert state["admitted"] is True and state["state"] == "collecting"
    assert evidence["claims"]["worker"]["worker_id"] == state["worker_id"]
    assert evidence["claims"]["nonce"] == b64u(bytes(32))
    assert from_b64u(evidence["quote"], "quote")[:2] == b"\x03\x00"  # quote v3


def test_a_delete_while_the_bundle_is_fetched_ends_the_deploy(tmp_path: Path) -> None:
    # A manager that gave up waiting for a deploy (a big bundle, fetched slowly) deletes
    # the room. The Controller answered 404 (no such room yet) and went on: the Worker
    # started, past the manager's quota and capacity (found by the manager's red team).
    spec, bundle = _spec_and_bundle(tmp_path)

    async def body(host: EnclaveHost) -> tuple[int, EnclaveProcessError, bool]:
        fetching = asyncio.Event()

        async def slow_fetch(destination: Path) -> None:
            destination.write_bytes(bundle[:512])
            fetching.set()
            await asyncio.sleep(60)  # the rest of a big bundle
            destination.write_bytes(bundle)

        deploy = asyncio.create_task(host.deploy("overlap", json.dumps(spec).encode(), slow_fetch))
        await asyncio.wait_for(fetching.wait(), 10)
        with pytest.raises(EnclaveProcessError) as asked:
            host.room("overlap")  # not 404: the manager must not take it for absent
        await asyncio.wait_for(host.delete("overlap"), 10)
        with pytest.raises(EnclaveProcessError) as ended:
            await asyncio.wait_for(deploy, 10)
        return asked.value.status, ended.value, (host.data_dir / "rooms" / "overlap").exists()

    status, ended, directory_left = _with_host(tmp_path, body)
    assert status == 409
    assert ended.status == 409 and "deleted while it was being deployed" in str(ended)
    assert not directory_left


def test_a_swapped_bundle_is_refused_by_the_worker_itself(tmp_path: Path) -> None:
    spec, _bundle = _spec_and_bundle(tmp_path)
    _other_spec, other_bundle = _spec_and_bundle(tmp_path, "other")

    async def body(host: EnclaveHost) -> None:
        await host.deploy("overlap", json.dumps(spec).encode(), _fetching(other_bundle))

    with pytest.raises(EnclaveProcessError) as caught:
        _with_host(tmp_path, body)
    assert caught.value.status == 422
    assert caught.value.body is not None and caught.value.body["check"] == "function-id"


async def _relay_admission(
    host: EnclaveHost, worker: EnclaveProcess, tamper: str
) -> tuple[int, dict[str, Any]]:
    """Relay admission as the Controller does, changing one thing; the refusal."""
    assert host.attester is not None
    await worker.wait_ready("/state", worker.socket.parent / "unused.log")
    target = await host.attester.call("GET", "/target-info")
    request = await worker.call("POST", "/admission/request", target)
    if tamper == "report":
        report = bytearray(from_b64u(request["report"], "report"))
        report[64 + 320] ^= 1  # one bit of REPORTDATA
        request["report"] = b64u(bytes(report))
    elif tamper == "claims":
        request["claims"]["work_id"] = b64u(bytes(32))
    try:
        admitted = await host.attester.call("POST", "/admit", request)
    except EnclaveProcessError as error:
        return error.status, error.body
    answer = bytearray(from_b64u(admitted["report"], "report"))
    if tamper == "answer":
        answer[64 + 320] ^= 1
    try:
        await worker.call("POST", "/admission/complete", {"report": b64u(bytes(answer))})
    except EnclaveProcessError as error:
        return error.status, error.body
    return 200, await worker.call("GET", "/state")


@pytest.mark.parametrize(
    ("tamper", "check"),
    [("report", "report-mac"), ("claims", "worker-report-data"), ("answer", "report-mac")],
)
def test_tampered_admission_is_refused(tmp_path: Path, tamper: str, check: str) -> None:
    spec, bundle = _spec_and_bundle(tmp_path)

    async def body(host: EnclaveHost) -> tuple[int, dict[str, Any]]:
        worker = _worker(host, tmp_path / "room", spec, bundle)
        try:
            return await _relay_admission(host, worker, tamper)
        finally:
            await worker.stop()

    status, problem = _with_host(tmp_path, body)
    assert status == 400
    assert problem["check"] == check


def test_an_unadmitted_worker_serves_no_session(tmp_path: Path) -> None:
    spec, bundle = _spec_and_bundle(tmp_path)

    async def body(host: EnclaveHost) -> Any:
        worker = _worker(host, tmp_path / "room", spec, bundle)
        try:
            await worker.wait_ready("/state", tmp_path / "room" / "worker.log")
            body = {"init": {}, "signature": ""}
            return await worker.client.request("POST", "/sessions", json_body=body)
        finally:
            await worker.stop()

    response = _with_host(tmp_path, body)
    assert response.status == 400
    assert response.json()["check"] == "admitted"


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> Awaitable[bool]:
    async def wait() -> bool:
        deadline = asyncio.get_running_loop().time() + seconds
        while not condition():
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    return wait()


def _kill_attester(host: EnclaveHost) -> int:
    assert host.attester is not None
    pid = host.attester.process.pid
    os.killpg(pid, signal.SIGKILL)
    return pid


def test_a_dead_attester_is_restarted_without_waiting_for_a_request(tmp_path: Path) -> None:
    async def body(host: EnclaveHost) -> None:
        old = _kill_attester(host)

        def restarted() -> bool:
            attester = host.attester
            return attester is not None and attester.process.pid != old and host.attester_usable

        assert await _wait_for(restarted), "the watch did not restart the Attester"
        assert host.attester is not None
        assert "target_info" in await host.attester.call("GET", "/target-info")  # it serves

    _with_host(tmp_path, body)


def test_an_attester_that_cannot_start_again_makes_the_host_degraded(tmp_path: Path) -> None:
    async def body(host: EnclaveHost) -> None:
        platform = host.platform_dir / "platform.json"
        intact = platform.read_bytes()
        assert host.attester_usable
        platform.write_text("{")  # a new Attester cannot load the platform
        _kill_attester(host)
        assert await _wait_for(lambda: host.attester_failure is not None)
        assert not host.attester_usable
        assert "Attester exited with" in str(host.attester_failure)
        with pytest.raises(EnclaveProcessError):  # a request tries again, and is refused
            await host.attest("nothing-deployed", b64u(bytes(32)))
        platform.write_bytes(intact)  # repaired: the watch's next try succeeds
        assert await _wait_for(lambda: host.attester_usable)
        assert host.attester is not None and host.attester.process.poll() is None

    _with_host(tmp_path, body)


def test_sockets_of_a_data_directory_with_a_long_path_still_fit(tmp_path: Path) -> None:
    """A Unix socket path holds 107 bytes: a deep data directory (pytest's are) gets a
    short directory of its own for the enclaves' sockets."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    sockets = EnclaveHost(deep)._sockets
    assert len(str(sockets / "w-0123456789abcdef.sock")) <= 100
    assert sockets != EnclaveHost(deep / "other")._sockets
    assert EnclaveHost(Path("/srv/cr"))._sockets == Path("/srv/cr/sockets")


def test_enclave_processes_are_found_by_their_module_and_data_directory(tmp_path: Path) -> None:
    """The one /proc scan (the Controller's strays, the loopback stack's kills): a
    ``cleanroom.enclave.*`` process with the data directory, or a path under it, in
    its arguments. Not another server's directory that merely shares the prefix, not
    another program's process with the same paths."""
    data_dir = tmp_path / "compute"
    sleeping = "import time; time.sleep(60)"

    def start(*arguments: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, "-c", sleeping, *arguments])
        cmdline = Path(f"/proc/{process.pid}/cmdline")
        deadline = time.monotonic() + 10
        # Until it has exec'd, a child's command line is still ours.
        while arguments[-1].encode() not in cmdline.read_bytes():
            assert time.monotonic() < deadline, "the process did not start"
            time.sleep(0.01)
        return process

    started = {
        "under": start("cleanroom.enclave.worker_service", str(data_dir / "rooms" / "r")),
        "exact": start("cleanroom.enclave.attester_service", str(data_dir)),
        "prefix": start("cleanroom.enclave.worker_service", str(tmp_path / "compute-2")),
        "other module": start("cleanroom.controller", str(data_dir / "rooms")),
    }
    try:
        found = enclave_processes(data_dir)
        assert found == sorted(found)
        mine = {name for name, process in started.items() if process.pid in found}
        assert mine == {"under", "exact"}
    finally:
        for process in started.values():
            process.kill()
            process.wait()
