"""``cleanroom runtime``: install and list the runtimes clean-room functions run in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cleanroom.cli.common import (
    EXIT_REJECTED,
    EXIT_USAGE,
    fail,
    json_output,
    print_json,
    stderr,
    stdout,
)
from cleanroom.runtimes import (
    CATALOGUE,
    RUNTIME_NAMES,
    RUNTIMES_DIR_ENV,
    RuntimeUnavailable,
    resolve_runtime,
)

app = typer.Typer(
    help=(
        "Install and list the runtimes a spec's `runtime` names: "
        + "; ".join(f"{name}: {CATALOGUE[name].summary}" for name in RUNTIME_NAMES)
        + ". Each is installed on a compute server before rooms may use it, and the "
        "Worker's measurement covers every file of every installed runtime."
    ),
    no_args_is_help=True,
)

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help=f"Where runtimes are installed [default: ${RUNTIMES_DIR_ENV}, else "
        "/opt/cleanroom/runtimes]. Every user must be able to read it.",
        show_default=False,
    ),
]


@app.command("install")
def install(
    names: Annotated[
        list[str] | None,
        typer.Argument(help=f"Runtimes to install [default: all: {', '.join(RUNTIME_NAMES)}]."),
    ] = None,
    directory: DirOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Install again even when already installed.")
    ] = False,
) -> None:
    """Install runtimes (a venv of the system Python plus the lock's hashed wheels).

    Installing one that is installed does nothing. Then measure the Worker image again
    (`cleanroom measure --write`), or restart the compute server, which notices the
    change itself."""
    from cleanroom.runtimes.install import InstallError, install_runtime

    installed: dict[str, str] = {}
    for name in names or RUNTIME_NAMES:
        try:
            with stderr.status(f"installing {name}…"):
                runtime = install_runtime(name, directory, force=force)
        except RuntimeUnavailable as error:  # an unknown runtime name: exit 2, not 1
            fail(str(error) + (f" — {error.hint}" if error.hint else ""), EXIT_USAGE)
        except InstallError as error:  # names the runtime
            fail(f"installing {name}: {error}", EXIT_REJECTED)
        installed[name] = str(runtime.directory)
        if not json_output():
            stdout.print(f"{name}: {runtime.directory}", markup=False)
    if json_output():
        print_json(installed)


@app.command("list")
def list_runtimes(
    directory: DirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """List the catalogue's runtimes, whether each is installed here, and where."""
    found: dict[str, dict[str, Any]] = {}
    where: dict[str, str] = {}
    for name in RUNTIME_NAMES:
        try:
            runtime = resolve_runtime(name, directory)
        except RuntimeUnavailable as error:
            found[name] = {"name": name, "error": error.to_json()}
            hint = f" ({error.hint})" if error.hint else ""
            where[name] = f"not usable: {error.message}{hint}"
        else:
            found[name] = runtime.to_json()
            where[name] = str(runtime.directory)
    if json_output(as_json):
        print_json(found)
        return
    for name in RUNTIME_NAMES:
        stdout.print(f"{name:18} {where[name]}", markup=False)
        stdout.print(f"{'':18} {CATALOGUE[name].summary}", markup=False)
