"""A run receipt saved by a party and checked offline by a third party (an auditor who
took part in nothing): `cleanroom receipt ROOM --save DIR`, `cleanroom receipt verify`.

Each negative test breaks exactly one thing in the saved bundle, or one thing the
auditor pins, and expects exactly that check."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cleanroom.attestation import (
    DEFAULT_ACCEPTED_STATUSES,
    AttestationPolicy,
    EvidenceError,
    TrustAnchor,
)
from cleanroom.cli.main import main as cli_main
from cleanroom.client import sqlrooms
from cleanroom.client.audit import SavedReceipt, verify_saved_receipt
from cleanroom.client.collateral import COLLATERAL_CHECK
from cleanroom.errors import CheckFailed
from cleanroom.insecure.localstack import LocalStack
from cleanroom.protocol.encoding import b64u
from cleanroom.tee import reference as tee_reference
from cleanroom.tee.measure import MeasurementError, measure
from tests.e2e.conftest import User
from tests.e2e.helpers import approve, deploy, write


@pytest.fixture(scope="module")
def saved(
    stack: LocalStack, alice: User, bob: User, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Alice and Bob run a room; Alice saves its receipt for an auditor."""
    tmp = tmp_path_factory.mktemp("audit")
    deploy(alice, bob, tmp, "audited")
    approve(bob, "audited")
    alice.client.upload("audited", "input_1", write(tmp / "a", "a@x\nb@x\n"))
    bob.client.upload("audited", "input_2", write(tmp / "b", "b@x\nc@x\n"))
    assert alice.client.run("audited", wait=True, poll_s=0.1).succeeded
    _verified, path = alice.client.save_receipt("audited", tmp / "saved")
    with pytest.raises(CheckFailed) as caught:  # a function room has one run: no number
        sqlrooms.receipt(alice.client, "audited", 1)
    assert caught.value.check == "runtime"
    alice.client.delete("audited")  # the auditor needs nothing of the room any more
    return path.parent


