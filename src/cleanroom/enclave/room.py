"""The Worker's data plane: sessions, uploads, the run, downloads, the receipt, delete.

State rules (each refusal names its check):

- a session serves exactly its purpose, once (`session-purpose`, `session-used`);
- an input is uploaded once, by its owner, before the run (`run-started`); the same
  content uploaded again is acknowledged as already there and stores nothing, other
  content is refused (`input-complete`);
- the run needs every input of the spec (`inputs-missing`) and happens once
  (`run-state`);
- an output is readable only by its recipient, only after the run (`run-state`);
- after delete, nothing is served (`deleted`); a run that crashed leaves the
  clean room `failed` (redeploy);
- a runner may ask, in a new session, what became of one of her run sessions
  (:meth:`CleanRoom.fate`): it ran, or it is closed for good (`fate-owner`); an
  uploader, what became of one of her upload sessions: it stored her input, or it is
  closed for good (an upload under way in it is then refused, `session-closed`).

Plaintext exists outside the sealed store only in the run's scratch workspace,
which is wiped when the run ends.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, ClassVar, TypeVar

from cleanroom.enclave.errors import (
    RunError,
    SchemaRefusal,
    SealedSchemaRefusal,
    UploadError,
    failure_text,
)
from cleanroom.enclave.runner import Confinement, RunResult
from cleanroom.enclave.store import SealedStore, StoredObject, wipe
from cleanroom.enclave.supervisor import Limits
from cleanroom.enclave.uploads import MANIFEST_NAME, CompletedInput, Upload
from cleanroom.enclave.worker import WorkerEnclave
from cleanroom.protocol.acks import ack_document, seal_ack, seal_upload_refusal
from cleanroom.protocol.bundle import FUNCTION_ID_PREFIX, unpack
from cleanroom.protocol.encoding import b64u, canonical
from cleanroom.protocol.errors import MessageFormatError
from cleanroom.protocol.fate import SessionFate, open_fate_request, seal_fate
from cleanroom.protocol.handshake import AcceptedHandshake
from cleanroom.protocol.manifest import OUTPUT_MANIFEST_TYPE, encoded_salt, output_salt
from cleanroom.protocol.receipt import MAX_EXIT_CODE, run_receipt
from cleanroom.protocol.records import MAX_PLAINTEXT, RecordReceiver, RecordSender
from cleanroom.protocol.run_request import open_run_request
from cleanroom.protocol.spec import DownloadPurpose, FatePurpose, RunPurpose, UploadPurpose
from cleanroom.protocol.status import NONCE_BYTES, room_status
from cleanroom.protocol.text import clashing
from cleanroom.runtimes import Runtime

P = TypeVar("P", UploadPurpose, DownloadPurpose, RunPurpose, FatePurpose)

LOG_FILE = "function.log"
SESSION_LIFETIME_S = 120.0
"""How long after its handshake a session's request may come (it comes at once)."""
UPLOAD_MIN_BYTES_PER_S = 8192.0
"""An upload's body ends within the session's lifetime after its handshake, and this
much longer for each byte of it received: else the Worker ends it (``upload-body-time``).
The body is the uploader's own records (a frame not sealed in her session ends it), so
this bounds how long a Controller can keep an upload open, and with it the input's
``upload-in-progress`` mark that keeps everyone else's upload of it out."""
MAX_RETRIES = 16
"""Retries of one input (uploads of exactly what it has, acknowledged as already there)
a Worker remembers for their fate answers; one more is refused (``upload-retries``)."""
PARAMETERS_FILE = "parameters.json"
BUNDLE_OBJECT = "_function/bundle.tar"  # no input or output id starts with "_"


def seal_bundle(store: SealedStore, source: IO[bytes]) -> str:
    """Seal the function bundle as it is read; its function ID, from the bytes sealed."""
    stored = store.ingest(BUNDLE_OBJECT, source)
    return FUNCTION_ID_PREFIX + b64u(bytes.fromhex(stored.sha256))


