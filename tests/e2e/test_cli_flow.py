"""The user's command line end to end, each user in their own CLEANROOM_HOME, against
real manager and compute server processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cleanroom.demodata import write_overlap_inputs
from cleanroom.localstack import LocalStack

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
    assert "done" in alice("run", "cli-flow", "--wait").stdout
    alice("data", "cp", "cli-flow:output_1", str(tmp_path / "alice-out"))
    bob("data", "cp", "cli-flow:output_2", str(tmp_path / "bob-out"))
    for directory in ("alice-out", "bob-out"):
        result = json.loads((tmp_path / directory / "result.json").read_text())
        assert result["overlap"] == truth.overlap
    assert "verified" in bob("receipt", "cli-flow").stdout
    alice("delete", "cli-flow", "--yes")
    gone = alice("attest", "cli-flow", ok=False)
    assert gone.returncode == 1
