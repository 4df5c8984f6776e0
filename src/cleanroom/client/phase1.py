"""Phase 1, the client's side: is this the Worker of the clean room I approved?

Everything here arrives through the untrusted Controller. The client accepts the
Attester's evidence only if all of these hold (docs/protocol.md, Phase 1):

1. the quote verifies (dcap-qvl) against the user's trust anchor at the given time,
   and the user's policy for the Attester holds (TCB, DEBUG, MRENCLAVE, MRSIGNER, …);
2. the quote's REPORTDATA is SHA-512(JCS(claims)): the claims are the Attester's;
3. claims.nonce is the nonce this client just chose: not a replayed attestation;
4. claims.worker.work_id is the Work-ID the user approved: not another clean room;
5. claims.worker.mrenclave is an expected Worker measurement.
"""

from __future__ import annotations

import dataclasses
import hmac
from dataclasses import dataclass
from typing import Any

import dcap_qvl

from cleanroom.attestation import (
    Appraisal,
    AttestationError,
    AttestationPolicy,
    CheckResult,
    PolicyError,
    TrustAnchor,
    appraise_quote,
)
from cleanroom.protocol.claims import ATTESTER_CLAIMS_TYPE, report_data
from cleanroom.protocol.encoding import b64u, from_b64u, sha256
from cleanroom.protocol.errors import ProtocolError
from cleanroom.protocol.keys import load_spki

WORKER_FIELDS = frozenset(
    {"worker_id", "work_id", "worker_key", "mrenclave", "mrsigner", "isv_prod_id", "isv_svn"}
)


class ClaimsError(PolicyError):
    """The Attester's claims are authentic but not what this client asked for."""


@dataclass(frozen=True)
class AttestedWorker:
    """A Worker that Phase 1 accepted: what Phase 2 needs, and the appraisal behind it."""

    worker_id: str
    work_id: str
    worker_key_spki: bytes
    worker_mr_enclave: bytes
    quote_sha256: bytes
    appraisal: Appraisal
    claims_checks: tuple[CheckResult, ...] = ()

    @property
    def checks(self) -> tuple[CheckResult, ...]:
        """Every check that passed: the quote and policy's, then the claims'."""
        return (*self.appraisal.checks, *self.claims_checks)


def _claim(check: str, expected: object, actual: object, message: str) -> ClaimsError:
    return ClaimsError(check, expected, actual, message)


def verify_attester_evidence(
    *,
    claims: Any,
    quote: bytes,
    collateral: dcap_qvl.QuoteCollateralV3,
    nonce: bytes,
    approved_work_id: str,
    expected_worker_mrenclaves: frozenset[bytes],
    attester_policy: AttestationPolicy,
    trust: TrustAnchor,
    at: int,
) -> AttestedWorker:
    """Run every Phase 1 check; raise the AttestationError that names the first failure."""
    try:
        binding = report_data(claims)
    except ProtocolError as error:
        raise _claim(
            "claims-format", "canonical JSON claims", type(claims).__name__, error.message
        ) from error
    # Checks 1 and 2: the policy's REPORTDATA rule is the binding of the claims.
    policy = dataclasses.replace(attester_policy, report_data=binding)
    appraisal = appraise_quote(quote, collateral, at=at, trust=trust, policy=policy)

    if not isinstance(claims, dict) or set(claims) != {"type", "nonce", "worker"}:
        raise _claim("claims-format", ["nonce", "type", "worker"], claims, "bad claims")
    if claims["type"] != ATTESTER_CLAIMS_TYPE:
        raise _claim("claims-format", ATTESTER_CLAIMS_TYPE, claims["type"], "wrong claims type")
    if not isinstance(claims["nonce"], str) or not hmac.compare_digest(
        claims["nonce"], b64u(nonce)
    ):
        raise _claim("nonce", b64u(nonce), claims["nonce"], "replayed or foreign attestation")
    worker = claims["worker"]
    if not isinstance(worker, dict) or set(worker) != WORKER_FIELDS:
        raise _claim("claims-format", sorted(WORKER_FIELDS), worker, "bad worker claims")
    if worker["work_id"] != approved_work_id:
        raise _claim(
            "work-id", approved_work_id, worker["work_id"], "this Worker serves another clean room"
        )
    try:
        mr_enclave = bytes.fromhex(worker["mrenclave"])
        worker_key = from_b64u(worker["worker_key"], "worker_key")
        load_spki(worker_key, "worker_key")
    except (ValueError, TypeError, ProtocolError) as error:
        raise _claim("claims-format", "hex MRENCLAVE and b64u key", worker, str(error)) from error
    if mr_enclave not in expected_worker_mrenclaves:
        raise _claim(
            "worker-mrenclave",
            expected_worker_mrenclaves,
            mr_enclave,
            "not an expected Worker image",
        )
    if worker["worker_id"] != b64u(sha256(worker_key)):
        raise _claim(
            "worker-id", b64u(sha256(worker_key)), worker["worker_id"], "id is not its key"
        )
    passed = (
        CheckResult("nonce", b64u(nonce), claims["nonce"], True, "a fresh attestation"),
        CheckResult(
            "work-id", approved_work_id, worker["work_id"], True, "the clean room you approved"
        ),
        CheckResult(
            "worker-mrenclave",
            ", ".join(sorted(m.hex() for m in expected_worker_mrenclaves)),
            mr_enclave.hex(),
            True,
            "an expected Worker image",
        ),
        CheckResult(
            "worker-id", b64u(sha256(worker_key)), worker["worker_id"], True, "id of its key"
        ),
    )
    return AttestedWorker(
        claims_checks=passed,
        worker_id=worker["worker_id"],
        work_id=worker["work_id"],
        worker_key_spki=worker_key,
        worker_mr_enclave=mr_enclave,
        quote_sha256=sha256(quote),
        appraisal=appraisal,
    )


__all__ = ["AttestationError", "AttestedWorker", "ClaimsError", "verify_attester_evidence"]
