"""``cleanroom verify-quote`` and ``cleanroom measure``: offline appraisal and measurement."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cleanroom.attestation import (
    DEFAULT_ACCEPTED_STATUSES,
    Appraisal,
    AttestationError,
    AttestationPolicy,
    EvidenceError,
    TrustAnchor,
    appraise_quote,
    load_collateral,
)
from cleanroom.cli.common import (
    EXIT_CODES_HELP,
    EXIT_REJECTED,
    EXIT_USAGE,
    CliError,
    fail,
    parse_hex,
    read_file,
    stderr,
    stdout,
)
from cleanroom.tee.measure import (
    IMAGE_NAMES,
    MeasurementError,
    image_files,
    measure,
    write_measurements,
)


def verify_quote(
    quote_file: Annotated[Path, typer.Argument(help="The quote (binary, ECDSA quote v3).")],
    collateral: Annotated[
        Path, typer.Option(help="Collateral JSON (dcap-qvl's QuoteCollateralV3 form).")
    ],
    at: Annotated[
        int | None,
        typer.Option(help="Verification time, UNIX seconds [default: now].", show_default=False),
    ] = None,
    trust_root: Annotated[
        Path | None,
        typer.Option(
            help=(
                "Root certificate (PEM or DER) to trust instead of Intel's production root, "
                "e.g. a simulated platform's. Quotes that chain to any other root prove "
                "nothing about real SGX hardware."
            )
        ),
    ] = None,
    accept_status: Annotated[
        list[str] | None,
        typer.Option(
            help=(
                "Accepted TCB status (repeatable); given once, it replaces the default "
                f"set {', '.join(sorted(DEFAULT_ACCEPTED_STATUSES))}."
            ),
            show_default=False,
        ),
    ] = None,
    accept_advisory: Annotated[
        list[str] | None,
        typer.Option(
            help=(
                "Accepted advisory ID (repeatable); given once, any advisory outside the "
                "list is rejected."
            ),
            show_default=False,
        ),
    ] = None,
    expect_mrenclave: Annotated[
        list[str] | None,
        typer.Option(help="Accepted MRENCLAVE, 64 hex digits (repeatable).", show_default=False),
    ] = None,
    expect_mrsigner: Annotated[
        str | None, typer.Option(help="Expected MRSIGNER, 64 hex digits.", show_default=False)
    ] = None,
    expect_isv_prod_id: Annotated[
        int | None, typer.Option(help="Expected ISVPRODID.", show_default=False)
    ] = None,
    min_isv_svn: Annotated[
        int | None, typer.Option(help="Minimum ISVSVN.", show_default=False)
    ] = None,
    expect_report_data: Annotated[
        str | None,
        typer.Option(
            help="Expected REPORTDATA, hex, at most 64 bytes; shorter is zero-padded.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Verify an SGX quote with dcap-qvl and appraise it against a policy.

    Cryptographic appraisal (PCK chain to the root, CRLs, TCB info and QE identity
    signatures, QE report, quote signature) is dcap-qvl's; then the policy checks TCB
    status, advisories, DEBUG, MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN, REPORTDATA.
    """
    try:
        policy = AttestationPolicy(
            accepted_statuses=(
                frozenset(accept_status) if accept_status else DEFAULT_ACCEPTED_STATUSES
            ),
            accepted_advisories=frozenset(accept_advisory) if accept_advisory else None,
            mrenclaves=(
                frozenset(parse_hex(v, "--expect-mrenclave", size=32) for v in expect_mrenclave)
                if expect_mrenclave
                else None
            ),
            mrsigner=parse_hex(expect_mrsigner, "--expect-mrsigner", size=32)
            if expect_mrsigner
            else None,
            isv_prod_id=expect_isv_prod_id,
            min_isv_svn=min_isv_svn,
            report_data=parse_hex(expect_report_data, "--expect-report-data", pad_to=64)
            if expect_report_data is not None
            else None,
        )
        raw_quote = read_file(quote_file, "quote file")
        raw_collateral = read_file(collateral, "collateral file")
        trust = (
            TrustAnchor.from_certificate(read_file(trust_root, "trust root"))
            if trust_root
            else TrustAnchor.intel_production()
        )
        appraisal = appraise_quote(
            raw_quote,
            load_collateral(raw_collateral),
            at=int(time.time()) if at is None else at,
            trust=trust,
            policy=policy,
        )
    except AttestationError as error:
        code = EXIT_USAGE if isinstance(error, EvidenceError) else EXIT_REJECTED
        if as_json:
            stdout.out(json.dumps({"error": error.to_json()}, indent=2))
            raise typer.Exit(code) from None
        hint = f" — {error.hint}" if error.hint else ""
        message = f"rejected: {error}{hint}" if code == EXIT_REJECTED else str(error)
        raise CliError(message, code) from None
    except CliError as error:
        if as_json:
            stdout.out(json.dumps({"error": {"check": "input", "message": str(error)}}, indent=2))
            raise typer.Exit(error.exit_code) from None
        raise
    if not trust.is_intel_production:
        stderr.print(
            f"[bold yellow]warning: verified against {trust.name}, NOT Intel's production "
            "root: this proves nothing about real SGX hardware[/]"
        )
    if as_json:
        stdout.out(json.dumps(appraisal.to_json(), indent=2))
    else:
        _print_appraisal(appraisal)


