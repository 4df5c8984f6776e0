"""Refusals inside the enclave: each names the check, the expected and the actual value."""

from __future__ import annotations

from cleanroom.errors import CheckFailed


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
