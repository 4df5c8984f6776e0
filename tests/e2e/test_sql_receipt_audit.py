"""A SQL room's query receipt saved for a third party and checked offline: by the
runner with the run's detail (`cleanroom query ... --save-receipt DIR`), by another
party without it (`cleanroom receipt ROOM --run N --save DIR`), and `cleanroom
receipt verify DIR` on each, against real manager and compute server processes.

Each negative test breaks exactly one thing in a saved bundle and expects exactly
that check."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cleanroom.client.audit import SavedReceipt, _check_saved_detail
from cleanroom.errors import CheckFailed
from cleanroom.insecure.localstack import LocalStack
from cleanroom.protocol.encoding import b64u, canonical
from cleanroom.protocol.query_receipt import detail_digest, query_detail, query_sha256
from cleanroom.protocol.spec import WorkSpec
from tests.e2e.test_cli_flow import Cli, configured
from tests.e2e.test_receipt_audit import audit, copy_with
from tests.e2e.test_runtimes import require_data_runtime
from tests.e2e.test_sql import EXAMPLE, write_inputs


@pytest.fixture(scope="module")
def saved(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Alice runs two queries of the example's room and saves each receipt with its
    detail; Bob, who did not run them, saves the second's receipt without it."""
    require_data_runtime()
    tmp = tmp_path_factory.mktemp("sql-audit")
    alice, alice_id = configured(stack, tmp, "alice-sqlaudit", "acme")
    bob, bob_id = configured(stack, tmp, "bob-sqlaudit", "globex")
    access = tmp / "access.yaml"
    text = (EXAMPLE / "access.yaml.example").read_text()
    access.write_text(
        text.replace("<user_id of party 1>", alice_id).replace("<user_id of party 2>", bob_id)
    )
    alice(
        "deploy", "--name", "sql-audit", "--access", str(access),
        "--sql", str(EXAMPLE / "queries.sql"),
        "--schema", f"input_1={EXAMPLE / 'input_1.yaml'}",
        "--schema", f"input_2={EXAMPLE / 'input_2.yaml'}",
    )  # fmt: skip
    bob("approve", "sql-audit", "--yes")
    write_inputs(tmp)
    alice("data", "cp", str(tmp / "one"), "sql-audit:input_1")
    bob("data", "cp", str(tmp / "two"), "sql-audit:input_2")
    ran = alice("query", "sql-audit", "--name", "crosstab", "--save-receipt", str(tmp / "first"))
    assert f"receipt verify {tmp / 'first'}" in ran.stdout
    query = ("query", "sql-audit", "--name", "crosstab_in", "--param", "region=east")
    second = json.loads(alice(*query, "--save-receipt", str(tmp / "second"), "--json").stdout)
    run = str(second["receipt"]["run"])
    shown = bob("receipt", "sql-audit", "--run", run, "--save", str(tmp / "bob"))
    assert "crosstab_in" in shown.stdout and "succeeded" in shown.stdout
    # The runner's client kept each run's detail: saved later, the receipt has it.
    later = alice("receipt", "sql-audit", "--run", run, "--save", str(tmp / "later"))
    assert '"east"' in later.stdout, later.stdout
    # A kept detail that is not the one the receipt commits to (an earlier Worker's run of
    # that number) is left out, not saved.
    (records,) = (tmp / "home-alice-sqlaudit").rglob("uploads.json")
    kept = records.read_text()
    changed = json.loads(kept)
    changed["sql-audit"]["details"][run]["salt"] = b64u(bytes(32))
    records.write_text(json.dumps(changed))
    unkept = alice("receipt", "sql-audit", "--run", run, "--save", str(tmp / "unkept"))
    assert "not saved" in unkept.stdout and '"east"' not in unkept.stdout, unkept.stdout
    records.write_text(kept)
    # A SQL room has no one run receipt: the command asks for the run, before any session.
    no_run = bob("receipt", "sql-audit", ok=False)
    assert no_run.returncode == 2, no_run.stderr  # unusable input, as README defines it
    assert "sql-audit is a SQL room: it signs one receipt per query run" in no_run.stderr
    alice("delete", "sql-audit", "--yes")  # the auditor needs nothing of the room any more
    root = tmp / "root.pem"
    root.write_text(stack.simulated_root_pem())
    return {
        "first": tmp / "first", "second": tmp / "second", "bob": tmp / "bob",
        "later": tmp / "later", "unkept": tmp / "unkept", "detail": second["detail"],
        "root": root, "auditor": Cli(tmp / "home-auditor"),
        "alice": alice, "bob_cli": bob,
    }  # fmt: skip


