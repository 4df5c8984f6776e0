"""Collateral beside each quote: from a PCCS, cached by FMSPC until it expires.

The Controller is untrusted, and so is what it adds here: collateral is signed by
Intel, and the client checks its signatures (dcap-qvl) and validity window. Without
collateral from this server, a client uses its own PCCS or refuses.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

from cleanroom.attestation import AttestationError
from cleanroom.attestation.pccs import CollateralCache

log = logging.getLogger("cleanroom.controller")


async def add_collateral(evidence: Any, cache: CollateralCache) -> Any:
    """The Attester's evidence with ``collateral`` for its quote, or null and
    ``collateral_error`` saying why there is none."""
    if not isinstance(evidence, dict):
        return evidence
    try:
        quote = base64.urlsafe_b64decode(str(evidence.get("quote", "")) + "==")
        cached = await asyncio.to_thread(cache.for_quote, quote)
    except (ValueError, AttestationError) as error:
        log.warning("no collateral served with this quote: %s", error)
        evidence["collateral"] = None
        evidence["collateral_error"] = (
            error.to_json()
            if isinstance(error, AttestationError)
            else {"check": "quote-format", "message": str(error)}
        )
        return evidence
    evidence["collateral"] = cached.collateral_json
    return evidence
