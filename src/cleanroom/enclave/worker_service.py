"""A Worker as a process: one clean room, admission first, then its data plane.

    python -m cleanroom.enclave.worker_service --socket S --platform-dir P \\
        --room-dir D --spec spec.json --bundle function.tar --sandbox-uid N
    python -m cleanroom.enclave.worker_service --tee gramine --listen 127.0.0.1:PORT \\
        --enclave-config worker.enclave.json --room-dir D --spec ... --bundle ...
    python -m cleanroom.enclave.worker_service --spare --platform-dir P
        (imports, then reads the arguments of either form as a JSON list on stdin)

The second form is how its Gramine manifest starts it inside an SGX enclave.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import secrets
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cleanroom.enclave.errors import AdmissionError, RunError, UploadError, log_failure
from cleanroom.enclave.http import binary, enclave_app, field, json_body, serve
from cleanroom.enclave.room import SESSION_LIFETIME_S, CleanRoom, InputStream, seal_bundle
from cleanroom.enclave.runner import Confinement, NoConfinement, overlay_problem, sandbox
from cleanroom.enclave.store import SealedStore
from cleanroom.enclave.worker import WorkerEnclave
from cleanroom.errors import CheckFailed
from cleanroom.protocol.allocator import tune_allocator
from cleanroom.protocol.encoding import b64u
from cleanroom.protocol.framing import MEDIA_TYPE, FrameDecoder
from cleanroom.protocol.spec import WorkSpec
from cleanroom.protocol.sql import ENGINE_RUNTIME
from cleanroom.runtimes import Runtime, RuntimeUnavailable, definition
from cleanroom.sql import engine_function_id
from cleanroom.tee.gramine.files import AttestationFiles
from cleanroom.tee.measure import Measurement, MeasurementError, stored_measurement
from cleanroom.tee.platform import EnclavePlatform

if TYPE_CHECKING:
    # Imported when a SQL room is made: its query checker (sqlglot) and its privacy
    # (OpenDP) are a third of a Worker's start, which a function room never needs.
    from cleanroom.enclave.sqlroom import SqlRoom

log = logging.getLogger("cleanroom.enclave")
REFUSAL_PREFIX = "worker refused to start: "
CLOSED_CHECK_S = 1.0
"""How often an upload waiting for more of its body looks whether a fate question closed
its session (it is then ended at once, not at its bound)."""
UPLOAD_GRACE_VARIABLE = "CLEANROOM_UPLOAD_GRACE_S"
"""The environment's shorter grace for an upload's body (CleanRoom's ``upload_grace_s``,
at most the session's lifetime): tests of a stalled body set it."""


def image_runtime(image: Measurement, name: str) -> Runtime:
    """The runtime ``name`` as the Worker image measured it: never looked up anew, so
    what runs the function is what the measurement covers."""
    return measured_runtime(image.manifest["config"], name)


def measured_runtime(config: Mapping[str, Any], name: str) -> Runtime:
    """The runtime ``name`` as the Worker's measured configuration names it."""
    try:
        definition(name)
    except RuntimeUnavailable as error:
        raise RunError(error.check, error.expected, error.actual, error.message) from None
    measured = config.get("runtimes", {})
    if name not in measured:
        raise RunError(
            "runtime-installed",
            f"one of the image's runtimes {sorted(measured)}",
            name,
            f"runtime {name} is not installed on this compute server",
            f"install it (cleanroom runtime install {name}) and restart the compute server",
        )
    return Runtime.from_json(measured[name])


class WorkerService:
    """One clean room's Worker: admission first, then its data plane."""

    def __init__(
        self,
        enclave: EnclavePlatform,
        config: Mapping[str, Any],
        spec: WorkSpec,
        bundle: BinaryIO,
        room_dir: Path,
        *,
        confinement: Confinement,
        upload_grace_s: float = SESSION_LIFETIME_S,
    ) -> None:
        """``enclave`` is this Worker's platform, ``config`` its measured configuration
        (the runtimes its image holds); ``upload_grace_s``: see :class:`CleanRoom`."""
        sql = spec.sql is not None
        self.runtime = measured_runtime(config, ENGINE_RUNTIME if sql else spec.runtime)
        if sql and spec.function != engine_function_id():
            # A SQL room runs this release's engine, nothing a deployer wrote.
            raise RunError(
                "sql-engine", engine_function_id(), spec.function,
                "a SQL room's function is the engine of this release",
                "deploy with a client of the compute server's release",
            )  # fmt: skip
        # The same release key signs the Attester and the Worker.
        self.attester_mr_signer = enclave.identity.mr_signer
        store = SealedStore(room_dir / "sealed")
        function_id = seal_bundle(store, bundle)
        self.worker = WorkerEnclave(enclave, spec, function_id)
        kind: type[CleanRoom] = CleanRoom
        if sql:
            from cleanroom.enclave.sqlroom import SqlRoom

            kind = SqlRoom
        self.room = kind(
            self.worker,
            store,
            sandbox=confinement,
            runtime=self.runtime,
            # Plaintext of a run (the staged inputs) lives here while it runs, and is
            # wiped after; the Controller removes it if this Worker dies.
            scratch_root=room_dir / "run",
            upload_grace_s=upload_grace_s,
        )
        self.sql_room: SqlRoom | None = self.room if sql else None  # type: ignore[assignment]
        self.stop: threading.Event = threading.Event()

    def _serving(self) -> None:
        if not self.worker.admitted:
            raise AdmissionError(
                "admitted", "an admitted Worker", "not admitted", "admission incomplete"
            )

    def _query(self, room: SqlRoom, number: int) -> None:
        try:
            room.execute_query(number)
        except Exception as error:  # noqa: BLE001 - logged by log_failure
            log_failure(log, f"query {number} failed", error)
        result = room.last_run
        if result is not None:  # sizes and times only: nothing of the data
            log.info("query %s ended %s in %.2f s", number, result.status, result.seconds)

    def _run(self) -> None:
        try:
            self.room.execute()
        except CheckFailed as error:
            log.warning("run refused: %s", error)
        except Exception as error:  # noqa: BLE001 - logged by log_failure
            log_failure(log, "run failed", error)
        result = self.room.last_run
        # The host reads this log. What the run used (its peak memory and disk to the
        # byte, its CPU time) is the function's to set, from the data if it likes: none
        # of it is said here, only what the signed status says and the run's time, which
        # the host sees anyway (docs/threat-model.md, "What the host sees of a run").
        if result is not None:
            log.info(
                "run ended %s (exit %s) in %.2f s; %s",
                result.status, result.exit_code, result.seconds, "; ".join(result.confinement),
            )  # fmt: skip

    def app(self) -> Starlette:
        worker, room, sql_room = self.worker, self.room, self.sql_room

        async def admission_request(request: Request) -> JSONResponse:
            document = await json_body(request, frozenset({"target_info"}))
            report, claims = worker.admission_request(binary(document, "target_info"))
            return JSONResponse({"report": b64u(report), "claims": claims})

        async def admission_complete(request: Request) -> JSONResponse:
            answer = binary(await json_body(request, frozenset({"report"})), "report")
            worker.complete_admission(answer, attester_mr_signer=self.attester_mr_signer)
            return JSONResponse({"worker_id": worker.worker_id})

        def state(_request: Request) -> JSONResponse:
            document: dict[str, Any] = {
                "worker_id": worker.worker_id,
                "work_id": worker.spec.work_id,
                "admitted": worker.admitted,
                "state": room.state,
                "detail": room.failure,
            }
            if sql_room is not None:
                from cleanroom.enclave.sqlroom import run_states

                document["runs"] = run_states(sql_room)
            return JSONResponse(document)

        async def status(request: Request) -> JSONResponse:
            self._serving()
            nonce = binary(await json_body(request, frozenset({"nonce"})), "nonce")
            document, signature = await run_in_threadpool(room.status, nonce)
            return JSONResponse({"status": document, "signature": b64u(signature)})

        async def open_session(request: Request) -> JSONResponse:
            self._serving()
            document = await json_body(request, frozenset({"init", "signature"}))
            init = field(document, "init")
            signature = binary(document, "signature")
            resp, resp_signature = await run_in_threadpool(room.open_session, init, signature)
            return JSONResponse({"resp": resp, "signature": b64u(resp_signature)})

        async def upload(request: Request) -> JSONResponse:
            self._serving()
            stream = room.begin_upload(request.path_params["session_id"])
            decoder = FrameDecoder()
            try:
                async for chunk in _in_time(request, stream):
                    stream.arrived(len(chunk))
                    for frame in decoder.feed(chunk):
                        await run_in_threadpool(stream.feed, frame)
                decoder.close()
            except BaseException:
                stream.abort()  # includes a client or Controller that went away mid-stream
                raise
            await run_in_threadpool(stream.finish)
            # Sealed under the session key: only this Worker can say the input arrived.
            return JSONResponse({"ack": b64u(stream.acknowledgement())})

        async def run(request: Request) -> JSONResponse:
            self._serving()
            session_id = request.path_params["session_id"]
            if sql_room is not None:
                # The query, encrypted under the session: the Controller cannot read it.
                frame = binary(await json_body(request, frozenset({"query"})), "query")
                number = await run_in_threadpool(sql_room.begin_query, session_id, frame)
                threading.Thread(
                    target=self._query, args=(sql_room, number), name="query", daemon=True
                ).start()
                return JSONResponse({"state": sql_room.state, "run": number}, status_code=202)
            # The run request: a record under the session's key, so only the runner who
            # opened the session can start the run (protocol/run_request.py).
            frame = binary(await json_body(request, frozenset({"request"})), "request")
            room.begin_run(session_id, frame)
            threading.Thread(target=self._run, name="run", daemon=True).start()
            return JSONResponse({"state": room.state}, status_code=202)

        async def fate(request: Request) -> JSONResponse:
            self._serving()
            # A runner's question about one of her run sessions, sealed in this one.
            frame = binary(await json_body(request, frozenset({"request"})), "request")
            sealed = room.fate(request.path_params["session_id"], frame)
            return JSONResponse({"fate": b64u(sealed)})

        def run_receipt(request: Request) -> Response:
            if sql_room is None:
                raise RunError("run-state", "a SQL room", worker.spec.runtime, "no query runs")
            document, signature, detail = sql_room.run_receipt(request.path_params["number"])
            return JSONResponse(
                {"receipt": document, "signature": b64u(signature), "detail": b64u(detail)}
            )

        async def budget(request: Request) -> Response:
            if sql_room is None:
                raise RunError("run-state", "a SQL room", worker.spec.runtime, "no budget")
            nonce = field(await json_body(request, frozenset({"nonce"})), "nonce")
            document, signature = await run_in_threadpool(sql_room.budget, nonce)
            return JSONResponse({"budget": document, "signature": b64u(signature)})

        def download(request: Request) -> Response:
            self._serving()
            stream: Iterator[bytes | bytearray] = room.download_stream(
                request.path_params["session_id"]
            )
            return StreamingResponse((memoryview(f) for f in stream), media_type=MEDIA_TYPE)

        def receipt(_request: Request) -> Response:
            if room.receipt is None:
                raise RunError("run-state", "a finished run", room.state, "no receipt yet")
            document, signature = room.receipt
            return JSONResponse({"receipt": document, "signature": b64u(signature)})

        def delete(_request: Request) -> JSONResponse:
            room.delete()
            self.stop.set()
            return JSONResponse({"state": room.state})

        return enclave_app(
            [
                Route("/admission/request", admission_request, methods=["POST"]),
                Route("/admission/complete", admission_complete, methods=["POST"]),
                Route("/state", state, methods=["GET"]),
                Route("/status", status, methods=["POST"]),
                Route("/sessions", open_session, methods=["POST"]),
                Route("/sessions/{session_id}/upload", upload, methods=["POST"]),
                Route("/sessions/{session_id}/run", run, methods=["POST"]),
                Route("/sessions/{session_id}/download", download, methods=["POST"]),
                Route("/sessions/{session_id}/fate", fate, methods=["POST"]),
                Route("/receipt", receipt, methods=["GET"]),
                Route("/runs/{number:int}/receipt", run_receipt, methods=["GET"]),
                Route("/budget", budget, methods=["POST"]),
                Route("/delete", delete, methods=["POST"]),
            ],
            "Worker",
        )


SPARE = "--spare"


async def _in_time(request: Request, stream: InputStream) -> AsyncIterator[bytes]:
    """The body's chunks, as long as it is not late: a Controller that keeps an upload
    open, sending nothing (or too little), has it ended by the Worker's own bound
    (``upload-body-time``, :meth:`InputStream.check_time`), not held for ever."""
    chunks = request.stream().__aiter__()
    waiting: asyncio.Future[bytes] | None = None
    try:
        while True:
            if waiting is None:
                waiting = asyncio.ensure_future(anext(chunks))
            wait = min(max(stream.remaining(), 0.0), CLOSED_CHECK_S)
            done, _ = await asyncio.wait({waiting}, timeout=wait)
            if not done:
                stream.check_time()  # late, or its session closed: ends it; else wait on
                continue
            arrived, waiting = waiting, None
            try:
                chunk = arrived.result()
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        if waiting is not None:
            waiting.cancel()


def _assignment(argv: list[str]) -> list[str] | None:
    """A spare Worker (``--spare``): everything is imported; wait for the Controller to
    assign it a clean room (its arguments as one JSON list on stdin). None: never assigned.

    A spare holds nothing of any room: its key is made, and its spec and bundle read,
    only after assignment, exactly as a Worker started for the room would.
    """
    # What uvicorn loads when it starts, the simulated platform (only the simulated
    # backend keeps spares) and the syscall filter's library (the sandbox's check
    # builds the filter): now, not on deploy.
    for module in (
        "cleanroom.insecure.simulated",
        "pyseccomp",
        "uvloop",
        "httptools",
        "uvicorn.loops.auto",
        "uvicorn.protocols.http.auto",
        "uvicorn.protocols.http.httptools_impl",
        "uvicorn.lifespan.off",
    ):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    overlay_problem()  # the sandbox's probe mount (its answer is kept): now, not on deploy
    line = sys.stdin.readline()
    if not line:
        return None
    assigned = json.loads(line)
    if not isinstance(assigned, list) or not all(isinstance(a, str) for a in assigned):
        raise SystemExit("worker: the assignment is not a JSON list of arguments")
    return assigned


def _simulated(args: argparse.Namespace) -> tuple[EnclavePlatform, Mapping[str, Any], Confinement]:
    # The simulation's platform, only here: a Worker in a real enclave never loads it.
    from cleanroom.insecure.simulated import SimulatedPlatform

    # As recorded for this installation: reading it costs the same whatever the
    # runtimes weigh (the Attester checked the record when it started).
    image = stored_measurement("worker")
    confinement = sandbox(args.sandbox_uid)
    enclave = SimulatedPlatform.load(args.platform_dir).enclave(image.identity())
    return enclave, image.manifest["config"], confinement


def _gramine(
    args: argparse.Namespace,
    hardware: Callable[[], tuple[EnclavePlatform, AttestationFiles]] | None = None,
) -> tuple[EnclavePlatform, Mapping[str, Any], Confinement]:
    """This Worker in a Gramine SGX enclave (``hardware``: its platform and
    ``/dev/attestation``, replaced in tests by an emulation)."""
    from cleanroom.tee.gramine.config import read_enclave_config
    from cleanroom.tee.gramine.files import set_workspace_key
    from cleanroom.tee.gramine.native import hardware_enclave

    enclave, files = (hardware or hardware_enclave)()
    config = read_enclave_config(args.enclave_config, "worker")
    # The workspace (staged inputs, outputs) is Gramine encrypted files under a key
    # that exists only in this enclave, from now until it ends.
    set_workspace_key(files, secrets.token_bytes(16))
    confinement = NoConfinement(
        "functions on Gramine run in a Runner enclave of their own (docs/deploy-sgx.md), "
        "which this release does not start yet"
    )
    return enclave, config, confinement


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [SPARE]:
        assigned = _assignment(argv)
        if assigned is None:
            return 0
        argv = assigned
    parser = argparse.ArgumentParser(prog="cleanroom-worker", description=__doc__)
    parser.add_argument("--tee", choices=("simulated", "gramine"), default="simulated")
    parser.add_argument("--socket", type=Path, help="serve on this Unix socket (simulated)")
    parser.add_argument("--listen", help="serve on HOST:PORT (gramine: Unix sockets stay inside)")
    parser.add_argument("--platform-dir", type=Path, help="the simulated platform")
    parser.add_argument("--enclave-config", type=Path, help="the measured configuration (gramine)")
    parser.add_argument("--room-dir", type=Path, required=True)
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--sandbox-uid", type=int, help="the room's host uid (simulated)")
    args = parser.parse_args(argv)
    needed = (
        ("socket", "platform_dir", "sandbox_uid")
        if args.tee == "simulated"
        else ("listen", "enclave_config")
    )
    missing = [f"--{name.replace('_', '-')}" for name in needed if getattr(args, name) is None]
    if missing:
        parser.error(f"--tee {args.tee} needs {', '.join(missing)}")
    logging.basicConfig(level=logging.INFO, format="worker: %(levelname)s %(message)s")
    tune_allocator()  # records of 1 MiB, in and out
    try:
        enclave, config, confinement = (_simulated if args.tee == "simulated" else _gramine)(args)
        with args.bundle.open("rb") as bundle:
            service = WorkerService(
                enclave,
                config,
                WorkSpec.parse(json.loads(args.spec.read_bytes())),
                bundle,
                args.room_dir,
                confinement=confinement,
                upload_grace_s=_upload_grace(),
            )
    except CheckFailed as error:
        # One line the Controller relays as the deploy's problem detail.
        print(REFUSAL_PREFIX + json.dumps(error.to_json()), file=sys.stderr)
        return 1
    except MeasurementError as error:
        print(f"worker refused to start: {error}", file=sys.stderr)
        return 1
    serve(service.app(), args.socket, service.stop, listen=args.listen)
    os._exit(0)  # a deleted Worker leaves no thread behind


def _upload_grace() -> float:
    """The grace of an upload's body: the environment's (only ever shorter: CleanRoom
    refuses more than a session's lifetime), or a session's lifetime."""
    given = os.environ.get(UPLOAD_GRACE_VARIABLE)
    if given is None:
        return SESSION_LIFETIME_S
    try:
        return float(given)
    except ValueError:
        raise UploadError(
            "upload-grace", "seconds", given, f"{UPLOAD_GRACE_VARIABLE} is not a number"
        ) from None


if __name__ == "__main__":
    sys.exit(main())
