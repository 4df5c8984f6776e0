"""Cryptographic appraisal of an SGX quote: dcap-qvl does it, we only frame it.

dcap-qvl checks, at an explicit time and against one root certificate: the PCK
certificate chain up to the root and the CRLs of root and PCK CA; the signatures of
the TCB info and QE identity (by the TCB signing certificate, which chains to the
same root); the quoting enclave's report (its identity against the QE identity,
its REPORTDATA binding the attestation key, its signature by the PCK key); and the
ISV enclave report's signature by that attestation key. It reports the platform's
TCB status and advisories.

Around it this module: refuses evidence that is not an SGX quote before dcap-qvl
sees it, turns every dcap-qvl refusal into a :class:`QuoteSignatureError`, and
cross-checks that the report body we parsed is exactly the one dcap-qvl verified.
No policy is applied here; see :mod:`cleanroom.attestation.policy`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import dcap_qvl
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from cleanroom.attestation.errors import (
    AttestationError,
    EvidenceError,
    QuoteSignatureError,
    UnsupportedEvidenceError,
)
from cleanroom.sgx import (
    Quote,
    QuoteHeader,
    ReportBody,
    SgxParseError,
    UnsupportedTeeError,
    parse_quote,
)

# SHA-256 of the DER of Intel's production "Intel SGX Root CA" (the self-signed
# root that dcap-qvl embeds), computed from the last certificate of
# pck_crl_issuer_chain in ../shared/vectors/sgx-dcap-qvl/sgx_quote_collateral.json.
# Hard-coded so that a root file a user passes can be recognised as Intel's.
INTEL_SGX_ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
INTEL_SGX_ROOT_CA_NAME = "Intel SGX Root CA (production)"

SGX_QUOTE_EXPECTED = "SGX (quote v3, tee_type 0)"
_TEE_NAMES = {0x00: "SGX", 0x81: "TDX"}


def _utc(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class TrustAnchor:
    """The one root certificate a quote's PCK chain and collateral must chain to.

    ``root_der`` is ``None`` exactly when the anchor is Intel's production root, in
    which case dcap-qvl's embedded copy is used. Any other root (such as a simulated
    platform's) must be trusted explicitly, and quotes chaining to it prove nothing
    about real SGX hardware.
    """

    name: str
    root_der: bytes | None = field(repr=False)
    is_intel_production: bool

    def __post_init__(self) -> None:
        # No silent fallback: a custom anchor without a certificate must never end up
        # verifying against Intel's root, nor an "Intel" anchor against another one.
        if self.root_der is None and not self.is_intel_production:
            raise ValueError("a TrustAnchor that is not Intel's production root needs root_der")
        if self.root_der is not None:
            is_intel = hashlib.sha256(self.root_der).hexdigest() == INTEL_SGX_ROOT_CA_SHA256
            if is_intel or self.is_intel_production:
                raise ValueError(
                    "Intel's production root is TrustAnchor.intel_production() (root_der=None)"
                )

    @classmethod
    def intel_production(cls) -> TrustAnchor:
        """Intel's production SGX root CA, as embedded in dcap-qvl."""
        return cls(name=INTEL_SGX_ROOT_CA_NAME, root_der=None, is_intel_production=True)

    @classmethod
    def from_certificate(cls, data: bytes, *, name: str | None = None) -> TrustAnchor:
        """A trust anchor from one self-signed root certificate, PEM or DER.

        If the certificate is Intel's production root, the result is
        :meth:`intel_production`; otherwise it is a custom anchor named ``name`` or
        the certificate's subject common name. Raises :class:`EvidenceError` when
        ``data`` is not exactly one self-signed X.509 certificate.
        """
        certificate = _load_one_certificate(bytes(data))
        der = certificate.public_bytes(Encoding.DER)
        if hashlib.sha256(der).hexdigest() == INTEL_SGX_ROOT_CA_SHA256:
            return cls.intel_production()
        if name is None:
            common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            value = common_names[0].value if common_names else None
            name = value if isinstance(value, str) else certificate.subject.rfc4514_string()
        return cls(name=name, root_der=der, is_intel_production=False)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the root certificate's DER, lowercase hex."""
        if self.root_der is None:
            return INTEL_SGX_ROOT_CA_SHA256
        return hashlib.sha256(self.root_der).hexdigest()


def _load_one_certificate(data: bytes) -> x509.Certificate:
    expected = "one self-signed X.509 root certificate, PEM or DER"
    try:
        if b"-----BEGIN" in data:
            certificates = x509.load_pem_x509_certificates(data)
        else:
            certificates = [x509.load_der_x509_certificate(data)]
    except ValueError as error:
        raise EvidenceError(
            "trust-root",
            expected,
            f"{len(data)} bytes that are not a certificate ({error})",
            "the trust root is not a certificate",
        ) from error
    if len(certificates) != 1:
        raise EvidenceError(
            "trust-root",
            expected,
            f"{len(certificates)} certificates",
            "the trust root file must hold exactly one certificate, the root",
        )
    certificate = certificates[0]
    try:
        if certificate.issuer != certificate.subject:
            raise ValueError("issuer differs from subject")
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature) as error:
        raise EvidenceError(
            "trust-root",
            expected,
            f"a certificate for {certificate.subject.rfc4514_string()} that is not "
            f"self-signed ({error or 'signature does not verify'})",
            "the trust root must be a root CA certificate, not an intermediate or leaf",
        ) from error
    return certificate


