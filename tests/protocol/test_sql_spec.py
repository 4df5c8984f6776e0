"""The SQL part of the work spec: its exact JSON (docs/protocol.md's vector), and the
purposes and receipts of a SQL room."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from cleanroom.protocol.encoding import b64u, canonical
from cleanroom.protocol.errors import AccessDenied, BindingError, MessageFormatError, RecordError
from cleanroom.protocol.handshake import SessionKeys
from cleanroom.protocol.keys import load_spki, spki
from cleanroom.protocol.query_receipt import (
    DETAIL_RECORD,
    REFUSAL_RECORD,
    budget_statement,
    check_query,
    check_result,
    detail_digest,
    open_detail,
    open_refusal,
    padded,
    query_detail,
    query_receipt,
    seal_detail,
    seal_refusal,
    sign,
    verify_budget,
    verify_query_receipt,
)
from cleanroom.protocol.records import RecordSender
from cleanroom.protocol.spec import DownloadPurpose, RunPurpose, WorkSpec, authorize
from cleanroom.sql.rules import RuleViolation
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


def detail(**changes: Any) -> dict[str, Any]:
    document = query_detail(
        run=2, salt=bytes(range(32)), sha256="00" * 32, parameters={"region": "Tokyo"},
        rows={"released": 4, "suppressed": 1},
    )  # fmt: skip
    document.update(changes)
    return document


def receipt(**changes: Any) -> dict[str, Any]:
    document = query_receipt(
        SQL_SPEC, run=2, query={"name": "overlap"},
        by=ALICE_ID, inputs={"input_1": (ALICE_ID, "11" * 32), "input_2": (BOB_ID, "22" * 32)},
        output={"id": "output_1", "format": "csv", "sha256": "33" * 32},
        rules=["input_1: aggregation, at least 10 distinct email", "input_2: list"],
        detail=detail(), privacy={}, status="succeeded", started=10, finished=12,
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
    forged = receipt(detail=detail_digest(detail(rows={"released": 4, "suppressed": 0})))
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


# ------------------------------------------------------------- the sealed detail

KEYS = SessionKeys("Xl5eXl5eXl5eXl5eXl5eXg", bytes([1]) * 32, bytes([2]) * 32, bytes(32))


def test_query_detail_vector() -> None:
    """docs/protocol.md's vector: the detail's exact bytes and the receipt's digest."""
    assert canonical(detail()) == (
        b'{"query":{"parameters":{"region":"Tokyo"},"sha256":"' + b"00" * 32 + b'"},'
        b'"rows":{"released":4,"suppressed":1},"run":2,'
        b'"salt":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",'
        b'"type":"cleanroom/query-detail/v1"}'
    )
    assert receipt()["detail"] == (
        "376f3c3e0e34b162ee2267eb1dc1ff2a20462bf487e839b46bfd01889e14c269"
    )


def test_the_receipt_relayed_in_the_clear_holds_no_parameter_digest_or_count() -> None:
    """What the Controller sees of a query run is the receipt: the query's name, but
    not its parameters, its text's digest or the rows released and suppressed."""
    relayed = canonical(receipt())
    for hidden in (b"Tokyo", b"00" * 32, b"released", b"suppressed", b"parameters"):
        assert hidden not in relayed
    assert b'"query":{"name":"overlap"}' in relayed


def test_the_runner_opens_the_detail_the_receipt_signed() -> None:
    opened = open_detail(KEYS, seal_detail(KEYS, detail()), receipt())
    assert opened == detail()


