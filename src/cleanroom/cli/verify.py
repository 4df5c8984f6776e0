"""``cleanroom verify-quote`` and ``cleanroom measure``: offline appraisal and measurement."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import dcap_qvl
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
from cleanroom.attestation.collateral import CollateralExpiredError, QuoteBundle, check_fresh
from cleanroom.attestation.pccs import PccsClient, PccsError
from cleanroom.cli.common import (
    EXIT_REJECTED,
    EXIT_USAGE,
    CliError,
    fail,
    json_output,
    parse_hex,
    read_file,
    stderr,
    stdout,
    with_exit_codes,
)
from cleanroom.tee.gramine.measure import SigstructError, read_sigstruct
from cleanroom.tee.measure import (
    IMAGE_NAMES,
    image_files,
    measure,
    write_measurements,
)


def verify_quote(
    quote_file: Annotated[
        Path | None,
        typer.Argument(
            help="The quote (binary, ECDSA quote v3); not with --bundle.", show_default=False
        ),
    ] = None,
    collateral: Annotated[
        Path | None,
        typer.Option(
            help="Collateral JSON (dcap-qvl's QuoteCollateralV3 form).", show_default=False
        ),
    ] = None,
    pccs_url: Annotated[
        str | None,
        typer.Option(
            help="Fetch the collateral from this PCCS (API v4) instead of --collateral.",
            show_default=False,
        ),
    ] = None,
    bundle: Annotated[
        Path | None,
        typer.Option(
            help="A quote and its collateral saved together (see --save-bundle), "
            "instead of QUOTE_FILE and --collateral.",
            show_default=False,
        ),
    ] = None,
    save_bundle: Annotated[
        Path | None,
        typer.Option(
            help="When the quote is accepted, save it with its collateral to this file, "
            "to check it offline later with --bundle.",
            show_default=False,
        ),
    ] = None,
    at: Annotated[
        int | None,
        typer.Option(help="Verification time, UNIX seconds [default: now].", show_default=False),
    ] = None,
    at_saved: Annotated[
        bool,
        typer.Option(
            "--at-saved",
            help="With --bundle: verify at the time the bundle says it was saved, e.g. to "
            "check a past attestation after its collateral expired.",
        ),
    ] = False,
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

    The quote comes with its collateral from a file (--collateral), from a PCCS
    (--pccs-url) or from a saved bundle (--bundle). The collateral must be valid at
    the verification time (check collateral-expired names the part that is not).
    Cryptographic appraisal (PCK chain to the root, CRLs, TCB info and QE identity
    signatures, QE report, quote signature) is dcap-qvl's; then the policy checks TCB
    status, advisories, DEBUG, MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN, REPORTDATA.
    """
    as_json = json_output(as_json)
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
        evidence = _evidence(quote_file, collateral, pccs_url, bundle)
        if at_saved and (evidence.saved_at is None or at is not None):
            fail("--at-saved goes with --bundle, and not with --at", EXIT_USAGE)
        when = evidence.saved_at if at_saved and evidence.saved_at is not None else at
        when = int(time.time()) if when is None else when
        trust = (
            TrustAnchor.from_certificate(read_file(trust_root, "trust root"))
            if trust_root
            else TrustAnchor.intel_production()
        )
        try:
            check_fresh(evidence.collateral, when)
        except CollateralExpiredError as error:
            if at_saved:  # the time is the bundle's: this machine's clock is not the cause
                error.hint = (
                    f"the time is the bundle's saved_at ({when}, --at-saved), not this "
                    "machine's clock: the collateral saved with the quote was not valid then"
                )
            elif at is not None:
                error.hint = (
                    f"the time is the one given with --at ({when}): give one at which the "
                    "collateral was valid"
                )
            elif evidence.saved_at is not None:
                error.hint = (
                    f"add --at-saved to check it as of when it was saved ({evidence.saved_at})"
                )
            raise
        appraisal = appraise_quote(
            evidence.quote, evidence.collateral, at=when, trust=trust, policy=policy
        )
    except AttestationError as error:  # --json, exit 2 for malformed evidence, "rejected:"
        code = EXIT_USAGE if isinstance(error, EvidenceError) else EXIT_REJECTED
        if as_json:
            stdout.out(json.dumps({"error": error.to_json()}, indent=2))
            raise typer.Exit(code) from None
        hint = f" — {error.hint}" if error.hint else ""
        refused = code == EXIT_REJECTED and not isinstance(error, PccsError)
        message = f"rejected: {error}{hint}" if refused else f"{error}{hint}"
        raise CliError(message, code) from None
    except CliError as error:
        if as_json:
            stdout.out(json.dumps({"error": {"check": "input", "message": str(error)}}, indent=2))
            raise typer.Exit(error.exit_code) from None
        raise
    if not trust.is_intel_production:
        stderr.print(
            f"warning: verified against {trust.name}, NOT Intel's production "
            "root: this proves nothing about real SGX hardware",
            style="bold yellow",
        )
    if save_bundle is not None:
        saved = QuoteBundle(
            quote=evidence.quote,
            collateral_json=evidence.collateral.to_json(),
            saved_at=when,
            source=evidence.source,
        )
        try:
            save_bundle.write_text(saved.dumps())
        except OSError as error:
            fail(f"cannot write the bundle {save_bundle}: {error.strerror}", EXIT_REJECTED)
        stderr.print(f"quote and collateral saved to {save_bundle}", markup=False)
    if as_json:
        stdout.out(json.dumps(appraisal.to_json(), indent=2))
    else:
        _print_appraisal(appraisal)


