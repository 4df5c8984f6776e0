"""``cleanroom admin``: the operator's commands on the management server's machine.

They open the manager's database directly (the same ``--data-dir`` or
``--database-url`` as ``cleanroom server manager``); none of this is reachable
over HTTP. The manager may keep running meanwhile.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cleanroom import paths
from cleanroom.cli.common import EXIT_USAGE, fail, stderr, stdout
from cleanroom.manager import admin as operations
from cleanroom.manager import audit
from cleanroom.manager.database import open_database
from cleanroom.manager.settings import default_database_url

app = typer.Typer(
    help=(
        "Manage the management server's projects, clients and compute servers. Run on the "
        "manager's machine: these commands open its database directly (give the same "
        "--data-dir or --database-url as `cleanroom server manager`)."
    ),
    no_args_is_help=True,
)
project_app = typer.Typer(help="Projects: the unit that owns clients, functions and rooms.")
client_app = typer.Typer(
    help="Clients: OAuth2 client credentials, one per user, each in one project."
)
server_app = typer.Typer(help="Compute servers the manager schedules clean rooms on.")
app.add_typer(project_app, name="project", no_args_is_help=True)
app.add_typer(client_app, name="client", no_args_is_help=True)
app.add_typer(server_app, name="server", no_args_is_help=True)


def default_data_dir() -> Path:
    """The manager's default data directory: ``<home>/manager``."""
    return paths.home() / "manager"


DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help=(
            "The manager's data directory "
            "(default: <home>/manager; <home> is $CLEANROOM_HOME if set)."
        ),
        show_default=False,
    ),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help=(
            "SQLAlchemy URL of the manager's database "
            "(default: the SQLite file <data-dir>/manager.db)."
        ),
        show_default=False,
    ),
]


@dataclass(frozen=True)
class _Database:
    url: str

    def sessions(self) -> sessionmaker[Session]:
        shown = self.url
        try:
            shown = make_url(self.url).render_as_string(hide_password=True)
            return open_database(self.url)
        except (ArgumentError, SQLAlchemyError, OSError) as error:
            reason = " ".join(str(error).split("\n")[0].split())
            fail(f"cannot open the manager's database {shown}: {reason}", EXIT_USAGE)


