"""Phase 2: signed ephemeral ECDH between a client and the attested Worker.

The client signs its ``init`` with the user key; the Worker checks that the init
is for its own work and identity, that the user may do what the session is for,
and that the nonce is fresh, then signs its ``resp`` (which names the init's hash)
with the key the Attester vouched for. Both derive per-direction keys from the
ECDH secret salted with the transcript hash, so a Controller that changes any
byte of either message gets sessions that do not interoperate, or signatures that
do not verify.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import TypeAdapter, ValidationError

from cleanroom.protocol import keys
from cleanroom.protocol.encoding import b64u, canonical, from_b64u, sha256
from cleanroom.protocol.errors import BindingError, MessageFormatError, ReplayError
from cleanroom.protocol.spec import Purpose, SessionPurpose, WorkSpec, authorize

INIT_TYPE = "cleanroom/handshake-init/v1"
RESP_TYPE = "cleanroom/handshake-resp/v1"
INIT_FIELDS = frozenset(
    {"type", "work_id", "worker_id", "nonce", "quote_sha256", "user_key", "client_eph", "purpose"}
)
RESP_FIELDS = frozenset({"type", "init_sha256", "worker_eph", "session_id"})
KEY_INFO_C2W = b"cleanroom/v1/c2w"
KEY_INFO_W2C = b"cleanroom/v1/w2c"

_PURPOSE: TypeAdapter[SessionPurpose] = TypeAdapter(Purpose)


@dataclass(frozen=True)
class SessionKeys:
    """What both ends hold once the handshake is done."""

    session_id: str
    client_to_worker: bytes
    worker_to_client: bytes
    transcript_sha256: bytes


def _fields(message: object, expected: frozenset[str], kind: str) -> dict[str, Any]:
    if not isinstance(message, dict) or set(message) != expected:
        got = sorted(message) if isinstance(message, dict) else type(message).__name__
        raise MessageFormatError(kind, sorted(expected), got, f"{kind} has the wrong fields")
    return message


def _type(message: dict[str, Any], expected: str) -> None:
    if message["type"] != expected:
        raise MessageFormatError("type", expected, message["type"], "wrong message type")


def derive_session_keys(
    own: ec.EllipticCurvePrivateKey,
    peer: ec.EllipticCurvePublicKey,
    init: dict[str, Any],
    resp: dict[str, Any],
) -> SessionKeys:
    """Z = ECDH; th = SHA-256(JCS(init) ‖ JCS(resp)); k = HKDF-SHA256(Z, salt=th, info)."""
    shared = own.exchange(ec.ECDH(), peer)
    transcript = sha256(canonical(init) + canonical(resp))

    def expand(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=transcript, info=info).derive(shared)

    return SessionKeys(
        session_id=resp["session_id"],
        client_to_worker=expand(KEY_INFO_C2W),
        worker_to_client=expand(KEY_INFO_W2C),
        transcript_sha256=transcript,
    )


class ClientHandshake:
    """The client's side: made after Phase 1 accepted the Worker; finishes once.

    ``worker_key`` must be the key the Attester's verified claims named: the
    Worker's ``resp`` is accepted only under that key.
    """

    def __init__(
        self,
        *,
        user_key: ec.EllipticCurvePrivateKey,
        work_id: str,
        worker_id: str,
        worker_key: ec.EllipticCurvePublicKey,
        quote_sha256: bytes,
        purpose: SessionPurpose,
        nonce: bytes | None = None,
        ephemeral: ec.EllipticCurvePrivateKey | None = None,
    ) -> None:
        self._ephemeral = ephemeral or ec.generate_private_key(ec.SECP256R1())
        self._worker_key = worker_key
        self._done = False
        self.init: dict[str, Any] = {
            "type": INIT_TYPE,
            "work_id": work_id,
            "worker_id": worker_id,
            "nonce": b64u(nonce if nonce is not None else secrets.token_bytes(32)),
            "quote_sha256": b64u(quote_sha256),
            "user_key": b64u(keys.spki(user_key.public_key())),
            "client_eph": b64u(keys.point(self._ephemeral.public_key())),
            "purpose": purpose.model_dump(mode="json", exclude_none=True),
        }
        self.init_signature = keys.sign(user_key, canonical(self.init))

    def finish(self, resp: object, resp_signature: bytes) -> SessionKeys:
        """Check the Worker's signed answer and derive the session keys."""
        if self._done:
            raise ReplayError(
                "handshake-state", "one resp per init", "a second resp", "already finished"
            )
        message = _fields(resp, RESP_FIELDS, "handshake-resp")
        _type(message, RESP_TYPE)
        keys.verify(
            self._worker_key, resp_signature, canonical(message), "handshake-resp-signature"
        )
        init_hash = b64u(sha256(canonical(self.init)))
        if message["init_sha256"] != init_hash:
            raise BindingError(
                "init-sha256", init_hash, message["init_sha256"], "the Worker answered another init"
            )
        from_b64u(message["session_id"], "session_id", size=16)
        worker_eph = keys.load_point(from_b64u(message["worker_eph"], "worker_eph"), "worker_eph")
        self._done = True
        return derive_session_keys(self._ephemeral, worker_eph, self.init, message)


