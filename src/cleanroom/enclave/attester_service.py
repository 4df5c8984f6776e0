"""The Attester as a process: admits Workers, and answers attestation requests.

python -m cleanroom.enclave.attester_service --socket S --platform-dir P
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cleanroom.enclave.attester import Attester, WorkerAllowList
from cleanroom.enclave.http import binary, enclave_app, field, json_body, serve
from cleanroom.protocol.encoding import b64u
from cleanroom.protocol.errors import MessageFormatError
from cleanroom.tee.measure import measure
from cleanroom.tee.simulated import SimulatedPlatform


def attester_app(platform: SimulatedPlatform, clock: Any = time.time) -> Starlette:
    image = measure("attester")
    attester = Attester(
        platform.enclave(image.identity()),
        WorkerAllowList.from_manifest_config(image.manifest["config"]),
    )

    def target_info(_request: Request) -> JSONResponse:
        return JSONResponse({"target_info": b64u(attester.target_info())})

    async def admit(request: Request) -> JSONResponse:
        document = await json_body(request, frozenset({"report", "claims"}))
        admission = attester.admit(binary(document, "report"), field(document, "claims"))
        answer = b64u(admission.report.to_bytes())
        return JSONResponse({"worker_id": admission.worker.worker_id, "report": answer})

    async def attest(request: Request) -> JSONResponse:
        document = await json_body(request, frozenset({"worker_id", "nonce"}))
        worker_id = field(document, "worker_id")
        if not isinstance(worker_id, str):
            raise MessageFormatError("worker_id", "text", type(worker_id).__name__, "bad id")
        evidence = attester.attest(worker_id, binary(document, "nonce", size=32))
        return JSONResponse(
            {
                "claims": evidence.claims,
                "quote": b64u(evidence.quote),
                # Collateral is signed (TCB info, QE identity, CRLs): it may come from anywhere.
                "collateral": platform.collateral_json(now=int(clock())),
            }
        )

    async def forget(request: Request) -> JSONResponse:
        worker_id = field(await json_body(request, frozenset({"worker_id"})), "worker_id")
        if isinstance(worker_id, str):
            attester.forget(worker_id)
        return JSONResponse({"worker_id": worker_id})

    return enclave_app(
        [
            Route("/target-info", target_info, methods=["GET"]),
            Route("/admit", admit, methods=["POST"]),
            Route("/attest", attest, methods=["POST"]),
            Route("/forget", forget, methods=["POST"]),
        ],
        "Attester",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cleanroom-attester", description=__doc__)
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--platform-dir", type=Path, required=True)
    parser.add_argument(
        "--init-platform",
        action="store_true",
        help="create the simulated platform (the 'CPU') in --platform-dir if it has none",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="attester: %(levelname)s %(message)s")
    if args.init_platform and not (args.platform_dir / "platform.json").exists():
        SimulatedPlatform.init(args.platform_dir, now=int(time.time()))
    serve(attester_app(SimulatedPlatform.load(args.platform_dir)), args.socket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
