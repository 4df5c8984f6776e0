"""The user's side of a clean room's data plane: attest, upload, run, download, receipt.

Every operation starts from what the user approved: the room's spec is fetched
from the (untrusted) manager, its Work-ID recomputed and compared with the Work-ID
the user pinned with ``approve``; then Phase 1 checks the Attester's evidence for
that Work-ID, and Phase 2 opens a session with the attested Worker for exactly
one purpose. Nothing the manager or the Controller says is believed unchecked.

    from cleanroom.client import CleanRoomClient, Profile

    client = CleanRoomClient(Profile.load("alice"))
    client.upload("overlap", "input_1", Path("data/alice"))
    ended = client.run("overlap", wait=True)      # the Worker's signed status
    assert ended.succeeded, ended.summary()
    result = client.download("overlap", "output_1", Path("results"))

What the Worker says about a room (its state, the inputs it holds, the run's end)
is believed only when signed by the attested Worker for a fresh nonce
(:meth:`CleanRoomClient.status`); the Controller's own account is never acted on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cleanroom.attestation import CheckResult
from cleanroom.attestation.collateral import QuoteBundle
from cleanroom.client import bounded
from cleanroom.client.audit import SavedReceipt
from cleanroom.client.collateral import ChosenCollateral, choose_collateral
from cleanroom.client.compute import ComputeClient, Evidence
from cleanroom.client.errors import ServerError, UntrustedAnswerError
from cleanroom.client.manager import ManagerClient, Room
from cleanroom.client.phase1 import AttestedWorker, verify_attester_evidence
from cleanroom.client.profile import Approval, Profile, write_atomic
from cleanroom.client.review import Review, approve_review, fetch_review, record_inspection
from cleanroom.errors import CheckFailed
from cleanroom.protocol.acks import Ack, UploadRefused, open_ack, open_upload_refusal
from cleanroom.protocol.allocator import tune_allocator
from cleanroom.protocol.encoding import canonical, from_b64u
from cleanroom.protocol.errors import AccessDenied, MessageFormatError, RecordError
from cleanroom.protocol.fate import SessionFate, open_fate, seal_fate_request
from cleanroom.protocol.handshake import ClientHandshake, SessionKeys
from cleanroom.protocol.handshake_v2 import SUITE, ClientHandshakeV2
from cleanroom.protocol.keys import load_spki
from cleanroom.protocol.manifest import (
    MAX_UPLOAD_MANIFEST,
    OUTPUT_MANIFEST_TYPE,
    SALT_BYTES,
    UPLOAD_MANIFEST_TYPE,
    check_salt,
    encoded_salt,
    input_salt,
)
from cleanroom.protocol.receipt import verify_receipt
from cleanroom.protocol.records import MAX_PLAINTEXT, RecordReceiver, RecordSender
from cleanroom.protocol.run_request import seal_run_request
from cleanroom.protocol.spec import (
    DownloadPurpose,
    FatePurpose,
    RunPurpose,
    SessionPurpose,
    UploadPurpose,
    WorkSpec,
    authorize,
)
from cleanroom.protocol.status import NONCE_BYTES, verify_status
from cleanroom.protocol.text import FoldedPaths, name_problem, shown

MANIFEST_NAME = ".manifest"
MAX_NAME_BYTES = 255  # a file or directory name on the disks a client writes (NAME_MAX)
UPLOADS_FILE = "uploads.json"

Progress = Callable[[int], None]


class TransferError(CheckFailed):
    """Data that arrived does not match what the attested Worker signed for."""


class ProtocolVersionError(CheckFailed):
    """The session would use a protocol version the user's policy does not allow."""


def _offers_no_v2(refusal: ServerError) -> bool:
    """The Controller has no v2 route (a v1-only compute server, or one that says so).

    Only a policy that allows v1 acts on this: a Controller can always pretend."""
    return (
        refusal.status in (404, 405)
        and refusal.check is None
        and refusal.detail
        in (
            "Not Found",
            "Method Not Allowed",
        )
    )


class UnknownObjectError(MessageFormatError):
    """An input or output id the room's spec does not have (unusable input, not a refusal)."""

    exit_code = 2  # the command line's "unusable input"


class RoomKindError(MessageFormatError):
    """An operation of the other kind of room: a run of a SQL room, a query or a budget
    of a function room, a run number where the room has none or none where it needs
    one. Unusable input, not a refusal: nothing was sent."""

    exit_code = 2  # the command line's "unusable input"


class BadArgumentError(MessageFormatError):
    """An argument that cannot name anything, e.g. a malformed session id (unusable
    input, not a refusal: nothing was sent)."""

    exit_code = 2  # the command line's "unusable input"


class InputTooLargeError(MessageFormatError):
    """An input that no Worker takes in one upload: refused before anything is sent."""

    exit_code = 2  # the command line's "unusable input"


class RunNotStartedError(CheckFailed):
    """The Worker says the run did not start although its start was acknowledged."""


class SessionClosedError(CheckFailed):
    """The Worker says, sealed to the runner, that her run session started nothing and
    now never will (``fate-closed``): asking again is safe."""


class RunNotEndedError(CheckFailed):
    """The Worker still says the run is going, long past the wall time its spec allows."""


SESSION_ID = re.compile(r"[A-Za-z0-9_-]{22}")
RUN_WAIT_SLACK_S = 900
"""How much longer than its spec's wall time (``resources.timeout_s``) a run may be said
to go on before the client stops waiting for it (``run-time``): staging its inputs and
sealing its outputs come outside that time."""


@dataclass(frozen=True)
class Attestation:
    """A Worker that passed Phase 1 for the clean room the user approved."""

    room: Room
    spec: WorkSpec
    worker: AttestedWorker
    simulated: bool  # the profile trusts a simulated root: this protects nothing
    collateral: ChosenCollateral | None = None
    protocol: int | None = None  # the version of the session opened with it, if any
    evidence: Evidence | None = None  # as it arrived: what a saved receipt keeps

    @property
    def checks(self) -> tuple[CheckResult, ...]:
        checks = self.worker.checks
        if self.collateral is not None:
            checks = (self.collateral.check(), *checks)
        if self.protocol is not None:
            expected = "v2 (X25519MLKEM768), or v1 where the policy allows it"
            actual = f"v2 ({SUITE})" if self.protocol == 2 else "v1 (P-256 ECDH): allowed"
            checks = (*checks, CheckResult("protocol-version", expected, actual, True, ""))
        return checks


@dataclass(frozen=True)
class UploadResult:
    input_id: str
    sha256: str  # SHA-256(JCS(manifest)) hex: what the receipt must record
    files: dict[str, int]  # relative path -> size
    bytes: int
    already: bool = False  # the Worker had exactly this input before (a retry): nothing new
    rows: int | None = None  # SQL rooms: the rows the Worker checked against the schema


