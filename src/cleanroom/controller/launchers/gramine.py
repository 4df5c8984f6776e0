"""Starting the Attester and the Workers as Gramine SGX enclaves.

With a container engine, each enclave is a container of its signed image (the
Attester resident, one Worker per clean room), created through the Docker Engine API
(:class:`DockerLauncher`): the SGX device and the AESM socket, no network, a
read-only root, no capabilities, labels tying it to this compute server and its
room. Without one, ``gramine-sgx`` runs directly in a bubblewrap of its own with
the same view (:class:`DirectLauncher`).

Either way the enclave listens on loopback in its own network namespace (Gramine's
Unix sockets do not reach the host) and ``enclave-entrypoint.sh`` relays the
Controller's Unix socket to it, outside the enclave: as untrusted as the Controller
itself, which only relays too.

Before the Controller serves, :func:`preflight` refuses to start, naming the check,
when this host cannot run them: no SGX device (``sgx-device``), no AESM
(``aesm-socket``), no quote provider configuration (``qcnl-config``), a missing or
unacceptable signed enclave (``signed-manifest``, and the manifest and SIGSTRUCT
checks), no container engine or Gramine (``container-engine``, ``gramine-sgx``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cleanroom import __version__
from cleanroom.controller.enclaves import (
    AdoptedProcess,
    ChildProcess,
    EnclaveProcess,
    ProcessHandle,
    ProcessLauncher,
    start_time,
    worker_socket_name,
)
from cleanroom.controller.launchers.docker import DockerEngine, DockerError
from cleanroom.errors import CheckFailed
from cleanroom.tee.gramine.manifest import ManifestFacts, check_manifest
from cleanroom.tee.gramine.measure import GramineMeasurement, read_sigstruct

GRAMINE_DIR = Path("/opt/cleanroom/gramine")  # the signed manifests, in the image or here
IMAGES = ("attester", "worker")
ROOM_MOUNT = "/cleanroom/room"  # the room directory (spec, bundle, sealed store, workspace)
SOCKET_MOUNT = "/cleanroom/socket"  # where the relay listens for the Controller
ENTRYPOINT = "/opt/cleanroom/bin/enclave-entrypoint"  # in the images
LABEL = "org.cleanroom"
POLL_INTERVAL_S = 0.5


class LaunchRefused(CheckFailed):
    """This host cannot run Gramine enclaves as configured; the server does not start."""


@dataclass(frozen=True)
class SgxHost:
    """Where an SGX host keeps what a Gramine enclave needs from it."""

    sgx_device: Path = Path("/dev/sgx_enclave")
    aesm_socket: Path = Path("/var/run/aesmd/aesm.socket")
    qcnl_config: Path = Path("/etc/sgx_default_qcnl.conf")

    def check(self) -> None:
        """Refuse a host without the SGX device, AESM, or a configured quote provider."""
        if not _is(self.sgx_device, stat.S_ISCHR):
            raise LaunchRefused(
                "sgx-device",
                f"the SGX device {self.sgx_device}",
                "missing" if not self.sgx_device.exists() else "not a character device",
                "this host cannot create SGX enclaves",
                "use an SGX machine (Azure DCsv3/DCdsv3, or Xeon with FLC) on Linux 5.11 or "
                "later; docs/deploy-sgx.md, host set-up",
            )
        if not _is(self.aesm_socket, stat.S_ISSOCK):
            raise LaunchRefused(
                "aesm-socket",
                f"AESM listening on {self.aesm_socket}",
                "missing" if not self.aesm_socket.exists() else "not a socket",
                "the Attester cannot get a quote without the AESM service",
                "install and start sgx-aesm-service with libsgx-aesm-ecdsa-plugin and "
                "libsgx-dcap-default-qpl (docs/deploy-sgx.md)",
            )
        _check_qcnl(self.qcnl_config)


def _is(path: Path, kind: Callable[[int], bool]) -> bool:
    try:
        return kind(path.stat().st_mode)
    except OSError:
        return False


def _check_qcnl(path: Path) -> None:
    """The DCAP quote provider's configuration: JSON (with // comment lines, as Intel
    ships it) naming the PCCS the platform's PCK certificates come from."""
    try:
        text = path.read_text()
    except OSError as error:
        raise LaunchRefused(
            "qcnl-config",
            f"the quote provider's configuration {path}",
            error.strerror or "unreadable",
            "without it the quoting enclave cannot fetch this platform's PCK certificate",
            "install libsgx-dcap-default-qpl and set pccs_url in it (on Azure: the THIM "
            "URL, docs/deploy-sgx.md)",
        ) from error
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("//")]
    try:
        document = json.loads("\n".join(lines))
    except ValueError as error:
        raise LaunchRefused(
            "qcnl-config", f"JSON in {path}", str(error), "the configuration does not parse"
        ) from error
    url = document.get("pccs_url") if isinstance(document, dict) else None
    if not isinstance(url, str) or not url.startswith("https://"):
        raise LaunchRefused(
            "qcnl-config",
            f'"pccs_url": "https://…" in {path}',
            url,
            "the quote provider names no PCCS",
        )


