"""The user's command line end to end, each user in their own CLEANROOM_HOME, against
real manager and compute server processes."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from cleanroom.insecure.demodata import write_overlap_inputs
from cleanroom.insecure.localstack import LocalStack
from tests.e2e.conftest import User
from tests.e2e.helpers import approve, deploy, write

REPO = Path(__file__).resolve().parents[2]
OVERLAP = REPO / "examples" / "functions" / "overlap"


class Cli:
    def __init__(self, home: Path) -> None:
        self.home = home

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "cleanroom.cli.main", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "CLEANROOM_HOME": str(self.home), "COLUMNS": "200"},
            timeout=120,
            check=False,
        )
        if ok:
            assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
        return result


def configured(stack: LocalStack, tmp_path: Path, name: str, project: str) -> tuple[Cli, str]:
    credentials = stack.add_client(project, name)
    root = tmp_path / f"{name}-root.pem"
    root.write_text(stack.simulated_root_pem())
    cli = Cli(tmp_path / f"home-{name}")
    cli(
        "configure",
        "--manager-url", stack.manager_url,
        "--client-id", credentials.client_id,
        "--client-secret", credentials.secret,
        "--trust-simulator", str(root),
    )  # fmt: skip
    cli("login")
    return cli, cli("whoami").stdout.strip()


def test_the_command_line_flow(stack: LocalStack, tmp_path: Path) -> None:
    alice, alice_id = configured(stack, tmp_path, "alice-cli", "acme")
    bob, bob_id = configured(stack, tmp_path, "bob-cli", "globex")
    assert alice_id != bob_id and len(alice_id) == 43

    function_id = alice("function", "upload", str(OVERLAP)).stdout.strip()
    assert function_id.startswith("fs://")
    access = tmp_path / "access.yaml"
    access.write_text(
        f"inputs: {{input_1: {alice_id}, input_2: {bob_id}}}\n"
        f"outputs: {{output_1: {alice_id}, output_2: {bob_id}}}\n"
    )
    alice(
        "deploy", "--function", function_id, "--name", "cli-flow", "--handler", "handler.run",
        "--access", str(access), "--memory", "1", "--timeout", "120", "--param", "k=5",
    )  # fmt: skip

    refused = bob("data", "cp", str(tmp_path), "cli-flow:input_2", ok=False)
    assert refused.returncode == 1
    assert "cleanroom approve cli-flow" in refused.stderr
    assert "Traceback" not in refused.stderr

    inspected = json.loads(bob("inspect", "cli-flow", "--json").stdout)
    assert inspected["spec"]["parameters"] == {"k": 5}
    bob("approve", "cli-flow", "--yes")
    attested = json.loads(bob("attest", "cli-flow", "--json").stdout)
    assert {check["check"] for check in attested["checks"]} >= {"work-id", "nonce", "mrenclave"}

    truth = write_overlap_inputs(tmp_path / "a", tmp_path / "b", 500, seed=3)
    alice("data", "cp", str(tmp_path / "a"), "cli-flow:input_1")
    bob("data", "cp", str(tmp_path / "b"), "cli-flow:input_2")
    denied = bob("run", "cli-flow", ok=False)
    assert denied.returncode == 1 and "runner" in denied.stderr
    assert "the run ended succeeded (exit status 0)" in alice("run", "cli-flow", "--wait").stdout
    # Run again: it said only that asking again was safe, which would fail the same way;
    # now why, from the Worker's signed status, and what to do (h32).
    again = alice("run", "cli-flow", ok=False)
    assert again.returncode == 1, again.stderr
    assert (
        "it signs that cli-flow has had its run (the run ended succeeded (exit status 0)): a "
        "function room runs once (expected a run started"
    ) in again.stderr, again.stderr
    assert "asking again is safe" not in again.stderr
    assert "data cp cli-flow:OUTPUT DIR" in again.stderr
    alice("data", "cp", "cli-flow:output_1", str(tmp_path / "alice-out"))
    bob("data", "cp", "cli-flow:output_2", str(tmp_path / "bob-out"))
    for directory in ("alice-out", "bob-out"):
        result = json.loads((tmp_path / directory / "result.json").read_text())
        assert result["overlap"] == truth.overlap
    assert "verified" in bob("receipt", "cli-flow").stdout
    # A command of a SQL room, or a run number, given a function room is unusable input
    # (exit 2, as the README defines it), not a refusal (it exited 1); nothing is written.
    for command, says in (
        (("query", "cli-flow", "--name", "overlap"), "cli-flow runs a function, not SQL"),
        (("budget", "cli-flow"), "cli-flow runs a function: it has no privacy budget"),
        (("receipt", "cli-flow", "--run", "1"), "cli-flow runs a function, which has one run"),
        (
            ("data", "cp", "cli-flow:output_1", str(tmp_path / "nowhere"), "--run", "1"),
            "cli-flow runs a function, which has one run: no run number (--run) to give",
        ),
        (("fate", "cli-flow", "--", "-x"), "'-x' is not a session id"),
    ):
        misused = alice(*command, ok=False)
        assert misused.returncode == 2 and says in misused.stderr, (command, misused.stderr)
    assert not (tmp_path / "nowhere").exists()
    # The command `receipt --save` prints is one an auditor can run as printed: on a
    # simulated platform it names the root (h3: it said `receipt verify DIR` alone, which
    # the auditor's Intel root refuses, and its hint named --trust-root, no option there).
    saved = bob("receipt", "cli-flow", "--save", str(tmp_path / "audit"))
    printed = saved.stderr.split("(check it with: ", 1)[1].rsplit(")", 1)[0]
    assert "--trust-root" in printed, saved.stderr
    auditor = Cli(tmp_path / "home-auditor")
    audited = auditor(*shlex.split(printed)[1:])
    assert "receipt-signature" in audited.stdout and "succeeded" in audited.stdout
    alice("delete", "cli-flow", "--yes")
    gone = alice("attest", "cli-flow", ok=False)
    assert gone.returncode == 1


FAILS = """
import pathlib, sys