@dataclass(frozen=True)
class WorkerStatus:
    """A room as its Worker says it is, signed for a fresh nonce and checked
    (docs/protocol.md, "Room status"): every field is the attested Worker's word."""

    worker_id: str
    work_id: str
    state: str  # collecting | running | done | failed
    inputs: dict[str, dict[str, str]]  # the inputs that arrived: id -> {by, sha256}
    uploading: tuple[str, ...]
    outputs: tuple[str, ...]  # ready to download
    run_status: str | None  # the receipt's status once the run ended
    exit_code: int | None
    detail: str | None  # why the room failed (the Worker's text: show it escaped)

    @property
    def ended(self) -> bool:
        return self.state in ("done", "failed")

    @property
    def succeeded(self) -> bool:
        return self.state == "done" and self.run_status == "succeeded"

    def summary(self) -> str:
        """One line: how the run ended (for a room still collecting or running: its state)."""
        if self.state == "done":
            code = "none" if self.exit_code is None else str(self.exit_code)
            return f"the run ended {self.run_status} (exit status {code})"
        if self.state == "failed":
            return "the run failed in the Worker" + (f": {self.detail}" if self.detail else "")
        return f"the room is {self.state}"

    def to_json(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "work_id": self.work_id,
            "state": self.state,
            "inputs": self.inputs,
            "uploading": list(self.uploading),
            "outputs": list(self.outputs),
            "run": None
            if self.run_status is None
            else {"status": self.run_status, "exit_code": self.exit_code},
            "detail": self.detail,
        }


@dataclass(frozen=True)
class RoomStatus:
    """A room: the manager's record (untrusted), the spec its Work-ID was recomputed
    from, the user's approval, and the Worker's signed status or why there is none."""

    room: Room
    spec: WorkSpec
    approval: Approval | None
    worker: WorkerStatus | None
    unverified: str | None = None  # why the Worker's status could not be verified
    # Then what the Controller says of its Worker: unverified, to show as such, never
    # to act on (None when it could not be asked either).
    controller: dict[str, Any] | None = None

    @property
    def approved(self) -> bool:
        return self.approval is not None and self.approval.work_id == self.spec.work_id


@dataclass(frozen=True)
class VerifiedReceipt:
    receipt: dict[str, Any]
    attestation: Attestation
    signature: bytes = b""


@dataclass(frozen=True)
class DownloadResult:
    output_id: str
    directory: Path
    files: dict[str, int]
    sha256: str
    receipt: VerifiedReceipt


@dataclass
class _Upload:
    """Frames of one input: each file in records of at most 1 MiB, then the manifest."""

    keys: SessionKeys
    input_id: str
    salt: bytes  # the manifest's: protocol.manifest.input_salt
    files: list[tuple[str, Path]]
    progress: Progress | None
    manifest: dict[str, Any] = field(default_factory=dict)
    sent: int = 0

    def frames(self) -> Iterator[bytearray]:
        """The frame stream: each record already length-prefixed, built in one buffer."""
        sender = RecordSender(self.keys.client_to_worker, self.keys.session_id)
        listed: dict[str, dict[str, Any]] = {}
        for relative, path in self.files:
            digest, size = hashlib.sha256(), 0
            with path.open("rb") as handle:
                chunk = handle.read(MAX_PLAINTEXT)
                while True:
                    following = handle.read(MAX_PLAINTEXT) if chunk else b""
                    digest.update(chunk)
                    size += len(chunk)
                    yield sender.seal_framed(
                        f"{self.input_id}/{relative}", chunk, final=not following
                    )
                    self._advance(len(chunk))
                    if not following:
                        break
                    chunk = following
            listed[relative] = {"size": size, "sha256": digest.hexdigest()}
        self.manifest = _upload_manifest(self.input_id, self.salt, listed)
        # In records of at most 1 MiB, as the Worker sends an output's: 20,000 files make
        # a manifest of 2.2 MiB, which as one record failed with a ValueError once every
        # file had been sent (h19's red team). The Worker joins them.
        manifest = canonical(self.manifest)
        for start in range(0, len(manifest), MAX_PLAINTEXT):
            end = start + MAX_PLAINTEXT
            yield sender.seal_framed(
                f"{self.input_id}/{MANIFEST_NAME}", manifest[start:end], final=end >= len(manifest)
            )

    def _advance(self, count: int) -> None:
        self.sent += count
        if self.progress is not None:
            self.progress(count)


def _upload_manifest(input_id: str, salt: bytes, listed: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": UPLOAD_MANIFEST_TYPE,
        "input": input_id,
        "salt": encoded_salt(salt),
        "files": listed,
    }


def _check_manifest_size(input_id: str, files: list[tuple[str, Path]]) -> None:
    """Refuse (``input-manifest-size``), before anything is sent, an input whose manifest
    would be larger than a Worker takes: its size is known from the names and the sizes
    (a digest is always 64 hex digits, a salt 43 characters)."""
    listed = {name: {"size": path.stat().st_size, "sha256": "0" * 64} for name, path in files}
    size = len(canonical(_upload_manifest(input_id, bytes(SALT_BYTES), listed)))
    if size > MAX_UPLOAD_MANIFEST:
        raise InputTooLargeError(
            "input-manifest-size",
            f"a manifest of at most {MAX_UPLOAD_MANIFEST} bytes",
            f"{size} bytes for {len(files)} files",
            f"the input has too many files for one upload ({len(files)}): the Worker takes "
            f"a manifest of at most {MAX_UPLOAD_MANIFEST >> 20} MiB, a name and about 90 "
            "bytes a file; nothing was sent",
            "pack the files into fewer (a tar or zip archive, or one file a table) and have "
            "the function read those",
        )


def _input_files(source: Path) -> list[tuple[str, Path]]:
    """The regular files under ``source``, sorted (or ``source`` alone, a regular file,
    under its own name); links and special files are refused."""
    if source.is_symlink():
        raise MessageFormatError(
            "input-file", "a regular file or a directory", str(source), "links are not uploaded"
        )
    if source.is_file():
        return [(source.name, source)]
    if not source.is_dir():
        raise MessageFormatError(
            "input-directory", "a file or a directory", str(source), "no such file or directory"
        )
    files: list[tuple[str, Path]] = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise MessageFormatError(
                "input-file", "regular files and directories", relative, "links are not uploaded"
            )
        if path.is_file():
            files.append((relative, path))
    if not files:
        raise MessageFormatError("input-directory", "at least one file", str(source), "empty")
    return files


