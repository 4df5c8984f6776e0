"""Manifests: the files of an input or an output, and the digest that names them.

A manifest lists each file's size and SHA-256; the status and the receipts name an
input or an output by SHA-256(JCS(manifest)), and the Controller relays those in the
clear. Without a secret in it, that digest would let whoever relays it confirm a guess
of the data: an output such as ``{"overlap": 1}``, whose file names and format the
function's code tells, takes one try per value it can have. So every manifest holds a
salt of :data:`SALT_BYTES` that only the parties entitled to the object and the Worker
see (it travels inside the encrypted record stream): the digest is then a hiding
commitment, as SD-JWT salts each disclosed claim (RFC 9901).

- An input's salt is derived by its uploader from their own key, for this room and
  input (:func:`input_salt`): a retry after a lost acknowledgement sends the same
  manifest, and the Worker recognises it (docs/protocol.md, "Upload manifest").
- An output's salt is drawn by the Worker when the run ends (:func:`output_salt`) and
  reaches each recipient in the output's manifest.
"""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cleanroom.protocol.encoding import b64u, canonical, from_b64u

UPLOAD_MANIFEST_TYPE = "cleanroom/upload-manifest/v2"
OUTPUT_MANIFEST_TYPE = "cleanroom/output-manifest/v2"
SALT_BYTES = 32  # 256 bits: more than any guess can cover
MAX_UPLOAD_MANIFEST = 16 << 20
"""The most bytes of an upload manifest (JCS) a Worker takes, in records of at most 1 MiB:
20,000 files named in 700 bytes, or 150,000 in 20 (a file's entry is its name and about
90 bytes); the client refuses a larger input before it sends anything."""
INPUT_SALT_LABEL = "cleanroom/input-salt/v1"


def input_salt(user_key: ec.EllipticCurvePrivateKey, work_id: str, input_id: str) -> bytes:
    """The salt of ``input_id``'s manifest in the room of ``work_id``, for its uploader.

    HKDF-SHA-256 (RFC 5869) of the user's private scalar, with the room and the input
    in ``info``: the same for every upload of that input by that user (so a retry is
    the same manifest), unrelated across rooms and inputs (so the Controller cannot
    tell that two rooms were given the same file), and nothing of the key in it.
    """
    secret = user_key.private_numbers().private_value.to_bytes(32, "big")
    info = canonical({"type": INPUT_SALT_LABEL, "work_id": work_id, "input": input_id})
    return HKDF(algorithm=hashes.SHA256(), length=SALT_BYTES, salt=None, info=info).derive(secret)


def output_salt() -> bytes:
    """A fresh salt for an output's manifest (the Worker's, once per output)."""
    return secrets.token_bytes(SALT_BYTES)


def encoded_salt(salt: bytes) -> str:
    if len(salt) != SALT_BYTES:
        raise ValueError(f"a manifest's salt is {SALT_BYTES} bytes, not {len(salt)}")
    return b64u(salt)


def check_salt(value: object, what: str) -> bytes:
    """A manifest's ``salt``: canonical base64url of exactly :data:`SALT_BYTES` bytes
    (a ``MessageFormatError`` named ``what`` otherwise)."""
    return from_b64u(value, what, size=SALT_BYTES)
