"""The data plane on the command line: attest, data cp, run, receipt, rooms, status, delete.

Each command that moves data starts from the Work-ID the user approved (``cleanroom
approve``), attests the Worker again (Phase 1) and opens a fresh session for one
purpose (Phase 2); a thin layer over :class:`cleanroom.client.CleanRoomClient`. What
a room holds and how its run ended is said only from the Worker's signed word;
what only a server says is marked as unverified, and never advised on.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from cleanroom.cli.account import failures, warn_simulated
from cleanroom.cli.common import (
    EXIT_REJECTED,
    EXIT_USAGE,
    check_new_directory,
    counted,
    current_profile,
    fail,
    hint,
    json_output,
    print_json,
    spinner,
    stderr,
    stdout,
)
from cleanroom.cli.common import transfer_progress as _progress
from cleanroom.client.contacts import Contacts
from cleanroom.client.contacts import load as load_contacts
from cleanroom.client.errors import ServerError
from cleanroom.client.rooms import (
    Attestation,
    CleanRoomClient,
    RoomStatus,
    VerifiedReceipt,
    WorkerStatus,
)
from cleanroom.errors import CheckFailed
from cleanroom.protocol.text import shown

if TYPE_CHECKING:
    from cleanroom.client.manager import Room
    from cleanroom.client.profile import Approval

REMOTE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9-]{0,62}):(?P<id>[a-z][a-z0-9_]{0,31})$")
# Long hex and base64url values (hashes, keys, IDs) shortened in tables; JSON has them whole.
_LONG_VALUE = re.compile(r"[0-9a-fA-F]{20,}|[A-Za-z0-9_-]{32,}")
_SHORT = 12

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON instead of text (as --output json).")
]
data_app = typer.Typer(
    help="Move data into and out of a clean room (always encrypted to the attested Worker).",
    no_args_is_help=True,
    add_completion=False,
)


def _client() -> CleanRoomClient:
    profile = current_profile()
    warn_simulated(profile)
    return CleanRoomClient(profile)


def _short(text: str) -> str:
    """``text`` with every long hash or ID cut to its first characters and an ellipsis."""
    return _LONG_VALUE.sub(lambda match: match.group()[:_SHORT] + "…", text)


def _exit_status(code: int | None) -> str:
    return "none" if code is None else str(code)


# -------------------------------------------------------------------- attest


def _show_checks(attestation: Attestation) -> None:
    table = Table(
        title=f"Phase 1: the Worker of {attestation.room.name}",
        caption="hashes shortened: --output json has them whole",
    )
    table.add_column("check", no_wrap=True)
    table.add_column("expected", overflow="fold")
    table.add_column("actual", overflow="fold")
    table.add_column("", no_wrap=True)
    for check in attestation.checks:
        table.add_row(
            check.check,
            _short(shown(check.expected)),
            _short(shown(check.actual)),
            "ok" if check.passed else "!",
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
    fresh nonce, the Work-ID you approved and an expected Worker measurement. The
    table shortens hashes to fit 80 columns; --output json has every value whole.
    """
    with failures():
        attestation = _client().attest(name)
    if json_output(as_json):
        print_json(
            {
                "room": name,
                "work_id": attestation.worker.work_id,
                "worker_id": attestation.worker.worker_id,
                "simulated": attestation.simulated,
                "checks": [check.to_json() for check in attestation.checks],
            }
        )
        return
    _show_checks(attestation)
    stdout.print(f"accepted: Worker {attestation.worker.worker_id}")


# -------------------------------------------------------------------- data cp


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


def _local_size(local: Path) -> int:
    if local.is_symlink():
        fail(f"{local} is a symbolic link: give the file or directory itself", EXIT_USAGE)
    if local.is_file():
        return local.stat().st_size
    if not local.is_dir():
        fail(f"no such file or directory: {local}", EXIT_USAGE)
    return sum(path.stat().st_size for path in local.rglob("*") if path.is_file())