def _safe_relative(output_id: str, name: str) -> PurePosixPath:
    prefix = output_id + "/"
    relative = name.removeprefix(prefix)
    path = PurePosixPath(relative)
    if (
        not name.startswith(prefix)
        or not relative
        or path.is_absolute()
        or "\\" in relative
        or "\x00" in relative
        or any(part in ("", ".", "..") for part in relative.split("/"))
    ):
        raise TransferError("output-path", f"{prefix}<relative path>", name, "unsafe output path")
    return path


def _check_new_name(relative: str, names: FoldedPaths) -> None:
    """An output file's name (below its output) is one to write and show as it is, before
    anything of it touches the disk: the Worker leaves out others, but the client checks
    what it writes itself (``output-name``, ``output-name-clash``)."""
    problem = name_problem(relative)
    longest = max(len(part.encode()) for part in relative.split("/"))
    if problem is None and longest > MAX_NAME_BYTES:
        problem = f"a part of {longest} bytes"
    if problem is not None:
        raise TransferError(
            "output-name",
            f"names of at most {MAX_NAME_BYTES} bytes a part, without a character a "
            "terminal acts on or does not show, a part that begins with '-', a .git or "
            "what Windows reads as more than a name",
            shown(relative),
            f"an output file's name has {problem}",
        )
    other = names.add(relative)
    if other is not None:
        raise TransferError(
            "output-name-clash",
            "names a disk that ignores case and Unicode normalisation holds apart",
            f"{shown(other)} and {shown(relative)}",
            "two output files would be one on such a disk (macOS, Windows)",
        )


