"""Who a right goes to, as a review shows it: the reviewer's names, and every other ID unknown.

A hostile deployer (Alice) grants a right to a user ID whose first and last six
characters are those of Carol, whom Bob (the reviewer) trusts and named in his book.
Bob's ``inspect`` and ``approve`` must show that ID as unknown, never as Carol's, and
say how many rights go to IDs he has not named. Real manager, stand-in Controller.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cleanroom.client import contacts as book
from cleanroom.client.profile import Profile
from tests.client.conftest import new_user_id
from tests.client.test_contacts import lookalike
from tests.client.test_review_cli import (  # noqa: F401 - fixtures, found by pytest by name
    database_url,
    deploy,
    inspect,
    parties,
    redeploy,
    run,
)
from tests.protocol.test_bundle import HANDLER

TREE = {"handler.py": HANDLER}


@pytest.fixture
def carol() -> str:
    return new_user_id()


def name_them(capsys: pytest.CaptureFixture[str], **names: str) -> None:
    for name, user_id in names.items():
        code, _, err = run(capsys, "--profile", "bob", "contacts", "add", name, "--", user_id)
        assert code == 0, err


def test_inspect_names_known_ids_and_marks_a_look_alike_unknown(
    parties: tuple[Profile, Profile],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    carol: str,
) -> None:
    alice, bob = parties
    forged = lookalike(carol)
    assert forged[:6] == carol[:6] and forged[-6:] == carol[-6:] and forged != carol
    name_them(capsys, alice=alice.user_id, carol=carol)
    deploy(alice, bob, tmp_path, TREE, outputs={"output_1": alice.user_id, "output_2": forged})

    code, out, err = run(capsys, "--profile", "bob", "inspect", "hostile")
    assert code == 0, err
    rights = out[out.index("rights:\n") : out.index("files (")]
    assert rights.splitlines() == [
        "rights:",
        f"  {bob.user_id}  uploads input_1  (you)",
        f"  alice ({alice.user_id})  reads output_1",
        f"  unknown: {forged} (NOT carol's ID, which looks alike)  reads output_2",
        f"  alice ({alice.user_id})  starts the run",
    ]
    assert f"carol ({forged})" not in out
    assert "warning: 1 of 4 rights go to user IDs not in your contacts (shown as unknown)" in err
    assert "cleanroom --profile bob contacts add NAME -- USER_ID" in err

    code, out, _ = run(capsys, "--profile", "bob", "inspect", "hostile", "--json")
    document = json.loads(out)
    assert [(p["user_id"], p["name"]) for p in document["participants"]] == [
        (bob.user_id, None),
        (alice.user_id, "alice"),
        (forged, None),
        (alice.user_id, "alice"),
    ]
    assert document["unknown_rights"] == 1

    # Approving is unchanged (the Work-ID is what is approved), but says it once more.
    code, out, err = run(capsys, "--profile", "bob", "approve", "hostile", "--yes")
    assert code == 0, err
    assert "approved: clean room hostile" in out
    assert f"unknown: {forged}" in out
    assert "warning: 1 of 4 rights go to user IDs not in your contacts" in err


def test_every_id_not_named_and_not_yours_is_unknown(
    parties: tuple[Profile, Profile],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    alice, bob = parties
    spec = deploy(alice, bob, tmp_path, TREE)
    code, out, err = run(capsys, "--profile", "bob", "inspect", "hostile")
    assert code == 0, err
    assert f"  unknown: {alice.user_id}  reads output_1\n" in out
    assert f"  unknown: {alice.user_id}  starts the run\n" in out
    assert "warning: 2 of 3 rights go to user IDs not in your contacts" in err
    name_them(capsys, alice=alice.user_id)
    code, out, err = run(capsys, "--profile", "bob", "inspect", "hostile")
    assert "unknown" not in out and "warning" not in err
    code, out, err = run(
        capsys, "--profile", "bob", "approve", "hostile", "--work-id", spec.work_id
    )
    assert code == 0, err
    assert "warning" not in err


def test_what_changed_names_the_rights_too(
    parties: tuple[Profile, Profile],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    carol: str,
) -> None:
    alice, bob = parties
    name_them(capsys, alice=alice.user_id, carol=carol)
    deploy(alice, bob, tmp_path, TREE, outputs={"output_1": carol})
    assert run(capsys, "--profile", "bob", "approve", "hostile", "--yes")[0] == 0
    forged = lookalike(carol)
    redeploy(alice, bob, tmp_path, outputs={"output_1": forged})
    out = inspect(capsys, "hostile", "--against", "approved")
    changes = out[out.index("  rights:\n") :]
    assert changes.splitlines()[1:3] == [
        f"    - carol ({carol}) reads output_1",
        f"    + unknown: {forged} (NOT carol's ID, which looks alike) reads output_1",
    ]

    # For a machine: the user IDs and the names apart, the text lines as they were.
    document = json.loads(inspect(capsys, "hostile", "--against", "approved", "--json"))
    assert document["changes"]["rights"] == [line.strip() for line in changes.splitlines()[1:3]]
    assert document["changes"]["right_changes"] == [
        {"change": "removed", "role": "output", "id": "output_1", "user_id": carol,
         "you": False, "name": "carol"},
        {"change": "added", "role": "output", "id": "output_1", "user_id": forged,
         "you": False, "name": None},
    ]  # fmt: skip
    redeploy(alice, bob, tmp_path, outputs={"output_1": forged, "output_2": bob.user_id})
    document = json.loads(inspect(capsys, "hostile", "--against", "approved", "--json"))
    assert {
        "change": "added", "role": "output", "id": "output_2", "user_id": bob.user_id,
        "you": True, "name": None,
    } in document["changes"]["right_changes"]  # fmt: skip


def test_status_names_the_runners_owners_and_readers(
    parties: tuple[Profile, Profile],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    alice, bob = parties
    name_them(capsys, alice=alice.user_id)
    deploy(alice, bob, tmp_path, TREE)
    code, out, _ = run(capsys, "--profile", "bob", "status", "hostile")
    assert code == 1  # the stand-in Controller attests nothing
    runners = re.search(r"  runners:\s+(.*?)  \[in the spec", out)
    assert runners is not None and runners.group(1) == f"alice ({alice.user_id})"


def test_a_book_others_could_change_is_refused_before_the_review(
    parties: tuple[Profile, Profile],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """Fail closed: a review never shows names from a book it cannot trust."""
    alice, bob = parties
    name_them(capsys, alice=alice.user_id)
    deploy(alice, bob, tmp_path, TREE)
    (bob.directory / book.CONTACTS_FILE).chmod(0o666)
    code, out, err = run(capsys, "--profile", "bob", "inspect", "hostile")
    assert code == 2
    assert out == ""
    assert "accessible by others (mode 0666)" in err


def test_a_sql_rooms_rules_and_ad_hoc_runners_name_their_users(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The SQL part of a review names each rule's owner and each ad-hoc runner too."""
    from cleanroom.cli.main import main
    from cleanroom.sql import engine_bundle
    from tests.client.hostile_http import (
        configure_against,
        deployed_room,
        hostile_server,
        manager_of_room,
    )
    from tests.sql.fixtures import ALICE_ID, BOB_ID, sql_document

    document = sql_document()
    room = deployed_room(document)
    with hostile_server(manager_of_room(room, engine_bundle())) as url:
        configure_against(url)
        assert main(["contacts", "add", "alice", "--", ALICE_ID]) == 0
        capsys.readouterr()
        assert main(["inspect", room["name"]]) == 0
    out = capsys.readouterr().out
    assert f"rule of input_1 (set by alice ({ALICE_ID})):" in out
    assert f"rule of input_2 (set by unknown: {BOB_ID}):" in out
    assert f"ad-hoc queries: by alice ({ALICE_ID}) → output_1" in out


