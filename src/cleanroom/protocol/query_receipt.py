"""Receipts of a SQL room: one per query run, and the privacy budget on request.

A query receipt names what ran (the query's name, who sent it), on which inputs,
under which rules, what was released (the output's salted manifest digest) and
the ε each differential privacy owner spent on it and has left. A budget
statement answers a client's nonce with every owner's ε spent and left. Both are
signed with the Worker's attested key ``W``.

The receipt is relayed in the clear, so what would tell the Controller about the
data or the analyst's question is not in it but in the run's **detail**: the
SHA-256 of the query's text, its parameters and the rows released and suppressed,
with a fresh 32-byte salt. The receipt commits to the detail by
``detail = hex(SHA-256(JCS(detail)))``; the detail itself travels sealed to the
runner, one record under ``k_w2c`` of the run session that sent the query (as an
upload's acknowledgement does). The runner can show it, and its salt, to anyone
who holds the signed receipt.

The relay sees a sealed record's length, so the detail and a query's refusal are
sealed padded with spaces to whole :data:`~cleanroom.protocol.acks.REFUSAL_BLOCK` s,
as an upload's refusal is: unpadded, a detail's length told the digits of the rows
released and suppressed, and a refusal's which rule refused and how long what it
quoted of the query was. The runner refuses either unpadded.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.errors import CheckFailed
from cleanroom.protocol import keys
from cleanroom.protocol.acks import REFUSAL_BLOCK
from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.errors import BindingError, MessageFormatError, ProtocolError
from cleanroom.protocol.handshake import SessionKeys
from cleanroom.protocol.manifest import check_salt, encoded_salt
from cleanroom.protocol.receipt import RUN_STATUSES, check_run, field_names
from cleanroom.protocol.records import RecordSender, open_single
from cleanroom.protocol.spec import WorkSpec

QUERY_RECEIPT_TYPE = "cleanroom/query-receipt/v2"
QUERY_DETAIL_TYPE = "cleanroom/query-detail/v1"
DETAIL_RECORD = "run/query.detail"  # the record path of the sealed detail (Worker -> runner)
BUDGET_TYPE = "cleanroom/privacy-budget/v1"
_HEX64 = re.compile(r"[0-9a-f]{64}")
QUERY_REQUEST_TYPE = "cleanroom/query-request/v1"
QUERY_RECORD = "run/query"  # the record path of the encrypted request in a run session
QUERY_RECEIPT_FIELDS = frozenset(
    {"type", "work_id", "function", "run", "query", "by", "inputs", "output", "rules", "detail",
     "privacy", "status", "started", "finished"}
)  # fmt: skip
QUERY_DETAIL_FIELDS = frozenset({"type", "run", "salt", "query", "rows"})
QUERY_REFUSAL_TYPE = "cleanroom/query-refusal/v1"
REFUSAL_RECORD = "run/query.refusal"  # a refused query's reasons (Worker -> runner)
ROW_COUNTS = ("released", "suppressed")


def query_sha256(text: str) -> str:
    """The digest of a query's text that the detail names: hex(SHA-256(UTF-8 text))."""
    return hashlib.sha256(text.encode()).hexdigest()


def query_request(
    *,
    name: str | None,
    parameters: Mapping[str, Any] | None = None,
    sql: str | None = None,
    epsilon: float | None = None,
) -> dict[str, Any]:
    """What a runner sends, encrypted, in a run session of a SQL room."""
    return {
        "type": QUERY_REQUEST_TYPE,
        "query": name,
        "parameters": dict(parameters or {}),
        "sql": sql,
        "epsilon": epsilon,
    }


def query_detail(
    *,
    run: int,
    salt: bytes,
    sha256: str,
    parameters: Mapping[str, Any],
    rows: Mapping[str, int | None],  # {"released", "suppressed"}
) -> dict[str, Any]:
    """What a query receipt commits to and only its runner reads (see the module)."""
    return {
        "type": QUERY_DETAIL_TYPE,
        "run": run,
        "salt": encoded_salt(salt),
        "query": {"sha256": sha256, "parameters": dict(parameters)},
        "rows": {key: rows[key] for key in ROW_COUNTS},
    }


