"""SGX structures with exact byte formats (Intel SDM Vol. 3D ch. 38; DCAP quote v3).

Parsing is not verification: it only says the bytes have the right shape. Every
integer is little-endian, as SGX defines. Reserved bytes are kept (never checked
to be zero, since later SGX versions may give them a meaning) so that re-encoding
a parsed structure gives back exactly the bytes it came from.
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


def _exact(structure: str, data: bytes, size: int) -> bytes:
    """The input as ``bytes``, refused unless it is exactly ``size`` bytes long."""
    raw = _as_bytes(structure, data)
    if len(raw) != size:
        raise SgxParseError(structure, f"must be exactly {size} bytes, got {len(raw)}")
    return raw


def _as_bytes(structure: str, data: object) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SgxParseError(structure, f"expected bytes, got {type(data).__name__}")
    return bytes(data)


def _check_bytes(structure: str, name: str, value: object, size: int) -> None:
    if not isinstance(value, bytes):
        raise SgxParseError(structure, f"{name} must be {size} bytes, got {type(value).__name__}")
    if len(value) != size:
        raise SgxParseError(structure, f"{name} must be {size} bytes, got {len(value)}")


def _check_uint(structure: str, name: str, value: object, bits: int) -> None:
    if not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise SgxParseError(
            structure, f"{name} must be an unsigned {bits}-bit integer, got {value!r}"
        )


def _check_type(structure: str, name: str, value: object, kind: type) -> None:
    if not isinstance(value, kind):
        raise SgxParseError(
            structure, f"{name} must be a {kind.__name__}, got {type(value).__name__}"
        )


def _check_reserved(structure: str, value: object, sizes: tuple[int, ...]) -> None:
    if (
        not isinstance(value, tuple)
        or len(value) != len(sizes)
        or not all(isinstance(part, bytes) for part in value)
        or tuple(len(part) for part in value) != sizes
    ):
        raise SgxParseError(structure, f"reserved must be bytes of sizes {sizes}, got {value!r}")


class AttributeFlags(enum.IntFlag):
    """SECS.ATTRIBUTES.FLAGS bits (SDM Vol. 3D, 38.7.1)."""

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
    """ATTRIBUTES: FLAGS (u64) then XFRM (u64), 16 bytes; DEBUG here decides trust."""

    flags: int
    xfrm: int
    SIZE: ClassVar[int] = 16

    def __post_init__(self) -> None:
        _check_uint("attributes", "flags", self.flags, 64)
        _check_uint("attributes", "xfrm", self.xfrm, 64)
        # Plain ints, so an AttributeFlags value and its number are one and the same value.
        object.__setattr__(self, "flags", int(self.flags))
        object.__setattr__(self, "xfrm", int(self.xfrm))

    @classmethod
    def from_bytes(cls, data: bytes) -> Attributes:
        flags, xfrm = struct.unpack("<QQ", _exact("attributes", data, cls.SIZE))
        return cls(flags=flags, xfrm=xfrm)

    def to_bytes(self) -> bytes:
        return struct.pack("<QQ", self.flags, self.xfrm)

    @property
    def debug(self) -> bool:
        """FLAGS.DEBUG: the enclave's memory is open to a debugger, so nothing it says counts."""
        return bool(self.flags & AttributeFlags.DEBUG)

    @property
    def mode64bit(self) -> bool:
        return bool(self.flags & AttributeFlags.MODE64BIT)

    @property
    def init(self) -> bool:
        return bool(self.flags & AttributeFlags.INIT)

    def flag_names(self) -> list[str]:
        """Names of the known FLAGS bits that are set, lowest bit first."""
        return [flag.name for flag in AttributeFlags if flag.name and self.flags & flag]


_REPORT_BODY = struct.Struct("<16sI12s16s16s32s32s32s32s64sHHH42s16s64s")
_REPORT_BODY_RESERVED = (12, 32, 32, 42)


