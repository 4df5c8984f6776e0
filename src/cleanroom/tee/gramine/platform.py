"""The Gramine SGX backend of the :class:`~cleanroom.tee.platform.EnclavePlatform` seam.

Everything comes from Gramine's ``/dev/attestation`` pseudo-files (see
:mod:`.files`), except the check of a REPORT addressed to this enclave, which takes
EGETKEY and a CMAC (:mod:`.localattest`). At start the enclave asks for a REPORT
addressed to itself and checks it with EGETKEY: that REPORT says who the enclave
is, and a backend whose EGETKEY or pseudo-files are wrong fails there, before it
admits or vouches for anyone.
"""

from __future__ import annotations

import hmac
import threading

from cleanroom.errors import CheckFailed
from cleanroom.sgx import Quote, Report, ReportBody, SgxParseError, TargetInfo
from cleanroom.tee.gramine.files import (
    REPORT_SIZE,
    TARGET_INFO_SIZE,
    USER_REPORT_DATA_SIZE,
    AttestationFiles,
)
from cleanroom.tee.gramine.localattest import Egetkey, verify_report
from cleanroom.tee.platform import EnclaveIdentity

ATTESTATION_TYPES = frozenset({"none", "dcap"})
QUOTING_ATTESTATION_TYPE = "dcap"


class GramineError(CheckFailed):
    """Gramine's ``/dev/attestation`` answered something this adapter does not accept."""


