"""Attestation policies that check less than they should. INSECURE: tests only.

:class:`UnsafeNoOp` accepts any quote: tests and experiments use it to skip the policy
layer on purpose. Nothing in cleanroom's clients or servers uses it, and
import-linter keeps it that way (only code that chooses the simulation may import
``cleanroom.insecure``).

``AttestationPolicy(allow_debug=True)`` stays in :mod:`cleanroom.attestation.policy`,
which honours that flag itself: moving its rule here would make the attestation
package import this one, which imports the attestation package (its results are
:class:`~cleanroom.attestation.policy.CheckResult`), a cycle. The flag says what it
does, defaults to off, and warns on every use.
"""

from __future__ import annotations

import warnings

from cleanroom.attestation.policy import CheckResult
from cleanroom.attestation.verify import VerifiedQuote

__all__ = ["UnsafeNoOp"]


class UnsafeNoOp:
    """UNSAFE: ACCEPTS ANY QUOTE. CHECKS NOTHING. NEVER USE IT FOR REAL DATA.

    It exists only so that tests and experiments can skip the policy layer on
    purpose; every use emits a warning.
    """

    def verify(self, quote: VerifiedQuote) -> list[CheckResult]:
        warnings.warn(
            "UNSAFE: UnsafeNoOp attestation policy used: no policy check performed!",
            stacklevel=2,
        )
        return [
            CheckResult(
                "unsafe-no-op", "nothing", "anything", True, "UNSAFE: no policy was checked"
            )
        ]