@pytest.mark.parametrize(
    "changes",
    [
        {"salt": b64u(bytes(32))},  # another salt: the one committed to is the Worker's
        {"rows": {"released": 4, "suppressed": 0}},
        {"query": {"sha256": "00" * 32, "parameters": {"region": "Osaka"}}},
        {"query": {"sha256": "11" * 32, "parameters": {"region": "Tokyo"}}},
        {"run": 3},
    ],
    ids=["salt", "rows", "parameters", "text", "run"],
)
def test_a_detail_the_receipt_does_not_commit_to_is_refused(changes: dict[str, Any]) -> None:
    """Sealed by the Worker under this session, but not what the receipt signed."""
    with pytest.raises(BindingError) as caught:
        open_detail(KEYS, seal_detail(KEYS, detail(**changes)), receipt())
    assert caught.value.check == "query-detail"
    assert caught.value.expected == receipt()["detail"]


def test_a_detail_not_sealed_in_this_session_is_refused() -> None:
    """Only the runner's session key opens it: a relay can neither forge one, take
    another session's, nor change a byte (every such frame fails authentication)."""
    frame = bytearray(seal_detail(KEYS, detail()))
    frame[-20] ^= 1
    other = SessionKeys("AAAAAAAAAAAAAAAAAAAAAA", KEYS.client_to_worker, bytes([3]) * 32,
                        bytes(32))  # fmt: skip
    for forged in (bytes(frame), seal_detail(other, detail())):
        with pytest.raises(RecordError) as caught:
            open_detail(KEYS, forged, receipt())
        assert caught.value.check == "record-authentication"
    # The runner's own direction of the session is not the Worker's either.
    mirrored = SessionKeys(KEYS.session_id, KEYS.worker_to_client, KEYS.client_to_worker,
                           bytes(32))  # fmt: skip
    with pytest.raises(RecordError):
        open_detail(KEYS, seal_detail(mirrored, detail()), receipt())


def test_a_sealed_record_that_is_not_a_detail_is_refused() -> None:
    data = canonical(detail())
    other_path = RecordSender(KEYS.worker_to_client, KEYS.session_id).seal(
        "output_1/.manifest", data, final=True
    )
    with pytest.raises(BindingError) as caught:
        open_detail(KEYS, other_path, receipt())
    assert (caught.value.check, caught.value.actual) == ("query-detail", "output_1/.manifest")
    not_final = RecordSender(KEYS.worker_to_client, KEYS.session_id).seal(
        DETAIL_RECORD, data, final=False
    )
    with pytest.raises(RecordError) as cut:
        open_detail(KEYS, not_final, receipt())
    assert cut.value.check == "record-truncated"


@pytest.mark.parametrize(
    "bad",
    [
        {"salt": "short"},
        {"salt": b64u(bytes(32)) + "="},
        {"rows": {"released": -1, "suppressed": 0}},
        {"rows": {"released": True, "suppressed": 0}},
        {"rows": {"released": 1}},
        {"query": {"sha256": "00" * 32}},
        {"query": {"sha256": 5, "parameters": {}}},
        {"type": "cleanroom/query-detail/v0"},
        {"extra": 1},
        {"run": 3},
    ],
    ids=["salt-short", "salt-padded", "rows-negative", "rows-boolean", "rows-missing",
         "query-no-parameters", "query-sha256-number", "type", "extra-field", "other-run"],
)  # fmt: skip
def test_a_malformed_detail_is_refused_even_when_committed_to(bad: dict[str, Any]) -> None:
    """A Worker's bug, not a relay's doing (the receipt commits to it): still refused."""
    document = detail(**bad)
    with pytest.raises(MessageFormatError) as caught:
        open_detail(KEYS, seal_detail(KEYS, document), receipt(detail=detail_digest(document)))
    assert caught.value.check == "query-detail"