def detail_digest(detail: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(dict(detail))).hexdigest()


def padded(document: bytes) -> bytes:
    """``document`` (JCS, which never ends in a space) followed by spaces to the next
    multiple of :data:`REFUSAL_BLOCK` bytes: what is sealed of a detail or a refusal."""
    return document + b" " * (-len(document) % REFUSAL_BLOCK)


def unpadded(data: bytes, check: str) -> bytes:
    """The document of a sealed detail or refusal, refused (``check``) unless it was
    padded to whole blocks: its length would have told the relay about the data (the
    digits of a count) or the question (which rule refused it, what it quoted)."""
    if not data or len(data) % REFUSAL_BLOCK:
        raise MessageFormatError(
            check, f"a record padded to a multiple of {REFUSAL_BLOCK} bytes", f"{len(data)} bytes",
            "its length would tell the relay about the data or the query",
        )  # fmt: skip
    return data.rstrip(b" ")


def seal_detail(keys: SessionKeys, detail: Mapping[str, Any]) -> bytes:
    """The detail as the one Worker→runner record of the run session that sent the
    query, padded (:func:`padded`)."""
    sender = RecordSender(keys.worker_to_client, keys.session_id)
    return sender.seal(DETAIL_RECORD, padded(canonical(dict(detail))), final=True)


def open_detail(keys: SessionKeys, frame: bytes, receipt: Mapping[str, Any]) -> dict[str, Any]:
    """The sealed detail of a verified ``receipt``, opened with the run session's keys.

    Raises :class:`~cleanroom.protocol.errors.RecordError` for a frame the Worker did
    not seal in this session; ``query-detail`` for one that is not padded to whole
    blocks, not exactly the detail the receipt signed, or not a well-formed detail of
    this run.
    """
    data = open_single(keys.worker_to_client, keys.session_id, frame, DETAIL_RECORD, "query-detail")
    return check_detail(unpadded(data, "query-detail"), receipt)


