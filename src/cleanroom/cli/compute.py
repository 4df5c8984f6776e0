"""``cleanroom server compute``: a compute server (the Controller and its enclaves)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cleanroom.cli.common import EXIT_USAGE, fail, stderr
from cleanroom.cli.serving import serve
from cleanroom.paths import compute_data_dir


def compute(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8081,
    public_url: Annotated[
        str | None,
        typer.Option(help="URL clients reach this server at (default http://HOST:PORT)."),
    ] = None,
    manager_url: Annotated[
        str,
        typer.Option(help="The management server whose tokens this server accepts."),
    ] = "http://127.0.0.1:8080",
    data_dir: Annotated[
        Path | None,
        typer.Option(help="State: sockets, enclave logs, sealed data (default <home>/compute)."),
    ] = None,
    tee: Annotated[
        str, typer.Option(help="TEE backend; only 'simulated' runs on this machine.")
    ] = "simulated",
    pccs_url: Annotated[
        str | None,
        typer.Option(
            help="PCCS (API v4) to fetch collateral from, e.g. https://pccs.example:8081 or "
            "your cloud's; it is cached by FMSPC until it expires and served beside each "
            "quote. Without it the simulated platform's own collateral is served.",
            show_default=False,
        ),
    ] = None,
    pccs_ca: Annotated[
        Path | None,
        typer.Option(
            help="CA bundle (PEM) for the PCCS's TLS certificate [default: the system's CAs].",
            show_default=False,
        ),
    ] = None,
    max_resources: Annotated[
        list[str] | None,
        typer.Option(
            "--max",
            metavar="RESOURCE=VALUE",
            help="The most one run may ask for, e.g. --max memory_mib=8192 --max "
            "disk_mib=2048 (also timeout_s, cpu_s, processes). Default: this machine's "
            "memory, half of it for a run's files, a week, 4096 tasks.",
        ),
    ] = None,
) -> None:
    """Run a compute server: the untrusted Controller, the Attester and one Worker per
    clean room, each its own process. Clients reach it at PUBLIC_URL; the manager deploys
    clean rooms onto it after `cleanroom admin server add PUBLIC_URL`.

    When ready it prints where it listens and where its simulated platform is (whose
    root certificate clients must trust explicitly), then one line per request."""
    from cleanroom.attestation.pccs import PccsClient
    from cleanroom.controller import ControllerSettings, create_app
    from cleanroom.controller.ceiling import ResourceCeiling
    from cleanroom.controller.enclaves import PLATFORM_DIR

    try:
        ceiling = ResourceCeiling.of_host().with_overrides(_pairs(max_resources or []))
    except ValueError as error:
        fail(f"--max: {error}", EXIT_USAGE)

    if tee != "simulated":
        fail(f"TEE backend {tee!r} is not available here; use --tee simulated", EXIT_USAGE)
    stderr.print(
        "WARNING: simulated TEE: the operator of this machine can read everything. "
        "For development and tests only.",
        markup=False,
    )
    if pccs_ca is not None and not pccs_ca.is_file():
        fail(f"--pccs-ca {pccs_ca}: no such file", EXIT_USAGE)
    if pccs_url is not None:
        try:
            PccsClient(pccs_url).close()
        except ValueError as error:
            fail(f"--pccs-url: {error}", EXIT_USAGE)
    directory = (data_dir or compute_data_dir()).resolve()
    settings = ControllerSettings(
        data_dir=directory,
        manager_url=manager_url,
        tee=tee,
        ceiling=ceiling,
        pccs_url=pccs_url,
        pccs_verify=str(pccs_ca) if pccs_ca is not None else True,
    )
    _ = public_url  # advertised by the manager's registry; the Controller needs no own URL
    platform = directory / PLATFORM_DIR
    serve(
        create_app(settings),
        host=host,
        port=port,
        what="compute server",
        notes=[
            f"data directory: {directory}",
            f"simulated SGX platform: {platform} (INSECURE); clients trust its root with: "
            f"cleanroom sim export-root --dir {platform} --out sim-root.pem",
        ],
    )


def _pairs(items: list[str]) -> dict[str, int]:
    """``KEY=VALUE`` options as integers; ValueError names the one that is not."""
    pairs = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not value.strip().isdigit():
            raise ValueError(f"expected RESOURCE=INTEGER, got {item!r}")
        pairs[key.strip()] = int(value)
    return pairs
