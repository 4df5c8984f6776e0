"""Run receipts saved for a third party, and their offline check.

A party saves, beside the signed receipt, everything an auditor needs to check it
without contacting anyone: the spec (whose hash is the Work-ID), the Attester's claims,
and the quote that commits to those claims with its collateral (a quote bundle). The
auditor checks the quote at a pinned time against the published measurements, that
its claims name the spec's Work-ID and the Worker key, and that this key signed the
receipt (docs/compliance.md, "Third-party verifiability").

Layout of a saved directory::

    receipt.json  {"type": "cleanroom/saved-receipt/v1", "room", "spec", "receipt",
                   "signature": b64u, "claims"}
    quote.json    a cleanroom/quote-bundle/v1: the quote, its collateral, saved_at
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cleanroom.attestation import AttestationPolicy, CheckResult, EvidenceError, TrustAnchor
from cleanroom.attestation.collateral import QuoteBundle, check_fresh
from cleanroom.client.phase1 import AttestedWorker, ClaimsError, verify_attester_evidence
from cleanroom.errors import CheckFailed
from cleanroom.protocol.encoding import b64u, from_b64u
from cleanroom.protocol.errors import ProtocolError
from cleanroom.protocol.keys import load_spki
from cleanroom.protocol.receipt import verify_receipt
from cleanroom.protocol.spec import WorkSpec

SAVED_TYPE = "cleanroom/saved-receipt/v1"
SAVED_FIELDS = frozenset({"type", "room", "spec", "receipt", "signature", "claims"})
RECEIPT_FILE = "receipt.json"
QUOTE_FILE = "quote.json"


@dataclass(frozen=True)
class SavedReceipt:
    """What a party saves: the receipt with the evidence that attested its signer."""

    room: str
    spec: dict[str, Any]
    receipt: dict[str, Any]
    signature: bytes
    claims: dict[str, Any]
    quote: QuoteBundle

    def write(self, directory: Path) -> Path:
        """Write ``receipt.json`` and ``quote.json`` into ``directory`` (new or empty)."""
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise EvidenceError(
                "save-directory", "a new or empty directory", str(directory), "not empty"
            )
        directory.mkdir(parents=True, exist_ok=True)
        document = {
            "type": SAVED_TYPE,
            "room": self.room,
            "spec": self.spec,
            "receipt": self.receipt,
            "signature": b64u(self.signature),
            "claims": self.claims,
        }
        _write(directory / QUOTE_FILE, self.quote.dumps())
        _write(directory / RECEIPT_FILE, json.dumps(document, indent=2, sort_keys=True) + "\n")
        return directory / RECEIPT_FILE

    @classmethod
    def read(cls, path: Path) -> SavedReceipt:
        """``path`` is a saved directory or its ``receipt.json``; ``quote.json`` is beside it.

        :class:`EvidenceError` (``saved-receipt-format``, ``bundle-format``) if malformed.
        """
        receipt_path = path / RECEIPT_FILE if path.is_dir() else path
        expected = f"a {SAVED_TYPE} JSON object ({', '.join(sorted(SAVED_FIELDS))})"
        try:
            document = json.loads(receipt_path.read_bytes())
            if not isinstance(document, dict) or set(document) != SAVED_FIELDS:
                found = sorted(document) if isinstance(document, dict) else type(document).__name__
                raise ValueError(f"fields {found}")
            if document["type"] != SAVED_TYPE:
                raise ValueError(f"type {document['type']!r}")
            for name in ("spec", "receipt", "claims"):
                if not isinstance(document[name], dict):
                    raise ValueError(f"{name} is not an object")
            if not isinstance(document["room"], str):
                raise ValueError("room is not text")
            signature = from_b64u(document["signature"], "signature")
            quote = QuoteBundle.loads((receipt_path.parent / QUOTE_FILE).read_bytes())
        except OSError as error:
            raise EvidenceError(
                "saved-receipt-format",
                f"{RECEIPT_FILE} and {QUOTE_FILE} in one directory",
                f"{error.filename}: {error.strerror}",
                "the saved receipt cannot be read",
            ) from error
        except (ValueError, ProtocolError) as error:
            raise EvidenceError(
                "saved-receipt-format", expected, str(error)[:200], "the saved receipt is malformed"
            ) from error
        return cls(
            room=document["room"],
            spec=document["spec"],
            receipt=document["receipt"],
            signature=signature,
            claims=document["claims"],
            quote=quote,
        )


@dataclass(frozen=True)
class AuditedReceipt:
    """A saved receipt that passed every check: what ran, on what, with what result."""

    receipt: dict[str, Any]
    spec: WorkSpec
    worker: AttestedWorker
    at: int
    checks: tuple[CheckResult, ...]


def verify_saved_receipt(
    saved: SavedReceipt,
    *,
    attester_policy: AttestationPolicy,
    expected_worker_mrenclaves: frozenset[bytes],
    trust: TrustAnchor,
    at: int,
) -> AuditedReceipt:
    """Every check of a saved receipt, offline, at the pinned time ``at``.

    The quote (dcap-qvl, the policy's measurements and TCB statuses), its REPORTDATA
    over the claims, the claims naming the Work-ID recomputed from the saved spec and a
    published Worker measurement, and the receipt signed by the Worker key they name,
    for that spec. Raises the :class:`CheckFailed` of the first check that fails.
    """
    try:
        spec = WorkSpec.parse(saved.spec)
    except ProtocolError as error:
        raise EvidenceError(
            "saved-spec", "a work spec", error.actual, f"the saved spec is not one: {error}"
        ) from error
    nonce_text = saved.claims.get("nonce")
    try:
        # The saving party's nonce: offline there is no fresh one (see docs/compliance.md).
        nonce = from_b64u(nonce_text, "nonce", size=32)
    except ProtocolError as error:
        raise ClaimsError(
            "claims-format", "a 32-byte b64u nonce", nonce_text, str(error)
        ) from error
    collateral = saved.quote.collateral()
    validity = check_fresh(collateral, at)
    worker = verify_attester_evidence(
        claims=saved.claims,
        quote=saved.quote.quote,
        collateral=collateral,
        nonce=nonce,
        approved_work_id=spec.work_id,
        expected_worker_mrenclaves=expected_worker_mrenclaves,
        attester_policy=attester_policy,
        trust=trust,
        at=at,
    )
    receipt = verify_receipt(
        saved.receipt,
        saved.signature,
        worker_key=load_spki(worker.worker_key_spki, "worker_key"),
        spec=spec,
    )
    checks = (
        CheckResult("collateral-expired", f"valid at {at}", validity.describe(), True, ""),
        *worker.checks,
        CheckResult("receipt-signature", worker.worker_id, worker.worker_id, True, ""),
        CheckResult("work-id", spec.work_id, receipt["work_id"], True, "the saved spec's"),
        CheckResult("function", spec.function, receipt["function"], True, ""),
        CheckResult("receipt-inputs", "the spec's inputs, each by its owner", "yes", True, ""),
        CheckResult("receipt-outputs", "the spec's outputs", "yes", True, ""),
    )
    return AuditedReceipt(receipt=receipt, spec=spec, worker=worker, at=at, checks=checks)


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


__all__ = [
    "AuditedReceipt",
    "CheckFailed",
    "SavedReceipt",
    "verify_saved_receipt",
]