class CleanRoomClient:
    """The whole flow for one user (one :class:`Profile`); see the module docstring."""

    def __init__(
        self,
        profile: Profile,
        *,
        clock: Callable[[], float] = time.time,
        compute_transport: Any = None,
    ) -> None:
        self.profile = profile
        self._clock = clock
        self._compute_transport = compute_transport
        self._manager: ManagerClient | None = None

    @property
    def manager(self) -> ManagerClient:
        """The management server, logged in with the profile's credentials."""
        if self._manager is None:
            self._manager = self.profile.manager()
        return self._manager

    def _compute(self, room: Room) -> ComputeClient:
        """The room's Controller, with the user's token for that room on that server only,
        renewed as it nears its expiry (a run waited for past the hour a token lives)."""
        token = self.profile.renewed_token(
            resource=room.compute_url, room=room.name, project=room.project, work_id=room.work_id
        )
        token()  # fetched now: a refusal is the manager's, before the Controller is asked
        return ComputeClient(
            room.compute_url,
            token=token,
            dpop_key=self.profile.proof_key,
            transport=self._compute_transport,
        )

    # -------------------------------------------------------------- approval

    def inspect(
        self, name: str, *, source: Path | None = None, project: str | None = None
    ) -> Review:
        """Review room ``name`` as served now (:func:`cleanroom.client.review.review`).

        The room is ``project``'s, else the approved room's project (if any). The
        function ID and Work-ID are recomputed from the bytes and the handler's
        module located as the Worker imports it; the inspection is recorded in the
        profile. ``source`` (must not exist) receives the unpacked function.
        """
        reviewed = fetch_review(
            self.manager,
            name,
            project=project or self._project(name),
            you=self.profile.user_id,
            source=source,
        )
        record_inspection(self.profile, reviewed)
        return reviewed

    def approve(self, name: str, work_id: str, *, project: str | None = None) -> Approval:
        """Pin ``work_id`` for room ``name``, only if the room still has that Work-ID.

        Reviews the room (of ``project``, else of the approved room's project) again
        now and refuses (``work-id-reviewed``) when its Work-ID is another: pass the
        Work-ID you inspected, never the room's current one unseen.
        """
        reviewed = fetch_review(
            self.manager, name, project=project or self._project(name), you=self.profile.user_id
        )
        return approve_review(self.profile, reviewed, work_id)

    def _project(self, name: str) -> str | None:
        """The project of the room ``name`` the user approved, to ask the manager for that
        room alone: another project's room given the same name is neither the answer nor
        a reason to refuse (``room-ambiguous``). None if none was approved."""
        approval = self.profile.approval(name)
        return None if approval is None else approval.project

    def approved(self, name: str) -> tuple[Room, WorkSpec]:
        """The room and its spec, refused unless its recomputed Work-ID is the pinned one."""
        room = self.manager.room(name, self._project(name))
        spec = WorkSpec.parse(room.spec)
        self.profile.require_approval(name, spec.work_id)
        return room, spec

    # -------------------------------------------------------------- Phase 1

    def attest(self, name: str) -> Attestation:
        """Phase 1 for the Worker of ``name``: every check of docs/protocol.md, or raise."""
        room, spec = self.approved(name)
        with self._compute(room) as compute:
            return self._attest(compute, room, spec)

    def _attest(self, compute: ComputeClient, room: Room, spec: WorkSpec) -> Attestation:
        nonce = secrets.token_bytes(32)
        return self._check_evidence(room, spec, compute.attestation(room.name, nonce), nonce)

    def _check_evidence(
        self,
        room: Room,
        spec: WorkSpec,
        evidence: Evidence,
        nonce: bytes,
        work_id: str | None = None,
    ) -> Attestation:
        """Every Phase 1 check of ``evidence`` for ``nonce`` and ``spec`` (``work_id``:
        its Work-ID where the caller computed it already; a JCS of the whole spec, 0.1
        to 0.3 ms)."""
        now = int(self._clock())
        try:
            collateral = choose_collateral(
                quote=evidence.quote,
                served=evidence.collateral,
                served_error=evidence.collateral_error,
                at=now,
                pccs_url=self.profile.config.pccs_url,
                collateral_from=self.profile.config.collateral_from,
            )
        except CheckFailed as error:
            # The attestation layer's hints name `cleanroom configure`: make it this
            # profile's (the command a user can paste as it is).
            if error.hint is not None:
                error.hint = error.hint.replace(
                    "cleanroom configure", self.profile.command("configure")
                )
            raise
        worker = verify_attester_evidence(
            claims=evidence.claims,
            quote=evidence.quote,
            collateral=collateral.collateral,
            nonce=nonce,
            approved_work_id=spec.work_id if work_id is None else work_id,
            expected_worker_mrenclaves=self.profile.expected_worker_mrenclaves,
            attester_policy=self.profile.attestation_policy(),
            trust=self.profile.trust_anchor(),
            at=now,
        )
        self._check_worker(room.name, worker.work_id, worker.worker_id)
        return Attestation(
            room,
            spec,
            worker,
            simulated=self.profile.simulated,
            collateral=collateral,
            evidence=evidence,
        )

    def _check_worker(self, name: str, work_id: str, worker_id: str) -> None:
        """One Worker per approved Work-ID for this user (``worker-changed``).

        The Controller can start another Worker of a Work-ID from the spec and bundle
        it keeps, and that Worker passes every Phase 1 check: a genuine enclave of the
        approved Work-ID. Each of two such Workers holds its own inputs, runs, receipts
        and privacy budget, so sessions with both would split this user's data between
        rooms that each sign for themselves (an input given twice, a fresh budget over
        it, a status or receipt of the room that does not hold it). The first Worker of
        an approved Work-ID that this profile attests is pinned with the approval, and
        every later session, status and receipt must come from it. A room whose Worker
        was lost is redeployed, which makes a new Work-ID.
        """
        records = self._records().get(name, {})
        # Earlier versions recorded the Worker of each input under DP, in uploads.json.
        earlier = records.get("workers", {}) if records.get("work_id") == work_id else {}
        first = next((str(worker) for worker in earlier.values()), worker_id)
        pinned = self.profile.pin_worker(name, work_id, first)
        if pinned is not None and pinned != worker_id:
            raise UntrustedAnswerError(
                "worker-changed", pinned, worker_id,
                f"another Worker of clean room {name!r} answered than the one you used "
                "before (the same Work-ID in another enclave, which holds its own inputs, "
                "runs and privacy budget): none of your data went to it",
                "if the room's Worker was lost, have the room redeployed (a new Work-ID) "
                "and approve that",
            )  # fmt: skip

    def permitted(self, name: str, spec: WorkSpec, purpose: SessionPurpose) -> None:
        """The approved spec lets this user do what ``purpose`` says, decided before
        anything is sent (no token, no session): by the rule the Worker applies,
        :func:`cleanroom.protocol.spec.authorize`, on the spec the approved Work-ID pins,
        so its answer is the Worker's. A refusal names that rule (``input-owner``,
        ``output-recipient``, ``runner``), who may and who you are; the Worker checks
        the same again at every session."""
        try:
            authorize(spec, self.profile.user_id, purpose)
        except AccessDenied as denied:
            raise AccessDenied(
                denied.check,
                denied.expected,
                denied.actual,
                f"{denied.message} of clean room {name}, by the spec of the Work-ID you "
                "approved; nothing was sent",
                f"you are {self.profile.user_id} (profile {self.profile.name}): use the "
                "profile the spec names, or ask the deployer for a room that grants it "
                f"(`{self.profile.command(f'inspect {name}')}` shows who may do what)",
            ) from None

    # ---------------------------------------------------- attested session

    def _open(
        self,
        compute: ComputeClient,
        room: Room,
        spec: WorkSpec,
        purpose: SessionPurpose,
    ) -> tuple[Attestation, SessionKeys]:
        """Protocol v2, one round trip: every Phase 1 check on the evidence for this
        session's nonce, then the Worker's answer under the key that evidence names."""
        work_id = spec.work_id
        handshake = ClientHandshakeV2(
            user_key=self.profile.user_key, work_id=work_id, purpose=purpose
        )
        answer = compute.attested_session(
            room.name, handshake.nonce, handshake.init, handshake.init_signature
        )
        if answer.refusal is not None and _offers_no_v2(answer.refusal):
            return self._open_v1(compute, room, spec, purpose)
        if answer.evidence is None:
            raise answer.refusal or MessageFormatError(
                "attested-session", "evidence", "none", "no evidence"
            )
        # The evidence first, even beside a refusal: what the client checks itself
        # comes before what a server merely says.
        attestation = self._check_evidence(room, spec, answer.evidence, handshake.nonce, work_id)
        if answer.refusal is not None:
            raise answer.refusal
        worker_key = load_spki(attestation.worker.worker_key_spki, "worker_key")
        keys = handshake.finish(answer.resp, answer.signature, worker_key=worker_key)
        return dataclasses.replace(attestation, protocol=2), keys

    def _open_v1(
        self,
        compute: ComputeClient,
        room: Room,
        spec: WorkSpec,
        purpose: SessionPurpose,
    ) -> tuple[Attestation, SessionKeys]:
        """Protocol v1 (two round trips, P-256 only), only where the policy allows it."""
        if not self.profile.config.allow_protocol_v1:
            raise ProtocolVersionError(
                "protocol-version",
                f"v2 ({SUITE})",
                "a compute server that offers only v1",
                "protocol v1 is not allowed by your policy",
                hint="use a compute server with v2, or allow v1 with "
                "`cleanroom configure --allow-protocol-v1` (no post-quantum key exchange)",
            )
        attestation = self._attest(compute, room, spec)
        keys = self._session(compute, attestation, purpose)
        return dataclasses.replace(attestation, protocol=1), keys

    def _next_session(
        self,
        compute: ComputeClient,
        attestation: Attestation,
        purpose: SessionPurpose,
    ) -> SessionKeys:
        """One more session with a Worker attested in this connection, in the version
        its first session used (v1 only if that was the policy's allowed fall-back):
        the Worker's answer is checked under the key the evidence named."""
        if attestation.protocol == 1:
            return self._session(compute, attestation, purpose)
        worker = attestation.worker
        handshake = ClientHandshakeV2(
            user_key=self.profile.user_key, work_id=worker.work_id, purpose=purpose
        )
        resp, signature = compute.open_session(
            attestation.room.name, handshake.init, handshake.init_signature
        )
        worker_key = load_spki(worker.worker_key_spki, "worker_key")
        return handshake.finish(resp, signature, worker_key=worker_key)

    # ------------------------------------------------------ Phase 2 (v1)

    def _session(
        self,
        compute: ComputeClient,
        attestation: Attestation,
        purpose: SessionPurpose,
    ) -> SessionKeys:
        worker = attestation.worker
        handshake = ClientHandshake(
            user_key=self.profile.user_key,
            work_id=worker.work_id,
            worker_id=worker.worker_id,
            worker_key=load_spki(worker.worker_key_spki, "worker_key"),
            quote_sha256=worker.quote_sha256,
            purpose=purpose,
        )
        resp, signature = compute.open_session(
            attestation.room.name, handshake.init, handshake.init_signature
        )
        return handshake.finish(resp, signature)

    # ------------------------------------------------------------------ data

    def upload(
        self, name: str, input_id: str, source: Path, *, progress: Progress | None = None
    ) -> UploadResult:
        """Encrypt ``source`` (a directory's files, or one file) to the attested Worker as
        ``input_id``. Uploading exactly the same again is acknowledged as ``already``.

        Sets glibc's malloc thresholds for this process (:mod:`cleanroom.protocol.allocator`).
        """
        tune_allocator()
        room, spec = self.approved(name)
        _known(input_id, spec.inputs, "input", name)
        files = _input_files(source)
        _check_manifest_size(input_id, files)
        purpose = UploadPurpose(op="upload", input=input_id)
        self.permitted(name, spec, purpose)
        with self._compute(room) as compute:
            attestation, keys = self._open(compute, room, spec, purpose)
            salt = input_salt(self.profile.user_key, spec.work_id, input_id)
            upload = _Upload(keys, input_id, salt, files, progress)
            try:
                try:
                    answer = compute.upload_stream(
                        room.name,
                        keys.session_id,
                        upload.frames(),
                        answer_within=_acknowledged_within(spec),
                    )
                except ServerError as error:
                    relatives = [relative for relative, _path in files]
                    raise _opened_refusal(error, keys, input_id, relatives) from None
                digest = hashlib.sha256(canonical(upload.manifest)).hexdigest()
                ack = open_ack(keys, answer, input_id=input_id, sha256=digest, size=upload.sent)
            except UploadRefused:
                raise  # the Worker's refusal, sealed in this session: nothing stored
            except (ServerError, CheckFailed) as unconfirmed:
                # The Controller's word (a refusal in the clear, a 502, a cut, no or a
                # garbled acknowledgement): it may have relayed the body all the same, or
                # burnt the session with a frame of it. The Worker says, sealed, whether
                # this session stored the input (and what its acknowledgement said, of
                # exactly this input, digest and bytes); if not, it never will.
                digest = hashlib.sha256(canonical(upload.manifest)).hexdigest()
                ack = self._settle_upload(
                    compute, attestation, keys.session_id, unconfirmed, name,
                    uploaded=(input_id, digest, upload.sent),
                )  # fmt: skip
        self._remember_upload(name, spec.work_id, input_id, digest)
        sizes = {path: entry["size"] for path, entry in upload.manifest["files"].items()}
        return UploadResult(input_id, digest, sizes, upload.sent, ack.already, ack.rows)

    def _settle_upload(
        self,
        compute: ComputeClient,
        attestation: Attestation,
        session_id: str,
        answer: ServerError | CheckFailed,
        name: str,
        *,
        uploaded: tuple[str, str, int],
    ) -> Ack:
        """What the acknowledgement said if upload session ``session_id``, whose upload
        got ``answer`` (one the client cannot confirm), stored its input or found it
        there, as the Worker says sealed (of ``uploaded``: this input, manifest digest
        and bytes; another's is ``upload-ack``); else
        :class:`SessionClosedError`: it stored nothing, and never will (uploading again
        is safe), under the check ``answer`` named (``input-complete``, ``record-counter``
        ...: why, as the compute server relayed it) or ``fate-closed`` where it named
        none (a ``502``, a cut); ``upload-unconfirmed`` when the Worker's sealed answer
        cannot be had either."""
        try:
            fate = self._fate(compute, attestation, session_id, upload=True, uploaded=uploaded)
        except (ServerError, CheckFailed) as failure:
            raise UntrustedAnswerError(
                "upload-unconfirmed",
                "the Worker's sealed answer: what became of the upload",
                f"{answer}; asked what became of it: {failure}",
                "the compute server's answer cannot be confirmed, and neither can what "
                "became of the upload: if the compute server sent it on whole, it is in",
                f"`{self.profile.command(f'fate {name} -- {session_id}')}` asks the Worker "
                "again; or upload again: the same content is acknowledged as already there",
            ) from None
        acknowledged = fate.acknowledged
        if acknowledged is None:
            named = answer.check is not None
            raise SessionClosedError(
                answer.check or "fate-closed",
                answer.expected if named else "the input stored",
                answer.actual if named else "nothing stored, and nothing ever will be",
                f"this upload stored nothing (the compute server answered: {answer}): the "
                "Worker says, sealed to you, that this upload session stored nothing and "
                "never will",
                "uploading again is safe (if the room had this content already, the Worker "
                "acknowledges it as already there)",
            ) from None
        return acknowledged

    def run(self, name: str, *, wait: bool = False, poll_s: float = 0.5) -> WorkerStatus:
        """Start the run (only a runner may); the Worker's signed status after, or, with
        ``wait``, once the run ended (see :attr:`WorkerStatus.succeeded`)."""
        room, spec = self.approved(name)
        if spec.sql is not None:  # before any session: its Worker answers a bare 400
            raise RoomKindError(
                "runtime",
                "a room that runs a function",
                "a SQL room",
                f"{name} is a SQL room: it has no run of its own, each query is one",
                f"`{self.profile.command(f'query {name} --name QUERY')}` (its queries: "
                f"{', '.join(sorted(spec.sql.queries)) or 'none'})",
            )
        self.permitted(name, spec, RunPurpose(op="run"))
        with self._compute(room) as compute:
            attestation, keys = self._open(compute, room, spec, RunPurpose(op="run"))
            # A record only this session's keys seal: the Controller cannot start a run
            # with a session it kept, or with this init replayed to another Worker.
            try:
                compute.run(room.name, keys.session_id, seal_run_request(keys))  # not believed
            except (ServerError, CheckFailed) as answer:
                # The Controller's word (a refusal in the clear, a 502, a cut): it may
                # have relayed the request all the same, and the run go on. The Worker
                # says, sealed, whether it ran; if not, it never will.
                fate = self._settle(compute, attestation, keys.session_id, answer, name)
                if not fate.ran:
                    why, what_to_do = self._why_not_run(compute, attestation, name, spec)
                    raise SessionClosedError(
                        "fate-closed",
                        "a run started",
                        "no run, and none from this request",
                        f"the run did not start (the compute server answered: {answer}); "
                        f"the Worker says, sealed to you, that this request never will{why}",
                        what_to_do,
                    ) from None
            status = self._status(compute, attestation)
            if status.state == "collecting":
                not_started = RunNotStartedError(
                    "run-started",
                    "running or ended",
                    status.state,
                    "the Worker did not start the run it was asked to",
                )
                # The Controller may hold the request and send it later: closed now, or
                # found to have run in between.
                if not self._settle(compute, attestation, keys.session_id, not_started, name).ran:
                    raise not_started
                status = self._status(compute, attestation)
            # The Worker's sandbox ends the function at the spec's wall time, but the
            # host can pause the run (SIGSTOP its supervisor) while the Worker goes on
            # signing "running": a bound of our own, or the command waits for ever.
            bound = spec.resources.timeout_s + RUN_WAIT_SLACK_S
            started = time.monotonic()
            while wait and not status.ended:
                waited = time.monotonic() - started
                if waited > bound:
                    raise RunNotEndedError(
                        "run-time",
                        f"an end within {bound} s (the spec's wall time "
                        f"{spec.resources.timeout_s} s and {RUN_WAIT_SLACK_S} s)",
                        f"{status.state} after {int(waited)} s",
                        "the Worker still says the run is going, past the wall time its "
                        "spec allows: the compute server may be holding it",
                        f"`{self.profile.command(f'status {name}')}` shows where it is",
                    )
                time.sleep(poll_s)
                status = self._status(compute, attestation)
        return status

    def fate(self, name: str, session_id: str) -> SessionFate:
        """What became of run or upload session ``session_id`` of yours (the id a refusal
        named): the Worker says, sealed to a new session of yours, that it ran (and which
        query run), or stored its input, or that it started or stored nothing and, from
        now on, never will."""
        if not isinstance(session_id, str) or not SESSION_ID.fullmatch(session_id):
            raise BadArgumentError(
                "session-id",
                "a session id (22 characters of base64url)",
                session_id,
                f"{session_id!r} is not a session id: a refusal names one in 22 characters "
                "of base64url",
            )
        room, spec = self.approved(name)
        with self._compute(room) as compute:
            attestation = self._attest(compute, room, spec)
            return self._fate(compute, attestation, session_id, upload=None)

    def _fate(
        self,
        compute: ComputeClient,
        attestation: Attestation,
        session_id: str,
        *,
        upload: bool | None = False,
        uploaded: tuple[str, str, int] | None = None,
    ) -> SessionFate:
        """The Worker's sealed answer about ``session_id``: a run session's (``upload``
        false), an upload session's (true; ``uploaded``: the input, digest and bytes it
        sent, which a ``stored`` answer's acknowledgement must be of), or either's
        (None)."""
        keys = self._next_session(compute, attestation, FatePurpose(op="fate", session=session_id))
        sealed = compute.fate(attestation.room.name, keys.session_id, seal_fate_request(keys))
        sql = attestation.spec.sql is not None
        return open_fate(
            keys, sealed, session=session_id, sql=sql, upload=upload, uploaded=uploaded
        )

    def _settle(
        self,
        compute: ComputeClient,
        attestation: Attestation,
        session_id: str,
        answer: Exception,
        name: str,
    ) -> SessionFate:
        """What became of run session ``session_id``, whose request got ``answer``, one
        the client cannot confirm; ``run-unconfirmed`` (``query-unconfirmed`` in a SQL
        room) when the Worker's sealed answer cannot be had either."""
        try:
            return self._fate(compute, attestation, session_id)
        except (ServerError, CheckFailed) as failure:
            sql = attestation.spec.sql is not None
            raise UntrustedAnswerError(
                "query-unconfirmed" if sql else "run-unconfirmed",
                "the Worker's sealed answer: what became of the request",
                f"{answer}; asked what became of it: {failure}",
                f"the compute server's answer cannot be confirmed, and neither can what "
                f"became of the {'query' if sql else 'run request'}: if the compute server "
                f"sent it on all the same, it ran{' (and spent its ε)' if sql else ''}",
                f"`{self.profile.command(f'fate {name} -- {session_id}')}` asks the Worker "
                "again: before asking again, run it",
            ) from None

    def status(self, name: str) -> RoomStatus:
        """Room ``name`` as the manager records it and as its Worker signs it now.

        The Worker is attested for the Work-ID recomputed from the spec the manager
        serves (approved by the user or not: :attr:`RoomStatus.approved` says), and
        its status is believed only under that attested key. When that fails, the
        status says why, and holds no Worker state at all.
        """
        room = self.manager.room(name, self._project(name))
        spec = WorkSpec.parse(room.spec)
        approval = self.profile.approval(name)
        try:
            with self._compute(room) as compute:
                attestation = self._attest(compute, room, spec)
                worker = self._status(compute, attestation)
        except (CheckFailed, ServerError) as error:
            return RoomStatus(room, spec, approval, None, str(error), self._controller_says(room))
        return RoomStatus(room, spec, approval, worker)

    def _controller_says(self, room: Room) -> dict[str, Any] | None:
        try:
            with self._compute(room) as compute:
                return compute.state(room.name)
        except (CheckFailed, ServerError):
            return None

    def _why_not_run(
        self, compute: ComputeClient, attestation: Attestation, name: str, spec: WorkSpec
    ) -> tuple[str, str]:
        """Why a run request started nothing, from the Worker's signed status (the
        Controller's refusal is words only), and what to do: a room that ran already
        (a function room runs once) or inputs that have not arrived; else only that
        asking again is safe. Nothing is concluded when the status cannot be had."""
        again = f"asking again is safe: `{self.profile.command(f'run {name}')}`"
        try:
            status = self._status(compute, attestation)
        except (ServerError, CheckFailed):
            return "", again
        if status.state != "collecting":
            return (
                f"; it signs that {name} has had its run ({status.summary()}): a function "
                "room runs once",
                f"`{self.profile.command(f'status {name}')}` shows it; each recipient "
                f"downloads an output: `{self.profile.command(f'data cp {name}:OUTPUT DIR')}`",
            )
        missing = sorted(set(spec.inputs) - set(status.inputs))
        if missing:
            upload = self.profile.command(f"data cp DIR {name}:{missing[0]}")
            verb = "has" if len(missing) == 1 else "have"
            return (
                f"; it signs that {', '.join(missing)} {verb} not arrived",
                f"each input's owner uploads it first (`{upload}`), then "
                f"`{self.profile.command(f'run {name}')}`",
            )
        return "", again

    def _status(self, compute: ComputeClient, attestation: Attestation) -> WorkerStatus:
        nonce = secrets.token_bytes(NONCE_BYTES)
        document, signature = compute.status(attestation.room.name, nonce)
        checked = verify_status(
            document,
            signature,
            worker_key=load_spki(attestation.worker.worker_key_spki, "worker_key"),
            spec=attestation.spec,
            nonce=nonce,
        )
        run = checked["run"]
        return WorkerStatus(
            worker_id=attestation.worker.worker_id,
            work_id=checked["work_id"],
            state=checked["state"],
            inputs=checked["inputs"],
            uploading=tuple(checked["uploading"]),
            outputs=tuple(checked["outputs"]),
            run_status=None if run is None else run["status"],
            exit_code=None if run is None else run["exit_code"],
            detail=checked["detail"],
        )

    def state(self, name: str) -> dict[str, Any]:
        """The Worker's state as the Controller reports it: unverified, never acted on
        (:meth:`status` is the Worker's signed word)."""
        room = self.manager.room(name, self._project(name))
        with self._compute(room) as compute:
            return compute.state(room.name)

    def receipt(self, name: str) -> VerifiedReceipt:
        """The run receipt, signed by the Worker that Phase 1 just attested again."""
        room, spec = self.approved(name)
        _one_run(
            spec, name, "it signs one receipt per query run "
            "(cleanroom.client.sqlrooms.receipt; cleanroom receipt ROOM --run N)",
        )  # fmt: skip
        with self._compute(room) as compute:
            attestation = self._attest(compute, room, spec)
            return self._receipt(compute, attestation)

    def _receipt(self, compute: ComputeClient, attestation: Attestation) -> VerifiedReceipt:
        receipt, signature = compute.receipt(attestation.room.name)
        verified = verify_receipt(
            receipt,
            signature,
            worker_key=load_spki(attestation.worker.worker_key_spki, "worker_key"),
            spec=attestation.spec,
            own_inputs=self._own_uploads(attestation.room.name, attestation.spec.work_id),
        )
        return VerifiedReceipt(verified, attestation, signature)

    def save_receipt(self, name: str, directory: Path) -> tuple[VerifiedReceipt, Path]:
        """The run receipt, verified as :meth:`receipt` does, saved into ``directory`` (new
        or empty) with the spec, the claims, the quote and its collateral, for anyone to
        check offline (:func:`cleanroom.client.audit.verify_saved_receipt`)."""
        verified = self.receipt(name)
        return verified, self._saved(verified).write(directory)

    def _saved(
        self, verified: VerifiedReceipt, detail: dict[str, Any] | None = None
    ) -> SavedReceipt:
        """A verified receipt with the evidence that attested its signer, to save."""
        attestation = verified.attestation
        if attestation.evidence is None or attestation.collateral is None:
            raise MessageFormatError("saved-receipt", "evidence", "none", "nothing to save")
        return SavedReceipt(
            room=attestation.room.name,
            spec=attestation.room.spec,
            receipt=verified.receipt,
            signature=verified.signature,
            claims=attestation.evidence.claims,
            quote=QuoteBundle(
                quote=attestation.evidence.quote,
                collateral_json=attestation.collateral.collateral.to_json(),
                saved_at=int(self._clock()),
                source=attestation.collateral.source,
            ),
            detail=detail,
        )

    def download(
        self,
        name: str,
        output_id: str,
        target: Path,
        *,
        progress: Progress | None = None,
        on_receipt: Callable[[VerifiedReceipt], None] | None = None,
    ) -> DownloadResult:
        """Decrypt ``output_id`` into ``target`` (new or empty), checked against the receipt.

        ``on_receipt`` is called with the verified receipt before anything is written
        (e.g. to say that the run failed: its outputs are what it left); raising there
        stops the download. The receipt is in the result too.

        Sets glibc's malloc thresholds for this process (:mod:`cleanroom.protocol.allocator`).
        """
        tune_allocator()
        _check_output_directory(target)
        room, spec = self.approved(name)
        _known(output_id, spec.outputs, "output", name)
        _one_run(
            spec, name, f"each query run has its own {output_id} "
            "(cleanroom.client.sqlrooms.download_result; cleanroom data cp … --run N)",
        )  # fmt: skip
        purpose = DownloadPurpose(op="download", output=output_id)
        self.permitted(name, spec, purpose)
        with self._compute(room) as compute:
            attestation, keys = self._open(compute, room, spec, purpose)
            receipt = self._receipt(compute, attestation)
            if on_receipt is not None:
                on_receipt(receipt)
            recorded = receipt.receipt["outputs"][output_id]["sha256"]
            sizes = self._download_checked(
                compute, room.name, keys, output_id, recorded, target, progress
            )
        return DownloadResult(output_id, target, sizes, recorded, receipt)

    def _download_checked(
        self,
        compute: ComputeClient,
        room_name: str,
        keys: SessionKeys,
        output_id: str,
        recorded: str,
        target: Path,
        progress: Progress | None,
    ) -> dict[str, int]:
        """The download session's output, decrypted beside ``target`` and moved there
        only once its manifest is the one a verified receipt signed (``recorded``, the
        manifest's SHA-256): {path: size}. Nothing is left behind otherwise."""
        partial = target.with_name(f".{target.name}.partial-{secrets.token_hex(4)}")
        partial.mkdir(mode=0o700, parents=True)
        try:
            files, manifest = self._receive(
                compute.download(room_name, keys.session_id), keys, output_id, partial, progress
            )
            self._check_output(recorded, output_id, manifest, files)
            if target.exists():
                target.rmdir()
            partial.rename(target)
        except BaseException:
            _remove_tree(partial)
            raise
        return {name: entry["size"] for name, entry in files.items()}

    def _receive(
        self,
        frames: Iterator[bytes],
        keys: SessionKeys,
        output_id: str,
        directory: Path,
        progress: Progress | None,
    ) -> tuple[dict[str, dict[str, Any]], bytes]:
        """Decrypt the frames into ``directory``: {path: {size, sha256}} and the manifest."""
        receiver = RecordReceiver(keys.worker_to_client, keys.session_id)
        manifest = b""
        sizes: dict[str, int] = {}
        digests: dict[str, Any] = {}
        handles: dict[str, Any] = {}
        names = FoldedPaths()
        try:
            for frame in frames:
                name, _index, final, data = receiver.open(frame)
                if name == f"{output_id}/{MANIFEST_NAME}":
                    manifest += data
                    continue
                if manifest:
                    raise TransferError(
                        "output-order", "the manifest last", name, "data after the manifest"
                    )
                relative = _safe_relative(output_id, name)
                key = relative.as_posix()
                handle = handles.get(key)
                if handle is None:
                    _check_new_name(key, names)
                    path = directory.joinpath(*relative.parts)
                    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                    handle = handles[key] = path.open("xb")
                    sizes[key] = 0
                    digests[key] = hashlib.sha256()
                handle.write(data)
                digests[key].update(data)
                sizes[key] += len(data)
                if progress is not None:
                    progress(len(data))
                if final:
                    handle.close()
            receiver.close()
        finally:
            for handle in handles.values():
                handle.close()
        if not receiver.finished(f"{output_id}/{MANIFEST_NAME}"):
            raise RecordError(
                "record-truncated", "an output manifest", "none", "the download was cut"
            )
        files = {k: {"size": sizes[k], "sha256": digests[k].hexdigest()} for k in sizes}
        return files, manifest

    def _check_output(
        self,
        recorded: str,
        output_id: str,
        manifest_bytes: bytes,
        files: dict[str, dict[str, Any]],
    ) -> str:
        """The manifest is the one a receipt signed (``recorded``, its SHA-256 there), and
        the files are the manifest's."""
        digest = hashlib.sha256(manifest_bytes).hexdigest()
        if digest != recorded:
            raise TransferError(
                "output-digest", recorded, digest, "the output is not what the receipt signed"
            )
        try:
            manifest = json.loads(manifest_bytes)
        except ValueError as error:
            raise TransferError("output-manifest", "JSON", "not JSON", str(error)) from error
        if (
            not isinstance(manifest, dict)
            or set(manifest) != {"type", "output", "salt", "files"}
            or manifest["type"] != OUTPUT_MANIFEST_TYPE
            or manifest["output"] != output_id
        ):
            raise TransferError("output-manifest", OUTPUT_MANIFEST_TYPE, manifest, "bad manifest")
        try:
            check_salt(manifest["salt"], "output-manifest")
        except MessageFormatError as error:  # the digest then confirms guesses: refuse it
            raise TransferError(
                "output-manifest", error.expected, error.actual, f"bad salt: {error.message}"
            ) from error
        listed = manifest["files"]
        if not isinstance(listed, dict) or set(listed) != set(files):
            raise TransferError("output-files", sorted(listed), sorted(files), "files differ")
        for name, entry in files.items():
            if listed[name] != entry:
                raise TransferError("output-file", listed[name], entry, f"{name} differs")
        return digest

    # --------------------------------------------------------------- delete

    def delete(self, name: str) -> Room:
        """Ask the manager to delete the clean room (its Worker erases keys and data)."""
        return self.manager.delete(name, self._project(name))

    # ------------------------------------------------------- local records

    def _uploads_path(self) -> Path:
        return self.profile.directory / UPLOADS_FILE

    def _records(self) -> dict[str, Any]:
        try:
            records = json.loads(self._uploads_path().read_text())
        except FileNotFoundError:
            return {}
        return records if isinstance(records, dict) else {}

    def _remember_upload(self, name: str, work_id: str, input_id: str, digest: str) -> None:
        with self.profile.locked():  # parallel uploads of one profile each keep theirs
            records = self._records()
            entry = self._entry(records, name, work_id)
            entry["inputs"][input_id] = digest
            self._write_records(records)

    def _remember_detail(self, name: str, work_id: str, detail: dict[str, Any]) -> None:
        """Keep a query run's detail, which only this runner opened, so that its receipt
        can be saved with it later (:func:`cleanroom.client.sqlrooms.save_receipt`)."""
        with self.profile.locked():
            records = self._records()
            entry = self._entry(records, name, work_id)
            entry.setdefault("details", {})[str(detail["run"])] = detail
            self._write_records(records)

    def _own_detail(self, name: str, work_id: str, run: int) -> dict[str, Any] | None:
        entry = self._records().get(name, {})
        if entry.get("work_id") != work_id:
            return None
        detail = entry.get("details", {}).get(str(run))
        return detail if isinstance(detail, dict) else None

    @staticmethod
    def _entry(records: dict[str, Any], name: str, work_id: str) -> dict[str, Any]:
        """A room's records, emptied when the room's Work-ID is not the one they are of."""
        entry: dict[str, Any] = records.setdefault(name, {})
        if entry.get("work_id") != work_id:
            entry.clear()
            entry["work_id"] = work_id
            entry["inputs"] = {}
        return entry

    def _write_records(self, records: dict[str, Any]) -> None:
        data = json.dumps(records, indent=2, sort_keys=True).encode()
        write_atomic(self._uploads_path(), data, 0o644)  # a temporary file of its own

    def _own_uploads(self, name: str, work_id: str) -> dict[str, str]:
        entry = self._records().get(name, {})
        if entry.get("work_id") != work_id:
            return {}
        inputs = entry.get("inputs", {})
        return {str(k): str(v) for k, v in inputs.items()}


