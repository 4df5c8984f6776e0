"""Review: the manager's room and bundle are recomputed, and refused when they disagree."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from cleanroom.client.access import Access, build_spec
from cleanroom.client.manager import Room
from cleanroom.client.review import check_handler, review
from cleanroom.errors import CheckFailed
from cleanroom.protocol.bundle import BundleError, function_id, pack
from cleanroom.protocol.errors import MessageFormatError
from cleanroom.protocol.spec import WorkSpec


def make_room(bundle: bytes, alice: str, bob: str, **changes: object) -> Room:
    spec = build_spec(
        name="overlap",
        function_id=function_id(bundle),
        handler="handler.run",
        access=Access(
            inputs={"input_1": alice, "input_2": bob},
            outputs={"output_1": alice},
            runners=(bob,),
        ),
        deployer_user_id=alice,
    )
    room = Room(
        name="overlap",
        project="acme",
        spec=spec.document(),
        work_id=spec.work_id,
        function=spec.function,
        state="deployed",
        compute_url="http://127.0.0.1:8081",
        deployer="alice-client",
        created=1_764_763_200,
    )
    return dataclasses.replace(room, **changes)  # type: ignore[arg-type]


def test_review_lists_files_and_rights(function_dir: Path, alice: str, bob: str) -> None:
    bundle = pack(function_dir)
    room = make_room(bundle, alice, bob)
    result = review(room, bundle, you=alice)
    assert result.function_id == function_id(bundle)
    assert result.work_id == room.work_id
    assert result.handler_module == "handler.py"
    handler = (function_dir / "handler.py").read_bytes()
    assert [(f.path, f.size, f.sha256) for f in result.files] == [
        ("handler.py", len(handler), hashlib.sha256(handler).hexdigest()),
        ("lib/util.py", 10, hashlib.sha256(b"VALUE = 1\n").hexdigest()),
    ]
    rights = [(p.role, p.object_id, p.user_id, p.is_you) for p in result.participants]
    assert rights == [
        ("input", "input_1", alice, True),
        ("input", "input_2", bob, False),
        ("output", "output_1", alice, True),
        ("runner", None, bob, False),
    ]
    assert result.you_participate
    document = result.to_json()
    assert document["work_id"] == room.work_id
    assert document["spec"] == room.spec
    assert document["participants"][0] == {
        "role": "input", "id": "input_1", "user_id": alice, "you": True,
    }  # fmt: skip


def test_review_of_an_outsider(function_dir: Path, alice: str, bob: str) -> None:
    bundle = pack(function_dir)
    result = review(make_room(bundle, alice, bob), bundle, you="x" * 43)
    assert not result.you_participate


def test_review_can_unpack_the_source(
    function_dir: Path, alice: str, bob: str, tmp_path: Path
) -> None:
    bundle = pack(function_dir)
    review(make_room(bundle, alice, bob), bundle, source=tmp_path / "source")
    assert (tmp_path / "source" / "lib" / "util.py").read_text() == "VALUE = 1\n"


def test_a_handler_the_review_cannot_find_is_an_error(
    function_dir: Path, alice: str, bob: str
) -> None:
    bundle = pack(function_dir)
    room = make_room(bundle, alice, bob)
    spec = dict(room.spec, handler="missing.run")
    work_id = WorkSpec.parse(spec).work_id
    with pytest.raises(CheckFailed) as error:
        review(dataclasses.replace(room, spec=spec, work_id=work_id), bundle)
    assert error.value.check == "handler-module"
    assert error.value.actual == "missing: not found"


def test_bundle_that_is_not_the_specs_function(function_dir: Path, alice: str, bob: str) -> None:
    bundle = pack(function_dir)
    room = make_room(bundle, alice, bob)
    (function_dir / "handler.py").write_text("def run(*args):\n    steal()\n")
    swapped = pack(function_dir)
    with pytest.raises(CheckFailed) as error:
        review(room, swapped)
    assert error.value.check == "function-id"
    assert error.value.expected == room.spec["function"]
    assert error.value.actual == function_id(swapped)


def test_manager_work_id_that_disagrees(function_dir: Path, alice: str, bob: str) -> None:
    bundle = pack(function_dir)
    room = make_room(bundle, alice, bob)
    lying = dataclasses.replace(room, work_id="A" * 43)
    with pytest.raises(CheckFailed) as error:
        review(lying, bundle)
    assert error.value.check == "work-id"
    assert error.value.expected == room.work_id
    assert error.value.actual == "A" * 43


def test_manager_function_field_that_disagrees(function_dir: Path, alice: str, bob: str) -> None:
    bundle = pack(function_dir)
    room = make_room(bundle, alice, bob)
    lying = dataclasses.replace(room, function="fs://" + "B" * 43)
    with pytest.raises(CheckFailed) as error:
        review(lying, bundle)
    assert error.value.check == "function-id"
    assert error.value.actual == "fs://" + "B" * 43


def test_spec_of_another_room(function_dir: Path, alice: str, bob: str) -> None:
    bundle = pack(function_dir)
    room = make_room(bundle, alice, bob)
    with pytest.raises(CheckFailed) as error:
        review(dataclasses.replace(room, name="other"), bundle)
    assert error.value.check == "room-name"
    assert error.value.expected == "other"
    assert error.value.actual == "overlap"


def test_invalid_spec(function_dir: Path, alice: str, bob: str) -> None:
    bundle = pack(function_dir)
    room = make_room(bundle, alice, bob)
    spec = dict(room.spec, runners=[])
    with pytest.raises(MessageFormatError) as error:
        review(dataclasses.replace(room, spec=spec), bundle)
    assert error.value.check == "work-spec"
    assert error.value.actual == "runners"


def test_bundle_that_does_not_unpack(alice: str, bob: str) -> None:
    bundle = b"not a tar archive" + bytes(10240)
    room = make_room(bundle, alice, bob)
    with pytest.raises(BundleError) as error:
        review(room, bundle)
    assert error.value.check == "bundle-format"


def test_parameter_keys_that_read_alike_are_flagged(
    function_dir: Path, alice: str, bob: str
) -> None:
    bundle = pack(function_dir)
    room = make_room(bundle, alice, bob)
    spec = dict(room.spec, parameters={"k": 1, "k\u034f": 10, "K": 3, "columns": "a"})
    work_id = WorkSpec.parse(spec).work_id
    result = review(dataclasses.replace(room, spec=spec, work_id=work_id), bundle)
    (warning,) = result.warnings
    assert warning.check == "parameter-collision"
    assert warning.subjects == ("K", "k", "k\u034f")
    assert warning.message == 'parameter keys read alike: "K", "k", "k\\u034f"'


def test_the_review_names_the_module_python_imports(tmp_path: Path, alice: str, bob: str) -> None:
    function = tmp_path / "decoy"
    (function / "handler").mkdir(parents=True)
    (function / "handler.py").write_text("def run():\n    pass  # what a reader opens\n")
    (function / "handler" / "__init__.py").write_text("def run():\n    pass  # what runs\n")
    bundle = pack(function)
    result = review(make_room(bundle, alice, bob), bundle)
    assert result.handler.path == "handler/__init__.py"
    assert result.handler_module == "handler/__init__.py"
    (warning,) = result.warnings
    assert warning.check == "module-shadowing"
    assert warning.subjects == ("handler", "handler/__init__.py", "handler.py")
    document = result.to_json()
    assert document["handler"]["path"] == "handler/__init__.py"
    assert document["warnings"][0]["check"] == "module-shadowing"


@pytest.mark.parametrize("project", ["acme --work-id X", "Acme", "", "-acme"])
def test_a_rooms_project_that_is_no_project_name_is_refused(
    function_dir: Path, alice: str, bob: str, project: str
) -> None:
    """The project is printed in the command that approves the room, and kept with the
    approval: a manager's answer with anything but a project name is refused."""
    document = dataclasses.asdict(make_room(pack(function_dir), alice, bob))
    assert Room.from_json(document).project == "acme"
    with pytest.raises(MessageFormatError) as caught:
        Room.from_json({**document, "project": project})
    assert caught.value.check == "room" and caught.value.expected == "a project name"


