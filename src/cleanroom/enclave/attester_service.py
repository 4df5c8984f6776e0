"""The Attester as a process: admits Workers, and answers attestation requests.

python -m cleanroom.enclave.attester_service --socket S --platform-dir P
python -m cleanroom.enclave.attester_service --tee gramine --listen 127.0.0.1:PORT \\
    --enclave-config attester.enclave.json

The second form is how its Gramine manifest starts it inside an SGX enclave; there
the Controller adds collateral from its PCCS beside each quote.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cleanroom.enclave.attester import Attester, WorkerAllowList
from cleanroom.enclave.http import binary, enclave_app, field, json_body, serve
from cleanroom.errors import CheckFailed
from cleanroom.insecure.simulated import SimulatedPlatform
from cleanroom.protocol.encoding import b64u
from cleanroom.protocol.errors import MessageFormatError
from cleanroom.tee.measure import measure
from cleanroom.tee.platform import EnclavePlatform


def attester_app(platform: SimulatedPlatform, clock: Any = time.time) -> Starlette:
    """The simulated Attester: its identity and allow-list from this installation's
    measurement, collateral from the simulated platform."""
    image = measure("attester")
    return attester_service(
        platform.enclave(image.identity()),
        WorkerAllowList.from_manifest_config(image.manifest["config"]),
        lambda: platform.collateral_json(now=int(clock())),
    )


def gramine_attester(enclave_config: Path, enclave: EnclavePlatform | None = None) -> Starlette:
    """The Attester in a Gramine SGX enclave (``enclave``: its platform, replaced in
    tests by an emulation): its allow-list from its measured configuration; no
    collateral of its own (the Controller serves its PCCS's)."""
    from cleanroom.tee.gramine.config import read_enclave_config
    from cleanroom.tee.gramine.native import hardware_enclave

    if enclave is None:
        enclave, _files = hardware_enclave()
    config = read_enclave_config(enclave_config, "attester")
    return attester_service(enclave, WorkerAllowList.from_manifest_config(config), lambda: None)


def attester_service(
    enclave: EnclavePlatform, allowed: WorkerAllowList, collateral: Callable[[], str | None]
) -> Starlette:
    attester = Attester(enclave, allowed)

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
                "collateral": collateral(),
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
    parser.add_argument("--tee", choices=("simulated", "gramine"), default="simulated")
    parser.add_argument("--socket", type=Path, help="serve on this Unix socket (simulated)")
    parser.add_argument("--listen", help="serve on HOST:PORT (gramine: Unix sockets stay inside)")
    parser.add_argument("--platform-dir", type=Path, help="the simulated platform")
    parser.add_argument("--enclave-config", type=Path, help="the measured configuration (gramine)")
    parser.add_argument(
        "--init-platform",
        action="store_true",
        help="create the simulated platform (the 'CPU') in --platform-dir if it has none",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="attester: %(levelname)s %(message)s")
    if args.tee == "gramine":
        if args.listen is None or args.enclave_config is None:
            parser.error("--tee gramine needs --listen and --enclave-config")
        try:
            app = gramine_attester(args.enclave_config)
        except CheckFailed as error:
            print(f"attester refused to start: {error}", file=sys.stderr)
            return 1
        serve(app, None, listen=args.listen)
        return 0
    if args.socket is None or args.platform_dir is None:
        parser.error("--tee simulated needs --socket and --platform-dir")
    if args.init_platform and not (args.platform_dir / "platform.json").exists():
        SimulatedPlatform.init(args.platform_dir, now=int(time.time()))
    serve(attester_app(SimulatedPlatform.load(args.platform_dir)), args.socket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