@app.callback()
def _admin(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    directory = data_dir or default_data_dir()
    ctx.obj = _Database(database_url or default_database_url(directory))


def _session(ctx: typer.Context) -> Session:
    database = ctx.find_object(_Database)
    if database is None:  # only when a command is invoked outside `cleanroom admin`
        fail("no database selected", EXIT_USAGE)
    return database.sessions()()


def _print_rows(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """Aligned columns, never truncated or wrapped: ids must stay copyable."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        stdout.print(line.rstrip(), markup=False)


def _date(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


@app.command("audit")
def audit_log(
    ctx: typer.Context,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Recompute the hash chain from the first entry; exit 1 at the first break.",
        ),
    ] = False,
    after: Annotated[
        int, typer.Option("--after", help="Show only entries after this sequence number.", min=0)
    ] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line instead of columns.")
    ] = False,
) -> None:
    """Print the audit log: who did what, when; each entry hash-chained to the one before.

    With --verify, also check the whole chain (any entry changed, removed or
    inserted is found, naming the first) and print the newest hash: copy it
    somewhere the database's owner cannot rewrite, to anchor the log.
    """
    with _session(ctx) as session:
        shown = list(audit.entries(session, after))
        verdict = audit.verify(session) if verify else None
    if as_json:
        for entry in shown:
            line = {
                "seq": entry.seq,
                "time": entry.time,
                "actor": entry.actor,
                "action": entry.action,
                "target": entry.target,
                "details": json.loads(entry.details),
                "hash": entry.hash,
            }
            stdout.print(json.dumps(line, sort_keys=True), markup=False, highlight=False)
    elif shown:
        rows = [(str(e.seq), _date(e.time), e.actor, e.action, e.target, e.details) for e in shown]
        _print_rows(("SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "DETAILS"), rows)
    else:
        stderr.print("the audit log has no entries" + (f" after {after}" if after else ""))
    if verdict is None:
        return
    if not verdict.ok:
        fail(f"the audit log does not verify: {verdict.problem}")
    stderr.print(f"audit log verified: {verdict.checked} entries, newest hash {verdict.head}")


@project_app.command("create")
def project_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Lowercase letters, digits and '-' (1-63).")],
) -> None:
    """Create a project; then create its clients with `cleanroom admin client create`."""
    with _session(ctx) as session:
        try:
            project = operations.create_project(session, name)
        except operations.AdminError as error:
            fail(str(error), EXIT_USAGE)
        stdout.print(f"project {project.name} created", markup=False)


@project_app.command("list")
def project_list(ctx: typer.Context) -> None:
    """List the projects and how many clients each has."""
    with _session(ctx) as session:
        rows = [
            (project.name, str(clients), _date(project.created))
            for project, clients in operations.list_projects(session)
        ]
    _print_rows(("PROJECT", "CLIENTS", "CREATED"), rows)


@client_app.command("create")
def client_create(
    ctx: typer.Context,
    project: Annotated[str, typer.Option("--project", help="The project the client belongs to.")],
    name: Annotated[
        str | None, typer.Option("--name", help="A label for people (e.g. who uses it).")
    ] = None,
) -> None:
    """Create a client with a random id and secret; the secret is printed once, here only.

    Only an argon2id hash of the secret is stored: a lost secret cannot be shown
    again (create another client and disable the old one).
    """
    with _session(ctx) as session:
        try:
            created = operations.create_client(session, project, name)
        except operations.AdminError as error:
            fail(str(error), EXIT_USAGE)
    stdout.print(f"client_id:     {created.client_id}", markup=False)
    stdout.print(f"client_secret: {created.secret}", markup=False)
    stderr.print(
        "note: the client secret is shown only once; store it now "
        "(the manager keeps only its hash)",
        markup=False,
    )


@client_app.command("list")
def client_list(
    ctx: typer.Context,
    project: Annotated[
        str | None, typer.Option("--project", help="Only this project's clients.")
    ] = None,
) -> None:
    """List clients: id, project, name, registered user_id, whether disabled."""
    with _session(ctx) as session:
        try:
            clients = operations.list_clients(session, project)
        except operations.AdminError as error:
            fail(str(error), EXIT_USAGE)
        rows = [
            (
                client.id,
                client.project.name,
                "disabled" if client.disabled else "enabled",
                client.user_id or "-",
                client.name or "",
            )
            for client in clients
        ]
    _print_rows(("CLIENT_ID", "PROJECT", "STATE", "USER_ID", "NAME"), rows)


@client_app.command("disable")
def client_disable(
    ctx: typer.Context, client_id: Annotated[str, typer.Argument(help="The client to disable.")]
) -> None:
    """Disable a client: it can no longer log in, and its tokens stop working at once."""
    with _session(ctx) as session:
        try:
            operations.set_client_disabled(session, client_id, disabled=True)
        except operations.AdminError as error:
            fail(str(error), EXIT_USAGE)
    stdout.print(f"client {client_id} disabled", markup=False)


@client_app.command("enable")
def client_enable(
    ctx: typer.Context, client_id: Annotated[str, typer.Argument(help="The client to enable.")]
) -> None:
    """Enable a disabled client again (its secret is unchanged)."""
    with _session(ctx) as session:
        try:
            operations.set_client_disabled(session, client_id, disabled=False)
        except operations.AdminError as error:
            fail(str(error), EXIT_USAGE)
    stdout.print(f"client {client_id} enabled", markup=False)


@server_app.command("add")
def server_add(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Argument(help="The Controller's URL, e.g. http://compute-1.internal:8081.")
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="A unique label (default: host:port of URL).")
    ] = None,
) -> None:
    """Register a compute server; new clean rooms go to the least-loaded one."""
    with _session(ctx) as session:
        try:
            server = operations.add_server(session, url, name)
        except operations.AdminError as error:
            fail(str(error), EXIT_USAGE)
        stdout.print(f"compute server {server.name} at {server.url} added", markup=False)


@server_app.command("list")
def server_list(ctx: typer.Context) -> None:
    """List the compute servers and how many live (deploying or deployed) rooms each has."""
    with _session(ctx) as session:
        rows = [
            (server.name, server.url, str(load), _date(server.created))
            for server, load in operations.list_servers(session)
        ]
    _print_rows(("NAME", "URL", "LIVE_ROOMS", "ADDED"), rows)
