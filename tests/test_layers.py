"""The layers, as import-linter checks them (the contracts are in pyproject.toml).

The first test runs ``lint-imports`` on the source tree: the test command checks the
layers too. The others copy the source tree, add one forbidden import to it, and
check that exactly the contract it breaks says so (a contract that cannot fail
checks nothing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over ``root/src`` with ``root``'s contracts (no cache written)."""
    selected = [argument for contract in contracts for argument in ("--contract", contract)]
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *selected, str(root / "pyproject.toml")],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root / "src")},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_source_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


# contract id: (module, the line appended to it)
VIOLATIONS = {
    "protocol-is-pure": ("protocol/spec.py", "from cleanroom import web"),
    "sgx-is-pure": ("sgx/structs.py", "from cleanroom.protocol import encoding"),
    # Indirect, inside a function: the cycle TokenIssuer.load once made.
    "controller-holds-no-secrets": (
        "tokens.py",
        "def _violation() -> None:\n    from cleanroom.manager.keys import KeyRing",
    ),
    "client-is-outside": ("client/rooms.py", "from cleanroom.enclave import worker"),
    "enclave-is-inside": ("enclave/room.py", "from cleanroom.client import profile"),
    "enclave-is-inside:controller": ("enclave/trial.py", "from cleanroom.controller import app"),
    "no-cycles": ("protocol/encoding.py", "from cleanroom.protocol import spec"),
    # A command that does not choose the simulation, importing it directly.
    "insecure-is-fenced": ("cli/verify.py", "from cleanroom.insecure.simulated import pki"),
    # Indirect, inside a function: attestation reaching the simulator through the demo.
    "core-never-reaches-insecure": (
        "attestation/policy.py",
        "def _violation() -> None:\n    from cleanroom.cli import demo",
    ),
}


@pytest.fixture(scope="module")
def copied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("layers")
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(
        ROOT / "src" / "cleanroom",
        root / "src" / "cleanroom",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return root


@pytest.mark.parametrize("contract", sorted(VIOLATIONS))
def test_a_forbidden_import_breaks_its_contract(contract: str, copied: Path) -> None:
    module, line = VIOLATIONS[contract]
    contract_id = contract.partition(":")[0]  # a second case of one contract: "id:what"
    path = copied / "src" / "cleanroom" / module
    intact = path.read_text()
    assert lint_imports(copied, contract_id).returncode == 0  # the copy keeps it
    try:
        path.write_text(f"{intact}\n\n{line}\n")
        result = lint_imports(copied, contract_id)
    finally:
        path.write_text(intact)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 broken" in result.stdout, result.stdout


def test_the_profile_may_not_import_the_tee_code(copied: Path) -> None:
    """No exception is left for the profile: its reference values come from a source."""
    path = copied / "src" / "cleanroom" / "client" / "profile.py"
    intact = path.read_text()
    try:
        path.write_text(f"{intact}\n\nfrom cleanroom.tee.measure import measure\n")
        result = lint_imports(copied, "client-is-outside")
    finally:
        path.write_text(intact)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cleanroom.client.profile -> cleanroom.tee.measure" in result.stdout