def run():
    pathlib.Path("outputs/output_1/partial.txt").write_text("half done")
    print("giving up")
    sys.exit(3)
"""


def as_user(user: User, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as ``user``: its home, its profile (given after the command, as people do)."""
    return subprocess.run(
        [sys.executable, "-m", "cleanroom.cli.main", *args, "--profile", user.name],
        capture_output=True,
        text=True,
        env={**os.environ, "CLEANROOM_HOME": str(user.home), "COLUMNS": "80"},
        timeout=120,
        check=False,
    )


def test_a_failed_run_is_never_reported_as_success(
    stack: LocalStack, alice: User, bob: User, tmp_path: Path
) -> None:
    room = "cli-fails"
    deploy(alice, bob, tmp_path, room, handler=FAILS)
    approve(bob, room)

    # Seeing the room: the manager's word and the Worker's signed one, each marked.
    listed = as_user(bob, "ls")
    assert listed.returncode == 0 and room in listed.stdout
    before = as_user(alice, "status", room)
    assert before.returncode == 0, before.stderr
    assert "  state:          collecting  [signed by the Worker]" in before.stdout
    assert "input input_1: missing" in before.stdout
    assert "[the manager says: not verified]" in before.stdout
    assert "runners:" in before.stdout and "(you)" in before.stdout

    # One file is an input; the same again is acknowledged as already there.
    single = tmp_path / "emails.csv"
    single.write_text("a@x\nb@x\n")
    sent = as_user(alice, "data", "cp", str(single), f"{room}:input_1")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith(f"uploaded 1 file (8 bytes) to {room}:input_1;"), sent.stdout
    again = as_user(alice, "data", "cp", str(single), f"{room}:input_1", "-o", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["already"] is True
    other = tmp_path / "other.csv"
    other.write_text("c@x\n")
    changed = as_user(alice, "data", "cp", str(other), f"{room}:input_1")
    assert changed.returncode == 1 and "input-complete" in changed.stderr
    unknown = as_user(alice, "data", "cp", str(single), f"{room}:input_9")
    assert unknown.returncode == 2
    assert f"no input input_9 in clean room {room} (it has input_1, input_2)" in unknown.stderr
    early = as_user(alice, "run", room)
    assert early.returncode == 1 and "(missing: input_2)" in early.stderr
    assert "; it signs that input_2 has not arrived (expected a run started" in early.stderr
    assert " — each input's owner uploads it first (`" in early.stderr, early.stderr
    assert f"data cp DIR {room}:input_2`), then `" in early.stderr, early.stderr
    bob_data = tmp_path / "bob"
    bob_data.mkdir()
    (bob_data / "emails.csv").write_text("b@x\n")
    assert as_user(bob, "data", "cp", str(bob_data), f"{room}:input_2").returncode == 0
    held = json.loads(as_user(bob, "status", room, "--output", "json").stdout)
    assert held["worker"]["verified"] is True
    assert set(held["worker"]["inputs"]) == {"input_1", "input_2"}

    # The run fails: every command that reports on it exits 1, in one line.
    ran = as_user(alice, "run", room, "--wait")
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert ran.stderr.splitlines()[-1] == (
        f"error: the run of {room}: the run ended failed (exit status 3)"
    )
    # Where to read why (logs: output_1, Alice's): it said only that the run failed (h22).
    note = ran.stderr.splitlines()[-2]
    assert note.startswith("note: the function's output went to output_1, yours: "), note
    assert note.endswith(f"data cp {room}:output_1 DIR (function.log)"), note
    assert "redeploy" not in ran.stderr
    receipt = as_user(bob, "receipt", room)
    assert receipt.returncode == 1
    assert "exit status 3" in receipt.stdout
    assert (
        receipt.stderr.splitlines()[-1] == f"error: the run of {room} ended failed (exit status 3)"
    )
    target = tmp_path / "partial"
    copied = as_user(alice, "data", "cp", f"{room}:output_1", str(target))
    assert copied.returncode == 1
    warning = [line for line in copied.stderr.splitlines() if line.startswith("warning:")]
    assert warning == [
        f"warning: the run of {room} ended failed (exit status 3): output_1 holds what it left"
    ]
    assert (target / "partial.txt").read_text() == "half done"
    assert "giving up" in (target / "function.log").read_text()
    after = as_user(bob, "status", room)
    assert "run:            the run ended failed (exit status 3)  [signed by the Worker]" in (
        after.stdout
    )

    # The attest table fits 80 columns; the JSON has every value whole.
    table = as_user(bob, "attest", room)
    assert table.returncode == 0, table.stderr
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    whole = json.loads(as_user(bob, "attest", room, "--output", "json").stdout)
    assert any(len(check["actual"]) == 64 for check in whole["checks"])


def test_the_compute_server_says_where_it_listens_and_logs_requests(stack: LocalStack) -> None:
    log = (stack.directory / "compute.log").read_text()
    assert f"cleanroom compute server listening on {stack.compute_url}" in log
    platform = stack.compute_dir / "simulated-platform"
    assert f"simulated SGX platform: {platform} (INSECURE)" in log
    assert f"cleanroom sim export-root --dir {platform} --out sim-root.pem" in log
    assert '"GET /v1/health HTTP/1.1" 200' in log  # an access log, as the manager's
    manager_log = (stack.directory / "manager.log").read_text()
    assert f"cleanroom management server listening on {stack.manager_url}" in manager_log


def test_a_client_disabled_and_enabled_again_is_logged_in_again_by_its_next_command(
    stack: LocalStack, tmp_path: Path
) -> None:
    """The operator disables a client and enables it again: the tokens its profile kept
    stay refused (docs/api.md, "Revocation"). The next command is refused 401
    token-revoked, drops every kept token, logs in again and is sent once more (h3's
    walk through the docs: every command failed until the user ran `cleanroom login`);
    `login` still replaces every kept token, the room's too."""
    alice, alice_id = configured(stack, tmp_path, "alice-relogin", "acme")
    client_id = json.loads(alice("whoami", "--json").stdout)["client_id"]
    function_id = alice("function", "upload", str(OVERLAP)).stdout.strip()
    access = tmp_path / "access.yaml"
    access.write_text(f"inputs: {{input_1: {alice_id}}}\noutputs: {{output_1: {alice_id}}}\n")
    alice(
        "deploy", "--function", function_id, "--name", "relogin", "--handler", "handler.run",
        "--access", str(access), "--memory", "1", "--timeout", "120",
    )  # fmt: skip
    alice("attest", "relogin")  # the profile now keeps a token for the room
    tokens = alice.home / "profiles" / "default" / "token.json"
    kept = json.loads(tokens.read_text())["tokens"]
    assert len(kept) == 2

    operator = Cli(tmp_path / "home-operator")
    for action in ("disable", "enable"):
        operator("admin", "--data-dir", str(stack.manager_dir), "client", action, client_id)
    attested = alice("attest", "relogin")  # the manager refuses the kept token at once
    assert attested.returncode == 0, attested.stderr
    renewed = json.loads(tokens.read_text())["tokens"]
    assert renewed["manager"]["access_token"] != kept["manager"]["access_token"]
    assert all(
        renewed[key]["access_token"] != token["access_token"]
        for key, token in kept.items()
        if key in renewed
    )

    alice("login")
    assert list(json.loads(tokens.read_text())["tokens"]) == ["manager"]
    alice("attest", "relogin")  # a new room token
    alice("delete", "relogin", "--yes")


WRITES_ONE = """
import pathlib

def run():
    pathlib.Path("outputs/output_1/count.txt").write_text("1")
"""


def test_an_empty_output_is_said_to_be_empty(
    stack: LocalStack, alice: User, bob: User, tmp_path: Path
) -> None:
    """A function that writes nothing to one output (a seed-product script that knows
    only output_1): its recipient's download said "downloaded 0 files" and nothing
    else, as if something had been lost on the way (h25)."""
    room = "cli-empty"
    deploy(alice, bob, tmp_path, room, handler=WRITES_ONE)
    approve(bob, room)
    alice.client.upload(room, "input_1", write(tmp_path / "a", "a@x\n"))
    bob.client.upload(room, "input_2", write(tmp_path / "b", "b@x\n"))
    assert alice.client.run(room, wait=True).succeeded
    empty = as_user(bob, "data", "cp", f"{room}:output_2", str(tmp_path / "empty"))
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.startswith("downloaded 0 files to "), empty.stdout
    assert empty.stderr.splitlines()[-1] == (
        "note: output_2 is empty: the run wrote nothing to /work/outputs/output_2/"
    ), empty.stderr
    full = as_user(alice, "data", "cp", f"{room}:output_1", str(tmp_path / "full"))
    assert full.returncode == 0 and full.stdout.startswith("downloaded 2 files to ")
    assert "note:" not in full.stderr, full.stderr
