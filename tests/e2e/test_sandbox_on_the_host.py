"""The sandbox as compute servers run it: each room's uid is unique on the host across
servers, freed when the room goes, and the operator's resource ceiling refuses a
deploy before any Worker starts."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cleanroom.client.errors import ServerError
from cleanroom.client.manager import ManagerClient
from cleanroom.controller.enclaves import enclave_processes
from cleanroom.insecure.localstack import LocalStack
from cleanroom.protocol.bundle import pack_into
from cleanroom.protocol.spec import WorkSpec
from cleanroom.sandbox_ids import FIRST_UID, SandboxIds

from ..manager.conftest import make_bundle, make_spec
from .conftest import confinement_available

CEILING = ["--max", "memory_mib=4096", "--max", "disk_mib=2048"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    confinement_available()
    directory = tmp_path_factory.mktemp("sandbox-stack")
    with LocalStack(directory, compute_options=CEILING) as running:
        running.add_project("acme")
        running.add_compute_server("second")
        yield running


@pytest.fixture(scope="module")
def client(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> ManagerClient:
    credentials = stack.add_client("acme")
    manager = ManagerClient(stack.manager_url)
    manager.fetch_token(credentials.client_id, credentials.secret)
    return manager


@pytest.fixture(scope="module")
def function(client: ManagerClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    bundle = make_bundle(tmp_path_factory.mktemp("function") / "function")
    return client.upload_function(bundle).function_id


def with_resources(spec: WorkSpec, **resources: int) -> WorkSpec:
    document = spec.document()
    document["resources"] = {**document["resources"], **resources}
    return WorkSpec.parse(document)


def room_dirs(stack: LocalStack) -> list[Path]:
    servers = [stack.compute_dir, *(node.directory for node in stack.compute_nodes.values())]
    return [room for server in servers for room in sorted((server / "rooms").iterdir())]


def room_name(directory: Path) -> str:
    """The room a directory holds: it is named ``<project>.<name>``."""
    project, _, name = directory.name.partition(".")
    assert project == "acme", directory
    return name


def test_every_room_on_every_server_has_a_uid_of_its_own(
    stack: LocalStack, client: ManagerClient, function: str
) -> None:
    rooms = [client.deploy(make_spec(function, name=f"uid-{i}")) for i in range(4)]
    assert {room.compute_url for room in rooms} == {
        stack.compute_url,
        stack.compute_nodes["second"].url,
    }
    records = [json.loads((room / "room.json").read_text()) for room in room_dirs(stack)]
    uids = [record["sandbox_uid"] for record in records]
    assert len(uids) == 4 and len(set(uids)) == 4, uids
    assert all(uid >= FIRST_UID for uid in uids)
    ids = SandboxIds()
    for room in room_dirs(stack):
        uid = json.loads((room / "room.json").read_text())["sandbox_uid"]
        assert ids.owns(uid, room)
    # Deleted: the uid goes back to the host's registry.
    doomed = room_dirs(stack)[0]
    doomed_uid = json.loads((doomed / "room.json").read_text())["sandbox_uid"]
    client.delete(room_name(doomed))
    assert not ids.owns(doomed_uid, doomed)
    for room in room_dirs(stack):
        client.delete(room_name(room))


def test_resources_past_the_servers_ceiling_are_refused_before_a_worker_starts(
    stack: LocalStack, client: ManagerClient, function: str
) -> None:
    before = enclave_processes(stack.compute_dir)
    for resources in ({"memory_mib": 8192}, {"disk_mib": 1024 * 1024}):
        spec = with_resources(make_spec(function, name="greedy"), **resources)
        with pytest.raises(ServerError) as caught:
            client.deploy(spec)
        assert caught.value.status == 502
        room = client.room("greedy")
        assert room.state == "failed"
        assert room.reason is not None and "(check resources)" in room.reason, room.reason
        assert "is more than this compute server allows" in room.reason
        client.delete("greedy")
    assert enclave_processes(stack.compute_dir) == before
    assert not stack.room_directory("acme", "greedy").exists()


def peak_memory(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def test_a_large_bundle_is_streamed_never_held_whole(
    stack: LocalStack, client: ManagerClient, tmp_path: Path
) -> None:
    """300 MiB of vendored packages: packed to a file, uploaded, fetched by the
    Controller, sealed by the Worker, unpacked for the run, each in bounded memory."""
    size = 300 << 20
    source = tmp_path / "big-function"
    (source / "packages").mkdir(parents=True)
    (source / "handler.py").write_text(
        "import os\n\ndef run():\n"
        "    size = os.path.getsize('/work/function/packages/blob.bin')\n"
        "    open('/work/outputs/result/size.txt', 'w').write(str(size))\n"
    )
    with (source / "packages" / "blob.bin").open("wb") as blob:
        for _ in range(size >> 20):
            blob.write(os.urandom(1 << 20))
    bundle = tmp_path / "bundle.tar"
    with bundle.open("wb") as handle:
        function = pack_into(source, handle)
    assert client.upload_function(bundle).function_id == function
    controller = stack._servers[1].process.pid  # the first compute server
    spec = make_spec(function, name="big-bundle")
    room = client.deploy(spec)
    assert room.state == "deployed", room
    directory = next(d for d in room_dirs(stack) if room_name(d) == "big-bundle")
    worker = json.loads((directory / "room.json").read_text())["pid"]
    assert peak_memory(worker) < 150 << 20, peak_memory(worker)
    if room.compute_url == stack.compute_url:
        assert peak_memory(controller) < 150 << 20, peak_memory(controller)
    client.delete("big-bundle")
