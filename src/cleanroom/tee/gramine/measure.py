"""What a Gramine enclave's signature says it is: read and check its SIGSTRUCT.

``gramine-sgx-sign`` writes ``<app>.sig``, the SIGSTRUCT that EINIT checks before
an enclave may run. It names the MRENCLAVE the enclave must have, the signer's
RSA-3072 modulus (whose SHA-256 is MRSIGNER), ISVPRODID, ISVSVN and the ATTRIBUTES
the enclave runs with. These are the reference values clients compare a quote
with, so the file is checked as EINIT would check it before any value is believed:
its size and fixed headers, exponent 3 and a 3072-bit modulus, the RSA signature
(PKCS#1 v1.5, SHA-256) over the two signed regions, Q1 and Q2, and that the
signature admits no DEBUG enclave.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cleanroom.errors import CheckFailed
from cleanroom.sgx import AttributeFlags, Attributes, SgxParseError, SigStruct
from cleanroom.sgx.sigstruct import KEY_SIZE

SGX_RSA_EXPONENT = 3
SGX_RSA_BITS = 3072


class SigstructError(CheckFailed):
    """A SIGSTRUCT that is malformed (``sigstruct-size``, ``sigstruct-header``) or
    refused (``sigstruct-exponent``, ``-modulus``, ``-signature``, ``-q1q2``, ``-debug``)."""

    MALFORMED = frozenset({"sigstruct-size", "sigstruct-header"})


@dataclass(frozen=True)
class GramineMeasurement:
    """The identity a signed Gramine enclave gets, as its SIGSTRUCT states it."""

    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    attributes: Attributes
    attribute_mask: Attributes
    misc_select: int
    misc_mask: int
    date: str

    @property
    def debug(self) -> bool:
        return self.attributes.debug

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": "gramine-sgx",
            "mrenclave": self.mr_enclave.hex(),
            "mrsigner": self.mr_signer.hex(),
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
            "debug": self.debug,
            "attributes": self.attributes.to_bytes().hex(),
            "attribute_flags": self.attributes.flag_names(),
            "attribute_mask": self.attribute_mask.to_bytes().hex(),
            "misc_select": self.misc_select,
            "misc_mask": self.misc_mask,
            "date": self.date,
        }


def _date(bcd: int) -> str:
    """SIGSTRUCT.DATE is yyyymmdd in binary-coded decimal (0x20250614 is 2025-06-14)."""
    digits = f"{bcd:08x}"
    return f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"


def read_sigstruct(data: bytes, *, allow_debug: bool = False) -> GramineMeasurement:
    """The measurement in a ``.sig`` file, or :class:`SigstructError` naming the check."""
    if len(data) != SigStruct.SIZE:
        raise SigstructError(
            "sigstruct-size",
            f"{SigStruct.SIZE} bytes",
            f"{len(data)} bytes",
            "not a SIGSTRUCT (gramine-sgx-sign writes 1808-byte .sig files)",
        )
    try:
        sigstruct = SigStruct.from_bytes(data)
    except SgxParseError as error:
        raise SigstructError(
            "sigstruct-header",
            "the SDM's fixed HEADER and HEADER2",
            error.message,
            "not a SIGSTRUCT",
        ) from error
    if sigstruct.exponent != SGX_RSA_EXPONENT:
        raise SigstructError(
            "sigstruct-exponent",
            SGX_RSA_EXPONENT,
            sigstruct.exponent,
            "SGX signer keys have public exponent 3; EINIT refuses any other",
        )
    n = sigstruct.modulus_int
    if n.bit_length() != SGX_RSA_BITS:
        raise SigstructError(
            "sigstruct-modulus",
            f"a {SGX_RSA_BITS}-bit modulus",
            f"{n.bit_length()} bits",
            "SGX signer keys are RSA-3072",
        )
    s = sigstruct.signature_int
    try:
        if s >= n:
            raise InvalidSignature
        public_key = rsa.RSAPublicNumbers(SGX_RSA_EXPONENT, n).public_key()
        public_key.verify(
            s.to_bytes(KEY_SIZE, "big"),
            sigstruct.signed_bytes(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except InvalidSignature as error:
        raise SigstructError(
            "sigstruct-signature",
            f"an RSA signature by the key of MRSIGNER {sigstruct.mr_signer.hex()}",
            "a signature that does not verify",
            "the SIGSTRUCT was changed after signing, or signed by another key",
        ) from error
    q1, q2 = s * s // n, (s * s % n) * s // n
    if sigstruct.q1 != q1.to_bytes(KEY_SIZE, "little") or sigstruct.q2 != q2.to_bytes(
        KEY_SIZE, "little"
    ):
        raise SigstructError(
            "sigstruct-q1q2",
            "Q1 = S² / N and Q2 = (S³ - Q1·S·N) / N",
            "other values",
            "EINIT checks the signature with Q1 and Q2 and would refuse this SIGSTRUCT",
        )
    if not allow_debug:
        if sigstruct.attributes.debug:
            raise SigstructError(
                "sigstruct-debug",
                "DEBUG clear (sgx.debug = false)",
                "DEBUG set",
                "a DEBUG enclave: the host can read its memory, so it proves nothing",
                "sign the production manifest, with sgx.debug = false",
            )
        if not sigstruct.attribute_mask.flags & AttributeFlags.DEBUG:
            raise SigstructError(
                "sigstruct-debug",
                "ATTRIBUTEMASK with the DEBUG bit (EINIT then enforces DEBUG clear)",
                f"ATTRIBUTEMASK {sigstruct.attribute_mask.to_bytes().hex()}",
                "this signature leaves DEBUG free: it launches a DEBUG enclave too",
            )
    return GramineMeasurement(
        mr_enclave=sigstruct.mr_enclave,
        mr_signer=sigstruct.mr_signer,
        isv_prod_id=sigstruct.isv_prod_id,
        isv_svn=sigstruct.isv_svn,
        attributes=sigstruct.attributes,
        attribute_mask=sigstruct.attribute_mask,
        misc_select=sigstruct.misc_select,
        misc_mask=sigstruct.misc_mask,
        date=_date(sigstruct.date),
    )
