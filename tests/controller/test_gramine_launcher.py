"""Starting Gramine enclaves: what the Controller asks of the Docker Engine (checked against
recorded Engine API requests, on a fake daemon that records them), the direct launcher's
command line, and every refusal to start on a host that cannot run the enclaves."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cleanroom import __version__
from cleanroom.cli.main import main
from cleanroom.controller.enclaves import worker_socket_name
from cleanroom.controller.launchers.docker import DockerEngine
from cleanroom.controller.launchers.gramine import (
    GRAMINE_DIR,
    DirectLauncher,
    DockerLauncher,
    SgxHost,
    check_signed,
    entrypoint_script,
    server_id,
)
from cleanroom.errors import CheckFailed
from cleanroom.sgx import AttributeFlags, Attributes
from cleanroom.tee.gramine.manifest import LISTEN
from cleanroom.tee.measure import ATTESTER, WORKER
from tests.controller.fake_docker import FakeDocker, Recorded, fake_docker
from tests.tee.gramine.sigstructs import PRODUCTION, sign, unsigned

REQUESTS = Path(__file__).parent / "docker_requests"
IMAGES = {"attester": "cleanroom/attester-sgx:test", "worker": "cleanroom/worker-sgx:test"}


def manifest_sgx(image: str, *, debug: bool = False, prod_id: int | None = None) -> bytes:
    """A signed manifest as gramine-sgx-sign writes it (every trusted file hashed)."""
    definition = ATTESTER if image == "attester" else WORKER
    prod_id = definition.isv_prod_id if prod_id is None else prod_id
    return f"""
