"""What an enclave's REPORTDATA commits to: worker claims and attester claims.

REPORTDATA = SHA-512(JCS(claims)): 64 bytes, the whole field, so no room is left
for anything the claims do not say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cleanroom.protocol.encoding import b64u, canonical, sha512

WORKER_CLAIMS_TYPE = "cleanroom/worker-claims/v1"
ATTESTER_CLAIMS_TYPE = "cleanroom/attester-claims/v1"


def report_data(claims: dict[str, Any]) -> bytes:
    """SHA-512 of the claims' canonical JSON: the REPORTDATA that binds them."""
    return sha512(canonical(claims))


def worker_claims(work_id: str, worker_key_spki: bytes) -> dict[str, Any]:
    """What a Worker asserts in its REPORT to the Attester: which work, which key."""
    return {"type": WORKER_CLAIMS_TYPE, "work_id": work_id, "worker_key": b64u(worker_key_spki)}


@dataclass(frozen=True)
class AdmittedWorker:
    """A Worker the Attester admitted by local attestation, as it vouches for it."""

    worker_id: str
    work_id: str
    worker_key_spki: bytes
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int

    def document(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "work_id": self.work_id,
            "worker_key": b64u(self.worker_key_spki),
            "mrenclave": self.mr_enclave.hex(),
            "mrsigner": self.mr_signer.hex(),
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
        }


def attester_claims(nonce: bytes, worker: AdmittedWorker) -> dict[str, Any]:
    """What the Attester's quote commits to, per session: the client's nonce and the Worker."""
    return {"type": ATTESTER_CLAIMS_TYPE, "nonce": b64u(nonce), "worker": worker.document()}
