"""The user's commands against the management server, and their local profile.

``configure``, ``whoami``, ``login``, ``function upload|download``, ``deploy``,
``inspect`` and ``approve``. The profile (``--profile``, ``$CLEANROOM_PROFILE``,
else ``default``) holds the user key, the attestation policy and the approved
Work-IDs; see :mod:`cleanroom.client.profile`. Nothing the manager answers is
shown unchecked: function IDs and Work-IDs are recomputed from the bytes.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.status import Status
from rich.text import Text

from cleanroom.cli.common import (
    EXIT_REJECTED,
    EXIT_USAGE,
    current_profile,
    fail,
    profile_name,
    read_file,
    stderr,
    stdout,
)
from cleanroom.client.access import (
    AccessFileError,
    ParameterError,
    build_spec,
    load_access,
    parse_parameters,
)
from cleanroom.client.changes import Changes, Side, compare
from cleanroom.client.collateral import COLLATERAL_FROM, CollateralFrom
from cleanroom.client.errors import ServerError
from cleanroom.client.imports import HandlerLocation
from cleanroom.client.profile import (
    DEFAULT_PROFILE,
    Approval,
    Inspection,
    Profile,
    ProfileError,
)
from cleanroom.client.review import (
    BundleFile,
    Review,
    ReviewWarning,
    approve_review,
    contents,
    record_inspection,
    review,
    spec_record,
)
from cleanroom.client.vendored import Vendored
from cleanroom.errors import CheckFailed
from cleanroom.protocol.bundle import (
    FUNCTION_ID_PREFIX,
    BundleError,
    function_id,
    pack_into,
    unpack,
)
from cleanroom.protocol.spec import WorkSpec
from cleanroom.protocol.text import quoted, shown

if TYPE_CHECKING:
    from cleanroom.client.manager import ManagerClient, Room

T = TypeVar("T")

_FUNCTION_ID = re.compile(r"^fs://[A-Za-z0-9_-]{43}$")

# The runtime a function download is read for (module shadowing): a spec's default.
_DEFAULT_RUNTIME: str = WorkSpec.model_fields["runtime"].default

function_app = typer.Typer(
    help="Function bundles: upload a function directory, download one to review it.",
    no_args_is_help=True,
)

SIMULATOR_WARNING = (
    "WARNING: this profile trusts a SIMULATED SGX root. Quotes that chain to it prove "
    "nothing: whoever runs the simulator can read and change everything in its "
    "enclaves. Never use this profile for real data."
)


# -------------------------------------------------------------------- helpers


@contextmanager
def _failures() -> Iterator[None]:
    """Every expected failure as one line: refusals exit 1, unusable input exits 2."""
    try:
        yield
    except (ProfileError, AccessFileError, ParameterError) as error:
        fail(str(error), EXIT_USAGE)
    except ServerError as error:
        # _with_manager already retried with a fresh login: the credentials are refused.
        hint = (
            " (check the client id and secret: cleanroom configure)" if error.status == 401 else ""
        )
        fail(f"{error}{hint}", EXIT_REJECTED)
    except CheckFailed as error:
        fail(str(error), EXIT_REJECTED)


def _with_manager(profile: Profile, action: Callable[[ManagerClient], T]) -> T:
    """Run ``action`` with the profile's manager; log in again once if the token is refused."""
    with profile.manager() as manager:
        try:
            return action(manager)
        except ServerError as error:
            if error.status != 401:
                raise
    profile.forget_token()  # e.g. the manager restarted with new signing keys
    with profile.login() as manager:
        return action(manager)


def _print(text: str) -> None:
    stdout.print(text)


def _status(text: str) -> Status:
    """A spinner on stderr; its text is never read as markup."""
    return stderr.status(Text(text))


