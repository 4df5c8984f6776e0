"""`cleanroom function test` as examples/README.md runs it ("Trying them locally"): two
outputs named with --output-id, in the Worker's sandbox, each receiving the result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cleanroom.insecure.demodata import write_overlap_inputs
from tests.examples.harness import EXAMPLES
from tests.sandbox import require_sandbox


def cleanroom(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line, run as a user runs it, with its own home."""
    return subprocess.run(
        [sys.executable, "-m", "cleanroom.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "CLEANROOM_HOME": str(tmp_path / "home")},
        timeout=300,
        check=False,
    )


def function_test(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cleanroom(tmp_path, "function", "test", *args)


def test_each_output_id_receives_the_result(tmp_path: Path) -> None:
    """h3: `--output-id` was stored under the global --output option's name, so
    every `function test --output-id ID` was refused as "not one of 'text', 'json'"."""
    require_sandbox()
    truth = write_overlap_inputs(tmp_path / "input_1", tmp_path / "input_2", 1000)
    result = function_test(
        tmp_path, str(EXAMPLES / "overlap"),
        "--input", f"input_1={tmp_path / 'input_1'}",
        "--input", f"input_2={tmp_path / 'input_2'}",
        "--output-id", "output_1", "--output-id", "output_2",
        "--param", "k=10", "--out", str(tmp_path / "result"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for output_id in ("output_1", "output_2"):
        document = json.loads((tmp_path / "result" / output_id / "result.json").read_text())
        assert document["overlap"] == truth.overlap


def test_a_module_of_another_runtime_is_named_with_the_option_that_gives_it(
    tmp_path: Path,
) -> None:
    """A function written as the seed product's users write them (pandas), tested on the
    default runtime (the standard library only): it printed the traceback's
    ModuleNotFoundError and nothing said that --runtime python3.11-data has pandas."""
    from tests.e2e.test_runtimes import require_data_runtime

    require_sandbox()
    require_data_runtime()
    function = tmp_path / "function"
    function.mkdir()
    (function / "handler.py").write_text("import pandas\n\ndef run():\n    pass\n")
    result = function_test(tmp_path, str(function), "--out", str(tmp_path / "out"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "No module named 'pandas'" in result.stdout
    assert result.stderr.endswith(
        "hint: pandas is not in runtime python3.11; runtime python3.11-data has it: give "
        "--runtime python3.11-data here and to cleanroom deploy (or vendor pandas into the "
        "function's packages/)\n"
    ), result.stderr
    (function / "handler.py").write_text("import no_such_module_anywhere\n")
    result = function_test(tmp_path, str(function), "--out", str(tmp_path / "out2"))
    assert result.returncode == 1 and "hint:" not in result.stderr


def test_a_limit_out_of_range_is_named_by_its_option_and_unit(tmp_path: Path) -> None:
    """It was named by the spec's field: `--memory_mib: Input should be ...`, no such option."""
    (tmp_path / "function").mkdir()
    result = function_test(tmp_path, str(tmp_path / "function"), "--memory", "10M")
    assert result.returncode == 2
    assert result.stderr == "error: --memory 10M: Input should be greater than or equal to 64 MiB\n"
    result = function_test(tmp_path, str(tmp_path / "function"), "--disk", "0")
    assert result.returncode == 2
    assert result.stderr == "error: --disk 0: Input should be greater than or equal to 1 MiB\n"


def test_a_duration_takes_a_unit_and_its_bound_is_in_seconds(tmp_path: Path) -> None:
    """--timeout and --cpu took seconds only (`--timeout 5m` exited 2, "not a valid
    integer"); now a unit as --memory has one, and a bound names the option as given."""
    (tmp_path / "function").mkdir()
    result = function_test(tmp_path, str(tmp_path / "function"), "--timeout", "8d")
    assert result.returncode == 2
    assert result.stderr == (
        "error: --timeout 8d: Input should be less than or equal to 604800 s\n"
    )
    result = function_test(tmp_path, str(tmp_path / "function"), "--cpu", "5 minutes")
    assert result.returncode == 2
    assert result.stderr.startswith("error: --cpu '5 minutes': not a duration; write e.g. 90")
    # Read, and past the limits: the next refusal is the function's (no handler.py).
    result = function_test(
        tmp_path, str(tmp_path / "function"), "--timeout", "5m", "--cpu", "1h30m"
    )
    assert result.returncode == 2
    assert "handler" in result.stderr and "--timeout" not in result.stderr, result.stderr


def test_a_number_alone_that_deploy_would_read_in_gib_needs_its_unit(tmp_path: Path) -> None:
    """`deploy --memory 2` is 2 GiB; here a number alone is MiB, and 2 MiB was refused as
    under the least without saying that the unit differs (h25)."""
    (tmp_path / "function").mkdir()
    result = function_test(tmp_path, str(tmp_path / "function"), "--memory", "2")
    assert result.returncode == 2
    assert result.stderr == (
        "error: --memory 2: a number alone is MiB here, and 2 MiB is under the least "
        "(64 MiB); for GiB (deploy's unit) write 2G\n"
    )


def test_files_left_out_for_their_names_are_counted_for_the_author(tmp_path: Path) -> None:
    """The sandbox leaves out an output file whose name a terminal acts on, or a disk that
    ignores case holds as another's: the author trying the function is told how many,
    in text and in --json, and the names shown are escaped (h19)."""
    require_sandbox()
    function = tmp_path / "function"
    function.mkdir()
    (function / "handler.py").write_text(
        "import pathlib\n\n"
        "def run():\n"
        "    out = pathlib.Path('outputs/output_1')\n"
        "    for name in ('ok.csv', 'Data.csv', 'data.csv', 'report\\u202ecsv.exe'):\n"
        "        (out / name).write_text(name)\n"
    )
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "x.csv").write_text("x\n")
    outputs = {}
    for output in ("text", "json"):
        result = cleanroom(
            tmp_path, "--output", output, "function", "test", str(function),
            "--input", f"input_1={tmp_path / 'input'}",
            "--out", str(tmp_path / f"result-{output}"),
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        outputs[output] = result.stdout
        assert sorted(os.listdir(tmp_path / f"result-{output}" / "output_1")) == ["ok.csv"]
    assert "outputs: 3 files left out for their names" in outputs["text"]
    assert "\u202e" not in outputs["text"]
    assert json.loads(outputs["json"])["outputs_left_out"] == 3


def test_the_handler_is_checked_as_deploy_and_every_review_will_before_the_run(
    tmp_path: Path,
) -> None:
    """A function written as a seed-product script (main() under `__main__`) ran, and
    failed with a bare `AttributeError: module 'handler' has no attribute 'run'`; deploy
    and every reviewer were warned, the author trying it was not (h25). Now the same
    warnings come first, naming what the module defines, and a handler no module of the
    function holds, or no module.function at all, is refused before any run (exit 2)."""
    function = tmp_path / "function"
    function.mkdir()
    (function / "handler.py").write_text(
        "import sys\n\ndef _helper():\n    pass\n\ndef main():\n    sys.exit(0)\n\n"
        "if __name__ == '__main__':\n    main()\n"
    )
    for handler, says in (
        ("nomod.run", "error: handler-module: the handler nomod.run is not in the function"),
        ("run", "error: --handler run: give module.function, e.g. handler.run\n"),
    ):
        out = tmp_path / "refused"
        refused = function_test(tmp_path, str(function), "--handler", handler, "--out", str(out))
        assert refused.returncode == 2 and refused.stderr.startswith(says), refused.stderr
        assert refused.stdout == "" and not out.exists()
    require_sandbox()
    result = function_test(tmp_path, str(function), "--out", str(tmp_path / "out"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(
        "warning: handler-function: the handler's module handler.py defines no run at its top level"
    ), result.stderr
    assert "; it defines main (the handler is called with no arguments: e.g. --handler " in (
        result.stderr
    )


def test_a_path_under_work_the_sandbox_lacks_is_shown_with_the_layout(tmp_path: Path) -> None:
    """A function that opens /work/input/… (not inputs/) failed with the traceback alone,
    which named the path and not where the data is (h25)."""
    require_sandbox()
    function = tmp_path / "function"
    function.mkdir()
    (function / "handler.py").write_text(
        "def run():\n    open('/work/input/input_1/customers.csv').read()\n"
    )
    data = tmp_path / "data"
    data.mkdir()
    (data / "customers.csv").write_text("email\na@x\n")
    result = function_test(
        tmp_path, str(function), "--input", f"input_1={data}", "--out", str(tmp_path / "out")
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines()[-1] == (
        "hint: /work/input/input_1/customers.csv is not in the sandbox: it has "
        "/work/inputs/ID/ (here: input_1), /work/outputs/ID/ (here: output_1), "
        "/work/parameters.json and /work/function/ (examples/README.md)"
    ), result.stderr


def test_function_init_starts_a_function_that_passes_its_own_test(tmp_path: Path) -> None:
    """A new user had no starting point but the examples (no `function init`): it writes
    a handler with the /work layout written out, which `function test` runs as it is
    and `function init` never writes over (h32)."""
    started = cleanroom(tmp_path, "function", "init", str(tmp_path / "mine"))
    assert started.returncode == 0, started.stderr
    assert started.stdout == f"{tmp_path / 'mine' / 'handler.py'}\n"
    assert "next: cleanroom function test" in started.stderr
    again = cleanroom(tmp_path, "function", "init", str(tmp_path / "mine"))
    assert again.returncode == 2 and "is not empty" in again.stderr
    require_sandbox()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.csv").write_text("a\n1\n")
    result = function_test(
        tmp_path, str(tmp_path / "mine"), "--input", f"input_1={tmp_path / 'data'}",
        "--param", "k=3", "--out", str(tmp_path / "result"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads((tmp_path / "result" / "output_1" / "result.json").read_text())
    assert document == {"parameters": {"k": 3}, "files": {"input_1": ["rows.csv"]}}


def test_what_the_function_prints_reaches_the_terminal_escaped(tmp_path: Path) -> None:
    """The sandbox confines a function's code, but its stdout was printed to the
    terminal of whoever tries it (maybe a function another party wrote, `function
    download`) raw: ESC sequences that set the window's title and the clipboard (OSC 52,
    ended by ESC \\, since BEL was dropped), cleared the screen and painted a status
    line of its choice (h35's red team). Every character a terminal acts on is now
    escaped, line by line; --json has it whole, escaped by JSON."""
    require_sandbox()
    function = tmp_path / "function"
    function.mkdir()
    (function / "handler.py").write_text(
        "import sys\n\n"
        "def run():\n"
        "    sys.stdout.write('line one\\n\\x1b]52;c;ZWNobyBvd25lZA==\\x1b\\\\'\n"
        "                     '\\x1b]0;title\\x1b\\\\\\x1b[2J\\x1b[1A\\x1b[2K'\n"
        "                     'status: succeeded\\x9b31m\\u202eok\\n')\n"
    )
    outputs = {}
    for output in ("text", "json"):
        result = cleanroom(
            tmp_path, "--output", output, "function", "test", str(function),
            "--out", str(tmp_path / f"result-{output}"),
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        outputs[output] = result.stdout
    text = outputs["text"]
    assert "\x1b" not in text and "\x9b" not in text and "\u202e" not in text, repr(text)
    assert "line one\n" in text  # the lines stay lines
    assert "\\x1b]52;c;ZWNobyBvd25lZA==\\x1b\\" in text  # shown, not acted on
    assert "\\x1b[2Kstatus: succeeded\\x9b31m\\u202eok" in text
    log = json.loads(outputs["json"])["log"]
    assert "\x1b]52;c;ZWNobyBvd25lZA==\x1b\\" in log  # JSON carries it whole
