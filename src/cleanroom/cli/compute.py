"""``cleanroom server compute``: a compute server (the Controller and its enclaves)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cleanroom import __version__
from cleanroom.cleartext import CleartextSecret, check_secret_transport
from cleanroom.cli.common import EXIT_REJECTED, EXIT_USAGE, fail, stderr
from cleanroom.cli.serving import (
    HEADER_TIMEOUT_S,
    MAX_CONNECTIONS,
    HeaderTimeoutOption,
    MaxConnectionsOption,
    ServingLimits,
    TrustedProxyOption,
    serve,
    trusted_proxies,
)
from cleanroom.errors import CheckFailed
from cleanroom.paths import compute_data_dir

if TYPE_CHECKING:
    from cleanroom.controller.enclaves import Launcher
    from cleanroom.controller.launchers.gramine import SgxHost


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
            help="Required: this server's credentials towards the manager (mode 0600), "
            "from `cleanroom admin server add URL --credentials-out FILE`; they name URL.",
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
        str,
        typer.Option(
            help="TEE backend: 'simulated' (insecure, runs anywhere) or 'gramine' (Intel SGX "
            "through Gramine: needs the SGX device, AESM, a quote provider configuration, "
            "the signed enclave images and --pccs-url; docs/deploy-sgx.md)."
        ),
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
    launcher: Annotated[
        str,
        typer.Option(
            help="With --tee gramine: how enclaves start. 'docker': containers of the signed "
            "images through the Docker Engine API; 'direct': gramine-sgx here, in bubblewrap; "
            "'auto': docker when its socket exists.",
        ),
    ] = "auto",
    docker_socket: Annotated[
        Path, typer.Option(help="The Docker Engine's Unix socket (--launcher docker).")
    ] = Path("/var/run/docker.sock"),
    attester_image: Annotated[
        str | None,
        typer.Option(
            help="The signed Attester image [default: cleanroom/attester-sgx:VERSION].",
            show_default=False,
        ),
    ] = None,
    worker_image: Annotated[
        str | None,
        typer.Option(
            help="The signed Worker image [default: cleanroom/worker-sgx:VERSION].",
            show_default=False,
        ),
    ] = None,
    gramine_dir: Annotated[
        Path,
        typer.Option(help="The signed manifests and SIGSTRUCTs (--launcher direct)."),
    ] = Path("/opt/cleanroom/gramine"),
    sgx_device: Annotated[
        Path, typer.Option(help="The SGX enclave device (--tee gramine).")
    ] = Path("/dev/sgx_enclave"),
    aesm_socket: Annotated[
        Path, typer.Option(help="The AESM service's socket (--tee gramine).")
    ] = Path("/var/run/aesmd/aesm.socket"),
    qcnl_config: Annotated[
        Path,
        typer.Option(help="The DCAP quote provider's configuration (--tee gramine)."),
    ] = Path("/etc/sgx_default_qcnl.conf"),
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
    header_timeout: HeaderTimeoutOption = HEADER_TIMEOUT_S,
    max_connections: MaxConnectionsOption = MAX_CONNECTIONS,
    trusted_proxy: TrustedProxyOption = None,
) -> None:
    """Run a compute server: the untrusted Controller, the Attester and one Worker per
    clean room, each its own process. Register it first (`cleanroom admin server add
    PUBLIC_URL --credentials-out FILE` on the manager's machine) and start it with
    --credentials FILE; clients reach it at PUBLIC_URL, and the manager deploys clean
    rooms onto it.

    When ready it prints where it listens and where its simulated platform is (whose
    root certificate clients must trust explicitly), then one line per request."""
    from cleanroom.attestation.pccs import PccsClient
    from cleanroom.controller import ControllerSettings, create_app
    from cleanroom.controller.ceiling import ResourceCeiling
    from cleanroom.controller.enclaves import PLATFORM_DIR
    from cleanroom.controller.manager_link import load_credentials

    proxies = trusted_proxies(trusted_proxy)
    try:
        ceiling = ResourceCeiling.of_host().with_overrides(_pairs(max_resources or []))
    except ValueError as error:
        fail(f"--max: {error}", EXIT_USAGE)

    if credentials is None:
        fail(
            "--credentials FILE is required: register this server on the manager's machine "
            "with `cleanroom admin server add URL --credentials-out FILE`",
            EXIT_USAGE,
        )
    identity = load_credentials(credentials)
    if public_url is not None and public_url.rstrip("/") != identity.url:
        fail(
            f"--public-url {public_url} is not the URL this server was registered at "
            f"({identity.url}, in {credentials}): tokens for it name that URL",
            EXIT_USAGE,
        )
    chosen = None
    if tee == "gramine":
        if pccs_url is None:
            fail(
                "--tee gramine needs --pccs-url: the PCCS (API v4) whose collateral is "
                "served beside each quote (on Azure, the THIM URL; docs/deploy-sgx.md)",
                EXIT_USAGE,
            )
        from cleanroom.controller.launchers.gramine import SgxHost

        chosen = _gramine_launcher(
            launcher,
            SgxHost(sgx_device, aesm_socket, qcnl_config),
            docker_socket=docker_socket,
            images={
                "attester": attester_image or f"cleanroom/attester-sgx:{__version__}",
                "worker": worker_image or f"cleanroom/worker-sgx:{__version__}",
            },
            gramine_dir=gramine_dir,
        )
    elif tee == "simulated":
        stderr.print(
            "WARNING: simulated TEE: the operator of this machine can read everything. "
            "For development and tests only.",
            markup=False,
        )
    else:
        fail(f"--tee must be simulated or gramine, got {tee!r}", EXIT_USAGE)
    if pccs_ca is not None and not pccs_ca.is_file():
        fail(f"--pccs-ca {pccs_ca}: no such file", EXIT_USAGE)
    if pccs_url is not None:
        try:
            PccsClient(pccs_url).close()
        except ValueError as error:
            fail(f"--pccs-url: {error}", EXIT_USAGE)
    try:  # this server's own client secret goes there
        check_secret_transport(manager_url)
    except CleartextSecret as error:
        fail(f"--manager-url: {error}", EXIT_USAGE)
    directory = (data_dir or compute_data_dir()).resolve()
    settings = ControllerSettings(
        data_dir=directory,
        manager_url=manager_url,
        public_url=identity.url,
        credentials=identity,
        tee=tee,
        ceiling=ceiling,
        pccs_url=pccs_url,
        pccs_verify=str(pccs_ca) if pccs_ca is not None else True,
        launcher=chosen,
    )
    notes = [f"data directory: {directory}"]
    if tee == "simulated":
        platform = directory / PLATFORM_DIR
        notes.append(
            f"simulated SGX platform: {platform} (INSECURE); clients trust its root with: "
            f"cleanroom sim export-root --dir {platform} --out sim-root.pem"
        )
    serve(
        create_app(settings),
        host=host,
        port=port,
        what="compute server",
        notes=notes,
        limits=ServingLimits(header_timeout=header_timeout, max_connections=max_connections),
        proxies=proxies,
        public_url=identity.url,  # where it was registered: where everyone is sent
        fix=f"Start it with --host and --port of {identity.url}, or register the URL it is "
        "reached at (cleanroom admin server add URL, on the manager's machine).",
    )


def _gramine_launcher(
    launcher: str,
    sgx: SgxHost,
    *,
    docker_socket: Path,
    images: dict[str, str],
    gramine_dir: Path,
) -> Launcher:
    """The Gramine launcher, after every check that this host can run the enclaves: the
    SGX host, then the container engine or Gramine, then each signed enclave."""
    from cleanroom.controller.launchers.docker import DockerEngine
    from cleanroom.controller.launchers.gramine import DirectLauncher, DockerLauncher

    if launcher not in ("auto", "docker", "direct"):
        fail(f"--launcher must be auto, docker or direct, got {launcher!r}", EXIT_USAGE)
    use_docker = launcher == "docker" or (launcher == "auto" and docker_socket.exists())
    chosen: DockerLauncher | DirectLauncher = (
        DockerLauncher(DockerEngine(docker_socket), images, sgx)
        if use_docker
        else DirectLauncher(gramine_dir, sgx)
    )
    try:
        sgx.check()
        signed = chosen.preflight()
    except CheckFailed as error:  # says that the server will not start
        hint = f" — {error.hint}" if error.hint else ""
        fail(f"refusing to start: {error}{hint}", EXIT_REJECTED)
    how = f"containers through {docker_socket}" if use_docker else f"gramine-sgx, {gramine_dir}"
    stderr.print(f"Gramine SGX enclaves ({how}):", markup=False)
    for image, enclave in signed.items():
        stderr.print(
            f"  {image:8} MRENCLAVE {enclave.measurement.mr_enclave.hex()}  "
            f"MRSIGNER {enclave.measurement.mr_signer.hex()}",
            markup=False,
        )
    return chosen


def _pairs(items: list[str]) -> dict[str, int]:
    """``KEY=VALUE`` options as integers; ValueError names the one that is not."""
    pairs = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not value.strip().isdigit():
            raise ValueError(f"expected RESOURCE=INTEGER, got {item!r}")
        pairs[key.strip()] = int(value)
    return pairs
