"""The simulated platform's public-key infrastructure: a stand-in for Intel's.

Intel's DCAP trust chain is: *Intel SGX Root CA* → *PCK Processor CA* → one PCK
(Provisioning Certification Key) certificate per platform, carrying the SGX
extension (PPID, TCB, PCE-ID, FMSPC, SGX type); and *Root CA* → *TCB Signing*
certificate, whose key signs TCB info and QE identity. This module builds the same
shapes with our own keys, so that the *same* verifier (dcap-qvl) that appraises real
quotes appraises simulated ones against an explicitly trusted simulated root.

Every subject name says SIMULATED: a certificate from here must never be mistaken
for one of Intel's.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat import asn1
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

ROOT_CA_NAME = "cleanroom SIMULATED SGX Root CA (INSECURE)"
# dcap-qvl tells the PCK CA kind ("processor" or "platform") from this common name.
PCK_CA_NAME = "cleanroom SIMULATED SGX PCK Processor CA (INSECURE)"
PCK_LEAF_NAME = "cleanroom SIMULATED SGX PCK Certificate (INSECURE)"
TCB_SIGNING_NAME = "cleanroom SIMULATED SGX TCB Signing (INSECURE)"

CA_VALIDITY = dt.timedelta(days=365 * 15)
LEAF_VALIDITY = dt.timedelta(days=365 * 7)

# Intel SGX PCK Certificate and CRL Profile: the SGX extension and its members.
SGX_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")


def _oid(suffix: str) -> x509.ObjectIdentifier:
    return x509.ObjectIdentifier(f"{SGX_EXTENSION_OID.dotted_string}.{suffix}")


@asn1.sequence
class _IntEntry:
    oid: x509.ObjectIdentifier
    value: int


@asn1.sequence
class _BytesEntry:
    oid: x509.ObjectIdentifier
    value: bytes


@asn1.sequence
class _TlvEntry:
    oid: x509.ObjectIdentifier
    value: asn1.TLV


@asn1.sequence
class _Tcb:
    """The TCB member: 16 SGX TCB component SVNs, then PCESVN and CPUSVN."""

    comp01: _IntEntry
    comp02: _IntEntry
    comp03: _IntEntry
    comp04: _IntEntry
    comp05: _IntEntry
    comp06: _IntEntry
    comp07: _IntEntry
    comp08: _IntEntry
    comp09: _IntEntry
    comp10: _IntEntry
    comp11: _IntEntry
    comp12: _IntEntry
    comp13: _IntEntry
    comp14: _IntEntry
    comp15: _IntEntry
    comp16: _IntEntry
    pcesvn: _IntEntry
    cpusvn: _BytesEntry


@asn1.sequence
class _TcbEntry:
    oid: x509.ObjectIdentifier
    value: _Tcb


@asn1.sequence
class _SgxExtension:
    ppid: _BytesEntry
    tcb: _TcbEntry
    pce_id: _BytesEntry
    fmspc: _BytesEntry
    sgx_type: _TlvEntry


_ENUMERATED_TAG = 0x0A


@dataclass(frozen=True)
class PlatformTcb:
    """What the PCK certificate says about the platform: identity and TCB level."""

    ppid: bytes  # 16 bytes, Platform Provisioning ID
    cpu_svn: bytes  # 16 bytes: the 16 SGX TCB component SVNs, in order
    pce_svn: int
    pce_id: bytes  # 2 bytes
    fmspc: bytes  # 6 bytes, Family-Model-Stepping-Platform-CustomSKU
    sgx_type: int = 0  # 0 = Standard

    def __post_init__(self) -> None:
        for name, value, size in (
            ("ppid", self.ppid, 16),
            ("cpu_svn", self.cpu_svn, 16),
            ("pce_id", self.pce_id, 2),
            ("fmspc", self.fmspc, 6),
        ):
            if len(value) != size:
                raise ValueError(f"PlatformTcb.{name} must be {size} bytes, got {len(value)}")
        if not 0 <= self.pce_svn <= 0xFFFF:
            raise ValueError(f"PlatformTcb.pce_svn must fit in 16 bits, got {self.pce_svn}")
        if not 0 <= self.sgx_type <= 2:
            raise ValueError(f"PlatformTcb.sgx_type must be 0, 1 or 2, got {self.sgx_type}")


def sgx_extension_der(tcb: PlatformTcb) -> bytes:
    """DER value of the Intel SGX extension of a PCK certificate."""
    components = {
        f"comp{i + 1:02d}": _IntEntry(oid=_oid(f"2.{i + 1}"), value=svn)
        for i, svn in enumerate(tcb.cpu_svn)
    }
    tcb_value = _Tcb(
        **components,
        pcesvn=_IntEntry(oid=_oid("2.17"), value=tcb.pce_svn),
        cpusvn=_BytesEntry(oid=_oid("2.18"), value=tcb.cpu_svn),
    )
    extension = _SgxExtension(
        ppid=_BytesEntry(oid=_oid("1"), value=tcb.ppid),
        tcb=_TcbEntry(oid=_oid("2"), value=tcb_value),
        pce_id=_BytesEntry(oid=_oid("3"), value=tcb.pce_id),
        fmspc=_BytesEntry(oid=_oid("4"), value=tcb.fmspc),
        # SGX Type is an ENUMERATED, which the declarative API has no type for.
        sgx_type=_TlvEntry(
            oid=_oid("5"),
            value=asn1.decode_der(asn1.TLV, bytes([_ENUMERATED_TAG, 1, tcb.sgx_type])),
        ),
    )
    return asn1.encode_der(extension)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cleanroom simulated TEE"),
        ]
    )


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key: every key of Intel's DCAP PKI is ECDSA P-256."""
    return ec.generate_private_key(ec.SECP256R1())


