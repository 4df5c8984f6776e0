"""kill -9 each process at each phase: the others get a clear error in bounded time,
no plaintext is left outside a Worker, a restarted Controller finds its Attester and
its Workers (or reports their rooms gone), and the client can retry or redeploy."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cleanroom.client.errors import ServerError
from cleanroom.errors import CheckFailed
from cleanroom.insecure.localstack import LocalStack
from tests.auth import dpop
from tests.e2e.conftest import User
from tests.reliability import faults, flow
from tests.reliability.report import record

ERROR_WITHIN_S = 15.0  # every party gets its error within this after a kill
BIG = 48 << 20


def record_case(case: str, **facts: Any) -> None:
    record("faults", case, facts)


def failure(call: Callable[[], Any]) -> tuple[BaseException, float]:
    """The typed error ``call`` ends with, and how long it took."""
    started = time.monotonic()
    with pytest.raises((ServerError, CheckFailed)) as caught:
        call()
    seconds = time.monotonic() - started
    assert seconds < ERROR_WITHIN_S, f"{caught.value!r} after {seconds:.1f} s"
    return caught.value, seconds


def describe(error: BaseException) -> str:
    check = getattr(error, "check", None)
    status = getattr(error, "status", None)
    text = str(error).splitlines()[0][:140]
    return f"{type(error).__name__} {status or ''} {check or ''}: {text}".replace("  ", " ")


def big_input(tmp: Path, name: str, marker: str) -> Path:
    directory = tmp / f"big-{name}"
    directory.mkdir()
    with (directory / "emails.csv").open("wb") as handle:
        handle.write(f"{marker}\nshared@example.com\n".encode())
        handle.write(os.urandom(BIG).hex().encode()[:BIG])
    return directory


def kill_after(bytes_seen: int, kill: Callable[[], None]) -> Callable[[int], None]:
    """A progress callback that kills once ``bytes_seen`` bytes went through."""
    total = [0, False]

    def progress(count: int) -> None:
        total[0] = int(total[0]) + count
        if not total[1] and int(total[0]) >= bytes_seen:
            total[1] = True
            kill()

    return progress


def deploy_when_scheduled(alice: User, bob: User, tmp: Path, name: str) -> str:
    """``flow.deploy``, again while the manager refuses it 503: after a restart of the
    compute server, the manager schedules onto it again only once its next health check
    passed (every 5 s). The Work-ID."""
    deadline = time.monotonic() + 30
    for attempt in itertools.count():
        try:
            return flow.deploy(alice, bob, tmp / f"attempt-{attempt}", name)
        except ServerError as error:
            if error.status != 503 or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def redeploy_works(alice: User, bob: User, tmp: Path, name: str) -> None:
    """The client's way out: delete the room and deploy it again (same name)."""
    alice.client.delete(name)
    deploy_when_scheduled(alice, bob, tmp / "again", name)
    flow.feed(alice, bob, tmp / "again", name)
    assert flow.run(alice, name)[0] == "done"
    assert flow.overlap(alice, name, tmp / "again", "output_1") == {"overlap": 1}


def room_status(stack: LocalStack, user: User, name: str) -> int:
    token = user.profile.access_token(resource=stack.compute_url, room=name, project="acme")
    url = f"{stack.compute_url}/v1/rooms/{name}"
    answer = httpx.get(url, headers=dpop(user.profile.proof_key, token, "GET", url), timeout=10)
    return answer.status_code


# ------------------------------------------------------------------- Worker


def test_worker_killed_before_attestation(
    stack: LocalStack, alice: User, bob: User, tmp_path: Path
) -> None:
    flow.deploy(alice, bob, tmp_path, "fault-worker-attest")
    faults.kill(faults.worker_pid(stack, "fault-worker-attest"))
    error, seconds = failure(lambda: alice.client.attest("fault-worker-attest"))
    assert getattr(error, "status", None) == 410
    assert room_status(stack, alice, "fault-worker-attest") == 410
    assert flow.leaks(flow.secrets_for("fault-worker-attest"), stack) == []
    redeploy_works(alice, bob, tmp_path, "fault-worker-attest")
    record_case("Worker killed / attestation", error=describe(error), seconds=round(seconds, 2),
                recovery="room reported gone (410); delete + redeploy works")  # fmt: skip


