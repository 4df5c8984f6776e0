"""The enclave processes a compute server runs: one Attester, one Worker per clean room.

The Controller starts them, relays admission between them and afterwards relays
every client message. It handles bytes it cannot read or forge: the Worker checks
its spec and bundle itself, admission is mutual local attestation, and clients
verify the Attester's quote. This module therefore imports nothing from
``cleanroom.enclave`` or ``cleanroom.client``: the Controller never holds a key
or plaintext.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cleanroom.controller.relay import Answer, EnclaveClient, EnclaveUnreachable
from cleanroom.errors import Error
from cleanroom.sandbox_ids import SandboxIdError, SandboxIds

log = logging.getLogger("cleanroom.controller")

START_TIMEOUT_S = 30.0
READY_POLL_S = 0.01  # how often a starting enclave is asked whether it serves
PROBE_TIMEOUT_S = 5.0
CGROUP_ROOT = Path("/sys/fs/cgroup")
MAX_SOCKET_PATH = 100  # sun_path holds 107 bytes and a NUL; some to spare
SHORT_SOCKETS = Path("/run/cleanroom/sockets")
PLATFORM_DIR = "simulated-platform"  # the simulated platform, in the data directory


class EnclaveProcessError(Error):
    """An enclave process did not start, or answered with an error during admission.

    ``status`` is the Controller's answer (``http_status`` too); ``body``, when the
    enclave answered with a problem of its own, is that problem, relayed as it is.
    """

    def __init__(self, message: str, status: int = 502, body: Any = None) -> None:
        super().__init__(message)
        self.status, self.body = status, body
        self.http_status = status


class ProcessHandle(Protocol):
    """What the host needs of an enclave process: a child it started, one it adopted,
    or a container."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    @property
    def key(self) -> str:
        """Names it among this host's enclave processes (``pid:N``, ``container:ID``)."""
        ...

    def poll(self) -> int | None: ...

    def wait(self) -> int: ...

    def signal(self, signum: int) -> None:
        """Signal all of it: its process group, or its container."""
        ...

    def record(self) -> dict[str, Any]:
        """What a restarted Controller needs to find it again (with its launcher)."""
        ...


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22),
    or None if it is gone or a zombie. With the pid it names one process, not a reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass
class AdoptedProcess:
    """An enclave process started by an earlier run of this Controller (not our child)."""

    pid: int
    started: int
    returncode: int | None = None

    @property
    def key(self) -> str:
        return f"pid:{self.pid}"

    def signal(self, signum: int) -> None:
        _kill_group(self.pid, signum)

    def record(self) -> dict[str, Any]:
        return {"pid": self.pid, "started": self.started}

    def poll(self) -> int | None:
        if self.returncode is None and start_time(self.pid) != self.started:
            self.returncode = -signal.SIGKILL  # unknown: it is gone, that is what counts
        return self.returncode

    def wait(self) -> int:
        while self.poll() is None:
            time.sleep(0.05)
        return self.returncode if self.returncode is not None else 0


def _kill_group(pid: int, signum: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


@dataclass
class ChildProcess:
    """An enclave process this Controller started, in a process group of its own."""

    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    @property
    def key(self) -> str:
        return f"pid:{self.pid}"

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self) -> int:
        return self.popen.wait()

    def signal(self, signum: int) -> None:
        _kill_group(self.pid, signum)

    def record(self) -> dict[str, Any]:
        return {"pid": self.pid, "started": start_time(self.pid)}


