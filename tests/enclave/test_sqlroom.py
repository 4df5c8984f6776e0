"""A SQL clean room's data plane in one process: schema-checked uploads, queries under
the owners' rules in the real sandbox and data runtime, DP with its sealed budget.

Needs what the sandbox needs (root, bubblewrap, util-linux) and the data runtime.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.enclave.attester import Attester, WorkerAllowList
from cleanroom.enclave.errors import RunError, SealedRefusal, SealedSchemaRefusal, UploadError
from cleanroom.enclave.room import CleanRoom, seal_bundle
from cleanroom.enclave.runner import Sandbox, installed_runtime
from cleanroom.enclave.sqlroom import SqlRoom
from cleanroom.enclave.store import SealedStore
from cleanroom.enclave.worker import WorkerEnclave
from cleanroom.errors import CheckFailed
from cleanroom.insecure.simulated import SimulatedPlatform
from cleanroom.protocol.acks import UploadRefused, open_upload_refusal, seal_upload_refusal
from cleanroom.protocol.encoding import b64u, canonical
from cleanroom.protocol.errors import AccessDenied, ProtocolError
from cleanroom.protocol.handshake import ClientHandshake, SessionKeys
from cleanroom.protocol.keys import load_spki
from cleanroom.protocol.query_receipt import (
    QUERY_RECORD,
    open_detail,
    open_refusal,
    query_request,
    verify_budget,
    verify_query_receipt,
)
from cleanroom.protocol.records import RecordReceiver, RecordSender
from cleanroom.protocol.spec import DownloadPurpose, RunPurpose, UploadPurpose, WorkSpec
from cleanroom.protocol.status import verify_status
from cleanroom.sql import engine_bundle, engine_function_id
from cleanroom.sql.privacy import release
from cleanroom.sql.rules import plan_query
from cleanroom.tee.measure import measure
from tests.enclave.test_room import upload_frames
from tests.protocol.fixtures import ALICE, BOB, SPEC_DOCUMENT
from tests.sandbox import confined
from tests.sql.fixtures import SCHEMAS, alice_csv, bob_csv, sql_document, sql_spec


@pytest.fixture(scope="module")
def confinement() -> Iterator[Sandbox]:
    with confined() as sandbox:
        yield sandbox


def make_room(
    tmp_path: Path, confinement: Sandbox, spec: WorkSpec, kind: type[CleanRoom] = SqlRoom
) -> SqlRoom:
    try:
        runtime = installed_runtime("python3.11-data")
    except RunError as error:
        pytest.skip(f"the data runtime is not installed: {error}")
    platform = SimulatedPlatform.init(tmp_path / "platform", now=int(time.time()))
    attester_image, worker_image = measure("attester"), measure("worker")
    attester = Attester(
        platform.enclave(attester_image.identity()),
        WorkerAllowList.from_manifest_config(attester_image.manifest["config"]),
    )
    store = SealedStore(tmp_path / "worker" / "sealed")
    sealed_id = seal_bundle(store, io.BytesIO(engine_bundle()))
    worker = WorkerEnclave(platform.enclave(worker_image.identity()), spec, sealed_id)
    admission = attester.admit(*worker.admission_request(attester.target_info()))
    worker.complete_admission(
        admission.report.to_bytes(), attester_mr_signer=worker_image.mr_signer
    )
    room = kind(
        worker, store, sandbox=confinement, runtime=runtime,
        scratch_root=tmp_path / "worker" / "run",
    )  # fmt: skip
    assert isinstance(room, SqlRoom)
    return room


def session(room: SqlRoom, user: ec.EllipticCurvePrivateKey, purpose: Any) -> SessionKeys:
    client = ClientHandshake(
        user_key=user,
        work_id=room.worker.spec.work_id,
        worker_id=room.worker.worker_id,
        worker_key=load_spki(room.worker.worker_key_spki, "worker_key"),
        quote_sha256=bytes(32),
        purpose=purpose,
    )
    return client.finish(*room.open_session(client.init, client.init_signature))


def upload(
    room: SqlRoom,
    user: ec.EllipticCurvePrivateKey,
    input_id: str,
    data: bytes,
    name: str = "data.csv",
) -> dict[str, Any]:
    keys = session(room, user, UploadPurpose(op="upload", input=input_id))
    stream = room.begin_upload(keys.session_id)
    for frame in upload_frames(keys, input_id, {name: data}):
        stream.feed(frame)
    try:
        stream.finish()
    except SealedSchemaRefusal as refusal:
        # What the relay sees says nothing of the data; the uploader opens where.
        assert set(refusal.to_json()) == {"check", "expected", "actual", "message", "sealed"}
        raise open_upload_refusal(keys, refusal.sealed, input_id=input_id) from refusal
    receiver = RecordReceiver(keys.worker_to_client, keys.session_id)
    path, _index, final, body = receiver.open(stream.acknowledgement())
    assert path == f"{input_id}/.ack" and final
    ack: dict[str, Any] = json.loads(body)
    return ack


def query(
    room: SqlRoom,
    user: ec.EllipticCurvePrivateKey,
    *,
    name: str | None = None,
    sql: str | None = None,
    parameters: dict[str, Any] | None = None,
    epsilon: float | None = None,
) -> tuple[dict[str, Any], dict[str, Any], list[list[str]]]:
    """Run one query; its verified receipt, the detail sealed to its runner, and the
    rows its recipient downloads."""
    keys = session(room, user, RunPurpose(op="run"))
    request = query_request(name=name, parameters=parameters, sql=sql, epsilon=epsilon)
    frame = RecordSender(keys.client_to_worker, keys.session_id).seal(
        QUERY_RECORD, canonical(request), final=True
    )
    try:
        number = room.begin_query(keys.session_id, frame)
    except SealedRefusal as refusal:
        raise open_refusal(keys, refusal.sealed) from None  # as the runner's client does
    room.execute_query(number)
    receipt, signature, sealed = room.run_receipt(number)
    verify_query_receipt(
        receipt, signature, worker_key=load_spki(room.worker.worker_key_spki, "worker_key"),
        spec=room.worker.spec, run=number,
    )  # fmt: skip
    detail = open_detail(keys, sealed, receipt)
    if receipt["status"] != "succeeded":
        return receipt, detail, [[str(room.runs[number].detail)]]
    keys = session(room, ALICE, DownloadPurpose(op="download", output="output_1", run=number))
    receiver = RecordReceiver(keys.worker_to_client, keys.session_id)
    received = {p: d for p, _i, _f, d in map(receiver.open, room.download(keys.session_id))}
    receiver.close()
    manifest = received.pop("output_1/.manifest")
    assert hashlib.sha256(manifest).hexdigest() == receipt["output"]["sha256"]
    rows = list(csv.reader(io.StringIO(received["output_1/data.csv"].decode())))
    return receipt, detail, rows


def test_each_kind_of_room_refuses_the_other_kinds_spec(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """A SQL spec never reaches the function room's data path (no rules there)."""
    with pytest.raises(RunError) as caught:
        make_room(tmp_path / "sql", confinement, sql_spec(), kind=CleanRoom)
    assert (caught.value.check, caught.value.actual) == ("sql-runtime", "sql")
    function_spec = WorkSpec.parse({**SPEC_DOCUMENT, "function": engine_function_id()})
    with pytest.raises(RunError) as caught:
        make_room(tmp_path / "function", confinement, function_spec)
    assert (caught.value.check, caught.value.expected) == ("sql-runtime", "runtime sql")