def test_worker_killed_mid_upload(
    stack: LocalStack, alice: User, bob: User, tmp_path: Path
) -> None:
    name = "fault-worker-upload"
    flow.deploy(alice, bob, tmp_path, name)
    marker = flow.secrets_for(name)[0]
    source = big_input(tmp_path, name, marker)
    pid = faults.worker_pid(stack, name)
    progress = kill_after(8 << 20, lambda: faults.kill(pid))
    error, seconds = failure(
        lambda: alice.client.upload(name, "input_1", source, progress=progress)
    )
    assert room_status(stack, alice, name) == 410
    assert flow.leaks([marker], stack) == []  # what reached the disk was ciphertext
    redeploy_works(alice, bob, tmp_path, name)
    record_case("Worker killed / upload mid-stream", error=describe(error),
                seconds=round(seconds, 2), recovery="room gone (410); redeploy works")  # fmt: skip


def test_worker_killed_during_the_run(
    stack: LocalStack, alice: User, bob: User, tmp_path: Path
) -> None:
    name = "fault-worker-run"
    handler = "import time\n\ndef run():\n    time.sleep(30)\n"
    flow.deploy(alice, bob, tmp_path, name, handler)
    markers = flow.feed(alice, bob, tmp_path, name)
    assert alice.client.run(name).state == "running"
    time.sleep(1.0)
    faults.kill(faults.worker_pid(stack, name))
    error, seconds = failure(lambda: alice.client.run(name, wait=True))
    time.sleep(0.5)
    # The Controller noticed, killed what the function left and removed its scratch.
    time.sleep(2 * 1.0)
    assert flow.leaks(markers, stack) == []
    redeploy_works(alice, bob, tmp_path, name)
    record_case("Worker killed / run", error=describe(error), seconds=round(seconds, 2),
                recovery="room gone (410); redeploy works")  # fmt: skip


# ----------------------------------------------------------------- Attester


def test_attester_killed_is_restarted_and_readmits_workers(
    stack: LocalStack, alice: User, bob: User, tmp_path: Path
) -> None:
    name = "fault-attester"
    flow.deploy(alice, bob, tmp_path, name)
    old = faults.attester_pid(stack)
    faults.kill(old)
    started = time.monotonic()
    attestation = bob.client.attest(name)  # the Controller starts a new one on demand
    seconds = time.monotonic() - started
    assert faults.attester_pid(stack) != old
    assert attestation.worker.work_id == alice.client.manager.room(name).work_id
    flow.feed(alice, bob, tmp_path, name)
    assert flow.run(alice, name)[0] == "done"
    # At deploy: a new room right after another kill.
    faults.kill(faults.attester_pid(stack))
    flow.deploy(alice, bob, tmp_path, "fault-attester-deploy")
    # With no request at all: the Controller restarts it by itself, and its health never
    # says degraded for an Attester it can start again (the manager would stop
    # scheduling on it).
    gone = faults.attester_pid(stack)
    faults.kill(gone)
    started = time.monotonic()
    while faults.attester_pid(stack) == gone:
        assert time.monotonic() - started < 10, "the Controller did not restart its Attester"
        assert httpx.get(f"{stack.compute_url}/v1/health", timeout=10).json()["status"] == "ok"
        time.sleep(0.05)
    unprompted = time.monotonic() - started
    record_case("Attester killed / attestation and deploy",
                error="none: restarted on demand, or within a second unprompted",
                seconds=round(seconds, 2),
                recovery="new Attester re-admits live Workers by local attestation; "
                f"unprompted restart after {unprompted:.2f} s")  # fmt: skip


# --------------------------------------------------------------- Controller