class CleanRoom:
    """One clean room's data plane, over its Worker, its sealed store and its sandbox.

    The function bundle is sealed into the store as the Worker reads it (see
    :func:`seal_bundle`), so the Controller cannot change it between the Worker's
    check of its function ID and the run.

    A SQL room (:class:`cleanroom.enclave.sqlroom.SqlRoom`) is built the same way: it
    sets :attr:`SQL` and adds its own state in :meth:`_open`.
    """

    SQL: ClassVar[bool] = False
    """Whether this room serves a SQL spec; a room refuses a spec of the other kind."""

    def __init__(
        self,
        worker: WorkerEnclave,
        store: SealedStore,
        *,
        sandbox: Confinement,
        runtime: Runtime,
        scratch_root: Path,
        clock: Callable[[], float] = time.time,
        upload_grace_s: float = SESSION_LIFETIME_S,
    ) -> None:
        """``upload_grace_s``: the time an upload's body has before its bytes earn more
        (:data:`UPLOAD_MIN_BYTES_PER_S`), at most the session's lifetime: a host may
        shorten it (a test does), which denies only the service it can deny anyway."""
        spec = worker.spec
        if not 0 < upload_grace_s <= SESSION_LIFETIME_S:
            raise UploadError(
                "upload-grace", f"0 < grace <= {SESSION_LIFETIME_S:.0f} s", upload_grace_s,
                "an upload's body may not be given longer than a session's lifetime",
            )  # fmt: skip
        self.upload_grace_s = upload_grace_s
        if (spec.sql is not None) != self.SQL:
            raise RunError(
                "sql-runtime", "runtime sql" if self.SQL else "a function's runtime",
                spec.runtime,
                "not a SQL room" if self.SQL else "a SQL room's spec in a function room",
            )  # fmt: skip
        self.worker = worker
        self._store = store
        self._sandbox, self._runtime = sandbox, runtime
        self._scratch_root = scratch_root
        self._clock = clock
        self._sessions: dict[str, AcceptedHandshake] = {}
        self._opened: dict[str, float] = {}  # when each session was opened (self._clock)
        self._used: set[str] = set()
        # Every run session that started a run (a query run's number; None: the one run
        # of a function room), with its user, and every upload session that stored its
        # input or found it there (a retry), with its user and the acknowledgement it was
        # answered with: both outlive the sessions' memory, so a fate answer never
        # changes (each is bounded: one run, MAX_RUNS queries, per input one storing
        # session and at most MAX_RETRIES retries).
        self._ran: dict[str, tuple[str, int | None]] = {}
        self._stored: dict[str, tuple[str, dict[str, Any]]] = {}
        self._retries: dict[str, int] = {}
        # Sessions taken whose request is still under way (an upload's body, a query's
        # checks), with their users, and those of them a fate question closed: each is
        # left when its request ends, so both are bounded by the requests under way. A
        # session neither fresh nor under way can never start anything (its handshake
        # nonce is never accepted again): a fate answer "closed" needs no memory of it.
        self._pending: dict[str, str] = {}
        self._closed: set[str] = set()
        self._inputs: dict[str, CompletedInput] = {}
        self._outputs: dict[str, tuple[str, list[StoredObject]]] = {}
        # Each output's manifest salt (protocol.manifest): its digest in the receipt and
        # the status commits to the files without letting the Controller test guesses.
        self._output_salts = {output_id: output_salt() for output_id in worker.spec.outputs}
        self._uploading: set[str] = set()
        self._state = "collecting"  # -> running -> done | failed; any -> deleted
        self._lock = threading.RLock()
        self.receipt: tuple[dict[str, Any], bytes] | None = None
        self.failure: str | None = None
        self.last_run: RunResult | None = None
        self._open()

    def _open(self) -> None:
        """What a kind of room sets up once its spec is known to be its kind's."""

    @property
    def state(self) -> str:
        return self._state

    # ------------------------------------------------------------- sessions

    def open_session(self, init: object, init_signature: bytes) -> tuple[dict[str, Any], bytes]:
        self._alive()
        accepted = self.worker.handshake(init, init_signature)
        with self._lock:
            now = self._clock()
            # A session serves one request, made at once by its client: one older than
            # its lifetime is dropped (so is its memory), whether used or not.
            for old in [i for i, t in self._opened.items() if now - t > SESSION_LIFETIME_S]:
                self._sessions.pop(old, None)
                self._opened.pop(old, None)
                self._used.discard(old)
            self._sessions[accepted.keys.session_id] = accepted
            self._opened[accepted.keys.session_id] = now
        return accepted.resp, accepted.resp_signature

    def _fresh(self, session_id: str) -> AcceptedHandshake | None:
        """The session, if it exists, is unused and within its lifetime: else None, or
        ``session-expired`` for one opened longer ago than that (the Controller held its
        request back)."""
        session = self._sessions.get(session_id)
        if session is None or session_id in self._used:
            return None
        age = self._clock() - self._opened[session_id]
        if age > SESSION_LIFETIME_S:  # a clock stepped back refuses nothing
            raise UploadError(
                "session-expired", f"a request within {SESSION_LIFETIME_S:.0f} s of the handshake",
                f"{age:.0f} s", "the session expired: open a new one",
            )  # fmt: skip
        return session

    def _usable(self, session_id: str, kind: type[P]) -> tuple[AcceptedHandshake, P]:
        """The session, fresh and for a purpose of ``kind``, left as it is."""
        self._alive()
        session = self._fresh(session_id)
        if session is None:
            raise UploadError(
                "session-used", "a fresh session", session_id, "unknown or used session"
            )
        purpose = session.purpose
        if not isinstance(purpose, kind):
            raise UploadError(
                "session-purpose", kind.__name__, type(purpose).__name__, "wrong session"
            )
        return session, purpose

    def _take(self, session_id: str, kind: type[P]) -> tuple[AcceptedHandshake, P]:
        session, purpose = self._usable(session_id, kind)
        self._used.add(session_id)
        return session, purpose

    def _alive(self) -> None:
        if self._state == "deleted":
            raise RunError("deleted", "a live clean room", "deleted", "this clean room was deleted")

    # --------------------------------------------------------------- upload

    def begin_upload(self, session_id: str) -> InputStream:
        """Start the upload an upload session is for; feed it frames, then finish it.

        The session is taken by the first frame that opens under its key, not before:
        the Controller sees the session id, and a body it made up (or another session's
        records) raced onto an uploader's session used it up, her own body then refused
        `session-used`. A frame not sealed in the session is refused
        (``record-frame``, ``record-authentication``) and leaves the session as it was,
        as a run request or a query does.

        For an input already uploaded, the upload is measured but not stored, and
        finishes only if it is exactly that input again (a retry).
        """
        with self._lock:
            session, purpose = self._usable(session_id, UploadPurpose)
        return InputStream(self, session, purpose.input)

    def _claim(self, session_id: str, input_id: str) -> CompletedInput | None:
        """Take the upload session (its first frame opened under its key) and the input:
        the input as uploaded already (a retry), or None, the input now being uploaded."""
        with self._lock:
            session, _purpose = self._take(session_id, UploadPurpose)
            existing = self._inputs.get(input_id)
            if existing is not None and self._retries.get(input_id, 0) >= MAX_RETRIES:
                raise UploadError(
                    "upload-retries", f"at most {MAX_RETRIES} retries of an input",
                    f"{MAX_RETRIES} acknowledged already",
                    f"{input_id} is in the room, and was acknowledged as already there "
                    f"{MAX_RETRIES} times: the Worker remembers no more",
                )  # fmt: skip
            if existing is None:
                self._check_collecting(input_id)
                if input_id in self._uploading:
                    raise UploadError(
                        "upload-in-progress", "one upload of an input at a time", input_id,
                        "busy",
                    )  # fmt: skip
                self._uploading.add(input_id)
            self._pending[session_id] = session.user_id
        return existing

    def _check_open(self, session_id: str) -> None:
        """A request under way in ``session_id`` may still take effect: a fate question
        did not close its session meanwhile (``session-closed``). The caller holds the
        lock."""
        if session_id in self._closed:
            raise RunError(
                "session-closed", "a session no fate question closed", session_id,
                "a fate question closed this session: its request takes no effect",
            )  # fmt: skip

    def _settled(self, session_id: str) -> None:
        """The request under way in ``session_id`` ended (in effect or not)."""
        with self._lock:
            self._pending.pop(session_id, None)
            self._closed.discard(session_id)

    def _check_collecting(self, input_id: str) -> None:
        if self._state != "collecting":
            raise UploadError("run-started", "an upload before the run", self._state, "too late")
        if input_id in self._inputs:
            raise UploadError(
                "input-complete", "an input not yet uploaded", input_id, "already uploaded"
            )

    def _accept_input(self, completed: CompletedInput) -> dict[str, int]:
        """A hook before an input is recorded (a SQL room checks its schema here);
        what it returns goes into the uploader's acknowledgement."""
        del completed
        return {}

    def _accepted_counts(self, input_id: str) -> dict[str, int]:
        """What :meth:`_accept_input` said of an input already recorded (for a retry's
        acknowledgement): nothing here; a SQL room's row count."""
        del input_id
        return {}

    def _complete(
        self,
        session_id: str,
        input_id: str,
        stored: tuple[CompletedInput, dict[str, Any]] | None,
    ) -> None:
        """The upload of ``input_id`` in ``session_id`` ends: ``stored``'s input recorded
        (the session as the one that stored it, with its acknowledgement's document), or
        None (nothing stored)."""
        with self._lock:
            self._uploading.discard(input_id)
            if stored is not None:
                result, ack = stored
                try:
                    self._check_open(session_id)
                    self._check_collecting(input_id)
                finally:
                    self._settled(session_id)
                self._inputs[input_id] = result
                self._stored[session_id] = (result.by, ack)
            else:
                self._settled(session_id)

    def _retried(self, session_id: str, input_id: str, by: str, ack: dict[str, Any]) -> None:
        """A retry's upload in ``session_id`` ends, acknowledged (``ack``) as already
        there: asked its fate, the Worker says so, as that acknowledgement would have."""
        with self._lock:
            try:
                self._check_open(session_id)
            finally:
                self._settled(session_id)
            self._stored[session_id] = (by, ack)
            self._retries[input_id] = self._retries.get(input_id, 0) + 1

    def upload(self, session_id: str, frames: Iterable[bytes]) -> CompletedInput:
        """A whole upload from an iterable of frames."""
        stream = self.begin_upload(session_id)
        try:
            for frame in frames:
                stream.arrived(len(frame))
                stream.feed(frame)
        except BaseException:
            stream.abort()
            raise
        return stream.finish()

    # ------------------------------------------------------------------ run

    def run(self, session_id: str, request: bytes) -> tuple[dict[str, Any], bytes]:
        """Start and finish the run in this thread; the signed receipt."""
        self.begin_run(session_id, request)
        return self.execute()

    def begin_run(self, session_id: str, request: bytes) -> None:
        """Check the run session and its request (a record only the session's client
        can seal: :mod:`cleanroom.protocol.run_request`), then the state, and mark the
        clean room running."""
        with self._lock:
            self._alive()
            session = self._fresh(session_id)
            # Before the session is used: a request the Controller made up is refused
            # and leaves the runner's session as it was.
            if session is not None and isinstance(session.purpose, RunPurpose):
                open_run_request(session.keys, request)
            session, _purpose = self._take(session_id, RunPurpose)
            if self._state != "collecting":
                raise RunError("run-state", "no run yet", self._state, "the clean room ran already")
            missing = sorted(set(self.worker.spec.inputs) - set(self._inputs))
            if missing:
                listed = ", ".join(missing)
                raise RunError(
                    "inputs-missing",
                    f"every input uploaded: {', '.join(sorted(self.worker.spec.inputs))}",
                    f"missing: {listed}",
                    f"not every input is in (missing: {listed})",
                )
            if self._uploading:
                raise RunError(
                    "uploads-running", "no upload in progress", sorted(self._uploading), "busy"
                )
            self._state = "running"
            self._ran[session_id] = (session.user_id, None)

    def execute(self) -> tuple[dict[str, Any], bytes]:
        """The run itself, after :meth:`begin_run`: confined function, sealed outputs."""
        if self._state != "running":
            raise RunError("run-state", "running", self._state, "begin_run first")
        spec = self.worker.spec
        started = int(self._clock())
        self._scratch_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="run-", dir=self._scratch_root))
        received: dict[str, list[StoredObject]] = {output_id: [] for output_id in spec.outputs}

        def receive(name: str, stream: IO[bytes], _size: int) -> None:
            output_id = name.split("/", 1)[0]
            stored = self._store.ingest(name, stream)
            received[output_id].append(stored)

        try:
            self._stage(scratch)
            result = self._sandbox.run(
                runtime=self._runtime,
                workspace=scratch,
                outputs=sorted(spec.outputs),
                handler=spec.handler,
                limits=Limits(**spec.resources.model_dump()),
                receive=receive,
                keep_log=spec.logs is not None,
            )
            self.last_run = result
            if result.outputs_withheld:
                self.failure = (
                    "the outputs are larger than the disk limit (sparse files count at "
                    "their full size): none is released"
                )
            for output_id in sorted(spec.outputs):
                files = sorted(received[output_id], key=lambda stored: stored.name)
                digest = self._manifest_digest(output_id, self._output_salts[output_id], files)
                self._outputs[output_id] = (digest, files)
            if spec.logs is not None:
                self._add_log(spec.logs, result.log + _left_out_note(result.outputs_left_out))
        except BaseException as error:
            self._state = "failed"  # no outputs, no second try: redeploy
            self.failure = failure_text(error)  # in the clear: no path, no file name
            for files in received.values():
                for stored in files:
                    self._store.discard(stored.name)
            raise
        finally:
            wipe(scratch)
        receipt = run_receipt(
            spec,
            inputs={i: (c.by, c.sha256) for i, c in self._inputs.items()},
            outputs={o: digest for o, (digest, _files) in self._outputs.items()},
            status=result.status,
            exit_code=_exit_status(result.exit_code),
            started=started,
            finished=max(started, int(self._clock())),
        )
        self.receipt = (receipt, self.worker.sign_receipt(receipt))
        self._state = "done"
        return self.receipt

    def _stage(self, scratch: Path) -> None:
        """The run's plaintext view: the function, the parameters, the inputs."""
        self._stage_function(scratch)
        (scratch / PARAMETERS_FILE).write_bytes(canonical(self.worker.spec.parameters))
        (scratch / "inputs").mkdir()
        for completed in self._inputs.values():
            for stored in completed.files:
                target = scratch / "inputs" / stored.name
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as handle:
                    for chunk in self._store.read(stored.name):
                        handle.write(chunk)

    def _stage_function(self, scratch: Path) -> None:
        """The sealed bundle, unpacked (and checked again) into ``function/``."""
        bundle = scratch / "function.tar"
        with bundle.open("wb") as handle:
            for chunk in self._store.read(BUNDLE_OBJECT):
                handle.write(chunk)
        with bundle.open("rb") as handle:
            unpack(handle, scratch / "function")
        bundle.unlink()

    def _add_log(self, output_id: str, log: bytes) -> None:
        # The function may have written a file of that name itself: keep both. Or a
        # directory (function.log/x): the log was then stored beside it, as a file named
        # as a directory of the output, which no recipient's disk can hold (the download
        # of a run signed "succeeded" failed every time, FileExistsError).
        # Nor one a case-insensitive disk holds as the function's (FUNCTION.LOG, or
        # Function.log/x): the function's files are released only if none clashes.
        names = [stored.name for stored in self._outputs[output_id][1]]
        name, number = f"{output_id}/{LOG_FILE}", 0
        while name in clashing([*names, name]):
            number += 1
            name = f"{output_id}/function.{number}.log"
        writer = self._store.create(name)
        writer.write(log)
        stored = writer.close()
        self._store.record(stored)
        files = [*self._outputs[output_id][1], stored]
        salt = self._output_salts[output_id]
        self._outputs[output_id] = (self._manifest_digest(output_id, salt, files), files)

    @staticmethod
    def _manifest(output_id: str, salt: bytes, files: list[StoredObject]) -> dict[str, Any]:
        prefix = output_id + "/"
        return {
            "type": OUTPUT_MANIFEST_TYPE,
            "output": output_id,
            "salt": encoded_salt(salt),
            "files": {
                f.name.removeprefix(prefix): {"size": f.size, "sha256": f.sha256} for f in files
            },
        }

    def _manifest_digest(self, output_id: str, salt: bytes, files: list[StoredObject]) -> str:
        return hashlib.sha256(canonical(self._manifest(output_id, salt, files))).hexdigest()

    # ------------------------------------------------------------- download

    def download(self, session_id: str) -> Iterator[bytes]:
        """The frames of an output for its recipient's session (checked before the first)."""
        # seal() gives bytes: bytes(frame) is that same object, not a copy
        return (bytes(frame) for frame in self._download(session_id, framed=False))

    def download_stream(self, session_id: str) -> Iterator[bytes | bytearray]:
        """The same as a frame stream (each frame length-prefixed), built without copies."""
        return self._download(session_id, framed=True)

    def _download(self, session_id: str, *, framed: bool) -> Iterator[bytes | bytearray]:
        with self._lock:
            self._alive()
            if self._state != "done":  # before the session is used: it can ask again
                raise RunError("run-state", "a finished run", self._state, "no output yet")
            session, purpose = self._take(session_id, DownloadPurpose)
            _digest, files = self._outputs[purpose.output]
        return self._frames(session, purpose.output, files, framed)

    def _frames(
        self,
        session: AcceptedHandshake,
        output_id: str,
        files: list[StoredObject],
        framed: bool,
    ) -> Iterator[bytes | bytearray]:
        sender = RecordSender(session.keys.worker_to_client, session.keys.session_id)

        def seal(name: str, data: bytes, final: bool) -> bytes | bytearray:
            if framed:
                return sender.seal_framed(name, data, final=final)
            return sender.seal(name, data, final=final)

        for stored in files:
            chunks = self._store.read(stored.name)
            previous = next(chunks, b"")
            for chunk in chunks:
                yield seal(stored.name, previous, False)
                previous = chunk
            yield seal(stored.name, previous, True)
        # In records of at most 1 MiB, as a file is: a manifest grows with the files (a
        # name, a size and a digest each), and 1,800 named in 600 bytes are 1.2 MiB. As
        # one record it failed at the download's end, every time, for a run signed
        # "succeeded" (found by h16's red team). The recipient joins the records.
        manifest = canonical(self._manifest(output_id, self._output_salts[output_id], files))
        for start in range(0, len(manifest), MAX_PLAINTEXT):
            end = start + MAX_PLAINTEXT
            yield seal(f"{output_id}/{MANIFEST_NAME}", manifest[start:end], end >= len(manifest))

    # ----------------------------------------------------------------- fate

    def fate(self, session_id: str, request: bytes) -> bytes:
        """What became of the run session a fate session asks about, sealed to it:
        ``ran`` (and which run), or ``closed``: it started nothing, and now never will.

        For an upload session: ``stored`` (it stored its input), or ``closed``: it
        stored nothing, and now never will (an upload still under way in it is refused
        at its end, ``session-closed``).

        The question is a record only the fate session's client seals
        (:mod:`cleanroom.protocol.fate`), opened before the session is used. A session
        the Worker knows to be another user's is refused (``fate-owner``)."""
        with self._lock:
            self._alive()
            fresh = self._fresh(session_id)
            if fresh is not None and isinstance(fresh.purpose, FatePurpose):
                open_fate_request(fresh.keys, request)
            session, purpose = self._take(session_id, FatePurpose)
            asked = purpose.session
            ran = self._ran.get(asked)
            stored = self._stored.get(asked)
            opened = self._sessions.get(asked)
            owner = (
                ran[0] if ran is not None
                else stored[0] if stored is not None
                else self._pending.get(asked, opened.user_id if opened else None)
            )  # fmt: skip
            if owner is not None and owner != session.user_id:
                raise RunError(
                    "fate-owner", "a session of the user who asks", "another user's session",
                    "only the user who opened a session may ask what became of it",
                )  # fmt: skip
            if ran is None and stored is None:
                # Never to take effect: used, and closed for a request under way in it
                # (a query past this check, an upload's body still coming).
                if asked in self._pending:
                    self._closed.add(asked)
                if opened is not None:
                    self._used.add(asked)
            fate = SessionFate(
                asked, ran is not None, None if ran is None else ran[1],
                stored=stored is not None, ack=None if stored is None else stored[1],
            )  # fmt: skip
            return seal_fate(session.keys, fate)

    # --------------------------------------------------------------- status

    def status(self, nonce: bytes) -> tuple[dict[str, Any], bytes]:
        """What this room holds now, signed for the client's fresh ``nonce``."""
        if len(nonce) != NONCE_BYTES:
            raise MessageFormatError(
                "status-nonce", f"{NONCE_BYTES} bytes", f"{len(nonce)} bytes", "bad nonce"
            )
        with self._lock:
            self._alive()
            run = None
            if self.receipt is not None:
                run = (self.receipt[0]["status"], self.receipt[0]["exit_code"])
            document = room_status(
                self.worker.spec,
                nonce=nonce,
                state=self._state,
                inputs={i: (c.by, c.sha256) for i, c in self._inputs.items()},
                uploading=sorted(self._uploading),
                outputs=sorted(self._outputs) if self._state == "done" else [],
                run=run,
                detail=self.failure,
            )
        return document, self.worker.sign_status(document)

    # --------------------------------------------------------------- delete

    def delete(self) -> None:
        """Erase the sealed data (its key goes with it) and refuse everything after."""
        with self._lock:
            self._state = "deleted"
            self._sessions.clear()
            self._opened.clear()
            self._ran.clear()
            self._stored.clear()
            self._retries.clear()
            self._pending.clear()
            self._closed.clear()
            self._store.erase()