verify_quote.__doc__ = with_exit_codes(verify_quote.__doc__)


@dataclass(frozen=True)
class _Evidence:
    quote: bytes
    collateral: dcap_qvl.QuoteCollateralV3
    source: str
    saved_at: int | None = None  # set for a bundle


def _evidence(
    quote_file: Path | None, collateral: Path | None, pccs_url: str | None, bundle: Path | None
) -> _Evidence:
    """The quote and its collateral from exactly one of the three forms."""
    if bundle is not None:
        if quote_file is not None or collateral is not None or pccs_url is not None:
            fail("--bundle holds the quote and its collateral: give nothing else", EXIT_USAGE)
        saved = QuoteBundle.loads(read_file(bundle, "bundle"))
        return _Evidence(saved.quote, saved.collateral(), saved.source, saved.saved_at)
    if quote_file is None:
        fail("give QUOTE_FILE with --collateral or --pccs-url, or --bundle", EXIT_USAGE)
    if collateral is not None and pccs_url is None:
        return _Evidence(
            read_file(quote_file, "quote file"),
            load_collateral(read_file(collateral, "collateral file")),
            f"collateral file {collateral}",
        )
    if pccs_url is not None and collateral is None:
        raw_quote = read_file(quote_file, "quote file")
        try:
            client = PccsClient(pccs_url)
        except ValueError as error:
            fail(f"--pccs-url: {error}", EXIT_USAGE)
        with client:
            return _Evidence(raw_quote, client.for_quote(raw_quote), f"PCCS {client.url}")
    fail("give exactly one of --collateral and --pccs-url with QUOTE_FILE", EXIT_USAGE)


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
            help=f"Enclave image: {', '.join(IMAGE_NAMES)} [needed unless --write or --gramine].",
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
    gramine: Annotated[
        Path | None,
        typer.Option(
            help="A Gramine enclave's signature (the .sig SIGSTRUCT gramine-sgx-sign wrote): "
            "print the MRENCLAVE, MRSIGNER, ISVPRODID and ISVSVN it states, after checking "
            "its size, its RSA-3072 signature and that it admits no DEBUG enclave.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print an enclave image's MRENCLAVE and MRSIGNER, recomputed from this installation.

    Runs no enclave, and trusts no record: every file of the image (interpreter,
    standard library, packages, cleanroom, shared libraries, and for the Worker every
    installed runtime) is read and hashed now, so a third party recomputes the values
    an operator publishes, and `--list` shows which file differs when they do not.
    With --gramine, the values come from a signed Gramine enclave's SIGSTRUCT instead.
    """
    as_json = json_output(as_json)
    if gramine is not None:
        if image is not None or signer is not None or write or list_files:
            fail("--gramine reads the image and its signer from the .sig file alone", EXIT_USAGE)
        _measure_gramine(read_file(gramine, "SIGSTRUCT"), as_json=as_json)
        return
    if write:
        for files in write_measurements():
            stdout.print(f"recorded the {files.image} image: {len(files.files)} files")
        if image is None:
            return
    if image is None:
        fail(
            f"name an image ({', '.join(IMAGE_NAMES)}), or give --write or --gramine FILE.sig",
            EXIT_USAGE,
        )
    measurement = measure(
        image,
        signer_pem=read_file(signer, "signer key") if signer else None,
        fresh=not write,
    )
    files = image_files(image) if write else image_files(image, fresh=True)
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


def _measure_gramine(data: bytes, *, as_json: bool) -> None:
    try:
        measurement = read_sigstruct(data)
    except SigstructError as error:  # --json; exit 2 for a malformed file
        code = EXIT_USAGE if error.check in SigstructError.MALFORMED else EXIT_REJECTED
        if as_json:
            stdout.out(json.dumps({"error": error.to_json()}, indent=2))
            raise typer.Exit(code) from None
        hint = f" — {error.hint}" if error.hint else ""
        fail(f"{error}{hint}", code)
    if as_json:
        stdout.out(json.dumps(measurement.to_json(), indent=2))
        return
    stdout.print("image:     Gramine SGX enclave (from its SIGSTRUCT, signature verified)")
    stdout.print(f"MRENCLAVE: {measurement.mr_enclave.hex()}")
    stdout.print(f"MRSIGNER:  {measurement.mr_signer.hex()}")
    stdout.print(f"ISVPRODID: {measurement.isv_prod_id}  ISVSVN: {measurement.isv_svn}")
    flags = ", ".join(measurement.attributes.flag_names())
    stdout.print(f"ATTRIBUTES: {measurement.attributes.to_bytes().hex()} ({flags}; DEBUG clear)")
    stdout.print(f"signed:    {measurement.date}")
