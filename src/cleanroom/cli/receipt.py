"""``cleanroom receipt``: a room's run receipt, saved for a third party, and checked offline.

cleanroom receipt ROOM [--save DIR]          fetch, verify (and save) the receipt
cleanroom receipt ROOM --run N [--save DIR]  the same, for a SQL room's query run N
cleanroom receipt verify FILE                check a saved receipt, offline
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer

from cleanroom.attestation import (
    DEFAULT_ACCEPTED_STATUSES,
    AttestationPolicy,
    EvidenceError,
    TrustAnchor,
)
from cleanroom.cli import room
from cleanroom.cli.account import failures, verify_command, warn_simulated
from cleanroom.cli.common import (
    EXIT_REJECTED,
    EXIT_USAGE,
    check_new_directory,
    fail,
    json_output,
    parse_hex,
    read_file,
    stderr,
    stdout,
    with_exit_codes,
)
from cleanroom.client import sqlrooms
from cleanroom.client.audit import (
    AuditedReceipt,
    SavedReceipt,
    SavedTimeSource,
    verify_saved_receipt,
)
from cleanroom.errors import CheckFailed
from cleanroom.protocol.text import shown
from cleanroom.reference import ReferenceValuesUnavailable
from cleanroom.tee.measure import ATTESTER
from cleanroom.tee.reference import LocalMeasurement

VERIFY = "verify"

TimeSource = Literal["now", "at"] | SavedTimeSource
"""Where `verify`'s time came from: this machine's clock, --at, or the bundle (--at-saved)."""

_TIME_SOURCES: dict[TimeSource, str] = {
    "now": "now, this machine's clock",
    "at": "the time given with --at",
    "saved_at": "--at-saved: the bundle's saved_at, the saver's word",
    "finished": "--at-saved: the receipt's signed finished, later than the bundle's saved_at",
}

_COLLATERAL_TIME_HINTS: dict[str, dict[TimeSource, str]] = {
    "collateral-expired": {
        "now": "the saved collateral has expired since: check as of when it was saved "
        "(--at-saved) or at a time it was valid (--at)",
        "at": "the time is the one given with --at: give one before the collateral expired",
        "saved_at": "the time is the bundle's saved_at (--at-saved), not this machine's "
        "clock: the collateral saved with the receipt had expired by then",
        "finished": "the time is the receipt's signed finished (--at-saved), not this "
        "machine's clock: the collateral saved with the receipt had expired when the run "
        "finished",
    },
    "collateral-not-yet-valid": {
        "now": "the time is now: check this machine's clock",
        "at": "the time is the one given with --at: give one after the collateral was issued",
        "saved_at": "the time is the bundle's saved_at (--at-saved), not this machine's "
        "clock: the collateral saved with the receipt was issued after the bundle says it "
        "was saved",
        "finished": "the time is the receipt's signed finished (--at-saved), not this "
        "machine's clock: the collateral saved with the receipt was issued after the run "
        "finished",
    },
}


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
    run: Annotated[
        int | None,
        typer.Option(
            help="A SQL room's query run (its receipts are one per run; the runner saves one "
            "with its detail at once: cleanroom query ... --save-receipt DIR).",
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
            "--trust-root",
            "--simulated-root",
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
            "expired since): the bundle's saved_at, or the receipt's signed finished if "
            "later. Which time was used is printed.",
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

    A SQL room signs one receipt per query run: `cleanroom receipt ROOM --run N`.
    The run's detail (the query's text digest and parameters, the rows released
    and suppressed) is sealed to its runner, who saves it with `cleanroom query ...
    --save-receipt DIR`; `verify` then checks it against the receipt's commitment,
    and a named query's text against the spec's.

    As `cleanroom run --wait` and `cleanroom receipt ROOM` do, `verify` exits 1 for a
    genuine receipt of a run (or query run) that did not succeed: it prints the receipt
    and every check that passed, then says how the run ended (`--json`: the receipt's
    status); exit 0 means genuine and succeeded.
    """
    as_json = json_output(as_json)
    if name == VERIFY and file is not None:
        if run is not None or save is not None:
            fail("--run and --save go with `cleanroom receipt ROOM`, not with verify", EXIT_USAGE)
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
    if save is not None:
        check_new_directory(save, "--save ")
    if run is not None:
        _query_receipt(name, run, save, as_json)
        return
    if save is None:
        room.receipt(name, as_json)
        return
    client = room._client()
    with failures():
        verified, path = client.save_receipt(name, save)
    warn_simulated(client.profile)
    document = verified.receipt
    _print(document, as_json, f"receipt of {shown(name)}")
    stderr.print(f"saved to {path.parent} (check it with: "
                 f"{verify_command(client.profile, path.parent)})", markup=False)  # fmt: skip
    if document["status"] != "succeeded":
        fail(f"the run of {name} ended {shown(document['status'])}")


receipt.__doc__ = with_exit_codes(receipt.__doc__)


