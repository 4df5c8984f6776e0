"""What a reviewer sees is what runs: the review as the command line shows it.

A hostile deployer (Alice, through the SDK, which lets her put anything into a
spec) deploys on a real manager with a stand-in Controller; Bob reviews with
``cleanroom inspect`` and ``approve``. Each test plays one trick and checks that
the review shows the true content, or refuses.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cleanroom.cli.main import main
from cleanroom.client.access import Access, build_spec
from cleanroom.client.profile import Profile
from cleanroom.protocol.bundle import pack
from cleanroom.protocol.spec import Scalar, WorkSpec
from tests.client.test_with_manager import configure
from tests.manager.conftest import Manager, StandInController
from tests.protocol.test_bundle import HANDLER, Tree, write_tree


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
                inputs={"input_1": reviewer.user_id}, outputs={"output_1": deployer.user_id}
            ),
            deployer_user_id=deployer.user_id,
            parameters=parameters or {},
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