@data_app.command("cp")
def copy(
    source: Annotated[
        str, typer.Argument(help="A LOCAL file or directory to upload, or NAME:OUTPUT_ID.")
    ],
    target: Annotated[
        str, typer.Argument(help="NAME:INPUT_ID, or a new (or empty) LOCAL directory.")
    ],
    run: Annotated[
        int | None,
        typer.Option(
            "--run",
            min=1,
            help="A SQL room's query run whose result to download (its output's recipient "
            "only; `cleanroom query` prints the number).",
        ),
    ] = None,
) -> None:
    """Upload a file or a directory as an input, or download an output into a new directory.

    Every transfer attests the Worker again and opens a fresh signed session;
    data travels only as records encrypted to that Worker, and the Worker's
    acknowledgement of an upload is sealed in that session. Uploading exactly the
    same input again (after a lost acknowledgement) is acknowledged as already
    there; other content is refused. A download is checked against the output
    manifest the signed run receipt names before it appears in LOCAL; from a run
    that did not succeed it says so first, and exits 1. A SQL room's output is per
    query run: give its number with --run (its query receipt is checked the same way).
    """
    direction, name, object_id, local = _parse(source, target)
    if direction == "upload":
        if run is not None:
            fail("--run names a SQL room's query run to download from, not an upload", EXIT_USAGE)
        _upload(name, object_id, local)
    elif run is not None:
        _download_result(name, object_id, run, local)
    else:
        _download(name, object_id, local)


def _upload(name: str, input_id: str, local: Path) -> None:
    total = _local_size(local)
    client = _client()
    with failures(), _progress(f"upload {name}:{input_id}", total) as bar:
        uploaded = client.upload(
            name, input_id, local, progress=lambda n: bar.advance(bar.task_ids[0], n)
        )
    if json_output():
        print_json(
            {
                "room": name,
                "input": input_id,
                "files": uploaded.files,
                "bytes": uploaded.bytes,
                "sha256": uploaded.sha256,
                "already": uploaded.already,
            }
        )
        return
    files = counted(len(uploaded.files), "file")
    if uploaded.already:
        stdout.print(
            f"{name}:{input_id} already holds exactly this ({files}, "
            f"manifest sha256 {uploaded.sha256}): the Worker kept what it had"
        )
        return
    stdout.print(
        f"uploaded {files} ({uploaded.bytes} bytes) to "
        f"{name}:{input_id}; manifest sha256 {uploaded.sha256}"
    )


def _check_local(local: Path) -> None:
    check_new_directory(local, "")


def _download_result(name: str, output_id: str, run: int, local: Path) -> None:
    from cleanroom.client.sqlrooms import download_result

    _check_local(local)
    client = _client()
    with failures(), _progress(f"download {name}:{output_id} (query run {run})", None) as bar:
        result = download_result(
            client, name, output_id, run, local,
            progress=lambda n: bar.advance(bar.task_ids[0], n),
        )  # fmt: skip
    sha256 = result.receipt["output"]["sha256"]
    if json_output():
        print_json(
            {
                "room": name,
                "output": output_id,
                "run": run,
                "directory": str(result.directory),
                "files": result.files,
                "sha256": sha256,
            }
        )
        return
    stdout.print(
        f"downloaded {counted(len(result.files), 'file')} of query run {run} to "
        f"{result.directory}; "
        f"manifest sha256 {sha256} matches the signed query receipt",
        markup=False,
    )


