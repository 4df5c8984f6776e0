"""The command line, run as a user would: real processes, exit codes, one-line errors."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cleanroom.cli.main import main
from cleanroom.tee.measure import image_files, measure

RECORDED_TIME = "1752919277"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "cleanroom.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


@pytest.fixture
def sim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "sim"
    monkeypatch.setenv("CLEANROOM_SIM_DIR", str(directory))
    assert main(["sim", "init"]) == 0
    return directory


@pytest.fixture
def minted(sim: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    quote, collateral, root = tmp_path / "q.bin", tmp_path / "c.json", tmp_path / "root.pem"
    assert main(["sim", "export-root", "--out", str(root)]) == 0
    code = main(
        [
            "sim", "quote", "--report-data", "48656c6c6f",
            "--out", str(quote), "--collateral-out", str(collateral),
        ]
    )  # fmt: skip
    assert code == 0
    return quote, collateral, root


def test_help_names_exit_codes() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "Exit codes" in result.stdout
    for command in ("verify-quote", "sim", "measure", "demo"):
        assert command in result.stdout


def test_minted_quote_verifies_with_json(
    minted: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    quote, collateral, root = minted
    attester = measure("attester")
    capsys.readouterr()
    code = main(
        [
            "verify-quote", str(quote), "--collateral", str(collateral),
            "--trust-root", str(root), "--expect-mrenclave", attester.mr_enclave.hex(),
            "--expect-mrsigner", attester.mr_signer.hex(),
            "--expect-report-data", "48656c6c6f", "--json",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["status"] == "UpToDate"
    assert result["mrenclave"] == attester.mr_enclave.hex()
    assert result["report_data"] == ("48656c6c6f" + "00" * 59)
    assert result["debug"] is False
    assert {"advisory_ids", "mrsigner", "isv_prod_id", "isv_svn"} <= result.keys()
    assert "NOT Intel's production root" in captured.err


def test_wrong_mrenclave_is_exit_1_with_error_json(
    minted: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    quote, collateral, root = minted
    capsys.readouterr()
    code = main(
        [
            "verify-quote", str(quote), "--collateral", str(collateral),
            "--trust-root", str(root), "--expect-mrenclave", "00" * 32, "--json",
        ]
    )  # fmt: skip
    assert code == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["check"] == "mrenclave"
    assert "00" * 32 in json.dumps(error["expected"])
    assert error["actual"] == measure("attester").mr_enclave.hex()
    assert error["message"]


def test_rejection_is_one_line_without_traceback(minted: tuple[Path, Path, Path]) -> None:
    quote, collateral, _root = minted
    result = run("verify-quote", str(quote), "--collateral", str(collateral))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: rejected: quote-verification")


def test_debug_quote_is_rejected(sim: Path, tmp_path: Path) -> None:
    quote, collateral, root = tmp_path / "q", tmp_path / "c", tmp_path / "r"
    main(["sim", "export-root", "--out", str(root)])
    main(
        [
            "sim", "quote", "--report-data", "00", "--debug",
            "--out", str(quote), "--collateral-out", str(collateral),
        ]
    )  # fmt: skip
    code = main(
        ["verify-quote", str(quote), "--collateral", str(collateral), "--trust-root", str(root)]
    )
    assert code == 1


@pytest.mark.parametrize(
    "problem",
    ["missing-quote", "junk-quote", "junk-collateral", "bad-hex", "short-mrenclave"],
)
def test_unusable_input_is_exit_2(
    minted: tuple[Path, Path, Path],
    tmp_path: Path,
    problem: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    quote, collateral, root = minted
    junk = tmp_path / "junk"
    junk.write_bytes(b"this is not evidence")
    args = ["verify-quote", str(quote), "--collateral", str(collateral), "--trust-root", str(root)]
    if problem == "missing-quote":
        args[1] = str(tmp_path / "absent")
    elif problem == "junk-quote":
        args[1] = str(junk)
    elif problem == "junk-collateral":
        args[3] = str(junk)
    elif problem == "bad-hex":
        args += ["--expect-mrsigner", "zz"]
    else:
        args += ["--expect-mrenclave", "abcd"]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_recorded_real_quote_via_cli(vectors_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recorded = vectors_dir / "sgx-dcap-qvl"
    base = [
        "verify-quote", str(recorded / "sgx_quote"),
        "--collateral", str(recorded / "sgx_quote_collateral.json"), "--at", RECORDED_TIME,
    ]  # fmt: skip
    assert main(base) == 1  # the default policy does not accept ConfigurationAndSWHardeningNeeded
    capsys.readouterr()
    code = main([*base, "--accept-status", "ConfigurationAndSWHardeningNeeded", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "ConfigurationAndSWHardeningNeeded"
    assert result["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    assert result["mrenclave"] == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    assert result["report_data"] == b"Hello, world!".hex() + "00" * 51
    restricted = [*base, "--accept-status", "ConfigurationAndSWHardeningNeeded"]
    assert main([*restricted, "--accept-advisory", "INTEL-SA-00289"]) == 1
    both = ["--accept-advisory", "INTEL-SA-00289", "--accept-advisory", "INTEL-SA-00615"]
    assert main([*restricted, *both]) == 0


def test_measure_prints_reproducible_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["measure", "worker", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["measure", "worker", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == first
    assert first["mrenclave"] == measure("worker").mr_enclave.hex()
    assert main(["measure", "nonsense"]) == 2


def test_measure_lists_every_file_for_a_third_party_to_diff(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["measure", "worker", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    files = image_files("worker").files
    assert len(lines) == len(files)
    for line, entry in zip(lines, files, strict=True):
        digest, size, group, path = line.split(maxsplit=3)
        assert (digest, int(size), group, path) == (
            entry.sha256,
            entry.size,
            entry.group,
            entry.path,
        )
    assert main(["measure", "worker", "--list", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["mrenclave"] == measure("worker").mr_enclave.hex()
    assert document["files"] == [entry.to_json() for entry in files]
    assert main(["measure"]) == 2  # no image, no --write


def test_measure_prints_each_group(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["measure", "attester"]) == 0
    out = capsys.readouterr().out
    assert measure("attester").mr_enclave.hex() in out
    for group in image_files("attester").groups():
        assert group.sha256 in out


def test_sim_commands_need_a_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEANROOM_SIM_DIR", str(tmp_path / "none"))
    assert main(["sim", "export-root"]) == 2


def test_demo_runs_the_whole_flow() -> None:
    result = run("demo", "--rows", "2000")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "done in" in result.stdout
    assert result.stdout.count("✓ refused") == 8
    # The client refuses what the approved spec does not allow before anything is sent;
    # the Worker refuses the same from a client that skips that check.
    assert result.stdout.count("nothing was sent") == 3
    assert result.stdout.count("past the client's own check, by the Worker") == 3
    # The demo checks each overlap against the generated truth itself (and stops if not).
    assert result.stdout.count("customers, as generated") == 2
    assert len(re.findall(r"receipt succeeded", result.stdout)) == 2
    assert "the run ended succeeded (exit status 0), says the Worker's status" in result.stdout
    assert "confined" not in result.stdout  # claimed only where something checked it


def test_a_compute_server_needs_its_registered_credentials(tmp_path: Path) -> None:
    data = ["server", "compute", "--data-dir", str(tmp_path / "compute"), "--port", "9"]
    missing = run(*data)
    assert missing.returncode == 2
    assert "--credentials FILE is required" in missing.stderr
    path = tmp_path / "compute.json"
    path.write_text(
        json.dumps(
            {
                "type": "cleanroom/compute-credentials/v1",
                "url": "http://127.0.0.1:9",
                "client_id": "cs-" + "0" * 32,
                "client_secret": "secret",
            }
        )
    )
    path.chmod(0o644)
    readable = run(*data, "--credentials", str(path))
    assert readable.returncode == 2 and "accessible by others" in readable.stderr
    path.chmod(0o600)
    elsewhere = run(*data, "--credentials", str(path), "--public-url", "http://127.0.0.1:10")
    assert elsewhere.returncode == 2
    assert "is not the URL this server was registered at" in elsewhere.stderr
    # Its own secret would cross a network in the clear to the manager (manager-url).
    clear = run(*data, "--credentials", str(path), "--manager-url", "http://10.9.8.7:8080")
    assert clear.returncode == 2 and "manager-url" in clear.stderr, clear.stderr
    path.write_text("{}")
    assert run(*data, "--credentials", str(path)).returncode == 2


def test_a_compute_server_started_off_its_registered_url_says_so(tmp_path: Path) -> None:
    """Registered at one port and started on another (an operator's slip): the
    Controller started as if all were well, and the manager's health checks and every
    client failed to connect to the registered URL. It now says so as it starts, naming
    both URLs and what to do."""
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    registered, listening = ports
    path = tmp_path / "compute.json"
    path.write_text(
        json.dumps(
            {
                "type": "cleanroom/compute-credentials/v1",
                "url": f"http://127.0.0.1:{registered}",
                "client_id": "cs-" + "0" * 32,
                "client_secret": "secret",
            }
        )
    )
    path.chmod(0o600)
    process = subprocess.Popen(
        [sys.executable, "-m", "cleanroom.cli.main", "server", "compute", "--data-dir",
         str(tmp_path / "compute"), "--port", str(listening), "--credentials", str(path),
         "--manager-url", f"http://127.0.0.1:{registered}"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert process.stderr is not None
        for line in process.stderr:  # until it has said where it listens, then to its end
            lines.append(line)
            if line.startswith("simulated SGX platform"):  # its last note: stop it
                process.terminate()
    finally:
        process.terminate()
        process.wait(30)
    warnings = [line for line in lines if line.startswith("WARNING: this compute server")]
    assert warnings == [
        (
            f"WARNING: this compute server listens on http://127.0.0.1:{listening}, and its public "
            f"URL http://127.0.0.1:{registered} does not reach it (port {registered}, not "
            f"{listening}): clients and the manager go to that URL, and fail to connect unless "
            f"something there forwards here. Start it with --host and --port of "
            f"http://127.0.0.1:{registered}, or register the URL it is reached at (cleanroom admin "
            "server add URL, on the manager's machine).\n"
        )
    ], "".join(lines)


@pytest.mark.parametrize("with_home", [True, False])
def test_readmes_export_root_finds_the_compute_servers_platform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_home: bool
) -> None:
    """`cleanroom sim export-root --compute` reads <home>/compute/simulated-platform, where
    `cleanroom server compute` with its default --data-dir keeps it, under the same
    CLEANROOM_HOME (or, without one, the platform's data directory)."""
    home = tmp_path / "home"
    if with_home:
        monkeypatch.setenv("CLEANROOM_HOME", str(home))
    else:
        monkeypatch.delenv("CLEANROOM_HOME", raising=False)
        monkeypatch.setattr("platformdirs.user_data_dir", lambda *_a, **_k: str(home))
    monkeypatch.delenv("CLEANROOM_SIM_DIR", raising=False)
    out = tmp_path / "sim-root.pem"
    assert main(["sim", "export-root", "--compute", "--out", str(out)]) == 2  # none yet
    assert main(["sim", "init", "--dir", str(home / "compute" / "simulated-platform")]) == 0
    assert main(["sim", "export-root", "--compute", "--out", str(out)]) == 0
    assert out.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert main(["sim", "export-root", "--compute", "--dir", str(tmp_path)]) == 2


def test_a_run_number_is_for_downloads_from_a_sql_room_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`data cp --run N` downloads a SQL room's query run; on an upload, or below 1, it
    is unusable input (exit 2) before any profile or server is asked."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.csv").write_text("a\n")
    capsys.readouterr()
    assert main(["data", "cp", str(tmp_path / "mine"), "room:input_1", "--run", "2"]) == 2
    assert "--run names a SQL room's query run" in capsys.readouterr().err
    assert main(["data", "cp", "room:output_1", str(tmp_path / "out"), "--run", "0"]) == 2
    assert not (tmp_path / "out").exists()


def test_receipt_verify_takes_the_root_as_the_quote_check_names_it(
    minted: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A simulated quote checked against Intel's root is refused with the hint "passed
    explicitly (… --trust-root …)": `receipt verify` takes that option as verify-quote
    does (h3: it took only --simulated-root, and the hint's option was "No such option").
    The root is read, then the saved receipt, which is missing here (exit 2)."""
    _quote, _collateral, root = minted
    capsys.readouterr()
    missing = tmp_path / "saved"
    for option in ("--trust-root", "--simulated-root"):
        assert main(["receipt", "verify", str(missing), option, str(root)]) == 2
        error = capsys.readouterr().err
        assert "No such option" not in error and "saved-receipt-format" in error, error


def test_admin_server_add_prints_the_compute_command_that_takes_its_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`admin server add --credentials-out F` says how to start the compute server with F,
    and that command needs no --public-url: it takes the URL from F (h3: the help said the
    Controller must run with --public-url URL, and the printed command named FILE, not F)."""
    out = tmp_path / "compute.json"
    admin = ["admin", "--data-dir", str(tmp_path / "manager")]
    capsys.readouterr()
    assert main([*admin, "server", "add", "http://127.0.0.1:9", "--credentials-out", str(out)]) == 0
    printed = capsys.readouterr().err.split("start the compute server with them: ", 1)[1]
    words = shlex.split(printed.split(",", 1)[0])
    assert words[:3] == ["cleanroom", "server", "compute"] and "--public-url" not in words
    assert words[words.index("--credentials") + 1] == str(out)
    # F alone is accepted (past it, the cleartext --manager-url is what stops the server).
    started = run(*words[1:5], "--manager-url", "http://10.9.8.7:8080", "--port", "9")
    assert started.returncode == 2 and "--manager-url:" in started.stderr, started.stderr


def test_python_m_cleanroom_is_the_command() -> None:
    """`python -m cleanroom` runs the command line, as the `cleanroom` script does (h3: it
    was "No module named cleanroom.__main__")."""
    result = subprocess.run(
        [sys.executable, "-m", "cleanroom", "whoami", "-h"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: cleanroom whoami")


def test_no_option_of_a_command_shares_a_global_options_name() -> None:
    """A command's option whose parameter is named as a global option's (profile,
    output, debug) gets that option's value and callback too: `function test
    --output-id ID` was refused as an --output that is not text or json (h3)."""
    from typer import Context

    from cleanroom.cli.main import _command

    def commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
        context = Context(command, info_name=" ".join(path))
        if not hasattr(command, "list_commands"):
            yield " ".join(path), command
            return
        for name in command.list_commands(context):
            yield from commands(command.get_command(context, name), (*path, name))

    for path, command in commands(_command()):
        names = [param.name for param in command.params]
        assert len(names) == len(set(names)), f"cleanroom {path}: {sorted(names)}"


def test_deploy_without_a_function_says_which_option_to_give(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deploy missing --function or --handler names the missing option and what it
    takes, before any server is asked (h3: it printed "--function and --handler (or
    --sql and --schema for a SQL room)", which names no fault and no remedy)."""
    monkeypatch.setenv("CLEANROOM_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret\n"))
    assert main(["configure", "--manager-url", "http://127.0.0.1:9", "--client-id", "c"]) == 0
    user = "A" * 43
    access = tmp_path / "access.yaml"
    access.write_text(f"inputs: {{input_1: {user}}}\noutputs: {{output_1: {user}}}\n")
    capsys.readouterr()
    deploy = ["deploy", "--name", "room", "--access", str(access)]
    assert main([*deploy, "--function", "fs://" + "A" * 43]) == 2
    error = capsys.readouterr().err
    assert "deploy needs --handler:" in error and "module.function" in error, error
    assert main(deploy) == 2
    assert "deploy needs --function and --handler:" in capsys.readouterr().err


def test_deploy_refuses_a_room_name_it_cannot_use_naming_the_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`deploy --name` that no spec may hold is unusable input naming the rule, before
    the profile or any server (h3: it was "work-spec: String should match pattern
    '^[a-z0-9][a-z0-9-]{0,62}$' (… got name)", after the access file was read)."""
    monkeypatch.setenv("CLEANROOM_HOME", str(tmp_path / "home"))
    capsys.readouterr()
    for name in ("X_Y", "-room", "a" * 64, "room\n"):
        assert main(["deploy", "--name", name, "--access", str(tmp_path / "none.yaml")]) == 2
        error = capsys.readouterr().err
        assert "a clean room's name is 1-63 of a-z, 0-9 and '-'" in error, error


@pytest.mark.parametrize(
    ("command", "profile"),
    [
        (["admin", "client", "list"], False),
        (["server", "manager"], False),
        (["rooms"], True),
        (["function", "upload"], True),
    ],
)
def test_the_profile_option_is_offered_only_where_a_profile_is_used(
    command: list[str], profile: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """`server` and `admin` use no profile: their help does not offer --profile ("Your
    profile (user key, trust policy, approvals)"), as every other command's does (h3)."""
    assert main([*command, "--help"]) == 0
    helped = capsys.readouterr().out
    assert ("--profile" in helped) is profile
    # A server prints no result: no --output either (see test_cli_conventions.py).
    assert ("--output" in helped) is (command[0] != "server") and "--debug" in helped


def test_the_managers_waits_on_controllers_are_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--controller-timeout, --controller-call-wait and --abandoned-delete-timeout reach the
    manager's settings, as --controller-calls does (they were settings without an option;
    --controller-timeout until h24)."""
    import cleanroom.manager

    given: list[Any] = []

    def started(settings: Any) -> None:
        given.append(settings)
        raise OSError("not started by this test")

    monkeypatch.setattr(cleanroom.manager, "create_app", started)
    options = ["--controller-call-wait", "12.5", "--abandoned-delete-timeout", "3"]
    options += ["--controller-timeout", "20"]
    assert main(["server", "manager", *options, "--data-dir", str(tmp_path / "m")]) == 2
    [settings] = given
    waits = settings.controller_call_wait, settings.abandoned_delete_timeout
    assert (*waits, settings.controller_timeout) == (12.5, 3.0, 20.0)


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--controller-call-wait", "50"], "= 125 s: expected under the client's 120 s"),
        (["--abandoned-delete-timeout", "59.9"], "expected under the client's 120 s"),
        (["--abandoned-delete-timeout", "inf"], "expected a finite number of seconds above 0"),
        (["--controller-call-wait", "0"], "greater than or equal to 0.1"),
        (["--abandoned-delete-timeout", "-1"], "greater than or equal to 0.1"),
        (["--controller-call-wait", "nan"], "greater than or equal to 0.1"),
        (["--controller-timeout", "100"], "controller_timeout (100 s)"),
        (["--controller-timeout", "inf"], "expected a finite number of seconds above 0"),
        (["--controller-timeout", "0"], "greater than or equal to 0.1"),
    ],
)
def test_the_managers_waits_on_controllers_are_refused_out_of_bounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], said: str
) -> None:
    """Each wait is positive and finite, and a deploy's answer, which may wait for its
    turn, the Controller and the delete of an unanswered deploy, comes within the
    client's deadline: past it, the client gave up while the manager still deployed
    (h15). Refused before anything starts, naming the option."""
    data_dir = tmp_path / "m"
    assert main(["server", "manager", *options, "--data-dir", str(data_dir)]) == 2
    error = capsys.readouterr().err
    assert said in error, error
    assert options[0].lstrip("-").split("-")[0] in error.replace("_", "-"), error
    assert not data_dir.exists()
