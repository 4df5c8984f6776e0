"""The SQL part of the work spec: its exact JSON (docs/protocol.md's vector), and the
purposes and receipts of a SQL room."""

from __future__ import annotations

from typing import Any

import pytest

from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.errors import AccessDenied, BindingError, MessageFormatError
from cleanroom.protocol.keys import load_spki, spki
from cleanroom.protocol.query_receipt import (
    budget_statement,
    query_receipt,
    sign,
    verify_budget,
    verify_query_receipt,
)
from cleanroom.protocol.spec import DownloadPurpose, RunPurpose, WorkSpec, authorize
from tests.protocol.fixtures import ALICE_ID, BOB_ID, MALLORY_ID, SPEC_DOCUMENT, fixed_key

SQL_SPEC_DOCUMENT: dict[str, Any] = {
    **SPEC_DOCUMENT, "runtime": "sql", "handler": "handler.run", "parameters": {},
    "sql": {
        "schemas": {
            "input_1": {"format": "csv", "columns": [
                {"name": "email", "type": "varchar", "nullable": False},
                {"name": "region", "type": "varchar"}]},
            "input_2": {"format": "parquet", "columns": [
                {"name": "email", "type": "varchar", "nullable": False}]},
        },
        "rules": {
            "input_1": {"kind": "aggregation", "join_columns": ["email"],
                        "dimension_columns": ["region"],
                        "aggregate_columns": {"email": ["count_distinct"]},
                        "threshold": {"column": "email", "minimum": 10}},
            "input_2": {"kind": "list", "join_columns": ["email"], "list_columns": ["email"]},
        },
        "queries": {"overlap": {
            "text": "SELECT a.region, COUNT(DISTINCT a.email) AS n FROM input_1 a "
                    "JOIN input_2 b ON a.email = b.email GROUP BY a.region",
            "output": "output_1"}},
    },
}  # fmt: skip
SQL_SPEC = WorkSpec.parse(SQL_SPEC_DOCUMENT)
WORKER = fixed_key(0x3011C)


def test_sql_spec_vector() -> None:
    """Defaults are written out (nullable, format, parameters, empty column lists), absent
    options left out: one spec, one text, one Work-ID."""
    assert canonical(SQL_SPEC.document()["sql"]) == (
        b'{"queries":{"overlap":{"format":"csv","output":"output_1","parameters":{},"text":'
        b'"SELECT a.region, COUNT(DISTINCT a.email) AS n FROM input_1 a JOIN input_2 b ON '
        b'a.email = b.email GROUP BY a.region"}},"rules":{"input_1":{"aggregate_columns":'
        b'{"email":["count_distinct"]},"dimension_columns":["region"],"join_columns":["email"],'
        b'"kind":"aggregation","list_columns":[],"threshold":{"column":"email","minimum":10}},'
        b'"input_2":{"aggregate_columns":{},"dimension_columns":[],"join_columns":["email"],'
        b'"kind":"list","list_columns":["email"]}},"schemas":{"input_1":{"columns":[{"name":'
        b'"email","nullable":false,"type":"varchar"},{"name":"region","nullable":true,"type":'
        b'"varchar"}],"format":"csv"},"input_2":{"columns":[{"name":"email","nullable":false,'
        b'"type":"varchar"}],"format":"parquet"}}}'
    )
    assert SQL_SPEC.work_id == "CuL9P4dfA9LVNJdAiYCU8ZZzG2-08Anmke1u5n80SlI"
    # A function room's spec has no sql key at all: its Work-ID is as before.
    assert "sql" not in WorkSpec.parse(SPEC_DOCUMENT).document()


def test_run_and_download_purposes_of_a_sql_room() -> None:
    authorize(SQL_SPEC, ALICE_ID, RunPurpose(op="run"))
    with pytest.raises(AccessDenied):
        authorize(SQL_SPEC, MALLORY_ID, RunPurpose(op="run"))
    document = {**SQL_SPEC_DOCUMENT, "sql": {**SQL_SPEC_DOCUMENT["sql"],
                "adhoc": {"runners": [BOB_ID], "output": "output_1"}}}  # fmt: skip
    authorize(WorkSpec.parse(document), BOB_ID, RunPurpose(op="run"))  # an ad-hoc runner
    purpose = DownloadPurpose(op="download", output="output_1", run=3)
    assert purpose.model_dump(mode="json", exclude_none=True)["run"] == 3
    with pytest.raises(ValueError):
        DownloadPurpose(op="download", output="output_1", run=0)


