"""The whole flow across real processes: deploy, approve, attest, upload, run,
download, receipt, delete — two users of two organisations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cleanroom.client.profile import NotApprovedError
from tests.e2e.conftest import User
from tests.e2e.helpers import approve, deploy, write


def test_two_parties_end_to_end(alice: User, bob: User, tmp_path: Path) -> None:
    work_id = deploy(alice, bob, tmp_path, "e2e-flow")
    approve(bob, "e2e-flow")

    attestation = bob.client.attest("e2e-flow")
    assert attestation.worker.work_id == work_id
    assert attestation.simulated
    assert {c.check for c in attestation.checks} >= {"nonce", "work-id", "worker-mrenclave"}

    alice.client.upload("e2e-flow", "input_1", write(tmp_path / "a", "a@x\nb@x\nc@x\n"))
    bob.client.upload("e2e-flow", "input_2", write(tmp_path / "b", "b@x\nc@x\nd@x\n"))
    assert alice.client.run("e2e-flow", wait=True).succeeded

    for user, output in ((alice, "output_1"), (bob, "output_2")):
        result = user.client.download("e2e-flow", output, tmp_path / f"out-{user.name}")
        assert json.loads((result.directory / "overlap.json").read_text()) == {
            "overlap": 2,
            "k": 3,
        }
        assert result.receipt.receipt["status"] == "succeeded"
    receipt = bob.client.receipt("e2e-flow").receipt
    assert receipt["inputs"]["input_2"]["by"] == bob.user_id

    deleted = alice.client.delete("e2e-flow")
    assert deleted.state == "deleted"


def test_data_operations_refuse_an_unapproved_work_id(
    alice: User, bob: User, tmp_path: Path
) -> None:
    deploy(alice, bob, tmp_path, "e2e-unapproved")
    with pytest.raises(NotApprovedError) as caught:
        bob.client.upload("e2e-unapproved", "input_2", write(tmp_path / "b", "x\n"))
    assert caught.value.check == "work-id-approved"
    assert "cleanroom --profile bob approve e2e-unapproved" in str(caught.value)
