"""Collateral: when it is valid, and quotes saved with their collateral for later checks.

DCAP collateral (TCB info, QE identity, the root CA and PCK CA CRLs) is signed by
Intel and each part carries its own validity window (``issueDate``/``nextUpdate``,
``thisUpdate``/``nextUpdate``). :func:`collateral_validity` reads those windows;
:func:`check_fresh` refuses collateral that is not valid at a given time and names
the part that is not. dcap-qvl checks the same windows when it verifies a quote:
this check comes first so that a caller can fetch fresh collateral elsewhere, and
so that the refusal says which part expired.

A *quote bundle* is a quote saved together with its collateral
(``cleanroom/quote-bundle/v1``), so that ``cleanroom verify-quote --bundle`` can
check it offline later.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import dcap_qvl
from cryptography import x509

from cleanroom.attestation.errors import AttestationError, EvidenceError
from cleanroom.attestation.verify import load_collateral
from cleanroom.protocol.encoding import loads_unique

BUNDLE_TYPE = "cleanroom/quote-bundle/v1"
BUNDLE_FIELDS = frozenset({"type", "quote", "collateral", "saved_at", "source"})
LAST_SECOND = 253402300799
"""9999-12-31T23:59:59Z, the last instant a date-time of the collateral can name."""


class CollateralExpiredError(AttestationError):
    """Collateral that is not valid at the verification time (check ``collateral-expired``
    or ``collateral-not-yet-valid``); ``actual`` names the part and its window."""


def _utc(seconds: int) -> str:
    try:
        return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):  # before year 1 or after 9999: as it is
        return f"{seconds} (UNIX seconds)"


def _instant(value: object, what: str) -> int:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a date-time string")
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"{what} has no time zone")
    return int(parsed.timestamp())


@dataclass(frozen=True)
class Window:
    """One signed part of the collateral and the time it is valid for."""

    part: str
    issued: int
    next_update: int

    def describe(self) -> str:
        return f"{self.part} valid {_utc(self.issued)} to {_utc(self.next_update)}"


@dataclass(frozen=True)
class CollateralValidity:
    """The windows of every signed part; the collateral is valid where all overlap."""

    windows: tuple[Window, ...]

    @property
    def not_before(self) -> int:
        return max(window.issued for window in self.windows)

    @property
    def not_after(self) -> int:
        """The first ``nextUpdate``: from then on some part is expired."""
        return min(window.next_update for window in self.windows)

    def describe(self) -> str:
        return f"valid {_utc(self.not_before)} to {_utc(self.not_after)}"


def collateral_validity(collateral: dcap_qvl.QuoteCollateralV3) -> CollateralValidity:
    """The validity windows of TCB info, QE identity and both CRLs.

    Raises :class:`EvidenceError` (``collateral-format``) when a part cannot be read.
    """
    windows = []
    try:
        for part, document in (
            ("tcb_info", collateral.tcb_info),
            ("qe_identity", collateral.qe_identity),
        ):
            fields = json.loads(document)
            if not isinstance(fields, dict):
                raise ValueError(f"{part} is not a JSON object")
            windows.append(
                Window(
                    part,
                    _instant(fields.get("issueDate"), f"{part}.issueDate"),
                    _instant(fields.get("nextUpdate"), f"{part}.nextUpdate"),
                )
            )
        for part, der in (("root_ca_crl", collateral.root_ca_crl), ("pck_crl", collateral.pck_crl)):
            crl = x509.load_der_x509_crl(bytes(der))
            next_update = crl.next_update_utc
            if next_update is None:
                raise ValueError(f"{part} has no nextUpdate")
            windows.append(
                Window(part, int(crl.last_update_utc.timestamp()), int(next_update.timestamp()))
            )
    except ValueError as error:
        raise EvidenceError(
            "collateral-format",
            "TCB info and QE identity with issueDate/nextUpdate, DER CRLs with nextUpdate",
            str(error),
            "the collateral's validity cannot be read",
        ) from error
    return CollateralValidity(tuple(windows))


def check_fresh(collateral: dcap_qvl.QuoteCollateralV3, at: int) -> CollateralValidity:
    """The collateral's validity, or :class:`CollateralExpiredError` naming the part
    that is not valid at ``at`` (UNIX seconds)."""
    validity = collateral_validity(collateral)
    expired = [window for window in validity.windows if at >= window.next_update]
    if expired:
        window = min(expired, key=lambda w: w.next_update)
        raise CollateralExpiredError(
            "collateral-expired",
            f"collateral valid at {_utc(at)}",
            window.describe(),
            f"the collateral's {window.part} expired at {_utc(window.next_update)}",
            "fetch fresh collateral from a PCCS (a client can use its own: "
            "cleanroom configure --pccs-url URL)",
        )
    early = [window for window in validity.windows if at < window.issued]
    if early:
        window = max(early, key=lambda w: w.issued)
        raise CollateralExpiredError(
            "collateral-not-yet-valid",
            f"collateral valid at {_utc(at)}",
            window.describe(),
            f"the collateral's {window.part} is issued after {_utc(at)}",
            "check this machine's clock",
        )
    return validity


# ------------------------------------------------------------------ bundles


@dataclass(frozen=True)
class QuoteBundle:
    """A quote and the collateral it was (or can be) checked with, saved together."""

    quote: bytes
    collateral_json: str
    saved_at: int
    source: str

    def collateral(self) -> dcap_qvl.QuoteCollateralV3:
        return load_collateral(self.collateral_json)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": BUNDLE_TYPE,
            "quote": base64.b64encode(self.quote).decode("ascii"),
            "collateral": json.loads(self.collateral_json),
            "saved_at": self.saved_at,
            "source": self.source,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def loads(cls, data: bytes | str) -> QuoteBundle:
        """Parse a saved bundle; :class:`EvidenceError` (``bundle-format``) if malformed."""
        expected = f"a {BUNDLE_TYPE} JSON object ({', '.join(sorted(BUNDLE_FIELDS))})"
        try:
            document = loads_unique(data)
            if not isinstance(document, dict) or set(document) != BUNDLE_FIELDS:
                found = sorted(document) if isinstance(document, dict) else type(document).__name__
                raise ValueError(f"fields {found}")
            if document["type"] != BUNDLE_TYPE:
                raise ValueError(f"type {document['type']!r}")
            saved_at, source = document["saved_at"], document["source"]
            if (
                isinstance(saved_at, bool)
                or not isinstance(saved_at, int)
                or not 0 <= saved_at <= LAST_SECOND
            ):
                raise ValueError(f"saved_at is not UNIX seconds of 1970-9999: {saved_at!r}"[:200])
            if not isinstance(source, str) or not isinstance(document["collateral"], dict):
                raise ValueError("source must be text and collateral an object")
            quote = base64.b64decode(document["quote"], validate=True)
        except (ValueError, TypeError) as error:
            raise EvidenceError(
                "bundle-format", expected, str(error)[:200], "the quote bundle cannot be read"
            ) from error
        return cls(
            quote=quote,
            collateral_json=json.dumps(document["collateral"]),
            saved_at=saved_at,
            source=source,
        )