@dataclass
class EnclaveProcess:
    """A running enclave process and the HTTP client that reaches its socket."""

    name: str
    socket: Path
    process: ProcessHandle
    client: EnclaveClient
    log: Path | None = None  # where its output goes (a refusal's last line, for one)

    @staticmethod
    def _client(socket: Path) -> EnclaveClient:
        return EnclaveClient(socket)

    @classmethod
    def adopt(cls, name: str, socket: Path, pid: int, started: int) -> EnclaveProcess:
        return cls(name, socket, AdoptedProcess(pid, started), cls._client(socket))

    def record(self) -> dict[str, Any]:
        """What a restarted Controller needs to find this process again."""
        return {**self.process.record(), "socket": str(self.socket)}

    @classmethod
    def start(cls, name: str, socket: Path, argv: list[str], log_path: Path) -> EnclaveProcess:
        socket.unlink(missing_ok=True)
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, *argv],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
        return cls(name, socket, ChildProcess(process), cls._client(socket), log_path)

    async def wait_ready(self, path: str, log_path: Path | None = None) -> None:
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        log_path = log_path or self.log
        while True:
            if self.process.poll() is not None:
                tail = _tail(log_path)
                refusal = _refusal(tail[0] if tail else "")
                if refusal is not None:
                    raise EnclaveProcessError(
                        str(refusal["detail"]),
                        status=422,
                        body=refusal,
                    )
                raise EnclaveProcessError(
                    f"{self.name} exited with {self.process.returncode}: "
                    + (tail[0] if tail else "no output")
                )
            if self.socket.exists():
                with contextlib.suppress(EnclaveUnreachable):
                    response = await self.client.request("GET", path)
                    if response.status == 200:
                        return
            if asyncio.get_running_loop().time() > deadline:
                raise EnclaveProcessError(f"{self.name} did not start in {START_TIMEOUT_S} s")
            await asyncio.sleep(READY_POLL_S)

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """A JSON call that must succeed (used for admission, which the Controller drives)."""
        try:
            response = await self.client.request(method, path, json_body=body)
        except EnclaveUnreachable as error:
            raise EnclaveProcessError(f"{self.name} unreachable: {error}") from error
        if response.status >= 400:
            raise EnclaveProcessError(
                f"{self.name} refused {path}: {response.text[:300]}",
                status=response.status,
                body=response.json() if response.content_type.endswith("json") else None,
            )
        return response.json()

    async def stop(self, grace_s: float = 5.0) -> None:
        await self.client.close()
        if self.process.poll() is None:
            self.process.signal(signal.SIGTERM)
            for _ in range(int(grace_s / 0.05)):
                if self.process.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                self.process.signal(signal.SIGKILL)
        await asyncio.get_running_loop().run_in_executor(None, self.process.wait)

    async def answers(self, path: str) -> Any:
        """The JSON of a 200 answer to GET ``path``, or None (dead, silent or refusing)."""
        if self.process.poll() is not None:
            return None
        try:
            response = await self.client.request("GET", path, timeout=PROBE_TIMEOUT_S)
        except EnclaveUnreachable:
            return None
        return response.json() if response.status == 200 else None


REFUSAL_PREFIX = "worker refused to start: "  # what a Worker prints when a check refuses


def _tail(log_path: Path | None) -> list[str]:
    """The last line of an enclave's output, if any."""
    if log_path is None:
        return []
    try:
        return log_path.read_text(errors="replace").strip().splitlines()[-1:]
    except OSError:
        return []


def _refusal(line: str) -> dict[str, Any] | None:
    """A Worker's refusal (a failed check on its spec or bundle) as a problem detail."""
    if not line.startswith(REFUSAL_PREFIX):
        return None
    try:
        facts = json.loads(line.removeprefix(REFUSAL_PREFIX))
    except ValueError:
        return None
    if not isinstance(facts, dict) or not isinstance(facts.get("message"), str):
        return None
    return {
        "type": "about:blank",
        "title": "Unprocessable Content",
        "status": 422,
        "detail": f"the Worker refused the clean room: {facts['message']}"[:500],
        **{k: facts[k] for k in ("check", "expected", "actual", "hint") if k in facts},
    }


@dataclass
class Room:
    name: str
    worker: EnclaveProcess
    worker_id: str
    directory: Path
    sandbox_uid: int


RUN_DIR = "run"  # a Worker's scratch for a run, in its room directory
WATCH_INTERVAL_S = 1.0


