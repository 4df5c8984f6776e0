"""What became of a run or upload session: its user's question, the Worker's sealed answer.

A runner whose run request or query got an answer she cannot confirm (a refusal in the
clear, a 502, a cut connection) cannot tell whether the Controller relayed it: if it
did, the run may go on, and a query asked again is charged twice. She asks the Worker
in a new session whose purpose names the session she asks about,
``{"op":"fate","session":X}``, with one record under its ``k_c2w``: object
``fate/request``, index 0, final, holding ``JCS({"type":"cleanroom/fate-request/v1"})``
(as a run request proves its sender holds the session's keys). The Worker answers with
the one Worker→client record of that session, object ``fate/answer``, index 0, final,
under its ``k_w2c``::

    JCS({"type":"cleanroom/session-fate/v1","session":X,
         "fate":"ran"|"stored"|"closed","run":n|null[,"ack":acknowledgement]})

``ran``: X started the run (``run`` null: a function room's one run) or query run
``n``. ``stored``: upload session X stored its input, or found it there already (a
retry; ``run`` null), and ``ack`` is the acknowledgement document X's upload was
answered with (:mod:`cleanroom.protocol.acks`: ``new`` or ``already``, its bytes and
rows), which the client checks against its own input, digest and bytes as it checks
an acknowledgement: sealed in the fate session whose init names X, it cannot be
another upload's. ``closed``: X
started or stored nothing and, from this answer on, never will: the Worker marks it
used, and a request still under way in it takes no effect. Either is final, and asked
again the answer is the same. X is in the
signed init, so in the keys that seal the answer: an answer about another session, of
another question, or made up, does not open (``record-authentication``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cleanroom.protocol.acks import Ack, ack_of
from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.errors import BindingError, MessageFormatError
from cleanroom.protocol.handshake import SessionKeys
from cleanroom.protocol.records import RecordSender, open_single

FATE_REQUEST_RECORD = "fate/request"
FATE_REQUEST_TYPE = "cleanroom/fate-request/v1"
FATE_RECORD = "fate/answer"
FATE_TYPE = "cleanroom/session-fate/v1"
_REQUEST = canonical({"type": FATE_REQUEST_TYPE})
# What a session's fate may be: an upload session's, a run session's, either's.
_FATES = {True: ("stored", "closed"), False: ("ran", "closed"), None: ("ran", "stored", "closed")}


@dataclass(frozen=True)
class SessionFate:
    """The Worker's answer about session ``session``: it ``ran`` (query run ``run`` in a
    SQL room, None in a function room), an upload session ``stored`` its input (``ack``:
    the acknowledgement document it was answered with), or it is closed and never does
    either."""

    session: str
    ran: bool
    run: int | None
    stored: bool = False
    ack: dict[str, Any] | None = None

    @property
    def acknowledged(self) -> Ack | None:
        """What the stored upload's acknowledgement says (``already``, ``rows``)."""
        if self.ack is None:
            return None
        return Ack(self.ack["stored"] == "already", self.ack.get("rows"))


def seal_fate_request(keys: SessionKeys) -> bytes:
    """The client's question for the fate session ``keys``."""
    sender = RecordSender(keys.client_to_worker, keys.session_id)
    return sender.seal(FATE_REQUEST_RECORD, _REQUEST, final=True)


def open_fate_request(keys: SessionKeys, frame: bytes) -> None:
    """Accept ``frame`` only as this fate session's question (``record-…`` for a frame not
    sealed in it, ``fate-request`` for another record)."""
    data = open_single(
        keys.client_to_worker, keys.session_id, frame, FATE_REQUEST_RECORD, "fate-request"
    )
    if data != _REQUEST:
        raise MessageFormatError(
            "fate-request", FATE_REQUEST_TYPE, f"{len(data)} other bytes", "not a fate question"
        )