def _download(name: str, output_id: str, local: Path) -> None:
    _check_local(local)
    client = _client()
    ended: dict[str, Any] = {}

    def check_run(verified: VerifiedReceipt) -> None:
        receipt = verified.receipt
        ended.update(status=receipt["status"], exit_code=receipt["exit_code"])
        if receipt["status"] != "succeeded":
            stderr.print(
                f"warning: the run of {name} ended {shown(receipt['status'])} (exit status "
                f"{_exit_status(receipt['exit_code'])}): {output_id} holds what it left",
                style="bold",
            )

    with failures(), _progress(f"download {name}:{output_id}", None) as bar:
        downloaded = client.download(
            name,
            output_id,
            local,
            progress=lambda n: bar.advance(bar.task_ids[0], n),
            on_receipt=check_run,
        )
    succeeded = ended.get("status") == "succeeded"
    if json_output():
        print_json(
            {
                "room": name,
                "output": output_id,
                "directory": str(downloaded.directory),
                "files": downloaded.files,
                "sha256": downloaded.sha256,
                "run": ended,
            }
        )
    else:
        stdout.print(
            f"downloaded {counted(len(downloaded.files), 'file')} to {downloaded.directory}; "
            f"manifest sha256 {downloaded.sha256} matches the signed receipt"
        )
    if not downloaded.files and succeeded:  # said, as a run that wrote it nothing is
        stderr.print(
            f"note: {output_id} is empty: the run wrote nothing to /work/outputs/{output_id}/",
            markup=False,
        )
    if not succeeded:
        fail(
            f"the run of {name} ended {shown(ended.get('status'))} (exit status "
            f"{_exit_status(ended.get('exit_code'))}): these are the outputs of a failed run"
        )


# -------------------------------------------------------------------- run, receipt


def _worker_json(status: WorkerStatus) -> dict[str, Any]:
    return {"verified": True, **status.to_json()}


def run(
    name: Annotated[str, typer.Argument(help="The clean room.")],
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Wait until the run ended (at most the spec's wall time and 15 min); "
            "exit 1 unless the function succeeded.",
        ),
    ] = False,
) -> None:
    """Start the clean room's run (only a runner of its spec may); every input must be in.

    What is printed is the Worker's signed status (asked with a fresh nonce after
    the start, and while waiting), never the Controller's word. With --wait it exits
    1 when the run ended failed, at a limit (timeout, cpu, memory, disk, processes)
    or failed in the Worker, and says so in one line with the function's exit status
    (after a note of where the spec sends the function's output, its logs),
    and stops waiting (check run-time) when the Worker still says the run goes on 15 min
    past the wall time of its spec (the compute server may be holding it). A SQL
    room has no run of its own: each query is one (cleanroom query).
    """
    client = _client()
    waiting = (
        f"running {name}: waiting for the Worker's signed status…"
        if wait
        else (f"starting the run of {name}…")
    )
    with failures(), spinner(waiting):
        status = client.run(name, wait=wait)
    if json_output():
        print_json(_worker_json(status))
    elif not wait:
        stdout.print(f"{name}: {shown(status.state)} (the Worker's signed status)")
    elif status.succeeded:
        stdout.print(f"{name}: {shown(status.summary())}")
    if wait and not status.succeeded:
        stderr.print(_where_the_log_went(client, name), markup=False)
        fail(f"the run of {name}: {shown(status.summary())}")


def _where_the_log_went(client: CleanRoomClient, name: str) -> str:
    """Where a failed run's stdout and stderr went, by the spec the user approved: the
    runner was told only that the run failed, and not where to read why."""
    try:
        _room, spec = client.approved(name)
        contacts = load_contacts(client.profile.directory)
    except (CheckFailed, ServerError) as error:
        return f"note: where the function's output went is not known ({error})"
    if spec.logs is None:
        return (
            "note: the spec sends the function's output (stdout and stderr) nowhere (no "
            "logs): try the function with cleanroom function test DIR to see why it failed"
        )
    profile = client.profile
    reader = spec.outputs[spec.logs]
    if reader == profile.user_id:
        fetch = profile.command(f"data cp {name}:{spec.logs} DIR")
        return f"note: the function's output went to {spec.logs}, yours: {fetch} (function.log)"
    who = contacts.who(reader, profile.user_id)
    return f"note: the function's output went to {spec.logs}, which {who} receives (function.log)"


