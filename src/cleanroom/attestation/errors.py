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

from collections.abc import Mapping


def _jsonable(value: object) -> object:
    """A JSON-serialisable form of ``value``: bytes as lowercase hex, sets sorted."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(item) for item in value), key=str)
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return str(value)


def _display(value: object) -> str:
    """A one-line human form of ``value`` (hex for bytes, sorted braces for sets)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, set | frozenset):
        return "{" + ", ".join(sorted(_display(item) for item in value)) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_display(item) for item in value) + "]"
    return str(value)


class AttestationError(Exception):
    """Base: every failure names the check, the expected and the actual value.

    ``str(error)`` is one line: ``"{check}: {message} (expected {expected}, got {actual})"``,
    with bytes shown as lowercase hex. ``hint``, when set, tells the user what to do.
    """

    def __init__(
        self,
        check: str,
        expected: object,
        actual: object,
        message: str,
        hint: str | None = None,
    ) -> None:
        self.check = check
        self.expected = expected
        self.actual = actual
        self.message = message
        self.hint = hint
        super().__init__(self._one_line())

    def _one_line(self) -> str:
        text = (
            f"{self.check}: {self.message} "
            f"(expected {_display(self.expected)}, got {_display(self.actual)})"
        )
        # dcap-qvl's messages may span lines ("Caused by: ..."); keep the summary on one.
        return " ".join(text.split())

    def __str__(self) -> str:
        return self._one_line()

    @property
    def expected_text(self) -> str:
        """The expected value for people: hex for bytes, sorted sets."""
        return _display(self.expected)

    @property
    def actual_text(self) -> str:
        """The actual value for people, folded onto one line."""
        return " ".join(_display(self.actual).split())

    def to_json(self) -> dict[str, object]:
        """The failure as a JSON object: check, expected, actual, message and hint if set."""
        document: dict[str, object] = {
            "check": self.check,
            "expected": _jsonable(self.expected),
            "actual": _jsonable(self.actual),
            "message": self.message,
        }
        if self.hint is not None:
            document["hint"] = self.hint
        return document


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
