"""The user's commands that need no server: configure, whoami, and input checks of deploy."""

from __future__ import annotations

import io
import json
import stat
import sys
import warnings
from pathlib import Path

import pytest
import typer._click.termui as termui

from cleanroom.cli.account import SIMULATOR_WARNING
from cleanroom.cli.main import main
from cleanroom.client.profile import Profile
from cleanroom.tee.measure import measure

MANAGER = "http://127.0.0.1:9"  # nothing listens: these commands must not need it


def configure(*extra: str, profile: str | None = None) -> list[str]:
    prefix = ["--profile", profile] if profile else []
    return [
        *prefix,
        "configure",
        "--manager-url", MANAGER,
        "--client-id", "alice-client",
        "--client-secret", "s3cret",
        *extra,
    ]  # fmt: skip


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_configure_then_whoami(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *configure())
    assert code == 0, err
    profile = Profile.load()
    assert f"user_id: {profile.user_id}" in out
    assert str(home / "profiles" / "default") in out
    assert measure("attester").mr_enclave.hex() in out
    assert "Intel SGX Root CA" in out
    assert "next: cleanroom login" in err
    assert stat.S_IMODE((profile.directory / "user-key.pem").stat().st_mode) == 0o600

    code, out, _ = run(capsys, "whoami")
    assert code == 0
    assert out == f"{profile.user_id}\n"

    code, out, _ = run(capsys, "whoami", "--json")
    assert code == 0
    document = json.loads(out)
    assert document["user_id"] == profile.user_id
    assert document["client_id"] == "alice-client"
    assert document["project"] is None
    assert document["simulated"] is False


