"""What a reviewer sees is what runs: the review as the command line shows it.

A hostile deployer (Alice, through the SDK, which lets her put anything into a
spec) deploys on a real manager with a stand-in Controller; Bob reviews with
``cleanroom inspect`` and ``approve``. Each test plays one trick and checks that
the review shows the true content, or refuses.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from cleanroom.cli.main import main
from cleanroom.client.access import Access, build_spec
from cleanroom.client.manager import ManagerClient
from cleanroom.client.profile import Profile
from cleanroom.client.review import ReviewError
from cleanroom.client.rooms import CleanRoomClient
from cleanroom.protocol.bundle import pack
from cleanroom.protocol.spec import Scalar, WorkSpec
from tests.client.test_vendored import vendor
from tests.client.test_wheels import build_wheel, pip_install, rewrite_record
from tests.client.test_with_manager import Terminal, configure
from tests.manager.conftest import Manager, StandInController, operator
from tests.protocol.test_bundle import HANDLER, Tree, read_tree_nested, write_tree


@pytest.fixture
def database_url() -> None:
    """These tests are about the review, not the database: SQLite only."""
    return None


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def parties(
    home: Path, capsys: pytest.CaptureFixture[str], manager: Manager, controller: StandInController
) -> tuple[Profile, Profile]:
    """Alice (the deployer, project acme) and Bob (the reviewer, project beta), logged in."""
    for name, project in (("alice", "acme"), ("bob", "beta")):
        client_id, secret = manager.new_client(project)
        assert run(capsys, *configure(name, manager.url, client_id, secret))[0] == 0
        assert run(capsys, "--profile", name, "login")[0] == 0
    return Profile.load("alice"), Profile.load("bob")


def deploy(
    deployer: Profile,
    reviewer: Profile,
    tmp_path: Path,
    tree: Tree,
    *,
    name: str = "hostile",
    handler: str = "handler.run",
    parameters: dict[str, Scalar] | None = None,
    memory_mib: int = 2048,
    outputs: dict[str, str] | None = None,
    **limits: int,
) -> WorkSpec:
    """Upload ``tree`` and deploy it as room ``name``, Bob uploading, Alice reading."""
    source = write_tree(tmp_path / f"source-{name}-{len(list(tmp_path.iterdir()))}", tree)
    with deployer.manager() as manager:
        function = manager.upload_function(pack(source)).function_id
        spec = build_spec(
            name=name,
            function_id=function,
            handler=handler,
            access=Access(
                inputs={"input_1": reviewer.user_id},
                outputs=outputs or {"output_1": deployer.user_id},
            ),
            deployer_user_id=deployer.user_id,
            parameters=parameters or {},
            memory_mib=memory_mib,
            **limits,
        )
        room = manager.deploy(spec)
    assert room.state == "deployed", room
    return spec


def inspect(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = run(capsys, "--profile", "bob", "inspect", *args)
    assert code == 0, err
    return out


# --- text rendered unlike its content ---------------------------------------------------


def test_parameters_are_shown_as_they_are(
    parties: tuple[Profile, Profile], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    alice, bob = parties
    deploy(
        alice,
        bob,
        tmp_path,
        {"handler.py": HANDLER},
        parameters={
            "columns": "region:email:segment",  # Rich would show :email: as an envelope
            "k\u034f": 10,  # an invisible combining grapheme joiner after k
            "\\u202e": 1,  # six ASCII characters that look like an escape
            "\u202e": 2,  # the right-to-left override itself
            "pad ": "[bold]x[/]",
        },
    )
    out = inspect(capsys, "hostile")
    assert out.isascii()
    assert '  "columns" = "region:email:segment"\n' in out
    assert '  "k\\u034f" = 10\n' in out
    assert '  "\\\\u202e" = 1\n' in out
    assert '  "\\u202e" = 2\n' in out
    assert '  "pad " = "[bold]x[/]"\n' in out
    assert "\u2709" not in out


def test_every_limit_of_a_run_is_shown_and_compared(
    parties: tuple[Profile, Profile], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Every field of the spec's resources is hashed into the Work-ID, and the review
    showed two of five: a deployer's CPU time of 64 weeks, 65,536 processes and a disk of
    1 TiB were approved unseen, and a redeploy that changed only those was "none" to
    ``inspect --against approved`` (found by h9)."""
    alice, bob = parties
    deploy(alice, bob, tmp_path, {"handler.py": HANDLER})
    out = inspect(capsys, "hostile")
    assert (
        "resources:      memory 2048 MiB, timeout 3600 s, cpu 14400 s, processes 256, "
        "disk 1024 MiB (each run)\n"
    ) in out
    assert run(capsys, "--profile", "bob", "approve", "hostile", "--yes")[0] == 0
    redeploy(alice, bob, tmp_path, cpu_s=64 * 7 * 86400, processes=65536, disk_mib=1 << 20)
    out = inspect(capsys, "hostile", "--against", "approved")
    assert "cpu 38707200 s, processes 65536, disk 1048576 MiB (each run)\n" in out
    assert "    ~ cpu: 14400 s -> 38707200 s\n" in out
    assert "    ~ processes: 256 -> 65536\n" in out
    assert "    ~ disk: 1024 MiB -> 1048576 MiB\n" in out
    assert ":\n  none\n" not in out


