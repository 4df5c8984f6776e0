"""Manifest salts: the digest a receipt names hides the data from whoever relays it."""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cleanroom.protocol.manifest import SALT_BYTES, input_salt, output_salt

from .fixtures import ALICE, BOB, SPEC

# docs/protocol.md, "Upload manifest": Alice's input_1 in the spec of the fixtures.
SALT = "a81d04a42b7ac6bea56d6ac74eceb66fac33f4456874f7afb32e5ec306766faa"
MANIFEST = (
    b'{"files":{"emails.csv":{"sha256":"7eac4ab8e2ce0937fb325e63fe8e83e051c157080e35f6cfc9a9e7'
    b'bacf6ea224","size":4}},"input":"input_1","salt":"qB0EpCt6xr6lbWrHTs62b6wz9EVodPevsy5ewwZ'
    b'2b6o","type":"cleanroom/upload-manifest/v2"}'
)
DIGEST = "e3169cb2d1d05e282a7b22f7bbf4a2044dc5e8edf54e31b592ed178f67e493b1"


def test_the_input_salt_vector() -> None:
    assert input_salt(ALICE, SPEC.work_id, "input_1").hex() == SALT
    # Independently: HKDF-SHA-256 of the private scalar, the room and input as info.
    info = rfc8785.dumps(
        {"type": "cleanroom/input-salt/v1", "work_id": SPEC.work_id, "input": "input_1"}
    )
    scalar = ALICE.private_numbers().private_value.to_bytes(32, "big")
    assert HKDF(hashes.SHA256(), 32, None, info).derive(scalar).hex() == SALT


def test_the_upload_manifest_vector() -> None:
    manifest: dict[str, Any] = {
        "type": "cleanroom/upload-manifest/v2",
        "input": "input_1",
        "salt": "qB0EpCt6xr6lbWrHTs62b6wz9EVodPevsy5ewwZ2b6o",
        "files": {"emails.csv": {"size": 4, "sha256": hashlib.sha256(b"a@x\n").hexdigest()}},
    }
    assert rfc8785.dumps(manifest) == MANIFEST
    assert hashlib.sha256(MANIFEST).hexdigest() == DIGEST


def test_an_input_salt_is_the_same_for_a_retry_and_unrelated_anywhere_else() -> None:
    salt = input_salt(ALICE, SPEC.work_id, "input_1")
    assert len(salt) == SALT_BYTES
    assert input_salt(ALICE, SPEC.work_id, "input_1") == salt  # a retry: the same manifest
    others = {
        input_salt(ALICE, SPEC.work_id, "input_2"),  # another input
        input_salt(ALICE, "A" * 43, "input_1"),  # another room: the same file not linkable
        input_salt(BOB, SPEC.work_id, "input_1"),  # another uploader
    }
    assert salt not in others and len(others) == 3


def test_output_salts_are_fresh() -> None:
    drawn = {output_salt() for _ in range(100)}
    assert len(drawn) == 100 and all(len(salt) == SALT_BYTES for salt in drawn)
