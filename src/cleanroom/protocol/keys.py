"""P-256 keys and signatures, and the user_id that names a user by its public key."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.protocol.encoding import b64u, sha256
from cleanroom.protocol.errors import MessageFormatError, SignatureError


def spki(key: ec.EllipticCurvePublicKey) -> bytes:
    """DER SubjectPublicKeyInfo: how a public key is named and hashed."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_spki(data: bytes, what: str) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from DER SPKI; any other key or curve is refused."""
    try:
        key = serialization.load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as error:  # e.g. an unknown key type OID
        raise MessageFormatError(
            what, "DER SPKI of a P-256 key", f"{len(data)} bytes", str(error)
        ) from error
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise MessageFormatError(what, "a P-256 key", type(key).__name__, "wrong key type")
    return key


def point(key: ec.EllipticCurvePublicKey) -> bytes:
    """X9.62 uncompressed point (65 bytes): how an ephemeral ECDH key travels."""
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def load_point(data: bytes, what: str) -> ec.EllipticCurvePublicKey:
    if len(data) != 65 or data[0] != 0x04:
        raise MessageFormatError(
            what, "65-byte uncompressed P-256 point", f"{len(data)} bytes", "bad point"
        )
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), data)
    except ValueError as error:
        raise MessageFormatError(what, "a point on P-256", data.hex()[:20], str(error)) from error


def user_id(key: ec.EllipticCurvePublicKey) -> str:
    """b64u(SHA-256(DER SPKI)): a user is their public key."""
    return b64u(sha256(spki(key)))


def sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ECDSA P-256 / SHA-256, DER-encoded."""
    return key.sign(message, ec.ECDSA(hashes.SHA256()))


def verify(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes, check: str) -> None:
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as error:
        raise SignatureError(
            check,
            f"a signature by {b64u(sha256(spki(key)))}",
            signature.hex()[:32] + "…",
            "signature does not verify",
        ) from error
