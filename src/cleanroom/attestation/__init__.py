"""Remote attestation of SGX quotes: dcap-qvl's cryptographic appraisal, then our policy.

Typical use::

    collateral = load_collateral(collateral_json)
    appraisal = appraise_quote(
        quote, collateral, at=now, trust=TrustAnchor.intel_production(),
        policy=AttestationPolicy(mrenclaves=frozenset({expected}), report_data=binding),
    )

Every refusal is an :class:`AttestationError` naming the check, the expected and
the actual value. See ``docs/attestation.md``.
"""

from __future__ import annotations

from cleanroom.attestation.errors import (
    AttestationError,
    EvidenceError,
    InvalidPolicyError,
    PolicyError,
    QuoteSignatureError,
    TcbStatusError,
    UnsupportedEvidenceError,
)
from cleanroom.attestation.policy import (
    AllOf,
    Appraisal,
    AttestationPolicy,
    CheckResult,
    DebugDisabled,
    IsvProdIdIs,
    MinIsvSvn,
    MrEnclaveIn,
    MrSignerIs,
    Policy,
    ReportDataIs,
    TcbPolicy,
    appraise_quote,
)
from cleanroom.attestation.tcb import (
    DEFAULT_ACCEPTED_STATUSES,
    TCB_STATUSES,
    TcbDecision,
    decide_tcb,
)
from cleanroom.attestation.verify import (
    INTEL_SGX_ROOT_CA_SHA256,
    TrustAnchor,
    VerifiedQuote,
    load_collateral,
    verify_quote,
)

__all__ = [
    "DEFAULT_ACCEPTED_STATUSES",
    "INTEL_SGX_ROOT_CA_SHA256",
    "TCB_STATUSES",
    "AllOf",
    "Appraisal",
    "AttestationError",
    "AttestationPolicy",
    "CheckResult",
    "DebugDisabled",
    "EvidenceError",
    "InvalidPolicyError",
    "IsvProdIdIs",
    "MinIsvSvn",
    "MrEnclaveIn",
    "MrSignerIs",
    "Policy",
    "PolicyError",
    "QuoteSignatureError",
    "ReportDataIs",
    "TcbDecision",
    "TcbPolicy",
    "TcbStatusError",
    "TrustAnchor",
    "UnsupportedEvidenceError",
    "VerifiedQuote",
    "appraise_quote",
    "decide_tcb",
    "load_collateral",
    "verify_quote",
]
