"""Entry point of the ``cleanroom`` command."""

from __future__ import annotations

import sys
import traceback
from typing import Annotated

import typer
from typer.exceptions import TyperException

from cleanroom import __version__
from cleanroom.cli import (
    admin,
    demo,
    function_test,
    receipt,
    room,
    runtime,
    server,
    sim,
    user,
    verify,
)
from cleanroom.cli.common import (
    EXIT_CODES_HELP,
    EXIT_REJECTED,
    EXIT_USAGE,
    CliError,
    set_profile_name,
    stderr,
)

app = typer.Typer(
    name="cleanroom",
    help=(f"A data clean room on trusted execution environments (Intel SGX).\n\n{EXIT_CODES_HELP}"),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cleanroom {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks for unexpected errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            help="Your profile (user key, trust policy, approvals); default: "
            "$CLEANROOM_PROFILE, else 'default'.",
            show_default=False,
        ),
    ] = None,
) -> None:
    _state["debug"] = debug
    set_profile_name(profile)


app.add_typer(sim.app, name="sim")
app.add_typer(admin.app, name="admin")
app.add_typer(server.app, name="server")
app.add_typer(runtime.app, name="runtime")
app.command("verify-quote")(verify.verify_quote)
app.command("measure")(verify.measure_command)
app.command("demo")(demo.demo)
app.command("configure")(user.configure)
app.command("whoami")(user.whoami)
app.command("login")(user.login)
user.function_app.command("test")(function_test.function_test)
app.add_typer(user.function_app, name="function")
app.command("deploy")(user.deploy)
app.command("inspect")(user.inspect)
app.command("approve")(user.approve)
app.command("attest")(room.attest)
app.add_typer(room.data_app, name="data")
app.command("run")(room.run)
app.command("receipt")(receipt.receipt)
app.command("status")(room.status)
app.command("delete")(room.delete)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; every error is one line on stderr unless ``--debug``."""
    args = sys.argv[1:] if argv is None else argv
    try:
        result = app(args=args, standalone_mode=False, prog_name="cleanroom")
    except CliError as error:
        stderr.print(f"error: {error}", markup=False)
        return error.exit_code
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        stderr.print("aborted", markup=False)
        return EXIT_REJECTED
    except TyperException as error:  # usage errors: bad option, missing argument
        show = getattr(error, "show", None)
        if callable(show):
            show()
        else:
            stderr.print(f"error: {error.message}", markup=False)
        return error.exit_code if error.exit_code else EXIT_USAGE
    except Exception as error:  # noqa: BLE001 - the last line of defence for one-line errors
        if _state["debug"] or "--debug" in args:
            traceback.print_exc()
        else:
            stderr.print(
                f"internal error: {type(error).__name__}: {error} (rerun with --debug)",
                markup=False,
            )
        return EXIT_REJECTED
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