@pytest.fixture(scope="module")
def saved_failed(
    stack: LocalStack, alice: User, bob: User, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A room whose function exits 3: its run ends failed, and its receipt, genuine, says
    so; Alice saves it."""
    tmp = tmp_path_factory.mktemp("audit-failed")
    deploy(alice, bob, tmp, "audited-failed", "def run():\n    raise SystemExit(3)\n")
    approve(bob, "audited-failed")
    alice.client.upload("audited-failed", "input_1", write(tmp / "a", "a@x\n"))
    bob.client.upload("audited-failed", "input_2", write(tmp / "b", "a@x\n"))
    assert alice.client.run("audited-failed", wait=True, poll_s=0.1).run_status == "failed"
    _verified, path = alice.client.save_receipt("audited-failed", tmp / "saved")
    alice.client.delete("audited-failed")
    return path.parent


def policy() -> tuple[AttestationPolicy, frozenset[bytes]]:
    attester, worker = measure("attester"), measure("worker")
    return (
        AttestationPolicy(
            accepted_statuses=DEFAULT_ACCEPTED_STATUSES,
            mrenclaves=frozenset({attester.mr_enclave}),
            mrsigner=attester.mr_signer,
            isv_prod_id=attester.isv_prod_id,
            min_isv_svn=attester.isv_svn,
        ),
        frozenset({worker.mr_enclave}),
    )


def audit(directory: Path, stack: LocalStack, *, at: int | None = None, **changes: Any) -> Any:
    saved = SavedReceipt.read(directory)
    attester_policy, workers = policy()
    return verify_saved_receipt(
        saved,
        attester_policy=changes.get("attester_policy", attester_policy),
        expected_worker_mrenclaves=changes.get("workers", workers),
        trust=TrustAnchor.from_certificate(stack.simulated_root_pem().encode()),
        at=saved.saved_at if at is None else at,
    )


def copy_with(saved: Path, tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(saved, target)
    document = json.loads((target / "receipt.json").read_text())
    change(document)
    (target / "receipt.json").write_text(json.dumps(document))
    return target


def test_a_saved_receipt_verifies_offline(saved: Path, stack: LocalStack) -> None:
    audited = audit(saved, stack)
    assert audited.receipt["status"] == "succeeded"
    assert set(audited.receipt["inputs"]) == {"input_1", "input_2"}
    assert audited.spec.work_id == audited.receipt["work_id"]
    checks = [check.check for check in audited.checks]
    for check in ("tcb-status", "mrenclave", "report-data", "work-id", "receipt-signature"):
        assert check in checks
    # The receipt's Work-ID was listed as a second "work-id", beside the claims' (h25).
    assert "receipt-work-id" in checks and len(checks) == len(set(checks)), checks
    # The collateral's validity at the time checked, under the name attest lists it by;
    # not under the name of one of its refusals, as if the collateral had expired.
    assert checks[0] == COLLATERAL_CHECK == "collateral"
    assert not {"collateral-expired", "collateral-not-yet-valid"} & set(checks)


@pytest.mark.parametrize(
    ("change", "check"),
    [
        (lambda d: d["receipt"].__setitem__("status", "failed"), "receipt-signature"),
        (
            lambda d: d["receipt"]["inputs"]["input_1"].__setitem__("sha256", "0" * 64),
            "receipt-signature",
        ),
        (lambda d: d["spec"]["parameters"].__setitem__("k", 4), "work-id"),
        (
            lambda d: d["claims"]["worker"].__setitem__("worker_key", b64u(b"\x00" * 91)),
            "report-data",
        ),
        (lambda d: d["claims"].__setitem__("nonce", b64u(bytes(32))), "report-data"),
        (lambda d: d.__setitem__("signature", b64u(bytes(70))), "receipt-signature"),
    ],
    ids=["status", "input-digest", "spec", "worker-key", "nonce", "signature"],
)
def test_a_changed_bundle_is_refused(
    saved: Path,
    stack: LocalStack,
    tmp_path: Path,
    change: Callable[[dict[str, Any]], None],
    check: str,
) -> None:
    with pytest.raises(CheckFailed) as caught:
        audit(copy_with(saved, tmp_path, change), stack)
    assert caught.value.check == check, caught.value


def test_a_changed_quote_is_refused(saved: Path, stack: LocalStack, tmp_path: Path) -> None:
    target = copy_with(saved, tmp_path, lambda d: None)
    bundle = json.loads((target / "quote.json").read_text())
    quote = bytearray(base64.b64decode(bundle["quote"]))
    quote[48 + 64] ^= 1  # a byte of the report body's MRENCLAVE
    bundle["quote"] = base64.b64encode(bytes(quote)).decode()
    (target / "quote.json").write_text(json.dumps(bundle))
    with pytest.raises(CheckFailed) as caught:
        audit(target, stack)
    assert caught.value.check == "quote-verification", caught.value


def test_other_published_measurements_are_refused(saved: Path, stack: LocalStack) -> None:
    attester_policy, _workers = policy()
    with pytest.raises(CheckFailed) as caught:
        audit(saved, stack, workers=frozenset({bytes(32)}))
    assert caught.value.check == "worker-mrenclave"
    other = AttestationPolicy(
        accepted_statuses=attester_policy.accepted_statuses,
        mrenclaves=frozenset({bytes(32)}),
    )
    with pytest.raises(CheckFailed) as caught:
        audit(saved, stack, attester_policy=other)
    assert caught.value.check == "mrenclave"


def test_a_pinned_time_after_the_collateral_expired_is_refused(
    saved: Path, stack: LocalStack
) -> None:
    later = SavedReceipt.read(saved).quote.saved_at + 40 * 86400
    with pytest.raises(CheckFailed) as caught:
        audit(saved, stack, at=later)
    assert caught.value.check == "collateral-expired"


def test_the_command_line(saved: Path, stack: LocalStack, tmp_path: Path) -> None:
    root = tmp_path / "root.pem"
    root.write_text(stack.simulated_root_pem())

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cleanroom.cli.main", "receipt", "verify", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "CLEANROOM_HOME": str(tmp_path / "auditor"), "COLUMNS": "200"},
            timeout=120,
            check=False,
        )

    ok = cli(str(saved), "--simulated-root", str(root), "--at-saved")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "succeeded" in ok.stdout and "input_2" in ok.stdout and "NOT Intel" in ok.stderr
    as_json = json.loads(cli(str(saved / "receipt.json"), "--simulated-root", str(root),
                             "--at-saved", "--json").stdout)  # fmt: skip
    assert as_json["receipt"]["status"] == "succeeded"

    tampered = copy_with(saved, tmp_path, lambda d: d["receipt"].__setitem__("status", "failed"))
    refused = cli(str(tampered), "--simulated-root", str(root), "--at-saved")
    assert refused.returncode == 1 and "receipt-signature" in refused.stderr, refused.stderr
    intel = cli(str(saved), "--at-saved")  # a simulated quote against Intel's root
    assert intel.returncode == 1 and "quote-verification" in intel.stderr, intel.stderr
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "receipt.json").write_text("{}")
    unusable = cli(str(tmp_path / "broken"), "--simulated-root", str(root))
    assert unusable.returncode == 2 and "saved-receipt-format" in unusable.stderr


def test_a_genuine_receipt_of_a_failed_run_does_not_exit_0(
    saved_failed: Path,
    stack: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every check passes, and the run failed: exit 1, as `run --wait` and `receipt ROOM`
    (a script reading only the exit code took exit 0 for a run that succeeded). What was
    checked is still printed, and the last line says the receipt is genuine, not refused."""
    audited = audit(saved_failed, stack)
    assert (audited.receipt["status"], audited.succeeded) == ("failed", False)
    monkeypatch.setenv("CLEANROOM_HOME", str(tmp_path / "auditor"))
    root = tmp_path / "root.pem"
    root.write_text(stack.simulated_root_pem())
    args = ["receipt", "verify", str(saved_failed), "--simulated-root", str(root), "--at-saved"]
    assert cli_main(args) == 1
    shown = capsys.readouterr()
    assert "saved receipt of audited-failed: failed" in shown.out, shown.out
    assert "receipt-signature" in shown.out and "rejected" not in shown.err, shown.err
    assert "the run of audited-failed ended failed (the receipt is genuine" in shown.err
    assert cli_main([*args, "--json"]) == 1
    shown = capsys.readouterr()
    assert json.loads(shown.out)["receipt"]["status"] == "failed"
    assert "ended failed" in shown.err


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_nan_in_a_saved_receipt_is_unusable_input(
    saved: Path,
    stack: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    value: str,
) -> None:
    """NaN is not JSON and has no canonical form, so it was never signed: the file is
    malformed (exit 2, as a member twice), not evidence a check refused (it was
    `rejected: canonical-json`, exit 1)."""
    target = copy_with(saved, tmp_path, lambda d: None)
    text = (target / "receipt.json").read_text()
    (target / "receipt.json").write_text(text.replace('"exit_code": 0', f'"exit_code": {value}'))
    monkeypatch.setenv("CLEANROOM_HOME", str(tmp_path / "auditor"))
    root = tmp_path / "root.pem"
    root.write_text(stack.simulated_root_pem())
    code = cli_main(["receipt", "verify", str(target), "--simulated-root", str(root), "--at-saved"])
    error = capsys.readouterr().err
    assert code == 2 and "saved-receipt-format" in error and "rejected" not in error, error


def test_an_auditor_who_names_every_measurement_needs_no_installation(
    saved: Path, stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the published Attester MRENCLAVE and MRSIGNER and the Worker MRENCLAVE
    given, nothing of this installation is measured (an auditor's machine may have no
    runtimes to measure); the check still refuses other measurements."""
    attester, worker = measure("attester"), measure("worker")
    measured: list[str] = []

    def unmeasurable(name: str, **_: Any) -> Any:
        measured.append(name)
        raise MeasurementError(f"no {name} image on the auditor's machine")

    monkeypatch.setattr(tee_reference, "measure", unmeasurable)
    monkeypatch.setenv("CLEANROOM_HOME", str(tmp_path / "auditor"))
    root = tmp_path / "root.pem"
    root.write_text(stack.simulated_root_pem())
    args = ["receipt", "verify", str(saved), "--simulated-root", str(root), "--at-saved"]
    published = [
        "--attester-mrenclave", attester.mr_enclave.hex(),
        "--attester-mrsigner", attester.mr_signer.hex(),
    ]  # fmt: skip
    assert cli_main([*args, *published, "--worker-mrenclave", worker.mr_enclave.hex()]) == 0
    assert measured == []
    other = cli_main([*args, *published, "--worker-mrenclave", "00" * 32])
    assert other == 1 and measured == []
    # One measurement left out is this release's, and this release cannot be measured.
    assert cli_main([*args, *published]) == 2 and measured == ["attester"]


def test_a_bundle_saved_under_another_rooms_name_is_refused(
    saved: Path, stack: LocalStack, tmp_path: Path
) -> None:
    """The title an auditor reads ("saved receipt of ROOM") is the spec's name, which
    the Work-ID covers; the saved ``room`` beside it is the saver's word (``room``)."""
    renamed = copy_with(saved, tmp_path, lambda d: d.__setitem__("room", "payroll-approved"))
    with pytest.raises(CheckFailed) as caught:
        audit(renamed, stack)
    assert caught.value.check == "room", caught.value
    assert (caught.value.expected, caught.value.actual) == ("audited", "payroll-approved")
    assert "room" in [check.check for check in audit(saved, stack).checks]


def test_at_saved_is_never_before_the_run_finished(saved: Path, tmp_path: Path) -> None:
    """``saved_at`` is the saver's word: set before the run it would pick collateral of
    an earlier time (before a TCB recovery); --at-saved pins the receipt's signed
    ``finished`` when that is later."""
    target = copy_with(saved, tmp_path, lambda d: None)
    finished = json.loads((target / "receipt.json").read_text())["receipt"]["finished"]
    bundle = json.loads((target / "quote.json").read_text())
    bundle["saved_at"] = finished - 200
    (target / "quote.json").write_text(json.dumps(bundle))
    assert SavedReceipt.read(target).saved_at == finished
    assert SavedReceipt.read(saved).saved_at >= finished
    # A changed finished is not signed: the time stays the saved one, and the check that
    # refuses is the signature's, not the collateral's at a time the change chose (40
    # days on, after the collateral expired; 10**30 has no canonical form, now refused
    # as read: saved-receipt-format).
    later = finished + 40 * 86400
    changed = copy_with(target, tmp_path / "changed",
                        lambda d: d["receipt"].__setitem__("finished", later))  # fmt: skip
    assert SavedReceipt.read(changed).saved_at == finished - 200


def test_the_time_checked_at_and_a_refusal_for_it_say_where_the_time_came_from(
    saved: Path,
    stack: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With --at-saved the time is the bundle's (its saved_at, or the receipt's signed
    finished when later), not this machine's: the "checked at" line names it, and a
    collateral refusal at it no longer says "check this machine's clock" (nor "fetch
    fresh collateral", which the saved bundle cannot take)."""
    monkeypatch.setenv("CLEANROOM_HOME", str(tmp_path / "auditor"))
    root = tmp_path / "root.pem"
    root.write_text(stack.simulated_root_pem())

    def verify(directory: Path, *args: str) -> tuple[int, str, str]:
        code = cli_main(["receipt", "verify", str(directory), "--simulated-root", str(root),
                         *args])  # fmt: skip
        shown = capsys.readouterr()
        return code, shown.out, shown.err

    def with_bundle(name: str, change: Callable[[dict[str, Any]], None]) -> Path:
        target = copy_with(saved, tmp_path / name, lambda d: None)
        bundle = json.loads((target / "quote.json").read_text())
        change(bundle)
        (target / "quote.json").write_text(json.dumps(bundle))
        return target

    def issued_in_2099(bundle: dict[str, Any]) -> None:
        tcb_info = json.loads(bundle["collateral"]["tcb_info"])
        tcb_info["issueDate"] = "2099-01-01T00:00:00Z"
        bundle["collateral"]["tcb_info"] = json.dumps(tcb_info)

    code, out, _ = verify(saved, "--at-saved")
    assert (
        code == 0 and "(UNIX seconds, --at-saved: the bundle's saved_at, the saver's word)" in out
    )
    code, out, _ = verify(saved)
    assert code == 0 and "(UNIX seconds, now, this machine's clock)" in out, out
    code, out, _ = verify(saved, "--at-saved", "--json")
    assert code == 0 and json.loads(out)["at_source"] == "saved_at"
    finished = json.loads((saved / "receipt.json").read_text())["receipt"]["finished"]
    early = with_bundle("early", lambda b: b.__setitem__("saved_at", finished - 200))
    code, out, _ = verify(early, "--at-saved")
    assert code == 0 and f"checked at {finished} (UNIX seconds, --at-saved: the receipt's signed " \
        "finished, later than the bundle's saved_at)" in out, out  # fmt: skip

    not_yet = with_bundle("not-yet", issued_in_2099)
    code, _, error = verify(not_yet, "--at-saved")
    assert code == 1 and "collateral-not-yet-valid" in error, error
    assert "the time is the bundle's saved_at (--at-saved), not this machine's clock" in error
    assert "check this machine's clock" not in error
    code, _, error = verify(with_bundle("not-yet-early", lambda b: (
        issued_in_2099(b), b.__setitem__("saved_at", finished - 200))), "--at-saved")  # fmt: skip
    assert code == 1 and "the time is the receipt's signed finished (--at-saved)" in error, error
    code, _, error = verify(not_yet)  # now is this machine's clock
    assert code == 1 and "the time is now: check this machine's clock" in error, error
    code, _, error = verify(not_yet, "--at", str(finished))
    assert code == 1 and "the time is the one given with --at" in error, error

    late = with_bundle("late", lambda b: b.__setitem__("saved_at", b["saved_at"] + 40 * 86400))
    code, _, error = verify(late, "--at-saved")
    assert code == 1 and "collateral-expired" in error, error
    assert "the time is the bundle's saved_at (--at-saved), not this machine's clock" in error
    assert "fetch fresh collateral" not in error
    code, out, _ = verify(late, "--at-saved", "--json")
    assert code == 1 and "(--at-saved)" in json.loads(out)["error"]["hint"]


def _hostile_copy(saved: Path, tmp_path: Path, name: str, make: Callable[[Path], None]) -> Path:
    target = tmp_path / "hostile"
    shutil.copytree(saved, target)
    (target / name).unlink()
    make(target / name)
    return target


@pytest.mark.parametrize("name", ["receipt.json", "quote.json"])
@pytest.mark.parametrize(
    ("make", "actual"),
    [
        (lambda path: path.symlink_to("/etc/passwd"), "a symbolic link"),
        (lambda path: path.symlink_to("/dev/zero"), "a symbolic link"),
        (lambda path: os.mkfifo(path), "not a regular file"),
        (lambda path: path.write_bytes(b" " * (9 << 20)), "more than 8388608 bytes"),
    ],
    ids=["link-out", "link-to-device", "fifo", "too-big"],
)
def test_a_saved_file_is_read_only_as_a_bounded_regular_file(
    saved: Path, tmp_path: Path, name: str, make: Callable[[Path], None], actual: str
) -> None:
    """Nothing outside the directory is read, nothing that never ends is waited for, and
    no more than 8 MiB is held: each refused by ``saved-receipt-file``, before parsing."""
    target = _hostile_copy(saved, tmp_path, name, make)
    with pytest.raises(CheckFailed) as caught:
        SavedReceipt.read(target)
    assert caught.value.check == "saved-receipt-file", caught.value
    assert str(caught.value.actual) == f"{target / name}: {actual}"


@pytest.mark.parametrize("name", ["receipt.json", "quote.json"])
def test_a_saved_file_with_another_hard_link_is_not_read(
    saved: Path, stack: LocalStack, tmp_path: Path, name: str
) -> None:
    """A hard link is a regular file, and its other name may be outside the directory
    (another bundle's quote, the auditor's own file): the descriptor's link count is
    refused (``saved-receipt-file``, exit 2). The file linked is the genuine one, so the
    link alone is what is refused."""
    outside = tmp_path / f"outside-{name}"
    shutil.copyfile(saved / name, outside)
    target = _hostile_copy(saved, tmp_path, name, lambda path: os.link(outside, path))
    with pytest.raises(CheckFailed) as caught:
        SavedReceipt.read(target)
    assert caught.value.check == "saved-receipt-file", caught.value
    assert str(caught.value.actual) == f"{target / name}: 2 hard links"
    assert isinstance(caught.value, EvidenceError)  # exit 2: unusable input
    assert "outside the directory" in caught.value.message, caught.value
    os.unlink(outside)  # the last name: the same bytes, now read
    assert audit(target, stack).receipt == audit(saved, stack).receipt


@pytest.mark.parametrize(
    ("name", "edit", "check", "actual"),
    [
        (
            "receipt.json",
            lambda text: text.replace('"status": "succeeded"',
                                      '"status": "failed", "status": "succeeded"'),
            "saved-receipt-format",
            "duplicate member 'status'",
        ),
        (
            "quote.json",
            lambda text: text.replace('"saved_at":', '"saved_at": 0, "saved_at":'),
            "bundle-format",
            "duplicate member 'saved_at'",
        ),
        ("receipt.json", lambda text: "[" * 100_000 + "]" * 100_000, "saved-receipt-format",
         "JSON nested too deeply"),
        ("quote.json", lambda text: "[" * 100_000 + "]" * 100_000, "bundle-format",
         "JSON nested too deeply"),
        (
            "quote.json",
            lambda text: re.sub(r'"saved_at": \d+', '"saved_at": 1000000000000000000', text),
            "bundle-format",
            "saved_at is not UNIX seconds of 1970-9999: 1000000000000000000",
        ),
        ("receipt.json", lambda text: text.replace('"exit_code": 0', '"exit_code": NaN'),
         "saved-receipt-format", "NaN is not JSON (RFC 8259: no NaN or Infinity)"),
        ("receipt.json", lambda text: re.sub(r'"finished": \d+', '"finished": Infinity', text),
         "saved-receipt-format", "Infinity is not JSON (RFC 8259: no NaN or Infinity)"),
        ("receipt.json", lambda text: text.replace('"exit_code": 0', '"exit_code": 1e400'),
         "saved-receipt-format", "the number 1e400 is beyond a double (not I-JSON)"),
        ("receipt.json",
         lambda text: text.replace('"exit_code": 0', '"exit_code": 9007199254740993'),
         "saved-receipt-format",
         "no RFC 8785 form: 9007199254740993 exceeds safe integer domain for JSON floats"),
        ("quote.json", lambda text: re.sub(r'"saved_at": \d+', '"saved_at": NaN', text),
         "bundle-format", "NaN is not JSON (RFC 8259: no NaN or Infinity)"),
    ],
    ids=["duplicate-in-receipt", "duplicate-in-quote", "deep-receipt", "deep-quote",
         "saved-at-year-31688", "nan-in-receipt", "infinity-in-receipt", "overflow-in-receipt",
         "big-int-in-receipt", "nan-in-quote"],
)  # fmt: skip
def test_saved_json_a_reader_could_take_otherwise_is_refused(
    saved: Path, tmp_path: Path, name: str, edit: Callable[[str], str], check: str, actual: str
) -> None:
    """A member twice (this reader kept the last, another may keep the first), nesting
    deeper than the parser recurses, a time no date holds, NaN, Infinity or a number no
    canonical JSON holds (nothing with no canonical form was ever signed): each a named
    refusal of the file (exit 2), not an internal error or a check's refusal (exit 1)."""
    target = copy_with(saved, tmp_path, lambda d: None)
    (target / name).write_text(edit((target / name).read_text()))
    with pytest.raises(CheckFailed) as caught:
        SavedReceipt.read(target)
    assert (caught.value.check, caught.value.actual) == (check, actual), caught.value


@pytest.mark.parametrize(
    ("field", "value", "check"),
    [
        ("nextUpdate", "0001-01-01T00:00:00+14:00", "collateral-expired"),
        ("issueDate", "9999-12-31T23:59:59-14:00", "collateral-not-yet-valid"),
    ],
)
def test_collateral_dates_beyond_the_calendar_are_a_refusal(
    saved: Path, stack: LocalStack, tmp_path: Path, field: str, value: str, check: str
) -> None:
    """The collateral's windows are read before its signatures are checked: a date in
    year 0 or 10000 once in UTC is refused by name (it was an internal error: the
    refusal could not print it)."""
    target = copy_with(saved, tmp_path, lambda d: None)
    bundle = json.loads((target / "quote.json").read_text())
    tcb_info = json.loads(bundle["collateral"]["tcb_info"])
    tcb_info[field] = value
    bundle["collateral"]["tcb_info"] = json.dumps(tcb_info)
    (target / "quote.json").write_text(json.dumps(bundle))
    with pytest.raises(CheckFailed) as caught:
        audit(target, stack)
    assert caught.value.check == check, caught.value
    assert "(UNIX seconds)" in str(caught.value.actual), caught.value
