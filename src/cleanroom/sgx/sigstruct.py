"""SIGSTRUCT (1808 bytes): the enclave signer's statement that EINIT checks.

Layout from the SDM (Vol. 3D, 38.13) as Gramine's ``sgx_arch.h`` spells it. Parsing
is not verification: the RSA signature, its exponent and the DEBUG bit are judged
by the caller (``cleanroom.tee.gramine.measure``). Integers are little-endian; the
modulus, signature, Q1 and Q2 are 384-byte little-endian integers.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import ClassVar

from cleanroom.sgx.errors import SgxParseError
from cleanroom.sgx.structs import Attributes, _check_bytes, _check_uint, _exact

# Fixed by the SDM; anything else is not a SIGSTRUCT.
SIGSTRUCT_HEADER = bytes.fromhex("06000000e10000000000010000000000")
SIGSTRUCT_HEADER2 = bytes.fromhex("01010000600000006000000001000000")
SIGSTRUCT_VENDOR_INTEL = 0x8086

KEY_SIZE = 384

_SIGSTRUCT = struct.Struct("<16sII16sI84s384sI384sIIBB2s16s16s16s32s16s16sHH12s384s384s")
# The two signed regions: HEADER..reserved1 and MISCSELECT..ISVSVN.
_SIGNED_FIRST = slice(0, 128)
_SIGNED_SECOND = slice(900, 1028)


@dataclass(frozen=True)
class SigStruct:
    """sgx_sigstruct_t. Offsets: HEADER @0, VENDOR @16, DATE @20, HEADER2 @24,
    SWDEFINED @40, MODULUS @128, EXPONENT @512, SIGNATURE @516, MISCSELECT @900,
    MISCMASK @904, CET @908/@909, ISVFAMILYID @912, ATTRIBUTES @928,
    ATTRIBUTEMASK @944, ENCLAVEHASH @960, ISVEXTPRODID @1008, ISVPRODID @1024,
    ISVSVN @1026, Q1 @1040, Q2 @1424.
    """

    vendor: int
    date: int  # yyyymmdd as binary-coded decimal, e.g. 0x20250614
    sw_defined: int
    modulus: bytes  # 384 bytes, little-endian
    exponent: int
    signature: bytes  # 384 bytes, little-endian
    misc_select: int
    misc_mask: int
    cet_attributes: int
    cet_attributes_mask: int
    isv_family_id: bytes
    attributes: Attributes
    attribute_mask: Attributes
    enclave_hash: bytes  # MRENCLAVE
    isv_ext_prod_id: bytes
    isv_prod_id: int
    isv_svn: int
    q1: bytes
    q2: bytes
    # reserved1 @44 (84), reserved2 @910 (2), reserved3 @992 (16), reserved4 @1028 (12).
    reserved: tuple[bytes, bytes, bytes, bytes] = (bytes(84), bytes(2), bytes(16), bytes(12))
    SIZE: ClassVar[int] = 1808

    def __post_init__(self) -> None:
        name = "sigstruct"
        for attr in ("vendor", "date", "sw_defined", "exponent", "misc_select", "misc_mask"):
            _check_uint(name, attr, getattr(self, attr), 32)
        for attr in ("cet_attributes", "cet_attributes_mask"):
            _check_uint(name, attr, getattr(self, attr), 8)
        for attr in ("isv_prod_id", "isv_svn"):
            _check_uint(name, attr, getattr(self, attr), 16)
        for attr, size in (
            ("modulus", KEY_SIZE),
            ("signature", KEY_SIZE),
            ("q1", KEY_SIZE),
            ("q2", KEY_SIZE),
            ("isv_family_id", 16),
            ("enclave_hash", 32),
            ("isv_ext_prod_id", 16),
        ):
            _check_bytes(name, attr, getattr(self, attr), size)
        for attr in ("attributes", "attribute_mask"):
            if not isinstance(getattr(self, attr), Attributes):
                raise SgxParseError(name, f"{attr} must be Attributes")
        sizes = tuple(len(part) for part in self.reserved if isinstance(part, bytes))
        if sizes != (84, 2, 16, 12):
            raise SgxParseError(name, f"reserved must be bytes of sizes (84, 2, 16, 12): {sizes}")

    @property
    def mr_enclave(self) -> bytes:
        """ENCLAVEHASH: the MRENCLAVE that EINIT requires the enclave to have."""
        return self.enclave_hash

    @property
    def mr_signer(self) -> bytes:
        """MRSIGNER: SHA-256 of the 384-byte little-endian modulus, as EINIT computes it."""
        return hashlib.sha256(self.modulus).digest()

    @property
    def modulus_int(self) -> int:
        return int.from_bytes(self.modulus, "little")

    @property
    def signature_int(self) -> int:
        return int.from_bytes(self.signature, "little")

    @classmethod
    def from_bytes(cls, data: bytes) -> SigStruct:
        raw = _exact("sigstruct", data, cls.SIZE)
        (
            header, vendor, date, header2, sw_defined, r1, modulus, exponent, signature,
            misc_select, misc_mask, cet, cet_mask, r2, isv_family_id, attributes,
            attribute_mask, enclave_hash, r3, isv_ext_prod_id, isv_prod_id, isv_svn, r4,
            q1, q2,
        ) = _SIGSTRUCT.unpack(raw)  # fmt: skip
        if header != SIGSTRUCT_HEADER or header2 != SIGSTRUCT_HEADER2:
            raise SgxParseError(
                "sigstruct",
                f"HEADER/HEADER2 are {header.hex()}/{header2.hex()}, not the fixed "
                f"{SIGSTRUCT_HEADER.hex()}/{SIGSTRUCT_HEADER2.hex()}: not a SIGSTRUCT",
            )
        return cls(
            vendor=vendor,
            date=date,
            sw_defined=sw_defined,
            modulus=modulus,
            exponent=exponent,
            signature=signature,
            misc_select=misc_select,
            misc_mask=misc_mask,
            cet_attributes=cet,
            cet_attributes_mask=cet_mask,
            isv_family_id=isv_family_id,
            attributes=Attributes.from_bytes(attributes),
            attribute_mask=Attributes.from_bytes(attribute_mask),
            enclave_hash=enclave_hash,
            isv_ext_prod_id=isv_ext_prod_id,
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            q1=q1,
            q2=q2,
            reserved=(r1, r2, r3, r4),
        )

    def to_bytes(self) -> bytes:
        r1, r2, r3, r4 = self.reserved
        return _SIGSTRUCT.pack(
            SIGSTRUCT_HEADER, self.vendor, self.date, SIGSTRUCT_HEADER2, self.sw_defined, r1,
            self.modulus, self.exponent, self.signature, self.misc_select, self.misc_mask,
            self.cet_attributes, self.cet_attributes_mask, r2, self.isv_family_id,
            self.attributes.to_bytes(), self.attribute_mask.to_bytes(), self.enclave_hash, r3,
            self.isv_ext_prod_id, self.isv_prod_id, self.isv_svn, r4, self.q1, self.q2,
        )  # fmt: skip

    def signed_bytes(self) -> bytes:
        """The 256 bytes the signer's RSA signature covers (two 128-byte regions)."""
        raw = self.to_bytes()
        return raw[_SIGNED_FIRST] + raw[_SIGNED_SECOND]