@pytest.mark.parametrize(
    ("source", "warned"),
    [
        (b"def run():\n    pass\n", False),
        (b"async def run():\n    pass\n", False),
        (b"class run:\n    pass\n", False),
        (b"from lib.util import VALUE as run\n", False),
        (b"import run\n", False),
        (b"run = print\n", False),
        (b"run: object = print\n", False),
        (b"try:\n    import fast\nexcept ImportError:\n    def run():\n        pass\n", False),
        (b"if True:\n    def run():\n        pass\n", False),
        # Names bound where no reading sees them: nothing is said.
        (b"from lib.util import *\n", False),
        (b"globals()['run'] = print\n", False),
        (b"def __getattr__(name):\n    return print\n", False),
        # The Worker's getattr(module, 'run') will fail.
        (b"def nope():\n    pass\n", True),
        (b"def main():\n    run = 1\n    return run\n", True),
        (b"RUN = print\n", True),
        (b"def run(:\n", True),  # does not parse
        # Nested past the parser's depth: it stops with RecursionError or MemoryError,
        # which ended every party's inspect (and the deployer's deploy) with a traceback.
        (b"def run():\n    pass\nx = " + b"+".join([b"a"] * 200_000) + b"\n", True),
        (b"def run():\n    pass\nx = " + b"-" * 200_000 + b"1\n", True),
    ],
)
def test_a_handler_function_not_seen_in_its_module_is_a_warning(
    tmp_path: Path, source: bytes, warned: bool
) -> None:
    """handler-function: the review reads (never runs) the handler's module for a
    top-level binding of the handler's name, and warns only when none can exist unseen."""
    function = tmp_path / "function"
    (function / "lib").mkdir(parents=True)
    (function / "handler.py").write_bytes(source)
    (function / "lib" / "util.py").write_text("VALUE = 1\n")
    bundle = pack(function)
    warnings = check_handler(bundle, "handler.run", "python3.11", function=function_id(bundle))
    checks = [warning.check for warning in warnings if warning.check != "handler-imports"]
    assert checks == (["handler-function"] if warned else [])
    assert all("handler.py" in warning.message for warning in warnings)