def test_controller_killed_mid_upload_then_restarted(
    stack: LocalStack, alice: User, bob: User, tmp_path: Path
) -> None:
    name = "fault-controller-upload"
    flow.deploy(alice, bob, tmp_path, name)
    flow.deploy(alice, bob, tmp_path, "fault-orphaned")  # its Worker dies while we are down
    marker = flow.secrets_for(name)[0]
    source = big_input(tmp_path, name, marker)
    before = faults.enclave_processes(stack)
    progress = kill_after(8 << 20, lambda: faults.kill_server(stack, faults.COMPUTE))
    error, seconds = failure(
        lambda: alice.client.upload(name, "input_1", source, progress=progress)
    )
    assert faults.enclave_processes(stack) == before  # the enclaves outlived it
    faults.kill(faults.worker_pid(stack, "fault-orphaned"))
    restart = faults.restart_compute(stack)
    # It found its Attester and its Worker again, and reports the dead one gone.
    assert room_status(stack, alice, name) == 200
    assert alice.client.state(name)["state"] == "collecting"
    assert room_status(stack, alice, "fault-orphaned") == 410
    assert set(faults.enclave_processes(stack)) <= set(before)
    assert len(faults.enclave_processes(stack, spares=True)) == 1  # the old one was killed
    # The interrupted upload is simply done again: the Worker kept nothing of it.
    uploaded = alice.client.upload(name, "input_1", source)
    bob_dir = tmp_path / "bob-input"
    bob_dir.mkdir()
    (bob_dir / "emails.csv").write_text("shared@example.com\n")
    bob.client.upload(name, "input_2", bob_dir)
    state, receipt, _ = flow.run(alice, name)
    assert state == "done" and receipt["inputs"]["input_1"]["sha256"] == uploaded.sha256
    assert flow.overlap(bob, name, tmp_path, "output_2") == {"overlap": 1}
    assert flow.leaks([marker], stack) == []
    redeploy_works(alice, bob, tmp_path, "fault-orphaned")
    record_case("Controller killed / upload mid-stream", error=describe(error),
                seconds=round(seconds, 2), restart_s=round(restart, 2),
                recovery="restart adopts Attester + Worker; upload retried once; "
                "receipt has exactly the retried digest; dead room 410")  # fmt: skip


