"""A Controller that answers a byte now and then (``answer-time``), and a host that
holds a run (``run-time``).

httpx's timeouts are per read, so a Controller that sent one byte of its answer every
half second (well inside the 60 s read timeout) held a command for as long as it
liked: an upload, a status, a run waiting for its end. Each JSON answer must now be
whole within a deadline (``cleanroom.client.bounded.ANSWER_DEADLINE_S``), on a new
connection as on one kept alive from the request before.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cleanroom.client import bounded, compute, rooms
from cleanroom.errors import CheckFailed
from cleanroom.insecure.localstack import LocalStack
from tests.adversarial.proxy import Message, TamperingProxy
from tests.adversarial.test_hostile_controller import finished, room  # noqa: F401
from tests.e2e.conftest import User
from tests.e2e.helpers import approve, deploy, write
from tests.reliability.faults import worker_pid

DEADLINE_S = 3.0
WAIT_S = 60.0  # far past the deadline, far short of the trickled answer (minutes)


def slow(suffix: str) -> Callable[[Message], float | None]:
    """A byte every 0.5 s of each answer to a path ending in ``suffix``."""
    return lambda message: 0.5 if message.path.endswith(suffix) else None


def within(action: Callable[[], object], seconds: float) -> tuple[object, float]:
    """``action``'s result (or the exception it raised) and how long it took; fails if
    it took longer than ``seconds``."""
    outcome: list[object] = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: outcome.append(_call(action)), daemon=True)
    thread.start()
    thread.join(seconds)
    took = time.monotonic() - started
    assert outcome, f"check answer-time: expected an end within {seconds} s, still waiting"
    return outcome[0], took


def _call(action: Callable[[], object]) -> object:
    try:
        return action()
    except Exception as error:  # noqa: BLE001 - the caller looks at it
        return error


@pytest.mark.parametrize(
    ("suffix", "uploads"),
    # The session's answer (nothing is uploaded then); or the body relayed whole and the
    # Worker's acknowledgement then a byte at a time (counted from the body's end).
    [("/attested-sessions", 0), ("/upload", 1)],
    ids=["session", "acknowledgement"],
)
def test_a_trickled_answer_to_an_upload_is_given_up_at_the_deadline(
    alice: User,
    tmp_path: Path,
    proxy: TamperingProxy,
    room: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    suffix: str,
    uploads: int,
) -> None:
    monkeypatch.setattr(bounded, "ANSWER_DEADLINE_S", DEADLINE_S)
    proxy.slow = slow(suffix)
    source = write(tmp_path / "a", "a@x\n")
    error, took = within(lambda: alice.client.upload(room, "input_1", source), WAIT_S)
    assert DEADLINE_S <= took < DEADLINE_S + 10, took
    assert len(proxy.paths("/upload")) == uploads
    if uploads:
        # The acknowledgement given up at the deadline (answer-time), the client asks
        # the Worker what became of the upload: stored, sealed (tests/adversarial/
        # test_upload_fate.py), and so reported.
        assert isinstance(error, rooms.UploadResult) and len(proxy.paths("/fate")) == 1, error
    else:
        assert isinstance(error, CheckFailed) and error.check == "answer-time", error


def test_an_upload_the_controller_stops_taking_is_given_up(
    alice: User,
    tmp_path: Path,
    proxy: TamperingProxy,
    room: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # More than every buffer between the client and the proxy's application can hold.
    monkeypatch.setattr(compute, "UPLOAD_WRITE_TIMEOUT_S", DEADLINE_S)
    proxy.stalled = lambda path: path.endswith("/upload")
    source = tmp_path / "a"
    source.mkdir()
    (source / "emails.csv").write_bytes(b"a@x\n" * (16 << 20))
    error, took = within(lambda: alice.client.upload(room, "input_1", source), WAIT_S)
    assert isinstance(error, CheckFailed) and error.check == "upload-time", error
    assert took < DEADLINE_S + 20, took


def test_a_trickled_status_on_a_kept_alive_connection_is_given_up_at_the_deadline(
    alice: User,
    proxy: TamperingProxy,
    room: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The evidence comes at once, on the connection the status request then reuses.
    monkeypatch.setattr(bounded, "ANSWER_DEADLINE_S", DEADLINE_S)
    proxy.slow = slow("/status")
    status, took = within(lambda: alice.client.status(room), WAIT_S)
    assert not isinstance(status, BaseException), status
    assert status.worker is None  # type: ignore[attr-defined]
    assert "answer-time" in status.unverified  # type: ignore[attr-defined]
    assert took < DEADLINE_S + 10, took
    assert len(proxy.paths("/attestation")) == 1


SLEEPER = """
import time

def run():
    time.sleep(60)
"""


def _supervisors(worker: int) -> list[int]:
    """The run supervisors among the descendants of process ``worker``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found, frontier = [], [worker]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid:
                frontier.append(child)
                with contextlib.suppress(OSError):
                    command = (Path("/proc") / str(child) / "cmdline").read_bytes()
                    if b"cleanroom.enclave.supervisor" in command:
                        found.append(child)
    return found


def test_a_run_the_host_holds_is_waited_for_no_longer_than_its_spec_allows(
    alice: User,
    bob: User,
    tmp_path: Path,
    hostile_stack: tuple[LocalStack, TamperingProxy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The host pauses the run's supervisor (SIGSTOP): the function is never ended at
    # its wall time, and the Worker signs "running" for as long as the pause lasts.
    stack = hostile_stack[0]
    name = "held-run"
    deploy(alice, bob, tmp_path, name, SLEEPER, timeout_s=5)
    approve(bob, name)
    monkeypatch.setattr(rooms, "RUN_WAIT_SLACK_S", 3)
    stopped: list[int] = []
    try:
        alice.client.upload(name, "input_1", write(tmp_path / "a", "a@x\n"))
        bob.client.upload(name, "input_2", write(tmp_path / "b", "a@x\n"))
        worker = worker_pid(stack, name)
        outcome: list[object] = []
        thread = threading.Thread(
            target=lambda: outcome.append(
                _call(lambda: alice.client.run(name, wait=True, poll_s=0.2))
            ),
            daemon=True,
        )
        started = time.monotonic()
        thread.start()
        while not stopped and time.monotonic() < started + 30:
            for pid in _supervisors(worker):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            time.sleep(0.05)
        assert stopped, "no run supervisor appeared"
        thread.join(WAIT_S)
        assert outcome, "check run-time: expected an end within 60 s, still waiting"
        error = outcome[0]
        assert isinstance(error, CheckFailed) and error.check == "run-time", error
        assert str(error.actual).startswith("running after "), error.actual
        assert time.monotonic() - started < 5 + 3 + 10
    finally:
        for pid in stopped:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)
        alice.client.delete(name)


def test_a_trickled_download_is_given_up_and_leaves_nothing(
    alice: User,
    tmp_path: Path,
    proxy: TamperingProxy,
    finished: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each byte well inside the 60 s read timeout: before download-time, the command
    # waited for the whole trickle (minutes here; for ever at a byte every 50 s).
    monkeypatch.setattr(bounded, "DOWNLOAD_GRACE_S", DEADLINE_S)
    proxy.slow = slow("/download")
    target = tmp_path / "out"
    error, took = within(lambda: alice.client.download(finished, "output_1", target), WAIT_S)
    assert isinstance(error, CheckFailed) and error.check == "download-time", error
    assert str(error.actual).startswith("0 records (0 bytes) after "), error.actual
    assert took < DEADLINE_S + 10, took
    assert not target.exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial")] == []