@dataclass(frozen=True)
class SignedEnclave:
    """A signed enclave the launcher may start: its manifest's facts and its signature's."""

    image: str
    manifest: ManifestFacts
    measurement: GramineMeasurement


def check_signed(
    image: str, manifest: bytes | None, sig: bytes | None, where: str
) -> SignedEnclave:
    """Refuse to start an enclave whose signed manifest or SIGSTRUCT is missing, or would
    not protect it (a debug manifest or signature, an insecure option)."""
    if manifest is None or sig is None:
        missing = [
            name for name, data in (("manifest.sgx", manifest), ("sig", sig)) if data is None
        ]
        raise LaunchRefused(
            "signed-manifest",
            f"{image}.manifest.sgx and {image}.sig in {where}",
            f"no {' or '.join(missing)}",
            f"the {image} enclave is not built and signed",
            "build and sign the images (docs/deploy-sgx.md, building and signing)",
        )
    facts = check_manifest(manifest.decode("utf-8", errors="replace"), image=image)
    measurement = read_sigstruct(sig)
    if (measurement.isv_prod_id, measurement.isv_svn) != (facts.isv_prod_id, facts.isv_svn):
        raise LaunchRefused(
            "signed-manifest",
            f"ISVPRODID {facts.isv_prod_id}, ISVSVN {facts.isv_svn} (the manifest)",
            f"ISVPRODID {measurement.isv_prod_id}, ISVSVN {measurement.isv_svn} (the .sig)",
            f"the {image} signature is not the signature of this manifest",
        )
    return SignedEnclave(image, facts, measurement)


def server_id(data_dir: Path) -> str:
    """Names this compute server's containers (one host may run several servers)."""
    return hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]


def entrypoint_script() -> Path:
    """The relay-and-enclave entrypoint shipped with cleanroom (the images copy it)."""
    return Path(str(resources.files("cleanroom.controller.launchers") / "enclave-entrypoint.sh"))


# -- containers --------------------------------------------------------------------------------


@dataclass
class ContainerHandle:
    """An enclave's container, seen through the Engine API."""

    engine: DockerEngine
    container: str
    pid: int = 0  # its init as the host sees it (0 if this Controller cannot see it)
    returncode: int | None = None
    _checked: float = field(default=0.0, repr=False)

    @property
    def key(self) -> str:
        return f"container:{self.container}"

    def poll(self) -> int | None:
        if self.returncode is not None or time.monotonic() - self._checked < POLL_INTERVAL_S:
            return self.returncode
        self._checked = time.monotonic()
        try:
            state = self.engine.inspect(self.container)
        except DockerError:
            return None  # the engine is busy or restarting: ask again later
        if state is None:
            self.returncode = -9  # removed: it is gone, that is what counts
        elif not state.get("State", {}).get("Running", False):
            self.returncode = int(state.get("State", {}).get("ExitCode", -9))
        return self.returncode

    def wait(self) -> int:
        while self.poll() is None:
            time.sleep(POLL_INTERVAL_S)
        return self.returncode if self.returncode is not None else -9

    def signal(self, signum: int) -> None:
        try:
            self.engine.kill(self.container, signal.Signals(signum).name)
        except DockerError:
            return
        self._checked = 0.0

    def record(self) -> dict[str, Any]:
        return {"container": self.container}


