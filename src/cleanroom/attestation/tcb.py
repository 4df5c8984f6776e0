"""The TCB decision: may a platform with this TCB status and these advisories be trusted?

One pure function, :func:`decide_tcb`, with no I/O and no clock, so that every row
of its decision table is a test (``tests/attestation/test_tcb.py``).

The *TCB* (trusted computing base) of an SGX platform is its CPU microcode, its
BIOS/firmware configuration and Intel's SGX platform software. Intel publishes, per
platform model, which TCB levels are current and which known vulnerabilities
(security advisories, ``INTEL-SA-…``) affect older or mis-configured ones; dcap-qvl
compares the platform's TCB level, as certified in its PCK certificate, with that
signed *TCB info* and reports one of the statuses below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

# The status strings exactly as dcap-qvl 0.7 reports them for SGX (its TCB info
# ``tcbStatus`` values). dcap-qvl also knows the TDX-only "TDRelaunchAdvised" and
# "TDRelaunchAdvisedConfigurationNeeded"; for SGX those are unknown and refused.
TCB_STATUSES: Mapping[str, str] = MappingProxyType(
    {
        "UpToDate": (
            "The platform runs the latest TCB level Intel has published for it: current "
            "microcode, firmware and SGX platform software, with no known vulnerability "
            "left to mitigate. This is the best status there is; nothing to do."
        ),
        "SWHardeningNeeded": (
            "The platform's TCB is current, but a known vulnerability (named by the "
            "advisories) can only be mitigated in the enclave's own software, e.g. LVI "
            "(INTEL-SA-00334) or MMIO stale data (INTEL-SA-00615). The risk depends on "
            "whether the enclave was built with those mitigations, which a quote cannot "
            "show: the enclave's developer must confirm it. The platform operator has "
            "nothing to update."
        ),
        "ConfigurationNeeded": (
            "The platform's TCB is current, but its configuration leaves a known "
            "vulnerability open (named by the advisories), for example a BIOS setting "
            "such as hyper-threading that must be changed. Until the operator changes "
            "that configuration an attacker with access to the machine may be able to "
            "extract enclave secrets; ask the operator to apply the advisories' "
            "configuration guidance."
        ),
        "ConfigurationAndSWHardeningNeeded": (
            "Both of the above: the platform's configuration leaves a known "
            "vulnerability open (the operator must change BIOS or platform settings as "
            "the advisories say) and another one needs mitigations in the enclave's "
            "software (its developer must confirm they are built in). Accept it only "
            "after reading the listed advisories and deciding their risk is acceptable."
        ),
        "OutOfDate": (
            "The platform's TCB level is older than the latest one Intel has published: "
            "its microcode, firmware or SGX platform software misses security fixes for "
            "known vulnerabilities (named by the advisories), some of which let an "
            "attacker with access to the machine read enclave memory or forge "
            "attestations. The operator must update the BIOS/microcode and SGX software "
            "and re-provision the platform; do not send secrets to it until then."
        ),
        "OutOfDateConfigurationNeeded": (
            "The platform's TCB level is out of date (it misses security fixes; the "
            "operator must update BIOS/microcode and SGX software) and, in addition, its "
            "configuration leaves a known vulnerability open (the operator must change "
            "platform settings). Do not send secrets to it until both are fixed."
        ),
        "Revoked": (
            "Intel has revoked this platform's TCB level or its keys: the platform is "
            "known to be compromised or its attestation key can no longer be trusted. "
            "Nothing it attests means anything; it is never accepted, whatever the "
            "policy says. The operator must contact the hardware vendor."
        ),
    }
)

DEFAULT_ACCEPTED_STATUSES: frozenset[str] = frozenset({"UpToDate", "SWHardeningNeeded"})

# Statuses a policy can never accept, even if a user lists them.
NEVER_ACCEPTED_STATUSES: frozenset[str] = frozenset({"Revoked"})

_ADVISORY_URL = "https://www.intel.com/content/www/us/en/security-center/advisory/{}.html"


@dataclass(frozen=True)
class TcbDecision:
    """The outcome of :func:`decide_tcb`.

    ``rule`` names the row of the decision table that decided: ``unknown-status``,
    ``revoked``, ``status-not-accepted``, ``advisory-not-accepted`` or ``accepted``.
    ``reason`` says why in one sentence; ``hint`` (on rejection) says what to do.
    """

    accepted: bool
    rule: str
    status: str
    advisory_ids: tuple[str, ...]
    reason: str
    hint: str | None


def _accept_flags(option: str, values: frozenset[str]) -> str:
    return " ".join(f"{option} {value}" for value in sorted(values))


def decide_tcb(
    status: str,
    advisory_ids: Sequence[str],
    *,
    accepted_statuses: frozenset[str],
    accepted_advisories: frozenset[str] | None,
) -> TcbDecision:
    """Decide whether a platform TCB ``status`` with ``advisory_ids`` is acceptable.

    Rules, in order (the first that applies decides):

    1. a status this module does not know is rejected (fail closed);
    2. ``Revoked`` is rejected, even if ``accepted_statuses`` lists it;
    3. a status outside ``accepted_statuses`` is rejected;
    4. when ``accepted_advisories`` is not ``None``, any advisory outside it is rejected;
    5. otherwise the TCB is accepted.
    """
    advisories = tuple(advisory_ids)

    def reject(rule: str, reason: str, hint: str) -> TcbDecision:
        return TcbDecision(False, rule, status, advisories, reason, hint)

    if status not in TCB_STATUSES:
        return reject(
            "unknown-status",
            f"TCB status {status!r} is not a status this verifier knows for SGX "
            f"({', '.join(TCB_STATUSES)}); what cannot be interpreted is refused",
            "a newer dcap-qvl may report statuses this version of cleanroom does not "
            "understand: upgrade cleanroom",
        )
    meaning = TCB_STATUSES[status]
    if status in NEVER_ACCEPTED_STATUSES:
        listed = (
            " (it is listed as accepted, which is ignored: Revoked is never accepted)"
            if status in accepted_statuses
            else ""
        )
        return reject(
            "revoked",
            f"TCB status {status} is never accepted{listed}",
            meaning,
        )
    if status not in accepted_statuses:
        deliberate = (accepted_statuses | {status}) & (TCB_STATUSES.keys() - {"Revoked"})
        return reject(
            "status-not-accepted",
            f"TCB status {status} is not among the accepted statuses "
            f"({', '.join(sorted(accepted_statuses)) or 'none'})",
            f"{meaning} To accept it deliberately, pass "
            f"{_accept_flags('--accept-status', frozenset(deliberate))} "
            "(the list given replaces the default set).",
        )
    if accepted_advisories is not None:
        unaccepted = tuple(sorted(set(advisories) - accepted_advisories))
        if unaccepted:
            links = ", ".join(_ADVISORY_URL.format(a.lower()) for a in unaccepted)
            return reject(
                "advisory-not-accepted",
                f"advisor{'ies' if len(unaccepted) > 1 else 'y'} {', '.join(unaccepted)} "
                f"{'are' if len(unaccepted) > 1 else 'is'} not among the accepted "
                f"advisories ({', '.join(sorted(accepted_advisories)) or 'none'})",
                f"Read {links} and decide whether the risk is acceptable for this data; to "
                "accept deliberately, pass "
                f"{_accept_flags('--accept-advisory', accepted_advisories | set(unaccepted))}.",
            )
    advisory_note = (
        f" with advisories {', '.join(advisories)}"
        + (" (all accepted)" if accepted_advisories is not None else " (no allow-list set)")
        if advisories
        else " with no advisories"
    )
    return TcbDecision(
        True,
        "accepted",
        status,
        advisories,
        f"TCB status {status} is accepted{advisory_note}",
        None,
    )
