"""The Worker's data plane: sessions, uploads, the run, downloads, the receipt, delete.

State rules (each refusal names its check):

- a session serves exactly its purpose, once (`session-purpose`, `session-used`);
- an input is uploaded once, by its owner, before the run (`input-complete`,
  `run-started`);
- the run needs every input of the spec (`inputs-missing`) and happens once
  (`run-state`);
- an output is readable only by its recipient, only after the run (`run-state`);
- after delete, nothing is served (`deleted`); a run that crashed leaves the
  clean room `failed` (redeploy).

Plaintext exists outside the sealed store only in the run's scratch workspace,
which is wiped when the run ends.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from cleanroom.enclave.errors import RunError, UploadError
from cleanroom.enclave.runner import Isolation, prepare_workspace, run_function
from cleanroom.enclave.store import SealedStore, StoredObject, wipe
from cleanroom.enclave.uploads import MANIFEST_NAME, CompletedInput, Upload
from cleanroom.enclave.worker import WorkerEnclave
from cleanroom.protocol.bundle import unpack
from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.handshake import AcceptedHandshake
from cleanroom.protocol.receipt import run_receipt
from cleanroom.protocol.records import MAX_PLAINTEXT, RecordReceiver, RecordSender
from cleanroom.protocol.spec import DownloadPurpose, RunPurpose, UploadPurpose

P = TypeVar("P", UploadPurpose, DownloadPurpose, RunPurpose)

OUTPUT_MANIFEST_TYPE = "cleanroom/output-manifest/v1"
LOG_FILE = "function.log"
MAX_OUTPUT_BYTES = 1 << 30  # all outputs of a run together; also the largest file
MAX_OUTPUT_FILES = 10_000
PARAMETERS_FILE = "parameters.json"


class CleanRoom:
    def __init__(
        self,
        worker: WorkerEnclave,
        bundle: bytes,
        data_dir: Path,
        *,
        confinement: Isolation,
        interpreter: str,
        scratch_root: Path | None = None,
        clock: Callable[[], float] = time.time,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
    ) -> None:
        self.worker = worker
        self._bundle = bundle
        self._store = SealedStore(data_dir / "sealed")
        self._confinement, self._interpreter = confinement, interpreter
        self._scratch_root = scratch_root
        self._clock = clock
        self._max_output_bytes = max_output_bytes
        self._sessions: dict[str, AcceptedHandshake] = {}
        self._used: set[str] = set()
        self._inputs: dict[str, CompletedInput] = {}
        self._outputs: dict[str, tuple[str, list[StoredObject]]] = {}
        self._uploading: set[str] = set()
        self._state = "collecting"  # -> running -> done | failed; any -> deleted
        self._lock = threading.RLock()
        self.receipt: tuple[dict[str, Any], bytes] | None = None
        self.failure: str | None = None

    @property
    def state(self) -> str:
        return self._state

    # ------------------------------------------------------------- sessions

    def open_session(self, init: object, init_signature: bytes) -> tuple[dict[str, Any], bytes]:
        self._alive()
        accepted = self.worker.handshake(init, init_signature)
        self._sessions[accepted.keys.session_id] = accepted
        return accepted.resp, accepted.resp_signature

    def _take(self, session_id: str, kind: type[P]) -> tuple[AcceptedHandshake, P]:
        self._alive()
        session = self._sessions.get(session_id)
        if session is None or session_id in self._used:
            raise UploadError(
                "session-used", "a fresh session", session_id, "unknown or used session"
            )
        purpose = session.purpose
        if not isinstance(purpose, kind):
            raise UploadError(
                "session-purpose", kind.__name__, type(purpose).__name__, "wrong session"
            )
        self._used.add(session_id)
        return session, purpose

    def _alive(self) -> None:
        if self._state == "deleted":
            raise RunError("deleted", "a live clean room", "deleted", "this clean room was deleted")

    # --------------------------------------------------------------- upload

    def begin_upload(self, session_id: str) -> InputStream:
        """Start the upload an upload session is for; feed it frames, then finish it."""
        with self._lock:
            session, purpose = self._take(session_id, UploadPurpose)
            input_id = purpose.input
            self._check_collecting(input_id)
            if input_id in self._uploading:
                raise UploadError(
                    "upload-in-progress", "one upload of an input at a time", input_id, "busy"
                )
            self._uploading.add(input_id)
        return InputStream(self, session, input_id)

    def _check_collecting(self, input_id: str) -> None:
        if self._state != "collecting":
            raise UploadError("run-started", "an upload before the run", self._state, "too late")
        if input_id in self._inputs:
            raise UploadError(
                "input-complete", "an input not yet uploaded", input_id, "already uploaded"
            )

    def _complete(self, input_id: str, result: CompletedInput | None) -> None:
        with self._lock:
            self._uploading.discard(input_id)
            if result is not None:
                self._check_collecting(input_id)
                self._inputs[input_id] = result

    def upload(self, session_id: str, frames: Iterable[bytes]) -> CompletedInput:
        """A whole upload from an iterable of frames."""
        stream = self.begin_upload(session_id)
        try:
            for frame in frames:
                stream.feed(frame)
        except BaseException:
            stream.abort()
            raise
        return stream.finish()

    # ------------------------------------------------------------------ run

    def run(self, session_id: str) -> tuple[dict[str, Any], bytes]:
        """Start and finish the run in this thread; the signed receipt."""
        self.begin_run(session_id)
        return self.execute()

    def begin_run(self, session_id: str) -> None:
        """Check the run session and the state, and mark the clean room running."""
        with self._lock:
            self._take(session_id, RunPurpose)
            if self._state != "collecting":
                raise RunError("run-state", "no run yet", self._state, "the clean room ran already")
            missing = sorted(set(self.worker.spec.inputs) - set(self._inputs))
            if missing:
                raise RunError("inputs-missing", "every input uploaded", missing, "inputs missing")
            if self._uploading:
                raise RunError(
                    "uploads-running", "no upload in progress", sorted(self._uploading), "busy"
                )
            self._state = "running"

    def execute(self) -> tuple[dict[str, Any], bytes]:
        """The run itself, after :meth:`begin_run`: confined function, sealed outputs."""
        if self._state != "running":
            raise RunError("run-state", "running", self._state, "begin_run first")
        spec = self.worker.spec
        started = int(self._clock())
        scratch = Path(tempfile.mkdtemp(prefix="cleanroom-run-", dir=self._scratch_root))
        try:
            unpack(self._bundle, scratch / "function")
            (scratch / PARAMETERS_FILE).write_bytes(canonical(spec.parameters))
            for completed in self._inputs.values():
                for stored in completed.files:
                    target = scratch / "inputs" / stored.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with target.open("wb") as handle:
                        for chunk in self._store.read(stored.name):
                            handle.write(chunk)
            prepare_workspace(scratch, sorted(spec.outputs), self._confinement)
            result = run_function(
                interpreter=self._interpreter,
                function_dir=scratch / "function",
                handler=spec.handler,
                workspace=scratch,
                memory_mib=spec.resources.memory_mib,
                timeout_s=spec.resources.timeout_s,
                confinement=self._confinement,
                keep_log=spec.logs is not None,
                max_output_bytes=self._max_output_bytes,
            )
            status = result.status
            overflow = self._overflow(scratch / "outputs")
            for output_id in sorted(spec.outputs):
                if overflow is None:
                    sealed = self._seal_output(scratch / "outputs" / output_id, output_id)
                else:
                    sealed = (self._manifest_digest(output_id, []), [])
                self._outputs[output_id] = sealed
            if overflow is not None:
                # Too much to seal: no output at all (a partial one would be a choice the
                # Worker made), the run failed, and the detail says why.
                status, self.failure = "failed", overflow
            if spec.logs is not None:
                self._add_log(spec.logs, result.log)
        except BaseException as error:
            self._state = "failed"  # no outputs, no second try: redeploy
            self.failure = str(error)
            raise
        finally:
            wipe(scratch)
        receipt = run_receipt(
            spec,
            inputs={i: (c.by, c.sha256) for i, c in self._inputs.items()},
            outputs={o: digest for o, (digest, _files) in self._outputs.items()},
            status=status,
            started=started,
            finished=max(started, int(self._clock())),
        )
        self.receipt = (receipt, self.worker.sign_receipt(receipt))
        self._state = "done"
        return self.receipt

    def _overflow(self, outputs: Path) -> str | None:
        """Why the outputs are too big to seal, or None. Sizes only: nothing is read."""
        total = count = 0
        for path in outputs.rglob("*"):
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
                count += 1
            if total > self._max_output_bytes or count > MAX_OUTPUT_FILES:
                return (
                    f"outputs exceed the limit of {self._max_output_bytes} bytes "
                    f"in {MAX_OUTPUT_FILES} files"
                )
        return None

    def _seal_output(self, directory: Path, output_id: str) -> tuple[str, list[StoredObject]]:
        files: list[StoredObject] = []
        for path in sorted(directory.rglob("*")):
            info = path.lstat()
            relative = path.relative_to(directory).as_posix()
            if path.is_dir() and not path.is_symlink():
                continue
            # The function owns outputs/: a link could point at the Worker's own files,
            # so links and special files are left out of the output (and the receipt).
            if path.is_symlink() or not path.is_file() or info.st_nlink != 1:
                continue
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            writer = self._store.create(f"{output_id}/{relative}")
            with os.fdopen(fd, "rb") as handle:
                while chunk := handle.read(MAX_PLAINTEXT):
                    writer.write(chunk)
            stored = writer.close()
            self._store.record(stored)
            files.append(stored)
        return self._manifest_digest(output_id, files), files

    def _add_log(self, output_id: str, log: bytes) -> None:
        writer = self._store.create(f"{output_id}/{LOG_FILE}")
        writer.write(log)
        stored = writer.close()
        self._store.record(stored)
        files = [*self._outputs[output_id][1], stored]
        self._outputs[output_id] = (self._manifest_digest(output_id, files), files)

    @staticmethod
    def _manifest(output_id: str, files: list[StoredObject]) -> dict[str, Any]:
        prefix = output_id + "/"
        return {
            "type": OUTPUT_MANIFEST_TYPE,
            "output": output_id,
            "files": {
                f.name.removeprefix(prefix): {"size": f.size, "sha256": f.sha256} for f in files
            },
        }

    def _manifest_digest(self, output_id: str, files: list[StoredObject]) -> str:
        return hashlib.sha256(canonical(self._manifest(output_id, files))).hexdigest()

    # ------------------------------------------------------------- download

    def download(self, session_id: str) -> Iterator[bytes]:
        """The frames of an output for its recipient's session (checked before the first)."""
        with self._lock:
            session, purpose = self._take(session_id, DownloadPurpose)
            if self._state != "done":
                raise RunError("run-state", "a finished run", self._state, "no output yet")
            _digest, files = self._outputs[purpose.output]
        return self._frames(session, purpose.output, files)

    def _frames(
        self, session: AcceptedHandshake, output_id: str, files: list[StoredObject]
    ) -> Iterator[bytes]:
        sender = RecordSender(session.keys.worker_to_client, session.keys.session_id)
        for stored in files:
            chunks = self._store.read(stored.name)
            previous = next(chunks, b"")
            for chunk in chunks:
                yield sender.seal(stored.name, previous, final=False)
                previous = chunk
            yield sender.seal(stored.name, previous, final=True)
        manifest = canonical(self._manifest(output_id, files))
        yield sender.seal(f"{output_id}/{MANIFEST_NAME}", manifest, final=True)

    # --------------------------------------------------------------- delete

    def delete(self) -> None:
        """Erase the sealed data (its key goes with it) and refuse everything after."""
        with self._lock:
            self._state = "deleted"
            self._sessions.clear()
            self._store.erase()


