"""``cleanroom contacts``: your own names for other users' IDs, shown by every review.

See :mod:`cleanroom.client.contacts` for the name book and what it is not.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cleanroom.cli.common import current_profile, hint, json_output, print_json, stderr, stdout
from cleanroom.client import contacts as book
from cleanroom.protocol.text import shown

app = typer.Typer(
    help=(
        "Your own names for other users' IDs, shown by every review. inspect and approve "
        "show each right's user as NAME (ID) when you named that ID here, and every other "
        "ID (not yours) as 'unknown: ID': a deployer can make an ID that begins and ends "
        "like a trusted party's, and nobody compares 43 characters by eye. Add an ID only "
        "after checking it with its owner out of band (they run: cleanroom whoami). The "
        "book is this profile's own (contacts.json, 0600): unsigned, shared with no one, "
        "and not part of what the Work-ID covers."
    ),
    no_args_is_help=True,
)


def _print(text: str) -> None:
    stdout.print(text, markup=False)


@app.command("add")
def add(
    name: Annotated[
        str,
        typer.Argument(
            help="Your name for them: 1 to 40 of A-Z a-z 0-9 space . _ - @ ', beginning and "
            "ending with a letter or digit. Names that read alike (case, 0/o, 1/l/i/I, rn/m, "
            "vv/w) are one name; 'you' and 'unknown' are taken.",
            show_default=False,
        ),
    ],
    user_id: Annotated[
        str,
        typer.Argument(
            metavar="USER_ID",
            help="Their user ID, as their cleanroom whoami prints it (43 characters). One "
            "that begins with - goes after --: cleanroom contacts add NAME -- USER_ID.",
            show_default=False,
        ),
    ],
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Rebind: drop the name's earlier ID, or the ID's earlier name. Without it "
            "either is refused (exit 2).",
        ),
    ] = False,
) -> None:
    """Name a user ID: reviews then show it as NAME (ID).

    Check the ID with its owner out of band first (read aloud, or from a message you
    trust): the name is only as good as that check. One name per ID and one ID per
    name; a second binding is refused unless --replace. A user ID may begin with
    "-": put it after "--", e.g. cleanroom contacts add carol -- -hpbggKjg…
    """
    profile = current_profile()
    with profile.locked():
        before = book.load(profile.directory)
        after = before.added(name, user_id, replace=replace)
        book.save(profile.directory, after)
    user_id = book.check_user_id(user_id)
    dropped = {n: u for n, u in before.by_name.items() if after.by_name.get(n) != u}
    if json_output():
        print_json({"name": name, "user_id": user_id, "replaced": dropped})
        return
    for old_name, old_id in sorted(dropped.items()):
        stderr.print(f"replaced: {shown(old_name)} ({old_id})", markup=False)
    _print(f"{name} ({user_id})")


@app.command("remove")
def remove(
    name: Annotated[
        str, typer.Argument(help="The name to drop, spelt as listed.", show_default=False)
    ],
) -> None:
    """Drop a name: reviews show its ID as unknown again."""
    profile = current_profile()
    with profile.locked():
        before = book.load(profile.directory)
        book.save(profile.directory, before.removed(name))
    if json_output():
        print_json({"name": name, "user_id": before.by_name[name], "removed": True})
        return
    _print(f"removed: {name} ({before.by_name[name]})")


@app.command("list")
def list_contacts(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """List your names and the user IDs they stand for, by name."""
    profile = current_profile()
    contacts = book.load(profile.directory)
    if json_output(as_json):
        print_json(
            {
                "you": profile.user_id,
                "contacts": [{"name": n, "user_id": u} for n, u in contacts.by_name.items()],
            }
        )
        return
    if not contacts.by_name:
        stderr.print(f"no contacts: {hint('contacts add NAME -- USER_ID')} names one", markup=False)
        return
    for name, user_id in contacts.by_name.items():
        _print(f"{user_id}  {name}" + ("  (you)" if user_id == profile.user_id else ""))


__all__ = ["app"]