def test_a_handler_function_not_seen_is_warned_of_with_the_functions_its_module_defines(
    tmp_path: Path,
) -> None:
    """A seed-product script defines main() and calls it under `__main__`, which the
    Worker never runs: the warning names what the module defines (not its private
    helpers), for the deployer to give --handler handler.main (h25)."""
    function = tmp_path / "function"
    function.mkdir()
    (function / "handler.py").write_text(
        "def _read():\n    pass\n\ndef main():\n    _read()\n\nasync def later():\n"
        "    pass\n\nif __name__ == '__main__':\n    main()\n"
    )
    bundle = pack(function)
    (warning,) = check_handler(bundle, "handler.run", "python3.11", function=function_id(bundle))
    assert warning.check == "handler-function"
    assert warning.message.endswith(
        "; it defines main, later (the handler is called with no arguments: e.g. "
        "--handler handler.main)"
    ), warning.message


@pytest.mark.parametrize(
    ("source", "runtime", "missing"),
    [
        # As the seed product's users write them: pandas on the standard library alone.
        (b"import pandas as pd\ndef run():\n    pd.read_csv('/work/x')\n", "python3.11",
         ["pandas"]),
        (b"from polars import col\nimport numpy.linalg\ndef run():\n    pass\n",
         "python3.11", ["numpy", "polars"]),
        (b"def run():\n    import pyarrow.parquet\n", "python3.11", ["pyarrow"]),
        # In the standard library, in the function, or ready for it to be missing: no word.
        (b"import csv, json\nfrom pathlib import Path\ndef run():\n    pass\n",
         "python3.11", []),
        (b"from lib.util import VALUE\nimport vendored\ndef run():\n    pass\n",
         "python3.11", []),
        (b"try:\n    import pandas\nexcept ImportError:\n    pandas = None\ndef run():\n"
         b"    pass\n", "python3.11", []),
        (b"from . import util\ndef run():\n    pass\n", "python3.11", []),
        # For a type checker only: never imported when the module runs.
        (b"from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pandas\n"
         b"def run():\n    pass\n", "python3.11", []),
        (b"import typing\nif typing.TYPE_CHECKING:\n    import polars\nelse:\n"
         b"    import numpy\ndef run():\n    pass\n", "python3.11", ["numpy"]),
        # A runtime with packages: not known here without it installed, so no word.
        (b"import pandas\ndef run():\n    pass\n", "python3.11-data", []),
    ],
)  # fmt: skip
def test_a_module_the_runtime_and_the_function_lack_is_a_warning(
    tmp_path: Path, source: bytes, runtime: str, missing: list[str]
) -> None:
    """handler-imports: a function written for pandas, deployed on the standard library
    alone, failed only when run, after every party had uploaded her data (found by h22
    as a new user): the deployer and every reviewer are now warned, by its name."""
    function = tmp_path / "function"
    (function / "lib").mkdir(parents=True)
    (function / "packages" / "vendored").mkdir(parents=True)
    (function / "handler.py").write_bytes(source)
    (function / "lib" / "util.py").write_text("VALUE = 1\n")
    (function / "packages" / "vendored" / "__init__.py").write_text("")
    bundle = pack(function)
    warnings = check_handler(bundle, "handler.run", runtime, function=function_id(bundle))
    found = [warning for warning in warnings if warning.check == "handler-imports"]
    assert [list(warning.subjects[1:]) for warning in found] == ([missing] if missing else [])
    for warning in found:
        assert f"runtime {runtime} (Python 3.11, the standard library only)" in warning.message
        assert "python3.11-data (Python 3.11 with numpy, pandas" in warning.message