class InputStream:
    """One upload in progress: frames in order, then finish (or abort on any failure)."""

    def __init__(self, room: CleanRoom, session: AcceptedHandshake, input_id: str) -> None:
        self._room, self._input_id = room, input_id
        self._receiver = RecordReceiver(session.keys.client_to_worker, session.keys.session_id)
        self._upload = Upload(room._store, input_id, session.user_id)
        self._result: CompletedInput | None = None
        self._ended = False

    def feed(self, frame: bytes) -> None:
        if self._ended:
            raise UploadError("upload-ended", "an open upload", "ended", "upload already ended")
        try:
            path, _index, final, data = self._receiver.open(frame)
            self._result = self._upload.feed(path, final, data) or self._result
        except BaseException:
            self.abort()
            raise

    def finish(self) -> CompletedInput:
        """The body ended: every record there, the manifest checked; record the input."""
        try:
            self._receiver.close()
            if self._result is None:
                raise UploadError("upload-truncated", "a manifest", "none", "upload ended early")
            self._room._complete(self._input_id, self._result)
        except BaseException:
            self.abort()
            raise
        self._ended = True
        return self._result

    def abort(self) -> None:
        """Erase whatever this upload stored; the input can be uploaded again."""
        if self._ended:
            return
        self._ended = True
        self._upload.abort()
        self._room._complete(self._input_id, None)