def _query_receipt(name: str, run: int, save: Path | None, as_json: bool) -> None:
    if run < 1:
        fail(f"--run takes a query run's number (1, 2, ...), not {run}", EXIT_USAGE)
    client = room._client()
    with failures():
        if save is None:
            verified, path = sqlrooms.receipt(client, name, run), None
        else:
            verified, path = sqlrooms.save_receipt(client, name, run, save)
    warn_simulated(client.profile)
    document = verified.receipt
    detail = SavedReceipt.read(path).detail if path is not None else None
    _print_query(document, detail, as_json, f"receipt of {shown(name)}, query run {run}")
    if path is not None:
        if detail is None and not as_json:
            stdout.print("  detail   not saved: sealed to the runner, and not kept by this "
                         "profile", markup=False)  # fmt: skip
        stderr.print(f"saved to {path.parent} (check it with: "
                     f"{verify_command(client.profile, path.parent)})", markup=False)  # fmt: skip
    if document["status"] != "succeeded":
        fail(f"query run {run} of {name} ended {shown(document['status'])}")


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
        source: TimeSource
        if at_saved:
            when, source = saved.saved_time
        else:
            when, source = (int(time.time()), "now") if at is None else (at, "at")
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
        if error.check in _COLLATERAL_TIME_HINTS:  # the time is not always this machine's
            error.hint = _COLLATERAL_TIME_HINTS[error.check][source]
        _refused(error, EXIT_REJECTED, as_json)
    if not trust.is_intel_production:
        stderr.print(
            f"warning: verified against {trust.name}, NOT Intel's production root: this "
            "proves nothing about real SGX hardware",
            style="bold yellow",
        )
    _print_audited(saved, audited, source, as_json)
    if not audited.succeeded:  # genuine, not a success: as `run --wait` and `receipt ROOM`
        run = f"query run {audited.receipt['run']}" if saved.is_query else "the run"
        fail(f"{run} of {shown(saved.room)} ended {shown(audited.receipt['status'])} "
             "(the receipt is genuine: every check passed)")  # fmt: skip


def _print_audited(
    saved: SavedReceipt, audited: AuditedReceipt, source: TimeSource, as_json: bool
) -> None:
    if as_json:
        stdout.out(json.dumps({**_audit_json(audited), "at_source": source}, indent=2))
        return
    spec = audited.spec
    if saved.is_query:
        title = f"saved receipt of {shown(saved.room)}, query run {audited.receipt['run']}"
        _print_query(audited.receipt, audited.detail, False, title)
        if saved.detail is None:
            stdout.print("  detail   not saved (sealed to the runner: only the runner can show "
                         "it)", markup=False)  # fmt: skip
    else:
        _print(audited.receipt, False, f"saved receipt of {shown(saved.room)}")
        stdout.print(f"  ran      {shown(spec.handler)} on {shown(spec.runtime)}", markup=False)
    stdout.print(f"  checked at {audited.at} (UNIX seconds, {_TIME_SOURCES[source]}), every "
                 "check passed:", markup=False)  # fmt: skip
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
        "detail": audited.detail,
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


def _print_query(
    document: dict[str, Any], detail: dict[str, Any] | None, as_json: bool, title: str
) -> None:
    """A SQL room's query receipt, and the run's detail where there is one."""
    if as_json:
        stdout.out(json.dumps({"receipt": document, "detail": detail}, indent=2))
        return
    stdout.print(f"{title}: {shown(document['status'])}", markup=False)
    stdout.print(f"  work_id  {shown(document['work_id'])}", markup=False)
    stdout.print(f"  query    {shown(document['query']['name'] or 'ad hoc')} "
                 f"by {shown(document['by'])}", markup=False)  # fmt: skip
    for input_id, entry in document["inputs"].items():
        stdout.print(
            f"  input    {shown(input_id)} by {shown(entry['by'])} sha256 {shown(entry['sha256'])}",
            markup=False,
        )
    output = document["output"]
    stdout.print(f"  output   {shown(output['id'])} sha256 {shown(str(output['sha256']))}",
                 markup=False)  # fmt: skip
    for rule in document["rules"]:
        stdout.print(f"  rule     {shown(rule)}", markup=False)
    for input_id, entry in document["privacy"].items():
        stdout.print(f"  ε        {shown(input_id)}: spent {entry['spent']:g}, "
                     f"{entry['left']:g} left of {entry['budget']:g}", markup=False)  # fmt: skip
    if detail is not None:
        query, rows = detail["query"], detail["rows"]
        stdout.print(f"  text     sha256 {shown(query['sha256'])}", markup=False)
        for key, value in query["parameters"].items():
            stdout.print(f"  param    {shown(key)} = {shown(json.dumps(value))}", markup=False)
        released, suppressed = (
            "not reported" if rows[key] is None else rows[key] for key in ("released", "suppressed")
        )
        stdout.print(f"  rows     {released} released, {suppressed} suppressed", markup=False)