def _check_output_directory(target: Path) -> None:
    """``target`` is a new or empty directory, and not a symbolic link (``output-directory``).

    Checked before anything is asked of the Worker, as the command line does: the
    output is moved into place by renaming, which cannot replace a symbolic link, so a
    link (to an empty directory, or dangling) would fail only after the whole download."""
    if target.is_symlink():
        raise MessageFormatError(
            "output-directory",
            "a new or empty directory, not a symbolic link",
            str(target),
            "a symbolic link: give the directory itself",
        )
    if target.exists() and not target.is_dir():
        raise MessageFormatError(
            "output-directory", "a new or empty directory", str(target), "not a directory"
        )
    if target.exists() and any(target.iterdir()):
        raise MessageFormatError(
            "output-directory", "a new or empty directory", str(target), "not empty"
        )


def _one_run(spec: WorkSpec, name: str, instead: str) -> None:
    """A function room's one run: a SQL room's are by number (``run-number``)."""
    if spec.sql is not None:
        raise RoomKindError(
            "run-number", "a query run's number", None, f"{name} is a SQL room: {instead}"
        )


def _opened_refusal(
    error: ServerError, keys: SessionKeys, input_id: str, relatives: list[str]
) -> CheckFailed | ServerError:
    """The Worker's schema refusal of this upload, opened: where the data broke its
    schema is sealed to this upload session (``schema-refused`` in the clear), and its
    file named. A refusal in the clear is another server's word: as it came."""
    sealed = error.problem.get("sealed")
    if error.check != "schema-refused" or not isinstance(sealed, str):
        return error
    refusal = open_upload_refusal(keys, from_b64u(sealed, "sealed refusal"), input_id=input_id)
    return _with_file_named(refusal, relatives)