def test_deploy_warns_of_each_right_to_an_id_not_in_the_deployers_contacts(
    parties: tuple[Profile, Profile],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    carol: str,
) -> None:
    """The deployer names the IDs in their own access file, and deploy did not consult
    the book: an ID they have no name for, or one ground to look like a contact's,
    was granted without a word, where every reviewer is warned (left open by h11).
    The deploy itself is unchanged."""
    alice, bob = parties
    forged = lookalike(carol)
    for name, user_id in (("bob", bob.user_id), ("carol", carol)):
        code, _, err = run(capsys, "--profile", "alice", "contacts", "add", name, "--", user_id)
        assert code == 0, err
    source = tmp_path / "source"
    source.mkdir()
    (source / "handler.py").write_bytes(HANDLER)
    code, function, err = run(capsys, "--profile", "alice", "function", "upload", str(source))
    assert code == 0, err
    access = tmp_path / "access.yaml"
    access.write_text(
        f"inputs:\n  input_1: {bob.user_id}\n"
        f"outputs:\n  output_1: {alice.user_id}\n  output_2: {forged}\n"
    )
    deploy_args = ["--function", function.strip(), "--handler", "handler.run",
                   "--access", str(access)]  # fmt: skip
    code, out, err = run(capsys, "--profile", "alice", "deploy", "--name", "granted", *deploy_args)
    assert code == 0, err
    assert "state:          deployed" in out
    hint = f"warning: unknown: {forged} (NOT carol's ID, which looks alike)  reads output_2\n"
    assert hint in err
    assert "warning: 1 of 4 rights go to user IDs not in your contacts (shown as unknown)" in err
    assert bob.user_id not in err and "NOT bob" not in err  # named; and your own ID is known

    code, out, err = run(
        capsys, "--profile", "alice", "--output", "json", "deploy", "--name", "granted-2",
        *deploy_args,
    )  # fmt: skip
    assert code == 0, err
    document = json.loads(out)
    assert document["unknown_rights"] == 1
    assert [(p["role"], p["id"], p["user_id"], p["you"], p["name"])
            for p in document["participants"]] == [
        ("input", "input_1", bob.user_id, False, "bob"),
        ("output", "output_1", alice.user_id, True, None),
        ("output", "output_2", forged, False, None),
        ("runner", None, alice.user_id, True, None),
    ]  # fmt: skip
    assert "warning: 1 of 4 rights go to user IDs not in your contacts" in err

    access.write_text(f"inputs:\n  input_1: {bob.user_id}\noutputs:\n  output_1: {carol}\n")
    code, _, err = run(capsys, "--profile", "alice", "deploy", "--name", "named", *deploy_args)
    assert code == 0, err
    assert "warning" not in err