def test_a_detail_in_other_bytes_than_committed_is_refused() -> None:
    """The commitment is to the canonical bytes: the same JSON spaced otherwise fails."""
    spaced = RecordSender(KEYS.worker_to_client, KEYS.session_id).seal(
        DETAIL_RECORD, padded(canonical(detail()).replace(b",", b", ")), final=True
    )
    with pytest.raises(BindingError) as caught:
        open_detail(KEYS, spaced, receipt())
    assert caught.value.check == "query-detail"
    # Committed to, but not canonical: two readers could parse it two ways (a repeated
    # key is the first one's to one parser, the last one's to another).
    twice = canonical(detail())[:-1] + b',"rows":{"released":0,"suppressed":0}}'
    frame = RecordSender(KEYS.worker_to_client, KEYS.session_id).seal(
        DETAIL_RECORD, padded(twice), final=True
    )
    with pytest.raises(MessageFormatError) as bad:
        open_detail(KEYS, frame, receipt(detail=hashlib.sha256(twice).hexdigest()))
    assert bad.value.check == "query-detail"


@pytest.mark.parametrize(
    "changes",
    [
        {"query": {"name": "overlap", "parameters": {"region": "Tokyo"}}},
        {"query": {"name": 5}},
        {"query": None},
        {"detail": "zz" * 32},
        {"detail": "00" * 31},
    ],
    ids=["query-parameters", "query-name-number", "query-null", "detail-not-hex", "detail-short"],
)
def test_a_receipt_that_names_more_or_a_bad_commitment_is_refused(changes: dict[str, Any]) -> None:
    public = load_spki(spki(WORKER.public_key()), "worker_key")
    document = receipt(**changes)
    with pytest.raises(MessageFormatError) as caught:
        verify_query_receipt(
            document, sign(WORKER, document), worker_key=public, spec=SQL_SPEC, run=2
        )
    assert caught.value.check == "receipt"


# ------------------------------------------------------------- the sealed refusal


def test_a_refusal_is_opened_only_in_its_session() -> None:
    """The Worker's refusal of a query quotes it: sealed under the run session's k_w2c,
    opened by the runner with every fact; refused when changed, from another session,
    or another record."""
    refusal = RuleViolation(
        "aggregation.dimension_columns", ["region"], "email", "input_1's rule: not a dimension"
    )
    opened = open_refusal(KEYS, seal_refusal(KEYS, refusal))
    assert (opened.check, opened.expected, opened.actual, opened.message) == (
        "aggregation.dimension_columns", ["region"], "email", "input_1's rule: not a dimension"
    )  # fmt: skip
    frame = bytearray(seal_refusal(KEYS, refusal))
    frame[-20] ^= 1
    other = SessionKeys("AAAAAAAAAAAAAAAAAAAAAA", KEYS.client_to_worker, bytes([3]) * 32,
                        bytes(32))  # fmt: skip
    for forged in (bytes(frame), seal_refusal(other, refusal)):
        with pytest.raises(RecordError) as caught:
            open_refusal(KEYS, forged)
        assert caught.value.check == "record-authentication"
    with pytest.raises(BindingError) as wrong:
        open_refusal(KEYS, seal_detail(KEYS, detail()))  # a detail is not a refusal
    assert wrong.value.check == "query-refusal"
    for bad in (b"[]", b'{"type":"cleanroom/query-refusal/v1","check":5,"expected":1,'
                       b'"actual":2,"message":"m"}', b"not json"):  # fmt: skip
        frame = RecordSender(KEYS.worker_to_client, KEYS.session_id).seal(
            REFUSAL_RECORD, padded(bad), final=True
        )
        with pytest.raises(MessageFormatError) as malformed:
            open_refusal(KEYS, frame)
        assert malformed.value.check == "query-refusal"


def test_the_query_refusal_vector() -> None:
    """docs/protocol.md's vectors of a sealed query refusal and a sealed detail (padded):
    each frame's length and SHA-256."""
    refusal = seal_refusal(KEYS, RuleViolation(
        "aggregation.dimension_columns", ["region"], "email", "input_1's rule: not a dimension"
    ))  # fmt: skip
    sealed_detail = seal_detail(KEYS, detail())
    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    for frame, heading in ((refusal, "Vector (`tests/protocol/test_sql_spec.py::test_the_query"),
                           (sealed_detail, "Sealed under the refusal vector's keys")):  # fmt: skip
        section = text[text.index(heading) :]
        said, block = section.split("```")[:2]
        assert f"a frame of {len(frame)} bytes" in said
        assert block.split() == [hashlib.sha256(frame).hexdigest()]


