"""``cleanroom admin``: the operator's commands on the management server's machine.

They open the manager's database directly (the same ``--data-dir`` or
``--database-url`` as ``cleanroom server manager``); none of this is reachable
over HTTP. The manager may keep running meanwhile.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cleanroom import paths
from cleanroom.cli.common import EXIT_USAGE, fail, json_output, print_json, stderr, stdout
from cleanroom.manager import admin as operations
from cleanroom.manager import audit, storage
from cleanroom.manager.database import DatabaseError, open_database
from cleanroom.manager.settings import (
    DEFAULT_FUNCTION_GRACE,
    DEFAULT_MAX_FUNCTION_BYTES,
    FUNCTIONS_DIR,
    default_database_url,
)
from cleanroom.manager.storage import FunctionStore
from cleanroom.protocol.text import terminal_safe

app = typer.Typer(
    help=(
        "Manage the management server's projects, members, clients and compute servers. "
        "Run on the "
        "manager's machine: these commands open its database directly (give the same "
        "--data-dir or --database-url as `cleanroom server manager`)."
    ),
    no_args_is_help=True,
)
project_app = typer.Typer(help="Projects: the unit that owns members, functions and rooms.")
member_app = typer.Typer(
    help="Members: the people and systems of a project, each an owner or a member."
)
client_app = typer.Typer(
    help="Clients: OAuth2 client credentials (id and secret), each of one member of a project."
)
server_app = typer.Typer(help="Compute servers the manager schedules clean rooms on.")
app.add_typer(project_app, name="project", no_args_is_help=True)
app.add_typer(member_app, name="member", no_args_is_help=True)
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
    data_dir: Path | None = None  # None when only --database-url is known

    def sessions(self) -> sessionmaker[Session]:
        shown = self.url
        try:
            shown = make_url(self.url).render_as_string(hide_password=True)
            return open_database(self.url)
        # Kept beside cli/main.py's mapping: the line names the database it could not open.
        except (ArgumentError, SQLAlchemyError, DatabaseError, OSError) as error:
            reason = " ".join(str(error).split("\n")[0].split())
            fail(f"cannot open the manager's database {shown}: {reason}", EXIT_USAGE)


@app.callback()
def _admin(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    directory = data_dir or default_data_dir()
    ctx.obj = _Database(database_url or default_database_url(directory), directory)


def _session(ctx: typer.Context) -> Session:
    database = ctx.find_object(_Database)
    if database is None:  # only when a command is invoked outside `cleanroom admin`
        fail("no database selected", EXIT_USAGE)
    return database.sessions()()


def _print_rows(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """Aligned columns, never truncated or wrapped: ids must stay copyable.

    With --output json: a list of objects, one per row, keyed by the column names."""
    if json_output():
        print_json([dict(zip([h.lower() for h in header], row, strict=True)) for row in rows])
        return
    # What the table quotes may come from a Controller (a room's failure in the audit
    # log's details): nothing a terminal acts on reaches it (JSON escapes C0, not C1).
    rows = [tuple(terminal_safe(cell) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        stdout.print(line.rstrip(), markup=False)


def _done(text: str, **document: object) -> None:
    """The result of an operator's command: one line, or (--output json) ``document``."""
    if json_output():
        print_json(document)
    else:
        stdout.print(text, markup=False)


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
    if as_json or json_output():
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
    """Create a project; then add its members with `cleanroom admin member add`."""
    with _session(ctx) as session:
        project = operations.create_project(session, name)
        _done(f"project {project.name} created", project=project.name, created=True)


@project_app.command("list")
def project_list(ctx: typer.Context) -> None:
    """List the projects and how many clients each has."""
    with _session(ctx) as session:
        rows = [
            (project.name, str(clients), _date(project.created))
            for project, clients in operations.list_projects(session)
        ]
    _print_rows(("PROJECT", "CLIENTS", "CREATED"), rows)


class Role(StrEnum):
    """A member's role in its project."""

    owner = "owner"
    member = "member"


ProjectArgument = Annotated[str, typer.Argument(help="The project's name.", show_default=False)]
MemberArgument = Annotated[
    str,
    typer.Argument(
        help="The member's name: letters, digits and '._@+-' (e.g. alice, etl-bot).",
        show_default=False,
    ),
]