@dataclass
class DockerLauncher:
    """Gramine enclaves as containers of their signed images, through the Engine API."""

    engine: DockerEngine
    images: dict[str, str]  # "attester" / "worker" -> image reference
    sgx: SgxHost = field(default_factory=SgxHost)

    def preflight(self) -> dict[str, SignedEnclave]:
        """Refuse to serve without the engine, or without a signed, acceptable image."""
        try:
            self.engine.ping()
        except DockerError as error:
            raise LaunchRefused(
                "container-engine",
                f"a Docker Engine at {self.engine.socket}",
                str(error),
                "the Worker containers cannot be started",
                "start dockerd, give --docker-socket, or --launcher direct",
            ) from error
        return {image: self._signed(image) for image in IMAGES}

    def _signed(self, image: str) -> SignedEnclave:
        reference = self.images[image]
        where = f"image {reference}"
        try:
            if self.engine.image(reference) is None:
                return check_signed(image, None, None, where)
            # Created to read two files from, never started, and removed.
            probe = self.engine.create(
                f"cleanroom-preflight-{image}-{os.getpid()}",
                confined_request(reference, ["true"], {f"{LABEL}.role": "preflight"}),
            )
            try:
                manifest = self._read(probe, f"{GRAMINE_DIR}/{image}.manifest.sgx")
                sig = self._read(probe, f"{GRAMINE_DIR}/{image}.sig")
            finally:
                self.engine.remove(probe)
        except DockerError as error:
            raise LaunchRefused(
                "container-engine", f"{reference} readable", str(error), "cannot read the image"
            ) from error
        return check_signed(image, manifest, sig, where)

    def _read(self, container: str, path: str) -> bytes | None:
        try:
            return self.engine.read_file(container, path)
        except DockerError as error:
            if error.status == 404:
                return None
            raise

    def _start(
        self,
        name: str,
        role: str,
        *,
        data_dir: Path,
        room_dir: Path,
        socket_dir: Path,
        room: str | None = None,
    ) -> EnclaveProcess:
        """Start the container of one enclave: ``role`` for ``room`` (None: the Attester)."""
        socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        socket = socket_dir / "enclave.sock"
        socket.unlink(missing_ok=True)
        server = server_id(data_dir)
        labels = {f"{LABEL}.compute": server, f"{LABEL}.role": role}
        if room is not None:
            labels[f"{LABEL}.room"] = room
        body = container_request(
            image=self.images[role],
            role=role,
            labels=labels,
            room_dir=room_dir,
            socket_dir=socket_dir,
            sgx=self.sgx,
        )
        # Named as its socket directory is: "attester", or the room's socket name.
        container = self.engine.create(f"cleanroom-{server}-{socket_dir.name}", body)
        try:
            self.engine.start(container)
            state = self.engine.inspect(container) or {}
        except BaseException:
            self.engine.remove(container)
            raise
        handle = ContainerHandle(self.engine, container, int(state.get("State", {}).get("Pid", 0)))
        log = room_dir / f"{role}.log"
        return EnclaveProcess(name, socket, handle, EnclaveProcess._client(socket), log)

    def attester(self, *, data_dir: Path, sockets: Path, platform_dir: Path) -> EnclaveProcess:
        room_dir = data_dir / "attester"
        room_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self._start(
            "Attester",
            "attester",
            data_dir=data_dir,
            room_dir=room_dir,
            socket_dir=sockets / "attester",
        )

    def worker(
        self,
        *,
        room: str,
        directory: Path,
        sockets: Path,
        platform_dir: Path,
        sandbox_uid: int,
    ) -> EnclaveProcess:
        return self._start(
            f"Worker {room}",
            "worker",
            data_dir=directory.parent.parent,  # <data>/rooms/<room>
            room_dir=directory,
            socket_dir=sockets / worker_socket_name(room),
            room=room,
        )

    def adopt(self, name: str, record: dict[str, Any]) -> EnclaveProcess | None:
        container = record.get("container")
        if not isinstance(container, str):
            return None
        try:
            state = self.engine.inspect(container)
        except DockerError:
            return None
        if state is None or not state.get("State", {}).get("Running", False):
            return None
        socket = Path(record["socket"])
        handle = ContainerHandle(self.engine, container, int(state["State"].get("Pid", 0)))
        return EnclaveProcess(name, socket, handle, EnclaveProcess._client(socket))

    def strays(self, data_dir: Path, accounted: set[str]) -> list[ProcessHandle]:
        try:
            found = self.engine.containers({f"{LABEL}.compute": server_id(data_dir)})
        except DockerError:
            return []
        return [
            ContainerHandle(self.engine, str(entry["Id"]))
            for entry in found
            if f"container:{entry['Id']}" not in accounted
        ]

    def standby(self, *, data_dir: Path, platform_dir: Path) -> None:
        """Nothing is started ahead: an enclave is started for its room, measured as such."""

    def close(self) -> None:
        """Nothing to stop: the enclaves are stopped by the host, one by one."""


