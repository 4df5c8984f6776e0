"""``cleanroom server``: run cleanroom's server processes in the foreground."""

from __future__ import annotations

from typing import Annotated

import typer

from cleanroom.cli.admin import DatabaseUrlOption, DataDirOption, default_data_dir
from cleanroom.cli.common import EXIT_USAGE, fail
from cleanroom.cli.compute import compute as compute_command

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
        int, typer.Option(help="Largest function bundle accepted, in bytes.", min=1)
    ] = 256 * 1024 * 1024,
) -> None:
    """Run the management server: tokens, function storage, the clean room registry.

    State lives in --data-dir: the token signing key (token-signing-key.pem), the
    SQLite database (unless --database-url) and the function bundles. Create
    projects, clients and compute servers with `cleanroom admin`.
    """
    import uvicorn

    from cleanroom.manager import Settings, create_app

    directory = data_dir or default_data_dir()
    settings = Settings(
        data_dir=directory,
        public_url=public_url or f"http://{host}:{port}",
        database_url=database_url,
        max_function_bytes=max_function_bytes,
    )
    try:
        application = create_app(settings)
    except OSError as error:
        fail(f"cannot use the data directory {directory}: {error}", EXIT_USAGE)
    uvicorn.run(application, host=host, port=port, log_level="info")


app.command("compute")(compute_command)