@member_app.command("add")
def member_add(
    ctx: typer.Context,
    project: ProjectArgument,
    name: MemberArgument,
    role: Annotated[
        Role,
        typer.Option("--role", help="owner: manages the project's members and clients over HTTP."),
    ] = Role.member,
) -> None:
    """Add a member (a person or system) to a project; then give it a client.

    Create its credentials with `cleanroom admin client create PROJECT --member NAME`.
    """
    with _session(ctx) as session:
        member = operations.add_member(session, project, name, role.value)
        _done(
            f"member {member.name} added to {project} as {member.role}",
            project=project, member=member.name, role=member.role,
        )  # fmt: skip


@member_app.command("role")
def member_role(
    ctx: typer.Context,
    project: ProjectArgument,
    name: MemberArgument,
    role: Annotated[Role, typer.Argument(help="The member's new role.", show_default=False)],
) -> None:
    """Change a member's role (the operator may demote even a project's last owner)."""
    with _session(ctx) as session:
        member = operations.set_member_role(session, project, name, role.value)
        _done(
            f"member {member.name} of {project} is {member.role}",
            project=project, member=member.name, role=member.role,
        )  # fmt: skip


@member_app.command("remove")
def member_remove(ctx: typer.Context, project: ProjectArgument, name: MemberArgument) -> None:
    """Remove a member: all its clients are disabled and their tokens refused at once.

    The clients stay listed (rooms name their deployer) but can never be enabled
    again; add the member again to give it new clients.
    """
    with _session(ctx) as session:
        disabled = operations.remove_member(session, project, name)
    clients = f": {', '.join(disabled)}" if disabled else ""
    _done(
        f"member {name} removed from {project}; {len(disabled)} client(s) disabled{clients}",
        project=project, member=name, removed=True, clients_disabled=list(disabled),
    )  # fmt: skip


@member_app.command("list")
def member_list(
    ctx: typer.Context,
    project: Annotated[
        str | None, typer.Argument(help="Only this project's members.", show_default=False)
    ] = None,
) -> None:
    """List members: project, name, role, and how many clients (enabled ones) each has."""
    with _session(ctx) as session:
        members = operations.list_members(session, project)
        rows = [
            (
                member.project.name,
                member.name,
                member.role,
                str(len(clients)),
                str(sum(not client.disabled for client in clients)),
                _date(member.created),
            )
            for member, clients in members
        ]
    _print_rows(("PROJECT", "MEMBER", "ROLE", "CLIENTS", "ENABLED", "CREATED"), rows)


def _print_secret(client_id: str, secret: str, **more: object) -> None:
    if json_output():
        print_json({"client_id": client_id, "client_secret": secret, **more})
    else:
        stdout.print(f"client_id:     {client_id}", markup=False)
        stdout.print(f"client_secret: {secret}", markup=False)
    stderr.print(
        "note: the client secret is shown only once; store it now "
        "(the manager keeps only its hash)",
        markup=False,
    )


@client_app.command("create")
def client_create(
    ctx: typer.Context,
    project: Annotated[
        str | None,
        typer.Argument(help="The project the client belongs to (required).", show_default=False),
    ] = None,
    member: Annotated[
        str | None,
        typer.Option(
            "--member",
            help=(
                "The member whose credential it is (add it first with `cleanroom admin "
                "member add`). Without it the client is its own member, named after its "
                "client id, role member."
            ),
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="A label for people (e.g. which laptop).")
    ] = None,
    project_option: Annotated[
        str | None, typer.Option("--project", hidden=True, help="The older spelling of PROJECT.")
    ] = None,
) -> None:
    """Create a client with a random id and secret; the secret is printed once, here only.

    Only an argon2id hash of the secret is stored: a lost secret cannot be shown
    again (rotate it with `cleanroom admin client rotate`).
    """
    if project is not None and project_option is not None and project != project_option:
        fail(f"two projects given: {project!r} and --project {project_option!r}", EXIT_USAGE)
    chosen = project or project_option
    if chosen is None:
        fail("give the project: cleanroom admin client create PROJECT", EXIT_USAGE)
    with _session(ctx) as session:
        created = operations.create_client(session, chosen, name, member=member)
    _print_secret(created.client_id, created.secret, project=created.project, member=created.member)
    stderr.print(f"client of member {created.member} in project {created.project}", markup=False)


