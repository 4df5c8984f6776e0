"""Run receipts saved for a third party, and their offline check.

A party saves, beside the signed receipt, everything an auditor needs to check it
without contacting anyone: the spec (whose hash is the Work-ID), the Attester's claims,
and the quote that commits to those claims with its collateral (a quote bundle). The
auditor checks the quote at a pinned time against the published measurements, that
its claims name the spec's Work-ID and the Worker key, and that this key signed the
receipt (docs/compliance.md, "Third-party verifiability").

A SQL room's query receipt is saved the same way, one run's, with the run's detail
(the query's text digest and parameters, the rows released and suppressed) when the
runner saves it: only the runner opened it, and only the runner can show it. The
auditor then checks that it is the detail the signed receipt commits to, and, for a
named query, that its text digest is that of the spec's query of that name.

Layout of a saved directory::

    receipt.json  {"type": "cleanroom/saved-receipt/v1", "room", "spec", "receipt",
                   "signature": b64u, "claims"}
                  or {"type": "cleanroom/saved-query-receipt/v1", the same fields,
                   "detail": the run's detail or null}
    quote.json    a cleanroom/quote-bundle/v1: the quote, its collateral, saved_at

Each is read as a regular file of at most :data:`MAX_SAVED_BYTES`, never through a
symbolic link or with another hard link (``saved-receipt-file``), and as JSON with no
member twice, no NaN or Infinity, and ``receipt.json`` with a canonical form
(``saved-receipt-format``).
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cleanroom.attestation import AttestationPolicy, CheckResult, EvidenceError, TrustAnchor
from cleanroom.attestation.collateral import QuoteBundle, check_fresh
from cleanroom.client.collateral import COLLATERAL_CHECK
from cleanroom.client.phase1 import AttestedWorker, ClaimsError, verify_attester_evidence
from cleanroom.errors import CheckFailed
from cleanroom.protocol import keys
from cleanroom.protocol.encoding import b64u, canonical, from_b64u, loads_unique
from cleanroom.protocol.errors import BindingError, ProtocolError
from cleanroom.protocol.keys import load_spki
from cleanroom.protocol.query_receipt import (
    QUERY_RECEIPT_TYPE,
    check_detail,
    check_query,
    query_sha256,
    verify_query_receipt,
)
from cleanroom.protocol.receipt import verify_receipt
from cleanroom.protocol.spec import WorkSpec

SAVED_TYPE = "cleanroom/saved-receipt/v1"
SAVED_QUERY_TYPE = "cleanroom/saved-query-receipt/v1"
SAVED_FIELDS = frozenset({"type", "room", "spec", "receipt", "signature", "claims"})
SAVED_QUERY_FIELDS = SAVED_FIELDS | {"detail"}
RECEIPT_FILE = "receipt.json"
QUOTE_FILE = "quote.json"
SavedTimeSource = Literal["saved_at", "finished"]
"""Where ``--at-saved``'s time came from: the bundle's ``saved_at``, or the receipt's
signed ``finished`` when that is later."""
MAX_SAVED_BYTES = 8 << 20
"""8 MiB: the most a saved file may hold (a spec is at most a 1 MiB request body)."""


@dataclass(frozen=True)
class SavedReceipt:
    """What a party saves: the receipt with the evidence that attested its signer."""

    room: str
    spec: dict[str, Any]
    receipt: dict[str, Any]
    signature: bytes
    claims: dict[str, Any]
    quote: QuoteBundle
    detail: dict[str, Any] | None = None
    """A query run's detail, as its runner opened it (None: not the runner's to show)."""

    @property
    def saved_at(self) -> int:
        """The time ``--at-saved`` pins: when the bundle says it was saved, but never
        before the run it holds finished (the receipt's ``finished``, which its signature
        covers): ``saved_at`` is the saver's word, and an earlier time could pick
        collateral of before a TCB recovery or a revocation."""
        return self.saved_time[0]

    @property
    def saved_time(self) -> tuple[int, SavedTimeSource]:
        """:attr:`saved_at` and where it came from: ``"saved_at"`` (the bundle's) or
        ``"finished"`` (the receipt's, later than the bundle's), for the auditor to read."""
        finished = self.receipt.get("finished")
        if type(finished) is not int or not self._signed_by_claimed_key():
            return self.quote.saved_at, "saved_at"  # refused (receipt-times, signature)
        if finished > self.quote.saved_at:
            return finished, "finished"
        return self.quote.saved_at, "saved_at"

    def _signed_by_claimed_key(self) -> bool:
        """The receipt verifies under the key the claims name (not yet attested: only so
        that a changed ``finished`` is refused by ``receipt-signature``, not by the
        collateral at a time it chose)."""
        worker = self.claims.get("worker")
        if not isinstance(worker, dict):
            return False
        try:
            key = load_spki(from_b64u(worker.get("worker_key"), "worker_key"), "worker_key")
            keys.verify(key, self.signature, canonical(self.receipt), "receipt-signature")
        except ProtocolError:
            return False
        return True

    @property
    def is_query(self) -> bool:
        """A SQL room's query receipt (saved with its detail, or null), not a run receipt."""
        return self.receipt.get("type") == QUERY_RECEIPT_TYPE

    def write(self, directory: Path) -> Path:
        """Write ``receipt.json`` and ``quote.json`` into ``directory`` (new or empty)."""
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise EvidenceError(
                "save-directory", "a new or empty directory", str(directory), "not empty"
            )
        directory.mkdir(parents=True, exist_ok=True)
        document: dict[str, Any] = {
            "type": SAVED_QUERY_TYPE if self.is_query else SAVED_TYPE,
            "room": self.room,
            "spec": self.spec,
            "receipt": self.receipt,
            "signature": b64u(self.signature),
            "claims": self.claims,
        }
        if self.is_query:
            document["detail"] = self.detail
        elif self.detail is not None:
            raise ValueError("only a query receipt is saved with a detail")
        _write(directory / QUOTE_FILE, self.quote.dumps())
        _write(directory / RECEIPT_FILE, json.dumps(document, indent=2, sort_keys=True) + "\n")
        return directory / RECEIPT_FILE

    @classmethod
    def read(cls, path: Path) -> SavedReceipt:
        """``path`` is a saved directory or its ``receipt.json``; ``quote.json`` is beside it.

        :class:`EvidenceError` (``saved-receipt-format``, ``bundle-format``) if malformed.
        """
        receipt_path = path / RECEIPT_FILE if path.is_dir() else path
        expected = (
            f"a {SAVED_TYPE} JSON object ({', '.join(sorted(SAVED_FIELDS))}), or a "
            f"{SAVED_QUERY_TYPE} (with detail)"
        )
        try:
            document = loads_unique(_read_saved(receipt_path))
            if not isinstance(document, dict):
                raise ValueError(f"a JSON {type(document).__name__}")
            try:  # what has no canonical form was never signed or hashed: not a receipt
                canonical(document)
            except ProtocolError as error:
                raise ValueError(f"no RFC 8785 form: {error.message}") from error
            fields = {SAVED_TYPE: SAVED_FIELDS, SAVED_QUERY_TYPE: SAVED_QUERY_FIELDS}.get(
                document.get("type")  # type: ignore[arg-type]
            )
            if fields is None:
                raise ValueError(f"type {str(document.get('type'))[:80]!r}")
            if set(document) != fields:
                raise ValueError(f"fields {sorted(document)}")
            for name in ("spec", "receipt", "claims"):
                if not isinstance(document[name], dict):
                    raise ValueError(f"{name} is not an object")
            query = document["receipt"].get("type") == QUERY_RECEIPT_TYPE
            if query != (document["type"] == SAVED_QUERY_TYPE):
                raise ValueError(f"a {document['type']} of a {document['receipt'].get('type')}")
            detail = document.get("detail")
            if detail is not None and not isinstance(detail, dict):
                raise ValueError("detail is neither an object nor null")
            if not isinstance(document["room"], str):
                raise ValueError("room is not text")
            signature = from_b64u(document["signature"], "signature")
            quote = QuoteBundle.loads(_read_saved(receipt_path.parent / QUOTE_FILE))
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
            detail=detail,
        )