libos.entrypoint = "/opt/cleanroom/venv/bin/python"
loader.entrypoint.uri = "file:/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so"
loader.entrypoint.sha256 = "{"a" * 64}"
loader.log_level = "error"
loader.argv = ["/opt/cleanroom/venv/bin/python", "-m", "{definition.service}"]
sgx.debug = {"true" if debug else "false"}
sgx.remote_attestation = "dcap"
sgx.isvprodid = {prod_id}
sgx.isvsvn = {definition.isv_svn}
sgx.enclave_size = "4G"
sgx.max_threads = 64
sgx.trusted_files = [{{ uri = "file:/opt/cleanroom/venv/bin/python", sha256 = "{"b" * 64}" }}]
""".encode()


def sigstruct(image: str, *, debug: bool = False) -> bytes:
    definition = ATTESTER if image == "attester" else WORKER
    attributes = (
        Attributes(flags=PRODUCTION.flags | AttributeFlags.DEBUG, xfrm=PRODUCTION.xfrm)
        if debug
        else PRODUCTION
    )
    return sign(
        unsigned(
            isv_prod_id=definition.isv_prod_id, isv_svn=definition.isv_svn, attributes=attributes
        )
    ).to_bytes()


def image_files(image: str, **changes: Any) -> dict[str, bytes]:
    files = {
        f"{GRAMINE_DIR}/{image}.manifest.sgx": manifest_sgx(image),
        f"{GRAMINE_DIR}/{image}.sig": sigstruct(image),
    }
    files.update(changes)
    return {path: data for path, data in files.items() if data is not None}


@pytest.fixture
def sgx_host(tmp_path: Path) -> Iterator[SgxHost]:
    """A host with what Gramine needs: /dev/null stands in for the SGX device (a character
    device), a listening Unix socket for AESM, a quote provider configuration."""
    aesm = tmp_path / "aesmd" / "aesm.socket"
    aesm.parent.mkdir()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(aesm))
    qcnl = tmp_path / "sgx_default_qcnl.conf"
    qcnl.write_text(
        "{\n  // the PCCS the quoting enclave fetches PCK certificates from\n"
        '  "pccs_url": "https://global.acccache.azure.net/sgx/certification/v4/",\n'
        '  "use_secure_cert": true\n}\n'
    )
    try:
        yield SgxHost(Path("/dev/null"), aesm, qcnl)
    finally:
        listener.close()


@pytest.fixture
def docker(tmp_path: Path) -> Iterator[FakeDocker]:
    fake = FakeDocker(images={IMAGES[name]: image_files(name) for name in IMAGES})
    with fake_docker(tmp_path / "docker.sock", fake):
        yield fake


def launcher(tmp_path: Path, sgx: SgxHost) -> DockerLauncher:
    return DockerLauncher(DockerEngine(tmp_path / "docker.sock"), dict(IMAGES), sgx)


def refused(check: str, call: Any, *args: Any) -> CheckFailed:
    with pytest.raises(CheckFailed) as caught:
        call(*args)
    assert caught.value.check == check, caught.value
    return caught.value


# -- the SGX host ------------------------------------------------------------------------------


def test_a_ready_host_passes(sgx_host: SgxHost) -> None:
    sgx_host.check()


def test_no_sgx_device_is_refused(sgx_host: SgxHost, tmp_path: Path) -> None:
    missing = SgxHost(tmp_path / "sgx_enclave", sgx_host.aesm_socket, sgx_host.qcnl_config)
    refused("sgx-device", missing.check)
    (tmp_path / "sgx_enclave").write_bytes(b"")
    refused("sgx-device", missing.check)  # a file is not the device


def test_no_aesm_is_refused(sgx_host: SgxHost, tmp_path: Path) -> None:
    host = SgxHost(sgx_host.sgx_device, tmp_path / "aesm.socket", sgx_host.qcnl_config)
    refused("aesm-socket", host.check)
    (tmp_path / "aesm.socket").write_text("")
    refused("aesm-socket", host.check)  # a file is not the service's socket


@pytest.mark.parametrize(
    "content",
    [None, "{not json", '{"use_secure_cert": true}', '{"pccs_url": "http://pccs:8081/"}'],
)
def test_no_quote_provider_configuration_is_refused(
    sgx_host: SgxHost, tmp_path: Path, content: str | None
) -> None:
    qcnl = tmp_path / "qcnl.conf"
    if content is not None:
        qcnl.write_text(content)
    refused("qcnl-config", SgxHost(sgx_host.sgx_device, sgx_host.aesm_socket, qcnl).check)


# -- the signed enclave ------------------------------------------------------------------------


def test_a_signed_enclave_is_accepted() -> None:
    signed = check_signed("worker", manifest_sgx("worker"), sigstruct("worker"), "here")
    assert signed.measurement.isv_prod_id == WORKER.isv_prod_id
    assert signed.manifest.enclave_size == "4G"


def test_a_missing_signed_manifest_is_refused() -> None:
    error = refused("signed-manifest", check_signed, "worker", None, sigstruct("worker"), "here")
    assert "manifest.sgx" in str(error)
    refused("signed-manifest", check_signed, "worker", manifest_sgx("worker"), None, "here")


def test_a_debug_enclave_is_refused() -> None:
    debug_manifest = manifest_sgx("worker", debug=True)
    refused("manifest-debug", check_signed, "worker", debug_manifest, sigstruct("worker"), "x")
    debug_sig = sigstruct("worker", debug=True)
    refused("sigstruct-debug", check_signed, "worker", manifest_sgx("worker"), debug_sig, "x")


def test_a_signature_of_another_manifest_is_refused() -> None:
    other = manifest_sgx("worker", prod_id=9)
    refused("signed-manifest", check_signed, "worker", other, sigstruct("worker"), "x")
    refused("manifest-image", check_signed, "attester", manifest_sgx("worker"), b"", "x")
    refused("sigstruct-size", check_signed, "worker", manifest_sgx("worker"), b"\0" * 1807, "x")


# -- containers through the Engine API ----------------------------------------------------------


def test_preflight_reads_each_signed_image(
    docker: FakeDocker, tmp_path: Path, sgx_host: SgxHost
) -> None:
    signed = launcher(tmp_path, sgx_host).preflight()
    assert set(signed) == {"attester", "worker"}
    assert signed["attester"].measurement.isv_prod_id == ATTESTER.isv_prod_id
    archive_paths = sorted(r.query["path"] for r in docker.requests if r.path.endswith("/archive"))
    assert archive_paths == sorted(
        f"{GRAMINE_DIR}/{i}.{e}" for i in IMAGES for e in ("manifest.sgx", "sig")
    )
    # The probe containers never start, and are removed.
    assert not any(r.path.endswith("/start") for r in docker.requests)
    assert docker.containers == {}
    # They are confined as the enclaves' containers are (one builder for both), and
    # labelled as this release's.
    probes = [r.body for r in docker.creates()]
    assert len(probes) == 2
    for body in probes:
        assert body["Cmd"] == ["true"]
        assert body["NetworkDisabled"] is True
        assert body["Labels"] == {
            "org.cleanroom.role": "preflight",
            "org.cleanroom.version": __version__,
        }
        assert body["HostConfig"] == {
            "NetworkMode": "none",
            "ReadonlyRootfs": True,
            "AutoRemove": False,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "PidsLimit": 256,
            "RestartPolicy": {"Name": "no"},
            "LogConfig": {"Type": "none", "Config": {}},
        }


def test_preflight_refuses_a_missing_or_unsigned_image(
    docker: FakeDocker, tmp_path: Path, sgx_host: SgxHost
) -> None:
    del docker.images[IMAGES["worker"]]
    refused("signed-manifest", launcher(tmp_path, sgx_host).preflight)
    docker.images[IMAGES["worker"]] = image_files("worker", **{f"{GRAMINE_DIR}/worker.sig": None})
    refused("signed-manifest", launcher(tmp_path, sgx_host).preflight)
    docker.images[IMAGES["worker"]] = image_files(
        "worker", **{f"{GRAMINE_DIR}/worker.manifest.sgx": manifest_sgx("worker", debug=True)}
    )
    refused("manifest-debug", launcher(tmp_path, sgx_host).preflight)
    assert docker.containers == {}


def test_preflight_refuses_without_a_container_engine(tmp_path: Path, sgx_host: SgxHost) -> None:
    refused("container-engine", launcher(tmp_path, sgx_host).preflight)
    broken = FakeDocker(down=True)
    with fake_docker(tmp_path / "docker.sock", broken):
        refused("container-engine", launcher(tmp_path, sgx_host).preflight)


def expected(name: str, **values: str) -> dict[str, Any]:
    text = (REQUESTS / name).read_text()
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    assert not re.search(r"\{[a-z_]+\}", text), "a placeholder left unfilled"
    return dict(json.loads(text))


def as_recorded(request: Recorded) -> dict[str, Any]:
    return {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "body": request.body,
    }


def test_a_worker_container_is_the_recorded_request(
    docker: FakeDocker, tmp_path: Path, sgx_host: SgxHost
) -> None:
    data_dir = tmp_path / "compute"
    room_dir = data_dir / "rooms" / "overlap"
    room_dir.mkdir(parents=True)
    sockets = tmp_path / "sockets"
    process = launcher(tmp_path, sgx_host).worker(
        room="overlap", directory=room_dir, sockets=sockets, platform_dir=tmp_path, sandbox_uid=0
    )
    socket_name = worker_socket_name("overlap")
    assert docker.creates() and as_recorded(docker.creates()[-1]) == expected(
        "worker-create.json",
        server=server_id(data_dir),
        socket_name=socket_name,
        image=IMAGES["worker"],
        room="overlap",
        version=__version__,
        sgx_device=str(sgx_host.sgx_device),
        room_dir=str(room_dir),
        socket_dir=str(sockets / socket_name),
        aesm_dir=str(sgx_host.aesm_socket.parent),
    )
    assert process.socket == sockets / socket_name / "enclave.sock"
    assert process.log == room_dir / "worker.log"
    container = process.process.record()["container"]
    assert [r.path for r in docker.requests[-2:]] == [
        f"/v1.44/containers/{container}/start",
        f"/v1.44/containers/{container}/json",
    ]


def test_the_attester_container_is_the_recorded_request(
    docker: FakeDocker, tmp_path: Path, sgx_host: SgxHost
) -> None:
    data_dir = tmp_path / "compute"
    sockets = tmp_path / "sockets"
    process = launcher(tmp_path, sgx_host).attester(
        data_dir=data_dir, sockets=sockets, platform_dir=tmp_path
    )
    assert as_recorded(docker.creates()[-1]) == expected(
        "attester-create.json",
        server=server_id(data_dir),
        image=IMAGES["attester"],
        version=__version__,
        sgx_device=str(sgx_host.sgx_device),
        room_dir=str(data_dir / "attester"),
        socket_dir=str(sockets / "attester"),
        aesm_dir=str(sgx_host.aesm_socket.parent),
    )
    assert process.log == data_dir / "attester" / "attester.log"


def test_every_field_sent_is_one_the_engine_api_defines(
    docker: FakeDocker, tmp_path: Path, sgx_host: SgxHost
) -> None:
    fields = json.loads((REQUESTS / "engine-api-fields.json").read_text())
    types = {"string": str, "array": list, "object": dict, "boolean": bool, "integer": int}
    room_dir = tmp_path / "compute" / "rooms" / "r"
    room_dir.mkdir(parents=True)
    launcher(tmp_path, sgx_host).worker(
        room="r", directory=room_dir, sockets=tmp_path / "s", platform_dir=tmp_path, sandbox_uid=0
    )
    body = docker.creates()[-1].body
    for definition, values in (("ContainerConfig", body), ("HostConfig", body["HostConfig"])):
        for key, value in values.items():
            assert key in fields[definition], f"{definition}.{key} is not in the Engine API"
            assert isinstance(value, types[fields[definition][key]]), f"{definition}.{key}"
    for device in body["HostConfig"]["Devices"]:
        assert set(device) <= set(fields["DeviceMapping"])
    assert body["HostConfig"]["RestartPolicy"]["Name"] in fields["RestartPolicy.Name"]
    assert body["HostConfig"]["LogConfig"]["Type"] in fields["LogConfig.Type"]


def test_a_container_is_signalled_polled_found_again_and_swept(
    docker: FakeDocker, tmp_path: Path, sgx_host: SgxHost
) -> None:
    data_dir = tmp_path / "compute"
    chosen = launcher(tmp_path, sgx_host)
    attester = chosen.attester(data_dir=data_dir, sockets=tmp_path / "s", platform_dir=tmp_path)
    room_dir = data_dir / "rooms" / "r"
    room_dir.mkdir(parents=True)
    worker = chosen.worker(
        room="r", directory=room_dir, sockets=tmp_path / "s", platform_dir=tmp_path, sandbox_uid=0
    )
    assert worker.process.poll() is None
    found = chosen.adopt("Worker r", worker.record())
    assert found is not None and found.process.key == worker.process.key
    # A container of this server that nothing accounts for is a stray; the others are not.
    assert [s.key for s in chosen.strays(data_dir, {attester.process.key})] == [worker.process.key]
    assert chosen.strays(tmp_path / "another", set()) == []
    worker.process.signal(signal.SIGTERM)
    kill = docker.requests[-1]
    assert kill.path.endswith(f"{worker.process.record()['container']}/kill")
    assert kill.query == {"signal": "SIGTERM"}
    assert worker.process.wait() != 0  # removed after it exited (AutoRemove)
    assert chosen.adopt("Worker r", worker.record()) is None


# -- without a container engine ---------------------------------------------------------------


def test_the_direct_launcher_gives_gramine_the_view_a_container_would(
    tmp_path: Path, sgx_host: SgxHost
) -> None:
    command = DirectLauncher(tmp_path / "gramine", sgx_host).command(
        "worker", tmp_path / "room", tmp_path / "socket"
    )
    assert command[0] == "bwrap"
    pairs = list(itertools.pairwise(command))
    assert "--unshare-net" in command and "--die-with-parent" in command
    assert ("--ro-bind", "/") in pairs
    assert command[command.index("--dev-bind") + 1 : command.index("--dev-bind") + 3] == [
        str(sgx_host.sgx_device),
        "/dev/sgx_enclave",
    ]
    binds = [command[i + 1 : i + 3] for i, word in enumerate(command) if word == "--bind"]
    assert binds == [
        [str(sgx_host.aesm_socket.parent), "/var/run/aesmd"],
        [str(tmp_path / "room"), "/cleanroom/room"],
        [str(tmp_path / "socket"), "/cleanroom/socket"],
    ]
    assert command[-3:] == ["/bin/sh", str(entrypoint_script()), "worker"]
    assert entrypoint_script().is_file()


def test_the_direct_launcher_refuses_without_gramine_or_signed_files(
    tmp_path: Path, sgx_host: SgxHost
) -> None:
    refused(
        "gramine-sgx", DirectLauncher(tmp_path, sgx_host, tools=("no-such-tool-here",)).preflight
    )
    present = DirectLauncher(tmp_path, sgx_host, tools=("sh",))
    refused("signed-manifest", present.preflight)
    for image in IMAGES:
        (tmp_path / f"{image}.manifest.sgx").write_bytes(manifest_sgx(image))
        (tmp_path / f"{image}.sig").write_bytes(sigstruct(image))
    assert set(present.preflight()) == {"attester", "worker"}
    (tmp_path / "worker.sig").write_bytes(sigstruct("worker", debug=True))
    refused("sigstruct-debug", present.preflight)


def test_the_entrypoint_relays_to_the_port_the_manifest_listens_on() -> None:
    script = entrypoint_script().read_text()
    for image, listen in LISTEN.items():
        assert f"{image}) port={listen.rpartition(':')[2]} ;;" in script
    assert "exec gramine-sgx" in script and "UNIX-LISTEN:/cleanroom/socket/enclave.sock" in script


def test_the_entrypoint_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck is not None, "scripts/test.sh installs shellcheck"
    done = subprocess.run(
        [shellcheck, "--shell=sh", str(entrypoint_script())],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout


# -- the command refuses to start ---------------------------------------------------------------


def compute(tmp_path: Path, sgx: SgxHost, *extra: str) -> list[str]:
    """The command line of a registered compute server on SGX (its credentials valid),
    so that only what the test leaves out can refuse it."""
    credentials = tmp_path / "compute-credentials.json"
    if not credentials.exists():
        credentials.write_text(
            json.dumps(
                {
                    "type": "cleanroom/compute-credentials/v1",
                    "url": "http://127.0.0.1:9",
                    "client_id": "cs-" + "0" * 32,
                    "client_secret": "secret",
                }
            )
        )
        credentials.chmod(0o600)
    return [
        "server", "compute", "--tee", "gramine",
        "--credentials", str(credentials),
        "--data-dir", str(tmp_path / "compute"),
        "--sgx-device", str(sgx.sgx_device),
        "--aesm-socket", str(sgx.aesm_socket),
        "--qcnl-config", str(sgx.qcnl_config),
        "--docker-socket", str(tmp_path / "docker.sock"),
        *extra,
    ]  # fmt: skip


PCCS = ("--pccs-url", "https://pccs.example:8081")


def test_gramine_needs_a_pccs(
    tmp_path: Path, sgx_host: SgxHost, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(compute(tmp_path, sgx_host)) == 2
    assert "--pccs-url" in capsys.readouterr().err


@pytest.mark.parametrize("missing", ["sgx_device", "aesm_socket", "qcnl_config"])
def test_the_server_refuses_to_start_without_what_sgx_needs(
    tmp_path: Path, sgx_host: SgxHost, missing: str, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = {
        "sgx_device": sgx_host.sgx_device,
        "aesm_socket": sgx_host.aesm_socket,
        "qcnl_config": sgx_host.qcnl_config,
    }
    paths[missing] = tmp_path / "absent"
    assert main(compute(tmp_path, SgxHost(**paths), *PCCS)) == 1
    error = capsys.readouterr().err
    check = {"sgx_device": "sgx-device", "aesm_socket": "aesm-socket", "qcnl_config": "qcnl-config"}
    assert f"refusing to start: {check[missing]}:" in error


def test_the_server_refuses_to_start_without_signed_images(
    docker: FakeDocker, tmp_path: Path, sgx_host: SgxHost, capsys: pytest.CaptureFixture[str]
) -> None:
    del docker.images[IMAGES["attester"]]
    images = ("--attester-image", IMAGES["attester"], "--worker-image", IMAGES["worker"])
    assert main(compute(tmp_path, sgx_host, *PCCS, *images)) == 1
    assert "refusing to start: signed-manifest:" in capsys.readouterr().err
    docker.images[IMAGES["attester"]] = image_files(
        "attester", **{f"{GRAMINE_DIR}/attester.sig": sigstruct("attester", debug=True)}
    )
    assert main(compute(tmp_path, sgx_host, *PCCS, *images)) == 1
    assert "refusing to start: sigstruct-debug:" in capsys.readouterr().err


def test_without_a_container_engine_gramine_must_be_installed(
    tmp_path: Path, sgx_host: SgxHost, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("gramine-sgx"):
        pytest.skip("Gramine is installed here")
    assert main(compute(tmp_path, sgx_host, *PCCS, "--launcher", "auto")) == 1
    assert "refusing to start: gramine-sgx:" in capsys.readouterr().err
    assert main(compute(tmp_path, sgx_host, *PCCS, "--launcher", "docker")) == 1
    assert "refusing to start: container-engine:" in capsys.readouterr().err