class SeenNonces:
    """The Worker's memory of handshake nonces: a nonce is accepted once, ever.

    Bounded: past ``capacity`` the Worker refuses new sessions rather than forget.
    """

    def __init__(self, capacity: int = 1_000_000) -> None:
        self._seen: set[str] = set()
        self._capacity = capacity

    def add(self, nonce: str) -> None:
        if nonce in self._seen:
            raise ReplayError("nonce", "a nonce never used before", nonce, "handshake replayed")
        if len(self._seen) >= self._capacity:
            raise ReplayError(
                "nonce-capacity",
                f"fewer than {self._capacity} sessions",
                "full",
                "too many sessions",
            )
        self._seen.add(nonce)


@dataclass(frozen=True)
class AcceptedHandshake:
    """The Worker's result: the answer to send, the keys, who the user is and why."""

    resp: dict[str, Any]
    resp_signature: bytes
    keys: SessionKeys
    user_id: str
    purpose: SessionPurpose


def respond(
    init: object,
    init_signature: bytes,
    *,
    spec: WorkSpec,
    worker_id: str,
    worker_key: ec.EllipticCurvePrivateKey,
    seen: SeenNonces,
    ephemeral: ec.EllipticCurvePrivateKey | None = None,
    session_id: bytes | None = None,
) -> AcceptedHandshake:
    """The Worker's side: check the signed init, then answer with a signed resp."""
    message = _fields(init, INIT_FIELDS, "handshake-init")
    _type(message, INIT_TYPE)
    if message["work_id"] != spec.work_id:
        raise BindingError("work-id", spec.work_id, message["work_id"], "init is for another work")
    if message["worker_id"] != worker_id:
        raise BindingError(
            "worker-id", worker_id, message["worker_id"], "init is for another Worker"
        )
    from_b64u(message["nonce"], "nonce", size=32)
    from_b64u(message["quote_sha256"], "quote_sha256", size=32)
    user_key = keys.load_spki(from_b64u(message["user_key"], "user_key"), "user_key")
    keys.verify(user_key, init_signature, canonical(message), "handshake-init-signature")
    try:
        purpose = _PURPOSE.validate_python(message["purpose"])
    except ValidationError as error:
        raise MessageFormatError(
            "purpose", "upload/download/run/fate", message["purpose"], "bad purpose"
        ) from error
    user = keys.user_id(user_key)
    authorize(spec, user, purpose)
    client_eph = keys.load_point(from_b64u(message["client_eph"], "client_eph"), "client_eph")
    seen.add(message["nonce"])  # last: a refused init does not burn its nonce

    own = ephemeral or ec.generate_private_key(ec.SECP256R1())
    resp = {
        "type": RESP_TYPE,
        "init_sha256": b64u(sha256(canonical(message))),
        "worker_eph": b64u(keys.point(own.public_key())),
        "session_id": b64u(session_id if session_id is not None else secrets.token_bytes(16)),
    }
    return AcceptedHandshake(
        resp=resp,
        resp_signature=keys.sign(worker_key, canonical(resp)),
        keys=derive_session_keys(own, client_eph, message, resp),
        user_id=user,
        purpose=purpose,
    )
