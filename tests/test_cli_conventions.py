"""The command line behaves like the ones people know: global options anywhere, -h,
plain help that shows flags as flags and every default, usage errors exit 2, one
summary per command that is its own help's, and --output json on every command
that prints a result."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from cleanroom.cli import main as cli_main
from cleanroom.cli.main import COMMANDS, main


def run(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cleanroom.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "CLEANROOM_HOME": str(home), "COLUMNS": "80", **env},
        timeout=120,
        check=False,
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLEANROOM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CLEANROOM_PROFILE", raising=False)
    return tmp_path / "home"


def configure(capsys: pytest.CaptureFixture[str], *extra: str) -> None:
    code = main(
        [*extra, "configure", "--manager-url", "http://127.0.0.1:9", "--client-id", "c",
         "--client-secret", "s"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()


def every_command() -> list[tuple[str, Any]]:
    """(path, click command) of every command and group, loaded."""
    group = cli_main._command()
    found: list[tuple[str, Any]] = []

    def walk(prefix: str, command: Any) -> None:
        found.append((prefix, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(f"{prefix} {name}".strip(), sub)

    for name in COMMANDS:
        walk(name, group.commands[name])
    return found


def first_sentence(text: str) -> str:
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    return paragraph


def test_the_listed_summaries_are_the_commands_own() -> None:
    """cleanroom --help lists commands without importing them: what it lists must be
    each command's own first line (a group's first sentence)."""
    group = cli_main._command()
    for name, entry in COMMANDS.items():
        if entry.alias_of is not None:
            assert group.commands[name] is group.commands[entry.alias_of]
            continue
        help_text = first_sentence(group.commands[name].help or "")
        assert help_text.startswith(entry.summary.rstrip(".")), (name, help_text)


def test_help_lists_commands_without_importing_them() -> None:
    code = (
        "import sys; from cleanroom.cli.main import main; main(['--help']); "
        "heavy = [m for m in ('cleanroom.client.rooms', 'cleanroom.manager.app', 'httpx', "
        "'fastapi', 'cleanroom.attestation') if m in sys.modules]; print('HEAVY', heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_whoami_imports_only_the_profile(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure(capsys)
    code = (
        "import sys; from cleanroom.cli.main import main; main(['whoami']); "
        "heavy = [m for m in ('cleanroom.client.rooms', 'cleanroom.client.manager', 'httpx', "
        "'rich.console', 'cleanroom.attestation', 'dcap_qvl') if m in sys.modules]; "
        "print('HEAVY', heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_every_command_has_h_and_plain_help_with_flags_and_defaults(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path, command in every_command():
        code = main([*path.split(), "-h"])
        text = capsys.readouterr().out
        assert code == 0, path
        assert text.startswith(f"Usage: cleanroom {path}"), (path, text[:80])
        assert "<bool>" not in text and "╭" not in text, path
        for param in command.params:
            if getattr(param, "is_flag", False) or param.param_type_name != "option":
                continue
            default = param.default
            if param.show_default is False or default in (None, (), []) or param.hidden:
                continue
            shown = default.value if hasattr(default, "value") else default
            assert f"[default: {shown}" in " ".join(text.split()), (
                path,
                param.name,
            )


def test_every_help_text_is_wrapped_as_prose(capsys: pytest.CaptureFixture[str]) -> None:
    """A description is rewrapped paragraphs: no line keeps its docstring's indentation
    as runs of spaces in mid-sentence (a docstring with a paragraph appended after it,
    not dedented first, did: `receipt`, `verify-quote`, `gramine check`)."""
    for path, command in every_command():
        main([*path.split(), "-h"])
        text = capsys.readouterr().out
        description = []
        for line in text.splitlines()[1:]:
            if line.startswith(("Arguments:", "Options:", "Commands:")):
                break
            description.append(line)
        kept = [line for line in description if re.search(r"\S {3,}\S", line)]
        assert kept == [], (path, kept[:2], command.name)


def test_help_shows_what_rich_dropped(tmp_path: Path) -> None:
    text = " ".join(run("server", "compute", "-h", home=tmp_path).stdout.split())
    assert "[default: the system's CAs]" in text
    assert "--wait" in run("run", "-h", home=tmp_path).stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--profile", "bob", "whoami"],
        ["whoami", "--profile", "bob"],
        ["--output", "json", "whoami", "--profile", "bob"],
        ["whoami", "-o", "json", "--profile", "bob"],
    ],
)
def test_global_options_before_or_after_the_command(
    home: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    configure(capsys, "--profile", "bob")
    code = main(args)
    out = capsys.readouterr().out
    assert code == 0
    if "json" in args:
        assert json.loads(out)["profile"] == "bob"
    else:
        assert len(out.strip()) == 43


@pytest.mark.parametrize("server", ["manager", "compute"])
def test_a_server_takes_no_output_option_after_its_name(
    home: Path, capsys: pytest.CaptureFixture[str], server: str
) -> None:
    """A server prints no result: `server manager --output json` was taken, and it
    printed the same lines as text (h25). Refused as --profile is, before it starts."""
    # Arguments it cannot start with (no database driver "nope", no --credentials): were
    # the option taken, the server would stop there, not serve.
    unusable = ["--database-url", "nope://"] if server == "manager" else []
    assert main(["server", server, "--port", "0", *unusable, "--output", "json"]) == 2
    assert "No such option: --output" in capsys.readouterr().err
    assert "--output" not in run("server", server, "-h", home=home).stdout


def test_a_count_says_file_or_files() -> None:
    from cleanroom.cli.common import counted

    assert [counted(n, "file") for n in (0, 1, 2)] == ["0 files", "1 file", "2 files"]


def test_hints_carry_the_profile(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["whoami", "--profile", "carol"]) == 2
    assert "run cleanroom --profile carol configure" in capsys.readouterr().err
    configure(capsys, "--profile", "carol")
    main(["--profile", "carol", "configure", "--manager-url", "http://127.0.0.1:9"])
    assert "next: cleanroom --profile carol login" in capsys.readouterr().err
    os.environ["CLEANROOM_PROFILE"] = "carol"
    try:
        main(["configure", "--manager-url", "http://127.0.0.1:9"])
        assert "next: cleanroom --profile carol login" in capsys.readouterr().err
    finally:
        del os.environ["CLEANROOM_PROFILE"]


@pytest.mark.parametrize(
    "args",
    [
        ["run"],  # missing argument
        ["run", "x", "--nope"],  # unknown option
        ["nope"],  # unknown command
        ["-o", "yaml", "whoami"],  # bad choice
        ["data", "cp", "a", "b"],  # neither side remote
        ["deploy", "--function", "fs://…", "--name", "x", "--handler", "h.run", "--access", "a"],
    ],
)
def test_usage_errors_exit_2_in_one_line_plus_usage(tmp_path: Path, args: list[str]) -> None:
    configured = tmp_path / "home"
    result = run(*args, home=configured)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_deploy_says_what_a_function_id_is(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure(capsys)
    code = main(
        ["deploy", "--function", "fs://…", "--name", "x", "--handler", "h.run", "--access", "a"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        "error: --function: expected a function ID, fs:// and 43 characters of base64url "
        '(what cleanroom function upload prints), got "fs://\\u2026"\n'
    )


def test_a_download_into_a_directory_that_is_not_empty_is_a_usage_error(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    configure(capsys)
    target = tmp_path / "full"
    target.mkdir()
    (target / "x").write_text("x")
    assert main(["data", "cp", "room:output_1", str(target)]) == 2
    assert capsys.readouterr().err == (
        f"error: {target} is not empty: give a new or empty directory\n"
    )
    assert main(["data", "cp", str(tmp_path / "missing"), "room:input_1"]) == 2
    assert "no such file or directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        ["query", "room", "--name", "q", "--out"],
        ["query", "room", "--name", "q", "--save-receipt"],
        ["receipt", "room", "--save"],
        ["receipt", "room", "--run", "1", "--save"],
    ],
)
def test_a_directory_to_write_that_is_not_empty_is_a_usage_error_before_any_server(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    """As `data cp` says of its target: a query's --out or --save-receipt, or a
    receipt's --save, that is not a new or empty directory exited 1 (a refusal), the
    receipt's only after it was fetched; it is unusable input, and no server is asked
    (the profile's manager is not listening: asking it would say "cannot reach")."""
    configure(capsys)
    target = tmp_path / "full"
    target.mkdir()
    (target / "x").write_text("x")
    assert main([*command, str(target)]) == 2
    option = command[-1]
    assert capsys.readouterr().err == (
        f"error: {option} {target} is not empty: give a new or empty directory\n"
    )


def test_the_simulated_warning_takes_one_line_of_80_columns() -> None:
    from cleanroom.cli.account import SIMULATOR_WARNING

    assert "\n" not in SIMULATOR_WARNING and len(SIMULATOR_WARNING) <= 80
    assert "SIMULATED" in SIMULATOR_WARNING


RESULT_COMMANDS = {
    # every command that prints a result, and how --output json reaches it
    "configure", "login", "logout", "whoami", "rooms", "ls", "status", "function upload",
    "function download", "function test", "deploy", "inspect", "approve", "attest",
    "data cp", "run", "fate", "receipt", "delete", "verify-quote", "measure", "sim init",
    "sim export-root", "sim quote", "admin audit", "admin project create",
    "admin project list", "admin member add", "admin member role", "admin member remove",
    "admin member list", "admin client create", "admin client list", "admin client disable",
    "admin client enable", "admin client rotate", "admin server add", "admin server list",
    "admin server remove", "admin gc", "admin keys rotate", "admin keys list",
    "runtime install", "runtime list", "admin server credentials", "query", "budget",
    "gramine manifest", "gramine check", "gramine publish", "contacts add", "contacts list",
    "contacts remove", "function init",
}  # fmt: skip
NO_RESULT = {"demo", "server manager", "server compute"}  # narrate or serve


def test_output_json_reaches_every_command_that_prints_a_result() -> None:
    leaves = {path for path, command in every_command() if not getattr(command, "commands", None)}
    assert leaves == RESULT_COMMANDS | NO_RESULT
    for path, command in every_command():
        if path in RESULT_COMMANDS:
            flags = {flag for param in command.params for flag in param.opts}
            assert "--output" in flags, path


def test_typer_apps_are_plain_groups() -> None:
    """Sub-apps stay groups (``data cp``), and none adds shell-completion options."""
    for path, command in every_command():
        names = {param.name for param in command.params}
        assert not names & {"install_completion", "show_completion"}, path
    assert isinstance(cli_main.COMMANDS["data"].load(), typer.Typer)


def test_a_refusal_says_what_to_do_once() -> None:
    from cleanroom.cli.main import one_line
    from cleanroom.errors import CheckFailed

    expired = CheckFailed("collateral-expired", "now", "then", "too old", "fetch it again")
    assert one_line(expired) == (
        "collateral-expired: too old (expected now, got then) — fetch it again"
    )
    again = CheckFailed("work-id-approved", "a", "b", "run `x` first", "run `x` first")
    assert one_line(again).count("run `x` first") == 1


def test_configure_without_answers_names_the_option_to_give(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["configure"]) == 2
    assert "error: configure needs --manager-url (no answer on standard input)" in (
        capsys.readouterr().err
    )
    # A secret piped in is an answer: scripts may configure without a terminal.
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret\n"))
    code = main(["configure", "--manager-url", "http://127.0.0.1:9", "--client-id", "c"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "bare", "mebibytes"),
    [
        ("512M", "GiB", 512),
        ("512MiB", "MiB", 512),
        ("512mi", "GiB", 512),
        ("2G", "MiB", 2048),
        ("1.5g", "GiB", 1536),
        ("2 GiB", "MiB", 2048),
        ("1T", "GiB", 1 << 20),
        ("1", "GiB", 1024),  # deploy's number alone, as it always was
        ("0.5", "GiB", 512),
        ("512", "MiB", 512),  # function test's number alone, as it always was
        ("2048", "MiB", 2048),
    ],
)
def test_a_memory_size_is_read_in_its_unit(value: str, bare: str, mebibytes: int) -> None:
    from cleanroom.cli.common import memory_mib

    assert memory_mib(value, "--memory", bare=bare) == mebibytes


@pytest.mark.parametrize(
    ("value", "bare", "says"),
    [
        ("64", "GiB", "a number alone is GiB here"),  # 64 MiB, as function test reads it?
        ("1024", "GiB", "a number alone is GiB here"),
        ("63", "MiB", "a number alone is MiB here"),  # 63 GiB, as deploy reads it?
        ("2", "MiB", "for GiB (deploy's unit) write 2G"),
        ("512MB", "GiB", "MB and GB are ambiguous"),
        ("2gb", "MiB", "MB and GB are ambiguous"),
        ("2K", "MiB", "an unknown unit"),
        ("-1G", "MiB", "not a size"),
        ("1e3M", "MiB", "not a size"),
        ("", "MiB", "not a size"),
        ("0.3M", "MiB", "not a whole number of MiB"),
    ],
)
def test_a_memory_size_either_command_could_read_otherwise_is_refused(
    value: str, bare: str, says: str
) -> None:
    """No number alone is taken by both commands: deploy takes one only below 64 (GiB),
    function test only from 64 (MiB)."""
    from cleanroom.cli.common import CliError, memory_mib

    with pytest.raises(CliError) as caught:
        memory_mib(value, "--memory", bare=bare)
    assert caught.value.exit_code == 2
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90", 90),  # a number alone is seconds, as it always was
        ("90s", 90),
        ("5m", 300),
        ("5M", 300),
        ("1.5h", 5400),
        ("1h30m", 5400),
        ("1m30", 90),
        ("2d", 172800),
        ("0", 0),  # the spec's range is checked after, with the option's name
    ],
)
def test_a_duration_is_read_in_its_unit(value: str, seconds: int) -> None:
    from cleanroom.cli.common import duration_text, parse_duration

    assert parse_duration(value, "--timeout") == seconds
    assert parse_duration(duration_text(seconds), "--timeout") == seconds


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "not a duration"),
        ("m", "not a duration"),
        ("5x", "not a duration"),
        ("30ms", "not a duration"),
        ("5m1h", "not a duration"),  # largest unit first
        ("-5s", "not a duration"),
        ("1e3", "not a duration"),
        ("0.5s", "not a whole number of seconds (0.5 s)"),
        ("0.001m", "not a whole number of seconds"),
    ],
)
def test_a_duration_that_is_not_one_is_refused(value: str, says: str) -> None:
    from cleanroom.cli.common import CliError, parse_duration

    with pytest.raises(CliError) as caught:
        parse_duration(value, "--timeout")
    assert caught.value.exit_code == 2
    assert says in str(caught.value)