@dataclass(frozen=True)
class AuditedReceipt:
    """A saved receipt that passed every check: what ran, on what, with what result."""

    receipt: dict[str, Any]
    spec: WorkSpec
    worker: AttestedWorker
    at: int
    checks: tuple[CheckResult, ...]
    detail: dict[str, Any] | None = None
    """A query run's detail, checked against the receipt's commitment (if saved)."""

    @property
    def succeeded(self) -> bool:
        """The run (or query run) the genuine receipt is of succeeded: a receipt of a run
        that failed, or that a limit ended, passes every check too."""
        return bool(self.receipt["status"] == "succeeded")


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
    worker_key = load_spki(worker.worker_key_spki, "worker_key")
    if saved.room != spec.name:  # the room's name is its spec's (the manager's and the Worker's)
        raise BindingError(
            "room", spec.name, saved.room, "the saved room is not the one its spec names"
        )
    checks = [
        CheckResult(
            COLLATERAL_CHECK,
            f"collateral valid at {at}",
            f"saved with the receipt, {validity.describe()}",
            True,
            "signed by Intel's TCB signing key; dcap-qvl checks the signatures",
        ),
        *worker.checks,
    ]
    detail: dict[str, Any] | None = None
    detail_checks: list[CheckResult] = []
    if saved.is_query:
        run = saved.receipt.get("run")
        if type(run) is not int or run < 1:
            raise BindingError("receipt-run", "a query run's number", run, "no run number")
        receipt = verify_query_receipt(
            saved.receipt, saved.signature, worker_key=worker_key, spec=spec, run=run
        )
        if saved.detail is not None:
            detail, detail_checks = _check_saved_detail(saved.detail, receipt, spec)
    else:
        receipt = verify_receipt(saved.receipt, saved.signature, worker_key=worker_key, spec=spec)
    checks += [
        CheckResult("receipt-signature", worker.worker_id, worker.worker_id, True, ""),
        # Named apart from the claims' work-id above, which is listed too: the same name
        # twice read as one check printed twice.
        CheckResult("receipt-work-id", spec.work_id, receipt["work_id"], True, "the spec's"),
        CheckResult("receipt-function", spec.function, receipt["function"], True, ""),
        CheckResult("room", spec.name, saved.room, True, "the saved spec's name"),
        CheckResult("receipt-inputs", "the spec's inputs, each by its owner", "yes", True, ""),
        CheckResult("receipt-outputs", "the spec's outputs", "yes", True, ""),
    ]
    checks += detail_checks
    return AuditedReceipt(
        receipt=receipt, spec=spec, worker=worker, at=at, checks=tuple(checks), detail=detail
    )