def _left_out_note(count: int) -> bytes:
    """What the log's recipient is told of the files left out for their names (the
    function's own figure, sealed to that recipient alone: never in the clear)."""
    if not count:
        return b""
    return (
        f"\n[cleanroom] {count} output file(s) left out for their names: a character a "
        "terminal acts on or does not show, a leading '-', a .git, a name a case- or "
        "normalisation-insensitive disk holds as another's, .manifest, a backslash, or "
        "over 1,024 bytes\n"
    ).encode()


def _exit_status(code: int | None) -> int | None:
    """The exit status for the receipt: 0-255, or None when the process reported none."""
    return code if code is not None and 0 <= code <= MAX_EXIT_CODE else None


class InputStream:
    """One upload in progress: frames in order, then finish (or abort on any failure).

    Its session and its input are taken by the first frame that opens under the
    session's key (:meth:`CleanRoom._claim`); until then, a refused frame leaves both as
    they were. If the input was uploaded already, this upload is a retry, measured but
    not stored, and finishes only if it is exactly that input.
    """

    def __init__(self, room: CleanRoom, session: AcceptedHandshake, input_id: str) -> None:
        self._room, self._session, self._input_id = room, session, input_id
        # The body's bound (UPLOAD_MIN_BYTES_PER_S) counts from the session's handshake.
        self._since = room._opened.get(session.keys.session_id, room._clock())
        self._received = 0
        self._existing: CompletedInput | None = None
        self.counts: dict[str, int] = {}  # what the acknowledgement counts
        self._receiver = RecordReceiver(session.keys.client_to_worker, session.keys.session_id)
        self._claimed = False  # the session and the input taken (CleanRoom._claim)
        self._upload: Upload | None = None
        self._result: CompletedInput | None = None
        self._ended = False

    def remaining(self) -> float:
        """Seconds left, by the room's clock, before this upload's body is late (<= 0:
        late; :meth:`check_time` then ends it)."""
        allowed = self._room.upload_grace_s + self._received / UPLOAD_MIN_BYTES_PER_S
        return self._since + allowed - self._room._clock()

    def check_time(self) -> None:
        """End the upload if its body is late (``upload-body-time``), or its session was
        closed by its owner's fate question (``session-closed``): whatever it stored is
        erased, and the session and the input's mark are let go, so the input can be
        uploaded again; anything of this body that comes afterwards is refused
        (``upload-ended``), and its end lets go of nothing of another upload's."""
        if self._ended:
            raise UploadError("upload-ended", "an open upload", "ended", "upload already ended")
        session_id = self._session.keys.session_id
        with self._room._lock:
            closed = self._claimed and session_id in self._room._closed
        if closed:
            # Its owner asked, and was told it stores nothing: it would be refused at its
            # end; ended now, it holds the input no longer (a Controller trickling the
            # body held it for as long as the bound gives its bytes).
            self.abort()
            raise RunError(
                "session-closed", "a session no fate question closed", session_id,
                "a fate question closed this session: its upload was ended, nothing stored",
            )  # fmt: skip
        left = self.remaining()
        if left < 0:
            self.abort()
            raise UploadError(
                "upload-body-time",
                f"a body whole within {self._room.upload_grace_s:.0f} s of the handshake and "
                f"1 s more per {UPLOAD_MIN_BYTES_PER_S:.0f} bytes of it",
                f"{self._received} bytes, {-left:.0f} s late",
                "the upload's body came too slowly, or stopped: it was ended, nothing "
                "stored (uploading again is safe)",
            )

    def arrived(self, size: int) -> None:
        """``size`` more bytes of the body came (each earns the body more time)."""
        self._received += size

    def feed(self, frame: bytes) -> None:
        self.check_time()
        try:
            path, _index, final, data = self._receiver.open(frame)
            if self._upload is None:
                session_id = self._session.keys.session_id
                self._existing = self._room._claim(session_id, self._input_id)
                self._claimed = True
                self._upload = Upload(
                    self._room._store, self._input_id, self._session.user_id,
                    keep=self._existing is None,
                )  # fmt: skip
            self._result = self._upload.feed(path, final, data) or self._result
        except BaseException:
            self.abort()
            raise

    def finish(self) -> CompletedInput:
        """The body ended: every record there, the manifest checked; record the input."""
        self.check_time()
        try:
            self._receiver.close()
            if self._result is None:
                raise UploadError("upload-truncated", "a manifest", "none", "upload ended early")
            session_id = self._session.keys.session_id
            if self._existing is not None:
                self._same_as_existing(self._existing, self._result)
                self.counts = {
                    "bytes": sum(stored.size for stored in self._existing.files),
                    **self._room._accepted_counts(self._input_id),
                }
                self._room._retried(
                    session_id, self._input_id, self._existing.by, self._ack_document()
                )
            else:
                try:
                    accepted = self._room._accept_input(self._result)
                except SchemaRefusal as refusal:
                    # Where the data broke its schema is the uploader's alone: sealed in
                    # this session, in place of its acknowledgement.
                    keys = self._session.keys
                    sealed = seal_upload_refusal(keys, self._input_id, refusal)
                    raise SealedSchemaRefusal(sealed) from None
                self.counts = {
                    "bytes": sum(stored.size for stored in self._result.files),
                    **accepted,
                }
                self._room._complete(
                    session_id, self._input_id, (self._result, self._ack_document())
                )
        except BaseException:
            self.abort()
            raise
        self._ended = True
        return self._result if self._existing is None else self._existing

    @property
    def already(self) -> bool:
        """Whether this upload was of an input the room already had (nothing stored)."""
        return self._existing is not None

    def acknowledgement(self) -> bytes:
        """The sealed acknowledgement of the finished upload (protocol/acks.py)."""
        if not self._ended or self._result is None:
            raise UploadError("upload-ended", "a finished upload", "open", "nothing to acknowledge")
        return seal_ack(
            self._session.keys,
            self._input_id,
            self._result.sha256,
            already=self.already,
            size=self.counts["bytes"],
            rows=self.counts.get("rows"),
        )

    def _ack_document(self) -> dict[str, Any]:
        """What the acknowledgement says (also the fate answer ``stored``'s)."""
        if self._result is None:
            raise UploadError("upload-ended", "a finished upload", "open", "nothing to acknowledge")
        return ack_document(
            self._input_id, self._result.sha256, already=self.already,
            size=self.counts["bytes"], rows=self.counts.get("rows"),
        )  # fmt: skip

    def _same_as_existing(self, existing: CompletedInput, retry: CompletedInput) -> None:
        if retry.by != existing.by or retry.sha256 != existing.sha256:
            raise UploadError(
                "input-complete",
                f"the content {self._input_id} already has (a retry uploads exactly it)",
                "other content",
                f"{self._input_id} was already uploaded, with other content",
            )

    def abort(self) -> None:
        """Erase whatever this upload stored; the input can be uploaded again."""
        if self._ended:
            return
        self._ended = True
        if self._upload is not None:
            self._upload.abort()
        # Not claimed: nothing was taken, the session and the input are as they were.
        if self._claimed and self._existing is None:
            self._room._complete(self._session.keys.session_id, self._input_id, None)
        elif self._claimed:
            self._room._settled(self._session.keys.session_id)
