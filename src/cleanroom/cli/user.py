"""The user's commands against the management server, and their local profile.

``configure``, ``whoami``, ``login``, ``function upload|download``, ``deploy``,
``inspect`` and ``approve``. The profile (``--profile``, ``$CLEANROOM_PROFILE``,
else ``default``) holds the user key, the attestation policy and the approved
Work-IDs; see :mod:`cleanroom.client.profile`. Nothing the manager answers is
shown unchecked: function IDs and Work-IDs are recomputed from the bytes.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

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
from cleanroom.client.collateral import COLLATERAL_FROM, CollateralFrom
from cleanroom.client.errors import ServerError
from cleanroom.client.profile import Approval, Profile, ProfileError
from cleanroom.client.review import Review, review
from cleanroom.errors import CheckFailed
from cleanroom.protocol.bundle import BundleError, function_id, pack_into, unpack
from cleanroom.protocol.spec import WorkSpec

if TYPE_CHECKING:
    from cleanroom.client.manager import ManagerClient, Room

T = TypeVar("T")

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


def _safe(value: object) -> str:
    """Text from an untrusted source, shown literally on one line (no escapes, no markup)."""
    text = value if isinstance(value, str) else str(value)
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _print(text: str) -> None:
    stdout.print(text, markup=False)


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _warn_simulated(profile: Profile) -> None:
    if profile.simulated:
        stderr.print(f"[bold red]{SIMULATOR_WARNING}[/]")


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
                f"note: the manager puts client {_safe(profile.config.client_id)} in project "
                f"{_safe(project)}, not {_safe(profile.config.project)}; profile updated",
                markup=False,
            )
        with _failures():
            profile.updated(project=project)
    _print(
        f"logged in to {profile.config.manager_url} as client {_safe(profile.config.client_id)}"
        f" (project {_safe(project)})"
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
            with stderr.status(f"packing {directory}…"), bundle.open("wb") as handle:
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
    """Download a function, check it hashes to FS_ID, and unpack it into DIRECTORY."""
    profile = current_profile()
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        fail(f"{directory} exists and is not a directory", EXIT_USAGE)
    if directory.is_dir() and any(directory.iterdir()):
        fail(f"{directory} is not empty", EXIT_USAGE)
    with _failures():
        with stderr.status(f"downloading {function}…"):
            bundle = _with_manager(profile, lambda manager: manager.download_function(function))
        if function_id(bundle) != function:  # ManagerClient checks it too
            fail(f"function-id: the manager sent {function_id(bundle)}, not {function}")
        if directory.is_dir():
            directory.rmdir()  # empty: unpack renames a fresh directory into its place
        directory.parent.mkdir(parents=True, exist_ok=True)
        files = unpack(bundle, directory)
    stderr.print(
        f"{len(files)} files ({len(bundle)} bytes) unpacked into {directory}", markup=False
    )


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
    runtime: Annotated[str, typer.Option(help="The Worker's Python runtime.")] = "python3.11",
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
    with _failures(), stderr.status(f"deploying {name}…"):
        room = _with_manager(profile, lambda manager: manager.deploy(spec))
    # The pin is of the spec built here, never of what the manager answered.
    if room.work_id != spec.work_id or WorkSpec.parse(room.spec).work_id != spec.work_id:
        fail(f"work-id: the manager deployed {room.work_id}, not the spec sent ({spec.work_id})")
    if room.state == "failed":
        fail(f"clean room {name} failed to deploy: {_safe(room.reason or 'no reason given')}")
    with _failures():
        profile.approve(spec.name, spec.work_id, spec.function)
    _print(f"clean room:     {spec.name}")
    _print(f"Work-ID:        {spec.work_id}")
    _print(f"function:       {spec.function}")
    _print(f"compute server: {_safe(room.compute_url)}")
    _print(f"state:          {_safe(room.state)}")
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
        with stderr.status(f"downloading {spec.function}…"):
            return room, manager.download_function(spec.function)

    room, bundle = _with_manager(profile, fetch)
    return review(room, bundle, you=profile.user_id, source=source)


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
    _print(f"clean room:     {spec.name} (project {_safe(room.project)})")
    _print(f"deployed by:    client {_safe(room.deployer)} on {_when(room.created)}")
    state = _safe(room.state) + (f" ({_safe(room.reason)})" if room.reason else "")
    _print(f"state:          {state}")
    _print(f"compute server: {_safe(room.compute_url)}")
    _print(f"Work-ID:        {result.work_id} (recomputed from the spec)")
    _print(f"function:       {result.function_id} (recomputed from the bundle)")
    where = result.handler_module or "NOT FOUND in the function"
    _print(f"handler:        {spec.handler} in {where}")
    _print(f"runtime:        {spec.runtime}")
    _print(f"resources:      {spec.resources.memory_mib} MiB, {spec.resources.timeout_s} s per run")
    logs = f"to {spec.logs} (its recipient reads them)" if spec.logs else "nowhere"
    _print(f"logs:           {logs}")
    _print(f"nonce:          {spec.nonce}")
    _print("parameters:" + ("" if spec.parameters else "     none"))
    for key, value in sorted(spec.parameters.items()):
        _print(f"  {_safe(key)} = {_safe(json.dumps(value))}")
    _print("rights:")
    for right in result.participants:
        what = {
            "input": f"uploads {right.object_id}",
            "output": f"reads {right.object_id}",
            "runner": "starts the run",
        }[right.role]
        _print(f"  {right.user_id}  {what}" + ("  (you)" if right.is_you else ""))
    _print(f"files ({len(result.files)}):")
    for file in result.files:
        _print(f"  {file.sha256}  {file.size:>10}  {_safe(file.path)}")
    _print(f"approval:       {_approval_line(result, approval)}")


def inspect(
    name: Annotated[str, typer.Argument(help="The clean room's name.")],
    source: Annotated[
        Path | None,
        typer.Option(help="Also unpack the function here to read it (must not exist)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show what a clean room is, recomputed from its spec and function bytes."""
    profile = current_profile()
    with _failures():
        result = _review(profile, name, source)
        approval = profile.approval(name)
    if as_json:
        document = result.to_json()
        document["approved"] = approval is not None and approval.work_id == result.work_id
        document["approval"] = approval.to_json() if approval is not None else None
        stdout.out(json.dumps(document, indent=2))
    else:
        _show(result, approval)
        if not result.you_participate:
            stderr.print("note: you have no right in this clean room", markup=False)


def approve(
    name: Annotated[str, typer.Argument(help="The clean room's name.")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Approve without asking (after showing the review).")
    ] = False,
) -> None:
    """Review a clean room and pin its Work-ID: only then will you attest to it or send data."""
    profile = current_profile()
    with _failures():
        result = _review(profile, name)
        approval = profile.approval(name)
    _show(result, approval)
    if approval is not None and approval.work_id == result.work_id:
        stderr.print(f"clean room {name} is already approved with this Work-ID", markup=False)
        return
    if not result.you_participate:
        stderr.print("note: you have no right in this clean room", markup=False)
    if result.handler_module is None:
        stderr.print(f"warning: the handler {result.spec.handler} is not in the function")
    if result.room.state in ("failed", "deleted"):
        stderr.print(f"warning: the clean room is {_safe(result.room.state)}", markup=False)
    if not yes and not typer.confirm(
        f"Approve Work-ID {result.work_id} of clean room {name}?", default=False
    ):
        raise typer.Abort()
    with _failures():
        profile.approve(name, result.work_id, result.function_id)
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