@client_app.command("list")
def client_list(
    ctx: typer.Context,
    project: Annotated[
        str | None, typer.Option("--project", help="Only this project's clients.")
    ] = None,
) -> None:
    """List clients: id, project, member, whether disabled, registered user_id, name.

    Secrets are never shown (only their hashes are stored). A client whose member
    was removed shows member "-".
    """
    with _session(ctx) as session:
        clients = operations.list_clients(session, project)
        rows = [
            (
                client.id,
                client.project.name,
                client.member.name if client.member is not None else "-",
                "disabled" if client.disabled else "enabled",
                client.user_id or "-",
                client.name or "",
            )
            for client in clients
        ]
    _print_rows(("CLIENT_ID", "PROJECT", "MEMBER", "STATE", "USER_ID", "NAME"), rows)


ClientArgument = Annotated[str, typer.Argument(help="The client id.", show_default=False)]


@client_app.command("disable")
def client_disable(ctx: typer.Context, client_id: ClientArgument) -> None:
    """Disable a client: it can no longer log in, and its tokens stop working at once.

    Tokens it was issued stay refused even if it is enabled again.
    """
    with _session(ctx) as session:
        operations.set_client_disabled(session, client_id, disabled=True)
    _done(f"client {client_id} disabled", client_id=client_id, disabled=True)


@client_app.command("enable")
def client_enable(ctx: typer.Context, client_id: ClientArgument) -> None:
    """Enable a disabled client again (same secret; tokens issued before stay refused)."""
    with _session(ctx) as session:
        operations.set_client_disabled(session, client_id, disabled=False)
    _done(f"client {client_id} enabled", client_id=client_id, disabled=False)


@client_app.command("rotate")
def client_rotate(ctx: typer.Context, client_id: ClientArgument) -> None:
    """Give a client a new secret, printed once, here only.

    From now on the old secret is refused, and so is every token issued before.
    """
    with _session(ctx) as session:
        rotated = operations.rotate_client(session, client_id)
    _print_secret(rotated.client_id, rotated.secret)
    stderr.print("the old secret and the tokens issued with it are refused from now on")


class TeeKind(StrEnum):
    """The TEE a compute server's Controller runs its enclaves in."""

    simulated = "simulated"
    gramine = "gramine"


CredentialsOutOption = Annotated[
    Path | None,
    typer.Option(
        "--credentials-out",
        help="Write the server's credentials to this new file (mode 0600), for "
        "`cleanroom server compute --credentials FILE`, and print its secret nowhere else.",
        show_default=False,
    ),
]


def _hand_over(added: operations.NewServer, out: Path | None) -> None:
    """A compute server's new credentials: written to ``out`` if given (and its secret
    then nowhere else), else printed once."""
    credentials = added.credentials
    if out is not None:
        document = json.dumps(credentials.to_json(), indent=2) + "\n"
        try:
            descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as error:
            fail(f"cannot create {out}: {error.strerror} (it must not exist)", EXIT_USAGE)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(document)
        stderr.print(f"credentials written to {out}", markup=False)
    server = added.server
    facts = {
        "name": server.name,
        "url": server.url,
        "capacity": server.capacity,
        "tee": server.tee_kind,
    }
    if out is None:
        _print_secret(credentials.client_id, credentials.client_secret, **facts)
    elif json_output():
        # Written to the file only: a secret on the terminal stays in its scrollback and in
        # a CI job's log, which the file's mode 0600 does not protect.
        print_json({"client_id": credentials.client_id, "credentials_file": str(out), **facts})
    else:
        stdout.print(f"client_id:     {credentials.client_id}", markup=False)
        stdout.print(f"client_secret: in {out} only", markup=False)
    file = shlex.quote(str(out)) if out is not None else "FILE"
    stderr.print(
        f"start the compute server with them: cleanroom server compute --credentials {file} "
        f"--manager-url MANAGER_URL, listening where {credentials.url} reaches it (--host, "
        "--port); every token for it names that URL, so its --public-url, if given, must be "
        "it",
        markup=False,
    )