@pytest.fixture
def room(tmp_path: Path, confinement: Sandbox) -> SqlRoom:
    # input_1's owner reports how many groups fell under its threshold: counted below.
    room = make_room(tmp_path, confinement, sql_spec(report_suppressed=True))
    assert upload(room, ALICE, "input_1", alice_csv())["rows"] == 40
    upload(room, BOB, "input_2", bob_csv())
    return room


def test_a_named_query_releases_only_rows_over_the_threshold(room: SqlRoom) -> None:
    receipt, detail, rows = query(room, ALICE, name="by_segment", parameters={"skip": "none"})
    assert rows == [["region", "segment", "customers"], ["east", "business", "15"],
                    ["east", "retail", "15"]]  # fmt: skip
    # north has 2 and 2, tiny has 1: three rows suppressed and counted.
    assert detail["rows"] == {"released": 2, "suppressed": 3}
    assert receipt["query"] == {"name": "by_segment"}
    assert (
        detail["query"]["sha256"]
        == hashlib.sha256(
            room.worker.spec.sql.queries["by_segment"].text.encode()  # type: ignore[union-attr]
        ).hexdigest()
    )
    assert detail["query"]["parameters"] == {"skip": "none"}
    assert receipt["rules"] == [
        "input_1: aggregation, at least 3 distinct email, groups under it counted for the runner",
        "input_2: list",
    ]
    assert receipt["privacy"] == {}