def _value(value: object) -> str:
    """A parameter's value: a string quoted and escaped, anything else as JSON (ASCII)."""
    return quoted(value) if isinstance(value, str) else json.dumps(value)


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _warn_simulated(profile: Profile) -> None:
    if profile.simulated:
        stderr.print(SIMULATOR_WARNING, style="bold red")


# -------------------------------------------------------------------- configure


def configure(
    manager_url: Annotated[
        str | None,
        typer.Option(
            help="The management server, e.g. https://manager.example.", show_default=False
        ),
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(help="Your client ID at the manager.", show_default=False)
    ] = None,
    client_secret: Annotated[
        str | None,
        typer.Option(
            help="Your client secret (prompted, hidden, if not given).", show_default=False
        ),
    ] = None,
    project: Annotated[
        str | None,
        typer.Option(help="Your project (learned at login if not given).", show_default=False),
    ] = None,
    attester_mrenclave: Annotated[
        list[str] | None,
        typer.Option(
            help="Accepted Attester MRENCLAVE, 64 hex digits (repeatable) "
            "(default: this release's).",
            show_default=False,
        ),
    ] = None,
    attester_mrsigner: Annotated[
        str | None,
        typer.Option(
            help="Expected Attester MRSIGNER, 64 hex digits (default: this release's).",
            show_default=False,
        ),
    ] = None,
    worker_mrenclave: Annotated[
        list[str] | None,
        typer.Option(
            help="Accepted Worker MRENCLAVE, 64 hex digits (repeatable) (default: this release's).",
            show_default=False,
        ),
    ] = None,
    accept_tcb: Annotated[
        list[str] | None,
        typer.Option(
            help="Accepted TCB status (repeatable) (default: UpToDate, SWHardeningNeeded).",
            show_default=False,
        ),
    ] = None,
    accept_advisory: Annotated[
        list[str] | None,
        typer.Option(
            help="Accepted advisory ID (repeatable); given once, any other advisory is refused.",
            show_default=False,
        ),
    ] = None,
    isv_prod_id: Annotated[
        int | None,
        typer.Option(
            help="Expected Attester ISVPRODID (default: this release's).", show_default=False
        ),
    ] = None,
    min_isv_svn: Annotated[
        int | None,
        typer.Option(help="Minimum Attester ISVSVN (default: this release's).", show_default=False),
    ] = None,
    trust_simulator: Annotated[
        Path | None,
        typer.Option(
            help="INSECURE: trust this simulated platform's root certificate (PEM) instead "
            "of Intel's production root. For development only: it protects nothing.",
            show_default=False,
        ),
    ] = None,
    pccs_url: Annotated[
        str | None,
        typer.Option(
            help="Your own PCCS (API v4), e.g. your cloud's: where collateral comes from "
            "when the compute server sends none or expired collateral.",
            show_default=False,
        ),
    ] = None,
    collateral_from: Annotated[
        str,
        typer.Option(
            help="'server': the compute server's collateral, your PCCS as the fallback; "
            "'pccs': only your own PCCS (needs --pccs-url), never the server's.",
        ),
    ] = "server",
    allow_protocol_v1: Annotated[
        bool,
        typer.Option(
            "--allow-protocol-v1",
            help="Allow protocol v1 (two round trips, ECDH P-256 only: no post-quantum key "
            "exchange) with compute servers that offer no v2. Off by default: a Controller "
            "can pretend to offer v1 only.",
        ),
    ] = False,
    new_key: Annotated[
        bool,
        typer.Option(
            "--new-key",
            help="Replace your user key: you become a new user_id, and rooms naming the old "
            "one no longer know you.",
        ),
    ] = False,
) -> None:
    """Create or update your profile: manager, credentials, user key, what you trust.

    Policy options that are not given take their defaults (this release's
    measurements, Intel's production root), so re-running configure never keeps a
    weaker setting by accident. Manager URL, client ID, secret and project are kept
    from the existing profile unless given.
    """
    name = profile_name()
    existing: Profile | None
    try:
        existing = Profile.load(name)
    except ProfileError:
        existing = None  # configure is how a missing or broken profile is repaired
    if manager_url is None:
        manager_url = existing.config.manager_url if existing else typer.prompt("Manager URL")
    if client_id is None:
        client_id = existing.config.client_id if existing else typer.prompt("Client ID")
    if client_secret is None:
        if existing is not None and existing.config.client_id == client_id:
            try:
                client_secret = existing.client_secret
            except ProfileError:
                client_secret = None
        if client_secret is None:
            client_secret = typer.prompt("Client secret", hide_input=True)
    if project is None and existing is not None and existing.config.client_id == client_id:
        project = existing.config.project
    root = read_file(trust_simulator, "simulator root") if trust_simulator is not None else None
    with _failures():
        profile = Profile.create(
            name,
            manager_url=manager_url,
            client_id=client_id,
            client_secret=client_secret,
            project=project,
            attester_mrenclaves=attester_mrenclave or None,
            attester_mrsigner=attester_mrsigner,
            worker_mrenclaves=worker_mrenclave or None,
            accepted_tcb_statuses=accept_tcb or None,
            accepted_advisories=accept_advisory or None,
            isv_prod_id=isv_prod_id,
            min_isv_svn=min_isv_svn,
            simulator_root=root,
            pccs_url=pccs_url,
            collateral_from=_collateral_from(collateral_from),
            allow_protocol_v1=allow_protocol_v1,
            new_key=new_key,
        )
        config = profile.config
        _print(f"profile: {profile.name} in {profile.directory}")
        _print(f"user_id: {profile.user_id}")
        _print(f"manager: {config.manager_url} as client {config.client_id}")
        _print(f"Attester MRENCLAVE: {', '.join(config.attester_mrenclaves)}")
        _print(f"Attester MRSIGNER:  {config.attester_mrsigner}")
        _print(f"Worker MRENCLAVE:   {', '.join(config.worker_mrenclaves)}")
        anchor = profile.trust_anchor()
        _print(f"trust anchor: {anchor.name} (SHA-256 {anchor.fingerprint})")
        if config.collateral_from == "pccs":
            _print(f"collateral: only from your PCCS {config.pccs_url}")
        elif config.pccs_url is not None:
            _print(f"collateral: the compute server's, else your PCCS {config.pccs_url}")
        else:
            _print("collateral: the compute server's (no PCCS of your own)")
        if config.allow_protocol_v1:
            _print("protocol: v2, and v1 (no post-quantum key exchange) where a server has no v2")
    _warn_simulated(profile)
    if new_key:
        stderr.print("new user key: run cleanroom login to register it", markup=False)
    else:
        stderr.print("next: cleanroom login", markup=False)


