"""Reference measurements from a release: the measurement file the release key signs.

What a client accepts as the Attester and the Worker must come from the project's
release, not from whichever cleanroom package happens to be installed on the
client (an older one, a newer one, another build). A release builds and signs the
enclave images, reads each SIGSTRUCT, and publishes ``measurements.json``::

    {
      "measurements": {
        "type": "cleanroom/measurements/v1",
        "release": "0.1.0", "issued_at": 1767225600, "backend": "gramine-sgx",
        "attester": {"mrenclaves": [...], "mrsigner": "...", "isv_prod_id": 1, "isv_svn": 1},
        "worker": {"mrenclaves": [...], "mrsigner": "...", "isv_prod_id": 2, "isv_svn": 1},
        "source": {...}
      },
      "signature": "<JWS over the canonical measurements>"
    }

The signature is a JWS (RFC 7515) with a detached, unencoded payload (RFC 7797):
the payload is the RFC 8785 canonical form of ``measurements``, so the file stays
readable and any re-serialisation verifies the same; the algorithm is EdDSA
(Ed25519) and ``kid`` names the release key by the SHA-256 of its public key
(SubjectPublicKeyInfo, DER). docs/protocol.md has the test vector.

:func:`verify_measurements` accepts a file only under the release key it is given
(``measurements-signature``), in this exact form (``measurements-format``), naming
no DEBUG enclave and both enclaves under one signer (``measurements-format``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from cleanroom.attestation.errors import AttestationError, EvidenceError
from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.errors import MessageFormatError

MEASUREMENTS_TYPE = "cleanroom/measurements/v1"
JWS_TYPE = "cleanroom-measurements+jws"
ALGORITHM = "EdDSA"
BACKENDS = frozenset({"gramine-sgx", "simulated"})
MAX_FILE = 1 << 20

_HEX32 = re.compile(r"[0-9a-f]{64}")
_RELEASE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+-]{0,63}")


class MeasurementsError(AttestationError):
    """A measurement file that is not the release's: bad signature, key or content."""


class MeasurementsFormatError(MeasurementsError, EvidenceError):
    """A measurement file that cannot be read at all (unusable input)."""


def key_id(public_key: ed25519.Ed25519PublicKey) -> str:
    """The release key's name: SHA-256 of its SubjectPublicKeyInfo (DER), hex."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def load_release_key(pem: bytes) -> ed25519.Ed25519PublicKey:
    """A release public key (PEM); a private key's public half is taken too."""
    try:
        key: Any = serialization.load_pem_public_key(pem)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(pem, password=None).public_key()
        except (ValueError, TypeError) as error:
            raise MeasurementsFormatError(
                "release-key", "an Ed25519 public key (PEM)", "unreadable", str(error)
            ) from error
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise MeasurementsFormatError(
            "release-key", "an Ed25519 key", type(key).__name__, "the release key is Ed25519"
        )
    return key


@dataclass(frozen=True)
class EnclaveReference:
    """What one enclave of the release is: any of its MRENCLAVEs, under its signer."""

    mr_enclaves: tuple[bytes, ...]
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int

    def to_json(self) -> dict[str, Any]:
        return {
            "mrenclaves": sorted(value.hex() for value in self.mr_enclaves),
            "mrsigner": self.mr_signer.hex(),
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
        }

    @classmethod
    def from_json(cls, document: Any, what: str) -> EnclaveReference:
        fields = {"mrenclaves", "mrsigner", "isv_prod_id", "isv_svn"}
        if not isinstance(document, dict) or set(document) != fields:
            raise _format(f"{what}: an object with exactly {sorted(fields)}", document)
        enclaves = document["mrenclaves"]
        if (
            not isinstance(enclaves, list)
            or not enclaves
            or not all(isinstance(v, str) and _HEX32.fullmatch(v) for v in enclaves)
            or enclaves != sorted(set(enclaves))
        ):
            raise _format(f"{what}.mrenclaves: sorted, distinct, 64 lowercase hex digits", enclaves)
        if not isinstance(document["mrsigner"], str) or not _HEX32.fullmatch(document["mrsigner"]):
            raise _format(f"{what}.mrsigner: 64 lowercase hex digits", document["mrsigner"])
        for name in ("isv_prod_id", "isv_svn"):
            value = document[name]
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
                raise _format(f"{what}.{name}: an integer 0..65535", value)
        return cls(
            tuple(bytes.fromhex(v) for v in enclaves),
            bytes.fromhex(document["mrsigner"]),
            document["isv_prod_id"],
            document["isv_svn"],
        )


