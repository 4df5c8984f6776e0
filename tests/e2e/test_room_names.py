"""A room name that another project gives its own room too.

Room names live per project. Bob approved acme's room ``shared-name``; then Mallory,
of Bob's own project, deploys a room of that name naming Bob. The manager answers a
bare name with the asker's own project's room (or refuses to guess between other
projects', ``room-ambiguous``), so every command of Bob's on the room he approved was
refused (``work-id-approved``): anyone who may deploy a room naming Bob could stop him
using a room he approved. His client now asks for the approved room by its project.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import User
from tests.e2e.helpers import approve, deploy, write
from tests.e2e.test_cli_flow import Cli


def test_another_projects_room_of_the_same_name_does_not_stand_in_for_the_approved_one(
    alice: User, bob: User, mallory: User, tmp_path: Path
) -> None:
    name = "shared-name"
    for project in ("acme", "globex"):
        (tmp_path / project).mkdir()
    deploy(alice, bob, tmp_path / "acme", name)
    approve(bob, name)
    assert bob.profile.approval(name).project == "acme"  # type: ignore[union-attr]
    deploy(mallory, bob, tmp_path / "globex", name)
    try:
        # What a bare name gives Bob now: his own project's room, not the one he approved.
        assert bob.client.manager.room(name).project == "globex"
        bob.client.upload(name, "input_2", write(tmp_path / "b", "a@x\n"))
        status = bob.client.status(name)
        assert status.room.project == "acme" and status.approved
        assert status.worker is not None and sorted(status.worker.inputs) == ["input_2"]
    finally:
        mallory.client.delete(name)
        alice.client.delete(name)


def test_the_command_line_inspects_and_approves_the_room_of_the_project_named(
    alice: User, bob: User, mallory: User, tmp_path: Path
) -> None:
    """Both rooms exist before Bob looks: a bare name is his own project's room, and
    ``--project`` names the other; the command inspect prints approves that one."""
    name = "shared-name-cli"
    for project in ("acme", "globex"):
        (tmp_path / project).mkdir()
    acme = deploy(alice, bob, tmp_path / "acme", name)
    globex = deploy(mallory, bob, tmp_path / "globex", name)
    cli = Cli(bob.home)
    try:
        bare = json.loads(cli("--profile", "bob", "inspect", name, "--json").stdout)
        assert (bare["project"], bare["work_id"]) == ("globex", globex)
        shown = json.loads(cli("--profile", "bob", "inspect", name, "--project", "acme",
                               "--json").stdout)  # fmt: skip
        assert (shown["project"], shown["work_id"]) == ("acme", acme)
        command = shown["approve_command"].split()
        assert command[command.index("--project") + 1] == "acme"
        cli(*command[1:])
        approval = bob.profile.approval(name)
        assert approval is not None and (approval.project, approval.work_id) == ("acme", acme)
        # Inspecting again needs no --project: the approved room's project is the default.
        again = json.loads(cli("--profile", "bob", "inspect", name, "--json").stdout)
        assert (again["work_id"], again["approved"]) == (acme, True)
        bob.client.upload(name, "input_2", write(tmp_path / "b", "a@x\n"))
    finally:
        mallory.client.delete(name)
        alice.client.delete(name)