def test_grouping_by_a_high_cardinality_column_is_suppressed(room: SqlRoom) -> None:
    _receipt, detail, rows = query(
        room, ALICE, sql="SELECT zip, COUNT(*) AS n FROM input_1 GROUP BY zip"
    )
    assert rows == [["zip", "n"]]  # every zip code holds one customer
    assert detail["rows"] == {"released": 0, "suppressed": 40}


def test_what_the_controller_relays_of_a_query_names_no_parameter_digest_or_count(
    room: SqlRoom,
) -> None:
    """The Worker's answer for a query run's receipt is what the Controller relays (and
    can ask for itself): the signed receipt and the detail sealed to the runner. Neither
    may show the analyst's parameters, the digest of the query's text (an ad-hoc
    query's, confirmed by a guess) or the rows released and suppressed (about the
    data); the runner alone opens them, and they are the ones the receipt commits to."""
    text = "SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region"
    for name, sql, parameters in (("by_segment", None, {"skip": "zzretailzz"}),
                                  (None, text, None)):  # fmt: skip
        receipt, detail, _rows = query(room, ALICE, name=name, sql=sql, parameters=parameters)
        document, signature, sealed = room.run_receipt(receipt["run"])
        relayed = json.dumps(
            {"receipt": document, "signature": b64u(signature), "detail": b64u(sealed)}
        ).encode()
        hidden = [detail["query"]["sha256"], "released", "suppressed", "parameters", "skip",
                  "zzretailzz", "sha256\": \"" + detail["query"]["sha256"]]  # fmt: skip
        assert not [h for h in hidden if h.encode() in relayed], name
        assert canonical(detail) not in sealed and b"zzretailzz" not in sealed
        assert detail["rows"]["released"] + (detail["rows"]["suppressed"] or 0) > 0
        assert document["query"] == {"name": name}


def test_raw_rows_are_refused_with_the_rule_named(room: SqlRoom) -> None:
    with pytest.raises(CheckFailed) as caught:
        query(room, ALICE, sql="SELECT email, spend FROM input_1")
    assert caught.value.check == "aggregation.dimension_columns"
    assert not room.runs  # nothing ran


def test_a_refusal_quotes_nothing_of_the_query_in_the_clear(room: SqlRoom) -> None:
    """A rule's refusal quotes the query (the column it may not show, the parameter of
    the wrong type). The Worker's answer, which the Controller relays, says only that it
    refused; the reasons are sealed to the runner's session, which opens them."""
    keys = session(room, ALICE, RunPurpose(op="run"))
    request = query_request(name=None, sql="SELECT email, spend FROM input_1 WHERE zip = 'zz9'")
    frame = RecordSender(keys.client_to_worker, keys.session_id).seal(
        QUERY_RECORD, canonical(request), final=True
    )
    with pytest.raises(SealedRefusal) as caught:
        room.begin_query(keys.session_id, frame)
    document = caught.value.to_json()
    # The sealed refusal is ciphertext in base64, which spells any short word by chance
    # (zz9 about once in 50): only what is not that is looked at.
    assert document.pop("sealed") == b64u(caught.value.sealed)
    relayed = json.dumps(document)
    assert caught.value.check == "query-refused"
    assert not [word for word in ("email", "spend", "zz9", "dimension") if word in relayed]
    opened = open_refusal(keys, caught.value.sealed)
    assert opened.check == "aggregation.dimension_columns" and "email" in str(opened)
    assert not room.runs  # nothing ran


def test_a_query_frame_not_sealed_in_its_session_leaves_the_session_to_the_runner(
    room: SqlRoom,
) -> None:
    """The Controller races a made-up frame (or another session's) onto the runner's
    query session: refused, and the runner's own query still runs in that session (it
    used to be burnt: session-used)."""
    keys = session(room, ALICE, RunPurpose(op="run"))
    other = session(room, ALICE, RunPurpose(op="run"))
    request = canonical(query_request(name="by_segment", parameters={"skip": "none"}))
    for name, forged, check in [
        ("zeros", bytes(120), "record-frame"),
        ("another session's", RecordSender(other.client_to_worker, other.session_id).seal(
            QUERY_RECORD, request, final=True), "record-authentication"),
    ]:  # fmt: skip
        with pytest.raises(ProtocolError) as caught:
            room.begin_query(keys.session_id, forged)
        assert caught.value.check == check, (
            f"{name} frame: expected {check}, got {caught.value.check}: {caught.value}"
        )
    frame = RecordSender(keys.client_to_worker, keys.session_id).seal(
        QUERY_RECORD, request, final=True
    )
    number = room.begin_query(keys.session_id, frame)
    assert number == 1, f"expected the runner's query to run as run 1, got {number}"