def _check_saved_detail(
    saved: dict[str, Any], receipt: dict[str, Any], spec: WorkSpec
) -> tuple[dict[str, Any], list[CheckResult]]:
    """The runner's detail is the one the signed receipt commits to (``query-detail``);
    a named query's text digest is that of the spec's query of that name
    (``receipt-query``: the text an auditor reads in the spec is the one that ran)."""
    try:
        data = canonical(saved)
    except ProtocolError as error:
        raise BindingError(
            "query-detail", receipt["detail"], "no canonical form", "not the detail signed"
        ) from error
    detail = check_detail(data, receipt)
    checks = [CheckResult("query-detail", receipt["detail"], receipt["detail"], True, "")]
    name = receipt["query"]["name"]
    if name is not None:
        named = spec.sql.queries.get(name) if spec.sql is not None else None
        if named is None:
            raise BindingError(
                "receipt-query", "a query of the spec", name, "the spec has no query of that name"
            )
        check_query(
            receipt, detail, name=name, sha256=query_sha256(named.text),
            parameters=detail["query"]["parameters"],
        )  # fmt: skip
        digest = detail["query"]["sha256"]
        checks.append(CheckResult("receipt-query", digest, digest, True, f"the query {name}"))
    return detail, checks


def _read_saved(path: Path) -> bytes:
    """A file of a saved directory: a regular file (not a link out of the directory, a
    FIFO or a device that never ends) with no other name (a hard link may be one outside
    the directory: another bundle's file, the auditor's own) of at most
    :data:`MAX_SAVED_BYTES`, or ``saved-receipt-file``; :class:`OSError` if it cannot be
    opened."""
    expected = (
        f"a regular file of at most {MAX_SAVED_BYTES} bytes, not a symbolic link, with no "
        "other hard link"
    )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise EvidenceError(
            "saved-receipt-file", expected, f"{path}: a symbolic link", "not read"
        ) from error
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise EvidenceError(
                "saved-receipt-file", expected, f"{path}: not a regular file", "not read"
            )
        if info.st_nlink > 1:  # the descriptor's own file: no name can be swapped in between
            raise EvidenceError(
                "saved-receipt-file", expected, f"{path}: {info.st_nlink} hard links",
                "not read: a file with another name may be one outside the directory",
                "copy the bundle (cp -r, not cp -l or ln) and check the copy",
            )  # fmt: skip
        data = file.read(MAX_SAVED_BYTES + 1)
    if len(data) > MAX_SAVED_BYTES:
        raise EvidenceError(
            "saved-receipt-file", expected, f"{path}: more than {MAX_SAVED_BYTES} bytes",
            "not read",
        )  # fmt: skip
    return data


def _write(path: Path, text: str) -> None:
    """Create ``path`` and write ``text``: the directory was new or empty, so a file or
    link there now was put by someone else (a directory others can write), and is
    never written through (``save-directory``)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        raise EvidenceError(
            "save-directory",
            "a new or empty directory",
            str(path.parent),
            f"{path.name} appeared in it while saving ({error.strerror})",
        ) from error
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(file.fileno(), 0o644)  # the mode, whatever the umask
        file.write(text)


__all__ = [
    "AuditedReceipt",
    "CheckFailed",
    "SavedReceipt",
    "SavedTimeSource",
    "verify_saved_receipt",
]
