"""The Attester and Worker services as their Gramine manifests start them (--tee gramine).

Outside an enclave they refuse to start, naming the check. Inside, emulated: the
Attester serves admission and attestation over HTTP from its measured configuration
(no collateral of its own), and the Worker keys its encrypted workspace at random and
refuses to run a function it cannot confine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from cleanroom.enclave.attester_service import gramine_attester
from cleanroom.enclave.errors import RunError
from cleanroom.enclave.http import serve
from cleanroom.enclave.worker import WorkerEnclave
from cleanroom.enclave.worker_service import REFUSAL_PREFIX, _gramine
from cleanroom.insecure.simulated import SimulatedPlatform
from cleanroom.insecure.simulated.gramine import EmulatedDevAttestation
from cleanroom.protocol.encoding import b64u, from_b64u
from cleanroom.tee.gramine import GramineEnclave
from cleanroom.tee.gramine.config import CONFIG_TYPE, EnclaveConfigError, read_enclave_config
from cleanroom.tee.measure import measure
from tests.enclave.test_gramine_backend import FUNCTION, SPEC

NOW = int(time.time())


def write_config(path: Path, image: str, config: dict[str, object]) -> Path:
    path.write_text(json.dumps({"type": CONFIG_TYPE, "image": image, "config": config}))
    return path


@contextlib.contextmanager
def serving(app: FastAPI, socket: Path) -> Iterator[httpx.Client]:
    """``app`` served as the service serves it (uvicorn on a Unix socket), and a client."""
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(app, socket, stop), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not socket.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    transport = httpx.HTTPTransport(uds=str(socket))
    with httpx.Client(transport=transport, base_url="http://attester") as client:
        try:
            yield client
        finally:
            stop.set()
            thread.join(timeout=10)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    return SimulatedPlatform.init(tmp_path_factory.mktemp("platform"), now=NOW)


@pytest.mark.parametrize("service", ["attester_service", "worker_service"])
def test_outside_an_enclave_the_services_refuse_to_start(service: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.json", service.split("_")[0], {})
    argv = [sys.executable, "-m", f"cleanroom.enclave.{service}", "--tee", "gramine"]
    argv += ["--listen", "127.0.0.1:1", "--enclave-config", str(config)]
    if service == "worker_service":
        argv += ["--room-dir", str(tmp_path), "--spec", str(config), "--bundle", str(config)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[-1]
    if service == "worker_service":
        assert json.loads(line.removeprefix(REFUSAL_PREFIX))["check"] == "gramine-sgx"
    else:
        assert line.startswith("attester refused to start: gramine-sgx:")


@pytest.mark.parametrize("service", ["attester_service", "worker_service"])
def test_gramine_needs_its_address_and_configuration(service: str, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", f"cleanroom.enclave.{service}", "--tee", "gramine"]
    if service == "worker_service":
        argv += ["--room-dir", str(tmp_path), "--spec", "s", "--bundle", "b"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "--listen" in done.stderr and "--enclave-config" in done.stderr


def test_the_configuration_must_be_this_images(tmp_path: Path) -> None:
    good = write_config(tmp_path / "w.json", "worker", {"runtimes": {}})
    assert read_enclave_config(good, "worker") == {"runtimes": {}}
    for path in (
        good,  # another image's
        write_config(tmp_path / "x.json", "attester", {}).with_name("missing.json"),
        tmp_path / "x.json",
    ):
        with pytest.raises(EnclaveConfigError) as caught:
            read_enclave_config(path, "attester" if path == good else "worker")
        assert caught.value.check == "enclave-config"


def test_the_gramine_worker_keys_its_workspace_and_refuses_to_run_unconfined(
    platform: SimulatedPlatform, tmp_path: Path
) -> None:
    image = measure("worker")
    files = EmulatedDevAttestation(platform.enclave(image.identity()), "dcap")
    config = write_config(tmp_path / "worker.enclave.json", "worker", image.manifest["config"])
    args = argparse.Namespace(enclave_config=config)
    enclave, measured, confinement = _gramine(
        args, hardware=lambda: (GramineEnclave(files, files.enclave.egetkey), files)
    )
    assert enclave.identity.mr_enclave == image.mr_enclave
    assert measured["runtimes"] == image.manifest["config"]["runtimes"]
    key = files.keys["workspace"]
    assert key is not None and len(key) == 16
    # Another start draws another key: the workspace dies with its Worker.
    _gramine(args, hardware=lambda: (GramineEnclave(files, files.enclave.egetkey), files))
    assert files.keys["workspace"] != key
    with pytest.raises(RunError) as caught:
        confinement.run(
            runtime=None, workspace=tmp_path, outputs=[], handler="h", limits=None, receive=None
        )
    assert caught.value.check == "run-isolation"


def test_the_gramine_attester_serves_admission_and_attestation(
    platform: SimulatedPlatform, tmp_path: Path
) -> None:
    attester_image, worker_image = measure("attester"), measure("worker")
    config = write_config(
        tmp_path / "attester.enclave.json",
        "attester",
        {
            "worker_mrenclaves": [worker_image.mr_enclave.hex()],
            "worker_mrsigner": worker_image.mr_signer.hex(),
        },
    )
    enclave = platform.enclave(attester_image.identity())
    files = EmulatedDevAttestation(enclave, "dcap")
    app = gramine_attester(config, GramineEnclave(files, enclave.egetkey))
    worker_enclave = platform.enclave(worker_image.identity())
    worker_files = EmulatedDevAttestation(worker_enclave, "dcap")
    worker = WorkerEnclave(GramineEnclave(worker_files, worker_enclave.egetkey), SPEC, FUNCTION)
    with serving(app, tmp_path / "a.sock") as client:
        target = from_b64u(client.get("/target-info").json()["target_info"], "target_info")
        report, claims = worker.admission_request(target)
        admitted = client.post("/admit", json={"report": b64u(report), "claims": claims})
        assert admitted.status_code == 200, admitted.text
        worker.complete_admission(
            from_b64u(admitted.json()["report"], "report"),
            attester_mr_signer=attester_image.mr_signer,
        )
        nonce = b64u(bytes(32))
        evidence = client.post("/attest", json={"worker_id": worker.worker_id, "nonce": nonce})
        assert evidence.status_code == 200, evidence.text
        # No collateral of its own: the Controller adds its PCCS's (or the client fetches).
        assert evidence.json()["collateral"] is None
        assert evidence.json()["claims"]["worker"]["mrenclave"] == worker_image.mr_enclave.hex()


def test_the_gramine_attester_admits_only_its_configured_workers(
    platform: SimulatedPlatform, tmp_path: Path
) -> None:
    attester_image, worker_image = measure("attester"), measure("worker")
    config = write_config(
        tmp_path / "attester.enclave.json",
        "attester",
        {"worker_mrenclaves": [bytes(32).hex()], "worker_mrsigner": worker_image.mr_signer.hex()},
    )
    enclave = platform.enclave(attester_image.identity())
    app = gramine_attester(config, GramineEnclave(EmulatedDevAttestation(enclave), enclave.egetkey))
    worker_enclave = platform.enclave(worker_image.identity())
    worker = WorkerEnclave(
        GramineEnclave(EmulatedDevAttestation(worker_enclave), worker_enclave.egetkey),
        SPEC,
        FUNCTION,
    )
    with serving(app, tmp_path / "a.sock") as client:
        target = from_b64u(client.get("/target-info").json()["target_info"], "target_info")
        report, claims = worker.admission_request(target)
        refused = client.post("/admit", json={"report": b64u(report), "claims": claims})
        assert refused.status_code >= 400
        assert refused.json()["check"] == "worker-mrenclave"


def test_inside_gramine_the_service_listens_on_tcp(
    platform: SimulatedPlatform, tmp_path: Path
) -> None:
    """Gramine's Unix sockets do not reach the host: the manifest makes the service listen
    on loopback in its own network namespace, and a relay outside carries it."""
    attester_image, worker_image = measure("attester"), measure("worker")
    config = write_config(
        tmp_path / "attester.enclave.json",
        "attester",
        {
            "worker_mrenclaves": [worker_image.mr_enclave.hex()],
            "worker_mrsigner": worker_image.mr_signer.hex(),
        },
    )
    enclave = platform.enclave(attester_image.identity())
    app = gramine_attester(config, GramineEnclave(EmulatedDevAttestation(enclave), enclave.egetkey))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stop = threading.Event()
    thread = threading.Thread(
        target=serve, args=(app, None, stop), kwargs={"listen": f"127.0.0.1:{port}"}, daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/target-info", timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert answer.status_code == 200
        assert len(from_b64u(answer.json()["target_info"], "target_info")) == 512
    finally:
        stop.set()
        thread.join(timeout=10)
