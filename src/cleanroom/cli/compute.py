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
    clean rooms onto it after `cleanroom admin server add PUBLIC_URL`."""
    import uvicorn

    from cleanroom.controller import ControllerSettings, create_app
    from cleanroom.controller.ceiling import ResourceCeiling

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
    settings = ControllerSettings(
        data_dir=(data_dir or home() / "compute").resolve(),
        manager_url=manager_url,
        tee=tee,
        ceiling=ceiling,
    )
    _ = public_url  # advertised by the manager's registry; the Controller needs no own URL
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
