"""Receipts of a SQL room: one per query run, and the privacy budget on request.

A query receipt names what ran (the query's name, the SHA-256 of its text, its
parameters, who sent it), on which inputs, under which rules, what was released
(the output's manifest digest, rows released and suppressed) and the ε each
differential privacy owner spent on it and has left. A budget statement answers
a client's nonce with every owner's ε spent and left. Both are signed with the
Worker's attested key ``W``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.protocol import keys
from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.errors import BindingError, MessageFormatError
from cleanroom.protocol.receipt import RUN_STATUSES, check_run
from cleanroom.protocol.spec import WorkSpec

QUERY_RECEIPT_TYPE = "cleanroom/query-receipt/v1"
BUDGET_TYPE = "cleanroom/privacy-budget/v1"
QUERY_REQUEST_TYPE = "cleanroom/query-request/v1"
QUERY_RECORD = "run/query"  # the record path of the encrypted request in a run session
QUERY_RECEIPT_FIELDS = frozenset(
    {"type", "work_id", "function", "run", "query", "by", "inputs", "output", "rules", "rows",
     "privacy", "status", "started", "finished"}
)  # fmt: skip


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


def query_receipt(
    spec: WorkSpec,
    *,
    run: int,
    query: Mapping[str, Any],  # {"name", "sha256", "parameters"}
    by: str,
    inputs: Mapping[str, tuple[str, str]],  # id -> (uploader, manifest sha256)
    output: Mapping[str, Any],  # {"id", "format", "sha256"}
    rules: list[str],
    rows: Mapping[str, int | None],  # {"released", "suppressed"}
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
        "rows": dict(rows),
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
            "receipt", sorted(QUERY_RECEIPT_FIELDS), receipt, "bad query receipt"
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
    return receipt


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
