"""The Worker's acknowledgement of an upload, sealed under the session's key.

An upload session's only Worker→client record: object ``<input id>/.ack``, index
0, final, under ``k_w2c``, holding::

    JCS({"type": "cleanroom/upload-ack/v1", "input": id,
         "sha256": hex(SHA-256(JCS(upload manifest))), "stored": "new" | "already"})

``already`` says the Worker had exactly this input before this session (the same
owner, the same manifest digest) and stored nothing new: a retry after a lost or
garbled acknowledgement. Only the attested Worker holds ``k_w2c``, so a relay can
neither forge an acknowledgement nor move one to another session or input.
"""

from __future__ import annotations

import json

from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.errors import BindingError, MessageFormatError
from cleanroom.protocol.handshake import SessionKeys
from cleanroom.protocol.records import RecordReceiver, RecordSender

ACK_TYPE = "cleanroom/upload-ack/v1"
ACK_NAME = ".ack"
STORED = ("new", "already")


def ack_document(input_id: str, sha256: str, *, already: bool) -> dict[str, str]:
    return {
        "type": ACK_TYPE,
        "input": input_id,
        "sha256": sha256,
        "stored": "already" if already else "new",
    }


def seal_ack(keys: SessionKeys, input_id: str, sha256: str, *, already: bool) -> bytes:
    """The Worker's acknowledgement frame for ``input_id`` with manifest digest ``sha256``."""
    sender = RecordSender(keys.worker_to_client, keys.session_id)
    document = ack_document(input_id, sha256, already=already)
    return sender.seal(f"{input_id}/{ACK_NAME}", canonical(document), final=True)


def open_ack(keys: SessionKeys, frame: bytes, *, input_id: str, sha256: str) -> bool:
    """Check an acknowledgement for exactly this input and digest; True if ``already``.

    Raises :class:`~cleanroom.protocol.errors.RecordError` for a frame not sealed
    by the Worker in this session, and ``upload-ack`` for one about other data.
    """
    receiver = RecordReceiver(keys.worker_to_client, keys.session_id)
    path, _index, final, data = receiver.open(frame)
    receiver.close()
    expected = f"{input_id}/{ACK_NAME}"
    if path != expected or not final:
        raise BindingError("upload-ack", expected, path, "an acknowledgement of another object")
    try:
        document = json.loads(data)
    except ValueError as error:
        raise MessageFormatError("upload-ack", "JSON", "not JSON", str(error)) from error
    for already in (False, True):
        wanted = ack_document(input_id, sha256, already=already)
        if document == wanted and canonical(document) == data:
            return already
    raise BindingError(
        "upload-ack",
        {"input": input_id, "sha256": sha256},
        document,
        "the Worker acknowledged other data",
    )


__all__ = ["ACK_NAME", "ACK_TYPE", "open_ack", "seal_ack"]
