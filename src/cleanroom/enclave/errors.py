"""Refusals inside the enclave: each names the check, the expected and the actual value."""

from __future__ import annotations

from cleanroom.errors import CheckFailed


class AdmissionError(CheckFailed):
    """The Attester refused a Worker, or a Worker refused the Attester's answer."""


class UnknownWorkerError(CheckFailed):
    """Attestation was asked for a Worker the Attester never admitted."""