verify_quote.__doc__ = f"{verify_quote.__doc__}\n\n{EXIT_CODES_HELP}"


def _print_appraisal(appraisal: Appraisal) -> None:
    quote = appraisal.quote
    table = Table(title="quote accepted", show_lines=False)
    table.add_column("check")
    table.add_column("expected")
    table.add_column("actual")
    table.add_row("signatures, chain, CRLs, collateral", f"valid at {quote.verified_at}", "valid")
    table.add_row("trust root", quote.trust.name, quote.trust.fingerprint)
    for check in appraisal.checks:
        table.add_row(check.check, check.expected, check.actual)
    stdout.print(table)
    facts = quote.to_json()
    for key in ("status", "advisory_ids", "mrenclave", "mrsigner", "isv_prod_id", "isv_svn"):
        stdout.print(f"{key}: {facts[key]}")
    stdout.print(f"debug: {facts['debug']}")
    stdout.print(f"report_data: {facts['report_data']}")


def measure_command(
    image: Annotated[
        str | None,
        typer.Argument(
            help=f"Enclave image: {', '.join(IMAGE_NAMES)} [needed unless --write].",
            show_default=False,
        ),
    ] = None,
    list_files: Annotated[
        bool,
        typer.Option(
            "--list",
            help="Print every file of the image: SHA-256, size, group and path, one per "
            "line, in the order the measurement hashes them (diff two of them).",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the measurement and its manifest (and, with --list, "
            "every file) as one JSON object.",
        ),
    ] = False,
    write: Annotated[
        bool,
        typer.Option(
            "--write",
            help="Record every image's file list for this installation, as signing an enclave "
            "does, so servers starting from it need not hash it (they check each file's stat).",
        ),
    ] = False,
    signer: Annotated[
        Path | None,
        typer.Option(help="RSA-3072 signer public key (PEM) [default: the release signer]."),
    ] = None,
) -> None:
    """Print an enclave image's MRENCLAVE and MRSIGNER, recomputed from this installation.

    Runs no enclave, and trusts no record: every file of the image (interpreter,
    standard library, packages, cleanroom, shared libraries, and for the Worker every
    installed runtime) is read and hashed now, so a third party recomputes the values
    an operator publishes, and `--list` shows which file differs when they do not.
    """
    try:
        if write:
            for files in write_measurements():
                stdout.print(f"recorded the {files.image} image: {len(files.files)} files")
            if image is None:
                return
        if image is None:
            fail("name an image (or give --write)", EXIT_USAGE)
        measurement = measure(
            image,
            signer_pem=read_file(signer, "signer key") if signer else None,
            fresh=not write,
        )
        files = image_files(image) if write else image_files(image, fresh=True)
    except MeasurementError as error:
        fail(str(error), EXIT_USAGE)
    if as_json:
        document = measurement.to_json()
        if list_files:
            document["files"] = [entry.to_json() for entry in files.files]
        stdout.out(json.dumps(document, indent=2))
        return
    if list_files:
        for entry in files.files:
            stdout.out(
                f"{entry.sha256}  {entry.size:>10}  {entry.group}  {entry.path}", highlight=False
            )
        return
    stdout.print(f"image:     {measurement.image} (simulated backend)")
    stdout.print(f"MRENCLAVE: {measurement.mr_enclave.hex()}")
    stdout.print(f"MRSIGNER:  {measurement.mr_signer.hex()}")
    stdout.print(f"ISVPRODID: {measurement.isv_prod_id}  ISVSVN: {measurement.isv_svn}")
    for group in files.groups():
        stdout.print(
            f"  {group.name:24} {group.files:>6} files {group.bytes:>13,} bytes  {group.sha256}",
            markup=False,
        )