def bury(ids: SandboxIds, sandbox_uid: int, directory: Path) -> None:
    """After a Worker died (or was deleted): kill what its function left running, remove
    the run's plaintext scratch and free the room's sandbox uid.

    On SGX hardware that plaintext would have died with the enclave; on the simulated
    backend it is on the host, so the Controller, which can see that the Worker is gone,
    removes it. Everything of the room's function runs as its own sandbox uid, unique on
    this host (:mod:`cleanroom.sandbox_ids`), so nothing of another room is touched.
    """
    ids.release(sandbox_uid, directory)
    _remove(directory / RUN_DIR)
    remove_run_cgroups(sandbox_uid)


def remove_run_cgroups(sandbox_uid: int) -> None:
    """Remove the (empty) control groups a killed run supervisor left behind: they are
    below this process's own group in each hierarchy, which its Workers inherit."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _hierarchy, controllers, path = line.split(":", 2)
            if controllers:  # v1: one hierarchy per controller (combined ones are linked)
                roots = [CGROUP_ROOT / c for c in controllers.split(",") if "=" not in c]
            else:  # v2, alone or beside v1
                roots = [CGROUP_ROOT, CGROUP_ROOT / "unified"]
            for root in roots:
                for group in (root / path.lstrip("/")).glob(f"cleanroom-run-{sandbox_uid}-*"):
                    with contextlib.suppress(OSError):
                        group.rmdir()


def worker_socket_name(room: str) -> str:
    """A Unix socket path holds 107 bytes: a room's socket is named by a short hash."""
    return f"w-{hashlib.sha256(room.encode()).hexdigest()[:16]}"


class Launcher(Protocol):
    """How a compute server starts its enclave processes, and finds them again.

    :class:`ProcessLauncher` runs them as this Controller's children (the simulated
    TEE); :mod:`cleanroom.controller.launchers` starts Gramine SGX enclaves, in
    containers or directly. Whatever starts them, the Controller only relays to
    their sockets: it holds no key either way.
    """

    def attester(self, *, data_dir: Path, sockets: Path, platform_dir: Path) -> EnclaveProcess:
        """Start the Attester (it is not serving yet)."""
        ...

    def worker(
        self,
        *,
        room: str,
        directory: Path,
        sockets: Path,
        platform_dir: Path,
        sandbox_uid: int,
    ) -> EnclaveProcess:
        """Start the Worker of ``room``, whose spec and bundle are in ``directory``."""
        ...

    def adopt(self, name: str, record: dict[str, Any]) -> EnclaveProcess | None:
        """The enclave process ``record`` names, if it still runs (else None)."""
        ...

    def strays(self, data_dir: Path, accounted: set[str]) -> list[ProcessHandle]:
        """This server's enclave processes whose key is not ``accounted`` for."""
        ...

    def standby(self, *, data_dir: Path, platform_dir: Path) -> None:
        """Get the next Worker's start ready ahead, where this launcher can (called once
        the host has accounted for its enclave processes)."""
        ...

    def close(self) -> None:
        """Stop what :meth:`standby` started."""
        ...