def test_the_runners_saved_receipt_verifies_offline_with_its_detail(
    saved: dict[str, Any], stack: LocalStack
) -> None:
    audited = audit(saved["second"], stack)
    assert audited.receipt["query"] == {"name": "crosstab_in"}
    assert audited.detail == saved["detail"]
    assert audited.detail["query"]["parameters"] == {"region": "east"}
    checks = [check.check for check in audited.checks]
    for check in ("tcb-status", "report-data", "receipt-signature", "query-detail",
                  "receipt-query"):  # fmt: skip
        assert check in checks, checks


def test_the_runner_saves_a_runs_receipt_later_with_the_detail_it_kept(
    saved: dict[str, Any], stack: LocalStack
) -> None:
    audited = audit(saved["later"], stack)
    assert audited.detail == saved["detail"]
    assert audited.receipt == audit(saved["second"], stack).receipt


def test_a_kept_detail_the_receipt_does_not_commit_to_is_not_saved(
    saved: dict[str, Any], stack: LocalStack
) -> None:
    assert SavedReceipt.read(saved["unkept"]).detail is None
    assert audit(saved["unkept"], stack).detail is None


def test_another_partys_saved_receipt_verifies_without_the_detail(
    saved: dict[str, Any], stack: LocalStack
) -> None:
    audited = audit(saved["bob"], stack)
    assert audited.receipt == audit(saved["second"], stack).receipt
    assert audited.detail is None
    assert "query-detail" not in [check.check for check in audited.checks]


@pytest.mark.parametrize(
    ("change", "check"),
    [
        (lambda d: d["detail"]["query"]["parameters"].__setitem__("region", "west"),
         "query-detail"),
        (lambda d: d["detail"].__setitem__("salt", b64u(bytes(32))), "query-detail"),
        (lambda d: d["detail"]["rows"].__setitem__("released", d["detail"]["rows"]["released"] + 1),
         "query-detail"),
        (lambda d: d["receipt"]["privacy"].__setitem__("input_1", {}), "receipt-signature"),
        (lambda d: d["receipt"].__setitem__("run", 99), "receipt-signature"),
        (lambda d: d["receipt"].__setitem__("query", {"name": "overlap"}), "receipt-signature"),
    ],
    ids=["parameter", "salt", "rows", "privacy", "run", "query-name"],
)  # fmt: skip
def test_a_changed_query_bundle_is_refused(
    saved: dict[str, Any],
    stack: LocalStack,
    tmp_path: Path,
    change: Callable[[dict[str, Any]], None],
    check: str,
) -> None:
    with pytest.raises(CheckFailed) as caught:
        audit(copy_with(saved["second"], tmp_path, change), stack)
    assert caught.value.check == check, caught.value


def test_another_runs_detail_is_refused(
    saved: dict[str, Any], stack: LocalStack, tmp_path: Path
) -> None:
    """The first run's genuine detail beside the second run's receipt (or in the bundle
    of a party who had none) is not the detail that receipt signed."""
    first = json.loads((saved["first"] / "receipt.json").read_text())["detail"]
    for source in ("second", "bob"):
        target = copy_with(saved[source], tmp_path / source,
                           lambda d: d.__setitem__("detail", first))  # fmt: skip
        with pytest.raises(CheckFailed) as caught:
            audit(target, stack)
        assert caught.value.check == "query-detail", caught.value


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.__setitem__("type", "cleanroom/saved-receipt/v1"),
        lambda d: d.__setitem__("detail", "x"),
        lambda d: d.pop("detail"),
    ],
    ids=["function-receipt-type", "detail-not-an-object", "no-detail-field"],
)
def test_a_malformed_query_bundle_is_refused_as_malformed(
    saved: dict[str, Any], tmp_path: Path, change: Callable[[dict[str, Any]], None]
) -> None:
    with pytest.raises(CheckFailed) as caught:
        SavedReceipt.read(copy_with(saved["second"], tmp_path, change))
    assert caught.value.check == "saved-receipt-format", caught.value


