"""A simulated SGX machine: fuse key, Intel-shaped PKI, quoting enclave, collateral.

What is faithful: the byte formats (REPORT, TARGETINFO, quote v3 with certification
data type 5), local attestation (AES-128-CMAC under a report key derived from a
per-platform secret and the *target's* identity and the key ID), the quoting
enclave's local attestation of the caller and the DCAP binding of the attestation
key into the QE report, and the signed collateral (TCB info v3, QE identity v2,
CRLs). Quotes are appraised by dcap-qvl exactly as real ones are.

What is not: there is no hardware isolation. The platform secret is a file; whoever
reads it can make any enclave's REPORT and quote. See docs/threat-model.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives import cmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.constant_time import bytes_eq
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFCMAC, CounterLocation, Mode

from cleanroom.errors import EXIT_USAGE, Error
from cleanroom.insecure.simulated import pki
from cleanroom.sgx import (
    INTEL_QE_VENDOR_ID,
    KEY_POLICY_RESERVED,
    AttributeFlags,
    Attributes,
    CertificationData,
    CertificationDataType,
    KeyName,
    KeyPolicy,
    KeyRequest,
    Quote,
    QuoteHeader,
    QuoteSignatureData,
    Report,
    ReportBody,
    TargetInfo,
)
from cleanroom.tee.platform import (
    EgetkeyError,
    EgetkeyFault,
    EnclaveIdentity,
    LocalAttestationError,
    QuoteGenerationError,
)

FORMAT = "cleanroom/simulated-sgx-platform/v1"
PLATFORM_FILE = "platform.json"
SECRETS_FILE = "secrets.json"
COLLATERAL_FILE = "collateral.json"

# Collateral is valid for 30 days, like Intel's, and re-issued when fewer than 7 remain.
COLLATERAL_VALIDITY = dt.timedelta(days=30)
COLLATERAL_RENEW_BEFORE = dt.timedelta(days=7)
# Issue a little in the past so that a verifier whose clock lags ours still accepts.
CLOCK_SKEW = dt.timedelta(minutes=5)

TCB_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)

# The simulated quoting enclave: fixed identity, published in its QE identity collateral.
QE_MR_ENCLAVE = hashlib.sha256(b"cleanroom simulated SGX quoting enclave v1").digest()
QE_MR_SIGNER = hashlib.sha256(b"cleanroom simulated SGX quoting enclave signer v1").digest()
QE_ISV_PROD_ID = 1
QE_ISV_SVN = 8
# INIT | MODE64BIT | PROVISIONKEY, XFRM x87|SSE|AVX|…, as Intel's QE.
QE_ATTRIBUTES = Attributes(
    flags=AttributeFlags.INIT | AttributeFlags.MODE64BIT | AttributeFlags.PROVISIONKEY, xfrm=0xE7
)
QE_IDENTITY = EnclaveIdentity(
    mr_enclave=QE_MR_ENCLAVE,
    mr_signer=QE_MR_SIGNER,
    attributes=QE_ATTRIBUTES,
    isv_prod_id=QE_ISV_PROD_ID,
    isv_svn=QE_ISV_SVN,
)

_REPORT_KEY_LABEL = b"cleanroom simulated SGX REPORT key"


class PlatformStateError(Error):
    """The platform directory is missing, incomplete or not a simulated platform."""

    exit_code = EXIT_USAGE  # the platform directory given cannot be used


def _utc(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _from_unix(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _load_private(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PlatformStateError("platform key is not an EC key")
    return key


def _write_private(path: Path, text: str) -> None:
    # 0600 from creation, never world-readable even for an instant.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


@dataclass(frozen=True)
class _Keys:
    root: ec.EllipticCurvePrivateKey
    pck_ca: ec.EllipticCurvePrivateKey
    pck: ec.EllipticCurvePrivateKey
    tcb_signing: ec.EllipticCurvePrivateKey
    attestation: ec.EllipticCurvePrivateKey


class SimulatedPlatform:
    """One simulated SGX machine, kept in a directory.

    ``platform.json`` holds the public part (certificates, TCB description),
    ``secrets.json`` (mode 0600) the fuse-key stand-in and every private key,
    ``collateral.json`` the current signed collateral.
    """

    def __init__(self, directory: Path, public: dict[str, Any], private: dict[str, Any]) -> None:
        self.directory = directory
        self._public = public
        try:
            self._secret = bytes.fromhex(private["platform_secret"])
            self._keys = _Keys(
                root=_load_private(private["root_ca_key"]),
                pck_ca=_load_private(private["pck_ca_key"]),
                pck=_load_private(private["pck_key"]),
                tcb_signing=_load_private(private["tcb_signing_key"]),
                attestation=_load_private(private["attestation_key"]),
            )
            self.tcb = pki.PlatformTcb(
                ppid=bytes.fromhex(public["ppid"]),
                cpu_svn=bytes.fromhex(public["cpu_svn"]),
                pce_svn=int(public["pce_svn"]),
                pce_id=bytes.fromhex(public["pce_id"]),
                fmspc=bytes.fromhex(public["fmspc"]),
            )
            self.tcb_status: str = public["tcb_status"]
            self.advisory_ids: tuple[str, ...] = tuple(public["advisory_ids"])
            self.root_certificate = x509.load_pem_x509_certificate(public["root_ca"].encode())
            self._pck_ca_certificate = x509.load_pem_x509_certificate(public["pck_ca"].encode())
            self._pck_certificate = x509.load_pem_x509_certificate(public["pck"].encode())
            self._tcb_signing_certificate = x509.load_pem_x509_certificate(
                public["tcb_signing"].encode()
            )
        except (KeyError, ValueError, TypeError) as error:
            raise PlatformStateError(
                f"{directory}: incomplete or corrupt simulated platform ({error})"
            ) from error
        if len(self._secret) != 16:
            raise PlatformStateError(f"{directory}: platform secret must be 16 bytes")

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    def init(
        cls,
        directory: Path,
        *,
        now: int,
        tcb_status: str = "UpToDate",
        advisory_ids: Sequence[str] = (),
        force: bool = False,
    ) -> SimulatedPlatform:
        """Create a new platform: fresh fuse key, PKI, PCK certificate and collateral.

        ``tcb_status`` and ``advisory_ids`` say what the platform's TCB info will
        report, so that policies can be exercised against every status.
        """
        if tcb_status not in TCB_STATUSES:
            raise ValueError(f"unknown TCB status {tcb_status!r}; one of {', '.join(TCB_STATUSES)}")
        if tcb_status == "UpToDate" and advisory_ids:
            raise ValueError("an UpToDate platform has no advisories")
        directory = Path(directory)
        if (directory / PLATFORM_FILE).exists() and not force:
            raise PlatformStateError(
                f"{directory} already holds a simulated platform; pass force to replace it"
            )
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        issued = _from_unix(now)
        keys = _Keys(
            root=pki.new_key(),
            pck_ca=pki.new_key(),
            pck=pki.new_key(),
            tcb_signing=pki.new_key(),
            attestation=pki.new_key(),
        )
        tcb = pki.PlatformTcb(
            ppid=secrets.token_bytes(16),
            cpu_svn=bytes([12, 12, 3, 3, 255, 255, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            pce_svn=13,
            pce_id=bytes(2),
            fmspc=bytes.fromhex("00906ED50000"),
        )
        public = {
            "type": FORMAT,
            "created": _utc(issued),
            "ppid": tcb.ppid.hex(),
            "cpu_svn": tcb.cpu_svn.hex(),
            "pce_svn": tcb.pce_svn,
            "pce_id": tcb.pce_id.hex(),
            "fmspc": tcb.fmspc.hex().upper(),
            "tcb_status": tcb_status,
            "advisory_ids": sorted(advisory_ids),
            "root_ca": pki.pem(pki.root_certificate(keys.root, issued)),
            "pck_ca": pki.pem(pki.pck_ca_certificate(keys.pck_ca, keys.root, issued)),
            "pck": pki.pem(pki.pck_certificate(keys.pck, keys.pck_ca, tcb, issued)),
            "tcb_signing": pki.pem(
                pki.tcb_signing_certificate(keys.tcb_signing, keys.root, issued)
            ),
        }
        private = {
            "type": FORMAT,
            "platform_secret": secrets.token_bytes(16).hex(),
            "root_ca_key": _private_pem(keys.root),
            "pck_ca_key": _private_pem(keys.pck_ca),
            "pck_key": _private_pem(keys.pck),
            "tcb_signing_key": _private_pem(keys.tcb_signing),
            "attestation_key": _private_pem(keys.attestation),
        }
        _write_private(directory / SECRETS_FILE, json.dumps(private, indent=2))
        (directory / PLATFORM_FILE).write_text(json.dumps(public, indent=2))
        (directory / COLLATERAL_FILE).unlink(missing_ok=True)
        platform = cls(directory, public, private)
        platform.collateral_json(now=now)
        return platform

    @classmethod
    def load(cls, directory: Path) -> SimulatedPlatform:
        directory = Path(directory)
        try:
            public = json.loads((directory / PLATFORM_FILE).read_text())
            private = json.loads((directory / SECRETS_FILE).read_text())
        except FileNotFoundError as error:
            raise PlatformStateError(
                f"no simulated platform in {directory} (run `cleanroom sim init`)"
            ) from error
        except (OSError, json.JSONDecodeError) as error:
            raise PlatformStateError(f"{directory}: unreadable platform state ({error})") from error
        if public.get("type") != FORMAT or private.get("type") != FORMAT:
            raise PlatformStateError(f"{directory}: not a {FORMAT} directory")
        return cls(directory, public, private)

    # ------------------------------------------------------------- trust anchor

    def root_certificate_pem(self) -> str:
        """The simulated root: a client must trust it explicitly to accept these quotes."""
        return pki.pem(self.root_certificate)

    def root_certificate_der(self) -> bytes:
        return self.root_certificate.public_bytes(serialization.Encoding.DER)

    # --------------------------------------------------------------- collateral

    def collateral_json(self, *, now: int) -> str:
        """Current signed collateral (dcap-qvl's JSON form), re-issued near expiry."""
        path = self.directory / COLLATERAL_FILE
        try:
            cached = json.loads(path.read_text())
            issued, next_update = int(cached["issued"]), int(cached["next_update"])
            if issued <= now and now < next_update - COLLATERAL_RENEW_BEFORE.total_seconds():
                return json.dumps(cached["collateral"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # absent or unreadable: issue anew below
        collateral, issued, next_update = self._issue_collateral(now)
        record = {"issued": issued, "next_update": next_update, "collateral": collateral}
        path.write_text(json.dumps(record, indent=2))
        return json.dumps(collateral)

    def _issue_collateral(self, now: int) -> tuple[dict[str, Any], int, int]:
        issue_date = _from_unix(now).replace(microsecond=0) - CLOCK_SKEW
        next_update = issue_date + COLLATERAL_VALIDITY
        tcb_info = json.dumps(self._tcb_info(issue_date, next_update), separators=(",", ":"))
        qe_identity = json.dumps(self._qe_identity(issue_date, next_update), separators=(",", ":"))
        signing_chain = pki.pem(self._tcb_signing_certificate) + pki.pem(self.root_certificate)
        pck_chain = pki.pem(self._pck_ca_certificate) + pki.pem(self.root_certificate)
        collateral = dcap_qvl.QuoteCollateralV3(
            pck_crl_issuer_chain=pck_chain,
            root_ca_crl=pki.crl(pki.ROOT_CA_NAME, self._keys.root, 1, issue_date, next_update),
            pck_crl=pki.crl(pki.PCK_CA_NAME, self._keys.pck_ca, 1, issue_date, next_update),
            tcb_info_issuer_chain=signing_chain,
            tcb_info=tcb_info,
            tcb_info_signature=pki.sign_raw(self._keys.tcb_signing, tcb_info.encode()),
            qe_identity_issuer_chain=signing_chain,
            qe_identity=qe_identity,
            qe_identity_signature=pki.sign_raw(self._keys.tcb_signing, qe_identity.encode()),
        )
        document: dict[str, Any] = json.loads(collateral.to_json())
        return document, int(issue_date.timestamp()), int(next_update.timestamp())

    def _tcb_info(self, issue_date: dt.datetime, next_update: dt.datetime) -> dict[str, Any]:
        def level(cpu_svn: bytes, status: str, advisories: Sequence[str]) -> dict[str, Any]:
            entry: dict[str, Any] = {
                "tcb": {
                    "sgxtcbcomponents": [{"svn": svn} for svn in cpu_svn],
                    "pcesvn": self.tcb.pce_svn,
                },
                "tcbDate": "2026-01-01T00:00:00Z",
                "tcbStatus": status,
            }
            if advisories:
                entry["advisoryIDs"] = list(advisories)
            return entry

        levels = []
        if self.tcb_status != "UpToDate":
            # A newer TCB exists that this platform has not reached: ours is the older level.
            newer = bytes([self.tcb.cpu_svn[0] + 1]) + self.tcb.cpu_svn[1:]
            levels.append(level(newer, "UpToDate", ()))
        levels.append(level(self.tcb.cpu_svn, self.tcb_status, self.advisory_ids))
        return {
            "id": "SGX",
            "version": 3,
            "issueDate": _utc(issue_date),
            "nextUpdate": _utc(next_update),
            "fmspc": self.tcb.fmspc.hex().upper(),
            "pceId": self.tcb.pce_id.hex().upper(),
            "tcbType": 0,
            "tcbEvaluationDataNumber": 1,
            "tcbLevels": levels,
        }

    def _qe_identity(self, issue_date: dt.datetime, next_update: dt.datetime) -> dict[str, Any]:
        return {
            "id": "QE",
            "version": 2,
            "issueDate": _utc(issue_date),
            "nextUpdate": _utc(next_update),
            "tcbEvaluationDataNumber": 1,
            "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF",
            "attributes": "11000000000000000000000000000000",
            # Ignore MODE64BIT, as Intel's QE identity does.
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": QE_MR_SIGNER.hex().upper(),
            "isvprodid": QE_ISV_PROD_ID,
            "tcbLevels": [
                {
                    "tcb": {"isvsvn": QE_ISV_SVN},
                    "tcbDate": "2026-01-01T00:00:00Z",
                    "tcbStatus": "UpToDate",
                }
            ],
        }

    # ------------------------------------------------------- the CPU's key logic

    def _report_key(self, target: EnclaveIdentity | TargetInfo, key_id: bytes) -> bytes:
        return derive_report_key(
            self._secret, target.mr_enclave, target.attributes, key_id, self.tcb.cpu_svn
        )

    def _make_report(
        self, identity: EnclaveIdentity, target: TargetInfo, report_data: bytes
    ) -> Report:
        if len(report_data) != 64:
            raise ValueError(f"REPORTDATA must be 64 bytes, got {len(report_data)}")
        body = ReportBody.create(
            cpu_svn=self.tcb.cpu_svn,
            misc_select=identity.misc_select,
            attributes=identity.attributes,
            mr_enclave=identity.mr_enclave,
            mr_signer=identity.mr_signer,
            isv_prod_id=identity.isv_prod_id,
            isv_svn=identity.isv_svn,
            report_data=report_data,
        )
        key_id = secrets.token_bytes(32)
        mac = _cmac(self._report_key(target, key_id), body.to_bytes())
        return Report(body=body, key_id=key_id, mac=mac)

    def _verify_report(self, verifier: EnclaveIdentity, report: Report) -> ReportBody:
        expected = _cmac(self._report_key(verifier, report.key_id), report.body.to_bytes())
        if not bytes_eq(expected, report.mac):
            raise LocalAttestationError(
                check="report-mac",
                expected="a MAC under this enclave's report key",
                actual=report.mac.hex(),
                message=(
                    "REPORT MAC does not verify: the REPORT was made for another target "
                    "enclave or platform, or it was changed"
                ),
            )
        return report.body

    # ------------------------------------------------------------------ enclaves

    def enclave(self, identity: EnclaveIdentity) -> SimulatedEnclave:
        """Run code 'inside' an enclave of this identity. Simulation: nothing enforces it."""
        return SimulatedEnclave(self, identity)

    def quoting_enclave_target_info(self) -> TargetInfo:
        return QE_IDENTITY.target_info()

    def quote_report(self, report: Report) -> bytes:
        """The simulated quoting enclave: check the REPORT locally, then sign a quote v3."""
        try:
            body = self._verify_report(QE_IDENTITY, report)
        except LocalAttestationError as error:
            raise QuoteGenerationError(f"quoting enclave refused the REPORT: {error}") from error
        header = QuoteHeader(
            version=3,
            attestation_key_type=2,
            tee_type=0,
            qe_svn=QE_ISV_SVN,
            pce_svn=self.tcb.pce_svn,
            qe_vendor_id=INTEL_QE_VENDOR_ID,
            # Intel's QE puts a platform identifier here that links the quote to its PCK.
            user_data=hashlib.sha256(self.tcb.ppid).digest()[:16] + bytes(4),
        )
        attestation_key = pki.raw_public_key(self._keys.attestation.public_key())
        qe_auth_data = bytes(range(32))
        # DCAP binds the attestation key: QE REPORTDATA = SHA-256(key ‖ auth data) ‖ 0^32.
        binding = hashlib.sha256(attestation_key + qe_auth_data).digest() + bytes(32)
        qe_report = self._make_report(QE_IDENTITY, QE_IDENTITY.target_info(), binding).body
        chain = (
            pki.pem(self._pck_certificate)
            + pki.pem(self._pck_ca_certificate)
            + pki.pem(self.root_certificate)
        ).encode("ascii")
        signed = header.to_bytes() + body.to_bytes()
        signature_data = QuoteSignatureData(
            isv_signature=pki.sign_raw(self._keys.attestation, signed),
            attestation_key=attestation_key,
            qe_report=qe_report,
            qe_report_signature=pki.sign_raw(self._keys.pck, qe_report.to_bytes()),
            qe_auth_data=qe_auth_data,
            certification_data=CertificationData(
                cert_type=CertificationDataType.PCK_CERT_CHAIN, data=chain + b"\x00"
            ),
        )
        return Quote(header=header, body=body, signature_data=signature_data).to_bytes()


def derive_report_key(
    platform_secret: bytes,
    target_mr_enclave: bytes,
    target_attributes: Attributes,
    key_id: bytes,
    cpu_svn: bytes,
) -> bytes:
    """EGETKEY(REPORT) stand-in: the AES-128 key that MACs REPORTs for one target.

    As in SGX, the key depends on the target's MRENCLAVE and ATTRIBUTES, the
    REPORT's key ID and the platform's CPUSVN, under a secret only the platform
    has: only the enclave a REPORT was made for can check it. NIST SP 800-108
    counter-mode KDF with AES-CMAC as PRF (docs/protocol.md has the exact input).
    """
    if len(platform_secret) != 16 or len(target_mr_enclave) != 32:
        raise ValueError("platform secret must be 16 bytes and MRENCLAVE 32 bytes")
    if len(key_id) != 32 or len(cpu_svn) != 16:
        raise ValueError("key ID must be 32 bytes and CPUSVN 16 bytes")
    kdf = KBKDFCMAC(
        algorithm=algorithms.AES,
        mode=Mode.CounterMode,
        length=16,
        rlen=4,
        llen=4,
        location=CounterLocation.BeforeFixed,
        label=_REPORT_KEY_LABEL,
        context=target_mr_enclave + target_attributes.to_bytes() + key_id + cpu_svn,
        fixed=None,
    )
    return kdf.derive(platform_secret)


def _cmac(key: bytes, message: bytes) -> bytes:
    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(message)
    return mac.finalize()


class SimulatedEnclave:
    """The :class:`~cleanroom.tee.platform.EnclavePlatform` of one simulated enclave."""

    def __init__(self, platform: SimulatedPlatform, identity: EnclaveIdentity) -> None:
        self._platform = platform
        self._identity = identity

    @property
    def identity(self) -> EnclaveIdentity:
        return self._identity

    def target_info(self) -> TargetInfo:
        return self._identity.target_info()

    def report(self, target_info: TargetInfo, report_data: bytes) -> Report:
        return self._platform._make_report(self._identity, target_info, report_data)

    def verify_report(self, report: Report) -> ReportBody:
        return self._platform._verify_report(self._identity, report)

    def quote(self, report_data: bytes) -> bytes:
        target = self._platform.quoting_enclave_target_info()
        return self._platform.quote_report(self.report(target, report_data))

    def egetkey(self, key_request: bytes) -> bytes:
        """EGETKEY as this enclave would run it: the 16-byte key a KEYREQUEST asks for.

        Models the SDM's EGETKEY for REPORT_KEY: reserved bytes and reserved or
        KSS-only policy bits fault (#GP, :class:`EgetkeyFault`); the key depends only
        on the request's KEYID and on what the CPU knows of the caller (its own
        MRENCLAVE and ATTRIBUTES, the platform's CPUSVN), never on the request's
        CPUSVN or ISVSVN. Other key names are not simulated (SGX_INVALID_KEYNAME).
        """
        request = KeyRequest.from_bytes(key_request)
        if any(request.reserved[0]) or any(request.reserved[1]):
            raise EgetkeyFault("KEYREQUEST reserved bytes are not zero")
        if request.key_policy & KEY_POLICY_RESERVED:
            raise EgetkeyFault(f"KEYPOLICY reserved bits set: {request.key_policy:#06x}")
        kss_only = KeyPolicy.NOISVPRODID | KeyPolicy.CONFIGID
        kss_only |= KeyPolicy.ISVFAMILYID | KeyPolicy.ISVEXTPRODID
        kss = self._identity.attributes.flags & AttributeFlags.KSS
        if not kss and (request.key_policy & kss_only or request.config_svn):
            raise EgetkeyFault("KSS policy bits or CONFIGSVN without KSS")
        if request.key_name != KeyName.REPORT_KEY:
            raise EgetkeyError(EgetkeyError.INVALID_KEYNAME)
        return self._platform._report_key(self._identity, request.key_id)


__all__ = [
    "QE_IDENTITY",
    "TCB_STATUSES",
    "PlatformStateError",
    "SimulatedEnclave",
    "SimulatedPlatform",
]