def test_deploy_refuses_a_name_book_others_may_change(
    parties: tuple[Profile, Profile],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """As inspect: a book others may write could name an attacker's ID as a partner's."""
    alice, bob = parties
    code, _, err = run(capsys, "--profile", "alice", "contacts", "add", "bob", "--", bob.user_id)
    assert code == 0, err
    (alice.directory / book.CONTACTS_FILE).chmod(0o666)
    access = tmp_path / "access.yaml"
    access.write_text(f"inputs:\n  input_1: {bob.user_id}\noutputs:\n  output_1: {bob.user_id}\n")
    code, _, err = run(
        capsys, "--profile", "alice", "deploy", "--name", "refused",
        "--function", "fs://" + "A" * 43, "--handler", "handler.run", "--access", str(access),
    )  # fmt: skip
    assert code == 2, err
    assert "contacts-file" in err or "accessible by others" in err
    with alice.manager() as manager:
        assert [room.name for room in manager.rooms()] == []


def test_an_ad_hoc_runner_not_in_the_contacts_is_counted_as_a_right_to_an_unknown_id(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ad-hoc runner may send any query, under every rule, and spend the rules' ε: a
    right. The review showed it as unknown in the SQL part, but its count of rights to
    unknown IDs (and --json's unknown_rights) left it out, so a room whose only stranger
    was an ad-hoc runner ended with no warning."""
    from cleanroom.cli.main import main
    from cleanroom.sql import engine_bundle
    from tests.client.hostile_http import (
        configure_against,
        deployed_room,
        hostile_server,
        manager_of_room,
    )
    from tests.sql.fixtures import ALICE_ID, BOB_ID, sql_document

    stranger = new_user_id()
    document = sql_document()
    document["sql"]["adhoc"]["runners"] = [stranger]
    room = deployed_room(document)
    with hostile_server(manager_of_room(room, engine_bundle())) as url:
        configure_against(url)
        assert main(["contacts", "add", "alice", "--", ALICE_ID]) == 0
        assert main(["contacts", "add", "bob", "--", BOB_ID]) == 0
        capsys.readouterr()
        assert main(["inspect", room["name"]]) == 0
        out, err = capsys.readouterr()
        assert main(["inspect", room["name"], "--json"]) == 0
        document_out = json.loads(capsys.readouterr().out)
    assert f"ad-hoc queries: by unknown: {stranger} → output_1" in out
    assert "warning: 1 of 5 rights go to user IDs not in your contacts" in err
    assert document_out["unknown_rights"] == 1
