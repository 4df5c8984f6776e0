"""A Worker as a process: one clean room, admission first, then its data plane.

    python -m cleanroom.enclave.worker_service --socket S --platform-dir P \\
        --room-dir D --spec spec.json --bundle function.tar --sandbox-uid N
    python -m cleanroom.enclave.worker_service --spare --platform-dir P
        (imports, then reads the arguments above as a JSON list on stdin)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cleanroom.enclave.errors import AdmissionError, RunError
from cleanroom.enclave.http import binary, enclave_app, field, json_body, serve
from cleanroom.enclave.room import CleanRoom, seal_bundle
from cleanroom.enclave.runner import sandbox
from cleanroom.enclave.store import SealedStore
from cleanroom.enclave.worker import WorkerEnclave
from cleanroom.errors import CheckFailed
from cleanroom.protocol.allocator import tune_allocator
from cleanroom.protocol.encoding import b64u
from cleanroom.protocol.framing import MEDIA_TYPE, FrameDecoder
from cleanroom.protocol.spec import WorkSpec
from cleanroom.runtimes import Runtime, RuntimeUnavailable, definition
from cleanroom.tee.measure import Measurement, MeasurementError, stored_measurement
from cleanroom.tee.simulated import SimulatedPlatform

log = logging.getLogger("cleanroom.enclave")
REFUSAL_PREFIX = "worker refused to start: "


def image_runtime(image: Measurement, name: str) -> Runtime:
    """The runtime ``name`` as the Worker image measured it: never looked up anew, so
    what runs the function is what the measurement covers."""
    try:
        definition(name)
    except RuntimeUnavailable as error:
        raise RunError(error.check, error.expected, error.actual, error.message) from None
    measured = image.manifest["config"].get("runtimes", {})
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
        platform: SimulatedPlatform,
        spec: WorkSpec,
        bundle: BinaryIO,
        room_dir: Path,
        *,
        sandbox_uid: int,
    ) -> None:
        # As recorded for this installation: reading it costs the same whatever the
        # runtimes weigh (the Attester checked the record when it started).
        self.image = stored_measurement("worker")
        self.runtime = image_runtime(self.image, spec.runtime)
        confinement = sandbox(sandbox_uid)
        store = SealedStore(room_dir / "sealed")
        function_id = seal_bundle(store, bundle)
        self.worker = WorkerEnclave(platform.enclave(self.image.identity()), spec, function_id)
        self.room = CleanRoom(
            self.worker,
            store,
            sandbox=confinement,
            runtime=self.runtime,
            # Plaintext of a run (the staged inputs) lives here while it runs, and is
            # wiped after; the Controller removes it if this Worker dies.
            scratch_root=room_dir / "run",
        )
        self.stop: threading.Event = threading.Event()

    def _serving(self) -> None:
        if not self.worker.admitted:
            raise AdmissionError(
                "admitted", "an admitted Worker", "not admitted", "admission incomplete"
            )

    def _run(self) -> None:
        try:
            self.room.execute()
        except CheckFailed as error:
            log.warning("run refused: %s", error)
        except Exception:
            log.exception("run failed")
        result = self.room.last_run
        if result is not None:  # sizes and times only: nothing of the data
            log.info(
                "run ended %s (exit %s) in %.2f s, %s s CPU, peak memory %s B, disk %s B; %s",
                result.status, result.exit_code, result.seconds, result.cpu_seconds,
                result.memory_peak_bytes, result.disk_bytes, "; ".join(result.confinement),
            )  # fmt: skip

    def app(self) -> Starlette:
        worker, room = self.worker, self.room

        async def admission_request(request: Request) -> JSONResponse:
            document = await json_body(request, frozenset({"target_info"}))
            report, claims = worker.admission_request(binary(document, "target_info"))
            return JSONResponse({"report": b64u(report), "claims": claims})

        async def admission_complete(request: Request) -> JSONResponse:
            answer = binary(await json_body(request, frozenset({"report"})), "report")
            worker.complete_admission(answer, attester_mr_signer=self.image.mr_signer)
            return JSONResponse({"worker_id": worker.worker_id})

        def state(_request: Request) -> JSONResponse:
            return JSONResponse(
                {
                    "worker_id": worker.worker_id,
                    "work_id": worker.spec.work_id,
                    "admitted": worker.admitted,
                    "state": room.state,
                    "detail": room.failure,
                }
            )

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
                async for chunk in request.stream():
                    for frame in decoder.feed(chunk):
                        await run_in_threadpool(stream.feed, frame)
                decoder.close()
            except BaseException:
                stream.abort()  # includes a client or Controller that went away mid-stream
                raise
            completed = await run_in_threadpool(stream.finish)
            return JSONResponse({"input": completed.input_id, "sha256": completed.sha256})

        def run(request: Request) -> JSONResponse:
            self._serving()
            room.begin_run(request.path_params["session_id"])
            threading.Thread(target=self._run, name="run", daemon=True).start()
            return JSONResponse({"state": room.state}, status_code=202)

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
                Route("/sessions", open_session, methods=["POST"]),
                Route("/sessions/{session_id}/upload", upload, methods=["POST"]),
                Route("/sessions/{session_id}/run", run, methods=["POST"]),
                Route("/sessions/{session_id}/download", download, methods=["POST"]),
                Route("/receipt", receipt, methods=["GET"]),
                Route("/delete", delete, methods=["POST"]),
            ],
            "Worker",
        )


SPARE = "--spare"


def _assignment(argv: list[str]) -> list[str] | None:
    """A spare Worker (``--spare``): everything is imported; wait for the Controller to
    assign it a clean room (its arguments as one JSON list on stdin). None: never assigned.

    A spare holds nothing of any room: its key is made, and its spec and bundle read,
    only after assignment, exactly as a Worker started for the room would.
    """
    # What uvicorn loads when it starts: now, not on deploy.
    for module in (
        "uvloop",
        "httptools",
        "uvicorn.loops.auto",
        "uvicorn.protocols.http.auto",
        "uvicorn.protocols.http.httptools_impl",
        "uvicorn.lifespan.off",
    ):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    line = sys.stdin.readline()
    if not line:
        return None
    assigned = json.loads(line)
    if not isinstance(assigned, list) or not all(isinstance(a, str) for a in assigned):
        raise SystemExit("worker: the assignment is not a JSON list of arguments")
    return assigned


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [SPARE]:
        assigned = _assignment(argv)
        if assigned is None:
            return 0
        argv = assigned
    parser = argparse.ArgumentParser(prog="cleanroom-worker", description=__doc__)
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--platform-dir", type=Path, required=True)
    parser.add_argument("--room-dir", type=Path, required=True)
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--sandbox-uid", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="worker: %(levelname)s %(message)s")
    tune_allocator()  # records of 1 MiB, in and out
    try:
        with args.bundle.open("rb") as bundle:
            service = WorkerService(
                SimulatedPlatform.load(args.platform_dir),
                WorkSpec.parse(json.loads(args.spec.read_bytes())),
                bundle,
                args.room_dir,
                sandbox_uid=args.sandbox_uid,
            )
    except CheckFailed as error:
        # One line the Controller relays as the deploy's problem detail.
        print(REFUSAL_PREFIX + json.dumps(error.to_json()), file=sys.stderr)
        return 1
    except MeasurementError as error:
        print(f"worker refused to start: {error}", file=sys.stderr)
        return 1
    serve(service.app(), args.socket, service.stop)
    os._exit(0)  # a deleted Worker leaves no thread behind


if __name__ == "__main__":
    sys.exit(main())
