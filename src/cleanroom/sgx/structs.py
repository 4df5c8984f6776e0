"""SGX structures with exact byte formats (Intel SDM Vol. 3D ch. 38; DCAP quote v3).

Parsing is not verification: it only says the bytes have the right shape.
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from cleanroom.sgx.errors import SgxParseError, UnsupportedTeeError

INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081


def _exact(structure: str, data: bytes, size: int) -> None:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SgxParseError(structure, f"expected bytes, got {type(data).__name__}")
    if len(data) != size:
        raise SgxParseError(structure, f"must be exactly {size} bytes, got {len(data)}")


def _check_bytes(structure: str, name: str, value: bytes, size: int) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        got = len(value) if isinstance(value, bytes) else type(value).__name__
        raise SgxParseError(structure, f"{name} must be {size} bytes, got {got}")


def _check_uint(structure: str, name: str, value: int, bits: int) -> None:
    if not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise SgxParseError(
            structure, f"{name} must be an unsigned {bits}-bit integer, got {value!r}"
        )


class AttributeFlags(enum.IntFlag):
    """SECS.ATTRIBUTES.FLAGS bits."""

    INIT = 0x01
    DEBUG = 0x02
    MODE64BIT = 0x04
    PROVISIONKEY = 0x10
    EINITTOKENKEY = 0x20
    CET = 0x40
    KSS = 0x80
    AEXNOTIFY = 0x400


@dataclass(frozen=True)
class Attributes:
    """ATTRIBUTES: FLAGS (u64) and XFRM (u64), 16 bytes little-endian."""

    flags: int
    xfrm: int
    SIZE: ClassVar[int] = 16

    def __post_init__(self) -> None:
        _check_uint("attributes", "flags", int(self.flags), 64)
        _check_uint("attributes", "xfrm", int(self.xfrm), 64)

    @classmethod
    def from_bytes(cls, data: bytes) -> Attributes:
        _exact("attributes", data, cls.SIZE)
        flags, xfrm = struct.unpack("<QQ", data)
        return cls(flags=flags, xfrm=xfrm)

    def to_bytes(self) -> bytes:
        return struct.pack("<QQ", int(self.flags), int(self.xfrm))

    @property
    def debug(self) -> bool:
        return bool(self.flags & AttributeFlags.DEBUG)

    @property
    def mode64bit(self) -> bool:
        return bool(self.flags & AttributeFlags.MODE64BIT)

    @property
    def init(self) -> bool:
        return bool(self.flags & AttributeFlags.INIT)

    def flag_names(self) -> list[str]:
        return [flag.name for flag in AttributeFlags if flag.name and self.flags & flag]


_REPORT_BODY = struct.Struct("<16sI12s16s16s32s32s32s32s64sHHH42s16s64s")
_REPORT_BODY_RESERVED = (12, 32, 32, 42)


@dataclass(frozen=True)
class ReportBody:
    """sgx_report_body_t (384 bytes): what the CPU attests about an enclave."""

    cpu_svn: bytes
    misc_select: int
    isv_ext_prod_id: bytes
    attributes: Attributes
    mr_enclave: bytes
    mr_signer: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes
    # Reserved bytes, kept so that parsing and re-encoding is the identity.
    reserved: tuple[bytes, bytes, bytes, bytes] = field(
        default=tuple(bytes(n) for n in _REPORT_BODY_RESERVED),
        repr=False,  # type: ignore[assignment]
    )
    SIZE: ClassVar[int] = 384

    def __post_init__(self) -> None:
        name = "report body"
        for attr, size in (
            ("cpu_svn", 16),
            ("isv_ext_prod_id", 16),
            ("mr_enclave", 32),
            ("mr_signer", 32),
            ("config_id", 64),
            ("isv_family_id", 16),
            ("report_data", 64),
        ):
            _check_bytes(name, attr, getattr(self, attr), size)
        _check_uint(name, "misc_select", self.misc_select, 32)
        for attr in ("isv_prod_id", "isv_svn", "config_svn"):
            _check_uint(name, attr, getattr(self, attr), 16)
        if not isinstance(self.attributes, Attributes):
            raise SgxParseError(name, "attributes must be an Attributes")
        if tuple(len(r) for r in self.reserved) != _REPORT_BODY_RESERVED:
            raise SgxParseError(name, "reserved fields have the wrong sizes")

    @classmethod
    def create(
        cls,
        *,
        mr_enclave: bytes,
        mr_signer: bytes,
        attributes: Attributes,
        report_data: bytes,
        cpu_svn: bytes = bytes(16),
        misc_select: int = 0,
        isv_ext_prod_id: bytes = bytes(16),
        config_id: bytes = bytes(64),
        isv_prod_id: int = 0,
        isv_svn: int = 0,
        config_svn: int = 0,
        isv_family_id: bytes = bytes(16),
    ) -> ReportBody:
        return cls(
            cpu_svn=cpu_svn,
            misc_select=misc_select,
            isv_ext_prod_id=isv_ext_prod_id,
            attributes=attributes,
            mr_enclave=mr_enclave,
            mr_signer=mr_signer,
            config_id=config_id,
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            config_svn=config_svn,
            isv_family_id=isv_family_id,
            report_data=report_data,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ReportBody:
        _exact("report body", data, cls.SIZE)
        (
            cpu_svn, misc_select, r1, isv_ext_prod_id, attributes, mr_enclave, r2,
            mr_signer, r3, config_id, isv_prod_id, isv_svn, config_svn, r4,
            isv_family_id, report_data,
        ) = _REPORT_BODY.unpack(bytes(data))  # fmt: skip
        return cls(
            cpu_svn=cpu_svn,
            misc_select=misc_select,
            isv_ext_prod_id=isv_ext_prod_id,
            attributes=Attributes.from_bytes(attributes),
            mr_enclave=mr_enclave,
            mr_signer=mr_signer,
            config_id=config_id,
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            config_svn=config_svn,
            isv_family_id=isv_family_id,
            report_data=report_data,
            reserved=(r1, r2, r3, r4),
        )

    def to_bytes(self) -> bytes:
        r1, r2, r3, r4 = self.reserved
        return _REPORT_BODY.pack(
            self.cpu_svn, self.misc_select, r1, self.isv_ext_prod_id,
            self.attributes.to_bytes(), self.mr_enclave, r2, self.mr_signer, r3,
            self.config_id, self.isv_prod_id, self.isv_svn, self.config_svn, r4,
            self.isv_family_id, self.report_data,
        )  # fmt: skip


@dataclass(frozen=True)
class Report:
    """sgx_report_t (432 bytes): body, key ID, AES-128-CMAC over the body."""

    body: ReportBody
    key_id: bytes
    mac: bytes
    SIZE: ClassVar[int] = 432

    def __post_init__(self) -> None:
        _check_bytes("report", "key_id", self.key_id, 32)
        _check_bytes("report", "mac", self.mac, 16)

    @classmethod
    def from_bytes(cls, data: bytes) -> Report:
        _exact("report", data, cls.SIZE)
        data = bytes(data)
        return cls(body=ReportBody.from_bytes(data[:384]), key_id=data[384:416], mac=data[416:])

    def to_bytes(self) -> bytes:
        return self.body.to_bytes() + self.key_id + self.mac


_TARGET_INFO = struct.Struct("<32s16s2sHI8s64s384s")


@dataclass(frozen=True)
class TargetInfo:
    """sgx_target_info_t (512 bytes): names the enclave a REPORT is MACed for."""

    mr_enclave: bytes
    attributes: Attributes
    config_svn: int
    misc_select: int
    config_id: bytes
    reserved: tuple[bytes, bytes, bytes] = field(
        default=(bytes(2), bytes(8), bytes(384)), repr=False
    )
    SIZE: ClassVar[int] = 512

    def __post_init__(self) -> None:
        _check_bytes("target info", "mr_enclave", self.mr_enclave, 32)
        _check_bytes("target info", "config_id", self.config_id, 64)
        _check_uint("target info", "config_svn", self.config_svn, 16)
        _check_uint("target info", "misc_select", self.misc_select, 32)
        if tuple(len(r) for r in self.reserved) != (2, 8, 384):
            raise SgxParseError("target info", "reserved fields have the wrong sizes")

    @classmethod
    def create(
        cls,
        *,
        mr_enclave: bytes,
        attributes: Attributes,
        config_svn: int = 0,
        misc_select: int = 0,
        config_id: bytes = bytes(64),
    ) -> TargetInfo:
        return cls(
            mr_enclave=mr_enclave,
            attributes=attributes,
            config_svn=config_svn,
            misc_select=misc_select,
            config_id=config_id,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> TargetInfo:
        _exact("target info", data, cls.SIZE)
        mr_enclave, attributes, r1, config_svn, misc_select, r2, config_id, r3 = (
            _TARGET_INFO.unpack(bytes(data))
        )
        return cls(
            mr_enclave=mr_enclave,
            attributes=Attributes.from_bytes(attributes),
            config_svn=config_svn,
            misc_select=misc_select,
            config_id=config_id,
            reserved=(r1, r2, r3),
        )

    def to_bytes(self) -> bytes:
        r1, r2, r3 = self.reserved
        return _TARGET_INFO.pack(
            self.mr_enclave, self.attributes.to_bytes(), r1, self.config_svn,
            self.misc_select, r2, self.config_id, r3,
        )  # fmt: skip


class CertificationDataType(enum.IntEnum):
    """QE certification data types (DCAP quote format)."""

    PPID_CLEARTEXT = 1
    PPID_RSA2048 = 2
    PPID_RSA3072 = 3
    PCK_CERT = 4
    PCK_CERT_CHAIN = 5
    QE_REPORT_CERT_DATA = 6
    PLATFORM_MANIFEST = 7


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END CERTIFICATE-----\r?\n?"
)


@dataclass(frozen=True)
class CertificationData:
    """Certification data: type (u16), size (u32), data."""

    cert_type: int
    data: bytes

    def __post_init__(self) -> None:
        _check_uint("certification data", "cert_type", self.cert_type, 16)
        if len(self.data) >= 1 << 32:
            raise SgxParseError("certification data", "data longer than a u32 size can say")

    def to_bytes(self) -> bytes:
        return struct.pack("<HI", self.cert_type, len(self.data)) + self.data

    def pem_chain(self) -> list[bytes]:
        """The PCK certificate chain (type 5), leaf first, one PEM block each."""
        if self.cert_type != CertificationDataType.PCK_CERT_CHAIN:
            raise SgxParseError(
                "certification data",
                f"type {self.cert_type} carries no PCK certificate chain (expected type 5)",
            )
        chain = [match.group(0) for match in _PEM_CERTIFICATE.finditer(self.data)]
        if not chain:
            raise SgxParseError("certification data", "type 5 data holds no PEM certificate")
        return [pem if pem.endswith(b"\n") else pem + b"\n" for pem in chain]


_HEADER = struct.Struct("<HHIHH16s20s")


@dataclass(frozen=True)
class QuoteHeader:
    """Quote header (48 bytes)."""

    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes
    SIZE: ClassVar[int] = 48

    def __post_init__(self) -> None:
        for attr, bits in (
            ("version", 16),
            ("attestation_key_type", 16),
            ("tee_type", 32),
            ("qe_svn", 16),
            ("pce_svn", 16),
        ):
            _check_uint("quote header", attr, getattr(self, attr), bits)
        _check_bytes("quote header", "qe_vendor_id", self.qe_vendor_id, 16)
        _check_bytes("quote header", "user_data", self.user_data, 20)

    @classmethod
    def from_bytes(cls, data: bytes) -> QuoteHeader:
        _exact("quote header", data, cls.SIZE)
        return cls(*_HEADER.unpack(bytes(data)))

    def to_bytes(self) -> bytes:
        return _HEADER.pack(
            self.version, self.attestation_key_type, self.tee_type, self.qe_svn,
            self.pce_svn, self.qe_vendor_id, self.user_data,
        )  # fmt: skip


class _Reader:
    """Bounds-checked reading: every short read is an SgxParseError."""

    def __init__(self, structure: str, data: bytes) -> None:
        self.structure = structure
        self.data = bytes(data)
        self.offset = 0

    def take(self, size: int, what: str) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise SgxParseError(
                self.structure,
                f"{what} needs {size} bytes at offset {self.offset}, "
                f"only {len(self.data) - self.offset} remain",
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "little")

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise SgxParseError(
                self.structure, f"{len(self.data) - self.offset} trailing bytes after the end"
            )


@dataclass(frozen=True)
class QuoteSignatureData:
    """ECDSA-256-with-P-256 quote signature data."""

    isv_signature: bytes
    attestation_key: bytes
    qe_report: ReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification_data: CertificationData

    def __post_init__(self) -> None:
        name = "quote signature data"
        _check_bytes(name, "isv_signature", self.isv_signature, 64)
        _check_bytes(name, "attestation_key", self.attestation_key, 64)
        _check_bytes(name, "qe_report_signature", self.qe_report_signature, 64)
        if len(self.qe_auth_data) > 0xFFFF:
            raise SgxParseError(name, "qe_auth_data longer than a u16 size can say")

    @classmethod
    def from_bytes(cls, data: bytes) -> QuoteSignatureData:
        reader = _Reader("quote signature data", data)
        result = cls._read(reader)
        reader.finish()
        return result

    @classmethod
    def _read(cls, reader: _Reader) -> QuoteSignatureData:
        isv_signature = reader.take(64, "ISV enclave report signature")
        attestation_key = reader.take(64, "attestation key")
        qe_report = ReportBody.from_bytes(reader.take(384, "QE report"))
        qe_report_signature = reader.take(64, "QE report signature")
        qe_auth_data = reader.take(reader.u16("QE auth data size"), "QE auth data")
        cert_type = reader.u16("certification data type")
        cert_data = reader.take(reader.u32("certification data size"), "certification data")
        return cls(
            isv_signature=isv_signature,
            attestation_key=attestation_key,
            qe_report=qe_report,
            qe_report_signature=qe_report_signature,
            qe_auth_data=qe_auth_data,
            certification_data=CertificationData(cert_type=cert_type, data=cert_data),
        )

    def to_bytes(self) -> bytes:
        return (
            self.isv_signature
            + self.attestation_key
            + self.qe_report.to_bytes()
            + self.qe_report_signature
            + struct.pack("<H", len(self.qe_auth_data))
            + self.qe_auth_data
            + self.certification_data.to_bytes()
        )


@dataclass(frozen=True)
class Quote:
    """An SGX ECDSA quote, version 3: header, enclave report body, signature data."""

    header: QuoteHeader
    body: ReportBody
    signature_data: QuoteSignatureData

    def signed_bytes(self) -> bytes:
        """Header ‖ body: what the attestation key's ISV signature covers."""
        return self.header.to_bytes() + self.body.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Quote:
        reader = _Reader("quote", data)
        header = QuoteHeader.from_bytes(reader.take(QuoteHeader.SIZE, "header"))
        if header.tee_type == TEE_TYPE_TDX:
            raise UnsupportedTeeError(
                "quote",
                f"this is a TDX quote (version {header.version}, tee_type 0x81); "
                "only SGX quotes are supported",
            )
        if header.tee_type != TEE_TYPE_SGX:
            raise UnsupportedTeeError(
                "quote", f"unknown TEE type 0x{header.tee_type:08x}; only SGX (0) is supported"
            )
        if header.version != 3:
            raise SgxParseError("quote", f"version {header.version} is not supported (expected 3)")
        if header.attestation_key_type != 2:
            raise SgxParseError(
                "quote",
                f"attestation key type {header.attestation_key_type} is not supported "
                "(expected 2, ECDSA-256-with-P-256)",
            )
        body = ReportBody.from_bytes(reader.take(ReportBody.SIZE, "report body"))
        signature_size = reader.u32("signature data size")
        signature = _Reader("quote signature data", reader.take(signature_size, "signature data"))
        signature_data = QuoteSignatureData._read(signature)
        signature.finish()
        reader.finish()
        return cls(header=header, body=body, signature_data=signature_data)

    def to_bytes(self) -> bytes:
        signature = self.signature_data.to_bytes()
        return self.signed_bytes() + struct.pack("<I", len(signature)) + signature


def parse_quote(data: bytes) -> Quote:
    """Parse an SGX ECDSA quote v3; a TDX quote raises UnsupportedTeeError."""
    return Quote.from_bytes(data)
