"""A function room's run request: one record under the run session's ``k_c2w``.

The run session's only client→Worker record: object ``run/request``, index 0, final,
holding ``JCS({"type": "cleanroom/run-request/v1"})``. It carries nothing the Worker
does not know; what it proves is that the request comes from whoever holds the
session's keys, i.e. the runner who made the init. Without it a run request was the
session id alone, which the Controller sees in the clear: it could answer a runner's
``cleanroom run`` with a refusal of its own and start the run later with the session
the Worker had opened, or replay the runner's init into another Worker of the same
Work-ID (a v2 init names no Worker) and run there. Neither knows ``k_c2w``.

(A SQL room's run request is its query record, ``run/query``: the same proof.)
"""

from __future__ import annotations

from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.errors import MessageFormatError
from cleanroom.protocol.handshake import SessionKeys
from cleanroom.protocol.records import RecordSender, open_single

RUN_RECORD = "run/request"
RUN_REQUEST_TYPE = "cleanroom/run-request/v1"
_DOCUMENT = canonical({"type": RUN_REQUEST_TYPE})


def seal_run_request(keys: SessionKeys) -> bytes:
    """The client's run request frame for the run session ``keys``."""
    sender = RecordSender(keys.client_to_worker, keys.session_id)
    return sender.seal(RUN_RECORD, _DOCUMENT, final=True)


def open_run_request(keys: SessionKeys, frame: bytes) -> None:
    """Accept ``frame`` only as this session's run request.

    Raises :class:`~cleanroom.protocol.errors.RecordError` for a frame not sealed
    under this session's ``k_c2w`` (``record-authentication``; ``record-frame`` for
    one that is not a frame), and ``run-request`` for another record.
    """
    data = open_single(keys.client_to_worker, keys.session_id, frame, RUN_RECORD, "run-request")
    if data != _DOCUMENT:
        raise MessageFormatError(
            "run-request", RUN_REQUEST_TYPE, f"{len(data)} other bytes", "not a run request"
        )


__all__ = ["RUN_RECORD", "RUN_REQUEST_TYPE", "open_run_request", "seal_run_request"]