def fate_document(fate: SessionFate) -> dict[str, Any]:
    if fate.stored != (fate.ack is not None):
        raise MessageFormatError(
            "session-fate", "an acknowledgement exactly with stored", fate.ack, "bad answer"
        )
    document: dict[str, Any] = {
        "type": FATE_TYPE,
        "session": fate.session,
        "fate": "ran" if fate.ran else "stored" if fate.stored else "closed",
        "run": fate.run,
    }
    if fate.ack is not None:
        document["ack"] = fate.ack
    return document


def seal_fate(keys: SessionKeys, fate: SessionFate) -> bytes:
    """The Worker's answer, the one Worker→client record of the fate session ``keys``."""
    sender = RecordSender(keys.worker_to_client, keys.session_id)
    return sender.seal(FATE_RECORD, canonical(fate_document(fate)), final=True)


def open_fate(
    keys: SessionKeys,
    frame: bytes,
    *,
    session: str,
    sql: bool,
    upload: bool | None = False,
    uploaded: tuple[str, str, int] | None = None,
) -> SessionFate:
    """The answer to this fate session's question about ``session``, a run session in a
    SQL room or not, an ``upload`` session, or either (``upload`` None). ``uploaded``:
    the input id, manifest digest and bytes the asker's upload in ``session`` sent, which
    a ``stored`` answer's acknowledgement must be of; None (``cleanroom fate``, which
    does not know them): any acknowledgement of the right form.

    Raises :class:`~cleanroom.protocol.errors.RecordError` for a frame not sealed by the
    Worker in this session (another session's answer, one made up), ``session-fate`` for
    another record, another session's fate, or anything but the document above (a run
    number exactly when a SQL room's session ran; ``stored`` only for an upload session,
    ``ran`` never for one; an acknowledgement exactly with ``stored``), ``upload-ack``
    for a ``stored`` answer whose acknowledgement is of other data than ``uploaded``.
    """
    data = open_single(keys.worker_to_client, keys.session_id, frame, FATE_RECORD, "session-fate")
    try:
        document = json.loads(data)
    except ValueError as error:
        raise MessageFormatError("session-fate", "JSON", "not JSON", str(error)) from error
    stored = isinstance(document, dict) and document.get("fate") == "stored"
    members = {"type", "session", "fate", "run", *(("ack",) if stored else ())}
    if not isinstance(document, dict) or set(document) != members:
        raise MessageFormatError("session-fate", FATE_TYPE, str(document)[:200], "bad answer")
    if document["session"] != session:
        raise BindingError("session-fate", session, document["session"], "another session's fate")
    run = document["run"]
    ran = document["fate"] == "ran"
    numbered = type(run) is int and run >= 1
    if (
        document["type"] != FATE_TYPE
        or document["fate"] not in _FATES[upload]
        or (run is not None if not (ran and sql) else not numbered)
        or canonical(document) != data
    ):
        raise MessageFormatError("session-fate", FATE_TYPE, str(document)[:200], "bad answer")
    if not stored:
        return SessionFate(session, ran, run)
    ack = document["ack"]
    input_id, sha256, size = uploaded or _named(ack)
    ack_of(ack, input_id=input_id, sha256=sha256, size=size)
    return SessionFate(session, False, None, stored=True, ack=ack)


def _named(ack: object) -> tuple[str, str, int]:
    """The input, digest and bytes ``ack`` names, for an asker who does not know her
    own (``cleanroom fate``): its form is checked, not what it is of."""
    named = ack if isinstance(ack, dict) else {}
    input_id, sha256, size = named.get("input"), named.get("sha256"), named.get("bytes")
    if isinstance(input_id, str) and isinstance(sha256, str) and type(size) is int:
        return input_id, sha256, size
    raise MessageFormatError("session-fate", "an upload acknowledgement", str(ack)[:200], "bad ack")


__all__ = [
    "FATE_RECORD",
    "FATE_REQUEST_RECORD",
    "FATE_REQUEST_TYPE",
    "FATE_TYPE",
    "SessionFate",
    "open_fate",
    "open_fate_request",
    "seal_fate",
    "seal_fate_request",
]