class GramineEnclave:
    """This enclave's platform under Gramine SGX.

    ``files`` reach ``/dev/attestation`` (:class:`~.files.DevAttestation` in an
    enclave, an emulation in tests); ``egetkey`` is ENCLU[EGETKEY]
    (:func:`~.native.hardware_egetkey` in an enclave). A DEBUG enclave is refused
    unless ``allow_debug``: its memory is open to the host, so nothing it holds or
    says is protected.
    """

    def __init__(
        self, files: AttestationFiles, egetkey: Egetkey, *, allow_debug: bool = False
    ) -> None:
        self._files = files
        self._egetkey = egetkey
        # The pseudo-files are global to the enclave and not synchronised by Gramine.
        self._lock = threading.Lock()
        self.attestation_type = self._attestation_type()
        own_target = self.target_info()
        self_report = self._report(own_target, bytes(USER_REPORT_DATA_SIZE))
        body = verify_report(self_report, egetkey)  # LocalAttestationError if EGETKEY is wrong
        if body.mr_enclave != own_target.mr_enclave or body.attributes != own_target.attributes:
            raise GramineError(
                "gramine-self-report",
                f"MRENCLAVE {own_target.mr_enclave.hex()}, ATTRIBUTES "
                f"{own_target.attributes.to_bytes().hex()} (my_target_info)",
                f"MRENCLAVE {body.mr_enclave.hex()}, ATTRIBUTES {body.attributes.to_bytes().hex()}",
                "this enclave's own REPORT does not match its my_target_info",
            )
        if body.attributes.debug and not allow_debug:
            raise GramineError(
                "enclave-debug",
                "DEBUG clear (sgx.debug = false)",
                "DEBUG set",
                "this enclave runs in DEBUG mode: the host can read its memory",
                "sign the enclave with sgx.debug = false",
            )
        self._identity = EnclaveIdentity(
            mr_enclave=body.mr_enclave,
            mr_signer=body.mr_signer,
            attributes=body.attributes,
            isv_prod_id=body.isv_prod_id,
            isv_svn=body.isv_svn,
            misc_select=body.misc_select,
        )

    # ------------------------------------------------------------- the seam

    @property
    def identity(self) -> EnclaveIdentity:
        return self._identity

    def target_info(self) -> TargetInfo:
        with self._lock:
            raw = self._files.read("my_target_info")
        return self._parse_target_info(raw, "my_target_info")

    def report(self, target_info: TargetInfo, report_data: bytes) -> Report:
        report = self._report(target_info, report_data)
        self._check_own(report.body, report_data, "report")
        return report

    def verify_report(self, report: Report) -> ReportBody:
        return verify_report(report, self._egetkey)

    def quote(self, report_data: bytes) -> bytes:
        if self.attestation_type != QUOTING_ATTESTATION_TYPE:
            raise GramineError(
                "attestation-type",
                QUOTING_ATTESTATION_TYPE,
                self.attestation_type,
                "this enclave cannot quote: its manifest disables remote attestation",
                'set sgx.remote_attestation = "dcap" in the manifest',
            )
        self._check_report_data(report_data)
        with self._lock:
            self._files.write("user_report_data", report_data)
            raw = self._files.read("quote")
        try:
            quote = Quote.from_bytes(raw)
        except SgxParseError as error:
            raise GramineError(
                "quote-format", "an SGX ECDSA quote v3", f"{len(raw)} bytes", str(error)
            ) from error
        self._check_own(quote.body, report_data, "quote")
        return raw

    # ------------------------------------------------------------- helpers

    def _attestation_type(self) -> str:
        raw = self._files.read("attestation_type")
        value = raw.decode("ascii", errors="replace").strip()
        if value not in ATTESTATION_TYPES:
            raise GramineError(
                "attestation-type",
                sorted(ATTESTATION_TYPES),
                value[:40],
                "Gramine reports an attestation type this backend does not support",
                'set sgx.remote_attestation = "dcap" (or "none" for a Worker)',
            )
        return value

    def _report(self, target_info: TargetInfo, report_data: bytes) -> Report:
        self._check_report_data(report_data)
        target = target_info.to_bytes()
        if not any(target):
            # Gramine answers an all-zero TARGETINFO with our own, not a REPORT for it.
            raise GramineError(
                "target-info",
                "a TARGETINFO naming an enclave",
                "512 zero bytes",
                "an all-zero TARGETINFO names no enclave",
            )
        with self._lock:
            self._files.write("target_info", target)
            self._files.write("user_report_data", report_data)
            raw = self._files.read("report")
        try:
            report = Report.from_bytes(raw)
        except SgxParseError as error:
            raise GramineError(
                "report-format", f"a {REPORT_SIZE}-byte REPORT", len(raw), str(error)
            ) from error
        return report

    def _check_own(self, body: ReportBody, report_data: bytes, what: str) -> None:
        """The REPORT or quote Gramine made is ours and carries our REPORTDATA."""
        if not hmac.compare_digest(body.report_data, report_data):
            raise GramineError(
                f"{what}-report-data",
                report_data,
                body.report_data,
                f"the {what} Gramine returned carries other REPORTDATA (a concurrent "
                "writer of /dev/attestation/user_report_data?)",
            )
        own = self._identity
        if body.mr_enclave != own.mr_enclave or body.mr_signer != own.mr_signer:
            raise GramineError(
                f"{what}-identity",
                f"MRENCLAVE {own.mr_enclave.hex()}, MRSIGNER {own.mr_signer.hex()}",
                f"MRENCLAVE {body.mr_enclave.hex()}, MRSIGNER {body.mr_signer.hex()}",
                f"the {what} Gramine returned is not about this enclave",
            )

    @staticmethod
    def _check_report_data(report_data: bytes) -> None:
        if len(report_data) != USER_REPORT_DATA_SIZE:
            # Gramine would pad or truncate silently; REPORTDATA is always a full hash here.
            raise ValueError(
                f"REPORTDATA must be {USER_REPORT_DATA_SIZE} bytes, got {len(report_data)}"
            )

    @staticmethod
    def _parse_target_info(raw: bytes, name: str) -> TargetInfo:
        try:
            return TargetInfo.from_bytes(raw)
        except SgxParseError as error:
            raise GramineError(
                "target-info", f"{TARGET_INFO_SIZE} bytes from {name}", len(raw), str(error)
            ) from error
