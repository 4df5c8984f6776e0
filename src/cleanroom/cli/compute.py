"""``cleanroom server compute``: a compute server (the Controller and its enclaves)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cleanroom.cli.common import EXIT_USAGE, fail, stderr
from cleanroom.paths import home


def compute(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8081,
    public_url: Annotated[
        str | None,
        typer.Option(
            help="URL clients reach this server at: the URL it was registered at, which "
            "every token for it names (default: the one in --credentials).",
            show_default=False,
        ),
    ] = None,
    credentials: Annotated[
        Path | None,
        typer.Option(
            help="This server's credentials towards the manager (mode 0600), from "
            "`cleanroom admin server add URL --credentials-out FILE`.",
            show_default=False,
        ),
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
    clean room, each its own process. Register it first (`cleanroom admin server add
    PUBLIC_URL --credentials-out FILE` on the manager's machine) and start it with
    --credentials FILE; clients reach it at PUBLIC_URL, and the manager deploys clean
    rooms onto it."""
    import uvicorn

    from cleanroom.attestation.pccs import PccsClient
    from cleanroom.controller import ControllerSettings, create_app
    from cleanroom.controller.ceiling import ResourceCeiling
    from cleanroom.controller.manager_link import CredentialsError, load_credentials

    try:
        ceiling = ResourceCeiling.of_host().with_overrides(_pairs(max_resources or []))
    except ValueError as error:
        fail(f"--max: {error}", EXIT_USAGE)

    if tee != "simulated":
        fail(f"TEE backend {tee!r} is not available here; use --tee simulated", EXIT_USAGE)
    if credentials is None:
        fail(
            "--credentials FILE is required: register this server on the manager's machine "
            "with `cleanroom admin server add URL --credentials-out FILE`",
            EXIT_USAGE,
        )
    try:
        identity = load_credentials(credentials)
    except CredentialsError as error:
        fail(str(error), EXIT_USAGE)
    if public_url is not None and public_url.rstrip("/") != identity.url:
        fail(
            f"--public-url {public_url} is not the URL this server was registered at "
            f"({identity.url}, in {credentials}): tokens for it name that URL",
            EXIT_USAGE,
        )
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
    settings = ControllerSettings(
        data_dir=(data_dir or home() / "compute").resolve(),
        manager_url=manager_url,
        public_url=identity.url,
        credentials=identity,
        tee=tee,
        ceiling=ceiling,
        pccs_url=pccs_url,
        pccs_verify=str(pccs_ca) if pccs_ca is not None else True,
    )
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


def _pairs(items: list[str]) -> dict[str, int]:
    """``KEY=VALUE`` options as integers; ValueError names the one that is not."""
    pairs = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not value.strip().isdigit():
            raise ValueError(f"expected RESOURCE=INTEGER, got {item!r}")
        pairs[key.strip()] = int(value)
    return pairs
