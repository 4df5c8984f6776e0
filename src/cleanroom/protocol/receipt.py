"""The run receipt: what ran, on which inputs, producing which outputs.

Signed by the Worker's attested key ``W``; with the quote that attested ``W``
anyone can check it. A client checks it against the spec it approved and, for its
own inputs, against the digests of the manifests it sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.protocol import keys
from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.errors import BindingError, MessageFormatError
from cleanroom.protocol.spec import WorkSpec

RECEIPT_TYPE = "cleanroom/run-receipt/v1"
# A run that hit a limit names it (the sandbox enforces them: docs/threat-model.md).
RUN_STATUSES = frozenset({"succeeded", "failed", "timeout", "cpu", "memory", "disk", "processes"})
RECEIPT_FIELDS = frozenset(
    {
        "type", "work_id", "function", "inputs", "outputs", "status", "exit_code", "started",
        "finished",
    }
)  # fmt: skip
# The function's exit status, 0-255, as its sandbox reported it (128 + N: ended by
# signal N, e.g. at a limit); null when there is none (it never started).
MAX_EXIT_CODE = 255
FIELDS_SHOWN = 200  # characters of an unsigned document's field names a refusal quotes


def field_names(document: object) -> str:
    """What a refusal of a document's fields quotes of it: its field names, cut short
    (not the document: before its signature it is anyone's, of any size)."""
    if not isinstance(document, dict):
        return type(document).__name__
    return str(sorted(str(key) for key in document))[:FIELDS_SHOWN]


def run_receipt(
    spec: WorkSpec,
    *,
    inputs: Mapping[str, tuple[str, str]],  # id -> (uploader user_id, manifest sha256 hex)
    outputs: Mapping[str, str],  # id -> sha256 hex of the output's manifest
    status: str,
    exit_code: int | None,
    started: int,
    finished: int,
) -> dict[str, Any]:
    if status not in RUN_STATUSES:
        raise ValueError(f"unknown run status {status!r}")
    check_exit_code(exit_code)
    return {
        "type": RECEIPT_TYPE,
        "work_id": spec.work_id,
        "function": spec.function,
        "inputs": {i: {"by": by, "sha256": digest} for i, (by, digest) in sorted(inputs.items())},
        "outputs": {o: {"sha256": digest} for o, digest in sorted(outputs.items())},
        "status": status,
        "exit_code": exit_code,
        "started": started,
        "finished": finished,
    }


def check_exit_code(exit_code: object) -> int | None:
    """An exit status as a receipt holds it: null, or an integer 0-255 (not a boolean)."""
    if exit_code is not None and (
        type(exit_code) is not int or not 0 <= exit_code <= MAX_EXIT_CODE
    ):
        raise MessageFormatError(
            "exit-code", f"null or an integer 0-{MAX_EXIT_CODE}", exit_code, "bad exit status"
        )
    return exit_code


def sign_receipt(worker_key: ec.EllipticCurvePrivateKey, receipt: dict[str, Any]) -> bytes:
    return keys.sign(worker_key, canonical(receipt))


def verify_receipt(
    receipt: object,
    signature: bytes,
    *,
    worker_key: ec.EllipticCurvePublicKey,
    spec: WorkSpec,
    own_inputs: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Check a receipt: signed by the attested Worker, for the approved spec, and
    (``own_inputs``: id -> manifest digest the caller sent) recording the caller's data."""
    if not isinstance(receipt, dict) or set(receipt) != RECEIPT_FIELDS:
        raise MessageFormatError(
            "receipt", sorted(RECEIPT_FIELDS), field_names(receipt), "bad receipt"
        )
    keys.verify(worker_key, signature, canonical(receipt), "receipt-signature")
    if receipt["type"] != RECEIPT_TYPE:
        raise MessageFormatError("type", RECEIPT_TYPE, receipt["type"], "not a run receipt")
    check_run(receipt, spec, own_inputs)
    outputs = receipt["outputs"]
    if not isinstance(outputs, dict) or set(outputs) != set(spec.outputs):
        raise BindingError("receipt-outputs", sorted(spec.outputs), outputs, "outputs differ")
    check_exit_code(receipt["exit_code"])
    return receipt


def check_run(
    receipt: dict[str, Any], spec: WorkSpec, own_inputs: Mapping[str, str] | None
) -> None:
    """What every receipt of a run says alike, a run receipt or a SQL room's query
    receipt (after its fields, its signature and its type): the approved spec's work and
    function, the spec's inputs each from its owner, the caller's own inputs with the
    digests it sent, a known status and ``0 <= started <= finished`` in integers."""
    if receipt["work_id"] != spec.work_id:
        raise BindingError("work-id", spec.work_id, receipt["work_id"], "receipt of another work")
    if receipt["function"] != spec.function:
        raise BindingError("function", spec.function, receipt["function"], "another function ran")
    inputs = receipt["inputs"]
    if not isinstance(inputs, dict) or set(inputs) != set(spec.inputs):
        raise BindingError("receipt-inputs", sorted(spec.inputs), inputs, "inputs differ from spec")
    for input_id, owner in spec.inputs.items():
        entry = inputs[input_id]
        if not isinstance(entry, dict) or entry.get("by") != owner:
            raise BindingError(
                "receipt-input-owner", owner, entry, f"{input_id} not from its owner"
            )
    for input_id, digest in (own_inputs or {}).items():
        recorded = inputs.get(input_id, {}).get("sha256")
        if recorded != digest:
            raise BindingError(
                "receipt-input-digest", digest, recorded, f"{input_id} is not my data"
            )
    if receipt["status"] not in RUN_STATUSES:
        raise MessageFormatError("status", sorted(RUN_STATUSES), receipt["status"], "bad status")
    started, finished = receipt["started"], receipt["finished"]
    if not (type(started) is int and type(finished) is int and 0 <= started <= finished):
        raise MessageFormatError(
            "receipt-times", "0 <= started <= finished", (started, finished), "bad times"
        )