def load_collateral(data: str | bytes) -> dcap_qvl.QuoteCollateralV3:
    """Parse collateral in dcap-qvl's ``QuoteCollateralV3`` JSON form.

    The collateral may come from an untrusted server: it is signed, and
    :func:`verify_quote` checks those signatures. Raises :class:`EvidenceError`
    when the text is not UTF-8 JSON with the expected fields.
    """
    expected = "dcap-qvl QuoteCollateralV3 JSON (pck_crl_issuer_chain, root_ca_crl, ...)"
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as error:
            raise EvidenceError(
                "collateral-format",
                expected,
                f"bytes that are not UTF-8 ({error})",
                "the collateral is not JSON text",
            ) from error
    else:
        text = data
    try:
        return dcap_qvl.QuoteCollateralV3.from_json(text)
    except ValueError as error:
        raise EvidenceError(
            "collateral-format", expected, str(error), "the collateral cannot be read"
        ) from error


@dataclass(frozen=True)
class VerifiedQuote:
    """A quote whose signatures, certificate chain, QE identity, TCB info and CRLs
    dcap-qvl verified at ``verified_at`` against ``trust``. Policy is NOT yet applied.

    Only :func:`verify_quote` should make one from evidence; tests of policies build
    them directly.
    """

    header: QuoteHeader
    report: ReportBody
    status: str
    advisory_ids: tuple[str, ...]
    qe_status: str
    platform_status: str
    trust: TrustAnchor
    verified_at: int

    @property
    def attributes_bytes(self) -> bytes:
        """The 16-byte ATTRIBUTES field as in the report body (FLAGS ‖ XFRM, little-endian)."""
        return self.report.attributes.to_bytes()

    def to_json(self) -> dict[str, object]:
        """The verified facts as one JSON object (bytes as lowercase hex)."""
        report = self.report
        return {
            "tee": "SGX",
            "quote_version": self.header.version,
            "status": self.status,
            "advisory_ids": list(self.advisory_ids),
            "qe_status": self.qe_status,
            "platform_status": self.platform_status,
            "mrenclave": report.mr_enclave.hex(),
            "mrsigner": report.mr_signer.hex(),
            "isv_prod_id": report.isv_prod_id,
            "isv_svn": report.isv_svn,
            "debug": report.attributes.debug,
            "attributes": self.attributes_bytes.hex(),
            "attribute_flags": list(report.attributes.flag_names()),
            "misc_select": report.misc_select,
            "cpu_svn": report.cpu_svn.hex(),
            "config_svn": report.config_svn,
            "report_data": report.report_data.hex(),
            "qe_svn": self.header.qe_svn,
            "pce_svn": self.header.pce_svn,
            "trust_root": self.trust.name,
            "trust_root_fingerprint": self.trust.fingerprint,
            "intel_production_root": self.trust.is_intel_production,
            "verified_at": self.verified_at,
            "verified_at_utc": _utc(self.verified_at),
        }


def verify_quote(
    quote: bytes,
    collateral: dcap_qvl.QuoteCollateralV3,
    *,
    at: int,
    trust: TrustAnchor,
) -> VerifiedQuote:
    """Verify an SGX ECDSA quote with dcap-qvl at time ``at`` against ``trust``.

    ``at`` is UNIX seconds, passed in (never read from a clock here). Raises
    :class:`UnsupportedEvidenceError` for quotes of other TEEs, :class:`EvidenceError`
    for malformed ones, :class:`QuoteSignatureError` when dcap-qvl rejects the quote
    or its collateral, and :class:`AttestationError` if dcap-qvl's verified report
    disagrees with the parsed quote. The result carries the TCB status; no policy
    has been applied yet.
    """
    if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at < 2**63:
        raise EvidenceError(
            "verification-time",
            "UNIX seconds, a non-negative integer",
            repr(at),
            "the verification time is not a valid instant",
        )
    if not isinstance(collateral, dcap_qvl.QuoteCollateralV3):
        raise TypeError("collateral must be a dcap_qvl.QuoteCollateralV3 (see load_collateral)")
    quote = bytes(quote)
    parsed = _parse_sgx_quote(quote)
    try:
        if trust.root_der is None:
            report = dcap_qvl.verify(quote, collateral, at)
        else:
            report = dcap_qvl.verify_with_root_ca(quote, collateral, trust.root_der, at)
    except ValueError as error:
        raise _signature_error(str(error), at, trust) from error

    verified = _verified_report(report.to_json())
    _cross_check(parsed.body, verified["SgxEnclave"])
    return VerifiedQuote(
        header=parsed.header,
        report=parsed.body,
        status=report.status,
        advisory_ids=tuple(report.advisory_ids),
        qe_status=verified["qe_status"],
        platform_status=verified["platform_status"],
        trust=trust,
        verified_at=at,
    )


