"""The one seam that isolates every SGX specific from the rest of the clean room.

Code that runs inside a TEE asks its platform for exactly five things: its own
identity, its TARGETINFO (so another enclave can address a REPORT to it), a REPORT
for a target, verification of a REPORT addressed to itself (local attestation),
and a quote (remote attestation evidence). Backends: ``simulated`` (insecure by
design, runs anywhere) and ``gramine`` (:mod:`cleanroom.tee.gramine`: Gramine's
``/dev/attestation`` and EGETKEY).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from cleanroom.errors import CheckFailed, Error
from cleanroom.sgx import Attributes, Report, ReportBody, TargetInfo


class LocalAttestationError(CheckFailed):
    """A REPORT failed local attestation; names the check, expected and actual value."""


class QuoteGenerationError(Error):
    """The quoting enclave refused to quote (its local attestation of the caller failed)."""

    http_status = 500  # this server's own failure, not the request's


class EgetkeyError(Error):
    """EGETKEY returned an error status in RAX (SDM Vol. 3D, EGETKEY; error codes)."""

    http_status = 500  # this server's own failure, not the request's

    INVALID_ATTRIBUTE = 2
    INVALID_CPUSVN = 32
    INVALID_ISVSVN = 64
    INVALID_KEYNAME = 256
    NAMES: ClassVar[dict[int, str]] = {
        INVALID_ATTRIBUTE: "SGX_INVALID_ATTRIBUTE",
        INVALID_CPUSVN: "SGX_INVALID_CPUSVN",
        INVALID_ISVSVN: "SGX_INVALID_ISVSVN",
        INVALID_KEYNAME: "SGX_INVALID_KEYNAME",
    }

    def __init__(self, status: int) -> None:
        self.status = status
        self.status_name = self.NAMES.get(status, "unknown status")
        super().__init__(f"EGETKEY failed with status {status} ({self.status_name})")


class EgetkeyFault(Error):
    """A KEYREQUEST that EGETKEY answers with #GP (a simulation raises; hardware kills)."""

    http_status = 500  # this server's own failure, not the request's


@dataclass(frozen=True)
class EnclaveIdentity:
    """What the CPU measures about an enclave and writes into every REPORT it makes."""

    mr_enclave: bytes
    mr_signer: bytes
    attributes: Attributes
    isv_prod_id: int
    isv_svn: int
    misc_select: int = 0

    def __post_init__(self) -> None:
        if len(self.mr_enclave) != 32:
            raise ValueError(f"mr_enclave must be 32 bytes, got {len(self.mr_enclave)}")
        if len(self.mr_signer) != 32:
            raise ValueError(f"mr_signer must be 32 bytes, got {len(self.mr_signer)}")
        if not 0 <= self.isv_prod_id <= 0xFFFF or not 0 <= self.isv_svn <= 0xFFFF:
            raise ValueError("isv_prod_id and isv_svn must fit in 16 bits")

    def target_info(self) -> TargetInfo:
        return TargetInfo.create(
            mr_enclave=self.mr_enclave, attributes=self.attributes, misc_select=self.misc_select
        )


class EnclavePlatform(Protocol):
    """What code inside an enclave may ask of the TEE it runs in."""

    @property
    def identity(self) -> EnclaveIdentity:
        """This enclave's own identity, as the hardware measured it."""
        ...

    def target_info(self) -> TargetInfo:
        """This enclave's TARGETINFO: give it to another enclave that must report to us."""
        ...

    def report(self, target_info: TargetInfo, report_data: bytes) -> Report:
        """A REPORT about this enclave, MACed for the enclave that ``target_info`` names."""
        ...

    def verify_report(self, report: Report) -> ReportBody:
        """Check a REPORT addressed to this enclave; raise LocalAttestationError otherwise."""
        ...

    def quote(self, report_data: bytes) -> bytes:
        """An ECDSA quote v3 over a REPORT of this enclave carrying ``report_data``."""
        ...
