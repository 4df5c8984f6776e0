"""Entry point of the ``cleanroom`` command.

Each command's module is imported only when that command runs (:data:`COMMANDS`
names it with its one-line summary), so ``cleanroom --help``, ``--version`` and
``whoami`` start at once. The global options (``--profile``, ``--output``,
``--debug``) are accepted before the command's name and after it; help is plain
text, with every default shown.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from cleanroom import __version__
from cleanroom.cli import common
from cleanroom.cli.common import (
    EXIT_CODES_HELP,
    EXIT_REJECTED,
    EXIT_USAGE,
    OutputFormat,
    set_output,
    set_profile_name,
)
from cleanroom.errors import CheckFailed, Error

_state = {"debug": False}


@dataclass(frozen=True)
class Lazy:
    """A command (or a group of them) by where it lives, imported when it runs.

    ``target`` is ``module:attribute``: a ``typer.Typer`` (a group) or a function
    (one command). ``summary`` is what ``cleanroom --help`` lists: the first
    sentence of the command's own help (a test holds them equal).
    """

    target: str
    summary: str
    alias_of: str | None = None

    def load(self) -> Any:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


COMMANDS: dict[str, Lazy] = {
    "configure": Lazy(
        "cleanroom.cli.account:configure",
        "Create or update your profile: manager, credentials, user key, what you trust.",
    ),
    "login": Lazy(
        "cleanroom.cli.account:login",
        "Log in to the manager, register your user key with it, and print who you are.",
    ),
    "logout": Lazy(
        "cleanroom.cli.account:logout",
        "Log out: revoke at the manager your manager token and room tokens, then drop them.",
    ),
    "whoami": Lazy(
        "cleanroom.cli.account:whoami",
        "Print your user_id (the hash of your public key); no network needed.",
    ),
    "contacts": Lazy(
        "cleanroom.cli.contacts:app",
        "Your own names for other users' IDs, shown by every review.",
    ),
    "rooms": Lazy(
        "cleanroom.cli.room:rooms",
        "List the clean rooms you can see, with their state and whether you approved each.",
    ),
    "ls": Lazy("cleanroom.cli.room:rooms", "", alias_of="rooms"),
    "status": Lazy(
        "cleanroom.cli.room:status",
        "Show a clean room: its Worker's state, inputs, runners and outputs, and who says so.",
    ),
    "function": Lazy(
        "cleanroom.cli.user:function_app",
        "Function bundles: start a function directory, upload one, download one to "
        "review it, test one locally.",
    ),
    "deploy": Lazy(
        "cleanroom.cli.user:deploy",
        "Create a clean room: build its spec, deploy it, and pin its Work-ID as approved by you.",
    ),
    "inspect": Lazy(
        "cleanroom.cli.user:inspect",
        "Show what a clean room is, recomputed from its spec and function bytes.",
    ),
    "approve": Lazy(
        "cleanroom.cli.user:approve",
        "Review a clean room and pin its Work-ID: only then will you attest to it or send data.",
    ),
    "attest": Lazy(
        "cleanroom.cli.room:attest",
        "Run Phase 1 remote attestation for a clean room's Worker and print every check.",
    ),
    "data": Lazy(
        "cleanroom.cli.room:data_app",
        "Move data into and out of a clean room (always encrypted to the attested Worker).",
    ),
    "run": Lazy(
        "cleanroom.cli.room:run",
        "Start the clean room's run (only a runner of its spec may); every input must be in.",
    ),
    "fate": Lazy(
        "cleanroom.cli.room:fate",
        "Ask the Worker what became of a run or upload session of yours you could not confirm.",
    ),
    "receipt": Lazy(
        "cleanroom.cli.receipt:receipt",
        "Fetch a room's signed run receipt and verify it; or check a saved one offline.",
    ),
    "delete": Lazy(
        "cleanroom.cli.room:delete",
        "Delete a clean room: its Worker erases its keys and workspace.",
    ),
    "query": Lazy(
        "cleanroom.cli.sql:query",
        "Run a query under every data owner's rules, and verify its signed receipt.",
    ),
    "budget": Lazy(
        "cleanroom.cli.sql:budget",
        "Each data owner's privacy budget (ε spent, left, total), signed by the attested Worker.",
    ),
    "demo": Lazy(
        "cleanroom.cli.demo:demo",
        "Run the whole clean-room flow for two organisations on this machine.",
    ),
    "verify-quote": Lazy(
        "cleanroom.cli.verify:verify_quote",
        "Verify an SGX quote with dcap-qvl and appraise it against a policy.",
    ),
    "measure": Lazy(
        "cleanroom.cli.verify:measure_command",
        "Print an enclave image's MRENCLAVE and MRSIGNER, recomputed from this installation.",
    ),
    "sim": Lazy(
        "cleanroom.cli.sim:app",
        "A simulated SGX platform: real byte formats and real quote verification, with a "
        "simulated root of trust.",
    ),
    "runtime": Lazy(
        "cleanroom.cli.runtime:app",
        "Install and list the runtimes a spec's `runtime` names.",
    ),
    "gramine": Lazy(
        "cleanroom.cli.gramine:app",
        "Build towards real SGX: Gramine manifests, their checks, signed measurement files.",
    ),
    "server": Lazy(
        "cleanroom.cli.server:app",
        "Run a cleanroom server process in the foreground.",
    ),
    "admin": Lazy(
        "cleanroom.cli.admin:app",
        "Manage the management server's projects, members, clients and compute servers.",
    ),
}

# --------------------------------------------------------------- global options


def _set_profile(value: str | None) -> str | None:
    if value is not None:
        set_profile_name(value)
    return value


def _set_output(value: OutputFormat | None) -> OutputFormat | None:
    if value is not None:
        set_output(value)
    return value


def _set_debug(value: bool) -> bool:
    if value:
        _state["debug"] = True
    return value


ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile",
        metavar="NAME",
        callback=_set_profile,
        expose_value=False,
        help="Your profile (user key, trust policy, approvals) "
        "[default: $CLEANROOM_PROFILE, else default].",
        show_default=False,
    ),
]
OutputOption = Annotated[
    OutputFormat | None,
    typer.Option(
        "--output",
        "-o",
        callback=_set_output,
        expose_value=False,
        help="Print the result as text or as one JSON document [default: text].",
        show_default=False,
    ),
]
DebugOption = Annotated[
    bool,
    typer.Option(
        "--debug", callback=_set_debug, expose_value=False, help="Show tracebacks of errors."
    ),
]


def _global_options(profile: ProfileOption = None, output: OutputOption = None) -> None:
    """The options every command accepts after its name too (built once, then shared)."""


def _shared_options() -> list[Any]:
    holder = typer.Typer(add_completion=False)
    holder.command()(_global_options)
    command = typer.main.get_command(holder)
    debug = typer.Typer(add_completion=False)

    def _debug(debug: DebugOption = False) -> None:
        """The --debug flag."""

    debug.command()(_debug)
    return [*command.params, *typer.main.get_command(debug).params]


def _flags(command: Any) -> set[str]:
    return {flag for param in command.params for flag in (*param.opts, *param.secondary_opts)}


def _prepare(command: Any, shared: list[Any]) -> Any:
    """Plain-text help, no shell-completion options, and the global options on every
    command that does not use the same flag for something of its own."""
    command.rich_markup_mode = None
    command.params = [
        param
        for param in command.params
        if param.name not in ("install_completion", "show_completion")
    ]
    for sub in getattr(command, "commands", {}).values():
        _prepare(sub, shared)
    for param in command.params:
        if param.param_type_name == "argument" and param.metavar is None:
            param.metavar = param.name.upper()  # NAME, as in every other command's help
    taken = _flags(command)
    command.params.extend(
        param for param in shared if not taken & {*param.opts, *param.secondary_opts}
    )
    return command


WITHOUT_PROFILE = frozenset({"server", "admin"})
"""Commands that use no profile (a server's, the operator's): not given ``--profile``
after their name (before it, the top-level option is accepted and unused)."""
WITHOUT_RESULT = frozenset({"server"})
"""Commands that print no result, only where they listen and a log: not given
``--output`` after their name (it said it would print JSON, and printed the same text)."""


class _LazyCommands(Mapping[str, Any]):
    """The commands of :data:`COMMANDS`, each built the first time it is looked up."""

    def __init__(self) -> None:
        self._built: dict[str, Any] = {}
        self._shared: list[Any] | None = None

    def __getitem__(self, name: str) -> Any:
        entry = COMMANDS[name]
        key = entry.alias_of or name
        if key not in self._built:
            if self._shared is None:
                self._shared = _shared_options()
            shared = self._shared
            if key in WITHOUT_PROFILE:  # --profile there would say it is used
                shared = [param for param in shared if "--profile" not in param.opts]
            if key in WITHOUT_RESULT:  # as --output would
                shared = [param for param in shared if "--output" not in param.opts]
            self._built[key] = _prepare(_click_command(key, COMMANDS[key].load()), shared)
        return self._built[key]

    def __iter__(self) -> Iterator[str]:
        return iter(COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS)


def _click_command(name: str, target: Any) -> Any:
    command: Any
    if isinstance(target, typer.Typer):
        target.info.name = name
        command = typer.main.get_group(target)  # a group even with one command (data cp)
    else:
        single = typer.Typer(add_completion=False)
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


class LazyGroup(TyperGroup):
    """The top-level group: lists :data:`COMMANDS` without importing them."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _LazyCommands()  # type: ignore[assignment]
        self.rich_markup_mode = None

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        aliases: dict[str, list[str]] = {}
        for name, entry in COMMANDS.items():
            if entry.alias_of is not None:
                aliases.setdefault(entry.alias_of, []).append(name)
        rows = [
            (", ".join([name, *aliases.get(name, [])]), entry.summary)
            for name, entry in COMMANDS.items()
            if entry.alias_of is None
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cleanroom {__version__}")
        raise typer.Exit()


app = typer.Typer(
    name="cleanroom",
    cls=LazyGroup,
    help=f"A data clean room on trusted execution environments (Intel SGX).\n\n{EXIT_CODES_HELP}",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _global(
    profile: ProfileOption = None,
    output: OutputOption = None,
    debug: DebugOption = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """The global options; each command accepts them after its name as well."""


def _command() -> Any:
    return typer.main.get_group(app)


def one_line(error: Error) -> str:
    """What the command line says of ``error`` (after ``error: ``).

    Its one line; a check's hint after a dash, unless the line says it already. A check
    that found the input unusable (exit code 2) says only its message, which names what
    was expected and what was found, and its hint.
    """
    if not isinstance(error, CheckFailed):
        return str(error)
    line = error.message if error.exit_code == EXIT_USAGE else str(error)
    hint = " ".join(error.hint.split()) if error.hint else ""
    return f"{line} — {hint}" if hint and hint not in line else line


def terminal_safe(text: str) -> str:
    """``text`` with nothing a terminal acts on (:func:`cleanroom.protocol.text.terminal_safe`):
    an error may quote what a server sent (a refusal's ``got …``), and reaches a terminal."""
    from cleanroom.protocol.text import terminal_safe as safe  # on error only: start-up time

    return safe(text)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; every error is one line on stderr unless ``--debug``.

    A :class:`cleanroom.errors.Error` exits with its ``exit_code``; usage errors exit 2,
    anything else is an internal error (exit 1).
    """
    args = sys.argv[1:] if argv is None else argv
    _state["debug"] = False
    set_profile_name(None)
    set_output(OutputFormat.text)
    try:
        result = _command().main(args=args, standalone_mode=False, prog_name="cleanroom")
    except Error as error:  # the one place an error becomes a line and an exit code
        common.stderr.print(f"error: {terminal_safe(one_line(error))}", markup=False)
        return error.exit_code
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        common.stderr.print("aborted", markup=False)
        return EXIT_REJECTED
    except TyperException as error:  # usage errors: bad option, missing argument
        show: Callable[[], None] | None = getattr(error, "show", None)
        if callable(show):
            show()
        else:
            common.stderr.print(f"error: {terminal_safe(error.message)}", markup=False)
        return error.exit_code if error.exit_code else EXIT_USAGE
    except KeyboardInterrupt:
        common.stderr.print("interrupted", markup=False)
        return 130
    except Exception as error:  # noqa: BLE001 - the last line of defence for one-line errors
        if _state["debug"] or "--debug" in args:
            import traceback

            traceback.print_exc()
        else:
            common.stderr.print(
                f"internal error: {type(error).__name__}: {terminal_safe(str(error))} "
                "(rerun with --debug)",
                markup=False,
            )
        return EXIT_REJECTED
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