def check_detail(data: bytes, receipt: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` is exactly the detail a verified ``receipt`` commits to, a well-formed
    detail of its run in canonical form (``query-detail``): what the runner opened, or
    what it showed a third party beside the signed receipt."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != receipt["detail"]:
        raise BindingError(
            "query-detail", receipt["detail"], digest, "not the detail the receipt signed"
        )
    try:
        detail = json.loads(data)
    except ValueError as error:
        raise MessageFormatError("query-detail", "JSON", "not JSON", str(error)) from error
    if (
        not isinstance(detail, dict)
        or set(detail) != QUERY_DETAIL_FIELDS
        or detail["type"] != QUERY_DETAIL_TYPE
        or detail["run"] != receipt["run"]
        or not isinstance(detail["query"], dict)
        or set(detail["query"]) != {"sha256", "parameters"}
        or not isinstance(detail["query"]["sha256"], str)
        or not isinstance(detail["query"]["parameters"], dict)
        or not isinstance(detail["rows"], dict)
        or set(detail["rows"]) != set(ROW_COUNTS)
        or not all(
            value is None or (type(value) is int and value >= 0)
            for value in detail["rows"].values()
        )
        or canonical(detail) != data
    ):
        raise MessageFormatError(
            "query-detail", sorted(QUERY_DETAIL_FIELDS), str(detail)[:200], "bad query detail"
        )
    check_salt(detail["salt"], "query-detail")
    return detail


class QueryRefused(CheckFailed):
    """The Worker refused the query: its check, expected and actual, as the Worker
    sealed them to the runner (they quote the query's text and parameters)."""


def seal_refusal(keys: SessionKeys, refusal: CheckFailed) -> bytes:
    """A refusal of the query a run session sent, as the one Worker→runner record of
    that session, padded (:func:`padded`): its facts quote the query, so they do not
    travel in the clear, nor does their length."""
    document = {"type": QUERY_REFUSAL_TYPE, **refusal.to_json()}
    try:
        data = canonical(document)
    except ProtocolError:  # a fact with no exact JSON form (a float out of range): as text
        data = canonical({k: v if isinstance(v, str) else str(v) for k, v in document.items()})
    sender = RecordSender(keys.worker_to_client, keys.session_id)
    return sender.seal(REFUSAL_RECORD, padded(data), final=True)


def open_refusal(keys: SessionKeys, frame: bytes) -> QueryRefused:
    """The sealed refusal of the query this run session sent (to raise).

    Raises :class:`~cleanroom.protocol.errors.RecordError` for a frame not sealed by the
    Worker in this session, ``query-refusal`` for one that is not a refusal, or not
    padded to whole blocks.
    """
    data = open_single(
        keys.worker_to_client, keys.session_id, frame, REFUSAL_RECORD, "query-refusal"
    )
    data = unpadded(data, "query-refusal")
    try:
        document = json.loads(data)
    except ValueError as error:
        raise MessageFormatError("query-refusal", "JSON", "not JSON", str(error)) from error
    if (
        not isinstance(document, dict)
        or not {"type", "check", "expected", "actual", "message"} <= set(document)
        or not set(document) <= {"type", "check", "expected", "actual", "message", "hint"}
        or document["type"] != QUERY_REFUSAL_TYPE
        or not all(isinstance(document[k], str) for k in ("check", "message"))
        or not isinstance(document.get("hint", ""), str)
    ):
        raise MessageFormatError(
            "query-refusal", QUERY_REFUSAL_TYPE, str(document)[:200], "bad query refusal"
        )
    return QueryRefused(
        document["check"], document["expected"], document["actual"], document["message"],
        document.get("hint"),
    )  # fmt: skip


def query_receipt(
    spec: WorkSpec,
    *,
    run: int,
    query: Mapping[str, Any],  # {"name"}: the rest is in the detail
    by: str,
    inputs: Mapping[str, tuple[str, str]],  # id -> (uploader, manifest sha256)
    output: Mapping[str, Any],  # {"id", "format", "sha256"}
    rules: list[str],
    detail: Mapping[str, Any],  # query_detail(...)
    privacy: Mapping[str, Mapping[str, float]],  # input id -> {"spent", "left", "budget"}
    status: str,
    started: int,
    finished: int,
) -> dict[str, Any]:
    if status not in RUN_STATUSES:
        raise ValueError(f"unknown run status {status!r}")
    return {
        "type": QUERY_RECEIPT_TYPE,
        "work_id": spec.work_id,
        "function": spec.function,
        "run": run,
        "query": dict(query),
        "by": by,
        "inputs": {i: {"by": u, "sha256": d} for i, (u, d) in sorted(inputs.items())},
        "output": dict(output),
        "rules": list(rules),
        "detail": detail_digest(detail),
        "privacy": {i: dict(v) for i, v in sorted(privacy.items())},
        "status": status,
        "started": started,
        "finished": finished,
    }


def sign(worker_key: ec.EllipticCurvePrivateKey, document: Mapping[str, Any]) -> bytes:
    return keys.sign(worker_key, canonical(dict(document)))


def verify_query_receipt(
    receipt: object,
    signature: bytes,
    *,
    worker_key: ec.EllipticCurvePublicKey,
    spec: WorkSpec,
    run: int,
    own_inputs: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A query receipt signed by the attested Worker, for the approved spec and this run."""
    if not isinstance(receipt, dict) or set(receipt) != QUERY_RECEIPT_FIELDS:
        raise MessageFormatError(
            "receipt", sorted(QUERY_RECEIPT_FIELDS), field_names(receipt), "bad query receipt"
        )
    keys.verify(worker_key, signature, canonical(receipt), "receipt-signature")
    if receipt["type"] != QUERY_RECEIPT_TYPE:
        raise MessageFormatError("type", QUERY_RECEIPT_TYPE, receipt["type"], "not a query receipt")
    if receipt["run"] != run:
        raise BindingError("receipt-run", run, receipt["run"], "the receipt of another run")
    check_run(receipt, spec, own_inputs)
    output = receipt["output"]
    if not isinstance(output, dict) or output.get("id") not in spec.outputs:
        raise BindingError("receipt-outputs", sorted(spec.outputs), output, "no such output")
    query = receipt["query"]
    if (
        not isinstance(query, dict)
        or set(query) != {"name"}
        or not (query["name"] is None or isinstance(query["name"], str))
    ):
        raise MessageFormatError("receipt", "query: {name}", query, "bad query")
    if not isinstance(receipt["detail"], str) or not _HEX64.fullmatch(receipt["detail"]):
        raise MessageFormatError(
            "receipt", "detail: 64 hex digits", receipt["detail"], "bad detail digest"
        )
    return receipt


def check_query(
    receipt: Mapping[str, Any], detail: Mapping[str, Any], *, name: str | None, sha256: str,
    parameters: Mapping[str, Any],
) -> None:  # fmt: skip
    """The run is the query its runner sent: the receipt's name, the detail's digest of
    the text and its parameters (``receipt-query``)."""
    expected = {"name": name, "sha256": sha256, "parameters": dict(parameters)}
    ran = {"name": receipt["query"]["name"], **detail["query"]}
    if ran != expected:
        raise BindingError("receipt-query", expected, ran, "another query ran")


def check_result(receipt: Mapping[str, Any], output_id: str) -> str:
    """A verified query receipt whose result may be downloaded as ``output_id``: the run
    wrote that output (``receipt-outputs``) and succeeded (``run-status``); the SHA-256
    of the output's manifest it signed."""
    if receipt["output"]["id"] != output_id:
        raise BindingError(
            "receipt-outputs", output_id, receipt["output"]["id"], "the run wrote another output"
        )
    if receipt["status"] != "succeeded" or not isinstance(receipt["output"]["sha256"], str):
        raise BindingError(
            "run-status", "a query run that succeeded", receipt["status"], "no result"
        )
    return str(receipt["output"]["sha256"])


def budget_statement(
    spec: WorkSpec, *, nonce: str, runs: int, privacy: Mapping[str, Mapping[str, float]]
) -> dict[str, Any]:
    return {
        "type": BUDGET_TYPE,
        "work_id": spec.work_id,
        "nonce": nonce,
        "runs": runs,
        "privacy": {i: dict(v) for i, v in sorted(privacy.items())},
    }


def verify_budget(
    statement: object,
    signature: bytes,
    *,
    worker_key: ec.EllipticCurvePublicKey,
    spec: WorkSpec,
    nonce: str,
) -> dict[str, Any]:
    """A budget statement signed by the attested Worker, fresh for ``nonce``."""
    fields = {"type", "work_id", "nonce", "runs", "privacy"}
    if not isinstance(statement, dict) or set(statement) != fields:
        raise MessageFormatError("budget", sorted(fields), statement, "bad budget statement")
    keys.verify(worker_key, signature, canonical(statement), "budget-signature")
    if statement["type"] != BUDGET_TYPE:
        raise MessageFormatError("type", BUDGET_TYPE, statement["type"], "not a budget statement")
    if statement["work_id"] != spec.work_id:
        raise BindingError("work-id", spec.work_id, statement["work_id"], "another room's budget")
    if statement["nonce"] != nonce:
        raise BindingError("nonce", nonce, statement["nonce"], "a replayed budget statement")
    privacy = statement["privacy"]
    dp_inputs = sorted(
        i for i, r in (spec.sql.rules.items() if spec.sql else []) if r.differential_privacy
    )
    if not isinstance(privacy, dict) or sorted(privacy) != dp_inputs:
        raise BindingError("budget-inputs", dp_inputs, privacy, "budgets of other inputs")
    for entry in privacy.values():
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), int | float) and math.isfinite(entry[k])
            for k in ("spent", "left", "budget")
        ):
            raise MessageFormatError("budget", "spent, left, budget", entry, "bad budget entry")
    return statement
