"""Refusals inside the enclave: each names the check, the expected and the actual value."""

from __future__ import annotations

from cleanroom.errors import CheckFailed
from cleanroom.protocol.encoding import b64u


class AdmissionError(CheckFailed):
    """The Attester refused a Worker, or a Worker refused the Attester's answer."""


class UnknownWorkerError(CheckFailed):
    """Attestation was asked for a Worker the Attester never admitted."""


class StoreError(CheckFailed):
    """Sealed data was refused: unsafe name, tampered at rest, or the store was erased."""


class UploadError(CheckFailed):
    """An upload does not match its manifest, or came at the wrong time."""


class RunError(CheckFailed):
    """The function cannot be run as the spec and the platform require."""


class SealedRefusal(CheckFailed):
    """A refusal whose facts would tell the relay about the analyst's question (a
    query's text and parameters, quoted by the rule it broke). In the clear it says only
    that the query was refused; ``sealed`` holds the refusal itself, sealed to the run
    session's client (:func:`cleanroom.protocol.query_receipt.seal_refusal`)."""

    def __init__(self, sealed: bytes) -> None:
        super().__init__(
            "query-refused", "a query every rule allows", "refused (why is sealed to its runner)",
            "the Worker refused the query; its reasons are sealed to the runner",
        )  # fmt: skip
        self.sealed = sealed

    def to_json(self) -> dict[str, object]:
        return {**super().to_json(), "sealed": b64u(self.sealed)}
