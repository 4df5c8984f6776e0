"""Attestation policies: what a verified quote must say for a user to trust it.

:func:`~cleanroom.attestation.verify.verify_quote` establishes that a quote is
authentic (dcap-qvl checked every signature and certificate). Whether its platform
and enclave are the ones the user wants is decided here, by small policy objects
with one ``verify()`` each, composed with :class:`AllOf`. Each ``verify()`` either
returns the :class:`CheckResult` s it passed or raises a :class:`PolicyError` that
names the check, the expected and the actual value: a failed check is never
returned silently.

Most callers want :class:`AttestationPolicy` (the user-facing knobs) and
:func:`appraise_quote` (verification then policy, in one call).
"""

from __future__ import annotations

import hmac
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import dcap_qvl

from cleanroom.attestation.errors import InvalidPolicyError, PolicyError, TcbStatusError
from cleanroom.attestation.tcb import DEFAULT_ACCEPTED_STATUSES, TCB_STATUSES, decide_tcb
from cleanroom.attestation.verify import TrustAnchor, VerifiedQuote, verify_quote

MEASUREMENT_SIZE = 32
REPORT_DATA_SIZE = 64
_U16_MAX = 0xFFFF


@dataclass(frozen=True)
class CheckResult:
    """One passed check: what it compared and what it found."""

    check: str
    expected: str
    actual: str
    passed: bool
    detail: str

    def to_json(self) -> dict[str, object]:
        """The result as a JSON object."""
        return {
            "check": self.check,
            "expected": self.expected,
            "actual": self.actual,
            "passed": self.passed,
            "detail": self.detail,
        }


class Policy(Protocol):
    """A rule a verified quote must satisfy.

    ``verify`` returns the checks it passed, or raises :class:`PolicyError` (or a
    subclass) naming the first check that failed. It never returns a failed result.
    """

    def verify(self, quote: VerifiedQuote) -> list[CheckResult]: ...


def _passed(check: str, expected: str, actual: str, detail: str) -> list[CheckResult]:
    return [CheckResult(check, expected, actual, True, detail)]


