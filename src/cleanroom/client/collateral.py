"""Which collateral a client checks the Attester's quote with.

Collateral is signed by Intel, so where it comes from does not decide whether a
quote is genuine; it decides how *fresh* the client's view of revocations and TCB
levels is. By default the client takes the collateral the compute server serves
beside the quote, if it is valid now; if the server sent none or expired
collateral, the client fetches it from its own PCCS when its profile names one,
and otherwise refuses, saying which and why. A profile may instead take collateral
only from its own PCCS (``collateral_from = "pccs"``): then the server's is never
used, not even when that PCCS is down.
"""

from __future__ import annotations

from dataclasses import dataclass

import dcap_qvl
import httpx

from cleanroom.attestation import AttestationError, CheckResult, load_collateral
from cleanroom.attestation.collateral import CollateralValidity, check_fresh
from cleanroom.attestation.pccs import DEFAULT_TIMEOUT_S, PccsClient
from cleanroom.client.profile import CollateralFrom

FROM_SERVER = "the compute server"

COLLATERAL_CHECK = "collateral"
"""The check that the collateral is valid at the verification time, as ``attest`` and
``receipt verify`` list it among the checks that passed. Its refusals name what failed:
``collateral-expired`` or ``collateral-not-yet-valid``
(:func:`cleanroom.attestation.collateral.check_fresh`), ``collateral-unavailable``
(none from anywhere the profile allows), ``collateral-format``."""


class CollateralUnavailableError(AttestationError):
    """No valid collateral from anywhere the profile allows (check ``collateral-unavailable``)."""


@dataclass(frozen=True)
class ChosenCollateral:
    """Collateral valid at the verification time, and where it came from."""

    collateral: dcap_qvl.QuoteCollateralV3
    source: str
    validity: CollateralValidity
    fallback_reason: str | None = None

    def check(self) -> CheckResult:
        detail = "signed by Intel's TCB signing key; dcap-qvl checks the signatures"
        if self.fallback_reason is not None:
            detail = f"{detail}; used because {self.fallback_reason}"
        return CheckResult(
            COLLATERAL_CHECK,
            "collateral valid now",
            f"from {self.source}, {self.validity.describe()}",
            True,
            detail,
        )


def _describe(error: object) -> str:
    if isinstance(error, AttestationError):
        return str(error)
    if isinstance(error, dict):
        check, message, actual = error.get("check"), error.get("message"), error.get("actual")
        if not check and not message:
            return "no reason given"
        text = f"{check}: {message}" + (f" (got {actual})" if actual else "")
        return " ".join(text.split())[:500]
    return "no reason given" if error is None else str(error)[:300]


def _own(
    pccs_url: str, quote: bytes, at: int, transport: httpx.BaseTransport | None
) -> tuple[dcap_qvl.QuoteCollateralV3, CollateralValidity]:
    with PccsClient(pccs_url, timeout=DEFAULT_TIMEOUT_S, transport=transport) as client:
        collateral = client.for_quote(quote)
    return collateral, check_fresh(collateral, at)


def choose_collateral(
    *,
    quote: bytes,
    served: str | None,
    served_error: object,
    at: int,
    pccs_url: str | None,
    collateral_from: CollateralFrom = "server",
    transport: httpx.BaseTransport | None = None,
) -> ChosenCollateral:
    """The collateral to verify ``quote`` with at ``at``, by the rules above.

    ``served`` is the collateral the compute server sent (dcap-qvl's JSON form) or
    ``None``, ``served_error`` its reason for sending none. Raises
    :class:`CollateralUnavailableError`, or the error of the one source that was
    asked (an expired collateral's ``collateral-expired``, a PCCS's ``pccs-…``).
    """
    own_source = f"your PCCS {pccs_url}"
    if collateral_from == "pccs":
        if pccs_url is None:
            raise CollateralUnavailableError(
                "collateral-unavailable",
                "a PCCS URL in your profile",
                "none",
                "your profile takes collateral only from your own PCCS, but names none",
                "cleanroom configure --pccs-url URL",
            )
        collateral, validity = _own(pccs_url, quote, at, transport)
        return ChosenCollateral(collateral, own_source, validity)

    problem: AttestationError | None = None
    if served is not None:
        try:
            collateral = load_collateral(served)
            return ChosenCollateral(collateral, FROM_SERVER, check_fresh(collateral, at))
        except AttestationError as error:
            problem = error
    server_reason = (
        f"the compute server's collateral is not usable ({problem})"
        if problem is not None
        else f"the compute server sent no collateral ({_describe(served_error)})"
    )
    if pccs_url is None:
        if problem is not None:
            raise problem
        raise CollateralUnavailableError(
            "collateral-unavailable",
            "collateral from the compute server or from your own PCCS",
            _describe(served_error),
            "the compute server sent no collateral and your profile names no PCCS of its own",
            "cleanroom configure --pccs-url URL (your cloud's or your own PCCS)",
        )
    try:
        collateral, validity = _own(pccs_url, quote, at, transport)
    except AttestationError as error:
        raise CollateralUnavailableError(
            "collateral-unavailable",
            "collateral from the compute server or from your own PCCS",
            f"{server_reason}; {own_source}: {error}",
            "no valid collateral from the compute server, nor from your PCCS",
            error.hint,
        ) from error
    return ChosenCollateral(collateral, own_source, validity, fallback_reason=server_reason)