@server_app.command("add")
def server_add(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Argument(help="The Controller's URL, e.g. http://compute-1.internal:8081.")
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="A unique label (default: host:port of URL).")
    ] = None,
    capacity: Annotated[
        int, typer.Option("--capacity", min=1, help="How many live clean rooms it may host.")
    ] = operations.DEFAULT_CAPACITY,
    tee: Annotated[
        TeeKind,
        typer.Option("--tee", help="The TEE its Controller must report (else it is unhealthy)."),
    ] = TeeKind.simulated,
    credentials_out: CredentialsOutOption = None,
) -> None:
    """Register a compute server; new clean rooms go to the least-loaded one.

    URL is the server's identity: clients reach it there, and every token for it
    names it as its audience, so its Controller must be reachable at URL; it takes
    URL from its credentials (`cleanroom server compute --credentials FILE`, whose
    --public-url, if given, must be URL).
    Prints the server's credentials towards the manager once, or with
    --credentials-out writes them to FILE and prints the client id only (its Controller
    fetches its rooms' bundles and the revocation list with them). The manager
    checks its health from then on (`cleanroom admin server list` shows what it
    found). Adding a removed server's URL again registers it again, with new
    credentials.
    """
    with _session(ctx) as session:
        added = operations.add_server(session, url, name, capacity=capacity, tee_kind=tee.value)
        if not json_output():  # as JSON, the credentials' document below says it all
            stdout.print(
                f"compute server {added.server.name} at {added.server.url} added", markup=False
            )
        _hand_over(added, credentials_out)


@server_app.command("credentials")
def server_credentials(
    ctx: typer.Context,
    server: Annotated[str, typer.Argument(help="The compute server's name or URL.")],
    credentials_out: CredentialsOutOption = None,
) -> None:
    """Give a compute server new credentials, printed once, here only (with
    --credentials-out: written to FILE, the secret not printed).

    From now on its old secret is refused, and so is every token issued with it:
    restart its Controller with the new ones.
    """
    with _session(ctx) as session:
        rotated = operations.rotate_server_credentials(session, server)
        _hand_over(rotated, credentials_out)


@server_app.command("list")
def server_list(ctx: typer.Context) -> None:
    """List the compute servers: where, which TEE, how full, and how healthy.

    LIVE_ROOMS counts every room that holds a slot there, as the capacity check
    does: deploying and deployed ones, and failed ones whose Controller may still
    run their Worker (a deploy that got no answer, nor its delete), which
    MAY_STILL_RUN names (PROJECT/ROOM; the health checks ask their Controller to
    delete them until it confirms). STATE is what the last health checks found
    (unknown until the first), or removed; REASON says why a server is not healthy.
    """
    with _session(ctx) as session:
        rows = [
            (
                server.name,
                server.url,
                server.tee_kind,
                str(server.capacity),
                str(load.rooms),
                ",".join(load.may_still_run) or "-",
                "removed" if server.removed else server.state,
                _date(server.last_seen) if server.last_seen is not None else "never",
                server.reason or "",
            )
            for server, load in operations.list_servers(session)
        ]
    header = ("NAME", "URL", "TEE", "CAPACITY", "LIVE_ROOMS", "MAY_STILL_RUN", "STATE")
    _print_rows((*header, "LAST_SEEN", "REASON"), rows)


@server_app.command("remove")
def server_remove(
    ctx: typer.Context,
    server: Annotated[str, typer.Argument(help="The compute server's name or URL.")],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Remove it even while it hosts live clean rooms: they are marked lost.",
        ),
    ] = False,
) -> None:
    """Stop scheduling clean rooms on a compute server, and stop checking it.

    Refused while it hosts live clean rooms, unless --force: a room's data lives
    only inside that server's enclaves, so its rooms are then lost for good
    (their users must redeploy).
    """
    with _session(ctx) as session:
        removed, lost = operations.remove_server(session, server, force=force)
        _done(
            f"compute server {removed.name} at {removed.url} removed",
            name=removed.name, url=removed.url, removed=True, rooms_lost=list(lost),
        )  # fmt: skip
    if lost:
        stderr.print(f"clean rooms marked lost: {', '.join(lost)}", markup=False)


