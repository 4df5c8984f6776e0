"""The user's commands against the management server: functions, deploy, review.

``function upload|download|test``, ``deploy``, ``inspect`` and ``approve``
(``configure``, ``whoami`` and ``login`` are in :mod:`cleanroom.cli.account`). The
profile (``--profile``, ``$CLEANROOM_PROFILE``, else ``default``) holds the user
key, the attestation policy and the approved Work-IDs; see
:mod:`cleanroom.client.profile`. Nothing the manager answers is shown unchecked:
function IDs and Work-IDs are recomputed from the bytes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from cleanroom.cli import function_test
from cleanroom.cli.account import failures, with_manager
from cleanroom.cli.common import (
    DURATION_HELP,
    EXIT_USAGE,
    SIZE_HELP,
    counted,
    current_profile,
    disk_mib,
    duration_text,
    fail,
    hint,
    json_output,
    memory_mib,
    parse_duration,
    print_json,
    spinner,
    stderr,
    stdout,
    transfer_progress,
)
from cleanroom.client.access import (
    Access,
    AccessFileError,
    build_spec,
    load_access,
    parse_parameters,
)
from cleanroom.client.changes import Changes, Names, Side, compare
from cleanroom.client.contacts import Contacts
from cleanroom.client.contacts import load as load_contacts
from cleanroom.client.errors import ServerError
from cleanroom.client.imports import HandlerLocation
from cleanroom.client.profile import (
    DEFAULT_PROFILE,
    Approval,
    Inspection,
    Profile,
)
from cleanroom.client.review import (
    BundleFile,
    Participant,
    Review,
    ReviewWarning,
    approve_review,
    check_handler,
    contents,
    parameter_value,
    participants,
    record_inspection,
    resources,
    review,
    spec_record,
)
from cleanroom.client.sqlfiles import load_queries, load_schema, sql_section
from cleanroom.client.vendored import Vendored
from cleanroom.client.wheels import WheelComparison, compare_with_wheels
from cleanroom.errors import CheckFailed
from cleanroom.protocol.bundle import (
    FUNCTION_ID_PREFIX,
    BundleError,
    function_id,
    pack_into,
    unpack,
)
from cleanroom.protocol.spec import Resources, WorkSpec
from cleanroom.protocol.sql import SQL_HANDLER, SQL_RUNTIME
from cleanroom.protocol.text import quoted, shown
from cleanroom.sql import engine_bundle, engine_function_id
from cleanroom.sql.rules import DIALECT as SQL_DIALECT
from cleanroom.sql.rules import check_spec_queries
from cleanroom.sql.rules import parse as parse_query

if TYPE_CHECKING:
    pass

_FUNCTION_ID = re.compile(r"^fs://[A-Za-z0-9_-]{43}$")
_FUNCTION_DIGEST = re.compile(r"^[A-Za-z0-9_-]{43}$")
_ROOM_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # as WorkSpec.name

# The runtime a function download is read for (module shadowing): a spec's default.
_DEFAULT_RUNTIME: str = WorkSpec.model_fields["runtime"].default

function_app = typer.Typer(
    help="Function bundles: start a function directory, upload one, download one to "
    "review it, test one locally.",
    no_args_is_help=True,
    add_completion=False,
)
function_app.command("test")(function_test.function_test)

# -------------------------------------------------------------------- helpers


def _print(text: str) -> None:
    stdout.print(text)


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


# -------------------------------------------------------------------- functions


_STARTER_HANDLER = '''"""A clean-room function: the Worker calls run() once, in its sandbox.

What the function sees (and nothing else: no network, no other files):
  /work/inputs/ID/       each input of the access file, as its owner uploaded it
  /work/outputs/ID/      each output, empty: what is written here is the result
  /work/parameters.json  the spec's parameters (deploy --param KEY=VALUE)