def container_request(
    *,
    image: str,
    role: str,
    labels: dict[str, str],
    room_dir: Path,
    socket_dir: Path,
    sgx: SgxHost,
) -> dict[str, Any]:
    """The ``POST /containers/create`` body of an enclave's container: confined as every
    container of ours (:func:`confined_request`), with the SGX device, AESM, its room
    and its socket directory."""
    body = confined_request(image, [role], labels)
    body["HostConfig"] |= {
        "Init": True,
        "AutoRemove": True,
        "Devices": [
            {
                "PathOnHost": str(sgx.sgx_device),
                "PathInContainer": "/dev/sgx_enclave",
                "CgroupPermissions": "rwm",
            }
        ],
        "Binds": [
            f"{room_dir}:{ROOM_MOUNT}:rw",
            f"{socket_dir}:{SOCKET_MOUNT}:rw",
            f"{sgx.aesm_socket.parent}:/var/run/aesmd:rw",
        ],
        "Tmpfs": {"/tmp": "rw,nosuid,nodev,noexec,size=16m"},  # noqa: S108 - its own
    }
    return body


def confined_request(image: str, command: list[str], labels: dict[str, str]) -> dict[str, Any]:
    """The ``POST /containers/create`` body every container of ours starts from: labelled
    with this release, no network, a read-only root, no capabilities nor new privileges,
    a bounded number of processes, never restarted, no logs kept by the engine."""
    return {
        "Image": image,
        "Cmd": command,
        "Labels": {**labels, f"{LABEL}.version": __version__},
        "Env": [],
        "NetworkDisabled": True,
        "HostConfig": {
            "NetworkMode": "none",
            "ReadonlyRootfs": True,
            "AutoRemove": False,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "PidsLimit": 256,
            "RestartPolicy": {"Name": "no"},
            "LogConfig": {"Type": "none", "Config": {}},
        },
    }


# -- without a container engine ----------------------------------------------------------------