@pytest.mark.parametrize(
    ("files", "missing", "where"),
    [
        # The seed product's layout: a handler that calls the function's own helpers.
        ({"handler.py": "from lib.util import load\ndef run():\n    load()\n",
          "lib/__init__.py": "", "lib/util.py": "import pandas as pd\ndef load(): ...\n"},
         ["pandas"], "pandas (in lib/util.py)"),
        # Through a relative import, and a submodule named in `from lib import stats`.
        ({"handler.py": "from lib import stats\ndef run():\n    pass\n",
          "lib/__init__.py": "", "lib/stats.py": "from . import helpers\n",
          "lib/helpers.py": "def f():\n    import polars\n"},
         ["polars"], "polars (in lib/helpers.py)"),
        # A cycle is read once; a vendored package's own imports are its business.
        ({"handler.py": "import lib.a\nimport vendored\ndef run():\n    pass\n",
          "lib/__init__.py": "", "lib/a.py": "import lib.b\n", "lib/b.py": "import lib.a\n",
          "packages/vendored/__init__.py": "import matplotlib\n"},
         [], ""),
        # One missing in the handler, another further in: both, each where it was seen.
        ({"handler.py": "import numpy\nimport helper\ndef run():\n    pass\n",
          "helper.py": "try:\n    import scipy\nexcept ImportError:\n    pass\nimport sklearn\n"},
         ["numpy", "sklearn"], "numpy, sklearn (in helper.py)"),
    ],
)  # fmt: skip
def test_the_function_modules_the_handler_imports_are_read_too(
    tmp_path: Path, files: dict[str, str], missing: list[str], where: str
) -> None:
    """handler-imports follows the handler's imports into the function's own modules: a
    handler importing its helpers, which import pandas, was said nothing of (the warning
    read the handler's module only), and failed only when run."""
    function = tmp_path / "function"
    for name, text in files.items():
        (function / name).parent.mkdir(parents=True, exist_ok=True)
        (function / name).write_text(text)
    bundle = pack(function)
    warnings = check_handler(bundle, "handler.run", "python3.11", function=function_id(bundle))
    found = [warning for warning in warnings if warning.check == "handler-imports"]
    assert [list(warning.subjects[1:]) for warning in found] == ([missing] if missing else [])
    assert all(f"imports {where}, which runtime" in warning.message for warning in found)


def test_check_handler_refuses_as_the_review_does(function_dir: Path) -> None:
    """A deployer's check_handler raises the review's handler-module for a missing module."""
    bundle = pack(function_dir)
    with pytest.raises(CheckFailed) as refused:
        check_handler(bundle, "nomodule.run", "python3.11", function=function_id(bundle))
    assert refused.value.check == "handler-module"
    assert check_handler(bundle, "handler.run", "python3.11", function=function_id(bundle)) == ()


def test_check_handler_reads_a_bundle_from_a_file(function_dir: Path, tmp_path: Path) -> None:
    """A bundle in a file is checked from the file (read in pieces, never whole in
    memory), as from its bytes."""
    bundle = pack(function_dir)
    path = tmp_path / "function.tar"
    path.write_bytes(bundle)
    with path.open("rb") as file:
        assert check_handler(file, "handler.run", "python3.11", function=function_id(bundle)) == ()
        with pytest.raises(CheckFailed) as refused:
            check_handler(file, "nomodule.run", "python3.11", function=function_id(bundle))
    assert refused.value.check == "handler-module"


@pytest.mark.parametrize("in_a_file", [False, True])
def test_check_handler_reads_nothing_of_a_bundle_that_is_not_the_function(
    function_dir: Path, tmp_path: Path, in_a_file: bool
) -> None:
    """Another function's bundle (here one whose handler's module is missing, which would
    be refused as handler-module): refused as function-id, before anything in it is read."""
    named = pack(function_dir)
    (function_dir / "handler.py").rename(function_dir / "other.py")
    (function_dir / "handler.py").write_text("")
    other = pack(function_dir)
    path = tmp_path / "other.tar"
    path.write_bytes(other)
    with path.open("rb") as file, pytest.raises(CheckFailed) as refused:
        check_handler(
            file if in_a_file else other, "nomodule.run", "python3.11", function=function_id(named)
        )
    assert (refused.value.check, refused.value.expected) == ("function-id", function_id(named))
    assert refused.value.actual == function_id(other)