Runtime python3.11 has the standard library only; python3.11-data also numpy,
pandas, polars, pyarrow, duckdb and scikit-learn (deploy --runtime).
"""

import json
from pathlib import Path

WORK = Path("/work")


def run() -> None:
    parameters = json.loads((WORK / "parameters.json").read_text())
    files = {
        directory.name: sorted(p.name for p in directory.rglob("*") if p.is_file())
        for directory in sorted((WORK / "inputs").iterdir())
    }
    result = {"parameters": parameters, "files": files}
    (WORK / "outputs" / "output_1" / "result.json").write_text(json.dumps(result, indent=2))
'''


@function_app.command("init")
def function_init(
    directory: Annotated[
        Path, typer.Argument(help="The new function directory (must not exist, or be empty).")
    ],
) -> None:
    """Start a function: write DIRECTORY/handler.py, a handler (handler.run) that lists
    its inputs' files into output_1/result.json, with the /work layout it runs in.

    Edit it, try it with `cleanroom function test DIRECTORY --input input_1=PATH`, then
    `cleanroom function upload DIRECTORY` and `cleanroom deploy`."""
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        fail(f"{directory} exists and is not a directory", EXIT_USAGE)
    if directory.is_dir() and any(directory.iterdir()):
        fail(f"{directory} is not empty: give a new directory", EXIT_USAGE)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "handler.py").write_text(_STARTER_HANDLER)
    except OSError as error:
        fail(f"cannot write {error.filename or directory}: {error.strerror}", EXIT_USAGE)
    if json_output():
        print_json({"handler": str(directory / "handler.py")})
        return
    stdout.out(str(directory / "handler.py"))
    stderr.print(
        f"next: cleanroom function test {directory} --input input_1=PATH (the handler is "
        "handler.run)",
        markup=False,
    )


@function_app.command("upload")
def function_upload(
    directory: Annotated[
        Path, typer.Argument(help="The function directory (handler.py at its top).")
    ],
) -> None:
    """Pack DIRECTORY deterministically and upload it; print its ID (fs://…) alone.

    The bundle is written to a temporary file and streamed from there: a function of
    any size (up to 1 GiB) is never held in memory."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    profile = current_profile()
    with tempfile.TemporaryDirectory(prefix="cleanroom-pack-") as temporary:
        bundle = Path(temporary) / "function.tar"
        try:
            with spinner(f"packing {directory}…"), bundle.open("wb") as handle:
                expected = pack_into(directory, handle)
        except BundleError as error:  # the directory given is no bundle: exit 2, not 1
            fail(str(error), EXIT_USAGE)
        except OSError as error:
            fail(f"cannot read {directory}: {error.strerror}", EXIT_USAGE)
        size = bundle.stat().st_size
        with failures(), Progress(
            TextColumn("uploading"), BarColumn(), DownloadColumn(), console=stderr,
            transient=True,
        ) as progress:  # fmt: skip
            task = progress.add_task("upload", total=size)

            def sent(done: int) -> None:
                progress.update(task, completed=done)

            upload = with_manager(
                profile, lambda manager: manager.upload_function(bundle, progress=sent)
            )
    if upload.function_id != expected:  # ManagerClient checks it too; a wrong ID is fatal
        fail(f"function-id: the manager stored {upload.function_id}, the bundle is {expected}")
    if json_output():
        print_json({"function_id": expected, "size": size, "created": upload.created})
        return
    stdout.out(expected)
    if not upload.created:
        stderr.print("(already stored)", markup=False)


@function_app.command("download")
def function_download(
    function: Annotated[str, typer.Argument(metavar="FS_ID", help="The function ID, fs://…")],
    directory: Annotated[
        Path, typer.Argument(help="Where to unpack it: must not exist, or be empty.")
    ],
) -> None:
    """Download a function, check it hashes to FS_ID, unpack it into DIRECTORY, list its files.

    Also summarises packages/ (each distribution checked against its RECORD) and
    warns about modules that hide others (for the default runtime, python3.11).
    Names are shown escaped: anything but printable ASCII as \\u… (see cleanroom inspect).
    """
    profile = current_profile()
    function = _function_id(function, "FS_ID")
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        fail(f"{directory} exists and is not a directory", EXIT_USAGE)
    if directory.is_dir() and any(directory.iterdir()):
        fail(f"{directory} is not empty: give a new or empty directory", EXIT_USAGE)
    with (
        failures(),
        _downloaded(profile, function, f"downloading {shown(function)}") as (
            bundle,
            size,
        ),
    ):
        if function_id(bundle) != function:  # ManagerClient checks it too
            fail(f"function-id: the manager sent {function_id(bundle)}, not {shown(function)}")
        if directory.is_dir():
            directory.rmdir()  # empty: unpack renames a fresh directory into its place
        directory.parent.mkdir(parents=True, exist_ok=True)
        found = contents(directory, unpack(bundle, directory), _DEFAULT_RUNTIME)
    if json_output():
        print_json(
            {
                "function_id": function,
                "directory": str(directory),
                "size": size,
                "files": [file.to_json() for file in found.files],
                "vendored": found.vendored.to_json(),
                "warnings": [warning.to_json() for warning in found.warnings],
            }
        )
        return
    _show_files(found.files)
    _show_vendored(found.vendored)
    _show_warnings(found.warnings)
    stderr.print(f"{counted(len(found.files), 'file')} ({size} bytes) unpacked into {directory}")


def _function_id(value: str, option: str) -> str:
    """A function ID as ``fs://ID`` (what upload prints); the bare ID is accepted too."""
    if _FUNCTION_DIGEST.fullmatch(value):
        value = FUNCTION_ID_PREFIX + value
    if not _FUNCTION_ID.fullmatch(value):
        fail(
            f"{option}: expected a function ID, fs:// and 43 characters of base64url "
            f"(what cleanroom function upload prints), got {quoted(value)}",
            EXIT_USAGE,
        )
    return value


# -------------------------------------------------------------------- deploy


def _sql_section(rights: Access, queries: Path | None, schemas: list[str]) -> dict[str, Any] | None:
    """The spec's ``sql`` object from --sql, --schema and the access file's rules."""
    if queries is None:
        if schemas:
            raise AccessFileError("--schema belongs to a SQL room (--sql)")
        return None
    loaded: dict[str, dict[str, Any]] = {}
    for item in schemas:
        input_id, equals, path = item.partition("=")
        if not equals or not input_id or not path:
            raise AccessFileError(f"--schema {item!r}: expected INPUT=schema.yaml")
        if input_id in loaded:
            raise AccessFileError(f"--schema {input_id}: given twice")
        loaded[input_id] = load_schema(Path(path))
    return sql_section(
        rules=dict(rights.rules) if rights.rules is not None else None,
        adhoc=dict(rights.adhoc) if rights.adhoc is not None else None,
        schemas=loaded,
        queries=load_queries(queries),
    )


_RESOURCE_OPTIONS = {
    "resources.memory_mib": "--memory",
    "resources.timeout_s": "--timeout",
    "resources.cpu_s": "--cpu",
    "resources.processes": "--processes",
    "resources.disk_mib": "--disk",
}


def _spec_refusal(error: CheckFailed, sizes: dict[str, str], durations: dict[str, str]) -> str:
    """What deploy says of a spec it built that is not valid: a resource by its option
    (a size or a duration as it was given, its bound in the spec's MiB or seconds)."""
    option = _RESOURCE_OPTIONS.get(str(error.actual)) if error.check == "work-spec" else None
    if option is None:
        return str(error)
    if option in sizes:
        return f"{option} {sizes[option]}: {error.message} MiB (the spec's {error.actual})"
    if option in durations:
        return f"{option} {durations[option]}: {error.message} s (the spec's {error.actual})"
    return f"{option}: {error.message} (the spec's {error.actual})"


def _private(path: str, flags: int) -> int:
    """``open``'s opener of a new file only its owner may read (0600 as it is created)."""
    return os.open(path, flags | os.O_EXCL | os.O_NOFOLLOW, 0o600)


@contextmanager
def _downloaded(profile: Profile, function: str, label: str) -> Iterator[tuple[BinaryIO, int]]:
    """The bundle of ``function`` from the manager and its size, in a private temporary
    file (0600, in a 0700 directory removed after, on an error too), downloaded with a
    progress bar: never held in memory. The client checked that it hashes to
    ``function`` (``function-id``) once its last byte came; the file is open for reading
    from its start."""
    with (
        tempfile.TemporaryDirectory(prefix="cleanroom-function-") as scratch,
        open(Path(scratch) / "function.tar", "w+b", opener=_private) as file,
    ):
        with transfer_progress(label, None) as bar:

            def received(size: int) -> None:
                bar.update(bar.task_ids[0], completed=size)

            size = with_manager(
                profile,
                lambda manager: manager.download_function_to(function, file, progress=received),
            )
        file.seek(0)
        yield file, size


def _check_handler(profile: Profile, spec: WorkSpec) -> tuple[ReviewWarning, ...]:
    """The review's handler check on the function the spec names, before deploying it.

    The bundle is downloaded, as every other party's ``inspect`` will (the manager's
    copy is the one that runs), into a private temporary file (:func:`_downloaded`);
    it must hash to the spec's function ID before anything in it is read
    (``function-id``). A handler whose module the review cannot find is refused here
    (``handler-module``, exit 2) rather than by them. A handler function not seen in
    its module is a warning (``handler-function``), shown on stderr."""
    label = f"checking the handler: downloading {shown(spec.function)}"
    with failures(), _downloaded(profile, spec.function, label) as (bundle, _size):
        try:
            with spinner(f"checking the handler in {shown(spec.function)}…"):
                warnings = check_handler(bundle, spec.handler, spec.runtime, function=spec.function)
        except CheckFailed as error:
            if error.check == "function-id":  # not the bytes downloaded: refused (1)
                raise
            # A handler the review would refuse: unusable input.
            fail(f"{error} (nothing was deployed)", EXIT_USAGE)
    for warning in warnings:
        stderr.print(f"warning: {warning.check}: {warning.message}", markup=False)
    return warnings


def deploy(
    name: Annotated[
        str,
        typer.Option(
            help="The clean room's name: 1-63 of a-z, 0-9 and '-', not starting with '-'."
        ),
    ],
    access: Annotated[
        Path,
        typer.Option(
            help="The access file (YAML): inputs, outputs, runners, logs (and, for "
            "SQL rooms, each owner's rules and who may send ad-hoc queries)."
        ),
    ],
    function: Annotated[
        str | None,
        typer.Option(
            metavar="fs://ID",
            help="The function to run: its ID as cleanroom function upload printed it "
            "(not with --sql).",
            show_default=False,
        ),
    ] = None,
    handler: Annotated[
        str | None, typer.Option(help="The entry point, module.function (not with --sql).")
    ] = None,
    sql: Annotated[
        Path | None,
        typer.Option(
            help="A SQL room: its named queries ('-- query: NAME' blocks; "
            "docs/privacy.md). Needs --schema for every input.",
            show_default=False,
        ),
    ] = None,
    schema: Annotated[
        list[str] | None,
        typer.Option(
            help="A SQL room's input schema, INPUT=schema.yaml (repeatable).", show_default=False
        ),
    ] = None,
    runtime: Annotated[
        str,
        typer.Option(
            help="The runtime the function runs in: python3.11 (the standard library only) "
            "or python3.11-data (also numpy, pandas, polars, pyarrow, duckdb, scikit-learn).",
        ),
    ] = "python3.11",
    memory: Annotated[
        str,
        typer.Option(
            metavar="SIZE",
            help=f"Memory limit of a run: {SIZE_HELP}. A number alone is GiB, and only "
            "below 64 (64 or more needs its unit: function test's number alone is MiB).",
        ),
    ] = "2G",
    timeout: Annotated[
        str, typer.Option(metavar="DURATION", help=f"Time limit of a run: {DURATION_HELP}.")
    ] = duration_text(Resources.model_fields["timeout_s"].default),
    cpu: Annotated[
        str,
        typer.Option(
            metavar="DURATION", help=f"CPU-time limit of a run, all its tasks: {DURATION_HELP}."
        ),
    ] = duration_text(Resources.model_fields["cpu_s"].default),
    processes: Annotated[
        int, typer.Option(help="Task limit of a run (processes and threads).")
    ] = Resources.model_fields["processes"].default,
    disk: Annotated[
        str,
        typer.Option(
            metavar="SIZE",
            help=f"Limit of a run's outputs/ and /tmp together: {SIZE_HELP}; a number "
            "alone is MiB.",
        ),
    ] = f"{Resources.model_fields['disk_mib'].default}M",
    param: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE",
            help="A parameter (repeatable); VALUE is typed: 42, 0.5, true, null, "
            'else a string ("…" forces one).',
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create a clean room: build its spec, deploy it, and pin its Work-ID as approved by you.

    Before deploying, the function is downloaded (into a private temporary file, removed
    after) and its handler checked as every other party's inspect will: a handler whose
    module is not in the function is refused (handler-module, exit 2), as is a Python
    source holding a character a terminal or an editor shows otherwise than Python reads
    it (code-text: every reviewer would refuse it); a handler function not seen defined
    in its module is a warning. Each right granted to a user ID not in your
    contacts (cleanroom contacts) is a warning too, shown as a review shows it (unknown,
    and which contact's ID it looks like); the room is deployed all the same."""
    if _ROOM_NAME.fullmatch(name) is None:
        fail(
            f"--name {shown(name)}: a clean room's name is 1-63 of a-z, 0-9 and '-', not "
            "starting with '-'",
            EXIT_USAGE,
        )
    profile = current_profile()
    contacts = load_contacts(profile.directory)  # a book others may change: refused here
    if function is not None:
        function = _function_id(function, "--function")
    rights = load_access(access)
    parameters = parse_parameters(param or [])
    with failures():
        section = _sql_section(rights, sql, schema or [])
    if section is not None:
        if function is not None or handler is not None:
            fail("a SQL room runs this release's engine: no --function or --handler", EXIT_USAGE)
        if runtime != "python3.11" or parameters:
            fail("a SQL room has no --runtime or --param (queries take parameters)", EXIT_USAGE)
        function, handler, runtime = engine_function_id(), SQL_HANDLER, SQL_RUNTIME
        with failures(), spinner("uploading the SQL engine…"):
            with_manager(profile, lambda manager: manager.upload_function(engine_bundle()))
    elif function is None or handler is None:
        missing = " and ".join(
            option
            for option, value in (("--function", function), ("--handler", handler))
            if value is None
        )
        fail(
            f"deploy needs {missing}: --function fs://ID (as `cleanroom function upload` "
            "printed it) and --handler module.function; or, for a SQL room, --sql and "
            "--schema",
            EXIT_USAGE,
        )
    elif rights.rules is not None or rights.adhoc is not None:
        fail(f"{access}: rules and adhoc belong to a SQL room (--sql)", EXIT_USAGE)
    memory_limit = memory_mib(memory, "--memory", bare="GiB")
    disk_limit = disk_mib(disk, "--disk")
    timeout_s, cpu_s = parse_duration(timeout, "--timeout"), parse_duration(cpu, "--cpu")
    with failures():
        user_id = profile.user_id
    try:
        spec = build_spec(
            sql=section,
            name=name,
            function_id=function,
            handler=handler,
            access=rights,
            deployer_user_id=user_id,
            runtime=runtime,
            memory_mib=memory_limit,
            timeout_s=timeout_s,
            cpu_s=cpu_s,
            processes=processes,
            disk_mib=disk_limit,
            parameters=parameters,
        )
        if spec.sql is not None:
            # Every named query parses and passes every owner's rule, or nothing deploys.
            check_spec_queries(spec)
    except CheckFailed as error:  # the spec built from the user's files: exit 2, not 1
        sizes, durations = (
            {"--memory": memory, "--disk": disk},
            {"--timeout": timeout, "--cpu": cpu},
        )
        fail(_spec_refusal(error, sizes, durations), EXIT_USAGE)
    warnings = _check_handler(profile, spec) if spec.sql is None else ()
    unknown = _warn_unknown_granted(spec, contacts, user_id)
    with failures(), spinner(f"deploying {name}…"):
        try:
            room = with_manager(profile, lambda manager: manager.deploy(spec))
        except ServerError as error:
            if error.status != 409 or error.check != "room-name":
                raise
            # The name is the user's input: as unusable as a malformed one (exit 2). The
            # manager's word is believed only for the exit code: it deploys or not anyway.
            fail(
                f"--name {name}: {error} (nothing was deployed or pinned: choose another "
                f"--name, or delete that room first: {hint(f'delete {name}')}; "
                f"{hint('rooms')} lists the rooms you can see)",
                EXIT_USAGE,
            )
    # The pin is of the spec built here, never of what the manager answered.
    if room.work_id != spec.work_id or WorkSpec.parse(room.spec).work_id != spec.work_id:
        fail(f"work-id: the manager deployed {room.work_id}, not the spec sent ({spec.work_id})")
    if room.state == "failed":
        fail(f"clean room {name} failed to deploy: {shown(room.reason or 'no reason given')}")
    with failures():
        profile.approve(spec.name, spec.work_id, spec.function, project=room.project)
        # What was approved, to compare a later version with (inspect --against approved).
        profile.remember_review(spec.work_id, spec_record(spec))
    if json_output():
        print_json(
            {
                "name": spec.name,
                "work_id": spec.work_id,
                "function_id": spec.function,  # as inspect --json and function upload
                "function": spec.function,  # its first name, kept for scripts that read it
                "compute_url": room.compute_url,
                "state": room.state,
                "approved": True,
                "warnings": [warning.to_json() for warning in warnings],
                "participants": [
                    {**right.to_json(), "name": contacts.name_of(right.user_id)}
                    for right in participants(spec, user_id)
                ],
                "unknown_rights": unknown,
            }
        )
    else:
        _print(f"clean room:     {spec.name}")
        _print(f"Work-ID:        {spec.work_id}")
        _print(f"function:       {spec.function}")
        _print(f"compute server: {shown(room.compute_url)}")
        _print(f"state:          {shown(room.state)}")
    stderr.print(
        f"approved by you. Every other party runs: cleanroom inspect {spec.name}, "
        f"then cleanroom approve {spec.name}",
        markup=False,
    )


# -------------------------------------------------------------------- inspect, approve


PROJECT_HELP = (
    "The project whose room NAME is, where rooms of several projects you take part in "
    "have that name. Default: the project of the room NAME you approved, if any."
)


def _review(
    profile: Profile, name: str, source: Path | None = None, project: str | None = None
) -> Review:
    """The review of room ``name`` of ``project``, else of the project of the room of that
    name the user approved (another project's room of the name is another room)."""
    approval = profile.approval(name)
    if project is None and approval is not None:
        project = approval.project

    room = with_manager(profile, lambda manager: manager.room(name, project))
    # Download the function the spec names (what the Work-ID covers), not the manager's
    # separate field for it.
    function = WorkSpec.parse(room.spec).function
    with _downloaded(profile, function, f"downloading {shown(function)}") as (bundle, _size):
        return review(room, bundle, you=profile.user_id, source=source)


def _where(handler: HandlerLocation) -> str:
    """The handler's file, as the Worker's import finds it, and what runs before it."""
    where = shown(handler.path)
    if handler.kind == "extension":
        where += " (a compiled extension module: its source is not in the function)"
    if handler.runs_first:
        where += f"; runs first: {', '.join(shown(path) for path in handler.runs_first)}"
    return where


def _show_warnings(warnings: Sequence[ReviewWarning]) -> None:
    if warnings:
        _print(f"warnings ({len(warnings)}):")
        for warning in warnings:
            _print(f"  {warning.message}")


def _show_vendored(vendored: Vendored) -> None:
    """The distributions under packages/, each checked against its RECORD."""
    if not vendored.distributions and not vendored.unrecorded:
        _print("vendored packages: none")
        return
    _print(f"vendored packages ({len(vendored.distributions)}):")
    for item in vendored.distributions:
        if not item.has_record:
            state = "no RECORD"
        elif item.verified:
            state = "as its own RECORD says"
        else:
            state = f"RECORD: {len(item.differ)} differ, {len(item.missing)} missing"
        _print(
            f"  {shown(item.name)} {shown(item.version)}: "
            f"{counted(len(item.files), 'file')}, {state}, "
            f"digest {item.digest[:16]}"
        )
    if vendored.unrecorded:
        _print(f"  {counted(len(vendored.unrecorded), 'file')} under packages/ in no RECORD")
    if vendored.distributions:
        _print(
            "  (a RECORD is written by whoever built the function: to compare with the "
            "published wheels, cleanroom inspect ROOM --wheels DIR)"
        )


def _published(result: Review, wheels: Path) -> tuple[WheelComparison, ...]:
    """The room's vendored packages against the wheels in ``wheels``."""
    files = {file.path: file for file in result.files}
    try:
        return compare_with_wheels(result.contents.vendored, files, wheels)
    except (OSError, zipfile.BadZipFile) as error:
        fail(f"--wheels: a wheel in {shown(str(wheels))} cannot be read: {error}", EXIT_USAGE)


def _show_published(published: Sequence[WheelComparison], wheels: Path | None) -> None:
    _print(f"vendored packages against the wheels in {shown(str(wheels))}:")
    if not published:
        _print("  none vendored")
    for item in published:
        _print(f"  {item.describe()}")


def _show_files(files: Sequence[BundleFile]) -> None:
    _print(f"files ({len(files)}):")
    for file in files:
        _print(f"  {file.sha256}  {file.size:>10}  {shown(file.path)}")


def _approval_line(result: Review, approval: Approval | None) -> str:
    if approval is None:
        return "not approved by you"
    if approval.work_id == result.work_id:
        return f"approved by you on {_when(approval.approved_at)}"
    return (
        f"NOT the Work-ID you approved ({approval.work_id} on {_when(approval.approved_at)}): "
        "the clean room changed"
    )


def _holders(spec: WorkSpec) -> list[str]:
    """The user ID of each right the spec grants: its participants', then each ad-hoc
    runner's (who may send any query, under every rule, and spend the rules' ε)."""
    adhoc = spec.sql.adhoc.runners if spec.sql is not None and spec.sql.adhoc else []
    return [right.user_id for right in participants(spec)] + list(adhoc)


def _unknown_rights(holders: Sequence[str], contacts: Contacts, you: str) -> int:
    """How many rights go to a user ID neither named in the book nor yours."""
    return len(contacts.unknown(holders, you))


def _warn_unknown(holders: Sequence[str], contacts: Contacts, you: str) -> None:
    unknown = _unknown_rights(holders, contacts, you)
    if unknown:
        stderr.print(
            f"warning: {unknown} of {len(holders)} rights go to user IDs not in "
            "your contacts (shown as unknown): an ID can be made to begin and end like "
            "another's. Check each with its owner out of band (they run cleanroom whoami), "
            f"then: {hint('contacts add NAME -- USER_ID')}",
            markup=False,
        )


def _what(right: Participant) -> str:
    """What a right lets its user do, as the review says it."""
    return {
        "input": f"uploads {right.object_id}",
        "output": f"reads {right.object_id}",
        "runner": "starts the run",
    }[right.role]


def _warn_unknown_granted(spec: WorkSpec, contacts: Contacts, you: str) -> int:
    """Before a deploy: each right the spec grants to a user ID the deployer has not
    named (nor their own), as every reviewer's review will show it, then the review's
    warning. The deploy goes on: the names are the deployer's, the Work-ID binds the IDs.
    How many such rights there are."""
    granted = [(right.user_id, _what(right)) for right in participants(spec, you)]
    if spec.sql is not None and spec.sql.adhoc is not None:
        granted += [(runner, "sends ad-hoc queries") for runner in spec.sql.adhoc.runners]
    for user_id, what in granted:
        if user_id != you and contacts.name_of(user_id) is None:
            stderr.print(f"warning: {contacts.label(user_id, you)}  {what}", markup=False)
    _warn_unknown(_holders(spec), contacts, you)
    return _unknown_rights(_holders(spec), contacts, you)


def _with_names(document: dict[str, Any], result: Review, contacts: Contacts, you: str) -> None:
    """The review's JSON, each right's user with the reviewer's name for it (or null)."""
    for entry in document["participants"]:
        entry["name"] = contacts.name_of(entry["user_id"])
    document["unknown_rights"] = _unknown_rights(_holders(result.spec), contacts, you)


def _show(result: Review, approval: Approval | None, contacts: Contacts, you: str) -> None:
    spec, room = result.spec, result.room
    _print(f"clean room:     {spec.name} (project {shown(room.project)})")
    _print(f"deployed by:    client {shown(room.deployer)} on {_when(room.created)}")
    state = shown(room.state) + (f" ({shown(room.reason)})" if room.reason else "")
    _print(f"state:          {state}")
    _print(f"compute server: {shown(room.compute_url)}")
    _print(f"Work-ID:        {result.work_id} (recomputed from the spec)")
    _print(f"function:       {result.function_id} (recomputed from the bundle)")
    _print(f"handler:        {spec.handler} in {_where(result.handler)}")
    _print(f"runtime:        {spec.runtime}")
    limits = ", ".join(f"{label} {value}" for label, value in resources(spec.resources))
    _print(f"resources:      {limits} (each run)")
    logs = f"to {spec.logs} (its recipient reads them)" if spec.logs else "nowhere"
    _print(f"logs:           {logs}")
    _print(f"nonce:          {spec.nonce}")
    _print("parameters:" + ("" if spec.parameters else "     none"))
    for key, value in sorted(spec.parameters.items()):
        _print(f"  {quoted(key)} = {parameter_value(value)}")
    _print("rights:")
    for right in result.participants:
        user = contacts.label(right.user_id, you)
        _print(f"  {user}  {_what(right)}" + ("  (you)" if right.is_you else ""))
    if spec.sql is not None:
        _show_sql(spec, lambda user_id: contacts.who(user_id, you))
    else:
        _show_files(result.files)
        _show_vendored(result.contents.vendored)
    _show_warnings(result.warnings)
    _print(f"approval:       {_approval_line(result, approval)}")


def _query_lines(text: str) -> list[str]:
    """``text`` in the lines the engine's SQL parser reads: it ends a ``--`` comment at
    LF or CR only, so no other character may start a line in the review (``splitlines``
    also breaks at VT, FF, NEL, U+2028…, and showed code inside a comment as a line of
    its own); :func:`shown` escapes those where they stand."""
    lines = re.split(r"\r\n|\r|\n", text)
    return lines[:-1] if len(lines) > 1 and not lines[-1] else lines  # as splitlines


def _parsed(text: str) -> str:
    """The query as the engine's parser reads it, comments left out, on one line: where
    the text and a reader part (a nested ``/* … */``, a quoting rule), this says which
    code the engine starts from. The Worker plans this, under every owner's rule."""
    try:
        return parse_query(text).sql(dialect=SQL_DIALECT, comments=False)
    except CheckFailed as error:
        return f"does not parse ({error.message})"


def _show_sql(spec: WorkSpec, who: Callable[[str], str]) -> None:
    """A SQL room's schemas, every owner's rule and every query, escaped as shown."""
    assert spec.sql is not None
    _print("SQL engine:     this release's (the function ID above is its bundle)")
    for input_id, schema in sorted(spec.sql.schemas.items()):
        columns = ", ".join(
            f"{shown(c.name)} {c.type}{'' if c.nullable else ' not null'}" for c in schema.columns
        )
        _print(f"schema {input_id} ({schema.format}): {columns}")
    for input_id, rule in sorted(spec.sql.rules.items()):
        owner = spec.inputs[input_id]
        _print(f"rule of {input_id} (set by {who(owner)}): {rule.kind}")
        document = rule.model_dump(
            mode="json", exclude_none=True,
            exclude={"kind", "allowed_queries", "report_suppressed"},
        )  # fmt: skip
        for key, value in document.items():
            if value not in ([], {}):
                # As the canonical JSON the Work-ID hashes and the room reads (an ε of
                # 1e-7, not 1e-07; a budget of 2, not 2.0), exact to its last digit.
                _print(f"  {key}: {shown(parameter_value(value))}")
        if rule.threshold is not None or rule.report_suppressed is not None:
            # Shown whether set or not: absent withholds the count, and a review that
            # showed nothing for it read alike for both.
            _print("  report_suppressed: " + (
                "true (the runner learns how many groups fell under the threshold)"
                if rule.report_suppressed
                else "false (how many groups fell under the threshold is withheld)"
            ))  # fmt: skip
        if rule.kind == "custom":
            # Absent means every named query, [] none: both were left out of the review,
            # which showed the two rules alike.
            allowed = rule.allowed_queries
            _print("  allowed_queries: " + (
                "every named query (none listed)" if allowed is None
                else ", ".join(allowed) if allowed else "none (no query may read it)"
            ))  # fmt: skip
    for name, query in sorted(spec.sql.queries.items()):
        # Exact (the canonical JSON the room reads): rounded to 6 digits, ε 0.10000001
        # read as 0.1, under another Work-ID.
        extra = f", ε {parameter_value(query.epsilon)}" if query.epsilon is not None else ""
        parameters = ", ".join(f"{k} {t}" for k, t in sorted(query.parameters.items()))
        _print(f"query {name} → {query.output} ({query.format}{extra}); parameters: "
               f"{parameters or 'none'}")  # fmt: skip
        for line in _query_lines(query.text):
            _print(f"  | {shown(line)}")
        _print(f"  parsed as: {shown(_parsed(query.text))}")
    adhoc = spec.sql.adhoc
    if adhoc is None:
        _print("ad-hoc queries: none (the queries above only)")
    else:
        runners = ", ".join(who(runner) for runner in adhoc.runners)
        _print(f"ad-hoc queries: by {runners} → {adhoc.output} ({adhoc.format}), under every rule")


def _profile_option(profile: Profile) -> str | None:
    """The ``--profile`` to repeat in a command printed for the user (None: the default)."""
    return None if profile.name == DEFAULT_PROFILE else profile.name


def _show_changes_since(
    profile: Profile, inspected: Inspection, result: Review, contacts: Contacts
) -> None:
    """What changed since the inspected Work-ID, from the profile's record (digests only)."""
    record = profile.remembered_review(inspected.work_id)
    if record is None:
        return
    before = Side.of_record(f"Work-ID {inspected.work_id} (inspected)", inspected.work_id, record)
    now = Side.of_review(f"Work-ID {result.work_id}", result)
    for line in compare(before, now, _names(contacts, profile.user_id)).lines():
        stderr.print(line)


def _changed(name: str, inspected: Inspection, result: Review) -> str:
    return (
        f"clean room {name} CHANGED since you inspected it on {_when(inspected.inspected_at)}: "
        f"Work-ID then {inspected.work_id}, now {result.work_id}"
    )


def _earlier(profile: Profile, name: str, against: str, result: Review, directory: Path) -> Side:
    """The version ``--against`` names: a function ID, ``approved``, or a reviewed Work-ID."""
    if against.startswith(FUNCTION_ID_PREFIX):
        if not _FUNCTION_ID.fullmatch(against):
            fail(
                f"--against {shown(against)} is not a function ID (fs:// and 43 characters)",
                EXIT_USAGE,
            )
        with _downloaded(profile, against, f"downloading {shown(against)}") as (bundle, _size):
            if function_id(bundle) != against:  # ManagerClient checks it too
                fail(f"function-id: the manager sent {function_id(bundle)}, not {shown(against)}")
            found = contents(directory, unpack(bundle, directory), result.spec.runtime)
        files = {file.path: file for file in found.files}
        return Side(against, None, against, files, found.vendored, directory)
    if against == "approved":
        approval = profile.approval(name)
        if approval is None:
            fail(f"you have not approved clean room {name}: nothing to compare with", EXIT_USAGE)
        work_id = approval.work_id
        label = f"Work-ID {work_id} (approved by you on {_when(approval.approved_at)})"
    else:
        work_id, label = against, f"Work-ID {shown(against)}"
    record = profile.remembered_review(work_id)
    if record is None:
        fail(
            f"this profile has no record of Work-ID {shown(work_id)}: give one you inspected, "
            "approved or deployed, or a function ID fs://…",
            EXIT_USAGE,
        )
    earlier = str(record.get("function_id"))
    try:
        with _downloaded(profile, earlier, f"downloading {shown(earlier)}") as (bundle, _size):
            if function_id(bundle) != earlier:  # ManagerClient checks it too
                fail(f"function-id: the manager sent {function_id(bundle)}, not {shown(earlier)}")
            unpack(bundle, directory)
    except ServerError as error:
        if error.status != HTTPStatus.NOT_FOUND:
            # A refused token (after the client's own renewal and with_manager's new
            # login), a 5xx, a manager out of reach: not a function gone, which would
            # hide the code diff behind a note. The error, as failures() shows it.
            raise ServerError(
                error.who,
                error.status,
                error.problem,
                message=f"{error} (downloading the earlier function {shown(earlier)} to "
                "compare with: only a 404, the function gone from the manager, is compared "
                "by the digests this profile recorded)",
            ) from error
        gone = Side.of_record(label, work_id, record)  # gone from the manager: digests only
        return dataclasses.replace(gone, missing=f"the manager answered 404 for {shown(earlier)}")
    return Side.of_record(label, work_id, record, directory)


def _show_changes(changes: Changes) -> None:
    for line in changes.lines():
        _print(line)


def inspect(
    name: Annotated[str, typer.Argument(help="The clean room's name.")],
    source: Annotated[
        Path | None,
        typer.Option(help="Also unpack the function here to read it (must not exist)."),
    ] = None,
    project: Annotated[
        str | None,
        typer.Option("--project", metavar="PROJECT", help=PROJECT_HELP, show_default=False),
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            metavar="fs://ID|approved|WORK_ID",
            help="Also show what changed since: another function (fs://…), the Work-ID you "
            "approved for this room (approved), or a Work-ID you inspected before: spec, "
            "parameters, rights, files, packages, and the code line by line.",
            show_default=False,
        ),
    ] = None,
    wheels: Annotated[
        Path | None,
        typer.Option(
            "--wheels",
            metavar="DIR",
            help="Also compare each package vendored under packages/ with the published "
            "wheel of its name and version in DIR, file by file (get them with: pip download "
            "NAME==VERSION --no-deps --only-binary :all: -d DIR). A package's RECORD alone "
            "cannot tell: whoever built the function wrote it.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show what a clean room is, recomputed from its spec and function bytes.

    Names the file the Worker will import as the handler's module, warns about
    modules hidden by others and parameter keys that read alike, summarises
    packages/, and prints the command that approves exactly this Work-ID. Text
    from the deployer is shown escaped: anything but printable ASCII as \\u…, a
    backslash as \\\\.

    With --against, whatever changed and could not be compared (the earlier
    function's bytes gone from the manager, a diff cut at 2,000 lines) is listed
    under NOT compared, and the command exits 1 after the review.
    """
    if wheels is not None and not wheels.is_dir():
        fail(f"--wheels {shown(str(wheels))} is not a directory", EXIT_USAGE)
    profile = current_profile()
    contacts = load_contacts(profile.directory)
    with failures(), tempfile.TemporaryDirectory(prefix="cleanroom-inspect-") as scratch:
        here = source if source is not None else Path(scratch) / "now" if against else None
        result = _review(profile, name, here, project)
        published = None
        if wheels is not None:
            if result.spec.sql is not None:
                fail("--wheels: a SQL room has no function, so no vendored packages", EXIT_USAGE)
            published = _published(result, wheels)
        approval = profile.approval(name)
        changes = None
        if against is not None:
            before = _earlier(profile, name, against, result, Path(scratch) / "before")
            now = Side.of_review(f"Work-ID {result.work_id} (now)", result, here)
            changes = compare(before, now, _names(contacts, profile.user_id))
        inspected = record_inspection(profile, result)
    command = result.approve_command(_profile_option(profile))
    if json_output(as_json):
        document = result.to_json()
        _with_names(document, result, contacts, profile.user_id)
        document["approved"] = approval is not None and approval.work_id == result.work_id
        document["approval"] = approval.to_json() if approval is not None else None
        document["approve_command"] = command
        if changes is not None:
            document["changes"] = changes.to_json()
        if published is not None:
            document["wheels"] = [item.to_json() for item in published]
        print_json(document)
        _fail_incomplete(changes)
        return
    _show(result, approval, contacts, profile.user_id)
    if published is not None:
        _show_published(published, wheels)
    if changes is not None:
        _show_changes(changes)
    if inspected is not None and inspected.work_id != result.work_id:
        stderr.print(_changed(name, inspected, result))
    if not result.you_participate:
        stderr.print("note: you have no right in this clean room")
    _warn_unknown(_holders(result.spec), contacts, profile.user_id)
    _print(f"to approve exactly this: {command}")
    _fail_incomplete(changes)


def _fail_incomplete(changes: Changes | None) -> None:
    """Exit 1 when ``inspect --against`` could not compare every change: what was not
    compared is listed above (``not_compared``), and the review is not a diff of it."""
    if changes is None or changes.complete:
        return
    count = len(changes.not_compared)
    fail(
        f"inspect --against: {count} change{'s' if count != 1 else ''} not compared (listed "
        "under NOT compared, with why): read that code in full (inspect --source DIR) "
        "before approving"
    )


def approve(
    name: Annotated[str, typer.Argument(help="The clean room's name.")],
    work_id: Annotated[
        str | None,
        typer.Option(
            "--work-id",
            help="Approve only if the clean room still has this Work-ID (the one cleanroom "
            "inspect showed you); then nothing is asked.",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            help="Approve without asking (after showing the review); refused if the clean "
            "room changed since you last inspected it. Scripts (no terminal) need this or "
            "--work-id.",
        ),
    ] = False,
    project: Annotated[
        str | None,
        typer.Option("--project", metavar="PROJECT", help=PROJECT_HELP, show_default=False),
    ] = None,
) -> None:
    """Review a clean room and pin its Work-ID: only then will you attest to it or send data.

    With --work-id, only that Work-ID is pinned: a clean room redeployed since you
    inspected it is refused (exit 1) and nothing is pinned. Without it, a Work-ID
    other than the one you last inspected is said plainly before the question.
    """
    profile = current_profile()
    if not yes and work_id is None and not sys.stdin.isatty():
        fail(
            f"approve asks before it pins a Work-ID, and there is no terminal to ask on: pass "
            f"--work-id ID (what cleanroom inspect printed) or --yes, e.g. "
            f"{hint(f'approve {name} --yes')}",
            EXIT_USAGE,
        )
    as_json = json_output()
    contacts = load_contacts(profile.directory)
    with failures():
        result = _review(profile, name, project=project)
        approval = profile.approval(name)
        inspected = record_inspection(profile, result)
    if not as_json:
        _show(result, approval, contacts, profile.user_id)
    if work_id is not None and work_id != result.work_id:
        with failures():
            approve_review(profile, result, work_id)  # refuses: work-id-reviewed
    # The Work-ID is approved, not names.
    _warn_unknown(_holders(result.spec), contacts, profile.user_id)
    if approval is not None and approval.work_id == result.work_id:
        stderr.print(f"clean room {name} is already approved with this Work-ID")
        if as_json:
            print_json(_approved_json(result, contacts, profile.user_id, already=True))
        return
    if not result.you_participate:
        stderr.print("note: you have no right in this clean room")
    if result.room.state in ("failed", "deleted"):
        stderr.print(f"warning: the clean room is {shown(result.room.state)}")
    if work_id is None:
        if inspected is not None and inspected.work_id != result.work_id:
            stderr.print(_changed(name, inspected, result), style="bold")
            with failures():
                _show_changes_since(profile, inspected, result, contacts)
            if yes:
                fail(
                    f"not approved: clean room {name} is not what you inspected; review it "
                    f"above, then: {result.approve_command(_profile_option(profile))}"
                )
        if not yes and not typer.confirm(
            f"Approve Work-ID {result.work_id} of clean room {name}?", default=False
        ):
            raise typer.Abort()
    with failures():
        approve_review(profile, result, work_id or result.work_id)
    if as_json:
        print_json(_approved_json(result, contacts, profile.user_id, already=False))
        return
    _print(f"approved: clean room {name}, Work-ID {result.work_id}")


def _approved_json(
    result: Review, contacts: Contacts, you: str, *, already: bool
) -> dict[str, object]:
    review = result.to_json()
    _with_names(review, result, contacts, you)
    return {
        "name": result.room.name,
        "work_id": result.work_id,
        "approved": True,
        "already_approved": already,
        "review": review,
    }


def _names(contacts: Contacts, you: str) -> Names:
    """The rights' users as the review shows them, and their names for ``--json``."""
    return Names(lambda user_id: contacts.who(user_id, you), contacts.name_of, you)


__all__ = ["approve", "deploy", "function_app", "inspect"]
