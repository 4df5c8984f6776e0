"""KEYREQUEST (512 bytes): what an enclave hands EGETKEY (SDM Vol. 3D, 38.18 and EGETKEY).

Parsing is not verification; building a request does not check what EGETKEY will
accept (reserved bytes must be zero, some policy bits need KSS). Integers are
little-endian, as SGX defines.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from cleanroom.sgx.errors import SgxParseError
from cleanroom.sgx.structs import Attributes, _check_bytes, _check_reserved, _check_uint, _exact


class KeyName(enum.IntEnum):
    """KEYREQUEST.KEYNAME: which key EGETKEY derives."""

    EINITTOKEN_KEY = 0
    PROVISION_KEY = 1
    PROVISION_SEAL_KEY = 2
    REPORT_KEY = 3
    SEAL_KEY = 4


class KeyPolicy(enum.IntFlag):
    """KEYREQUEST.KEYPOLICY bits (bits 6-15 are reserved and must be zero)."""

    MRENCLAVE = 0x01
    MRSIGNER = 0x02
    NOISVPRODID = 0x04
    CONFIGID = 0x08
    ISVFAMILYID = 0x10
    ISVEXTPRODID = 0x20


KEY_POLICY_RESERVED = 0xFFC0

_KEY_REQUEST = struct.Struct("<HHH2s16s16s32sIH434s")
_KEY_REQUEST_RESERVED = (2, 434)


@dataclass(frozen=True)
class KeyRequest:
    """sgx_key_request_t (512 bytes; EGETKEY wants it 512-byte aligned).

    Layout: KEYNAME u16 @0, KEYPOLICY u16 @2, ISVSVN u16 @4, reserved @6 (2),
    CPUSVN @8 (16), ATTRIBUTEMASK @24 (16), KEYID @40 (32), MISCMASK u32 @72,
    CONFIGSVN u16 @76, reserved @78 (434).
    """

    key_name: int
    key_policy: int = 0
    isv_svn: int = 0
    cpu_svn: bytes = bytes(16)
    attribute_mask: Attributes = field(default_factory=lambda: Attributes(flags=0, xfrm=0))
    key_id: bytes = bytes(32)
    misc_mask: int = 0
    config_svn: int = 0
    # Reserved bytes @6 and @78, kept so that parsing then encoding is the identity.
    reserved: tuple[bytes, bytes] = field(default=(bytes(2), bytes(434)), repr=False)
    SIZE: ClassVar[int] = 512

    def __post_init__(self) -> None:
        name = "key request"
        for attr in ("key_name", "key_policy", "isv_svn", "config_svn"):
            _check_uint(name, attr, getattr(self, attr), 16)
        _check_uint(name, "misc_mask", self.misc_mask, 32)
        _check_bytes(name, "cpu_svn", self.cpu_svn, 16)
        _check_bytes(name, "key_id", self.key_id, 32)
        if not isinstance(self.attribute_mask, Attributes):
            raise SgxParseError(name, "attribute_mask must be Attributes")
        _check_reserved(name, self.reserved, _KEY_REQUEST_RESERVED)
        object.__setattr__(self, "key_name", int(self.key_name))
        object.__setattr__(self, "key_policy", int(self.key_policy))

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyRequest:
        (
            key_name, key_policy, isv_svn, r1, cpu_svn, attribute_mask, key_id,
            misc_mask, config_svn, r2,
        ) = _KEY_REQUEST.unpack(_exact("key request", data, cls.SIZE))  # fmt: skip
        return cls(
            key_name=key_name,
            key_policy=key_policy,
            isv_svn=isv_svn,
            cpu_svn=cpu_svn,
            attribute_mask=Attributes.from_bytes(attribute_mask),
            key_id=key_id,
            misc_mask=misc_mask,
            config_svn=config_svn,
            reserved=(r1, r2),
        )

    def to_bytes(self) -> bytes:
        r1, r2 = self.reserved
        return _KEY_REQUEST.pack(
            self.key_name, self.key_policy, self.isv_svn, r1, self.cpu_svn,
            self.attribute_mask.to_bytes(), self.key_id, self.misc_mask, self.config_svn, r2,
        )  # fmt: skip