@dataclass(frozen=True)
class ReleaseMeasurements:
    """The reference values of one release of the enclave images."""

    release: str
    issued_at: int
    backend: str
    attester: EnclaveReference
    worker: EnclaveReference
    source: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": MEASUREMENTS_TYPE,
            "release": self.release,
            "issued_at": self.issued_at,
            "backend": self.backend,
            "attester": self.attester.to_json(),
            "worker": self.worker.to_json(),
            "source": dict(self.source),
        }

    @classmethod
    def from_json(cls, document: Any) -> ReleaseMeasurements:
        fields = {"type", "release", "issued_at", "backend", "attester", "worker", "source"}
        if not isinstance(document, dict) or set(document) != fields:
            raise _format(f"measurements: an object with exactly {sorted(fields)}", document)
        if document["type"] != MEASUREMENTS_TYPE:
            raise _format(f"type {MEASUREMENTS_TYPE}", document["type"])
        if not isinstance(document["release"], str) or not _RELEASE.fullmatch(document["release"]):
            raise _format("release: a version", document["release"])
        issued = document["issued_at"]
        if not isinstance(issued, int) or isinstance(issued, bool) or issued < 0:
            raise _format("issued_at: UNIX seconds", issued)
        if document["backend"] not in BACKENDS:
            raise _format(f"backend: one of {sorted(BACKENDS)}", document["backend"])
        source = document["source"]
        if not isinstance(source, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in source.items()
        ):
            raise _format("source: an object of strings", source)
        attester = EnclaveReference.from_json(document["attester"], "attester")
        worker = EnclaveReference.from_json(document["worker"], "worker")
        if attester.mr_signer != worker.mr_signer:
            raise _format("one release signer for the Attester and the Worker", document)
        return cls(document["release"], issued, document["backend"], attester, worker, source)


def _format(expected: str, actual: Any) -> MeasurementsFormatError:
    shown = json.dumps(actual)[:120] if not isinstance(actual, str) else actual[:120]
    return MeasurementsFormatError(
        "measurements-format", expected, shown, "this is not a cleanroom measurement file"
    )


def sign_measurements(measurements: ReleaseMeasurements, key: ed25519.Ed25519PrivateKey) -> bytes:
    """The measurement file's bytes, signed with the release's private key."""
    document = measurements.to_json()
    ReleaseMeasurements.from_json(document)  # what we sign, we would accept
    signature = jwt.PyJWS().encode(
        canonical(document),
        key,
        algorithm=ALGORITHM,
        headers={"typ": JWS_TYPE, "kid": key_id(key.public_key()), "b64": False, "crit": ["b64"]},
        is_payload_detached=True,
    )
    return (
        json.dumps({"measurements": document, "signature": signature}, indent=2) + "\n"
    ).encode()


def verify_measurements(data: bytes, release_key: ed25519.Ed25519PublicKey) -> ReleaseMeasurements:
    """The release's measurements, if ``data`` is a measurement file signed by
    ``release_key``; else :class:`MeasurementsError` naming the check."""
    if len(data) > MAX_FILE:
        raise _format(f"at most {MAX_FILE} bytes", f"{len(data)} bytes")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise _format("JSON", str(error)) from error
    if not isinstance(document, dict) or set(document) != {"measurements", "signature"}:
        raise _format('an object with exactly "measurements" and "signature"', document)
    signature = document["signature"]
    if not isinstance(signature, str):
        raise _format("signature: a JWS in compact form", signature)
    try:
        payload = canonical(document["measurements"])
    except MessageFormatError as error:
        raise _format("measurements: canonical JSON", str(error)) from error
    try:
        header = jwt.get_unverified_header(signature)
    except jwt.InvalidTokenError as error:
        raise MeasurementsError(
            "measurements-signature",
            "a JWS of the release key",
            str(error),
            "the signature is not a measurement file's",
        ) from error
    expected = {
        "alg": ALGORITHM,
        "typ": JWS_TYPE,
        "kid": key_id(release_key),
        "b64": False,
        "crit": ["b64"],
    }
    if header != expected:
        raise MeasurementsError(
            "measurements-signature",
            expected,
            header,
            "the file is not signed by this release key as a measurement file",
            "get the measurement file and the release key from the same release",
        )
    try:
        jwt.PyJWS().decode_complete(
            signature, key=release_key, algorithms=[ALGORITHM], detached_payload=payload
        )
    except jwt.InvalidTokenError as error:
        raise MeasurementsError(
            "measurements-signature",
            f"a signature by the release key {key_id(release_key)}",
            str(error),
            "the measurements were changed after signing, or signed by another key",
        ) from error
    return ReleaseMeasurements.from_json(document["measurements"])