def _builder(
    subject: str,
    issuer: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    validity: dt.timedelta,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _signing_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=True,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def root_certificate(key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> x509.Certificate:
    """The self-signed simulated root CA: what a client must explicitly trust."""
    return (
        _builder(ROOT_CA_NAME, ROOT_CA_NAME, key.public_key(), key, now, CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .sign(key, hashes.SHA256())
    )


def pck_ca_certificate(
    key: ec.EllipticCurvePrivateKey, root_key: ec.EllipticCurvePrivateKey, now: dt.datetime
) -> x509.Certificate:
    return (
        _builder(PCK_CA_NAME, ROOT_CA_NAME, key.public_key(), root_key, now, CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .sign(root_key, hashes.SHA256())
    )


def pck_certificate(
    key: ec.EllipticCurvePrivateKey,
    pck_ca_key: ec.EllipticCurvePrivateKey,
    tcb: PlatformTcb,
    now: dt.datetime,
) -> x509.Certificate:
    """The platform's PCK certificate, with the SGX extension describing its TCB."""
    return (
        _builder(PCK_LEAF_NAME, PCK_CA_NAME, key.public_key(), pck_ca_key, now, LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_signing_usage(), critical=True)
        .add_extension(
            x509.UnrecognizedExtension(SGX_EXTENSION_OID, sgx_extension_der(tcb)), critical=False
        )
        .sign(pck_ca_key, hashes.SHA256())
    )


def tcb_signing_certificate(
    key: ec.EllipticCurvePrivateKey, root_key: ec.EllipticCurvePrivateKey, now: dt.datetime
) -> x509.Certificate:
    return (
        _builder(TCB_SIGNING_NAME, ROOT_CA_NAME, key.public_key(), root_key, now, LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_signing_usage(), critical=True)
        .sign(root_key, hashes.SHA256())
    )


def crl(
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
) -> bytes:
    """An empty DER CRL with a CRLNumber, as Intel's root and PCK CA issue them."""
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(_name(issuer))
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


def sign_raw(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ECDSA P-256/SHA-256 signature as the 64-byte r‖s that DCAP structures carry."""
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def raw_public_key(key: ec.EllipticCurvePublicKey) -> bytes:
    """The 64-byte x‖y point (no 0x04 prefix) that a quote carries as attestation key."""
    point = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return point[1:]


def pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
