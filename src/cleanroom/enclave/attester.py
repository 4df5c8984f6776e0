"""The Attester: resident in the TEE, admits Workers, and vouches for them in quotes.

Clients remotely attest the Attester (its MRENCLAVE and MRSIGNER, the platform's
TCB); the Attester has locally attested each Worker it names. Its allow-list of
Worker measurements is part of its own measured configuration, so a client that
accepts the Attester's MRENCLAVE accepts exactly the Workers it admits.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cleanroom.enclave.admission import admission_report_data, worker_id_for
from cleanroom.enclave.errors import AdmissionError, UnknownWorkerError
from cleanroom.protocol.claims import (
    WORKER_CLAIMS_TYPE,
    AdmittedWorker,
    attester_claims,
    report_data,
)
from cleanroom.protocol.encoding import from_b64u
from cleanroom.protocol.errors import ProtocolError
from cleanroom.protocol.keys import load_spki
from cleanroom.sgx import Report, SgxParseError, TargetInfo
from cleanroom.tee.platform import EnclavePlatform, LocalAttestationError

WORKER_CLAIM_FIELDS = frozenset({"type", "work_id", "worker_key"})


@dataclass(frozen=True)
class WorkerAllowList:
    """Which Worker enclaves the Attester admits: from its measured configuration."""

    mr_enclaves: frozenset[bytes]
    mr_signer: bytes
    min_isv_svn: int = 0

    @classmethod
    def from_manifest_config(cls, config: Mapping[str, Any]) -> WorkerAllowList:
        """The allow-list in the Attester image's manifest (see cleanroom.tee.measure)."""
        return cls(
            mr_enclaves=frozenset(bytes.fromhex(v) for v in config["worker_mrenclaves"]),
            mr_signer=bytes.fromhex(config["worker_mrsigner"]),
        )


@dataclass(frozen=True)
class Admission:
    """The Attester's answer to an admitted Worker."""

    worker: AdmittedWorker
    report: Report  # targeted at the Worker; REPORTDATA binds worker_id and work_id


@dataclass(frozen=True)
class Evidence:
    """Per-session remote attestation evidence (collateral is added outside the TEE)."""

    claims: dict[str, Any]
    quote: bytes


class Attester:
    def __init__(self, platform: EnclavePlatform, allowed: WorkerAllowList) -> None:
        self._platform = platform
        self._allowed = allowed
        self._workers: dict[str, AdmittedWorker] = {}

    def target_info(self) -> bytes:
        """The TARGETINFO Workers address their admission REPORT to."""
        return self._platform.target_info().to_bytes()

    def admit(self, report: bytes, claims: object) -> Admission:
        """Admit a Worker by local attestation, or raise AdmissionError naming the check."""
        try:
            parsed = Report.from_bytes(report)
        except SgxParseError as error:
            raise AdmissionError(
                "report-format", "a 432-byte REPORT", len(report), str(error)
            ) from error
        try:
            body = self._platform.verify_report(parsed)
        except LocalAttestationError as error:
            raise AdmissionError(
                error.check, error.expected, error.actual, error.message
            ) from error
        allowed = self._allowed
        if body.mr_enclave not in allowed.mr_enclaves:
            raise AdmissionError(
                "worker-mrenclave",
                allowed.mr_enclaves,
                body.mr_enclave,
                "not an admitted Worker image",
            )
        if not hmac.compare_digest(body.mr_signer, allowed.mr_signer):
            raise AdmissionError(
                "worker-mrsigner", allowed.mr_signer, body.mr_signer, "wrong signer"
            )
        if body.attributes.debug:
            raise AdmissionError(
                "worker-debug", "DEBUG clear", "DEBUG set", "a DEBUG Worker is never admitted"
            )
        if body.isv_svn < allowed.min_isv_svn:
            raise AdmissionError(
                "worker-isv-svn", f">= {allowed.min_isv_svn}", body.isv_svn, "Worker too old"
            )
        if not isinstance(claims, dict) or set(claims) != WORKER_CLAIM_FIELDS:
            raise AdmissionError("worker-claims", sorted(WORKER_CLAIM_FIELDS), claims, "bad claims")
        if claims["type"] != WORKER_CLAIMS_TYPE:
            raise AdmissionError("worker-claims", WORKER_CLAIMS_TYPE, claims["type"], "wrong type")
        try:
            expected = report_data(claims)
            worker_key = from_b64u(claims["worker_key"], "worker_key")
            load_spki(worker_key, "worker_key")
        except ProtocolError as error:
            raise AdmissionError(
                error.check, error.expected, error.actual, error.message
            ) from error
        if not isinstance(claims["work_id"], str):
            raise AdmissionError(
                "worker-claims", "a work_id string", claims["work_id"], "bad work_id"
            )
        if not hmac.compare_digest(body.report_data, expected):
            raise AdmissionError(
                "worker-report-data",
                expected,
                body.report_data,
                "REPORTDATA does not commit to the claims",
            )
        worker = AdmittedWorker(
            worker_id=worker_id_for(worker_key),
            work_id=claims["work_id"],
            worker_key_spki=worker_key,
            mr_enclave=body.mr_enclave,
            mr_signer=body.mr_signer,
            isv_prod_id=body.isv_prod_id,
            isv_svn=body.isv_svn,
        )
        self._workers[worker.worker_id] = worker
        # Mutual: the answer is MACed for exactly the enclave that was just admitted.
        target = TargetInfo.create(
            mr_enclave=body.mr_enclave,
            attributes=body.attributes,
            config_svn=body.config_svn,
            misc_select=body.misc_select,
        )
        answer = self._platform.report(
            target, admission_report_data(worker.worker_id, worker.work_id)
        )
        return Admission(worker=worker, report=answer)

    def worker(self, worker_id: str) -> AdmittedWorker:
        try:
            return self._workers[worker_id]
        except KeyError:
            raise UnknownWorkerError(
                "worker-id", "a Worker this Attester admitted", worker_id, "unknown Worker"
            ) from None

    def forget(self, worker_id: str) -> None:
        """The Worker was deleted: never vouch for it again."""
        self._workers.pop(worker_id, None)

    def attest(self, worker_id: str, nonce: bytes) -> Evidence:
        """A quote whose REPORTDATA commits to the client's nonce and the admitted Worker."""
        if len(nonce) != 32:
            raise AdmissionError(
                "nonce", "32 bytes", len(nonce), "the client nonce must be 32 bytes"
            )
        claims = attester_claims(nonce, self.worker(worker_id))
        return Evidence(claims=claims, quote=self._platform.quote(report_data(claims)))
