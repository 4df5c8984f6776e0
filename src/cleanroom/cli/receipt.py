"""``cleanroom receipt``: a room's run receipt, saved for a third party, and checked offline.

cleanroom receipt ROOM [--save DIR]      fetch, verify (and save) the receipt
cleanroom receipt verify FILE            check a saved receipt, offline
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from cleanroom.attestation import (
    DEFAULT_ACCEPTED_STATUSES,
    AttestationPolicy,
    EvidenceError,
    TrustAnchor,
)
from cleanroom.cli import room
from cleanroom.cli.account import failures, warn_simulated
from cleanroom.cli.common import (
    EXIT_REJECTED,
    EXIT_USAGE,
    fail,
    json_output,
    parse_hex,
    read_file,
    stderr,
    stdout,
    with_exit_codes,
)
from cleanroom.client.audit import AuditedReceipt, SavedReceipt, verify_saved_receipt
from cleanroom.errors import CheckFailed
from cleanroom.protocol.text import shown
from cleanroom.reference import ReferenceValuesUnavailable
from cleanroom.tee.measure import ATTESTER
from cleanroom.tee.reference import LocalMeasurement

VERIFY = "verify"


def receipt(
    name: Annotated[
        str,
        typer.Argument(
            help="The clean room; or `verify` followed by a saved receipt to check offline.",
            show_default=False,
        ),
    ],
    file: Annotated[
        Path | None,
        typer.Argument(
            help="With `verify`: a directory saved by --save, or its receipt.json "
            "(quote.json must be beside it).",
            show_default=False,
        ),
    ] = None,
    save: Annotated[
        Path | None,
        typer.Option(
            help="Save the verified receipt with its spec, claims, quote and collateral into "
            "this new or empty directory, for a third party to check offline.",
            show_default=False,
        ),
    ] = None,
    simulated_root: Annotated[
        Path | None,
        typer.Option(
            help="verify: trust this root certificate (PEM or DER) instead of Intel's "
            "production root, e.g. a simulated platform's (it proves nothing about SGX).",
            show_default=False,
        ),
    ] = None,
    attester_mrenclave: Annotated[
        list[str] | None,
        typer.Option(
            help="verify: a published Attester MRENCLAVE (repeatable) [default: this release's].",
            show_default=False,
        ),
    ] = None,
    attester_mrsigner: Annotated[
        str | None,
        typer.Option(
            help="verify: the published MRSIGNER [default: this release's].", show_default=False
        ),
    ] = None,
    worker_mrenclave: Annotated[
        list[str] | None,
        typer.Option(
            help="verify: a published Worker MRENCLAVE (repeatable) [default: this release's].",
            show_default=False,
        ),
    ] = None,
    accept_status: Annotated[
        list[str] | None,
        typer.Option(
            help="verify: accepted TCB status (repeatable) [default: "
            f"{', '.join(sorted(DEFAULT_ACCEPTED_STATUSES))}].",
            show_default=False,
        ),
    ] = None,
    at: Annotated[
        int | None,
        typer.Option(
            help="verify: the pinned time, UNIX seconds [default: now].", show_default=False
        ),
    ] = None,
    at_saved: Annotated[
        bool,
        typer.Option(
            "--at-saved",
            help="verify: check as of when the receipt was saved (its collateral may have "
            "expired since).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Fetch a room's signed run receipt and verify it; or check a saved one offline.

    `cleanroom receipt ROOM` verifies the receipt against the Worker attested just now
    and the Work-ID you approved; with --save DIR it also writes everything a third
    party needs. `cleanroom receipt verify DIR` is that third party's check, offline:
    the quote and its collateral at a pinned time against the published measurements,
    the claims naming the saved spec's Work-ID and the Worker key, and the receipt
    signed by that key for that spec. It prints what ran, on which inputs (by digest)
    and with which outputs. Every refusal names its check.
    """
    as_json = json_output(as_json)
    if name == VERIFY and file is not None:
        _verify(
            file,
            simulated_root=simulated_root,
            attester_mrenclave=attester_mrenclave,
            attester_mrsigner=attester_mrsigner,
            worker_mrenclave=worker_mrenclave,
            accept_status=accept_status,
            at=at,
            at_saved=at_saved,
            as_json=as_json,
        )
        return
    verify_only = (simulated_root, attester_mrenclave, attester_mrsigner, worker_mrenclave, at)
    if file is not None or at_saved or any(v is not None for v in verify_only) or accept_status:
        fail("these arguments go with `cleanroom receipt verify FILE`", EXIT_USAGE)
    if save is None:
        room.receipt(name, as_json)
        return
    client = room._client()
    with failures():
        verified, path = client.save_receipt(name, save)
    warn_simulated(client.profile)
    document = verified.receipt
    _print(document, as_json, f"receipt of {shown(name)}")
    stderr.print(f"saved to {path.parent} (check it with: cleanroom receipt verify {path.parent})",
                 markup=False)  # fmt: skip
    if document["status"] != "succeeded":
        fail(f"the run of {name} ended {shown(document['status'])}")


