"""Why an attestation was refused: one exception type per kind of failure.

Every failure names the check that failed, the value it expected and the value it
got, so that a user (or an auditor reading a log) can tell exactly which rule
refused the evidence and why. ``to_json()`` gives the same facts to machines.

The hierarchy tells callers what to do::

    AttestationError              any refusal (the evidence is NOT accepted)
    ├── EvidenceError             the input is unusable (malformed quote, collateral, root,
    │   │                         policy): nothing was appraised (CLI exit code 2)
    │   ├── UnsupportedEvidenceError   evidence from another TEE (TDX, ...)
    │   └── InvalidPolicyError    the policy itself is malformed (also a ValueError)
    ├── QuoteSignatureError       dcap-qvl rejected the quote or its collateral
    └── PolicyError               a policy rule failed
        └── TcbStatusError        the platform's TCB status or advisories are not accepted
"""

from __future__ import annotations

from cleanroom.errors import CheckFailed


class AttestationError(CheckFailed):
    """Base of attestation failures: the evidence is NOT accepted.

    ``str(error)`` is one line: ``"{check}: {message} (expected {expected}, got {actual})"``,
    with bytes shown as lowercase hex. ``hint``, when set, tells the user what to do.
    """


class EvidenceError(AttestationError):
    """The input is unusable: malformed quote, collateral JSON or root certificate.

    Nothing was appraised; the CLI exits with code 2.
    """


class UnsupportedEvidenceError(EvidenceError):
    """Evidence from another TEE (TDX, ...): refused as such, never read as SGX."""


class InvalidPolicyError(EvidenceError, ValueError):
    """The policy itself is malformed (e.g. a 31-byte MRENCLAVE, an unknown TCB status).

    Raised when a policy object is constructed, before any evidence is looked at.
    It is a ``ValueError`` too, because it is a bad argument to a constructor.
    """


class QuoteSignatureError(AttestationError):
    """dcap-qvl rejected the quote or its collateral.

    Signature chain, QE identity, TCB info, CRLs or their validity period.
    ``check`` is ``"quote-verification"`` (``"debug"`` when dcap-qvl refused a DEBUG
    enclave); ``actual`` is dcap-qvl's message verbatim.
    """


class PolicyError(AttestationError):
    """A policy rule failed: the quote is authentic, but not what the policy accepts."""


class TcbStatusError(PolicyError):
    """The platform's TCB status or advisories are not accepted; ``hint`` says what to do."""