# A line a terminal shows as another (`cat handler.py`: erase the line, go back to its
# start, print a comment over it), and Trojan Source's bidirectional reordering
# (CVE-2021-42574): the code a reviewer reads is not the code that runs (h37).
_HIDDEN_LINE = (
    "import pathlib\n"
    "\n"
    "def run():\n"
    "    rows = pathlib.Path('/work/inputs/input_1/emails.csv').read_text()\n"
    "    pathlib.Path('/work/outputs/output_1/all.csv').write_text(rows)"
    "  #\x1b[2K\r    # the count only, below\n"
    "    print(len(rows.splitlines()))\n"
)
# A carriage return alone: Python ends the line there, a terminal goes back to its start.
_RETURNED_OVER = (
    "import pathlib\n"
    "\n"
    "def run():\n"
    "    rows = pathlib.Path('/work/inputs/input_1/emails.csv').read_text()\n"
    "    pathlib.Path('/work/outputs/output_1/all.csv').write_text(rows)\r"
    "    print(len(rows.splitlines()))  # the count only, nothing else of the rows\n"
)
_REORDERED = (
    "def run():\n"
    "    user = 'alice'\n"
    "    if user != 'admin\u202e \u2066# check admin\u2069 \u2066':\n"
    "        print('not admin')\n"
)


@pytest.mark.parametrize(
    ("path", "text", "line", "character"),
    [
        ("handler.py", _HIDDEN_LINE, 5, "\\x1b"),
        ("handler.py", _RETURNED_OVER, 5, "\\r"),
        ("handler.py", _REORDERED, 3, "\\u202e"),
        ("lib/util.py", "ALLOWED = 'alice\u200b'\n", 1, "\\u200b"),  # invisible
        ("lib/util.py", "VALUE = 1  # \u2028 an editor breaks the line\n", 1, "\\u2028"),
    ],
)
def test_code_that_shows_otherwise_than_it_runs_is_refused(
    tmp_path: Path, alice: str, bob: str, path: str, text: str, line: int, character: str
) -> None:
    function = tmp_path / "function"
    (function / "lib").mkdir(parents=True)
    (function / "handler.py").write_text("def run():\n    pass\n")
    (function / path).write_text(text, encoding="utf-8")
    bundle = pack(function)  # pack takes it: it is valid UTF-8 Python
    for refused in (
        lambda: review(make_room(bundle, alice, bob), bundle),
        lambda: check_handler(bundle, "handler.run", "python3.11", function=function_id(bundle)),
    ):
        with pytest.raises(CheckFailed) as caught:
            refused()
        assert caught.value.check == "code-text", caught.value
        assert str(caught.value).startswith(
            f"code-text: {path} line {line} holds {character}, which a terminal or an editor "
            "shows otherwise than Python reads it"
        ), caught.value
        assert "\x1b" not in str(caught.value) and "\u202e" not in str(caught.value)
        assert character in str(caught.value.actual)
    if text is _HIDDEN_LINE:  # the line as it is, with what covers it
        assert str(caught.value.actual).endswith("#\\x1b[2K\\r    # the count only, below")


def test_code_with_tabs_form_feeds_crlf_a_bom_and_letters_is_reviewed(
    tmp_path: Path, alice: str, bob: str
) -> None:
    """What Python and every editor read alike passes: tabs, CR LF, a form feed, a BOM at
    the start, non-ASCII letters; and vendored code is the wheels' and RECORD's to check."""
    function = tmp_path / "function"
    (function / "packages" / "vendor").mkdir(parents=True)
    (function / "handler.py").write_bytes(
        "\ufeffdef run():\r\n\tname = 'café ü €'\r\n\f\r\n\treturn name\r\n".encode()
    )
    (function / "packages" / "vendor" / "__init__.py").write_text("X = 'a\u200db'\n")
    bundle = pack(function)
    assert review(make_room(bundle, alice, bob), bundle).handler.path == "handler.py"
    assert check_handler(bundle, "handler.run", "python3.11", function=function_id(bundle)) == ()