@dataclass
class DirectLauncher:
    """``gramine-sgx`` on this host, in a bubblewrap giving it the view a container would:
    its room at /cleanroom/room, its socket directory, the SGX device and AESM, no
    network, a read-only root."""

    gramine_dir: Path = GRAMINE_DIR
    sgx: SgxHost = field(default_factory=SgxHost)
    tools: tuple[str, ...] = ("gramine-sgx", "bwrap", "socat")

    def preflight(self) -> dict[str, SignedEnclave]:
        missing = [tool for tool in self.tools if shutil.which(tool) is None]
        if missing:
            raise LaunchRefused(
                "gramine-sgx",
                ", ".join(self.tools),
                f"missing {', '.join(missing)}",
                "without a container engine, the enclaves run with gramine-sgx on this host",
                "install Gramine (packages.gramineproject.io), bubblewrap and socat, or run "
                "a container engine",
            )
        return {image: self._signed(image) for image in IMAGES}

    def _signed(self, image: str) -> SignedEnclave:
        def read(name: str) -> bytes | None:
            try:
                return (self.gramine_dir / name).read_bytes()
            except OSError:
                return None

        return check_signed(
            image, read(f"{image}.manifest.sgx"), read(f"{image}.sig"), str(self.gramine_dir)
        )

    def command(self, role: str, room_dir: Path, socket_dir: Path) -> list[str]:
        """The command line that starts one enclave."""
        return [
            "bwrap",
            "--die-with-parent", "--new-session",
            "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-pid",
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--dev-bind", str(self.sgx.sgx_device), "/dev/sgx_enclave",
            "--proc", "/proc",
            "--tmpfs", "/tmp",  # noqa: S108 - a tmpfs of its own
            "--bind", str(self.sgx.aesm_socket.parent), "/var/run/aesmd",
            "--bind", str(room_dir), ROOM_MOUNT,
            "--bind", str(socket_dir), SOCKET_MOUNT,
            "--setenv", "CLEANROOM_GRAMINE_DIR", str(self.gramine_dir),
            "--", "/bin/sh", str(entrypoint_script()), role,
        ]  # fmt: skip

    def _start(self, name: str, role: str, room_dir: Path, socket_dir: Path) -> EnclaveProcess:
        socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        socket = socket_dir / "enclave.sock"
        socket.unlink(missing_ok=True)
        process = subprocess.Popen(  # noqa: S603 - fixed tools, paths of our own
            self.command(role, room_dir, socket_dir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        log = room_dir / f"{role}.log"
        return EnclaveProcess(
            name, socket, ChildProcess(process), EnclaveProcess._client(socket), log
        )

    def attester(self, *, data_dir: Path, sockets: Path, platform_dir: Path) -> EnclaveProcess:
        room_dir = data_dir / "attester"
        room_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self._start("Attester", "attester", room_dir, sockets / "attester")

    def worker(
        self,
        *,
        room: str,
        directory: Path,
        sockets: Path,
        platform_dir: Path,
        sandbox_uid: int,
    ) -> EnclaveProcess:
        return self._start(
            f"Worker {room}", "worker", directory, sockets / worker_socket_name(room)
        )

    def adopt(self, name: str, record: dict[str, Any]) -> EnclaveProcess | None:
        return ProcessLauncher().adopt(name, record)

    def strays(self, data_dir: Path, accounted: set[str]) -> list[ProcessHandle]:
        found: list[ProcessHandle] = []
        marker = f" {ROOM_MOUNT}"
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or f"pid:{entry.name}" in accounted:
                continue
            try:
                words = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            text = " ".join(word.decode(errors="replace") for word in words)
            started = start_time(int(entry.name))
            if (
                words[:1] == [b"bwrap"]
                and marker in text
                and f" {data_dir}/" in text
                and started is not None
            ):
                found.append(AdoptedProcess(int(entry.name), started))
        return found

    def standby(self, *, data_dir: Path, platform_dir: Path) -> None:
        """Nothing is started ahead: an enclave is started for its room, measured as such."""

    def close(self) -> None:
        """Nothing to stop: the enclaves are stopped by the host, one by one."""
