"""A user's local state: who they are, what they trust, and which clean rooms they approved.

A profile is a directory ``<home>/profiles/<name>`` (see :func:`cleanroom.paths.home`),
so two users can share a machine with different homes or profile names. It holds:

- ``config.json``: the manager, the client id, the project, and the user's
  attestation policy: expected Attester MRENCLAVE(s) and MRSIGNER, expected Worker
  MRENCLAVE(s), accepted TCB statuses and advisories, ISVPRODID, minimum ISVSVN,
  and whether a simulated root is trusted instead of Intel's production root;
- ``simulator-root.pem``: that simulated root, only when the user chose to trust it;
- ``release-key.pem``: the release key whose signed measurement file the expected
  measurements came from (``configure --measurements``), when they did;
- ``credentials.json`` (0600): the client secret;
- ``user-key.pem`` (0600): the user's P-256 private key, PKCS#8. Its public key
  *is* the user (``user_id``); it is created once and never replaced unless asked;
- ``dpop-key.pem`` (0600): the P-256 key the user's access tokens are bound to
  (DPoP, RFC 9449), PKCS#8; created when first needed. It is not the user key:
  that one signs what the enclave acts on, this one every HTTP request an
  untrusted Controller sees, and it can be replaced without changing who the
  user is;
- ``approvals.json``: room name -> the Work-ID the user reviewed and pinned, and the
  Worker of that Work-ID this profile met first;
- ``workers.json``: Work-ID -> the Worker of it this profile met first, for every
  Work-ID it ever pinned one for (a Work-ID approved again, after another, keeps it);
- ``inspections.json``: room name -> the Work-ID the user last inspected, so that a
  room redeployed between ``inspect`` and ``approve`` is said plainly;
- ``reviews/<Work-ID>.json``: what the user was shown for each Work-ID they
  inspected or approved (spec, files, packages), to show later what changed;
- ``contacts.json`` (0600): the user's own names for other users' IDs, which reviews
  show (:mod:`cleanroom.client.contacts`);
- ``token.json`` (0600): the cached access tokens, one per resource (the manager,
  and each room on a compute server), each bound to ``dpop-key.pem``.

The expected measurements are written into ``config.json`` when the profile is
configured, from the source of reference values it is handed
(:mod:`cleanroom.reference`): a release's measurement file signed by the release
key, which is how a client must learn what the published enclaves are; else, for
development against the simulated backend, this installation's own measurement
(``cleanroom.tee.reference``, chosen by the command line: the profile imports no
TEE code). A later change of the installed code never silently changes what the
user trusts.

Every file is written atomically (a temporary file in the same directory, then
``os.replace``) and every directory is created 0700. Secret files that others can
read are refused, as ssh does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import re
import stat
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cleanroom import paths
from cleanroom.cleartext import check_secret_transport
from cleanroom.errors import EXIT_USAGE, CheckFailed, Error
from cleanroom.protocol.keys import user_id as user_id_of
from cleanroom.reference import (
    ReferenceValues,
    ReferenceValueSource,
    ReferenceValuesUnavailable,
    SignedRelease,
)

# The attestation package (dcap-qvl, X.509) and the DPoP module (httpx) are imported
# where they are used: `whoami` and the other commands that only read the profile
# never load them.
if TYPE_CHECKING:
    import httpx
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from cleanroom.attestation import AttestationPolicy, TrustAnchor
    from cleanroom.client.manager import AccessToken, ManagerClient
    from cleanroom.dpop import ProofKey

# Where a client takes collateral from (cleanroom.client.collateral chooses it).
CollateralFrom = Literal["server", "pccs"]
COLLATERAL_FROM: tuple[CollateralFrom, ...] = ("server", "pccs")

PROFILE_ENV = "CLEANROOM_PROFILE"
DEFAULT_PROFILE = "default"
PROFILE_CONFIG_TYPE: Literal["cleanroom/profile/v1"] = "cleanroom/profile/v1"

CONFIG_FILE = "config.json"
CREDENTIALS_FILE = "credentials.json"
USER_KEY_FILE = "user-key.pem"
DPOP_KEY_FILE = "dpop-key.pem"
APPROVALS_FILE = "approvals.json"
INSPECTIONS_FILE = "inspections.json"
WORKERS_FILE = "workers.json"
REVIEWS_DIR = "reviews"
TOKEN_FILE = "token.json"  # noqa: S105 - a file name, not a secret
SIMULATOR_ROOT_FILE = "simulator-root.pem"
RELEASE_KEY_FILE = "release-key.pem"

TOKEN_MARGIN_S = 60
"""A cached token this close to its expiry is not used: a request must not race it. Of a
token that lives less than four minutes (this over :data:`TOKEN_MARGIN_SHARE`), the
margin is that share of its life instead (:func:`token_margin`)."""
TOKEN_MARGIN_SHARE = 0.25
"""The share of a short token's life that is its margin: a manager that issues tokens
living under a minute is asked for one after three quarters of their life, not for every
request (with the minute's margin, each was renewed as soon as it came)."""
MIN_TOKEN_MARGIN_S = 1.0
"""The least margin of any token: one second, the resolution of its expiry."""
MAX_CACHED_TOKENS = 256
"""Tokens kept in ``token.json`` at most (the manager's and one per room used lately)."""

_PRIVATE_DIR = 0o700
_PRIVATE_FILE = 0o600
_PUBLIC_FILE = 0o644
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_WORK_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")

Hex32 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
_LATEST_TIME = 2**53  # seconds: far past any token, and exact in a float


def token_margin(lifetime: float | None) -> float:
    """How long before its expiry a token that lives ``lifetime`` seconds is renewed:
    :data:`TOKEN_MARGIN_S`, or :data:`TOKEN_MARGIN_SHARE` of a shorter life, never less
    than :data:`MIN_TOKEN_MARGIN_S`. A token whose lifetime is unknown (kept by an
    earlier version, which did not record when it was asked for) has the full margin."""
    if lifetime is None:
        return TOKEN_MARGIN_S
    return min(TOKEN_MARGIN_S, max(lifetime * TOKEN_MARGIN_SHARE, MIN_TOKEN_MARGIN_S))


def token_usable(expires_at: int, issued_at: int | None, now: float) -> bool:
    """Whether a token that expires at ``expires_at`` (asked for at ``issued_at``) is used
    at ``now``, or renewed: its margin (:func:`token_margin`) is not yet reached."""
    lifetime = None if issued_at is None else expires_at - issued_at
    return expires_at - token_margin(lifetime) > now


MAX_REVOKED_AT_ONCE = 20
"""Kept tokens :meth:`Profile.drop_tokens` revokes one by one at most: each request counts
against the manager's per-address limit of ``/oauth/token`` and ``/oauth/revoke`` (50 at
once, then 5 a second), shared by every client behind the same address: a profile that
kept 60 revoked 52, was refused the rest (429) and left the address's allowance spent for
the login that follows and for everyone else there."""


ROOM_TOKEN_RENEWALS = 1
"""How many of a Controller's refusals (``401 token-…``) one room token source
(:meth:`Profile.renewed_token`: a command's requests to one room, a ``run --wait``'s
polls) renews after; the next is the error. Each renewal is a revocation and a login
with the client's secret at the manager: a Controller that refused every poll of a
``run --wait`` spent the client's own limit of logins from that address (10 at once,
then one every 2 s) within 10 polls, and each later login of the client there, another
command's too, waited on ``429 slow_down`` (h33)."""


@dataclass(frozen=True)
class DroppedTokens:
    """What :meth:`Profile.drop_tokens` did with the tokens the profile kept."""

    revoked: int
    """Revoked at the manager (RFC 7009), then dropped."""
    not_revoked: int = 0
    """Dropped unrevoked, because the manager could not be asked (``problem``)."""
    problem: str | None = None

    def warning(self) -> str | None:
        """One line for a person when some were not revoked, else None."""
        if not self.not_revoked:
            return None
        tokens = "token" if self.not_revoked == 1 else "tokens"
        return (
            f"warning: {self.not_revoked} {tokens} this profile kept could not be revoked "
            f"({self.problem}); each stays good until it expires (an hour at most): "
            "`cleanroom logout` revokes them at the manager, which keeps them, once it answers"
        )


class RenewedToken:
    """A token source (:meth:`Profile.renewed_token`): the token, fetched again near its
    expiry, and dropped when a server refused it (:mod:`cleanroom.client.renewal`)."""

    def __init__(
        self,
        fetch: Callable[[], AccessToken],
        forget: Callable[[str | None], None],
        clock: Callable[[], float],
        *,
        renewals: int | None = None,
    ) -> None:
        self._fetch = fetch
        self._forget = forget
        self._clock = clock
        self._current: AccessToken | None = None
        self._renewals = renewals  # how many refusals it renews after; None: every one
        self.refusals = 0  # tokens of this source a server refused

    def __call__(self) -> str:
        current = self._current
        if current is None or not token_usable(
            current.expires_at, current.issued_at, self._clock()
        ):
            self._current = current = self._fetch()
        return current.access_token

    def refused(self) -> bool:
        """A server refused the token at authentication: drop it here, and let the
        profile revoke and drop what that refusal stands for (the token given last;
        every token kept when it is the manager's, :meth:`Profile.renewed_token`).
        Whether the next call fetches one again: not once the source renewed as many
        times as it may; the refusal is then the error, and the token is kept as it is
        (nothing more is asked of the manager for it)."""
        self.refusals += 1
        if self._renewals is not None and self.refusals > self._renewals:
            return False
        refused, self._current = self._current, None
        self._forget(None if refused is None else refused.access_token)
        return True


def _warn_tokens_not_revoked(line: str) -> None:
    # A UserWarning: every exception class of cleanroom derives from ``errors.Error``.
    warnings.warn(line, stacklevel=3)


class ProfileError(Error):
    """A profile is missing, unreadable or malformed; the message is one line to act on."""

    exit_code = EXIT_USAGE  # no such profile, or one that cannot be read


class NotApprovedError(CheckFailed):
    """The user has not approved this Work-ID of the clean room (or approved another)."""


@dataclass(frozen=True)
class Approval:
    """A Work-ID the user reviewed and pinned for a clean room, the project whose room
    it is (None in approvals of earlier versions), and the Worker of it that this
    profile met first (``worker_id``, its attested id; None until then)."""

    work_id: str
    function_id: str
    approved_at: int
    worker_id: str | None = None
    project: str | None = None

    def to_json(self) -> dict[str, object]:
        """The approval as stored in ``approvals.json``."""
        document: dict[str, object] = {
            "work_id": self.work_id,
            "function_id": self.function_id,
            "approved_at": self.approved_at,
        }
        if self.worker_id is not None:
            document["worker_id"] = self.worker_id
        if self.project is not None:
            document["project"] = self.project
        return document


@dataclass(frozen=True)
class Inspection:
    """The Work-ID of a clean room that the user last inspected, and when."""

    work_id: str
    function_id: str
    inspected_at: int

    def to_json(self) -> dict[str, object]:
        return {
            "work_id": self.work_id,
            "function_id": self.function_id,
            "inspected_at": self.inspected_at,
        }


class MeasurementsSource(BaseModel):
    """Which signed measurement file the expected measurements came from."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    release: str
    issued_at: int = Field(ge=0)
    backend: str
    sha256: Hex32  # of the file as it was read


def _measurements_source(release: SignedRelease) -> MeasurementsSource:
    """What the profile records of the measurement file its values came from."""
    return MeasurementsSource(
        release=release.measurements.release,
        issued_at=release.measurements.issued_at,
        backend=release.measurements.backend,
        sha256=release.file_sha256,
    )


class ProfileConfig(BaseModel):
    """``config.json``: everything in the profile that is not a secret."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    type: Literal["cleanroom/profile/v1"] = PROFILE_CONFIG_TYPE
    manager_url: str = Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    client_id: str = Field(min_length=1, max_length=256)
    project: str | None = Field(default=None, min_length=1, max_length=256)
    attester_mrenclaves: list[Hex32] = Field(min_length=1)
    attester_mrsigner: Hex32
    worker_mrenclaves: list[Hex32] = Field(min_length=1)
    accepted_tcb_statuses: list[str] = Field(min_length=1)
    accepted_advisories: list[str] | None = None
    isv_prod_id: int = Field(ge=0, le=0xFFFF)
    min_isv_svn: int = Field(ge=0, le=0xFFFF)
    # Set exactly when simulator-root.pem is trusted: its fingerprint, so that a
    # swapped file is refused rather than silently trusted.
    simulator_root_sha256: Hex32 | None = None
    # The user's own PCCS (API v4), and whether collateral comes only from it
    # ("pccs") or from the compute server with it as the fallback ("server").
    pccs_url: str | None = Field(default=None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    collateral_from: CollateralFrom = "server"
    # Protocol v1 (two round trips, ECDH P-256 only): refused unless set, and used
    # only with a compute server that offers no v2 (docs/protocol.md, "Downgrade").
    allow_protocol_v1: bool = False
    # Set exactly when the measurements came from a release's signed measurement file:
    # the release key's ID (release-key.pem) and the file.
    release_key_sha256: Hex32 | None = None
    measurements: MeasurementsSource | None = None


class _Credentials(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    client_secret: str = Field(min_length=1)


_UnixTime = Annotated[int, Field(ge=0, le=_LATEST_TIME)]


class _CachedToken(BaseModel):
    """A kept token. Its times are bounded: a cache written by an earlier version, which
    took any ``expires_in``, could hold an expiry past any float (10**400), and the
    margin's arithmetic ended every command in OverflowError; such a cache is ignored
    (the command logs in again, h10)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    access_token: str
    expires_at: _UnixTime
    issued_at: _UnixTime | None = None  # when it was asked for; None: kept by an earlier version


class _Tokens(BaseModel):
    """``token.json``: the tokens of one client at one manager, bound to one DPoP key."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    manager_url: str
    client_id: str
    jkt: str
    tokens: dict[str, _CachedToken]


def _resource_key(
    resource: str | None, room: str | None, project: str | None, work_id: str | None = None
) -> str:
    """How ``token.json`` names the token for a resource: ``manager``, or the server's
    URL and the room (and its Work-ID, when known).

    A room token names the room's project and name, not the room; deleting the room
    revokes it, and a room of the same name deployed after is another room: the token
    kept for one is never used for the other (once its revocation reached the
    Controller, it was refused there, and an upload, which is not sent twice, with it)."""
    if resource is None:
        return "manager"
    key = f"{resource.rstrip('/')} {project or ''}/{room or ''}"
    return f"{key} {work_id}" if work_id else key


class _InspectionRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    work_id: str
    function_id: str
    inspected_at: int


class _ApprovalRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    work_id: str
    function_id: str
    approved_at: int
    worker_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{43}$")] | None = None
    project: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")] | None = None


def resolve_name(name: str | None = None) -> str:
    """The profile name: ``name``, else ``$CLEANROOM_PROFILE``, else ``default``."""
    chosen = name or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    if not _NAME.fullmatch(chosen):
        raise ProfileError(
            f"bad profile name {chosen!r}: use up to 64 letters, digits, '.', '_' or '-'"
        )
    return chosen


def command_for(profile: str, words: str) -> str:
    """The ``cleanroom`` command ``words`` for profile ``profile``: ``--profile`` unless default."""
    chosen = "" if profile == DEFAULT_PROFILE else f"--profile {profile} "
    return f"cleanroom {chosen}{words}"


def profile_dir(name: str | None = None, home: Path | None = None) -> Path:
    """Where the profile ``name`` lives: ``<home>/profiles/<name>``."""
    return (home if home is not None else paths.home()) / "profiles" / resolve_name(name)


def _make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents below the home as 0700."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        path.mkdir(mode=_PRIVATE_DIR)
        path.chmod(_PRIVATE_DIR)  # mkdir's mode is masked by the umask
    directory.chmod(_PRIVATE_DIR)


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode``: a reader sees the old file or the new one."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), mode)  # before any byte of a secret is written
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _create_key_once(path: Path, *, replace: bool = False) -> None:
    """Write a new P-256 key to ``path`` (0600) unless another process just did; with
    ``replace``, in place of the key there (atomically: the old or the new, never half)."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), _PRIVATE_FILE)
            file.write(pem)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            with contextlib.suppress(FileExistsError):  # the first one written is the key
                os.link(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _json_bytes(document: object) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def _hex(value: str | bytes, what: str) -> str:
    if isinstance(value, bytes):
        value = value.hex()
    text = value.strip().lower().removeprefix("0x")
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ProfileError(f"{what} must be 32 bytes as 64 hex digits, got {value!r}")
    return text


def _hex_list(values: Iterable[str | bytes], what: str) -> list[str]:
    return sorted({_hex(value, what) for value in values})


def _values_of(source: ReferenceValueSource | None) -> ReferenceValues:
    """The reference values of ``source``, or a ProfileError saying why there are none."""
    if source is None:
        raise ProfileError(
            "no expected measurements: give the release's signed measurement file "
            "(--measurements with --release-key), or every MRENCLAVE, the MRSIGNER, "
            "ISVPRODID and minimum ISVSVN"
        )
    try:
        return source.reference_values()
    except ReferenceValuesUnavailable as error:
        raise ProfileError(str(error)) from error


class Profile:
    """One user's profile directory. Get one with :meth:`load` or :meth:`create`."""

    def __init__(self, name: str, directory: Path, config: ProfileConfig) -> None:
        self.name = name
        self.directory = directory
        self.config = config
        self._user_key: ec.EllipticCurvePrivateKey | None = None
        self._proof_key: ProofKey | None = None
        self.warn: Callable[[str], None] = _warn_tokens_not_revoked
        """Where a one-line warning of tokens dropped unrevoked goes (a
        ``UserWarning`` by default; the command line prints it)."""

    # -- creation and loading ------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str | None = None,
        home: Path | None = None,
        *,
        manager_url: str,
        client_id: str,
        client_secret: str,
        project: str | None = None,
        attester_mrenclaves: Iterable[str | bytes] | None = None,
        attester_mrsigner: str | bytes | None = None,
        worker_mrenclaves: Iterable[str | bytes] | None = None,
        accepted_tcb_statuses: Iterable[str] | None = None,
        accepted_advisories: Iterable[str] | None = None,
        isv_prod_id: int | None = None,
        min_isv_svn: int | None = None,
        simulator_root: bytes | None = None,
        pccs_url: str | None = None,
        collateral_from: CollateralFrom = "server",
        allow_protocol_v1: bool = False,
        new_key: bool = False,
        reference: ReferenceValueSource | None = None,
    ) -> Profile:
        """Write (or rewrite) the profile ``name`` and return it.

        ``reference`` is where the expected measurements, ISVPRODID and minimum ISVSVN
        come from (:mod:`cleanroom.reference`). A :class:`SignedRelease` (a verified
        measurement file and its release key) gives them all, and then none may be
        given, and the profile pins its release key and file; any other source (this
        installation's measurement) gives only those left ``None``, and is asked only
        if one is. With no source, every one of them must be given.
        ``simulator_root`` is a root certificate (PEM or DER) to trust *instead of*
        Intel's production root: quotes of a simulated platform then verify, and
        they protect nothing. ``pccs_url`` is the user's own PCCS, the fallback for
        collateral, or its only source when ``collateral_from`` is ``"pccs"``
        (:mod:`cleanroom.client.collateral`). ``allow_protocol_v1`` allows sessions of
        protocol v1 with servers that offer no v2 (docs/protocol.md, "Downgrade"). The
        user key is created when missing and replaced
        only when ``new_key`` is set. The cached token is dropped (the client or
        the manager may have changed). Raises :class:`ProfileError`.
        """
        check_secret_transport(manager_url)
        resolved = resolve_name(name)
        directory = profile_dir(resolved, home)
        release = reference if isinstance(reference, SignedRelease) else None
        given = [
            attester_mrenclaves,
            attester_mrsigner,
            worker_mrenclaves,
            isv_prod_id,
            min_isv_svn,
        ]
        if release is not None and any(value is not None for value in given):
            raise ProfileError(
                "the measurement file gives the expected measurements: give no other"
            )
        # The source is asked once, and only if a value is not given (measuring may hash
        # whole images).
        expected = functools.cache(lambda: _values_of(reference))
        anchor_pem: bytes | None = None
        anchor_sha256: str | None = None
        if simulator_root is not None:
            anchor = _anchor_from(simulator_root, "the simulator root")
            anchor_pem = _pem(anchor)
            anchor_sha256 = anchor.fingerprint
        try:
            config = ProfileConfig(
                manager_url=manager_url.rstrip("/"),
                client_id=client_id,
                project=project,
                attester_mrenclaves=_hex_list(
                    attester_mrenclaves
                    if attester_mrenclaves is not None
                    else expected().attester_mrenclaves,
                    "Attester MRENCLAVE",
                ),
                attester_mrsigner=_hex(
                    attester_mrsigner
                    if attester_mrsigner is not None
                    else expected().attester_mrsigner,
                    "Attester MRSIGNER",
                ),
                worker_mrenclaves=_hex_list(
                    worker_mrenclaves
                    if worker_mrenclaves is not None
                    else expected().worker_mrenclaves,
                    "Worker MRENCLAVE",
                ),
                accepted_tcb_statuses=sorted(
                    set(accepted_tcb_statuses)
                    if accepted_tcb_statuses is not None
                    else _default_statuses()
                ),
                accepted_advisories=sorted(set(accepted_advisories))
                if accepted_advisories is not None
                else None,
                isv_prod_id=isv_prod_id if isv_prod_id is not None else expected().isv_prod_id,
                min_isv_svn=min_isv_svn if min_isv_svn is not None else expected().min_isv_svn,
                simulator_root_sha256=anchor_sha256,
                pccs_url=pccs_url.rstrip("/") if pccs_url else None,
                collateral_from=collateral_from,
                allow_protocol_v1=allow_protocol_v1,
                release_key_sha256=release.key_id if release is not None else None,
                measurements=_measurements_source(release) if release is not None else None,
            )
        except ValidationError as error:
            raise ProfileError(_first_error(error, "configuration")) from error
        if config.collateral_from == "pccs" and config.pccs_url is None:
            raise ProfileError("collateral only from your own PCCS needs its URL (--pccs-url)")
        if not client_secret:
            raise ProfileError("the client secret is empty")
        profile = cls(resolved, directory, config)
        profile._attestation_policy()  # refuse what the verifier would refuse, now
        _make_private_dirs(directory)
        if anchor_pem is not None:
            write_atomic(directory / SIMULATOR_ROOT_FILE, anchor_pem, _PUBLIC_FILE)
        if release is not None:
            write_atomic(directory / RELEASE_KEY_FILE, release.key_pem(), _PUBLIC_FILE)
        key_path = directory / USER_KEY_FILE
        if new_key or not key_path.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            write_atomic(key_path, pem, _PRIVATE_FILE)
        write_atomic(
            directory / CREDENTIALS_FILE,
            _json_bytes(_Credentials(client_secret=client_secret).model_dump()),
            _PRIVATE_FILE,
        )
        with contextlib.suppress(FileNotFoundError):
            (directory / TOKEN_FILE).unlink()
        # config.json last: a profile whose configuration exists is complete.
        write_atomic(
            directory / CONFIG_FILE, _json_bytes(config.model_dump(mode="json")), _PUBLIC_FILE
        )
        if anchor_pem is None:
            with contextlib.suppress(FileNotFoundError):
                (directory / SIMULATOR_ROOT_FILE).unlink()
        if release is None:
            with contextlib.suppress(FileNotFoundError):
                (directory / RELEASE_KEY_FILE).unlink()
        profile.user_key  # noqa: B018 - read back what was written, refusing a bad key now
        return profile

    @classmethod
    def load(cls, name: str | None = None, home: Path | None = None) -> Profile:
        """The configured profile ``name`` (see :func:`resolve_name`); ProfileError if not."""
        resolved = resolve_name(name)
        directory = profile_dir(resolved, home)
        path = directory / CONFIG_FILE
        if not path.is_file():
            raise ProfileError(
                f"profile {resolved!r} is not configured: run {command_for(resolved, 'configure')}"
            )
        document = _read_json(path, f"profile {resolved!r}: {CONFIG_FILE}")
        try:
            config = ProfileConfig.model_validate(document)
        except ValidationError as error:
            raise ProfileError(
                f"profile {resolved!r}: {_first_error(error, CONFIG_FILE)}: "
                f"run {command_for(resolved, 'configure')}"
            ) from error
        return cls(resolved, directory, config)

    def command(self, words: str) -> str:
        """The ``cleanroom`` command ``words`` for this profile (to suggest to the user)."""
        return command_for(self.name, words)

    def updated(self, **changes: Any) -> Profile:
        """Rewrite ``config.json`` with ``changes`` (e.g. ``project``) and return the result."""
        try:
            config = ProfileConfig.model_validate({**self.config.model_dump(), **changes})
        except ValidationError as error:
            raise ProfileError(_first_error(error, CONFIG_FILE)) from error
        write_atomic(
            self.directory / CONFIG_FILE, _json_bytes(config.model_dump(mode="json")), _PUBLIC_FILE
        )
        self.config = config
        return self

    # -- identity ------------------------------------------------------------------

    @property
    def user_key(self) -> ec.EllipticCurvePrivateKey:
        """The user's P-256 private key (``user-key.pem``, which must be private)."""
        if self._user_key is None:
            data = self._read_private(USER_KEY_FILE)
            try:
                key = serialization.load_pem_private_key(data, password=None)
            except (ValueError, TypeError) as error:
                raise ProfileError(
                    f"profile {self.name!r}: {USER_KEY_FILE} is not an unencrypted PEM "
                    f"private key: {error}"
                ) from error
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
                raise ProfileError(f"profile {self.name!r}: {USER_KEY_FILE} is not a P-256 key")
            self._user_key = key
        return self._user_key

    @property
    def user_id(self) -> str:
        """b64u(SHA-256(SPKI)) of the user's public key: who this user is to every party."""
        return user_id_of(self.user_key.public_key())

    @property
    def client_secret(self) -> str:
        """The OAuth2 client secret (``credentials.json``, which must be private)."""
        document = _parse_json(self._read_private(CREDENTIALS_FILE), self._what(CREDENTIALS_FILE))
        try:
            return _Credentials.model_validate(document).client_secret
        except ValidationError as error:
            raise ProfileError(
                f"{self._what(CREDENTIALS_FILE)}: {_first_error(error, CREDENTIALS_FILE)}"
            ) from error

    # -- what the user trusts ------------------------------------------------------

    def attestation_policy(self) -> AttestationPolicy:
        """The policy the Attester's quote must satisfy (DEBUG always refused)."""
        return self._attestation_policy()

    def _attestation_policy(self) -> AttestationPolicy:
        from cleanroom.attestation import AttestationError, AttestationPolicy

        config = self.config
        try:
            return AttestationPolicy(
                accepted_statuses=frozenset(config.accepted_tcb_statuses),
                accepted_advisories=frozenset(config.accepted_advisories)
                if config.accepted_advisories is not None
                else None,
                mrenclaves=frozenset(bytes.fromhex(value) for value in config.attester_mrenclaves),
                mrsigner=bytes.fromhex(config.attester_mrsigner),
                isv_prod_id=config.isv_prod_id,
                min_isv_svn=config.min_isv_svn,
                allow_debug=False,
            )
        except AttestationError as error:
            raise ProfileError(f"profile {self.name!r}: bad attestation policy: {error}") from error

    @property
    def expected_worker_mrenclaves(self) -> frozenset[bytes]:
        """The Worker measurements the Attester's claims must name."""
        return frozenset(bytes.fromhex(value) for value in self.config.worker_mrenclaves)

    @property
    def simulated(self) -> bool:
        """True when this profile trusts a simulated root: nothing it attests is protected."""
        return self.config.simulator_root_sha256 is not None

    def trust_anchor(self) -> TrustAnchor:
        """Intel's production root, or the simulated root only when the profile trusts one."""
        from cleanroom.attestation import TrustAnchor

        expected = self.config.simulator_root_sha256
        if expected is None:
            return TrustAnchor.intel_production()
        path = self.directory / SIMULATOR_ROOT_FILE
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ProfileError(
                f"{self._what(SIMULATOR_ROOT_FILE)} cannot be read ({error.strerror}): "
                f"run {self.command('configure --trust-simulator ROOT_PEM')}"
            ) from error
        anchor = _anchor_from(data, self._what(SIMULATOR_ROOT_FILE))
        if anchor.fingerprint != expected:
            raise ProfileError(
                f"{self._what(SIMULATOR_ROOT_FILE)} changed since it was configured "
                f"(SHA-256 {anchor.fingerprint}, configured {expected}): "
                f"run {self.command('configure --trust-simulator ROOT_PEM')}"
            )
        return anchor

    def release_key(self) -> ed25519.Ed25519PublicKey | None:
        """The release key the expected measurements were verified under, if they were."""
        expected = self.config.release_key_sha256
        if expected is None:
            return None
        from cleanroom.attestation import AttestationError
        from cleanroom.attestation.measurements import key_id, load_release_key

        path = self.directory / RELEASE_KEY_FILE
        try:
            key = load_release_key(path.read_bytes())
        except OSError as error:
            raise ProfileError(
                f"{self._what(RELEASE_KEY_FILE)} cannot be read ({error.strerror}): "
                "run cleanroom configure --measurements FILE --release-key KEY"
            ) from error
        except AttestationError as error:
            raise ProfileError(f"{self._what(RELEASE_KEY_FILE)}: {error}") from error
        if key_id(key) != expected:
            raise ProfileError(
                f"{self._what(RELEASE_KEY_FILE)} changed since it was configured "
                f"(SHA-256 {key_id(key)}, configured {expected}): "
                "run cleanroom configure --measurements FILE --release-key KEY"
            )
        return key

    # -- approvals -----------------------------------------------------------------

    def approvals(self) -> dict[str, Approval]:
        """Every pinned approval, by room name."""
        path = self.directory / APPROVALS_FILE
        if not path.exists():
            return {}
        document = _read_json(path, self._what(APPROVALS_FILE))
        if not isinstance(document, dict):
            raise ProfileError(f"{self._what(APPROVALS_FILE)} is not a JSON object")
        approvals = {}
        for name, record in document.items():
            try:
                parsed = _ApprovalRecord.model_validate(record)
            except ValidationError as error:
                raise ProfileError(
                    f"{self._what(APPROVALS_FILE)}: room {name!r}: "
                    f"{_first_error(error, APPROVALS_FILE)}"
                ) from error
            approvals[name] = Approval(
                parsed.work_id,
                parsed.function_id,
                parsed.approved_at,
                parsed.worker_id,
                parsed.project,
            )
        return approvals

    def approve(
        self,
        name: str,
        work_id: str,
        function_id: str,
        *,
        project: str | None = None,
        at: int | None = None,
    ) -> Approval:
        """Pin ``work_id`` as the one Work-ID this user accepts for room ``name`` of
        ``project`` (the room is then always asked for as that project's).

        Replaces an earlier approval of the same room. Call it only after reviewing
        the spec and the function (:func:`cleanroom.client.review.review`). Approving
        the same Work-ID again, even after another, keeps the Worker pinned for it
        (:meth:`pin_worker`).
        """
        with self.locked():
            approvals = self.approvals()
            earlier = approvals.get(name)
            worker_id = earlier.worker_id if earlier and earlier.work_id == work_id else None
            worker_id = worker_id or self.pinned_workers().get(work_id)
            when = int(time.time()) if at is None else at
            approval = Approval(work_id, function_id, when, worker_id, project)
            approvals[name] = approval
            self._write_approvals(approvals)
        return approval

    def pin_worker(self, name: str, work_id: str, worker_id: str) -> str | None:
        """The Worker pinned for the approved ``work_id`` of room ``name``: the one
        pinned before, else ``worker_id``, which is pinned now. None when the user has
        not approved this Work-ID of the room (nothing is pinned then).

        Call it only with the ``worker_id`` of a Worker whose evidence passed every
        Phase 1 check for ``work_id``.
        """
        with self.locked():
            approvals = self.approvals()
            approval = approvals.get(name)
            if approval is None or approval.work_id != work_id:
                return None
            workers = self.pinned_workers()
            # A Work-ID has one Worker for ever: approving another in between (which a
            # manager can have the user do, then serve this one again) forgets nothing.
            pinned = approval.worker_id or workers.get(work_id) or worker_id
            if workers.get(work_id) != pinned:
                workers[work_id] = pinned
                write_atomic(self.directory / WORKERS_FILE, _json_bytes(workers), _PUBLIC_FILE)
            if approval.worker_id != pinned:
                approvals[name] = dataclasses.replace(approval, worker_id=pinned)
                self._write_approvals(approvals)
        return pinned

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One process of this profile at a time within: for what reads a file of the
        profile and writes it again (approvals and pins, the records of uploads). Two
        commands that met two Workers of a Work-ID at once (each sent to its own by
        the Controller) each pinned its own, the last file written winning, and went
        on to send their user's data to both."""
        descriptor = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)  # on the directory: no file to leave
            yield
        finally:
            os.close(descriptor)  # releases the lock

    def pinned_workers(self) -> dict[str, str]:
        """Every Worker this profile pinned, by Work-ID (``workers.json``)."""
        path = self.directory / WORKERS_FILE
        if not path.exists():
            return {}
        document = _read_json(path, self._what(WORKERS_FILE))
        if not isinstance(document, dict) or not all(
            isinstance(key, str)
            and _WORK_ID.fullmatch(key)
            and isinstance(value, str)
            and _WORK_ID.fullmatch(value)
            for key, value in document.items()
        ):
            raise ProfileError(f"{self._what(WORKERS_FILE)} is not an object of Work-ID: Worker")
        return dict(document)

    def _write_approvals(self, approvals: dict[str, Approval]) -> None:
        write_atomic(
            self.directory / APPROVALS_FILE,
            _json_bytes({room: item.to_json() for room, item in sorted(approvals.items())}),
            _PUBLIC_FILE,
        )

    def approval(self, name: str) -> Approval | None:
        """The approval pinned for room ``name``, if any."""
        return self.approvals().get(name)

    def require_approval(self, name: str, work_id: str) -> Approval:
        """The approval of room ``name``, which must pin exactly ``work_id``.

        Raises :class:`NotApprovedError` (check ``work-id-approved``) when the user
        approved nothing for this room, or another Work-ID (the room was redeployed,
        or someone is showing this user a different clean room under its name).
        """
        approval = self.approval(name)
        remedy = f"run `{self.command(f'inspect {name}')}` then `{self.command(f'approve {name}')}`"
        if approval is None:
            raise NotApprovedError(
                "work-id-approved",
                "an approved Work-ID",
                work_id,
                f"you have not approved clean room {name!r}: {remedy}",
                hint=remedy,
            )
        if approval.work_id != work_id:
            # What changed since the approval is what to read: inspect --against shows it.
            changed = (
                f"run `{self.command(f'inspect {name} --against approved')}` (what changed "
                f"since you approved it) then `{self.command(f'approve {name}')}`"
            )
            raise NotApprovedError(
                "work-id-approved",
                approval.work_id,
                work_id,
                f"clean room {name!r} is not the one you approved (its Work-ID changed): {changed}",
                hint=changed,
            )
        return approval

    # -- what the user was shown ---------------------------------------------------

    def inspections(self) -> dict[str, Inspection]:
        """The last inspection of every room the user inspected, by room name."""
        path = self.directory / INSPECTIONS_FILE
        if not path.exists():
            return {}
        document = _read_json(path, self._what(INSPECTIONS_FILE))
        if not isinstance(document, dict):
            raise ProfileError(f"{self._what(INSPECTIONS_FILE)} is not a JSON object")
        inspections = {}
        for name, record in document.items():
            try:
                parsed = _InspectionRecord.model_validate(record)
            except ValidationError as error:
                raise ProfileError(
                    f"{self._what(INSPECTIONS_FILE)}: room {name!r}: "
                    f"{_first_error(error, INSPECTIONS_FILE)}"
                ) from error
            inspections[name] = Inspection(parsed.work_id, parsed.function_id, parsed.inspected_at)
        return inspections

    def inspection(self, name: str) -> Inspection | None:
        """The Work-ID of room ``name`` that the user last inspected, if any."""
        return self.inspections().get(name)

    def record_inspection(
        self, name: str, work_id: str, function_id: str, *, at: int | None = None
    ) -> Inspection:
        """Note that the user was just shown Work-ID ``work_id`` of room ``name``."""
        inspection = Inspection(work_id, function_id, int(time.time()) if at is None else at)
        inspections = self.inspections()
        inspections[name] = inspection
        write_atomic(
            self.directory / INSPECTIONS_FILE,
            _json_bytes({room: item.to_json() for room, item in sorted(inspections.items())}),
            _PUBLIC_FILE,
        )
        return inspection

    def _review_path(self, work_id: str) -> Path:
        if not _WORK_ID.fullmatch(work_id):
            raise ProfileError(f"not a Work-ID: {work_id!r}")
        return self.directory / REVIEWS_DIR / f"{work_id}.json"

    def remember_review(self, work_id: str, record: dict[str, Any]) -> None:
        """Keep ``record``, what the user was shown for ``work_id`` (a JSON object)."""
        path = self._review_path(work_id)
        _make_private_dirs(path.parent)
        write_atomic(path, _json_bytes(record), _PUBLIC_FILE)

    def remembered_review(self, work_id: str) -> dict[str, Any] | None:
        """What the user was shown for ``work_id``, if they inspected or approved it here."""
        path = self._review_path(work_id)
        if not path.exists():
            return None
        document = _read_json(path, self._what(f"{REVIEWS_DIR}/{work_id}.json"))
        if not isinstance(document, dict):
            raise ProfileError(f"{self._what(f'{REVIEWS_DIR}/{work_id}.json')} is not an object")
        return document

    # -- the manager ---------------------------------------------------------------

    @property
    def proof_key(self) -> ProofKey:
        """The key this profile's tokens are bound to (``dpop-key.pem``, created if absent)."""
        if self._proof_key is None:
            from cleanroom.dpop import ProofKey

            path = self.directory / DPOP_KEY_FILE
            if not path.exists():
                _create_key_once(path)
            data = self._read_private(DPOP_KEY_FILE)
            try:
                key = serialization.load_pem_private_key(data, password=None)
            except (ValueError, TypeError) as error:
                raise ProfileError(
                    f"{self._what(DPOP_KEY_FILE)} is not an unencrypted PEM private key: {error}"
                ) from error
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
                raise ProfileError(f"{self._what(DPOP_KEY_FILE)} is not a P-256 key")
            self._proof_key = ProofKey(key)
        return self._proof_key

    def manager(
        self,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> ManagerClient:
        """A client of this profile's manager, logged in.

        Uses the cached token unless it is missing, for another manager, client or
        DPoP key, or within its margin of its expiry (:func:`token_margin`: a minute,
        or a quarter of a shorter token's life); then logs in with the client
        credentials and caches the new token.
        """
        from cleanroom.client.manager import ManagerClient

        token = self._cached_token(_resource_key(None, None, None), clock())
        if token is not None:
            return ManagerClient(
                self.config.manager_url,
                token=token,
                dpop_key=self.proof_key,
                transport=transport,
                token_source=self.renewed_token(transport=transport, clock=clock),
            )
        client = self.login(transport=transport)
        client.token_source = self.renewed_token(transport=transport, clock=clock)
        return client

    def access_token(
        self,
        *,
        resource: str | None = None,
        room: str | None = None,
        project: str | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> str:
        """A valid token for ``resource`` (default: the manager), bound to :attr:`proof_key`.

        For a compute server (its URL as ``resource``) the token is for one ``room``
        (of ``project``): one per room, cached until shortly before it expires.
        """
        return self.access(
            resource=resource, room=room, project=project, transport=transport, clock=clock
        ).access_token

    def access(
        self,
        *,
        resource: str | None = None,
        room: str | None = None,
        project: str | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        work_id: str | None = None,
    ) -> AccessToken:
        """:meth:`access_token`, and when it expires; ``work_id``: the room's, which keeps
        a token apart from one for another room of the same name (:func:`_resource_key`)."""
        from cleanroom.client.manager import AccessToken, ManagerClient

        key = _resource_key(resource, room, project, work_id)
        cached = self._cached(key, clock())
        if cached is not None:
            return AccessToken(cached.access_token, cached.expires_at, cached.issued_at)
        if resource is None:
            client, access = self._login(transport)
            client.close()
            return access
        with ManagerClient(
            self.config.manager_url, dpop_key=self.proof_key, transport=transport
        ) as client:
            access = client.fetch_token(
                self.config.client_id,
                self.client_secret,
                resource=resource,
                room=room,
                project=project,
            )
        self._cache_token(key, access, clock())
        return access

    def renewed_token(
        self,
        *,
        resource: str | None = None,
        room: str | None = None,
        project: str | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        work_id: str | None = None,
    ) -> RenewedToken:
        """The token for ``resource`` (as :meth:`access_token`) each time it is called,
        fetched again (from the cache, else by logging in with the client credentials)
        once it is within its margin of its expiry (:func:`token_margin`): a client that asks it
        for every request goes on past the hour a token lives (``run --wait``, a
        query's wait, an SDK client kept open), where the server refused the token
        it started with. After a server refused it at authentication (a revoked
        token), :meth:`RenewedToken.refused` drops it, revoked at the manager: the
        manager's refusal of its own token every token this profile kept
        (:meth:`drop_tokens`: what disables, rotations, key moves and logouts end);
        a Controller's refusal of a room token that token only (:meth:`drop_token`):
        the Controller is not trusted, and may say it of any token it is shown. The
        next call fetches one again; for a room, :data:`ROOM_TOKEN_RENEWALS` times at
        most (then the refusal is the error)."""

        def fetch() -> AccessToken:
            return self.access(
                resource=resource,
                room=room,
                project=project,
                transport=transport,
                clock=clock,
                work_id=work_id,
            )

        key = _resource_key(resource, room, project, work_id)
        return RenewedToken(
            fetch,
            lambda token: self._drop_refused(key, token, transport, clock),
            clock,
            renewals=None if resource is None else ROOM_TOKEN_RENEWALS,
        )

    def _drop_refused(
        self,
        key: str,
        token: str | None,
        transport: httpx.BaseTransport | None,
        clock: Callable[[], float],
    ) -> None:
        """A server refused ``token``, kept as ``key``: the manager (which the client asks
        itself) of its own token, so every token kept is revoked and dropped; a
        Controller (which may say it of any token: a hostile one logged the user out
        everywhere with one lie, left open by h31) of a room token, so that token
        alone. Warns (:attr:`warn`) of those the manager could not be asked to revoke."""
        if key == _resource_key(None, None, None):
            dropped = self.drop_tokens(transport=transport, clock=clock)
        elif token is not None:
            dropped = self.drop_token(key, token, transport=transport)
        else:
            return
        line = dropped.warning()
        if line is not None:
            self.warn(line)

    def login(self, *, transport: httpx.BaseTransport | None = None) -> ManagerClient:
        """Log in with the client credentials now, cache the token, return the client."""
        return self._login(transport)[0]

    def _login(self, transport: httpx.BaseTransport | None) -> tuple[ManagerClient, AccessToken]:
        from cleanroom.client.manager import ManagerClient

        client = ManagerClient(
            self.config.manager_url, dpop_key=self.proof_key, transport=transport
        )
        access = client.fetch_token(self.config.client_id, self.client_secret)
        if client.token is None:  # fetch_token sets it; never send a request without
            raise ProfileError(f"the manager at {self.config.manager_url} issued no token")
        self._cache_token(_resource_key(None, None, None), access, time.time())
        return client, access

    def replace_proof_key(self) -> None:
        """A new ``dpop-key.pem`` in place of this profile's, and no token of the old key
        kept: the next login binds its tokens to the new key, and registering the user
        key from it makes the manager refuse the old key's tokens, its room tokens too
        (docs/api.md, "Tokens")."""
        _create_key_once(self.directory / DPOP_KEY_FILE, replace=True)
        self._proof_key = None
        self.forget_token()

    def forget_secret(self) -> None:
        """Remove the stored client secret (``credentials.json``): this profile cannot log
        in again until ``configure --client-secret`` gives it one. The secret stays good
        at the manager for anyone else who has it: only the operator rotates it."""
        with contextlib.suppress(FileNotFoundError):
            (self.directory / CREDENTIALS_FILE).unlink()

    def drop_tokens(
        self,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> DroppedTokens:
        """Revoke at the manager every unexpired token this profile kept (the manager's
        and each room's), then drop them all (:meth:`forget_token`).

        Best effort: each is revoked by the token itself (RFC 7009: no secret, so no
        password hash and no per-client rate limit spent), the manager token first (it
        sorted after the rooms' URLs, so that a profile keeping more than
        :data:`MAX_REVOKED_AT_ONCE` left it unrevoked: h33), at most
        :data:`MAX_REVOKED_AT_ONCE`; the first failure (the manager unreachable, a
        refusal) ends the asking, and the rest are dropped unrevoked, counted with the
        reason (:meth:`DroppedTokens.warning`). Nothing
        else is touched (keys, secret, approvals). Dropped unrevoked, a room token was
        good at its Controller for the rest of its hour, to whoever saw it (a hostile
        Controller, a log) and held the DPoP key (left open by h24); the manager keeps
        every room token and, since a logout refuses every manager token of its key
        issued before it, ``cleanroom logout`` still reaches those dropped unrevoked.
        """
        from cleanroom.client.manager import ManagerClient

        record = self._tokens()
        now = clock()
        manager_key = _resource_key(None, None, None)
        alive = [  # the manager's own first: it acts as the user at the manager
            cached.access_token
            for _, cached in sorted(
                record.tokens.items() if record is not None else (),
                key=lambda item: (item[0] != manager_key, item[0]),
            )
            if cached.expires_at > now
        ]
        revoked = not_revoked = 0
        problem: str | None = None
        if alive:
            with ManagerClient(self.config.manager_url, transport=transport) as manager:
                for token in alive:
                    if problem is None and revoked == MAX_REVOKED_AT_ONCE:
                        problem = f"more than {MAX_REVOKED_AT_ONCE} at once"
                    if problem is None:
                        try:
                            manager.revoke(token)
                            revoked += 1
                            continue
                        except Error as error:
                            problem = str(error)
                    not_revoked += 1
        self.forget_token()
        return DroppedTokens(revoked, not_revoked, problem)

    def drop_token(
        self, key: str, token: str, *, transport: httpx.BaseTransport | None = None
    ) -> DroppedTokens:
        """Revoke ``token`` at the manager (RFC 7009, by the token itself: best effort, as
        :meth:`drop_tokens`), then drop it from the cache if it is still what ``key``
        keeps (another process may have kept a new one there since). Nothing else kept
        is touched."""
        from cleanroom.client.manager import ManagerClient

        problem: str | None = None
        with ManagerClient(self.config.manager_url, transport=transport) as manager:
            try:
                manager.revoke(token)
            except Error as error:
                problem = str(error)
        record = self._tokens()
        kept = record.tokens.get(key) if record is not None else None
        if record is not None and kept is not None and kept.access_token == token:
            tokens = {name: cached for name, cached in record.tokens.items() if name != key}
            document = record.model_copy(update={"tokens": tokens})
            write_atomic(
                self.directory / TOKEN_FILE, _json_bytes(document.model_dump()), _PRIVATE_FILE
            )
        if problem is None:
            return DroppedTokens(1)
        return DroppedTokens(0, 1, problem)

    def forget_token(self) -> None:
        """Drop every cached token, unrevoked (:meth:`drop_tokens` revokes them first)."""
        with contextlib.suppress(FileNotFoundError):
            (self.directory / TOKEN_FILE).unlink()

    def _tokens(self) -> _Tokens | None:
        """The token cache, if it is this client's at this manager with this DPoP key."""
        path = self.directory / TOKEN_FILE
        if not path.exists():
            return None
        try:
            record = _Tokens.model_validate(_parse_json(self._read_private(TOKEN_FILE), ""))
        except (ValidationError, ProfileError):
            return None  # a damaged (or older) cache is only a cache: log in again
        if (
            record.manager_url != self.config.manager_url
            or record.client_id != self.config.client_id
            or record.jkt != self.proof_key.jkt
        ):
            return None
        return record

    def _cached_token(self, key: str, now: float) -> str | None:
        cached = self._cached(key, now)
        return None if cached is None else cached.access_token

    def _cached(self, key: str, now: float) -> _CachedToken | None:
        record = self._tokens()
        cached = record.tokens.get(key) if record is not None else None
        if cached is None or not token_usable(cached.expires_at, cached.issued_at, now):
            return None
        return cached

    def _cache_token(self, key: str, access: AccessToken, now: float) -> None:
        record = self._tokens()
        kept = {
            name: cached
            for name, cached in (record.tokens.items() if record is not None else ())
            if token_usable(cached.expires_at, cached.issued_at, now) and name != key
        }
        kept[key] = _CachedToken(
            access_token=access.access_token,
            expires_at=int(access.expires_at),
            issued_at=access.issued_at,
        )
        while len(kept) > MAX_CACHED_TOKENS:  # the soonest to expire go first
            del kept[min(kept, key=lambda name: kept[name].expires_at)]
        document = _Tokens(
            manager_url=self.config.manager_url,
            client_id=self.config.client_id,
            jkt=self.proof_key.jkt,
            tokens=kept,
        )
        write_atomic(self.directory / TOKEN_FILE, _json_bytes(document.model_dump()), _PRIVATE_FILE)

    # -- files ---------------------------------------------------------------------

    def _what(self, file: str) -> str:
        return f"profile {self.name!r}: {file}"

    def _read_private(self, file: str) -> bytes:
        """A secret file, refused when others may read or write it."""
        path = self.directory / file
        try:
            with open(path, "rb") as handle:
                mode = os.fstat(handle.fileno()).st_mode
                if mode & (stat.S_IRWXG | stat.S_IRWXO):
                    raise ProfileError(
                        f"{self._what(file)} is accessible by others "
                        f"(mode {stat.S_IMODE(mode):04o}): chmod 600 {path}"
                    )
                return handle.read()
        except FileNotFoundError as error:
            raise ProfileError(
                f"{self._what(file)} is missing: run {self.command('configure')}"
            ) from error
        except OSError as error:
            raise ProfileError(f"{self._what(file)} cannot be read: {error.strerror}") from error


# The attestation package (dcap-qvl, X.509) is imported where it is used: `whoami`
# and the other commands that only read the profile never load it.


def _default_statuses() -> frozenset[str]:
    from cleanroom.attestation import DEFAULT_ACCEPTED_STATUSES

    return frozenset(DEFAULT_ACCEPTED_STATUSES)


@functools.lru_cache(maxsize=8)
def _anchor_from(data: bytes, what: str) -> TrustAnchor:
    """The root certificate in ``data`` (parsed once per process: every session checks
    the file's bytes against the configured fingerprint, then uses this)."""
    from cleanroom.attestation import AttestationError, TrustAnchor

    try:
        anchor = TrustAnchor.from_certificate(data)
    except AttestationError as error:
        raise ProfileError(f"{what} is not a root certificate: {error}") from error
    if anchor.is_intel_production:
        raise ProfileError(
            f"{what} is Intel's production root, which is trusted by default: "
            "omit --trust-simulator"
        )
    return anchor


def _pem(anchor: TrustAnchor) -> bytes:
    from cryptography import x509

    if anchor.root_der is None:  # Intel's root, which _anchor_from refused
        raise ProfileError("Intel's production root is not stored in a profile")
    certificate = x509.load_der_x509_certificate(anchor.root_der)
    return certificate.public_bytes(serialization.Encoding.PEM)


def _parse_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ProfileError(f"{what} is not valid JSON: {error}") from error


def _read_json(path: Path, what: str) -> Any:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ProfileError(f"{what} cannot be read: {error.strerror}") from error
    return _parse_json(data, what)


def _first_error(error: ValidationError, what: str) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or what
    return f"{where}: {first['msg']}"


__all__ = [
    "DEFAULT_PROFILE",
    "MIN_TOKEN_MARGIN_S",
    "PROFILE_ENV",
    "TOKEN_MARGIN_S",
    "TOKEN_MARGIN_SHARE",
    "Approval",
    "DroppedTokens",
    "Inspection",
    "NotApprovedError",
    "Profile",
    "ProfileConfig",
    "ProfileError",
    "RenewedToken",
    "profile_dir",
    "resolve_name",
    "token_margin",
    "token_usable",
    "write_atomic",
]
