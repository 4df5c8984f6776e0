"""The data plane on the command line: attest, data cp, run, receipt, delete.

Each command starts from the Work-ID the user approved (``cleanroom approve``),
attests the Worker again (Phase 1) and opens a fresh session for one purpose
(Phase 2); a thin layer over :class:`cleanroom.client.CleanRoomClient`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from cleanroom.cli.common import EXIT_USAGE, current_profile, fail, stderr, stdout
from cleanroom.cli.user import _failures, _warn_simulated
from cleanroom.client.errors import ServerError
from cleanroom.client.manager import Room
from cleanroom.client.profile import Approval
from cleanroom.client.rooms import Attestation, CleanRoomClient
from cleanroom.errors import CheckFailed
from cleanroom.protocol.text import shown

REMOTE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9-]{0,62}):(?P<id>[a-z][a-z0-9_]{0,31})$")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
data_app = typer.Typer(
    help="Move data into and out of a clean room (always encrypted to the attested Worker).",
    no_args_is_help=True,
)


@contextmanager
def _progress(label: str, total: int | None) -> Iterator[Progress]:
    columns = [
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=stderr, transient=True) as progress:
        progress.add_task(label, total=total)
        yield progress


def _client() -> CleanRoomClient:
    profile = current_profile()
    _warn_simulated(profile)
    return CleanRoomClient(profile)


def _show_checks(attestation: Attestation) -> None:
    table = Table(title=f"Phase 1: the Worker of {attestation.room.name}", show_lines=False)
    for column in ("check", "expected", "actual", ""):
        table.add_column(column, overflow="fold")
    for check in attestation.checks:
        table.add_row(
            check.check, shown(check.expected), shown(check.actual), "ok" if check.passed else "!"
        )
    stdout.print(table)


def attest(
    name: Annotated[str, typer.Argument(help="The clean room.")],
    as_json: JsonOption = False,
) -> None:
    """Run Phase 1 remote attestation for a clean room's Worker and print every check.

    Checks the quote (dcap-qvl, against Intel's root or the simulated root your
    profile trusts), the TCB status, DEBUG, the Attester's MRENCLAVE/MRSIGNER,
    ISVPRODID/ISVSVN, that REPORTDATA binds the claims, that the claims carry your
    fresh nonce, the Work-ID you approved and an expected Worker measurement.
    """
    with _failures():
        attestation = _client().attest(name)
    if as_json:
        document = {
            "room": name,
            "work_id": attestation.worker.work_id,
            "worker_id": attestation.worker.worker_id,
            "simulated": attestation.simulated,
            "checks": [check.to_json() for check in attestation.checks],
        }
        stdout.out(json.dumps(document, indent=2))
        return
    _show_checks(attestation)
    stdout.print(f"accepted: Worker {attestation.worker.worker_id}", markup=False)


def _parse(source: str, target: str) -> tuple[str, str, str, Path]:
    """('upload' | 'download', room, object id, local path)."""
    remote_source, remote_target = REMOTE.fullmatch(source), REMOTE.fullmatch(target)
    if remote_target and not remote_source:
        return "upload", remote_target["name"], remote_target["id"], Path(source)
    if remote_source and not remote_target:
        return "download", remote_source["name"], remote_source["id"], Path(target)
    fail(
        "give exactly one side as NAME:ID, e.g. `data cp ./mine room:input_1` or "
        "`data cp room:output_1 ./results` (write a local path with ':' as ./path)",
        EXIT_USAGE,
    )


@data_app.command("cp")
def copy(
    source: Annotated[str, typer.Argument(help="LOCAL_DIR to upload, or NAME:OUTPUT_ID.")],
    target: Annotated[str, typer.Argument(help="NAME:INPUT_ID, or a new LOCAL_DIR.")],
) -> None:
    """Upload a directory as an input, or download an output into a new directory.

    Every transfer attests the Worker again and opens a fresh signed session;
    data travels only as records encrypted to that Worker. A download is checked
    against the output manifest the signed run receipt names before it appears in
    LOCAL_DIR.
    """
    direction, name, object_id, local = _parse(source, target)
    client = _client()
    with _failures():
        if direction == "upload":
            if not local.is_dir():
                fail(f"not a directory: {local}", EXIT_USAGE)
            total = sum(p.stat().st_size for p in local.rglob("*") if p.is_file())
            with _progress(f"upload {name}:{object_id}", total) as bar:
                uploaded = client.upload(
                    name, object_id, local, progress=lambda n: bar.advance(bar.task_ids[0], n)
                )
            stdout.print(
                f"uploaded {len(uploaded.files)} files ({uploaded.bytes} bytes) to "
                f"{name}:{object_id}; manifest sha256 {uploaded.sha256}",
                markup=False,
            )
        else:
            with _progress(f"download {name}:{object_id}", None) as bar:
                downloaded = client.download(
                    name, object_id, local, progress=lambda n: bar.advance(bar.task_ids[0], n)
                )
            stdout.print(
                f"downloaded {len(downloaded.files)} files to {downloaded.directory}; "
                f"manifest sha256 {downloaded.sha256} matches the signed receipt",
                markup=False,
            )


def run(
    name: Annotated[str, typer.Argument(help="The clean room.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the run ended.")] = False,
) -> None:
    """Start the clean room's run (only a runner of its spec may); every input must be in."""
    with _failures():
        state = _client().run(name, wait=wait)
    stdout.print(f"{name}: {shown(state)}", markup=False)
    if wait and state != "done":
        fail(f"the run of {name} ended {shown(state)}: redeploy to try again")


