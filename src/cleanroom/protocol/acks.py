"""The Worker's acknowledgement of an upload, sealed under the session's key.

An upload session's only Worker→client record: object ``<input id>/.ack``, index
0, final, under ``k_w2c``, holding::

    JCS({"type": "cleanroom/upload-ack/v1", "input": id,
         "sha256": hex(SHA-256(JCS(upload manifest))), "stored": "new" | "already",
         "bytes": the input's plaintext bytes[, "rows": rows checked against its schema]})

``already`` says the Worker had exactly this input before this session (the same
owner, the same manifest digest) and stored nothing new: a retry after a lost or
garbled acknowledgement. ``rows`` is there where the Worker checked the input
against a declared schema (a SQL room). Only the attested Worker holds ``k_w2c``,
so a relay can neither forge an acknowledgement nor move one to another session or
input, nor change a count.

An upload its schema refuses (a SQL room) gets, instead of the acknowledgement, its
refusal sealed the same way: object ``<input id>/.refusal``, index 0, final, holding
``JCS({"type": "cleanroom/upload-refusal/v1", "check", "expected", "actual",
"message"})`` followed by spaces (0x20) up to the next multiple of
:data:`REFUSAL_BLOCK` bytes. Where the data broke its schema (file, column, row) is
about the uploader's data: the relay sees only that the schema refused it
(``schema-refused``), and a sealed record as long as any other refusal's (unpadded,
its length told the check, the length of the column's name and the row's digits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cleanroom.errors import CheckFailed
from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.errors import BindingError, MessageFormatError
from cleanroom.protocol.handshake import SessionKeys
from cleanroom.protocol.records import RecordSender, open_single

ACK_TYPE = "cleanroom/upload-ack/v1"
ACK_NAME = ".ack"
REFUSAL_TYPE = "cleanroom/upload-refusal/v1"
REFUSAL_NAME = ".refusal"
REFUSAL_BLOCK = 4096
"""A sealed upload refusal's plaintext is a whole number of these: every refusal whose
document fits one (any check, column and row of a schema whose names fit) is as long."""
STORED = ("new", "already")


@dataclass(frozen=True)
class Ack:
    """What an authentic acknowledgement says beyond what the client already knows."""

    already: bool  # the Worker had exactly this input before: nothing new stored
    rows: int | None  # rows checked against the input's schema (SQL rooms), else None


def ack_document(
    input_id: str, sha256: str, *, already: bool, size: int, rows: int | None = None
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "type": ACK_TYPE,
        "input": input_id,
        "sha256": sha256,
        "stored": "already" if already else "new",
        "bytes": size,
    }
    if rows is not None:
        document["rows"] = rows
    return document


def seal_ack(
    keys: SessionKeys,
    input_id: str,
    sha256: str,
    *,
    already: bool,
    size: int,
    rows: int | None = None,
) -> bytes:
    """The Worker's acknowledgement frame for ``input_id`` with manifest digest
    ``sha256``, ``size`` plaintext bytes and, where a schema was checked, ``rows``."""
    sender = RecordSender(keys.worker_to_client, keys.session_id)
    document = ack_document(input_id, sha256, already=already, size=size, rows=rows)
    return sender.seal(f"{input_id}/{ACK_NAME}", canonical(document), final=True)


def _count(value: object) -> bool:
    return type(value) is int and value >= 0


def open_ack(keys: SessionKeys, frame: bytes, *, input_id: str, sha256: str, size: int) -> Ack:
    """Check an acknowledgement for exactly this input, digest and byte count.

    Raises :class:`~cleanroom.protocol.errors.RecordError` for a frame not sealed
    by the Worker in this session, and ``upload-ack`` for one about other data.
    """
    expected = f"{input_id}/{ACK_NAME}"
    data = open_single(keys.worker_to_client, keys.session_id, frame, expected, "upload-ack")
    try:
        document = json.loads(data)
    except ValueError as error:
        raise MessageFormatError("upload-ack", "JSON", "not JSON", str(error)) from error
    ack = ack_of(document, input_id=input_id, sha256=sha256, size=size)
    if canonical(document) != data:
        raise BindingError("upload-ack", "the acknowledgement in JCS", "other bytes", "not JCS")
    return ack


def ack_of(document: object, *, input_id: str, sha256: str, size: int) -> Ack:
    """What acknowledgement ``document`` says, if it is exactly the document above for
    this input, digest and byte count (``upload-ack`` otherwise). An acknowledgement
    inside another sealed answer (the session fate's ``stored``) is checked here too."""
    rows = document.get("rows") if isinstance(document, dict) else None
    if isinstance(document, dict) and (rows is None or _count(rows)):
        for already in (False, True):
            wanted = ack_document(input_id, sha256, already=already, size=size, rows=rows)
            if document == wanted and _count(document["bytes"]):
                return Ack(already, rows)
    raise BindingError(
        "upload-ack",
        {"input": input_id, "sha256": sha256, "bytes": size},
        document,
        "the Worker acknowledged other data",
    )


class UploadRefused(CheckFailed):
    """The Worker refused the upload against its schema: its check, expected and actual
    as the Worker sealed them to the uploader (they say where the data broke it)."""


def seal_upload_refusal(keys: SessionKeys, input_id: str, refusal: CheckFailed) -> bytes:
    """``refusal`` of ``input_id``'s upload, as the upload session's one Worker→client
    record (in place of the acknowledgement)."""
    document = canonical({"type": REFUSAL_TYPE, **refusal.to_json()})
    padded = document + b" " * (-len(document) % REFUSAL_BLOCK)
    sender = RecordSender(keys.worker_to_client, keys.session_id)
    return sender.seal(f"{input_id}/{REFUSAL_NAME}", padded, final=True)


def open_upload_refusal(keys: SessionKeys, frame: bytes, *, input_id: str) -> UploadRefused:
    """The sealed refusal of this session's upload of ``input_id`` (to raise).

    Raises :class:`~cleanroom.protocol.errors.RecordError` for a frame not sealed by
    the Worker in this session, ``upload-refusal`` for one that is not a refusal of
    ``input_id``, or not padded to whole :data:`REFUSAL_BLOCK` s (its length would have
    told the relay where the data broke).
    """
    expected = f"{input_id}/{REFUSAL_NAME}"
    data = open_single(keys.worker_to_client, keys.session_id, frame, expected, "upload-refusal")
    if not data or len(data) % REFUSAL_BLOCK:
        raise MessageFormatError(
            "upload-refusal", f"a refusal padded to a multiple of {REFUSAL_BLOCK} bytes",
            f"{len(data)} bytes", "the refusal's length would tell the relay where the data broke",
        )  # fmt: skip
    try:
        document = json.loads(data)
    except ValueError as error:
        raise MessageFormatError("upload-refusal", "JSON", "not JSON", str(error)) from error
    fields = {"type", "check", "expected", "actual", "message"}
    if (
        not isinstance(document, dict)
        or not fields <= set(document) <= {*fields, "hint"}
        or document["type"] != REFUSAL_TYPE
        or not all(isinstance(document[k], str) for k in ("check", "message"))
        or not isinstance(document.get("hint", ""), str)
    ):
        raise MessageFormatError(
            "upload-refusal", REFUSAL_TYPE, str(document)[:200], "bad upload refusal"
        )
    return UploadRefused(
        document["check"], document["expected"], document["actual"], document["message"],
        document.get("hint"),
    )  # fmt: skip


__all__ = [
    "ACK_NAME",
    "ACK_TYPE",
    "REFUSAL_BLOCK",
    "REFUSAL_NAME",
    "REFUSAL_TYPE",
    "Ack",
    "UploadRefused",
    "ack_document",
    "ack_of",
    "open_ack",
    "open_upload_refusal",
    "seal_ack",
    "seal_upload_refusal",
]
