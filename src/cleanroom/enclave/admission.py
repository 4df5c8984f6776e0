"""What the Attester and a Worker say to each other during admission.

1. The Worker sends a REPORT targeted at the Attester whose REPORTDATA is
   SHA-512(JCS(worker claims)), with the claims.
2. The Attester checks the REPORT's MAC with its own report key, the Worker's
   measurement against the allow-list in its own measured configuration, DEBUG
   and ISVSVN, and that REPORTDATA commits to the claims; it then answers with a
   REPORT targeted at the Worker binding the admission (worker_id and work_id).
3. The Worker checks that answer's MAC and that it comes from an Attester signed
   by the same signer (the Attester's MRENCLAVE names the Worker's, so the Worker
   cannot name the Attester's without a cycle).
"""

from __future__ import annotations

from typing import Any

from cleanroom.protocol.claims import report_data
from cleanroom.protocol.encoding import b64u, sha256

ADMISSION_TYPE = "cleanroom/worker-admission/v1"


def worker_id_for(worker_key_spki: bytes) -> str:
    """A Worker is named by its attested key: b64u(SHA-256(SPKI W))."""
    return b64u(sha256(worker_key_spki))


def admission_document(worker_id: str, work_id: str) -> dict[str, Any]:
    return {"type": ADMISSION_TYPE, "worker_id": worker_id, "work_id": work_id}


def admission_report_data(worker_id: str, work_id: str) -> bytes:
    return report_data(admission_document(worker_id, work_id))
