"""Protocol v2 handshake: one round trip, hybrid X25519 + ML-KEM-768, signed both ways.

The client sends its signed ``init`` together with its Phase 1 nonce; the (untrusted)
Controller asks the Attester for evidence bound to that nonce and the Worker for its
signed ``resp``, in parallel. The client cannot name the quote in its init (it has
not seen it yet), so v2 binds the other way round: the Worker's ``resp`` names the
client's nonce and the hash of the whole init, and is signed by the Worker key that
the Attester's evidence for that same nonce names (docs/protocol.md, "Why the
one-round-trip binding suffices").

Key exchange as TLS's X25519MLKEM768: the client offers an ML-KEM-768 encapsulation
key and an X25519 share; the Worker encapsulates to the one and answers with its own
X25519 share. Both shared secrets, ML-KEM's first, and the transcript hash go into
HKDF, so breaking one of the two exchanges alone reveals nothing. The version and the
suite are fields of both signed messages: a relay that changes either breaks a
signature, and each side refuses any suite but the one v2 defines (``handshake-suite``).
"""

from __future__ import annotations

import secrets
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import TypeAdapter, ValidationError

from cleanroom.protocol import keys
from cleanroom.protocol.encoding import b64u, canonical, from_b64u, sha256
from cleanroom.protocol.errors import BindingError, MessageFormatError, ReplayError
from cleanroom.protocol.handshake import AcceptedHandshake, SeenNonces, SessionKeys
from cleanroom.protocol.spec import Purpose, SessionPurpose, WorkSpec, authorize

VERSION = 2
SUITE = "X25519MLKEM768"  # key exchange; signatures ECDSA P-256, AEAD AES-256-GCM
V1_SUITE = "P256"  # what v1's ECDH is called where a message names it
INIT_TYPE = "cleanroom/handshake-init/v2"
RESP_TYPE = "cleanroom/handshake-resp/v2"
INIT_FIELDS = frozenset(
    {
        "type",
        "version",
        "suite",
        "work_id",
        "nonce",
        "user_key",
        "client_mlkem",
        "client_x25519",
        "purpose",
    }
)
RESP_FIELDS = frozenset(
    {
        "type",
        "version",
        "suite",
        "nonce",
        "init_sha256",
        "worker_mlkem_ciphertext",
        "worker_x25519",
        "session_id",
    }
)
MLKEM768_ENCAPSULATION_KEY = 1184
MLKEM768_CIPHERTEXT = 1088
X25519_SHARE = 32
NONCE = 32
SESSION_ID = 16
KEY_INFO_C2W = b"cleanroom/v2/c2w"
KEY_INFO_W2C = b"cleanroom/v2/w2c"

_PURPOSE: TypeAdapter[SessionPurpose] = TypeAdapter(Purpose)


def _fields(message: object, expected: frozenset[str], kind: str) -> dict[str, Any]:
    if not isinstance(message, dict) or set(message) != expected:
        got = sorted(message) if isinstance(message, dict) else type(message).__name__
        raise MessageFormatError(kind, sorted(expected), got, f"{kind} has the wrong fields")
    return message


def _version_and_suite(message: dict[str, Any], expected_type: str) -> None:
    """Type, version and suite, before anything else is read: no v1 suite in a v2 message."""
    if message["type"] != expected_type:
        raise MessageFormatError("type", expected_type, message["type"], "wrong message type")
    if message["version"] != VERSION or type(message["version"]) is not int:
        raise MessageFormatError(
            "protocol-version", VERSION, message["version"], "a v2 message names another version"
        )
    if message["suite"] != SUITE:
        raise MessageFormatError(
            "handshake-suite",
            SUITE,
            message["suite"],
            "a v2 message must use the hybrid suite (no v1 or unknown suite)",
        )


def transcript_hash(init: dict[str, Any], resp: dict[str, Any]) -> bytes:
    """th = SHA-256(JCS(init) ‖ JCS(resp)): every byte of both signed messages."""
    return sha256(canonical(init) + canonical(resp))


def derive_session_keys(
    mlkem_secret: bytes, x25519_secret: bytes, init: dict[str, Any], resp: dict[str, Any]
) -> SessionKeys:
    """IKM = ML-KEM secret ‖ X25519 secret (TLS order); k = HKDF-SHA256(IKM, salt=th, info)."""
    shared = mlkem_secret + x25519_secret
    transcript = transcript_hash(init, resp)

    def expand(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=transcript, info=info).derive(shared)

    return SessionKeys(
        session_id=resp["session_id"],
        client_to_worker=expand(KEY_INFO_C2W),
        worker_to_client=expand(KEY_INFO_W2C),
        transcript_sha256=transcript,
    )


def _exchange(own: x25519.X25519PrivateKey, share: bytes, what: str) -> bytes:
    try:
        return own.exchange(x25519.X25519PublicKey.from_public_bytes(share))
    except ValueError as error:  # a low-order point: the shared secret would be all zero
        raise MessageFormatError(
            what, "an X25519 share of large order", "a low-order point", str(error)
        ) from error