class ProcessLauncher:
    """The simulated TEE's enclaves: ``python -m cleanroom.enclave.*`` as children of
    this Controller, each in a process group of its own.

    It keeps one spare Worker process started ahead (``worker_service --spare``: its
    imports done, holding nothing of any room) and assigns it the next room's
    arguments, so that a deploy does not wait for Python to start.
    """

    def __init__(self) -> None:
        self.spare: tuple[subprocess.Popen[bytes], Path] | None = None
        self._standby: tuple[Path, Path] | None = None  # (data_dir, platform_dir)
        # Deploys start their Workers in threads of their own: one takes the spare.
        self._spare_lock = threading.Lock()

    def attester(self, *, data_dir: Path, sockets: Path, platform_dir: Path) -> EnclaveProcess:
        socket = sockets / "attester.sock"
        return EnclaveProcess.start(
            "Attester",
            socket,
            [
                "-m", "cleanroom.enclave.attester_service",
                "--socket", str(socket),
                "--platform-dir", str(platform_dir),
                "--init-platform",
            ],
            data_dir / "attester.log",
        )  # fmt: skip

    def worker(
        self,
        *,
        room: str,
        directory: Path,
        sockets: Path,
        platform_dir: Path,
        sandbox_uid: int,
    ) -> EnclaveProcess:
        socket = sockets / f"{worker_socket_name(room)}.sock"
        argv = [
            "-m", "cleanroom.enclave.worker_service",
            "--socket", str(socket),
            "--platform-dir", str(platform_dir),
            "--room-dir", str(directory),
            "--spec", str(directory / "spec.json"),
            "--bundle", str(directory / "function.tar"),
            "--sandbox-uid", str(sandbox_uid),
        ]  # fmt: skip
        return self._worker_process(room, socket, argv, directory / "worker.log")

    def _worker_process(
        self, name: str, socket: Path, argv: list[str], log_path: Path
    ) -> EnclaveProcess:
        """The room's Worker: the spare, assigned ``argv``, or a new process if there is
        none; then a new spare for the next deploy."""
        with self._spare_lock:
            spare, self.spare = self.spare, None
        worker: EnclaveProcess | None = None
        if spare is not None:
            process, spare_log = spare
            try:
                if process.poll() is not None or process.stdin is None:
                    raise OSError("the spare Worker exited")
                socket.unlink(missing_ok=True)
                process.stdin.write((json.dumps(argv[2:]) + "\n").encode())
                process.stdin.close()
                os.replace(spare_log, log_path)  # its log is the room's from now on
                worker = EnclaveProcess(
                    f"Worker {name}",
                    socket,
                    ChildProcess(process),
                    EnclaveProcess._client(socket),
                    log_path,
                )
            except OSError as error:
                log.warning("the spare Worker could not be used (%s): starting one", error)
                _kill_group(process.pid)
                process.wait()
                spare_log.unlink(missing_ok=True)
        if worker is None:
            worker = EnclaveProcess.start(f"Worker {name}", socket, argv, log_path)
        self._start_spare()
        return worker

    def standby(self, *, data_dir: Path, platform_dir: Path) -> None:
        self._standby = (data_dir, platform_dir)
        self._start_spare()

    def _start_spare(self) -> None:
        with self._spare_lock:
            # Not before the host accounted for its processes, and one spare at most.
            if self._standby is not None and self.spare is None:
                self.spare = self._spawn_spare(*self._standby)

    @staticmethod
    def _spawn_spare(data_dir: Path, platform_dir: Path) -> tuple[subprocess.Popen[bytes], Path]:
        log_path = data_dir / f"spare-{os.urandom(4).hex()}.log"
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "cleanroom.enclave.worker_service", "--spare",
                 "--platform-dir", str(platform_dir)],
                stdin=subprocess.PIPE,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )  # fmt: skip
        return process, log_path

    def close(self) -> None:
        with self._spare_lock:
            spare, self.spare, self._standby = self.spare, None, None
        if spare is not None:
            process, log_path = spare
            _kill_group(process.pid)
            process.wait()
            log_path.unlink(missing_ok=True)

    def adopt(self, name: str, record: dict[str, Any]) -> EnclaveProcess | None:
        pid, started = record.get("pid"), record.get("started")
        if not isinstance(pid, int) or started is None or start_time(pid) != started:
            return None
        return EnclaveProcess.adopt(name, Path(record["socket"]), pid, started)

    def strays(self, data_dir: Path, accounted: set[str]) -> list[ProcessHandle]:
        own_spare = {f"pid:{self.spare[0].pid}"} if self.spare is not None else set()
        found: list[ProcessHandle] = []
        for pid in enclave_processes(data_dir):
            started = start_time(pid)
            if f"pid:{pid}" not in accounted | own_spare and started is not None:
                found.append(AdoptedProcess(pid, started))
        return found