def test_controller_killed_during_run_and_mid_download(
    stack: LocalStack, alice: User, bob: User, tmp_path: Path
) -> None:
    name = "fault-controller-run"
    handler = """
import pathlib, time

def run():
    time.sleep(3)
    data = pathlib.Path("inputs/input_1/emails.csv").read_bytes()
    with open("outputs/output_1/big.bin", "wb") as handle:
        for _ in range(6):
            handle.write(data[: 8 << 20].ljust(8 << 20, b"."))
"""
    flow.deploy(alice, bob, tmp_path, name, handler)
    markers = flow.feed(alice, bob, tmp_path, name)
    assert alice.client.run(name).state == "running"
    faults.kill_server(stack, faults.COMPUTE)
    error_run, seconds_run = failure(lambda: alice.client.run(name, wait=True))
    faults.restart_compute(stack)
    deadline = time.monotonic() + 30
    while alice.client.state(name)["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alice.client.state(name)["state"] == "done"  # the run went on without it
    target = tmp_path / "download"
    progress = kill_after(8 << 20, lambda: faults.kill_server(stack, faults.COMPUTE))
    error, seconds = failure(
        lambda: alice.client.download(name, "output_1", target, progress=progress)
    )
    assert not target.exists()
    assert [p for p in tmp_path.iterdir() if ".partial-" in p.name] == []
    faults.restart_compute(stack)
    result = alice.client.download(name, "output_1", target)
    assert result.files == {"big.bin": 48 << 20}
    assert flow.leaks(markers, stack) == []
    record_case("Controller killed / run", error=describe(error_run),
                seconds=round(seconds_run, 2), recovery="run finished; receipt signed")  # fmt: skip
    record_case("Controller killed / download mid-stream", error=describe(error),
                seconds=round(seconds, 2),
                recovery="no partial output kept; download again after restart")  # fmt: skip


@pytest.mark.parametrize("victim", ["Controller", "Worker"])
def test_killed_at_deploy(
    stack: LocalStack, alice: User, bob: User, tmp_path: Path, victim: str
) -> None:
    name = f"fault-{victim.lower()}-deploy"
    before = set(faults.enclave_processes(stack))
    # The room's Worker is the spare started ahead: it is the room's once its log is.
    (spare,) = faults.enclave_processes(stack, spares=True)
    room_log = stack.room_directory("acme", name) / "worker.log"
    worker_started = threading.Event()

    def watch() -> None:  # kill once the room has its Worker process
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if room_log.exists():
                worker_started.set()
                if victim == "Controller":
                    faults.kill_server(stack, faults.COMPUTE)
                else:
                    faults.kill(spare)
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    error, seconds = failure(lambda: deploy_when_scheduled(alice, bob, tmp_path, name))
    watcher.join()
    assert worker_started.is_set()
    assert alice.client.manager.room(name).state == "failed"
    if victim == "Controller":
        faults.restart_compute(stack)
    # The half-deployed Worker was killed and its directory removed.
    assert set(faults.enclave_processes(stack)) <= before | {faults.attester_pid(stack)}
    assert not stack.room_directory("acme", name).exists()
    redeploy_works(alice, bob, tmp_path, name)
    recovery = {
        "Controller": "manager marks failed; restart kills the orphan Worker; delete + redeploy",
        "Worker": "Controller removes the room; manager marks failed; delete + redeploy",
    }[victim]
    record_case(f"{victim} killed / deploy", error=describe(error), seconds=round(seconds, 2),
                recovery=recovery)  # fmt: skip


def test_controller_and_attester_killed_together(
    stack: LocalStack, alice: User, bob: User, tmp_path: Path
) -> None:
    name = "fault-both"
    flow.deploy(alice, bob, tmp_path, name)
    faults.kill_server(stack, faults.COMPUTE)
    faults.kill(faults.attester_pid(stack))
    error, seconds = failure(lambda: bob.client.attest(name))
    faults.restart_compute(stack)
    assert bob.client.attest(name).worker.work_id == alice.client.manager.room(name).work_id
    record_case("Controller + Attester killed", error=describe(error), seconds=round(seconds, 2),
                recovery="restart starts a new Attester, which re-admits the Worker")  # fmt: skip


# ------------------------------------------------------------------ manager


def test_manager_killed(stack: LocalStack, alice: User, bob: User, tmp_path: Path) -> None:
    name = "fault-manager"
    deploy_when_scheduled(alice, bob, tmp_path, name)  # the compute server may just be back
    faults.kill_server(stack, faults.MANAGER)
    alice.client._manager = None  # a fresh login, as a new command would do
    error, seconds = failure(lambda: alice.client.attest(name))
    assert getattr(error, "status", None) == 0  # unreachable, said so
    faults.restart_manager(stack)
    flow.feed(alice, bob, tmp_path, name)
    assert flow.run(alice, name)[0] == "done"
    record_case("manager killed", error=describe(error), seconds=round(seconds, 2),
                recovery="after restart the room is intact (state in its database)")  # fmt: skip


def test_report_json_is_valid() -> None:
    from tests.reliability.report import REPORT

    assert isinstance(json.loads(REPORT.read_text()), dict)


CLIENT = """
import sys, time
from pathlib import Path
from cleanroom.client import CleanRoomClient
from cleanroom.client.profile import Profile

client = CleanRoomClient(Profile.load(sys.argv[1], Path(sys.argv[2])))
print("uploading", flush=True)
client.upload(sys.argv[3], "input_1", Path(sys.argv[4]), progress=lambda n: time.sleep(0.05))
"""


def test_client_killed_mid_upload_then_retried(
    stack: LocalStack, alice: User, bob: User, tmp_path: Path
) -> None:
    import subprocess
    import sys

    name = "fault-client-upload"
    deploy_when_scheduled(alice, bob, tmp_path, name)  # the compute server may just be back
    marker = flow.secrets_for(name)[0]
    source = big_input(tmp_path, name, marker)
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, "alice", str(alice.home), name, str(source)],
        stdout=subprocess.PIPE,
    )
    assert client.stdout is not None and client.stdout.readline() == b"uploading\n"
    time.sleep(2.0)  # attested, handshaken, some MiB sent
    faults.kill(client.pid)
    client.wait()
    started = time.monotonic()
    while True:  # the Worker notices the cut stream and frees the input
        try:
            uploaded = alice.client.upload(name, "input_1", source)
            break
        except ServerError as error:
            assert error.problem.get("check") == "upload-in-progress", error
            assert time.monotonic() - started < ERROR_WITHIN_S
            time.sleep(0.2)
    freed = time.monotonic() - started
    bob_dir = tmp_path / "bob-input"
    bob_dir.mkdir()
    (bob_dir / "emails.csv").write_text("shared@example.com\n")
    bob.client.upload(name, "input_2", bob_dir)
    state, receipt, _ = flow.run(alice, name)
    assert state == "done" and receipt["inputs"]["input_1"]["sha256"] == uploaded.sha256
    assert flow.overlap(alice, name, tmp_path, "output_1") == {"overlap": 1}
    assert flow.leaks([marker], stack) == []
    record_case("client killed / upload mid-stream", error="(the client is dead)",
                seconds=round(freed, 2),
                recovery="Worker drops the partial input; the retry is the only copy")  # fmt: skip