def test_a_download_asked_before_its_query_ends_leaves_the_session_to_ask_again(
    room: SqlRoom,
) -> None:
    keys = session(room, ALICE, RunPurpose(op="run"))
    request = canonical(query_request(name="by_segment", parameters={"skip": "none"}))
    frame = RecordSender(keys.client_to_worker, keys.session_id).seal(
        QUERY_RECORD, request, final=True
    )
    number = room.begin_query(keys.session_id, frame)
    early = session(room, ALICE, DownloadPurpose(op="download", output="output_1", run=number))
    with pytest.raises(RunError) as caught:
        room.download(early.session_id)
    assert caught.value.check == "run-state"
    room.execute_query(number)
    receiver = RecordReceiver(early.worker_to_client, early.session_id)
    received = {p: d for p, *_, d in map(receiver.open, room.download(early.session_id))}
    assert "output_1/data.csv" in received


def test_ad_hoc_queries_only_from_their_runners(room: SqlRoom) -> None:
    with pytest.raises(AccessDenied) as caught:
        query(room, BOB, sql="SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region")
    assert caught.value.check in ("runner", "adhoc-runner")


def test_a_parameter_of_the_wrong_type_is_refused(room: SqlRoom) -> None:
    with pytest.raises(CheckFailed) as caught:
        query(room, ALICE, name="by_segment", parameters={"skip": 3})
    assert caught.value.check == "sql-parameter"


def test_inputs_freeze_at_the_first_query(room: SqlRoom, tmp_path: Path) -> None:
    first = upload(room, BOB, "input_2", bob_csv())  # a retry before: acknowledged again
    query(room, ALICE, sql="SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region")
    # A retry of exactly the same input (its acknowledgement was lost) is told it is
    # there, with the rows counted when it arrived; nothing is stored again.
    again = upload(room, BOB, "input_2", bob_csv())
    assert again["stored"] == "already" and again["rows"] == first["rows"]
    with pytest.raises(UploadError) as caught:
        upload(room, BOB, "input_2", bob_csv() + b"z@x,west,9,1.0\n")
    assert caught.value.check == "input-complete"


def test_the_signed_status_of_a_room_that_answered_a_query_says_querying(room: SqlRoom) -> None:
    """A SQL room's state after its first query is ``querying`` (inputs frozen, queries
    run): the signed status could not be built for it, so asking for it failed."""
    nonce = bytes(range(32))
    key = load_spki(room.worker.worker_key_spki, "worker_key")
    query(room, ALICE, sql="SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region")
    status = verify_status(*room.status(nonce), worker_key=key, spec=room.worker.spec,
                           nonce=nonce)  # fmt: skip
    assert (status["state"], status["run"], status["outputs"]) == ("querying", None, [])


@pytest.mark.parametrize(
    ("data", "check", "where"),
    [
        (
            b"email,region,zip,spend\na@x,east,1,2.5\nb@x,east,2,lots\n",
            "schema-value",
            ("spend", 2),
        ),
        (b"email,region,zip,spend\na@x,east,1,2.5\n,east,2,3\n", "schema-null", ("email", 2)),
        (b"email,area,zip,spend\na@x,east,1,2.5\n", "schema-header", (None, 0)),
        (b"email,region,zip,spend\na@x,east,1,2.5\nb@x,east\n", "schema-row", (None, 2)),
        # A blank line is a row, as DuckDB numbers a short row: a bad value or an empty
        # one after it was numbered one row early (2), a short row was not (3).
        (
            b"email,region,zip,spend\n\na@x,east,1,2.5\nb@x,east,2,lots\n",
            "schema-value",
            ("spend", 3),
        ),
        (b"email,region,zip,spend\na@x,east,1,2.5\n\n,east,2,3\n", "schema-null", ("email", 3)),
        (b"email,region,zip,spend\na@x,east,1,2.5\n\nb@x,east\n", "schema-row", (None, 3)),
        # A line break inside quotes is not a row.
        (
            b'email,region,zip,spend\na@x,"ea\nst",1,2.5\nb@x,east,2,2\nc@x,east,3,lots\n',
            "schema-value",
            ("spend", 3),
        ),
    ],
)
def test_an_upload_that_breaks_its_schema_is_refused_naming_column_and_row(
    tmp_path: Path, confinement: Sandbox, data: bytes, check: str, where: tuple[Any, int]
) -> None:
    room = make_room(tmp_path, confinement, sql_spec())
    with pytest.raises(UploadRefused) as caught:
        upload(room, ALICE, "input_1", data, "customers_tokyo.csv")
    error = caught.value  # as the uploader opens it
    assert error.check == check
    assert isinstance(error.actual, dict)
    if where[0] is not None:
        assert error.actual["column"] == where[0]
    assert error.actual["row"] == where[1]
    # The file by its place (the uploader names it), never by its name.
    assert (error.actual["file"], error.actual["files"]) == (1, 1)
    refusal = json.dumps(error.to_json()).encode()
    assert b"lots" not in refusal  # never a value, even to the uploader
    assert b"tokyo" not in refusal
    # What the Controller relays (and the Worker logs) says only that the schema refused
    # it: not which check, column, row or file (they are facts of the uploader's data).
    relayed = caught.value.__cause__
    assert isinstance(relayed, SealedSchemaRefusal) and relayed.check == "schema-refused"
    # Nor by its length: every refusal here is as long as the shortest one (h10).
    shortest = seal_upload_refusal(
        SessionKeys("A" * 22, bytes(32), bytes(32), bytes(32)),
        "input_1",
        CheckFailed("c", None, None, ""),
    )
    assert len(relayed.sealed) == len(shortest)
    clear = json.dumps({k: v for k, v in relayed.to_json().items() if k != "sealed"})
    for fact in (
        check,
        "row",
        "file",
        "input_1",
        *(c["name"] for c in SCHEMAS["input_1"]["columns"]),
    ):
        assert fact not in clear, fact
    # Nothing was kept: the owner can upload the right file.
    assert upload(room, ALICE, "input_1", alice_csv())["rows"] == 40


