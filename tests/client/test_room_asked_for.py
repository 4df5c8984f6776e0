"""The manager's answer for room NAME of PROJECT is that room, or a refusal (``room``).

A hostile manager asked for room ``victim`` answered another room of its choosing
(``other``, or ``victim`` of another project): ``cleanroom approve victim --yes``
printed ``approved: clean room victim`` and pinned the other one, replacing the
approval the user had given that room, and ``--project`` was not held to.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.cli.main import main
from cleanroom.client.profile import Profile
from cleanroom.client.rooms import CleanRoomClient
from cleanroom.protocol.bundle import function_id, pack
from cleanroom.protocol.encoding import b64u
from cleanroom.protocol.keys import user_id
from cleanroom.protocol.spec import WorkSpec
from tests.client.hostile_http import (
    configure_against,
    hostile_server,
    json_answer,
    manager_of_room,
)
from tests.client.test_profile import create


def _room(name: str, project: str, function: str) -> dict[str, object]:
    owner = user_id(ec.generate_private_key(ec.SECP256R1()).public_key())
    spec = {
        "name": name,
        "function": function,
        "handler": "handler.run",
        "inputs": {"data": owner},
        "outputs": {"result": owner},
        "runners": [owner],
        "nonce": b64u(os.urandom(16)),
    }
    return {
        "name": name,
        "project": project,
        "spec": spec,
        "work_id": WorkSpec.parse(spec).work_id,
        "function": function,
        "state": "deployed",
        "compute_url": "http://127.0.0.1:9",
        "deployer": "someone",
        "created": 0,
    }


@pytest.mark.parametrize(
    ("served", "asked"),
    [
        (("other", "acme"), ["approve", "victim", "--yes"]),
        (("victim", "evil"), ["approve", "victim", "--project", "acme", "--yes"]),
        (("victim", "evil"), ["inspect", "victim", "--project", "acme"]),
    ],
)
def test_another_room_than_the_one_asked_for_is_refused(
    home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    served: tuple[str, str],
    asked: list[str],
) -> None:
    (tmp_path / "function").mkdir()
    (tmp_path / "function" / "handler.py").write_text("def run(i, o, p):\n    pass\n")
    bundle = pack(tmp_path / "function")
    room = _room(*served, function_id(bundle))

    with hostile_server(manager_of_room(room, bundle)) as url:
        configure_against(url)
        capsys.readouterr()
        assert main(asked) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: room: "), err
    assert Profile.load().approvals() == {}
    assert Profile.load().inspections() == {}


def test_the_sdk_inspects_and_approves_the_approved_project_s_room(
    home: Path, tmp_path: Path
) -> None:
    """Where another project's room has the approved room's name, the SDK's inspect and
    approve are of the approved room (as the command line's): they asked for the
    manager's pick (here, the other project's room), or failed ``room-ambiguous``."""
    (tmp_path / "function").mkdir()
    (tmp_path / "function" / "handler.py").write_text("def run(i, o, p):\n    pass\n")
    bundle = pack(tmp_path / "function")
    ours, theirs = (_room("victim", project, function_id(bundle)) for project in ("acme", "evil"))

    def answer(method: str, path: str) -> tuple[int, dict[str, str], bytes] | None:
        if (method, path) == ("POST", "/oauth/token"):
            return json_answer({"access_token": "t", "token_type": "DPoP", "expires_in": 600})
        if (method, path) == ("GET", "/v1/rooms/victim?project=acme"):
            return json_answer(ours)
        if (method, path) == ("GET", "/v1/rooms/victim"):
            return json_answer(theirs)  # the manager's pick: not the approved project's
        if method == "GET" and path.startswith("/v1/functions/"):
            return 200, {"content-type": "application/octet-stream"}, bundle
        return None

    with hostile_server(answer, query=True) as url:
        profile = create(manager_url=url)
        work_id = str(ours["work_id"])
        profile.approve("victim", work_id, function_id(bundle), project="acme")
        client = CleanRoomClient(profile)
        assert client.inspect("victim").room.project == "acme"
        approval = client.approve("victim", work_id)
    assert (approval.work_id, approval.project) == (work_id, "acme")