def receipt(**changes: Any) -> dict[str, Any]:
    document = query_receipt(
        SQL_SPEC, run=2, query={"name": "overlap", "sha256": "00" * 32, "parameters": {}},
        by=ALICE_ID, inputs={"input_1": (ALICE_ID, "11" * 32), "input_2": (BOB_ID, "22" * 32)},
        output={"id": "output_1", "format": "csv", "sha256": "33" * 32},
        rules=["input_1: aggregation, at least 10 distinct email", "input_2: list"],
        rows={"released": 4, "suppressed": 1}, privacy={}, status="succeeded",
        started=10, finished=12,
    )  # fmt: skip
    document.update(changes)
    return document


def test_query_receipt_checks() -> None:
    public = load_spki(spki(WORKER.public_key()), "worker_key")
    good = receipt()
    verify_query_receipt(good, sign(WORKER, good), worker_key=public, spec=SQL_SPEC, run=2)
    with pytest.raises(BindingError) as caught:
        verify_query_receipt(good, sign(WORKER, good), worker_key=public, spec=SQL_SPEC, run=3)
    assert caught.value.check == "receipt-run"
    forged = receipt(rows={"released": 4, "suppressed": 0})
    with pytest.raises(Exception) as failed:
        verify_query_receipt(forged, sign(WORKER, good), worker_key=public, spec=SQL_SPEC, run=2)
    assert getattr(failed.value, "check", "") == "receipt-signature"
    with pytest.raises(BindingError) as mine:
        verify_query_receipt(good, sign(WORKER, good), worker_key=public, spec=SQL_SPEC, run=2,
                             own_inputs={"input_1": "44" * 32})  # fmt: skip
    assert mine.value.check == "receipt-input-digest"


def test_budget_statement_checks() -> None:
    public = load_spki(spki(WORKER.public_key()), "worker_key")
    statement = budget_statement(SQL_SPEC, nonce="n" * 32, runs=1, privacy={})
    verify_budget(statement, sign(WORKER, statement), worker_key=public, spec=SQL_SPEC,
                  nonce="n" * 32)  # fmt: skip
    with pytest.raises(BindingError) as caught:
        verify_budget(statement, sign(WORKER, statement), worker_key=public, spec=SQL_SPEC,
                      nonce="m" * 32)  # fmt: skip
    assert caught.value.check == "nonce"
    with pytest.raises(MessageFormatError):
        verify_budget({**statement, "extra": 1}, sign(WORKER, statement), worker_key=public,
                      spec=SQL_SPEC, nonce="n" * 32)  # fmt: skip


# A query receipt and a run receipt say what they share alike, and are checked alike
# (protocol.receipt.check_run): each shared check refuses exactly its tampering.
@pytest.mark.parametrize(
    ("changes", "check_name"),
    [
        ({"work_id": "x" * 43}, "work-id"),
        ({"function": "fs://" + "x" * 43}, "function"),
        ({"inputs": {"input_1": {"by": ALICE_ID, "sha256": "11" * 32}}}, "receipt-inputs"),
        (
            {"inputs": {"input_1": {"by": BOB_ID, "sha256": "11" * 32},
                        "input_2": {"by": BOB_ID, "sha256": "22" * 32}}},
            "receipt-input-owner",
        ),
        ({"status": "great"}, "status"),
        ({"started": 13}, "receipt-times"),
        ({"started": False, "finished": True}, "receipt-times"),
    ],
)  # fmt: skip
def test_query_receipt_shares_the_run_receipts_checks(
    changes: dict[str, Any], check_name: str
) -> None:
    public = load_spki(spki(WORKER.public_key()), "worker_key")
    document = receipt(**changes)
    with pytest.raises((BindingError, MessageFormatError)) as caught:
        verify_query_receipt(
            document, sign(WORKER, document), worker_key=public, spec=SQL_SPEC, run=2
        )
    assert caught.value.check == check_name


def test_a_query_receipt_not_of_my_data_names_the_digest_it_holds() -> None:
    public = load_spki(spki(WORKER.public_key()), "worker_key")
    good = receipt()
    with pytest.raises(BindingError) as caught:
        verify_query_receipt(good, sign(WORKER, good), worker_key=public, spec=SQL_SPEC, run=2,
                             own_inputs={"input_1": "44" * 32})  # fmt: skip
    assert (caught.value.expected, caught.value.actual) == ("44" * 32, "11" * 32)