class ClientHandshakeV2:
    """The client's side: the init to send with the Phase 1 nonce; finishes once.

    ``finish`` takes the Worker key that Phase 1 found in the Attester's evidence for
    this same nonce: the ``resp`` is accepted only under that key.
    """

    def __init__(
        self,
        *,
        user_key: ec.EllipticCurvePrivateKey,
        work_id: str,
        purpose: SessionPurpose,
        nonce: bytes | None = None,
        mlkem_key: mlkem.MLKEM768PrivateKey | None = None,
        x25519_key: x25519.X25519PrivateKey | None = None,
    ) -> None:
        self.nonce = nonce if nonce is not None else secrets.token_bytes(NONCE)
        self._mlkem = mlkem_key or mlkem.MLKEM768PrivateKey.generate()
        self._x25519 = x25519_key or x25519.X25519PrivateKey.generate()
        self._done = False
        self.init: dict[str, Any] = {
            "type": INIT_TYPE,
            "version": VERSION,
            "suite": SUITE,
            "work_id": work_id,
            "nonce": b64u(self.nonce),
            "user_key": b64u(keys.spki(user_key.public_key())),
            "client_mlkem": b64u(self._mlkem.public_key().public_bytes_raw()),
            "client_x25519": b64u(self._x25519.public_key().public_bytes_raw()),
            "purpose": purpose.model_dump(mode="json"),
        }
        self.init_signature = keys.sign(user_key, canonical(self.init))

    def finish(
        self, resp: object, resp_signature: bytes, *, worker_key: ec.EllipticCurvePublicKey
    ) -> SessionKeys:
        """Check the Worker's signed answer and derive the session keys."""
        if self._done:
            raise ReplayError(
                "handshake-state", "one resp per init", "a second resp", "already finished"
            )
        message = _fields(resp, RESP_FIELDS, "handshake-resp")
        _version_and_suite(message, RESP_TYPE)
        ciphertext = from_b64u(
            message["worker_mlkem_ciphertext"], "mlkem-ciphertext", size=MLKEM768_CIPHERTEXT
        )
        share = from_b64u(message["worker_x25519"], "x25519-share", size=X25519_SHARE)
        from_b64u(message["session_id"], "session_id", size=SESSION_ID)
        keys.verify(worker_key, resp_signature, canonical(message), "handshake-resp-signature")
        if message["nonce"] != self.init["nonce"]:  # public values: no constant time needed
            raise BindingError(
                "resp-nonce",
                self.init["nonce"],
                message["nonce"],
                "the Worker answered another client's session",
            )
        init_hash = b64u(sha256(canonical(self.init)))
        if message["init_sha256"] != init_hash:
            raise BindingError(
                "init-sha256", init_hash, message["init_sha256"], "the Worker answered another init"
            )
        try:
            mlkem_secret = self._mlkem.decapsulate(ciphertext)
        except ValueError as error:
            raise MessageFormatError(
                "mlkem-ciphertext", "an ML-KEM-768 ciphertext", len(ciphertext), str(error)
            ) from error
        x25519_secret = _exchange(self._x25519, share, "x25519-share")
        self._done = True
        return derive_session_keys(mlkem_secret, x25519_secret, self.init, message)


def check_init(init: object) -> dict[str, Any]:
    """The init's shape, version and suite: what anyone can check without a key."""
    message = _fields(init, INIT_FIELDS, "handshake-init")
    _version_and_suite(message, INIT_TYPE)
    return message


def respond(
    init: object,
    init_signature: bytes,
    *,
    spec: WorkSpec,
    worker_key: ec.EllipticCurvePrivateKey,
    seen: SeenNonces,
    x25519_key: x25519.X25519PrivateKey | None = None,
    session_id: bytes | None = None,
    encapsulate: Any = None,
) -> AcceptedHandshake:
    """The Worker's side: check the signed init, then answer with a signed resp.

    Nothing is kept for a refused init: its nonce is recorded only once every check
    passed. ``encapsulate`` (tests only) replaces ML-KEM's random encapsulation.
    """
    message = check_init(init)
    if message["work_id"] != spec.work_id:
        raise BindingError("work-id", spec.work_id, message["work_id"], "init is for another work")
    from_b64u(message["nonce"], "nonce", size=NONCE)
    encapsulation_key = from_b64u(
        message["client_mlkem"], "mlkem-encapsulation-key", size=MLKEM768_ENCAPSULATION_KEY
    )
    share = from_b64u(message["client_x25519"], "x25519-share", size=X25519_SHARE)
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
    try:
        client_mlkem = mlkem.MLKEM768PublicKey.from_public_bytes(encapsulation_key)
    except ValueError as error:  # FIPS 203's encapsulation key check
        raise MessageFormatError(
            "mlkem-encapsulation-key", "an ML-KEM-768 encapsulation key", "invalid", str(error)
        ) from error
    own = x25519_key or x25519.X25519PrivateKey.generate()
    x25519_secret = _exchange(own, share, "x25519-share")
    seen.add(message["nonce"])  # last: a refused init does not burn its nonce

    mlkem_secret, ciphertext = (
        encapsulate(client_mlkem) if encapsulate is not None else client_mlkem.encapsulate()
    )
    resp = {
        "type": RESP_TYPE,
        "version": VERSION,
        "suite": SUITE,
        "nonce": message["nonce"],
        "init_sha256": b64u(sha256(canonical(message))),
        "worker_mlkem_ciphertext": b64u(ciphertext),
        "worker_x25519": b64u(own.public_key().public_bytes_raw()),
        "session_id": b64u(session_id if session_id is not None else secrets.token_bytes(16)),
    }
    return AcceptedHandshake(
        resp=resp,
        resp_signature=keys.sign(worker_key, canonical(resp)),
        keys=derive_session_keys(mlkem_secret, x25519_secret, message, resp),
        user_id=user,
        purpose=purpose,
    )
