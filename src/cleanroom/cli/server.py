"""``cleanroom server``: run cleanroom's server processes in the foreground."""

from __future__ import annotations

from typing import Annotated

import typer

from cleanroom.cli.admin import DatabaseUrlOption, DataDirOption, default_data_dir
from cleanroom.cli.common import EXIT_USAGE, fail
from cleanroom.cli.compute import compute as compute_command
from cleanroom.cli.serving import (
    HEADER_TIMEOUT_S,
    MAX_CONNECTIONS,
    HeaderTimeoutOption,
    MaxConnectionsOption,
    ServingLimits,
    TrustedProxyOption,
    trusted_proxies,
)
from cleanroom.manager.settings import (
    CLIENT_ANSWER_DEADLINE,
    DEFAULT_ABANDONED_DELETE_TIMEOUT,
    DEFAULT_CONTROLLER_CALL_WAIT,
    DEFAULT_CONTROLLER_CALLS,
    DEFAULT_CONTROLLER_TIMEOUT,
    DEFAULT_FUNCTION_BYTES_PER_PROJECT,
    DEFAULT_FUNCTION_GRACE,
    DEFAULT_MAX_FUNCTION_BYTES,
    DEFAULT_ROOMS_PER_PROJECT,
    SettingsError,
)

app = typer.Typer(help="Run a cleanroom server process in the foreground.", no_args_is_help=True)


@app.callback()
def _server() -> None:
    """Run a cleanroom server process in the foreground."""


@app.command("manager")
def manager(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8080,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url",
            help=(
                "The URL clients and compute servers reach this manager at; it is the "
                "tokens' issuer, so Controllers must be given the same URL "
                "(default: http://HOST:PORT)."
            ),
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
    max_function_bytes: Annotated[
        int, typer.Option(help="Largest function bundle accepted, in bytes (1 GiB).", min=1)
    ] = DEFAULT_MAX_FUNCTION_BYTES,
    health_interval: Annotated[
        float, typer.Option(help="Seconds between health checks of each compute server.", min=0.1)
    ] = 5.0,
    health_failures: Annotated[
        int, typer.Option(help="Failed health checks in a row that make it unhealthy.", min=1)
    ] = 3,
    lost_after: Annotated[
        float,
        typer.Option(
            help="Seconds without an answer (and unhealthy) after which a compute server "
            "and its live clean rooms are lost.",
            min=0,
        ),
    ] = 60.0,
    function_grace: Annotated[
        int,
        typer.Option(help="Seconds an unused function bundle is kept after its upload.", min=0),
    ] = DEFAULT_FUNCTION_GRACE,
    gc_interval: Annotated[
        float,
        typer.Option(
            help="Seconds between garbage collections of unused bundles (0: never; "
            "`cleanroom admin gc` still works).",
            min=0,
        ),
    ] = 3600.0,
    controller_calls: Annotated[
        int,
        typer.Option(
            help="Deploys and deletes waiting on compute servers at once, in threads apart "
            "from every other request's (more wait for a turn).",
            min=1,
        ),
    ] = DEFAULT_CONTROLLER_CALLS,
    controller_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds a deploy or delete waits for the compute server's answer. With "
            "--controller-call-wait and --abandoned-delete-timeout, under the client's "
            f"{CLIENT_ANSWER_DEADLINE:g} s for an answer.",
            min=0.1,
        ),
    ] = DEFAULT_CONTROLLER_TIMEOUT,
    controller_call_wait: Annotated[
        float,
        typer.Option(
            help="Seconds a deploy or delete waits for a turn among --controller-calls, then "
            "503 controller-calls with nothing done. With --controller-timeout and "
            f"--abandoned-delete-timeout, under the client's {CLIENT_ANSWER_DEADLINE:g} s "
            "for an answer.",
            min=0.1,
        ),
    ] = DEFAULT_CONTROLLER_CALL_WAIT,
    abandoned_delete_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds the delete of a deploy that got no answer waits for its compute "
            "server, at most --controller-timeout (the deploy's answer waits for it; an "
            "unconfirmed delete is asked again each health round).",
            min=0.1,
        ),
    ] = DEFAULT_ABANDONED_DELETE_TIMEOUT,
    rooms_per_project: Annotated[
        int,
        typer.Option(
            help="Live clean rooms one project may have at once (so that one project "
            "cannot take every compute slot).",
            min=1,
        ),
    ] = DEFAULT_ROOMS_PER_PROJECT,
    function_bytes_per_project: Annotated[
        int,
        typer.Option(
            help="Bytes of stored function bundles one project may keep (16 GiB; a bundle "
            "counts for a project within the grace period after its last upload of it, "
            "while a live room of the project uses it, and while nobody's does).",
            min=1,
        ),
    ] = DEFAULT_FUNCTION_BYTES_PER_PROJECT,
    header_timeout: HeaderTimeoutOption = HEADER_TIMEOUT_S,
    max_connections: MaxConnectionsOption = MAX_CONNECTIONS,
    trusted_proxy: TrustedProxyOption = None,
) -> None:
    """Run the management server: tokens, function storage, the clean room registry.

    State lives in --data-dir: the token signing keys (token-keys/), the SQLite
    database (unless --database-url; either is migrated to the newest schema on
    start) and the function bundles. Create projects, members, clients and compute
    servers with `cleanroom admin`; see docs/management.md.
    """
    from cleanroom.cli.serving import serve
    from cleanroom.manager import Settings, create_app

    proxies = trusted_proxies(trusted_proxy)
    directory = data_dir or default_data_dir()
    try:
        settings = Settings(
            data_dir=directory,
            public_url=public_url or f"http://{host}:{port}",
            database_url=database_url,
            max_function_bytes=max_function_bytes,
            health_interval=health_interval,
            health_failures=health_failures,
            lost_after=lost_after,
            function_grace=function_grace,
            gc_interval=gc_interval,
            controller_calls=controller_calls,
            controller_timeout=controller_timeout,
            controller_call_wait=controller_call_wait,
            abandoned_delete_timeout=abandoned_delete_timeout,
            rooms_per_project=rooms_per_project,
            function_bytes_per_project=function_bytes_per_project,
        )
    except SettingsError as error:
        fail(str(error), EXIT_USAGE)
    try:
        application = create_app(settings)
    except OSError as error:
        fail(f"cannot use the data directory {directory}: {error}", EXIT_USAGE)
    serve(
        application,
        host=host,
        port=port,
        what="management server",
        notes=[
            f"data directory: {directory}",
            f"public URL (the tokens' issuer): {settings.public_url}",
        ],
        limits=ServingLimits(header_timeout=header_timeout, max_connections=max_connections),
        proxies=proxies,
        public_url=settings.public_url,  # the tokens' issuer, and where clients are configured
        fix="Start it with --host and --port of its --public-url, or give the URL it is "
        "reached at.",
    )


app.command("compute")(compute_command)