def test_a_named_querys_detail_must_name_the_specs_text(saved: dict[str, Any]) -> None:
    """A receipt that committed to a detail whose text digest is not the spec's query
    of that name is refused (``receipt-query``): what an auditor reads in the spec is
    what ran. No Worker of ours signs one, so the receipt is made here, unsigned, for
    the check that follows the signature."""
    document = json.loads((saved["second"] / "receipt.json").read_text())
    spec = WorkSpec.parse(document["spec"])
    assert spec.sql is not None
    receipt = dict(document["receipt"])

    def committed(sha256: str) -> dict[str, Any]:
        detail = query_detail(run=receipt["run"], salt=bytes(32), sha256=sha256,
                              parameters={"region": "east"},
                              rows={"released": 1, "suppressed": 0})  # fmt: skip
        receipt["detail"] = detail_digest(detail)
        return detail

    own = committed(query_sha256(spec.sql.queries["crosstab_in"].text))
    _detail, checks = _check_saved_detail(own, receipt, spec)
    assert [check.check for check in checks] == ["query-detail", "receipt-query"]
    other = committed(query_sha256(spec.sql.queries["crosstab"].text))
    with pytest.raises(CheckFailed) as caught:
        _check_saved_detail(other, receipt, spec)
    assert caught.value.check == "receipt-query"
    unnamed = committed(query_sha256("SELECT 1"))
    receipt["query"] = {"name": "no_such_query"}
    with pytest.raises(CheckFailed) as caught:
        _check_saved_detail(unnamed, receipt, spec)
    assert caught.value.check == "receipt-query"
    assert canonical(own) != canonical(other)


def test_the_command_line(saved: dict[str, Any], tmp_path: Path) -> None:
    auditor, root = saved["auditor"], str(saved["root"])
    ok = auditor("receipt", "verify", str(saved["second"]), "--simulated-root", root,
                 "--at-saved")  # fmt: skip
    assert "query run" in ok.stdout and "crosstab_in" in ok.stdout
    assert '"east"' in ok.stdout and "query-detail" in ok.stdout, ok.stdout
    assert "NOT Intel" in ok.stderr
    as_json = json.loads(auditor("receipt", "verify", str(saved["second"]), "--simulated-root",
                                 root, "--at-saved", "--json").stdout)  # fmt: skip
    assert as_json["detail"] == saved["detail"]
    theirs = auditor("receipt", "verify", str(saved["bob"]), "--simulated-root", root,
                     "--at-saved")  # fmt: skip
    assert "not saved" in theirs.stdout and '"east"' not in theirs.stdout
    tampered = copy_with(
        saved["second"], tmp_path,
        lambda d: d["detail"]["query"]["parameters"].__setitem__("region", "west"),
    )  # fmt: skip
    refused = auditor("receipt", "verify", str(tampered), "--simulated-root", root,
                      "--at-saved", ok=False)  # fmt: skip
    assert refused.returncode == 1 and "query-detail" in refused.stderr, refused.stderr


def test_save_targets_are_refused_before_anything_runs(
    saved: dict[str, Any], tmp_path: Path
) -> None:
    """A --save-receipt directory that is not new or empty is refused before the query
    runs (it would spend ε for a receipt that cannot be saved); --run needs a number."""
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    refused = saved["alice"]("query", "sql-audit", "--name", "crosstab", "--save-receipt",
                             str(full), ok=False)  # fmt: skip
    assert refused.returncode == 2, refused.stderr  # unusable input: nothing is asked
    assert refused.stderr.endswith(f"--save-receipt {full} is not empty: give a new or empty "
                                   "directory\n"), refused.stderr  # fmt: skip
    bad_run = saved["bob_cli"]("receipt", "sql-audit", "--run", "0", ok=False)
    assert bad_run.returncode == 2 and "--run" in bad_run.stderr
    mixed = saved["auditor"]("receipt", "verify", str(saved["second"]), "--run", "1", ok=False)
    assert mixed.returncode == 2 and "--run and --save" in mixed.stderr