def test_a_sealed_refusal_is_as_long_whatever_refused_the_query() -> None:
    """The relay sees the sealed refusal's length: unpadded, it told which rule refused
    the query and how long what it quoted was (h10's red team): 240 bytes for a budget
    spent, 332 for a dimension the rule forbids. Every refusal up to a block is one block
    long; the runner refuses one that is not padded."""
    refusals = [
        RuleViolation("differential_privacy.budget", "<= 0 left", 0.5, "spent"),
        RuleViolation(
            "aggregation.dimension_columns", ["region", "segment"], "lifetime_spend_of_customer",
            "input_1's rule: lifetime_spend_of_customer is not a dimension",
        ),
        RuleViolation("query-parameters", {"region": "text"}, {"region": "x" * 900}, "bad"),
    ]  # fmt: skip
    frames = [seal_refusal(KEYS, refusal) for refusal in refusals]
    assert len({len(frame) for frame in frames}) == 1
    for frame, refusal in zip(frames, refusals, strict=True):
        assert open_refusal(KEYS, frame).check == refusal.check
    bare = RecordSender(KEYS.worker_to_client, KEYS.session_id).seal(
        REFUSAL_RECORD,
        canonical({"type": "cleanroom/query-refusal/v1", **refusals[0].to_json()}),
        final=True,
    )
    with pytest.raises(MessageFormatError) as caught:
        open_refusal(KEYS, bare)
    assert caught.value.check == "query-refusal"


def test_a_sealed_detail_is_as_long_whatever_rows_it_counts() -> None:
    """The detail counts the rows released and suppressed (aggregates of the data): its
    sealed length told the relay how many digits each had. Padded, one length; the
    runner refuses a detail that is not (unpadded: 347 bytes for 0 and 0 rows, 362 for
    123,456,789 and 98,765,432)."""
    counts = [(0, 0), (4, 1), (123_456_789, 98_765_432), (None, None)]
    frames = {}
    for released, suppressed in counts:
        document = detail(rows={"released": released, "suppressed": suppressed})
        frame = seal_detail(KEYS, document)
        frames[len(frame)] = frame
        assert open_detail(KEYS, frame, receipt(detail=detail_digest(document))) == document
    assert len(frames) == 1
    bare = RecordSender(KEYS.worker_to_client, KEYS.session_id).seal(
        DETAIL_RECORD, canonical(detail()), final=True
    )
    with pytest.raises(MessageFormatError) as caught:
        open_detail(KEYS, bare, receipt())
    assert caught.value.check == "query-detail"


def test_the_run_must_be_the_query_its_runner_sent() -> None:
    """The receipt's name and the detail's text digest and parameters against what the
    runner sent: each differing part alone is refused (receipt-query)."""
    sent = {"name": "overlap", "sha256": "00" * 32, "parameters": {"region": "Tokyo"}}
    check_query(receipt(), detail(), **sent)
    for changed in ({"name": None}, {"sha256": "11" * 32}, {"parameters": {"region": "Osaka"}},
                    {"parameters": {}}):  # fmt: skip
        with pytest.raises(BindingError) as caught:
            check_query(receipt(), detail(), **{**sent, **changed})
        assert caught.value.check == "receipt-query"


def test_a_result_is_downloaded_only_from_a_run_of_that_output_that_succeeded() -> None:
    assert check_result(receipt(), "output_1") == "33" * 32
    with pytest.raises(BindingError) as other:
        check_result(receipt(), "output_2")
    assert other.value.check == "receipt-outputs"
    for status in ("failed", "timeout", "memory"):
        failed = receipt(status=status, output={"id": "output_1", "format": "csv", "sha256": None})
        with pytest.raises(BindingError) as caught:
            check_result(failed, "output_1")
        assert caught.value.check == "run-status"