def fate(
    name: Annotated[str, typer.Argument(help="The clean room.")],
    session: Annotated[
        str,
        typer.Argument(
            help="The run or upload session a refusal named (after --: it may begin with -)."
        ),
    ],
) -> None:
    """Ask the Worker what became of a run or upload session of yours you could not confirm.

    Such an answer is a refusal in the clear, a 502, a cut connection: the compute
    server's word, which it may give of a request it relayed all the same.

    The Worker answers sealed to a new session of yours: the session ran (a query: its
    run's number, for `cleanroom receipt` or `data cp`), an upload session stored its
    input (new or already there, its bytes, a SQL room's rows: what its acknowledgement
    said), or it started or stored nothing and, from this answer on, never will; then
    asking again is safe. `run`, `query` and `data cp` ask this themselves and name this
    command when they could not get the answer.
    """
    with failures():
        answer = _client().fate(name, session)
    if json_output():
        print_json(
            {"session": answer.session, "ran": answer.ran, "run": answer.run,
             "stored": answer.stored, "acknowledgement": answer.ack}
        )  # fmt: skip
    elif answer.ran:
        which = "the room's run" if answer.run is None else f"query run {answer.run}"
        stdout.print(f"{name}: session {session} ran: {which} (the Worker's sealed answer)")
    elif answer.stored:
        ack = answer.ack
        assert ack is not None, "open_fate: a stored answer carries its acknowledgement"
        what = "already there, nothing new stored" if ack["stored"] == "already" else "new"
        rows = "" if ack.get("rows") is None else f", {ack['rows']} rows"
        stdout.print(
            f"{name}: upload session {session} stored {shown(ack['input'])} ({what}: "
            f"{ack['bytes']} bytes{rows}, manifest sha256 {shown(ack['sha256'])}) (the "
            "Worker's sealed answer)"
        )
    else:
        stdout.print(
            f"{name}: session {session} started or stored nothing and now never will (the "
            "Worker's sealed answer): asking again is safe"
        )


def receipt(
    name: Annotated[str, typer.Argument(help="The clean room.")],
    as_json: JsonOption = False,
) -> None:
    """Fetch the signed run receipt and verify it; exit 1 unless the run succeeded.

    The receipt must be signed by the Worker attested just now, for the Work-ID you
    approved, with each input from its owner (and yours exactly as you sent it).
    """
    with failures():
        verified = _client().receipt(name)
    document = verified.receipt
    if json_output(as_json):
        print_json(document)
    else:
        stdout.print(f"receipt of {name}: {shown(document['status'])}")
        stdout.print(f"  exit status {_exit_status(document['exit_code'])}")
        stdout.print(f"  work_id  {shown(document['work_id'])}")
        stdout.print(f"  function {shown(document['function'])}")
        for input_id, entry in document["inputs"].items():
            stdout.print(
                f"  input  {shown(input_id)} by {shown(entry['by'])} "
                f"sha256 {shown(entry['sha256'])}"
            )
        for output_id, entry in document["outputs"].items():
            stdout.print(f"  output {shown(output_id)} sha256 {shown(entry['sha256'])}")
        stdout.print("verified: signature, Work-ID, function, inputs' owners")
    if document["status"] != "succeeded":
        fail(
            f"the run of {name} ended {shown(document['status'])} "
            f"(exit status {_exit_status(document['exit_code'])})"
        )


# -------------------------------------------------------------------- rooms, status


def _approval_text(approval: Approval | None, room: Room) -> str:
    if approval is None:
        return "no"
    if approval.work_id == room.work_id:
        return "yes"
    return "another Work-ID"