def test_file_names_are_shown_as_they_are(
    parties: tuple[Profile, Profile], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    alice, bob = parties
    deploy(
        alice,
        bob,
        tmp_path,
        {
            "handler.py": HANDLER,
            "notes\u202egnp.py": b"X = 1\n",  # shows as notes + reversed text
            "caf\u00e9.txt": b"",
            ":email:.txt": b"",
            "trailing ": b"",
        },
    )
    out = inspect(capsys, "hostile")
    assert out.isascii()
    listed = re.findall(r"^  [0-9a-f]{64} +\d+  (.*)$", out, re.MULTILINE)
    assert listed == [
        ":email:.txt",
        "caf\\xe9.txt",
        "handler.py",
        "notes\\u202egnp.py",
        "trailing\\x20",
    ]


def test_json_keeps_the_exact_strings(
    parties: tuple[Profile, Profile], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    alice, bob = parties
    deploy(alice, bob, tmp_path, {"handler.py": HANDLER}, parameters={"k\u034f": 10})
    document = json.loads(inspect(capsys, "hostile", "--json"))
    assert document["spec"]["parameters"] == {"k\u034f": 10}


# --- code runs that the review does not show ------------------------------------------------


def test_inspect_names_the_file_python_imports_and_what_it_hides(
    parties: tuple[Profile, Profile], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    alice, bob = parties
    deploy(
        alice,
        bob,
        tmp_path,
        {
            "handler.py": b"def run():\n    pass\n",
            "handler": {"__init__.py": b"def run():\n    pass\n"},
            "json.py": b"",
        },
        parameters={"k": 1, "k\u034f": 10},
    )
    out = inspect(capsys, "hostile")
    assert "handler:        handler.run in handler/__init__.py\n" in out
    assert "warnings (3):\n" in out
    assert '  parameter keys read alike: "k", "k\\u034f"\n' in out
    assert (
        "  handler: handler/__init__.py is imported; never imported under that name: "
        "handler.py (a package comes before a module of the same name)\n"
    ) in out
    assert "  json: json.py has the name of a standard-library module" in out


def test_a_handler_the_review_cannot_find_is_refused(
    parties: tuple[Profile, Profile], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    alice, bob = parties
    deploy(alice, bob, tmp_path, {"handler.py": HANDLER}, handler="elsewhere.run")
    for command in (["inspect", "hostile"], ["approve", "hostile", "--yes"]):
        code, _, err = run(capsys, "--profile", "bob", *command)
        assert code == 1
        assert err.startswith(
            "error: handler-module: the handler elsewhere.run is not in the function"
        )
    assert bob.approval("hostile") is None


# --- approve pins what was inspected ---------------------------------------------------------


def redeploy(
    deployer: Profile,
    reviewer: Profile,
    tmp_path: Path,
    tree: Tree | None = None,
    **changes: Any,
) -> WorkSpec:
    """Delete room ``hostile`` and deploy it again (another nonce: another Work-ID)."""
    with deployer.manager() as manager:
        manager.delete("hostile")
    return deploy(deployer, reviewer, tmp_path, tree or {"handler.py": HANDLER}, **changes)


def test_inspect_prints_the_command_that_approves_exactly_this(
    parties: tuple[Profile, Profile], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    alice, bob = parties
    spec = deploy(alice, bob, tmp_path, {"handler.py": HANDLER})
    out = inspect(capsys, "hostile")
    command = f"cleanroom --profile bob approve hostile --project acme --work-id {spec.work_id}"
    assert out.endswith(f"to approve exactly this: {command}\n")
    assert json.loads(inspect(capsys, "hostile", "--json"))["approve_command"] == command
    code, out, err = run(capsys, *command.split()[1:])
    assert code == 0, err
    assert f"approved: clean room hostile, Work-ID {spec.work_id}" in out
    assert bob.require_approval("hostile", spec.work_id)


def test_approve_with_a_work_id_refuses_a_room_redeployed_since(
    parties: tuple[Profile, Profile], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    alice, bob = parties
    first = deploy(alice, bob, tmp_path, {"handler.py": HANDLER}, parameters={"k": 10})
    inspect(capsys, "hostile")
    second = redeploy(alice, bob, tmp_path, parameters={"k": 1})
    code, _, err = run(capsys, "--profile", "bob", "approve", "hostile", "--work-id", first.work_id)
    assert code == 1
    assert err.startswith(
        "error: work-id-reviewed: clean room hostile no longer has the Work-ID you reviewed"
    )
    assert f"expected {first.work_id}, got {second.work_id}" in err
    assert bob.approval("hostile") is None


def test_approve_says_plainly_that_the_room_changed_since_it_was_inspected(
    parties: tuple[Profile, Profile],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice, bob = parties
    first = deploy(alice, bob, tmp_path, {"handler.py": HANDLER}, parameters={"k": 10})
    inspect(capsys, "hostile")
    second = redeploy(alice, bob, tmp_path, parameters={"k": 1})
    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    code, out, err = run(capsys, "--profile", "bob", "approve", "hostile")
    assert code == 1
    assert "clean room hostile CHANGED since you inspected it on " in err
    assert f"Work-ID then {first.work_id}, now {second.work_id}" in err
    assert f"Approve Work-ID {second.work_id} of clean room hostile? [y/N]" in out
    assert bob.approval("hostile") is None

    # That approve showed the new one: it is now the one last inspected.
    redeploy(alice, bob, tmp_path, parameters={"k": 2})
    code, _, err = run(capsys, "--profile", "bob", "approve", "hostile", "--yes")
    assert code == 1
    assert "not approved: clean room hostile is not what you inspected" in err
    assert bob.approval("hostile") is None


def test_the_sdk_pins_only_the_work_id_it_is_given(
    parties: tuple[Profile, Profile], tmp_path: Path
) -> None:
    alice, bob = parties
    first = deploy(alice, bob, tmp_path, {"handler.py": HANDLER})
    client = CleanRoomClient(bob)
    reviewed = client.inspect("hostile")
    assert reviewed.work_id == first.work_id
    assert bob.inspection("hostile").work_id == first.work_id  # type: ignore[union-attr]
    second = redeploy(alice, bob, tmp_path)
    with pytest.raises(ReviewError) as caught:
        client.approve("hostile", first.work_id)
    assert (caught.value.check, caught.value.expected, caught.value.actual) == (
        "work-id-reviewed",
        first.work_id,
        second.work_id,
    )
    assert bob.approval("hostile") is None
    assert client.approve("hostile", second.work_id).work_id == second.work_id
    assert bob.require_approval("hostile", second.work_id)


# --- vendored packages --------------------------------------------------------------------


def test_inspect_summarises_packages_and_names_a_changed_vendored_file(
    parties: tuple[Profile, Profile], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    alice, bob = parties
    vendored = tmp_path / "vendored"
    vendor(vendored)
    impl = vendored / "packages" / "rfc8785" / "_impl.py"
    impl.write_text(impl.read_text() + "\nimport os  # added after install\n")
    tree: Tree = {"handler.py": HANDLER, **read_tree_nested(vendored)}
    deploy(alice, bob, tmp_path, tree)
    out = inspect(capsys, "hostile")
    assert "vendored packages (1):\n" in out
    assert re.search(
        r"^  rfc8785 0\.1\.4: 8 files, RECORD: 1 differ, 0 missing, digest [0-9a-f]{16}$",
        out,
        re.MULTILINE,
    ), out
    assert (
        "  packages/ rfc8785 0.1.4: its RECORD does not match 1 file: packages/rfc8785/_impl.py\n"
    ) in out
    document = json.loads(inspect(capsys, "hostile", "--json"))
    assert document["packages"]["distributions"][0]["differ"] == ["packages/rfc8785/_impl.py"]


def test_inspect_with_wheels_names_an_edit_its_record_was_made_to_cover(
    parties: tuple[Profile, Profile], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Alice edits a vendored module and its RECORD line: only the published wheel tells."""
    alice, bob = parties
    wheels = tmp_path / "wheels"
    vendored = tmp_path / "vendored"
    pip_install(build_wheel(wheels), vendored)
    (vendored / "packages" / "tiny_pkg" / "core.py").write_text("import os\n")
    rewrite_record(vendored, "tiny_pkg/core.py")
    deploy(alice, bob, tmp_path, {"handler.py": HANDLER, **read_tree_nested(vendored)})
    out = inspect(capsys, "hostile")
    assert re.search(r"^  tiny-pkg 1\.0: 11 files, as its own RECORD says, digest", out, re.M), out
    out = inspect(capsys, "hostile", "--wheels", str(wheels))
    assert (
        f"vendored packages against the wheels in {wheels}:\n"
        "  tiny-pkg 1.0: NOT as published in tiny_pkg-1.0-py3-none-any.whl: "
        "1 differ from it: packages/tiny_pkg/core.py\n"
    ) in out
    document = json.loads(inspect(capsys, "hostile", "--wheels", str(wheels), "--json"))
    (published,) = document["wheels"]
    assert not published["as_published"]
    assert published["differ"] == ["packages/tiny_pkg/core.py"]
    code, _, err = run(capsys, "--profile", "bob", "inspect", "hostile", "--wheels", "nowhere")
    assert code == 2 and "--wheels nowhere is not a directory" in err


# --- the review diff --------------------------------------------------------------------------

VERSION_1 = b"def run():\n    label = 'reviewed'\n    return label\n"
# A look-alike letter (Cyrillic \u0435 for e) and trailing spaces: shown escaped in the
# diff. (A bidirectional control, which an editor reorders, is refused: code-text.)
VERSION_2 = b"def run():\n    label = 'r\xd0\xb5viewed'  \n    return label\n"


def test_inspect_against_the_approved_work_id_shows_what_changed(
    parties: tuple[Profile, Profile], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    alice, bob = parties
    first = deploy(
        alice, bob, tmp_path, {"handler.py": VERSION_1, "old.txt": b"x"}, parameters={"k": 10}
    )
    assert run(capsys, "--profile", "bob", "approve", "hostile", "--yes")[0] == 0
    second = redeploy(
        alice,
        bob,
        tmp_path,
        {"handler.py": VERSION_2, "new.txt": b"yy"},
        parameters={"k": 1, "columns": "a:b"},
        memory_mib=4096,
        outputs={"output_1": alice.user_id, "output_2": alice.user_id},
    )
    out = inspect(capsys, "hostile", "--against", "approved")
    approved_on = re.search(
        rf"changes from Work-ID {first.work_id} \(approved by you on [^)]+\)", out
    )
    assert approved_on, out
    section = out[approved_on.start() : out.index("to approve exactly this")]
    assert section.isascii()
    expected = f"""\
 to Work-ID {second.work_id} (now):
  spec:
    ~ memory: 2048 MiB -> 4096 MiB
    ~ function: {first.function} -> {second.function}
  parameters:
    + "columns" = "a:b"
    ~ "k": 10 -> 1
  rights:
    + unknown: {alice.user_id} reads output_2
  files:
    - old.txt (1 bytes)
    + new.txt (2 bytes)
    ~ handler.py (51 -> 54 bytes)
  code:
    --- handler.py (before)
    +++ handler.py (now)
    @@ -1,3 +1,3 @@
     def run():
    -    label = 'reviewed'
    +    label = 'r\\u0435viewed'\\x20\\x20
         return label
    --- new.txt (before)
    +++ new.txt (now)
    @@ -0,0 +1 @@
    +yy
    --- old.txt (before)
    +++ old.txt (now)
    @@ -1 +0,0 @@
    -x
  note: the nonce differs too, as in every deployment
"""
    assert section[approved_on.end() - approved_on.start() :] == expected

    document = json.loads(inspect(capsys, "hostile", "--against", "approved", "--json"))
    assert '~ "k": 10 -> 1' in document["changes"]["parameters"]


def test_inspect_against_a_function_compares_the_code(
    parties: tuple[Profile, Profile], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    alice, bob = parties
    first = deploy(alice, bob, tmp_path, {"handler.py": VERSION_1})
    second = redeploy(alice, bob, tmp_path, {"handler.py": VERSION_2})
    out = inspect(capsys, "hostile", "--against", first.function)
    assert f"changes from {first.function} to Work-ID {second.work_id} (now):\n" in out
    assert "    -    label = 'reviewed'\n" in out
    assert "  parameters:" not in out  # a bare function has no spec to compare


def test_inspect_against_a_function_gone_from_the_manager_compares_the_recorded_digests(
    parties: tuple[Profile, Profile],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    manager: Manager,
) -> None:
    """The earlier function collected (404): the files by the digests the profile
    recorded, each changed file's code listed as NOT compared, and why, and exit 1.
    It printed a files section, no code section and one note, and exited 0: a reviewer
    (or `inspect --against approved && approve --yes`) read no code change where the
    code had not been compared, on the manager's word (a hostile one may answer 404)."""
    alice, bob = parties
    first = deploy(alice, bob, tmp_path, {"handler.py": VERSION_1, "old.py": b"x = 1\n"})
    assert run(capsys, "--profile", "bob", "approve", "hostile", "--yes")[0] == 0
    approval = bob.approval("hostile")
    assert approval is not None
    redeploy(alice, bob, tmp_path, {"handler.py": VERSION_2, "new.py": b"y = 2\n"})
    assert operator(manager, "gc", "--grace", "0") == 0
    code, out, err = run(capsys, "--profile", "bob", "inspect", "hostile", "--against", "approved")
    assert code == 1, err
    assert "    ~ handler.py (51 -> 54 bytes)\n" in out
    gone = f"the function's bytes are not at hand (the manager answered 404 for {first.function})"
    assert (
        "  NOT compared (what changed there is not shown above):\n"
        f"    handler.py: Work-ID {approval.work_id} (approved by you on "
    ) in out
    assert f"): {gone}\n    old.py: Work-ID {approval.work_id} (approved" in out
    assert "    +y = 2\n" in out  # an added file needs no earlier bytes: shown in full
    assert "handler.py (before)" not in out and "to approve exactly this" in out
    assert err.endswith(
        "error: inspect --against: 2 changes not compared (listed under NOT compared, with "
        "why): read that code in full (inspect --source DIR) before approving\n"
    ), err
    code, out, err = run(
        capsys, "--profile", "bob", "inspect", "hostile", "--against", "approved", "--json"
    )
    assert code == 1, err
    changes = json.loads(out)["changes"]
    assert changes["complete"] is False
    assert [item["path"] for item in changes["not_compared"]] == ["handler.py", "old.py"]
    assert all(gone in item["why"] for item in changes["not_compared"])


@pytest.mark.parametrize("refusal", ["disabled", "not stored"])
def test_inspect_against_fails_closed_when_the_earlier_function_is_refused_not_gone(
    parties: tuple[Profile, Profile],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    manager: Manager,
    monkeypatch: pytest.MonkeyPatch,
    refusal: str,
) -> None:
    """Any refusal of the earlier function's download was taken for the function gone
    from the manager: a refused token (the client disabled, so its new login refused
    too) or a manager that lost the file (500 function-stored) printed the review with
    the code diff left out and a note, exit 0. Now only a 404 is that; any other
    refusal is the command's error, naming the download (left open by h11)."""
    alice, bob = parties
    first = deploy(alice, bob, tmp_path, {"handler.py": VERSION_1})
    assert run(capsys, "--profile", "bob", "approve", "hostile", "--yes")[0] == 0
    redeploy(alice, bob, tmp_path, {"handler.py": VERSION_2})
    if refusal == "not stored":
        (manager.settings.functions_dir / first.function.removeprefix("fs://")).unlink()
    else:
        download = ManagerClient.download_function_to

        def refused_first(self: ManagerClient, function: str, *args: Any, **kwargs: Any) -> int:
            if function == first.function:  # after the review's own download succeeded
                assert operator(manager, "client", "disable", bob.config.client_id) == 0
            return download(self, function, *args, **kwargs)

        monkeypatch.setattr(ManagerClient, "download_function_to", refused_first)
    code, out, err = run(capsys, "--profile", "bob", "inspect", "hostile", "--against", "approved")
    assert code == 1, out
    assert "changes from" not in out and "to approve exactly this" not in out
    assert err.startswith("error: manager: "), err
    assert f"downloading the earlier function {first.function} to compare with" in err
    if refusal == "disabled":
        assert "401" in err and "invalid_client" in err
        assert "check the client id and secret" in err  # failures()' hint is kept
    else:
        assert "500" in err and "function-stored" in err


def test_inspect_against_renews_a_token_revoked_before_the_earlier_functions_download(
    parties: tuple[Profile, Profile],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    manager: Manager,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator disabled and enabled the client between the two downloads: the
    client logs in again, as for every download, and compares the code."""
    alice, bob = parties
    first = deploy(alice, bob, tmp_path, {"handler.py": VERSION_1})
    assert run(capsys, "--profile", "bob", "approve", "hostile", "--yes")[0] == 0
    redeploy(alice, bob, tmp_path, {"handler.py": VERSION_2})
    download = ManagerClient.download_function_to

    def revoked_first(self: ManagerClient, function: str, *args: Any, **kwargs: Any) -> int:
        if function == first.function:
            assert operator(manager, "client", "disable", bob.config.client_id) == 0
            assert operator(manager, "client", "enable", bob.config.client_id) == 0
        return download(self, function, *args, **kwargs)

    monkeypatch.setattr(ManagerClient, "download_function_to", revoked_first)
    out = inspect(capsys, "hostile", "--against", "approved")
    assert "    -    label = 'reviewed'\n" in out
    assert "not at hand" not in out


def test_inspect_against_an_unknown_work_id_is_unusable_input(
    parties: tuple[Profile, Profile], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    alice, bob = parties
    deploy(alice, bob, tmp_path, {"handler.py": HANDLER})
    code, _, err = run(capsys, "--profile", "bob", "inspect", "hostile", "--against", "A" * 43)
    assert code == 2
    assert "this profile has no record of Work-ID" in err
    code, _, err = run(capsys, "--profile", "bob", "inspect", "hostile", "--against", "approved")
    assert code == 2
    assert "you have not approved clean room hostile" in err
    code, _, err = run(capsys, "--profile", "bob", "inspect", "hostile", "--against", "fs://x")
    assert code == 2
    assert "not a function ID" in err
    code, _, err = run(capsys, "--profile", "bob", "inspect", "hostile", "--against", "../x")
    assert code == 2


def test_approve_shows_what_changed_since_the_inspection(
    parties: tuple[Profile, Profile],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice, bob = parties
    deploy(alice, bob, tmp_path, {"handler.py": HANDLER}, parameters={"k": 10})
    inspect(capsys, "hostile")
    redeploy(alice, bob, tmp_path, parameters={"k": 1})
    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    code, _, err = run(capsys, "--profile", "bob", "approve", "hostile")
    assert code == 1
    assert '    ~ "k": 10 -> 1\n' in err


def test_the_deployers_approval_can_be_compared_with(
    parties: tuple[Profile, Profile], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The deployer pinned at deploy: the record holds the spec, the files come from the bytes."""
    alice, bob = parties
    tree: Tree = {"handler.py": VERSION_1}
    source = write_tree(tmp_path / "alice-source", tree)
    code, out, err = run(capsys, "--profile", "alice", "function", "upload", str(source))
    assert code == 0, err
    access = tmp_path / "access.yaml"
    access.write_text(f"inputs:\n  input_1: {bob.user_id}\noutputs:\n  output_1: {alice.user_id}\n")
    code, _, err = run(
        capsys, "--profile", "alice", "deploy", "--function", out.strip(), "--name", "hostile",
        "--handler", "handler.run", "--access", str(access), "--param", "k=10",
    )  # fmt: skip
    assert code == 0, err
    with alice.manager() as manager:
        manager.delete("hostile")
    deploy(alice, bob, tmp_path, {"handler.py": VERSION_2}, parameters={"k": 11})
    code, out, err = run(
        capsys, "--profile", "alice", "inspect", "hostile", "--against", "approved"
    )
    assert code == 0, err
    assert '    ~ "k": 10 -> 11\n' in out
    assert "    +    label = 'r\\u0435viewed'\\x20\\x20\n" in out


def test_status_shows_rooms_and_your_approval(
    parties: tuple[Profile, Profile], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    alice, bob = parties
    spec = deploy(alice, bob, tmp_path, {"handler.py": HANDLER})
    code, out, err = run(capsys, "--profile", "bob", "rooms")
    assert code == 0, err
    assert out.split() == [
        "name", "project", "state", "approved", "Work-ID",
        "hostile", "acme", "deployed", "no", spec.work_id[:12] + "…",
        "state:", "as", "the", "manager", "reports", "it", "(not", "verified)",
    ]  # fmt: skip
    assert run(capsys, "--profile", "bob", "ls")[1] == out
    assert run(capsys, "--profile", "bob", "status")[1] == out
    assert run(capsys, "--profile", "bob", "approve", "hostile", "--work-id", spec.work_id)[0] == 0
    # The stand-in Controller attests nothing: the Worker's state is not verified, and
    # that is all the status says of it (exit 1), each line naming who says what.
    code, out, err = run(capsys, "--profile", "bob", "status", "hostile")
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0] == "clean room hostile (project acme)"
    assert lines[1] == "  manager state:  deployed  [the manager says: not verified]"
    assert lines[3] == (
        f"  Work-ID:        {spec.work_id} (recomputed from the spec; approved by you)"
    )
    assert lines[4].startswith("  runners:") and lines[4].endswith(
        "[in the spec: the Work-ID covers it]"
    )
    assert lines[5].startswith("  Worker:         NOT VERIFIED: compute server: 4")
    assert all("signed by the Worker" not in line for line in lines)
    assert all("redeploy" not in line for line in lines)
    second = redeploy(alice, bob, tmp_path)
    code, out, _ = run(capsys, "--profile", "bob", "--output", "json", "rooms", "--deleted")
    assert code == 0
    rooms = {(room["state"], room["work_id"]): room["approved"] for room in json.loads(out)}
    assert rooms == {("deleted", spec.work_id): True, ("deployed", second.work_id): False}
    code, out, _ = run(capsys, "--profile", "bob", "--output", "json", "rooms")
    assert [room["state"] for room in json.loads(out)] == ["deployed"]
    code, out, _ = run(capsys, "status", "hostile", "--json", "--profile", "bob")
    assert code == 1
    document = json.loads(out)
    assert document["worker"]["verified"] is False and document["manager"]["verified"] is False
    assert document["approved"] is False and document["work_id"] == second.work_id
    # Deleted: said first, as the manager's word, before what the Worker's asking met (it
    # showed only "400 invalid_target ... (token-room: expected None, got None)").
    with alice.manager() as manager:
        manager.delete("hostile")
    code, out, _ = run(capsys, "--profile", "bob", "status", "hostile")
    assert code == 1
    worker = out.split("  Worker:         ", 1)[1].splitlines()
    assert worker[0] == (
        "NOT VERIFIED: the manager says the room is deleted, so its Worker erased its keys "
        "and has no status to sign; asked all the same:"
    )
    assert worker[1].startswith("                  compute server: 404"), worker  # a stand-in


def test_approve_with_a_work_id_never_shown_here_says_it_may_be_mistyped(
    parties: tuple[Profile, Profile], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A Work-ID this profile was never shown (mistyped, or given by someone else) is
    refused as another, not said to be one the room was redeployed from."""
    alice, bob = parties
    spec = deploy(alice, bob, tmp_path, {"handler.py": HANDLER})
    mistyped = spec.work_id[:-4] + ("AAAA" if not spec.work_id.endswith("AAAA") else "BBBB")
    for given in (mistyped, "wrongwrong"):
        code, _, err = run(capsys, "--profile", "bob", "approve", "hostile", "--work-id", given)
        assert code == 1
        assert err.startswith(
            "error: work-id-reviewed: clean room hostile has another Work-ID than the one "
            "given, which was never shown to you here: mistyped, or the room was redeployed"
        ), err
        assert f"expected {given}, got {spec.work_id}" in err
        assert bob.approval("hostile") is None