receipt.__doc__ = with_exit_codes(receipt.__doc__)


def _verify(
    file: Path,
    *,
    simulated_root: Path | None,
    attester_mrenclave: list[str] | None,
    attester_mrsigner: str | None,
    worker_mrenclave: list[str] | None,
    accept_status: list[str] | None,
    at: int | None,
    at_saved: bool,
    as_json: bool,
) -> None:
    if at is not None and at_saved:
        fail("--at and --at-saved exclude each other", EXIT_USAGE)
    published_attester = (
        frozenset(parse_hex(v, "--attester-mrenclave", size=32) for v in attester_mrenclave)
        if attester_mrenclave
        else None
    )
    published_signer = (
        parse_hex(attester_mrsigner, "--attester-mrsigner", size=32) if attester_mrsigner else None
    )
    workers = (
        frozenset(parse_hex(v, "--worker-mrenclave", size=32) for v in worker_mrenclave)
        if worker_mrenclave
        else None
    )
    if published_attester is None or published_signer is None or workers is None:
        # Only what was not given is this release's: an auditor who names every published
        # measurement needs no measurable installation (measuring may hash whole images).
        try:
            installed = LocalMeasurement().reference_values()
        except ReferenceValuesUnavailable as error:
            fail(str(error), EXIT_USAGE)
        published_attester = published_attester or installed.attester_mrenclaves
        published_signer = published_signer or installed.attester_mrsigner
        workers = workers or installed.worker_mrenclaves
    policy = AttestationPolicy(
        accepted_statuses=frozenset(accept_status) if accept_status else DEFAULT_ACCEPTED_STATUSES,
        mrenclaves=published_attester,
        mrsigner=published_signer,
        isv_prod_id=ATTESTER.isv_prod_id,
        min_isv_svn=ATTESTER.isv_svn,
        allow_debug=False,
    )
    try:
        trust = (
            TrustAnchor.from_certificate(read_file(simulated_root, "root certificate"))
            if simulated_root
            else TrustAnchor.intel_production()
        )
        saved = SavedReceipt.read(file)
        when = saved.quote.saved_at if at_saved else (int(time.time()) if at is None else at)
        audited = verify_saved_receipt(
            saved,
            attester_policy=policy,
            expected_worker_mrenclaves=workers,
            trust=trust,
            at=when,
        )
    except EvidenceError as error:  # exit 2 and --json: the receipt's own error document
        _refused(error, EXIT_USAGE, as_json)
    except CheckFailed as error:
        _refused(error, EXIT_REJECTED, as_json)
    if not trust.is_intel_production:
        stderr.print(
            f"warning: verified against {trust.name}, NOT Intel's production root: this "
            "proves nothing about real SGX hardware",
            style="bold yellow",
        )
    if as_json:
        stdout.out(json.dumps(_audit_json(audited), indent=2))
        return
    _print(audited.receipt, False, f"saved receipt of {shown(saved.room)}")
    spec = audited.spec
    stdout.print(f"  ran      {shown(spec.handler)} on {shown(spec.runtime)}", markup=False)
    stdout.print(f"  checked at {audited.at} (UNIX seconds), every check passed:", markup=False)
    for check in audited.checks:
        stdout.print(f"    {shown(check.check)}: {shown(check.actual)}", markup=False)


def _refused(error: CheckFailed, code: int, as_json: bool) -> NoReturn:
    if as_json:
        stdout.out(json.dumps({"error": error.to_json()}, indent=2))
        raise typer.Exit(code)
    hint = f" — {error.hint}" if error.hint else ""
    fail(f"{'rejected: ' if code == EXIT_REJECTED else ''}{error}{hint}", code)


def _audit_json(audited: AuditedReceipt) -> dict[str, Any]:
    return {
        "receipt": audited.receipt,
        "work_id": audited.spec.work_id,
        "handler": audited.spec.handler,
        "runtime": audited.spec.runtime,
        "worker_id": audited.worker.worker_id,
        "at": audited.at,
        "checks": [check.to_json() for check in audited.checks],
    }


def _print(document: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        stdout.out(json.dumps(document, indent=2))
        return
    stdout.print(f"{title}: {shown(document['status'])}", markup=False)
    stdout.print(f"  work_id  {shown(document['work_id'])}", markup=False)
    stdout.print(f"  function {shown(document['function'])}", markup=False)
    for input_id, entry in document["inputs"].items():
        stdout.print(
            f"  input  {shown(input_id)} by {shown(entry['by'])} sha256 {shown(entry['sha256'])}",
            markup=False,
        )
    for output_id, entry in document["outputs"].items():
        stdout.print(f"  output {shown(output_id)} sha256 {shown(entry['sha256'])}", markup=False)