def test_a_default_duration_is_shown_in_its_largest_whole_unit() -> None:
    from cleanroom.cli.common import duration_text

    assert [duration_text(s) for s in (3600, 14400, 90, 300, 86400 * 7)] == [
        "1h",
        "4h",
        "90s",
        "5m",
        "7d",
    ]


@pytest.mark.parametrize("server", ["manager", "compute"])
def test_a_server_refuses_a_trusted_proxy_that_is_no_address_before_it_starts(
    home: Path, capsys: pytest.CaptureFixture[str], server: str
) -> None:
    """uvicorn would take `*` as every peer (each client then names the address the
    manager's rate limits count) and a name as a literal it never meets, silently."""
    assert main(["server", server, "--port", "0", "--trusted-proxy", "*"]) == 2
    assert "--trusted-proxy '*': expected an IP address" in capsys.readouterr().err


def test_a_manager_behind_a_trusted_proxy_logs_the_forwarded_client(tmp_path: Path) -> None:
    """`cleanroom server manager --trusted-proxy 127.0.0.1`, as a process: it says whose
    X-Forwarded-For it believes, and its access log names the client the proxy forwarded
    (h32)."""
    import httpx

    process = subprocess.Popen(
        [sys.executable, "-m", "cleanroom.cli.main", "server", "manager", "--port", "0",
         "--data-dir", str(tmp_path / "manager"), "--trusted-proxy", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "CLEANROOM_HOME": str(tmp_path)},
    )  # fmt: skip
    assert process.stderr is not None and process.stdout is not None
    try:
        lines: list[str] = []
        while not lines or "listening on" not in lines[-1]:
            line = process.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        url = lines[-1].split("listening on ")[1].strip()
        while "believed from" not in lines[-1]:
            lines.append(process.stderr.readline())
        assert lines[-1] == "X-Forwarded-For and X-Forwarded-Proto believed from: 127.0.0.1\n"
        httpx.get(f"{url}/v1/rooms", headers={"X-Forwarded-For": "203.0.113.9"})
        logged = process.stdout.readline()  # uvicorn's access log, on standard output
        assert '203.0.113.9:0 - "GET /v1/rooms HTTP/1.1" 401' in logged, logged
    finally:
        process.terminate()
        process.wait(30)