def rooms(
    deleted: Annotated[
        bool, typer.Option("--deleted", help="Also the deleted rooms (the manager keeps them).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """List the clean rooms you can see, with their state and whether you approved each.

    States are the manager's (not verified: `cleanroom status NAME` asks the Worker
    itself). "approved" compares your pinned Work-ID with the one the manager
    reports; text from the manager is shown escaped, as in cleanroom inspect.
    Deleted rooms are left out unless --deleted.
    """
    client = _client()
    with failures():
        listed = client.manager.rooms(deleted=deleted)
        approvals = client.profile.approvals()
    if json_output(as_json):
        print_json(
            [
                {
                    "name": room.name,
                    "project": room.project,
                    "state": room.state,
                    "reason": room.reason,
                    "work_id": room.work_id,
                    "compute_url": room.compute_url,
                    "approved": _approval_text(approvals.get(room.name), room) == "yes",
                    "source": "manager (not verified)",
                }
                for room in listed
            ]
        )
        return
    if not listed:
        stderr.print("no clean room you can see")
        return
    table = Table(caption="state: as the manager reports it (not verified)", box=None)
    for column in ("name", "project", "state", "approved", "Work-ID"):
        table.add_column(column, overflow="fold")
    for room in listed:
        reason = f" ({shown(' '.join(room.reason.split()))})" if room.reason else ""
        table.add_row(
            shown(room.name),
            shown(room.project),
            shown(room.state) + reason,
            _approval_text(approvals.get(room.name), room),
            room.work_id[:_SHORT] + "…",
        )
    stdout.print(table)


_SAID_LIMIT = 40


def _said(value: object) -> str:
    """What only a server says, one short run of words: every character a terminal acts
    on is escaped (:func:`shown`), and spaces are the one it prints as they are, so a
    Controller's state padded to a terminal's width wrapped into lines of its choosing
    ("  state:          done  [signed by the Worker]"). Runs of spaces become one,
    and the text is cut."""
    text = " ".join(str(value).split())
    if len(text) > _SAID_LIMIT:
        text = text[: _SAID_LIMIT - 3] + "..."
    return shown(text)


_SIGNED = "[signed by the Worker]"
_SPEC = "[in the spec: the Work-ID covers it]"
_MANAGER = "[the manager says: not verified]"
_CONTROLLER = "[the Controller says: not verified]"


def _status_lines(status: RoomStatus, you: str, contacts: Contacts) -> list[str]:
    room, spec = status.room, status.spec
    approval = status.approval
    if approval is None:
        approved = "not approved by you"
    elif status.approved:
        approved = "approved by you"
    else:
        approved = f"NOT the Work-ID you approved ({approval.work_id})"
    reason = f" ({shown(' '.join(room.reason.split()))})" if room.reason else ""
    lines = [
        f"clean room {shown(room.name)} (project {shown(room.project)})",
        f"  manager state:  {_said(room.state)}{reason}  {_MANAGER}",
        f"  compute server: {shown(room.compute_url)}  {_MANAGER}",
        f"  Work-ID:        {spec.work_id} (recomputed from the spec; {approved})",
    ]

    def who(user_id: str) -> str:
        return contacts.who(user_id, you)

    runners = ", ".join(who(user) for user in spec.runners)
    lines.append(f"  runners:        {runners}  {_SPEC}")
    worker = status.worker
    if worker is None:
        if status.room.state == "deleted":  # the manager's word: the Worker was asked all the same
            lines.append(
                "  Worker:         NOT VERIFIED: the manager says the room is deleted, so its "
                "Worker erased its keys and has no status to sign; asked all the same:"
            )
            lines.append(f"                  {shown(status.unverified)}")
        else:
            lines.append(f"  Worker:         NOT VERIFIED: {shown(status.unverified)}")
        if status.controller is not None:
            said = _said(status.controller.get("state"))
            lines.append(f"  Worker state:   {said}  {_CONTROLLER}")
        return lines
    lines.append(f"  Worker:         {worker.worker_id} (attested now; its status signed)")
    lines.append(f"  state:          {shown(worker.state)}  {_SIGNED}")
    for input_id, owner in sorted(spec.inputs.items()):
        entry = worker.inputs.get(input_id)
        if entry is not None:
            held = f"arrived, manifest sha256 {shown(entry['sha256'])}"
        elif input_id in worker.uploading:
            held = "uploading"
        else:
            held = "missing"
        lines.append(f"  input {input_id}: {held}; uploaded by {who(owner)}  {_SIGNED}")
    for output_id, recipient in sorted(spec.outputs.items()):
        ready = "ready" if output_id in worker.outputs else "not ready"
        lines.append(f"  output {output_id}: {ready}; read by {who(recipient)}  {_SIGNED}")
    if worker.state in ("done", "failed"):
        lines.append(f"  run:            {shown(worker.summary())}  {_SIGNED}")
    return lines


def status(
    name: Annotated[
        str | None,
        typer.Argument(help="A clean room; every room you can see if omitted.", show_default=False),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show a clean room: its Worker's state, inputs, runners and outputs, and who says so.

    The Worker is attested (Phase 1, for the Work-ID recomputed from the spec the
    manager serves) and its status is asked with a fresh nonce and checked under
    the attested key: the run state, which inputs arrived (by id and manifest
    digest), which outputs are ready and how the run ended. Runners come from the
    spec. Each line says whether the Worker signed it or only a server says it;
    when the Worker's status cannot be verified, that is all it says of it, and
    the command exits 1 (a deleted room, a Worker not reachable or not attested).
    Without NAME: the rooms you can see, as cleanroom rooms.
    """
    if name is None:
        rooms(as_json)
        return
    client = _client()
    with failures():
        found = client.status(name)
    worker = found.worker
    if json_output(as_json):
        room = found.room
        print_json(
            {
                "name": room.name,
                "project": room.project,
                "work_id": found.spec.work_id,
                "approved": found.approved,
                "runners": list(found.spec.runners),
                "inputs": dict(found.spec.inputs),
                "outputs": dict(found.spec.outputs),
                "manager": {
                    "verified": False,
                    "state": room.state,
                    "reason": room.reason,
                    "compute_url": room.compute_url,
                },
                "worker": _worker_json(worker)
                if worker is not None
                else {"verified": False, "error": found.unverified},
                # Nested, never merged: the Controller's text cannot set "verified".
                "controller": None
                if found.controller is None
                else {"verified": False, "says": found.controller},
            }
        )
    else:
        profile = client.profile
        for line in _status_lines(found, profile.user_id, load_contacts(profile.directory)):
            stdout.print(line)
    if worker is None:
        raise typer.Exit(EXIT_REJECTED)


# -------------------------------------------------------------------- delete


def delete(
    name: Annotated[str, typer.Argument(help="The clean room.")],
    yes: Annotated[
        bool,
        typer.Option("--yes", help="Do not ask for confirmation (scripts: no terminal to ask)."),
    ] = False,
) -> None:
    """Delete a clean room: its Worker erases its keys and workspace.

    The sealed data's key exists only inside that Worker, so once it is erased nothing
    of the room can be read, by anyone. The "deleted" printed is the manager's word,
    which no client can check: a compute server can keep running a Worker it was told
    to delete, and what that Worker holds then stays sealed in it and is served only as
    the room's spec says, as before.
    """
    if not yes:
        if not sys.stdin.isatty():
            fail(
                f"delete asks first, and there is no terminal to ask on: pass --yes, e.g. "
                f"{hint(f'delete {name} --yes')}",
                EXIT_USAGE,
            )
        typer.confirm(f"delete clean room {name} and all its data?", abort=True)
    with failures():
        room = _client().delete(name)
    if json_output():
        print_json({"name": room.name, "state": room.state})
        return
    stdout.print(f"{shown(room.name)}: {shown(room.state)}")