@app.command("gc")
def collect_garbage(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would be deleted.")
    ] = False,
    grace: Annotated[
        int,
        typer.Option(
            "--grace",
            min=0,
            help="Keep bundles uploaded less than this many seconds ago.",
        ),
    ] = DEFAULT_FUNCTION_GRACE,
) -> None:
    """Delete the function bundles no live clean room uses, from the database and disk.

    A bundle is kept while a room that uses it is deploying or deployed, and for
    --grace seconds after its last upload (so one uploaded for a deploy still to
    come survives). A running manager also does this by itself, every --gc-interval
    seconds of `cleanroom server manager` (an hour by default), with its own
    --function-grace.
    """
    database = ctx.find_object(_Database)
    if database is None or database.data_dir is None:
        fail("no data directory selected", EXIT_USAGE)
    store = FunctionStore(database.data_dir / FUNCTIONS_DIR, DEFAULT_MAX_FUNCTION_BYTES)
    with _session(ctx) as session:
        garbage = storage.collect_garbage(
            session, store, grace=grace, actor=audit.OPERATOR, dry_run=dry_run
        )
    verb = "would delete" if dry_run else "deleted"
    if json_output():
        print_json(
            {
                "dry_run": dry_run,
                "functions": [
                    {"function_id": item.function_id, "size": item.size, "uploaded": item.uploaded}
                    for item in garbage.functions
                ],
                "stray_files": [str(path) for path in garbage.stray_files],
            }
        )
        return
    rows = [(item.function_id, str(item.size), _date(item.uploaded)) for item in garbage.functions]
    if rows:
        _print_rows(("FUNCTION", "SIZE", "LAST_UPLOADED"), rows)
    for path in garbage.stray_files:
        stdout.print(f"{verb} stray file {path}", markup=False)
    total = sum(item.size for item in garbage.functions)
    stderr.print(f"{verb} {len(garbage.functions)} function bundle(s), {total} bytes", markup=False)


keys_app = typer.Typer(
    help="The manager's token signing keys (<data-dir>/token-keys): rotate and list them."
)
app.add_typer(keys_app, name="keys", no_args_is_help=True)


def _data_dir(ctx: typer.Context) -> Path:
    database = ctx.find_object(_Database)
    if database is None or database.data_dir is None:
        fail("no data directory selected", EXIT_USAGE)
    return database.data_dir


@keys_app.command("rotate")
def keys_rotate(
    ctx: typer.Context,
    activate_after: Annotated[
        int,
        typer.Option(
            "--activate-after",
            min=0,
            help=(
                "Seconds the new key is published before it signs. Controllers learn of a "
                "new key within 60 s; less may get new tokens refused until they do."
            ),
        ),
    ] = 60,
) -> None:
    """Add a new token signing key; the running manager picks it up by itself.

    The key is published in the JWKS at once and signs new tokens from
    --activate-after seconds on; the key it replaces stays published until every
    token it signed has expired (token lifetime + leeway), then the manager
    deletes it. Tokens already issued stay valid throughout.
    """
    from cleanroom.manager import keys as signing_keys

    directory = _data_dir(ctx)
    with _session(ctx) as session:
        try:
            key = signing_keys.rotate(directory, activate_after=activate_after)
        # Kept beside cli/main.py's mapping: the line names the key directory.
        except (signing_keys.KeyRingError, OSError) as error:
            fail(f"cannot add a signing key in {directory}: {error}", EXIT_USAGE)
        try:
            audit.record(
                session,
                audit.OPERATOR,
                "key.rotated",
                f"key:{key.kid}",
                kid=key.kid,
                created=key.created,
                activates=key.activates,
            )
            session.commit()
        except SQLAlchemyError as error:
            signing_keys.remove_key(directory, key.kid)  # no key without its audit entry
            fail(f"cannot record the rotation in the audit log, key not added: {error}")
    _done(
        f"key {key.kid} added: it signs from {_date(key.activates)}",
        kid=key.kid, created=key.created, activates=key.activates,
    )  # fmt: skip


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """List the signing keys: kid, created, when each signs, its state, when it expires.

    States: next (published, not signing yet), active (signs new tokens), retired
    (published until the tokens it signed expire), expired (no longer published).
    Computed with the default token lifetime and leeway.
    """
    from cleanroom.manager import keys as signing_keys

    directory = _data_dir(ctx)
    statuses = signing_keys.list_statuses(directory)
    if not statuses:
        stderr.print(f"no signing keys in {signing_keys.keys_dir(directory)}", markup=False)
        if json_output():
            print_json([])
        return
    rows = [
        (
            status.kid,
            _date(status.created),
            _date(status.activates),
            status.state,
            _date(status.expires) if status.expires is not None else "-",
        )
        for status in statuses
    ]
    _print_rows(("KID", "CREATED", "SIGNS_FROM", "STATE", "EXPIRES"), rows)
