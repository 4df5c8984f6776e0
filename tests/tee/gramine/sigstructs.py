"""Test SIGSTRUCTs, signed as gramine-sgx-sign signs them, with a test RSA-3072 e=3 key.

The project's release signer key (tee/images/simulated-signer.pem) holds only the
public key, so these tests sign with a key of their own.
"""

from __future__ import annotations

import dataclasses
import functools

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cleanroom.sgx import AttributeFlags, Attributes, SigStruct

PRODUCTION = Attributes(flags=AttributeFlags.INIT | AttributeFlags.MODE64BIT, xfrm=0x03)
# What gramine-sgx-sign writes: every FLAGS bit and the security-relevant XFRM bits pinned.
MASK = Attributes(flags=0xFFFFFFFFFFFFFFFF, xfrm=0xFFFFFFFFFFF9FF1B)


@functools.cache
def signer_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=3, key_size=3072)


def unsigned(**changes: object) -> SigStruct:
    fields: dict[str, object] = {
        "vendor": 0,
        "date": 0x20250614,
        "sw_defined": 0,
        "modulus": bytes(384),
        "exponent": 0,
        "signature": bytes(384),
        "misc_select": 0,
        "misc_mask": 0xFFFFFFFF,
        "cet_attributes": 0,
        "cet_attributes_mask": 0,
        "isv_family_id": bytes(16),
        "attributes": PRODUCTION,
        "attribute_mask": MASK,
        "enclave_hash": bytes(range(32)),
        "isv_ext_prod_id": bytes(16),
        "isv_prod_id": 1,
        "isv_svn": 3,
        "q1": bytes(384),
        "q2": bytes(384),
    }
    fields.update(changes)
    return SigStruct(**fields)  # type: ignore[arg-type]


def sign(sigstruct: SigStruct, key: rsa.RSAPrivateKey | None = None) -> SigStruct:
    """Fill MODULUS, EXPONENT, SIGNATURE, Q1, Q2 as gramine-sgx-sign does."""
    key = key or signer_key()
    n = key.public_key().public_numbers().n
    e = key.public_key().public_numbers().e
    with_key = dataclasses.replace(sigstruct, modulus=n.to_bytes(384, "little"), exponent=e)
    signature = key.sign(with_key.signed_bytes(), padding.PKCS1v15(), hashes.SHA256())
    s = int.from_bytes(signature, "big")
    return dataclasses.replace(
        with_key,
        signature=s.to_bytes(384, "little"),
        q1=(s * s // n).to_bytes(384, "little"),
        q2=((s * s % n) * s // n).to_bytes(384, "little"),
    )