def _measurement(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != MEASUREMENT_SIZE:
        raise InvalidPolicyError(
            "policy",
            f"{what}: {MEASUREMENT_SIZE} bytes",
            value if isinstance(value, bytes) else repr(value),
            f"the expected {what} is not a {MEASUREMENT_SIZE}-byte measurement",
        )
    return value


def _u16(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U16_MAX:
        raise InvalidPolicyError(
            "policy",
            f"{what}: an integer 0..{_U16_MAX}",
            repr(value),
            f"the expected {what} is not a 16-bit value",
        )
    return value


def _strings(values: Iterable[str], what: str) -> frozenset[str]:
    if isinstance(values, str) or not all(isinstance(value, str) for value in values):
        raise InvalidPolicyError(
            "policy", f"{what}: a set of strings", repr(values), f"{what} must be a set of strings"
        )
    return frozenset(values)


@dataclass(frozen=True)
class TcbPolicy:
    """The platform's TCB status must be accepted, and its advisories too when listed.

    Checks ``tcb-status`` and ``tcb-advisories`` through
    :func:`~cleanroom.attestation.tcb.decide_tcb`. ``accepted_advisories=None``
    accepts any advisory of an accepted status; a set accepts only those.
    """

    accepted_statuses: frozenset[str] = DEFAULT_ACCEPTED_STATUSES
    accepted_advisories: frozenset[str] | None = None

    def __post_init__(self) -> None:
        statuses = _strings(self.accepted_statuses, "accepted TCB statuses")
        unknown = statuses - TCB_STATUSES.keys()
        if unknown:
            # A typo ("Uptodate") must not silently shrink what is accepted.
            raise InvalidPolicyError(
                "policy",
                f"accepted TCB statuses among {', '.join(TCB_STATUSES)}",
                unknown,
                "unknown TCB status in the policy",
            )
        object.__setattr__(self, "accepted_statuses", statuses)
        if self.accepted_advisories is not None:
            advisories = _strings(self.accepted_advisories, "accepted advisories")
            object.__setattr__(self, "accepted_advisories", advisories)

    def verify(self, quote: VerifiedQuote) -> list[CheckResult]:
        decision = decide_tcb(
            quote.status,
            quote.advisory_ids,
            accepted_statuses=self.accepted_statuses,
            accepted_advisories=self.accepted_advisories,
        )
        advisories = ", ".join(quote.advisory_ids) or "none"
        accepted_advisories = (
            "any (no allow-list)"
            if self.accepted_advisories is None
            else ", ".join(sorted(self.accepted_advisories)) or "none"
        )
        if not decision.accepted:
            hint = decision.hint
            if decision.rule == "advisory-not-accepted":
                raise TcbStatusError(
                    "tcb-advisories",
                    self.accepted_advisories,
                    quote.advisory_ids,
                    decision.reason,
                    hint,
                )
            raise TcbStatusError(
                "tcb-status", self.accepted_statuses, quote.status, decision.reason, hint
            )
        return [
            CheckResult(
                "tcb-status",
                ", ".join(sorted(self.accepted_statuses)),
                quote.status,
                True,
                TCB_STATUSES[quote.status],
            ),
            CheckResult("tcb-advisories", accepted_advisories, advisories, True, decision.reason),
        ]


@dataclass(frozen=True)
class DebugDisabled:
    """The enclave's DEBUG attribute must be clear.

    A debug enclave's memory can be read and changed by the host: its attestation
    says who it is, but nothing it holds is confidential.
    """

    def verify(self, quote: VerifiedQuote) -> list[CheckResult]:
        if quote.report.attributes.debug:
            raise PolicyError(
                "debug",
                "DEBUG clear",
                "DEBUG set",
                "the enclave runs in debug mode: the host can read and change its memory",
            )
        return _passed("debug", "DEBUG clear", "DEBUG clear", "production (non-debug) enclave")


@dataclass(frozen=True)
class _UnsafeDebugAllowed:
    """INSECURE: records the DEBUG attribute without refusing it (tests of debug enclaves).

    Only ``AttestationPolicy(allow_debug=True)`` uses it. The other unsafe policies are
    fenced off in :mod:`cleanroom.insecure.policy`; this one stays with the flag that
    selects it, since that package imports this one.
    """

    def verify(self, quote: VerifiedQuote) -> list[CheckResult]:
        warnings.warn(
            "UNSAFE: the attestation policy allows DEBUG enclaves, whose memory the host "
            "can read; never use this for real data",
            stacklevel=3,
        )
        actual = "DEBUG set" if quote.report.attributes.debug else "DEBUG clear"
        return _passed("debug", "any (allow_debug: INSECURE)", actual, "DEBUG not enforced")


@dataclass(frozen=True)
class MrEnclaveIn:
    """The enclave's MRENCLAVE (its code and initial data) must be one of ``mrenclaves``."""

    mrenclaves: frozenset[bytes]

    def __post_init__(self) -> None:
        values = frozenset(_measurement(value, "MRENCLAVE") for value in self.mrenclaves)
        if not values:
            raise InvalidPolicyError(
                "policy", "at least one MRENCLAVE", "none", "an empty MRENCLAVE set accepts nothing"
            )
        object.__setattr__(self, "mrenclaves", values)

    def verify(self, quote: VerifiedQuote) -> list[CheckResult]:
        actual = quote.report.mr_enclave
        expected = " | ".join(sorted(value.hex() for value in self.mrenclaves))
        if actual not in self.mrenclaves:
            raise PolicyError(
                "mrenclave",
                self.mrenclaves,
                actual,
                "the enclave's MRENCLAVE is not one of the expected measurements",
            )
        return _passed("mrenclave", expected, actual.hex(), "enclave code is an expected build")


@dataclass(frozen=True)
class MrSignerIs:
    """The enclave's MRSIGNER (hash of its signing key) must be ``mrsigner``."""

    mrsigner: bytes

    def __post_init__(self) -> None:
        _measurement(self.mrsigner, "MRSIGNER")

    def verify(self, quote: VerifiedQuote) -> list[CheckResult]:
        actual = quote.report.mr_signer
        if actual != self.mrsigner:
            raise PolicyError(
                "mrsigner",
                self.mrsigner,
                actual,
                "the enclave was signed by a different key than expected",
            )
        return _passed("mrsigner", self.mrsigner.hex(), actual.hex(), "signed by the expected key")


@dataclass(frozen=True)
class IsvProdIdIs:
    """The enclave's ISVPRODID (product ID chosen by its signer) must be ``isv_prod_id``."""

    isv_prod_id: int

    def __post_init__(self) -> None:
        _u16(self.isv_prod_id, "ISVPRODID")

    def verify(self, quote: VerifiedQuote) -> list[CheckResult]:
        actual = quote.report.isv_prod_id
        if actual != self.isv_prod_id:
            raise PolicyError(
                "isv-prod-id",
                self.isv_prod_id,
                actual,
                "the enclave is a different product of its signer",
            )
        return _passed("isv-prod-id", str(self.isv_prod_id), str(actual), "expected product")


@dataclass(frozen=True)
class MinIsvSvn:
    """The enclave's ISVSVN (security version) must be at least ``min_isv_svn``."""

    min_isv_svn: int

    def __post_init__(self) -> None:
        _u16(self.min_isv_svn, "minimum ISVSVN")

    def verify(self, quote: VerifiedQuote) -> list[CheckResult]:
        actual = quote.report.isv_svn
        if actual < self.min_isv_svn:
            raise PolicyError(
                "isv-svn",
                f">= {self.min_isv_svn}",
                actual,
                "the enclave's security version is older than the minimum accepted",
                "an older enclave version may have known vulnerabilities: ask for an update",
            )
        return _passed("isv-svn", f">= {self.min_isv_svn}", str(actual), "security version ok")


@dataclass(frozen=True)
class ReportDataIs:
    """The quote's REPORTDATA must be exactly ``report_data`` (64 bytes).

    This is what binds a quote to a session (its nonce) and to the enclave's claims.
    """

    report_data: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.report_data, bytes) or len(self.report_data) != REPORT_DATA_SIZE:
            raise InvalidPolicyError(
                "policy",
                f"REPORTDATA: exactly {REPORT_DATA_SIZE} bytes",
                self.report_data if isinstance(self.report_data, bytes) else repr(self.report_data),
                f"the expected REPORTDATA must be exactly {REPORT_DATA_SIZE} bytes",
            )

    def verify(self, quote: VerifiedQuote) -> list[CheckResult]:
        actual = quote.report.report_data
        # Constant time: REPORTDATA may be derived from a secret (a session nonce).
        if not hmac.compare_digest(actual, self.report_data):
            raise PolicyError(
                "report-data",
                self.report_data,
                actual,
                "the quote's REPORTDATA is not the expected value: it was made for another "
                "session or other claims",
            )
        return _passed(
            "report-data", self.report_data.hex(), actual.hex(), "quote bound to expected data"
        )


class AllOf:
    """Every child policy must pass, checked in order; the first failure raises."""

    def __init__(self, *policies: Policy) -> None:
        if not policies:
            # An empty conjunction is vacuously true; that must never happen by accident.
            raise InvalidPolicyError(
                "policy", "at least one policy", "none", "AllOf() would accept anything"
            )
        self.policies: tuple[Policy, ...] = policies

    def verify(self, quote: VerifiedQuote) -> list[CheckResult]:
        results: list[CheckResult] = []
        for policy in self.policies:
            results.extend(policy.verify(quote))
        return results

    def __repr__(self) -> str:
        return f"AllOf({', '.join(repr(policy) for policy in self.policies)})"


@dataclass(frozen=True)
class AttestationPolicy:
    """What a user requires of an attested enclave; ``None`` means "not checked".

    Checks run in a fixed order: TCB status and advisories, DEBUG, MRENCLAVE,
    MRSIGNER, ISVPRODID, ISVSVN, REPORTDATA. The defaults accept the TCB statuses
    UpToDate and SWHardeningNeeded with any advisory, and refuse DEBUG enclaves.
    ``allow_debug`` is only for tests of debug enclaves; never set it for real data.
    """

    accepted_statuses: frozenset[str] = DEFAULT_ACCEPTED_STATUSES
    accepted_advisories: frozenset[str] | None = None
    mrenclaves: frozenset[bytes] | None = None
    mrsigner: bytes | None = None
    isv_prod_id: int | None = None
    min_isv_svn: int | None = None
    report_data: bytes | None = None
    allow_debug: bool = False
    _policy: AllOf = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built (and so validated) once, at construction: a malformed policy is
        # refused before any evidence is looked at.
        tcb = TcbPolicy(self.accepted_statuses, self.accepted_advisories)
        object.__setattr__(self, "accepted_statuses", tcb.accepted_statuses)
        object.__setattr__(self, "accepted_advisories", tcb.accepted_advisories)
        policies: list[Policy] = [
            tcb,
            _UnsafeDebugAllowed() if self.allow_debug else DebugDisabled(),
        ]
        if self.mrenclaves is not None:
            mrenclave = MrEnclaveIn(frozenset(self.mrenclaves))
            object.__setattr__(self, "mrenclaves", mrenclave.mrenclaves)
            policies.append(mrenclave)
        if self.mrsigner is not None:
            policies.append(MrSignerIs(self.mrsigner))
        if self.isv_prod_id is not None:
            policies.append(IsvProdIdIs(self.isv_prod_id))
        if self.min_isv_svn is not None:
            policies.append(MinIsvSvn(self.min_isv_svn))
        if self.report_data is not None:
            policies.append(ReportDataIs(self.report_data))
        object.__setattr__(self, "_policy", AllOf(*policies))

    @property
    def policy(self) -> AllOf:
        """The composed policy this object applies."""
        return self._policy

    def appraise(self, quote: VerifiedQuote) -> Appraisal:
        """Apply the policy to a verified quote; raises :class:`PolicyError` on failure."""
        return Appraisal(quote=quote, checks=tuple(self._policy.verify(quote)))


@dataclass(frozen=True)
class Appraisal:
    """A verified quote that passed a policy, with the checks it passed."""

    quote: VerifiedQuote
    checks: tuple[CheckResult, ...]

    def to_json(self) -> dict[str, object]:
        """The quote's verified facts plus ``accepted`` and ``checks``."""
        return {
            **self.quote.to_json(),
            "accepted": True,
            "checks": [check.to_json() for check in self.checks],
        }


def appraise_quote(
    quote: bytes,
    collateral: dcap_qvl.QuoteCollateralV3,
    *,
    at: int,
    trust: TrustAnchor,
    policy: AttestationPolicy,
) -> Appraisal:
    """Verify ``quote`` with dcap-qvl at ``at`` against ``trust``, then apply ``policy``.

    Returns the :class:`Appraisal` on acceptance; raises an
    :class:`~cleanroom.attestation.errors.AttestationError` subclass otherwise.
    """
    return policy.appraise(verify_quote(quote, collateral, at=at, trust=trust))