def _with_file_named(refusal: UploadRefused, relatives: list[str]) -> UploadRefused:
    """A schema refusal names a file by its place among the input's files (sorted by
    path); the uploader knows its files, so it is told the name. Anything else is left
    as it is."""
    actual = refusal.actual
    ordered = sorted(relatives)
    if not (
        isinstance(actual, dict)
        and type(actual.get("file")) is int
        and actual.get("files") == len(ordered)
        and 1 <= actual["file"] <= len(ordered)
    ):
        return refusal
    position, name = actual["file"], ordered[actual["file"] - 1]
    message = refusal.message.replace(f"(file {position} of {len(ordered)},", f"(file {name},")
    return UploadRefused(
        refusal.check, refusal.expected, {**actual, "file": name}, message, refusal.hint
    )


def _acknowledged_within(spec: WorkSpec) -> float:
    """How long after an upload's body its acknowledgement may take (``answer-time``):
    a function room's Worker has checked everything by then; a SQL room's checks the
    schema in the sandbox, at most the spec's wall time, perhaps after a query of as
    long."""
    if spec.sql is None:
        return bounded.ANSWER_DEADLINE_S
    return 2 * spec.resources.timeout_s + RUN_WAIT_SLACK_S


def _known(object_id: str, ids: dict[str, str], kind: str, room: str) -> None:
    """``object_id`` is one of the spec's inputs (or outputs), else a one-line refusal."""
    if object_id not in ids:
        listed = ", ".join(sorted(ids)) or "none"
        raise UnknownObjectError(
            f"{kind}-id",
            f"one of {listed}",
            object_id,
            f"no {kind} {object_id} in clean room {room} (it has {listed})",
        )


def _remove_tree(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


__all__ = [
    "Attestation",
    "BadArgumentError",
    "CleanRoomClient",
    "DownloadResult",
    "InputTooLargeError",
    "ProtocolVersionError",
    "RoomKindError",
    "RoomStatus",
    "RunNotEndedError",
    "RunNotStartedError",
    "TransferError",
    "UnknownObjectError",
    "UploadResult",
    "VerifiedReceipt",
    "WorkerStatus",
]