@dataclass(frozen=True)
class ReportBody:
    """sgx_report_body_t (384 bytes): what the CPU attests about an enclave.

    Also the body of a quote and the QE report inside its signature data.
    """

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
    # Reserved bytes @20, @96, @160, @262, kept so that parsing then encoding is the identity.
    reserved: tuple[bytes, bytes, bytes, bytes] = field(
        default=(bytes(12), bytes(32), bytes(32), bytes(42)), repr=False
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
        _check_type(name, "attributes", self.attributes, Attributes)
        _check_reserved(name, self.reserved, _REPORT_BODY_RESERVED)

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
        """A body with zero reserved bytes; fields that most enclaves leave zero default to it."""
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
        (
            cpu_svn, misc_select, r1, isv_ext_prod_id, attributes, mr_enclave, r2,
            mr_signer, r3, config_id, isv_prod_id, isv_svn, config_svn, r4,
            isv_family_id, report_data,
        ) = _REPORT_BODY.unpack(_exact("report body", data, cls.SIZE))  # fmt: skip
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
    """sgx_report_t (432 bytes): body, KEYID, and the AES-128-CMAC of the body.

    The MAC is under the report key of the target enclave named in EREPORT's
    TARGETINFO, so only that enclave (on the same CPU) can check it.
    """

    body: ReportBody
    key_id: bytes
    mac: bytes
    SIZE: ClassVar[int] = 432

    def __post_init__(self) -> None:
        _check_type("report", "body", self.body, ReportBody)
        _check_bytes("report", "key_id", self.key_id, 32)
        _check_bytes("report", "mac", self.mac, 16)

    @classmethod
    def from_bytes(cls, data: bytes) -> Report:
        raw = _exact("report", data, cls.SIZE)
        return cls(body=ReportBody.from_bytes(raw[:384]), key_id=raw[384:416], mac=raw[416:])

    def to_bytes(self) -> bytes:
        return self.body.to_bytes() + self.key_id + self.mac


_TARGET_INFO = struct.Struct("<32s16s2sHI8s64s384s")
_TARGET_INFO_RESERVED = (2, 8, 384)


@dataclass(frozen=True)
class TargetInfo:
    """sgx_target_info_t (512 bytes): names the enclave a REPORT is MACed for."""

    mr_enclave: bytes
    attributes: Attributes
    config_svn: int
    misc_select: int
    config_id: bytes
    # Reserved bytes @48, @56, @128, kept so that parsing then encoding is the identity.
    reserved: tuple[bytes, bytes, bytes] = field(
        default=(bytes(2), bytes(8), bytes(384)), repr=False
    )
    SIZE: ClassVar[int] = 512

    def __post_init__(self) -> None:
        name = "target info"
        _check_bytes(name, "mr_enclave", self.mr_enclave, 32)
        _check_type(name, "attributes", self.attributes, Attributes)
        _check_uint(name, "config_svn", self.config_svn, 16)
        _check_uint(name, "misc_select", self.misc_select, 32)
        _check_bytes(name, "config_id", self.config_id, 64)
        _check_reserved(name, self.reserved, _TARGET_INFO_RESERVED)

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
        """A TARGETINFO with zero reserved bytes."""
        return cls(
            mr_enclave=mr_enclave,
            attributes=attributes,
            config_svn=config_svn,
            misc_select=misc_select,
            config_id=config_id,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> TargetInfo:
        mr_enclave, attributes, r1, config_svn, misc_select, r2, config_id, r3 = (
            _TARGET_INFO.unpack(_exact("target info", data, cls.SIZE))
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
    """QE certification data types (DCAP ECDSA quote library, "Certification Data")."""

    PPID_CLEARTEXT = 1
    PPID_RSA2048 = 2
    PPID_RSA3072 = 3
    PCK_CERT = 4
    PCK_CERT_CHAIN = 5
    QE_REPORT_CERT_DATA = 6
    PLATFORM_MANIFEST = 7


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END CERTIFICATE-----"
)


class _Reader:
    """Bounds-checked reading: every read past the end is an SgxParseError."""

    def __init__(self, structure: str, data: bytes) -> None:
        self.structure = structure
        self.data = _as_bytes(structure, data)
        self.offset = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset

    def take(self, size: int, what: str) -> bytes:
        if size > self.remaining:
            raise SgxParseError(
                self.structure,
                f"{what} needs {size} bytes at offset {self.offset}, only {self.remaining} remain",
            )
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "little")

    def finish(self) -> None:
        if self.remaining:
            raise SgxParseError(
                self.structure,
                f"{self.remaining} trailing bytes after the end (at offset {self.offset})",
            )


@dataclass(frozen=True)
class CertificationData:
    """Certification data: type (u16), size (u32), then size bytes of data.

    Type 5 (what a verifier without a PCS connection needs) holds the PCK
    certificate chain as concatenated PEM, leaf first.
    """

    cert_type: int
    data: bytes

    def __post_init__(self) -> None:
        _check_uint("certification data", "cert_type", self.cert_type, 16)
        if not isinstance(self.data, bytes):
            raise SgxParseError(
                "certification data", f"data must be bytes, got {type(self.data).__name__}"
            )
        if len(self.data) >= 1 << 32:
            raise SgxParseError(
                "certification data",
                f"data must be shorter than 2**32 bytes (u32 size), got {len(self.data)}",
            )

    @classmethod
    def from_bytes(cls, data: bytes) -> CertificationData:
        """Parse type | size | data; the size must cover exactly the rest of the input."""
        reader = _Reader("certification data", data)
        result = cls._read(reader)
        reader.finish()
        return result

    @classmethod
    def _read(cls, reader: _Reader) -> CertificationData:
        cert_type = reader.u16("certification data type")
        size = reader.u32("certification data size")
        return cls(cert_type=cert_type, data=reader.take(size, "certification data"))

    def to_bytes(self) -> bytes:
        return struct.pack("<HI", self.cert_type, len(self.data)) + self.data

    def pem_chain(self) -> list[bytes]:
        """The PCK certificate chain (type 5), leaf first, one LF-terminated PEM block each."""
        if self.cert_type != CertificationDataType.PCK_CERT_CHAIN:
            raise SgxParseError(
                "certification data",
                f"type {self.cert_type} carries no PCK certificate chain (expected type 5)",
            )
        chain = [
            match.group(0).replace(b"\r\n", b"\n") + b"\n"
            for match in _PEM_CERTIFICATE.finditer(self.data)
        ]
        if not chain:
            raise SgxParseError(
                "certification data",
                f"type 5 data ({len(self.data)} bytes) holds no PEM certificate",
            )
        return chain


_HEADER = struct.Struct("<HHIHH16s20s")


@dataclass(frozen=True)
class QuoteHeader:
    """Quote header (48 bytes): version, key type, TEE type, QE/PCE SVNs, vendor, user data."""

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
        """Parse the header only: which versions and TEEs are supported is Quote's call."""
        return cls(*_HEADER.unpack(_exact("quote header", data, cls.SIZE)))

    def to_bytes(self) -> bytes:
        return _HEADER.pack(
            self.version, self.attestation_key_type, self.tee_type, self.qe_svn,
            self.pce_svn, self.qe_vendor_id, self.user_data,
        )  # fmt: skip


@dataclass(frozen=True)
class QuoteSignatureData:
    """ECDSA-256-with-P-256 quote signature data (quote v3, after the u32 size).

    The attestation key signs header ‖ body; the QE report binds that key
    (REPORTDATA = SHA-256(key ‖ auth data) ‖ 0^32) and is signed by the PCK key,
    whose chain the certification data carries.
    """

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
        _check_type(name, "qe_report", self.qe_report, ReportBody)
        _check_bytes(name, "qe_report_signature", self.qe_report_signature, 64)
        if not isinstance(self.qe_auth_data, bytes):
            raise SgxParseError(
                name, f"qe_auth_data must be bytes, got {type(self.qe_auth_data).__name__}"
            )
        if len(self.qe_auth_data) > 0xFFFF:
            raise SgxParseError(
                name,
                "qe_auth_data must be at most 65535 bytes (u16 size), "
                f"got {len(self.qe_auth_data)}",
            )
        _check_type(name, "certification_data", self.certification_data, CertificationData)

    @classmethod
    def from_bytes(cls, data: bytes) -> QuoteSignatureData:
        """Parse exactly the signature data; every inner size is checked against what remains."""
        reader = _Reader("quote signature data", data)
        result = cls._read(reader)
        reader.finish()
        return result

    @classmethod
    def _read(cls, reader: _Reader) -> QuoteSignatureData:
        isv_signature = reader.take(64, "ISV enclave report signature")
        attestation_key = reader.take(64, "attestation key")
        qe_report = ReportBody.from_bytes(reader.take(ReportBody.SIZE, "QE report"))
        qe_report_signature = reader.take(64, "QE report signature")
        qe_auth_data = reader.take(reader.u16("QE auth data size"), "QE auth data")
        certification_data = CertificationData._read(reader)
        return cls(
            isv_signature=isv_signature,
            attestation_key=attestation_key,
            qe_report=qe_report,
            qe_report_signature=qe_report_signature,
            qe_auth_data=qe_auth_data,
            certification_data=certification_data,
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


_QUOTE_MIN_SIZE = QuoteHeader.SIZE + ReportBody.SIZE + 4


@dataclass(frozen=True)
class Quote:
    """An SGX ECDSA quote, version 3: header, enclave report body, u32 size, signature data."""

    header: QuoteHeader
    body: ReportBody
    signature_data: QuoteSignatureData

    def __post_init__(self) -> None:
        _check_type("quote", "header", self.header, QuoteHeader)
        _check_type("quote", "body", self.body, ReportBody)
        _check_type("quote", "signature_data", self.signature_data, QuoteSignatureData)

    def signed_bytes(self) -> bytes:
        """Header ‖ body: what the attestation key's ISV signature covers."""
        return self.header.to_bytes() + self.body.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Quote:
        """Parse an SGX quote v3 exactly; a TDX quote raises UnsupportedTeeError."""
        reader = _Reader("quote", data)
        if reader.remaining < QuoteHeader.SIZE:
            raise SgxParseError(
                "quote",
                f"must be at least {_QUOTE_MIN_SIZE} bytes (header {QuoteHeader.SIZE}, "
                f"body {ReportBody.SIZE}, signature data size 4), got {reader.remaining}",
            )
        header = QuoteHeader.from_bytes(reader.take(QuoteHeader.SIZE, "header"))
        if header.tee_type == TEE_TYPE_TDX:
            raise UnsupportedTeeError(
                "quote",
                f"this is a TDX quote (version {header.version}, tee_type 0x81); "
                "only SGX quotes are supported",
            )
        if header.tee_type != TEE_TYPE_SGX:
            raise UnsupportedTeeError(
                "quote",
                f"tee_type 0x{header.tee_type:08x} is not a known TEE; "
                "only SGX (tee_type 0) quotes are supported",
            )
        if header.version != 3:
            raise SgxParseError(
                "quote", f"version {header.version} is not supported (expected 3 for SGX)"
            )
        if header.attestation_key_type != 2:
            raise SgxParseError(
                "quote",
                f"attestation_key_type {header.attestation_key_type} is not supported "
                "(expected 2, ECDSA-256-with-P-256)",
            )
        if len(reader.data) < _QUOTE_MIN_SIZE:
            raise SgxParseError(
                "quote",
                f"must be at least {_QUOTE_MIN_SIZE} bytes (header {QuoteHeader.SIZE}, "
                f"body {ReportBody.SIZE}, signature data size 4), got {len(reader.data)}",
            )
        body = ReportBody.from_bytes(reader.take(ReportBody.SIZE, "report body"))
        signature_size = reader.u32("signature data size")
        if signature_size != reader.remaining:
            excess = "trailing bytes" if signature_size < reader.remaining else "truncated"
            raise SgxParseError(
                "quote",
                f"signature_data_len is {signature_size} but {reader.remaining} bytes follow "
                f"it ({excess})",
            )
        signature = _Reader("quote signature data", reader.take(signature_size, "signature data"))
        signature_data = QuoteSignatureData._read(signature)
        signature.finish()
        reader.finish()
        return cls(header=header, body=body, signature_data=signature_data)

    def to_bytes(self) -> bytes:
        signature = self.signature_data.to_bytes()
        return self.signed_bytes() + struct.pack("<I", len(signature)) + signature


def parse_quote(data: bytes) -> Quote:
    """Parse an SGX ECDSA quote v3 (same as ``Quote.from_bytes``)."""
    return Quote.from_bytes(data)
