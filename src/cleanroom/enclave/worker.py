"""A Worker: one per clean room, inside the TEE.

It computes its Work-ID itself from the spec and checks the function bundle it
read against the spec's function ID, so a Controller that swaps either yields a Worker
whose claims name another Work-ID, which clients refuse. It serves no session
until the Attester's answer to its admission has verified.
"""

from __future__ import annotations

import hmac
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.enclave.admission import admission_report_data, worker_id_for
from cleanroom.enclave.errors import AdmissionError
from cleanroom.protocol import handshake_v2
from cleanroom.protocol.claims import report_data, worker_claims
from cleanroom.protocol.handshake import AcceptedHandshake, SeenNonces, respond
from cleanroom.protocol.keys import spki
from cleanroom.protocol.receipt import sign_receipt
from cleanroom.protocol.spec import WorkSpec
from cleanroom.protocol.status import sign_status
from cleanroom.sgx import Report, SgxParseError, TargetInfo
from cleanroom.tee.platform import EnclavePlatform, LocalAttestationError

ATTESTER_ISV_PROD_ID = 1


class WorkerEnclave:
    def __init__(self, platform: EnclavePlatform, spec: WorkSpec, function_id: str) -> None:
        """``function_id`` is what the bundle this Worker read hashes to (the Worker's own
        computation: see :func:`cleanroom.enclave.room.seal_bundle`)."""
        if not hmac.compare_digest(function_id, spec.function):
            raise AdmissionError(
                "function-id", spec.function, function_id, "the bundle is not the spec's function"
            )
        self._platform = platform
        self.spec = spec
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.worker_key_spki = spki(self._key.public_key())
        self.worker_id = worker_id_for(self.worker_key_spki)
        self.claims: dict[str, Any] = worker_claims(spec.work_id, self.worker_key_spki)
        self._seen = SeenNonces()
        self._admitted = False

    @property
    def admitted(self) -> bool:
        return self._admitted

    def admission_request(self, attester_target_info: bytes) -> tuple[bytes, dict[str, Any]]:
        """The REPORT (for the Attester) and the claims its REPORTDATA commits to."""
        try:
            target = TargetInfo.from_bytes(attester_target_info)
        except SgxParseError as error:
            raise AdmissionError(
                "target-info", "512 bytes", len(attester_target_info), str(error)
            ) from error
        report = self._platform.report(target, report_data(self.claims))
        return report.to_bytes(), self.claims

    def complete_admission(self, answer: bytes, *, attester_mr_signer: bytes) -> None:
        """Check the Attester's answer: MACed for us, by an Attester of our signer."""
        try:
            body = self._platform.verify_report(Report.from_bytes(answer))
        except SgxParseError as error:
            raise AdmissionError(
                "report-format", "a 432-byte REPORT", len(answer), str(error)
            ) from error
        except LocalAttestationError as error:
            raise AdmissionError(
                error.check, error.expected, error.actual, error.message
            ) from error
        if not hmac.compare_digest(body.mr_signer, attester_mr_signer):
            raise AdmissionError(
                "attester-mrsigner", attester_mr_signer, body.mr_signer, "wrong signer"
            )
        if body.isv_prod_id != ATTESTER_ISV_PROD_ID:
            raise AdmissionError(
                "attester-isv-prod-id", ATTESTER_ISV_PROD_ID, body.isv_prod_id, "not the Attester"
            )
        if body.attributes.debug:
            raise AdmissionError("attester-debug", "DEBUG clear", "DEBUG set", "a DEBUG Attester")
        expected = admission_report_data(self.worker_id, self.spec.work_id)
        if not hmac.compare_digest(body.report_data, expected):
            raise AdmissionError(
                "admission-report-data",
                expected,
                body.report_data,
                "the answer admits another Worker",
            )
        self._admitted = True

    def sign_receipt(self, receipt: dict[str, Any]) -> bytes:
        """Sign a run receipt with the key the Attester vouched for."""
        return sign_receipt(self._key, receipt)

    def sign_status(self, status: dict[str, Any]) -> bytes:
        """Sign a room status (protocol/status.py) with the key the Attester vouched for."""
        return sign_status(self._key, status)

    def handshake(self, init: object, init_signature: bytes) -> AcceptedHandshake:
        """The handshake, the Worker's side; refused until admission completed.

        A ``cleanroom/handshake-init/v2`` is answered by v2 (hybrid key exchange, one
        round trip) and checked as v2 throughout, so it cannot carry v1's suite; any
        other init is checked as v1, whose exact field set admits nothing of v2. Which
        version a session may use is the client's policy (it signs its init).
        """
        if not self._admitted:
            raise AdmissionError(
                "admitted", "an admitted Worker", "not admitted", "admission incomplete"
            )
        if isinstance(init, dict) and init.get("type") == handshake_v2.INIT_TYPE:
            return handshake_v2.respond(
                init, init_signature, spec=self.spec, worker_key=self._key, seen=self._seen
            )
        return respond(
            init,
            init_signature,
            spec=self.spec,
            worker_id=self.worker_id,
            worker_key=self._key,
            seen=self._seen,
        )