def parquet(tmp_path: Path, select: str) -> bytes:
    """A Parquet file of ``select``, written by DuckDB in the data runtime."""
    runtime = installed_runtime("python3.11-data")
    path = tmp_path / f"{hashlib.sha256(select.encode()).hexdigest()[:12]}.parquet"
    copy = f"COPY ({select}) TO '{path}' (FORMAT parquet)"
    subprocess.run(
        [str(runtime.interpreter), "-I", "-c", f"import duckdb; duckdb.sql({copy!r})"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return path.read_bytes()


PARQUET_ROWS = (
    "SELECT 'c' || i || '@x' AS email, 'east' AS region, CAST(i AS VARCHAR) AS zip, "
    "CAST(i AS DOUBLE) AS spend FROM range(5) t(i)"
)


@pytest.mark.parametrize(
    ("select", "check", "column"),
    [
        (PARQUET_ROWS.replace("CAST(i AS DOUBLE) AS spend", "'lots' AS spend"),
         "schema-type", "spend"),
        (PARQUET_ROWS.replace("AS region", "AS area"), "schema-header", None),
        (PARQUET_ROWS.replace("'c' || i || '@x' AS email",
                              "CASE WHEN i = 3 THEN NULL ELSE 'c' || i END AS email"),
         "schema-null", "email"),
    ],
)  # fmt: skip
def test_a_parquet_upload_is_checked_against_its_schema(
    tmp_path: Path, confinement: Sandbox, select: str, check: str, column: str | None
) -> None:
    schemas = copy.deepcopy(SCHEMAS)
    schemas["input_1"]["format"] = "parquet"
    room = make_room(tmp_path, confinement, sql_spec(schemas=schemas))
    with pytest.raises(UploadRefused) as caught:
        upload(room, ALICE, "input_1", parquet(tmp_path, select), "data.parquet")
    error = caught.value
    assert error.check == check
    assert isinstance(error.actual, dict)
    assert error.actual["column"] == column
    if check == "schema-null":
        assert error.actual["row"] == 4  # the fourth row (i = 3)
    assert b"lots" not in json.dumps(error.to_json()).encode()  # never a value
    with pytest.raises(UploadRefused) as caught:
        upload(room, ALICE, "input_1", alice_csv(), "data.parquet")
    assert caught.value.check == "schema-format"
    ack = upload(room, ALICE, "input_1", parquet(tmp_path, PARQUET_ROWS), "data.parquet")
    assert ack["rows"] == 5


def test_dp_spends_the_budget_and_refuses_when_it_is_gone(
    tmp_path: Path, confinement: Sandbox
) -> None:
    room = make_room(tmp_path, confinement, sql_spec(dp=True))
    upload(room, ALICE, "input_1", alice_csv())
    upload(room, BOB, "input_2", bob_csv())
    text = "SELECT region, COUNT(*) AS n, AVG(spend) AS mean FROM input_1 GROUP BY region"
    first, first_detail, rows = query(room, ALICE, sql=text)
    assert first["privacy"]["input_1"] == {"spent": 1.0, "left": 1.0, "budget": 2.0}
    assert first_detail["rows"]["suppressed"] is None  # not private: not reported
    assert rows[0] == ["region", "n", "mean"]
    # A differencing pair: the second query costs ε too, and the budget ends there.
    second, _detail, _rows = query(
        room, ALICE, sql=text.replace("GROUP BY", "WHERE region <> 'tiny' GROUP BY")
    )
    assert second["privacy"]["input_1"]["left"] == 0.0
    with pytest.raises(CheckFailed) as caught:
        query(room, ALICE, sql=text, epsilon=0.5)
    assert caught.value.check == "differential_privacy.budget"
    statement, signature = room.budget("n" * 32)
    verify_budget(
        statement, signature, worker_key=load_spki(room.worker.worker_key_spki, "worker_key"),
        spec=room.worker.spec, nonce="n" * 32,
    )  # fmt: skip
    assert statement["privacy"]["input_1"]["spent"] == 2.0


def test_an_epsilon_too_small_to_calibrate_is_refused_before_it_is_charged(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """The noise is calibrated when the query is checked, from its plan alone (h29): a
    GROUP BY at ε 1e-12 (no threshold of δ fits) or a total at ε 5e-324 (a share of 0:
    ZeroDivisionError) was charged, ran on the data, and failed at the release. Now
    refused, sealed to the runner, nothing charged and nothing run."""
    room = make_room(tmp_path, confinement, sql_spec(dp=True))
    upload(room, ALICE, "input_1", alice_csv())
    upload(room, BOB, "input_2", bob_csv())
    for text, epsilon in (
        ("SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region", 1e-12),
        ("SELECT COUNT(*) AS n, SUM(spend) AS s FROM input_1", 5e-324),
    ):
        with pytest.raises(CheckFailed) as caught:
            query(room, ALICE, sql=text, epsilon=epsilon)
        assert caught.value.check == "dp-calibration", text
    assert room.runs == {}
    assert room.ledger.status()["input_1"] == {"spent": 0.0, "left": 2.0, "budget": 2.0}
    receipt, _detail, _rows = query(room, ALICE, sql="SELECT COUNT(*) AS n FROM input_1")
    assert receipt["status"] == "succeeded"


def test_a_ledger_that_cannot_be_verified_stops_every_query(
    tmp_path: Path, confinement: Sandbox
) -> None:
    room = make_room(tmp_path, confinement, sql_spec(dp=True))
    upload(room, ALICE, "input_1", alice_csv())
    upload(room, BOB, "input_2", bob_csv())
    text = "SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region"
    query(room, ALICE, sql=text, epsilon=0.5)
    # Roll the ledger back on disk: the sealed file of its last entry, replaced by the first.
    first = room._store._files["_budget/00000000"][1]
    last = room._store._files["_budget/00000001"][1]
    last.write_bytes(first.read_bytes())
    with pytest.raises(CheckFailed) as caught:  # sealed to the runner, as every refusal
        query(room, ALICE, sql=text, epsilon=0.5)
    assert caught.value.check == "budget-ledger"


def customers_csv(people: int) -> bytes:
    """``people`` customers of region east, each alone in a zip code of its own."""
    lines = ["email,region,zip,spend"] + [f"p{n}@x,east,{10000 + n},1.5" for n in range(people)]
    return ("\n".join(lines) + "\n").encode()


def test_whether_a_dp_query_fits_is_decided_before_it_runs_not_by_its_groups(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """The DP red team's reproduction (F4), at a smaller scale: one group per person,
    keys made long by a literal. The exact groups of 2,199 people take 626,715 bytes,
    of 2,200 people 627,000; the Worker refused more than its limit (64 MiB; in the red
    team's test 626,800) after the query had run and ε was charged, so the target alone
    in her zip decided whether the run failed. Now the Worker bounds the groups before
    the query runs, from the inputs' rows times max_contributions, and refuses then, no
    ε spent: with her and without her, the same answer (here with 1 MiB of disk: 512
    KiB of groups). Under the real limit both run."""
    pad = "x" * 30_480
    key = f"CONCAT(zip, '{pad}')"
    text = f"SELECT {key} AS k, COUNT(*) AS n FROM input_1 WHERE region <> 'none' GROUP BY {key}"  # noqa: S608

    def outcomes(name: str, spec: WorkSpec) -> list[str]:
        seen = []
        for people in (2_199, 2_200):  # without the target, with her
            room = make_room(tmp_path / f"{name}-{people}", confinement, spec)
            upload(room, ALICE, "input_1", customers_csv(people))
            upload(room, BOB, "input_2", bob_csv())
            try:
                receipt, _detail, _rows = query(room, ALICE, sql=text, epsilon=1e-6)
            except CheckFailed as refusal:
                assert set(room.ledger.spent().values()) == {0.0}, "refused before any ε"
                seen.append(refusal.check)
                assert "more than" in str(refusal.actual), refusal
                continue
            seen.append(receipt["status"])
        return seen

    assert outcomes("default", sql_spec(dp=True)) == ["succeeded", "succeeded"]
    # The run's disk holds the groups (half of it for them): refused up front.
    small_disk = WorkSpec.parse({**sql_document(dp=True), "resources": {"disk_mib": 1}})
    assert outcomes("disk", small_disk) == ["dp-groups", "dp-groups"]


@pytest.mark.parametrize(
    ("disk_mib", "memory_mib", "capacity"),
    [(1, 2048, 1 << 19), (3, 2048, 1 << 20), (1024, 2048, 512 << 20), (1 << 20, 2048, 512 << 20),
     (1 << 20, 1 << 20, 256 << 30), (4096, 1 << 20, 2 << 30), (1024, 100, 16 << 20)],
)  # fmt: skip
def test_the_groups_a_dp_query_may_make_are_a_power_of_two_of_bytes(
    tmp_path: Path, confinement: Sandbox, disk_mib: int, memory_mib: int, capacity: int
) -> None:
    """Half the run's disk and a quarter of its memory, down to a power of two (no
    longer at most the 64 MiB the Worker held in memory): the bound of a query's groups
    is its inputs' rows times max_contributions times a power of two, so a refusal says
    whether that product passes a power of two, and a spec's disk_mib of 3 cannot set
    the limit at a row count of its choosing."""
    resources = {"disk_mib": disk_mib, "memory_mib": memory_mib}
    spec = WorkSpec.parse({**sql_document(dp=True), "resources": resources})
    assert make_room(tmp_path, confinement, spec)._dp_capacity() == capacity


def regions_csv(people: int, regions: int, first: int = 0) -> bytes:
    """``people`` customers from number ``first``, in ``regions`` regions (r0, r1, …) by
    turns, zip codes unique."""
    lines = ["email,region,zip,spend"] + [
        f"p{n}@x,r{n % regions},{100000 + n},1.5" for n in range(first, first + people)
    ]
    return ("\n".join(lines) + "\n").encode()


def test_a_dp_group_by_over_a_large_input_runs_in_a_room_of_default_disk(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """The Worker read all the exact groups into memory, so it took at most 64 MiB of
    them: with one key and a count (512 bytes a group in the bound), a DP GROUP BY over
    more than 131,072 rows was refused, whatever its real number of groups. The Worker
    now releases them chunk by chunk; half the run's disk (512 MiB by default) holds
    them: 200,000 customers by region run, and release what the whole release would."""
    room = make_room(tmp_path, confinement, sql_spec(dp=True))
    keys = session(room, ALICE, UploadPurpose(op="upload", input="input_1"))
    stream = room.begin_upload(keys.session_id)
    files = {
        f"part-{i}.csv": regions_csv(40_000, 4, 40_000 * i) for i in range(5)
    }  # 1 MiB a record
    for frame in upload_frames(keys, "input_1", files):
        stream.feed(frame)
    stream.finish()
    assert room.rows["input_1"] == 200_000
    upload(room, BOB, "input_2", bob_csv())
    text = "SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region"
    receipt, _detail, rows = query(room, ALICE, sql=text)
    assert receipt["status"] == "succeeded", rows
    assert rows[0] == ["region", "n"]
    assert [row[0] for row in rows[1:]] == ["r0", "r1", "r2", "r3"]  # ordered by key
    assert all(abs(int(row[1]) - 50_000) < 50 for row in rows[1:]), rows  # scale 1
    # The same groups as the release of all of them at once, from the exact rows.
    plan = room.runs[1].plan
    assert plan.dp is not None
    exact = [{"__cr_g0": f"r{i}", "__cr_n": 50_000} for i in range(4)]
    assert [row[0] for row in release(plan.dp, exact).rows] == [row[0] for row in rows[1:]]


def test_dp_groups_at_the_edge_of_a_chunk_are_released_once(
    tmp_path: Path, confinement: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of one and of two groups (the line bound is 512 bytes): every group once,
    in the order of its keys, whichever chunk it falls in; and keys the engine cuts
    alike (200 characters of "é" before the zip code: distinct keys of 205 characters in
    DuckDB, each cut to 256 bytes of JSON text, 128 é) are one group, added up by the
    engine, not one per chunk."""
    room = make_room(tmp_path, confinement, sql_spec(dp=True))
    upload(room, ALICE, "input_1", regions_csv(3_000, 3))
    upload(room, BOB, "input_2", bob_csv())
    pad = "\u00e9" * 200
    cut = f"CONCAT('{pad}', zip)"
    texts = [
        "SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region",
        f"SELECT {cut} AS k, region, COUNT(*) AS n FROM input_1 GROUP BY {cut}, region",  # noqa: S608
    ]
    for chunk in (512, 1024):
        monkeypatch.setattr("cleanroom.enclave.sqlroom.DP_CHUNK_BYTES", chunk)
        _receipt, _detail, rows = query(room, ALICE, sql=texts[0], epsilon=0.05)
        assert [row[0] for row in rows[1:]] == ["r0", "r1", "r2"], rows
        assert all(abs(int(row[1]) - 1_000) < 600 for row in rows[1:]), rows
        _receipt, _detail, rows = query(room, ALICE, sql=texts[1], epsilon=0.05)
        assert [row[:2] for row in rows[1:]] == [["\u00e9" * 128, f"r{i}"] for i in range(3)]
        assert all(abs(int(row[2]) - 1_000) < 600 for row in rows[1:]), rows


def test_the_workers_memory_does_not_grow_with_the_dp_groups(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """The Worker held every exact group (a list of dicts, then a dict of them all) and
    the whole CSV it released: its memory grew with the number of groups. Now it reads,
    releases and writes them chunk by chunk: the peak of its Python allocations for
    200,000 groups is that of 20,000 (tracemalloc; its peak RSS, rt5-dp's write-up, for
    50,000 and 500,000: 96 and 100 MiB, where main's took 153 and 835)."""
    import tracemalloc

    room = make_room(tmp_path, confinement, sql_spec(dp=True))
    room.rows = {"input_1": 1_000_000, "input_2": 1_000_000}
    text = "SELECT zip, COUNT(*) AS n FROM input_1 GROUP BY zip"
    plan = plan_query(room.worker.spec, name=None, text=text)
    assert plan.dp is not None
    peaks = {}
    for groups in (20_000, 200_000):
        writer = room._store.create(f"output_1/run-{groups}/rows.jsonl")
        for start in range(0, groups, 10_000):
            writer.write(b"".join(
                b'{"__cr_g0": "%09d", "__cr_n": %d}\n' % (n, 1000 if n % 1000 == 0 else 1)
                for n in range(start, min(start + 10_000, groups))
            ))  # fmt: skip
        stored = writer.close()
        room._store.record(stored)
        tracemalloc.start()
        try:
            released, count = room._dp_release(plan, stored, groups)
            peaks[groups] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # The groups of 1,000 (and, rarely, one of 1 past the threshold: e^-13 each).
        assert groups // 1000 <= count <= groups // 1000 + 3, count
        released_rows = b"".join(room._store.read(released.name)).decode().splitlines()
        assert released_rows[0] == "zip,n" and len(released_rows) == count + 1
    print(peaks)
    assert peaks[200_000] < 1.5 * peaks[20_000] and peaks[200_000] < 32 << 20, peaks


def test_a_dp_release_that_fails_midway_leaves_no_output(
    tmp_path: Path, confinement: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Worker writes the released CSV as it goes: a chunk refused after others were
    written (a line of the engine's over its bound) leaves no part of it behind."""
    monkeypatch.setattr("cleanroom.enclave.sqlroom.DP_CHUNK_BYTES", 512)
    room = make_room(tmp_path, confinement, sql_spec(dp=True))
    room.rows = {"input_1": 1_000, "input_2": 1_000}
    text = "SELECT zip, COUNT(*) AS n FROM input_1 GROUP BY zip"
    plan = plan_query(room.worker.spec, name=None, text=text)
    writer = room._store.create("output_1/run-1/rows.jsonl")
    groups = b"".join(b'{"__cr_g0": "a%d", "__cr_n": 1000}\n' % n for n in range(3))
    writer.write(groups + b'{"__cr_g0": "' + b"b" * 600)
    stored = writer.close()
    room._store.record(stored)
    with pytest.raises(RunError) as caught:
        room._dp_release(plan, stored, 1)
    assert caught.value.check == "dp-groups", caught.value
    assert room._store.objects("output_1") == [stored]
    kept = {path.name for path in (tmp_path / "worker" / "sealed").glob("*.sealed")}
    assert "output_1/run-1/data.csv" not in room._store._files
    assert kept == {path.name for _number, path in room._store._files.values()}, kept
