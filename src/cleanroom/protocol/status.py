"""The Worker's signed status: what a clean room holds now, fresh for one client.

The Controller may say anything about a room; this document is what the Worker
itself says, signed by its attested key ``W`` over the client's fresh nonce, so a
client can tell a room's real state from a relayed story (and a replayed one)::

    status = {"type": "cleanroom/room-status/v1", "work_id", "nonce",
              "state": "collecting" | "running" | "done" | "failed",
              "inputs": {id: {"by": user_id, "sha256": hex}},   # the inputs that arrived
              "uploading": [id…], "outputs": [id…],             # outputs ready to download
              "run": null | {"status", "exit_code"},            # as the run receipt says
              "detail": null | text}                            # why the room failed
    signature = ECDSA-P256-SHA256(W, JCS(status)), DER
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.protocol import keys
from cleanroom.protocol.encoding import b64u, canonical
from cleanroom.protocol.errors import BindingError, MessageFormatError
from cleanroom.protocol.receipt import RUN_STATUSES, check_exit_code
from cleanroom.protocol.spec import WorkSpec

STATUS_TYPE = "cleanroom/room-status/v1"
NONCE_BYTES = 32
ROOM_STATES = ("collecting", "running", "done", "failed", "querying")
"""``querying``: a SQL room after its first query (inputs frozen, queries answered)."""
STATUS_FIELDS = frozenset(
    {"type", "work_id", "nonce", "state", "inputs", "uploading", "outputs", "run", "detail"}
)
MAX_DETAIL = 2000


def room_status(
    spec: WorkSpec,
    *,
    nonce: bytes,
    state: str,
    inputs: dict[str, tuple[str, str]],  # id -> (uploader user_id, manifest sha256 hex)
    uploading: list[str],
    outputs: list[str],
    run: tuple[str, int | None] | None,  # (receipt status, exit code) once the run ended
    detail: str | None,
) -> dict[str, Any]:
    """The status document of a room whose spec is ``spec``, for the client's ``nonce``."""
    if state not in ROOM_STATES:
        raise ValueError(f"unknown room state {state!r}")
    return {
        "type": STATUS_TYPE,
        "work_id": spec.work_id,
        "nonce": b64u(nonce),
        "state": state,
        "inputs": {i: {"by": by, "sha256": digest} for i, (by, digest) in sorted(inputs.items())},
        "uploading": sorted(uploading),
        "outputs": sorted(outputs),
        "run": None if run is None else {"status": run[0], "exit_code": run[1]},
        "detail": None if detail is None else detail[:MAX_DETAIL],
    }


def sign_status(worker_key: ec.EllipticCurvePrivateKey, status: dict[str, Any]) -> bytes:
    return keys.sign(worker_key, canonical(status))


def _ids(value: object, allowed: dict[str, str] | list[str], what: str) -> list[str]:
    if (
        not isinstance(value, list)
        or not all(isinstance(item, str) for item in value)
        or value != sorted(set(value))
        or not set(value) <= set(allowed)
    ):
        raise BindingError(f"status-{what}", f"sorted ids of {sorted(allowed)}", value, "bad ids")
    return value


def verify_status(
    status: object,
    signature: bytes,
    *,
    worker_key: ec.EllipticCurvePublicKey,
    spec: WorkSpec,
    nonce: bytes,
) -> dict[str, Any]:
    """Check a status: signed by the attested Worker, for ``spec``, for this ``nonce``.

    Every fact it states must be possible under the spec (inputs from their owners,
    outputs of the spec) and consistent (a run result exactly when the run ended).
    """
    if not isinstance(status, dict) or set(status) != STATUS_FIELDS:
        raise MessageFormatError("status-format", sorted(STATUS_FIELDS), status, "bad status")
    keys.verify(worker_key, signature, canonical(status), "status-signature")
    if status["type"] != STATUS_TYPE:
        raise MessageFormatError("type", STATUS_TYPE, status["type"], "not a room status")
    if status["work_id"] != spec.work_id:
        raise BindingError("work-id", spec.work_id, status["work_id"], "status of another work")
    if status["nonce"] != b64u(nonce):
        raise BindingError("status-nonce", b64u(nonce), status["nonce"], "not a fresh answer")
    state = status["state"]
    if state not in ROOM_STATES:
        raise MessageFormatError("status-state", list(ROOM_STATES), state, "bad state")
    inputs = status["inputs"]
    if not isinstance(inputs, dict) or not set(inputs) <= set(spec.inputs):
        raise BindingError("status-inputs", sorted(spec.inputs), inputs, "unknown inputs")
    for input_id, entry in inputs.items():
        if not isinstance(entry, dict) or entry.get("by") != spec.inputs[input_id]:
            raise BindingError(
                "status-input-owner", spec.inputs[input_id], entry, f"{input_id} not its owner's"
            )
        if set(entry) != {"by", "sha256"} or not isinstance(entry["sha256"], str):
            raise MessageFormatError("status-format", ["by", "sha256"], entry, "bad input")
    _ids(status["uploading"], spec.inputs, "uploading")
    _ids(status["outputs"], spec.outputs, "outputs")
    run = status["run"]
    if (run is None) != (state != "done"):
        raise BindingError("status-run", "a run result exactly when done", run, "inconsistent")
    if run is not None:
        if not isinstance(run, dict) or set(run) != {"status", "exit_code"}:
            raise MessageFormatError("status-format", ["exit_code", "status"], run, "bad run")
        if run["status"] not in RUN_STATUSES:
            raise MessageFormatError("status", sorted(RUN_STATUSES), run["status"], "bad status")
        check_exit_code(run["exit_code"])
    detail = status["detail"]
    if detail is not None and (not isinstance(detail, str) or len(detail) > MAX_DETAIL):
        raise MessageFormatError("status-format", "null or text", detail, "bad detail")
    return status


__all__ = [
    "NONCE_BYTES",
    "ROOM_STATES",
    "STATUS_TYPE",
    "room_status",
    "sign_status",
    "verify_status",
]