def _collateral_from(value: str) -> CollateralFrom:
    for allowed in COLLATERAL_FROM:
        if value == allowed:
            return allowed
    fail(
        f"--collateral-from must be one of {', '.join(COLLATERAL_FROM)}, got {value!r}", EXIT_USAGE
    )


# -------------------------------------------------------------------- whoami, login


def whoami(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Print your user_id (the hash of your public key); no network needed."""
    profile = current_profile()
    with _failures():
        user_id = profile.user_id
    if as_json:
        stdout.out(
            json.dumps(
                {
                    "user_id": user_id,
                    "client_id": profile.config.client_id,
                    "project": profile.config.project,
                    "manager_url": profile.config.manager_url,
                    "profile": profile.name,
                    "profile_dir": str(profile.directory),
                    "simulated": profile.simulated,
                },
                indent=2,
            )
        )
    else:
        stdout.out(user_id)


def login() -> None:
    """Log in to the manager, register your user key with it, and print who you are."""
    profile = current_profile()
    with _failures(), profile.login() as manager:
        user_id = manager.register_user_key(profile.user_key, profile.config.client_id)
        me = manager.whoami()
    project = me.get("project")
    if isinstance(project, str) and project != profile.config.project:
        if profile.config.project is not None:
            stderr.print(
                f"note: the manager puts client {shown(profile.config.client_id)} in project "
                f"{shown(project)}, not {shown(profile.config.project)}; profile updated",
                markup=False,
            )
        with _failures():
            profile.updated(project=project)
    _print(
        f"logged in to {profile.config.manager_url} as client {shown(profile.config.client_id)}"
        f" (project {shown(project)})"
    )
    _print(f"user_id: {user_id}")


# -------------------------------------------------------------------- functions


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
            with _status(f"packing {directory}…"), bundle.open("wb") as handle:
                expected = pack_into(directory, handle)
        except BundleError as error:
            fail(str(error), EXIT_USAGE)
        except OSError as error:
            fail(f"cannot read {directory}: {error.strerror}", EXIT_USAGE)
        size = bundle.stat().st_size
        with _failures(), Progress(
            TextColumn("uploading"), BarColumn(), DownloadColumn(), console=stderr,
            transient=True,
        ) as progress:  # fmt: skip
            task = progress.add_task("upload", total=size)

            def sent(done: int) -> None:
                progress.update(task, completed=done)

            upload = _with_manager(
                profile, lambda manager: manager.upload_function(bundle, progress=sent)
            )
    if upload.function_id != expected:  # ManagerClient checks it too; a wrong ID is fatal
        fail(f"function-id: the manager stored {upload.function_id}, the bundle is {expected}")
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
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        fail(f"{directory} exists and is not a directory", EXIT_USAGE)
    if directory.is_dir() and any(directory.iterdir()):
        fail(f"{directory} is not empty", EXIT_USAGE)
    with _failures():
        with _status(f"downloading {shown(function)}…"):
            bundle = _with_manager(profile, lambda manager: manager.download_function(function))
        if function_id(bundle) != function:  # ManagerClient checks it too
            fail(f"function-id: the manager sent {function_id(bundle)}, not {shown(function)}")
        if directory.is_dir():
            directory.rmdir()  # empty: unpack renames a fresh directory into its place
        directory.parent.mkdir(parents=True, exist_ok=True)
        found = contents(directory, unpack(bundle, directory), _DEFAULT_RUNTIME)
    _show_files(found.files)
    _show_vendored(found.vendored)
    _show_warnings(found.warnings)
    stderr.print(f"{len(found.files)} files ({len(bundle)} bytes) unpacked into {directory}")


# -------------------------------------------------------------------- deploy


def _mebibytes(gibibytes: float) -> int:
    mebibytes = round(gibibytes * 1024)
    if not gibibytes > 0 or mebibytes < 1:
        fail(f"--memory must be a positive number of GiB, got {gibibytes}", EXIT_USAGE)
    return int(mebibytes)


def deploy(
    function: Annotated[str, typer.Option(help="The function ID (fs://…) to run.")],
    name: Annotated[str, typer.Option(help="The clean room's name (a-z, 0-9, -).")],
    handler: Annotated[str, typer.Option(help="The entry point, module.function.")],
    access: Annotated[
        Path, typer.Option(help="The access file (YAML): inputs, outputs, runners, logs.")
    ],
    runtime: Annotated[
        str,
        typer.Option(
            help="The runtime the function runs in: python3.11 (the standard library only) "
            "or python3.11-data (also numpy, pandas, polars, pyarrow, duckdb, scikit-learn).",
        ),
    ] = "python3.11",
    memory: Annotated[float, typer.Option(help="Memory limit of a run, in GiB.")] = 2.0,
    timeout: Annotated[int, typer.Option(help="Time limit of a run, in seconds.")] = 3600,
    param: Annotated[
        list[str] | None,
        typer.Option(
            help="A parameter KEY=VALUE (repeatable); VALUE is typed: 42, 0.5, true, null, "
            'else a string ("…" forces one).',
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create a clean room: build its spec, deploy it, and pin its Work-ID as approved by you."""
    profile = current_profile()
    with _failures():
        rights = load_access(access)
        parameters = parse_parameters(param or [])
    memory_mib = _mebibytes(memory)
    try:
        spec = build_spec(
            name=name,
            function_id=function,
            handler=handler,
            access=rights,
            deployer_user_id=profile.user_id,
            runtime=runtime,
            memory_mib=memory_mib,
            timeout_s=timeout,
            parameters=parameters,
        )
    except (CheckFailed, ProfileError) as error:
        fail(str(error), EXIT_USAGE)
    with _failures(), _status(f"deploying {name}…"):
        room = _with_manager(profile, lambda manager: manager.deploy(spec))
    # The pin is of the spec built here, never of what the manager answered.
    if room.work_id != spec.work_id or WorkSpec.parse(room.spec).work_id != spec.work_id:
        fail(f"work-id: the manager deployed {room.work_id}, not the spec sent ({spec.work_id})")
    if room.state == "failed":
        fail(f"clean room {name} failed to deploy: {shown(room.reason or 'no reason given')}")
    with _failures():
        profile.approve(spec.name, spec.work_id, spec.function)
        # What was approved, to compare a later version with (inspect --against approved).
        profile.remember_review(spec.work_id, spec_record(spec))
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


def _review(profile: Profile, name: str, source: Path | None = None) -> Review:
    def fetch(manager: ManagerClient) -> tuple[Room, bytes]:
        room = manager.room(name)
        # Download the function the spec names (what the Work-ID covers), not the
        # manager's separate field for it.
        spec = WorkSpec.parse(room.spec)
        with _status(f"downloading {spec.function}…"):
            return room, manager.download_function(spec.function)

    room, bundle = _with_manager(profile, fetch)
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
            state = "RECORD verified"
        else:
            state = f"RECORD: {len(item.differ)} differ, {len(item.missing)} missing"
        _print(
            f"  {shown(item.name)} {shown(item.version)}: {len(item.files)} files, {state}, "
            f"digest {item.digest[:16]}"
        )
    if vendored.unrecorded:
        _print(f"  {len(vendored.unrecorded)} files under packages/ are in no RECORD")


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


def _show(result: Review, approval: Approval | None) -> None:
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
    _print(f"resources:      {spec.resources.memory_mib} MiB, {spec.resources.timeout_s} s per run")
    logs = f"to {spec.logs} (its recipient reads them)" if spec.logs else "nowhere"
    _print(f"logs:           {logs}")
    _print(f"nonce:          {spec.nonce}")
    _print("parameters:" + ("" if spec.parameters else "     none"))
    for key, value in sorted(spec.parameters.items()):
        _print(f"  {quoted(key)} = {_value(value)}")
    _print("rights:")
    for right in result.participants:
        what = {
            "input": f"uploads {right.object_id}",
            "output": f"reads {right.object_id}",
            "runner": "starts the run",
        }[right.role]
        _print(f"  {right.user_id}  {what}" + ("  (you)" if right.is_you else ""))
    _show_files(result.files)
    _show_vendored(result.contents.vendored)
    _show_warnings(result.warnings)
    _print(f"approval:       {_approval_line(result, approval)}")


def _profile_option(profile: Profile) -> str | None:
    """The ``--profile`` to repeat in a command printed for the user (None: the default)."""
    return None if profile.name == DEFAULT_PROFILE else profile.name


def _show_changes_since(profile: Profile, inspected: Inspection, result: Review) -> None:
    """What changed since the inspected Work-ID, from the profile's record (digests only)."""
    record = profile.remembered_review(inspected.work_id)
    if record is None:
        return
    before = Side.of_record(f"Work-ID {inspected.work_id} (inspected)", inspected.work_id, record)
    for line in compare(before, Side.of_review(f"Work-ID {result.work_id}", result)).lines():
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
        with _status(f"downloading {shown(against)}…"):
            bundle = _with_manager(profile, lambda manager: manager.download_function(against))
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
        with _status(f"downloading {shown(earlier)}…"):
            bundle = _with_manager(profile, lambda manager: manager.download_function(earlier))
    except ServerError:
        return Side.of_record(label, work_id, record)  # gone from the manager: digests only
    if function_id(bundle) != earlier:
        fail(f"function-id: the manager sent {function_id(bundle)}, not {shown(earlier)}")
    unpack(bundle, directory)
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
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show what a clean room is, recomputed from its spec and function bytes.

    Names the file the Worker will import as the handler's module, warns about
    modules hidden by others and parameter keys that read alike, summarises
    packages/, and prints the command that approves exactly this Work-ID. Text
    from the deployer is shown escaped: anything but printable ASCII as \\u…, a
    backslash as \\\\.
    """
    profile = current_profile()
    with _failures(), tempfile.TemporaryDirectory(prefix="cleanroom-inspect-") as scratch:
        here = source if source is not None else Path(scratch) / "now" if against else None
        result = _review(profile, name, here)
        approval = profile.approval(name)
        changes = None
        if against is not None:
            before = _earlier(profile, name, against, result, Path(scratch) / "before")
            now = Side.of_review(f"Work-ID {result.work_id} (now)", result, here)
            changes = compare(before, now)
        inspected = record_inspection(profile, result)
    command = result.approve_command(_profile_option(profile))
    if as_json:
        document = result.to_json()
        document["approved"] = approval is not None and approval.work_id == result.work_id
        document["approval"] = approval.to_json() if approval is not None else None
        document["approve_command"] = command
        if changes is not None:
            document["changes"] = changes.to_json()
        stdout.out(json.dumps(document, indent=2))
        return
    _show(result, approval)
    if changes is not None:
        _show_changes(changes)
    if inspected is not None and inspected.work_id != result.work_id:
        stderr.print(_changed(name, inspected, result))
    if not result.you_participate:
        stderr.print("note: you have no right in this clean room")
    _print(f"to approve exactly this: {command}")


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
            "room changed since you last inspected it.",
        ),
    ] = False,
) -> None:
    """Review a clean room and pin its Work-ID: only then will you attest to it or send data.

    With --work-id, only that Work-ID is pinned: a clean room redeployed since you
    inspected it is refused (exit 1) and nothing is pinned. Without it, a Work-ID
    other than the one you last inspected is said plainly before the question.
    """
    profile = current_profile()
    with _failures():
        result = _review(profile, name)
        approval = profile.approval(name)
        inspected = record_inspection(profile, result)
    _show(result, approval)
    if work_id is not None and work_id != result.work_id:
        with _failures():
            approve_review(profile, result, work_id)  # refuses: work-id-reviewed
    if approval is not None and approval.work_id == result.work_id:
        stderr.print(f"clean room {name} is already approved with this Work-ID")
        return
    if not result.you_participate:
        stderr.print("note: you have no right in this clean room")
    if result.room.state in ("failed", "deleted"):
        stderr.print(f"warning: the clean room is {shown(result.room.state)}")
    if work_id is None:
        if inspected is not None and inspected.work_id != result.work_id:
            stderr.print(_changed(name, inspected, result), style="bold")
            with _failures():
                _show_changes_since(profile, inspected, result)
            if yes:
                fail(
                    f"not approved: clean room {name} is not what you inspected; review it "
                    f"above, then: {result.approve_command(_profile_option(profile))}"
                )
        if not yes and not typer.confirm(
            f"Approve Work-ID {result.work_id} of clean room {name}?", default=False
        ):
            raise typer.Abort()
    with _failures():
        approve_review(profile, result, work_id or result.work_id)
    _print(f"approved: clean room {name}, Work-ID {result.work_id}")


__all__ = [
    "approve",
    "configure",
    "deploy",
    "function_app",
    "inspect",
    "login",
    "whoami",
]
