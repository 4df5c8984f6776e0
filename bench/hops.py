"""``python -m bench.hops [--count N]``: where a session's round trips spend their time.

Times single requests on a LocalStack with one deployed room, each kind on its own
kept-alive connection, and prints the median of each:

- the Controller alone (``/v1/health``: no token, nothing relayed);
- the Controller with a token check (the room's token, with its DPoP proof, sent for
  another room: verified, then refused 403 without relaying);
- the Controller relaying to the room's Worker (``GET /v1/rooms/{name}``), to the
  Attester (Phase 1 evidence), and to both at once (a protocol v2 session);
- the same Worker request through a bare relay: a FastAPI/uvicorn process that does
  nothing but forward it with an asynchronous httpx client, as the Controller does
  (``bench.servers relay``);
- the Worker and the Attester called directly on their Unix sockets, with a
  synchronous and with an asynchronous httpx client (the Controller uses the latter),
  and each one's half of a v2 session (``/attest``, ``/sessions``).

The bare relay against the Controller is what the Controller's own work costs (the
token check, its routing); the bare relay against the sum of its hops is what
relaying through one asyncio process costs. See docs/benchmarks.md, "What limits
each figure".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from bench.common import median
from bench.env import Environment, free_port, start_server, wait_answering
from cleanroom.dpop import DPoPAuth
from cleanroom.protocol.handshake_v2 import ClientHandshakeV2
from cleanroom.protocol.spec import UploadPurpose

WARMUP = 10


def timed(call: Callable[[], object], count: int) -> float:
    """The median milliseconds of ``call`` over ``count`` calls, after a warm-up."""
    for _ in range(WARMUP):
        call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return median(samples)


async def timed_async(call: Callable[[], Awaitable[object]], count: int) -> float:
    for _ in range(WARMUP):
        await call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return median(samples)


def checked(response: httpx.Response, status: int = 200) -> httpx.Response:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.url} answered {response.status_code}, not {status}")
    return response


def _v2_request(user: object, spec: object) -> dict[str, object]:
    """A fresh v2 session request (new nonce and key shares) for the hops room."""
    hello = ClientHandshakeV2(
        user_key=user.profile.user_key,  # type: ignore[attr-defined]
        work_id=spec.work_id,  # type: ignore[attr-defined]
        purpose=UploadPurpose(op="upload", input="input_1"),
    )
    return {
        "nonce": base64.urlsafe_b64encode(hello.nonce).rstrip(b"=").decode(),
        "init": hello.init,
        "signature": base64.urlsafe_b64encode(hello.init_signature).rstrip(b"=").decode(),
    }


def _handshake(request: dict[str, object]) -> dict[str, object]:
    return {"init": request["init"], "signature": request["signature"]}


def relayed(root: Path, worker: Path, count: int) -> float:
    """The median ms of the Worker's ``/state`` through a bare relay process."""
    port = free_port()
    relay = start_server(
        ["relay", "--port", str(port), "--socket", str(worker)], root / "relay.log"
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_answering(f"{url}/ping", relay)
        with httpx.Client() as client:
            return timed(lambda: checked(client.get(f"{url}/get/state")), count)
    finally:
        relay.terminate()
        relay.wait(timeout=10)


def measure(root: Path, count: int) -> list[tuple[str, float]]:
    env = Environment(root).start()
    try:
        alice = env.user("alice", "acme")
        deployed = env.spec("hops", "copy", alice, {"input_1": alice}, {"output_1": alice})
        env.deploy(deployed, alice, [])
        room, spec = alice.client.approved("hops")
        token = alice.profile.access_token(
            resource=room.compute_url, room=room.name, project=room.project
        )
        auth = DPoPAuth(alice.profile.proof_key, token)  # a fresh proof per request
        nonce = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
        sockets = sorted((root / "servers").rglob("*.sock"))
        attester = next(path for path in sockets if path.name == "attester.sock")
        worker = next(path for path in sockets if path.name.startswith("w-"))
        base = f"{room.compute_url}/v1"
        results: list[tuple[str, float]] = []
        with httpx.Client(auth=auth) as client:
            results += [
                ("Controller alone (health)",
                 timed(lambda: checked(client.get(f"{base}/health")), count)),
                ("Controller, token checked (403)",
                 timed(lambda: checked(client.get(f"{base}/rooms/absent"), 403), count)),
                ("Controller -> Worker (room state)",
                 timed(lambda: checked(client.get(f"{base}/rooms/hops")), count)),
                ("Controller -> Attester (Phase 1 evidence)",
                 timed(lambda: checked(client.post(f"{base}/rooms/hops/attestation",
                                                   json={"nonce": nonce})), count)),
            ]  # fmt: skip
            inits = [_v2_request(alice, spec) for _ in range(WARMUP + count)]
            results.append(
                ("Controller -> Attester + Worker (v2 session, fanned out)",
                 timed(lambda: checked(client.post(f"{base}/rooms/hops/attested-sessions",
                                                   json=inits.pop())), count))
            )  # fmt: skip
        results.append(("bare relay -> Worker (room state)", relayed(root, worker, count)))
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(attester))) as direct:
            state = checked(direct.get("http://enclave/target-info"))  # warm
            worker_id = alice.client.state("hops")["worker_id"]
            results.append(
                ("Attester direct, sync client (/attest)",
                 timed(lambda: checked(direct.post("http://enclave/attest",
                                                   json={"worker_id": worker_id, "nonce": nonce})),
                       count))
            )  # fmt: skip
            del state
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(worker))) as direct:
            bodies = [_v2_request(alice, spec) for _ in range(WARMUP + count)]
            results.append(
                ("Worker direct, sync client (/sessions, v2 handshake)",
                 timed(lambda: checked(direct.post("http://enclave/sessions",
                                                   json=_handshake(bodies.pop()))), count))
            )  # fmt: skip
        for label, socket, path in (
            ("Worker", worker, "/state"),
            ("Attester", attester, "/target-info"),
        ):
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket))) as direct:
                url = f"http://enclave{path}"
                results.append(
                    (f"{label} direct, sync client ({path})",
                     timed(lambda: checked(direct.get(url)), count))  # noqa: B023 - called here
                )  # fmt: skip

            async def asynchronous(socket: Path = socket, path: str = path) -> float:
                transport = httpx.AsyncHTTPTransport(uds=str(socket))
                async with httpx.AsyncClient(transport=transport) as direct:

                    async def call() -> httpx.Response:
                        return checked(await direct.get(f"http://enclave{path}"))

                    return await timed_async(call, count)

            results.append((f"{label} direct, async client ({path})", asyncio.run(asynchronous())))
        return results
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hops", description=__doc__)
    parser.add_argument("--count", type=int, default=200, help="requests per kind (200)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hops-", dir="/tmp") as root:  # short socket paths
        results = measure(Path(root), arguments.count)
    print(f"| request ({arguments.count} each, median) | ms |\n|---|---|")
    for label, value in results:
        print(f"| {label} | {value:.2f} |")


if __name__ == "__main__":
    main()
