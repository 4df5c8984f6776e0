"""Your profile and your account at the manager: configure, whoami, login, logout.

Also what every user command shares: expected failures as one line
(:func:`failures`), the manager with one fresh login when a token is refused
(:func:`with_manager`), and the one-line warning of a profile that trusts a
simulated root. Imported by ``whoami``, so it imports little: the client SDK only
as far as the profile.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from cleanroom.cli import common
from cleanroom.cli.common import (
    EXIT_REJECTED,
    EXIT_USAGE,
    current_profile,
    fail,
    hint,
    json_output,
    print_json,
    print_line,
    profile_name,
    read_file,
)
from cleanroom.client.errors import ServerError
from cleanroom.client.profile import (
    COLLATERAL_FROM,
    DPOP_KEY_FILE,
    SIMULATOR_ROOT_FILE,
    CollateralFrom,
    Profile,
    ProfileError,
    RenewedToken,
)
from cleanroom.client.renewal import token_refused
from cleanroom.protocol.text import shown
from cleanroom.reference import ReferenceValueSource, SignedRelease

if TYPE_CHECKING:
    from cleanroom.client.manager import ManagerClient

T = TypeVar("T")

SIMULATOR_WARNING = "WARNING: SIMULATED SGX root trusted: nothing is protected; never use real data"


@contextmanager
def failures() -> Iterator[None]:
    """Expected failures as cli/main.py shows every error, one line with its exit code;
    refused credentials also say what to check."""
    try:
        yield
    except ServerError as error:
        if error.status != 401:
            raise
        check = error.check or ""
        if check.startswith("token-") or check == "dpop-proof":
            # A token this profile kept was refused (revoked when the operator disabled
            # or rotated the client, a rotated signing key, …): a new login replaces
            # every kept token; only if the manager refuses that are the credentials
            # at fault.
            fail(
                f"{error} (a token this profile kept was refused: run {hint('login')}, which "
                "replaces every token it kept; if the manager refuses that, check the client "
                f"id and secret: {hint('configure')})",
                EXIT_REJECTED,
            )
        fail(
            f"{error} (check the client id and secret: {hint('configure')}; a disabled client "
            "is refused with either: ask the operator)",
            EXIT_REJECTED,
        )


def drop_kept_tokens(profile: Profile) -> None:
    """Revoke at the manager and drop every token the profile kept, with a one-line
    warning on stderr of those it could not revoke (:meth:`Profile.drop_tokens`)."""
    line = profile.drop_tokens().warning()
    if line is not None:
        profile.warn(line)


def with_manager(profile: Profile, action: Callable[[ManagerClient], T]) -> T:
    """Run ``action`` with the profile's manager; once more after a new login if the kept
    token was refused at authentication (a 401 ``token-…``: nothing was done).

    The client itself renews a refused token and sends a request again
    (:mod:`cleanroom.client.renewal`); this covers what it does not send again (a
    bundle's upload stream, a download), and never renews twice."""
    with profile.manager() as manager:
        source = manager.token_source
        try:
            return action(manager)
        except ServerError as error:
            if not token_refused(error):
                raise
            if isinstance(source, RenewedToken) and source.refusals:
                raise  # refused again after the client's own new login: the error
    drop_kept_tokens(profile)  # e.g. the client was disabled and enabled, or its secret rotated
    with profile.login() as manager:
        return action(manager)


def warn_simulated(profile: Profile) -> None:
    """One line on stderr when the profile trusts a simulated root (it protects nothing)."""
    if profile.simulated:
        common.stderr.print(SIMULATOR_WARNING, style="bold red")


def verify_command(profile: Profile, saved: Path) -> str:
    """The command that checks a receipt saved in ``saved`` offline. A profile that trusts
    a simulated root saved a simulated quote, which verifies against that root only: the
    command names it (the file this profile keeps), as without it the check is refused."""
    command = f"cleanroom receipt verify {shown(str(saved))}"
    if profile.simulated:
        root = profile.directory / SIMULATOR_ROOT_FILE
        command += f" --trust-root {shown(str(root))}"
    return command


def _print(text: str) -> None:
    common.stdout.print(text)


def configure(
    manager_url: Annotated[
        str | None,
        typer.Option(
            help="The management server, e.g. https://manager.example (default: the "
            "profile's; without a profile, asked for).",
            show_default=False,
        ),
    ] = None,
    client_id: Annotated[
        str | None,
        typer.Option(
            help="Your client ID at the manager (default: the profile's; without a profile, "
            "asked for).",
            show_default=False,
        ),
    ] = None,
    client_secret: Annotated[
        str | None,
        typer.Option(
            help="Your client secret (default: the profile's, for the same client ID; else "
            "asked for: hidden on a terminal, else the first line of standard input).",
            show_default=False,
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
    measurements: Annotated[
        Path | None,
        typer.Option(
            help="The release's measurement file (measurements.json), signed by the release "
            "key: the Attester and Worker measurements you accept come from it, not from the "
            "cleanroom installed here. Needed for real SGX.",
            show_default=False,
        ),
    ] = None,
    release_key: Annotated[
        Path | None,
        typer.Option(
            help="The release public key (Ed25519, PEM) the measurement file must be signed "
            "by [default: the one this profile pinned when first configured with it].",
            show_default=False,
        ),
    ] = None,
    allow_older_measurements: Annotated[
        bool,
        typer.Option(
            "--allow-older-measurements",
            help="Accept a measurement file issued before the one this profile has "
            "(going back to an older release on purpose).",
        ),
    ] = False,
) -> None:
    """Create or update your profile: manager, credentials, user key, what you trust.

    For real SGX, the enclave measurements you accept come from the release's signed
    measurement file (--measurements, checked with the release key); without it they
    are this installed cleanroom's own, which only fits the simulated backend.
    Policy options that are not given take their defaults (Intel's production root,
    ...), so re-running configure never keeps a weaker setting by accident. Manager
    URL, client ID, secret and project are kept from the existing profile unless
    given.
    """
    name = profile_name()
    existing: Profile | None
    try:
        existing = Profile.load(name)
    except ProfileError:
        existing = None  # configure is how a missing or broken profile is repaired
    if manager_url is None:
        manager_url = (
            existing.config.manager_url if existing else _ask("Manager URL", "--manager-url")
        )
    if client_id is None:
        client_id = existing.config.client_id if existing else _ask("Client ID", "--client-id")
    if client_secret is None:
        if existing is not None and existing.config.client_id == client_id:
            try:
                client_secret = existing.client_secret
            except ProfileError:
                client_secret = None
        if client_secret is None:
            client_secret = _ask("Client secret", "--client-secret", hide_input=True)
    if project is None and existing is not None and existing.config.client_id == client_id:
        project = existing.config.project
    root = read_file(trust_simulator, "simulator root") if trust_simulator is not None else None
    release = _signed_release(
        measurements,
        release_key,
        existing,
        simulated=trust_simulator is not None,
        allow_older=allow_older_measurements,
        explicit=bool(
            attester_mrenclave or attester_mrsigner or worker_mrenclave
            or isv_prod_id is not None or min_isv_svn is not None
        ),
    )  # fmt: skip
    reference: ReferenceValueSource
    if release is not None:
        reference = release
    else:
        from cleanroom.tee.reference import LocalMeasurement  # measured only if a value is missing

        reference = LocalMeasurement()
    with failures():
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
            reference=reference,
        )
        config = profile.config
        anchor = profile.trust_anchor()
    if json_output():
        print_json(
            {
                "profile": profile.name,
                "profile_dir": str(profile.directory),
                "user_id": profile.user_id,
                "manager_url": config.manager_url,
                "client_id": config.client_id,
                "project": config.project,
                "attester_mrenclaves": list(config.attester_mrenclaves),
                "attester_mrsigner": config.attester_mrsigner,
                "worker_mrenclaves": list(config.worker_mrenclaves),
                "trust_anchor": {"name": anchor.name, "sha256": anchor.fingerprint},
                "simulated": profile.simulated,
                "pccs_url": config.pccs_url,
                "collateral_from": config.collateral_from,
                "allow_protocol_v1": config.allow_protocol_v1,
                "measurements": None
                if config.measurements is None
                else {
                    "release": config.measurements.release,
                    "backend": config.measurements.backend,
                    "issued_at": config.measurements.issued_at,
                    "release_key_sha256": config.release_key_sha256,
                },
            }
        )
    else:
        _print(f"profile: {profile.name} in {profile.directory}")
        _print(f"user_id: {profile.user_id}")
        _print(f"manager: {config.manager_url} as client {config.client_id}")
        _print(f"Attester MRENCLAVE: {', '.join(config.attester_mrenclaves)}")
        _print(f"Attester MRSIGNER:  {config.attester_mrsigner}")
        _print(f"Worker MRENCLAVE:   {', '.join(config.worker_mrenclaves)}")
        source = config.measurements
        if source is not None:
            _print(
                f"measurements: release {source.release} ({source.backend}), "
                f"signed by release key {config.release_key_sha256}"
            )
        elif not attester_mrenclave:
            _print("measurements: this installed cleanroom's (not a release's signed file)")
        _print(f"trust anchor: {anchor.name} (SHA-256 {anchor.fingerprint})")
        if config.collateral_from == "pccs":
            _print(f"collateral: only from your PCCS {config.pccs_url}")
        elif config.pccs_url is not None:
            _print(f"collateral: the compute server's, else your PCCS {config.pccs_url}")
        else:
            _print("collateral: the compute server's (no PCCS of your own)")
        if config.allow_protocol_v1:
            _print("protocol: v2, and v1 (no post-quantum key exchange) where a server has no v2")
    warn_simulated(profile)
    if new_key:
        common.stderr.print(f"new user key: run {hint('login')} to register it")
    else:
        common.stderr.print(f"next: {hint('login')}")


def _ask(label: str, option: str, *, hide_input: bool = False) -> str:
    """A value configure was not given, asked for; with nothing to read, a usage error
    naming the option (a script has no terminal: it passes the option, or pipes the answer).

    A hidden answer piped in is read as its first line: getpass, with no terminal to
    hide it on, warned that "Password input may be echoed" (with a Python warning).
    """
    if hide_input and not sys.stdin.isatty():
        common.stderr.print(f"{label} (read from standard input)")
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            fail(f"configure needs {option} (no answer on standard input)", EXIT_USAGE)
        return line
    try:
        answer: str = typer.prompt(label, hide_input=hide_input)
    except typer.Abort:
        fail(f"configure needs {option} (no answer on standard input)", EXIT_USAGE)
    return answer


def _signed_release(
    measurements: Path | None,
    release_key: Path | None,
    existing: Profile | None,
    *,
    simulated: bool,
    allow_older: bool,
    explicit: bool,
) -> SignedRelease | None:
    """The verified measurement file, if one is given (and the key it must be signed by)."""
    from cleanroom.attestation.errors import EvidenceError
    from cleanroom.attestation.measurements import MeasurementsError, load_release_key

    if measurements is None:
        if release_key is not None:
            fail("--release-key goes with --measurements", EXIT_USAGE)
        return None
    if explicit:
        fail("--measurements gives the expected measurements: give no MRENCLAVE, MRSIGNER, "
             "ISVPRODID or ISVSVN with it", EXIT_USAGE)  # fmt: skip
    try:
        if release_key is not None:
            key = load_release_key(read_file(release_key, "release key"))
        elif existing is not None and (pinned := existing.release_key()) is not None:
            key = pinned
        else:
            fail(
                "--measurements needs --release-key: the release public key it must be "
                "signed by (get it from the release, not with the file)",
                EXIT_USAGE,
            )
        release = SignedRelease.verify(read_file(measurements, "measurement file"), key)
    except MeasurementsError as error:  # a malformed file exits 2, not 1
        hint = f" — {error.hint}" if error.hint else ""
        fail(f"{error}{hint}", EXIT_USAGE if isinstance(error, EvidenceError) else EXIT_REJECTED)
    backend = release.measurements.backend
    if (backend == "simulated") != simulated:
        fail(
            f"measurements-backend: the file measures the {backend} backend, but this profile "
            + ("trusts a simulated root" if simulated else "trusts Intel's production root")
            + " (expected "
            + ("simulated" if simulated else "gramine-sgx")
            + f", got {backend})",
            EXIT_REJECTED,
        )
    known = existing.config.measurements if existing is not None else None
    new = release.measurements
    if known is not None and known.issued_at > new.issued_at and not allow_older:
        fail(
            f"measurements-rollback: this measurement file (release {new.release}, issued "
            f"{new.issued_at}) is older than the one this profile has (release {known.release}, "
            f"issued {known.issued_at}) (expected issued at or after {known.issued_at}, got "
            f"{new.issued_at}) — give --allow-older-measurements to go back on purpose",
            EXIT_REJECTED,
        )
    return release


def _collateral_from(value: str) -> CollateralFrom:
    for allowed in COLLATERAL_FROM:
        if value == allowed:
            return allowed
    fail(
        f"--collateral-from must be one of {', '.join(COLLATERAL_FROM)}, got {value!r}", EXIT_USAGE
    )


def whoami(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Print your user_id (the hash of your public key); no network needed."""
    profile = current_profile()
    with failures():
        user_id = profile.user_id
    if json_output(as_json):
        print_json(
            {
                "user_id": user_id,
                "client_id": profile.config.client_id,
                "project": profile.config.project,
                "manager_url": profile.config.manager_url,
                "profile": profile.name,
                "profile_dir": str(profile.directory),
                "simulated": profile.simulated,
            }
        )
    else:
        print_line(user_id)


def login(
    new_dpop_key: Annotated[
        bool,
        typer.Option(
            "--new-dpop-key",
            help="Replace the profile's DPoP key (dpop-key.pem) with a new one first: "
            "registering your user key from it makes the manager refuse every token of "
            "the old key, its room tokens too (at compute servers within seconds). For a "
            "key that may have been copied.",
        ),
    ] = False,
) -> None:
    """Log in to the manager, register your user key with it, and print who you are.

    Every token the profile kept (the manager's and each room's) is revoked at the
    manager and dropped first, so that a login cures tokens the manager or a compute
    server refuses (revoked when the operator disabled or rotated the client) and leaves
    none good behind it; room tokens are fetched again when needed. If the manager cannot
    be asked, or there are more than 20, the rest are dropped with a warning (`logout`
    revokes them later).
    Registering from another DPoP key than the last registration's (--new-dpop-key, a
    new profile of the client) revokes the tokens of every other key issued before.
    """
    profile = current_profile()
    drop_kept_tokens(profile)  # the old key's too, before --new-dpop-key replaces it
    if new_dpop_key:
        try:
            profile.replace_proof_key()
        except OSError as error:
            fail(f"cannot replace {profile.directory / DPOP_KEY_FILE}: {error}", EXIT_USAGE)
    with failures(), profile.login() as manager:
        user_id = manager.register_user_key(profile.user_key, profile.config.client_id)
        me = manager.whoami()
    project = me.get("project")
    if isinstance(project, str) and project != profile.config.project:
        if profile.config.project is not None:
            common.stderr.print(
                f"note: the manager puts client {shown(profile.config.client_id)} in project "
                f"{shown(project)}, not {shown(profile.config.project)}; profile updated",
                markup=False,
            )
        with failures():
            profile.updated(project=project)
    if json_output():
        print_json(
            {
                "manager_url": profile.config.manager_url,
                "client_id": profile.config.client_id,
                "project": project,
                "user_id": user_id,
            }
        )
        return
    _print(
        f"logged in to {profile.config.manager_url} as client {shown(profile.config.client_id)}"
        f" (project {shown(project)})"
    )
    _print(f"user_id: {user_id}")


def logout(
    forget_secret: Annotated[
        bool,
        typer.Option(
            "--forget-secret",
            help="Also remove the client secret from the profile (credentials.json): it "
            "cannot log in again until `configure --client-secret`. The secret stays good "
            "at the manager for whoever else has it: ask the operator to rotate it.",
        ),
    ] = False,
) -> None:
    """Log out: revoke at the manager your manager token and room tokens, then drop them.

    Revoked: every token for the manager the client was issued bound to this profile's DPoP
    key until now (an earlier login's too), and every room token the manager issued the
    client bound to that key, kept here or not (compute servers refuse them once their
    revocation list is refreshed, within seconds). A kept token that has
    expired is not sent: the profile logs in once with its client secret to ask for the
    logout. The tokens of the client's other profiles (other DPoP keys) stay good. Kept:
    the user key (your user_id) and the DPoP key, for which no kept token is good any more
    (`login --new-dpop-key` replaces a key that may have been copied).
    """
    profile = current_profile()
    with failures():
        revoked = with_manager(profile, lambda manager: manager.logout())
    profile.forget_token()
    if forget_secret:
        profile.forget_secret()
    if json_output():
        print_json(
            {
                "manager_url": profile.config.manager_url,
                "client_id": profile.config.client_id,
                "room_tokens_revoked": revoked,
                "secret_removed": forget_secret,
            }
        )
        return
    tokens = "token" if revoked == 1 else "tokens"
    _print(
        f"logged out of {profile.config.manager_url} as client "
        f"{shown(profile.config.client_id)}: its manager token and {revoked} room {tokens} "
        "revoked, the kept tokens removed"
    )
    if forget_secret:
        _print(
            "client secret removed from the profile: run "
            f"{hint('configure --client-secret SECRET')} before the next login"
        )