def _parse_sgx_quote(quote: bytes) -> Quote:
    try:
        return parse_quote(quote)
    except UnsupportedTeeError as error:
        raise UnsupportedEvidenceError(
            "tee-type",
            SGX_QUOTE_EXPECTED,
            _describe_header(quote),
            "this is not an SGX quote; it is refused rather than read as one",
        ) from error
    except SgxParseError as error:
        raise EvidenceError(
            "quote-format",
            "an SGX ECDSA quote v3",
            f"{len(quote)} bytes: {error}",
            f"the quote is malformed ({error.structure})",
        ) from error


def _describe_header(quote: bytes) -> str:
    if len(quote) < 8:
        return f"{len(quote)} bytes"
    version = int.from_bytes(quote[0:2], "little")
    tee_type = int.from_bytes(quote[4:8], "little")
    tee = _TEE_NAMES.get(tee_type, "unknown TEE")
    return f"quote v{version}, tee_type {tee_type:#x} ({tee})"


# Substrings of dcap-qvl's (and webpki's) messages that mean "outside a validity window".
_EXPIRY_MARKERS = ("expired", "in the future", "not valid yet", "notvalidyet", "nextupdate")


def _signature_error(dcap_message: str, at: int, trust: TrustAnchor) -> QuoteSignatureError:
    lowered = dcap_message.lower()
    hint = None
    check = "quote-verification"
    expected = f"a quote and collateral valid at {_utc(at)} under {trust.name}"
    if "debug mode" in lowered:
        # dcap-qvl refuses DEBUG enclaves before our DebugDisabled rule sees them.
        check, expected = "debug", "DEBUG clear"
        message = "the enclave runs in DEBUG mode: the host can read its memory"
        hint = "a DEBUG enclave is never accepted; run the production build"
    elif any(marker in lowered for marker in _EXPIRY_MARKERS):
        message = f"the collateral or a certificate in it is not valid at {_utc(at)}"
        hint = (
            f"collateral outside its validity window at {_utc(at)}: fetch fresh collateral "
            "or pass the time it was valid with --at"
        )
    elif "revoked" in lowered:
        message = "Intel has revoked this platform's TCB or a certificate in the chain"
        hint = "a revoked platform is never accepted; its operator must contact the vendor"
    elif "root ca" in lowered or "unknownissuer" in lowered or "issuer" in lowered:
        message = f"the certificate chain does not lead to the trusted root, {trust.name}"
        hint = (
            "quotes from a simulated platform verify only against its root, passed "
            "explicitly (verify-quote and receipt verify: --trust-root ROOT.pem; a user's "
            "profile: cleanroom configure --trust-simulator ROOT.pem), and then prove "
            "nothing about real hardware"
        )
    elif "signature" in lowered:
        message = (
            "a signature does not verify: the quote or its collateral was altered, or was "
            "not signed by the key it names"
        )
    else:
        message = "dcap-qvl rejected the quote or its collateral"
    return QuoteSignatureError(
        check,
        expected,
        dcap_message,
        message,
        hint,
    )


def _report_inconsistent(field_name: str, expected: object, actual: object) -> AttestationError:
    return AttestationError(
        "report-consistency",
        expected,
        actual,
        f"dcap-qvl's verified report disagrees with the parsed quote on {field_name}; refusing",
    )


def _verified_report(document: str) -> dict[str, Any]:
    """Extract what dcap-qvl reported as verified; anything unexpected fails closed."""
    try:
        parsed = json.loads(document)
        enclave = parsed["report"]["SgxEnclave"]
        qe_status = parsed["qe_status"]["status"]
        platform_status = parsed["platform_status"]["status"]
    except (ValueError, KeyError, TypeError) as error:
        raise _report_inconsistent(
            "its shape", "report.SgxEnclave, qe_status, platform_status", repr(error)
        ) from error
    if not (
        isinstance(enclave, dict)
        and isinstance(qe_status, str)
        and isinstance(platform_status, str)
    ):
        raise _report_inconsistent("its shape", "an SGX enclave report", document[:200])
    return {"SgxEnclave": enclave, "qe_status": qe_status, "platform_status": platform_status}


def _cross_check(body: ReportBody, enclave: dict[str, Any]) -> None:
    ours: dict[str, object] = {
        "cpu_svn": body.cpu_svn.hex(),
        "misc_select": body.misc_select,
        "attributes": body.attributes.to_bytes().hex(),
        "mr_enclave": body.mr_enclave.hex(),
        "mr_signer": body.mr_signer.hex(),
        "isv_prod_id": body.isv_prod_id,
        "isv_svn": body.isv_svn,
        "report_data": body.report_data.hex(),
    }
    for field_name, value in ours.items():
        theirs = enclave.get(field_name)
        if isinstance(theirs, str):
            theirs = theirs.lower()
        if theirs != value:
            raise _report_inconsistent(field_name, value, theirs)
