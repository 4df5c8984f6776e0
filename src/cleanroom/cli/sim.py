"""``cleanroom sim``: create and use a simulated SGX platform (INSECURE, for testing)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Annotated

import typer

from cleanroom import paths
from cleanroom.cli.common import (
    EXIT_USAGE,
    fail,
    json_output,
    parse_hex,
    print_json,
    stderr,
    stdout,
)
from cleanroom.insecure.simulated import SimulatedPlatform
from cleanroom.insecure.simulated.platform import TCB_STATUSES
from cleanroom.tee.measure import IMAGE_NAMES, measure

app = typer.Typer(
    help=(
        "A simulated SGX platform: real byte formats and real quote verification, with a "
        "simulated root of trust. INSECURE by design: whoever can read the platform "
        "directory can forge any quote. Clients accept its quotes only when told to trust "
        "its root (`cleanroom sim export-root`)."
    ),
    no_args_is_help=True,
)

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Platform directory [default: $CLEANROOM_SIM_DIR or <home>/simulated-platform].",
        show_default=False,
    ),
]


def _warn() -> None:
    stderr.print(
        "warning: simulated SGX platform: no hardware protection (INSECURE)", style="yellow"
    )


def _load(directory: Path | None) -> SimulatedPlatform:
    return SimulatedPlatform.load(directory or paths.simulated_platform_dir())


@app.command("init")
def init(
    directory: DirOption = None,
    tcb_status: Annotated[
        str,
        typer.Option(help=f"TCB status the collateral reports: {', '.join(TCB_STATUSES)}."),
    ] = "UpToDate",
    advisory: Annotated[
        list[str] | None,
        typer.Option("--advisory", help="Advisory ID the collateral lists (repeatable)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing platform.")] = False,
) -> None:
    """Create a platform: fuse key, root CA, PCK CA and certificate, QE key, collateral."""
    target = directory or paths.simulated_platform_dir()
    try:
        platform = SimulatedPlatform.init(
            target,
            now=int(time.time()),
            tcb_status=tcb_status,
            advisory_ids=advisory or (),
            force=force,
        )
    except ValueError as error:  # e.g. an unknown TCB status
        fail(str(error), EXIT_USAGE)
    _warn()
    if json_output():
        print_json(
            {
                "directory": str(platform.directory),
                "root_sha256": _fingerprint(platform),
                "tcb_status": platform.tcb_status,
            }
        )
        return
    stdout.print(f"simulated SGX platform created in {platform.directory}")
    stdout.print(f"root CA fingerprint (SHA-256): {_fingerprint(platform)}")
    stdout.print(f"TCB status reported by its collateral: {platform.tcb_status}")


def _fingerprint(platform: SimulatedPlatform) -> str:
    return hashlib.sha256(platform.root_certificate_der()).hexdigest()


@app.command("export-root")
def export_root(
    directory: DirOption = None,
    compute: Annotated[
        bool,
        typer.Option(
            "--compute",
            help="The platform of the compute server on this machine that runs with its "
            "default --data-dir: <home>/compute/simulated-platform (<home> is "
            "$CLEANROOM_HOME if set). A server with another --data-dir prints its own.",
        ),
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Write the PEM here instead of standard output.")
    ] = None,
) -> None:
    """Write the root certificate a client must explicitly trust to accept simulated quotes."""
    if compute and directory is not None:
        fail("give --dir or --compute, not both", EXIT_USAGE)
    if compute:
        from cleanroom.controller.enclaves import PLATFORM_DIR

        directory = paths.compute_data_dir() / PLATFORM_DIR
        if not directory.is_dir():
            fail(
                f"no compute server's platform in {directory}: start `cleanroom server "
                "compute` first, or give the --dir it printed",
                EXIT_USAGE,
            )
    platform = _load(directory)
    pem = platform.root_certificate_pem()
    if out is None:
        stdout.out(pem, end="")
        return
    try:
        out.write_text(pem)
    except OSError as error:
        fail(f"cannot write {out}: {error.strerror}", EXIT_USAGE)
    if json_output():
        print_json(
            {
                "root": str(out),
                "sha256": _fingerprint(platform),
                "platform": str(platform.directory),
            }
        )
        return
    stderr.print(f"root certificate written to {out} (SHA-256 {_fingerprint(platform)})")


@app.command("quote")
def quote(
    report_data: Annotated[
        str,
        typer.Option(
            help="REPORTDATA as hex, at most 64 bytes; shorter values are zero-padded on the right."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Where to write the quote (binary).")],
    collateral_out: Annotated[Path, typer.Option(help="Where to write the collateral (JSON).")],
    enclave: Annotated[
        str, typer.Option(help=f"Which enclave image quotes: {', '.join(IMAGE_NAMES)}.")
    ] = "attester",
    debug: Annotated[
        bool, typer.Option(help="Quote a DEBUG enclave (verifiers must reject it).")
    ] = False,
    directory: DirOption = None,
) -> None:
    """Mint a quote from the simulated platform, so anyone can try the verifier."""
    data = parse_hex(report_data, "--report-data", pad_to=64)
    platform = _load(directory)
    measurement = measure(enclave)
    raw = platform.enclave(measurement.identity(debug=debug)).quote(data)
    out.write_bytes(raw)
    collateral_out.write_text(platform.collateral_json(now=int(time.time())))
    _warn()
    if json_output():
        print_json(
            {
                "quote": str(out),
                "collateral": str(collateral_out),
                "size": len(raw),
                "mrenclave": measurement.mr_enclave.hex(),
                "mrsigner": measurement.mr_signer.hex(),
            }
        )
        return
    stdout.print(f"quote ({len(raw)} bytes) written to {out}; collateral to {collateral_out}")
    stdout.print(f"MRENCLAVE {measurement.mr_enclave.hex()}")
    stdout.print(f"MRSIGNER  {measurement.mr_signer.hex()}")
    stdout.print(
        "verify with: cleanroom verify-quote "
        f"{out} --collateral {collateral_out} --trust-root <(cleanroom sim export-root)"
    )