def test_profiles_are_separate(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(capsys, *configure(profile="alice"))[0] == 0
    assert run(capsys, *configure(profile="bob"))[0] == 0
    alice = run(capsys, "--profile", "alice", "whoami")[1]
    bob = run(capsys, "--profile", "bob", "whoami")[1]
    assert alice != bob
    monkeypatch.setenv("CLEANROOM_PROFILE", "bob")
    assert run(capsys, "whoami")[1] == bob
    # --profile wins over the environment.
    assert run(capsys, "--profile", "alice", "whoami")[1] == alice


def test_reconfigure_keeps_the_key_unless_asked(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, *configure())[0] == 0
    first = run(capsys, "whoami")[1]
    # The secret and URL are kept from the existing profile when not given.
    assert run(capsys, "configure", "--project", "acme")[0] == 0
    assert run(capsys, "whoami")[1] == first
    assert Profile.load().client_secret == "s3cret"
    assert Profile.load().config.project == "acme"
    code, _, err = run(capsys, "configure", "--new-key")
    assert code == 0
    assert "run cleanroom login to register it" in err
    assert run(capsys, "whoami")[1] != first


def test_configure_prompts_for_what_is_missing(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True  # the secret is asked for hidden (a pipe's is read as a line)

    monkeypatch.setattr(sys, "stdin", Terminal(f"{MANAGER}\nprompted-client\n"))
    asked: list[str] = []

    def hidden(prompt: str) -> str:
        asked.append(prompt)
        return "hidden-secret"

    monkeypatch.setattr(termui, "hidden_prompt_func", hidden)
    code, _, err = run(capsys, "configure")
    assert code == 0, err
    assert len(asked) == 1  # the secret, and only it, was asked for hidden
    profile = Profile.load()
    assert profile.config.manager_url == MANAGER
    assert profile.config.client_id == "prompted-client"
    assert profile.client_secret == "hidden-secret"


def test_configure_policy_flags(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys,
        *configure(
            "--attester-mrenclave", "aa" * 32,
            "--attester-mrenclave", "bb" * 32,
            "--attester-mrsigner", "cc" * 32,
            "--worker-mrenclave", "dd" * 32,
            "--accept-tcb", "UpToDate",
            "--accept-advisory", "INTEL-SA-00615",
            "--isv-prod-id", "9",
            "--min-isv-svn", "4",
        ),
    )  # fmt: skip
    assert code == 0, err
    policy = Profile.load().attestation_policy()
    assert policy.mrenclaves == frozenset({bytes.fromhex("aa" * 32), bytes.fromhex("bb" * 32)})
    assert policy.mrsigner == bytes.fromhex("cc" * 32)
    assert policy.accepted_statuses == frozenset({"UpToDate"})
    assert policy.accepted_advisories == frozenset({"INTEL-SA-00615"})
    assert (policy.isv_prod_id, policy.min_isv_svn) == (9, 4)
    assert Profile.load().expected_worker_mrenclaves == frozenset({bytes.fromhex("dd" * 32)})


def test_trust_simulator_warns_loudly(
    home: Path, capsys: pytest.CaptureFixture[str], simulator_root: Path
) -> None:
    code, out, err = run(capsys, *configure("--trust-simulator", str(simulator_root)))
    assert code == 0, err
    (warning,) = [line for line in err.splitlines() if "SIMULATED" in line]
    assert warning == SIMULATOR_WARNING and len(warning) <= 80
    assert "never use real data" in warning
    assert Profile.load().simulated
    assert json.loads(run(capsys, "whoami", "--json")[1])["simulated"] is True
    assert "Intel SGX Root CA" not in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--attester-mrenclave", "abcd"], "Attester MRENCLAVE must be 32 bytes"),
        (["--worker-mrenclave", "zz" * 32], "Worker MRENCLAVE must be 32 bytes"),
        (["--accept-tcb", "Uptodate"], "unknown TCB status"),
        (["--isv-prod-id", "70000"], "isv_prod_id"),
    ],
)
def test_configure_refuses_bad_policy(
    home: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, _, err = run(capsys, *configure(*extra))
    assert code == 2
    assert err.startswith("error: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not (home / "profiles" / "default" / "config.json").exists()


def test_configure_refuses_a_missing_root_file(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, *configure("--trust-simulator", str(tmp_path / "nope.pem")))
    assert code == 2
    assert "simulator root not found" in err


def test_commands_need_a_configured_profile(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["whoami"], ["login"], ["inspect", "x"], ["approve", "x"]):
        code, _, err = run(capsys, "--profile", "ghost", *command)
        assert code == 2, command
        assert (
            err
            == "error: profile 'ghost' is not configured: run cleanroom --profile ghost configure\n"
        )


def test_bad_profile_name(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--profile", "../x", "whoami")
    assert code == 2
    assert "bad profile name" in err


def test_login_without_a_manager_fails_in_one_line(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, *configure())[0] == 0
    code, _, err = run(capsys, "login")
    assert code == 1
    assert err.startswith(f"error: cannot reach the manager at {MANAGER}")
    assert len(err.strip().splitlines()) == 1


# -------------------------------------------------------------------- deploy's input


def deploy(function: str, access: Path, *extra: str) -> list[str]:
    return [
        "deploy",
        "--function", function,
        "--name", "overlap",
        "--handler", "handler.run",
        "--access", str(access),
        *extra,
    ]  # fmt: skip


FUNCTION = "fs://" + "A" * 43


@pytest.fixture
def access_file(tmp_path: Path, alice: str) -> Path:
    path = tmp_path / "access.yaml"
    path.write_text(f"inputs: {{}}\noutputs: {{result: {alice}}}\n")
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--param", "novalue"], "is not KEY=VALUE"),
        (["--param", "a=1", "--param", "a=2"], "'a' is given twice"),
        (
            ["--memory", "0"],
            "error: --memory 0: Input should be greater than or equal to 64 MiB (the spec's "
            "resources.memory_mib)\n",
        ),
        # A number alone is GiB here and MiB in `function test --memory`: 512 was taken as
        # 512 GiB without a word (in range); every number alone either command could have
        # meant in the other's unit needs its unit (h25).
        (
            ["--memory", "512"],
            "error: --memory 512: a number alone is GiB here, but 512 GiB may have been meant "
            "as MiB (function test's unit): write 512G or 512M\n",
        ),
        (["--memory", "2048"], "error: --memory 2048: a number alone is GiB here"),
        (["--memory", "nan"], "error: --memory 'nan': not a size; write e.g. 512M, 2G"),
        (["--memory", "512MB"], "error: --memory '512MB': MB and GB are ambiguous"),
        (["--memory", "0.01"], "error: --memory '0.01': not a whole number of MiB (10.24 MiB)"),
        (["--memory", "2000G"], "error: --memory 2000G: Input should be less than or equal"),
        (
            ["--timeout", "0"],
            "error: --timeout 0: Input should be greater than or equal to 1 s (the "
            "spec's resources.timeout_s)\n",
        ),
        # A duration takes a unit, as --memory does (h32); its bound is in seconds.
        (
            ["--timeout", "8d"],
            "error: --timeout 8d: Input should be less than or equal to 604800 s",
        ),
        (["--timeout", "5x"], "error: --timeout '5x': not a duration; write e.g. 90 or 90s, 5m"),
        (["--cpu", "0.5s"], "error: --cpu '0.5s': not a whole number of seconds (0.5 s)"),
        (["--disk", "0"], "error: --disk 0: Input should be greater than or equal to 1 MiB"),
        (["--disk", "2GB"], "error: --disk '2GB': MB and GB are ambiguous"),
        (["--processes", "1"], "error: --processes: Input should be greater than or equal"),
        (["--cpu", "0"], "error: --cpu 0: Input should be greater than or equal to 1 s"),
        (["--runtime", "ruby"], "runtime"),
    ],
)
def test_deploy_refuses_bad_input_before_the_network(
    home: Path,
    capsys: pytest.CaptureFixture[str],
    access_file: Path,
    extra: list[str],
    message: str,
) -> None:
    assert run(capsys, *configure())[0] == 0
    code, _, err = run(capsys, *deploy(FUNCTION, access_file, *extra))
    assert code == 2, err
    assert message in err, err
    assert "cannot reach" not in err


@pytest.mark.parametrize("limits", [["--timeout", "90m", "--cpu", "2h"], ["--timeout", "7d"]])
def test_deploy_takes_durations_with_units(
    home: Path, capsys: pytest.CaptureFixture[str], access_file: Path, limits: list[str]
) -> None:
    """`--timeout 90m` was refused as not an integer (seconds only): now read, and the
    deploy goes on to the manager (none here: "cannot reach", exit 1)."""
    assert run(capsys, *configure())[0] == 0
    code, _, err = run(capsys, *deploy(FUNCTION, access_file, *limits))
    assert code == 1, err
    assert "cannot reach" in err, err


def test_deploy_refuses_a_bad_access_file(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(capsys, *configure())[0] == 0
    path = tmp_path / "access.yaml"
    path.write_text("inputs: {}\noutputs: {}\n")
    code, _, err = run(capsys, *deploy(FUNCTION, path))
    assert code == 2
    assert err == f"error: {path}: outputs: at least one output is needed\n"


def test_deploy_refuses_a_bad_function_id(
    home: Path, capsys: pytest.CaptureFixture[str], access_file: Path
) -> None:
    assert run(capsys, *configure())[0] == 0
    code, _, err = run(capsys, *deploy("fs://nope", access_file))
    assert code == 2
    assert "function" in err


def test_upload_refuses_a_directory_without_handler(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(capsys, *configure())[0] == 0
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "function", "upload", str(tmp_path / "empty"))
    assert code == 2
    assert "bundle-handler" in err


def test_download_refuses_a_non_empty_directory(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(capsys, *configure())[0] == 0
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    code, _, err = run(capsys, "function", "download", FUNCTION, str(tmp_path / "full"))
    assert code == 2
    assert "is not empty" in err


def test_a_secret_piped_to_configure_is_read_without_getpass_warnings(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """README's `configure` prompts for the secret; a script pipes it. getpass, with no
    terminal to hide it on, printed a Python GetPassWarning (file and line of getpass.py)
    and "Warning: Password input may be echoed": it is not, nothing echoes a pipe."""
    monkeypatch.setattr("sys.stdin", io.StringIO("piped-s3cret\nnot read\n"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a GetPassWarning fails the test
        code, _, err = run(
            capsys, "configure", "--manager-url", MANAGER, "--client-id", "alice-client"
        )
    assert code == 0, err
    assert "may be echoed" not in err
    assert "Client secret (read from standard input)" in err
    assert Profile.load().client_secret == "piped-s3cret"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(capsys, "--profile", "other", "configure", "--manager-url", MANAGER,
                       "--client-id", "bob-client")  # fmt: skip
    assert code == 2
    assert err.endswith("error: configure needs --client-secret (no answer on standard input)\n")