@dataclass
class DeployUnderWay:
    """A room's deploy that has not finished. A delete meanwhile abandons it
    (:meth:`EnclaveHost.delete`): its bundle's fetch is cancelled, and the deploy stops
    at its next step, stopping the Worker it started, instead of making the room."""

    name: str
    abandoned: bool = False
    fetch: asyncio.Future[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def check(self) -> None:
        """Go on only if the room was not deleted meanwhile."""
        if self.abandoned:
            raise EnclaveProcessError(
                f"clean room {self.name!r} was deleted while it was being deployed", status=409
            )


@dataclass
class EnclaveHost:
    """Starts and tracks the enclave processes of one compute server."""

    data_dir: Path
    launcher: Launcher = field(default_factory=ProcessLauncher)
    rooms: dict[str, Room] = field(default_factory=dict)
    # Rooms whose Worker died while this Controller (or an earlier run of it) was away:
    # their data died with the Worker's key, by design. Reported gone until deleted.
    gone: dict[str, str] = field(default_factory=dict)
    # Rooms being deployed. The deploy goes on when its caller goes away (the HTTP
    # server does not cancel a request's handler then): a manager that gave up on it
    # deletes the room, and that must end the deploy, not answer 404 and let it finish.
    deploying: dict[str, DeployUnderWay] = field(default_factory=dict)
    attester: EnclaveProcess | None = None
    # Why the last attempt to start a new Attester failed; None once one serves again.
    attester_failure: str | None = None
    sandbox_ids: SandboxIds = field(default_factory=SandboxIds)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _watcher: asyncio.Task[None] | None = None

    @property
    def attester_usable(self) -> bool:
        """Whether attestation and deploys can be served: an Attester was started and
        the last restart of a dead one (if any) did not fail. A dead Attester is
        restarted by :meth:`_watch` within a second, or at once by the next use."""
        return self.attester is not None and self.attester_failure is None

    @property
    def platform_dir(self) -> Path:
        return self.data_dir / PLATFORM_DIR

    @property
    def _sockets(self) -> Path:
        """Where the enclaves' Unix sockets live: the data directory, unless its path is
        too long for one (107 bytes), then a short directory of this host's own."""
        own = self.data_dir / "sockets"
        # The longest a launcher makes (a container's has a directory of its own).
        if len(str(own / "w-0123456789abcdef" / "enclave.sock")) <= MAX_SOCKET_PATH:
            return own
        return SHORT_SOCKETS / hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]

    @property
    def _attester_record(self) -> Path:
        return self.data_dir / "attester.json"

    async def start(self) -> None:
        """Start (or find again) the Attester, then account for every room on disk."""
        for directory in (self.data_dir, self._sockets, self.data_dir / "rooms"):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        adopted = await self._adopt_attester()
        if not adopted:
            await self._start_attester()
        await self._recover_rooms(readmit=not adopted)
        # After the recovery, which kills the enclave processes it cannot place.
        await asyncio.to_thread(
            self.launcher.standby, data_dir=self.data_dir, platform_dir=self.platform_dir
        )
        self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        """Restart a dead Attester; notice Workers that died, and clean up after them
        (see :func:`bury`)."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            if self.attester is not None and self.attester.process.poll() is not None:
                with contextlib.suppress(EnclaveProcessError, OSError):  # recorded, logged
                    await self._live_attester()
            for name, room in list(self.rooms.items()):
                if room.worker.process.poll() is not None and name not in self.gone:
                    log.warning("the Worker of %s exited; its data is gone by design", name)
                    self._mark_gone(room, "its Worker exited; its data is gone by design")

    def _mark_gone(self, room: Room, reason: str) -> None:
        self.rooms.pop(room.name, None)
        self.gone[room.name] = reason
        bury(self.sandbox_ids, room.sandbox_uid, room.directory)

    async def _adopt_attester(self) -> bool:
        """The Attester an earlier run of this Controller started, if it still serves."""
        record = _read_json(self._attester_record)
        if record is None:
            return False
        attester = await asyncio.to_thread(self.launcher.adopt, "Attester", record)
        if attester is not None:
            if await attester.answers("/target-info") is not None:
                self.attester = attester
                log.info("found the running Attester (%s)", attester.process.key)
                return True
            await attester.client.close()
            attester.process.signal(signal.SIGKILL)  # alive but not serving: it vouches for none
        return False

    async def _start_attester(self) -> None:
        """Start an Attester; it becomes ``self.attester`` only once it serves (until
        then, a request sees the dead one and waits for the lock). One that does not
        come up is killed."""
        attester = await asyncio.to_thread(
            self.launcher.attester,
            data_dir=self.data_dir,
            sockets=self._sockets,
            platform_dir=self.platform_dir,
        )
        try:
            await attester.wait_ready("/target-info")
        except BaseException:
            if attester.process.poll() is None:
                attester.process.signal(signal.SIGKILL)
            await attester.client.close()
            raise
        self.attester = attester
        _write_json(self._attester_record, attester.record())

    async def _recover_rooms(self, *, readmit: bool) -> None:
        """Every room directory is a live Worker we can reach (adopted, and re-admitted by
        a new Attester), or gone: its Worker is killed if it still runs, its ciphertext
        (unreadable without the Worker's key) removed, and the room reported gone."""
        accounted: set[str] = set()
        for directory in sorted((self.data_dir / "rooms").iterdir()):
            record = _read_json(directory / "room.json")
            if record is None:  # a deploy that never finished: nobody was told of it
                _remove(directory)
                continue
            name = str(record["name"])
            reason = await self._adopt_worker(name, directory, record, readmit=readmit)
            if reason is None:
                accounted.add(self.rooms[name].worker.process.key)
                continue
            log.warning("clean room %s is gone: %s", name, reason)
            self.gone[name] = reason
            bury(self.sandbox_ids, int(record["sandbox_uid"]), directory)
            for entry in directory.iterdir():
                if entry.name in ("room.json", "worker.log"):
                    continue
                if entry.is_dir():
                    _remove(entry)
                else:
                    entry.unlink(missing_ok=True)
        if self.attester is not None:
            accounted.add(self.attester.process.key)
        for stray in await asyncio.to_thread(self.launcher.strays, self.data_dir, accounted):
            log.warning("killing enclave process %s that no room accounts for", stray.key)
            stray.signal(signal.SIGKILL)

    async def _adopt_worker(
        self, name: str, directory: Path, record: dict[str, Any], *, readmit: bool
    ) -> str | None:
        """Adopt the room's Worker; None, or why the room is gone."""
        worker = await asyncio.to_thread(self.launcher.adopt, f"Worker {name}", record)
        if worker is None:
            return "its Worker exited while the Controller was down; its data is gone by design"
        state = await worker.answers("/state")
        if state is None or state.get("worker_id") != record["worker_id"]:
            await worker.client.close()
            worker.process.signal(signal.SIGKILL)
            return "its Worker no longer answers as the admitted Worker; killed"
        if not self.sandbox_ids.claim(int(record["sandbox_uid"]), directory):
            await worker.client.close()
            worker.process.signal(signal.SIGKILL)
            return "its sandbox uid now belongs to another room on this host; killed"
        if readmit:
            try:  # a new Attester: local attestation again, exactly as at deploy
                await self._admit(worker)
            except EnclaveProcessError as error:
                await worker.client.close()
                worker.process.signal(signal.SIGKILL)
                return f"the new Attester did not admit its Worker again: {error}"
        self.rooms[name] = Room(
            name, worker, record["worker_id"], directory, int(record["sandbox_uid"])
        )
        log.info(
            "clean room %s: found its Worker %s (%s)", name, record["worker_id"], worker.process.key
        )
        return None

    async def _admit(self, worker: EnclaveProcess) -> str:
        """Relay admission: Attester TARGETINFO → Worker REPORT → verdict → Worker."""
        attester = self._attester()
        target = await attester.call("GET", "/target-info")
        request = await worker.call("POST", "/admission/request", target)
        admitted = await attester.call("POST", "/admit", request)
        await worker.call("POST", "/admission/complete", {"report": admitted["report"]})
        return str(admitted["worker_id"])

    def _attester(self) -> EnclaveProcess:
        if self.attester is None or self.attester.process.poll() is not None:
            raise EnclaveProcessError("the Attester is not running", status=503)
        return self.attester

    async def _live_attester(self) -> EnclaveProcess:
        """The Attester; if it died, a new one that has admitted every live Worker again."""
        if self.attester is not None and self.attester.process.poll() is None:
            return self.attester
        async with self._lock:
            if self.attester is None or self.attester.process.poll() is not None:
                log.warning("the Attester exited; starting a new one")
                if self.attester is not None:
                    await self.attester.client.close()
                try:
                    await self._start_attester()
                except (EnclaveProcessError, OSError) as error:
                    self.attester_failure = str(error)
                    log.error("a new Attester did not start: %s", error)
                    raise
                self.attester_failure = None
                for name, room in list(self.rooms.items()):
                    if room.worker.process.poll() is not None:
                        continue
                    try:
                        await self._admit(room.worker)
                    except EnclaveProcessError as error:
                        log.warning("clean room %s not admitted again: %s", name, error)
        return self._attester()

    async def deploy(
        self, name: str, spec_json: bytes, fetch_bundle: Callable[[Path], Awaitable[None]]
    ) -> Room:
        """Fetch the bundle into the room's directory, start the clean room's Worker and
        relay its admission by the Attester."""
        await self._live_attester()
        async with self._lock:
            if name in self.rooms or name in self.gone or name in self.deploying:
                raise EnclaveProcessError(f"clean room {name!r} exists here", status=409)
            directory = self.data_dir / "rooms" / name
            directory.mkdir(mode=0o700, parents=True, exist_ok=False)
            under_way = self.deploying[name] = DeployUnderWay(name)
        try:
            return await self._deploy(name, directory, spec_json, fetch_bundle, under_way)
        finally:
            del self.deploying[name]
            under_way.done.set()

    async def _deploy(
        self,
        name: str,
        directory: Path,
        spec_json: bytes,
        fetch_bundle: Callable[[Path], Awaitable[None]],
        under_way: DeployUnderWay,
    ) -> Room:
        try:
            # A host-wide lock and a look at /proc: off the event loop, which carries
            # every other room's sessions meanwhile.
            uid = await asyncio.to_thread(self.sandbox_ids.allocate, directory)
        except SandboxIdError as error:
            _remove(directory)
            raise EnclaveProcessError(f"no sandbox uid for {name!r}: {error}", 503) from error
        try:
            under_way.check()
            (directory / "spec.json").write_bytes(spec_json)
            fetch = asyncio.ensure_future(fetch_bundle(directory / "function.tar"))
            under_way.fetch = fetch
            try:
                await asyncio.wait({fetch})
            finally:
                fetch.cancel()  # this request itself was cancelled (done: nothing to cancel)
            under_way.check()
            fetch.result()
        except BaseException:
            bury(self.sandbox_ids, uid, directory)
            _remove(directory)
            raise
        try:
            worker = await asyncio.to_thread(
                self.launcher.worker,
                room=name,
                directory=directory,
                sockets=self._sockets,
                platform_dir=self.platform_dir,
                sandbox_uid=uid,
            )
        except BaseException:
            bury(self.sandbox_ids, uid, directory)
            _remove(directory)
            raise
        try:
            under_way.check()
            await worker.wait_ready("/state")
            worker_id = await self._admit(worker)
            under_way.check()  # last: from here on the room is made without a pause
        except BaseException:
            await worker.stop()
            bury(self.sandbox_ids, uid, directory)
            _remove(directory)
            raise
        room = Room(name, worker, worker_id, directory, uid)
        # Written last, atomically: a room directory without it is a deploy that never
        # finished, and a restarted Controller removes it (and kills its Worker).
        _write_json(
            directory / "room.json",
            {"name": name, "worker_id": worker_id, "sandbox_uid": uid, **worker.record()},
        )
        self.rooms[name] = room
        log.info("clean room %s: Worker %s admitted", name, room.worker_id)
        return room

    def room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None and name in self.deploying:
            # Not 404: whoever asks must not take a deploy under way for none.
            raise EnclaveProcessError(f"clean room {name!r} is being deployed", status=409)
        if room is None and name in self.gone:
            raise EnclaveProcessError(
                f"the Worker of {name!r} is gone ({self.gone[name]}): redeploy", status=410
            )
        if room is None:
            raise EnclaveProcessError(f"no clean room {name!r} on this compute server", 404)
        if room.worker.process.poll() is not None:
            self._mark_gone(room, f"its Worker exited ({room.worker.process.returncode})")
            raise EnclaveProcessError(
                f"the Worker of {name!r} exited ({room.worker.process.returncode}); "
                "its data is gone by design: redeploy",
                status=410,
            )
        return room

    async def attest(self, name: str, nonce: str) -> Any:
        room = self.room(name)
        attester = await self._live_attester()
        return await attester.call("POST", "/attest", {"worker_id": room.worker_id, "nonce": nonce})

    async def attest_raw(self, name: str, nonce: str) -> Answer:
        """The Attester's answer to an attestation request for ``name``'s Worker, unparsed."""
        room = self.room(name)
        attester = await self._live_attester()
        body = json.dumps({"worker_id": room.worker_id, "nonce": nonce}).encode()
        return await attester.client.request("POST", "/attest", content=body)

    async def delete(self, name: str) -> None:
        under_way = self.deploying.get(name)
        if under_way is not None:
            # Ends the deploy: its fetch now, else at its next step; then it has stopped
            # its Worker, if any, and removed the room's directory.
            under_way.abandoned = True
            if under_way.fetch is not None:
                under_way.fetch.cancel()
            await under_way.done.wait()
            return
        room = self.rooms.pop(name, None)
        if room is None and self.gone.pop(name, None) is not None:
            _remove(self.data_dir / "rooms" / name)
            return
        if room is None:
            raise EnclaveProcessError(f"no clean room {name!r} on this compute server", 404)
        with contextlib.suppress(EnclaveProcessError):
            await self._attester().call("POST", "/forget", {"worker_id": room.worker_id})
        if room.worker.process.poll() is None:
            with contextlib.suppress(EnclaveProcessError):
                await room.worker.call("POST", "/delete")
        await room.worker.stop()
        bury(self.sandbox_ids, room.sandbox_uid, room.directory)
        _remove(room.directory)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await asyncio.to_thread(self.launcher.close)
        for room in list(self.rooms.values()):
            await room.worker.stop(grace_s=2.0)
        self.rooms.clear()
        if self.attester is not None:
            await self.attester.stop(grace_s=2.0)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _write_json(path: Path, document: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document))
    os.replace(temporary, path)


def enclave_processes(data_dir: Path) -> list[int]:
    """The enclave processes (Attester, Workers, spares) started for the compute server
    whose data directory is ``data_dir``: those that run a ``cleanroom.enclave.*``
    module with that directory, or a path under it, as an argument. Sorted by pid; a
    process may be a zombie (:func:`start_time` says None for one)."""
    marker = str(data_dir)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if any(w.startswith("cleanroom.enclave.") for w in words) and any(
            w == marker or w.startswith(marker + "/") for w in words
        ):
            found.append(int(entry.name))
    return sorted(found)


def _remove(directory: Path) -> None:
    """Remove a room's directory: by now only ciphertext, the spec and the bundle."""
    shutil.rmtree(directory, ignore_errors=True)
