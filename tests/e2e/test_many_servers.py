"""Two compute servers on loopback, real Controllers and Workers: one Worker dies, then a
whole compute server is killed (SIGKILL, its enclave processes too); the manager's
own health checks find both, mark the rooms lost with their reasons, and new rooms
go to the survivor."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cleanroom.client.manager import ManagerClient, Room
from cleanroom.insecure.localstack import LocalStack
from cleanroom.manager import admin as operations

from ..manager.conftest import make_bundle, make_spec
from .conftest import confinement_available

FAST_HEALTH = ["--health-interval", "0.2", "--health-failures", "2", "--lost-after", "1"]


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    if not confinement_available():
        pytest.skip("functions cannot be confined here (needs root, unshare, setpriv)")
    # A short directory: a Worker's Unix socket path must stay within 107 bytes.
    directory = tmp_path_factory.mktemp("many")
    with LocalStack(directory, manager_options=FAST_HEALTH) as running:
        running.add_project("acme")
        yield running


def wait_for(client: ManagerClient, name: str, state: str) -> Room:
    """The room once the manager reports ``state`` (it gets there on its own)."""
    deadline = time.monotonic() + 30
    room = client.room(name)
    while room.state != state and time.monotonic() < deadline:
        time.sleep(0.1)
        room = client.room(name)
    return room


def test_rooms_spread_and_a_dead_server_loses_its_rooms(stack: LocalStack, tmp_path: Path) -> None:
    second = stack.add_compute_server("second")
    credentials = stack.add_client("acme")
    client = ManagerClient(stack.manager_url)
    client.fetch_token(credentials.client_id, credentials.secret)
    function = client.upload_function(make_bundle(tmp_path / "function")).function_id

    rooms = [client.deploy(make_spec(function, name=f"room-{i}")) for i in range(4)]
    assert [room.compute_url for room in rooms] == [stack.compute_url, second.url] * 2
    assert {room.state for room in rooms} == {"deployed"}

    # A Worker dies on the first server: its Controller says 410, the room is lost.
    record = json.loads((stack.room_directory("acme", "room-0") / "room.json").read_text())
    os.kill(int(record["pid"]), signal.SIGKILL)
    dead = wait_for(client, "room-0", "lost")
    assert dead.state == "lost"
    assert dead.reason is not None
    assert dead.reason.startswith("compute server local no longer runs its Worker (410: ")
    assert client.room("room-2").state == "deployed"

    # The second server dies whole.
    stack.kill_compute_server("second")
    for name in ("room-1", "room-3"):
        room = wait_for(client, name, "lost")
        assert room.state == "lost"
        assert room.reason is not None
        assert room.reason.startswith("compute server second stopped answering at ")
        assert room.reason.endswith(
            "a clean room's data lives only inside its enclave and cannot be recovered "
            "elsewhere: redeploy"
        )
    assert client.room("room-2").state == "deployed"
    with stack._database() as session:
        states = {server.name: server.state for server, _ in operations.list_servers(session)}
    assert states == {"local": "healthy", "second": "lost"}

    # New rooms go to the survivor; a lost room's name is free once it is deleted.
    assert client.delete("room-1").state == "deleted"
    again = [client.deploy(make_spec(function, name=name)) for name in ("room-1", "room-4")]
    assert [room.compute_url for room in again] == [stack.compute_url] * 2
    client.close()