def receipt(
    name: Annotated[str, typer.Argument(help="The clean room.")],
    as_json: JsonOption = False,
) -> None:
    """Fetch the signed run receipt and verify it.

    The receipt must be signed by the Worker attested just now, for the Work-ID you
    approved, with each input from its owner (and yours exactly as you sent it).
    """
    with _failures():
        verified = _client().receipt(name)
    document = verified.receipt
    if as_json:
        stdout.out(json.dumps(document, indent=2))
        return
    stdout.print(f"receipt of {name}: {shown(document['status'])}", markup=False)
    stdout.print(f"  work_id  {shown(document['work_id'])}")
    stdout.print(f"  function {shown(document['function'])}")
    for input_id, entry in document["inputs"].items():
        stdout.print(
            f"  input  {shown(input_id)} by {shown(entry['by'])} sha256 {shown(entry['sha256'])}"
        )
    for output_id, entry in document["outputs"].items():
        stdout.print(f"  output {shown(output_id)} sha256 {shown(entry['sha256'])}")
    stdout.print("verified: signature, Work-ID, function, inputs' owners", markup=False)


def _approval_text(approval: Approval | None, room: Room) -> str:
    if approval is None:
        return "not approved by you"
    if approval.work_id == room.work_id:
        return "approved by you"
    return "you approved another Work-ID (the room changed)"


def status(
    name: Annotated[
        str | None,
        typer.Argument(help="A clean room; every room you can see if omitted.", show_default=False),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show clean rooms as the manager reports them, and whether you approved each.

    States come from servers that are not trusted (the manager; for one room also
    its Controller): they are informational. Whether you approved a room compares
    your own pinned Work-ID with the hash of the room's spec. Text from the servers
    is shown escaped, as in cleanroom inspect.
    """
    client = _client()
    with _failures():
        rooms = [client.manager.room(name)] if name is not None else client.manager.rooms()
        approvals = client.profile.approvals()
    worker: str | None = None
    if name is not None:
        try:
            worker = shown(client.state(name).get("state"))
        except (CheckFailed, ServerError) as error:
            worker = f"unknown ({shown(error)})"
    if as_json:
        document = [
            {
                "name": room.name,
                "state": room.state,
                "reason": room.reason,
                "work_id": room.work_id,
                "approved": approvals.get(room.name) is not None
                and approvals[room.name].work_id == room.work_id,
            }
            for room in rooms
        ]
        stdout.out(json.dumps(document if name is None else document[0], indent=2))
        return
    for room in rooms:
        reason = f" ({shown(room.reason)})" if room.reason else ""
        approval = _approval_text(approvals.get(room.name), room)
        stdout.print(f"{shown(room.name)}: {shown(room.state)}{reason}; {approval}")
        if name is not None:
            stdout.print(f"  Work-ID:        {room.work_id}")
            stdout.print(f"  function:       {room.function}")
            stdout.print(f"  compute server: {shown(room.compute_url)}")
            stdout.print(f"  Worker:         {worker} (as its Controller reports it)")
    if not rooms:
        stderr.print("no clean room you can see")


def delete(
    name: Annotated[str, typer.Argument(help="The clean room.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a clean room: its Worker erases its keys and workspace.

    Nothing of it can be read afterwards, by anyone: the sealed data's key existed
    only inside that Worker.
    """
    if not yes:
        typer.confirm(f"delete clean room {name} and all its data?", abort=True)
    with _failures():
        room = _client().delete(name)
    stdout.print(f"{shown(room.name)}: {shown(room.state)}", markup=False)
